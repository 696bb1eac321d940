//! High availability of `etcdops serve` on etcd's election API, in the home
//! etcd (`[home]` of the fleet file), never a home-made protocol.
//!
//! Every replica campaigns on `<prefix>election/<name>` with a lease of
//! `lease_ttl_secs` kept alive every third of it. The one elected is the
//! leader: it alone runs jobs, writes the journal in the home etcd (every
//! write guarded by its election key, `journal::etcd`), resumes the
//! unfinished operations it finds there from their first unfinished step,
//! and takes fences at epochs of its term (the election's revision,
//! `exec::fence::term_epoch`), so every agent refuses a deposed leader's
//! calls naming the new holder. The others are standbys: they wait in the
//! campaign and log who leads. A lease that expired, a keep-alive that
//! failed or was not answered within the TTL (a paused or cut-off leader
//! notices on waking, on the monotonic clock) ends the term at once: the
//! leader's work is dropped (step down) and the replica campaigns again.
//!
//! The home etcd is never one of the operated clusters:
//! [`check_home_is_not_operated`] (pure) and [`Ha::verify_home`] refuse it at
//! start-up (same cluster ID or a shared client URL).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, ResignOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use super::config::Validated;
use super::jobs::JobContext;
use super::metrics::Metrics;
use super::state::LastRuns;
use super::{Runner, SHUTDOWN_GRACE, ServeError};
use crate::agents::Agents;
use crate::exec::Executor;
use crate::fleet::Fleet;
use crate::fleet::home::{HomeEtcd, host_port};
use crate::journal::{EtcdStore, Journal, JournalError, LeaderGuard, OpState};

/// The default election name.
pub const DEFAULT_ELECTION: &str = "serve-leader";
/// The default lease TTL.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
/// How long a call to the home etcd outside the campaign may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `[ha]` of the serve configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// The election's name under `<prefix>election/` in the home etcd; the
    /// replicas of one serve deployment share it.
    #[serde(default = "default_election")]
    pub election: String,
    /// The lease TTL: a leader that cannot renew it for this long is deposed
    /// (and deposes itself). 2 to 300 s.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// This replica's name in the election and in logs (default
    /// `user@host (pid N)`).
    #[serde(default)]
    pub replica: Option<String>,
}

fn default_election() -> String {
    DEFAULT_ELECTION.to_string()
}

fn default_ttl() -> u64 {
    DEFAULT_LEASE_TTL_SECS
}

impl Default for HaConfig {
    fn default() -> HaConfig {
        HaConfig {
            election: default_election(),
            lease_ttl_secs: default_ttl(),
            replica: None,
        }
    }
}

/// Why high availability could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("[ha] lease_ttl_secs = {0}: must be 2 to 300")]
    BadTtl(u64),
    #[error("[ha] election = {0:?}: must be non-empty, without '/'")]
    BadElection(String),
    #[error(
        "the home etcd ({endpoints}) does not answer: {source}; check [home] endpoints and [home.tls] in the fleet file"
    )]
    Unreachable {
        endpoints: String,
        #[source]
        source: Box<etcd_client::Error>,
    },
    #[error("the home etcd: cannot {action}: {source}")]
    Etcd {
        action: &'static str,
        #[source]
        source: Box<etcd_client::Error>,
    },
    #[error(
        "[home] {home} is cluster {cluster} of the fleet ({why}): the home etcd must be an etcd of its own, never one etcdops operates or restores"
    )]
    Operated {
        home: String,
        cluster: String,
        why: String,
    },
    #[error(
        "[home] is missing from the fleet file: serve with [ha] needs the home etcd (endpoints and TLS files)"
    )]
    NoHome,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl HaConfig {
    pub fn validate(&self) -> Result<(), HaError> {
        if !(2..=300).contains(&self.lease_ttl_secs) {
            return Err(HaError::BadTtl(self.lease_ttl_secs));
        }
        if self.election.trim().is_empty() || self.election.contains('/') {
            return Err(HaError::BadElection(self.election.clone()));
        }
        Ok(())
    }
}

/// What the fleet's agents say about one operated cluster, for the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatedCluster {
    pub name: String,
    /// The cluster IDs its members report (one when healthy).
    pub cluster_ids: Vec<u64>,
    /// Its members' client URLs as its members list them.
    pub client_urls: Vec<String>,
}

/// Refuses a home etcd that is one of the operated clusters: the same
/// cluster ID, or a client URL (host:port) in common.
pub fn check_home_is_not_operated(
    home: &HomeEtcd,
    home_cluster_id: Option<u64>,
    home_client_urls: &[String],
    operated: &[OperatedCluster],
) -> Result<(), HaError> {
    let mut home_hosts = home.endpoint_hosts();
    home_hosts.extend(home_client_urls.iter().map(|u| host_port(u)));
    for cluster in operated {
        if let Some(id) = home_cluster_id.filter(|id| *id != 0 && cluster.cluster_ids.contains(id)) {
            return Err(HaError::Operated {
                home: home.endpoints.join(","),
                cluster: cluster.name.clone(),
                why: format!("the same cluster ID {id:x}"),
            });
        }
        if let Some(url) = cluster
            .client_urls
            .iter()
            .find(|u| home_hosts.contains(&host_port(u)))
        {
            return Err(HaError::Operated {
                home: home.endpoints.join(","),
                cluster: cluster.name.clone(),
                why: format!("its member's client URL {url}"),
            });
        }
    }
    Ok(())
}

/// A replica's handle on the election.
#[derive(Clone)]
pub struct Ha {
    client: Client,
    home: HomeEtcd,
    config: HaConfig,
    replica: String,
}

impl std::fmt::Debug for Ha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ha")
            .field("replica", &self.replica)
            .field("election", &self.election_name())
            .finish_non_exhaustive()
    }
}

/// One term of leadership: the election key and its revision, the lease,
/// and the signal that the term ended.
#[derive(Debug)]
pub struct Term {
    /// The election key and its create revision (the journal's write guard).
    pub guard: LeaderGuard,
    /// The election's revision: the term, as the fences' epochs carry it.
    pub term: u64,
    pub lease: i64,
    leader: etcd_client::LeaderKey,
    ended: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Resolves when the term ends (lease lost, keep-alive failed), with why.
    pub async fn ended(&mut self) -> String {
        loop {
            if let Some(reason) = self.ended.borrow().clone() {
                return reason;
            }
            if self.ended.changed().await.is_err() {
                return "the lease keep-alive stopped".to_string();
            }
        }
    }

    /// True while the term holds as far as this replica knows.
    pub fn holds(&self) -> bool {
        self.ended.borrow().is_none()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Ha {
    /// Connects to the home etcd and checks that it answers (a start-up
    /// error otherwise). The campaign blocks until elected, so the client
    /// has no per-call timeout; other calls are bounded here.
    pub async fn connect(home: &HomeEtcd, config: HaConfig) -> Result<Ha, HaError> {
        config.validate()?;
        let endpoints = home.endpoints.join(",");
        let unreachable = |source| HaError::Unreachable {
            endpoints: endpoints.clone(),
            source: Box::new(source),
        };
        let options = options(home).map_err(|e| unreachable(etcd_client::Error::IoError(e)))?;
        let mut client = Client::connect(home.endpoints.clone(), Some(options))
            .await
            .map_err(unreachable)?;
        timed(client.member_list()).await.map_err(unreachable)?;
        let replica = config.replica.clone().unwrap_or_else(crate::journal::holder);
        Ok(Ha {
            client,
            home: home.clone(),
            config,
            replica,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn election_name(&self) -> String {
        format!("{}election/{}", self.home.prefix, self.config.election)
    }

    /// The home etcd's cluster ID and client URLs.
    pub async fn home_identity(&self) -> Result<(u64, Vec<String>), HaError> {
        let mut c = self.client.clone();
        let list = timed(c.member_list())
            .await
            .map_err(|e| etcd_err("list its members", e))?;
        let id = list.header().map_or(0, |h| h.cluster_id());
        let urls = list
            .members()
            .iter()
            .flat_map(|m| m.client_urls().iter().cloned())
            .collect();
        Ok((id, urls))
    }

    /// Start-up check: the home etcd is none of the fleet's clusters (as
    /// their agents see them; a cluster whose agents do not answer is
    /// checked by its URLs only when some member answers).
    pub async fn verify_home(&self, agents: &Agents, fleet: &Fleet) -> Result<(), HaError> {
        let (id, urls) = self.home_identity().await?;
        let mut operated = Vec::new();
        for cluster in &fleet.clusters {
            let replies = agents.get_status(&cluster.members).await;
            let mut seen = OperatedCluster {
                name: cluster.name.clone(),
                cluster_ids: Vec::new(),
                client_urls: Vec::new(),
            };
            for reply in replies {
                if let Ok(status) = reply.result
                    && let Some(m) = status.member
                    && m.reachable
                {
                    seen.cluster_ids.push(m.cluster_id);
                    seen.client_urls.push(m.endpoint.clone());
                    seen.client_urls
                        .extend(m.members.iter().flat_map(|x| x.client_urls.iter().cloned()));
                }
            }
            operated.push(seen);
        }
        check_home_is_not_operated(&self.home, Some(id), &urls, &operated)
    }

    /// The current leader's name, if any (for a standby's log).
    pub async fn leader(&self) -> Option<String> {
        let mut c = self.client.clone();
        let resp = timed(c.leader(self.election_name())).await.ok()?;
        resp.kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    /// Campaigns until elected: a lease of the TTL kept alive from now on,
    /// then etcd's Campaign (blocks while another replica leads). A standby
    /// logs the leader it waits behind.
    pub async fn campaign(&self) -> Result<Term, HaError> {
        let ttl = Duration::from_secs(self.config.lease_ttl_secs);
        let mut c = self.client.clone();
        // Before the request: the lease cannot outlive this by more than the TTL.
        let asked = Instant::now();
        let granted = timed(c.lease_grant(self.config.lease_ttl_secs as i64, None))
            .await
            .map_err(|e| etcd_err("grant a lease", e))?;
        let lease = granted.id();
        let (ended_tx, ended) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(self.client.clone(), lease, ttl, asked, ended_tx));
        if let Some(leader) = self.leader().await {
            tracing::info!(replica = %self.replica, leader = %leader, "standby: waiting behind the serve leader");
        }
        let mut c = self.client.clone();
        let name = self.election_name();
        let value = self.replica.clone();
        let campaign = c.campaign(name, value, lease);
        let mut watch_end = ended.clone();
        let resp = tokio::select! {
            r = campaign => r.map_err(|e| etcd_err("campaign", e)),
            _ = watch_end.wait_for(Option::is_some) => Err(HaError::Etcd {
                action: "keep the campaign's lease",
                source: Box::new(etcd_client::Error::InvalidArgs(
                    ended.borrow().clone().unwrap_or_default(),
                )),
            }),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                keeper.abort();
                let mut c = self.client.clone();
                let _ = timed(c.lease_revoke(lease)).await;
                return Err(e);
            }
        };
        let Some(leader) = resp.leader().cloned() else {
            keeper.abort();
            return Err(etcd_err(
                "campaign",
                etcd_client::Error::InvalidArgs("etcd answered without a leader key".into()),
            ));
        };
        let term = u64::try_from(leader.rev()).unwrap_or(0);
        tracing::info!(replica = %self.replica, term, lease = format!("{lease:x}"), "elected: serve leader");
        Ok(Term {
            guard: LeaderGuard {
                key: leader.key().to_vec(),
                rev: leader.rev(),
            },
            term,
            lease,
            leader,
            ended,
            keeper,
        })
    }

    /// The journal in the home etcd, written under this term.
    pub fn journal(&self, term: &Term) -> Result<Journal, HaError> {
        Ok(Journal::etcd(EtcdStore::connect(
            &self.home,
            Some(term.guard.clone()),
        )?))
    }

    /// Ends a term on purpose (shutdown): resign and revoke the lease, so a
    /// standby takes over at once instead of after the TTL.
    pub async fn resign(&self, term: Term) {
        let mut c = self.client.clone();
        let _ = timed(c.resign(Some(ResignOptions::new().with_leader(term.leader.clone())))).await;
        let _ = timed(c.lease_revoke(term.lease)).await;
        tracing::info!(replica = %self.replica, term = term.term, "resigned the serve leadership");
    }

    /// A replica's life: campaign; once elected run `lead` (the leader's
    /// work: resume, then jobs) until it ends (at `stop` its jobs end after
    /// their current step; then resign) or the term ends — then it is
    /// dropped at once (its jobs stop) and the replica campaigns again.
    /// `leader` is told each change (the `etcdops_serve_leader` gauge).
    pub async fn run<F, Fut>(
        &self,
        mut stop: watch::Receiver<bool>,
        leader: impl Fn(bool),
        mut lead: F,
    ) -> Result<(), HaError>
    where
        F: FnMut(Arc<Journal>, u64) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            leader(false);
            if *stop.borrow() {
                return Ok(());
            }
            let elected = tokio::select! {
                t = self.campaign() => t,
                _ = stop.changed() => return Ok(()),
            };
            let mut term = match elected {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(replica = %self.replica, "{e}; campaigning again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let journal = match self.journal(&term) {
                Ok(j) => Arc::new(j),
                Err(e) => {
                    tracing::error!(replica = %self.replica, "{e}; resigning");
                    self.resign(term).await;
                    continue;
                }
            };
            leader(true);
            let work = lead(journal, term.term);
            tokio::pin!(work);
            tokio::select! {
                () = &mut work => {
                    self.resign(term).await;
                    leader(false);
                    return Ok(());
                }
                reason = term.ended() => {
                    tracing::error!(replica = %self.replica, term = term.term, "stepping down: {reason}; running jobs stopped");
                }
            }
        }
    }
}

/// `etcdops serve` with `[ha]`: the start-up checks (the home etcd answers
/// and is none of the fleet's clusters: exit 2 otherwise), `/metrics` (its
/// operation states read from the home journal), then [`Ha::run`]: as
/// leader, the unfinished operations of the journal are resumed, then the
/// job runners run with the term's journal and epoch, aborted the moment the
/// term ends.
pub(super) async fn serve(
    validated: Validated,
    agents: Agents,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = validated.ha.clone().unwrap_or_default();
    let home = validated.fleet.home.clone().ok_or(HaError::NoHome)?;
    let ha = Ha::connect(&home, config).await?;
    ha.verify_home(&agents, &validated.fleet).await?;
    let reader = Journal::etcd(EtcdStore::connect(&home, None)?);
    let runs = Arc::new(LastRuns::open(&validated.state_dir)?);
    let metrics = Metrics::default();
    metrics.leader.set(0);
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(address) = validated.metrics_listen {
        let listener = super::metrics::bind(address)
            .await
            .map_err(|source| ServeError::Bind { address, source })?;
        tokio::spawn(super::metrics::serve(
            listener,
            metrics.clone(),
            Arc::new(reader.clone()),
            stop_rx.clone(),
        ));
    }
    for spec in &validated.jobs {
        metrics.declare(&spec.cluster, &spec.name);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let token = Arc::new(());
    if let Some(period) = super::notify::watchdog_interval() {
        tokio::spawn(super::notify::watchdog(
            period,
            Arc::downgrade(&token),
            stop_rx.clone(),
        ));
    }
    let summary = format!(
        "replica {} of election {} on the home etcd {}: {} job(s) once leader; journal {}",
        ha.replica(),
        ha.election_name(),
        home.endpoints.join(","),
        validated.jobs.len(),
        reader.path().display()
    );
    tracing::info!("{summary}");
    super::notify::ready(&summary);
    let validated = Arc::new(validated);
    let lead = |journal: Arc<Journal>, term: u64| {
        let (validated, agents, metrics, runs) =
            (validated.clone(), agents.clone(), metrics.clone(), runs.clone());
        let (stop, interrupted) = (stop_rx.clone(), interrupted.clone());
        async move {
            // What the last leader ran: a job it just ran is not "missed" here.
            if let Some(store) = journal.home() {
                match store.serve_state() {
                    Ok(Some(text)) => match runs.merge(&text) {
                        Ok(n) => tracing::info!("took in the last leader's record of job runs ({n} newer)"),
                        Err(e) => tracing::warn!("the home etcd's record of job runs is unreadable: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!("cannot read the last leader's record of job runs: {e}"),
                }
            }
            runs.share(journal.clone());
            resume_unfinished(&validated, &agents, &journal, term, &interrupted).await;
            // Aborted when dropped: a lost term stops every job at once.
            let mut runners = tokio::task::JoinSet::new();
            runners.spawn(super::requests::serve(super::requests::Leader {
                validated: validated.clone(),
                agents: agents.clone(),
                journal: journal.clone(),
                term,
                interrupted: interrupted.clone(),
                stop: stop.clone(),
            }));
            for spec in &validated.jobs {
                let runner = Runner {
                    ctx: JobContext {
                        fleet: validated.fleet.clone(),
                        fleet_path: validated.fleet_path.clone(),
                        agents: agents.clone(),
                        journal: (*journal).clone(),
                        fence_wait: validated.fence_wait,
                        job: spec.name.clone(),
                        params: spec.params.clone(),
                        shutdown: interrupted.clone(),
                        term: Some(term),
                    },
                    spec: spec.clone(),
                    metrics: metrics.clone(),
                    runs: runs.clone(),
                    stop: stop.clone(),
                };
                runners.spawn(runner.run());
            }
            while runners.join_next().await.is_some() {}
        }
    };
    let gauge = metrics.clone();
    let replica = ha.run(
        stop_rx.clone(),
        move |l| {
            gauge.leader.set(i64::from(l));
        },
        lead,
    );
    tokio::pin!(replica);
    tokio::select! {
        r = &mut replica => return r.map_err(ServeError::from),
        () = shutdown => {}
    }
    super::notify::stopping("stopping: running jobs finish their current step, then resign");
    tracing::info!("stopping: waiting jobs end now, running ones after their current step; then resign");
    interrupted.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, replica).await {
        Ok(r) => r?,
        Err(_) => tracing::warn!(
            "a job did not stop within {}s; its operation stays in the journal for the next leader",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    drop(token);
    Ok(())
}

/// A new leader carries on the operations left `running` in the journal,
/// each from its first unfinished step (a step left `running` with the same
/// step key, so an agent that already did it answers from its record), at
/// the fence epochs of its own term.
async fn resume_unfinished(
    validated: &Validated,
    agents: &Agents,
    journal: &Journal,
    term: u64,
    interrupted: &Arc<AtomicBool>,
) {
    let ops = match unfinished(journal) {
        Ok(ops) => ops,
        Err(e) => return tracing::error!("cannot list the unfinished operations: {e}"),
    };
    for record in ops {
        let Some(cluster) = validated.fleet.clusters.iter().find(|c| c.name == record.cluster) else {
            tracing::error!(operation = %record.id, "cluster {} is not in the fleet: left for `etcdops op abort`", record.cluster);
            continue;
        };
        let record = match journal.update(&record.id, |r| r.holder = super::jobs::holder()) {
            Ok(r) => r,
            Err(e) => return tracing::error!(operation = %record.id, "cannot take the operation over: {e}"),
        };
        tracing::info!(
            operation = %record.id, cluster = %record.cluster, term,
            "resuming the previous leader's operation at step {}/{}",
            record.steps_complete() + 1,
            record.steps.len()
        );
        let mut executor = Executor::for_record(
            &record,
            agents.clone(),
            cluster.clone(),
            journal.clone(),
            validated.fleet_path.clone(),
            interrupted.clone(),
        );
        executor.progress = Box::new(super::jobs::Log {
            job: format!("{}/resume", cluster.name),
        });
        executor.term = Some(term);
        match executor.resume(record.clone(), false).await {
            Ok(done) => tracing::info!(operation = %done.id, "resumed operation ended {}", done.state),
            Err(e) => tracing::error!(operation = %record.id, "resumed operation stopped: {e}"),
        }
    }
}

/// The operations a new leader carries on: those left `running` in the
/// journal (by a leader that died or was deposed mid-way), oldest first.
/// Paused ones wait for a human (`op resume` / `op abort`).
pub fn unfinished(journal: &Journal) -> Result<Vec<crate::journal::OperationRecord>, JournalError> {
    let mut ops = journal.list()?;
    ops.retain(|op| op.state == OpState::Running);
    ops.reverse();
    Ok(ops)
}

/// Renews the lease every third of the TTL; ends the term (with why) when
/// etcd says it expired, a renewal fails, or none succeeded for a whole TTL
/// (measured on the monotonic clock, so a replica paused past its TTL knows
/// on waking, before anything else it does).
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    ended: watch::Sender<Option<String>>,
) {
    let end = |reason: String| {
        tracing::warn!(lease = format!("{lease:x}"), "{reason}");
        ended.send_replace(Some(reason));
    };
    let mut valid_until = granted_at + ttl;
    let (mut keeper, mut stream) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return end(format!("lease {lease:x}: keep-alive could not start: {e}")),
    };
    let every = ttl / 3;
    loop {
        let now = Instant::now();
        if now >= valid_until {
            return end(format!(
                "lease {lease:x}: not renewed for its TTL of {} s (paused or cut off): it has expired",
                ttl.as_secs()
            ));
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout_at(valid_until, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                valid_until = sent + Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0));
            }
            Ok(Ok(Some(_))) => return end(format!("lease {lease:x} has expired (etcd says TTL 0)")),
            Ok(Ok(None)) => return end(format!("lease {lease:x}: the keep-alive stream ended")),
            Ok(Err(e)) => return end(format!("lease {lease:x}: keep-alive failed: {e}")),
            Err(_) => continue, // the deadline check above ends it
        }
        let next = (Instant::now() + every).min(valid_until);
        tokio::time::sleep_until(next).await;
    }
}

fn options(home: &HomeEtcd) -> Result<ConnectOptions, std::io::Error> {
    let base = crate::journal::etcd::connect_options(home)?;
    // No per-call timeout: the campaign waits as long as another replica leads.
    Ok(base
        .with_timeout(Duration::from_secs(365 * 86_400))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2)))
}

async fn timed<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, etcd_client::Error> {
    tokio::time::timeout(CALL_TIMEOUT, f).await.unwrap_or_else(|_| {
        Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
        )))
    })
}

fn etcd_err(action: &'static str, source: etcd_client::Error) -> HaError {
    HaError::Etcd {
        action,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(endpoints: &[&str]) -> HomeEtcd {
        HomeEtcd {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            prefix: "/etcdops/".into(),
            journal: Default::default(),
            tls: None,
        }
    }

    fn cluster(name: &str, id: u64, urls: &[&str]) -> OperatedCluster {
        OperatedCluster {
            name: name.into(),
            cluster_ids: vec![id],
            client_urls: urls.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_home_etcd_is_never_an_operated_cluster() {
        let h = home(&["http://10.0.9.1:2379"]);
        let fleet = [
            cluster("a", 0xa, &["https://10.0.0.1:2379"]),
            cluster("b", 0xb, &["https://10.0.1.1:2379"]),
        ];
        assert!(check_home_is_not_operated(&h, Some(0xc), &[], &fleet).is_ok());
        let err = check_home_is_not_operated(&h, Some(0xb), &[], &fleet).expect_err("same id");
        assert!(
            err.to_string().contains("cluster b") && err.to_string().contains("cluster ID b"),
            "{err}"
        );
        let err = check_home_is_not_operated(&h, Some(0xc), &["https://10.0.0.1:2379".into()], &fleet)
            .expect_err("shared url");
        assert!(err.to_string().contains("cluster a"), "{err}");
        let h = home(&["https://10.0.1.1:2379/"]);
        let err = check_home_is_not_operated(&h, None, &[], &fleet).expect_err("endpoint");
        assert!(err.to_string().contains("never one etcdops operates"), "{err}");
    }

    #[test]
    fn config_defaults_and_bounds() {
        let c: HaConfig = toml::from_str("").expect("defaults");
        assert_eq!(c, HaConfig::default());
        assert_eq!((c.election.as_str(), c.lease_ttl_secs), ("serve-leader", 10));
        c.validate().expect("valid");
        for (text, want) in [
            ("lease_ttl_secs = 1", "2 to 300"),
            ("lease_ttl_secs = 301", "2 to 300"),
            ("election = \"a/b\"", "without '/'"),
        ] {
            let c: HaConfig = toml::from_str(text).expect("parses");
            let err = c.validate().expect_err(text);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
        assert!(
            toml::from_str::<HaConfig>("ttl = 3").is_err(),
            "unknown fields refused"
        );
    }
}
