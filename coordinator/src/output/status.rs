//! `etcdops status`: per-member status from `GetStatus`, the cluster verdict
//! (the findings of [`safety::check`] on the view of the same replies), and
//! its table and JSON.

use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::Reply;
use crate::output::hex_id;
use crate::output::table::{self, NONE};
use crate::plan::safety::{self, Tolerate};
use crate::plan::view::ClusterView;

/// The whole `status` report; also the JSON document (`-w json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// True when the cluster checks found no problem: every agent and
    /// member answered, each fleet member's agent serves the etcd member of
    /// that name, all agree on one cluster ID and one leader, and no alarm or
    /// member error is raised.
    pub ok: bool,
    /// The distinct cluster IDs the members report (hex); more than one is a split.
    pub cluster_ids: Vec<String>,
    /// The leader, when exactly one member says it leads.
    pub leader: Option<Leader>,
    /// Members whose agent and etcd both answered without errors.
    pub healthy: usize,
    /// Members in the fleet's cluster.
    pub total: usize,
    /// Why `ok` is false, one finding each (`MEMBER: what was seen — what
    /// to do`), in the words `--dry-run` and the executor use; empty when ok.
    pub problems: Vec<String>,
    /// Findings that do not make the cluster unhealthy but make every
    /// mutating plan refuse (a disk over its fsync threshold), in the same form.
    pub warnings: Vec<String>,
    /// One entry per fleet member, in fleet order.
    pub members: Vec<MemberStatus>,
}

/// The one leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    /// The fleet's member name.
    pub name: String,
    /// The etcd member ID (hex).
    pub id: String,
}

/// One fleet member's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The fleet's member name.
    pub name: String,
    /// The agent URL.
    pub agent: String,
    /// Why the agent or the etcd member could not be read; null when both answered.
    pub error: Option<String>,
    /// `error` without the member, agent and advice, for a table cell.
    #[serde(skip)]
    pub error_brief: Option<String>,
    /// The agent itself; null when the agent did not answer.
    pub agent_info: Option<AgentInfo>,
    /// The etcd member; null when the agent or the member did not answer.
    pub etcd: Option<EtcdStatus>,
    /// The etcd unit (systemd service or supervised process); null when the agent did not answer.
    pub unit: Option<UnitStatus>,
    /// The member's data dir; null when the agent did not answer.
    pub data_dir: Option<DataDirStatus>,
    /// The agent's host; null when the agent did not answer or did not report it.
    pub host: Option<HostStatus>,
    /// The agent's latest light periodic disk probe; null when none has run
    /// (or the agent did not answer).
    pub disk_health: Option<DiskHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// The name in the agent's certificate.
    pub name: String,
    pub version: String,
    /// When the agent's serving certificate expires (Unix seconds).
    pub cert_not_after_unix: i64,
    /// The certificate of the host that expires first (etcd's files and the
    /// agent's own; `etcdops certs check-expiration` lists them all); null
    /// when the agent read none.
    pub nearest_cert: Option<NearestCert>,
}

/// The certificate of a host that expires first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearestCert {
    /// etcd-server, etcd-peer, etcd-trusted-ca, agent, ...
    pub cert: String,
    pub not_after_unix: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdStatus {
    /// The client URL the agent talks to.
    pub endpoint: String,
    pub member_id: String,
    pub member_name: String,
    pub cluster_id: String,
    pub leader_id: String,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    /// Bytes.
    pub db_size: i64,
    /// Bytes.
    pub db_size_in_use: i64,
    pub version: String,
    pub alarms: Vec<Alarm>,
    /// Errors the member reports in its own status.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    pub member_id: String,
    /// `NOSPACE`, `CORRUPT` or `UNKNOWN(n)`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// `process` or `systemd`.
    pub backend: String,
    pub unit: String,
    /// `active`, `inactive`, `activating`, `deactivating`, `failed` or `unknown`.
    pub state: String,
    pub main_pid: u32,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDirStatus {
    pub path: String,
    pub exists: bool,
    pub size_bytes: u64,
    pub fs_free_bytes: u64,
    pub fs_total_bytes: u64,
    pub fs_inodes_total: u64,
    pub fs_inodes_free: u64,
    pub has_wal: bool,
    pub has_snap: bool,
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    pub error: Option<String>,
}

/// Facts about an agent's host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatus {
    pub hostname: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub uptime_secs: u64,
}

// Load averages come from the kernel and are never NaN.
impl Eq for HostStatus {}

/// The agent's latest light periodic fdatasync probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskHealth {
    pub probed_at_unix: i64,
    pub writes: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub threshold_p99_us: u64,
    pub within_threshold: bool,
    pub error: Option<String>,
}

/// Converts one agent's reply (the prost edge) into plain data.
pub fn member_status(reply: Reply<pb::GetStatusResponse>) -> MemberStatus {
    let agent = reply.agent.to_string();
    let response = match reply.result {
        Ok(response) => response,
        Err(e) => {
            return MemberStatus {
                name: reply.member,
                agent,
                error: Some(e.to_string()),
                error_brief: Some(e.brief()),
                agent_info: None,
                etcd: None,
                unit: None,
                data_dir: None,
                host: None,
                disk_health: None,
            };
        }
    };
    let (etcd, error, error_brief) = match response.member {
        Some(m) if m.reachable => (Some(etcd_status(m)), None, None),
        Some(m) => {
            let why = if m.error.is_empty() {
                "no reason given".to_string()
            } else {
                m.error
            };
            let error = format!("etcd member {} not answering its agent: {why}", reply.member);
            (None, Some(error), Some(format!("etcd not answering: {why}")))
        }
        None => (
            None,
            Some(format!("agent for {} sent no member status", reply.member)),
            Some("agent sent no member status".to_string()),
        ),
    };
    MemberStatus {
        name: reply.member,
        agent,
        error,
        error_brief,
        agent_info: response.agent.map(|a| AgentInfo {
            name: a.name,
            version: a.version,
            cert_not_after_unix: a.cert_not_after_unix,
            nearest_cert: (!a.nearest_cert.is_empty()).then_some(NearestCert {
                cert: a.nearest_cert,
                not_after_unix: a.nearest_cert_not_after_unix,
            }),
        }),
        etcd,
        unit: response.unit.map(|u| UnitStatus {
            state: unit_state(u.state()).to_string(),
            backend: u.backend,
            unit: u.unit,
            main_pid: u.main_pid,
            detail: u.detail,
        }),
        data_dir: response.data_dir.map(|d| DataDirStatus {
            path: d.path,
            exists: d.exists,
            size_bytes: d.size_bytes,
            fs_free_bytes: d.fs_free_bytes,
            fs_total_bytes: d.fs_total_bytes,
            fs_inodes_total: d.fs_inodes_total,
            fs_inodes_free: d.fs_inodes_free,
            has_wal: d.has_wal,
            has_snap: d.has_snap,
            owner_uid: d.owner_uid,
            owner_gid: d.owner_gid,
            error: (!d.error.is_empty()).then_some(d.error),
        }),
        host: response.host.map(|h| HostStatus {
            hostname: h.hostname,
            cpus: h.cpus,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            load1: h.load1,
            load5: h.load5,
            load15: h.load15,
            uptime_secs: h.uptime_secs,
        }),
        disk_health: response.disk.map(|d| DiskHealth {
            probed_at_unix: d.probed_at_unix,
            writes: d.writes,
            p99_us: d.p99_us,
            max_us: d.max_us,
            threshold_p99_us: d.threshold_p99_us,
            within_threshold: d.within_threshold,
            error: (!d.error.is_empty()).then_some(d.error),
        }),
    }
}

fn etcd_status(m: pb::MemberStatus) -> EtcdStatus {
    EtcdStatus {
        endpoint: m.endpoint,
        member_id: hex_id(m.member_id),
        member_name: m.member_name,
        cluster_id: hex_id(m.cluster_id),
        leader_id: hex_id(m.leader_id),
        is_leader: m.is_leader,
        is_learner: m.is_learner,
        raft_term: m.raft_term,
        raft_index: m.raft_index,
        raft_applied_index: m.raft_applied_index,
        revision: m.revision,
        db_size: m.db_size,
        db_size_in_use: m.db_size_in_use,
        version: m.etcd_version,
        alarms: m
            .alarms
            .into_iter()
            .map(|a| Alarm {
                member_id: hex_id(a.member_id),
                kind: a.kind,
            })
            .collect(),
        errors: m.member_errors,
    }
}

/// The name of a unit state in tables and JSON.
pub fn unit_state(state: pb::UnitState) -> &'static str {
    match state {
        pb::UnitState::Active => "active",
        pb::UnitState::Inactive => "inactive",
        pb::UnitState::Activating => "activating",
        pb::UnitState::Deactivating => "deactivating",
        pb::UnitState::Failed => "failed",
        pb::UnitState::Unspecified => "unknown",
    }
}

/// The verdict over all members: what is wrong, who leads, how many are
/// healthy. The problems are the findings of the one set of cluster checks
/// ([`safety::check`]) on the view of the same replies, in the words
/// `--dry-run` and the executor print; a slow disk is a warning (it does not
/// make the cluster unhealthy, but every mutating plan refuses it).
pub fn evaluate(view: &ClusterView, members: Vec<MemberStatus>) -> StatusReport {
    let problems = safety::check(
        view,
        Tolerate {
            slow_disk: true,
            ..Tolerate::default()
        },
    );
    let warnings = safety::disk(view);

    let answering: Vec<(&MemberStatus, &EtcdStatus)> = members
        .iter()
        .filter_map(|m| m.etcd.as_ref().map(|e| (m, e)))
        .collect();
    let mut cluster_ids: Vec<String> = answering.iter().map(|(_, e)| e.cluster_id.clone()).collect();
    cluster_ids.sort();
    cluster_ids.dedup();
    let leaders: Vec<(&MemberStatus, &EtcdStatus)> =
        answering.iter().copied().filter(|(_, e)| e.is_leader).collect();
    let leader = match leaders.as_slice() {
        [(m, e)] => Some(Leader {
            name: m.name.clone(),
            id: e.member_id.clone(),
        }),
        _ => None,
    };
    let healthy = members
        .iter()
        .filter(|m| m.error.is_none() && m.etcd.as_ref().is_some_and(|e| e.errors.is_empty()))
        .count();
    StatusReport {
        cluster: view.cluster.clone(),
        ok: problems.is_empty(),
        cluster_ids,
        leader,
        healthy,
        total: members.len(),
        problems: problems.iter().map(ToString::to_string).collect(),
        warnings: warnings.iter().map(ToString::to_string).collect(),
        members,
    }
}

/// The table header of `status`.
pub const HEADER: [&str; 14] = [
    "MEMBER",
    "AGENT",
    "ID",
    "VERSION",
    "DB SIZE",
    "IN USE",
    "IS LEADER",
    "IS LEARNER",
    "RAFT TERM",
    "RAFT INDEX",
    "REVISION",
    "UNIT",
    "CERT EXPIRES",
    "ERRORS",
];

/// The nearest certificate expiry of a member's host: `2027-12-02 etcd-peer`.
fn nearest_cert(m: &MemberStatus) -> String {
    m.agent_info
        .as_ref()
        .and_then(|a| a.nearest_cert.as_ref())
        .map_or(NONE.to_string(), |n| {
            let date = etcdops_certs::inspect::format_unix(n.not_after_unix);
            let day = date.split(' ').next().unwrap_or(&date).to_string();
            format!("{day} {}", n.cert)
        })
}

/// One table row per member.
pub fn rows(report: &StatusReport) -> Vec<Vec<String>> {
    report.members.iter().map(row).collect()
}

fn row(m: &MemberStatus) -> Vec<String> {
    let mut errors: Vec<String> = m
        .error_brief
        .as_ref()
        .or(m.error.as_ref())
        .into_iter()
        .cloned()
        .collect();
    let unit = m.unit.as_ref().map_or(NONE.to_string(), |u| u.state.clone());
    let Some(e) = &m.etcd else {
        let mut cells = vec![m.name.clone(), m.agent.clone()];
        cells.extend(std::iter::repeat_n(NONE.to_string(), 9));
        cells.push(unit);
        cells.push(nearest_cert(m));
        cells.push(errors.join(", "));
        return cells;
    };
    errors.extend(e.errors.iter().cloned());
    errors.extend(e.alarms.iter().map(|a| format!("alarm:{}", a.kind)));
    if let Some(error) = m.data_dir.as_ref().and_then(|d| d.error.as_ref()) {
        errors.push(format!("data dir: {error}"));
    }
    vec![
        m.name.clone(),
        m.agent.clone(),
        e.member_id.clone(),
        e.version.clone(),
        table::human_bytes_i64(e.db_size),
        table::human_bytes_i64(e.db_size_in_use),
        table::yes_no(e.is_leader).to_string(),
        table::yes_no(e.is_learner).to_string(),
        e.raft_term.to_string(),
        e.raft_index.to_string(),
        e.revision.to_string(),
        unit,
        nearest_cert(m),
        errors.join(", "),
    ]
}

/// The summary line under the table.
pub fn summary(report: &StatusReport) -> String {
    let ids = match report.cluster_ids.as_slice() {
        [] => "cluster ID unknown".to_string(),
        [one] => format!("cluster ID {one}"),
        many => format!("cluster IDs {} (disagree)", many.join(", ")),
    };
    let leader = match &report.leader {
        Some(l) => format!("leader {} ({})", l.name, l.id),
        None => "no single leader".to_string(),
    };
    format!(
        "cluster {}: {ids}, {leader}, {}/{} members healthy",
        report.cluster, report.healthy, report.total
    )
}

/// The whole text report: table, summary, then one line per problem and per warning.
pub fn render_table(report: &StatusReport) -> String {
    let problems = report.problems.iter().map(|p| ("problem", p.as_str()));
    let warnings = report.warnings.iter().map(|w| ("warning", w.as_str()));
    table::report(&HEADER, rows(report), &summary(report), problems.chain(warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::agents::AgentErrorKind;
    use crate::fleet::Member;

    fn agent_url(id: u64) -> String {
        format!("https://127.0.0.1{id}:7443")
    }

    /// A member's answered GetStatus: name etcd{id}, leader ID `leader_id`.
    fn answered(id: u64, cluster: u64, leader: bool, leader_id: u64) -> pb::GetStatusResponse {
        pb::GetStatusResponse {
            agent: Some(pb::AgentInfo {
                name: format!("etcd{id}"),
                version: "0.1.0".into(),
                cert_not_after_unix: 0,
                ..Default::default()
            }),
            member: Some(pb::MemberStatus {
                reachable: true,
                endpoint: "https://127.0.0.1:2379".into(),
                member_id: id,
                member_name: format!("etcd{id}"),
                cluster_id: cluster,
                leader_id,
                is_leader: leader,
                raft_term: 2,
                raft_index: 100,
                raft_applied_index: 100,
                revision: 42,
                db_size: 20_480,
                db_size_in_use: 16_384,
                etcd_version: "3.5.16".into(),
                ..Default::default()
            }),
            unit: Some(pb::UnitStatus {
                backend: "process".into(),
                unit: "etcd".into(),
                state: pb::UnitState::Active.into(),
                main_pid: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    type Answer = (u64, Result<pb::GetStatusResponse, AgentErrorKind>);

    fn up(id: u64, cluster: u64, leader: bool) -> Answer {
        (id, Ok(answered(id, cluster, leader, 1)))
    }

    fn agent_down(id: u64) -> Answer {
        (
            id,
            Err(AgentErrorKind::Unreachable {
                reason: "connection refused".into(),
            }),
        )
    }

    fn etcd_down(id: u64) -> Answer {
        let mut status = answered(id, 0, false, 0);
        status.member = Some(pb::MemberStatus {
            reachable: false,
            error: "connection refused".into(),
            ..Default::default()
        });
        (id, Ok(status))
    }

    /// The report of these answers, through the view as `etcdops status` builds it.
    fn evaluate_answers(answers: Vec<Answer>) -> StatusReport {
        let members: Vec<Member> = answers
            .iter()
            .map(|(id, _)| Member::new(&format!("etcd{id}"), &agent_url(*id)).expect("member"))
            .collect();
        let replies: Vec<Reply<pb::GetStatusResponse>> = answers
            .into_iter()
            .zip(&members)
            .map(|((_, result), member)| Reply {
                member: member.name.clone(),
                agent: member.agent.clone(),
                took: std::time::Duration::from_millis(2),
                result: result.map_err(|kind| crate::agents::AgentError::new(member, kind)),
            })
            .collect();
        let view = crate::observe::view_of("prod-a", &members, &replies, None);
        evaluate(&view, replies.into_iter().map(member_status).collect())
    }

    fn reply(
        result: Result<pb::GetStatusResponse, crate::agents::AgentErrorKind>,
    ) -> Reply<pb::GetStatusResponse> {
        let member = crate::fleet::Member::new("etcd2", "https://127.0.0.12:7443").expect("member");
        Reply {
            member: member.name.clone(),
            agent: member.agent.clone(),
            took: std::time::Duration::from_millis(2),
            result: result.map_err(|kind| crate::agents::AgentError::new(&member, kind)),
        }
    }

    #[test]
    fn converts_replies_at_the_edge() {
        let answered = pb::GetStatusResponse {
            agent: Some(pb::AgentInfo {
                name: "etcd2".into(),
                version: "0.1.0".into(),
                cert_not_after_unix: 9,
                ..Default::default()
            }),
            member: Some(pb::MemberStatus {
                reachable: true,
                member_id: 0x8e9e05c52164694d,
                member_name: "etcd2".into(),
                cluster_id: 7,
                is_leader: true,
                db_size: 2_000_000,
                alarms: vec![pb::Alarm {
                    member_id: 0x8e9e05c52164694d,
                    kind: "NOSPACE".into(),
                }],
                ..Default::default()
            }),
            unit: Some(pb::UnitStatus {
                state: pb::UnitState::Failed.into(),
                ..Default::default()
            }),
            data_dir: Some(pb::DataDirStatus {
                error: "permission denied".into(),
                ..Default::default()
            }),
            host: Some(pb::HostStatus {
                hostname: "db1".into(),
                cpus: 4,
                load1: 0.5,
                ..Default::default()
            }),
            disk: Some(pb::DiskHealth {
                probed_at_unix: 1_800_000_000,
                writes: 100,
                p99_us: 2500,
                threshold_p99_us: 10_000,
                within_threshold: true,
                ..Default::default()
            }),
            fences: Vec::new(),
        };
        let m = member_status(reply(Ok(answered.clone())));
        assert_eq!(m.error, None);
        let host = m.host.as_ref().expect("host");
        assert_eq!((host.hostname.as_str(), host.cpus, host.load1), ("db1", 4, 0.5));
        let disk = m.disk_health.as_ref().expect("disk health");
        assert_eq!(
            (
                disk.writes,
                disk.p99_us,
                disk.within_threshold,
                disk.error.as_deref()
            ),
            (100, 2500, true, None)
        );
        let etcd = m.etcd.as_ref().expect("etcd answered");
        assert_eq!(etcd.member_id, "8e9e05c52164694d");
        assert_eq!(etcd.alarms[0].member_id, "8e9e05c52164694d");
        assert_eq!(m.unit.as_ref().map(|u| u.state.as_str()), Some("failed"));
        assert_eq!(
            m.data_dir.as_ref().and_then(|d| d.error.as_deref()),
            Some("permission denied")
        );
        let cells = row(&m);
        assert_eq!(cells[13], "alarm:NOSPACE, data dir: permission denied");

        let mut etcd_down = answered.clone();
        etcd_down.member = Some(pb::MemberStatus {
            reachable: false,
            error: "connection refused".into(),
            ..Default::default()
        });
        let m = member_status(reply(Ok(etcd_down)));
        assert!(m.etcd.is_none() && m.unit.is_some());
        assert_eq!(
            m.error.as_deref(),
            Some("etcd member etcd2 not answering its agent: connection refused")
        );
        assert_eq!(
            m.error_brief.as_deref(),
            Some("etcd not answering: connection refused")
        );

        let mut silent = answered;
        silent.member = None;
        assert!(
            member_status(reply(Ok(silent)))
                .error
                .is_some_and(|e| e.contains("no member status"))
        );

        let m = member_status(reply(Err(crate::agents::AgentErrorKind::Unreachable {
            reason: "no route to host".into(),
        })));
        assert!(m.agent_info.is_none() && m.etcd.is_none() && m.unit.is_none());
        assert_eq!(
            m.error_brief.as_deref(),
            Some("agent unreachable: no route to host")
        );
    }

    #[test]
    fn verdicts_are_the_findings_of_the_cluster_checks() {
        let with_alarm = {
            let (id, mut status) = up(2, 7, false);
            if let Ok(pb::GetStatusResponse { member: Some(m), .. }) = status.as_mut() {
                m.alarms.push(pb::Alarm {
                    member_id: 2,
                    kind: "NOSPACE".into(),
                });
                m.member_errors.push("memberID:2 alarm:NOSPACE".into());
            }
            (id, status)
        };
        let misnamed = {
            let (id, mut status) = up(3, 7, false);
            if let Ok(pb::GetStatusResponse { member: Some(m), .. }) = status.as_mut() {
                m.member_name = "etcd9".into();
            }
            (id, status)
        };
        let no_leader = || {
            (1..=3)
                .map(|id| (id, Ok(answered(id, 7, false, 0))))
                .collect::<Vec<Answer>>()
        };
        // (case, answers, ok, healthy, leader, a problem that must be reported)
        type Case = (
            &'static str,
            Vec<Answer>,
            bool,
            usize,
            Option<&'static str>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "healthy",
                vec![up(1, 7, true), up(2, 7, false), up(3, 7, false)],
                true,
                3,
                Some("etcd1"),
                "",
            ),
            (
                "agent down",
                vec![up(1, 7, true), agent_down(2), up(3, 7, false)],
                false,
                2,
                Some("etcd1"),
                "etcd2: not reachable: agent etcd2 at https://127.0.0.12:7443 unreachable: connection refused",
            ),
            (
                "etcd down",
                vec![up(1, 7, true), etcd_down(2), up(3, 7, false)],
                false,
                2,
                Some("etcd1"),
                "etcd2: not reachable: etcd member etcd2 not answering its agent",
            ),
            ("no leader", no_leader(), false, 3, None, "no member has a leader"),
            (
                "two leaders",
                vec![up(1, 7, true), up(2, 7, true), up(3, 7, false)],
                false,
                3,
                None,
                "several members claim leadership: etcd1, etcd2",
            ),
            (
                "split",
                vec![up(1, 7, true), up(2, 8, false), up(3, 7, false)],
                false,
                3,
                Some("etcd1"),
                "different cluster IDs: 0000000000000007 (etcd1, etcd3) vs 0000000000000008 (etcd2)",
            ),
            (
                "alarm",
                vec![up(1, 7, true), with_alarm, up(3, 7, false)],
                false,
                2,
                Some("etcd1"),
                "alarm NOSPACE is active on etcd2",
            ),
            (
                "misnamed",
                vec![up(1, 7, true), up(2, 7, false), misnamed],
                false,
                3,
                Some("etcd1"),
                "etcd3: its agent https://127.0.0.13:7443 serves the etcd member named etcd9",
            ),
            (
                "all down",
                vec![agent_down(1), agent_down(2)],
                false,
                0,
                None,
                "not reachable",
            ),
        ];
        for (case, answers, ok, healthy, leader, problem) in cases {
            let report = evaluate_answers(answers);
            assert_eq!(report.ok, ok, "{case}: {:?}", report.problems);
            assert_eq!(report.ok, report.problems.is_empty(), "{case}");
            assert_eq!(report.healthy, healthy, "{case}");
            assert_eq!(report.leader.as_ref().map(|l| l.name.as_str()), leader, "{case}");
            if !problem.is_empty() {
                assert!(
                    report.problems.iter().any(|p| p.contains(problem)),
                    "{case}: {:?}",
                    report.problems
                );
            }
        }
    }

    #[test]
    fn a_slow_disk_is_a_warning_not_a_problem() {
        let (id, mut status) = up(2, 7, false);
        if let Ok(s) = status.as_mut() {
            s.disk = Some(pb::DiskHealth {
                probed_at_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
                writes: 100,
                p99_us: 25_000,
                threshold_p99_us: 10_000,
                within_threshold: false,
                ..Default::default()
            });
        }
        let report = evaluate_answers(vec![up(1, 7, true), (id, status), up(3, 7, false)]);
        assert!(report.ok, "{:?}", report.problems);
        assert_eq!(
            report.warnings,
            [
                "etcd2: its disk is over the fsync threshold (fsync p99 25.0 ms (threshold 10.0 ms)) — a slow disk makes \
              leader changes and restarts risky; check `etcdops check disk`, or pass --ignore-slow-disk"
            ]
        );
        assert!(render_table(&report).contains("\nwarning: etcd2: its disk is over"));
    }

    #[test]
    fn all_down_does_not_also_complain_about_leadership() {
        let report = evaluate_answers(vec![agent_down(1), agent_down(2)]);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report.cluster_ids.is_empty());
    }

    #[test]
    fn rows_show_dashes_for_what_is_unknown() {
        let report = evaluate_answers(vec![up(1, 7, true), agent_down(2), etcd_down(3)]);
        let rows = rows(&report);
        assert_eq!(
            rows[0][..8],
            [
                "etcd1",
                "https://127.0.0.11:7443",
                "0000000000000001",
                "3.5.16",
                "20 kB",
                "16 kB",
                "true",
                "false"
            ]
        );
        assert_eq!(rows[0][11], "active");
        assert_eq!(rows[0][12], NONE, "no certificate reported");
        assert_eq!(rows[0][13], "");
        assert_eq!(rows[1][2], NONE);
        assert_eq!(rows[1][11], NONE);
        assert_eq!(rows[1][13], "agent unreachable: connection refused");
        assert_eq!(rows[2][2], NONE);
        assert_eq!(rows[2][11], "active", "the unit is known even when etcd is down");
        assert!(rows.iter().all(|r| r.len() == HEADER.len()));
    }

    #[test]
    fn summary_names_cluster_leader_and_health() {
        let report = evaluate_answers(vec![up(1, 7, true), agent_down(2), up(3, 7, false)]);
        assert_eq!(
            summary(&report),
            "cluster prod-a: cluster ID 0000000000000007, leader etcd1 (0000000000000001), 2/3 members healthy"
        );
        let text = render_table(&report);
        assert!(text.contains("| MEMBER"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("problem: etcd2: not reachable: agent etcd2")),
            "{text}"
        );
    }

    #[test]
    fn json_schema_uses_hex_ids_and_nulls() {
        let report = evaluate_answers(vec![up(1, 7, true), agent_down(2)]);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["cluster"], "prod-a");
        assert_eq!(json["ok"], false);
        assert_eq!(json["cluster_ids"][0], "0000000000000007");
        assert_eq!(json["leader"]["id"], "0000000000000001");
        assert_eq!(json["members"][0]["error"], serde_json::Value::Null);
        assert_eq!(json["members"][0]["etcd"]["member_id"], "0000000000000001");
        assert_eq!(json["members"][0]["etcd"]["db_size"], 20_480);
        assert!(json["members"][1]["error"].is_string());
        assert_eq!(json["members"][1]["etcd"], serde_json::Value::Null);
        assert!(
            json["problems"][0].is_string() && json["warnings"].is_array(),
            "{json}"
        );
    }
}
