//! GetCertificates (a read) and InstallCertificates (fenced): see
//! [`crate::certs`]. Every new certificate is checked before any file
//! changes; the agent's own is reloaded at once (`certs_tls`). A trust
//! bundle (`etcd-trusted-ca`, `certs rotate-ca`) is checked against the
//! member's certificates as they are after the request, and leaves in the
//! same request are checked against it; after a bundle or the agent's etcd
//! client certificate changed, the agent's etcd client reconnects with the
//! files (and the bundle as its trust anchor).

use std::time::Duration;

use etcdops_proto::v1 as pb;
use tonic::Status;

use crate::certs::{self, EtcdCertEnv, InstallError, Seen};
use crate::state::AgentState;

fn seen_to_pb(s: Seen) -> pb::CertificateInfo {
    let mut out = pb::CertificateInfo {
        cert: s.cert,
        source: s.source.to_string(),
        location: s.location,
        ..Default::default()
    };
    match s.info {
        Ok(i) => {
            out.serial = i.serial;
            out.subject = i.subject;
            out.issuer = i.issuer;
            out.not_before_unix = i.not_before_unix;
            out.not_after_unix = i.not_after_unix;
            out.hosts = i.hosts;
        }
        Err(e) => out.error = e,
    }
    out
}

pub async fn get_certificates(state: &AgentState, timeout: Duration) -> pb::GetCertificatesResponse {
    let seen = certs::all(&state.cert_paths, timeout).await;
    pb::GetCertificatesResponse {
        agent: state.identity.name.clone(),
        certificates: seen.into_iter().map(seen_to_pb).collect(),
    }
}

fn status(e: InstallError) -> Status {
    if e.is_input() {
        Status::invalid_argument(e.to_string())
    } else if matches!(e, InstallError::Write { .. }) {
        Status::internal(e.to_string())
    } else {
        Status::failed_precondition(e.to_string())
    }
}

/// What an install checked (and wrote): each leaf and the trust bundle,
/// with whether its files changed.
type Installed = (Vec<(certs::Checked, bool)>, Option<(certs::TrustChecked, bool)>);

pub async fn install(
    state: &AgentState,
    request: pb::InstallCertificatesRequest,
) -> Result<pb::InstallCertificatesResponse, Status> {
    if request.certificates.is_empty() {
        return Err(Status::invalid_argument(
            "certificates: nothing to install; name at least one",
        ));
    }
    let paths = state.cert_paths.clone();
    let check_only = request.check_only;
    let operation = request
        .fence
        .as_ref()
        .map(|f| f.operation_id.clone())
        .unwrap_or_default();
    let work = move || -> Result<Installed, InstallError> {
        let env = EtcdCertEnv::read(&paths.env_file).map_err(|reason| InstallError::Unusable {
            cert: "etcd-env".into(),
            path: paths.env_file.display().to_string(),
            reason,
        })?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut seen: Vec<&str> = Vec::new();
        for new in &request.certificates {
            if seen.contains(&new.cert.as_str()) {
                return Err(InstallError::Twice(new.cert.clone()));
            }
            seen.push(&new.cert);
        }
        let trust_pem = request
            .certificates
            .iter()
            .find(|c| c.cert == certs::TRUST_KIND)
            .map(|c| c.cert_pem.as_bytes().to_vec());
        let leaves: Vec<&pb::NewCertificate> = request
            .certificates
            .iter()
            .filter(|c| c.cert != certs::TRUST_KIND)
            .collect();
        let mut checked = Vec::new();
        for new in &leaves {
            let target = certs::target(&paths, &env, &new.cert)?;
            checked.push(certs::check(
                &target,
                new.cert_pem.as_bytes(),
                new.key_pem.as_bytes(),
                trust_pem.as_deref(),
                now,
            )?);
        }
        let trust = match &trust_pem {
            Some(pem) => {
                let new: Vec<(String, Vec<u8>)> = leaves
                    .iter()
                    .map(|c| (c.cert.clone(), c.cert_pem.as_bytes().to_vec()))
                    .collect();
                let after = certs::leaves_after(&paths, &env, &new)?;
                Some(certs::check_trust(&env, &paths.env_file, pem, &after, now)?)
            }
            None => None,
        };
        if check_only {
            let n = checked.len();
            return Ok((
                checked.into_iter().zip(vec![false; n]).collect(),
                trust.map(|t| (t, false)),
            ));
        }
        // The bundle first: new leaves from a new CA are only trusted by
        // etcd's peers once they trust it.
        let trust = match trust {
            Some(t) => {
                let changed = certs::write_trust(&t, &paths.env_file)?;
                Some((t, changed))
            }
            None => None,
        };
        let changed = certs::write(&checked)?;
        Ok((checked.into_iter().zip(changed).collect(), trust))
    };
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("installing certificates: {e}")))?
        .map_err(status)?;
    let (done, trust) = done;
    let client_changed = trust.as_ref().is_some_and(|(_, changed)| *changed)
        || done
            .iter()
            .any(|(c, changed)| *changed && c.target.cert == "etcd-client");
    if client_changed && let Some(tls) = &state.cert_paths.etcd_client {
        let tls = certs::etcd_client_tls(tls, &state.cert_paths.env_file);
        state.disk.metrics().reload(Some(&tls));
        if let Err(e) = state.etcd.reload_tls(Some(&tls)).await {
            return Err(Status::internal(format!(
                "the new files are in place but the agent's etcd client could not load them ({e}); \
                 it keeps its previous identity and trust until the agent restarts"
            )));
        }
    }
    if done
        .iter()
        .any(|(c, changed)| *changed && c.target.cert == "agent")
        && let Some(server) = &state.server_cert
    {
        server.reload().map_err(|e| {
            Status::internal(format!(
                "the agent's new certificate is in place but could not be loaded ({e:#}); \
                 the agent keeps serving the previous one until it restarts"
            ))
        })?;
    }
    tracing::info!(
        operation = %operation,
        certs = ?done.iter().map(|(c, changed)| format!("{}:{}:{changed}", c.target.cert, c.info.serial)).collect::<Vec<_>>(),
        "certificates installed"
    );
    let trust = trust.map(|(t, changed)| pb::InstalledCertificate {
        cert: certs::TRUST_KIND.into(),
        cert_path: t.path.display().to_string(),
        key_path: String::new(),
        serial: t.serials(),
        changed,
    });
    Ok(pb::InstallCertificatesResponse {
        installed: trust
            .into_iter()
            .chain(done.into_iter().map(|(c, changed)| pb::InstalledCertificate {
                cert: c.target.cert,
                cert_path: c.target.cert_path.display().to_string(),
                key_path: c.target.key_path.display().to_string(),
                serial: c.info.serial,
                changed,
            }))
            .collect(),
    })
}
