//! `[home]` of the fleet file: the "home" etcd that `etcdops serve` replicas
//! elect their leader on and keep the shared operation journal in, and which
//! journal the `etcdops op` commands read (`journal = "home"`, or the local
//! redb file by default). Never one of the clusters the fleet operates: serve
//! refuses to start when it is (`serve::ha::check_home_is_not_operated`).
//!
//! ```toml
//! [home]
//! endpoints = ["https://10.0.9.1:2379", "https://10.0.9.2:2379", "https://10.0.9.3:2379"]
//! prefix = "/etcdops/"          # every key etcdops writes there starts with it
//! journal = "home"              # `op list|show` read the journal in the home etcd
//! [home.tls]                    # etcd's client TLS (required for https:// endpoints)
//! ca = "pki/home-ca.crt"
//! cert = "pki/home-client.crt"
//! key = "pki/home-client.key"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default key prefix in the home etcd.
pub const DEFAULT_PREFIX: &str = "/etcdops/";

/// `[home]`: the home etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeEtcd {
    /// Its client URLs (`https://` with `[home.tls]`, or `http://`).
    pub endpoints: Vec<String>,
    /// The prefix of every key etcdops keeps there (the journal under
    /// `<prefix>journal/`, the election under `<prefix>election/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Which journal `etcdops op list|show` read: `local` (default: the redb
    /// file, `--journal`) or `home` (the serve replicas' journal in this etcd).
    #[serde(default)]
    pub journal: JournalLocation,
    /// etcd's client TLS: the CA its server certificates are issued by and
    /// a client certificate and key it accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HomeTls>,
}

/// `[home.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeTls {
    /// The CA of the home etcd's server certificates.
    pub ca: PathBuf,
    /// A client certificate the home etcd accepts.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Where `etcdops op` commands read the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalLocation {
    /// The local redb file (`--journal`, `$ETCDOPS_JOURNAL`, the XDG path).
    #[default]
    Local,
    /// The serve replicas' journal in the home etcd.
    Home,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}

/// What is wrong with `[home]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHome {
    #[error("[home] endpoints: at least one client URL of the home etcd is required")]
    NoEndpoints,
    #[error("[home] endpoints: {0:?} is not an http:// or https:// URL with a host and port")]
    BadEndpoint(String),
    #[error("[home] endpoints: {0:?} is https:// but [home.tls] is missing (ca, cert, key)")]
    TlsMissing(String),
    #[error("[home] prefix: {0:?} must start and end with '/' (e.g. \"/etcdops/\")")]
    BadPrefix(String),
}

impl HomeEtcd {
    /// Checks what TOML alone cannot.
    pub fn validate(&self) -> Result<(), InvalidHome> {
        if self.endpoints.is_empty() {
            return Err(InvalidHome::NoEndpoints);
        }
        for e in &self.endpoints {
            let rest = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"))
                .ok_or_else(|| InvalidHome::BadEndpoint(e.clone()))?;
            let hostport = rest.trim_end_matches('/');
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(InvalidHome::BadEndpoint(e.clone())),
            }
            if e.starts_with("https://") && self.tls.is_none() {
                return Err(InvalidHome::TlsMissing(e.clone()));
            }
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            return Err(InvalidHome::BadPrefix(self.prefix.clone()));
        }
        Ok(())
    }

    /// Relative TLS paths against the fleet file's directory.
    pub(super) fn resolve(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            for path in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
                if path.is_relative() && !path.as_os_str().is_empty() {
                    *path = base.join(&*path);
                }
            }
        }
    }

    /// `host:port` of each endpoint, lowercased (to compare with a cluster's URLs).
    pub fn endpoint_hosts(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| host_port(e)).collect()
    }
}

/// `host:port` of an `http(s)://host:port[/...]` URL, lowercased.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(text: &str) -> Result<HomeEtcd, String> {
        let h: HomeEtcd = toml::from_str(text).map_err(|e| e.to_string())?;
        h.validate().map_err(|e| e.to_string())?;
        Ok(h)
    }

    #[test]
    fn parses_defaults_and_refuses_bad_values() {
        let h = home(r#"endpoints = ["http://127.0.0.1:2379"]"#).expect("minimal");
        assert_eq!(
            (h.prefix.as_str(), h.journal, h.tls),
            (DEFAULT_PREFIX, JournalLocation::Local, None)
        );
        let h = home(
            r#"endpoints = ["https://h1:2379/"]
journal = "home"
prefix = "/ops/"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key""#,
        )
        .expect("full");
        assert_eq!(h.journal, JournalLocation::Home);
        assert_eq!(h.endpoint_hosts(), vec!["h1:2379".to_string()]);
        for (text, want) in [
            ("endpoints = []", "at least one"),
            (r#"endpoints = ["h1:2379"]"#, "not an http"),
            (r#"endpoints = ["http://h1"]"#, "not an http"),
            (r#"endpoints = ["https://h1:2379"]"#, "[home.tls] is missing"),
            (
                r#"endpoints = ["http://h1:2379"]
prefix = "etcdops""#,
                "must start and end",
            ),
            (
                r#"endpoints = ["http://h1:2379"]
journal = "remote""#,
                "unknown variant",
            ),
        ] {
            let err = home(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
