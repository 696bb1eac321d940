//! Benchmark (issue 7): how long `etcdops member replace` takes with a
//! database of --mb MB, and what a steady write load sees meanwhile (failed
//! writes, latency, leader changes). Each run starts a fresh 3-member cluster
//! with one spare host; `dead` power-cuts a follower first (agent and etcd
//! SIGKILLed), `alive` replaces a healthy follower. Run with `--help`.

use std::time::{Duration, Instant};

use etcdops_tests::Cluster;
use etcdops_tests::bench::{self, Common, positive};
use etcdops_tests::loadgen::{self, LoadConfig, LoadGen, LoadReport};

const ABOUT: &str = "\
Time to replace a member, and failed writes under load meanwhile.

Each run: a fresh 3-member cluster (process-backend agents) with a spare host;
--mb MB of 100 kB values written, 1 in 2 kept (so the new member must receive
about --mb/2 MB); a load of --rate writes/s (256 B values, at most 256 in
flight, each write retried on the next member until its 2 s deadline; failed =
not written by then); 5 s warm-up; for `dead` a follower is power-cut (its
agent and etcd SIGKILLed) and `etcdops member replace <it> --with etcd4 --yes`
runs; for `alive` the same without the cut; 5 s more; the load stops.
Every cluster it starts is stopped (agents, etcd members, their directories)
when it ends, fails, or gets SIGINT (Ctrl-C), SIGTERM or SIGHUP.";

const USAGE: &str = "\
Example:
  cargo build --release -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/release/bench-replace --bin-dir target/release --mb 250 --runs 2";

/// bench-replace: time to replace a member, and failed writes under load meanwhile.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-replace", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    #[command(flatten)]
    common: Common,
    /// Writes per second.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = positive::<u32>)]
    rate: u32,
    /// The modes to run, in order.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values = ["dead", "alive"],
          value_parser = clap::builder::PossibleValuesParser::new(["dead", "alive"]))]
    modes: Vec<String>,
}

struct Row {
    mode: String,
    took: Duration,
    ok: bool,
    note: String,
    load: LoadReport,
}

fn main() {
    let opts = <Opts as clap::Parser>::parse();
    let bins = opts.common.bins("bench-replace");
    bench::tear_down_on_signal("bench-replace");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for run in 0..opts.common.runs {
        for mode in &opts.modes {
            eprintln!("run {} / {}: {mode} ...", run + 1, opts.common.runs);
            let cluster = Cluster::builder()
                .members(3)
                .spares(1)
                .disk_probe_interval_secs(0)
                .start(bins.clone());
            let endpoints: Vec<String> = cluster
                .layout
                .members
                .iter()
                .map(|m| m.client_url.clone())
                .collect();
            let sizes = rt
                .block_on(loadgen::fragment_keeping(
                    &endpoints,
                    cluster.layout.etcd_client.as_ref(),
                    opts.common.mb,
                    100_000,
                    2,
                ))
                .expect("fragment");
            eprintln!(
                "  db: {}",
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
            let spare = cluster.spare(0).clone();
            let victim = (0..3).find(|&i| i != cluster.leader()).expect("follower");
            let old = cluster.layout.members[victim].name.clone();
            let cfg = LoadConfig {
                rate: opts.rate,
                concurrency: 256,
                ..LoadConfig::new(endpoints.clone(), cluster.layout.etcd_client.clone())
            };
            let load = rt.block_on(LoadGen::start(cfg)).expect("load");
            std::thread::sleep(Duration::from_secs(5));
            if mode == "dead" {
                cluster.power_cut(victim);
            }
            let ops = cluster.coordinator();
            let t = Instant::now();
            let out = ops.run(&[
                "member",
                "replace",
                &old,
                "--with",
                &spare.name,
                "--agent",
                &spare.agent_url,
                "--yes",
            ]);
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
            eprintln!(
                "  took {:.1} s, exit {}, load: {load}",
                took.as_secs_f64(),
                out.code
            );
            rows.push(Row {
                mode: mode.clone(),
                took,
                ok: out.code == 0,
                note,
                load,
            });
        }
    }
    println!(
        "bench-replace: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "machine: nproc {}, etcd {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        etcd_version()
    );
    println!(
        "| mode | replace took | result | writes ok | failed | retried | p50 | p99 | max | leader changes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let l = &r.load;
        println!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.took.as_secs_f64(),
            if r.ok {
                "succeeded".to_string()
            } else {
                format!("FAILED: {}", r.note)
            },
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
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".into())
}
