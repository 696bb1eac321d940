//! The reader's tests, on the hand-built databases of [`super::sample`].

use super::sample::*;
use super::*;

fn items(db: &[u8]) -> Result<Vec<String>, BoltError> {
    let db = Db::new(db, db.len() as u64)?;
    let mut seen = Vec::new();
    db.walk(&mut |item| {
        seen.push(match item {
            Item::Bucket(name) => format!("bucket {}", printable(name)),
            Item::Entry { key, value: None } => format!("  {} (bucket)", printable(key)),
            Item::Entry { key, value: Some(v) } => format!("  {} = {} bytes", printable(key), v.len()),
        })
    })?;
    Ok(seen)
}

fn set_u64(db: &mut [u8], at: usize, value: u64) {
    db[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Recomputes a meta page's checksum after an edit.
fn reseal_meta(db: &mut [u8], page: usize) {
    let start = page * PS + PAGE_HEADER;
    let sum = fnv1a64(&db[start..start + META_CHECKSUMMED]);
    set_u64(db, start + META_CHECKSUMMED, sum);
}

#[test]
fn walks_buckets_and_entries_in_order() {
    let db = sample_db();
    let seen = items(&db).expect("valid");
    let expected = [
        "bucket key",
        "  \\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02_\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00 = 2 bytes",
        "  \\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x03_\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00 = 2 bytes",
        "  \\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x04_\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00t = 5000 bytes",
        "bucket meta",
        "  consistent_index = 8 bytes",
        "  scheduled = 1 bytes",
        "bucket nest",
        "  plain = 1 bytes",
        "  sub (bucket)",
    ];
    assert_eq!(seen, expected);
    let opened = Db::new(db.as_slice(), db.len() as u64).expect("valid");
    assert_eq!(opened.meta_page(), 1, "the higher txid wins");
    assert_eq!(opened.size(), 8 * PS as u64);
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut db = sample_db();
    db.extend_from_slice(&[0xAB; 32]);
    assert_eq!(items(&db).expect("valid").len(), 10);
}

#[test]
fn falls_back_to_the_other_meta_page() {
    let mut db = sample_db();
    db[PS + PAGE_HEADER + 20] ^= 0xFF; // meta 1's root, checksum now wrong
    let opened = Db::new(db.as_slice(), db.len() as u64).expect("meta 0 still valid");
    assert_eq!(opened.meta_page(), 0);
    let mut db = sample_db();
    db[PAGE_HEADER] ^= 0xFF; // meta 0's magic
    let opened = Db::new(db.as_slice(), db.len() as u64).expect("meta 1 still valid");
    assert_eq!(opened.meta_page(), 1);
    assert_eq!(items(&db).expect("valid").len(), 10);
}

#[test]
fn empty_and_tiny_files_are_not_snapshots() {
    assert!(matches!(Db::new(&[][..], 0), Err(BoltError::Empty)));
    let text = b"hello, this is not a database\n";
    let err = Db::new(&text[..], text.len() as u64).expect_err("text");
    assert_eq!(
        err.to_string(),
        "not an etcd snapshot: 30 bytes is too short for a bbolt database"
    );
    let text = b"a longer text, still not a database: it says hello, many times over.\n".repeat(3);
    let err = Db::new(text.as_slice(), text.len() as u64).expect_err("text");
    assert!(err.is_foreign());
    assert!(
        err.to_string()
            .starts_with("not an etcd snapshot: no valid bbolt meta page"),
        "{err}"
    );
}

#[test]
fn random_bytes_are_not_snapshots() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for len in [1, 79, 80, 4096, 8192, 65536 + 32] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let err = Db::new(bytes.as_slice(), len as u64).expect_err("random");
        assert!(err.is_foreign(), "{len}: {err}");
    }
}

#[test]
fn a_truncated_meta_or_database_is_reported() {
    let db = sample_db();
    let err = Db::new(&db[..40], 40).expect_err("cut meta");
    assert!(matches!(err, BoltError::TooShort { len: 40 }), "{err}");
    let err = Db::new(&db[..1000], 1000).expect_err("one meta page, no second");
    assert!(matches!(err, BoltError::Truncated { .. }), "{err}");
    let err = Db::new(&db[..PS + 50], (PS + 50) as u64).expect_err("one meta page, cut short");
    assert!(matches!(err, BoltError::Truncated { .. }), "{err}");
    let cut = &db[..5 * PS];
    let err = Db::new(cut, cut.len() as u64).expect_err("pages missing");
    assert!(err.to_string().starts_with("the file is truncated"), "{err}");
}

#[test]
fn both_meta_pages_bad_names_both_problems() {
    let mut db = sample_db();
    db[PAGE_HEADER + 4] = 9; // meta 0's version
    db[PS + PAGE_HEADER + 50] ^= 1; // meta 1's txid: checksum wrong
    let err = Db::new(db.as_slice(), db.len() as u64).expect_err("no meta");
    let text = err.to_string();
    assert!(text.contains("page 0: version is 9"), "{text}");
    assert!(text.contains("page 1: checksum is"), "{text}");
}

#[test]
fn a_cycle_is_an_error_not_a_hang() {
    let mut db = sample_db();
    // The branch page 3's second child points back to page 3.
    let element = 3 * PS + PAGE_HEADER + ELEMENT;
    set_u64(&mut db, element + 8, 3);
    let err = items(&db).expect_err("cycle");
    assert!(matches!(err, BoltError::MultipleReferences { pgid: 3 }), "{err}");
    // Two buckets sharing one tree.
    let mut db = sample_db();
    let root_leaf = Elements::new(Location::Page(2), 3, &db[2 * PS..3 * PS]).expect("elements");
    let nest = root_leaf.leaf(2).expect("nest");
    assert_eq!(nest.key, b"nest");
    let offset = nest.value.as_ptr() as usize - db.as_ptr() as usize;
    set_u64(&mut db, offset, 3); // "nest" now shares "key"'s tree
    let err = items(&db).expect_err("shared");
    assert!(matches!(err, BoltError::MultipleReferences { .. }), "{err}");
}

#[test]
fn references_outside_the_database_are_errors() {
    let mut db = sample_db();
    set_u64(&mut db, 3 * PS + PAGE_HEADER + 8, 183);
    let err = items(&db).expect_err("outside");
    assert_eq!(
        err.to_string(),
        "page 3 points to page 183, outside the database (8 pages)"
    );
    let mut db = sample_db();
    db[5 * PS + 12] = 200; // page 5's overflow
    let err = items(&db).expect_err("overrun");
    assert!(matches!(err, BoltError::PageOverrun { pgid: 5, .. }), "{err}");
    let mut db = sample_db();
    set_u64(&mut db, 4 * PS, 0); // page 4's header id
    let err = items(&db).expect_err("wrong id");
    assert!(
        matches!(err, BoltError::WrongPageId { pgid: 4, found: 0 }),
        "{err}"
    );
}

#[test]
fn elements_past_the_page_are_errors() {
    let mut db = sample_db();
    // page 4's first element: key size huge.
    db[4 * PS + PAGE_HEADER + 8..4 * PS + PAGE_HEADER + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = items(&db).expect_err("key past page");
    assert!(
        err.to_string().starts_with("page 4 is damaged: leaf element 0"),
        "{err}"
    );
    let mut db = sample_db();
    db[4 * PS + 10] = 0xFF; // page 4's count
    let err = items(&db).expect_err("too many elements");
    assert!(matches!(err, BoltError::BadElement { .. }), "{err}");
}

#[test]
fn a_synced_freelist_is_checked() {
    // Page 8 is a freelist listing page 9: consistent.
    let mut db = sample_db();
    let freelist = |ids: &[u64]| {
        let body: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        page(8, FREELIST_PAGE, ids.len() as u16, &body)
    };
    db.extend(freelist(&[9]));
    db.extend(vec![0; PS]);
    let mut with = |ids: &[u64]| {
        db[8 * PS..9 * PS].copy_from_slice(&freelist(ids));
        for m in 0..2 {
            let start = m * PS + PAGE_HEADER;
            set_u64(&mut db, start + 32, 8);
            set_u64(&mut db, start + 40, 10);
            reseal_meta(&mut db, m);
        }
        items(&db)
    };
    assert!(with(&[9]).is_ok());
    assert!(matches!(
        with(&[]),
        Err(BoltError::Unreachable { first: 9, count: 1 })
    ));
    assert!(matches!(with(&[9, 9]), Err(BoltError::DoubleFreed { pgid: 9 })));
    assert!(matches!(
        with(&[9, 4]),
        Err(BoltError::ReachableFreed { pgid: 4 })
    ));
}

#[test]
fn a_top_level_value_is_not_a_bucket() {
    let mut db = sample_db();
    db[2 * PS + PAGE_HEADER] = 0; // "key" loses its bucket flag
    let err = items(&db).expect_err("not a bucket");
    assert_eq!(
        err.to_string(),
        "top-level entry \"key\" in page 2 is not a bucket"
    );
}

/// Every single-byte change of a valid database either reads or fails
/// with an error: never a panic, never a hang.
#[test]
fn no_byte_flip_panics() {
    let db = sample_db();
    let mut copy = db.clone();
    for at in 0..db.len() {
        for flip in [0x01, 0xFF] {
            copy[at] ^= flip;
            let _ = items(&copy);
            copy[at] = db[at];
        }
    }
    // Also with both meta checksums made to match each change.
    for at in (2 * PS..db.len()).step_by(7) {
        copy[at] = copy[at].wrapping_add(0x55);
        let _ = items(&copy);
        copy[at] = db[at];
    }
    for at in PAGE_HEADER..PAGE_HEADER + META_CHECKSUMMED {
        for page in 0..2 {
            copy[page * PS + at] ^= 0x40;
            reseal_meta(&mut copy, page);
            let _ = items(&copy);
            copy[page * PS + at] = db[page * PS + at];
            reseal_meta(&mut copy, page);
        }
    }
}
