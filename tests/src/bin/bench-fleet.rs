//! Benchmark: `etcdops status --all-clusters` over 100+ clusters of 3 real
//! agents on loopback, 10 % of the agents down and 1 % blackholed, beside a
//! sequential `etcdctl endpoint status` loop over the same endpoints.
//! Run with `--help`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_tests::bench::{self, positive};
use etcdops_tests::{Bins, Cluster};

const ABOUT: &str = "\
`etcdops status --all-clusters` against --clusters clusters of 3 real agents each, on
loopback addresses 127.78.C.11-13 (one etcd shared behind every agent: the harness's
one-member cluster), with every tenth agent down (nothing listening) and every hundredth
blackholed (iptables DROP on its port). Reports the wall time and peak RSS of the CLI at
10, 50 and all clusters (--runs each, the median), and a sequential
`etcdctl endpoint status` loop over the same 3 x --clusters endpoints (the shared etcd for
an agent that is up, the agent's address on port 2379 for one down or blackholed; etcd's
TLS client certificate as the harness issues it).
Every agent and the etcd are stopped when it ends, fails or gets Ctrl-C; its iptables
rules (comment etcdops-bench-fleet) are deleted when it ends or fails, and after a
Ctrl-C by the next run.";

const USAGE: &str = "\
Example:
  cargo build -p etcdops-tests --bins
  target/debug/bench-fleet --bin-dir target/debug --clusters 100 --timeout 2s";

/// bench-fleet: `etcdops status --all-clusters` at fleet scale.
#[derive(Debug, clap::Parser)]
#[command(name = "bench-fleet", long_about = ABOUT, after_help = USAGE)]
struct Opts {
    /// Where etcdops and etcdops-agent are (or e2e-etcdops and e2e-etcdops-agent).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Clusters of 3 agents (at most 250).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = positive::<usize>)]
    clusters: usize,
    /// --timeout of etcdops and etcdctl's dial and command timeouts, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2, value_parser = positive::<u64>)]
    timeout: u64,
    /// Runs of each etcdops measurement (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive::<usize>)]
    runs: usize,
    /// --parallel of etcdops.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive::<u16>)]
    parallel: u16,
    /// No blackholed agents: every hundredth is down instead (measures the
    /// fleet with only refused connections, without one --timeout to wait out).
    #[arg(long)]
    no_blackhole: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Up,
    Down,
    Blackholed,
}

/// Agent `i` (0-based over the whole fleet): every tenth down, every hundredth blackholed.
fn fate(i: usize, blackholes: bool) -> Fate {
    if i % 100 == 50 {
        if blackholes { Fate::Blackholed } else { Fate::Down }
    } else if i % 10 == 3 {
        Fate::Down
    } else {
        Fate::Up
    }
}

fn ip(cluster: usize, member: usize) -> String {
    format!("127.78.{}.{}", cluster + 1, 11 + member)
}

/// Our agents: SIGKILLed (with their process groups) when dropped.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// iptables DROP rules, deleted when dropped.
struct Blackhole(Vec<Vec<String>>);

impl Blackhole {
    fn add(&mut self, ip: &str, port: u16) -> Result<(), String> {
        let rule: Vec<String> = [
            "INPUT",
            "-d",
            ip,
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-m",
            "comment",
            "--comment",
            RULE_TAG,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()
            .map_err(|e| format!("iptables: {e}"))?;
        if !status.success() {
            return Err(format!("iptables -I {} failed", rule.join(" ")));
        }
        self.0.push(rule);
        Ok(())
    }
}

/// Marks our iptables rules, so a run cleans up what an interrupted one left
/// (the signal tear-down exits without running drops).
const RULE_TAG: &str = "etcdops-bench-fleet";

impl Blackhole {
    /// Deletes every rule an earlier run left behind.
    fn clear_stale() {
        let Ok(out) = Command::new("iptables").args(["-S", "INPUT"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rule) = line.strip_prefix("-A ").filter(|r| r.contains(RULE_TAG)) {
                let _ = Command::new("iptables")
                    .arg("-D")
                    .args(rule.split_whitespace())
                    .status();
            }
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for rule in &self.0 {
            let _ = Command::new("iptables").arg("-D").args(rule).status();
        }
    }
}

/// Wall time and peak RSS (kB) of one command, through /usr/bin/time.
fn timed(cmd: &mut Command) -> Result<(Duration, u64, std::process::Output), String> {
    let start = Instant::now();
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((took, rss, out))
}

fn main() -> ExitCode {
    let opts = <Opts as clap::Parser>::parse();
    if opts.clusters > 250 {
        eprintln!("bench-fleet: --clusters is at most 250");
        return ExitCode::from(2);
    }
    bench::tear_down_on_signal("bench-fleet");
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-fleet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `[etcd.tls]` table of an agent config, as written (empty when there is none).
fn etcd_tls_section(config: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        let header = line.trim_start().starts_with('[');
        if header {
            inside = line.trim() == "[etcd.tls]";
        }
        if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    if !section.is_empty() {
        section.push('\n');
    }
    Ok(section)
}

fn find_bin(dir: &Path, names: &[&str]) -> Result<PathBuf, String> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "none of {names:?} in {}: build them or pass --bin-dir",
                dir.display()
            )
        })
}

fn run(opts: &Opts) -> Result<(), String> {
    let bins = Bins {
        agent: find_bin(&opts.bin_dir, &["etcdops-agent", "e2e-etcdops-agent"])?,
        cli: find_bin(&opts.bin_dir, &["etcdops", "e2e-etcdops"])?,
    };
    // The shared etcd and the PKI: the harness's one-member cluster.
    let shared = Cluster::builder()
        .members(1)
        .disk_probe_interval_secs(0)
        .start(bins.clone());
    let etcd_url = shared.member(0).client_url.clone();
    // How the shared member's own agent reaches etcd (its [etcd.tls] client
    // certificate when etcd speaks TLS): every bench agent reaches it the same way.
    let etcd_tls = etcd_tls_section(&shared.member(0).agent_config)?;
    let pki = Pki::open(&shared.layout.pki_dir).map_err(|e| e.to_string())?;
    let scratch = bench::scratch_dir("bench-fleet").map_err(|e| e.to_string())?;
    let dir = scratch.path();

    let mut fleet = format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.ca_cert_path().display(),
        shared
            .layout
            .pki_dir
            .join("coordinator-sandbox-operator.crt")
            .display(),
        shared
            .layout
            .pki_dir
            .join("coordinator-sandbox-operator.key")
            .display(),
    );
    let mut agents = Agents(Vec::new());
    Blackhole::clear_stale();
    let mut blackhole = Blackhole(Vec::new());
    let mut endpoints = Vec::new();
    let (mut up, mut down, mut holed) = (0, 0, 0);
    eprintln!(
        "bench-fleet: issuing {} agent certificates ...",
        opts.clusters * 3
    );
    for c in 0..opts.clusters {
        fleet.push_str(&format!("\n[[clusters]]\nname = \"c{c:03}\"\n"));
        for m in 0..3 {
            let i = c * 3 + m;
            let (name, ip) = (format!("c{c:03}-m{m}"), ip(c, m));
            fleet.push_str(&format!(
                "[[clusters.members]]\nname = \"{name}\"\nagent = \"https://{ip}:7443\"\n"
            ));
            match fate(i, !opts.no_blackhole) {
                Fate::Down => {
                    down += 1;
                    endpoints.push(format!("http://{ip}:2379"));
                    continue;
                }
                Fate::Blackholed => {
                    holed += 1;
                    blackhole.add(&ip, 7443)?;
                    blackhole.add(&ip, 2379)?;
                    endpoints.push(format!("http://{ip}:2379"));
                }
                Fate::Up => {
                    up += 1;
                    endpoints.push(etcd_url.clone());
                }
            }
            let host = dir.join(&name);
            std::fs::create_dir_all(host.join("state")).map_err(|e| e.to_string())?;
            pki.issue(&IssueRequest::new(Role::Agent, name.clone()).host(ip.clone()))
                .map_err(|e| e.to_string())?;
            let (cert, key) = pki.paths(Role::Agent, &name);
            std::fs::write(
                host.join("etcd.env"),
                format!(
                    "ETCD_NAME={name}\nETCD_DATA_DIR={}\n",
                    host.join("data").display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let config = format!(
                "listen = \"{ip}:7443\"\nstate_dir = \"{}\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
                 [etcd]\nendpoint = \"{etcd_url}\"\nenv_file = \"{}\"\n\n{etcd_tls}[unit]\nbackend = \"process\"\n\
                 etcd_binary = \"/usr/bin/etcd\"\nlog_file = \"{}\"\nautostart = false\nrestart = \"never\"\n\n\
                 [disk]\nprobe_interval_secs = 0\n",
                host.join("state").display(),
                pki.ca_cert_path().display(),
                cert.display(),
                key.display(),
                host.join("etcd.env").display(),
                host.join("etcd.log").display(),
            );
            std::fs::write(host.join("agent.toml"), config).map_err(|e| e.to_string())?;
            let log = std::fs::File::create(host.join("agent.log")).map_err(|e| e.to_string())?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            use std::os::unix::process::CommandExt;
            let child = Command::new(&bins.agent)
                .arg("--config")
                .arg(host.join("agent.toml"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("spawning agent {name}: {e}"))?;
            agents.0.push(child);
        }
    }
    let fleet_path = dir.join("fleet.toml");
    std::fs::write(&fleet_path, fleet).map_err(|e| e.to_string())?;
    let expected_ok = up;
    eprintln!(
        "bench-fleet: {} clusters, {} agents: {up} up, {down} down, {holed} blackholed; waiting for the {up} up to answer ...",
        opts.clusters,
        opts.clusters * 3
    );
    let timeout = format!("{}s", opts.timeout);
    let parallel = opts.parallel.to_string();
    let status = |pattern: &str| {
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "maxrss_kb=%M"])
            .arg(&bins.cli)
            .arg("--fleet")
            .arg(&fleet_path)
            .args([
                "status",
                "--cluster",
                pattern,
                "--timeout",
                &timeout,
                "--parallel",
                &parallel,
                "-w",
                "json",
            ])
            .env_remove("ETCDOPS_FLEET")
            .stdin(Stdio::null());
        cmd
    };
    let answered = |out: &std::process::Output| -> Result<usize, String> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "status output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok(v["clusters"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .flat_map(|c| c["members"].as_array().cloned().unwrap_or_default())
                    .filter(|m| m["agent_info"].is_object())
                    .count()
            })
            .unwrap_or(0))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (_, _, out) = timed(&mut status("*"))?;
        let n = answered(&out)?;
        if n >= expected_ok {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {expected_ok} agents answered within 180 s"));
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    println!(
        "| clusters | agents (up / down / blackholed) | `etcdops status --all-clusters` wall (median of {}) | max | peak RSS | answered |",
        opts.runs
    );
    println!("|---|---|---|---|---|---|");
    let total = opts.clusters;
    let scales: Vec<(usize, &str)> = [(10, "c00?"), (50, "c0[0-4]?"), (total, "*")]
        .into_iter()
        .filter(|(n, _)| *n <= total)
        .collect();
    for (n, pattern) in scales {
        let (mut walls, mut peak, mut got) = (Vec::new(), 0, 0);
        let (u, d, b) = (0..n * 3).fold((0, 0, 0), |(u, d, b), i| match fate(i, !opts.no_blackhole) {
            Fate::Up => (u + 1, d, b),
            Fate::Down => (u, d + 1, b),
            Fate::Blackholed => (u, d, b + 1),
        });
        for _ in 0..opts.runs {
            let (took, rss, out) = timed(&mut status(pattern))?;
            walls.push(took);
            peak = peak.max(rss);
            got = answered(&out)?;
        }
        walls.sort();
        println!(
            "| {n} | {} ({u} / {d} / {b}) | {:.2} s | {:.2} s | {:.1} MB | {got} of {u} |",
            n * 3,
            walls[walls.len() / 2].as_secs_f64(),
            walls[walls.len() - 1].as_secs_f64(),
            peak as f64 / 1024.0
        );
    }

    // The naive loop: one etcdctl per endpoint, one after the other (with the
    // operator's etcd client certificate when etcd speaks TLS).
    let tls_args = shared.etcdctl_tls_args();
    let start = Instant::now();
    let mut failed = 0;
    for endpoint in &endpoints {
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(&tls_args)
            .args([
                "--endpoints",
                endpoint,
                "--dial-timeout",
                &timeout,
                "--command-timeout",
                &timeout,
                "endpoint",
                "status",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        failed += usize::from(!ok);
    }
    println!(
        "\nsequential `etcdctl endpoint status` over the same {} endpoints: {:.2} s ({failed} failed)",
        endpoints.len(),
        start.elapsed().as_secs_f64()
    );
    drop(blackhole);
    drop(agents);
    drop(shared);
    Ok(())
}
