//! etcd maintenance through the local member: Defragment, Compact,
//! MoveLeader, DisarmAlarms, WriteProbe (all fenced by the caller, see
//! `rpc::fence::fenced`) and RevisionAt (a read); membership changes are in
//! `membership.rs`. Domain results from
//! `etcd::LocalMember`, converted here; [`etcd_status`] is the one mapping
//! of etcd errors to gRPC codes. The member's futures are boxed: large, and
//! copied per frame in debug builds (a worker's stack overflowed).

use std::time::{Duration, Instant};

use etcdops_proto::v1 as pb;
use tonic::Status;

use crate::etcd::{AlarmInfo, EtcdError, MemberRefusal};
use crate::state::AgentState;

/// A budget field's default and maximum, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub default_ms: u32,
    pub max_ms: u32,
}

pub const DEFRAGMENT: Budget = Budget {
    default_ms: 300_000,
    max_ms: 3_600_000,
};
pub const COMPACT: Budget = Budget {
    default_ms: 60_000,
    max_ms: 600_000,
};
pub const MOVE_LEADER: Budget = Budget {
    default_ms: 10_000,
    max_ms: 60_000,
};
pub const WRITE_PROBE: Budget = Budget {
    default_ms: 5_000,
    max_ms: 60_000,
};
pub const HASH_KV: Budget = Budget {
    default_ms: 30_000,
    max_ms: 300_000,
};
/// DisarmAlarms has no budget field.
const DISARM_TIMEOUT: Duration = Duration::from_secs(10);

/// `field` (milliseconds): 0 = the default, above the maximum = InvalidArgument naming the field.
pub fn budget(field: &'static str, ms: u32, b: Budget) -> Result<Duration, Status> {
    match ms {
        0 => Ok(Duration::from_millis(u64::from(b.default_ms))),
        ms if ms > b.max_ms => Err(Status::invalid_argument(format!(
            "{field}: {ms} is above the maximum of {} ms; use 0 for the default",
            b.max_ms
        ))),
        ms => Ok(Duration::from_millis(u64::from(ms))),
    }
}

/// The one mapping from etcd errors to gRPC status codes.
pub fn etcd_status(e: EtcdError) -> Status {
    let code = match &e {
        EtcdError::Timeout { .. } => tonic::Code::DeadlineExceeded,
        EtcdError::Call { .. } => tonic::Code::Unavailable,
        EtcdError::Rejected { code, .. } => *code,
        EtcdError::NoSpace { .. } => tonic::Code::ResourceExhausted,
        EtcdError::NotLeader { .. } => tonic::Code::FailedPrecondition,
        EtcdError::FutureRevision { .. } => tonic::Code::InvalidArgument,
        EtcdError::TlsFile(_) => tonic::Code::Internal,
        EtcdError::TooManyLearners { .. } => tonic::Code::FailedPrecondition,
        EtcdError::MemberRefused { refusal, .. } => match refusal {
            MemberRefusal::Unhealthy | MemberRefusal::LearnerNotInSync => tonic::Code::Unavailable,
            MemberRefusal::NotEnoughStarted | MemberRefusal::NotALearner | MemberRefusal::TooManyLearners => {
                tonic::Code::FailedPrecondition
            }
            MemberRefusal::PeerUrlExists => tonic::Code::AlreadyExists,
            MemberRefusal::MemberNotFound => tonic::Code::NotFound,
            MemberRefusal::BadUrls => return Status::invalid_argument(format!("peer_urls: {e}")),
        },
    };
    Status::new(code, e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub async fn defragment(state: &AgentState, timeout: Duration) -> Result<pb::DefragmentResponse, Status> {
    let started = Instant::now();
    let d = Box::pin(state.etcd.defragment(timeout))
        .await
        .map_err(etcd_status)?;
    tracing::info!(member = %format!("{:x}", d.member_id), before = d.db_size_before, after = d.db_size_after, "defragmented");
    Ok(pb::DefragmentResponse {
        member_id: d.member_id,
        db_size_before: d.db_size_before,
        db_size_after: d.db_size_after,
        db_size_in_use_after: d.db_size_in_use_after,
        took_ms: millis(started.elapsed()),
    })
}

pub async fn hash_kv(state: &AgentState, request: &pb::HashKvRequest) -> Result<pb::HashKvResponse, Status> {
    if request.revision < 0 {
        return Err(Status::invalid_argument(format!(
            "revision: {} must be 0 (the newest) or above",
            request.revision
        )));
    }
    let timeout = budget("timeout_ms", request.timeout_ms, HASH_KV)?;
    let h = state
        .etcd
        .hash_kv(request.revision, timeout)
        .await
        .map_err(etcd_status)?;
    Ok(pb::HashKvResponse {
        member_id: h.member_id,
        hash: h.hash,
        compact_revision: h.compact_revision,
        revision: h.revision,
    })
}

/// `revision` of a CompactRequest: above 0.
pub fn compact_revision(revision: i64) -> Result<i64, Status> {
    if revision <= 0 {
        return Err(Status::invalid_argument(format!(
            "revision: {revision} must be above 0"
        )));
    }
    Ok(revision)
}

pub async fn compact(
    state: &AgentState,
    revision: i64,
    physical: bool,
    timeout: Duration,
) -> Result<pb::CompactResponse, Status> {
    let started = Instant::now();
    let already_compacted = Box::pin(state.etcd.compact(revision, physical, timeout))
        .await
        .map_err(etcd_status)?;
    tracing::info!(revision, physical, already_compacted, "compacted");
    Ok(pb::CompactResponse {
        revision,
        already_compacted,
        took_ms: millis(started.elapsed()),
    })
}

/// `target_member_id` of a MoveLeaderRequest: required.
pub fn move_target(target: u64) -> Result<u64, Status> {
    if target == 0 {
        return Err(Status::invalid_argument(
            "target_member_id: required: the member to hand leadership to",
        ));
    }
    Ok(target)
}

pub async fn move_leader(
    state: &AgentState,
    target: u64,
    timeout: Duration,
) -> Result<pb::MoveLeaderResponse, Status> {
    let started = Instant::now();
    let moved = Box::pin(state.etcd.move_leader(target, timeout))
        .await
        .map_err(etcd_status)?;
    tracing::info!(from = %format!("{:x}", moved.previous_leader_id), to = %format!("{:x}", moved.leader_id), "leadership moved");
    Ok(pb::MoveLeaderResponse {
        previous_leader_id: moved.previous_leader_id,
        leader_id: moved.leader_id,
        took_ms: millis(started.elapsed()),
    })
}

/// The alarms a DisarmAlarmsRequest names: kind NOSPACE or CORRUPT
/// (member 0 = on any member).
pub fn alarm_filter(alarms: &[pb::Alarm]) -> Result<Vec<AlarmInfo>, Status> {
    alarms
        .iter()
        .enumerate()
        .map(|(i, a)| match a.kind.as_str() {
            "NOSPACE" | "CORRUPT" => Ok(AlarmInfo {
                member_id: a.member_id,
                kind: a.kind.clone(),
            }),
            other => Err(Status::invalid_argument(format!(
                "alarms[{i}].kind: {other:?} is not NOSPACE or CORRUPT"
            ))),
        })
        .collect()
}

pub async fn disarm_alarms(
    state: &AgentState,
    wanted: Vec<AlarmInfo>,
) -> Result<pb::DisarmAlarmsResponse, Status> {
    let active = Box::pin(state.etcd.alarms(DISARM_TIMEOUT))
        .await
        .map_err(etcd_status)?;
    let chosen: Vec<AlarmInfo> = active
        .into_iter()
        .filter(|a| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| w.kind == a.kind && (w.member_id == 0 || w.member_id == a.member_id))
        })
        .collect();
    for alarm in &chosen {
        Box::pin(state.etcd.disarm(alarm, DISARM_TIMEOUT))
            .await
            .map_err(etcd_status)?;
        tracing::warn!(kind = %alarm.kind, member = %format!("{:x}", alarm.member_id), "alarm disarmed");
    }
    let remaining = Box::pin(state.etcd.alarms(DISARM_TIMEOUT))
        .await
        .map_err(etcd_status)?;
    let to_pb = |a: AlarmInfo| pb::Alarm {
        member_id: a.member_id,
        kind: a.kind,
    };
    Ok(pb::DisarmAlarmsResponse {
        disarmed: chosen.into_iter().map(to_pb).collect(),
        remaining: remaining.into_iter().map(to_pb).collect(),
    })
}

/// The key a write probe uses for a member.
pub fn write_probe_key(member_name: &str) -> String {
    format!("/etcdops/write-probe/{member_name}")
}

pub async fn write_probe(
    state: &AgentState,
    operation_id: String,
    timeout: Duration,
) -> Result<pb::WriteProbeResponse, Status> {
    let name = match Box::pin(state.etcd.status(timeout)).await {
        Ok(s) if !s.member_name.is_empty() => s.member_name,
        _ => state.identity.name.clone(),
    };
    let key = write_probe_key(&name);
    let probed = Box::pin(state.etcd.write_probe(&key, &operation_id, timeout))
        .await
        .map_err(etcd_status)?;
    Ok(pb::WriteProbeResponse {
        key,
        revision: probed.revision,
        latency_us: u64::try_from(probed.latency.as_micros()).unwrap_or(u64::MAX),
    })
}

pub fn revision_at(state: &AgentState, unix_time: i64) -> pb::RevisionAtResponse {
    let ring = state.revisions.ring();
    let oldest_sample_unix = ring.oldest().map_or(0, |s| s.unix);
    match ring.at(unix_time) {
        Some(s) => pb::RevisionAtResponse {
            found: true,
            revision: s.revision,
            sampled_at_unix: s.unix,
            oldest_sample_unix,
        },
        None => pb::RevisionAtResponse {
            found: false,
            revision: 0,
            sampled_at_unix: 0,
            oldest_sample_unix,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_name_their_field() {
        assert_eq!(
            budget("timeout_ms", 0, DEFRAGMENT).expect("default"),
            Duration::from_secs(300)
        );
        assert_eq!(
            budget("timeout_ms", 3_600_000, DEFRAGMENT).expect("max"),
            Duration::from_secs(3600)
        );
        let err = budget("timeout_ms", 60_001, MOVE_LEADER).expect_err("too long");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .starts_with("timeout_ms: 60001 is above the maximum of 60000 ms"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn fields_are_validated() {
        assert!(
            compact_revision(0)
                .expect_err("0")
                .message()
                .starts_with("revision:")
        );
        assert_eq!(compact_revision(7).expect("ok"), 7);
        assert!(
            move_target(0)
                .expect_err("0")
                .message()
                .starts_with("target_member_id:")
        );
        let err = alarm_filter(&[
            pb::Alarm {
                member_id: 1,
                kind: "NOSPACE".into(),
            },
            pb::Alarm {
                member_id: 0,
                kind: "x".into(),
            },
        ])
        .expect_err("bad kind");
        assert!(err.message().starts_with("alarms[1].kind:"), "{}", err.message());
    }

    #[test]
    fn etcd_errors_map_to_codes() {
        let nospace = etcd_status(EtcdError::NoSpace {
            endpoint: "http://e:2379".into(),
        });
        assert_eq!(nospace.code(), tonic::Code::ResourceExhausted);
        assert!(
            nospace.message().contains("NOSPACE") && nospace.message().contains("etcdops recover nospace")
        );
        let not_leader = etcd_status(EtcdError::NotLeader {
            member_id: 1,
            leader: "etcd2 (2)".into(),
        });
        assert_eq!(not_leader.code(), tonic::Code::FailedPrecondition);
        assert!(not_leader.message().contains("etcd2"));
        let rejected = etcd_status(EtcdError::Rejected {
            endpoint: "e".into(),
            code: tonic::Code::FailedPrecondition,
            message: "bad leader transferee".into(),
        });
        assert_eq!(rejected.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            etcd_status(EtcdError::Call {
                endpoint: "e".into(),
                message: "x".into()
            })
            .code(),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn membership_refusals_map_to_codes() {
        let refused = |refusal, message: &str| {
            etcd_status(EtcdError::MemberRefused {
                endpoint: "http://e:2379".into(),
                refusal,
                message: message.into(),
            })
        };
        let unhealthy = refused(MemberRefusal::Unhealthy, "etcdserver: unhealthy cluster");
        assert_eq!(unhealthy.code(), tonic::Code::Unavailable);
        assert_eq!(
            refused(
                MemberRefusal::LearnerNotInSync,
                "etcdserver: can only promote a learner member which is in sync with leader"
            )
            .code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            refused(
                MemberRefusal::NotEnoughStarted,
                "etcdserver: re-configuration failed due to not enough started members"
            )
            .code(),
            tonic::Code::FailedPrecondition
        );
        let bad = refused(
            MemberRefusal::BadUrls,
            "etcdserver: given member URLs are invalid",
        );
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().starts_with("peer_urls: "), "{}", bad.message());
        assert_eq!(
            refused(MemberRefusal::MemberNotFound, "etcdserver: member not found").code(),
            tonic::Code::NotFound
        );
        let learners = etcd_status(EtcdError::TooManyLearners {
            learner: "etcd4 (a1)".into(),
        });
        assert_eq!(learners.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            learners.message(),
            "etcd allows one learner at a time: promote or remove learner etcd4 (a1) first"
        );
    }
}
