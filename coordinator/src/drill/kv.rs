//! What a snapshot file holds as etcd's key-value store sees it, read from
//! the file alone (`etcdops_format::bbolt`): the store revision, the live
//! key count (what `etcdctl get --count-only` answers on the restored
//! member) and etcd's HashKV at that revision (CRC-32C of the bucket name
//! `key`, then every key and value of the `key` bucket up to the revision,
//! as etcd's `hashByRev`; a finished compaction already removed what it
//! would skip).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use etcdops_format::bbolt::{Db, Item};

use crate::snapshot::status::{Crc32c, SnapshotFileError};

/// The store figures of a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct KvFigures {
    /// Main revision of the last entry in the `key` bucket.
    pub revision: i64,
    /// Keys whose newest entry is not a tombstone.
    pub keys: u64,
    /// etcd's HashKV at `revision`.
    pub hash_kv: u32,
    /// `finishedCompactRev` of the `meta` bucket (0: never compacted).
    pub compact_revision: i64,
}

/// Walks the `key` and `meta` buckets of the snapshot at `path`.
pub fn read(path: &Path) -> Result<KvFigures, SnapshotFileError> {
    let file = File::open(path).map_err(|source| SnapshotFileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| SnapshotFileError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let corrupt = |source| SnapshotFileError::Corrupt {
        path: path.to_path_buf(),
        source,
        trailer_mismatch: false,
    };
    let db = Db::new(&file, len).map_err(corrupt)?;
    let mut walker = Walker::default();
    db.walk(&mut |item| walker.add(item)).map_err(corrupt)?;
    if let Some(len) = walker.short_key {
        return Err(SnapshotFileError::BadRevisionKey {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(walker.figures())
}

#[derive(Default)]
struct Walker {
    bucket: Vec<u8>,
    hash: Crc32c,
    revision: i64,
    compact_revision: i64,
    /// User key → whether its newest entry so far is a tombstone.
    live: HashMap<Vec<u8>, bool>,
    short_key: Option<usize>,
}

impl Walker {
    fn add(&mut self, item: Item<'_>) {
        match item {
            Item::Bucket(name) => {
                self.bucket = name.to_vec();
                if name == b"key" {
                    self.hash.update(b"key");
                }
            }
            Item::Entry { key, value } => {
                let value = value.unwrap_or_default();
                match self.bucket.as_slice() {
                    b"key" => self.key_entry(key, value),
                    b"meta" if key == b"finishedCompactRev" => {
                        if let Some(main) = value.first_chunk::<8>() {
                            self.compact_revision = i64::from_be_bytes(*main);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// An entry of `key`: big-endian main revision, `_`, sub revision, and
    /// `t` for a tombstone; the value an `mvccpb.KeyValue` (key is field 1).
    fn key_entry(&mut self, key: &[u8], value: &[u8]) {
        let Some(main) = key.first_chunk::<8>() else {
            self.short_key.get_or_insert(key.len());
            return;
        };
        if key.len() < 17 {
            self.short_key.get_or_insert(key.len());
            return;
        }
        self.revision = i64::from_be_bytes(*main);
        self.hash.update(key);
        self.hash.update(value);
        let tombstone = key.len() == 18 && key[17] == b't';
        if let Some(user_key) = field_one(value) {
            self.live.insert(user_key.to_vec(), tombstone);
        }
    }

    fn figures(&self) -> KvFigures {
        KvFigures {
            // etcd's store revision starts at 1 (mvcc's first revision):
            // an empty store, or one holding only compacted-away history,
            // reports 1, not 0.
            revision: self.revision.max(1),
            keys: self.live.values().filter(|t| !**t).count() as u64,
            hash_kv: self.hash.value(),
            compact_revision: self.compact_revision,
        }
    }
}

/// The bytes of field 1 (length-delimited) of a protobuf message.
fn field_one(mut msg: &[u8]) -> Option<&[u8]> {
    while !msg.is_empty() {
        let (tag, rest) = varint(msg)?;
        msg = rest;
        match tag & 7 {
            0 => msg = varint(msg)?.1,
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            2 => {
                let (len, rest) = varint(msg)?;
                let len = usize::try_from(len).ok()?;
                let (bytes, rest) = (rest.get(..len)?, rest.get(len..)?);
                if tag >> 3 == 1 {
                    return Some(bytes);
                }
                msg = rest;
            }
            _ => return None,
        }
    }
    None
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &[u8], value: &[u8], mod_revision: u8) -> Vec<u8> {
        // field 1 key, field 3 mod_revision (varint), field 5 value
        let mut m = vec![0x0a, key.len() as u8];
        m.extend_from_slice(key);
        m.extend_from_slice(&[0x18, mod_revision]);
        m.push(0x2a);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
        m
    }

    fn rev(main: i64, tombstone: bool) -> Vec<u8> {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0i64.to_be_bytes());
        if tombstone {
            k.push(b't');
        }
        k
    }

    #[test]
    fn live_keys_follow_the_newest_entry_and_the_hash_covers_every_entry() {
        let mut w = Walker::default();
        w.add(Item::Bucket(b"alarm"));
        w.add(Item::Bucket(b"key"));
        let entries = [
            (rev(2, false), kv(b"a", b"1", 2)),
            (rev(3, false), kv(b"b", b"1", 3)),
            (rev(4, true), kv(b"a", b"", 4)),
            (rev(5, false), kv(b"c", b"1", 5)),
        ];
        let mut expected = Crc32c::default();
        expected.update(b"key");
        for (k, v) in &entries {
            w.add(Item::Entry {
                key: k,
                value: Some(v),
            });
            expected.update(k);
            expected.update(v);
        }
        w.add(Item::Bucket(b"meta"));
        let mut compact = rev(3, false);
        compact.truncate(17);
        w.add(Item::Entry {
            key: b"finishedCompactRev",
            value: Some(&compact),
        });
        let f = w.figures();
        assert_eq!(f.revision, 5);
        assert_eq!(f.keys, 2, "a was deleted; b and c live");
        assert_eq!(f.hash_kv, expected.value());
        assert_eq!(f.compact_revision, 3);
    }

    #[test]
    fn field_one_skips_other_fields_and_refuses_garbage() {
        assert_eq!(field_one(&[0x18, 0x05, 0x0a, 0x02, b'h', b'i']), Some(&b"hi"[..]));
        assert_eq!(field_one(&[0x0a, 0x05, b'h']), None);
        assert_eq!(field_one(&[]), None);
        assert_eq!(field_one(&[0xff]), None);
    }

    #[test]
    fn reads_the_hand_built_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, etcdops_format::bbolt::sample::sample_db()).expect("write");
        let figures = read(&path).expect("figures");
        let status = crate::snapshot::status::read_status(&path).expect("status");
        assert_eq!(figures.revision, status.revision);
    }
}
