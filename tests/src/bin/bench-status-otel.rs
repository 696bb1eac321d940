//! Benchmark: what traces cost `etcdops status`: without OTEL variables (no
//! exporter, no layer), with traces exported to an in-process OTLP receiver,
//! and optionally a CLI built before traces. Run with `--help`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use etcdops_tests::Cluster;
use etcdops_tests::bench::{self, Common};
use etcdops_tests::otlp::OtlpReceiver;

const ABOUT: &str = "\
The cost of distributed traces to `etcdops status`.

What it does: starts one 3-member cluster with the test harness (real etcd
over TLS, each member supervised by a real etcdops-agent, process backend,
on free 127.x.y.11-13 addresses, the periodic disk probe off; the agents
export no traces) and an in-process OTLP receiver. After one unmeasured
round it runs `etcdops status -w json` --runs times in each mode,
the modes taking turns to go first: without any OTEL variable; with OTEL_EXPORTER_OTLP_ENDPOINT set
to the receiver (spans exported and flushed before exit); and, with
--baseline-cli, that binary (e.g. built before traces existed). It prints
min/median/max per mode. Every cluster it starts is stopped when it ends,
fails or gets Ctrl-C.";

const USAGE: &str = "\
Example:
  cargo build -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/debug/bench-status-otel --bin-dir target/debug --runs 20 --baseline-cli /tmp/etcdops-main";

/// bench-status-otel: `etcdops status` with and without trace export.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-status-otel", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    /// Where etcdops and etcdops-agent are.
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Runs of each mode.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = bench::positive::<usize>)]
    runs: usize,
    /// Another etcdops binary to time beside (without OTEL variables).
    #[arg(long, value_name = "PATH")]
    baseline_cli: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = <Opts as clap::Parser>::parse();
    let common = Common {
        bin_dir: opts.bin_dir.clone(),
        mb: 1,
        runs: opts.runs,
    };
    let bins = common.bins("bench-status-otel");
    bench::tear_down_on_signal("bench-status-otel");
    let receiver = OtlpReceiver::start();
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins.clone());
    let time = |cli: &PathBuf, otel: bool| {
        let mut cmd = Command::new(cli);
        cmd.arg("--fleet")
            .arg(cluster.fleet_path())
            .args(["status", "-w", "json"])
            .env_remove("ETCDOPS_FLEET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if otel {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
        }
        let started = Instant::now();
        let out = cmd.output().expect("running etcdops");
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        took
    };
    // One unmeasured round: page cache, connections.
    time(&bins.cli, false);
    time(&bins.cli, true);
    let (mut off, mut on, mut base) = (Vec::new(), Vec::new(), Vec::new());
    // The modes take turns going first, so load drifts spread over all of them.
    for run in 0..opts.runs {
        for mode in (0..3).map(|m| (m + run) % 3) {
            match (mode, &opts.baseline_cli) {
                (0, _) => off.push(time(&bins.cli, false)),
                (1, _) => on.push(time(&bins.cli, true)),
                (_, Some(cli)) => base.push(time(cli, false)),
                (_, None) => {}
            }
        }
    }
    let exported = receiver
        .snapshot()
        .iter()
        .filter(|s| s.service == "etcdops")
        .count();
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "min {:.0} / median {:.0} / max {:.0} ms",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    println!("etcdops status -w json, {} runs each:", opts.runs);
    println!("  no OTEL variables:                   {}", summary(&mut off));
    println!(
        "  OTEL_EXPORTER_OTLP_ENDPOINT set:     {} ({exported} coordinator spans received)",
        summary(&mut on)
    );
    if let Some(cli) = &opts.baseline_cli {
        println!("  {} (no OTEL): {}", cli.display(), summary(&mut base));
    }
    ExitCode::SUCCESS
}
