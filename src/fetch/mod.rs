//! Fetching frames: ranged reads, digest checks, decompression.
//!
//! Every frame is checked against its digest *before* it is decompressed, so
//! wrong bytes never reach a reader. Adjacent frames are coalesced into one
//! ranged read of up to [`MAX_REQUEST`] bytes; several reads run at once.

pub mod cache;
pub mod fetcher;
pub mod stream;

pub use crate::format::index::frame_range;

use std::ops::Range;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{self, Frame};
use crate::store::Store;

/// Largest coalesced ranged read (S3 likes 8-16 MiB requests).
pub const MAX_REQUEST: u64 = 8 << 20;

/// Check a compressed frame and decompress it.
pub fn decode_frame(no: usize, f: &Frame, compressed: &[u8], what: &str) -> Result<Bytes> {
    if compressed.len() as u64 != f.c_len {
        return Err(Error::corrupt(what, format!("frame {no}: short read")));
    }
    if format::digest(compressed) != f.digest {
        return Err(Error::corrupt(what, format!("frame {no}: digest mismatch")));
    }
    let out = zstd::bulk::decompress(compressed, f.u_len as usize)
        .map_err(|e| Error::corrupt(what, format!("frame {no}: zstd: {e}")))?;
    if out.len() as u64 != f.u_len {
        return Err(Error::corrupt(what, format!("frame {no}: wrong decompressed length")));
    }
    Ok(Bytes::from(out))
}

/// Split frames `range` into runs of adjacent frames of at most `max` bytes.
pub fn coalesce(frames: &[Frame], range: Range<usize>, max: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    let mut bytes = 0u64;
    for i in range.clone() {
        let len = frames[i].c_len;
        if i > start && bytes + len > max {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < range.end {
        out.push(start..range.end);
    }
    out
}

/// Fetch, check and decompress one run of adjacent frames with one read.
pub async fn fetch_run(
    store: &Store,
    key: &str,
    frames: &[Frame],
    run: Range<usize>,
    what: &str,
) -> Result<Vec<Bytes>> {
    let raw = fetch_raw(store, key, frames, run.clone()).await?;
    decode_run(raw, frames, run, what).await.into_iter().collect()
}

/// The compressed bytes of a run of adjacent frames, in one ranged read.
pub async fn fetch_raw(store: &Store, key: &str, frames: &[Frame], run: Range<usize>) -> Result<Bytes> {
    if run.is_empty() {
        return Ok(Bytes::new());
    }
    let first = frames[run.start];
    let last = frames[run.end - 1];
    store.get_range(key, first.c_off..last.c_off + last.c_len).await
}

/// Check and decompress each frame of a fetched run (on a blocking thread);
/// one result per frame, so one bad frame does not fail its neighbours.
pub async fn decode_run(raw: Bytes, frames: &[Frame], run: Range<usize>, what: &str) -> Vec<Result<Bytes>> {
    let n = run.len();
    let frames: Vec<Frame> = frames[run.clone()].to_vec();
    let what = what.to_string();
    let base = run.start;
    let res = tokio::task::spawn_blocking(move || {
        let c0 = frames.first().map_or(0, |f| f.c_off);
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let s = (f.c_off - c0) as usize;
                let bytes = raw.get(s..s + f.c_len as usize).unwrap_or(&[]);
                decode_frame(base + i, f, bytes, &what)
            })
            .collect::<Vec<_>>()
    })
    .await;
    match res {
        Ok(v) => v,
        Err(e) => (0..n)
            .map(|_| Err(Error::Store(format!("decompression task failed: {e}"))))
            .collect(),
    }
}

/// Append the part of a frame's content that falls inside `range`.
pub fn append_overlap(out: &mut Vec<u8>, f: &Frame, data: &[u8], range: &Range<u64>) {
    let s = range.start.max(f.u_off);
    let e = range.end.min(f.u_off + f.u_len);
    if s < e {
        out.extend_from_slice(&data[(s - f.u_off) as usize..(e - f.u_off) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(lens: &[u64]) -> Vec<Frame> {
        let mut off = 0;
        lens.iter()
            .map(|&l| {
                let f = Frame {
                    c_off: off,
                    c_len: l,
                    u_off: off * 2,
                    u_len: l * 2,
                    digest: [0; 16],
                };
                off += l;
                f
            })
            .collect()
    }

    #[test]
    fn coalesces_up_to_the_cap() {
        let fs = frames(&[4, 4, 4, 9, 1]);
        assert_eq!(coalesce(&fs, 0..5, 8), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(coalesce(&fs, 1..3, 100), vec![1..3]);
        assert!(coalesce(&fs, 2..2, 8).is_empty());
    }
}
