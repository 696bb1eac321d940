//! End-to-end: high availability of `etcdops serve` (issue 15) on a real
//! home etcd and a real 3-member cluster with its agents: the election
//! (`serve::ha`), the journal in the home etcd guarded by the leader's term
//! (`journal::etcd`), and fences at the epochs of the election's term, so
//! that a deposed leader can neither journal nor act, and the new leader
//! carries the operation on.

use std::path::PathBuf;
use std::time::Duration;

use etcdops_coordinator::agents::Agents;
use etcdops_coordinator::exec::fence::term_epoch;
use etcdops_coordinator::fleet::Fleet;
use etcdops_coordinator::fleet::home::{HomeEtcd, HomeTls, JournalLocation};
use etcdops_coordinator::journal::{
    EtcdStore, Journal, JournalError, OpState, OperationRecord, StepRecord, StepState,
};
use etcdops_coordinator::plan::operation::{Operation, RunOptions};
use etcdops_coordinator::plan::planner::OpKind;
use etcdops_coordinator::serve::ha::{Ha, HaConfig, HaError, unfinished};
use etcdops_proto::v1::{AcquireFenceRequest, DisarmAlarmsRequest, Fence};
use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

fn home_of(cluster: &Cluster, member: usize) -> HomeEtcd {
    HomeEtcd {
        endpoints: vec![cluster.layout.members[member].client_url.clone()],
        prefix: "/etcdops-e2e/".into(),
        journal: JournalLocation::Home,
        tls: cluster.layout.etcd_client.as_ref().map(|t| HomeTls {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
    }
}

fn replica(name: &str) -> HaConfig {
    HaConfig {
        lease_ttl_secs: 3,
        replica: Some(name.to_string()),
        ..HaConfig::default()
    }
}

fn record(id: &str, cluster: &str, holder: &str, epoch: u64) -> OperationRecord {
    OperationRecord {
        id: id.into(),
        kind: OpKind::AlarmDisarm,
        cluster: cluster.into(),
        fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
        operation: Operation::AlarmDisarm,
        options: RunOptions::default(),
        holder: holder.into(),
        epoch,
        state: OpState::Running,
        created_at_unix: 1,
        updated_at_unix: 1,
        error: None,
        steps: vec![
            StepRecord::pending("disarm-alarms", "disarm alarms"),
            StepRecord::pending("verify-writes", "verify writes"),
        ],
    }
}

fn acquire(cluster: &Cluster, fence: &Fence, holder: &str) -> Vec<Result<u64, tonic::Status>> {
    (0..cluster.layout.members.len())
        .map(|i| {
            let mut client = cluster.client(i, &Caller::Coordinator);
            cluster
                .block_on(client.acquire_fence(AcquireFenceRequest {
                    fence: Some(fence.clone()),
                    holder: holder.to_string(),
                    operation_kind: "alarm-disarm".into(),
                    takeover: false,
                }))
                .map(|r| r.into_inner().epoch)
        })
        .collect()
}

fn highest_epoch(cluster: &Cluster) -> u64 {
    (0..cluster.layout.members.len())
        .filter_map(|i| cluster.get_status(i, &Caller::Coordinator, 2000).ok())
        .flat_map(|s| s.fences)
        .map(|f| f.epoch)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_deposed_leader_can_neither_journal_nor_act_and_the_new_one_carries_on() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let home_cluster = Cluster::builder().members(1).start(bins!());
    let home = home_of(&home_cluster, 0);
    let fleet = Fleet::load(cluster.fleet_path()).expect("fleet");
    let name = fleet.clusters[0].name.clone();
    let agents = Agents::new(
        fleet.tls.files().client().expect("coordinator TLS"),
        Duration::from_secs(5),
    );

    // Start-up checks: the home etcd answers and is none of the fleet's
    // clusters; an operated cluster's etcd as home is refused.
    let a = cluster
        .block_on(Ha::connect(&home, replica("replica-a")))
        .expect("home etcd");
    cluster
        .block_on(a.verify_home(&agents, &fleet))
        .expect("the home etcd is not operated");
    let operated = cluster
        .block_on(Ha::connect(&home_of(&cluster, 1), replica("x")))
        .expect("connects");
    let err = cluster
        .block_on(operated.verify_home(&agents, &fleet))
        .expect_err("an operated cluster as home");
    assert!(matches!(err, HaError::Operated { .. }), "{err}");
    assert!(err.to_string().contains(&format!("cluster {name}")), "{err}");
    let unreachable = HomeEtcd {
        endpoints: vec!["http://127.0.0.1:1".into()],
        tls: None,
        ..home.clone()
    };
    let err = cluster
        .block_on(Ha::connect(&unreachable, replica("x")))
        .expect_err("nothing listens there");
    assert!(err.to_string().contains("does not answer"), "{err}");

    // A is elected; B waits in its campaign (a standby).
    let mut term_a = cluster.block_on(a.campaign()).expect("A elected");
    let b = cluster
        .block_on(Ha::connect(&home, replica("replica-b")))
        .expect("home etcd");
    let b_campaign = {
        let b = b.clone();
        // The cluster's runtime drives it while the test blocks on others.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let handle = rt.spawn(async move { b.campaign().await });
        (rt, handle)
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(!b_campaign.1.is_finished(), "B must wait while A leads");
    assert_eq!(
        cluster.block_on(b.leader()).as_deref(),
        Some("replica-a"),
        "the standby sees the leader"
    );

    // A journals an operation and takes the fence at its term's epoch.
    let journal_a = a.journal(&term_a).expect("journal");
    let epoch_a = term_epoch(&name, term_a.term, highest_epoch(&cluster)).expect("epoch");
    assert_eq!(epoch_a >> 16, term_a.term, "the term is the epoch's high bits");
    let op = "alarm-disarm-e2e-ha";
    journal_a
        .create(&record(op, &name, "replica-a", epoch_a))
        .expect("leader writes");
    let fence_a = Fence {
        cluster: name.clone(),
        epoch: epoch_a,
        operation_id: op.into(),
        step: String::new(),
    };
    for r in acquire(&cluster, &fence_a, "replica-a") {
        assert_eq!(r.expect("A acquires"), epoch_a);
    }
    journal_a.step_started(op, "disarm-alarms").expect("step started");
    let disarm = |fence: &Fence, step: &str| {
        let mut client = cluster.client(0, &Caller::Coordinator);
        cluster.block_on(client.disarm_alarms(DisarmAlarmsRequest {
            fence: Some(Fence {
                step: step.into(),
                ..fence.clone()
            }),
            alarms: vec![],
        }))
    };
    let first = disarm(&fence_a, "disarm-alarms#1").expect("A acts").into_inner();
    journal_a
        .step_finished(op, "disarm-alarms", StepState::Done, Some("none active".into()))
        .expect("step done");

    // Readers (op list|show) see it and cannot write.
    let reader = Journal::etcd(EtcdStore::connect(&home, None).expect("reader"));
    assert_eq!(reader.find("alarm-disarm-e2e").expect("found").id, op);
    assert!(reader.path().display().to_string().starts_with("etcd:"));
    let err = reader.finish(op, OpState::Aborted, None).expect_err("read only");
    assert!(matches!(err, JournalError::ReadOnly { .. }), "{err}");

    // A loses its lease (as when paused past its TTL: etcd expires it).
    let mut etcd = cluster
        .block_on(etcd_client::Client::connect(
            home.endpoints.clone(),
            etcdops_tests::etcd_connect_options(&home_cluster.layout),
        ))
        .expect("etcd");
    cluster.block_on(etcd.lease_revoke(term_a.lease)).expect("revoke");
    let reason = cluster
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), term_a.ended()).await })
        .expect("A learns within the TTL");
    assert!(!term_a.holds() && reason.contains("lease"), "{reason}");
    let term_b = b_campaign
        .0
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), b_campaign.1).await })
        .expect("B elected within the TTL")
        .expect("task")
        .expect("campaign");
    assert!(term_b.term > term_a.term, "{} vs {}", term_b.term, term_a.term);

    // The deposed leader can no longer journal...
    let err = journal_a.step_started(op, "verify-writes").expect_err("deposed");
    assert!(matches!(err, JournalError::NotLeader { .. }), "{err}");
    assert!(err.to_string().contains("no longer the leader"), "{err}");
    // ...nor take a fence at its term.
    let err = term_epoch(&name, term_a.term, term_epoch(&name, term_b.term, 0).expect("b"))
        .expect_err("older term");
    assert!(err.to_string().contains("a newer leader"), "{err}");

    // B carries the operation on from its first unfinished step.
    let journal_b = b.journal(&term_b).expect("journal");
    let left = unfinished(&journal_b).expect("list");
    assert_eq!(left.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [op]);
    assert_eq!(left[0].next_step().map(|s| s.id.as_str()), Some("verify-writes"));
    let epoch_b = term_epoch(&name, term_b.term, highest_epoch(&cluster)).expect("epoch");
    let fence_b = Fence {
        epoch: epoch_b,
        ..fence_a.clone()
    };
    for r in acquire(&cluster, &fence_b, "replica-b") {
        assert_eq!(r.expect("B takes the operation over"), epoch_b);
    }
    journal_b
        .update(op, |r| {
            r.holder = "replica-b".into();
            r.epoch = epoch_b;
        })
        .expect("B writes");
    // A retry of the finished step by B is answered from the agent's record.
    let retried = disarm(&fence_b, "disarm-alarms#1")
        .expect("answered")
        .into_inner();
    assert_eq!(first, retried);

    // A wakes up: its next agent call is refused, naming the new holder.
    let err = disarm(&fence_a, "verify-writes#1").expect_err("deposed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("replica-b") && err.message().contains(&format!("epoch {epoch_b}")),
        "{}",
        err.message()
    );

    journal_b.step_started(op, "verify-writes").expect("B journals");
    journal_b
        .step_finished(op, "verify-writes", StepState::Done, None)
        .expect("B journals");
    let done = journal_b
        .finish(op, OpState::Succeeded, None)
        .expect("B finishes");
    let steps: Vec<(u32, StepState)> = done.steps.iter().map(|s| (s.attempts, s.state)).collect();
    assert_eq!(
        steps,
        [(1, StepState::Done), (1, StepState::Done)],
        "no step ran twice"
    );
    let log = std::fs::read_to_string(&cluster.member(0).agent_log).expect("agent log");
    assert_eq!(
        log.matches("retried call answered from the record").count(),
        1,
        "{log}"
    );
    cluster.block_on(b.resign(term_b));
}
