//! End-to-end: `etcdops housekeeping` and the agents' PruneKeptCopies. A
//! cluster restored twice keeps two copies of every member's data dir;
//! without the fence the RPC is refused, and while another operation holds
//! the cluster housekeeping exits 3 naming it; a copy the caller protects
//! stays; `--dry-run` lists and removes nothing; the real run removes all
//! but the newest copy, and stale downloaded backups.

use std::path::{Path, PathBuf};

use etcdops_proto::v1::PruneKeptCopiesRequest;
use etcdops_tests::{Caller, CliOutput, Cluster, bins};

fn ok_json(out: &CliOutput) -> serde_json::Value {
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    out.json()
}

/// The kept copies beside a data dir, newest first.
fn kept(data_dir: &Path) -> Vec<PathBuf> {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let mut copies: Vec<PathBuf> = std::fs::read_dir(data_dir.parent().expect("parent"))
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}.pre-restore-")))
        })
        .collect();
    copies.sort();
    copies.reverse();
    copies
}

fn restore(ops: &etcdops_tests::Coordinator<'_>, snapshot: &str) {
    let out = ops.run(&["restore", "--snapshot", snapshot, "--yes", "-w", "json"]);
    out.succeeded();
}

#[test]
fn kept_copies_are_pruned_by_policy_fenced_and_never_the_newest_or_protected() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    cluster.put_bulk("k/", 50, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok_json(&cluster.etcdops(&[
        "snapshot",
        "save",
        "--out",
        dir.path().to_str().expect("utf-8"),
        "-w",
        "json",
    ]));
    let snapshot = out["path"].as_str().expect("path").to_string();
    let ops = cluster.coordinator();
    // Two restores: every member keeps two copies (stamps are per second).
    restore(&ops, &snapshot);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    restore(&ops, &snapshot);
    let members = cluster.layout.members.clone();
    for m in &members {
        assert_eq!(kept(&m.data_dir).len(), 2, "{}: {:?}", m.name, kept(&m.data_dir));
    }

    // Without the fence: refused, nothing removed.
    let older0 = kept(&members[0].data_dir)[1].clone();
    let refused = cluster.block_on({
        let mut client = cluster.client(0, &Caller::Coordinator);
        async move {
            client
                .prune_kept_copies(PruneKeptCopiesRequest {
                    operation_id: "no-fence".into(),
                    fence: None,
                    keep: 1,
                    ..Default::default()
                })
                .await
        }
    });
    let status = refused.expect_err("no fence: refused");
    assert!(
        matches!(
            status.code(),
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
        ),
        "{status:?}"
    );
    assert!(older0.exists());

    // Another operation holds the cluster: housekeeping is refused, naming it (exit 3).
    let other = cluster.acquire_fence("someone-else-op");
    let busy = ops.run(&["housekeeping", "--keep", "1"]);
    assert_eq!(busy.code, 3, "{}\n{}", busy.stdout, busy.stderr);
    assert!(busy.stderr.contains("someone-else-op"), "{}", busy.stderr);
    assert!(older0.exists());

    // A protected copy stays (the caller holds the fence).
    let protected = cluster.block_on({
        let mut client = cluster.client(0, &Caller::Coordinator);
        let fence = other.clone();
        let protect = vec![older0.display().to_string()];
        async move {
            client
                .prune_kept_copies(PruneKeptCopiesRequest {
                    operation_id: fence.operation_id.clone(),
                    fence: Some(fence),
                    keep: 1,
                    protect,
                    ..Default::default()
                })
                .await
        }
    });
    let answer = protected.expect("fenced call").into_inner();
    assert_eq!(answer.copies.len(), 2, "{answer:?}");
    assert!(
        !answer.copies[0].remove && answer.copies[0].why.contains("newest"),
        "{answer:?}"
    );
    assert!(
        !answer.copies[1].remove && answer.copies[1].why.contains("protected"),
        "{answer:?}"
    );
    assert!(older0.exists());
    cluster.release_fence(&other);

    // Stale downloads beside the journal: the older of two goes.
    let downloads = ops.journal.parent().expect("journal dir").join("downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    let old_download = downloads.join(format!("{}-20200101T000000Z.db", cluster.cluster_name));
    let new_download = downloads.join(format!("{}-20260101T000000Z.db", cluster.cluster_name));
    std::fs::write(&old_download, b"old").expect("write");
    std::fs::write(&new_download, b"new").expect("write");
    let touched = std::process::Command::new("touch")
        .args(["-d", "2020-01-01"])
        .arg(&old_download)
        .status()
        .expect("touch");
    assert!(touched.success());

    // --dry-run lists, removes nothing.
    let dry = ok_json(&ops.run(&["housekeeping", "--keep", "1", "--dry-run", "-w", "json"]));
    assert_eq!(dry["dry_run"], true);
    for (m, member) in dry["members"].as_array().expect("members").iter().zip(&members) {
        let copies = m["copies"].as_array().expect("copies");
        assert_eq!(copies.len(), 2, "{m:#}");
        assert_eq!(copies[0]["remove"], false);
        assert_eq!(copies[1]["remove"], true, "{m:#}");
        assert_eq!(kept(&member.data_dir).len(), 2, "dry run removed nothing");
    }
    let would: Vec<&serde_json::Value> = dry["downloads"]
        .as_array()
        .expect("downloads")
        .iter()
        .filter(|d| d["remove"] == true)
        .collect();
    assert_eq!(would.len(), 1, "{dry:#}");
    assert_eq!(would[0]["path"], old_download.display().to_string());
    assert!(old_download.exists());

    // The real run: all but the newest copy on every member, and the stale download.
    let newest: Vec<PathBuf> = members.iter().map(|m| kept(&m.data_dir)[0].clone()).collect();
    let real = ok_json(&ops.run(&["housekeeping", "--keep", "1", "-w", "json"]));
    assert_eq!(real["ok"], true, "{real:#}");
    assert!(real["removed_bytes"].as_u64().is_some_and(|b| b > 0), "{real:#}");
    for (m, newest) in members.iter().zip(&newest) {
        assert_eq!(kept(&m.data_dir), std::slice::from_ref(newest), "{}", m.name);
        assert!(
            m.data_dir.join("member/wal").is_dir(),
            "the data dir itself stays"
        );
    }
    assert!(!old_download.exists() && new_download.exists());
    let id = real["operation"].as_str().expect("id");
    let record = ops
        .operations()
        .into_iter()
        .find(|o| o["id"] == id)
        .expect("journaled");
    assert_eq!(record["kind"], "housekeeping");
    assert_eq!(record["state"], "succeeded", "{record:#}");
    // The fence was given back: another operation can take the cluster.
    let again = cluster.acquire_fence("after-housekeeping");
    cluster.release_fence(&again);
    assert!(cluster.is_healthy());
}
