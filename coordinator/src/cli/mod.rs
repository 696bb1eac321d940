//! The `etcdops` command line: arguments (clap), the runtime, and how errors and exit codes reach the user.
//!
//! Exit codes (see [`crate::exit`]): 0 success; 1 the operation failed or the
//! cluster is unhealthy; 2 usage or configuration error.
//!
//! This is the binary's edge: commands use `anyhow` with context, and
//! [`failure`] turns an error into its exit code and a hint.

mod audit;
mod backup;
mod cert_lifecycle;
mod certs;
mod check;
mod clusters;
mod drill;
mod failure;
mod fleet_import;
mod generate;
mod health;
mod housekeeping;
mod maintain;
mod member;
mod op;
mod op_control;
mod op_home;
mod operate;
mod recover;
mod restore;
mod serve;
mod snapshot;
mod status;
pub(crate) mod target;
mod upgrade;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::exit::{EXIT_CODES_HELP, ExitStatus};
use crate::output::WriteOut;
use crate::{duration, fleet, output};

pub use backup::BackupCommand;
pub use certs::{CertsCommand, CertsInitArgs, CertsIssueArgs, CertsListArgs, RoleArg};
pub use check::{CheckCommand, CheckDiskArgs};
pub use clusters::ScopeError;
pub use fleet_import::{FleetCommand, ImportArgs, ImportError};
pub use generate::{CompletionsArgs, ManpagesArgs, manpage_names};
pub use member::MemberCommand;
pub use snapshot::SnapshotCommand;

const ABOUT: &str = "Operate etcd clusters through the etcdops agent on every etcd host";

const LONG_ABOUT: &str = "\
Operate etcd clusters through the etcdops agent on every etcd host.

etcdops reads the fleet inventory (--fleet), connects to the agent of every
member of the chosen cluster (--cluster) over mutual TLS, all agents at once,
and reports on the cluster as a whole. Output follows etcdctl's conventions:
tables by default, JSON with -w json (IDs as 16-digit hex strings).

An agent that cannot be reached, refuses our certificate or does not answer
within --timeout is reported for that member; the others still answer.

Commands that change the cluster (defrag, restart, compact, alarm disarm,
recover, member add/remove/replace/promote, restore) run as plans: computed
from the cluster as observed, shown by --dry-run, confirmed (or --yes),
journaled step by step (etcdops op), re-checked before every step, stopped at
the first unsafe state, resumable; one at a time per cluster (the agents
refuse a second operation).";

const FLEET_AND_EXAMPLES: &str = "\
Fleet file (--fleet, default /etc/etcdops/fleet.toml):
  [tls]                        # the coordinator's identity and the fleet CA;
  ca = \"pki/ca.crt\"            # relative paths are relative to the fleet file
  cert = \"pki/coordinator-ops.crt\"
  key = \"pki/coordinator-ops.key\"

  [[clusters]]
  name = \"prod-a\"
  [[clusters.members]]
  name = \"etcd1\"                       # the etcd member name
  agent = \"https://198.18.0.11:7443\"   # its agent

Examples:
  etcdops status                           the one cluster in the fleet
  etcdops --cluster prod-a health -w json  one of several clusters, as JSON
  etcdops status --all-clusters            every cluster, grouped (--cluster 'prod-*' for some)
  ansible-inventory -i hosts.ini --list | etcdops fleet import --ansible-inventory - --dry-run
  etcdops member list --timeout 2s
  etcdops check disk                       fdatasync latency on every member's disk
  etcdops defrag --rolling --dry-run        the plan, without changing anything
  etcdops restart --rolling --yes
  etcdops member replace etcd2 --with etcd4 --agent https://198.18.0.14:7443 --yes
  etcdops op list                          operations and their steps (journal)
  etcdops certs init --dir /etc/etcdops/pki

Environment:
  ETCDOPS_FLEET  the fleet file, as --fleet
  RUST_LOG       log filter (e.g. debug) when no -v is given; logs go to stderr
  OTEL_EXPORTER_OTLP_ENDPOINT  export traces (OTLP/gRPC, e.g. http://collector:4317) of
                 the command, its steps and the agents' work; OTEL_SERVICE_NAME etc. apply";

/// The end of `--help`: the fleet file, examples, environment and exit codes.
fn after_long_help() -> String {
    format!("{FLEET_AND_EXAMPLES}\n\n{EXIT_CODES_HELP}")
}

/// `etcdops`: the whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "etcdops",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES_HELP,
    after_long_help = after_long_help(),
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The fleet inventory: clusters, members, agents and the coordinator's TLS files.
    #[arg(long, global = true, value_name = "PATH", env = "ETCDOPS_FLEET", default_value = fleet::DEFAULT_PATH)]
    pub fleet: PathBuf,

    /// The cluster to work on; required when the fleet has several. A glob (`'prod-*'`)
    /// names several for status, health, check disk|hashkv, backup list and op list.
    #[arg(long, global = true, value_name = "NAME|GLOB")]
    pub cluster: Option<String>,

    /// Every cluster of the fleet, output grouped by cluster (status, health, check disk|hashkv,
    /// backup list, op list); exit 1 when any cluster has a problem.
    #[arg(long, global = true)]
    pub all_clusters: bool,

    /// With --all-clusters or --cluster GLOB: how many clusters are read at once (each
    /// cluster's agents all at once).
    #[arg(long, global = true, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: u16,

    /// Output format: `table` for people, `json` for scripts (schema in OUTPUT.md).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_name = "FORMAT",
        value_enum,
        default_value_t = WriteOut::Table
    )]
    pub write_out: WriteOut,

    /// How long each agent gets to connect and answer, e.g. 5s, 500ms, 1m.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = duration::parse)]
    pub timeout: Duration,

    /// More logging on stderr: -v info, -vv debug, -vvv trace (overrides RUST_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The subcommands.
// New commands (e.g. `sandbox`) add a variant here and an arm in `run`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every member's etcd, unit and data dir status, like `etcdctl endpoint status`.
    #[command(long_about = status::LONG_ABOUT, after_help = status::AFTER_HELP)]
    Status,

    /// Check every member with a linearizable read, like `etcdctl endpoint health`.
    #[command(long_about = health::LONG_ABOUT, after_help = health::AFTER_HELP)]
    Health,

    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),

    /// Checks of the cluster and the hosts under it: `disk` (every member's fdatasync latency), `hashkv` (every member's data alike).
    #[command(subcommand)]
    Check(CheckCommand),

    /// The fleet PKI: a CA, and certificates for agents, coordinators and etcd.
    #[command(subcommand, long_about = certs::LONG_ABOUT)]
    Certs(CertsCommand),

    /// Snapshots: save a verified one through an agent; inspect a file.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),

    /// Backup sets: verified snapshots in a directory or S3 bucket, listed and pruned by policy.
    #[command(subcommand, long_about = backup::LONG_ABOUT)]
    Backup(BackupCommand),

    /// Defragment members one at a time, leader last after moving leadership (journaled plan).
    #[command(long_about = maintain::DEFRAG_ABOUT, after_help = maintain::DEFRAG_AFTER_HELP)]
    Defrag(maintain::DefragArgs),

    /// Restart etcd on every member, one at a time, leader last (journaled plan).
    #[command(long_about = maintain::RESTART_ABOUT, after_help = maintain::RESTART_AFTER_HELP)]
    Restart(maintain::RestartArgs),

    /// Compact the key history, keeping the newest revisions or a time span.
    #[command(long_about = maintain::COMPACT_ABOUT, after_help = maintain::COMPACT_AFTER_HELP)]
    Compact(maintain::CompactArgs),

    /// Alarms (NOSPACE, CORRUPT): list, or disarm.
    #[command(subcommand)]
    Alarm(maintain::AlarmCommand),

    /// Recovery: `nospace`, or `--force-new-cluster` after the majority is lost.
    #[command(long_about = recover::ABOUT, after_help = recover::AFTER_HELP)]
    Recover(recover::RecoverCmd),

    /// Restore the whole cluster from a verified snapshot (journaled plan), or roll a restore back.
    #[command(long_about = restore::ABOUT, after_help = restore::AFTER_HELP)]
    Restore(restore::RestoreCmdArgs),

    /// Prune kept data dir copies on every member and stale downloaded backups (journaled, fenced).
    #[command(after_help = housekeeping::AFTER_HELP)]
    Housekeeping(housekeeping::HousekeepingArgs),
    /// Upgrade etcd on every member to the next release, leader last (journaled plan), or roll it back.
    #[command(long_about = upgrade::ABOUT, after_help = upgrade::AFTER_HELP)]
    Upgrade(upgrade::UpgradeCmdArgs),

    /// The fleet file: `import` writes it from an Ansible inventory.
    #[command(subcommand)]
    Fleet(FleetCommand),

    /// The operation journal: list, show, resume or abort operations.
    #[command(subcommand, long_about = op::LONG_ABOUT)]
    Op(op::OpCommand),

    /// Run scheduled jobs (backups, drills, compaction, defragmentation, watches) until stopped.
    #[command(long_about = serve::ABOUT, after_help = serve::AFTER_HELP)]
    Serve(serve::ServeArgs),
    /// The agents' audit trails: who called what, refused calls included.
    #[command(subcommand)]
    Audit(audit::AuditCommand),

    /// A real local etcd cluster with an agent per member, to try etcdops on.
    #[command(subcommand, long_about = SANDBOX_ABOUT)]
    Sandbox(SandboxCommand),

    /// Print the shell completion script for bash, zsh or fish.
    #[command(long_about = generate::COMPLETIONS_ABOUT, after_help = generate::COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),

    /// Write one man page per command into a directory (for packaging).
    #[command(hide = true)]
    GenerateManpages(ManpagesArgs),
}

const SANDBOX_ABOUT: &str = "A real local etcd cluster to try etcdops on.\n\n\
`up` generates a PKI, starts N etcd members (the installed etcd binary) on 127.0.0.11.. \
(client port 2379, peer port 2380), each supervised by its own etcdops-agent (process backend, \
agent API on port 7443 over mutual TLS), writes a fleet file, waits until the cluster is healthy \
and prints the commands to try next. `down` stops every agent and etcd it started; files are kept, \
and `up` on the same directory starts the same cluster again.";

/// `etcdops sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start the sandbox cluster (or restart a stopped one in the same directory).
    #[command(
        after_help = "Examples:\n  etcdops sandbox up\n  etcdops sandbox up --members 5 --dir /tmp/sb\n  ETCDOPS_FLEET=/tmp/sb/fleet.toml etcdops status"
    )]
    Up(crate::sandbox::UpArgs),
    /// Stop everything the sandbox started; keep its files.
    #[command(after_help = "Example:\n  etcdops sandbox down --dir /tmp/sb")]
    Down(crate::sandbox::DownArgs),
}

/// The binary's `main`: parses `std::env::args`, runs, returns the exit code.
pub fn main() -> ExitCode {
    let code = run_with_args(std::env::args_os());
    // The last spans (the command's own) go out before the process ends.
    crate::telemetry::shutdown();
    code
}

/// Runs `etcdops` with these arguments (the first is the program name),
/// printing to the process's stdout and stderr. For tests and the sandbox.
pub fn run_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_io(args, &mut std::io::stdout(), &mut std::io::stderr()).into()
}

/// Runs `etcdops` with these arguments, writing reports to `out` and
/// errors to `err`; returns the [`ExitStatus`].
///
/// It builds its own tokio runtime. Called from inside a runtime, it runs
/// on a thread of its own and blocks the calling thread until done, so
/// agents served by the caller's runtime need a multi-thread runtime
/// (`#[tokio::test(flavor = "multi_thread")]`).
pub fn run_with_io<I, T>(args: I, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    etcdops_certs::install_crypto_provider();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return print_clap_error(&e, out, err),
    };
    init_tracing(cli.global.verbose);
    let status = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(|| execute(&cli, out, err)).join()).unwrap_or(ExitStatus::Failed)
    } else {
        execute(&cli, out, err)
    };
    crate::telemetry::flush();
    status
}

fn print_clap_error(e: &clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> ExitStatus {
    let text = e.render().to_string();
    // Nothing sensible is left to do when stdout or stderr is gone.
    let _ = if e.use_stderr() {
        err.write_all(text.as_bytes())
    } else {
        out.write_all(text.as_bytes())
    };
    if e.exit_code() == 0 {
        ExitStatus::Ok
    } else {
        ExitStatus::Usage
    }
}

fn execute(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitStatus {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))
        .and_then(|runtime| runtime.block_on(run(cli, out)));
    match result {
        Ok(status) => {
            let _ = out.flush();
            status
        }
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(err, "error: {}", failure::message(&e));
            if let Some(hint) = failure::hint(&e) {
                let _ = writeln!(err, "hint: {hint}");
            }
            failure::exit_status(&e)
        }
    }
}

/// Runs a parsed command: prints its report to `out` and says how to exit.
/// Errors are returned for the caller to print (see [`failure`]).
pub async fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    use tracing::Instrument;
    let name = command_name(&cli.command);
    let span = tracing::info_span!("command", otel.name = %format!("etcdops {name}"), command = name);
    run_command(cli, out).instrument(span).await
}

/// The command's name for its span: `defrag`, `op resume`, ...
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Status => "status",
        Command::Health => "health",
        Command::Member(MemberCommand::List) => "member list",
        Command::Member(_) => "member",
        Command::Check(_) => "check",
        Command::Certs(_) => "certs",
        Command::Snapshot(_) => "snapshot",
        Command::Backup(_) => "backup",
        Command::Defrag(_) => "defrag",
        Command::Restart(_) => "restart",
        Command::Compact(_) => "compact",
        Command::Alarm(_) => "alarm",
        Command::Recover(_) => "recover",
        Command::Restore(_) => "restore",
        Command::Fleet(_) => "fleet import",
        Command::Op(op::OpCommand::List(_)) => "op list",
        Command::Op(op::OpCommand::Show(_)) => "op show",
        Command::Op(op::OpCommand::Resume(_)) => "op resume",
        Command::Op(op::OpCommand::Abort(_)) => "op abort",
        Command::Op(op::OpCommand::Prune(_)) => "op prune",
        Command::Housekeeping(_) => "housekeeping",
        Command::Upgrade(_) => "upgrade",
        Command::Serve(_) => "serve",
        Command::Audit(_) => "audit",
        Command::Sandbox(_) => "sandbox",
        Command::Completions(_) => "completions",
        Command::GenerateManpages(_) => "generate-manpages",
    }
}

async fn run_command(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let global = &cli.global;
    if let Some(command) = one_cluster_only(&cli.command) {
        clusters::refuse_many(global, command)?;
    }
    if let Some(command) = needs_operator(&cli.command) {
        target::require_operator(global, command)?;
    }
    match &cli.command {
        Command::Status => status::run(global, out).await,
        Command::Health => health::run(global, out).await,
        Command::Member(MemberCommand::List) => member::list(global, out).await,
        Command::Member(command) => member::change(global, command, out).await,
        Command::Check(command) => check::run(global, command, out).await,
        Command::Certs(CertsCommand::CheckExpiration(args)) => {
            cert_lifecycle::check_expiration(global, args, out).await
        }
        Command::Certs(CertsCommand::Renew(args)) => cert_lifecycle::renew(global, args, out).await,
        Command::Certs(CertsCommand::RotateCa(args)) => cert_lifecycle::rotate_ca(global, args, out).await,
        Command::Certs(command) => certs::run(global, command, out),
        Command::Snapshot(command) => snapshot::run(global, command, out).await,
        Command::Backup(command) => backup::run(global, command, out).await,
        Command::Defrag(args) => maintain::defrag(global, args, out).await,
        Command::Restart(args) => maintain::restart(global, args, out).await,
        Command::Compact(args) => maintain::compact(global, args, out).await,
        Command::Alarm(command) => maintain::alarm(global, command, out).await,
        Command::Recover(command) => recover::run(global, command, out).await,
        Command::Restore(args) => restore::run(global, args, out).await,
        Command::Housekeeping(args) => housekeeping::run(global, args, out).await,
        Command::Upgrade(args) => upgrade::run(global, args, out).await,
        Command::Fleet(FleetCommand::Import(args)) => fleet_import::import(global, args, out),
        Command::Op(op::OpCommand::List(args)) => op::list(global, args, out).await,
        Command::Op(op::OpCommand::Show(args)) => op::show(global, args, out).await,
        Command::Op(op::OpCommand::Resume(args)) => op_control::resume(global, args, out).await,
        Command::Op(op::OpCommand::Abort(args)) => op_control::abort(global, args, out).await,
        Command::Op(op::OpCommand::Prune(args)) => op::prune(global, args, out).await,
        Command::Serve(args) => serve::run(global, args, out).await,
        Command::Audit(command) => audit::run(global, command, out).await,
        Command::Sandbox(SandboxCommand::Up(args)) => Ok(crate::sandbox::up(args, out).await?),
        Command::Sandbox(SandboxCommand::Down(args)) => Ok(crate::sandbox::down(args, out)?),
        Command::Completions(args) => generate::completions(args, out),
        Command::GenerateManpages(args) => generate::manpages(args, out),
    }
}

/// The name of a command that works on one cluster only (refuses
/// `--all-clusters` / `--cluster GLOB`); None for those that take several.
fn one_cluster_only(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Status | Command::Health | Command::Check(_) => return None,
        Command::Backup(BackupCommand::List(_)) | Command::Op(op::OpCommand::List(_)) => return None,
        Command::Certs(CertsCommand::Renew(_)) => "certs renew",
        Command::Certs(CertsCommand::RotateCa(_)) => "certs rotate-ca",
        Command::Certs(_) | Command::Sandbox(_) | Command::Fleet(_) | Command::Serve(_) => return None,
        Command::Completions(_) | Command::GenerateManpages(_) => return None,
        Command::Member(_) => "member",
        Command::Snapshot(_) => "snapshot",
        Command::Backup(_) => "backup run|prune|drill",
        Command::Defrag(_) => "defrag",
        Command::Restart(_) => "restart",
        Command::Compact(_) => "compact",
        Command::Alarm(_) => "alarm",
        Command::Recover(_) => "recover",
        Command::Restore(_) => "restore",
        Command::Housekeeping(_) => "housekeeping",
        Command::Upgrade(_) => "upgrade",
        Command::Op(_) => "op show|resume|abort|prune",
        Command::Audit(_) => "audit show",
    })
}

/// The name of a command that needs the operator role on the agents (it
/// changes something, probes disks or reads the audit trail); None for
/// those an observer certificate may run, among them the `--dry-run` of the
/// rolling maintenance commands (planned from what observers may read).
fn needs_operator(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Defrag(maintain::DefragArgs { run, .. })
        | Command::Restart(maintain::RestartArgs { run, .. })
        | Command::Compact(maintain::CompactArgs { run, .. })
        | Command::Alarm(maintain::AlarmCommand::Disarm(run))
            if run.dry_run =>
        {
            return None;
        }
        Command::Member(MemberCommand::List) => return None,
        Command::Member(_) => "member add|remove|replace|promote",
        Command::Check(CheckCommand::Disk(_)) => "check disk",
        Command::Defrag(_) => "defrag",
        Command::Restart(_) => "restart",
        Command::Compact(_) => "compact",
        Command::Alarm(maintain::AlarmCommand::Disarm(_)) => "alarm disarm",
        Command::Recover(_) => "recover",
        Command::Restore(_) => "restore",
        Command::Op(op::OpCommand::Resume(_)) => "op resume",
        Command::Op(op::OpCommand::Abort(_)) => "op abort",
        Command::Audit(_) => "audit show",
        _ => return None,
    })
}

/// Prints a report as JSON or as the command's text.
pub(crate) fn emit<T: Serialize>(
    out: &mut dyn Write,
    format: WriteOut,
    report: &T,
    text: fn(&T) -> String,
) -> anyhow::Result<()> {
    let rendered = match format {
        WriteOut::Json => output::to_json(report)?,
        WriteOut::Table => text(report),
    };
    out.write_all(rendered.as_bytes())
        .map_err(|e| anyhow::Error::new(e).context("cannot write the output"))?;
    Ok(())
}

/// Logs to stderr: `-v` levels win over `RUST_LOG`; the default is warnings
/// only. Traces with `OTEL_EXPORTER_OTLP_*ENDPOINT` (see [`crate::telemetry`]).
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("info,etcdops_coordinator=debug,etcdops_certs=debug"),
        _ => EnvFilter::new("trace"),
    };
    // Already initialised (a second run in the same process) is fine.
    crate::telemetry::init(filter);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run(args: &[&str]) -> (ExitStatus, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut argv = vec!["etcdops"];
        argv.extend_from_slice(args);
        let status = run_with_io(argv, &mut out, &mut err);
        (
            status,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "etcdops",
            "status",
            "-w",
            "json",
            "--timeout",
            "500ms",
            "--cluster",
            "b",
        ])
        .expect("parse");
        assert_eq!(cli.global.write_out, WriteOut::Json);
        assert_eq!(cli.global.timeout, Duration::from_millis(500));
        assert_eq!(cli.global.cluster.as_deref(), Some("b"));
        let cli =
            Cli::try_parse_from(["etcdops", "--fleet", "/x.toml", "-vv", "member", "list"]).expect("parse");
        assert_eq!(cli.global.fleet, PathBuf::from("/x.toml"));
        assert_eq!(cli.global.verbose, 2);
        assert!(matches!(cli.command, Command::Member(MemberCommand::List)));
    }

    #[test]
    fn help_documents_exit_codes() {
        let (status, out, _) = run(&["--help"]);
        assert_eq!(status, ExitStatus::Ok);
        assert!(
            out.contains("Exit codes:") && out.contains("2  usage or configuration error"),
            "{out}"
        );
        assert!(out.contains("[[clusters.members]]"), "{out}");
        let (status, out, _) = run(&["-h"]);
        assert_eq!(status, ExitStatus::Ok);
        assert!(out.contains("Exit codes:"), "{out}");
        let (status, out, _) = run(&["status", "--help"]);
        assert_eq!(status, ExitStatus::Ok);
        assert!(out.contains("Examples:"), "{out}");
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["frobnicate"][..],
            &["status", "--timeout", "5"],
            &["status", "-w", "yaml"],
            &[],
            &["certs", "issue", "admin", "--name", "x", "--dir", "/tmp"],
        ] {
            let (status, _, err) = run(args);
            assert_eq!(status, ExitStatus::Usage, "{args:?}: {err}");
            assert!(!err.is_empty(), "{args:?}");
        }
        let (_, _, err) = run(&["status", "--timeout", "5"]);
        assert!(err.contains("5s"), "{err}");
    }

    #[test]
    fn a_missing_fleet_file_is_a_config_error_with_a_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = dir.path().join("nope.toml");
        let fleet = fleet.to_str().expect("utf-8 path");
        let (status, out, err) = run(&["--fleet", fleet, "status"]);
        assert_eq!(status, ExitStatus::Usage);
        assert!(out.is_empty());
        assert!(err.starts_with("error: cannot read the fleet file"), "{err}");
        assert!(
            err.contains("hint: pass --fleet PATH or set ETCDOPS_FLEET"),
            "{err}"
        );
    }

    #[test]
    fn several_clusters_need_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.toml");
        let text = "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n\
            [[clusters]]\nname = \"a\"\n[[clusters.members]]\nname = \"e1\"\nagent = \"https://127.0.0.1:1\"\n\
            [[clusters]]\nname = \"b\"\n[[clusters.members]]\nname = \"e1\"\nagent = \"https://127.0.0.1:1\"\n";
        std::fs::write(&path, text).expect("write");
        let fleet = path.to_str().expect("utf-8 path");
        let (status, _, err) = run(&["--fleet", fleet, "health"]);
        assert_eq!(status, ExitStatus::Usage);
        assert!(
            err.contains("several clusters (a, b)") && err.contains("hint:"),
            "{err}"
        );
        let (status, _, err) = run(&["--fleet", fleet, "--cluster", "a", "health"]);
        assert_eq!(status, ExitStatus::Usage, "missing TLS files are a config error");
        assert!(
            err.contains("ca.crt") && err.contains("hint: the fleet file"),
            "{err}"
        );
    }
}
