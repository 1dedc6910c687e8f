//! The signer's wire types: JSON over HTTP, version 1.
//!
//! Every route but `/healthz` lives under `/v1/` and needs
//! `Authorization: Bearer TOKEN`. A request body is one JSON object (at
//! most [`MAX_BODY`] bytes); fields a version does not know are ignored,
//! so a later version can add optional fields without breaking older
//! servers or clients. A change that would break either gets a new
//! prefix (`/v2/`), served next to `/v1/`.
//!
//! | route                          | rights     | request             | answer           |
//! |--------------------------------|------------|---------------------|------------------|
//! | `GET /healthz`                 | none       | –                   | [`Health`]       |
//! | `POST /v1/spec`                | read       | [`SpecRequest`]     | [`crate::spec::MountSpec`] |
//! | `GET /v1/snapshots`            | read       | –                   | [`SnapshotList`] |
//! | `POST /v1/uploads`             | read-write | [`UploadRequest`]   | [`UploadCreated`]|
//! | `POST /v1/uploads/parts`       | read-write | [`PartsRequest`]    | [`PartUrls`]     |
//! | `POST /v1/uploads/complete`    | read-write | [`CompleteRequest`] | [`Completed`]    |
//! | `POST /v1/uploads/abort`       | read-write | [`AbortRequest`]    | [`Aborted`]      |
//! | `DELETE /v1/snapshots/{name}`  | read-write | – (name percent-encoded in the path) | [`Deleted`] |
//!
//! A failure is a 4xx or 5xx status with an [`ErrorBody`]:
//! `{"error": {"code": "outside_prefix", "message": "…"}}`. The codes, by
//! status: 400 `bad_request`, `bad_name`; 401 `unauthorized`; 403
//! `forbidden` (the token may only read), `outside_prefix`; 404
//! `not_found`, `no_route`; 405 `method_not_allowed`; 408 `timeout` (the
//! request body took too long); 409 `exists`, `refused` (a diff's chain
//! needs the snapshot); 413 `too_large`; 422
//! `mismatch` (a completed object is not what the writer declared),
//! `corrupt` (a snapshot or its chain does not check out); 500 `internal`;
//! 502 `store` (the store refused or answered nonsense); 503 `unavailable`
//! (the store is busy or failing: try again); 504 `timeout`.
//!
//! Names are snapshot names relative to the signer's store (`org/repo/main`,
//! never with `.tar.zst`): `/`-separated, no empty, `.` or `..` component,
//! no component starting with `.`, not absolute, no control character or
//! backslash, at most 512 bytes, and inside the token's prefix (whole
//! components: prefix `org/repo/` admits `org/repo/main`, never
//! `org/repo-evil/main`). A bad name is refused before the store is asked
//! anything.
//!
//! Times: every answer that carries URLs says when they expire, as an
//! RFC 3339 UTC time (`expires`) and as seconds from the answer
//! (`expires_in_secs`: a client whose clock is off renews at ~80 % of
//! this). A request's `expires_secs` is clamped to the signer's maximum
//! (at most one hour; by default 15 minutes).
//!
//! Uploads: a snapshot is saved as one S3 multipart upload. The signer
//! creates it (and records it, so that an upload its writer abandons is
//! aborted once its deadline passes: [`ABANDONED_AFTER`] after its last
//! URL expires), hands out presigned URLs that each take one part as the
//! body of a `PUT` (the answer's `ETag` header is the part's ETag), and
//! completes it when the writer sends the parts' ETags, never over an
//! existing snapshot. It then reads the object's footer and index and
//! checks its size and index digest against what the writer declared: an
//! object that is not what was declared is deleted (422 `mismatch`).
//!
//! Part sizes: every part but the last is exactly `part_size` bytes; the
//! last is 1 byte to `part_size`. `part_size` is 8 MiB by default (the
//! signer's `--part-size`, 5 MiB to 64 MiB: S3 refuses smaller parts),
//! raised in whole MiB when `size_hint` says the object needs more than
//! [`MAX_PARTS`] parts of it, up to [`MAX_PART_SIZE`]. So an upload holds up
//! to 10,000 × 8 MiB = 78 GiB without a hint, and at most 10,000 × 64 MiB
//! = 625 GiB with one; a larger `size_hint` is refused (413 `too_large`).

use serde::{Deserialize, Serialize};

/// The API version this build serves (the path prefix `/v1/`).
pub const VERSION: &str = "v1";

/// Largest request body read, in bytes (a complete of 10,000 parts is
/// about 0.6 MB).
pub const MAX_BODY: usize = 2 << 20;

/// Most parts of one upload (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// Smallest part size a signer may be set to (S3's minimum part).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Part size without a size hint that needs more, by default.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// Largest part size handed out.
pub const MAX_PART_SIZE: u64 = 64 << 20;

/// Part URLs in the answer to a create, at most.
pub const FIRST_PARTS: u32 = 16;

/// Part URLs one `/v1/uploads/parts` call hands out, at most.
pub const MAX_PARTS_PER_CALL: u32 = 100;

/// An upload counts as abandoned (and the next save or `gc` aborts it)
/// this long after the last of its URLs expires.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// `GET /healthz`: the signer is up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
    /// The API versions served (`["v1"]`).
    pub versions: Vec<String>,
}

/// `POST /v1/spec`: a mount spec for a snapshot's whole chain.
///
/// The snapshot must be inside the token's prefix; its parents are named by
/// its index (and each checked against the index digest its child holds),
/// so they may lie outside the prefix: a fork of another key works. The
/// answer is a [`crate::spec::MountSpec`], exactly what `lazysnap presign`
/// writes and `--spec FILE` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecRequest {
    /// The snapshot.
    pub name: String,
    /// How long the URLs should work, in seconds (clamped to the signer's
    /// maximum; default: the signer's `--expires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<u64>,
}

/// `GET /v1/snapshots`: the snapshots under the token's prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotList {
    /// The token's prefix (`org/repo/`).
    pub prefix: String,
    /// The snapshots, by name.
    pub snapshots: Vec<SnapshotInfo>,
}

/// One snapshot of a [`SnapshotList`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name (prefix included).
    pub name: String,
    /// Its object's size in bytes.
    pub size: u64,
}

/// `POST /v1/uploads`: start saving a new snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRequest {
    /// The snapshot to create (must not exist: 409 `exists`).
    pub name: String,
    /// The object's size in bytes if known, or an upper bound: it decides
    /// the part size and how many part URLs come with the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_hint: Option<u64>,
    /// How long the part URLs should work, in seconds (clamped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<u64>,
}

/// The answer to [`UploadRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadCreated {
    /// The snapshot being saved.
    pub name: String,
    /// The upload's id: every later call about it names it (with `name`).
    pub upload_id: String,
    /// Bytes in every part but the last (see the module docs).
    pub part_size: u64,
    /// Most parts the upload may have ([`MAX_PARTS`]).
    pub max_parts: u32,
    /// URLs of the first parts (1, 2, …; up to [`FIRST_PARTS`], fewer when
    /// `size_hint` needs fewer). More come from `/v1/uploads/parts`.
    pub part_urls: Vec<PartUrl>,
    /// When the URLs expire (RFC 3339 UTC).
    pub expires: String,
    /// Seconds from this answer until they expire.
    pub expires_in_secs: u64,
}

/// A presigned URL that uploads one part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartUrl {
    /// The part number (1-based).
    pub part: u32,
    /// `PUT` the part's bytes here (no other header needed); the answer's
    /// `ETag` header goes into [`CompleteRequest::parts`]. A secret until
    /// it expires: never log it.
    pub url: String,
}

/// `POST /v1/uploads/parts`: URLs for more parts (or fresh ones for parts
/// whose URLs expired or failed: a part may be uploaded again, the last
/// upload wins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartsRequest {
    /// The snapshot being saved.
    pub name: String,
    /// The upload's id.
    pub upload_id: String,
    /// The first part wanted (1-based).
    pub first: u32,
    /// How many parts from `first` (1 to [`MAX_PARTS_PER_CALL`]; `first +
    /// count - 1` at most [`MAX_PARTS`]).
    pub count: u32,
    /// How long the URLs should work, in seconds (clamped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<u64>,
}

/// The answer to [`PartsRequest`]. (Each call also moves the upload's
/// abandonment deadline to [`ABANDONED_AFTER`] past these URLs' expiry.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartUrls {
    /// One URL per part asked for, in order.
    pub part_urls: Vec<PartUrl>,
    /// When the URLs expire (RFC 3339 UTC).
    pub expires: String,
    /// Seconds from this answer until they expire.
    pub expires_in_secs: u64,
}

/// `POST /v1/uploads/complete`: make the snapshot visible.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompleteRequest {
    /// The snapshot being saved.
    pub name: String,
    /// The upload's id.
    pub upload_id: String,
    /// Every part, by number (ascending, no gaps needed but no repeats),
    /// with the ETag its PUT answered.
    pub parts: Vec<CompletedPart>,
    /// The object's size in bytes: the completed object must have it.
    pub size: u64,
    /// The snapshot's index digest (hex, as `lazysnap inspect` shows it):
    /// the completed object's footer must hold it.
    pub index_digest: String,
}

/// One uploaded part of a [`CompleteRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompletedPart {
    /// The part number.
    pub part: u32,
    /// The `ETag` header of the part's PUT answer (quotes included or not).
    pub etag: String,
}

/// The answer to [`CompleteRequest`]: the snapshot exists and is what was
/// declared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Completed {
    /// The snapshot.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its index digest (hex).
    pub index_digest: String,
}

/// `POST /v1/uploads/abort`: throw an upload away (its parts and record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AbortRequest {
    /// The snapshot that was being saved.
    pub name: String,
    /// The upload's id.
    pub upload_id: String,
}

/// The answer to [`AbortRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Aborted {
    /// The snapshot that was being saved.
    pub name: String,
    /// The upload's id.
    pub upload_id: String,
}

/// The answer to `DELETE /v1/snapshots/{name}`: refused with 409 `refused`
/// while a diff (anywhere in the store) was made on the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deleted {
    /// The snapshot deleted.
    pub name: String,
}

/// The body of every failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong (see the module docs for the codes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`outside_prefix`, `mismatch`, …).
    pub code: String,
    /// One line for a person; never a URL, token or credential.
    pub message: String,
}
