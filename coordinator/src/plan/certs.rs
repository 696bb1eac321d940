//! `etcdops certs renew` as a plan (issue 17, pure): one step per member,
//! `renew-certs:NAME` — install the member's new leaf certificates (issued
//! from the current CA before the plan runs, kept in the operation's staging
//! dir) through its agent, and wait until the member serves the new serials
//! on its client and peer ports and the agent on its own. No etcd restart:
//! etcd reads its leaf certificate per new connection. The CA rotation's
//! steps (`CertStep::RotateCa`) are planned in `rotate_ca.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::planner::{OpKind, Plan, PlanError, Step};
use super::step::StepKind;

/// What a renewal carries in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewArgs {
    /// The PKI dir whose CA issued the new certificates.
    pub pki_dir: PathBuf,
    /// Where the new certificates and keys wait (0700): `<dir>/<member>/<cert>.crt|.key`.
    pub staging_dir: PathBuf,
    /// The members renewed, in order.
    pub members: Vec<String>,
    /// Per member, the certificates staged (etcd-server, etcd-peer, agent, etcd-client).
    pub certs: Vec<MemberCerts>,
}

/// One member's staged certificates and their serials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberCerts {
    pub member: String,
    /// (cert kind, hex serial).
    pub serials: Vec<(String, String)>,
}

impl RenewArgs {
    /// The staged files of `member`'s `cert`: (certificate, key).
    pub fn staged(&self, member: &str, cert: &str) -> (PathBuf, PathBuf) {
        let dir = self.staging_dir.join(member);
        (dir.join(format!("{cert}.crt")), dir.join(format!("{cert}.key")))
    }

    /// What `member` has staged.
    pub fn of(&self, member: &str) -> Option<&MemberCerts> {
        self.certs.iter().find(|c| c.member == member)
    }
}

/// The certificate steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum CertStep {
    /// Install a member's staged certificates and verify what it serves.
    RenewCerts { member: String },
    /// One member's step of a CA rotation's phase (`certs rotate-ca`,
    /// [`super::rotate_ca`]): install, restart, wait.
    RotateCa {
        phase: super::rotate_ca::Phase,
        member: String,
    },
}

impl CertStep {
    pub(super) fn id(&self) -> String {
        match self {
            CertStep::RenewCerts { member } => format!("renew-certs:{member}"),
            CertStep::RotateCa { phase, member } => format!("{}:{member}", phase.action()),
        }
    }

    pub(super) fn from_parts(action: &str, member: Option<String>) -> Option<CertStep> {
        match action {
            "renew-certs" => Some(CertStep::RenewCerts { member: member? }),
            other => super::rotate_ca::Phase::from_action(other).and_then(|phase| {
                Some(CertStep::RotateCa {
                    phase,
                    member: member?,
                })
            }),
        }
    }

    pub(super) fn member(&self) -> &str {
        match self {
            CertStep::RenewCerts { member } | CertStep::RotateCa { member, .. } => member,
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            CertStep::RenewCerts { member } => {
                format!("install {member}'s new certificates (no restart)")
            }
            CertStep::RotateCa { phase, member } => super::rotate_ca::describe(*phase, member),
        }
    }

    pub(super) fn waits_for(&self) -> String {
        match self {
            CertStep::RenewCerts { member } => {
                format!("{member} serves the new serials on its client and peer ports, its agent on its own")
            }
            CertStep::RotateCa { phase, member } => super::rotate_ca::waits_for(*phase, member),
        }
    }

    pub(super) fn default_timeout(&self) -> Duration {
        match self {
            CertStep::RenewCerts { .. } => Duration::from_secs(60),
            CertStep::RotateCa { .. } => super::rotate_ca::STEP_TIMEOUT,
        }
    }

    /// The member the step restarts (a CA rotation's steps).
    pub(super) fn restarts(&self) -> Option<&str> {
        match self {
            CertStep::RenewCerts { .. } => None,
            CertStep::RotateCa { member, .. } => Some(member),
        }
    }
}

impl From<CertStep> for StepKind {
    fn from(s: CertStep) -> StepKind {
        StepKind::Certs(s)
    }
}

/// The renewal plan: one step per member of `renew`, in its order.
pub fn plan_renew(cluster: &str, renew: &RenewArgs) -> Result<Plan, PlanError> {
    if renew.members.is_empty() {
        return Err(PlanError::Usage("certs renew: no member to renew".into()));
    }
    let steps = renew
        .members
        .iter()
        .map(|m| Step::new(CertStep::RenewCerts { member: m.clone() }.into(), None))
        .collect();
    let notes = renew
        .certs
        .iter()
        .map(|c| {
            let serials: Vec<String> = c.serials.iter().map(|(k, s)| format!("{k} {s}")).collect();
            format!("{}: new {}", c.member, serials.join(", "))
        })
        .chain(std::iter::once(format!(
            "new certificates and keys staged in {} (issued by the CA in {})",
            renew.staging_dir.display(),
            renew.pki_dir.display()
        )))
        .collect();
    Ok(Plan {
        kind: OpKind::CertsRenew,
        cluster: cluster.to_string(),
        steps,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_per_member_whose_ids_read_back() {
        let renew = RenewArgs {
            pki_dir: "/pki".into(),
            staging_dir: "/pki/renew-x".into(),
            members: vec!["etcd1".into(), "etcd2".into()],
            certs: vec![MemberCerts {
                member: "etcd1".into(),
                serials: vec![("etcd-server".into(), "0a".into())],
            }],
        };
        let plan = plan_renew("c", &renew).expect("plan");
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["renew-certs:etcd1", "renew-certs:etcd2"]);
        for s in &plan.steps {
            assert_eq!(StepKind::from_id(&s.id), Some(s.kind.clone()));
        }
        assert_eq!(
            renew.staged("etcd1", "agent").0,
            PathBuf::from("/pki/renew-x/etcd1/agent.crt")
        );
        assert!(
            plan_renew(
                "c",
                &RenewArgs {
                    members: vec![],
                    ..renew
                }
            )
            .is_err()
        );
    }
}
