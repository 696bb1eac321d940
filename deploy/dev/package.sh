#!/usr/bin/env bash
# Builds the two Debian packages, etcdops-agent and etcdops, with cargo-deb.
#
#   bash deploy/dev/package.sh [--profile release|dev] [--revision N]
#                              [--no-build] [--out-dir DIR]
#
# Contract (scripts and the test suite rely on it):
# - T is $CARGO_TARGET_DIR, else <repo>/target.
# - --profile release (default) packages T/release/{etcdops,etcdops-agent}
#   into T/debian/; --profile dev packages the debug binaries of
#   `cargo build` (T/debug/...), stripped, with fast compression, into
#   T/debian-dev/. --out-dir DIR overrides the directory.
# - The files are always named
#     DIR/etcdops-agent_<version>-<revision>_<arch>.deb
#     DIR/etcdops_<version>-<revision>_<arch>.deb
#   <version> is the workspace version (Cargo.toml), <revision> is
#   --revision (default 1: 0.1.0-2 is newer than 0.1.0-1, for upgrades),
#   <arch> is `dpkg --print-architecture`. A rebuild overwrites them.
# - stdout: exactly those two paths, agent first, one per line. Progress
#   and errors go to stderr; exit status non-zero on any failure.
# - Unless --no-build, it first runs `cargo build` of both binaries for the
#   profile (--locked). Completions and man pages are generated from the
#   built binaries into T/<release|debug>/etcdops-deb/ (never into the
#   repository), where Cargo.toml's [package.metadata.deb] assets find them.
# - Packaging runs of one profile in one target dir are serialised (flock on
#   T/<release|debug>/etcdops-deb.lock, taken after the build). cargo-deb
#   runs with its own target dir per profile, T/etcdops-deb-stage/<profile>/
#   (a symlink to the binaries' dir inside): its scratch dirs and its habit of
#   deleting other versions' .debs from <its target>/debian/ stay there, so
#   a dev run never deletes the release packages in T/debian/ nor the
#   other revisions in the output dir.
#
# Needs cargo-deb 3.8.0 (deploy/dev/setup.sh installs it). Packaging notes
# and lintian overrides: deploy/debian/README.md.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

profile=release
revision=1
build=1
out_dir=""
usage() {
  echo "usage: bash deploy/dev/package.sh [--profile release|dev] [--revision N] [--no-build] [--out-dir DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || usage; profile="$2"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --revision) [ $# -ge 2 ] || usage; revision="$2"; shift 2 ;;
    --revision=*) revision="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    --out-dir) [ $# -ge 2 ] || usage; out_dir="$2"; shift 2 ;;
    --out-dir=*) out_dir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "package: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$profile" in
  release) profile_dir=release; default_out=debian; deb_flags=() ;;
  dev) profile_dir=debug; default_out=debian-dev; deb_flags=(--fast) ;;
  *) echo "package: --profile must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
case "$revision" in
  ''|*[!0-9A-Za-z.+~]*) echo "package: --revision must be a Debian revision such as 2, not '$revision'" >&2; exit 2 ;;
esac

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: cargo-deb is missing: run 'bash deploy/dev/setup.sh' (installs cargo-deb 3.8.0)" >&2
  exit 1
fi

target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
out_dir="${out_dir:-$target/$default_out}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
bin_dir="$target/$profile_dir"
gen="$bin_dir/etcdops-deb"

if [ "$build" = 1 ]; then
  build_flags=()
  [ "$profile" = release ] && build_flags=(--release)
  echo "package: cargo build ${build_flags[*]} (etcdops, etcdops-agent)" >&2
  cargo build --locked "${build_flags[@]}" -p etcdops-coordinator -p etcdops-agent --bins >&2
fi
for bin in etcdops etcdops-agent; do
  if [ ! -x "$bin_dir/$bin" ]; then
    echo "package: $bin_dir/$bin is missing: build it first (cargo build for the $profile profile) or drop --no-build" >&2
    exit 1
  fi
done

# One packaging run per profile and target dir at a time: the generated
# files below are shared.
exec 9>"$bin_dir/etcdops-deb.lock"
flock 9

# Completions and man pages, from the clap definitions of the built binaries.
rm -rf "$gen"
mkdir -p "$gen/completions" "$gen/man1" "$gen/man8"
"$bin_dir/etcdops" completions bash >"$gen/completions/etcdops"
"$bin_dir/etcdops" completions zsh >"$gen/completions/_etcdops"
"$bin_dir/etcdops" completions fish >"$gen/completions/etcdops.fish"
"$bin_dir/etcdops" generate-manpages --out-dir "$gen/man1" >/dev/null
"$bin_dir/etcdops-agent" generate-manpages --out-dir "$gen/man8" >/dev/null
gzip -9n "$gen"/man1/*.1 "$gen"/man8/*.8

# The workspace version ([workspace.package] in Cargo.toml), as cargo-deb uses it.
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || { echo "package: no version in [workspace.package] of Cargo.toml" >&2; exit 1; }
arch="$(dpkg --print-architecture)"
stage="$target/etcdops-deb-stage/$profile"
mkdir -p "$stage"
ln -sfn "$bin_dir" "$stage/$profile_dir"
for crate_deb in etcdops-agent:etcdops-agent etcdops-coordinator:etcdops; do
  crate="${crate_deb%%:*}"
  deb="${crate_deb#*:}"
  file="$out_dir/${deb}_${version}-${revision}_${arch}.deb"
  echo "package: cargo deb -p $crate ($profile) -> $file" >&2
  CARGO_TARGET_DIR="$stage" cargo deb -p "$crate" --no-build --locked --profile "$profile" --strip \
    --deb-revision "$revision" "${deb_flags[@]}" --output "$file" >&2
  [ -f "$file" ] || { echo "package: cargo deb did not write $file" >&2; exit 1; }
  packaged+=("$file")
done
printf '%s\n' "${packaged[@]}"
