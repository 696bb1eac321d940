//! Byte sizes for people, as etcdctl prints them: used by the reports
//! (`output/`) and by the executor's step summaries (`exec/`). Depends on
//! nothing in the crate.

/// Bytes the way etcdctl prints them (go-humanize `Bytes`): SI units, one
/// decimal below 10, e.g. `20 kB`, `255 MB`, `1.2 GB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let mut exp = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1000.0 && exp < UNITS.len() - 1 {
        scaled /= 1000.0;
        exp += 1;
    }
    let rounded = (scaled * 10.0 + 0.5).floor() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[exp])
    } else {
        format!("{rounded:.0} {}", UNITS[exp])
    }
}

/// [`human_bytes`] of a signed size from etcd; negative (nonsense) shows as 0 B.
pub fn human_bytes_i64(bytes: i64) -> String {
    human_bytes(u64::try_from(bytes).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_etcdctl() {
        let cases = [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1_000, "1.0 kB"),
            (20_480, "20 kB"),
            (25_000, "25 kB"),
            (1_250, "1.3 kB"),
            (9_960, "10 kB"),
            (255_000_000, "255 MB"),
            (2_147_483_648, "2.1 GB"),
            (8_589_934_592, "8.6 GB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_bytes(bytes), expected, "{bytes}");
        }
        assert_eq!(human_bytes_i64(-1), "0 B");
    }
}
