//! `inspect`, `ls` and `cat`: read-only views that fetch as little as possible.

use std::io::Write;

use serde::Serialize;
use tokio::runtime::Handle;

use crate::error::{Error, IoContext, Result};
use crate::fetch::{self, coalesce, MAX_REQUEST};
use crate::format::{self, path, time, Entry, Kind};
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
    /// Creation time (RFC 3339, UTC).
    pub created: String,
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
        created: time::rfc3339_ns(i128::from(idx.created_ns)),
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
    /// Permission bits, octal (`"0644"`).
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (RFC 3339, UTC).
    pub mtime: String,
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
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: time::rfc3339(e.mtime, e.mtime_nsec),
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
        let target = match e.kind {
            Kind::Symlink => format!(" pointing to {}", String::from_utf8_lossy(&e.link)),
            _ => String::new(),
        };
        return Err(Error::refused(
            path::display(&p),
            format!("a {}{target}, not a regular file", e.kind.name()),
        ));
    }
    let s = &chain.snapshots[node.layer as usize];
    let frames = &s.index.frames;
    let range = e.offset..e.offset + e.size;
    let what = format!("snapshot {}", s.name);
    let mut hasher = blake3::Hasher::new();
    for run in coalesce(frames, fetch::frame_range(frames, range.clone()), MAX_REQUEST) {
        tracing::debug!("{}: frames {}..{} of {}", path::display(&p), run.start, run.end, s.name);
        let base = run.start;
        let datas = rt.block_on(fetch::fetch_run(&s.object, frames, run, &what))?;
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

/// One snapshot of a chain, as printed by `log` and `list`.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// Snapshot name.
    pub name: String,
    /// `full` or `diff`.
    pub kind: &'static str,
    /// Creation time (RFC 3339, UTC).
    pub created: String,
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

impl LogEntry {
    fn of(s: &Snapshot) -> LogEntry {
        LogEntry {
            name: s.name.clone(),
            kind: if s.index.parent.is_some() { "diff" } else { "full" },
            created: time::rfc3339_ns(i128::from(s.index.created_ns)),
            size: s.size,
            entries: s.index.entries.len(),
            whiteouts: s.index.entries.iter().filter(|e| e.kind == Kind::Whiteout).count(),
            frames: s.index.frames.len(),
            parent: s.index.parent.as_ref().map(|p| p.name.clone()),
        }
    }
}

/// The chain of `name`, newest first, as far as it can be followed; with
/// the reason it stops early (a parent missing, or not the snapshot its
/// child was made from).
pub fn log(rt: &Handle, store: &Store, name: &str) -> Result<(Vec<LogEntry>, Option<Error>)> {
    let mut out = Vec::new();
    let mut next = rt.block_on(Snapshot::open(store, name))?;
    loop {
        out.push(LogEntry::of(&next));
        let Some(parent) = next.index.parent.clone() else {
            return Ok((out, None));
        };
        if out.len() >= crate::snapshot::MAX_CHAIN {
            let e = Error::corrupt(format!("snapshot {name}"), "chain deeper than 4096 (a loop?)");
            return Ok((out, Some(e)));
        }
        let p = match rt.block_on(Snapshot::open(store, &parent.name)) {
            Ok(p) => p,
            Err(Error::NotFound { .. }) => {
                let e = Error::not_found(format!(
                    "parent {} of snapshot {} (the chain breaks there)",
                    parent.name, next.name
                ));
                return Ok((out, Some(e)));
            }
            Err(e) => return Ok((out, Some(e))),
        };
        if p.index_digest() != parent.index_digest {
            let e = Error::corrupt(
                format!("snapshot {}", next.name),
                format!(
                    "parent {} is not the snapshot it was made from (index digest differs)",
                    parent.name
                ),
            );
            return Ok((out, Some(e)));
        }
        next = p;
    }
}

/// One snapshot of a store, as printed by `list`: what `log` shows of it,
/// or why it cannot be read.
#[derive(Debug, Serialize)]
pub struct ListRow {
    /// The snapshot, when it opens.
    #[serde(flatten)]
    pub snapshot: Option<LogEntry>,
    /// Its name and why it does not open, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ListError>,
}

/// A snapshot `list` cannot open.
#[derive(Debug, Serialize)]
pub struct ListError {
    /// Snapshot name.
    pub name: String,
    /// The error.
    pub error: String,
}

/// The snapshots under `prefix` in `store`, by name (each opened: footer
/// and index, one or two reads).
pub fn list(rt: &Handle, store: &Store, prefix: &str) -> Result<Vec<ListRow>> {
    let names = rt.block_on(store.list_snapshots(prefix))?;
    Ok(names
        .into_iter()
        .map(|n| match rt.block_on(Snapshot::open(store, &n)) {
            Ok(s) => ListRow {
                snapshot: Some(LogEntry::of(&s)),
                error: None,
            },
            Err(e) => ListRow {
                snapshot: None,
                error: Some(ListError {
                    name: n,
                    error: e.to_string(),
                }),
            },
        })
        .collect())
}

/// One change between two views, as printed by `diff`.
#[derive(Debug, Serialize)]
pub struct Change {
    /// `A` added, `M` modified (content or metadata), `D` deleted.
    pub op: char,
    /// Path in the tree.
    pub path: String,
    /// Entry type (of the new entry; of the deleted one for `D`).
    pub kind: &'static str,
}

/// What changes from snapshot `from` to snapshot `to` (default: `to` is
/// `from`, compared with its parent). Only indexes are read. Everything
/// added is listed; a directory deleted is one change (its contents are not
/// listed); a type change is an `M` of the new entry; directories that are
/// only the parents of changed entries are not listed.
pub fn diff(rt: &Handle, store: &Store, from: &str, to: Option<&str>) -> Result<Vec<Change>> {
    let (a, b) = match to {
        Some(to) => {
            let a = rt.block_on(Chain::open(store, from))?.tree()?;
            let b = rt.block_on(Chain::open(store, to))?.tree()?;
            (a, b)
        }
        None => {
            let mut chain = rt.block_on(Chain::open(store, from))?;
            let b = chain.tree()?;
            chain.snapshots.pop();
            if chain.snapshots.is_empty() {
                return Err(Error::Usage(format!(
                    "{from} is a full snapshot: it has no parent to compare with (diff A B compares two snapshots)"
                )));
            }
            (chain.tree()?, b)
        }
    };
    Ok(changes(&a, &b))
}

/// The changes from view `a` to view `b`, in path order.
fn changes(a: &Tree, b: &Tree) -> Vec<Change> {
    let kind = |e: &Entry| if e.kind == Kind::Hardlink { Kind::File } else { e.kind };
    let same = |x: &Entry, y: &Entry| {
        kind(x) == kind(y)
            && (x.mode, x.uid, x.gid, x.mtime, x.mtime_nsec) == (y.mode, y.uid, y.gid, y.mtime, y.mtime_nsec)
            && (x.size, &x.xattrs, x.dev_major, x.dev_minor) == (y.size, &y.xattrs, y.dev_major, y.dev_minor)
            && (!x.kind.has_data() || x.digest == y.digest)
            && (x.kind != Kind::Symlink || x.link == y.link)
    };
    let change = |op: char, e: &Entry| Change {
        op,
        path: path::display(&e.path),
        kind: kind(e).name(),
    };
    let xs: Vec<&Entry> = a.names().map(|(_, e, _)| e).collect();
    let ys: Vec<&Entry> = b.names().map(|(_, e, _)| e).collect();
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    // Below a directory deleted or replaced as a whole: not listed.
    let mut skip_a: Option<&[u8]> = None;
    while i < xs.len() || j < ys.len() {
        let below = |e: Option<&&Entry>, skip: Option<&[u8]>| {
            e.is_some_and(|e| skip.is_some_and(|d| path::is_within(&e.path, d)))
        };
        if below(xs.get(i), skip_a) {
            i += 1;
            continue;
        }
        let ord = match (xs.get(i), ys.get(j)) {
            (Some(x), Some(y)) => path::cmp(&x.path, &y.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                out.push(change('D', xs[i]));
                skip_a = Some(&xs[i].path);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(change('A', ys[j]));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (xs[i], ys[j]);
                if kind(x) != kind(y) {
                    // A type change replaces the old entry's whole subtree.
                    out.push(change('M', y));
                    skip_a = Some(&x.path);
                } else if !same(x, y) && !x.path.is_empty() {
                    out.push(change('M', y));
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Delete snapshot `name` from `store`. A snapshot whose chain needs it (a
/// diff made on it) keeps it unless `force`: then those are left broken.
/// A refusal ends with `advice` (what the caller can do about it).
/// Returns the snapshots that depended on it.
pub fn rm(rt: &Handle, store: &Store, name: &str, force: bool, advice: &str) -> Result<Vec<String>> {
    rt.block_on(remove(store, name, force, advice))
}

/// [`rm`], in a runtime (the signer service deletes this way).
pub async fn remove(store: &Store, name: &str, force: bool, advice: &str) -> Result<Vec<String>> {
    let key = crate::store::snapshot_key(name)?;
    store.size(&key).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::not_found(format!("snapshot {name} in {}", store.describe())),
        e => e,
    })?;
    let mut children = Vec::new();
    for other in store.list_snapshots("").await? {
        if other == name {
            continue;
        }
        // An unreadable snapshot cannot need anything we can tell.
        if let Ok(s) = Snapshot::open(store, &other).await {
            if s.index.parent.as_ref().is_some_and(|p| p.name == name) {
                children.push(other);
            }
        }
    }
    if !children.is_empty() && !force {
        let shown: Vec<&str> = children.iter().take(5).map(String::as_str).collect();
        let more = children.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(Error::refused(
            format!("snapshot {name}"),
            format!(
                "the diff{} {}{more} {} made on it; {advice}",
                if children.len() == 1 { "" } else { "s" },
                shown.join(", "),
                if children.len() == 1 { "was" } else { "were" }
            ),
        ));
    }
    store.delete(&key).await?;
    Ok(children)
}
