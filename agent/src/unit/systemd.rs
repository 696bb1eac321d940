//! The systemd backend: etcd.service through systemd's D-Bus API
//! (`org.freedesktop.systemd1` on the system bus).
//!
//! Start and stop are race-free: the connection is subscribed once, the
//! JobRemoved stream is created before StartUnit/StopUnit ("replace" mode), the
//! job path returned is matched, and then the unit's ActiveState/SubState is
//! confirmed within the caller's timeout. A stop job still running after its
//! graceful time is ended with KillUnit SIGKILL. Failures name the unit, the
//! job result and the state reached, with the unit's last journal lines.
//!
//! The binary switch (`etcdops upgrade`): the drop-in of `dropin.rs` in
//! `/etc/systemd/system/<unit>.d/`, written or removed, then Manager.Reload
//! (daemon-reload), then the unit's ExecStart read back over D-Bus must run
//! the binary asked for; it takes effect at the unit's next start.

use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

use super::dropin::{self, ExecCommand};
use super::{KILL_WAIT, UnitBackend, UnitError, UnitInfo, UnitState, killed_detail};

/// How many journal lines a failure carries.
pub const LOG_LINES: usize = 20;
/// Bound on reading the journal.
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a D-Bus call that is not a job wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a job was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Start,
    Stop,
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
        })
    }
}

/// Errors of the systemd backend; each names the unit.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "cannot connect to the system D-Bus at {address} (is systemd running on this host?): {source}; \
         set unit.backend = \"process\" on hosts without systemd"
    )]
    NoSystemBus {
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("D-Bus call {call} for {unit} failed: {source}")]
    Bus {
        unit: String,
        call: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("D-Bus call {call} for {unit} did not answer within {timeout:?}")]
    CallTimeout {
        unit: String,
        call: &'static str,
        timeout: Duration,
    },
    #[error("{kind} job of {unit} ended with result \"{result}\"; the unit is {state}/{sub_state}{}", log_suffix(.log_lines))]
    JobFailed {
        unit: String,
        kind: JobKind,
        result: String,
        state: String,
        sub_state: String,
        log_lines: Vec<String>,
    },
    #[error("{kind} job of {unit} did not finish within {timeout:?}; the unit is {state}/{sub_state}{}", log_suffix(.log_lines))]
    JobTimeout {
        unit: String,
        kind: JobKind,
        timeout: Duration,
        state: String,
        sub_state: String,
        log_lines: Vec<String>,
    },
    #[error("{kind} job of {unit} finished (\"done\") but the unit is {state}/{sub_state}, not {expected}{}", log_suffix(.log_lines))]
    WrongState {
        unit: String,
        kind: JobKind,
        expected: &'static str,
        state: String,
        sub_state: String,
        log_lines: Vec<String>,
    },
    #[error("{unit} cannot be managed: systemd reports LoadState {load_state} (is the unit file installed?)")]
    NotLoaded { unit: String, load_state: String },
}

fn log_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last journal lines:\n{}", lines.join("\n"))
    }
}

impl SystemdError {
    /// True when the caller may retry later (the bus or systemd is busy or
    /// unreachable), false when the unit itself failed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SystemdError::NoSystemBus { .. } | SystemdError::Bus { .. } | SystemdError::CallTimeout { .. }
        )
    }
}

/// One unit (etcd.service) managed over the system bus.
#[derive(Debug)]
pub struct SystemdUnit {
    conn: zbus::Connection,
    name: String,
    /// Serializes start/stop so two requests cannot race each other's jobs.
    op: tokio::sync::Mutex<()>,
}

impl SystemdUnit {
    /// Connects to the system bus and subscribes to systemd's job signals.
    pub async fn connect(name: impl Into<String>) -> Result<SystemdUnit, SystemdError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(|source| SystemdError::NoSystemBus {
                address: "/run/dbus/system_bus_socket".to_string(),
                source,
            })?;
        SystemdUnit::subscribed(conn, name.into()).await
    }

    /// Connects to the systemd listening at a D-Bus `address`
    /// (`unix:path=...`), e.g. a container's system bus from its host (tests).
    /// [`SystemdUnit::journal`] still reads the local journal.
    pub async fn connect_address(
        address: &str,
        name: impl Into<String>,
    ) -> Result<SystemdUnit, SystemdError> {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|source| SystemdError::NoSystemBus {
                address: address.to_string(),
                source,
            })?;
        SystemdUnit::subscribed(conn, name.into()).await
    }

    async fn subscribed(conn: zbus::Connection, name: String) -> Result<SystemdUnit, SystemdError> {
        let unit = SystemdUnit {
            conn,
            name,
            op: tokio::sync::Mutex::new(()),
        };
        let manager = unit.manager().await?;
        // Signals are only sent to subscribed connections; once per connection.
        unit.call("Subscribe", manager.subscribe()).await?;
        Ok(unit)
    }

    /// The unit's name, e.g. `etcd.service`.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>, SystemdError> {
        ManagerProxy::new(&self.conn)
            .await
            .map_err(|source| self.bus_error("Manager", source))
    }

    fn bus_error(&self, call: &'static str, source: zbus::Error) -> SystemdError {
        SystemdError::Bus {
            unit: self.name.clone(),
            call,
            source,
        }
    }

    /// A D-Bus call under [`CALL_TIMEOUT`].
    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = zbus::Result<T>>,
    ) -> Result<T, SystemdError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|source| self.bus_error(call, source)),
            Err(_) => Err(SystemdError::CallTimeout {
                unit: self.name.clone(),
                call,
                timeout: CALL_TIMEOUT,
            }),
        }
    }

    /// The unit's object path (LoadUnit: works whether or not it is loaded).
    async fn unit_path(&self) -> Result<zbus::OwnedObjectPath, SystemdError> {
        let manager = self.manager().await?;
        self.call("LoadUnit", manager.load_unit(self.name.clone())).await
    }

    /// ActiveState, SubState, LoadState, MainPID and the service's Result.
    async fn read(&self) -> Result<Snapshot, SystemdError> {
        let path = self.unit_path().await?;
        let unit = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| self.bus_error("Unit", source))?;
        let service = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| self.bus_error("Service", source))?;
        let active_state = self.call("Get ActiveState", unit.active_state()).await?;
        let sub_state = self.call("Get SubState", unit.sub_state()).await?;
        let load_state = self.call("Get LoadState", unit.load_state()).await?;
        // Service properties are absent on other unit types: not an error.
        let main_pid = service.main_pid().await.unwrap_or(0);
        let result = service.result().await.unwrap_or_default();
        let exec_status = service.exec_main_status().await.unwrap_or(0);
        Ok(Snapshot {
            active_state,
            sub_state,
            load_state,
            main_pid,
            result,
            exec_status,
        })
    }

    /// The unit's last `n` journal lines (`journalctl -u UNIT -n N --no-pager -o cat`).
    pub async fn journal(&self, n: usize) -> Vec<String> {
        let mut cmd = crate::notify::child_command("journalctl");
        cmd.args(["-u", &self.name, "-n", &n.to_string(), "--no-pager", "-o", "cat"])
            .kill_on_drop(true);
        match tokio::time::timeout(JOURNAL_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Ok(Ok(out)) => vec![format!(
                "(journalctl exited with {}: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )],
            Ok(Err(e)) => vec![format!("(cannot run journalctl: {e})")],
            Err(_) => vec![format!("(journalctl did not answer within {JOURNAL_TIMEOUT:?})")],
        }
    }

    /// Runs a start or stop job and waits for it, then confirms the state.
    async fn run_job(&self, kind: JobKind, timeout: Duration) -> Result<UnitInfo, UnitError> {
        let _guard = self.op.lock().await;
        let deadline = Instant::now() + timeout;
        let manager = self.manager().await?;
        let snapshot = self.read().await?;
        if snapshot.load_state == "not-found" {
            return Err(SystemdError::NotLoaded {
                unit: self.name.clone(),
                load_state: snapshot.load_state,
            }
            .into());
        }
        // The stream exists before the job does: its JobRemoved cannot be missed.
        let mut removed = self
            .call("JobRemoved match", manager.receive_job_removed())
            .await?;
        let job = match kind {
            JobKind::Start => {
                self.call(
                    "StartUnit",
                    manager.start_unit(self.name.clone(), "replace".into()),
                )
                .await?
            }
            JobKind::Stop => {
                self.call("StopUnit", manager.stop_unit(self.name.clone(), "replace".into()))
                    .await?
            }
        };
        tracing::info!(unit = %self.name, %kind, job = %job.as_str(), "systemd job queued");
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job().as_str() == job.as_str() {
                    return Some(args.result().to_string());
                }
            }
            None
        };
        tokio::pin!(wait);
        let mut killed = false;
        let mut deadline = deadline;
        let result = loop {
            match tokio::time::timeout_at(deadline, &mut wait).await {
                Ok(Some(result)) => break result,
                Ok(None) => {
                    return Err(self
                        .bus_error("JobRemoved", zbus::Error::Failure("signal stream ended".into()))
                        .into());
                }
                // A stop that hangs: kill the unit's processes; the same stop job then ends.
                Err(_) if kind == JobKind::Stop && !killed => {
                    tracing::warn!(unit = %self.name, ?timeout, "the stop job did not finish in time; KillUnit SIGKILL");
                    self.call(
                        "KillUnit",
                        manager.kill_unit(
                            self.name.clone(),
                            "all".into(),
                            nix::sys::signal::Signal::SIGKILL as i32,
                        ),
                    )
                    .await?;
                    killed = true;
                    deadline = Instant::now() + KILL_WAIT;
                }
                Err(_) => {
                    let s = self.read().await?;
                    if killed {
                        tracing::error!(unit = %self.name, state = %s.active_state, sub_state = %s.sub_state, "still running after KillUnit SIGKILL");
                        return Err(UnitError::StopTimeout {
                            unit: self.name.clone(),
                            graceful: timeout,
                        });
                    }
                    return Err(SystemdError::JobTimeout {
                        unit: self.name.clone(),
                        kind,
                        timeout,
                        state: s.active_state,
                        sub_state: s.sub_state,
                        log_lines: self.journal(LOG_LINES).await,
                    }
                    .into());
                }
            }
        };
        if result != "done" {
            let s = self.read().await?;
            return Err(SystemdError::JobFailed {
                unit: self.name.clone(),
                kind,
                result,
                state: s.active_state,
                sub_state: s.sub_state,
                log_lines: self.journal(LOG_LINES).await,
            }
            .into());
        }
        // The job is done; confirm the state it should have reached.
        let (expected, reached): (&'static str, fn(&Snapshot) -> bool) = match kind {
            JobKind::Start => ("active/running", |s| {
                s.active_state == "active" && s.sub_state == "running"
            }),
            JobKind::Stop => ("inactive or failed", |s| {
                s.active_state == "inactive" || s.active_state == "failed"
            }),
        };
        loop {
            let s = self.read().await?;
            if reached(&s) {
                let mut info = self.to_info(s).await;
                if killed {
                    info.detail = match info.detail.as_str() {
                        "" => killed_detail(timeout),
                        other => format!("{} ({other})", killed_detail(timeout)),
                    };
                }
                return Ok(info);
            }
            if Instant::now() >= deadline {
                return Err(SystemdError::WrongState {
                    unit: self.name.clone(),
                    kind,
                    expected,
                    state: s.active_state,
                    sub_state: s.sub_state,
                    log_lines: self.journal(LOG_LINES).await,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn to_info(&self, s: Snapshot) -> UnitInfo {
        let state = match s.active_state.as_str() {
            "active" | "reloading" => UnitState::Active,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            "failed" => UnitState::Failed,
            _ => UnitState::Inactive,
        };
        // The journal tells why a unit is down or restarting.
        let log_lines = if state == UnitState::Failed || s.sub_state == "auto-restart" {
            self.journal(LOG_LINES).await
        } else {
            Vec::new()
        };
        let detail = match s.result.as_str() {
            "" | "success" => String::new(),
            "exit-code" => format!("result exit-code (status {})", s.exec_status),
            other => format!("result {other}"),
        };
        UnitInfo {
            state,
            main_pid: (s.main_pid != 0).then_some(s.main_pid),
            detail,
            sub_state: s.sub_state,
            log_lines,
        }
    }

    /// `systemctl enable UNIT`: the changes made, as (type, file, destination).
    pub async fn enable(&self) -> Result<Vec<(String, String, String)>, SystemdError> {
        let manager = self.manager().await?;
        let (_, changes) = self
            .call(
                "EnableUnitFiles",
                manager.enable_unit_files(vec![self.name.clone()], false, false),
            )
            .await?;
        Ok(changes)
    }

    /// `systemctl disable UNIT`: the changes made, as (type, file, destination).
    pub async fn disable(&self) -> Result<Vec<(String, String, String)>, SystemdError> {
        let manager = self.manager().await?;
        self.call(
            "DisableUnitFiles",
            manager.disable_unit_files(vec![self.name.clone()], false),
        )
        .await
    }

    /// `systemctl daemon-reload` (after unit files or drop-ins change).
    pub async fn daemon_reload(&self) -> Result<(), SystemdError> {
        let manager = self.manager().await?;
        self.call("Reload", manager.reload()).await
    }

    /// Where the binary switch's drop-in goes
    /// (`/etc/systemd/system/<unit>.d/90-etcdops-binary.conf`).
    pub fn dropin_path(&self) -> std::path::PathBuf {
        dropin::path(std::path::Path::new(dropin::UNIT_DIR), &self.name)
    }

    /// The unit's ExecStart commands as systemd has them loaded (the
    /// service's `ExecStart` property: argv with variables unexpanded).
    pub async fn exec_start(&self) -> Result<Vec<ExecCommand>, SystemdError> {
        let path = self.unit_path().await?;
        let service = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| self.bus_error("Service", source))?;
        let commands = self.call("Get ExecStart", service.exec_start()).await?;
        Ok(commands
            .into_iter()
            .map(|(path, argv, ignore_failure, ..)| ExecCommand {
                path,
                argv,
                ignore_failure,
            })
            .collect())
    }

    /// The unit's one ExecStart command, or why the switch cannot work with it.
    async fn single_exec_start(&self) -> Result<ExecCommand, UnitError> {
        let mut commands = self.exec_start().await?;
        if commands.len() != 1 {
            return Err(self.switch_error(format!(
                "it has {} ExecStart= commands (systemd reports them over D-Bus); the binary switch \
                 replaces exactly one: check `systemctl cat {}`",
                commands.len(),
                self.name
            )));
        }
        Ok(commands.remove(0))
    }

    fn switch_error(&self, reason: String) -> UnitError {
        UnitError::BinarySwitch {
            unit: self.name.clone(),
            reason,
        }
    }
}

/// The properties read in one go.
#[derive(Debug, Clone)]
struct Snapshot {
    active_state: String,
    sub_state: String,
    load_state: String,
    main_pid: u32,
    result: String,
    exec_status: i32,
}

#[async_trait::async_trait]
impl UnitBackend for SystemdUnit {
    fn backend(&self) -> &'static str {
        "systemd"
    }

    fn unit(&self) -> String {
        self.name.clone()
    }

    async fn info(&self) -> UnitInfo {
        match self.read().await {
            Ok(s) => self.to_info(s).await,
            Err(e) => UnitInfo {
                state: UnitState::Inactive,
                main_pid: None,
                detail: format!("unknown: {e}"),
                sub_state: String::new(),
                log_lines: Vec::new(),
            },
        }
    }

    /// Starts the unit; returns once systemd reports it active/running (for
    /// etcd.service, `Type=notify`: etcd is serving).
    #[tracing::instrument(name = "unit.start", skip_all, fields(backend = "systemd"))]
    async fn start(&self) -> Result<UnitInfo, UnitError> {
        self.run_job(JobKind::Start, START_TIMEOUT).await
    }

    /// Stops the unit; when the stop job has not finished within
    /// `graceful` (systemd's own TimeoutStopSec may be longer), KillUnit
    /// SIGKILL ends it, and the same job is then awaited for [`KILL_WAIT`].
    #[tracing::instrument(name = "unit.stop", skip_all, fields(backend = "systemd", graceful_secs = graceful.as_secs()))]
    async fn stop(&self, graceful: Duration) -> Result<UnitInfo, UnitError> {
        self.run_job(JobKind::Stop, graceful).await
    }

    async fn set_boot(&self, enabled: bool) -> Result<(), UnitError> {
        if enabled {
            self.enable().await?;
        } else {
            self.disable().await?;
        }
        self.daemon_reload().await?;
        Ok(())
    }

    /// The binary of the unit's ExecStart as systemd has it loaded (`None`
    /// when the bus cannot say, or the unit has not exactly one).
    async fn binary(&self) -> Option<std::path::PathBuf> {
        match self.exec_start().await {
            Ok(commands) if commands.len() == 1 => Some(commands[0].path.clone().into()),
            Ok(commands) => {
                tracing::warn!(unit = %self.name, commands = commands.len(), "not exactly one ExecStart command");
                None
            }
            Err(e) => {
                tracing::warn!(unit = %self.name, error = %e, "cannot read ExecStart");
                None
            }
        }
    }

    /// The binary recorded in the agent's drop-in, else the ExecStart's.
    async fn own_binary(&self) -> Option<std::path::PathBuf> {
        match dropin::read(&self.dropin_path()) {
            Ok(Some(ours)) => Some(ours.unit_binary),
            Ok(None) => self.binary().await,
            Err(e) => {
                tracing::warn!(unit = %self.name, error = %e, "cannot read the binary switch's drop-in");
                None
            }
        }
    }

    /// Writes (or, back to the binary the unit runs without it, removes)
    /// the drop-in, reloads systemd and reads the unit's ExecStart back.
    /// Repeating a switch changes nothing; a file of that name not written
    /// by the agent is refused, never replaced.
    async fn set_binary(&self, path: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, UnitError> {
        let _guard = self.op.lock().await;
        let file = self.dropin_path();
        let current = self.single_exec_start().await?;
        let previous = std::path::PathBuf::from(&current.path);
        let ours = dropin::read(&file).map_err(|e| self.switch_error(e.to_string()))?;
        // What the unit runs without the drop-in: recorded in ours, else what it runs now.
        let unit_binary = ours
            .as_ref()
            .map_or_else(|| previous.clone(), |d| d.unit_binary.clone());
        let want = path.unwrap_or_else(|| unit_binary.clone());
        let changed = if want == unit_binary {
            dropin::remove(&file).map_err(|e| self.switch_error(e.to_string()))?
        } else if ours.as_ref().is_some_and(|d| d.binary == want) {
            false
        } else {
            let text = dropin::render(&self.name, &want, &unit_binary, &current)
                .map_err(|e| self.switch_error(e.to_string()))?;
            dropin::write(&file, &text).map_err(|e| self.switch_error(e.to_string()))?;
            true
        };
        if changed || previous != want {
            self.daemon_reload().await?;
        }
        let now = self.single_exec_start().await?;
        if std::path::Path::new(&now.path) != want {
            let drop_ins = self.drop_in_paths().await.unwrap_or_default();
            return Err(self.switch_error(format!(
                "after a daemon-reload it still runs {} instead of {} (its drop-ins: {}); a drop-in ordered \
                 after {} or the unit file itself sets ExecStart=: check `systemctl cat {}`",
                now.path,
                want.display(),
                if drop_ins.is_empty() {
                    "none".to_string()
                } else {
                    drop_ins.join(", ")
                },
                dropin::DROPIN_NAME,
                self.name
            )));
        }
        tracing::info!(
            unit = %self.name,
            previous = %previous.display(),
            binary = %want.display(),
            dropin = %file.display(),
            written = want != unit_binary,
            "etcd binary switched (from the next start)"
        );
        Ok(previous)
    }
}

impl SystemdUnit {
    /// The unit's drop-in files, for messages.
    async fn drop_in_paths(&self) -> Result<Vec<String>, SystemdError> {
        let path = self.unit_path().await?;
        let unit = UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| self.bus_error("Unit", source))?;
        self.call("Get DropInPaths", unit.drop_in_paths()).await
    }
}

/// How long a start job may take (etcd.service is ready only with quorum;
/// systemd's own TimeoutStartSec ends it before, by default 90 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_unit_result_state_and_log() {
        let e = SystemdError::JobFailed {
            unit: "etcd.service".into(),
            kind: JobKind::Start,
            result: "failed".into(),
            state: "failed".into(),
            sub_state: "failed".into(),
            log_lines: vec!["etcd: bad flag".into()],
        };
        let text = e.to_string();
        assert!(text.starts_with(
            "start job of etcd.service ended with result \"failed\"; the unit is failed/failed"
        ));
        assert!(text.ends_with("last journal lines:\netcd: bad flag"), "{text}");
        assert!(!e.is_transient());
        let e = SystemdError::CallTimeout {
            unit: "etcd.service".into(),
            call: "StartUnit",
            timeout: CALL_TIMEOUT,
        };
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn a_missing_bus_is_a_clear_error() {
        let err = SystemdUnit::connect_address("unix:path=/nonexistent/etcdops/bus", "etcd.service")
            .await
            .expect_err("no bus there");
        assert!(matches!(err, SystemdError::NoSystemBus { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/etcdops/bus") && text.contains("unit.backend = \"process\""),
            "{text}"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn no_log_lines_no_suffix() {
        assert_eq!(log_suffix(&[]), "");
    }
}
