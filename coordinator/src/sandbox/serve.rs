//! `etcdops sandbox up --serve`: beside the sandbox cluster, a "home" etcd
//! (one more loopback member, client TLS with client certificates, on
//! `<prefix>.9`: where serve replicas elect their leader, issue 15) and one
//! `etcdops serve` replica with a fast demo schedule (a backup every 20 s into
//! `<dir>/backups`, health every 30 s, cert-expiry every minute), so a new user
//! sees a backup within a minute. Both run in process groups of their own
//! with pid files in `<dir>/serve/`; `sandbox down` stops them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role};

use super::SandboxError;
use super::layout::Layout;
use super::procs;

/// Where serve's `/metrics` listens in the sandbox.
pub const METRICS_PORT: u16 = 9465;

/// The sandbox's serve files.
#[derive(Debug, Clone)]
pub struct ServeLayout {
    pub dir: PathBuf,
    pub home_ip: Ipv4Addr,
    /// The home etcd's client URL (`https://<prefix>.9:2379`).
    pub home_url: String,
    pub home_data: PathBuf,
    pub home_log: PathBuf,
    pub home_pid: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
    pub backups: PathBuf,
    pub metrics: String,
}

impl ServeLayout {
    /// The serve files of `layout`; the home etcd on `<prefix>.9` of its members' addresses.
    pub fn new(layout: &Layout) -> ServeLayout {
        let dir = layout.dir.join("serve");
        let [a, b, c, _] = layout.members.first().map_or([127, 0, 0, 0], |m| m.ip.octets());
        let home_ip = Ipv4Addr::new(a, b, c, 9);
        ServeLayout {
            home_url: format!("https://{home_ip}:2379"),
            home_data: dir.join("home-etcd"),
            home_log: dir.join("home-etcd.log"),
            home_pid: dir.join("home-etcd.pid"),
            config: dir.join("serve.toml"),
            log: dir.join("serve.log"),
            pid: dir.join("serve.pid"),
            backups: layout.dir.join("backups"),
            metrics: format!("127.0.0.1:{METRICS_PORT}"),
            home_ip,
            dir,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |e| SandboxError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The demo configuration serve runs with.
fn serve_toml(layout: &Layout, s: &ServeLayout) -> String {
    format!(
        "# etcdops serve in the sandbox: a fast demo schedule (see deploy/config/serve.toml for a real one).\n\
         fleet = \"{fleet}\"\n\
         state_dir = \"{state}\"\n\
         journal = \"{state}/journal.redb\"\n\
         metrics_listen = \"{metrics}\"\n\
         fence_wait = \"10s\"\n\
         # The home etcd for leader election: {home} (CA and client certificate in {pki}).\n\n\
         [[jobs]]\ncluster = \"sandbox\"\nkind = \"backup\"\nschedule = \"*/20 * * * * *\"\n\n\
         [[jobs]]\ncluster = \"sandbox\"\nkind = \"health\"\nschedule = \"*/30 * * * * *\"\n\n\
         [[jobs]]\ncluster = \"sandbox\"\nkind = \"cert-expiry\"\nschedule = \"0 * * * * *\"\n\n\
         # The newest backup restored into a throwaway etcd and compared, twice a minute.\n\
         [[jobs]]\ncluster = \"sandbox\"\nkind = \"restore-drill\"\nschedule = \"15,45 * * * * *\"\n",
        fleet = layout.fleet_path.display(),
        state = s.dir.display(),
        metrics = s.metrics,
        home = s.home_url,
        pki = layout.pki_dir.display(),
    )
}

/// Adds a `[clusters.backup]` target in `<dir>/backups` to the sandbox's
/// fleet file, unless it has one.
fn ensure_backup_target(layout: &Layout, s: &ServeLayout) -> Result<(), SandboxError> {
    std::fs::create_dir_all(&s.backups).map_err(io(&s.backups))?;
    let text = std::fs::read_to_string(&layout.fleet_path).map_err(io(&layout.fleet_path))?;
    if text.contains("[clusters.backup]") {
        return Ok(());
    }
    let text = format!(
        "{text}\n[clusters.backup]\ntarget = \"file://{}\"\nkeep_last = 10\n",
        s.backups.display()
    );
    std::fs::write(&layout.fleet_path, text).map_err(io(&layout.fleet_path))
}

/// Starts the home etcd and serve; waits until serve's `/metrics` answers.
pub fn start(layout: &Layout, s: &ServeLayout, etcd_bin: &Path) -> Result<(), SandboxError> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&s.dir).map_err(io(&s.dir))?;
    ensure_backup_target(layout, s)?;
    // The home etcd's server certificate, issued once.
    let pki = Pki::open(&layout.pki_dir).map_err(|e| SandboxError::State {
        path: layout.pki_dir.clone(),
        message: e.to_string(),
    })?;
    let (cert, key) = pki.paths(Role::EtcdServer, "home");
    if !cert.exists() {
        pki.issue(
            &IssueRequest::new(Role::EtcdServer, "home")
                .host(s.home_ip.to_string())
                .host(Ipv4Addr::LOCALHOST.to_string()),
        )
        .map_err(|e| SandboxError::State {
            path: layout.pki_dir.clone(),
            message: e.to_string(),
        })?;
    }
    let log = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))
    };
    if running(&s.home_pid, "home-etcd").is_none() {
        let peer = format!("http://{}:2380", s.home_ip);
        let child = Command::new(etcd_bin)
            .args(["--name", "home", "--data-dir"])
            .arg(&s.home_data)
            .args([
                "--listen-client-urls",
                &s.home_url,
                "--advertise-client-urls",
                &s.home_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("home={peer}")])
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--trusted-ca-file")
            .arg(pki.ca_cert_path())
            .arg("--client-cert-auth")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log(&s.home_log)?)
            .stderr(log(&s.home_log)?)
            .process_group(0)
            .spawn()
            .map_err(io(etcd_bin))?;
        std::fs::write(&s.home_pid, format!("{}\n", child.id())).map_err(io(&s.home_pid))?;
    }
    std::fs::write(&s.config, serve_toml(layout, s)).map_err(io(&s.config))?;
    if running(&s.pid, "serve").is_none() {
        let exe = std::env::current_exe().map_err(io(Path::new("etcdops")))?;
        let child = Command::new(&exe)
            .args(["-v", "serve", "--config"])
            .arg(&s.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("ETCDOPS_FLEET")
            .stdin(Stdio::null())
            .stdout(log(&s.log)?)
            .stderr(log(&s.log)?)
            .process_group(0)
            .spawn()
            .map_err(io(&exe))?;
        std::fs::write(&s.pid, format!("{}\n", child.id())).map_err(io(&s.pid))?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&s.metrics).is_err() {
        if running(&s.pid, "serve").is_none() || Instant::now() > deadline {
            let tail = std::fs::read_to_string(&s.log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(SandboxError::State {
                path: s.log.clone(),
                message: format!(
                    "etcdops serve did not start (its /metrics on {} does not answer): {}",
                    s.metrics,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The pid in `pid_file` when that process runs and its command line has `needle`.
fn running(pid_file: &Path, needle: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline);
    (text.contains(needle) && procs::alive(pid)).then_some(pid)
}

/// Stops serve, then the home etcd; what was stopped, for `sandbox down`.
pub fn stop(s: &ServeLayout) -> Vec<String> {
    let mut stopped = Vec::new();
    for (pid_file, needle, what) in [
        (&s.pid, "serve", "etcdops serve"),
        (&s.home_pid, "home-etcd", "the home etcd"),
    ] {
        if let Some(pid) = running(pid_file, needle) {
            procs::stop_group(pid, Duration::from_secs(70), || {});
            stopped.push(format!("{what} (pid {pid})"));
        }
        let _ = std::fs::remove_file(pid_file);
    }
    stopped
}

/// What `sandbox up --serve` prints.
pub fn next_steps(s: &ServeLayout, exe: &str) -> String {
    format!(
        "etcdops serve runs (log {log}): a backup every 20 s into {backups}, health every 30 s.\n\
         \x20 curl -s http://{metrics}/metrics | grep etcdops_serve_job_\n\
         \x20 {exe} op list --journal {state}/journal.redb\n\
         \x20 {exe} backup list\n\
         home etcd (serve's leader election): {home}\n",
        log = s.log.display(),
        backups = s.backups.display(),
        metrics = s.metrics,
        state = s.dir.display(),
        home = s.home_url,
    )
}
