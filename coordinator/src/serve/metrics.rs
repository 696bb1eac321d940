//! serve's `/metrics`: the jobs' last success, duration, result, next run
//! and runs by result per cluster and job; operations by state (from the
//! journal at each scrape); leader or standby; drill figures; certificate
//! expiry. Kept in prometheus-client types, encoded by its encoder, and
//! served in the classic text format (`text/plain; version=0.0.4`, HELP and
//! TYPE named as the samples: `promtool check metrics` refuses prometheus-
//! client's OpenMetrics counters, see deploy-facts.md §3) by [`to_classic`],
//! over a minimal HTTP/1.0 handler (GET /metrics only, 5 s for the request).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::journal::{Journal, OpState};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// How long a client gets to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Every metric serve exports. Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    last_success: Family<Labels, FloatGauge>,
    last_duration: Family<Labels, FloatGauge>,
    last_result: Family<Labels, Gauge>,
    next_run: Family<Labels, FloatGauge>,
    interval: Family<Labels, FloatGauge>,
    runs: Family<Labels, Counter>,
    operations: Family<Labels, Gauge>,
    oldest_operation: Family<Labels, FloatGauge>,
    /// 1 while this replica leads (runs jobs), 0 on standby. Without high
    /// availability the one replica leads.
    pub leader: Gauge,
    drill_last_success: Family<Labels, FloatGauge>,
    drill_figures: Family<Labels, FloatGauge>,
    cert_expiry: Family<Labels, FloatGauge>,
}

/// How a run ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Ok,
    Failed,
    /// Another operation held the cluster: journaled as refused, not run.
    Refused,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Failed => "failed",
            RunResult::Refused => "refused",
        }
    }
}

fn job(cluster: &str, job: &str) -> Labels {
    // `serve_job`, not `job`: Prometheus sets `job` to the scrape job's name.
    vec![
        ("cluster".into(), cluster.into()),
        ("serve_job".into(), job.into()),
    ]
}

impl Metrics {
    /// Every (cluster, job) known before its first run, so its series exist from start-up.
    pub fn declare(&self, cluster: &str, name: &str) {
        let labels = job(cluster, name);
        let _ = self.last_duration.get_or_create(&labels);
        let _ = self.next_run.get_or_create(&labels);
        for result in [RunResult::Ok, RunResult::Failed, RunResult::Refused] {
            let mut l = labels.clone();
            l.push(("result".into(), result.as_str().into()));
            let _ = self.runs.get_or_create(&l);
        }
    }

    /// A run ended at `ended_unix` after `took`.
    pub fn run_ended(&self, cluster: &str, name: &str, result: RunResult, took: Duration, ended_unix: f64) {
        let labels = job(cluster, name);
        self.last_duration.get_or_create(&labels).set(took.as_secs_f64());
        self.last_result
            .get_or_create(&labels)
            .set(i64::from(result == RunResult::Ok));
        if result == RunResult::Ok {
            self.last_success.get_or_create(&labels).set(ended_unix);
        }
        let mut l = labels;
        l.push(("result".into(), result.as_str().into()));
        self.runs.get_or_create(&l).inc();
    }

    /// When the job runs next (Unix seconds).
    pub fn next_run(&self, cluster: &str, name: &str, at_unix: f64) {
        self.next_run.get_or_create(&job(cluster, name)).set(at_unix);
    }

    /// The time between two slots of the job's schedule, for the alert on
    /// a backup older than twice its interval.
    pub fn interval(&self, cluster: &str, name: &str, secs: f64) {
        self.interval.get_or_create(&job(cluster, name)).set(secs);
    }

    /// A drill passed at `at_unix`.
    pub fn drill_passed(&self, cluster: &str, at_unix: f64) {
        self.drill_last_success
            .get_or_create(&vec![("cluster".into(), cluster.into())])
            .set(at_unix);
    }

    /// A figure a drill measured (revision, keys, ...).
    pub fn drill_figure(&self, cluster: &str, figure: &str, value: f64) {
        self.drill_figures
            .get_or_create(&vec![
                ("cluster".into(), cluster.into()),
                ("figure".into(), figure.into()),
            ])
            .set(value);
    }

    /// A certificate's expiry as a cert-expiry run saw it.
    pub fn cert_expiry(&self, cluster: &str, member: &str, cert: &str, not_after_unix: f64) {
        self.cert_expiry
            .get_or_create(&vec![
                ("cluster".into(), cluster.into()),
                ("member".into(), member.into()),
                ("cert".into(), cert.into()),
            ])
            .set(not_after_unix);
    }

    /// Operations in the journal by state (every state, zeros included).
    pub fn count_operations(&self, journal: &Journal) {
        let records = match journal.list() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "metrics: cannot read the journal {}: {e}",
                    journal.path().display()
                );
                return;
            }
        };
        for state in [
            OpState::Running,
            OpState::Paused,
            OpState::Succeeded,
            OpState::Failed,
            OpState::Aborted,
        ] {
            let n = records.iter().filter(|r| r.state == state).count();
            self.operations
                .get_or_create(&vec![("state".into(), state.as_str().into())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        // The oldest operation still holding a fence, by state: the alerts
        // on one running or paused too long. No such operation: no series.
        for state in [OpState::Running, OpState::Paused] {
            let labels = vec![("state".into(), state.as_str().into())];
            match records
                .iter()
                .filter(|r| r.state == state)
                .map(|r| r.created_at_unix)
                .min()
            {
                Some(oldest) => {
                    self.oldest_operation.get_or_create(&labels).set(oldest as f64);
                }
                None => {
                    self.oldest_operation.remove(&labels);
                }
            }
        }
    }

    /// The classic Prometheus text of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register(
            "etcdops_serve_job_last_success_timestamp_seconds",
            "When the job last succeeded (Unix seconds)",
            self.last_success.clone(),
        );
        registry.register(
            "etcdops_serve_job_last_duration_seconds",
            "How long the job's last run took",
            self.last_duration.clone(),
        );
        registry.register(
            "etcdops_serve_job_last_result",
            "The job's last run: 1 ok, 0 failed or refused",
            self.last_result.clone(),
        );
        registry.register(
            "etcdops_serve_job_next_run_timestamp_seconds",
            "When the job runs next (Unix seconds)",
            self.next_run.clone(),
        );
        registry.register(
            "etcdops_serve_job_interval_seconds",
            "Seconds between two slots of the job's schedule",
            self.interval.clone(),
        );
        registry.register(
            "etcdops_serve_job_runs",
            "Runs of the job by result (ok, failed, refused)",
            self.runs.clone(),
        );
        registry.register(
            "etcdops_serve_operations",
            "Operations in the journal by state",
            self.operations.clone(),
        );
        registry.register(
            "etcdops_serve_operation_oldest_timestamp_seconds",
            "When the oldest running or paused operation started (Unix seconds)",
            self.oldest_operation.clone(),
        );
        registry.register(
            "etcdops_serve_leader",
            "1 while this serve replica leads and runs jobs, 0 on standby",
            self.leader.clone(),
        );
        registry.register(
            "etcdops_serve_drill_last_success_timestamp_seconds",
            "When the cluster's last restore drill passed (Unix seconds)",
            self.drill_last_success.clone(),
        );
        registry.register(
            "etcdops_serve_drill_figure",
            "A figure the cluster's last restore drill measured",
            self.drill_figures.clone(),
        );
        registry.register(
            "etcdops_serve_cert_expiry_timestamp_seconds",
            "When a certificate the agents report expires (Unix seconds)",
            self.cert_expiry.clone(),
        );
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &registry) {
            let _ = writeln!(text, "# encoding failed: {e}");
        }
        to_classic(&text)
    }
}

/// prometheus-client's OpenMetrics text → the classic text format: no
/// `# EOF` or `# UNIT`, and a counter's HELP and TYPE name its samples
/// (`x_total`), as `promtool check metrics` wants.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Binds the listener (at start-up: a bad address is a start-up error).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves `GET /metrics` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    journal: Arc<Journal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, "serve metrics on http://{address}/metrics");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let metrics = metrics.clone();
                    let journal = journal.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &metrics, &journal).await {
                            tracing::debug!(%peer, error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, journal: &Journal) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "request head not received in time")
        })??;
    let (status, body) = match route(&head) {
        Route::Metrics => {
            let journal = journal.clone();
            let m = metrics.clone();
            let text = tokio::task::spawn_blocking(move || {
                m.count_operations(&journal);
                m.render()
            })
            .await
            .unwrap_or_default();
            ("200 OK", text)
        }
        Route::NotFound => ("404 Not Found", "only GET /metrics is served\n".to_string()),
        Route::BadMethod => ("405 Method Not Allowed", "only GET is served\n".to_string()),
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
}

fn route(head: &str) -> Route {
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if method != "GET" {
        return Route::BadMethod;
    }
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_running_operation_and_the_schedule_interval_are_exported() {
        use crate::journal::OperationRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path().join("journal.redb")).expect("journal");
        for (id, created, state) in [
            ("op-a", 1_000, OpState::Running),
            ("op-b", 2_000, OpState::Running),
            ("op-c", 500, OpState::Succeeded),
        ] {
            let record = OperationRecord {
                id: id.into(),
                kind: crate::plan::planner::OpKind::Restart,
                cluster: "prod-a".into(),
                fleet: "/etc/etcdops/fleet.toml".into(),
                operation: crate::plan::operation::Operation::Restart {
                    members: vec!["etcd1".into()],
                    force: false,
                    snapshot: Default::default(),
                },
                options: Default::default(),
                holder: "serve".into(),
                operator: None,
                epoch: 1,
                state,
                created_at_unix: created,
                updated_at_unix: created,
                error: None,
                steps: Vec::new(),
            };
            journal.create(&record).expect("create");
        }
        let m = Metrics::default();
        m.interval("prod-a", "backup", 3600.0);
        m.count_operations(&journal);
        let text = m.render();
        for line in [
            "etcdops_serve_operation_oldest_timestamp_seconds{state=\"running\"} 1000",
            "etcdops_serve_job_interval_seconds{cluster=\"prod-a\",serve_job=\"backup\"} 3600",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{line} missing:\n{text}"
            );
        }
        // No paused operation: no paused series (the alert stays quiet).
        assert!(
            !text.contains("etcdops_serve_operation_oldest_timestamp_seconds{state=\"paused\"}"),
            "{text}"
        );
    }

    #[test]
    fn every_named_metric_is_rendered_in_classic_text_with_help() {
        let m = Metrics::default();
        m.declare("prod-a", "backup");
        m.run_ended(
            "prod-a",
            "backup",
            RunResult::Ok,
            Duration::from_millis(1500),
            1.8e9,
        );
        m.run_ended(
            "prod-a",
            "backup",
            RunResult::Refused,
            Duration::from_millis(10),
            1.8e9 + 60.0,
        );
        m.next_run("prod-a", "backup", 1.8e9 + 3600.0);
        m.leader.set(1);
        m.drill_passed("prod-a", 1.8e9);
        m.drill_figure("prod-a", "revision", 42.0);
        m.cert_expiry("prod-a", "etcd1", "agent", 1.9e9);
        let journal_dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(journal_dir.path().join("j.redb")).expect("journal");
        m.count_operations(&journal);
        let text = m.render();
        for name in [
            "etcdops_serve_job_last_success_timestamp_seconds{cluster=\"prod-a\",serve_job=\"backup\"} 1800000000",
            "etcdops_serve_job_last_duration_seconds{cluster=\"prod-a\",serve_job=\"backup\"}",
            "etcdops_serve_job_last_result{cluster=\"prod-a\",serve_job=\"backup\"} 0",
            "etcdops_serve_job_next_run_timestamp_seconds{cluster=\"prod-a\",serve_job=\"backup\"}",
            "etcdops_serve_job_runs_total{cluster=\"prod-a\",serve_job=\"backup\",result=\"ok\"} 1",
            "etcdops_serve_job_runs_total{cluster=\"prod-a\",serve_job=\"backup\",result=\"refused\"} 1",
            "etcdops_serve_job_runs_total{cluster=\"prod-a\",serve_job=\"backup\",result=\"failed\"} 0",
            "etcdops_serve_operations{state=\"running\"} 0",
            "etcdops_serve_leader 1",
            "etcdops_serve_drill_last_success_timestamp_seconds{cluster=\"prod-a\"}",
            "etcdops_serve_drill_figure{cluster=\"prod-a\",figure=\"revision\"} 42",
            "etcdops_serve_cert_expiry_timestamp_seconds{cluster=\"prod-a\",member=\"etcd1\",cert=\"agent\"}",
            "# HELP etcdops_serve_job_runs_total ",
            "# TYPE etcdops_serve_job_runs_total counter",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
        }
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("PUT /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
    }
}
