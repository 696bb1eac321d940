#!/usr/bin/env bash
# The run command: sets up the machine, builds etcdops, starts a local
# 3-member etcd cluster with an agent per member (127.0.0.11-13), shows the
# cluster through the agents, and runs a rolling defragmentation on it (the
# plan first, then the journaled run). etcd speaks client and peer TLS with
# client-certificate auth (certificates in "$SANDBOX_DIR/pki"). Extra arguments go to `etcdops sandbox up`
# (e.g. --members 5). SANDBOX_DIR picks the directory.
# Stop it with: target/debug/etcdops sandbox down --dir "$SANDBOX_DIR"
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
cargo build --bins --locked
dir=${SANDBOX_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/etcdops/sandbox}
target/debug/etcdops sandbox up --dir "$dir" "$@"
echo
echo "\$ etcdops status"
target/debug/etcdops --fleet "$dir/fleet.toml" status
echo
echo "\$ etcdops member list"
target/debug/etcdops --fleet "$dir/fleet.toml" member list
echo
echo "\$ etcdops defrag --rolling --dry-run"
target/debug/etcdops --fleet "$dir/fleet.toml" defrag --rolling --dry-run
echo
echo "\$ etcdops defrag --rolling --yes"
ETCDOPS_JOURNAL="$dir/journal.redb" target/debug/etcdops --fleet "$dir/fleet.toml" defrag --rolling --yes
echo
echo "\$ etcdctl endpoint status (etcd speaks TLS with client-certificate auth)"
pki="$dir/pki"
ep=$(sed -n 's/^ETCD_ADVERTISE_CLIENT_URLS="\(.*\)"$/\1/p' "$dir/etcd1/etcd.env")
ETCDCTL_API=3 etcdctl --endpoints "$ep" --cacert "$pki/ca.crt" \
  --cert "$pki/etcd-client-sandbox-operator.crt" --key "$pki/etcd-client-sandbox-operator.key" \
  endpoint status -w table --cluster || true
echo
echo "Next: export ETCDOPS_FLEET=$dir/fleet.toml ETCDOPS_JOURNAL=$dir/journal.redb"
echo "      target/debug/etcdops restart --rolling --dry-run; target/debug/etcdops op list"
