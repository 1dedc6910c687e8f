//! `lazysnap import FILE`: turn a plain `.tar`, `.tar.gz` or `.tar.zst`
//! (single- or multi-frame) into an indexed snapshot.
//!
//! The input is streamed once, never extracted. Entries are re-encoded with
//! lazysnap's own headers; unsafe entries (absolute paths, `..`, entries
//! beneath a symlink, device nodes when not root) are refused. The archive is
//! parsed by [`crate::format::tarread`], whose module docs list the tar
//! dialects and extensions accepted (and refused: sparse files, unknown types).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tokio::runtime::Handle;

use super::publish::publish;
use crate::error::{Error, IoContext, Result};
use crate::format::tarread::{TarEntry, TarKind, TarReader};
use crate::format::writer::{WriterOptions, Written};
use crate::format::{path, Entry, Kind};
use crate::store::Store;
use crate::{progress, sys};

/// Import the tar archive at `file` as snapshot `name`.
pub fn import(rt: &Handle, store: &Store, name: &str, file: &Path, opts: WriterOptions) -> Result<Written> {
    let what = file.display().to_string();
    let mut f = File::open(file).ctx(|| what.clone())?;
    let total = f.metadata().ctx(|| what.clone())?.len();
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).ctx(|| what.clone())?;
    let pb = progress::bytes(Some(total), "import");
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = BufReader::with_capacity(1 << 20, pb.wrap_read(head.chain(f)));
    let pb = indicatif::ProgressBar::hidden();
    let input: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::with_buffer(raw).ctx(|| what.clone())?),
        _ => Box::new(raw),
    };
    let root = sys::is_root();
    publish(rt, store, name, opts, pb.clone(), |w| {
        let mut ar = TarReader::new(input, what.clone());
        while let Some(t) = ar.next_entry().map_err(not_a_tar)? {
            let e = entry_from_tar(&t).map_err(|e| in_archive(&what, e))?;
            if matches!(e.kind, Kind::Char | Kind::Block) && !root {
                return Err(Error::refused(
                    path::display(&e.path),
                    "device nodes are imported only by root",
                ));
            }
            if e.kind == Kind::File {
                w.add(e, Some(&mut ar.data()))
            } else {
                w.add(e, None)
            }
            .map_err(|e| in_archive(&what, not_a_tar(e)))?;
        }
        Ok(())
    })
}

/// The reader's findings are about a foreign archive, not a snapshot.
fn not_a_tar(e: Error) -> Error {
    match e {
        Error::Corrupt { what, why } => Error::Invalid {
            what,
            why: format!("not a readable tar archive ({why})"),
        },
        e => e,
    }
}

fn in_archive(what: &str, e: Error) -> Error {
    match e {
        Error::Refused { what: w, why } => Error::refused(format!("{what}: entry {w}"), why),
        e => e,
    }
}

/// Convert a tar entry (header with its extension records applied) into an
/// index entry. Paths are normalised and checked; ids and device numbers
/// must fit the index's 32 bits.
pub fn entry_from_tar(t: &TarEntry) -> Result<Entry> {
    let p = path::normalize_tar_name(&t.name);
    let shown = String::from_utf8_lossy(&t.name).into_owned();
    path::check(&p).map_err(|why| Error::refused(&shown, why))?;
    let kind = match t.kind {
        TarKind::File => Kind::File,
        TarKind::Dir => Kind::Dir,
        TarKind::Symlink => Kind::Symlink,
        TarKind::Hardlink => Kind::Hardlink,
        TarKind::Fifo => Kind::Fifo,
        TarKind::Char => Kind::Char,
        TarKind::Block => Kind::Block,
    };
    let fit = |v: u64, name: &str| {
        u32::try_from(v).map_err(|_| Error::refused(&shown, format!("{name} {v} does not fit in 32 bits")))
    };
    let mut e = Entry::new(p, kind);
    e.mode = t.mode;
    e.uid = fit(t.uid, "uid")?;
    e.gid = fit(t.gid, "gid")?;
    e.mtime = t.mtime;
    e.mtime_nsec = t.mtime_nsec;
    if kind == Kind::File {
        e.size = t.size;
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        e.dev_major = fit(t.dev_major, "device major")?;
        e.dev_minor = fit(t.dev_minor, "device minor")?;
    }
    if matches!(kind, Kind::Symlink | Kind::Hardlink) {
        e.link = if kind == Kind::Hardlink {
            let target = path::normalize_tar_name(&t.link);
            path::check(&target).map_err(|why| Error::refused(&shown, format!("hardlink target: {why}")))?;
            target
        } else {
            t.link.clone()
        };
        if e.link.is_empty() {
            return Err(Error::refused(&shown, "link without a target"));
        }
    }
    e.xattrs.clone_from(&t.xattrs);
    Ok(e)
}
