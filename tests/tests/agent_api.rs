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
