#!/usr/bin/env bash
# Proves the layer checker can fail: an upward include and a cross-backend include are reported.
set -euo pipefail
checker=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/metald/base" "$tmp/metald/rpc" "$tmp/metald/backend/qemu" "$tmp/metald/backend/firecracker"
echo '#include "metald/rpc/server.h"' > "$tmp/metald/base/bad.h"
echo '#include "metald/backend/firecracker/x.h"' > "$tmp/metald/backend/qemu/bad.cc"
echo '#include "metald/base/status.h"' > "$tmp/metald/rpc/good.h"
if out=$(python3 "$checker" "$tmp"); then
  echo "FAIL: checker accepted violations"; exit 1
fi
grep -q 'metald/base/bad.h:1: base (layer 0) may not include metald/rpc/server.h' <<<"$out" || { echo "FAIL: $out"; exit 1; }
grep -q 'backend/qemu includes another backend' <<<"$out" || { echo "FAIL: $out"; exit 1; }
grep -q 'good.h' <<<"$out" && { echo "FAIL: flagged a legal include"; exit 1; }
rm "$tmp/metald/base/bad.h" "$tmp/metald/backend/qemu/bad.cc"
python3 "$checker" "$tmp" >/dev/null || { echo "FAIL: clean tree rejected"; exit 1; }
echo "check_includes selftest: ok"
