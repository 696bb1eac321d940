//! Benchmark: `etcdops snapshot save` (through the agent) beside
//! `etcdctl snapshot save` from the same follower, same cluster, same run.
//!
//! Usage: bench-snapshot --bin-dir target/release [--mb 250] [--runs 3]
//! Prints a table of wall times, throughputs and peak RSS.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use etcdops_tests::{Bins, Caller, Cluster};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
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

fn main() {
    let bin_dir = PathBuf::from(arg("--bin-dir", "target/release"));
    let mb: usize = arg("--mb", "250").parse().expect("--mb N");
    let runs: usize = arg("--runs", "3").parse().expect("--runs N");
    let bins = Bins {
        agent: bin_dir.join("etcdops-agent"),
        cli: bin_dir.join("etcdops"),
    };
    assert!(
        bins.agent.is_file() && bins.cli.is_file(),
        "build first: cargo build --release --bins"
    );

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
    let out = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");

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
            .args(["--endpoints", &member.client_url, "snapshot", "save"])
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
}
