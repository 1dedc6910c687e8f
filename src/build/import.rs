//! `lazysnap import FILE`: turn a plain `.tar`, `.tar.gz` or `.tar.zst`
//! (single- or multi-frame) into an indexed snapshot.
//!
//! The input is streamed once, never extracted. Entries are re-encoded with
//! lazysnap's own headers; unsafe entries (absolute paths, `..`, entries
//! beneath a symlink, device nodes when not root) are refused.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tokio::runtime::Handle;

use super::publish::publish;
use crate::error::{Error, IoContext, Result};
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
        let mut ar = tar::Archive::new(input);
        let entries = ar.entries().map_err(|e| bad_tar(&what, e))?;
        for ent in entries {
            let mut ent = ent.map_err(|e| bad_tar(&what, e))?;
            let Some(e) = entry_from_tar(&mut ent).map_err(|e| in_archive(&what, e))? else {
                continue;
            };
            if matches!(e.kind, Kind::Char | Kind::Block) && !root {
                return Err(Error::refused(
                    path::display(&e.path),
                    "device nodes are imported only by root",
                ));
            }
            if e.kind == Kind::File {
                w.add(e, Some(&mut ent))
            } else {
                w.add(e, None)
            }
            .map_err(|e| in_archive(&what, e))?;
        }
        Ok(())
    })
}

fn bad_tar(what: &str, e: std::io::Error) -> Error {
    Error::corrupt(what, format!("not a readable tar archive: {e}"))
}

fn in_archive(what: &str, e: Error) -> Error {
    match e {
        Error::Refused { what: w, why } => Error::refused(format!("{what}: entry {w}"), why),
        e => e,
    }
}

/// Convert a tar entry (headers and pax records) into an index entry.
/// Returns `None` for entries that carry no filesystem object.
pub fn entry_from_tar<R: Read>(ent: &mut tar::Entry<R>) -> Result<Option<Entry>> {
    let raw_path = ent.path_bytes().into_owned();
    let p = path::normalize_tar_name(&raw_path);
    let shown = String::from_utf8_lossy(&raw_path).into_owned();
    path::check(&p).map_err(|why| Error::refused(&shown, why))?;
    let h = ent.header();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::Hardlink,
        tar::EntryType::Fifo => Kind::Fifo,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        other => {
            tracing::warn!("{shown}: tar entry type {other:?} skipped");
            return Ok(None);
        }
    };
    let field = |r: std::io::Result<u64>, name: &str| r.map_err(|e| Error::corrupt(&shown, format!("{name}: {e}")));
    let mut e = Entry::new(p, kind);
    e.mode = field(h.mode().map(u64::from), "mode")? as u32 & 0o7777;
    e.uid = field(h.uid(), "uid")? as u32;
    e.gid = field(h.gid(), "gid")? as u32;
    e.mtime = field(h.mtime(), "mtime")? as i64;
    if kind == Kind::File {
        e.size = ent.size();
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        e.dev_major = h.device_major().ok().flatten().unwrap_or(0);
        e.dev_minor = h.device_minor().ok().flatten().unwrap_or(0);
    }
    if matches!(kind, Kind::Symlink | Kind::Hardlink) {
        let link = ent.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        e.link = if kind == Kind::Hardlink {
            let t = path::normalize_tar_name(&link);
            path::check(&t).map_err(|why| Error::refused(&shown, format!("hardlink target: {why}")))?;
            t
        } else {
            link
        };
        if e.link.is_empty() {
            return Err(Error::refused(&shown, "link without a target"));
        }
    }
    if let Some(exts) = ent
        .pax_extensions()
        .map_err(|err| Error::corrupt(&shown, format!("pax header: {err}")))?
    {
        for ext in exts {
            let ext = ext.map_err(|err| Error::corrupt(&shown, format!("pax header: {err}")))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "mtime" => {
                    let (s, ns) = parse_pax_time(value).ok_or_else(|| Error::corrupt(&shown, "bad pax mtime"))?;
                    e.mtime = s;
                    e.mtime_nsec = ns;
                }
                "uid" => e.uid = parse_num(value).ok_or_else(|| Error::corrupt(&shown, "bad pax uid"))?,
                "gid" => e.gid = parse_num(value).ok_or_else(|| Error::corrupt(&shown, "bad pax gid"))?,
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        e.xattrs.push((name.as_bytes().to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    e.xattrs.sort();
    e.xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok(Some(e))
}

fn parse_num(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Parse a pax time ("123", "123.5", "-1.25") into seconds and nanoseconds
/// (nanoseconds always count forward from the seconds value).
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: u32 = digits.parse().ok()?;
    if !neg {
        return Some((secs, ns));
    }
    if ns == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - ns))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_pax_time;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-4.000000001"), Some((-5, 999_999_999)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
