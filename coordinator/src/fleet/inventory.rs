//! Clusters from an Ansible inventory: the JSON `ansible-inventory -i INV --list` prints, read into fleet clusters (pure).
//!
//! `ansible-inventory --list` prints one shape for every inventory source
//! (INI, YAML, plugins), ranges and variable precedence resolved:
//! `{GROUP: {hosts: [..], children: [..], vars: {..}}, _meta: {hostvars: {HOST: {..}}}}`
//! (`--export` leaves group variables in `vars`; both are read).
//!
//! Groups are clusters. Which groups: those named with `--group GROUP[=CLUSTER]`,
//! else the children of the group [`CLUSTERS_GROUP`] (`etcdops_clusters`),
//! else kubespray's single [`KUBESPRAY_GROUP`] (`etcd`). A cluster's hosts are
//! its group's hosts and those of its child groups, in inventory order.
//!
//! Per host (host variables first, then the variables of the groups it was
//! found through, nearest first, then `all`):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `etcdops_member_name` | the etcd member name | `etcd_member_name` (kubespray), else the inventory hostname |
//! | `etcdops_agent_url` | the whole agent URL, `https://HOST:PORT` | built from the two below |
//! | `etcdops_agent_host` | the agent's address | `ansible_host`, else the inventory hostname |
//! | `etcdops_agent_port` | the agent's port | 7443 |
//! | `etcdops_spare` | a spare host (the Ansible roles install it without a member): not imported | false |

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::Member;

/// The group whose children are the clusters, when no `--group` is given.
pub const CLUSTERS_GROUP: &str = "etcdops_clusters";
/// Kubespray's etcd group: the one cluster when there is no [`CLUSTERS_GROUP`].
pub const KUBESPRAY_GROUP: &str = "etcd";
/// The agent's port when the inventory names none (the agent's default).
pub const DEFAULT_AGENT_PORT: u16 = 7443;

/// The member name (ours).
pub const VAR_MEMBER_NAME: &str = "etcdops_member_name";
/// The member name as kubespray names it.
pub const VAR_KUBESPRAY_MEMBER_NAME: &str = "etcd_member_name";
/// The whole agent URL.
pub const VAR_AGENT_URL: &str = "etcdops_agent_url";
/// The agent's address.
pub const VAR_AGENT_HOST: &str = "etcdops_agent_host";
/// Ansible's address of the host.
pub const VAR_ANSIBLE_HOST: &str = "ansible_host";
/// The agent's port.
pub const VAR_AGENT_PORT: &str = "etcdops_agent_port";
/// A spare host: no member until `etcdops member add`, so not in the fleet.
pub const VAR_SPARE: &str = "etcdops_spare";

/// Which groups become clusters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GroupSelection {
    /// The children of [`CLUSTERS_GROUP`], else [`KUBESPRAY_GROUP`].
    #[default]
    Default,
    /// These groups, each with the cluster name it becomes.
    Named(Vec<GroupSpec>),
}

/// `--group GROUP[=CLUSTER]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub group: String,
    pub cluster: String,
}

impl std::str::FromStr for GroupSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupSpec, String> {
        let (group, cluster) = s.split_once('=').unwrap_or((s, s));
        let (group, cluster) = (group.trim(), cluster.trim());
        if group.is_empty() || cluster.is_empty() {
            return Err(format!("{s:?}: expected GROUP or GROUP=CLUSTER"));
        }
        Ok(GroupSpec {
            group: group.to_string(),
            cluster: cluster.to_string(),
        })
    }
}

/// One cluster read from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCluster {
    /// The cluster's name in the fleet.
    pub name: String,
    /// The inventory group it came from.
    pub group: String,
    pub members: Vec<ImportedMember>,
}

/// One member read from the inventory, with the host it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMember {
    /// The inventory hostname.
    pub host: String,
    pub member: Member,
}

/// Why an inventory cannot be imported; each names the group or host and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("the inventory is not JSON ({0}): give the output of `ansible-inventory -i INVENTORY --list`")]
    NotJson(String),
    #[error("the inventory is not `ansible-inventory --list` output: {0}")]
    NotAnInventory(String),
    #[error("no group {group:?} in the inventory; groups: {}", .known.join(", "))]
    UnknownGroup { group: String, known: Vec<String> },
    #[error(
        "the inventory has neither a group {CLUSTERS_GROUP:?} (whose children are the clusters) nor a group {KUBESPRAY_GROUP:?}: name the cluster groups with --group GROUP[=CLUSTER]"
    )]
    NoClusterGroups,
    #[error("group {group:?} has no hosts: a cluster needs at least one member")]
    EmptyGroup { group: String },
    #[error(
        "groups {first:?} and {second:?} both become cluster {cluster:?}: give one of them another name with --group GROUP=CLUSTER"
    )]
    DuplicateCluster {
        cluster: String,
        first: String,
        second: String,
    },
    #[error("host {host:?} is in two clusters, {first:?} and {second:?}: a host runs one etcd member")]
    HostInTwoClusters {
        host: String,
        first: String,
        second: String,
    },
    #[error(
        "group {group:?}: hosts {first:?} and {second:?} both have member name {name:?}: set {VAR_MEMBER_NAME} (or {VAR_KUBESPRAY_MEMBER_NAME}) per host"
    )]
    DuplicateMemberName {
        group: String,
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "group {group:?}: hosts {first:?} and {second:?} have the same agent {agent}: each member has its own agent"
    )]
    DuplicateAgent {
        group: String,
        agent: String,
        first: String,
        second: String,
    },
    #[error(
        "host {host:?} (group {group:?}) has no address: set {VAR_AGENT_URL}, {VAR_AGENT_HOST} or {VAR_ANSIBLE_HOST}"
    )]
    MissingAddress { host: String, group: String },
    #[error("host {host:?} (group {group:?}): {reason}")]
    BadAgent {
        host: String,
        group: String,
        reason: String,
    },
    #[error("host {host:?}: variable {var} is {found}, expected {expected}")]
    BadVariable {
        host: String,
        var: &'static str,
        found: String,
        expected: &'static str,
    },
}

/// The parsed `--list` document.
struct Inventory<'a> {
    groups: &'a Map<String, Value>,
    hostvars: Option<&'a Map<String, Value>>,
}

/// A host and the groups it was found through, nearest first (the cluster group last).
struct Found {
    host: String,
    through: Vec<String>,
}

/// Reads the clusters `selection` names from `ansible-inventory --list` JSON.
pub fn parse(json: &str, selection: &GroupSelection) -> Result<Vec<ImportedCluster>, InventoryError> {
    let value: Value = serde_json::from_str(json).map_err(|e| InventoryError::NotJson(e.to_string()))?;
    let groups = value
        .as_object()
        .ok_or_else(|| InventoryError::NotAnInventory("the top level is not an object of groups".into()))?;
    let hostvars = match groups.get("_meta") {
        None => None,
        Some(meta) => match meta.get("hostvars") {
            None => None,
            Some(Value::Object(vars)) => Some(vars),
            Some(_) => {
                return Err(InventoryError::NotAnInventory(
                    "_meta.hostvars is not an object".into(),
                ));
            }
        },
    };
    for (name, group) in groups {
        if name != "_meta" && !group.is_object() {
            return Err(InventoryError::NotAnInventory(format!(
                "group {name:?} is not an object"
            )));
        }
    }
    let inventory = Inventory { groups, hostvars };
    let specs = inventory.cluster_groups(selection)?;
    let mut clusters: Vec<ImportedCluster> = Vec::new();
    let mut cluster_of_host: HashMap<String, String> = HashMap::new();
    for spec in specs {
        if let Some(other) = clusters.iter().find(|c| c.name == spec.cluster) {
            return Err(InventoryError::DuplicateCluster {
                cluster: spec.cluster.clone(),
                first: other.group.clone(),
                second: spec.group.clone(),
            });
        }
        let found = inventory.hosts_of(&spec.group)?;
        if found.is_empty() {
            return Err(InventoryError::EmptyGroup { group: spec.group });
        }
        let mut members: Vec<ImportedMember> = Vec::new();
        for f in found {
            if let Some(first) = cluster_of_host.get(&f.host) {
                return Err(InventoryError::HostInTwoClusters {
                    host: f.host,
                    first: first.clone(),
                    second: spec.group.clone(),
                });
            }
            cluster_of_host.insert(f.host.clone(), spec.group.clone());
            if inventory.flag(&f, VAR_SPARE)? {
                continue;
            }
            let member = inventory.member(&f)?;
            if let Some(other) = members.iter().find(|m| m.member.name == member.name) {
                return Err(InventoryError::DuplicateMemberName {
                    group: spec.group.clone(),
                    name: member.name,
                    first: other.host.clone(),
                    second: f.host,
                });
            }
            if let Some(other) = members.iter().find(|m| m.member.agent == member.agent) {
                return Err(InventoryError::DuplicateAgent {
                    group: spec.group.clone(),
                    agent: member.agent.to_string(),
                    first: other.host.clone(),
                    second: f.host,
                });
            }
            members.push(ImportedMember { host: f.host, member });
        }
        if members.is_empty() {
            return Err(InventoryError::EmptyGroup { group: spec.group });
        }
        clusters.push(ImportedCluster {
            name: spec.cluster,
            group: spec.group,
            members,
        });
    }
    Ok(clusters)
}

impl Inventory<'_> {
    fn group(&self, name: &str) -> Option<&Map<String, Value>> {
        if name == "_meta" {
            return None;
        }
        self.groups.get(name).and_then(Value::as_object)
    }

    fn known(&self) -> Vec<String> {
        self.groups.keys().filter(|k| *k != "_meta").cloned().collect()
    }

    fn unknown(&self, group: &str) -> InventoryError {
        InventoryError::UnknownGroup {
            group: group.to_string(),
            known: self.known(),
        }
    }

    /// A list of names (`hosts`, `children`) of a group; missing is empty.
    fn names(&self, group: &str, key: &str) -> Result<Vec<String>, InventoryError> {
        let Some(g) = self.group(group) else {
            return Err(self.unknown(group));
        };
        match g.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        InventoryError::NotAnInventory(format!(
                            "group {group:?}: {key} holds a non-string {v}"
                        ))
                    })
                })
                .collect(),
            Some(other) => Err(InventoryError::NotAnInventory(format!(
                "group {group:?}: {key} is {other}, not a list"
            ))),
        }
    }

    fn cluster_groups(&self, selection: &GroupSelection) -> Result<Vec<GroupSpec>, InventoryError> {
        let specs = match selection {
            GroupSelection::Named(specs) => specs.clone(),
            GroupSelection::Default => {
                if self.group(CLUSTERS_GROUP).is_some() {
                    self.names(CLUSTERS_GROUP, "children")?
                        .into_iter()
                        .map(|g| GroupSpec {
                            cluster: g.clone(),
                            group: g,
                        })
                        .collect()
                } else if self.group(KUBESPRAY_GROUP).is_some() {
                    vec![GroupSpec {
                        group: KUBESPRAY_GROUP.into(),
                        cluster: KUBESPRAY_GROUP.into(),
                    }]
                } else {
                    return Err(InventoryError::NoClusterGroups);
                }
            }
        };
        if specs.is_empty() {
            return Err(InventoryError::NoClusterGroups);
        }
        for spec in &specs {
            if self.group(&spec.group).is_none() {
                return Err(self.unknown(&spec.group));
            }
        }
        Ok(specs)
    }

    /// The hosts of `group` and of its descendants, each once, in inventory order.
    fn hosts_of(&self, group: &str) -> Result<Vec<Found>, InventoryError> {
        let mut found = Vec::new();
        let mut seen_hosts = HashSet::new();
        let mut visited = HashSet::new();
        self.collect(group, &mut Vec::new(), &mut visited, &mut seen_hosts, &mut found)?;
        Ok(found)
    }

    fn collect(
        &self,
        group: &str,
        path: &mut Vec<String>,
        visited: &mut HashSet<String>,
        seen_hosts: &mut HashSet<String>,
        found: &mut Vec<Found>,
    ) -> Result<(), InventoryError> {
        if !visited.insert(group.to_string()) {
            return Ok(());
        }
        path.insert(0, group.to_string());
        for host in self.names(group, "hosts")? {
            if seen_hosts.insert(host.clone()) {
                found.push(Found {
                    host,
                    through: path.clone(),
                });
            }
        }
        for child in self.names(group, "children")? {
            self.collect(&child, path, visited, seen_hosts, found)?;
        }
        path.remove(0);
        Ok(())
    }

    /// A variable of a host: its host variables, then its groups' (nearest first), then `all`'s.
    fn var(&self, found: &Found, name: &str) -> Option<&Value> {
        let host = self
            .hostvars
            .and_then(|h| h.get(&found.host))
            .and_then(Value::as_object)
            .and_then(|vars| vars.get(name));
        host.or_else(|| {
            found
                .through
                .iter()
                .map(String::as_str)
                .chain(["all"])
                .filter_map(|g| self.group(g))
                .filter_map(|g| g.get("vars").and_then(Value::as_object))
                .find_map(|vars| vars.get(name))
        })
        .filter(|v| !v.is_null())
    }

    /// A variable that must be a string (a number is taken as written).
    fn text(&self, found: &Found, name: &'static str) -> Result<Option<String>, InventoryError> {
        match self.var(found, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(InventoryError::BadVariable {
                host: found.host.clone(),
                var: name,
                found: other.to_string(),
                expected: "a string",
            }),
        }
    }

    /// A yes/no variable, as Ansible's `bool` filter reads it (YAML's
    /// booleans, INI's strings `true`/`yes`/`on`/`1` and their opposites);
    /// unset is no.
    fn flag(&self, found: &Found, name: &'static str) -> Result<bool, InventoryError> {
        let bad = |v: &Value| InventoryError::BadVariable {
            host: found.host.clone(),
            var: name,
            found: v.to_string(),
            expected: "true or false",
        };
        match self.var(found, name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(bad(v)),
            },
            Some(v @ Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" | "y" | "t" => Ok(true),
                "false" | "no" | "off" | "0" | "n" | "f" | "" => Ok(false),
                _ => Err(bad(v)),
            },
            Some(v) => Err(bad(v)),
        }
    }

    fn member(&self, found: &Found) -> Result<Member, InventoryError> {
        let group = found.through.last().cloned().unwrap_or_default();
        let name = match self.text(found, VAR_MEMBER_NAME)? {
            Some(n) => n,
            None => self
                .text(found, VAR_KUBESPRAY_MEMBER_NAME)?
                .unwrap_or_else(|| found.host.clone()),
        };
        if name.is_empty() {
            return Err(InventoryError::BadVariable {
                host: found.host.clone(),
                var: VAR_MEMBER_NAME,
                found: "empty".into(),
                expected: "a member name",
            });
        }
        let url = match self.text(found, VAR_AGENT_URL)? {
            Some(url) if !url.is_empty() => url,
            _ => {
                let host = match self.text(found, VAR_AGENT_HOST)? {
                    Some(h) => h,
                    None => self
                        .text(found, VAR_ANSIBLE_HOST)?
                        .unwrap_or_else(|| found.host.clone()),
                };
                if host.is_empty() {
                    return Err(InventoryError::MissingAddress {
                        host: found.host.clone(),
                        group,
                    });
                }
                let port = self.port(found)?;
                if host.contains(':') && !host.starts_with('[') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        Member::new(&name, &url).map_err(|e| InventoryError::BadAgent {
            host: found.host.clone(),
            group,
            reason: e.to_string(),
        })
    }

    fn port(&self, found: &Found) -> Result<u16, InventoryError> {
        let bad = |v: &Value| InventoryError::BadVariable {
            host: found.host.clone(),
            var: VAR_AGENT_PORT,
            found: v.to_string(),
            expected: "a port number 1-65535",
        };
        match self.var(found, VAR_AGENT_PORT) {
            None => Ok(DEFAULT_AGENT_PORT),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => s
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ansible-inventory --list` printed for a two-cluster INI inventory.
    const TWO: &str = r#"{
      "_meta": {"hostvars": {
        "node1": {"ansible_host": "10.0.0.1", "etcd_member_name": "etcd1"},
        "node2": {"ansible_host": "10.0.0.2", "etcd_member_name": "etcd2"},
        "db1.example.com": {"etcdops_agent_port": 8443},
        "db2.example.com": {"etcdops_agent_port": "8443", "etcdops_member_name": "b2"}
      }},
      "all": {"children": ["ungrouped", "etcdops_clusters"]},
      "etcd_prod_a": {"hosts": ["node1", "node2"]},
      "etcd_prod_b": {"hosts": ["db1.example.com", "db2.example.com"]},
      "etcdops_clusters": {"children": ["etcd_prod_a", "etcd_prod_b"]},
      "ungrouped": {}
    }"#;

    fn named(specs: &[&str]) -> GroupSelection {
        GroupSelection::Named(specs.iter().map(|s| s.parse().expect("spec")).collect())
    }

    type Row = (String, String, String);

    fn summary(clusters: &[ImportedCluster]) -> Vec<(String, Vec<Row>)> {
        clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.members
                        .iter()
                        .map(|m| (m.host.clone(), m.member.name.clone(), m.member.agent.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    fn err(json: &str, selection: &GroupSelection) -> InventoryError {
        parse(json, selection).expect_err("must be refused")
    }

    #[test]
    fn reads_the_children_of_etcdops_clusters_with_defaults() {
        let clusters = parse(TWO, &GroupSelection::Default).expect("parse");
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            summary(&clusters),
            vec![
                (
                    "etcd_prod_a".to_string(),
                    vec![
                        s("node1", "etcd1", "https://10.0.0.1:7443"),
                        s("node2", "etcd2", "https://10.0.0.2:7443"),
                    ]
                ),
                (
                    "etcd_prod_b".to_string(),
                    vec![
                        s(
                            "db1.example.com",
                            "db1.example.com",
                            "https://db1.example.com:8443"
                        ),
                        s("db2.example.com", "b2", "https://db2.example.com:8443"),
                    ]
                ),
            ]
        );
        assert_eq!(clusters[1].group, "etcd_prod_b");
    }

    #[test]
    fn named_groups_and_renames() {
        let clusters = parse(TWO, &named(&["etcd_prod_b=prod-b"])).expect("parse");
        assert_eq!(clusters.len(), 1);
        assert_eq!(
            (clusters[0].name.as_str(), clusters[0].group.as_str()),
            ("prod-b", "etcd_prod_b")
        );
        assert!("=x".parse::<GroupSpec>().is_err());
        assert!("x=".parse::<GroupSpec>().is_err());
        assert_eq!(
            "g".parse::<GroupSpec>().expect("spec"),
            GroupSpec {
                group: "g".into(),
                cluster: "g".into()
            }
        );
    }

    #[test]
    fn kubespray_etcd_group_is_the_default_cluster() {
        let json = r#"{"_meta": {"hostvars": {
            "cp1": {"ansible_host": "192.0.2.1", "etcd_member_name": "etcd1"},
            "cp2": {"ansible_host": "2001:db8::2", "etcd_member_name": "etcd2"}}},
          "all": {"children": ["etcd", "kube_control_plane"]},
          "kube_control_plane": {"hosts": ["cp1", "cp2"]},
          "etcd": {"children": ["kube_control_plane"]}}"#;
        let clusters = parse(json, &GroupSelection::Default).expect("parse");
        assert_eq!(clusters[0].name, "etcd");
        let agents: Vec<String> = clusters[0]
            .members
            .iter()
            .map(|m| m.member.agent.to_string())
            .collect();
        assert_eq!(agents, ["https://192.0.2.1:7443", "https://[2001:db8::2]:7443"]);
    }

    #[test]
    fn export_format_group_vars_and_precedence() {
        // --export keeps group vars in the groups: host > nearest group > cluster group > all.
        let json = r#"{"_meta": {"hostvars": {"h1": {"etcdops_agent_port": 9001}}},
          "all": {"children": ["c"], "vars": {"etcdops_agent_port": 7000, "etcdops_agent_host": "all.example"}},
          "c": {"children": ["sub"], "hosts": ["h0"], "vars": {"etcdops_agent_port": 8000}},
          "sub": {"hosts": ["h1", "h2", "h0"], "vars": {"etcdops_agent_host": "sub.example"}}}"#;
        let clusters = parse(json, &named(&["c"])).expect("parse");
        let got: Vec<(String, String)> = clusters[0]
            .members
            .iter()
            .map(|m| (m.host.clone(), m.member.agent.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("h0".to_string(), "https://all.example:8000".to_string()),
                ("h1".to_string(), "https://sub.example:9001".to_string()),
                ("h2".to_string(), "https://sub.example:8000".to_string()),
            ]
        );
    }

    #[test]
    fn spares_are_not_imported() {
        let json = r#"{"_meta": {"hostvars": {
            "n1": {"ansible_host": "10.0.0.1", "etcd_member_name": "etcd1"},
            "n2": {"ansible_host": "10.0.0.2", "etcd_member_name": "etcd2", "etcdops_spare": true},
            "n3": {"ansible_host": "10.0.0.3", "etcd_member_name": "etcd3", "etcdops_spare": "true"},
            "n4": {"ansible_host": "10.0.0.4", "etcd_member_name": "etcd4", "etcdops_spare": "no"}}},
            "etcd": {"hosts": ["n1", "n2", "n3", "n4"]}}"#;
        let clusters = parse(json, &GroupSelection::default()).expect("parse");
        let names: Vec<&str> = clusters[0]
            .members
            .iter()
            .map(|m| m.member.name.as_str())
            .collect();
        assert_eq!(names, ["etcd1", "etcd4"]);

        let only_spares = r#"{"_meta": {"hostvars": {"n2": {"ansible_host": "10.0.0.2", "etcdops_spare": true}}},
            "etcd": {"hosts": ["n2"]}}"#;
        assert!(matches!(
            err(only_spares, &GroupSelection::default()),
            InventoryError::EmptyGroup { .. }
        ));
        let odd = r#"{"_meta": {"hostvars": {"n2": {"ansible_host": "10.0.0.2", "etcdops_spare": "maybe"}}},
            "etcd": {"hosts": ["n2"]}}"#;
        let e = err(odd, &GroupSelection::default()).to_string();
        assert!(e.contains("etcdops_spare") && e.contains("n2"), "{e}");
    }

    #[test]
    fn agent_url_variable_wins() {
        let json = r#"{"_meta": {"hostvars": {"h": {"etcdops_agent_url": "https://agent.example:1234", "ansible_host": "10.1.1.1"}}},
          "etcd": {"hosts": ["h"]}}"#;
        let clusters = parse(json, &GroupSelection::Default).expect("parse");
        assert_eq!(
            clusters[0].members[0].member.agent.to_string(),
            "https://agent.example:1234"
        );
    }

    #[test]
    fn refuses_bad_inventories_naming_the_group_or_host() {
        let cases: Vec<(&str, GroupSelection, &str)> = vec![
            ("not json", GroupSelection::Default, "not JSON"),
            ("[1]", GroupSelection::Default, "not `ansible-inventory --list`"),
            (
                r#"{"etcd": 3}"#,
                GroupSelection::Default,
                "group \"etcd\" is not an object",
            ),
            (
                r#"{"_meta": {"hostvars": []}}"#,
                GroupSelection::Default,
                "hostvars",
            ),
            (r#"{"all": {}}"#, GroupSelection::Default, "--group"),
            (TWO, named(&["etcd_prod_c"]), "no group \"etcd_prod_c\""),
            (
                r#"{"etcd": {"hosts": []}}"#,
                GroupSelection::Default,
                "group \"etcd\" has no hosts",
            ),
            (
                r#"{"etcd": {"hosts": "h"}}"#,
                GroupSelection::Default,
                "not a list",
            ),
            (
                r#"{"etcd": {"hosts": [1]}}"#,
                GroupSelection::Default,
                "non-string",
            ),
            (
                r#"{"a": {"hosts": ["h1"]}, "b": {"hosts": ["h2", "h1"]}}"#,
                named(&["a", "b"]),
                "host \"h1\" is in two clusters, \"a\" and \"b\"",
            ),
            (
                r#"{"a": {"hosts": ["h1"]}, "b": {"hosts": ["h2"]}}"#,
                named(&["a=x", "b=x"]),
                "both become cluster \"x\"",
            ),
            (
                r#"{"_meta": {"hostvars": {"h1": {"etcd_member_name": "e"}, "h2": {"etcdops_member_name": "e"}}},
                   "etcd": {"hosts": ["h1", "h2"]}}"#,
                GroupSelection::Default,
                "group \"etcd\": hosts \"h1\" and \"h2\" both have member name \"e\"",
            ),
            (
                r#"{"_meta": {"hostvars": {"h1": {"ansible_host": "10.0.0.1"}, "h2": {"ansible_host": "10.0.0.1"}}},
                   "etcd": {"hosts": ["h1", "h2"]}}"#,
                GroupSelection::Default,
                "hosts \"h1\" and \"h2\" have the same agent",
            ),
            (
                r#"{"_meta": {"hostvars": {"h1": {"ansible_host": ""}}}, "etcd": {"hosts": ["h1"]}}"#,
                GroupSelection::Default,
                "host \"h1\" (group \"etcd\") has no address",
            ),
            (
                r#"{"_meta": {"hostvars": {"bad_host": {}}}, "etcd": {"hosts": ["bad_host"]}}"#,
                GroupSelection::Default,
                "host \"bad_host\" (group \"etcd\")",
            ),
            (
                r#"{"_meta": {"hostvars": {"h": {"etcdops_agent_port": 70000}}}, "etcd": {"hosts": ["h"]}}"#,
                GroupSelection::Default,
                "host \"h\": variable etcdops_agent_port is 70000",
            ),
            (
                r#"{"_meta": {"hostvars": {"h": {"etcdops_agent_port": "x"}}}, "etcd": {"hosts": ["h"]}}"#,
                GroupSelection::Default,
                "etcdops_agent_port",
            ),
            (
                r#"{"_meta": {"hostvars": {"h": {"etcd_member_name": ["x"]}}}, "etcd": {"hosts": ["h"]}}"#,
                GroupSelection::Default,
                "variable etcd_member_name is [\"x\"], expected a string",
            ),
            (
                r#"{"_meta": {"hostvars": {"h": {"etcdops_member_name": " "}}}, "etcd": {"hosts": ["h"]}}"#,
                GroupSelection::Default,
                "expected a member name",
            ),
            (
                r#"{"_meta": {"hostvars": {"h": {"etcdops_agent_url": "http://h:1"}}}, "etcd": {"hosts": ["h"]}}"#,
                GroupSelection::Default,
                "use https://",
            ),
            (
                r#"{"etcdops_clusters": {"children": []}}"#,
                GroupSelection::Default,
                "--group",
            ),
            (
                r#"{"etcdops_clusters": {"children": ["gone"]}}"#,
                GroupSelection::Default,
                "no group \"gone\"",
            ),
        ];
        for (json, selection, expect) in cases {
            let msg = err(json, &selection).to_string();
            assert!(msg.contains(expect), "{json}: {msg:?} lacks {expect:?}");
        }
    }

    #[test]
    fn cycles_and_repeats_are_read_once() {
        let json =
            r#"{"a": {"children": ["b"], "hosts": ["h1"]}, "b": {"children": ["a"], "hosts": ["h1", "h2"]}}"#;
        let clusters = parse(json, &named(&["a"])).expect("parse");
        let hosts: Vec<&str> = clusters[0].members.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(hosts, ["h1", "h2"]);
    }
}
