//! Opening a snapshot from a store: footer and index in at most two reads.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::footer::{Footer, FOOTER_LEN, SKIPPABLE_HEADER};
use crate::format::limits;
use crate::format::{Digest, Index};
use crate::store::{snapshot_key, ObjectHandle, Priority, Store};

/// Bytes read from the tail on open: the footer plus, usually, the index
/// (a 20k-file tree has a ~600 KiB index, mostly its 16-byte content digests).
pub const SUFFIX_READ: u64 = 1024 * 1024;

/// An opened snapshot: where it lives and its decoded index.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Snapshot name in its store.
    pub name: String,
    /// Object key.
    pub key: String,
    /// The object, opened: every read of this snapshot goes through it.
    pub object: ObjectHandle,
    /// Object size.
    pub size: u64,
    /// The footer.
    pub footer: Footer,
    /// The index.
    pub index: Arc<Index>,
}

impl Snapshot {
    /// Digest of the compressed index (what children reference).
    pub fn index_digest(&self) -> Digest {
        self.footer.index_digest
    }

    /// Read the footer and index of `name`: one suffix read, and a second
    /// ranged read only when the index does not fit in the first.
    pub async fn open(store: &Store, name: &str) -> Result<Snapshot> {
        Snapshot::open_to_read(store, name, 0).await
    }

    /// [`Snapshot::open`]; with `head` > 0, for a reader of every frame in
    /// order (a full restore), which the store may start serving while the
    /// index is on its way (see [`Store::open_object_to_read`]).
    pub async fn open_to_read(store: &Store, name: &str, head: u64) -> Result<Snapshot> {
        let key = snapshot_key(name)?;
        let what = format!("snapshot {name}");
        let (object, tail) = store
            .open_object_to_read(&key, SUFFIX_READ, head)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found(format!("snapshot {name} in {}", store.describe())),
                e => e,
            })?;
        let size = object.size();
        if tail.len() < FOOTER_LEN {
            return Err(Error::corrupt(&what, "shorter than a footer (truncated?)"));
        }
        let footer = Footer::decode(&tail[tail.len() - FOOTER_LEN..], size, &what)?;
        if footer.index_len > limits::MAX_INDEX_COMPRESSED {
            return Err(Error::corrupt(&what, "index frame larger than 256 MiB"));
        }
        let payload_len = footer.index_len - SKIPPABLE_HEADER as u64;
        if footer.index_raw_len > limits::max_index_raw(payload_len) {
            return Err(Error::corrupt(
                &what,
                format!(
                    "index claims {} bytes decompressed from {payload_len}: more than the format allows",
                    footer.index_raw_len
                ),
            ));
        }
        let tail_start = size - tail.len() as u64;
        let frame = if footer.index_offset >= tail_start {
            let s = (footer.index_offset - tail_start) as usize;
            tail.slice(s..tail.len() - FOOTER_LEN)
        } else {
            let end = footer.index_offset + footer.index_len;
            object.get_range(footer.index_offset..end, Priority::Foreground).await?
        };
        let payload = footer.index_payload(&frame, &what)?;
        let raw = decompress_index(payload, footer.index_raw_len)
            .map_err(|e| Error::corrupt(&what, format!("index: {e}")))?;
        if raw.len() as u64 != footer.index_raw_len {
            return Err(Error::corrupt(&what, "index: wrong decompressed length"));
        }
        let index = Index::decode(&raw, &what)?;
        if index.data_size() != footer.index_offset {
            return Err(Error::corrupt(&what, "frame table does not end where the index starts"));
        }
        tracing::debug!(
            "opened snapshot {name}: {size} bytes, index {} -> {} bytes, {} entries, {} frames{}",
            footer.index_len,
            footer.index_raw_len,
            index.entries.len(),
            index.frames.len(),
            index
                .parent
                .as_ref()
                .map(|p| format!(", parent {}", p.name))
                .unwrap_or_default()
        );
        Ok(Snapshot {
            name: name.to_string(),
            key,
            object,
            size,
            footer,
            index: Arc::new(index),
        })
    }
}

/// Decompress an index payload into at most `declared + 1` bytes, growing
/// the buffer as output actually arrives (a declared length is a claim,
/// not a reason to allocate).
fn decompress_index(payload: &[u8], declared: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let start = declared.min(payload.len() as u64 * 4) as usize;
    let mut raw = Vec::with_capacity(start);
    zstd::stream::read::Decoder::with_buffer(payload)?
        .take(declared + 1)
        .read_to_end(&mut raw)?;
    Ok(raw)
}

/// Deepest chain accepted (a loop of parents would otherwise never end).
pub const MAX_CHAIN: usize = 4096;

/// A snapshot and all its ancestors, bottom (full snapshot) first.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Base first, `name` last.
    pub snapshots: Vec<Snapshot>,
}

impl Chain {
    /// Open `name` and follow its parent references down to a full snapshot,
    /// checking that every parent is the exact snapshot its child was made
    /// against (index digest).
    pub async fn open(store: &Store, name: &str) -> Result<Chain> {
        Chain::open_to_read(store, name, 0).await
    }

    /// [`Chain::open`], the top snapshot opened for a full read of its
    /// first `head` bytes onwards (see [`Snapshot::open_to_read`]).
    pub async fn open_to_read(store: &Store, name: &str, head: u64) -> Result<Chain> {
        let mut snapshots = vec![Snapshot::open_to_read(store, name, head).await?];
        loop {
            let child = &snapshots[snapshots.len() - 1];
            let Some(parent) = child.index.parent.clone() else {
                break;
            };
            if snapshots.len() >= MAX_CHAIN {
                return Err(Error::corrupt(
                    format!("snapshot {name}"),
                    format!("chain deeper than {MAX_CHAIN}"),
                ));
            }
            // A missing parent is a broken chain, not a missing snapshot:
            // the snapshot asked for is there (and a signer says 422, not
            // 404, so its pods see the same).
            let p = Snapshot::open(store, &parent.name).await.map_err(|e| match e {
                Error::NotFound { .. } => Error::Invalid {
                    what: format!("snapshot {}", child.name),
                    why: format!(
                        "its chain is broken: parent {} is not in {}",
                        parent.name,
                        store.describe()
                    ),
                },
                e => e,
            })?;
            if p.index_digest() != parent.index_digest {
                return Err(Error::corrupt(
                    format!("snapshot {}", child.name),
                    format!(
                        "parent {} is not the snapshot it was made from (index digest differs)",
                        parent.name
                    ),
                ));
            }
            snapshots.push(p);
        }
        snapshots.reverse();
        Ok(Chain { snapshots })
    }

    /// The snapshot that was asked for (the top of the chain).
    pub fn top(&self) -> &Snapshot {
        &self.snapshots[self.snapshots.len() - 1]
    }

    /// The merged view of the chain as an inode table.
    pub fn tree(&self) -> Result<crate::layer::Tree> {
        let indexes: Vec<Arc<Index>> = self.snapshots.iter().map(|s| s.index.clone()).collect();
        let refs: Vec<&Index> = indexes.iter().map(|i| i.as_ref()).collect();
        let view = crate::layer::merge::merge(&refs);
        crate::layer::Tree::build(indexes, view)
    }

    /// The fetcher layers of the chain, in the same order.
    pub fn layers(&self) -> Vec<crate::fetch::fetcher::Layer> {
        self.snapshots
            .iter()
            .map(|s| crate::fetch::fetcher::Layer {
                object: s.object.clone(),
                name: s.name.clone(),
                frames: Arc::new(s.index.frames.clone()),
            })
            .collect()
    }
}
