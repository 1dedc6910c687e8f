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

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{content_range, ObjectBucket, ObjectId, ObjectReader, ObjectSigner, ObjectSource, Priority, Upload};
use crate::error::{Error, Result, StoreErrorKind};

/// The first parts of a multipart upload.
const FIRST_PART: usize = 8 << 20;

/// The size of part `n` (1-based): 8 MiB for the first 1,000 parts, then
/// doubling every 1,000, so an upload of unknown size fits S3's 10,000
/// parts up to ~8 TB (past S3's 5 TiB object limit) while small uploads
/// use small parts. One part is buffered at a time.
pub fn part_size(n: usize) -> usize {
    FIRST_PART << ((n.saturating_sub(1) / 1000).min(9))
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
}

/// A bucket and key prefix.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
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
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        Ok(S3Store {
            client: Client::from_conf(s3),
            bucket,
            prefix,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
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
            Some((a, b, _)) if a == range.start && b == range.end => {}
            _ => {
                return Err(Error::store(
                    StoreErrorKind::Invalid,
                    &self.key,
                    "the server did not answer the range asked for (a 200 to a ranged GET?)",
                ))
            }
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::store(StoreErrorKind::Transient, &self.key, format!("body cut short: {e}")))?;
        Ok(body.into_bytes())
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
        for marker in self.list_keys(&format!("{}{UPLOADS}", self.prefix)).await? {
            let got = self.client.get_object().bucket(&self.bucket).key(&marker).send().await;
            let Ok(got) = got else { continue };
            let Ok(body) = got.body.collect().await else { continue };
            let Ok(rec) = serde_json::from_slice::<UploadRecord>(&body.into_bytes()) else {
                continue;
            };
            let here = rec.boot_id.is_some() && rec.boot_id == crate::sys::boot_id();
            let dead = if here {
                !crate::sys::same_process_alive(rec.pid, rec.start_time, rec.boot_id.as_deref())
            } else {
                let made = std::time::UNIX_EPOCH + std::time::Duration::from_secs(rec.created);
                now.duration_since(made).is_ok_and(|age| age > FOREIGN_UPLOAD_AGE)
            };
            if !dead {
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
            tracing::info!(
                "{}: aborted an abandoned upload (writer pid {} is gone)",
                rec.key,
                rec.pid
            );
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Every key under the full key prefix `prefix`, all pages.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
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
            out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
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
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&k)
            .presigned(cfg)
            .await
            .map_err(|e| store_error(&k, &e))?;
        Ok(req.uri().to_string())
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
            marker: format!("{}{UPLOADS}", self.prefix),
            upload_id: None,
            parts: Vec::new(),
            buf: Vec::new(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let keys = self.list_keys(&self.key(prefix)).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
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
/// one conditional PUT.
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    /// Where this upload's record goes (the uploads dir).
    marker: String,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    buf: Vec<u8>,
}

impl S3Upload {
    async fn send_part(&mut self, data: Vec<u8>) -> Result<()> {
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
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
                id
            }
        };
        let n = self.parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| store_error(&self.key, &e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    /// Record upload `id` (before its first part), so a crash leaves a trace
    /// the next save can clean up.
    async fn record(&self, id: &str) -> Result<()> {
        let me = std::process::id();
        let rec = UploadRecord {
            key: self.key.clone(),
            upload_id: id.to_string(),
            pid: me,
            start_time: crate::sys::process_start(me),
            boot_id: crate::sys::boot_id(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let body = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        let marker = self.marker_key(id);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&marker)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| store_error(&marker, &e))?;
        Ok(())
    }

    fn marker_key(&self, id: &str) -> String {
        // Upload ids are opaque: keep only what is safe in a key.
        let safe: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        format!("{}{safe}", self.marker)
    }

    /// Forget the record of this upload (done or aborted).
    async fn unrecord(&self) {
        if let Some(id) = &self.upload_id {
            let _ = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.marker_key(id))
                .send()
                .await;
        }
    }

    async fn exists(&self) -> Result<bool> {
        match head(&self.client, &self.bucket, &self.key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        let want = part_size(self.parts.len() + 1);
        if self.buf.len() >= want {
            let rest = self.buf.split_off(want);
            let part = std::mem::replace(&mut self.buf, rest);
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        let key = self.key.clone();
        let exists = move || Error::Exists { what: key.clone() };
        // The server may not honour If-None-Match: look first, too.
        if !overwrite && self.exists().await? {
            let _ = self.abort_upload().await;
            return Err(exists());
        }
        let Some(id) = self.upload_id.clone() else {
            let body = Bytes::from(std::mem::take(&mut self.buf));
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
            let res = match put(!overwrite).send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(store_error(&self.key, &e)),
            };
            return match res {
                Ok(()) => Ok(()),
                Err(Error::Store {
                    kind: StoreErrorKind::Precondition,
                    ..
                }) => Err(exists()),
                // A server that cannot do conditional writes: the check
                // above stands in for it.
                Err(Error::Store {
                    kind: StoreErrorKind::Transient | StoreErrorKind::Invalid,
                    ..
                }) if !overwrite => put(false)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| store_error(&self.key, &e)),
                Err(e) => Err(e),
            };
        };
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send_part(last).await?;
        }
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&id)
            .multipart_upload(done);
        if !overwrite {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
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
                    } => Err(exists()),
                    e => Err(e),
                }
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.abort_upload().await
    }
}

impl S3Upload {
    async fn abort_upload(&self) -> Result<()> {
        let Some(id) = &self.upload_id else {
            return Ok(());
        };
        abort_multipart(&self.client, &self.bucket, &self.key, id).await?;
        self.unrecord().await;
        Ok(())
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
        // Part sizes: 10,000 parts carry more than S3's largest object, and
        // no part is above S3's 5 GiB limit.
        let total: u64 = (1..=10_000).map(|n| part_size(n) as u64).sum();
        assert!(total > 5 << 40, "{total}");
        assert!(part_size(10_000) as u64 <= 5 << 30);
        assert_eq!(
            (part_size(1), part_size(1000), part_size(1001)),
            (8 << 20, 8 << 20, 16 << 20)
        );
    }
}
