#!/usr/bin/env bash
# Build everything and run the gateway with the bundled configuration
# (config/gateway.toml, config/families.d/). Needs root: the API socket is
# under /run and some families need CAP_NET_ADMIN. Extra arguments go to
# `genl-gateway serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/build-plugins.sh
cargo build --release -p genl-gateway
target_dir=${CARGO_TARGET_DIR:-$root/target}
exec "$target_dir/release/genl-gateway" serve --config config/gateway.toml "$@"
