//! Benchmark (issue 6): how long `etcdops restore --snapshot FILE` takes on a
//! 3-member cluster with a database of --mb MB, beside the runbook's
//! sequential per-node `etcdctl snapshot restore` procedure on the same
//! cluster and a single-member `etcdctl snapshot restore` of the same file
//! (the goal: within 1.3x of the latter). Run with `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcdops_proto::v1::{Fence, UnitRequest};
use etcdops_tests::bench::{self, Common};
use etcdops_tests::{Caller, Cluster, loadgen};

const ABOUT: &str = "\
Time to restore a 3-member cluster from a snapshot file.

Each run: a fresh 3-member cluster (process-backend agents); --mb MB of
100 kB values written, all kept; `etcdops snapshot save`; then, on the same
cluster:
  (a) etcdops:  `etcdops restore --snapshot FILE --yes`, until the cluster
                is healthy;
  (b) runbook:  every etcd stopped through its agent (StopEtcd under a
                fence), then for each member one after another
                `ETCDCTL_API=3 etcdctl snapshot restore FILE --name N
                --initial-cluster ... --initial-cluster-token T
                --initial-advertise-peer-urls U --data-dir <data>.bench-<n>`,
                the dirs swapped (old kept), every etcd started, until healthy;
  (c) single:   one `etcdctl snapshot restore FILE --data-dir <tmp>`.
During (a) and (b) a probe reads one key every 50 ms (linearizable,
500 ms per attempt): the longest stretch without a successful read is how
long clients could not use the cluster.
Every cluster it starts is stopped (agents, etcd members, their directories)
when it ends, fails, or gets SIGINT (Ctrl-C), SIGTERM or SIGHUP.";

const USAGE: &str = "\
Example:
  cargo build --release -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/release/bench-restore --bin-dir target/release --mb 250 --runs 1";

/// bench-restore: time to restore a 3-member cluster from a snapshot file.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-restore", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    #[command(flatten)]
    common: Common,
}

/// One measured figure, or why it is missing.
type Figure = Result<Duration, String>;

struct Row {
    run: usize,
    snapshot_mb: f64,
    etcdops: Figure,
    runbook: Figure,
    single: Figure,
    /// The longest time without a successful linearizable read during (a) and (b).
    etcdops_down: Duration,
    runbook_down: Duration,
}

/// Reads one key every 50 ms (500 ms per attempt) until `stop`; answers the
/// longest stretch between two successful reads: how long clients could not
/// read the cluster.
async fn longest_outage(
    endpoints: Vec<String>,
    tls: Option<etcd_client::ConnectOptions>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Duration {
    let opts = tls
        .unwrap_or_default()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(500));
    let mut client = None;
    let mut last_ok = Instant::now();
    let mut longest = Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if client.is_none() {
            client = etcd_client::Client::connect(endpoints.clone(), Some(opts.clone()))
                .await
                .ok();
        }
        let ok = match client.as_mut() {
            Some(c) => tokio::time::timeout(Duration::from_millis(500), c.get("bench-restore-probe", None))
                .await
                .is_ok_and(|r| r.is_ok()),
            None => false,
        };
        if ok {
            longest = longest.max(last_ok.elapsed());
            last_ok = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    longest.max(last_ok.elapsed())
}

/// Runs `f` while [`longest_outage`] watches the cluster.
fn watching<T>(
    rt: &tokio::runtime::Runtime,
    endpoints: &[String],
    tls: Option<etcd_client::ConnectOptions>,
    f: impl FnOnce() -> T,
) -> (T, Duration) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = rt.spawn(longest_outage(endpoints.to_vec(), tls, stop.clone()));
    let out = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, rt.block_on(probe).unwrap_or_default())
}

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(300);

fn wait_healthy(cluster: &Cluster, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cluster.is_healthy() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("not healthy within {timeout:?}"))
}

/// (a) `etcdops restore --snapshot FILE --yes` until healthy.
fn etcdops_restore(cluster: &Cluster, snapshot: &Path) -> Figure {
    let t = Instant::now();
    let out = cluster.coordinator().run(&[
        "restore",
        "--snapshot",
        snapshot.to_str().expect("utf-8"),
        "--yes",
        "-w",
        "json",
    ]);
    if out.code != 0 {
        return Err(format!(
            "exit {}: {}",
            out.code,
            out.stderr
                .lines()
                .find(|l| l.contains("error"))
                .unwrap_or_default()
                .trim()
        ));
    }
    let steps: Vec<String> = serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|r| r["steps"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            format!(
                "{} {}s",
                s["id"].as_str().unwrap_or("?"),
                s["finished_at_unix"].as_i64().unwrap_or(0) - s["started_at_unix"].as_i64().unwrap_or(0)
            )
        })
        .collect();
    eprintln!(
        "  etcdops restore exited after {:.1} s; steps (whole seconds): {}",
        t.elapsed().as_secs_f64(),
        steps.join(", ")
    );
    if let Some(stage) = serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|r| r["steps"][0]["detail"].as_str().map(str::to_string))
    {
        eprintln!("  stage-all: {stage}");
    }
    wait_healthy(cluster, HEALTHY_TIMEOUT)?;
    Ok(t.elapsed())
}

fn unit_request(op: &str, fence: &Fence, step: String) -> UnitRequest {
    UnitRequest {
        operation_id: op.to_string(),
        timeout_ms: 120_000,
        boot: false,
        fence: Some(Fence {
            step,
            ..fence.clone()
        }),
    }
}

fn etcdctl_restore(snapshot: &Path, extra: &[&str], data_dir: &Path) -> Result<(), String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .map_err(|e| format!("etcdctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "etcdctl snapshot restore: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', " / ")
        ));
    }
    Ok(())
}

/// (b) the runbook: stop all, restore each member in turn, swap, start all, until healthy.
fn runbook_restore(cluster: &Cluster, snapshot: &Path, run: usize) -> Figure {
    let members = &cluster.layout.members;
    let initial: String = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let token = format!("bench-restore-{}-{run}", std::process::id());
    let op = format!("bench-restore-runbook-{}-{run}", std::process::id());
    let fence = cluster.acquire_fence(&op);
    let t = Instant::now();
    let result = (|| {
        for (i, m) in members.iter().enumerate() {
            cluster
                .block_on(cluster.client(i, &Caller::Coordinator).stop_etcd(unit_request(
                    &op,
                    &fence,
                    format!("stop-{}", m.name),
                )))
                .map_err(|s| format!("StopEtcd {}: {} {}", m.name, s.code(), s.message()))?;
        }
        for m in members {
            let new = PathBuf::from(format!("{}.bench-{run}", m.data_dir.display()));
            etcdctl_restore(
                snapshot,
                &[
                    "--name",
                    &m.name,
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    &token,
                    "--initial-advertise-peer-urls",
                    &m.peer_url,
                ],
                &new,
            )?;
        }
        for m in members {
            let new = PathBuf::from(format!("{}.bench-{run}", m.data_dir.display()));
            let old = PathBuf::from(format!("{}.bench-old-{run}", m.data_dir.display()));
            std::fs::rename(&m.data_dir, &old)
                .map_err(|e| format!("moving {} aside: {e}", m.data_dir.display()))?;
            std::fs::rename(&new, &m.data_dir).map_err(|e| format!("swapping in {}: {e}", new.display()))?;
        }
        // Started all at once: each member waits for a quorum of its peers.
        let starts: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut client = cluster.client(i, &Caller::Coordinator);
                let req = unit_request(&op, &fence, format!("start-{}", m.name));
                let name = m.name.clone();
                async move {
                    client
                        .start_etcd(req)
                        .await
                        .map_err(|s| format!("StartEtcd {name}: {} {}", s.code(), s.message()))
                }
            })
            .collect();
        cluster.block_on(async move {
            let handles: Vec<_> = starts.into_iter().map(tokio::spawn).collect();
            for h in handles {
                h.await.map_err(|e| format!("join: {e}"))?.map(drop)?;
            }
            Ok::<(), String>(())
        })?;
        wait_healthy(cluster, HEALTHY_TIMEOUT)?;
        Ok(t.elapsed())
    })();
    cluster.release_fence(&fence);
    result
}

/// (c) one `etcdctl snapshot restore` into a fresh dir.
fn single_restore(snapshot: &Path, scratch: &Path, run: usize) -> Figure {
    let dir = scratch.join(format!("single-{run}"));
    let t = Instant::now();
    etcdctl_restore(snapshot, &[], &dir)?;
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(took)
}

fn main() {
    let opts = <Opts as clap::Parser>::parse().common;
    let bins = opts.bins("bench-restore");
    bench::tear_down_on_signal("bench-restore");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for run in 0..opts.runs {
        eprintln!("run {} / {} ...", run + 1, opts.runs);
        let cluster = Cluster::builder()
            .members(3)
            .disk_probe_interval_secs(0)
            .start(bins.clone());
        let endpoints: Vec<String> = cluster
            .layout
            .members
            .iter()
            .map(|m| m.client_url.clone())
            .collect();
        let t = Instant::now();
        let sizes = rt
            .block_on(loadgen::fragment_keeping(
                &endpoints,
                cluster.layout.etcd_client.as_ref(),
                opts.mb,
                100_000,
                1,
            ))
            .expect("writing the data");
        eprintln!(
            "  wrote in {:.1} s; db: {}",
            t.elapsed().as_secs_f64(),
            sizes
                .iter()
                .map(|s| format!(
                    "{} MB ({} in use)",
                    s.db_size / 1_000_000,
                    s.db_size_in_use / 1_000_000
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let scratch = bench::scratch_dir("bench-restore").expect("a scratch directory");
        let out = cluster.etcdops(&[
            "snapshot",
            "save",
            "--out",
            scratch.path().to_str().expect("utf-8"),
            "-w",
            "json",
        ]);
        assert_eq!(out.code, 0, "snapshot save: {}", out.stderr);
        let snapshot = PathBuf::from(out.json()["path"].as_str().expect("path"));
        let snapshot_mb = std::fs::metadata(&snapshot).map_or(0.0, |m| m.len() as f64 / 1e6);
        eprintln!("  snapshot {snapshot_mb:.0} MB at {}", snapshot.display());

        let single = single_restore(&snapshot, scratch.path(), run);
        eprintln!("  (c) single etcdctl restore: {}", show(&single));
        let (etcdops, etcdops_down) = watching(&rt, &endpoints, cluster.etcd_options(), || {
            etcdops_restore(&cluster, &snapshot)
        });
        eprintln!(
            "  (a) etcdops restore: {}, reads failed for {:.1} s",
            show(&etcdops),
            etcdops_down.as_secs_f64()
        );
        let (runbook, runbook_down) = watching(&rt, &endpoints, cluster.etcd_options(), || {
            runbook_restore(&cluster, &snapshot, run)
        });
        eprintln!(
            "  (b) runbook restore: {}, reads failed for {:.1} s",
            show(&runbook),
            runbook_down.as_secs_f64()
        );
        rows.push(Row {
            run: run + 1,
            snapshot_mb,
            etcdops,
            runbook,
            single,
            etcdops_down,
            runbook_down,
        });
    }
    println!(
        "bench-restore: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "machine: nproc {}, etcd {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        etcd_version()
    );
    println!(
        "| run | snapshot | (a) etcdops restore to healthy | reads failing during (a) | (b) runbook etcdctl x3 to healthy | reads failing during (b) | (c) single etcdctl restore | a / c | b / c |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} MB | {} | {:.1} s | {} | {:.1} s | {} | {} | {} |",
            r.run,
            r.snapshot_mb,
            show(&r.etcdops),
            r.etcdops_down.as_secs_f64(),
            show(&r.runbook),
            r.runbook_down.as_secs_f64(),
            show(&r.single),
            ratio(&r.etcdops, &r.single),
            ratio(&r.runbook, &r.single)
        );
    }
}

fn show(f: &Figure) -> String {
    match f {
        Ok(d) => format!("{:.1} s", d.as_secs_f64()),
        Err(e) => format!("FAILED: {e}"),
    }
}

fn ratio(a: &Figure, b: &Figure) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    }
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".into())
}
