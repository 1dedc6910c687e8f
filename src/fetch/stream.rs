//! An ordered stream of every frame of a snapshot, fetched in parallel.
//!
//! Used by full reads (extract, verify, squash). Frames are grouped into
//! runs of adjacent frames; up to `parallel` runs are fetched at once, each
//! with one ranged read whose body is cut into frames as it arrives. A
//! frame is checked and decompressed (on a blocking thread, one per run)
//! as soon as its last byte is in, and frames come out in order. So the
//! reader is served while a run is still arriving, and the object's last
//! bytes are decoded moments after they land, not a whole run later.
//! Memory stays at a few runs whatever the snapshot size: at most
//! `parallel + AHEAD` runs are held ahead of the reader.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::{check_frame, decode_checked, Spares, MAX_REQUEST};
use crate::error::{Error, Result};
use crate::format::Frame;
use crate::store::{ObjectHandle, Priority};

/// One decompressed frame and its position in the tar stream.
#[derive(Debug, Clone)]
pub struct FrameData {
    /// Offset of `data` in the tar stream.
    pub u_off: u64,
    /// The decompressed bytes.
    pub data: Bytes,
}

/// The first read of a stream. The first runs share the link, so the
/// reader's first frames arrive sooner when the first run is small. Later
/// runs double up to [`MAX_REQUEST`].
const FIRST_REQUEST: u64 = 1 << 20;

/// What a full read may ask for while the index is still on its way: the
/// first two runs of the ramp (1 + 2 MiB). Still arriving when the index
/// has come, it keeps the link busy while the next runs' requests (on new
/// connections: two round trips) get going.
pub const EARLY_HEAD: u64 = 3 * FIRST_REQUEST;

/// Decompressed bytes a run may hold at most (at least one frame): a run
/// of highly compressible frames stays small in memory too.
const MAX_RUN_DECODED: u64 = 64 << 20;

/// Runs fetched or decoded ahead of the reader beyond the `parallel`
/// being fetched, so a reader busy with one run does not idle the link.
const AHEAD: usize = 2;

/// All frames as runs of adjacent frames, the first of at most `first`
/// compressed bytes, each next one allowed twice as many, up to `max`;
/// and none of more than `max_decoded` decompressed bytes (a run has at
/// least one frame).
fn ramped_runs(frames: &[Frame], first: u64, max: u64, max_decoded: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut cap = first.clamp(1, max.max(1));
    let (mut start, mut bytes, mut decoded) = (0, 0u64, 0u64);
    for (i, f) in frames.iter().enumerate() {
        if i > start && (bytes + f.c_len > cap || decoded + f.u_len > max_decoded) {
            out.push(start..i);
            start = i;
            (bytes, decoded) = (0, 0);
            cap = cap.saturating_mul(2).min(max.max(1));
        }
        bytes += f.c_len;
        decoded += f.u_len;
    }
    if start < frames.len() {
        out.push(start..frames.len());
    }
    out
}

/// Stream frames `frames` in order. Must be called within a tokio runtime.
pub fn stream_frames(
    object: ObjectHandle,
    frames: Arc<Vec<Frame>>,
    parallel: usize,
    what: String,
) -> mpsc::Receiver<Result<FrameData>> {
    let (tx, rx) = mpsc::channel(16);
    let parallel = parallel.max(1);
    // Each run's frames (and how many there must be), in run order; the
    // bound is what may be held ahead of the reader.
    type RunFrames = (mpsc::UnboundedReceiver<Result<FrameData>>, usize);
    let (runs_tx, mut runs_rx) = mpsc::channel::<RunFrames>(parallel + AHEAD - 1);
    // Permits to fetch, taken in run order, so runs start in order.
    let link = Arc::new(Semaphore::new(parallel));
    let spares = StreamSpares::new();
    tokio::spawn(async move {
        for run in ramped_runs(&frames, FIRST_REQUEST, MAX_REQUEST, MAX_RUN_DECODED) {
            let (out, run_rx) = mpsc::unbounded_channel();
            if runs_tx.send((run_rx, run.len())).await.is_err() {
                return;
            }
            let Ok(permit) = link.clone().acquire_owned().await else {
                return;
            };
            let (object, frames, what, spares) = (object.clone(), frames.clone(), what.clone(), spares.clone());
            tokio::spawn(async move { fetch_streamed(&object, &frames, run, &what, permit, &out, &spares).await });
        }
    });
    tokio::spawn(async move {
        while let Some((mut run, mut count)) = runs_rx.recv().await {
            while let Some(item) = run.recv().await {
                let failed = item.is_err();
                count = count.saturating_sub(1);
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            if count > 0 {
                let _ = tx
                    .send(Err(Error::Internal("a fetch task ended before its frames".into())))
                    .await;
                return;
            }
        }
    });
    rx
}

/// The decode buffers of one stream: a frame's buffer comes back when the
/// last slice of the frame is dropped, and decodes a later frame.
#[derive(Clone)]
struct StreamSpares(Arc<parking_lot::Mutex<Spares>>);

/// Buffers a stream keeps for reuse: enough for the frames that are
/// released while others are being decoded.
const SPARE_BYTES: usize = 32 << 20;

impl StreamSpares {
    fn new() -> StreamSpares {
        StreamSpares(Arc::new(parking_lot::Mutex::new(Spares::new(SPARE_BYTES))))
    }

    fn take(&self, len: u64) -> Vec<u8> {
        self.0.lock().take(usize::try_from(len).unwrap_or(usize::MAX))
    }
}

/// A decoded frame's buffer, handed back to its stream when dropped.
struct Spare {
    buf: Vec<u8>,
    home: StreamSpares,
}

impl AsRef<[u8]> for Spare {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.home.0.lock().keep(std::mem::take(&mut self.buf));
    }
}

/// Fetch run `run` of `frames` with one streamed read, cutting its body
/// into frames as it arrives and decoding each on a blocking thread as
/// soon as it is whole; every frame (or the first error, after the frames
/// before it) goes to `out`, in order. `permit` is held while the read is.
async fn fetch_streamed(
    object: &ObjectHandle,
    frames: &Arc<Vec<Frame>>,
    run: Range<usize>,
    what: &str,
    permit: OwnedSemaphorePermit,
    out: &mpsc::UnboundedSender<Result<FrameData>>,
    spares: &StreamSpares,
) {
    if run.is_empty() {
        return;
    }
    let (ztx, zrx) = std::sync::mpsc::channel::<(usize, Bytes)>();
    let decoder = {
        let (frames, what, out, spares) = (frames.clone(), what.to_string(), out.clone(), spares.clone());
        tokio::task::spawn_blocking(move || {
            for (i, raw) in zrx {
                let f = &frames[i];
                let r = check_frame(i, f, &raw, &what)
                    .and_then(|()| decode_checked(i, f, &raw, &what, spares.take(f.u_len), |_| {}))
                    .map(|buf| FrameData {
                        u_off: f.u_off,
                        data: Bytes::from_owner(Spare {
                            buf,
                            home: spares.clone(),
                        }),
                    });
                let failed = r.is_err();
                if out.send(r).is_err() || failed {
                    return;
                }
            }
        })
    };
    let (first, last) = (frames[run.start], frames[run.end - 1]);
    let mut next = run.start;
    let mut partial = BytesMut::new();
    let read = object
        .stream_range(
            first.c_off..last.c_off + last.c_len,
            Priority::Foreground,
            &mut |mut piece: Bytes| {
                while !piece.is_empty() {
                    let Some(f) = frames.get(next).filter(|_| next < run.end) else {
                        return Err(Error::Internal("a read longer than its frames".into()));
                    };
                    let need = usize::try_from(f.c_len).unwrap_or(usize::MAX);
                    let whole = if partial.is_empty() && piece.len() >= need {
                        // The frame lies within the piece: no copy.
                        piece.split_to(need)
                    } else {
                        partial.reserve(need - partial.len());
                        let take = (need - partial.len()).min(piece.len());
                        partial.extend_from_slice(&piece.split_to(take));
                        if partial.len() < need {
                            continue;
                        }
                        partial.split().freeze()
                    };
                    if ztx.send((next, whole)).is_err() {
                        return Err(Error::Internal("the decoder stopped".into()));
                    }
                    next += 1;
                }
                Ok(())
            },
        )
        .await;
    drop(permit);
    // The frames before a failure are delivered first, then the failure.
    drop(ztx);
    if let Err(e) = decoder.await {
        let _ = out.send(Err(Error::Internal(format!("decompression task failed: {e}"))));
    }
    if let Err(e) = read {
        let _ = out.send(Err(e));
    }
}

/// Blocking reader over a frame stream: the tar stream as `std::io::Read`.
pub struct StreamReader {
    rx: mpsc::Receiver<Result<FrameData>>,
    cur: Bytes,
    progress: indicatif::ProgressBar,
    /// Set when the stream failed; the error is returned to the caller.
    pub error: Option<crate::error::Error>,
}

impl StreamReader {
    /// Wrap a frame stream. Use from a blocking thread only.
    pub fn new(rx: mpsc::Receiver<Result<FrameData>>) -> StreamReader {
        StreamReader {
            rx,
            cur: Bytes::new(),
            progress: indicatif::ProgressBar::hidden(),
            error: None,
        }
    }

    /// Count frames read on `pb`.
    pub fn with_progress(mut self, pb: indicatif::ProgressBar) -> StreamReader {
        self.progress = pb;
        self
    }

    /// The next frame (blocking), or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<FrameData>> {
        let f = self.rx.blocking_recv().transpose()?;
        if let Some(f) = &f {
            self.progress.inc(f.data.len() as u64);
        }
        Ok(f)
    }
}

impl std::io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.next_frame() {
                Ok(Some(f)) => self.cur = f.data,
                Ok(None) => return Ok(0),
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_buffer_comes_back_when_its_last_slice_is_dropped() {
        let spares = StreamSpares::new();
        let mut buf = spares.take(1000);
        buf.resize(1000, 7);
        let at = buf.as_ptr();
        let frame = Bytes::from_owner(Spare {
            buf,
            home: spares.clone(),
        });
        let slice = frame.slice(10..20);
        drop(frame);
        assert!(spares.0.lock().is_empty(), "back while a slice lives");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        // The next frame of about that size decodes into the same memory;
        // one much smaller does not pin it.
        assert!(spares.take(100).capacity() < 1000);
        let again = spares.take(900);
        assert_eq!(again.as_ptr(), at);
        assert!(spares.0.lock().is_empty());
    }

    #[test]
    fn runs_start_small_and_double_up_to_the_cap() {
        let frames: Vec<Frame> = (0..40u64)
            .map(|i| Frame {
                c_off: i * 100,
                c_len: 100,
                u_off: i * 300,
                u_len: 300,
                digest: [0; 16],
            })
            .collect();
        let runs = ramped_runs(&frames, 200, 800, u64::MAX);
        let lens: Vec<usize> = runs.iter().map(std::ops::Range::len).collect();
        assert_eq!(lens, vec![2, 4, 8, 8, 8, 8, 2]);
        assert!(runs.windows(2).all(|w| w[0].end == w[1].start) && runs[0].start == 0);
        // Frames larger than the cap are runs of their own.
        assert_eq!(ramped_runs(&frames[..3], 50, 800, u64::MAX), vec![0..1, 1..2, 2..3]);
        assert!(ramped_runs(&[], 200, 800, u64::MAX).is_empty());
        // Decoded bytes bound a run too: 300 each, at most 1000 a run.
        let lens: Vec<usize> = ramped_runs(&frames, 800, 800, 1000)
            .iter()
            .map(std::ops::Range::len)
            .collect();
        assert_eq!(lens, vec![3; 13].into_iter().chain([1]).collect::<Vec<_>>());
    }
}
