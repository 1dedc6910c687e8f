//! `s3://bucket/prefix`: snapshots in S3 or any S3-compatible server, with
//! the standard AWS credential chain (environment, profile, web identity
//! for IRSA / pod identity), `AWS_REGION`, `AWS_ENDPOINT_URL`, and
//! path-style addressing on request (`LAZYSNAP_S3_PATH_STYLE=1`).
//!
//! The only file that touches aws-sdk-s3 types. Object `NAME.tar.zst` is key
//! `prefix/NAME.tar.zst`. Opening an object is one suffix GET, which also
//! gives its size (Content-Range) and ETag; every later ranged GET sends
//! `If-Match` with that ETag and checks the ETag of the answer too (some
//! servers ignore `If-Match`), so a replaced object is a precondition
//! failure, never bytes of two objects. A 200 answer to a ranged GET is an
//! invalid answer, not data. Failures are mapped to the store's error kinds
//! here, once; the retry layer above decides from the kind.
//!
//! Uploads: an object smaller than one part is one conditional PUT. A larger
//! one is a multipart upload whose id is recorded (under
//! `prefix/.lazysnap-uploads/`) before its first part, so the next save or
//! `gc` can abort it if its writer dies. The part being filled is a
//! `BytesMut`; once full it is frozen (no copy) and handed to a spawned task
//! that uploads it, while the writer goes on filling the next. At most
//! [`PARTS_IN_FLIGHT`] (4) parts are in flight; a fifth full part waits for
//! one to finish (backpressure on `write`). A failed part (after
//! [`PART_ATTEMPTS`] tries, on the transient kinds only) stops the others,
//! aborts the upload and forgets its record; the error names the key and
//! the part. Parts are completed in part-number order, with `If-None-Match`.
//!
//! Signed uploads ([`MultipartSigner`], for the signer service): the same
//! record, made before the id leaves this process, with a deadline that
//! the signer moves on each batch of part URLs; past it the sweep aborts
//! the upload whoever recorded it. Only the parts go up through presigned
//! UploadPart URLs; completion (never overwriting) and aborts happen here.
//!
//! Part sizes: 8 MiB for parts 1–1,000, doubling every 1,000 parts, capped
//! at 512 MiB, so an upload of unknown size fits S3's 10,000 parts up to
//! 1000 × (8 + 16 + 32 + 64 + 128 + 256) MiB + 4000 × 512 MiB = 2,552,000 MiB
//! (~2.4 TiB; S3 allows 5 TiB, but no part may exceed the memory bound).
//!
//! Memory bound: an upload holds at most [`UPLOAD_MEMORY`] = 512 MiB of data,
//! counting the parts in flight and the part being filled. The writer may
//! fill part `n + 1` only if (bytes in flight) + size(`n + 1`) ≤ 512 MiB,
//! so parts in memory ≤ min(4 + 1, 512 MiB / size):
//!
//! | parts        | size    | in memory at most | bytes         | object up to |
//! |--------------|---------|-------------------|---------------|--------------|
//! | 1–1000       | 8 MiB   | 5                 | 40 MiB        | 7.8 GiB      |
//! | 1001–2000    | 16 MiB  | 5                 | 80 MiB        | 23 GiB       |
//! | 2001–3000    | 32 MiB  | 5                 | 160 MiB       | 55 GiB       |
//! | 3001–4000    | 64 MiB  | 5                 | 320 MiB       | 117 GiB      |
//! | 4001–5000    | 128 MiB | 4 (3 in flight)   | 512 MiB       | 242 GiB      |
//! | 5001–6000    | 256 MiB | 2 (1 in flight)   | 512 MiB       | 492 GiB      |
//! | 6001–10000   | 512 MiB | 1 (one at a time) | 512 MiB       | 2.4 TiB      |
//!
//! So at defaults a save of up to 7.8 GiB holds 40 MiB of parts, and no
//! upload ever holds more than 512 MiB (the unit test `memory_bound` walks
//! all 10,000 parts). On top of that: the caller's write buffer (8 MiB
//! chunks in `build::publish`) and the SDK's small per-request state.
//!
//! For tests, `LAZYSNAP_S3_PART_SIZE` (bytes, 5 MiB to 512 MiB: S3 refuses
//! smaller parts) sets the first parts' size, and
//! `LAZYSNAP_S3_PARTS_IN_FLIGHT` (1 to 16) how many go at once; the bound
//! above holds whatever they say.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::{
    content_range, MultipartSigner, ObjectBucket, ObjectId, ObjectReader, ObjectSigner, ObjectSource, Priority, Sink,
    Upload,
};
use crate::error::{Error, Result, StoreErrorKind};

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: usize = 10_000;

/// S3's smallest part (every part but the last).
const MIN_PART: usize = 5 << 20;

/// The first parts of a multipart upload, by default.
const FIRST_PART: usize = 8 << 20;

/// The most upload data an [`S3Upload`] holds: the parts in flight plus
/// the part being filled. No part is larger, so an upload can always go on
/// (one part at a time, at worst).
pub const UPLOAD_MEMORY: usize = 512 << 20;

/// Part uploads in flight at once, by default (`LAZYSNAP_S3_PARTS_IN_FLIGHT`
/// changes it, 1 to [`MAX_PARTS_IN_FLIGHT`]). With the part being filled
/// that is 5 parts in memory: 40 MiB while parts are 8 MiB (the first
/// 1,000 parts, an object up to 7.8 GiB); 80, 160, 320 MiB at 16, 32,
/// 64 MiB. Where 5 parts would not fit in [`UPLOAD_MEMORY`], fewer are held
/// (4 × 128 MiB: 3 in flight while the 4th fills; 2 × 256 MiB; 1 × 512 MiB,
/// sent while the writer waits), so never more than 512 MiB in all (the
/// module doc has the table).
pub const PARTS_IN_FLIGHT: usize = 4;

/// The most `LAZYSNAP_S3_PARTS_IN_FLIGHT` may ask for.
const MAX_PARTS_IN_FLIGHT: usize = 16;

/// Attempts per part upload (parts alone are retried here: see
/// [`upload_part`]).
const PART_ATTEMPTS: u32 = 3;

/// Pause before a part's first retry; doubles after each (×4 when
/// throttled), as the store's retry layer does.
const PART_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The size of part `n` (1-based) with the default first part: 8 MiB for
/// the first 1,000 parts, then doubling every 1,000 up to
/// [`UPLOAD_MEMORY`], so an upload of unknown size fits S3's 10,000 parts
/// up to ~2.4 TiB while small uploads use small parts.
pub fn part_size(n: usize) -> usize {
    PartPlan::default().size(n)
}

/// How an upload is cut into parts and how many go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartPlan {
    /// Size of the first 1,000 parts.
    first: usize,
    /// Part uploads in flight at most.
    in_flight: usize,
}

impl Default for PartPlan {
    fn default() -> Self {
        PartPlan {
            first: FIRST_PART,
            in_flight: PARTS_IN_FLIGHT,
        }
    }
}

impl PartPlan {
    /// From the environment: `LAZYSNAP_S3_PART_SIZE` (bytes, for tests:
    /// small parts make a small upload multipart) and
    /// `LAZYSNAP_S3_PARTS_IN_FLIGHT`.
    fn from_env() -> Result<PartPlan> {
        let mut plan = PartPlan::default();
        let var = |name: &str, range: std::ops::RangeInclusive<usize>| -> Result<Option<usize>> {
            let Ok(v) = std::env::var(name) else {
                return Ok(None);
            };
            match v.trim().parse::<usize>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(Error::Usage(format!(
                    "{name}={v:?}: expected a number from {} to {}",
                    range.start(),
                    range.end()
                ))),
            }
        };
        if let Some(first) = var("LAZYSNAP_S3_PART_SIZE", MIN_PART..=UPLOAD_MEMORY)? {
            plan.first = first;
        }
        if let Some(n) = var("LAZYSNAP_S3_PARTS_IN_FLIGHT", 1..=MAX_PARTS_IN_FLIGHT)? {
            plan.in_flight = n;
        }
        Ok(plan)
    }

    /// The size of part `n` (1-based): `first` for parts 1 to 1,000, doubling
    /// every 1,000 parts, never above [`UPLOAD_MEMORY`].
    fn size(&self, n: usize) -> usize {
        let doublings = (n.saturating_sub(1) / 1000).min(16) as u32;
        self.first.saturating_mul(1 << doublings).min(UPLOAD_MEMORY)
    }

    /// May another part start while `count` are in flight?
    fn may_start(&self, count: usize) -> bool {
        count < self.in_flight
    }

    /// May the writer fill part `next` while `count` parts holding `bytes`
    /// are in flight? Only if all of it fits in [`UPLOAD_MEMORY`] (or
    /// nothing is in flight: a part alone always fits).
    fn may_fill(&self, count: usize, bytes: usize, next: usize) -> bool {
        count == 0 || bytes + self.size(next) <= UPLOAD_MEMORY
    }
}

/// Where multipart uploads in progress are recorded, under the prefix (a
/// name no snapshot can have: components never start with '.').
const UPLOADS: &str = ".lazysnap-uploads/";

/// An upload left by another machine is taken for abandoned after this.
const FOREIGN_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Who is writing a multipart upload: recorded (before its first part) so
/// the next save or `gc` can abort it if its writer died.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadRecord {
    key: String,
    upload_id: String,
    pid: u32,
    start_time: Option<u64>,
    boot_id: Option<String>,
    created: u64,
    /// An upload signed for a writer elsewhere (the signer service's): it
    /// counts as abandoned after this (seconds since the epoch), whether or
    /// not the process that recorded it still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<u64>,
}

impl UploadRecord {
    /// Is the upload abandoned at `now`? A signed upload once past its
    /// deadline (whoever recorded it, even a signer still running); else
    /// one whose writer was a process of this machine that is gone, or
    /// one from elsewhere older than [`FOREIGN_UPLOAD_AGE`].
    fn abandoned(&self, now: std::time::SystemTime) -> bool {
        if let Some(deadline) = self.deadline {
            return epoch_secs(now) > deadline;
        }
        let here = self.boot_id.is_some() && self.boot_id == crate::sys::boot_id();
        if here {
            !crate::sys::same_process_alive(self.pid, self.start_time, self.boot_id.as_deref())
        } else {
            let made = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.created);
            now.duration_since(made).is_ok_and(|age| age > FOREIGN_UPLOAD_AGE)
        }
    }
}

fn epoch_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The key of upload `id`'s record in the uploads dir `dir`.
fn marker_key(dir: &str, id: &str) -> String {
    // Upload ids are opaque: keep only what is safe in a key.
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{dir}{safe}")
}

/// Record upload `id` of object `key` in the uploads dir `dir`, as written
/// by this process (abandoned when it is gone, or after `deadline`).
async fn record_upload(
    client: &Client,
    bucket: &str,
    dir: &str,
    key: &str,
    id: &str,
    deadline: Option<std::time::SystemTime>,
) -> Result<()> {
    let me = std::process::id();
    let rec = UploadRecord {
        key: key.to_string(),
        upload_id: id.to_string(),
        pid: me,
        start_time: crate::sys::process_start(me),
        boot_id: crate::sys::boot_id(),
        created: epoch_secs(std::time::SystemTime::now()),
        deadline: deadline.map(epoch_secs),
    };
    let body = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
    let marker = marker_key(dir, id);
    client
        .put_object()
        .bucket(bucket)
        .key(&marker)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| store_error(&marker, &e))?;
    Ok(())
}

/// The record at `marker` ([`Error::NotFound`] if there is none or it is
/// not a record).
async fn read_record(client: &Client, bucket: &str, marker: &str) -> Result<UploadRecord> {
    let got = client
        .get_object()
        .bucket(bucket)
        .key(marker)
        .send()
        .await
        .map_err(|e| store_error(marker, &e))?;
    let body = got
        .body
        .collect()
        .await
        .map_err(|e| Error::store(StoreErrorKind::Transient, marker, format!("body cut short: {e}")))?;
    serde_json::from_slice(&body.into_bytes()).map_err(|_| Error::not_found(marker.to_string()))
}

/// Forget the record of upload `id` (done or aborted); best effort: a
/// record left behind only makes the sweep try an abort that finds nothing.
async fn forget_upload(client: &Client, bucket: &str, dir: &str, id: &str) {
    let _ = client
        .delete_object()
        .bucket(bucket)
        .key(marker_key(dir, id))
        .send()
        .await;
}

/// The endpoint presigned URLs name, where readers reach S3 by another
/// address than this process (a VPC endpoint and the public one, an
/// in-cluster service and its ingress). Only URLs change; every request
/// this process sends goes to its own endpoint.
pub const PRESIGN_ENDPOINT_ENV: &str = "LAZYSNAP_S3_PRESIGN_ENDPOINT";

/// A bucket and key prefix.
pub struct S3Store {
    client: Client,
    /// Signs presigned URLs (never sends): `client`, or one naming the
    /// endpoint readers reach (`LAZYSNAP_S3_PRESIGN_ENDPOINT`).
    presigner: Client,
    bucket: String,
    prefix: String,
    plan: PartPlan,
}

/// Split `s3://bucket/prefix` into bucket and prefix (`""` or ending `/`).
pub fn parse_uri(uri: &str) -> Result<(String, String)> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Usage(format!("{uri}: not an s3:// URI")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(Error::Usage(format!(
            "bad store URI {uri:?}: s3://BUCKET[/PREFIX], a bucket name of 3-63 lowercase letters, digits, '-' or '.'"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.contains("//") || prefix.chars().any(char::is_control)
    {
        return Err(Error::Usage(format!("bad store URI {uri:?}: bad prefix")));
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

impl S3Store {
    /// Connect to `s3://bucket/prefix` with the standard AWS configuration
    /// (loaded on a helper thread, so it works inside and outside a runtime).
    pub fn connect(uri: &str) -> Result<S3Store> {
        let (bucket, prefix) = parse_uri(uri)?;
        let plan = PartPlan::from_env()?;
        let path_style = std::env::var("LAZYSNAP_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
        let conf = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok::<_, std::io::Error>(rt.block_on(aws_config::load_defaults(aws_config::BehaviorVersion::latest())))
            })
            .join()
        })
        .map_err(|_| Error::Internal("loading the AWS configuration panicked".into()))?
        .map_err(|e| Error::io("loading the AWS configuration", e))?;
        // Retries, backoff and renewal live in one layer, ours (store::retry),
        // which decides from the error's kind: the SDK's own are off.
        let s3 = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(path_style)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        let presigner = match std::env::var(PRESIGN_ENDPOINT_ENV).ok().filter(|v| !v.is_empty()) {
            Some(ep) => {
                let u = super::http::parse_url(&ep, PRESIGN_ENDPOINT_ENV)?;
                if u.query().is_some() || !u.username().is_empty() {
                    return Err(Error::Usage(format!(
                        "{PRESIGN_ENDPOINT_ENV}: an endpoint URL (scheme, host, port), not {}",
                        super::http::shown(&u)
                    )));
                }
                Client::from_conf(s3.clone().endpoint_url(ep).build())
            }
            None => Client::from_conf(s3.clone().build()),
        };
        Ok(S3Store {
            client: Client::from_conf(s3.build()),
            presigner,
            bucket,
            prefix,
            plan,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Where this store's uploads in progress are recorded.
    fn uploads_dir(&self) -> String {
        format!("{}{UPLOADS}", self.prefix)
    }
}

/// Map an SDK failure to the store's kinds. Messages name the object and
/// the server's error code, never a URL, header or credential.
fn store_error<E: ProvideErrorMetadata>(what: &str, e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default().to_string();
    let why = match (&status, code.is_empty()) {
        (Some(s), false) => format!("{code} (HTTP {s})"),
        (Some(s), true) => format!("HTTP {s}"),
        (None, _) => match e {
            SdkError::TimeoutError(_) => "timed out".to_string(),
            SdkError::DispatchFailure(_) => "could not reach the server".to_string(),
            SdkError::ResponseError(_) => "unreadable answer".to_string(),
            _ => "request failed".to_string(),
        },
    };
    if status == Some(404) || code == "NoSuchKey" || code == "NotFound" {
        return Error::not_found(what.to_string());
    }
    let kind = match (status, code.as_str()) {
        (_, "ExpiredToken" | "TokenRefreshRequired" | "RequestExpired") => StoreErrorKind::Expired,
        (Some(412), _) | (_, "PreconditionFailed") => StoreErrorKind::Precondition,
        (Some(429), _) | (_, "SlowDown" | "Throttling" | "ThrottlingException") => StoreErrorKind::Throttled,
        (Some(401 | 403), _) => StoreErrorKind::Denied,
        (Some(s), _) if s >= 500 => StoreErrorKind::Transient,
        (Some(_), _) => StoreErrorKind::Invalid,
        (None, _) => match e {
            SdkError::ConstructionFailure(_) => StoreErrorKind::Invalid,
            _ => StoreErrorKind::Transient,
        },
    };
    Error::store(kind, what, why)
}

struct S3Reader {
    client: Client,
    bucket: String,
    key: String,
    id: ObjectId,
}

#[async_trait]
impl ObjectReader for S3Reader {
    fn id(&self) -> &ObjectId {
        &self.id
    }

    async fn get_range(&self, range: Range<u64>, _prio: Priority) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let body = self.ranged(&range).await?.collect().await.map_err(|e| self.cut(e))?;
        Ok(body.into_bytes())
    }

    async fn stream_range(&self, range: Range<u64>, _prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut body = self.ranged(&range).await?;
        while let Some(piece) = body.next().await {
            sink(piece.map_err(|e| self.cut(e))?)?;
        }
        Ok(())
    }
}

impl S3Reader {
    /// The body of a GET of bytes `range` (not empty), held to the ETag
    /// the object was opened with and to the range asked for.
    async fn ranged(&self, range: &Range<u64>) -> Result<aws_sdk_s3::primitives::ByteStream> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        if let Some(etag) = &self.id.etag {
            req = req.if_match(etag);
        }
        let out = req.send().await.map_err(|e| store_error(&self.key, &e))?;
        if out.e_tag() != self.id.etag.as_deref() {
            return Err(Error::store(
                StoreErrorKind::Precondition,
                &self.key,
                "the object changed since it was opened (ETag differs)",
            ));
        }
        match out.content_range().and_then(content_range) {
            Some((a, b, _)) if a == range.start && b == range.end => Ok(out.body),
            _ => Err(Error::store(
                StoreErrorKind::Invalid,
                &self.key,
                "the server did not answer the range asked for (a 200 to a ranged GET?)",
            )),
        }
    }

    /// A body that broke off: worth retrying.
    fn cut(&self, e: impl std::fmt::Display) -> Error {
        Error::store(StoreErrorKind::Transient, &self.key, format!("body cut short: {e}"))
    }
}

#[async_trait]
impl ObjectSource for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let k = self.key(key);
        let (body, size, etag) = match self.get_tail(&k, tail).await {
            Ok(r) => r,
            // Some servers (s3s-fs) fail a suffix longer than the object
            // (500, 416): learn its size, and read a small object whole.
            Err(
                e @ Error::Store {
                    kind: StoreErrorKind::Transient | StoreErrorKind::Invalid,
                    ..
                },
            ) => {
                let (size, etag) = head(&self.client, &self.bucket, &k).await?;
                if size > tail || size == 0 {
                    return Err(e);
                }
                let probe = S3Reader {
                    client: self.client.clone(),
                    bucket: self.bucket.clone(),
                    key: k.clone(),
                    id: ObjectId {
                        size,
                        etag: etag.clone(),
                    },
                };
                (probe.get_range(0..size, Priority::Foreground).await?, size, etag)
            }
            Err(e) => return Err(e),
        };
        let reader = S3Reader {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: k,
            id: ObjectId { size, etag },
        };
        Ok((Arc::new(reader), body))
    }
}

impl S3Store {
    /// Abort the multipart uploads whose writer is gone: a process of this
    /// machine that no longer runs, or a record from elsewhere older than a
    /// day. Returns how many were aborted.
    pub async fn abort_abandoned(&self) -> Result<usize> {
        let mut aborted = 0;
        let now = std::time::SystemTime::now();
        for (marker, _) in self.list_keys(&self.uploads_dir()).await? {
            let Ok(rec) = read_record(&self.client, &self.bucket, &marker).await else {
                continue;
            };
            if !rec.abandoned(now) {
                continue;
            }
            match abort_multipart(&self.client, &self.bucket, &rec.key, &rec.upload_id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let _ = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&marker)
                .send()
                .await;
            match rec.deadline {
                Some(_) => tracing::info!("{}: aborted an abandoned signed upload (past its deadline)", rec.key),
                None => tracing::info!(
                    "{}: aborted an abandoned upload (writer pid {} is gone)",
                    rec.key,
                    rec.pid
                ),
            }
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Every key under the full key prefix `prefix`, with its size, all
    /// pages.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error(&self.describe(), &e))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(|k| (k.to_string(), o.size().unwrap_or(0).max(0) as u64))),
            );
        }
        Ok(out)
    }

    /// One suffix GET: the last `tail` bytes, the object's size and ETag.
    async fn get_tail(&self, k: &str, tail: u64) -> Result<(Bytes, u64, Option<String>)> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(k)
            .range(format!("bytes=-{}", tail.max(1)))
            .send()
            .await
            .map_err(|e| store_error(k, &e))?;
        let etag = out.e_tag().map(str::to_string);
        let range = out.content_range().and_then(content_range);
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::store(StoreErrorKind::Transient, k, format!("body cut short: {e}")))?
            .into_bytes();
        // A suffix longer than the object may be answered whole.
        let size = match range {
            Some((_, end, total)) if end == total => total,
            Some(_) => {
                return Err(Error::store(
                    StoreErrorKind::Invalid,
                    k,
                    "a suffix read did not end at the end",
                ))
            }
            None => body.len() as u64,
        };
        Ok((body, size, etag))
    }
}

/// Longest life of a SigV4 presigned URL.
pub const MAX_PRESIGN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[async_trait]
impl ObjectSigner for S3Store {
    async fn presign_get(&self, key: &str, expires: std::time::Duration) -> Result<String> {
        let k = self.key(key);
        if expires > MAX_PRESIGN || expires.is_zero() {
            return Err(Error::Usage(format!(
                "presigned URLs live from 1 s to 7 days (SigV4), not {}s",
                expires.as_secs()
            )));
        }
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| Error::Usage(format!("presigning {k}: {e}")))?;
        let req = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(&k)
            .presigned(cfg)
            .await
            .map_err(|e| store_error(&k, &e))?;
        Ok(req.uri().to_string())
    }
}

/// Signed uploads (the signer service's): the same records, aborts and
/// no-overwrite completion as a save's own uploads, with only the parts
/// going up through presigned UploadPart URLs.
#[async_trait]
impl MultipartSigner for S3Store {
    async fn create_multipart(&self, key: &str, deadline: std::time::SystemTime) -> Result<String> {
        if let Err(e) = self.abort_abandoned().await {
            tracing::warn!("{}: looking for abandoned uploads: {e}", self.describe());
        }
        let k = self.key(key);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| store_error(&k, &e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| Error::store(StoreErrorKind::Invalid, &k, "no upload id"))?
            .to_string();
        let dir = self.uploads_dir();
        if let Err(e) = record_upload(&self.client, &self.bucket, &dir, &k, &id, Some(deadline)).await {
            // Unrecorded, the id is never handed out: throw the upload away.
            let _ = abort_multipart(&self.client, &self.bucket, &k, &id).await;
            return Err(e);
        }
        Ok(id)
    }

    async fn check_multipart(&self, key: &str, upload_id: &str, deadline: Option<std::time::SystemTime>) -> Result<()> {
        let k = self.key(key);
        let dir = self.uploads_dir();
        let unknown = || Error::not_found(format!("upload of {k} with that id"));
        let rec = match read_record(&self.client, &self.bucket, &marker_key(&dir, upload_id)).await {
            Ok(rec) => rec,
            Err(Error::NotFound { .. }) => return Err(unknown()),
            Err(e) => return Err(e),
        };
        // The record's key is the store's word; the id must be the very one
        // (the record's name keeps only part of an id's characters).
        if rec.key != k || rec.upload_id != upload_id || rec.deadline.is_none() {
            return Err(unknown());
        }
        if let Some(d) = deadline {
            record_upload(&self.client, &self.bucket, &dir, &k, upload_id, Some(d)).await?;
        }
        Ok(())
    }

    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part: u32,
        expires: std::time::Duration,
    ) -> Result<String> {
        let k = self.key(key);
        let number = i32::try_from(part)
            .ok()
            .filter(|n| (1..=MAX_PARTS as i32).contains(n))
            .ok_or_else(|| Error::Usage(format!("part {part}: parts are numbered 1 to {MAX_PARTS}")))?;
        if expires > MAX_PRESIGN || expires.is_zero() {
            return Err(Error::Usage(format!(
                "presigned URLs live from 1 s to 7 days (SigV4), not {}s",
                expires.as_secs()
            )));
        }
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| Error::Usage(format!("presigning {k}: {e}")))?;
        let req = self
            .presigner
            .upload_part()
            .bucket(&self.bucket)
            .key(&k)
            .upload_id(upload_id)
            .part_number(number)
            .presigned(cfg)
            .await
            .map_err(|e| store_error(&k, &e))?;
        Ok(req.uri().to_string())
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> Result<()> {
        let k = self.key(key);
        let dir = self.uploads_dir();
        let throw_away = || async {
            let _ = abort_multipart(&self.client, &self.bucket, &k, upload_id).await;
            forget_upload(&self.client, &self.bucket, &dir, upload_id).await;
            Error::Exists { what: k.clone() }
        };
        // The server may not honour If-None-Match: look first, too.
        match head(&self.client, &self.bucket, &k).await {
            Ok(_) => return Err(throw_away().await),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut done = Vec::with_capacity(parts.len());
        for (n, etag) in parts {
            let number = i32::try_from(*n).map_err(|_| Error::Usage(format!("part {n}: out of range")))?;
            done.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
        }
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&k)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
            .if_none_match("*")
            .send()
            .await;
        match sent.map_err(|e| store_error(&k, &e)) {
            Ok(_) => {
                forget_upload(&self.client, &self.bucket, &dir, upload_id).await;
                Ok(())
            }
            Err(Error::Store {
                kind: StoreErrorKind::Precondition,
                ..
            }) => Err(throw_away().await),
            // Anything else (a part missing, a wrong ETag): the upload
            // stays, for the writer to complete again or abort.
            Err(e) => Err(e),
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let k = self.key(key);
        match abort_multipart(&self.client, &self.bucket, &k, upload_id).await {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        forget_upload(&self.client, &self.bucket, &self.uploads_dir(), upload_id).await;
        Ok(())
    }
}

#[async_trait]
impl ObjectBucket for S3Store {
    async fn size(&self, key: &str) -> Result<u64> {
        Ok(head(&self.client, &self.bucket, &self.key(key)).await?.0)
    }

    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        // Uploads a dead writer left behind cost storage: abort them.
        if let Err(e) = self.abort_abandoned().await {
            tracing::warn!("{}: looking for abandoned uploads: {e}", self.describe());
        }
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.key(key),
            marker: self.uploads_dir(),
            plan: self.plan,
            upload_id: None,
            next_part: 1,
            buf: BytesMut::new(),
            tasks: JoinSet::new(),
            in_flight_bytes: 0,
            done: Vec::new(),
            gauge: Arc::new(Gauge::default()),
            failed: false,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_sized(prefix).await?.into_iter().map(|(k, _)| k).collect())
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let keys = self.list_keys(&self.key(prefix)).await?;
        Ok(keys
            .into_iter()
            .filter_map(|(k, size)| k.strip_prefix(&self.prefix).map(|k| (k.to_string(), size)))
            .collect())
    }

    async fn collect_garbage(&self) -> Result<usize> {
        self.abort_abandoned().await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let k = self.key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| store_error(&k, &e))?;
        Ok(())
    }
}

/// A multipart upload, started at the first full part: a small object is
/// one conditional PUT. Parts go up concurrently in spawned tasks (see the
/// module doc for the plan and the memory bound). The tasks live in
/// `tasks`, whose drop aborts them: an upload dropped without commit or
/// abort stops sending at once, and the abandoned-upload sweep cleans up the
/// server's side.
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    /// Where this upload's record goes (the uploads dir).
    marker: String,
    plan: PartPlan,
    upload_id: Option<String>,
    /// The number the next part gets (1-based).
    next_part: usize,
    /// The part being filled.
    buf: BytesMut,
    /// Parts being uploaded: each task answers its part and its length.
    tasks: JoinSet<Result<(CompletedPart, usize)>>,
    /// Bytes held by the parts in `tasks`.
    in_flight_bytes: usize,
    /// Parts uploaded.
    done: Vec<CompletedPart>,
    /// How many part requests are on the wire, and the most at once.
    gauge: Arc<Gauge>,
    /// A part failed and the upload was thrown away: nothing more to do.
    failed: bool,
}

/// Counts the part requests on the wire: the most at once is logged, so
/// the overlap is observable (and tested).
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// One request on the wire, for as long as it lives.
struct GaugeGuard(Arc<Gauge>);

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        GaugeGuard(self.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upload part `n` of upload `id`. A part upload is idempotent (the same
/// bytes under the same number replace themselves), so unlike the store's
/// other writes it is retried here, a bounded number of times
/// ([`PART_ATTEMPTS`]), on a transient failure, a throttle or a timeout.
async fn upload_part(
    client: Client,
    bucket: String,
    key: String,
    id: String,
    n: usize,
    body: Bytes,
    gauge: Arc<Gauge>,
) -> Result<(CompletedPart, usize)> {
    let what = format!("{key} (part {n})");
    let number = i32::try_from(n).map_err(|_| Error::Internal(format!("{what}: part number out of range")))?;
    let mut pause = PART_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let sent = {
            let _on_the_wire = gauge.enter();
            client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
        };
        let err = match sent {
            Ok(out) => {
                let part = CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build();
                return Ok((part, body.len()));
            }
            Err(e) => store_error(&what, &e),
        };
        let throttled = match &err {
            Error::Store {
                kind: StoreErrorKind::Throttled,
                ..
            } => true,
            Error::Store {
                kind: StoreErrorKind::Transient,
                ..
            } => false,
            _ => return Err(err),
        };
        if attempt >= PART_ATTEMPTS {
            return Err(err);
        }
        tracing::debug!("{err}; retrying (attempt {} of {PART_ATTEMPTS})", attempt + 1);
        tokio::time::sleep(if throttled { pause * 4 } else { pause }).await;
        pause *= 2;
        attempt += 1;
    }
}

impl S3Upload {
    /// The multipart upload's id, creating (and recording) it first.
    async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(|e| store_error(&self.key, &e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| Error::store(StoreErrorKind::Invalid, &self.key, "no upload id"))?
            .to_string();
        self.upload_id = Some(id.clone());
        self.record(&id).await?;
        Ok(id)
    }

    /// Start uploading `part` (full, or the last), then wait until the
    /// plan lets the writer fill the next one.
    async fn start_part(&mut self, part: Bytes) -> Result<()> {
        let id = self.upload_id().await?;
        while !self.plan.may_start(self.tasks.len()) {
            self.join_one().await?;
        }
        let n = self.next_part;
        if n > MAX_PARTS {
            return Err(Error::store(
                StoreErrorKind::Invalid,
                &self.key,
                format!("too large for one S3 upload ({MAX_PARTS} parts)"),
            ));
        }
        self.next_part += 1;
        self.in_flight_bytes += part.len();
        self.tasks.spawn(upload_part(
            self.client.clone(),
            self.bucket.clone(),
            self.key.clone(),
            id,
            n,
            part,
            self.gauge.clone(),
        ));
        tracing::trace!("{}: part {n} started, {} in flight", self.key, self.tasks.len());
        // Parts already done free their room without waiting.
        while let Some(joined) = self.tasks.try_join_next() {
            self.joined(joined)?;
        }
        while !self
            .plan
            .may_fill(self.tasks.len(), self.in_flight_bytes, self.next_part)
        {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Wait for one part in flight to finish.
    async fn join_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(joined) => self.joined(joined),
            None => Ok(()),
        }
    }

    fn joined(
        &mut self,
        joined: std::result::Result<Result<(CompletedPart, usize)>, tokio::task::JoinError>,
    ) -> Result<()> {
        let (part, len) =
            joined.map_err(|e| Error::Internal(format!("{}: a part upload ended abnormally: {e}", self.key)))??;
        self.in_flight_bytes -= len;
        self.done.push(part);
        Ok(())
    }

    /// A part failed (or could not start): stop every part in flight, throw
    /// the upload away, and hand back `err`.
    async fn fail(&mut self, err: Error) -> Error {
        self.failed = true;
        self.stop_parts().await;
        if let Err(e) = self.abort_upload().await {
            tracing::warn!(
                "{}: aborting the failed upload: {e} (the next save or gc retries)",
                self.key
            );
        }
        err
    }

    /// Cancel the parts in flight and wait until their tasks have ended.
    async fn stop_parts(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.in_flight_bytes = 0;
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::store(
                StoreErrorKind::Invalid,
                &self.key,
                "the upload failed earlier and was aborted",
            ));
        }
        Ok(())
    }

    /// Record upload `id` (before its first part), so a crash leaves a trace
    /// the next save can clean up.
    async fn record(&self, id: &str) -> Result<()> {
        record_upload(&self.client, &self.bucket, &self.marker, &self.key, id, None).await
    }

    /// Forget the record of this upload (done or aborted).
    async fn unrecord(&self) {
        if let Some(id) = &self.upload_id {
            forget_upload(&self.client, &self.bucket, &self.marker, id).await;
        }
    }

    async fn exists(&self) -> Result<bool> {
        match head(&self.client, &self.bucket, &self.key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One conditional PUT of the whole (small) object.
    async fn put_whole(&mut self, overwrite: bool) -> Result<()> {
        let body = std::mem::take(&mut self.buf).freeze();
        let put = |conditional: bool| {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(body.clone()));
            if conditional {
                req.if_none_match("*")
            } else {
                req
            }
        };
        match put(!overwrite).send().await.map_err(|e| store_error(&self.key, &e)) {
            Ok(_) => Ok(()),
            Err(Error::Store {
                kind: StoreErrorKind::Precondition,
                ..
            }) => Err(Error::Exists { what: self.key.clone() }),
            // A server that cannot do conditional writes: the check
            // before it stands in for it.
            Err(Error::Store {
                kind: StoreErrorKind::Transient | StoreErrorKind::Invalid,
                ..
            }) if !overwrite => put(false)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| store_error(&self.key, &e)),
            Err(e) => Err(e),
        }
    }

    /// Send the last part, wait for every part, complete the upload.
    async fn complete(&mut self, id: &str, overwrite: bool) -> Result<()> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            if let Err(e) = self.start_part(last).await {
                return Err(self.fail(e).await);
            }
        }
        while !self.tasks.is_empty() {
            if let Err(e) = self.join_one().await {
                return Err(self.fail(e).await);
            }
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .multipart_upload(done);
        if !overwrite {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                tracing::debug!(
                    "{}: {count} parts, at most {} uploading at once",
                    self.key,
                    self.gauge.max.load(Ordering::Relaxed)
                );
                self.unrecord().await;
                Ok(())
            }
            Err(e) => {
                let err = store_error(&self.key, &e);
                let _ = self.abort_upload().await;
                match err {
                    Error::Store {
                        kind: StoreErrorKind::Precondition,
                        ..
                    } => Err(Error::Exists { what: self.key.clone() }),
                    e => Err(e),
                }
            }
        }
    }

    /// Abort the multipart upload, if there is one, and forget its record.
    async fn abort_upload(&mut self) -> Result<()> {
        let Some(id) = self.upload_id.clone() else {
            return Ok(());
        };
        match abort_multipart(&self.client, &self.bucket, &self.key, &id).await {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.unrecord().await;
        self.upload_id = None;
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.check_usable()?;
        while !data.is_empty() {
            let want = self.plan.size(self.next_part);
            if let Some(part) = super::fill_part(&mut self.buf, &mut data, want) {
                if let Err(e) = self.start_part(part).await {
                    return Err(self.fail(e).await);
                }
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        self.check_usable()?;
        // The server may not honour If-None-Match: look first, too.
        if !overwrite && self.exists().await? {
            self.stop_parts().await;
            let _ = self.abort_upload().await;
            return Err(Error::Exists { what: self.key.clone() });
        }
        match self.upload_id.clone() {
            None => self.put_whole(overwrite).await,
            Some(id) => self.complete(&id, overwrite).await,
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.stop_parts().await;
        self.abort_upload().await
    }
}

/// Size and ETag of object `k` (a HEAD).
async fn head(client: &Client, bucket: &str, k: &str) -> Result<(u64, Option<String>)> {
    let out = client
        .head_object()
        .bucket(bucket)
        .key(k)
        .send()
        .await
        .map_err(|e| store_error(k, &e))?;
    Ok((
        out.content_length().unwrap_or(0).max(0) as u64,
        out.e_tag().map(str::to_string),
    ))
}

/// Abort multipart upload `id` of object `k`.
async fn abort_multipart(client: &Client, bucket: &str, k: &str, id: &str) -> Result<()> {
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(k)
        .upload_id(id)
        .send()
        .await
        .map_err(|e| store_error(k, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_ranges() {
        assert_eq!(parse_uri("s3://bkt/a/b/").unwrap(), ("bkt".into(), "a/b/".into()));
        assert_eq!(parse_uri("s3://bkt").unwrap(), ("bkt".into(), String::new()));
        for bad in ["s3://", "s3://B", "s3://bkt/../x", "s3://bkt/a//b", "s3://x"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
        assert_eq!(content_range("bytes 0-99/1000"), Some((0, 100, 1000)));
        assert_eq!(content_range("bytes */1000"), None);
    }

    #[test]
    fn signed_uploads_are_abandoned_at_their_deadline_only() {
        let now = std::time::SystemTime::now();
        let me = std::process::id();
        let rec = |deadline: Option<std::time::SystemTime>, pid: u32, boot_id: Option<String>, age: u64| UploadRecord {
            key: "k".into(),
            upload_id: "id".into(),
            pid,
            start_time: crate::sys::process_start(pid),
            boot_id,
            created: epoch_secs(now) - age,
            deadline: deadline.map(epoch_secs),
        };
        let here = crate::sys::boot_id();
        let hour = std::time::Duration::from_secs(3600);
        // Signed: by the deadline alone, though the recorder (this process) runs.
        assert!(!rec(Some(now + hour), me, here.clone(), 0).abandoned(now));
        assert!(rec(Some(now - hour), me, here.clone(), 0).abandoned(now));
        assert!(!rec(Some(now + hour), me, Some("another machine".into()), 3 * 86_400).abandoned(now));
        // A save's own: by its writer, or its age elsewhere.
        assert!(!rec(None, me, here.clone(), 0).abandoned(now));
        assert!(!rec(None, me, Some("another machine".into()), 3600).abandoned(now));
        assert!(rec(None, me, Some("another machine".into()), 2 * 86_400).abandoned(now));
        // A record written before deadlines existed still reads.
        let old: UploadRecord =
            serde_json::from_str(r#"{"key":"k","upload_id":"i","pid":1,"start_time":null,"boot_id":null,"created":0}"#)
                .expect("old record");
        assert!(old.deadline.is_none() && old.abandoned(now));
    }

    #[test]
    fn part_sizes() {
        assert_eq!(
            (part_size(1), part_size(1000), part_size(1001), part_size(6001)),
            (8 << 20, 8 << 20, 16 << 20, 512 << 20)
        );
        // 10,000 parts carry ~2.4 TiB at defaults; no part is above the
        // memory bound (nor S3's 5 GiB), none but the last below 5 MiB.
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert_eq!(total, 2_552_000 << 20);
        let small = PartPlan {
            first: MIN_PART,
            in_flight: 1,
        };
        for plan in [PartPlan::default(), small] {
            for n in 1..=MAX_PARTS {
                assert!((MIN_PART..=UPLOAD_MEMORY).contains(&plan.size(n)), "{plan:?} part {n}");
            }
        }
    }

    /// Walk all 10,000 parts with no part finishing before the plan makes
    /// the writer wait for it (the worst case): the parts in flight plus
    /// the part being filled never exceed [`UPLOAD_MEMORY`], for any first
    /// part size and in-flight count the environment may ask for.
    #[test]
    fn memory_bound() {
        /// (most bytes held over parts 1..=1000, over all parts, most parts
        /// in flight while parts are 8 MiB).
        fn walk(plan: PartPlan) -> (usize, usize, usize) {
            let mut flight = std::collections::VecDeque::new();
            let (mut first_1000, mut most, mut most_flying) = (0, 0, 0);
            for n in 1..=MAX_PARTS {
                let s = plan.size(n);
                // Part n is full: the parts in flight (summed over their
                // own sizes, which differ where the size doubles) and it.
                let held = flight.iter().sum::<usize>() + s;
                assert!(held <= UPLOAD_MEMORY, "{plan:?}: part {n}: {held} bytes held");
                most = most.max(held);
                if n <= 1000 {
                    first_1000 = first_1000.max(held);
                }
                while !plan.may_start(flight.len()) {
                    flight.pop_front();
                }
                flight.push_back(s);
                assert!(flight.iter().sum::<usize>() <= UPLOAD_MEMORY);
                if n <= 1000 {
                    most_flying = most_flying.max(flight.len());
                }
                while !plan.may_fill(flight.len(), flight.iter().sum(), n + 1) {
                    flight.pop_front();
                }
            }
            (first_1000, most, most_flying)
        }
        // Defaults: 4 in flight + 1 filling of 8 MiB = 40 MiB; 512 MiB at
        // most once parts grow.
        assert_eq!(walk(PartPlan::default()), (40 << 20, 512 << 20, 4));
        for first in [MIN_PART, FIRST_PART, 100 << 20, UPLOAD_MEMORY] {
            for in_flight in 1..=MAX_PARTS_IN_FLIGHT {
                walk(PartPlan { first, in_flight });
            }
        }
    }
}
