#!/usr/bin/env bash
# Idle cost of etcdops-agent: starts a 1-member sandbox, waits until it
# answers, then samples the agent's resident memory (VmRSS) and CPU time
# (/proc/PID/stat utime+stime) over an idle window; prints the figures and
# stops the sandbox. The agent runs with its defaults (periodic light disk
# probe every 60 s, so one or two probes fall in the window; no /metrics).
#
# Usage: deploy/bench/agent-idle.sh [SECONDS]
#   SECONDS  the idle window (default 60)
# Environment:
#   BIN_DIR    where etcdops and etcdops-agent are (default: target/release
#              of this checkout)
#   IP_PREFIX  the sandbox's 127.x.y prefix (default 127.201.1)
set -euo pipefail

window=${1:-60}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=${BIN_DIR:-$here/target/release}
prefix=${IP_PREFIX:-127.201.1}
etcdops=$bin_dir/etcdops
for b in "$etcdops" "$bin_dir/etcdops-agent"; do
  if [ ! -x "$b" ]; then
    echo "agent-idle: $b not found: run \`cargo build --release --bins\` (or set BIN_DIR)" >&2
    exit 2
  fi
done

dir=$(mktemp -d -t etcdops-agent-idle-XXXXXX)
cleanup() {
  "$etcdops" sandbox down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$etcdops" sandbox up --members 1 --dir "$dir" --ip-prefix "$prefix" --agent-bin "$bin_dir/etcdops-agent" >/dev/null

# Wait (bounded) until the member answers through its agent.
deadline=$((SECONDS + 60))
until "$etcdops" --fleet "$dir/fleet.toml" status >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "agent-idle: the sandbox did not become healthy in 60 s" >&2
    exit 1
  fi
  sleep 1
done
pid=$(cat "$dir/etcd1/agent.pid")
tick=$(getconf CLK_TCK)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
cpu_ticks() {
  # Fields after the parenthesised command name: utime is 14, stime 15 overall.
  sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'
}

start_ticks=$(cpu_ticks)
start_time=$(date +%s.%N)
rss_min=$(rss_kib); rss_max=$rss_min; rss_sum=0; samples=0
for _ in $(seq "$window"); do
  sleep 1
  r=$(rss_kib)
  rss_sum=$((rss_sum + r)); samples=$((samples + 1))
  [ "$r" -lt "$rss_min" ] && rss_min=$r
  [ "$r" -gt "$rss_max" ] && rss_max=$r
done
end_ticks=$(cpu_ticks)
end_time=$(date +%s.%N)

awk -v t0="$start_ticks" -v t1="$end_ticks" -v hz="$tick" -v s0="$start_time" -v s1="$end_time" \
    -v rmin="$rss_min" -v rmax="$rss_max" -v rsum="$rss_sum" -v n="$samples" 'BEGIN {
  cpu = (t1 - t0) / hz; wall = s1 - s0
  printf "agent idle over %.1f s (1-member sandbox, defaults)\n", wall
  printf "  RSS   min %.1f MiB, mean %.1f MiB, max %.1f MiB (%d samples, VmRSS)\n", rmin/1024, rsum/n/1024, rmax/1024, n
  printf "  CPU   %.2f s user+sys = %.3f %% of one core\n", cpu, 100 * cpu / wall
}'
