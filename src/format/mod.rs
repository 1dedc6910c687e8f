//! Format v1: an indexed, multi-frame `.tar.zst`.
//!
//! A snapshot object is, byte for byte:
//!
//! ```text
//! [zstd frame 0][zstd frame 1]...[zstd frame N-1]   <- a POSIX/pax tar stream, cut
//!                                                      into pieces of `frame_size`
//! [skippable frame: compressed index]              <- file table, frame table, ...
//! [skippable frame: 64-byte footer]                <- where the index is, its digest
//! ```
//!
//! Stock `zstd -d` skips the skippable frames, so `zstd -d | tar -x` restores the
//! tree. A reader opens a snapshot from the tail: one suffix read holds the footer
//! and usually the whole index. docs/FORMAT.md is the byte-level specification.

pub mod footer;
pub mod index;
pub mod limits;
pub mod path;
pub mod tarhdr;
pub mod tarread;
pub mod time;
pub mod writer;

pub use footer::Footer;
pub use index::{Entry, Frame, Index, Kind, Parent, FLAG_OPAQUE};

/// Length of every digest in the format (blake3, truncated).
pub const DIGEST_LEN: usize = 16;

/// A truncated blake3 digest.
pub type Digest = [u8; DIGEST_LEN];

/// The current (and only) format version.
pub const FORMAT_VERSION: u16 = 1;

/// Tar block size.
pub const BLOCK: u64 = 512;

/// Default uncompressed size of one data frame.
///
/// A cold read of a small file waits for its whole compressed frame and for
/// the decoder to reach the file, so the frame size sets the cost of every
/// miss. 512 KiB at level 7 keeps snapshots within ~1% of one plain
/// `zstd -3` stream (512 KiB at level 3 costs ~10%, 1 MiB at level 5 ~1.2%)
/// and halves the bytes per miss of 1 MiB frames; round trips over a network
/// are the fetch layer's business (adjacent frames coalesce into one read).
pub const DEFAULT_FRAME_SIZE: usize = 512 * 1024;

/// Default zstd level of data frames (see [`DEFAULT_FRAME_SIZE`]).
pub const DEFAULT_LEVEL: i32 = 7;

/// Digest of a byte string: blake3 truncated to [`DIGEST_LEN`] bytes.
pub fn digest(data: &[u8]) -> Digest {
    truncate(blake3::hash(data))
}

/// Truncate a full blake3 hash to a format digest.
pub fn truncate(h: blake3::Hash) -> Digest {
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&h.as_bytes()[..DIGEST_LEN]);
    out
}

/// Lowercase hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Round up to the next tar block.
pub fn pad_block(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}
