//! Publishing a snapshot: a [`SnapshotWriter`] streaming into a store upload
//! that becomes visible under its name only when complete.

use std::io::Write;

use bytes::Bytes;
use indicatif::ProgressBar;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::format::writer::{SnapshotWriter, WriterOptions, Written};
use crate::store::{snapshot_key, Store, Upload};

/// Uploaded part size for streaming writes.
const PART: usize = 8 << 20;

/// A blocking `Write` over an async [`Upload`], in parts of [`PART`] bytes.
pub struct UploadWriter {
    up: Option<Box<dyn Upload>>,
    buf: Vec<u8>,
    rt: Handle,
}

impl UploadWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let up = self
            .up
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload finished"))?;
        self.rt
            .block_on(up.write(data))
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Drop for UploadWriter {
    /// An upload neither committed nor aborted (a save that failed) is
    /// aborted here, so nothing stays behind in the store. (Inside a
    /// runtime we cannot block: the next save or `gc` cleans up instead.)
    fn drop(&mut self) {
        if let Some(up) = self.up.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                if let Err(e) = self.rt.block_on(up.abort()) {
                    tracing::warn!("aborting a failed upload: {e}");
                }
            }
        }
    }
}

impl Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PART {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Write snapshot `name` into `store`: `fill` adds the entries; the object
/// becomes visible only once complete, and never replaces an existing name.
pub fn publish<F>(
    rt: &Handle,
    store: &Store,
    name: &str,
    opts: WriterOptions,
    pb: ProgressBar,
    fill: F,
) -> Result<Written>
where
    F: FnOnce(&mut SnapshotWriter<UploadWriter>) -> Result<()>,
{
    publish_if(rt, store, name, opts, pb, |w| fill(w).map(|()| true))?
        .ok_or_else(|| Error::Internal(format!("{name}: the upload was dropped")))
}

/// [`publish`], unless `fill` says (`false`) there is nothing worth keeping:
/// then the upload is thrown away and nothing is published (`None`).
pub fn publish_if<F>(
    rt: &Handle,
    store: &Store,
    name: &str,
    opts: WriterOptions,
    pb: ProgressBar,
    fill: F,
) -> Result<Option<Written>>
where
    F: FnOnce(&mut SnapshotWriter<UploadWriter>) -> Result<bool>,
{
    let key = snapshot_key(name)?;
    match rt.block_on(store.size(&key)) {
        Ok(_) => {
            return Err(Error::Exists {
                what: format!("snapshot {name}"),
            })
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let up = rt.block_on(store.create_upload(&key))?;
    let sink = UploadWriter {
        up: Some(up),
        buf: Vec::with_capacity(PART),
        rt: rt.clone(),
    };
    let mut w = SnapshotWriter::new(sink, opts, pb.clone())?;
    let keep = fill(&mut w)?;
    let (written, mut sink) = w.finish()?;
    pb.finish_and_clear();
    let up = sink.up.take().ok_or_else(|| Error::Internal("upload lost".into()));
    if !keep {
        tracing::debug!("{name}: nothing to publish; upload aborted");
        rt.block_on(up?.abort())?;
        return Ok(None);
    }
    sink.up = Some(up?);
    sink.flush().map_err(|e| Error::io(format!("uploading {name}"), e))?;
    let up = sink.up.take().ok_or_else(|| Error::Internal("upload lost".into()))?;
    rt.block_on(up.commit(false)).map_err(|e| match e {
        Error::Exists { .. } => Error::Exists {
            what: format!("snapshot {name}"),
        },
        e => e,
    })?;
    tracing::debug!(
        "published {name} in {}: {} bytes, {} entries, {} frames",
        store.describe(),
        written.size,
        written.index.entries.len(),
        written.index.frames.len()
    );
    Ok(Some(written))
}

/// Snapshot "t" in 64 KiB frames in a local store at `dir`, for unit tests.
#[cfg(test)]
pub(crate) fn publish_test<F>(rt: &tokio::runtime::Runtime, dir: &std::path::Path, fill: F) -> Store
where
    F: FnOnce(&mut SnapshotWriter<UploadWriter>) -> Result<()>,
{
    let store = Store::open_writable(&dir.display().to_string()).expect("store");
    let opts = WriterOptions {
        frame_size: 64 << 10,
        ..WriterOptions::default()
    };
    publish(rt.handle(), &store, "t", opts, ProgressBar::hidden(), fill).expect("write");
    store
}
