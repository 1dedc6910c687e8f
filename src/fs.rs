//! The filesystem core: what a read-only mount answers, with its own small
//! types, testable without FUSE. `fuse.rs` translates these to fuser replies.
//!
//! Metadata comes from the in-memory inode table and never waits on the
//! network; only `read` is async, and every read has a deadline after which it
//! fails with ETIMEDOUT instead of hanging.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fetch::fetcher::Fetcher;
use crate::fetch::frame_range;
use crate::format::{path, Entry, Kind};
use crate::layer::Tree;
use crate::store::Priority;

/// Attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: Kind,
    /// Size in bytes (files) or target length (symlinks).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for char/block devices.
    pub rdev: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Attributes.
    pub attr: Attr,
    /// Offset to resume after this entry.
    pub next: u64,
}

/// Filesystem-wide numbers for statfs.
#[derive(Debug, Clone, Copy)]
pub struct Statfs {
    /// Blocks (4 KiB) of file data.
    pub blocks: u64,
    /// Inodes.
    pub files: u64,
}

/// Sequential-read state of one open file.
#[derive(Debug, Default, Clone, Copy)]
struct OpenFile {
    /// The reading frontier: the furthest end read so far.
    next: u64,
    /// How far ahead of the frontier to have asked for, in bytes.
    window: u64,
    /// Where what readahead has asked for ends.
    ahead: u64,
}

/// A read this close to the frontier still counts as sequential: the
/// kernel's own readahead sends several reads of a file at once, and they
/// may arrive here out of order.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// Readahead asks for at least this part of its window at a time. A
/// reader catches up with a request only when all of it has arrived, so
/// the window must hold several: with a quarter, two or three requests are
/// on the way while the reader consumes the one before them, which keeps a
/// long fat link busy (a request of half the window would leave the link
/// idle for a round trip each time the reader catches up).
const READAHEAD_PARTS: u64 = 4;

impl OpenFile {
    /// Note a read of `offset..end` of a file of `size` bytes; what to
    /// fetch ahead now, if anything (file offsets). On sequential reads the
    /// window doubles up to `max`; it is topped up in parts of at least a
    /// quarter of itself, so requests are few and large.
    fn advance(&mut self, offset: u64, end: u64, size: u64, max: u64) -> Option<std::ops::Range<u64>> {
        let sequential = offset <= self.next.saturating_add(SEQUENTIAL_SLACK)
            && offset.saturating_add(SEQUENTIAL_SLACK) >= self.next;
        if sequential {
            self.next = self.next.max(end);
            self.window = (self.window * 2).clamp(256 << 10, max.max(256 << 10));
        } else {
            *self = OpenFile {
                next: end,
                window: 0,
                ahead: 0,
            };
            return None;
        }
        let target = size.min(self.next.saturating_add(self.window));
        let from = self.ahead.max(self.next);
        if target <= from || (target - from < self.window / READAHEAD_PARTS && target < size) {
            return None;
        }
        self.ahead = target;
        Some(from..target)
    }
}

/// See the module docs.
pub struct Fs {
    tree: Tree,
    fetcher: Arc<Fetcher>,
    deadline: Duration,
    readahead_max: u64,
    open: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    statfs: Statfs,
}

impl Fs {
    /// A filesystem over `tree`, reading through `fetcher`.
    pub fn new(tree: Tree, fetcher: Arc<Fetcher>, deadline: Duration, readahead_max: u64) -> Fs {
        let mut bytes = 0u64;
        for ino in tree.inodes() {
            if let Some(n) = tree.node(ino) {
                bytes += tree.entry(n).size.div_ceil(4096);
            }
        }
        let statfs = Statfs {
            blocks: bytes,
            files: tree.len() as u64,
        };
        Fs {
            tree,
            fetcher,
            deadline,
            readahead_max,
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            statfs,
        }
    }

    /// The inode table.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The fetcher.
    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// The canonical inode number (hardlink names resolved), its entry and link count.
    fn node_entry(&self, ino: u64) -> Result<(u64, &Entry, u32)> {
        let missing = || Error::not_found(format!("inode {ino}"));
        let real = self.tree.canonical(ino).ok_or_else(missing)?;
        let n = self.tree.node(real).ok_or_else(missing)?;
        Ok((real, self.tree.entry(n), n.nlink))
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (ino, e, nlink) = self.node_entry(ino)?;
        Ok(attr_of(ino, e, nlink))
    }

    /// Look up `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let (_, pe, _) = self.node_entry(parent)?;
        if pe.kind != Kind::Dir {
            return Err(Error::io("lookup", std::io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let ino = self
            .tree
            .lookup(parent, name)
            .ok_or_else(|| Error::not_found(path::display(name)))?;
        self.getattr(ino)
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (_, e, _) = self.node_entry(ino)?;
        if e.kind != Kind::Symlink {
            return Err(Error::io("readlink", std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        Ok(e.link.clone())
    }

    /// Entries of directory `ino` from `offset` on (`.` and `..` first).
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<DirEntry>> {
        let n = self
            .tree
            .node(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        if self.tree.entry(n).kind != Kind::Dir {
            return Err(Error::io("readdir", std::io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let mut out = Vec::new();
        let total = n.children.len() as u64 + 2;
        let mut off = offset;
        while off < total && out.len() < max {
            let (name, child) = match off {
                0 => (b".".to_vec(), ino),
                1 => (b"..".to_vec(), n.parent),
                _ => {
                    let (name, c) = &n.children[(off - 2) as usize];
                    (name.to_vec(), *c)
                }
            };
            out.push(DirEntry {
                name,
                attr: self.getattr(child)?,
                next: off + 1,
            });
            off += 1;
        }
        Ok(out)
    }

    /// Open `ino` for reading; returns a handle for [`Fs::read`].
    pub fn open(&self, ino: u64) -> Result<u64> {
        let (_, e, _) = self.node_entry(ino)?;
        if e.kind == Kind::Dir {
            return Err(Error::io("open", std::io::Error::from_raw_os_error(libc::EISDIR)));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, OpenFile::default());
        Ok(fh)
    }

    /// Forget a handle.
    pub fn release(&self, fh: u64) {
        self.open.lock().remove(&fh);
    }

    /// Read up to `size` bytes of `ino` at `offset`, within the deadline.
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let n = self
            .tree
            .node(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        let e = self.tree.entry(n);
        if !e.kind.has_data() {
            return Err(Error::io("read", std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        if offset >= e.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = e.size.min(offset + u64::from(size));
        let range = e.offset + offset..e.offset + end;
        self.readahead(n.layer, e, fh, offset, end);
        match tokio::time::timeout(self.deadline, self.fetcher.read(n.layer, range)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("{}: read timed out after {:?}", path::display(&e.path), self.deadline);
                Err(Error::Timeout {
                    what: path::display(&e.path),
                    secs: self.deadline.as_secs_f64(),
                })
            }
        }
    }

    /// On sequential reads, fetch ahead within the file (see
    /// [`OpenFile::advance`]).
    fn readahead(&self, layer: u32, e: &Entry, fh: u64, offset: u64, end: u64) {
        let ahead = {
            let mut open = self.open.lock();
            let Some(st) = open.get_mut(&fh) else { return };
            st.advance(offset, end, e.size, self.readahead_max)
        };
        let Some(ahead) = ahead else { return };
        // Frames already in memory or on their way are skipped there.
        if let Some(l) = self.fetcher.layers().get(layer as usize) {
            let range = e.offset + ahead.start..e.offset + ahead.end;
            self.fetcher
                .fetch_background(layer, frame_range(&l.frames, range), Priority::Readahead);
        }
    }

    /// Value of xattr `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let (_, e, _) = self.node_entry(ino)?;
        e.xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::io("getxattr", std::io::Error::from_raw_os_error(libc::ENODATA)))
    }

    /// NUL-terminated xattr names of `ino`.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let (_, e, _) = self.node_entry(ino)?;
        let mut out = Vec::new();
        for (k, _) in &e.xattrs {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Filesystem numbers.
    pub fn statfs(&self) -> Statfs {
        self.statfs
    }

    /// `access(2)`: the tree is read-only; other checks follow the mode bits.
    pub fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let (_, e, _) = self.node_entry(ino)?;
        if mask & libc::W_OK != 0 {
            return Err(Error::io("access", std::io::Error::from_raw_os_error(libc::EROFS)));
        }
        if uid == 0 || mask == libc::F_OK {
            return Ok(());
        }
        let bits = if uid == e.uid {
            (e.mode >> 6) & 7
        } else if gid == e.gid {
            (e.mode >> 3) & 7
        } else {
            e.mode & 7
        } as i32;
        if mask & bits == mask {
            Ok(())
        } else {
            Err(Error::io("access", std::io::Error::from_raw_os_error(libc::EACCES)))
        }
    }
}

fn attr_of(ino: u64, e: &Entry, nlink: u32) -> Attr {
    Attr {
        ino,
        kind: if e.kind == Kind::Hardlink { Kind::File } else { e.kind },
        size: match e.kind {
            Kind::File | Kind::Hardlink => e.size,
            Kind::Symlink => e.link.len() as u64,
            Kind::Dir => 4096,
            _ => 0,
        },
        perm: (e.mode & 0o7777) as u16,
        nlink,
        uid: e.uid,
        gid: e.gid,
        rdev: if matches!(e.kind, Kind::Char | Kind::Block) {
            // The kernel's "new" 32-bit device encoding used by FUSE.
            (e.dev_minor & 0xff) | ((e.dev_major & 0xfff) << 8) | ((e.dev_minor & !0xff) << 12)
        } else {
            0
        },
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::fetcher::FetchConfig;
    use crate::format::writer::SnapshotWriter;
    use crate::snapshot::Chain;

    fn entry(p: &str, kind: Kind, mode: u32) -> Entry {
        let mut e = Entry::new(p.as_bytes().to_vec(), kind);
        e.mode = mode;
        e.mtime = 1_700_000_000;
        e.mtime_nsec = 42;
        e
    }

    /// A small snapshot served by an `Fs`, no FUSE involved.
    fn fixture(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Fs {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let store = crate::build::publish::publish_test(rt, dir, |w: &mut SnapshotWriter<_>| {
            w.add(entry("", Kind::Dir, 0o755), None)?;
            w.add(entry("d", Kind::Dir, 0o750), None)?;
            let mut f = entry("d/big", Kind::File, 0o644);
            f.size = big.len() as u64;
            f.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
            w.add(f, Some(&mut &big[..]))?;
            let mut h = entry("d/link", Kind::Hardlink, 0o644);
            h.link = b"d/big".to_vec();
            w.add(h, None)?;
            let mut s = entry("s", Kind::Symlink, 0o777);
            s.link = b"d/big".to_vec();
            w.add(s, None)
        });
        let chain = rt.block_on(Chain::open(&store, "t")).expect("open");
        let fetcher = Fetcher::new(chain.layers(), FetchConfig::default()).expect("fetcher");
        let tree = chain.tree().expect("tree");
        Fs::new(tree, fetcher, Duration::from_secs(5), 1 << 20)
    }

    #[test]
    fn metadata_reads_and_errors() {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fixture(&rt, dir.path());
        let root = fs.getattr(1).expect("root");
        assert_eq!((root.kind, root.nlink), (Kind::Dir, 3));
        let d = fs.lookup(1, b"d").expect("d");
        assert_eq!(d.perm, 0o750);
        let big = fs.lookup(d.ino, b"big").expect("big");
        let link = fs.lookup(d.ino, b"link").expect("link");
        assert_eq!((big.ino, big.nlink, big.size), (link.ino, 2, 3_000_000));
        assert_eq!(big.mtime_nsec, 42);
        assert!(fs.lookup(d.ino, b"nope").is_err_and(|e| e.errno() == libc::ENOENT));
        assert!(fs.lookup(big.ino, b"x").is_err_and(|e| e.errno() == libc::ENOTDIR));
        let s = fs.lookup(1, b"s").expect("s");
        assert_eq!(fs.readlink(s.ino).expect("readlink"), b"d/big");
        let names: Vec<Vec<u8>> = fs
            .readdir(d.ino, 0, 100)
            .expect("readdir")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec![b".".to_vec(), b"..".to_vec(), b"big".to_vec(), b"link".to_vec()]
        );
        assert_eq!(fs.readdir(d.ino, 3, 100).expect("resume").len(), 1);
        assert_eq!(fs.getxattr(big.ino, b"user.k").expect("xattr"), b"v");
        assert!(fs
            .getxattr(big.ino, b"user.x")
            .is_err_and(|e| e.errno() == libc::ENODATA));
        assert_eq!(fs.listxattr(big.ino).expect("list"), b"user.k\0");
        assert!(fs
            .access(big.ino, libc::W_OK, 0, 0)
            .is_err_and(|e| e.errno() == libc::EROFS));
        assert!(fs
            .access(d.ino, libc::R_OK, 1000, 1000)
            .is_err_and(|e| e.errno() == libc::EACCES));

        let fh = fs.open(big.ino).expect("open");
        let want: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let mut off = 0u64;
        while off < 3_000_000 {
            let b = rt.block_on(fs.read(big.ino, fh, off, 131_072)).expect("read");
            assert!(!b.is_empty());
            off += b.len() as u64;
            got.extend_from_slice(&b);
        }
        assert!(got == want, "content");
        assert!(rt
            .block_on(fs.read(big.ino, fh, 3_000_000, 10))
            .expect("eof")
            .is_empty());
        fs.release(fh);
        let st = fs.fetcher().stats();
        assert!(st.frames_fetched >= 45 && st.errors == 0, "{st:?}");
    }

    #[test]
    fn readahead_asks_for_large_parts_and_tolerates_reordered_reads() {
        const K: u64 = 1 << 10;
        const M: u64 = 1 << 20;
        let (size, max) = (1 << 30, 16 * M);
        let mut st = OpenFile::default();
        let mut asked = Vec::new();
        let mut off = 0;
        // 128 KiB reads, every pair arriving swapped (the kernel sends
        // its readahead's reads at once).
        while off < 64 * M {
            for o in [off + 128 * K, off] {
                if let Some(r) = st.advance(o, o + 128 * K, size, max) {
                    asked.push(r);
                }
            }
            off += 256 * K;
        }
        // Contiguous, never behind the reader, the window grown to the cap
        // and topped up in parts of at least a quarter of it.
        assert!(asked.windows(2).all(|w| w[0].end == w[1].start), "{asked:?}");
        assert_eq!(st.window, max);
        assert!(st.ahead >= 64 * M + 3 * max / 4, "{st:?}");
        let steady: Vec<u64> = asked.iter().skip(8).map(|r| r.end - r.start).collect();
        assert!(!steady.is_empty() && steady.iter().all(|&n| n >= max / 4), "{steady:?}");
        // A jump is random access: no readahead until reads are sequential again.
        assert_eq!(st.advance(512 * M, 512 * M + 4 * K, size, max), None);
        assert_eq!(st.window, 0);
        let r = st
            .advance(512 * M + 4 * K, 512 * M + 8 * K, size, max)
            .expect("sequential again");
        assert_eq!(r, 512 * M + 8 * K..512 * M + 8 * K + 256 * K);
        // Near the end of the file: up to the end, then nothing more.
        let mut st = OpenFile::default();
        assert_eq!(st.advance(0, 100 * K, 300 * K, max), Some(100 * K..300 * K));
        assert_eq!(st.advance(100 * K, 200 * K, 300 * K, max), None);
    }
}
