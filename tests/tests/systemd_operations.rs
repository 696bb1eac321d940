//! Issue 5, "done when": rolling defrag and rolling restart through the
//! `etcdops` CLI on real systemd hosts (three systemd-nspawn hosts, Debian's
//! etcd.service, the agent with `backend = "systemd"`) with zero failed
//! writes under a steady write load. Prints `SKIPPED: <reason>` where the
//! machine cannot run such hosts (see `tests/src/nspawn.rs`).

use std::time::{Duration, Instant};

use etcdops_tests::loadgen::{self, LoadConfig, LoadGen, LoadReport, MemberDb};
use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{CliOutput, bins, step_ids};

/// Keys written before both operations and counted after them.
const KEEP_PREFIX: &str = "/e2e/keep/";
const KEEP_COUNT: usize = 200;
/// The fragmented database: enough to make a defrag take real time, small
/// enough to keep the test fast (the benchmark uses 200+ MB).
const FRAGMENT_MB: usize = 50;
/// The load: about 100 writes/s, 1 s per attempt, retried on the next
/// member, 2 s per write (the loadgen's defaults).
const RATE: u32 = 100;
/// Writes in flight at most. The loadgen's default of 8 is filled within
/// about 250 ms by writes stuck on the member being defragmented or
/// restarted (every third write goes there and waits up to the 1 s attempt
/// timeout), after which the generator stops sending: measured here, a
/// quarter of the target writes went unsent during a rolling defrag, in
/// exactly the windows this test is about. 64 covers a full attempt
/// timeout's worth of stuck writes. (What is still reported as "not sent",
/// 3 to 23 % in our runs, is the sender's ticks skipped while it was
/// scheduled late on a busy 2-core machine, not the bound.)
const CONCURRENCY: usize = 64;
/// Load before the operation starts and after it ended.
const WARMUP: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(2);

/// Runs `args` through the CLI under the load and returns the CLI's output,
/// how long it took and what the load saw.
fn under_load(
    rt: &tokio::runtime::Runtime,
    cluster: &NspawnCluster,
    cli: &std::path::Path,
    args: &[&str],
) -> (CliOutput, Duration, LoadReport) {
    let cfg = LoadConfig {
        rate: RATE,
        concurrency: CONCURRENCY,
        ..LoadConfig::new(cluster.client_urls(), cluster.layout.etcd_client.clone())
    };
    let load = rt.block_on(LoadGen::start(cfg)).expect("starting the load");
    std::thread::sleep(WARMUP);
    let started = Instant::now();
    let out = cluster.etcdops(cli, args);
    let took = started.elapsed();
    std::thread::sleep(AFTER);
    let report = rt.block_on(load.stop());
    eprintln!(
        "etcdops {}: exit {} in {took:.1?}\nload: {report}\nproposals failed per member (etcd_server_proposals_failed_total, since each etcd started): {:?}\n--- etcdops stderr\n{}",
        args.join(" "),
        out.code,
        proposals_failed(cluster),
        out.stderr
    );
    (out, took, report)
}

/// Each member's `etcd_server_proposals_failed_total`: raft proposals that
/// were dropped or timed out inside etcd (for the failure analysis).
fn proposals_failed(cluster: &NspawnCluster) -> Vec<String> {
    cluster
        .client_urls()
        .iter()
        .map(|url| {
            etcdops_tests::etcd_metrics(url, cluster.layout.etcd_client.as_ref())
                .lines()
                .find(|l| l.starts_with("etcd_server_proposals_failed_total "))
                .map_or_else(
                    || "?".to_string(),
                    |l| l.rsplit(' ').next().unwrap_or("?").to_string(),
                )
        })
        .collect()
}

fn put_keys(rt: &tokio::runtime::Runtime, endpoints: &[String], tls: Option<etcd_client::ConnectOptions>) {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, tls)
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

fn key_count(
    rt: &tokio::runtime::Runtime,
    endpoints: &[String],
    tls: Option<etcd_client::ConnectOptions>,
) -> i64 {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, tls)
            .await
            .expect("etcd client");
        let resp = client
            .get(
                KEEP_PREFIX,
                Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count");
        resp.count()
    })
}

fn etcd_main_pid(cluster: &NspawnCluster, i: usize) -> u32 {
    let text = cluster.exec_stdout(i, &["systemctl", "show", "-p", "MainPID", "--value", "etcd"]);
    text.parse()
        .unwrap_or_else(|e| panic!("MainPID of etcd on host {i}: {text:?}: {e}"))
}

/// No write failed. A failure here is a finding to explain, not to tune
/// away: the first errors are in the message.
///
/// Known cause of a failure: etcd drops proposals while leadership moves
/// (the leader refuses them during the transfer, the old leader until it
/// hears from the new one). etcd 3.4 answers such a write with gRPC Unknown
/// `raft proposal dropped`; the proposal never reached the log, so a retry
/// is safe. A load generator that does not retry that message counts it as
/// a failed write, about once in every four or five planned transfers at
/// this rate, with any tool, the same as with `etcdctl move-leader`.
fn assert_no_failed_writes(op: &str, report: &LoadReport) {
    assert!(report.ok > 0, "{op}: the load wrote nothing: {report}");
    assert_eq!(
        report.failed, 0,
        "{op}: writes failed under the rolling operation: {report}"
    );
}

/// The load generator counts a leader change when some member reports a
/// different leader ID at a higher raft term than any seen before
/// (`loadgen::LeaderTracker`): an election the old leader wins again moves
/// `term_advance` but is no change. A rolling operation moves leadership
/// exactly once (the planned transfer before the leader's own step); a
/// follower's defrag or restart must not put another member in the lead.
/// `term_advance` is printed, not asserted: on a starved machine (load 12 on
/// 2 cores) a restarted follower did start elections that the leader won
/// again (term +3, 1 change); etcd 3.4 runs without pre-vote.
fn assert_one_leader_change(op: &str, report: &LoadReport) {
    assert_eq!(
        report.leader_changes, 1,
        "{op}: leader changes (the planned transfer only): {report}"
    );
}

#[test]
fn rolling_defrag_and_restart_on_systemd_hosts_lose_no_write_under_load() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let rt = etcdops_tests::loadgen::runtime();
    let endpoints = cluster.client_urls();
    put_keys(
        &rt,
        &endpoints,
        etcdops_tests::etcd_connect_options(&cluster.layout),
    );

    // --- rolling defrag on a fragmented database, under load.
    let started = Instant::now();
    let before = rt
        .block_on(loadgen::fragment(
            &endpoints,
            cluster.layout.etcd_client.as_ref(),
            FRAGMENT_MB,
            100_000,
        ))
        .expect("fragmenting");
    eprintln!("fragmented in {:.1?}: {}", started.elapsed(), list(&before));
    for m in &before {
        assert!(
            m.db_size >= (FRAGMENT_MB as i64) * 900_000 && m.db_size_in_use * 2 < m.db_size,
            "fragmented: {}",
            list(&before)
        );
    }
    let (out, defrag_took, defrag) = under_load(
        &rt,
        &cluster,
        &bins.cli,
        &["defrag", "--rolling", "--yes", "-w", "json"],
    );
    let record = out.succeeded();
    let steps = step_ids(&record);
    assert_eq!(steps.len(), 4, "three defrags and one transfer: {steps:?}");
    assert!(
        steps[2].starts_with("transfer-leadership:") && steps[3].starts_with("defrag:"),
        "{steps:?}"
    );
    let after = rt
        .block_on(loadgen::db_sizes(&endpoints, cluster.layout.etcd_client.as_ref()))
        .expect("db sizes");
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a.db_size * 2 < b.db_size,
            "every member shrank: before {}; after {}",
            list(&before),
            list(&after)
        );
    }
    assert_no_failed_writes("defrag", &defrag);
    assert_one_leader_change("defrag", &defrag);
    assert!(
        cluster.is_healthy(),
        "healthy after the defrag\n{}",
        cluster.logs()
    );

    // --- rolling restart, under load: every etcd.service gets a new MainPID.
    let pids: Vec<u32> = (0..3).map(|i| etcd_main_pid(&cluster, i)).collect();
    assert!(pids.iter().all(|&p| p != 0), "etcd runs everywhere: {pids:?}");
    let (out, restart_took, restart) = under_load(
        &rt,
        &cluster,
        &bins.cli,
        &["restart", "--rolling", "--yes", "-w", "json"],
    );
    let record = out.succeeded();
    let steps = step_ids(&record);
    assert_eq!(
        steps.len(),
        5,
        "a snapshot, three restarts and one transfer: {steps:?}"
    );
    assert!(
        steps[0] == "snapshot"
            && steps[3].starts_with("transfer-leadership:")
            && steps[4].starts_with("restart:"),
        "{steps:?}"
    );
    for (i, old) in pids.iter().enumerate() {
        let new = etcd_main_pid(&cluster, i);
        assert!(
            new != 0 && new != *old,
            "host {i}: etcd.service MainPID {old} -> {new}"
        );
        assert_eq!(
            cluster.exec_stdout(i, &["systemctl", "is-active", "etcd"]),
            "active"
        );
    }
    assert_no_failed_writes("restart", &restart);
    assert_one_leader_change("restart", &restart);
    assert!(
        cluster.is_healthy(),
        "healthy after the restart\n{}",
        cluster.logs()
    );
    assert_eq!(
        key_count(
            &rt,
            &endpoints,
            etcdops_tests::etcd_connect_options(&cluster.layout)
        ),
        KEEP_COUNT as i64,
        "data intact"
    );

    eprintln!(
        "summary: defrag {defrag_took:.1?}: failed {} p99 {} max {} leader changes {} term +{}; \
         restart {restart_took:.1?}: failed {} p99 {} max {} leader changes {} term +{}",
        defrag.failed,
        loadgen::ms(defrag.latency.p99),
        loadgen::ms(defrag.latency.max),
        defrag.leader_changes,
        defrag.term_advance,
        restart.failed,
        loadgen::ms(restart.latency.p99),
        loadgen::ms(restart.latency.max),
        restart.leader_changes,
        restart.term_advance,
    );
}

fn list(dbs: &[MemberDb]) -> String {
    dbs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
