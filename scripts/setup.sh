#!/usr/bin/env bash
# Install what building and testing genl-gateway needs on a Debian 12
# machine with rustup: the wasm32-wasip2 target, a C toolchain (wasmtime's
# runtime has a little C), and for the tests iproute2 (ip netns, genl) and
# ethtool (an independent way to change device settings), and the kernel's
# UAPI headers (linux-libc-dev), which plugin tests read for every number.
# With --vm, also what the kernel-module VM test needs: Debian's kernel
# image and headers, the same release's source (netdevsim is built from it:
# Debian's kernel lacks it), qemu, a static busybox, cpio, and python3's
# cryptography (the host derives the WireGuard keys the VM checks).
# Idempotent: does nothing when everything is there.
set -euo pipefail
# With --bench: python3-venv, for pyroute2 in the benchmark.
vm=false
bench=false
[ "${1:-}" = "--vm" ] && vm=true
[ "${1:-}" = "--bench" ] && bench=true

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v ip >/dev/null || need+=(iproute2)
command -v genl >/dev/null || need+=(iproute2)
command -v ethtool >/dev/null || need+=(ethtool)
command -v python3 >/dev/null || need+=(python3)
[ -e /usr/include/linux/ethtool_netlink.h ] || need+=(linux-libc-dev)
# The fleet tests run real NATS servers (a cluster on loopback).
command -v nats-server >/dev/null || need+=(nats-server)
if $bench && ! python3 -c "import ensurepip, venv" 2>/dev/null; then
    need+=(python3-venv)
fi
if $vm; then
    command -v make >/dev/null || need+=(make)
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v cpio >/dev/null || need+=(cpio)
    # The initramfs needs a busybox that runs without shared libraries.
    if ! command -v busybox >/dev/null || ldd "$(command -v busybox)" >/dev/null 2>&1; then
        need+=(busybox-static)
    fi
    ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
    ls -d /lib/modules/*-amd64/build >/dev/null 2>&1 || need+=(linux-headers-amd64)
    python3 -c "import cryptography" 2>/dev/null || need+=(python3-cryptography)
    for vmlinuz in /boot/vmlinuz-*-amd64; do
        [ -e "$vmlinuz" ] || continue
        series=$(echo "${vmlinuz#/boot/vmlinuz-}" | cut -d. -f1,2)
        ls /usr/src/linux-source-"$series".tar.* >/dev/null 2>&1 || need+=("linux-source-$series")
    done
fi

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing packages: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The independent oracles the tests compare against: the kernel's own YNL
# Python library (tools/net/ynl) and UAPI headers, from Debian's
# linux-source-6.12, extracted once.
oracle=${GENL_ORACLE_DIR:-/usr/local/share/genl-gateway/linux-source-6.12}
if [ ! -e "$oracle/.complete" ]; then
    if ! ls /usr/src/linux-source-6.12.tar.* >/dev/null 2>&1 || ! python3 -c "import yaml" 2>/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing linux-source-6.12 and python3-yaml; install them as root" >&2
            exit 1
        fi
        echo "installing: linux-source-6.12 python3-yaml (test oracles)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source-6.12 python3-yaml >/dev/null
    fi
    echo "extracting the kernel's YNL library and UAPI headers to $oracle"
    tmp=$(mktemp -d)
    tar -xf /usr/src/linux-source-6.12.tar.* -C "$tmp" --wildcards \
        'linux-source-6.12/tools/net/ynl/*' 'linux-source-6.12/include/uapi/*' \
        'linux-source-6.12/Documentation/netlink/*'
    mkdir -p "$(dirname "$oracle")"
    rm -rf "$oracle"
    mv "$tmp/linux-source-6.12" "$oracle"
    rmdir "$tmp"
    touch "$oracle/.complete"
fi

# A real OpenAPI 3.1 validator for the gateway's /v1/openapi.json (Debian
# does not package one): openapi-spec-validator from PyPI, in its own venv.
openapi_venv=${GENL_OPENAPI_VENV:-/usr/local/share/genl-gateway/openapi-venv}
if ! "$openapi_venv/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
    if ! python3 -c "import ensurepip, venv" 2>/dev/null; then
        [ "$(id -u)" -eq 0 ] || { echo "missing python3-venv; install it as root" >&2; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "installing openapi-spec-validator into $openapi_venv"
    python3 -m venv "$openapi_venv"
    "$openapi_venv/bin/pip" install -q "openapi-spec-validator>=0.7"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
