#!/usr/bin/env bash
# Benchmarks, side by side in one run: raw netlink, the plugin path in
# process, the HTTP API, and pyroute2 0.9.7 (in a virtual environment made
# here). Prints the table and writes it to target/bench/results.md.
# As root; extra arguments go to genl-bench (--quick for a short run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh --bench
scripts/build-plugins.sh >/dev/null
cargo build --release -p genl-gateway -p genl-bench
target_dir=${CARGO_TARGET_DIR:-$root/target}

venv="$target_dir/bench-venv"
if ! "$venv/bin/python" -c "import pyroute2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pyroute2==0.9.7
fi
exec "$target_dir/release/genl-bench" --gateway "$target_dir/release/genl-gateway" --python "$venv/bin/python" "$@"
