//! Object stores: where snapshot objects live.
//!
//! [`ObjectStore`] is the small async interface every backend implements:
//! ranged reads, suffix reads, size, atomic uploads, list, delete. [`Store`]
//! wraps a backend with what every caller needs regardless of backend: name
//! validation, the `NAME -> NAME.tar.zst` key mapping and byte/request
//! counters. Remote backends (S3, presigned HTTPS) plug in behind the same trait.

pub mod faulty;
pub mod local;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result, StoreErrorKind};

/// Suffix appended to a snapshot name to form its object key.
pub const SNAPSHOT_SUFFIX: &str = ".tar.zst";

/// A backend that holds objects by key.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A printable description of the store (never includes secrets).
    fn describe(&self) -> String;
    /// Bytes `range` of object `key`; exactly that many bytes or an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// The last `len` bytes of `key` (fewer if the object is shorter) and the
    /// object's total size.
    async fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64)>;
    /// Size of object `key`.
    async fn size(&self, key: &str) -> Result<u64>;
    /// Start an upload to `key`; nothing is visible under `key` until commit.
    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>>;
    /// Keys under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Remove `key`.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// An upload in progress.
#[async_trait]
pub trait Upload: Send {
    /// Append bytes.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Make the object visible. With `overwrite == false`, fails with
    /// [`Error::Exists`] (and publishes nothing) when the key already exists.
    async fn commit(self: Box<Self>, overwrite: bool) -> Result<()>;
    /// Throw the upload away.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Bytes and requests read from a store.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Bytes received by reads.
    pub bytes_read: AtomicU64,
    /// Read requests issued (ranged, suffix, size).
    pub requests: AtomicU64,
}

impl StoreStats {
    /// `{"bytes_fetched":N,"requests":M}`.
    pub fn json(&self) -> String {
        format!(
            "{{\"bytes_fetched\":{},\"requests\":{}}}",
            self.bytes_read.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed)
        )
    }
}

/// How reads are retried: every attempt has a deadline, failures back off.
/// Uploads (create, write, commit, abort) and deletes get the same deadline
/// per call but are never retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per read (1 = no retry).
    pub attempts: u32,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Pause before the first retry; doubles after each.
    pub backoff: Duration,
}

/// Attempts per read under [`RetryPolicy::with_timeout`].
pub const READ_ATTEMPTS: u32 = 3;

impl RetryPolicy {
    /// The policy of the CLI's `--read-timeout SECS` (mounts and every other
    /// command alike): each store call may take `timeout`, a read is tried
    /// [`READ_ATTEMPTS`] times, so one read gives up after at most
    /// `3 * timeout` plus 150 ms of backoff; a store that stops answering
    /// is an error, never a hang.
    pub fn with_timeout(timeout: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: READ_ATTEMPTS,
            timeout,
            ..RetryPolicy::default()
        }
    }
}

impl RetryPolicy {
    /// A policy whose [`READ_ATTEMPTS`] attempts (each with a third of the
    /// time, at least 0.5 s) and backoff add up to about `total`: what a
    /// command's `--read-timeout` means.
    pub fn within(total: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: READ_ATTEMPTS,
            timeout: (total / READ_ATTEMPTS).max(Duration::from_millis(500)),
            backoff: Duration::from_millis(50),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            timeout: Duration::from_secs(20),
            backoff: Duration::from_millis(50),
        }
    }
}

/// A backend plus counters and the retry policy; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
    policy: RetryPolicy,
}

impl Store {
    /// Wrap a backend.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Store {
        Store {
            inner,
            stats: Arc::new(StoreStats::default()),
            policy: RetryPolicy::default(),
        }
    }

    /// The same store with another retry policy (counters are shared).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Store {
        self.policy = policy;
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Run `fut` once under the policy's deadline.
    async fn deadline<T>(&self, what: &str, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.policy.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: what.to_string(),
                secs: self.policy.timeout.as_secs_f64(),
            }),
        }
    }

    /// Run `op` under the retry policy: a deadline per attempt, backoff
    /// between attempts. Whether to try again is decided here, once, from
    /// the kind of failure: timeouts, transient and throttled store errors
    /// and local I/O errors are retried (throttling with a longer pause);
    /// answers that cannot change (not found, denied, a replaced object, an
    /// invalid answer, a refusal) are not.
    async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut pause = self.policy.backoff;
        let mut attempt = 1;
        let t0 = std::time::Instant::now();
        loop {
            let err = match self.deadline(what, op()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let retry = match &err {
                Error::Store { kind, .. } => kind.retryable(),
                Error::Timeout { .. } | Error::Io { .. } => true,
                _ => false,
            };
            if !retry {
                return Err(err);
            }
            if attempt >= self.policy.attempts {
                return Err(match err {
                    Error::Timeout { .. } => Error::Timeout {
                        what: format!("{what} ({attempt} attempts)"),
                        secs: t0.elapsed().as_secs_f64(),
                    },
                    e => e,
                });
            }
            tracing::debug!("{what}: attempt {attempt} failed: {err}; retrying");
            let throttled = matches!(
                err,
                Error::Store {
                    kind: StoreErrorKind::Throttled,
                    ..
                }
            );
            tokio::time::sleep(if throttled { pause * 4 } else { pause }).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// Open an existing store for reading: `file:///DIR` or a plain path.
    /// A missing store is an error naming it (nothing is created).
    pub fn open(uri: &str) -> Result<Store> {
        Ok(Store::new(Arc::new(local::LocalStore::new(local_dir(uri)?, false)?)))
    }

    /// Open a store to write into, creating a local store's directory if
    /// it is missing.
    pub fn open_writable(uri: &str) -> Result<Store> {
        Ok(Store::new(Arc::new(local::LocalStore::new(local_dir(uri)?, true)?)))
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Description of the backend.
    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    fn count(&self, n: usize) {
        self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// See [`ObjectStore::get_range`]; retried, and a short answer is an error.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let what = format!("{key} bytes {}-{}", range.start, range.end);
        self.retry(&what, || async {
            let b = self.inner.get_range(key, range.clone()).await?;
            self.count(b.len());
            if b.len() as u64 != want {
                return Err(Error::store(
                    StoreErrorKind::Transient,
                    key,
                    format!("short read ({} of {want} bytes)", b.len()),
                ));
            }
            Ok(b)
        })
        .await
    }

    /// See [`ObjectStore::get_suffix`]; retried.
    pub async fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64)> {
        self.retry(key, || async {
            let r = self.inner.get_suffix(key, len).await?;
            self.count(r.0.len());
            Ok(r)
        })
        .await
    }

    /// See [`ObjectStore::size`]; retried.
    pub async fn size(&self, key: &str) -> Result<u64> {
        self.retry(key, || async {
            let r = self.inner.size(key).await;
            self.count(0);
            r
        })
        .await
    }

    /// See [`ObjectStore::create_upload`]; the upload's every call has the
    /// policy's deadline.
    pub async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let up = self.deadline(key, self.inner.create_upload(key)).await?;
        Ok(Box::new(TimedUpload {
            up,
            key: key.to_string(),
            timeout: self.policy.timeout,
        }))
    }

    /// Snapshot names in the store under `prefix` (a name prefix).
    pub async fn list_snapshots(&self, prefix: &str) -> Result<Vec<String>> {
        let what = format!("listing {}", self.describe());
        let mut names: Vec<String> = self
            .retry(&what, || self.inner.list(prefix))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_suffix(SNAPSHOT_SUFFIX).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// See [`ObjectStore::delete`]; under the policy's deadline.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.deadline(key, self.inner.delete(key)).await
    }
}

/// An upload whose every call has a deadline (no retries: a write that
/// timed out may have happened).
struct TimedUpload {
    up: Box<dyn Upload>,
    key: String,
    timeout: Duration,
}

impl TimedUpload {
    fn timed_out(key: &str, timeout: Duration) -> Error {
        Error::Timeout {
            what: format!("uploading {key}"),
            secs: timeout.as_secs_f64(),
        }
    }
}

#[async_trait]
impl Upload for TimedUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        tokio::time::timeout(self.timeout, self.up.write(data))
            .await
            .map_err(|_| Self::timed_out(&self.key, self.timeout))?
    }

    async fn commit(self: Box<Self>, overwrite: bool) -> Result<()> {
        let (key, timeout) = (self.key, self.timeout);
        tokio::time::timeout(timeout, self.up.commit(overwrite))
            .await
            .map_err(|_| Self::timed_out(&key, timeout))?
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let (key, timeout) = (self.key, self.timeout);
        tokio::time::timeout(timeout, self.up.abort())
            .await
            .map_err(|_| Self::timed_out(&key, timeout))?
    }
}

/// The directory of a local store URI: `file:///ABS`, `file://localhost/ABS`
/// or a plain path. A `file://` URI with any other host (or credentials)
/// is refused rather than read as a relative path.
fn local_dir(uri: &str) -> Result<PathBuf> {
    if uri.is_empty() {
        return Err(Error::Usage("empty store URI".into()));
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(Error::Usage(format!(
                "bad store URI {:?}: a file:// URI names an absolute path (file:///DIR); \
                 hosts and credentials are not supported",
                crate::error::shorten(uri.to_string())
            )));
        }
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::Unsupported {
            what: format!("store {scheme}://…"),
            why: "this build supports local stores (file:///DIR or a path)".into(),
        });
    }
    Ok(PathBuf::from(uri))
}

/// The absolute form of a store URI, as mount records keep it: a plain
/// path becomes `file:///ABS` (resolved against the current directory,
/// symlinks resolved where the directory exists), so it means the same
/// store from any working directory.
pub fn absolute_uri(uri: &str) -> Result<String> {
    let dir = local_dir(uri)?;
    let abs = std::path::absolute(&dir).map_err(|e| Error::io(format!("store {}", dir.display()), e))?;
    let abs = std::fs::canonicalize(&abs).unwrap_or(abs);
    Ok(format!("file://{}", abs.display()))
}

/// Check a snapshot name and return its object key.
///
/// Names are `/`-separated components of printable characters; no empty, `.`
/// or `..` components, no component starting with `.` (reserved for temporary
/// objects), no backslashes or control characters, at most 512 bytes.
pub fn snapshot_key(name: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "bad snapshot name {}: {why}",
            crate::error::shorten(format!("{name:?}"))
        ))
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 512 {
        return Err(bad("longer than 512 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("control characters and backslashes are not allowed"));
    }
    if name.starts_with('/') {
        return Err(bad("must be relative to the store"));
    }
    for c in name.split('/') {
        if c.is_empty() {
            return Err(bad("empty path component"));
        }
        if c == "." || c == ".." {
            return Err(bad("'.' and '..' are not allowed"));
        }
        if c.starts_with('.') {
            return Err(bad("components may not start with '.'"));
        }
    }
    Ok(format!("{name}{SNAPSHOT_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snapshot_key("org/repo/main").unwrap(), "org/repo/main.tar.zst");
        for bad in ["", "/abs", "a//b", "a/../b", "..", "a/.hidden", "a\nb", "a\\b", "x/"] {
            assert!(snapshot_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uris() {
        assert_eq!(local_dir("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(local_dir("file://localhost/a").unwrap(), PathBuf::from("/a"));
        assert_eq!(local_dir("rel/dir").unwrap(), PathBuf::from("rel/dir"));
        for bad in ["file://user:pw@host/x", "file://rel", "file://host/x", ""] {
            assert!(local_dir(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(local_dir("s3://b/p"), Err(Error::Unsupported { .. })));
        let cwd = std::fs::canonicalize(".").expect("cwd");
        let want = format!("file://{}", cwd.join("no-such-store").display());
        assert_eq!(absolute_uri("no-such-store").expect("path"), want);
        assert_eq!(absolute_uri("file:///abs/dir").expect("abs"), "file:///abs/dir");
    }
}
