//! A drill's working directory and what is left of dead drills.
//!
//! Every drill works in `<drills>/<operation>/` (mode 0700: it holds the
//! cluster's data), with an owner record `drill.json` naming the process
//! running it (pid and kernel start time, so a reused pid is not taken for
//! it) and the throwaway etcd's pid. [`WorkDir`] removes the directory and
//! kills that etcd when dropped (every way out of a drill, a panic
//! included). A drill killed outright (SIGKILL) cannot: its etcd dies with
//! it (`setpriv --pdeathsig`), and the next drill's [`clean_leftovers`]
//! removes the directory of any drill whose process is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The owner record of a drill's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The operation in the journal.
    pub operation: String,
    /// The coordinator process running the drill, and its start time in
    /// clock ticks after boot (`/proc/PID/stat` field 22).
    pub pid: u32,
    pub start_time: u64,
    /// The throwaway etcd, once started.
    pub etcd_pid: Option<u32>,
}

const OWNER: &str = "drill.json";

/// Errors of the working directory.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    #[error(
        "cannot create the drill's working directory {}: {source}; pass --work-dir DIR (a directory only you can read: it holds the cluster's data)",
        path.display()
    )]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A drill's directory: removed, with its etcd killed, on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    owner: Owner,
    etcd: Option<u32>,
}

/// A process's start time (`/proc/PID/stat` field 22), or `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn write_owner(dir: &Path, owner: &Owner) -> Result<(), WorkDirError> {
    let path = dir.join(OWNER);
    let tmp = dir.join(format!("{OWNER}.tmp"));
    let bytes = serde_json::to_vec_pretty(owner).unwrap_or_default();
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| WorkDirError::Write { path, source })
}

impl WorkDir {
    /// Creates `<drills>/<operation>/` (the parents too, all 0700) and its owner record.
    pub fn create(drills: &Path, operation: &str) -> Result<WorkDir, WorkDirError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = drills.join(operation);
        let create = |p: &Path, recursive: bool| {
            std::fs::DirBuilder::new()
                .recursive(recursive)
                .mode(0o700)
                .create(p)
                .map_err(|source| WorkDirError::Create {
                    path: p.to_path_buf(),
                    source,
                })
        };
        create(drills, true)?;
        create(&path, false)?;
        let pid = std::process::id();
        let owner = Owner {
            operation: operation.to_string(),
            pid,
            start_time: start_time(pid).unwrap_or_default(),
            etcd_pid: None,
        };
        let dir = WorkDir {
            path,
            owner,
            etcd: None,
        };
        write_owner(&dir.path, &dir.owner)?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the throwaway etcd's pid (killed on drop, and by the next
    /// drill's [`clean_leftovers`] should this process die first).
    pub fn set_etcd(&mut self, pid: Option<u32>) -> Result<(), WorkDirError> {
        self.etcd = pid;
        self.owner.etcd_pid = pid;
        write_owner(&self.path, &self.owner)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(pid) = self.etcd.take() {
            kill_if_ours(pid, &self.path);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the drill's directory");
        }
    }
}

/// SIGKILLs `pid` when its command line names `dir` (so never a process
/// that merely reused the pid), and waits up to 5 s for it to be gone.
pub fn kill_if_ours(pid: u32, dir: &Path) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    if !cmdline.windows(needle.len().max(1)).any(|w| w == needle) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
    // Our own child: reap it (an exited child of another process is gone once its parent reaps it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(raw),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A leftover of a dead drill, removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub dir: PathBuf,
    /// Its operation, when its owner record could be read.
    pub operation: Option<String>,
}

/// Whether the owner is alive: its pid runs with the same start time.
fn alive(owner: &Owner) -> bool {
    start_time(owner.pid).is_some_and(|t| t == owner.start_time)
}

/// Removes the directories (and kills the etcd) of drills whose process is
/// gone. A directory without a readable owner record counts as a leftover
/// once it is older than a minute (a drill writes its record at once).
pub fn clean_leftovers(drills: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(drills) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let owner: Option<Owner> = std::fs::read(dir.join(OWNER))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match &owner {
            Some(o) if alive(o) => continue,
            None => {
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age < std::time::Duration::from_secs(60));
                if young {
                    continue;
                }
            }
            Some(_) => {}
        }
        if let Some(pid) = owner.as_ref().and_then(|o| o.etcd_pid) {
            kill_if_ours(pid, &dir);
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the leftovers of a dead drill");
                removed.push(Leftover {
                    dir,
                    operation: owner.map(|o| o.operation),
                });
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a dead drill's directory")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_is_private_removed_on_drop_and_leftovers_of_the_dead_are_cleaned() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let drills = root.path().join("drills");
        let path = {
            let dir = WorkDir::create(&drills, "drill-1").expect("create");
            let mode = std::fs::metadata(dir.path()).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            assert!(dir.path().join(OWNER).exists());
            // A live owner (this process): not a leftover.
            assert!(clean_leftovers(&drills).is_empty());
            dir.path().to_path_buf()
        };
        assert!(!path.exists(), "removed on drop");

        // A dead owner: pid of an exited child.
        let dead = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().expect("wait");
        let left = drills.join("drill-2");
        std::fs::create_dir_all(left.join("data")).expect("mkdir");
        write_owner(
            &left,
            &Owner {
                operation: "drill-2".into(),
                pid: dead_pid,
                start_time: 1,
                etcd_pid: Some(dead_pid),
            },
        )
        .expect("owner");
        // A fresh dir without an owner record: a drill starting, left alone.
        std::fs::create_dir_all(drills.join("drill-3")).expect("mkdir");
        let removed = clean_leftovers(&drills);
        assert_eq!(
            removed,
            [Leftover {
                dir: left.clone(),
                operation: Some("drill-2".into())
            }]
        );
        assert!(!left.exists() && drills.join("drill-3").exists());
        assert!(start_time(std::process::id()).is_some());
    }
}
