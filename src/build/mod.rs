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

use crate::error::{Error, Result};
use crate::format::writer::{WriterOptions, Written};
use crate::format::Parent;
use crate::progress;
use crate::snapshot::Chain;
use crate::store::Store;
use publish::{publish, publish_if};
use walk::{Base, Walker};

/// Snapshot the directory `dir` as `name`.
pub fn create(rt: &Handle, store: &Store, name: &str, dir: &Path, opts: WriterOptions) -> Result<Written> {
    let mut walker = Walker::new(Base::Full);
    let total = walker.scan(dir)?;
    publish(rt, store, name, opts, progress::bytes(Some(total), "create"), |w| {
        walker.walk(w, dir).map(|_| ())
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
    mut opts: WriterOptions,
) -> Result<Written> {
    let chain = rt.block_on(Chain::open(store, parent))?;
    let tree = chain.tree()?;
    opts.parent = Some(parent_of(&chain));
    publish(rt, store, name, opts, progress::bytes(None, "create"), |w| {
        Walker::new(Base::View { tree: &tree, checksum })
            .walk(w, dir)
            .map(|_| ())
    })
}

/// Save the live view of an overlay, the upper dir `upper` over snapshot
/// `below`, as the diff snapshot `new` of `parent` (the last snapshot this
/// upper dir was saved as, or `below` itself). `None`: nothing changed
/// since `parent`, and nothing was published.
pub fn save(
    rt: &Handle,
    store: &Store,
    below: &str,
    parent: &str,
    upper: &Path,
    new: &str,
    mut opts: WriterOptions,
) -> Result<Option<Written>> {
    let against_chain = rt.block_on(Chain::open(store, parent))?;
    let against = against_chain.tree()?;
    let below_tree;
    let below = if parent == below {
        &against
    } else {
        let chain = rt.block_on(Chain::open(store, below))?;
        let n = chain.snapshots.len();
        let prefix = against_chain.snapshots.get(..n).unwrap_or_default();
        if prefix
            .iter()
            .map(|s| s.index_digest())
            .ne(chain.snapshots.iter().map(|s| s.index_digest()))
        {
            return Err(Error::refused(
                format!("snapshot {parent}"),
                format!("it does not descend from {below}, the snapshot the workspace was mounted on"),
            ));
        }
        below_tree = chain.tree()?;
        &below_tree
    };
    opts.parent = Some(parent_of(&against_chain));
    publish_if(rt, store, new, opts, progress::bytes(None, "save"), |w| {
        Walker::new(Base::Upper {
            below,
            against: &against,
        })
        .walk(w, upper)
    })
}

/// The parent reference to the top of `chain`.
fn parent_of(chain: &Chain) -> Parent {
    Parent {
        name: chain.top().name.clone(),
        index_digest: chain.top().index_digest(),
    }
}
