//! etcd's snapshot file format: the bbolt database bytes followed by a
//! 32-byte sha256 of them (the integrity trailer `etcdctl snapshot save`
//! writes and `snapshot restore` checks). Shared by the agent (which checks
//! what it streams and stages) and the coordinator (which checks what it
//! writes and stores).

use sha2::{Digest, Sha256};

/// Length of the trailer.
pub const TRAILER: usize = 32;

/// Hashes a stream whose last 32 bytes are the digest of the rest.
#[derive(Debug, Default)]
pub struct TrailerCheck {
    hasher: Sha256,
    tail: Vec<u8>,
    total: u64,
}

impl TrailerCheck {
    pub fn update(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > TRAILER {
            let cut = self.tail.len() - TRAILER;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    /// `Ok((total bytes, hex digest))` when the trailer matches the bytes
    /// before it.
    pub fn finish(self) -> Result<(u64, String), TrailerError> {
        if self.tail.len() < TRAILER {
            return Err(TrailerError::TooShort { total: self.total });
        }
        let digest = self.hasher.finalize();
        if digest.as_slice() != self.tail.as_slice() {
            return Err(TrailerError::Mismatch {
                db_bytes: self.total - TRAILER as u64,
                computed: hex::encode(digest),
                trailer: hex::encode(&self.tail),
            });
        }
        Ok((self.total, hex::encode(digest)))
    }
}

/// A stream that is not a sound snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    #[error("snapshot too short ({total} bytes): no sha256 trailer")]
    TooShort { total: u64 },
    #[error(
        "snapshot integrity check failed: sha256 of the {db_bytes} database bytes is {computed}, the trailer says {trailer}"
    )]
    Mismatch {
        db_bytes: u64,
        computed: String,
        trailer: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trailer(db: &[u8]) -> Vec<u8> {
        let mut file = db.to_vec();
        file.extend_from_slice(&Sha256::digest(db));
        file
    }

    #[test]
    fn trailer_check_accepts_any_chunking() {
        let db: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let file = with_trailer(&db);
        for size in [1, 7, 31, 32, 33, 4096, file.len()] {
            let mut check = TrailerCheck::default();
            for piece in file.chunks(size) {
                check.update(piece);
            }
            let (total, digest) = check.finish().expect("valid");
            assert_eq!(total, file.len() as u64);
            assert_eq!(digest, hex::encode(Sha256::digest(&db)));
        }
    }

    #[test]
    fn trailer_check_rejects_flipped_and_short_input() {
        let mut file = with_trailer(b"some database bytes");
        file[3] ^= 1;
        let mut check = TrailerCheck::default();
        check.update(&file);
        assert!(
            check
                .finish()
                .expect_err("flipped")
                .to_string()
                .contains("integrity check failed")
        );
        let mut check = TrailerCheck::default();
        check.update(b"short");
        assert!(
            check
                .finish()
                .expect_err("short")
                .to_string()
                .contains("no sha256 trailer")
        );
    }
}
