//! Objects behind HTTPS URLs (presigned GETs): ranged reads with no
//! credential of our own.
//!
//! A URL is a secret (its query carries the signature), so it never
//! appears in a message or a log line: everything printable goes through
//! [`shown`], which keeps scheme, host and path only, and every HTTP
//! client error is stripped of its URL before it is formatted.
//!
//! Every ranged answer is checked: it must be a 206 for exactly the range
//! asked for, of an object of the size opened, with the ETag opened (the
//! request carries `If-Match` too, but some servers ignore it). A 200 to a
//! ranged GET is an error, not data.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_MATCH, RANGE};
use reqwest::StatusCode;

use super::{content_range, ObjectId, ObjectReader, Priority, Sink};
use crate::error::{Error, Result, StoreErrorKind};

/// Longest URL accepted (presigned URLs with session tokens run to ~2 KiB).
pub const MAX_URL: usize = 16 * 1024;

/// Bytes of an error answer's body read for its message.
const ERROR_BODY: usize = 4096;

/// One HTTP client for the process: connections are pooled across layers.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Internal(format!("starting the HTTP client: {}", e.without_url())))
}

/// An HTTP client error as one line, its causes included and its URL
/// (a secret, for a presigned one) left out.
pub fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    why
}

/// Check a URL given for an object: http or https, bounded, parseable.
pub fn parse_url(url: &str, what: &str) -> Result<reqwest::Url> {
    if url.len() > MAX_URL {
        return Err(Error::Usage(format!("{what}: URL longer than {MAX_URL} bytes")));
    }
    let u = reqwest::Url::parse(url).map_err(|e| Error::Usage(format!("{what}: bad URL: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(Error::Usage(format!(
            "{what}: URLs must be https:// (or http://) with a host, not {}",
            shown(&u)
        )));
    }
    Ok(u)
}

/// What may be printed of a URL: scheme, host, port and path; never the
/// query (signature, credential, token) or user info.
pub fn shown(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
        None => format!("{}://{host}{}", u.scheme(), u.path()),
    }
}

/// When a presigned URL stops working, as far as the URL itself says:
/// SigV4 (`X-Amz-Date` + `X-Amz-Expires`), Google's V4 (`X-Goog-Date` +
/// `X-Goog-Expires`), or an absolute `Expires` in seconds (SigV2, CDNs).
pub fn url_expiry(u: &reqwest::Url) -> Option<SystemTime> {
    let q = |name: &str| {
        u.query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    };
    let at = |secs: i64| {
        u64::try_from(secs)
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    };
    for (date, expires) in [("X-Amz-Date", "X-Amz-Expires"), ("X-Goog-Date", "X-Goog-Expires")] {
        if let (Some(d), Some(e)) = (q(date), q(expires)) {
            let start = crate::format::time::parse_utc(&d)?;
            let secs: i64 = e.parse().ok()?;
            return at(start.checked_add(secs)?);
        }
    }
    at(q("Expires")?.parse().ok()?)
}

/// A time as RFC 3339 UTC, for messages.
pub fn when(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    crate::format::time::rfc3339(secs, 0)
}

/// Which bytes to ask for.
#[derive(Debug, Clone)]
pub enum Want {
    /// Exactly these bytes of an object of this size.
    Exact(Range<u64>, u64),
    /// The last `n` bytes (fewer if the object is shorter).
    Suffix(u64),
}

/// A ranged answer, checked.
#[derive(Debug)]
pub struct Answer {
    /// The bytes.
    pub body: Bytes,
    /// Where they start in the object.
    pub start: u64,
    /// The object's size.
    pub total: u64,
    /// The object's ETag, if the server sent one.
    pub etag: Option<String>,
}

/// One object behind a URL: where it is, what it is, until when it works.
#[derive(Clone)]
pub struct UrlObject {
    /// Shared HTTP client.
    pub client: reqwest::Client,
    /// The URL (secret: never printed; see [`shown`]).
    pub url: reqwest::Url,
    /// What errors name (a layer and the URL's printable part).
    pub what: String,
    /// When the URL stops working, if known.
    pub expires: Option<SystemTime>,
}

impl UrlObject {
    /// Ranged GET of `want`, with `If-Match: etag` when given; the answer
    /// is checked against the range and (when given) the ETag.
    pub async fn get(&self, want: &Want, etag: Option<&str>) -> Result<Answer> {
        let cap = match want {
            Want::Exact(r, _) => r.end - r.start,
            Want::Suffix(n) => *n,
        };
        let mut body = BytesMut::with_capacity(usize::try_from(cap.min(64 << 20)).unwrap_or(0));
        let head = self
            .get_into(want, etag, &mut |piece| {
                body.extend_from_slice(&piece);
                Ok(())
            })
            .await?;
        Ok(Answer {
            body: body.freeze(),
            start: head.start,
            total: head.total,
            etag: head.etag,
        })
    }

    /// [`UrlObject::get`], handing the body to `sink` piece by piece as it
    /// arrives (an error may come after some pieces); the answer's
    /// `body` is left empty.
    pub async fn get_into(&self, want: &Want, etag: Option<&str>, sink: &mut Sink<'_>) -> Result<Answer> {
        let header = match want {
            Want::Exact(r, size) if r.is_empty() => {
                return Ok(Answer {
                    body: Bytes::new(),
                    start: r.start,
                    total: *size,
                    etag: etag.map(str::to_string),
                })
            }
            Want::Exact(r, _) => format!("bytes={}-{}", r.start, r.end - 1),
            Want::Suffix(n) => format!("bytes=-{}", (*n).max(1)),
        };
        let mut req = self.client.get(self.url.clone()).header(RANGE, header);
        if let Some(e) = etag {
            req = req.header(IF_MATCH, e);
        }
        let mut resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status != StatusCode::PARTIAL_CONTENT {
            let body = self.error_body(&mut resp).await;
            return Err(self.status_error(status, resp.headers(), &body));
        }
        let h = resp.headers();
        let got_etag = h.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let (Some(want_etag), Some(got)) = (etag, &got_etag) {
            if got != want_etag {
                return Err(self.err(
                    StoreErrorKind::Precondition,
                    "the object was replaced: its ETag is not the one expected",
                ));
            }
        }
        let Some((a, b, total)) = h
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range)
        else {
            return Err(self.err(StoreErrorKind::Invalid, "a 206 answer without a valid Content-Range"));
        };
        let ok = match want {
            Want::Exact(r, size) => a == r.start && b == r.end && total == *size,
            Want::Suffix(n) => b == total && b - a == (*n).max(1).min(total),
        };
        if !ok || a >= b {
            return Err(self.err(
                StoreErrorKind::Invalid,
                format!("the server answered bytes {a}-{b} of {total}, not the range asked for"),
            ));
        }
        let len = b - a;
        let mut got = 0u64;
        while let Some(piece) = resp.chunk().await.map_err(|e| self.transport(e))? {
            got += piece.len() as u64;
            if got > len {
                return Err(self.err(StoreErrorKind::Invalid, "the answer is longer than its range"));
            }
            sink(piece)?;
        }
        if got < len {
            return Err(self.err(
                StoreErrorKind::Transient,
                format!("body cut short ({got} of {len} bytes)"),
            ));
        }
        Ok(Answer {
            body: Bytes::new(),
            start: a,
            total,
            etag: got_etag,
        })
    }

    /// A streaming GET of the whole object (for archives read once, in
    /// order): the response, checked to be a 200.
    pub async fn stream(&self) -> Result<reqwest::Response> {
        let mut resp = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = self.error_body(&mut resp).await;
            return Err(self.status_error(status, resp.headers(), &body));
        }
        Ok(resp)
    }

    /// An error of `kind` naming this object.
    pub fn err(&self, kind: StoreErrorKind, why: impl Into<String>) -> Error {
        Error::store(kind, &self.what, why)
    }

    /// A failure to talk to the server at all: worth retrying. The
    /// client's error is stripped of its URL first.
    pub fn transport(&self, e: reqwest::Error) -> Error {
        self.err(StoreErrorKind::Transient, without_url(e))
    }

    /// The error for an answer that is not a success (read and
    /// classified by status; see [`UrlObject::get`]).
    pub async fn answer_error(&self, mut resp: reqwest::Response) -> Error {
        let status = resp.status();
        let body = self.error_body(&mut resp).await;
        self.status_error(status, resp.headers(), &body)
    }

    async fn error_body(&self, resp: &mut reqwest::Response) -> String {
        let mut body = Vec::new();
        while body.len() < ERROR_BODY {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(ERROR_BODY - body.len())]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The error for a non-206 answer, classified by status (and, for the
    /// refusals, by whether the URL has expired).
    fn status_error(&self, status: StatusCode, headers: &HeaderMap, body: &str) -> Error {
        let code = xml_field(body, "Code");
        let message = xml_field(body, "Message");
        let said = match (&code, &message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => status.to_string(),
        };
        let expired_by_clock = self.expires.is_some_and(|t| SystemTime::now() >= t);
        let says_expired = body.contains("xpired");
        let kind = match status.as_u16() {
            200 => {
                return self.err(
                    StoreErrorKind::Invalid,
                    "the server answered 200 (the whole object) to a ranged GET: it does not serve ranges",
                )
            }
            404 => return Error::not_found(&self.what),
            400 | 401 | 403 if expired_by_clock || says_expired => {
                let at = self.expires.map(|t| format!(" at {}", when(t))).unwrap_or_default();
                return self.err(StoreErrorKind::Expired, format!("the URL expired{at} ({said})"));
            }
            401 | 403 => StoreErrorKind::Denied,
            412 => {
                return self.err(
                    StoreErrorKind::Precondition,
                    "the object was replaced: its ETag is not the one expected (412 Precondition Failed)",
                )
            }
            429 | 503 => StoreErrorKind::Throttled,
            500..=599 => StoreErrorKind::Transient,
            _ => StoreErrorKind::Invalid,
        };
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (retry after {v})"))
            .unwrap_or_default();
        self.err(kind, format!("{said}{retry_after}"))
    }
}

/// The text of `<name>…</name>` in an S3-style XML error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    let v: String = body[start..end].chars().filter(|c| !c.is_control()).take(200).collect();
    Some(v)
}

/// A handle on an object read through a URL: identity fixed at open.
pub struct UrlReader {
    /// Where it is.
    pub object: UrlObject,
    /// What it is.
    pub id: ObjectId,
}

#[async_trait]
impl ObjectReader for UrlReader {
    fn id(&self) -> &ObjectId {
        &self.id
    }

    async fn get_range(&self, range: Range<u64>, _prio: Priority) -> Result<Bytes> {
        read_range(&self.object, &self.id, range).await
    }

    async fn stream_range(&self, range: Range<u64>, _prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        stream_range(&self.object, &self.id, range, sink).await
    }

    fn expires(&self) -> Option<SystemTime> {
        self.object.expires
    }
}

/// Bytes `range` of the object `id` behind `object` (one ranged GET, held
/// to its size and ETag).
pub async fn read_range(object: &UrlObject, id: &ObjectId, range: Range<u64>) -> Result<Bytes> {
    Ok(object.get(&exactly(object, id, range)?, id.etag.as_deref()).await?.body)
}

/// [`read_range`], handing the bytes to `sink` as they arrive.
pub async fn stream_range(object: &UrlObject, id: &ObjectId, range: Range<u64>, sink: &mut Sink<'_>) -> Result<()> {
    object
        .get_into(&exactly(object, id, range)?, id.etag.as_deref(), sink)
        .await
        .map(drop)
}

/// What to ask for to read bytes `range` of the object `id`.
fn exactly(object: &UrlObject, id: &ObjectId, range: Range<u64>) -> Result<Want> {
    if range.end > id.size {
        return Err(object.err(
            StoreErrorKind::Invalid,
            format!("bytes {}-{} are past the end ({})", range.start, range.end, id.size),
        ));
    }
    Ok(Want::Exact(range, id.size))
}

/// Open the object behind `object`: a handle fixed to its size and ETag,
/// and the bytes `want` asked for (one request). When `id` is known (a
/// spec says it), the answer must match it.
pub async fn open(object: UrlObject, want: Want, id: Option<ObjectId>) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
    let etag = id.as_ref().and_then(|i| i.etag.clone());
    let suffix = match want {
        Want::Suffix(n) if n > 1 => Some(n),
        _ => None,
    };
    let answer = match object.get(&want, etag.as_deref()).await {
        // Servers that refuse a suffix longer than the object (416, or a
        // 500 from some): learn the size from one byte, then read it all.
        Err(Error::Store {
            kind: StoreErrorKind::Invalid | StoreErrorKind::Transient,
            ..
        }) if suffix.is_some() => {
            let probe = object.get(&Want::Suffix(1), None).await?;
            let start = probe.total.saturating_sub(suffix.unwrap_or(1));
            object
                .get(&Want::Exact(start..probe.total, probe.total), probe.etag.as_deref())
                .await?
        }
        r => r?,
    };
    if let Some(id) = &id {
        if answer.total != id.size {
            return Err(object.err(
                StoreErrorKind::Precondition,
                format!(
                    "the object is {} bytes, not the {} its spec says",
                    answer.total, id.size
                ),
            ));
        }
    }
    let id = ObjectId {
        size: answer.total,
        etag: answer.etag.or(etag),
    };
    Ok((Arc::new(UrlReader { object, id }), answer.body))
}

/// Times a cut stream is resumed (with a ranged GET from where it broke).
const RESUMES: u32 = 3;

/// The whole object behind a URL as a blocking [`std::io::Read`], fetched
/// by a task on `rt` a few chunks ahead of the reader. A stream that stalls
/// longer than `stall` is cut; a cut stream is resumed from where it broke
/// (a ranged GET held to the first answer's ETag) up to [`RESUMES`] times.
/// Returns the reader and the object's size, if the server said.
pub fn body_reader(
    rt: &tokio::runtime::Handle,
    object: UrlObject,
    stall: Duration,
) -> Result<(BodyReader, Option<u64>)> {
    let first = rt.block_on(async { tokio::time::timeout(stall, object.stream()).await });
    let resp = match first {
        Ok(r) => r?,
        Err(_) => return Err(object.err(StoreErrorKind::Transient, format!("no answer in {}s", stall.as_secs()))),
    };
    let size = resp.content_length();
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(16);
    rt.spawn(async move {
        let mut resp = resp;
        let mut got = 0u64;
        let mut resumes = 0;
        loop {
            let err = match tokio::time::timeout(stall, resp.chunk()).await {
                Ok(Ok(Some(c))) => {
                    got += c.len() as u64;
                    if tx.send(Ok(c)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Ok(None)) if size.is_none_or(|s| got == s) => return,
                Ok(Ok(None)) => object.err(StoreErrorKind::Transient, "body cut short"),
                Ok(Err(e)) => object.transport(e),
                Err(_) => object.err(StoreErrorKind::Transient, format!("stalled for {}s", stall.as_secs())),
            };
            // Resume where it broke, from the same object only.
            let resumed = match (size, &etag) {
                (Some(total), Some(tag)) if resumes < RESUMES => {
                    resumes += 1;
                    tracing::debug!("{err}; resuming at byte {got} ({resumes}/{RESUMES})");
                    let mut req = object
                        .client
                        .get(object.url.clone())
                        .header(RANGE, format!("bytes={got}-"));
                    req = req.header(IF_MATCH, tag.as_str());
                    match tokio::time::timeout(stall, req.send()).await {
                        Ok(Ok(r))
                            if r.status() == StatusCode::PARTIAL_CONTENT
                                && r.headers()
                                    .get(CONTENT_RANGE)
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(content_range)
                                    == Some((got, total, total)) =>
                        {
                            Some(r)
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match resumed {
                Some(r) => resp = r,
                None => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        }
    });
    Ok((BodyReader { rx, cur: Bytes::new() }, size))
}

/// See [`body_reader`]. Use from a thread outside the runtime.
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    cur: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets_and_expiry_is_read() {
        let u = parse_url(
            "https://user:pw@b.s3.amazonaws.com:8443/k/x.tar.zst?X-Amz-Date=20261205T100000Z&X-Amz-Expires=900&X-Amz-Signature=abc",
            "t",
        )
        .expect("url");
        assert_eq!(shown(&u), "https://b.s3.amazonaws.com:8443/k/x.tar.zst");
        let t = url_expiry(&u).expect("expiry");
        assert_eq!(when(t), "2026-12-05T10:15:00Z");
        let g = parse_url("https://h/o?X-Goog-Date=20261205T100000Z&X-Goog-Expires=60", "t").expect("url");
        assert_eq!(when(url_expiry(&g).expect("goog")), "2026-12-05T10:01:00Z");
        let v2 = parse_url("https://h/o?Expires=1796184148&Signature=x", "t").expect("url");
        assert_eq!(when(url_expiry(&v2).expect("v2")), "2026-12-02T04:02:28Z");
        assert!(url_expiry(&parse_url("https://h/o", "t").expect("url")).is_none());
        for bad in [
            "ftp://h/o",
            "file:///etc/passwd",
            "not a url",
            "https://",
            "data:text/plain,x",
        ] {
            assert!(parse_url(bad, "t").is_err(), "{bad}");
        }
        assert!(parse_url(&format!("https://h/{}", "a".repeat(MAX_URL)), "t").is_err());
    }

    #[test]
    fn s3_error_bodies_are_read() {
        let body =
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("Request has expired"));
        assert_eq!(xml_field("no xml", "Code"), None);
    }
}
