//! The fixed-size footer: the last 64 bytes of every snapshot.
//!
//! It is a zstd skippable frame (so stock `zstd -d` ignores it) whose payload
//! says where the index frame is, how long it is and what its digest is.
//! Every byte is checked: tag, version, flags, reserved, and the index location
//! must match the object size exactly.

use super::{Digest, DIGEST_LEN, FORMAT_VERSION};
use crate::error::{Error, Result};

/// Magic of the skippable frame that holds the index.
pub const INDEX_MAGIC: u32 = 0x184D_2A5C;
/// Magic of the skippable frame that holds the footer.
pub const FOOTER_MAGIC: u32 = 0x184D_2A5D;
/// Size of the footer frame in bytes, header included.
pub const FOOTER_LEN: usize = 64;
/// Payload length of the footer frame.
const PAYLOAD_LEN: u32 = 56;
/// Tag at the start of the footer payload.
const TAG: &[u8; 8] = b"LZSNAPFT";
/// Length of a skippable frame header (magic + size).
pub const SKIPPABLE_HEADER: usize = 8;

/// Where the index lives and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Format version of the snapshot.
    pub version: u16,
    /// Offset of the index skippable frame (its header) in the object.
    pub index_offset: u64,
    /// Total length of the index skippable frame, header included.
    pub index_len: u64,
    /// Length of the index once decompressed.
    pub index_raw_len: u64,
    /// Digest of the index frame's payload (the compressed index bytes).
    pub index_digest: Digest,
}

impl Footer {
    /// Encode to the 64 bytes that end a snapshot.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..4].copy_from_slice(&FOOTER_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&PAYLOAD_LEN.to_le_bytes());
        b[8..16].copy_from_slice(TAG);
        b[16..18].copy_from_slice(&self.version.to_le_bytes());
        // 18..20 flags, 20..24 reserved: zero.
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_raw_len.to_le_bytes());
        b[48..64].copy_from_slice(&self.index_digest);
        b
    }

    /// Decode and check the last 64 bytes of an object of `object_size` bytes.
    pub fn decode(b: &[u8], object_size: u64, what: &str) -> Result<Footer> {
        let bad = |why: &str| Error::corrupt(what, format!("footer: {why}"));
        if b.len() != FOOTER_LEN || object_size < FOOTER_LEN as u64 {
            return Err(bad("object too short to hold a footer"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(0) != FOOTER_MAGIC || u32_at(4) != PAYLOAD_LEN || &b[8..16] != TAG {
            return Err(bad("no lazysnap footer (not a lazysnap snapshot, or truncated)"));
        }
        let version = u16_at(16);
        if version != FORMAT_VERSION {
            return Err(Error::Unsupported {
                what: what.to_string(),
                why: format!("format version {version} (this build reads {FORMAT_VERSION})"),
            });
        }
        if u16_at(18) != 0 || u32_at(20) != 0 {
            return Err(bad("unknown flags or non-zero reserved bytes"));
        }
        let mut index_digest = [0u8; DIGEST_LEN];
        index_digest.copy_from_slice(&b[48..64]);
        let f = Footer {
            version,
            index_offset: u64_at(24),
            index_len: u64_at(32),
            index_raw_len: u64_at(40),
            index_digest,
        };
        let end = f.index_offset.checked_add(f.index_len);
        if end != Some(object_size - FOOTER_LEN as u64) || f.index_len < SKIPPABLE_HEADER as u64 {
            return Err(bad("index location does not match the object size (truncated?)"));
        }
        Ok(f)
    }

    /// Check the index frame header and return its payload (compressed index).
    pub fn index_payload<'a>(&self, frame: &'a [u8], what: &str) -> Result<&'a [u8]> {
        let bad = |why: &str| Error::corrupt(what, format!("index: {why}"));
        if frame.len() as u64 != self.index_len {
            return Err(bad("short read"));
        }
        let magic = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let size = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if magic != INDEX_MAGIC || u64::from(size) + SKIPPABLE_HEADER as u64 != self.index_len {
            return Err(bad("bad index frame header"));
        }
        let payload = &frame[SKIPPABLE_HEADER..];
        if super::digest(payload) != self.index_digest {
            return Err(bad("digest mismatch"));
        }
        Ok(payload)
    }
}

/// Header of a skippable frame with `magic` around `len` payload bytes.
pub fn skippable_header(magic: u32, len: usize) -> Result<[u8; SKIPPABLE_HEADER]> {
    let len =
        u32::try_from(len).map_err(|_| Error::refused("index", "larger than 4 GiB (a zstd skippable frame limit)"))?;
    let mut h = [0u8; SKIPPABLE_HEADER];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Footer {
        Footer {
            version: FORMAT_VERSION,
            index_offset: 1000,
            index_len: 200,
            index_raw_len: 999,
            index_digest: [7; DIGEST_LEN],
        }
    }

    #[test]
    fn round_trip() {
        let f = sample();
        let b = f.encode();
        assert_eq!(Footer::decode(&b, 1264, "t").unwrap(), f);
    }

    #[test]
    fn every_flipped_byte_is_caught_or_changes_location() {
        let f = sample();
        let good = f.encode();
        for i in 0..FOOTER_LEN {
            let mut b = good;
            b[i] ^= 0x01;
            match Footer::decode(&b, 1264, "t") {
                Err(_) => {}
                // Flips in the digest or raw length decode, but then cannot
                // match the index bytes; the reader checks both.
                Ok(g) => assert!(
                    g.index_digest != f.index_digest || g.index_raw_len != f.index_raw_len,
                    "byte {i}"
                ),
            }
        }
    }

    #[test]
    fn wrong_size_is_truncation() {
        assert!(Footer::decode(&sample().encode(), 1263, "t").is_err());
    }
}
