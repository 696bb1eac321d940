//! `etcdops member list`: the membership as the members report it, checked for agreement, and its table and JSON.

use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::Reply;
use crate::fleet::Cluster;
use crate::output::hex_id;
use crate::output::table::{self, NONE};

/// The whole `member list` report; also the JSON document (`-w json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberListReport {
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// True when every agent answered, every member reports the same
    /// membership, and it matches the fleet's member names.
    pub ok: bool,
    /// The fleet member whose view is shown (the leader's when it answered); null when none answered.
    pub source: Option<String>,
    /// Why `ok` is false, one sentence each; empty when ok.
    pub problems: Vec<String>,
    /// The etcd members, by ID.
    pub members: Vec<EtcdMember>,
}

/// One etcd member as the membership lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    /// The member ID (hex).
    pub id: String,
    /// `started`, or `unstarted` while added but not yet running (no name yet).
    pub status: String,
    /// Empty while unstarted.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// The fleet's agent for this member name; null when the fleet does not list it.
    pub agent: Option<String>,
}

/// One member's view of the membership: plain data for [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// The fleet's name of the member that reported it.
    pub reporter: String,
    pub is_leader: bool,
    pub members: Vec<ListedMember>,
}

/// A member in a view.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// Converts one agent's `GetStatus` reply into its member's view, or why there is none.
pub fn view(reply: Reply<pb::GetStatusResponse>) -> Result<MembershipView, String> {
    let response = reply.result.map_err(|e| e.to_string())?;
    let member = response
        .member
        .ok_or_else(|| format!("agent for {} sent no member status", reply.member))?;
    if !member.reachable {
        return Err(format!(
            "etcd member {} not answering its agent: {}",
            reply.member, member.error
        ));
    }
    let members = member
        .members
        .into_iter()
        .map(|m| ListedMember {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect();
    Ok(MembershipView {
        reporter: reply.member,
        is_leader: member.is_leader,
        members,
    })
}

/// A view in canonical order, so two views compare equal when they say the same thing.
fn canonical(members: &[ListedMember]) -> Vec<ListedMember> {
    let mut out: Vec<ListedMember> = members
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.peer_urls.sort();
            m.client_urls.sort();
            m
        })
        .collect();
    out.sort();
    out
}

/// How `other` differs from `shown`, as member IDs: (missing, extra, changed).
fn differences(shown: &[ListedMember], other: &[ListedMember]) -> String {
    let ids = |v: &[ListedMember]| v.iter().map(|m| m.id).collect::<Vec<_>>();
    let (shown_ids, other_ids) = (ids(shown), ids(other));
    let mut parts = Vec::new();
    let missing: Vec<String> = shown_ids
        .iter()
        .filter(|id| !other_ids.contains(id))
        .map(|id| hex_id(*id))
        .collect();
    let extra: Vec<String> = other_ids
        .iter()
        .filter(|id| !shown_ids.contains(id))
        .map(|id| hex_id(*id))
        .collect();
    let changed: Vec<String> = shown
        .iter()
        .filter(|a| other.iter().any(|b| b.id == a.id && b != *a))
        .map(|m| hex_id(m.id))
        .collect();
    for (label, list) in [
        ("without", missing),
        ("with extra", extra),
        ("with changed", changed),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label} {}", list.join(", ")));
        }
    }
    parts.join("; ")
}

/// The verdict: pick a view (the leader's, else the first), report every
/// agent that did not answer and every view that disagrees.
pub fn evaluate(cluster: &Cluster, views: Vec<Result<MembershipView, String>>) -> MemberListReport {
    let mut problems = Vec::new();
    let mut answered = Vec::new();
    for view in views {
        match view {
            Ok(v) => answered.push(v),
            Err(e) => problems.push(e),
        }
    }
    let shown_index = answered.iter().position(|v| v.is_leader).unwrap_or(0);
    let Some(shown) = answered.get(shown_index) else {
        problems.push("no member answered: the membership is unknown".to_string());
        return MemberListReport {
            cluster: cluster.name.clone(),
            ok: false,
            source: None,
            problems,
            members: Vec::new(),
        };
    };
    let shown_members = canonical(&shown.members);
    for other in &answered {
        let other_members = canonical(&other.members);
        if other_members != shown_members {
            problems.push(format!(
                "members disagree on the membership: {} sees it {} compared to {} (shown)",
                other.reporter,
                differences(&shown_members, &other_members),
                shown.reporter
            ));
        }
    }
    for fleet_member in &cluster.members {
        if !shown_members.iter().any(|m| m.name == fleet_member.name) {
            problems.push(format!(
                "fleet member {} is not in the etcd membership (or has not started) — fix the fleet file or add the member",
                fleet_member.name
            ));
        }
    }
    let members = shown_members
        .into_iter()
        .map(|m| EtcdMember {
            id: hex_id(m.id),
            status: if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
            agent: cluster
                .member(&m.name)
                .filter(|_| !m.name.is_empty())
                .map(|f| f.agent.to_string()),
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect();
    MemberListReport {
        cluster: cluster.name.clone(),
        ok: problems.is_empty(),
        source: Some(shown.reporter.clone()),
        problems,
        members,
    }
}

/// The table header of `member list` (etcdctl's, plus AGENT).
pub const HEADER: [&str; 7] = [
    "ID",
    "STATUS",
    "NAME",
    "PEER ADDRS",
    "CLIENT ADDRS",
    "IS LEARNER",
    "AGENT",
];

/// One table row per etcd member.
pub fn rows(report: &MemberListReport) -> Vec<Vec<String>> {
    report
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.status.clone(),
                m.name.clone(),
                m.peer_urls.join(","),
                m.client_urls.join(","),
                table::yes_no(m.is_learner).to_string(),
                m.agent.clone().unwrap_or_else(|| NONE.to_string()),
            ]
        })
        .collect()
}

/// The whole text report: table, where the view came from, then one line per problem.
pub fn render_table(report: &MemberListReport) -> String {
    let mut text = String::new();
    if !report.members.is_empty() {
        let mut t = table::new_table(&HEADER);
        for r in rows(report) {
            t.add_row(r);
        }
        text.push_str(&table::render(&t));
    }
    match &report.source {
        Some(source) => text.push_str(&format!(
            "cluster {}: {} members, as reported by {source}\n",
            report.cluster,
            report.members.len()
        )),
        None => text.push_str(&format!("cluster {}: membership unknown\n", report.cluster)),
    }
    for problem in &report.problems {
        text.push_str(&format!("problem: {problem}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Member;

    fn fleet() -> Cluster {
        Cluster {
            name: "prod-a".into(),
            members: (1..=3)
                .map(|i| {
                    Member::new(&format!("etcd{i}"), &format!("https://127.0.0.1{i}:7443")).expect("member")
                })
                .collect(),
            backup: None,
        }
    }

    fn listed(id: u64, name: &str) -> ListedMember {
        ListedMember {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://127.0.0.1{id}:2380")],
            client_urls: vec![format!("https://127.0.0.1{id}:2379")],
            is_learner: false,
        }
    }

    fn three() -> Vec<ListedMember> {
        vec![listed(3, "etcd3"), listed(1, "etcd1"), listed(2, "etcd2")]
    }

    fn view(reporter: &str, leader: bool, members: Vec<ListedMember>) -> Result<MembershipView, String> {
        Ok(MembershipView {
            reporter: reporter.into(),
            is_leader: leader,
            members,
        })
    }

    #[test]
    fn verdicts() {
        let mut with_learner = three();
        with_learner.push(ListedMember {
            is_learner: true,
            ..listed(4, "")
        });
        let mut moved = three();
        moved[0].peer_urls = vec!["https://10.0.0.3:2380".into()];
        // (case, views, ok, whose view is shown, a problem that must be reported)
        type Case = (
            &'static str,
            Vec<Result<MembershipView, String>>,
            bool,
            Option<&'static str>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "agree",
                vec![
                    view("etcd1", false, three()),
                    view("etcd2", true, three()),
                    view("etcd3", false, three()),
                ],
                true,
                Some("etcd2"),
                "",
            ),
            (
                "one down",
                vec![
                    view("etcd1", true, three()),
                    Err("agent etcd2 unreachable".into()),
                    view("etcd3", false, three()),
                ],
                false,
                Some("etcd1"),
                "etcd2 unreachable",
            ),
            (
                "stale view",
                vec![
                    view("etcd1", true, with_learner.clone()),
                    view("etcd2", false, three()),
                ],
                false,
                Some("etcd1"),
                "etcd2 sees it without 0000000000000004",
            ),
            (
                "changed urls",
                vec![view("etcd1", true, three()), view("etcd3", false, moved)],
                false,
                Some("etcd1"),
                "with changed 0000000000000003",
            ),
            (
                "nobody",
                vec![Err("a".into()), Err("b".into())],
                false,
                None,
                "no member answered",
            ),
            (
                "fleet member missing",
                vec![view("etcd1", true, vec![listed(1, "etcd1"), listed(2, "etcd2")])],
                false,
                Some("etcd1"),
                "etcd3 is not in the etcd membership",
            ),
        ];
        for (case, views, ok, source, problem) in cases {
            let report = evaluate(&fleet(), views);
            assert_eq!(report.ok, ok, "{case}: {:?}", report.problems);
            assert_eq!(report.source.as_deref(), source, "{case}");
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
    fn rows_are_by_id_with_unstarted_members_and_agents() {
        let mut members = three();
        members.push(ListedMember {
            is_learner: true,
            ..listed(4, "")
        });
        let report = evaluate(&fleet(), vec![view("etcd1", true, members)]);
        let rows = rows(&report);
        assert_eq!(
            rows[0],
            [
                "0000000000000001",
                "started",
                "etcd1",
                "https://127.0.0.11:2380",
                "https://127.0.0.11:2379",
                "false",
                "https://127.0.0.11:7443"
            ]
        );
        assert_eq!(rows[3][..3], ["0000000000000004", "unstarted", ""]);
        assert_eq!(rows[3][5..], ["true", NONE]);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["members"][3]["agent"], serde_json::Value::Null);
        assert_eq!(json["members"][0]["id"], "0000000000000001");
        assert!(render_table(&report).contains("as reported by etcd1"));
    }
}
