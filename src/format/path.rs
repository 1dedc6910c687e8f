//! Paths inside a snapshot: relative, `/`-separated byte strings.
//!
//! The root is the empty path. Entries are ordered component by component (as
//! if `/` sorted below every other byte), which makes every directory's subtree
//! one contiguous run of the sorted entry table.

use std::cmp::Ordering;

use super::limits::{MAX_NAME, MAX_PATH};

/// Compare two snapshot paths component-wise.
pub fn cmp(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    // Skip the common prefix eight bytes at a time.
    let mut i = 0;
    while i + 8 <= n && a[i..i + 8] == b[i..i + 8] {
        i += 8;
    }
    match a[i..n].iter().zip(&b[i..n]).position(|(x, y)| x != y) {
        Some(j) => {
            let key = |c: u8| if c == b'/' { 0u8 } else { c };
            key(a[i + j]).cmp(&key(b[i + j]))
        }
        None => a.len().cmp(&b.len()),
    }
}

/// Is `p` strictly inside directory `dir`?
pub fn is_within(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() && !p.is_empty() || p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// Why a path is not acceptable, if it is not.
///
/// Accepted: empty (the root) or components joined by single `/`, none empty,
/// `.` or `..`, no NUL bytes, at most [`MAX_PATH`] bytes with components of
/// at most [`MAX_NAME`] bytes.
pub fn check(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Ok(());
    }
    if p.len() > MAX_PATH {
        return Err("path longer than 4096 bytes");
    }
    if p[0] == b'/' {
        return Err("absolute path");
    }
    if p.contains(&0) {
        return Err("NUL byte in path");
    }
    for c in p.split(|b| *b == b'/') {
        match c {
            b"" => return Err("empty path component"),
            b"." => return Err("'.' path component"),
            b".." => return Err("'..' path component"),
            c if c.len() > MAX_NAME => return Err("path component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Normalise a path as found in a tar header: strip leading `./` and `/`-runs,
/// drop `.` components and trailing slashes. `..` and absolute paths are kept so
/// that [`check`] rejects them.
pub fn normalize_tar_name(raw: &[u8]) -> Vec<u8> {
    let absolute = raw.first() == Some(&b'/');
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    if absolute {
        out.push(b'/');
    }
    for c in raw.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        if out.len() > usize::from(absolute) {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// The parent of a non-root path (`""` for top-level entries).
pub fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

/// The last component of a path.
pub fn file_name(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// Join a directory path and a name.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + name.len() + 1);
    out.extend_from_slice(dir);
    if !dir.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Human-readable form of a path for messages.
pub fn display(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_is_contiguous() {
        let mut v: Vec<&[u8]> = vec![b"a/b.txt", b"a/b/c", b"a/b", b"a", b"", b"a-b", b"a/b/c/d"];
        v.sort_by(|a, b| cmp(a, b));
        let want: Vec<&[u8]> = vec![b"", b"a", b"a/b", b"a/b/c", b"a/b/c/d", b"a/b.txt", b"a-b"];
        assert_eq!(v, want);
    }

    #[test]
    fn cmp_matches_component_order() {
        let a: &[u8] = b"node_modules/pkg/lib/x.js";
        assert_eq!(cmp(a, a), Ordering::Equal);
        assert_eq!(cmp(b"node_modules/pkg/lib", b"node_modules/pkg.json"), Ordering::Less);
        assert_eq!(cmp(b"node_modules/pkg", b"node_modules/pkg/a"), Ordering::Less);
        assert_eq!(cmp(b"node_modules/pkh", b"node_modules/pkg/a"), Ordering::Greater);
        assert!(is_within(b"a/b", b"a") && is_within(b"a", b"") && !is_within(b"ab", b"a") && !is_within(b"a", b"a"));
    }

    #[test]
    fn checks() {
        assert!(check(b"").is_ok());
        assert!(check(b"a/b c/\xff").is_ok());
        for bad in [&b"/etc"[..], b"a/../b", b"..", b"a//b", b"a/", b"./a", b"a\0b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        let long_name = vec![b'n'; 256];
        assert_eq!(check(&long_name), Err("path component longer than 255 bytes"));
        assert!(check(&vec![b'n'; 255]).is_ok());
        let deep: Vec<u8> = b"a/".repeat(2100);
        assert_eq!(check(&deep[..4097]), Err("path longer than 4096 bytes"));
        assert!(check(&deep[..4095]).is_ok());
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_tar_name(b"./a//b/./c/"), b"a/b/c");
        assert_eq!(normalize_tar_name(b"./"), b"");
        assert_eq!(normalize_tar_name(b"/etc/passwd"), b"/etc/passwd");
        assert_eq!(normalize_tar_name(b"a/../../b"), b"a/../../b");
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
    }
}
