#!/usr/bin/env bash
# The genl_test kernel module, end to end, in a VM: build the module
# against Debian's linux-headers-amd64 and a static gateway, pack them with
# busybox, the genl_test plugin and a config into an initramfs, boot
# Debian's linux-image-amd64 under qemu (software emulation), and read the
# verdict from the isa-debug-exit device. See docs/vm-test.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh --vm
target_dir=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/genl-vmtest.XXXXXX)
trap 'rm -rf "$work"' EXIT

vmlinuz=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$vmlinuz" ] || { echo "vm-test: no /boot/vmlinuz-*-amd64 (apt-get install linux-image-amd64)" >&2; exit 1; }
kver=${vmlinuz#/boot/vmlinuz-}
[ -d "/lib/modules/$kver/build" ] || { echo "vm-test: no headers for $kver (apt-get install linux-headers-amd64)" >&2; exit 1; }

echo "vm-test: module for $kver"
make -s -C kmod/genl_test KDIR="/lib/modules/$kver/build" >/dev/null

echo "vm-test: static gateway"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet -p genl-gateway --target x86_64-unknown-linux-gnu
gateway="$target_dir/x86_64-unknown-linux-gnu/debug/genl-gateway"
# A static(-pie) binary needs no shared libraries.
if readelf -d "$gateway" | grep -q NEEDED; then
    echo "vm-test: $gateway needs shared libraries; it must be static" >&2
    exit 1
fi
scripts/build-plugins.sh >/dev/null

echo "vm-test: initramfs"
r="$work/root"
mkdir -p "$r"/{bin,dev,proc,sys,run,tmp,lib/genl-gateway/plugins,etc/genl-gateway/families.d}
cp "$(command -v busybox)" "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
    [ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
done
cp "$gateway" "$r/bin/genl-gateway"
cp kmod/genl_test/genl_test.ko "$r/lib/"
cp target/plugins/genl_test.wasm "$r/lib/genl-gateway/plugins/"
cp kmod/vm/gateway.toml "$r/etc/genl-gateway/"
cp config/families.d/genl_test.toml "$r/etc/genl-gateway/families.d/"
install -m 0755 kmod/vm/init "$r/init"
(cd "$r" && find . | cpio --quiet -o -H newc | gzip -1) > "$work/initrd.gz"

echo "vm-test: booting $kver under qemu (tcg)"
set +e
timeout "${VM_TIMEOUT:-600}" qemu-system-x86_64 \
    -accel tcg -cpu max -m 1024 -smp 2 \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" \
    -display none -monitor none -serial "file:$work/console.log" -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
rc=$?
set -e
grep -E "^VMTEST" "$work/console.log" || true
# isa-debug-exit: value v exits qemu with (v << 1) | 1.
if [ "$rc" -eq 1 ] && grep -q "VMTEST RESULT: PASS" "$work/console.log"; then
    echo "vm-test: 1 passed, 0 failed"
    exit 0
fi
echo "vm-test: FAILED (qemu exit $rc); console:" >&2
tail -n 80 "$work/console.log" >&2
echo "vm-test: 0 passed, 1 failed"
exit 1
