//! The certificate lifecycle commands (issue 17): `etcdops certs
//! check-expiration` (every certificate of every member through its agent:
//! the files etcd's environment names, what each member serves on its client
//! and peer ports, the agent's own; plus this CLI's own) and `etcdops certs
//! renew` (a journaled plan: see `plan/certs.rs`, `exec/certs.rs`). Also the
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
reloads its own, so nothing restarts. The agent's own client certificate
towards etcd (etcd-client) is used from its next start.";

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

fn staging_dir(pki: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let dir = pki.join(format!("renew-{stamp}-{}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Issues `member`'s new certificates into the staging dir, like the ones
/// its host holds now (`current`), and checks them here.
fn issue_for(
    pki: &etcdops_certs::Pki,
    ca_pem: &[u8],
    renew: &RenewPlanArgs,
    member: &str,
    current: &[pb::CertificateInfo],
    days: u32,
    now: i64,
) -> Result<MemberCerts, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = renew.staging_dir.join(member);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{member}: cannot create {}: {e}", dir.display()))?;
    let mut serials = Vec::new();
    for (cert, role) in RENEWED {
        let Some(now_cert) = current.iter().find(|c| c.cert == cert && c.source == "file") else {
            continue;
        };
        if !now_cert.error.is_empty() {
            return Err(format!("{member}: {cert}: {}", now_cert.error));
        }
        let (cert_path, key_path) = renew.staged(member, cert);
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
    let staging = staging_dir(&pki_dir)?;
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
                &renew,
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
