//! The format's size limits (docs/FORMAT.md, "Limits").
//!
//! Every declared size, count and length in a snapshot is hostile until
//! bounded: readers check these before they allocate or loop, and the
//! writer refuses to produce anything a reader would refuse. Counts are
//! bounded by the bytes present (every item takes at least one byte), and
//! nothing is ever allocated from a declared length larger than the bytes
//! actually there: a crafted 4 KiB object makes a reader allocate a few MiB
//! at most, whatever its footer and index claim.

/// Largest uncompressed length of one data frame (and of `--frame-size`).
pub const MAX_FRAME: u64 = 64 << 20;

/// Largest compressed length of one data frame: zstd's worst case for
/// [`MAX_FRAME`] bytes of incompressible input, rounded up.
pub const MAX_FRAME_COMPRESSED: u64 = MAX_FRAME + (MAX_FRAME >> 7) + (1 << 16);

/// Longest path inside a snapshot, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Longest path component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// Longest symlink or hardlink target, in bytes.
pub const MAX_LINK: usize = 4096;

/// Longest extended attribute name (Linux `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;

/// Largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 << 10;

/// Most extended attributes on one entry.
pub const MAX_XATTRS: usize = 1024;

/// Longest parent snapshot name.
pub const MAX_PARENT_NAME: usize = 512;

/// Largest compressed index frame.
pub const MAX_INDEX_COMPRESSED: u64 = 256 << 20;

/// Largest decompressed index.
pub const MAX_INDEX_RAW: u64 = 256 << 20;

/// The largest decompressed index a compressed payload of `compressed`
/// bytes may declare: 64 times its size plus 256 KiB (real indexes, full of
/// 16-byte digests, compress about 3:1), and never more than [`MAX_INDEX_RAW`].
pub fn max_index_raw(compressed: u64) -> u64 {
    compressed
        .saturating_mul(64)
        .saturating_add(256 << 10)
        .min(MAX_INDEX_RAW)
}

/// The most bytes all entry paths of an index of `raw` bytes may add up to:
/// front coding lets a path reuse its predecessor's bytes, so without a
/// budget a small index could expand to gigabytes of paths. 16 times the
/// index plus 256 KiB (a real index's paths are 2-6 times its size).
pub fn path_budget(raw: u64) -> u64 {
    raw.saturating_mul(16).saturating_add(256 << 10)
}
