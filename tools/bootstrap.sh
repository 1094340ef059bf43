#!/usr/bin/env bash
# Installs every Debian and npm package metald's build, tests and demo need.
# Idempotent: safe to run twice; a second run with everything present does no network work.
# Must run as root on Debian 12 (bookworm). Never installs libboost-all-dev (1.74), which
# would remove libboost1.81-dev.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl
  g++ clang-14 libclang-rt-14-dev lld-14 clang-format clang-tidy
  libboost1.81-dev libnghttp2-dev nghttp2-client libssl-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler libprotoc-dev
  libgrpc++-dev protobuf-compiler-grpc
  nlohmann-json3-dev libsqlite3-dev sqlite3 libjwt-dev libcli11-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev wrk
  qemu-system-x86 busybox-static cpio e2fsprogs kmod
  iproute2 nftables iputils-ping procps psmisc python3 openssl jq
)
# The machine image ships Node.js 20 with its own npm; Debian's nodejs package conflicts with it,
# so Debian's is installed only where no node is present at all.
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages for the test clients nobody here wrote (buf curl, connect-node), pinned.
npm_dir="$here/tests/clients"
if [ -f "$npm_dir/package.json" ]; then
  if [ ! -d "$npm_dir/node_modules/@connectrpc/connect-node" ] || [ ! -x "$npm_dir/node_modules/.bin/buf" ] \
     || [ "$npm_dir/package.json" -nt "$npm_dir/node_modules/.stamp" ]; then
    echo "bootstrap: npm install in tests/clients"
    (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
  fi
fi
echo "bootstrap: ok"
