#!/usr/bin/env bash
# Run every test: set up, build the plugins, run the whole workspace's
# tests (unit, plugin harness, and integration tests against the real
# kernel, in private network namespaces; they need root), then the
# kernel-module test in a VM (scripts/vm-test.sh; GENL_SKIP_VM=1 skips it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${GENL_SKIP_VM:-0}" = 1 ]; then scripts/setup.sh; else scripts/setup.sh --vm; fi
scripts/build-plugins.sh >/dev/null
cargo test --workspace "$@"
if [ "${GENL_SKIP_VM:-0}" != 1 ]; then
    scripts/vm-test.sh
fi
