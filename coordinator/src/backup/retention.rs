//! Retention: which backups a policy keeps, as a pure function of the
//! backups, the policy and the time ([`plan_retention`]).
//!
//! Rules (like restic's `forget`): `keep_last N` keeps the N newest;
//! `keep_hourly N` / `keep_daily N` keep the newest backup in each of the N
//! most recent UTC hours / days that have one; `keep_within D` keeps every
//! backup younger than D. A backup is kept when any rule keeps it. The rules
//! count verified backups only, and whatever the policy the newest verified
//! backup is kept. A backup without sidecar (incomplete) or with a wrong one
//! (damaged) is deleted once a newer verified backup exists, and kept while
//! none does (it may still be uploading). No rule at all keeps everything:
//! `prune` refuses to run without a policy.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;

use super::catalog::{BackupEntry, BackupState};

// `keep_within`'s type is part of the fleet file's `[clusters.backup]`
// table, so it lives with it in `fleet::backup`.
pub use crate::fleet::backup::Span;

/// A retention policy: the union of its rules. Empty means "no policy".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Keep the N newest verified backups.
    pub keep_last: Option<NonZeroU32>,
    /// Keep the newest backup of each of the N most recent hours that have one.
    pub keep_hourly: Option<NonZeroU32>,
    /// Keep the newest backup of each of the N most recent days (UTC) that have one.
    pub keep_daily: Option<NonZeroU32>,
    /// Keep every backup younger than this.
    pub keep_within: Option<Span>,
}

impl Retention {
    /// No rule: nothing may be pruned.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_within.is_none()
    }

    /// `keep_last 3, keep_daily 7, keep_within 7d`, or `none`.
    pub fn describe(&self) -> String {
        let mut rules = Vec::new();
        if let Some(n) = self.keep_last {
            rules.push(format!("keep_last {n}"));
        }
        if let Some(n) = self.keep_hourly {
            rules.push(format!("keep_hourly {n}"));
        }
        if let Some(n) = self.keep_daily {
            rules.push(format!("keep_daily {n}"));
        }
        if let Some(span) = &self.keep_within {
            rules.push(format!("keep_within {}", span.as_str()));
        }
        if rules.is_empty() {
            "none".to_string()
        } else {
            rules.join(", ")
        }
    }
}

/// What retention decides for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    /// The rules that keep it, or why it goes.
    pub reason: String,
}

/// Decides, for every backup, whether it is kept and why (pure; see the
/// module docs). `now` is Unix seconds UTC. Decisions come newest first.
pub fn plan_retention(backups: &[BackupEntry], policy: &Retention, now: i64) -> Vec<Decision> {
    let mut order: Vec<&BackupEntry> = backups.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    if policy.is_empty() {
        return order
            .iter()
            .map(|e| Decision {
                name: e.name.clone(),
                keep: true,
                reason: "no retention policy: nothing is deleted".into(),
            })
            .collect();
    }
    let complete: Vec<&BackupEntry> = order.iter().copied().filter(|e| e.is_complete()).collect();
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    fn keep(reasons: &mut BTreeMap<String, Vec<String>>, e: &BackupEntry, why: String) {
        reasons.entry(e.name.clone()).or_default().push(why);
    }

    if let Some(n) = policy.keep_last {
        for e in complete.iter().take(n.get() as usize) {
            keep(&mut reasons, e, format!("keep_last {n}"));
        }
    }
    let buckets = [
        (policy.keep_hourly, 3_600, "keep_hourly", "hour"),
        (policy.keep_daily, 86_400, "keep_daily", "day"),
    ];
    for (count, width, rule, unit) in buckets {
        let Some(n) = count else { continue };
        let mut seen = HashSet::new();
        // Newest first: the first backup met in a bucket is its newest.
        for e in &complete {
            if seen.len() == n.get() as usize {
                break;
            }
            let bucket = e.time.div_euclid(width);
            if seen.insert(bucket) {
                keep(
                    &mut reasons,
                    e,
                    format!(
                        "{rule} {n} (newest of its {unit}, {})",
                        bucket_label(bucket * width, width)
                    ),
                );
            }
        }
    }
    if let Some(span) = &policy.keep_within {
        let secs = i64::try_from(span.duration().as_secs()).unwrap_or(i64::MAX);
        for e in complete.iter().filter(|e| now.saturating_sub(e.time) <= secs) {
            keep(&mut reasons, e, format!("keep_within {}", span.as_str()));
        }
    }
    if let Some(newest) = complete.first()
        && !reasons.contains_key(newest.name.as_str())
    {
        keep(
            &mut reasons,
            newest,
            "the newest verified backup (always kept)".to_string(),
        );
    }
    let newest_complete = complete.first().map(|e| e.time);

    order
        .iter()
        .map(|e| {
            let (keep, reason) = if e.is_complete() {
                match reasons.get(e.name.as_str()) {
                    Some(why) => (true, why.join("; ")),
                    None => (false, format!("not kept by the policy ({})", policy.describe())),
                }
            } else {
                let what = match e.state {
                    BackupState::Damaged => {
                        format!("damaged ({})", e.problem.as_deref().unwrap_or("bad sidecar"))
                    }
                    _ => "incomplete (no sidecar)".to_string(),
                };
                match newest_complete {
                    Some(t) if e.time < t => {
                        (false, format!("{what}, older than the newest verified backup"))
                    }
                    _ => (
                        true,
                        format!("{what}, but no verified backup is newer: it may still be in flight"),
                    ),
                }
            };
            Decision {
                name: e.name.clone(),
                keep,
                reason,
            }
        })
        .collect()
}

/// `2026-11-25 14:00Z` for an hour, `2026-11-25` for a day.
fn bucket_label(start: i64, width: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(start) else {
        return start.to_string();
    };
    let text = if width < 86_400 {
        t.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]Z"
        ))
    } else {
        t.format(time::macros::format_description!("[year]-[month]-[day]"))
    };
    text.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const H: i64 = 3_600;
    const D: i64 = 86_400;
    /// 2026-11-25 00:00:00 UTC.
    const DAY0: i64 = 1_795_564_800;

    fn entry(time: i64, state: BackupState) -> BackupEntry {
        let name = super::super::catalog::backup_name(
            "c",
            time::OffsetDateTime::from_unix_timestamp(time).expect("time"),
        );
        BackupEntry {
            name,
            time,
            size: 1,
            state,
            problem: None,
            meta: None,
        }
    }

    fn ok(time: i64) -> BackupEntry {
        entry(time, BackupState::Verified)
    }

    fn n(v: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(v)
    }

    /// The times kept, newest first.
    fn kept(backups: &[BackupEntry], policy: &Retention, now: i64) -> Vec<i64> {
        let decisions = plan_retention(backups, policy, now);
        assert_eq!(decisions.len(), backups.len(), "a decision for every backup");
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| backups.iter().find(|b| b.name == d.name).expect("known").time)
            .collect()
    }

    #[test]
    fn span_parses_days_and_keeps_its_text() {
        let span = Span::parse("7d").expect("7d");
        assert_eq!(span.duration(), Duration::from_secs(7 * 86_400));
        assert_eq!(span.as_str(), "7d");
        assert!(Span::parse("7 days").is_err());
    }

    #[test]
    fn retention_table() {
        // Hourly backups over three days, newest at DAY0 + 2d + 23h.
        let hourly: Vec<BackupEntry> = (0..72).map(|i| ok(DAY0 + i * H)).collect();
        let now = DAY0 + 72 * H;
        let last = |k: i64| (0..k).map(|i| DAY0 + (71 - i) * H).collect::<Vec<_>>();
        let policy = |f: fn(&mut Retention)| {
            let mut p = Retention::default();
            f(&mut p);
            p
        };
        let cases: Vec<(&str, Retention, Vec<i64>)> = vec![
            ("keep_last 3", policy(|p| p.keep_last = n(3)), last(3)),
            (
                "keep_hourly 5: the five newest hours",
                policy(|p| p.keep_hourly = n(5)),
                last(5),
            ),
            (
                "keep_daily 2: the newest of each of the two newest days",
                policy(|p| p.keep_daily = n(2)),
                vec![DAY0 + 71 * H, DAY0 + 47 * H],
            ),
            (
                "keep_daily 10 with three days of backups: one per day",
                policy(|p| p.keep_daily = n(10)),
                vec![DAY0 + 71 * H, DAY0 + 47 * H, DAY0 + 23 * H],
            ),
            (
                "keep_within 6h keeps backups up to exactly 6h old",
                policy(|p| p.keep_within = Some(Span::parse("6h").expect("span"))),
                last(6),
            ),
            (
                "union: last 2, daily 3",
                policy(|p| {
                    p.keep_last = n(2);
                    p.keep_daily = n(3);
                }),
                vec![DAY0 + 71 * H, DAY0 + 70 * H, DAY0 + 47 * H, DAY0 + 23 * H],
            ),
            (
                "keep_within far in the past keeps only the newest (always kept)",
                policy(|p| p.keep_within = Some(Span::parse("1h").expect("span"))),
                vec![DAY0 + 71 * H],
            ),
        ];
        for (what, policy, want) in cases {
            let got = kept(
                &hourly,
                &policy,
                now + if what.contains("far") { 10 * D } else { 0 },
            );
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn the_newest_verified_backup_survives_any_policy() {
        let backups = [ok(DAY0), ok(DAY0 + H), entry(DAY0 + 2 * H, BackupState::Damaged)];
        // keep_within that no backup meets: still the newest verified one stays.
        let policy = Retention {
            keep_within: Some(Span::parse("1m").expect("span")),
            ..Retention::default()
        };
        let decisions = plan_retention(&backups, &policy, DAY0 + 100 * D);
        let newest = decisions
            .iter()
            .find(|d| d.name == backups[1].name)
            .expect("newest");
        assert!(newest.keep && newest.reason.contains("always kept"), "{newest:?}");
        assert!(
            !decisions
                .iter()
                .find(|d| d.name == backups[0].name)
                .expect("old")
                .keep
        );
        // The damaged one is newer than every verified one: kept, may be in flight.
        assert!(
            decisions
                .iter()
                .find(|d| d.name == backups[2].name)
                .expect("damaged")
                .keep
        );
    }

    #[test]
    fn incomplete_backups_go_once_a_newer_verified_one_exists() {
        let backups = [
            entry(DAY0, BackupState::Incomplete),
            ok(DAY0 + H),
            entry(DAY0 + 2 * H, BackupState::Damaged),
            ok(DAY0 + 3 * H),
            entry(DAY0 + 4 * H, BackupState::Incomplete),
        ];
        let policy = Retention {
            keep_last: n(10),
            ..Retention::default()
        };
        let decisions = plan_retention(&backups, &policy, DAY0 + 5 * H);
        let by_time = |t: i64| {
            decisions
                .iter()
                .find(|d| d.name == backups.iter().find(|b| b.time == t).expect("b").name)
                .expect("d")
        };
        assert!(
            by_time(DAY0 + 4 * H).keep,
            "newer than the newest verified: in flight"
        );
        assert!(by_time(DAY0 + 4 * H).reason.contains("in flight"));
        assert!(!by_time(DAY0 + 2 * H).keep);
        assert!(by_time(DAY0 + 2 * H).reason.starts_with("damaged"));
        assert!(!by_time(DAY0).keep);
        assert!(by_time(DAY0).reason.starts_with("incomplete"));
        assert!(by_time(DAY0 + H).keep && by_time(DAY0 + 3 * H).keep);
        // Without any verified backup, nothing incomplete is touched.
        let only_incomplete = [
            entry(DAY0, BackupState::Incomplete),
            entry(DAY0 + H, BackupState::Damaged),
        ];
        assert!(
            plan_retention(&only_incomplete, &policy, DAY0 + 2 * H)
                .iter()
                .all(|d| d.keep)
        );
    }

    #[test]
    fn no_policy_keeps_everything() {
        let backups = [
            ok(DAY0),
            entry(DAY0 + H, BackupState::Incomplete),
            ok(DAY0 + 2 * H),
        ];
        let decisions = plan_retention(&backups, &Retention::default(), DAY0 + 100 * D);
        assert!(
            decisions
                .iter()
                .all(|d| d.keep && d.reason.contains("no retention policy"))
        );
        assert_eq!(Retention::default().describe(), "none");
    }

    #[test]
    fn decisions_are_newest_first_with_reasons() {
        let backups = [ok(DAY0), ok(DAY0 + 2 * H), ok(DAY0 + H)];
        let policy = Retention {
            keep_last: n(1),
            keep_hourly: n(2),
            ..Retention::default()
        };
        let decisions = plan_retention(&backups, &policy, DAY0 + 3 * H);
        let times: Vec<&str> = decisions.iter().map(|d| &d.name[2..17]).collect();
        assert_eq!(times, ["20261125T020000", "20261125T010000", "20261125T000000"]);
        assert_eq!(
            decisions[0].reason,
            "keep_last 1; keep_hourly 2 (newest of its hour, 2026-11-25 02:00Z)"
        );
        assert!(decisions[1].keep && !decisions[2].keep);
        assert_eq!(
            decisions[2].reason,
            "not kept by the policy (keep_last 1, keep_hourly 2)"
        );
        assert_eq!(policy.describe(), "keep_last 1, keep_hourly 2");
    }
}
