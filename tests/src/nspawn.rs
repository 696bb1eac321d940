//! Hosts with a real systemd: one systemd-nspawn container per etcd host
//! (systemd as PID 1, D-Bus, journald, Debian's etcd.service), each with its
//! own overlayfs disk, network namespace and cgroup, and our agent inside with
//! `[unit] backend = "systemd"`, installed from its Debian package the way
//! README's "Install on a host" says: `dpkg -i` of the `etcdops-agent` .deb
//! (`bash deploy/dev/package.sh --profile dev` builds it; see [`debs`]), the
//! certificates and `/etc/etcdops/agent.toml` put in place, then `systemctl
//! enable --now etcdops-agent`: every test runs the packaged, hardened unit
//! ([`AgentSetup::Packaged`], in parallel across hosts). With
//! [`AgentSetup::NotInstalled`] the hosts boot without the package and
//! without `/etc/etcdops`: the agent's config and certificates wait in
//! [`STAGED_ETC_IN_HOST`] and the debs in [`DEBS_IN_HOST`] (read-only), for
//! tests of the package itself. With [`AgentSetup::Bare`] they boot as bare
//! Debian hosts for provisioning tests (`tests/tests/ansible_e2e.rs`): their
//! own root filesystem ([`SSH_ROOTFS`]: sshd, python3, python3-apt, no etcd),
//! `/etc/hosts`, and nothing of ours; [`etcd_debs`] are etcd's packages for
//! them, downloaded once beside that root filesystem.
//!
//! ```no_run
//! let Some(cluster) = etcdops_tests::nspawn::NspawnCluster::start_or_skip(3, etcdops_tests::bins!()) else {
//!     return; // printed "SKIPPED: <reason>"
//! };
//! assert_eq!(cluster.exec_stdout(0, &["systemctl", "is-active", "etcd"]), "active");
//! ```
//!
//! Spare hosts ([`NspawnCluster::start_or_skip_with_spares`]) are booted the
//! same way after the members (host index `members + j`, address `.11 +
//! members + j`, named after the members: `etcd4`, ...) with the agent
//! running, etcd installed but etcd.service neither enabled nor started, and
//! an `/etc/default/etcd` holding only the host's name, data dir and
//! listen/advertise URLs (no `ETCD_INITIAL_CLUSTER*`: `etcdops member add`
//! writes those), like the sandbox's spares; they are not in the fleet file.
//! [`NspawnCluster::power_cut`] takes a host off the network and SIGKILLs
//! everything in it at once.
//!
//! The root filesystem is built once per machine with debootstrap into
//! [`CACHE_DIR`] (under a lock, with a marker written when complete). Each
//! cluster takes a slot N (a lock file under [`RUN_DIR`]) and the subnet
//! 198.18.N.0/24 (RFC 2544 test range): bridge `eobrN` at .1, member i at
//! `.11 + i` in netns `eoNhI`. Everything is torn down in `Drop`, also on panic:
//! containers killed, overlays unmounted, namespaces, links, cgroups and
//! nspawn's propagation directories removed. Every step is an argument
//! vector whose result is checked.
//!
//! Needs root, `systemd-nspawn`, `nsenter`, `ip`, and `debootstrap` for the
//! first build. Where they are missing the tests print `SKIPPED: <reason>`
//! (`deploy/dev/setup.sh` installs `systemd-container debootstrap iproute2`).

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcdops_agent::config::{AgentConfig, Backend, UnitConfig};
use etcdops_agent::envfile::EnvFile;
use etcdops_certs::{Pki, Role};
use etcdops_coordinator::sandbox::layout::{Layout, LayoutSpec, MemberLayout};
use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::{
    AcquireFenceRequest, Fence, GetStatusRequest, GetStatusResponse, HealthRequest, HealthResponse,
};
use nix::fcntl::{Flock, FlockArg};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Bins;

/// The shared, read-only root filesystems (one per distribution).
pub const CACHE_DIR: &str = "/var/cache/etcdops-tests";
/// Slot locks of running clusters.
pub const RUN_DIR: &str = "/run/etcdops-tests";
/// Written into a root filesystem once it is complete.
const ROOTFS_MARKER: &str = ".etcdops-rootfs-complete";
/// What debootstrap installs.
const ROOTFS_INCLUDE: &str = "systemd,systemd-sysv,dbus,etcd-server,etcd-client,iproute2,procps";
/// The root filesystem of [`AgentSetup::Bare`] hosts (`CACHE_DIR/rootfs-<this>`):
/// Debian 12 reachable over SSH by Ansible, without etcd (Debian's
/// etcd-server would have started a default member).
pub const SSH_ROOTFS: &str = "bookworm-ssh";
/// What debootstrap installs into [`SSH_ROOTFS`].
const SSH_ROOTFS_INCLUDE: &str =
    "systemd,systemd-sysv,dbus,iproute2,procps,openssh-server,python3,python3-apt";
/// etcd's packages for bare hosts, in install order (see [`etcd_debs`]).
const ETCD_PACKAGES: [&str; 2] = ["etcd-server", "etcd-client"];
/// Where the directory of the .debs ([`debs`]) appears inside a host (read-only).
pub const DEBS_IN_HOST: &str = "/opt/etcdops-debs";
/// The agent's config inside a host.
const AGENT_CONFIG_IN_HOST: &str = "/etc/etcdops/agent.toml";
/// Where the host's `/etc/etcdops` (the agent's config and certificates, as
/// the layout made them) waits until the package is installed: `pki/` and
/// `agent.toml`.
pub const STAGED_ETC_IN_HOST: &str = "/var/lib/etcdops-tests/etc-etcdops";
/// The packaged unit the agent runs as inside a host.
pub const AGENT_UNIT: &str = "etcdops-agent.service";
/// The command that builds the .debs the hosts install.
pub const PACKAGE_COMMAND: &str = "bash deploy/dev/package.sh --profile dev";
/// Where [`PACKAGE_COMMAND`] writes them, under the target dir.
const DEBS_DIR_IN_TARGET: &str = "debian-dev";
/// How long hosts may take to boot and form a healthy cluster.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster of nspawn hosts; dropped = torn down.
pub struct NspawnCluster {
    /// PKI, fleet file and per-member addresses (198.18.N.11+i).
    pub layout: Layout,
    hosts: Vec<Host>,
    net: Option<Net>,
    runtime: tokio::runtime::Runtime,
    _slot: Flock<File>,
    dir: Option<tempfile::TempDir>,
    /// The next epoch [`NspawnCluster::acquire_fence`] uses.
    next_epoch: std::sync::atomic::AtomicU64,
}

/// One container.
struct Host {
    machine: String,
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    /// Cgroup dirs the nspawn was started in (v1 name=systemd and v2).
    cgroups: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    mounted: bool,
    nspawn: Option<Child>,
    pid1: Option<u32>,
    console: PathBuf,
    /// A spare host: no etcd member, etcd.service disabled.
    spare: bool,
    /// [`NspawnCluster::power_cut`] took it down.
    powered_off: bool,
}

/// The slot's bridge.
struct Net {
    bridge: String,
}

/// How the agent gets onto the hosts when they boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSetup {
    /// README's "Install on a host": `dpkg -i` of the `etcdops-agent` .deb,
    /// the certificates and config from [`STAGED_ETC_IN_HOST`] copied to
    /// `/etc/etcdops`, `systemctl enable --now etcdops-agent`.
    Packaged,
    /// Nothing: no package and no `/etc/etcdops` (its files wait in
    /// [`STAGED_ETC_IN_HOST`]); etcd.service runs as Debian's package left it.
    NotInstalled,
    /// Bare hosts for provisioning tests, booted from [`SSH_ROOTFS`]: no
    /// etcd, no etcd env file, nothing of ours (no agent files, no .debs or
    /// PKI bound in); only `/etc/hosts` written. Ready once `ssh.service` is
    /// active in every host. The layout gives the addresses only (its PKI
    /// and fleet file are not used by the hosts).
    Bare,
}

/// The .debs `bash deploy/dev/package.sh --profile dev` made (see [`debs`]).
#[derive(Debug, Clone)]
pub struct Debs {
    /// Their directory, bound read-only at [`DEBS_IN_HOST`] in every host.
    pub dir: PathBuf,
    /// The `etcdops-agent` package (revision 1).
    pub agent: PathBuf,
}

impl Debs {
    /// The path of `deb` (a file of [`Debs::dir`]) inside a host.
    pub fn in_host(&self, deb: &Path) -> String {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{DEBS_IN_HOST}/{name}")
    }
}

impl NspawnCluster {
    /// Boots `members` hosts with etcd.service and the agent running, and
    /// waits until the cluster is healthy. Returns `None` after printing
    /// `SKIPPED: <reason>` when this machine cannot run nspawn hosts (a
    /// failure instead with `ETCDOPS_REQUIRE_NSPAWN=1`, for CI); panics when
    /// it can but setting up fails.
    pub fn start_or_skip(members: usize, bins: Bins) -> Option<NspawnCluster> {
        NspawnCluster::start_or_skip_with_spares(members, 0, bins)
    }

    /// [`NspawnCluster::start_or_skip`] with `spares` spare hosts besides
    /// the members (see the module doc): booted, their agents answering,
    /// etcd.service disabled and stopped. Their layout is
    /// [`NspawnCluster::spare`]; `exec` and friends reach spare j as host
    /// [`NspawnCluster::spare_host`]`(j)`.
    pub fn start_or_skip_with_spares(members: usize, spares: usize, bins: Bins) -> Option<NspawnCluster> {
        NspawnCluster::start_or_skip_with(members, spares, AgentSetup::Packaged, bins)
    }

    /// [`NspawnCluster::start_or_skip_with_spares`] with the agent set up
    /// as `agent` says. With [`AgentSetup::NotInstalled`] it waits only for
    /// every member's etcd.service to be active (no agent answers yet).
    pub fn start_or_skip_with(
        members: usize,
        spares: usize,
        agent: AgentSetup,
        bins: Bins,
    ) -> Option<NspawnCluster> {
        let rootfs = match preflight().and_then(|()| match agent {
            AgentSetup::Bare => {
                ensure_rootfs(SSH_ROOTFS, "bookworm", SSH_ROOTFS_INCLUDE).and_then(|rootfs| {
                    ensure_etcd_debs()?;
                    Ok(rootfs)
                })
            }
            _ => ensure_rootfs("bookworm", "bookworm", ROOTFS_INCLUDE),
        }) {
            Ok(rootfs) => rootfs,
            Err(reason) if std::env::var_os("ETCDOPS_REQUIRE_NSPAWN").is_some_and(|v| v == "1") => {
                panic!("ETCDOPS_REQUIRE_NSPAWN=1 but nspawn hosts cannot run here: {reason}")
            }
            Err(reason) => {
                println!("SKIPPED: {reason}");
                eprintln!("SKIPPED: {reason}");
                return None;
            }
        };
        // Missing or stale packages fail here, before anything boots.
        let debs = debs(&bins);
        let started = Instant::now();
        let cluster =
            NspawnCluster::start(members, spares, agent, &debs, &rootfs).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!(
            "nspawn: {members} hosts healthy and {spares} spare host(s) up in {:.1?}",
            started.elapsed()
        );
        Some(cluster)
    }

    fn start(
        members: usize,
        spares: usize,
        agent: AgentSetup,
        debs: &Debs,
        rootfs: &Path,
    ) -> anyhow::Result<NspawnCluster> {
        etcdops_certs::install_crypto_provider();
        let (slot, n) = take_slot()?;
        cleanup_slot(n);
        let dir = tempfile::Builder::new()
            .prefix("etcdops-nspawn-")
            .tempdir_in("/var/tmp")
            .context("temp dir")?;
        // From JSON, so optional fields LayoutSpec gains later keep their
        // (serde) defaults here.
        let spec: LayoutSpec = serde_json::from_value(serde_json::json!({
            "dir": dir.path().join("layout"),
            "cluster": "nspawn",
            "members": members,
            "ip_prefix": [198, 18, n],
            "client_port": 2379,
            "peer_port": 2380,
            "agent_port": 7443,
            "etcd_binary": "/usr/bin/etcd",
            "restart": etcdops_agent::config::Restart::Never,
            "token": format!("nspawn-{n}-{}", std::process::id()),
            "spares": spares,
        }))
        .context("the layout spec")?;
        let layout = spec.write().context("writing the cluster layout")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("runtime")?;
        let mut cluster = NspawnCluster {
            layout,
            hosts: Vec::new(),
            net: None,
            runtime,
            _slot: slot,
            dir: Some(dir),
            next_epoch: std::sync::atomic::AtomicU64::new(1),
        };

        let bridge = format!("eobr{n}");
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]))?;
        cluster.net = Some(Net {
            bridge: bridge.clone(),
        });
        run(Command::new("ip").args(["addr", "add", &format!("198.18.{n}.1/24"), "dev", &bridge]))?;
        run(Command::new("ip").args(["link", "set", &bridge, "up"]))?;

        let base = cluster
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let hosts: Vec<(Ipv4Addr, bool)> = (cluster.layout.members.iter().map(|m| (m.ip, false)))
            .chain(cluster.layout.spares.iter().map(|m| (m.ip, true)))
            .collect();
        for (i, (ip, spare)) in hosts.into_iter().enumerate() {
            let name = format!("eo{n}h{}", i + 1);
            let hdir = base.join(&name);
            let host = Host {
                machine: name.clone(),
                netns: name.clone(),
                veth: name.clone(),
                ip,
                cgroups: cgroup_dirs(&format!("etcdops-{name}")),
                upper: hdir.join("upper"),
                work: hdir.join("work"),
                merged: hdir.join("merged"),
                mounted: false,
                nspawn: None,
                pid1: None,
                console: hdir.join("console.log"),
                spare,
                powered_off: false,
            };
            cluster.hosts.push(host);
            cluster.prepare_host(i, rootfs, &bridge, agent == AgentSetup::Bare)?;
            if agent != AgentSetup::Bare {
                cluster.stage_agent_files(i)?;
            }
        }
        // Boot in parallel: etcd.service (Type=notify) is ready only with quorum.
        for i in 0..members + spares {
            let binds = (agent != AgentSetup::Bare).then_some(debs.dir.as_path());
            cluster.boot(i, binds)?;
        }
        for i in 0..members + spares {
            cluster.wait_for_systemd(i)?;
        }
        let all: Vec<usize> = (0..members + spares).collect();
        let ready: fn(&NspawnCluster) -> bool = match agent {
            AgentSetup::Packaged => {
                cluster.install_agent(&all, debs)?;
                |c| c.is_healthy() && (0..c.spares()).all(|j| c.get_status(c.spare_host(j)).is_ok())
            }
            AgentSetup::NotInstalled => |c| {
                (0..c.layout.members.len()).all(|i| {
                    c.exec(i, &["systemctl", "is-active", "etcd"])
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "active")
                })
            },
            AgentSetup::Bare => |c| {
                (0..c.hosts.len()).all(|i| {
                    c.exec(i, &["systemctl", "is-active", "ssh"])
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "active")
                })
            },
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready(&cluster) {
            if Instant::now() > deadline {
                bail!(
                    "timed out after {START_TIMEOUT:?} waiting for a healthy cluster and every spare host's agent ({agent:?})\n{}",
                    cluster.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(cluster)
    }

    /// Host i's layout: member i, or spare `i - members`.
    fn host_layout(&self, i: usize) -> &MemberLayout {
        let members = self.layout.members.len();
        if i < members {
            &self.layout.members[i]
        } else {
            &self.layout.spares[i - members]
        }
    }

    /// Overlay, files, network namespace and veth of host i; a `bare` host
    /// gets only its machine ID and `/etc/hosts`.
    fn prepare_host(&mut self, i: usize, rootfs: &Path, bridge: &str, bare: bool) -> anyhow::Result<()> {
        let m = self.host_layout(i).clone();
        let h = &mut self.hosts[i];
        for d in [&h.upper, &h.work, &h.merged] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.display(),
            h.upper.display(),
            h.work.display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&h.merged))?;
        h.mounted = true;

        // A fresh machine ID, etcd's env file (Debian's layout, data in
        // Debian's default dir; a spare's without the initial cluster) and
        // the agent config with the systemd backend.
        write_file(
            &h.merged.join("etc/machine-id"),
            &format!("{}\n", machine_id(&h.machine)),
        )?;
        if bare {
            write_file(
                &h.merged.join("etc/hosts"),
                &format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
                    h.ip, h.machine
                ),
            )?;
            return self.prepare_net(i, bridge);
        }
        let mut env = EnvFile::load(&m.env_file).context("reading the layout's env file")?;
        env.set("ETCD_DATA_DIR", etcdops_agent::state::DEFAULT_DATA_DIR)
            .context("env file")?;
        let mut config = AgentConfig::load(&m.agent_config).context("reading the layout's agent config")?;
        install_tls(&h.merged, &m, &mut env, &mut config)?;
        write_file(&h.merged.join("etc/default/etcd"), &env.to_text())?;
        if h.spare {
            // The package enabled etcd.service in the image: a spare host
            // has etcd installed but not running (removing the link through
            // the overlay leaves a whiteout in this host's upper dir only).
            for link in [
                "etc/systemd/system/multi-user.target.wants/etcd.service",
                "etc/systemd/system/etcd2.service",
            ] {
                let path = h.merged.join(link);
                if path.symlink_metadata().is_ok() {
                    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        config.etcd.env_file = PathBuf::from("/etc/default/etcd");
        // The agent's own state inside the host, where a package puts it.
        config.state_dir = PathBuf::from(etcdops_agent::config::DEFAULT_STATE_DIR);
        config.etcd.data_dir = None;
        // The hosts share the test machine's disk, whose fsync p99 often
        // passes etcd's 10 ms under load; the coordinator's disk gate (which
        // probes when no periodic result exists yet) judges against this.
        config.disk.fsync_p99_threshold_ms = crate::LENIENT_FSYNC_THRESHOLD_MS;
        config.unit = UnitConfig {
            backend: Backend::Systemd,
            ..UnitConfig::default()
        };
        write_file(
            &h.merged.join(AGENT_CONFIG_IN_HOST.trim_start_matches('/')),
            &config.to_toml(),
        )?;
        self.prepare_net(i, bridge)
    }

    /// Host i's network namespace and its veth on `bridge`.
    fn prepare_net(&self, i: usize, bridge: &str) -> anyhow::Result<()> {
        let h = &self.hosts[i];
        run(Command::new("ip").args(["netns", "add", &h.netns]))?;
        let peer = format!("{}c", h.veth);
        run(Command::new("ip").args(["link", "add", &h.veth, "type", "veth", "peer", "name", &peer]))?;
        run(Command::new("ip").args(["link", "set", &peer, "netns", &h.netns]))?;
        run(Command::new("ip").args(["-n", &h.netns, "link", "set", &peer, "name", "eth0"]))?;
        run(Command::new("ip").args([
            "-n",
            &h.netns,
            "addr",
            "add",
            &format!("{}/24", h.ip),
            "dev",
            "eth0",
        ]))?;
        run(Command::new("ip").args(["-n", &h.netns, "link", "set", "eth0", "up"]))?;
        run(Command::new("ip").args(["-n", &h.netns, "link", "set", "lo", "up"]))?;
        run(Command::new("ip").args(["link", "set", &h.veth, "master", bridge]))?;
        run(Command::new("ip").args(["link", "set", &h.veth, "up"]))?;
        Ok(())
    }

    /// Starts systemd-nspawn for host i from its own cgroups; with `debs`,
    /// that directory and the layout's PKI bound in read-only.
    fn boot(&mut self, i: usize, debs: Option<&Path>) -> anyhow::Result<()> {
        let pki = self.layout.pki_dir.clone();
        let h = &mut self.hosts[i];
        for cg in &h.cgroups {
            std::fs::create_dir_all(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
        }
        let console = File::create(&h.console).context("console log")?;
        // The launcher joins the cgroups, then becomes systemd-nspawn: a fixed
        // script, every path passed as an argument.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for cg; do [ \"$cg\" = -- ] && break; echo $$ > \"$cg\"; shift; done; shift; exec \"$@\"",
            "sh",
        ]);
        for cg in &h.cgroups {
            cmd.arg(cg.join("cgroup.procs"));
        }
        cmd.arg("--")
            .arg("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--boot",
                "--link-journal=no",
                "--console=pipe",
            ])
            .arg(format!("--machine={}", h.machine))
            .arg("-D")
            .arg(&h.merged)
            .arg(format!("--network-namespace-path=/run/netns/{}", h.netns));
        if let Some(debs) = debs {
            cmd.arg(format!("--bind-ro={}:{DEBS_IN_HOST}", debs.display()))
                .arg(format!("--bind-ro={}", pki.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().context("console log")?)
            .stderr(console);
        h.nspawn = Some(cmd.spawn().context("spawning systemd-nspawn")?);
        Ok(())
    }

    /// Waits until host i's systemd answers on D-Bus.
    fn wait_for_systemd(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = &mut self.hosts[i];
            if let Some(child) = h.nspawn.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "systemd-nspawn for {} exited ({status}):\n{}",
                    h.machine,
                    std::fs::read_to_string(&h.console).unwrap_or_default()
                );
            }
            if h.pid1.is_none() {
                h.pid1 = h.nspawn.as_ref().and_then(|c| container_init(c.id()));
            }
            if h.pid1.is_some() {
                let out = self.exec(i, &["systemctl", "is-system-running"])?;
                let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if ["starting", "running", "degraded"].contains(&state.as_str()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let h = &self.hosts[i];
                bail!(
                    "{} did not boot within 30 s:\n{}",
                    h.machine,
                    std::fs::read_to_string(&h.console).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Moves host i's `/etc/etcdops` (what `prepare_host` wrote: the
    /// agent's config and certificates) to [`STAGED_ETC_IN_HOST`], so the
    /// host boots as a fresh one: the package not installed, no config.
    fn stage_agent_files(&self, i: usize) -> anyhow::Result<()> {
        let merged = &self.hosts[i].merged;
        let etc = merged.join(AGENT_CONFIG_IN_HOST.trim_start_matches('/'));
        let etc = etc.parent().context("the config's directory")?;
        let staged = merged.join(STAGED_ETC_IN_HOST.trim_start_matches('/'));
        if let Some(parent) = staged.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(etc, &staged)
            .with_context(|| format!("moving {} to {}", etc.display(), staged.display()))?;
        // The packaged unit has a private /tmp and /var/tmp: TLS files the
        // config names elsewhere than /etc/etcdops (the layout's PKI on this
        // machine) are copied into the staged pki/ and the config pointed there.
        let config_path = staged.join("agent.toml");
        let mut config = AgentConfig::load(&config_path).context("reading the staged agent config")?;
        let pki = staged.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
        let mut tls = vec![&mut config.tls];
        tls.extend(config.etcd.tls.as_mut());
        for files in tls {
            for path in [&mut files.ca, &mut files.cert, &mut files.key] {
                if path.starts_with("/etc/etcdops") {
                    continue;
                }
                let name = path.file_name().context("a TLS file name")?.to_owned();
                std::fs::copy(&*path, pki.join(&name))
                    .with_context(|| format!("copying {} into the host", path.display()))?;
                *path = Path::new("/etc/etcdops/pki").join(name);
            }
        }
        write_file(&config_path, &config.to_toml())
    }

    /// README's "Install on a host" on hosts `hosts`, in parallel: `dpkg -i`
    /// of the agent's .deb, the staged certificates and config copied to
    /// `/etc/etcdops` (keys stay 0600), `systemctl enable --now
    /// etcdops-agent` (it returns once the agent told systemd it is ready).
    pub fn install_agent(&self, hosts: &[usize], debs: &Debs) -> anyhow::Result<()> {
        let script = format!(
            "dpkg -i {deb} >/dev/null\n\
             mkdir -p /etc/etcdops\n\
             cp -a {STAGED_ETC_IN_HOST}/pki /etc/etcdops/\n\
             cp {STAGED_ETC_IN_HOST}/agent.toml {AGENT_CONFIG_IN_HOST}\n\
             systemctl enable --now --quiet {AGENT_UNIT}\n",
            deb = debs.in_host(&debs.agent),
        );
        let children = hosts
            .iter()
            .map(|&i| self.spawn_script(i, &script).map(|c| (i, c)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, child) in children {
            let out = child
                .wait_with_output()
                .with_context(|| format!("installing the agent in {}", self.hosts[i].machine))?;
            if !out.status.success() {
                bail!(
                    "installing the agent's package in {} failed ({}):\n{}{}\n{}",
                    self.hosts[i].machine,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.logs()
                );
            }
        }
        Ok(())
    }

    /// Starts `sh -ec SCRIPT` inside host i with a clean root environment
    /// (cwd `/root`), output piped.
    fn spawn_script(&self, i: usize, script: &str) -> anyhow::Result<Child> {
        let h = &self.hosts[i];
        let pid = h.pid1.with_context(|| format!("{} is not running", h.machine))?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-a"])
            .args([
                "env",
                "-i",
                "-C",
                "/root",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .args(["HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"])
            .args(["sh", "-ec", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running nsenter in {}", h.machine))
    }

    /// Runs `script` with `sh -e` inside host i as root (clean environment,
    /// cwd `/root`), output collected.
    pub fn exec_script(&self, i: usize, script: &str) -> anyhow::Result<Output> {
        self.spawn_script(i, script)?
            .wait_with_output()
            .with_context(|| format!("running a script in {}", self.hosts[i].machine))
    }

    /// [`NspawnCluster::exec_script`]'s stdout; panics naming the script,
    /// its output and the host when it fails.
    pub fn script_ok(&self, i: usize, script: &str) -> String {
        let out = self.exec_script(i, script).unwrap_or_else(|e| panic!("{e:#}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "in {} ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
            self.hosts[i].machine,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `args` inside host i (`nsenter -t PID1 -a`), output collected.
    pub fn exec(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        let h = &self.hosts[i];
        let pid = h.pid1.with_context(|| format!("{} is not running", h.machine))?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-a"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running nsenter in {}", h.machine))
    }

    /// The host PID of host i's init (systemd); `/proc/PID/root` is its root.
    pub fn pid1(&self, i: usize) -> u32 {
        self.hosts[i]
            .pid1
            .unwrap_or_else(|| panic!("{} is not running", self.hosts[i].machine))
    }

    /// Owner, group and mode of `path` in host i (`etcd:etcd 600`).
    pub fn owner_mode(&self, i: usize, path: &str) -> String {
        self.exec_stdout(i, &["stat", "-c", "%U:%G %a", path])
    }

    /// `exec`'s stdout, trimmed (panics if nsenter cannot run).
    pub fn exec_stdout(&self, i: usize, args: &[&str]) -> String {
        let out = self.exec(i, args).unwrap_or_else(|e| panic!("{e:#}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes a file inside host i (through its overlay).
    pub fn write_in_host(&self, i: usize, path: &str, text: &str) {
        let target = self.hosts[i].merged.join(path.trim_start_matches('/'));
        write_file(&target, text).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Copies `from` (a file on this machine) to `to` inside host i
    /// (through its overlay), mode kept, owned by root.
    pub fn copy_into_host(&self, i: usize, from: &Path, to: &str) {
        let target = self.hosts[i].merged.join(to.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::copy(from, &target)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), target.display()));
    }

    /// Reads a file inside host i (through its overlay).
    pub fn read_in_host(&self, i: usize, path: &str) -> String {
        let target = self.hosts[i].merged.join(path.trim_start_matches('/'));
        std::fs::read_to_string(&target).unwrap_or_else(|e| panic!("reading {}: {e}", target.display()))
    }

    /// Runs a future on the cluster's runtime (the one its clients use).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.runtime.block_on(fut)
    }

    /// A gRPC client to host i's agent (member i, or a spare: see
    /// [`NspawnCluster::spare_host`]), as the fleet's coordinator.
    pub fn client(&self, i: usize) -> AgentClient<Channel> {
        let m = self.host_layout(i);
        let pki = Pki::open(&self.layout.pki_dir).expect("pki");
        let ca = Certificate::from_pem(std::fs::read(pki.ca_cert_path()).expect("ca"));
        let (cert, key) = pki.paths(Role::Coordinator, "sandbox-operator");
        let identity = Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        );
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name(m.ip.to_string())
            .identity(identity);
        let endpoint = Endpoint::from_shared(m.agent_url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        let _runtime = self.runtime.enter();
        AgentClient::new(endpoint.connect_lazy())
    }

    /// Acquires the cluster's fence (cluster "nspawn") for operation `op` on
    /// every agent at a fresh epoch, and returns it (panics if one refuses).
    pub fn acquire_fence(&self, op: &str) -> Fence {
        let epoch = self.next_epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fence = Fence {
            cluster: "nspawn".to_string(),
            epoch,
            operation_id: op.to_string(),
            step: String::new(),
        };
        for i in 0..self.layout.members.len() {
            let mut client = self.client(i);
            let request = AcquireFenceRequest {
                fence: Some(fence.clone()),
                holder: "e2e-harness".to_string(),
                operation_kind: "e2e".to_string(),
                takeover: false,
            };
            self.block_on(client.acquire_fence(request))
                .unwrap_or_else(|e| panic!("acquiring the fence for {op} on host {i}: {e:?}"));
        }
        fence
    }

    /// GetStatus on host i's agent (member or spare).
    pub fn get_status(&self, i: usize) -> Result<GetStatusResponse, tonic::Status> {
        let mut client = self.client(i);
        self.block_on(client.get_status(GetStatusRequest { timeout_ms: 1000 }))
            .map(tonic::Response::into_inner)
    }

    /// Health on host i's agent (member or spare).
    pub fn health(&self, i: usize) -> Result<HealthResponse, tonic::Status> {
        let mut client = self.client(i);
        self.block_on(client.health(HealthRequest { timeout_ms: 1000 }))
            .map(tonic::Response::into_inner)
    }

    /// Every agent of the members the cluster started with answers, every
    /// such member is healthy, one leader, one cluster ID. Spare hosts and
    /// power-cut hosts are not looked at: after membership changes, ask
    /// `etcdops health` with the fleet file the coordinator keeps.
    pub fn is_healthy(&self) -> bool {
        let mut leaders = 0;
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..self.layout.members.len() {
            if self.hosts[i].powered_off {
                continue;
            }
            let Ok(status) = self.get_status(i) else {
                return false;
            };
            let Some(member) = status.member else { return false };
            if !member.reachable || !self.health(i).is_ok_and(|h| h.healthy) {
                return false;
            }
            leaders += usize::from(member.is_leader);
            ids.insert(member.cluster_id);
        }
        leaders == 1 && ids.len() == 1
    }

    /// Polls `cond` every 200 ms until it holds, or panics after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&NspawnCluster) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
    }

    /// The last journal lines of the agent and etcd in every host.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if h.powered_off {
                out.push_str(&format!("--- {}: powered off\n", h.machine));
                continue;
            }
            for unit in [AGENT_UNIT, "etcd.service"] {
                out.push_str(&format!("--- {} {unit} (last lines)\n", h.machine));
                match self.exec(
                    i,
                    &["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"],
                ) {
                    Ok(o) => out.push_str(&String::from_utf8_lossy(&o.stdout)),
                    Err(e) => out.push_str(&format!("{e:#}\n")),
                }
            }
        }
        out
    }
}

/// The coordinator CLI against these hosts. The layout already wrote the
/// fleet file (cluster "nspawn", the name [`NspawnCluster::acquire_fence`]
/// uses; members' agent URLs 198.18.N.11+i:7443; the coordinator
/// certificate `sandbox-operator` of the layout's PKI).
impl NspawnCluster {
    /// The fleet file for `etcdops --fleet`.
    pub fn fleet_path(&self) -> &Path {
        &self.layout.fleet_path
    }

    /// The coordinator's journal for this cluster (beside the layout, so
    /// it goes with the cluster's temp dir).
    pub fn journal_path(&self) -> PathBuf {
        self.layout.dir.join("journal.redb")
    }

    /// Runs `CLI --fleet <fleet> ARGS` (`bins.cli` of [`crate::bins!`]) with
    /// `ETCDOPS_JOURNAL` set to [`NspawnCluster::journal_path`] and
    /// `ETCDOPS_FLEET` removed, and collects its output.
    pub fn etcdops(&self, cli: &Path, args: &[&str]) -> crate::CliOutput {
        let out = Command::new(cli)
            .arg("--fleet")
            .arg(self.fleet_path())
            .args(args)
            .env_remove("ETCDOPS_FLEET")
            .env("ETCDOPS_JOURNAL", self.journal_path())
            .stdin(Stdio::null())
            .output()
            .expect("running etcdops");
        crate::CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The members' etcd client URLs (`http://198.18.N.11+i:2379`).
    pub fn client_urls(&self) -> Vec<String> {
        self.layout.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

/// Spare hosts and power cuts.
impl NspawnCluster {
    /// Spare host j's layout: `name` (`etcd<members + j + 1>`, its etcd name
    /// and the name to give `etcdops member add`), `ip`, `agent_url`,
    /// `client_url`, `peer_url`. (Its `env_file`, `data_dir` and
    /// `agent_config` are the layout's copies outside the host; inside it
    /// they are `/etc/default/etcd`, Debian's data dir and
    /// `/etc/etcdops/agent.toml`.)
    pub fn spare(&self, j: usize) -> &MemberLayout {
        &self.layout.spares[j]
    }

    /// The number of spare hosts.
    pub fn spares(&self) -> usize {
        self.layout.spares.len()
    }

    /// Spare j's name (`etcd<members + j + 1>`).
    pub fn spare_name(&self, j: usize) -> &str {
        &self.spare(j).name
    }

    /// Spare j's agent URL (`https://198.18.N.<11 + members + j>:7443`).
    pub fn spare_agent_url(&self, j: usize) -> &str {
        &self.spare(j).agent_url
    }

    /// Spare j's etcd client URL (`http://198.18.N.<11 + members + j>:2379`).
    pub fn spare_client_url(&self, j: usize) -> &str {
        &self.spare(j).client_url
    }

    /// The host index of spare j, for [`NspawnCluster::exec`],
    /// [`NspawnCluster::get_status`], [`NspawnCluster::power_cut`], ...
    pub fn spare_host(&self, j: usize) -> usize {
        self.layout.members.len() + j
    }

    /// Whether host i was power-cut.
    pub fn is_powered_off(&self, i: usize) -> bool {
        self.hosts[i].powered_off
    }

    /// A power cut on host i: its veth taken down first (so the peers and
    /// clients see silence, not the resets and FINs of dying sockets), then
    /// every process of the container (systemd, the agent, etcd, and the
    /// systemd-nspawn process) SIGKILLed at once through its cgroup
    /// (`cgroup.kill`), waited for and reaped. Its disk (the overlay's upper
    /// dir) stays; it is not rebooted. What the kernel had not written back
    /// is not lost (the page cache is the host's), unlike a real power cut.
    /// Afterwards `exec` on it fails, and `is_healthy` and `logs` skip it.
    pub fn power_cut(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        assert!(!h.powered_off, "{} is already powered off", h.machine);
        run(Command::new("ip").args(["link", "set", &h.veth, "down"]))
            .unwrap_or_else(|e| panic!("taking {} off the network: {e:#}", h.machine));
        kill_cgroups(&h.cgroups);
        assert!(
            !h.cgroups.last().is_some_and(|cg| cgroup_populated(cg)),
            "{}: processes left after cgroup.kill",
            h.machine
        );
        if let Some(mut child) = h.nspawn.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        h.pid1 = None;
        h.powered_off = true;
    }
}

/// Another etcd release in the hosts (issue 18's upgrade).
impl NspawnCluster {
    /// Copies etcd 3.5.1's `etcd` from [`crate::ETCD_35_DIR`] on this
    /// machine (`deploy/dev/setup.sh` installs it) to the same path in every
    /// member host, mode kept, owned by root: what `etcdops upgrade --to
    /// 3.5.1` runs there. Debian's 3.4.23 stays the unit's own binary.
    pub fn provide_etcd_3_5(&self) {
        let from = Path::new(crate::ETCD_35_DIR).join("etcd");
        assert!(
            from.is_file(),
            "{} is missing: run deploy/dev/setup.sh (it installs etcd 3.5.1)",
            from.display()
        );
        for i in 0..self.layout.members.len() {
            self.copy_into_host(i, &from, &format!("{}/etcd", crate::ETCD_35_DIR));
        }
    }
}

impl Drop for NspawnCluster {
    fn drop(&mut self) {
        // Power off every host at once, then wait.
        for h in &mut self.hosts {
            if let Some(child) = &h.nspawn {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let mut clean = true;
        for h in &mut self.hosts {
            clean &= h.teardown();
        }
        if let Some(net) = self.net.take() {
            let _ = quiet(Command::new("ip").args(["link", "del", &net.bridge]));
        }
        if !clean && let Some(dir) = self.dir.take() {
            // An overlay is still mounted: never delete through it.
            let kept = dir.keep();
            eprintln!("nspawn teardown incomplete; left {} in place", kept.display());
        }
    }
}

impl Host {
    /// Stops the container and removes everything of this host but its
    /// files; false if the overlay could not be unmounted.
    fn teardown(&mut self) -> bool {
        if let Some(mut child) = self.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                kill_cgroups(&self.cgroups);
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        kill_cgroups(&self.cgroups);
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
        let mut clean = true;
        if self.mounted {
            clean = quiet(Command::new("umount").arg(&self.merged))
                || quiet(Command::new("umount").arg("-l").arg(&self.merged));
            self.mounted = !clean;
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.machine));
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.netns]));
        let _ = quiet(Command::new("ip").args(["link", "del", &self.veth]));
        clean
    }
}

/// The repository root (the tests crate's parent).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `package.sh --profile dev` writes, under the target dir that built
/// `bins` (`<target>/debug/e2e-etcdops-agent`, so `CARGO_TARGET_DIR` is
/// followed).
pub fn debs_dir(bins: &Bins) -> PathBuf {
    let target = bins
        .agent
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join(DEBS_DIR_IN_TARGET)
}

/// The .debs the hosts install. Panics, naming [`PACKAGE_COMMAND`], when
/// the `etcdops-agent` package is missing or older than a source it is
/// built from (the agent's, its libraries', the unit's, the packaging's):
/// the hosts must run the code under test, never a stale build.
pub fn debs(bins: &Bins) -> Debs {
    let dir = debs_dir(bins);
    let Some(agent) = find_deb(&dir, "etcdops-agent", 1) else {
        panic!(
            "no etcdops-agent .deb (revision 1) in {}: the nspawn hosts install the agent from its package; \
             build it with `{PACKAGE_COMMAND}` (after `cargo build`)",
            dir.display()
        );
    };
    let built = std::fs::metadata(&agent)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    let root = repo_root();
    for source in [
        "agent",
        "certs",
        "proto",
        "deploy/systemd",
        "deploy/config",
        "deploy/debian",
    ] {
        if let Some(newer) = newest_file(&root.join(source)).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: rebuild the packages with `{PACKAGE_COMMAND}` (after `cargo build`)",
                agent.display(),
                newer.1.display()
            );
        }
    }
    Debs { dir, agent }
}

/// `<package>_<version>-<revision>_<arch>.deb` in `dir`, if there is one.
pub fn find_deb(dir: &Path, package: &str, revision: u32) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(rest) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".deb")) else {
                return false;
            };
            // <version>-<revision>_<arch>
            let Some((version, _arch)) = rest.rsplit_once('_') else {
                return false;
            };
            version
                .rsplit_once('-')
                .is_some_and(|(_, r)| r.parse::<u32>().is_ok_and(|r| r == revision))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The newest regular file under `dir` (its mtime and path), `target/` and
/// hidden entries skipped.
fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if meta.is_file() {
        return meta.modified().ok().map(|t| (t, dir.to_path_buf()));
    }
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if let Some(found) = newest_file(&entry.path())
            && newest.as_ref().is_none_or(|(t, _)| found.0 > *t)
        {
            newest = Some(found);
        }
    }
    newest
}

/// Root, the tools, and a cgroup layout we can place containers in.
fn preflight() -> Result<(), String> {
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !root {
        return Err("nspawn hosts need root".to_string());
    }
    for (tool, arg) in [
        ("systemd-nspawn", "--version"),
        ("nsenter", "--version"),
        ("ip", "-V"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "{tool} is not available (install systemd-container iproute2 util-linux: deploy/dev/setup.sh)"
            ));
        }
    }
    if cgroup_dirs("probe").is_empty() {
        return Err("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup".to_string());
    }
    Ok(())
}

/// The cgroup dirs a container named `name` is started in: the v1
/// `name=systemd` and the v2 hierarchy on hybrid hosts, the v2 root otherwise.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("unified/cgroup.procs").exists() {
        let mut dirs = vec![root.join("unified").join(name)];
        if root.join("systemd/cgroup.procs").exists() {
            dirs.insert(0, root.join("systemd").join(name));
        }
        dirs
    } else if root.join("cgroup.controllers").exists() {
        vec![root.join(name)]
    } else {
        Vec::new()
    }
}

/// Builds `CACHE_DIR/rootfs-<name>` once (debootstrap of `suite` with
/// `include`), under a lock; the marker is written last, then the directory
/// is renamed into place.
fn ensure_rootfs(name: &str, suite: &str, include: &str) -> Result<PathBuf, String> {
    let cache = Path::new(CACHE_DIR);
    std::fs::create_dir_all(cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let rootfs = cache.join(format!("rootfs-{name}"));
    let lock_path = cache.join(format!("rootfs-{name}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    if rootfs.join(ROOTFS_MARKER).exists() {
        return Ok(rootfs);
    }
    let ok = Command::new("debootstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(
            "debootstrap is not installed and no root filesystem is cached (deploy/dev/setup.sh)".to_string(),
        );
    }
    let partial = cache.join(format!("rootfs-{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    if rootfs.exists() {
        // Incomplete from an older run (no marker): build it again.
        std::fs::remove_dir_all(&rootfs).map_err(|e| format!("cannot remove {}: {e}", rootfs.display()))?;
    }
    let log_path = cache.join(format!("rootfs-{name}.log"));
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    eprintln!(
        "nspawn: building {} with debootstrap (about a minute, once)",
        rootfs.display()
    );
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={include}"), suite])
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !status.success() {
        return Err(format!(
            "debootstrap {suite} failed ({status}); see {}",
            log_path.display()
        ));
    }
    // Each host gets its own machine ID.
    std::fs::write(partial.join("etc/machine-id"), "").map_err(|e| format!("emptying machine-id: {e}"))?;
    std::fs::write(
        partial.join(ROOTFS_MARKER),
        format!("debootstrap --variant=minbase --include={include} {suite}\n"),
    )
    .map_err(|e| format!("writing the marker: {e}"))?;
    std::fs::rename(&partial, &rootfs).map_err(|e| format!("renaming {}: {e}", partial.display()))?;
    Ok(rootfs)
}

/// Where [`etcd_debs`] keeps etcd's packages for [`AgentSetup::Bare`] hosts.
fn etcd_debs_dir() -> PathBuf {
    Path::new(CACHE_DIR).join(format!("rootfs-{SSH_ROOTFS}.etcd-debs"))
}

/// Downloads etcd's packages ([`ETCD_PACKAGES`], this machine's Debian
/// 12 candidates, `apt-get download`) once into [`etcd_debs_dir`], under
/// the lock of [`SSH_ROOTFS`]; the directory is renamed into place when
/// complete.
fn ensure_etcd_debs() -> Result<(), String> {
    let cache = Path::new(CACHE_DIR);
    let lock_path = cache.join(format!("rootfs-{SSH_ROOTFS}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    let dir = etcd_debs_dir();
    if dir.is_dir() {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let out = Command::new("apt-get")
        .args(["download", "-q"])
        .args(ETCD_PACKAGES)
        .current_dir(&partial)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get download: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download {} failed ({}): {} (run `apt-get update` on this machine?)",
            ETCD_PACKAGES.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&partial, &dir).map_err(|e| format!("renaming {}: {e}", partial.display()))
}

/// etcd's .debs for bare hosts, in install order (`etcd-server`,
/// `etcd-client`), as [`AgentSetup::Bare`] downloaded them; panics when
/// one is missing.
pub fn etcd_debs() -> Vec<PathBuf> {
    let dir = etcd_debs_dir();
    ETCD_PACKAGES
        .iter()
        .map(|package| {
            let prefix = format!("{package}_");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            found.retain(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            });
            found.sort();
            found
                .pop()
                .unwrap_or_else(|| panic!("no {package} .deb in {}", dir.display()))
        })
        .collect()
}

/// A free slot 1..=250 (its lock file held while the cluster lives).
fn take_slot() -> anyhow::Result<(Flock<File>, u8)> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    for n in 1..=250u8 {
        let path = Path::new(RUN_DIR).join(format!("slot-{n}.lock"));
        let file = File::create(&path).with_context(|| format!("opening {}", path.display()))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok((lock, n));
        }
    }
    bail!("all 250 nspawn slots under {RUN_DIR} are taken")
}

/// Removes what a crashed earlier holder of slot `n` may have left.
fn cleanup_slot(n: u8) {
    for i in 1..=9 {
        let name = format!("eo{n}h{i}");
        let cgroups = cgroup_dirs(&format!("etcdops-{name}"));
        if cgroups.iter().any(|c| c.exists()) {
            kill_cgroups(&cgroups);
            for cg in &cgroups {
                remove_cgroup(cg);
            }
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&name));
        if Path::new("/run/netns").join(&name).exists() {
            let _ = quiet(Command::new("ip").args(["netns", "del", &name]));
        }
        if Path::new("/sys/class/net").join(&name).exists() {
            let _ = quiet(Command::new("ip").args(["link", "del", &name]));
        }
    }
    let bridge = format!("eobr{n}");
    if Path::new("/sys/class/net").join(&bridge).exists() {
        let _ = quiet(Command::new("ip").args(["link", "del", &bridge]));
    }
}

/// SIGKILLs every process in the v2 cgroup (`cgroup.kill`) and waits until
/// it is empty.
fn kill_cgroups(cgroups: &[PathBuf]) {
    let Some(v2) = cgroups.last() else { return };
    if !v2.exists() {
        return;
    }
    let _ = std::fs::write(v2.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && cgroup_populated(v2) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cgroup_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Removes a cgroup and its children, deepest first (rmdir only).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The container's init: the descendant of `nspawn` that is PID 1 in its
/// own PID namespace.
fn container_init(nspawn: u32) -> Option<u32> {
    let mut queue = vec![nspawn];
    while let Some(pid) = queue.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .unwrap_or_default();
        let ids: Vec<&str> = nspid.split_whitespace().collect();
        if ids.len() >= 2 && ids.last() == Some(&"1") {
            return Some(pid);
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            queue.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    None
}

/// 32 hex digits, distinct per host and run.
fn machine_id(machine: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for round in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(machine.as_bytes());
        h.write_u8(round);
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Where a host's etcd reads its certificates (owned by the host's `etcd`).
const ETCD_PKI_IN_HOST: &str = "/etc/etcd/pki";
/// Where a host's agent reads its own and its etcd client certificates
/// (root's; under the packaged unit PrivateTmp hides /var/tmp).
const AGENT_PKI_IN_HOST: &str = "/etc/etcdops/pki";

/// Copies host `m`'s TLS files from the layout's PKI into the host, as a
/// package install would have them: etcd's server and peer certificates and
/// the CA in [`ETCD_PKI_IN_HOST`] (keys 0600, owned by the host's `etcd`
/// user, which cannot read the layout's root-owned keys), the agent's own
/// and its etcd client certificates in [`AGENT_PKI_IN_HOST`] (root, keys
/// 0600); points `env` (the host's /etc/default/etcd) and `config` (its
/// agent.toml) at those copies. Nothing to do for a plain-HTTP layout.
fn install_tls(
    merged: &Path,
    m: &MemberLayout,
    env: &mut EnvFile,
    config: &mut AgentConfig,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let copy =
        |from: &Path, to_dir: &str, name: &str, key_owner: Option<(u32, u32)>| -> anyhow::Result<PathBuf> {
            let in_host = Path::new(to_dir).join(name);
            let path = merged.join(in_host.strip_prefix("/").unwrap_or(&in_host));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(from, &path)
                .with_context(|| format!("copying {} to {}", from.display(), path.display()))?;
            let mode = if key_owner.is_some() { 0o600 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", path.display()))?;
            if let Some((uid, gid)) = key_owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", path.display()))?;
            }
            Ok(in_host)
        };
    let Some(tls) = &m.etcd_tls else {
        return Ok(());
    };
    let etcd = etcd_user(merged)?;
    let root = Some((0, 0));
    let etcd_files = [
        ("ETCD_TRUSTED_CA_FILE", &tls.ca, "ca.crt", None),
        ("ETCD_CERT_FILE", &tls.server_cert, "server.crt", None),
        ("ETCD_KEY_FILE", &tls.server_key, "server.key", Some(etcd)),
        ("ETCD_PEER_TRUSTED_CA_FILE", &tls.ca, "ca.crt", None),
        ("ETCD_PEER_CERT_FILE", &tls.peer_cert, "peer.crt", None),
        ("ETCD_PEER_KEY_FILE", &tls.peer_key, "peer.key", Some(etcd)),
    ];
    for (var, from, name, owner) in etcd_files {
        let in_host = copy(from, ETCD_PKI_IN_HOST, name, owner)?;
        env.set(var, &in_host.display().to_string())
            .with_context(|| format!("env file {var}"))?;
    }
    // The names of README's "Install on a host" (and deploy/config/agent.toml):
    // one fleet CA for both, the etcd client identity as etcd-client-etcdops.
    let agent = config.tls.clone();
    config.tls = etcdops_agent::config::TlsConfig {
        ca: copy(&agent.ca, AGENT_PKI_IN_HOST, "ca.crt", None)?,
        cert: copy(
            &agent.cert,
            AGENT_PKI_IN_HOST,
            &format!("agent-{}.crt", m.name),
            None,
        )?,
        key: copy(
            &agent.key,
            AGENT_PKI_IN_HOST,
            &format!("agent-{}.key", m.name),
            root,
        )?,
    };
    let same_ca = std::fs::read(&agent.ca).ok() == std::fs::read(&tls.ca).ok();
    let etcd_ca = if same_ca { "ca.crt" } else { "etcd-ca.crt" };
    config.etcd.tls = Some(etcdops_agent::config::TlsConfig {
        ca: copy(&tls.ca, AGENT_PKI_IN_HOST, etcd_ca, None)?,
        cert: copy(
            &tls.client_cert,
            AGENT_PKI_IN_HOST,
            "etcd-client-etcdops.crt",
            None,
        )?,
        key: copy(
            &tls.client_key,
            AGENT_PKI_IN_HOST,
            "etcd-client-etcdops.key",
            root,
        )?,
    });
    Ok(())
}

/// The uid and gid of the `etcd` user in the host's /etc/passwd (Debian's
/// etcd-server package creates it).
fn etcd_user(merged: &Path) -> anyhow::Result<(u32, u32)> {
    let passwd = merged.join("etc/passwd");
    let text = std::fs::read_to_string(&passwd).with_context(|| format!("reading {}", passwd.display()))?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"etcd"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .with_context(|| {
            format!(
                "no etcd user in {}: is etcd-server installed in the root filesystem?",
                passwd.display()
            )
        })
}

/// Runs a command; an error names the argument vector and its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let argv = format!("{:?} {:?}", cmd.get_program(), cmd.get_args().collect::<Vec<_>>());
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {argv}"))?;
    if !out.status.success() {
        bail!(
            "{argv} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Teardown steps: true on success, output discarded.
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_deb_picks_the_package_and_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "etcdops-agent_0.1.0-1_amd64.deb",
            "etcdops-agent_0.1.0-2_amd64.deb",
            "etcdops_0.1.0-1_amd64.deb",
            "etcdops-agent_0.1.0-1_amd64.deb.partial",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let name = |p: Option<PathBuf>| p.and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()));
        assert_eq!(
            name(find_deb(dir.path(), "etcdops-agent", 1)).as_deref(),
            Some("etcdops-agent_0.1.0-1_amd64.deb")
        );
        assert_eq!(
            name(find_deb(dir.path(), "etcdops-agent", 2)).as_deref(),
            Some("etcdops-agent_0.1.0-2_amd64.deb")
        );
        assert_eq!(
            name(find_deb(dir.path(), "etcdops", 1)).as_deref(),
            Some("etcdops_0.1.0-1_amd64.deb")
        );
        assert_eq!(find_deb(dir.path(), "etcdops", 3), None);
        assert_eq!(find_deb(&dir.path().join("missing"), "etcdops", 1), None);
    }

    #[test]
    fn newest_file_skips_target_and_hidden_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("target")).expect("mkdir");
        std::fs::write(dir.path().join("src/a.rs"), "").expect("write");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("target/newer"), "").expect("write");
        std::fs::write(dir.path().join(".hidden"), "").expect("write");
        let (_, path) = newest_file(dir.path()).expect("a file");
        assert_eq!(path, dir.path().join("src/a.rs"));
    }
}
