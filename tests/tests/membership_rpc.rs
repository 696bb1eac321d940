//! End-to-end: the agents' membership RPCs on a real cluster with a spare
//! host: a learner added through the leader's agent, started on the spare
//! (SetEtcdEnv + StartEtcd), promoted once in sync, then removed; every
//! call idempotent, etcd's refusals as clear gRPC statuses.

use std::time::Duration;

use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::{
    AddMemberRequest, EnvVar, Fence, MembershipResponse, PromoteMemberRequest, RemoveMemberRequest,
    SetEtcdEnvRequest, UnitRequest,
};
use etcdops_tests::{Caller, Cluster, bins};
use tonic::transport::Channel;

fn add(
    c: &Cluster,
    client: &mut AgentClient<Channel>,
    fence: &Fence,
    urls: &[&str],
    learner: bool,
) -> Result<MembershipResponse, tonic::Status> {
    let request = AddMemberRequest {
        fence: Some(fence.clone()),
        peer_urls: urls.iter().map(|u| u.to_string()).collect(),
        is_learner: learner,
        timeout_ms: 0,
    };
    c.block_on(client.add_member(request))
        .map(tonic::Response::into_inner)
}

fn promote(
    c: &Cluster,
    client: &mut AgentClient<Channel>,
    fence: &Fence,
    id: u64,
) -> Result<MembershipResponse, tonic::Status> {
    let request = PromoteMemberRequest {
        fence: Some(fence.clone()),
        member_id: id,
        timeout_ms: 0,
    };
    c.block_on(client.promote_member(request))
        .map(tonic::Response::into_inner)
}

fn remove(
    c: &Cluster,
    client: &mut AgentClient<Channel>,
    fence: &Fence,
    id: u64,
) -> Result<MembershipResponse, tonic::Status> {
    let request = RemoveMemberRequest {
        fence: Some(fence.clone()),
        member_id: id,
        timeout_ms: 0,
    };
    c.block_on(client.remove_member(request))
        .map(tonic::Response::into_inner)
}

/// The spare's member as its own agent sees it: (reachable, is_learner).
fn spare_member(c: &Cluster) -> (bool, bool) {
    c.spare_status(0)
        .ok()
        .and_then(|s| s.member)
        .map_or((false, false), |m| (m.reachable, m.is_learner))
}

#[test]
fn learner_added_started_promoted_and_removed_through_the_agents() {
    let cluster = Cluster::builder().members(3).spares(1).start(bins!());
    let spare = cluster.spare(0).clone();
    assert_eq!(spare.name, "etcd4");
    let (reachable, _) = spare_member(&cluster);
    assert!(!reachable, "the spare host runs no etcd yet");

    let leader = cluster.leader();
    let mut client = cluster.client(leader, &Caller::Coordinator);

    // Requests are validated before the fence: fields named.
    let fence = cluster.acquire_fence("membership-e2e");
    let err = add(&cluster, &mut client, &fence, &[], true).expect_err("no peer URL");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("peer_urls: required"),
        "{}",
        err.message()
    );
    let err = add(&cluster, &mut client, &fence, &["127.0.0.1:2380"], true).expect_err("not a URL");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("peer_urls[0]:"), "{}", err.message());
    let err = remove(&cluster, &mut client, &fence, 0).expect_err("no ID");
    assert!(
        err.message().starts_with("member_id: required"),
        "{}",
        err.message()
    );
    // Without the fence: refused.
    let unfenced = AddMemberRequest {
        fence: None,
        peer_urls: vec![spare.peer_url.clone()],
        is_learner: true,
        timeout_ms: 0,
    };
    assert!(
        cluster.block_on(client.add_member(unfenced)).is_err(),
        "no fence, no change"
    );

    // Add the spare as a learner through the leader's agent.
    let added = add(&cluster, &mut client, &fence, &[&spare.peer_url], true).expect("AddMember");
    assert!(added.changed && added.attempts >= 1, "{added:?}");
    eprintln!("AddMember: etcd asked {} times", added.attempts);
    let id = added.member_id;
    assert_ne!(id, 0);
    assert_eq!(added.members.len(), 4, "{added:?}");
    let new = added
        .members
        .iter()
        .find(|m| m.id == id)
        .expect("the new member is listed");
    assert!(
        new.is_learner && new.peer_urls == [spare.peer_url.clone()],
        "{new:?}"
    );

    // Again: the peer URL is a member already.
    let again = add(&cluster, &mut client, &fence, &[&spare.peer_url], true).expect("AddMember again");
    assert!(!again.changed, "{again:?}");
    assert_eq!((again.member_id, again.attempts), (id, 0));

    // A second learner while one exists.
    let other = format!(
        "http://{}.{}.{}.{}:2380",
        spare.ip.octets()[0],
        spare.ip.octets()[1],
        spare.ip.octets()[2],
        spare.ip.octets()[3] + 1
    );
    let err = add(&cluster, &mut client, &fence, &[&other], true).expect_err("one learner at a time");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("etcd allows one learner at a time: promote or remove learner")
            && err.message().contains(&format!("{id:x}")),
        "{}",
        err.message()
    );

    // The spare joins: its env file completed, then etcd started by its agent.
    let initial_cluster = cluster
        .layout
        .members
        .iter()
        .chain([&spare])
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let mut spare_client = cluster.spare_client(0);
    let env = SetEtcdEnvRequest {
        operation_id: fence.operation_id.clone(),
        set: vec![
            EnvVar {
                key: "ETCD_INITIAL_CLUSTER".into(),
                value: initial_cluster,
            },
            EnvVar {
                key: "ETCD_INITIAL_CLUSTER_STATE".into(),
                value: "existing".into(),
            },
        ],
        unset: vec![],
        fence: Some(fence.clone()),
    };
    cluster
        .block_on(spare_client.set_etcd_env(env))
        .expect("SetEtcdEnv on the spare");
    let start = UnitRequest {
        boot: false,
        operation_id: fence.operation_id.clone(),
        timeout_ms: 0,
        fence: Some(fence.clone()),
    };
    cluster
        .block_on(spare_client.start_etcd(start))
        .expect("StartEtcd on the spare");
    cluster.wait_until(
        "the spare's member reachable as a learner",
        Duration::from_secs(60),
        |c| spare_member(c) == (true, true),
    );

    // Promote: the agent retries while the learner is not yet in sync.
    let promoted = promote(&cluster, &mut client, &fence, id).expect("PromoteMember");
    assert!(promoted.changed && promoted.attempts >= 1, "{promoted:?}");
    eprintln!("PromoteMember: etcd asked {} times", promoted.attempts);
    assert!(
        promoted.members.iter().any(|m| m.id == id && !m.is_learner),
        "{promoted:?}"
    );
    cluster.wait_until("the spare's member a voter", Duration::from_secs(30), |c| {
        spare_member(c) == (true, false)
    });
    let again = promote(&cluster, &mut client, &fence, id).expect("PromoteMember again");
    assert!(!again.changed && again.attempts == 0, "{again:?}");
    // A voter from the start: nothing to do.
    let leader_id = cluster
        .get_status(leader, &Caller::Coordinator, 1000)
        .expect("status")
        .member
        .expect("member")
        .member_id;
    let voter = promote(&cluster, &mut client, &fence, leader_id).expect("PromoteMember of a voter");
    assert!(!voter.changed, "{voter:?}");

    // Remove it from the cluster first (through an original member's agent;
    // etcd then stops the removed member itself), then stop its unit.
    let removed = remove(&cluster, &mut client, &fence, id).expect("RemoveMember");
    assert!(removed.changed, "{removed:?}");
    eprintln!("RemoveMember: etcd asked {} times", removed.attempts);
    assert_eq!(removed.members.len(), 3, "{removed:?}");
    assert!(removed.members.iter().all(|m| m.id != id));
    let stop = UnitRequest {
        boot: false,
        operation_id: fence.operation_id.clone(),
        timeout_ms: 0,
        fence: Some(fence.clone()),
    };
    cluster
        .block_on(spare_client.stop_etcd(stop))
        .expect("StopEtcd on the spare");
    let again = remove(&cluster, &mut client, &fence, id).expect("RemoveMember again");
    assert!(!again.changed && again.attempts == 0, "{again:?}");
    assert_eq!(again.members.len(), 3);

    cluster.wait_until(
        "the three members healthy",
        Duration::from_secs(30),
        Cluster::is_healthy,
    );
    cluster.release_fence(&fence);
}
