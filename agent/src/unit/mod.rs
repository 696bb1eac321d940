//! How etcd runs on the host: a trait with one implementation per backend.
//!
//! - [`process::ProcessUnit`]: the agent starts and supervises etcd itself,
//!   from the same environment file etcd.service would read (sandbox, hosts
//!   without systemd).
//! - [`systemd::SystemdUnit`]: etcd.service over systemd's D-Bus API.

pub mod process;
pub mod systemd;

use std::fmt;
use std::time::Duration;

/// The unit's state, in systemd's terms (ActiveState).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    Inactive,
    Activating,
    Deactivating,
    Failed,
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnitState::Active => "active",
            UnitState::Inactive => "inactive",
            UnitState::Activating => "activating",
            UnitState::Deactivating => "deactivating",
            UnitState::Failed => "failed",
        })
    }
}

/// A point-in-time view of the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInfo {
    pub state: UnitState,
    pub main_pid: Option<u32>,
    /// Human-readable detail, e.g. how a process ended.
    pub detail: String,
    /// systemd's SubState (e.g. `running`, `auto-restart`); empty for the
    /// process backend.
    pub sub_state: String,
    /// The unit's last journal lines when it is failed or restarting; empty
    /// otherwise and for the process backend.
    pub log_lines: Vec<String>,
}

impl UnitInfo {
    /// Inactive, no pid, no detail, no systemd fields: the base for struct
    /// updates (`..UnitInfo::EMPTY`).
    pub const EMPTY: UnitInfo = UnitInfo {
        state: UnitState::Inactive,
        main_pid: None,
        detail: String::new(),
        sub_state: String::new(),
        log_lines: Vec::new(),
    };
}

/// Errors of a unit backend. Each names the unit and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "etcd binary {path} not found: install etcd (`apt-get install etcd-server`) or set unit.etcd_binary"
    )]
    BinaryMissing { path: std::path::PathBuf },
    #[error("cannot start {unit}: {reason}")]
    Start { unit: String, reason: String },
    #[error("{unit} did not stop within {timeout:?}; it was killed")]
    StopTimeout { unit: String, timeout: Duration },
    #[error("cannot signal {unit} (pid {pid}): {reason}")]
    Signal { unit: String, pid: u32, reason: String },
    #[error(transparent)]
    EnvFile(#[from] crate::envfile::EnvFileError),
    #[error("cannot record whether etcd starts with the agent in {path}: {source}")]
    BootFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Boxed: zbus errors are large.
    #[error(transparent)]
    Systemd(Box<systemd::SystemdError>),
}

impl From<systemd::SystemdError> for UnitError {
    fn from(e: systemd::SystemdError) -> Self {
        UnitError::Systemd(Box::new(e))
    }
}

/// A way to run etcd on this host.
#[async_trait::async_trait]
pub trait UnitBackend: Send + Sync + fmt::Debug {
    /// "process" or "systemd".
    fn backend(&self) -> &'static str;
    /// The unit name or binary, for messages.
    fn unit(&self) -> String;
    /// The current state.
    async fn info(&self) -> UnitInfo;
    /// Starts etcd; returns once the process runs (not once it is healthy).
    async fn start(&self) -> Result<UnitInfo, UnitError>;
    /// Stops etcd gracefully, killing it after `timeout`.
    async fn stop(&self, timeout: Duration) -> Result<UnitInfo, UnitError>;
    /// Whether etcd starts at boot (`systemctl enable|disable`; the process
    /// backend records it for the agent's next start, over `autostart`).
    async fn set_boot(&self, _enabled: bool) -> Result<(), UnitError> {
        Ok(())
    }
}
