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
    let fetcher = Fetcher::new(chain.layers(store), FetchConfig::default())?;
    let total: u64 = tree
        .names()
        .filter(|(_, e, _)| e.kind == Kind::File)
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
        for (layer, e, alias) in tree.names() {
            let mut e = e.clone();
            e.flags = 0;
            if e.kind == Kind::Hardlink {
                if alias {
                    // Shares an inode with a file of the same layer: written
                    // as a link once every file is in.
                    links.push(e);
                    continue;
                }
                // Its target was replaced above it: it keeps its own data.
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
