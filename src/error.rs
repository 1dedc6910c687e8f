//! The one error type of lazysnap.
//!
//! Every variant knows the errno a filesystem reply should carry and the exit
//! code the CLI should return, so adapters (CLI, FUSE) never guess. Messages
//! are one line and name the thing that failed.

use std::io;
use std::path::PathBuf;

/// How an object store failed. Retries, backoff and URL renewal decide
/// from this (in `store`), never from message text. (A missing object is
/// [`Error::NotFound`]; a request past its deadline, [`Error::Timeout`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorKind {
    /// Access refused (HTTP 403, a credential that cannot read this).
    Denied,
    /// A credential or presigned URL past its expiry: renew, then retry.
    Expired,
    /// The object is not the one opened (ETag changed, HTTP 412): the
    /// reads it touches fail with ESTALE, never mix two objects.
    Precondition,
    /// The store asks to slow down (HTTP 503 SlowDown, 429): back off.
    Throttled,
    /// Worth retrying: 5xx, a reset or cut connection, a short body.
    Transient,
    /// An answer that cannot be right (a 200 to a ranged GET, a bad range):
    /// retrying would not help.
    Invalid,
}

impl StoreErrorKind {
    /// Is another attempt worth making?
    pub fn retryable(self) -> bool {
        matches!(self, StoreErrorKind::Throttled | StoreErrorKind::Transient)
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by who is to blame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something malformed (bad flag value, bad name).
    #[error("{0}")]
    Usage(String),

    /// A named thing does not exist (snapshot, path inside a snapshot, dir).
    #[error("{what}: not found")]
    NotFound { what: String },

    /// Refusing to replace something that exists.
    #[error("{what}: already exists")]
    Exists { what: String },

    /// Data failed an integrity check: bad magic, digest mismatch, truncation.
    #[error("{what}: corrupt snapshot: {why}")]
    Corrupt { what: String, why: String },

    /// An input file that is not what it should be (a tar archive that is
    /// not one, or is damaged): named, with why.
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },

    /// Input (a tar, a snapshot index) asks for something unsafe or unsupported.
    #[error("{what}: refused: {why}")]
    Refused { what: String, why: String },

    /// The snapshot uses a format version or feature this build cannot read.
    #[error("{what}: unsupported: {why}")]
    Unsupported { what: String, why: String },

    /// A local I/O failure, with the path or operation it concerned.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// Something is in use: a busy mount, a mount point already mounted, a
    /// daemon that does not exit. `why` says what and, where it helps, what
    /// to do.
    #[error("{what}: {why}")]
    InUse { what: String, why: String },

    /// The object store failed (after retries) or answered something
    /// invalid; the kind decides retries, URL renewal and the errno.
    #[error("{what}: {why}")]
    Store {
        /// What kind of failure.
        kind: StoreErrorKind,
        /// The object or request.
        what: String,
        /// What the store said.
        why: String,
    },

    /// A failure inside lazysnap itself (a task that died, a broken
    /// invariant): never the user's or the store's doing.
    #[error("internal error: {0}")]
    Internal(String),

    /// A failure reported by another lazysnap process (the mount daemon).
    #[error("{0}")]
    Daemon(String),

    /// A fetch did not finish before its deadline.
    #[error("{what}: timed out after {secs:.1}s")]
    Timeout { what: String, secs: f64 },
}

impl Error {
    /// An I/O error with a context string (usually a path or an operation).
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: shorten(context.into()),
            source,
        }
    }

    /// An I/O error about a path.
    pub fn io_path(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::io(path.into().display().to_string(), source)
    }

    /// A corruption error.
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Corrupt {
            what: shorten(what.into()),
            why: why.into(),
        }
    }

    /// A refusal (unsafe or unsupported input).
    pub fn refused(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Refused {
            what: shorten(what.into()),
            why: why.into(),
        }
    }

    /// A store failure of `kind` about `what`.
    pub fn store(kind: StoreErrorKind, what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Store {
            kind,
            what: shorten(what.into()),
            why: why.into(),
        }
    }

    /// Something in use (see [`Error::InUse`]).
    pub fn in_use(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InUse {
            what: shorten(what.into()),
            why: why.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound {
            what: shorten(what.into()),
        }
    }

    /// The errno a filesystem operation failing with this error reports.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Usage(_) => libc::EINVAL,
            Error::NotFound { .. } => libc::ENOENT,
            Error::Exists { .. } => libc::EEXIST,
            // A replaced object: ESTALE, so a reader can tell "this file is
            // gone stale" from a failed device. Every other store failure,
            // denied and expired included, is EIO: read(2) has no
            // permission errno, and EACCES would send a user to chmod; the
            // store's own word is in the log and in `stats`.
            Error::Store { kind, .. } => match kind {
                StoreErrorKind::Precondition => libc::ESTALE,
                _ => libc::EIO,
            },
            Error::Corrupt { .. } | Error::Invalid { .. } | Error::Internal(_) | Error::Daemon(_) => libc::EIO,
            Error::Refused { .. } => libc::EPERM,
            Error::InUse { .. } => libc::EBUSY,
            Error::Unsupported { .. } => libc::ENOTSUP,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Timeout { .. } => libc::ETIMEDOUT,
        }
    }

    /// The process exit code for the CLI: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// A failure shared among several waiters (one fetch many readers wait
/// on) is handed to each as its own copy, with the same variant, kind,
/// errno and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Usage(m) => Error::Usage(m.clone()),
            Error::NotFound { what } => Error::NotFound { what: what.clone() },
            Error::Exists { what } => Error::Exists { what: what.clone() },
            Error::Corrupt { what, why } => Error::Corrupt {
                what: what.clone(),
                why: why.clone(),
            },
            Error::Invalid { what, why } => Error::Invalid {
                what: what.clone(),
                why: why.clone(),
            },
            Error::Refused { what, why } => Error::Refused {
                what: what.clone(),
                why: why.clone(),
            },
            Error::Unsupported { what, why } => Error::Unsupported {
                what: what.clone(),
                why: why.clone(),
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::InUse { what, why } => Error::InUse {
                what: what.clone(),
                why: why.clone(),
            },
            Error::Store { kind, what, why } => Error::Store {
                kind: *kind,
                what: what.clone(),
                why: why.clone(),
            },
            Error::Internal(m) => Error::Internal(m.clone()),
            Error::Daemon(m) => Error::Daemon(m.clone()),
            Error::Timeout { what, secs } => Error::Timeout {
                what: what.clone(),
                secs: *secs,
            },
        }
    }
}

/// Longest name (path, snapshot name) echoed whole in a message.
const SHOWN: usize = 160;

/// A name as a one-line message shows it: at most about [`SHOWN`] bytes
/// (its start and end around an ellipsis, with its full length), and no
/// line breaks.
pub fn shorten(s: String) -> String {
    let s = if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r")
    } else {
        s
    };
    if s.len() <= SHOWN {
        return s;
    }
    let mut head = SHOWN * 2 / 3;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - SHOWN / 3;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{} ({} bytes)", &s[..head], &s[tail..], s.len())
}

/// Attach a context string to `io::Result`s.
pub trait IoContext<T> {
    /// Map an `io::Error` into [`Error::Io`] naming `ctx`.
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(ctx(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_error_keeps_its_errno_and_message() {
        let all = [
            Error::Usage("u".into()),
            Error::not_found("n"),
            Error::Exists { what: "e".into() },
            Error::corrupt("c", "why"),
            Error::Invalid {
                what: "i".into(),
                why: "w".into(),
            },
            Error::refused("r", "w"),
            Error::Unsupported {
                what: "s".into(),
                why: "w".into(),
            },
            Error::io("io", io::Error::from_raw_os_error(libc::ENOSPC)),
            Error::io("io", io::Error::new(io::ErrorKind::UnexpectedEof, "short")),
            Error::in_use("m", "busy"),
            Error::store(StoreErrorKind::Denied, "k", "403"),
            Error::store(StoreErrorKind::Expired, "k", "expired"),
            Error::store(StoreErrorKind::Precondition, "k", "412"),
            Error::store(StoreErrorKind::Throttled, "k", "503"),
            Error::Internal("x".into()),
            Error::Daemon("d".into()),
            Error::Timeout {
                what: "t".into(),
                secs: 1.5,
            },
        ];
        for e in &all {
            let c = e.clone();
            assert_eq!(
                (c.errno(), c.exit_code(), c.to_string()),
                (e.errno(), e.exit_code(), e.to_string())
            );
        }
        assert_eq!(all[10].clone().errno(), libc::EIO);
        assert_eq!(all[12].clone().errno(), libc::ESTALE);
    }

    #[test]
    fn long_names_are_shortened() {
        assert_eq!(shorten("a/b".into()), "a/b");
        let long = "é".repeat(1000);
        let s = shorten(long.clone());
        assert!(s.len() < 200 && s.ends_with("(2000 bytes)"), "{s}");
        let e = Error::refused(long, "too long");
        assert!(e.to_string().len() < 250);
        assert_eq!(shorten("a\nb".into()), "a\\nb");
    }
}
