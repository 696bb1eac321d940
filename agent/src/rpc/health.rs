//! Health: a linearizable read through the local member.

use std::time::Duration;

use etcdops_proto::v1::HealthResponse;

use crate::state::AgentState;

pub async fn health(state: &AgentState, timeout: Duration) -> HealthResponse {
    match state.etcd.health(timeout).await {
        Ok(h) => HealthResponse {
            healthy: true,
            latency_us: u64::try_from(h.latency.as_micros()).unwrap_or(u64::MAX),
            error: String::new(),
            member_id: h.member_id,
            revision: h.revision,
        },
        Err(e) => HealthResponse {
            healthy: false,
            error: e.to_string(),
            ..Default::default()
        },
    }
}
