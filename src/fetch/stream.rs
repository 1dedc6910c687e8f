//! An ordered stream of every frame of a snapshot, fetched in parallel.
//!
//! Used by full reads (extract, verify, squash): frames are grouped into
//! coalesced runs, up to `parallel` runs are fetched and decompressed at once,
//! and frames come out in order through a bounded channel, so memory stays at
//! roughly `parallel` runs whatever the snapshot size.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{fetch_run, MAX_REQUEST};
use crate::error::Result;
use crate::format::Frame;
use crate::store::ObjectHandle;

/// One decompressed frame and its position in the tar stream.
#[derive(Debug, Clone)]
pub struct FrameData {
    /// Offset of `data` in the tar stream.
    pub u_off: u64,
    /// The decompressed bytes.
    pub data: Bytes,
}

/// The first read of a stream. A run is decoded only once all of it has
/// arrived, and the first runs share the link, so the reader's first bytes
/// come after about `parallel` first runs have crossed it: small first
/// runs let it start at once. Later runs double up to [`MAX_REQUEST`].
const FIRST_REQUEST: u64 = 1 << 20;

/// All frames as runs of adjacent frames, the first of at most `first`
/// bytes, each next one allowed twice as many, up to `max` (a run has at
/// least one frame).
fn ramped_runs(frames: &[Frame], first: u64, max: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut cap = first.clamp(1, max.max(1));
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, f) in frames.iter().enumerate() {
        if i > start && bytes + f.c_len > cap {
            out.push(start..i);
            start = i;
            bytes = 0;
            cap = cap.saturating_mul(2).min(max.max(1));
        }
        bytes += f.c_len;
    }
    if start < frames.len() {
        out.push(start..frames.len());
    }
    out
}

/// Stream frames `frames[range]` in order. Must be called within a tokio runtime.
pub fn stream_frames(
    object: ObjectHandle,
    frames: Arc<Vec<Frame>>,
    parallel: usize,
    what: String,
) -> mpsc::Receiver<Result<FrameData>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let runs = ramped_runs(&frames, FIRST_REQUEST, MAX_REQUEST);
        let mut queue = runs.into_iter();
        let mut inflight = VecDeque::new();
        loop {
            while inflight.len() < parallel.max(1) {
                let Some(run) = queue.next() else { break };
                let (object, frames, what) = (object.clone(), frames.clone(), what.clone());
                let base = run.start;
                inflight.push_back(tokio::spawn(async move {
                    fetch_run(&object, &frames, run, &what).await.map(|v| (base, v))
                }));
            }
            let Some(task) = inflight.pop_front() else { break };
            let res = match task.await {
                Ok(r) => r,
                Err(e) => Err(crate::error::Error::Internal(format!("fetch task failed: {e}"))),
            };
            match res {
                Ok((base, datas)) => {
                    for (i, data) in datas.into_iter().enumerate() {
                        let u_off = frames[base + i].u_off;
                        if tx.send(Ok(FrameData { u_off, data })).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
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
        let runs = ramped_runs(&frames, 200, 800);
        let lens: Vec<usize> = runs.iter().map(std::ops::Range::len).collect();
        assert_eq!(lens, vec![2, 4, 8, 8, 8, 8, 2]);
        assert!(runs.windows(2).all(|w| w[0].end == w[1].start) && runs[0].start == 0);
        // Frames larger than the cap are runs of their own.
        assert_eq!(ramped_runs(&frames[..3], 50, 800), vec![0..1, 1..2, 2..3]);
        assert!(ramped_runs(&[], 200, 800).is_empty());
    }
}
