//! The agent's own Prometheus metrics: RPC counts and durations (kept as
//! the RPCs run), and the unit, data dir, certificate and periodic disk
//! probe (read at each scrape), served as OpenMetrics text on `GET /metrics`
//! by axum (`metrics_listen`; plain HTTP, metrics only).
//! What a scrape reads comes through [`MetricsSource`] (implemented by the
//! agent's state in `state.rs`), so this module does not import the state.

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
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::datadir::DataDirInfo;
use crate::disk::periodic::DiskHealth;
use crate::unit::{UnitBackend, UnitState};

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// RPC counts by method and gRPC code, and durations by method.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        }
    }
}

impl RpcMetrics {
    /// Counts one finished RPC (`method` as in the proto, e.g. `GetStatus`).
    pub fn observe(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.requests
            .get_or_create(&vec![("method", method.to_string()), ("code", code_name(code))])
            .inc();
        self.durations
            .get_or_create(&vec![("method", method.to_string())])
            .observe(took.as_secs_f64());
    }
}

/// gRPC's canonical code names (`OK`, `INVALID_ARGUMENT`, ...).
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// What a scrape reads besides the RPC metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub backend: String,
    pub unit_active: bool,
    pub data_dir: Option<DataDirInfo>,
    pub cert_not_after_unix: i64,
    /// The certificate files of this host: (cert, path, not after).
    pub cert_files: Vec<(String, String, i64)>,
    pub disk: Option<DiskHealth>,
}

/// The OpenMetrics text of `snapshot` and `rpc`.
pub fn render(snapshot: &Snapshot, rpc: &RpcMetrics) -> String {
    let mut registry = Registry::default();
    let unit_active = Family::<Labels, Gauge>::default();
    unit_active
        .get_or_create(&vec![("backend", snapshot.backend.clone())])
        .set(i64::from(snapshot.unit_active));
    registry.register(
        "etcdops_agent_unit_active",
        "1 when the etcd unit is active, else 0",
        unit_active,
    );
    if let Some(disk) = snapshot.disk.as_ref() {
        let threshold = FloatGauge::default();
        threshold.set(disk.threshold.as_secs_f64());
        registry.register(
            "etcdops_agent_disk_fsync_threshold_seconds",
            "the fdatasync p99 above which the agent calls the disk slow ([disk] fsync_p99_threshold_ms)",
            threshold,
        );
    }
    if let Some(Ok(probe)) = snapshot.disk.as_ref().map(|d| &d.outcome) {
        let p99 = FloatGauge::default();
        p99.set(probe.p99.as_secs_f64());
        registry.register(
            "etcdops_agent_disk_probe_p99_seconds",
            "fdatasync p99 of the latest light disk probe",
            p99,
        );
        let max = FloatGauge::default();
        max.set(probe.max.as_secs_f64());
        registry.register(
            "etcdops_agent_disk_probe_max_seconds",
            "fdatasync maximum of the latest light disk probe",
            max,
        );
    }
    if let Some(d) = snapshot.data_dir.as_ref().filter(|d| d.error.is_none()) {
        let size = Gauge::<i64>::default();
        size.set(i64::try_from(d.size_bytes).unwrap_or(i64::MAX));
        registry.register(
            "etcdops_agent_datadir_size_bytes",
            "allocated bytes of etcd's data dir",
            size,
        );
        let free = Gauge::<i64>::default();
        free.set(i64::try_from(d.fs_free_bytes).unwrap_or(i64::MAX));
        registry.register(
            "etcdops_agent_fs_free_bytes",
            "free bytes of the data dir's filesystem",
            free,
        );
    }
    let expiry = Family::<Labels, Gauge>::default();
    expiry
        .get_or_create(&vec![
            ("cert", "agent-served".to_string()),
            ("path", String::new()),
        ])
        .set(snapshot.cert_not_after_unix);
    for (cert, path, not_after) in &snapshot.cert_files {
        expiry
            .get_or_create(&vec![("cert", cert.clone()), ("path", path.clone())])
            .set(*not_after);
    }
    registry.register(
        "etcdops_agent_cert_expiry_timestamp_seconds",
        "when a certificate of this host expires (Unix time): cert=\"agent-served\" is what the agent serves, \
         the others the files etcd's environment and the agent's config name",
        expiry,
    );
    registry.register(
        "etcdops_agent_rpc_requests",
        "agent API requests by method and gRPC code",
        rpc.requests.clone(),
    );
    registry.register(
        "etcdops_agent_rpc_duration_seconds",
        "agent API request durations",
        rpc.durations.clone(),
    );
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        // Only a fmt::Error into a String: cannot happen, but say so if it does.
        let _ = writeln!(text, "# encoding failed: {e}");
    }
    text
}

/// What a scrape reads from the running agent.
pub trait MetricsSource: Send + Sync + 'static {
    /// How etcd runs on this host.
    fn unit(&self) -> &dyn UnitBackend;
    /// The member's data dir.
    fn data_dir(&self) -> &std::path::Path;
    /// When the agent's certificate expires, Unix seconds.
    fn cert_not_after_unix(&self) -> i64;
    /// The certificate files of this host: (cert, path, not after).
    fn cert_expiries(&self) -> Vec<(String, String, i64)>;
    /// The latest periodic disk probe, if any.
    fn disk_health(&self) -> Option<DiskHealth>;
    /// The RPC counts and durations kept as the RPCs run.
    fn rpc_metrics(&self) -> &RpcMetrics;
}

/// Reads what a scrape needs from the running agent.
pub async fn snapshot(state: &impl MetricsSource) -> Snapshot {
    let data_dir_path = state.data_dir().to_path_buf();
    let (unit, data_dir) = tokio::join!(
        state.unit().info(),
        tokio::task::spawn_blocking(move || DataDirInfo::read(&data_dir_path))
    );
    Snapshot {
        backend: state.unit().backend().to_string(),
        unit_active: unit.state == UnitState::Active,
        data_dir: data_dir.ok(),
        cert_not_after_unix: state.cert_not_after_unix(),
        cert_files: state.cert_expiries(),
        disk: state.disk_health(),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true; any
/// other path is a 404, another method a 405.
pub async fn serve<S>(listener: TcpListener, state: Arc<S>, mut shutdown: watch::Receiver<bool>)
where
    S: MetricsSource + Send + Sync + 'static,
{
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, "agent metrics served on http://{address}/metrics");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape::<S>))
        .fallback(async || (StatusCode::NOT_FOUND, "only GET /metrics is served\n"))
        .with_state(state);
    tokio::select! {
        served = axum::serve(listener, app).into_future() => {
            if let Err(e) = served {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// One scrape: the agent read now, in OpenMetrics text.
async fn scrape<S: MetricsSource>(State(state): State<Arc<S>>) -> impl IntoResponse {
    let text = render(&snapshot(state.as_ref()).await, state.rpc_metrics());
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Binds the metrics listener (at start-up, so a bad address fails fast).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::disk::periodic::LightResult;

    #[test]
    fn code_names_are_grpc_canonical() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn rendered_text_has_every_metric() {
        let rpc = RpcMetrics::default();
        rpc.observe("GetStatus", tonic::Code::Ok, Duration::from_millis(3));
        rpc.observe("GetStatus", tonic::Code::Ok, Duration::from_millis(5));
        rpc.observe(
            "ProbeDisk",
            tonic::Code::ResourceExhausted,
            Duration::from_millis(1),
        );
        let snapshot = Snapshot {
            backend: "process".into(),
            unit_active: true,
            data_dir: Some(DataDirInfo {
                path: PathBuf::from("/d"),
                exists: true,
                size_bytes: 4096,
                fs_free_bytes: 1 << 30,
                fs_total_bytes: 1 << 31,
                error: None,
                ..DataDirInfo::default()
            }),
            cert_not_after_unix: 1_900_000_000,
            cert_files: vec![("etcd-server".into(), "/pki/s.crt".into(), 1_800_000_000)],
            disk: Some(DiskHealth {
                probed_at: SystemTime::UNIX_EPOCH,
                threshold: Duration::from_millis(10),
                outcome: Ok(LightResult {
                    writes: 100,
                    p99: Duration::from_micros(1500),
                    max: Duration::from_millis(3),
                }),
            }),
        };
        let text = render(&snapshot, &rpc);
        for line in [
            "etcdops_agent_unit_active{backend=\"process\"} 1",
            "etcdops_agent_disk_probe_p99_seconds 0.0015",
            "etcdops_agent_disk_probe_max_seconds 0.003",
            "etcdops_agent_disk_fsync_threshold_seconds 0.01",
            "etcdops_agent_datadir_size_bytes 4096",
            "etcdops_agent_fs_free_bytes 1073741824",
            "etcdops_agent_cert_expiry_timestamp_seconds{cert=\"agent-served\",path=\"\"} 1900000000",
            "etcdops_agent_cert_expiry_timestamp_seconds{cert=\"etcd-server\",path=\"/pki/s.crt\"} 1800000000",
            "etcdops_agent_rpc_requests_total{method=\"GetStatus\",code=\"OK\"} 2",
            "etcdops_agent_rpc_requests_total{method=\"ProbeDisk\",code=\"RESOURCE_EXHAUSTED\"} 1",
            "etcdops_agent_rpc_duration_seconds_count{method=\"GetStatus\"} 2",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Without a probe result or data dir, those metrics are absent rather than zero.
        let text = render(
            &Snapshot {
                backend: "systemd".into(),
                ..Snapshot::default()
            },
            &RpcMetrics::default(),
        );
        assert!(
            text.contains("etcdops_agent_unit_active{backend=\"systemd\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("disk_probe") && !text.contains("datadir_size"),
            "{text}"
        );
    }
}
