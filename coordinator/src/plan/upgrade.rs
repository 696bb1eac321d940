//! `etcdops upgrade`, planned (pure, table-tested): the guards an etcd
//! version upgrade must pass ([`preflight`]: one version everywhere, the
//! target exactly one minor ahead or a patch release, never a downgrade, the
//! target binary runnable on every host and the same release everywhere, no
//! release etcd's maintainers recommend against unless accepted), the plan
//! ([`plan_upgrade`]: a verified snapshot, then every member in rolling order
//! — learners, followers, the leader last after a leadership transfer —
//! `switch-binary:M`, then `cluster-version`), and its rollback
//! ([`plan_rollback`]: only while the cluster version has not moved).

use std::collections::BTreeMap;

use etcdops_format::etcd_version::EtcdVersion;
use serde::{Deserialize, Serialize};

use super::planner::{OpKind, Plan, Step, rolling_steps, snapshot_first};
use super::safety::Finding;
use super::step::{RollingStep, SnapshotTo, StepKind};
use super::view::ClusterView;

/// What an upgrade (and its rollback) carries in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeArgs {
    /// The target etcd binary, the same path on every host.
    pub binary: String,
    /// The release it reports (`--version`), e.g. "3.5.1".
    pub version: String,
    /// Each member's binary before the upgrade (what a rollback puts back).
    pub from: BTreeMap<String, String>,
    /// The release every member ran before, e.g. "3.4.23".
    pub from_version: String,
    /// `--accept-unsafe-release`: a release etcd's maintainers recommend against.
    pub accept_unsafe_release: bool,
}

/// One host as the upgrade's preflight sees it (its agent's EtcdVersions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeHost {
    pub name: String,
    /// Why its agent could not be asked.
    pub unreachable: Option<String>,
    /// The etcd release the member runs (etcd's `etcd_server_version`).
    pub server_version: Option<String>,
    /// The cluster version the member reports (`etcd_cluster_version`).
    pub cluster_version: Option<String>,
    /// The binary its unit runs ("" when the backend cannot say or switch it).
    pub unit_binary: String,
    /// The target binary's `--version` on this host, or why it has none.
    pub target: Result<String, String>,
}

/// The command's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub binary: String,
    /// `--to VERSION`: the release the binary must report.
    pub to: Option<String>,
    pub accept_unsafe_release: bool,
}

/// Whether going from `from` to `to` is one etcd supports in a rolling
/// upgrade: a patch release of the same minor, or exactly the next minor.
pub fn check_step(from: EtcdVersion, to: EtcdVersion) -> Result<(), String> {
    if to == from {
        return Err(format!("every member already runs etcd {to}: nothing to upgrade"));
    }
    if to < from {
        return Err(format!(
            "etcd {to} is older than the {from} the members run: `etcdops upgrade` only goes forward; \
             while the cluster version has not moved use `etcdops upgrade --rollback OP`, after it a restore \
             from the pre-upgrade snapshot"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Err(format!(
            "etcd {from} -> {to} skips a minor version: etcd upgrades one minor at a time \
             ({from} -> {}.{}.x first)",
            from.major,
            from.minor + 1
        ));
    }
    Ok(())
}

fn finding(member: Option<&str>, seen: String, action: &str) -> Finding {
    Finding {
        member: member.map(str::to_string),
        seen,
        action: action.to_string(),
    }
}

/// Every guard before anything changes; the journaled args when they pass.
/// A finding with a member names that host.
pub fn preflight(request: &UpgradeRequest, hosts: &[UpgradeHost]) -> Result<UpgradeArgs, Vec<Finding>> {
    let mut findings = Vec::new();
    if hosts.is_empty() {
        findings.push(finding(
            None,
            "the cluster has no members in the fleet file".into(),
            "list them",
        ));
    }
    let mut from = BTreeMap::new();
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    for h in hosts {
        if let Some(why) = &h.unreachable {
            findings.push(finding(
                Some(&h.name),
                format!("its agent cannot be asked: {why}"),
                "every member's agent must answer before an upgrade: start it, or fix the fleet file",
            ));
            continue;
        }
        match h.server_version.as_deref().map(str::parse::<EtcdVersion>) {
            Some(Ok(v)) => servers.push((h.name.as_str(), v)),
            _ => findings.push(finding(
                Some(&h.name),
                format!("its etcd does not report its version ({:?})", h.server_version),
                "the member must run and answer before an upgrade: check it with `etcdops status`",
            )),
        }
        if h.unit_binary.is_empty() {
            findings.push(finding(
                Some(&h.name),
                "its agent cannot switch the binary etcd runs (it cannot say which binary that is: a systemd \
                 unit with other than one ExecStart=, or an agent older than the switch)"
                    .into(),
                "check the unit (`systemctl cat etcd`) and the agent's log, or upgrade this host's etcd package by \
                 hand, one member at a time",
            ));
        } else {
            from.insert(h.name.clone(), h.unit_binary.clone());
        }
        match &h.target {
            Ok(v) => match v.parse::<EtcdVersion>() {
                Ok(v) => targets.push((h.name.as_str(), v)),
                Err(e) => findings.push(finding(Some(&h.name), format!("{}: {e}", request.binary), "")),
            },
            Err(why) => findings.push(finding(
                Some(&h.name),
                format!("the target binary is not runnable there: {why}"),
                "install the target etcd release at the same path on every host first",
            )),
        }
    }
    let mut distinct: Vec<EtcdVersion> = servers.iter().map(|(_, v)| *v).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > 1 {
        let list: Vec<String> = servers.iter().map(|(n, v)| format!("{n} {v}")).collect();
        findings.push(finding(
            None,
            format!("members run different etcd versions ({})", list.join(", ")),
            "finish the upgrade that started this (`etcdops op resume OP`) or roll it back (`etcdops upgrade --rollback OP`)",
        ));
    }
    let mut target_versions: Vec<EtcdVersion> = targets.iter().map(|(_, v)| *v).collect();
    target_versions.sort_unstable();
    target_versions.dedup();
    if target_versions.len() > 1 {
        let list: Vec<String> = targets.iter().map(|(n, v)| format!("{n} {v}")).collect();
        findings.push(finding(
            None,
            format!(
                "{} is not the same release on every host ({})",
                request.binary,
                list.join(", ")
            ),
            "install one etcd release at that path on every host",
        ));
    }
    let target = target_versions.first().copied();
    if let (Some(to), Some(want)) = (target, &request.to) {
        match want.parse::<EtcdVersion>() {
            Ok(want) if want == to => {}
            Ok(want) => findings.push(finding(
                None,
                format!("--to {want}, but {} reports etcd {to}", request.binary),
                "point --etcd-binary at the release you want",
            )),
            Err(e) => findings.push(finding(None, format!("--to: {e}"), "")),
        }
    }
    let cluster_version = hosts
        .iter()
        .filter_map(|h| h.cluster_version.as_deref())
        .find_map(|v| format!("{v}.0").parse::<EtcdVersion>().ok());
    if let (Some(&current), Some(to)) = (distinct.first(), target)
        && distinct.len() == 1
    {
        if let Err(why) = check_step(current, to) {
            let why = match cluster_version {
                Some(cv) if to < current && (to.major, to.minor) < (cv.major, cv.minor) => format!(
                    "a downgrade to etcd {to} after the cluster version moved to {}: etcd refuses members older \
                     than the cluster version",
                    cv.minor_string()
                ),
                _ => why,
            };
            findings.push(finding(
                None,
                why,
                "pick the next release (etcd supports one minor at a time, or a patch release)",
            ));
        }
        if to.unsafe_release() && !request.accept_unsafe_release {
            findings.push(finding(
                None,
                format!(
                    "etcd {to} is a release etcd's maintainers recommend against in production \
                     (3.5.0-3.5.2: a data-inconsistency bug, etcd #13766, fixed in 3.5.3)"
                ),
                "upgrade to 3.5.3 or later; --accept-unsafe-release goes ahead anyway (tests only)",
            ));
        }
    }
    if !findings.is_empty() {
        return Err(findings);
    }
    let (Some(&current), Some(to)) = (distinct.first(), target) else {
        return Err(vec![finding(
            None,
            "no member reported a version".into(),
            "check `etcdops status`",
        )]);
    };
    Ok(UpgradeArgs {
        binary: request.binary.clone(),
        version: to.to_string(),
        from,
        from_version: current.to_string(),
        accept_unsafe_release: request.accept_unsafe_release,
    })
}

/// Whether a finding is a member's agent that did not answer (exit 1 rather than a refusal of the request).
pub fn unreachable(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| f.seen.starts_with("its agent cannot be asked"))
}

fn minor_moves(args: &UpgradeArgs) -> bool {
    match (
        args.from_version.parse::<EtcdVersion>(),
        args.version.parse::<EtcdVersion>(),
    ) {
        (Ok(from), Ok(to)) => (from.major, from.minor) != (to.major, to.minor),
        _ => false,
    }
}

/// The upgrade: a verified snapshot into `snapshot_to`, every member in
/// rolling order, then (a new minor) the wait for the cluster version.
pub fn plan_upgrade(view: &ClusterView, args: &UpgradeArgs, snapshot_to: &SnapshotTo) -> Plan {
    let mut notes = vec![format!(
        "etcd {} -> {} with {} on every member, one at a time (learners, followers, the leader last after a leadership transfer)",
        args.from_version, args.version, args.binary
    )];
    let members: Vec<_> = view.members.iter().collect();
    let steps = rolling_steps(
        view,
        &members,
        None,
        |member| StepKind::Rolling(RollingStep::SwitchBinary { member }),
        &mut notes,
    );
    let last = steps.last().map(|s| s.id.clone()).unwrap_or_default();
    let mut steps = snapshot_first(steps, Some(snapshot_to), &mut notes);
    if minor_moves(args) {
        let to = args
            .version
            .parse::<EtcdVersion>()
            .map(|v| v.minor_string())
            .unwrap_or_default();
        steps.push(Step::new(StepKind::Rolling(RollingStep::ClusterVersion), None));
        notes.push(format!(
            "rollback (`etcdops upgrade --rollback OP`) is possible until step {last}: once every member runs {}, \
             etcd moves the cluster version to {to} within seconds and members older than it cannot rejoin; after \
             that the way back is `etcdops restore --snapshot` of the pre-upgrade snapshot",
            args.version
        ));
    } else {
        notes.push(format!(
            "a patch release: the cluster version stays; `etcdops upgrade --rollback OP` puts {} back at any time",
            args.from_version
        ));
    }
    if args.accept_unsafe_release {
        notes.push(format!(
            "--accept-unsafe-release: etcd {} is not for production (etcd #13766)",
            args.version
        ));
    }
    Plan {
        kind: OpKind::Upgrade,
        cluster: view.cluster.clone(),
        steps,
        notes,
    }
}

/// The rollback of upgrade `op`: every member that runs another release
/// than before goes back to its binary, one at a time in rolling order —
/// refused once the cluster version has moved past the old minor. So does
/// every member in `switched`: its unit runs another binary than before
/// although its etcd still reports the old release (the upgrade stopped
/// between its SetEtcdBinary and its restart), or its next restart would
/// upgrade it.
pub fn plan_rollback(
    view: &ClusterView,
    op: &str,
    args: &UpgradeArgs,
    cluster_version: Option<&str>,
    snapshot: Option<&str>,
    switched: &[String],
) -> Result<Plan, String> {
    let from: EtcdVersion = args
        .from_version
        .parse()
        .map_err(|e| format!("operation {op}: its journal record holds no usable version: {e}"))?;
    if let Some(cv) = cluster_version
        && let Ok(cv) = format!("{cv}.0").parse::<EtcdVersion>()
        && (cv.major, cv.minor) > (from.major, from.minor)
    {
        return Err(format!(
            "the cluster version already moved to {}: a downgrade to etcd {from} is refused (etcd does not let \
             members older than the cluster version rejoin); the way back is a restore of the pre-upgrade snapshot{}",
            cv.minor_string(),
            snapshot
                .map(|s| format!(" (`etcdops restore --snapshot {s}`)"))
                .unwrap_or_default()
        ));
    }
    let members: Vec<_> = view
        .members
        .iter()
        .filter(|m| {
            args.from.contains_key(&m.name)
                && (m.etcd_version != args.from_version || switched.contains(&m.name))
        })
        .collect();
    let mut notes = vec![format!(
        "every member back to etcd {} (the binary it ran before {op}), one at a time",
        args.from_version
    )];
    let steps = rolling_steps(
        view,
        &members,
        None,
        |member| StepKind::Rolling(RollingStep::SwitchBinary { member }),
        &mut notes,
    );
    if steps.is_empty() {
        notes.push(format!("every member already runs etcd {}", args.from_version));
    }
    Ok(Plan {
        kind: OpKind::UpgradeRollback,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::view::MemberView;

    fn v(s: &str) -> EtcdVersion {
        s.parse().expect(s)
    }

    #[test]
    fn one_minor_at_a_time_or_a_patch_never_down() {
        let table = [
            ("3.4.23", "3.5.1", Ok(())),
            ("3.4.23", "3.5.17", Ok(())),
            ("3.4.23", "3.4.27", Ok(())),
            ("3.5.1", "3.5.3", Ok(())),
            ("3.5.17", "3.6.0", Ok(())),
            ("3.4.23", "3.6.0", Err("skips a minor version")),
            ("3.4.23", "4.0.0", Err("skips a minor version")),
            ("3.5.1", "3.4.23", Err("older than")),
            ("3.5.3", "3.5.1", Err("older than")),
            ("3.4.23", "3.4.23", Err("already runs")),
        ];
        for (from, to, want) in table {
            let got = check_step(v(from), v(to));
            match want {
                Ok(()) => assert!(got.is_ok(), "{from} -> {to}: {got:?}"),
                Err(text) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(text)),
                    "{from} -> {to}: {got:?}"
                ),
            }
        }
    }

    fn host(name: &str, version: &str, target: Result<&str, &str>) -> UpgradeHost {
        UpgradeHost {
            name: name.into(),
            unreachable: None,
            server_version: Some(version.into()),
            cluster_version: Some(version.rsplit_once('.').map(|(m, _)| m).unwrap_or("").into()),
            unit_binary: "/usr/bin/etcd".into(),
            target: target.map(str::to_string).map_err(str::to_string),
        }
    }

    fn request(accept: bool) -> UpgradeRequest {
        UpgradeRequest {
            binary: "/opt/etcd-3.5.1/etcd".into(),
            to: None,
            accept_unsafe_release: accept,
        }
    }

    fn hosts() -> Vec<UpgradeHost> {
        (1..=3)
            .map(|i| host(&format!("etcd{i}"), "3.4.23", Ok("3.5.1")))
            .collect()
    }

    #[test]
    fn the_guards_refuse_with_what_and_what_to_do() {
        let args = preflight(&request(true), &hosts()).expect("3.4.23 -> 3.5.1 accepted");
        assert_eq!(
            (args.from_version.as_str(), args.version.as_str()),
            ("3.4.23", "3.5.1")
        );
        assert_eq!(args.from.len(), 3);
        assert_eq!(args.from["etcd2"], "/usr/bin/etcd");

        type Hosts = Vec<UpgradeHost>;
        type Case = (
            &'static str,
            Box<dyn Fn(&mut Hosts, &mut UpgradeRequest)>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "unsafe release",
                Box::new(|_: &mut Hosts, r: &mut UpgradeRequest| r.accept_unsafe_release = false),
                "recommend against in production",
            ),
            (
                "mixed versions",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| h[1].server_version = Some("3.5.1".into())),
                "different etcd versions",
            ),
            (
                "binary missing",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| h[2].target = Err("No such file".into())),
                "not runnable there",
            ),
            (
                "skip a minor",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| {
                    h.iter_mut().for_each(|h| h.target = Ok("3.6.0".into()))
                }),
                "skips a minor",
            ),
            (
                "a downgrade after the version moved",
                Box::new(|h: &mut Hosts, r: &mut UpgradeRequest| {
                    r.binary = "/usr/bin/etcd".into();
                    h.iter_mut().for_each(|h| {
                        h.server_version = Some("3.5.1".into());
                        h.cluster_version = Some("3.5".into());
                        h.target = Ok("3.4.23".into());
                    });
                }),
                "after the cluster version moved to 3.5",
            ),
            (
                "two releases",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| h[0].target = Ok("3.5.2".into())),
                "not the same release on every host",
            ),
            (
                "--to disagrees",
                Box::new(|_: &mut Hosts, r: &mut UpgradeRequest| r.to = Some("3.5.17".into())),
                "--to 3.5.17, but",
            ),
            (
                "systemd",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| h[0].unit_binary.clear()),
                "cannot switch the binary",
            ),
            (
                "unreachable",
                Box::new(|h: &mut Hosts, _: &mut UpgradeRequest| {
                    h[0].unreachable = Some("connection refused".into())
                }),
                "cannot be asked",
            ),
        ];
        for (name, change, expect) in cases {
            let (mut h, mut r) = (hosts(), request(true));
            change(&mut h, &mut r);
            let findings = preflight(&r, &h).expect_err(name);
            assert!(
                findings.iter().any(|f| f.seen.contains(expect)),
                "{name}: {findings:?}"
            );
            assert_eq!(unreachable(&findings), name == "unreachable", "{name}");
        }
    }

    fn view(leader: usize, version: &str) -> ClusterView {
        ClusterView {
            cluster: "c".into(),
            members: (1..=3)
                .map(|i| MemberView {
                    name: format!("etcd{i}"),
                    is_leader: i == leader,
                    id: i as u64,
                    leader_id: leader as u64,
                    etcd_version: version.into(),
                    ..MemberView::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_plan_snapshots_first_and_upgrades_the_leader_last() {
        let args = preflight(&request(true), &hosts()).expect("args");
        let to = SnapshotTo::Dir { path: "/s".into() };
        let plan = plan_upgrade(&view(1, "3.4.23"), &args, &to);
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "snapshot",
                "switch-binary:etcd2",
                "switch-binary:etcd3",
                "transfer-leadership:etcd1",
                "switch-binary:etcd1",
                "cluster-version"
            ]
        );
        let notes = plan.notes.join("\n");
        assert!(
            notes.contains("possible until step switch-binary:etcd1"),
            "{notes}"
        );
        assert!(notes.contains("--accept-unsafe-release"), "{notes}");
        for id in ids {
            assert_eq!(StepKind::from_id(id).map(|k| k.id()).as_deref(), Some(id));
        }
    }

    #[test]
    fn rollback_only_while_the_cluster_version_has_not_moved() {
        let args = preflight(&request(true), &hosts()).expect("args");
        let mut mixed = view(2, "3.4.23");
        mixed.members[0].etcd_version = "3.5.1".into();
        mixed.members[2].etcd_version = "3.5.1".into();
        let plan = plan_rollback(&mixed, "upgrade-1", &args, Some("3.4"), None, &[]).expect("rollback");
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["switch-binary:etcd1", "switch-binary:etcd3"]);
        // Switched but not restarted yet: back too.
        let plan = plan_rollback(&mixed, "upgrade-1", &args, Some("3.4"), None, &["etcd2".into()])
            .expect("rollback");
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "switch-binary:etcd1",
                "switch-binary:etcd3",
                "transfer-leadership:etcd2",
                "switch-binary:etcd2"
            ]
        );
        let err = plan_rollback(
            &view(1, "3.5.1"),
            "upgrade-1",
            &args,
            Some("3.5"),
            Some("/s/c.db"),
            &[],
        )
        .expect_err("moved");
        assert!(
            err.contains("already moved to 3.5") && err.contains("restore --snapshot /s/c.db"),
            "{err}"
        );
    }
}
