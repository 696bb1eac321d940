//! What the agent holds while it runs: its identity, the local member, the
//! unit backend and the data dir. Built once at start-up from the config.
//! It is what the background workers read, through the traits they declare
//! (`metrics::MetricsSource`, `revisions::RevisionSource`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcdops_certs::Identity;

use crate::config::{AgentConfig, Backend, EtcdConfig, Restart};
use crate::disk::DiskProber;
use crate::envfile::EnvFile;
use crate::etcd::LocalMember;
use crate::unit::UnitBackend;
use crate::unit::process::{ProcessUnit, RestartPolicy};
use crate::unit::systemd::SystemdUnit;

/// Debian's etcd.service default when nothing else names the data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/etcd/default";

#[derive(Debug)]
pub struct AgentState {
    /// The agent's own certificate identity.
    pub identity: Identity,
    pub etcd: LocalMember,
    pub unit: Box<dyn UnitBackend>,
    /// etcd's graceful stop before a kill (`unit.stop_timeout_secs`).
    pub stop_timeout: Duration,
    pub data_dir: PathBuf,
    /// etcd's environment file (ETCD_* variables).
    pub env_file: PathBuf,
    /// The disk probe: its threshold, etcd's metrics URL, one probe at a time.
    pub disk: DiskProber,
    /// The latest light periodic disk probe (`disk::periodic`).
    pub disk_health: crate::disk::periodic::LatestDiskHealth,
    /// Host facts for GetStatus.
    pub host: crate::host::HostReader,
    /// RPC counts and durations for `/metrics`.
    pub rpc_metrics: crate::metrics::RpcMetrics,
    /// The agent's state dir (`state_dir`).
    pub state_dir: PathBuf,
    /// The clusters' fences, the record of completed calls, the writer lock.
    pub fences: crate::fence::FenceStore,
    /// The member's revision samples (RevisionAt).
    pub revisions: crate::revisions::RevisionLog,
    /// The restore tools (`[restore]`).
    pub restore: crate::config::RestoreConfig,
    /// Where this host's certificates are (GetCertificates, InstallCertificates, `/metrics`).
    pub cert_paths: crate::certs::CertPaths,
    /// The agent's serving certificate, reloaded by InstallCertificates (set by `server::run`).
    pub server_cert: Option<std::sync::Arc<crate::certs_tls::ServerCert>>,
    /// The config's etcd binary (`unit.etcd_binary`).
    pub configured_binary: PathBuf,
}

/// Start-up errors that are not TLS or listen errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "unit backend \"systemd\" needs the agent to run inside a multi-threaded async runtime; \
         set unit.backend = \"process\" in the agent config"
    )]
    SystemdUnavailable,
    /// Boxed: zbus errors are large.
    #[error(transparent)]
    Systemd(Box<crate::unit::systemd::SystemdError>),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("cannot create the agent's state dir {path} (see `state_dir` in the agent config): {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fences(#[from] crate::fence::FenceError),
}

impl AgentState {
    pub fn new(config: &AgentConfig, identity: Identity) -> Result<AgentState, StateError> {
        let unit: Box<dyn UnitBackend> = match config.unit.backend {
            Backend::Process => {
                let restart = match config.unit.restart {
                    Restart::Never => RestartPolicy::Never,
                    Restart::OnFailure => {
                        RestartPolicy::OnFailure(Duration::from_secs(config.unit.restart_delay_secs))
                    }
                };
                Box::new(
                    ProcessUnit::new(
                        config.unit.etcd_binary.clone(),
                        config.etcd.env_file.clone(),
                        config.unit.log_file.clone(),
                        restart,
                    )
                    .with_boot_record(&config.state_dir)
                    .with_binary_record(&config.state_dir),
                )
            }
            Backend::Systemd => Box::new(connect_systemd(&config.unit.name)?),
        };
        crate::statefile::ensure_dir(&config.state_dir).map_err(|source| StateError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let fences = crate::fence::FenceStore::load(&config.state_dir)?;
        let etcd_tls = config
            .etcd
            .tls
            .as_ref()
            .map(|tls| crate::certs::etcd_client_tls(tls, &config.etcd.env_file));
        crate::etcd::check_tls_files(
            &config.etcd,
            &identity.name,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )?;
        Ok(AgentState {
            state_dir: config.state_dir.clone(),
            fences,
            revisions: crate::revisions::RevisionLog::load(&config.state_dir),
            identity,
            // Once etcd's env file names a trust bundle the agent wrote
            // (`certs rotate-ca`), its etcd client trusts that bundle.
            etcd: LocalMember::new(&EtcdConfig {
                tls: etcd_tls.clone(),
                ..config.etcd.clone()
            })?,
            unit,
            stop_timeout: config.unit.stop_timeout(),
            data_dir: data_dir(config),
            env_file: config.etcd.env_file.clone(),
            disk: DiskProber::new(&config.disk, &config.etcd.endpoint).with_etcd_tls(etcd_tls.as_ref()),
            disk_health: Default::default(),
            host: Default::default(),
            rpc_metrics: Default::default(),
            restore: config.restore.clone(),
            cert_paths: crate::certs::CertPaths::new(config),
            server_cert: None,
            configured_binary: config.unit.etcd_binary.clone(),
        })
    }
}

impl crate::metrics::MetricsSource for AgentState {
    fn unit(&self) -> &dyn UnitBackend {
        self.unit.as_ref()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn cert_not_after_unix(&self) -> i64 {
        self.server_cert
            .as_ref()
            .and_then(|c| c.info())
            .map_or(self.identity.not_after_unix, |i| i.not_after_unix)
    }

    fn cert_expiries(&self) -> Vec<(String, String, i64)> {
        crate::certs::expiries(&self.cert_paths)
    }

    fn disk_health(&self) -> Option<crate::disk::periodic::DiskHealth> {
        self.disk_health.get()
    }

    fn rpc_metrics(&self) -> &crate::metrics::RpcMetrics {
        &self.rpc_metrics
    }
}

impl crate::revisions::RevisionSource for AgentState {
    fn revision_log(&self) -> crate::revisions::RevisionLog {
        self.revisions.clone()
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    async fn current_revision(&self, timeout: Duration) -> Result<i64, crate::etcd::EtcdError> {
        self.etcd.brief_status(timeout).await.map(|s| s.revision)
    }
}

/// Connects to the system bus at start-up (a clear error if there is none).
/// `AgentState::new` is synchronous and runs inside the agent's
/// multi-threaded runtime, where the connection's tasks must live.
fn connect_systemd(unit: &str) -> Result<SystemdUnit, StateError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| StateError::SystemdUnavailable)?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(StateError::SystemdUnavailable);
    }
    tokio::task::block_in_place(|| handle.block_on(SystemdUnit::connect(unit)))
        .map_err(|e| StateError::Systemd(Box::new(e)))
}

/// The data dir: the config's, else ETCD_DATA_DIR from the env file, else
/// Debian's default.
pub fn data_dir(config: &AgentConfig) -> PathBuf {
    if let Some(dir) = &config.etcd.data_dir {
        return dir.clone();
    }
    EnvFile::load(&config.etcd.env_file)
        .ok()
        .and_then(|f| f.get("ETCD_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}
