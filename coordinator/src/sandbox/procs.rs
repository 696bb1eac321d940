//! Agent processes of a local cluster: started in their own process group
//! (so the agent and the etcd it supervises can be stopped together), with
//! a pid file beside the agent's config, and stopped gracefully then surely.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::layout::MemberLayout;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start agent {member} ({binary}): {source}")]
    Spawn {
        member: String,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn pid_file(m: &MemberLayout) -> PathBuf {
    m.dir.join("agent.pid")
}

/// Starts the agent of member `m` in a new process group, its output
/// appended to `m.agent_log`, and records its pid.
pub fn spawn_agent(agent_bin: &Path, m: &MemberLayout) -> Result<Child, ProcError> {
    use std::os::unix::process::CommandExt;
    let log = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ProcError::Io {
                path: path.to_path_buf(),
                source,
            })
    };
    let child = Command::new(agent_bin)
        .arg("--config")
        .arg(&m.agent_config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(log(&m.agent_log)?)
        .stderr(log(&m.agent_log)?)
        .process_group(0)
        .spawn()
        .map_err(|source| ProcError::Spawn {
            member: m.name.clone(),
            binary: agent_bin.to_path_buf(),
            source,
        })?;
    let path = pid_file(m);
    std::fs::write(&path, format!("{}\n", child.id())).map_err(|source| ProcError::Io { path, source })?;
    Ok(child)
}

/// The pid of member `m`'s agent if it is still running (checked against
/// the process's command line, so a recycled pid is never mistaken for it).
pub fn running_agent(m: &MemberLayout) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(m)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = m.agent_config.as_os_str().as_encoded_bytes();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == config);
    (ours && alive(pid)).then_some(pid)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether any process of the group led by `pgid` is still alive.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().collect())
                        .unwrap_or_default();
                    // fields[0] = state, fields[2] = pgrp
                    fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2] == pgid.to_string()
                })
        })
}

fn raw(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The agent stopped etcd and exited on SIGTERM.
    Gracefully,
    /// Something was still running after the grace period and was killed.
    Killed,
}

/// Stops the process group led by agent `pid`: SIGTERM to the agent, which
/// makes it stop etcd gracefully (or to the whole group when the agent is
/// already gone), then SIGKILL to the whole group after `grace`.
/// `reap` is called while waiting so a parent can collect its child.
pub fn stop_group(pid: u32, grace: Duration, reap: impl FnMut()) -> Stopped {
    terminate(pid);
    wait_group(pid, grace, reap)
}

/// Sends SIGTERM to agent `pid`, or to its whole group when it is gone.
pub fn terminate(pid: u32) {
    if alive(pid) {
        let _ = kill(raw(pid), Signal::SIGTERM);
    } else {
        let _ = killpg(raw(pid), Signal::SIGTERM);
    }
}

/// Waits up to `grace` for the group led by `pid` to exit, then SIGKILLs it.
pub fn wait_group(pid: u32, grace: Duration, mut reap: impl FnMut()) -> Stopped {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap();
        if !group_alive(pid) {
            return Stopped::Gracefully;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && group_alive(pid) {
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
    reap();
    Stopped::Killed
}

/// Removes member `m`'s pid file.
pub fn forget(m: &MemberLayout) {
    let _ = std::fs::remove_file(pid_file(m));
}

/// Processes of the group `pgid` whose environment mentions `needle`
/// (etcd started by the agent carries ETCD_DATA_DIR=<member dir>/data):
/// finds a member's etcd after its agent died without stopping it.
pub fn orphans_in_group(pgid: u32, needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let in_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().collect())
                        .unwrap_or_default();
                    fields.len() > 2 && fields[2] == pgid.to_string()
                });
            in_group
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| String::from_utf8_lossy(kv).contains(needle))
                })
        })
        .collect()
}

/// The pid recorded for member `m`'s agent, alive or not.
pub fn recorded_pid(m: &MemberLayout) -> Option<u32> {
    std::fs::read_to_string(pid_file(m)).ok()?.trim().parse().ok()
}
