//! GetCertificates (a read) and InstallCertificates (fenced): see
//! [`crate::certs`]. Every new certificate is checked before any file
//! changes; the agent's own is reloaded at once (`certs_tls`).

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
    let work = move || -> Result<Vec<(certs::Checked, bool)>, InstallError> {
        let env = EtcdCertEnv::read(&paths.env_file).map_err(|reason| InstallError::Unusable {
            cert: "etcd-env".into(),
            path: paths.env_file.display().to_string(),
            reason,
        })?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut checked = Vec::new();
        for new in &request.certificates {
            if checked.iter().any(|c: &certs::Checked| c.target.cert == new.cert) {
                return Err(InstallError::Twice(new.cert.clone()));
            }
            let target = certs::target(&paths, &env, &new.cert)?;
            checked.push(certs::check(
                &target,
                new.cert_pem.as_bytes(),
                new.key_pem.as_bytes(),
                now,
            )?);
        }
        let changed = if check_only {
            vec![false; checked.len()]
        } else {
            certs::write(&checked)?
        };
        Ok(checked.into_iter().zip(changed).collect())
    };
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("installing certificates: {e}")))?
        .map_err(status)?;
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
    Ok(pb::InstallCertificatesResponse {
        installed: done
            .into_iter()
            .map(|(c, changed)| pb::InstalledCertificate {
                cert: c.target.cert,
                cert_path: c.target.cert_path.display().to_string(),
                key_path: c.target.key_path.display().to_string(),
                serial: c.info.serial,
                changed,
            })
            .collect(),
    })
}
