//! Issue 18 on real systemd hosts: `etcdops upgrade` from Debian's etcd
//! 3.4.23 (etcd.service, `ExecStart=/usr/bin/etcd $DAEMON_ARGS`) to etcd
//! 3.5.1 on three systemd-nspawn hosts, the binary switched by the agent's
//! drop-in `/etc/systemd/system/etcd.service.d/90-etcdops-binary.conf` and a
//! daemon-reload. One cluster boot:
//!
//! 1. the upgrade's coordinator SIGKILLed after the first member's switch,
//!    the operation aborted and rolled back (`--rollback OP`, the cluster
//!    version still 3.4): every member on 3.4.23 again, no drop-in left,
//!    the unit's ExecStart the package's, the data intact;
//! 2. the upgrade under the load generator's writes (a retrying client),
//!    its coordinator SIGKILLed after the first member again and the
//!    operation finished by `op resume`: no failed write, at most one leader
//!    change per restart, every kept key on every member, every unit running
//!    3.5.1 through the drop-in, cluster version 3.5.
//!
//! Prints `SKIPPED: <reason>` where the machine cannot run such hosts (see
//! `tests/src/nspawn.rs`; `ETCDOPS_REQUIRE_NSPAWN=1` makes that a failure).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_proto::v1::{EtcdVersionsRequest, EtcdVersionsResponse};
use etcdops_tests::loadgen::{LoadConfig, LoadGen};
use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{bins, step_ids};

const DROPIN: &str = "/etc/systemd/system/etcd.service.d/90-etcdops-binary.conf";
const TARGET: &str = "/opt/etcd-3.5.1/etcd";
const KEEP_PREFIX: &str = "/e2e/keep/";
const KEEP_COUNT: usize = 200;

/// The CLI as `NspawnCluster::etcdops` runs it, as a child to kill.
fn spawn_cli(cluster: &NspawnCluster, cli: &Path, args: &[&str]) -> Child {
    Command::new(cli)
        .arg("--fleet")
        .arg(cluster.fleet_path())
        .args(args)
        .env_remove("ETCDOPS_FLEET")
        .env("ETCDOPS_JOURNAL", cluster.journal_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning etcdops")
}

fn operations(cluster: &NspawnCluster, cli: &Path) -> Vec<serde_json::Value> {
    let out = cluster.etcdops(cli, &["op", "list", "--all", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()["operations"].as_array().cloned().unwrap_or_default()
}

/// Waits until an operation of `kind` other than `not` has `steps` done
/// steps; its ID and the done steps' IDs.
fn wait_for_steps_done(
    cluster: &NspawnCluster,
    cli: &Path,
    kind: &str,
    not: &str,
    steps: usize,
    timeout: Duration,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for op in operations(cluster, cli) {
            if op["kind"] != kind || op["id"] == not {
                continue;
            }
            let done: Vec<String> = op["steps"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter(|s| s["state"] == "done")
                        .map(|s| s["id"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if done.len() >= steps {
                return (op["id"].as_str().expect("id").to_string(), done);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no {kind} operation reached {steps} done step(s) within {timeout:?}\n{}",
        cluster.logs()
    );
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL the coordinator");
    let _ = child.wait();
}

fn versions(cluster: &NspawnCluster, i: usize) -> EtcdVersionsResponse {
    let mut client = cluster.client(i);
    cluster
        .block_on(client.etcd_versions(EtcdVersionsRequest {
            binaries: Vec::new(),
            timeout_ms: 5000,
        }))
        .unwrap_or_else(|e| panic!("EtcdVersions of host {i}: {e}"))
        .into_inner()
}

fn members(cluster: &NspawnCluster) -> std::ops::Range<usize> {
    0..cluster.layout.members.len()
}

fn host_of(cluster: &NspawnCluster, member: &str) -> usize {
    cluster
        .layout
        .members
        .iter()
        .position(|m| m.name == member)
        .unwrap_or_else(|| panic!("no member {member}"))
}

/// `systemctl show -p ExecStart --value etcd` in host i.
fn exec_start(cluster: &NspawnCluster, i: usize) -> String {
    cluster.exec_stdout(i, &["systemctl", "show", "-p", "ExecStart", "--value", "etcd"])
}

fn dropin_exists(cluster: &NspawnCluster, i: usize) -> bool {
    cluster
        .exec(i, &["test", "-e", DROPIN])
        .is_ok_and(|o| o.status.success())
}

fn put_keys(rt: &tokio::runtime::Runtime, cluster: &NspawnCluster) {
    let endpoints = cluster.client_urls();
    let tls = etcdops_tests::etcd_connect_options(&cluster.layout);
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(&endpoints, tls)
            .await
            .expect("etcd client");
        for i in 0..KEEP_COUNT {
            client
                .put(format!("{KEEP_PREFIX}{i}"), format!("value-{i}"), None)
                .await
                .expect("put");
        }
    });
}

/// The kept keys as each member itself holds them (serializable reads, one
/// endpoint each).
fn local_counts(rt: &tokio::runtime::Runtime, cluster: &NspawnCluster) -> Vec<i64> {
    cluster
        .client_urls()
        .into_iter()
        .map(|url| {
            let tls = etcdops_tests::etcd_connect_options(&cluster.layout);
            rt.block_on(async {
                let mut client = etcd_client::Client::connect([url.clone()], tls)
                    .await
                    .expect("etcd client");
                client
                    .get(
                        KEEP_PREFIX,
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_count_only()
                                .with_serializable(),
                        ),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("count on {url}: {e}"))
                    .count()
            })
        })
        .collect()
}

#[test]
fn etcd_upgrade_on_systemd_hosts_rolls_back_after_a_kill_and_resumes_under_load() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let cli = bins.cli.as_path();
    cluster.provide_etcd_3_5();
    let rt = etcdops_tests::loadgen::runtime();
    put_keys(&rt, &cluster);
    for i in members(&cluster) {
        let v = versions(&cluster, i);
        assert_eq!(
            (
                v.server_version.as_str(),
                v.cluster_version.as_str(),
                v.unit_binary.as_str(),
                v.configured_binary.as_str()
            ),
            ("3.4.23", "3.4", "/usr/bin/etcd", "/usr/bin/etcd"),
            "host {i}: {v:?}"
        );
        assert!(!dropin_exists(&cluster, i), "host {i}: no drop-in yet");
    }

    // --- 1. Killed after the first member's switch, aborted, rolled back.
    let started = Instant::now();
    let child = spawn_cli(
        &cluster,
        cli,
        &["upgrade", "--to", "3.5.1", "--accept-unsafe-release", "--yes"],
    );
    let (first, done) = wait_for_steps_done(&cluster, cli, "upgrade", "", 2, Duration::from_secs(180));
    kill(child);
    eprintln!(
        "upgrade {first} killed after {done:?} in {:.1?}",
        started.elapsed()
    );
    assert_eq!(done[0], "snapshot", "{done:?}");
    let switched = done[1]
        .strip_prefix("switch-binary:")
        .unwrap_or_else(|| panic!("the first member's switch: {done:?}"));
    let h = host_of(&cluster, switched);
    let text = cluster.read_in_host(h, DROPIN);
    assert!(
        text.starts_with("# Written by etcdops-agent")
            && text.contains("# etcdops-unit-binary: /usr/bin/etcd\n")
            && text.ends_with("[Service]\nExecStart=\nExecStart=/opt/etcd-3.5.1/etcd $DAEMON_ARGS\n"),
        "the drop-in on {switched}:\n{text}"
    );
    assert_eq!(
        cluster.exec_stdout(h, &["stat", "-c", "%a %U", DROPIN]),
        "644 root"
    );
    let es = exec_start(&cluster, h);
    assert!(
        es.contains("path=/opt/etcd-3.5.1/etcd") && es.contains("argv[]=/opt/etcd-3.5.1/etcd $DAEMON_ARGS"),
        "ExecStart on {switched}: {es}"
    );
    let v = versions(&cluster, h);
    assert_eq!(
        (
            v.server_version.as_str(),
            v.cluster_version.as_str(),
            v.unit_binary.as_str(),
            v.configured_binary.as_str()
        ),
        ("3.5.1", "3.4", TARGET, "/usr/bin/etcd"),
        "{switched}: {v:?}"
    );
    let record = cluster.etcdops(cli, &["op", "show", &first, "-w", "json"]).json();
    assert_eq!(record["state"], "running", "killed, not finished: {record}");
    let out = cluster.etcdops(cli, &["op", "abort", &first]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    cluster.wait_until("healthy before the rollback", Duration::from_secs(60), |c| {
        c.is_healthy()
    });
    let out = cluster.etcdops(cli, &["upgrade", "--rollback", &first, "--yes", "-w", "json"]);
    eprintln!("--- rollback stderr\n{}", out.stderr);
    let rollback = out.succeeded();
    assert_eq!(rollback["state"], "succeeded", "{rollback}");
    let steps = step_ids(&rollback);
    assert!(
        steps.contains(&format!("switch-binary:{switched}")),
        "{switched} goes back: {steps:?}"
    );
    for i in members(&cluster) {
        let v = versions(&cluster, i);
        assert_eq!(
            (
                v.server_version.as_str(),
                v.cluster_version.as_str(),
                v.unit_binary.as_str()
            ),
            ("3.4.23", "3.4", "/usr/bin/etcd"),
            "host {i} after the rollback: {v:?}"
        );
        assert!(!dropin_exists(&cluster, i), "host {i}: the drop-in is gone");
        let es = exec_start(&cluster, i);
        assert!(
            es.contains("argv[]=/usr/bin/etcd $DAEMON_ARGS"),
            "host {i}: the package's ExecStart again: {es}"
        );
    }
    assert_eq!(
        local_counts(&rt, &cluster),
        vec![KEEP_COUNT as i64; 3],
        "data intact"
    );
    eprintln!("phase 1 (killed, rolled back) took {:.1?}", started.elapsed());

    // --- 2. The upgrade under load, its coordinator killed once, resumed.
    let started = Instant::now();
    let cfg = LoadConfig {
        rate: 100,
        concurrency: 64,
        key_prefix: "/e2e/load/".into(),
        write_deadline: Duration::from_secs(10),
        ..LoadConfig::new(cluster.client_urls(), cluster.layout.etcd_client.clone())
    };
    let load = rt.block_on(LoadGen::start(cfg)).expect("starting the load");
    std::thread::sleep(Duration::from_secs(2));
    let child = spawn_cli(
        &cluster,
        cli,
        &["upgrade", "--to", "3.5.1", "--accept-unsafe-release", "--yes"],
    );
    let (second, done) = wait_for_steps_done(&cluster, cli, "upgrade", &first, 2, Duration::from_secs(180));
    kill(child);
    eprintln!("upgrade {second} killed after {done:?}");
    cluster.wait_until("healthy before resuming", Duration::from_secs(60), |c| {
        c.is_healthy()
    });
    let out = cluster.etcdops(cli, &["op", "resume", &second, "-w", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    let report = rt.block_on(load.stop());
    eprintln!(
        "load during the upgrade: {report}\n--- resume stderr\n{}",
        out.stderr
    );
    let record = out.succeeded();
    assert_eq!(record["state"], "succeeded", "{record}");
    let all = record["steps"].as_array().expect("steps");
    for step in all {
        assert_eq!(step["state"], "done", "{step}");
        if done.contains(&step["id"].as_str().unwrap_or("").to_string()) {
            assert_eq!(step["attempts"], 1, "finished steps are not redone: {step}");
        }
    }
    let restarts: u64 = all
        .iter()
        .filter(|s| {
            s["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("switch-binary:"))
        })
        .map(|s| s["attempts"].as_u64().unwrap_or(1))
        .sum();
    let moved = all
        .iter()
        .find(|s| s["id"] == "cluster-version")
        .expect("cluster-version step")
        .to_string();
    assert!(moved.contains("moved to 3.5"), "{moved}");
    assert!(report.ok > 0, "the load wrote: {report}");
    assert_eq!(report.failed, 0, "no write failed: {report}");
    assert!(
        report.leader_changes <= restarts,
        "at most one leader change per restart ({restarts}): {report}"
    );
    for i in members(&cluster) {
        let v = versions(&cluster, i);
        assert_eq!(
            (
                v.server_version.as_str(),
                v.cluster_version.as_str(),
                v.unit_binary.as_str(),
                v.configured_binary.as_str()
            ),
            ("3.5.1", "3.5", TARGET, "/usr/bin/etcd"),
            "host {i} after the upgrade: {v:?}"
        );
        assert!(dropin_exists(&cluster, i), "host {i}: the drop-in stays");
        assert!(
            exec_start(&cluster, i).contains("argv[]=/opt/etcd-3.5.1/etcd $DAEMON_ARGS"),
            "host {i}"
        );
        assert_eq!(
            cluster.exec_stdout(i, &["systemctl", "is-active", "etcd"]),
            "active"
        );
    }
    assert_eq!(
        local_counts(&rt, &cluster),
        vec![KEEP_COUNT as i64; 3],
        "every kept key on every member"
    );
    let show = cluster.etcdops(cli, &["op", "show", &second]);
    assert!(
        show.stdout.contains("snapshot:"),
        "the pre-upgrade snapshot is named: {}",
        show.stdout
    );
    eprintln!(
        "phase 2 (upgrade under load, killed, resumed) took {:.1?}: failed {} leader changes {} term +{} restarts {restarts}",
        started.elapsed(),
        report.failed,
        report.leader_changes,
        report.term_advance
    );
}
