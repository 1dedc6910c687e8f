//! `lazysnap create DIR`: snapshot a directory tree.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tokio::runtime::Handle;

use super::publish;
use crate::error::{Error, IoContext, Result};
use crate::format::writer::{SnapshotWriter, WriterOptions, Written};
use crate::format::{path, Entry, Kind};
use crate::store::Store;
use crate::{progress, sys};

/// Snapshot `dir` as `name`.
pub fn create(rt: &Handle, store: &Store, name: &str, dir: &Path, opts: WriterOptions) -> Result<Written> {
    let meta = std::fs::symlink_metadata(dir).ctx(|| dir.display().to_string())?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", dir.display())));
    }
    let pb = progress::bytes(None, "create");
    publish(rt, store, name, opts, pb, |w| {
        let mut walker = Walker { links: HashMap::new() };
        walker.walk(w, dir, Vec::new(), &meta)
    })
}

/// Build an index entry from a file's metadata (data fields left empty).
pub fn entry_from_meta(p: &Path, rel: Vec<u8>, m: &Metadata) -> Result<Option<Entry>> {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        tracing::warn!("{}: socket skipped", p.display());
        return Ok(None);
    };
    let mut e = Entry::new(rel, kind);
    e.mode = m.mode() & 0o7777;
    e.uid = m.uid();
    e.gid = m.gid();
    e.mtime = m.mtime();
    e.mtime_nsec = m.mtime_nsec() as u32;
    if kind == Kind::File {
        e.size = m.len();
    }
    if kind == Kind::Symlink {
        e.link = std::fs::read_link(p)
            .ctx(|| p.display().to_string())?
            .as_os_str()
            .as_bytes()
            .to_vec();
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        let rdev = m.rdev();
        e.dev_major = libc::major(rdev);
        e.dev_minor = libc::minor(rdev);
    }
    e.xattrs = sys::xattrs(p).ctx(|| format!("{}: reading xattrs", p.display()))?;
    Ok(Some(e))
}

struct Walker {
    /// (dev, ino) of multiply-linked files -> first path seen.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Walker {
    fn walk<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        abs: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
    ) -> Result<()> {
        let Some(mut e) = entry_from_meta(abs, rel.clone(), meta)? else {
            return Ok(());
        };
        match e.kind {
            Kind::File => {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key) {
                        e.kind = Kind::Hardlink;
                        e.link = first.clone();
                        return w.add(e, None);
                    }
                    self.links.insert(key, rel.clone());
                }
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(abs)
                    .ctx(|| abs.display().to_string())?;
                w.add(e, Some(&mut f))
            }
            Kind::Dir => {
                w.add(e, None)?;
                let mut names: Vec<std::ffi::OsString> = Vec::new();
                for ent in std::fs::read_dir(abs).ctx(|| abs.display().to_string())? {
                    names.push(ent.ctx(|| abs.display().to_string())?.file_name());
                }
                names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                for n in names {
                    let child = abs.join(&n);
                    let m = std::fs::symlink_metadata(&child).ctx(|| child.display().to_string())?;
                    self.walk(w, &child, path::join(&rel, n.as_bytes()), &m)?;
                }
                Ok(())
            }
            _ => w.add(e, None),
        }
    }
}
