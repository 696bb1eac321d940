//! A small bbolt database built by hand, page by page, for tests of this
//! reader and of what reads snapshots with it (the coordinator's `snapshot
//! status`): compiled for this crate's tests and, in other crates, with the
//! `test-support` feature.

use super::*;

/// The page size of every database built here.
pub const PS: usize = 4096;

/// A leaf element to build: flags, key, value.
pub type Entry<'a> = (u32, &'a [u8], &'a [u8]);

/// A page of `PS` bytes (more with overflow) with this header.
pub fn page(id: u64, flags: u16, count: u16, body: &[u8]) -> Vec<u8> {
    let len = (PAGE_HEADER + body.len()).div_ceil(PS).max(1) * PS;
    let overflow = (len / PS - 1) as u32;
    let mut data = vec![0; len];
    data[..8].copy_from_slice(&id.to_le_bytes());
    data[8..10].copy_from_slice(&flags.to_le_bytes());
    data[10..12].copy_from_slice(&count.to_le_bytes());
    data[12..16].copy_from_slice(&overflow.to_le_bytes());
    data[PAGE_HEADER..PAGE_HEADER + body.len()].copy_from_slice(body);
    data
}

/// The elements and data of a leaf page (without the page header).
pub fn leaf_body(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut elements = Vec::new();
    let mut data = Vec::new();
    let base = entries.len() * ELEMENT;
    for (i, (flags, key, value)) in entries.iter().enumerate() {
        let pos = (base + data.len() - i * ELEMENT) as u32;
        elements.extend_from_slice(&flags.to_le_bytes());
        elements.extend_from_slice(&pos.to_le_bytes());
        elements.extend_from_slice(&(key.len() as u32).to_le_bytes());
        elements.extend_from_slice(&(value.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
    }
    elements.extend_from_slice(&data);
    elements
}

pub fn branch_body(entries: &[(&[u8], u64)]) -> Vec<u8> {
    let mut elements = Vec::new();
    let mut data = Vec::new();
    let base = entries.len() * ELEMENT;
    for (i, (key, child)) in entries.iter().enumerate() {
        let pos = (base + data.len() - i * ELEMENT) as u32;
        elements.extend_from_slice(&pos.to_le_bytes());
        elements.extend_from_slice(&(key.len() as u32).to_le_bytes());
        elements.extend_from_slice(&child.to_le_bytes());
        data.extend_from_slice(key);
    }
    elements.extend_from_slice(&data);
    elements
}

pub fn leaf(id: u64, entries: &[Entry<'_>]) -> Vec<u8> {
    page(id, LEAF_PAGE, entries.len() as u16, &leaf_body(entries))
}

pub fn bucket_value(root: u64, inline: Option<&[Entry<'_>]>) -> Vec<u8> {
    let mut value = root.to_le_bytes().to_vec();
    value.extend_from_slice(&0u64.to_le_bytes());
    if let Some(entries) = inline {
        let body = leaf_body(entries);
        let mut header = vec![0; PAGE_HEADER];
        header[8..10].copy_from_slice(&LEAF_PAGE.to_le_bytes());
        header[10..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        value.extend_from_slice(&header);
        value.extend_from_slice(&body);
    }
    value
}

pub fn meta_page(id: u64, root: u64, freelist: u64, pgid: u64, txid: u64) -> Vec<u8> {
    let mut raw = Vec::new();
    for field in [MAGIC, VERSION, PS as u32, 0] {
        raw.extend_from_slice(&field.to_le_bytes());
    }
    for field in [root, 0, freelist, pgid, txid] {
        raw.extend_from_slice(&field.to_le_bytes());
    }
    raw.extend_from_slice(&fnv1a64(&raw).to_le_bytes());
    page(id, META_PAGE, 0, &raw)
}

/// A small etcd-like database: the root leaf (page 2) holds the buckets
/// `key` (a branch, page 3, over leaves 4 and 5; page 5 overflows into
/// 6), `meta` (inline) and `nest` (a leaf, page 7, holding a nested
/// inline bucket). Pages 0..8.
pub fn sample_db() -> Vec<u8> {
    let big = vec![b'v'; 5000];
    let rev = |main: u64, tomb: bool| {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        if tomb {
            k.push(b't');
        }
        k
    };
    let (k2, k3, k4) = (rev(2, false), rev(3, false), rev(4, true));
    let key_bucket = bucket_value(3, None);
    let meta_bucket = bucket_value(
        0,
        Some(&[
            (0, b"consistent_index", &9u64.to_be_bytes()),
            (0, b"scheduled", b"x"),
        ]),
    );
    let nest_bucket = bucket_value(7, None);
    let nested_inline = bucket_value(0, Some(&[(0, b"a", b"1")]));
    let mut db = meta_page(0, 2, NO_FREELIST, 8, 4);
    db.extend(meta_page(1, 2, NO_FREELIST, 8, 5));
    db.extend(leaf(
        2,
        &[
            (BUCKET_LEAF, b"key", &key_bucket),
            (BUCKET_LEAF, b"meta", &meta_bucket),
            (BUCKET_LEAF, b"nest", &nest_bucket),
        ],
    ));
    db.extend(page(3, BRANCH_PAGE, 2, &branch_body(&[(&k2, 4), (&k4, 5)])));
    db.extend(leaf(4, &[(0, &k2, b"v2"), (0, &k3, b"v3")]));
    let overflowing = leaf(5, &[(0, &k4, &big)]);
    assert_eq!(overflowing.len(), 2 * PS);
    db.extend(overflowing);
    db.extend(leaf(
        7,
        &[(0, b"plain", b"p"), (BUCKET_LEAF, b"sub", &nested_inline)],
    ));
    assert_eq!(db.len(), 8 * PS);
    db
}
