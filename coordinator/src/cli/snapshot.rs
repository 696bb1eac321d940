//! `etcdops snapshot save|status`.

use std::io::Write;

use clap::Subcommand;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;

/// `etcdops snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a verified snapshot of the cluster through a member's agent.
    #[command(long_about = crate::snapshot::save::LONG_ABOUT, after_help = crate::snapshot::save::AFTER_HELP)]
    Save(crate::snapshot::save::SaveArgs),
    /// Show a snapshot file's hash, revision, key count and size (like `etcdctl snapshot status`).
    #[command(long_about = crate::snapshot::status::LONG_ABOUT, after_help = crate::snapshot::status::AFTER_HELP)]
    Status(crate::snapshot::status::StatusArgs),
}

pub(crate) async fn run(
    global: &GlobalArgs,
    command: &SnapshotCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    match command {
        SnapshotCommand::Save(args) => crate::snapshot::save::run(global, args, out).await,
        SnapshotCommand::Status(args) => crate::snapshot::status::run(global, args, out),
    }
}
