//! Hardening I, mounts and stores: no setuid through a writable mount, mount
//! records name their store absolutely, a FIFO store object never hangs a
//! mount (tests/hangs.rs has a store that stops answering), and a stale
//! mount record whose pid was reused does not stall `umount`.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The mountinfo line of mount point `m`, split into (per-mount options,
/// super options).
fn mountinfo(m: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = m.display().to_string();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want.as_str()) {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        Some((f[5].to_string(), f.get(sep + 3)?.to_string()))
    })
}

/// Make the temp dir traversable by other users (tempdirs are 0700).
fn open_up(env: &Env) {
    std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Run `PATH -u` as uid/gid 65534 and return the effective uid it printed.
fn euid_as_nobody(id: &Path) -> String {
    let o = run_ok(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(id)
            .arg("-u"),
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn setuid_binary_does_not_run_as_root_through_a_mount() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    open_up(&env);
    let src = env.p("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::copy("/usr/bin/id", src.join("id")).expect("copy id");
    std::os::unix::fs::chown(src.join("id"), Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(src.join("id"), std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    env.create(&src, "suid");
    // The source itself really runs as root: the test can tell.
    assert_eq!(euid_as_nobody(&src.join("id")), "0");

    // Writable (overlay) and read-only (FUSE) mounts: never setuid.
    let w = env.mount("suid", "w", &[]);
    let r = env.mount_ro("suid", "r", &[]);
    for m in [&w, &r] {
        let mode = std::fs::metadata(m.join("id")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o4755, "the bit is still shown");
        assert_ne!(euid_as_nobody(&m.join("id")), "0", "setuid honoured in {}", m.display());
        let (opts, _) = mountinfo(m).expect("mounted");
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(
            opts.contains(&"nosuid") && opts.contains(&"nodev"),
            "{}: {opts:?}",
            m.display()
        );
    }
    // Every overlay feature is set explicitly. The kernel lists only values
    // that differ from its defaults: none may be anything but off, and
    // uuid=off (on by default; shown as "null" over a lower without a
    // uuid, such as FUSE) shows that ours reached it.
    let (_, sup) = mountinfo(&w).expect("overlay");
    let sup: Vec<&str> = sup.split(',').collect();
    assert!(sup.contains(&"uuid=off") || sup.contains(&"uuid=null"), "{sup:?}");
    for key in ["redirect_dir", "metacopy", "index", "xino", "uuid"] {
        for o in sup.iter().filter(|o| o.starts_with(&format!("{key}="))) {
            let v = &o[key.len() + 1..];
            assert!(v == "off" || (key == "uuid" && v == "null"), "{sup:?}");
        }
    }
    env.umount(&w);
    env.umount(&r);

    // --allow-setuid is the opt-in for trusted snapshots, for both kinds.
    let w = env.mount("suid", "w", &["--allow-setuid"]);
    let r = env.mount_ro("suid", "r", &["--allow-setuid"]);
    for m in [&w, &r] {
        assert_eq!(euid_as_nobody(&m.join("id")), "0", "{}", m.display());
        let (opts, _) = mountinfo(m).expect("mounted");
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(!opts.contains(&"nosuid") && opts.contains(&"nodev"), "{opts:?}");
    }
    env.umount(&w);
    env.umount(&r);
}

#[test]
fn relative_store_is_recorded_absolute_and_save_writes_there() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = env.p("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"a").expect("write");
    env.create(&src, "base");
    let elsewhere = env.p("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let store = std::fs::canonicalize(env.p("store")).expect("store");

    // --store store, then LAZYSNAP_STORE=store, both from the temp dir.
    for (i, by_env) in [false, true].into_iter().enumerate() {
        let m = env.p(&format!("mnt{i}"));
        std::fs::create_dir(&m).expect("mkdir");
        let mut c = env.cmd();
        c.current_dir(env.tmp.path()).args(["mount", "base"]).arg(&m);
        if by_env {
            c.env("LAZYSNAP_STORE", "store");
        } else {
            c.args(["--store", "store"]);
        }
        run_ok(&mut c);
        env.mounts.push(m.clone());
        assert_eq!(
            env.stats(&m)["mount"]["store"].as_str(),
            Some(format!("file://{}", store.display()).as_str())
        );
        std::fs::write(m.join("b.txt"), b"b").expect("write through the mount");

        let name = format!("next{i}");
        run_ok(
            env.cmd()
                .current_dir(&elsewhere)
                .env_remove("LAZYSNAP_STORE")
                .arg("save")
                .arg(&m)
                .args(["--name", &name]),
        );
        assert!(
            store.join(format!("{name}.tar.zst")).is_file(),
            "{name} not in the mount's store"
        );
        let stray: Vec<_> = std::fs::read_dir(&elsewhere).expect("ls").collect();
        assert!(stray.is_empty(), "save wrote into its cwd: {stray:?}");
        env.umount(&m);
    }
    let o = run_ok(env.cmd().args(["cat", "next1", "b.txt", "--store"]).arg(&store));
    assert_eq!(o.stdout, b"b");
}

/// Run `cmd` with output captured; kill it after `limit` and fail.
fn run_within(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{cmd:?} still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out, t0.elapsed())
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Kill (by pid) every process started with `needle` in its command line.
fn kill_mentioning(needle: &Path) {
    for pid in processes_mentioning(needle) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[test]
fn fifo_object_is_refused_promptly_and_leaves_no_daemon() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let store = env.p("store");
    std::fs::create_dir(&store).expect("mkdir");
    mkfifo(&store.join("x.tar.zst"), 0o644).expect("mkfifo");
    let mnt = env.p("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");

    let cmds: [(&str, Vec<&OsStr>); 3] = [
        ("inspect", vec![OsStr::new("inspect"), OsStr::new("x")]),
        (
            "mount",
            vec![
                OsStr::new("mount"),
                OsStr::new("x"),
                mnt.as_os_str(),
                OsStr::new("--read-only"),
            ],
        ),
        (
            "mount (writable)",
            vec![OsStr::new("mount"), OsStr::new("x"), mnt.as_os_str()],
        ),
    ];
    for (what, args) in cmds {
        let mut c = env.cmd();
        c.args(args).arg("--store").arg(&store);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_within(&mut c, Duration::from_secs(10))
        }));
        let Ok((out, took)) = res else {
            kill_mentioning(env.tmp.path());
            panic!("{what} hung on a fifo object");
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} succeeded");
        assert!(
            err.contains("x.tar.zst") && err.contains("not a regular file"),
            "{what}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    }
    // No daemon left behind, no record, nothing mounted.
    std::thread::sleep(Duration::from_millis(200));
    let left = processes_mentioning(env.tmp.path());
    kill_mentioning(env.tmp.path());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(mountinfo(&mnt).is_none());
    let records: Vec<_> = std::fs::read_dir(env.p("state/mounts"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension() == Some(OsStr::new("json")))
                .collect()
        })
        .unwrap_or_default();
    assert!(records.is_empty(), "{records:?}");
    // Not a snapshot to `list` either.
    let o = run_ok(env.cmd().arg("list").arg("--store").arg(&store));
    assert!(o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stdout));
}

// ---------------------------------------------------------------------------
// Stale records
// ---------------------------------------------------------------------------

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

#[test]
fn umount_of_a_stale_record_with_a_reused_pid_is_quick() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let src = env.p("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f.txt"), b"hello").expect("write");
    env.create(&src, "s");
    let m = env.mount_ro("s", "mnt", &[]);
    let pid = env.pid(&m);
    // SAFETY: signalling our own daemon.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid));

    // The record now names a live, unrelated process (its start time stays
    // the daemon's).
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let records: Vec<PathBuf> = std::fs::read_dir(env.p("state/mounts"))
        .expect("records")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("json")))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&records[0]).expect("read")).expect("json");
    rec["pid"] = sleeper.id().into();
    std::fs::write(&records[0], serde_json::to_vec(&rec).expect("json")).expect("write");

    let t0 = Instant::now();
    let o = env.cmd().arg("umount").arg(&m).output().expect("umount");
    let took = t0.elapsed();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(o.status.success(), "umount: {}", String::from_utf8_lossy(&o.stderr));
    assert!(took < Duration::from_secs(5), "umount took {took:?}");
    assert!(!records[0].exists(), "record left behind");
    assert!(mountinfo(&m).is_none());
    env.mounts.clear();
}
