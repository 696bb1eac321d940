//! Benchmark: `etcdops status` against a 3-member cluster whose etcd speaks
//! TLS with client-certificate auth, beside one on plain HTTP, and one GET of
//! etcd's `/metrics` on a new connection by rustls and by curl. Run with
//! `--help`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use etcdops_tests::Cluster;
use etcdops_tests::bench::{self, Common};

const ABOUT: &str = "\
The cost of etcd over TLS to `etcdops status`.

What it does: starts two 3-member clusters with the test harness (real etcd,
each member supervised by a real etcdops-agent, process backend, on free
127.x.y.11-13 addresses, the periodic disk probe off): one with client and
peer TLS and client-certificate auth (the default), one on plain HTTP. After
one unmeasured round it runs `etcdops status -w json` --runs times on each,
alternating, and prints min/median/max. Then it times one GET of a member's
/metrics on a new connection (a full TLS handshake with the client
certificate) by rustls (this build) and by curl (OpenSSL), TLS and plain.
Every cluster it starts is stopped when it ends, fails or gets Ctrl-C.";

const USAGE: &str = "\
Example:
  cargo build -p etcdops-agent -p etcdops-coordinator -p etcdops-tests --bins
  target/debug/bench-status-tls --bin-dir target/debug --runs 20";

/// bench-status-tls: `etcdops status` with etcd over TLS vs plain HTTP.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-status-tls", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    /// Where etcdops and etcdops-agent are.
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Runs of each measurement.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = bench::positive::<usize>)]
    runs: usize,
    /// Another etcdops-agent binary for both clusters (e.g. one built
    /// before a change, to compare).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = <Opts as clap::Parser>::parse();
    // It writes no data: --mb is not one of its options.
    let common = Common {
        bin_dir: opts.bin_dir.clone(),
        mb: 1,
        runs: opts.runs,
    };
    let mut bins = common.bins("bench-status-tls");
    if let Some(agent) = opts.agent {
        bins.agent = agent;
    }
    bench::tear_down_on_signal("bench-status-tls");
    let runs = opts.runs;
    println!("agent binary: {}", bins.agent.display());
    let tls = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins.clone());
    let plain = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .plain_http()
        .start(bins);
    let time = |c: &Cluster| {
        let started = Instant::now();
        let out = c.etcdops(&["status", "-w", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        started.elapsed().as_secs_f64() * 1000.0
    };
    // One unmeasured round: connections, page cache.
    time(&tls);
    time(&plain);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with.push(time(&tls));
        without.push(time(&plain));
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "min {:.0} / median {:.0} / max {:.0} ms",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    println!("etcdops status, {runs} runs each:");
    println!("  etcd over TLS (client-cert auth): {}", summary(&mut with));
    println!("  etcd over plain HTTP:             {}", summary(&mut without));

    // One GET of /metrics on a new connection: this debug build's rustls
    // (the agent's scraper, a fresh client each time) against curl.
    let tls_url = tls.member(0).client_url.clone();
    let plain_url = plain.member(0).client_url.clone();
    let client = tls.layout.etcd_client.clone().expect("TLS cluster");
    let rustls_get = |url: &str, files: Option<&etcdops_certs::TlsFiles>| {
        let started = Instant::now();
        etcdops_tests::etcd_metrics(url, files);
        started.elapsed().as_secs_f64() * 1000.0
    };
    let curl_get = |url: &str, files: Option<&etcdops_certs::TlsFiles>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{time_total}"]);
        if let Some(f) = files {
            cmd.arg("--cacert")
                .arg(&f.ca)
                .arg("--cert")
                .arg(&f.cert)
                .arg("--key")
                .arg(&f.key);
        }
        let out = cmd.arg(format!("{url}/metrics")).output().expect("run curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .map(|secs| secs * 1000.0)
            .expect("curl's time_total")
    };
    let (mut r_tls, mut r_plain, mut c_tls, mut c_plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    rustls_get(&tls_url, Some(&client));
    for _ in 0..runs {
        r_tls.push(rustls_get(&tls_url, Some(&client)));
        r_plain.push(rustls_get(&plain_url, None));
        c_tls.push(curl_get(&tls_url, Some(&client)));
        c_plain.push(curl_get(&plain_url, None));
    }
    println!("GET /metrics on a new connection, {runs} runs each:");
    println!("  debug-build rustls, TLS:   {}", summary(&mut r_tls));
    println!("  debug-build, plain HTTP:   {}", summary(&mut r_plain));
    println!("  curl (OpenSSL), TLS:       {}", summary(&mut c_tls));
    println!("  curl, plain HTTP:          {}", summary(&mut c_plain));
    ExitCode::SUCCESS
}
