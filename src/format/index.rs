//! The snapshot index: every entry, every frame, the parent and the prefetch list.
//!
//! Encoded as a compact binary stream (LEB128 varints, front-coded paths) and
//! stored zstd-compressed in a skippable frame. Entries are sorted component-wise
//! (see [`super::path::cmp`]) so a path lookup is a binary search and a
//! directory's subtree is a contiguous run. [`Index::validate`] enforces every
//! structural invariant the rest of the program relies on, so a malicious index
//! can never make extract or mount write or serve outside its tree.

use std::ops::Range;

use super::limits::{
    path_budget, MAX_FRAME, MAX_FRAME_COMPRESSED, MAX_LINK, MAX_PARENT_NAME, MAX_PATH, MAX_XATTRS, MAX_XATTR_NAME,
    MAX_XATTR_VALUE,
};
use super::{path, Digest, DIGEST_LEN, FORMAT_VERSION};
use crate::error::{Error, Result};

/// Magic at the start of the (decompressed) index.
const MAGIC: &[u8; 8] = b"LZSIDX\x00\x01";

/// Entry types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Regular file with data in the tar stream.
    File = 0,
    /// Directory.
    Dir = 1,
    /// Symbolic link; `link` is the target.
    Symlink = 2,
    /// Hard link to an earlier regular file; `link` is that file's path.
    Hardlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Character device.
    Char = 5,
    /// Block device.
    Block = 6,
    /// Deletion marker of a diff snapshot (`.wh.NAME` in the tar stream).
    Whiteout = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::Hardlink,
            4 => Kind::Fifo,
            5 => Kind::Char,
            6 => Kind::Block,
            7 => Kind::Whiteout,
            _ => return None,
        })
    }

    /// Short lowercase name, as printed by `ls` and `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
            Kind::Fifo => "fifo",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Whiteout => "whiteout",
        }
    }

    /// True for kinds whose bytes live in the tar stream (files and their links).
    pub fn has_data(self) -> bool {
        matches!(self, Kind::File | Kind::Hardlink)
    }
}

/// Entry flag: an opaque directory of a diff (hides all lower children).
pub const FLAG_OPAQUE: u8 = 1;

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path; empty for the root.
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: Kind,
    /// [`FLAG_OPAQUE`] or 0.
    pub flags: u8,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// File size in bytes (files and hardlinks; 0 otherwise).
    pub size: u64,
    /// Offset of the file data in the uncompressed tar stream.
    pub offset: u64,
    /// Symlink target, or the path a hardlink points to.
    pub link: Vec<u8>,
    /// Device major number (char/block).
    pub dev_major: u32,
    /// Device minor number (char/block).
    pub dev_minor: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Content digest of the file data (files and hardlinks).
    pub digest: Digest,
}

impl Entry {
    /// A new entry of `kind` at `path` with every other field zero.
    pub fn new(path: Vec<u8>, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            flags: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            offset: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            digest: [0; DIGEST_LEN],
        }
    }

    /// Is this an opaque directory?
    pub fn is_opaque(&self) -> bool {
        self.flags & FLAG_OPAQUE != 0
    }
}

/// One zstd data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame in the object.
    pub c_off: u64,
    /// Compressed length.
    pub c_len: u64,
    /// Offset of the frame's content in the uncompressed tar stream.
    pub u_off: u64,
    /// Uncompressed length.
    pub u_len: u64,
    /// Digest of the compressed bytes.
    pub digest: Digest,
}

/// The snapshot a diff is layered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// Snapshot name of the parent in the same store.
    pub name: String,
    /// Digest of the parent's compressed index (its footer's `index_digest`).
    pub index_digest: Digest,
}

/// The decoded index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Creation time, nanoseconds since the epoch.
    pub created_ns: i64,
    /// Name and version of the tool that wrote the snapshot.
    pub tool: String,
    /// Nominal uncompressed frame size used by the writer.
    pub frame_size: u64,
    /// zstd level used by the writer.
    pub level: i32,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Entries, sorted by [`path::cmp`].
    pub entries: Vec<Entry>,
    /// Data frames in object order.
    pub frames: Vec<Frame>,
    /// Parent snapshot, for diffs.
    pub parent: Option<Parent>,
    /// Paths in the order a previous workload first read them.
    pub prefetch: Vec<Vec<u8>>,
}

impl Index {
    /// Binary-search an entry by path.
    pub fn find(&self, p: &[u8]) -> Option<usize> {
        self.entries.binary_search_by(|e| path::cmp(&e.path, p)).ok()
    }

    /// Indices of the direct children of the directory at index `dir`.
    pub fn children(&self, dir: usize) -> impl Iterator<Item = usize> + '_ {
        let dpath = &self.entries[dir].path;
        let end = self.subtree_end(dir);
        (dir + 1..end).filter(move |&i| path::parent(&self.entries[i].path) == dpath.as_slice())
    }

    /// One past the last index of the subtree rooted at `i`.
    pub fn subtree_end(&self, i: usize) -> usize {
        let p = &self.entries[i].path;
        if p.is_empty() {
            return self.entries.len();
        }
        let rest = &self.entries[i + 1..];
        i + 1 + rest.partition_point(|e| e.path.len() > p.len() && e.path.starts_with(p) && e.path[p.len()] == b'/')
    }

    /// Frames that hold the uncompressed bytes `range` of the tar stream.
    pub fn frames_for(&self, range: Range<u64>) -> Range<usize> {
        frame_range(&self.frames, range)
    }

    /// Total compressed size of the data frames.
    pub fn data_size(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.c_off + f.c_len)
    }

    /// Serialize (uncompressed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Enc(Vec::with_capacity(64 + self.entries.len() * 48));
        w.0.extend_from_slice(MAGIC);
        w.uv(u64::from(FORMAT_VERSION));
        w.uv(0); // required feature bits: none in v1
        w.iv(self.created_ns);
        w.bytes(self.tool.as_bytes());
        w.uv(self.frame_size);
        w.iv(i64::from(self.level));
        w.uv(self.tar_size);
        w.uv(self.entries.len() as u64);
        let mut prev: &[u8] = b"";
        for e in &self.entries {
            let shared = prev.iter().zip(e.path.iter()).take_while(|(a, b)| a == b).count();
            w.uv(shared as u64);
            w.bytes(&e.path[shared..]);
            prev = &e.path;
            w.0.push(e.kind as u8);
            w.0.push(e.flags);
            w.uv(u64::from(e.mode));
            w.uv(u64::from(e.uid));
            w.uv(u64::from(e.gid));
            w.iv(e.mtime);
            w.uv(u64::from(e.mtime_nsec));
            w.uv(e.size);
            if e.kind.has_data() {
                w.uv(e.offset);
                w.0.extend_from_slice(&e.digest);
            }
            if matches!(e.kind, Kind::Symlink | Kind::Hardlink) {
                w.bytes(&e.link);
            }
            if matches!(e.kind, Kind::Char | Kind::Block) {
                w.uv(u64::from(e.dev_major));
                w.uv(u64::from(e.dev_minor));
            }
            w.uv(e.xattrs.len() as u64);
            for (k, v) in &e.xattrs {
                w.bytes(k);
                w.bytes(v);
            }
        }
        w.uv(self.frames.len() as u64);
        for f in &self.frames {
            w.uv(f.c_len);
            w.uv(f.u_len);
            w.0.extend_from_slice(&f.digest);
        }
        match &self.parent {
            Some(p) => {
                w.0.push(1);
                w.bytes(p.name.as_bytes());
                w.0.extend_from_slice(&p.index_digest);
            }
            None => w.0.push(0),
        }
        w.uv(self.prefetch.len() as u64);
        for p in &self.prefetch {
            w.bytes(p);
        }
        w.0
    }

    /// Parse and validate an encoded index. `what` names the snapshot in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Index> {
        let mut r = Dec { buf, pos: 0, what };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(r.bad("bad magic"));
        }
        let version = r.uv()?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(Error::Unsupported {
                what: what.to_string(),
                why: format!("index version {version}"),
            });
        }
        let features = r.uv()?;
        if features != 0 {
            return Err(Error::Unsupported {
                what: what.to_string(),
                why: format!("index feature bits {features:#x}"),
            });
        }
        let created_ns = r.iv()?;
        let tool = String::from_utf8_lossy(r.bytes()?).into_owned();
        let frame_size = r.uv()?;
        let level = i32::try_from(r.iv()?).map_err(|_| r.bad("level out of range"))?;
        let tar_size = r.uv()?;
        // The smallest encoded entry is 11 bytes (a frame 18, an xattr 2).
        let n = r.count(11)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n);
        let mut path_bytes = 0u64;
        let budget = path_budget(buf.len() as u64);
        for _ in 0..n {
            let shared = r.uv()?;
            let suffix = r.bytes()?;
            let prev = entries.last().map_or(&b""[..], |e| &e.path[..]);
            let shared = usize::try_from(shared)
                .ok()
                .filter(|&s| s <= prev.len())
                .ok_or_else(|| r.bad("bad path prefix"))?;
            if shared + suffix.len() > MAX_PATH {
                return Err(r.bad("path longer than 4096 bytes"));
            }
            path_bytes += (shared + suffix.len()) as u64;
            if path_bytes > budget {
                return Err(r.bad("paths add up to more than the format allows for an index this size"));
            }
            let mut p = Vec::with_capacity(shared + suffix.len());
            p.extend_from_slice(&prev[..shared]);
            p.extend_from_slice(suffix);
            let kind = Kind::from_u8(r.u8()?).ok_or_else(|| r.bad("unknown entry type"))?;
            let mut e = Entry::new(p, kind);
            e.flags = r.u8()?;
            e.mode = r.u32()?;
            e.uid = r.u32()?;
            e.gid = r.u32()?;
            e.mtime = r.iv()?;
            e.mtime_nsec = r.u32()?;
            e.size = r.uv()?;
            if kind.has_data() {
                e.offset = r.uv()?;
                e.digest.copy_from_slice(r.take(DIGEST_LEN)?);
            }
            if matches!(kind, Kind::Symlink | Kind::Hardlink) {
                let link = r.bytes()?;
                if link.len() > MAX_LINK {
                    return Err(r.bad("link target longer than 4096 bytes"));
                }
                e.link = link.to_vec();
            }
            if matches!(kind, Kind::Char | Kind::Block) {
                e.dev_major = r.u32()?;
                e.dev_minor = r.u32()?;
            }
            let nx = r.count(2)?;
            if nx > MAX_XATTRS {
                return Err(r.bad("too many xattrs"));
            }
            for _ in 0..nx {
                let k = r.bytes()?;
                let v = r.bytes()?;
                if k.len() > MAX_XATTR_NAME || v.len() > MAX_XATTR_VALUE {
                    return Err(r.bad("xattr name or value too long"));
                }
                e.xattrs.push((k.to_vec(), v.to_vec()));
            }
            entries.push(e);
        }
        let nf = r.count(DIGEST_LEN + 2)?;
        let mut frames = Vec::with_capacity(nf);
        let (mut c_off, mut u_off) = (0u64, 0u64);
        for _ in 0..nf {
            let c_len = r.uv()?;
            let u_len = r.uv()?;
            let mut digest = [0u8; DIGEST_LEN];
            digest.copy_from_slice(r.take(DIGEST_LEN)?);
            frames.push(Frame {
                c_off,
                c_len,
                u_off,
                u_len,
                digest,
            });
            c_off = c_off.checked_add(c_len).ok_or_else(|| r.bad("frame table overflows"))?;
            u_off = u_off.checked_add(u_len).ok_or_else(|| r.bad("frame table overflows"))?;
        }
        let parent = match r.u8()? {
            0 => None,
            1 => {
                let name = r.bytes()?;
                if name.len() > MAX_PARENT_NAME {
                    return Err(r.bad("parent name too long"));
                }
                let name = String::from_utf8(name.to_vec()).map_err(|_| r.bad("parent name is not UTF-8"))?;
                let mut index_digest = [0u8; DIGEST_LEN];
                index_digest.copy_from_slice(r.take(DIGEST_LEN)?);
                Some(Parent { name, index_digest })
            }
            _ => return Err(r.bad("bad parent flag")),
        };
        let np = r.count(1)?;
        let mut prefetch = Vec::with_capacity(np);
        for _ in 0..np {
            let p = r.bytes()?;
            if p.len() > MAX_PATH {
                return Err(r.bad("prefetch path longer than 4096 bytes"));
            }
            prefetch.push(p.to_vec());
        }
        if r.pos != buf.len() {
            return Err(r.bad("trailing bytes"));
        }
        let idx = Index {
            created_ns,
            tool,
            frame_size,
            level,
            tar_size,
            entries,
            frames,
            parent,
            prefetch,
        };
        idx.validate(what)?;
        Ok(idx)
    }

    /// Check every structural invariant: sorted unique safe paths, a root
    /// directory, every parent a directory, hardlinks to files, data inside the
    /// tar stream, frames covering the tar stream exactly.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |why: String| Error::corrupt(what, format!("index: {why}"));
        let root = self.entries.first().ok_or_else(|| bad("no root entry".into()))?;
        if !root.path.is_empty() || root.kind != Kind::Dir {
            return Err(bad("first entry is not the root directory".into()));
        }
        let u_total: u64 = self.frames.iter().map(|f| f.u_len).sum();
        if u_total != self.tar_size {
            return Err(bad(format!(
                "frames hold {u_total} bytes, tar stream is {}",
                self.tar_size
            )));
        }
        if self.frames.iter().any(|f| f.u_len == 0 || f.c_len == 0) {
            return Err(bad("empty frame".into()));
        }
        if self.frame_size > MAX_FRAME
            || self
                .frames
                .iter()
                .any(|f| f.u_len > MAX_FRAME || f.c_len > MAX_FRAME_COMPRESSED)
        {
            return Err(bad("frame larger than 64 MiB".into()));
        }
        if let Some(p) = &self.parent {
            if p.name.len() > MAX_PARENT_NAME {
                return Err(bad("parent name too long".into()));
            }
        }
        for p in &self.prefetch {
            path::check(p).map_err(|why| bad(format!("prefetch list: {}: {why}", path::display(p))))?;
        }
        // Directories enclosing the current entry, innermost last (entries
        // are in depth-first order, so a stack finds every parent in O(1)).
        let mut dirs: Vec<&[u8]> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let name = || path::display(&e.path);
            path::check(&e.path).map_err(|why| bad(format!("{}: {why}", name())))?;
            if i > 0 {
                let prev = &self.entries[i - 1].path;
                if path::cmp(prev, &e.path) != std::cmp::Ordering::Less {
                    return Err(bad(format!("{}: entries not sorted or duplicated", name())));
                }
                while dirs.last().is_some_and(|d| !path::is_within(&e.path, d)) {
                    dirs.pop();
                }
                if dirs.last().copied() != Some(path::parent(&e.path)) {
                    return Err(bad(format!("{}: parent is not a directory in the index", name())));
                }
            }
            if e.kind == Kind::Dir {
                dirs.push(&e.path);
            }
            if e.link.len() > MAX_LINK {
                return Err(bad(format!("{}: link target longer than 4096 bytes", name())));
            }
            if e.xattrs.len() > MAX_XATTRS
                || e.xattrs
                    .iter()
                    .any(|(k, v)| k.len() > MAX_XATTR_NAME || v.len() > MAX_XATTR_VALUE)
            {
                return Err(bad(format!("{}: xattrs beyond the format's limits", name())));
            }
            if e.mode & !0o7777 != 0 {
                return Err(bad(format!("{}: bad mode {:o}", name(), e.mode)));
            }
            match e.kind {
                Kind::File => {
                    let end = e.offset.checked_add(e.size);
                    if end.is_none_or(|end| end > self.tar_size) {
                        return Err(bad(format!("{}: data outside the tar stream", name())));
                    }
                }
                Kind::Hardlink => {
                    let t = self
                        .find(&e.link)
                        .map(|j| &self.entries[j])
                        .filter(|t| t.kind == Kind::File)
                        .ok_or_else(|| bad(format!("{}: hardlink target is not a file", name())))?;
                    if t.offset != e.offset || t.size != e.size || t.digest != e.digest {
                        return Err(bad(format!("{}: hardlink differs from its target", name())));
                    }
                }
                Kind::Symlink => {
                    if e.link.is_empty() || e.link.contains(&0) {
                        return Err(bad(format!("{}: bad symlink target", name())));
                    }
                }
                Kind::Dir | Kind::Fifo | Kind::Char | Kind::Block | Kind::Whiteout => {}
            }
            if e.kind != Kind::Dir && e.flags != 0 || e.flags & !FLAG_OPAQUE != 0 {
                return Err(bad(format!("{}: bad flags", name())));
            }
        }
        Ok(())
    }
}

/// Indices of the frames (in `frames`, sorted by offset) that overlap the
/// uncompressed tar-stream bytes `range`.
pub fn frame_range(frames: &[Frame], range: Range<u64>) -> Range<usize> {
    if range.start >= range.end {
        return 0..0;
    }
    let first = frames.partition_point(|f| f.u_off + f.u_len <= range.start);
    let last = frames.partition_point(|f| f.u_off < range.end);
    first..last.max(first)
}

struct Enc(Vec<u8>);

impl Enc {
    fn uv(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn iv(&mut self, v: i64) {
        self.uv(((v << 1) ^ (v >> 63)) as u64);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.uv(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Dec<'a> {
    fn bad(&self, why: &str) -> Error {
        Error::corrupt(self.what, format!("index: {why} (at byte {})", self.pos))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.bad("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn uv(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }
    fn iv(&mut self) -> Result<i64> {
        let u = self.uv()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn u32(&mut self) -> Result<u32> {
        let v = self.uv()?;
        u32::try_from(v).map_err(|_| self.bad("value out of range"))
    }
    /// A count of items, each at least `min` bytes: bounded by what is left.
    fn count(&mut self, min: usize) -> Result<usize> {
        let n = self.uv()?;
        if n.saturating_mul(min as u64) > (self.buf.len() - self.pos) as u64 {
            return Err(self.bad("count larger than the index"));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.uv()?;
        let n = usize::try_from(n).map_err(|_| self.bad("length out of range"))?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Index {
        let mut root = Entry::new(vec![], Kind::Dir);
        root.mode = 0o755;
        let mut d = Entry::new(b"d".to_vec(), Kind::Dir);
        d.mode = 0o2775;
        d.flags = FLAG_OPAQUE;
        let mut f = Entry::new(b"d/f".to_vec(), Kind::File);
        f.size = 10;
        f.offset = 1024;
        f.digest = [3; 16];
        f.mtime = -5;
        f.mtime_nsec = 999_999_999;
        f.xattrs = vec![(b"user.a".to_vec(), vec![0, 255])];
        let mut h = f.clone();
        h.path = b"d/g".to_vec();
        h.kind = Kind::Hardlink;
        h.link = b"d/f".to_vec();
        h.xattrs.clear();
        let mut s = Entry::new(b"s".to_vec(), Kind::Symlink);
        s.link = b"/nowhere".to_vec();
        let mut c = Entry::new(b"tty".to_vec(), Kind::Char);
        c.dev_major = 5;
        c.dev_minor = 0;
        Index {
            created_ns: 1_700_000_000_123_456_789,
            tool: "lazysnap test".into(),
            frame_size: 1 << 20,
            level: 5,
            tar_size: 3072,
            entries: vec![root, d, f, h, s, c],
            frames: vec![
                Frame {
                    c_off: 0,
                    c_len: 100,
                    u_off: 0,
                    u_len: 2048,
                    digest: [1; 16],
                },
                Frame {
                    c_off: 100,
                    c_len: 50,
                    u_off: 2048,
                    u_len: 1024,
                    digest: [2; 16],
                },
            ],
            parent: Some(Parent {
                name: "org/base".into(),
                index_digest: [9; 16],
            }),
            prefetch: vec![b"d/f".to_vec()],
        }
    }

    #[test]
    fn round_trip() {
        let idx = sample();
        let enc = idx.encode();
        assert_eq!(Index::decode(&enc, "t").unwrap(), idx);
    }

    #[test]
    fn truncations_fail_cleanly() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Index::decode(&enc[..n], "t").is_err(), "prefix {n}");
        }
    }

    #[test]
    fn lookups() {
        let idx = sample();
        assert_eq!(idx.find(b"d/g"), Some(3));
        assert_eq!(idx.find(b"d/h"), None);
        assert_eq!(idx.children(0).collect::<Vec<_>>(), vec![1, 4, 5]);
        assert_eq!(idx.children(1).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(idx.subtree_end(1), 4);
        assert_eq!(idx.frames_for(0..1), 0..1);
        assert_eq!(idx.frames_for(2047..2049), 0..2);
        assert_eq!(idx.frames_for(2048..3072), 1..2);
        assert_eq!(idx.frames_for(5..5), 0..0);
    }

    #[test]
    fn rejects_unsafe_indexes() {
        let mut idx = sample();
        idx.entries[4].path = b"../s".to_vec();
        assert!(Index::decode(&idx.encode(), "t").is_err());
        let mut idx = sample();
        // A file beneath a symlink: the parent must be a directory.
        let mut under = Entry::new(b"s/x".to_vec(), Kind::Fifo);
        under.mode = 0o644;
        idx.entries.insert(5, under);
        assert!(Index::decode(&idx.encode(), "t").is_err());
        let mut idx = sample();
        idx.entries[2].size = 1 << 40;
        assert!(Index::decode(&idx.encode(), "t").is_err());
    }
}
