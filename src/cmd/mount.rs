//! `mount`, `umount` and `stats`: the mount daemon and its controls.
//!
//! Without `--foreground`, `mount` starts itself again as a detached daemon
//! (new session, output to a log file in the state dir) and waits on a pipe
//! until the daemon says the mount answers, or why it failed. Each mount has a
//! state record (`STATE/mounts/ID.json`: mount point, absolute store URI,
//! snapshot, daemon identity, stats socket) so `umount`, `stats` and `save`
//! need only the mount point, from any working directory. The daemon is
//! identified by pid, process start time and boot id: a pid reused by an
//! unrelated process after the daemon died is not mistaken for it. The
//! daemon unmounts cleanly on SIGTERM/SIGINT and exits when unmounted from
//! outside; `umount` also cleans up after a daemon that was killed.

use std::io::{Read, Write};

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::error::{Error, IoContext, Result};
use crate::mount::{fusermount, mount_chain, MountOptions};
use crate::snapshot::Chain;
use crate::store::{RetryPolicy, Store};
use crate::sys;
use crate::workspace::{Pin, Workspace};

/// What the state record of a mount holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    /// Absolute mount point.
    pub mountpoint: PathBuf,
    /// Absolute store URI (`file:///DIR`).
    pub store: String,
    /// Snapshot name (as asked for).
    pub name: String,
    /// The snapshot served below the overlay: `name`, or the base of the
    /// workspace `name` resumed.
    #[serde(default)]
    pub below: Option<String>,
    /// Daemon process id.
    pub pid: u32,
    /// The daemon's start time (field 22 of `/proc/PID/stat`, clock ticks
    /// since boot). Absent in records of older versions: pid only.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the daemon started.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Unix socket serving stats.
    pub socket: PathBuf,
    /// Log file of a background daemon.
    pub log: Option<PathBuf>,
    /// Writable mounts: where the read-only FUSE lower is mounted.
    #[serde(default)]
    pub lower: Option<PathBuf>,
    /// Writable mounts: the directory holding `upper/` and `work/`.
    #[serde(default)]
    pub upper: Option<PathBuf>,
}

/// The state directory: `$LAZYSNAP_STATE_DIR`, else `$XDG_STATE_HOME/lazysnap`,
/// else `~/.local/state/lazysnap`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAZYSNAP_STATE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("lazysnap")
}

fn mounts_dir() -> PathBuf {
    state_dir().join("mounts")
}

/// The absolute form of a mount point, without touching the mount itself
/// (a dead FUSE mount cannot be stat'ed).
pub fn absolute(mnt: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(mnt).ctx(|| mnt.display().to_string())?;
    // Resolve the parent (a normal directory) so records match however the
    // mount point was spelled.
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).join(n)),
        _ => Ok(abs),
    }
}

fn record_id(mnt: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    crate::format::hex(&crate::format::digest(mnt.as_os_str().as_bytes())[..8])
}

fn record_path(mnt: &Path) -> PathBuf {
    mounts_dir().join(format!("{}.json", record_id(mnt)))
}

/// The state record of the mount at `mnt`, if any.
pub fn read_record(mnt: &Path) -> Result<Option<MountRecord>> {
    let p = record_path(mnt);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::corrupt(p.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path(&p, e)),
    }
}

fn write_record(r: &MountRecord) -> Result<()> {
    let data = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
    crate::tmp::write_file_atomic(&record_path(&r.mountpoint), &data, 0o644)
}

fn remove_record(mnt: &Path) {
    let p = record_path(mnt);
    if let Ok(Some(r)) = read_record(mnt) {
        let _ = std::fs::remove_file(&r.socket);
    }
    let _ = std::fs::remove_file(p);
}

/// Is `mnt` a mount point right now (per /proc/self/mountinfo)?
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is the daemon of record `r` still running: its pid alive, and, where the
/// record has them, the same start time and boot (so a reused pid is not it)?
fn daemon_alive(r: &MountRecord) -> bool {
    sys::same_process_alive(r.pid, r.start_time, r.boot_id.as_deref())
}

/// Start a background daemon running `args` (this program's own mount
/// arguments plus `--foreground`) and wait until it reports ready.
pub fn spawn_daemon(args: &[std::ffi::OsString], mnt: &Path) -> Result<()> {
    let mnt = &absolute(mnt)?;
    let exe = std::env::current_exe().ctx(|| "locating the lazysnap binary".into())?;
    std::fs::create_dir_all(mounts_dir()).ctx(|| mounts_dir().display().to_string())?;
    let log = mounts_dir().join(format!("{}.log", record_id(mnt)));
    let logf = std::fs::File::create(&log).ctx(|| log.display().to_string())?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these descriptors; we own them.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wr_raw = fds[1];
    let mut cmd = Command::new(exe);
    if std::env::var_os("FUSERMOUNT_PATH").is_none() {
        if let Some(p) = crate::mount::fusermount_path() {
            cmd.env("FUSERMOUNT_PATH", p);
        }
    }
    cmd.args(args)
        .arg("--foreground")
        .env("LAZYSNAP_READY_FD", "3")
        .env("LAZYSNAP_DAEMON_LOG", &log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(wr_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().ctx(|| "starting the mount daemon".into())?;
    drop(wr);
    // One line: "ok" or "error: ...". (Read only that line: helpers the
    // daemon starts may keep the pipe open.)
    let mut msg = String::new();
    let mut f = std::io::BufReader::new(std::fs::File::from(rd));
    let _ = std::io::BufRead::read_line(&mut f, &mut msg);
    match msg.strip_prefix("ok") {
        Some(_) => Ok(()),
        None => {
            let _ = child.wait();
            let why = msg.strip_prefix("error: ").unwrap_or(&msg).trim().to_string();
            if why.is_empty() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("no output").to_string();
                Err(Error::Daemon(format!(
                    "mount daemon exited before the mount was ready: {last}"
                )))
            } else {
                Err(Error::Daemon(why))
            }
        }
    }
}

/// The readiness pipe the parent passed us, if any.
fn ready_fd() -> Option<i32> {
    std::env::var("LAZYSNAP_READY_FD").ok()?.parse().ok()
}

/// Tell the parent (if any) that the mount is ready, or why it failed.
fn report_ready(res: &Result<()>) {
    let Some(fd) = ready_fd() else {
        return;
    };
    std::env::remove_var("LAZYSNAP_READY_FD");
    // SAFETY: the parent passed this descriptor to us for this purpose.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let msg = match res {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    let _ = f.write_all(msg.as_bytes());
}

/// Run a mount in the foreground until unmounted or signalled.
/// Where and how a snapshot is mounted, beyond the FUSE options.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Writable (overlay) mount: `Some(upper dir)`, `Some(None)` for one in
    /// the state dir; `None`: read-only.
    pub writable: Option<Option<PathBuf>>,
    /// Throw away the upper dir's changes when they were made on another
    /// snapshot than the one mounted.
    pub discard_changes: bool,
    /// Mount over a directory that is not empty (hiding its contents).
    pub allow_non_empty: bool,
}

pub fn run_foreground(
    rt: &Runtime,
    store_uri: &str,
    name: &str,
    mnt: &Path,
    opts: MountOptions,
    placement: Placement,
) -> Result<()> {
    if let Some(fd) = ready_fd() {
        // Keep the readiness pipe out of processes we start (fusermount3).
        // SAFETY: fcntl on a descriptor number has no memory effects.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let res = serve(rt, store_uri, name, mnt, opts, placement);
    if let Err(e) = &res {
        report_ready(&Err(Error::Daemon(e.to_string())));
        if let Ok(abs) = absolute(mnt) {
            tidy(&abs);
        }
    }
    res
}

/// Remove what a mount of `mnt` kept in the state dir once it is gone
/// (unmounted, or never mounted): its private lower dir, its log, and its
/// default upper dir unless that holds changes no save covered. A live
/// mount's state, and a user's own `--upper` dir, are never touched.
fn tidy(mnt: &Path) {
    if read_record(mnt).ok().flatten().is_some_and(|r| daemon_alive(&r)) {
        return;
    }
    let id = record_id(mnt);
    let private = mounts_dir().join(&id);
    let _ = std::fs::remove_dir(private.join("lower"));
    let changes = private.join("changes");
    if changes.exists() && !has_unsaved(&changes) {
        crate::tmp::remove(&changes);
    }
    let _ = std::fs::remove_dir(&private);
    let _ = std::fs::remove_file(mounts_dir().join(format!("{id}.log")));
}

/// Does workspace dir `dir` hold changes no save covered? (When in doubt:
/// yes.)
fn has_unsaved(dir: &Path) -> bool {
    match Workspace::load(dir) {
        Ok(Some(ws)) => ws.unsaved(dir).unwrap_or(true),
        Ok(None) => crate::workspace::stamp(&dir.join("upper")).map_or(true, |s| s.entries > 0),
        Err(_) => true,
    }
}

/// Check that `mnt` can take a mount: an existing, empty directory (unless
/// `allow_non_empty`). A dead mount left there (a killed daemon) is the
/// stale-record logic's business, not refused here.
pub fn check_mount_point(mnt: &Path, allow_non_empty: bool) -> Result<()> {
    if is_mounted(mnt) {
        // Already a mount point: whether it is ours and alive is decided
        // from its record.
        return Ok(());
    }
    let shown = mnt.display();
    let meta = match std::fs::metadata(mnt) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "mount point {shown} (create the directory first)"
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(()),
        Err(e) => return Err(Error::io(format!("mount point {shown}"), e)),
    };
    if !meta.is_dir() {
        return Err(Error::Usage(format!("mount point {shown}: not a directory")));
    }
    if !allow_non_empty {
        if let Ok(mut rd) = std::fs::read_dir(mnt) {
            if rd.next().is_some() {
                return Err(Error::Usage(format!(
                    "mount point {shown}: not empty (the mount would hide what is there); \
                     pass --allow-non-empty to mount over it anyway"
                )));
            }
        }
    }
    Ok(())
}

/// Open what a mount of `name` serves: for a writable mount whose upper dir
/// already holds a workspace, its base (after checking `name` may resume
/// it); else `name` itself. Returns the chain and the workspace record to
/// write for a new workspace.
fn open_for(
    rt: &Runtime,
    store: &Store,
    store_uri: &str,
    name: &str,
    workspace: Option<&Path>,
    discard: bool,
) -> Result<(Chain, Option<Workspace>)> {
    let chain = rt.block_on(Chain::open(store, name))?;
    let Some(dir) = workspace else {
        return Ok((chain, None));
    };
    let digest = chain.top().index_digest();
    let fresh = || Some(Workspace::new(store_uri, Pin::new(name, &digest)));
    let Some(ws) = Workspace::load(dir)? else {
        // No record: a new workspace (an upper dir from before records
        // existed is adopted as changes on this snapshot).
        return Ok((chain, fresh()));
    };
    match ws.resume(dir, name, &digest) {
        Ok(base) if base.name == name && base.index_digest == crate::format::hex(&digest) => Ok((chain, None)),
        Ok(base) => {
            let base_chain = rt.block_on(Chain::open(store, &base.name))?;
            if crate::format::hex(&base_chain.top().index_digest()) != base.index_digest {
                return Err(Error::corrupt(
                    format!("snapshot {}", base.name),
                    format!(
                        "not the snapshot the workspace {} was made on (index digest differs)",
                        dir.display()
                    ),
                ));
            }
            Ok((base_chain, None))
        }
        Err(_) if discard => {
            crate::workspace::discard(dir)?;
            Ok((chain, fresh()))
        }
        Err(e) => Err(e),
    }
}

fn serve(
    rt: &Runtime,
    store_uri: &str,
    name: &str,
    mnt: &Path,
    opts: MountOptions,
    placement: Placement,
) -> Result<()> {
    let writable = placement.writable;
    let mnt = absolute(mnt)?;
    check_mount_point(&mnt, placement.allow_non_empty)?;
    if let Some(r) = read_record(&mnt)? {
        if daemon_alive(&r) && is_mounted(&mnt) {
            return Err(Error::in_use(
                mnt.display().to_string(),
                format!("already mounted by lazysnap (pid {}); lazysnap umount it first", r.pid),
            ));
        }
        remove_record(&mnt);
    }
    let store_uri = crate::store::absolute_uri(store_uri)?;
    let store = Store::open(&store_uri)?.with_policy(RetryPolicy::with_timeout(opts.read_deadline));
    // A writable mount serves the snapshot at a private lower path and puts
    // kernel overlayfs (upper + work dirs) on the mount point.
    let layout = match writable {
        Some(upper) => {
            let private = mounts_dir().join(record_id(&mnt));
            let lower = private.join("lower");
            std::fs::create_dir_all(&lower).ctx(|| lower.display().to_string())?;
            let upper = match upper {
                Some(u) => std::path::absolute(&u).ctx(|| u.display().to_string())?,
                None => private.join("changes"),
            };
            Some((lower, upper))
        }
        None => None,
    };
    let fuse_at = layout.as_ref().map_or(mnt.clone(), |(lower, _)| lower.clone());
    let allow_setuid = opts.allow_setuid;
    let t0 = std::time::Instant::now();
    let workspace = layout.as_ref().map(|(_, u)| u.as_path());
    let (chain, new_workspace) = open_for(rt, &store, &store_uri, name, workspace, placement.discard_changes)?;
    let below = chain.top().name.clone();
    let handle = mount_chain(rt.handle(), chain, &fuse_at, opts, t0)?;
    if let Some((lower, upper)) = &layout {
        let overlaid = overlay_mount(lower, upper, &mnt, allow_setuid).and_then(|()| match &new_workspace {
            Some(ws) => {
                let mut ws = ws.clone();
                ws.stamp = Some(crate::workspace::stamp(&upper.join("upper"))?);
                ws.save(upper)
            }
            None => Ok(()),
        });
        if let Err(e) = overlaid {
            if is_mounted(&mnt) {
                let _ = sys::umount(&mnt, true);
            }
            let _ = handle.unmount();
            return Err(e);
        }
    }
    std::fs::create_dir_all(mounts_dir()).ctx(|| mounts_dir().display().to_string())?;
    let socket = mounts_dir().join(format!("{}.sock", record_id(&mnt)));
    let _ = std::fs::remove_file(&socket);
    let listener = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(&socket).ctx(|| socket.display().to_string())?
    };
    let record = MountRecord {
        mountpoint: mnt.clone(),
        store: store_uri,
        name: name.to_string(),
        below: Some(below.clone()),
        pid: std::process::id(),
        start_time: sys::process_start(std::process::id()),
        boot_id: sys::boot_id(),
        socket: socket.clone(),
        log: std::env::var_os("LAZYSNAP_DAEMON_LOG").map(PathBuf::from),
        lower: layout.as_ref().map(|(l, _)| l.clone()),
        upper: layout.as_ref().map(|(_, u)| u.clone()),
    };
    // Handlers first: a SIGTERM that comes as soon as the mount is ready
    // must unmount and remove the record, not kill the daemon outright.
    let (mut term, mut int) = {
        let _rt = rt.enter();
        let on = |kind| tokio::signal::unix::signal(kind).map_err(|e| Error::io("signal handler", e));
        (
            on(tokio::signal::unix::SignalKind::terminate())?,
            on(tokio::signal::unix::SignalKind::interrupt())?,
        )
    };
    write_record(&record)?;
    tracing::info!("mounted {name} at {}", mnt.display());
    report_ready(&Ok(()));

    let fs_stats = {
        let h = &handle;
        move || h.stats()
    };
    let mut ended = handle.ended();
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                r = ended.changed() => { if r.is_err() || *ended.borrow() { break; } }
                conn = listener.accept() => {
                    if let Ok((mut s, _)) = conn {
                        let body = serde_json::to_vec(&StatsReport { mount: record.clone(), fetch: fs_stats() })
                            .unwrap_or_default();
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = s.write_all(&body).await;
                        });
                    }
                }
            }
        }
        Ok::<(), Error>(())
    })?;
    if layout.is_some() && is_mounted(&mnt) {
        // The overlay goes first; if it is busy, detach it so the daemon
        // can still exit (the kernel finishes it when the last user leaves).
        if let Err(e) = sys::umount(&mnt, false) {
            tracing::warn!("{}: {e}; detaching", mnt.display());
            let _ = sys::umount(&mnt, true);
        }
    }
    let res = handle.unmount();
    remove_record(&mnt);
    tracing::info!("unmounted {}", mnt.display());
    tidy(&mnt);
    res
}

/// Overlay features, all off (see [`overlay_mount`]).
pub const OVERLAY_FEATURES: &str = "redirect_dir=off,metacopy=off,index=off,xino=off,uuid=off";

/// Mount overlayfs at `mnt`: `lower` read-only, changes in `upper/upper`
/// (work dir `upper/work`). A new upper dir starts with the lower root's
/// attributes, so the merged root looks like the snapshot's root.
///
/// The overlay is `nosuid,nodev` like its FUSE lower (`allow_setuid` drops
/// `nosuid` from both), and every overlay feature is set explicitly rather
/// than inherited from the kernel's build or module defaults (all five are
/// accepted by kernel 6.18, where this was checked). redirect_dir and
/// metacopy off keep the upper dir plain full copies, which is what `save`
/// reads (no redirect or metacopy xattrs to translate); index and xino want
/// a lower with stable file handles and inode numbers, which a FUSE lower
/// does not promise; uuid=off ties nothing in the upper dir to one lower
/// filesystem's uuid, so an upper dir can be resumed over a new mount.
fn overlay_mount(lower: &Path, upper: &Path, mnt: &Path, allow_setuid: bool) -> Result<()> {
    let (up, work) = (upper.join("upper"), upper.join("work"));
    let fresh = !up.exists();
    for d in [&up, &work] {
        std::fs::create_dir_all(d).ctx(|| d.display().to_string())?;
    }
    if fresh {
        let m = std::fs::metadata(lower).ctx(|| lower.display().to_string())?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let _ = sys::lchown(&up, m.uid(), m.gid());
        let _ = std::fs::set_permissions(&up, std::fs::Permissions::from_mode(m.mode() & 0o7777));
        let _ = sys::set_times(&up, m.mtime(), m.mtime_nsec() as u32);
    }
    for p in [lower, &up, &work] {
        if p.to_string_lossy().contains([',', ':', '\\']) {
            return Err(Error::Usage(format!(
                "{}: overlay paths may not contain ',', ':' or '\\'",
                p.display()
            )));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},{OVERLAY_FEATURES}",
        lower.display(),
        up.display(),
        work.display()
    );
    sys::mount_overlay(mnt, &opts, allow_setuid).map_err(|e| {
        Error::io(
            format!(
                "{}: overlayfs mount failed (needs root and kernel overlayfs; --read-only works without)",
                mnt.display()
            ),
            e,
        )
    })
}

/// Save the live view of the writable mount at `mnt` as snapshot `new`: a
/// diff of the workspace's last save (or of its base), after which the
/// workspace continues from `new`. `store_uri` overrides the recorded store.
/// `None`: nothing changed since the last save; nothing was published.
pub fn save(
    rt: &Runtime,
    mnt: &Path,
    store_uri: Option<&str>,
    policy: RetryPolicy,
    new: &str,
    opts: crate::format::writer::WriterOptions,
) -> Result<(Option<crate::format::writer::Written>, String)> {
    let mnt = absolute(mnt)?;
    let rec = read_record(&mnt)?.ok_or_else(|| {
        Error::not_found(format!(
            "lazysnap mount at {} (lazysnap mounts lists them)",
            mnt.display()
        ))
    })?;
    let dir = rec
        .upper
        .clone()
        .ok_or_else(|| Error::Usage(format!("{}: a read-only mount has nothing to save", mnt.display())))?;
    // The record's store is absolute: the same store from any cwd.
    let uri = match store_uri {
        Some(s) => crate::store::absolute_uri(s)?,
        None => rec.store.clone(),
    };
    let store = Store::open_writable(&uri)?.with_policy(policy);
    let mut ws = match Workspace::load(&dir)? {
        Some(ws) => ws,
        // Mounted by an older lazysnap: the upper dir sits on the snapshot mounted.
        None => {
            let below = rec.below.clone().unwrap_or_else(|| rec.name.clone());
            let snap = rt.block_on(crate::snapshot::Snapshot::open(&store, &below))?;
            Workspace::new(&rec.store, Pin::new(&below, &snap.index_digest()))
        }
    };
    let parent = ws.head().name.clone();
    // Taken before the walk: a change made while saving leaves it stale,
    // so the next check reports unsaved changes (never the reverse).
    let stamp = crate::workspace::stamp(&dir.join("upper"))?;
    let saved = crate::build::save(
        rt.handle(),
        &store,
        &ws.base.name,
        &parent,
        &dir.join("upper"),
        new,
        opts,
    )?;
    if let Some(w) = &saved {
        ws.saves.push(Pin::new(new, &w.index_digest));
    }
    ws.stamp = Some(stamp);
    ws.save(&dir)?;
    Ok((saved, parent))
}

/// What `stats` prints: the fetch counters at top level, plus the mount.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    /// The mount.
    pub mount: MountRecord,
    /// Fetch counters.
    #[serde(flatten)]
    pub fetch: crate::fetch::fetcher::FetchStats,
}

/// Ask the daemon of `mnt` for its counters.
pub fn stats(mnt: &Path) -> Result<serde_json::Value> {
    let mnt = absolute(mnt)?;
    let r = read_record(&mnt)?.ok_or_else(|| {
        Error::not_found(format!(
            "lazysnap mount at {} (lazysnap mounts lists them)",
            mnt.display()
        ))
    })?;
    let mut s = std::os::unix::net::UnixStream::connect(&r.socket)
        .ctx(|| format!("{}: mount daemon (pid {}) not answering", mnt.display(), r.pid))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .ctx(|| "stats socket".into())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).ctx(|| "reading stats".into())?;
    serde_json::from_slice(&body).map_err(|e| Error::corrupt("stats reply", e.to_string()))
}

/// Unmount `mnt` and wait for its daemon to exit; cleans up after a daemon
/// that was killed (the mount is detached and the record removed).
pub fn umount(mnt: &Path) -> Result<()> {
    let mnt = absolute(mnt)?;
    let record = read_record(&mnt)?;
    let mounted = is_mounted(&mnt);
    if !mounted && record.is_none() {
        return Err(Error::not_found(format!(
            "lazysnap mount at {} (lazysnap mounts lists them)",
            mnt.display()
        )));
    }
    let alive = record.as_ref().is_some_and(daemon_alive);
    let lower = record.as_ref().and_then(|r| r.lower.clone());
    if mounted {
        if lower.is_some() {
            // The overlay on top; never detach a busy one behind the user's back.
            if let Err(e) = sys::umount(&mnt, false) {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    return Err(busy(&mnt));
                }
                return Err(Error::io(format!("unmounting {}", mnt.display()), e));
            }
        } else if !fusermount(&["-u"], &mnt)? && is_mounted(&mnt) {
            if alive {
                return Err(busy(&mnt));
            }
            // A killed daemon leaves a dead mount: detach it.
            fusermount(&["-u", "-z"], &mnt)?;
        }
        if is_mounted(&mnt) {
            return Err(Error::in_use(
                mnt.display().to_string(),
                "still mounted after unmounting",
            ));
        }
    }
    if let Some(lower) = &lower {
        if is_mounted(lower) && !fusermount(&["-u"], lower)? {
            fusermount(&["-u", "-z"], lower)?;
        }
    }
    if let Some(r) = record {
        let t0 = Instant::now();
        while daemon_alive(&r) && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if daemon_alive(&r) {
            return Err(Error::in_use(
                mnt.display().to_string(),
                format!("unmounted, but its daemon (pid {}) did not exit", r.pid),
            ));
        }
        remove_record(&mnt);
    }
    tidy(&mnt);
    Ok(())
}

/// A mount point that cannot be unmounted while something uses it.
fn busy(mnt: &Path) -> Error {
    Error::in_use(
        mnt.display().to_string(),
        format!(
            "busy: files or directories are open in it (see: fuser -vm {})",
            mnt.display()
        ),
    )
}

/// A mount, as `mounts` lists it.
#[derive(Debug, Serialize)]
pub struct MountRow {
    /// Mount point.
    pub mountpoint: PathBuf,
    /// Snapshot mounted (as asked for).
    pub name: String,
    /// Store URI.
    pub store: String,
    /// Daemon pid.
    pub pid: u32,
    /// Is the daemon running (else: killed, `umount` cleans up)?
    pub alive: bool,
    /// The workspace dir of a writable mount.
    pub upper: Option<PathBuf>,
}

/// A workspace dir with changes no save covered, and no mount.
#[derive(Debug, Serialize)]
pub struct KeptRow {
    /// The workspace dir (holding `upper/`).
    pub dir: PathBuf,
    /// The snapshot its changes were made on.
    pub base: Option<String>,
    /// Its last save, if any.
    pub last_save: Option<String>,
}

/// What `mounts` prints.
#[derive(Debug, Serialize)]
pub struct MountsReport {
    /// Mounts with a state record.
    pub mounts: Vec<MountRow>,
    /// Kept upper dirs (in the state dir) with unsaved changes.
    pub kept: Vec<KeptRow>,
}

/// The mounts this state dir knows, and the kept workspaces with unsaved
/// changes.
pub fn mounts() -> Result<MountsReport> {
    let dir = mounts_dir();
    let mut report = MountsReport {
        mounts: Vec::new(),
        kept: Vec::new(),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io_path(&dir, e)),
    };
    let mut live_uppers = Vec::new();
    let mut private = Vec::new();
    for ent in entries.flatten() {
        let p = ent.path();
        if p.extension().is_some_and(|x| x == "json") {
            let Ok(bytes) = std::fs::read(&p) else { continue };
            let Ok(r) = serde_json::from_slice::<MountRecord>(&bytes) else {
                continue;
            };
            live_uppers.extend(r.upper.clone());
            report.mounts.push(MountRow {
                alive: daemon_alive(&r),
                mountpoint: r.mountpoint,
                name: r.name,
                store: r.store,
                pid: r.pid,
                upper: r.upper,
            });
        } else if p.is_dir() {
            private.push(p.join("changes"));
        }
    }
    for changes in private {
        if !changes.is_dir() || live_uppers.contains(&changes) || !has_unsaved(&changes) {
            continue;
        }
        let ws = Workspace::load(&changes).ok().flatten();
        report.kept.push(KeptRow {
            base: ws.as_ref().map(|w| w.base.name.clone()),
            last_save: ws.as_ref().and_then(|w| w.saves.last().map(|s| s.name.clone())),
            dir: changes,
        });
    }
    report.mounts.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    report.kept.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_identify_the_daemon_by_pid_only() {
        let old = r#"{"mountpoint":"/m","store":"s","name":"n","pid":1,"socket":"/s","log":null}"#;
        let r: MountRecord = serde_json::from_str(old).expect("old record");
        assert_eq!((r.start_time, r.boot_id.as_deref()), (None, None));
        // pid 1 is alive, and a record without the new fields trusts it.
        assert!(daemon_alive(&r));
        let me = std::process::id();
        let r = MountRecord {
            pid: me,
            start_time: sys::process_start(me),
            boot_id: sys::boot_id(),
            ..r
        };
        assert!(r.start_time.is_some() && r.boot_id.is_some());
        assert!(daemon_alive(&r));
        // The same pid with another start time or boot is someone else.
        let other_start = MountRecord {
            start_time: r.start_time.map(|t| t + 1),
            ..r.clone()
        };
        assert!(!daemon_alive(&other_start));
        let other_boot = MountRecord {
            boot_id: Some("another-boot".into()),
            ..r
        };
        assert!(!daemon_alive(&other_boot));
    }
}
