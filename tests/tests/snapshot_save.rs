//! End-to-end: `etcdops snapshot save` streams a verified snapshot through
//! an agent; a stream that breaks leaves no file that looks like a snapshot.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcdops_tests::{Cluster, EtcdRelease, bins};

fn etcdctl_status(file: &Path) -> serde_json::Value {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcdctl json")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn saves_a_verified_snapshot_from_a_follower_with_its_metadata() {
    snapshot_from_a_follower(EtcdRelease::Debian34);
}

/// The same on etcd 3.5 (the matrix's representative subset).
#[test]
fn saves_a_verified_snapshot_from_a_follower_with_its_metadata_on_etcd_3_5() {
    snapshot_from_a_follower(EtcdRelease::V3_5);
}

fn snapshot_from_a_follower(release: EtcdRelease) {
    let cluster = Cluster::builder().etcd(release).members(3).start(bins!());
    cluster.put_bulk("k", 200, 1000);
    let out_dir = tempfile::tempdir().expect("tempdir");

    let out = cluster.etcdops(&[
        "snapshot",
        "save",
        "--out",
        out_dir.path().to_str().expect("utf-8"),
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let path = Path::new(report["path"].as_str().expect("path"));
    assert!(path.starts_with(out_dir.path()));
    assert!(
        report["why"].as_str().is_some_and(|w| w.contains("follower")),
        "{report:#}"
    );

    // etcdctl accepts the file, and our metadata agrees with it.
    let status = etcdctl_status(path);
    assert!(status["totalKey"].as_u64().is_some_and(|k| k >= 200), "{status}");
    let data = std::fs::read(path).expect("snapshot");
    assert_eq!(report["size"].as_u64(), Some(data.len() as u64));
    assert_eq!(data.len() % 512, 32, "etcd's sha256 trailer is there");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", path.display())).expect("sidecar"))
            .expect("json");
    assert_eq!(sidecar["sha256"], report["sha256"]);
    assert_eq!(sidecar["cluster"], "e2e");
    assert!(
        sidecar["revision"].as_i64().is_some_and(|r| r >= 201),
        "{sidecar:#}"
    );
    assert_eq!(
        files_in(out_dir.path()).len(),
        2,
        "the snapshot and its sidecar, nothing else"
    );

    // Never overwritten.
    let again = cluster.etcdops(&["snapshot", "save", "--out", path.to_str().expect("utf-8")]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(path).expect("unchanged"), data);

    // An unknown member is refused before anything is written.
    let bad = cluster.etcdops(&[
        "snapshot",
        "save",
        "--member",
        "etcd9",
        "--out",
        out_dir.path().to_str().expect("utf-8"),
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("etcd9"), "{}", bad.stderr);
    assert_eq!(files_in(out_dir.path()).len(), 2);
}

#[test]
fn a_member_stalling_mid_stream_leaves_no_file() {
    let cluster = Cluster::builder().members(3).start(bins!());
    // About 60 MB, so the transfer is still running when the member freezes.
    cluster.put_bulk("big", 600, 100_000);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("snap.db");

    let child = cluster.etcdops_spawn(&[
        "snapshot",
        "save",
        "--member",
        "etcd2",
        "--timeout",
        "1s",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    // Freeze etcd2 as soon as the partial file exists: the stream stops mid-way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !files_in(out_dir.path()).iter().any(|n| n.contains(".part")) {
        assert!(Instant::now() < deadline, "the save never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    cluster.freeze_etcd(1, true);
    let output = child.wait_with_output().expect("etcdops");
    cluster.freeze_etcd(1, false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the save must fail");
    assert!(
        stderr.contains("etcd2") && stderr.contains("mid-stream"),
        "{stderr}"
    );
    assert!(
        files_in(out_dir.path()).is_empty(),
        "no partial or final file left: {:?}",
        files_in(out_dir.path())
    );
    cluster.wait_until("the cluster to recover", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
}
