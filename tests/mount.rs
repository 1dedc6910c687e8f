//! Real FUSE mounts: the mounted tree equals the source, concurrent readers,
//! faults become EIO for the affected reads only, memory stays in budget, the
//! disk cache makes remounts free, and no mount is ever left behind.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lazysnap::fetch::fetcher::FetchConfig;
use lazysnap::fetch::frame_range;
use lazysnap::mount::MountOptions;
use lazysnap::snapshot::Snapshot;
use lazysnap::store::faulty::{Faults, FaultyStore};
use lazysnap::store::local::LocalStore;
use lazysnap::store::{RetryPolicy, Store};

fn mounted(m: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = m.display().to_string();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Assert two listings are equal, showing only the lines that differ.
fn same_lines(a: &str, b: &str) {
    let la: std::collections::BTreeSet<&str> = a.lines().collect();
    let lb: std::collections::BTreeSet<&str> = b.lines().collect();
    let only_a: Vec<_> = la.difference(&lb).take(10).collect();
    let only_b: Vec<_> = lb.difference(&la).take(10).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "source only: {only_a:#?}\nmount only: {only_b:#?}"
    );
}

/// Is `pid` running (zombies count as gone)?
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// A read-only mount equals its source: every fidelity case, through our
/// comparison and through stock tools; ready before any file is read.
fn mounted_tree_equals_source_for_every_fidelity_case(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(access);
    let src = fidelity_src(env.tmp.path(), "src", access.tree(FidelityOpts::FULL));
    env.create(&src, "fid");
    let m = env.mount_ro("fid", "mnt", &[]);

    // Ready after at most two store reads (counted per read the store layer
    // makes: over S3 the open is one suffix GET, plus a HEAD and a GET if
    // the object is shorter than the suffix), before any file is read.
    let s = env.stats(&m);
    assert!(s["requests"].as_u64().expect("requests") <= 2, "{s}");

    assert_trees_equal(&src, &m);
    assert_trees_equal_with_owners(&src, &m);

    // Stock tools see the same tree.
    // Directory sizes are the host filesystem's business (not in a tar):
    // compare everything else.
    let find =
        "find . -printf '%P|%y|%m|%s|%T@|%l|%n\\n' | awk -F'|' -v OFS='|' '$2==\"d\"{$4=\"-\"}1' | LC_ALL=C sort";
    same_lines(
        &sh(&format!("cd '{}' && {find}", src.display())),
        &sh(&format!("cd '{}' && {find}", m.display())),
    );
    let du = "du -s --inodes . | cut -f1; find . -type f -print0 | du -cb --apparent-size --files0-from=- | tail -n1";
    assert_eq!(
        sh(&format!("cd '{}' && {du}", src.display())),
        sh(&format!("cd '{}' && {du}", m.display()))
    );
    let cp = env.p("cp");
    sh(&format!("cp -a '{}' '{}'", m.display(), cp.display()));
    assert_trees_equal(&src, &cp);
    let viatar = env.p("viatar");
    std::fs::create_dir(&viatar).expect("mkdir");
    sh(&format!(
        "tar --xattrs --xattrs-include='*' -C '{}' -cf - . | tar --xattrs --xattrs-include='*' -xpf - -C '{}'",
        m.display(),
        viatar.display()
    ));
    assert_trees_equal(&src, &viatar);

    // Hardlinks share an inode; inode numbers are stable across stats.
    let [a, b, c] = paths::HARDLINKS_3;
    let ia = std::fs::metadata(m.join(a)).expect("stat").ino();
    assert_eq!(ia, std::fs::metadata(m.join(b)).expect("stat").ino());
    assert_eq!(ia, std::fs::metadata(m.join(c)).expect("stat").ino());
    assert_eq!(std::fs::metadata(m.join(a)).expect("stat").nlink(), 3);

    // Writes fail with EROFS.
    let err = std::fs::write(m.join("new-file"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::remove_file(m.join(paths::EMPTY)).expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // Everything was read: about the whole object came from the store.
    let s = env.stats(&m);
    let object = std::fs::metadata(env.object_file("fid")).expect("stat").len();
    let fetched = s["bytes_fetched"].as_u64().expect("bytes");
    assert!(fetched >= object * 95 / 100, "{fetched} of {object} bytes: {s}");
    if src.join(paths::BIG).exists() {
        assert!(fetched > 100 << 20, "{s}");
    }
    assert_eq!(s["errors"], 0);
    env.umount(&m);
    assert!(!mounted(&m));
}
access_tests!(mounted_tree_equals_source_for_every_fidelity_case);

/// A lazy read fetches only the frames it touches; sixteen concurrent
/// readers all see the source's bytes.
fn one_small_file_fetches_little_and_sixteen_readers_agree(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(access);
    // The 20,000 small files are this test's subject, on every path.
    let opts = FidelityOpts {
        many_files: true,
        ..access.tree(FidelityOpts::FULL)
    };
    let src = fidelity_src(env.tmp.path(), "src", opts);
    env.create(&src, "many");
    let object = std::fs::metadata(env.object_file("many")).expect("stat").len();
    let m = env.mount_ro("many", "mnt", &[]);
    let one = std::fs::read(m.join("many/f12345")).expect("read");
    assert_eq!(one, b"f12345");
    let s = env.stats(&m);
    let fetched = s["bytes_fetched"].as_u64().expect("bytes");
    assert!(fetched < 2 << 20, "one small file fetched {fetched} bytes");
    assert!(
        fetched < object / 2,
        "one small file fetched {fetched} of the object's {object} bytes"
    );

    let files: Vec<PathBuf> = (0..MANY_FILES)
        .step_by(7)
        .map(|i| PathBuf::from(format!("many/f{i:05}")))
        .collect();
    let files = Arc::new(files);
    // The largest file of the tree, for reads at random offsets.
    let large = if src.join(paths::BIG).exists() {
        paths::BIG
    } else {
        paths::ZERO_RUNS
    };
    let large_size = std::fs::metadata(src.join(large)).expect("stat").len();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (files, src, m) = (files.clone(), src.clone(), m.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let f = &files[(x % files.len() as u64) as usize];
                    assert_eq!(
                        std::fs::read(m.join(f)).expect("read"),
                        std::fs::read(src.join(f)).expect("read")
                    );
                }
                // And one large read with random offsets.
                let f = std::fs::File::open(m.join(large)).expect("open");
                let g = std::fs::File::open(src.join(large)).expect("open");
                for _ in 0..8 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = x % (large_size - 70_000);
                    let (mut a, mut b) = (vec![0u8; 70_000], vec![0u8; 70_000]);
                    std::os::unix::fs::FileExt::read_exact_at(&f, &mut a, off).expect("read");
                    std::os::unix::fs::FileExt::read_exact_at(&g, &mut b, off).expect("read");
                    assert!(a == b, "{large} differs at {off}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    assert_eq!(env.stats(&m)["errors"], 0);
}
access_tests!(one_small_file_fetches_little_and_sixteen_readers_agree);

/// An object replaced under a mount (removed and created again under the
/// same name, other bytes): the mount keeps serving the object it opened
/// or fails the reads it cannot serve from it, with ESTALE (a remote
/// object's ETag no longer matches); it never returns bytes of the new
/// object, or of both. (A local store keeps the opened file, so its reads
/// go on with the old bytes.)
fn an_object_replaced_under_a_mount_never_gives_bytes_of_two(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(access);
    let t = env.p("t");
    std::fs::create_dir(&t).expect("mkdir");
    let (a, b) = (noise(1 << 20, 1), noise(1 << 20, 2));
    std::fs::write(t.join("a"), &a).expect("write");
    std::fs::write(t.join("b"), &b).expect("write");
    env.create_with(&t, "r", &["--frame-size", "64KiB"]);
    let m = env.mount_ro("r", "mnt", &[]);
    assert!(std::fs::read(m.join("a")).expect("read a") == a);

    let new_b = noise(1 << 20, 3);
    std::fs::write(t.join("b"), &new_b).expect("write");
    std::fs::remove_file(env.object_file("r")).expect("rm");
    env.create_with(&t, "r", &["--frame-size", "64KiB"]);

    let got = std::fs::read(m.join("b"));
    assert!(std::fs::read(m.join("a")).expect("a, cached") == a);
    match (access, got) {
        (Access::File, Ok(got)) => assert!(got == b, "the local mount read other bytes"),
        (Access::File, Err(e)) => panic!("a local mount failed a read: {e}"),
        (_, Ok(got)) => panic!(
            "a read of a replaced object succeeded ({}): {}",
            got.len(),
            if got == new_b { "the new bytes" } else { "mixed bytes" }
        ),
        (_, Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
    if access.remote() {
        assert!(env.stats(&m)["errors"].as_u64().expect("errors") >= 1);
    }
    env.umount(&m);
}
access_tests!(an_object_replaced_under_a_mount_never_gives_bytes_of_two);

/// An in-process mount over a fault-injecting store.
struct FaultyMount {
    rt: tokio::runtime::Runtime,
    faulty: Arc<FaultyStore>,
    handle: Option<lazysnap::mount::MountHandle>,
    snap: Snapshot,
}

fn faulty_mount(env: &Env, name: &str, mnt: &Path, deadline: Duration) -> FaultyMount {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = Arc::new(LocalStore::new(env.p("store"), false).expect("store"));
    let faulty = Arc::new(FaultyStore::new(local, Faults::default()));
    let policy = RetryPolicy {
        attempts: 2,
        timeout: Duration::from_millis(500),
        backoff: Duration::from_millis(10),
    };
    let store = Store::new(faulty.clone()).with_policy(policy);
    let snap = rt.block_on(Snapshot::open(&store, name)).expect("open");
    std::fs::create_dir_all(mnt).expect("mkdir");
    let opts = MountOptions {
        read_deadline: deadline,
        fetch: FetchConfig::default(),
        ..MountOptions::default()
    };
    let handle = lazysnap::mount::mount(rt.handle(), &store, name, mnt, opts).expect("mount");
    FaultyMount {
        rt,
        faulty,
        handle: Some(handle),
        snap,
    }
}

impl FaultyMount {
    /// Object byte range of the first frame holding `path`'s data.
    fn frame_of(&self, path: &str) -> std::ops::Range<u64> {
        let idx = &self.snap.index;
        let e = &idx.entries[idx.find(path.as_bytes()).expect("in index")];
        let fr = frame_range(&idx.frames, e.offset..e.offset + e.size.max(1));
        let f = idx.frames[fr.start];
        f.c_off..f.c_off + f.c_len
    }
}

impl Drop for FaultyMount {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.unmount().expect("unmount");
        }
        let _ = &self.rt;
    }
}

fn read_err(p: &Path) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    let r = std::fs::File::open(p).and_then(|mut f| {
        let mut v = Vec::new();
        f.read_to_end(&mut v)
    });
    (r.err().and_then(|e| e.raw_os_error()), t0.elapsed())
}

#[test]
fn faults_fail_only_the_reads_that_touch_them() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::BIG);
    env.create(&src, "f");
    let mnt = env.p("mnt");
    let fm = faulty_mount(&env, "f", &mnt, Duration::from_secs(3));
    let victim = paths::BIG;
    let bad = fm.frame_of(victim);
    let others = [paths::ONE_BYTE, paths::UNICODE, paths::DEEP_LEAF, paths::XATTR_FILE];

    // Corrupted bytes: EIO, quickly; everything else still correct.
    fm.faulty.set(Faults {
        corrupt: vec![bad.start + 7],
        ..Faults::default()
    });
    let (errno, took) = read_err(&mnt.join(victim));
    assert_eq!(errno, Some(libc::EIO), "corrupt frame");
    assert!(took < Duration::from_secs(3), "EIO took {took:?}");
    for o in others {
        assert_eq!(
            std::fs::read(mnt.join(o)).expect("other file"),
            std::fs::read(src.join(o)).expect("src"),
            "{o}"
        );
    }

    // Failing requests: EIO after bounded retries.
    fm.faulty.set(Faults {
        fail: vec![bad.clone()],
        ..Faults::default()
    });
    let (errno, took) = read_err(&mnt.join(victim));
    assert_eq!(errno, Some(libc::EIO), "failing store");
    assert!(took < Duration::from_secs(3), "EIO took {took:?}");

    // Truncated answers: EIO.
    fm.faulty.set(Faults {
        truncate: vec![bad.clone()],
        ..Faults::default()
    });
    assert_eq!(read_err(&mnt.join(victim)).0, Some(libc::EIO), "short read");

    // A store that hangs: the read fails at its deadline instead of hanging.
    fm.faulty.set(Faults {
        slow: vec![bad.clone()],
        delay: Duration::from_secs(3600),
        ..Faults::default()
    });
    let (errno, took) = read_err(&mnt.join(victim));
    assert!(
        errno == Some(libc::ETIMEDOUT) || errno == Some(libc::EIO),
        "hung store: {errno:?}"
    );
    assert!(took < Duration::from_secs(8), "deadline not kept: {took:?}");
    // Metadata never waits on the network.
    let t0 = Instant::now();
    assert!(std::fs::metadata(mnt.join(paths::SPACES)).is_ok());
    assert!(std::fs::read_dir(mnt.join("names")).expect("readdir").count() > 0);
    assert!(t0.elapsed() < Duration::from_secs(1));

    // Faults gone: the daemon kept serving and the file now reads correctly.
    fm.faulty.set(Faults::default());
    assert!(std::fs::read(mnt.join(victim)).expect("healed") == std::fs::read(src.join(victim)).expect("src"));
    assert!(fm.faulty.injected() > 0);
    let stats = fm.handle.as_ref().expect("handle").stats();
    assert!(stats.errors >= 3, "{stats:?}");
}

#[test]
fn corrupted_snapshot_file_gives_eio_for_that_frame_only() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::BIG);
    env.create(&src, "c");
    // Flip one byte in the middle of the big file's data.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let store = Store::open(&env.store()).expect("store");
    let snap = rt.block_on(Snapshot::open(&store, "c")).expect("open");
    let idx = &snap.index;
    let e = &idx.entries[idx.find(paths::BIG.as_bytes()).expect("big")];
    let fr = frame_range(&idx.frames, e.offset..e.offset + e.size);
    let f = idx.frames[(fr.start + fr.end) / 2];
    let obj = env.p("store/c.tar.zst");
    let mut bytes = std::fs::read(&obj).expect("read");
    bytes[(f.c_off + f.c_len / 2) as usize] ^= 0x10;
    std::fs::write(&obj, bytes).expect("write");

    let m = env.mount_ro("c", "mnt", &[]);
    let (errno, took) = read_err(&m.join(paths::BIG));
    assert_eq!(errno, Some(libc::EIO));
    assert!(took < Duration::from_secs(5), "{took:?}");
    for o in [paths::ONE_BYTE, paths::UNICODE, paths::XATTR_FILE, paths::ZERO_RUNS] {
        assert_eq!(
            std::fs::read(m.join(o)).expect("read"),
            std::fs::read(src.join(o)).expect("read"),
            "{o}"
        );
    }
    let s = env.stats(&m);
    assert!(s["errors"].as_u64().expect("errors") >= 1);
    let log = std::fs::read_to_string(s["mount"]["log"].as_str().expect("log")).expect("log");
    assert!(log.contains("digest mismatch"), "a clear log line: {log}");
}

#[test]
fn memory_stays_in_budget_reading_a_multi_gb_file() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = env.p("src");
    std::fs::create_dir(&src).expect("mkdir");
    let size: u64 = 2 << 30;
    sh(&format!("head -c {size} /dev/urandom > '{}/random.bin'", src.display()));
    env.create(&src, "big");
    std::fs::remove_file(src.join("random.bin")).expect("rm");
    let m = env.mount_ro("big", "mnt", &["--memory", "64MiB"]);
    let pid = env.pid(&m);
    let mut f = std::fs::File::open(m.join("random.bin")).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, size);
    drop(f);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let budget_kb = 64 * 1024;
    let overhead_kb = 64 * 1024;
    eprintln!("peak RSS {} MiB for a 64 MiB budget", hwm_kb / 1024);
    assert!(hwm_kb < budget_kb + overhead_kb, "peak RSS {hwm_kb} kB over budget");
    env.umount(&m);
}

#[test]
fn remount_with_disk_cache_fetches_no_frames() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::BIG);
    env.create(&src, "d");
    let cache = env.p("cache").display().to_string();
    let m = env.mount_ro("d", "mnt", &["--cache-dir", &cache]);
    sh(&format!("tar -C '{}' -cf - . | cat > /dev/null", m.display()));
    let first = env.stats(&m);
    assert!(first["frames_fetched"].as_u64().expect("frames") > 0);
    env.umount(&m);
    // Give the cache writer a moment to finish (it runs after replies).
    let m = env.mount_ro("d", "mnt2", &["--cache-dir", &cache]);
    sh(&format!("tar -C '{}' -cf - . | cat > /dev/null", m.display()));
    assert_trees_equal(&src, &m);
    let second = env.stats(&m);
    assert_eq!(second["frames_fetched"], 0, "{second}");
    assert!(second["disk_hits"].as_u64().expect("hits") > 0);
    assert!(
        second["requests"].as_u64().expect("requests") <= 2,
        "only the index: {second}"
    );
}

#[test]
fn no_stale_mounts_after_umount_sigterm_or_sigkill() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = env.p("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_fidelity_tree_opts(&src, FidelityOpts::FAST);
    env.create(&src, "s");

    let m = env.mount_ro("s", "a", &[]);
    assert!(mounted(&m));
    env.umount(&m);
    assert!(!mounted(&m));

    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL] {
        let m = env.mount_ro("s", "b", &[]);
        let pid = env.pid(&m);
        assert!(std::fs::read_dir(&m).expect("ls").count() > 0);
        // SAFETY: signalling our own child daemon.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let t0 = Instant::now();
        while alive(pid) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if sig == libc::SIGKILL {
            // Whatever the kernel left, umount cleans it.
            run_ok(env.cmd().arg("umount").arg(&m));
        }
        env.mounts.retain(|x| x != &m);
        assert!(!mounted(&m), "stale mount after signal {sig}");
        let o = run_fail(env.cmd().arg("stats").arg(&m));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("lazysnap mount at"), "after signal {sig}: {err}");
        // The mount point is usable again.
        assert_eq!(std::fs::read_dir(&m).expect("ls").count(), 0);
    }
    let o = run_fail(env.cmd().arg("umount").arg(env.p("b")));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lazysnap mount at"));

    // A busy mount is not detached behind the user's back.
    let m = env.mount_ro("s", "c", &[]);
    let f = std::fs::File::open(m.join(paths::ONE_BYTE)).expect("open");
    let o = run_fail(env.cmd().arg("umount").arg(&m));
    assert!(String::from_utf8_lossy(&o.stderr).contains("busy"));
    assert!(mounted(&m));
    drop(f);
    env.umount(&m);
    assert!(!mounted(&m));
}

#[test]
fn prefetch_list_is_fetched_in_the_background_at_mount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::BIG);
    // Write the snapshot through the library so its index carries a
    // prefetch list (the order an earlier run first read files in).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let store = Store::open_writable(&env.store()).expect("store");
    let opts = lazysnap::format::writer::WriterOptions {
        prefetch: vec![
            paths::ZERO_RUNS.as_bytes().to_vec(),
            paths::DEEP_LEAF.as_bytes().to_vec(),
        ],
        ..Default::default()
    };
    lazysnap::build::create(rt.handle(), &store, "p", &src, opts).expect("create");
    let snap = rt.block_on(Snapshot::open(&store, "p")).expect("open");
    assert_eq!(snap.index.prefetch.len(), 2);

    let mnt = env.p("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let counted = Store::open(&env.store()).expect("store");
    let handle = lazysnap::mount::mount(rt.handle(), &counted, "p", &mnt, MountOptions::default()).expect("mount");
    // Without reading anything, exactly the listed files' frames arrive.
    let mut listed = std::collections::BTreeSet::new();
    for p in [paths::ZERO_RUNS, paths::DEEP_LEAF] {
        let e = &snap.index.entries[snap.index.find(p.as_bytes()).expect("listed file")];
        listed.extend(frame_range(&snap.index.frames, e.offset..e.offset + e.size));
    }
    let want = listed.len() as u64;
    assert!(want >= 8, "the listed files span {want} frames");
    let t0 = Instant::now();
    while handle.stats().frames_fetched < want && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = handle.stats();
    assert_eq!(before.frames_fetched, want, "prefetch did not run: {before:?}");
    // Reading a prefetched file is served from memory.
    assert_eq!(
        std::fs::read(mnt.join(paths::ZERO_RUNS)).expect("read"),
        std::fs::read(src.join(paths::ZERO_RUNS)).expect("src")
    );
    let after = handle.stats();
    assert_eq!(after.frames_fetched, before.frames_fetched, "{after:?}");
    assert!(after.memory_hits > 0);
    // And with prefetch off, nothing is fetched until read.
    handle.unmount().expect("unmount");
    let quiet = Store::open(&env.store()).expect("store");
    let opts = MountOptions {
        prefetch: false,
        ..MountOptions::default()
    };
    let handle = lazysnap::mount::mount(rt.handle(), &quiet, "p", &mnt, opts).expect("mount");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(handle.stats().frames_fetched, 0);
    handle.unmount().expect("unmount");
}
