//! `etcdops serve`: the long-running scheduler (see `crate::serve`).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::serve;

pub(crate) const ABOUT: &str = "\
Run scheduled jobs on the fleet's clusters until stopped (SIGTERM or Ctrl-C).

The configuration (TOML, documented example in deploy/config/serve.toml) names the fleet file,
the journal, maintenance windows and the jobs: backup, compact, defrag, health, cert-expiry,
restore-drill and housekeeping, each on one cluster with a cron schedule (5 fields, or 6 with
seconds first; UTC unless a time zone is given). One run of a job at a time; runs missed while
serve was down run once at start-up, not once per slot. Jobs that change something run as
journaled operations (`etcdops op list --journal PATH`) under the cluster's fence: a cluster
held by another operation is waited for (fence_wait), then the run is journaled as refused,
naming the holder. Compact and defrag run only inside their maintenance windows. A failing job
never stops the others. /metrics (metrics_listen) exports every job's last success, duration,
result and next run.

Start-up errors (unreadable or invalid configuration, an invalid cron expression, a cluster not
in the fleet, an unknown job kind, a window that never opens) exit 2 with the reason.
Under systemd (deploy/systemd/etcdops-serve.service) it reports READY and pings the watchdog.";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops serve --config /etc/etcdops/serve.toml
  etcdops serve --config serve.toml --check     validate, print the jobs, exit";

/// `etcdops serve` options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The serve configuration.
    #[arg(long, value_name = "PATH", env = "ETCDOPS_SERVE_CONFIG", default_value = serve::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration against the fleet, print the jobs and their next runs, and exit.
    #[arg(long)]
    pub check: bool,
}

pub(crate) async fn run(
    _global: &GlobalArgs,
    args: &ServeArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if args.check {
        let validated = serve::check(&args.config)?;
        let now = jiff::Timestamp::now();
        writeln!(
            out,
            "ok: {} ({} job(s))",
            args.config.display(),
            validated.jobs.len()
        )?;
        for job in &validated.jobs {
            let next = job
                .schedule
                .next_after(now)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into());
            writeln!(
                out,
                "  {:<28} {:<14} {:<20} next {next}",
                job.label(),
                job.kind.as_str(),
                job.schedule.expr()
            )?;
        }
        return Ok(ExitStatus::Ok);
    }
    serve::run(&args.config, shutdown_signal()).await?;
    Ok(ExitStatus::Ok)
}

/// SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
