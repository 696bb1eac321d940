//! How etcd runs on the host: a trait with one implementation per backend.
//!
//! - [`process::ProcessUnit`]: the agent starts and supervises etcd itself,
//!   from the same environment file etcd.service would read (sandbox, hosts
//!   without systemd).
//! - [`systemd::SystemdUnit`]: etcd.service over systemd's D-Bus API; its
//!   binary switch is a drop-in ([`dropin`]) overriding ExecStart.
//!
//! A stop is graceful (SIGTERM, systemd's stop job) for at most the time it
//! is given, then the unit is killed (SIGKILL, systemd's KillUnit): a stop
//! that hangs (etcd blocked on a half-dead peer) still ends, and says it was
//! killed in [`UnitInfo::detail`].

pub mod dropin;
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

/// How long a unit may take to be gone after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// A duration for messages: `30 s`, `1.5 s`.
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The `detail` of a unit that was killed after its graceful stop.
pub fn killed_detail(graceful: Duration) -> String {
    format!("killed after the {} graceful stop", seconds(graceful))
}

impl UnitInfo {
    /// The state in words, for messages: `stopped`, `running (pid 42)`,
    /// `failed (exited with status 1)`, with the detail when there is one.
    pub fn describe(&self) -> String {
        let words = match self.state {
            UnitState::Active => "running",
            UnitState::Inactive => "stopped",
            UnitState::Activating => "starting",
            UnitState::Deactivating => "stopping",
            UnitState::Failed => "failed",
        };
        let mut notes = Vec::new();
        if let Some(pid) = self.main_pid {
            notes.push(format!("pid {pid}"));
        }
        if !self.detail.is_empty() && self.detail != "not running" && self.detail != words {
            notes.push(self.detail.clone());
        }
        if notes.is_empty() {
            words.to_string()
        } else {
            format!("{words} ({})", notes.join(", "))
        }
    }
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
    #[error(
        "{unit} did not stop within its {} graceful stop, and was still running {} after SIGKILL",
        seconds(*graceful), seconds(KILL_WAIT)
    )]
    StopTimeout { unit: String, graceful: Duration },
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
    #[error("cannot switch the etcd binary of {unit}: {reason}")]
    BinarySwitch { unit: String, reason: String },
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
    /// Stops etcd gracefully for at most `graceful`, then kills it (SIGKILL)
    /// and waits up to [`KILL_WAIT`] for it to be gone. A kill is not an
    /// error: the unit is stopped, and `detail` says it was killed
    /// ([`killed_detail`]). Fails when it is still running after the kill.
    async fn stop(&self, graceful: Duration) -> Result<UnitInfo, UnitError>;
    /// Whether etcd starts at boot (`systemctl enable|disable`; the process
    /// backend records it for the agent's next start, over `autostart`).
    async fn set_boot(&self, _enabled: bool) -> Result<(), UnitError> {
        Ok(())
    }
    /// The etcd binary the unit runs (`None`: the backend does not say).
    async fn binary(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The binary `set_binary(None)` goes back to (`None`: the agent
    /// config's `unit.etcd_binary`). The systemd backend: what the unit runs
    /// without the agent's drop-in.
    async fn own_binary(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The binary the unit runs from its next start (`None`: the
    /// configured one again, the unit's own for systemd); returns the
    /// previous one. The process backend records it in the state dir, the
    /// systemd backend writes a drop-in overriding ExecStart and reloads
    /// systemd; a backend without a switch refuses ([`UnitError::BinarySwitch`]).
    async fn set_binary(&self, _path: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, UnitError> {
        Err(UnitError::BinarySwitch {
            unit: self.unit(),
            reason: format!("the {} backend cannot switch etcd's binary", self.backend()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_in_words_for_messages() {
        let info = |state, main_pid, detail: &str| UnitInfo {
            state,
            main_pid,
            detail: detail.to_string(),
            ..UnitInfo::EMPTY
        };
        assert_eq!(
            info(UnitState::Active, Some(42), "").describe(),
            "running (pid 42)"
        );
        assert_eq!(
            info(UnitState::Deactivating, Some(42), "stopping").describe(),
            "stopping (pid 42)"
        );
        assert_eq!(
            info(UnitState::Inactive, None, "not running").describe(),
            "stopped"
        );
        assert_eq!(
            info(UnitState::Inactive, None, &killed_detail(Duration::from_secs(30))).describe(),
            "stopped (killed after the 30 s graceful stop)"
        );
        assert_eq!(
            info(UnitState::Failed, None, "exited with status 1").describe(),
            "failed (exited with status 1)"
        );
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
