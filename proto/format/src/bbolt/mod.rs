//! A read-only reader of bbolt v1.3.6 database files, the format of etcd's
//! backend and of its snapshots: meta pages, the B+tree of branch and leaf
//! pages with their overflow pages, buckets (inline and nested), and the
//! consistency check `tx.Check()` runs.
//!
//! Pages are read on demand with positioned reads, so memory stays bounded
//! by the depth of the tree times the page size however large the file is.
//! Every offset and length the file holds is checked before it is used: a
//! damaged or foreign file gives a [`BoltError`] that says what is wrong,
//! never a panic, and a page referenced twice is an error, so a walk ends.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// bbolt's magic number, the first field of a meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The data format version bbolt 1.x writes.
pub const VERSION: u32 = 2;
/// `meta.freelist` when no freelist is written (etcd on Linux sets `NoFreelistSync`).
pub const NO_FREELIST: u64 = u64::MAX;
/// The deepest recursion (tree levels plus bucket nesting) a walk accepts;
/// real bbolt trees are a handful of levels deep.
pub const MAX_DEPTH: usize = 128;

const PAGE_HEADER: usize = 16;
const META_LEN: usize = 64;
/// The meta fields the checksum covers: all of them before the checksum.
const META_CHECKSUMMED: usize = 56;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
const BUCKET_LEAF: u32 = 0x01;
/// The page size bbolt assumes when meta page 0 is unreadable (the OS page size on amd64).
const DEFAULT_PAGE_SIZE: u32 = 4096;
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 1 << 20;

/// Positioned reads: a file, or bytes in memory (for tests).
pub trait ReadAt {
    /// Fills `buf` from `offset`, or fails (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let source = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(source);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// A meta page's fields (bbolt `meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (whose entries are the top-level buckets).
    pub root: u64,
    /// The root bucket's sequence.
    pub sequence: u64,
    /// The freelist page, or [`NO_FREELIST`].
    pub freelist: u64,
    /// The high-water mark: pages `0..pgid` make up the database.
    pub pgid: u64,
    /// The transaction that wrote this meta page.
    pub txid: u64,
    /// FNV-1a 64 of the fields before it; 0 means "not checked" to bbolt.
    pub checksum: u64,
}

impl Meta {
    fn parse(raw: &[u8; META_LEN]) -> Meta {
        Meta {
            magic: u32_at(raw, 0),
            version: u32_at(raw, 4),
            page_size: u32_at(raw, 8),
            flags: u32_at(raw, 12),
            root: u64_at(raw, 16),
            sequence: u64_at(raw, 24),
            freelist: u64_at(raw, 32),
            pgid: u64_at(raw, 40),
            txid: u64_at(raw, 48),
            checksum: u64_at(raw, 56),
        }
    }

    /// bbolt's `meta.validate`, plus a sane page size.
    fn validate(&self, raw: &[u8; META_LEN]) -> Result<(), MetaProblem> {
        if self.magic != MAGIC {
            return Err(MetaProblem::Magic(self.magic));
        }
        if self.version != VERSION {
            return Err(MetaProblem::Version(self.version));
        }
        let computed = fnv1a64(&raw[..META_CHECKSUMMED]);
        if self.checksum != 0 && self.checksum != computed {
            return Err(MetaProblem::Checksum {
                stored: self.checksum,
                computed,
            });
        }
        if !self.page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(MetaProblem::PageSize(self.page_size));
        }
        Ok(())
    }
}

/// Why a meta page is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaProblem {
    /// The file ends before the meta page at this offset.
    Missing {
        offset: u64,
    },
    /// Reading it failed.
    Unreadable {
        offset: u64,
        error: String,
    },
    Magic(u32),
    Version(u32),
    Checksum {
        stored: u64,
        computed: u64,
    },
    PageSize(u32),
    /// Meta page 1 says another page size than meta page 0.
    PageSizeDiffers {
        found: u32,
        expected: u32,
    },
}

impl fmt::Display for MetaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaProblem::Missing { offset } => write!(f, "the file ends before offset {offset}"),
            MetaProblem::Unreadable { offset, error } => {
                write!(f, "cannot read it at offset {offset}: {error}")
            }
            MetaProblem::Magic(magic) => write!(f, "magic is {magic:#010x}, not {MAGIC:#010x}"),
            MetaProblem::Version(version) => write!(f, "version is {version}, not {VERSION}"),
            MetaProblem::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum is {stored:#018x}, the fields sum to {computed:#018x}"
                )
            }
            MetaProblem::PageSize(size) => {
                write!(
                    f,
                    "page size {size} is not a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}"
                )
            }
            MetaProblem::PageSizeDiffers { found, expected } => {
                write!(f, "page size {found} differs from meta page 0's {expected}")
            }
        }
    }
}

/// Where a page reference or an element lives, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Meta page 0 or 1.
    Meta(u64),
    /// A page of the file.
    Page(u64),
    /// An inline bucket stored in a leaf element of this page.
    InlineIn(u64),
}

impl Location {
    fn page(self) -> u64 {
        match self {
            Location::Meta(id) | Location::Page(id) | Location::InlineIn(id) => id,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Meta(id) => write!(f, "meta page {id}"),
            Location::Page(id) => write!(f, "page {id}"),
            Location::InlineIn(id) => write!(f, "an inline bucket in page {id}"),
        }
    }
}

/// What is wrong with a file that is not a readable bbolt database.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("cannot read the file at offset {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("not an etcd snapshot: the file is empty")]
    Empty,
    #[error("not an etcd snapshot: {len} bytes is too short for a bbolt database")]
    TooShort { len: u64 },
    #[error("not an etcd snapshot: no valid bbolt meta page (page 0: {meta0}; page 1: {meta1})")]
    NoValidMeta { meta0: MetaProblem, meta1: MetaProblem },
    #[error("meta page {page} (txid {txid}) is inconsistent: {what}")]
    BadMeta { page: u64, txid: u64, what: String },
    #[error(
        "the file is truncated: its meta page (txid {txid}) says the database spans {needed} bytes \
         ({pages} pages of {page_size}), but the file holds only {len}"
    )]
    Truncated {
        txid: u64,
        needed: u64,
        pages: u64,
        page_size: u32,
        len: u64,
    },
    #[error("{from} points to page {pgid}, outside the database ({high_water} pages)")]
    PageOutOfRange {
        from: Location,
        pgid: u64,
        high_water: u64,
    },
    #[error(
        "page {pgid} claims {overflow} overflow pages, running past the end of the database ({high_water} pages)"
    )]
    PageOverrun {
        pgid: u64,
        overflow: u32,
        high_water: u64,
    },
    #[error("page {pgid} has id {found} in its header: the page is damaged or was never written")]
    WrongPageId { pgid: u64, found: u64 },
    #[error("page {pgid} is a {found} page where a {expected} page belongs")]
    WrongPageType {
        pgid: u64,
        found: PageType,
        expected: &'static str,
    },
    #[error("page {pgid} is referenced more than once (a cycle or shared pages in the tree)")]
    MultipleReferences { pgid: u64 },
    #[error("page {pgid} is in the freelist but still part of the tree")]
    ReachableFreed { pgid: u64 },
    #[error("page {pgid} is listed twice in the freelist")]
    DoubleFreed { pgid: u64 },
    #[error("{count} pages are neither in the tree nor in the freelist, the first is page {first}")]
    Unreachable { first: u64, count: u64 },
    #[error("freelist page {pgid} is damaged: {what}")]
    BadFreelist { pgid: u64, what: String },
    #[error("{at} is damaged: {what}")]
    BadElement { at: Location, what: String },
    #[error("branch page {pgid} has no elements")]
    EmptyBranch { pgid: u64 },
    #[error("the tree is nested more than {MAX_DEPTH} levels deep at page {pgid}")]
    TooDeep { pgid: u64 },
    #[error("bucket \"{name}\" in {at} is damaged: {what}")]
    BadBucket {
        at: Location,
        name: String,
        what: String,
    },
    #[error("top-level entry \"{name}\" in {at} is not a bucket")]
    NotABucket { at: Location, name: String },
}

impl BoltError {
    /// True when the file is not a bbolt database at all (rather than a damaged one).
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            BoltError::Empty | BoltError::TooShort { .. } | BoltError::NoValidMeta { .. }
        )
    }
}

/// A page's type, from its header flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageType(pub u16);

impl fmt::Display for PageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            BRANCH_PAGE => f.write_str("branch"),
            LEAF_PAGE => f.write_str("leaf"),
            META_PAGE => f.write_str("meta"),
            FREELIST_PAGE => f.write_str("freelist"),
            other => write!(f, "unknown ({other:#06x})"),
        }
    }
}

/// One step of [`Db::walk`], in the order bbolt's cursors give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A top-level bucket, before its entries; in byte order of names.
    Bucket(&'a [u8]),
    /// An entry of the last top-level bucket, in key order. The value is
    /// `None` for a nested bucket, as bbolt's `ForEach` gives it.
    Entry { key: &'a [u8], value: Option<&'a [u8]> },
}

/// An open bbolt database: its source and the meta page in force.
#[derive(Debug)]
pub struct Db<R = File> {
    source: R,
    len: u64,
    page_size: u32,
    meta: Meta,
    meta_page: u64,
}

impl<R: ReadAt> Db<R> {
    /// Reads and checks the meta pages of a database of `len` bytes.
    /// Trailing bytes past the database (etcd's sha256 trailer) are ignored.
    pub fn new(source: R, len: u64) -> Result<Db<R>, BoltError> {
        if len == 0 {
            return Err(BoltError::Empty);
        }
        if len < (PAGE_HEADER + META_LEN) as u64 {
            return Err(BoltError::TooShort { len });
        }
        let meta0 = read_meta(&source, len, 0);
        let (page_size, meta1) = match &meta0 {
            Ok(m0) => {
                let meta1 = read_meta(&source, len, u64::from(m0.page_size)).and_then(|m1| {
                    if m1.page_size == m0.page_size {
                        Ok(m1)
                    } else {
                        Err(MetaProblem::PageSizeDiffers {
                            found: m1.page_size,
                            expected: m0.page_size,
                        })
                    }
                });
                (m0.page_size, meta1)
            }
            // bbolt assumes the OS page size when meta 0 is bad; also try
            // the other page sizes so a database of another size is found.
            Err(_) => find_meta1(&source, len),
        };
        let (meta, meta_page) = match (meta0, meta1) {
            (Ok(m0), Ok(m1)) if m1.txid > m0.txid => (m1, 1),
            (Ok(m0), _) => (m0, 0),
            (Err(_), Ok(m1)) => (m1, 1),
            (Err(meta0), Err(meta1)) => return Err(BoltError::NoValidMeta { meta0, meta1 }),
        };
        let bad = |what: String| BoltError::BadMeta {
            page: meta_page,
            txid: meta.txid,
            what,
        };
        if meta.pgid < 2 {
            return Err(bad(format!(
                "its high-water mark {} leaves no room for the meta pages",
                meta.pgid
            )));
        }
        let needed = meta
            .pgid
            .checked_mul(u64::from(page_size))
            .ok_or_else(|| bad(format!("its high-water mark {} is absurd", meta.pgid)))?;
        if needed > len {
            return Err(BoltError::Truncated {
                txid: meta.txid,
                needed,
                pages: meta.pgid,
                page_size,
                len,
            });
        }
        if !(2..meta.pgid).contains(&meta.root) {
            return Err(bad(format!(
                "its root page {} is not in 2..{}",
                meta.root, meta.pgid
            )));
        }
        if meta.freelist != NO_FREELIST && !(2..meta.pgid).contains(&meta.freelist) {
            return Err(bad(format!(
                "its freelist page {} is not in 2..{}",
                meta.freelist, meta.pgid
            )));
        }
        Ok(Db {
            source,
            len,
            page_size,
            meta,
            meta_page,
        })
    }

    /// The meta page in force (the valid one with the higher txid).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Which meta page is in force, 0 or 1.
    pub fn meta_page(&self) -> u64 {
        self.meta_page
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The database's size as bbolt's `tx.Size()` gives it: high-water
    /// mark × page size (trailing bytes excluded).
    pub fn size(&self) -> u64 {
        self.meta.pgid * u64::from(self.page_size)
    }

    /// Checks the database as `tx.Check()` does and gives every top-level
    /// bucket and its entries to `visit`, in order. Stops at the first
    /// problem found; `visit` may have seen items before it.
    pub fn walk(&self, visit: &mut dyn FnMut(Item<'_>)) -> Result<(), BoltError> {
        let mut walker = Walker::new(self, visit)?;
        walker.walk_tree(Location::Meta(self.meta_page), self.meta.root, 0, Mode::TopLevel)?;
        walker.finish()
    }

    /// Checks the database as `tx.Check()` does.
    pub fn check(&self) -> Result<(), BoltError> {
        self.walk(&mut |_| {})
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BoltError> {
        self.source
            .read_exact_at(buf, offset)
            .map_err(|source| BoltError::Read { offset, source })
    }

    /// Reads a page and its overflow pages after checking that they lie in
    /// the database, that the header names this page and has this type.
    fn read_page(
        &self,
        from: Location,
        pgid: u64,
        expected: &[u16],
        what: &'static str,
    ) -> Result<Page, BoltError> {
        let high_water = self.meta.pgid;
        if pgid >= high_water {
            return Err(BoltError::PageOutOfRange {
                from,
                pgid,
                high_water,
            });
        }
        let page_size = u64::from(self.page_size);
        let start = pgid * page_size;
        let mut data = vec![0; self.page_size as usize];
        self.read_at(&mut data, start)?;
        let found = u64_at(&data, 0);
        let flags = u16_at(&data, 8);
        let count = u16_at(&data, 10);
        let overflow = u32_at(&data, 12);
        if found != pgid {
            return Err(BoltError::WrongPageId { pgid, found });
        }
        if !expected.contains(&flags) {
            return Err(BoltError::WrongPageType {
                pgid,
                found: PageType(flags),
                expected: what,
            });
        }
        let last = pgid + u64::from(overflow);
        if last >= high_water {
            return Err(BoltError::PageOverrun {
                pgid,
                overflow,
                high_water,
            });
        }
        if overflow > 0 {
            // In bounds: last < high_water and high_water × page_size ≤ len.
            let span = (last + 1 - pgid) * page_size;
            debug_assert!(start + span <= self.len);
            let span = usize::try_from(span).map_err(|_| BoltError::PageOverrun {
                pgid,
                overflow,
                high_water,
            })?;
            data.resize(span, 0);
            self.read_at(&mut data[self.page_size as usize..], start + page_size)?;
        }
        Ok(Page {
            id: pgid,
            flags,
            count,
            overflow,
            data,
        })
    }
}

/// Reads the meta page at `offset`, valid or why not.
fn read_meta<R: ReadAt>(source: &R, len: u64, offset: u64) -> Result<Meta, MetaProblem> {
    let start = offset + PAGE_HEADER as u64;
    if start + META_LEN as u64 > len {
        return Err(MetaProblem::Missing {
            offset: start + META_LEN as u64,
        });
    }
    let mut raw = [0; META_LEN];
    source
        .read_exact_at(&mut raw, start)
        .map_err(|e| MetaProblem::Unreadable {
            offset: start,
            error: e.to_string(),
        })?;
    let meta = Meta::parse(&raw);
    meta.validate(&raw)?;
    Ok(meta)
}

/// Meta page 1 when meta page 0 is bad: at bbolt's default page size first,
/// then at any other page size whose meta page says that size.
fn find_meta1<R: ReadAt>(source: &R, len: u64) -> (u32, Result<Meta, MetaProblem>) {
    let default = read_meta(source, len, u64::from(DEFAULT_PAGE_SIZE));
    if default.as_ref().is_ok_and(|m| m.page_size == DEFAULT_PAGE_SIZE) {
        return (DEFAULT_PAGE_SIZE, default);
    }
    let mut size = MIN_PAGE_SIZE;
    while size <= MAX_PAGE_SIZE {
        if size != DEFAULT_PAGE_SIZE
            && let Ok(meta) = read_meta(source, len, u64::from(size))
            && meta.page_size == size
        {
            return (size, Ok(meta));
        }
        size *= 2;
    }
    let meta1 = default.and_then(|m| {
        Err(MetaProblem::PageSizeDiffers {
            found: m.page_size,
            expected: DEFAULT_PAGE_SIZE,
        })
    });
    (DEFAULT_PAGE_SIZE, meta1)
}

/// A page read from the file, overflow pages included.
#[derive(Debug)]
struct Page {
    id: u64,
    flags: u16,
    count: u16,
    overflow: u32,
    data: Vec<u8>,
}

/// What a walk does with the entries of the tree it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The root bucket: every entry is a top-level bucket to visit.
    TopLevel,
    /// A top-level bucket: visit its entries; check nested buckets.
    Entries,
    /// A nested bucket: only check it.
    CheckOnly,
}

/// A page's elements, from a page of the file or an inline bucket's value.
#[derive(Debug, Clone, Copy)]
struct Elements<'a> {
    at: Location,
    count: usize,
    /// From the page header on.
    data: &'a [u8],
}

/// A leaf element.
#[derive(Debug, Clone, Copy)]
struct Leaf<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> Elements<'a> {
    fn new(at: Location, count: u16, data: &'a [u8]) -> Result<Elements<'a>, BoltError> {
        let count = usize::from(count);
        let needed = PAGE_HEADER + count * ELEMENT;
        if needed > data.len() {
            return Err(BoltError::BadElement {
                at,
                what: format!(
                    "{count} elements need {needed} bytes, the page holds {}",
                    data.len()
                ),
            });
        }
        Ok(Elements { at, count, data })
    }

    fn offset(&self, index: usize) -> usize {
        PAGE_HEADER + index * ELEMENT
    }

    /// The child page of branch element `index` (< count).
    fn branch_child(&self, index: usize) -> u64 {
        u64_at(self.data, self.offset(index) + 8)
    }

    /// Leaf element `index` (< count): the key is `pos` bytes after the element, the value follows it.
    fn leaf(&self, index: usize) -> Result<Leaf<'a>, BoltError> {
        let at = self.offset(index);
        let flags = u32_at(self.data, at);
        let pos = u32_at(self.data, at + 4) as usize;
        let ksize = u32_at(self.data, at + 8) as usize;
        let vsize = u32_at(self.data, at + 12) as usize;
        let key_start = at + pos;
        let key_end = key_start.checked_add(ksize);
        let value_end = key_end.and_then(|end| end.checked_add(vsize));
        match (key_end, value_end) {
            (Some(key_end), Some(value_end)) if value_end <= self.data.len() => Ok(Leaf {
                flags,
                key: &self.data[key_start..key_end],
                value: &self.data[key_end..value_end],
            }),
            _ => Err(BoltError::BadElement {
                at: self.at,
                what: format!(
                    "leaf element {index} (key of {ksize} bytes and value of {vsize} bytes at {pos} bytes on) \
                     runs past the page's {} bytes",
                    self.data.len()
                ),
            }),
        }
    }
}

/// The state of one walk: pages seen, pages freed, and the visitor.
struct Walker<'d, 'v, R> {
    db: &'d Db<R>,
    visit: &'v mut dyn FnMut(Item<'_>),
    reachable: PageSet,
    /// The freelist's pages, when the database has a freelist page.
    freed: Option<PageSet>,
}

impl<'d, 'v, R: ReadAt> Walker<'d, 'v, R> {
    fn new(db: &'d Db<R>, visit: &'v mut dyn FnMut(Item<'_>)) -> Result<Self, BoltError> {
        let mut reachable = PageSet::new(db.meta.pgid);
        reachable.insert(0);
        reachable.insert(1);
        let mut walker = Walker {
            db,
            visit,
            reachable,
            freed: None,
        };
        if db.meta.freelist != NO_FREELIST {
            walker.load_freelist()?;
        }
        Ok(walker)
    }

    /// Reads the freelist page (bbolt `freelist.read`) and marks its pages.
    fn load_freelist(&mut self) -> Result<(), BoltError> {
        let pgid = self.db.meta.freelist;
        let page = self.db.read_page(
            Location::Meta(self.db.meta_page),
            pgid,
            &[FREELIST_PAGE],
            "freelist",
        )?;
        self.mark(&page)?;
        let bad = |what: String| BoltError::BadFreelist { pgid, what };
        let (first, count) = if page.count == u16::MAX {
            // The real count is the first u64 after the header.
            let count = page
                .data
                .get(PAGE_HEADER..PAGE_HEADER + 8)
                .map(|_| u64_at(&page.data, PAGE_HEADER));
            (
                PAGE_HEADER + 8,
                count.ok_or_else(|| bad("no room for its count".into()))?,
            )
        } else {
            (PAGE_HEADER, u64::from(page.count))
        };
        let room = ((page.data.len() - first) / 8) as u64;
        if count > room {
            return Err(bad(format!("it lists {count} pages but has room for {room}")));
        }
        let mut freed = PageSet::new(self.db.meta.pgid);
        for i in 0..count as usize {
            let id = u64_at(&page.data, first + i * 8);
            // Pages past the high-water mark cannot be reached; like bbolt, ignore them.
            if id < self.db.meta.pgid && !freed.insert(id) {
                return Err(BoltError::DoubleFreed { pgid: id });
            }
        }
        self.freed = Some(freed);
        Ok(())
    }

    /// Marks a page and its overflow pages as reached, once only.
    fn mark(&mut self, page: &Page) -> Result<(), BoltError> {
        for id in page.id..=page.id + u64::from(page.overflow) {
            if !self.reachable.insert(id) {
                return Err(BoltError::MultipleReferences { pgid: id });
            }
        }
        Ok(())
    }

    /// Walks the tree rooted at `pgid` in key order.
    fn walk_tree(&mut self, from: Location, pgid: u64, depth: usize, mode: Mode) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(BoltError::TooDeep { pgid });
        }
        let page = self
            .db
            .read_page(from, pgid, &[BRANCH_PAGE, LEAF_PAGE], "branch or leaf")?;
        self.mark(&page)?;
        if self.freed.as_ref().is_some_and(|freed| freed.contains(pgid)) {
            return Err(BoltError::ReachableFreed { pgid });
        }
        let at = Location::Page(pgid);
        let elements = Elements::new(at, page.count, &page.data)?;
        if page.flags == BRANCH_PAGE {
            if elements.count == 0 {
                return Err(BoltError::EmptyBranch { pgid });
            }
            for index in 0..elements.count {
                self.walk_tree(at, elements.branch_child(index), depth + 1, mode)?;
            }
        } else {
            for index in 0..elements.count {
                let leaf = elements.leaf(index)?;
                self.leaf_entry(at, leaf, depth, mode)?;
            }
        }
        Ok(())
    }

    fn leaf_entry(
        &mut self,
        at: Location,
        leaf: Leaf<'_>,
        depth: usize,
        mode: Mode,
    ) -> Result<(), BoltError> {
        let is_bucket = leaf.flags & BUCKET_LEAF != 0;
        match mode {
            Mode::TopLevel => {
                if !is_bucket {
                    return Err(BoltError::NotABucket {
                        at,
                        name: printable(leaf.key),
                    });
                }
                (self.visit)(Item::Bucket(leaf.key));
                self.walk_bucket(at, leaf, depth + 1, Mode::Entries)
            }
            Mode::Entries => {
                let value = (!is_bucket).then_some(leaf.value);
                (self.visit)(Item::Entry { key: leaf.key, value });
                if is_bucket {
                    self.walk_bucket(at, leaf, depth + 1, Mode::CheckOnly)
                } else {
                    Ok(())
                }
            }
            Mode::CheckOnly if is_bucket => self.walk_bucket(at, leaf, depth + 1, Mode::CheckOnly),
            Mode::CheckOnly => Ok(()),
        }
    }

    /// Opens the bucket whose header is `leaf.value` (bbolt `openBucket`) and walks it.
    fn walk_bucket(
        &mut self,
        at: Location,
        leaf: Leaf<'_>,
        depth: usize,
        mode: Mode,
    ) -> Result<(), BoltError> {
        let bad = |what: String| BoltError::BadBucket {
            at,
            name: printable(leaf.key),
            what,
        };
        if leaf.value.len() < BUCKET_HEADER {
            return Err(bad(format!(
                "its value is {} bytes, shorter than a bucket header ({BUCKET_HEADER})",
                leaf.value.len()
            )));
        }
        let root = u64_at(leaf.value, 0);
        if root != 0 {
            return self.walk_tree(at, root, depth, mode);
        }
        // Inline: a leaf page follows the header inside the value. bbolt's
        // check ignores inline buckets, and their nested buckets with them.
        if mode == Mode::CheckOnly {
            return Ok(());
        }
        let inline = &leaf.value[BUCKET_HEADER..];
        if inline.len() < PAGE_HEADER {
            return Err(bad(format!(
                "its inline page is {} bytes, shorter than a page header",
                inline.len()
            )));
        }
        let flags = u16_at(inline, 8);
        if flags != LEAF_PAGE {
            return Err(bad(format!(
                "its inline page is a {} page, not a leaf",
                PageType(flags)
            )));
        }
        let inline_at = Location::InlineIn(at.page());
        let elements = Elements::new(inline_at, u16_at(inline, 10), inline)?;
        for index in 0..elements.count {
            let entry = elements.leaf(index)?;
            let value = (entry.flags & BUCKET_LEAF == 0).then_some(entry.value);
            (self.visit)(Item::Entry {
                key: entry.key,
                value,
            });
        }
        Ok(())
    }

    /// With a freelist: every page is in the tree or free (bbolt's last check).
    fn finish(self) -> Result<(), BoltError> {
        let Some(freed) = &self.freed else { return Ok(()) };
        let mut first = None;
        let mut count = 0;
        for id in 0..self.db.meta.pgid {
            if !self.reachable.contains(id) && !freed.contains(id) {
                first.get_or_insert(id);
                count += 1;
            }
        }
        match first {
            Some(first) => Err(BoltError::Unreachable { first, count }),
            None => Ok(()),
        }
    }
}

/// A set of page ids below the high-water mark.
#[derive(Debug)]
struct PageSet {
    bits: Vec<u64>,
}

impl PageSet {
    fn new(pages: u64) -> PageSet {
        PageSet {
            bits: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// Adds `id`; false when it was there already. Ids past the end are ignored.
    fn insert(&mut self, id: u64) -> bool {
        let Some(word) = self.bits.get_mut((id / 64) as usize) else {
            return true;
        };
        let bit = 1 << (id % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }

    fn contains(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }
}

/// A key or bucket name for messages: text as is, other bytes escaped.
fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = bytes.get(..MAX).unwrap_or(bytes);
    let mut text = shown.escape_ascii().to_string();
    if bytes.len() > MAX {
        text.push_str("...");
    }
    text
}

/// FNV-1a 64 (Go's `hash/fnv.New64a`), bbolt's meta checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// Little-endian fields at offsets the callers have checked are in bounds.

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(any(test, feature = "test-support"))]
pub mod sample;
#[cfg(test)]
mod tests;
