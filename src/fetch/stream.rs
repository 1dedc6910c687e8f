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

use super::{coalesce, fetch_run, MAX_REQUEST};
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

/// Stream frames `frames[range]` in order. Must be called within a tokio runtime.
pub fn stream_frames(
    object: ObjectHandle,
    frames: Arc<Vec<Frame>>,
    parallel: usize,
    what: String,
) -> mpsc::Receiver<Result<FrameData>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let runs = coalesce(&frames, 0..frames.len(), MAX_REQUEST);
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
