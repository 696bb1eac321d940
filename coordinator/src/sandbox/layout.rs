//! The files of a local cluster: PKI, one etcd environment file and one
//! agent config per member, and the fleet file. Shared by `etcdops sandbox`
//! and the end-to-end test harness, so both run exactly the same setup.
//! Spare hosts get the same files but no member yet: their agents do not
//! start etcd, and their env files lack the `ETCD_INITIAL_CLUSTER*`
//! settings the coordinator writes when it adds the member.
//!
//! etcd speaks TLS by default (`tls = true`): every host gets
//! `etcd-server` and `etcd-peer` certificates for its IP, the env files run
//! etcd with client and peer TLS and client-certificate auth on https URLs,
//! and the agent talks to its member with an `etcd-client` certificate of
//! its own (`[etcd.tls]`). The layout also issues an operator's
//! `etcd-client` certificate for etcdctl and tests ([`Layout::etcd_client`]).
//! `tls = false` keeps plain HTTP for a test that compares the two.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use etcdops_certs::{IssueRequest, Pki, Role};

use super::agent_toml::{AgentToml, DiskToml, EtcdToml, Restart, TlsToml, UnitToml};
use crate::fleet::{Cluster, Fleet, FleetTls, Member};

/// What to lay out. Saved as `sandbox.toml` so `up` and `down` can find
/// the same layout again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// Everything goes under this directory.
    pub dir: PathBuf,
    /// The fleet's name for the cluster.
    pub cluster: String,
    /// Number of etcd members (1 to 9).
    pub members: usize,
    /// The first three octets of the members' loopback addresses; member i
    /// (0-based) gets `<prefix>.<11 + i>`.
    pub ip_prefix: [u8; 3],
    pub client_port: u16,
    pub peer_port: u16,
    pub agent_port: u16,
    /// The etcd binary the agents' process backend runs.
    pub etcd_binary: PathBuf,
    /// What the process backend does when etcd dies.
    pub restart: Restart,
    /// etcd's initial cluster token (unique per cluster).
    pub token: String,
    /// When set, each agent serves its `/metrics` on `<member ip>:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// The agents' `[disk] probe_interval_secs`; default: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_probe_interval_secs: Option<u64>,
    /// Spare hosts (0 to 4): agents without an etcd member, named and
    /// addressed after the members (`etcd<members + 1>`, ...), not in the
    /// fleet file; `etcdops member add` turns one into a member.
    #[serde(default)]
    pub spares: usize,
    /// etcd serves clients and peers over TLS with client-certificate auth
    /// (the default); `false`: plain HTTP, only for a test that needs it.
    #[serde(default = "default_tls")]
    pub tls: bool,
}

fn default_tls() -> bool {
    true
}

/// The CN of the operator's etcd client certificate (etcdctl, tests).
pub const ETCD_CLIENT_OPERATOR: &str = "sandbox-operator";

/// The most spare hosts a layout has.
pub const MAX_SPARES: usize = 4;

/// One member's addresses and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLayout {
    pub name: String,
    pub ip: Ipv4Addr,
    pub client_url: String,
    pub peer_url: String,
    pub agent_url: String,
    /// The member's directory: config, env file, data dir, agent state, logs.
    pub dir: PathBuf,
    pub agent_config: PathBuf,
    pub env_file: PathBuf,
    pub data_dir: PathBuf,
    /// The agent's own state dir (fences, revision samples).
    pub state_dir: PathBuf,
    pub etcd_log: PathBuf,
    pub agent_log: PathBuf,
    /// etcd's TLS files on this host; `None` with plain HTTP.
    pub etcd_tls: Option<EtcdTlsLayout>,
}

/// One host's etcd certificates, all from the layout's PKI
/// (`etcdops certs issue etcd-server|etcd-peer|etcd-client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTlsLayout {
    /// The fleet CA: the trust anchor of clients and peers.
    pub ca: PathBuf,
    /// etcd's client-facing certificate (`ETCD_CERT_FILE`), SAN: the host's IP.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// etcd's peer certificate (`ETCD_PEER_CERT_FILE`), SAN: the host's IP.
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    /// The agent's client certificate towards its member (`[etcd.tls]`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTlsLayout {
    /// The agent's identity towards etcd (`[etcd.tls]`).
    pub fn agent_client(&self) -> etcdops_certs::TlsFiles {
        etcdops_certs::TlsFiles {
            ca: self.ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        }
    }
}

/// A laid-out cluster.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub fleet_path: PathBuf,
    pub pki_dir: PathBuf,
    pub members: Vec<MemberLayout>,
    /// Spare hosts: an agent each, no etcd member yet (not in the fleet file).
    pub spares: Vec<MemberLayout>,
    /// The operator's etcd client identity (etcdctl `--cacert --cert --key`,
    /// the tests' etcd clients); `None` with plain HTTP.
    pub etcd_client: Option<etcdops_certs::TlsFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("--members must be between 1 and 9, got {0}")]
    MemberCount(usize),
    #[error("--spares must be between 0 and {MAX_SPARES}, got {0}")]
    SpareCount(usize),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] etcdops_certs::PkiError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("building the fleet: {0}")]
    InvalidFleet(#[from] crate::fleet::InvalidFleet),
    #[error("cannot write the agent config {path}: {source}")]
    AgentToml {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error(transparent)]
    AgentConfigRefused(#[from] super::agent_toml::CheckError),
}

impl LayoutSpec {
    /// The addresses and paths, computed without touching the disk.
    pub fn plan(&self) -> Result<Layout, LayoutError> {
        if !(1..=9).contains(&self.members) {
            return Err(LayoutError::MemberCount(self.members));
        }
        if self.spares > MAX_SPARES {
            return Err(LayoutError::SpareCount(self.spares));
        }
        let mut hosts = (0..self.members + self.spares).map(|i| self.host(i));
        let members = hosts.by_ref().take(self.members).collect();
        let pki_dir = self.dir.join("pki");
        let etcd_client = self.tls.then(|| {
            let (cert, key) = pki_paths(&pki_dir, Role::EtcdClient, ETCD_CLIENT_OPERATOR);
            etcdops_certs::TlsFiles {
                ca: pki_dir.join("ca.crt"),
                cert,
                key,
            }
        });
        Ok(Layout {
            fleet_path: self.dir.join("fleet.toml"),
            pki_dir,
            dir: self.dir.clone(),
            members,
            spares: hosts.collect(),
            etcd_client,
        })
    }

    /// Host i (0-based; spares follow the members): `etcd<i + 1>` on `<prefix>.<11 + i>`.
    fn host(&self, i: usize) -> MemberLayout {
        let [a, b, c] = self.ip_prefix;
        let name = format!("etcd{}", i + 1);
        let host = u8::try_from(11 + i).unwrap_or(u8::MAX);
        let ip = Ipv4Addr::new(a, b, c, host);
        let dir = self.dir.join(&name);
        let scheme = if self.tls { "https" } else { "http" };
        let etcd_tls = self.tls.then(|| {
            let pki = self.dir.join("pki");
            let (server_cert, server_key) = pki_paths(&pki, Role::EtcdServer, &name);
            let (peer_cert, peer_key) = pki_paths(&pki, Role::EtcdPeer, &name);
            let (client_cert, client_key) = pki_paths(&pki, Role::EtcdClient, &agent_client_name(&name));
            EtcdTlsLayout {
                ca: pki.join("ca.crt"),
                server_cert,
                server_key,
                peer_cert,
                peer_key,
                client_cert,
                client_key,
            }
        });
        MemberLayout {
            client_url: format!("{scheme}://{ip}:{}", self.client_port),
            peer_url: format!("{scheme}://{ip}:{}", self.peer_port),
            agent_url: format!("https://{ip}:{}", self.agent_port),
            agent_config: dir.join("agent.toml"),
            env_file: dir.join("etcd.env"),
            data_dir: dir.join("data"),
            state_dir: dir.join("agent-state"),
            etcd_log: dir.join("etcd.log"),
            agent_log: dir.join("agent.log"),
            etcd_tls,
            name,
            ip,
            dir,
        }
    }

    /// Writes the PKI, env files, agent configs and the fleet file.
    pub fn write(&self) -> Result<Layout, LayoutError> {
        let layout = self.plan()?;
        let (pki, _) = Pki::init(&layout.pki_dir, "etcdops-sandbox-ca", 30, false)?;
        let coordinator = pki.issue(&IssueRequest::new(Role::Coordinator, "sandbox-operator"))?;
        if self.tls {
            pki.issue(&IssueRequest::new(Role::EtcdClient, ETCD_CLIENT_OPERATOR))?;
        }
        let initial_cluster = layout
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &layout.members {
            self.write_host(&pki, m, &env_file(m, Some((&initial_cluster, &self.token))), true)?;
        }
        for m in &layout.spares {
            self.write_host(&pki, m, &env_file(m, None), false)?;
        }
        let fleet = Fleet::new(
            FleetTls {
                ca: pki.ca_cert_path(),
                cert: coordinator.cert_path,
                key: coordinator.key_path,
            },
            vec![Cluster {
                name: self.cluster.clone(),
                members: layout
                    .members
                    .iter()
                    .map(|m| Member::new(&m.name, &m.agent_url))
                    .collect::<Result<_, _>>()?,
                backup: None,
            }],
        )?;
        fleet.save(&layout.fleet_path)?;
        Ok(layout)
    }

    /// One host's directory, agent certificate, env file and agent config;
    /// `autostart`: the agent starts etcd (members) or waits to be told (spares).
    fn write_host(&self, pki: &Pki, m: &MemberLayout, env: &str, autostart: bool) -> Result<(), LayoutError> {
        create_dir(&m.dir)?;
        let cert = pki.issue(&IssueRequest::new(Role::Agent, m.name.clone()).host(m.ip.to_string()))?;
        if m.etcd_tls.is_some() {
            for role in [Role::EtcdServer, Role::EtcdPeer] {
                let mut request = IssueRequest::new(role, m.name.clone()).host(m.ip.to_string());
                // etcd checks a peer's (and its own gateway's) client
                // certificate against the connection's source address, and
                // Linux sends from 127.0.0.1 to any 127.x address.
                if m.ip.is_loopback() && m.ip != Ipv4Addr::LOCALHOST {
                    request = request.host(Ipv4Addr::LOCALHOST.to_string());
                }
                pki.issue(&request)?;
            }
            pki.issue(&IssueRequest::new(Role::EtcdClient, agent_client_name(&m.name)))?;
        }
        write(&m.env_file, env)?;
        let config = AgentToml {
            listen: (m.ip, self.agent_port).into(),
            metrics_listen: self.metrics_port.map(|port| (m.ip, port).into()),
            state_dir: m.state_dir.clone(),
            tls: TlsToml {
                ca: pki.ca_cert_path(),
                cert: cert.cert_path,
                key: cert.key_path,
            },
            etcd: EtcdToml {
                endpoint: m.client_url.clone(),
                env_file: m.env_file.clone(),
                tls: m.etcd_tls.as_ref().map(|t| TlsToml {
                    ca: t.ca.clone(),
                    cert: t.client_cert.clone(),
                    key: t.client_key.clone(),
                }),
            },
            unit: UnitToml {
                backend: "process".to_string(),
                etcd_binary: self.etcd_binary.clone(),
                log_file: m.etcd_log.clone(),
                autostart,
                restart: self.restart,
            },
            disk: self
                .disk_probe_interval_secs
                .map(|probe_interval_secs| DiskToml { probe_interval_secs }),
        };
        let text = config.to_toml().map_err(|source| LayoutError::AgentToml {
            path: m.agent_config.clone(),
            source,
        })?;
        write(&m.agent_config, &text)
    }
}

impl Layout {
    /// Every host's agent config checked by the agent binary itself
    /// (`etcdops-agent --check-config PATH`): the first refusal, naming the
    /// file and what the agent said.
    pub fn check_agent_configs(&self, agent_bin: &Path) -> Result<(), LayoutError> {
        for m in self.members.iter().chain(&self.spares) {
            super::agent_toml::check(agent_bin, &m.agent_config)?;
        }
        Ok(())
    }
}

/// The host's etcd environment file, in Debian's /etc/default/etcd layout.
/// `initial`: the initial cluster and its token, for a member of the new
/// cluster; `None` for a spare host, whose `ETCD_INITIAL_CLUSTER*` the
/// coordinator writes (SetEtcdEnv) when it adds the member.
fn env_file(m: &MemberLayout, initial: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "# etcd environment for {what} {name}, written by etcdops (Debian's /etc/default/etcd layout).\n\
         ETCD_NAME=\"{name}\"\n\
         ETCD_DATA_DIR=\"{data}\"\n\
         ETCD_LISTEN_PEER_URLS=\"{peer}\"\n\
         ETCD_LISTEN_CLIENT_URLS=\"{client}\"\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\"\n\
         ETCD_ADVERTISE_CLIENT_URLS=\"{client}\"\n",
        what = if initial.is_some() { "member" } else { "spare host" },
        name = m.name,
        data = m.data_dir.display(),
        peer = m.peer_url,
        client = m.client_url,
    );
    if let Some((initial_cluster, token)) = initial {
        text.push_str(&format!(
            "ETCD_INITIAL_CLUSTER=\"{initial_cluster}\"\n\
             ETCD_INITIAL_CLUSTER_STATE=\"new\"\n\
             ETCD_INITIAL_CLUSTER_TOKEN=\"{token}\"\n"
        ));
    }
    if let Some(tls) = &m.etcd_tls {
        text.push_str(&format!(
            "# Client and peer TLS with client-certificate auth (etcdops certs issue etcd-server|etcd-peer).\n\
             ETCD_CERT_FILE=\"{server_cert}\"\n\
             ETCD_KEY_FILE=\"{server_key}\"\n\
             ETCD_TRUSTED_CA_FILE=\"{ca}\"\n\
             ETCD_CLIENT_CERT_AUTH=\"true\"\n\
             ETCD_PEER_CERT_FILE=\"{peer_cert}\"\n\
             ETCD_PEER_KEY_FILE=\"{peer_key}\"\n\
             ETCD_PEER_TRUSTED_CA_FILE=\"{ca}\"\n\
             ETCD_PEER_CLIENT_CERT_AUTH=\"true\"\n",
            server_cert = tls.server_cert.display(),
            server_key = tls.server_key.display(),
            peer_cert = tls.peer_cert.display(),
            peer_key = tls.peer_key.display(),
            ca = tls.ca.display(),
        ));
    }
    text.push_str("ETCD_LOGGER=\"zap\"\n");
    text
}

/// The CN of host `member`'s agent's etcd client certificate.
fn agent_client_name(member: &str) -> String {
    format!("agent-{member}")
}

/// Where `Pki::paths` puts a certificate, computed without opening the PKI.
fn pki_paths(pki_dir: &Path, role: Role, name: &str) -> (PathBuf, PathBuf) {
    let stem = format!("{}-{name}", role.as_str());
    (
        pki_dir.join(format!("{stem}.crt")),
        pki_dir.join(format!("{stem}.key")),
    )
}

fn create_dir(path: &Path) -> Result<(), LayoutError> {
    std::fs::create_dir_all(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), LayoutError> {
    std::fs::write(path, text).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An agent config as written (the agent's own parser runs in
    /// `sandbox up` and in every end-to-end test).
    fn agent_toml(path: &Path) -> AgentToml {
        toml::from_str(&std::fs::read_to_string(path).expect("read")).expect("agent config parses")
    }

    fn agent_tls(config: &AgentToml) -> etcdops_certs::TlsFiles {
        etcdops_certs::TlsFiles {
            ca: config.tls.ca.clone(),
            cert: config.tls.cert.clone(),
            key: config.tls.key.clone(),
        }
    }

    /// `KEY="value"` lines of an env file as written here.
    fn env_vars(path: &Path) -> HashMap<String, String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    }

    fn spec(dir: &Path) -> LayoutSpec {
        LayoutSpec {
            dir: dir.to_path_buf(),
            cluster: "sandbox".to_string(),
            members: 3,
            ip_prefix: [127, 0, 0],
            client_port: 2379,
            peer_port: 2380,
            agent_port: 7443,
            etcd_binary: PathBuf::from("/usr/bin/etcd"),
            restart: Restart::Never,
            token: "t1".to_string(),
            metrics_port: None,
            disk_probe_interval_secs: None,
            spares: 0,
            tls: true,
        }
    }

    #[test]
    fn writes_configs_the_agent_and_fleet_parsers_accept() {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = spec(dir.path()).write().expect("write");
        assert_eq!(layout.members.len(), 3);
        assert_eq!(layout.members[2].client_url, "https://127.0.0.13:2379");
        let operator = layout.etcd_client.as_ref().expect("TLS by default");
        operator
            .client()
            .expect("the operator's etcd client identity loads");
        assert_eq!(
            operator.identity().expect("identity").role,
            Some(Role::EtcdClient)
        );
        let fleet = Fleet::load(&layout.fleet_path).expect("fleet parses");
        assert_eq!(fleet.clusters[0].members.len(), 3);
        for m in &layout.members {
            let config = agent_toml(&m.agent_config);
            assert_eq!(
                config.state_dir,
                m.dir.join("agent-state"),
                "each agent has its own state dir"
            );
            assert_eq!(config.unit.restart, Restart::Never);
            assert_eq!(config.disk, None, "the agent's default probe interval");
            agent_tls(&config).server_config().expect("agent TLS loads");
            let env = env_vars(&m.env_file);
            assert_eq!(env.get("ETCD_NAME").map(String::as_str), Some(m.name.as_str()));
            assert_eq!(
                env.get("ETCD_INITIAL_CLUSTER").map(String::as_str),
                Some(
                    "etcd1=https://127.0.0.11:2380,etcd2=https://127.0.0.12:2380,etcd3=https://127.0.0.13:2380"
                )
            );
            let tls = m.etcd_tls.as_ref().expect("TLS by default");
            let get = |key: &str| env.get(key).map(String::as_str);
            for (key, path) in [
                ("ETCD_CERT_FILE", &tls.server_cert),
                ("ETCD_KEY_FILE", &tls.server_key),
                ("ETCD_TRUSTED_CA_FILE", &tls.ca),
                ("ETCD_PEER_CERT_FILE", &tls.peer_cert),
                ("ETCD_PEER_KEY_FILE", &tls.peer_key),
                ("ETCD_PEER_TRUSTED_CA_FILE", &tls.ca),
            ] {
                assert_eq!(get(key), path.to_str(), "{key}");
                assert!(path.is_file(), "{key}: {} written", path.display());
            }
            assert_eq!(get("ETCD_CLIENT_CERT_AUTH"), Some("true"));
            assert_eq!(get("ETCD_PEER_CLIENT_CERT_AUTH"), Some("true"));
            assert_eq!(get("ETCD_LISTEN_CLIENT_URLS"), Some(m.client_url.as_str()));
            assert_eq!(get("ETCD_ADVERTISE_CLIENT_URLS"), Some(m.client_url.as_str()));
            for (cert, role) in [
                (&tls.server_cert, Role::EtcdServer),
                (&tls.peer_cert, Role::EtcdPeer),
                (&tls.client_cert, Role::EtcdClient),
            ] {
                let id = etcdops_certs::Identity::from_pem_file(cert).expect("identity");
                assert_eq!(id.role, Some(role), "{}", cert.display());
            }
            assert_eq!(config.etcd.endpoint, m.client_url);
            let etcd_tls = config.etcd.tls.as_ref().expect("[etcd.tls]");
            assert_eq!(
                (&etcd_tls.ca, &etcd_tls.cert, &etcd_tls.key),
                (&tls.ca, &tls.client_cert, &tls.client_key)
            );
            tls.agent_client()
                .client()
                .expect("the agent's etcd client identity loads");
        }
        fleet.tls.files().client().expect("coordinator TLS loads");
        // A second write into the same dir refuses to overwrite the PKI.
        assert!(matches!(spec(dir.path()).write(), Err(LayoutError::Pki(_))));
    }

    #[test]
    fn spares_are_hosts_without_a_member() {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutSpec {
            spares: 2,
            ..spec(dir.path())
        }
        .write()
        .expect("write");
        assert_eq!(layout.members.len(), 3);
        let names: Vec<&str> = layout.spares.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["etcd4", "etcd5"]);
        assert_eq!(layout.spares[0].peer_url, "https://127.0.0.14:2380");
        assert!(
            layout.spares[0]
                .etcd_tls
                .as_ref()
                .is_some_and(|t| t.peer_cert.is_file())
        );
        assert_eq!(layout.spares[1].agent_url, "https://127.0.0.15:7443");
        let fleet = Fleet::load(&layout.fleet_path).expect("fleet parses");
        assert_eq!(fleet.clusters[0].members.len(), 3, "spares are not in the fleet");
        for m in &layout.members {
            assert!(agent_toml(&m.agent_config).unit.autostart);
        }
        for s in &layout.spares {
            let config = agent_toml(&s.agent_config);
            assert!(!config.unit.autostart, "a spare's agent does not start etcd");
            agent_tls(&config).server_config().expect("spare agent TLS loads");
            let env = env_vars(&s.env_file);
            let get = |key: &str| env.get(key).map(String::as_str);
            assert_eq!(get("ETCD_NAME"), Some(s.name.as_str()));
            assert_eq!(get("ETCD_INITIAL_ADVERTISE_PEER_URLS"), Some(s.peer_url.as_str()));
            assert_eq!(get("ETCD_LISTEN_CLIENT_URLS"), Some(s.client_url.as_str()));
            assert_eq!(get("ETCD_DATA_DIR"), Some(s.data_dir.to_str().expect("utf-8")));
            for unset in [
                "ETCD_INITIAL_CLUSTER",
                "ETCD_INITIAL_CLUSTER_STATE",
                "ETCD_INITIAL_CLUSTER_TOKEN",
            ] {
                assert_eq!(get(unset), None, "{unset} is written when the member is added");
            }
        }
        let mut s = spec(Path::new("/x"));
        s.spares = MAX_SPARES + 1;
        assert!(matches!(s.plan(), Err(LayoutError::SpareCount(5))));
    }

    #[test]
    fn plain_http_when_asked() {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LayoutSpec {
            tls: false,
            ..spec(dir.path())
        }
        .write()
        .expect("write");
        assert_eq!(layout.etcd_client, None);
        let m = &layout.members[0];
        assert_eq!(
            (m.client_url.as_str(), m.peer_url.as_str()),
            ("http://127.0.0.11:2379", "http://127.0.0.11:2380")
        );
        assert_eq!(m.etcd_tls, None);
        assert_eq!(agent_toml(&m.agent_config).etcd.tls, None);
        let env = env_vars(&m.env_file);
        assert!(
            !env.keys().any(|k| k.contains("CERT") || k.contains("KEY")),
            "{env:?}"
        );
        // A sandbox.toml of a version without `tls` read back: TLS.
        let text = toml::to_string(&spec(dir.path()))
            .expect("toml")
            .replace("tls = true\n", "");
        assert!(toml::from_str::<LayoutSpec>(&text).expect("parse").tls);
    }

    #[test]
    fn member_count_is_bounded() {
        let mut s = spec(Path::new("/x"));
        s.members = 0;
        assert!(matches!(s.plan(), Err(LayoutError::MemberCount(0))));
        s.members = 10;
        assert!(matches!(s.plan(), Err(LayoutError::MemberCount(10))));
    }
}
