//! Backup sets: `etcdops backup run|list|prune`.
//!
//! A backup is a verified snapshot (`snapshot::save`) stored in the
//! cluster's target as `<cluster>-<YYYYMMDDTHHMMSSZ>.db` beside its sidecar
//! `<name>.json`, which is stored last: a backup without its sidecar is
//! incomplete. After storing, the object is read back (size, sidecar; and
//! the sha256 for a local target) and the retention policy is applied.
//!
//! - [`config`]: the fleet file's `[clusters.backup]` table.
//! - [`target`]: target URLs, the [`Target`] enum and its errors;
//!   [`local`] and [`s3`] implement it.
//! - [`catalog`]: names, and which backups a target holds in which state.
//! - [`retention`]: the pure retention planner.
//! - [`report`]: what the commands print.

pub mod catalog;
pub mod config;
pub mod local;
pub mod report;
pub mod retention;
pub mod s3;
pub mod target;

use std::future::Future;

pub use crate::fleet::backup::BackupConfig;
pub use catalog::{BackupEntry, BackupState};
pub use config::BackupSettings;
pub use retention::{Decision, Retention, plan_retention};
pub use target::{BackupEnv, S3Settings, Target, TargetError, TargetUrl};

use crate::agents::Agents;
use crate::fleet::Cluster;
use crate::snapshot::save::{self, SaveError, SaveOptions, SnapshotMeta};

/// Errors of the backup commands. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "cluster {cluster} has no backup target: add a [clusters.backup] table with target = \"file:///dir\" or \"s3://bucket/prefix\" to the fleet file, or pass --target URL"
    )]
    NoTarget { cluster: String },
    #[error(
        "refusing to prune: cluster {cluster} has no retention policy. Set keep_last, keep_hourly, keep_daily or keep_within in its [clusters.backup] table; etcdops never deletes backups without one"
    )]
    NoPolicy { cluster: String },
    #[error(
        "no verified backup of cluster {cluster} in {url}: `etcdops backup list` shows what is there; pass a file with --snapshot FILE"
    )]
    NoVerified { cluster: String, url: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(
        "cannot create a staging directory in {dir} for the snapshot before upload: {source}; set TMPDIR to a directory with room for one snapshot"
    )]
    Staging {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "backup {url} failed verification: {message}; its sidecar was removed, so it counts as incomplete and the next prune deletes it"
    )]
    Verify { url: String, message: String },
    #[error(
        "interrupted while storing {name}; nothing complete was stored (an incomplete object may remain until the next prune)"
    )]
    Interrupted { name: String },
}

/// What the backup commands work with: the target, how to reach it, and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub url: TargetUrl,
    pub s3: S3Settings,
    pub retention: Retention,
}

impl Setup {
    /// The cluster's `[clusters.backup]`, with `--target` (when given)
    /// replacing its target.
    pub fn resolve(cluster: &Cluster, target: Option<&TargetUrl>) -> Result<Setup, BackupError> {
        let config = cluster.backup.as_ref();
        let url = target
            .or(config.map(|c| &c.target))
            .cloned()
            .ok_or_else(|| BackupError::NoTarget {
                cluster: cluster.name.clone(),
            })?;
        Ok(Setup {
            url,
            s3: config.map(BackupSettings::s3).unwrap_or_default(),
            retention: config.map(BackupSettings::retention).unwrap_or_default(),
        })
    }
}

/// `backup run` options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The member to snapshot; `None` lets `snapshot::save` choose.
    pub member: Option<String>,
    /// Apply the retention policy afterwards.
    pub prune: bool,
    /// A progress bar on stderr while the snapshot streams (terminals only).
    pub progress: bool,
}

/// A backup stored and verified.
#[derive(Debug, Clone)]
pub struct Stored {
    pub name: String,
    pub sidecar: String,
    /// The snapshot's URL in the target.
    pub url: String,
    pub meta: SnapshotMeta,
    /// Why that member was snapshotted.
    pub why: String,
    /// What was checked after storing: `size`, `sidecar`, `sha256`.
    pub verified: Vec<&'static str>,
}

/// What happened to retention after `backup run`.
#[derive(Debug, Clone)]
pub enum PruneStep {
    Skipped(String),
    Done(Pruned),
    Failed(String),
}

/// The outcome of `backup run`.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub stored: Stored,
    pub prune: PruneStep,
}

/// One backup's fate in a prune.
#[derive(Debug, Clone)]
pub struct PruneItem {
    pub entry: BackupEntry,
    pub keep: bool,
    pub reason: String,
    /// Actually deleted (never in a dry run).
    pub deleted: bool,
    /// Why deleting failed.
    pub error: Option<String>,
}

/// The outcome of a prune.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub policy: Retention,
    pub dry_run: bool,
    /// Newest first.
    pub items: Vec<PruneItem>,
}

impl Pruned {
    /// Every deletion asked for succeeded.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.error.is_none())
    }
}

/// Runs `fut`, unless Ctrl-C comes first (`snapshot::save` takes over
/// SIGINT, so every later step listens for it too).
async fn interruptible<T>(
    name: &str,
    fut: impl Future<Output = Result<T, BackupError>>,
) -> Result<T, BackupError> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Err(BackupError::Interrupted { name: name.to_string() }),
    }
}

/// `etcdops backup run`: checks the target, saves a verified snapshot
/// (into the target directory itself, or a staging directory for S3),
/// stores it and then its sidecar, verifies what was stored, and prunes.
pub async fn run(
    agents: &Agents,
    cluster: &Cluster,
    target: &Target,
    retention: &Retention,
    opts: &RunOptions,
) -> Result<RunOutcome, BackupError> {
    target.check().await?;
    let name = catalog::backup_name(&cluster.name, time::OffsetDateTime::now_utc());
    let sidecar = catalog::sidecar_name(&name);
    let (staging, dir) = match target {
        Target::Local(local) => (None, local.dir().to_path_buf()),
        Target::S3(_) => {
            let tmp = tempfile::Builder::new()
                .prefix("etcdops-backup-")
                .tempdir()
                .map_err(|source| BackupError::Staging {
                    dir: std::env::temp_dir().display().to_string(),
                    source,
                })?;
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    };
    let save_opts = SaveOptions {
        member: opts.member.clone(),
        out: dir.join(&name),
        progress: opts.progress,
        without_quorum: false,
    };
    let saved = save::save(agents, cluster, &save_opts)
        .await
        .map_err(|e| match e {
            SaveError::Write { source, .. } if staging.is_none() && local::is_full(&source) => {
                BackupError::Target(TargetError::Full {
                    target: target.url().to_string(),
                    name: name.clone(),
                })
            }
            other => BackupError::Save(other),
        })?;
    let url = target_object_url(target, &name);
    tracing::info!(%url, member = %saved.meta.member_name, "snapshot saved; storing it");

    let sidecar_bytes = std::fs::read(&saved.sidecar).map_err(|source| TargetError::Io {
        target: target.url().to_string(),
        what: "cannot read the sidecar just written".into(),
        source,
    })?;
    interruptible(&name, async { Ok(target.put_file(&name, &saved.path).await?) }).await?;
    if staging.is_some() {
        // The sidecar last: until it is there the backup counts as incomplete.
        let put = interruptible(&name, async {
            Ok(target.put_bytes(&sidecar, sidecar_bytes.clone()).await?)
        })
        .await;
        if let Err(e) = put {
            let _ = target.delete(&name).await;
            return Err(e);
        }
    }
    drop(staging);

    let verified = match verify(target, &name, &sidecar, &saved.meta).await {
        Ok(checks) => checks,
        Err(message) => {
            let _ = target.delete(&sidecar).await;
            return Err(BackupError::Verify { url, message });
        }
    };
    let stored = Stored {
        name,
        sidecar,
        url,
        meta: saved.meta,
        why: saved.why,
        verified,
    };

    let prune = if !opts.prune {
        PruneStep::Skipped("--no-prune".to_string())
    } else if retention.is_empty() {
        PruneStep::Skipped("no retention policy in the fleet file's [clusters.backup]".to_string())
    } else {
        match prune(
            target,
            &cluster.name,
            retention,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            false,
        )
        .await
        {
            Ok(pruned) => PruneStep::Done(pruned),
            Err(e) => PruneStep::Failed(e.to_string()),
        }
    };
    Ok(RunOutcome { stored, prune })
}

fn target_object_url(target: &Target, name: &str) -> String {
    format!("{}/{name}", target.url().trim_end_matches('/'))
}

/// Reads back what was stored: the snapshot's size, the sidecar, and for a
/// local target the sha256 of every byte. Returns the checks made.
async fn verify(
    target: &Target,
    name: &str,
    sidecar: &str,
    meta: &SnapshotMeta,
) -> Result<Vec<&'static str>, String> {
    let size = target.size(name).await.map_err(|e| e.to_string())?;
    match size {
        None => return Err("the stored snapshot is missing".to_string()),
        Some(size) if size != meta.size => {
            return Err(format!("{size} bytes stored, {} bytes saved", meta.size));
        }
        Some(_) => {}
    }
    let text = target.read(sidecar).await.map_err(|e| e.to_string())?;
    let stored: SnapshotMeta =
        serde_json::from_slice(&text).map_err(|e| format!("the stored sidecar does not parse: {e}"))?;
    if &stored != meta {
        return Err("the stored sidecar differs from the one written".to_string());
    }
    let mut checks = vec!["size", "sidecar"];
    if let Target::Local(local) = target {
        let (_, sha256) = local.hash_snapshot(name).await.map_err(|e| e.to_string())?;
        if sha256 != meta.sha256 {
            return Err(format!(
                "sha256 {sha256} re-read, the sidecar says {}",
                meta.sha256
            ));
        }
        checks.push("sha256");
    }
    Ok(checks)
}

/// `etcdops backup list`: the cluster's backups in the target, newest first.
pub async fn list(target: &Target, cluster: &str) -> Result<Vec<BackupEntry>, BackupError> {
    Ok(catalog::catalog(target, cluster).await?)
}

/// The newest verified backup of `cluster` in the target.
pub async fn latest(target: &Target, cluster: &str) -> Result<BackupEntry, BackupError> {
    let entries = catalog::catalog(target, cluster).await?;
    entries
        .into_iter()
        .find(BackupEntry::is_complete)
        .ok_or_else(|| BackupError::NoVerified {
            cluster: cluster.to_string(),
            url: target.url().to_string(),
        })
}

/// `etcdops backup prune`: applies `retention` at `now` (Unix seconds);
/// `dry_run` only plans. Refuses without a policy. Deletes a backup's
/// sidecar first, so a backup half-deleted reads as incomplete.
pub async fn prune(
    target: &Target,
    cluster: &str,
    retention: &Retention,
    now: i64,
    dry_run: bool,
) -> Result<Pruned, BackupError> {
    if retention.is_empty() {
        return Err(BackupError::NoPolicy {
            cluster: cluster.to_string(),
        });
    }
    let entries = catalog::catalog(target, cluster).await?;
    let decisions = plan_retention(&entries, retention, now);
    let mut items = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(decision) = decisions.iter().find(|d| d.name == entry.name) else {
            continue;
        };
        let mut item = PruneItem {
            keep: decision.keep,
            reason: decision.reason.clone(),
            deleted: false,
            error: None,
            entry,
        };
        if !item.keep && !dry_run {
            let result = async {
                target.delete(&catalog::sidecar_name(&item.entry.name)).await?;
                target.delete(&item.entry.name).await
            }
            .await;
            match result {
                Ok(()) => item.deleted = true,
                Err(e) => item.error = Some(e.to_string()),
            }
        }
        items.push(item);
    }
    Ok(Pruned {
        policy: retention.clone(),
        dry_run,
        items,
    })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::fleet::Member;

    fn cluster(backup: Option<&str>) -> Cluster {
        Cluster {
            name: "prod".into(),
            members: vec![Member::new("etcd1", "https://127.0.0.1:7443").expect("member")],
            backup: backup.map(|body| {
                #[derive(serde::Deserialize)]
                struct Doc {
                    backup: BackupConfig,
                }
                toml::from_str::<Doc>(&format!("[backup]\n{body}"))
                    .expect("config")
                    .backup
            }),
        }
    }

    #[test]
    fn resolves_target_and_policy_with_the_override() {
        let c = cluster(Some(
            "target = \"s3://b-1/p\"\ns3_region = \"eu-west-1\"\nkeep_last = 2\n",
        ));
        let setup = Setup::resolve(&c, None).expect("setup");
        assert_eq!(setup.url, TargetUrl::parse("s3://b-1/p").expect("url"));
        assert_eq!(setup.s3.region, "eu-west-1");
        assert_eq!(setup.retention.keep_last, NonZeroU32::new(2));
        let other = TargetUrl::parse("file:///srv/b").expect("url");
        let setup = Setup::resolve(&c, Some(&other)).expect("setup");
        assert_eq!(setup.url, other);
        assert_eq!(setup.retention.keep_last, NonZeroU32::new(2), "the policy stays");

        let bare = cluster(None);
        let err = Setup::resolve(&bare, None).expect_err("no target");
        assert!(err.to_string().contains("--target"), "{err}");
        let setup = Setup::resolve(&bare, Some(&other)).expect("override alone");
        assert!(setup.retention.is_empty());
    }

    fn write_backup(dir: &std::path::Path, name: &str, sidecar: bool) {
        std::fs::write(dir.join(name), b"0123456789").expect("write");
        if sidecar {
            let meta = SnapshotMeta {
                version: 1,
                file: name.into(),
                cluster: "prod".into(),
                cluster_id: "0".repeat(16),
                member_name: "etcd1".into(),
                member_id: "0".repeat(16),
                revision: 1,
                raft_index: 1,
                etcd_version: "3.5.16".into(),
                size: 10,
                sha256: "0".repeat(64),
                created: "2026-11-25T00:00:00Z".into(),
            };
            std::fs::write(
                dir.join(catalog::sidecar_name(name)),
                serde_json::to_vec(&meta).expect("json"),
            )
            .expect("write");
        }
    }

    #[tokio::test]
    async fn prune_refuses_without_a_policy_and_dry_runs_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            "prod-20261125T000000Z.db",
            "prod-20261125T010000Z.db",
            "prod-20261125T020000Z.db",
        ];
        write_backup(dir.path(), names[0], false);
        write_backup(dir.path(), names[1], true);
        write_backup(dir.path(), names[2], true);
        std::fs::write(dir.path().join("other-20261125T000000Z.db"), b"x").expect("write");
        let url = TargetUrl::Local(dir.path().to_path_buf());
        let target = Target::open(
            &url,
            &S3Settings::default(),
            &BackupEnv::default(),
            std::time::Duration::from_secs(1),
        )
        .expect("open");

        let err = prune(&target, "prod", &Retention::default(), 0, false)
            .await
            .expect_err("no policy");
        assert!(matches!(err, BackupError::NoPolicy { .. }), "{err}");

        let policy = Retention {
            keep_last: NonZeroU32::new(1),
            ..Retention::default()
        };
        let now = 1_795_564_800 + 3 * 3_600;
        let before = std::fs::read_dir(dir.path()).expect("dir").count();
        let planned = prune(&target, "prod", &policy, now, true).await.expect("dry run");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            before,
            "a dry run deletes nothing"
        );
        let going: Vec<&str> = planned
            .items
            .iter()
            .filter(|i| !i.keep)
            .map(|i| i.entry.name.as_str())
            .collect();
        assert_eq!(going, [names[1], names[0]]);

        let done = prune(&target, "prod", &policy, now, false).await.expect("prune");
        assert!(done.ok() && done.items.iter().filter(|i| i.deleted).count() == 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "other-20261125T000000Z.db",
                "prod-20261125T020000Z.db",
                "prod-20261125T020000Z.db.json"
            ]
        );
    }
}
