//! The one directory walker behind `create`, `create --parent` and `save`.
//!
//! A tree is visited depth first in bytewise name order (tar and index
//! order) and fed to a [`SnapshotWriter`]. What the walk is compared with is
//! its [`Base`]:
//! - [`Base::Full`]: nothing; every entry is written.
//! - [`Base::View`]: a chain's merged view, for a plain directory
//!   (`create --parent`): entries equal to the view are left out, names the
//!   view has and the directory lacks become whiteouts.
//! - [`Base::Upper`]: an overlayfs upper dir laid over the view it was
//!   mounted on (`save`). The tree saved is the live view: the upper dir's
//!   entries (whiteouts are character devices 0/0, replaced directories
//!   carry `trusted.overlay.opaque=y`) over the view below. It is compared
//!   with the view of the last save (the view below, for a first save), so
//!   a later save holds only what changed since the one before, deletions
//!   of things an earlier save added included, while the upper dir keeps
//!   everything since the mount. Overlay's own xattrs are never saved.
//!
//! In both diff bases a directory is written only when it changed or
//! something beneath it is written (then it precedes its children, as tar
//! needs), and lower data is never read: only local files are hashed.
//! Hardlinks are normalised here once: the first name of an inode that is
//! written carries the data, later names are links to it.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::format::tarhdr::WHITEOUT_PREFIX;
use crate::format::writer::SnapshotWriter;
use crate::format::{path, Digest, Entry, Kind};
use crate::layer::{Tree, ROOT};
use crate::sys;

/// Prefix of the xattrs overlayfs keeps for itself in an upper dir.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
/// Marks an upper directory that replaced (hides) a lower one.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// Overlay xattrs that change nothing about what the upper dir means: where
/// a copy-up came from, "this directory holds copy-ups", the identity of the
/// overlay that used this upper dir. Any other
/// (redirects, metacopy, index link counts, xwhiteouts) means the upper dir
/// was used with features `save` does not model, so it refuses.
const HARMLESS_OVERLAY_XATTRS: &[&[u8]] = &[
    b"trusted.overlay.origin",
    b"trusted.overlay.impure",
    b"trusted.overlay.uuid",
];

/// What a walked tree is compared with; see the module docs.
#[derive(Clone, Copy)]
pub enum Base<'a> {
    /// Write everything.
    Full,
    /// A plain directory against a view; `checksum` also compares content
    /// when size and mtime agree.
    View {
        /// The merged view of the parent chain.
        tree: &'a Tree,
        /// Hash local files whose metadata matches.
        checksum: bool,
    },
    /// An overlayfs upper dir over a view.
    Upper {
        /// What the overlay shows below the upper dir: the mounted chain.
        below: &'a Tree,
        /// What the diff is made against: the last saved chain, whose
        /// first layers are `below`'s.
        against: &'a Tree,
    },
}

impl<'a> Base<'a> {
    /// The view entries are compared with.
    fn tree(&self) -> Option<&'a Tree> {
        match *self {
            Base::Full => None,
            Base::View { tree, .. } => Some(tree),
            Base::Upper { against, .. } => Some(against),
        }
    }
}

/// A child of a directory being walked: its name and where it comes from.
type Child = (Vec<u8>, Source);

/// Where a name of the tree being saved comes from.
enum Source {
    /// A local file (in the directory, or in the upper dir), with its
    /// metadata, read once.
    Local(std::ffi::OsString, Metadata),
    /// Only the view below the upper dir.
    Below,
}

/// Walks one tree into a writer; see the module docs.
pub struct Walker<'a> {
    base: Base<'a>,
    /// (dev, ino) of multiply-linked files written so far -> first path.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Directories entered but not written yet (written when something
    /// beneath them is).
    pending: Vec<Entry>,
    /// Diff bases: every multiply-linked local file's names in the tree.
    local_groups: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Diff bases: whether each local hardlink group is written (decided
    /// once, at its first name, so a group is written whole or not at all).
    group_written: HashMap<(u64, u64), bool>,
    /// Has anything but an unchanged root been written?
    changed: bool,
    /// Has [`Walker::scan`] run?
    scanned: bool,
    /// Multiply-linked files found unchanged (counted as done once).
    skipped: std::collections::HashSet<(u64, u64)>,
}

impl<'a> Walker<'a> {
    /// A walker comparing against `base`.
    pub fn new(base: Base<'a>) -> Walker<'a> {
        Walker {
            base,
            links: HashMap::new(),
            pending: Vec::new(),
            local_groups: HashMap::new(),
            group_written: HashMap::new(),
            changed: matches!(base, Base::Full),
            scanned: false,
            skipped: std::collections::HashSet::new(),
        }
    }

    /// Look over the tree at `root` before walking it (stat only): its
    /// hardlink groups, and the bytes of file data it holds, which is what
    /// a progress bar counts to (every file is read once: written, or
    /// hashed to find it unchanged).
    pub fn scan(&mut self, root: &Path) -> Result<u64> {
        let meta = std::fs::symlink_metadata(root).ctx(|| root.display().to_string())?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!("{}: not a directory", root.display())));
        }
        let mut total = 0;
        scan(root, Vec::new(), &mut self.local_groups, &mut total)?;
        self.local_groups.retain(|_, names| names.len() > 1);
        self.scanned = true;
        Ok(total)
    }

    /// Walk the directory `root` into `w`. Returns whether anything
    /// differs from the base (always true for [`Base::Full`]).
    pub fn walk<W: std::io::Write + Send + 'static>(&mut self, w: &mut SnapshotWriter<W>, root: &Path) -> Result<bool> {
        if !self.scanned {
            self.scan(root)?;
        }
        let meta = std::fs::symlink_metadata(root).ctx(|| root.display().to_string())?;
        let lower = self.base.tree().map(|_| ROOT);
        let below = matches!(self.base, Base::Upper { .. }).then_some(ROOT);
        self.visit(w, root, Vec::new(), &meta, lower, below)?;
        Ok(self.changed)
    }

    fn lower_entry(&self, ino: Option<u64>) -> Option<(&'a crate::layer::Node, &'a Entry)> {
        let tree = self.base.tree()?;
        let n = tree.node(ino?)?;
        Some((n, tree.entry(n)))
    }

    fn emit<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        e: Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<()> {
        for d in std::mem::take(&mut self.pending) {
            self.check_name(&d)?;
            w.add(d, None)?;
        }
        self.check_name(&e)?;
        self.changed = true;
        w.add(e, data)
    }

    /// A diff cannot carry a name that OCI layer rules read as a deletion
    /// marker; a full snapshot stores any name.
    fn check_name(&self, e: &Entry) -> Result<()> {
        let diff = !matches!(self.base, Base::Full);
        if diff && e.kind != Kind::Whiteout && path::file_name(&e.path).starts_with(WHITEOUT_PREFIX) {
            return Err(Error::refused(
                path::display(&e.path),
                "a diff cannot hold a name starting with '.wh.' (OCI layer rules read it as a deletion); \
                 rename it, or make a full snapshot (create without --parent)",
            ));
        }
        Ok(())
    }

    /// Is `e` (at `abs`) the same as its lower entry, so the diff can leave
    /// it out? Only the local file is ever hashed. A name in a hardlink
    /// group (here or in the view) is unchanged only if the whole group is:
    /// the same names sharing one inode, with the same metadata and data.
    fn unchanged(&mut self, abs: &Path, e: &Entry, meta: &Metadata, lower: Option<(u64, &'a Entry)>) -> Result<bool> {
        let Some((lower_ino, low)) = lower else {
            return Ok(false);
        };
        if e.kind != Kind::File {
            return Ok(same_meta(e, low));
        }
        let (tree, checksum) = match self.base {
            Base::Full => return Ok(false),
            Base::View { tree, checksum } => (tree, checksum),
            // A copy-up always rewrote the data: compare it.
            Base::Upper { against, .. } => (against, true),
        };
        let key = (meta.dev(), meta.ino());
        if let Some(&written) = self.group_written.get(&key) {
            return Ok(!written);
        }
        // A copy-up of one name of a lower group split it from the others.
        let local: Vec<&[u8]> = match self.local_groups.get(&key) {
            Some(names) => names.iter().map(Vec::as_slice).collect(),
            None => vec![e.path.as_slice()],
        };
        let same =
            local == tree.paths_of(lower_ino) && same_meta(e, low) && (!checksum || digest_of(abs)? == low.digest);
        if local.len() > 1 {
            self.group_written.insert(key, !same);
        }
        Ok(same)
    }

    /// Visit a local entry: `lower_ino` is its name in the compared view,
    /// `below_ino` (upper dirs only) its name in the view under the upper dir.
    fn visit<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        abs: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
        lower_ino: Option<u64>,
        below_ino: Option<u64>,
    ) -> Result<()> {
        let upper = matches!(self.base, Base::Upper { .. });
        if upper && is_whiteout(meta) {
            // A deletion: written (if the compared view has the name) by
            // the directory walk, which sees the name is gone.
            return Ok(());
        }
        let Some(mut e) = entry_from_meta(abs, rel.clone(), meta)? else {
            return Ok(());
        };
        let mut opaque = false;
        if upper {
            opaque = overlay_opaque(&e)?;
            e.xattrs.retain(|(k, _)| !k.starts_with(OVERLAY_XATTRS));
        }
        let lower = self.lower_entry(lower_ino);
        let lower_named = lower_ino.zip(lower.map(|(_, le)| le));
        let same = self.unchanged(abs, &e, meta, lower_named)?;
        match e.kind {
            Kind::Dir => {
                let lower_children: &[(Box<[u8]>, u64)] = match lower {
                    Some((n, le)) if le.kind == Kind::Dir => &n.children,
                    _ => &[],
                };
                // An opaque upper directory hides everything below it.
                let below_children: &[(Box<[u8]>, u64)] = match (self.below_entry(below_ino), opaque) {
                    (Some((n, be)), false) if be.kind == Kind::Dir => &n.children,
                    _ => &[],
                };
                self.pending_or_emit(w, e, same)?;
                let depth = self.pending.len();
                let children = self.children(abs, &rel, below_children)?;
                // What the compared view has and this directory no longer does.
                for (lname, _) in lower_children {
                    let live = children
                        .binary_search_by(|(n, _)| n.as_slice().cmp(lname))
                        .is_ok_and(|i| !matches!(&children[i].1, Source::Local(_, m) if is_whiteout(m)));
                    if !live {
                        let mut wh = Entry::new(path::join(&rel, lname), Kind::Whiteout);
                        wh.mtime = meta.mtime();
                        self.emit(w, wh, None)?;
                    }
                }
                for (name, source) in children {
                    let crel = path::join(&rel, &name);
                    let li = lookup(lower_children, &name);
                    match source {
                        Source::Local(n, m) => {
                            let bi = lookup(below_children, &name);
                            self.visit(w, &abs.join(n), crel, &m, li, bi)?;
                        }
                        Source::Below => self.visit_below(&crel)?,
                    }
                }
                // Nothing beneath changed: this directory is not written.
                self.pending.truncate(depth.saturating_sub(1).min(self.pending.len()));
                Ok(())
            }
            _ if same => {
                // Read (hashed) all the same: counted once per inode.
                if e.kind == Kind::File && (meta.nlink() == 1 || self.skipped.insert((meta.dev(), meta.ino()))) {
                    w.skipped(e.size);
                }
                Ok(())
            }
            Kind::File => {
                let before = (meta.len(), meta.mtime(), meta.mtime_nsec());
                let (e, mut f) = link_or_open(&mut self.links, abs, &rel, meta, e)?;
                self.emit(w, e, f.as_mut().map(|f| f as &mut dyn Read))?;
                // Written while we read it: the snapshot would hold a mix.
                let m = std::fs::symlink_metadata(abs).ctx(|| abs.display().to_string())?;
                if (m.len(), m.mtime(), m.mtime_nsec()) != before {
                    return Err(Error::refused(
                        path::display(&rel),
                        "changed while it was being saved; nothing was published, try again",
                    ));
                }
                Ok(())
            }
            _ => self.emit(w, e, None),
        }
    }

    /// A directory entry: held back while unchanged (written before its
    /// first changed child), else written now. The root is always written.
    fn pending_or_emit<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        e: Entry,
        same: bool,
    ) -> Result<()> {
        if e.path.is_empty() {
            // An unchanged root alone is not a change.
            let changed = self.changed;
            self.emit(w, e, None)?;
            self.changed = changed || !same;
        } else if !matches!(self.base, Base::Full) && same {
            self.pending.push(e);
        } else {
            self.emit(w, e, None)?;
        }
        Ok(())
    }

    /// The names of a directory of the tree being saved, sorted: its local
    /// names (with their metadata, read once) and, under an upper dir, the
    /// names of the view below that the upper dir does not hide.
    fn children(&self, abs: &Path, rel: &[u8], below: &[(Box<[u8]>, u64)]) -> Result<Vec<Child>> {
        let mut out: Vec<Child> = Vec::new();
        for n in sorted_names(abs)? {
            let crel = path::join(rel, n.as_bytes());
            path::check(&crel).map_err(|why| Error::refused(path::display(&crel), why))?;
            let child = abs.join(&n);
            let m = std::fs::symlink_metadata(&child).ctx(|| child.display().to_string())?;
            out.push((n.as_bytes().to_vec(), Source::Local(n, m)));
        }
        let local = out.len();
        for (name, _) in below {
            if out[..local].binary_search_by(|(n, _)| n.as_slice().cmp(name)).is_err() {
                out.push((name.to_vec(), Source::Below));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// A name only the view below the upper dir has: the live view shows
    /// it unchanged. The compared view must show the very same entry (an
    /// earlier save could only have changed it through the upper dir, which
    /// would still hold the change or a whiteout).
    fn visit_below(&self, rel: &[u8]) -> Result<()> {
        let Base::Upper { below, against } = self.base else {
            return Ok(());
        };
        let shown = against.slot(rel);
        if shown.is_some() && shown == below.slot(rel) {
            return Ok(());
        }
        Err(Error::refused(
            path::display(rel),
            "the upper dir no longer holds a change an earlier save recorded (edited outside the mount?); \
             nothing was published",
        ))
    }

    fn below_entry(&self, ino: Option<u64>) -> Option<(&'a crate::layer::Node, &'a Entry)> {
        let Base::Upper { below, .. } = self.base else {
            return None;
        };
        let n = below.node(ino?)?;
        Some((n, below.entry(n)))
    }
}

/// Is this upper-dir entry an overlay whiteout (a character device 0/0)?
fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// The inode of child `name` in a sorted child list.
fn lookup(children: &[(Box<[u8]>, u64)], name: &[u8]) -> Option<u64> {
    children
        .binary_search_by(|(c, _)| c.as_ref().cmp(name))
        .ok()
        .map(|i| children[i].1)
}

/// Is this upper-dir entry an opaque directory? Refuses overlay xattrs
/// whose meaning `save` does not model.
fn overlay_opaque(e: &Entry) -> Result<bool> {
    let mut opaque = false;
    for (k, v) in e.xattrs.iter().filter(|(k, _)| k.starts_with(OVERLAY_XATTRS)) {
        if k == OPAQUE_XATTR && v == b"y" && e.kind == Kind::Dir {
            opaque = true;
        } else if !HARMLESS_OVERLAY_XATTRS.contains(&k.as_slice()) {
            return Err(Error::refused(
                path::display(&e.path),
                format!(
                    "the upper dir carries overlay xattr {}={} that save does not understand \
                     (made with other overlay options?); nothing was published",
                    String::from_utf8_lossy(k),
                    crate::format::hex(&v[..v.len().min(32)])
                ),
            ));
        }
    }
    Ok(opaque)
}

/// Collect the names of every multiply-linked regular file under `abs`,
/// and add up the bytes of every inode's data once.
fn scan(abs: &Path, rel: Vec<u8>, links: &mut HashMap<(u64, u64), Vec<Vec<u8>>>, total: &mut u64) -> Result<()> {
    for n in sorted_names(abs)? {
        let crel = path::join(&rel, n.as_bytes());
        path::check(&crel).map_err(|why| Error::refused(path::display(&crel), why))?;
        let child = abs.join(&n);
        let m = std::fs::symlink_metadata(&child).ctx(|| child.display().to_string())?;
        if m.is_dir() {
            scan(&child, crel, links, total)?;
        } else if m.is_file() && m.nlink() > 1 {
            let names = links.entry((m.dev(), m.ino())).or_default();
            if names.is_empty() {
                *total += m.len();
            }
            names.push(crel);
        } else if m.is_file() {
            *total += m.len();
        }
    }
    Ok(())
}

/// Build an index entry from a file's metadata (data fields left empty).
/// Sockets have no place in a snapshot: `None`.
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
fn link_or_open(
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
fn sorted_names(abs: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for ent in std::fs::read_dir(abs).ctx(|| abs.display().to_string())? {
        names.push(ent.ctx(|| abs.display().to_string())?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Do a local entry and a lower entry have the same metadata?
pub fn same_meta(e: &Entry, lower: &Entry) -> bool {
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
fn digest_of(p: &Path) -> Result<Digest> {
    let mut f = File::open(p).ctx(|| p.display().to_string())?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f, &mut h).ctx(|| p.display().to_string())?;
    Ok(crate::format::truncate(h.finalize()))
}
