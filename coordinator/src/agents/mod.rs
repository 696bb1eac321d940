//! The one place that connects to agents: endpoints, mutual TLS, timeouts, and the concurrent fan-out.
//!
//! An agent must present an agent certificate named after the fleet member
//! it was dialled for (checked in the TLS handshake); another member's
//! certificate, or one of another role, is refused.
//!
//! Every failure to reach or use an agent (refused connection, TLS failure,
//! refused certificate, timeout, error status) becomes an [`AgentError`] for
//! that member — never a hang or a panic — naming the member, its agent URL
//! and what to check. Under TLS 1.3 an agent that rejects our client
//! certificate does so after the handshake, so that shows on the first RPC,
//! not on connect; both paths are classified the same way.
//!
//! With [`Agents::reusing_channels`] (the read commands, and every cluster
//! of `--all-clusters` at once) there is one channel per agent URL, made on
//! first use and shared by every later call and clone: concurrent calls to
//! an agent wait for the one connect, and share its failure (a dead or
//! blackholed agent costs one `--timeout`, not one per call). A later call
//! after a failure connects again.
//!
//! Every client carries the [`TraceContext`] interceptor (the caller's trace
//! in each call's metadata) and every fanned-out call runs in an `agent call`
//! span, a child of the caller's.

mod error;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcdops_certs::ClientTls;
use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_proto::v1::{GetStatusRequest, GetStatusResponse, HealthRequest, HealthResponse};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

pub use error::{AgentError, AgentErrorKind};
use error::{chain_message, classify_connect, classify_status};

use crate::fleet::{AgentUrl, Member};
use crate::telemetry::TraceContext;

/// How long one agent gets, connect and call together, unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most an agent accepts as its budget for the local member (`timeout_ms`).
pub const MAX_AGENT_BUDGET_MS: u32 = 60_000;

/// How much longer than the agent's budget for a long call (`timeout_ms`)
/// we wait for its answer: the agent answers at the end of its budget with
/// its real outcome (or the state its work is in), never our timeout.
pub const CALL_MARGIN: Duration = Duration::from_secs(10);

/// A connected agent client (its calls carry the caller's trace context).
pub type Client = AgentClient<InterceptedService<Channel, TraceContext>>;

/// Connects to agents with the coordinator's identity, each call bounded by a timeout.
#[derive(Debug, Clone)]
pub struct Agents {
    tls: Arc<ClientTls>,
    /// Connect (and, unless `call_timeout` says otherwise, call) budget.
    timeout: Duration,
    /// A longer budget for the call itself (defragment, restart): the
    /// agent's budget plus [`CALL_MARGIN`], the connect still bounded by
    /// `timeout`: a dead host costs `timeout`, not a whole step.
    call_timeout: Option<Duration>,
    /// One channel per agent URL, shared by every clone (None: a connect per call).
    channels: Option<Arc<ChannelCache>>,
}

/// The channels of [`Agents::reusing_channels`], one slot per agent URL.
#[derive(Debug, Default)]
struct ChannelCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

/// One agent's channel, or its latest connect failure and when it happened.
#[derive(Debug, Default)]
struct Slot {
    channel: Option<Channel>,
    failed: Option<(Instant, AgentErrorKind)>,
}

impl ChannelCache {
    fn slot(&self, agent: &AgentUrl) -> Arc<tokio::sync::Mutex<Slot>> {
        // A poisoned lock only means another thread panicked while inserting: the map is still whole.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(agent.to_string()).or_default().clone()
    }

    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// One member's answer (or why there is none).
#[derive(Debug)]
pub struct Reply<T> {
    /// The fleet's name of the member.
    pub member: String,
    /// The agent the call went to.
    pub agent: AgentUrl,
    /// Time from the start of the connect to the answer or error.
    pub took: Duration,
    pub result: Result<T, AgentError>,
}

impl Agents {
    /// Agents reached with `tls` (the coordinator's identity), each given `timeout`.
    pub fn new(tls: ClientTls, timeout: Duration) -> Agents {
        Agents {
            tls: Arc::new(tls),
            timeout,
            call_timeout: None,
            channels: None,
        }
    }

    /// The same agents, each reached over one channel made on first use and
    /// reused by every call of this value and its clones (see the module doc).
    pub fn reusing_channels(mut self) -> Agents {
        self.channels = Some(Arc::default());
        self
    }

    /// How many agents have a channel slot (0 without [`Agents::reusing_channels`]).
    pub fn channel_slots(&self) -> usize {
        self.channels.as_ref().map_or(0, |c| c.len())
    }

    /// The same agents for a long call (defragment, restart) whose request
    /// gives the agent `agent_budget` (`timeout_ms`): we wait for the answer
    /// [`CALL_MARGIN`] longer than that, so the agent always answers first
    /// with its real outcome; connecting is still bounded by the usual timeout.
    pub fn with_call_timeout(&self, agent_budget: Duration) -> Agents {
        Agents {
            tls: self.tls.clone(),
            timeout: self.timeout,
            call_timeout: Some(long_call_timeout(agent_budget, self.timeout)),
            // The channel's per-call timeout differs: long calls connect afresh.
            channels: None,
        }
    }

    /// The certificate we call agents with (subject, serial, role,
    /// fingerprint): what their audit trails record, and the journal too.
    pub fn own_certificate(&self) -> &etcdops_certs::CertDetails {
        self.tls.details()
    }

    fn call_budget(&self) -> Duration {
        self.call_timeout.unwrap_or(self.timeout)
    }

    /// The per-agent budget: connect and call together.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The budget the agent gets for its local member (`timeout_ms`): four
    /// fifths of ours, so it can answer with the member's error before we give up.
    pub fn agent_budget_ms(&self) -> u32 {
        agent_budget_ms(self.timeout)
    }

    /// The tonic endpoint of one agent: TLS verified against the fleet CA
    /// under the URL's host, the certificate's agent role and member name
    /// (`ClientTls::for_agent`), connect timeout and per-call timeout.
    pub fn endpoint(&self, member: &Member) -> Result<Endpoint, AgentError> {
        let invalid = |e: tonic::transport::Error| {
            AgentError::new(
                member,
                AgentErrorKind::InvalidEndpoint {
                    reason: chain_message(&e),
                },
            )
        };
        // The fleet CA and the URL's host, then the agent role and the member's name.
        let (tls, verifier) = self.tls.for_agent(member.agent.host(), &member.name);
        let endpoint = Endpoint::from_shared(member.agent.to_string())
            .map_err(invalid)?
            .tls_config_with_verifier(tls, verifier)
            .map_err(invalid)?
            .connect_timeout(self.timeout)
            .timeout(self.call_budget())
            // Large HTTP/2 windows: snapshot streams are bounded by flow
            // control with the 64 KiB default.
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024));
        Ok(endpoint)
    }

    /// Connects to one agent, within the timeout.
    pub async fn connect(&self, member: &Member) -> Result<Client, AgentError> {
        self.connect_until(member, Instant::now() + self.timeout).await
    }

    async fn connect_until(&self, member: &Member, deadline: Instant) -> Result<Client, AgentError> {
        let Some(cache) = &self.channels else {
            return Ok(AgentClient::with_interceptor(
                self.connect_channel(member, deadline).await?,
                TraceContext,
            ));
        };
        let asked = Instant::now();
        let slot = cache.slot(&member.agent);
        let Ok(mut slot) = tokio::time::timeout_at(deadline, slot.lock()).await else {
            return Err(AgentError::new(
                member,
                AgentErrorKind::ConnectTimeout { after: self.timeout },
            ));
        };
        if let Some(channel) = &slot.channel {
            return Ok(AgentClient::with_interceptor(channel.clone(), TraceContext));
        }
        // A connect that failed while we waited for it is our answer too.
        if let Some((at, kind)) = &slot.failed
            && *at >= asked
        {
            return Err(AgentError::new(member, kind.clone()));
        }
        match self.connect_channel(member, deadline).await {
            Ok(channel) => {
                slot.channel = Some(channel.clone());
                slot.failed = None;
                Ok(AgentClient::with_interceptor(channel, TraceContext))
            }
            Err(e) => {
                slot.failed = Some((Instant::now(), e.kind.clone()));
                Err(e)
            }
        }
    }

    async fn connect_channel(&self, member: &Member, deadline: Instant) -> Result<Channel, AgentError> {
        let endpoint = self.endpoint(member)?;
        match tokio::time::timeout_at(deadline, endpoint.connect()).await {
            Err(_) => Err(AgentError::new(
                member,
                AgentErrorKind::ConnectTimeout { after: self.timeout },
            )),
            Ok(Err(e)) => Err(AgentError::new(
                member,
                classify_connect(&e, member.agent.host(), self.timeout),
            )),
            Ok(Ok(channel)) => Ok(channel),
        }
    }

    /// Calls every member's agent at once; each connect-and-call is bounded
    /// by the timeout. Replies come back in the order of `members`.
    pub async fn fan_out<T, F, Fut>(&self, members: &[Member], call: F) -> Vec<Reply<T>>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, Status>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let mut index_of = HashMap::new();
        for (index, member) in members.iter().enumerate() {
            let (agents, member, call) = (self.clone(), member.clone(), call.clone());
            let span = tracing::info_span!("agent call", otel.kind = "client", member = %member.name, agent = %member.agent);
            let handle =
                tasks.spawn(async move { (index, agents.call_one(&member, call).await) }.instrument(span));
            index_of.insert(handle.id(), index);
        }
        let mut replies: Vec<Option<Reply<T>>> = members.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, reply)) => replies[index] = Some(reply),
                Err(join_error) => {
                    if let Some(&index) = index_of.get(&join_error.id()) {
                        let member = &members[index];
                        let kind = AgentErrorKind::Internal {
                            reason: join_error.to_string(),
                        };
                        replies[index] = Some(Reply {
                            member: member.name.clone(),
                            agent: member.agent.clone(),
                            took: Duration::ZERO,
                            result: Err(AgentError::new(member, kind)),
                        });
                    }
                }
            }
        }
        replies
            .into_iter()
            .zip(members)
            .map(|(reply, member)| {
                reply.unwrap_or_else(|| Reply {
                    member: member.name.clone(),
                    agent: member.agent.clone(),
                    took: Duration::ZERO,
                    result: Err(AgentError::new(
                        member,
                        AgentErrorKind::Internal {
                            reason: "no reply recorded".into(),
                        },
                    )),
                })
            })
            .collect()
    }

    async fn call_one<T, F, Fut>(&self, member: &Member, call: F) -> Reply<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        let connect_deadline = start + self.timeout;
        let deadline = start + self.call_budget();
        let result = async {
            let client = self.connect_until(member, connect_deadline).await?;
            match tokio::time::timeout_at(deadline, call(client)).await {
                Err(_) => Err(AgentError::new(
                    member,
                    AgentErrorKind::CallTimeout {
                        after: self.call_budget(),
                    },
                )),
                Ok(Err(status)) => Err(AgentError::new(
                    member,
                    classify_status(&status, member.agent.host(), self.call_budget()),
                )),
                Ok(Ok(response)) => Ok(response.into_inner()),
            }
        }
        .await;
        tracing::debug!(member = %member.name, agent = %member.agent, took = ?start.elapsed(), ok = result.is_ok(), "agent call");
        Reply {
            member: member.name.clone(),
            agent: member.agent.clone(),
            took: start.elapsed(),
            result,
        }
    }

    /// `GetStatus` on every member's agent.
    pub async fn get_status(&self, members: &[Member]) -> Vec<Reply<GetStatusResponse>> {
        let timeout_ms = self.agent_budget_ms();
        self.fan_out(members, move |mut client: Client| async move {
            client.get_status(GetStatusRequest { timeout_ms }).await
        })
        .await
    }

    /// `Health` on every member's agent.
    pub async fn health(&self, members: &[Member]) -> Vec<Reply<HealthResponse>> {
        let timeout_ms = self.agent_budget_ms();
        self.fan_out(members, move |mut client: Client| async move {
            client.health(HealthRequest { timeout_ms }).await
        })
        .await
    }
}

/// How long we wait for a long call that gives the agent `agent_budget`:
/// [`CALL_MARGIN`] past it (and never less than the usual `timeout`).
pub fn long_call_timeout(agent_budget: Duration, timeout: Duration) -> Duration {
    agent_budget.max(timeout) + CALL_MARGIN
}

/// Four fifths of `timeout`, in whole milliseconds, within 1..=60000.
pub fn agent_budget_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_millis().saturating_mul(4) / 5;
    u32::try_from(ms)
        .unwrap_or(MAX_AGENT_BUDGET_MS)
        .clamp(1, MAX_AGENT_BUDGET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_call_outwaits_the_agents_budget() {
        let s = Duration::from_secs;
        assert_eq!(long_call_timeout(s(180), s(5)), s(190));
        assert_eq!(long_call_timeout(s(1), s(5)), s(15));
    }

    #[test]
    fn budget_leaves_room_to_answer() {
        assert_eq!(agent_budget_ms(Duration::from_secs(5)), 4_000);
        assert_eq!(agent_budget_ms(Duration::from_millis(1)), 1);
        assert_eq!(agent_budget_ms(Duration::from_secs(3600)), MAX_AGENT_BUDGET_MS);
    }

    /// A blackholed agent: TCP connects (the kernel's backlog) but TLS never answers.
    #[test]
    fn concurrent_calls_share_one_connect_and_its_failure() {
        use etcdops_certs::{IssueRequest, Pki, Role, TlsFiles};

        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(dir.path(), "test-ca", 1, false).expect("ca");
        pki.issue(&IssueRequest::new(Role::Coordinator, "ops"))
            .expect("issue");
        let (cert, key) = pki.paths(Role::Coordinator, "ops");
        let tls = TlsFiles {
            ca: pki.ca_cert_path(),
            cert,
            key,
        }
        .client()
        .expect("client tls");
        let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let member = Member::new(
            "etcd1",
            &format!("https://{}", blackhole.local_addr().expect("addr")),
        )
        .expect("member");
        let timeout = Duration::from_millis(400);
        let agents = Agents::new(tls, timeout).reusing_channels();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let members = std::slice::from_ref(&member);
        let started = std::time::Instant::now();
        let (status, health) =
            runtime.block_on(async { tokio::join!(agents.get_status(members), agents.health(members)) });
        let took = started.elapsed();
        for kind in [
            &status[0].result.as_ref().expect_err("blackholed").kind,
            &health[0].result.as_ref().expect_err("blackholed").kind,
        ] {
            assert!(matches!(kind, AgentErrorKind::ConnectTimeout { .. }), "{kind:?}");
        }
        assert!(
            took < timeout * 2 - Duration::from_millis(100),
            "one --timeout for both calls, took {took:?}"
        );
        assert_eq!(agents.channel_slots(), 1);
        // A later call tries again (the failure is not kept for ever).
        let started = std::time::Instant::now();
        let again = runtime.block_on(agents.clone().get_status(members));
        assert!(again[0].result.is_err());
        assert!(
            started.elapsed() >= timeout,
            "connected again: {:?}",
            started.elapsed()
        );
        assert_eq!(agents.channel_slots(), 1, "clones share the channels");
        assert_eq!(
            Agents::new(agents.tls.as_ref().clone(), timeout).channel_slots(),
            0
        );
    }
}
