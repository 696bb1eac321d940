//! The systemd backend end to end: three systemd-nspawn hosts with a real
//! systemd, Debian's etcd.service and our agent inside (`backend = "systemd"`).
//! Prints `SKIPPED: <reason>` where the machine cannot run such hosts.

use std::time::Duration;

use etcdops_agent::unit::systemd::SystemdUnit;
use etcdops_proto::v1::{Fence, UnitRequest, UnitState, UnitStatusRequest};
use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{bins, etcd_metrics};
use tonic::Code;

fn request(fence: &Fence, op: &str) -> UnitRequest {
    UnitRequest {
        boot: false,
        fence: Some(fence.clone()),
        operation_id: op.to_string(),
        timeout_ms: 60_000,
    }
}

fn is_active(cluster: &NspawnCluster, i: usize) -> String {
    cluster.exec_stdout(i, &["systemctl", "is-active", "etcd"])
}

#[test]
fn agents_stop_start_and_restart_etcd_service() {
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins!()) else {
        return;
    };
    let fence = cluster.acquire_fence("e2e-systemd");
    for i in 0..3 {
        let status = cluster.get_status(i).expect("status");
        let unit = status.unit.expect("unit");
        assert_eq!(unit.backend, "systemd", "{unit:?}");
        assert_eq!(unit.unit, "etcd.service");
        assert_eq!(unit.state(), UnitState::Active, "{unit:?}");
        assert_eq!(unit.sub_state, "running");
        assert_ne!(unit.main_pid, 0);
        assert_eq!(is_active(&cluster, i), "active");
    }

    // The fence is kept in the agent's default state dir inside the host.
    let fences = cluster.read_in_host(2, "/var/lib/etcdops-agent/fences.json");
    assert!(
        fences.contains("\"e2e-systemd\"") && fences.contains("\"held\": true"),
        "{fences}"
    );
    let mut client = cluster.client(2);
    let stopped = cluster
        .block_on(client.stop_etcd(request(&fence, "e2e-stop")))
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state(), UnitState::Inactive, "{stopped:?}");
    assert_eq!(stopped.sub_state, "dead");
    assert_eq!(is_active(&cluster, 2), "inactive");
    assert!(
        !cluster.health(2).expect("health answers").healthy,
        "a stopped member is not healthy"
    );

    let started = cluster
        .block_on(client.start_etcd(request(&fence, "e2e-start")))
        .expect("start")
        .into_inner();
    assert_eq!(started.state(), UnitState::Active, "{started:?}");
    assert_eq!(started.sub_state, "running");
    assert_eq!(is_active(&cluster, 2), "active");
    cluster.wait_until(
        "the started member healthy",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );

    let before = started.main_pid;
    let restarted = cluster
        .block_on(client.restart_etcd(request(&fence, "e2e-restart")))
        .expect("restart")
        .into_inner();
    assert_eq!(restarted.state(), UnitState::Active, "{restarted:?}");
    assert_ne!(restarted.main_pid, before, "a restart runs a new etcd");
    assert_eq!(is_active(&cluster, 2), "active");
    cluster.wait_until(
        "the restarted member healthy",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );

    // enable/disable/daemon-reload helpers, against host 0's systemd.
    let bus = format!(
        "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
        cluster.pid1(0)
    );
    let systemd = cluster
        .block_on(SystemdUnit::connect_address(&bus, "etcd.service"))
        .expect("host 0's bus");
    let changes = cluster.block_on(systemd.disable()).expect("disable");
    assert!(
        changes.iter().any(|(kind, file, _)| kind == "unlink" && file.ends_with("multi-user.target.wants/etcd.service")),
        "{changes:?}"
    );
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-enabled", "etcd"]),
        "disabled"
    );
    let changes = cluster.block_on(systemd.enable()).expect("enable");
    assert!(
        changes.iter().any(|(kind, _, _)| kind == "symlink"),
        "{changes:?}"
    );
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-enabled", "etcd"]),
        "enabled"
    );
    cluster.block_on(systemd.daemon_reload()).expect("daemon-reload");
    assert_eq!(is_active(&cluster, 0), "active");
    drop(systemd);

    // Stopping a stopped unit is fine, and so is starting a started one.
    let mut client0 = cluster.client(0);
    let again = cluster
        .block_on(client0.start_etcd(request(&fence, "e2e-start-again")))
        .expect("start again")
        .into_inner();
    assert_eq!(again.state(), UnitState::Active);
}

#[test]
fn a_unit_that_fails_to_start_is_reported_with_its_journal() {
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins!()) else {
        return;
    };
    let fence = cluster.acquire_fence("e2e-systemd");
    let mut client = cluster.client(1);
    let stopped = cluster
        .block_on(client.stop_etcd(request(&fence, "e2e-stop")))
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state(), UnitState::Inactive);

    let good = cluster.read_in_host(1, "/etc/default/etcd");
    cluster.write_in_host(
        1,
        "/etc/default/etcd",
        &format!("{good}ETCD_HEARTBEAT_INTERVAL=\"often\"\n"),
    );
    let err = cluster
        .block_on(client.start_etcd(request(&fence, "e2e-bad-start")))
        .expect_err("start must fail");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("start job of etcd.service ended with result \"failed\""),
        "{msg}"
    );
    assert!(msg.contains("the unit is failed/failed"), "{msg}");
    assert!(
        msg.contains("last journal lines:") && msg.contains("often"),
        "{msg}"
    );

    let unit = cluster
        .block_on(client.get_unit_status(UnitStatusRequest {}))
        .expect("unit")
        .into_inner();
    assert_eq!(unit.state(), UnitState::Failed, "{unit:?}");
    assert_eq!(unit.sub_state, "failed");
    assert!(
        unit.last_log_lines.iter().any(|l| l.contains("often")),
        "{:?}",
        unit.last_log_lines
    );
    assert!(unit.detail.contains("exit-code"), "{unit:?}");
    assert_eq!(is_active(&cluster, 1), "failed");

    // Fixed: it starts and rejoins.
    cluster.write_in_host(1, "/etc/default/etcd", &good);
    let started = cluster
        .block_on(client.start_etcd(request(&fence, "e2e-start")))
        .expect("start")
        .into_inner();
    assert_eq!(started.state(), UnitState::Active, "{started:?}");
    assert!(started.last_log_lines.is_empty());
    cluster.wait_until(
        "the fixed member healthy",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );
}

#[test]
fn env_change_restart_move_aside_and_probe_on_systemd_hosts() {
    use etcdops_proto::v1::{EnvVar, MoveDataDirAsideRequest, ProbeDiskRequest, SetEtcdEnvRequest};
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins!()) else {
        return;
    };
    let fence = cluster.acquire_fence("e2e-systemd");
    let mut client = cluster.client(1);
    let url = cluster.layout.members[1].client_url.clone();

    // The disk probe inside a real host reports sane numbers.
    let probe = cluster
        .block_on(client.probe_disk(ProbeDiskRequest {
            total_bytes: 2300 * 500,
            block_size: 0,
        }))
        .expect("probe")
        .into_inner();
    assert_eq!(probe.writes, 500);
    assert!(
        probe.p50_us <= probe.p99_us && probe.p99_us <= probe.max_us,
        "{probe:?}"
    );
    assert!(probe.throughput_bytes_per_sec > 0.0);

    // An env file change plus a restart through systemd takes effect.
    let before = cluster.read_in_host(1, "/etc/default/etcd");
    let set = cluster
        .block_on(client.set_etcd_env(SetEtcdEnvRequest {
            fence: Some(fence.clone()),
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
        cluster.read_in_host(1, "/etc/default/etcd.prev"),
        before,
        "previous version kept"
    );
    cluster
        .block_on(client.restart_etcd(request(&fence, "e2e-restart")))
        .expect("restart");
    cluster.wait_until(
        "the restarted member to be healthy",
        Duration::from_secs(60),
        |c| c.is_healthy(),
    );
    assert!(
        etcd_metrics(&url, cluster.layout.etcd_client.as_ref())
            .lines()
            .any(|l| l.starts_with("etcd_server_quota_backend_bytes ") && l.contains("1.073741824e+09")),
        "the new quota is in force after the restart"
    );

    // Move-aside: refused while running, then keeps the old dir.
    let aside = |reason: &str| MoveDataDirAsideRequest {
        fence: Some(fence.clone()),
        operation_id: "e2e".into(),
        reason: reason.into(),
    };
    let err = cluster
        .block_on(client.move_data_dir_aside(aside("test")))
        .expect_err("running");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    cluster
        .block_on(client.stop_etcd(request(&fence, "e2e-stop")))
        .expect("stop");
    assert_eq!(is_active(&cluster, 1), "inactive");
    let moved = cluster
        .block_on(client.move_data_dir_aside(aside("test")))
        .expect("moved")
        .into_inner();
    let listing = cluster.exec_stdout(1, &["ls", &format!("{}/member", moved.moved_to)]);
    assert!(
        listing.contains("wal") && listing.contains("snap"),
        "old data kept: {listing}"
    );
}
