//! `etcdops restore`: a whole cluster from a verified snapshot, as one
//! journaled plan with a preflight before anything stops; and its rollback.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::operate::{Planned, RunArgs, observe, run_plan};
use crate::cli::GlobalArgs;
use crate::cli::target::target;
use crate::exec::ExecError;
use crate::exit::ExitStatus;
use crate::plan::operation::Operation;
use crate::plan::planner::OpKind;
use crate::plan::restore::{self, RestoreArgs, RestoreHost, SnapshotFacts};

pub(crate) const ABOUT: &str = "\
Restore the whole cluster from a snapshot file, as one journaled plan instead of the runbook's
per-node procedure.

Preflight, before any member is stopped: the snapshot's integrity (etcd's sha256 trailer),
every member's agent answering, twice the snapshot's size free beside every data dir, one etcd
version. Then: the snapshot is streamed to every agent at once (the cluster still serves),
each agent checks size, sha256 and trailer and restores it beside its data dir with the same
initial cluster (from the fleet and the cluster's peer URLs) and a fresh token; every member is
stopped; the restored dirs are swapped in (the old data dirs kept as <dir>.pre-restore-<time>,
never deleted); every env file gets initial-cluster-state `new` and the token; every member is
started; the restored cluster is verified (every member healthy, one cluster ID, one leader,
revision at least the snapshot's).

`--snapshot latest` takes the newest verified backup of the cluster (`etcdops backup`) from its
backup target (or --backup-target), downloading it from S3 first; its sha256 must match the
backup's sidecar.

On a terminal, going ahead takes typing the cluster's name (or --yes).

`--rollback OP` puts back the data dirs a restore kept and starts the old cluster.

Kubernetes-safe by default: where every member runs etcd 3.5 or later, the restored revision is
raised by 1,000,000,000 and marked compacted (etcdutl's --bump-revision --mark-compacted), so
watchers re-list instead of silently missing events; `--bump-revision N` picks another bump, 0
none. etcd 3.4's etcdctl cannot bump: the plan says so, and clients that saw later revisions
must re-list.";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops restore --snapshot /var/backups/etcd/prod-a-20261125T0300Z.db --dry-run
  etcdops restore --snapshot prod-a.db --yes
  etcdops restore --snapshot latest --dry-run
  etcdops restore --snapshot latest --backup-target s3://etcd-backups/prod-a --yes
  etcdops restore --rollback restore-20261125T183000Z-3f9a --yes

Exit codes: 0 restored and healthy, 1 refused (nothing stopped) or stopped (see `etcdops op
show`; resume with `etcdops op resume`), 2 usage, 3 another operation holds the cluster.";

/// `etcdops restore`
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["snapshot", "rollback"])))]
pub struct RestoreCmdArgs {
    /// The snapshot file to restore (from `etcdops snapshot save` or a backup), or `latest`:
    /// the newest verified backup in the cluster's backup target (downloaded first from S3;
    /// a file named `latest` is `./latest`).
    #[arg(long, value_name = "FILE|latest")]
    pub snapshot: Option<PathBuf>,
    /// With `--snapshot latest`: this backup target instead of the fleet file's
    /// (file:///dir or s3://bucket/prefix).
    #[arg(long, value_name = "URL")]
    pub backup_target: Option<crate::backup::target::TargetUrl>,
    /// Put back the data dirs this restore operation kept.
    #[arg(long, value_name = "OP")]
    pub rollback: Option<String>,
    /// Raise the restored revision by N and mark it compacted (etcdutl 3.5.10+ only).
    /// Default: 1000000000 where every member runs etcd 3.5 or later, 0 on 3.4;
    /// 0 turns it off.
    #[arg(long, value_name = "N")]
    pub bump_revision: Option<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The file's last 32 bytes, hex (etcd's sha256 trailer).
fn trailer_hex(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::End(-32))?;
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer)?;
    Ok(hex::encode(trailer))
}

/// `--snapshot latest`: the newest verified backup as a local file, and the
/// sha256 its sidecar recorded.
async fn latest(
    global: &GlobalArgs,
    target: &crate::cli::target::Target,
    args: &RestoreCmdArgs,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    use crate::backup::target::{BackupEnv, Target as BackupTarget};
    let setup = crate::backup::Setup::resolve(&target.cluster, args.backup_target.as_ref())?;
    let store = BackupTarget::open(&setup.url, &setup.s3, &BackupEnv::from_process(), global.timeout)?;
    let entry = crate::backup::latest(&store, &target.cluster.name).await?;
    let downloads = {
        let journal = args
            .run
            .journal
            .clone()
            .unwrap_or_else(crate::journal::default_path);
        journal
            .parent()
            .map_or_else(|| PathBuf::from("downloads"), |p| p.join("downloads"))
    };
    eprintln!(
        "latest verified backup in {}: {} ({} bytes, taken {})",
        store.url(),
        entry.name,
        entry.size,
        time::OffsetDateTime::from_unix_timestamp(entry.time)
            .map_or_else(|_| entry.time.to_string(), |t| t.to_string())
    );
    let path = store.fetch(&entry.name, &downloads).await?;
    Ok((path, entry.meta.map(|m| m.sha256)))
}

pub(crate) async fn run(
    global: &GlobalArgs,
    args: &RestoreCmdArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    if let Some(op) = &args.rollback {
        let journal = args.run.journal()?;
        let record = journal.find(op)?;
        if record.kind != OpKind::Restore {
            anyhow::bail!(crate::plan::planner::PlanError::Usage(format!(
                "operation {} is a {}, not a restore",
                record.id, record.kind
            )));
        }
        let Some(kept) = record.operation.restore() else {
            anyhow::bail!("operation {}: its journal record holds no restore", record.id);
        };
        if kept.kept.is_empty() {
            anyhow::bail!(crate::plan::planner::PlanError::Refused(format!(
                "operation {} swapped no data dir in: there is nothing to roll back",
                record.id
            )));
        }
        let plan = restore::plan_rollback(&target.cluster.name, &record.id);
        let planned = Planned {
            plan,
            operation: Operation::RestoreRollback {
                rollback_of: record.id.clone(),
            },
        };
        return run_plan(global, target, &view, planned, &args.run, out).await;
    }
    let path = args
        .snapshot
        .clone()
        .context("--snapshot or --rollback is required")?;
    let (path, sidecar_sha256) = if path.as_os_str() == "latest" {
        latest(global, &target, args).await?
    } else {
        if args.backup_target.is_some() {
            anyhow::bail!(crate::plan::planner::PlanError::Usage(
                "--backup-target goes with --snapshot latest".into()
            ));
        }
        (path, None)
    };
    let status = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || crate::snapshot::status::read_status(&path)).await??
    };
    // etcd's trailer: the database's sha256, which read_status just checked
    // against the content. The agents check every byte they receive against it.
    let db_sha256 = trailer_hex(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // The sidecar records the database's sha256, which etcd's trailer (the
    // file's last 32 bytes, checked against the content above) carries too.
    if let Some(expected) = sidecar_sha256.filter(|s| !s.is_empty()) {
        let trailer = &db_sha256;
        if &expected != trailer {
            anyhow::bail!(crate::plan::planner::PlanError::Refused(format!(
                "{}: its sha256 trailer {trailer} differs from its backup sidecar's {expected}: not the snapshot that was \
                 backed up; nothing was stopped. Pick an older backup (`etcdops backup list`) with --snapshot FILE",
                path.display()
            )));
        }
    }
    let facts = SnapshotFacts {
        path: path.display().to_string(),
        file_size: status.file_size,
        revision: status.revision,
        total_key: status.total_key,
        integrity: status.integrity.as_str().to_string(),
    };
    let membership = view.membership().to_vec();
    // A member missing from the membership gets the others' scheme (https
    // when the cluster's peers speak TLS).
    let scheme = if membership
        .iter()
        .flat_map(|e| &e.peer_urls)
        .any(|u| u.starts_with("https://"))
    {
        "https"
    } else {
        "http"
    };
    let hosts: Vec<RestoreHost> = view
        .members
        .iter()
        .zip(&target.cluster.members)
        .map(|(m, fleet)| RestoreHost {
            name: m.name.clone(),
            unreachable: (!m.agent_answered).then(|| m.unreachable.clone().unwrap_or_default()),
            fs_free_bytes: m.fs_free_bytes,
            etcd_version: (!m.etcd_version.is_empty()).then(|| m.etcd_version.clone()),
            peer_url: membership
                .iter()
                .find(|e| e.name == m.name)
                .and_then(|e| e.peer_urls.first().cloned())
                .unwrap_or_else(|| format!("{scheme}://{}:2380", fleet.agent.host())),
        })
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let versions: Vec<Option<String>> = hosts.iter().map(|h| h.etcd_version.clone()).collect();
    let bump_revision = args
        .bump_revision
        .unwrap_or_else(|| restore::default_bump(&versions));
    let spec =
        restore::preflight(&target.cluster.name, &facts, &hosts, bump_revision, now).map_err(|findings| {
            ExecError::Unsafe {
                cluster: target.cluster.name.clone(),
                findings,
            }
        })?;
    let restore_args = RestoreArgs {
        snapshot: std::path::absolute(&path).unwrap_or(path),
        file_size: facts.file_size,
        db_sha256,
        revision: facts.revision,
        bump_revision,
        initial_cluster: spec.initial_cluster.clone(),
        token: spec.token.clone(),
        peer_urls: hosts
            .iter()
            .map(|h| (h.name.clone(), h.peer_url.clone()))
            .collect(),
        staged: Default::default(),
        kept: Default::default(),
    };
    let plan = restore::plan_restore(&target.cluster.name, &spec);
    let planned = Planned {
        plan,
        operation: Operation::Restore {
            restore: restore_args,
        },
    };
    run_plan(global, target, &view, planned, &args.run, out).await
}
