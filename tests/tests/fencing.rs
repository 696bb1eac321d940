//! End-to-end: fencing (one writer per cluster, persisted across agent
//! restarts, retries answered from the record, also after an agent restart)
//! and the etcd maintenance RPCs
//! on a real 3-member cluster.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcdops_proto::v1::{
    CompactRequest, DefragmentRequest, DisarmAlarmsRequest, Fence, MoveLeaderRequest, ReleaseFenceRequest,
    RevisionAtRequest, UnitRequest, WriteProbeRequest,
};
use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

fn defrag(fence: &Fence) -> DefragmentRequest {
    DefragmentRequest {
        fence: Some(fence.clone()),
        timeout_ms: 0,
    }
}

fn with_step(fence: &Fence, step: &str) -> Fence {
    Fence {
        step: step.to_string(),
        ..fence.clone()
    }
}

#[test]
fn one_writer_per_cluster_persisted_and_retries_answered_once() {
    let mut cluster = Cluster::builder().members(3).start(bins!());
    let mut client = cluster.client(0, &Caller::Coordinator);

    // No fence: refused, nothing done.
    let err = cluster
        .block_on(client.stop_etcd(UnitRequest {
            boot: false,
            fence: None,
            operation_id: "e2e".into(),
            timeout_ms: 0,
        }))
        .expect_err("no fence");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "fence: required: mutating calls must come from an etcdops operation holding the cluster's fence"
    );
    let err = cluster
        .block_on(client.defragment(DefragmentRequest {
            fence: None,
            timeout_ms: 0,
        }))
        .expect_err("no fence");
    assert_eq!(err.code(), Code::InvalidArgument);
    let no_cluster = Fence {
        cluster: String::new(),
        ..cluster.fence("op-a", 1)
    };
    let err = cluster
        .block_on(client.defragment(defrag(&no_cluster)))
        .expect_err("no cluster");
    assert!(err.message().starts_with("fence.cluster:"), "{}", err.message());

    // A holds the fence; B is refused with the holder named.
    let a = cluster.acquire_fence("op-a");
    let status = cluster.get_status(0, &Caller::Coordinator, 0).expect("status");
    assert_eq!(status.fences.len(), 1, "{:?}", status.fences);
    let f = &status.fences[0];
    assert_eq!(
        (f.cluster.as_str(), f.epoch, f.held, f.operation_id.as_str()),
        ("e2e", a.epoch, true, "op-a")
    );
    assert_eq!(
        (f.holder.as_str(), f.operation_kind.as_str()),
        ("e2e-harness", "e2e")
    );
    assert!(f.acquired_at_unix > 0);

    let b = cluster.fence("op-b", cluster.next_epoch());
    let err = cluster.try_acquire_fence(0, &b, false).expect_err("held by op-a");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for part in [
        "e2e-harness",
        "operation op-a (e2e)",
        "since",
        &format!("epoch {}", a.epoch),
        "etcdops op abort op-a",
        "--takeover",
    ] {
        assert!(
            err.message().contains(part),
            "{part:?} missing: {}",
            err.message()
        );
    }
    // A stale epoch, even with takeover.
    let stale = cluster.fence("op-b", a.epoch);
    let err = cluster
        .try_acquire_fence(0, &stale, true)
        .expect_err("stale epoch");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        err.message().starts_with(&format!(
            "epoch {0} is not above the recorded epoch {0} for cluster e2e",
            a.epoch
        )),
        "{}",
        err.message()
    );
    // A call under a fence the agent does not record as held.
    let err = cluster
        .block_on(client.defragment(defrag(&b)))
        .expect_err("b does not hold it");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("operation op-a"), "{}", err.message());

    // A retried call (same operation and step) is answered from the record.
    let step = with_step(&a, "defrag-etcd1");
    let first = cluster
        .block_on(client.defragment(defrag(&step)))
        .expect("defragment")
        .into_inner();
    let retry = cluster
        .block_on(client.defragment(defrag(&step)))
        .expect("retry")
        .into_inner();
    assert_eq!(
        first, retry,
        "the retry gets the first call's answer (took_ms included)"
    );
    let log = std::fs::read_to_string(&cluster.member(0).agent_log).expect("agent log");
    assert_eq!(
        log.matches("defragmented").count(),
        1,
        "one defragmentation:\n{log}"
    );
    assert!(log.contains("retried call answered from the record"), "{log}");

    // Takeover: B takes the fence; A is refused from then on.
    for i in 0..3 {
        let state = cluster.try_acquire_fence(i, &b, true).expect("takeover");
        assert!(
            state.held && state.operation_id == "op-b" && state.epoch == b.epoch,
            "{state:?}"
        );
    }
    let err = cluster
        .block_on(client.defragment(defrag(&a)))
        .expect_err("A was taken over");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("operation op-b") && err.message().contains("stale coordinator"),
        "{}",
        err.message()
    );
    // Even its recorded step is not answered any more.
    let err = cluster
        .block_on(client.defragment(defrag(&step)))
        .expect_err("A was taken over");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = cluster
        .block_on(client.release_fence(ReleaseFenceRequest {
            fence: Some(a.clone()),
        }))
        .expect_err("A cannot release B's fence");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Release (idempotent), then a new operation acquires.
    cluster.release_fence(&b);
    let again = cluster
        .block_on(client.release_fence(ReleaseFenceRequest {
            fence: Some(b.clone()),
        }))
        .expect("again");
    assert!(!again.into_inner().held);
    let c = cluster.acquire_fence("op-c");
    assert!(c.epoch > b.epoch);

    // A call answered before an agent restart: its retry after the restart
    // is answered from the persisted record, not done again.
    let c_step = with_step(&c, "defrag-etcd1#1");
    let before_restart = cluster
        .block_on(client.defragment(defrag(&c_step)))
        .expect("defragment under C")
        .into_inner();

    // Fences survive an agent restart.
    cluster.restart_agent(0);
    let mut client = cluster.client(0, &Caller::Coordinator);
    let retried = cluster
        .block_on(client.defragment(defrag(&c_step)))
        .expect("retry after the restart")
        .into_inner();
    assert_eq!(
        before_restart, retried,
        "the retry gets the answer given before the restart"
    );
    let log = std::fs::read_to_string(&cluster.member(0).agent_log).expect("agent log");
    assert_eq!(
        log.matches("defragmented").count(),
        2,
        "one defragmentation per step, none on the retry:\n{log}"
    );
    assert_eq!(
        log.matches("retried call answered from the record").count(),
        2,
        "{log}"
    );
    assert!(cluster.member(0).state_dir.join("calls.json").is_file());
    let status = cluster.get_status(0, &Caller::Coordinator, 0).expect("status");
    let f = &status.fences[0];
    assert_eq!(
        (f.epoch, f.held, f.operation_id.as_str()),
        (c.epoch, true, "op-c"),
        "{f:?}"
    );
    let err = cluster
        .block_on(client.defragment(defrag(&b)))
        .expect_err("B released");
    assert_eq!(err.code(), Code::FailedPrecondition);
    cluster
        .block_on(client.write_probe(WriteProbeRequest {
            fence: Some(c.clone()),
            timeout_ms: 0,
        }))
        .expect("C holds it");
    let fences = cluster.member(0).state_dir.join("fences.json");
    assert!(fences.is_file());

    // A corrupt fence file stops the agent at start-up, naming the file;
    // it is never reset.
    std::fs::write(&fences, "{ half a file").expect("corrupt it");
    let out = std::process::Command::new(&cluster.bins.agent)
        .arg("--config")
        .arg(&cluster.member(0).agent_config)
        .output()
        .expect("running a second agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&fences.display().to_string()) && stderr.contains("never resets"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&fences).expect("kept"), "{ half a file");
}

#[test]
fn maintenance_rpcs_on_real_etcd() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let fence = cluster.acquire_fence("e2e-maintenance");
    let mut client = cluster.client(0, &Caller::Coordinator);

    // GetStatus reports the backend quota (etcd's default: 2 GiB).
    let member = cluster
        .get_status(0, &Caller::Coordinator, 0)
        .expect("status")
        .member
        .expect("member");
    assert_eq!(member.db_quota, 2 * 1024 * 1024 * 1024, "{member:?}");

    // RevisionAt finds the start-up sample.
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    };
    cluster.wait_until("a revision sample", Duration::from_secs(15), |c| {
        let mut client = c.client(0, &Caller::Coordinator);
        c.block_on(client.revision_at(RevisionAtRequest { unix_time: now() }))
            .is_ok_and(|r| r.get_ref().found)
    });
    let at = cluster
        .block_on(client.revision_at(RevisionAtRequest { unix_time: now() }))
        .expect("at")
        .into_inner();
    assert!(
        at.found && at.revision > 0 && at.sampled_at_unix <= now() && at.oldest_sample_unix > 0,
        "{at:?}"
    );
    let before = cluster
        .block_on(client.revision_at(RevisionAtRequest { unix_time: 1 }))
        .expect("at")
        .into_inner();
    assert!(
        !before.found && before.oldest_sample_unix == at.oldest_sample_unix,
        "{before:?}"
    );

    // WriteProbe and DisarmAlarms with none active.
    let probe = cluster
        .block_on(client.write_probe(WriteProbeRequest {
            fence: Some(fence.clone()),
            timeout_ms: 0,
        }))
        .expect("write probe")
        .into_inner();
    assert_eq!(probe.key, "/etcdops/write-probe/etcd1");
    assert!(probe.revision > 0 && probe.latency_us > 0, "{probe:?}");
    let disarmed = cluster
        .block_on(client.disarm_alarms(DisarmAlarmsRequest {
            fence: Some(fence.clone()),
            alarms: vec![],
        }))
        .expect("disarm")
        .into_inner();
    assert!(
        disarmed.disarmed.is_empty() && disarmed.remaining.is_empty(),
        "{disarmed:?}"
    );

    // Fragment the db (about 20 MB written, then deleted), compact, defragment.
    cluster.put_bulk("/frag/", 200, 100_000);
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let revision = cluster.block_on(async {
        let mut kv = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("etcd")
            .kv_client();
        let deleted = kv
            .delete("/frag/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
        assert_eq!(deleted.deleted(), 200);
        deleted.header().expect("header").revision()
    });
    let compact = |revision: i64| CompactRequest {
        fence: Some(fence.clone()),
        revision,
        physical: true,
        timeout_ms: 0,
    };
    let done = cluster
        .block_on(client.compact(compact(revision)))
        .unwrap_or_else(|e| panic!("compact: {e:?}\n{}", cluster.logs()))
        .into_inner();
    assert!(!done.already_compacted && done.revision == revision, "{done:?}");
    let again = cluster
        .block_on(client.compact(compact(revision)))
        .expect("compact again")
        .into_inner();
    assert!(again.already_compacted, "{again:?}");
    let err = cluster
        .block_on(client.compact(compact(revision + 1_000_000)))
        .expect_err("future revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("revision:"), "{}", err.message());
    let err = cluster
        .block_on(client.compact(compact(0)))
        .expect_err("revision 0");
    assert!(err.message().starts_with("revision:"), "{}", err.message());

    let defragged = cluster
        .block_on(client.defragment(defrag(&fence)))
        .expect("defragment")
        .into_inner();
    assert_eq!(defragged.member_id, member.member_id);
    assert!(
        defragged.db_size_after < defragged.db_size_before && defragged.db_size_before > 15_000_000,
        "defragment shrinks the db: {defragged:?}"
    );
    assert!(
        defragged.db_size_in_use_after <= defragged.db_size_after,
        "{defragged:?}"
    );

    // MoveLeader: refused on a follower (naming the leader), done by the leader's agent.
    let leader = cluster.leader();
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let id = |i: usize| {
        cluster
            .get_status(i, &Caller::Coordinator, 0)
            .expect("status")
            .member
            .expect("member")
            .member_id
    };
    let (leader_id, f1_id, f2_id) = (id(leader), id(f1), id(f2));
    let move_to = |target: u64, timeout_ms: u32| MoveLeaderRequest {
        fence: Some(fence.clone()),
        target_member_id: target,
        timeout_ms,
    };
    let mut follower = cluster.client(f1, &Caller::Coordinator);
    let err = cluster
        .block_on(follower.move_leader(move_to(f2_id, 0)))
        .expect_err("not the leader");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("is not the leader") && err.message().contains(&cluster.member(leader).name),
        "{}",
        err.message()
    );
    let err = cluster
        .block_on(follower.move_leader(move_to(f2_id, 60_001)))
        .expect_err("timeout");
    assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    let err = cluster
        .block_on(follower.move_leader(move_to(0, 0)))
        .expect_err("no target");
    assert!(
        err.message().starts_with("target_member_id:"),
        "{}",
        err.message()
    );

    let mut leader_client = cluster.client(leader, &Caller::Coordinator);
    let moved = cluster
        .block_on(leader_client.move_leader(move_to(f1_id, 0)))
        .expect("move leader")
        .into_inner();
    assert_eq!(
        (moved.previous_leader_id, moved.leader_id),
        (leader_id, f1_id),
        "{moved:?}"
    );
    cluster.wait_until("the new leader to be seen by all", Duration::from_secs(10), |c| {
        c.leader() == f1 && c.is_healthy()
    });
    // Asking the new leader to move to itself is nothing to do.
    let same = cluster
        .block_on(follower.move_leader(move_to(f1_id, 0)))
        .expect("already leader")
        .into_inner();
    assert_eq!(same.leader_id, f1_id);
}
