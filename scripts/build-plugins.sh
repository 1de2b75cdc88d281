#!/usr/bin/env bash
# Build every plugin in plugins/ as a wasm32-wasip2 component and copy it to
# target/plugins/NAME.wasm, where config/gateway.toml looks for plugins.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

packages=()
for manifest in plugins/*/Cargo.toml; do
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)
    packages+=(-p "$name")
done
cargo build --quiet --release --target wasm32-wasip2 "${packages[@]}"

target_dir=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$root/target/plugins"
for manifest in plugins/*/Cargo.toml; do
    dir=$(basename "$(dirname "$manifest")")
    crate=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)
    cp "$target_dir/wasm32-wasip2/release/${crate//-/_}.wasm" "$root/target/plugins/$dir.wasm"
done
ls -1 "$root/target/plugins"
