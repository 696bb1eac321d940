//! The executor's snapshot steps, one implementation for both: the verified
//! snapshot a disruptive operation starts with ([`SafeguardStep::Snapshot`]:
//! into the cluster's backup target through `backup::run`, stored and read
//! back with its sidecar, or into a local directory through
//! `snapshot::save`), and a majority-loss recovery's survivor snapshot
//! (`RecoverStep::SnapshotFirst`, in `recover.rs`). What was saved goes into
//! the operation's journal record, where `etcdops op show` finds it.

use etcdops_proto::v1 as pb;

use super::{Executor, StepError};
use crate::backup::{self, BackupEnv, BackupError, Setup, Target, TargetUrl};
use crate::fleet::Cluster;
use crate::plan::operation::SavedSnapshot;
use crate::plan::step::{SafeguardStep, SnapshotTo};
use crate::snapshot::save::{self, SaveError, SaveOptions};

/// What to do after a failed snapshot: nothing has changed yet.
const NEXT: &str = "nothing in the cluster was changed: fix the cause, then `etcdops op resume`; to go on without a \
                    snapshot, `etcdops op abort` and run the command again with --no-snapshot";

impl Executor {
    /// Saves a verified snapshot of a member of `cluster` (`member`, or the
    /// one `snapshot::save::choose_member` picks: a healthy, caught-up
    /// follower) into `to`. `without_quorum` accepts the named member while
    /// the cluster has no quorum (a local directory only).
    pub(super) async fn save_snapshot(
        &self,
        cluster: &Cluster,
        member: Option<String>,
        to: &SnapshotTo,
        without_quorum: bool,
    ) -> Result<SavedSnapshot, StepError> {
        match to {
            SnapshotTo::Dir { path } => {
                std::fs::create_dir_all(path).map_err(|e| {
                    StepError::look_first(format!("cannot create {}: {e}", path.display())).next(NEXT)
                })?;
                let opts = SaveOptions {
                    member,
                    out: path.clone(),
                    progress: true,
                    without_quorum,
                };
                let saved = save::save(&self.agents, cluster, &opts)
                    .await
                    .map_err(save_failed)?;
                Ok(SavedSnapshot {
                    location: saved.path.display().to_string(),
                    sidecar: saved.sidecar.display().to_string(),
                    member: saved.meta.member_name,
                    revision: saved.meta.revision,
                    size: saved.meta.size,
                    sha256: saved.meta.sha256,
                })
            }
            SnapshotTo::Backup { url } => {
                let url = TargetUrl::parse(url).map_err(|e| {
                    StepError::look_first(format!("the backup target {url} of the operation: {e}")).next(NEXT)
                })?;
                // The fleet file's S3 settings and credentials from the environment, as `backup run`.
                let setup = Setup::resolve(cluster, Some(&url)).map_err(backup_failed)?;
                let target = Target::open(
                    &setup.url,
                    &setup.s3,
                    &BackupEnv::from_process(),
                    self.agents.timeout(),
                )
                .map_err(|e| backup_failed(e.into()))?;
                let opts = backup::RunOptions {
                    member,
                    // The snapshot an operation may need is never pruned by it.
                    prune: false,
                    progress: true,
                };
                let outcome = backup::run(&self.agents, cluster, &target, &setup.retention, &opts)
                    .await
                    .map_err(backup_failed)?;
                let stored = outcome.stored;
                Ok(SavedSnapshot {
                    sidecar: setup.url.object_url(&stored.sidecar),
                    location: stored.url,
                    member: stored.meta.member_name,
                    revision: stored.meta.revision,
                    size: stored.meta.size,
                    sha256: stored.meta.sha256,
                })
            }
        }
    }

    /// A safeguard step: the verified snapshot the operation starts with,
    /// into where its plan said, recorded in the operation.
    pub(super) async fn execute_safeguard(
        &self,
        step: &SafeguardStep,
        fence: &pb::Fence,
    ) -> Result<String, StepError> {
        match step {
            SafeguardStep::Snapshot => {
                let op = &fence.operation_id;
                let Some(to) = self.operation.pre_snapshot().and_then(|s| s.to.clone()) else {
                    return Ok("no snapshot asked for (--no-snapshot)".into());
                };
                let cluster = Cluster {
                    members: self.members_now(),
                    ..self.cluster.clone()
                };
                let saved = self.save_snapshot(&cluster, None, &to, false).await?;
                self.journal
                    .update(op, |r| {
                        if let Some(s) = r.operation.pre_snapshot_mut() {
                            s.saved = Some(saved.clone());
                        }
                    })
                    .map_err(|e| {
                        StepError::look_first(format!(
                            "the snapshot {} was saved, but the journal could not record it: {e}",
                            saved.location
                        ))
                    })?;
                Ok(format!(
                    "{} ({} bytes, revision {}, from {}; sidecar {}): `etcdops restore --snapshot` brings this state back",
                    saved.location, saved.size, saved.revision, saved.member, saved.sidecar
                ))
            }
        }
    }
}

/// A failed save: an agent that could not be reached, or a Ctrl-C, is safe
/// to retry; anything else (no healthy member, verification, the disk) is
/// looked at first.
fn save_failed(e: SaveError) -> StepError {
    match &e {
        SaveError::Interrupted => StepError::retry(e.to_string())
            .next("nothing in the cluster was changed: `etcdops op resume` takes the snapshot again"),
        SaveError::Agent(agent) => {
            let failed = StepError::from_agent(&agent.member, agent);
            if failed.next.is_some() {
                failed
            } else {
                failed.next(NEXT)
            }
        }
        _ => StepError::look_first(e.to_string()).next(NEXT),
    }
}

fn backup_failed(e: BackupError) -> StepError {
    match e {
        BackupError::Save(e) => save_failed(e),
        other => StepError::look_first(other.to_string()).next(NEXT),
    }
}
