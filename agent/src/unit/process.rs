//! The process backend: the agent runs etcd as its child, with the
//! `ETCD_*` variables of the environment file, and watches it exit. The
//! binary is the config's `unit.etcd_binary` unless `set_binary` (an etcd
//! upgrade) recorded another in the state dir ([`BINARY_FILE`]), read at
//! start-up and used from the next start.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{Mutex, watch};

use super::{KILL_WAIT, UnitBackend, UnitError, UnitInfo, UnitState, killed_detail};
use crate::envfile::EnvFile;

/// What happens when etcd exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Leave it stopped (state `failed`), like systemd's `Restart=no`.
    Never,
    /// Start it again after the delay when it exits abnormally.
    OnFailure(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Running {
        pid: u32,
    },
    Stopping {
        pid: u32,
    },
    /// Exited; `requested` when we stopped it.
    Exited {
        detail: String,
        requested: bool,
        success: bool,
    },
}

#[derive(Debug)]
struct Shared {
    phase: watch::Sender<Phase>,
    /// Serializes start/stop so two requests cannot race.
    op: Mutex<()>,
}

/// etcd supervised as a child process.
#[derive(Debug, Clone)]
pub struct ProcessUnit {
    binary: PathBuf,
    env_file: PathBuf,
    log_file: Option<PathBuf>,
    restart: RestartPolicy,
    shared: Arc<Shared>,
    /// Where `set_boot` records whether etcd starts with the agent.
    boot_file: Option<PathBuf>,
    /// The binary `set_binary` chose over `binary` (the config's).
    chosen: Arc<std::sync::Mutex<Option<PathBuf>>>,
    /// Where `set_binary` records it.
    binary_file: Option<PathBuf>,
}

/// The file in the agent's state dir that records `set_binary`.
pub const BINARY_FILE: &str = "etcd-binary";

/// The file in the agent's state dir that records `set_boot`.
pub const BOOT_FILE: &str = "etcd-starts-with-agent";

/// Whether etcd starts with the agent, as `set_boot` last recorded it in
/// `state_dir` (`None`: never recorded, the config's `autostart` decides).
pub fn recorded_boot(state_dir: &std::path::Path) -> Option<bool> {
    match std::fs::read_to_string(state_dir.join(BOOT_FILE)).ok()?.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

impl ProcessUnit {
    pub fn new(
        binary: PathBuf,
        env_file: PathBuf,
        log_file: Option<PathBuf>,
        restart: RestartPolicy,
    ) -> Self {
        let (phase, _) = watch::channel(Phase::NotStarted);
        ProcessUnit {
            binary,
            env_file,
            log_file,
            restart,
            shared: Arc::new(Shared {
                phase,
                op: Mutex::new(()),
            }),
            boot_file: None,
            chosen: Arc::default(),
            binary_file: None,
        }
    }

    /// Records `set_binary` in `state_dir` ([`BINARY_FILE`]), and runs the
    /// binary recorded there (by an earlier upgrade) instead of the config's.
    pub fn with_binary_record(mut self, state_dir: &std::path::Path) -> Self {
        let path = state_dir.join(BINARY_FILE);
        let recorded = std::fs::read_to_string(&path)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| t.starts_with('/'))
            .map(PathBuf::from);
        if let Some(recorded) = &recorded {
            tracing::info!(binary = %recorded.display(), file = %path.display(), "etcd runs the binary an upgrade recorded");
        }
        self.chosen = Arc::new(std::sync::Mutex::new(recorded));
        self.binary_file = Some(path);
        self
    }

    /// The binary the next start runs.
    fn current_binary(&self) -> PathBuf {
        self.chosen
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| self.binary.clone())
    }

    /// Records `set_boot` in `state_dir` (see [`recorded_boot`]).
    pub fn with_boot_record(mut self, state_dir: &std::path::Path) -> Self {
        self.boot_file = Some(state_dir.join(BOOT_FILE));
        self
    }

    fn spawn(&self) -> Result<u32, UnitError> {
        let binary = self.current_binary();
        if !binary.is_file() {
            return Err(UnitError::BinaryMissing { path: binary });
        }
        let env = EnvFile::load(&self.env_file)?;
        // env_clear: etcd gets PATH and the env file's ETCD_* only (never
        // NOTIFY_SOCKET/WATCHDOG_*: see crate::notify).
        let mut cmd = crate::notify::child_command(&binary);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.vars().filter(|(k, _)| k.starts_with("ETCD_")))
            .stdin(Stdio::null())
            .kill_on_drop(false);
        if let Some(log) = &self.log_file {
            let open = || std::fs::OpenOptions::new().create(true).append(true).open(log);
            let start_err = |e: std::io::Error| UnitError::Start {
                unit: self.unit(),
                reason: format!("cannot open log file {}: {e}", log.display()),
            };
            cmd.stdout(open().map_err(start_err)?)
                .stderr(open().map_err(start_err)?);
        }
        let mut child = cmd.spawn().map_err(|e| UnitError::Start {
            unit: self.unit(),
            reason: e.to_string(),
        })?;
        let pid = child.id().unwrap_or_default();
        self.shared.phase.send_replace(Phase::Running { pid });
        let this = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            this.on_exit(status).await;
        });
        tracing::info!(pid, binary = %binary.display(), "started etcd");
        Ok(pid)
    }

    async fn on_exit(&self, status: std::io::Result<ExitStatus>) {
        let requested = matches!(*self.shared.phase.borrow(), Phase::Stopping { .. });
        let (detail, success) = match status {
            Ok(s) => (describe_exit(s), s.success()),
            Err(e) => (format!("lost track of etcd: {e}"), false),
        };
        if requested {
            tracing::info!(%detail, "etcd stopped");
        } else {
            tracing::warn!(%detail, "etcd exited on its own");
        }
        self.shared.phase.send_replace(Phase::Exited {
            detail,
            requested,
            success,
        });
        if let (false, RestartPolicy::OnFailure(delay)) = (requested || success, self.restart) {
            tokio::time::sleep(delay).await;
            let _guard = self.shared.op.lock().await;
            // Only if nobody started or stopped it meanwhile.
            if matches!(
                *self.shared.phase.borrow(),
                Phase::Exited { requested: false, .. }
            ) && let Err(e) = self.spawn()
            {
                tracing::error!(error = %e, "restarting etcd failed");
            }
        }
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown signal");
            format!("killed by signal {sig} ({name})")
        }
        _ => "exited".to_string(),
    }
}

#[async_trait::async_trait]
impl UnitBackend for ProcessUnit {
    fn backend(&self) -> &'static str {
        "process"
    }

    async fn set_boot(&self, enabled: bool) -> Result<(), UnitError> {
        let Some(path) = &self.boot_file else {
            return Ok(());
        };
        let text = if enabled { "yes\n" } else { "no\n" };
        crate::statefile::write_atomic(path, text.as_bytes()).map_err(|source| UnitError::BootFile {
            path: path.clone(),
            source,
        })
    }

    fn unit(&self) -> String {
        self.current_binary().display().to_string()
    }

    async fn binary(&self) -> Option<PathBuf> {
        Some(self.current_binary())
    }

    async fn set_binary(&self, path: Option<PathBuf>) -> Result<PathBuf, UnitError> {
        let _guard = self.shared.op.lock().await;
        let previous = self.current_binary();
        if let Some(file) = &self.binary_file {
            let result = match &path {
                Some(p) => crate::statefile::write_atomic(file, format!("{}\n", p.display()).as_bytes()),
                None => match std::fs::remove_file(file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            result.map_err(|e| UnitError::BinarySwitch {
                unit: previous.display().to_string(),
                reason: format!("cannot record it in {}: {e}", file.display()),
            })?;
        }
        if let Ok(mut chosen) = self.chosen.lock() {
            *chosen = path;
        }
        tracing::info!(previous = %previous.display(), binary = %self.current_binary().display(), "etcd binary switched (from the next start)");
        Ok(previous)
    }

    async fn info(&self) -> UnitInfo {
        match self.shared.phase.borrow().clone() {
            Phase::NotStarted => UnitInfo {
                state: UnitState::Inactive,
                main_pid: None,
                detail: "not started".to_string(),
                ..UnitInfo::EMPTY
            },
            Phase::Running { pid } => UnitInfo {
                state: UnitState::Active,
                main_pid: Some(pid),
                detail: String::new(),
                ..UnitInfo::EMPTY
            },
            Phase::Stopping { pid } => UnitInfo {
                state: UnitState::Deactivating,
                main_pid: Some(pid),
                detail: "stopping".to_string(),
                ..UnitInfo::EMPTY
            },
            Phase::Exited {
                detail,
                requested,
                success,
            } => {
                let state = if requested || success {
                    UnitState::Inactive
                } else {
                    UnitState::Failed
                };
                UnitInfo {
                    state,
                    main_pid: None,
                    detail,
                    ..UnitInfo::EMPTY
                }
            }
        }
    }

    #[tracing::instrument(name = "unit.start", skip_all, fields(backend = "process"))]
    async fn start(&self) -> Result<UnitInfo, UnitError> {
        let _guard = self.shared.op.lock().await;
        let running = matches!(
            *self.shared.phase.borrow(),
            Phase::Running { .. } | Phase::Stopping { .. }
        );
        if !running {
            self.spawn()?;
        }
        Ok(self.info().await)
    }

    #[tracing::instrument(name = "unit.stop", skip_all, fields(backend = "process", graceful_secs = graceful.as_secs()))]
    async fn stop(&self, graceful: Duration) -> Result<UnitInfo, UnitError> {
        let _guard = self.shared.op.lock().await;
        let pid = match *self.shared.phase.borrow() {
            Phase::Running { pid } | Phase::Stopping { pid } => pid,
            Phase::NotStarted | Phase::Exited { .. } => {
                return Ok(UnitInfo {
                    state: UnitState::Inactive,
                    main_pid: None,
                    detail: "not running".to_string(),
                    ..UnitInfo::EMPTY
                });
            }
        };
        let mut rx = self.shared.phase.subscribe();
        self.shared.phase.send_replace(Phase::Stopping { pid });
        let signal = |sig| {
            let raw = i32::try_from(pid).unwrap_or(i32::MAX);
            match kill(Pid::from_raw(raw), sig) {
                // Gone already: its exit is on the way.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(e) => Err(UnitError::Signal {
                    unit: self.unit(),
                    pid,
                    reason: e.to_string(),
                }),
            }
        };
        signal(Signal::SIGTERM)?;
        let exited = |p: &Phase| matches!(p, Phase::Exited { .. });
        if tokio::time::timeout(graceful, rx.wait_for(exited)).await.is_ok() {
            return Ok(self.info().await);
        }
        tracing::warn!(
            pid,
            ?graceful,
            "etcd did not stop gracefully in time; killing it (SIGKILL)"
        );
        signal(Signal::SIGKILL)?;
        if tokio::time::timeout(KILL_WAIT, rx.wait_for(exited))
            .await
            .is_err()
        {
            return Err(UnitError::StopTimeout {
                unit: self.unit(),
                graceful,
            });
        }
        let mut info = self.info().await;
        info.detail = format!("{} ({})", killed_detail(graceful), info.detail);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(binary: &str, env: &str, restart: RestartPolicy) -> (tempfile::TempDir, ProcessUnit) {
        let dir = tempfile::tempdir().expect("tempdir");
        let env_file = dir.path().join("etcd.env");
        std::fs::write(&env_file, env).expect("write env");
        (
            dir,
            ProcessUnit::new(PathBuf::from(binary), env_file, None, restart),
        )
    }

    #[tokio::test]
    async fn enabling_and_disabling_is_remembered_for_the_next_agent_start() {
        let (dir, u) = unit("/bin/true", "", RestartPolicy::Never);
        assert_eq!(
            recorded_boot(dir.path()),
            None,
            "nothing recorded: the config decides"
        );
        u.set_boot(true)
            .await
            .expect("no record kept without a state dir");
        assert_eq!(recorded_boot(dir.path()), None);
        let u = u.with_boot_record(dir.path());
        u.set_boot(true).await.expect("enable");
        assert_eq!(recorded_boot(dir.path()), Some(true));
        u.set_boot(false).await.expect("disable");
        assert_eq!(recorded_boot(dir.path()), Some(false));
        std::fs::write(dir.path().join(BOOT_FILE), "garbage").expect("write");
        assert_eq!(
            recorded_boot(dir.path()),
            None,
            "an unreadable record falls back to the config"
        );
    }

    #[tokio::test]
    async fn starts_stops_and_reports_states() {
        let (_d, u) = unit("/bin/sleep", "", RestartPolicy::Never);
        assert_eq!(u.info().await.state, UnitState::Inactive);
        // `sleep` without arguments fails at once: the state says failed.
        u.start().await.expect("start");
        let mut rx = u.shared.phase.subscribe();
        rx.wait_for(|p| matches!(p, Phase::Exited { .. }))
            .await
            .expect("exit");
        let info = u.info().await;
        assert_eq!(info.state, UnitState::Failed);
        assert_eq!(info.detail, "exited with status 1");
    }

    #[tokio::test]
    async fn stop_is_graceful_and_idempotent() {
        let (dir, _) = unit("/bin/true", "", RestartPolicy::Never);
        let script = dir.path().join("fake-etcd");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let env_file = dir.path().join("etcd.env");
        std::fs::write(&env_file, "ETCD_NAME=x\n").expect("env");
        let u = ProcessUnit::new(script, env_file, None, RestartPolicy::Never);
        let info = u.start().await.expect("start");
        assert_eq!(info.state, UnitState::Active);
        assert!(info.main_pid.is_some());
        let info = u.stop(Duration::from_secs(5)).await.expect("stop");
        assert_eq!(info.state, UnitState::Inactive);
        assert!(info.detail.contains("SIGTERM"), "{}", info.detail);
        assert_eq!(
            u.stop(Duration::from_secs(1)).await.expect("again").state,
            UnitState::Inactive
        );
    }

    #[tokio::test]
    async fn a_stop_that_hangs_is_killed_after_the_graceful_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-etcd");
        // Ignores SIGTERM, like an etcd whose graceful stop hangs.
        std::fs::write(&script, "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n").expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let env_file = dir.path().join("etcd.env");
        std::fs::write(&env_file, "ETCD_NAME=x\n").expect("env");
        let u = ProcessUnit::new(script, env_file, None, RestartPolicy::Never);
        u.start().await.expect("start");
        // Let the shell install its trap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let info = u.stop(Duration::from_millis(500)).await.expect("killed");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(info.state, UnitState::Inactive);
        assert!(
            info.detail.starts_with("killed after the 0.5 s graceful stop")
                && info.detail.contains("SIGKILL"),
            "{}",
            info.detail
        );
        assert_eq!(
            info.describe(),
            format!("stopped ({})", info.detail),
            "the words a failed step prints"
        );
    }

    #[tokio::test]
    async fn missing_binary_says_how_to_install() {
        let (_d, u) = unit("/nonexistent/etcd", "", RestartPolicy::Never);
        let err = u.start().await.expect_err("missing");
        assert!(err.to_string().contains("apt-get install etcd-server"), "{err}");
    }
}
