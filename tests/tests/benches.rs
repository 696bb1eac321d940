//! The benchmark binaries (`src/bin/bench-*.rs`): each answers `--help`
//! without starting anything, and a real (tiny) run leaves no etcd member,
//! agent or directory behind, whether it ends normally or gets SIGINT.
//!
//! A bench's processes are told apart from every other test's by the
//! `TMPDIR` it is given: the harness puts its clusters there, so the agents'
//! command lines and etcd's environment (`ETCD_DATA_DIR`) name that path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every bench binary, by name.
const BENCHES: [(&str, &str); 7] = [
    ("bench-snapshot", env!("CARGO_BIN_EXE_bench-snapshot")),
    ("bench-rolling", env!("CARGO_BIN_EXE_bench-rolling")),
    ("bench-replace", env!("CARGO_BIN_EXE_bench-replace")),
    ("bench-restore", env!("CARGO_BIN_EXE_bench-restore")),
    ("bench-fleet", env!("CARGO_BIN_EXE_bench-fleet")),
    ("bench-status-tls", env!("CARGO_BIN_EXE_bench-status-tls")),
    ("bench-status-otel", env!("CARGO_BIN_EXE_bench-status-otel")),
];

/// A process that names `marker` in its command line or environment.
#[derive(Debug)]
struct Found {
    pid: u32,
    cmdline: String,
}

impl Found {
    fn program(&self) -> &str {
        self.cmdline.split(' ').next().unwrap_or_default()
    }

    fn is_agent(&self) -> bool {
        self.program().ends_with("etcdops-agent")
    }

    fn is_etcd(&self) -> bool {
        self.program().ends_with("/etcd") || self.program() == "etcd"
    }
}

/// Live processes (zombies excluded) whose command line or environment
/// contains `marker`, this test process excluded.
fn processes_naming(marker: &Path) -> Vec<Found> {
    let needle = marker.as_os_str().as_encoded_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            if matches!(state.as_str(), "Z" | "X") {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            (contains(&cmdline) || contains(&environ)).then(|| Found {
                pid,
                cmdline: String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim()
                    .to_string(),
            })
        })
        .collect()
}

/// What is left in `tmp` (the bench's TMPDIR: its clusters' and scratch
/// directories go there).
fn left_in(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .expect("read TMPDIR")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect()
}

/// Waits for `child` up to `timeout`; kills it (and fails) after that.
fn wait_or_kill(mut child: Child, what: &str, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{what} still running after {timeout:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A directory holding the binaries a bench's `--bin-dir` must have
/// (`etcdops-agent`, `etcdops`): the test build's thin copies of both mains.
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, target) in [
        ("etcdops-agent", env!("CARGO_BIN_EXE_e2e-etcdops-agent")),
        ("etcdops", env!("CARGO_BIN_EXE_e2e-etcdops")),
    ] {
        std::os::unix::fs::symlink(target, dir.path().join(name)).expect("symlink");
    }
    dir
}

/// `bench-rolling` with the smallest real configuration: one scenario, a
/// 1 MB database, a light load, short warm-up (`warmup` s) and tail.
fn spawn_tiny_rolling(bins: &Path, tmp: &Path, warmup: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bench-rolling"))
        .args(["--bin-dir", bins.to_str().expect("utf-8")])
        .args(["--mb", "1", "--runs", "1", "--rate", "20", "--after", "1"])
        .args(["--warmup", warmup, "--scenarios", "defrag-etcdops"])
        // What is tested is the bench's clean-up, not this machine's disk: a
        // short probe under the rest of the suite's load can exceed 10 ms.
        .arg("--etcdops-arg=--ignore-slow-disk")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning bench-rolling")
}

/// Waits until the bench's three agents and three etcd members run: proof
/// that [`processes_naming`] sees them (so "none left" means something).
fn wait_for_cluster(tmp: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let found = processes_naming(tmp);
        let agents = found.iter().filter(|f| f.is_agent()).count();
        let etcds = found.iter().filter(|f| f.is_etcd()).count();
        if agents == 3 && etcds == 3 {
            return;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "bench-rolling exited before its cluster was seen running: {found:?}"
        );
        assert!(
            Instant::now() < deadline,
            "bench-rolling's 3 agents and 3 etcd members not seen within 90 s: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_nothing_left(tmp: &Path, when: &str) {
    let left: Vec<String> = processes_naming(tmp)
        .iter()
        .map(|f| format!("{} {}", f.pid, f.cmdline))
        .collect();
    assert!(left.is_empty(), "{when}: processes left running: {left:#?}");
    let files = left_in(tmp);
    assert!(files.is_empty(), "{when}: left in its TMPDIR: {files:?}");
}

#[test]
fn every_bench_answers_help_without_starting_anything() {
    for (name, path) in BENCHES {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Were a cluster started, etcd would not be found: the bench would fail.
        let child = Command::new(path)
            .arg("--help")
            .env("ETCD_BIN", tmp.path().join("no-etcd-here"))
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning a bench");
        let out = wait_or_kill(child, &format!("{name} --help"), Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} --help: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("Usage: {name}")), "{name}: {stdout}");
        // bench-fleet and bench-status-tls/-otel write no data: no --mb.
        let options: &[&str] = if matches!(name, "bench-fleet" | "bench-status-tls" | "bench-status-otel") {
            &["--bin-dir", "--runs", "Example:"]
        } else {
            &["--bin-dir", "--mb", "--runs", "Example:"]
        };
        for option in options {
            assert!(stdout.contains(option), "{name} --help names {option}: {stdout}");
        }
        assert_nothing_left(tmp.path(), &format!("{name} --help"));
    }
}

#[test]
fn a_finished_bench_leaves_no_agent_etcd_or_directory() {
    let bins = bin_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_tiny_rolling(bins.path(), tmp.path(), "1");
    wait_for_cluster(tmp.path(), &mut child);
    let out = wait_or_kill(child, "bench-rolling --mb 1", Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("## defrag") && stdout.contains("etcdops defrag --rolling"),
        "the report: {stdout}"
    );
    assert!(
        stdout.contains("| ok |"),
        "the operation succeeded: {stdout}\n{stderr}"
    );
    assert_nothing_left(tmp.path(), "after bench-rolling exited");
}

#[test]
fn an_interrupted_bench_stops_its_cluster_and_exits_with_the_signal() {
    use std::io::BufRead;
    let bins = bin_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    // A long warm-up: the signal arrives while the load runs.
    let mut child = spawn_tiny_rolling(bins.path(), tmp.path(), "120");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen.iter().any(|l: &String| l.contains("fragmented in")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("bench-rolling did not reach its load phase ({e}): {seen:#?}"),
        }
    }
    wait_for_cluster(tmp.path(), &mut child);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = wait_or_kill(child, "bench-rolling after SIGINT", Duration::from_secs(60));
    seen.extend(rx.try_iter());
    let stderr = seen.join("\n");
    assert_eq!(out.status.code(), Some(130), "128 + SIGINT: {stderr}");
    assert!(stderr.contains("SIGINT: stopping every agent"), "{stderr}");
    assert_nothing_left(tmp.path(), "after bench-rolling got SIGINT");
}

#[test]
fn a_bench_that_panics_mid_run_still_stops_its_cluster() {
    let bins = bin_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    // No etcdctl on PATH (etcd and the agents are found by absolute path):
    // bench-snapshot starts its cluster, runs etcdops, then panics at etcdctl.
    let child = Command::new(env!("CARGO_BIN_EXE_bench-snapshot"))
        .args(["--bin-dir", bins.path().to_str().expect("utf-8")])
        .args(["--mb", "1", "--runs", "1"])
        .env("TMPDIR", tmp.path())
        .env("PATH", tmp.path().join("no-tools-here"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning bench-snapshot");
    let out = wait_or_kill(child, "bench-snapshot without etcdctl", Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "a panic: {stderr}");
    assert!(
        stderr.contains("filling about 1 MB") && stderr.contains("etcdctl"),
        "the cluster ran, then etcdctl was missing: {stderr}"
    );
    assert_nothing_left(tmp.path(), "after bench-snapshot panicked");
}
