#!/usr/bin/env bash
# What the HashKV check between steps costs: a 3-member sandbox with MB
# megabytes of 100 kB values (default 250), then `etcdops check hashkv` (the
# same RPCs the check runs after each step) RUNS times, and one rolling
# defrag with the check, one with --skip-hashkv-check and one with it again
# (after a first, unmeasured defrag), printing each
# step's time and the check's own time from the journal.
#   cargo build --bins && bash tests/scripts/bench-hashkv.sh [MB] [RUNS]
# Leaves nothing running (the sandbox is stopped and its directory removed).
set -euo pipefail
cd "$(dirname "$0")/../.."
mb=${1:-250}
runs=${2:-5}
bin=${ETCDOPS_BIN_DIR:-target/debug}
dir=$(mktemp -d)
trap '"$bin/etcdops" sandbox down --dir "$dir/sbx" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$bin/etcdops" sandbox up --dir "$dir/sbx" --ip-prefix 127.0.77 >/dev/null
export ETCDOPS_FLEET="$dir/sbx/fleet.toml" ETCDOPS_JOURNAL="$dir/journal.redb"
ep=https://127.0.77.11:2379
pki="$dir/sbx/pki"   # the sandbox's etcd speaks TLS with client-certificate auth
tls=(--cacert "$pki/ca.crt" --cert "$pki/etcd-client-sandbox-operator.crt" --key "$pki/etcd-client-sandbox-operator.key")
head -c 75000 /dev/urandom | base64 -w0 > "$dir/value"   # 100 kB
for i in $(seq 1 $((mb * 10))); do
  ETCDCTL_API=3 etcdctl --endpoints="$ep" "${tls[@]}" put "bench/$i" < "$dir/value" >/dev/null
done
"$bin/etcdops" status | tail -n 1
echo "etcdops check hashkv, $runs runs (ms):"
for _ in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  "$bin/etcdops" check hashkv >/dev/null
  echo "  $(( ($(date +%s%N) - start) / 1000000 ))"
done
# A first defrag reclaims what the writes left free, so the two measured runs
# below do the same work.
"$bin/etcdops" defrag --rolling --yes --skip-hashkv-check >/dev/null 2>&1
for flag in "" "--skip-hashkv-check" ""; do
  echo "etcdops defrag --rolling --yes $flag:"
  "$bin/etcdops" defrag --rolling --yes -w json $flag 2>/dev/null | python3 -c '
import json,re,sys
r=json.load(sys.stdin)
for s in r["steps"]:
    d=s["detail"] or ""
    took=re.search(r"step took ([0-9.]+ m?s)", d)
    hk=re.search(r"hashkv \w+ equal on \d+ members at revision \d+ \(([0-9.]+ m?s)\)", d)
    print("  %-34s step %-9s hashkv %s" % (s["id"], took.group(1) if took else "-", hk.group(1) if hk else "-"))'
done
