//! Temporary names: what is written under a hidden name and renamed into
//! place when complete (a store upload, an extract's directory).
//!
//! Each is locked (`flock`) by the process writing it for as long as it is
//! written, and registered so SIGINT or SIGTERM remove it before the
//! process exits. One left by a process that died anyway (kill -9, a lost
//! container) is unlocked: the next operation that writes into the same
//! directory [`sweep`]s it. Locks, not PIDs, tell the two apart: PIDs mean
//! nothing across containers sharing a store.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Temporary names of this process, removed on SIGINT/SIGTERM.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary name this process is writing: locked and registered until
/// dropped (dropping neither removes nor publishes it; its owner does).
#[derive(Debug)]
pub struct Temp {
    path: PathBuf,
    _lock: File,
}

impl Temp {
    /// Lock and register `path` (a file or directory just created by this
    /// process). `lock` is an open descriptor of it, kept until drop.
    pub fn hold(path: &Path, lock: File) -> std::io::Result<Temp> {
        if !try_lock(&lock)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{}: locked by another process", path.display()),
            ));
        }
        LIVE.lock().push(path.to_path_buf());
        Ok(Temp {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Lock and register the directory `dir` (just created by this process).
    pub fn hold_dir(dir: &Path) -> std::io::Result<Temp> {
        let fd = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)?;
        Temp::hold(dir, fd)
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the new file `path` (which must not exist) and hold it. A
    /// sweep by another process between the create and the lock could
    /// remove it: then this fails with `Interrupted`, and the caller tries
    /// another name.
    pub fn create_file(path: &Path) -> std::io::Result<(File, Temp)> {
        let file = File::options().write(true).create_new(true).open(path)?;
        let held = Temp::hold(path, file.try_clone()?).map_err(|_| swept(path))?;
        still_ours(path, &file)?;
        Ok((file, held))
    }

    /// Create the new directory `path` and hold it (see [`Temp::create_file`]).
    pub fn create_dir(path: &Path) -> std::io::Result<Temp> {
        std::fs::create_dir(path)?;
        let held = Temp::hold_dir(path).map_err(|_| swept(path))?;
        still_ours(path, &held._lock)?;
        Ok(held)
    }
}

fn swept(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        format!("{}: removed by a concurrent sweep; try another name", path.display()),
    )
}

/// Is `path` still the file we opened (not removed, or replaced, by a sweep
/// between our create and our lock)?
fn still_ours(path: &Path, f: &File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::symlink_metadata(path), f.metadata()?);
    match a {
        Ok(a) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => Ok(()),
        _ => Err(swept(path)),
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        LIVE.lock().retain(|p| p != &self.path);
    }
}

/// Take an exclusive lock on `f` without waiting: `false` if another open
/// file description holds one.
fn try_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Remove every temporary name this process registered (on a signal, just
/// before exiting).
pub fn remove_registered() {
    let paths = std::mem::take(&mut *LIVE.lock());
    for p in paths {
        remove(&p);
    }
}

/// Remove a file, or a directory tree (making read-only directories
/// writable first so their contents can go).
pub fn remove(p: &Path) {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if !m.is_dir() {
        let _ = std::fs::remove_file(p);
        return;
    }
    if std::fs::remove_dir_all(p).is_ok() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(p);
    let _ = std::fs::remove_dir_all(p);
}

/// Remove the abandoned temporary names in `dir`: entries `is_temp` claims
/// that no process holds locked. Returns how many were removed.
pub fn sweep(dir: &Path, is_temp: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp(name) {
            continue;
        }
        let p = ent.path();
        // Never follow a link, never block on a FIFO.
        let Ok(f) = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&p)
        else {
            continue;
        };
        if let Ok(true) = try_lock(&f) {
            tracing::info!("{}: removing an abandoned temporary", p.display());
            remove(&p);
            removed += 1;
        }
    }
    removed
}

/// Write `data` to `path` atomically: a temporary name beside it (created
/// with `mode`, synced), then a rename over `path`. Readers see the old
/// file or the new one, never part of either; on failure `path` is
/// untouched and the temporary is gone.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> crate::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = File::options().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        crate::Error::io_path(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_names_survive_a_sweep_abandoned_ones_do_not() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        let is_temp = |n: &str| n.starts_with(".t");
        let held_path = d.join(".t-held");
        let held = Temp::hold(&held_path, File::create(&held_path).expect("create")).expect("hold");
        std::fs::write(d.join(".t-dead"), b"x").expect("write");
        std::fs::create_dir_all(d.join(".t-deaddir/sub")).expect("mkdir");
        std::fs::write(d.join("keep"), b"x").expect("write");
        assert_eq!(sweep(d, is_temp), 2);
        assert!(held_path.exists() && d.join("keep").exists());
        assert!(!d.join(".t-dead").exists() && !d.join(".t-deaddir").exists());
        // A second holder of the same name is refused.
        let again = File::open(&held_path).expect("open");
        assert!(Temp::hold(&held_path, again).is_err());
        assert_eq!(LIVE.lock().iter().filter(|p| **p == held_path).count(), 1);
        drop(held);
        assert!(LIVE.lock().iter().all(|p| *p != held_path));
        assert_eq!(sweep(d, is_temp), 1);
    }
}
