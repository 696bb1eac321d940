//! `etcdops snapshot save`: picks a healthy, caught-up member (a follower
//! when there is one), streams its snapshot through its agent into a temp
//! file while hashing, checks etcd's sha256 trailer and the agent's summary,
//! fsyncs, and only then renames the file into place beside a metadata
//! sidecar (`<file>.json`). A failed or interrupted save leaves no file that
//! looks like a snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agents::Agents;
use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::fleet::Cluster;

pub(crate) const LONG_ABOUT: &str = "Save a verified snapshot of the cluster through a member's agent.";
pub(crate) const AFTER_HELP: &str = "Examples:\n  etcdops snapshot save --out /var/backups/etcd/\n  etcdops snapshot save --member etcd2 --out snap.db";

/// `etcdops snapshot save` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SaveArgs {
    /// Member to snapshot. Default: a healthy, caught-up follower.
    #[arg(long)]
    pub member: Option<String>,
    /// Output file, or an existing directory to save `<cluster>-<UTC time>.db` into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// What a save needs.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Member to snapshot; `None` picks one.
    pub member: Option<String>,
    /// Output file, or an existing directory.
    pub out: PathBuf,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// The sidecar written beside every snapshot as `<file>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Schema version of this sidecar.
    pub version: u32,
    /// The snapshot's file name (no directory).
    pub file: String,
    /// The fleet's cluster name.
    pub cluster: String,
    /// etcd's cluster ID, 16 hex digits.
    pub cluster_id: String,
    pub member_name: String,
    /// 16 hex digits.
    pub member_id: String,
    /// Store revision and raft index when the snapshot started.
    pub revision: i64,
    pub raft_index: u64,
    pub etcd_version: String,
    /// File size in bytes, trailer included.
    pub size: u64,
    /// Hex sha256 of the database bytes (equal to the file's trailer).
    pub sha256: String,
    /// When the save finished, RFC 3339 UTC.
    pub created: String,
}

/// A snapshot saved and verified.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: PathBuf,
    pub sidecar: PathBuf,
    pub meta: SnapshotMeta,
    /// Why this member was chosen.
    pub why: String,
}

/// Errors of a save. Each names the member and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("snapshot save is not available yet")]
    NotReady,
}

/// Saves a verified snapshot of `cluster` (see the module docs).
pub async fn save(_agents: &Agents, _cluster: &Cluster, _opts: &SaveOptions) -> Result<Saved, SaveError> {
    Err(SaveError::NotReady)
}

/// The sidecar path of a snapshot file.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

pub(crate) async fn run(global: &GlobalArgs, args: &SaveArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let target = crate::cli::target::target(global)?;
    let opts = SaveOptions { member: args.member.clone(), out: args.out.clone(), progress: true };
    let saved = save(&target.agents, &target.cluster, &opts).await?;
    writeln!(out, "saved {}", saved.path.display())?;
    Ok(ExitStatus::Ok)
}
