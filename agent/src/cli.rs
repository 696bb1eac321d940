//! The `etcdops-agent` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// etcdops-agent: the etcdops host agent.
///
/// Runs on every etcd host and serves the etcdops agent API over mutual TLS.
/// It is the only etcdops component that touches the host: the etcd unit,
/// etcd's environment file and the data dir. Only clients presenting a
/// certificate of the fleet CA whose role allows the call may make it
/// (observer: reads; operator, or the older coordinator: everything); every
/// mutating or refused call is written to the audit trail.
#[derive(Debug, Parser)]
#[command(
    name = "etcdops-agent",
    version,
    after_help = "Exit status: 0 after a clean shutdown (SIGTERM or SIGINT) or a config that checks out, 1 on a runtime error, 2 on an invalid config, 78 when the host is not ready for the agent (the config, a certificate, key or CA missing, or a path the agent writes read-only; the systemd unit does not restart on 2 or 78).\n\nExamples:\n  etcdops-agent --config /etc/etcdops/agent.toml\n  etcdops-agent --check-config /etc/etcdops/agent.toml\n  etcdops-agent probe-disk --dir /var/lib/etcd"
)]
struct Args {
    /// The agent configuration file (TOML).
    #[arg(
        short,
        long,
        env = "ETCDOPS_AGENT_CONFIG",
        default_value = "/etc/etcdops/agent.toml"
    )]
    config: PathBuf,
    /// Check a configuration file (PATH, default: --config), its TLS files
    /// and that the paths the agent writes are writable here, as the agent
    /// does before it starts; print `ok: PATH` or the one-line error, then
    /// exit (0 ok, 2 invalid, 78 missing files or read-only paths). Starts
    /// nothing.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// Without a subcommand, the agent serves its API.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands that do one thing and exit, without serving.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(
        about = crate::disk::cli::ABOUT,
        long_about = crate::disk::cli::LONG_ABOUT,
        after_help = crate::disk::cli::AFTER_HELP
    )]
    ProbeDisk(crate::disk::cli::ProbeDiskArgs),
    /// Write the agent's man pages (section 8) into a directory (for packaging).
    #[command(hide = true)]
    GenerateManpages {
        /// Where to write etcdops-agent.8 and etcdops-agent-probe-disk.8.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    etcdops_certs::install_crypto_provider();
    let args = Args::parse();
    if args.command.is_some() || args.check_config.is_some() {
        crate::telemetry::init(None);
    }
    if let Some(Command::ProbeDisk(probe)) = &args.command {
        return crate::disk::cli::run(probe);
    }
    if let Some(Command::GenerateManpages { out_dir }) = &args.command {
        return generate_manpages(out_dir);
    }
    if let Some(path) = &args.check_config {
        return check_config(path.as_deref().unwrap_or(&args.config));
    }
    // The same checks as --check-config, before anything is bound: a host
    // not ready for the agent is one line in the journal and in systemd's
    // STATUS=, and an exit status the unit does not restart on.
    let checked = match crate::preflight::check(&args.config) {
        Ok(checked) => checked,
        Err(e) => {
            let line = e.one_line();
            eprintln!("error: {line}");
            crate::notify::status(&format!("not started: {line}"));
            return ExitCode::from(e.exit_code());
        }
    };
    let config = checked.config;
    // Traces only with an OTLP endpoint (OTEL_* or [telemetry]); a broken one stops nothing.
    let telemetry = match crate::telemetry::Telemetry::start(
        config.telemetry.otlp_endpoint.as_deref(),
        &checked.identity.name,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warning: {e}; running without traces");
            None
        }
    };
    crate::telemetry::init(telemetry.as_ref());
    if let Some(t) = &telemetry {
        tracing::info!(endpoint = %t.endpoint(), "exporting trace spans (OTLP)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // etcd-client's futures nest deeply; debug builds overflowed 2 MiB on Compact.
        .thread_stack_size(8 * 1024 * 1024)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(crate::server::run(config, shutdown_signal()));
    drop(runtime);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {line}");
            crate::notify::status(&format!("failed: {line}"));
            ExitCode::FAILURE
        }
    }
}

/// `--check-config PATH`: the checks the agent runs before it starts
/// ([`crate::preflight`]); `ok: PATH (agent ...)` on stdout and 0, or the
/// one-line error on stderr and its exit status (2 or 78).
fn check_config(path: &Path) -> ExitCode {
    match checked_config(path) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err((line, code)) => {
            eprintln!("error: {line}");
            ExitCode::from(code)
        }
    }
}

/// The `ok: PATH (agent ...)` line, or why the agent would not start: the
/// preflight checks, then `[etcd.tls]`'s files as the agent checks them at
/// start-up (readable PEM, valid now: `etcd::check_tls_files`, exit 78 like
/// a missing file: the host needs fixing, not the config).
fn checked_config(path: &Path) -> Result<String, (String, u8)> {
    let checked = crate::preflight::check(path).map_err(|e| (e.one_line(), e.exit_code()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    crate::etcd::check_tls_files(&checked.config.etcd, &checked.identity.name, now)
        .map_err(|e| (format!("{}: {e}", path.display()), 78))?;
    Ok(format!(
        "ok: {} (agent {})",
        path.display(),
        checked.identity.describe()
    ))
}

/// `generate-manpages --out-dir DIR`: one page per visible command, from
/// the clap definitions above; the paths written on stdout.
fn generate_manpages(dir: &Path) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Args::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create the directory {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for page in pages {
        let man = clap_mangen::Man::new(page).section("8").manual("etcdops manual");
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        if let Err(e) = man.render(&mut text).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("error: cannot write the man page {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use etcdops_certs::{IssueRequest, Pki, Role};

    use super::*;

    #[test]
    fn check_config_takes_a_path_or_the_config() {
        let args = Args::try_parse_from(["etcdops-agent", "--check-config", "/x/agent.toml"]).expect("parse");
        assert_eq!(args.check_config, Some(Some(PathBuf::from("/x/agent.toml"))));
        let args =
            Args::try_parse_from(["etcdops-agent", "--config", "/y.toml", "--check-config"]).expect("parse");
        assert_eq!(args.check_config, Some(None));
        assert_eq!(args.config, PathBuf::from("/y.toml"));
        let args = Args::try_parse_from(["etcdops-agent"]).expect("parse");
        assert_eq!(args.check_config, None);
    }

    #[test]
    fn check_config_says_ok_or_why_not() {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(&dir.path().join("pki"), "test-ca", 1, false).expect("pki");
        let cert = pki
            .issue(&IssueRequest::new(Role::Agent, "etcd1").host("127.0.0.1"))
            .expect("issue");
        let config = dir.path().join("agent.toml");
        let text = format!(
            "listen = \"127.0.0.1:7443\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[etcd]\nendpoint = \"http://127.0.0.1:2379\"\n",
            pki.ca_cert_path(),
            cert.cert_path,
            cert.key_path
        );
        std::fs::write(&config, &text).expect("write");
        let line = checked_config(&config).expect("ok");
        assert!(
            line.starts_with(&format!("ok: {} (agent ", config.display())),
            "{line}"
        );
        std::fs::write(&config, text.replace("[etcd]", "bogus = 1\n[etcd]")).expect("write");
        let err = checked_config(&config).expect_err("unknown key").0;
        assert!(err.contains("bogus") && err.contains("agent.toml"), "{err}");
        let missing = dir.path().join("missing.toml");
        let err = checked_config(&missing).expect_err("missing").0;
        assert!(err.contains("missing.toml"), "{err}");
    }
}
