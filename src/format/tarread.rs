//! A small streaming tar reader, used by `import` (foreign archives) and
//! `verify` (our own streams).
//!
//! It reads one header at a time from any [`Read`], applies the extension
//! headers that precede it, and reports where the entry's data starts in the
//! uncompressed stream. The caller reads the data through [`TarReader::data`]
//! or lets [`TarReader::next_entry`] skip it.
//!
//! # Accepted
//!
//! * ustar, GNU (`ustar  \0`) and old V7 headers; the ustar `prefix` field is
//!   joined to the name for ustar headers only (GNU keeps other data there).
//!   The header checksum is verified (unsigned sum, or the signed sum some old
//!   tars wrote).
//! * Numeric fields in octal (leading spaces, NUL or space terminated, empty =
//!   0) or GNU base-256 (first byte has its top bit set; two's complement, so
//!   negative mtimes work).
//! * Typeflags `0`, NUL and `7` (regular file; a name ending in `/` makes a
//!   directory, as old tars wrote them), `1` hardlink, `2` symlink, `3` char
//!   device, `4` block device, `5` directory, `6` fifo, and GNU `D` (a dumpdir:
//!   a directory whose data, the incremental listing, is skipped).
//! * pax `x` headers: `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`
//!   (fractional and negative values), `SCHILY.devmajor`, `SCHILY.devminor`
//!   and `SCHILY.xattr.NAME` (binary values). Records are split by their length
//!   prefix (`LEN key=value\n`, `LEN` counting the whole record), so values may
//!   hold newlines, `=` and any byte. `hdrcharset`, `atime`, `ctime`, `uname`,
//!   `gname`, `comment` and unknown keywords are ignored, as POSIX says. An
//!   empty value for a non-xattr keyword means "use the header field".
//! * pax `g` global headers: their records apply to every later entry, under
//!   the entry's own `x` records (a later `g` replaces earlier values per key;
//!   an empty value removes the key).
//! * GNU `L` / `K` long name and long link target (trailing NULs stripped). A
//!   pax `path`/`linkpath` wins over them.
//! * The end of the archive: two zero blocks; also one zero block followed by
//!   the end of input, or the end of input at a header boundary (GNU tar reads
//!   both). Nothing after the end is read.
//! * GNU `V` (volume label) is skipped with a warning, as tar skips it.
//!
//! The data of every entry type is `size` bytes followed by zero padding to
//! 512; it is skipped when the caller does not read it (only files carry data
//! in practice).
//!
//! # Refused
//!
//! GNU sparse files (typeflag `S`, or any `GNU.sparse.*` pax record), GNU
//! multi-volume continuations (`M`), old GNU long names (`N`) and every other
//! typeflag: [`Error::Refused`] naming the entry. Bad checksums, malformed
//! numbers or pax records, extension headers larger than the limits below,
//! truncated input and a lone zero block followed by more headers are
//! [`Error::Corrupt`], naming the byte offset.
//!
//! # Hostile input
//!
//! Every declared size is distrusted: pax headers are limited to
//! [`MAX_PAX_SIZE`] bytes (per entry, all its `x` headers together, and the
//! accumulated global records), GNU long names and link targets to
//! [`MAX_LONG_NAME`] bytes. Extension data is read in bounded chunks and memory
//! only grows with bytes actually read; data is skipped in chunks too. Every
//! loop consumes at least one block of input per turn, so no input makes the
//! reader loop forever, and no input makes it panic.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::error::{Error, Result};

/// Largest pax extended header accepted (1 MiB), for one entry's `x` headers
/// together and for all global (`g`) records together.
pub const MAX_PAX_SIZE: u64 = 1 << 20;

/// Largest GNU long name or long link target (`L`, `K`) accepted (64 KiB).
pub const MAX_LONG_NAME: u64 = 64 << 10;

const BLOCK: usize = 512;
/// One pax record: keyword and value (raw bytes).
type Record = (Vec<u8>, Vec<u8>);
/// Chunk size for reading extension data and skipping entry data.
const CHUNK: usize = 64 << 10;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// Regular file (`0`, NUL, `7`).
    File,
    /// Hard link to an earlier entry (`1`).
    Hardlink,
    /// Symbolic link (`2`).
    Symlink,
    /// Character device (`3`).
    Char,
    /// Block device (`4`).
    Block,
    /// Directory (`5`, GNU `D`, or a regular file whose name ends in `/`).
    Dir,
    /// Named pipe (`6`).
    Fifo,
}

/// One entry: its ustar header with the preceding extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The name as stored (raw bytes; not normalised).
    pub name: Vec<u8>,
    /// Link target for symlinks and hardlinks (raw bytes), else usually empty.
    pub link: Vec<u8>,
    /// The entry type.
    pub kind: TarKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds counted forward from `mtime`.
    pub mtime_nsec: u32,
    /// Data size (bytes following the header, before padding).
    pub size: u64,
    /// Device major number (char and block devices).
    pub dev_major: u64,
    /// Device minor number.
    pub dev_minor: u64,
    /// Extended attributes (`SCHILY.xattr.*`), sorted by name, unique.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the entry's first header block (its first extension header,
    /// if any) in the uncompressed stream.
    pub header_offset: u64,
    /// Offset of the first data byte: just after the entry's ustar header.
    pub data_offset: u64,
}

/// Streaming tar reader; see the module docs.
pub struct TarReader<R> {
    inner: R,
    what: String,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Unread data bytes of the current entry.
    data_left: u64,
    /// Padding after the current entry's data.
    pad_left: u64,
    /// Global pax records in force.
    global: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The end of the archive was reached.
    ended: bool,
}

/// Extension headers seen since the last entry.
#[derive(Default)]
struct Pending {
    pax: Vec<Record>,
    pax_bytes: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_empty() && self.long_name.is_none() && self.long_link.is_none()
    }
}

impl<R: Read> TarReader<R> {
    /// Read a tar stream from `inner`; `what` names it in errors.
    pub fn new(inner: R, what: impl Into<String>) -> Self {
        TarReader {
            inner,
            what: what.into(),
            pos: 0,
            data_left: 0,
            pad_left: 0,
            global: BTreeMap::new(),
            ended: false,
        }
    }

    /// Bytes consumed from the input so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying reader (positioned just after what was consumed).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The underlying reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The data of the current entry (what [`Self::next_entry`] returned last).
    /// Reads end after `size` bytes; input ending early is an
    /// `UnexpectedEof` error.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { tar: self }
    }

    /// The next entry, or `None` at the end of the archive. Skips whatever
    /// data of the previous entry was not read.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        self.skip(self.data_left.saturating_add(self.pad_left))?;
        self.data_left = 0;
        self.pad_left = 0;
        let mut pending = Pending::default();
        let mut header_offset = self.pos;
        let mut block = [0u8; BLOCK];
        loop {
            let at = self.pos;
            if !self.read_block(&mut block)? {
                return self.end(&pending, at);
            }
            if block.iter().all(|b| *b == 0) {
                // One zero block, then a second or the end of input.
                let mut next = [0u8; BLOCK];
                if self.read_block(&mut next)? && next.iter().any(|b| *b != 0) {
                    return Err(self.corrupt(at, "a lone zero block inside the archive"));
                }
                return self.end(&pending, at);
            }
            let h = Header::parse(&block).map_err(|why| self.corrupt(at, why))?;
            match h.typeflag {
                b'x' => {
                    let room = MAX_PAX_SIZE - pending.pax_bytes;
                    let data = self.read_ext(at, h.size, room, "pax header")?;
                    pending.pax_bytes += h.size;
                    let recs = parse_pax(&data).map_err(|why| self.corrupt(at, format!("pax header: {why}")))?;
                    pending.pax.extend(recs);
                    continue;
                }
                b'g' => {
                    let data = self.read_ext(at, h.size, MAX_PAX_SIZE, "pax global header")?;
                    let recs = parse_pax(&data).map_err(|why| self.corrupt(at, format!("pax global header: {why}")))?;
                    self.apply_global(at, recs)?;
                    continue;
                }
                b'L' | b'K' => {
                    let data = self.read_ext(at, h.size, MAX_LONG_NAME, "GNU long name")?;
                    let mut v = data;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    if h.typeflag == b'L' {
                        pending.long_name = Some(v);
                    } else {
                        pending.long_link = Some(v);
                    }
                    continue;
                }
                b'V' => {
                    tracing::warn!(
                        "{}: tar volume label {:?} skipped",
                        self.what,
                        String::from_utf8_lossy(&h.name)
                    );
                    self.skip(h.size.saturating_add(padding(h.size)))?;
                    pending = Pending::default();
                    header_offset = self.pos;
                    continue;
                }
                _ => {}
            }
            let entry = self.build(h, pending, header_offset)?;
            self.data_left = entry.size;
            self.pad_left = padding(entry.size);
            return Ok(Some(entry));
        }
    }

    /// Apply extension records to a ustar header and name the entry.
    fn build(&self, h: Header, pending: Pending, header_offset: u64) -> Result<TarEntry> {
        let mut name = pending.long_name.unwrap_or(h.name);
        let mut link = pending.long_link.unwrap_or(h.link);
        let mut recs = self.global.clone();
        recs.extend(pending.pax);
        if let Some(p) = recs.get(b"path".as_slice()).filter(|v| !v.is_empty()) {
            name.clone_from(p);
        }
        if let Some(l) = recs.get(b"linkpath".as_slice()).filter(|v| !v.is_empty()) {
            link.clone_from(l);
        }
        let shown = String::from_utf8_lossy(&name).into_owned();
        let refuse = |why: &str| Error::refused(format!("{}: entry {shown}", self.what), why);
        let kind = match h.typeflag {
            b'0' | 0 | b'7' if name.last() == Some(&b'/') => TarKind::Dir,
            b'0' | 0 | b'7' => TarKind::File,
            b'1' => TarKind::Hardlink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::Char,
            b'4' => TarKind::Block,
            b'5' | b'D' => TarKind::Dir,
            b'6' => TarKind::Fifo,
            b'S' => return Err(refuse("GNU sparse file (type 'S') is not supported")),
            b'M' => return Err(refuse("GNU multi-volume continuation (type 'M') is not supported")),
            t => return Err(refuse(&format!("unsupported tar entry type {:?}", char::from(t)))),
        };
        let mut e = TarEntry {
            name,
            link,
            kind,
            mode: (h.mode & 0o7777) as u32,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            mtime_nsec: 0,
            size: h.size,
            dev_major: h.dev_major,
            dev_minor: h.dev_minor,
            xattrs: Vec::new(),
            header_offset,
            data_offset: self.pos,
        };
        let bad = |key: &[u8]| {
            let key = String::from_utf8_lossy(key);
            Error::corrupt(&self.what, format!("entry {shown}: bad pax {key} value"))
        };
        for (key, value) in recs {
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                if x.is_empty() {
                    return Err(bad(&key));
                }
                e.xattrs.push((x.to_vec(), value));
                continue;
            }
            if key.starts_with(b"GNU.sparse.") {
                return Err(refuse("GNU sparse file (pax GNU.sparse records) is not supported"));
            }
            if value.is_empty() {
                continue;
            }
            match key.as_slice() {
                b"size" => e.size = parse_dec(&value).ok_or_else(|| bad(&key))?,
                b"uid" => e.uid = parse_dec(&value).ok_or_else(|| bad(&key))?,
                b"gid" => e.gid = parse_dec(&value).ok_or_else(|| bad(&key))?,
                b"SCHILY.devmajor" => e.dev_major = parse_dec(&value).ok_or_else(|| bad(&key))?,
                b"SCHILY.devminor" => e.dev_minor = parse_dec(&value).ok_or_else(|| bad(&key))?,
                b"mtime" => (e.mtime, e.mtime_nsec) = parse_pax_time(&value).ok_or_else(|| bad(&key))?,
                _ => {}
            }
        }
        Ok(e)
    }

    fn apply_global(&mut self, at: u64, recs: Vec<Record>) -> Result<()> {
        for (k, v) in recs {
            if v.is_empty() {
                self.global.remove(&k);
            } else {
                self.global.insert(k, v);
            }
        }
        let total: usize = self.global.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total as u64 > MAX_PAX_SIZE {
            return Err(self.corrupt(at, format!("pax global records exceed {MAX_PAX_SIZE} bytes")));
        }
        Ok(())
    }

    /// The end of the archive at offset `at`.
    fn end(&mut self, pending: &Pending, at: u64) -> Result<Option<TarEntry>> {
        if !pending.is_empty() {
            return Err(self.corrupt(at, "extension header without an entry at the end of the archive"));
        }
        self.ended = true;
        Ok(None)
    }

    /// Read extension data of `size` bytes (at most `limit`) and its padding.
    fn read_ext(&mut self, at: u64, size: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        if size > limit {
            return Err(self.corrupt(at, format!("{what} of {size} bytes exceeds the limit of {limit}")));
        }
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut left = size;
        while left > 0 {
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.read_exact(&mut chunk[..n])?;
            out.extend_from_slice(&chunk[..n]);
            left -= n as u64;
        }
        self.skip(padding(size))?;
        Ok(out)
    }

    /// Read one block; `false` at a clean end of input.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool> {
        let n = self.read_some(block)?;
        if n == 0 {
            return Ok(false);
        }
        if n < BLOCK {
            self.read_exact(&mut block[n..])?;
        }
        Ok(true)
    }

    /// Read until `buf` is full; the end of input is a truncation error.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..])?;
            if n == 0 {
                return Err(self.corrupt(self.pos, "truncated tar archive"));
            }
            done += n;
        }
        Ok(())
    }

    /// Read until `buf` is full or the input ends; returns the bytes read.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::corrupt(&self.what, format!("reading the tar stream: {e}"))),
            }
        }
        Ok(done)
    }

    /// Skip `n` bytes of input in bounded chunks.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut chunk = vec![0u8; CHUNK.min(usize::try_from(n).unwrap_or(CHUNK))];
        while n > 0 {
            let want = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.read_exact(&mut chunk[..want])?;
            n -= want as u64;
        }
        Ok(())
    }

    fn corrupt(&self, at: u64, why: impl std::fmt::Display) -> Error {
        Error::corrupt(&self.what, format!("tar stream at byte {at}: {why}"))
    }
}

/// Reader over the current entry's data; see [`TarReader::data`].
pub struct EntryData<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = &mut *self.tar;
        if t.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(t.data_left).unwrap_or(usize::MAX));
        let n = t.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar archive: entry data ends early",
            ));
        }
        t.pos += n as u64;
        t.data_left -= n as u64;
        Ok(n)
    }
}

/// The fields of one ustar / GNU / V7 header block.
struct Header {
    name: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    mode: u64,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    dev_major: u64,
    dev_minor: u64,
}

impl Header {
    fn parse(b: &[u8; BLOCK]) -> std::result::Result<Header, String> {
        let stored = unsigned(&b[148..156]).ok_or("unreadable header checksum")?;
        let (mut sum, mut ssum) = (0u64, 0i64);
        for (i, &x) in b.iter().enumerate() {
            let x = if (148..156).contains(&i) { b' ' } else { x };
            sum += u64::from(x);
            ssum += i64::from(x as i8);
        }
        if stored != sum && i64::try_from(stored).ok() != Some(ssum) {
            return Err("bad header checksum (not a tar archive?)".into());
        }
        let field = |name: &str, r: std::ops::Range<usize>| unsigned(&b[r]).ok_or(format!("bad {name} field"));
        let ustar = &b[257..263] == b"ustar\0";
        let mut name = cstr(&b[0..100]).to_vec();
        let prefix = cstr(&b[345..500]);
        if ustar && !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        // Device fields mean something only for devices; other entries may
        // carry anything there (V7 headers have no such fields at all).
        let has_dev = (ustar || &b[257..265] == b"ustar  \0") && matches!(b[156], b'3' | b'4');
        Ok(Header {
            name,
            link: cstr(&b[157..257]).to_vec(),
            typeflag: b[156],
            mode: field("mode", 100..108)?,
            uid: field("uid", 108..116)?,
            gid: field("gid", 116..124)?,
            mtime: signed(&b[136..148]).ok_or("bad mtime field")?,
            size: field("size", 124..136)?,
            dev_major: if has_dev { field("devmajor", 329..337)? } else { 0 },
            dev_minor: if has_dev { field("devminor", 337..345)? } else { 0 },
        })
    }
}

/// Zero bytes after `size` bytes of data, up to the next block boundary.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated field.
fn cstr(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    &f[..end]
}

/// A numeric header field as a signed value: octal or GNU base-256.
fn number(f: &[u8]) -> Option<i128> {
    let (&first, rest) = f.split_first()?;
    if first & 0x80 != 0 {
        // Base-256: big-endian two's complement; the top bit is the marker and
        // 0x40 the sign. At most 12 bytes (96 bits), so i128 cannot overflow.
        let mut v = i128::from(first & 0x7f);
        if first & 0x40 != 0 {
            v -= 0x80;
        }
        for &x in rest {
            v = v * 256 + i128::from(x);
        }
        return Some(v);
    }
    let mut digits = f.iter().skip_while(|c| **c == b' ').peekable();
    let mut v: i128 = 0;
    while let Some(&c) = digits.next_if(|c| (b'0'..=b'7').contains(*c)) {
        v = v * 8 + i128::from(c - b'0');
    }
    // Digits end at a NUL or a space (or the end of the field).
    match digits.next() {
        None | Some(&(0 | b' ')) => Some(v),
        Some(_) => None,
    }
}

fn unsigned(f: &[u8]) -> Option<u64> {
    u64::try_from(number(f)?).ok()
}

fn signed(f: &[u8]) -> Option<i64> {
    i64::try_from(number(f)?).ok()
}

/// Split pax records by their length prefix: `LEN key=value\n`, `LEN` the
/// decimal length of the whole record. Trailing NUL bytes are tolerated.
fn parse_pax(mut data: &[u8]) -> std::result::Result<Vec<Record>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data
            .iter()
            .take(21)
            .position(|b| *b == b' ')
            .ok_or("record without a length")?;
        let len = parse_dec(&data[..sp]).ok_or("bad record length")?;
        let len = usize::try_from(len).map_err(|_| "bad record length")?;
        if len > data.len() {
            return Err("record runs past the end of the header".into());
        }
        if len < sp + 4 {
            return Err("record too short".into());
        }
        let (rec, rest) = data.split_at(len);
        data = rest;
        let body = match rec[sp + 1..].split_last() {
            Some((b'\n', body)) => body,
            _ => return Err("record does not end with a newline".into()),
        };
        let eq = body.iter().position(|b| *b == b'=').ok_or("record without '='")?;
        if eq == 0 {
            return Err("record with an empty keyword".into());
        }
        out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
    }
    Ok(out)
}

/// A plain decimal number (ASCII digits only).
fn parse_dec(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parse a pax time ("123", "123.5", "-1.25") into seconds and nanoseconds
/// (nanoseconds always count forward from the seconds value). Digits past
/// the ninth fractional one are dropped.
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let dot = v.iter().position(|b| *b == b'.');
    let (whole, frac) = match dot {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = i64::try_from(parse_dec(whole)?).ok()?;
    let mut ns: u32 = 0;
    for i in 0..9 {
        ns = ns * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
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
    use super::*;
    use crate::format::tarhdr::write_header;
    use crate::format::{Entry, Kind};

    fn read_all(bytes: &[u8]) -> Result<Vec<TarEntry>> {
        let mut r = TarReader::new(bytes, "test");
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    /// A header block with a valid checksum.
    fn block(name: &[u8], typeflag: u8, size: u64, edit: impl FnOnce(&mut [u8; 512])) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        edit(&mut h);
        checksum(&mut h);
        h
    }

    fn checksum(h: &mut [u8; 512]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn push(out: &mut Vec<u8>, h: [u8; 512], data: &[u8]) {
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn rec(key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let mut r = len.to_string().into_bytes();
        r.push(b' ');
        r.extend_from_slice(key);
        r.push(b'=');
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    fn entry(path: &[u8], kind: Kind) -> Entry {
        let mut e = Entry::new(path.to_vec(), kind);
        e.mode = 0o644;
        e
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time(b"-4.000000001"), Some((-5, 999_999_999)));
        assert_eq!(parse_pax_time(b"-5"), Some((-5, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"--9223372036854775808"), None);
        assert_eq!(parse_pax_time(b"1.5x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    #[test]
    fn pax_records_split_by_length_not_newline() {
        let mut data = rec(b"path", b"a\nb");
        data.extend(rec(b"SCHILY.xattr.user.k", b"x=\ny\n"));
        let recs = parse_pax(&data).unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a\nb".to_vec()));
        assert_eq!(recs[1], (b"SCHILY.xattr.user.k".to_vec(), b"x=\ny\n".to_vec()));
        for bad in [
            &b"5 a=b\n"[..],
            b"99 a=b\n",
            b"x a=b\n",
            b"6 ab\nc",
            b"6 =ab\n",
            b"3 \n",
        ] {
            assert!(parse_pax(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn our_writer_round_trips() {
        let mut cases = Vec::new();
        let mut e = entry(b"dir/file", Kind::File);
        e.size = 3;
        e.xattrs = vec![
            (b"user.bin".to_vec(), vec![0, 10, 255, b'\n', b'=', 0]),
            (b"user.nl".to_vec(), b"a\nb".to_vec()),
            (b"user.empty".to_vec(), Vec::new()),
        ];
        e.xattrs.sort();
        e.mtime = -5;
        e.mtime_nsec = 999_999_999;
        e.uid = 4_000_000_000;
        e.gid = 1 << 21;
        cases.push(e);
        let mut long = b"d/".to_vec();
        long.extend(std::iter::repeat_n(b'x', 150));
        long.extend_from_slice(b"\nnl");
        let mut e = entry(&long, Kind::File);
        e.mtime = 1 << 34;
        cases.push(e);
        let mut e = entry(b"s", Kind::Symlink);
        e.link = [b"t\n".repeat(80), vec![0xff, 0xfe]].concat();
        e.mtime = 7;
        e.mtime_nsec = 5;
        cases.push(e);
        let mut e = entry(b"dev", Kind::Char);
        e.dev_major = 4;
        e.dev_minor = 64;
        cases.push(e);
        cases.push(entry(b"", Kind::Dir));
        cases.push(entry(b"a\nb", Kind::Dir));
        cases.push(entry(b"fifo", Kind::Fifo));
        let mut e = entry(b"h", Kind::Hardlink);
        e.link = b"dir/file".to_vec();
        cases.push(e);
        for want in cases {
            let mut out = Vec::new();
            write_header(&want, &mut out);
            let data_at = out.len() as u64;
            out.extend_from_slice(&vec![b'z'; want.size as usize]);
            out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
            let mut r = TarReader::new(&out[..], "test");
            let mut got = r.next_entry().unwrap().unwrap();
            let mut data = Vec::new();
            r.data().read_to_end(&mut data).unwrap();
            assert!(r.next_entry().unwrap().is_none());
            assert_eq!(data.len() as u64, want.size);
            assert_eq!(got.data_offset, data_at);
            assert_eq!(got.header_offset, 0);
            let name = crate::format::tarhdr::tar_name(&want);
            assert_eq!(got.name, name);
            if matches!(want.kind, Kind::Symlink | Kind::Hardlink) {
                assert_eq!(got.link, want.link);
            }
            let kind = match want.kind {
                Kind::File => TarKind::File,
                Kind::Dir => TarKind::Dir,
                Kind::Symlink => TarKind::Symlink,
                Kind::Hardlink => TarKind::Hardlink,
                Kind::Char => TarKind::Char,
                Kind::Fifo => TarKind::Fifo,
                _ => unreachable!(),
            };
            assert_eq!(got.kind, kind);
            assert_eq!(
                (got.mode, got.uid, got.gid),
                (want.mode, u64::from(want.uid), u64::from(want.gid))
            );
            assert_eq!((got.mtime, got.mtime_nsec), (want.mtime, want.mtime_nsec));
            assert_eq!(
                (got.dev_major, got.dev_minor),
                (u64::from(want.dev_major), u64::from(want.dev_minor))
            );
            assert_eq!(std::mem::take(&mut got.xattrs), want.xattrs);
        }
    }

    #[test]
    fn gnu_long_names_base256_and_globals() {
        let mut t = Vec::new();
        let long = b"long/".repeat(40);
        push(
            &mut t,
            block(b"././@LongLink", b'L', long.len() as u64 + 1, |_| {}),
            &[long.clone(), vec![0]].concat(),
        );
        push(&mut t, block(b"short", b'K', 6, |_| {}), b"target");
        let h = block(b"trunc", b'1', 0, |h| {
            h[257..265].copy_from_slice(b"ustar  \0");
            // base-256 uid 2^40 and mtime -2.
            h[108..116].copy_from_slice(&[0x80, 0, 1, 0, 0, 0, 0, 0]);
            h[136..148].copy_from_slice(&[0xff; 12]);
            h[147] = 0xfe;
        });
        push(&mut t, h, b"");
        let g = [rec(b"uid", b"77"), rec(b"comment", b"x\ny")].concat();
        push(&mut t, block(b"pax_global_header", b'g', g.len() as u64, |_| {}), &g);
        push(
            &mut t,
            block(b"name", b'0', 0, |h| h[345..348].copy_from_slice(b"pre")),
            b"",
        );
        push(&mut t, block(b"old-dir/", 0, 0, |_| {}), b"");
        t.resize(t.len() + 1024, 0);
        let es = read_all(&t).unwrap();
        assert_eq!(es[0].name, long);
        assert_eq!(es[0].link, b"target");
        assert_eq!(es[0].kind, TarKind::Hardlink);
        assert_eq!(es[0].uid, 1 << 40);
        assert_eq!(es[0].mtime, -2);
        assert_eq!((es[1].name.as_slice(), es[1].uid), (&b"pre/name"[..], 77));
        assert_eq!((es[2].kind, es[2].uid), (TarKind::Dir, 77));
        // EOF after one zero block, and at a header boundary, both end it.
        assert_eq!(read_all(&t[..t.len() - 512]).unwrap().len(), 3);
        assert_eq!(read_all(&t[..t.len() - 1024]).unwrap().len(), 3);
    }

    #[test]
    fn refusals_and_corruption_name_the_problem() {
        let err = |t: &[u8]| read_all(t).unwrap_err().to_string();
        let mut t = Vec::new();
        push(&mut t, block(b"sparse", b'S', 0, |_| {}), b"");
        assert!(err(&t).contains("entry sparse: refused: GNU sparse"), "{}", err(&t));
        let mut t = Vec::new();
        let x = rec(b"GNU.sparse.major", b"1");
        push(&mut t, block(b"x", b'x', x.len() as u64, |_| {}), &x);
        push(&mut t, block(b"psparse", b'0', 0, |_| {}), b"");
        assert!(err(&t).contains("entry psparse: refused"), "{}", err(&t));
        let mut t = Vec::new();
        push(&mut t, block(b"weird", b'Q', 0, |_| {}), b"");
        assert!(err(&t).contains("unsupported tar entry type 'Q'"), "{}", err(&t));
        let mut t = Vec::new();
        push(&mut t, block(b"f", b'0', 0, |h| h[0] = b'g'), b"");
        t[0] = b'f';
        assert!(err(&t).contains("checksum"), "{}", err(&t));
        let mut t = Vec::new();
        push(&mut t, block(b"x", b'x', MAX_PAX_SIZE + 1, |_| {}), b"");
        assert!(err(&t).contains("exceeds the limit"), "{}", err(&t));
        let mut t = Vec::new();
        push(&mut t, block(b"L", b'L', MAX_LONG_NAME + 1, |_| {}), b"");
        assert!(err(&t).contains("exceeds the limit"), "{}", err(&t));
        let mut t = Vec::new();
        // A base-256 size of 2^40 with 3 bytes of data.
        let huge = |h: &mut [u8; 512]| h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        push(&mut t, block(b"f", b'0', 0, huge), b"abc");
        assert!(err(&t).contains("truncated"), "{}", err(&t));
        let mut t = Vec::new();
        push(&mut t, block(b"f", b'0', 0, |_| {}), b"");
        t.extend_from_slice(&[0; 512]);
        push(&mut t, block(b"g", b'0', 0, |_| {}), b"");
        assert!(err(&t).contains("lone zero block"), "{}", err(&t));
        // A volume label is skipped.
        let mut t = Vec::new();
        push(&mut t, block(b"label", b'V', 0, |_| {}), b"");
        push(&mut t, block(b"f", b'0', 0, |_| {}), b"");
        let es = read_all(&t).unwrap();
        assert_eq!((es.len(), es[0].name.as_slice()), (1, &b"f"[..]));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn sample() -> Vec<u8> {
            let mut out = Vec::new();
            let mut e = entry(b"d/f", Kind::File);
            e.size = 5;
            e.xattrs = vec![(b"user.k".to_vec(), b"a\nb".to_vec())];
            e.mtime = -3;
            e.mtime_nsec = 1;
            write_header(&e, &mut out);
            out.extend_from_slice(b"hello");
            out.resize(out.len().div_ceil(512) * 512, 0);
            let mut e = entry(&b"x".repeat(200), Kind::Symlink);
            e.link = b"y".repeat(200);
            write_header(&e, &mut out);
            out.resize(out.len() + 1024, 0);
            out
        }

        fn drain(bytes: &[u8]) {
            let mut r = TarReader::new(bytes, "prop");
            for _ in 0..bytes.len() / 512 + 2 {
                match r.next_entry() {
                    Ok(Some(_)) => {
                        let _ = io::copy(&mut r.data(), &mut io::sink());
                    }
                    _ => return,
                }
            }
            panic!("reader did not stop");
        }

        proptest! {
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                drain(&bytes);
            }

            #[test]
            fn mutated_archives_never_panic(
                edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<proptest::sample::Index>(),
            ) {
                let mut bytes = sample();
                for (at, v) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = v;
                }
                drain(&bytes);
                // Headers with fixed checksums reach the field parsers.
                for h in (0..bytes.len() / 512).map(|i| i * 512) {
                    let mut b = [0u8; 512];
                    b.copy_from_slice(&bytes[h..h + 512]);
                    checksum(&mut b);
                    bytes[h..h + 512].copy_from_slice(&b);
                }
                drain(&bytes);
                let n = cut.index(bytes.len() + 1);
                drain(&bytes[..n]);
            }
        }
    }
}
