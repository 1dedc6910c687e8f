//! `lazysnap squash NAME --name NEW`: one full snapshot equal to a chain's
//! merged view, so it opens in at most two reads again.
//!
//! File data is read through a [`Fetcher`] over the chain's layers (memory
//! budget, coalesced reads, each file from the layer that holds it) and
//! written in view order; hardlink names follow once their targets exist.

use tokio::runtime::Handle;

use super::publish::publish;
use crate::error::Result;
use crate::fetch::fetcher::{BlockingReader, FetchConfig, Fetcher};
use crate::format::writer::{WriterOptions, Written};
use crate::format::{Entry, Kind};
use crate::progress;
use crate::snapshot::Chain;
use crate::store::Store;

/// Write the merged view of `name`'s chain as the full snapshot `new`.
pub fn squash(rt: &Handle, store: &Store, name: &str, new: &str, opts: WriterOptions) -> Result<Written> {
    let chain = rt.block_on(Chain::open(store, name))?;
    let tree = chain.tree()?;
    let fetcher = Fetcher::new(chain.layers(), FetchConfig::default())?;
    let total: u64 = tree
        .names()
        .filter(|(_, e, same_as)| e.kind.has_data() && same_as.is_none())
        .map(|(_, e, _)| e.size)
        .sum();
    let pb = progress::bytes(Some(total), "squash");
    let opts = WriterOptions {
        parent: None,
        prefetch: chain.top().index.prefetch.clone(),
        ..opts
    };
    publish(rt, store, new, opts, pb.clone(), |w| {
        let mut links: Vec<Entry> = Vec::new();
        for (layer, e, same_as) in tree.names() {
            let mut e = e.clone();
            e.flags = 0;
            if let Some(first) = same_as {
                // Shares an inode with an earlier name: written as a link
                // to it once every file is in.
                e.kind = Kind::Hardlink;
                e.link = first.to_vec();
                links.push(e);
                continue;
            }
            if e.kind == Kind::Hardlink {
                // The first surviving name of a group whose file was
                // deleted or replaced above it: it carries the data.
                e.kind = Kind::File;
                e.link.clear();
            }
            if e.kind == Kind::File {
                let mut r = BlockingReader::new(rt, &fetcher, layer, e.offset..e.offset + e.size);
                w.add(e, Some(&mut r))?;
            } else {
                w.add(e, None)?;
            }
        }
        for e in links {
            w.add(e, None)?;
        }
        Ok(())
    })
}
