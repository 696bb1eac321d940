//! `etcdops upgrade`: a rolling etcd version upgrade as one journaled plan
//! (`plan/upgrade.rs` plans and guards it, `exec/upgrade.rs` runs its
//! steps), and `--rollback OP` while the cluster version has not moved.

use std::io::Write;

use clap::Args;
use etcdops_proto::v1 as pb;

use super::maintain::snapshot_to;
use super::operate::{Planned, RunArgs, observe, run_plan};
use crate::agents::Client;
use crate::cli::GlobalArgs;
use crate::cli::target::{Target, target};
use crate::exec::ExecError;
use crate::exit::ExitStatus;
use crate::plan::operation::{Operation, PreSnapshot};
use crate::plan::planner::{OpKind, PlanError};
use crate::plan::upgrade::{self, UpgradeHost, UpgradeRequest};

pub(crate) const ABOUT: &str = "\
Upgrade etcd on every member to the next release, one member at a time, as one journaled plan
instead of the runbook.

Preflight, before anything changes: every member healthy (the checks of every operation: no
alarm, disks within their fsync threshold), every member on one etcd version, the target exactly
one minor version ahead or a patch release (never a skipped minor, never a downgrade), the
target binary present and runnable at the same path on every host (its `--version`, read through
each agent) and the same release everywhere, and not a release etcd's maintainers recommend
against (3.5.0-3.5.2, etcd #13766) unless --accept-unsafe-release.

Steps: a verified snapshot (kept, named in the plan and by `etcdops op show`); then for each
member — learners, followers, the leader last after a leadership transfer — the binary its unit
runs is switched through its agent, etcd restarted, and etcdops waits until the member is
healthy, caught up and reports the new version, and compares HashKV across members; finally it
waits until the cluster version moves to the new minor and says so.

`--rollback OP` puts every member back on the binary it ran before upgrade OP, while the cluster
version has not moved (the plan says from which step that is no longer possible: after it, the
way back is `etcdops restore --snapshot` of the pre-upgrade snapshot). Abort a paused or failed
upgrade first (`etcdops op abort OP`).

The agent's process backend switches binaries (recorded in its state dir); the systemd backend
cannot yet, and the preflight says so.";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops upgrade --etcd-binary /opt/etcd-3.5.17/etcd --dry-run
  etcdops upgrade --to 3.5.17 --yes                # the binary at /opt/etcd-3.5.17/etcd
  etcdops upgrade --to 3.5.17 --pause-after switch-binary:etcd2 --yes   # a canary member
  etcdops upgrade --rollback upgrade-20261202T020000Z-1a2b --yes

Exit codes: 0 done, 1 refused (unhealthy, an agent unreachable) or stopped, 2 usage error or an
unsafe upgrade refused (skipped minor, downgrade, mixed versions, missing binary, unsafe
release), 3 another operation holds the cluster.";

/// Where `--to VERSION` looks for the binary without `--etcd-binary`.
pub const DEFAULT_PREFIX: &str = "/opt/etcd-";

/// `etcdops upgrade`
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["etcd_binary", "to", "rollback"])))]
pub struct UpgradeCmdArgs {
    /// The target etcd binary, the same absolute path on every host.
    #[arg(long, value_name = "PATH")]
    pub etcd_binary: Option<String>,
    /// The target release; without --etcd-binary the binary is /opt/etcd-VERSION/etcd.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Go ahead with a release etcd's maintainers recommend against (3.5.0-3.5.2; tests only).
    #[arg(long)]
    pub accept_unsafe_release: bool,
    /// Put every member back on the binary it ran before upgrade OP (before the cluster version moves).
    #[arg(long, value_name = "OP", conflicts_with_all = ["etcd_binary", "to", "accept_unsafe_release"])]
    pub rollback: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

fn usage(findings: &[crate::plan::safety::Finding]) -> anyhow::Error {
    let list: Vec<String> = findings.iter().map(|f| format!("  - {f}")).collect();
    anyhow::Error::new(PlanError::Usage(format!(
        "the upgrade is refused; nothing was changed:\n{}",
        list.join("\n")
    )))
}

/// EtcdVersions on every member's agent.
async fn versions(
    target: &Target,
    binaries: Vec<String>,
) -> Vec<crate::agents::Reply<pb::EtcdVersionsResponse>> {
    let timeout_ms = target.agents.agent_budget_ms();
    target
        .agents
        .fan_out(&target.cluster.members, move |mut c: Client| {
            let binaries = binaries.clone();
            async move {
                c.etcd_versions(pb::EtcdVersionsRequest { binaries, timeout_ms })
                    .await
            }
        })
        .await
}

pub(crate) async fn run(
    global: &GlobalArgs,
    args: &UpgradeCmdArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    // Another operation's fence first (exit 3): its members may be half-way.
    if !args.run.dry_run {
        crate::exec::busy(&view, "")?;
    }
    if let Some(op) = &args.rollback {
        let record = args.run.journal()?.find(op)?;
        let Operation::Upgrade { upgrade, snapshot } = &record.operation else {
            anyhow::bail!(PlanError::Usage(format!(
                "operation {} is a {}, not an upgrade",
                record.id, record.kind
            )));
        };
        let replies = versions(&target, Vec::new()).await;
        let cluster_version = replies
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .map(|v| v.cluster_version.clone())
            .filter(|v| !v.is_empty())
            .max();
        let saved = snapshot.saved.as_ref().map(|s| s.location.clone());
        // Switched but not restarted (the upgrade stopped in between): back too.
        let switched: Vec<String> = replies
            .iter()
            .filter_map(|r| {
                let v = r.result.as_ref().ok()?;
                let before = upgrade.from.get(&r.member)?;
                (!v.unit_binary.is_empty() && &v.unit_binary != before).then(|| r.member.clone())
            })
            .collect();
        let plan = upgrade::plan_rollback(
            &view,
            &record.id,
            upgrade,
            cluster_version.as_deref(),
            saved.as_deref(),
            &switched,
        )
        .map_err(PlanError::Usage)?;
        let planned = Planned {
            plan,
            operation: Operation::UpgradeRollback {
                rollback_of: record.id.clone(),
                upgrade: upgrade.clone(),
            },
        };
        return run_plan(global, target, &view, planned, &args.run, out).await;
    }
    let binary = match (&args.etcd_binary, &args.to) {
        (Some(b), _) => b.clone(),
        (None, Some(v)) => format!("{DEFAULT_PREFIX}{v}/etcd"),
        (None, None) => anyhow::bail!(PlanError::Usage("--etcd-binary or --to is required".into())),
    };
    if !binary.starts_with('/') {
        anyhow::bail!(PlanError::Usage(format!(
            "--etcd-binary {binary}: an absolute path (the same on every host)"
        )));
    }
    let replies = versions(&target, vec![binary.clone()]).await;
    let hosts: Vec<UpgradeHost> = replies
        .iter()
        .map(|r| match &r.result {
            Err(e) => UpgradeHost {
                name: r.member.clone(),
                unreachable: Some(e.to_string()),
                server_version: None,
                cluster_version: None,
                unit_binary: String::new(),
                target: Err(String::new()),
            },
            Ok(v) => {
                let t = v.binaries.first();
                UpgradeHost {
                    name: r.member.clone(),
                    unreachable: None,
                    server_version: (!v.server_version.is_empty()).then(|| v.server_version.clone()),
                    cluster_version: (!v.cluster_version.is_empty()).then(|| v.cluster_version.clone()),
                    unit_binary: v.unit_binary.clone(),
                    target: match t {
                        Some(t) if !t.version.is_empty() => Ok(t.version.clone()),
                        Some(t) => Err(t.problem.clone()),
                        None => Err("the agent did not answer for it".into()),
                    },
                }
            }
        })
        .collect();
    let request = UpgradeRequest {
        binary,
        to: args.to.clone(),
        accept_unsafe_release: args.accept_unsafe_release,
    };
    let upgrade = upgrade::preflight(&request, &hosts).map_err(|findings| {
        if upgrade::unreachable(&findings) {
            anyhow::Error::new(ExecError::Unsafe {
                cluster: target.cluster.name.clone(),
                findings,
            })
        } else {
            usage(&findings)
        }
    })?;
    let to = snapshot_to(&target.cluster, &args.run, false)
        .ok_or_else(|| anyhow::anyhow!("no place for the pre-upgrade snapshot"))?;
    let plan = upgrade::plan_upgrade(&view, &upgrade, &to);
    debug_assert_eq!(plan.kind, OpKind::Upgrade);
    let planned = Planned {
        plan,
        operation: Operation::Upgrade {
            upgrade,
            snapshot: PreSnapshot::to(Some(to)),
        },
    };
    run_plan(global, target, &view, planned, &args.run, out).await
}
