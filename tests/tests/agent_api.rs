//! End-to-end: the agent API accepts only coordinator certificates of the
//! fleet CA, and answers bad requests with InvalidArgument.

use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

#[test]
fn only_coordinator_certificates_of_the_fleet_ca_are_served() {
    let cluster = Cluster::builder().members(1).start(bins!());

    let ok = cluster.get_status(0, &Caller::Coordinator, 0).expect("the coordinator is served");
    assert_eq!(ok.agent.expect("agent info").name, "etcd1");

    let err = cluster.get_status(0, &Caller::NoCertificate, 0).expect_err("no certificate must be refused");
    assert_ne!(err.code(), Code::Ok);

    let err = cluster.get_status(0, &Caller::OtherCa, 0).expect_err("another CA must be refused");
    assert_ne!(err.code(), Code::Ok);

    let err = cluster.health(0, &Caller::Agent(0), 0).expect_err("an agent certificate must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("coordinator role"), "the refusal says why: {}", err.message());
}

#[test]
fn malformed_requests_get_invalid_argument_naming_the_field() {
    let cluster = Cluster::builder().members(1).start(bins!());
    for result in [
        cluster.get_status(0, &Caller::Coordinator, 3_600_000).map(|_| ()),
        cluster.health(0, &Caller::Coordinator, 60_001).map(|_| ()),
    ] {
        let err = result.expect_err("an out-of-range timeout must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    }
    // The agent still serves after bad requests.
    assert!(cluster.health(0, &Caller::Coordinator, 0).expect("health").healthy);
}

#[test]
fn stop_and_start_etcd_through_the_agent() {
    use etcdops_proto::v1::{UnitRequest, UnitState, UnitStatusRequest};
    let cluster = Cluster::builder().members(3).start(bins!());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut client = cluster.client(2, &Caller::Coordinator);
    let request = UnitRequest { operation_id: "e2e-stop".into(), timeout_ms: 0 };

    let stopped = rt.block_on(client.stop_etcd(request.clone())).expect("stop").into_inner();
    assert_eq!(stopped.state(), UnitState::Inactive, "{stopped:?}");
    let health = cluster.health(2, &Caller::Coordinator, 1000).expect("health answers");
    assert!(!health.healthy, "a stopped member is not healthy");

    let started = rt.block_on(client.start_etcd(request.clone())).expect("start").into_inner();
    assert_eq!(started.state(), UnitState::Active, "{started:?}");
    cluster.wait_until("the restarted member to be healthy", std::time::Duration::from_secs(30), |c| c.is_healthy());
    let unit = rt.block_on(client.get_unit_status(UnitStatusRequest {})).expect("unit").into_inner();
    assert_eq!(unit.state(), UnitState::Active);

    // Bad input: named field, nothing done.
    let err = rt
        .block_on(client.restart_etcd(UnitRequest { operation_id: String::new(), timeout_ms: 700_000 }))
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    // An agent certificate may not stop etcd.
    let mut intruder = cluster.client(2, &Caller::Agent(0));
    let err = rt.block_on(intruder.stop_etcd(request)).expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(cluster.is_healthy(), "nothing was stopped");
}
