//! `etcdops audit show`: the agents' audit trails (GetAudit), gathered from
//! every member of the cluster at once and merged, oldest first.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::cli::target::{AccessError, target};
use crate::cli::{GlobalArgs, emit};
use crate::duration;
use crate::exit::ExitStatus;
use crate::output::table;

/// `etcdops audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show who called what on the agents: every mutating and every refused call.
    #[command(long_about = SHOW_LONG_ABOUT, after_help = SHOW_AFTER_HELP)]
    Show(AuditShowArgs),
}

const SHOW_LONG_ABOUT: &str = "\
Show the agents' audit trails, merged and sorted by time. Every agent keeps
one record per mutating call (defragment, restart, fence, member change,
restore, disk probe, ...) and per call it refused (no certificate, a role
that may not make the call): the time, the caller's verified certificate
(subject, serial, role, SHA-256 fingerprint), the operation and fence epoch,
the arguments (never secrets; a restore's bytes summarised by size and
sha256), the outcome and the error. Reading the trail needs an operator
certificate.";

const SHOW_AFTER_HELP: &str = "\
Examples:
  etcdops audit show
  etcdops audit show --member etcd2 --since 1h
  etcdops audit show --since 2026-11-25T18:00:00Z -w json | jq '.records[] | select(.outcome == \"refused\")'

Exit codes: 0 every agent answered, 1 an agent could not be read, 2 usage or configuration error.";

/// `etcdops audit show` options.
#[derive(Debug, Clone, Args)]
pub struct AuditShowArgs {
    /// Only this member's agent (default: every member of the cluster).
    #[arg(long, value_name = "NAME")]
    pub member: Option<String>,
    /// Only records since: a span back from now (`30m`, `1h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "SPAN|TIME", value_parser = parse_since)]
    pub since: Option<i64>,
    /// At most this many records per agent (the newest).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// `--since` as Unix milliseconds.
fn parse_since(input: &str) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(input, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|e| e.to_string());
    }
    let span = duration::parse_span(input)
        .map_err(|e| format!("{e}; use a span such as 1h or 7d, or an RFC 3339 time"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let since = now.saturating_sub(span);
    i64::try_from(since.as_millis()).map_err(|e| e.to_string())
}

/// `audit show -w json`.
#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub cluster: String,
    /// Every agent's records, oldest first.
    pub records: Vec<AuditEntry>,
    /// Agents that could not be read, with why.
    pub errors: Vec<String>,
    /// Agents that had more records than --limit (the oldest left out).
    pub truncated: Vec<String>,
}

/// One record, as `-w json` prints it.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    pub time_unix_ms: i64,
    pub time: String,
    pub member: String,
    pub rpc: String,
    pub caller: Option<Caller>,
    pub cluster: String,
    pub operation_id: String,
    pub step: String,
    pub fence_epoch: u64,
    pub arguments: serde_json::Value,
    pub outcome: String,
    pub code: String,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The caller's certificate.
#[derive(Debug, Serialize)]
pub struct Caller {
    pub subject: String,
    pub serial: String,
    pub role: String,
    pub fingerprint_sha256: String,
}

fn entry(member: &str, r: pb::AuditRecord) -> AuditEntry {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    AuditEntry {
        time_unix_ms: r.time_unix_ms,
        time,
        member: member.to_string(),
        rpc: r.rpc,
        caller: r.caller.map(|c| Caller {
            subject: c.subject,
            serial: c.serial,
            role: c.role,
            fingerprint_sha256: c.fingerprint_sha256,
        }),
        cluster: r.cluster,
        operation_id: r.operation_id,
        step: r.step,
        fence_epoch: r.fence_epoch,
        arguments: serde_json::from_str(&r.arguments_json).unwrap_or(serde_json::Value::Null),
        outcome: r.outcome,
        code: r.code,
        error: Some(r.error).filter(|e| !e.is_empty()),
        duration_ms: r.duration_ms,
    }
}

pub(crate) async fn run(
    global: &GlobalArgs,
    command: &AuditCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let AuditCommand::Show(args) = command;
    let target = target(global)?;
    let members: Vec<_> = match &args.member {
        None => target.cluster.members.clone(),
        Some(name) => {
            let found: Vec<_> = target
                .cluster
                .members
                .iter()
                .filter(|m| &m.name == name)
                .cloned()
                .collect();
            if found.is_empty() {
                let names: Vec<&str> = target.cluster.members.iter().map(|m| m.name.as_str()).collect();
                return Err(AccessError::UnknownMember {
                    member: name.clone(),
                    cluster: target.cluster.name.clone(),
                    members: names.join(", "),
                }
                .into());
            }
            found
        }
    };
    let request = pb::GetAuditRequest {
        since_unix_ms: args.since.unwrap_or(0),
        limit: args.limit,
    };
    let replies = target
        .agents
        .fan_out(&members, move |mut client| async move {
            client.get_audit(request).await
        })
        .await;
    let mut report = AuditReport {
        cluster: target.cluster.name.clone(),
        records: Vec::new(),
        errors: Vec::new(),
        truncated: Vec::new(),
    };
    for reply in replies {
        match reply.result {
            Ok(response) => {
                if response.truncated {
                    report.truncated.push(reply.member.clone());
                }
                report
                    .records
                    .extend(response.records.into_iter().map(|r| entry(&reply.member, r)));
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
        .records
        .sort_by(|a, b| (a.time_unix_ms, &a.member).cmp(&(b.time_unix_ms, &b.member)));
    emit(out, global.write_out, &report, render_table)?;
    Ok(ExitStatus::from_ok(report.errors.is_empty()))
}

const HEADER: [&str; 8] = [
    "TIME",
    "MEMBER",
    "RPC",
    "CALLER",
    "OPERATION",
    "EPOCH",
    "OUTCOME",
    "ERROR",
];

fn render_table(report: &AuditReport) -> String {
    let rows = report
        .records
        .iter()
        .map(|r| {
            vec![
                r.time.clone(),
                r.member.clone(),
                r.rpc.clone(),
                r.caller.as_ref().map_or_else(
                    || "(no certificate)".to_string(),
                    |c| {
                        format!(
                            "{} [{}] {}",
                            c.subject,
                            c.role,
                            &c.fingerprint_sha256[..c.fingerprint_sha256.len().min(16)]
                        )
                    },
                ),
                if r.operation_id.is_empty() {
                    table::NONE.to_string()
                } else {
                    r.operation_id.clone()
                },
                if r.fence_epoch == 0 {
                    table::NONE.to_string()
                } else {
                    r.fence_epoch.to_string()
                },
                r.outcome.clone(),
                r.error.clone().unwrap_or_else(|| table::NONE.to_string()),
            ]
        })
        .collect();
    let summary = format!(
        "{} record(s) from cluster {}",
        report.records.len(),
        report.cluster
    );
    let errors = report.errors.iter().map(|e| ("problem", e.as_str()));
    let truncated = report
        .truncated
        .iter()
        .map(|m| ("note", if m.is_empty() { "" } else { m.as_str() }));
    let mut text = table::report(&HEADER, rows, &summary, errors);
    for (_, member) in truncated {
        text.push_str(&format!(
            "note: {member} has older records than --limit shows (use --since or a larger --limit)\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_spans_and_times() {
        assert_eq!(parse_since("2026-11-25T18:00:00Z"), Ok(1_795_629_600_000));
        let hour_ago = parse_since("1h").expect("span");
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms");
        assert!((now - hour_ago - 3_600_000).abs() < 5_000);
        assert!(parse_since("yesterday").is_err());
    }
}
