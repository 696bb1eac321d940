//! What commands print: etcdctl-style tables and a stable JSON schema (see `coordinator/OUTPUT.md`).
//!
//! Every report is plain data built by pure functions from the agents'
//! replies, so rendering and verdicts are unit-tested without I/O.

pub mod certs;
pub mod disk;
pub mod grouped;
pub mod hashkv;
pub mod health;
pub mod members;
pub mod ops;
pub mod plan;
pub mod status;
pub mod table;

use serde::Serialize;

/// `-w/--write-out`: how reports are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WriteOut {
    /// Human-readable tables, as `etcdctl -w table` prints them.
    #[default]
    Table,
    /// One JSON document per command (schema in OUTPUT.md); IDs are hex strings.
    Json,
}

/// A 64-bit etcd ID as etcd tools print it: 16 hex digits. JSON carries
/// IDs as these strings because 64-bit numbers break `jq` and JavaScript.
pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

/// A report as pretty JSON with a trailing newline.
pub fn to_json<T: Serialize>(report: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_hex_digits() {
        assert_eq!(hex_id(0x8e9e05c52164694d), "8e9e05c52164694d");
        assert_eq!(hex_id(0x2a), "000000000000002a");
        assert_eq!(hex_id(u64::MAX), "ffffffffffffffff");
    }
}
