//! The frame fetcher behind a mount.
//!
//! A read asks for frames; each frame comes from the memory LRU, else the
//! disk cache, else the store. Missing frames are claimed in one step so that
//! N readers of a frame cause one fetch (single-flight); adjacent missing
//! frames are coalesced into ranged reads of up to [`super::MAX_REQUEST`];
//! several reads run at once. Work ahead of readers (readahead, the prefetch
//! list) uses the same machinery at lower priority: readahead may hold all
//! connections but one, speculative work only half, so foreground reads
//! always find one; it stops when cancelled.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{oneshot, Notify, Semaphore, SemaphorePermit};

use super::cache::{DiskCache, MemCache};
use super::{check_frame, coalesce, decode_checked, frame_range, Spares};
use crate::error::{Error, Result};
use crate::format::Frame;
use crate::store::{ObjectHandle, Priority};

/// A snapshot object whose frames the fetcher can read.
#[derive(Clone)]
pub struct Layer {
    /// The object, opened.
    pub object: ObjectHandle,
    /// Snapshot name (for messages).
    pub name: String,
    /// Its frame table.
    pub frames: Arc<Vec<Frame>>,
}

/// (layer number, frame number).
pub type FrameKey = (u32, u32);

type Shared = std::result::Result<Bytes, Arc<Error>>;

/// A reader waiting for bytes `want` of a frame being fetched. One that does
/// not need the frame's last byte is answered as soon as the decoder has
/// passed `want.end` (a copy); the rest get slices of the finished frame.
struct Waiter {
    want: Range<usize>,
    tx: oneshot::Sender<Shared>,
}

/// Tuning of a fetcher.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Memory budget for all frame buffers, in bytes.
    pub memory: u64,
    /// Disk cache directory and size limit.
    pub disk: Option<(PathBuf, u64)>,
    /// Largest coalesced read.
    pub max_request: u64,
    /// Reads in flight at once.
    pub parallel: usize,
    /// Largest readahead window, in bytes of tar stream.
    pub readahead_max: u64,
}

impl Default for FetchConfig {
    /// Sized for a remote store: a sequential reader keeps several large
    /// requests in flight, enough to cover a link's bandwidth-delay product
    /// (measured through lazysnap-shaper at 1 Gbit/s, a cold read of a
    /// 1 GiB file moves 99-100 % of a raw GET's throughput at 20 ms RTT and
    /// 98-99 % at 50 ms; with 4 connections and a 16 MiB window it was 82 %
    /// at 50 ms).
    fn default() -> Self {
        FetchConfig {
            memory: 256 << 20,
            disk: None,
            max_request: super::MAX_REQUEST,
            parallel: 6,
            readahead_max: 32 << 20,
        }
    }
}

/// Counters, as shown by `lazysnap stats`.
#[derive(Debug, Default, Serialize, Clone)]
pub struct FetchStats {
    /// Bytes read from the store (all layers' stores).
    pub bytes_fetched: u64,
    /// Store requests.
    pub requests: u64,
    /// Frames fetched from the store.
    pub frames_fetched: u64,
    /// Frame lookups served by the memory cache.
    pub memory_hits: u64,
    /// Frames served by the disk cache.
    pub disk_hits: u64,
    /// Failed frame fetches (each became EIO for the reads that needed it).
    pub errors: u64,
    /// Bytes held by the memory cache.
    pub memory_bytes: u64,
    /// Bytes held by the disk cache.
    pub disk_bytes: u64,
}

#[derive(Default)]
struct Counters {
    frames_fetched: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    errors: AtomicU64,
}

/// Frames held in memory. Most of the budget holds *compressed* frames
/// (checked against their digests on arrival), so it covers about four times
/// as much of the snapshot as decompressed frames would; a small LRU keeps the
/// frames being read decompressed. Buffers of frames leaving that LRU are
/// reused for the next decode, so steady-state decoding writes to memory that
/// is already mapped instead of faulting in fresh pages.
struct Memory {
    /// Decompressed frames being read.
    hot: MemCache<FrameKey>,
    /// Verified compressed frames.
    packed: MemCache<FrameKey>,
    /// Decode buffers to reuse.
    spare: Spares,
}

/// Decode buffers kept for reuse, in frames of the largest size.
const SPARE_BUFFERS: usize = 4;

/// The decoded set holds at least this many of the largest frames (readers
/// of big frames read them in many small FUSE requests).
const HOT_FRAMES: u64 = 8;

impl Memory {
    fn decoded(&mut self, k: FrameKey, data: Bytes) {
        for old in self.hot.put(k, data) {
            if let Ok(m) = old.try_into_mut() {
                self.spare.keep(m.into());
            }
        }
    }
}

/// See the module docs.
pub struct Fetcher {
    layers: Vec<Layer>,
    config: FetchConfig,
    mem: Mutex<Memory>,
    disk: Option<Arc<DiskCache>>,
    inflight: Mutex<HashMap<FrameKey, Vec<Waiter>>>,
    /// Connections: every store read holds one.
    slots: Semaphore,
    /// Held by reads no reader waits for yet: all connections but one.
    ahead_slots: Semaphore,
    /// Held by speculative reads as well: half of the connections.
    speculative_slots: Semaphore,
    /// Woken when a reader starts waiting on a frame that background work
    /// claimed, so that work stops queueing behind other background work.
    urgent: Notify,
    cancelled: AtomicBool,
    counters: Counters,
}

impl Fetcher {
    /// A fetcher over `layers`.
    pub fn new(layers: Vec<Layer>, config: FetchConfig) -> Result<Arc<Fetcher>> {
        let disk = match &config.disk {
            Some((dir, cap)) => Some(Arc::new(DiskCache::open(dir, *cap)?)),
            None => None,
        };
        // Reserve room for the reads in flight (compressed + decompressed)
        // and the decoded frames being read; the rest holds compressed frames.
        let inflight = config.parallel as u64 * config.max_request * 2;
        let largest = layers
            .iter()
            .flat_map(|l| l.frames.iter())
            .map(|f| f.u_len)
            .max()
            .unwrap_or(0);
        let hot = (config.memory / 32)
            .clamp(4 << 20, 16 << 20)
            .max(HOT_FRAMES * largest)
            .min(config.memory / 2)
            .max(largest);
        let packed = config.memory.saturating_sub(inflight + hot).max(config.memory / 4);
        Ok(Arc::new(Fetcher {
            layers,
            mem: Mutex::new(Memory {
                hot: MemCache::new(hot),
                packed: MemCache::new(packed),
                spare: Spares::new(SPARE_BUFFERS * largest as usize),
            }),
            disk,
            inflight: Mutex::new(HashMap::new()),
            slots: Semaphore::new(config.parallel.max(1)),
            ahead_slots: Semaphore::new(config.parallel.saturating_sub(1).max(1)),
            speculative_slots: Semaphore::new((config.parallel / 2).max(1)),
            urgent: Notify::new(),
            cancelled: AtomicBool::new(false),
            counters: Counters::default(),
            config,
        }))
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Stop background work (prefetch, readahead) as soon as possible.
    pub fn cancel_background(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Current counters.
    pub fn stats(&self) -> FetchStats {
        let memory_bytes = {
            let mem = self.mem.lock();
            mem.hot.bytes() + mem.packed.bytes()
        };
        let mut s = FetchStats {
            frames_fetched: self.counters.frames_fetched.load(Ordering::Relaxed),
            memory_hits: self.counters.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.counters.disk_hits.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            memory_bytes,
            disk_bytes: self.disk.as_ref().map_or(0, |d| d.bytes()),
            ..FetchStats::default()
        };
        let mut seen: Vec<*const crate::store::StoreStats> = Vec::new();
        for l in &self.layers {
            let st = l.object.stats();
            let p = Arc::as_ptr(st);
            if !seen.contains(&p) {
                seen.push(p);
                s.bytes_fetched += st.bytes_read.load(Ordering::Relaxed);
                s.requests += st.requests.load(Ordering::Relaxed);
            }
        }
        s
    }

    /// Bytes `range` of layer `layer`'s tar stream.
    pub async fn read(self: &Arc<Self>, layer: u32, range: Range<u64>) -> Result<Bytes> {
        let frames = self.layer(layer)?.frames.clone();
        let wants: Vec<(usize, Range<usize>)> = frame_range(&frames, range.clone())
            .map(|i| {
                let f = &frames[i];
                let s = range.start.max(f.u_off) - f.u_off;
                let e = range.end.min(f.u_off + f.u_len) - f.u_off;
                (i, s as usize..e as usize)
            })
            .collect();
        let mut parts = self.parts(layer, wants).await?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for p in &parts {
            out.extend_from_slice(p);
        }
        Ok(out.freeze())
    }

    fn layer(&self, layer: u32) -> Result<&Layer> {
        self.layers
            .get(layer as usize)
            .ok_or_else(|| Error::Internal(format!("no layer {layer}")))
    }

    /// Bring frames `range` of `layer` into memory ahead of their readers,
    /// compressed (they are decoded when read), at priority `prio`
    /// (readahead, prefetch or hydration; see [`Fetcher::ahead_permits`]).
    pub fn fetch_background(self: &Arc<Self>, layer: u32, range: Range<usize>, prio: Priority) {
        if range.is_empty() || self.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let claimed: Vec<usize> = {
            let mem = self.mem.lock();
            let mut inflight = self.inflight.lock();
            range
                .filter(|&i| {
                    let k = (layer, i as u32);
                    let free = !mem.hot.contains(&k) && !mem.packed.contains(&k) && !inflight.contains_key(&k);
                    if free {
                        inflight.insert(k, Vec::new());
                    }
                    free
                })
                .collect()
        };
        if !claimed.is_empty() {
            let me = self.clone();
            tokio::spawn(async move { me.fetch_claimed(layer, claimed, prio).await });
        }
    }

    /// Bytes `want` of each frame `i` of `layer`, for each `(i, want)` (frame
    /// numbers ascending and in range, `want` within the frame).
    async fn parts(self: &Arc<Self>, layer: u32, wants: Vec<(usize, Range<usize>)>) -> Result<Vec<Bytes>> {
        let l = self.layer(layer)?;
        if let Some((i, _)) = wants.iter().find(|(i, _)| *i >= l.frames.len()) {
            return Err(Error::Internal(format!("{}: frame {i} out of range", l.name)));
        }
        let mut out: Vec<Option<Bytes>> = vec![None; wants.len()];
        let mut waits = Vec::new();
        let mut claimed = Vec::new();
        let mut unpack = Vec::new();
        let mut wake_background = false;
        {
            let mut mem = self.mem.lock();
            let mut inflight = self.inflight.lock();
            for (pos, (i, want)) in wants.into_iter().enumerate() {
                let k = (layer, i as u32);
                if let Some(b) = mem.hot.get(&k) {
                    self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                    out[pos] = Some(b.slice(want));
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                let w = Waiter { want, tx };
                match inflight.get_mut(&k) {
                    Some(ws) => {
                        if ws.is_empty() {
                            wake_background = true;
                        }
                        ws.push(w);
                    }
                    None => {
                        inflight.insert(k, vec![w]);
                        match mem.packed.get(&k) {
                            Some(c) => {
                                self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                                unpack.push((i, c));
                            }
                            None => claimed.push(i),
                        }
                    }
                }
                waits.push((pos, rx));
            }
        }
        if wake_background {
            self.urgent.notify_waiters();
        }
        if !unpack.is_empty() {
            let me = self.clone();
            let task = tokio::task::spawn_blocking(move || {
                let _guard = PanicGuard::new(&me, layer, unpack.iter().map(|(i, _)| *i).collect());
                for (i, c) in unpack {
                    if let Err(e) = me.decode(layer, i, &c) {
                        if let Ok(l) = me.layer(layer) {
                            me.fail(layer, l, &(i..i + 1), &e);
                        }
                        me.complete(layer, i, Err(Arc::new(e)));
                    }
                }
            });
            drop(task);
        }
        if !claimed.is_empty() {
            let me = self.clone();
            tokio::spawn(async move { me.fetch_claimed(layer, claimed, Priority::Foreground).await });
        }
        for (pos, rx) in waits {
            let r = rx.await.map_err(|_| Error::Internal("fetch task vanished".into()))?;
            out[pos] = Some(r.map_err(|e| Error::clone(&e))?);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Fetch frames this caller claimed: disk cache first, then coalesced
    /// store reads. Every claimed frame is completed, with data or an error.
    async fn fetch_claimed(self: Arc<Self>, layer: u32, claimed: Vec<usize>, prio: Priority) {
        let _guard = PanicGuard::new(&self, layer, claimed.clone());
        let l = match self.layer(layer) {
            Ok(l) => l.clone(),
            Err(e) => return self.complete_all(layer, &claimed, Arc::new(e)),
        };
        let mut remote = Vec::new();
        for &i in &claimed {
            if self.disk.is_some() {
                let me = self.clone();
                let hit = tokio::task::spawn_blocking(move || me.disk_get(layer, i)).await;
                if let Ok(true) = hit {
                    continue;
                }
            }
            remote.push(i);
        }
        // Runs of adjacent frames, each at most max_request bytes.
        let mut runs = Vec::new();
        let mut start = 0;
        for k in 1..=remote.len() {
            if k == remote.len() || remote[k] != remote[k - 1] + 1 {
                if start < k {
                    for r in coalesce(&l.frames, remote[start]..remote[k - 1] + 1, self.config.max_request) {
                        runs.push(r);
                    }
                }
                start = k;
            }
        }
        // One run (the common case for a small read): no extra task hop.
        if runs.len() == 1 {
            let run = runs.remove(0);
            return self.fetch_run(layer, &l, run, prio).await;
        }
        let mut tasks = Vec::new();
        for run in runs {
            let me = self.clone();
            let l = l.clone();
            tasks.push(tokio::spawn(async move { me.fetch_run(layer, &l, run, prio).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn fetch_run(self: &Arc<Self>, layer: u32, l: &Layer, run: Range<usize>, prio: Priority) {
        let _guard = PanicGuard::new(self, layer, run.clone().collect());
        // Work no reader waits for yet may use only some of the connections,
        // so a foreground read always finds one free. Once a reader waits on
        // one of its frames, the run stops queueing and goes as a foreground
        // read. A queued run keeps its place in the queue meanwhile.
        let mut prio = prio;
        let mut ahead_permits = None;
        if prio != Priority::Foreground {
            let acquire = self.ahead_permits(prio);
            tokio::pin!(acquire);
            loop {
                let urgent = self.urgent.notified();
                if self.awaited(layer, &run) {
                    prio = Priority::Foreground;
                    break;
                }
                tokio::select! {
                    p = &mut acquire => {
                        ahead_permits = Some(p);
                        break;
                    }
                    () = urgent => {}
                }
            }
            if self.cancelled.load(Ordering::Relaxed) && !self.awaited(layer, &run) {
                let idx: Vec<usize> = run.collect();
                return self.complete_all(layer, &idx, Arc::new(Error::Internal("cancelled".into())));
            }
        }
        let permit = self.slots.acquire().await;
        let raw = super::fetch_raw(&l.object, &l.frames, run.clone(), prio).await;
        drop(permit);
        drop(ahead_permits);
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                self.fail(layer, l, &run, &e);
                let idx: Vec<usize> = run.collect();
                return self.complete_all(layer, &idx, Arc::new(e));
            }
        };
        // Check and decode on a blocking thread, answering readers as the
        // bytes they wait for come out of the decoder.
        let me = self.clone();
        let (l2, run2) = (l.clone(), run.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _guard = PanicGuard::new(&me, layer, run2.clone().collect());
            let c0 = l2.frames[run2.start].c_off;
            let single = run2.len() == 1;
            let mut good = Vec::new();
            for i in run2 {
                let f = l2.frames[i];
                let s = (f.c_off - c0) as usize;
                let bytes = match raw.get(s..s + f.c_len as usize) {
                    // A frame cached on its own must not pin the whole run.
                    Some(b) if single => raw.slice_ref(b),
                    Some(b) => Bytes::copy_from_slice(b),
                    None => Bytes::new(),
                };
                match me.arrived(layer, i, bytes.clone(), false) {
                    Ok(()) => good.push((f.digest, bytes)),
                    Err(e) => {
                        me.fail(layer, &l2, &(i..i + 1), &e);
                        me.complete(layer, i, Err(Arc::new(e)));
                    }
                }
            }
            good
        });
        // A panicked task failed its frames through its guard.
        let Ok(good) = task.await else { return };
        if let Some(disk) = &self.disk {
            // Keep the verified compressed frames, keyed by digest.
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || {
                for (digest, bytes) in good {
                    disk.put(&digest, &bytes);
                }
            });
        }
    }

    /// The permits a run of priority `prio` that no reader waits for needs
    /// before it may take a connection: readahead may hold all connections
    /// but one (a streaming reader is moments from each request, and on a
    /// long link several requests must be in flight to keep it busy: at
    /// 20 ms RTT / 1 Gbit/s, two 4 MiB requests in flight moved about 90 %
    /// of the link, three all of it); speculative work (the prefetch list,
    /// hydration) may hold only half of them.
    async fn ahead_permits(&self, prio: Priority) -> (Option<SemaphorePermit<'_>>, Option<SemaphorePermit<'_>>) {
        let speculative = match prio {
            Priority::Foreground | Priority::Readahead => None,
            Priority::Prefetch | Priority::Background => self.speculative_slots.acquire().await.ok(),
        };
        (speculative, self.ahead_slots.acquire().await.ok())
    }

    /// Count and log a failed fetch or decode that a reader waits for (a
    /// background fetch nobody waits for fails quietly; a read retries it).
    fn fail(&self, layer: u32, l: &Layer, run: &Range<usize>, e: &Error) {
        if self.awaited(layer, run) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{}: frames {}..{}: {e}", l.name, run.start, run.end);
        }
    }

    /// Does a reader wait on any frame of `run`?
    fn awaited(&self, layer: u32, run: &Range<usize>) -> bool {
        let inflight = self.inflight.lock();
        run.clone()
            .any(|i| inflight.get(&(layer, i as u32)).is_some_and(|w| !w.is_empty()))
    }

    /// Serve frame `i` from the disk cache; false if it is not there.
    fn disk_get(&self, layer: u32, i: usize) -> bool {
        let Some(disk) = self.disk.as_ref() else {
            return false;
        };
        let Some(f) = self.layer(layer).ok().and_then(|l| l.frames.get(i)) else {
            return false;
        };
        let Some(raw) = disk.get(&f.digest) else {
            return false;
        };
        // The disk cache checked the digest.
        self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
        self.arrived(layer, i, Bytes::from(raw), true).is_ok()
    }

    /// Frame `i` arrived compressed: check it and keep it; decode it if
    /// anyone waits for it. On error the frame is left in flight for the
    /// caller to fail or fetch elsewhere.
    fn arrived(&self, layer: u32, i: usize, compressed: Bytes, checked: bool) -> Result<()> {
        let l = self.layer(layer)?;
        let f = l
            .frames
            .get(i)
            .ok_or_else(|| Error::Internal(format!("no frame {i}")))?;
        if !checked {
            check_frame(i, f, &compressed, &l.name)?;
            // Counted before any reader is answered, so a reader that sees
            // its bytes also sees the fetch in the stats.
            self.counters.frames_fetched.fetch_add(1, Ordering::Relaxed);
        }
        let k = (layer, i as u32);
        self.mem.lock().packed.put(k, compressed.clone());
        {
            // Fetched ahead and nobody is waiting: done until it is read.
            let mut inflight = self.inflight.lock();
            if inflight.get(&k).is_some_and(Vec::is_empty) {
                inflight.remove(&k);
                return Ok(());
            }
        }
        self.decode(layer, i, &compressed)
    }

    /// Decompress checked frame `i`, answering waiters whose bytes are ready
    /// while it decodes, then complete it. On error the frame is left in
    /// flight.
    fn decode(&self, layer: u32, i: usize, compressed: &[u8]) -> Result<()> {
        let l = self.layer(layer)?;
        let f = l
            .frames
            .get(i)
            .ok_or_else(|| Error::Internal(format!("no frame {i}")))?;
        let k = (layer, i as u32);
        let full = f.u_len as usize;
        let buf = self.mem.lock().spare.take(full);
        let data = decode_checked(i, f, compressed, &l.name, buf, |prefix| {
            let ready: Vec<Waiter> = {
                let mut inflight = self.inflight.lock();
                let Some(ws) = inflight.get_mut(&k) else { return };
                let (ready, wait) = std::mem::take(ws)
                    .into_iter()
                    .partition(|w| w.want.end <= prefix.len() && w.want.end < full);
                *ws = wait;
                ready
            };
            for w in ready {
                let _ = w.tx.send(Ok(Bytes::copy_from_slice(&prefix[w.want])));
            }
        })?;
        self.complete(layer, i, Ok(Bytes::from(data)));
        Ok(())
    }

    fn complete(&self, layer: u32, i: usize, r: Shared) {
        let k = (layer, i as u32);
        if let Ok(b) = &r {
            self.mem.lock().decoded(k, b.clone());
        }
        let waiters = self.inflight.lock().remove(&k).unwrap_or_default();
        for w in waiters {
            let part = match &r {
                Ok(b) => b
                    .get(w.want.clone())
                    .map(|_| b.slice(w.want))
                    .ok_or_else(|| Arc::new(Error::Internal(format!("frame {i}: wanted bytes beyond its end")))),
                Err(e) => Err(e.clone()),
            };
            let _ = w.tx.send(part);
        }
    }

    fn complete_all(&self, layer: u32, idx: &[usize], e: Arc<Error>) {
        for &i in idx {
            self.complete(layer, i, Err(e.clone()));
        }
    }
}

/// Fails the frames a task claimed if the task panics, so their readers get
/// an error at once instead of waiting for their deadline (and later readers
/// of those frames do not join a claim nobody will complete).
struct PanicGuard<'a> {
    fetcher: &'a Fetcher,
    layer: u32,
    frames: Vec<usize>,
}

impl<'a> PanicGuard<'a> {
    fn new(fetcher: &'a Fetcher, layer: u32, frames: Vec<usize>) -> Self {
        PanicGuard { fetcher, layer, frames }
    }
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let e = Arc::new(Error::Internal("fetch task failed (see the log)".into()));
            self.fetcher.complete_all(self.layer, &self.frames, e);
        }
    }
}

/// Bytes asked of the fetcher at a time by a [`BlockingReader`].
const READER_CHUNK: u64 = 4 << 20;

/// A byte range of one layer's tar stream as a blocking `Read`, served by a
/// fetcher (for copying files out of a chain). Use outside the runtime.
pub struct BlockingReader {
    rt: tokio::runtime::Handle,
    fetcher: Arc<Fetcher>,
    layer: u32,
    pos: u64,
    end: u64,
}

impl BlockingReader {
    /// Read `range` of `layer` through `fetcher`.
    pub fn new(rt: &tokio::runtime::Handle, fetcher: &Arc<Fetcher>, layer: u32, range: Range<u64>) -> Self {
        BlockingReader {
            rt: rt.clone(),
            fetcher: fetcher.clone(),
            layer,
            pos: range.start,
            end: range.end,
        }
    }
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let n = (self.end - self.pos).min(READER_CHUNK).min(buf.len() as u64);
        let data = self
            .rt
            .block_on(self.fetcher.read(self.layer, self.pos..self.pos + n))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        buf[..data.len()].copy_from_slice(&data);
        self.pos += data.len() as u64;
        Ok(data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::writer::SnapshotWriter;
    use crate::format::{Entry, Kind};
    use crate::snapshot::Chain;
    use crate::store::Store;

    /// A snapshot of one `len`-byte file in 64 KiB frames, and its bytes
    /// (`random`: incompressible, else about 3:1).
    fn snapshot(rt: &tokio::runtime::Runtime, dir: &std::path::Path, len: u32, random: bool) -> (Store, Vec<u8>) {
        let modulus = if random { 256 } else { 7 };
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 32) % modulus) as u8
            })
            .collect();
        let store = crate::build::publish::publish_test(rt, dir, |w: &mut SnapshotWriter<_>| {
            w.add(Entry::new(Vec::new(), Kind::Dir), None)?;
            let mut f = Entry::new(b"f".to_vec(), Kind::File);
            f.size = data.len() as u64;
            w.add(f, Some(&mut &data[..]))
        });
        (store, data)
    }

    /// The local store at `dir`, every read delayed by `ms`.
    fn slow_store(dir: &std::path::Path, ms: u64) -> (Store, Arc<crate::store::faulty::FaultyStore>) {
        let local = Arc::new(crate::store::local::LocalStore::new(dir, true).expect("store"));
        let faults = crate::store::faulty::Faults {
            slow: vec![0..u64::MAX / 2, u64::MAX / 2..u64::MAX],
            delay: std::time::Duration::from_millis(ms),
            ..Default::default()
        };
        let faulty = Arc::new(crate::store::faulty::FaultyStore::new(local, faults));
        (Store::new(faulty.clone()), faulty)
    }

    #[test]
    fn frames_beyond_the_decoded_set_stay_in_memory_compressed() {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let dir = tempfile::tempdir().expect("tmp");
        let (store, data) = snapshot(&rt, dir.path(), 12 << 20, false);
        let chain = rt.block_on(Chain::open(&store, "t")).expect("open");
        let config = FetchConfig {
            memory: 16 << 20,
            max_request: 256 << 10,
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(chain.layers(), config).expect("fetcher");
        let e = &chain.top().index.entries[chain.top().index.find(b"f").expect("f")];
        let read_all = |f: &Arc<Fetcher>| {
            let mut out = Vec::new();
            let mut off = 0;
            while off < e.size {
                let end = (off + (128 << 10)).min(e.size);
                let b = rt.block_on(f.read(0, e.offset + off..e.offset + end)).expect("read");
                out.extend_from_slice(&b);
                off = end;
            }
            out
        };
        assert!(read_all(&fetcher) == data);
        let first = fetcher.stats();
        {
            let mem = fetcher.mem.lock();
            // 12 MiB decoded do not fit the 4 MiB decoded set; the compressed
            // frames all fit, and decode buffers were recycled.
            assert!(mem.hot.bytes() <= 4 << 20, "{}", mem.hot.bytes());
            assert!(mem.packed.bytes() < 12 << 20);
            assert_eq!(
                mem.packed.bytes(),
                chain.top().index.frames.iter().map(|f| f.c_len).sum::<u64>()
            );
            assert!(!mem.spare.is_empty());
        }
        // A second pass is served from memory: nothing is fetched again.
        assert!(read_all(&fetcher) == data);
        let second = fetcher.stats();
        assert_eq!(second.requests, first.requests, "{second:?}");
        assert_eq!(second.frames_fetched, first.frames_fetched);
        assert!(second.memory_hits > first.memory_hits);
        assert!(second.memory_bytes <= 16 << 20);
    }

    /// A 2 MiB file of random bytes over a store whose every read takes
    /// 300 ms, and a fetcher reading it one frame per request over four
    /// connections: the fetcher, the store, the file's entry and its bytes.
    fn slow_fetcher(dir: &std::path::Path) -> (Arc<Fetcher>, Arc<crate::store::faulty::FaultyStore>, Entry, Vec<u8>) {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let (_, data) = snapshot(&rt, dir, 2 << 20, true);
        let (store, faulty) = slow_store(dir, 300);
        let chain = rt.block_on(Chain::open(&store, "t")).expect("open");
        assert!(
            chain.top().index.frames.len() >= 30,
            "{} frames",
            chain.top().index.frames.len()
        );
        let config = FetchConfig {
            max_request: 64 << 10,
            parallel: 4,
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(chain.layers(), config).expect("fetcher");
        let e = chain.top().index.entries[chain.top().index.find(b"f").expect("f")].clone();
        (fetcher, faulty, e, data)
    }

    #[test]
    fn a_reader_does_not_queue_behind_background_work() {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let dir = tempfile::tempdir().expect("tmp");
        let (fetcher, _, e, data) = slow_fetcher(dir.path());
        let n = fetcher.layers()[0].frames.len();
        {
            let _g = rt.enter();
            fetcher.fetch_background(0, 0..n, Priority::Prefetch);
        }
        let t0 = std::time::Instant::now();
        // A frame in the middle: about n / 4 store reads (two at a time)
        // queue ahead of it.
        let mid = e.size / 2;
        let got = rt
            .block_on(fetcher.read(0, e.offset + mid..e.offset + mid + 100))
            .expect("read");
        let took = t0.elapsed();
        assert_eq!(&got[..], &data[mid as usize..mid as usize + 100]);
        assert!(
            took < std::time::Duration::from_millis(1200),
            "waited {took:?} behind prefetch"
        );
    }

    #[test]
    fn readahead_leaves_one_connection_to_readers_and_prefetch_leaves_half() {
        for (prio, most) in [(Priority::Readahead, 3), (Priority::Prefetch, 2)] {
            let rt = tokio::runtime::Runtime::new().expect("rt");
            let dir = tempfile::tempdir().expect("tmp");
            let (fetcher, faulty, e, data) = slow_fetcher(dir.path());
            let n = fetcher.layers()[0].frames.len();
            {
                let _g = rt.enter();
                fetcher.fetch_background(0, 0..n - 1, prio);
            }
            // Two rounds of reads: the queue is long enough to fill every
            // connection the priority may hold, and no more.
            std::thread::sleep(std::time::Duration::from_millis(750));
            assert_eq!(faulty.peak_reads(), most, "{prio:?}");
            // The last frame, which nothing fetches yet, is read at once.
            let t0 = std::time::Instant::now();
            let got = rt
                .block_on(fetcher.read(0, e.offset + e.size - 100..e.offset + e.size))
                .expect("read");
            let took = t0.elapsed();
            assert_eq!(&got[..], &data[data.len() - 100..]);
            assert!(
                took < std::time::Duration::from_millis(550),
                "{prio:?}: the read waited {took:?} for a connection"
            );
        }
    }

    #[test]
    fn readers_of_one_frame_each_get_their_bytes() {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let dir = tempfile::tempdir().expect("tmp");
        let (_, data) = snapshot(&rt, dir.path(), 1 << 20, false);
        // A slow store, so every reader joins the same fetch of the frame.
        let (store, _) = slow_store(dir.path(), 100);
        let chain = rt.block_on(Chain::open(&store, "t")).expect("open");
        let fetcher = Fetcher::new(chain.layers(), FetchConfig::default()).expect("fetcher");
        let e = &chain.top().index.entries[chain.top().index.find(b"f").expect("f")];
        let frames = &chain.top().index.frames;
        // Frame 3 of the file: reads of its first byte, its start, its middle,
        // up to its very end (a slice of the finished frame), the whole
        // frame, and across into the next frame.
        let f = frames[frame_range(frames, e.offset + (3 << 16)..e.offset + (3 << 16) + 1).start];
        let end = f.u_off + f.u_len;
        let ranges = [
            f.u_off..f.u_off + 1,
            f.u_off..f.u_off + 4096,
            f.u_off + 30_000..f.u_off + 40_000,
            end - 100..end,
            f.u_off..end,
            end - 10..end + 10,
        ];
        let got = rt.block_on(async {
            let reads = ranges.iter().map(|r| {
                let f = fetcher.clone();
                let r = r.clone();
                tokio::spawn(async move { f.read(0, r).await })
            });
            let mut out = Vec::new();
            for h in reads.collect::<Vec<_>>() {
                out.push(h.await.expect("task").expect("read"));
            }
            out
        });
        for (r, b) in ranges.iter().zip(&got) {
            let s = (r.start - e.offset) as usize;
            assert!(b[..] == data[s..s + (r.end - r.start) as usize], "{r:?}");
        }
        // One fetch of the frame, shared by every reader.
        assert_eq!(fetcher.stats().frames_fetched, 2, "{:?}", fetcher.stats());
    }
}
