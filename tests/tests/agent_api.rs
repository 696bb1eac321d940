//! End-to-end: the agent API accepts only coordinator certificates of the
//! fleet CA, and answers bad requests with InvalidArgument.

use etcdops_tests::{Caller, Cluster, bins, etcd_metrics};
use tonic::Code;

#[test]
fn only_coordinator_certificates_of_the_fleet_ca_are_served() {
    let cluster = Cluster::builder().members(1).start(bins!());

    let ok = cluster
        .get_status(0, &Caller::Coordinator, 0)
        .expect("the coordinator is served");
    assert_eq!(ok.agent.expect("agent info").name, "etcd1");

    let err = cluster
        .get_status(0, &Caller::NoCertificate, 0)
        .expect_err("no certificate must be refused");
    assert_ne!(err.code(), Code::Ok);

    let err = cluster
        .get_status(0, &Caller::OtherCa, 0)
        .expect_err("another CA must be refused");
    assert_ne!(err.code(), Code::Ok);

    let err = cluster
        .health(0, &Caller::Agent(0), 0)
        .expect_err("an agent certificate must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("coordinator role"),
        "the refusal says why: {}",
        err.message()
    );
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
    assert!(
        cluster
            .health(0, &Caller::Coordinator, 0)
            .expect("health")
            .healthy
    );
}

#[test]
fn stop_and_start_etcd_through_the_agent() {
    use etcdops_proto::v1::{UnitRequest, UnitState, UnitStatusRequest};
    let cluster = Cluster::builder().members(3).start(bins!());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = cluster.client(2, &Caller::Coordinator);
    let fence = cluster.acquire_fence("e2e-stop");
    let request = UnitRequest {
        boot: false,
        fence: Some(fence.clone()),
        operation_id: "e2e-stop".into(),
        timeout_ms: 0,
    };

    let stopped = rt
        .block_on(client.stop_etcd(request.clone()))
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state(), UnitState::Inactive, "{stopped:?}");
    let health = cluster
        .health(2, &Caller::Coordinator, 1000)
        .expect("health answers");
    assert!(!health.healthy, "a stopped member is not healthy");

    let started = rt
        .block_on(client.start_etcd(request.clone()))
        .expect("start")
        .into_inner();
    assert_eq!(started.state(), UnitState::Active, "{started:?}");
    cluster.wait_until(
        "the restarted member to be healthy",
        std::time::Duration::from_secs(30),
        |c| c.is_healthy(),
    );
    let unit = rt
        .block_on(client.get_unit_status(UnitStatusRequest {}))
        .expect("unit")
        .into_inner();
    assert_eq!(unit.state(), UnitState::Active);

    // Bad input: named field, nothing done.
    let err = rt
        .block_on(client.restart_etcd(UnitRequest {
            boot: false,
            fence: Some(fence.clone()),
            operation_id: String::new(),
            timeout_ms: 700_000,
        }))
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    // An agent certificate may not stop etcd.
    let mut intruder = cluster.client(2, &Caller::Agent(0));
    let err = rt.block_on(intruder.stop_etcd(request)).expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(cluster.is_healthy(), "nothing was stopped");
}

#[test]
fn env_file_changes_take_effect_and_data_dirs_are_only_moved_aside() {
    use etcdops_proto::v1::{EnvVar, MoveDataDirAsideRequest, SetEtcdEnvRequest, UnitRequest};
    let cluster = Cluster::builder().members(3).start(bins!());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = cluster.client(2, &Caller::Coordinator);
    let m = cluster.member(2).clone();
    let fence = Some(cluster.acquire_fence("e2e-env"));
    let unit = |op: &str| UnitRequest {
        boot: false,
        fence: fence.clone(),
        operation_id: op.into(),
        timeout_ms: 0,
    };

    // Bad input is refused with the field named, and the file is untouched.
    let original = std::fs::read_to_string(&m.env_file).expect("env file");
    for (key, value) in [("PATH", "/tmp"), ("ETCD_ADVERTISE_CLIENT_URLS", "not a url")] {
        let err = rt
            .block_on(client.set_etcd_env(SetEtcdEnvRequest {
                fence: fence.clone(),
                operation_id: "e2e-bad".into(),
                set: vec![EnvVar {
                    key: key.into(),
                    value: value.into(),
                }],
                unset: vec![],
            }))
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(key), "{}", err.message());
    }
    assert_eq!(std::fs::read_to_string(&m.env_file).expect("env file"), original);

    // A change plus a restart takes effect: etcd reports the new quota.
    let set = rt
        .block_on(client.set_etcd_env(SetEtcdEnvRequest {
            fence: fence.clone(),
            operation_id: "e2e-quota".into(),
            set: vec![EnvVar {
                key: "ETCD_QUOTA_BACKEND_BYTES".into(),
                value: "1073741824".into(),
            }],
            unset: vec![],
        }))
        .expect("set")
        .into_inner();
    assert!(set.changed);
    assert_eq!(
        std::fs::read_to_string(&set.previous_path).expect("previous kept"),
        original
    );
    let text = std::fs::read_to_string(&m.env_file).expect("env file");
    assert!(
        text.starts_with(original.lines().next().expect("first line")),
        "comments kept"
    );
    rt.block_on(client.restart_etcd(unit("e2e-restart")))
        .expect("restart");
    cluster.wait_until(
        "the restarted member to be healthy",
        std::time::Duration::from_secs(30),
        |c| c.is_healthy(),
    );
    let metrics = etcd_metrics(&m.client_url);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("etcd_server_quota_backend_bytes ") && l.contains("1.073741824e+09")),
        "the new quota is in force"
    );

    // The data dir moves aside only while etcd is stopped, and is never deleted.
    let err = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "test".into(),
        }))
        .expect_err("refused while running");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(m.data_dir.join("member/wal").is_dir(), "nothing moved");
    rt.block_on(client.stop_etcd(unit("e2e-stop"))).expect("stop");
    let err = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "Bad Reason".into(),
        }))
        .expect_err("bad reason");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("reason:"), "{}", err.message());
    let moved = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "test".into(),
        }))
        .expect("moved")
        .into_inner();
    let kept = std::path::Path::new(&moved.moved_to);
    assert!(
        kept.join("member/wal").is_dir(),
        "the old data is kept at {}",
        kept.display()
    );
    assert!(!m.data_dir.exists(), "the data dir itself was renamed");
    assert_eq!(moved.kept_copies, vec![moved.moved_to.clone()]);
}

#[test]
fn hash_kv_agrees_across_members_and_refuses_bad_revisions() {
    use etcdops_proto::v1::HashKvRequest;
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    cluster.put_bulk("h/", 50, 100);
    let hash = |i: usize, revision: i64| {
        cluster.block_on(cluster.client(i, &Caller::Coordinator).hash_kv(HashKvRequest {
            revision,
            timeout_ms: 0,
        }))
    };
    let newest = hash(0, 0).expect("hashkv").into_inner();
    assert!(newest.revision > 50 && newest.member_id != 0, "{newest:?}");
    let at = newest.revision;
    cluster.wait_until(
        "every member applied the revision",
        std::time::Duration::from_secs(10),
        |_| (0..3).all(|i| hash(i, at).is_ok()),
    );
    let hashes: Vec<u32> = (0..3)
        .map(|i| hash(i, at).expect("hashkv").into_inner().hash)
        .collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "the same history hashes the same: {hashes:?}"
    );

    let err = hash(0, -1).expect_err("negative revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("revision:"), "{}", err.message());
    let err = hash(0, at + 1_000_000).expect_err("future revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("above the cluster's current revision"),
        "{}",
        err.message()
    );
}
