//! The agent's own TLS listener with a certificate it reloads without a
//! restart (issue 17): a rustls `ResolvesServerCert` holding the current
//! certificate and key, swapped by [`ServerCert::reload`] (InstallCertificates
//! calls it after replacing the agent's files). Client certificates are
//! mandatory and must chain to the fleet CA (`[tls] ca`), as before; the
//! role is checked per RPC (`rpc/auth.rs`). [`incoming`] turns the TCP
//! listener into TLS streams for tonic (handshakes concurrent, each bounded).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use etcdops_certs::inspect::CertInfo;
use etcdops_certs::{Identity, TlsFiles};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's serving certificate, replaceable while the agent runs.
#[derive(Debug)]
pub struct ServerCert {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, CertInfo)>,
}

fn load(files: &TlsFiles) -> anyhow::Result<(Arc<CertifiedKey>, CertInfo)> {
    etcdops_certs::pki::check_key_permissions(&files.key)?;
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", files.cert.display()))?;
    let first = chain
        .first()
        .with_context(|| format!("{} holds no PEM certificate", files.cert.display()))?;
    let info = CertInfo::from_der(first)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading {}", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("{}: unusable private key", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} does not match {}", files.key.display(), files.cert.display()))?;
    Ok((Arc::new(certified), info))
}

impl ServerCert {
    /// Reads the certificate and key named by `files`.
    pub fn load(files: TlsFiles) -> anyhow::Result<ServerCert> {
        let current = load(&files)?;
        Ok(ServerCert {
            files,
            current: RwLock::new(current),
        })
    }

    /// Reads the files again; new handshakes present the new certificate.
    /// On error the current one stays.
    pub fn reload(&self) -> anyhow::Result<CertInfo> {
        let (key, info) = load(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = (key, info.clone());
        }
        tracing::info!(serial = %info.serial, path = %self.files.cert.display(), "agent certificate reloaded");
        Ok(info)
    }

    /// What is served now.
    pub fn info(&self) -> Option<CertInfo> {
        self.current.read().ok().map(|c| c.1.clone())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// The agent's server configuration: mutual TLS against the fleet CA,
/// HTTP/2, the certificate from a [`ServerCert`].
pub fn server_config(
    files: &TlsFiles,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Identity, Arc<ServerCert>)> {
    // The same checks and errors as before (missing files, key mode, PEM).
    let (_, identity) = files.server_config()?;
    let cert = Arc::new(ServerCert::load(files.clone())?);
    let mut roots = rustls::RootCertStore::empty();
    for ca in
        CertificateDer::pem_file_iter(&files.ca).with_context(|| format!("reading {}", files.ca.display()))?
    {
        roots
            .add(ca.with_context(|| format!("reading {}", files.ca.display()))?)
            .with_context(|| format!("{}: unusable CA certificate", files.ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), identity, cert))
}

/// TLS streams accepted on `listener`, for `Server::serve_with_incoming_shutdown`.
/// Handshakes run concurrently, each within [`HANDSHAKE_TIMEOUT`]; a failed
/// one is logged and dropped. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
