//! End-to-end: `etcdops upgrade` of a real 3-member cluster from Debian's
//! etcd 3.4.23 to etcd 3.5.1 (`deploy/dev/setup.sh` installs it in
//! /opt/etcd-3.5.1) on the process backend: the guards refuse (unsafe
//! release, missing binary, mixed versions, a downgrade after the cluster
//! version moved), a rollback before the cluster version moves returns every
//! member to 3.4.23 with the data intact, and the upgrade under the load
//! generator's writes (a retrying client), its coordinator SIGKILLed after
//! the first member and the operation finished by `op resume`, fails no
//! write, changes the leader at most once per restart, keeps every key and
//! ends on cluster version 3.5.

use std::time::Duration;

use etcdops_tests::loadgen::{LoadConfig, LoadGen};
use etcdops_tests::{Caller, Cluster, ETCD_35_DIR, bins, step_ids};

fn target() -> String {
    format!("{ETCD_35_DIR}/etcd")
}

fn versions(cluster: &Cluster) -> Vec<String> {
    (0..cluster.layout.members.len())
        .map(|i| {
            cluster
                .get_status(i, &Caller::Coordinator, 5000)
                .expect("status")
                .member
                .expect("member")
                .etcd_version
        })
        .collect()
}

fn counts(cluster: &Cluster, prefix: &str) -> Vec<i64> {
    cluster
        .layout
        .members
        .iter()
        .map(|m| cluster.local_count(&m.client_url, prefix))
        .collect()
}

/// Each member's `etcd_cluster_version` gauge (the series at 1: etcd keeps
/// the previous version's at 0).
fn cluster_versions(cluster: &Cluster) -> Vec<String> {
    cluster
        .layout
        .members
        .iter()
        .map(|m| {
            etcdops_tests::etcd_metrics(&m.client_url, cluster.layout.etcd_client.as_ref())
                .lines()
                .filter(|l| l.ends_with("} 1"))
                .find_map(|l| l.strip_prefix("etcd_cluster_version{cluster_version=\""))
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Waits until an upgrade other than `not` has `steps` done steps: its ID
/// and the done steps' IDs.
fn steps_done(
    ops: &etcdops_tests::Coordinator,
    not: &str,
    steps: usize,
    timeout: Duration,
) -> (String, Vec<String>) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        for op in ops.operations() {
            if op["kind"] != "upgrade" || op["id"] == not {
                continue;
            }
            let done: Vec<String> = op["steps"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter(|s| s["state"] == "done")
                        .filter_map(|s| s["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if done.len() >= steps {
                return (op["id"].as_str().expect("id").to_string(), done);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no upgrade reached {steps} done step(s) within {timeout:?}");
}

fn refused(out: &etcdops_tests::CliOutput, code: i32, says: &str) {
    assert_eq!(out.code, code, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(says), "expected {says:?} in:\n{}", out.stderr);
}

#[test]
fn etcd_3_4_to_3_5_rolls_back_before_the_version_moves_and_upgrades_under_load() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let bin = target();
    cluster.put_bulk("keep/", 150, 300);
    assert_eq!(versions(&cluster), vec!["3.4.23"; 3]);

    // Guards that change nothing.
    let out = ops.run(&["upgrade", "--etcd-binary", &bin, "--dry-run"]);
    refused(&out, 2, "recommend against in production");
    let out = ops.run(&[
        "upgrade",
        "--etcd-binary",
        "/nonexistent/etcd-3.5/etcd",
        "--accept-unsafe-release",
        "--dry-run",
    ]);
    refused(&out, 2, "not runnable there");
    let out = ops.run(&["upgrade", "--etcd-binary", "/usr/bin/etcd", "--dry-run"]);
    refused(&out, 2, "already runs etcd 3.4.23");

    // The plan: a snapshot, followers, a transfer, the leader, the cluster version.
    let dry = ops.run(&[
        "upgrade",
        "--to",
        "3.5.1",
        "--accept-unsafe-release",
        "--dry-run",
        "-w",
        "json",
    ]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    let plan = dry.json();
    let ids: Vec<String> = plan["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 6, "{plan}");
    assert_eq!(ids[0], "snapshot");
    assert!(
        ids[1].starts_with("switch-binary:") && ids[2].starts_with("switch-binary:"),
        "{ids:?}"
    );
    assert!(
        ids[3].starts_with("transfer-leadership:") && ids[4].starts_with("switch-binary:"),
        "{ids:?}"
    );
    assert_eq!(ids[5], "cluster-version");
    assert!(
        plan["plan"]["notes"]
            .to_string()
            .contains(&format!("possible until step {}", ids[4])),
        "{plan}"
    );

    // Two followers on 3.5.1, then paused: the cluster version has not moved.
    let out = ops.run(&[
        "upgrade",
        "--etcd-binary",
        &bin,
        "--accept-unsafe-release",
        "--yes",
        "--pause-after",
        &ids[2],
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "paused", "{record}");
    let first = record["id"].as_str().expect("id").to_string();
    let mut mixed = versions(&cluster);
    mixed.sort();
    assert_eq!(mixed, ["3.4.23", "3.5.1", "3.5.1"]);
    assert_eq!(cluster_versions(&cluster), vec!["3.4"; 3]);
    assert_eq!(counts(&cluster, "keep/"), vec![150; 3]);
    // Held while paused; mixed versions refused once it is aborted.
    let out = ops.run(&[
        "upgrade",
        "--etcd-binary",
        &bin,
        "--accept-unsafe-release",
        "--yes",
    ]);
    assert_eq!(out.code, 3, "busy while paused: {}", out.stderr);
    let out = ops.run(&["op", "abort", &first]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ops.run(&[
        "upgrade",
        "--etcd-binary",
        &bin,
        "--accept-unsafe-release",
        "--dry-run",
    ]);
    refused(&out, 2, "members run different etcd versions");

    // Rollback: both upgraded members back on 3.4.23, the data intact.
    let out = ops.run(&["upgrade", "--rollback", &first, "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let rollback = out.json();
    assert_eq!(rollback["state"], "succeeded", "{rollback}");
    let switched = step_ids(&rollback)
        .iter()
        .filter(|id| id.starts_with("switch-binary:"))
        .count();
    assert_eq!(switched, 2, "the two upgraded members: {rollback}");
    assert_eq!(versions(&cluster), vec!["3.4.23"; 3]);
    assert_eq!(counts(&cluster, "keep/"), vec![150; 3]);

    // The upgrade under load.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let cfg = LoadConfig {
        rate: 100,
        concurrency: 8,
        key_prefix: "load/".into(),
        write_deadline: Duration::from_secs(10),
        ..LoadConfig::new(endpoints, cluster.layout.etcd_client.clone())
    };
    let load = rt.block_on(LoadGen::start(cfg)).expect("starting the load");
    std::thread::sleep(Duration::from_secs(2));
    // Its coordinator SIGKILLed after the snapshot and the first member,
    // then `op resume`: the steps done are not redone.
    let mut child = ops.spawn(&[
        "upgrade",
        "--etcd-binary",
        &bin,
        "--accept-unsafe-release",
        "--yes",
    ]);
    let (second, done) = steps_done(&ops, &first, 2, Duration::from_secs(120));
    child.kill().expect("SIGKILL the coordinator");
    let _ = child.wait();
    eprintln!("upgrade {second} killed after {done:?}");
    cluster.wait_until("healthy before resuming", Duration::from_secs(60), |c| {
        c.is_healthy()
    });
    let out = ops.run(&["op", "resume", &second, "-w", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    let report = rt.block_on(load.stop());
    eprintln!(
        "load during the upgrade: {report}\n--- etcdops op resume stderr\n{}",
        out.stderr
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["id"], second.as_str(), "{record}");
    let steps = record["steps"].as_array().expect("steps");
    for step in steps {
        assert_eq!(step["state"], "done", "{step}");
        if done.iter().any(|d| step["id"] == d.as_str()) {
            assert_eq!(step["attempts"], 1, "finished steps are not redone: {step}");
        }
    }
    let restarts: u64 = steps
        .iter()
        .filter(|s| {
            s["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("switch-binary:"))
        })
        .map(|s| s["attempts"].as_u64().unwrap_or(1))
        .sum();
    let moved = steps
        .iter()
        .find(|s| s["id"] == "cluster-version")
        .expect("cluster-version step")
        .to_string();
    assert!(moved.contains("moved to 3.5"), "{moved}");
    assert_eq!(report.failed, 0, "no write failed: {report}");
    assert!(report.ok > 0, "{report}");
    assert!(
        report.leader_changes <= restarts,
        "at most one leader change per restart ({restarts}): {report}"
    );
    assert_eq!(versions(&cluster), vec!["3.5.1"; 3]);
    assert_eq!(cluster_versions(&cluster), vec!["3.5"; 3]);
    assert_eq!(counts(&cluster, "keep/"), vec![150; 3], "every key still there");
    let show = ops.run(&["op", "show", &second]);
    assert!(
        show.stdout.contains("snapshot:"),
        "the pre-upgrade snapshot is named: {}",
        show.stdout
    );

    // After the cluster version moved: no downgrade, no rollback.
    let out = ops.run(&["upgrade", "--etcd-binary", "/usr/bin/etcd", "--dry-run"]);
    refused(&out, 2, "after the cluster version moved to 3.5");
    let out = ops.run(&["upgrade", "--rollback", &second, "--dry-run"]);
    refused(&out, 2, "already moved to 3.5");
}

/// The agent RPCs directly: EtcdVersions reads any binary's version and the
/// member's; SetEtcdBinary needs the fence and a binary that answers
/// `--version`, and takes effect at the next start.
#[test]
fn the_binary_switch_is_fenced_and_checks_the_binary() {
    use etcdops_proto::v1::{EtcdVersionsRequest, SetEtcdBinaryRequest};
    let cluster = Cluster::builder()
        .members(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let mut client = cluster.client(0, &Caller::Coordinator);
    let versions = cluster
        .block_on(client.etcd_versions(EtcdVersionsRequest {
            binaries: vec![target(), "/nonexistent/etcd".into()],
            timeout_ms: 5000,
        }))
        .expect("EtcdVersions")
        .into_inner();
    assert_eq!(versions.unit_binary, versions.configured_binary);
    assert_eq!(versions.binaries[0].version, "3.5.1", "{versions:?}");
    assert!(versions.binaries[1].version.is_empty() && !versions.binaries[1].problem.is_empty());
    assert_eq!(
        (
            versions.server_version.as_str(),
            versions.cluster_version.as_str()
        ),
        ("3.4.23", "3.4")
    );

    let err = cluster
        .block_on(client.set_etcd_binary(SetEtcdBinaryRequest {
            fence: None,
            path: target(),
        }))
        .expect_err("no fence");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let fence = cluster.acquire_fence("switch-1");
    let err = cluster
        .block_on(client.set_etcd_binary(SetEtcdBinaryRequest {
            fence: Some(fence.clone()),
            path: "/nonexistent/etcd".into(),
        }))
        .expect_err("missing binary");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("/nonexistent/etcd"), "{}", err.message());
    let switched = cluster
        .block_on(client.set_etcd_binary(SetEtcdBinaryRequest {
            fence: Some(fence.clone()),
            path: target(),
        }))
        .expect("switch")
        .into_inner();
    assert_eq!(
        (switched.binary.as_str(), switched.version.as_str()),
        (target().as_str(), "3.5.1")
    );
    assert_eq!(switched.previous, versions.configured_binary);
    let recorded =
        std::fs::read_to_string(cluster.member(0).state_dir.join("etcd-binary")).expect("recorded");
    assert_eq!(recorded.trim(), target());
    // Not running it yet: the next start does.
    assert_eq!(versions_of(&cluster), "3.4.23");
    cluster.release_fence(&fence);
}

fn versions_of(cluster: &Cluster) -> String {
    versions(cluster).remove(0)
}
