//! Authorisation: every RPC must come from a certificate of the fleet CA
//! (checked by the TLS layer) that carries the `coordinator` role.

use etcdops_certs::{Identity, Role};
use tonic::{Request, Status};

/// The authenticated caller, stored in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// The interceptor run before every RPC.
#[allow(clippy::result_large_err)]
pub fn authorize(mut request: Request<()>) -> Result<Request<()>, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: call the agent with a coordinator certificate of the fleet CA",
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let identity = Identity::from_der(leaf)
        .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
    if identity.role != Some(Role::Coordinator) {
        tracing::warn!(caller = %identity.describe(), "refused a caller without the coordinator role");
        return Err(Status::permission_denied(format!(
            "certificate {} may not call the agent API: only certificates with the coordinator role may \
             (issue one with `etcdops certs issue coordinator --name NAME`)",
            identity.describe()
        )));
    }
    request.extensions_mut().insert(Caller(identity));
    Ok(request)
}
