//! `lazysnap extract NAME DEST`: a full, atomic, parallel restore.
//!
//! Frames are fetched and decompressed in parallel and arrive in order; files
//! are written from them in tar-stream order into a temporary directory next
//! to DEST, which is renamed into place only when everything (data, modes,
//! owners, xattrs, times) is done. DEST must not exist; on any error the
//! temporary directory is removed and DEST is untouched.
//!
//! Safety rests on [`crate::format::Index::validate`]: every path is relative
//! without `..`, and every entry's parent is a directory of the index, so no
//! write can go through a symlink. Files are created with `O_EXCL|O_NOFOLLOW`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;

use crate::error::{Error, IoContext, Result};
use crate::fetch::fetcher::{BlockingReader, FetchConfig, Fetcher};
use crate::fetch::stream::{stream_frames, FrameData};
use crate::format::{path, Entry, Index, Kind};
use crate::layer::Tree;
use crate::snapshot::Chain;
use crate::store::Store;
use crate::{progress, sys};

/// What a restore's temporary directory holds after `.DEST`.
const TEMP_MARK: &str = ".lazysnap-";

/// Frames runs fetched at once.
const PARALLEL: usize = 4;

/// Restore snapshot `name` into the new directory `dest`.
pub fn extract(rt: &Handle, store: &Store, name: &str, dest: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Exists {
            what: dest.display().to_string(),
        });
    }
    // The first run of a full read may start while the index is on its way.
    let chain = rt.block_on(Chain::open_to_read(store, name, crate::fetch::stream::EARLY_HEAD))?;
    let tree = chain.tree()?;
    tracing::debug!(
        "extracting {name} ({} layers, {} names) into {}",
        chain.snapshots.len(),
        tree.len(),
        dest.display()
    );
    if !sys::is_root() {
        if let Some((_, e, _)) = tree
            .names()
            .find(|(_, e, _)| matches!(e.kind, Kind::Char | Kind::Block))
        {
            return Err(Error::refused(
                path::display(&e.path),
                "device nodes are extracted only by root",
            ));
        }
    }
    into_new_dir(rt, dest, |ex| {
        let snap = chain.top();
        let index = snap.index.clone();
        let pb = progress::bytes(Some(index.tar_size), "extract");
        let done = if chain.snapshots.len() == 1 {
            // A full snapshot: stream every frame in order, in parallel.
            let rx = stream_frames(
                snap.object.clone(),
                Arc::new(index.frames.clone()),
                PARALLEL,
                snap.name.clone(),
            );
            let mut frames = Frames {
                rx: crate::fetch::stream::StreamReader::new(rx).with_progress(pb.clone()),
                buf: VecDeque::new(),
            };
            ex.run(&index, &mut frames)
        } else {
            Fetcher::new(chain.layers(), FetchConfig::default()).and_then(|f| ex.run_view(rt, &tree, &f, &pb))
        };
        pb.finish_and_clear();
        done
    })
}

/// Stream the plain tar archive (.tar, .tar.gz, .tar.zst) at `url` into
/// the new directory `dest`, with no local copy of the archive. Every entry
/// is checked as `import` checks it (relative paths without `..`, nothing
/// beneath a symlink or a file, hardlinks to files already extracted,
/// device nodes only as root); missing parent directories are created.
/// `stall`: how long the stream may stay silent.
pub fn extract_archive(rt: &Handle, url: &str, dest: &Path, stall: std::time::Duration) -> Result<()> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Exists {
            what: dest.display().to_string(),
        });
    }
    let (input, what) = crate::build::import::open_archive(rt, url, stall, "extract")?;
    into_new_dir(rt, dest, |ex| ex.run_archive(input, &what))
}

/// Run `fill` on an extractor writing into a private temporary directory
/// beside `dest` (which must not exist), then rename it to `dest`. On any
/// error the temporary directory is removed and `dest` is untouched.
fn into_new_dir(rt: &Handle, dest: &Path, fill: impl FnOnce(&Extractor) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a valid destination", dest.display())))?;
    // Restores a dead process left behind are unlocked: remove them.
    crate::tmp::sweep(&parent, |n| n.starts_with('.') && n.contains(TEMP_MARK));
    let mut attempt = 0u32;
    let (tmp, _held) = loop {
        let tmp = parent.join(format!(
            ".{}{TEMP_MARK}{}-{attempt}",
            base.to_string_lossy(),
            std::process::id()
        ));
        match crate::tmp::Temp::create_dir(&tmp) {
            Ok(held) => break (tmp, held),
            // Swept by a concurrent restore before we locked it: another name.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && attempt < 5 => attempt += 1,
            Err(e) => return Err(Error::io_path(&tmp, e)),
        }
    };
    let _guard = rt.enter();
    let ex = Extractor::new(tmp.clone())?;
    let res = fill(&ex).and_then(|()| {
        sys::rename_noreplace(&tmp, dest).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) || e.raw_os_error() == Some(libc::ENOTEMPTY) {
                Error::Exists {
                    what: dest.display().to_string(),
                }
            } else {
                Error::io_path(dest, e)
            }
        })
    });
    if res.is_err() {
        remove_tree(&tmp);
    }
    res
}

/// Remove a partially extracted tree, making read-only dirs writable first.
fn remove_tree(p: &Path) {
    crate::tmp::remove(p);
}

/// Decompressed frames arriving in order, kept until consumed.
struct Frames {
    rx: crate::fetch::stream::StreamReader,
    buf: VecDeque<FrameData>,
}

impl Frames {
    /// Feed tar-stream bytes `[off, off+len)` to `sink` as zero-copy slices,
    /// in order, receiving frames as needed and dropping consumed ones.
    fn take(&mut self, off: u64, len: u64, mut sink: impl FnMut(Bytes) -> Result<()>) -> Result<()> {
        let end = off + len;
        while self.buf.front().is_some_and(|f| f.u_off + f.data.len() as u64 <= off) {
            self.buf.pop_front();
        }
        let mut pos = off;
        let mut i = 0;
        while pos < end {
            if i == self.buf.len() {
                match self.rx.next_frame()? {
                    Some(f) => self.buf.push_back(f),
                    None => return Err(Error::Internal("frame stream ended early".into())),
                }
                continue;
            }
            let f = &self.buf[i];
            let f_end = f.u_off + f.data.len() as u64;
            if f_end > pos {
                let s = (pos - f.u_off) as usize;
                let e = (end.min(f_end) - f.u_off) as usize;
                sink(f.data.slice(s..e))?;
                pos = end.min(f_end);
            }
            i += 1;
        }
        Ok(())
    }
}

/// A file whose content is in memory, waiting for a writer thread.
struct FileJob {
    entry: usize,
    data: Vec<Bytes>,
}

/// Files a writer thread is handed at once (one wake-up per batch, not
/// per file), and the bytes of data that closes a batch early.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 4 << 20;
/// Batches queued for each writer thread.
const QUEUED_BATCHES: usize = 4;

/// Jobs for one writer thread, sent in batches.
struct Batcher {
    tx: std::sync::mpsc::SyncSender<Vec<FileJob>>,
    jobs: Vec<FileJob>,
    bytes: u64,
}

impl Batcher {
    fn new(tx: std::sync::mpsc::SyncSender<Vec<FileJob>>) -> Batcher {
        Batcher {
            tx,
            jobs: Vec::new(),
            bytes: 0,
        }
    }

    /// Queue `job` (`bytes` of data); false if the writer has stopped.
    fn push(&mut self, job: FileJob, bytes: u64) -> bool {
        self.jobs.push(job);
        self.bytes += bytes;
        if self.jobs.len() < BATCH_FILES && self.bytes < BATCH_BYTES {
            return true;
        }
        self.flush()
    }

    /// Send what is queued; false if the writer has stopped.
    fn flush(&mut self) -> bool {
        self.bytes = 0;
        let jobs = std::mem::take(&mut self.jobs);
        jobs.is_empty() || self.tx.send(jobs).is_ok()
    }
}

/// The writer (of `n`) for a file at `path`: all files of a directory go
/// to one writer, so writers do not contend for a directory's lock.
fn writer_of(path: &[u8], n: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let dir = &path[..path.iter().rposition(|&c| c == b'/').unwrap_or(0)];
    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(dir);
    (h % n.max(1) as u64) as usize
}

/// Files up to this size are handed to writer threads whole; larger ones are
/// streamed by the main thread so memory stays bounded.
const POOLED_FILE_MAX: u64 = 4 << 20;
/// Most writer threads: file creation is kernel-bound, so overlap it.
const WRITERS: usize = 4;

/// Writer threads for this machine: one core is left to the thread that
/// feeds them and the decoders. (On 2 cores a second writer was measured
/// slower, even with each directory's files kept to one writer.)
fn writers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).clamp(1, WRITERS))
}

struct Extractor {
    tmp: PathBuf,
    root: bool,
    /// The owner a new file in the tree gets: the temporary directory's
    /// (its gid is inherited below it if it is setgid, else it is ours).
    owner: (u32, u32),
    /// The process umask, which the mode a file is created with passes
    /// through.
    umask: u32,
}

impl Extractor {
    fn new(tmp: PathBuf) -> Result<Extractor> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&tmp).ctx(|| tmp.display().to_string())?;
        Ok(Extractor {
            tmp,
            root: sys::is_root(),
            owner: (m.uid(), m.gid()),
            umask: sys::umask(),
        })
    }

    fn target(&self, e: &Entry) -> PathBuf {
        if e.path.is_empty() {
            self.tmp.clone()
        } else {
            self.tmp.join(std::ffi::OsStr::from_bytes(&e.path))
        }
    }

    fn run(&self, index: &Index, frames: &mut Frames) -> Result<()> {
        // 1. Directories, parents first (index order), private until the end.
        self.make_dirs(index.entries.iter())?;
        // 2. File data, in tar-stream order; small files are written by a
        //    pool of threads, large ones streamed here.
        let mut files: Vec<usize> = (0..index.entries.len())
            .filter(|&i| index.entries[i].kind == Kind::File)
            .collect();
        files.sort_by_key(|&i| index.entries[i].offset);
        let failed: parking_lot::Mutex<Option<Error>> = parking_lot::Mutex::new(None);
        std::thread::scope(|scope| -> Result<()> {
            let mut queues = Vec::new();
            for _ in 0..writers() {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<FileJob>>(QUEUED_BATCHES);
                let failed = &failed;
                scope.spawn(move || {
                    for job in rx.into_iter().flatten() {
                        if failed.lock().is_some() {
                            continue;
                        }
                        if let Err(e) = self.write_file(&index.entries[job.entry], &job.data) {
                            failed.lock().get_or_insert(e);
                        }
                    }
                });
                queues.push(Batcher::new(tx));
            }
            for &i in &files {
                let e = &index.entries[i];
                if let Some(err) = failed.lock().take() {
                    return Err(err);
                }
                if e.size <= POOLED_FILE_MAX {
                    let mut data = Vec::new();
                    frames.take(e.offset, e.size, |b| {
                        data.push(b);
                        Ok(())
                    })?;
                    let n = queues.len();
                    if !queues[writer_of(&e.path, n)].push(FileJob { entry: i, data }, e.size) {
                        break;
                    }
                } else {
                    let p = self.target(e);
                    let mut f = self.create_file(e, &p)?;
                    frames.take(e.offset, e.size, |b| f.write_all(&b).ctx(|| p.display().to_string()))?;
                    self.finish_file(e, &p, &f)?;
                }
            }
            for q in &mut queues {
                q.flush();
            }
            Ok(())
        })?;
        if let Some(err) = failed.into_inner() {
            return Err(err);
        }
        // 3 and 4.
        let names: Vec<(&Entry, Option<&[u8]>)> = index
            .entries
            .iter()
            .map(|e| (e, (e.kind == Kind::Hardlink).then_some(e.link.as_slice())))
            .collect();
        self.finish_tree(&names)
    }

    /// Create the directories among `entries` (given parents first), still
    /// private: their modes and times are set last.
    fn make_dirs<'e>(&self, entries: impl Iterator<Item = &'e Entry>) -> Result<()> {
        for e in entries.filter(|e| e.kind == Kind::Dir && !e.path.is_empty()) {
            let p = self.target(e);
            std::fs::create_dir(&p).ctx(|| p.display().to_string())?;
        }
        Ok(())
    }

    /// Everything but file data, once the files exist: symlinks, hardlinks
    /// (names with the path of the name whose inode they share), fifos, devices,
    /// then directory metadata deepest first, so creating children cannot
    /// disturb a parent's mtime and read-only dirs are already filled.
    fn finish_tree(&self, names: &[(&Entry, Option<&[u8]>)]) -> Result<()> {
        for &(e, same_as) in names {
            let p = self.target(e);
            if let (Some(first), true) = (same_as, e.kind.has_data()) {
                let t = self.tmp.join(std::ffi::OsStr::from_bytes(first));
                std::fs::hard_link(&t, &p).ctx(|| p.display().to_string())?;
                continue;
            }
            match e.kind {
                Kind::Symlink => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&e.link), &p)
                        .ctx(|| p.display().to_string())?;
                    self.finish_meta(e, &p, false)?;
                }
                Kind::Fifo => {
                    sys::mknod(&p, libc::S_IFIFO, e.mode, 0, 0).ctx(|| p.display().to_string())?;
                    self.finish_meta(e, &p, true)?;
                }
                Kind::Char | Kind::Block => {
                    let t = if e.kind == Kind::Char {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFBLK
                    };
                    sys::mknod(&p, t, e.mode, e.dev_major, e.dev_minor).ctx(|| p.display().to_string())?;
                    self.finish_meta(e, &p, true)?;
                }
                Kind::File | Kind::Hardlink | Kind::Dir | Kind::Whiteout => {}
            }
        }
        for &(e, _) in names.iter().rev().filter(|(e, _)| e.kind == Kind::Dir) {
            let p = self.target(e);
            self.finish_meta(e, &p, true)?;
        }
        Ok(())
    }

    /// Restore a chain's merged view: directories, then every file's data
    /// read through `fetcher` from the layer that holds it, then the rest.
    fn run_view(&self, rt: &Handle, tree: &Tree, fetcher: &Arc<Fetcher>, pb: &indicatif::ProgressBar) -> Result<()> {
        let names: Vec<(u32, &Entry, Option<&[u8]>)> = tree.names().collect();
        self.make_dirs(names.iter().map(|&(_, e, _)| e))?;
        for &(layer, e, same_as) in &names {
            if !e.kind.has_data() || same_as.is_some() {
                continue;
            }
            let p = self.target(e);
            let mut f = self.create_file(e, &p)?;
            let mut r = BlockingReader::new(rt, fetcher, layer, e.offset..e.offset + e.size);
            std::io::copy(&mut r, &mut f).map_err(|err| Error::io(p.display().to_string(), err))?;
            pb.inc(e.size);
            self.finish_file(e, &p, &f)?;
        }
        let rest: Vec<(&Entry, Option<&[u8]>)> = names.iter().map(|&(_, e, same_as)| (e, same_as)).collect();
        self.finish_tree(&rest)
    }

    /// Write the entries of a plain tar stream as they arrive (see
    /// [`extract_archive`]); symlinks, hardlinks, fifos and directory
    /// metadata come last, as for a snapshot.
    fn run_archive(&self, input: Box<dyn std::io::Read>, what: &str) -> Result<()> {
        use crate::build::import;
        use crate::format::tarread::TarReader;
        let mut ar = TarReader::new(input, what.to_string());
        // Every name written, by path, and its entry (the last one wins).
        let mut seen: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let refuse = |p: &[u8], why: &str| Error::refused(format!("{what}: entry {}", path::display(p)), why);
        while let Some(t) = ar.next_entry().map_err(import::not_a_tar)? {
            let e = import::entry_from_tar(&t).map_err(|err| import::in_archive(what, err))?;
            if matches!(e.kind, Kind::Char | Kind::Block) && !self.root {
                return Err(refuse(&e.path, "device nodes are extracted only by root"));
            }
            // Parents: directories written before, or created now; never
            // anything else (nothing is ever written through a symlink).
            let mut at = 0;
            while let Some(i) = e.path[at..].iter().position(|&b| b == b'/') {
                let parent = e.path[..at + i].to_vec();
                at += i + 1;
                match seen.get(&parent) {
                    Some(&j) if entries[j].kind == Kind::Dir => {}
                    Some(_) => return Err(refuse(&e.path, "beneath an entry that is not a directory")),
                    None => {
                        let mut d = Entry::new(parent.clone(), Kind::Dir);
                        d.mode = 0o755;
                        d.mtime = now;
                        self.make_dirs(std::iter::once(&d))?;
                        seen.insert(parent, entries.len());
                        entries.push(d);
                    }
                }
            }
            if e.kind == Kind::Hardlink {
                match seen.get(&e.link) {
                    Some(&j) if entries[j].kind == Kind::File => {}
                    _ => {
                        return Err(refuse(
                            &e.path,
                            "hardlink to a name that is not a file extracted before it",
                        ))
                    }
                }
            }
            let slot = match seen.get(&e.path) {
                Some(&j) if entries[j].kind != e.kind => {
                    return Err(refuse(&e.path, "appears twice, as different types"));
                }
                Some(&j) => {
                    if e.kind == Kind::File {
                        let p = self.target(&entries[j]);
                        std::fs::remove_file(&p).ctx(|| p.display().to_string())?;
                    }
                    Some(j)
                }
                None => None,
            };
            match e.kind {
                Kind::Dir if slot.is_none() => self.make_dirs(std::iter::once(&e))?,
                Kind::File => {
                    let p = self.target(&e);
                    let mut f = self.create_file(&e, &p)?;
                    std::io::copy(&mut ar.data(), &mut f).map_err(|err| Error::io(p.display().to_string(), err))?;
                    self.finish_file(&e, &p, &f)?;
                }
                _ => {}
            }
            match slot {
                Some(j) => entries[j] = e,
                None => {
                    seen.insert(e.path.clone(), entries.len());
                    entries.push(e);
                }
            }
        }
        let names: Vec<(&Entry, Option<&[u8]>)> = entries
            .iter()
            .filter(|e| e.kind != Kind::File)
            .map(|e| (e, (e.kind == Kind::Hardlink).then_some(e.link.as_slice())))
            .collect();
        self.finish_tree(&names)
    }

    /// Create file `e` at `p`, with its permission bits where the umask
    /// lets them through: while it is written, it is never more open than
    /// it will be in DEST (and the tree is still under its temporary name).
    fn create_file(&self, e: &Entry, p: &Path) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(e.mode & 0o777)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .ctx(|| p.display().to_string())
    }

    fn write_file(&self, e: &Entry, data: &[Bytes]) -> Result<()> {
        let p = self.target(e);
        let mut f = self.create_file(e, &p)?;
        for b in data {
            f.write_all(b).ctx(|| p.display().to_string())?;
        }
        self.finish_file(e, &p, &f)
    }

    /// Owner, mode, xattrs and times of a file made by [`Self::create_file`].
    /// Most files need neither chown nor chmod (a restore of tens of
    /// thousands of files is bound by such calls): the owner is set when it
    /// is not the one a new file gets, the mode when the umask took bits
    /// from it or it has setuid, setgid or sticky bits (set after the
    /// chown, which clears them).
    fn finish_file(&self, e: &Entry, p: &Path, f: &File) -> Result<()> {
        let ctx = || p.display().to_string();
        if self.root && (e.uid, e.gid) != self.owner {
            std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid)).ctx(ctx)?;
        }
        if e.mode & 0o7000 != 0 || e.mode & 0o777 & self.umask != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(e.mode)).ctx(ctx)?;
        }
        self.set_xattrs(e, p)?;
        sys::set_times_fd(f, e.mtime, e.mtime_nsec).ctx(ctx)
    }

    fn finish_meta(&self, e: &Entry, p: &Path, chmod: bool) -> Result<()> {
        let ctx = || p.display().to_string();
        if self.root {
            sys::lchown(p, e.uid, e.gid).ctx(ctx)?;
        }
        if chmod {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(e.mode)).ctx(ctx)?;
        }
        if e.kind != Kind::Symlink {
            self.set_xattrs(e, p)?;
        }
        sys::set_times(p, e.mtime, e.mtime_nsec).ctx(ctx)
    }

    fn set_xattrs(&self, e: &Entry, p: &Path) -> Result<()> {
        for (k, v) in &e.xattrs {
            if !(k.starts_with(b"user.") || self.root) {
                continue;
            }
            sys::set_xattr(p, k, v).ctx(|| format!("{}: xattr {}", p.display(), String::from_utf8_lossy(k)))?;
        }
        Ok(())
    }
}
