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
