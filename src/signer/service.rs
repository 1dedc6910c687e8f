//! The signer's core: authorise a token, check the names it asks about,
//! then ask the store. Plain async functions from the request types of
//! [`super::api`] to their answers or an [`ApiError`], with no HTTP in
//! sight ([`super::http`] adapts them).
//!
//! Order of checks, in every call: the token (401), its rights (403), the
//! name and the prefix (400, 403), the request's own fields (400, 413);
//! only then the store. So a request that breaks any rule costs the store
//! nothing, and the store's answers never reach a caller who could not
//! have asked.

use std::time::{Duration, SystemTime};

use super::api::{
    self, AbortRequest, Aborted, CompleteRequest, Completed, Deleted, PartUrl, PartUrls, PartsRequest, SnapshotInfo,
    SnapshotList, SpecRequest, UploadCreated, UploadRequest,
};
use super::tokens::{Grant, Tokens};
use crate::error::{Error, StoreErrorKind};
use crate::format::{hex, DIGEST_LEN};
use crate::snapshot::Snapshot;
use crate::spec::MountSpec;
use crate::store::{snapshot_key, Store};

/// The longest life of any URL the signer hands out.
pub const MAX_EXPIRY: Duration = Duration::from_secs(3600);

/// The life of URLs when a request does not ask, by default.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// How the signer answers.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// URL life when a request does not ask (1 s to [`MAX_EXPIRY`]).
    pub default_expiry: Duration,
    /// The longest URL life a request may ask for (clamped to it).
    pub max_expiry: Duration,
    /// Part size of uploads whose size hint needs no more
    /// ([`api::MIN_PART_SIZE`] to [`api::MAX_PART_SIZE`]).
    pub part_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_expiry: DEFAULT_EXPIRY,
            max_expiry: DEFAULT_EXPIRY,
            part_size: api::DEFAULT_PART_SIZE,
        }
    }
}

impl Config {
    /// URLs live `expiry` by default and at most (`--expires`).
    pub fn with_expiry(expiry: Duration, part_size: u64) -> Result<Config, Error> {
        if expiry.is_zero() || expiry > MAX_EXPIRY {
            return Err(Error::Usage(format!(
                "--expires {}s: URLs the signer hands out live 1 s to 1 h",
                expiry.as_secs()
            )));
        }
        if !(api::MIN_PART_SIZE..=api::MAX_PART_SIZE).contains(&part_size) {
            return Err(Error::Usage(format!(
                "--part-size {part_size}: from {} to {} bytes (5 MiB to 64 MiB)",
                api::MIN_PART_SIZE,
                api::MAX_PART_SIZE
            )));
        }
        Ok(Config {
            default_expiry: expiry,
            max_expiry: expiry,
            part_size,
        })
    }
}

/// A refusal or failure as the API reports it (see [`api`] for the codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// One line for a person.
    pub message: String,
}

impl ApiError {
    /// An error of `status` and `code`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    /// The JSON body.
    pub fn body(&self) -> api::ErrorBody {
        api::ErrorBody {
            error: api::ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// Why a signer refuses to delete a snapshot that a diff needs, and what
/// the pod can do (pod mode's `rm` says the same before asking).
pub const NEEDED_ADVICE: &str = "a signer never deletes what another snapshot's chain needs: delete those diffs first";

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let (status, code) = match &e {
            Error::Usage(_) => (400, "bad_request"),
            Error::NotFound { .. } => (404, "not_found"),
            Error::Exists { .. } => (409, "exists"),
            Error::Refused { .. } => (409, "refused"),
            Error::Corrupt { .. } | Error::Invalid { .. } | Error::Unsupported { .. } => (422, "corrupt"),
            Error::Store { kind, .. } => match kind {
                StoreErrorKind::Throttled | StoreErrorKind::Transient => (503, "unavailable"),
                _ => (502, "store"),
            },
            Error::Timeout { .. } => (504, "timeout"),
            Error::Io { .. } | Error::InUse { .. } | Error::Internal(_) | Error::Daemon(_) => (500, "internal"),
        };
        // A refusal's message is its reason: the client names what it asked
        // about (it would otherwise say "refused" twice).
        let message = match e {
            Error::Refused { why, .. } => why,
            e => e.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

/// What a call answers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// Check `name` and that it lies inside the grant's prefix, on whole
/// components; answer its object key. Touches nothing but its arguments.
pub fn scoped_key(grant: &Grant, name: &str) -> ApiResult<String> {
    let key = snapshot_key(name).map_err(|e| ApiError::new(400, "bad_name", e.to_string()))?;
    // The prefix ends with '/', so a match is on whole components:
    // `org/repo/` never admits `org/repo-evil/x`.
    if !name.starts_with(&grant.prefix) {
        return Err(ApiError::new(
            403,
            "outside_prefix",
            format!(
                "snapshot {}: outside this token's prefix {}",
                crate::error::shorten(format!("{name:?}")),
                grant.prefix
            ),
        ));
    }
    Ok(key)
}

fn writable(grant: &Grant) -> ApiResult<()> {
    if grant.rights.can_write() {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "forbidden",
            format!("this token may only read under {}", grant.prefix),
        ))
    }
}

/// The part size of an upload of about `size_hint` bytes: `base`, raised
/// in whole MiB until [`api::MAX_PARTS`] parts hold the hint.
pub fn part_size(base: u64, size_hint: Option<u64>) -> ApiResult<u64> {
    let Some(hint) = size_hint else {
        return Ok(base);
    };
    let need = hint.div_ceil(u64::from(api::MAX_PARTS)).next_multiple_of(1 << 20);
    let size = base.max(need);
    if size > api::MAX_PART_SIZE {
        return Err(ApiError::new(
            413,
            "too_large",
            format!(
                "size_hint {hint}: more than one upload holds ({} parts of {} MiB)",
                api::MAX_PARTS,
                api::MAX_PART_SIZE >> 20
            ),
        ));
    }
    Ok(size)
}

fn check_digest(d: &str) -> ApiResult<String> {
    if d.len() != 2 * DIGEST_LEN || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "index_digest: {} hex digits expected",
            2 * DIGEST_LEN
        )));
    }
    Ok(d.to_ascii_lowercase())
}

/// The parts of a complete, checked: 1 to [`api::MAX_PARTS`] of them,
/// numbers in range and none twice, ETags printable; sorted by number.
fn check_parts(parts: &[api::CompletedPart]) -> ApiResult<Vec<(u32, String)>> {
    if parts.is_empty() || parts.len() > api::MAX_PARTS as usize {
        return Err(ApiError::bad_request(format!(
            "parts: 1 to {} expected",
            api::MAX_PARTS
        )));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        if !(1..=api::MAX_PARTS).contains(&p.part) {
            return Err(ApiError::bad_request(format!(
                "part {}: parts are numbered 1 to {}",
                p.part,
                api::MAX_PARTS
            )));
        }
        if p.etag.is_empty() || p.etag.len() > 256 || p.etag.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!("part {}: bad etag", p.part)));
        }
        out.push((p.part, p.etag.clone()));
    }
    out.sort();
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(ApiError::bad_request("parts: a part number appears twice"));
    }
    Ok(out)
}

fn check_upload_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 1024 || id.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("bad upload_id"));
    }
    Ok(())
}

/// The signer: a store it holds credentials for, the tokens, its limits.
pub struct Signer {
    store: Store,
    tokens: Tokens,
    config: Config,
}

impl Signer {
    /// A signer over `store` (an s3:// store: it must presign).
    pub fn new(store: Store, tokens: Tokens, config: Config) -> Signer {
        Signer { store, tokens, config }
    }

    /// The tokens (to reload them).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The store's multipart signer (a signer runs on an s3:// store only:
    /// without one, that is the signer's fault, not the caller's).
    fn multipart(&self) -> ApiResult<crate::store::TimedMultipart<'_>> {
        self.store
            .multipart()
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))
    }

    /// What the bearer token grants; 401 if nothing (or no token).
    pub fn authorise(&self, token: Option<&str>) -> ApiResult<Grant> {
        token
            .and_then(|t| self.tokens.lookup(t))
            .ok_or_else(|| ApiError::new(401, "unauthorized", "a valid bearer token is required"))
    }

    /// The life of URLs a request asks for: the default if it does not
    /// ask, clamped to the maximum; 0 is refused.
    fn expiry(&self, asked: Option<u64>) -> ApiResult<Duration> {
        match asked {
            None => Ok(self.config.default_expiry),
            Some(0) => Err(ApiError::bad_request("expires_secs: at least 1")),
            Some(s) => Ok(Duration::from_secs(s).min(self.config.max_expiry)),
        }
    }

    /// `POST /v1/spec`.
    pub async fn spec(&self, grant: &Grant, req: &SpecRequest) -> ApiResult<MountSpec> {
        scoped_key(grant, &req.name)?;
        let expires = self.expiry(req.expires_secs)?;
        let mut spec = MountSpec::presign(&self.store, &req.name, expires).await?;
        spec.expires_in_secs = Some(expires.as_secs());
        Ok(spec)
    }

    /// `GET /v1/snapshots`.
    pub async fn list(&self, grant: &Grant) -> ApiResult<SnapshotList> {
        let named = self.store.list_snapshot_sizes(&grant.prefix).await?;
        Ok(SnapshotList {
            prefix: grant.prefix.clone(),
            snapshots: named
                .into_iter()
                .filter(|(name, _)| name.starts_with(&grant.prefix))
                .map(|(name, size)| SnapshotInfo { name, size })
                .collect(),
        })
    }

    /// `POST /v1/uploads`.
    pub async fn create_upload(&self, grant: &Grant, req: &UploadRequest) -> ApiResult<UploadCreated> {
        writable(grant)?;
        let key = scoped_key(grant, &req.name)?;
        let expires = self.expiry(req.expires_secs)?;
        let part_size = part_size(self.config.part_size, req.size_hint)?;
        let parts = req.size_hint.map_or(api::FIRST_PARTS, |h| {
            u32::try_from(h.div_ceil(part_size)).map_or(api::FIRST_PARTS, |n| n.clamp(1, api::FIRST_PARTS))
        });
        match self.store.size(&key).await {
            Ok(_) => {
                return Err(ApiError::new(
                    409,
                    "exists",
                    format!("snapshot {}: already exists", req.name),
                ))
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mp = self.multipart()?;
        let until = SystemTime::now() + expires;
        let id = mp.create(&key, until + api::ABANDONED_AFTER).await?;
        let part_urls = match self.part_urls(&key, &id, 1, parts, expires).await {
            Ok(urls) => urls,
            Err(e) => {
                let _ = mp.abort(&key, &id).await;
                return Err(e);
            }
        };
        Ok(UploadCreated {
            name: req.name.clone(),
            upload_id: id,
            part_size,
            max_parts: api::MAX_PARTS,
            part_urls,
            expires: crate::store::http::when(until),
            expires_in_secs: expires.as_secs(),
        })
    }

    async fn part_urls(
        &self,
        key: &str,
        id: &str,
        first: u32,
        count: u32,
        expires: Duration,
    ) -> ApiResult<Vec<PartUrl>> {
        let mp = self.multipart()?;
        let mut urls = Vec::with_capacity(count as usize);
        for part in first..first + count {
            let url = mp.presign_part(key, id, part, expires).await?;
            urls.push(PartUrl { part, url });
        }
        Ok(urls)
    }

    /// `POST /v1/uploads/parts`.
    pub async fn upload_parts(&self, grant: &Grant, req: &PartsRequest) -> ApiResult<PartUrls> {
        writable(grant)?;
        let key = scoped_key(grant, &req.name)?;
        check_upload_id(&req.upload_id)?;
        let expires = self.expiry(req.expires_secs)?;
        let last = req.first.checked_add(req.count.saturating_sub(1));
        if req.first == 0
            || !(1..=api::MAX_PARTS_PER_CALL).contains(&req.count)
            || last.is_none_or(|l| l > api::MAX_PARTS)
        {
            return Err(ApiError::bad_request(format!(
                "first {} count {}: 1 to {} parts numbered 1 to {}",
                req.first,
                req.count,
                api::MAX_PARTS_PER_CALL,
                api::MAX_PARTS
            )));
        }
        let until = SystemTime::now() + expires;
        self.multipart()?
            .check(&key, &req.upload_id, Some(until + api::ABANDONED_AFTER))
            .await?;
        let part_urls = self
            .part_urls(&key, &req.upload_id, req.first, req.count, expires)
            .await?;
        Ok(PartUrls {
            part_urls,
            expires: crate::store::http::when(until),
            expires_in_secs: expires.as_secs(),
        })
    }

    /// `POST /v1/uploads/complete`.
    pub async fn complete_upload(&self, grant: &Grant, req: &CompleteRequest) -> ApiResult<Completed> {
        writable(grant)?;
        let key = scoped_key(grant, &req.name)?;
        check_upload_id(&req.upload_id)?;
        let parts = check_parts(&req.parts)?;
        let digest = check_digest(&req.index_digest)?;
        if req.size == 0 {
            return Err(ApiError::bad_request("size: a snapshot is never empty"));
        }
        let mp = self.multipart()?;
        mp.check(&key, &req.upload_id, None).await?;
        mp.complete(&key, &req.upload_id, &parts).await.map_err(|e| match e {
            Error::Exists { .. } => ApiError::new(409, "exists", format!("snapshot {}: already exists", req.name)),
            e => e.into(),
        })?;
        // Visible now: keep it only if it is what the writer declared.
        let refusal = match Snapshot::open(&self.store, &req.name).await {
            Ok(s) if s.size == req.size && hex(&s.index_digest()) == digest => {
                return Ok(Completed {
                    name: req.name.clone(),
                    size: s.size,
                    index_digest: digest,
                })
            }
            Ok(s) => ApiError::new(
                422,
                "mismatch",
                format!(
                    "snapshot {}: the object has {} bytes and index digest {}, not the declared {} and {digest}; deleted",
                    req.name,
                    s.size,
                    hex(&s.index_digest()),
                    req.size
                ),
            ),
            Err(e @ (Error::Corrupt { .. } | Error::Invalid { .. } | Error::Unsupported { .. })) => ApiError::new(
                422,
                "mismatch",
                format!("the completed object is not a snapshot ({e}); deleted"),
            ),
            Err(e) => e.into(),
        };
        if let Err(e) = self.store.delete(&key).await {
            tracing::warn!("{}: deleting the refused object: {e}", req.name);
        }
        Err(refusal)
    }

    /// `POST /v1/uploads/abort`.
    pub async fn abort_upload(&self, grant: &Grant, req: &AbortRequest) -> ApiResult<Aborted> {
        writable(grant)?;
        let key = scoped_key(grant, &req.name)?;
        check_upload_id(&req.upload_id)?;
        let mp = self.multipart()?;
        mp.check(&key, &req.upload_id, None).await?;
        mp.abort(&key, &req.upload_id).await?;
        Ok(Aborted {
            name: req.name.clone(),
            upload_id: req.upload_id.clone(),
        })
    }

    /// `DELETE /v1/snapshots/{name}`: as `lazysnap rm` without `--force`
    /// (a signer never breaks a chain).
    pub async fn delete(&self, grant: &Grant, name: &str) -> ApiResult<Deleted> {
        writable(grant)?;
        scoped_key(grant, name)?;
        crate::cmd::inspect::remove(&self.store, name, false, NEEDED_ADVICE).await?;
        Ok(Deleted { name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tokens::Rights;
    use super::*;

    fn grant(rights: Rights) -> Grant {
        Grant {
            prefix: "org/repo/".into(),
            rights,
        }
    }

    #[test]
    fn names_outside_the_prefix_or_malformed_are_refused() {
        let g = grant(Rights::Read);
        assert_eq!(scoped_key(&g, "org/repo/main").expect("in"), "org/repo/main.tar.zst");
        assert!(scoped_key(&g, "org/repo/a/b/c").is_ok());
        // The empty prefix is the whole store; names are still checked.
        let all = Grant {
            prefix: String::new(),
            rights: Rights::ReadWrite,
        };
        assert!(scoped_key(&all, "main").is_ok() && scoped_key(&all, "org/x/y").is_ok());
        assert_eq!(scoped_key(&all, "../x").expect_err("bad").status, 400);
        let long = format!("org/repo/{}", "x".repeat(600));
        let cases: [(&str, u16, &str); 16] = [
            ("org/other/main", 403, "outside_prefix"),
            ("org/repo-evil/main", 403, "outside_prefix"),
            ("org/repository/main", 403, "outside_prefix"),
            ("org/repo", 403, "outside_prefix"),
            ("main", 403, "outside_prefix"),
            ("org/repo/../other/main", 400, "bad_name"),
            ("org/repo/..", 400, "bad_name"),
            ("/org/repo/main", 400, "bad_name"),
            ("org/repo//main", 400, "bad_name"),
            ("org/repo/", 400, "bad_name"),
            ("org/repo/ma\nin", 400, "bad_name"),
            ("org/repo/ma\u{0}in", 400, "bad_name"),
            ("org/repo/ma\u{7f}in", 400, "bad_name"),
            ("org/repo/.hidden", 400, "bad_name"),
            ("org/repo/a\\b", 400, "bad_name"),
            ("", 400, "bad_name"),
        ];
        for (name, status, code) in cases {
            let e = scoped_key(&g, name).expect_err(name);
            assert_eq!((e.status, e.code), (status, code), "{name:?}: {e}");
        }
        let e = scoped_key(&g, &long).expect_err("long");
        assert_eq!((e.status, e.code), (400, "bad_name"));
        assert!(
            e.message.len() < 300,
            "the message shortens the name: {}",
            e.message.len()
        );
    }

    #[test]
    fn part_sizes_fit_the_part_limit() {
        let base = api::DEFAULT_PART_SIZE;
        assert_eq!(part_size(base, None), Ok(base));
        assert_eq!(part_size(base, Some(1)), Ok(base));
        assert_eq!(part_size(base, Some(10_000 * base)), Ok(base));
        assert_eq!(part_size(base, Some(10_000 * base + 1)), Ok(base + (1 << 20)));
        let max = 10_000 * api::MAX_PART_SIZE;
        assert_eq!(part_size(base, Some(max)), Ok(api::MAX_PART_SIZE));
        assert_eq!(part_size(base, Some(max + 1)).map_err(|e| e.status), Err(413));
        for hint in [1u64, 5 << 30, 78 << 30, 100 << 30, 600 << 30] {
            let size = part_size(api::MIN_PART_SIZE, Some(hint)).expect("fits");
            assert!(hint.div_ceil(size) <= u64::from(api::MAX_PARTS), "{hint}");
            assert!((api::MIN_PART_SIZE..=api::MAX_PART_SIZE).contains(&size));
        }
    }

    #[test]
    fn complete_requests_are_checked() {
        let p = |part, etag: &str| api::CompletedPart {
            part,
            etag: etag.into(),
        };
        assert_eq!(
            check_parts(&[p(2, "b"), p(1, "a")]).expect("ok"),
            vec![(1, "a".to_string()), (2, "b".to_string())]
        );
        for bad in [
            vec![],
            vec![p(0, "a")],
            vec![p(10_001, "a")],
            vec![p(1, "a"), p(1, "b")],
            vec![p(1, "")],
            vec![p(1, "a\nb")],
        ] {
            assert_eq!(check_parts(&bad).map_err(|e| e.status), Err(400), "{bad:?}");
        }
        assert_eq!(check_digest(&"AB".repeat(DIGEST_LEN)), Ok("ab".repeat(DIGEST_LEN)));
        for bad in ["", "ab", &"zz".repeat(DIGEST_LEN), &"ab".repeat(DIGEST_LEN + 1)] {
            assert!(check_digest(bad).is_err(), "{bad}");
        }
        assert!(check_upload_id("").is_err() && check_upload_id("a\u{1}").is_err() && check_upload_id("x-1").is_ok());
    }

    /// A store that fails every call with a 5xx: a local store whose
    /// directory became a file. Each call, made valid, reaches it (5xx);
    /// made invalid in any way, it is refused with a 4xx before.
    #[tokio::test]
    async fn refusals_come_before_the_store() {
        let dir = tempfile::tempdir().expect("tmp");
        let tokens = dir.path().join("tokens.json");
        std::fs::write(&tokens, r#"{"version":1,"tokens":[]}"#).expect("write");
        let broken = dir.path().join("store");
        std::fs::create_dir(&broken).expect("mkdir");
        let policy = crate::store::RetryPolicy {
            attempts: 1,
            ..crate::store::RetryPolicy::default()
        };
        let store = Store::open(&broken.display().to_string())
            .expect("store")
            .with_policy(policy);
        std::fs::remove_dir(&broken).expect("rmdir");
        std::fs::write(&broken, b"not a directory").expect("write");
        let signer = Signer::new(store, Tokens::load(&tokens).expect("tokens"), Config::default());
        let (ro, rw) = (grant(Rights::Read), grant(Rights::ReadWrite));
        let ok = "org/repo/x";
        let outside = "org/repo-evil/x";
        let upload = |name: &str| UploadRequest {
            name: name.into(),
            size_hint: None,
            expires_secs: None,
        };
        let complete = |name: &str, digest: &str| CompleteRequest {
            name: name.into(),
            upload_id: "id".into(),
            parts: vec![api::CompletedPart {
                part: 1,
                etag: "e".into(),
            }],
            size: 1,
            index_digest: digest.into(),
        };
        let digest = "ab".repeat(DIGEST_LEN);
        let parts = |name: &str, first, count| PartsRequest {
            name: name.into(),
            upload_id: "id".into(),
            first,
            count,
            expires_secs: None,
        };
        let abort = |name: &str| AbortRequest {
            name: name.into(),
            upload_id: "id".into(),
        };
        let spec = |name: &str| SpecRequest {
            name: name.into(),
            expires_secs: None,
        };
        let reaches: Vec<(&str, ApiResult<()>)> = vec![
            ("spec", signer.spec(&ro, &spec(ok)).await.map(drop)),
            ("list", signer.list(&ro).await.map(drop)),
            ("upload", signer.create_upload(&rw, &upload(ok)).await.map(drop)),
            ("parts", signer.upload_parts(&rw, &parts(ok, 1, 100)).await.map(drop)),
            (
                "complete",
                signer.complete_upload(&rw, &complete(ok, &digest)).await.map(drop),
            ),
            ("abort", signer.abort_upload(&rw, &abort(ok)).await.map(drop)),
            ("delete", signer.delete(&rw, ok).await.map(drop)),
        ];
        for (what, r) in reaches {
            let e = r.expect_err(what);
            assert!(e.status >= 500, "{what} should reach the broken store: {e}");
        }
        let refused: Vec<(&str, ApiResult<()>)> = vec![
            ("spec outside", signer.spec(&ro, &spec(outside)).await.map(drop)),
            ("spec ..", signer.spec(&ro, &spec("org/repo/../x")).await.map(drop)),
            ("spec absolute", signer.spec(&ro, &spec("/org/repo/x")).await.map(drop)),
            (
                "upload read-only",
                signer.create_upload(&ro, &upload(ok)).await.map(drop),
            ),
            (
                "upload outside",
                signer.create_upload(&rw, &upload(outside)).await.map(drop),
            ),
            (
                "upload huge",
                signer
                    .create_upload(
                        &rw,
                        &UploadRequest {
                            size_hint: Some(1 << 50),
                            ..upload(ok)
                        },
                    )
                    .await
                    .map(drop),
            ),
            ("delete read-only", signer.delete(&ro, ok).await.map(drop)),
            ("delete outside", signer.delete(&rw, outside).await.map(drop)),
            ("delete control", signer.delete(&rw, "org/repo/\u{1b}x").await.map(drop)),
            (
                "complete read-only",
                signer.complete_upload(&ro, &complete(ok, &digest)).await.map(drop),
            ),
            (
                "complete outside",
                signer.complete_upload(&rw, &complete(outside, &digest)).await.map(drop),
            ),
            (
                "complete digest",
                signer.complete_upload(&rw, &complete(ok, "ab")).await.map(drop),
            ),
            (
                "parts read-only",
                signer.upload_parts(&ro, &parts(ok, 1, 1)).await.map(drop),
            ),
            (
                "parts outside",
                signer.upload_parts(&rw, &parts(outside, 1, 1)).await.map(drop),
            ),
            ("parts zero", signer.upload_parts(&rw, &parts(ok, 0, 1)).await.map(drop)),
            (
                "parts many",
                signer.upload_parts(&rw, &parts(ok, 1, 101)).await.map(drop),
            ),
            (
                "parts past",
                signer.upload_parts(&rw, &parts(ok, 9_999, 3)).await.map(drop),
            ),
            ("abort read-only", signer.abort_upload(&ro, &abort(ok)).await.map(drop)),
            (
                "abort empty",
                signer.abort_upload(&rw, &abort("org/repo//x")).await.map(drop),
            ),
        ];
        for (what, r) in refused {
            let e = r.expect_err(what);
            assert!((400..500).contains(&e.status), "{what}: {e}");
        }
        assert_eq!(signer.authorise(None).map_err(|e| e.status), Err(401));
        assert_eq!(signer.authorise(Some("nope")).map_err(|e| e.status), Err(401));
        assert_eq!(signer.expiry(Some(0)).map_err(|e| e.status), Err(400));
        assert_eq!(signer.expiry(Some(10 * 3600)), Ok(DEFAULT_EXPIRY));
        assert_eq!(signer.expiry(Some(60)), Ok(Duration::from_secs(60)));
    }
}
