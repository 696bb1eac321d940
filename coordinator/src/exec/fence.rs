//! Taking and giving back a cluster's fence on every agent: one writer per
//! cluster. The agents enforce it (they refuse mutating calls without the
//! holder's fence); this is the coordinator's side of the handshake.

use etcdops_proto::v1 as pb;

use crate::agents::{AgentError, AgentErrorKind, Agents};
use crate::fleet::Cluster;

/// Why the fence could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Another operation holds the cluster (the agents' message names it).
    #[error("cluster {cluster} is busy: {message}")]
    Held { cluster: String, message: String },
    /// A serve replica whose election term is older than a fence an agent
    /// recorded: a newer leader has run (it was deposed).
    #[error(
        "cluster {cluster}: an agent recorded fence epoch {highest}, of election term {} or later, \
         above this serve replica's term {term}: a newer leader has taken over; this one steps down",
        highest >> TERM_SHIFT
    )]
    Deposed {
        cluster: String,
        term: u64,
        highest: u64,
    },
    /// An agent could not be asked.
    #[error("cannot take cluster {cluster}'s fence: {source}")]
    Agent {
        cluster: String,
        #[source]
        source: Box<AgentError>,
    },
}

/// A serve leader's fence epochs are `term << TERM_SHIFT | n`: the election's
/// revision (etcd's `LeaderKey.rev`) in the high bits, so every epoch of a
/// newer term is above every epoch of an older one, and `n` leaves room for
/// CLI operations (highest recorded + 1) in between within a term.
pub const TERM_SHIFT: u32 = 16;

/// The epoch a serve leader of election term `term` takes a fence at, given
/// the highest epoch the agents recorded: the term's first epoch, or the one
/// after the highest when that is already in this term. Refused when the
/// highest is of a newer term (this replica was deposed) or fills the term.
pub fn term_epoch(cluster: &str, term: u64, highest: u64) -> Result<u64, FenceError> {
    let base = term.checked_shl(TERM_SHIFT).filter(|b| b >> TERM_SHIFT == term);
    let next_term = base.and_then(|b| b.checked_add(1 << TERM_SHIFT));
    match (base, next_term) {
        (Some(base), Some(_)) if highest < base => Ok(base),
        (Some(_), Some(next)) if highest + 1 < next => Ok(highest + 1),
        _ => Err(FenceError::Deposed {
            cluster: cluster.to_string(),
            term,
            highest,
        }),
    }
}

/// The fence of an operation on a cluster.
pub fn fence(cluster: &str, epoch: u64, operation_id: &str, step: &str) -> pb::Fence {
    pb::Fence {
        cluster: cluster.into(),
        epoch,
        operation_id: operation_id.into(),
        step: step.into(),
    }
}

/// Takes the fence on every member's agent with `epoch` (which must be above
/// every epoch the agents recorded, unless this operation already holds it).
/// On any refusal the agents that granted it are released again and the
/// refusal is returned. Agents named in `optional` (a dead member being
/// removed) may fail to answer; a refusal from them still counts.
pub async fn acquire(
    agents: &Agents,
    cluster: &Cluster,
    request: pb::AcquireFenceRequest,
    optional: &[String],
) -> Result<pb::Fence, FenceError> {
    let replies = agents
        .fan_out(&cluster.members, move |mut client| {
            let request = request.clone();
            async move { client.acquire_fence(request).await }
        })
        .await;
    let mut granted = Vec::new();
    let mut refusal = None;
    let mut fence_out = None;
    for (reply, member) in replies.into_iter().zip(&cluster.members) {
        match reply.result {
            Ok(state) => {
                granted.push(member.clone());
                fence_out = Some(fence(&state.cluster, state.epoch, &state.operation_id, ""));
            }
            Err(e) if optional.contains(&member.name) && !matches!(e.kind, AgentErrorKind::Rpc { .. }) => {
                tracing::warn!(member = %member.name, error = %e, "fence not taken on a member that does not answer (it is being removed)");
            }
            Err(e) if refusal.is_none() => refusal = Some(e),
            Err(_) => {}
        }
    }
    match (refusal, fence_out) {
        (None, Some(f)) => Ok(f),
        (refusal, fence_out) => {
            if let Some(f) = fence_out {
                let subset = Cluster {
                    members: granted,
                    ..cluster.clone()
                };
                release(agents, &subset, &f).await;
            }
            let Some(e) = refusal else {
                return Err(FenceError::Held {
                    cluster: cluster.name.clone(),
                    message: "the cluster has no members".into(),
                });
            };
            Err(match &e.kind {
                AgentErrorKind::Rpc {
                    code: tonic::Code::FailedPrecondition | tonic::Code::Aborted,
                    message,
                } => FenceError::Held {
                    cluster: cluster.name.clone(),
                    message: format!("agent {}: {message}", e.member),
                },
                _ => FenceError::Agent {
                    cluster: cluster.name.clone(),
                    source: Box::new(e),
                },
            })
        }
    }
}

/// Gives the fence back on every member's agent; failures are logged and
/// returned as warnings (the next operation's acquire reports what is left).
pub async fn release(agents: &Agents, cluster: &Cluster, fence: &pb::Fence) -> Vec<String> {
    let request = pb::ReleaseFenceRequest {
        fence: Some(fence.clone()),
    };
    let replies = agents
        .fan_out(&cluster.members, move |mut client| {
            let request = request.clone();
            async move { client.release_fence(request).await }
        })
        .await;
    let mut warnings = Vec::new();
    for reply in replies {
        if let Err(e) = reply.result {
            tracing::warn!(member = %reply.member, error = %e, "could not release the fence");
            warnings.push(format!("could not release the fence on {}: {e}", reply.member));
        }
    }
    warnings
}

/// The members whose agents may hold `record`'s fence: `cluster`'s, plus
/// any host the operation was adding that is not in the fleet yet (named in
/// the second list: it may not answer).
pub fn members_of(cluster: &Cluster, record: &crate::journal::OperationRecord) -> (Cluster, Vec<String>) {
    let mut cluster = cluster.clone();
    let mut optional = Vec::new();
    let membership = record.operation.membership();
    for j in membership.joining.iter().chain(&membership.rejoining) {
        if cluster.member(&j.name).is_none()
            && let Ok(m) = crate::fleet::Member::new(&j.name, &j.agent)
        {
            optional.push(m.name.clone());
            cluster.members.push(m);
        }
    }
    (cluster, optional)
}

/// Frees the cluster's fence wherever an agent records it as held by
/// `operation_id` (an operation being aborted): takes it over at a higher
/// epoch under an `abort-…` ID, then releases it. `term`: a serve leader's
/// election term, whose epochs it must use ([`term_epoch`]); `None` for the
/// CLI (the highest recorded + 1). What happened, for the person or the log;
/// `Ok(None)` when no agent held it for that operation.
pub async fn free(
    agents: &Agents,
    cluster: &Cluster,
    operation_id: &str,
    optional: &[String],
    term: Option<u64>,
) -> Result<Option<String>, FenceError> {
    let view = crate::observe::observe(agents, &cluster.name, &cluster.members).await;
    if !view.holders().iter().any(|h| h.operation_id == operation_id) {
        return Ok(None);
    }
    let highest = view.highest_epoch();
    let epoch = match term {
        Some(term) => term_epoch(&cluster.name, term, highest)?,
        None => highest + 1,
    };
    let abort_id = crate::journal::new_operation_id("abort", time::OffsetDateTime::now_utc());
    let request = pb::AcquireFenceRequest {
        fence: Some(fence(&cluster.name, epoch, &abort_id, "")),
        holder: crate::journal::holder(),
        operation_kind: "abort".into(),
        takeover: true,
    };
    let taken = acquire(agents, cluster, request, optional).await?;
    let warnings = release(agents, cluster, &taken).await;
    Ok(Some(if warnings.is_empty() {
        format!("the cluster's fence is free (epoch {})", taken.epoch)
    } else {
        format!(
            "fence taken over at epoch {} but not released everywhere: {}",
            taken.epoch,
            warnings.join("; ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_epochs_order_terms_and_leave_room_for_cli_operations() {
        let t = |term: u64| term << TERM_SHIFT;
        // (term, highest recorded) -> epoch, or deposed
        let table = [
            (5, 0, Some(t(5))),
            (5, 7, Some(t(5))),
            (5, t(5), Some(t(5) + 1)),
            (5, t(5) + 41, Some(t(5) + 42)),
            (5, t(6) - 2, Some(t(6) - 1)),
            (5, t(6) - 1, None),
            (5, t(6), None),
            (5, t(9) + 3, None),
            (u64::MAX >> 8, 0, None),
        ];
        for (term, highest, want) in table {
            let got = term_epoch("c1", term, highest);
            match (got, want) {
                (Ok(e), Some(w)) => assert_eq!(e, w, "term {term} highest {highest}"),
                (Err(e), None) => {
                    assert!(e.to_string().contains("a newer leader"), "{e}");
                }
                (got, want) => panic!("term {term} highest {highest}: {got:?} vs {want:?}"),
            }
        }
    }
}
