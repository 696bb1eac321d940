//! Issue 6 on real systemd hosts: `etcdops recover --force-new-cluster` of
//! three systemd-nspawn hosts (Debian's etcd.service reading
//! /etc/default/etcd, the agent with `backend = "systemd"`) after two
//! members' etcd went down. Prints `SKIPPED: <reason>` where the machine
//! cannot run such hosts (see `tests/src/nspawn.rs`).

use std::time::Duration;

use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{bins, step_ids};

fn count(cluster: &NspawnCluster, url: String, prefix: &str) -> i64 {
    let prefix = prefix.to_string();
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
}

#[test]
fn a_lost_majority_is_recovered_on_systemd_hosts() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let endpoints = cluster.client_urls();
    cluster.block_on(async {
        let mut client = etcd_client::Client::connect(
            endpoints.clone(),
            etcdops_tests::etcd_connect_options(&cluster.layout),
        )
        .await
        .expect("etcd client");
        for i in 0..60 {
            client
                .put(format!("/e2e/keep/{i}"), format!("v{i}"), None)
                .await
                .expect("put");
        }
    });
    // Two of three members down: no quorum.
    for i in [1, 2] {
        let out = cluster
            .exec(i, &["systemctl", "stop", "etcd"])
            .expect("systemctl stop");
        assert!(out.status.success(), "stopping etcd on host {i}: {out:?}");
    }

    let out = cluster.etcdops(
        &bins.cli,
        &["recover", "--force-new-cluster", "--yes", "-w", "json"],
    );
    eprintln!(
        "recover: exit {} after {:.1?}\n--- stderr\n{}",
        out.code,
        t0.elapsed(),
        out.stderr
    );
    if out.code != 0 {
        panic!(
            "recover failed: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            cluster.logs()
        );
    }
    let record = out.succeeded();
    assert_eq!(step_ids(&record).len(), 6, "{record}");
    cluster.wait_until(
        "healthy after the recovery",
        Duration::from_secs(30),
        NspawnCluster::is_healthy,
    );
    for (i, url) in cluster.client_urls().into_iter().enumerate() {
        assert_eq!(
            count(&cluster, url, "/e2e/keep/"),
            60,
            "host {i} holds the survivor's data"
        );
        assert_eq!(
            cluster.exec_stdout(i, &["systemctl", "is-active", "etcd"]),
            "active",
            "host {i}"
        );
        assert_eq!(
            cluster.exec_stdout(i, &["systemctl", "is-enabled", "etcd"]),
            "enabled",
            "host {i} starts at boot"
        );
    }
    let survivor = record["steps"][0]["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("snapshot:"))
        .expect("survivor")
        .to_string();
    let host = cluster
        .layout
        .members
        .iter()
        .position(|m| m.name == survivor)
        .expect("survivor host");
    let env = cluster.read_in_host(host, "/etc/default/etcd");
    assert!(
        !env.contains("ETCD_FORCE_NEW_CLUSTER"),
        "the flag is not left behind:\n{env}"
    );
    let members = cluster
        .get_status(0)
        .expect("status")
        .member
        .expect("member")
        .members;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| !m.is_learner), "{members:?}");
    eprintln!("majority-loss recovery on systemd hosts in {:.1?}", t0.elapsed());
}
