#!/usr/bin/env bash
# Install what building and testing genl-gateway needs on a Debian 12
# machine with rustup: the wasm32-wasip2 target, a C toolchain (wasmtime's
# runtime has a little C), and for the tests iproute2 (ip netns, genl) and
# ethtool (an independent way to change device settings).
# Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v ip >/dev/null || need+=(iproute2)
command -v genl >/dev/null || need+=(iproute2)
command -v ethtool >/dev/null || need+=(ethtool)
command -v python3 >/dev/null || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing packages: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
