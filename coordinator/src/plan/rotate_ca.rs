//! `etcdops certs rotate-ca` as a plan (issue 17, pure): etcd's CA replaced
//! in three phases, each a rolling restart (etcd reads its trusted CA files
//! only at start, etcd issue #11555):
//!
//! 1. `ca-trust:M` — etcd's trust bundle (old CA + new CA) installed on M
//!    (the agent writes it beside etcd's trusted CA file and points
//!    `ETCD_TRUSTED_CA_FILE` / `ETCD_PEER_TRUSTED_CA_FILE` at it; its own
//!    etcd client trusts it from then on), then M restarted;
//! 2. `ca-leaves:M` — M's server, peer and agent-client (`etcd-client`)
//!    certificates from the NEW CA (issued and checked before the plan runs,
//!    staged in the operation's dir) installed, then M restarted;
//! 3. `ca-drop-old:M` — the bundle reduced to the new CA, then M restarted:
//!    certificates of the old CA are refused from then on.
//!
//! Which CA: etcd's (what etcd trusts for clients and peers, and what signs
//! its server, peer and client certificates). The fleet CA (agents and
//! coordinator, mutual TLS of the agent API) is out of scope and never
//! written, even where it is the same file as etcd's CA (the sandbox's
//! `pki/ca.crt`): the bundle is a file of its own. The agents' own
//! certificates are not reissued.
//!
//! Order: each phase is a rolling restart with the leader last, and the
//! leader hands leadership to the phase's first member (restarted already)
//! before its own restart. Phase k+1's order is phase k's rotated by one, so
//! the member that took over leadership comes last again: one leadership
//! transfer per phase. Each step transfers only if its member leads when the
//! step runs, so a resumed or re-elected cluster is handled as it is.

use std::path::PathBuf;
use std::time::Duration;

use etcdops_certs::inspect::{CertInfo, format_unix};
use serde::{Deserialize, Serialize};

use super::certs::{CertStep, MemberCerts};
use super::planner::{OpKind, Plan, PlanError, Step, rolling_order};
use super::view::{ClusterView, MemberView};

/// The three phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Old and new CA trusted.
    Trust,
    /// Leaf certificates of the new CA.
    Leaves,
    /// Only the new CA trusted.
    DropOld,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Trust, Phase::Leaves, Phase::DropOld];

    /// The step action of the phase (`ca-trust:M`).
    pub fn action(self) -> &'static str {
        match self {
            Phase::Trust => "ca-trust",
            Phase::Leaves => "ca-leaves",
            Phase::DropOld => "ca-drop-old",
        }
    }

    pub fn from_action(action: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.action() == action)
    }

    /// 1, 2 or 3.
    pub fn number(self) -> usize {
        match self {
            Phase::Trust => 1,
            Phase::Leaves => 2,
            Phase::DropOld => 3,
        }
    }

    /// What the phase does, for people.
    pub fn what(self) -> &'static str {
        match self {
            Phase::Trust => "trust old + new CA",
            Phase::Leaves => "leaf certificates from the new CA",
            Phase::DropOld => "trust the new CA only",
        }
    }
}

/// What a CA rotation carries in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateCaArgs {
    /// Where the old CA (the one etcd trusts now) was read.
    pub old_ca_file: PathBuf,
    pub old_ca_pem: String,
    /// The new CA's PKI dir (ca.crt, ca.key).
    pub new_ca_dir: PathBuf,
    pub new_ca_pem: String,
    /// Where the new leaves and keys wait (0700): `<dir>/<member>/<cert>.crt|.key`.
    pub staging_dir: PathBuf,
    /// Phase 1's rolling order (the leader at planning last); later
    /// phases rotate it by one per phase.
    pub order: Vec<String>,
    /// Per member, the new leaves staged (etcd-server, etcd-peer, etcd-client).
    pub certs: Vec<MemberCerts>,
}

fn pem_block(pem: &str) -> String {
    let mut s = pem.trim().to_string();
    s.push('\n');
    s
}

impl RotateCaArgs {
    /// etcd's trust bundle during `phase`: old + new CA (phases 1 and 2),
    /// the new CA alone (phase 3).
    pub fn bundle(&self, phase: Phase) -> String {
        match phase {
            Phase::Trust | Phase::Leaves => {
                format!("{}{}", pem_block(&self.old_ca_pem), pem_block(&self.new_ca_pem))
            }
            Phase::DropOld => pem_block(&self.new_ca_pem),
        }
    }

    /// The staged files of `member`'s `cert`: (certificate, key).
    pub fn staged(&self, member: &str, cert: &str) -> (PathBuf, PathBuf) {
        let dir = self.staging_dir.join(member);
        (dir.join(format!("{cert}.crt")), dir.join(format!("{cert}.key")))
    }

    /// What `member` has staged.
    pub fn of(&self, member: &str) -> Option<&MemberCerts> {
        self.certs.iter().find(|c| c.member == member)
    }

    /// The restart order of `phase`: phase 1's rotated left by one per phase.
    pub fn order_of(&self, phase: Phase) -> Vec<String> {
        let mut order = self.order.clone();
        if !order.is_empty() {
            let by = (phase.number() - 1) % order.len();
            order.rotate_left(by);
        }
        order
    }

    /// Whom `member` hands leadership to in `phase` if it leads then: the
    /// phase's first member (restarted already), unless that is itself.
    pub fn hand_to(&self, phase: Phase, member: &str) -> Option<String> {
        self.order_of(phase).into_iter().next().filter(|m| m != member)
    }
}

/// Phase 1's order: the rolling order (learners, followers, the leader last).
pub fn rotation_order(view: &ClusterView) -> Vec<String> {
    let all: Vec<&MemberView> = view.members.iter().collect();
    rolling_order(view, &all)
        .into_iter()
        .map(|m| m.name.clone())
        .collect()
}

fn describe_ca(pem: &str) -> String {
    match CertInfo::from_pem(pem.as_bytes()) {
        Ok(i) => format!(
            "{:?} (serial {}, valid until {})",
            i.subject,
            i.serial,
            format_unix(i.not_after_unix)
        ),
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// The rotation plan: per phase, one step per member in the phase's order.
pub fn plan_rotate_ca(cluster: &str, rotate: &RotateCaArgs) -> Result<Plan, PlanError> {
    if rotate.order.is_empty() {
        return Err(PlanError::Usage(
            "certs rotate-ca: the cluster has no member".into(),
        ));
    }
    let mut steps = Vec::new();
    let mut notes = vec![
        format!(
            "etcd's CA: old {} from {}",
            describe_ca(&rotate.old_ca_pem),
            rotate.old_ca_file.display()
        ),
        format!(
            "etcd's CA: new {} from {}",
            describe_ca(&rotate.new_ca_pem),
            rotate.new_ca_dir.display()
        ),
        "the fleet CA (agents and coordinator) and the agents' own certificates are not changed".into(),
    ];
    for phase in Phase::ALL {
        let order = rotate.order_of(phase);
        let last = order.last().cloned().unwrap_or_default();
        let hand = rotate
            .hand_to(phase, &last)
            .map(|to| format!("; {last} comes last and, if it leads then, hands leadership to {to} first"))
            .unwrap_or_default();
        notes.push(format!(
            "phase {}/3 ({}): rolling restart {}{hand}",
            phase.number(),
            phase.what(),
            order.join(" -> ")
        ));
        for member in order {
            steps.push(Step::new(CertStep::RotateCa { phase, member }.into(), None));
        }
    }
    if rotate.order.len() == 1 {
        notes.push(format!(
            "{} is the only member: the cluster is unavailable during each of its 3 restarts",
            rotate.order[0]
        ));
    }
    for c in &rotate.certs {
        let serials: Vec<String> = c.serials.iter().map(|(k, s)| format!("{k} {s}")).collect();
        notes.push(format!("{}: new {}", c.member, serials.join(", ")));
    }
    notes.push(format!(
        "new certificates and keys staged in {} (removed when the rotation succeeds)",
        rotate.staging_dir.display()
    ));
    notes.push(
        "clients of etcd: trust both CAs before phase 2 and switch to client certificates of the new CA \
         before phase 3 (old-CA client certificates are refused from then on)"
            .into(),
    );
    Ok(Plan {
        kind: OpKind::CertsRotateCa,
        cluster: cluster.to_string(),
        steps,
        notes,
    })
}

/// Step helpers for [`CertStep::RotateCa`].
pub(super) fn describe(phase: Phase, member: &str) -> String {
    let action = match phase {
        Phase::Trust => "install etcd's trust bundle (old + new CA)",
        Phase::Leaves => "install the new CA's server, peer and client certificates",
        Phase::DropOld => "install etcd's trust bundle (new CA only)",
    };
    format!(
        "phase {}/3 ({}): {action} on {member}, restart {member}",
        phase.number(),
        phase.what()
    )
}

pub(super) fn waits_for(phase: Phase, member: &str) -> String {
    match phase {
        Phase::Leaves => {
            format!("{member} healthy and caught up, serving the new serials on its client and peer ports")
        }
        _ => format!("{member} healthy and caught up with the leader"),
    }
}

pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::step::StepKind;

    fn args(order: &[&str]) -> RotateCaArgs {
        RotateCaArgs {
            old_ca_file: "/pki/ca.crt".into(),
            old_ca_pem: "OLD".into(),
            new_ca_dir: "/new".into(),
            new_ca_pem: "NEW\n\n".into(),
            staging_dir: "/new/rotate-x".into(),
            order: order.iter().map(|s| s.to_string()).collect(),
            certs: vec![MemberCerts {
                member: "a".into(),
                serials: vec![("etcd-server".into(), "0a".into())],
            }],
        }
    }

    #[test]
    fn three_phases_in_rotated_orders_whose_ids_read_back() {
        let rotate = args(&["a", "b", "l"]);
        let plan = plan_rotate_ca("c", &rotate).expect("plan");
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "ca-trust:a",
                "ca-trust:b",
                "ca-trust:l",
                "ca-leaves:b",
                "ca-leaves:l",
                "ca-leaves:a",
                "ca-drop-old:l",
                "ca-drop-old:a",
                "ca-drop-old:b",
            ]
        );
        for s in &plan.steps {
            assert_eq!(StepKind::from_id(&s.id), Some(s.kind.clone()), "{}", s.id);
            assert_eq!(s.timeout, STEP_TIMEOUT);
        }
        assert!(plan.steps.iter().all(|s| s.kind.changes_a_member()));
        // The leader of each phase hands over to the phase's first member,
        // who comes last in the next phase: one transfer per phase.
        assert_eq!(rotate.hand_to(Phase::Trust, "l").as_deref(), Some("a"));
        assert_eq!(
            rotate.order_of(Phase::Leaves).last().map(String::as_str),
            Some("a")
        );
        assert_eq!(rotate.hand_to(Phase::Leaves, "a").as_deref(), Some("b"));
        assert_eq!(
            rotate.order_of(Phase::DropOld).last().map(String::as_str),
            Some("b")
        );
        assert_eq!(rotate.hand_to(Phase::Trust, "a"), None);
    }

    #[test]
    fn bundles_hold_both_cas_then_the_new_one() {
        let rotate = args(&["a"]);
        assert_eq!(rotate.bundle(Phase::Trust), "OLD\nNEW\n");
        assert_eq!(rotate.bundle(Phase::Leaves), "OLD\nNEW\n");
        assert_eq!(rotate.bundle(Phase::DropOld), "NEW\n");
        assert_eq!(
            rotate.staged("a", "etcd-peer").1,
            PathBuf::from("/new/rotate-x/a/etcd-peer.key")
        );
    }

    #[test]
    fn the_dry_run_text_names_phases_orders_and_the_single_member_outage() {
        let plan = plan_rotate_ca("c", &args(&["a", "b", "l"])).expect("plan");
        let notes = plan.notes.join("\n");
        assert!(
            notes.contains("phase 1/3 (trust old + new CA): rolling restart a -> b -> l; l comes last"),
            "{notes}"
        );
        assert!(
            notes.contains("phase 2/3 (leaf certificates from the new CA): rolling restart b -> l -> a"),
            "{notes}"
        );
        assert!(
            notes.contains("phase 3/3 (trust the new CA only): rolling restart l -> a -> b"),
            "{notes}"
        );
        assert!(notes.contains("fleet CA"), "{notes}");
        assert!(
            plan.steps[0].description.starts_with("phase 1/3"),
            "{}",
            plan.steps[0].description
        );
        let single = plan_rotate_ca("c", &args(&["a"])).expect("plan");
        assert_eq!(single.steps.len(), 3);
        assert!(single.notes.join("\n").contains("only member"));
        assert!(plan_rotate_ca("c", &args(&[])).is_err());
    }

    #[test]
    fn a_resume_position_is_the_first_step_not_done() {
        // The journal keeps the planned steps; a resume runs from the first
        // one not done, in the same phase and order.
        let plan = plan_rotate_ca("c", &args(&["a", "b", "l"])).expect("plan");
        let done = 4; // phase 1 and the first of phase 2
        let next = &plan.steps[done];
        assert_eq!(next.id, "ca-leaves:l");
        assert!(matches!(
            next.kind,
            StepKind::Certs(CertStep::RotateCa {
                phase: Phase::Leaves,
                ..
            })
        ));
    }
}
