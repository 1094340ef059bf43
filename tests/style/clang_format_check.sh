#!/usr/bin/env bash
# Every C++ source in the repository is clang-formatted (.clang-format at the root).
set -euo pipefail
root=$1
cd "$root"
bad=0
while IFS= read -r -d '' f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not clang-formatted: $f"
    bad=$((bad + 1))
  fi
done < <(find metald tests bench tools -type f \( -name '*.h' -o -name '*.cc' \) -not -path '*/node_modules/*' -print0 2>/dev/null)
echo "clang-format: $bad file(s) need formatting"
[ "$bad" -eq 0 ]
