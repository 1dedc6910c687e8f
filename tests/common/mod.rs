//! Shared helpers for lazysnap integration tests.
//!
//! Include from an integration test with `mod common;`.
//!
//! * [`make_fidelity_tree`] / [`make_fidelity_tree_opts`] build a
//!   deterministic directory tree that exercises every metadata case a
//!   snapshot must reproduce: empty / tiny / large / zero-run / sparse
//!   files, deep and empty directories, relative / absolute / dangling
//!   symlinks (and a symlink to a directory), hardlink groups spanning
//!   directories, a fifo, awkward names (spaces, unicode, newline, >100
//!   byte name, >255 byte path), special mode bits (setuid, setgid,
//!   sticky, 0600, 0444), `user.*` xattrs (including binary values), a
//!   directory with 20,000 entries, and non-zero-nanosecond mtimes on
//!   every entry (files, dirs, symlinks, fifo). Building the tree twice
//!   yields trees that compare equal.
//! * [`compare_trees`] / [`compare_trees_opts`] / [`assert_trees_equal`]
//!   walk two trees without following symlinks (lstat) and report every
//!   difference in: the set of relative paths; file type; permission bits
//!   (`mode & 0o7777`, i.e. including setuid/setgid/sticky; not for
//!   symlinks, whose mode is meaningless on Linux); mtime seconds and
//!   nanoseconds (every type including symlinks, but never for the root
//!   directory itself); uid/gid (only if asked); size and content of
//!   regular files (streamed in chunks); symlink targets; the partition
//!   of non-directory paths into hardlink (inode) groups, plus nlink;
//!   `user.*` xattr names and values (other namespaces are ignored); and
//!   `rdev` of character/block devices.
//! * [`lazysnap`], [`run_ok`], [`run_fail`] run the binary under test.
//! * [`require_fuse`] decides whether a FUSE test can run.
//! * Small libc wrappers for xattrs, mtimes and fifos.

#![allow(dead_code)]

pub mod s3;
pub mod s3_serve;
pub mod signer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// A `Command` for the `lazysnap` binary built by cargo for this test run.
pub fn lazysnap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lazysnap"))
}

/// Runs `cmd` to completion (stdout/stderr captured, stdin closed) and
/// panics with the command, exit status, stdout and stderr unless it
/// exited successfully.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command was expected to succeed but failed\n{}",
            describe_output(cmd, &out)
        );
    }
    out
}

/// Runs `cmd` to completion and panics (showing its output) if it exited
/// successfully.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    if out.status.success() {
        panic!(
            "command was expected to fail but succeeded\n{}",
            describe_output(cmd, &out)
        );
    }
    out
}

fn describe_output(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {cmd:?}\nstatus:  {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

// ---------------------------------------------------------------------------
// FUSE availability
// ---------------------------------------------------------------------------

/// Returns `true` if FUSE tests can run (`/dev/fuse` exists).
///
/// If `/dev/fuse` is missing: returns `false` after a loud message when
/// `LAZYSNAP_SKIP_FUSE=1` is set, and panics otherwise, so a FUSE test is
/// never skipped silently.
pub fn require_fuse() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var_os("LAZYSNAP_SKIP_FUSE").as_deref() == Some(OsStr::new("1")) {
        eprintln!("SKIPPING FUSE TEST: LAZYSNAP_SKIP_FUSE=1 and /dev/fuse missing");
        return false;
    }
    panic!(
        "/dev/fuse is missing: install fuse3 / run scripts/test.sh, \
         or set LAZYSNAP_SKIP_FUSE=1 to skip loudly"
    );
}

// ---------------------------------------------------------------------------
// libc wrappers
// ---------------------------------------------------------------------------

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| panic!("path {path:?} contains a NUL byte"))
}

fn cname(name: &str) -> CString {
    CString::new(name).unwrap_or_else(|_| panic!("xattr name {name:?} contains a NUL byte"))
}

/// Sets `path`'s mtime (without following a final symlink). atime is left
/// untouched.
pub fn set_mtime(path: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    assert!(nsec < 1_000_000_000, "nsec out of range: {nsec}");
    let c = cpath(path);
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated string and `times` points to
    // two initialised timespecs, as utimensat requires.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a fifo at `path` with `mode` (subject to umask).
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(path);
    // SAFETY: `c` is a valid NUL-terminated string.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets xattr `name` on `path` (not following a final symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (c, n) = (cpath(path), cname(name));
    // SAFETY: valid NUL-terminated strings; `value` is valid for its length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes xattr `name` from `path` (not following a final symlink).
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(path), cname(name));
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads xattr `name` of `path` (not following a final symlink);
/// `Ok(None)` if it does not exist.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    get_xattr_c(&cpath(path), &cname(name))
}

fn get_xattr_c(c: &CString, n: &CString) -> io::Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: valid NUL-terminated strings; a NULL buffer of size 0
        // asks for the value's size.
        let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let got = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue, // grew in between; retry
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// Lists all xattr names of `path` (every namespace; not following a
/// final symlink). A filesystem without xattr support yields an empty list.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<OsString>> {
    let c = cpath(path);
    loop {
        // SAFETY: valid NUL-terminated string; NULL/0 asks for the size.
        let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect());
    }
}

/// All `user.*` xattrs of `path` (not following a final symlink).
pub fn user_xattrs(path: &Path) -> io::Result<BTreeMap<OsString, Vec<u8>>> {
    let c = cpath(path);
    let mut out = BTreeMap::new();
    for name in list_xattrs(path)? {
        if !name.as_bytes().starts_with(b"user.") {
            continue;
        }
        let n = CString::new(name.as_bytes()).expect("xattr names from llistxattr have no NUL");
        // A concurrently removed attribute simply is not reported.
        if let Some(value) = get_xattr_c(&c, &n)? {
            out.insert(name, value);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Fidelity tree
// ---------------------------------------------------------------------------

/// Which expensive parts of the fidelity tree to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FidelityOpts {
    /// Create `big/hundred.bin` (100 MiB of pseudo-random data).
    pub big_file: bool,
    /// Create `many/` with 20,000 small files.
    pub many_files: bool,
}

impl FidelityOpts {
    /// Everything (what [`make_fidelity_tree`] builds).
    pub const FULL: FidelityOpts = FidelityOpts {
        big_file: true,
        many_files: true,
    };
    /// Neither the 100 MiB file nor the 20k-entry directory.
    pub const FAST: FidelityOpts = FidelityOpts {
        big_file: false,
        many_files: false,
    };
    /// The 100 MiB file (many frames), without the 20k-entry directory.
    pub const BIG: FidelityOpts = FidelityOpts {
        big_file: true,
        many_files: false,
    };
}

/// Create `dir/name` and fill it with a fidelity tree; returns its path.
pub fn fidelity_src(dir: &Path, name: &str, opts: FidelityOpts) -> PathBuf {
    let src = dir.join(name);
    fs::create_dir(&src).expect("mkdir fidelity source");
    make_fidelity_tree_opts(&src, opts);
    src
}

impl Default for FidelityOpts {
    fn default() -> Self {
        Self::FULL
    }
}

/// Size of `big/hundred.bin`.
pub const BIG_FILE_SIZE: u64 = 100 * MIB as u64;
/// Number of files in `many/`.
pub const MANY_FILES: usize = 20_000;

/// Paths (relative to the fidelity root) of interesting entries, for tests
/// that want to poke at specific cases.
pub mod paths {
    pub const EMPTY: &str = "empty";
    pub const ONE_BYTE: &str = "one_byte";
    pub const BIG: &str = "big/hundred.bin";
    pub const ZERO_RUNS: &str = "zeros/zero_runs.bin";
    pub const SPARSE: &str = "zeros/sparse.bin";
    pub const TEXT_DIR: &str = "text";
    pub const DEEP_LEAF: &str = "deep/l1/l2/l3/l4/l5/l6/leaf.txt";
    pub const EMPTY_DIR: &str = "empty_dir";
    pub const SYMLINK_TARGET: &str = "dir/file";
    pub const LINK_REL: &str = "link_rel";
    pub const LINK_ABS: &str = "link_abs";
    pub const LINK_DANGLING: &str = "link_dangling";
    pub const LINK_TO_DIR: &str = "link_to_dir";
    pub const LINK_UP: &str = "dir/link_up";
    /// Hardlink group of three names.
    pub const HARDLINKS_3: [&str; 3] = [
        "hardlinks/a/orig.txt",
        "hardlinks/b/second.txt",
        "hardlinks/c/d/third.txt",
    ];
    /// Hardlink group of two names.
    pub const HARDLINKS_2: [&str; 2] = ["hardlinks/pair1.bin", "other/pair2.bin"];
    pub const FIFO: &str = "special/fifo";
    pub const SPACES: &str = "names/with some spaces.txt";
    pub const UNICODE: &str = "names/ünïcødé 文件.txt";
    pub const NEWLINE: &str = "names/new\nline";
    pub const EXEC: &str = "modes/exec.sh";
    pub const SETUID: &str = "modes/setuid";
    pub const SETGID_DIR: &str = "modes/setgid_dir";
    pub const STICKY_DIR: &str = "modes/sticky_dir";
    pub const PRIVATE: &str = "modes/private";
    pub const READONLY: &str = "modes/readonly";
    pub const XATTR_FILE: &str = "xattrs/file.txt";
    pub const XATTR_DIR: &str = "xattrs/dir";
    pub const MANY_DIR: &str = "many";
}

/// Relative path of the file with a 150-byte name.
pub fn long_name_path() -> PathBuf {
    let mut name = String::from("long_name_");
    while name.len() < 150 {
        name.push(char::from(b'a' + (name.len() % 26) as u8));
    }
    Path::new("names").join(name)
}

/// Relative path (> 300 bytes) of the file at the bottom of the
/// long-path chain of ~60-byte directory names.
pub fn long_path() -> PathBuf {
    let mut p = PathBuf::from("longpath");
    for i in 0..6 {
        p.push(format!("segment_{i}_{}", "x".repeat(50)));
    }
    p.push("file_at_the_bottom_of_a_very_long_path.txt");
    p
}

/// Builds the full fidelity tree (100 MiB file and 20k-file dir included)
/// in `root`, which must exist and be empty.
pub fn make_fidelity_tree(root: &Path) {
    make_fidelity_tree_opts(root, FidelityOpts::FULL);
}

/// Builds the fidelity tree in `root` (must exist and be empty); see the
/// module docs and [`paths`] for its contents. Deterministic: building it
/// twice gives trees for which [`compare_trees`] returns `Ok`.
///
/// Panics if anything fails, including when the filesystem does not
/// support `user.*` xattrs.
pub fn make_fidelity_tree_opts(root: &Path, opts: FidelityOpts) {
    let meta = fs::symlink_metadata(root).unwrap_or_else(|e| panic!("fidelity tree root {root:?} must exist: {e}"));
    assert!(meta.is_dir(), "fidelity tree root {root:?} is not a directory");
    let non_empty = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot read fidelity tree root {root:?}: {e}"))
        .next()
        .is_some();
    assert!(!non_empty, "fidelity tree root {root:?} must be empty");

    // Regular files.
    write_file(root, paths::EMPTY, b"");
    write_file(root, paths::ONE_BYTE, b"x");
    for (i, lines) in [(0u64, 40usize), (1, 900), (2, 6000)] {
        let path = format!("{}/medium_{i}.txt", paths::TEXT_DIR);
        write_file(root, &path, text_content(i, lines).as_bytes());
    }
    write_zero_runs(&root.join(paths::ZERO_RUNS));
    write_sparse(&root.join(paths::SPARSE));
    if opts.big_file {
        write_random_file(&root.join(paths::BIG), BIG_FILE_SIZE, 0x0b16_f11e);
    }

    // Nested and empty directories.
    write_file(root, paths::DEEP_LEAF, b"deep leaf\n");
    mkdirs(&root.join("deep/l1/l2/empty_in_deep"));
    mkdirs(&root.join(paths::EMPTY_DIR));
    mkdirs(&root.join("empty_nested/a/b/c"));

    // Symlinks.
    write_file(root, paths::SYMLINK_TARGET, b"symlink target\n");
    make_symlink(root, "dir/file", paths::LINK_REL);
    make_symlink(root, "/etc/hostname", paths::LINK_ABS);
    make_symlink(root, "nowhere/none", paths::LINK_DANGLING);
    make_symlink(root, "dir", paths::LINK_TO_DIR);
    make_symlink(root, "../one_byte", paths::LINK_UP);

    // Hardlinks: one group of three across directories, one of two.
    write_file(root, paths::HARDLINKS_3[0], b"three names, one inode\n");
    for name in &paths::HARDLINKS_3[1..] {
        make_hardlink(root, paths::HARDLINKS_3[0], name);
    }
    write_file(root, paths::HARDLINKS_2[0], &random_bytes(4096 + 17, 0x2222));
    make_hardlink(root, paths::HARDLINKS_2[0], paths::HARDLINKS_2[1]);

    // Fifo.
    mkdirs(&root.join("special"));
    let fifo = root.join(paths::FIFO);
    mkfifo(&fifo, 0o644).unwrap_or_else(|e| panic!("mkfifo {fifo:?}: {e}"));

    // Awkward names.
    write_file(root, paths::SPACES, b"spaces\n");
    write_file(root, paths::UNICODE, "ünïcødé content 文件\n".as_bytes());
    write_file(root, paths::NEWLINE, b"newline in name\n");
    write_file(root, long_name_path(), b"long name\n");
    let lp = long_path();
    assert!(lp.as_os_str().len() > 300, "long path too short: {lp:?}");
    write_file(root, &lp, b"long path\n");

    // Mode bits (set explicitly: umask interferes with creation modes).
    write_file(root, paths::EXEC, b"#!/bin/sh\necho hi\n");
    write_file(root, paths::SETUID, b"setuid\n");
    write_file(root, "modes/setgid_dir/inside.txt", b"in setgid dir\n");
    write_file(root, "modes/sticky_dir/inside.txt", b"in sticky dir\n");
    write_file(root, paths::PRIVATE, b"private\n");
    write_file(root, paths::READONLY, b"read only\n");
    for (path, mode) in [
        (paths::EXEC, 0o755),
        (paths::SETUID, 0o4755),
        (paths::SETGID_DIR, 0o2775),
        (paths::STICKY_DIR, 0o1777),
        (paths::PRIVATE, 0o600),
        (paths::READONLY, 0o444),
    ] {
        chmod(&root.join(path), mode);
    }

    // user.* xattrs.
    write_file(root, paths::XATTR_FILE, b"has xattrs\n");
    mkdirs(&root.join(paths::XATTR_DIR));
    set_user_xattr(&root.join(paths::XATTR_FILE), "user.comment", b"hello");
    set_user_xattr(
        &root.join(paths::XATTR_FILE),
        "user.bin",
        &[0x00, 0x01, 0xff, 0x00, 0xfe, b'z'],
    );
    set_user_xattr(&root.join(paths::XATTR_DIR), "user.dir_note", b"on a directory");

    // Many small files.
    if opts.many_files {
        let dir = root.join(paths::MANY_DIR);
        mkdirs(&dir);
        for i in 0..MANY_FILES {
            let name = format!("f{i:05}");
            let p = dir.join(&name);
            fs::write(&p, name.as_bytes()).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        }
    }

    // Mtimes last: children first, so directory mtimes stick.
    set_tree_mtimes(root, Path::new(""));
}

fn write_file(root: &Path, rel: impl AsRef<Path>, content: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        mkdirs(parent);
    }
    fs::write(&p, content).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
}

fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("create_dir_all {p:?}: {e}"));
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {mode:o} {p:?}: {e}"));
}

fn make_symlink(root: &Path, target: &str, rel: &str) {
    let p = root.join(rel);
    symlink(target, &p).unwrap_or_else(|e| panic!("symlink {p:?} -> {target:?}: {e}"));
}

fn make_hardlink(root: &Path, existing: &str, rel: &str) {
    let (src, dst) = (root.join(existing), root.join(rel));
    if let Some(parent) = dst.parent() {
        mkdirs(parent);
    }
    fs::hard_link(&src, &dst).unwrap_or_else(|e| panic!("hard_link {src:?} -> {dst:?}: {e}"));
}

fn set_user_xattr(p: &Path, name: &str, value: &[u8]) {
    if let Err(e) = set_xattr(p, name, value) {
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => panic!(
                "filesystem holding {p:?} does not support user xattrs ({e}); \
                 fidelity tests need one that does (e.g. ext4; use a TMPDIR on it)"
            ),
            _ => panic!("setxattr {name} on {p:?}: {e}"),
        }
    }
}

/// xorshift64 PRNG: tiny, deterministic, good enough for test data.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Any non-zero state works; mix the seed so small seeds differ.
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

fn text_content(seed: u64, lines: usize) -> String {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    ];
    let mut rng = XorShift::new(seed + 1000);
    let mut s = String::new();
    for i in 0..lines {
        s.push_str(&format!("{i:06}:"));
        for _ in 0..(rng.next_u64() % 12 + 1) {
            s.push(' ');
            s.push_str(words[(rng.next_u64() % words.len() as u64) as usize]);
        }
        s.push('\n');
    }
    s
}

/// Writes `size` bytes of xorshift output to `path` in 1 MiB chunks.
fn write_random_file(path: &Path, size: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        mkdirs(parent);
    }
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut rng = XorShift::new(seed);
    let mut buf = vec![0u8; MIB];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        left -= n as u64;
    }
}

/// 8 MiB: 1 MiB random, 6 MiB of written zeros, 1 MiB random.
fn write_zero_runs(path: &Path) {
    if let Some(parent) = path.parent() {
        mkdirs(parent);
    }
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let zeros = vec![0u8; MIB];
    let mut write = |buf: &[u8]| f.write_all(buf).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    write(&random_bytes(MIB, 0x2e20_0001));
    for _ in 0..6 {
        write(&zeros);
    }
    write(&random_bytes(MIB, 0x2e20_0002));
}

/// 8 MiB with a real 6 MiB hole: 1 MiB random, hole, 1 MiB random.
fn write_sparse(path: &Path) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let res = (|| -> io::Result<()> {
        f.write_all(&random_bytes(MIB, 0x5a5e_0001))?;
        f.seek(SeekFrom::Current(6 * MIB as i64))?;
        f.write_all(&random_bytes(MIB, 0x5a5e_0002))?;
        Ok(())
    })();
    res.unwrap_or_else(|e| panic!("write sparse file {path:?}: {e}"));
}

/// FNV-1a, used to derive deterministic per-path mtimes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deterministic mtime for a relative path: 2017..2026, nanoseconds != 0.
fn mtime_for(rel: &Path) -> (i64, u32) {
    let h = fnv1a(rel.as_os_str().as_bytes());
    let secs = 1_500_000_000 + (h % 270_000_000) as i64;
    let nsec = 1 + ((h >> 32) % 999_999_998) as u32;
    (secs, nsec)
}

/// Post-order walk (sorted, so hardlinked inodes end up with the same
/// mtime every time) setting every entry's mtime, directories after their
/// children.
fn set_tree_mtimes(root: &Path, rel: &Path) {
    let abs = root.join(rel);
    let meta = fs::symlink_metadata(&abs).unwrap_or_else(|e| panic!("lstat {abs:?}: {e}"));
    if meta.is_dir() {
        let mut names: Vec<OsString> = fs::read_dir(&abs)
            .unwrap_or_else(|e| panic!("read_dir {abs:?}: {e}"))
            .map(|e| e.unwrap_or_else(|e| panic!("read_dir {abs:?}: {e}")).file_name())
            .collect();
        names.sort();
        for name in names {
            set_tree_mtimes(root, &rel.join(name));
        }
    }
    let (secs, nsec) = mtime_for(rel);
    set_mtime(&abs, secs, nsec).unwrap_or_else(|e| panic!("utimensat {abs:?}: {e}"));
}

// ---------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------

/// What [`compare_trees_opts`] checks besides the always-checked
/// structure, types, modes, contents, symlink targets, hardlinks, xattrs
/// and device numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareOpts {
    /// Compare mtimes (s + ns) of non-directories (never the root).
    pub mtime: bool,
    /// Compare uid/gid.
    pub owner: bool,
    /// Compare mtimes of directories (needs `mtime` too; never the root).
    pub dir_mtime: bool,
    /// Compare hardlink groups and link counts. Not for a live overlayfs
    /// view: it reports a lower inode's count for a name whose sibling was
    /// copied up or deleted, and a copied-up file and a new upper link to it
    /// with different inode numbers, which no snapshot can reproduce.
    pub links: bool,
}

impl Default for CompareOpts {
    /// What [`compare_trees`] uses: everything except ownership.
    fn default() -> Self {
        CompareOpts {
            mtime: true,
            owner: false,
            dir_mtime: true,
            links: true,
        }
    }
}

impl CompareOpts {
    /// For a live overlayfs view: everything but hardlink groups.
    pub const LIVE: CompareOpts = CompareOpts {
        mtime: true,
        owner: false,
        dir_mtime: true,
        links: false,
    };
}

/// How many differences are listed in the error text.
const MAX_REPORTED: usize = 20;

/// Compares two trees with [`CompareOpts::default`] (everything except
/// uid/gid). `Err` holds a readable list of differences.
pub fn compare_trees(a: &Path, b: &Path) -> Result<(), String> {
    compare_trees_opts(a, b, CompareOpts::default())
}

/// Panics with the difference list unless `a` and `b` compare equal under
/// [`compare_trees`].
pub fn assert_trees_equal(a: &Path, b: &Path) {
    if let Err(diff) = compare_trees(a, b) {
        panic!("{diff}");
    }
}

/// Panics with the difference list unless `a` and `b` compare equal under
/// [`compare_trees`] with owners (uid/gid) compared too.
pub fn assert_trees_equal_with_owners(a: &Path, b: &Path) {
    let opts = CompareOpts {
        owner: true,
        ..CompareOpts::default()
    };
    if let Err(diff) = compare_trees_opts(a, b, opts) {
        panic!("{diff}");
    }
}

/// Compares the trees rooted at `a` and `b` (see the module docs for what
/// is checked). Returns `Err` with the first [`MAX_REPORTED`] differences
/// and the total count; also `Err` if a tree cannot be read.
///
/// A subtree present on one side only (or replacing a non-directory) is
/// reported once, with the number of entries below it, not entry by entry.
pub fn compare_trees_opts(a: &Path, b: &Path, opts: CompareOpts) -> Result<(), String> {
    let ta = scan_tree(a)?;
    let tb = scan_tree(b)?;
    let ga = hardlink_groups(&ta);
    let gb = hardlink_groups(&tb);

    let mut diffs: Vec<String> = Vec::new();
    let mut link_reported: BTreeSet<&Path> = BTreeSet::new();
    let all: BTreeSet<&PathBuf> = ta.keys().chain(tb.keys()).collect();

    // Entries below a directory that exists on one side only (or is not a
    // directory on the other side) are summarised, not listed. Path order
    // is component-wise, so such descendants directly follow their dir.
    let mut skip_below: Option<&Path> = None;
    for rel in all {
        if let Some(prefix) = skip_below {
            if rel.starts_with(prefix) {
                continue;
            }
            skip_below = None;
        }
        let shown = show(rel);
        let (ea, eb) = match (ta.get(rel), tb.get(rel)) {
            (Some(ea), Some(eb)) => (ea, eb),
            (Some(ea), None) => {
                let below = summarise_below(&ta, rel);
                diffs.push(format!("{shown}: only in a ({:?}{below})", ea.kind));
                skip_below = Some(rel);
                continue;
            }
            (None, Some(eb)) => {
                let below = summarise_below(&tb, rel);
                diffs.push(format!("{shown}: only in b ({:?}{below})", eb.kind));
                skip_below = Some(rel);
                continue;
            }
            (None, None) => unreachable!("path from the union of both key sets"),
        };
        if ea.kind != eb.kind {
            let below = format!("{}{}", summarise_below(&ta, rel), summarise_below(&tb, rel));
            diffs.push(format!("{shown}: type differs: a={:?} b={:?}{below}", ea.kind, eb.kind));
            skip_below = Some(rel);
            continue;
        }
        let is_root = rel.as_os_str().is_empty();

        if ea.kind != Kind::Symlink && ea.mode != eb.mode {
            diffs.push(format!("{shown}: mode differs: a={:#o} b={:#o}", ea.mode, eb.mode));
        }
        let check_mtime = opts.mtime && !is_root && (ea.kind != Kind::Dir || opts.dir_mtime);
        if check_mtime && ea.mtime != eb.mtime {
            diffs.push(format!(
                "{shown}: mtime differs: a={}.{:09} b={}.{:09}",
                ea.mtime.0, ea.mtime.1, eb.mtime.0, eb.mtime.1
            ));
        }
        if opts.owner && (ea.uid, ea.gid) != (eb.uid, eb.gid) {
            diffs.push(format!(
                "{shown}: owner differs: a={}:{} b={}:{}",
                ea.uid, ea.gid, eb.uid, eb.gid
            ));
        }
        match ea.kind {
            Kind::File => {
                if ea.size != eb.size {
                    diffs.push(format!("{shown}: size differs: a={} b={}", ea.size, eb.size));
                } else {
                    match first_content_difference(&a.join(rel), &b.join(rel)) {
                        Ok(None) => {}
                        Ok(Some(off)) => diffs.push(format!("{shown}: content differs (first at byte offset {off})")),
                        Err(e) => diffs.push(format!("{shown}: cannot compare content: {e}")),
                    }
                }
            }
            Kind::Symlink if ea.target != eb.target => {
                diffs.push(format!(
                    "{shown}: symlink target differs: a={:?} b={:?}",
                    ea.target, eb.target
                ));
            }
            Kind::CharDev | Kind::BlockDev if ea.rdev != eb.rdev => {
                diffs.push(format!(
                    "{shown}: device number differs: a={:#x} b={:#x}",
                    ea.rdev, eb.rdev
                ));
            }
            _ => {}
        }
        if opts.links && ea.kind != Kind::Dir && !link_reported.contains(rel.as_path()) {
            let group_a = &ga[&ea.dev_ino];
            let group_b = &gb[&eb.dev_ino];
            if group_a != group_b {
                diffs.push(format!(
                    "{shown}: hardlink group differs: a has {} name(s) {:?} (nlink {}), \
                     b has {} name(s) {:?} (nlink {})",
                    group_a.len(),
                    group_a,
                    ea.nlink,
                    group_b.len(),
                    group_b,
                    eb.nlink
                ));
                link_reported.extend(group_a.iter().map(PathBuf::as_path));
                link_reported.extend(group_b.iter().map(PathBuf::as_path));
            } else if ea.nlink != eb.nlink {
                diffs.push(format!(
                    "{shown}: nlink differs: a={} b={} (links outside the tree?)",
                    ea.nlink, eb.nlink
                ));
            }
        }
        diff_xattrs(&shown, &ea.xattrs, &eb.xattrs, &mut diffs);
    }

    if diffs.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "trees differ: {} difference(s) between a={a:?} and b={b:?}:\n",
        diffs.len()
    );
    for d in diffs.iter().take(MAX_REPORTED) {
        msg.push_str("  ");
        msg.push_str(d);
        msg.push('\n');
    }
    if diffs.len() > MAX_REPORTED {
        msg.push_str(&format!("  ... and {} more\n", diffs.len() - MAX_REPORTED));
    }
    Err(msg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// `st_mode & 0o7777`.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    dev_ino: (u64, u64),
    nlink: u64,
    rdev: u64,
    target: Option<PathBuf>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// ", N entries below (not listed)" for a directory with descendants.
fn summarise_below(tree: &BTreeMap<PathBuf, Entry>, dir: &Path) -> String {
    let n = tree
        .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(dir))
        .count();
    if n == 0 {
        String::new()
    } else {
        format!(", {n} entries below (not listed)")
    }
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "\".\" (root)".to_string()
    } else {
        format!("{rel:?}")
    }
}

/// lstat-walks `root`, keyed by path relative to it (root itself = "").
fn scan_tree(root: &Path) -> Result<BTreeMap<PathBuf, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let meta = fs::symlink_metadata(&abs).map_err(|e| format!("lstat {abs:?}: {e}"))?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            return Err(format!("{abs:?}: unknown file type {ft:?}"));
        };
        if kind == Kind::Dir {
            for entry in fs::read_dir(&abs).map_err(|e| format!("read_dir {abs:?}: {e}"))? {
                let entry = entry.map_err(|e| format!("read_dir {abs:?}: {e}"))?;
                stack.push(rel.join(entry.file_name()));
            }
        }
        let target = if kind == Kind::Symlink {
            Some(fs::read_link(&abs).map_err(|e| format!("readlink {abs:?}: {e}"))?)
        } else {
            None
        };
        let xattrs = user_xattrs(&abs).map_err(|e| format!("xattrs of {abs:?}: {e}"))?;
        out.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                size: meta.size(),
                dev_ino: (meta.dev(), meta.ino()),
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                target,
                xattrs,
            },
        );
    }
    Ok(out)
}

/// (dev, ino) -> sorted relative paths, for every non-directory.
fn hardlink_groups(tree: &BTreeMap<PathBuf, Entry>) -> HashMap<(u64, u64), Vec<PathBuf>> {
    let mut groups: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    // BTreeMap iteration is sorted, so each group comes out sorted.
    for (rel, e) in tree {
        if e.kind != Kind::Dir {
            groups.entry(e.dev_ino).or_default().push(rel.clone());
        }
    }
    groups
}

fn diff_xattrs(shown: &str, a: &BTreeMap<OsString, Vec<u8>>, b: &BTreeMap<OsString, Vec<u8>>, diffs: &mut Vec<String>) {
    let names: BTreeSet<&OsString> = a.keys().chain(b.keys()).collect();
    for name in names {
        match (a.get(name), b.get(name)) {
            (Some(va), Some(vb)) if va != vb => diffs.push(format!(
                "{shown}: xattr {name:?} differs: a=b\"{}\" b=b\"{}\"",
                va.escape_ascii(),
                vb.escape_ascii()
            )),
            (Some(_), None) => diffs.push(format!("{shown}: xattr {name:?} only in a")),
            (None, Some(_)) => diffs.push(format!("{shown}: xattr {name:?} only in b")),
            _ => {}
        }
    }
}

/// Streams both files in 1 MiB chunks; `Ok(Some(offset))` of the first
/// differing byte (or of the end of the shorter file), `Ok(None)` if equal.
fn first_content_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let open = |p: &Path| File::open(p).map_err(|e| io::Error::new(e.kind(), format!("open {p:?}: {e}")));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; MIB], vec![0u8; MIB]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if ba[..na] != bb[..nb] {
            let i = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Ok(Some(offset + i as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `len` incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `input` piped through `cmd` (a stock compressor): its output.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("join").expect("write");
    assert!(out.status.success(), "{cmd:?}");
    out.stdout
}

/// A pax tar of `dir` (xattrs, nanosecond times) made by stock GNU tar.
pub fn tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--format=pax", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Run `cmd` with bash; panics with its stderr if it fails. Returns stdout.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("bash").args(["-c", cmd]).output().expect("bash");
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const STOCK_TAR_X: &str = "tar --xattrs --xattrs-include='*' --numeric-owner -xpf -";

/// Restore snapshot object `snap` into the existing dir `dest` with stock
/// tools only: `zstd -d | tar -x`.
pub fn stock_extract_into(snap: &Path, dest: &Path) {
    sh(&format!(
        "zstd -dc '{}' | {STOCK_TAR_X} -C '{}'",
        snap.display(),
        dest.display()
    ));
}

/// Apply diff snapshot object `snap` over `dest` with stock tools and the OCI
/// layer rules: whiteouts delete, opaque markers empty their directory, an
/// entry replaces what was at its path (unlinked first, so a hardlink
/// sibling of the old file keeps the old content); then the layer is laid over.
/// (`tar -t` escapes special characters in names, newlines included, and
/// `printf %b` undoes that.)
pub fn stock_apply_layer(snap: &Path, dest: &Path) {
    let (snap, s) = (snap.display(), dest.display());
    sh(&format!(
        "zstd -dc '{snap}' | tar -t | while IFS= read -r l; do e=$(printf '%bx' \"$l\"); e=${{e%x}}; \
         b=$(basename \"$e\"); d=$(dirname \"$e\"); \
         case \"$e\" in \
           */) ;; \
           */.wh..wh..opq|.wh..wh..opq) find '{s}'/\"$d\" -mindepth 1 -delete ;; \
           .wh.*|*/.wh.*) rm -rf '{s}'/\"$d\"/\"${{b#.wh.}}\" ;; \
           *) if [ -d '{s}'/\"$e\" ] && [ ! -L '{s}'/\"$e\" ]; then rm -rf '{s}'/\"$e\"; \
              else rm -f '{s}'/\"$e\"; fi ;; \
         esac; done"
    ));
    sh(&format!(
        "zstd -dc '{snap}' | {STOCK_TAR_X} --overwrite --exclude='.wh.*' -C '{s}'"
    ));
}

/// How a test reaches its snapshots. A test body written once as
/// `fn body(access: Access)` runs over each of them through
/// [`access_tests!`](crate::access_tests).
///
/// Writes (create, save) go to [`Env::store`]; reads name the snapshot
/// through [`Env::snapshot_args`], the one place that knows how each path
/// reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A local store directory.
    File,
    /// `s3://snaps/ws` on an in-process S3 server.
    S3,
    /// The same S3 store read through a presigned mount spec
    /// (`presign NAME` once, then `--spec FILE`), by commands that hold no
    /// credential.
    Spec,
    /// Pod mode: every command (writes too) goes through a `lazysnap
    /// signer` in front of the S3 store, holding only a token.
    Signer,
}

impl Access {
    /// Over a network (a test S3 server), rather than a local directory.
    pub fn remote(self) -> bool {
        !matches!(self, Access::File)
    }

    /// The fidelity tree a body that wants `local` builds on this path:
    /// `local` itself for a local store; over the network,
    /// [`FidelityOpts::FAST`]: every metadata case, without the 100 MiB
    /// file and the 20,000-file dir (generating, uploading and reading
    /// those back is what would make every network variant slow, and
    /// neither is about the store). A body whose subject is one of them
    /// asks for it on top.
    pub fn tree(self, local: FidelityOpts) -> FidelityOpts {
        if self.remote() {
            FidelityOpts::FAST
        } else {
            local
        }
    }
}

/// One `#[test]` per access path for `fn body(access: Access)`, in a module
/// named after it (`body::file`, `body::s3`, `body::spec`, `body::signer`):
///
/// * `access_tests!(body)`: every path a snapshot is read through (mount,
///   extract, cat, ls);
/// * `access_tests!(writable: body)`: the stores a workspace saves to.
#[macro_export]
macro_rules! access_tests {
    ($body:ident) => {
        $crate::access_tests!(@tests $body: file => File, s3 => S3, spec => Spec, signer => Signer);
    };
    (writable: $body:ident) => {
        $crate::access_tests!(@tests $body: file => File, s3 => S3, signer => Signer);
    };
    (@tests $body:ident: $($test:ident => $access:ident),+) => {
        mod $body {
            $(
                #[test]
                fn $test() {
                    super::$body($crate::common::Access::$access)
                }
            )+
        }
    };
}

/// The prefix of the S3 store in bucket [`s3::BUCKET`].
const S3_PREFIX: &str = "ws";

/// A temp dir holding a store, a state dir and mount points, driving the
/// binary; every mount still present is unmounted on drop.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub mounts: Vec<PathBuf>,
    /// How snapshots are reached.
    pub access: Access,
    /// The S3 server, for the S3 access path.
    pub s3: Option<s3::S3Server>,
    /// The signer, for the signer access path.
    pub signer: Option<signer::SignerProc>,
}

impl Env {
    /// An env with a local store.
    pub fn new() -> Env {
        Env::with_access(Access::File)
    }
    /// An env whose store is reached through `access` (an S3 server is
    /// started for the S3 path).
    pub fn with_access(access: Access) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s3 = match access {
            Access::File => None,
            Access::S3 | Access::Spec | Access::Signer => Some(s3::S3Server::start(&tmp.path().join("s3"))),
        };
        let mut env = Env {
            tmp,
            mounts: Vec::new(),
            access,
            s3,
            signer: None,
        };
        if access == Access::Signer {
            env.signer = Some(signer::SignerProc::for_env(&env));
        }
        env
    }
    /// A path inside the temp dir.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    /// The S3 server (panics on a local env).
    pub fn s3(&self) -> &s3::S3Server {
        self.s3.as_ref().expect("an env with an S3 store")
    }
    /// The URI of the store snapshots are written to: a local dir, or
    /// `s3://snaps/ws`.
    pub fn store(&self) -> String {
        match (&self.signer, &self.s3) {
            (Some(signer), _) => signer.store(),
            (None, None) => self.p("store").display().to_string(),
            (None, Some(_)) => self.s3_store(),
        }
    }
    /// The S3 store itself (what a signer serves).
    pub fn s3_store(&self) -> String {
        format!("s3://{}/{S3_PREFIX}", s3::BUCKET)
    }
    /// Where the bytes of snapshot `name` lie on this machine: the local
    /// store's file, or the file the S3 server keeps the object in (for
    /// stock tools and size checks).
    pub fn object_file(&self, name: &str) -> PathBuf {
        let key = format!("{name}.tar.zst");
        match &self.s3 {
            None => self.p("store").join(key),
            Some(s3) => s3.object_file(&format!("{S3_PREFIX}/{key}")),
        }
    }
    /// The binary, with this env's state dir (and, over S3, the server's
    /// endpoint and keys and nothing of this machine's AWS setup).
    pub fn cmd(&self) -> Command {
        if let Some(signer) = &self.signer {
            return signer.pod_cmd(self);
        }
        self.s3_cmd()
    }
    /// The binary with this env's state dir and, where there is an S3
    /// server, its endpoint and keys (what a signer runs with).
    pub fn s3_cmd(&self) -> Command {
        let mut c = lazysnap();
        c.env("LAZYSNAP_STATE_DIR", self.p("state"));
        if let Some(s3) = &self.s3 {
            s3.configure(&mut c, s3.addr, s3::SK);
        }
        c
    }
    /// The binary with this env's state dir and no credential, endpoint
    /// or AWS setting at all.
    pub fn no_credential(&self) -> Command {
        let mut c = lazysnap();
        c.env("LAZYSNAP_STATE_DIR", self.p("state"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("AWS_") || k.starts_with("LAZYSNAP_S3_") {
                c.env_remove(&*k);
            }
        }
        c.env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }
    /// [`Env::cmd`] reaching the S3 server at `endpoint` (a proxy in front
    /// of it) with `secret`.
    pub fn cmd_via(&self, endpoint: std::net::SocketAddr, secret: &str) -> Command {
        let mut c = self.cmd();
        self.s3().configure(&mut c, endpoint, secret);
        c
    }
    /// How a read command names snapshot `name` on this env's access path:
    /// the arguments that follow the subcommand, before its own positional
    /// arguments (`mount ARGS MNT`, `extract ARGS DEST`, `cat ARGS PATH`,
    /// `ls ARGS [PATH]`). The one place that knows how each path reads.
    pub fn snapshot_args(&self, name: &str) -> Vec<OsString> {
        match self.access {
            Access::File | Access::S3 | Access::Signer => vec![name.into(), "--store".into(), self.store().into()],
            Access::Spec => vec!["--spec".into(), self.spec(name).into()],
        }
    }
    /// The mount spec of snapshot `name`, presigned (with the env's
    /// credentials) the first time it is asked for and kept: a spec is
    /// handed out once and read later, whatever the store does meanwhile.
    pub fn spec(&self, name: &str) -> PathBuf {
        let f = self.p(&format!("spec-{}.json", name.replace('/', "%")));
        if !f.exists() {
            run_ok(
                self.cmd()
                    .args(["presign", name, "--store", &self.store(), "--expires", "1h", "-o"])
                    .arg(&f),
            );
        }
        f
    }
    /// The binary for a command that reads a snapshot: [`Env::cmd`], except
    /// that on the spec path it holds no credential, endpoint or AWS
    /// setting at all (the spec's URLs are all it has).
    pub fn reader(&self) -> Command {
        if self.access != Access::Spec {
            return self.cmd();
        }
        self.no_credential()
    }
    /// `lazysnap SUB <snapshot_args(name)>`, for a read command (`mount`,
    /// `extract`, `cat`, `ls`); append its positional arguments.
    pub fn read_cmd(&self, sub: &str, name: &str) -> Command {
        let mut c = self.reader();
        c.arg(sub).args(self.snapshot_args(name));
        c
    }
    /// `lazysnap SUB NAME --store STORE`, for a command about the store's
    /// snapshots (`verify`, `inspect`, `log`, `diff`, `squash`, `rm`).
    pub fn store_cmd(&self, sub: &str, name: &str) -> Command {
        let mut c = self.cmd();
        c.args([sub, name, "--store", &self.store()]);
        c
    }
    /// `create SRC --name NAME` into the store.
    pub fn create(&self, src: &Path, name: &str) {
        self.create_with(src, name, &[]);
    }
    /// `create SRC --name NAME EXTRA...` into the store (`--parent P`, ...).
    pub fn create_with(&self, src: &Path, name: &str, extra: &[&str]) {
        run_ok(
            self.cmd()
                .arg("create")
                .arg(src)
                .args(["--store", &self.store(), "--name", name])
                .args(extra),
        );
    }
    /// `extract NAME DEST`; returns the command's output.
    pub fn extract(&self, name: &str, dest: &Path, extra: &[&str]) -> Output {
        run_ok(self.read_cmd("extract", name).arg(dest).args(extra))
    }
    /// `cat NAME PATH`: the file's bytes.
    pub fn cat(&self, name: &str, path: &str) -> Vec<u8> {
        run_ok(self.read_cmd("cat", name).arg(path)).stdout
    }
    /// `mount NAME AT EXTRA...` (writable unless EXTRA says `--read-only`);
    /// the command must return within 10 s.
    pub fn mount(&mut self, name: &str, at: &str, extra: &[&str]) -> PathBuf {
        let m = self.p(at);
        fs::create_dir_all(&m).expect("mkdir mnt");
        let t0 = std::time::Instant::now();
        run_ok(self.read_cmd("mount", name).arg(&m).args(extra));
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "mount took {:?}",
            t0.elapsed()
        );
        self.mounts.push(m.clone());
        m
    }
    /// A read-only mount.
    pub fn mount_ro(&mut self, name: &str, at: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["--read-only"];
        args.extend_from_slice(extra);
        self.mount(name, at, &args)
    }
    pub fn umount(&mut self, m: &Path) {
        run_ok(self.cmd().arg("umount").arg(m));
        self.mounts.retain(|x| x != m);
    }
    /// `stats MNT --json`.
    pub fn stats(&self, m: &Path) -> serde_json::Value {
        let o = run_ok(self.cmd().arg("stats").arg(m).arg("--json"));
        serde_json::from_slice(&o.stdout).expect("stats json")
    }
    /// The daemon pid of a mount.
    pub fn pid(&self, m: &Path) -> i32 {
        self.stats(m)["mount"]["pid"].as_i64().expect("pid") as i32
    }
    /// `save MNT --name NAME` (to the store the mount's snapshot is in).
    pub fn save(&self, m: &Path, name: &str) -> Output {
        run_ok(self.cmd().arg("save").arg(m).args(["--name", name]))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for m in self.mounts.clone() {
            let _ = self.cmd().arg("umount").arg(&m).output();
        }
    }
}

/// The snapshot names in `list` output (the first column).
pub fn listed_names(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}
