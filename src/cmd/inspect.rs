//! `inspect`, `ls` and `cat`: read-only views that fetch as little as possible.

use std::io::Write;

use serde::Serialize;
use tokio::runtime::Handle;

use crate::error::{Error, IoContext, Result};
use crate::fetch::{self, coalesce, MAX_REQUEST};
use crate::format::{self, path, Entry, Kind};
use crate::layer::Tree;
use crate::snapshot::{Chain, Snapshot};
use crate::store::Store;

/// Summary of a snapshot, as printed by `inspect`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Snapshot name.
    pub name: String,
    /// Format version.
    pub format_version: u16,
    /// Writer tool.
    pub tool: String,
    /// Creation time (seconds since the epoch, fractional).
    pub created: f64,
    /// Object size in bytes.
    pub size: u64,
    /// Uncompressed tar stream size.
    pub tar_size: u64,
    /// Compressed data frames size.
    pub data_size: u64,
    /// Compressed index frame size.
    pub index_size: u64,
    /// Decompressed index size.
    pub index_raw_size: u64,
    /// Index digest (hex).
    pub index_digest: String,
    /// Nominal frame size.
    pub frame_size: u64,
    /// zstd level.
    pub level: i32,
    /// Number of frames.
    pub frames: usize,
    /// Entries by type.
    pub entries: usize,
    /// Regular files.
    pub files: usize,
    /// Directories.
    pub dirs: usize,
    /// Symlinks.
    pub symlinks: usize,
    /// Hardlinks (names beyond the first).
    pub hardlinks: usize,
    /// Other entries (fifos, devices, whiteouts).
    pub other: usize,
    /// Bytes of regular file content.
    pub file_bytes: u64,
    /// Parent snapshot, for diffs.
    pub parent: Option<ParentInfo>,
    /// Length of the prefetch list.
    pub prefetch: usize,
}

/// A parent reference.
#[derive(Debug, Serialize)]
pub struct ParentInfo {
    /// Parent name.
    pub name: String,
    /// Parent index digest (hex).
    pub index_digest: String,
}

/// Open `name` and summarise it.
pub fn inspect(rt: &Handle, store: &Store, name: &str) -> Result<Summary> {
    let s = rt.block_on(Snapshot::open(store, name))?;
    let idx = &s.index;
    let count = |k: Kind| idx.entries.iter().filter(|e| e.kind == k).count();
    Ok(Summary {
        name: s.name.clone(),
        format_version: s.footer.version,
        tool: idx.tool.clone(),
        created: idx.created_ns as f64 / 1e9,
        size: s.size,
        tar_size: idx.tar_size,
        data_size: idx.data_size(),
        index_size: s.footer.index_len,
        index_raw_size: s.footer.index_raw_len,
        index_digest: format::hex(&s.footer.index_digest),
        frame_size: idx.frame_size,
        level: idx.level,
        frames: idx.frames.len(),
        entries: idx.entries.len(),
        files: count(Kind::File),
        dirs: count(Kind::Dir),
        symlinks: count(Kind::Symlink),
        hardlinks: count(Kind::Hardlink),
        other: count(Kind::Fifo) + count(Kind::Char) + count(Kind::Block) + count(Kind::Whiteout),
        file_bytes: idx
            .entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum(),
        parent: idx.parent.as_ref().map(|p| ParentInfo {
            name: p.name.clone(),
            index_digest: format::hex(&p.index_digest),
        }),
        prefetch: idx.prefetch.len(),
    })
}

/// One row of `ls`.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Path relative to the snapshot root.
    pub path: String,
    /// Entry type.
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds).
    pub mtime: i64,
    /// Link target, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Listing {
    fn of(e: &Entry, p: &[u8]) -> Listing {
        Listing {
            path: path::display(p),
            kind: if e.kind == Kind::Hardlink {
                Kind::File.name()
            } else {
                e.kind.name()
            },
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: e.mtime,
            link: matches!(e.kind, Kind::Symlink | Kind::Hardlink)
                .then(|| String::from_utf8_lossy(&e.link).into_owned()),
        }
    }
}

/// Parse a user-supplied path inside a snapshot ("/", "a/b", "/a/b/").
pub fn parse_inner_path(p: &str) -> Result<Vec<u8>> {
    let norm = path::normalize_tar_name(p.trim_start_matches('/').as_bytes());
    path::check(&norm).map_err(|why| Error::Usage(format!("bad path {p:?}: {why}")))?;
    Ok(norm)
}

/// Open the chain of `name` and find `p` in its merged view.
fn lookup(rt: &Handle, store: &Store, name: &str, p: &[u8]) -> Result<(Chain, Tree, u64)> {
    let chain = rt.block_on(Chain::open(store, name))?;
    let tree = chain.tree()?;
    let ino = tree
        .resolve(p)
        .ok_or_else(|| Error::not_found(format!("{} in snapshot {name}", path::display(p))))?;
    Ok((chain, tree, ino))
}

/// Entries directly under `dir` (or the entry itself when it is not a dir),
/// in the merged view of the snapshot's chain.
pub fn ls(rt: &Handle, store: &Store, name: &str, dir: &str) -> Result<Vec<Listing>> {
    let p = parse_inner_path(dir)?;
    let (_, tree, ino) = lookup(rt, store, name, &p)?;
    let node = tree.node(ino).ok_or_else(|| Error::not_found(path::display(&p)))?;
    let e = tree.entry(node);
    if e.kind != Kind::Dir {
        return Ok(vec![Listing::of(e, &p)]);
    }
    Ok(node
        .children
        .iter()
        .filter_map(|(child_name, c)| {
            let n = tree.node(*c)?;
            Some(Listing::of(tree.entry(n), &path::join(&p, child_name)))
        })
        .collect())
}

/// Write one file's content to `out`, fetching only the frames it touches
/// (from whichever layer of the chain holds the file).
pub fn cat(rt: &Handle, store: &Store, name: &str, file: &str, out: &mut dyn Write) -> Result<()> {
    let p = parse_inner_path(file)?;
    let (chain, tree, ino) = lookup(rt, store, name, &p)?;
    let node = tree.node(ino).ok_or_else(|| Error::not_found(path::display(&p)))?;
    let e = tree.entry(node);
    if !e.kind.has_data() {
        return Err(Error::Usage(format!(
            "{}: not a regular file ({})",
            path::display(&p),
            e.kind.name()
        )));
    }
    let s = &chain.snapshots[node.layer as usize];
    let frames = &s.index.frames;
    let range = e.offset..e.offset + e.size;
    let what = format!("snapshot {}", s.name);
    let mut hasher = blake3::Hasher::new();
    for run in coalesce(frames, fetch::frame_range(frames, range.clone()), MAX_REQUEST) {
        let base = run.start;
        let datas = rt.block_on(fetch::fetch_run(store, &s.key, frames, run, &what))?;
        for (k, data) in datas.iter().enumerate() {
            let mut piece = Vec::new();
            fetch::append_overlap(&mut piece, &frames[base + k], data, &range);
            hasher.update(&piece);
            out.write_all(&piece).ctx(|| "writing output".into())?;
        }
    }
    if format::truncate(hasher.finalize()) != e.digest {
        return Err(Error::corrupt(
            &what,
            format!("{}: content digest mismatch", path::display(&p)),
        ));
    }
    out.flush().ctx(|| "writing output".into())
}

/// One snapshot of a chain, as printed by `log`.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// Snapshot name.
    pub name: String,
    /// Creation time (seconds since the epoch).
    pub created: f64,
    /// Object size.
    pub size: u64,
    /// Entries in this layer.
    pub entries: usize,
    /// Whiteouts in this layer.
    pub whiteouts: usize,
    /// Frames in this layer.
    pub frames: usize,
    /// Parent name, if a diff.
    pub parent: Option<String>,
}

/// The chain of `name`, newest first.
pub fn log(rt: &Handle, store: &Store, name: &str) -> Result<Vec<LogEntry>> {
    let chain = rt.block_on(Chain::open(store, name))?;
    Ok(chain
        .snapshots
        .iter()
        .rev()
        .map(|s| LogEntry {
            name: s.name.clone(),
            created: s.index.created_ns as f64 / 1e9,
            size: s.size,
            entries: s.index.entries.len(),
            whiteouts: s.index.entries.iter().filter(|e| e.kind == Kind::Whiteout).count(),
            frames: s.index.frames.len(),
            parent: s.index.parent.as_ref().map(|p| p.name.clone()),
        })
        .collect())
}

/// One change of a diff against its parent, as printed by `diff`.
#[derive(Debug, Serialize)]
pub struct Change {
    /// `A` added, `M` modified (content or metadata), `D` deleted.
    pub op: char,
    /// Path in the tree.
    pub path: String,
    /// Entry type (of the new entry; of the deleted one for `D`).
    pub kind: &'static str,
}

/// What diff snapshot `name` changes relative to its parent's view. Only
/// indexes are read. Directories a diff carries only as the parents of
/// changed entries are not listed.
pub fn diff(rt: &Handle, store: &Store, name: &str) -> Result<Vec<Change>> {
    let mut chain = rt.block_on(Chain::open(store, name))?;
    let top = chain
        .snapshots
        .pop()
        .ok_or_else(|| Error::not_found(format!("snapshot {name}")))?;
    if chain.snapshots.is_empty() {
        return Err(Error::Usage(format!(
            "{name} is a full snapshot: it has no parent to compare with"
        )));
    }
    let lower = chain.tree()?;
    let mut out = Vec::new();
    for e in top.index.entries.iter().filter(|e| !e.path.is_empty()) {
        let before = lower
            .resolve(&e.path)
            .and_then(|ino| lower.node(ino))
            .map(|n| lower.entry(n));
        let (op, kind) = match (e.kind, before) {
            (Kind::Whiteout, Some(b)) => ('D', b.kind),
            (Kind::Whiteout, None) => continue,
            (_, None) => ('A', e.kind),
            (_, Some(b)) => {
                let same = crate::build::walk::same_meta(e, b) && e.digest == b.digest && !e.is_opaque();
                if same {
                    continue;
                }
                ('M', e.kind)
            }
        };
        let kind = if kind == Kind::Hardlink { Kind::File } else { kind };
        out.push(Change {
            op,
            path: path::display(&e.path),
            kind: kind.name(),
        });
    }
    Ok(out)
}
