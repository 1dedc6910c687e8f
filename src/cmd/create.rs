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

/// A regular file as the writer needs it: a hardlink to an earlier name of
/// the same inode (no data), or the entry with its file opened for reading.
pub(crate) fn link_or_open(
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    abs: &Path,
    rel: &[u8],
    meta: &Metadata,
    mut e: Entry,
) -> Result<(Entry, Option<File>)> {
    if meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            e.kind = Kind::Hardlink;
            e.link = first.clone();
            return Ok((e, None));
        }
        links.insert(key, rel.to_vec());
    }
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(abs)
        .ctx(|| abs.display().to_string())?;
    Ok((e, Some(f)))
}

/// The names in directory `abs`, sorted bytewise (tar and index order).
pub(crate) fn sorted_names(abs: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for ent in std::fs::read_dir(abs).ctx(|| abs.display().to_string())? {
        names.push(ent.ctx(|| abs.display().to_string())?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
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
        let Some(e) = entry_from_meta(abs, rel.clone(), meta)? else {
            return Ok(());
        };
        match e.kind {
            Kind::File => {
                let (e, mut f) = link_or_open(&mut self.links, abs, &rel, meta, e)?;
                w.add(e, f.as_mut().map(|f| f as &mut dyn std::io::Read))
            }
            Kind::Dir => {
                w.add(e, None)?;
                for n in sorted_names(abs)? {
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

/// Snapshot `dir` as a diff `name` against the chain of `parent`: only what
/// differs from the parent's merged view is written (new and changed
/// entries, with their enclosing directories), plus whiteouts for what `dir`
/// no longer has. Parent data is never fetched: entries are compared by
/// type, mode, owner, size, mtime, xattrs and link target, and with
/// `checksum` also by content digest (hashing the local file only).
pub fn create_diff(
    rt: &Handle,
    store: &Store,
    name: &str,
    dir: &Path,
    parent: &str,
    checksum: bool,
    mut opts: WriterOptions,
) -> Result<Written> {
    let meta = std::fs::symlink_metadata(dir).ctx(|| dir.display().to_string())?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", dir.display())));
    }
    let chain = rt.block_on(crate::snapshot::Chain::open(store, parent))?;
    let tree = chain.tree()?;
    opts.parent = Some(crate::format::Parent {
        name: parent.to_string(),
        index_digest: chain.top().index_digest(),
    });
    let pb = progress::bytes(None, "create");
    publish(rt, store, name, opts, pb, |w| {
        let mut d = DiffWalker {
            tree: &tree,
            checksum,
            links: HashMap::new(),
            pending: Vec::new(),
        };
        d.walk(w, dir, Vec::new(), &meta, Some(crate::layer::ROOT))
    })
}

struct DiffWalker<'a> {
    tree: &'a crate::layer::Tree,
    checksum: bool,
    /// (dev, ino) of multiply-linked files written in this diff -> path.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Directories entered but not written yet (written when something
    /// beneath them is).
    pending: Vec<Entry>,
}

impl DiffWalker<'_> {
    fn emit<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        e: Entry,
        data: Option<&mut dyn std::io::Read>,
    ) -> Result<()> {
        for d in std::mem::take(&mut self.pending) {
            w.add(d, None)?;
        }
        w.add(e, data)
    }

    fn lower(&self, ino: Option<u64>) -> Option<(&crate::layer::Node, &Entry)> {
        let n = self.tree.node(ino?)?;
        Some((n, self.tree.entry(n)))
    }

    fn walk<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        abs: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
        lower_ino: Option<u64>,
    ) -> Result<()> {
        let Some(e) = entry_from_meta(abs, rel.clone(), meta)? else {
            return Ok(());
        };
        let lower = self.lower(lower_ino).map(|(_, le)| le.clone());
        let same = match &lower {
            Some(le) => same_meta(&e, le) && (!self.checksum || e.kind != Kind::File || digest_of(abs)? == le.digest),
            None => false,
        };
        match e.kind {
            Kind::Dir => {
                let lower_children: Vec<(Box<[u8]>, u64)> = match self.lower(lower_ino) {
                    Some((n, le)) if le.kind == Kind::Dir => n.children.clone(),
                    _ => Vec::new(),
                };
                if same && !rel.is_empty() {
                    self.pending.push(e);
                } else {
                    self.emit(w, e, None)?;
                }
                let depth = self.pending.len();
                let names = sorted_names(abs)?;
                // Whiteouts for what is gone, then the children in order.
                for (lname, _) in &lower_children {
                    if names.binary_search_by(|n| n.as_bytes().cmp(lname)).is_err() {
                        let mut wh = Entry::new(path::join(&rel, lname), Kind::Whiteout);
                        wh.mtime = meta.mtime();
                        self.emit(w, wh, None)?;
                    }
                }
                for n in names {
                    let child = abs.join(&n);
                    let m = std::fs::symlink_metadata(&child).ctx(|| child.display().to_string())?;
                    let li = lower_children
                        .binary_search_by(|(c, _)| c.as_ref().cmp(n.as_bytes()))
                        .ok()
                        .map(|i| lower_children[i].1);
                    self.walk(w, &child, path::join(&rel, n.as_bytes()), &m, li)?;
                }
                // Nothing beneath changed: this directory is not written.
                self.pending.truncate(depth.saturating_sub(1).min(self.pending.len()));
                Ok(())
            }
            _ if same => Ok(()),
            Kind::File => {
                let (e, mut f) = link_or_open(&mut self.links, abs, &rel, meta, e)?;
                self.emit(w, e, f.as_mut().map(|f| f as &mut dyn std::io::Read))
            }
            _ => self.emit(w, e, None),
        }
    }
}

/// Do a local entry and a lower entry have the same metadata?
pub(crate) fn same_meta(e: &Entry, lower: &Entry) -> bool {
    let kind = |k: Kind| if k == Kind::Hardlink { Kind::File } else { k };
    kind(e.kind) == kind(lower.kind)
        && e.mode == lower.mode
        && e.uid == lower.uid
        && e.gid == lower.gid
        && e.mtime == lower.mtime
        && e.mtime_nsec == lower.mtime_nsec
        && e.size == lower.size
        && e.link
            == if lower.kind == Kind::Symlink {
                lower.link.clone()
            } else {
                Vec::new()
            }
        && e.xattrs == lower.xattrs
        && (e.dev_major, e.dev_minor) == (lower.dev_major, lower.dev_minor)
}

/// Content digest of a local file.
pub(crate) fn digest_of(p: &Path) -> Result<crate::format::Digest> {
    let mut f = File::open(p).ctx(|| p.display().to_string())?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f, &mut h).ctx(|| p.display().to_string())?;
    Ok(crate::format::truncate(h.finalize()))
}
