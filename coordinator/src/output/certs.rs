//! `etcdops certs`: the certificates written or found, with their expiry, as text and JSON.

use std::path::Path;

use etcdops_certs::{Identity, Issued};
use serde::Serialize;

use crate::output::table;

/// The report of `certs init`, `certs issue` and `certs list`; also the JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertsReport {
    /// The PKI directory.
    pub dir: String,
    /// Always true: failures are errors, not reports.
    pub ok: bool,
    pub certificates: Vec<CertEntry>,
}

/// One certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertEntry {
    /// `ca`, or the role: `agent`, `coordinator`, `etcd-server`, `etcd-peer`, `etcd-client`;
    /// `unknown` for a certificate without an etcdops role.
    pub role: String,
    /// The certificate's common name.
    pub name: String,
    /// Path of the certificate.
    pub cert: String,
    /// Path of the private key; null when listing (keys are not read).
    pub key: Option<String>,
    /// Expiry date (UTC), `YYYY-MM-DD`.
    pub expires: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Days from now until expiry (negative once expired).
    pub days_left: i64,
    /// True when an existing certificate was replaced (`--force`).
    pub replaced: bool,
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// An entry for a certificate just written.
pub fn issued(issued: &Issued, now_unix: i64) -> CertEntry {
    let not_after_unix = issued.not_after.unix_timestamp();
    CertEntry {
        role: issued.role.map_or_else(|| "ca".to_string(), |r| r.to_string()),
        name: issued.name.clone(),
        cert: path_text(&issued.cert_path),
        key: Some(path_text(&issued.key_path)),
        expires: table::format_date(not_after_unix),
        not_after_unix,
        days_left: table::days_between(now_unix, not_after_unix),
        replaced: issued.replaced,
    }
}

/// An entry for a certificate found by `certs list`. The CA is the one
/// named `ca.crt`; other certificates without a role are `unknown`.
pub fn listed(path: &Path, identity: &Identity, now_unix: i64) -> CertEntry {
    let role = match identity.role {
        Some(role) => role.to_string(),
        None if path.file_name().is_some_and(|n| n == "ca.crt") => "ca".to_string(),
        None => "unknown".to_string(),
    };
    CertEntry {
        role,
        name: identity.name.clone(),
        cert: path_text(path),
        key: None,
        expires: table::format_date(identity.not_after_unix),
        not_after_unix: identity.not_after_unix,
        days_left: table::days_between(now_unix, identity.not_after_unix),
        replaced: false,
    }
}

/// `expires 2027-11-25 (365 days)`, or `EXPIRED 2024-01-01 (3 days ago)`.
pub fn expiry(entry: &CertEntry) -> String {
    match entry.days_left {
        d if d < 0 => format!("EXPIRED {} ({} days ago)", entry.expires, -d),
        1 => format!("expires {} (1 day)", entry.expires),
        d => format!("expires {} ({d} days)", entry.expires),
    }
}

/// Text for certificates just written: the files, then who and when it expires.
pub fn render_written(report: &CertsReport) -> String {
    let mut text = String::new();
    for c in &report.certificates {
        let verb = if c.replaced { "replaced" } else { "wrote" };
        text.push_str(&format!("{verb} {}\n", c.cert));
        if let Some(key) = &c.key {
            text.push_str(&format!("{verb} {key} (mode 0600)\n"));
        }
        text.push_str(&format!("{} {:?}: {}\n", c.role, c.name, expiry(c)));
    }
    text
}

/// The table header of `certs list`.
pub const HEADER: [&str; 4] = ["ROLE", "NAME", "FILE", "EXPIRES"];

/// Text for `certs list`: one row per certificate.
pub fn render_list(report: &CertsReport) -> String {
    let mut t = table::new_table(&HEADER);
    for c in &report.certificates {
        t.add_row(vec![c.role.clone(), c.name.clone(), c.cert.clone(), expiry(c)]);
    }
    table::render(&t)
}

#[cfg(test)]
mod tests {
    use etcdops_certs::Role;

    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn entries_and_expiry() {
        let now = 1_795_564_800; // 2026-11-25
        let agent = Identity {
            role: Some(Role::Agent),
            name: "etcd1".into(),
            not_after_unix: now + 365 * DAY,
        };
        let entry = listed(Path::new("/pki/agent-etcd1.crt"), &agent, now);
        assert_eq!(entry.role, "agent");
        assert_eq!(expiry(&entry), "expires 2027-11-25 (365 days)");
        let ca = Identity {
            role: None,
            name: "fleet".into(),
            not_after_unix: now - 3 * DAY,
        };
        let entry = listed(Path::new("/pki/ca.crt"), &ca, now);
        assert_eq!(entry.role, "ca");
        assert_eq!(expiry(&entry), "EXPIRED 2026-11-22 (3 days ago)");
        assert_eq!(listed(Path::new("/pki/other.crt"), &ca, now).role, "unknown");

        let report = CertsReport {
            dir: "/pki".into(),
            ok: true,
            certificates: vec![entry],
        };
        let text = render_list(&report);
        assert!(
            text.contains("| ca   | fleet | /pki/ca.crt | EXPIRED 2026-11-22 (3 days ago) |"),
            "{text}"
        );
    }
}
