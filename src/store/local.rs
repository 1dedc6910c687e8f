//! The embedded default store: a local directory.
//!
//! Object `KEY` is the file `DIR/KEY`. Uploads go to a hidden temporary file
//! next to the destination, are fsynced, and are published with a hard link
//! (no overwrite) or a rename (overwrite), so a reader never sees a partial
//! object and a crashed upload leaves only a hidden temp file.
//!
//! Every filesystem call runs on the blocking pool, never inside the async
//! fn itself: a directory on a filesystem that stops answering (NFS, FUSE)
//! must leave the caller's deadline free to fire. Objects must be regular
//! files: a fifo or device under a snapshot's name is refused, never opened
//! in a way that could block.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{ObjectStore, Upload};
use crate::error::{Error, IoContext, Result};

/// Open files kept for ranged reads.
const OPEN_FILES: usize = 64;

/// A directory of objects.
pub struct LocalStore {
    root: PathBuf,
    open: Mutex<Vec<(String, Arc<File>)>>,
}

impl LocalStore {
    /// A store rooted at `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> Result<LocalStore> {
        let root = dir.as_ref().to_path_buf();
        if root.as_os_str().is_empty() {
            return Err(Error::Usage("empty store path".into()));
        }
        std::fs::create_dir_all(&root).ctx(|| format!("store {}", root.display()))?;
        Ok(LocalStore {
            root,
            open: Mutex::new(Vec::new()),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The open file of `key` (opened on the blocking pool on a miss).
    async fn file(&self, key: &str) -> Result<Arc<File>> {
        if let Some((_, f)) = self.open.lock().iter().find(|(k, _)| k == key) {
            return Ok(f.clone());
        }
        let p = self.path(key);
        let f = Arc::new(blocking(move || open_regular(&p)).await?);
        let mut open = self.open.lock();
        if open.len() >= OPEN_FILES {
            open.remove(0);
        }
        open.push((key.to_string(), f.clone()));
        Ok(f)
    }
}

/// Open object `p` for reading; anything but a regular file is refused.
/// `O_NONBLOCK` keeps the open of a fifo from waiting for a writer; it is
/// cleared again once the object is known to be a regular file.
fn open_regular(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| not_found_or(e, p))?;
    let meta = f.metadata().map_err(|e| Error::io_path(p, e))?;
    if !meta.is_file() {
        return Err(not_regular(p));
    }
    crate::sys::clear_nonblock(&f).map_err(|e| Error::io_path(p, e))?;
    Ok(f)
}

fn not_regular(p: &Path) -> Error {
    Error::refused(p.display().to_string(), "not a regular file")
}

fn not_found_or(e: std::io::Error, p: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::not_found(p.display().to_string())
    } else {
        Error::io_path(p, e)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("local store task failed: {e}")))?
}

fn read_at(f: &File, range: Range<u64>, what: &str) -> Result<Bytes> {
    let len = usize::try_from(range.end - range.start).map_err(|_| Error::Store("range too large".into()))?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match f.read_at(&mut buf[done..], range.start + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(what, e)),
        }
    }
    buf.truncate(done);
    Ok(Bytes::from(buf))
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let f = self.file(key).await?;
        let what = self.path(key).display().to_string();
        blocking(move || read_at(&f, range, &what)).await
    }

    async fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64)> {
        let f = self.file(key).await?;
        let what = self.path(key).display().to_string();
        blocking(move || {
            let size = f.metadata().ctx(|| what.clone())?.len();
            let start = size.saturating_sub(len);
            Ok((read_at(&f, start..size, &what)?, size))
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<u64> {
        let p = self.path(key);
        blocking(move || {
            let m = std::fs::metadata(&p).map_err(|e| not_found_or(e, &p))?;
            if !m.is_file() {
                return Err(not_regular(&p));
            }
            Ok(m.len())
        })
        .await
    }

    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let dest = self.path(key);
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        blocking(move || {
            std::fs::create_dir_all(&dir).ctx(|| format!("{}", dir.display()))?;
            let base = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{base}.tmp-{}-{}", std::process::id(), unique()));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .ctx(|| format!("{}", tmp.display()))?;
            Ok(Box::new(LocalUpload {
                file: Some(file),
                tmp: Some(tmp),
                dest,
            }) as Box<dyn Upload>)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &mut out)?;
            out.retain(|k| k.starts_with(&prefix));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key);
        self.open.lock().retain(|(k, _)| k != key);
        blocking(move || std::fs::remove_file(&p).map_err(|e| not_found_or(e, &p))).await
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path(dir, e)),
    };
    for ent in rd {
        let ent = ent.ctx(|| dir.display().to_string())?;
        let name = ent.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = ent.path();
        let ft = ent.file_type().ctx(|| p.display().to_string())?;
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else if ft.is_file() {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

struct LocalUpload {
    file: Option<File>,
    /// The temp file, until it is published or removed.
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

fn finished() -> Error {
    Error::Store("upload already finished".into())
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let (mut f, tmp) = match (self.file.take(), &self.tmp) {
            (Some(f), Some(t)) => (f, t.clone()),
            _ => return Err(finished()),
        };
        // The file comes back only if the write finished: after a deadline
        // the upload is unusable and its temp file is removed on drop.
        let f = blocking(move || {
            f.write_all(&data).ctx(|| tmp.display().to_string())?;
            Ok(f)
        })
        .await?;
        self.file = Some(f);
        Ok(())
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        let (f, tmp) = match (self.file.take(), self.tmp.take()) {
            (Some(f), Some(t)) => (f, t),
            _ => return Err(finished()),
        };
        let dest = self.dest.clone();
        blocking(move || {
            // The temp name goes whatever happens below.
            let _cleanup = RemoveOnDrop(Some(tmp.clone()));
            f.sync_all().ctx(|| tmp.display().to_string())?;
            drop(f);
            let published = if overwrite {
                std::fs::rename(&tmp, &dest)
            } else {
                std::fs::hard_link(&tmp, &dest)
            };
            match published {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Exists {
                        what: dest.display().to_string(),
                    })
                }
                Err(e) => return Err(Error::io_path(&dest, e)),
            }
            if let Some(dir) = dest.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })
        .await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file = None;
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        blocking(move || std::fs::remove_file(&tmp).ctx(|| tmp.display().to_string())).await
    }
}

/// Removes a temp file when dropped.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // After commit or abort the temp name is gone; otherwise (a failure,
        // a deadline) nothing may be left behind. Inside a runtime the
        // removal runs on the blocking pool, so a store that stopped
        // answering cannot block the caller here.
        let cleanup = RemoveOnDrop(self.tmp.take());
        if cleanup.0.is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(move || drop(cleanup))),
            Err(_) => drop(cleanup),
        }
    }
}
