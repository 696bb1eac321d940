//! The fleet inventory (`fleet.toml`): the coordinator's TLS identity and, per cluster, its members and their agents.
//!
//! ```toml
//! [tls]                      # the coordinator's identity (role coordinator) and the fleet CA
//! ca = "/etc/etcdops/pki/ca.crt"
//! cert = "/etc/etcdops/pki/coordinator-ops.crt"
//! key = "/etc/etcdops/pki/coordinator-ops.key"
//!
//! [[clusters]]
//! name = "prod-a"
//! [[clusters.members]]
//! name = "etcd1"                       # the etcd member name
//! agent = "https://198.18.0.11:7443"   # the agent endpoint
//! [clusters.backup]                    # optional: `etcdops backup` (see fleet/backup.rs)
//! target = "file:///var/backups/etcd/prod-a"
//! keep_last = 7
//! ```
//!
//! Relative paths in `[tls]` resolve against the fleet file's directory.

mod agent_url;
pub mod backup;
pub mod glob;
pub mod home;
pub mod import;
pub mod inventory;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use etcdops_certs::TlsFiles;
use serde::{Deserialize, Serialize};

use self::backup::BackupConfig;

pub use agent_url::{AgentUrl, AgentUrlError};

/// Where the fleet file lives unless `--fleet` or `ETCDOPS_FLEET` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/etcdops/fleet.toml";

/// The whole inventory. Build one with [`Fleet::new`] or [`Fleet::load`];
/// write one with [`Fleet::to_toml`] or [`Fleet::save`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The coordinator's client identity and the fleet CA.
    pub tls: FleetTls,
    /// Every cluster this coordinator manages (at least one; missing reads
    /// as none, so the error can say what to add).
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// `[home]`: the home etcd of `etcdops serve` (election, shared journal); see `home.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<home::HomeEtcd>,
}

/// `[tls]`: the coordinator's certificate (role `coordinator`), its key and the fleet CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetTls {
    /// The fleet CA certificate: the only trust anchor for agents.
    pub ca: PathBuf,
    /// The coordinator's certificate, issued with role `coordinator`.
    pub cert: PathBuf,
    /// The coordinator's private key (mode 0600 or stricter).
    pub key: PathBuf,
}

/// One etcd cluster: a name, its members, and where its backups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The cluster's name in this inventory (`--cluster NAME`).
    pub name: String,
    /// The members, each with the agent on its host.
    pub members: Vec<Member>,
    /// `[clusters.backup]`: the backup target and retention policy of `etcdops backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfig>,
}

/// One etcd member and the agent on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawMember")]
pub struct Member {
    /// The etcd member name (`--name` of etcd).
    pub name: String,
    /// The agent's endpoint, `https://host:port`.
    pub agent: AgentUrl,
}

/// [`Member`] as written, before its agent URL is checked: lets the error name the member.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    agent: String,
}

impl TryFrom<RawMember> for Member {
    type Error = String;

    fn try_from(raw: RawMember) -> Result<Member, String> {
        Member::new(&raw.name, &raw.agent).map_err(|e| e.to_string())
    }
}

/// A fleet that is well-formed TOML but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFleet {
    #[error("no clusters: add at least one [[clusters]] table")]
    NoClusters,
    #[error(transparent)]
    Home(#[from] home::InvalidHome),
    #[error("a cluster has an empty name")]
    EmptyClusterName,
    #[error("cluster {0:?} is listed twice; cluster names must be unique")]
    DuplicateCluster(String),
    #[error("cluster {0:?} has no members: add [[clusters.members]] tables")]
    NoMembers(String),
    #[error(
        "cluster {cluster:?} lists member {member:?} twice; member names must be unique within a cluster"
    )]
    DuplicateMember { cluster: String, member: String },
    #[error(
        "cluster {cluster:?}: members {first:?} and {second:?} have the same agent {agent}; each member has its own agent"
    )]
    DuplicateAgent {
        cluster: String,
        agent: AgentUrl,
        first: String,
        second: String,
    },
    #[error("[tls] {field} is empty: name the {what}")]
    EmptyTlsPath { field: &'static str, what: &'static str },
}

/// Everything that can go wrong with the fleet file or picking a cluster from it.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read the fleet file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("fleet file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<InvalidFleet>,
    },
    #[error("cannot serialize the fleet: {0}")]
    Serialize(#[from] toml::ser::Error),
    #[error("cannot write the fleet file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("member {name:?}: {source}")]
    InvalidMember {
        name: String,
        #[source]
        source: AgentUrlError,
    },
    #[error("the member name is empty (agent {agent})")]
    EmptyMemberName { agent: String },
    #[error("the fleet has several clusters ({}): pass --cluster NAME", .known.join(", "))]
    ClusterRequired { known: Vec<String> },
    #[error("no cluster {name:?} in the fleet; known clusters: {}", .known.join(", "))]
    UnknownCluster { name: String, known: Vec<String> },
    #[error("no cluster in the fleet matches {pattern:?}; known clusters: {}", .known.join(", "))]
    NoMatch { pattern: String, known: Vec<String> },
    #[error("--cluster {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
}

impl Member {
    /// A member with a checked agent URL.
    pub fn new(name: &str, agent: &str) -> Result<Member, FleetError> {
        if name.trim().is_empty() {
            return Err(FleetError::EmptyMemberName {
                agent: agent.to_string(),
            });
        }
        let agent = AgentUrl::parse(agent).map_err(|source| FleetError::InvalidMember {
            name: name.to_string(),
            source,
        })?;
        Ok(Member {
            name: name.to_string(),
            agent,
        })
    }
}

impl FleetTls {
    /// The certs crate's view of these files.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    fn resolve(&mut self, base: &Path) {
        for path in [&mut self.ca, &mut self.cert, &mut self.key] {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
    }
}

impl Cluster {
    /// The inventory's member of that etcd name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

impl Fleet {
    /// A checked fleet built in code (the sandbox writes one this way).
    pub fn new(tls: FleetTls, clusters: Vec<Cluster>) -> Result<Fleet, InvalidFleet> {
        let fleet = Fleet {
            tls,
            clusters,
            home: None,
        };
        fleet.validate()?;
        Ok(fleet)
    }

    /// Reads, parses and checks a fleet file; relative `[tls]` paths
    /// resolve against the file's directory.
    pub fn load(path: &Path) -> Result<Fleet, FleetError> {
        let text = fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Fleet::parse(&text, path)
    }

    /// Parses and checks fleet TOML as if read from `path` (which names the
    /// file in errors and anchors relative `[tls]` paths).
    pub fn parse(text: &str, path: &Path) -> Result<Fleet, FleetError> {
        let mut fleet = Fleet::parse_as_written(text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        fleet.tls.resolve(base);
        if let Some(home) = &mut fleet.home {
            home.resolve(base);
        }
        Ok(fleet)
    }

    /// Reads and checks a fleet file, keeping relative `[tls]` paths as
    /// written (to write the file back without changing them).
    pub fn load_as_written(path: &Path) -> Result<Fleet, FleetError> {
        let text = fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Fleet::parse_as_written(&text, path)
    }

    /// [`Fleet::parse`] without resolving relative `[tls]` paths.
    pub fn parse_as_written(text: &str, path: &Path) -> Result<Fleet, FleetError> {
        let fleet: Fleet = toml::from_str(text).map_err(|source| FleetError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        fleet.validate().map_err(|source| FleetError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(fleet)
    }

    /// Checks what TOML alone cannot: at least one cluster, unique names and agents.
    pub fn validate(&self) -> Result<(), InvalidFleet> {
        for (field, path, what) in [
            ("ca", &self.tls.ca, "fleet CA certificate"),
            ("cert", &self.tls.cert, "coordinator certificate"),
            ("key", &self.tls.key, "coordinator private key"),
        ] {
            if path.as_os_str().is_empty() {
                return Err(InvalidFleet::EmptyTlsPath { field, what });
            }
        }
        if self.clusters.is_empty() {
            return Err(InvalidFleet::NoClusters);
        }
        if let Some(home) = &self.home {
            home.validate()?;
        }
        let mut cluster_names = HashSet::new();
        for cluster in &self.clusters {
            if cluster.name.trim().is_empty() {
                return Err(InvalidFleet::EmptyClusterName);
            }
            if !cluster_names.insert(cluster.name.as_str()) {
                return Err(InvalidFleet::DuplicateCluster(cluster.name.clone()));
            }
            if cluster.members.is_empty() {
                return Err(InvalidFleet::NoMembers(cluster.name.clone()));
            }
            let mut names = HashSet::new();
            let mut agents: Vec<(&AgentUrl, &str)> = Vec::new();
            for member in &cluster.members {
                if !names.insert(member.name.as_str()) {
                    return Err(InvalidFleet::DuplicateMember {
                        cluster: cluster.name.clone(),
                        member: member.name.clone(),
                    });
                }
                if let Some((_, first)) = agents.iter().find(|(url, _)| **url == member.agent) {
                    return Err(InvalidFleet::DuplicateAgent {
                        cluster: cluster.name.clone(),
                        agent: member.agent.clone(),
                        first: first.to_string(),
                        second: member.name.clone(),
                    });
                }
                agents.push((&member.agent, &member.name));
            }
        }
        Ok(())
    }

    /// The cluster `--cluster` names, or the only one when there is one.
    pub fn select(&self, name: Option<&str>) -> Result<&Cluster, FleetError> {
        let known = || self.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        match name {
            Some(name) => {
                self.clusters
                    .iter()
                    .find(|c| c.name == name)
                    .ok_or_else(|| FleetError::UnknownCluster {
                        name: name.to_string(),
                        known: known(),
                    })
            }
            None => match self.clusters.as_slice() {
                [only] => Ok(only),
                _ => Err(FleetError::ClusterRequired { known: known() }),
            },
        }
    }

    /// The clusters `--all-clusters` (every one, `pattern` None) or
    /// `--cluster GLOB` names, in fleet order; none is an error.
    pub fn select_many(&self, pattern: Option<&str>) -> Result<Vec<&Cluster>, FleetError> {
        let Some(pattern) = pattern else {
            return Ok(self.clusters.iter().collect());
        };
        let glob = glob::Glob::new(pattern).map_err(|reason| FleetError::BadPattern {
            pattern: pattern.to_string(),
            reason,
        })?;
        let chosen: Vec<&Cluster> = self.clusters.iter().filter(|c| glob.matches(&c.name)).collect();
        if chosen.is_empty() {
            return Err(FleetError::NoMatch {
                pattern: pattern.to_string(),
                known: self.clusters.iter().map(|c| c.name.clone()).collect(),
            });
        }
        Ok(chosen)
    }

    /// The fleet as TOML, in the format [`Fleet::parse`] reads.
    pub fn to_toml(&self) -> Result<String, FleetError> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Writes the fleet to `path` atomically (temporary file in the same
    /// directory, fsync, rename, fsync of the directory): a reader sees the
    /// old file or the new one, never a part. An existing file's mode is kept.
    pub fn save(&self, path: &Path) -> Result<(), FleetError> {
        let text = self.to_toml()?;
        let write_err = |source| FleetError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let result = (|| {
            let mut file = fs::File::create(&tmp)?;
            // The file keeps its mode (and so who may read it).
            if let Ok(meta) = fs::metadata(path) {
                file.set_permissions(meta.permissions())?;
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[tls]
ca = "pki/ca.crt"
cert = "/etc/etcdops/pki/coordinator-ops.crt"
key = "pki/coordinator-ops.key"

[[clusters]]
name = "prod-a"
[[clusters.members]]
name = "etcd1"
agent = "https://198.18.0.11:7443"
[[clusters.members]]
name = "etcd2"
agent = "https://etcd2.example.com:7443/"

[[clusters]]
name = "prod-b"
[[clusters.members]]
name = "etcd1"
agent = "https://[2001:db8::1]:7443"
"#;

    fn parse(text: &str) -> Result<Fleet, FleetError> {
        Fleet::parse(text, Path::new("/etc/etcdops/fleet.toml"))
    }

    fn invalid(text: &str) -> InvalidFleet {
        match parse(text) {
            Err(FleetError::Invalid { source, .. }) => *source,
            other => panic!("expected an invalid fleet, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match parse(text) {
            Err(e @ FleetError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    fn one_cluster(members: &str) -> String {
        format!(
            "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n[[clusters]]\nname = \"a\"\n{members}"
        )
    }

    #[test]
    fn parses_and_resolves_relative_tls_paths() {
        let fleet = parse(GOOD).expect("good fleet");
        assert_eq!(fleet.tls.ca, PathBuf::from("/etc/etcdops/pki/ca.crt"));
        assert_eq!(
            fleet.tls.cert,
            PathBuf::from("/etc/etcdops/pki/coordinator-ops.crt")
        );
        assert_eq!(
            fleet.tls.key,
            PathBuf::from("/etc/etcdops/pki/coordinator-ops.key")
        );
        assert_eq!(fleet.clusters.len(), 2);
        let a = &fleet.clusters[0];
        assert_eq!(a.members[0].agent.host(), "198.18.0.11");
        assert_eq!(a.members[0].agent.port(), 7443);
        assert_eq!(a.members[1].agent.to_string(), "https://etcd2.example.com:7443");
        let b = &fleet.clusters[1];
        assert_eq!(b.members[0].agent.host(), "2001:db8::1");
        assert_eq!(b.members[0].agent.to_string(), "https://[2001:db8::1]:7443");
        assert_eq!(a.member("etcd2").map(|m| m.agent.port()), Some(7443));
        assert!(a.member("etcd9").is_none());
    }

    #[test]
    fn round_trips_through_toml() {
        let fleet = parse(GOOD).expect("good fleet");
        let text = fleet.to_toml().expect("serialize");
        assert_eq!(parse(&text).expect("reparse"), fleet);
    }

    #[test]
    fn builds_saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = FleetTls {
            ca: "ca.crt".into(),
            cert: "coordinator-ops.crt".into(),
            key: "coordinator-ops.key".into(),
        };
        let members = vec![
            Member::new("etcd1", "https://127.0.0.11:7443").expect("member"),
            Member::new("etcd2", "https://127.0.0.12:7443").expect("member"),
        ];
        let fleet = Fleet::new(
            tls,
            vec![Cluster {
                name: "sandbox".into(),
                members,
                backup: None,
            }],
        )
        .expect("fleet");
        let path = dir.path().join("fleet.toml");
        fleet.save(&path).expect("save");
        let loaded = Fleet::load(&path).expect("load");
        assert_eq!(loaded.tls.ca, dir.path().join("ca.crt"));
        assert_eq!(loaded.clusters, fleet.clusters);
        assert!(matches!(
            Fleet::load(&dir.path().join("missing.toml")),
            Err(FleetError::Read { .. })
        ));
    }

    #[test]
    fn refuses_bad_agent_urls_naming_the_member() {
        let cases = [
            ("http://198.18.0.11:7443", "use https://"),
            ("198.18.0.11:7443", "missing https://"),
            ("https://198.18.0.11", "missing :PORT"),
            ("https://198.18.0.11:", "the port must be a number"),
            ("https://198.18.0.11:99999", "1-65535"),
            ("https://198.18.0.11:0", "1-65535"),
            ("https://198.18.0.11:7443/v1", "no path"),
            ("https://user@198.18.0.11:7443", "no user info"),
            ("https://2001:db8::1:7443", "brackets"),
            ("https://[nonsense]:7443", "IPv6"),
            ("https://bad_host:7443", "neither an IP"),
            ("https://:7443", "neither an IP"),
        ];
        for (url, expect) in cases {
            let text = one_cluster(&format!(
                "[[clusters.members]]\nname = \"etcd2\"\nagent = \"{url}\"\n"
            ));
            let msg = parse_error(&text);
            assert!(msg.contains("etcd2") && msg.contains(expect), "{url}: {msg}");
            assert!(msg.contains("/etc/etcdops/fleet.toml"), "{msg}");
        }
    }

    #[test]
    fn refuses_unknown_fields() {
        let text = one_cluster("[[clusters.members]]\nname = \"e1\"\nagent = \"https://h:1\"\nport = 3\n");
        assert!(parse_error(&text).contains("port"));
        let text = GOOD.replace("[tls]", "[tls]\npassword = \"x\"");
        assert!(parse_error(&text).contains("password"));
        let text = format!("endpoints = []\n{GOOD}");
        assert!(parse_error(&text).contains("endpoints"));
    }

    #[test]
    fn refuses_senseless_fleets() {
        let tls = "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n";
        assert_eq!(
            invalid(&format!("clusters = []\n{tls}")),
            InvalidFleet::NoClusters
        );
        assert_eq!(invalid(tls), InvalidFleet::NoClusters);
        assert_eq!(
            invalid(&format!("{tls}[[clusters]]\nname = \"a\"\nmembers = []\n")),
            InvalidFleet::NoMembers("a".into())
        );
        let m = "[[clusters.members]]\nname = \"e1\"\nagent = \"https://h1:1\"\n";
        assert_eq!(
            invalid(&format!(
                "{tls}[[clusters]]\nname = \"a\"\n{m}[[clusters]]\nname = \"a\"\n{m}"
            )),
            InvalidFleet::DuplicateCluster("a".into())
        );
        assert_eq!(
            invalid(&one_cluster(&format!("{m}{m}"))),
            InvalidFleet::DuplicateMember {
                cluster: "a".into(),
                member: "e1".into()
            }
        );
        let same_agent = format!("{m}[[clusters.members]]\nname = \"e2\"\nagent = \"https://H1:1/\"\n");
        assert!(matches!(
            invalid(&one_cluster(&same_agent)),
            InvalidFleet::DuplicateAgent { ref first, ref second, .. } if first == "e1" && second == "e2"
        ));
        let empty_key = one_cluster(m).replace("key = \"c.key\"", "key = \"\"");
        assert!(matches!(
            invalid(&empty_key),
            InvalidFleet::EmptyTlsPath { field: "key", .. }
        ));
        // The same member name in two clusters is fine.
        let two = format!("{tls}[[clusters]]\nname = \"a\"\n{m}[[clusters]]\nname = \"b\"\n{m}");
        assert!(parse(&two).is_ok());
        assert!(parse_error("not toml [").contains("/etc/etcdops/fleet.toml"));
    }

    #[test]
    fn parses_an_optional_backup_table() {
        let text = GOOD.replace(
            "[[clusters]]\nname = \"prod-b\"",
            "[clusters.backup]\ntarget = \"s3://etcd-backups/prod-a\"\nkeep_daily = 7\nkeep_within = \"2d\"\n\n[[clusters]]\nname = \"prod-b\"",
        );
        let fleet = parse(&text).expect("fleet with a backup table");
        let backup = fleet.clusters[0].backup.as_ref().expect("prod-a has one");
        assert_eq!(backup.target.to_string(), "s3://etcd-backups/prod-a");
        assert_eq!(backup.keep_daily.map(|n| n.get()), Some(7));
        assert_eq!(backup.keep_within.as_ref().map(|s| s.as_str()), Some("2d"));
        assert!(fleet.clusters[1].backup.is_none());
        assert_eq!(
            parse(&fleet.to_toml().expect("serialize")).expect("reparse"),
            fleet
        );
        let bad = text.replace("keep_daily = 7", "keep_daily = 7\ns3_secret = \"x\"");
        let msg = parse_error(&bad);
        assert!(
            msg.contains("s3_secret") && msg.contains("/etc/etcdops/fleet.toml"),
            "{msg}"
        );
        let bad = text.replace("s3://etcd-backups/prod-a", "/var/backups");
        assert!(parse_error(&bad).contains("file:///absolute/dir"));
    }

    #[test]
    fn selects_clusters() {
        let fleet = parse(GOOD).expect("good fleet");
        assert_eq!(fleet.select(Some("prod-b")).expect("b").name, "prod-b");
        let err = fleet.select(None).expect_err("two clusters need --cluster");
        assert!(matches!(err, FleetError::ClusterRequired { .. }));
        assert!(err.to_string().contains("prod-a, prod-b"), "{err}");
        let err = fleet.select(Some("prod-c")).expect_err("unknown");
        assert!(
            err.to_string().contains("prod-c") && err.to_string().contains("prod-a, prod-b"),
            "{err}"
        );

        let mut single = fleet.clone();
        single.clusters.truncate(1);
        assert_eq!(single.select(None).expect("only one").name, "prod-a");
        assert!(single.select(Some("prod-b")).is_err());
    }

    #[test]
    fn selects_many_clusters_by_glob() {
        let fleet = parse(GOOD).expect("good fleet");
        let names = |p: Option<&str>| -> Vec<String> {
            fleet
                .select_many(p)
                .expect("match")
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(None), ["prod-a", "prod-b"]);
        assert_eq!(names(Some("prod-*")), ["prod-a", "prod-b"]);
        assert_eq!(names(Some("*-b")), ["prod-b"]);
        let err = fleet.select_many(Some("staging-*")).expect_err("no match");
        assert!(
            err.to_string().contains("staging-*") && err.to_string().contains("prod-a, prod-b"),
            "{err}"
        );
        assert!(matches!(
            fleet.select_many(Some("prod-[a")),
            Err(FleetError::BadPattern { .. })
        ));
    }

    #[test]
    fn as_written_keeps_relative_paths_and_saves_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.toml");
        std::fs::write(&path, GOOD).expect("write");
        let fleet = Fleet::load_as_written(&path).expect("load");
        assert_eq!(fleet.tls.ca, PathBuf::from("pki/ca.crt"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        fleet.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the mode is kept");
        assert_eq!(Fleet::load_as_written(&path).expect("reload"), fleet);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "fleet.toml")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
