//! What a target holds: backups named `<cluster>-<YYYYMMDDTHHMMSSZ>.db`, each
//! complete only once its sidecar `<name>.json` is there (it is stored last),
//! and verified when the sidecar's size matches the stored object.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use super::target::{StoredObject, Target, TargetError};
use crate::snapshot::save::SnapshotMeta;

/// A backup's state in its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// The sidecar is there and its size matches the stored snapshot.
    Verified,
    /// No sidecar: still being stored, or a run that failed part-way.
    Incomplete,
    /// A sidecar that does not parse, or whose size disagrees with the stored object.
    Damaged,
}

/// One backup in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// The snapshot's object name, `<cluster>-<YYYYMMDDTHHMMSSZ>.db`.
    pub name: String,
    /// When the backup started (from its name), Unix seconds UTC.
    pub time: i64,
    /// The stored snapshot's size in bytes.
    pub size: u64,
    pub state: BackupState,
    /// What is wrong, for a damaged backup.
    pub problem: Option<String>,
    /// The sidecar, when it parses.
    pub meta: Option<SnapshotMeta>,
}

impl BackupEntry {
    /// Verified: the only kind retention counts as a usable backup.
    pub fn is_complete(&self) -> bool {
        self.state == BackupState::Verified
    }
}

/// The name of a backup of `cluster` taken at `time`.
pub fn backup_name(cluster: &str, time: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time
        .to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default();
    format!("{cluster}-{stamp}.db")
}

/// The sidecar's name of a backup.
pub fn sidecar_name(name: &str) -> String {
    format!("{name}.json")
}

/// The time (Unix seconds) in a backup name of `cluster`, or `None` when the
/// name is not one (another cluster's backup, a sidecar, a partial file).
pub fn parse_name(cluster: &str, name: &str) -> Option<i64> {
    let stamp = name
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .strip_suffix(".db")?;
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = stamp.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, s) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(s).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// The backups of `cluster` among `objects` (pure): `sidecars` holds the
/// text of each sidecar that was read, by snapshot name.
pub fn entries(
    cluster: &str,
    objects: &[StoredObject],
    sidecars: &HashMap<String, Vec<u8>>,
) -> Vec<BackupEntry> {
    let mut out: Vec<BackupEntry> = objects
        .iter()
        .filter_map(|o| parse_name(cluster, &o.name).map(|time| (o, time)))
        .map(|(o, time)| {
            let mut entry = BackupEntry {
                name: o.name.clone(),
                time,
                size: o.size,
                state: BackupState::Incomplete,
                problem: None,
                meta: None,
            };
            if let Some(text) = sidecars.get(&o.name) {
                match serde_json::from_slice::<SnapshotMeta>(text) {
                    Err(e) => {
                        entry.state = BackupState::Damaged;
                        entry.problem = Some(format!("the sidecar does not parse: {e}"));
                    }
                    Ok(meta) => {
                        if meta.size == o.size {
                            entry.state = BackupState::Verified;
                        } else {
                            entry.state = BackupState::Damaged;
                            entry.problem =
                                Some(format!("{} bytes stored, the sidecar says {}", o.size, meta.size));
                        }
                        entry.meta = Some(meta);
                    }
                }
            }
            entry
        })
        .collect();
    out.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    out
}

/// Lists `cluster`'s backups in a target, newest first, reading every
/// sidecar (a few at a time). A sidecar that cannot be read fails the
/// listing: a backup is never judged on a network error.
pub async fn catalog(target: &Target, cluster: &str) -> Result<Vec<BackupEntry>, TargetError> {
    let objects = target.list().await?;
    let present: HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let with_sidecar: Vec<String> = objects
        .iter()
        .filter(|o| {
            parse_name(cluster, &o.name).is_some() && present.contains(sidecar_name(&o.name).as_str())
        })
        .map(|o| o.name.clone())
        .collect();
    let read: Vec<(String, Result<Vec<u8>, TargetError>)> = futures::stream::iter(with_sidecar)
        .map(|name| async move {
            let text = target.read(&sidecar_name(&name)).await;
            (name, text)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut sidecars = HashMap::new();
    for (name, text) in read {
        sidecars.insert(name, text?);
    }
    Ok(entries(cluster, &objects, &sidecars))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, size: u64) -> SnapshotMeta {
        SnapshotMeta {
            version: 1,
            file: name.to_string(),
            cluster: "prod".into(),
            cluster_id: "00000000000000aa".into(),
            member_name: "etcd2".into(),
            member_id: "0000000000000002".into(),
            revision: 42,
            raft_index: 50,
            etcd_version: "3.5.16".into(),
            size,
            sha256: "ab".repeat(32),
            created: "2026-11-25T14:00:01Z".into(),
        }
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        let t = time::macros::datetime!(2026-11-25 14:03:09 UTC);
        let name = backup_name("prod-a", t);
        assert_eq!(name, "prod-a-20261125T140309Z.db");
        assert_eq!(parse_name("prod-a", &name), Some(t.unix_timestamp()));
        for other in [
            "prod-a-20261125T140309Z.db.json",
            "prod-a-20261125T140309Z.db.part-42",
            "prod-20261125T140309Z.db",
            "prod-a-b-20261125T140309Z.db",
            "prod-a-20261325T140309Z.db",
            "prod-a-2026112xT140309Z.db",
            "prod-a-20261125T1403Z.db",
            ".etcdops-write-probe-1",
        ] {
            assert_eq!(parse_name("prod-a", other), None, "{other}");
        }
        // A cluster whose name is a prefix of another's sees only its own.
        assert_eq!(parse_name("prod", "prod-a-20261125T140309Z.db"), None);
    }

    #[test]
    fn states_follow_the_sidecar() {
        let obj = |name: &str, size| StoredObject {
            name: name.into(),
            size,
        };
        let objects = [
            obj("prod-20261125T140000Z.db", 100),
            obj("prod-20261125T140000Z.db.json", 300),
            obj("prod-20261125T150000Z.db", 100),
            obj("prod-20261125T160000Z.db", 100),
            obj("prod-20261125T170000Z.db", 100),
            obj("other-20261125T170000Z.db", 100),
            obj("notes.txt", 1),
        ];
        let mut sidecars = HashMap::new();
        let json = |m: &SnapshotMeta| serde_json::to_vec(m).expect("json");
        sidecars.insert(
            "prod-20261125T140000Z.db".to_string(),
            json(&meta("prod-20261125T140000Z.db", 100)),
        );
        sidecars.insert(
            "prod-20261125T160000Z.db".to_string(),
            json(&meta("prod-20261125T160000Z.db", 99)),
        );
        sidecars.insert("prod-20261125T170000Z.db".to_string(), b"{not json".to_vec());
        let got = entries("prod", &objects, &sidecars);
        let states: Vec<(&str, &BackupState)> = got.iter().map(|e| (&e.name[5..20], &e.state)).collect();
        assert_eq!(
            states,
            [
                ("20261125T170000", &BackupState::Damaged),
                ("20261125T160000", &BackupState::Damaged),
                ("20261125T150000", &BackupState::Incomplete),
                ("20261125T140000", &BackupState::Verified),
            ]
        );
        assert!(
            got[1]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("sidecar says 99")),
            "{:?}",
            got[1]
        );
        assert_eq!(got[3].meta.as_ref().map(|m| m.revision), Some(42));
    }
}
