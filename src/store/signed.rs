//! Pod mode: a store reached only through the signer service
//! (`signer+https://HOST`, from `--signer URL --token-file F`). The pod
//! holds a bearer token and nothing that can sign a request.
//!
//! Reads: opening a snapshot asks the signer for its chain's mount spec
//! (one call names every layer); each layer is then read through its
//! presigned URL exactly as a spec file's is, held to the size, ETag and
//! index digest the spec names. A parent outside the token's prefix is
//! reachable only this way: through the spec of a child inside it.
//!
//! Renewal: a background task asks for the spec again at about 80 % of
//! the URLs' life (with jitter, so a fleet of pods does not call at once),
//! and swaps the new URLs in; a reader never waits for it. A read refused
//! with 403 (or found expired) renews at once and is tried again. While
//! the signer is down, reads go on through the URLs in hand until they
//! expire; after that a read retries the signer with backoff and fails
//! (EIO) within its deadline (at once if the signer refuses connections,
//! ETIMEDOUT at the deadline if it stops answering), never hangs.
//!
//! Writes: a save is a presigned multipart upload. Parts of the signer's
//! part size go up [`PARTS_IN_FLIGHT`] at a time with one `PUT` each (so
//! a save holds at most `(PARTS_IN_FLIGHT + 1) × part size` in memory: 40
//! MiB at the default 8 MiB); the signer completes the upload and checks
//! it against the size and index digest declared here. A failed save
//! aborts its upload; one whose process died is aborted by the signer's
//! store after its deadline.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::task::JoinSet;

use super::http::{self, UrlObject};
use super::{ObjectBucket, ObjectId, ObjectReader, ObjectSource, Priority, Sink, Upload, SNAPSHOT_SUFFIX};
use crate::error::{Error, Result, StoreErrorKind};
use crate::format::footer::{Footer, FOOTER_LEN};
use crate::signer::api::{
    AbortRequest, CompleteRequest, CompletedPart, PartUrl, PartsRequest, UploadRequest, MAX_PARTS, MAX_PARTS_PER_CALL,
};
use crate::signer::client::SignerClient;
use crate::spec::{self, MountSpec, SpecLayer};

/// Part uploads in flight at most.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Attempts per part `PUT` (a part is idempotent: the last upload of a
/// number wins).
const PART_ATTEMPTS: u32 = 3;

/// URLs are renewed at this fraction of their life, give or take
/// [`JITTER`].
const RENEW_AT: f64 = 0.8;

/// How far (a fraction of the life) renewal is moved at random.
const JITTER: f64 = 0.05;

/// Pause before retrying a failed background renewal; doubles up to
/// [`RENEW_RETRY_MAX`].
const RENEW_RETRY: Duration = Duration::from_secs(1);
const RENEW_RETRY_MAX: Duration = Duration::from_secs(30);

/// A store reached through a signer.
pub struct SignedStore {
    shared: Arc<Shared>,
}

struct Shared {
    signer: SignerClient,
    /// Presigned GETs and PUTs (pooled across layers and parts).
    http: reqwest::Client,
    /// Every layer a spec has named, by key.
    layers: Mutex<HashMap<String, Arc<Layer>>>,
    /// One renewal at a time (calls queue behind it, then find it done).
    renewing: tokio::sync::Mutex<()>,
    /// Starts the background renewal task, once.
    renewer: std::sync::Once,
}

/// One layer a spec named: its identity, fixed at first sight, and the URL
/// it is read through now.
struct Layer {
    name: String,
    /// The snapshot whose spec names it (asked for again to renew).
    via: String,
    spec: SpecLayer,
    current: Mutex<Current>,
}

struct Current {
    object: UrlObject,
    /// When to renew.
    renew_at: Instant,
    /// Bumped by every renewal.
    generation: u64,
}

impl SignedStore {
    /// The store behind the signer at `url`, with the token in `token_file`.
    pub fn connect(url: &str, token_file: &std::path::Path) -> Result<SignedStore> {
        Ok(SignedStore {
            shared: Arc::new(Shared {
                signer: SignerClient::connect(url, token_file)?,
                http: http::client()?,
                layers: Mutex::new(HashMap::new()),
                renewing: tokio::sync::Mutex::new(()),
                renewer: std::sync::Once::new(),
            }),
        })
    }
}

/// A random fraction in `[-1, 1)`, for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// When URLs that work for `life` from now should be renewed.
fn renew_time(life: Duration) -> Instant {
    let f = (RENEW_AT + JITTER * jitter()).clamp(0.5, 0.95);
    Instant::now() + life.mul_f64(f)
}

/// How long the URLs of `spec` (just answered) work: its
/// `expires_in_secs`, else its absolute expiry against our clock, else 15
/// minutes.
fn spec_life(spec: &MountSpec) -> Duration {
    if let Some(s) = spec.expires_in_secs {
        return Duration::from_secs(s);
    }
    spec.expires
        .as_deref()
        .and_then(crate::format::time::parse_utc)
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::from_secs(900))
}

fn name_of(key: &str) -> Result<&str> {
    key.strip_suffix(SNAPSHOT_SUFFIX)
        .ok_or_else(|| Error::Internal(format!("{key}: not a snapshot key")))
}

impl Shared {
    /// Ask for `via`'s spec and learn (or renew) every layer it names.
    async fn fetch_spec(self: &Arc<Self>, via: &str) -> Result<()> {
        let spec = self.signer.spec(via).await?;
        let life = spec_life(&spec);
        let renew_at = renew_time(life);
        let mut layers = self.layers.lock();
        for l in &spec.layers {
            let key = format!("{}{SNAPSHOT_SUFFIX}", l.name);
            let object = spec::layer_object(&self.http, l)?;
            match layers.get(&key) {
                None => {
                    layers.insert(
                        key,
                        Arc::new(Layer {
                            name: l.name.clone(),
                            via: via.to_string(),
                            spec: l.clone(),
                            current: Mutex::new(Current {
                                object,
                                renew_at,
                                generation: 0,
                            }),
                        }),
                    );
                }
                Some(have) => {
                    // (Renewal is due again later, whatever follows.)
                    let mut cur = have.current.lock();
                    cur.renew_at = renew_at;
                    cur.generation += 1;
                    if (&have.spec.size, &have.spec.etag, &have.spec.index_digest)
                        != (&l.size, &l.etag, &l.index_digest)
                    {
                        // Replaced under us: keep the old URL (its reads are
                        // held to the old ETag and fail, never mix).
                        tracing::warn!("{}: the signer now names another object; not renewed", l.name);
                        continue;
                    }
                    cur.object = object;
                }
            }
        }
        drop(layers);
        tracing::debug!(
            "{}: URLs of {via} ({} layers) work for {}s",
            self.signer.describe(),
            spec.layers.len(),
            life.as_secs()
        );
        self.start_renewer();
        Ok(())
    }

    /// The layer under `key`, asking the signer for its spec if no spec
    /// named it yet.
    async fn layer(self: &Arc<Self>, key: &str) -> Result<Arc<Layer>> {
        if let Some(l) = self.layers.lock().get(key) {
            return Ok(l.clone());
        }
        self.fetch_spec(name_of(key)?).await?;
        self.layers
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("{key}: not in the spec the signer answered for it")))
    }

    /// Renew the URLs `layer` is read through, unless a renewal finished
    /// since `seen` (its generation when the refused read went out).
    async fn renew(self: &Arc<Self>, layer: &Layer, seen: u64) -> Result<()> {
        let _one = self.renewing.lock().await;
        if layer.current.lock().generation != seen {
            return Ok(());
        }
        self.fetch_spec(&layer.via).await
    }

    /// Start the background renewal task, once.
    fn start_renewer(self: &Arc<Self>) {
        self.renewer.call_once(|| {
            tokio::spawn(renew_in_background(Arc::downgrade(self)));
        });
    }

    /// The earliest renewal due, and the specs (by `via`) due by then.
    fn due(&self) -> Option<(Instant, Vec<(String, u64)>)> {
        let layers = self.layers.lock();
        let first = layers.values().map(|l| l.current.lock().renew_at).min()?;
        let mut vias: Vec<(String, u64)> = Vec::new();
        for l in layers.values() {
            let cur = l.current.lock();
            if cur.renew_at <= first + Duration::from_secs(1) && !vias.iter().any(|(v, _)| v == &l.via) {
                vias.push((l.via.clone(), cur.generation));
            }
        }
        Some((first, vias))
    }
}

/// Renew URLs at ~80 % of their life, for as long as the store lives. A
/// failed renewal is retried with backoff; readers go on meanwhile.
async fn renew_in_background(shared: Weak<Shared>) {
    let mut pause = RENEW_RETRY;
    loop {
        let Some(due) = shared.upgrade().and_then(|s| s.due()) else {
            return;
        };
        let (at, vias) = due;
        tokio::time::sleep_until(at.into()).await;
        let Some(s) = shared.upgrade() else {
            return;
        };
        let mut failed = false;
        for (via, generation) in vias {
            let layer = s.layers.lock().values().find(|l| l.via == via).cloned();
            let Some(layer) = layer else { continue };
            if let Err(e) = s.renew(&layer, generation).await {
                tracing::warn!("renewing the URLs of {via}: {e}; retrying in {}s", pause.as_secs());
                failed = true;
            }
        }
        drop(s);
        if failed {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RENEW_RETRY_MAX);
        } else {
            pause = RENEW_RETRY;
        }
    }
}

/// A layer read through the URL its latest spec gave.
struct SignedReader {
    shared: Arc<Shared>,
    layer: Arc<Layer>,
    id: ObjectId,
    /// The generation of the URL the last refused read used.
    refused: AtomicU64,
}

impl SignedReader {
    /// The URL reads use now, and its generation.
    fn current(&self) -> (UrlObject, u64) {
        let cur = self.layer.current.lock();
        (cur.object.clone(), cur.generation)
    }

    /// Remember which URL a refused read used, so one renewal serves
    /// every read it refused.
    fn note_refusal<T>(&self, r: &Result<T>, generation: u64) {
        if let Err(Error::Store {
            kind: StoreErrorKind::Denied | StoreErrorKind::Expired,
            ..
        }) = r
        {
            self.refused.store(generation, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl ObjectReader for SignedReader {
    fn id(&self) -> &ObjectId {
        &self.id
    }

    async fn get_range(&self, range: Range<u64>, _prio: Priority) -> Result<Bytes> {
        let (object, generation) = self.current();
        let r = http::read_range(&object, &self.id, range).await;
        self.note_refusal(&r, generation);
        r
    }

    async fn stream_range(&self, range: Range<u64>, _prio: Priority, sink: &mut Sink<'_>) -> Result<()> {
        let (object, generation) = self.current();
        let r = http::stream_range(&object, &self.id, range, sink).await;
        self.note_refusal(&r, generation);
        r
    }

    fn expires(&self) -> Option<SystemTime> {
        self.layer.current.lock().object.expires
    }

    async fn renew(&self) -> Result<bool> {
        tracing::debug!("{}: a read was refused; renewing its URL", self.layer.name);
        let seen = self.refused.load(Ordering::Relaxed);
        self.shared.renew(&self.layer, seen).await?;
        Ok(true)
    }
}

#[async_trait]
impl ObjectSource for SignedStore {
    fn describe(&self) -> String {
        self.shared.signer.describe().to_string()
    }

    async fn open(&self, key: &str, tail: u64) -> Result<(Arc<dyn ObjectReader>, Bytes)> {
        let layer = self.shared.layer(key).await?;
        let (object, generation) = {
            let cur = layer.current.lock();
            (cur.object.clone(), cur.generation)
        };
        let (reader, bytes) = spec::open_layer(object, &layer.spec, tail).await?;
        let signed = SignedReader {
            shared: self.shared.clone(),
            id: reader.id().clone(),
            layer,
            refused: AtomicU64::new(generation),
        };
        Ok((Arc::new(signed), bytes))
    }
}

#[async_trait]
impl ObjectBucket for SignedStore {
    async fn size(&self, key: &str) -> Result<u64> {
        let name = name_of(key)?;
        let list = self.shared.signer.snapshots().await?;
        list.snapshots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.size)
            .ok_or_else(|| Error::not_found(format!("snapshot {name}")))
    }

    async fn create_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        // Created at once: a token that may not write here is refused
        // before anything is packed.
        Ok(Box::new(
            SignedUpload::create(self.shared.clone(), name_of(key)?).await?,
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_sized(prefix).await?.into_iter().map(|(k, _)| k).collect())
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let list = self.shared.signer.snapshots().await?;
        Ok(list
            .snapshots
            .into_iter()
            .map(|s| (format!("{}{SNAPSHOT_SUFFIX}", s.name), s.size))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.shared.signer.delete(name_of(key)?).await.map(|_| ())
    }
}

/// A part URL, and when to stop using it.
struct PartTarget {
    url: String,
    renew_at: Instant,
}

/// A save through the signer (see the module doc).
struct SignedUpload {
    shared: Arc<Shared>,
    name: String,
    /// The upload's id at the signer.
    id: String,
    /// Bytes in every part but the last (the signer's choice).
    part_size: usize,
    /// The upload is still there to complete or abort.
    open: bool,
    /// Part URLs in hand, by part number.
    urls: HashMap<u32, PartTarget>,
    /// The part being filled.
    buf: BytesMut,
    next_part: u32,
    /// Parts on their way: each answers its number and ETag.
    tasks: JoinSet<Result<CompletedPart>>,
    done: Vec<CompletedPart>,
    /// Bytes written.
    size: u64,
    /// The last bytes written (the footer, at commit).
    tail: Vec<u8>,
    failed: bool,
}

impl SignedUpload {
    fn what(&self) -> String {
        format!("saving {} through {}", self.name, self.shared.signer.describe())
    }

    /// Create the upload of `name` at the signer.
    async fn create(shared: Arc<Shared>, name: &str) -> Result<SignedUpload> {
        let answer = shared
            .signer
            .create_upload(&UploadRequest {
                name: name.to_string(),
                size_hint: None,
                expires_secs: None,
            })
            .await?;
        let mut up = SignedUpload {
            shared,
            name: name.to_string(),
            id: answer.upload_id,
            part_size: 0,
            open: true,
            urls: HashMap::new(),
            buf: BytesMut::new(),
            next_part: 1,
            tasks: JoinSet::new(),
            done: Vec::new(),
            size: 0,
            tail: Vec::new(),
            failed: false,
        };
        let sizes = crate::signer::api::MIN_PART_SIZE..=crate::signer::api::MAX_PART_SIZE;
        match usize::try_from(answer.part_size) {
            Ok(p) if sizes.contains(&answer.part_size) => up.part_size = p,
            _ => {
                let e = Error::store(
                    StoreErrorKind::Invalid,
                    up.what(),
                    format!("the signer asked for parts of {} bytes", answer.part_size),
                );
                return Err(up.fail(e).await);
            }
        }
        tracing::debug!("{}: upload created, parts of {} bytes", up.what(), up.part_size);
        up.learn_urls(answer.part_urls, answer.expires_in_secs);
        Ok(up)
    }

    fn learn_urls(&mut self, urls: Vec<PartUrl>, life: u64) {
        let renew_at = renew_time(Duration::from_secs(life));
        for u in urls {
            self.urls.insert(u.part, PartTarget { url: u.url, renew_at });
        }
    }

    /// A usable URL for part `n`, asking the signer for a batch when there
    /// is none (or it is about to expire).
    async fn url_for(&mut self, n: u32) -> Result<String> {
        if let Some(t) = self.urls.remove(&n) {
            if Instant::now() < t.renew_at {
                return Ok(t.url);
            }
        }
        let count = MAX_PARTS_PER_CALL.min(MAX_PARTS - n + 1);
        let answer = self
            .shared
            .signer
            .part_urls(&PartsRequest {
                name: self.name.clone(),
                upload_id: self.id.clone(),
                first: n,
                count,
                expires_secs: None,
            })
            .await?;
        self.learn_urls(answer.part_urls, answer.expires_in_secs);
        self.urls
            .remove(&n)
            .map(|t| t.url)
            .ok_or_else(|| Error::store(StoreErrorKind::Invalid, self.what(), format!("no URL for part {n}")))
    }

    /// Send `part` as the next part, after waiting for room.
    async fn start_part(&mut self, part: Bytes) -> Result<()> {
        while self.tasks.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let n = self.next_part;
        if n > MAX_PARTS {
            return Err(Error::store(
                StoreErrorKind::Invalid,
                self.what(),
                format!("too large for one upload ({MAX_PARTS} parts)"),
            ));
        }
        let url = self.url_for(n).await?;
        self.next_part += 1;
        let (shared, name, id) = (self.shared.clone(), self.name.clone(), self.id.clone());
        self.tasks.spawn(put_part(shared, name, id, n, url, part));
        while let Some(joined) = self.tasks.try_join_next() {
            self.joined(joined)?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(joined) => self.joined(joined),
            None => Ok(()),
        }
    }

    fn joined(&mut self, joined: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>) -> Result<()> {
        let part =
            joined.map_err(|e| Error::Internal(format!("{}: a part upload ended abnormally: {e}", self.what())))??;
        self.done.push(part);
        Ok(())
    }

    /// Stop every part in flight and abort the upload at the signer.
    async fn abort_upload(&mut self) -> Result<()> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if !std::mem::replace(&mut self.open, false) {
            return Ok(());
        }
        let req = AbortRequest {
            name: self.name.clone(),
            upload_id: self.id.clone(),
        };
        match self.shared.signer.abort(&req).await {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `err` ends the upload: abort it (best effort) and hand `err` back.
    async fn fail(&mut self, err: Error) -> Error {
        self.failed = true;
        if let Err(e) = self.abort_upload().await {
            tracing::warn!(
                "{}: aborting the failed upload: {e} (the signer's store cleans up after its deadline)",
                self.what()
            );
        }
        err
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::store(
                StoreErrorKind::Invalid,
                self.what(),
                "the upload failed earlier and was aborted",
            ));
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.start_part(last).await?;
        }
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        if self.tail.len() < FOOTER_LEN {
            return Err(Error::Internal(format!("{}: shorter than a footer", self.what())));
        }
        let footer = Footer::decode(&self.tail[self.tail.len() - FOOTER_LEN..], self.size, &self.name)?;
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part);
        let count = parts.len();
        let req = CompleteRequest {
            name: self.name.clone(),
            upload_id: self.id.clone(),
            parts,
            size: self.size,
            index_digest: crate::format::hex(&footer.index_digest),
        };
        self.shared.signer.complete(&req).await?;
        tracing::debug!("{}: completed, {count} parts, {} bytes", self.what(), self.size);
        self.open = false;
        Ok(())
    }
}

#[async_trait]
impl Upload for SignedUpload {
    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.check_usable()?;
        self.size += data.len() as u64;
        let keep = data.len().min(FOOTER_LEN);
        let drop_from_tail = (self.tail.len() + keep).saturating_sub(FOOTER_LEN);
        self.tail.drain(..drop_from_tail);
        self.tail.extend_from_slice(&data[data.len() - keep..]);
        while !data.is_empty() {
            if let Some(part) = super::fill_part(&mut self.buf, &mut data, self.part_size) {
                if let Err(e) = self.start_part(part).await {
                    return Err(self.fail(e).await);
                }
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<()> {
        self.check_usable()?;
        if overwrite {
            return Err(Error::Usage(format!(
                "{}: a signer never overwrites a snapshot",
                self.what()
            )));
        }
        match self.finish().await {
            Ok(()) => Ok(()),
            // The signer aborted it itself.
            Err(e @ Error::Exists { .. }) => Err(e),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_upload().await
    }
}

/// `PUT` part `n` to `url`; retried on a transient failure, and with a
/// fresh URL once if refused (expired).
async fn put_part(
    shared: Arc<Shared>,
    name: String,
    id: String,
    n: u32,
    mut url: String,
    body: Bytes,
) -> Result<CompletedPart> {
    let what = format!("saving {name} (part {n})");
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    let mut renewed = false;
    loop {
        let err = match put_once(&shared.http, &what, &url, body.clone()).await {
            Ok(etag) => return Ok(CompletedPart { part: n, etag }),
            Err(e) => e,
        };
        match &err {
            Error::Store {
                kind: StoreErrorKind::Denied | StoreErrorKind::Expired,
                ..
            } if !renewed => {
                renewed = true;
                tracing::debug!("{err}; asking for a fresh URL");
                let answer = shared
                    .signer
                    .part_urls(&PartsRequest {
                        name: name.clone(),
                        upload_id: id.clone(),
                        first: n,
                        count: 1,
                        expires_secs: None,
                    })
                    .await?;
                url = answer
                    .part_urls
                    .into_iter()
                    .find(|u| u.part == n)
                    .map(|u| u.url)
                    .ok_or_else(|| Error::store(StoreErrorKind::Invalid, &what, "the signer sent no URL"))?;
                continue;
            }
            Error::Store {
                kind: StoreErrorKind::Transient | StoreErrorKind::Throttled,
                ..
            }
            | Error::Timeout { .. }
                if attempt < PART_ATTEMPTS => {}
            _ => return Err(err),
        }
        tracing::debug!("{err}; retrying (attempt {} of {PART_ATTEMPTS})", attempt + 1);
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// One `PUT` of a part: its ETag.
async fn put_once(client: &reqwest::Client, what: &str, url: &str, body: Bytes) -> Result<String> {
    let u = http::parse_url(url, what)?;
    let object = UrlObject {
        client: client.clone(),
        what: format!("{what} ({})", http::shown(&u)),
        expires: http::url_expiry(&u),
        url: u,
    };
    let resp = client
        .put(object.url.clone())
        .body(body)
        .send()
        .await
        .map_err(|e| object.transport(e))?;
    if !resp.status().is_success() {
        return Err(object.answer_error(resp).await);
    }
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| object.err(StoreErrorKind::Invalid, "the part's answer has no ETag"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_near_eighty_percent_of_the_life() {
        let life = Duration::from_secs(1000);
        for _ in 0..100 {
            let at = renew_time(life).saturating_duration_since(Instant::now()).as_secs_f64();
            assert!((740.0..=851.0).contains(&at), "{at}");
        }
        let spread: std::collections::HashSet<u64> = (0..20).map(|_| (jitter() * 1e6) as u64).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
