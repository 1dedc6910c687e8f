//! The embedded default store: a local directory.
//!
//! Object `KEY` is the file `DIR/KEY`. Uploads go to a hidden temporary file
//! next to the destination, are fsynced, and are published with a hard link
//! (no overwrite) or a rename (overwrite), so a reader never sees a partial
//! object and a crashed upload leaves only a hidden temp file.
//!
//! Every filesystem call runs on the blocking pool, so the deadlines of
//! [`super::Store`] hold even when the directory is on a mount that stops
//! answering; and only regular files are objects (opening a FIFO would
//! block forever).

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectBucket, ObjectId, ObjectReader, ObjectSource, Priority, Upload};
use crate::error::{Error, IoContext, Result};

/// A directory of objects.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `dir`; with `create`, the directory is made if
    /// missing (commands that write), else a missing one is an error.
    pub fn new(dir: impl AsRef<Path>, create: bool) -> Result<LocalStore> {
        let root = dir.as_ref().to_path_buf();
        if root.as_os_str().is_empty() {
            return Err(Error::Usage("empty store path".into()));
        }
        if create {
            std::fs::create_dir_all(&root).ctx(|| format!("store {}", root.display()))?;
        } else {
            match metadata_within(&root, STAT_DEADLINE) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Error::Usage(format!("store {}: not a directory", root.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::not_found(format!("store {}", root.display())))
                }
                Err(e) => return Err(Error::io(format!("store {}", root.display()), e)),
            }
        }
        Ok(LocalStore { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// How long opening a store may wait for its directory to answer.
const STAT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// `stat` a path, giving up after `deadline` (a directory on a mount that
/// stopped answering would otherwise block forever).
fn metadata_within(p: &Path, deadline: std::time::Duration) -> std::io::Result<std::fs::Metadata> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = p.to_path_buf();
    std::thread::Builder::new().name("store-stat".into()).spawn(move || {
        let _ = tx.send(std::fs::metadata(&path));
    })?;
    rx.recv_timeout(deadline)
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "not answering")))
}

/// Open an object for reading: a regular file, never anything that could
/// block the open (a FIFO) or is not data (a device, a directory).
fn open_object(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| not_found_or(e, p))?;
    let m = f.metadata().ctx(|| p.display().to_string())?;
    if !m.is_file() {
        return Err(Error::refused(
            p.display().to_string(),
            "not a regular file, so not a snapshot object",
        ));
    }
    Ok(f)
}

/// The size of the object at `p` (a regular file).
fn object_size(p: &Path) -> Result<u64> {
    let m = std::fs::metadata(p).map_err(|e| not_found_or(e, p))?;
    if !m.is_file() {
        return Err(Error::refused(
            p.display().to_string(),
            "not a regular file, so not a snapshot object",
        ));
    }
    Ok(m.len())
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
        .map_err(|e| Error::Internal(format!("local store task failed: {e}")))?
}

fn read_at(f: &File, range: Range<u64>, what: &str) -> Result<Bytes> {
    let len = usize::try_from(range.end - range.start).map_err(|_| Error::Internal("range too large".into()))?;
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

/// A handle on one local object: the file opened once, so a rename over
/// its name later never mixes two objects into one read.
struct LocalReader {
    file: Arc<File>,
    what: String,
    id: ObjectId,
}

#[async_trait]
impl ObjectReader for LocalReader {
    fn id(&self) -> &ObjectId {
        &self.id
    }

    async fn get_range(&self, range: Range<u64>, _prio: Priority) -> Result<Bytes> {
        let (f, what) = (self.file.clone(), self.what.clone());
        blocking(move || read_at(&f, range, &what)).await
    }
}

#[async_trait]
impl ObjectSource for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let p = self.path(key);
        blocking(move || {
            let f = open_object(&p)?;
            let what = p.display().to_string();
            let size = f.metadata().ctx(|| what.clone())?.len();
            let bytes = read_at(&f, size.saturating_sub(tail)..size, &what)?;
            let reader = LocalReader {
                file: Arc::new(f),
                what,
                id: ObjectId { size, etag: None },
            };
            Ok((Arc::new(reader) as Arc<dyn ObjectReader>, bytes))
        })
        .await
    }
}

#[async_trait]
impl ObjectBucket for LocalStore {
    async fn size(&self, key: &str) -> Result<u64> {
        let p = self.path(key);
        blocking(move || object_size(&p)).await
    }

    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let dest = self.path(key);
        let root = self.root.clone();
        blocking(move || {
            let dir = dest.parent().map(Path::to_path_buf).unwrap_or(root);
            std::fs::create_dir_all(&dir).ctx(|| format!("{}", dir.display()))?;
            let base = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Uploads a dead process left behind are unlocked: remove them.
            crate::tmp::sweep(&dir, is_upload_temp);
            // (A concurrent writer's sweep may take a name in the instant
            // before it is locked: then another name.)
            let mut attempt = 0;
            let (tmp, file, held) = loop {
                let tmp = dir.join(format!(".{base}{TEMP_MARK}{}-{}", std::process::id(), unique()));
                match crate::tmp::Temp::create_file(&tmp) {
                    Ok((file, held)) => break (tmp, file, held),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted && attempt < 5 => attempt += 1,
                    Err(e) => return Err(Error::io_path(&tmp, e)),
                }
            };
            Ok(Box::new(LocalUpload {
                file: Some(Arc::new(file)),
                tmp,
                dest,
                _held: held,
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

    async fn collect_garbage(&self) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || {
            let mut dirs = vec![root];
            let mut removed = 0;
            while let Some(d) = dirs.pop() {
                removed += crate::tmp::sweep(&d, is_upload_temp);
                let Ok(rd) = std::fs::read_dir(&d) else { continue };
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key);
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
    file: Option<Arc<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Locked while written; removed on SIGINT/SIGTERM.
    _held: crate::tmp::Temp,
}

/// What an upload's temporary name holds after `.NAME.tar.zst`.
const TEMP_MARK: &str = ".tmp-";

/// Is `name` an upload's temporary name (`.NAME.tar.zst.tmp-PID-N`)?
fn is_upload_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(&format!("{}{TEMP_MARK}", super::SNAPSHOT_SUFFIX))
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let f = self
            .file
            .clone()
            .ok_or_else(|| Error::Internal("upload already finished".into()))?;
        let tmp = self.tmp.clone();
        blocking(move || (&*f).write_all(&data).ctx(|| tmp.display().to_string())).await
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        let f = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("upload already finished".into()))?;
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        blocking(move || {
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
        let tmp = self.tmp.clone();
        blocking(move || std::fs::remove_file(&tmp).ctx(|| tmp.display().to_string())).await
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // After a successful commit the temp name is gone; otherwise (abort,
        // failure, a name that already exists) nothing may be left behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
