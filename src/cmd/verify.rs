//! `lazysnap verify NAME`: check every frame digest and every entry.
//!
//! Streams the whole snapshot once: each frame's digest is checked before it
//! is decompressed, the tar stream is parsed with an independent tar reader
//! ([`crate::format::tarread`], not the writer's code), and every header is
//! compared with its index entry (type, mode, owner, times, size, link,
//! xattrs, data offset) and every file's content with its digest. Index
//! entries missing from the stream are errors too, and so is a path repeated
//! in the stream, except a directory: FORMAT.md lets a later directory header
//! update an earlier one, so only a directory's last header must match.
//! Whiteout and opaque markers (`.wh.` names) are interpreted in diffs only.

use std::io::Read;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::build::import::entry_from_tar;
use crate::error::{Error, Result};
use crate::fetch::stream::{stream_frames, StreamReader};
use crate::format::tarhdr::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::format::tarread::TarReader;
use crate::format::{path, Entry, Index, Kind};
use crate::progress;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// What verify looked at.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Frames checked.
    pub frames: usize,
    /// Entries checked.
    pub entries: usize,
    /// Uncompressed bytes read.
    pub tar_bytes: u64,
}

/// Verify snapshot `name`.
pub fn verify(rt: &Handle, store: &Store, name: &str) -> Result<VerifyReport> {
    let snap = rt.block_on(Snapshot::open(store, name))?;
    let index = snap.index.clone();
    let what = format!("snapshot {name}");
    let _guard = rt.enter();
    let rx = stream_frames(snap.object.clone(), Arc::new(index.frames.clone()), 4, what.clone());
    let pb = progress::bytes(Some(index.tar_size), "verify");
    let reader = StreamReader::new(rx).with_progress(pb.clone());
    let mut ar = TarReader::new(reader, what.clone());
    let mut seen = vec![false; index.entries.len()];
    let mut res = check_stream(&mut ar, &index, &mut seen, &what);
    let mut rest = ar.into_inner();
    if res.is_ok() {
        // The rest of the stream is the end-of-archive padding; its frames
        // must still pass their digest checks.
        let mut sink = [0u8; 64 * 1024];
        loop {
            match rest.read(&mut sink) {
                Ok(0) => break,
                Ok(n) if sink[..n].iter().all(|b| *b == 0) => {}
                Ok(_) => {
                    res = Err(Error::corrupt(&what, "data after the end of the tar archive"));
                    break;
                }
                Err(e) => {
                    res = Err(Error::io(what.clone(), e));
                    break;
                }
            }
        }
    }
    pb.finish_and_clear();
    if let Some(e) = rest.error.take() {
        return Err(e);
    }
    res?;
    if let Some(i) = seen.iter().position(|s| !s) {
        let p = path::display(&index.entries[i].path);
        return Err(Error::corrupt(
            &what,
            format!("{p}: in the index but not in the tar stream"),
        ));
    }
    tracing::debug!(
        "verified {name}: {} frames, {} entries",
        index.frames.len(),
        index.entries.len()
    );
    Ok(VerifyReport {
        frames: index.frames.len(),
        entries: index.entries.len(),
        tar_bytes: index.tar_size,
    })
}

fn check_stream<R: Read>(ar: &mut TarReader<R>, index: &Index, seen: &mut [bool], what: &str) -> Result<()> {
    let diff = index.parent.is_some();
    // A directory may appear more than once (a later header updates an
    // earlier one) and the index holds the last header's values: remember
    // how each directory's latest header compares and judge at the end.
    let mut dir_differs: Vec<Option<&'static str>> = vec![None; index.entries.len()];
    while let Some(t) = ar.next_entry()? {
        let mut got = entry_from_tar(&t)?;
        let name = path::file_name(&got.path).to_vec();
        // Only a diff gives `.wh.` names a meaning. In a full snapshot they
        // are ordinary names, unless the index has no such path but holds the
        // whiteout or opaque flag they stand for (allowed, not produced).
        let literal = !diff && index.find(&got.path).is_some();
        if name == OPAQUE_MARKER && !literal {
            let dir = path::parent(&got.path);
            match index.find(dir).map(|i| &index.entries[i]) {
                Some(d) if d.is_opaque() => continue,
                _ => {
                    return Err(Error::corrupt(
                        what,
                        format!("{}: stray opaque marker", path::display(dir)),
                    ))
                }
            }
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX).filter(|_| !literal) {
            let target = path::join(path::parent(&got.path), hidden);
            if let Some(i) = index.find(&target).filter(|&i| index.entries[i].kind == Kind::Whiteout) {
                got.path = target;
                got.kind = Kind::Whiteout;
                got.mode = index.entries[i].mode;
            }
        }
        let shown = path::display(&got.path);
        let i = index
            .find(&got.path)
            .ok_or_else(|| Error::corrupt(what, format!("{shown}: in the tar stream but not in the index")))?;
        let want = &index.entries[i];
        let field = differs(want, &got);
        if want.kind == Kind::Dir && got.kind == Kind::Dir {
            dir_differs[i] = field;
            seen[i] = true;
            continue;
        }
        if seen[i] {
            return Err(Error::corrupt(what, format!("{shown}: repeated in the tar stream")));
        }
        if let Some(field) = field {
            return Err(Error::corrupt(
                what,
                format!("{shown}: {field} differs between tar header and index"),
            ));
        }
        if want.kind == Kind::File {
            if t.data_offset != want.offset {
                return Err(Error::corrupt(
                    what,
                    format!("{shown}: data offset differs from the index"),
                ));
            }
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut ar.data(), &mut h).map_err(|e| Error::corrupt(what, format!("{shown}: {e}")))?;
            if crate::format::truncate(h.finalize()) != want.digest {
                return Err(Error::corrupt(what, format!("{shown}: content digest mismatch")));
            }
        }
        seen[i] = true;
    }
    if let Some((i, field)) = dir_differs.iter().enumerate().find_map(|(i, f)| f.map(|f| (i, f))) {
        let shown = path::display(&index.entries[i].path);
        return Err(Error::corrupt(
            what,
            format!("{shown}: {field} differs between tar header and index"),
        ));
    }
    Ok(())
}

/// The first field on which a tar header disagrees with the index.
fn differs(want: &Entry, got: &Entry) -> Option<&'static str> {
    let checks: [(&'static str, bool); 9] = [
        ("type", want.kind == got.kind),
        ("mode", want.mode == got.mode || want.kind == Kind::Whiteout),
        (
            "owner",
            want.uid == got.uid && want.gid == got.gid || want.kind == Kind::Whiteout,
        ),
        (
            "mtime",
            (want.mtime, want.mtime_nsec) == (got.mtime, got.mtime_nsec) || want.kind == Kind::Whiteout,
        ),
        ("size", want.kind != Kind::File || want.size == got.size),
        (
            "link target",
            want.link == got.link || !matches!(want.kind, Kind::Symlink | Kind::Hardlink),
        ),
        ("xattrs", want.xattrs == got.xattrs),
        (
            "device",
            (want.dev_major, want.dev_minor) == (got.dev_major, got.dev_minor),
        ),
        ("path", want.path == got.path),
    ];
    checks.iter().find(|(_, ok)| !ok).map(|(f, _)| *f)
}
