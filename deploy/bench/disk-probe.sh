#!/usr/bin/env bash
# fio as etcd's guidance runs it, and etcdops' own fdatasync probe
# (`etcdops-agent probe-disk`), on the same directory in the same run,
# alternating which goes first; prints both p50/p99/max side by side.
#
# Usage: deploy/bench/disk-probe.sh [DIR] [ROUNDS]
#   DIR     the directory to measure (default: the current directory); use
#           the filesystem etcd's data dir is on, e.g. /var/lib/etcd
#   ROUNDS  fio+probe pairs (default 3)
# Environment:
#   ETCDOPS_AGENT  the etcdops-agent binary (default: on PATH, else
#                  target/release, else target/debug of this checkout)
#
# Installs fio and jq with apt-get when they are missing. Writes only in
# directories of its own inside DIR, and removes them.
set -euo pipefail

dir=${1:-.}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)

if [ ! -d "$dir" ]; then
  echo "disk-probe: $dir is not a directory" >&2
  exit 2
fi
dir=$(cd "$dir" && pwd)

need_apt=()
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "disk-probe: installing ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

agent=${ETCDOPS_AGENT:-}
if [ -z "$agent" ]; then
  for candidate in "$(command -v etcdops-agent || true)" "$here/target/release/etcdops-agent" "$here/target/debug/etcdops-agent"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then agent=$candidate; break; fi
  done
fi
if [ -z "$agent" ]; then
  echo "disk-probe: etcdops-agent not found: build it (cargo build --release -p etcdops-agent) or set ETCDOPS_AGENT" >&2
  exit 2
fi

# fio's own directory (fio leaves its file behind): ours to remove.
work=$(mktemp -d "$dir/.etcdops-bench-fio-XXXXXX")
results=$(mktemp)
trap 'rm -rf -- "$work" "$results"' EXIT

fio_cmd=(fio --rw=write --ioengine=sync --fdatasync=1 --directory="$work" --size=22m --bs=2300 --name=mytest)

run_fio() {
  rm -f -- "$work"/mytest.*
  "${fio_cmd[@]}" --output-format=json |
    jq -r '.jobs[0].sync.lat_ns | "fio \(.N) \(.percentile["50.000000"] / 1000 | floor) \(.percentile["99.000000"] / 1000 | floor) \(.max / 1000 | floor)"'
  rm -f -- "$work"/mytest.*
}

run_probe() {
  # Exit 1 only means "over the threshold": the figures are still printed.
  { "$agent" probe-disk --dir "$dir" --json || [ $? -eq 1 ]; } |
    jq -r '"probe \(.writes) \(.p50_us) \(.p99_us) \(.max_us)"'
}

echo "dir:     $dir ($(df -PT "$dir" | awk 'NR==2 {print $2 " on " $1}'))"
echo "fio:     ${fio_cmd[*]}"
echo "probe:   $agent probe-disk --dir $dir --json"
echo "machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -r)"
echo
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    { run_fio; run_probe; } | sed "s/^/$round /" >>"$results"
  else
    { run_probe; run_fio; } | sed "s/^/$round /" >>"$results"
  fi
done

printf '%-6s %-6s %8s %10s %10s %10s\n' round tool writes p50_us p99_us max_us
sort -k1,1n -k2,2 "$results" | while read -r r tool writes p50 p99 max; do
  printf '%-6s %-6s %8s %10s %10s %10s\n' "$r" "$tool" "$writes" "$p50" "$p99" "$max"
done
echo
echo "p99 side by side (µs):"
printf '%-6s %10s %10s %8s\n' round fio probe ratio
for round in $(seq 1 "$rounds"); do
  f=$(awk -v r="$round" '$1 == r && $2 == "fio" {print $5}' "$results")
  p=$(awk -v r="$round" '$1 == r && $2 == "probe" {print $5}' "$results")
  printf '%-6s %10s %10s %8s\n' "$round" "$f" "$p" "$(awk -v f="$f" -v p="$p" 'BEGIN { if (f > 0) printf "%.2f", p / f; else print "-" }')"
done
