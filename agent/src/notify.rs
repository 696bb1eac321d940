//! The agent under a `Type=notify` unit: sd_notify (`READY=1` once the
//! listeners are bound, `STATUS=`, `STOPPING=1`), the watchdog task that pings
//! at half of `WATCHDOG_USEC`, and [`child_command`], the one way the agent
//! starts a child process: without the service manager's variables, which
//! belong to the agent's main process alone (etcd speaks sd_notify itself).
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is unset (agents run as
//! plain processes in the sandbox and the 127.x tests); a failed send is
//! logged, never fatal.

use std::ffi::OsStr;
use std::sync::Weak;
use std::time::Duration;

use sd_notify::NotifyState;

/// The variables systemd gives the service's main process: the notify
/// socket and the watchdog. A child that inherits them could report the
/// agent ready, or ping the agent's watchdog while the agent is wedged.
pub const SERVICE_MANAGER_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A command for `program` that does not pass [`SERVICE_MANAGER_ENV`] on.
/// Every child the agent spawns (etcd, etcdutl/etcdctl, journalctl) starts
/// from here; the process environment itself is never changed (that needs
/// `unsafe`, forbidden in this crate).
pub fn child_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for key in SERVICE_MANAGER_ENV {
        cmd.env_remove(key);
    }
    cmd
}

/// `READY=1` with a `STATUS=` line: the agent accepts connections.
pub fn ready(status: &str) {
    send("READY=1", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line (`systemctl status` shows the latest).
pub fn status(status: &str) {
    send("STATUS", &[NotifyState::Status(status)]);
}

/// `STOPPING=1` with a `STATUS=` line: the agent is shutting down.
pub fn stopping(status: &str) {
    send(
        "STOPPING=1",
        &[NotifyState::Stopping, NotifyState::Status(status)],
    );
}

fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot send {what} to systemd (NOTIFY_SOCKET)");
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC` when systemd
/// set one for this process (`WatchdogSec=`), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(watchdog_period)
}

/// Half the watchdog timeout, and at least 10 ms.
fn watchdog_period(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(10))
}

/// Pings `WATCHDOG=1` every `period` while `server` (a token the gRPC
/// server task holds) is alive; returns when `stop` turns true. A ping
/// proves the async runtime still runs tasks; once the server task has
/// ended the pings stop, so systemd restarts an agent whose API is gone
/// even if the process lingers.
pub async fn watchdog(period: Duration, server: Weak<()>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        if server.strong_count() == 0 {
            tracing::error!(
                "the agent API task has ended: no more watchdog pings (systemd restarts the agent)"
            );
            return;
        }
        send("WATCHDOG=1", &[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn children_do_not_inherit_the_service_manager_variables() {
        let cmd = child_command("/bin/true");
        let removed: Vec<&OsStr> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key)
            .collect();
        for key in SERVICE_MANAGER_ENV {
            assert!(
                removed.contains(&OsStr::new(key)),
                "{key} not removed: {removed:?}"
            );
        }
    }

    #[test]
    fn the_watchdog_pings_at_half_the_timeout() {
        assert_eq!(watchdog_period(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(
            watchdog_period(Duration::from_micros(1)),
            Duration::from_millis(10)
        );
    }

    #[tokio::test]
    async fn the_watchdog_stops_with_the_server_or_on_request() {
        let server = std::sync::Arc::new(());
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watchdog(
            Duration::from_millis(10),
            std::sync::Arc::downgrade(&server),
            stopping.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!task.is_finished());
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on request")
            .expect("join");

        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watchdog(
            Duration::from_millis(10),
            std::sync::Arc::downgrade(&server),
            stopping,
        ));
        drop(server);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops once the server is gone")
            .expect("join");
    }
}
