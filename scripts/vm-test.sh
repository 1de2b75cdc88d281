#!/usr/bin/env bash
# Kernel modules, end to end, in a VM: build the genl_test module (and
# netdevsim, which Debian's kernel does not ship) against Debian's
# linux-headers-amd64 and a static gateway, pack them with busybox, the
# modules of families this machine lacks (wireguard, openvswitch, team,
# fou), the genl_test and ynl plugins and their family files into an
# initramfs, boot Debian's linux-image-amd64 under qemu (software
# emulation), and read the verdict from the isa-debug-exit device.
# See docs/vm-test.md.
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

moddir=/lib/modules/$kver
echo "vm-test: module for $kver"
make -s -C kmod/genl_test KDIR="$moddir/build" >/dev/null

# From the same release's source (linux-source-X.Y, which setup.sh --vm
# installs), once per kernel: netdevsim (devlink's software device), which
# Debian's kernel does not ship (CONFIG_NETDEVSIM is off), built out of
# tree; and team.c, whose option table is the oracle for team's options.
src_cache=${GENL_VM_SRC_CACHE:-/var/cache/genl-gateway/vm-$kver}
nsim_src=$src_cache/netdevsim
if [ ! -e "$src_cache/.complete" ]; then
    series=$(echo "$kver" | cut -d. -f1,2)
    tarball=$(ls /usr/src/linux-source-"$series".tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || { echo "vm-test: no /usr/src/linux-source-$series.tar.* (apt-get install linux-source-$series)" >&2; exit 1; }
    echo "vm-test: netdevsim and team.c from $tarball"
    tmp=$(mktemp -d)
    tar -xf "$tarball" -C "$tmp" --wildcards "linux-source-$series/drivers/net/netdevsim/*" \
        "linux-source-$series/drivers/net/team/team.c"
    rm -rf "$src_cache"
    mkdir -p "$src_cache"
    mv "$tmp/linux-source-$series/drivers/net/netdevsim" "$nsim_src"
    mv "$tmp/linux-source-$series/drivers/net/team/team.c" "$src_cache/"
    rm -rf "$tmp"
    make -s -C "$moddir/build" M="$nsim_src" CONFIG_NETDEVSIM=m >/dev/null 2>&1 ||
        { echo "vm-test: building netdevsim in $nsim_src failed" >&2; exit 1; }
    touch "$src_cache/.complete"
fi

# The kernel's modules for the families this machine lacks, each after the
# modules it needs (modules.dep lists them; busybox's insmod resolves
# nothing). crc32c_generic is libcrc32c's soft dependency (modules.softdep),
# which openvswitch needs through it.
kmods=()
add_module() { # $1: a path under $moddir, as modules.dep spells it
    local m=$1 seen dep
    for seen in "${kmods[@]}"; do [ "$seen" = "$m" ] && return 0; done
    for dep in $(awk -v m="$m:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep"); do
        add_module "$dep"
    done
    kmods+=("$m")
}
module_path() { # $1: a module name
    local p
    p=$(grep -oE "^[^:]*/$1\.ko:" "$moddir/modules.dep" | tr -d :)
    [ -n "$p" ] || { echo "vm-test: module $1 not in $moddir/modules.dep" >&2; exit 1; }
    echo "$p"
}
# virtio_pci, 9pnet_virtio and 9p mount the host's compiled-plugin cache.
for name in virtio_pci 9pnet_virtio 9p crc32c_generic wireguard openvswitch team fou $(modinfo -F depends "$nsim_src/netdevsim.ko" | tr , ' '); do
    add_module "$(module_path "$name")"
done

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
# Without debug information: a tenth of the size to pack, unpack and page in.
strip -o "$r/bin/genl-gateway" "$gateway"
cp kmod/genl_test/genl_test.ko "$r/lib/"
mkdir -p "$r/lib/kmod" "$r/etc/vmtest"
for m in "${kmods[@]}"; do
    mkdir -p "$r/lib/kmod/$(dirname "$m")"
    cp "$moddir/$m" "$r/lib/kmod/$m"
    echo "/lib/kmod/$m"
done > "$r/etc/vmtest/modules"
cp "$nsim_src/netdevsim.ko" "$r/lib/kmod/"
echo /lib/kmod/netdevsim.ko >> "$r/etc/vmtest/modules"
cp target/plugins/genl_test.wasm target/plugins/ynl.wasm "$r/lib/genl-gateway/plugins/"
cp kmod/vm/gateway.toml "$r/etc/genl-gateway/"
cp config/families.d/genl_test.toml "$r/etc/genl-gateway/families.d/"
# One family file for ynl.wasm at start (it compiles once, into the cache);
# families.sh adds the others, which then load from the cache.
mkdir -p "$r/etc/vmtest/families.d"
cp kmod/vm/families.d/*.toml "$r/etc/vmtest/families.d/"
mv "$r/etc/vmtest/families.d/wireguard.toml" "$r/etc/genl-gateway/families.d/"
cp kmod/vm/genl_test-policy.toml "$r/etc/vmtest/"
# The kernel's team.yaml (bundled as it is) does not mark item-option's
# `option` multi-attr, though the kernel sends one per option: served from
# it, only the last option survives, as with the kernel's own YNL CLI. The
# VM serves team from a copy with that line added, through `spec = PATH`.
mkdir -p "$r/etc/genl-gateway/specs"
awk '{ print } /nested-attributes: attr-(option|port)$/ { print "        multi-attr: true" }' \
    ynl-specs/team.yaml > "$r/etc/genl-gateway/specs/team.yaml"
[ "$(grep -c 'multi-attr: true' "$r/etc/genl-gateway/specs/team.yaml")" -eq 2 ] ||
    { echo "vm-test: ynl-specs/team.yaml changed; revisit the multi-attr fix-up" >&2; exit 1; }
python3 kmod/vm/expected.py "$src_cache/team.c" > "$r/etc/vmtest/expected"
# genl_test through the policy fallback (spec = "kernel-policy"), once the
# gateway has it: GENL_VM_FALLBACK=1 requires the step, 0 skips it, and by
# default it runs when the source handles "kernel-policy".
fallback=${GENL_VM_FALLBACK:-auto}
if [ "$fallback" = auto ]; then
    if grep -rqF '"kernel-policy"' host/src; then fallback=1; else fallback=0; fi
fi
echo "FALLBACK=$fallback" >> "$r/etc/vmtest/expected"
# The VM shows the gateway's log this long after it started, before qemu's timeout.
vm_timeout=${VM_TIMEOUT:-600}
echo "WATCHDOG_S=$((vm_timeout > 60 ? vm_timeout - 30 : 30))" >> "$r/etc/vmtest/expected"
install -m 0755 kmod/vm/init "$r/init"
cp kmod/vm/*.sh "$r/etc/vmtest/"
(cd "$r" && find . | cpio --quiet -o -H newc | gzip -1) > "$work/initrd.gz"

# The gateway's compiled-plugin cache, kept on the host across runs and
# shared into the VM (9p): compiling ynl.wasm under emulation takes a
# minute or two, loading it from the cache a second. Entries are named by
# the component's sha256 and the engine's compatibility hash; those of
# components other than the current plugins are removed, which bounds it.
plugin_cache=${GENL_VM_PLUGIN_CACHE:-/var/cache/genl-gateway/vm-plugin-cache}
mkdir -p "$plugin_cache"
chmod 0700 "$plugin_cache"
keep=$(sha256sum target/plugins/genl_test.wasm target/plugins/ynl.wasm | cut -d' ' -f1)
for f in "$plugin_cache"/*; do
    [ -e "$f" ] || continue
    echo "$keep" | grep -qx "$(basename "$f" | cut -d- -f1)" || rm -f "$f"
done

echo "vm-test: booting $kver under qemu (tcg)"
set +e
timeout "$vm_timeout" qemu-system-x86_64 \
    -accel tcg -cpu max -m 1024 -smp 2 \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" \
    -display none -monitor none -serial "file:$work/console.log" -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -virtfs "local,path=$plugin_cache,mount_tag=gwcache,security_model=passthrough"
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
