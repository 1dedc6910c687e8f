//! Mount specs: what a reader with no credential needs to open a snapshot
//! chain through presigned URLs.
//!
//! A spec is versioned JSON naming, for every layer of a chain (the
//! snapshot first, then each parent down to the base), its URL and, where
//! known, its size, ETag, index digest, index location and expiry:
//!
//! ```json
//! {"kind": "lazysnap-mount-spec", "version": 1, "snapshot": "org/repo/main-2",
//!  "expires": "2026-12-05T10:15:00Z",
//!  "layers": [{"name": "org/repo/main-2", "url": "https://…", "size": 3061,
//!              "etag": "\"9b2…\"", "index_digest": "5f0…", "index_offset": 2741,
//!              "index_len": 256, "expires": "2026-12-05T10:15:00Z"}, …]}
//! ```
//!
//! With the index location known, opening a layer costs one exact ranged
//! read (index and footer); without it (a spec written by hand around any
//! presigned GET URL), one suffix read. Every answer is held to what the
//! spec says: size, ETag, index digest. A spec is itself a read-only
//! [`ObjectSource`] keyed like any store, so every read command, the
//! chain walk and the mount use it unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StoreErrorKind};
use crate::format::footer::{Footer, FOOTER_LEN};
use crate::format::{hex, limits};
use crate::snapshot::{Chain, MAX_CHAIN};
use crate::store::http::{self, UrlObject, Want};
use crate::store::{snapshot_key, HeadFirst, ObjectId, ObjectReader, ObjectSource, Store};

/// What `kind` says.
pub const KIND: &str = "lazysnap-mount-spec";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest spec file read.
pub const MAX_SPEC: u64 = 16 << 20;

/// A mount spec (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// Always [`KIND`].
    #[serde(default = "kind")]
    pub kind: String,
    /// Format version; a reader refuses versions it does not know.
    pub version: u32,
    /// The snapshot to open (default: the first layer's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When the first of the URLs expires (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The chain: the snapshot, then its parents down to the base.
    pub layers: Vec<SpecLayer>,
    /// Seconds from the answer until the first URL expires, in a spec the
    /// signer answers (a client whose clock is off renews by this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

fn kind() -> String {
    KIND.to_string()
}

/// One layer of a spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecLayer {
    /// Snapshot name (what its child's index calls it).
    pub name: String,
    /// A GET URL of the object (presigned: a secret).
    pub url: String,
    /// Object size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The object's ETag, as the server sends it (quotes included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Digest of the snapshot's index (hex), as its footer holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// Offset of the index frame in the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_offset: Option<u64>,
    /// Length of the index frame (the footer follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_len: Option<u64>,
    /// When the URL expires (RFC 3339 UTC); else read from the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl MountSpec {
    /// Read and check the spec file at `path`.
    pub fn load(path: &Path) -> Result<MountSpec> {
        let what = format!("spec {}", path.display());
        let data = crate::sys::read_small_file(path, MAX_SPEC, &what)?;
        MountSpec::parse(&data, &what)
    }

    /// Parse and check a spec; `what` names it in errors.
    pub fn parse(data: &[u8], what: &str) -> Result<MountSpec> {
        let spec: MountSpec =
            serde_json::from_slice(data).map_err(|e| invalid(what, format!("not a mount spec: {e}")))?;
        if spec.kind != KIND {
            return Err(invalid(what, format!("kind {:?}, not {KIND:?}", spec.kind)));
        }
        if spec.version != VERSION {
            return Err(Error::Unsupported {
                what: what.to_string(),
                why: format!("mount spec version {} (this build reads {VERSION})", spec.version),
            });
        }
        if spec.layers.is_empty() || spec.layers.len() > MAX_CHAIN {
            return Err(invalid(what, format!("needs 1 to {MAX_CHAIN} layers")));
        }
        let mut seen = std::collections::HashSet::new();
        for l in &spec.layers {
            snapshot_key(&l.name)?;
            if !seen.insert(l.name.as_str()) {
                return Err(invalid(what, format!("layer {} appears twice", l.name)));
            }
            let lw = format!("{what}: layer {}", l.name);
            http::parse_url(&l.url, &lw)?;
            if let Some(d) = &l.index_digest {
                if d.len() != 2 * crate::format::DIGEST_LEN || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(&lw, "index_digest is not a hex digest"));
                }
            }
            if let (Some(size), Some(off), Some(len)) = (l.size, l.index_offset, l.index_len) {
                let end = off.checked_add(len).and_then(|e| e.checked_add(FOOTER_LEN as u64));
                if end != Some(size) || len > limits::MAX_INDEX_COMPRESSED {
                    return Err(invalid(
                        &lw,
                        "index_offset + index_len + footer is not the object's size",
                    ));
                }
            }
            if let Some(e) = &l.expires {
                crate::format::time::parse_utc(e).ok_or_else(|| invalid(&lw, "expires is not an RFC 3339 UTC time"))?;
            }
        }
        if let Some(top) = &spec.snapshot {
            if !spec.layers.iter().any(|l| &l.name == top) {
                return Err(invalid(what, format!("snapshot {top} is not one of its layers")));
            }
        }
        Ok(spec)
    }

    /// The snapshot the spec opens.
    pub fn top(&self) -> &str {
        self.snapshot.as_deref().unwrap_or(&self.layers[0].name)
    }

    /// A spec for `name`'s whole chain in `store`, with URLs valid for
    /// `expires`.
    pub async fn presign(store: &Store, name: &str, expires: Duration) -> Result<MountSpec> {
        let chain = Chain::open(store, name).await?;
        let deadline = SystemTime::now() + expires;
        let mut layers = Vec::with_capacity(chain.snapshots.len());
        for s in chain.snapshots.iter().rev() {
            let url = store.presign_get(&s.key, expires).await?;
            let expiry = http::parse_url(&url, &s.name)
                .ok()
                .and_then(|u| http::url_expiry(&u))
                .unwrap_or(deadline);
            layers.push(SpecLayer {
                name: s.name.clone(),
                url,
                size: Some(s.size),
                etag: s.object.id().etag.clone(),
                index_digest: Some(hex(&s.index_digest())),
                index_offset: Some(s.footer.index_offset),
                index_len: Some(s.footer.index_len),
                expires: Some(http::when(expiry)),
            });
        }
        let first = layers
            .iter()
            .filter_map(|l| l.expires.as_deref())
            .min_by_key(|e| crate::format::time::parse_utc(e))
            .map(str::to_string);
        Ok(MountSpec {
            kind: kind(),
            version: VERSION,
            snapshot: Some(name.to_string()),
            expires: first,
            layers,
            expires_in_secs: None,
        })
    }

    /// The spec as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Internal(e.to_string()))
    }
}

fn invalid(what: &str, why: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.to_string(),
        why: why.into(),
    }
}

/// A spec as a read-only store: key `NAME.tar.zst` is layer `NAME`.
pub struct SpecSource {
    what: String,
    client: reqwest::Client,
    layers: HashMap<String, SpecLayer>,
}

impl SpecSource {
    /// Serve `spec` (read from `path`, which errors name).
    pub fn new(spec: MountSpec, path: &str) -> Result<SpecSource> {
        let mut layers = HashMap::new();
        for l in spec.layers {
            layers.insert(snapshot_key(&l.name)?, l);
        }
        Ok(SpecSource {
            what: format!("spec {path}"),
            client: http::client()?,
            layers,
        })
    }
}

#[async_trait]
impl ObjectSource for SpecSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        self.open_to_read_all(key, tail, 0).await
    }

    /// The layer's first data is asked for alongside its index, when the
    /// spec says where both are and which ETag the object has.
    async fn open_to_read_all(&self, key: &str, tail: u64, head: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let l = self
            .layers
            .get(key)
            .ok_or_else(|| Error::not_found(format!("{key} in {}", self.what)))?;
        let object = layer_object(&self.client, l)?;
        let (Some(size), Some(data), Some(etag)) = (l.size, l.index_offset, l.etag.clone()) else {
            return open_layer(object, l, tail).await;
        };
        let len = head.min(data);
        if len == 0 {
            return open_layer(object, l, tail).await;
        }
        let early = {
            let object = object.clone();
            tokio::spawn(async move {
                let answer = object.get(&Want::Exact(0..len, size), Some(&etag)).await?;
                Ok(answer.body)
            })
        };
        let (reader, bytes) = open_layer(object, l, tail).await.inspect_err(|_| early.abort())?;
        Ok((Arc::new(HeadFirst::new(reader, len, early)), bytes))
    }
}

/// Where layer `l` is, as an object behind its URL.
pub(crate) fn layer_object(client: &reqwest::Client, l: &SpecLayer) -> Result<UrlObject> {
    let url = http::parse_url(&l.url, &l.name)?;
    let expires = l
        .expires
        .as_deref()
        .and_then(crate::format::time::parse_utc)
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        .or_else(|| http::url_expiry(&url));
    Ok(UrlObject {
        client: client.clone(),
        what: format!("layer {} ({})", l.name, http::shown(&url)),
        url,
        expires,
    })
}

/// Open layer `l` through `object`: one exact read of its index and
/// footer where the spec says where they are, else a suffix read of
/// `tail` bytes; the answer is held to the size, ETag and index digest
/// the spec names.
pub(crate) async fn open_layer(object: UrlObject, l: &SpecLayer, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
    let want = match (l.size, l.index_offset) {
        (Some(size), Some(off)) => Want::Exact(off..size, size),
        _ => Want::Suffix(tail),
    };
    let id = l.size.map(|size| ObjectId {
        size,
        etag: l.etag.clone(),
    });
    let (reader, bytes) = http::open(object.clone(), want, id).await?;
    if let Some(d) = &l.index_digest {
        if bytes.len() >= FOOTER_LEN {
            let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], reader.id().size, &object.what)?;
            if !hex(&footer.index_digest).eq_ignore_ascii_case(d) {
                return Err(object.err(
                    StoreErrorKind::Precondition,
                    "not the snapshot the spec names (index digest differs)",
                ));
            }
        }
    }
    Ok((reader, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> SpecLayer {
        SpecLayer {
            name: name.into(),
            url: format!("https://h/{name}.tar.zst?X-Amz-Signature=s"),
            size: Some(1000),
            etag: Some("\"e\"".into()),
            index_digest: Some("ab".repeat(16)),
            index_offset: Some(900),
            index_len: Some(36),
            expires: Some("2026-12-05T10:15:00Z".into()),
        }
    }

    fn spec(layers: Vec<SpecLayer>) -> MountSpec {
        MountSpec {
            kind: kind(),
            version: VERSION,
            snapshot: None,
            expires: None,
            layers,
            expires_in_secs: None,
        }
    }

    #[test]
    fn specs_round_trip_and_bad_ones_are_refused() {
        let s = spec(vec![layer("a/b"), layer("a/base")]);
        let json = s.to_json().expect("json");
        let back = MountSpec::parse(json.as_bytes(), "t").expect("parse");
        assert_eq!(back.top(), "a/b");
        assert_eq!(back.layers.len(), 2);
        // A bare spec around any presigned URL.
        let bare = r#"{"version": 1, "layers": [{"name": "x", "url": "https://h/x?sig=1"}]}"#;
        assert_eq!(MountSpec::parse(bare.as_bytes(), "t").expect("bare").top(), "x");
        let mut bad_cases: Vec<(MountSpec, &str)> = Vec::new();
        let mut v = s.clone();
        v.version = 2;
        bad_cases.push((v, "version"));
        let mut v = s.clone();
        v.layers[1].name = "a/b".into();
        bad_cases.push((v, "twice"));
        let mut v = s.clone();
        v.layers[0].url = "file:///etc/passwd".into();
        bad_cases.push((v, "https"));
        let mut v = s.clone();
        v.layers[0].index_len = Some(37);
        bad_cases.push((v, "index_offset"));
        let mut v = s.clone();
        v.layers[0].name = "../x".into();
        bad_cases.push((v, "name"));
        let mut v = s.clone();
        v.layers[0].index_digest = Some("zz".into());
        bad_cases.push((v, "digest"));
        let mut v = s.clone();
        v.snapshot = Some("other".into());
        bad_cases.push((v, "not one of its layers"));
        let mut v = s.clone();
        v.layers.clear();
        bad_cases.push((v, "layers"));
        for (v, want) in bad_cases {
            let e = MountSpec::parse(v.to_json().expect("json").as_bytes(), "t").expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
            assert!(!e.to_string().contains("X-Amz-Signature"), "{e}");
        }
        for junk in ["", "{", "[]", "{\"kind\":\"other\",\"version\":1,\"layers\":[]}"] {
            assert!(MountSpec::parse(junk.as_bytes(), "t").is_err(), "{junk}");
        }
    }
}
