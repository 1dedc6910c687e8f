//! POSIX (ustar + pax) tar headers for index entries.
//!
//! lazysnap writes its own headers so it knows the exact offset of every byte
//! of file data in the tar stream. Anything ustar cannot hold (long paths, long
//! link targets, nanosecond or negative mtimes, large sizes or ids, xattrs) goes
//! into a pax extended header (`x`) before the entry, as GNU tar and bsdtar read.

use super::index::{Entry, Kind};
use super::BLOCK;

/// Name of the marker file that makes a directory opaque in a diff.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of whiteout file names in a diff.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";

const TYPE_FILE: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_CHAR: u8 = b'3';
const TYPE_BLOCK: u8 = b'4';
const TYPE_DIR: u8 = b'5';
const TYPE_FIFO: u8 = b'6';
const TYPE_PAX: u8 = b'x';

/// The name an entry has in the tar stream.
pub fn tar_name(e: &Entry) -> Vec<u8> {
    match e.kind {
        Kind::Dir if e.path.is_empty() => b"./".to_vec(),
        Kind::Dir => {
            let mut n = e.path.clone();
            n.push(b'/');
            n
        }
        Kind::Whiteout => {
            let parent = super::path::parent(&e.path);
            let mut name = WHITEOUT_PREFIX.to_vec();
            name.extend_from_slice(super::path::file_name(&e.path));
            super::path::join(parent, &name)
        }
        _ => e.path.clone(),
    }
}

/// Append the header blocks of `e` (pax header if needed, then ustar) to `out`.
/// For opaque directories the marker entry follows the directory header.
pub fn write_header(e: &Entry, out: &mut Vec<u8>) {
    let name = tar_name(e);
    let (typeflag, size, link): (u8, u64, &[u8]) = match e.kind {
        Kind::File => (TYPE_FILE, e.size, b""),
        Kind::Dir => (TYPE_DIR, 0, b""),
        Kind::Symlink => (TYPE_SYMLINK, 0, &e.link),
        Kind::Hardlink => (TYPE_HARDLINK, 0, &e.link),
        Kind::Fifo => (TYPE_FIFO, 0, b""),
        Kind::Char => (TYPE_CHAR, 0, b""),
        Kind::Block => (TYPE_BLOCK, 0, b""),
        Kind::Whiteout => (TYPE_FILE, 0, b""),
    };
    let mut pax = Vec::new();
    if name.len() > 100 {
        record(&mut pax, b"path", &name);
    }
    if link.len() > 100 {
        record(&mut pax, b"linkpath", link);
    }
    if std::str::from_utf8(&name).is_err() || std::str::from_utf8(link).is_err() {
        record(&mut pax, b"hdrcharset", b"BINARY");
    }
    let mtime_fits = e.mtime >= 0 && (e.mtime as u64) < (1 << 33) && e.mtime_nsec == 0;
    if !mtime_fits {
        record(&mut pax, b"mtime", mtime_text(e.mtime, e.mtime_nsec).as_bytes());
    }
    if size >= 1 << 33 {
        record(&mut pax, b"size", size.to_string().as_bytes());
    }
    if u64::from(e.uid) >= 1 << 21 {
        record(&mut pax, b"uid", e.uid.to_string().as_bytes());
    }
    if u64::from(e.gid) >= 1 << 21 {
        record(&mut pax, b"gid", e.gid.to_string().as_bytes());
    }
    for (k, v) in &e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        record(&mut pax, &key, v);
    }
    let mtime_field = if mtime_fits {
        e.mtime as u64
    } else {
        e.mtime.clamp(0, (1 << 33) - 1) as u64
    };
    if !pax.is_empty() {
        let mut pname = b"PaxHeaders/".to_vec();
        let base = super::path::file_name(&e.path);
        pname.extend_from_slice(&base[..base.len().min(80)]);
        let h = Ustar {
            name: &pname,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: pax.len() as u64,
            mtime: mtime_field,
            typeflag: TYPE_PAX,
            link: b"",
            dev: (0, 0),
        };
        h.write(out);
        out.extend_from_slice(&pax);
        out.resize(out.len() + (super::pad_block(pax.len() as u64) as usize - pax.len()), 0);
    }
    Ustar {
        name: &name,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size,
        mtime: mtime_field,
        typeflag,
        link,
        dev: (e.dev_major, e.dev_minor),
    }
    .write(out);
    if e.kind == Kind::Dir && e.is_opaque() {
        let marker = super::path::join(&e.path, OPAQUE_MARKER);
        Ustar {
            name: &marker,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: mtime_field,
            typeflag: TYPE_FILE,
            link: b"",
            dev: (0, 0),
        }
        .write(out);
    }
}

/// The pax text of a time with nanoseconds ("-1.5" style for negative times).
fn mtime_text(secs: i64, nsec: u32) -> String {
    if secs >= 0 || nsec == 0 {
        if nsec == 0 {
            format!("{secs}")
        } else {
            format!("{secs}.{nsec:09}")
        }
    } else {
        // secs + nsec/1e9 is negative: print its magnitude.
        let mag_secs = -(secs + 1);
        let mag_nsec = 1_000_000_000 - nsec;
        format!("-{mag_secs}.{mag_nsec:09}")
    }
}

/// Append one pax record "LEN key=value\n"; LEN counts itself.
fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

struct Ustar<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &'a [u8],
    dev: (u32, u32),
}

impl Ustar<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; BLOCK as usize];
        put(&mut h[0..100], self.name);
        octal(&mut h[100..108], u64::from(self.mode));
        octal(&mut h[108..116], u64::from(self.uid));
        octal(&mut h[116..124], u64::from(self.gid));
        octal(&mut h[124..136], self.size);
        octal(&mut h[136..148], self.mtime);
        h[156] = self.typeflag;
        put(&mut h[157..257], self.link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(self.typeflag, TYPE_CHAR | TYPE_BLOCK) {
            octal(&mut h[329..337], u64::from(self.dev.0));
            octal(&mut h[337..345], u64::from(self.dev.1));
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let cs = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(cs.as_bytes());
        out.extend_from_slice(&h);
    }
}

/// Copy as much of `v` as fits (the pax header carries the full value).
fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// Zero-padded octal with a trailing NUL; values that do not fit are written
/// as zero (a pax record always carries them).
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() == digits {
        field[..digits].copy_from_slice(s.as_bytes());
    } else {
        field[..digits].fill(b'0');
    }
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut out = Vec::new();
        record(&mut out, b"path", &[b'a'; 93]);
        let text = String::from_utf8(out.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), out.len());
    }

    #[test]
    fn negative_times() {
        assert_eq!(mtime_text(-5, 999_999_999), "-4.000000001");
        assert_eq!(mtime_text(-5, 0), "-5");
        assert_eq!(mtime_text(7, 5), "7.000000005");
    }
}
