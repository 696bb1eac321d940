//! Issue 6 on real systemd hosts: `etcdops restore --snapshot FILE` of three
//! systemd-nspawn hosts (Debian's etcd.service, the agent with
//! `backend = "systemd"`), then `--rollback`. Prints `SKIPPED: <reason>`
//! where the machine cannot run such hosts (see `tests/src/nspawn.rs`).

use std::path::PathBuf;
use std::time::Duration;

use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{bins, step_ids};

const BEFORE: &str = "/e2e/before/";
const AFTER: &str = "/e2e/after/";

fn put(cluster: &NspawnCluster, prefix: &str, n: usize) {
    let (endpoints, tls) = (
        cluster.client_urls(),
        etcdops_tests::etcd_connect_options(&cluster.layout),
    );
    cluster.block_on(async move {
        let mut client = etcd_client::Client::connect(endpoints, tls)
            .await
            .expect("etcd client");
        for i in 0..n {
            client
                .put(format!("{prefix}{i}"), format!("value-{i}"), None)
                .await
                .expect("put");
        }
    });
}

/// Serializable count of `prefix` on every member, through its own client URL.
fn counts(cluster: &NspawnCluster, prefix: &str) -> Vec<i64> {
    cluster
        .client_urls()
        .into_iter()
        .map(|url| {
            cluster.block_on(async move {
                let mut client = etcd_client::Client::connect(
                    [url.as_str()],
                    etcdops_tests::etcd_connect_options(&cluster.layout),
                )
                .await
                .expect("client");
                let opts = etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable();
                client.get(prefix, Some(opts)).await.expect("count").count()
            })
        })
        .collect()
}

/// Every key and value under `prefix` on every member (serializable reads).
fn dumps(cluster: &NspawnCluster, prefix: &str) -> Vec<Vec<(String, String)>> {
    cluster
        .client_urls()
        .into_iter()
        .map(|url| {
            let prefix = prefix.to_string();
            cluster.block_on(async move {
                let mut client = etcd_client::Client::connect(
                    [url.as_str()],
                    etcdops_tests::etcd_connect_options(&cluster.layout),
                )
                .await
                .expect("client");
                let opts = etcd_client::GetOptions::new().with_prefix().with_serializable();
                let got = client.get(prefix, Some(opts)).await.expect("dump");
                let mut kvs: Vec<(String, String)> = got
                    .kvs()
                    .iter()
                    .map(|kv| {
                        (
                            kv.key_str().unwrap_or("?").to_string(),
                            kv.value_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect();
                kvs.sort();
                kvs
            })
        })
        .collect()
}

fn cluster_id(cluster: &NspawnCluster) -> u64 {
    cluster
        .get_status(0)
        .expect("status")
        .member
        .expect("member")
        .cluster_id
}

fn all_active(cluster: &NspawnCluster) {
    for i in 0..cluster.layout.members.len() {
        assert_eq!(
            cluster.exec_stdout(i, &["systemctl", "is-active", "etcd"]),
            "active",
            "host {i}\n{}",
            cluster.logs()
        );
    }
}

#[test]
fn restore_and_rollback_on_systemd_hosts() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let t0 = std::time::Instant::now();
    put(&cluster, BEFORE, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cluster.etcdops(
        &bins.cli,
        &[
            "snapshot",
            "save",
            "--out",
            dir.path().to_str().expect("utf-8"),
            "-w",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let snapshot = PathBuf::from(out.json()["path"].as_str().expect("path"));
    put(&cluster, AFTER, 40);
    let old_id = cluster_id(&cluster);

    let out = cluster.etcdops(
        &bins.cli,
        &[
            "restore",
            "--snapshot",
            snapshot.to_str().expect("utf-8"),
            "--yes",
            "-w",
            "json",
        ],
    );
    eprintln!(
        "restore: exit {} after {:.1?}\n--- stderr\n{}",
        out.code,
        t0.elapsed(),
        out.stderr
    );
    if out.code != 0 {
        panic!(
            "restore failed: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            cluster.logs()
        );
    }
    let record = out.succeeded();
    assert_eq!(
        step_ids(&record),
        [
            "stage-all",
            "stop-all",
            "swap-all",
            "configure-all",
            "start-all",
            "verify-restore"
        ]
    );
    cluster.wait_until(
        "healthy after the restore",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );
    all_active(&cluster);
    assert_eq!(
        counts(&cluster, BEFORE),
        vec![100; 3],
        "the snapshot's data on every member"
    );
    let mut expected: Vec<(String, String)> = (0..100)
        .map(|i| (format!("{BEFORE}{i}"), format!("value-{i}")))
        .collect();
    expected.sort();
    assert_eq!(
        dumps(&cluster, BEFORE),
        vec![expected; 3],
        "every key and value as written before the snapshot"
    );
    assert_eq!(
        counts(&cluster, AFTER),
        vec![0; 3],
        "nothing written after the snapshot"
    );
    assert_ne!(cluster_id(&cluster), old_id, "a new cluster (fresh token)");

    let id = record["id"].as_str().expect("id").to_string();
    let out = cluster.etcdops(&bins.cli, &["restore", "--rollback", &id, "--yes", "-w", "json"]);
    eprintln!(
        "rollback: exit {} after {:.1?}\n--- stderr\n{}",
        out.code,
        t0.elapsed(),
        out.stderr
    );
    if out.code != 0 {
        panic!(
            "rollback failed: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            cluster.logs()
        );
    }
    out.succeeded();
    cluster.wait_until(
        "healthy after the rollback",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );
    all_active(&cluster);
    assert_eq!(
        counts(&cluster, AFTER),
        vec![40; 3],
        "the pre-restore data is back"
    );
    assert_eq!(cluster_id(&cluster), old_id);
    eprintln!("restore + rollback on systemd hosts in {:.1?}", t0.elapsed());
}
