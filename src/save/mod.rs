//! `lazysnap save`: an overlay upper dir becomes a diff snapshot.
//!
//! The upper dir holds exactly what changed on top of the mounted chain:
//! new and copied-up entries, whiteouts (character devices 0/0) for deletions
//! and `trusted.overlay.opaque=y` on directories that replaced a lower one.
//! Those become, in the diff, entries, `.wh.NAME` whiteouts and opaque
//! directories (`.wh..wh..opq`), OCI-style. Lower data is never read: the
//! upper dir is walked directly (not through the overlay), and the diff
//! names its parent by name and index digest. Overlay's own bookkeeping
//! xattrs (`trusted.overlay.*`) are not saved.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tokio::runtime::Handle;

use crate::cmd::create::{entry_from_meta, link_or_open, sorted_names};
use crate::cmd::publish;
use crate::error::{Error, IoContext, Result};
use crate::format::writer::{SnapshotWriter, WriterOptions, Written};
use crate::format::{path, Entry, Kind, Parent, FLAG_OPAQUE};
use crate::progress;
use crate::snapshot::Snapshot;
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
    let base = rt.block_on(Snapshot::open(store, parent))?;
    opts.parent = Some(Parent {
        name: parent.to_string(),
        index_digest: base.index_digest(),
    });
    let meta = std::fs::symlink_metadata(upper).ctx(|| upper.display().to_string())?;
    publish(rt, store, new, opts, progress::bytes(None, "save"), |w| {
        let mut links = std::collections::HashMap::new();
        walk(w, &mut links, upper, Vec::new(), &meta)
    })
}

fn walk<W: std::io::Write + Send + 'static>(
    w: &mut SnapshotWriter<W>,
    links: &mut std::collections::HashMap<(u64, u64), Vec<u8>>,
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
                walk(w, links, &child, path::join(&rel, n.as_bytes()), &m)?;
            }
            Ok(())
        }
        Kind::File => {
            let before = (meta.len(), meta.mtime(), meta.mtime_nsec());
            let (e, mut f) = link_or_open(links, abs, &rel, meta, e)?;
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
