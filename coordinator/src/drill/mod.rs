//! Restore drills: proof that a backup restores. `etcdops backup drill`
//! (`cli/drill.rs`) and `serve`'s `restore-drill` job call [`run`].
//!
//! A drill takes the newest verified (or the named) backup of a cluster
//! from its target, checks the file against its sidecar (size, sha256,
//! revision) and reads its store figures from the file alone (`kv.rs`:
//! revision, live keys, HashKV), restores it into a throwaway single-member
//! etcd on loopback (`etcd.rs`), waits for it to answer, and compares the
//! member's revision, key count and HashKV with the file's. It is a read of
//! the backup: no fence on the cluster, but a journaled operation (kind
//! `drill`, epoch 0) whose record carries the figures ([`DrillOutcome`]).
//! Everything it creates lives in a 0700 directory under the drills dir and
//! is removed on every way out (`workdir.rs`; the leftovers of a drill
//! killed outright are removed by the next one, and its journal record
//! ends `failed`).

pub mod etcd;
pub mod kv;
pub mod report;
pub mod workdir;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup::{BackupEntry, BackupError, Target, TargetError};
use crate::journal::{self, Journal, JournalError, OpState, OperationRecord, StepRecord, StepState};
use crate::plan::operation::{DrillOutcome, Operation, RunOptions};
use crate::plan::planner::OpKind;
use crate::snapshot::save::SnapshotMeta;
use crate::snapshot::status::{self, SnapshotFileError, SnapshotStatus};

pub use etcd::Restored;
pub use kv::KvFigures;

/// How long the throwaway etcd gets to answer after it starts.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// What a drill needs. The scheduler builds the same from its config.
#[derive(Debug)]
pub struct DrillRequest<'a> {
    /// The cluster's name in the fleet.
    pub cluster: String,
    /// The fleet file (kept in the journal record).
    pub fleet: PathBuf,
    /// The cluster's backup target.
    pub target: &'a Target,
    /// A backup's name; `None`: the newest verified one.
    pub backup: Option<String>,
    pub journal: &'a Journal,
    /// Where drills work: `<drills>/<operation>/` (see `workdir.rs`).
    pub drills_dir: PathBuf,
    /// The whole drill's time limit.
    pub deadline: Duration,
}

/// Why a drill could not be run to a verdict. A drill that ran and found a
/// mismatch is not an error: its [`DrillReport`] says `passed: false`.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("no backup {name} of cluster {cluster} in {url}: `etcdops backup list` shows what is there")]
    NoSuchBackup {
        cluster: String,
        name: String,
        url: String,
    },
    #[error(
        "backup {name} in {url} has no readable sidecar ({problem}): there is nothing to check it against; drill a complete backup"
    )]
    NoSidecar {
        name: String,
        url: String,
        problem: String,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    WorkDir(#[from] workdir::WorkDirError),
    /// A step failed; the journal record says which, ended `failed`.
    #[error("drill {operation} of backup {backup} failed at step {step}: {reason}")]
    Step {
        operation: String,
        backup: String,
        step: &'static str,
        reason: String,
    },
}

/// One comparison of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is compared, e.g. `revision: snapshot file vs restored etcd`.
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// The sidecar's figures the drill compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidecarFigures {
    pub revision: i64,
    pub size: u64,
    pub sha256: String,
}

/// The snapshot file's own figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileFigures {
    /// `snapshot status`'s figures: bbolt hash, revision, entries, size.
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub file_size: u64,
    /// etcd's sha256 trailer check: ok, missing or mismatch.
    pub integrity: String,
    pub sha256: Option<String>,
    /// The store figures (live keys, HashKV).
    pub kv: KvFigures,
}

/// What a drill found (`-w json`; OUTPUT.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillReport {
    pub cluster: String,
    /// The journal's operation ID.
    pub operation: String,
    pub backup: String,
    pub target: String,
    pub passed: bool,
    pub sidecar: SidecarFigures,
    pub snapshot: Option<FileFigures>,
    pub restored: Option<Restored>,
    pub checks: Vec<Check>,
    /// The tool that restored the snapshot.
    pub restored_with: Option<String>,
    pub took_ms: u64,
    /// Directories of dead drills removed before this one started.
    pub cleaned_leftovers: Vec<String>,
}

impl DrillReport {
    /// The comparisons that failed, naming both figures.
    pub fn mismatches(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.actual))
            .collect()
    }
}

/// The step IDs of a drill, in order.
const STEPS: [(&str, &str); 6] = [
    ("fetch", "fetch the backup and its sidecar"),
    (
        "check-file",
        "check the file against its sidecar; read its store figures",
    ),
    ("restore", "restore it into a throwaway data dir"),
    ("start", "start a throwaway single-member etcd on loopback"),
    ("compare", "compare revision, key count and HashKV"),
    (
        "cleanup",
        "stop the throwaway etcd, remove everything the drill created",
    ),
];

/// Compares the sidecar, the file and the restored member (pure).
pub fn compare(sidecar: &SidecarFigures, file: &FileFigures, restored: Option<&Restored>) -> Vec<Check> {
    let check = |name: &str, expected: String, actual: String, ok: bool| Check {
        name: name.to_string(),
        expected,
        actual,
        ok,
    };
    let mut checks = vec![
        check(
            "size: sidecar vs snapshot file",
            sidecar.size.to_string(),
            file.file_size.to_string(),
            sidecar.size == file.file_size,
        ),
        check(
            "sha256: sidecar vs snapshot file's trailer",
            sidecar.sha256.clone(),
            file.sha256.clone().unwrap_or_else(|| "none (no trailer)".into()),
            file.integrity == "ok" && file.sha256.as_deref() == Some(sidecar.sha256.as_str()),
        ),
        // The sidecar's revision is the member's when the save started: the
        // file may hold writes that came in meanwhile, never fewer.
        check(
            "revision: sidecar vs snapshot file",
            format!("at least {}", sidecar.revision),
            file.kv.revision.to_string(),
            // The store's revision (at least 1, as etcd counts: an empty
            // store is at 1), not `snapshot status`'s (0 without keys).
            file.kv.revision >= sidecar.revision,
        ),
    ];
    if let Some(r) = restored {
        checks.push(check(
            "revision: snapshot file vs restored etcd",
            file.kv.revision.to_string(),
            r.revision.to_string(),
            file.kv.revision == r.revision,
        ));
        checks.push(check(
            "keys: snapshot file vs restored etcd",
            file.kv.keys.to_string(),
            r.keys.to_string(),
            file.kv.keys == r.keys,
        ));
        checks.push(check(
            "hash_kv: snapshot file vs restored etcd",
            file.kv.hash_kv.to_string(),
            r.hash_kv.to_string(),
            file.kv.hash_kv == r.hash_kv,
        ));
    }
    checks
}

/// Picks the backup: the named one (any state, with a sidecar that parses)
/// or the newest verified one (pure, over a catalog).
pub fn choose(
    entries: &[BackupEntry],
    cluster: &str,
    url: &str,
    name: Option<&str>,
) -> Result<(BackupEntry, SnapshotMeta), DrillError> {
    let entry = match name {
        Some(name) => entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| DrillError::NoSuchBackup {
                cluster: cluster.to_string(),
                name: name.to_string(),
                url: url.to_string(),
            })?,
        None => entries
            .iter()
            .find(|e| e.is_complete())
            .ok_or_else(|| BackupError::NoVerified {
                cluster: cluster.to_string(),
                url: url.to_string(),
            })?,
    };
    let meta = entry.meta.clone().ok_or_else(|| DrillError::NoSidecar {
        name: entry.name.clone(),
        url: url.to_string(),
        problem: entry
            .problem
            .clone()
            .unwrap_or_else(|| "the backup is incomplete: no sidecar".into()),
    })?;
    Ok((entry.clone(), meta))
}

/// Ends the journal records of drills whose process died (their
/// directories were just removed) as `failed`.
fn close_dead(journal: &Journal, leftovers: &[workdir::Leftover], by: &str) {
    for op in leftovers.iter().filter_map(|l| l.operation.as_deref()) {
        if let Ok(Some(record)) = journal.get(op)
            && !record.state.is_final()
        {
            let _ = journal.finish(
                op,
                OpState::Failed,
                Some(format!(
                    "the drill's process died before it finished; its throwaway etcd and directory were removed by drill {by}"
                )),
            );
        }
    }
}

/// Runs a drill to its verdict. `cancel` (Ctrl-C, a scheduler's shutdown)
/// ends it early, as a failure, with everything removed.
pub async fn run(
    request: DrillRequest<'_>,
    cancel: impl Future<Output = ()>,
) -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let url = request.target.url().to_string();
    let entries = crate::backup::list(request.target, &request.cluster).await?;
    let (entry, meta) = choose(&entries, &request.cluster, &url, request.backup.as_deref())?;
    let now = time::OffsetDateTime::now_utc();
    let id = journal::new_operation_id(OpKind::Drill.as_str(), now);
    let leftovers = workdir::clean_leftovers(&request.drills_dir);
    close_dead(request.journal, &leftovers, &id);
    let record = OperationRecord {
        // A drill reads a backup, never an agent: no certificate is used.
        operator: None,
        id: id.clone(),
        kind: OpKind::Drill,
        cluster: request.cluster.clone(),
        fleet: request.fleet.clone(),
        operation: Operation::Drill {
            backup: entry.name.clone(),
            target: url.clone(),
            outcome: None,
        },
        options: RunOptions::default(),
        holder: journal::holder(),
        epoch: 0,
        state: OpState::Running,
        created_at_unix: now.unix_timestamp(),
        updated_at_unix: now.unix_timestamp(),
        error: None,
        steps: STEPS
            .iter()
            .map(|(id, what)| StepRecord::pending(*id, *what))
            .collect(),
    };
    request.journal.create(&record)?;
    let mut report = DrillReport {
        cluster: request.cluster.clone(),
        operation: id.clone(),
        backup: entry.name.clone(),
        target: url,
        passed: false,
        sidecar: SidecarFigures {
            revision: meta.revision,
            size: meta.size,
            sha256: meta.sha256.clone(),
        },
        snapshot: None,
        restored: None,
        checks: Vec::new(),
        restored_with: None,
        took_ms: 0,
        cleaned_leftovers: leftovers.iter().map(|l| l.dir.display().to_string()).collect(),
    };
    let mut dir = match workdir::WorkDir::create(&request.drills_dir, &id) {
        Ok(d) => d,
        Err(e) => {
            let _ = request.journal.finish(&id, OpState::Failed, Some(e.to_string()));
            return Err(e.into());
        }
    };
    let mut progress = Progress {
        journal: request.journal,
        id: &id,
        current: "fetch",
    };
    let deadline = request.deadline;
    let body = steps(&request, &entry, &mut dir, &mut report, &mut progress);
    let result = tokio::select! {
        r = tokio::time::timeout(deadline, body) => match r {
            Ok(r) => r,
            Err(_) => Err(format!("the drill did not finish within {} s", deadline.as_secs())),
        },
        () = cancel => Err("interrupted".to_string()),
    };
    let failed_step = progress.current;
    // Everything the drill created goes, on every way out.
    let cleanup_detail = format!("removed {}", dir.path().display());
    drop(dir);
    report.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let journal = request.journal;
    match result {
        Ok(()) => {
            let _ = journal.step_started(&id, "cleanup");
            journal.step_finished(&id, "cleanup", StepState::Done, Some(cleanup_detail))?;
            report.passed = report.checks.iter().all(|c| c.ok) && report.restored.is_some();
            let mismatches = report.mismatches();
            // The restored member's figures; the file's when it was not restored (a mismatch first).
            let figures = report
                .restored
                .map(|r| (r.revision, r.keys, r.hash_kv))
                .or_else(|| {
                    report
                        .snapshot
                        .as_ref()
                        .map(|f| (f.kv.revision, f.kv.keys, f.kv.hash_kv))
                });
            let outcome = figures.map(|(revision, keys, hash_kv)| DrillOutcome {
                passed: report.passed,
                revision,
                keys,
                hash_kv,
                mismatches: mismatches.clone(),
            });
            journal.update(&id, |r| {
                if let Operation::Drill { outcome: o, .. } = &mut r.operation {
                    *o = outcome;
                }
            })?;
            if report.passed {
                journal.finish(&id, OpState::Succeeded, None)?;
            } else {
                journal.finish(
                    &id,
                    OpState::Failed,
                    Some(format!(
                        "the restored backup does not match: {}",
                        mismatches.join("; ")
                    )),
                )?;
            }
            Ok(report)
        }
        Err(reason) => {
            let _ = journal.step_finished(&id, failed_step, StepState::Failed, Some(reason.clone()));
            let _ = journal.step_started(&id, "cleanup");
            let _ = journal.step_finished(&id, "cleanup", StepState::Done, Some(cleanup_detail));
            let _ = journal.finish(
                &id,
                OpState::Failed,
                Some(format!("step {failed_step}: {reason}")),
            );
            Err(DrillError::Step {
                operation: id,
                backup: entry.name,
                step: failed_step,
                reason,
            })
        }
    }
}

/// Journals the drill's steps as they go.
struct Progress<'a> {
    journal: &'a Journal,
    id: &'a str,
    current: &'static str,
}

impl Progress<'_> {
    fn start(&mut self, step: &'static str) -> Result<(), String> {
        self.current = step;
        self.journal
            .step_started(self.id, step)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn done(&self, detail: String) -> Result<(), String> {
        self.journal
            .step_finished(self.id, self.current, StepState::Done, Some(detail))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn failed(&self, detail: String) -> Result<(), String> {
        self.journal
            .step_finished(self.id, self.current, StepState::Failed, Some(detail))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn file_figures(path: &Path) -> Result<(SnapshotStatus, KvFigures), SnapshotFileError> {
    Ok((status::read_status(path)?, kv::read(path)?))
}

/// The drill's steps up to the comparison; errors are the failed step's reason.
async fn steps(
    request: &DrillRequest<'_>,
    entry: &BackupEntry,
    dir: &mut workdir::WorkDir,
    report: &mut DrillReport,
    progress: &mut Progress<'_>,
) -> Result<(), String> {
    progress.start("fetch")?;
    let file = request
        .target
        .fetch(&entry.name, &dir.path().join("download"))
        .await
        .map_err(|e| e.to_string())?;
    progress.done(format!("{} ({} bytes)", file.display(), entry.size))?;

    progress.start("check-file")?;
    let path = file.clone();
    let (st, kv) = tokio::task::spawn_blocking(move || file_figures(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let figures = FileFigures {
        hash: st.hash,
        revision: st.revision,
        total_key: st.total_key,
        file_size: st.file_size,
        integrity: st.integrity.as_str().to_string(),
        sha256: st.integrity.sha256().map(str::to_string),
        kv,
    };
    report.checks = compare(&report.sidecar, &figures, None);
    report.snapshot = Some(figures.clone());
    let detail = format!(
        "revision {}, {} keys, hash_kv {}, {} bytes, sha256 {}",
        kv.revision,
        kv.keys,
        kv.hash_kv,
        figures.file_size,
        figures.sha256.as_deref().unwrap_or("none")
    );
    if report.checks.iter().any(|c| !c.ok) {
        // Not restored: the file is not the one backed up. The verdict is a mismatch.
        progress.failed(format!("{detail}; {}", report.mismatches().join("; ")))?;
        return Ok(());
    }
    progress.done(detail)?;

    progress.start("restore")?;
    let (client_port, peer_port) = etcd::ports().map_err(|e| e.to_string())?;
    let data_dir = dir.path().join("data");
    let tool = etcd::restore(&file, &data_dir, peer_port, &format!("etcdops-{}", progress.id))
        .await
        .map_err(|e| e.to_string())?;
    progress.done(format!("restored with {tool} into {}", data_dir.display()))?;
    report.restored_with = Some(tool);

    progress.start("start")?;
    let mut member = etcd::Throwaway::start(&data_dir, client_port, peer_port, &dir.path().join("etcd.log"))
        .map_err(|e| e.to_string())?;
    dir.set_etcd(member.pid()).map_err(|e| e.to_string())?;
    let result = async {
        member
            .wait_healthy(HEALTHY_WITHIN)
            .await
            .map_err(|e| e.to_string())?;
        progress.done(format!("etcd answers on {}", member.client_url))?;
        progress.start("compare")?;
        member.figures().await.map_err(|e| e.to_string())
    }
    .await;
    member.stop().await;
    dir.set_etcd(None).map_err(|e| e.to_string())?;
    let restored = result?;
    report.restored = Some(restored);
    let Some(figures) = &report.snapshot else {
        return Err("the file's figures are missing".into());
    };
    report.checks = compare(&report.sidecar, figures, Some(&restored));
    let detail = format!(
        "restored: revision {}, {} keys, hash_kv {}",
        restored.revision, restored.keys, restored.hash_kv
    );
    if report.checks.iter().all(|c| c.ok) {
        progress.done(detail)?;
    } else {
        progress.failed(format!("{detail}; {}", report.mismatches().join("; ")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> SidecarFigures {
        SidecarFigures {
            revision: 10,
            size: 4128,
            sha256: "ab".repeat(32),
        }
    }

    fn file() -> FileFigures {
        FileFigures {
            hash: 1,
            revision: 10,
            total_key: 30,
            file_size: 4128,
            integrity: "ok".into(),
            sha256: Some("ab".repeat(32)),
            kv: KvFigures {
                revision: 10,
                keys: 5,
                hash_kv: 77,
                compact_revision: 0,
            },
        }
    }

    fn restored() -> Restored {
        Restored {
            revision: 10,
            keys: 5,
            hash_kv: 77,
            compact_revision: 0,
        }
    }

    fn failing(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.split(':').next().unwrap_or_default())
            .collect()
    }

    #[test]
    fn every_figure_is_compared_and_a_mismatch_names_it() {
        assert!(
            compare(&sidecar(), &file(), Some(&restored()))
                .iter()
                .all(|c| c.ok)
        );
        assert_eq!(compare(&sidecar(), &file(), None).len(), 3);
        let mut s = sidecar();
        s.revision = 11;
        assert_eq!(failing(&compare(&s, &file(), Some(&restored()))), ["revision"]);
        let mut s = sidecar();
        s.revision = 9;
        assert!(
            failing(&compare(&s, &file(), None)).is_empty(),
            "writes during the save"
        );
        let mut s = sidecar();
        s.sha256 = "cd".repeat(32);
        s.size = 1;
        assert_eq!(failing(&compare(&s, &file(), None)), ["size", "sha256"]);
        let mut f = file();
        f.integrity = "mismatch".into();
        assert_eq!(failing(&compare(&sidecar(), &f, None)), ["sha256"]);
        let mut r = restored();
        r.keys = 4;
        r.hash_kv = 1;
        let checks = compare(&sidecar(), &file(), Some(&r));
        assert_eq!(failing(&checks), ["keys", "hash_kv"]);
        let bad = checks.iter().find(|c| c.name.starts_with("keys")).expect("keys");
        assert_eq!((bad.expected.as_str(), bad.actual.as_str()), ("5", "4"));
    }

    #[test]
    fn the_named_backup_or_the_newest_verified_one() {
        use crate::backup::BackupState;
        let meta = |name: &str| SnapshotMeta {
            version: 1,
            file: name.into(),
            cluster: "c".into(),
            cluster_id: "0".repeat(16),
            member_name: "e1".into(),
            member_id: "0".repeat(16),
            revision: 5,
            raft_index: 9,
            etcd_version: "3.4.23".into(),
            size: 10,
            sha256: "ab".repeat(32),
            created: "2026-12-01T00:00:00Z".into(),
        };
        let entry = |name: &str, state: BackupState, m: Option<SnapshotMeta>| BackupEntry {
            name: name.into(),
            time: 0,
            size: 10,
            state,
            problem: None,
            meta: m,
        };
        let entries = [
            entry("c-3.db", BackupState::Incomplete, None),
            entry("c-2.db", BackupState::Damaged, Some(meta("c-2.db"))),
            entry("c-1.db", BackupState::Verified, Some(meta("c-1.db"))),
        ];
        assert_eq!(
            choose(&entries, "c", "file:///b", None).expect("newest").0.name,
            "c-1.db"
        );
        assert_eq!(
            choose(&entries, "c", "file:///b", Some("c-2.db"))
                .expect("named")
                .0
                .name,
            "c-2.db"
        );
        assert!(matches!(
            choose(&entries, "c", "file:///b", Some("c-3.db")),
            Err(DrillError::NoSidecar { .. })
        ));
        assert!(matches!(
            choose(&entries, "c", "file:///b", Some("c-9.db")),
            Err(DrillError::NoSuchBackup { .. })
        ));
        assert!(matches!(
            choose(&entries[..2], "c", "file:///b", None),
            Err(DrillError::Backup(BackupError::NoVerified { .. }))
        ));
    }
}
