//! serve's `/metrics`: the jobs' last success, duration, result, next run
//! and runs by result per cluster and job; operations by state (from the
//! journal at each scrape); leader or standby; drill figures; certificate
//! expiry. Kept in prometheus-client types, encoded by its encoder, and
//! served in the classic text format (`text/plain; version=0.0.4`, HELP and
//! TYPE named as the samples: `promtool check metrics` refuses prometheus-
//! client's OpenMetrics counters, see deploy-facts.md §3) by [`to_classic`],
//! by axum (GET /metrics only).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::journal::{Journal, OpState};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

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

/// Serves `GET /metrics` until `shutdown` turns true; any other path is a
/// 404, another method a 405.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    journal: Arc<Journal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, "serve metrics on http://{address}/metrics");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(async || (StatusCode::NOT_FOUND, "only GET /metrics is served\n"))
        .with_state((metrics, journal));
    tokio::select! {
        served = axum::serve(listener, app).into_future() => {
            if let Err(e) = served {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// One scrape: operations counted from the journal now, every metric in the
/// classic text format.
async fn scrape(State((metrics, journal)): State<(Metrics, Arc<Journal>)>) -> impl IntoResponse {
    // The journal read blocks (redb or the home etcd's blocking client).
    let text = tokio::task::spawn_blocking(move || {
        metrics.count_operations(&journal);
        metrics.render()
    })
    .await
    .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
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

    /// The status line and body of one HTTP/1.0 request to `address`.
    async fn ask(address: SocketAddr, request: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    #[tokio::test]
    async fn only_get_metrics_is_served_and_serving_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Arc::new(Journal::open(dir.path().join("journal.redb")).expect("journal"));
        let listener = bind("127.0.0.1:0".parse().expect("address")).await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Metrics::default(), journal, stopped));

        let (status, body) = ask(address, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(status.ends_with("200 OK"), "{status}");
        assert!(body.contains("etcdops_serve_leader"), "{body}");
        let (status, _) = ask(address, "GET / HTTP/1.0\r\n\r\n").await;
        assert!(status.contains("404"), "{status}");
        let (status, _) = ask(address, "PUT /metrics HTTP/1.0\r\n\r\n").await;
        assert!(status.contains("405"), "{status}");

        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
    }
}
