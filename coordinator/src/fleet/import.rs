//! `etcdops fleet import`: the fleet an inventory's clusters make, merged into the fleet file as it is, and what changes (pure).
//!
//! A cluster of the inventory replaces the members of the fleet's cluster of
//! that name (members still there keep their place and the cluster keeps its
//! `[clusters.backup]`; new members follow in inventory order) or is added
//! at the end. Clusters of the fleet the inventory does not name are kept as
//! they are. `[tls]` is kept unless given; a new fleet needs it given.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::inventory::ImportedCluster;
use super::{Cluster, Fleet, FleetTls, InvalidFleet, Member};

/// `[tls]` paths given on the command line (each replaces the fleet's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOverride {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// One difference between the fleet file and the fleet the import makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    /// A `[tls]` path set or replaced.
    Tls {
        field: &'static str,
        before: Option<PathBuf>,
        after: PathBuf,
    },
    /// A cluster new to the fleet.
    AddCluster { cluster: String, group: String },
    /// A member new to its cluster.
    AddMember {
        cluster: String,
        member: String,
        agent: String,
        host: String,
    },
    /// A member whose agent URL changed.
    ChangeAgent {
        cluster: String,
        member: String,
        before: String,
        after: String,
        host: String,
    },
    /// A member the inventory no longer has.
    RemoveMember {
        cluster: String,
        member: String,
        agent: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Tls {
                field,
                before: None,
                after,
            } => write!(f, "+ [tls] {field} = {}", after.display()),
            Change::Tls {
                field,
                before: Some(before),
                after,
            } => write!(f, "~ [tls] {field}: {} -> {}", before.display(), after.display()),
            Change::AddCluster { cluster, group } => write!(f, "+ cluster {cluster} (group {group})"),
            Change::AddMember {
                cluster,
                member,
                agent,
                host,
            } => write!(f, "+ {cluster}/{member} {agent} (host {host})"),
            Change::ChangeAgent {
                cluster,
                member,
                before,
                after,
                host,
            } => write!(f, "~ {cluster}/{member} {before} -> {after} (host {host})"),
            Change::RemoveMember {
                cluster,
                member,
                agent,
            } => write!(f, "- {cluster}/{member} {agent}"),
        }
    }
}

/// What an import makes of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The fleet to write.
    pub fleet: Fleet,
    /// What differs from the fleet file, in file order.
    pub changes: Vec<Change>,
    /// Clusters of the fleet file the inventory does not name, kept unchanged.
    pub kept: Vec<String>,
}

/// Why the merged fleet cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error(
        "there is no fleet file yet, so [tls] must be given: pass --ca, --cert and --key (the fleet CA and the coordinator's certificate and key, e.g. from `etcdops certs init`)"
    )]
    TlsRequired,
    #[error("the imported fleet is not valid: {0}")]
    Invalid(#[from] InvalidFleet),
}

/// Merges the inventory's clusters into `existing` (None: no fleet file yet).
pub fn merge(
    existing: Option<&Fleet>,
    imported: &[ImportedCluster],
    tls: &TlsOverride,
) -> Result<Merged, MergeError> {
    let mut changes = Vec::new();
    let old_tls = existing.map(|f| &f.tls);
    let pick = |given: &Option<PathBuf>, old: Option<&PathBuf>| given.clone().or_else(|| old.cloned());
    let (Some(ca), Some(cert), Some(key)) = (
        pick(&tls.ca, old_tls.map(|t| &t.ca)),
        pick(&tls.cert, old_tls.map(|t| &t.cert)),
        pick(&tls.key, old_tls.map(|t| &t.key)),
    ) else {
        return Err(MergeError::TlsRequired);
    };
    let new_tls = FleetTls { ca, cert, key };
    for (field, before, after) in [
        ("ca", old_tls.map(|t| &t.ca), &new_tls.ca),
        ("cert", old_tls.map(|t| &t.cert), &new_tls.cert),
        ("key", old_tls.map(|t| &t.key), &new_tls.key),
    ] {
        if before != Some(after) {
            changes.push(Change::Tls {
                field,
                before: before.cloned(),
                after: after.clone(),
            });
        }
    }

    let mut clusters: Vec<Cluster> = existing.map(|f| f.clusters.clone()).unwrap_or_default();
    let mut kept = Vec::new();
    for cluster in &clusters {
        if !imported.iter().any(|c| c.name == cluster.name) {
            kept.push(cluster.name.clone());
        }
    }
    for new in imported {
        let position = clusters.iter().position(|c| c.name == new.name);
        let Some(index) = position else {
            changes.push(Change::AddCluster {
                cluster: new.name.clone(),
                group: new.group.clone(),
            });
            for m in &new.members {
                changes.push(Change::AddMember {
                    cluster: new.name.clone(),
                    member: m.member.name.clone(),
                    agent: m.member.agent.to_string(),
                    host: m.host.clone(),
                });
            }
            clusters.push(Cluster {
                name: new.name.clone(),
                members: new.members.iter().map(|m| m.member.clone()).collect(),
                backup: None,
            });
            continue;
        };
        let cluster = &mut clusters[index];
        let mut members: Vec<Member> = Vec::new();
        for old in &cluster.members {
            match new.members.iter().find(|m| m.member.name == old.name) {
                Some(m) => {
                    if m.member.agent != old.agent {
                        changes.push(Change::ChangeAgent {
                            cluster: new.name.clone(),
                            member: old.name.clone(),
                            before: old.agent.to_string(),
                            after: m.member.agent.to_string(),
                            host: m.host.clone(),
                        });
                    }
                    members.push(m.member.clone());
                }
                None => changes.push(Change::RemoveMember {
                    cluster: new.name.clone(),
                    member: old.name.clone(),
                    agent: old.agent.to_string(),
                }),
            }
        }
        for m in &new.members {
            if !cluster.members.iter().any(|old| old.name == m.member.name) {
                changes.push(Change::AddMember {
                    cluster: new.name.clone(),
                    member: m.member.name.clone(),
                    agent: m.member.agent.to_string(),
                    host: m.host.clone(),
                });
                members.push(m.member.clone());
            }
        }
        cluster.members = members;
    }
    let fleet = Fleet::new(new_tls, clusters)?;
    Ok(Merged { fleet, changes, kept })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fleet::inventory::ImportedMember;

    fn imported(name: &str, members: &[(&str, &str, &str)]) -> ImportedCluster {
        ImportedCluster {
            name: name.into(),
            group: format!("g_{name}"),
            members: members
                .iter()
                .map(|(host, member, agent)| ImportedMember {
                    host: host.to_string(),
                    member: Member::new(member, agent).expect("member"),
                })
                .collect(),
        }
    }

    const EXISTING: &str = r#"
[tls]
ca = "pki/ca.crt"
cert = "pki/c.crt"
key = "pki/c.key"

[[clusters]]
name = "a"
[[clusters.members]]
name = "e1"
agent = "https://10.0.0.1:7443"
[[clusters.members]]
name = "e2"
agent = "https://10.0.0.2:7443"
[[clusters.members]]
name = "e3"
agent = "https://10.0.0.3:7443"
[clusters.backup]
target = "file:///var/backups/a"
keep_last = 3

[[clusters]]
name = "c"
[[clusters.members]]
name = "x1"
agent = "https://10.9.0.1:7443"
"#;

    fn existing() -> Fleet {
        Fleet::parse_as_written(EXISTING, Path::new("/etc/etcdops/fleet.toml")).expect("fleet")
    }

    fn lines(merged: &Merged) -> Vec<String> {
        merged.changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn updates_a_cluster_in_place_and_keeps_the_rest() {
        let fleet = existing();
        let inv = [
            imported(
                "a",
                &[
                    ("n4", "e4", "https://10.0.0.4:7443"),
                    ("n2", "e2", "https://10.0.0.22:7443"),
                    ("n1", "e1", "https://10.0.0.1:7443"),
                ],
            ),
            imported("b", &[("m1", "b1", "https://10.1.0.1:7443")]),
        ];
        let merged = merge(Some(&fleet), &inv, &TlsOverride::default()).expect("merge");
        assert_eq!(
            lines(&merged),
            [
                "~ a/e2 https://10.0.0.2:7443 -> https://10.0.0.22:7443 (host n2)",
                "- a/e3 https://10.0.0.3:7443",
                "+ a/e4 https://10.0.0.4:7443 (host n4)",
                "+ cluster b (group g_b)",
                "+ b/b1 https://10.1.0.1:7443 (host m1)",
            ]
        );
        assert_eq!(merged.kept, ["c"]);
        let a = &merged.fleet.clusters[0];
        let names: Vec<&str> = a.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["e1", "e2", "e4"], "old order first, new ones after");
        assert!(a.backup.is_some(), "the backup table stays");
        let names: Vec<&str> = merged.fleet.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"]);
        assert_eq!(
            merged.fleet.tls.ca,
            PathBuf::from("pki/ca.crt"),
            "relative paths stay relative"
        );

        // The same import again changes nothing.
        let again = merge(Some(&merged.fleet), &inv, &TlsOverride::default()).expect("merge");
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.fleet, merged.fleet);
    }

    #[test]
    fn a_new_fleet_needs_tls() {
        let inv = [imported("a", &[("n1", "e1", "https://10.0.0.1:7443")])];
        assert_eq!(
            merge(None, &inv, &TlsOverride::default()),
            Err(MergeError::TlsRequired)
        );
        let partial = TlsOverride {
            ca: Some("ca.crt".into()),
            ..TlsOverride::default()
        };
        assert_eq!(merge(None, &inv, &partial), Err(MergeError::TlsRequired));
        let tls = TlsOverride {
            ca: Some("ca.crt".into()),
            cert: Some("c.crt".into()),
            key: Some("c.key".into()),
        };
        let merged = merge(None, &inv, &tls).expect("merge");
        assert_eq!(
            lines(&merged),
            [
                "+ [tls] ca = ca.crt",
                "+ [tls] cert = c.crt",
                "+ [tls] key = c.key",
                "+ cluster a (group g_a)",
                "+ a/e1 https://10.0.0.1:7443 (host n1)",
            ]
        );
        // A given path replaces the file's.
        let fleet = existing();
        let merged = merge(
            Some(&fleet),
            &[],
            &TlsOverride {
                key: Some("other.key".into()),
                ..TlsOverride::default()
            },
        )
        .expect("merge");
        assert_eq!(lines(&merged), ["~ [tls] key: pki/c.key -> other.key"]);
        assert_eq!(merged.kept, ["a", "c"]);
        assert!(matches!(
            merge(None, &[], &tls),
            Err(MergeError::Invalid(InvalidFleet::NoClusters))
        ));
    }

    #[test]
    fn changes_serialize_tagged() {
        let change = Change::RemoveMember {
            cluster: "a".into(),
            member: "e3".into(),
            agent: "https://h:1".into(),
        };
        let json = serde_json::to_value(&change).expect("json");
        assert_eq!(json["change"], "remove-member");
        assert_eq!(json["member"], "e3");
    }
}
