//! `etcdops check disk`: per-member fdatasync probe results from `ProbeDisk`, the verdict, and its table and JSON.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::Reply;
use crate::output::table::{self, NONE};

/// etcd's guidance for backend commit p99 (etcd FAQ, "apply entries took too long").
pub const BACKEND_COMMIT_P99_GUIDANCE: Duration = Duration::from_millis(25);

/// The whole `check disk` report; also the JSON document (`-w json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// True when every member's probe finished with its p99 within the agent's threshold.
    pub ok: bool,
    /// Members whose probe p99 is within the threshold.
    pub within_threshold: usize,
    /// Members in the fleet's cluster.
    pub total: usize,
    /// Why `ok` is false, one sentence each; empty when ok.
    pub problems: Vec<String>,
    /// Worth knowing but not deciding the verdict: etcd's own figures over
    /// etcd's guidance, etcd metrics that could not be read.
    pub notes: Vec<String>,
    /// One entry per fleet member, in fleet order.
    pub members: Vec<MemberDisk>,
}

/// One member's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The probe's p99 is within the threshold.
    Ok,
    /// The probe's p99 is over the threshold.
    Slow,
    /// No probe result: the agent did not answer, refused, or the probe failed.
    Error,
}

/// One fleet member's disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberDisk {
    /// The fleet's member name.
    pub name: String,
    /// The agent URL.
    pub agent: String,
    pub verdict: Verdict,
    /// Why there is no probe result; null when there is one.
    pub error: Option<String>,
    /// `error` without the member, agent and advice, for a table cell.
    #[serde(skip)]
    pub error_brief: Option<String>,
    /// The probe's figures; null without a result.
    pub probe: Option<Probe>,
    /// etcd's own disk figures from the member's /metrics; null without a result.
    pub etcd: Option<EtcdDisk>,
}

/// What the agent's probe measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The directory the probe wrote in (beside the data dir; removed afterwards).
    pub path: String,
    pub writes: u64,
    pub bytes: u64,
    /// fdatasync latency quantiles (nearest rank) and maximum, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Bytes per second over the whole probe.
    pub throughput_bytes_per_sec: f64,
    /// The agent's threshold for p99, microseconds.
    pub threshold_p99_us: u64,
    pub within_threshold: bool,
}

/// etcd's own p99s, interpolated from its histograms (cumulative since etcd started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdDisk {
    /// `etcd_disk_wal_fsync_duration_seconds` p99, microseconds; null when unknown.
    pub wal_fsync_p99_us: Option<u64>,
    /// `etcd_disk_backend_commit_duration_seconds` p99, microseconds; null when unknown.
    pub backend_commit_p99_us: Option<u64>,
    /// Why a figure is missing; null when both were read.
    pub error: Option<String>,
}

/// Converts one agent's reply (the prost edge) into plain data.
pub fn member_disk(reply: Reply<pb::ProbeDiskResponse>) -> MemberDisk {
    let agent = reply.agent.to_string();
    match reply.result {
        Err(e) => MemberDisk {
            name: reply.member,
            agent,
            verdict: Verdict::Error,
            error: Some(e.to_string()),
            error_brief: Some(e.brief()),
            probe: None,
            etcd: None,
        },
        Ok(r) => {
            let known = |us: u64| (us != 0).then_some(us);
            MemberDisk {
                name: reply.member,
                agent,
                verdict: if r.within_threshold {
                    Verdict::Ok
                } else {
                    Verdict::Slow
                },
                error: None,
                error_brief: None,
                etcd: Some(EtcdDisk {
                    wal_fsync_p99_us: known(r.etcd_wal_fsync_p99_us),
                    backend_commit_p99_us: known(r.etcd_backend_commit_p99_us),
                    error: (!r.metrics_error.is_empty()).then_some(r.metrics_error),
                }),
                probe: Some(Probe {
                    path: r.path,
                    writes: r.writes,
                    bytes: r.bytes,
                    p50_us: r.p50_us,
                    p99_us: r.p99_us,
                    max_us: r.max_us,
                    throughput_bytes_per_sec: r.throughput_bytes_per_sec,
                    threshold_p99_us: r.threshold_p99_us,
                    within_threshold: r.within_threshold,
                }),
            }
        }
    }
}

fn us(us: u64) -> String {
    table::format_took(Duration::from_micros(us))
}

/// The verdict: ok only when every member's probe is within its threshold.
pub fn evaluate(cluster: &str, members: Vec<MemberDisk>) -> DiskReport {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for m in &members {
        match (&m.probe, &m.error) {
            (Some(p), _) if !p.within_threshold => problems.push(format!(
                "{}: fdatasync p99 {} is over the threshold of {}: the disk is too slow for etcd's WAL",
                m.name,
                us(p.p99_us),
                us(p.threshold_p99_us)
            )),
            (None, Some(e)) => problems.push(e.clone()),
            _ => {}
        }
        let (Some(p), Some(etcd)) = (&m.probe, &m.etcd) else {
            continue;
        };
        if let Some(wal) = etcd.wal_fsync_p99_us.filter(|&wal| wal > p.threshold_p99_us) {
            notes.push(format!(
                "{}: etcd's own WAL fsync p99 {} (since etcd started) is over the threshold of {}",
                m.name,
                us(wal),
                us(p.threshold_p99_us)
            ));
        }
        let guidance = BACKEND_COMMIT_P99_GUIDANCE.as_micros() as u64;
        if let Some(commit) = etcd.backend_commit_p99_us.filter(|&c| c > guidance) {
            notes.push(format!(
                "{}: etcd's own backend commit p99 {} (since etcd started) is over etcd's guidance of {}",
                m.name,
                us(commit),
                us(guidance)
            ));
        }
        if let Some(e) = &etcd.error {
            notes.push(format!("{}: {e}", m.name));
        }
    }
    let within_threshold = members.iter().filter(|m| m.verdict == Verdict::Ok).count();
    DiskReport {
        cluster: cluster.to_string(),
        ok: within_threshold == members.len(),
        within_threshold,
        total: members.len(),
        problems,
        notes,
        members,
    }
}

/// The table header of `check disk`.
pub const HEADER: [&str; 10] = [
    "MEMBER",
    "PATH",
    "WRITES",
    "P50",
    "P99",
    "MAX",
    "THROUGHPUT",
    "ETCD WAL FSYNC P99",
    "ETCD COMMIT P99",
    "VERDICT",
];

/// One table row per member.
pub fn rows(report: &DiskReport) -> Vec<Vec<String>> {
    let opt = |v: Option<u64>| v.map_or(NONE.to_string(), us);
    report
        .members
        .iter()
        .map(|m| {
            let verdict = match (&m.probe, m.verdict) {
                (Some(p), Verdict::Slow) => {
                    format!(
                        "slow: p99 {} over threshold {}",
                        us(p.p99_us),
                        us(p.threshold_p99_us)
                    )
                }
                (_, Verdict::Ok) => "ok".to_string(),
                _ => m
                    .error_brief
                    .clone()
                    .or_else(|| m.error.clone())
                    .unwrap_or_default(),
            };
            let etcd = m.etcd.as_ref();
            match &m.probe {
                None => {
                    let mut row = vec![m.name.clone()];
                    row.extend(std::iter::repeat_n(NONE.to_string(), HEADER.len() - 2));
                    row.push(verdict);
                    row
                }
                Some(p) => vec![
                    m.name.clone(),
                    p.path.clone(),
                    p.writes.to_string(),
                    us(p.p50_us),
                    us(p.p99_us),
                    us(p.max_us),
                    format!(
                        "{}/s",
                        table::human_bytes(p.throughput_bytes_per_sec.max(0.0) as u64)
                    ),
                    opt(etcd.and_then(|e| e.wal_fsync_p99_us)),
                    opt(etcd.and_then(|e| e.backend_commit_p99_us)),
                    verdict,
                ],
            }
        })
        .collect()
}

/// The summary line under the table.
pub fn summary(report: &DiskReport) -> String {
    let verdict = if report.ok { "ok" } else { "not ok" };
    format!(
        "cluster {} disks {verdict}: {}/{} members' fdatasync p99 within the threshold",
        report.cluster, report.within_threshold, report.total
    )
}

/// The whole text report: table, summary, then problems and notes in full.
pub fn render_table(report: &DiskReport) -> String {
    let problems = report.problems.iter().map(|p| ("problem", p.as_str()));
    let notes = report.notes.iter().map(|n| ("note", n.as_str()));
    table::report(&HEADER, rows(report), &summary(report), problems.chain(notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{AgentError, AgentErrorKind};
    use crate::fleet::AgentUrl;

    fn reply(
        name: &str,
        result: Result<pb::ProbeDiskResponse, AgentErrorKind>,
    ) -> Reply<pb::ProbeDiskResponse> {
        let agent = AgentUrl::parse("https://127.0.0.12:7443").expect("url");
        Reply {
            member: name.to_string(),
            agent: agent.clone(),
            took: Duration::from_secs(3),
            result: result.map_err(|kind| AgentError {
                member: name.to_string(),
                agent,
                kind,
            }),
        }
    }

    fn probed(p99_us: u64) -> pb::ProbeDiskResponse {
        pb::ProbeDiskResponse {
            path: "/var/lib/etcd/.etcdops-probe-812-0".into(),
            writes: 10_030,
            bytes: 23_068_672,
            p50_us: 850,
            p99_us,
            max_us: 40_000,
            throughput_bytes_per_sec: 1_500_000.0,
            threshold_p99_us: 10_000,
            within_threshold: p99_us <= 10_000,
            etcd_wal_fsync_p99_us: 990,
            etcd_backend_commit_p99_us: 3_960,
            metrics_error: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        type Case = (
            Vec<Result<pb::ProbeDiskResponse, AgentErrorKind>>,
            bool,
            usize,
            usize,
        );
        let cases: Vec<Case> = vec![
            (vec![Ok(probed(2_000)), Ok(probed(10_000))], true, 2, 0),
            (vec![Ok(probed(2_000)), Ok(probed(12_345))], false, 1, 1),
            (
                vec![
                    Ok(probed(2_000)),
                    Err(AgentErrorKind::Unreachable {
                        reason: "connection refused".into(),
                    }),
                ],
                false,
                1,
                1,
            ),
            (
                vec![Err(AgentErrorKind::Rpc {
                    code: tonic::Code::ResourceExhausted,
                    message: "a disk probe is already running".into(),
                })],
                false,
                0,
                1,
            ),
        ];
        for (results, ok, within, problems) in cases {
            let members = results
                .into_iter()
                .enumerate()
                .map(|(i, r)| member_disk(reply(&format!("etcd{i}"), r)));
            let report = evaluate("prod-a", members.collect());
            assert_eq!(
                (report.ok, report.within_threshold, report.problems.len()),
                (ok, within, problems),
                "{report:?}"
            );
        }
    }

    #[test]
    fn table_shows_figures_and_verdicts() {
        let report = evaluate(
            "prod-a",
            vec![
                member_disk(reply("etcd1", Ok(probed(2_000)))),
                member_disk(reply("etcd2", Ok(probed(12_345)))),
                member_disk(reply(
                    "etcd3",
                    Err(AgentErrorKind::Unreachable {
                        reason: "connection refused".into(),
                    }),
                )),
            ],
        );
        let rows = rows(&report);
        assert_eq!(
            rows[0],
            [
                "etcd1",
                "/var/lib/etcd/.etcdops-probe-812-0",
                "10030",
                "850µs",
                "2ms",
                "40ms",
                "1.5 MB/s",
                "990µs",
                "3.96ms",
                "ok"
            ]
        );
        assert_eq!(rows[1][9], "slow: p99 12.345ms over threshold 10ms");
        assert_eq!(rows[2][1], "-");
        assert_eq!(rows[2][9], "agent unreachable: connection refused");
        let text = render_table(&report);
        assert!(text.contains("| MEMBER | PATH"), "{text}");
        assert!(
            text.contains("cluster prod-a disks not ok: 1/3 members' fdatasync p99 within the threshold"),
            "{text}"
        );
        assert!(
            text.contains("problem: etcd2: fdatasync p99 12.345ms is over the threshold of 10ms"),
            "{text}"
        );
        assert!(
            text.contains("problem: agent etcd3 at https://127.0.0.12:7443 unreachable"),
            "{text}"
        );
    }

    #[test]
    fn etcd_figures_become_notes_not_problems() {
        let high = pb::ProbeDiskResponse {
            etcd_wal_fsync_p99_us: 15_872,
            etcd_backend_commit_p99_us: 31_000,
            ..probed(2_000)
        };
        let missing = pb::ProbeDiskResponse {
            etcd_wal_fsync_p99_us: 0,
            etcd_backend_commit_p99_us: 0,
            metrics_error: "cannot read etcd's metrics: connection refused".into(),
            ..probed(2_000)
        };
        let report = evaluate(
            "prod-a",
            vec![
                member_disk(reply("etcd1", Ok(high))),
                member_disk(reply("etcd2", Ok(missing))),
            ],
        );
        assert!(report.ok);
        assert_eq!(report.notes.len(), 3, "{:?}", report.notes);
        assert!(
            report.notes[0].contains("WAL fsync p99 15.872ms"),
            "{:?}",
            report.notes
        );
        assert!(
            report.notes[1].contains("backend commit p99 31ms"),
            "{:?}",
            report.notes
        );
        assert_eq!(
            report.notes[2],
            "etcd2: cannot read etcd's metrics: connection refused"
        );
        assert_eq!(rows(&report)[1][7], "-");
    }

    #[test]
    fn json_schema() {
        let report = evaluate(
            "prod-a",
            vec![
                member_disk(reply("etcd1", Ok(probed(2_000)))),
                member_disk(reply(
                    "etcd2",
                    Err(AgentErrorKind::Unreachable {
                        reason: "connection refused".into(),
                    }),
                )),
            ],
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["ok"], false);
        assert_eq!(json["members"][0]["verdict"], "ok");
        assert_eq!(json["members"][0]["error"], serde_json::Value::Null);
        assert_eq!(json["members"][0]["probe"]["p99_us"], 2_000);
        assert_eq!(json["members"][0]["probe"]["writes"], 10_030);
        assert_eq!(json["members"][0]["etcd"]["wal_fsync_p99_us"], 990);
        assert_eq!(json["members"][0]["etcd"]["error"], serde_json::Value::Null);
        assert_eq!(json["members"][1]["verdict"], "error");
        assert_eq!(json["members"][1]["probe"], serde_json::Value::Null);
        assert!(json["members"][1]["error"].is_string());
        assert!(json["members"][1].get("error_brief").is_none());
    }
}
