//! Start-up and shutdown: TLS, the listener, the unit, the gRPC server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::{AgentConfig, Backend};
use crate::rpc;
use crate::state::AgentState;

/// How long etcd gets to stop when the agent shuts down (a leader may take
/// several seconds to hand over leadership).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long in-flight RPCs may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let (tls, identity) = config
        .tls
        .files()
        .server_config()
        .context("loading the agent's TLS files (see [tls] in the agent config)")?;
    let state = Arc::new(AgentState::new(&config, identity).context("preparing the agent")?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (see `listen` in the agent config)", config.listen))?;
    let local = listener.local_addr().context("reading the listen address")?;

    if config.unit.backend == Backend::Process && config.unit.autostart {
        state.unit.start().await.context("starting etcd (process backend)")?;
    }

    tracing::info!(address = %local, name = %state.identity.name, "etcdops-agent serving (mutual TLS)");
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)
        .context("configuring TLS")?
        .timeout(Duration::from_secs(120))
        .add_service(rpc::service(state.clone()));
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        async {
            let _ = serving_stopped.await;
        },
    ));
    let served = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
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
    let served = served.context("the agent API task failed")?;

    if config.unit.backend == Backend::Process
        && let Err(e) = state.unit.stop(STOP_TIMEOUT).await
    {
        tracing::error!(error = %e, "stopping etcd at shutdown");
    }
    served.context("serving the agent API")
}
