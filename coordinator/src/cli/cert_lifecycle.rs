//! The certificate lifecycle commands (issue 17): `etcdops certs
//! check-expiration` (every certificate of every member through its agent:
//! the files etcd's environment names, what each member serves on its client
//! and peer ports, the agent's own; plus this CLI's own) and `etcdops certs
//! renew` (a journaled plan: see `plan/certs.rs`, `exec/certs.rs`), and
//! `etcdops certs rotate-ca` (etcd's CA replaced in three rolling restarts:
//! the new CA checked, the new leaves issued and staged, every agent's
//! `check_only` before any host changes; see `plan/rotate_ca.rs`). Also the
//! check of the coordinator's own certificate before any agent is dialled
//! ([`check_own`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use etcdops_certs::inspect::{self, CertInfo};
use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::{Agents, Client};
use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::duration;
use crate::exit::ExitStatus;
use crate::fleet::FleetTls;
use crate::output::table::{self, NONE};
use crate::plan::certs::{MemberCerts, RenewArgs as RenewPlanArgs, plan_renew};
use crate::plan::operation::Operation;
use crate::plan::planner::PlanError;

pub(crate) const CHECK_ABOUT: &str = "\
Every certificate of every member of the cluster, through its agent: the
files etcd's environment names (ETCD_CERT_FILE, ETCD_PEER_CERT_FILE and the
two trusted CA files), the certificate each member actually serves on its
client and peer ports (read from a TLS handshake the agent makes: serial and
expiry), the agent's own (its file and what it serves), and this CLI's own
certificate. Days left are whole days; the exit code is 1 when any is below
--warn, expired, unreadable, or an agent did not answer.";

pub(crate) const CHECK_AFTER_HELP: &str = "\
Examples:
  etcdops certs check-expiration
  etcdops --cluster prod-a certs check-expiration --warn 60d
  etcdops certs check-expiration -w json | jq '.certificates[] | select(.days_left < 30)'

Renew leaf certificates with `etcdops certs renew --cluster C` (no restart).";

/// `etcdops certs check-expiration`
#[derive(Debug, Clone, Args)]
pub struct CheckExpirationArgs {
    /// Exit 1 when a certificate has less than this left, e.g. 30d, 2w.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = duration::parse_span)]
    pub warn: Duration,
}

/// One certificate in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRow {
    /// The member whose host holds it; `-` for this CLI's own.
    pub member: String,
    /// etcd-server, etcd-peer, etcd-trusted-ca, etcd-peer-trusted-ca, agent, agent-ca, etcd-client, coordinator.
    pub cert: String,
    /// file or served.
    pub source: String,
    /// The file, or the address served on.
    pub location: String,
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_after_unix: i64,
    pub not_after: String,
    pub days_left: i64,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ExpirationReport {
    pub cluster: String,
    pub warn_days: i64,
    pub ok: bool,
    pub certificates: Vec<CertRow>,
    pub problems: Vec<String>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn row(member: &str, c: pb::CertificateInfo, now: i64) -> CertRow {
    let error = (!c.error.is_empty()).then_some(c.error);
    CertRow {
        member: member.to_string(),
        cert: c.cert,
        source: c.source,
        location: c.location,
        serial: c.serial,
        subject: c.subject,
        issuer: c.issuer,
        not_after: if error.is_some() {
            String::new()
        } else {
            inspect::format_unix(c.not_after_unix)
        },
        days_left: if error.is_some() {
            0
        } else {
            (c.not_after_unix - now).div_euclid(86_400)
        },
        not_after_unix: c.not_after_unix,
        error,
    }
}

/// This CLI's own certificate as a row.
fn own_row(tls: &FleetTls, now: i64) -> CertRow {
    let info = std::fs::read(&tls.cert)
        .map_err(|e| format!("cannot read {}: {e}", tls.cert.display()))
        .and_then(|pem| CertInfo::from_pem(&pem).map_err(|e| e.to_string()));
    let mut c = pb::CertificateInfo {
        cert: "coordinator".into(),
        source: "file".into(),
        location: tls.cert.display().to_string(),
        ..Default::default()
    };
    match info {
        Ok(i) => {
            c.serial = i.serial;
            c.subject = i.subject;
            c.issuer = i.issuer;
            c.not_after_unix = i.not_after_unix;
        }
        Err(e) => c.error = e,
    }
    row(NONE, c, now)
}

/// Builds the report from every member's answer (pure but for the clock passed in).
pub fn evaluate(
    cluster: &str,
    warn: Duration,
    own: CertRow,
    replies: Vec<(String, Result<pb::GetCertificatesResponse, String>)>,
    now: i64,
) -> ExpirationReport {
    let warn_days = i64::try_from(warn.as_secs() / 86_400).unwrap_or(i64::MAX);
    let warn_secs = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
    let mut certificates = vec![own];
    let mut problems = Vec::new();
    for (member, reply) in replies {
        match reply {
            Ok(r) => certificates.extend(r.certificates.into_iter().map(|c| row(&member, c, now))),
            Err(e) => problems.push(format!("{member}: {e}")),
        }
    }
    for c in &certificates {
        let who = if c.member == NONE {
            "this CLI".to_string()
        } else {
            c.member.clone()
        };
        if let Some(e) = &c.error {
            problems.push(format!("{who}: {} ({}) could not be read: {e}", c.cert, c.source));
        } else if c.not_after_unix <= now {
            problems.push(format!(
                "{who}: {} ({} {}) expired on {}",
                c.cert, c.source, c.location, c.not_after
            ));
        } else if c.not_after_unix - now < warn_secs {
            problems.push(format!(
                "{who}: {} ({} {}) expires in {} day(s), on {}: below --warn {warn_days}d",
                c.cert, c.source, c.location, c.days_left, c.not_after
            ));
        }
    }
    ExpirationReport {
        cluster: cluster.to_string(),
        warn_days,
        ok: problems.is_empty(),
        certificates,
        problems,
    }
}

const HEADER: [&str; 8] = [
    "MEMBER",
    "CERT",
    "SOURCE",
    "SERIAL",
    "EXPIRES",
    "DAYS LEFT",
    "ISSUER",
    "LOCATION / ERROR",
];

fn render(report: &ExpirationReport) -> String {
    let rows = report
        .certificates
        .iter()
        .map(|c| {
            let failed = c.error.is_some();
            vec![
                c.member.clone(),
                c.cert.clone(),
                c.source.clone(),
                if failed { NONE.into() } else { c.serial.clone() },
                if failed { NONE.into() } else { c.not_after.clone() },
                if failed {
                    NONE.into()
                } else {
                    c.days_left.to_string()
                },
                if failed { NONE.into() } else { c.issuer.clone() },
                c.error.clone().unwrap_or_else(|| c.location.clone()),
            ]
        })
        .collect();
    let summary = format!(
        "cluster {}: {} certificate(s), {} problem(s) (warn below {} days)",
        report.cluster,
        report.certificates.len(),
        report.problems.len(),
        report.warn_days
    );
    table::report(
        &HEADER,
        rows,
        &summary,
        report.problems.iter().map(|p| ("problem", p.as_str())),
    )
}

/// `GetCertificates` on every member's agent.
pub(crate) async fn get_certificates(
    agents: &Agents,
    members: &[crate::fleet::Member],
) -> Vec<crate::agents::Reply<pb::GetCertificatesResponse>> {
    let timeout_ms = agents.agent_budget_ms();
    agents
        .fan_out(members, move |mut client: Client| async move {
            client
                .get_certificates(pb::GetCertificatesRequest { timeout_ms })
                .await
        })
        .await
}

pub(crate) async fn check_expiration(
    global: &GlobalArgs,
    args: &CheckExpirationArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let fleet = crate::fleet::Fleet::load(&global.fleet)?;
    let now = now_unix();
    let own = own_row(&fleet.tls, now);
    let target = target(global)?;
    let replies = get_certificates(&target.agents, &target.cluster.members).await;
    let replies = replies
        .into_iter()
        .map(|r| (r.member, r.result.map_err(|e| e.brief())))
        .collect();
    let report = evaluate(&target.cluster.name, args.warn, own, replies, now);
    emit(out, global.write_out, &report, render)?;
    Ok(ExitStatus::from_ok(report.ok))
}

pub(crate) const RENEW_ABOUT: &str = "\
Renew the leaf certificates of the cluster's members without a restart: for
each member, new etcd-server, etcd-peer, agent and etcd-client certificates
(each with the same name and addresses as the one it replaces, a new key)
are issued from the CA in --pki into a staging dir (0700), checked here and
by every member's agent before anything changes (key, CA, validity, the
member's name and addresses), then installed member by member as a journaled
plan (fenced; `etcdops op resume` continues it): each agent replaces its
files atomically (the old ones kept as .prev), and the step waits until the
member serves the new serials on its client and peer ports and the agent on
its own. etcd reads its leaf certificate per new connection and the agent
reloads its own, so nothing restarts. The agent's etcd client reconnects
with its new client certificate towards etcd (etcd-client) at once.";

pub(crate) const RENEW_AFTER_HELP: &str = "\
Examples:
  etcdops --cluster prod-a certs renew --dry-run
  etcdops --cluster prod-a certs renew --member etcd2 --yes
  etcdops --cluster prod-a certs renew --pki /etc/etcdops/pki --days 730";

/// `etcdops certs renew`
#[derive(Debug, Clone, Args)]
pub struct RenewArgs {
    /// Only these members (repeat, or comma-separated); default: every member.
    #[arg(
        long = "member",
        alias = "members",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub members: Vec<String>,
    /// The PKI dir holding the CA (ca.crt, ca.key); default: the directory of the fleet file's [tls] ca.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// How long the new certificates are valid, in days.
    #[arg(long, value_name = "N", default_value_t = etcdops_certs::pki::LEAF_VALIDITY_DAYS)]
    pub days: u32,
    #[command(flatten)]
    pub run: crate::cli::operate::RunArgs,
}

/// The certificate kinds a renewal reissues, with their role.
const RENEWED: [(&str, etcdops_certs::Role); 4] = [
    ("etcd-server", etcdops_certs::Role::EtcdServer),
    ("etcd-peer", etcdops_certs::Role::EtcdPeer),
    ("agent", etcdops_certs::Role::Agent),
    ("etcd-client", etcdops_certs::Role::EtcdClient),
];

/// Why a renewal is refused before anything changed.
#[derive(Debug, thiserror::Error)]
#[error("certs renew refused; nothing was changed on any host:\n{}", .0.join("\n"))]
pub struct RenewRefused(pub Vec<String>);

fn staging_dir(pki: &Path, prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let dir = pki.join(format!("{prefix}-{stamp}-{}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Issues `member`'s new certificates into the staging dir, like the ones
/// its host holds now (`current`), and checks them here.
#[allow(clippy::too_many_arguments)]
fn issue_for(
    pki: &etcdops_certs::Pki,
    ca_pem: &[u8],
    staging_dir: &Path,
    kinds: &[(&str, etcdops_certs::Role)],
    member: &str,
    current: &[pb::CertificateInfo],
    days: u32,
    now: i64,
) -> Result<MemberCerts, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = staging_dir.join(member);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{member}: cannot create {}: {e}", dir.display()))?;
    let mut serials = Vec::new();
    for &(cert, role) in kinds {
        let Some(now_cert) = current.iter().find(|c| c.cert == cert && c.source == "file") else {
            continue;
        };
        if !now_cert.error.is_empty() {
            return Err(format!("{member}: {cert}: {}", now_cert.error));
        }
        let (cert_path, key_path) = (dir.join(format!("{cert}.crt")), dir.join(format!("{cert}.key")));
        let request = etcdops_certs::IssueRequest {
            role,
            name: now_cert.subject.clone(),
            hosts: now_cert.hosts.clone(),
            validity_days: days,
            overwrite: false,
        };
        let issued = pki
            .issue_to(&request, &cert_path, &key_path, None)
            .map_err(|e| format!("{member}: {cert}: {e}"))?;
        let cert_pem = std::fs::read(&issued.cert_path).map_err(|e| format!("{member}: {cert}: {e}"))?;
        let key_pem = std::fs::read(&issued.key_path).map_err(|e| format!("{member}: {cert}: {e}"))?;
        let hosts: Vec<String> = if role.is_server() {
            now_cert.hosts.clone()
        } else {
            Vec::new()
        };
        let info = inspect::check_leaf(
            &cert_pem,
            &key_pem,
            &inspect::LeafCheck {
                role,
                name: Some(&now_cert.subject),
                hosts: &hosts,
                ca_pem,
                now_unix: now,
            },
        )
        .map_err(|e| format!("{member}: {cert}: {e}"))?;
        serials.push((cert.to_string(), info.serial));
    }
    if serials.is_empty() {
        return Err(format!(
            "{member}: its agent reports no certificate file to renew"
        ));
    }
    Ok(MemberCerts {
        member: member.to_string(),
        serials,
    })
}

pub(crate) async fn renew(
    global: &GlobalArgs,
    args: &RenewArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let fleet = crate::fleet::Fleet::load(&global.fleet)?;
    let target = target(global)?;
    let cluster = &target.cluster;
    let pki_dir = match &args.pki {
        Some(dir) => dir.clone(),
        None => fleet
            .tls
            .ca
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let pki = etcdops_certs::Pki::open(&pki_dir)?;
    let now = now_unix();
    let ca_pem = std::fs::read(pki.ca_cert_path())?;
    let ca = CertInfo::from_pem(&ca_pem)?;
    if ca.not_after_unix <= now {
        anyhow::bail!(RenewRefused(vec![format!(
            "the CA {:?} in {} expired on {}: certificates it issues would be refused; rotate the CA \
             (`etcdops certs rotate-ca`) instead",
            ca.subject,
            pki.ca_cert_path().display(),
            inspect::format_unix(ca.not_after_unix)
        )]));
    }
    for name in &args.members {
        if !cluster.members.iter().any(|m| &m.name == name) {
            anyhow::bail!(PlanError::UnknownMember {
                name: name.clone(),
                cluster: cluster.name.clone(),
                known: cluster
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let members: Vec<crate::fleet::Member> = cluster
        .members
        .iter()
        .filter(|m| args.members.is_empty() || args.members.contains(&m.name))
        .cloned()
        .collect();
    let replies = get_certificates(&target.agents, &members).await;
    let mut refused = Vec::new();
    let staging = staging_dir(&pki_dir, "renew")?;
    let mut renew = RenewPlanArgs {
        pki_dir: std::path::absolute(&pki_dir).unwrap_or(pki_dir.clone()),
        staging_dir: std::path::absolute(&staging).unwrap_or(staging.clone()),
        members: members.iter().map(|m| m.name.clone()).collect(),
        certs: Vec::new(),
    };
    for reply in replies {
        match reply.result {
            Err(e) => refused.push(format!(
                "{}: cannot read its certificates: {}",
                reply.member,
                e.brief()
            )),
            Ok(r) => match issue_for(
                &pki,
                &ca_pem,
                &renew.staging_dir,
                &RENEWED,
                &reply.member,
                &r.certificates,
                args.days,
                now,
            ) {
                Ok(c) => renew.certs.push(c),
                Err(e) => refused.push(e),
            },
        }
    }
    // Every agent checks its new certificates as an install would (its CA
    // files, the member's name and addresses), before any host changes.
    if refused.is_empty() {
        refused.extend(preflight(&target.agents, &members, &renew).await);
    }
    if !refused.is_empty() {
        let _ = std::fs::remove_dir_all(&staging);
        anyhow::bail!(RenewRefused(refused));
    }
    let plan = plan_renew(&cluster.name, &renew).map_err(anyhow::Error::new)?;
    let view = crate::cli::operate::observe(&target).await;
    let planned = crate::cli::operate::Planned {
        plan,
        operation: Operation::CertsRenew { renew },
    };
    let result = crate::cli::operate::run_plan(global, target, &view, planned, &args.run, out).await;
    // A started operation keeps its staged files until it succeeds (the
    // executor removes them then; `op resume` needs them before); a dry run,
    // a refusal and an unconfirmed plan do not.
    let started = match &result {
        Ok(status) => !args.run.dry_run && *status == ExitStatus::Ok,
        Err(e) => e
            .downcast_ref::<crate::exec::ExecError>()
            .is_some_and(|e| matches!(e, crate::exec::ExecError::Stopped { .. })),
    };
    if !started {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// InstallCertificates with `check_only` on every member: the refusals.
async fn preflight(agents: &Agents, members: &[crate::fleet::Member], renew: &RenewPlanArgs) -> Vec<String> {
    let mut refusals = Vec::new();
    for member in members {
        let Some(staged) = renew.of(&member.name) else {
            continue;
        };
        let mut certificates = Vec::new();
        for (cert, _) in &staged.serials {
            let (c, k) = renew.staged(&member.name, cert);
            match (std::fs::read_to_string(&c), std::fs::read_to_string(&k)) {
                (Ok(cert_pem), Ok(key_pem)) => certificates.push(pb::NewCertificate {
                    cert: cert.clone(),
                    cert_pem,
                    key_pem,
                }),
                _ => refusals.push(format!("{}: cannot read the staged {cert}", member.name)),
            }
        }
        let request = pb::InstallCertificatesRequest {
            fence: None,
            certificates,
            check_only: true,
        };
        let reply = agents
            .fan_out(std::slice::from_ref(member), move |mut client: Client| {
                let request = request.clone();
                async move { client.install_certificates(request).await }
            })
            .await;
        for r in reply {
            if let Err(e) = r.result {
                refusals.push(format!("{}: {}", r.member, e.brief()));
            }
        }
    }
    refusals
}

pub(crate) const ROTATE_CA_ABOUT: &str = "\
Replace etcd's CA (the CA etcd trusts for clients and peers and that signs
its server, peer and client certificates) by the CA in --new-ca, without an
outage, as one journaled plan of three phases, each a rolling restart
(etcd reads its trusted CA files only at start; the leader last, after it
handed leadership to a member restarted already; the safety gate before
every step):

  1. every member trusts the old and the new CA (a bundle file the agent
     writes beside etcd's trusted CA file; ETCD_TRUSTED_CA_FILE and
     ETCD_PEER_TRUSTED_CA_FILE point at it), restart;
  2. new server, peer and agent-client (etcd-client) certificates from the
     new CA, with the same names and addresses, installed; restart;
  3. the bundle holds the new CA only, restart: certificates of the old CA
     are refused from then on.

Before any host changes: the new CA must be a CA, valid now, not the old one
(another subject and key), its key must match its certificate, and every
member's agent checks the new certificates and both bundles (InstallCertificates
check_only); a refusal exits 2 and names what to fix. The agents' etcd client
trusts the bundle from phase 1 on. The fleet CA (agents and coordinator) and
the agents' own certificates are not changed, also where the fleet CA is the
same file as etcd's CA. `etcdops op resume` continues a rotation from the
step it stopped at. etcd's other clients must trust both CAs before phase 2
and use client certificates of the new CA before phase 3.";

pub(crate) const ROTATE_CA_AFTER_HELP: &str = "\
Examples:
  etcdops certs init --dir /etc/etcdops/pki-2027 --name prod-etcd-ca-2027
  etcdops --cluster prod-a certs rotate-ca --new-ca /etc/etcdops/pki-2027 --dry-run
  etcdops --cluster prod-a certs rotate-ca --new-ca /etc/etcdops/pki-2027 --yes";

/// `etcdops certs rotate-ca`
#[derive(Debug, Clone, Args)]
pub struct RotateCaArgs {
    /// The new CA's PKI dir (ca.crt, ca.key), e.g. from `etcdops certs init`.
    #[arg(long, value_name = "DIR")]
    pub new_ca: PathBuf,
    /// The CA etcd trusts now (PEM); default: the fleet file's [tls] ca.
    #[arg(long, value_name = "FILE")]
    pub old_ca: Option<PathBuf>,
    /// How long the new leaf certificates are valid, in days.
    #[arg(long, value_name = "N", default_value_t = etcdops_certs::pki::LEAF_VALIDITY_DAYS)]
    pub days: u32,
    #[command(flatten)]
    pub run: crate::cli::operate::RunArgs,
}

/// The certificate kinds a CA rotation reissues from the new CA (the
/// agent's own certificate belongs to the fleet CA: not these).
const ROTATED: [(&str, etcdops_certs::Role); 3] = [
    ("etcd-server", etcdops_certs::Role::EtcdServer),
    ("etcd-peer", etcdops_certs::Role::EtcdPeer),
    ("etcd-client", etcdops_certs::Role::EtcdClient),
];

/// Why a CA rotation is refused before anything changed (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("certs rotate-ca refused; nothing was changed on any host:\n{}", .0.join("\n"))]
pub struct RotateCaRefused(pub Vec<String>);

/// What is wrong with a new CA against the old one (pure).
pub fn new_ca_problems(old: &CertInfo, new: &CertInfo, same_key: bool, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    if !new.is_ca {
        out.push(format!(
            "the new CA's certificate {:?} (serial {}) is not a CA certificate: \
             create one with `etcdops certs init --dir DIR --name NAME`",
            new.subject, new.serial
        ));
    }
    if new.not_after_unix <= now {
        out.push(format!(
            "the new CA {:?} expired on {}: create a new one (`etcdops certs init`)",
            new.subject,
            inspect::format_unix(new.not_after_unix)
        ));
    }
    if new.not_before_unix > now {
        out.push(format!(
            "the new CA {:?} is not valid before {}: wait, or create it again with this host's clock right",
            new.subject,
            inspect::format_unix(new.not_before_unix)
        ));
    }
    if new.serial == old.serial && new.subject == old.subject {
        out.push(format!(
            "the new CA is the CA etcd trusts now ({:?}, serial {}): pass a new CA's dir",
            old.subject, old.serial
        ));
    } else if new.subject == old.subject {
        out.push(format!(
            "the new CA has the old CA's subject {:?}: clients could not tell them apart; \
             create it with another --name",
            old.subject
        ));
    }
    if same_key {
        out.push("the new CA uses the old CA's key: create it with a new key (`etcdops certs init`)".into());
    }
    out
}

pub(crate) async fn rotate_ca(
    global: &GlobalArgs,
    args: &RotateCaArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let fleet = crate::fleet::Fleet::load(&global.fleet)?;
    let target = target(global)?;
    let now = now_unix();
    let refuse = |problems: Vec<String>| anyhow::Error::new(RotateCaRefused(problems));

    // The new CA.
    let new_dir = std::path::absolute(&args.new_ca).unwrap_or(args.new_ca.clone());
    let pki = etcdops_certs::Pki::open(&new_dir).map_err(|e| {
        refuse(vec![format!(
            "--new-ca {}: {e} (create a CA with `etcdops certs init --dir {} --name NAME`)",
            new_dir.display(),
            new_dir.display()
        )])
    })?;
    let new_pem = std::fs::read(pki.ca_cert_path())
        .map_err(|e| refuse(vec![format!("cannot read {}: {e}", pki.ca_cert_path().display())]))?;
    let new_ca = CertInfo::from_pem(&new_pem)
        .map_err(|e| refuse(vec![format!("{}: {e}", pki.ca_cert_path().display())]))?;
    let new_key = std::fs::read(pki.ca_key_path())
        .map_err(|e| refuse(vec![format!("cannot read {}: {e}", pki.ca_key_path().display())]))?;

    // The old CA: what etcd trusts now.
    let old_file = args.old_ca.clone().unwrap_or_else(|| fleet.tls.ca.clone());
    let old_file = std::path::absolute(&old_file).unwrap_or(old_file);
    let old_pem = std::fs::read(&old_file)
        .map_err(|e| refuse(vec![format!("--old-ca {}: {e}", old_file.display())]))?;
    let old_ca = CertInfo::from_pem(&old_pem)
        .map_err(|e| refuse(vec![format!("--old-ca {}: {e}", old_file.display())]))?;
    let old_key = old_file.parent().map(|d| d.join("ca.key"));
    let same_key = old_key
        .and_then(|k| std::fs::read(k).ok())
        .is_some_and(|k| k.trim_ascii() == new_key.trim_ascii());
    let problems = new_ca_problems(&old_ca, &new_ca, same_key, now);
    if !problems.is_empty() {
        return Err(refuse(problems));
    }

    // Staging: a probe leaf first (the key must match the certificate).
    let staging = staging_dir(&new_dir, "rotate-ca").map_err(|e| {
        refuse(vec![format!(
            "cannot create a staging dir in {}: {e}",
            new_dir.display()
        )])
    })?;
    let staging = std::path::absolute(&staging).unwrap_or(staging);
    let result = rotate_ca_staged(
        global, args, target, &pki, &new_pem, &old_file, &old_pem, &staging, now, out,
    )
    .await;
    let started = match &result {
        Ok(status) => !args.run.dry_run && *status == ExitStatus::Ok,
        Err(e) => e
            .downcast_ref::<crate::exec::ExecError>()
            .is_some_and(|e| matches!(e, crate::exec::ExecError::Stopped { .. })),
    };
    if !started {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn rotate_ca_staged(
    global: &GlobalArgs,
    args: &RotateCaArgs,
    target: crate::cli::target::Target,
    pki: &etcdops_certs::Pki,
    new_pem: &[u8],
    old_file: &Path,
    old_pem: &[u8],
    staging: &Path,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let refuse = |problems: Vec<String>| anyhow::Error::new(RotateCaRefused(problems));
    let probe = (staging.join("key-probe.crt"), staging.join("key-probe.key"));
    let issued = pki.issue_to(
        &etcdops_certs::IssueRequest::new(etcdops_certs::Role::EtcdClient, "rotate-ca-key-probe"),
        &probe.0,
        &probe.1,
        None,
    );
    let probe_check = issued.map_err(|e| e.to_string()).and_then(|_| {
        let cert = std::fs::read(&probe.0).map_err(|e| e.to_string())?;
        let key = std::fs::read(&probe.1).map_err(|e| e.to_string())?;
        inspect::check_leaf(
            &cert,
            &key,
            &inspect::LeafCheck {
                role: etcdops_certs::Role::EtcdClient,
                name: None,
                hosts: &[],
                ca_pem: new_pem,
                now_unix: now,
            },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_file(&probe.0);
    let _ = std::fs::remove_file(&probe.1);
    if let Err(e) = probe_check {
        return Err(refuse(vec![format!(
            "the new CA's key {} does not match its certificate {}: a certificate it signs is refused ({e})",
            pki.ca_key_path().display(),
            pki.ca_cert_path().display()
        )]));
    }

    let cluster = target.cluster.clone();
    let members = cluster.members.clone();
    let replies = get_certificates(&target.agents, &members).await;
    let mut refused = Vec::new();
    let mut certs = Vec::new();
    for reply in replies {
        match reply.result {
            Err(e) => refused.push(format!(
                "{}: cannot read its certificates: {}",
                reply.member,
                e.brief()
            )),
            Ok(r) => match issue_for(
                pki,
                new_pem,
                staging,
                &ROTATED,
                &reply.member,
                &r.certificates,
                args.days,
                now,
            ) {
                Ok(c) => certs.push(c),
                Err(e) => refused.push(e),
            },
        }
    }
    let view = crate::cli::operate::observe(&target).await;
    let mut rotate = crate::plan::rotate_ca::RotateCaArgs {
        old_ca_file: old_file.to_path_buf(),
        old_ca_pem: String::from_utf8_lossy(old_pem).into_owned(),
        new_ca_dir: pki.dir().to_path_buf(),
        new_ca_pem: String::from_utf8_lossy(new_pem).into_owned(),
        staging_dir: staging.to_path_buf(),
        order: crate::plan::rotate_ca::rotation_order(&view),
        certs,
    };
    // Every member restarts three times: each must be one the cluster can lose.
    for m in &view.members {
        if let Err(finding) = crate::plan::safety::tolerates_one_down(&view, &m.name) {
            refused.push(finding.to_string());
        }
    }
    if refused.is_empty() {
        refused.extend(rotate_preflight(&target.agents, &members, &rotate).await);
    }
    if !refused.is_empty() {
        return Err(refuse(refused));
    }
    rotate.order.retain(|m| members.iter().any(|f| &f.name == m));
    let plan = crate::plan::rotate_ca::plan_rotate_ca(&cluster.name, &rotate).map_err(anyhow::Error::new)?;
    let planned = crate::cli::operate::Planned {
        plan,
        operation: Operation::CertsRotateCa { rotate },
    };
    crate::cli::operate::run_plan(global, target, &view, planned, &args.run, out).await
}

/// InstallCertificates `check_only` on every member, three times: the
/// phase 1 bundle against the member's certificates now; the phase 1
/// bundle with the new leaves; the phase 3 bundle (new CA only) with the
/// new leaves. The refusals.
async fn rotate_preflight(
    agents: &Agents,
    members: &[crate::fleet::Member],
    rotate: &crate::plan::rotate_ca::RotateCaArgs,
) -> Vec<String> {
    use crate::plan::rotate_ca::Phase;
    let mut refusals = Vec::new();
    for member in members {
        let Some(staged) = rotate.of(&member.name) else {
            refusals.push(format!("{}: no certificate staged", member.name));
            continue;
        };
        let mut leaves = Vec::new();
        for (cert, _) in &staged.serials {
            let (c, k) = rotate.staged(&member.name, cert);
            match (std::fs::read_to_string(&c), std::fs::read_to_string(&k)) {
                (Ok(cert_pem), Ok(key_pem)) => leaves.push(pb::NewCertificate {
                    cert: cert.clone(),
                    cert_pem,
                    key_pem,
                }),
                _ => refusals.push(format!("{}: cannot read the staged {cert}", member.name)),
            }
        }
        let bundle = |phase: Phase| pb::NewCertificate {
            cert: "etcd-trusted-ca".into(),
            cert_pem: rotate.bundle(phase),
            key_pem: String::new(),
        };
        let checks = [
            (
                "the old + new CA bundle with its certificates now (is --old-ca the CA that signed them?)",
                vec![bundle(Phase::Trust)],
            ),
            (
                "the new certificates with the old + new CA bundle",
                std::iter::once(bundle(Phase::Trust))
                    .chain(leaves.clone())
                    .collect(),
            ),
            (
                "the new certificates with the new CA alone",
                std::iter::once(bundle(Phase::DropOld))
                    .chain(leaves.clone())
                    .collect(),
            ),
        ];
        for (what, certificates) in checks {
            let request = pb::InstallCertificatesRequest {
                fence: None,
                certificates,
                check_only: true,
            };
            let reply = agents
                .fan_out(std::slice::from_ref(member), move |mut client: Client| {
                    let request = request.clone();
                    async move { client.install_certificates(request).await }
                })
                .await;
            for r in reply {
                if let Err(e) = r.result {
                    refusals.push(format!("{}: {what}: {}", r.member, e.brief()));
                }
            }
        }
    }
    refusals
}

/// The coordinator's own certificate cannot be used to call agents.
#[derive(Debug, thiserror::Error)]
#[error(
    "the coordinator's own certificate {path} ({who}) {problem}: every agent would refuse it. \
     Reissue it: `etcdops certs issue coordinator --name {name} --dir {dir} --force` \
     (the fleet file's [tls] cert and key)"
)]
pub struct OwnCertificateError {
    pub path: PathBuf,
    pub who: String,
    pub name: String,
    pub dir: String,
    pub problem: inspect::ClientProblem,
}

/// Checks the coordinator's own certificate before any agent is dialled:
/// expired, not yet valid, without clientAuth or without the coordinator
/// role is one error naming the date and the command to reissue it.
pub(crate) fn check_own(tls: &FleetTls) -> Result<(), OwnCertificateError> {
    let Ok(pem) = std::fs::read(&tls.cert) else {
        // Unreadable files are the TLS loader's error to report.
        return Ok(());
    };
    let Ok(info) = CertInfo::from_pem(&pem) else {
        return Ok(());
    };
    match inspect::client_problem(&info, now_unix()) {
        None => Ok(()),
        Some(problem) => Err(OwnCertificateError {
            path: tls.cert.clone(),
            who: format!("{:?}, serial {}", info.subject, info.serial),
            name: if info.subject.is_empty() {
                "NAME".into()
            } else {
                info.subject.clone()
            },
            dir: tls
                .ca
                .parent()
                .map(Path::display)
                .map_or_else(|| "DIR".into(), |d| d.to_string()),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(cert: &str, source: &str, not_after_unix: i64) -> pb::CertificateInfo {
        pb::CertificateInfo {
            cert: cert.into(),
            source: source.into(),
            location: "/pki/x.crt".into(),
            serial: "0a".into(),
            not_after_unix,
            ..Default::default()
        }
    }

    fn ca(subject: &str, serial: &str, from: i64, to: i64, is_ca: bool) -> CertInfo {
        CertInfo {
            serial: serial.into(),
            subject: subject.into(),
            issuer: subject.into(),
            role: None,
            not_before_unix: from,
            not_after_unix: to,
            hosts: Vec::new(),
            client_auth: false,
            server_auth: false,
            is_ca,
        }
    }

    #[test]
    fn a_new_ca_must_be_a_valid_ca_other_than_the_old_one() {
        let now = 1_000_000;
        let old = ca("old-ca", "01", 0, now + 100, true);
        let good = ca("new-ca", "02", now - 10, now + 1_000, true);
        assert!(new_ca_problems(&old, &good, false, now).is_empty());
        let expect = |new: &CertInfo, same_key: bool, needle: &str| {
            let p = new_ca_problems(&old, new, same_key, now).join("\n");
            assert!(p.contains(needle), "{needle}: {p}");
        };
        expect(
            &ca("new-ca", "02", 0, now + 1, false),
            false,
            "not a CA certificate",
        );
        expect(&ca("new-ca", "02", 0, now - 1, true), false, "expired on");
        expect(
            &ca("new-ca", "02", now + 60, now + 1_000, true),
            false,
            "not valid before",
        );
        expect(&old, true, "the CA etcd trusts now");
        expect(
            &ca("old-ca", "03", 0, now + 1_000, true),
            false,
            "old CA's subject",
        );
        expect(&good, true, "old CA's key");
    }

    #[test]
    fn below_the_threshold_expired_unreadable_and_silent_agents_are_problems() {
        let day = 86_400;
        let now = 1_000 * day;
        let own = row(NONE, info("coordinator", "file", now + 400 * day), now);
        let ok = pb::GetCertificatesResponse {
            agent: "etcd1".into(),
            certificates: vec![
                info("etcd-server", "file", now + 100 * day),
                info("etcd-server", "served", now + 100 * day),
            ],
        };
        let report = evaluate(
            "c",
            Duration::from_secs(30 * day as u64),
            own.clone(),
            vec![("etcd1".into(), Ok(ok.clone()))],
            now,
        );
        assert!(report.ok, "{:?}", report.problems);
        assert_eq!(report.certificates.len(), 3);
        assert_eq!(report.certificates[1].days_left, 100);

        let mut soon = ok.clone();
        soon.certificates[1].not_after_unix = now + 10 * day;
        let mut broken = pb::CertificateInfo {
            error: "no TLS handshake".into(),
            ..info("etcd-peer", "served", 0)
        };
        broken.serial.clear();
        soon.certificates.push(broken);
        soon.certificates.push(info("agent", "file", now - day));
        let report = evaluate(
            "c",
            Duration::from_secs(30 * day as u64),
            own,
            vec![
                ("etcd1".into(), Ok(soon)),
                ("etcd2".into(), Err("agent unreachable".into())),
            ],
            now,
        );
        assert!(!report.ok);
        let text = report.problems.join("\n");
        assert!(
            text.contains("etcd1: etcd-server (served /pki/x.crt) expires in 10 day(s)"),
            "{text}"
        );
        assert!(
            text.contains("etcd1: etcd-peer (served) could not be read"),
            "{text}"
        );
        assert!(
            text.contains("etcd1: agent (file /pki/x.crt) expired on"),
            "{text}"
        );
        assert!(text.contains("etcd2: agent unreachable"), "{text}");
        assert!(render(&report).contains("DAYS LEFT"));
    }
}
