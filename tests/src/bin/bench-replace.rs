//! Benchmark (issue 7): how long `etcdops member replace` takes with a
//! database of --mb MB, and what a steady write load sees meanwhile (failed
//! writes, latency, leader changes). Each run starts a fresh 3-member cluster
//! with one spare host; `dead` power-cuts a follower first (agent and etcd
//! SIGKILLed), `alive` replaces a healthy follower. Run with `--help`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcdops_tests::loadgen::{self, LoadConfig, LoadGen, LoadReport};
use etcdops_tests::{Bins, Cluster};

const HELP: &str = "\
bench-replace: time to replace a member, and failed writes under load meanwhile.

USAGE:
  cargo build --release -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/release/bench-replace --bin-dir target/release --mb 250 --runs 2

Each run: a fresh 3-member cluster (process-backend agents) with a spare host;
--mb MB of 100 kB values written, 1 in 2 kept (so the new member must receive
about --mb/2 MB); a load of --rate writes/s (256 B values, at most 256 in
flight, each write retried on the next member until its 2 s deadline; failed =
not written by then); 5 s warm-up; for `dead` a follower is power-cut (its
agent and etcd SIGKILLed) and `etcdops member replace <it> --with etcd4 --yes`
runs; for `alive` the same without the cut; 5 s more; the load stops.

OPTIONS:
  --bin-dir DIR   where etcdops and etcdops-agent are [target/release]
  --mb N          database size written, MB [250]
  --runs N        runs of each mode [1]
  --rate N        writes per second [200]
  --modes LIST    dead,alive [dead,alive]
";

struct Opts {
    bin_dir: PathBuf,
    mb: usize,
    runs: usize,
    rate: u32,
    modes: Vec<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts { bin_dir: PathBuf::from("target/release"), mb: 250, runs: 1, rate: 200, modes: vec!["dead".into(), "alive".into()] };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--bin-dir" => o.bin_dir = PathBuf::from(value()?),
            "--mb" => o.mb = value()?.parse().map_err(|_| "--mb: not a number")?,
            "--runs" => o.runs = value()?.parse().map_err(|_| "--runs: not a number")?,
            "--rate" => o.rate = value()?.parse().map_err(|_| "--rate: not a number")?,
            "--modes" => o.modes = value()?.split(',').map(str::to_string).collect(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.modes.iter().any(|m| m != "dead" && m != "alive") {
        return Err("--modes: dead and/or alive".into());
    }
    if o.mb == 0 || o.runs == 0 || o.rate == 0 {
        return Err("--mb, --runs and --rate must be above 0".into());
    }
    Ok(o)
}

struct Row {
    mode: String,
    took: Duration,
    ok: bool,
    note: String,
    load: LoadReport,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-replace: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let bins = || Bins { agent: opts.bin_dir.join("etcdops-agent"), cli: opts.bin_dir.join("etcdops") };
    if !(bins().agent.is_file() && bins().cli.is_file()) {
        eprintln!("bench-replace: etcdops or etcdops-agent missing in {}", opts.bin_dir.display());
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut rows = Vec::new();
    for run in 0..opts.runs {
        for mode in &opts.modes {
            eprintln!("run {} / {}: {mode} ...", run + 1, opts.runs);
            let cluster = Cluster::builder().members(3).spares(1).disk_probe_interval_secs(0).start(bins());
            let endpoints: Vec<String> = cluster.layout.members.iter().map(|m| m.client_url.clone()).collect();
            let sizes = rt.block_on(loadgen::fragment_keeping(&endpoints, opts.mb, 100_000, 2)).expect("fragment");
            eprintln!("  db: {}", sizes.iter().map(|s| format!("{} MB ({} in use)", s.db_size / 1_000_000, s.db_size_in_use / 1_000_000)).collect::<Vec<_>>().join(", "));
            let spare = cluster.spare(0).clone();
            let victim = (0..3).find(|&i| i != cluster.leader()).expect("follower");
            let old = cluster.layout.members[victim].name.clone();
            let cfg = LoadConfig { rate: opts.rate, concurrency: 256, ..LoadConfig::new(endpoints.clone()) };
            let load = rt.block_on(LoadGen::start(cfg)).expect("load");
            std::thread::sleep(Duration::from_secs(5));
            if mode == "dead" {
                cluster.power_cut(victim);
            }
            let ops = cluster.coordinator();
            let t = Instant::now();
            let out = ops.run(&["member", "replace", &old, "--with", &spare.name, "--agent", &spare.agent_url, "--yes"]);
            let took = t.elapsed();
            std::thread::sleep(Duration::from_secs(5));
            let load = rt.block_on(load.stop());
            let note = out
                .stderr
                .lines()
                .chain(out.stdout.lines())
                .find(|l| l.contains("error") || l.starts_with("steps:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            eprintln!("  took {:.1} s, exit {}, load: {load}", took.as_secs_f64(), out.code);
            rows.push(Row { mode: mode.clone(), took, ok: out.code == 0, note, load });
        }
    }
    println!("bench-replace: {}", std::env::args().collect::<Vec<_>>().join(" "));
    println!("machine: nproc {}, etcd {}", std::thread::available_parallelism().map_or(0, |n| n.get()), etcd_version());
    println!("| mode | replace took | result | writes ok | failed | retried | p50 | p99 | max | leader changes |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let l = &r.load;
        println!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.took.as_secs_f64(),
            if r.ok { "succeeded".to_string() } else { format!("FAILED: {}", r.note) },
            l.ok,
            l.failed,
            l.retried,
            loadgen::ms(l.latency.p50),
            loadgen::ms(l.latency.p99),
            loadgen::ms(l.latency.max),
            l.leader_changes
        );
    }
    for r in rows.iter().filter(|r| !r.load.errors.is_empty()) {
        println!("{} errors: {}", r.mode, r.load.errors.join("; "));
    }
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_string()))
        .unwrap_or_else(|| "?".into())
}
