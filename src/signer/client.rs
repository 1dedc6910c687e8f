//! A client of the signer's API (pod mode): what `--signer URL
//! --token-file F` talks to.
//!
//! The token is read once from its file and kept in memory; it is sent as
//! `Authorization: Bearer …` and appears in no message or log line. The
//! signer's URL may be https (rustls, the system's roots) or, for a signer
//! on the same node or in tests, http. Every answer is bounded before it
//! is parsed, and a failure becomes one of the crate's errors by the
//! signer's status and code, so the store layer retries, renews or gives
//! up from the kind alone.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{
    AbortRequest, Aborted, CompleteRequest, Completed, Deleted, ErrorBody, PartUrls, PartsRequest, SnapshotList,
    SpecRequest, UploadCreated, UploadRequest, VERSION,
};
use crate::error::{Error, Result, StoreErrorKind};
use crate::spec::MountSpec;
use crate::store::http;

/// How a store URI names a signer: `signer+https://HOST[:PORT][/PATH]`.
pub const SCHEME: &str = "signer+";

/// The environment variable naming the token file.
pub const TOKEN_FILE_ENV: &str = "LAZYSNAP_TOKEN_FILE";

/// Largest token file read (a token is at most [`super::tokens::MAX_TOKEN`]).
const MAX_TOKEN_FILE: u64 = 64 << 10;

/// Largest answer read from the signer (a spec of 64 layers with long
/// URLs, or 100 part URLs, is well under this).
const MAX_ANSWER: usize = 8 << 20;

/// A connection to one signer, with one token.
#[derive(Clone)]
pub struct SignerClient {
    http: reqwest::Client,
    base: reqwest::Url,
    token: std::sync::Arc<str>,
    what: String,
}

impl std::fmt::Debug for SignerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerClient").field("signer", &self.what).finish()
    }
}

/// Read a token file: one token (surrounding whitespace ignored), printable
/// ASCII, at most [`super::tokens::MAX_TOKEN`] bytes. Errors name the file,
/// never its content.
pub fn read_token(path: &Path) -> Result<String> {
    let what = format!("token file {}", path.display());
    let data = crate::sys::read_small_file(path, MAX_TOKEN_FILE, &what)?;
    let bad = |why: &str| Error::Invalid {
        what: what.clone(),
        why: why.to_string(),
    };
    let text = std::str::from_utf8(&data).map_err(|_| bad("not text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("empty"));
    }
    if token.len() > super::tokens::MAX_TOKEN {
        return Err(bad("the token is too long"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("a token is one word of printable ASCII"));
    }
    Ok(token.to_string())
}

impl SignerClient {
    /// A client of the signer at `url` (`https://…` or `http://…`),
    /// presenting the token read from `token_file`.
    pub fn connect(url: &str, token_file: &Path) -> Result<SignerClient> {
        let base = http::parse_url(url, "signer")?;
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(Error::Usage(format!(
                "signer {}: give the signer's base URL, with no query, fragment or user",
                http::shown(&base)
            )));
        }
        let token = read_token(token_file)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("starting the HTTP client: {}", e.without_url())))?;
        let what = format!("signer {}", http::shown(&base));
        Ok(SignerClient {
            http,
            base,
            token: token.into(),
            what,
        })
    }

    /// The signer, as messages name it (`signer https://host:port/`).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// `POST /v1/spec`: a mount spec of `name`'s chain.
    pub async fn spec(&self, name: &str) -> Result<MountSpec> {
        let req = SpecRequest {
            name: name.to_string(),
            expires_secs: None,
        };
        let body = self.call(Method::POST, "spec", Some(&req), name).await?;
        MountSpec::parse(&body, &format!("the spec {} answered for {name}", self.what))
    }

    /// `GET /v1/snapshots`.
    pub async fn snapshots(&self) -> Result<SnapshotList> {
        self.json(Method::GET, "snapshots", None::<&()>, "listing").await
    }

    /// `POST /v1/uploads`.
    pub async fn create_upload(&self, req: &UploadRequest) -> Result<UploadCreated> {
        self.json(Method::POST, "uploads", Some(req), &req.name).await
    }

    /// `POST /v1/uploads/parts`.
    pub async fn part_urls(&self, req: &PartsRequest) -> Result<PartUrls> {
        self.json(Method::POST, "uploads/parts", Some(req), &req.name).await
    }

    /// `POST /v1/uploads/complete`.
    pub async fn complete(&self, req: &CompleteRequest) -> Result<Completed> {
        self.json(Method::POST, "uploads/complete", Some(req), &req.name).await
    }

    /// `POST /v1/uploads/abort`.
    pub async fn abort(&self, req: &AbortRequest) -> Result<Aborted> {
        self.json(Method::POST, "uploads/abort", Some(req), &req.name).await
    }

    /// `DELETE /v1/snapshots/{name}`.
    pub async fn delete(&self, name: &str) -> Result<Deleted> {
        let route = format!("snapshots/{}", percent_encode(name));
        self.json(Method::DELETE, &route, None::<&()>, name).await
    }

    async fn json<Req: Serialize, Ans: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Option<&Req>,
        about: &str,
    ) -> Result<Ans> {
        let data = self.call(method, route, body, about).await?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::store(
                StoreErrorKind::Invalid,
                format!("{} (/{VERSION}/{route})", self.what),
                format!("an answer that is not what the API says: {e}"),
            )
        })
    }

    /// One call: the answer's body on a 2xx, else the signer's error as
    /// one of ours (see [`signer_error`]).
    async fn call<Req: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: Option<&Req>,
        about: &str,
    ) -> Result<Bytes> {
        let url = self
            .base
            .join(&format!("{VERSION}/{route}"))
            .map_err(|e| Error::Usage(format!("{}: bad route {route}: {e}", self.what)))?;
        let what = format!("{} ({about})", self.what);
        let mut req = self.http.request(method, url).bearer_auth(&*self.token);
        if let Some(b) = body {
            let json = serde_json::to_vec(b).map_err(|e| Error::Internal(e.to_string()))?;
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(json);
        }
        let mut resp = req.send().await.map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let mut data = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if data.len() + c.len() > MAX_ANSWER {
                        return Err(Error::store(
                            StoreErrorKind::Invalid,
                            what,
                            format!("an answer larger than {MAX_ANSWER} bytes"),
                        ));
                    }
                    data.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(transport(&what, e)),
            }
        }
        if status.is_success() {
            return Ok(Bytes::from(data));
        }
        Err(signer_error(&what, status, &data))
    }
}

/// A failure to reach the signer: worth retrying.
fn transport(what: &str, e: reqwest::Error) -> Error {
    Error::store(StoreErrorKind::Transient, what, http::without_url(e))
}

/// The signer's error answer as one of ours, by status and code.
fn signer_error(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (
            b.error.code,
            b.error.message.chars().filter(|c| !c.is_control()).take(300).collect(),
        ),
        Err(_) => (String::new(), status.to_string()),
    };
    let store = |kind| Error::store(kind, what, format!("{message} ({} {code})", status.as_u16()));
    match (status.as_u16(), code.as_str()) {
        (400 | 413, _) => Error::Usage(format!("{what}: {message}")),
        (401, _) => Error::store(
            StoreErrorKind::Denied,
            what,
            "the signer does not know this token (401): check --token-file / LAZYSNAP_TOKEN_FILE",
        ),
        (403, _) => store(StoreErrorKind::Denied),
        (404, "not_found") => {
            let said = message.strip_suffix(": not found").unwrap_or(&message);
            Error::not_found(format!("{what}: {said}"))
        }
        (409, "exists") => Error::Exists { what: what.to_string() },
        (409, _) => Error::refused(what, message),
        (422, _) => Error::Invalid {
            what: what.to_string(),
            why: message,
        },
        (429 | 503, _) => store(StoreErrorKind::Throttled),
        (500..=599, _) => store(StoreErrorKind::Transient),
        _ => store(StoreErrorKind::Invalid),
    }
}

/// A snapshot name as one path segment (`/` kept as `%2F`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked_and_never_quoted() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("token");
        std::fs::write(&f, "  s3cr3t-token\n").expect("write");
        assert_eq!(read_token(&f).expect("token"), "s3cr3t-token");
        for bad in ["", "\n", "two words", "tok\u{7}en", "é"] {
            std::fs::write(&f, bad).expect("write");
            let e = read_token(&f).expect_err(bad);
            assert!(e.to_string().contains("token file"), "{e}");
            if !bad.trim().is_empty() {
                assert!(!e.to_string().contains(bad.trim()), "{e}");
            }
        }
        assert!(matches!(
            read_token(&dir.path().join("none")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn errors_map_by_status_and_code() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).into_bytes();
        let kind = |status: u16, code: &str| match signer_error(
            "s",
            StatusCode::from_u16(status).expect("status"),
            &body(code),
        ) {
            Error::Store { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind(403, "outside_prefix"), Some(StoreErrorKind::Denied));
        assert_eq!(kind(401, "unauthorized"), Some(StoreErrorKind::Denied));
        assert_eq!(kind(503, "unavailable"), Some(StoreErrorKind::Throttled));
        assert_eq!(kind(502, "store"), Some(StoreErrorKind::Transient));
        let e = signer_error("s", StatusCode::NOT_FOUND, &body("not_found"));
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = signer_error("s", StatusCode::CONFLICT, &body("exists"));
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        let e = signer_error("s", StatusCode::BAD_REQUEST, &body("bad_name"));
        assert_eq!(e.exit_code(), 2);
        assert_eq!(percent_encode("org/a b"), "org%2Fa%20b");
    }
}
