#!/usr/bin/env bash
# Run every test: set up, build the plugins, then the whole workspace's
# tests (unit, plugin harness, and integration tests against the real
# kernel; those need root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/build-plugins.sh >/dev/null
cargo test --workspace "$@"
