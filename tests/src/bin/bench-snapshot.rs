//! Benchmark: `etcdops snapshot save` (through the agent) beside
//! `etcdctl snapshot save` from the same follower, same cluster, same run.
//! Run with `--help`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use etcdops_tests::bench::{self, Common};
use etcdops_tests::{Caller, Cluster};

const ABOUT: &str = "\
Wall time, throughput and peak memory of `etcdops snapshot save` beside
`etcdctl snapshot save`, from the same follower of the same cluster.

What it does: starts a 3-member cluster with the test harness (real etcd from
ETCD_BIN or /usr/bin/etcd, each supervised by a real etcdops-agent, process
backend, on free 127.x.y.11-13 addresses); writes about --mb MB (100 kB
values); then --runs times `etcdops snapshot save --member <a follower>`
(through its agent: streamed, verified, fsynced) and --runs times
`ETCDCTL_API=3 etcdctl --endpoints <that follower> snapshot save`, each file
deleted after its run. Prints a Markdown table of the median wall time,
throughput and peak RSS (the follower's agent, the CLI, all children).
Every cluster it starts is stopped when it ends, fails or gets Ctrl-C.";

const USAGE: &str = "\
Example:
  cargo build --release -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/release/bench-snapshot --bin-dir target/release --mb 250 --runs 3";

/// bench-snapshot: `etcdops snapshot save` beside `etcdctl snapshot save`.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-snapshot", long_about = ABOUT, after_help = USAGE,
          mut_arg("runs", |a| a.default_value("3")))]
struct Opts {
    #[command(flatten)]
    common: Common,
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn children_max_rss_kb() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u64::try_from(u.max_rss()).unwrap_or(0))
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let opts = <Opts as clap::Parser>::parse().common;
    let bins = opts.bins("bench-snapshot");
    bench::tear_down_on_signal("bench-snapshot");
    let (mb, runs) = (opts.mb, opts.runs);

    let cluster = Cluster::builder().members(3).start(bins);
    eprintln!("filling about {mb} MB ...");
    cluster.put_bulk("bench/", mb * 10, 100_000);
    let leader = cluster.leader();
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let member = cluster.member(follower).clone();
    let db_size = cluster
        .get_status(follower, &Caller::Coordinator, 0)
        .ok()
        .and_then(|s| s.member)
        .map(|m| m.db_size)
        .unwrap_or(0);
    let out = match bench::scratch_dir("bench-snapshot") {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!(
                "bench-snapshot: cannot create a scratch directory in {}: {e}",
                std::env::temp_dir().display()
            );
            return ExitCode::FAILURE;
        }
    };

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut size = 0u64;
    for run in 0..runs {
        let file = out.path().join(format!("ours-{run}.db"));
        let t = Instant::now();
        let o = cluster.etcdops(&[
            "snapshot",
            "save",
            "--member",
            &member.name,
            "--out",
            file.to_str().expect("utf-8"),
        ]);
        ours.push(t.elapsed());
        assert_eq!(o.code, 0, "{}", o.stderr);
        size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(format!("{}.json", file.display()));
    }
    let cli_rss = children_max_rss_kb();
    let agent_rss = vm_hwm_kb(cluster.agent_pid(follower));
    for run in 0..runs {
        let file = out.path().join(format!("etcdctl-{run}.db"));
        let t = Instant::now();
        let s = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &member.client_url])
            .args(cluster.etcdctl_tls_args())
            .args(["snapshot", "save"])
            .arg(&file)
            .output()
            .expect("etcdctl");
        theirs.push(t.elapsed());
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        let _ = std::fs::remove_file(&file);
    }
    let all_rss = children_max_rss_kb();
    let (o, t) = (median(ours), median(theirs));
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    println!(
        "snapshot save of a {:.0} MB database (file {:.0} MB), from follower {}, median of {runs}",
        db_size as f64 / 1e6,
        size as f64 / 1e6,
        member.name
    );
    println!("| tool | wall time | throughput | peak RSS |");
    println!("|---|---|---|---|");
    println!(
        "| etcdops snapshot save (agent + CLI, verified, fsynced) | {:.2} s | {:.0} MB/s | agent {} MB, CLI {} MB |",
        o.as_secs_f64(),
        mbps(o),
        agent_rss / 1024,
        cli_rss / 1024
    );
    println!(
        "| etcdctl snapshot save | {:.2} s | {:.0} MB/s | {} MB (max of all children) |",
        t.as_secs_f64(),
        mbps(t),
        all_rss / 1024
    );
    println!(
        "throughput ratio etcdops/etcdctl: {:.2}",
        t.as_secs_f64() / o.as_secs_f64()
    );
    ExitCode::SUCCESS
}
