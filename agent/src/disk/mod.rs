//! Disk health: the fdatasync probe ([`probe`]), etcd's own disk metrics
//! ([`metrics`]), the probe as a command without an agent ([`cli`]), the light
//! periodic probe ([`periodic`]), and the
//! rule that one probe runs at a time per agent ([`DiskProber`]).

pub mod cli;
pub mod metrics;
pub mod periodic;
pub mod probe;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::DiskConfig;

/// What the agent needs to run probes: the threshold, where etcd's metrics
/// are read, and whether a probe is running. Clones share the one probe slot.
#[derive(Debug, Clone)]
pub struct DiskProber {
    threshold: Duration,
    metrics: metrics::MetricsEndpoint,
    /// When the running probe started; `None` when none runs.
    running: Arc<Mutex<Option<Instant>>>,
}

/// A second probe asked for while one runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a disk probe is already running on this agent (started {}s ago); only one runs at a time: \
     try again when it has finished",
    running_for.as_secs()
)]
pub struct ProbeBusy {
    pub running_for: Duration,
}

/// The right to run the one probe; dropping it (when the probe's blocking
/// work ends, whatever happened to the request) lets the next one start.
#[derive(Debug)]
pub struct ProbeSlot {
    running: Arc<Mutex<Option<Instant>>>,
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl DiskProber {
    /// From the `[disk]` config; `etcd_endpoint` gives the default metrics URL.
    pub fn new(config: &DiskConfig, etcd_endpoint: &str) -> DiskProber {
        DiskProber {
            threshold: Duration::from_millis(config.fsync_p99_threshold_ms),
            metrics: metrics::MetricsEndpoint::new(
                config
                    .metrics_url
                    .clone()
                    .unwrap_or_else(|| format!("{}/metrics", etcd_endpoint.trim_end_matches('/'))),
                None,
            ),
            running: Arc::default(),
        }
    }

    /// Reads etcd's metrics over TLS with the agent's etcd client identity
    /// (`[etcd.tls]`) when the metrics URL is `https://`.
    pub fn with_etcd_tls(mut self, tls: Option<&crate::config::TlsConfig>) -> DiskProber {
        self.metrics = metrics::MetricsEndpoint::new(self.metrics.url(), tls);
        self
    }

    /// The fdatasync p99 above which the disk is judged too slow.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Where etcd's Prometheus metrics are read.
    pub fn metrics_url(&self) -> &str {
        self.metrics.url()
    }

    /// Where and how etcd's Prometheus metrics are read.
    pub fn metrics(&self) -> &metrics::MetricsEndpoint {
        &self.metrics
    }

    /// Takes the one probe slot, or says how long the running probe has run.
    pub fn try_start(&self) -> Result<ProbeSlot, ProbeBusy> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(started) = *running {
            return Err(ProbeBusy {
                running_for: started.elapsed(),
            });
        }
        *running = Some(Instant::now());
        Ok(ProbeSlot {
            running: self.running.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time() {
        let prober = DiskProber::new(&DiskConfig::default(), "http://127.0.0.1:2379/");
        assert_eq!(prober.metrics_url(), "http://127.0.0.1:2379/metrics");
        assert_eq!(prober.threshold(), Duration::from_millis(10));
        let slot = prober.try_start().expect("first");
        let busy = prober.try_start().expect_err("second while the first runs");
        assert!(busy.to_string().contains("already running"), "{busy}");
        // The slot travels to the blocking thread that runs the probe.
        std::thread::spawn(move || drop(slot)).join().expect("thread");
        drop(prober.try_start().expect("free again"));
        let config = DiskConfig {
            fsync_p99_threshold_ms: 25,
            metrics_url: Some("http://m:2381/metrics".into()),
            ..DiskConfig::default()
        };
        let prober = DiskProber::new(&config, "http://127.0.0.1:2379");
        assert_eq!(prober.metrics_url(), "http://m:2381/metrics");
        assert_eq!(prober.threshold(), Duration::from_millis(25));
    }
}
