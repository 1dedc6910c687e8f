//! Object stores: where snapshot objects live.
//!
//! Reading and writing are separate capabilities. An [`ObjectSource`]
//! opens objects by key: one request returns an [`ObjectReader`] (a handle
//! on that one object, holding its identity: size and, remotely, ETag) and
//! the object's tail, where a snapshot keeps its footer and index. Every
//! later ranged read goes through the handle, carrying the reader's
//! [`Priority`], so a remote backend can check each answer against the
//! object it opened and schedule by urgency. An [`ObjectBucket`] lists,
//! sizes, uploads and deletes; a credential-free source (a presigned URL)
//! has none of that to stub out.
//!
//! [`Store`] wraps a source (and a bucket, where there is one) with what
//! every caller needs whatever the backend: name validation, the
//! `NAME -> NAME.tar.zst` key mapping, byte/request counters, and the one
//! retry layer, which decides from an error's kind alone.

pub mod faulty;
pub mod http;
pub mod local;
pub mod s3;
pub mod signed;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result, StoreErrorKind};

/// How a mount spec is named where a store URI goes (mount records):
/// `spec:///ABS/FILE.json`, a read-only store of the spec's layers.
pub const SPEC_SCHEME: &str = "spec://";

/// Suffix appended to a snapshot name to form its object key.
pub const SNAPSHOT_SUFFIX: &str = ".tar.zst";

/// Who is waiting for a read; the store layer may schedule by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A reader is blocked on it.
    Foreground,
    /// Readahead: a reader streaming a file reaches it within moments.
    Readahead,
    /// The prefetch list: a reader is predicted to want it soon.
    Prefetch,
    /// Hydration: wanted eventually.
    Background,
}

/// What one version of an object is: a read against a handle must be
/// answered from exactly this version, never a mix of two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// Size in bytes.
    pub size: u64,
    /// Entity tag, where the backend has one (S3, HTTP).
    pub etag: Option<String>,
}

/// A handle on one object, opened once (per snapshot layer).
#[async_trait]
pub trait ObjectReader: Send + Sync + 'static {
    /// The object's identity, as opened.
    fn id(&self) -> &ObjectId;
    /// Bytes `range` of the object; exactly that many or an error.
    async fn get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes>;
    /// Bytes `range` of the object handed to `sink` in order, piece by
    /// piece as they arrive; an error may come after some pieces. (A
    /// backend that cannot stream hands them over in one piece.)
    async fn stream_range(&self, range: Range<u64>, prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        sink(self.get_range(range, prio).await?)
    }
    /// When the access this handle reads with stops working (a presigned
    /// URL's expiry), if it ever does.
    fn expires(&self) -> Option<std::time::SystemTime> {
        None
    }
    /// Get fresh access (a new presigned URL for the same object). `true`:
    /// renewed, try again; `false`: this handle cannot renew.
    async fn renew(&self) -> Result<bool> {
        Ok(false)
    }
}

/// A reader whose first `len` bytes were asked for while it was opened (a
/// full read's first data, see [`ObjectSource::open_to_read_all`]): reads
/// within them are answered from that answer, the rest (and everything, if
/// that read failed: then it is retried as any read) from the object.
pub struct HeadFirst {
    inner: Arc<dyn ObjectReader>,
    len: u64,
    early: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<Bytes>>>>,
    head: tokio::sync::OnceCell<Option<Bytes>>,
}

impl HeadFirst {
    /// `inner`, its bytes `0..len` coming from the task `early`.
    pub fn new(inner: Arc<dyn ObjectReader>, len: u64, early: tokio::task::JoinHandle<Result<Bytes>>) -> HeadFirst {
        HeadFirst {
            inner,
            len,
            early: tokio::sync::Mutex::new(Some(early)),
            head: tokio::sync::OnceCell::new(),
        }
    }

    /// Bytes `range` from the early read, if they lie within it and it
    /// succeeded.
    async fn head(&self, range: &Range<u64>) -> Option<Bytes> {
        if range.start >= range.end || range.end > self.len {
            return None;
        }
        let head = self
            .head
            .get_or_init(|| async {
                let early = self.early.lock().await.take()?;
                match early.await {
                    Ok(Ok(b)) if b.len() as u64 == self.len => Some(b),
                    Ok(Err(e)) => {
                        tracing::debug!("the early read failed ({e}); reading again");
                        None
                    }
                    _ => None,
                }
            })
            .await;
        let (s, e) = (usize::try_from(range.start).ok()?, usize::try_from(range.end).ok()?);
        head.as_ref().map(|b| b.slice(s..e))
    }
}

impl Drop for HeadFirst {
    fn drop(&mut self) {
        if let Some(t) = self.early.get_mut().take() {
            t.abort();
        }
    }
}

#[async_trait]
impl ObjectReader for HeadFirst {
    fn id(&self) -> &ObjectId {
        self.inner.id()
    }

    async fn get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes> {
        match self.head(&range).await {
            Some(b) => Ok(b),
            None => self.inner.get_range(range, prio).await,
        }
    }

    async fn stream_range(&self, range: Range<u64>, prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        match self.head(&range).await {
            Some(b) => sink(b),
            None => self.inner.stream_range(range, prio, sink).await,
        }
    }

    fn expires(&self) -> Option<std::time::SystemTime> {
        self.inner.expires()
    }

    async fn renew(&self) -> Result<bool> {
        self.inner.renew().await
    }
}

/// Where [`ObjectReader::stream_range`] hands the pieces of a read; an
/// error from it ends the read with that error.
pub type Sink<'a> = dyn FnMut(Bytes) -> Result<()> + Send + 'a;

/// Opens objects by key: the read capability.
#[async_trait]
pub trait ObjectSource: Send + Sync + 'static {
    /// A printable description of the store (never includes secrets).
    fn describe(&self) -> String;
    /// Open object `key`: a handle on it and its last `tail` bytes (fewer
    /// if it is shorter), in one request.
    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)>;
    /// [`ObjectSource::open`], for a reader that goes on to read the whole
    /// object from its start (a full restore): a source that knows where
    /// the object's data is may fetch its first `head` bytes while it
    /// opens, and answer reads within them from memory, so the first data
    /// does not wait a round trip behind the index.
    async fn open_to_read_all(&self, key: &str, tail: u64, head: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let _ = head;
        self.open(key, tail).await
    }
}

/// Lists, sizes, uploads and deletes objects: the write capability.
#[async_trait]
pub trait ObjectBucket: Send + Sync + 'static {
    /// Size of object `key`.
    async fn size(&self, key: &str) -> Result<u64>;
    /// Start an upload to `key`; nothing is visible under `key` until commit.
    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>>;
    /// Keys under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Keys under `prefix` with their sizes (one listing where the backend
    /// has sizes in it, as S3 does; else a size per key).
    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for k in self.list(prefix).await? {
            let size = self.size(&k).await?;
            out.push((k, size));
        }
        Ok(out)
    }
    /// Remove `key`.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Clean up what crashed writers left (temporary files, multipart
    /// uploads whose writer is gone); how many.
    async fn collect_garbage(&self) -> Result<usize> {
        Ok(0)
    }
}

/// Hands out presigned GET URLs: the capability a credential-free reader
/// is given access through.
#[async_trait]
pub trait ObjectSigner: Send + Sync + 'static {
    /// A URL that GETs object `key` until `expires` from now.
    async fn presign_get(&self, key: &str, expires: Duration) -> Result<String>;
}

/// Signs multipart uploads for a writer that holds no credential (the
/// signer service's pods): the upload is created, recorded, completed and
/// aborted here; only its parts go up through presigned URLs.
///
/// Every upload is recorded (as a save's own multipart uploads are) before
/// its id is handed out, with a deadline: past it, the upload counts as
/// abandoned and the next save or `gc` aborts it. The record also binds the
/// id to its key, so an id is only ever used with the key it was made for.
#[async_trait]
pub trait MultipartSigner: Send + Sync + 'static {
    /// Start a multipart upload of `key`, record it (abandoned after
    /// `deadline`), and answer its id.
    async fn create_multipart(&self, key: &str, deadline: SystemTime) -> Result<String>;
    /// Check that upload `upload_id` is recorded for `key` (else
    /// [`Error::NotFound`]); with `deadline`, move its deadline there.
    async fn check_multipart(&self, key: &str, upload_id: &str, deadline: Option<SystemTime>) -> Result<()>;
    /// A URL that uploads part `part` (1-based) of upload `upload_id` of
    /// `key` with one PUT of its bytes, until `expires` from now.
    async fn presign_part(&self, key: &str, upload_id: &str, part: u32, expires: Duration) -> Result<String>;
    /// Complete the upload from `parts` (part number, ETag; ascending) and
    /// forget its record. Never overwrites: if `key` exists, the upload is
    /// aborted and the answer is [`Error::Exists`].
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> Result<()>;
    /// Abort the upload and forget its record.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;
}

/// A backend with both capabilities (a local directory, a bucket).
pub trait ObjectStore: ObjectSource + ObjectBucket {}

impl<T: ObjectSource + ObjectBucket> ObjectStore for T {}

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
    fn count(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

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
    source: Arc<dyn ObjectSource>,
    bucket: Option<Arc<dyn ObjectBucket>>,
    signer: Option<Arc<dyn ObjectSigner>>,
    multipart: Option<Arc<dyn MultipartSigner>>,
    stats: Arc<StoreStats>,
    policy: RetryPolicy,
}

impl Store {
    /// Wrap a backend with both capabilities.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Store {
        Store {
            source: inner.clone(),
            bucket: Some(inner),
            signer: None,
            multipart: None,
            stats: Arc::new(StoreStats::default()),
            policy: RetryPolicy::default(),
        }
    }

    /// Wrap a source that can only be read (no list, upload or delete).
    pub fn read_only(source: Arc<dyn ObjectSource>) -> Store {
        Store {
            source,
            bucket: None,
            signer: None,
            multipart: None,
            stats: Arc::new(StoreStats::default()),
            policy: RetryPolicy::default(),
        }
    }

    /// The same store, able to presign URLs with `signer`.
    pub fn with_signer(mut self, signer: Arc<dyn ObjectSigner>) -> Store {
        self.signer = Some(signer);
        self
    }

    /// The same store, able to sign multipart uploads with `signer`.
    pub fn with_multipart(mut self, signer: Arc<dyn MultipartSigner>) -> Store {
        self.multipart = Some(signer);
        self
    }

    /// The multipart signer, under the policy's deadline per call (see
    /// [`MultipartSigner`]; only s3:// stores have one).
    pub fn multipart(&self) -> Result<TimedMultipart<'_>> {
        let signer = self.multipart.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{} cannot sign uploads (only s3:// stores can)",
                self.describe()
            ))
        })?;
        Ok(TimedMultipart {
            signer: signer.as_ref(),
            policy: self.policy,
        })
    }

    /// A presigned GET URL for object `key`, valid for `expires`.
    pub async fn presign_get(&self, key: &str, expires: Duration) -> Result<String> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{} cannot presign URLs (only s3:// stores can)",
                self.describe()
            ))
        })?;
        self.deadline(key, signer.presign_get(key, expires)).await
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

    fn bucket(&self) -> Result<&Arc<dyn ObjectBucket>> {
        self.bucket.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{} can only be read (no listing, upload or delete)",
                self.describe()
            ))
        })
    }

    /// Run `fut` once under the policy's deadline.
    async fn deadline<T>(&self, what: &str, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        deadline(self.policy, what, fut).await
    }

    /// Open an existing store for reading: `file:///DIR` or a plain path.
    /// A missing store is an error naming it (nothing is created).
    pub fn open(uri: &str) -> Result<Store> {
        Store::connect(uri, false)
    }

    /// Open a store to write into, creating a local store's directory if
    /// it is missing.
    pub fn open_writable(uri: &str) -> Result<Store> {
        Store::connect(uri, true)
    }

    fn connect(uri: &str, create: bool) -> Result<Store> {
        if uri.starts_with("s3://") {
            let s3 = Arc::new(s3::S3Store::connect(uri)?);
            return Ok(Store::new(s3.clone()).with_signer(s3.clone()).with_multipart(s3));
        }
        if let Some(url) = uri.strip_prefix(crate::signer::client::SCHEME) {
            let token_file = std::env::var_os(crate::signer::client::TOKEN_FILE_ENV).ok_or_else(|| {
                Error::Usage(format!(
                    "a signer needs a token: give --token-file FILE (or set {})",
                    crate::signer::client::TOKEN_FILE_ENV
                ))
            })?;
            let signed = signed::SignedStore::connect(url, std::path::Path::new(&token_file))?;
            return Ok(Store::new(Arc::new(signed)));
        }
        if let Some(path) = uri.strip_prefix(SPEC_SCHEME) {
            let spec = crate::spec::MountSpec::load(std::path::Path::new(path))?;
            return Ok(Store::read_only(Arc::new(crate::spec::SpecSource::new(spec, path)?)));
        }
        Ok(Store::new(Arc::new(local::LocalStore::new(local_dir(uri)?, create)?)))
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Description of the backend.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// Open object `key`: a handle for every later read, and its last
    /// `tail` bytes (one request; retried).
    pub async fn open_object(&self, key: &str, tail: u64) -> Result<(ObjectHandle, Bytes)> {
        self.open_object_to_read(key, tail, 0).await
    }

    /// [`Store::open_object`]; with `head` > 0, for a reader that goes on
    /// to read the whole object from its start (see
    /// [`ObjectSource::open_to_read_all`]).
    pub async fn open_object_to_read(&self, key: &str, tail: u64, head: u64) -> Result<(ObjectHandle, Bytes)> {
        let (reader, bytes) = retry(self.policy, key, || async {
            let r = if head > 0 {
                self.source.open_to_read_all(key, tail, head).await?
            } else {
                self.source.open(key, tail).await?
            };
            self.stats.count(r.1.len());
            Ok(r)
        })
        .await?;
        let handle = ObjectHandle {
            key: key.to_string(),
            reader,
            stats: self.stats.clone(),
            policy: self.policy,
        };
        Ok((handle, bytes))
    }

    /// Size of object `key`; retried.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let bucket = self.bucket()?;
        retry(self.policy, key, || async {
            let r = bucket.size(key).await;
            self.stats.count(0);
            r
        })
        .await
    }

    /// See [`ObjectBucket::create_upload`]; the upload's every call has the
    /// policy's deadline.
    pub async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let up = self.deadline(key, self.bucket()?.create_upload(key)).await?;
        Ok(Box::new(TimedUpload {
            up: Some(up),
            key: key.to_string(),
            timeout: self.policy.timeout,
        }))
    }

    /// Snapshot names in the store under `prefix` (a name prefix).
    pub async fn list_snapshots(&self, prefix: &str) -> Result<Vec<String>> {
        let what = format!("listing {}", self.describe());
        let bucket = self.bucket()?;
        let mut names: Vec<String> = retry(self.policy, &what, || bucket.list(prefix))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_suffix(SNAPSHOT_SUFFIX).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Snapshot names in the store under `prefix` (a name prefix), with
    /// their objects' sizes.
    pub async fn list_snapshot_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let what = format!("listing {}", self.describe());
        let bucket = self.bucket()?;
        let mut named: Vec<(String, u64)> = retry(self.policy, &what, || bucket.list_sized(prefix))
            .await?
            .into_iter()
            .filter_map(|(k, size)| k.strip_suffix(SNAPSHOT_SUFFIX).map(|n| (n.to_string(), size)))
            .collect();
        named.sort();
        Ok(named)
    }

    /// See [`ObjectBucket::collect_garbage`].
    pub async fn collect_garbage(&self) -> Result<usize> {
        self.bucket()?.collect_garbage().await
    }

    /// See [`ObjectBucket::delete`]; under the policy's deadline.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.deadline(key, self.bucket()?.delete(key)).await
    }
}

/// A handle on one opened object, with the store's counters and retry
/// policy; cheap to clone.
#[derive(Clone)]
pub struct ObjectHandle {
    key: String,
    reader: Arc<dyn ObjectReader>,
    stats: Arc<StoreStats>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for ObjectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectHandle")
            .field("key", &self.key)
            .field("id", self.reader.id())
            .finish()
    }
}

impl ObjectHandle {
    /// The object's key in its store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's identity, as opened.
    pub fn id(&self) -> &ObjectId {
        self.reader.id()
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.reader.id().size
    }

    /// The counters of the store it was opened from.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Bytes `range` of the object, for a reader of priority `prio`;
    /// retried, and a short answer is an error.
    pub async fn get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes> {
        self.renewing(|| self.try_get_range(range.clone(), prio)).await
    }

    /// Bytes `range` of the object handed to `sink` in order as they
    /// arrive, exactly once each: a read cut short is resumed from the
    /// first byte not yet handed over (retried as [`ObjectHandle::get_range`]
    /// is), so `sink` sees one unbroken run of the range, or an error.
    pub async fn stream_range(&self, range: Range<u64>, prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        let want = range.end.saturating_sub(range.start);
        let what = format!("{} bytes {}-{}", self.key, range.start, range.end);
        // Bytes handed over so far, and where they go: shared by attempts.
        let state = tokio::sync::Mutex::new((0u64, sink));
        let attempt = || async {
            let mut guard = state.lock().await;
            let (got, sink) = &mut *guard;
            let start = range.start + *got;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut piece = |b: Bytes| {
                if *got + b.len() as u64 > want {
                    return Err(Error::store(
                        StoreErrorKind::Invalid,
                        &self.key,
                        "an answer longer than its range",
                    ));
                }
                *got += b.len() as u64;
                self.stats.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
                sink(b)
            };
            self.reader.stream_range(start..range.end, prio, &mut piece).await?;
            if *got != want {
                return Err(Error::store(
                    StoreErrorKind::Transient,
                    &self.key,
                    format!("short read ({got} of {want} bytes)"),
                ));
            }
            Ok(())
        };
        self.renewing(|| retry(self.policy, &what, attempt)).await
    }

    /// Run `op`; when its access expired or was refused, renew it once
    /// (where the handle can renew) and run it again.
    async fn renewing<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match op().await {
            Err(Error::Store {
                kind: StoreErrorKind::Expired | StoreErrorKind::Denied,
                ..
            }) if retry(self.policy, &format!("renewing access to {}", self.key), || {
                self.reader.renew()
            })
            .await? =>
            {
                tracing::debug!("{}: access renewed; reading again", self.key);
                op().await
            }
            r => r,
        }
    }

    async fn try_get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes> {
        let want = range.end - range.start;
        let what = format!("{} bytes {}-{}", self.key, range.start, range.end);
        retry(self.policy, &what, || async {
            let b = self.reader.get_range(range.clone(), prio).await?;
            self.stats.count(b.len());
            if b.len() as u64 != want {
                return Err(Error::store(
                    StoreErrorKind::Transient,
                    &self.key,
                    format!("short read ({} of {want} bytes)", b.len()),
                ));
            }
            Ok(b)
        })
        .await
    }
}

/// A store's [`MultipartSigner`] with a deadline on every call (no
/// retries: creating, completing and aborting are not idempotent).
pub struct TimedMultipart<'a> {
    signer: &'a dyn MultipartSigner,
    policy: RetryPolicy,
}

impl TimedMultipart<'_> {
    /// See [`MultipartSigner::create_multipart`].
    pub async fn create(&self, key: &str, abandoned_after: SystemTime) -> Result<String> {
        deadline(self.policy, key, self.signer.create_multipart(key, abandoned_after)).await
    }

    /// See [`MultipartSigner::check_multipart`].
    pub async fn check(&self, key: &str, upload_id: &str, abandoned_after: Option<SystemTime>) -> Result<()> {
        deadline(
            self.policy,
            key,
            self.signer.check_multipart(key, upload_id, abandoned_after),
        )
        .await
    }

    /// See [`MultipartSigner::presign_part`].
    pub async fn presign_part(&self, key: &str, upload_id: &str, part: u32, expires: Duration) -> Result<String> {
        deadline(
            self.policy,
            key,
            self.signer.presign_part(key, upload_id, part, expires),
        )
        .await
    }

    /// See [`MultipartSigner::complete_multipart`].
    pub async fn complete(&self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> Result<()> {
        deadline(self.policy, key, self.signer.complete_multipart(key, upload_id, parts)).await
    }

    /// See [`MultipartSigner::abort_multipart`].
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<()> {
        deadline(self.policy, key, self.signer.abort_multipart(key, upload_id)).await
    }
}

/// Move bytes from the front of `data` into the part being filled, `buf`,
/// until it holds `want`; the part, once it is full.
pub(crate) fn fill_part(buf: &mut bytes::BytesMut, data: &mut Bytes, want: usize) -> Option<Bytes> {
    if buf.capacity() == 0 {
        *buf = bytes::BytesMut::with_capacity(want);
    }
    let take = want.saturating_sub(buf.len()).min(data.len());
    buf.extend_from_slice(&data.split_to(take));
    (buf.len() >= want).then(|| std::mem::take(buf).freeze())
}

/// A `Content-Range` value `bytes a-b/total` as (a, b + 1, total).
pub(crate) fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.parse().ok()?,
        b.parse::<u64>().ok()?.checked_add(1)?,
        total.parse().ok()?,
    ))
}

/// Run `fut` once under `policy`'s deadline.
async fn deadline<T>(policy: RetryPolicy, what: &str, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(policy.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            secs: policy.timeout.as_secs_f64(),
        }),
    }
}

/// Run `op` under `policy`: a deadline per attempt, backoff between
/// attempts. Whether to try again is decided here, once, from the kind of
/// failure: timeouts, transient and throttled store errors and local I/O
/// errors are retried (throttling with a longer pause); answers that
/// cannot change (not found, denied, a replaced object, an invalid answer,
/// a refusal) are not.
async fn retry<T, F, Fut>(policy: RetryPolicy, what: &str, op: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = policy.backoff;
    let mut attempt = 1;
    let t0 = std::time::Instant::now();
    loop {
        let err = match deadline(policy, what, op()).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let again = match &err {
            Error::Store { kind, .. } => kind.retryable(),
            Error::Timeout { .. } | Error::Io { .. } => true,
            _ => false,
        };
        if !again {
            return Err(err);
        }
        if attempt >= policy.attempts {
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

/// An upload whose every call has a deadline (no retries: a write that
/// timed out may have happened). A write that times out throws the upload
/// away (under the same deadline) before it reports: nothing is left
/// half-sent for a later sweep to find.
struct TimedUpload {
    up: Option<Box<dyn Upload>>,
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

    fn inner(&mut self) -> Result<&mut Box<dyn Upload>> {
        let key = &self.key;
        self.up.as_mut().ok_or_else(|| {
            Error::store(
                StoreErrorKind::Invalid,
                key,
                "the upload timed out earlier and was aborted",
            )
        })
    }
}

#[async_trait]
impl Upload for TimedUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.inner()?.write(data)).await {
            Ok(r) => r,
            Err(_) => {
                if let Some(up) = self.up.take() {
                    match tokio::time::timeout(timeout, up.abort()).await {
                        Ok(Ok(())) => tracing::debug!("{}: timed out; upload aborted", self.key),
                        Ok(Err(e)) => tracing::warn!("{}: aborting the timed-out upload: {e}", self.key),
                        Err(_) => tracing::warn!("{}: aborting the timed-out upload timed out too", self.key),
                    }
                }
                Err(Self::timed_out(&self.key, timeout))
            }
        }
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        let (key, timeout) = (self.key.clone(), self.timeout);
        let up = self.up.take().ok_or_else(|| Self::timed_out(&key, timeout))?;
        tokio::time::timeout(timeout, up.commit(overwrite))
            .await
            .map_err(|_| Self::timed_out(&key, timeout))?
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let (key, timeout) = (self.key.clone(), self.timeout);
        let Some(up) = self.up.take() else {
            return Ok(());
        };
        tokio::time::timeout(timeout, up.abort())
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
            why: "stores are a path, file:///DIR or s3://BUCKET/PREFIX".into(),
        });
    }
    Ok(PathBuf::from(uri))
}

/// The absolute form of a store URI, as mount records keep it: a plain
/// path becomes `file:///ABS` (resolved against the current directory,
/// symlinks resolved where the directory exists), so it means the same
/// store from any working directory.
pub fn absolute_uri(uri: &str) -> Result<String> {
    if let Some(path) = uri.strip_prefix(SPEC_SCHEME) {
        let abs = std::path::absolute(path).map_err(|e| Error::io(format!("spec {path}"), e))?;
        return Ok(format!("{SPEC_SCHEME}{}", abs.display()));
    }
    if uri.starts_with("s3://") {
        s3::parse_uri(uri)?;
        return Ok(uri.to_string());
    }
    if let Some(url) = uri.strip_prefix(crate::signer::client::SCHEME) {
        http::parse_url(url, "signer")?;
        return Ok(uri.to_string());
    }
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

    /// A source whose one object answers with scripted failures and
    /// records the priorities it was asked at.
    struct Scripted {
        fail: parking_lot::Mutex<Vec<StoreErrorKind>>,
        seen: Arc<parking_lot::Mutex<Vec<Priority>>>,
        renewals: AtomicU64,
        /// Streamed reads still to break off half way.
        cuts: AtomicU64,
    }

    struct ScriptedReader {
        id: ObjectId,
        src: Arc<Scripted>,
    }

    #[async_trait]
    impl ObjectReader for ScriptedReader {
        fn id(&self) -> &ObjectId {
            &self.id
        }
        async fn renew(&self) -> Result<bool> {
            self.src.renewals.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        }
        async fn get_range(&self, range: Range<u64>, prio: Priority) -> Result<Bytes> {
            self.src.seen.lock().push(prio);
            match self.src.fail.lock().pop() {
                Some(kind) => Err(Error::store(kind, "obj", "scripted")),
                None => Ok(Bytes::from(vec![0; (range.end - range.start) as usize])),
            }
        }
        async fn stream_range(&self, range: Range<u64>, _prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
            // Byte i of the object is i, in pieces of 3; a cut read hands
            // over half its range first.
            let cut = self.src.cuts.load(Ordering::Relaxed) > 0;
            let end = if cut {
                range.start + (range.end - range.start) / 2
            } else {
                range.end
            };
            for at in (range.start..end).step_by(3) {
                sink(Bytes::from(
                    (at..(at + 3).min(end)).map(|i| i as u8).collect::<Vec<u8>>(),
                ))?;
            }
            if cut {
                self.src.cuts.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::store(StoreErrorKind::Transient, "obj", "cut"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectSource for Arc<Scripted> {
        fn describe(&self) -> String {
            "scripted".into()
        }
        async fn open(&self, _key: &str, _tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
            let r = ScriptedReader {
                id: ObjectId {
                    size: 100,
                    etag: Some("e1".into()),
                },
                src: self.clone(),
            };
            Ok((Arc::new(r), Bytes::new()))
        }
    }

    #[tokio::test]
    async fn reads_within_an_early_head_are_answered_from_it_and_a_failed_one_falls_back() {
        let (src, _) = scripted(0);
        let (inner, _) = src.open("k", 0).await.expect("open");
        // The early read of bytes 0..10 brought 7s.
        let early = tokio::spawn(async { Ok(Bytes::from(vec![7u8; 10])) });
        let r = HeadFirst::new(inner.clone(), 10, early);
        assert_eq!(
            &r.get_range(2..5, Priority::Foreground).await.expect("head")[..],
            &[7; 3]
        );
        let mut got = Vec::new();
        r.stream_range(0..10, Priority::Foreground, &mut |b| {
            got.extend_from_slice(&b);
            Ok(())
        })
        .await
        .expect("head, streamed");
        assert_eq!(got, vec![7; 10]);
        assert!(src.seen.lock().is_empty(), "the object was not asked");
        // Past the head: the object (whose byte i is i when streamed).
        got.clear();
        r.stream_range(8..12, Priority::Foreground, &mut |b| {
            got.extend_from_slice(&b);
            Ok(())
        })
        .await
        .expect("past the head");
        assert_eq!(got, vec![8, 9, 10, 11]);
        assert_eq!(r.get_range(20..30, Priority::Prefetch).await.expect("beyond").len(), 10);
        assert_eq!(*src.seen.lock(), vec![Priority::Prefetch]);
        // An early read that failed: every read goes to the object.
        let failed = tokio::spawn(async { Err(Error::store(StoreErrorKind::Transient, "k", "early")) });
        let r = HeadFirst::new(inner, 10, failed);
        assert_eq!(
            &r.get_range(2..5, Priority::Foreground).await.expect("fallback")[..],
            &[0; 3]
        );
        assert_eq!(src.seen.lock().len(), 2);
    }

    /// A store of one scripted object (3 attempts a read, quick backoff)
    /// whose next `cuts` streamed reads break off.
    fn scripted(cuts: u64) -> (Arc<Scripted>, Store) {
        let src = Arc::new(Scripted {
            fail: parking_lot::Mutex::new(Vec::new()),
            seen: Arc::new(parking_lot::Mutex::new(Vec::new())),
            renewals: AtomicU64::new(0),
            cuts: AtomicU64::new(cuts),
        });
        let policy = RetryPolicy {
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(1),
        };
        (src.clone(), Store::read_only(Arc::new(src)).with_policy(policy))
    }

    #[tokio::test]
    async fn retries_follow_the_kind_and_priority_reaches_the_reader() {
        let (src, store) = scripted(0);
        let (obj, _) = store.open_object("k", 10).await.expect("open");
        assert_eq!(obj.id().etag.as_deref(), Some("e1"));
        // Transient twice, then an answer: retried.
        *src.fail.lock() = vec![StoreErrorKind::Transient, StoreErrorKind::Throttled];
        obj.get_range(0..10, Priority::Prefetch).await.expect("retried");
        assert_eq!(*src.seen.lock(), vec![Priority::Prefetch; 3]);
        // An expired URL: renewed once, then read.
        src.seen.lock().clear();
        *src.fail.lock() = vec![StoreErrorKind::Expired];
        obj.get_range(0..10, Priority::Foreground).await.expect("renewed");
        assert_eq!((src.seen.lock().len(), src.renewals.load(Ordering::Relaxed)), (2, 1));
        // Still refused after renewal: an error, after one renewal.
        *src.fail.lock() = vec![StoreErrorKind::Denied, StoreErrorKind::Denied];
        assert!(obj.get_range(0..10, Priority::Foreground).await.is_err());
        assert_eq!(src.renewals.load(Ordering::Relaxed), 2);
        // A replaced object, an invalid answer: never retried.
        for kind in [StoreErrorKind::Precondition, StoreErrorKind::Invalid] {
            src.seen.lock().clear();
            *src.fail.lock() = vec![kind];
            let e = obj.get_range(0..10, Priority::Foreground).await.expect_err("fails");
            assert!(matches!(e, Error::Store { kind: k, .. } if k == kind), "{e}");
            assert_eq!(src.seen.lock().len(), 1, "{kind:?} was retried");
        }
        assert_eq!(
            Error::store(StoreErrorKind::Precondition, "o", "etag changed").errno(),
            libc::ESTALE
        );
        // A read-only store has no listing, upload or delete to stub out.
        let e = store.list_snapshots("").await.expect_err("read-only");
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("can only be read"),
            "{e}"
        );
        assert!(store.create_upload("k").await.is_err());
    }

    #[tokio::test]
    async fn a_streamed_read_cut_short_resumes_where_it_broke() {
        let (src, store) = scripted(2);
        let (obj, _) = store.open_object("k", 10).await.expect("open");
        let before = store.stats().requests.load(Ordering::Relaxed);
        let mut got = Vec::new();
        obj.stream_range(10..90, Priority::Foreground, &mut |b| {
            got.extend_from_slice(&b);
            Ok(())
        })
        .await
        .expect("resumed");
        // Every byte once, in order, across two breaks.
        assert_eq!(got, (10..90u8).collect::<Vec<_>>());
        assert_eq!(store.stats().requests.load(Ordering::Relaxed) - before, 3);
        // More breaks than attempts: an error, after the bytes that came.
        src.cuts.store(5, Ordering::Relaxed);
        got.clear();
        let e = obj
            .stream_range(0..80, Priority::Foreground, &mut |b| {
                got.extend_from_slice(&b);
                Ok(())
            })
            .await
            .expect_err("gives up");
        assert!(e.to_string().contains("cut"), "{e}");
        assert_eq!(got, (0..70u8).collect::<Vec<_>>());
        // A sink's error ends the read at once.
        src.cuts.store(0, Ordering::Relaxed);
        let e = obj
            .stream_range(0..80, Priority::Foreground, &mut |_| {
                Err(Error::Internal("full".into()))
            })
            .await
            .expect_err("sink refused");
        assert!(e.to_string().contains("full"), "{e}");
    }

    /// An upload whose writes never finish, and which says when it is
    /// aborted.
    struct Stuck(Arc<AtomicU64>);

    #[async_trait]
    impl Upload for Stuck {
        async fn write(&mut self, _data: Bytes) -> Result<()> {
            std::future::pending().await
        }
        async fn commit(self: Box<Self>, _overwrite: bool) -> Result<()> {
            Ok(())
        }
        async fn abort(self: Box<Self>) -> Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_write_that_times_out_aborts_its_upload() {
        let aborted = Arc::new(AtomicU64::new(0));
        let mut up: Box<dyn Upload> = Box::new(TimedUpload {
            up: Some(Box::new(Stuck(aborted.clone()))),
            key: "k".into(),
            timeout: Duration::from_millis(50),
        });
        let e = up.write(Bytes::from_static(b"x")).await.expect_err("timed out");
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(aborted.load(Ordering::Relaxed), 1);
        // Nothing more goes through it.
        assert!(up.write(Bytes::from_static(b"y")).await.is_err());
        assert!(up.commit(false).await.is_err());
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
