//! The end-to-end harness: real etcd members supervised by real agents on
//! free 127.x.y.z addresses, a PKI generated at test time, and the real
//! `etcdops` CLI pointed at them. etcd speaks client and peer TLS with
//! client-certificate auth (the layout's default; [`ClusterBuilder::plain_http`]
//! for a test that compares): reach it with [`Cluster::etcd_options`] /
//! [`etcd_connect_options`] (etcd-client) and [`etcdctl_tls_args`] (etcdctl).
//!
//! ```no_run
//! let cluster = etcdops_tests::Cluster::builder().members(3).start(etcdops_tests::bins!());
//! let out = cluster.etcdops(&["status", "-w", "json"]);
//! assert_eq!(out.code, 0);
//! ```
//!
//! The etcd release is a builder option ([`ClusterBuilder::etcd`]): Debian's
//! 3.4.23 by default, or the etcd 3.5.1 `deploy/dev/setup.sh` installs in
//! [`ETCD_35_DIR`] (etcd, etcdctl, etcdutl); the suites run their full set on
//! 3.4 and a representative subset on 3.5 (`*_on_etcd_3_5` tests).
//!
//! Everything is torn down when the [`Cluster`] is dropped, also when a test
//! panics: each agent runs in its own process group with its etcd, and the
//! group is stopped with SIGTERM, then SIGKILL.

#![forbid(unsafe_code)]

pub mod ansible;
pub mod bench;
pub mod home;
pub mod loadgen;
pub mod nspawn;
pub mod otlp;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_coordinator::sandbox::agent_toml::Restart;
use etcdops_coordinator::sandbox::layout::{Layout, LayoutSpec, MemberLayout};
use etcdops_coordinator::sandbox::procs;
use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::{
    AcquireFenceRequest, Fence, FenceState, GetStatusRequest, GetStatusResponse, HealthRequest,
    HealthResponse, ReleaseFenceRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Paths of the binaries under test (see [`bins!`]).
#[derive(Debug, Clone)]
pub struct Bins {
    pub agent: PathBuf,
    pub cli: PathBuf,
}

/// The binaries cargo built for this test run.
#[macro_export]
macro_rules! bins {
    () => {
        $crate::Bins {
            agent: env!("CARGO_BIN_EXE_e2e-etcdops-agent").into(),
            cli: env!("CARGO_BIN_EXE_e2e-etcdops").into(),
        }
    };
}

/// Where `deploy/dev/setup.sh` installs etcd 3.5.1 (etcd, etcdctl, etcdutl).
pub const ETCD_35_DIR: &str = "/opt/etcd-3.5.1";

/// The etcd release a test cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdRelease {
    /// Debian's etcd-server 3.4.23 (`/usr/bin/etcd`, or `ETCD_BIN`), restored
    /// with its etcdctl.
    Debian34,
    /// etcd 3.5.1 from [`ETCD_35_DIR`], restored with its etcdutl (which
    /// cannot bump the revision: 3.5.10+ can).
    V3_5,
}

impl EtcdRelease {
    /// The etcd binary (asserted present, naming the fix).
    pub fn etcd_binary(self) -> PathBuf {
        match self {
            EtcdRelease::Debian34 => etcd_binary(),
            EtcdRelease::V3_5 => release_file("etcd"),
        }
    }

    /// The etcdctl of this release (3.5's talks to either).
    pub fn etcdctl(self) -> PathBuf {
        match self {
            EtcdRelease::Debian34 => PathBuf::from("etcdctl"),
            EtcdRelease::V3_5 => release_file("etcdctl"),
        }
    }

    /// The version `etcd --version` reports.
    pub fn version(self) -> String {
        let out = Command::new(self.etcd_binary())
            .arg("--version")
            .output()
            .expect("etcd --version");
        etcdops_format::etcd_version::parse_version_output(&String::from_utf8_lossy(&out.stdout))
            .expect("a version in `etcd --version`")
            .to_string()
    }
}

/// A file of the etcd 3.5 install, asserted present.
fn release_file(name: &str) -> PathBuf {
    let path = Path::new(ETCD_35_DIR).join(name);
    assert!(
        path.is_file(),
        "{} not found: run `bash deploy/dev/setup.sh` (it installs etcd 3.5.1 there)",
        path.display()
    );
    path
}

/// How long a cluster may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    members: usize,
    spares: usize,
    restart: Restart,
    metrics_port: Option<u16>,
    disk_probe_interval_secs: Option<u64>,
    disk_fsync_threshold_ms: Option<u64>,
    stop_timeout_secs: Option<u64>,
    tls: bool,
    etcd: EtcdRelease,
}

/// The agents' fsync threshold when a test turns the periodic probe off and
/// sets none: tests turn the probe off because a shared test machine's fsync
/// p99 often passes etcd's 10 ms guidance; the coordinator's disk gate then
/// runs its own short probe (it fails closed), judged against this.
pub const LENIENT_FSYNC_THRESHOLD_MS: u64 = 1000;

impl ClusterBuilder {
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }

    /// Spare hosts (0 to 4): agents without an etcd member, named and
    /// addressed after the members ([`Cluster::spare`]), for membership tests.
    pub fn spares(mut self, n: usize) -> Self {
        self.spares = n;
        self
    }

    /// Agents serve `/metrics` on `<member ip>:<port>` (`metrics_listen`).
    pub fn metrics_port(mut self, port: u16) -> Self {
        self.metrics_port = Some(port);
        self
    }

    /// The agents' periodic disk probe interval (`[disk] probe_interval_secs`).
    /// 0 (off) also makes the fsync threshold [`LENIENT_FSYNC_THRESHOLD_MS`]
    /// unless [`ClusterBuilder::disk_fsync_threshold_ms`] sets one.
    pub fn disk_probe_interval_secs(mut self, secs: u64) -> Self {
        self.disk_probe_interval_secs = Some(secs);
        self
    }

    /// The agents' fsync p99 threshold (`[disk] fsync_p99_threshold_ms`,
    /// at least 1); default: the agent's (10 ms).
    pub fn disk_fsync_threshold_ms(mut self, ms: u64) -> Self {
        self.disk_fsync_threshold_ms = Some(ms);
        self
    }

    /// The agents' graceful stop of etcd before a kill (`[unit] stop_timeout_secs`).
    pub fn stop_timeout_secs(mut self, secs: u64) -> Self {
        self.stop_timeout_secs = Some(secs);
        self
    }

    /// etcd over plain HTTP instead of TLS (the default): only for a test
    /// that compares the two.
    pub fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// The etcd release every member runs (default: Debian's 3.4.23). For
    /// [`EtcdRelease::V3_5`] the agents also restore with its etcdutl
    /// (`[restore] etcdutl`).
    pub fn etcd(mut self, release: EtcdRelease) -> Self {
        self.etcd = release;
        self
    }

    /// Starts etcd members and agents and waits until the cluster is healthy.
    pub fn start(self, bins: Bins) -> Cluster {
        etcdops_certs::install_crypto_provider();
        let etcd = self.etcd.etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("etcdops-e2e-")
            .tempdir()
            .expect("temp dir");
        let prefix = free_prefix();
        let spec = LayoutSpec {
            dir: dir.path().to_path_buf(),
            cluster: "e2e".to_string(),
            members: self.members,
            ip_prefix: prefix,
            client_port: 2379,
            peer_port: 2380,
            agent_port: 7443,
            etcd_binary: etcd,
            restart: self.restart,
            token: format!("e2e-{}-{}-{}", prefix[1], prefix[2], std::process::id()),
            metrics_port: self.metrics_port,
            disk_probe_interval_secs: self.disk_probe_interval_secs,
            spares: self.spares,
            tls: self.tls,
        };
        let layout = spec.write().expect("writing the cluster layout");
        let threshold = self
            .disk_fsync_threshold_ms
            .or((self.disk_probe_interval_secs == Some(0)).then_some(LENIENT_FSYNC_THRESHOLD_MS));
        if let Some(ms) = threshold {
            for m in layout.members.iter().chain(&layout.spares) {
                set_fsync_threshold(&m.agent_config, ms);
            }
        }
        if self.stop_timeout_secs.is_some() || self.etcd == EtcdRelease::V3_5 {
            for m in layout.members.iter().chain(&layout.spares) {
                let mut config =
                    etcdops_agent::config::AgentConfig::load(&m.agent_config).expect("agent config");
                if let Some(secs) = self.stop_timeout_secs {
                    config.unit.stop_timeout_secs = secs;
                }
                if self.etcd == EtcdRelease::V3_5 {
                    config.restore.etcdutl = Some(release_file("etcdutl"));
                }
                std::fs::write(&m.agent_config, config.to_toml()).expect("writing the agent config");
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut cluster = Cluster {
            layout,
            bins,
            children: Vec::new(),
            spare_children: Vec::new(),
            runtime,
            cluster_name: spec.cluster.clone(),
            next_epoch: std::sync::atomic::AtomicU64::new(1),
            _dir: dir,
        };
        for m in cluster.layout.members.clone() {
            let child = procs::spawn_agent(&cluster.bins.agent, &m).expect("spawning an agent");
            cluster.children.push(Some(child));
        }
        for s in cluster.layout.spares.clone() {
            let child = procs::spawn_agent(&cluster.bins.agent, &s).expect("spawning a spare host's agent");
            cluster.spare_children.push(Some(child));
        }
        cluster.wait_until("every member healthy with one leader", START_TIMEOUT, |c| {
            c.is_healthy()
        });
        cluster.wait_until(
            "every spare host's agent answering GetStatus",
            START_TIMEOUT,
            |c| (0..c.layout.spares.len()).all(|i| c.spare_status(i).is_ok()),
        );
        cluster
    }
}

/// A running cluster; dropped = torn down.
pub struct Cluster {
    pub layout: Layout,
    pub bins: Bins,
    children: Vec<Option<Child>>,
    /// The spare hosts' agents.
    spare_children: Vec<Option<Child>>,
    runtime: tokio::runtime::Runtime,
    /// The cluster's name in the fleet file (what fences are keyed by).
    pub cluster_name: String,
    /// The next epoch [`Cluster::acquire_fence`] uses.
    next_epoch: std::sync::atomic::AtomicU64,
    _dir: tempfile::TempDir,
}

/// `etcdops` run by one operator: the cluster's fleet file, its own journal.
pub struct Coordinator<'a> {
    cluster: &'a Cluster,
    pub journal: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coordinator<'_> {
    /// Runs `etcdops ARGS` and collects its output.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        let journal = self.journal.to_str().expect("utf-8 journal path");
        self.cluster
            .etcdops_with_env(args, &[("ETCDOPS_JOURNAL", journal)])
    }

    /// Runs `etcdops ARGS` in the background, stdin closed.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(&self.cluster.bins.cli)
            .arg("--fleet")
            .arg(self.cluster.fleet_path())
            .args(args)
            .env_remove("ETCDOPS_FLEET")
            .env("ETCDOPS_JOURNAL", &self.journal)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning etcdops")
    }

    /// The operations in its journal (`op list --all -w json`), newest first.
    pub fn operations(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["op", "list", "--all", "-w", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()["operations"].as_array().cloned().unwrap_or_default()
    }
}

/// The result of running the CLI.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout parsed as JSON (panics with the output if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The operation record an operation printed with `-w json`, asserting
    /// exit 0, state `succeeded` and every step done.
    pub fn succeeded(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        let record = self.json();
        assert_eq!(record["state"], "succeeded", "{record}");
        let steps = record["steps"].as_array().expect("steps");
        assert!(
            !steps.is_empty() && steps.iter().all(|s| s["state"] == "done"),
            "{record}"
        );
        record
    }
}

/// The step IDs of an operation record (`-w json`), in order.
pub fn step_ids(record: &serde_json::Value) -> Vec<String> {
    record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Who calls the agent API in a direct call.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The fleet's coordinator certificate.
    Coordinator,
    /// TLS with the fleet CA trusted but no client certificate.
    NoCertificate,
    /// A coordinator-role certificate from another CA.
    OtherCa,
    /// The certificate of member i's agent (role agent).
    Agent(usize),
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            members: 3,
            spares: 0,
            restart: Restart::Never,
            metrics_port: None,
            disk_probe_interval_secs: None,
            disk_fsync_threshold_ms: None,
            stop_timeout_secs: None,
            tls: true,
            etcd: EtcdRelease::Debian34,
        }
    }

    pub fn member(&self, i: usize) -> &MemberLayout {
        &self.layout.members[i]
    }

    pub fn fleet_path(&self) -> &Path {
        &self.layout.fleet_path
    }

    /// Runs `etcdops --fleet <fleet> ARGS` and collects its output.
    pub fn etcdops(&self, args: &[&str]) -> CliOutput {
        self.etcdops_with_env(args, &[])
    }

    /// [`Cluster::etcdops`] with these environment variables set on top of
    /// the inherited ones (e.g. S3 credentials, TMPDIR).
    pub fn etcdops_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let out = Command::new(&self.bins.cli)
            .arg("--fleet")
            .arg(self.fleet_path())
            .args(args)
            .env_remove("ETCDOPS_FLEET")
            .envs(env.iter().copied())
            .output()
            .expect("running etcdops");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Spare host i (0-based): an agent without an etcd member.
    pub fn spare(&self, i: usize) -> &MemberLayout {
        &self.layout.spares[i]
    }

    /// A gRPC client to spare host i's agent, as the coordinator.
    pub fn spare_client(&self, i: usize) -> AgentClient<Channel> {
        self.agent_client(self.spare(i), &Caller::Coordinator)
    }

    /// GetStatus on spare host i's agent, as the coordinator.
    pub fn spare_status(&self, i: usize) -> Result<GetStatusResponse, tonic::Status> {
        let mut client = self.spare_client(i);
        self.runtime
            .block_on(client.get_status(GetStatusRequest { timeout_ms: 1000 }))
            .map(tonic::Response::into_inner)
    }

    /// A gRPC client to member i's agent, authenticated as `caller`.
    pub fn client(&self, i: usize, caller: &Caller) -> AgentClient<Channel> {
        self.agent_client(self.member(i), caller)
    }

    /// A gRPC client to the agent of host `m` (member or spare), as `caller`.
    fn agent_client(&self, m: &MemberLayout, caller: &Caller) -> AgentClient<Channel> {
        let pki = Pki::open(&self.layout.pki_dir).expect("pki");
        let ca = Certificate::from_pem(std::fs::read(pki.ca_cert_path()).expect("ca"));
        let identity = |cert: &Path, key: &Path| {
            Identity::from_pem(
                std::fs::read(cert).expect("cert"),
                std::fs::read(key).expect("key"),
            )
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name(m.ip.to_string());
        match caller {
            Caller::Coordinator => {
                let (cert, key) = pki.paths(Role::Coordinator, "sandbox-operator");
                tls = tls.identity(identity(&cert, &key));
            }
            Caller::NoCertificate => {}
            Caller::OtherCa => {
                let other = self.layout.dir.join("other-pki");
                let pki = Pki::open(&other)
                    .unwrap_or_else(|_| Pki::init(&other, "intruder-ca", 1, false).expect("ca").0);
                let (cert, key) = pki.paths(Role::Coordinator, "intruder");
                if !cert.exists() {
                    pki.issue(&IssueRequest::new(Role::Coordinator, "intruder"))
                        .expect("issue");
                }
                tls = tls.identity(identity(&cert, &key));
            }
            Caller::Agent(j) => {
                let (cert, key) = pki.paths(Role::Agent, &self.member(*j).name);
                tls = tls.identity(identity(&cert, &key));
            }
        }
        let endpoint = Endpoint::from_shared(m.agent_url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let _runtime = self.runtime.enter();
        AgentClient::new(endpoint.connect_lazy())
    }

    /// GetStatus on member i's agent, as `caller`.
    pub fn get_status(
        &self,
        i: usize,
        caller: &Caller,
        timeout_ms: u32,
    ) -> Result<GetStatusResponse, tonic::Status> {
        let mut client = self.client(i, caller);
        self.runtime
            .block_on(client.get_status(GetStatusRequest { timeout_ms }))
            .map(tonic::Response::into_inner)
    }

    /// Health on member i's agent, as `caller`.
    pub fn health(
        &self,
        i: usize,
        caller: &Caller,
        timeout_ms: u32,
    ) -> Result<HealthResponse, tonic::Status> {
        let mut client = self.client(i, caller);
        self.runtime
            .block_on(client.health(HealthRequest { timeout_ms }))
            .map(tonic::Response::into_inner)
    }

    /// True when every agent answers, every member is healthy, and there is
    /// exactly one leader and one cluster ID.
    pub fn is_healthy(&self) -> bool {
        let mut leaders = 0;
        let mut cluster_ids = std::collections::BTreeSet::new();
        for i in 0..self.layout.members.len() {
            let Ok(status) = self.get_status(i, &Caller::Coordinator, 1000) else {
                return false;
            };
            let Some(member) = status.member else { return false };
            if !member.reachable
                || !self
                    .health(i, &Caller::Coordinator, 1000)
                    .is_ok_and(|h| h.healthy)
            {
                return false;
            }
            leaders += usize::from(member.is_leader);
            cluster_ids.insert(member.cluster_id);
        }
        leaders == 1 && cluster_ids.len() == 1
    }

    /// etcd-client's options for this cluster's members: the layout's
    /// operator `etcd-client` certificate (`None` with plain HTTP). Use it
    /// wherever a test talks to etcd: `Client::connect(urls, cluster.etcd_options())`.
    pub fn etcd_options(&self) -> Option<etcd_client::ConnectOptions> {
        etcd_connect_options(&self.layout)
    }

    /// etcdctl's TLS flags for this cluster (see [`etcdctl_tls_args`]).
    pub fn etcdctl_tls_args(&self) -> Vec<String> {
        etcdctl_tls_args(&self.layout)
    }

    /// Keys under `prefix` as the member at `client_url` sees them
    /// (serializable read: its own data, even without a leader).
    pub fn local_count(&self, client_url: &str, prefix: &str) -> i64 {
        let (url, prefix, options) = (client_url.to_string(), prefix.to_string(), self.etcd_options());
        self.block_on(async move {
            let mut client = etcd_client::Client::connect([url.as_str()], options)
                .await
                .expect("client");
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            client.get(prefix, Some(opts)).await.expect("count").count()
        })
    }

    /// Every key and value under `prefix` as the member at `client_url` holds
    /// them (serializable read), in key order.
    pub fn local_dump(&self, client_url: &str, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (url, prefix, options) = (client_url.to_string(), prefix.to_string(), self.etcd_options());
        self.block_on(async move {
            let mut client = etcd_client::Client::connect([url.as_str()], options)
                .await
                .expect("client");
            let opts = etcd_client::GetOptions::new().with_prefix().with_serializable();
            let got = client.get(prefix, Some(opts)).await.expect("dump");
            got.kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                .collect()
        })
    }

    /// Writes `count` keys `<prefix><i>` of `value_size` bytes each through
    /// member 0 (puts in flight concurrently, bounded).
    pub fn put_bulk(&self, prefix: &str, count: usize, value_size: usize) {
        let endpoints: Vec<String> = self.layout.members.iter().map(|m| m.client_url.clone()).collect();
        self.runtime.block_on(async {
            let client = etcd_client::Client::connect(&endpoints, self.etcd_options())
                .await
                .expect("etcd client");
            let value = vec![b'x'; value_size];
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..count {
                let (mut kv, value, key) = (client.kv_client(), value.clone(), format!("{prefix}{i}"));
                tasks.spawn(async move { kv.put(key, value, None).await.map(|_| ()) });
                if tasks.len() >= 16 {
                    tasks
                        .join_next()
                        .await
                        .expect("task")
                        .expect("join")
                        .expect("put");
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("join").expect("put");
            }
        });
    }

    /// A coordinator with an operation journal of its own: several may act
    /// on the cluster, as several operators would.
    pub fn coordinator(&self) -> Coordinator<'_> {
        let dir = tempfile::Builder::new()
            .prefix("etcdops-journal-")
            .tempdir()
            .expect("journal dir");
        Coordinator {
            cluster: self,
            journal: dir.path().join("journal.redb"),
            _dir: dir,
        }
    }

    /// Runs the CLI in the background (for faults injected while it runs).
    pub fn etcdops_spawn(&self, args: &[&str]) -> Child {
        Command::new(&self.bins.cli)
            .arg("--fleet")
            .arg(self.fleet_path())
            .args(args)
            .env_remove("ETCDOPS_FLEET")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning etcdops")
    }

    /// Member i's etcd: SIGSTOP (`freeze = true`) or SIGCONT.
    pub fn freeze_etcd(&self, i: usize, freeze: bool) {
        let pid = self.etcd_pid(i);
        let sig = if freeze {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal etcd");
    }

    /// The index of the member that is the leader now.
    pub fn leader(&self) -> usize {
        (0..self.layout.members.len())
            .find(|&i| {
                self.get_status(i, &Caller::Coordinator, 1000)
                    .ok()
                    .and_then(|s| s.member)
                    .is_some_and(|m| m.is_leader)
            })
            .unwrap_or_else(|| panic!("no leader\n{}", self.logs()))
    }

    /// Runs a future on the cluster's runtime (the one its clients use).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.runtime.block_on(fut)
    }

    /// A fence for operation `op` at `epoch` (no step).
    pub fn fence(&self, op: &str, epoch: u64) -> Fence {
        Fence {
            cluster: self.cluster_name.clone(),
            epoch,
            operation_id: op.to_string(),
            step: String::new(),
        }
    }

    /// An epoch above every epoch this harness handed out so far and every
    /// epoch the agents recorded (etcdops operations take epochs too).
    pub fn next_epoch(&self) -> u64 {
        let recorded = (0..self.layout.members.len())
            .filter_map(|i| self.get_status(i, &Caller::Coordinator, 2000).ok())
            .flat_map(|s| s.fences)
            .filter(|f| f.cluster == self.cluster_name)
            .map(|f| f.epoch)
            .max()
            .unwrap_or(0);
        let next = self.next_epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let epoch = next.max(recorded + 1);
        self.next_epoch
            .fetch_max(epoch + 1, std::sync::atomic::Ordering::Relaxed);
        epoch
    }

    /// AcquireFence on member i's agent, as the coordinator.
    pub fn try_acquire_fence(
        &self,
        i: usize,
        fence: &Fence,
        takeover: bool,
    ) -> Result<FenceState, tonic::Status> {
        let mut client = self.client(i, &Caller::Coordinator);
        let request = AcquireFenceRequest {
            fence: Some(fence.clone()),
            holder: "e2e-harness".to_string(),
            operation_kind: "e2e".to_string(),
            takeover,
        };
        self.block_on(client.acquire_fence(request))
            .map(tonic::Response::into_inner)
    }

    /// Acquires the cluster's fence for operation `op` on every agent
    /// (spare hosts' included), at a fresh epoch, and returns it (panics if
    /// an agent refuses).
    pub fn acquire_fence(&self, op: &str) -> Fence {
        let fence = self.fence(op, self.next_epoch());
        for i in 0..self.layout.members.len() {
            self.try_acquire_fence(i, &fence, false)
                .unwrap_or_else(|e| panic!("acquiring the fence for {op} on member {i}: {e:?}"));
        }
        for i in 0..self.layout.spares.len() {
            let request = AcquireFenceRequest {
                fence: Some(fence.clone()),
                holder: "e2e-harness".to_string(),
                operation_kind: "e2e".to_string(),
                takeover: false,
            };
            self.block_on(self.spare_client(i).acquire_fence(request))
                .unwrap_or_else(|e| panic!("acquiring the fence for {op} on spare host {i}: {e:?}"));
        }
        fence
    }

    /// ReleaseFence on every agent, spare hosts' included (panics if an agent refuses).
    pub fn release_fence(&self, fence: &Fence) {
        for i in 0..self.layout.members.len() {
            let mut client = self.client(i, &Caller::Coordinator);
            self.block_on(client.release_fence(ReleaseFenceRequest {
                fence: Some(fence.clone()),
            }))
            .unwrap_or_else(|e| {
                panic!(
                    "releasing the fence of {} on member {i}: {e:?}",
                    fence.operation_id
                )
            });
        }
        for i in 0..self.layout.spares.len() {
            self.block_on(self.spare_client(i).release_fence(ReleaseFenceRequest {
                fence: Some(fence.clone()),
            }))
            .unwrap_or_else(|e| {
                panic!(
                    "releasing the fence of {} on spare host {i}: {e:?}",
                    fence.operation_id
                )
            });
        }
    }

    /// Stops member i's agent (and with it its etcd) and starts it again
    /// from the same config; waits until the cluster is healthy.
    pub fn restart_agent(&mut self, i: usize) {
        self.restart_agent_no_wait(i);
        self.wait_until("the cluster healthy after an agent restart", START_TIMEOUT, |c| {
            c.is_healthy()
        });
    }

    /// [`Cluster::restart_agent`] without waiting for a healthy cluster (a
    /// test that broke the agent's config on purpose); waits only until the
    /// agent answers GetStatus.
    pub fn restart_agent_no_wait(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            procs::terminate(child.id());
            procs::wait_group(child.id(), Duration::from_secs(20), || {
                let _ = child.try_wait();
            });
            let _ = child.kill();
            let _ = child.wait();
            procs::forget(&self.layout.members[i]);
        }
        let child =
            procs::spawn_agent(&self.bins.agent, &self.layout.members[i]).expect("respawning the agent");
        self.children[i] = Some(child);
        self.wait_until("the restarted agent answering GetStatus", START_TIMEOUT, |c| {
            c.get_status(i, &Caller::Coordinator, 1000).is_ok()
        });
    }

    /// Sets every member's agent `[disk] fsync_p99_threshold_ms` and restarts
    /// the agents one by one (each waits until the cluster is healthy).
    pub fn set_disk_fsync_threshold_ms(&mut self, ms: u64) {
        for i in 0..self.layout.members.len() {
            set_fsync_threshold(&self.layout.members[i].agent_config, ms);
            self.restart_agent(i);
        }
    }

    /// A power cut on member i's host: its agent and etcd SIGKILLed
    /// together (the whole process group, nothing stopped gracefully); the
    /// files stay. Waits until both are gone (the agent is reaped at drop).
    pub fn power_cut(&self, i: usize) {
        let Some(pid) = self.children[i].as_ref().map(Child::id) else {
            return;
        };
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.wait_until(
            "the power-cut host's agent and etcd gone",
            Duration::from_secs(10),
            |_| !procs::group_alive(pid),
        );
    }

    /// SIGKILLs member i's agent process alone: its etcd keeps running (as
    /// after an agent crash); `restart_agent` brings the agent back.
    pub fn kill_agent(&self, i: usize) {
        let pid = self.agent_pid(i);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the agent");
    }

    /// The pid of member i's agent process.
    pub fn agent_pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("agent running").id()
    }

    /// The pid of the etcd process member i's agent supervises.
    pub fn etcd_pid(&self, i: usize) -> u32 {
        let status = self.get_status(i, &Caller::Coordinator, 1000).expect("status");
        let pid = status.unit.map(|u| u.main_pid).unwrap_or_default();
        assert_ne!(pid, 0, "member {i} has no running etcd");
        pid
    }

    /// SIGKILLs member i's etcd (the agent keeps running).
    pub fn kill_etcd(&self, i: usize) {
        let pid = self.etcd_pid(i);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill etcd");
        self.wait_until("the killed etcd to be gone", Duration::from_secs(10), |_| {
            !procs::alive(pid)
        });
    }

    /// Polls `cond` every 100 ms until it holds, or panics after `timeout`
    /// with `what` and the agents' logs.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
    }

    /// The tail of every agent and etcd log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in self.layout.members.iter().chain(&self.layout.spares) {
            for path in [&m.agent_log, &m.etcd_log] {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {} (last lines)\n", path.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Signal every agent first so the members stop in parallel.
        for child in self.children.iter().chain(&self.spare_children).flatten() {
            procs::terminate(child.id());
        }
        let hosts = self.layout.members.iter().chain(&self.layout.spares);
        for (slot, host) in self
            .children
            .iter_mut()
            .chain(self.spare_children.iter_mut())
            .zip(hosts)
        {
            if let Some(mut child) = slot.take() {
                procs::wait_group(child.id(), Duration::from_secs(20), || {
                    let _ = child.try_wait();
                });
                let _ = child.kill();
                let _ = child.wait();
                procs::forget(host);
            }
        }
    }
}

/// Sets `[disk] fsync_p99_threshold_ms` in an agent config the layout wrote
/// (read and written back through the agent's own config type).
fn set_fsync_threshold(config: &Path, ms: u64) {
    let mut agent = etcdops_agent::config::AgentConfig::load(config).expect("agent config");
    agent.disk.fsync_p99_threshold_ms = ms;
    std::fs::write(config, agent.to_toml()).expect("writing the agent config");
}

/// GET `/metrics` from an etcd member's client URL (over TLS with the
/// operator's etcd client certificate when `tls` is given), through the
/// agent's own scraper.
pub fn etcd_metrics(client_url: &str, tls: Option<&etcdops_certs::TlsFiles>) -> String {
    use etcdops_agent::disk::metrics::{MetricsEndpoint, fetch};
    let tls = tls.map(|t| etcdops_agent::config::TlsConfig {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
    });
    let endpoint = MetricsEndpoint::new(format!("{client_url}/metrics"), tls.as_ref());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fetch(&endpoint, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("reading etcd's metrics: {e}"))
}

/// etcd-client's options for the members of `layout` (the 127.x harness's
/// or the nspawn hosts'): TLS with the layout's operator `etcd-client`
/// certificate and the fleet CA; `None` with plain HTTP (`tls = false`).
pub fn etcd_connect_options(layout: &Layout) -> Option<etcd_client::ConnectOptions> {
    let tls = layout.etcd_client.as_ref()?;
    Some(etcd_tls_options(tls).unwrap_or_else(|e| panic!("{e:#}")))
}

/// One get through `url` as the client identity `tls`: Ok, or why etcd (or
/// the TLS handshake) refused it (for "old-CA clients are refused" checks).
pub fn etcd_get_as(
    rt: &tokio::runtime::Runtime,
    url: &str,
    tls: &etcdops_certs::TlsFiles,
) -> Result<(), String> {
    let options = etcd_tls_options(tls)
        .map_err(|e| format!("{e:#}"))?
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([url], Some(options))
            .await
            .map_err(|e| e.to_string())?;
        client
            .get("/bench/load/0", None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// etcd-client's options for the client identity `tls` (CA, certificate, key).
pub fn etcd_tls_options(tls: &etcdops_certs::TlsFiles) -> anyhow::Result<etcd_client::ConnectOptions> {
    use anyhow::Context;
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("etcd client TLS file {}", path.display()));
    let options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?))
        .identity(etcd_client::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    Ok(etcd_client::ConnectOptions::new().with_tls(options))
}

/// etcdctl's flags for the members of `layout`: `--cacert`, `--cert` and
/// `--key` of the operator's `etcd-client` certificate (none with plain HTTP).
pub fn etcdctl_tls_args(layout: &Layout) -> Vec<String> {
    layout
        .etcd_client
        .as_ref()
        .map(|tls| {
            vec![
                format!("--cacert={}", tls.ca.display()),
                format!("--cert={}", tls.cert.display()),
                format!("--key={}", tls.key.display()),
            ]
        })
        .unwrap_or_default()
}

/// The etcd binary: `ETCD_BIN` or the installed one.
fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.is_file(),
        "etcd not found at {}: install it (`apt-get install etcd-server etcd-client`) or set ETCD_BIN",
        path.display()
    );
    path
}

/// A random 127.x.y prefix whose .11-.19 addresses have the cluster ports free.
pub fn free_prefix() -> [u8; 3] {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    for _ in 0..100 {
        // xorshift: good enough to spread parallel tests over 127/8.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let prefix = [127, (seed % 250 + 1) as u8, (seed >> 8) as u8];
        let free = (11..20u8).all(|host| {
            [2379, 2380, 7443].iter().all(|port| {
                let addr = SocketAddr::from((Ipv4Addr::new(prefix[0], prefix[1], prefix[2], host), *port));
                TcpListener::bind(addr).is_ok()
            })
        });
        if free {
            return prefix;
        }
    }
    panic!("no free 127.x.y.0/24 block with ports 2379, 2380 and 7443 free");
}
