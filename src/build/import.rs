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

use std::time::Duration;

use tokio::runtime::Handle;

use super::publish::publish;
use crate::error::{Error, IoContext, Result};
use crate::format::tarread::{TarEntry, TarKind, TarReader};
use crate::format::writer::{WriterOptions, Written};
use crate::format::{path, Entry, Kind};
use crate::store::{http, Store};
use crate::{progress, sys};

/// Import the tar archive at `input` (a path, or an http(s) URL such as a
/// presigned GET, streamed) as snapshot `name`. `stall`: how long a URL's
/// stream may stay silent.
pub fn import(
    rt: &Handle,
    store: &Store,
    name: &str,
    input: &str,
    stall: Duration,
    opts: WriterOptions,
) -> Result<Written> {
    let (input, what) = open_archive(rt, input, stall, "import")?;
    let root = sys::is_root();
    let pb = indicatif::ProgressBar::hidden();
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

/// Is `input` a URL (rather than a path)?
pub fn is_url(input: &str) -> bool {
    input.starts_with("https://") || input.starts_with("http://")
}

/// The tar stream of archive `input` (a path, or an http(s) URL streamed
/// with no local copy), decompressed by its magic (gzip, zstd, or none),
/// with a progress bar labelled `label` over the raw bytes; and a name for
/// it in messages (a URL without its query).
pub fn open_archive(rt: &Handle, input: &str, stall: Duration, label: &str) -> Result<(Box<dyn Read>, String)> {
    let (mut raw, total, what): (Box<dyn Read>, Option<u64>, String) = if is_url(input) {
        let url = http::parse_url(input, "archive URL")?;
        let what = http::shown(&url);
        let object = http::UrlObject {
            client: http::client()?,
            expires: http::url_expiry(&url),
            what: what.clone(),
            url,
        };
        let (r, size) = http::body_reader(rt, object, stall)?;
        (Box::new(r), size, what)
    } else {
        let f = File::open(input).ctx(|| input.to_string())?;
        let size = f.metadata().ctx(|| input.to_string())?.len();
        (Box::new(f), Some(size), input.to_string())
    };
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match raw.read(&mut magic[n..]).ctx(|| what.clone())? {
            0 => break,
            k => n += k,
        }
    }
    let pb = progress::bytes(total, label);
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = BufReader::with_capacity(1 << 20, pb.wrap_read(head.chain(raw)));
    let input: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::with_buffer(raw).ctx(|| what.clone())?),
        _ => Box::new(raw),
    };
    Ok((input, what))
}

/// The reader's findings are about a foreign archive, not a snapshot.
pub fn not_a_tar(e: Error) -> Error {
    match e {
        Error::Corrupt { what, why } => Error::Invalid {
            what,
            why: format!("not a readable tar archive ({why})"),
        },
        e => e,
    }
}

/// A refusal about an entry, naming the archive too.
pub fn in_archive(what: &str, e: Error) -> Error {
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
