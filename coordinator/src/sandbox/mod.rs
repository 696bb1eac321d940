//! `etcdops sandbox up|down`: a real etcd cluster on this machine, on
//! 127.0.0.x addresses, each member supervised by a real agent (process
//! backend) over mutual TLS, with a fleet file to point `etcdops` at; and
//! optionally spare hosts: agents without a member, for `etcdops member add`.

pub mod agent_toml;
pub mod layout;
pub mod procs;
pub mod serve;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agents::Agents;
use crate::exit::ExitStatus;
use crate::fleet::Fleet;
use agent_toml::Restart;
use layout::{Layout, LayoutSpec};

/// `etcdops sandbox up` options.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Number of etcd members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub members: u8,
    /// Spare hosts: agents without an etcd member (named etcd<members+1>...,
    /// addresses after the members'), for `etcdops member add`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub spares: u8,
    /// Directory for the sandbox's PKI, configs, data and logs.
    /// Default: $XDG_STATE_HOME/etcdops/sandbox (~/.local/state/etcdops/sandbox).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The etcd binary. Default: `etcd` on PATH, else /usr/bin/etcd.
    #[arg(long, env = "ETCD_BIN")]
    pub etcd_bin: Option<PathBuf>,
    /// The etcdops-agent binary. Default: next to this etcdops, else on PATH.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// First three octets of the members' loopback addresses: member N
    /// listens on <prefix>.(10+N). Pick another to run a second sandbox.
    #[arg(long, default_value = "127.0.0", value_parser = parse_prefix)]
    pub ip_prefix: [u8; 3],
    /// How long to wait for the cluster to become healthy.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    pub wait: Duration,
    /// Also start a home etcd (one more loopback member, for serve's leader
    /// election) and one `etcdops serve` with a fast demo schedule (a backup
    /// every 20 s into <dir>/backups); `down` stops them too.
    #[arg(long)]
    pub serve: bool,
}

fn parse_prefix(text: &str) -> Result<[u8; 3], String> {
    let octets: Vec<u8> = text
        .split('.')
        .map(|o| {
            o.parse::<u8>()
                .map_err(|_| format!("{o:?} is not an octet (0-255)"))
        })
        .collect::<Result<_, _>>()?;
    match octets.as_slice() {
        [127, b, c] => Ok([127, *b, *c]),
        [_, _, _] => {
            Err("the sandbox only uses loopback addresses: the prefix must start with 127".to_string())
        }
        _ => Err(format!("expected three octets like 127.0.0, got {text:?}")),
    }
}

/// `etcdops sandbox down` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// The sandbox directory given to `up`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "etcd is not installed (looked for `etcd` on PATH and /usr/bin/etcd): install it with \
         `apt-get install etcd-server etcd-client`, or pass --etcd-bin PATH"
    )]
    EtcdMissing,
    #[error("etcd binary {0} does not exist: pass --etcd-bin with the path of an etcd binary")]
    EtcdBinMissing(PathBuf),
    #[error(
        "etcdops-agent not found next to {exe} or on PATH: build it (`cargo build --bins`) or pass --agent-bin PATH"
    )]
    AgentMissing { exe: String },
    #[error(
        "a sandbox is already running in {dir} (agent of {member}, pid {pid}): run `etcdops sandbox down --dir {dir}` first"
    )]
    AlreadyRunning { dir: PathBuf, member: String, pid: u32 },
    #[error(
        "{addr} is already in use, so member {member} cannot listen there: stop what uses it (another sandbox: \
         `etcdops sandbox down --dir DIR`), or use other addresses with --ip-prefix (e.g. 127.0.1)"
    )]
    AddressInUse { addr: SocketAddr, member: String },
    #[error("no sandbox in {dir} (no sandbox.toml): nothing to do")]
    NoSandbox { dir: PathBuf },
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(transparent)]
    Proc(#[from] procs::ProcError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error(transparent)]
    Tls(#[from] etcdops_certs::TlsError),
    #[error(
        "the sandbox did not become healthy within {waited:?}: {reason}\nits agents were stopped; logs are in {dir}"
    )]
    NotHealthy {
        waited: Duration,
        reason: String,
        dir: PathBuf,
    },
}

/// The default sandbox directory.
pub fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("etcdops/sandbox")
}

fn spec_path(dir: &Path) -> PathBuf {
    dir.join("sandbox.toml")
}

fn load_spec(dir: &Path) -> Result<Option<LayoutSpec>, SandboxError> {
    let path = spec_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| SandboxError::State {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::State {
            path,
            message: e.to_string(),
        }),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn etcd_binary(arg: Option<&Path>) -> Result<PathBuf, SandboxError> {
    match arg {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(SandboxError::EtcdBinMissing(p.to_path_buf())),
        None => find_on_path("etcd")
            .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
            .ok_or(SandboxError::EtcdMissing),
    }
}

fn agent_binary(arg: Option<&Path>) -> Result<PathBuf, SandboxError> {
    let exe = std::env::current_exe().ok();
    let missing = || SandboxError::AgentMissing {
        exe: exe
            .as_ref()
            .map(|e| e.display().to_string())
            .unwrap_or_else(|| "etcdops".to_string()),
    };
    if let Some(p) = arg {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(missing())
        };
    }
    exe.as_ref()
        .and_then(|e| e.parent())
        .map(|d| d.join("etcdops-agent"))
        .filter(|p| p.is_file())
        .or_else(|| find_on_path("etcdops-agent"))
        .ok_or_else(missing)
}

/// Starts (or restarts) the sandbox and waits until it is healthy.
pub async fn up(args: &UpArgs, out: &mut dyn Write) -> Result<ExitStatus, SandboxError> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let agent_bin = agent_binary(args.agent_bin.as_deref())?;
    let (layout, fresh, etcd_bin) = match load_spec(&dir)? {
        Some(spec) => {
            let layout = spec.plan()?;
            if let Some((member, pid)) =
                hosts(&layout).find_map(|m| Some((m.name.clone(), procs::running_agent(m)?)))
            {
                return Err(SandboxError::AlreadyRunning { dir, member, pid });
            }
            eprintln!(
                "restarting the existing sandbox in {} ({} members, {} spare hosts, data kept)",
                dir.display(),
                layout.members.len(),
                layout.spares.len()
            );
            (layout, false, spec.etcd_binary.clone())
        }
        None => {
            let spec = LayoutSpec {
                dir: dir.clone(),
                cluster: "sandbox".to_string(),
                members: usize::from(args.members),
                ip_prefix: args.ip_prefix,
                client_port: 2379,
                peer_port: 2380,
                agent_port: 7443,
                etcd_binary: etcd_binary(args.etcd_bin.as_deref())?,
                restart: Restart::OnFailure,
                token: format!("etcdops-sandbox-{}", std::process::id()),
                metrics_port: None,
                disk_probe_interval_secs: None,
                spares: usize::from(args.spares),
                tls: true,
            };
            check_addresses(&spec.plan()?)?;
            let layout = spec.write()?;
            let path = spec_path(&dir);
            let text = toml::to_string_pretty(&spec).map_err(|e| SandboxError::State {
                path: path.clone(),
                message: e.to_string(),
            })?;
            std::fs::write(&path, text).map_err(|e| SandboxError::State {
                path,
                message: e.to_string(),
            })?;
            (layout, true, spec.etcd_binary.clone())
        }
    };
    if !fresh {
        check_addresses(&layout)?;
    }
    layout.check_agent_configs(&agent_bin)?;
    for m in hosts(&layout) {
        procs::spawn_agent(&agent_bin, m)?;
    }
    eprintln!(
        "started {} agents; waiting for the etcd members to become healthy...",
        layout.members.len() + layout.spares.len()
    );
    let waited = async {
        wait_healthy(&layout, args.wait).await?;
        wait_spares(&layout, args.wait).await
    };
    if let Err(reason) = waited.await {
        stop_all(&layout, out);
        return Err(SandboxError::NotHealthy {
            waited: args.wait,
            reason,
            dir,
        });
    }
    print_next_steps(&layout, out);
    if args.serve {
        let s = serve::ServeLayout::new(&layout);
        if let Err(e) = serve::start(&layout, &s, &etcd_bin) {
            serve::stop(&s);
            stop_all(&layout, out);
            return Err(e);
        }
        let exe = std::env::args()
            .next()
            .filter(|a| a.contains('/'))
            .unwrap_or_else(|| "etcdops".to_string());
        let _ = writeln!(out);
        let _ = write!(out, "{}", serve::next_steps(&s, &exe));
    }
    Ok(ExitStatus::Ok)
}

/// Every host of the sandbox: the members, then the spares.
fn hosts(layout: &Layout) -> impl Iterator<Item = &layout::MemberLayout> {
    layout.members.iter().chain(&layout.spares)
}

/// Refuses to start when a member's (or spare host's) address is taken.
fn check_addresses(layout: &Layout) -> Result<(), SandboxError> {
    for m in hosts(layout) {
        for url in [&m.client_url, &m.peer_url, &m.agent_url] {
            let Some(port) = url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let addr = SocketAddr::from((m.ip, port));
            if TcpListener::bind(addr).is_err() {
                return Err(SandboxError::AddressInUse {
                    addr,
                    member: m.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Polls the agents until every member is reachable and healthy with one leader.
async fn wait_healthy(layout: &Layout, wait: Duration) -> Result<(), String> {
    let fleet = Fleet::load(&layout.fleet_path).map_err(|e| e.to_string())?;
    let tls = fleet.tls.files().client().map_err(|e| e.to_string())?;
    let agents = Agents::new(tls, Duration::from_secs(2));
    let cluster = &fleet.clusters[0];
    let deadline = Instant::now() + wait;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let replies = agents.get_status(&cluster.members).await;
        let mut leaders = 0;
        let mut problems = Vec::new();
        for r in &replies {
            match &r.result {
                Ok(s) => match &s.member {
                    Some(m) if m.reachable => leaders += usize::from(m.is_leader),
                    Some(m) => problems.push(format!("{}: {}", r.member, m.error)),
                    None => problems.push(format!("{}: no member status", r.member)),
                },
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() && leaders == 1 {
            let health = agents.health(&cluster.members).await;
            if health.iter().all(|h| h.result.as_ref().is_ok_and(|h| h.healthy)) {
                return Ok(());
            }
            last = "members answer but are not yet healthy".to_string();
        } else if problems.is_empty() {
            last = format!("{leaders} leaders");
        } else {
            last = problems.join("; ");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// Polls the spare hosts' agents until each answers GetStatus.
async fn wait_spares(layout: &Layout, wait: Duration) -> Result<(), String> {
    if layout.spares.is_empty() {
        return Ok(());
    }
    let fleet = Fleet::load(&layout.fleet_path).map_err(|e| e.to_string())?;
    let tls = fleet.tls.files().client().map_err(|e| e.to_string())?;
    let agents = Agents::new(tls, Duration::from_secs(2));
    let spares = layout
        .spares
        .iter()
        .map(|s| crate::fleet::Member::new(&s.name, &s.agent_url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    loop {
        let replies = agents.get_status(&spares).await;
        let problems: Vec<String> = replies
            .iter()
            .filter_map(|r| {
                r.result
                    .as_ref()
                    .err()
                    .map(|e| format!("spare host {}: {e}", r.member))
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(problems.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_next_steps(layout: &Layout, out: &mut dyn Write) {
    let fleet = layout.fleet_path.display();
    let endpoints = layout
        .members
        .iter()
        .map(|m| m.client_url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let _ = writeln!(
        out,
        "sandbox cluster \"sandbox\" is up: {} etcd members ({}), each with its agent (mutual TLS).",
        layout.members.len(),
        if layout.etcd_client.is_some() {
            "client and peer TLS, client certificates required"
        } else {
            "plain HTTP"
        }
    );
    let _ = writeln!(out);
    for m in &layout.members {
        let _ = writeln!(
            out,
            "  {:<6} etcd {}  agent {}",
            m.name, m.client_url, m.agent_url
        );
    }
    let _ = writeln!(out);
    if let Some(first) = layout.spares.first() {
        let _ = writeln!(
            out,
            "spare hosts (agents without a member; add one with `etcdops member add {} --agent {}`):",
            first.name, first.agent_url
        );
        let _ = writeln!(out);
        for s in &layout.spares {
            let _ = writeln!(out, "  {:<6} peer {}  agent {}", s.name, s.peer_url, s.agent_url);
        }
        let _ = writeln!(out);
    }
    // Name the binary the way the user ran it (target/debug/etcdops, or etcdops on PATH).
    let exe = std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "etcdops".to_string());
    let _ = writeln!(out, "Try next:");
    let _ = writeln!(out, "  export ETCDOPS_FLEET={fleet}");
    let _ = writeln!(out, "  {exe} status");
    let _ = writeln!(out, "  {exe} health -w json");
    let _ = writeln!(out, "  {exe} member list");
    let _ = writeln!(
        out,
        "  etcdctl {} put greeting hello",
        etcdctl_flags(layout, &endpoints)
    );
    let _ = writeln!(out, "  {exe} sandbox down --dir {}", layout.dir.display());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Files (PKI, configs, data, logs) are in {}.",
        layout.dir.display()
    );
}

/// etcdctl's connection flags for the sandbox: the endpoints and, with
/// TLS, the operator's etcd client certificate (`--cacert --cert --key`).
pub fn etcdctl_flags(layout: &Layout, endpoints: &str) -> String {
    match &layout.etcd_client {
        Some(tls) => format!(
            "--endpoints {endpoints} --cacert {} --cert {} --key {}",
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ),
        None => format!("--endpoints {endpoints}"),
    }
}

/// Stops every agent (and its etcd) of the sandbox in `dir`.
pub fn down(args: &DownArgs, out: &mut dyn Write) -> Result<ExitStatus, SandboxError> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let spec = load_spec(&dir)?.ok_or_else(|| SandboxError::NoSandbox { dir: dir.clone() })?;
    let layout = spec.plan()?;
    let serve = serve::stop(&serve::ServeLayout::new(&layout));
    for what in &serve {
        let _ = writeln!(out, "stopped {what}");
    }
    let stopped = stop_all(&layout, out) + serve.len();
    if stopped == 0 {
        let _ = writeln!(out, "nothing was running in {}", dir.display());
    }
    let _ = writeln!(
        out,
        "sandbox stopped; nothing left running. Files are kept in {} (remove them with `rm -rf {}`).",
        dir.display(),
        dir.display()
    );
    Ok(ExitStatus::Ok)
}

/// Stops every member's (and spare host's) agent and etcd; returns how many were running.
fn stop_all(layout: &Layout, out: &mut dyn Write) -> usize {
    let mut stopped = 0;
    for m in hosts(layout) {
        let data_dir = format!("ETCD_DATA_DIR={}", m.data_dir.display());
        if let Some(pid) = procs::running_agent(m) {
            let how = procs::stop_group(pid, Duration::from_secs(25), || {});
            let _ = writeln!(
                out,
                "stopped {} (agent pid {pid}, {})",
                m.name,
                match how {
                    procs::Stopped::Gracefully => "gracefully",
                    procs::Stopped::Killed => "killed after the grace period",
                }
            );
            stopped += 1;
        } else if let Some(pgid) = procs::recorded_pid(m) {
            // The agent died without stopping its etcd: stop the orphan.
            let orphans = procs::orphans_in_group(pgid, &data_dir);
            if !orphans.is_empty() {
                procs::stop_group(pgid, Duration::from_secs(15), || {});
                let _ = writeln!(out, "stopped the orphaned etcd of {} (pids {orphans:?})", m.name);
                stopped += 1;
            }
        }
        procs::forget(m);
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_prefix_must_be_loopback() {
        assert_eq!(parse_prefix("127.0.0"), Ok([127, 0, 0]));
        assert_eq!(parse_prefix("127.4.200"), Ok([127, 4, 200]));
        assert!(parse_prefix("10.0.0").expect_err("not loopback").contains("127"));
        assert!(parse_prefix("127.0").is_err());
        assert!(parse_prefix("127.0.300").is_err());
    }
}
