//! A bounded write load generator against etcd, and a fragmented database to
//! run it on, for the benchmarks of rolling operations (`bench-rolling`).
//!
//! The generator behaves like a well-configured real client: one connection
//! per endpoint, writes spread round-robin over them, an attempt that fails
//! with a transport error, `Unavailable`, a timeout or a stream cut by a
//! stopping member (etcd 3.4 over TLS does not drain) retried on the next
//! endpoint while the write's deadline allows. It is open loop at a target
//! rate with at most `concurrency` writes in flight: when the bound is
//! reached the next write waits for a slot (so a stall shows as writes not
//! sent, `missed`). Beside it a watcher polls `Maintenance.Status` on every
//! endpoint and counts leader changes.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use etcdops_tests::loadgen::{LoadConfig, LoadGen};
//! let load = LoadGen::start(LoadConfig::new(vec!["https://127.0.0.1:2379".into()], cluster.layout.etcd_client.clone())).await?;
//! tokio::time::sleep(std::time::Duration::from_secs(10)).await;
//! println!("{}", load.stop().await);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Client, CompactionOptions, DeleteOptions, KvClient, MaintenanceClient};
use etcdops_certs::TlsFiles;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

/// How many error messages a report keeps (the first ones).
const KEPT_ERRORS: usize = 5;
/// At most this many latency samples are kept (about 2 hours at 200/s).
const MAX_SAMPLES: usize = 1_500_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Client URLs of every member (`https://ip:port`, or `http://`).
    pub endpoints: Vec<String>,
    /// The etcd client identity for `https://` endpoints (the layout's
    /// operator `etcd-client` certificate: `layout.etcd_client`).
    pub tls: Option<TlsFiles>,
    /// Target writes per second.
    pub rate: u32,
    /// At most this many writes in flight.
    pub concurrency: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Keys are `<key_prefix><n % key_space>`: a bounded set overwritten.
    pub key_prefix: String,
    pub key_space: u64,
    /// A write fails when it has not succeeded this long after its first attempt.
    pub write_deadline: Duration,
    /// Each attempt is abandoned after this long (and retried elsewhere).
    pub attempt_timeout: Duration,
    /// How often every endpoint's Status is polled for the leader.
    pub status_interval: Duration,
    /// After an attempt on an endpoint fails (retryable) or times out, new
    /// attempts avoid that endpoint for this long, as gRPC balancers do
    /// with a failing connection (unless every endpoint is avoided).
    /// Zero: plain round-robin.
    pub eject: Duration,
}

impl LoadConfig {
    /// The defaults: 200 writes/s, 8 in flight, 256-byte values over 1000
    /// keys under `/bench/load/`, 2 s per write, 1 s per attempt, Status
    /// every 100 ms.
    pub fn new(endpoints: Vec<String>, tls: Option<TlsFiles>) -> LoadConfig {
        LoadConfig {
            endpoints,
            tls,
            rate: 200,
            concurrency: 8,
            value_size: 256,
            key_prefix: "/bench/load/".to_string(),
            key_space: 1000,
            write_deadline: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
            status_interval: Duration::from_millis(100),
            eject: Duration::ZERO,
        }
    }
}

/// A running load; [`LoadGen::stop`] ends it and reports.
#[derive(Debug)]
pub struct LoadGen {
    stop: watch::Sender<bool>,
    writer: tokio::task::JoinHandle<u64>,
    watchers: JoinSet<()>,
    writes: Arc<Mutex<WriteTotals>>,
    leaders: Arc<Mutex<LeaderTracker>>,
    started: Instant,
    rate: u32,
}

/// What a load run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// From start to stop (the in-flight writes finished after stop are counted).
    pub duration: Duration,
    pub target_rate: u32,
    /// Writes started.
    pub sent: u64,
    /// Writes the target rate asked for that were not started because the
    /// concurrency bound was reached (`rate × duration - sent`, at least 0).
    pub missed: u64,
    pub ok: u64,
    pub failed: u64,
    /// Attempts beyond the first, over all writes.
    pub retried: u64,
    /// The first few failure messages.
    pub errors: Vec<String>,
    /// From first attempt to success, successful writes only.
    pub latency: LatencySummary,
    /// Changes of the leader ID seen by the Status watcher.
    pub leader_changes: u64,
    /// How far the raft term advanced (elections, including ones that did
    /// not change the leader).
    pub term_advance: u64,
    /// Status polls answered / not answered (over every endpoint).
    pub status_ok: u64,
    pub status_failed: u64,
}

#[derive(Debug, Default)]
struct WriteTotals {
    ok: u64,
    failed: u64,
    retried: u64,
    errors: Vec<String>,
    latencies_us: Vec<u32>,
}

impl WriteTotals {
    fn record(&mut self, outcome: &Result<Duration, String>, attempts: u32) {
        self.retried += u64::from(attempts.saturating_sub(1));
        match outcome {
            Ok(latency) => {
                self.ok += 1;
                if self.latencies_us.len() < MAX_SAMPLES {
                    self.latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < KEPT_ERRORS {
                    self.errors.push(e.clone());
                }
            }
        }
    }
}

/// p50 / p99 / max of a set of latencies (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    /// Summarises microsecond samples (sorted here).
    pub fn from_micros(mut samples: Vec<u32>) -> LatencySummary {
        samples.sort_unstable();
        let at = |p: f64| Duration::from_micros(u64::from(percentile(&samples, p)));
        LatencySummary {
            count: samples.len(),
            p50: at(50.0),
            p99: at(99.0),
            max: at(100.0),
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts leader changes from (raft term, leader) observations that may
/// arrive out of order from several members: only a report with a higher
/// term than the newest seen moves the picture forward, so a lagging member
/// still naming the old leader is not a change back. Leader 0 (no leader
/// known) is ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaderTracker {
    current: Option<(u64, u64)>,
    first_term: u64,
    pub changes: u64,
    pub status_ok: u64,
    pub status_failed: u64,
}

impl LeaderTracker {
    pub fn observe(&mut self, term: u64, leader: u64) {
        if leader == 0 {
            return;
        }
        match self.current {
            None => {
                self.current = Some((term, leader));
                self.first_term = term;
            }
            Some((t, l)) if term > t => {
                if leader != l {
                    self.changes += 1;
                }
                self.current = Some((term, leader));
            }
            Some(_) => {}
        }
    }

    /// How far the term advanced since the first observation.
    pub fn term_advance(&self) -> u64 {
        self.current.map_or(0, |(t, _)| t - self.first_term)
    }

    /// The leader ID seen last (0 before any).
    pub fn leader(&self) -> u64 {
        self.current.map_or(0, |(_, l)| l)
    }
}

/// One lazily connected channel (reconnects on its own) to an endpoint,
/// over TLS with `tls`'s client certificate when given.
fn channel(url: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("endpoint {url}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("etcd client TLS file {}", path.display()))
        };
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&tls.cert)?,
                read(&tls.key)?,
            ))
            .domain_name(host);
        endpoint = endpoint
            .tls_config(config)
            .with_context(|| format!("TLS for {url}"))?;
    }
    Ok(endpoint.connect_lazy())
}

async fn client(url: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Client> {
    Client::from_channel(etcd_client::Channel::Tonic(channel(url, tls)?), None)
        .await
        .with_context(|| format!("etcd client for {url}"))
}

/// Whether a failed attempt may be retried on another endpoint.
fn retryable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => true,
            // A connection torn down under a stream (h2 GOAWAY/RST_STREAM):
            // not an answer from etcd. etcd 3.4 serving TLS stops its gRPC
            // server abruptly instead of draining it (etcd issue #8916), so
            // a write in flight to a restarting member ends this way; like a
            // timed-out attempt its outcome is unknown, and the loader's
            // writes (a value put on a bounded key set) are safe to repeat.
            Code::Internal => s.message().starts_with("h2 protocol error"),
            // h2/hyper failures surface as Unknown.
            Code::Unknown => {
                let m = s.message().to_ascii_lowercase();
                m.contains("transport") || m.contains("connection") || m.contains("h2")
                    // The same abrupt stop seen after the response headers:
                    // the stream ended without a grpc-status trailer.
                    || m.contains("missing grpc-status trailer")
                    // etcd 3.4 returns raft's ErrProposalDropped as Unknown: the
                    // proposal never reached the log (a leadership transfer or no
                    // known leader), so retrying it is safe — and necessary: any
                    // leader change, planned or not, drops in-flight proposals.
                    || m.contains("raft proposal dropped")
                    // raft.ErrStopped: the member stopped its raft node (it was
                    // removed from the cluster, or is shutting down) before the
                    // proposal entered it; never forwarded, safe to retry.
                    || m.contains("raft: stopped")
            }
            _ => false,
        },
        _ => false,
    }
}

impl LoadGen {
    /// Connects (lazily) to every endpoint and starts writing and watching.
    /// Must be called inside a tokio runtime.
    pub async fn start(cfg: LoadConfig) -> anyhow::Result<LoadGen> {
        anyhow::ensure!(!cfg.endpoints.is_empty(), "no endpoints");
        anyhow::ensure!(
            cfg.rate > 0 && cfg.concurrency > 0 && cfg.key_space > 0,
            "rate, concurrency and key space must be > 0"
        );
        let mut kvs = Vec::new();
        let mut maints = Vec::new();
        for url in &cfg.endpoints {
            kvs.push((url.clone(), client(url, cfg.tls.as_ref()).await?.kv_client()));
            // A separate connection for the watcher, so its polls never queue
            // behind the load.
            maints.push(client(url, cfg.tls.as_ref()).await?.maintenance_client());
        }
        let (stop, stop_rx) = watch::channel(false);
        let writes = Arc::new(Mutex::new(WriteTotals::default()));
        let leaders = Arc::new(Mutex::new(LeaderTracker::default()));
        let mut watchers = JoinSet::new();
        for maint in maints {
            watchers.spawn(watch_leader(
                maint,
                cfg.status_interval,
                leaders.clone(),
                stop_rx.clone(),
            ));
        }
        let rate = cfg.rate;
        let endpoints = Arc::new(Endpoints::new(kvs));
        let writer = tokio::spawn(drive(Arc::new(cfg), endpoints, writes.clone(), stop_rx));
        Ok(LoadGen {
            stop,
            writer,
            watchers,
            writes,
            leaders,
            started: Instant::now(),
            rate,
        })
    }

    /// Stops sending, waits for the writes in flight (each ends by its
    /// deadline) and the watcher, and reports.
    pub async fn stop(mut self) -> LoadReport {
        let _ = self.stop.send(true);
        let duration = self.started.elapsed();
        let sent = self.writer.await.unwrap_or(0);
        while self.watchers.join_next().await.is_some() {}
        let w = std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()));
        let l = self.leaders.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let asked = (duration.as_secs_f64() * f64::from(self.rate)).floor() as u64;
        LoadReport {
            duration,
            target_rate: self.rate,
            sent,
            missed: asked.saturating_sub(sent),
            ok: w.ok,
            failed: w.failed,
            retried: w.retried,
            errors: w.errors,
            latency: LatencySummary::from_micros(w.latencies_us),
            leader_changes: l.changes,
            term_advance: l.term_advance(),
            status_ok: l.status_ok,
            status_failed: l.status_failed,
        }
    }
}

/// The open-loop sender: a tick per write at the target rate, a slot of the
/// concurrency bound per write in flight. Returns how many writes it started.
async fn drive(
    cfg: Arc<LoadConfig>,
    kvs: Arc<Endpoints>,
    totals: Arc<Mutex<WriteTotals>>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let value = Arc::new(vec![b'v'; cfg.value_size]);
    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let slot = tokio::select! {
            _ = stop.changed() => break,
            slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
        };
        while tasks.try_join_next().is_some() {}
        let (cfg, kvs, totals, value) = (cfg.clone(), kvs.clone(), totals.clone(), value.clone());
        tasks.spawn(async move {
            let (outcome, attempts) = write_one(&cfg, &kvs, seq, &value).await;
            totals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(&outcome, attempts);
            drop(slot);
        });
        seq += 1;
    }
    while tasks.join_next().await.is_some() {}
    seq
}

/// One write with retries on the next endpoint; returns the latency from the
/// first attempt to success (or why it failed) and the attempts made.
async fn write_one(
    cfg: &LoadConfig,
    eps: &Endpoints,
    seq: u64,
    value: &[u8],
) -> (Result<Duration, String>, u32) {
    let kvs = &eps.kvs;
    let start = Instant::now();
    let deadline = start + cfg.write_deadline;
    let key = format!("{}{}", cfg.key_prefix, seq % cfg.key_space);
    let mut ep = eps.pick((seq % kvs.len() as u64) as usize);
    let mut attempts = 0u32;
    let mut last = String::from("no attempt");
    loop {
        let now = Instant::now();
        if now >= deadline {
            let msg = format!(
                "deadline of {:?} passed after {attempts} attempt(s); last: {last}",
                cfg.write_deadline
            );
            return (Err(msg), attempts);
        }
        let budget = cfg.attempt_timeout.min(deadline - now);
        attempts += 1;
        let (url, kv) = &kvs[ep];
        let mut kv = kv.clone();
        let began = Instant::now();
        match tokio::time::timeout(budget, kv.put(key.clone(), value.to_vec(), None)).await {
            Ok(Ok(_)) => return (Ok(start.elapsed()), attempts),
            Ok(Err(e)) if retryable(&e) => last = format!("{url}: {e}"),
            Ok(Err(e)) => return (Err(format!("{url}: {e} (not retryable)")), attempts),
            Err(_) => last = format!("{url}: attempt timed out after {budget:?}"),
        }
        eps.avoid(ep, cfg.eject);
        // A fast failure (connection refused, no leader): pause a little
        // rather than spin over the endpoints.
        if began.elapsed() < Duration::from_millis(50) {
            let pause = Duration::from_millis(25).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        ep = eps.pick((ep + 1) % kvs.len());
    }
}

/// The write connections, and until when each is avoided after a failure.
struct Endpoints {
    kvs: Vec<(String, KvClient)>,
    epoch: Instant,
    /// Milliseconds since `epoch`.
    avoid_until: Vec<std::sync::atomic::AtomicU64>,
}

impl Endpoints {
    fn new(kvs: Vec<(String, KvClient)>) -> Endpoints {
        let avoid_until = kvs.iter().map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        Endpoints {
            kvs,
            epoch: Instant::now(),
            avoid_until,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn avoid(&self, i: usize, for_: Duration) {
        if !for_.is_zero() {
            let until = self.now_ms() + u64::try_from(for_.as_millis()).unwrap_or(u64::MAX / 2);
            self.avoid_until[i].fetch_max(until, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `preferred`, or the next endpoint not avoided now (`preferred` when all are).
    fn pick(&self, preferred: usize) -> usize {
        let now = self.now_ms();
        let n = self.kvs.len();
        (0..n)
            .map(|k| (preferred + k) % n)
            .find(|&i| self.avoid_until[i].load(std::sync::atomic::Ordering::Relaxed) <= now)
            .unwrap_or(preferred)
    }
}

/// Polls one endpoint's Status until stopped.
async fn watch_leader(
    mut maint: MaintenanceClient,
    every: Duration,
    leaders: Arc<Mutex<LeaderTracker>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let answer = tokio::time::timeout(every * 3, maint.status()).await;
        let mut l = leaders.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(Ok(s)) => {
                l.status_ok += 1;
                l.observe(s.raft_term(), s.leader());
            }
            _ => l.status_failed += 1,
        }
    }
}

impl LoadReport {
    /// The columns of [`LoadReport::table_row`].
    pub const TABLE_HEADER: &'static str = "| writes ok | failed | retried | not sent (bound) | p50 | p99 | max | leader changes | term advance |";

    /// One Markdown table row fragment (no leading tool columns).
    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.ok,
            self.failed,
            self.retried,
            self.missed,
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.leader_changes,
            self.term_advance
        )
    }
}

/// A duration in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} s at {}/s: sent {} (not sent {}), ok {}, failed {}, retried {}; latency p50 {} p99 {} max {}; leader changes {}, term +{}; status polls {} ok / {} failed",
            self.duration.as_secs_f64(),
            self.target_rate,
            self.sent,
            self.missed,
            self.ok,
            self.failed,
            self.retried,
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.leader_changes,
            self.term_advance,
            self.status_ok,
            self.status_failed
        )?;
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

/// One member's database as Maintenance.Status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDb {
    pub endpoint: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
}

impl fmt::Display for MemberDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dbSize {:.0} MB, in use {:.0} MB",
            self.endpoint,
            self.db_size as f64 / 1e6,
            self.db_size_in_use as f64 / 1e6
        )
    }
}

/// Every member's dbSize and dbSizeInUse.
pub async fn db_sizes(endpoints: &[String], tls: Option<&TlsFiles>) -> anyhow::Result<Vec<MemberDb>> {
    let mut out = Vec::new();
    for url in endpoints {
        let mut m = client(url, tls).await?.maintenance_client();
        let s = tokio::time::timeout(Duration::from_secs(5), m.status())
            .await
            .with_context(|| format!("{url}: Status timed out"))?
            .with_context(|| format!("{url}: Status"))?;
        out.push(MemberDb {
            endpoint: url.clone(),
            db_size: s.db_size(),
            db_size_in_use: s.raft_used_db_size(),
        });
    }
    Ok(out)
}

/// Makes every member's database fragmented: writes `megabytes` MB of
/// `value_size`-byte values (keys `/bench/frag/keep/<i>` for one in ten,
/// `/bench/frag/drop/<i>` for the rest, the same keys every time so repeated
/// calls do not add live data), deletes the `drop` ones, compacts (physical)
/// at the newest revision and waits until every member has applied the
/// compaction (dbSizeInUse below half of dbSize, at most 60 s). dbSize stays
/// at least what was written; dbSizeInUse is about a tenth. etcd's default
/// 2 GiB quota applies (the harness sets none); keep `value_size` under
/// etcd's 1.5 MiB request limit.
pub async fn fragment(
    endpoints: &[String],
    tls: Option<&TlsFiles>,
    megabytes: usize,
    value_size: usize,
) -> anyhow::Result<Vec<MemberDb>> {
    fragment_keeping(endpoints, tls, megabytes, value_size, 10).await
}

/// [`fragment`], keeping 1 in `keep_every` values (so about 1/`keep_every`
/// of the database stays in use: what a defragmentation copies).
pub async fn fragment_keeping(
    endpoints: &[String],
    tls: Option<&TlsFiles>,
    megabytes: usize,
    value_size: usize,
    keep_every: usize,
) -> anyhow::Result<Vec<MemberDb>> {
    anyhow::ensure!(keep_every > 0, "keep_every must be above 0");
    anyhow::ensure!(
        value_size > 0 && value_size <= 1 << 20,
        "value_size must be 1 byte to 1 MiB"
    );
    let count = (megabytes * 1_000_000).div_ceil(value_size);
    let options = tls.map(crate::etcd_tls_options).transpose()?;
    let client = Client::connect(endpoints, options).await.context("etcd client")?;
    let value = Arc::new(vec![b'f'; value_size]);
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let key = if i % keep_every == 0 {
            format!("/bench/frag/keep/{i}")
        } else {
            format!("/bench/frag/drop/{i}")
        };
        let (mut kv, value) = (client.kv_client(), value.clone());
        tasks.spawn(async move { kv.put(key, value.to_vec(), None).await.map(|_| ()) });
        if tasks.len() >= 16 {
            tasks
                .join_next()
                .await
                .context("task")?
                .context("join")?
                .context("put")?;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("join")?.context("put")?;
    }
    let mut kv = client.kv_client();
    let deleted = kv
        .delete("/bench/frag/drop/", Some(DeleteOptions::new().with_prefix()))
        .await
        .context("delete")?;
    let revision = deleted
        .header()
        .map(|h| h.revision())
        .context("no header in the delete response")?;
    kv.compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .context("compact")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // bbolt frees the compacted pages only when a later write
        // transaction commits: give the members one.
        kv.put("/bench/frag/tick", "x", None).await.context("put")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sizes = db_sizes(endpoints, tls).await?;
        let freed =
            |m: &MemberDb| (m.db_size_in_use as f64) < m.db_size as f64 * (1.0 / keep_every as f64 + 0.25);
        if sizes.iter().all(freed) || Instant::now() > deadline {
            return Ok(sizes);
        }
    }
}

/// A runtime of the test's own for the load generator and etcd clients (two
/// workers): the load keeps writing while the test thread waits for the CLI.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
        let s = LatencySummary::from_micros(vec![3000, 1000, 2000]);
        assert_eq!(s.count, 3);
        assert_eq!(s.p50, Duration::from_millis(2));
        assert_eq!(s.p99, Duration::from_millis(3));
        assert_eq!(s.max, Duration::from_millis(3));
    }

    #[test]
    fn leader_tracker_counts_changes_not_stale_reports() {
        let mut t = LeaderTracker::default();
        t.observe(5, 0);
        assert_eq!(t.leader(), 0);
        t.observe(5, 11);
        t.observe(5, 11);
        assert_eq!((t.changes, t.term_advance()), (0, 0));
        // A new leader at a higher term.
        t.observe(6, 22);
        // A lagging member still naming the old leader: not a change back.
        t.observe(5, 11);
        assert_eq!((t.changes, t.leader()), (1, 22));
        // An election the same leader won again: term moves, leader does not.
        t.observe(8, 22);
        assert_eq!((t.changes, t.term_advance()), (1, 3));
        t.observe(9, 11);
        assert_eq!(t.changes, 2);
    }

    #[test]
    fn totals_keep_first_errors_and_count_retries() {
        let mut w = WriteTotals::default();
        for i in 0..8 {
            w.record(&Err(format!("e{i}")), 3);
        }
        w.record(&Ok(Duration::from_millis(4)), 1);
        assert_eq!((w.ok, w.failed, w.retried), (1, 8, 16));
        assert_eq!(w.errors, vec!["e0", "e1", "e2", "e3", "e4"]);
        assert_eq!(w.latencies_us, vec![4000]);
    }

    #[test]
    fn report_formatting() {
        let r = LoadReport {
            duration: Duration::from_millis(30_000),
            target_rate: 200,
            sent: 5990,
            missed: 10,
            ok: 5988,
            failed: 2,
            retried: 7,
            errors: vec!["http://a: deadline".into()],
            latency: LatencySummary {
                count: 5988,
                p50: Duration::from_micros(2500),
                p99: Duration::from_millis(40),
                max: Duration::from_millis(1200),
            },
            leader_changes: 1,
            term_advance: 1,
            status_ok: 900,
            status_failed: 3,
        };
        assert_eq!(
            r.table_row(),
            "| 5988 | 2 | 7 | 10 | 2.5 ms | 40.0 ms | 1200.0 ms | 1 | 1 |"
        );
        assert_eq!(
            r.table_row().matches('|').count(),
            LoadReport::TABLE_HEADER.matches('|').count()
        );
        let text = r.to_string();
        assert!(
            text.starts_with("30.0 s at 200/s: sent 5990 (not sent 10), ok 5988, failed 2"),
            "{text}"
        );
        assert!(text.ends_with("\n  error: http://a: deadline"), "{text}");
    }

    #[tokio::test]
    async fn eject_avoids_a_failed_endpoint_for_a_while() {
        let mut kvs = Vec::new();
        for url in ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"] {
            kvs.push((
                url.to_string(),
                client(url, None).await.expect("lazy client").kv_client(),
            ));
        }
        let eps = Endpoints::new(kvs);
        assert_eq!(eps.pick(1), 1);
        eps.avoid(1, Duration::ZERO);
        assert_eq!(eps.pick(1), 1, "zero: plain round-robin");
        eps.avoid(1, Duration::from_secs(60));
        assert_eq!(eps.pick(1), 2);
        eps.avoid(2, Duration::from_secs(60));
        assert_eq!(eps.pick(1), 0);
        eps.avoid(0, Duration::from_secs(60));
        assert_eq!(eps.pick(1), 1, "all avoided: the preferred one");
    }

    #[test]
    fn retryable_errors() {
        let status = |code| etcd_client::Error::GRpcStatus(tonic::Status::new(code, "x"));
        assert!(retryable(&status(tonic::Code::Unavailable)));
        assert!(retryable(&status(tonic::Code::DeadlineExceeded)));
        assert!(!retryable(&status(tonic::Code::InvalidArgument)));
        assert!(!retryable(&status(tonic::Code::Unknown)));
        assert!(retryable(&etcd_client::Error::GRpcStatus(
            tonic::Status::unknown("raft proposal dropped")
        )));
        assert!(retryable(&etcd_client::Error::GRpcStatus(
            tonic::Status::unknown("raft: stopped")
        )));
        assert!(retryable(&etcd_client::Error::GRpcStatus(
            tonic::Status::unknown("transport error")
        )));
        assert!(retryable(&etcd_client::Error::GRpcStatus(
            tonic::Status::unknown(
                "protocol error: missing grpc-status trailer, stream was terminated without a final status"
            )
        )));
        assert!(retryable(&etcd_client::Error::GRpcStatus(
            tonic::Status::internal("h2 protocol error: error reading a body from connection")
        )));
        assert!(!retryable(&status(tonic::Code::Internal)));
    }
}
