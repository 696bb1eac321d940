//! End-to-end: `etcdops snapshot status` computes what `etcdctl snapshot
//! status` computes on a real snapshot, checks the sha256 trailer, and says
//! clearly what is wrong with damaged, truncated or foreign files.

use std::path::Path;
use std::process::{Command, Output};

use etcdops_tests::{CliOutput, Cluster, bins};

/// etcdctl against `endpoint` with `tls`: the cluster's `--cacert --cert --key`.
fn etcdctl(endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(tls)
        .args(args)
        .output()
        .expect("running etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn etcdctl_status(file: &Path, format: &str) -> String {
    let out = etcdctl(
        "127.0.0.1:1",
        &[],
        &["snapshot", "status", "-w", format, file.to_str().expect("utf-8")],
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn status(cluster: &Cluster, file: &Path, json: bool) -> CliOutput {
    let file = file.to_str().expect("utf-8");
    if json {
        cluster.etcdops(&["snapshot", "status", file, "-w", "json"])
    } else {
        cluster.etcdops(&["snapshot", "status", file])
    }
}

fn assert_clean_failure(out: &CliOutput, expect: &str) {
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(expect),
        "expected {expect:?} in:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn snapshot_status_agrees_with_etcdctl_and_reports_damage() {
    let cluster = Cluster::builder().members(1).start(bins!());
    let url = cluster.member(0).client_url.clone();
    let tls = cluster.etcdctl_tls_args();

    // Some hundreds of keys, a few large values (overflow pages), overwrites,
    // deletes (tombstones), a lease, and a compaction (meta entries).
    cluster.put_bulk("key-", 400, 100);
    cluster.put_bulk("big-", 3, 20_000);
    for i in 0..10 {
        etcdctl(
            &url,
            &tls,
            &["put", &format!("key-{i}"), &format!("overwritten-{i}")],
        );
    }
    for i in 10..15 {
        etcdctl(&url, &tls, &["del", &format!("key-{i}")]);
    }
    etcdctl(&url, &tls, &["lease", "grant", "600"]);
    let marker = "MARKER-VALUE-0123456789-MARKER";
    let put = etcdctl(&url, &tls, &["put", "marker", marker, "-w", "json"]);
    let put: serde_json::Value = serde_json::from_slice(&put.stdout).expect("put json");
    let revision = put["header"]["revision"].as_i64().expect("revision");
    assert!(revision > 400, "{put}");
    etcdctl(&url, &tls, &["compact", &(revision - 5).to_string()]);
    etcdctl(&url, &tls, &["del", "key-20"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap.db");
    etcdctl(&url, &tls, &["snapshot", "save", snap.to_str().expect("utf-8")]);
    let data = std::fs::read(&snap).expect("snapshot");
    assert_eq!(data.len() % 512, 32, "etcdctl writes the sha256 trailer");

    // JSON: etcdctl's four figures exactly, and the trailer checks out.
    let theirs: serde_json::Value =
        serde_json::from_str(&etcdctl_status(&snap, "json")).expect("etcdctl json");
    let out = status(&cluster, &snap, true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ours = out.json();
    for field in ["hash", "revision", "totalKey", "totalSize"] {
        assert_eq!(
            ours[field], theirs[field],
            "{field}: ours {ours:#}, etcdctl {theirs:#}"
        );
    }
    assert_eq!(
        ours["revision"].as_i64(),
        Some(revision + 1),
        "the last delete is the newest key"
    );
    assert!(ours["totalKey"].as_u64().is_some_and(|n| n > 400), "{ours:#}");
    assert_eq!(ours["integrity"], "ok");
    let sha = ours["sha256"].as_str().expect("sha256");
    assert_eq!(sha, hex_of(&data[data.len() - 32..]), "the trailer");

    // Table: etcdctl's hash and human size, and the integrity.
    let table = status(&cluster, &snap, false);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let their_table = etcdctl_status(&snap, "table");
    let hash_hex = format!("{:x}", theirs["hash"].as_u64().expect("hash"));
    assert!(their_table.contains(&hash_hex), "{their_table}");
    assert!(
        table.stdout.contains(&format!("| {hash_hex} ")),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("| INTEGRITY |") && table.stdout.contains("| ok "),
        "{}",
        table.stdout
    );
    let size = their_table
        .lines()
        .nth(3)
        .and_then(|row| row.split('|').nth(4))
        .expect("size cell")
        .trim();
    assert!(
        table.stdout.contains(&format!("| {size} ")),
        "etcdctl says {size}:\n{}",
        table.stdout
    );

    // Without the trailer (like a copy of member/snap/db): same figures, integrity missing, exit 1.
    let bare = dir.path().join("bare.db");
    std::fs::write(&bare, &data[..data.len() - 32]).expect("write");
    let out = status(&cluster, &bare, true);
    assert_clean_failure(&out, "has no sha256 trailer");
    let report = out.json();
    assert_eq!(report["integrity"], "missing");
    assert_eq!(report["sha256"], serde_json::Value::Null);
    assert_eq!(report["hash"], theirs["hash"]);
    assert_eq!(report["totalKey"], theirs["totalKey"]);

    // One byte flipped inside a value: still readable, the trailer no longer matches.
    let at = find(&data, marker.as_bytes()).expect("the marker value is in the snapshot") + 7;
    let mut flipped = data.clone();
    flipped[at] ^= 0x01;
    let flipped_path = dir.path().join("flipped.db");
    std::fs::write(&flipped_path, &flipped).expect("write");
    let out = status(&cluster, &flipped_path, true);
    assert_clean_failure(&out, "failed its integrity check");
    let report = out.json();
    assert_eq!(report["integrity"], "mismatch");
    let theirs_flipped: serde_json::Value =
        serde_json::from_str(&etcdctl_status(&flipped_path, "json")).expect("etcdctl json");
    assert_eq!(
        report["hash"], theirs_flipped["hash"],
        "etcdctl reads the flipped file the same way"
    );
    let out = status(&cluster, &flipped_path, false);
    assert_clean_failure(&out, "failed its integrity check");
    assert!(out.stdout.contains("| mismatch "), "{}", out.stdout);

    // Truncated: a clear error, nothing on stdout.
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &data[..data.len() / 2]).expect("write");
    let out = status(&cluster, &truncated, true);
    assert_clean_failure(&out, "the file is truncated");
    assert!(
        out.stderr.contains(truncated.to_str().expect("utf-8")),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    // Not snapshots at all.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    for (name, bytes, expect) in [
        (
            "random.db",
            &random[..],
            "not an etcd snapshot: no valid bbolt meta page",
        ),
        (
            "random-8224-bytes.db",
            &random[..16 * 512 + 32],
            "not an etcd snapshot: no valid bbolt meta page",
        ),
        ("empty.db", &[][..], "not an etcd snapshot: the file is empty"),
        (
            "notes.txt",
            &b"etcd backups are kept in /var/backups\n"[..],
            "not an etcd snapshot: 38 bytes is too short for a bbolt database",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = status(&cluster, &path, true);
        assert_clean_failure(&out, expect);
        assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
        assert!(
            !out.stderr.contains("trailer"),
            "not a snapshot, so no word on its trailer: {}",
            out.stderr
        );
    }

    // A file that does not exist: exit 1 naming it; no file argument: usage, exit 2.
    let nowhere = dir.path().join("nowhere.db");
    let out = status(&cluster, &nowhere, true);
    assert_clean_failure(&out, &format!("cannot open snapshot file {}", nowhere.display()));
    let out = cluster.etcdops(&["snapshot", "status"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
