//! lazysnap: workspace snapshots as indexed multi-frame `.tar.zst` objects,
//! restored lazily through FUSE and saved as diffs.
//!
//! The pipeline, one module each, data flowing one way:
//! [`format`] (bytes on the wire) → [`store`] (where objects live) →
//! [`fetch`] (frames: ranged reads, digests, decompression) → [`cmd`] (the
//! operations behind the CLI).

pub mod build;
pub mod cmd;
pub mod error;
pub mod fetch;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod layer;
pub mod mount;
pub mod progress;
pub mod snapshot;
pub mod store;
pub mod sys;

pub use error::{Error, Result};
