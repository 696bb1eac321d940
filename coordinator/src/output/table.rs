//! Table helpers shared by every report: the etcdctl table look, durations and dates (byte sizes: `crate::units`).

use std::time::Duration;

use comfy_table::{ContentArrangement, ContentLineStyle, LineStyle, Table, TableStyle};

/// The look of `etcdctl -w table`: `+---+` borders, a ruled header, no rules between rows.
const ETCDCTL_STYLE: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

/// What a cell shows when there is no value (e.g. the agent did not answer).
pub const NONE: &str = "-";

/// An empty table with this header, never wrapped to the terminal width.
pub fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(ETCDCTL_STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header.to_vec());
    table
}

/// A table as text with a trailing newline.
pub fn render(table: &Table) -> String {
    let mut text = table.to_string();
    text.push('\n');
    text
}

/// A command's text report: the table, its summary line, then one line per
/// `(label, message)` in full, e.g. `problem: agent etcd2 ... unreachable`.
pub fn report<'a>(
    header: &[&str],
    rows: Vec<Vec<String>>,
    summary: &str,
    lines: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut t = new_table(header);
    for r in rows {
        t.add_row(r);
    }
    let mut text = render(&t);
    text.push_str(summary);
    text.push('\n');
    for (label, message) in lines {
        text.push_str(&format!("{label}: {message}\n"));
    }
    text
}

// The byte formatting lives in `crate::units` (the executor uses it too);
// re-exported so every report keeps naming `table::human_bytes`.
pub use crate::units::{human_bytes, human_bytes_i64};

/// A latency the way Go prints durations: `850µs`, `2.345ms`, `1.2s`.
pub fn format_took(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        trim_float(us as f64 / 1_000.0, "ms")
    } else {
        trim_float(d.as_secs_f64(), "s")
    }
}

fn trim_float(value: f64, unit: &str) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// The UTC calendar date of a Unix time: `2027-11-25`.
pub fn format_date(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whole days from `now` to `then`, rounded to the nearest day (negative when past).
pub fn days_between(now_unix: i64, then_unix: i64) -> i64 {
    let secs = then_unix.saturating_sub(now_unix);
    (secs + 43_200).div_euclid(86_400)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `true`/`false` as etcdctl prints booleans.
pub fn yes_no(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(format_took(Duration::from_micros(850)), "850µs");
        assert_eq!(format_took(Duration::from_micros(2_345)), "2.345ms");
        assert_eq!(format_took(Duration::from_micros(2_000)), "2ms");
        assert_eq!(format_took(Duration::from_millis(1_200)), "1.2s");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(951_782_400), "2000-02-29");
        assert_eq!(format_date(1_827_273_600), "2027-11-27");
        assert_eq!(format_date(1_827_273_599), "2027-11-26");
        assert_eq!(format_date(-86_400), "1969-12-31");
        assert_eq!(days_between(0, 365 * 86_400), 365);
        assert_eq!(days_between(10, 365 * 86_400), 365);
        assert_eq!(days_between(86_400 * 3, 0), -3);
    }

    #[test]
    fn tables_look_like_etcdctl() {
        let mut table = new_table(&["ID", "NAME"]);
        table.add_row(vec!["8e9e05c52164694d", "etcd1"]);
        let expected = "\
+------------------+-------+
| ID               | NAME  |
+------------------+-------+
| 8e9e05c52164694d | etcd1 |
+------------------+-------+
";
        assert_eq!(render(&table), expected);
    }
}
