//! `serve-state.json` in the state dir: the slot each job last ran for, so a
//! restarted serve runs a missed job once (see [`super::schedule::next_due`]).
//! Written atomically (temp file, fsync, rename); an unreadable file stops
//! start-up rather than silently forgetting (which would skip missed runs).
//! With `[ha]` the leader also keeps it in the home etcd beside the journal
//! ([`LastRuns::share`]): a new leader takes in what the last one ran
//! ([`LastRuns::merge`], the later slot per job), so a job its predecessor
//! just ran is not run again as "missed".

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The file's name in the state dir.
pub const FILE: &str = "serve-state.json";

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot read {path}: {source}; fix or remove it (removing it only forgets which runs were missed)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a serve state file: {message}; fix or remove it (removing it only forgets which runs were missed)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}; serve needs its state_dir writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Schema version of this file.
    version: u32,
    /// `cluster/job` → the slot (Unix seconds) of its last run.
    last_slot: BTreeMap<String, i64>,
}

/// The last run of every job, kept in memory and on disk.
#[derive(Debug)]
pub struct LastRuns {
    path: PathBuf,
    state: Mutex<StateFile>,
    /// The leader's journal in the home etcd, where every change is copied.
    shared: Mutex<Option<std::sync::Arc<crate::journal::Journal>>>,
}

impl LastRuns {
    /// Opens `<dir>/serve-state.json` (creating the dir, mode 0700); a
    /// missing file is an empty state.
    pub fn open(dir: &Path) -> Result<LastRuns, StateError> {
        let path = dir.join(FILE);
        std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StateError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile {
                version: 1,
                ..StateFile::default()
            },
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(LastRuns {
            path,
            state: Mutex::new(state),
            shared: Mutex::new(None),
        })
    }

    /// Takes in a state written elsewhere (the home etcd's copy, JSON): the
    /// later slot of each job wins; written to the file when anything changed.
    pub fn merge(&self, text: &[u8]) -> Result<usize, StateError> {
        let other: StateFile = serde_json::from_slice(text).map_err(|e| StateError::Parse {
            path: PathBuf::from("the home etcd's serve state"),
            message: e.to_string(),
        })?;
        let (changed, snapshot) = {
            let Ok(mut state) = self.state.lock() else {
                return Ok(0);
            };
            let mut changed = 0;
            for (key, slot) in other.last_slot {
                let mine = state.last_slot.entry(key).or_insert(i64::MIN);
                if slot > *mine {
                    *mine = slot;
                    changed += 1;
                }
            }
            (changed, state.clone())
        };
        if changed > 0 {
            self.write(&snapshot)?;
        }
        Ok(changed)
    }

    /// From now on every change is also written to `journal`'s home etcd
    /// (the leader's, guarded by its term), the whole state at once now.
    pub fn share(&self, journal: std::sync::Arc<crate::journal::Journal>) {
        if let Ok(mut shared) = self.shared.lock() {
            *shared = Some(journal);
        }
        let snapshot = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        self.copy_to_home(&snapshot);
    }

    fn copy_to_home(&self, state: &StateFile) {
        let shared = self.shared.lock().ok().and_then(|s| s.clone());
        let Some(store) = shared.as_ref().and_then(|j| j.home()) else {
            return;
        };
        let text = serde_json::to_vec(state).unwrap_or_default();
        if let Err(e) = store.set_serve_state(&text) {
            tracing::warn!("cannot copy the serve state to the home etcd: {e}");
        }
    }

    /// The slot `key` (`cluster/job`) last ran for.
    pub fn get(&self, key: &str) -> Option<i64> {
        self.state.lock().ok().and_then(|s| s.last_slot.get(key).copied())
    }

    /// Records that `key` ran for `slot` and writes the file.
    pub fn set(&self, key: &str, slot: i64) -> Result<(), StateError> {
        let snapshot = {
            let Ok(mut state) = self.state.lock() else {
                return Ok(());
            };
            state.last_slot.insert(key.to_string(), slot);
            state.clone()
        };
        self.copy_to_home(&snapshot);
        self.write(&snapshot)
    }

    fn write(&self, state: &StateFile) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        let text = serde_json::to_vec_pretty(state).unwrap_or_default();
        tmp.write_all(&text).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_runs_survive_a_restart_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = LastRuns::open(dir.path()).expect("open");
        assert_eq!(runs.get("a/backup"), None);
        runs.set("a/backup", 1_800_000_000).expect("set");
        let again = LastRuns::open(dir.path()).expect("reopen");
        assert_eq!(again.get("a/backup"), Some(1_800_000_000));
        // A state written by another replica: the later slot per job wins.
        let other = r#"{"version":1,"last_slot":{"a/backup":1700000000,"a/defrag":1800000500}}"#;
        assert_eq!(again.merge(other.as_bytes()).expect("merge"), 1);
        assert_eq!(again.get("a/backup"), Some(1_800_000_000), "mine is later");
        assert_eq!(again.get("a/defrag"), Some(1_800_000_500), "theirs");
        assert_eq!(
            LastRuns::open(dir.path()).expect("reopen").get("a/defrag"),
            Some(1_800_000_500),
            "written"
        );
        assert!(again.merge(b"[]").is_err(), "not a state");
        std::fs::write(dir.path().join(FILE), "{").expect("write");
        let e = LastRuns::open(dir.path()).expect_err("corrupt").to_string();
        assert!(e.contains("not a serve state file"), "{e}");
    }
}
