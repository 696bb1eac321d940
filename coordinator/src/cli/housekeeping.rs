//! `etcdops housekeeping`: prune kept data dir copies on every member and
//! remove stale downloaded backups (the operation is `exec/housekeeping.rs`).

use std::io::Write;
use std::time::Duration;

use clap::Args;

use crate::cli::GlobalArgs;
use crate::cli::op::JournalArgs;
use crate::duration;
use crate::exec::housekeeping::{self, HousekeepingReport, HousekeepingRequest, ItemView};
use crate::exit::ExitStatus;
use crate::output::table::{human_bytes, new_table, render};

pub(crate) const AFTER_HELP: &str = "\
Every restore, replace and rejoin keeps the old data dir as <dir>.<reason>-<UTC> beside it. This
removes those copies on every member by a retention policy (a copy is kept when --keep or
--max-age keeps it), never the newest copy, never one an unfinished, paused or failed restore may
still roll back to, and removes downloaded backups (S3 downloads of `restore --snapshot latest`,
in downloads/ beside the journal) by the same rules. A journaled operation that takes the
cluster's fence like any other (exit 3 while another operation holds it).

Examples:
  etcdops housekeeping --keep 2 --dry-run
  etcdops --cluster prod-a housekeeping --max-age 30d -w json";

/// `etcdops housekeeping` options.
#[derive(Debug, Clone, Args)]
pub struct HousekeepingArgs {
    /// Keep the newest N kept copies on each member (the newest is always kept).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Keep copies (and downloads) younger than this, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub max_age: Option<Duration>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub journal: JournalArgs,
}

fn render_items(out: &mut String, title: &str, items: &[ItemView], dry_run: bool) {
    out.push_str(title);
    out.push('\n');
    if items.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut table = new_table(&["PATH", "SIZE", "ACTION", "WHY"]);
    for i in items {
        let action = match (i.remove, dry_run) {
            (true, true) => "would remove",
            (true, false) => "removed",
            (false, _) => "kept",
        };
        table.add_row(vec![
            i.path.clone(),
            human_bytes(i.size_bytes),
            action.into(),
            i.why.clone(),
        ]);
    }
    out.push_str(&render(&table));
}

fn render_report(r: &HousekeepingReport) -> String {
    let mut out = format!(
        "housekeeping {} of cluster {}{}\n",
        r.operation,
        r.cluster,
        if r.dry_run {
            " (dry run: nothing removed)"
        } else {
            ""
        }
    );
    for m in &r.members {
        match &m.error {
            Some(e) => out.push_str(&format!("{}: FAILED: {e}\n", m.member)),
            None => render_items(
                &mut out,
                &format!("{} ({})", m.member, m.data_dir.as_deref().unwrap_or("-")),
                &m.copies,
                r.dry_run,
            ),
        }
    }
    render_items(
        &mut out,
        &format!("downloads ({})", r.downloads_dir),
        &r.downloads,
        r.dry_run,
    );
    out.push_str(&format!(
        "{} {}\n",
        if r.dry_run { "would free" } else { "freed" },
        human_bytes(r.removed_bytes)
    ));
    out
}

pub(crate) async fn run(
    global: &GlobalArgs,
    args: &HousekeepingArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = crate::cli::target::target(global)?;
    let journal_path = args.journal.path();
    let journal = args.journal.open()?;
    let downloads = journal_path
        .parent()
        .map_or_else(|| std::path::PathBuf::from("downloads"), |p| p.join("downloads"));
    let request = HousekeepingRequest {
        cluster: target.cluster.clone(),
        fleet: global.fleet.clone(),
        keep: args.keep,
        max_age: args.max_age,
        dry_run: args.dry_run,
        downloads,
    };
    let report = match housekeeping::run(&target.agents, &journal, request).await {
        Ok(r) => r,
        // The fence's own error, so the exit code says busy (3).
        Err(housekeeping::HousekeepingError::Fence(e)) => return Err(e.into()),
        Err(housekeeping::HousekeepingError::Journal(e)) => return Err(e.into()),
        Err(e @ housekeeping::HousekeepingError::NoRule) => {
            return Err(crate::plan::planner::PlanError::Usage(e.to_string()).into());
        }
    };
    crate::cli::emit(out, global.write_out, &report, render_report)?;
    Ok(ExitStatus::from_ok(report.ok))
}
