//! A fault-injecting store for tests: wraps any store and makes chosen reads
//! fail, stall, return corrupted bytes or come back short.
//!
//! Faults are described by object byte ranges, so a test can aim at one frame
//! ("every read touching bytes X..Y fails") and check that everything else
//! still works.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{ObjectBucket, ObjectId, ObjectReader, ObjectSource, ObjectStore, Priority, Upload};
use crate::error::{Error, Result, StoreErrorKind};

/// What to do to reads.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Reads overlapping any of these object ranges fail.
    pub fail: Vec<Range<u64>>,
    /// Reads overlapping any of these ranges stall for `delay` first.
    pub slow: Vec<Range<u64>>,
    /// How long a slow read stalls.
    pub delay: Duration,
    /// Bytes at these object offsets come back flipped.
    pub corrupt: Vec<u64>,
    /// Reads overlapping these ranges come back one byte short.
    pub truncate: Vec<Range<u64>>,
}

/// See the module docs.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Shared>,
}

/// The faults and counters, shared with every handle the store opened.
struct Shared {
    faults: Mutex<Faults>,
    injected: AtomicU64,
    /// Reads under way, and the most there have been at once.
    reading: AtomicU64,
    peak: AtomicU64,
}

impl FaultyStore {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> FaultyStore {
        FaultyStore {
            inner,
            state: Arc::new(Shared {
                faults: Mutex::new(faults),
                injected: AtomicU64::new(0),
                reading: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            }),
        }
    }

    /// Replace the faults.
    pub fn set(&self, faults: Faults) {
        *self.state.faults.lock() = faults;
    }

    /// Reads that had a fault applied.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// The most ranged reads (after `open`) that were under way at once.
    pub fn peak_reads(&self) -> u64 {
        self.state.peak.load(Ordering::Relaxed)
    }
}

impl Shared {
    async fn apply(&self, key: &str, range: Range<u64>, data: Bytes) -> Result<Bytes> {
        let f = self.faults.lock().clone();
        let hits = |rs: &[Range<u64>]| rs.iter().any(|r| r.start < range.end && range.start < r.end);
        if hits(&f.slow) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(f.delay).await;
        }
        if hits(&f.fail) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::store(StoreErrorKind::Transient, key, "injected failure"));
        }
        let mut out = data.to_vec();
        for &at in &f.corrupt {
            if range.contains(&at) {
                self.injected.fetch_add(1, Ordering::Relaxed);
                out[(at - range.start) as usize] ^= 0xff;
            }
        }
        if hits(&f.truncate) && !out.is_empty() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            out.pop();
        }
        Ok(Bytes::from(out))
    }
}

/// A handle whose reads get the store's faults.
struct FaultyReader {
    key: String,
    inner: Arc<dyn ObjectReader>,
    state: Arc<Shared>,
}

#[async_trait]
impl ObjectReader for FaultyReader {
    fn id(&self) -> &ObjectId {
        self.inner.id()
    }

    async fn get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes> {
        let now = self.state.reading.fetch_add(1, Ordering::Relaxed) + 1;
        self.state.peak.fetch_max(now, Ordering::Relaxed);
        let r = match self.inner.get_range(range.clone(), prio).await {
            Ok(data) => self.state.apply(&self.key, range, data).await,
            Err(e) => Err(e),
        };
        self.state.reading.fetch_sub(1, Ordering::Relaxed);
        r
    }
}

#[async_trait]
impl ObjectSource for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let (reader, data) = self.inner.open(key, tail).await?;
        let size = reader.id().size;
        let start = size - data.len() as u64;
        let data = self.state.apply(key, start..size, data).await?;
        let faulty = FaultyReader {
            key: key.to_string(),
            inner: reader,
            state: self.state.clone(),
        };
        Ok((Arc::new(faulty), data))
    }
}

#[async_trait]
impl ObjectBucket for FaultyStore {
    async fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key).await
    }

    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        self.inner.create_upload(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}
