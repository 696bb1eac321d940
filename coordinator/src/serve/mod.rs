//! `etcdops serve`: the long-running coordinator that runs scheduled jobs
//! on the fleet's clusters (issue 15).
//!
//! - [`config`]: `serve.toml`, validated against the fleet (exit 2 on a bad one).
//! - [`schedule`]: cron schedules and maintenance windows; what is due (pure).
//! - [`state`]: the slot each job last ran for (`serve-state.json`).
//! - [`jobs`]: the jobs, one function per kind; journaled, fenced operations.
//! - [`metrics`]: `/metrics` in Prometheus' classic text format.
//! - [`notify`]: sd_notify (`Type=notify`, watchdog).
//!
//! [`run`] starts one task per job. Each task computes its next slot, waits
//! for it (and for a window, and its jitter), runs the job in a task of its
//! own (a panic or an error fails that run only: never the other jobs or the
//! process), records the outcome in metrics, logs and the state file, and
//! goes round again: one run of a job at a time, by construction. At
//! SIGTERM/SIGINT every waiting task stops at once and a running operation
//! stops cleanly before its next step (the journal keeps it resumable).

pub mod config;
pub mod ha;
pub mod jobs;
pub mod metrics;
pub mod notify;
mod requests;
pub mod schedule;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;

use self::config::{ConfigError, JobKind, JobSpec, ServeConfig, Validated};
use self::jobs::JobContext;
use self::metrics::{Metrics, RunResult};
use self::schedule::{Due, jitter_delay, next_due, window_wait};
use self::state::{LastRuns, StateError};
use crate::agents::Agents;
use crate::journal::{Journal, JournalError};

/// How long a running job gets to stop cleanly at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Why serve did not start. Each is a start-up error: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot open the journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot load the coordinator's TLS identity ([tls] in {fleet}): {message}")]
    Tls { fleet: PathBuf, message: String },
    #[error(transparent)]
    Ha(#[from] ha::HaError),
    #[error("cannot listen for /metrics on {address}: {source}; change metrics_listen")]
    Bind {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Loads and checks `path` as `etcdops serve --check` does.
pub fn check(path: &Path) -> Result<Validated, ServeError> {
    let config = ServeConfig::load(path)?;
    Ok(config.validate()?)
}

/// What one job's task works with.
struct Runner {
    spec: JobSpec,
    ctx: JobContext,
    metrics: Metrics,
    runs: Arc<LastRuns>,
    stop: watch::Receiver<bool>,
}

/// Runs serve from the configuration at `path` until `shutdown` resolves.
pub async fn run(path: &Path, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
    let validated = check(path)?;
    let tls = validated
        .fleet
        .tls
        .files()
        .client()
        .map_err(|e| ServeError::Tls {
            fleet: validated.fleet_path.clone(),
            message: e.to_string(),
        })?;
    let agents = Agents::new(tls, validated.agent_timeout).reusing_channels();
    if validated.ha.is_some() {
        return ha::serve(validated, agents, shutdown).await;
    }
    let journal = Journal::open(&validated.journal)?;
    let runs = Arc::new(LastRuns::open(&validated.state_dir)?);
    let metrics = Metrics::default();
    // Without high availability this replica is the leader.
    metrics.leader.set(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(address) = validated.metrics_listen {
        let listener = metrics::bind(address)
            .await
            .map_err(|source| ServeError::Bind { address, source })?;
        tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            Arc::new(journal.clone()),
            stop_rx.clone(),
        ));
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let token = Arc::new(());
    let mut tasks = Vec::new();
    for spec in &validated.jobs {
        metrics.declare(&spec.cluster, &spec.name);
        let runner = Runner {
            ctx: JobContext {
                fleet: validated.fleet.clone(),
                fleet_path: validated.fleet_path.clone(),
                agents: agents.clone(),
                journal: journal.clone(),
                fence_wait: validated.fence_wait,
                job: spec.name.clone(),
                params: spec.params.clone(),
                shutdown: interrupted.clone(),
                term: None,
            },
            spec: spec.clone(),
            metrics: metrics.clone(),
            runs: runs.clone(),
            stop: stop_rx.clone(),
        };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            runner.run().await;
            drop(token);
        }));
    }
    if let Some(period) = notify::watchdog_interval() {
        tokio::spawn(notify::watchdog(period, Arc::downgrade(&token), stop_rx.clone()));
    }
    drop(token);
    let summary = format!(
        "serving {} job(s) on {} cluster(s); journal {}",
        validated.jobs.len(),
        {
            let mut c: Vec<&str> = validated.jobs.iter().map(|j| j.cluster.as_str()).collect();
            c.sort_unstable();
            c.dedup();
            c.len()
        },
        journal.path().display()
    );
    tracing::info!("{summary}");
    notify::ready(&summary);
    shutdown.await;
    notify::stopping("stopping: running jobs finish their current step");
    tracing::info!("stopping: waiting jobs end now, running ones after their current step");
    interrupted.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        tracing::warn!(
            "a job did not stop within {}s; its operation stays in the journal for `etcdops op resume`",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

impl Runner {
    fn key(&self) -> String {
        self.spec.label()
    }

    /// Sleeps until `t` (wall clock); false when serve stops meanwhile.
    async fn sleep_until(&mut self, t: Timestamp) -> bool {
        let wait = t.duration_since(Timestamp::now());
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        self.sleep(wait).await
    }

    async fn sleep(&mut self, wait: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.stop.changed() => false,
        }
    }

    async fn run(mut self) {
        let key = self.key();
        loop {
            let last = self.runs.get(&key).and_then(|s| Timestamp::from_second(s).ok());
            let Some(due) = next_due(&self.spec.schedule, last, Timestamp::now()) else {
                tracing::warn!(job = %key, "schedule {:?} has no further slot: the job stops", self.spec.schedule.expr());
                return;
            };
            let slot = match due {
                Due::Now { slot, missed } => {
                    if missed {
                        tracing::info!(job = %key, "missed its run(s) since {}: running once now", last.map(|l| l.to_string()).unwrap_or_default());
                    }
                    slot
                }
                Due::At(t) => {
                    self.metrics
                        .next_run(&self.spec.cluster, &self.spec.name, t.as_second() as f64);
                    if let Some(after) = self.spec.schedule.next_after(t) {
                        let secs = after.as_second() - t.as_second();
                        self.metrics
                            .interval(&self.spec.cluster, &self.spec.name, secs as f64);
                    }
                    if !self.sleep_until(t).await {
                        return;
                    }
                    t
                }
            };
            if let Some(open) = window_wait(&self.spec.windows, Timestamp::now()) {
                tracing::info!(job = %key, "due, but no maintenance window is open: waiting until {open}");
                self.metrics
                    .next_run(&self.spec.cluster, &self.spec.name, open.as_second() as f64);
                if !self.sleep_until(open).await {
                    return;
                }
            }
            if !self.sleep(jitter_delay(self.spec.jitter)).await {
                return;
            }
            self.run_once().await;
            if let Err(e) = self.runs.set(&key, slot.as_second()) {
                tracing::error!(job = %key, "{e}");
            }
        }
    }

    /// One run, in a task of its own: a panic fails this run only.
    async fn run_once(&self) {
        let key = self.key();
        let (kind, ctx, cluster) = (self.spec.kind, self.ctx.clone(), self.spec.cluster.clone());
        tracing::info!(job = %key, "running {kind}");
        let started = Instant::now();
        let outcome = tokio::spawn(async move { jobs::run(kind, &ctx, &cluster).await }).await;
        let took = started.elapsed();
        let ended = Timestamp::now().as_second() as f64;
        let (cluster, name) = (&self.spec.cluster, &self.spec.name);
        let result = match outcome {
            Ok(Ok(outcome)) => {
                tracing::info!(job = %key, took_secs = took.as_secs_f64(), operation = outcome.operation.as_deref().unwrap_or("-"), "ok: {}", outcome.summary);
                self.record(&outcome, true, ended);
                RunResult::Ok
            }
            Ok(Err(e)) => {
                tracing::error!(job = %key, took_secs = took.as_secs_f64(), "{kind} failed: {e}");
                if let Some(outcome) = e.outcome() {
                    self.record(outcome, false, ended);
                }
                if e.is_refused() {
                    RunResult::Refused
                } else {
                    RunResult::Failed
                }
            }
            Err(e) => {
                tracing::error!(job = %key, "{kind} ended abnormally: {e}");
                RunResult::Failed
            }
        };
        self.metrics.run_ended(cluster, name, result, took, ended);
    }

    /// What a run measured, into metrics.
    fn record(&self, outcome: &jobs::JobOutcome, ok: bool, ended: f64) {
        let cluster = &self.spec.cluster;
        for c in &outcome.certs {
            self.metrics
                .cert_expiry(cluster, &c.member, &c.cert, c.not_after_unix as f64);
        }
        if self.spec.kind == JobKind::RestoreDrill {
            for (figure, value) in &outcome.figures {
                self.metrics.drill_figure(cluster, figure, *value);
            }
            if ok {
                self.metrics.drill_passed(cluster, ended);
            }
        }
    }
}
