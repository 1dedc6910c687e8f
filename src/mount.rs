//! Mounting a snapshot in this process: open it, build the inode table and
//! fetcher, start the FUSE session, and hand back a handle that reports
//! stats and unmounts. The CLI's daemon (`cmd::mount`) and the integration
//! tests both use this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::fetch::fetcher::{FetchConfig, FetchStats, Fetcher, Layer};
use crate::fetch::frame_range;
use crate::fs::Fs;
use crate::fuse::FuseAdapter;
use crate::layer::Tree;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Fetcher tuning (memory budget, disk cache, parallelism).
    pub fetch: FetchConfig,
    /// Deadline of one read; past it the read fails with ETIMEDOUT.
    pub read_deadline: Duration,
    /// FUSE worker threads.
    pub threads: usize,
    /// Fetch the index's prefetch list in the background.
    pub prefetch: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fetch: FetchConfig::default(),
            read_deadline: Duration::from_secs(30),
            threads: 2,
            prefetch: true,
        }
    }
}

/// A live mount.
pub struct MountHandle {
    mnt: PathBuf,
    fs: Arc<Fs>,
    unmounter: fuser::SessionUnmounter,
    session: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl MountHandle {
    /// Fetch counters.
    pub fn stats(&self) -> FetchStats {
        self.fs.fetcher().stats()
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    /// Resolves when the session ends (unmounted from outside, or here).
    pub fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ended.clone()
    }

    /// Unmount (if still mounted) and wait for the session to finish.
    pub fn unmount(mut self) -> Result<()> {
        self.detach();
        self.join()
    }

    /// Stop background fetches and unmount, if the session still runs.
    fn detach(&mut self) {
        self.fs.fetcher().cancel_background();
        if !*self.ended.borrow() {
            // fusermount3 ends the session even when the mount is shared
            // with its auto-unmount helper; fuser's own unmount is the
            // fallback when fusermount3 is unavailable.
            if !matches!(fusermount(&["-u"], &self.mnt), Ok(true)) {
                let _ = self.unmounter.unmount();
            }
        }
    }

    /// Wait for the session to end without unmounting.
    pub fn join(mut self) -> Result<()> {
        if let Some(t) = self.session.take() {
            t.join()
                .map_err(|_| Error::Store("FUSE session panicked".into()))?
                .map_err(|e| Error::io(format!("FUSE session on {}", self.mnt.display()), e))?;
        }
        Ok(())
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if self.session.is_some() {
            self.detach();
            if let Some(t) = self.session.take() {
                let _ = t.join();
            }
        }
    }
}

/// Run `fusermount3 ARGS MNT`; true when it succeeded.
pub fn fusermount(args: &[&str], mnt: &Path) -> Result<bool> {
    let out = std::process::Command::new("fusermount3")
        .args(args)
        .arg(mnt)
        .output()
        .ctx(|| "running fusermount3 (install fuse3)".into())?;
    if !out.status.success() {
        tracing::debug!("fusermount3 {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.status.success())
}

/// Open `name` in `store` and mount it read-only at `mnt`. Returns once the
/// mount answers (a `stat` of the mount point succeeded). Must be called
/// from outside the runtime whose handle is given.
pub fn mount(
    rt: &tokio::runtime::Handle,
    store: &Store,
    name: &str,
    mnt: &Path,
    opts: MountOptions,
) -> Result<MountHandle> {
    let meta = std::fs::metadata(mnt).ctx(|| format!("mount point {}", mnt.display()))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "{}: mount point is not a directory",
            mnt.display()
        )));
    }
    crate::sys::return_large_allocations();
    let snap = rt.block_on(Snapshot::open(store, name))?;
    let layer = Layer {
        store: store.clone(),
        key: snap.key.clone(),
        name: snap.name.clone(),
        frames: Arc::new(snap.index.frames.clone()),
    };
    let fetcher = Fetcher::new(vec![layer], opts.fetch.clone())?;
    let tree = Tree::single(snap.index.clone())?;
    let fs = Arc::new(Fs::new(
        tree,
        fetcher.clone(),
        opts.read_deadline,
        opts.fetch.readahead_max,
    ));

    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("lazysnap:{name}")),
        fuser::MountOption::Subtype("lazysnap".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if crate::sys::is_root() {
        cfg.acl = fuser::SessionACL::All;
        cfg.mount_options.push(fuser::MountOption::AutoUnmount);
    }
    cfg.n_threads = Some(opts.threads.max(1));
    cfg.clone_fd = true;
    let adapter = FuseAdapter::new(fs.clone(), rt.clone());
    let mut session = fuser::Session::new(adapter, mnt, &cfg).map_err(|e| {
        Error::io(
            format!("mounting {} (is fuse3 installed and /dev/fuse present?)", mnt.display()),
            e,
        )
    })?;
    let unmounter = session.unmount_callable();
    let (tx, ended) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx.send(true);
            r
        })
        .ctx(|| "starting FUSE session".into())?;
    let handle = MountHandle {
        mnt: mnt.to_path_buf(),
        fs,
        unmounter,
        session: Some(thread),
        ended,
    };
    // The first request after mounting is INIT; a stat round trip proves
    // the kernel and the session are talking.
    std::fs::metadata(mnt).ctx(|| format!("checking mount {}", mnt.display()))?;
    if opts.prefetch && !snap.index.prefetch.is_empty() {
        let _g = rt.enter();
        start_prefetch(&fetcher, &snap);
    }
    Ok(handle)
}

/// Queue the index's prefetch list (first-read order of an earlier run) as
/// background fetches, in order.
fn start_prefetch(fetcher: &Arc<Fetcher>, snap: &Snapshot) {
    let idx = &snap.index;
    let mut frames: Vec<usize> = Vec::new();
    for p in &idx.prefetch {
        if let Some(i) = idx.find(p) {
            let e = &idx.entries[i];
            if e.kind.has_data() {
                frames.extend(frame_range(&idx.frames, e.offset..e.offset + e.size));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    frames.retain(|f| seen.insert(*f));
    // Group consecutive frames so they coalesce into few requests.
    let mut start = 0;
    for k in 1..=frames.len() {
        if k == frames.len() || frames[k] != frames[k - 1] + 1 {
            if start < k {
                fetcher.fetch_background(0, frames[start]..frames[k - 1] + 1);
            }
            start = k;
        }
    }
}
