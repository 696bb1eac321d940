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
    let served = Server::builder()
        .tls_config(tls)
        .context("configuring TLS")?
        .timeout(Duration::from_secs(120))
        .add_service(rpc::service(state.clone()))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await;

    if config.unit.backend == Backend::Process
        && let Err(e) = state.unit.stop(STOP_TIMEOUT).await
    {
        tracing::error!(error = %e, "stopping etcd at shutdown");
    }
    served.context("serving the agent API")
}
