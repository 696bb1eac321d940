//! The jobs `etcdops serve` runs, one function per kind, all of the shape
//! `async fn run(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError>`.
//!
//! Jobs that change something (backup, compact, defrag; restore-drill and
//! housekeeping once wired) run as journaled operations through the one
//! executor (`exec::Executor`), so each takes the cluster's fence like any
//! other operation and shows in `etcdops op list/show`. A cluster held by
//! another operation (a person's `etcdops restart`) is waited for up to
//! `fence_wait`; then the run is journaled as `failed` with the error
//! `refused: ...` naming the holder, and never runs beside it
//! ([`run_operation`]). The read-only watches (health, cert-expiry) take no
//! fence (they change nothing) and are recorded in metrics and logs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::config::{BackupParams, JobKind, JobParams};
use crate::agents::Agents;
use crate::backup::{self, BackupEnv, Setup, Target};
use crate::exec::fence::FenceError;
use crate::exec::{ExecError, Executor, Progress};
use crate::fleet::{Cluster, Fleet};
use crate::journal::{self, Journal, OpState, OperationRecord};
use crate::plan::operation::{Operation, PreSnapshot, RunOptions};
use crate::plan::planner::{self, DefragOptions, Plan, Step};
use crate::plan::safety::{self, Finding, Tolerate};
use crate::plan::step::SnapshotTo;
use crate::plan::view::ClusterView;

/// How often a job waiting for a held cluster looks again.
const FENCE_POLL: Duration = Duration::from_secs(2);

/// What every job run works with.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The fleet as loaded at start-up.
    pub fleet: Fleet,
    /// The fleet file (membership steps and the journal record name it).
    pub fleet_path: PathBuf,
    /// Agents reached with the fleet's coordinator identity.
    pub agents: Agents,
    /// The journal every run is recorded in.
    pub journal: Journal,
    /// How long a run waits for a cluster another operation holds.
    pub fence_wait: Duration,
    /// The job's name (`cluster/NAME` in logs, `serve_job` in metrics).
    pub job: String,
    /// The job's parameters.
    pub params: JobParams,
    /// Set at shutdown: executors stop cleanly before their next step.
    pub shutdown: Arc<AtomicBool>,
    /// With `[ha]`: the leader's election term, the fence epochs' high bits.
    pub term: Option<u64>,
}

/// A certificate as seen by the cert-expiry job: every certificate an agent
/// reports (GetCertificates), files and served ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSeen {
    pub member: String,
    /// Which certificate: `etcd-server`, `etcd-peer`, `etcd-trusted-ca`,
    /// `agent`, ...; `<cert>-served` for what a port serves.
    pub cert: String,
    /// When it expires, Unix seconds.
    pub not_after_unix: i64,
}

/// A run that ended well.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    /// One line for logs.
    pub summary: String,
    /// The journaled operation, when the run was one.
    pub operation: Option<String>,
    /// Figures the run measured, exported as gauges (a drill's revision,
    /// key count, ...: `etcdops_serve_drill_figure{cluster,figure}` for drills).
    pub figures: BTreeMap<String, f64>,
    /// Certificates seen (cert-expiry).
    pub certs: Vec<CertSeen>,
}

/// A run that did not end well. Never stops serve or other jobs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another operation held the cluster for longer than `fence_wait`.
    #[error("refused: {message} (journaled as {operation})")]
    Refused { message: String, operation: String },
    /// The cluster was not safe to operate on; nothing was changed.
    #[error("{0}")]
    Exec(#[from] ExecError),
    #[error("no plan: {0}")]
    Plan(#[from] planner::PlanError),
    #[error("{0}")]
    Backup(#[from] backup::BackupError),
    #[error("{0}")]
    Journal(#[from] journal::JournalError),
    /// A watch found problems (health, cert-expiry).
    #[error("{}", findings.join("; "))]
    Findings {
        findings: Vec<String>,
        outcome: Box<JobOutcome>,
    },
    #[error("cluster {cluster}: {message}")]
    Cluster { cluster: String, message: String },
}

impl JobError {
    /// The outcome a failed watch still carries (certificates seen, figures).
    pub fn outcome(&self) -> Option<&JobOutcome> {
        match self {
            JobError::Findings { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// A refusal because another operation held the cluster.
    pub fn is_refused(&self) -> bool {
        matches!(self, JobError::Refused { .. })
    }
}

impl JobContext {
    fn cluster(&self, name: &str) -> Result<Cluster, JobError> {
        self.fleet
            .clusters
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| JobError::Cluster {
                cluster: name.to_string(),
                message: "not in the fleet file".into(),
            })
    }

    async fn observe(&self, cluster: &Cluster) -> ClusterView {
        crate::observe::observe(&self.agents, &cluster.name, &cluster.members).await
    }
}

/// Runs one job of `kind` on `cluster`.
pub async fn run(kind: JobKind, ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    match kind {
        JobKind::Backup => run_backup(ctx, cluster).await,
        JobKind::Compact => run_compact(ctx, cluster).await,
        JobKind::Defrag => run_defrag(ctx, cluster).await,
        JobKind::Health => run_health(ctx, cluster).await,
        JobKind::CertExpiry => run_cert_expiry(ctx, cluster).await,
        JobKind::RestoreDrill => run_drill(ctx, cluster).await,
        JobKind::Housekeeping => run_housekeeping(ctx, cluster).await,
    }
}

/// Where drills work and downloads are staged: beside the journal file.
fn beside_journal(ctx: &JobContext, dir: &str) -> std::path::PathBuf {
    ctx.journal
        .path()
        .parent()
        .map_or_else(|| std::path::PathBuf::from(dir), |p| p.join(dir))
}

/// `restore-drill`: the `etcdops backup drill` code path (`drill::run`):
/// the newest verified backup restored into a throwaway etcd on this host,
/// its revision, key count and HashKV compared with the backup's sidecar
/// and the file's own figures; everything it made removed on every way out
/// (also at serve's shutdown). Journaled as a `drill` operation, no fence.
pub async fn run_drill(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let (backup, deadline) = match &ctx.params {
        JobParams::RestoreDrill { backup, deadline } => (backup.clone(), *deadline),
        _ => (None, Duration::from_secs(600)),
    };
    let setup = backup::Setup::resolve(&cluster, None)?;
    let target = backup::Target::open(
        &setup.url,
        &setup.s3,
        &backup::BackupEnv::from_process(),
        Duration::from_secs(60),
    )
    .map_err(|e| JobError::Cluster {
        cluster: cluster.name.clone(),
        message: format!("backup target {}: {e}", setup.url),
    })?;
    let request = crate::drill::DrillRequest {
        cluster: cluster.name.clone(),
        fleet: ctx.fleet_path.clone(),
        target: &target,
        backup,
        journal: &ctx.journal,
        drills_dir: beside_journal(ctx, "drills"),
        deadline,
    };
    let shutdown = ctx.shutdown.clone();
    let stop = async move {
        while !shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let report = crate::drill::run(request, stop)
        .await
        .map_err(|e| JobError::Cluster {
            cluster: cluster.name.clone(),
            message: format!("restore drill: {e}"),
        })?;
    let mut figures = BTreeMap::new();
    if let Some(r) = &report.restored {
        figures.insert("revision".to_string(), r.revision as f64);
        figures.insert("keys".to_string(), r.keys as f64);
        figures.insert("hash_kv".to_string(), f64::from(r.hash_kv));
    }
    figures.insert("took_seconds".to_string(), report.took_ms as f64 / 1000.0);
    let outcome = JobOutcome {
        summary: format!(
            "restore drill of {} {} ({})",
            report.backup,
            if report.passed { "passed" } else { "FAILED" },
            report.operation
        ),
        operation: Some(report.operation.clone()),
        figures,
        certs: Vec::new(),
    };
    if report.passed {
        Ok(outcome)
    } else {
        Err(JobError::Findings {
            findings: report.mismatches(),
            outcome: Box::new(outcome),
        })
    }
}

/// `housekeeping`: the `etcdops housekeeping` code path
/// (`exec::housekeeping::run`): journaled and fenced, kept copies pruned on
/// every member by the job's rule, never the newest nor one an unfinished
/// operation may roll back to; stale downloads removed.
pub async fn run_housekeeping(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let (keep, max_age) = match &ctx.params {
        JobParams::Housekeeping { keep, max_age } => (*keep, *max_age),
        _ => (None, None),
    };
    let request = crate::exec::housekeeping::HousekeepingRequest {
        cluster: cluster.clone(),
        fleet: ctx.fleet_path.clone(),
        keep,
        max_age,
        dry_run: false,
        downloads: beside_journal(ctx, "downloads"),
    };
    let report = crate::exec::housekeeping::run(&ctx.agents, &ctx.journal, request)
        .await
        .map_err(|e| match e {
            crate::exec::housekeeping::HousekeepingError::Fence(f) => JobError::Refused {
                message: f.to_string(),
                operation: "-".into(),
            },
            other => JobError::Cluster {
                cluster: cluster.name.clone(),
                message: format!("housekeeping: {other}"),
            },
        })?;
    let outcome = JobOutcome {
        summary: format!(
            "housekeeping removed {} bytes ({})",
            report.removed_bytes, report.operation
        ),
        operation: Some(report.operation.clone()),
        ..JobOutcome::default()
    };
    if report.ok {
        Ok(outcome)
    } else {
        Err(JobError::Findings {
            findings: vec!["not every member's agent answered: see `etcdops op show`".into()],
            outcome: Box::new(outcome),
        })
    }
}

/// `backup`: one verified snapshot into the cluster's backup target (the
/// `backup run` code path, `backup::run`, as the executor's snapshot step)
/// under the fence, then the retention policy (unless `no_prune`).
pub async fn run_backup(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let params = match &ctx.params {
        JobParams::Backup(p) => p.clone(),
        _ => BackupParams::default(),
    };
    let backup = cluster
        .backup
        .clone()
        .ok_or_else(|| backup::BackupError::NoTarget {
            cluster: cluster.name.clone(),
        })?;
    let to = SnapshotTo::Backup {
        url: backup.target.to_string(),
    };
    let plan = Plan {
        kind: planner::OpKind::Backup,
        cluster: cluster.name.clone(),
        steps: vec![Step::snapshot(&to)],
        notes: Vec::new(),
    };
    let operation = Operation::Backup {
        snapshot: PreSnapshot::to(Some(to)),
    };
    let record = run_operation(ctx, &cluster, plan, operation).await?;
    let saved = record.operation.pre_snapshot().and_then(|s| s.saved.clone());
    let mut outcome = JobOutcome {
        summary: match &saved {
            Some(s) => format!(
                "backup {} (revision {}, {} bytes, from {})",
                s.location, s.revision, s.size, s.member
            ),
            None => "backup done".into(),
        },
        operation: Some(record.id.clone()),
        ..JobOutcome::default()
    };
    if let Some(s) = &saved {
        outcome.figures.insert("revision".into(), s.revision as f64);
        outcome.figures.insert("size_bytes".into(), s.size as f64);
    }
    let setup = Setup::resolve(&cluster, None)?;
    if !params.no_prune && !setup.retention.is_empty() {
        let target = Target::open(
            &setup.url,
            &setup.s3,
            &BackupEnv::from_process(),
            ctx.agents.timeout(),
        )
        .map_err(backup::BackupError::from)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let pruned = backup::prune(&target, &cluster.name, &setup.retention, now, false).await?;
        let deleted = pruned.items.iter().filter(|i| i.deleted).count();
        let failed: Vec<String> = pruned.items.iter().filter_map(|i| i.error.clone()).collect();
        outcome
            .summary
            .push_str(&format!("; retention deleted {deleted}"));
        if !failed.is_empty() {
            return Err(JobError::Cluster {
                cluster: cluster.name.clone(),
                message: format!(
                    "{}; but retention could not delete: {}",
                    outcome.summary,
                    failed.join("; ")
                ),
            });
        }
    }
    Ok(outcome)
}

/// `compact`: keep the newest N revisions, or those of the last span.
pub async fn run_compact(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let JobParams::Compact {
        keep_revisions,
        keep_duration,
    } = ctx.params.clone()
    else {
        return Err(JobError::Cluster {
            cluster: cluster.name.clone(),
            message: "compact without keep_revisions or keep_duration".into(),
        });
    };
    let view = ctx.observe(&cluster).await;
    let revision = match (keep_revisions, keep_duration) {
        (Some(keep), _) => planner::keep_revisions(&view, keep)?,
        (None, Some(keep)) => revision_at(ctx, &cluster, &view, keep).await?,
        (None, None) => {
            return Err(JobError::Cluster {
                cluster: cluster.name.clone(),
                message: "compact without keep_revisions or keep_duration".into(),
            });
        }
    };
    let plan = planner::plan_compact(&view, revision);
    let record = run_operation(ctx, &cluster, plan, Operation::Compact { revision }).await?;
    Ok(JobOutcome {
        summary: format!("compacted to revision {revision}"),
        operation: Some(record.id),
        ..JobOutcome::default()
    })
}

/// The revision the leader's agent sampled `keep` ago (as `etcdops compact --keep-duration`).
async fn revision_at(
    ctx: &JobContext,
    cluster: &Cluster,
    view: &ClusterView,
    keep: Duration,
) -> Result<i64, JobError> {
    let fail = |message: String| JobError::Cluster {
        cluster: cluster.name.clone(),
        message,
    };
    let leader = view.leader().ok_or_else(|| fail("no member leads".into()))?;
    let member: Vec<_> = cluster
        .members
        .iter()
        .filter(|m| m.name == leader.name)
        .cloned()
        .collect();
    let at =
        OffsetDateTime::now_utc().unix_timestamp() - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2);
    let reply = ctx
        .agents
        .fan_out(&member, move |mut c| async move {
            c.revision_at(etcdops_proto::v1::RevisionAtRequest { unix_time: at })
                .await
        })
        .await
        .pop()
        .ok_or_else(|| fail(format!("no reply from {}", leader.name)))?;
    let answer = reply.result.map_err(|e| fail(e.to_string()))?;
    if !answer.found {
        return Err(fail(format!(
            "agent {} cannot tell the revision of {} ago (it samples once a minute, 8 days kept): use a shorter keep_duration",
            leader.name,
            crate::duration::format(keep)
        )));
    }
    if answer.revision <= 1 {
        return Err(fail(format!(
            "nothing to compact: the revision {} ago was {}",
            crate::duration::format(keep),
            answer.revision
        )));
    }
    Ok(answer.revision)
}

/// `defrag`: the members the rule selects, one at a time, the leader last.
pub async fn run_defrag(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let (rule_text, compact) = match &ctx.params {
        JobParams::Defrag { rule, compact } => (rule.clone(), *compact),
        _ => (None, false),
    };
    let rule = rule_text
        .as_deref()
        .map(crate::plan::rule::Rule::parse)
        .transpose()
        .map_err(|e| JobError::Cluster {
            cluster: cluster.name.clone(),
            message: format!("rule: {e}"),
        })?;
    let view = ctx.observe(&cluster).await;
    let compact_to = if compact {
        Some(view.leader().map(|l| l.revision).ok_or_else(|| {
            planner::PlanError::NoLeader(
                "compact = true needs the current revision, and no member leads".into(),
            )
        })?)
    } else {
        None
    };
    let options = DefragOptions {
        rule,
        compact_to,
        members: Vec::new(),
        step_timeout: None,
    };
    let plan = planner::plan_defrag(&view, &options)?;
    if plan.steps.is_empty() {
        return Ok(JobOutcome {
            summary: format!("nothing to do: {}", plan.notes.join("; ")),
            ..JobOutcome::default()
        });
    }
    let steps = plan.steps.len();
    let operation = Operation::Defrag {
        rule: rule_text,
        compact,
        members: Vec::new(),
    };
    let record = run_operation(ctx, &cluster, plan, operation).await?;
    Ok(JobOutcome {
        summary: format!("defragmented ({steps} step(s))"),
        operation: Some(record.id),
        ..JobOutcome::default()
    })
}

/// `health`: every agent reachable, etcd healthy (the checks `etcdops
/// health` and every step run), disks within their fsync threshold.
pub async fn run_health(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let view = ctx.observe(&cluster).await;
    let findings = safety::check(&view, Tolerate::default());
    let outcome = JobOutcome {
        summary: format!("{} member(s) healthy", view.members.len()),
        ..JobOutcome::default()
    };
    finish_watch(findings.iter().map(Finding::to_string).collect(), outcome)
}

/// `cert-expiry`: every certificate the agents report, none expiring within
/// `warn_within` (and every agent answering, or its certificates are unknown).
pub async fn run_cert_expiry(ctx: &JobContext, cluster: &str) -> Result<JobOutcome, JobError> {
    let cluster = ctx.cluster(cluster)?;
    let warn_within = match &ctx.params {
        JobParams::CertExpiry { warn_within } => *warn_within,
        _ => Duration::from_secs(30 * 24 * 3600),
    };
    let timeout_ms = ctx.agents.agent_budget_ms();
    let replies = ctx
        .agents
        .fan_out(
            &cluster.members,
            move |mut client: crate::agents::Client| async move {
                client
                    .get_certificates(etcdops_proto::v1::GetCertificatesRequest { timeout_ms })
                    .await
            },
        )
        .await;
    let mut certs = Vec::new();
    let mut findings = Vec::new();
    for reply in replies {
        match reply.result {
            Ok(answer) => {
                let (seen, unreadable) = certs_seen(&reply.member, &answer);
                certs.extend(seen);
                findings.extend(unreadable);
            }
            Err(e) => findings.push(format!("{}: certificates unknown: {e}", reply.member)),
        }
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    findings.extend(expiring(&certs, now, warn_within));
    let outcome = JobOutcome {
        summary: format!("{} certificate(s) checked", certs.len()),
        certs,
        ..JobOutcome::default()
    };
    finish_watch(findings, outcome)
}

/// The certificates one agent reports (GetCertificates): the files etcd's
/// environment names (server, peer, both trusted CAs), the agent's own and
/// its CA, and what the member and the agent serve (`<cert>-served`); and a
/// finding for each one it could not read.
pub fn certs_seen(
    member: &str,
    answer: &etcdops_proto::v1::GetCertificatesResponse,
) -> (Vec<CertSeen>, Vec<String>) {
    let mut seen = Vec::new();
    let mut unreadable = Vec::new();
    for c in &answer.certificates {
        let cert = if c.source == "served" {
            format!("{}-served", c.cert)
        } else {
            c.cert.clone()
        };
        if c.error.is_empty() {
            seen.push(CertSeen {
                member: member.to_string(),
                cert,
                not_after_unix: c.not_after_unix,
            });
        } else {
            unreadable.push(format!(
                "{member}: the {cert} certificate ({}) cannot be read: {}",
                c.location, c.error
            ));
        }
    }
    (seen, unreadable)
}

/// Findings for certificates expiring within `within` of `now` (pure).
pub fn expiring(certs: &[CertSeen], now: i64, within: Duration) -> Vec<String> {
    let horizon = now.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
    certs
        .iter()
        .filter(|c| c.not_after_unix <= horizon)
        .map(|c| {
            let when = crate::output::table::format_date(c.not_after_unix);
            if c.not_after_unix <= now {
                format!("{}: the {} certificate expired on {when}: reissue it with `etcdops certs issue`", c.member, c.cert)
            } else {
                format!(
                    "{}: the {} certificate expires on {when}, within {}: reissue it with `etcdops certs issue`",
                    c.member,
                    c.cert,
                    crate::duration::format(within)
                )
            }
        })
        .collect()
}

fn finish_watch(findings: Vec<String>, outcome: JobOutcome) -> Result<JobOutcome, JobError> {
    if findings.is_empty() {
        Ok(outcome)
    } else {
        Err(JobError::Findings {
            findings,
            outcome: Box::new(outcome),
        })
    }
}

/// Executor progress lines into the log.
#[derive(Debug)]
pub(super) struct Log {
    pub(super) job: String,
}

impl Progress for Log {
    fn line(&self, text: &str) {
        tracing::info!(job = %self.job, "{text}");
    }
}

/// Who runs serve's operations: `etcdops serve <user@host (pid N)>`.
pub fn holder() -> String {
    format!("etcdops serve {}", journal::holder())
}

fn new_record(ctx: &JobContext, cluster: &Cluster, operation: Operation) -> OperationRecord {
    let now = OffsetDateTime::now_utc();
    OperationRecord {
        id: journal::new_operation_id(operation.kind().as_str(), now),
        kind: operation.kind(),
        cluster: cluster.name.clone(),
        fleet: ctx.fleet_path.clone(),
        operation,
        options: RunOptions::default(),
        holder: holder(),
        operator: Some(ctx.agents.own_certificate().clone()),
        epoch: 0,
        state: OpState::Running,
        created_at_unix: now.unix_timestamp(),
        updated_at_unix: now.unix_timestamp(),
        error: None,
        steps: Vec::new(),
    }
}

/// Runs `plan` as a journaled, fenced operation: waits up to `fence_wait`
/// while another operation holds the cluster, then either runs it through
/// the executor (which takes the fence, checks before every step and
/// journals each) or journals the run as refused, naming the holder.
pub async fn run_operation(
    ctx: &JobContext,
    cluster: &Cluster,
    plan: Plan,
    operation: Operation,
) -> Result<OperationRecord, JobError> {
    let record = new_record(ctx, cluster, operation);
    let started = Instant::now();
    loop {
        let view = ctx.observe(cluster).await;
        match crate::exec::busy(&view, "") {
            Ok(()) => break,
            Err(held) if started.elapsed() >= ctx.fence_wait => return Err(refuse(ctx, record, &held)),
            Err(held) => {
                tracing::info!(job = %ctx.job, cluster = %cluster.name, "waiting for the cluster: {held}");
                tokio::time::sleep(FENCE_POLL).await;
            }
        }
    }
    let mut executor = Executor::for_record(
        &record,
        ctx.agents.clone(),
        cluster.clone(),
        ctx.journal.clone(),
        ctx.fleet_path.clone(),
        ctx.shutdown.clone(),
    );
    executor.progress = Box::new(Log {
        job: format!("{}/{}", cluster.name, ctx.job),
    });
    executor.term = ctx.term;
    match executor.start(&plan, record.clone(), false).await {
        Ok(done) => Ok(done),
        // Taken between our look and the executor's: refused all the same.
        Err(ExecError::Fence(held @ FenceError::Held { .. })) => Err(refuse(ctx, record, &held)),
        Err(e) => Err(e.into()),
    }
}

/// Journals a run that never started because another operation held the cluster.
fn refuse(ctx: &JobContext, mut record: OperationRecord, held: &FenceError) -> JobError {
    let message = held.to_string();
    record.state = OpState::Failed;
    record.error = Some(format!("refused: {message}"));
    let operation = record.id.clone();
    if let Err(e) = ctx.journal.create(&record) {
        tracing::warn!(job = %ctx.job, "cannot journal the refused run {operation}: {e}");
    }
    JobError::Refused { message, operation }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_expiring_soon_are_named_with_the_fix() {
        let day = 24 * 3600;
        let now = 1_800_000_000;
        let certs = vec![
            CertSeen {
                member: "etcd1".into(),
                cert: "agent".into(),
                not_after_unix: now + 400 * day,
            },
            CertSeen {
                member: "etcd2".into(),
                cert: "agent".into(),
                not_after_unix: now + 10 * day,
            },
            CertSeen {
                member: "etcd3".into(),
                cert: "agent".into(),
                not_after_unix: now - day,
            },
        ];
        let found = expiring(&certs, now, Duration::from_secs(30 * day as u64));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("etcd2: the agent certificate expires on"),
            "{found:?}"
        );
        assert!(
            found[1].contains("etcd3: the agent certificate expired"),
            "{found:?}"
        );
        assert!(found.iter().all(|f| f.contains("etcdops certs issue")));
    }

    #[test]
    fn certificates_come_from_the_agents_reply_served_ones_apart() {
        use etcdops_proto::v1::{CertificateInfo, GetCertificatesResponse};
        let info = |cert: &str, source: &str, not_after: i64, error: &str| CertificateInfo {
            cert: cert.into(),
            source: source.into(),
            location: "/etc/etcd/pki/x.crt".into(),
            not_after_unix: not_after,
            error: error.into(),
            ..Default::default()
        };
        let answer = GetCertificatesResponse {
            agent: "etcd1".into(),
            certificates: vec![
                info("etcd-server", "file", 42, ""),
                info("etcd-server", "served", 43, ""),
                info("etcd-peer-trusted-ca", "file", 0, "no such file"),
            ],
        };
        let (seen, unreadable) = certs_seen("etcd1", &answer);
        assert_eq!(
            seen,
            vec![
                CertSeen {
                    member: "etcd1".into(),
                    cert: "etcd-server".into(),
                    not_after_unix: 42
                },
                CertSeen {
                    member: "etcd1".into(),
                    cert: "etcd-server-served".into(),
                    not_after_unix: 43
                },
            ]
        );
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].contains("etcd-peer-trusted-ca") && unreadable[0].contains("no such file"));
        assert_eq!(
            certs_seen("etcd1", &GetCertificatesResponse::default()),
            (Vec::new(), Vec::new())
        );
    }
}
