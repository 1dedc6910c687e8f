//! Writing a snapshot: entries in, indexed multi-frame tar.zst out.
//!
//! The caller adds entries in tar order (with file data as a reader). The
//! writer lays out the tar stream, cuts it into frames of `frame_size` bytes,
//! compresses frames on every core, writes them in order to the sink, and ends
//! with the index frame and the footer. Memory stays bounded: at most a few
//! frames per worker are in flight.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use indicatif::ProgressBar;

use super::footer::{skippable_header, Footer, FOOTER_LEN, INDEX_MAGIC, SKIPPABLE_HEADER};
use super::index::{Entry, Frame, Index, Kind, Parent};
use super::{limits, path, tarhdr, Digest, BLOCK, FORMAT_VERSION};
use crate::error::{Error, IoContext, Result};

/// zstd level of the index frame.
const INDEX_LEVEL: i32 = 9;

/// How to write a snapshot.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Uncompressed bytes per data frame.
    pub frame_size: usize,
    /// zstd level of data frames.
    pub level: i32,
    /// Compression threads.
    pub threads: usize,
    /// Parent reference (diff snapshots).
    pub parent: Option<Parent>,
    /// Prefetch list to store in the index.
    pub prefetch: Vec<Vec<u8>>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            frame_size: super::DEFAULT_FRAME_SIZE,
            level: super::DEFAULT_LEVEL,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            parent: None,
            prefetch: Vec::new(),
        }
    }
}

/// What a finished write produced.
#[derive(Debug)]
pub struct Written {
    /// The index as stored.
    pub index: Index,
    /// Digest of the compressed index (what a child's parent reference names).
    pub index_digest: Digest,
    /// Size of the compressed index frame.
    pub index_len: u64,
    /// Total object size.
    pub size: u64,
}

type Job = (usize, Vec<u8>);
type Done = Result<(usize, Vec<u8>, u64, Digest)>;
type Collected<W> = Result<(Vec<Frame>, W)>;

/// Streaming snapshot writer; see the module docs.
pub struct SnapshotWriter<W: Write + Send + 'static> {
    opts: WriterOptions,
    buf: Vec<u8>,
    flushed: u64,
    entries: Vec<Entry>,
    /// Path -> position in `entries`.
    seen: HashMap<Vec<u8>, usize>,
    next_job: usize,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    collector: Option<JoinHandle<Collected<W>>>,
    progress: ProgressBar,
}

impl<W: Write + Send + 'static> SnapshotWriter<W> {
    /// Start writing into `sink`.
    pub fn new(sink: W, opts: WriterOptions, progress: ProgressBar) -> Result<Self> {
        // Frames end on tar block boundaries, so every header starts aligned.
        if opts.frame_size < BLOCK as usize
            || opts.frame_size as u64 > limits::MAX_FRAME
            || opts.frame_size % BLOCK as usize != 0
        {
            return Err(Error::Usage(
                "--frame-size must be a multiple of 512 bytes between 512 B and 64 MiB".into(),
            ));
        }
        let levels = zstd::compression_level_range();
        let (lo, hi) = (levels.start(), levels.end());
        if opts.level < *lo || opts.level > *hi {
            return Err(Error::Usage(format!("--level must be between {lo} and {hi}")));
        }
        let threads = opts.threads.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let job_rx = std::sync::Arc::new(parking_lot::Mutex::new(job_rx));
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 2);
        let mut workers = Vec::new();
        for _ in 0..threads {
            let rx = job_rx.clone();
            let tx = done_tx.clone();
            let level = opts.level;
            workers.push(std::thread::spawn(move || compress_worker(rx, tx, level)));
        }
        drop(done_tx);
        let collector = std::thread::spawn(move || collect(done_rx, sink));
        Ok(SnapshotWriter {
            buf: Vec::with_capacity(opts.frame_size * 2),
            opts,
            flushed: 0,
            entries: Vec::new(),
            seen: HashMap::new(),
            next_job: 0,
            jobs: Some(job_tx),
            workers,
            collector: Some(collector),
            progress,
        })
    }

    /// Add one entry. Files need `data`, which must yield exactly `e.size`
    /// bytes; `offset` and `digest` are filled in here. Hardlinks take their
    /// data fields from their (earlier) target. Missing parent directories are
    /// added first, as `tar -x` would create them.
    pub fn add(&mut self, mut e: Entry, data: Option<&mut dyn Read>) -> Result<()> {
        path::check(&e.path).map_err(|why| Error::refused(path::display(&e.path), why))?;
        if e.path.is_empty() && e.kind != Kind::Dir {
            return Err(Error::refused("/", "the root must be a directory"));
        }
        self.ensure_parents(&e)?;
        if e.kind == Kind::Hardlink {
            let t = self
                .seen
                .get(&e.link)
                .map(|&i| &self.entries[i])
                .filter(|t| t.kind == Kind::File)
                .ok_or_else(|| Error::refused(path::display(&e.path), "hardlink to a file not seen before it"))?;
            e.offset = t.offset;
            e.size = t.size;
            e.digest = t.digest;
        }
        let earlier = self.seen.get(&e.path).copied();
        if let Some(i) = earlier {
            // tar -x lets a later directory header update an earlier one;
            // anything else repeated would make the index ambiguous.
            if !(e.kind == Kind::Dir && self.entries[i].kind == Kind::Dir) {
                return Err(Error::refused(
                    path::display(&e.path),
                    "appears more than once in the archive",
                ));
            }
        }
        tarhdr::write_header(&e, &mut self.buf);
        if e.kind == Kind::File {
            e.offset = self.stream_len();
            let data = data.ok_or_else(|| Error::refused(path::display(&e.path), "file without data"))?;
            e.digest = self.copy_data(data, e.size, &e.path)?;
        }
        match earlier {
            Some(i) => self.entries[i] = e,
            None => {
                self.seen.insert(e.path.clone(), self.entries.len());
                self.entries.push(e);
            }
        }
        self.cut_frames()
    }

    /// Count `bytes` of input as done without writing them (a caller that
    /// found a file unchanged), for the progress bar.
    pub fn skipped(&self, bytes: u64) {
        self.progress.inc(bytes);
    }

    /// Length of the tar stream so far (sent frames plus the pending buffer).
    fn stream_len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn ensure_parents(&mut self, e: &Entry) -> Result<()> {
        if e.path.is_empty() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut p = path::parent(&e.path);
        loop {
            match self.seen.get(p) {
                Some(&i) if self.entries[i].kind == Kind::Dir => break,
                Some(&i) => {
                    let what = path::display(&self.entries[i].path);
                    let why = format!("beneath {what}, which is a {}", self.entries[i].kind.name());
                    return Err(Error::refused(path::display(&e.path), why));
                }
                None => missing.push(p.to_vec()),
            }
            if p.is_empty() {
                break;
            }
            p = path::parent(p);
        }
        for dir in missing.into_iter().rev() {
            let mut d = Entry::new(dir, Kind::Dir);
            d.mode = 0o755;
            d.uid = e.uid;
            d.gid = e.gid;
            d.mtime = e.mtime;
            self.add(d, None)?;
        }
        Ok(())
    }

    fn copy_data(&mut self, data: &mut dyn Read, size: u64, p: &[u8]) -> Result<Digest> {
        let mut hasher = blake3::Hasher::new();
        let mut left = size;
        let what = || path::display(p);
        while left > 0 {
            let room = (self.opts.frame_size * 2).saturating_sub(self.buf.len()).max(64 * 1024);
            let want = room.min(usize::try_from(left).unwrap_or(usize::MAX));
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let n = read_full(data, &mut self.buf[start..]).ctx(what)?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(Error::refused(what(), "file shrank while it was being read"));
            }
            hasher.update(&self.buf[start..]);
            left -= n as u64;
            self.progress.inc(n as u64);
            self.cut_frames()?;
        }
        let mut probe = [0u8; 1];
        if read_full(data, &mut probe).ctx(what)? != 0 {
            return Err(Error::refused(what(), "file grew while it was being read"));
        }
        let padded = super::pad_block(size) - size;
        self.buf.resize(self.buf.len() + padded as usize, 0);
        Ok(super::truncate(hasher.finalize()))
    }

    fn cut_frames(&mut self) -> Result<()> {
        let fs = self.opts.frame_size;
        while self.buf.len() >= fs {
            let rest = self.buf.split_off(fs);
            let frame = std::mem::replace(&mut self.buf, rest);
            self.send(frame)?;
            self.buf.reserve(fs);
        }
        Ok(())
    }

    fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        let seq = self.next_job;
        self.next_job += 1;
        self.flushed += frame.len() as u64;
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send((seq, frame)).is_ok());
        if sent {
            Ok(())
        } else {
            // A worker or the collector failed: report its error.
            Err(self
                .shutdown()
                .err()
                .unwrap_or_else(|| Error::Internal("writer stopped".into())))
        }
    }

    fn shutdown(&mut self) -> Collected<W> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.collector.take() {
            Some(c) => c
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("writer thread panicked".into()))),
            None => Err(Error::Internal("writer already finished".into())),
        }
    }

    /// Finish the tar stream, write the index and footer; returns the index.
    pub fn finish(mut self) -> Result<(Written, W)> {
        if self.entries.is_empty() {
            let mut root = Entry::new(Vec::new(), Kind::Dir);
            root.mode = 0o755;
            self.add(root, None)?;
        }
        self.buf.resize(self.buf.len() + 2 * BLOCK as usize, 0);
        self.cut_frames()?;
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(last)?;
        }
        let (frames, mut sink) = self.shutdown()?;
        let entries = sort_entries(std::mem::take(&mut self.entries));
        let created_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let index = Index {
            created_ns,
            tool: format!("lazysnap {}", env!("CARGO_PKG_VERSION")),
            frame_size: self.opts.frame_size as u64,
            level: self.opts.level,
            tar_size: self.stream_len(),
            entries,
            frames,
            parent: self.opts.parent.clone(),
            prefetch: std::mem::take(&mut self.opts.prefetch),
        };
        index.validate("new snapshot")?;
        let raw = index.encode();
        let packed = zstd::bulk::compress(&raw, INDEX_LEVEL).ctx(|| "compressing index".into())?;
        // Never write what a reader would refuse.
        let paths: u64 = index.entries.iter().map(|e| e.path.len() as u64).sum();
        if raw.len() as u64 > limits::max_index_raw(packed.len() as u64)
            || paths > limits::path_budget(raw.len() as u64)
        {
            return Err(Error::refused(
                "new snapshot",
                "its index is beyond the format's limits (docs/FORMAT.md, Limits): too many entries or too deep paths",
            ));
        }
        let index_digest = super::digest(&packed);
        let index_offset = index.data_size();
        let footer = Footer {
            version: FORMAT_VERSION,
            index_offset,
            index_len: (SKIPPABLE_HEADER + packed.len()) as u64,
            index_raw_len: raw.len() as u64,
            index_digest,
        };
        let w = || "writing snapshot".to_string();
        sink.write_all(&skippable_header(INDEX_MAGIC, packed.len())?).ctx(w)?;
        sink.write_all(&packed).ctx(w)?;
        sink.write_all(&footer.encode()).ctx(w)?;
        sink.flush().ctx(w)?;
        let written = Written {
            index,
            index_digest,
            index_len: footer.index_len,
            size: index_offset + footer.index_len + FOOTER_LEN as u64,
        };
        Ok((written, sink))
    }
}

impl<W: Write + Send + 'static> Drop for SnapshotWriter<W> {
    fn drop(&mut self) {
        if self.collector.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Sort entries into index order (repeated paths were merged by `add`).
fn sort_entries(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| path::cmp(&a.path, &b.path));
    entries
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn compress_worker(rx: std::sync::Arc<parking_lot::Mutex<Receiver<Job>>>, tx: SyncSender<Done>, level: i32) {
    let mut comp = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(Error::io("zstd compressor", e)));
            return;
        }
    };
    loop {
        let job = rx.lock().recv();
        let Ok((seq, data)) = job else { return };
        let out = comp
            .compress(&data)
            .map(|c| {
                let d = super::digest(&c);
                (seq, c, data.len() as u64, d)
            })
            .map_err(|e| Error::io(format!("compressing frame {seq}"), e));
        if tx.send(out).is_err() {
            return;
        }
    }
}

fn collect<W: Write>(rx: Receiver<Done>, mut sink: W) -> Collected<W> {
    let mut pending: BTreeMap<usize, (Vec<u8>, u64, Digest)> = BTreeMap::new();
    let mut frames: Vec<Frame> = Vec::new();
    let (mut c_off, mut u_off) = (0u64, 0u64);
    for done in rx {
        let (seq, c, u_len, d) = done?;
        pending.insert(seq, (c, u_len, d));
        while let Some((c, u_len, digest)) = pending.remove(&frames.len()) {
            sink.write_all(&c).ctx(|| "writing snapshot".into())?;
            let c_len = c.len() as u64;
            frames.push(Frame {
                c_off,
                c_len,
                u_off,
                u_len,
                digest,
            });
            c_off += c_len;
            u_off += u_len;
        }
    }
    if !pending.is_empty() {
        return Err(Error::Internal("writer lost a frame".into()));
    }
    Ok((frames, sink))
}
