//! End-to-end: the agent API accepts only operator/observer certificates of the
//! fleet CA, and answers bad requests with InvalidArgument. A refused
//! certificate is shown to be refused by the TLS handshake itself (the
//! agent's alert), not by a connection that was never made.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_tests::{Caller, Cluster, bins, etcd_metrics};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore};
use tonic::Code;

/// The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC
/// client sends first once TLS is up.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A TLS 1.3 session with the agent at `addr` trusting the fleet CA at
/// `ca`, presenting `identity` (cert, key) or no certificate: the handshake,
/// the HTTP/2 preface, and the first bytes the agent answers. Under TLS 1.3
/// the server judges the client's certificate after the client's side of the
/// handshake is done, so a refusal arrives as an alert on the first read.
/// `Ok(n)`: the agent answered `n` bytes of HTTP/2; `Err`: what rustls saw.
fn tls_session(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<usize, rustls::Error> {
    etcdops_certs::install_crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("the fleet CA"))
        .expect("CA accepted");
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("client cert")],
                PrivateKeyDer::from_pem_file(key).expect("client key"),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the agent at {addr} is not reachable over TCP: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    // rustls reports protocol errors (alerts) inside an io::Error.
    let io = |e: std::io::Error| -> rustls::Error {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| rustls::Error::General(format!("i/o: {e}")))
    };
    tls.write_all(H2_PREFACE).map_err(io)?;
    tls.flush().map_err(io)?;
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).map_err(io)?;
    Ok(n)
}

/// The gRPC error and every source under it, one line.
fn chain(err: &tonic::Status) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!(" / {s}"));
        source = s.source();
    }
    text
}

#[test]
fn only_coordinator_certificates_of_the_fleet_ca_are_served() {
    let cluster = Cluster::builder().members(1).start(bins!());

    let ok = cluster
        .get_status(0, &Caller::Coordinator, 0)
        .expect("the coordinator is served");
    assert_eq!(ok.agent.expect("agent info").name, "etcd1");

    // The agent is up and reachable: a session with the coordinator's
    // certificate gets through TLS and the agent answers HTTP/2.
    let m = cluster.member(0);
    let addr: SocketAddr = m
        .agent_url
        .trim_start_matches("https://")
        .parse()
        .expect("agent address");
    let pki = Pki::open(&cluster.layout.pki_dir).expect("fleet pki");
    let ca = pki.ca_cert_path();
    let (cert, key) = pki.paths(Role::Coordinator, "sandbox-operator");
    let answered =
        tls_session(addr, &ca, Some((&cert, &key))).expect("the coordinator's TLS session is accepted");
    assert!(answered > 0, "the agent answers the HTTP/2 preface");

    // No client certificate: the agent's handshake demands one.
    let refused = tls_session(addr, &ca, None).expect_err("no certificate must be refused");
    assert_eq!(
        refused,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        "the TLS handshake refuses a client without a certificate"
    );
    // A coordinator certificate of another CA: unknown to the agent.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_pki, _) = Pki::init(other.path(), "intruder-ca", 1, false).expect("another CA");
    let intruder = other_pki
        .issue(&IssueRequest::new(Role::Coordinator, "intruder"))
        .expect("intruder certificate");
    let refused = tls_session(addr, &ca, Some((&intruder.cert_path, &intruder.key_path)))
        .expect_err("another CA must be refused");
    assert_eq!(
        refused,
        rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        "the TLS handshake refuses a certificate of another CA"
    );

    // Through gRPC the same refusals are transport errors on the first
    // call, never a connection refused (the agent is listening).
    for (caller, what) in [
        (Caller::NoCertificate, "no certificate"),
        (Caller::OtherCa, "another CA"),
    ] {
        let err = cluster.get_status(0, &caller, 0).expect_err("refused");
        let text = chain(&err);
        assert!(text.contains("transport error"), "{what}: {text}");
        assert!(!text.to_lowercase().contains("refused"), "{what}: {text}");
    }

    let err = cluster
        .health(0, &Caller::Agent(0), 0)
        .expect_err("an agent certificate must be refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("needs the observer role") && err.message().contains("role agent"),
        "the refusal says why: {}",
        err.message()
    );
}

#[test]
fn malformed_requests_get_invalid_argument_naming_the_field() {
    let cluster = Cluster::builder().members(1).start(bins!());
    for result in [
        cluster.get_status(0, &Caller::Coordinator, 3_600_000).map(|_| ()),
        cluster.health(0, &Caller::Coordinator, 60_001).map(|_| ()),
    ] {
        let err = result.expect_err("an out-of-range timeout must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    }
    // The agent still serves after bad requests.
    assert!(
        cluster
            .health(0, &Caller::Coordinator, 0)
            .expect("health")
            .healthy
    );
}

#[test]
fn stop_and_start_etcd_through_the_agent() {
    use etcdops_proto::v1::{UnitRequest, UnitState, UnitStatusRequest};
    let cluster = Cluster::builder().members(3).start(bins!());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = cluster.client(2, &Caller::Coordinator);
    let fence = cluster.acquire_fence("e2e-stop");
    let request = UnitRequest {
        boot: false,
        fence: Some(fence.clone()),
        operation_id: "e2e-stop".into(),
        timeout_ms: 0,
    };

    let stopped = rt
        .block_on(client.stop_etcd(request.clone()))
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state(), UnitState::Inactive, "{stopped:?}");
    let health = cluster
        .health(2, &Caller::Coordinator, 1000)
        .expect("health answers");
    assert!(!health.healthy, "a stopped member is not healthy");

    let started = rt
        .block_on(client.start_etcd(request.clone()))
        .expect("start")
        .into_inner();
    assert_eq!(started.state(), UnitState::Active, "{started:?}");
    cluster.wait_until(
        "the restarted member to be healthy",
        std::time::Duration::from_secs(30),
        |c| c.is_healthy(),
    );
    let unit = rt
        .block_on(client.get_unit_status(UnitStatusRequest {}))
        .expect("unit")
        .into_inner();
    assert_eq!(unit.state(), UnitState::Active);

    // Bad input: named field, nothing done.
    let err = rt
        .block_on(client.restart_etcd(UnitRequest {
            boot: false,
            fence: Some(fence.clone()),
            operation_id: String::new(),
            timeout_ms: 700_000,
        }))
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    // An agent certificate may not stop etcd.
    let mut intruder = cluster.client(2, &Caller::Agent(0));
    let err = rt.block_on(intruder.stop_etcd(request)).expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(cluster.is_healthy(), "nothing was stopped");
}

#[test]
fn env_file_changes_take_effect_and_data_dirs_are_only_moved_aside() {
    use etcdops_proto::v1::{EnvVar, MoveDataDirAsideRequest, SetEtcdEnvRequest, UnitRequest};
    let cluster = Cluster::builder().members(3).start(bins!());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = cluster.client(2, &Caller::Coordinator);
    let m = cluster.member(2).clone();
    let fence = Some(cluster.acquire_fence("e2e-env"));
    let unit = |op: &str| UnitRequest {
        boot: false,
        fence: fence.clone(),
        operation_id: op.into(),
        timeout_ms: 0,
    };

    // Bad input is refused with the field named, and the file is untouched.
    let original = std::fs::read_to_string(&m.env_file).expect("env file");
    for (key, value) in [("PATH", "/tmp"), ("ETCD_ADVERTISE_CLIENT_URLS", "not a url")] {
        let err = rt
            .block_on(client.set_etcd_env(SetEtcdEnvRequest {
                fence: fence.clone(),
                operation_id: "e2e-bad".into(),
                set: vec![EnvVar {
                    key: key.into(),
                    value: value.into(),
                }],
                unset: vec![],
            }))
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(key), "{}", err.message());
    }
    assert_eq!(std::fs::read_to_string(&m.env_file).expect("env file"), original);

    // A change plus a restart takes effect: etcd reports the new quota.
    let set = rt
        .block_on(client.set_etcd_env(SetEtcdEnvRequest {
            fence: fence.clone(),
            operation_id: "e2e-quota".into(),
            set: vec![EnvVar {
                key: "ETCD_QUOTA_BACKEND_BYTES".into(),
                value: "1073741824".into(),
            }],
            unset: vec![],
        }))
        .expect("set")
        .into_inner();
    assert!(set.changed);
    assert_eq!(
        std::fs::read_to_string(&set.previous_path).expect("previous kept"),
        original
    );
    let text = std::fs::read_to_string(&m.env_file).expect("env file");
    assert!(
        text.starts_with(original.lines().next().expect("first line")),
        "comments kept"
    );
    rt.block_on(client.restart_etcd(unit("e2e-restart")))
        .expect("restart");
    cluster.wait_until(
        "the restarted member to be healthy",
        std::time::Duration::from_secs(30),
        |c| c.is_healthy(),
    );
    let metrics = etcd_metrics(&m.client_url, cluster.layout.etcd_client.as_ref());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("etcd_server_quota_backend_bytes ") && l.contains("1.073741824e+09")),
        "the new quota is in force"
    );

    // The data dir moves aside only while etcd is stopped, and is never deleted.
    let err = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "test".into(),
        }))
        .expect_err("refused while running");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(m.data_dir.join("member/wal").is_dir(), "nothing moved");
    rt.block_on(client.stop_etcd(unit("e2e-stop"))).expect("stop");
    let err = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "Bad Reason".into(),
        }))
        .expect_err("bad reason");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("reason:"), "{}", err.message());
    let moved = rt
        .block_on(client.move_data_dir_aside(MoveDataDirAsideRequest {
            fence: fence.clone(),
            operation_id: "e2e".into(),
            reason: "test".into(),
        }))
        .expect("moved")
        .into_inner();
    let kept = std::path::Path::new(&moved.moved_to);
    assert!(
        kept.join("member/wal").is_dir(),
        "the old data is kept at {}",
        kept.display()
    );
    assert!(!m.data_dir.exists(), "the data dir itself was renamed");
    assert_eq!(moved.kept_copies, vec![moved.moved_to.clone()]);
}

#[test]
fn hash_kv_agrees_across_members_and_refuses_bad_revisions() {
    use etcdops_proto::v1::HashKvRequest;
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    cluster.put_bulk("h/", 50, 100);
    let hash = |i: usize, revision: i64| {
        cluster.block_on(cluster.client(i, &Caller::Coordinator).hash_kv(HashKvRequest {
            revision,
            timeout_ms: 0,
        }))
    };
    let newest = hash(0, 0).expect("hashkv").into_inner();
    assert!(newest.revision > 50 && newest.member_id != 0, "{newest:?}");
    let at = newest.revision;
    cluster.wait_until(
        "every member applied the revision",
        std::time::Duration::from_secs(10),
        |_| (0..3).all(|i| hash(i, at).is_ok()),
    );
    let hashes: Vec<u32> = (0..3)
        .map(|i| hash(i, at).expect("hashkv").into_inner().hash)
        .collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "the same history hashes the same: {hashes:?}"
    );

    let err = hash(0, -1).expect_err("negative revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("revision:"), "{}", err.message());
    let err = hash(0, at + 1_000_000).expect_err("future revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("above the cluster's current revision"),
        "{}",
        err.message()
    );
}
