//! The periodic light disk probe: every `[disk] probe_interval_secs`, 100
//! fdatasync'd writes of 2300 bytes beside the data dir, through the one
//! probe slot of [`DiskProber`] (a round is skipped while an on-demand
//! ProbeDisk runs). The latest result is kept for GetStatus and `/metrics`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::disk::DiskProber;
use crate::disk::probe::{self, ProbeOptions};

/// A light probe: 100 writes of etcd's typical WAL entry size.
pub const LIGHT_WRITES: u64 = 100;
pub const LIGHT_BLOCK_SIZE: u32 = 2300;
/// The longest one light probe may run.
const LIGHT_LIMIT: Duration = Duration::from_secs(30);

/// What the latest light probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskHealth {
    pub probed_at: SystemTime,
    pub threshold: Duration,
    pub outcome: Result<LightResult, String>,
}

/// The figures of a light probe that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightResult {
    pub writes: u64,
    pub p99: Duration,
    pub max: Duration,
}

impl DiskHealth {
    /// p99 at or under the threshold (false when the probe failed).
    pub fn within_threshold(&self) -> bool {
        self.outcome.as_ref().is_ok_and(|r| r.p99 <= self.threshold)
    }
}

/// The latest [`DiskHealth`], shared by the worker and its readers.
#[derive(Debug, Clone, Default)]
pub struct LatestDiskHealth(Arc<Mutex<Option<DiskHealth>>>);

impl LatestDiskHealth {
    pub fn get(&self) -> Option<DiskHealth> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, health: DiskHealth) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(health);
    }
}

/// The light probe's sizes.
pub fn light_options() -> ProbeOptions {
    // 100 × 2300 bytes is far inside ProbeOptions' limits.
    ProbeOptions::new(LIGHT_WRITES * u64::from(LIGHT_BLOCK_SIZE), LIGHT_BLOCK_SIZE).unwrap_or_default()
}

/// Runs light probes every `interval` (the first one interval after start,
/// not while etcd and the agent start up) until `shutdown`
/// turns true or its sender goes away. A probe that is running when shutdown
/// comes is cancelled (checked before every write).
pub async fn run(
    prober: Arc<PeriodicTarget>,
    interval: Duration,
    latest: LatestDiskHealth,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(interval_secs = interval.as_secs(), "periodic disk probe started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let round = probe_once(&prober, cancel.clone());
        tokio::pin!(round);
        let finished = tokio::select! {
            health = &mut round => health,
            _ = shutdown.changed() => {
                cancel.store(true, Ordering::Relaxed);
                round.await
            }
        };
        if let Some(health) = finished {
            if let Err(e) = &health.outcome {
                tracing::warn!(error = %e, "periodic disk probe failed");
            }
            latest.set(health);
        }
    }
    tracing::info!("periodic disk probe stopped");
}

/// What the worker probes: the prober (its slot and threshold) and the data dir.
#[derive(Debug)]
pub struct PeriodicTarget {
    pub prober: DiskProber,
    pub data_dir: PathBuf,
}

/// One light probe, or `None` when the slot is busy (an on-demand probe
/// runs) or the probe was cancelled.
async fn probe_once(target: &PeriodicTarget, cancel: Arc<AtomicBool>) -> Option<DiskHealth> {
    let Ok(slot) = target.prober.try_start() else {
        tracing::debug!("periodic disk probe skipped: a probe is running");
        return None;
    };
    let data_dir = target.data_dir.clone();
    let threshold = target.prober.threshold();
    let probed_at = SystemTime::now();
    let flag = cancel.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        probe::run(
            &probe::location_for(&data_dir),
            light_options(),
            LIGHT_LIMIT,
            &flag,
        )
    });
    let outcome = match work.await {
        Ok(Ok(r)) => Ok(LightResult {
            writes: r.writes,
            p99: r.p99,
            max: r.max,
        }),
        Ok(Err(_)) if cancel.load(Ordering::Relaxed) => return None,
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the probe's thread failed: {e}")),
    };
    Some(DiskHealth {
        probed_at,
        threshold,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskConfig;

    #[test]
    fn light_probe_is_100_writes_of_2300_bytes() {
        let o = light_options();
        assert_eq!((o.writes(), o.block_size()), (100, 2300));
    }

    #[test]
    fn verdict_needs_a_result_under_the_threshold() {
        let ok = |p99_ms| DiskHealth {
            probed_at: SystemTime::UNIX_EPOCH,
            threshold: Duration::from_millis(10),
            outcome: Ok(LightResult {
                writes: 100,
                p99: Duration::from_millis(p99_ms),
                max: Duration::from_millis(20),
            }),
        };
        assert!(ok(10).within_threshold());
        assert!(!ok(11).within_threshold());
        let failed = DiskHealth {
            outcome: Err("no space".into()),
            ..ok(1)
        };
        assert!(!failed.within_threshold());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_skip_when_busy_and_stop_at_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("data dir");
        let prober = DiskProber::new(&DiskConfig::default(), "http://127.0.0.1:2379");
        let target = Arc::new(PeriodicTarget {
            prober: prober.clone(),
            data_dir,
        });

        // Busy: an on-demand probe holds the slot, so the round is skipped.
        let slot = prober.try_start().expect("slot");
        assert!(probe_once(&target, Arc::default()).await.is_none());
        drop(slot);

        let latest = LatestDiskHealth::default();
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(run(
            target.clone(),
            Duration::from_millis(50),
            latest.clone(),
            stopped,
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while latest.get().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no probe result");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let health = latest.get().expect("result");
        assert_eq!(health.outcome.as_ref().expect("probe ok").writes, 100);
        stop.send(true).expect("send");
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("stops promptly")
            .expect("join");
        // A wait of an hour is interrupted at once.
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(run(
            target,
            Duration::from_secs(3600),
            LatestDiskHealth::default(),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.send(true).expect("send");
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("stops promptly")
            .expect("join");
        assert!(prober.try_start().is_ok(), "slot released");
        // Nothing left beside the data dir.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("data")]);
    }
}
