#!/usr/bin/env bash
# The test command: sets up the machine, builds once, and runs every unit and
# end-to-end test (real etcd members, real agents, real mutual TLS).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
