//! The two frame caches: a byte-bounded memory LRU of frames and
//! a size-limited disk cache of compressed frames keyed by frame digest.
//!
//! The disk cache is content-addressed, so every mount of every snapshot that
//! shares a frame (re-mounts, chains, forks) shares its cached copy. Entries
//! are re-verified against their digest when read; a bad entry is deleted and
//! treated as a miss.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{IoContext, Result};
use crate::format::{self, Digest};

/// A memory LRU bounded by the total size of its values.
pub struct MemCache<K: Hash + Eq> {
    lru: LruCache<K, Bytes>,
    bytes: u64,
    cap: u64,
}

impl<K: Hash + Eq + Clone> MemCache<K> {
    /// An empty cache holding at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        MemCache {
            lru: LruCache::unbounded(),
            bytes: 0,
            cap,
        }
    }

    /// Look up and mark as recently used.
    pub fn get(&mut self, k: &K) -> Option<Bytes> {
        self.lru.get(k).cloned()
    }

    /// Is `k` cached (without touching its recency)?
    pub fn contains(&self, k: &K) -> bool {
        self.lru.contains(k)
    }

    /// Insert, evicting least recently used values beyond the budget;
    /// returns what was evicted or replaced.
    pub fn put(&mut self, k: K, v: Bytes) -> Vec<Bytes> {
        if v.len() as u64 > self.cap {
            return Vec::new();
        }
        let mut gone = Vec::new();
        self.bytes += v.len() as u64;
        if let Some(old) = self.lru.put(k, v) {
            self.bytes -= old.len() as u64;
            gone.push(old);
        }
        while self.bytes > self.cap {
            match self.lru.pop_lru() {
                Some((_, old)) => {
                    self.bytes -= old.len() as u64;
                    gone.push(old);
                }
                None => break,
            }
        }
        gone
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Compressed frames on disk, one file per frame digest, LRU-evicted.
pub struct DiskCache {
    dir: PathBuf,
    state: Mutex<MemIndex>,
}

struct MemIndex {
    lru: LruCache<Digest, u64>,
    bytes: u64,
    cap: u64,
}

impl DiskCache {
    /// Open (creating) a cache in `dir` holding at most `cap` bytes. Existing
    /// entries are adopted oldest-first, so eviction continues across mounts.
    pub fn open(dir: &Path, cap: u64) -> Result<DiskCache> {
        std::fs::create_dir_all(dir).ctx(|| format!("cache dir {}", dir.display()))?;
        let mut found = Vec::new();
        for ent in std::fs::read_dir(dir).ctx(|| dir.display().to_string())? {
            let Ok(ent) = ent else { continue };
            let name = ent.file_name().to_string_lossy().into_owned();
            let Ok(meta) = ent.metadata() else { continue };
            match parse_hex(&name) {
                Some(d) if meta.is_file() => {
                    found.push((meta.modified().ok(), d, meta.len()));
                }
                // Leftover temp files of a crashed writer.
                _ if name.starts_with(".tmp-") => {
                    let _ = std::fs::remove_file(ent.path());
                }
                _ => {}
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        let mut state = MemIndex {
            lru: LruCache::unbounded(),
            bytes: 0,
            cap,
        };
        for (_, d, len) in found {
            state.bytes += len;
            state.lru.put(d, len);
        }
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        };
        cache.evict();
        Ok(cache)
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(format::hex(d))
    }

    /// The compressed bytes of frame `d`, if cached and intact.
    pub fn get(&self, d: &Digest) -> Option<Vec<u8>> {
        self.state.lock().lru.get(d)?;
        match std::fs::read(self.path(d)) {
            Ok(data) if format::digest(&data) == *d => Some(data),
            _ => {
                self.remove(d);
                None
            }
        }
    }

    /// Store frame `d` (written to a temp name, then renamed).
    pub fn put(&self, d: &Digest, data: &[u8]) {
        if self.state.lock().lru.get(d).is_some() {
            return;
        }
        let tmp = self.dir.join(format!(".tmp-{}-{}", format::hex(d), std::process::id()));
        let ok = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(data))
            .and_then(|()| std::fs::rename(&tmp, self.path(d)));
        if let Err(e) = ok {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("disk cache {}: {e}", self.dir.display());
            return;
        }
        {
            let mut s = self.state.lock();
            s.bytes += data.len() as u64;
            s.lru.put(*d, data.len() as u64);
        }
        self.evict();
    }

    fn remove(&self, d: &Digest) {
        let mut s = self.state.lock();
        if let Some(len) = s.lru.pop(d) {
            s.bytes -= len;
        }
        let _ = std::fs::remove_file(self.path(d));
    }

    fn evict(&self) {
        let mut s = self.state.lock();
        while s.bytes > s.cap {
            let Some((d, len)) = s.lru.pop_lru() else { break };
            s.bytes -= len;
            let _ = std::fs::remove_file(self.path(&d));
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }
}

fn parse_hex(name: &str) -> Option<Digest> {
    if name.len() != 2 * format::DIGEST_LEN {
        return None;
    }
    let mut d = [0u8; format::DIGEST_LEN];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_evicts_lru() {
        let mut c = MemCache::new(10);
        c.put(1, Bytes::from(vec![0; 4]));
        c.put(2, Bytes::from(vec![0; 4]));
        assert!(c.get(&1).is_some());
        c.put(3, Bytes::from(vec![0; 4]));
        assert!(c.contains(&1) && c.contains(&3) && !c.contains(&2));
        assert_eq!(c.bytes(), 8);
        c.put(4, Bytes::from(vec![0; 11]));
        assert!(!c.contains(&4));
    }

    #[test]
    fn disk_cache_verifies_and_evicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = DiskCache::open(dir.path(), 10).expect("open");
        let (a, b) = (b"aaaaaa".to_vec(), b"bbbbbb".to_vec());
        let (da, db) = (format::digest(&a), format::digest(&b));
        c.put(&da, &a);
        assert_eq!(c.get(&da), Some(a.clone()));
        c.put(&db, &b);
        assert_eq!(c.get(&da), None, "evicted beyond 10 bytes");
        assert_eq!(c.get(&db), Some(b.clone()));
        // A damaged entry is dropped, not served.
        std::fs::write(dir.path().join(format::hex(&db)), b"bbbbbX").expect("write");
        assert_eq!(c.get(&db), None);
        // Re-opening adopts what is there.
        c.put(&da, &a);
        let c2 = DiskCache::open(dir.path(), 10).expect("reopen");
        assert_eq!(c2.get(&da), Some(a));
    }
}
