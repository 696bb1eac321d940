//! ProbeDisk: fdatasync latency on the data dir's filesystem, beside etcd's
//! own disk metrics. The request becomes [`ProbeOptions`] at once; the probe
//! runs on a blocking thread, one at a time per agent, and is cancelled when
//! the caller goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcdops_proto::v1::{ProbeDiskRequest, ProbeDiskResponse};
use tonic::Status;

use crate::disk::metrics::{self, EtcdDiskMetrics};
use crate::disk::probe::{self, OptionsError, ProbeError, ProbeOptions, ProbeResult};
use crate::state::AgentState;

/// How long reading etcd's `/metrics` may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a probe may run: under the agent server's 120 s request
/// timeout (server.rs), so the caller gets the probe's own error.
const PROBE_LIMIT: Duration = Duration::from_secs(100);

/// The request's sizes, validated (0 means the default). A function, not a
/// `TryFrom`: `ProbeOptions` lives in the shared `etcdops-format` crate.
fn options_from(request: &ProbeDiskRequest) -> Result<ProbeOptions, OptionsError> {
    ProbeOptions::new(request.total_bytes, request.block_size)
}

pub async fn probe_disk(state: &AgentState, request: ProbeDiskRequest) -> Result<ProbeDiskResponse, Status> {
    let options = options_from(&request).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let slot = state
        .disk
        .try_start()
        .map_err(|busy| Status::resource_exhausted(busy.to_string()))?;
    let data_dir = state.data_dir.clone();
    let cancel = CancelOnDrop::default();
    let flag = cancel.0.clone();
    tracing::info!(data_dir = %data_dir.display(), total_bytes = options.total_bytes(), block_size = options.block_size(), "disk probe starting");
    let work = tokio::task::spawn_blocking(move || {
        // Held until the blocking work ends, even if the caller went away.
        let _slot = slot;
        let location = probe::location_for(&data_dir);
        probe::run(&location, options, PROBE_LIMIT, &flag)
    });
    let (metrics, probed) = tokio::join!(metrics::scrape(state.disk.metrics(), METRICS_TIMEOUT), work);
    drop(cancel);
    let result = match probed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "disk probe failed");
            return Err(probe_status(&e));
        }
        Err(e) => return Err(Status::internal(format!("the disk probe's thread failed: {e}"))),
    };
    let metrics = metrics.unwrap_or_else(|e| EtcdDiskMetrics {
        problems: vec![format!("cannot read etcd's metrics: {e}")],
        ..EtcdDiskMetrics::default()
    });
    let response = to_response(&result, state.disk.threshold(), metrics);
    tracing::info!(
        writes = response.writes,
        p99_us = response.p99_us,
        within_threshold = response.within_threshold,
        "disk probe done"
    );
    Ok(response)
}

/// One mapping from probe errors to gRPC codes: a disk that cannot be
/// written needs someone to fix it (FailedPrecondition).
fn probe_status(e: &ProbeError) -> Status {
    let message = e.to_string();
    match e {
        ProbeError::Deadline { .. } => Status::deadline_exceeded(message),
        ProbeError::Cancelled { .. } => Status::cancelled(message),
        ProbeError::CreateDir { .. }
        | ProbeError::CreateFile { .. }
        | ProbeError::Write { .. }
        | ProbeError::Sync { .. }
        | ProbeError::Cleanup { .. } => Status::failed_precondition(message),
    }
}

fn to_response(r: &ProbeResult, threshold: Duration, m: EtcdDiskMetrics) -> ProbeDiskResponse {
    ProbeDiskResponse {
        path: r.path.display().to_string(),
        writes: r.writes,
        bytes: r.bytes,
        p50_us: micros(r.p50),
        p99_us: micros(r.p99),
        max_us: micros(r.max),
        throughput_bytes_per_sec: r.throughput_bytes_per_sec,
        threshold_p99_us: micros(threshold),
        within_threshold: r.p99 <= threshold,
        etcd_wal_fsync_p99_us: m.wal_fsync_p99.map_or(0, micros),
        etcd_backend_commit_p99_us: m.backend_commit_p99.map_or(0, micros),
        metrics_error: m.problems.join("; "),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sets the probe's cancel flag when the request's future is dropped (the
/// caller went away or the server timed the request out).
#[derive(Debug, Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn requests_are_validated_naming_the_field() {
        let ok = options_from(&ProbeDiskRequest {
            total_bytes: 0,
            block_size: 0,
        })
        .expect("defaults");
        assert_eq!(ok.writes(), 10_030);
        let err = options_from(&ProbeDiskRequest {
            total_bytes: 0,
            block_size: 2 << 20,
        })
        .expect_err("big");
        let status = Status::invalid_argument(err.to_string());
        assert!(
            status.message().starts_with("block_size: "),
            "{}",
            status.message()
        );
        let err = options_from(&ProbeDiskRequest {
            total_bytes: 2 << 30,
            block_size: 0,
        })
        .expect_err("big");
        assert!(err.to_string().starts_with("total_bytes: "), "{err}");
    }

    #[test]
    fn responses_carry_the_verdict_and_metrics() {
        let r = ProbeResult {
            path: PathBuf::from("/d/.etcdops-probe-1-0"),
            writes: 3,
            bytes: 6900,
            p50: Duration::from_micros(900),
            p99: Duration::from_micros(10_000),
            max: Duration::from_micros(10_000),
            elapsed: Duration::from_millis(30),
            throughput_bytes_per_sec: 230_000.0,
        };
        let m = EtcdDiskMetrics {
            wal_fsync_p99: Some(Duration::from_micros(990)),
            backend_commit_p99: None,
            problems: vec!["no commits".into()],
        };
        let resp = to_response(&r, Duration::from_millis(10), m);
        assert!(resp.within_threshold, "p99 equal to the threshold is within it");
        assert_eq!((resp.p99_us, resp.threshold_p99_us), (10_000, 10_000));
        assert_eq!(
            (resp.etcd_wal_fsync_p99_us, resp.etcd_backend_commit_p99_us),
            (990, 0)
        );
        assert_eq!(resp.metrics_error, "no commits");
        assert!(!to_response(&r, Duration::from_micros(9_999), EtcdDiskMetrics::default()).within_threshold);
        assert_eq!(
            probe_status(&ProbeError::Cancelled { writes: 1 }).code(),
            tonic::Code::Cancelled
        );
    }
}
