//! No command hangs on a store, and none leaves temporary files behind:
//! a store that stops answering makes commands fail at their deadline (a
//! FIFO object: tests/hardening_mount.rs), SIGINT/SIGTERM remove what was
//! being written, and what a killed process left is swept by the next
//! writer. Read-only commands never create a store.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Wait for `child` at most `secs`; kill it and fail if it is still running.
fn wait_within(mut child: Child, secs: u64, what: &str) -> (Option<i32>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status.code(), err);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s (a hang)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn")
}

#[test]
fn a_store_that_stops_answering_fails_at_the_deadline() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    // A snapshot whose store is itself a lazysnap mount: stopping that
    // mount's daemon makes every read of the store block.
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), vec![5u8; 300_000]).expect("write");
    env.create(&t, "s");
    let holder = env.p("holder");
    fs::create_dir(&holder).expect("mkdir");
    fs::copy(env.p("store/s.tar.zst"), holder.join("s.tar.zst")).expect("copy");
    env.create(&holder, "holder");
    let stalled = env.mount_ro("holder", "stalled", &[]);
    let pid = env.pid(&stalled);
    // SAFETY (test): signalling our own daemon.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let store = stalled.display().to_string();
    let res = std::panic::catch_unwind(|| {
        let t0 = Instant::now();
        let (code, err) = wait_within(
            spawn(lazysnap().args(["cat", "s", "f", "--store", &store, "--read-timeout", "2"])),
            30,
            "cat",
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("timed out") && err.lines().count() == 1, "{err}");
        eprintln!("cat gave up after {:?}: {err}", t0.elapsed());
        let dest = Path::new(&store).parent().expect("parent").join("out");
        let (code, err) = wait_within(
            spawn(
                lazysnap()
                    .args(["extract", "s"])
                    .arg(&dest)
                    .args(["--store", &store, "--read-timeout", "2"]),
            ),
            30,
            "extract",
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("timed out"), "{err}");
    });
    // SAFETY (test): resume our own daemon so it can be unmounted.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    env.umount(&stalled);
    if let Err(e) = res {
        std::panic::resume_unwind(e);
    }
}

/// Start `cmd`, wait until a file whose name contains `mark` appears in
/// `dir`, then send `sig`; returns the exit code.
fn interrupt_when_written(cmd: &mut Command, dir: &Path, mark: &str, sig: i32) -> Option<i32> {
    let child = spawn(cmd);
    let t0 = Instant::now();
    let seen = loop {
        let found = fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains(mark)))
            .unwrap_or(false);
        if found || t0.elapsed() > Duration::from_secs(20) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(seen, "no temporary {mark} appeared in {}", dir.display());
    // SAFETY (test): signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    wait_within(child, 20, "interrupted command").0
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn interrupted_work_leaves_no_temporary_files() {
    let env = Env::new();
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    // Incompressible and at a slow level: several seconds of work.
    let data: Vec<u8> = (0..48u64 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    fs::write(t.join("big"), &data).expect("write");
    env.create(&t, "done");
    let store = env.p("store");
    let create = |name: &str| {
        let mut c = env.cmd();
        c.arg("create")
            .arg(&t)
            .args(["--store", &env.store(), "--name", name, "--level", "19"]);
        c
    };

    // SIGINT and SIGTERM: the temporary upload is removed, nothing published.
    for (sig, name) in [(libc::SIGINT, "int"), (libc::SIGTERM, "term")] {
        let code = interrupt_when_written(&mut create(name), &store, ".tmp-", sig);
        assert_eq!(code, Some(128 + sig), "{name}");
        assert_eq!(temporaries(&store), Vec::<String>::new(), "{name}");
        assert!(!store.join(format!("{name}.tar.zst")).exists());
    }
    // SIGKILL leaves one; the next writer into the store sweeps it.
    let code = interrupt_when_written(&mut create("killed"), &store, ".tmp-", libc::SIGKILL);
    assert_eq!(code, None);
    assert_eq!(temporaries(&store).len(), 1);
    let small = env.p("small");
    fs::create_dir(&small).expect("mkdir");
    env.create(&small, "next");
    assert_eq!(temporaries(&store), Vec::<String>::new());

    // extract: the same for its temporary directory.
    let parent = env.p("restore");
    fs::create_dir(&parent).expect("mkdir");
    let extract = |dest: &str| {
        let mut c = env.cmd();
        c.args(["extract", "done"])
            .arg(parent.join(dest))
            .args(["--store", &env.store()]);
        c
    };
    let code = interrupt_when_written(&mut extract("a"), &parent, ".lazysnap-", libc::SIGTERM);
    assert_eq!(code, Some(128 + libc::SIGTERM));
    assert_eq!(temporaries(&parent), Vec::<String>::new());
    let code = interrupt_when_written(&mut extract("b"), &parent, ".lazysnap-", libc::SIGKILL);
    assert_eq!(code, None);
    assert_eq!(temporaries(&parent).len(), 1);
    run_ok(&mut extract("c"));
    assert_eq!(temporaries(&parent), Vec::<String>::new());
    assert!(!parent.join("a").exists() && !parent.join("b").exists());
}

#[test]
fn read_only_commands_never_create_a_store() {
    let env = Env::new();
    let typo = env.p("typo");
    for args in [vec!["list"], vec!["inspect", "x"], vec!["ls", "x"], vec!["log", "x"]] {
        let o = run_fail(env.cmd().args(&args).arg("--store").arg(&typo));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("store") && err.contains("typo") && err.contains("not found"),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }
    let o = run_fail(env.cmd().args(["list", "--store", "file://user:pw@host/x"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("file:///DIR"), "{err}");
}
