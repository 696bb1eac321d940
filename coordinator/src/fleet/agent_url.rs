//! Agent endpoints in the fleet file: `https://host:port`, checked once when read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An agent endpoint: `https://host:port`, where host is an IPv4 address,
/// a bracketed IPv6 address or a DNS name. No path, query or user info.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentUrl {
    host: String,
    port: u16,
    ipv6: bool,
}

/// Why an agent URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent URL {url:?}: {reason} (expected https://HOST:PORT, e.g. https://198.18.0.11:7443)")]
pub struct AgentUrlError {
    pub url: String,
    pub reason: &'static str,
}

impl AgentUrl {
    /// Parses and checks `https://host:port`.
    pub fn parse(url: &str) -> Result<AgentUrl, AgentUrlError> {
        let err = |reason| AgentUrlError {
            url: url.to_string(),
            reason,
        };
        let rest = match url.split_once("://") {
            Some(("https", rest)) => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
                return Err(err("agents only speak TLS: use https://"));
            }
            Some(_) => return Err(err("the scheme must be https://")),
            None => return Err(err("missing https://")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(err("no path, query or fragment allowed"));
        }
        if authority.contains('@') {
            return Err(err("no user info allowed"));
        }
        let (host, port, ipv6) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, tail) = bracketed
                .split_once(']')
                .ok_or_else(|| err("unclosed [ in the IPv6 address"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("not an IPv6 address between [ and ]"));
            }
            let port = tail.strip_prefix(':').ok_or_else(|| err("missing :PORT"))?;
            (host, port, true)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?;
            if host.contains(':') {
                return Err(err(
                    "put an IPv6 address in brackets, e.g. https://[2001:db8::1]:7443",
                ));
            }
            if !valid_host(host) {
                return Err(err("the host is neither an IP address nor a DNS name"));
            }
            (host, port, false)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the port must be a number"));
        }
        let port: u16 = port.parse().map_err(|_| err("the port must be 1-65535"))?;
        if port == 0 {
            return Err(err("the port must be 1-65535"));
        }
        Ok(AgentUrl {
            host: host.to_ascii_lowercase(),
            port,
            ipv6,
        })
    }

    /// The host, without brackets: what the agent's certificate must name.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for AgentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ipv6 {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

impl TryFrom<String> for AgentUrl {
    type Error = AgentUrlError;

    fn try_from(s: String) -> Result<AgentUrl, AgentUrlError> {
        AgentUrl::parse(&s)
    }
}

impl From<AgentUrl> for String {
    fn from(url: AgentUrl) -> String {
        url.to_string()
    }
}

impl std::str::FromStr for AgentUrl {
    type Err = AgentUrlError;

    fn from_str(s: &str) -> Result<AgentUrl, AgentUrlError> {
        AgentUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_ports() {
        let cases = [
            (
                "https://198.18.0.11:7443",
                "198.18.0.11",
                7443,
                "https://198.18.0.11:7443",
            ),
            (
                "https://Etcd1.Example.com:7443/",
                "etcd1.example.com",
                7443,
                "https://etcd1.example.com:7443",
            ),
            (
                "https://[2001:db8::1]:7443",
                "2001:db8::1",
                7443,
                "https://[2001:db8::1]:7443",
            ),
            ("https://localhost:1", "localhost", 1, "https://localhost:1"),
        ];
        for (input, host, port, shown) in cases {
            let url = AgentUrl::parse(input).expect(input);
            assert_eq!(
                (url.host(), url.port(), url.to_string().as_str()),
                (host, port, shown),
                "{input}"
            );
            assert_eq!(input.parse::<AgentUrl>(), Ok(url.clone()));
            assert_eq!(AgentUrl::parse(&String::from(url.clone())), Ok(url));
        }
    }

    #[test]
    fn refuses_what_is_not_https_host_port() {
        for input in [
            "",
            "https://",
            "https://:7443",
            "http://h:1",
            "ftp://h:1",
            "h:1",
            "https://h",
            "https://h:x",
            "https://h:0",
            "https://h:65536",
            "https://h:1/path",
            "https://h:1?q",
            "https://u@h:1",
            "https://::1:7443",
            "https://[::1:7443",
            "https://[zz]:7443",
            "https://[::1]7443",
            "https://-h:1",
            "https://h..x:1",
        ] {
            let err = AgentUrl::parse(input).expect_err(input);
            assert!(err.to_string().contains("expected https://HOST:PORT"), "{err}");
        }
    }
}
