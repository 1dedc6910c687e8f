//! Mounting a snapshot in this process: open it, build the inode table and
//! fetcher, start the FUSE session, and hand back a handle that reports
//! stats and unmounts. The CLI's daemon (`cmd::mount`) and the integration
//! tests both use this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::fetch::fetcher::{FetchConfig, FetchStats, Fetcher};
use crate::fetch::frame_range;
use crate::fs::Fs;
use crate::fuse::FuseAdapter;
use crate::layer::Tree;
use crate::snapshot::Chain;
use crate::store::{Priority, Store};

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
    /// Honour setuid/setgid bits of the snapshot's files (trusted snapshots
    /// only). Off: the mount is `nosuid`. Device nodes are never honoured
    /// (`nodev` always): a snapshot is data, not a way to reach the host's
    /// devices.
    pub allow_setuid: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fetch: FetchConfig::default(),
            read_deadline: Duration::from_secs(30),
            threads: 2,
            prefetch: true,
            allow_setuid: false,
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
                .map_err(|_| Error::Internal("FUSE session panicked".into()))?
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

/// Where `fusermount3` is, from `PATH`, as a UTF-8 path. Handing it to the
/// daemon as `FUSERMOUNT_PATH` spares fuser its probe (it runs each
/// candidate with `-h` before mounting).
pub fn fusermount_path() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file())
        .and_then(|p| p.to_str().map(str::to_string))
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
    let t0 = std::time::Instant::now();
    let chain = rt.block_on(Chain::open(store, name))?;
    mount_chain(rt, chain, mnt, opts, t0)
}

/// [`mount`] of a chain already opened (at `t0`).
pub fn mount_chain(
    rt: &tokio::runtime::Handle,
    chain: Chain,
    mnt: &Path,
    opts: MountOptions,
    t0: std::time::Instant,
) -> Result<MountHandle> {
    let name = chain.top().name.clone();
    let name = name.as_str();
    crate::sys::return_large_allocations();
    let fetcher = Fetcher::new(chain.layers(), opts.fetch.clone())?;
    let t_index = t0.elapsed();
    let tree = chain.tree()?;
    let t_tree = t0.elapsed();
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
        if opts.allow_setuid {
            fuser::MountOption::Suid
        } else {
            fuser::MountOption::NoSuid
        },
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
    tracing::debug!(
        "{name}: index read in {:?}, tree built at {:?}, mounted at {:?}",
        t_index,
        t_tree,
        t0.elapsed()
    );
    if opts.prefetch && !chain.top().index.prefetch.is_empty() {
        let _g = rt.enter();
        start_prefetch(&fetcher, handle.fs.tree(), &chain.top().index.prefetch);
    }
    Ok(handle)
}

/// Queue the prefetch list (first-read order of an earlier run) as
/// background fetches, in order, each file's frames from the layer that
/// holds it in the merged view.
fn start_prefetch(fetcher: &Arc<Fetcher>, tree: &Tree, list: &[Vec<u8>]) {
    let mut runs: Vec<(u32, std::ops::Range<usize>)> = Vec::new();
    for p in list {
        let Some(node) = tree.resolve(p).and_then(|ino| tree.node(ino)) else {
            continue;
        };
        let e = tree.entry(node);
        if !e.kind.has_data() || e.size == 0 {
            continue;
        }
        let frames = &tree.layers()[node.layer as usize].frames;
        let r = frame_range(frames, e.offset..e.offset + e.size);
        // Extend the previous run when this file continues it.
        match runs.last_mut() {
            Some((l, last)) if *l == node.layer && r.start <= last.end && r.end >= last.start => {
                last.start = last.start.min(r.start);
                last.end = last.end.max(r.end);
            }
            _ => runs.push((node.layer, r)),
        }
    }
    for (layer, r) in runs {
        fetcher.fetch_background(layer, r, Priority::Prefetch);
    }
}
