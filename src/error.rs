//! The one error type of lazysnap.
//!
//! Every variant knows the errno a filesystem reply should carry and the exit
//! code the CLI should return, so adapters (CLI, FUSE) never guess. Messages
//! are one line and name the thing that failed.

use std::io;
use std::path::PathBuf;

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

    /// The object store failed (after retries) or answered something invalid.
    #[error("store: {0}")]
    Store(String),

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
            context: context.into(),
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
            what: what.into(),
            why: why.into(),
        }
    }

    /// A refusal (unsafe or unsupported input).
    pub fn refused(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Refused {
            what: what.into(),
            why: why.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// The errno a filesystem operation failing with this error reports.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Usage(_) => libc::EINVAL,
            Error::NotFound { .. } => libc::ENOENT,
            Error::Exists { .. } => libc::EEXIST,
            Error::Corrupt { .. } | Error::Store(_) | Error::Daemon(_) => libc::EIO,
            Error::Refused { .. } => libc::EPERM,
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
