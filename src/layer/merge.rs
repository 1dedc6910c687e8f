//! Merging a snapshot chain into one view, with OCI layer semantics.
//!
//! Layers are applied bottom to top. In a diff layer: a whiteout deletes its
//! path and everything beneath it; an opaque directory hides every lower
//! child of that directory; a non-directory replacing a directory deletes
//! the directory's lower subtree; anything else replaces the lower entry at
//! the same path (directories keep their lower children). Both inputs are
//! sorted by [`path::cmp`], so one merge pass per layer keeps the view sorted.

use crate::format::{path, Index, Kind};

/// A position in a chain: (layer number, entry number in that layer).
pub type Slot = (u32, u32);

/// The merged view of `layers` (bottom first): sorted slots, root first.
/// Whiteout entries never appear in the result.
pub fn merge(layers: &[&Index]) -> Vec<Slot> {
    let Some(base) = layers.first() else {
        return Vec::new();
    };
    let mut view: Vec<Slot> = (0..base.entries.len() as u32)
        .filter(|&e| base.entries[e as usize].kind != Kind::Whiteout)
        .map(|e| (0, e))
        .collect();
    for (l, upper) in layers.iter().enumerate().skip(1) {
        view = apply(layers, &view, l as u32, upper);
    }
    view
}

fn apply(layers: &[&Index], lower: &[Slot], l: u32, upper: &Index) -> Vec<Slot> {
    let entry = |s: &Slot| &layers[s.0 as usize].entries[s.1 as usize];
    let mut out = Vec::with_capacity(lower.len() + upper.entries.len());
    // Lower entries strictly beneath this path are dropped.
    let mut hide: Option<&[u8]> = None;
    let (mut i, mut j) = (0usize, 0usize);
    while i < lower.len() || j < upper.entries.len() {
        if let Some(lo) = lower.get(i) {
            let lp = &entry(lo).path;
            if hide.is_some_and(|h| path::is_within(lp, h)) {
                i += 1;
                continue;
            }
        }
        let up = upper.entries.get(j);
        let ord = match (lower.get(i), up) {
            (Some(lo), Some(u)) => path::cmp(&entry(lo).path, &u.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                out.push(lower[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                // New in this layer (a whiteout of nothing is a no-op).
                if let Some(u) = up {
                    if u.kind != Kind::Whiteout {
                        out.push((l, j as u32));
                    }
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (lo, u) = (entry(&lower[i]), &upper.entries[j]);
                let lower_is_dir = lo.kind == Kind::Dir;
                match u.kind {
                    Kind::Whiteout => hide = Some(&u.path),
                    Kind::Dir => {
                        out.push((l, j as u32));
                        if u.is_opaque() || !lower_is_dir {
                            hide = Some(&u.path);
                        }
                    }
                    _ => {
                        out.push((l, j as u32));
                        if lower_is_dir {
                            hide = Some(&u.path);
                        }
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Entry, FLAG_OPAQUE};
    use std::collections::BTreeMap;

    fn index(entries: Vec<(&str, Kind, u8)>) -> Index {
        let mut entries: Vec<Entry> = entries
            .into_iter()
            .map(|(p, k, f)| {
                let mut e = Entry::new(p.as_bytes().to_vec(), k);
                e.flags = f;
                e
            })
            .collect();
        entries.sort_by(|a, b| path::cmp(&a.path, &b.path));
        Index {
            created_ns: 0,
            tool: String::new(),
            frame_size: 0,
            level: 0,
            tar_size: 0,
            entries,
            frames: Vec::new(),
            parent: None,
            prefetch: Vec::new(),
        }
    }

    fn paths(layers: &[&Index]) -> Vec<(String, u32)> {
        merge(layers)
            .into_iter()
            .map(|(l, e)| (path::display(&layers[l as usize].entries[e as usize].path), l))
            .collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_type_changes() {
        use Kind::*;
        let base = index(vec![
            ("", Dir, 0),
            ("a", Dir, 0),
            ("a/x", File, 0),
            ("a/y", File, 0),
            ("b", Dir, 0),
            ("b/z", File, 0),
            ("c", File, 0),
            ("d", Dir, 0),
            ("d/1", File, 0),
            ("e", Dir, 0),
            ("e/keep", File, 0),
        ]);
        let diff = index(vec![
            ("", Dir, 0),
            ("a", Dir, FLAG_OPAQUE),
            ("a/new", File, 0),
            ("b", Whiteout, 0),
            ("c", Dir, 0),
            ("c/inner", File, 0),
            ("d", File, 0),
            ("e", Dir, 0),
            ("e/add", File, 0),
            ("gone", Whiteout, 0),
        ]);
        let got = paths(&[&base, &diff]);
        let want: Vec<(String, u32)> = [
            ("/", 1),
            ("a", 1),
            ("a/new", 1),
            ("c", 1),
            ("c/inner", 1),
            ("d", 1),
            ("e", 1),
            ("e/add", 1),
            ("e/keep", 0),
        ]
        .iter()
        .map(|(p, l)| (p.to_string(), *l))
        .collect();
        assert_eq!(got, want);
    }

    /// A reference model: apply layers to a map path -> layer.
    fn model(layers: &[&Index]) -> Vec<(String, u32)> {
        let mut m: BTreeMap<Vec<u8>, (u32, Kind)> = BTreeMap::new();
        for (l, idx) in layers.iter().enumerate() {
            for e in &idx.entries {
                let within = |k: &Vec<u8>| path::is_within(k, &e.path);
                let lower_dir = m.get(&e.path).is_some_and(|(_, k)| *k == Kind::Dir);
                let drop_subtree = e.kind == Kind::Whiteout || e.is_opaque() || (e.kind != Kind::Dir && lower_dir);
                if drop_subtree {
                    m.retain(|k, _| !within(k));
                }
                if e.kind == Kind::Whiteout {
                    m.remove(&e.path);
                } else {
                    if e.kind == Kind::Dir && !lower_dir {
                        // A dir replacing a non-dir has no lower children.
                        m.retain(|k, _| !within(k));
                    }
                    m.insert(e.path.clone(), (l as u32, e.kind));
                }
            }
        }
        let mut v: Vec<(Vec<u8>, u32)> = m.into_iter().map(|(p, (l, _))| (p, l)).collect();
        v.sort_by(|a, b| path::cmp(&a.0, &b.0));
        v.into_iter().map(|(p, l)| (path::display(&p), l)).collect()
    }

    proptest::proptest! {
        #[test]
        fn merge_matches_the_reference_model(ops in proptest::collection::vec(
            proptest::collection::vec((0usize..12, 0u8..4), 0..14), 1..5)) {
            let names = ["a", "b", "a/x", "a/y", "b/z", "c", "a/x/deep", "d", "d/e", "d/e/f", "c2", "a-b"];
            let mut layers = Vec::new();
            for (n, layer) in ops.iter().enumerate() {
                let mut es: BTreeMap<&str, (Kind, u8)> = BTreeMap::new();
                es.insert("", (Kind::Dir, 0));
                for &(p, k) in layer {
                    let p = names[p];
                    let kind = match k { 0 => Kind::Dir, 1 => Kind::File, 2 if n > 0 => Kind::Whiteout, _ => Kind::Dir };
                    let flags = if k == 3 && n > 0 { FLAG_OPAQUE } else { 0 };
                    es.insert(p, (kind, flags));
                }
                // Parents of non-whiteouts must be dirs in the layer (as the writer ensures).
                let keys: Vec<&str> = es.keys().copied().collect();
                for p in keys {
                    if es.get(p).is_some_and(|(k, _)| *k != Kind::Whiteout) {
                        let mut q = path::parent(p.as_bytes());
                        loop {
                            let qs = std::str::from_utf8(q).unwrap_or("");
                            if !es.get(qs).is_some_and(|(k, _)| *k == Kind::Dir) {
                                es.insert(names.iter().find(|n| n.as_bytes() == q).copied().unwrap_or(""), (Kind::Dir, 0));
                            }
                            if q.is_empty() { break; }
                            q = path::parent(q);
                        }
                    }
                }
                layers.push(index(es.into_iter().map(|(p, (k, f))| (p, k, f)).collect()));
            }
            let refs: Vec<&Index> = layers.iter().collect();
            proptest::prop_assert_eq!(paths(&refs), model(&refs));
        }
    }
}
