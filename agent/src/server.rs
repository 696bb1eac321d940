//! Start-up and shutdown: TLS, the listener, the unit, the audit trail, the gRPC server, and
//! the background workers (periodic disk probe, revision samples, `/metrics`,
//! the systemd watchdog). Under a `Type=notify` unit the agent says
//! `READY=1` once its listeners are bound and the gRPC server task runs, and
//! `STOPPING=1` when a shutdown signal arrives (see [`crate::notify`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Server;

use crate::config::{AgentConfig, Backend};
use crate::disk::periodic::{self, PeriodicTarget};
use crate::metrics;
use crate::rpc;
use crate::state::AgentState;

/// How long in-flight RPCs may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's bound on any request: Defragment's maximum budget plus a minute.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3_660);
/// How long background workers (periodic disk probe, metrics) get to stop.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let (tls, identity, server_cert) = crate::certs_tls::server_config(&config.tls.files())
        .context("loading the agent's TLS files (see [tls] in the agent config)")?;
    let mut state = AgentState::new(&config, identity).context("preparing the agent")?;
    state.server_cert = Some(server_cert);
    let state = Arc::new(state);
    let audit = Arc::new(
        crate::audit::AuditLog::open(config.audit.settings(&config.state_dir))
            .context("opening the audit trail")?,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (see `listen` in the agent config)",
                config.listen
            )
        })?;
    let local = listener.local_addr().context("reading the listen address")?;
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(metrics::bind(address).await.with_context(|| {
            format!("cannot listen on {address} (see `metrics_listen` in the agent config)")
        })?),
        None => None,
    };

    // A StartEtcd/StopEtcd that asked to enable or disable (a member added,
    // removed, rejoined) outlives the config's `autostart`.
    let autostart = crate::unit::process::recorded_boot(&config.state_dir).unwrap_or(config.unit.autostart);
    if config.unit.backend == Backend::Process && autostart {
        state
            .unit
            .start()
            .await
            .context("starting etcd (process backend)")?;
    }

    // Background workers stop when this turns true (or its sender is dropped).
    let (stop_workers, workers_stopping) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    if config.disk.probe_interval_secs > 0 {
        let target = Arc::new(PeriodicTarget {
            prober: state.disk.clone(),
            data_dir: state.data_dir.clone(),
        });
        workers.push(tokio::spawn(periodic::run(
            target,
            Duration::from_secs(config.disk.probe_interval_secs),
            state.disk_health.clone(),
            workers_stopping.clone(),
        )));
    }
    workers.push(tokio::spawn(crate::revisions::run(
        state.clone(),
        workers_stopping.clone(),
    )));
    if let Some(listener) = metrics_listener {
        workers.push(tokio::spawn(metrics::serve(
            listener,
            state.clone(),
            workers_stopping.clone(),
        )));
    }

    tracing::info!(address = %local, name = %state.identity.name, "etcdops-agent serving (mutual TLS)");
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    // TLS is ours (`certs_tls`), so the agent's certificate can be replaced
    // while it runs.
    let router = Server::builder()
        // Above the longest budget a request may ask for (Defragment: 1 h);
        // every handler bounds its own work.
        .timeout(REQUEST_TIMEOUT)
        // Large HTTP/2 receive windows: a restore's snapshot upload is bounded
        // by flow control with the 64 KiB default (the coordinator's channel
        // does the same for snapshot downloads).
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        // Every RPC in a span continuing the caller's trace (its trace ID in every log line).
        .trace_fn(crate::telemetry::rpc_span)
        .add_service(rpc::service(state.clone(), audit));
    // The server task holds `alive` while it runs: the watchdog stops
    // pinging once it has ended.
    let alive = Arc::new(());
    let server_token = alive.clone();
    let serving = router.serve_with_incoming_shutdown(crate::certs_tls::incoming(listener, tls), async {
        let _ = serving_stopped.await;
    });
    let mut server = tokio::spawn(async move {
        let _alive = server_token;
        serving.await
    });
    if let Some(period) = crate::notify::watchdog_interval() {
        workers.push(tokio::spawn(crate::notify::watchdog(
            period,
            Arc::downgrade(&alive),
            workers_stopping.clone(),
        )));
    }
    drop(alive);
    crate::notify::ready(&serving_status(&config, local, &state.identity.name));
    let served = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            crate::notify::stopping(&format!(
                "stopping: draining RPCs (up to {}s){}",
                DRAIN_TIMEOUT.as_secs(),
                if config.unit.backend == Backend::Process { ", then stopping etcd" } else { "" }
            ));
            let _ = stop_serving.send(());
            // In-flight RPCs get a grace period; idle client connections do not hold shutdown up.
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("RPCs still running after {DRAIN_TIMEOUT:?}; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let _ = stop_workers.send(true);
    for worker in workers {
        if tokio::time::timeout(WORKER_STOP_TIMEOUT, worker).await.is_err() {
            tracing::warn!("a background worker did not stop within {WORKER_STOP_TIMEOUT:?}");
        }
    }
    let served = served.context("the agent API task failed")?;

    if config.unit.backend == Backend::Process
        && let Err(e) = state.unit.stop(state.stop_timeout).await
    {
        tracing::error!(error = %e, "stopping etcd at shutdown");
    }
    served.context("serving the agent API")
}

/// The `STATUS=` line once the agent serves: where, as whom, which member.
fn serving_status(config: &AgentConfig, local: std::net::SocketAddr, name: &str) -> String {
    let backend = match config.unit.backend {
        Backend::Process => "process backend".to_string(),
        Backend::Systemd => config.unit.name.clone(),
    };
    let metrics = config
        .metrics_listen
        .map(|m| format!(", /metrics on {m}"))
        .unwrap_or_default();
    format!(
        "serving on {local} as agent {name}{metrics}; etcd member at {} ({backend})",
        config.etcd.endpoint
    )
}
