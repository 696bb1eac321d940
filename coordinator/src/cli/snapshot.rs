//! `etcdops snapshot save|status`: the command-line side (arguments, the
//! target cluster, printing); the work is in `snapshot/`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::snapshot::save::{SaveOptions, SnapshotMeta, save};
use crate::snapshot::status::{StatusReport, read_status, render_table};

/// `etcdops snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a verified snapshot of the cluster through a member's agent.
    #[command(long_about = SAVE_LONG_ABOUT, after_help = SAVE_AFTER_HELP)]
    Save(SaveArgs),
    /// Show a snapshot file's hash, revision, key count and size (like `etcdctl snapshot status`).
    #[command(long_about = STATUS_LONG_ABOUT, after_help = STATUS_AFTER_HELP)]
    Status(StatusArgs),
}

pub(crate) async fn run(
    global: &GlobalArgs,
    command: &SnapshotCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    match command {
        SnapshotCommand::Save(args) => run_save(global, args, out).await,
        SnapshotCommand::Status(args) => run_status(global, args, out),
    }
}

const SAVE_LONG_ABOUT: &str = "Save a verified snapshot of the cluster through a member's agent.";
const SAVE_AFTER_HELP: &str = "Examples:\n  etcdops snapshot save --out /var/backups/etcd/\n  etcdops snapshot save --member etcd2 --out snap.db";

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

async fn run_save(global: &GlobalArgs, args: &SaveArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let opts = SaveOptions {
        member: args.member.clone(),
        out: args.out.clone(),
        progress: true,
        without_quorum: false,
    };
    let saved = save(&target.agents, &target.cluster, &opts).await?;
    let report = SaveReport {
        path: saved.path.display().to_string(),
        sidecar: saved.sidecar.display().to_string(),
        why: saved.why,
        meta: saved.meta,
    };
    emit(out, global.write_out, &report, render_save)?;
    Ok(ExitStatus::Ok)
}

/// What `snapshot save` prints: the sidecar's fields plus where and why.
#[derive(Debug, Serialize)]
struct SaveReport {
    path: String,
    sidecar: String,
    why: String,
    #[serde(flatten)]
    meta: SnapshotMeta,
}

fn render_save(r: &SaveReport) -> String {
    format!(
        "Snapshot saved to {}\n  from member {} ({}), chosen as {}\n  revision {}, {} bytes, sha256 {} (verified)\n  metadata in {}\n",
        r.path,
        r.meta.member_name,
        r.meta.member_id,
        r.why,
        r.meta.revision,
        r.meta.size,
        r.meta.sha256,
        r.sidecar
    )
}

const STATUS_LONG_ABOUT: &str = "\
Show a snapshot file's hash, revision, key count and size, the figures
`etcdctl snapshot status` prints, and check its integrity. No etcd member or
agent is needed: the file is read directly, page by page, so snapshots of
many gigabytes use little memory.

The figures agree exactly with etcdctl (3.4 and 3.5):
  HASH        CRC-32C (Castagnoli) over every bucket's name and every key and
              value in it, buckets in name order, keys in key order; printed
              in hex in the table, as a decimal number in JSON.
  REVISION    the main revision of the newest key in the `key` bucket. It can
              be lower than the revision etcd resumes from after a restore
              (a compaction past the last write), as with etcdctl.
  TOTAL KEYS  entries in all buckets: keys, tombstones and etcd's own
              bookkeeping (meta, members, auth, leases), not just live keys.
  TOTAL SIZE  the database's size: its pages up to the high-water mark,
              without the trailer.

The database is checked as etcdctl checks it (bbolt's consistency check:
every page in bounds, reached once, and of the right type); no figures are
reported unless the whole check passes.

INTEGRITY checks what `snapshot restore` checks: a snapshot saved from a
running member (`etcdctl snapshot save`, `etcdops snapshot save`) ends with
the 32-byte SHA-256 of the database bytes before it (the file is then 32
bytes more than a multiple of 512).
  ok        the trailer is there and matches the bytes before it
  missing   there is no trailer, as in a copy of a member's member/snap/db:
            restore refuses it unless given --skip-hash-check
  mismatch  the trailer does not match: the file was changed or damaged
            after it was saved; do not restore it

The figures are printed whenever the database can be read; an integrity
other than `ok` then exits 1, with the reason on stderr. A file that is not
a bbolt database, is truncated, or whose pages are damaged is an error
saying what is wrong and where.";

const STATUS_AFTER_HELP: &str = "\
Examples:
  etcdops snapshot status backup.db
  etcdops snapshot status backup.db -w json | jq .revision
  etcdops snapshot status backup.db >/dev/null && echo restorable

JSON (fields named as etcdctl names them, so scripts can switch):
  {\"hash\": 4167905259, \"revision\": 751, \"totalKey\": 758,
   \"totalSize\": 255012864, \"sha256\": \"c7b4...\", \"integrity\": \"ok\"}

Exit codes: 0 readable and intact, 1 unreadable, damaged, or integrity
missing or mismatched, 2 usage error.";

/// `etcdops snapshot status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The snapshot file (`etcdctl snapshot save` or `etcdops snapshot save` output).
    pub file: PathBuf,
}

fn run_status(global: &GlobalArgs, args: &StatusArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let status = read_status(&args.file)?;
    emit(out, global.write_out, &StatusReport::from(&status), render_table)?;
    status.verify()?;
    Ok(ExitStatus::Ok)
}
