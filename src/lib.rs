//! lazysnap: workspace snapshots as indexed multi-frame `.tar.zst` objects,
//! restored lazily through FUSE and saved as diffs.
//!
//! The pipeline, one module each, data flowing one way:
//! [`format`] (bytes on the wire, and their limits) → [`store`] (where
//! objects live) → [`snapshot`] (opening a snapshot or a chain) → [`fetch`]
//! (frames: ranged reads, digests, decompression) → [`layer`] (the merged
//! view of a chain) → [`fs`] (filesystem logic) → [`fuse`] (the fuser
//! adapter) and [`mount`] (a mount in this process).
//!
//! Writing goes the other way through [`build`]: one directory walker for
//! `create`, `create --parent` and `save`, plus `import` and `squash`, all
//! publishing through one writer. [`cmd`] holds the read-side operations
//! and the mount daemon behind the CLI; nothing below it imports it.
//! [`signer`] is the service that holds a store's credentials and hands
//! pods presigned URLs, scoped by token.

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
pub mod shaper;
pub mod signer;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod sys;
pub mod tmp;
pub mod workspace;

pub use error::{Error, Result};
