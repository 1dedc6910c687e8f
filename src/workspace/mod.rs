//! A writable workspace: an overlay upper dir and what it sits on.
//!
//! A workspace directory holds `upper/` and `work/` (overlayfs) and
//! `workspace.json`, which pins the snapshot the upper dir was first mounted
//! over (its *base*: what the overlay shows below it, always) and every
//! snapshot it was saved as since. Kernel overlayfs cannot rebase an upper
//! dir while mounted, so the upper dir keeps every change since the base;
//! saves are diffs of the live view against the last save, and a remount
//! (over the base or over the last save) puts the same upper dir over the
//! same base again, which is exactly the live view it had at unmount.
//! Mounting anything else over it is refused: its changes would be laid
//! over a tree they were not made on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::{hex, Digest};

/// The record's file name in a workspace directory.
pub const RECORD: &str = "workspace.json";

/// A snapshot, pinned by its index digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Snapshot name.
    pub name: String,
    /// Its index digest (hex).
    pub index_digest: String,
}

impl Pin {
    /// Pin `name` at `digest`.
    pub fn new(name: &str, digest: &Digest) -> Pin {
        Pin {
            name: name.to_string(),
            index_digest: hex(digest),
        }
    }
}

/// What `workspace.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Record format version (1).
    pub version: u32,
    /// The store the snapshots live in (an absolute URI).
    pub store: String,
    /// The snapshot the upper dir sits on.
    pub base: Pin,
    /// Snapshots the upper dir was saved as, oldest first.
    #[serde(default)]
    pub saves: Vec<Pin>,
    /// The upper dir's [`stamp`] at the last save (or when it was new).
    #[serde(default)]
    pub stamp: Option<Stamp>,
}

/// A cheap summary of an upper dir that changes whenever anything in it
/// does: entry count, and the newest change time (ctime) of any entry, the
/// directories whose entries were added or removed included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Entries below the upper dir.
    pub entries: u64,
    /// Newest ctime, nanoseconds since the epoch.
    pub newest_ctime_ns: i128,
}

impl Workspace {
    /// A new workspace on `base`.
    pub fn new(store: &str, base: Pin) -> Workspace {
        Workspace {
            version: 1,
            store: store.to_string(),
            base,
            saves: Vec::new(),
            stamp: None,
        }
    }

    /// The snapshot the next save is a diff of: the last save, or the base.
    pub fn head(&self) -> &Pin {
        self.saves.last().unwrap_or(&self.base)
    }

    /// Read the record of workspace directory `dir`, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Workspace>> {
        let p = dir.join(RECORD);
        match std::fs::read(&p) {
            Ok(b) => {
                let ws: Workspace =
                    serde_json::from_slice(&b).map_err(|e| Error::corrupt(p.display().to_string(), e.to_string()))?;
                if ws.version != 1 {
                    return Err(Error::Unsupported {
                        what: p.display().to_string(),
                        why: format!("workspace record version {}", ws.version),
                    });
                }
                Ok(Some(ws))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io_path(&p, e)),
        }
    }

    /// Write the record into `dir` atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        crate::tmp::write_file_atomic(&dir.join(RECORD), &data, 0o644)
    }

    /// May `name` (at `digest`) be mounted over this workspace's upper dir?
    /// The base and the last save show the same live view, and either is
    /// resumed by mounting the base below the upper dir again (returned);
    /// anything else would lay these changes over a tree they were not
    /// made on.
    pub fn resume(&self, dir: &Path, name: &str, digest: &Digest) -> Result<&Pin> {
        let want = Pin::new(name, digest);
        if want == self.base || want == *self.head() {
            return Ok(&self.base);
        }
        let last = match self.saves.last() {
            Some(s) => format!(", last saved as {}", s.name),
            None => String::new(),
        };
        Err(Error::refused(
            dir.display().to_string(),
            format!(
                "holds changes made on snapshot {} (index {}){last}; mounting {name} over them would mix \
                 the two: mount {} instead, or pass --discard-changes to throw them away",
                self.base.name,
                &self.base.index_digest[..12.min(self.base.index_digest.len())],
                self.head().name,
            ),
        ))
    }

    /// Does the upper dir hold changes the last save did not cover?
    pub fn unsaved(&self, dir: &Path) -> Result<bool> {
        let now = stamp(&dir.join("upper"))?;
        Ok(match self.stamp {
            Some(s) => s != now,
            None => now.entries > 0,
        })
    }
}

/// The [`Stamp`] of an upper dir (a missing one is empty).
pub fn stamp(upper: &Path) -> Result<Stamp> {
    let mut s = Stamp {
        entries: 0,
        newest_ctime_ns: 0,
    };
    if !upper.exists() {
        return Ok(s);
    }
    let root = std::fs::symlink_metadata(upper).ctx(|| upper.display().to_string())?;
    s.newest_ctime_ns = ctime_ns(&root);
    let mut stack: Vec<PathBuf> = vec![upper.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in std::fs::read_dir(&d).ctx(|| d.display().to_string())? {
            let ent = ent.ctx(|| d.display().to_string())?;
            let p = ent.path();
            let m = std::fs::symlink_metadata(&p).ctx(|| p.display().to_string())?;
            s.entries += 1;
            s.newest_ctime_ns = s.newest_ctime_ns.max(ctime_ns(&m));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(s)
}

fn ctime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// Throw away a workspace's changes: empty `upper/` and `work/`, drop the
/// record. Only what lazysnap made there is removed.
pub fn discard(dir: &Path) -> Result<()> {
    for sub in ["upper", "work"] {
        let p = dir.join(sub);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path(&p, e)),
        }
    }
    match std::fs::remove_file(dir.join(RECORD)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path(dir.join(RECORD), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_stamps() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        let mut ws = Workspace::new("file:///s", Pin::new("a", &[1; 16]));
        ws.saves.push(Pin::new("a2", &[2; 16]));
        ws.save(d).expect("save");
        let ws = Workspace::load(d).expect("load").expect("some");
        assert_eq!(ws.resume(d, "a", &[1; 16]).expect("base"), &ws.base);
        assert_eq!(ws.resume(d, "a2", &[2; 16]).expect("last save"), &ws.base);
        // Same name, other content: refused too.
        let err = ws.resume(d, "a", &[9; 16]).expect_err("digest");
        assert!(err.to_string().contains("--discard-changes"), "{err}");
        assert!(ws.resume(d, "b", &[1; 16]).is_err());

        std::fs::create_dir_all(d.join("upper")).expect("mkdir");
        assert!(!ws.unsaved(d).expect("unsaved"), "empty upper, no stamp");
        std::fs::write(d.join("upper/f"), b"x").expect("write");
        assert!(ws.unsaved(d).expect("unsaved"));
        let mut ws = ws;
        ws.stamp = Some(stamp(&d.join("upper")).expect("stamp"));
        assert!(!ws.unsaved(d).expect("unsaved"));
        std::fs::remove_file(d.join("upper/f")).expect("rm");
        assert!(ws.unsaved(d).expect("unsaved"));
        discard(d).expect("discard");
        assert!(Workspace::load(d).expect("load").is_none());
    }
}
