//! The inode table of a mounted view.
//!
//! A view is a sorted list of (layer, entry) pairs: for a single snapshot, all
//! of its entries; for a chain, the merged result of its layers. The table
//! gives every entry a stable inode number (its position in the view, plus
//! one), links children to parents, makes hardlinks share their target's
//! inode with the right link count, and answers name lookups by binary search.

pub mod merge;

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{path, Entry, Index, Kind};

/// The root inode number (FUSE convention).
pub const ROOT: u64 = 1;

/// One inode.
#[derive(Debug, Clone)]
pub struct Node {
    /// Layer holding the entry.
    pub layer: u32,
    /// Entry number within that layer's index.
    pub entry: u32,
    /// Parent directory inode.
    pub parent: u64,
    /// Link count.
    pub nlink: u32,
    /// For hardlink names: the inode they share.
    pub alias: Option<u64>,
    /// Directory children, sorted by name.
    pub children: Vec<(Box<[u8]>, u64)>,
}

/// See the module docs.
pub struct Tree {
    layers: Vec<Arc<Index>>,
    nodes: Vec<Node>,
    /// Inodes with more than one name -> every name's node number, in view order.
    groups: HashMap<u64, Vec<u64>>,
}

impl Tree {
    /// Build from a view: (layer, entry) pairs sorted by path, root first.
    pub fn build(layers: Vec<Arc<Index>>, view: Vec<(u32, u32)>) -> Result<Tree> {
        let bad = |why: String| Error::corrupt("view", why);
        let entry = |&(l, e): &(u32, u32)| -> &Entry { &layers[l as usize].entries[e as usize] };
        let mut nodes: Vec<Node> = Vec::with_capacity(view.len());
        let mut stack: Vec<(usize, &[u8])> = Vec::new();
        for (pos, key) in view.iter().enumerate() {
            let e = entry(key);
            let parent = if pos == 0 {
                if !e.path.is_empty() || e.kind != Kind::Dir {
                    return Err(bad("the view does not start with the root directory".into()));
                }
                ROOT
            } else {
                while stack.last().is_some_and(|(_, d)| !path::is_within(&e.path, d)) {
                    stack.pop();
                }
                match stack.last() {
                    Some(&(i, d)) if d == path::parent(&e.path) => i as u64 + 1,
                    _ => return Err(bad(format!("{}: no parent directory", path::display(&e.path)))),
                }
            };
            nodes.push(Node {
                layer: key.0,
                entry: key.1,
                parent,
                nlink: if e.kind == Kind::Dir { 2 } else { 1 },
                alias: None,
                children: Vec::new(),
            });
            if e.kind == Kind::Dir {
                stack.push((pos, &e.path));
            }
        }
        // A hardlink shares an inode with the other names of its group *in
        // its own layer*: the layer's file at the link target while the view
        // still shows it, else (that name was deleted or replaced above) the
        // first surviving name of the group, which carries the data fields
        // itself. Names are never resolved across layers: applying the chain
        // with stock tar and OCI rules leaves exactly these groups.
        let mut orphans: HashMap<(u32, &[u8]), usize> = HashMap::new();
        let mut groups: HashMap<u64, Vec<u64>> = HashMap::new();
        for pos in 0..view.len() {
            let e = entry(&view[pos]);
            if e.kind != Kind::Hardlink {
                continue;
            }
            let layer = view[pos].0;
            let in_layer = view
                .binary_search_by(|k| path::cmp(&entry(k).path, &e.link))
                .ok()
                .filter(|&t| view[t].0 == layer && entry(&view[t]).kind == Kind::File);
            let t = match in_layer {
                Some(t) => t,
                None => match orphans.entry((layer, &e.link)) {
                    std::collections::hash_map::Entry::Occupied(o) => *o.get(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(pos);
                        continue;
                    }
                },
            };
            nodes[pos].alias = Some(t as u64 + 1);
            nodes[t].nlink += 1;
            groups
                .entry(t as u64 + 1)
                .or_insert_with(|| vec![t as u64 + 1])
                .push(pos as u64 + 1);
        }
        for pos in 1..view.len() {
            let e = entry(&view[pos]);
            let parent = nodes[pos].parent as usize - 1;
            let ino = nodes[pos].alias.unwrap_or(pos as u64 + 1);
            nodes[parent].children.push((path::file_name(&e.path).into(), ino));
            if e.kind == Kind::Dir {
                nodes[parent].nlink += 1;
            }
        }
        for members in groups.values_mut() {
            members.sort_unstable();
        }
        Ok(Tree { layers, nodes, groups })
    }

    /// Number of inodes (names, counting hardlink names once each).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Is the view empty? (Never: it always has a root.)
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The layers' indexes.
    pub fn layers(&self) -> &[Arc<Index>] {
        &self.layers
    }

    /// The node of inode `ino` (aliases resolved).
    pub fn node(&self, ino: u64) -> Option<&Node> {
        let n = self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)?;
        match n.alias {
            Some(t) => self.node(t),
            None => Some(n),
        }
    }

    /// Where the entry of the name at path `p` lives (layer, entry), without
    /// resolving hardlink names: two views of one chain prefix show the same
    /// entry at `p` exactly when their slots agree.
    pub fn slot(&self, p: &[u8]) -> Option<(u32, u32)> {
        let i = self
            .nodes
            .binary_search_by(|n| path::cmp(&self.entry(n).path, p))
            .ok()?;
        let n = &self.nodes[i];
        Some((n.layer, n.entry))
    }

    /// The inode number a name really has (hardlink names resolved).
    pub fn canonical(&self, ino: u64) -> Option<u64> {
        let n = self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)?;
        Some(n.alias.unwrap_or(ino))
    }

    /// The entry of a node.
    pub fn entry(&self, n: &Node) -> &Entry {
        &self.layers[n.layer as usize].entries[n.entry as usize]
    }

    /// Child `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let n = self.node(parent)?;
        n.children
            .binary_search_by(|(c, _)| c.as_ref().cmp(name))
            .ok()
            .map(|i| n.children[i].1)
    }

    /// Inode of a path in the view.
    pub fn resolve(&self, p: &[u8]) -> Option<u64> {
        let mut ino = ROOT;
        if p.is_empty() {
            return Some(ino);
        }
        for c in p.split(|b| *b == b'/') {
            ino = self.lookup(ino, c)?;
        }
        Some(ino)
    }

    /// Every name of the view in order: (layer, entry, the path of the name
    /// whose inode it shares, for every name but the first of a hardlink
    /// group). Hardlink names are listed where their entry sorts.
    pub fn names(&self) -> impl Iterator<Item = (u32, &Entry, Option<&[u8]>)> + '_ {
        self.nodes.iter().map(|n| {
            let same_as = n
                .alias
                .and_then(|t| self.nodes.get(t as usize - 1))
                .map(|t| self.entry(t).path.as_slice());
            (n.layer, self.entry(n), same_as)
        })
    }

    /// The paths of every name of inode `ino` (hardlink names resolved),
    /// in view order; one path for an inode with a single name.
    pub fn paths_of(&self, ino: u64) -> Vec<&[u8]> {
        let Some(canon) = self.canonical(ino) else {
            return Vec::new();
        };
        match self.groups.get(&canon) {
            Some(members) => members
                .iter()
                .filter_map(|&m| self.nodes.get(m as usize - 1))
                .map(|n| self.entry(n).path.as_slice())
                .collect(),
            None => self
                .nodes
                .get(canon as usize - 1)
                .map(|n| vec![self.entry(n).path.as_slice()])
                .unwrap_or_default(),
        }
    }

    /// Every inode number that is not an alias.
    pub fn inodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alias.is_none())
            .map(|(i, _)| i as u64 + 1)
    }
}
