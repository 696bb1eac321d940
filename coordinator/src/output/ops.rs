//! `etcdops op list|show`: the operation journal's records as tables. JSON is the records as they are.
//! `op show` names the snapshot an operation took first (or will take), so a user can find it.

use time::OffsetDateTime;
use time::macros::format_description;

use crate::journal::{OperationRecord, StepRecord};
use crate::output::table::{self, NONE};

const LIST_HEADER: [&str; 8] = [
    "ID",
    "KIND",
    "CLUSTER",
    "STATE",
    "STEPS",
    "STARTED (UTC)",
    "UPDATED",
    "HOLDER",
];

const STEP_HEADER: [&str; 6] = ["#", "STEP", "STATE", "ATTEMPTS", "TOOK", "DETAIL"];

/// `op list`: one row per operation (in the order given, newest first from the journal), then a
/// count line; `no operations` when there are none.
pub fn render_list(ops: &[OperationRecord]) -> String {
    if ops.is_empty() {
        return "no operations\n".to_string();
    }
    let rows = ops
        .iter()
        .map(|op| {
            vec![
                op.id.clone(),
                op.kind.to_string(),
                op.cluster.clone(),
                op.state.to_string(),
                format!("{}/{}", op.steps_complete(), op.steps.len()),
                format_time(op.created_at_unix),
                format_time(op.updated_at_unix),
                op.holder.clone(),
            ]
        })
        .collect();
    let running = ops.iter().filter(|op| !op.state.is_final()).count();
    let summary = format!(
        "{} operation{}, {running} running",
        ops.len(),
        if ops.len() == 1 { "" } else { "s" }
    );
    table::report(&LIST_HEADER, rows, &summary, [])
}

/// `op show`: the operation's header lines, its steps as a table, and where a resume would start.
pub fn render_show(op: &OperationRecord) -> String {
    // The operation's own data without its kind (shown on its own line).
    let data = match serde_json::to_value(&op.operation) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("kind");
            if map.is_empty() {
                NONE.to_string()
            } else {
                serde_json::Value::Object(map).to_string()
            }
        }
        _ => NONE.to_string(),
    };
    let options = serde_json::to_string(&op.options).unwrap_or_else(|_| NONE.to_string());
    let mut lines = vec![
        ("operation", op.id.clone()),
        ("kind", op.kind.to_string()),
        ("cluster", op.cluster.clone()),
        ("state", op.state.to_string()),
        ("holder", op.holder.clone()),
        ("epoch", op.epoch.to_string()),
        ("fleet", op.fleet.display().to_string()),
        ("data", data),
    ];
    // The certificate it runs with (the journal's verified "who", beside `holder`).
    if let Some(c) = &op.operator {
        let at = lines
            .iter()
            .position(|(k, _)| *k == "holder")
            .map_or(lines.len(), |i| i + 1);
        lines.insert(
            at,
            (
                "cert",
                format!(
                    "{} serial {} sha256 {}",
                    c.subject, c.serial, c.fingerprint_sha256
                ),
            ),
        );
    }
    // The traces its steps ran in (with an OTLP exporter: find them in the
    // tracing backend and in the agents' logs).
    let mut traces: Vec<&str> = Vec::new();
    for id in op.steps.iter().filter_map(|s| s.trace_id.as_deref()) {
        if !traces.contains(&id) {
            traces.push(id);
        }
    }
    if !traces.is_empty() {
        lines.push(("trace", traces.join(" ")));
    }
    if let Some(snapshot) = snapshot_line(op) {
        lines.push(("snapshot", snapshot));
    }
    lines.extend([
        ("options", options),
        ("started", format!("{} UTC", format_time(op.created_at_unix))),
        ("updated", format!("{} UTC", format_time(op.updated_at_unix))),
        ("error", op.error.clone().unwrap_or_else(|| NONE.to_string())),
    ]);
    let mut text = String::new();
    for (label, value) in lines {
        text.push_str(&format!("{:<10} {value}\n", format!("{label}:")));
    }
    if op.steps.is_empty() {
        text.push_str("no steps\n");
        return text;
    }
    let mut t = table::new_table(&STEP_HEADER);
    for (n, step) in op.steps.iter().enumerate() {
        t.add_row(vec![
            (n + 1).to_string(),
            step.description.clone(),
            step.state.to_string(),
            step.attempts.to_string(),
            took(step),
            step.detail.clone().unwrap_or_else(|| NONE.to_string()),
        ]);
    }
    text.push_str(&table::render(&t));
    let mut summary = format!("steps: {} of {} complete", op.steps_complete(), op.steps.len());
    if let Some(next) = op.next_step().filter(|_| !op.state.is_final()) {
        summary.push_str(&format!(
            "; a resume starts at step {} ({})",
            next.description, next.id
        ));
    }
    text.push_str(&summary);
    text.push('\n');
    text
}

/// Where the operation's snapshot is: saved (its path or URL), still to be
/// taken, or none asked for; `None` for kinds that take no snapshot.
fn snapshot_line(op: &OperationRecord) -> Option<String> {
    if let Some(recover) = op.operation.recover() {
        return Some(match &recover.snapshot {
            Some(path) => path.display().to_string(),
            None => format!("not taken yet (into {})", recover.snapshot_dir.display()),
        });
    }
    let pre = op.operation.pre_snapshot()?;
    Some(match (&pre.saved, &pre.to) {
        (Some(saved), _) => format!(
            "{} (revision {}, {} bytes, from {}; sidecar {})",
            saved.location, saved.revision, saved.size, saved.member, saved.sidecar
        ),
        (None, Some(to)) => format!("not taken yet (into {to})"),
        (None, None) => "none (--no-snapshot, or started before etcdops took one)".to_string(),
    })
}

/// A Unix time as `2026-11-25 18:30:00` (UTC).
fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| NONE.to_string())
}

/// How long the step's latest attempt took, once it has finished: `45s`, `2m05s`, `1h02m`.
fn took(step: &StepRecord) -> String {
    match (step.started_at_unix, step.finished_at_unix) {
        (Some(start), Some(end)) if end >= start => format_secs(end - start),
        _ => NONE.to_string(),
    }
}

fn format_secs(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::journal::{OpState, StepState};

    fn op() -> OperationRecord {
        let mut steps = vec![
            StepRecord::pending("defrag:etcd1", "defragment etcd1"),
            StepRecord::pending("defrag:etcd2", "defragment etcd2"),
            StepRecord::pending("defrag:etcd3", "defragment etcd3"),
        ];
        steps[0].state = StepState::Done;
        steps[0].attempts = 1;
        steps[0].started_at_unix = Some(1_795_631_400);
        steps[0].finished_at_unix = Some(1_795_631_403);
        steps[0].detail = Some("db 251 MB -> 12 MB in 3.1 s".into());
        steps[1].state = StepState::Running;
        steps[1].attempts = 2;
        steps[1].started_at_unix = Some(1_795_631_530);
        OperationRecord {
            id: "defrag-20261125T183000Z-3f9a".into(),
            kind: crate::plan::planner::OpKind::Defrag,
            cluster: "prod-a".into(),
            fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
            operation: crate::plan::operation::Operation::Defrag {
                rule: Some("dbSize > 100 * MB".into()),
                compact: false,
                members: Vec::new(),
            },
            options: Default::default(),
            holder: "alice@ops1 (pid 4242)".into(),
            operator: None,
            epoch: 7,
            state: OpState::Running,
            created_at_unix: 1_795_631_400,
            updated_at_unix: 1_795_631_530,
            error: None,
            steps,
        }
    }

    #[test]
    fn lists_operations_as_a_table() {
        let mut done = op();
        done.id = "restart-20261125T170000Z-0b12".into();
        done.kind = crate::plan::planner::OpKind::Restart;
        done.operation = crate::plan::operation::Operation::Restart {
            members: Vec::new(),
            force: false,
            snapshot: Default::default(),
        };
        done.state = OpState::Succeeded;
        done.steps.truncate(1);
        let expected = "\
+-------------------------------+---------+---------+-----------+-------+---------------------+---------------------+-----------------------+
| ID                            | KIND    | CLUSTER | STATE     | STEPS | STARTED (UTC)       | UPDATED             | HOLDER                |
+-------------------------------+---------+---------+-----------+-------+---------------------+---------------------+-----------------------+
| defrag-20261125T183000Z-3f9a  | defrag  | prod-a  | running   | 1/3   | 2026-11-25 18:30:00 | 2026-11-25 18:32:10 | alice@ops1 (pid 4242) |
| restart-20261125T170000Z-0b12 | restart | prod-a  | succeeded | 1/1   | 2026-11-25 18:30:00 | 2026-11-25 18:32:10 | alice@ops1 (pid 4242) |
+-------------------------------+---------+---------+-----------+-------+---------------------+---------------------+-----------------------+
2 operations, 1 running
";
        assert_eq!(render_list(&[op(), done]), expected);
        assert_eq!(render_list(&[]), "no operations\n");
    }

    #[test]
    fn shows_an_operation_and_its_steps() {
        let expected = "\
operation: defrag-20261125T183000Z-3f9a
kind:      defrag
cluster:   prod-a
state:     running
holder:    alice@ops1 (pid 4242)
epoch:     7
fleet:     /etc/etcdops/fleet.toml
data:      {\"compact\":false,\"members\":[],\"rule\":\"dbSize > 100 * MB\"}
options:   {\"step_timeout_secs\":null,\"ignore_slow_disk\":false,\"skip_hashkv_check\":false}
started:   2026-11-25 18:30:00 UTC
updated:   2026-11-25 18:32:10 UTC
error:     -
+---+------------------+---------+----------+------+-----------------------------+
| # | STEP             | STATE   | ATTEMPTS | TOOK | DETAIL                      |
+---+------------------+---------+----------+------+-----------------------------+
| 1 | defragment etcd1 | done    | 1        | 3s   | db 251 MB -> 12 MB in 3.1 s |
| 2 | defragment etcd2 | running | 2        | -    | -                           |
| 3 | defragment etcd3 | pending | 0        | -    | -                           |
+---+------------------+---------+----------+------+-----------------------------+
steps: 1 of 3 complete; a resume starts at step defragment etcd2 (defrag:etcd2)
";
        assert_eq!(render_show(&op()), expected);

        let mut failed = op();
        failed.state = OpState::Failed;
        failed.error = Some("defragment etcd2: agent unreachable".into());
        let text = render_show(&failed);
        assert!(
            text.contains("error:     defragment etcd2: agent unreachable\n"),
            "{text}"
        );
        assert!(text.ends_with("steps: 1 of 3 complete\n"), "{text}");

        // The traces of its steps, each once.
        let mut traced = op();
        traced.steps[0].trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        traced.steps[1].trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        let text = render_show(&traced);
        assert!(
            text.contains("\ntrace:     4bf92f3577b34da6a3ce929d0e0e4736\noptions:"),
            "{text}"
        );
    }

    #[test]
    fn shows_where_the_snapshot_is() {
        use crate::plan::operation::{Operation, PreSnapshot, SavedSnapshot};
        use crate::plan::step::SnapshotTo;
        let mut restart = op();
        restart.kind = crate::plan::planner::OpKind::Restart;
        restart.operation = Operation::Restart {
            members: Vec::new(),
            force: false,
            snapshot: PreSnapshot::to(Some(SnapshotTo::Backup {
                url: "s3://b/prod".into(),
            })),
        };
        let text = render_show(&restart);
        assert!(
            text.contains("snapshot:  not taken yet (into the backup target s3://b/prod)\n"),
            "{text}"
        );
        if let Some(pre) = restart.operation.pre_snapshot_mut() {
            pre.saved = Some(SavedSnapshot {
                location: "s3://b/prod/prod-20261201T000000Z.db".into(),
                sidecar: "s3://b/prod/prod-20261201T000000Z.db.json".into(),
                member: "etcd2".into(),
                revision: 42,
                size: 20_480,
                sha256: "0".repeat(64),
            });
        }
        let text = render_show(&restart);
        assert!(
            text.contains(
                "snapshot:  s3://b/prod/prod-20261201T000000Z.db (revision 42, 20480 bytes, from etcd2;"
            ),
            "{text}"
        );
        restart.operation = restart.operation.with_snapshot(None);
        assert!(render_show(&restart).contains("snapshot:  none (--no-snapshot"));
        assert!(!render_show(&op()).contains("snapshot:"), "a defrag takes none");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(59), "59s");
        assert_eq!(format_secs(125), "2m05s");
        assert_eq!(format_secs(3_720), "1h02m");
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
    }
}
