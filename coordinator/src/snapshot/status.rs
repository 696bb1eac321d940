//! `etcdops snapshot status FILE`.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;

pub(crate) const LONG_ABOUT: &str = "Show a snapshot file's hash, revision, key count and size.";
pub(crate) const AFTER_HELP: &str = "Example:\n  etcdops snapshot status backup.db -w json";

/// `etcdops snapshot status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The snapshot file.
    pub file: PathBuf,
}

pub(crate) fn run(_global: &GlobalArgs, args: &StatusArgs, _out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    anyhow::bail!("snapshot status of {} is not available yet", args.file.display())
}
