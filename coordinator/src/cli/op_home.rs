//! `etcdops op resume|abort|prune` when the journal is the home etcd's
//! (`[home] journal = "home"`, no `--journal`): the serve leader alone writes
//! that journal (every write guarded by its election key), so the command
//! checks the operation, puts a request for the leader
//! ([`journal::OpRequest`]), waits until the leader takes it (`--wait`; a
//! request nobody took is withdrawn: nothing changed), and then shows what
//! became of the operation. The leader's side is `serve::requests`.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;

use super::op::{OpPruneArgs, OpPruneReport, prunable_now, render_prune};
use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::fleet::home::HomeEtcd;
use crate::journal::{self, EtcdStore, Journal, OpRequest, OpState, OperationRecord, RequestRecord};
use crate::output::ops;

/// How often the request and the record are looked at while waiting.
const POLL: Duration = Duration::from_millis(250);

/// `--wait` of the commands that ask the serve leader.
#[derive(Debug, Clone, Args)]
pub struct LeaderWait {
    /// With the home journal: how long to wait for the serve leader to take the request (it
    /// is withdrawn after that, nothing changed), and then for the operation to move.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse)]
    pub wait: Duration,
}

/// Why a request to the leader was not made or not taken.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "operation {operation} is running under the serve leader ({holder}); it carries on by itself (a new \
         leader resumes it too), stopping at the first unsafe state; `etcdops op show {operation}` follows it"
    )]
    Running { operation: String, holder: String },
    #[error("operation {operation} is {state}: nothing to {action}")]
    Ended {
        operation: String,
        state: String,
        action: &'static str,
    },
    #[error(
        "a request to {action} operation {operation} already waits for the serve leader in {journal}; \
         wait for it (`etcdops op show {operation}`)"
    )]
    AlreadyAsked {
        operation: String,
        action: &'static str,
        journal: String,
    },
    #[error(
        "no serve leader took the request to {action} {what} within {} s; it was withdrawn and nothing changed. \
         Is `etcdops serve` with [ha] running against the home etcd {journal}? (its /metrics say \
         etcdops_serve_leader 1 on the leader)",
        wait.as_secs()
    )]
    NotTaken {
        action: &'static str,
        what: String,
        journal: String,
        wait: Duration,
    },
}

/// The home journal, read-only (requests are the one thing it may put).
fn open(home: &HomeEtcd) -> anyhow::Result<Journal> {
    Ok(Journal::etcd(EtcdStore::connect(home, None)?))
}

fn store(journal: &Journal) -> anyhow::Result<&EtcdStore> {
    journal
        .home()
        .ok_or_else(|| anyhow::anyhow!("{} is not the home etcd's journal", journal.path().display()))
}

/// Puts `request` and waits until the leader takes it; withdraws it when no
/// leader did within `wait`.
fn ask(
    journal: &Journal,
    request: OpRequest,
    action: &'static str,
    what: &str,
    operator: Option<etcdops_certs::CertDetails>,
    wait: Duration,
) -> anyhow::Result<()> {
    let store = store(journal)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let record = RequestRecord {
        id: request.id(now),
        request,
        by: journal::holder(),
        operator,
        at_unix: now,
    };
    let location = journal.path().display().to_string();
    if !store.ask(&record)? {
        return Err(RequestError::AlreadyAsked {
            operation: what.to_string(),
            action,
            journal: location,
        }
        .into());
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if !store.waiting(&record.id)? {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    if store.withdraw(&record.id)? {
        return Err(RequestError::NotTaken {
            action,
            what: what.to_string(),
            journal: location,
            wait,
        }
        .into());
    }
    // Taken between the last look and the withdrawal.
    Ok(())
}

/// The record once the leader acted on it (its state moved, or it noted a
/// refusal in its error), or as it is when `wait` ends.
fn after(
    journal: &Journal,
    before: &OperationRecord,
    wait: Duration,
) -> anyhow::Result<Option<OperationRecord>> {
    let deadline = Instant::now() + wait;
    loop {
        let now = journal.get(&before.id)?;
        let moved = match &now {
            None => true,
            // Not the update time: the leader writes the holder before it runs it.
            Some(r) => r.state != before.state || r.error != before.error,
        };
        if moved || Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(POLL);
    }
}

/// Refuses what the leader would not do to `record`.
fn check(record: &OperationRecord, action: &'static str) -> Result<(), RequestError> {
    match record.state {
        OpState::Running => Err(RequestError::Running {
            operation: record.id.clone(),
            holder: record.holder.clone(),
        }),
        OpState::Paused | OpState::Failed => Ok(()),
        state => Err(RequestError::Ended {
            operation: record.id.clone(),
            state: state.as_str().to_string(),
            action,
        }),
    }
}

/// What a resume or an abort the leader took came to.
fn report(
    global: &GlobalArgs,
    out: &mut dyn Write,
    record: Option<OperationRecord>,
    id: &str,
    wanted: &[OpState],
) -> anyhow::Result<ExitStatus> {
    let Some(record) = record else {
        anyhow::bail!("operation {id} is no longer in the home journal");
    };
    emit(out, global.write_out, &record, ops::render_show)?;
    Ok(if wanted.contains(&record.state) {
        ExitStatus::Ok
    } else {
        ExitStatus::Failed
    })
}

/// Asks the leader to `action` operation `id` (an ID or a unique prefix)
/// and waits: the record before, and as the leader left it.
async fn ask_about(
    home: HomeEtcd,
    id: String,
    action: &'static str,
    request: fn(String) -> OpRequest,
    operator: Option<etcdops_certs::CertDetails>,
    wait: Duration,
) -> anyhow::Result<(OperationRecord, Option<OperationRecord>)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let journal = open(&home)?;
        let record = journal.find(&id)?;
        check(&record, action)?;
        ask(
            &journal,
            request(record.id.clone()),
            action,
            &record.id,
            operator,
            wait,
        )?;
        let now = after(&journal, &record, wait)?;
        Ok((record, now))
    })
    .await?
}

/// `op resume ID` with the home journal: the leader carries the operation on.
pub(crate) async fn resume(
    global: &GlobalArgs,
    home: HomeEtcd,
    id: String,
    operator: Option<etcdops_certs::CertDetails>,
    wait: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let request = |operation| OpRequest::Resume { operation };
    let (record, now) = ask_about(home, id, "resume", request, operator, wait).await?;
    if let Some(now) = &now
        && now.state == record.state
    {
        eprintln!(
            "the serve leader took the request but did not resume operation {}: {}",
            record.id,
            now.error.as_deref().unwrap_or("see the serve leader's log")
        );
    }
    let running = [OpState::Running, OpState::Succeeded];
    report(global, out, now, &record.id, &running)
}

/// `op abort ID` with the home journal: the leader frees the fence and marks it aborted.
pub(crate) async fn abort(
    global: &GlobalArgs,
    home: HomeEtcd,
    id: String,
    operator: Option<etcdops_certs::CertDetails>,
    wait: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let request = |operation| OpRequest::Abort { operation };
    let (record, now) = ask_about(home, id, "abort", request, operator, wait).await?;
    if let Some(r) = &now
        && let Some(left) = super::op_control::restore_leftovers(r)
    {
        eprintln!("{left}");
    }
    report(global, out, now, &record.id, &[OpState::Aborted])
}

/// `op prune` with the home journal: the leader deletes the ended operations chosen here.
pub(crate) async fn prune(
    global: &GlobalArgs,
    home: HomeEtcd,
    args: &OpPruneArgs,
    operator: Option<etcdops_certs::CertDetails>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let (prune, cluster) = (args.clone(), global.cluster.clone());
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<OpPruneReport> {
        let journal = open(&home)?;
        let ids = prunable_now(&journal.list()?, cluster.as_deref(), &prune);
        let mut deleted = ids.clone();
        if !prune.dry_run && !ids.is_empty() {
            let what = format!("{} operation(s)", ids.len());
            let request = OpRequest::Prune {
                operations: ids.clone(),
            };
            ask(&journal, request, "prune", &what, operator, prune.wait.wait)?;
            // Taken; the leader deletes those still ended when it looks.
            let deadline = Instant::now() + prune.wait.wait;
            loop {
                deleted = Vec::new();
                for id in &ids {
                    if journal.get(id)?.is_none() {
                        deleted.push(id.clone());
                    }
                }
                if deleted.len() == ids.len() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(OpPruneReport {
            journal: journal.path().to_path_buf(),
            dry_run: prune.dry_run,
            deleted,
        })
    })
    .await??;
    emit(out, global.write_out, &report, render_prune)?;
    Ok(ExitStatus::Ok)
}
