//! Housekeeping: a journaled, fenced operation over every member that prunes
//! the data dir's kept copies through the agents (`PruneKeptCopies`) by a
//! count and an age, and removes stale downloaded backups (what `restore
//! --snapshot latest` downloads from S3 into `downloads/` beside the
//! journal). Copies an open, paused or failed (resumable) restore may still
//! roll back to are passed to the agents as protected; a download such a
//! restore reads is kept too. `etcdops housekeeping` (`cli/housekeeping.rs`)
//! and `serve`'s `housekeeping` job call [`run`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use etcdops_proto::v1 as pb;
use serde::Serialize;

use super::fence::{self, FenceError};
use crate::agents::Agents;
use crate::backup::catalog::parse_name;
use crate::fleet::Cluster;
use crate::journal::{self, Journal, JournalError, OpState, OperationRecord, StepRecord, StepState};
use crate::observe;
use crate::plan::operation::{Operation, RunOptions};
use crate::plan::planner::OpKind;

/// How long one agent may take to remove its copies (whole data dirs).
const PRUNE_BUDGET: Duration = Duration::from_secs(600);

/// What housekeeping is asked to do.
#[derive(Debug, Clone)]
pub struct HousekeepingRequest {
    pub cluster: Cluster,
    /// The fleet file (kept in the journal record).
    pub fleet: PathBuf,
    /// Keep the newest this many kept copies (and downloads).
    pub keep: Option<u32>,
    /// Keep what is younger than this.
    pub max_age: Option<Duration>,
    pub dry_run: bool,
    /// Where downloaded backups are staged (`downloads/` beside the journal).
    pub downloads: PathBuf,
}

/// Why housekeeping could not run.
#[derive(Debug, thiserror::Error)]
pub enum HousekeepingError {
    #[error(
        "no retention rule: pass --keep N, --max-age DURATION or both; housekeeping never removes anything without one"
    )]
    NoRule,
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// One kept copy or download and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemView {
    pub path: String,
    pub size_bytes: u64,
    /// Removed (or, in a dry run, would be).
    pub remove: bool,
    pub why: String,
}

/// One member's kept copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberHousekeeping {
    pub member: String,
    pub data_dir: Option<String>,
    /// Newest first.
    pub copies: Vec<ItemView>,
    pub removed_bytes: u64,
    /// Why the agent did not do it.
    pub error: Option<String>,
}

/// What housekeeping did (`-w json`; OUTPUT.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HousekeepingReport {
    pub cluster: String,
    pub operation: String,
    pub dry_run: bool,
    pub members: Vec<MemberHousekeeping>,
    /// The downloads directory and its files of this cluster.
    pub downloads_dir: String,
    pub downloads: Vec<ItemView>,
    pub removed_bytes: u64,
    /// Every member answered.
    pub ok: bool,
}

/// Kept copies (member → paths) and downloads an unfinished or failed
/// restore, or the restore an unfinished rollback undoes, may still need (pure).
pub fn protected(ops: &[OperationRecord], cluster: &str) -> (BTreeMap<String, Vec<String>>, Vec<PathBuf>) {
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut downloads = Vec::new();
    let open = |op: &OperationRecord| {
        op.cluster == cluster && matches!(op.state, OpState::Running | OpState::Paused | OpState::Failed)
    };
    let mut restores: Vec<&OperationRecord> = ops
        .iter()
        .filter(|o| open(o) && o.kind == OpKind::Restore)
        .collect();
    for op in ops.iter().filter(|o| open(o)) {
        if let Operation::RestoreRollback { rollback_of } = &op.operation
            && let Some(r) = ops.iter().find(|o| &o.id == rollback_of)
        {
            restores.push(r);
        }
    }
    for op in restores {
        if let Some(r) = op.operation.restore() {
            for (member, kept) in &r.kept {
                copies.entry(member.clone()).or_default().push(kept.clone());
            }
            downloads.push(r.snapshot.clone());
        }
    }
    (copies, downloads)
}

/// The downloads of `cluster` in `dir` and their fate (pure over the listing:
/// name, size, modification time), newest first. The same rules as the
/// kept copies, except that no download is special for being the newest.
pub fn plan_downloads(
    cluster: &str,
    mut files: Vec<(PathBuf, u64, SystemTime)>,
    keep: Option<u32>,
    max_age: Option<Duration>,
    now: SystemTime,
    protected: &[PathBuf],
) -> Vec<ItemView> {
    files.retain(|(p, _, _)| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| parse_name(cluster, n).is_some())
    });
    files.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
    files
        .into_iter()
        .enumerate()
        .map(|(i, (path, size, modified))| {
            let view = |remove: bool, why: String| ItemView {
                path: path.display().to_string(),
                size_bytes: size,
                remove,
                why,
            };
            if protected.contains(&path) {
                return view(false, "protected: an unfinished restore reads it".into());
            }
            if keep.is_none() && max_age.is_none() {
                return view(false, "no retention rule given".into());
            }
            if let Some(k) = keep
                && i < k as usize
            {
                return view(false, format!("one of the newest {k}"));
            }
            match max_age {
                None => view(true, format!("beyond the newest {}", keep.unwrap_or(0))),
                Some(age) => {
                    let old = now.duration_since(modified).unwrap_or_default();
                    if old < age {
                        view(false, format!("younger than {} s", age.as_secs()))
                    } else {
                        view(true, format!("older than {} s", age.as_secs()))
                    }
                }
            }
        })
        .collect()
}

fn list_downloads(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    e.path(),
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                )
            })
        })
        .collect()
}

/// Runs housekeeping: fence on every member, one step per member, then the downloads.
pub async fn run(
    agents: &Agents,
    journal: &Journal,
    request: HousekeepingRequest,
) -> Result<HousekeepingReport, HousekeepingError> {
    if request.keep.unwrap_or(0) == 0 && request.max_age.is_none() {
        return Err(HousekeepingError::NoRule);
    }
    let cluster = &request.cluster;
    let now = time::OffsetDateTime::now_utc();
    let id = journal::new_operation_id(OpKind::Housekeeping.as_str(), now);
    let view = observe::observe_agents(agents, &cluster.name, &cluster.members).await;
    super::busy(&view, &id)?;
    let (protect, protect_downloads) = protected(&journal.list()?, &cluster.name);
    let holder = journal::holder();
    let fence_taken = fence::acquire(
        agents,
        cluster,
        pb::AcquireFenceRequest {
            fence: Some(fence::fence(&cluster.name, view.highest_epoch() + 1, &id, "")),
            holder: holder.clone(),
            operation_kind: OpKind::Housekeeping.as_str().into(),
            takeover: false,
        },
        &[],
    )
    .await?;
    let mut steps: Vec<StepRecord> = cluster
        .members
        .iter()
        .map(|m| {
            StepRecord::pending(
                format!("prune:{}", m.name),
                format!("prune kept copies on {}", m.name),
            )
        })
        .collect();
    steps.push(StepRecord::pending(
        "downloads",
        "remove stale downloaded backups",
    ));
    let record = OperationRecord {
        operator: Some(agents.own_certificate().clone()),
        id: id.clone(),
        kind: OpKind::Housekeeping,
        cluster: cluster.name.clone(),
        fleet: request.fleet.clone(),
        operation: Operation::Housekeeping {
            keep: request.keep,
            max_age_secs: request.max_age.map(|d| d.as_secs()),
            dry_run: request.dry_run,
        },
        options: RunOptions::default(),
        holder,
        epoch: fence_taken.epoch,
        state: OpState::Running,
        created_at_unix: now.unix_timestamp(),
        updated_at_unix: now.unix_timestamp(),
        error: None,
        steps,
    };
    if let Err(e) = journal.create(&record) {
        fence::release(agents, cluster, &fence_taken).await;
        return Err(e.into());
    }
    let long = agents.with_call_timeout(PRUNE_BUDGET);
    let mut members = Vec::new();
    for member in &cluster.members {
        let step = format!("prune:{}", member.name);
        let _ = journal.step_started(&id, &step);
        let req = pb::PruneKeptCopiesRequest {
            operation_id: id.clone(),
            fence: Some(fence::fence(
                &cluster.name,
                fence_taken.epoch,
                &id,
                &format!("{step}#1"),
            )),
            keep: request.keep.unwrap_or(0),
            max_age_secs: request.max_age.map_or(0, |d| d.as_secs().max(1)),
            protect: protect.get(&member.name).cloned().unwrap_or_default(),
            dry_run: request.dry_run,
        };
        let reply = long
            .fan_out(std::slice::from_ref(member), move |mut client| {
                let req = req.clone();
                async move { client.prune_kept_copies(req).await }
            })
            .await
            .pop();
        let result = match reply {
            Some(r) => r.result.map_err(|e| e.to_string()),
            None => Err("no answer".to_string()),
        };
        let entry = match result {
            Ok(resp) => {
                let copies: Vec<ItemView> = resp
                    .copies
                    .iter()
                    .map(|c| ItemView {
                        path: c.path.clone(),
                        size_bytes: c.size_bytes,
                        remove: c.remove,
                        why: c.why.clone(),
                    })
                    .collect();
                let removed: Vec<&str> = copies
                    .iter()
                    .filter(|c| c.remove)
                    .map(|c| c.path.as_str())
                    .collect();
                let detail = format!(
                    "{} {} of {} kept copies ({} bytes){}",
                    if request.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    },
                    removed.len(),
                    copies.len(),
                    resp.removed_bytes,
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", removed.join(", "))
                    }
                );
                let _ = journal.step_finished(&id, &step, StepState::Done, Some(detail));
                MemberHousekeeping {
                    member: member.name.clone(),
                    data_dir: Some(resp.data_dir),
                    copies,
                    removed_bytes: resp.removed_bytes,
                    error: None,
                }
            }
            Err(e) => {
                let _ = journal.step_finished(&id, &step, StepState::Failed, Some(e.clone()));
                MemberHousekeeping {
                    member: member.name.clone(),
                    data_dir: None,
                    copies: Vec::new(),
                    removed_bytes: 0,
                    error: Some(e),
                }
            }
        };
        members.push(entry);
    }
    let _ = journal.step_started(&id, "downloads");
    let downloads = plan_downloads(
        &cluster.name,
        list_downloads(&request.downloads),
        request.keep,
        request.max_age,
        SystemTime::now(),
        &protect_downloads,
    );
    let mut download_errors = Vec::new();
    let mut download_bytes = 0u64;
    for d in downloads.iter().filter(|d| d.remove) {
        download_bytes = download_bytes.saturating_add(d.size_bytes);
        if request.dry_run {
            continue;
        }
        match std::fs::remove_file(&d.path) {
            Ok(()) => {
                tracing::info!(path = %d.path, size_bytes = d.size_bytes, "removed a stale downloaded backup")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => download_errors.push(format!("{}: {e}", d.path)),
        }
    }
    let detail = format!(
        "{} {} of {} downloads in {} ({} bytes)",
        if request.dry_run {
            "would remove"
        } else {
            "removed"
        },
        downloads.iter().filter(|d| d.remove).count(),
        downloads.len(),
        request.downloads.display(),
        download_bytes
    );
    if download_errors.is_empty() {
        let _ = journal.step_finished(&id, "downloads", StepState::Done, Some(detail));
    } else {
        let _ = journal.step_finished(
            &id,
            "downloads",
            StepState::Failed,
            Some(download_errors.join("; ")),
        );
    }
    let warnings = fence::release(agents, cluster, &fence_taken).await;
    let failures: Vec<String> = members
        .iter()
        .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.member)))
        .chain(download_errors)
        .collect();
    let ok = failures.is_empty();
    if ok {
        journal.finish(&id, OpState::Succeeded, None)?;
    } else {
        journal.finish(&id, OpState::Failed, Some(failures.join("; ")))?;
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    let removed_bytes = members
        .iter()
        .map(|m| m.removed_bytes)
        .fold(download_bytes, u64::saturating_add);
    Ok(HousekeepingReport {
        cluster: cluster.name.clone(),
        operation: id,
        dry_run: request.dry_run,
        members,
        downloads_dir: request.downloads.display().to_string(),
        downloads,
        removed_bytes,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::restore::RestoreArgs;

    fn record(id: &str, state: OpState, operation: Operation) -> OperationRecord {
        OperationRecord {
            id: id.into(),
            kind: operation.kind(),
            cluster: "c".into(),
            fleet: "/f".into(),
            operation,
            options: RunOptions::default(),
            holder: "h".into(),
            operator: None,
            epoch: 1,
            state,
            created_at_unix: 0,
            updated_at_unix: 0,
            error: None,
            steps: Vec::new(),
        }
    }

    fn restore(kept: &str) -> Operation {
        let mut args = RestoreArgs {
            snapshot: PathBuf::from(format!("/j/downloads/c-{kept}.db")),
            ..RestoreArgs::default()
        };
        args.kept
            .insert("e1".into(), format!("/d/default.pre-restore-{kept}"));
        Operation::Restore { restore: args }
    }

    #[test]
    fn unfinished_restores_and_rolled_back_ones_protect_their_copies() {
        let ops = [
            record("r-done", OpState::Succeeded, restore("A")),
            record("r-paused", OpState::Paused, restore("B")),
            record("r-failed", OpState::Failed, restore("C")),
            record("r-aborted", OpState::Aborted, restore("D")),
            record("r-undone", OpState::Succeeded, restore("E")),
            record(
                "rb",
                OpState::Running,
                Operation::RestoreRollback {
                    rollback_of: "r-undone".into(),
                },
            ),
        ];
        let (copies, downloads) = protected(&ops, "c");
        let mut got = copies.get("e1").cloned().unwrap_or_default();
        got.sort();
        assert_eq!(
            got,
            [
                "/d/default.pre-restore-B",
                "/d/default.pre-restore-C",
                "/d/default.pre-restore-E"
            ]
        );
        assert_eq!(downloads.len(), 3);
        assert!(protected(&ops, "other").0.is_empty());
    }

    #[test]
    fn downloads_by_count_and_age_never_another_cluster_never_protected() {
        let t = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let now = t(100 * 86_400);
        let day = 86_400;
        let files = vec![
            (PathBuf::from("/dl/c-20261201T000000Z.db"), 10, t(99 * day)),
            (PathBuf::from("/dl/c-20261101T000000Z.db"), 20, t(60 * day)),
            (PathBuf::from("/dl/c-20261001T000000Z.db"), 30, t(10 * day)),
            (PathBuf::from("/dl/other-20261001T000000Z.db"), 40, t(day)),
            (PathBuf::from("/dl/notes.txt"), 1, t(day)),
        ];
        let removed = |keep, age: Option<u64>, protect: &[PathBuf]| -> Vec<u64> {
            plan_downloads(
                "c",
                files.clone(),
                keep,
                age.map(|d| Duration::from_secs(d * day)),
                now,
                protect,
            )
            .into_iter()
            .filter(|v| v.remove)
            .map(|v| v.size_bytes)
            .collect()
        };
        assert_eq!(removed(None, None, &[]), Vec::<u64>::new());
        assert_eq!(removed(Some(1), None, &[]), [20, 30]);
        assert_eq!(removed(None, Some(30), &[]), [20, 30]);
        assert_eq!(removed(None, Some(50), &[]), [30]);
        assert_eq!(removed(Some(2), Some(30), &[]), [30]);
        assert_eq!(
            removed(Some(1), None, &[PathBuf::from("/dl/c-20261001T000000Z.db")]),
            [20]
        );
    }
}
