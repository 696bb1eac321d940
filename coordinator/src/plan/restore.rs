//! The pure core of a full-cluster restore (its steps run in
//! `exec/restore.rs`, `etcdops restore` is `cli/restore.rs`): the preflight that runs
//! before any member is stopped, and what every member is restored with —
//! one initial cluster derived from the inventory, one fresh token — so the
//! runbook's hand-edited `--initial-cluster` strings and mixed cluster IDs
//! cannot happen.

use std::collections::BTreeMap;
use std::path::PathBuf;

use etcdops_format::etcd_version::EtcdVersion;
use serde::{Deserialize, Serialize};

use super::planner::{OpKind, Plan, Step};
use super::safety::Finding;
use super::step::{RestoreStep, StepKind};

/// What the snapshot file is (from `snapshot::status::read_status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotFacts {
    pub path: String,
    /// The whole file, trailer included (what is streamed to every agent).
    pub file_size: u64,
    pub revision: i64,
    pub total_key: u64,
    /// `ok`, `missing` or `mismatch` (etcd's sha256 trailer).
    pub integrity: String,
}

/// One member's host as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreHost {
    /// The fleet's (and the restored member's) name.
    pub name: String,
    /// Why its agent could not be asked; `None` when it answered.
    pub unreachable: Option<String>,
    /// Free bytes on the data dir's filesystem.
    pub fs_free_bytes: u64,
    /// The etcd version its member reported, when it was running.
    pub etcd_version: Option<String>,
    /// Its peer URL: from the cluster's membership when it answered, else
    /// the agent's host on port 2380.
    pub peer_url: String,
}

/// What every member is restored with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// `name=peer-url,...` for every member, in fleet order.
    pub initial_cluster: String,
    /// A token no earlier cluster used: restored members get new member and cluster IDs.
    pub token: String,
    /// Remarks for the plan (e.g. revision bump unavailable on etcd 3.4).
    pub notes: Vec<String>,
}

/// What a restore keeps in the journal (`args.restore`): enough to run or
/// resume it, and what each member's agent answered (staged and kept dirs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreArgs {
    pub snapshot: PathBuf,
    pub file_size: u64,
    /// Hex sha256 of the database bytes: etcd's trailer, what every agent checks the upload against.
    #[serde(alias = "file_sha256")]
    pub db_sha256: String,
    pub revision: i64,
    pub bump_revision: u64,
    pub initial_cluster: String,
    pub token: String,
    /// Member name → peer URL.
    pub peer_urls: BTreeMap<String, String>,
    /// Member name → the restored dir its agent staged.
    #[serde(default)]
    pub staged: BTreeMap<String, String>,
    /// Member name → where its pre-restore data dir is kept.
    #[serde(default)]
    pub kept: BTreeMap<String, String>,
}

/// `etcdops restore --snapshot`: stage everywhere while the cluster still
/// serves, then stop, swap, configure, start, verify.
pub fn plan_restore(cluster: &str, spec: &RestoreSpec) -> Plan {
    let steps = [
        StepKind::Restore(RestoreStep::StageAll),
        StepKind::Restore(RestoreStep::StopAll),
        StepKind::Restore(RestoreStep::SwapAll),
        StepKind::Restore(RestoreStep::ConfigureAll),
        StepKind::Restore(RestoreStep::StartAll),
        StepKind::Restore(RestoreStep::VerifyRestore),
    ]
    .into_iter()
    .map(|k| Step::new(k, None))
    .collect();
    let mut notes = spec.notes.clone();
    notes.push(format!(
        "every member restores with --initial-cluster {} and token {}",
        spec.initial_cluster, spec.token
    ));
    notes.push(
        "every member is stopped between the swap and the start: the cluster does not serve meanwhile".into(),
    );
    Plan {
        kind: OpKind::Restore,
        cluster: cluster.to_string(),
        steps,
        notes,
    }
}

/// `etcdops restore --rollback OP`: the pre-restore data dirs back.
pub fn plan_rollback(cluster: &str, op: &str) -> Plan {
    let steps = [
        StepKind::Restore(RestoreStep::StopAll),
        StepKind::Restore(RestoreStep::RollBackAll),
        StepKind::Restore(RestoreStep::StartAll),
        StepKind::Restore(RestoreStep::VerifyRestore),
    ]
    .into_iter()
    .map(|k| Step::new(k, None))
    .collect();
    Plan {
        kind: OpKind::RestoreRollback,
        cluster: cluster.to_string(),
        steps,
        notes: vec![format!(
            "puts back the data dirs operation {op} kept; the restored ones are kept aside as `rolled-back`"
        )],
    }
}

/// The revision bump a restore uses unless told: etcd's and Kubernetes'
/// recommended 1,000,000,000 (more than any cluster writes between a
/// snapshot and its restore) when every member runs a release whose restore
/// tool bumps the revision and marks it compacted so watchers re-list instead
/// of missing events (etcdutl 3.5.10+, etcdctl 3.4.27+:
/// `EtcdVersion::restore_can_bump`); 0 when a member runs an older release
/// (3.4.23, 3.5.1: the plan says so) or no version is known.
pub const DEFAULT_BUMP: u64 = 1_000_000_000;

/// Whether the member's etcd release can bump the revision on restore.
fn can_bump(version: &str) -> bool {
    version.parse::<EtcdVersion>().is_ok_and(|v| v.restore_can_bump())
}

pub fn default_bump(versions: &[Option<String>]) -> u64 {
    if !versions.is_empty() && versions.iter().all(|v| v.as_deref().is_some_and(can_bump)) {
        DEFAULT_BUMP
    } else {
        0
    }
}

/// A token for the restored cluster: the cluster's name and the time, so two
/// restores never share one (etcd derives member IDs from peer URLs + token).
pub fn new_token(cluster: &str, now_unix: i64) -> String {
    let safe: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{safe}-restore-{now_unix}")
}

/// Everything checked before any member is stopped: the snapshot's
/// integrity, every agent reachable, room for the file and the restored copy
/// (twice the file) on every host, one peer URL per member, and the same etcd
/// version everywhere it is known. Any finding refuses the restore.
pub fn preflight(
    cluster: &str,
    snapshot: &SnapshotFacts,
    hosts: &[RestoreHost],
    bump_revision: u64,
    now_unix: i64,
) -> Result<RestoreSpec, Vec<Finding>> {
    let mut findings = Vec::new();
    let finding = |member: Option<&str>, seen: String, action: &str| Finding {
        member: member.map(str::to_string),
        seen,
        action: action.to_string(),
    };
    match snapshot.integrity.as_str() {
        "ok" => {}
        "missing" => findings.push(finding(
            None,
            format!("{} has no sha256 integrity trailer (not a file `etcdctl snapshot save` wrote, or truncated)", snapshot.path),
            "restore only from a verified snapshot (`etcdops snapshot save` / `backup run`); check it with `etcdops snapshot status`",
        )),
        other => findings.push(finding(
            None,
            format!("{}: integrity {other}: the file is damaged", snapshot.path),
            "take another snapshot or pick an older backup; `etcdops backup list` shows verified ones",
        )),
    }
    if hosts.is_empty() {
        findings.push(finding(
            None,
            format!("cluster {cluster} has no members in the fleet file"),
            "list its members in the fleet file",
        ));
    }
    let needed = snapshot.file_size.saturating_mul(2);
    for h in hosts {
        if let Some(why) = &h.unreachable {
            findings.push(finding(
                Some(&h.name),
                format!("its agent cannot be asked: {why}"),
                "every member's agent must answer before anything is stopped: start it, or fix the fleet file",
            ));
            continue;
        }
        if h.fs_free_bytes < needed {
            findings.push(finding(
                Some(&h.name),
                format!(
                    "{} bytes free beside its data dir; the snapshot ({} bytes) and its restored copy need {needed}",
                    h.fs_free_bytes, snapshot.file_size
                ),
                "free space there (old kept copies `<data dir>.<reason>-<time>` are candidates) and retry",
            ));
        }
        if h.peer_url.is_empty() || !(h.peer_url.starts_with("http://") || h.peer_url.starts_with("https://"))
        {
            findings.push(finding(
                Some(&h.name),
                format!("no usable peer URL ({:?})", h.peer_url),
                "check the fleet file's agent URL",
            ));
        }
    }
    let mut versions: Vec<&str> = hosts.iter().filter_map(|h| h.etcd_version.as_deref()).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        findings.push(finding(
            None,
            format!("members run different etcd versions ({})", versions.join(", ")),
            "finish the upgrade (or downgrade) first: a restore starts every member from the same data",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for h in hosts {
        if !seen.insert(h.peer_url.as_str()) {
            findings.push(finding(
                Some(&h.name),
                format!("peer URL {} is used by two members", h.peer_url),
                "fix the fleet file",
            ));
        }
    }
    // A release known not to have the flags (3.4.23, 3.5.1): refused, never guessed.
    let cannot = versions
        .iter()
        .find(|v| v.parse::<EtcdVersion>().is_ok() && !can_bump(v));
    if let Some(v) = cannot.filter(|_| bump_revision > 0) {
        findings.push(finding(
            None,
            format!("--bump-revision {bump_revision} asked, but etcd {v} cannot bump the revision on restore (etcdutl 3.5.10+ or etcdctl 3.4.27+ can)"),
            "restore without --bump-revision (the revision stays the snapshot's; Kubernetes must re-list), or upgrade etcd first",
        ));
    }
    if !findings.is_empty() {
        return Err(findings);
    }
    let mut notes = Vec::new();
    if bump_revision > 0 {
        notes.push(format!(
            "the revision is raised by {bump_revision} above the snapshot's {} and marked compacted: watchers that saw later \
             revisions get `compacted` and re-list instead of missing events",
            snapshot.revision
        ));
    } else if let Some(v) = cannot {
        notes.push(format!(
            "etcd {v} cannot bump the revision on restore (etcdutl 3.5.10+ or etcdctl 3.4.27+ can; etcdops then bumps by {DEFAULT_BUMP} by default): \
             the restored cluster starts at the snapshot's revision {}; Kubernetes watchers that saw later revisions must re-list",
            snapshot.revision
        ));
    } else {
        notes.push(format!(
            "no revision bump: the restored cluster starts at the snapshot's revision {}; clients that saw later revisions \
             (Kubernetes watches) must re-list",
            snapshot.revision
        ));
    }
    Ok(RestoreSpec {
        initial_cluster: hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.peer_url))
            .collect::<Vec<_>>()
            .join(","),
        token: new_token(cluster, now_unix),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bump_is_on_by_default_only_where_every_member_can_do_it() {
        let v = |s: &[Option<&str>]| s.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(
            default_bump(&v(&[Some("3.5.17"), Some("3.5.17"), Some("3.6.0")])),
            DEFAULT_BUMP
        );
        assert_eq!(
            default_bump(&v(&[Some("3.4.23"), Some("3.4.23"), Some("3.4.23")])),
            0
        );
        assert_eq!(
            default_bump(&v(&[Some("3.5.17"), None, Some("3.5.17")])),
            0,
            "unknown version: no guess"
        );
        assert_eq!(default_bump(&v(&[Some("3.5.17"), Some("3.4.23")])), 0);
        assert_eq!(default_bump(&v(&[Some("garbage"), Some("")])), 0);
        assert_eq!(default_bump(&[]), 0);
        assert_eq!(default_bump(&v(&[Some("4.0.0")])), DEFAULT_BUMP);
        // By the real version: the flags came in 3.5.10 and 3.4.27.
        let table = [
            ("3.5.1", 0),
            ("3.5.9", 0),
            ("3.5.10", DEFAULT_BUMP),
            ("3.4.26", 0),
            ("3.4.27", DEFAULT_BUMP),
        ];
        for (version, bump) in table {
            assert_eq!(
                default_bump(&v(&[Some(version), Some(version)])),
                bump,
                "{version}"
            );
        }
    }

    #[test]
    fn on_3_5_1_the_plan_cannot_bump_exactly_as_on_3_4_23() {
        for version in ["3.4.23", "3.5.1"] {
            let mut on = hosts();
            on.iter_mut().for_each(|h| h.etcd_version = Some(version.into()));
            let spec = preflight("p", &snapshot(), &on, 0, 1).expect("spec");
            assert!(
                spec.notes[0].starts_with(&format!("etcd {version} cannot bump the revision on restore")),
                "{:?}",
                spec.notes
            );
            let refused = preflight("p", &snapshot(), &on, 7, 1).expect_err("cannot bump");
            assert!(
                refused[0].seen
                    == format!(
                        "--bump-revision 7 asked, but etcd {version} cannot bump the revision on restore \
                         (etcdutl 3.5.10+ or etcdctl 3.4.27+ can)"
                    )
                    && refused[0].action.contains("without --bump-revision"),
                "{refused:?}"
            );
        }
    }

    fn snapshot() -> SnapshotFacts {
        SnapshotFacts {
            path: "/b/s.db".into(),
            file_size: 1_000,
            revision: 42,
            total_key: 7,
            integrity: "ok".into(),
        }
    }

    fn hosts() -> Vec<RestoreHost> {
        (1..=3)
            .map(|i| RestoreHost {
                name: format!("etcd{i}"),
                unreachable: None,
                fs_free_bytes: 10_000,
                etcd_version: Some("3.4.23".into()),
                peer_url: format!("http://10.0.0.{i}:2380"),
            })
            .collect()
    }

    #[test]
    fn one_initial_cluster_and_a_fresh_token_for_every_member() {
        let spec = preflight("prod a", &snapshot(), &hosts(), 0, 1_700_000_000).expect("spec");
        assert_eq!(
            spec.initial_cluster,
            "etcd1=http://10.0.0.1:2380,etcd2=http://10.0.0.2:2380,etcd3=http://10.0.0.3:2380"
        );
        assert_eq!(spec.token, "prod-a-restore-1700000000");
        assert_ne!(new_token("prod", 1), new_token("prod", 2));
        assert!(
            spec.notes[0].contains("revision 42") && spec.notes[0].contains("cannot bump"),
            "{:?}",
            spec.notes
        );
        let refused = preflight("p", &snapshot(), &hosts(), 1_000_000, 1).expect_err("3.4 cannot bump");
        assert!(
            refused[0].seen.contains("cannot bump") && refused[0].action.contains("without --bump-revision"),
            "{refused:?}"
        );
        let mut modern = hosts();
        modern
            .iter_mut()
            .for_each(|h| h.etcd_version = Some("3.5.17".into()));
        let spec = preflight("p", &snapshot(), &modern, DEFAULT_BUMP, 1).expect("spec");
        assert!(
            spec.notes[0].contains("raised by 1000000000") && spec.notes[0].contains("compacted"),
            "{:?}",
            spec.notes
        );
    }

    #[test]
    fn every_refusal_names_what_and_what_to_do() {
        type Case = (
            &'static str,
            fn(&mut SnapshotFacts, &mut Vec<RestoreHost>),
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("damaged", |s, _| s.integrity = "mismatch".into(), "damaged"),
            (
                "no trailer",
                |s, _| s.integrity = "missing".into(),
                "no sha256 integrity trailer",
            ),
            (
                "agent down",
                |_, h| h[1].unreachable = Some("refused".into()),
                "etcd2: its agent cannot be asked",
            ),
            (
                "no room",
                |_, h| h[2].fs_free_bytes = 1_999,
                "etcd3: 1999 bytes free",
            ),
            (
                "versions",
                |_, h| h[0].etcd_version = Some("3.5.9".into()),
                "different etcd versions",
            ),
            (
                "bad url",
                |_, h| h[0].peer_url = String::new(),
                "no usable peer URL",
            ),
            (
                "same url",
                |_, h| h[1].peer_url = h[0].peer_url.clone(),
                "used by two members",
            ),
            ("no members", |_, h| h.clear(), "no members"),
        ];
        for (what, change, expected) in cases {
            let (mut s, mut h) = (snapshot(), hosts());
            change(&mut s, &mut h);
            let findings = preflight("p", &s, &h, 0, 1).expect_err(what);
            let text = findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(text.contains(expected), "{what}: {text}");
            assert!(findings.iter().all(|f| !f.action.is_empty()), "{what}");
        }
        // Exactly twice the file is enough; a stopped member's unknown version is fine.
        let mut h = hosts();
        h[0].fs_free_bytes = 2_000;
        h[1].etcd_version = None;
        assert!(preflight("p", &snapshot(), &h, 0, 1).is_ok());
    }
}
