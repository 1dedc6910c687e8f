//! Pod mode: every command reaches the store only through `lazysnap
//! signer`, holding a token file and nothing else (no AWS variable at
//! all). The suites of mount.rs, diff.rs, roundtrip.rs and save.rs run
//! this way too (`access_tests!`, the `signer` arm); these tests are about
//! what only pod mode has: scopes and rights seen from the pod, URLs that
//! expire in the middle of a read, and a signer that goes away and comes
//! back during a mount and during a save. Signers, commands and mount
//! daemons here log at trace level, and none of it may show a token, a
//! signature or the secret key.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::s3::{shaper, SK};
use common::signer::{write_tokens, SignerProc, POD_TOKEN};
use common::*;

/// A token that may read `org/a/` only.
const READ_A: &str = "read-a-token-0d5e2b7c91";
/// A token that may read and write `org/a/`.
const WRITE_A: &str = "write-a-token-f8c3a6e2d4";

/// Nothing a pod or a signer prints may hold these.
fn assert_clean(what: &str, text: &str) {
    for s in [
        SK,
        POD_TOKEN,
        READ_A,
        WRITE_A,
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "Signature=",
        "Credential=",
        "Bearer",
    ] {
        assert!(!text.contains(s), "{what} shows {s:?}:\n{text}");
    }
}

/// The one error line of a failed command (its log lines aside).
fn error_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("lazysnap: error:")).collect();
    assert_eq!(lines.len(), 1, "not one error line:\n{e}");
    lines[0].to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `env.cmd()` (a pod) presenting `token` instead of the env's own, at
/// trace level.
fn pod_as(env: &Env, token: &str) -> Command {
    let file = env.p(&format!("token-{}", &token[..6]));
    fs::write(&file, token).expect("token file");
    let mut c = env.cmd();
    c.env("LAZYSNAP_TOKEN_FILE", &file).env("RUST_LOG", "trace");
    c
}

/// Stop the env's signer and start another on the same address with
/// `extra` arguments (a pod's mounts keep the address they were given).
fn restart_signer(env: &mut Env, extra: &[&str]) {
    restart_signer_with(env, extra, &[]);
}

/// [`restart_signer`], with `vars` in the new signer's environment.
fn restart_signer_with(env: &mut Env, extra: &[&str], vars: &[(&str, String)]) {
    let addr = {
        let s = env.signer.as_mut().expect("a signer env");
        s.kill();
        s.addr
    };
    env.signer = None;
    let started = Instant::now();
    loop {
        // (The port is free again at once; retry briefly in case.)
        let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cmd = env.s3_cmd();
            cmd.envs(vars.iter().map(|(k, v)| (k, v)));
            SignerProc::start_on(env, cmd, &env.p("tokens.json"), &addr.to_string(), extra)
        }));
        match s {
            Ok(s) => {
                env.signer = Some(s);
                return;
            }
            Err(e) if started.elapsed() > Duration::from_secs(10) => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn kill_signer(env: &mut Env) {
    env.signer.as_mut().expect("a signer env").kill();
}

/// A pod reads and writes only under its token's prefix and within its
/// rights; a parent outside the prefix is read through its child's spec
/// until it is replaced; nothing logged shows a token or a signature.
#[test]
fn a_pod_reads_and_writes_only_what_its_token_grants() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(Access::Signer);
    write_tokens(
        &env.p("tokens.json"),
        &[
            (POD_TOKEN, "", "read-write"),
            (READ_A, "org/a/", "read"),
            (WRITE_A, "org/a/", "read-write"),
        ],
    );
    env.signer.as_ref().expect("signer").signal(libc::SIGHUP);
    let src = env.p("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("hello.txt"), "hello\n").expect("write");
    env.create(&src, "org/a/main");
    env.create(&src, "org/b/base");
    fs::write(src.join("fork.txt"), "fork\n").expect("write");
    env.create_with(&src, "org/a/fork", &["--parent", "org/b/base"]);
    // The reload has happened once the new token is known.
    let t0 = Instant::now();
    while !pod_as(&env, READ_A)
        .args(["list"])
        .output()
        .expect("list")
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the signer did not reload its tokens"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut logs = Vec::new();

    // Listing shows the prefix only.
    let o = run_ok(pod_as(&env, READ_A).args(["list"]));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("org/a/main") && listed.contains("org/a/fork"),
        "{listed}"
    );
    assert!(!listed.lines().any(|l| l.starts_with("org/b/")), "{listed}");
    logs.push(text(&o));
    // Reads inside the prefix work; outside, one clear line.
    let o = run_ok(pod_as(&env, READ_A).args(["cat", "org/a/main", "hello.txt"]));
    assert_eq!(o.stdout, b"hello\n");
    logs.push(text(&o));
    let o = run_fail(pod_as(&env, READ_A).args(["cat", "org/b/base", "hello.txt"]));
    let e = error_line(&o);
    assert!(e.contains("outside this token's prefix org/a/"), "{e}");
    logs.push(text(&o));
    // A fork whose parent lies outside the prefix reads through it.
    let o = run_ok(pod_as(&env, READ_A).args(["cat", "org/a/fork", "hello.txt"]));
    assert_eq!(o.stdout, b"hello\n");
    // A read-only token neither deletes nor saves; the save leaves the
    // upper dir as it was, and a token that may write saves it.
    let o = run_fail(pod_as(&env, READ_A).args(["rm", "org/a/main"]));
    let e = error_line(&o);
    assert!(e.contains("may only read"), "{e}");
    let m = env.p("mnt");
    fs::create_dir_all(&m).expect("mkdir");
    let upper = env.p("upper");
    run_ok(
        pod_as(&env, READ_A)
            .args(["mount", "org/a/main"])
            .arg(&m)
            .arg("--upper")
            .arg(&upper),
    );
    env.mounts.push(m.clone());
    fs::write(m.join("new.txt"), "new\n").expect("write in the mount");
    let o = run_fail(pod_as(&env, READ_A).arg("save").arg(&m).args(["--name", "org/a/next"]));
    let e = error_line(&o);
    assert!(e.contains("may only read"), "{e}");
    logs.push(text(&o));
    assert_eq!(fs::read(upper.join("upper/new.txt")).expect("upper kept"), b"new\n");
    assert_eq!(fs::read(m.join("new.txt")).expect("mount kept"), b"new\n");
    let o = run_fail(pod_as(&env, WRITE_A).arg("save").arg(&m).args(["--name", "org/b/next"]));
    assert!(text(&o).contains("outside this token's prefix"), "{}", text(&o));
    let o = run_ok(pod_as(&env, WRITE_A).arg("save").arg(&m).args(["--name", "org/a/next"]));
    logs.push(text(&o));
    let stats = env.stats(&m);
    let daemon_log = fs::read_to_string(stats["mount"]["log"].as_str().expect("log")).expect("daemon log");
    env.umount(&m);
    let o = run_ok(pod_as(&env, READ_A).args(["cat", "org/a/next", "new.txt"]));
    assert_eq!(o.stdout, b"new\n");
    // A snapshot a diff needs: a pod cannot delete it, --force or not (the
    // signer refuses too), and is told what it can do.
    for force in [false, true] {
        let mut cmd = pod_as(&env, WRITE_A);
        cmd.args(["rm", "org/a/main"]);
        if force {
            cmd.arg("--force");
        }
        let e = error_line(&run_fail(&mut cmd));
        assert!(e.contains("the diff org/a/next was made on it"), "{e}");
        assert!(e.contains("delete those diffs first") && !e.contains("--force"), "{e}");
        assert_eq!(e.matches("refused").count(), 1, "{e}");
    }
    let o = run_ok(pod_as(&env, READ_A).args(["cat", "org/a/main", "hello.txt"]));
    assert!(!o.stdout.is_empty());
    let o = run_ok(pod_as(&env, WRITE_A).args(["rm", "org/a/next"]));
    logs.push(text(&o));

    // The parent outside the prefix replaced by another snapshot: the
    // signer refuses the fork's spec (the digest its child holds differs).
    // (An operator's doing, with the store's own credentials: a signer
    // never deletes what a chain needs.)
    run_ok(
        env.s3_cmd()
            .args(["rm", "org/b/base", "--force", "--store", &env.s3_store()]),
    );
    fs::write(src.join("hello.txt"), "other\n").expect("write");
    env.create(&src, "org/b/base");
    let o = run_fail(pod_as(&env, READ_A).args(["cat", "org/a/fork", "hello.txt"]));
    let e = error_line(&o);
    assert!(e.contains("org/b/base") && e.contains("index digest"), "{e}");
    assert!(o.stdout.is_empty());

    for (i, l) in logs.iter().enumerate() {
        assert_clean(&format!("pod command {i}"), l);
    }
    assert_clean("the mount daemon's log", &daemon_log);
    assert!(
        daemon_log.contains("TRACE") || daemon_log.contains("DEBUG"),
        "{daemon_log}"
    );
    assert_clean("the signer's log", &env.signer.as_ref().expect("signer").log());
}

/// URLs that live 3 seconds, read through for 12: the reader sees every
/// byte right and no error while the daemon renews them.
#[test]
fn urls_expiring_in_the_middle_of_a_long_read_are_renewed_unseen() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(Access::Signer);
    restart_signer(&mut env, &["--expires", "3s"]);
    let src = env.p("src");
    fs::create_dir_all(&src).expect("mkdir");
    let data = noise(48 << 20, 7);
    fs::write(src.join("big.bin"), &data).expect("write");
    env.create(&src, "long");
    let m = env.mount_ro("long", "mnt", &["--no-prefetch", "--memory", "16MiB"]);
    let started = Instant::now();
    let mut f = fs::File::open(m.join("big.bin")).expect("open");
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).expect("a read failed while URLs expired");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    drop(f);
    assert!(got == data, "the long read returned other bytes");
    assert!(
        took > Duration::from_secs(9),
        "the read took only {took:?}: not long enough to test expiry"
    );
    // The URLs were renewed, several times, by the daemon.
    let log = env.signer.as_ref().expect("signer").log();
    let specs = log.matches("/v1/spec").count();
    assert!(specs >= 3, "{specs} spec calls in {took:?}:\n{log}");
    let stats = env.stats(&m);
    assert_eq!(stats["errors"].as_u64(), Some(0), "{stats}");
    env.umount(&m);
}

/// The signer goes away during a mount: what is fetched, and what its
/// URLs still reach, reads on; past their expiry a read fails (EIO) at its
/// deadline and the mount stays up; with the signer back, reads work
/// again. It goes away during a save: the save fails with one line, its
/// upload is aborted or left to expire, the upper dir is intact, and the
/// same save works once the signer is back. Parts are 5 MiB (the least
/// S3 takes), so the save is a multipart upload of several parts.
#[test]
fn a_signer_that_restarts_during_a_mount_and_a_save() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(Access::Signer);
    restart_signer(&mut env, &["--expires", "4s", "--part-size", "5MiB"]);
    let src = env.p("src");
    fs::create_dir_all(&src).expect("mkdir");
    let files: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("f{i}"), noise(2 << 20, 10 + i))).collect();
    for (n, d) in &files {
        fs::write(src.join(n), d).expect("write");
    }
    env.create(&src, "svc");
    let read = |m: &Path, n: &str| fs::read(m.join(n));
    let m = env.mount("svc", "mnt", &["--no-prefetch", "--read-timeout", "6"]);
    assert!(read(&m, "f0").expect("f0") == files[0].1);

    // Down: f1 reads through the URL in hand (not expired yet).
    kill_signer(&mut env);
    assert!(read(&m, "f1").expect("f1 with the signer down") == files[1].1);
    // Past the URLs' expiry: EIO at the deadline, not a hang.
    std::thread::sleep(Duration::from_secs(5));
    let t0 = Instant::now();
    let e = read(&m, "f2").expect_err("a read past expiry with the signer down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert!(read(&m, "f0").expect("f0 is fetched") == files[0].1);
    // A save while the signer is down fails, and keeps the changes.
    let big = noise(12 << 20, 99);
    fs::write(m.join("big.bin"), &big).expect("write in the mount");
    let o = run_fail(env.cmd().arg("save").arg(&m).args(["--name", "svc-2"]));
    let err = error_line(&o);
    assert!(err.contains("signer http://"), "{err}");

    // Back: reads work again (renewed on demand), and the save goes
    // through as a multipart upload.
    restart_signer(&mut env, &["--expires", "4s", "--part-size", "5MiB"]);
    assert!(read(&m, "f2").expect("f2 with the signer back") == files[2].1);
    // Killed in the middle of a save: after the upload is created.
    let upload_calls = |env: &Env| {
        env.signer
            .as_ref()
            .expect("signer")
            .log()
            .matches("/v1/uploads")
            .count()
    };
    let log_before = upload_calls(&env);
    let mut save = env
        .cmd()
        .arg("save")
        .arg(&m)
        .args(["--name", "svc-2"])
        .spawn()
        .expect("save");
    let t0 = Instant::now();
    let outcome = loop {
        if let Some(st) = save.try_wait().expect("wait") {
            break Some(st);
        }
        if upload_calls(&env) > log_before {
            kill_signer(&mut env);
            break None;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the save never created its upload"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let status = match outcome {
        Some(st) => st,
        None => save.wait().expect("wait"),
    };
    if status.success() {
        // It raced the kill and completed: the snapshot is whole.
        eprintln!("the save completed before the signer was killed");
    } else {
        assert!(fs::read(m.join("big.bin")).expect("kept") == big);
        restart_signer(&mut env, &["--expires", "4s", "--part-size", "5MiB"]);
        env.save(&m, "svc-2");
    }
    let log = env.signer.as_ref().expect("signer").log();
    assert!(log.contains("/v1/uploads/complete"), "{log}");
    env.umount(&m);
    let x = env.p("x");
    env.extract("svc-2", &x, &[]);
    assert!(fs::read(x.join("big.bin")).expect("saved") == big);
    assert!(fs::read(x.join("f1")).expect("kept") == files[1].1);
    // 12 MiB and more in 5 MiB parts: the object is at least three parts.
    assert!(fs::metadata(env.object_file("svc-2")).expect("object").len() > 10 << 20);
    assert_clean("the signer's log", &log);
}

/// A signer whose pods reach S3 by another address than it does
/// (`LAZYSNAP_S3_PRESIGN_ENDPOINT`): the URLs it hands out, for reads and
/// for upload parts, name that address, so a pod's reads and writes go
/// there while the signer's own calls do not.
#[test]
fn presigned_urls_name_the_endpoint_the_pods_reach() {
    let mut env = Env::with_access(Access::Signer);
    let src = env.p("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("hello.txt"), "hello\n").expect("write");
    env.create(&src, "ep");
    let (proxy, _rt) = shaper(env.s3().addr, Duration::ZERO);
    let endpoint = format!("http://{}", proxy.addr());
    restart_signer_with(&mut env, &[], &[("LAZYSNAP_S3_PRESIGN_ENDPOINT", endpoint)]);
    // The pods' address refuses everything: their reads and uploads fail,
    // though the signer itself reaches the store.
    proxy.faults().deny.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = run_fail(env.cmd().args(["cat", "ep", "hello.txt"]));
    let e = error_line(&o);
    assert!(
        e.contains("AccessDenied") && e.contains(&proxy.addr().to_string()),
        "{e}"
    );
    let o = run_fail(
        env.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", &env.store(), "--name", "ep-2"]),
    );
    assert!(error_line(&o).contains("AccessDenied"), "{}", text(&o));
    // Open again: both work, through it.
    proxy.faults().deny.store(false, std::sync::atomic::Ordering::SeqCst);
    let o = run_ok(env.cmd().args(["cat", "ep", "hello.txt"]));
    assert_eq!(o.stdout, b"hello\n");
    env.create(&src, "ep-2");
    let o = run_ok(env.cmd().args(["cat", "ep-2", "hello.txt"]));
    assert_eq!(o.stdout, b"hello\n");
    // A bad endpoint is one line at the signer's start, not URLs that fail.
    let o = run_fail(
        env.s3_cmd()
            .env("LAZYSNAP_S3_PRESIGN_ENDPOINT", "ftp://x")
            .args([
                "signer",
                "--listen",
                "127.0.0.1:0",
                "--store",
                &env.s3_store(),
                "--tokens",
            ])
            .arg(env.p("tokens.json")),
    );
    assert!(error_line(&o).contains("LAZYSNAP_S3_PRESIGN_ENDPOINT"), "{}", text(&o));
}
