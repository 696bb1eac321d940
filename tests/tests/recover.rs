//! End-to-end: `etcdops recover --force-new-cluster` of a real 3-member
//! cluster that lost its majority (two members' etcd down), and the
//! refusals around it.

use std::path::Path;
use std::time::Duration;

use etcdops_proto::v1::UnitRequest;
use etcdops_tests::{Caller, Cluster, EtcdRelease, bins, step_ids};

fn kept(data_dir: &Path, reason: &str) -> usize {
    let parent = data_dir.parent().expect("parent");
    let prefix = format!(
        "{}.{reason}-",
        data_dir.file_name().expect("name").to_string_lossy()
    );
    std::fs::read_dir(parent)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// Stops members' etcd through their agents (under a fence of the test's own).
fn stop_etcd(cluster: &Cluster, members: &[usize]) {
    let fence = cluster.acquire_fence("e2e-lose-majority");
    for &i in members {
        let request = UnitRequest {
            boot: false,
            fence: Some(fence.clone()),
            operation_id: "e2e-lose-majority".into(),
            timeout_ms: 0,
        };
        cluster
            .block_on(cluster.client(i, &Caller::Coordinator).stop_etcd(request))
            .expect("stop etcd");
    }
    cluster.release_fence(&fence);
}

#[test]
fn a_cluster_that_lost_its_majority_is_rebuilt_from_the_survivor() {
    rebuilt_from_the_survivor(EtcdRelease::Debian34);
}

/// The same on etcd 3.5 (the matrix's representative subset).
#[test]
fn a_cluster_that_lost_its_majority_is_rebuilt_from_the_survivor_on_etcd_3_5() {
    rebuilt_from_the_survivor(EtcdRelease::V3_5);
}

fn rebuilt_from_the_survivor(release: EtcdRelease) {
    let cluster = Cluster::builder()
        .etcd(release)
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("keep/", 80, 300);
    let names: Vec<String> = cluster.layout.members.iter().map(|m| m.name.clone()).collect();

    // A healthy cluster is refused: nothing to force.
    let out = ops.run(&["recover", "--force-new-cluster", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("has its majority") && out.stderr.contains("member replace"),
        "{}",
        out.stderr
    );
    let out = ops.run(&["recover"]);
    assert_eq!(out.code, 2, "no procedure named is usage: {}", out.stderr);

    stop_etcd(&cluster, &[1, 2]);
    let old_id = cluster
        .get_status(0, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member")
        .cluster_id;

    // A member whose etcd is down cannot be the survivor.
    let out = ops.run(&["recover", "--force-new-cluster", "--from", &names[1], "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not answer") && out.stderr.contains(&format!("pick {}", names[0])),
        "{}",
        out.stderr
    );
    // Without --yes and without a terminal: refused, nothing done.
    let out = ops.run(&["recover", "--force-new-cluster"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);

    let dry = ops.run(&["recover", "--force-new-cluster", "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let ids: Vec<String> = dry.json()["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    let survivor = &names[0];
    assert_eq!(
        ids,
        [
            format!("snapshot:{survivor}"),
            "stop-others".into(),
            format!("force-new-cluster:{survivor}"),
            format!("rejoin:{}", names[1]),
            format!("rejoin:{}", names[2]),
            "verify-recovery".into()
        ]
    );

    let snapshots = tempfile::tempdir().expect("tempdir");
    // Paused once the survivor leads alone (as a coordinator that died there
    // would leave it), then resumed: the rejoins run from the journal.
    let forced = format!("force-new-cluster:{survivor}");
    let out = ops.run(&[
        "recover",
        "--force-new-cluster",
        "--snapshot-dir",
        snapshots.path().to_str().expect("utf-8"),
        "--pause-after",
        &forced,
        "--yes",
        "-w",
        "json",
    ]);
    eprintln!("{}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let paused = out.json();
    assert_eq!(paused["state"], "paused", "{paused}");
    let alone = cluster
        .get_status(0, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member");
    assert_eq!(
        alone.members.len(),
        1,
        "the survivor leads a one-member cluster: {:?}",
        alone.members
    );
    let env = std::fs::read_to_string(&cluster.layout.members[0].env_file).expect("env file");
    assert!(
        !env.contains("ETCD_FORCE_NEW_CLUSTER"),
        "the flag is gone as soon as the survivor leads alone:\n{env}"
    );

    let out = ops.run(&["op", "resume", paused["id"].as_str().expect("id"), "-w", "json"]);
    eprintln!("{}", out.stderr);
    let record = out.succeeded();
    assert_eq!(step_ids(&record), ids);
    let forced_step = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == forced.as_str())
        .expect("step")
        .clone();
    assert_eq!(
        forced_step["attempts"], 1,
        "force-new-cluster ran once: {forced_step}"
    );
    cluster.wait_until(
        "healthy after the recovery",
        Duration::from_secs(30),
        Cluster::is_healthy,
    );

    for m in &cluster.layout.members {
        assert_eq!(
            cluster.local_count(&m.client_url, "keep/"),
            80,
            "{}: the survivor's data",
            m.name
        );
    }
    let status = cluster.get_status(0, &Caller::Coordinator, 2000).expect("status");
    let member = status.member.expect("member");
    assert_eq!(
        member.cluster_id, old_id,
        "force-new-cluster keeps the cluster ID"
    );
    assert_eq!(member.members.len(), 3, "{:?}", member.members);
    assert!(
        member.members.iter().all(|m| !m.is_learner),
        "every member promoted: {:?}",
        member.members
    );
    let env = std::fs::read_to_string(&cluster.layout.members[0].env_file).expect("env file");
    assert!(
        !env.contains("ETCD_FORCE_NEW_CLUSTER"),
        "the flag is not left behind:\n{env}"
    );
    for m in &cluster.layout.members[1..] {
        assert_eq!(
            kept(&m.data_dir, "before-join"),
            1,
            "{}: its old data dir kept",
            m.name
        );
    }
    let written = std::fs::read_dir(snapshots.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .count();
    assert_eq!(written, 1, "the survivor's snapshot was written first");
    cluster.put_bulk("after/", 10, 100);
}
