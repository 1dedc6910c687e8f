//! Writing snapshots: every way entries get into a new snapshot object.
//!
//! - [`walk`]: the one directory walker, for `create`, `create --parent` and
//!   `save` (a plain tree, a tree against a view, an overlay upper dir).
//! - [`import`]: a stock `.tar` / `.tar.gz` / `.tar.zst` stream.
//! - [`squash`]: a chain's merged view read back through the fetcher.
//! - [`publish`]: the writer streaming into a store upload that becomes
//!   visible under its name only when complete.

pub mod import;
pub mod publish;
pub mod squash;
pub mod walk;

use std::path::Path;

use tokio::runtime::Handle;

use crate::error::Result;
use crate::format::writer::{WriterOptions, Written};
use crate::format::Parent;
use crate::progress;
use crate::snapshot::Chain;
use crate::store::Store;
use publish::publish;
use walk::{Base, Walker};

/// Snapshot the directory `dir` as `name`.
pub fn create(rt: &Handle, store: &Store, name: &str, dir: &Path, opts: WriterOptions) -> Result<Written> {
    publish(rt, store, name, opts, progress::bytes(None, "create"), |w| {
        Walker::new(Base::Full).walk(w, dir)
    })
}

/// Snapshot the directory `dir` as a diff `name` against the chain of
/// `parent`: only what differs from the parent's merged view is written,
/// plus whiteouts for what `dir` no longer has. Parent data is never
/// fetched: entries are compared by metadata, and with `checksum` also by
/// the content digest of the local file.
pub fn create_diff(
    rt: &Handle,
    store: &Store,
    name: &str,
    dir: &Path,
    parent: &str,
    checksum: bool,
    opts: WriterOptions,
) -> Result<Written> {
    diff_of(rt, store, name, parent, opts, |tree| Base::View { tree, checksum }, dir)
}

/// Save the changes in `upper` (an overlayfs upper dir over snapshot
/// `parent`) as the diff snapshot `new`.
pub fn save(rt: &Handle, store: &Store, parent: &str, upper: &Path, new: &str, opts: WriterOptions) -> Result<Written> {
    diff_of(rt, store, new, parent, opts, |tree| Base::Upper { tree }, upper)
}

/// Walk `dir` against the merged view of `parent`'s chain into the diff
/// snapshot `name`, which names its parent by name and index digest.
fn diff_of(
    rt: &Handle,
    store: &Store,
    name: &str,
    parent: &str,
    mut opts: WriterOptions,
    base: impl for<'t> FnOnce(&'t crate::layer::Tree) -> Base<'t>,
    dir: &Path,
) -> Result<Written> {
    let chain = rt.block_on(Chain::open(store, parent))?;
    let tree = chain.tree()?;
    opts.parent = Some(Parent {
        name: parent.to_string(),
        index_digest: chain.top().index_digest(),
    });
    let base = base(&tree);
    let verb = if matches!(base, Base::Upper { .. }) {
        "save"
    } else {
        "create"
    };
    publish(rt, store, name, opts, progress::bytes(None, verb), |w| {
        Walker::new(base).walk(w, dir)
    })
}
