//! Benchmark (issue 5): a steady, bounded write load against a 3-member
//! cluster with a fragmented database, during rolling defrag and rolling
//! restart through etcdops beside the naive way, same run. Run with `--help`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::{AcquireFenceRequest, Fence, ReleaseFenceRequest, UnitRequest};
use etcdops_tests::bench::{self, Common, positive};
use etcdops_tests::loadgen::{self, LoadConfig, LoadGen, LoadReport, MemberDb};
use etcdops_tests::{Caller, Cluster};
use tonic::transport::Channel;

const ABOUT: &str = "\
Failed writes, write latency and leader changes under a steady write load during
rolling maintenance, etcdops beside the naive way.

What it does: starts a 3-member cluster with the test harness (real etcd from
ETCD_BIN or /usr/bin/etcd, each supervised by a real etcdops-agent, process
backend, on free 127.x.y.11-13 addresses, a fleet file for the etcdops CLI).
Then, for each run and each scenario (order interleaved: even runs etcdops
first, odd runs the naive way first):
  1. waits until the cluster is healthy;
  2. fragments the database: writes --mb MB of 100 kB values, keeps 1 in
     --keep-every of them and deletes the rest, compacts (physical), so every
     member's dbSize is >= --mb MB with 1/--keep-every of it in use (what a
     defragmentation must copy: what makes a leader's defrag stall writes)
     while dbSizeInUse is about a tenth (the same keys every time, so the
     live data does not grow between scenarios);
  3. starts the load generator (below), waits --warmup seconds;
  4. runs the operation, timed;
  5. waits --after seconds, stops the load and reports.

Scenarios (--scenarios, comma separated; default all four):
  defrag-etcdops   etcdops --fleet <fleet> defrag --rolling --yes
                   (ETCDOPS_JOURNAL=<cluster dir>/journal.redb, as for restart)
  defrag-naive     ETCDCTL_API=3 etcdctl --endpoints <3 client URLs> --cacert --cert --key
                   --command-timeout 60s defrag --cluster
  restart-etcdops  etcdops --fleet <fleet> restart --rolling --yes
  restart-naive    the runbook's loop: RestartEtcd on every member's agent
                   back to back, no health wait in between (under a fence:
                   AcquireFence on every agent with a fresh operation id and
                   epoch = highest recorded + 1, ReleaseFence at the end; an
                   agent without fencing yet answers Unimplemented and the
                   restarts are sent with the fence anyway)
An etcdops scenario whose command the CLI does not know yet is reported as
skipped.

The load: one gRPC connection per member, writes of --value-size bytes to a
bounded key set /bench/load/<n> (1000 keys), opened at --rate per second
with at most --concurrency in flight (when the bound is reached the next
write waits: the shortfall is reported as 'not sent'), round-robin over the
members; an attempt failing with a transport error, Unavailable or a timeout
(--attempt-timeout-ms) is retried on the next member while the write's
deadline (--write-deadline-ms, from its first attempt) allows; a write fails
when that deadline passes or on any other error. Latency is from the first
attempt to success. Leader changes: Maintenance.Status polled on every member
every 100 ms, a change of leader ID at a higher raft term counted.

Output: Markdown tables, one per operation (defrag, restart), one row per
run and tool: op duration (the command or loop alone), healthy after (from
the operation's start until every member passes the harness's health check:
agent GetStatus + linearizable read, one leader; polled every 50 ms), result, writes ok, failed, retried attempts,
writes not sent because of the bound, p50/p99/max latency, leader changes,
raft term advance; then the databases before/after, the first errors, the
exact command line and machine facts.
Every cluster it starts is stopped (agents, etcd members, their directories)
when it ends, fails, or gets SIGINT (Ctrl-C), SIGTERM or SIGHUP.";

const USAGE: &str = "\
Example:
  cargo build --release -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/release/bench-rolling --bin-dir target/release --mb 250 --runs 1 --eject-ms 1000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    DefragEtcdops,
    DefragNaive,
    RestartEtcdops,
    RestartNaive,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::DefragEtcdops,
        Scenario::DefragNaive,
        Scenario::RestartEtcdops,
        Scenario::RestartNaive,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::DefragEtcdops => "defrag-etcdops",
            Scenario::DefragNaive => "defrag-naive",
            Scenario::RestartEtcdops => "restart-etcdops",
            Scenario::RestartNaive => "restart-naive",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Scenario::DefragEtcdops => "etcdops defrag --rolling",
            Scenario::DefragNaive => "etcdctl defrag --cluster",
            Scenario::RestartEtcdops => "etcdops restart --rolling",
            Scenario::RestartNaive => "naive restart loop (agent RestartEtcd ×3)",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Scenario::DefragEtcdops | Scenario::DefragNaive => "defrag",
            Scenario::RestartEtcdops | Scenario::RestartNaive => "restart",
        }
    }
}

/// bench-rolling: writes under load during rolling maintenance, etcdops beside the naive way.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-rolling", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    #[command(flatten)]
    common: Common,
    /// Writes per second.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = positive::<u32>)]
    rate: u32,
    /// Writes in flight at most: a small bound fills with writes stuck on a stopped member
    /// and then turns would-be failures into "not sent".
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = positive::<usize>)]
    concurrency: usize,
    /// Keep 1 in N of the values written.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = positive::<usize>)]
    keep_every: usize,
    /// Bytes per written value.
    #[arg(long, value_name = "N", default_value_t = 256)]
    value_size: usize,
    /// A write fails after this long, ms.
    #[arg(long = "write-deadline-ms", value_name = "MS", default_value_t = 2000)]
    write_deadline_ms: u64,
    /// One attempt is abandoned after this long, ms.
    #[arg(long = "attempt-timeout-ms", value_name = "MS", default_value_t = 1000)]
    attempt_timeout_ms: u64,
    /// After a failed or timed-out attempt on a member, new attempts avoid it for this long,
    /// ms, as gRPC balancers do with a failing connection (0: plain round-robin).
    #[arg(long = "eject-ms", value_name = "MS", default_value_t = 0)]
    eject_ms: u64,
    /// Seconds of load before the operation.
    #[arg(long = "warmup", value_name = "S", default_value_t = 5)]
    warmup_secs: u64,
    /// Seconds of load after the operation.
    #[arg(long = "after", value_name = "S", default_value_t = 5)]
    after_secs: u64,
    /// The scenarios to run, in order.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum,
          default_values_t = Scenario::ALL.to_vec())]
    scenarios: Vec<Scenario>,
    /// Appended to both etcdops commands (repeatable), e.g. --etcdops-arg=--ignore-slow-disk
    /// on a noisy shared disk.
    #[arg(long = "etcdops-arg", value_name = "ARG", allow_hyphen_values = true)]
    etcdops_args: Vec<String>,
}

impl Opts {
    fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.write_deadline_ms)
    }
    fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
    fn eject(&self) -> Duration {
        Duration::from_millis(self.eject_ms)
    }
    fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }
    fn after(&self) -> Duration {
        Duration::from_secs(self.after_secs)
    }
}

/// What the operation did.
#[derive(Debug, Clone)]
enum Op {
    Done { took: Duration, note: String },
    Failed { took: Duration, message: String },
    Skipped(String),
}

#[derive(Debug)]
struct Outcome {
    scenario: Scenario,
    run: usize,
    op: Op,
    load: Option<LoadReport>,
    db_before: Vec<MemberDb>,
    db_after: Vec<MemberDb>,
    /// From the operation's start until every member was healthy again.
    healthy_after: Option<Duration>,
}

fn main() -> ExitCode {
    let opts = <Opts as clap::Parser>::parse();
    let bins = opts.common.bins("bench-rolling");
    bench::tear_down_on_signal("bench-rolling");
    // The cluster is owned by `run` and dropped (stopped) before main returns.
    match run(&opts, bins) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-rolling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Opts, bins: etcdops_tests::Bins) -> Result<(), String> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started_at = run_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    eprintln!("starting a 3-member cluster ...");
    let cluster = Cluster::builder().members(3).start(bins);
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let cluster_name = etcdops_coordinator::fleet::Fleet::load(cluster.fleet_path())
        .ok()
        .and_then(|f| f.clusters.first().map(|c| c.name.clone()))
        .unwrap_or_else(|| "e2e".to_string());

    let mut order = Vec::new();
    for run in 0..opts.common.runs {
        for op in ["defrag", "restart"] {
            let mut pair: Vec<Scenario> = opts
                .scenarios
                .iter()
                .copied()
                .filter(|s| s.operation() == op)
                .collect();
            if run % 2 == 1 {
                pair.reverse();
            }
            order.extend(pair.into_iter().map(|s| (run, s)));
        }
    }

    let mut outcomes = Vec::new();
    for (seq, (run, scenario)) in order.into_iter().enumerate() {
        eprintln!("run {} / {}: {} ...", run + 1, opts.common.runs, scenario.name());
        let outcome = run_scenario(&cluster, &rt, opts, &endpoints, &cluster_name, scenario, run, seq)?;
        match &outcome.load {
            Some(l) => eprintln!("  {:?}\n  load: {l}", outcome.op),
            None => eprintln!("  {:?}", outcome.op),
        }
        outcomes.push(outcome);
    }

    print_report(opts, &outcomes, &command_line, &started_at, &load_before);
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_scenario(
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    opts: &Opts,
    endpoints: &[String],
    cluster_name: &str,
    scenario: Scenario,
    run: usize,
    seq: usize,
) -> Result<Outcome, String> {
    let mut outcome = Outcome {
        scenario,
        run,
        op: Op::Skipped(String::new()),
        load: None,
        db_before: vec![],
        db_after: vec![],
        healthy_after: None,
    };
    if let Some(reason) = unavailable(cluster, scenario) {
        outcome.op = Op::Skipped(reason);
        return Ok(outcome);
    }
    wait_healthy(cluster, "before fragmenting")?;
    eprintln!("  fragmenting {} MB ...", opts.common.mb);
    let t = Instant::now();
    match rt.block_on(loadgen::fragment_keeping(
        endpoints,
        cluster.layout.etcd_client.as_ref(),
        opts.common.mb,
        100_000,
        opts.keep_every,
    )) {
        Ok(sizes) => outcome.db_before = sizes,
        Err(e) => {
            outcome.op = Op::Skipped(format!("fragmenting failed: {e:#}"));
            return Ok(outcome);
        }
    }
    eprintln!(
        "  fragmented in {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        join(&outcome.db_before)
    );
    wait_healthy(cluster, "after fragmenting")?;

    let cfg = LoadConfig {
        rate: opts.rate,
        concurrency: opts.concurrency,
        value_size: opts.value_size,
        write_deadline: opts.write_deadline(),
        attempt_timeout: opts.attempt_timeout(),
        eject: opts.eject(),
        ..LoadConfig::new(endpoints.to_vec(), cluster.layout.etcd_client.clone())
    };
    let load = match rt.block_on(LoadGen::start(cfg)) {
        Ok(l) => l,
        Err(e) => {
            outcome.op = Op::Skipped(format!("load generator did not start: {e:#}"));
            return Ok(outcome);
        }
    };
    std::thread::sleep(opts.warmup());
    let op_start = Instant::now();
    outcome.op = match scenario {
        Scenario::DefragEtcdops => etcdops_op(cluster, &["defrag", "--rolling", "--yes"], &opts.etcdops_args),
        Scenario::RestartEtcdops => {
            etcdops_op(cluster, &["restart", "--rolling", "--yes"], &opts.etcdops_args)
        }
        Scenario::DefragNaive => etcdctl_defrag(endpoints, &cluster.etcdctl_tls_args()),
        Scenario::RestartNaive => naive_restart(cluster, rt, cluster_name, seq),
    };
    // The naive loops return before the cluster has recovered: how long
    // from the operation's start until every member is healthy again.
    let healthy_by = op_start + Duration::from_secs(120);
    while Instant::now() < healthy_by {
        if cluster.is_healthy() {
            outcome.healthy_after = Some(op_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(opts.after());
    outcome.load = Some(rt.block_on(load.stop()));
    wait_healthy(cluster, "after the operation")?;
    outcome.db_after = rt
        .block_on(loadgen::db_sizes(endpoints, cluster.layout.etcd_client.as_ref()))
        .unwrap_or_default();
    Ok(outcome)
}

/// Why an etcdops scenario cannot run with this CLI (its command unknown).
fn unavailable(cluster: &Cluster, scenario: Scenario) -> Option<String> {
    let args: &[&str] = match scenario {
        Scenario::DefragEtcdops => &["defrag", "--rolling", "--yes", "--help"],
        Scenario::RestartEtcdops => &["restart", "--rolling", "--yes", "--help"],
        _ => return None,
    };
    let out = cluster.etcdops(args);
    (out.code != 0).then(|| {
        format!(
            "skipped: etcdops {} not available ({})",
            scenario.operation(),
            out.stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
        )
    })
}

fn etcdops_op(cluster: &Cluster, args: &[&str], extra: &[String]) -> Op {
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect();
    // A journal of the cluster's own, not the user's default one.
    let journal = cluster.layout.dir.join("journal.redb");
    let t = Instant::now();
    let out = cluster.etcdops_with_env(
        &args,
        &[("ETCDOPS_JOURNAL", journal.to_str().unwrap_or("journal.redb"))],
    );
    let took = t.elapsed();
    // The last lines that are not part of a table.
    let last = |s: &str| {
        let lines: Vec<&str> = s
            .lines()
            .rev()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(['+', '|']))
            .take(2)
            .collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    };
    if out.code == 0 {
        let summary = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("steps:"))
            .map(str::trim);
        return Op::Done {
            took,
            note: summary.map_or_else(|| last(&out.stdout), str::to_string),
        };
    }
    if out.stderr.contains("unrecognized subcommand") || out.stderr.contains("unexpected argument") {
        return Op::Skipped(format!(
            "skipped: etcdops {} not available ({})",
            args[0],
            last(&out.stderr)
        ));
    }
    Op::Failed {
        took,
        message: format!("exit {}: {} {}", out.code, last(&out.stderr), last(&out.stdout)),
    }
}

fn etcdctl_defrag(endpoints: &[String], tls: &[String]) -> Op {
    let t = Instant::now();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints.join(",")])
        .args(tls)
        .args(["--command-timeout", "60s", "defrag", "--cluster"])
        .output();
    let took = t.elapsed();
    match out {
        Ok(o) if o.status.success() => Op::Done {
            took,
            note: String::from_utf8_lossy(&o.stdout).lines().count().to_string() + " members defragmented",
        },
        Ok(o) => Op::Failed {
            took,
            message: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim().replace('\n', " / ")
            ),
        },
        Err(e) => Op::Skipped(format!("skipped: etcdctl not runnable: {e}")),
    }
}

/// The runbook's restart loop: every member restarted right after the
/// previous one, no health wait, through the agents under a fence.
fn naive_restart(cluster: &Cluster, rt: &tokio::runtime::Runtime, cluster_name: &str, seq: usize) -> Op {
    let n = cluster.layout.members.len();
    let mut epoch = 0;
    for i in 0..n {
        match cluster.get_status(i, &Caller::Coordinator, 2000) {
            Ok(s) => {
                epoch = s
                    .fences
                    .iter()
                    .filter(|f| f.cluster == cluster_name)
                    .map(|f| f.epoch)
                    .fold(epoch, u64::max);
            }
            Err(e) => return Op::Skipped(format!("skipped: GetStatus on member {i}: {e}")),
        }
    }
    let operation_id = format!("bench-rolling-restart-naive-{}-{seq}", std::process::id());
    let fence = Fence {
        cluster: cluster_name.to_string(),
        epoch: epoch + 1,
        operation_id: operation_id.clone(),
        step: String::new(),
    };
    let mut clients: Vec<_> = (0..n).map(|i| cluster.client(i, &Caller::Coordinator)).collect();
    let mut acquired = Vec::new();
    let mut note = format!("fence {cluster_name} epoch {}", epoch + 1);
    let release = |clients: &mut [AgentClient<Channel>], acquired: &[usize]| {
        for &i in acquired {
            let _ = rt.block_on(clients[i].release_fence(ReleaseFenceRequest {
                fence: Some(fence.clone()),
            }));
        }
    };
    for i in 0..n {
        let req = AcquireFenceRequest {
            fence: Some(fence.clone()),
            holder: format!("bench-rolling (pid {})", std::process::id()),
            operation_kind: "restart".to_string(),
            takeover: false,
        };
        match rt.block_on(clients[i].acquire_fence(req)) {
            Ok(_) => acquired.push(i),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                note = "agents have no fencing yet (AcquireFence unimplemented): restarts sent with an unchecked fence".into();
                break;
            }
            Err(s) => {
                release(&mut clients, &acquired);
                return Op::Skipped(format!(
                    "skipped: AcquireFence refused by member {i}: {} {}",
                    s.code(),
                    s.message()
                ));
            }
        }
    }
    let t = Instant::now();
    let mut errors = Vec::new();
    for i in 0..n {
        let m = cluster.member(i);
        let req = UnitRequest {
            operation_id: operation_id.clone(),
            timeout_ms: 60_000,
            boot: false,
            fence: Some(Fence {
                step: format!("restart-{}", m.name),
                ..fence.clone()
            }),
        };
        match rt.block_on(clients[i].restart_etcd(req)) {
            Ok(_) => {}
            Err(s)
                if i == 0
                    && matches!(
                        s.code(),
                        tonic::Code::Unimplemented
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::PermissionDenied
                    ) =>
            {
                release(&mut clients, &acquired);
                return Op::Skipped(format!(
                    "skipped: RestartEtcd refused: {} {}",
                    s.code(),
                    s.message()
                ));
            }
            Err(s) => errors.push(format!("{}: {} {}", m.name, s.code(), s.message())),
        }
    }
    let took = t.elapsed();
    release(&mut clients, &acquired);
    if errors.is_empty() {
        Op::Done { took, note }
    } else {
        Op::Failed {
            took,
            message: errors.join("; "),
        }
    }
}

/// Waits until the cluster is healthy; after 120 s an error with the logs
/// (returned, so the cluster is stopped before the bench exits).
fn wait_healthy(cluster: &Cluster, when: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if cluster.is_healthy() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "the cluster is not healthy {when} after 120 s\n{}",
        cluster.logs()
    ))
}

fn join(sizes: &[MemberDb]) -> String {
    sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn run_text(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

fn print_report(opts: &Opts, outcomes: &[Outcome], command_line: &str, started_at: &str, load_before: &str) {
    println!(
        "# bench-rolling: {} writes/s of {} B (at most {} in flight, {} ms per write, {} ms per attempt, failing member avoided for {} ms), {} s warm-up, {} s after; database fragmented to {} MB before each scenario; {} run(s)\n",
        opts.rate,
        opts.value_size,
        opts.concurrency,
        opts.write_deadline().as_millis(),
        opts.attempt_timeout().as_millis(),
        opts.eject().as_millis(),
        opts.warmup().as_secs(),
        opts.after().as_secs(),
        opts.common.mb,
        opts.common.runs
    );
    for op in ["defrag", "restart"] {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario.operation() == op).collect();
        if rows.is_empty() {
            continue;
        }
        println!("## {op}\n");
        println!(
            "| run | tool | op duration | healthy after | op result {}",
            LoadReport::TABLE_HEADER
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for o in &rows {
            let (took, result) = match &o.op {
                Op::Done { took, .. } => (format!("{:.2} s", took.as_secs_f64()), "ok".to_string()),
                Op::Failed { took, .. } => (format!("{:.2} s", took.as_secs_f64()), "FAILED".to_string()),
                Op::Skipped(_) => ("-".to_string(), "skipped".to_string()),
            };
            let load = o.load.as_ref().map_or_else(
                || "| - | - | - | - | - | - | - | - | - |".to_string(),
                LoadReport::table_row,
            );
            let healthy = o
                .healthy_after
                .map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
            println!(
                "| {} | {} | {took} | {healthy} | {result} {load}",
                o.run + 1,
                o.scenario.tool()
            );
        }
        println!();
        for o in &rows {
            let op_text = match &o.op {
                Op::Done { note, .. } => format!("ok ({note})"),
                Op::Failed { message, .. } => format!("FAILED: {message}"),
                Op::Skipped(why) => why.clone(),
            };
            println!("- run {} {}: {op_text}", o.run + 1, o.scenario.name());
            if !o.db_before.is_empty() {
                println!("  - db before: {}", join(&o.db_before));
                println!("  - db after: {}", join(&o.db_after));
            }
            if let Some(l) = &o.load {
                println!(
                    "  - load: {:.1} s, sent {}, status polls {} ok / {} failed",
                    l.duration.as_secs_f64(),
                    l.sent,
                    l.status_ok,
                    l.status_failed
                );
                for e in &l.errors {
                    println!("  - error: {e}");
                }
            }
        }
        println!();
    }
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("Command: `{command_line}` (started {started_at})");
    println!(
        "Machine: nproc {nproc}, kernel {}, {}, {}; load average before: {}, after: {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        run_text(
            &std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()),
            &["--version"]
        ),
        run_text("etcdctl", &["version"]),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
