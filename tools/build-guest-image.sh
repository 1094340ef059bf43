#!/usr/bin/env bash
# Builds metald's test and demo guest from Debian packages only (docs/guest-image.md).
#
#   tools/build-guest-image.sh [OUTDIR]        (default: <repo>/build/guest)
#
# Outputs in OUTDIR:
#   vmlinuz      the kernel of linux-image-cloud-amd64 (its versioned linux-image-6.1.*-cloud-amd64)
#   initrd.img   gzip'd cpio (newc): busybox-static, the virtio/ACPI modules, tools/guest/init
#   rootfs.ext4  the same tree as an ext4 image (mkfs.ext4 -d), bootable with metald.root=/dev/vda
#   manifest     package versions and sha256 of every output
# Idempotent: does nothing when the outputs are newer than every input and the kernel package
# is still the one apt resolves. Needs apt lists (apt-get update), dpkg-deb, depmod (kmod), cpio,
# gzip, mkfs.ext4 (e2fsprogs) and busybox-static. Run as root (the initramfs holds device nodes).
# Environment: METALD_GUEST_KERNEL_DEB=/path/to/linux-image-*.deb uses that package, no apt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/build/guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache="$out/cache"
work="$out/work"
guest_src="$here/guest"
busybox_bin=/bin/busybox

# Modules the guest loads; their dependencies are added from modules.dep.
WANTED_MODULES=(virtio_ring virtio virtio_mmio virtio_net failover net_failover virtio_blk
                virtio_input button evdev)

log() { echo "build-guest-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in dpkg-deb depmod cpio gzip mkfs.ext4 sha256sum flock; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run tools/bootstrap.sh)"
done
[ -x "$busybox_bin" ] || die "$busybox_bin not found (apt-get install busybox-static)"
# The applet list is read whole first: `busybox --list | grep -q` under pipefail fails at random
# when grep exits early and busybox dies of SIGPIPE.
applets=$("$busybox_bin" --list)
if ! grep -qx acpid <<<"$applets" || ldd "$busybox_bin" >/dev/null 2>&1; then
  die "$busybox_bin is not the static busybox (apt-get install busybox-static)"
fi

# One build at a time per OUTDIR (parallel tests may all ask for the image).
exec 9>"$out/.lock"
flock 9

# --- Which kernel package -----------------------------------------------------------------
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
if [ -n "${METALD_GUEST_KERNEL_DEB:-}" ]; then
  deb=$(cd "$(dirname "$METALD_GUEST_KERNEL_DEB")" && pwd)/$(basename "$METALD_GUEST_KERNEL_DEB")
  [ -f "$deb" ] || die "METALD_GUEST_KERNEL_DEB=$deb does not exist"
  kpkg=$(dpkg-deb -f "$deb" Package)
else
  # linux-image-cloud-amd64 is a metapackage; the kernel is its versioned dependency.
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
         sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1)
  if [ -n "$kpkg" ]; then
    deb=$(ls -t "$cache/${kpkg}"_*.deb 2>/dev/null | head -n1 || true)
  else
    # No apt lists: fall back to a package downloaded earlier, if any.
    deb=$(ls -t "$cache"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
    kpkg=$(dpkg-deb -f "$deb" Package)
    log "apt cannot resolve linux-image-cloud-amd64; using cached $deb"
  fi
fi

# --- Up to date? -----------------------------------------------------------------------------
outputs=("$out/vmlinuz" "$out/initrd.img" "$out/rootfs.ext4" "$out/manifest")
inputs=("$0" "$busybox_bin" "$guest_src"/*)
up_to_date() {
  local o i
  for o in "${outputs[@]}"; do [ -f "$o" ] || return 1; done
  grep -q "^kernel_package: $kpkg " "$out/manifest" || return 1
  for i in "${inputs[@]}"; do
    for o in "${outputs[@]}"; do [ "$o" -nt "$i" ] || return 1; done
  done
  [ -n "$deb" ] || return 0
  for o in "${outputs[@]}"; do [ "$o" -nt "$deb" ] || return 1; done
}
if up_to_date; then
  log "up to date: $out ($kpkg)"
  exit 0
fi

# --- Fetch and unpack the kernel ---------------------------------------------------------------
mkdir -p "$cache"
if [ -z "$deb" ]; then
  log "downloading $kpkg"
  rm -f "$cache"/linux-image-*.deb
  # apt warns that it downloads unsandboxed (the cache is not _apt's); that is expected.
  if ! (cd "$cache" && apt-get download -q "$kpkg") >"$cache/download.log" 2>&1; then
    cat "$cache/download.log" >&2
    die "apt-get download $kpkg failed"
  fi
  deb=$(ls -t "$cache/${kpkg}"_*.deb | head -n1)
fi
kver=$(dpkg-deb -f "$deb" Version)
rm -rf "$work"
mkdir -p "$work/kernel" "$work/rootfs"
log "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/kernel"
kdir=$(ls -d "$work/kernel/lib/modules"/*/ | head -n1)
krel=$(basename "$kdir")
vmlinuz="$work/kernel/boot/vmlinuz-$krel"
[ -f "$vmlinuz" ] || die "no vmlinuz in $deb"
# The package ships no modules.dep (its postinst runs depmod); build it in the unpacked tree.
depmod -b "$work/kernel" "$krel"

# --- Resolve modules in load order -------------------------------------------------------------
# modules.dep: "path: dep1 dep2 ..." where each dep's own deps follow it, so loading the listed
# deps from last to first, then the module itself, satisfies every symbol.
declare -A module_path=() seen=()
load_order=()
while IFS= read -r line; do
  path=${line%%:*}
  name=${path##*/}
  name=${name%%.ko*}
  module_path[$name]=$path
done <"$kdir/modules.dep"
dep_line() { grep -m1 "^${module_path[$1]}:" "$kdir/modules.dep" | cut -d: -f2; }
add_module() {
  local name=$1 deps d i
  [ -n "${seen[$name]:-}" ] && return 0
  [ -n "${module_path[$name]:-}" ] || {
    grep -q "/${name}.ko" "$kdir/modules.builtin" && return 0
    die "module $name not found in $krel"
  }
  seen[$name]=1
  read -r -a deps <<<"$(dep_line "$name")"
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    d=${deps[$i]##*/}
    add_module "${d%%.ko*}"
  done
  load_order+=("$name")
}
for m in "${WANTED_MODULES[@]}"; do add_module "$m"; done

# --- Root tree ---------------------------------------------------------------------------------
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,etc/metald,etc/acpi/PWRF,lib/modules,var/log,var/run}
chmod 1777 "$rootfs/tmp"
cp "$busybox_bin" "$rootfs/bin/busybox"
# One symlink per applet at its usual path (like 'busybox --install -s', but at build time).
while IFS= read -r applet; do
  [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$rootfs/$applet"
done < <("$busybox_bin" --list-full)
install -m 0755 "$guest_src/init" "$rootfs/init"
install -m 0755 "$guest_src/acpi-power-button" "$rootfs/etc/acpi/PWRF/00000080"
for m in "${load_order[@]}"; do
  src="$kdir/${module_path[$m]}"
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$rootfs/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$src" >"$rootfs/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$src" >"$rootfs/lib/modules/$m.ko" ;;
    *) cp "$src" "$rootfs/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$rootfs/etc/metald/modules"
done
echo "$krel" >"$rootfs/etc/metald/kernel-release"
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
# The kernel opens /dev/console before /init runs, i.e. before devtmpfs is mounted.
mknod -m 600 "$rootfs/dev/console" c 5 1
mknod -m 666 "$rootfs/dev/null" c 1 3

# --- Pack ----------------------------------------------------------------------------------
log "packing initrd.img (${#load_order[@]} modules: ${load_order[*]})"
(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort |
   cpio --quiet -o -H newc --owner=0:0 --reproducible | gzip -9n) >"$work/initrd.img"
# ext4 root: same tree; it is small, so mkfs.ext4 -d is cheap (a fraction of a second).
rm -f "$work/rootfs.ext4"
mkfs.ext4 -q -F -L metald-root -E root_owner=0:0 -d "$rootfs" "$work/rootfs.ext4" 16M >/dev/null

cp "$vmlinuz" "$work/vmlinuz"
for f in vmlinuz initrd.img rootfs.ext4; do mv -f "$work/$f" "$out/$f"; done
{
  echo "# metald guest image, built by tools/build-guest-image.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel_package: $kpkg $kver"
  echo "kernel_release: $krel"
  echo "kernel_deb_sha256: $(sha256sum "$deb" | cut -d' ' -f1)"
  echo "busybox_static: $busybox_version"
  echo "modules: ${load_order[*]}"
  echo "init_sha256: $(sha256sum "$guest_src/init" | cut -d' ' -f1)"
  for f in vmlinuz initrd.img rootfs.ext4; do
    echo "sha256: $(cd "$out" && sha256sum "$f")"
  done
} >"$out/manifest.tmp"
mv -f "$out/manifest.tmp" "$out/manifest"
rm -rf "$work"
log "done: $out ($kpkg $kver, kernel $krel)"
