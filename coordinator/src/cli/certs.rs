//! `etcdops certs ...`: create the fleet CA, issue certificates, list them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use etcdops_certs::pki::{CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS};
use etcdops_certs::{IssueRequest, Pki, Role};

use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::output::certs::{self, CertsReport};

pub(crate) const LONG_ABOUT: &str = "\
The fleet PKI: one CA per fleet, and certificates it signs for each role.

A PKI directory holds ca.crt and ca.key (0600), and one <role>-<name>.crt and
<role>-<name>.key (0600) per issued certificate. The role is written into the
certificate's subject, so an agent can tell an operator from an observer or
anything else.
Nothing is overwritten unless --force is given.

Keep ca.key off the etcd hosts: copy only ca.crt and each host's own files.";

/// `etcdops certs` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CertsCommand {
    /// Create the fleet CA (ca.crt, ca.key) in a directory.
    #[command(after_help = INIT_AFTER_HELP)]
    Init(CertsInitArgs),
    /// Issue a certificate signed by the fleet CA.
    #[command(long_about = ISSUE_LONG_ABOUT, after_help = ISSUE_AFTER_HELP)]
    Issue(CertsIssueArgs),
    /// List the certificates in a PKI directory with their role and expiry.
    #[command(after_help = LIST_AFTER_HELP)]
    List(CertsListArgs),
    /// Every certificate of every member (files, served on the client and peer ports, the agent's) and days left.
    #[command(long_about = crate::cli::cert_lifecycle::CHECK_ABOUT, after_help = crate::cli::cert_lifecycle::CHECK_AFTER_HELP)]
    CheckExpiration(crate::cli::cert_lifecycle::CheckExpirationArgs),
    /// Renew the members' leaf certificates from the current CA, without a restart (journaled plan).
    #[command(long_about = crate::cli::cert_lifecycle::RENEW_ABOUT, after_help = crate::cli::cert_lifecycle::RENEW_AFTER_HELP)]
    Renew(crate::cli::cert_lifecycle::RenewArgs),
    /// Replace etcd's CA in three rolling restarts (trust both, new leaves, drop the old CA; journaled plan).
    #[command(long_about = crate::cli::cert_lifecycle::ROTATE_CA_ABOUT, after_help = crate::cli::cert_lifecycle::ROTATE_CA_AFTER_HELP)]
    RotateCa(crate::cli::cert_lifecycle::RotateCaArgs),
}

const INIT_AFTER_HELP: &str = "\
Examples:
  etcdops certs init --dir /etc/etcdops/pki
  etcdops certs init --dir ./pki --name prod-fleet-ca --days 1825";

const ISSUE_LONG_ABOUT: &str = "\
Issue a certificate signed by the fleet CA in --dir, for one role:

  agent        an etcdops agent's serving certificate; --host is the address
               in the fleet file's agent URL
  operator     a client certificate for the fleet file's [tls]: may call
               every agent RPC (defrag, restart, restore, ...)
  observer     a read-only client certificate for the fleet file's [tls]:
               status, health, member list, check hashkv, snapshots; every
               command that changes something is refused
  coordinator  the older name of operator (same rights): certificates issued
               with it keep working
  etcd-server  etcd's client-facing certificate (--cert-file); --host for
               every client URL
  etcd-peer    etcd's peer certificate (--peer-cert-file); --host for every
               peer URL
  etcd-client  a client certificate for etcdctl or the agent talking to etcd

Server roles (agent, etcd-server, etcd-peer) need at least one --host.";

const ISSUE_AFTER_HELP: &str = "\
Examples:
  etcdops certs issue agent --name etcd1 --host 198.18.0.11 --host etcd1.example.com \\
      --dir /etc/etcdops/pki
  etcdops certs issue operator --name ops --dir /etc/etcdops/pki
  etcdops certs issue observer --name monitoring --dir /etc/etcdops/pki
  etcdops certs issue etcd-peer --name etcd1 --host 198.18.0.11 --dir /etc/etcdops/pki --days 730";

const LIST_AFTER_HELP: &str = "\
Examples:
  etcdops certs list --dir /etc/etcdops/pki
  etcdops certs list --dir /etc/etcdops/pki -w json | jq '.certificates[] | select(.days_left < 30)'";

#[derive(Debug, Clone, Args)]
pub struct CertsInitArgs {
    /// The PKI directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The CA's common name.
    #[arg(long, value_name = "NAME", default_value = "etcdops-ca")]
    pub name: String,
    /// How long the CA is valid, in days.
    #[arg(long, value_name = "N", default_value_t = CA_VALIDITY_DAYS)]
    pub days: u32,
    /// Replace an existing CA. Every certificate it signed stops being trusted.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsIssueArgs {
    /// What the certificate is for.
    #[arg(value_enum)]
    pub role: RoleArg,
    /// The common name: the etcd member name for agent and etcd roles, an operator or host name otherwise.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// An IP address or DNS name the certificate is valid for; repeat for several.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The PKI directory holding the CA.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// How long the certificate is valid, in days.
    #[arg(long, value_name = "N", default_value_t = LEAF_VALIDITY_DAYS)]
    pub days: u32,
    /// Replace an existing certificate and key of the same role and name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsListArgs {
    /// The PKI directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// The roles as the command line spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// An etcdops agent's serving certificate.
    Agent,
    /// A client that may call every agent RPC.
    Operator,
    /// A read-only client.
    Observer,
    /// The older name of operator (same rights).
    Coordinator,
    /// etcd's client-facing server certificate.
    EtcdServer,
    /// etcd's peer certificate.
    EtcdPeer,
    /// A client certificate for etcdctl or the agent.
    EtcdClient,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Agent => Role::Agent,
            RoleArg::Operator => Role::Operator,
            RoleArg::Observer => Role::Observer,
            RoleArg::Coordinator => Role::Coordinator,
            RoleArg::EtcdServer => Role::EtcdServer,
            RoleArg::EtcdPeer => Role::EtcdPeer,
            RoleArg::EtcdClient => Role::EtcdClient,
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn report(dir: &Path, certificates: Vec<certs::CertEntry>) -> CertsReport {
    CertsReport {
        dir: dir.display().to_string(),
        ok: true,
        certificates,
    }
}

pub(crate) fn run(
    global: &GlobalArgs,
    command: &CertsCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let now = now_unix();
    match command {
        CertsCommand::Init(args) => {
            let (_, issued) = Pki::init(&args.dir, &args.name, args.days, args.force)?;
            let report = report(&args.dir, vec![certs::issued(&issued, now)]);
            emit(out, global.write_out, &report, certs::render_written)?;
        }
        CertsCommand::Issue(args) => {
            let pki = Pki::open(&args.dir)?;
            let request = IssueRequest {
                role: args.role.into(),
                name: args.name.clone(),
                hosts: args.hosts.clone(),
                validity_days: args.days,
                overwrite: args.force,
            };
            let issued = pki.issue(&request)?;
            let report = report(&args.dir, vec![certs::issued(&issued, now)]);
            emit(out, global.write_out, &report, certs::render_written)?;
        }
        CertsCommand::List(args) => {
            let pki = Pki::open(&args.dir)?;
            let entries = pki
                .list()?
                .iter()
                .map(|(path, identity)| certs::listed(path, identity, now))
                .collect();
            let report = report(&args.dir, entries);
            emit(out, global.write_out, &report, certs::render_list)?;
        }
        // Run through the agents (cli/cert_lifecycle.rs), dispatched in cli/mod.rs.
        CertsCommand::CheckExpiration(_) | CertsCommand::Renew(_) | CertsCommand::RotateCa(_) => {
            anyhow::bail!("internal: certs check-expiration and renew are dispatched by cli::run")
        }
    }
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_command_line_name() {
        for role in Role::ALL {
            let arg = RoleArg::from_str(role.as_str(), false).expect("a RoleArg per Role");
            assert_eq!(Role::from(arg), role);
        }
    }
}
