//! When jobs run: cron schedules and maintenance windows (croner, in a time
//! zone through jiff), and the pure decision of what is due ([`next_due`]).
//!
//! Semantics: a job runs at its schedule's slots, one run at a time (each
//! job is one task that runs, then computes its next slot). The slot of the
//! last run is persisted ([`super::state`]): after downtime, or after a run
//! that outlasted its interval, the slots missed meanwhile collapse into ONE
//! run at once, never one per slot. A job never run before waits for its
//! first slot. A job with windows runs only while one is open: a run due
//! outside waits for the next opening ([`window_wait`]).

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Why a schedule is refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid cron expression {expr:?}: {message} (5 fields `min hour day month weekday`, or 6 with seconds first, e.g. \"0 * * * *\" or \"*/20 * * * * *\")"
    )]
    Invalid { expr: String, message: String },
    #[error("cron expression {expr:?} never fires (no date matches it)")]
    NeverFires { expr: String },
}

/// Why a window is refused.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("give either when = \"Sat 02:00-04:00\" or cron = \"...\" with duration = \"2h\"")]
    Shape,
    #[error(
        "when = {when:?}: {message}; write days and hours like \"Sat 02:00-04:00\", \"Mon-Fri 01:00-01:30\", \"Sat,Sun 23:00-01:00\" or \"daily 03:00-04:00\""
    )]
    When { when: String, message: String },
    #[error("{0}")]
    Cron(ScheduleError),
    #[error("the window never opens: {why}")]
    NeverOpens { why: String },
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    expr: String,
}

impl Schedule {
    /// Parses `expr` (5 fields, or 6 with seconds first) in `tz`; refuses
    /// one that never fires.
    pub fn parse(expr: &str, tz: TimeZone) -> Result<Schedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Invalid {
                expr: expr.to_string(),
                message: e.to_string(),
            })?;
        let schedule = Schedule {
            cron,
            tz,
            expr: expr.to_string(),
        };
        if schedule.next_after(Timestamp::now()).is_none() {
            return Err(ScheduleError::NeverFires {
                expr: expr.to_string(),
            });
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// What a job does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Run now, for this slot; `missed`: slots passed while serve was down
    /// (or the last run outlasted its interval): one run stands for them all.
    Now { slot: Timestamp, missed: bool },
    /// Wait until this slot, then run.
    At(Timestamp),
}

/// The pure scheduling decision: the job last ran for `last_slot` (None:
/// never), it is `now`.
pub fn next_due(schedule: &Schedule, last_slot: Option<Timestamp>, now: Timestamp) -> Option<Due> {
    match last_slot {
        Some(last) => {
            let next = schedule.next_after(last)?;
            if next <= now {
                let slot = schedule.last_at_or_before(now).unwrap_or(next).max(next);
                Some(Due::Now { slot, missed: true })
            } else {
                Some(Due::At(next))
            }
        }
        None => schedule.next_after(now).map(Due::At),
    }
}

/// A maintenance window: opens at its cron's slots, stays open `open_for`.
#[derive(Debug, Clone)]
pub struct Window {
    opens: Schedule,
    open_for: Duration,
    /// How it was written, for logs.
    pub text: String,
}

impl Window {
    /// From `when = "Sat 02:00-04:00"`, or `cron` + `duration`; refuses a
    /// window that never opens.
    pub fn new(
        when: Option<&str>,
        cron: Option<&str>,
        duration: Option<Duration>,
        tz: TimeZone,
    ) -> Result<Window, WindowError> {
        let (expr, open_for, text) = match (when, cron, duration) {
            (Some(when), None, None) => {
                let (expr, open_for) = parse_when(when)?;
                (expr, open_for, when.to_string())
            }
            (None, Some(cron), Some(d)) => (
                cron.to_string(),
                d,
                format!("{cron} for {}", crate::duration::format(d)),
            ),
            _ => return Err(WindowError::Shape),
        };
        if open_for.is_zero() {
            return Err(WindowError::NeverOpens {
                why: "it is open for no time at all".into(),
            });
        }
        let opens = Schedule::parse(&expr, tz).map_err(|e| match e {
            ScheduleError::NeverFires { expr } => WindowError::NeverOpens {
                why: format!("its opening time {expr:?} matches no date"),
            },
            e => WindowError::Cron(e),
        })?;
        Ok(Window {
            opens,
            open_for,
            text,
        })
    }

    /// Open at `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        self.opens
            .last_at_or_before(t)
            .and_then(|start| {
                start
                    .checked_add(jiff::SignedDuration::try_from(self.open_for).ok()?)
                    .ok()
            })
            .is_some_and(|end| t < end)
    }

    /// `t` when open then, else its next opening.
    pub fn next_open(&self, t: Timestamp) -> Option<Timestamp> {
        if self.is_open(t) {
            Some(t)
        } else {
            self.opens.next_after(t)
        }
    }
}

/// None when a run due at `t` may start (no windows, or one open); else
/// the next opening of any of them.
pub fn window_wait(windows: &[Window], t: Timestamp) -> Option<Timestamp> {
    if windows.is_empty() || windows.iter().any(|w| w.is_open(t)) {
        return None;
    }
    windows.iter().filter_map(|w| w.next_open(t)).min()
}

/// `Sat 02:00-04:00` → (`0 2 * * SAT`, 2 h). The end may be past midnight.
fn parse_when(when: &str) -> Result<(String, Duration), WindowError> {
    let bad = |message: &str| WindowError::When {
        when: when.to_string(),
        message: message.to_string(),
    };
    let mut parts = when.split_whitespace();
    let (days, hours) = match (parts.next(), parts.next(), parts.next()) {
        (Some(days), Some(hours), None) => (days, hours),
        _ => return Err(bad("expected two parts, days and hours")),
    };
    let dow = if days.eq_ignore_ascii_case("daily") || days == "*" {
        "*".to_string()
    } else {
        let mut out = Vec::new();
        for item in days.split(',') {
            let range: Vec<&str> = item.split('-').collect();
            if range.len() > 2 || range.iter().any(|d| day(d).is_none()) {
                return Err(bad(&format!(
                    "{item:?} is not a day or a range of days (Mon..Sun)"
                )));
            }
            out.push(range.iter().filter_map(|d| day(d)).collect::<Vec<_>>().join("-"));
        }
        out.join(",")
    };
    let (from, to) = hours
        .split_once('-')
        .ok_or_else(|| bad("hours need a start and an end, HH:MM-HH:MM"))?;
    let minutes = |hm: &str| -> Result<u32, WindowError> {
        let (h, m) = hm
            .split_once(':')
            .ok_or_else(|| bad(&format!("{hm:?} is not HH:MM")))?;
        match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
            _ => Err(bad(&format!("{hm:?} is not a time of day HH:MM"))),
        }
    };
    let (start, end) = (minutes(from)?, minutes(to)?);
    if start == end {
        return Err(WindowError::NeverOpens {
            why: format!("{hours} starts and ends at the same time"),
        });
    }
    let length = if end > start {
        end - start
    } else {
        end + 24 * 60 - start
    };
    Ok((
        format!("{} {} * * {dow}", start % 60, start / 60),
        Duration::from_secs(u64::from(length) * 60),
    ))
}

fn day(d: &str) -> Option<&'static str> {
    const DAYS: [(&str, &str); 7] = [
        ("SUN", "SUNDAY"),
        ("MON", "MONDAY"),
        ("TUE", "TUESDAY"),
        ("WED", "WEDNESDAY"),
        ("THU", "THURSDAY"),
        ("FRI", "FRIDAY"),
        ("SAT", "SATURDAY"),
    ];
    let upper = d.to_ascii_uppercase();
    DAYS.into_iter()
        .find(|(short, long)| upper == *short || upper == *long)
        .map(|(short, _)| short)
}

/// A random delay in `[0, jitter)` (hashed from the clock; no crate needed).
pub fn jitter_delay(jitter: Option<Duration>) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let Some(jitter) = jitter.filter(|j| !j.is_zero()) else {
        return Duration::ZERO;
    };
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(h.finish() % millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn hourly() -> Schedule {
        Schedule::parse("0 * * * *", TimeZone::UTC).expect("cron")
    }

    #[test]
    fn a_job_never_run_waits_for_its_first_slot() {
        let due = next_due(&hourly(), None, ts("2026-12-01T10:20:00Z"));
        assert_eq!(due, Some(Due::At(ts("2026-12-01T11:00:00Z"))));
    }

    #[test]
    fn a_job_on_time_waits_for_the_next_slot() {
        let due = next_due(
            &hourly(),
            Some(ts("2026-12-01T10:00:00Z")),
            ts("2026-12-01T10:20:00Z"),
        );
        assert_eq!(due, Some(Due::At(ts("2026-12-01T11:00:00Z"))));
    }

    #[test]
    fn missed_slots_after_downtime_run_once_not_once_each() {
        // Down from 10:20 to 15:20: slots 11:00..15:00 (five) were missed.
        let now = ts("2026-12-01T15:20:00Z");
        let due = next_due(&hourly(), Some(ts("2026-12-01T10:00:00Z")), now);
        assert_eq!(
            due,
            Some(Due::Now {
                slot: ts("2026-12-01T15:00:00Z"),
                missed: true
            })
        );
        // Once that run is recorded, nothing else is due until 16:00.
        let due = next_due(
            &hourly(),
            Some(ts("2026-12-01T15:00:00Z")),
            ts("2026-12-01T15:21:00Z"),
        );
        assert_eq!(due, Some(Due::At(ts("2026-12-01T16:00:00Z"))));
    }

    #[test]
    fn a_run_that_outlasts_its_interval_is_followed_by_one_run_not_a_backlog() {
        let every_20s = Schedule::parse("*/20 * * * * *", TimeZone::UTC).expect("cron");
        // The 10:00:00 run took 75 s: slots :20, :40, 01:00 and 01:00:20... passed.
        let due = next_due(
            &every_20s,
            Some(ts("2026-12-01T10:00:00Z")),
            ts("2026-12-01T10:01:15Z"),
        );
        assert_eq!(
            due,
            Some(Due::Now {
                slot: ts("2026-12-01T10:01:00Z"),
                missed: true
            })
        );
    }

    #[test]
    fn schedules_follow_their_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").expect("tzdb");
        let s = Schedule::parse("0 2 * * *", berlin).expect("cron");
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-12-01T00:00:00Z")),
            Some(ts("2026-12-01T01:00:00Z"))
        );
    }

    #[test]
    fn bad_and_impossible_crons_are_refused() {
        for bad in ["61 * * * *", "* * *", "every hour", ""] {
            let e = Schedule::parse(bad, TimeZone::UTC).expect_err(bad).to_string();
            assert!(e.contains("invalid cron expression"), "{bad}: {e}");
        }
    }

    #[test]
    fn windows_open_and_close() {
        let w = Window::new(Some("Sat 02:00-04:00"), None, None, TimeZone::UTC).expect("window");
        // 2026-12-05 is a Saturday.
        assert!(w.is_open(ts("2026-12-05T02:00:00Z")));
        assert!(w.is_open(ts("2026-12-05T03:59:59Z")));
        assert!(!w.is_open(ts("2026-12-05T04:00:00Z")));
        assert!(!w.is_open(ts("2026-12-04T03:00:00Z")));
        assert_eq!(
            w.next_open(ts("2026-12-01T00:00:00Z")),
            Some(ts("2026-12-05T02:00:00Z"))
        );
        let overnight = Window::new(Some("Mon-Fri 23:00-01:00"), None, None, TimeZone::UTC).expect("window");
        // Tuesday 00:30 is inside Monday's window.
        assert!(overnight.is_open(ts("2026-12-01T00:30:00Z")));
        let daily = Window::new(
            None,
            Some("30 1 * * *"),
            Some(Duration::from_secs(1800)),
            TimeZone::UTC,
        )
        .expect("window");
        assert!(daily.is_open(ts("2026-12-01T01:45:00Z")) && !daily.is_open(ts("2026-12-01T02:00:00Z")));
        assert_eq!(
            window_wait(&[w.clone(), daily.clone()], ts("2026-12-01T01:45:00Z")),
            None
        );
        assert_eq!(
            window_wait(&[w, daily], ts("2026-12-01T03:00:00Z")),
            Some(ts("2026-12-02T01:30:00Z"))
        );
        assert_eq!(window_wait(&[], ts("2026-12-01T03:00:00Z")), None);
    }

    #[test]
    fn windows_that_never_open_are_refused() {
        let e = Window::new(
            None,
            Some("0 0 30 2 *"),
            Some(Duration::from_secs(60)),
            TimeZone::UTC,
        )
        .expect_err("Feb 30");
        assert!(e.to_string().contains("never opens"), "{e}");
        let e = Window::new(Some("Sat 02:00-02:00"), None, None, TimeZone::UTC).expect_err("empty");
        assert!(e.to_string().contains("never opens"), "{e}");
        for bad in ["Someday 02:00-03:00", "Sat 2-3", "Sat 25:00-26:00", "Sat"] {
            let e = Window::new(Some(bad), None, None, TimeZone::UTC).expect_err(bad);
            assert!(e.to_string().contains("when ="), "{bad}: {e}");
        }
        assert!(matches!(
            Window::new(Some("Sat 02:00-03:00"), Some("0 2 * * *"), None, TimeZone::UTC),
            Err(WindowError::Shape)
        ));
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        assert_eq!(jitter_delay(None), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter_delay(Some(Duration::from_secs(2))) < Duration::from_secs(2));
        }
    }
}
