//! What `etcdops backup run|list|prune` print: JSON reports (schema in
//! `coordinator/OUTPUT.md`) and their tables, as pure functions.

use serde::Serialize;

use super::catalog::{BackupEntry, BackupState};
use super::retention::Retention;
use super::{PruneStep, Pruned, RunOutcome};
use crate::output::table::{NONE, human_bytes, new_table, render};

/// One backup as printed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    pub name: String,
    /// The snapshot's URL in the target.
    pub url: String,
    /// When the backup started, RFC 3339 UTC (from its name).
    pub time: String,
    pub time_unix: i64,
    /// Stored size in bytes.
    pub size: u64,
    pub state: BackupState,
    /// What is wrong with a damaged backup.
    pub problem: Option<String>,
    // From the sidecar; null without one.
    pub revision: Option<i64>,
    pub member: Option<String>,
    pub member_id: Option<String>,
    pub cluster_id: Option<String>,
    pub etcd_version: Option<String>,
    pub sha256: Option<String>,
}

impl BackupView {
    pub fn new(target: &str, e: &BackupEntry) -> BackupView {
        let meta = e.meta.as_ref();
        BackupView {
            name: e.name.clone(),
            url: format!("{}/{}", target.trim_end_matches('/'), e.name),
            time: rfc3339(e.time),
            time_unix: e.time,
            size: e.size,
            state: e.state.clone(),
            problem: e.problem.clone(),
            revision: meta.map(|m| m.revision),
            member: meta.map(|m| m.member_name.clone()),
            member_id: meta.map(|m| m.member_id.clone()),
            cluster_id: meta.map(|m| m.cluster_id.clone()),
            etcd_version: meta.map(|m| m.etcd_version.clone()),
            sha256: meta.map(|m| m.sha256.clone()),
        }
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `backup list -w json`.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub cluster: String,
    pub ok: bool,
    pub target: String,
    /// Newest first.
    pub backups: Vec<BackupView>,
}

pub fn list_report(cluster: &str, target: &str, entries: &[BackupEntry]) -> ListReport {
    ListReport {
        cluster: cluster.to_string(),
        ok: true,
        target: target.to_string(),
        backups: entries.iter().map(|e| BackupView::new(target, e)).collect(),
    }
}

/// A backup's fate in `backup prune -w json`.
#[derive(Debug, Clone, Serialize)]
pub struct PruneView {
    #[serde(flatten)]
    pub backup: BackupView,
    pub keep: bool,
    pub reason: String,
    pub deleted: bool,
    pub error: Option<String>,
}

/// `backup prune -w json` (and the `prune` part of `backup run`).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub cluster: String,
    /// Every deletion asked for succeeded.
    pub ok: bool,
    pub target: String,
    pub dry_run: bool,
    pub policy: Retention,
    pub kept: usize,
    /// Deleted, or to be deleted in a dry run.
    pub deleted: usize,
    pub failed: usize,
    pub backups: Vec<PruneView>,
}

pub fn prune_report(cluster: &str, target: &str, pruned: &Pruned) -> PruneReport {
    let backups: Vec<PruneView> = pruned
        .items
        .iter()
        .map(|i| PruneView {
            backup: BackupView::new(target, &i.entry),
            keep: i.keep,
            reason: i.reason.clone(),
            deleted: i.deleted,
            error: i.error.clone(),
        })
        .collect();
    PruneReport {
        cluster: cluster.to_string(),
        ok: pruned.ok(),
        target: target.to_string(),
        dry_run: pruned.dry_run,
        policy: pruned.policy.clone(),
        kept: backups.iter().filter(|b| b.keep).count(),
        deleted: backups.iter().filter(|b| !b.keep && b.error.is_none()).count(),
        failed: backups.iter().filter(|b| b.error.is_some()).count(),
        backups,
    }
}

/// `backup run -w json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub cluster: String,
    /// Stored and verified, and the prune (if any) went through.
    pub ok: bool,
    pub target: String,
    pub backup: BackupView,
    /// The sidecar's name beside the snapshot.
    pub sidecar: String,
    /// Why that member was snapshotted.
    pub why: String,
    /// What was read back after storing: `size`, `sidecar`, and `sha256` (local targets).
    pub verified: Vec<&'static str>,
    pub prune: Option<PruneReport>,
    /// Why retention was not applied (`--no-prune`, no policy).
    pub prune_skipped: Option<String>,
    pub prune_error: Option<String>,
}

pub fn run_report(cluster: &str, target: &str, outcome: &RunOutcome) -> RunReport {
    let s = &outcome.stored;
    let entry = BackupEntry {
        name: s.name.clone(),
        time: super::catalog::parse_name(cluster, &s.name).unwrap_or_default(),
        size: s.meta.size,
        state: BackupState::Verified,
        problem: None,
        meta: Some(s.meta.clone()),
    };
    let (prune, prune_skipped, prune_error) = match &outcome.prune {
        PruneStep::Skipped(why) => (None, Some(why.clone()), None),
        PruneStep::Done(pruned) => (Some(prune_report(cluster, target, pruned)), None, None),
        PruneStep::Failed(e) => (None, None, Some(e.clone())),
    };
    RunReport {
        cluster: cluster.to_string(),
        ok: prune_error.is_none() && prune.as_ref().is_none_or(|p| p.ok),
        target: target.to_string(),
        backup: BackupView::new(target, &entry),
        sidecar: s.sidecar.clone(),
        why: s.why.clone(),
        verified: s.verified.clone(),
        prune,
        prune_skipped,
        prune_error,
    }
}

fn short_sha(sha: Option<&String>) -> String {
    sha.map(|s| s.chars().take(12).collect())
        .unwrap_or_else(|| NONE.to_string())
}

fn state_text(v: &BackupView) -> String {
    match (&v.state, &v.problem) {
        (BackupState::Verified, _) => "verified".to_string(),
        (BackupState::Incomplete, _) => "incomplete".to_string(),
        (BackupState::Damaged, Some(p)) => format!("damaged: {p}"),
        (BackupState::Damaged, None) => "damaged".to_string(),
    }
}

fn row(v: &BackupView) -> Vec<String> {
    vec![
        v.name.clone(),
        v.time.clone(),
        human_bytes(v.size),
        v.revision
            .map(|r| r.to_string())
            .unwrap_or_else(|| NONE.to_string()),
        v.member.clone().unwrap_or_else(|| NONE.to_string()),
        short_sha(v.sha256.as_ref()),
        state_text(v),
    ]
}

const COLUMNS: [&str; 7] = [
    "NAME",
    "TIME (UTC)",
    "SIZE",
    "REVISION",
    "MEMBER",
    "SHA256",
    "STATE",
];

pub fn render_list(r: &ListReport) -> String {
    if r.backups.is_empty() {
        return format!("No backups of cluster {} in {}.\n", r.cluster, r.target);
    }
    let mut table = new_table(&COLUMNS);
    for v in &r.backups {
        table.add_row(row(v));
    }
    format!(
        "Backups of cluster {} in {}:\n{}",
        r.cluster,
        r.target,
        render(&table)
    )
}

pub fn render_prune(r: &PruneReport) -> String {
    let mut text = format!(
        "Retention for cluster {} in {} (policy: {}):\n",
        r.cluster,
        r.target,
        r.policy.describe()
    );
    if r.backups.is_empty() {
        text.push_str("No backups.\n");
        return text;
    }
    let mut columns = COLUMNS.to_vec();
    columns.extend(["ACTION", "REASON"]);
    let mut table = new_table(&columns);
    for b in &r.backups {
        let action = match (&b.error, b.keep, b.deleted, r.dry_run) {
            (Some(e), ..) => format!("FAILED: {e}"),
            (None, true, ..) => "keep".to_string(),
            (None, false, _, true) => "would delete".to_string(),
            (None, false, true, false) => "deleted".to_string(),
            (None, false, false, false) => "delete".to_string(),
        };
        let mut cells = row(&b.backup);
        cells.extend([action, b.reason.clone()]);
        table.add_row(cells);
    }
    text.push_str(&render(&table));
    if r.dry_run {
        text.push_str(&format!(
            "Dry run: {} would be deleted, {} kept; nothing was deleted.\n",
            r.deleted, r.kept
        ));
    } else {
        text.push_str(&format!("{} deleted, {} kept", r.deleted, r.kept));
        if r.failed > 0 {
            text.push_str(&format!(", {} could not be deleted", r.failed));
        }
        text.push_str(".\n");
    }
    text
}

pub fn render_run(r: &RunReport) -> String {
    let b = &r.backup;
    let mut text = format!(
        "Backup stored: {}\n  from member {} ({}), chosen as {}\n  revision {}, {} ({} bytes), sha256 {}\n  verified after storing: {}\n",
        b.url,
        b.member.as_deref().unwrap_or(NONE),
        b.member_id.as_deref().unwrap_or(NONE),
        r.why,
        b.revision
            .map(|r| r.to_string())
            .unwrap_or_else(|| NONE.to_string()),
        human_bytes(b.size),
        b.size,
        b.sha256.as_deref().unwrap_or(NONE),
        r.verified.join(", "),
    );
    if let Some(why) = &r.prune_skipped {
        text.push_str(&format!("Not pruned: {why}.\n"));
    }
    if let Some(e) = &r.prune_error {
        text.push_str(&format!("Pruning failed: {e}\n"));
    }
    if let Some(p) = &r.prune {
        text.push_str(&format!(
            "Pruned (policy: {}): {} deleted, {} kept{}.\n",
            p.policy.describe(),
            p.deleted,
            p.kept,
            if p.failed > 0 {
                format!(", {} could not be deleted", p.failed)
            } else {
                String::new()
            }
        ));
        for d in p.backups.iter().filter(|d| !d.keep) {
            match &d.error {
                None => text.push_str(&format!("  deleted {}: {}\n", d.backup.name, d.reason)),
                Some(e) => text.push_str(&format!("  could not delete {}: {e}\n", d.backup.name)),
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::backup::PruneItem;

    fn entry(name: &str, state: BackupState) -> BackupEntry {
        BackupEntry {
            name: name.into(),
            time: super::super::catalog::parse_name("prod", name).expect("name"),
            size: 20_480,
            state,
            problem: None,
            meta: None,
        }
    }

    #[test]
    fn list_json_has_nulls_not_gaps_and_the_table_reads() {
        let r = list_report(
            "prod",
            "s3://b-1/p",
            &[entry("prod-20261125T140000Z.db", BackupState::Incomplete)],
        );
        let json: serde_json::Value =
            serde_json::from_str(&crate::output::to_json(&r).expect("json")).expect("parse");
        let b = &json["backups"][0];
        assert_eq!(b["url"], "s3://b-1/p/prod-20261125T140000Z.db");
        assert_eq!(b["time"], "2026-11-25T14:00:00Z");
        assert_eq!(b["state"], "incomplete");
        assert!(
            b["revision"].is_null() && b["sha256"].is_null() && b["problem"].is_null(),
            "{b}"
        );
        let text = render_list(&r);
        assert!(
            text.contains("| prod-20261125T140000Z.db |") && text.contains("incomplete"),
            "{text}"
        );
        assert!(render_list(&list_report("prod", "file:///d", &[])).contains("No backups"));
    }

    #[test]
    fn prune_report_counts_and_says_dry_run() {
        let pruned = Pruned {
            policy: Retention {
                keep_last: NonZeroU32::new(1),
                ..Retention::default()
            },
            dry_run: true,
            items: vec![
                PruneItem {
                    entry: entry("prod-20261125T150000Z.db", BackupState::Verified),
                    keep: true,
                    reason: "keep_last 1".into(),
                    deleted: false,
                    error: None,
                },
                PruneItem {
                    entry: entry("prod-20261125T140000Z.db", BackupState::Verified),
                    keep: false,
                    reason: "not kept by the policy (keep_last 1)".into(),
                    deleted: false,
                    error: None,
                },
            ],
        };
        let r = prune_report("prod", "file:///d", &pruned);
        assert!(r.ok && r.dry_run);
        assert_eq!((r.kept, r.deleted, r.failed), (1, 1, 0));
        let json: serde_json::Value =
            serde_json::from_str(&crate::output::to_json(&r).expect("json")).expect("parse");
        assert_eq!(json["policy"]["keep_last"], 1);
        assert!(json["policy"]["keep_within"].is_null());
        assert_eq!(json["backups"][1]["keep"], false);
        assert_eq!(json["backups"][1]["name"], "prod-20261125T140000Z.db");
        let text = render_prune(&r);
        assert!(
            text.contains("would delete") && text.contains("nothing was deleted"),
            "{text}"
        );
    }
}
