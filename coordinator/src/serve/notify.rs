//! serve under a `Type=notify` unit: `READY=1` once every job is scheduled
//! and the metrics listener bound, `STATUS=`, `STOPPING=1`, and the watchdog
//! (`WATCHDOG=1` every half `WATCHDOG_USEC` while the scheduler runs). The
//! agent's pattern (agent/src/notify.rs), kept here because the coordinator
//! does not depend on the agent crate. No-ops without `NOTIFY_SOCKET`.

use std::sync::Weak;
use std::time::Duration;

use sd_notify::NotifyState;

/// `READY=1` with a `STATUS=` line.
pub fn ready(status: &str) {
    send("READY=1", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line.
pub fn status(status: &str) {
    send("STATUS", &[NotifyState::Status(status)]);
}

/// `STOPPING=1` with a `STATUS=` line.
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

/// Half of `WATCHDOG_USEC` when systemd set one (at least 10 ms), else None.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|t| (t / 2).max(Duration::from_millis(10)))
}

/// Pings `WATCHDOG=1` every `period` while `scheduler` (a token the
/// scheduler holds) is alive; returns when `stop` turns true.
pub async fn watchdog(period: Duration, scheduler: Weak<()>, mut stop: tokio::sync::watch::Receiver<bool>) {
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
        if scheduler.strong_count() == 0 {
            tracing::error!("the scheduler has ended: no more watchdog pings (systemd restarts serve)");
            return;
        }
        send("WATCHDOG=1", &[NotifyState::Watchdog]);
    }
}
