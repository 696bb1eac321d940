//! `etcdops check hashkv`: every member's etcd HashKV at one revision, and
//! whether they agree (the check `etcdctl endpoint hashkv --cluster` leaves
//! to the eye).

use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::Reply;
use crate::output::table::{self, NONE};

/// The whole report; also the JSON document (`-w json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HashReport {
    pub cluster: String,
    /// The revision every member hashed up to.
    pub revision: i64,
    /// Every member answered and all hashes are equal.
    pub consistent: bool,
    /// One entry per fleet member, in fleet order.
    pub members: Vec<MemberHash>,
}

/// One member's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberHash {
    pub name: String,
    /// 8 hex digits; null when the member did not answer.
    pub hash: Option<String>,
    /// The member's compaction revision; null when unknown.
    pub compact_revision: Option<i64>,
    /// Why there is no hash; null with one.
    pub error: Option<String>,
}

/// One agent's reply as plain data.
pub fn member_hash(reply: Reply<pb::HashKvResponse>) -> MemberHash {
    match reply.result {
        Ok(h) => MemberHash {
            name: reply.member,
            hash: Some(format!("{:08x}", h.hash)),
            compact_revision: Some(h.compact_revision),
            error: None,
        },
        Err(e) => MemberHash {
            name: reply.member,
            hash: None,
            compact_revision: None,
            error: Some(e.to_string()),
        },
    }
}

/// Consistent only when every member answered with the same hash.
pub fn evaluate(cluster: &str, revision: i64, members: Vec<MemberHash>) -> HashReport {
    let first = members.first().and_then(|m| m.hash.clone());
    let consistent = first.is_some() && members.iter().all(|m| m.hash == first);
    HashReport {
        cluster: cluster.to_string(),
        revision,
        consistent,
        members,
    }
}

pub fn render_table(report: &HashReport) -> String {
    let rows = report
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.hash.clone().unwrap_or_else(|| NONE.to_string()),
                m.compact_revision.map_or(NONE.to_string(), |r| r.to_string()),
            ]
        })
        .collect();
    let summary = if report.consistent {
        format!(
            "cluster {}: every member has the same key-value store up to revision {}",
            report.cluster, report.revision
        )
    } else if report.members.iter().any(|m| m.error.is_some()) {
        format!(
            "cluster {}: not every member could be hashed at revision {}",
            report.cluster, report.revision
        )
    } else {
        format!(
            "cluster {}: the members DIFFER at revision {}: a member's data is corrupt or it applied another history; \
             replace the odd one out (`etcdops member replace`) after checking etcd's logs",
            report.cluster, report.revision
        )
    };
    let errors = report
        .members
        .iter()
        .filter_map(|m| m.error.as_deref())
        .map(|e| ("problem", e));
    table::report(&["MEMBER", "HASHKV", "COMPACTED AT"], rows, &summary, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, hash: Option<&str>) -> MemberHash {
        MemberHash {
            name: name.into(),
            hash: hash.map(str::to_string),
            compact_revision: hash.map(|_| 5),
            error: hash.is_none().then(|| format!("agent {name} unreachable")),
        }
    }

    #[test]
    fn consistent_only_when_every_member_answers_the_same() {
        let same = evaluate(
            "prod",
            90,
            vec![m("a", Some("0a0b0c0d")), m("b", Some("0a0b0c0d"))],
        );
        assert!(same.consistent);
        assert!(render_table(&same).contains("the same key-value store up to revision 90"));
        let differ = evaluate(
            "prod",
            90,
            vec![m("a", Some("0a0b0c0d")), m("b", Some("ffffffff"))],
        );
        assert!(!differ.consistent);
        assert!(
            render_table(&differ).contains("DIFFER"),
            "{}",
            render_table(&differ)
        );
        let missing = evaluate("prod", 90, vec![m("a", Some("0a0b0c0d")), m("b", None)]);
        assert!(!missing.consistent);
        let text = render_table(&missing);
        assert!(
            text.contains("not every member could be hashed") && text.contains("agent b unreachable"),
            "{text}"
        );
        assert!(!evaluate("prod", 0, Vec::new()).consistent);
    }
}
