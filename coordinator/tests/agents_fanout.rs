//! The coordinator against stand-in agents over real mutual TLS: the happy path and every way an agent can fail.
//!
//! The stand-in implements the agent API with canned answers (real etcd is
//! the end-to-end suite's job); TLS, certificates, roles, timeouts and the
//! CLI are all real.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcdops_certs::{Identity, IssueRequest, Pki, Role, TlsFiles};
use etcdops_coordinator::ExitStatus;
use etcdops_coordinator::agents::{AgentErrorKind, Agents};
use etcdops_coordinator::cli::run_with_io;
use etcdops_coordinator::fleet::{Cluster, Fleet, FleetTls, Member};
use etcdops_proto::v1 as pb;
use etcdops_proto::v1::agent_server::{Agent, AgentServer};
use tokio::io::AsyncWriteExt;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const CLUSTER_ID: u64 = 0x1c8b_5d5c_3e9a_4f21;

/// How a stand-in agent answers.
#[derive(Clone)]
enum Behaviour {
    /// A healthy member with this ID; `leader` says whether it leads.
    Member { id: u64, leader: bool },
    /// Sleeps this long before answering.
    Slow(Duration),
}

struct StandIn {
    name: String,
    behaviour: Behaviour,
    members: Vec<pb::Member>,
}

impl StandIn {
    /// Only coordinators may call, as the real agent enforces.
    fn authorise<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let first = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let identity = Identity::from_der(first).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if identity.role != Some(Role::Coordinator) {
            return Err(Status::permission_denied(format!(
                "{} may not call agents",
                identity.describe()
            )));
        }
        Ok(())
    }

    async fn behave(&self) -> (u64, bool) {
        match &self.behaviour {
            Behaviour::Member { id, leader } => (*id, *leader),
            Behaviour::Slow(d) => {
                tokio::time::sleep(*d).await;
                (0, false)
            }
        }
    }
}

#[tonic::async_trait]
impl Agent for StandIn {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        self.authorise(&request)?;
        let (id, leader) = self.behave().await;
        Ok(Response::new(pb::GetStatusResponse {
            agent: Some(pb::AgentInfo {
                name: self.name.clone(),
                version: "0.1.0".into(),
                cert_not_after_unix: 0,
            }),
            member: Some(pb::MemberStatus {
                reachable: true,
                endpoint: "https://127.0.0.1:2379".into(),
                member_id: id,
                member_name: self.name.clone(),
                cluster_id: CLUSTER_ID,
                leader_id: 1,
                is_leader: leader,
                raft_term: 2,
                raft_index: 1_000,
                raft_applied_index: 1_000,
                revision: 77,
                db_size: 20_480,
                db_size_in_use: 16_384,
                etcd_version: "3.5.16".into(),
                members: self.members.clone(),
                ..Default::default()
            }),
            unit: Some(pb::UnitStatus {
                backend: "process".into(),
                unit: "etcd".into(),
                state: pb::UnitState::Active.into(),
                main_pid: 42,
                detail: String::new(),
            }),
            data_dir: None,
        }))
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.authorise(&request)?;
        let (id, _) = self.behave().await;
        Ok(Response::new(pb::HealthResponse {
            healthy: true,
            latency_us: 1_234,
            error: String::new(),
            member_id: id,
            revision: 77,
        }))
    }
}

/// A fleet CA with agent certificates for 127.0.0.1 and a coordinator certificate.
struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
}

impl Fixture {
    fn new() -> Fixture {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(&dir.path().join("pki"), "test-ca", 30, false).expect("CA");
        Fixture { dir, pki }
    }

    fn issue(&self, role: Role, name: &str) -> TlsFiles {
        let mut request = IssueRequest::new(role, name);
        if role.is_server() {
            request = request.host("127.0.0.1");
        }
        let issued = self.pki.issue(&request).expect("issue");
        TlsFiles {
            ca: self.pki.ca_cert_path(),
            cert: issued.cert_path,
            key: issued.key_path,
        }
    }

    /// Starts a stand-in agent serving with a certificate of this fixture's CA.
    async fn agent(&self, name: &str, behaviour: Behaviour, members: Vec<pb::Member>) -> SocketAddr {
        let files = self.issue(Role::Agent, name);
        serve(
            &files,
            StandIn {
                name: name.to_string(),
                behaviour,
                members,
            },
        )
        .await
    }

    fn write_fleet(&self, tls: &TlsFiles, members: &[(&str, SocketAddr)]) -> PathBuf {
        let fleet = Fleet::new(
            FleetTls {
                ca: tls.ca.clone(),
                cert: tls.cert.clone(),
                key: tls.key.clone(),
            },
            vec![Cluster {
                name: "test".into(),
                members: members
                    .iter()
                    .map(|(name, addr)| Member::new(name, &format!("https://{addr}")).expect("member"))
                    .collect(),
            }],
        )
        .expect("fleet");
        let path = self.dir.path().join("fleet.toml");
        fleet.save(&path).expect("save fleet");
        path
    }
}

async fn serve(files: &TlsFiles, agent: StandIn) -> SocketAddr {
    let (config, _) = files.server_config().expect("server TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Server::builder()
        .tls_config(config)
        .expect("tls")
        .add_service(AgentServer::new(agent));
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

fn pb_member(id: u64, name: &str) -> pb::Member {
    pb::Member {
        id,
        name: name.into(),
        peer_urls: vec![format!("https://127.0.0.1:{}", 2380 + id)],
        client_urls: vec![format!("https://127.0.0.1:{}", 2379 + id)],
        is_learner: false,
    }
}

fn membership() -> Vec<pb::Member> {
    vec![
        pb_member(1, "etcd1"),
        pb_member(2, "etcd2"),
        pb_member(3, "etcd3"),
    ]
}

fn etcdops(fleet: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let fleet = fleet.to_str().expect("utf-8 path");
    let mut argv = vec!["etcdops", "--fleet", fleet];
    argv.extend_from_slice(args);
    let status = run_with_io(argv, &mut out, &mut err);
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_cluster_reads_healthy() {
    let fx = Fixture::new();
    let mut members = Vec::new();
    for (i, name) in ["etcd1", "etcd2", "etcd3"].into_iter().enumerate() {
        let id = i as u64 + 1;
        members.push((
            name,
            fx.agent(name, Behaviour::Member { id, leader: id == 2 }, membership())
                .await,
        ));
    }
    let fleet = fx.write_fleet(&fx.issue(Role::Coordinator, "ops"), &members);

    let (status, out, err) = etcdops(&fleet, &["status"]);
    assert_eq!(status, ExitStatus::Ok, "{out}{err}");
    assert!(
        out.contains(
            "cluster test: cluster ID 1c8b5d5c3e9a4f21, leader etcd2 (0000000000000002), 3/3 members healthy"
        ),
        "{out}"
    );
    assert!(out.contains("| 20 kB "), "{out}");

    let (status, out, err) = etcdops(&fleet, &["status", "-w", "json"]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["cluster"], "test");
    assert_eq!(report["members"][1]["etcd"]["member_id"], "0000000000000002");
    assert_eq!(report["members"][1]["unit"]["state"], "active");

    let (status, out, err) = etcdops(&fleet, &["health", "-w", "json"]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    let report = json(&out);
    assert_eq!(report["healthy"], 3);
    assert_eq!(report["members"][0]["took_us"], 1_234);

    let (status, out, err) = etcdops(&fleet, &["member", "list"]);
    assert_eq!(status, ExitStatus::Ok, "{out}{err}");
    assert!(out.contains("as reported by etcd2"), "{out}");
    assert!(
        out.contains(&format!("https://{}", members[0].1)),
        "the fleet's agent is shown: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_agent_is_reported_and_the_rest_still_answer() {
    let fx = Fixture::new();
    let etcd1 = fx
        .agent("etcd1", Behaviour::Member { id: 1, leader: true }, membership())
        .await;
    let etcd2 = fx
        .agent("etcd2", Behaviour::Member { id: 2, leader: false }, membership())
        .await;
    let etcd3 = closed_port().await;
    let fleet = fx.write_fleet(
        &fx.issue(Role::Coordinator, "ops"),
        &[("etcd1", etcd1), ("etcd2", etcd2), ("etcd3", etcd3)],
    );

    let (status, out, _) = etcdops(&fleet, &["status", "-w", "json"]);
    assert_eq!(status, ExitStatus::Failed);
    let report = json(&out);
    assert_eq!(report["ok"], false);
    assert_eq!(report["healthy"], 2);
    assert_eq!(report["members"][0]["error"], serde_json::Value::Null);
    let error = report["members"][2]["error"]
        .as_str()
        .expect("an error for etcd3");
    assert!(
        error.starts_with(&format!(
            "agent etcd3 at https://{etcd3} unreachable: connection refused"
        )),
        "{error}"
    );
    assert!(error.contains("is etcdops-agent running"), "{error}");

    let (status, out, _) = etcdops(&fleet, &["health"]);
    assert_eq!(status, ExitStatus::Failed);
    assert!(out.contains("2/3 members healthy"), "{out}");

    let (status, out, _) = etcdops(&fleet, &["member", "list"]);
    assert_eq!(status, ExitStatus::Failed);
    assert!(out.contains("problem: agent etcd3"), "{out}");
}

/// Queries one agent through the library and returns the error kind.
async fn error_kind(tls: &TlsFiles, addr: SocketAddr, timeout: Duration) -> AgentErrorKind {
    let agents = Agents::new(tls.client().expect("client TLS"), timeout);
    let member = Member::new("etcd1", &format!("https://{addr}")).expect("member");
    let mut replies = agents.get_status(&[member]).await;
    let reply = replies.pop().expect("one reply");
    match reply.result {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert!(
                e.to_string()
                    .starts_with(&format!("agent etcd1 at https://{addr} ")),
                "{e}"
            );
            e.kind
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_refused() {
    let fx = Fixture::new();
    let addr = fx
        .agent("etcd1", Behaviour::Member { id: 1, leader: true }, membership())
        .await;
    let other = Fixture::new();
    let mut tls = other.issue(Role::Coordinator, "ops");
    tls.ca = fx.pki.ca_cert_path(); // we trust the agent; it does not trust us
    // Under TLS 1.3 the refusal races with the first request: we either read
    // the agent's alert or only see the connection close. Both must point at
    // our certificate.
    for _ in 0..5 {
        let kind = error_kind(&tls, addr, Duration::from_secs(5)).await;
        assert!(
            matches!(
                kind,
                AgentErrorKind::ClientCertificateRefused { .. } | AgentErrorKind::ConnectionClosed { .. }
            ),
            "{kind:?}"
        );
        assert!(
            kind.to_string()
                .contains("a coordinator certificate from the same fleet CA"),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_certificate_from_another_ca_is_not_trusted() {
    let fx = Fixture::new();
    let addr = fx
        .agent("etcd1", Behaviour::Member { id: 1, leader: true }, membership())
        .await;
    let other = Fixture::new();
    let tls = other.issue(Role::Coordinator, "ops");
    let kind = error_kind(&tls, addr, Duration::from_secs(5)).await;
    assert!(
        matches!(kind, AgentErrorKind::AgentCertificate { .. }),
        "{kind:?}"
    );
    assert!(kind.to_string().contains("--host 127.0.0.1"), "{kind}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_without_the_coordinator_role_is_denied() {
    let fx = Fixture::new();
    let addr = fx
        .agent("etcd1", Behaviour::Member { id: 1, leader: true }, membership())
        .await;
    let tls = fx.issue(Role::EtcdClient, "ops");
    let kind = error_kind(&tls, addr, Duration::from_secs(5)).await;
    assert!(
        matches!(kind, AgentErrorKind::PermissionDenied { .. }),
        "{kind:?}"
    );
    assert!(
        kind.to_string()
            .contains("etcd-client \"ops\" may not call agents"),
        "{kind}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_agent_times_out() {
    let fx = Fixture::new();
    let addr = fx
        .agent("etcd1", Behaviour::Slow(Duration::from_secs(30)), membership())
        .await;
    let tls = fx.issue(Role::Coordinator, "ops");
    let start = Instant::now();
    let kind = error_kind(&tls, addr, Duration::from_millis(700)).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        kind,
        AgentErrorKind::CallTimeout {
            after: Duration::from_millis(700)
        }
    );
    assert!(kind.to_string().contains("within 700ms"), "{kind}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_listener_times_out_on_connect() {
    let fx = Fixture::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and never says a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let tls = fx.issue(Role::Coordinator, "ops");
    let start = Instant::now();
    let kind = error_kind(&tls, addr, Duration::from_millis(500)).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(kind, AgentErrorKind::ConnectTimeout { .. }), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_does_not_speak_tls_is_a_tls_error() {
    let fx = Fixture::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let tls = fx.issue(Role::Coordinator, "ops");
    let kind = error_kind(&tls, addr, Duration::from_secs(5)).await;
    assert!(matches!(kind, AgentErrorKind::Tls { .. }), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_is_concurrent() {
    let fx = Fixture::new();
    let tls = fx.issue(Role::Coordinator, "ops");
    let mut members = Vec::new();
    for i in 0..8 {
        let name = format!("slow{i}");
        let addr = fx
            .agent(&name, Behaviour::Slow(Duration::from_millis(400)), Vec::new())
            .await;
        members.push(Member::new(&name, &format!("https://{addr}")).expect("member"));
    }
    let agents = Agents::new(tls.client().expect("client TLS"), Duration::from_secs(5));
    let start = Instant::now();
    let replies = agents.health(&members).await;
    let took = start.elapsed();
    assert!(replies.iter().all(|r| r.result.is_ok()), "{replies:?}");
    assert_eq!(
        replies.iter().map(|r| r.member.as_str()).collect::<Vec<_>>(),
        members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
    );
    assert!(
        took < Duration::from_millis(400 * 4),
        "8 agents of 400ms each took {took:?}: not concurrent"
    );
}

#[test]
fn certs_commands_write_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let pki = pki.to_str().expect("utf-8 path");
    let fleet = Path::new("/nonexistent/fleet.toml"); // certs commands never read the fleet
    let (status, out, err) = etcdops(fleet, &["certs", "init", "--dir", pki]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    assert!(
        out.contains(&format!("wrote {pki}/ca.crt")) && out.contains("(3650 days)"),
        "{out}"
    );

    let (status, out, err) = etcdops(
        fleet,
        &[
            "certs",
            "issue",
            "agent",
            "--name",
            "etcd1",
            "--host",
            "127.0.0.1",
            "--dir",
            pki,
        ],
    );
    assert_eq!(status, ExitStatus::Ok, "{err}");
    assert!(
        out.contains("agent-etcd1.key (mode 0600)") && out.contains("agent \"etcd1\": expires"),
        "{out}"
    );
    assert!(out.contains("(365 days)"), "{out}");

    let (status, _, err) = etcdops(
        fleet,
        &[
            "certs",
            "issue",
            "agent",
            "--name",
            "etcd1",
            "--host",
            "127.0.0.1",
            "--dir",
            pki,
        ],
    );
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("--force"), "{err}");

    let (status, _, err) = etcdops(
        fleet,
        &["certs", "issue", "etcd-peer", "--name", "etcd1", "--dir", pki],
    );
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("--host"), "{err}");

    let (status, out, err) = etcdops(fleet, &["certs", "list", "--dir", pki, "-w", "json"]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    let report = json(&out);
    assert_eq!(report["certificates"][0]["role"], "ca");
    assert_eq!(report["certificates"][1]["role"], "agent");
    assert_eq!(report["certificates"][1]["days_left"], 365);

    let empty = dir.path().join("empty");
    let (status, _, err) = etcdops(fleet, &["certs", "list", "--dir", empty.to_str().expect("utf-8")]);
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("etcdops certs init"), "{err}");
}
