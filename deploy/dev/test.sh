#!/usr/bin/env bash
# The test command: sets up the machine, checks the declared style (rustfmt,
# clippy with warnings as errors), builds once, and runs every unit and
# end-to-end test (real etcd members, real agents, real mutual TLS, real
# systemd hosts). Needs root (nspawn hosts, network namespaces, iptables).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
# The .debs of the debug build, for tests/tests/packages.rs and the nspawn hosts (target/debian-dev/).
bash deploy/dev/package.sh --profile dev --no-build
# A systemd-host test never passes by skipping here: missing root or tools fail it.
export ETCDOPS_REQUIRE_NSPAWN=1
cargo nextest run --workspace --locked --no-fail-fast "$@"
