//! Small safe wrappers over the libc calls std does not offer: extended
//! attributes, nanosecond timestamps on any file type, device nodes, and
//! no-replace renames. All act on the path itself (never follow a final symlink).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every extended attribute of `p` (not following symlinks), sorted by name.
/// Attributes that vanish or cannot be read between list and get are skipped.
pub fn xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(p)?;
    let names = loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let m = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m >= 0 {
            buf.truncate(m as usize);
            break buf;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if let Some(v) = get_xattr(&c, name)? {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(c: &CString, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: size query with a null buffer.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::EACCES) | Some(libc::EPERM) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(Some(buf));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(io::Error::last_os_error());
        }
    }
}

/// Set one extended attribute on `p` itself.
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: pointers valid for the given lengths.
    check(unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Set atime and mtime (with nanoseconds) of `p` itself.
pub fn set_times(p: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Set the access and modification times of the open file `f` (no path
/// lookup: what a restore does for every file it has just written).
pub fn set_times_fd(f: &std::fs::File, secs: i64, nsec: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: an open descriptor and a two-element timespec array.
    check(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) })
}

/// Change the owner of `p` itself.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

/// Create a fifo or a device node.
pub fn mknod(p: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(p)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: valid path.
    check(unsafe { libc::mknod(c.as_ptr(), kind | (perm as libc::mode_t & 0o7777), dev) })
}

/// Rename `from` to `to`, failing with EEXIST if `to` exists (even as an empty dir).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: valid paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) {
        // The filesystem cannot do it atomically: check, then rename.
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        return std::fs::rename(from, to);
    }
    Err(e)
}

/// Are we root (and so may restore owners, devices, non-user xattrs)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The process's file mode creation mask: from `/proc/self/status` (Linux
/// 4.7+), else by setting it and setting it back (then call it before
/// other threads create files).
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let listed = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
    if let Some(m) = listed {
        return m;
    }
    // SAFETY: umask has no preconditions; the mask is restored at once.
    unsafe {
        let m = libc::umask(0o077);
        libc::umask(m);
        m
    }
}

/// Make the allocator return large buffers (decompressed frames) to the
/// system when they are freed. glibc otherwise raises its mmap threshold
/// after the first free of a large block and serves later frames from
/// per-thread arenas that never shrink, so RSS drifts far above the frame
/// cache's budget.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Map in all pages of `buf`'s spare capacity with one call instead of one
/// page fault per page as a decoder fills it (page faults are expensive in
/// VMs). Best effort: kernels before 5.14 lack `MADV_POPULATE_WRITE`.
pub fn prefault(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let (first, last) = ((start + 4095) & !4095, (start + spare.len()) & !4095);
    if last > first {
        // SAFETY: the range lies within memory this Vec owns; populating
        // pages does not change their contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_POPULATE_WRITE);
        }
    }
}

/// Mount kernel overlayfs at `target` with the given option string, always
/// `nodev`, and `nosuid` unless `allow_setuid`.
pub fn mount_overlay(target: &Path, options: &str, allow_setuid: bool) -> io::Result<()> {
    let t = cpath(target)?;
    let opts = CString::new(options).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fstype = c"overlay";
    let mut flags = libc::MS_NODEV;
    if !allow_setuid {
        flags |= libc::MS_NOSUID;
    }
    // SAFETY: all pointers are valid NUL-terminated strings.
    check(unsafe {
        libc::mount(
            fstype.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            opts.as_ptr().cast(),
        )
    })
}

/// Unmount `target` (lazily with `detach`).
pub fn umount(target: &Path, detach: bool) -> io::Result<()> {
    let t = cpath(target)?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid path.
    check(unsafe { libc::umount2(t.as_ptr(), flags) })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses, hence the last `)`), from field 3 (state) on.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Start time of process `pid` (field 22 of its stat), if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    proc_stat(pid)?.get(22 - 3)?.parse().ok()
}

/// This boot's id.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string())
}

/// Is process `pid` running? A zombie (exited, not yet reaped by whoever
/// adopted the detached daemon) counts as gone.
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| !state.starts_with(['Z', 'X']))
}

/// Is the process `pid` that started at `start_time` in boot `boot_id`
/// (where known) still running? A reused pid is not it.
pub fn same_process_alive(pid: u32, start_time: Option<u64>, boot: Option<&str>) -> bool {
    process_alive(pid)
        && start_time.is_none_or(|t| process_start(pid) == Some(t))
        && boot.is_none_or(|b| boot_id().as_deref() == Some(b))
}

/// The bytes of a small input file (a spec, a token file), at most `max`:
/// a larger file is refused before it is read whole. `what` names it in
/// errors; a missing file is [`crate::error::Error::NotFound`].
pub fn read_small_file(path: &Path, max: u64, what: &str) -> crate::error::Result<Vec<u8>> {
    use crate::error::Error;
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::not_found(what),
        _ => Error::io_path(path, e),
    })?;
    let mut data = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(f, max + 1), &mut data).map_err(|e| Error::io_path(path, e))?;
    if data.len() as u64 > max {
        return Err(Error::Invalid {
            what: what.to_string(),
            why: format!("larger than {max} bytes"),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn umask_is_read_without_changing_it() {
        // SAFETY: umask has no preconditions; the mask is restored at once.
        let set = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        assert_eq!(super::umask(), set);
        // SAFETY: as above.
        let after = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        assert_eq!(after, set);
    }
}
