//! What the benchmark binaries (`src/bin/bench-*.rs`) share: their common
//! options, the binaries they drive, and the tear-down that leaves nothing
//! running on any path.
//!
//! A bench owns every [`Cluster`](crate::Cluster) it starts, so a normal
//! return and a panic (unwinding) stop its agents and etcd members through
//! the cluster's `Drop`. [`tear_down_on_signal`] covers SIGINT, SIGTERM and
//! SIGHUP: a thread stops every process the bench started (each agent's
//! process group, with the etcd it supervises; the CLI and etcdctl runs),
//! removes the clusters' directories and the bench's [`scratch_dir`]s, and
//! exits 128 + the signal. Benches never call `std::process::exit` once a
//! cluster runs: errors return from `main` so the clusters drop first.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcdops_coordinator::sandbox::procs;

use crate::Bins;

/// Held while a signal tears the bench down: a panic on another thread
/// waits for it, so the bench ends with the signal's exit code after a
/// complete tear-down rather than with the panic's.
static TEARING_DOWN: Mutex<()> = Mutex::new(());

/// The name of the thread that waits for signals.
const SIGNAL_THREAD: &str = "bench-signals";

/// Scratch directories to remove on a signal ([`scratch_dir`]).
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The harness's prefix of a cluster's directory (`ClusterBuilder::start`).
const CLUSTER_DIR_PREFIX: &str = "etcdops-e2e-";

/// How long an agent has to stop its etcd and exit before its process
/// group is killed (as the harness's `Drop` allows).
const AGENT_GRACE: Duration = Duration::from_secs(20);

/// Installs the signal tear-down (call first in `main`, after parsing the
/// options): on SIGINT, SIGTERM or SIGHUP every process this bench started
/// is stopped, the clusters' and scratch directories are removed, and the
/// bench exits 128 + the signal number.
pub fn tear_down_on_signal(bench: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{bench}: cannot watch for signals ({e}); Ctrl-C may leave clusters running");
            return;
        }
    };
    let streams = {
        let _entered = rt.enter();
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        )
    };
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
        eprintln!("{bench}: cannot watch for signals; Ctrl-C may leave clusters running");
        return;
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A panic caused by a tear-down in progress waits for its exit.
        if std::thread::current().name() != Some(SIGNAL_THREAD) {
            drop(TEARING_DOWN.lock());
        }
        default_hook(info);
    }));
    let watcher = std::thread::Builder::new()
        .name(SIGNAL_THREAD.into())
        .spawn(move || {
            let (name, number) = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => ("SIGINT", 2),
                    _ = term.recv() => ("SIGTERM", 15),
                    _ = hup.recv() => ("SIGHUP", 1),
                }
            });
            let _held = TEARING_DOWN.lock();
            eprintln!("{bench}: {name}: stopping every agent, etcd member and command it started ...");
            let removed = stop_children();
            let scratch: Vec<PathBuf> = SCRATCH.lock().map(|s| s.clone()).unwrap_or_default();
            for dir in removed.iter().chain(&scratch) {
                let _ = std::fs::remove_dir_all(dir);
            }
            eprintln!("{bench}: stopped; exiting");
            std::process::exit(128 + number);
        });
    if let Err(e) = watcher {
        eprintln!("{bench}: cannot watch for signals ({e}); Ctrl-C may leave clusters running");
    }
}

/// A scratch directory (in `$TMPDIR`) removed when dropped and on a signal.
#[derive(Debug)]
pub struct ScratchDir(tempfile::TempDir);

impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Ok(mut dirs) = SCRATCH.lock() {
            dirs.retain(|d| d != self.0.path());
        }
    }
}

/// Creates a [`ScratchDir`] named after `bench`.
pub fn scratch_dir(bench: &str) -> std::io::Result<ScratchDir> {
    let dir = tempfile::Builder::new().prefix(&format!("{bench}-")).tempdir()?;
    if let Ok(mut dirs) = SCRATCH.lock() {
        dirs.push(dir.path().to_path_buf());
    }
    Ok(ScratchDir(dir))
}

/// A process of ours: its pid, process group, whether it has exited (a
/// zombie not reaped yet), and the cluster directory its command line names
/// (an agent's `--config <cluster>/<host>/agent.toml`).
struct Child {
    pid: u32,
    pgrp: u32,
    exited: bool,
    cluster_dir: Option<PathBuf>,
}

impl Child {
    /// An agent: the leader of its own process group (its etcd is in it).
    fn leads_group(&self) -> bool {
        self.pgrp == self.pid
    }

    /// Whether it, or for an agent anything in its group, still runs (an
    /// exited agent's etcd may outlive it in the group).
    fn running(&self) -> bool {
        if self.leads_group() {
            procs::group_alive(self.pid)
        } else {
            !self.exited && procs::alive(self.pid)
        }
    }
}

/// The children of this process, exited ones included.
fn children() -> Vec<Child> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // fields[0] = state, fields[1] = ppid, fields[2] = pgrp
            if fields.len() < 3 || fields[1] != me {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let cluster_dir = args
                .iter()
                .position(|a| *a == b"--config")
                .and_then(|i| args.get(i + 1))
                .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                .and_then(|config| Some(config.parent()?.parent()?.to_path_buf()))
                .filter(|dir| {
                    dir.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(CLUSTER_DIR_PREFIX))
                });
            Some(Child {
                pid,
                pgrp: fields[2].parse().ok()?,
                exited: matches!(fields[0], "Z" | "X"),
                cluster_dir,
            })
        })
        .collect()
}

/// Stops every child of this process and what it started: an agent (the
/// leader of its own process group) is sent SIGTERM, so it stops its etcd,
/// and its group is SIGKILLed after [`AGENT_GRACE`]; any other child (the
/// CLI, etcdctl) gets SIGTERM, then SIGKILL after 5 s. Repeats until no
/// child is left (the main thread may be starting one meanwhile). Returns
/// the cluster directories the agents named.
fn stop_children() -> Vec<PathBuf> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut dirs = Vec::new();
    let deadline = Instant::now() + AGENT_GRACE + Duration::from_secs(30);
    loop {
        let found: Vec<Child> = children().into_iter().filter(Child::running).collect();
        if found.is_empty() || Instant::now() > deadline {
            break;
        }
        for c in &found {
            if c.leads_group() {
                procs::terminate(c.pid);
            } else {
                let _ = kill(
                    Pid::from_raw(i32::try_from(c.pid).unwrap_or(i32::MAX)),
                    Signal::SIGTERM,
                );
            }
            if let Some(dir) = &c.cluster_dir
                && !dirs.contains(dir)
            {
                dirs.push(dir.clone());
            }
        }
        for c in &found {
            if c.leads_group() {
                procs::wait_group(c.pid, AGENT_GRACE, || {});
            } else {
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until && procs::alive(c.pid) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = kill(
                    Pid::from_raw(i32::try_from(c.pid).unwrap_or(i32::MAX)),
                    Signal::SIGKILL,
                );
            }
        }
    }
    dirs
}

/// `--bin-dir`, `--mb`, `--runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Where etcdops and etcdops-agent are (build them with --release first).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Database size written, MB.
    #[arg(long, value_name = "N", default_value_t = 250, value_parser = positive::<usize>)]
    pub mb: usize,
    /// Runs (of every scenario or mode).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    pub runs: usize,
}

impl Common {
    /// The binaries in --bin-dir; exits 2 naming what is missing.
    pub fn bins(&self, bench: &str) -> Bins {
        let bins = Bins {
            agent: self.bin_dir.join("etcdops-agent"),
            cli: self.bin_dir.join("etcdops"),
        };
        for path in [&bins.agent, &bins.cli] {
            if !path.is_file() {
                eprintln!(
                    "{bench}: {} is missing: build with `cargo build --release -p etcdops-agent -p etcdops-coordinator` or pass --bin-dir",
                    path.display()
                );
                std::process::exit(2);
            }
        }
        bins
    }
}

/// A number above 0 (a value parser for counts and rates).
pub fn positive<T: FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        Ok(_) => Err("must be above 0".into()),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_positive_numbers() {
        assert_eq!(positive::<usize>("3"), Ok(3));
        assert!(positive::<usize>("0").expect_err("zero").contains("above 0"));
        assert!(
            positive::<u32>("x")
                .expect_err("text")
                .contains("not a whole number")
        );
        assert!(positive::<usize>("-1").is_err());
    }
}
