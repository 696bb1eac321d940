//! The audit trail: one JSON line per mutating RPC and per refused call, in
//! a dedicated append-only file (`<state_dir>/audit.jsonl` unless `[audit]
//! path` says otherwise), rotated by size (`audit.jsonl.1` is the newest
//! rotated file, `.N` the oldest; `keep` of them are kept).
//!
//! Each record is also logged under the tracing target `audit` (info): the
//! agent logs to stderr, which systemd's journal keeps when the agent runs
//! as a unit (`journalctl -u etcdops-agent | grep audit`), so the journal
//! holds a copy the agent's own rotation cannot remove.
//!
//! The caller's identity in a record comes from the verified TLS peer
//! certificate (`rpc::auth`), never from the request. Arguments never carry
//! secrets, and large payloads (a restore's snapshot bytes) are summarised.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use etcdops_certs::CertDetails;
use serde::{Deserialize, Serialize};

/// The file name in the state dir when `[audit] path` is not set.
pub const DEFAULT_FILE: &str = "audit.jsonl";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call ended (or was refused), milliseconds since the Unix epoch.
    pub time_unix_ms: i64,
    /// The same time, RFC 3339 UTC, for people reading the file.
    pub time: String,
    /// This agent's name (its certificate's).
    pub agent: String,
    /// The RPC, e.g. `Defragment`.
    pub rpc: String,
    /// The caller's verified certificate; `None` when it presented none
    /// that could be read (refused calls only).
    pub caller: Option<CertDetails>,
    /// From the request's fence (empty when it carries none).
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub operation_id: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub fence_epoch: u64,
    /// The request's arguments, secrets left out, payloads summarised;
    /// `null` for a call refused before its request was read.
    pub arguments: serde_json::Value,
    /// `ok`, `failed` (the RPC ran and returned an error) or `refused`
    /// (authentication or role check).
    pub outcome: String,
    /// The gRPC code (`OK`, `PermissionDenied`, ...).
    pub code: String,
    /// The error's message, when not OK.
    #[serde(default)]
    pub error: Option<String>,
    /// How long the call ran.
    #[serde(default)]
    pub duration_ms: u64,
}

/// Where the audit file is and how it rotates (`[audit]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// How many rotated files to keep beside the current one.
    pub keep: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit file {path}: {source} (see [audit] in the agent config)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The open audit file.
#[derive(Debug)]
pub struct AuditLog {
    settings: AuditSettings,
    /// The open file and its size; one writer at a time.
    file: Mutex<(File, u64)>,
}

fn open_append(path: &Path) -> Result<(File, u64), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    Ok((file, size))
}

/// The `n`th rotated file: `audit.jsonl.n`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl AuditLog {
    /// Opens (creating, mode 0600) the audit file for appending.
    pub fn open(settings: AuditSettings) -> Result<AuditLog, AuditError> {
        if let Some(parent) = settings.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| AuditError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = open_append(&settings.path)?;
        Ok(AuditLog {
            settings,
            file: Mutex::new(file),
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.settings.path
    }

    /// Appends one record (and logs it under the `audit` target). A failure
    /// to write is logged as an error: the call it records has already run.
    pub fn record(&self, record: &AuditRecord) {
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, rpc = %record.rpc, "cannot encode an audit record");
                return;
            }
        };
        tracing::info!(target: "audit", "{line}");
        if let Err(e) = self.append(&line) {
            tracing::error!(error = %e, rpc = %record.rpc, "cannot write the audit record");
        }
    }

    fn append(&self, line: &str) -> Result<(), AuditError> {
        // A poisoned lock only means a writer panicked: the file is still usable.
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = line.len() as u64 + 1;
        if guard.1 > 0 && guard.1 + bytes > self.settings.max_bytes {
            self.rotate()?;
            *guard = open_append(&self.settings.path)?;
        }
        let io = |source| AuditError::Io {
            path: self.settings.path.clone(),
            source,
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        guard.0.write_all(&buf).map_err(io)?;
        guard.1 += bytes;
        Ok(())
    }

    /// `.keep` is removed, `.n` becomes `.n+1`, the current file `.1`.
    fn rotate(&self) -> Result<(), AuditError> {
        let path = &self.settings.path;
        let io = |p: &Path, source| AuditError::Io {
            path: p.to_path_buf(),
            source,
        };
        let keep = self.settings.keep;
        if keep == 0 {
            return std::fs::remove_file(path).map_err(|e| io(path, e));
        }
        let oldest = rotated(path, keep);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&oldest, e)),
        }
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(path, n + 1)).map_err(|e| io(&from, e))?;
            }
        }
        std::fs::rename(path, rotated(path, 1)).map_err(|e| io(path, e))
    }

    /// Records at or after `since_unix_ms`, oldest first, at most `limit`
    /// (the newest ones; 0: no limit). Lines that do not parse are skipped.
    pub fn read(&self, since_unix_ms: i64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        // Hold the lock so no rotation moves files while we read them.
        let _guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = &self.settings.path;
        let mut files: Vec<PathBuf> = (1..=self.settings.keep).rev().map(|n| rotated(path, n)).collect();
        files.push(path.clone());
        let mut out = Vec::new();
        for file in files {
            let f = match File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(AuditError::Io { path: file, source }),
            };
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|source| AuditError::Io {
                    path: file.clone(),
                    source,
                })?;
                if let Ok(record) = serde_json::from_str::<AuditRecord>(&line)
                    && record.time_unix_ms >= since_unix_ms
                {
                    out.push(record);
                }
            }
        }
        if limit > 0 && out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }
}

/// Now, as the record's two time fields.
pub fn now() -> (i64, String) {
    let now = time::OffsetDateTime::now_utc();
    let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let text = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    (ms, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of the same length (fixed time, two-digit ids).
    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time_unix_ms: 1_700_000_000_000,
            time: "2023-11-14T22:13:20Z".into(),
            agent: "etcd1".into(),
            rpc: "Defragment".into(),
            caller: None,
            cluster: "c".into(),
            operation_id: format!("op-{i:02}"),
            step: String::new(),
            fence_epoch: 1,
            arguments: serde_json::json!({"timeout_ms": 5}),
            outcome: "ok".into(),
            code: "OK".into(),
            error: None,
            duration_ms: 1,
        }
    }

    #[test]
    fn rotation_keeps_n_files_and_reads_across_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("audit.jsonl");
        let line = serde_json::to_string(&record(0)).expect("json").len() as u64 + 1;
        let log = AuditLog::open(AuditSettings {
            path: path.clone(),
            // Three records per file.
            max_bytes: line * 3 + 2,
            keep: 2,
        })
        .expect("open");
        for i in 0..20 {
            log.record(&record(i));
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(path.parent().expect("parent"))
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        // 20 records, 3 per file: the current file has 2 (18, 19), .1 and .2 three each.
        let all = log.read(0, 0).expect("read");
        let ids: Vec<&str> = all.iter().map(|r| r.operation_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "op-12", "op-13", "op-14", "op-15", "op-16", "op-17", "op-18", "op-19"
            ]
        );
        assert!(now().0 > 1_700_000_000_000);
        let last = log.read(0, 3).expect("read");
        assert_eq!(last.len(), 3);
        assert_eq!(last[2].operation_id, "op-19");
        assert!(log.read(i64::MAX, 0).expect("read").is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn reopening_appends_and_garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let settings = AuditSettings {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 3,
        };
        AuditLog::open(settings.clone()).expect("open").record(&record(1));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"not json\n"))
            .expect("garbage");
        let log = AuditLog::open(settings).expect("reopen");
        log.record(&record(2));
        let ids: Vec<String> = log
            .read(0, 0)
            .expect("read")
            .into_iter()
            .map(|r| r.operation_id)
            .collect();
        assert_eq!(ids, ["op-01", "op-02"]);
    }
}
