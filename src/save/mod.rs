//! `lazysnap save`: an overlay upper dir becomes a diff snapshot.
//!
//! The upper dir holds exactly what changed on top of the mounted chain:
//! new and copied-up entries, whiteouts (character devices 0/0) for deletions
//! and `trusted.overlay.opaque=y` on directories that replaced a lower one.
//! Those become, in the diff, entries, `.wh.NAME` whiteouts and opaque
//! directories (`.wh..wh..opq`), OCI-style. Lower data is never read: the
//! upper dir is walked directly (not through the overlay), and the diff
//! names its parent by name and index digest. A copy-up that changed
//! nothing (same metadata, same content digest) is left out entirely; one
//! whose metadata changed carries its data again, because an OCI layer
//! entry for a regular file always includes its content. Overlay's own bookkeeping
//! xattrs (`trusted.overlay.*`) are not saved.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tokio::runtime::Handle;

use crate::cmd::create::{digest_of, entry_from_meta, link_or_open, same_meta, sorted_names};
use crate::cmd::publish;
use crate::error::{Error, IoContext, Result};
use crate::format::writer::{SnapshotWriter, WriterOptions, Written};
use crate::format::{path, Entry, Kind, Parent, FLAG_OPAQUE};
use crate::layer::Tree;
use crate::progress;
use crate::snapshot::Chain;
use crate::store::Store;

const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Save the changes in `upper` (an overlay upper dir over snapshot `parent`)
/// as the diff snapshot `new`.
pub fn save(
    rt: &Handle,
    store: &Store,
    parent: &str,
    upper: &Path,
    new: &str,
    mut opts: WriterOptions,
) -> Result<Written> {
    // The mounted chain: its top is the parent; its view recognises
    // copy-ups that changed nothing.
    let chain = rt.block_on(Chain::open(store, parent))?;
    opts.parent = Some(Parent {
        name: parent.to_string(),
        index_digest: chain.top().index_digest(),
    });
    let lower = chain.tree()?;
    let meta = std::fs::symlink_metadata(upper).ctx(|| upper.display().to_string())?;
    publish(rt, store, new, opts, progress::bytes(None, "save"), |w| {
        let mut walker = Walker {
            lower: &lower,
            links: std::collections::HashMap::new(),
        };
        walker.walk(w, upper, Vec::new(), &meta)
    })
}

struct Walker<'a> {
    lower: &'a Tree,
    links: std::collections::HashMap<(u64, u64), Vec<u8>>,
}

impl Walker<'_> {
    /// Is this upper file a copy-up identical to its lower version (same
    /// metadata and content)? Then the diff need not carry it at all.
    /// Only the local copy is hashed; lower data is never read.
    fn unchanged_copy_up(&self, abs: &Path, e: &Entry, meta: &Metadata) -> Result<bool> {
        if meta.nlink() > 1 {
            return Ok(false);
        }
        let Some(low) = self
            .lower
            .resolve(&e.path)
            .and_then(|i| self.lower.node(i))
            .map(|n| self.lower.entry(n))
        else {
            return Ok(false);
        };
        if !same_meta(e, low) {
            return Ok(false);
        }
        Ok(digest_of(abs)? == low.digest)
    }

    fn walk<W: std::io::Write + Send + 'static>(
        &mut self,
        w: &mut SnapshotWriter<W>,
        abs: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
    ) -> Result<()> {
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            let mut wh = Entry::new(rel, Kind::Whiteout);
            wh.mtime = meta.mtime();
            wh.mtime_nsec = meta.mtime_nsec() as u32;
            return w.add(wh, None);
        }
        let Some(mut e) = entry_from_meta(abs, rel.clone(), meta)? else {
            return Ok(());
        };
        let opaque = e.xattrs.iter().any(|(k, v)| k == OPAQUE_XATTR && v == b"y");
        e.xattrs.retain(|(k, _)| !k.starts_with(OVERLAY_XATTRS));
        match e.kind {
            Kind::Dir => {
                if opaque && !rel.is_empty() {
                    e.flags = FLAG_OPAQUE;
                }
                w.add(e, None)?;
                for n in sorted_names(abs)? {
                    let child = abs.join(&n);
                    let m = std::fs::symlink_metadata(&child).ctx(|| child.display().to_string())?;
                    self.walk(w, &child, path::join(&rel, n.as_bytes()), &m)?;
                }
                Ok(())
            }
            Kind::File => {
                if self.unchanged_copy_up(abs, &e, meta)? {
                    return Ok(());
                }
                let before = (meta.len(), meta.mtime(), meta.mtime_nsec());
                let (e, mut f) = link_or_open(&mut self.links, abs, &rel, meta, e)?;
                w.add(e, f.as_mut().map(|f| f as &mut dyn std::io::Read))?;
                // Written while we read it: the snapshot would hold a mix.
                let m = std::fs::symlink_metadata(abs).ctx(|| abs.display().to_string())?;
                if (m.len(), m.mtime(), m.mtime_nsec()) != before {
                    return Err(Error::refused(
                        path::display(&rel),
                        "changed while it was being saved; nothing was published, save again",
                    ));
                }
                Ok(())
            }
            _ => w.add(e, None),
        }
    }
}
