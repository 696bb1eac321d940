//! The disk probe's request limits and defaults: what the agent's probe
//! accepts and the CLI (`etcdops check disk`) validates its flags against
//! before it asks. The probe itself lives in the agent (`disk/probe.rs`).

/// Bytes written when a request says 0: etcd's fio guidance (`--size=22m`).
pub const DEFAULT_TOTAL_BYTES: u64 = 22 * 1024 * 1024;
/// Bytes per write when a request says 0: etcd's fio guidance (`--bs=2300`),
/// about the size of a WAL entry.
pub const DEFAULT_BLOCK_SIZE: u32 = 2300;
/// The most a probe may write (1 GiB).
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;
/// The largest block (1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// The most writes (and so latencies kept in memory) one probe may do.
pub const MAX_WRITES: u64 = 1_000_000;

/// What to write: validated sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    total_bytes: u64,
    block_size: u32,
}

/// A request's sizes refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "total_bytes: {0} is above the maximum of {MAX_TOTAL_BYTES} (1 GiB); use 0 for the default ({DEFAULT_TOTAL_BYTES}, 22 MiB)"
    )]
    TotalBytesTooLarge(u64),
    #[error(
        "block_size: {0} is above the maximum of {MAX_BLOCK_SIZE} (1 MiB); use 0 for the default ({DEFAULT_BLOCK_SIZE})"
    )]
    BlockSizeTooLarge(u32),
    #[error(
        "total_bytes: {total_bytes} bytes in blocks of {block_size} would take {writes} writes, above the maximum \
         of {MAX_WRITES}; lower total_bytes or raise block_size"
    )]
    TooManyWrites {
        total_bytes: u64,
        block_size: u32,
        writes: u64,
    },
}

impl OptionsError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            OptionsError::TotalBytesTooLarge(_) | OptionsError::TooManyWrites { .. } => "total_bytes",
            OptionsError::BlockSizeTooLarge(_) => "block_size",
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            total_bytes: DEFAULT_TOTAL_BYTES,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl ProbeOptions {
    /// Sizes as a request gives them: 0 means the default.
    pub fn new(total_bytes: u64, block_size: u32) -> Result<ProbeOptions, OptionsError> {
        let total_bytes = if total_bytes == 0 {
            DEFAULT_TOTAL_BYTES
        } else {
            total_bytes
        };
        let block_size = if block_size == 0 {
            DEFAULT_BLOCK_SIZE
        } else {
            block_size
        };
        if total_bytes > MAX_TOTAL_BYTES {
            return Err(OptionsError::TotalBytesTooLarge(total_bytes));
        }
        if block_size > MAX_BLOCK_SIZE {
            return Err(OptionsError::BlockSizeTooLarge(block_size));
        }
        let options = ProbeOptions {
            total_bytes,
            block_size,
        };
        if options.writes() > MAX_WRITES {
            return Err(OptionsError::TooManyWrites {
                total_bytes,
                block_size,
                writes: options.writes(),
            });
        }
        Ok(options)
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Writes (and fdatasyncs) the probe does: the last block may be short.
    pub fn writes(&self) -> u64 {
        self.total_bytes.div_ceil(u64::from(self.block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_refuse_naming_the_field() {
        let o = ProbeOptions::new(0, 0).expect("defaults");
        assert_eq!((o.total_bytes(), o.block_size()), (22 * 1024 * 1024, 2300));
        assert_eq!(o.writes(), 10_030, "22 MiB / 2300 rounded up");
        assert_eq!(ProbeOptions::new(4600, 2300).expect("ok").writes(), 2);
        assert_eq!(ProbeOptions::new(4601, 2300).expect("ok").writes(), 3);
        assert_eq!(ProbeOptions::new(1, 2300).expect("ok").writes(), 1);
        let cases = [
            ((MAX_TOTAL_BYTES + 1, 0), "total_bytes"),
            ((0, MAX_BLOCK_SIZE + 1), "block_size"),
            ((0, 2 << 20), "block_size"),
            ((MAX_TOTAL_BYTES, 1), "total_bytes"),
        ];
        for ((total, block), field) in cases {
            let err = ProbeOptions::new(total, block).expect_err("refused");
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
        assert!(ProbeOptions::new(MAX_TOTAL_BYTES, MAX_BLOCK_SIZE).is_ok());
    }
}
