//! Fetching frames: ranged reads, digest checks, decompression.
//!
//! Every frame is checked against its digest *before* it is decompressed, so
//! wrong bytes never reach a reader. Adjacent frames are coalesced into one
//! ranged read of up to [`MAX_REQUEST`] bytes; several reads run at once.

pub mod cache;
pub mod fetcher;
pub mod stream;

pub use crate::format::index::frame_range;

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use crate::error::{Error, Result};
use crate::format::{self, Frame};
use crate::store::{ObjectHandle, Priority};

/// Largest coalesced ranged read (S3 likes 8-16 MiB requests).
pub const MAX_REQUEST: u64 = 8 << 20;

/// Check a compressed frame and decompress it.
pub fn decode_frame(no: usize, f: &Frame, compressed: &[u8], what: &str) -> Result<Bytes> {
    check_frame(no, f, compressed, what)?;
    decode_checked(no, f, compressed, what, Vec::new(), |_| {}).map(Bytes::from)
}

/// Decode buffers kept for reuse, up to a number of bytes. Decoding into a
/// fresh buffer costs the kernel a page fault (or a populate call) and the
/// zeroing of every page; decoding into one already mapped does not
/// (measured: a fresh buffer per frame was 15 % of a remote extract's CPU).
#[derive(Debug, Default)]
pub struct Spares {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
    max_bytes: usize,
}

impl Spares {
    /// Keep at most `max_bytes` of buffers.
    pub fn new(max_bytes: usize) -> Spares {
        Spares {
            bufs: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// A buffer for a `len`-byte frame: a spare one of about that size (a
    /// bigger one would hold memory nobody counts), else a new one.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        match self
            .bufs
            .iter()
            .position(|b| b.capacity() >= len && b.capacity() <= len + len / 4)
        {
            Some(k) => {
                let b = self.bufs.swap_remove(k);
                self.bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Keep `buf` for reuse if there is room; else free it.
    pub fn keep(&mut self, buf: Vec<u8>) {
        if self.bytes + buf.capacity() <= self.max_bytes && buf.capacity() > 0 {
            self.bytes += buf.capacity();
            self.bufs.push(buf);
        }
    }

    /// Buffers kept.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// No buffer kept.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
}

/// Compressed bytes handed to the decoder per step. zstd decodes whole
/// blocks (up to 128 KiB of output), so a reader waiting on the start of a
/// frame is served after about one block instead of the whole frame.
const DECODE_STEP: usize = 16 << 10;

thread_local! {
    /// One decompression context per (blocking) thread, reused across
    /// frames: [0] decodes straight into a buffer reserved up front, [1]
    /// into one that grows with the output.
    static DCTX: RefCell<[Option<DCtx<'static>>; 2]> = const { RefCell::new([None, None]) };
}

/// A frame may declare at most this many times its compressed size before
/// its buffer is grown with the output instead of reserved up front (real
/// frames compress 2-10:1; runs of zeros far more, and still decode, just
/// without the up-front reservation).
const RESERVE_RATIO: usize = 64;

/// How much a growing decode buffer gains at least per step.
const GROW_STEP: usize = 128 << 10;

/// Check a compressed frame's length and digest.
pub fn check_frame(no: usize, f: &Frame, compressed: &[u8], what: &str) -> Result<()> {
    if compressed.len() as u64 != f.c_len {
        return Err(Error::corrupt(what, format!("frame {no}: short read")));
    }
    if format::digest(compressed) != f.digest {
        return Err(Error::corrupt(what, format!("frame {no}: digest mismatch")));
    }
    Ok(())
}

/// Decompress a frame that passed [`check_frame`] step by step into `out`
/// (a reused buffer, or empty), calling `progress` with the decoded prefix
/// after each step; returns the whole frame, in `out`. Checking first means every
/// prefix handed out is authentic.
pub fn decode_checked(
    no: usize,
    f: &Frame,
    compressed: &[u8],
    what: &str,
    mut out: Vec<u8>,
    mut progress: impl FnMut(&[u8]),
) -> Result<Vec<u8>> {
    let corrupt = |why: String| Error::corrupt(what, format!("frame {no}: {why}"));
    let u_len = usize::try_from(f.u_len)
        .ok()
        .filter(|&n| n as u64 <= format::limits::MAX_FRAME)
        .ok_or_else(|| corrupt("frame larger than 64 MiB".into()))?;
    // Reserve up front only what the compressed bytes could plausibly hold.
    let stable = out.capacity() >= u_len || u_len <= compressed.len().saturating_mul(RESERVE_RATIO).max(1 << 20);
    DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = match &mut cell[usize::from(!stable)] {
            Some(d) => d,
            slot => {
                let mut d = DCtx::try_create().ok_or_else(|| corrupt("cannot create a zstd context".into()))?;
                // Decode straight into our buffer: no window copy.
                d.set_parameter(DParameter::StableOutBuffer(stable))
                    .map_err(|c| corrupt(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
                slot.insert(d)
            }
        };
        let zerr = |c: usize| corrupt(format!("zstd: {}", zstd::zstd_safe::get_error_name(c)));
        dctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        out.clear();
        if stable && out.capacity() < u_len {
            out.reserve_exact(u_len);
            crate::sys::prefault(&mut out);
        }
        let mut finished = false;
        for chunk in compressed.chunks(DECODE_STEP) {
            if finished {
                return Err(corrupt("bytes after the end of the zstd frame".into()));
            }
            let mut input = InBuffer::around(chunk);
            while input.pos() < chunk.len() {
                if !stable && out.capacity() - out.len() < GROW_STEP && out.capacity() < u_len {
                    // Grow with the output actually produced, never past u_len.
                    let more = (u_len - out.len()).min(out.len().max(GROW_STEP));
                    out.reserve_exact(more);
                }
                // A stable buffer stays put between steps (StableOutBuffer).
                let pos = out.len();
                let mut output = OutBuffer::around_pos(&mut out, pos);
                let before_in = input.pos();
                let hint = dctx.decompress_stream(&mut output, &mut input).map_err(zerr)?;
                let produced = output.pos() - pos;
                if hint == 0 {
                    finished = true;
                    break;
                }
                if input.pos() == before_in && produced == 0 && (stable || out.capacity() >= u_len) {
                    return Err(corrupt("zstd frame larger than its index entry".into()));
                }
            }
            if finished && input.pos() < chunk.len() {
                return Err(corrupt("bytes after the end of the zstd frame".into()));
            }
            progress(&out);
        }
        if !finished || out.len() != u_len {
            return Err(corrupt("wrong decompressed length".into()));
        }
        Ok(out)
    })
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
pub async fn fetch_run(object: &ObjectHandle, frames: &[Frame], run: Range<usize>, what: &str) -> Result<Vec<Bytes>> {
    let raw = fetch_raw(object, frames, run.clone(), Priority::Foreground).await?;
    decode_run(raw, frames, run, what).await.into_iter().collect()
}

/// The compressed bytes of a run of adjacent frames, in one ranged read
/// for a reader of priority `prio`.
pub async fn fetch_raw(object: &ObjectHandle, frames: &[Frame], run: Range<usize>, prio: Priority) -> Result<Bytes> {
    if run.is_empty() {
        return Ok(Bytes::new());
    }
    let first = frames[run.start];
    let last = frames[run.end - 1];
    object.get_range(first.c_off..last.c_off + last.c_len, prio).await
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
            .map(|_| Err(Error::Internal(format!("decompression task failed: {e}"))))
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

    #[test]
    fn spares_are_bounded_in_bytes_and_matched_by_size() {
        let mut s = Spares::new(3000);
        s.keep(Vec::with_capacity(1000));
        s.keep(Vec::with_capacity(1500));
        // Over the bound: freed, not kept.
        s.keep(Vec::with_capacity(1000));
        assert_eq!(s.len(), 2);
        // Nothing within a quarter above 500 bytes.
        assert_eq!(s.take(500).capacity(), 0);
        assert_eq!(s.take(1300).capacity(), 1500);
        assert_eq!(s.take(1000).capacity(), 1000);
        assert!(s.is_empty());
        // Taking made room again.
        s.keep(Vec::with_capacity(2500));
        assert_eq!(s.len(), 1);
    }

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

    /// `len` bytes that compress to several zstd blocks but not to nothing.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 7 == 0 {
                    (x % 251) as u8
                } else {
                    b"lazysnap"[i % 8]
                }
            })
            .collect()
    }

    fn frame_of(plain: &[u8], compressed: &[u8]) -> Frame {
        Frame {
            c_off: 0,
            c_len: compressed.len() as u64,
            u_off: 0,
            u_len: plain.len() as u64,
            digest: format::digest(compressed),
        }
    }

    #[test]
    fn decoding_hands_out_growing_prefixes_of_the_frame() {
        let plain = sample(1 << 20);
        let z = zstd::bulk::compress(&plain, 3).expect("compress");
        let f = frame_of(&plain, &z);
        let mut seen = Vec::new();
        check_frame(0, &f, &z, "t").expect("check");
        let out = decode_checked(0, &f, &z, "t", Vec::new(), |p| {
            assert_eq!(p, &plain[..p.len()]);
            seen.push(p.len());
        })
        .expect("decode");
        assert_eq!(&out[..], &plain[..]);
        assert!(seen.len() > 4, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        // A reader of the first bytes is served long before the end.
        assert!(seen.iter().any(|&n| n > 0 && n <= 256 << 10), "{seen:?}");
        assert_eq!(seen.last(), Some(&plain.len()));
        // A reused buffer and context decode the same.
        let again = decode_checked(0, &f, &z, "t", vec![7; 3], |_| {}).expect("decode again");
        assert_eq!(again, out);
    }

    #[test]
    fn authentic_but_malformed_frames_are_errors_not_data() {
        let plain = sample(300_000);
        let z = zstd::bulk::compress(&plain, 3).expect("compress");
        let err = |c: &[u8], f: &Frame| match decode_frame(3, f, c, "snap") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("decoded"),
        };
        // Digests match in every case: the index itself says so.
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"garbage");
        assert!(err(&trailing, &frame_of(&plain, &trailing)).contains("after the end"));
        let cut = &z[..z.len() - 10];
        assert!(err(cut, &frame_of(&plain, cut)).contains("frame 3"));
        let mut f = frame_of(&plain, &z);
        f.u_len -= 1;
        assert!(err(&z, &f).contains("frame 3"));
        f.u_len += 2;
        assert!(err(&z, &f).contains("wrong decompressed length"));
        let mut bad = frame_of(&plain, &z);
        bad.digest[0] ^= 1;
        assert!(err(&z, &bad).contains("digest mismatch"));
    }
}
