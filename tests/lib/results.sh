# Sourced by the shell tests: the ok/FAIL lines and the tally they print at the end.
#   pass NAME            counts a passed check and prints "ok   NAME"
#   fail NAME [LINE...]  counts a failed check, prints "FAIL NAME" and each LINE indented
# The counters are $passed and $failed.
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  local arg
  for arg in "$@"; do printf '%s\n' "$arg" | sed 's/^/     /'; done
}
