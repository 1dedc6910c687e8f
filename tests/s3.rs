//! Snapshots in S3: what only S3 has, against a real in-process S3 server
//! (s3s-fs, SigV4 checked), through the same CLI. (Mount, chain, extract
//! and save run over S3 too, as bodies shared with the local store: see
//! `access_tests!` in mount.rs, diff.rs, roundtrip.rs and save.rs.)
//! Commands that list and remove; a trace log holds no secret; a wrong
//! secret is refused as denied, quickly; an object replaced under an open
//! handle is a precondition failure, never bytes of two objects; a killed
//! upload is aborted by the next save; and, through the shaping proxy,
//! throttling, stalls, cut connections and a store that denies everything.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::s3::{shaper, SK};
use common::*;

const STORE: &str = "s3://snaps/ws";

fn s3_env() -> Env {
    let env = Env::with_access(Access::S3);
    assert_eq!(env.store(), STORE);
    env
}

#[test]
fn commands_list_and_remove_and_a_trace_log_holds_no_secret() {
    let s3 = s3_env();
    let src = fidelity_src(s3.tmp.path(), "src", FidelityOpts::FAST);
    s3.create(&src, "base");
    assert!(s3.object_file("base").exists(), "no object in the bucket");

    let o = run_ok(s3.cmd().args(["list", "--store", STORE]));
    assert_eq!(listed_names(&o), ["base"]);
    // The flag does what the variable does.
    let o = run_ok(
        s3.cmd()
            .env_remove("LAZYSNAP_S3_PATH_STYLE")
            .args(["list", "--s3-path-style", "--store", STORE]),
    );
    assert_eq!(listed_names(&o), ["base"]);
    run_ok(&mut s3.store_cmd("inspect", "base"));
    // A trace-level log holds no secret, signature or credential.
    let o = run_ok(s3.store_cmd("verify", "base").env("RUST_LOG", "trace"));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "nothing logged");
    for secret in [
        SK,
        "Signature=",
        "X-Amz-Signature",
        "Credential=",
        "authorization",
        "Authorization",
    ] {
        assert!(!log.contains(secret), "the trace log shows {secret:?}");
    }
    let o = run_ok(s3.read_cmd("cat", "base").args([paths::ONE_BYTE, "--stats"]));
    assert_eq!(o.stdout, fs::read(src.join(paths::ONE_BYTE)).expect("read"));

    // A diff, listed.
    fs::write(src.join("added-in-s3"), b"new").expect("write");
    s3.create_with(&src, "next", &["--parent", "base"]);
    let o = run_ok(&mut s3.store_cmd("diff", "next"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "A added-in-s3\n");

    // rm: refused while a diff needs it.
    let o = run_fail(&mut s3.store_cmd("rm", "base"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the diff next was made on it"),
        "{o:?}"
    );
    assert!(s3.object_file("base").exists());

    // A name is never overwritten.
    let o = run_fail(
        s3.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", STORE, "--name", "base"]),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn a_wrong_secret_is_denied_and_a_replaced_object_is_never_mixed() {
    let s3 = s3_env();
    let t = s3.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), vec![1u8; 3 << 20]).expect("write");
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&t)
            .args(["--store", STORE, "--name", "s", "--frame-size", "64KiB"]),
    );

    let t0 = Instant::now();
    let o = run_fail(
        s3.cmd_via(s3.s3().addr, "not-the-secret")
            .args(["inspect", "s", "--store", STORE]),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 403") && err.lines().count() == 1, "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "denied was retried: {:?}",
        t0.elapsed()
    );
    assert!(!err.contains(SK) && !err.contains("Signature="), "{err}");

    // Replace the object under an open handle: the library reads through
    // a handle opened on the first version.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _g = rt.enter();
    s3.s3().configure_this_process();
    let store = lazysnap::store::Store::open(STORE).expect("store");
    let snap = rt
        .block_on(lazysnap::snapshot::Snapshot::open(&store, "s"))
        .expect("open");
    fs::write(t.join("f"), vec![2u8; 3 << 20]).expect("write");
    fs::remove_file(s3.object_file("s")).expect("rm");
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&t)
            .args(["--store", STORE, "--name", "s", "--frame-size", "64KiB"]),
    );
    let f = snap.index.frames[0];
    let e = rt
        .block_on(
            snap.object
                .get_range(f.c_off..f.c_off + f.c_len, lazysnap::store::Priority::Foreground),
        )
        .expect_err("a replaced object must not be read");
    assert_eq!(e.errno(), libc::ESTALE, "{e}");
}

/// Files the server keeps for multipart uploads in progress, and our
/// records of them.
fn uploads_in_progress(s3: &Env) -> (usize, usize) {
    let server = s3.s3().uploads_in_progress();
    let records = fs::read_dir(s3.s3().object_file("ws/.lazysnap-uploads"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    (server, records)
}

#[test]
fn an_upload_killed_midway_is_aborted_by_the_next_save() {
    let s3 = s3_env();
    let t = s3.p("t");
    fs::create_dir(&t).expect("mkdir");
    // Incompressible and at a slow level: parts go up over several seconds.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..24u64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    fs::write(t.join("big"), &data).expect("write");
    let mut child = s3
        .cmd()
        .arg("create")
        .arg(&t)
        .args(["--store", STORE, "--name", "killed", "--level", "19"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while uploads_in_progress(&s3).1 == 0 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY (test): killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let left = uploads_in_progress(&s3);
    assert!(left.0 > 0 && left.1 == 1, "no upload in progress to kill: {left:?}");
    assert!(!s3.object_file("killed").exists(), "a killed save published");

    // The next save to the store aborts it.
    let small = s3.p("small");
    fs::create_dir(&small).expect("mkdir");
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&small)
            .args(["--store", STORE, "--name", "next"]),
    );
    assert_eq!(uploads_in_progress(&s3), (0, 0), "the abandoned upload is still there");
    let o = run_ok(s3.cmd().args(["gc", "--store", STORE]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "removed 0 abandoned uploads\n");
    let o = run_ok(s3.cmd().args(["list", "--store", STORE]));
    assert_eq!(listed_names(&o), ["next"]);
}

/// Through the project's shaping proxy: a burst of 503s is retried by our
/// one retry layer (the SDK's are off), and a stalled store is a timeout
/// at the deadline.
#[test]
fn throttling_bursts_are_retried_and_a_stall_is_a_timeout() {
    use std::sync::atomic::Ordering::Relaxed;
    let s3 = s3_env();
    let t = s3.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), b"through the shaper").expect("write");
    run_ok(s3.cmd().arg("create").arg(&t).args(["--store", STORE, "--name", "s"]));
    let (sh, _rt) = shaper(s3.s3().addr, Duration::from_millis(2));
    let via = || s3.cmd_via(sh.addr(), SK);
    sh.faults().fail_next.store(2, Relaxed);
    let o = run_ok(via().args(["cat", "s", "f", "--store", STORE]));
    assert_eq!(o.stdout, b"through the shaper");
    assert_eq!(sh.faults().fail_next.load(Relaxed), 0, "no 503 was served");

    sh.faults().stall.store(true, Relaxed);
    let t0 = Instant::now();
    let o = run_fail(via().args(["cat", "s", "f", "--store", STORE, "--read-timeout", "2"]));
    sh.faults().stall.store(false, Relaxed);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("timed out"), "{err}");
}

/// S3's smallest part, which s3s-fs enforces too (EntityTooSmall).
const SMALL_PART: usize = 5 << 20;

/// "at most N uploading at once", as the upload logs it at debug level.
fn most_at_once(stderr: &[u8]) -> Option<usize> {
    let log = String::from_utf8_lossy(stderr);
    let line = log.lines().find(|l| l.contains("uploading at once"))?;
    line.split("at most ").nth(1)?.split(' ').next()?.parse().ok()
}

/// A create big enough for 12 parts, through a link with a 300 ms round
/// trip: the parts overlap (the upload itself counts the part requests on
/// the wire at once: 1 would mean one after another), which makes it
/// seconds faster than one part at a time, and the object extracts to the
/// source tree.
#[test]
fn parts_upload_in_parallel_and_round_trip() {
    let s3 = s3_env();
    let t = s3.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("big"), noise(12 * SMALL_PART - (1 << 20), 7)).expect("write");
    fs::write(t.join("small"), b"and a small one").expect("write");
    let rtt = Duration::from_millis(300);
    let (sh, _rt) = shaper(s3.s3().addr, rtt);
    let create = |name: &str, in_flight: usize| {
        let mut c = s3.cmd();
        c.env("AWS_ENDPOINT_URL", format!("http://{}", sh.addr()))
            .env("LAZYSNAP_S3_PART_SIZE", SMALL_PART.to_string())
            .env("LAZYSNAP_S3_PARTS_IN_FLIGHT", in_flight.to_string())
            .env("RUST_LOG", "lazysnap::store::s3=debug")
            .arg("create")
            .arg(&t)
            .args(["--store", STORE, "--name", name]);
        let t0 = Instant::now();
        let o = run_ok(&mut c);
        (t0.elapsed(), most_at_once(&o.stderr), o)
    };
    let (parallel, most, o) = create("parallel", 4);
    let most = most.unwrap_or_else(|| panic!("no part count logged: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(most >= 3, "parts did not overlap: at most {most} at once");
    let (sequential, one, _) = create("sequential", 1);
    assert_eq!(one, Some(1));
    eprintln!("12 parts of 5 MiB at {rtt:?} RTT: {parallel:?} 4 at once, {sequential:?} one at a time");
    // One at a time, the 12 parts alone cost at least 12 round trips.
    assert!(
        parallel + rtt * 4 < sequential,
        "parallel {parallel:?}, sequential {sequential:?}"
    );
    let out = s3.p("out");
    run_ok(
        s3.cmd()
            .args(["extract", "parallel"])
            .arg(&out)
            .args(["--store", STORE]),
    );
    assert_trees_equal(&t, &out);
    assert_eq!(uploads_in_progress(&s3), (0, 0));
}

/// A part that fails for good in the middle of an upload (the server
/// cannot store part 6: a directory stands where it writes it, so it
/// answers 500 every time) stops the upload: the save fails naming the key
/// and the part, the parts in flight are cancelled, the multipart upload
/// is aborted and its record removed, and nothing is published.
#[test]
fn a_part_failing_midway_aborts_the_whole_upload() {
    let s3 = s3_env();
    let t = s3.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("big"), noise(10 * SMALL_PART, 11)).expect("write");
    // Latency, so the test sees the upload's id before part 6 is sent.
    let (sh, _rt) = shaper(s3.s3().addr, Duration::from_millis(300));
    let child = s3
        .cmd()
        .env("AWS_ENDPOINT_URL", format!("http://{}", sh.addr()))
        .env("LAZYSNAP_S3_PART_SIZE", SMALL_PART.to_string())
        .arg("create")
        .arg(&t)
        .args(["--store", STORE, "--name", "failing"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let records = s3.s3().root.join("snaps/ws/.lazysnap-uploads");
    let t0 = Instant::now();
    let id = loop {
        let rec = fs::read_dir(&records)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| fs::read(e.path()).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(id) = rec.as_ref().and_then(|r| r["upload_id"].as_str()) {
            break id.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no upload started");
        std::thread::sleep(Duration::from_millis(5));
    };
    let blocker = s3.s3().root.join(format!(".upload_id-{id}.part-6"));
    fs::create_dir(&blocker).expect("mkdir");
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the create succeeded");
    assert!(err.contains("ws/failing.tar.zst (part 6)"), "{err}");
    fs::remove_dir(&blocker).expect("rmdir");
    assert!(!s3.object_file("failing").exists(), "a failed upload published");
    assert_eq!(uploads_in_progress(&s3), (0, 0), "the failed upload is still there");
}

/// A read's bytes, or its errno, and how long it took.
fn read_file(p: &Path) -> (Result<Vec<u8>, Option<i32>>, Duration) {
    let t0 = Instant::now();
    let r = fs::File::open(p).and_then(|mut f| {
        let mut v = Vec::new();
        f.read_to_end(&mut v).map(|_| v)
    });
    (r.map_err(|e| e.raw_os_error()), t0.elapsed())
}

/// Through the shaping proxy, a connection cut in the middle of a body:
/// extract and a mount read retry and get the right bytes; when every
/// connection is cut, extract fails cleanly and leaves nothing behind.
#[test]
fn a_connection_cut_mid_body_is_retried_and_never_gives_wrong_bytes() {
    let mut s3 = s3_env();
    let src = fidelity_src(s3.tmp.path(), "src", FidelityOpts::FAST);
    s3.create(&src, "cut");
    let (sh, _rt) = shaper(s3.s3().addr, Duration::from_millis(2));
    let via = |c: &str| {
        let mut cmd = s3.cmd_via(sh.addr(), SK);
        cmd.arg(c).args(s3.snapshot_args("cut"));
        cmd
    };
    let object = fs::metadata(s3.object_file("cut")).expect("stat").len();
    assert!(object > 3 << 20, "a {object}-byte object");

    // Extract: one connection cut 1.5 MB into the answers (past the
    // 1 MiB tail read, inside a data range).
    sh.faults().cut_once.store(1_500_000, Relaxed);
    let out = s3.p("out");
    run_ok(via("extract").arg(&out));
    assert_eq!(sh.faults().cuts.load(Relaxed), 1, "no connection was cut");
    assert_trees_equal(&src, &out);

    // Every connection cut after 200 kB: retries run out, a clean error.
    sh.faults().cut_after.store(200_000, Relaxed);
    let out2 = s3.p("out2");
    let t0 = Instant::now();
    let o = run_fail(via("extract").arg(&out2).args(["--read-timeout", "6"]));
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("every connection cut: {err} after {:?}", t0.elapsed());
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(6 + 3), "{:?}", t0.elapsed());
    assert!(sh.faults().cuts.load(Relaxed) > 3, "{err}");
    assert!(!out2.exists(), "a failed extract left {out2:?}");
    let left: Vec<_> = fs::read_dir(s3.tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    sh.faults().cut_after.store(0, Relaxed);

    // A mount read: the connection that carries it is cut 100 kB in.
    if !require_fuse() {
        return;
    }
    let m = s3.p("mnt");
    fs::create_dir(&m).expect("mkdir");
    run_ok(via("mount").arg(&m).args(["--read-only", "--read-timeout", "6"]));
    s3.mounts.push(m.clone());
    let cuts = sh.faults().cuts.load(Relaxed);
    sh.faults().cut_once.store(100_000, Relaxed);
    let (got, took) = read_file(&m.join(paths::SPARSE));
    assert_eq!(sh.faults().cuts.load(Relaxed), cuts + 1, "no connection was cut");
    assert!(
        got.as_deref() == Ok(fs::read(src.join(paths::SPARSE)).expect("src").as_slice()),
        "a read over a cut connection: {:?} after {took:?}",
        got.map(|v| v.len())
    );
    let cmp = compare_trees(&src, &m);
    s3.umount(&m);
    cmp.expect("the mount after a cut");
}

/// Through the shaping proxy, a store that answers 403 AccessDenied to
/// everything: on a mounted snapshot, a read of data not yet fetched fails
/// within the read deadline (denied is not retried), and the mount stays
/// up: what it holds still reads, and reads work again once the store
/// does.
#[test]
fn a_store_that_denies_everything_fails_reads_in_time_and_the_mount_stays_up() {
    if !require_fuse() {
        return;
    }
    let mut s3 = s3_env();
    let src = fidelity_src(s3.tmp.path(), "src", FidelityOpts::FAST);
    s3.create(&src, "deny");
    let (sh, _rt) = shaper(s3.s3().addr, Duration::from_millis(2));
    let m = s3.p("mnt");
    fs::create_dir(&m).expect("mkdir");
    let deadline = 4;
    run_ok(
        s3.cmd_via(sh.addr(), SK)
            .arg("mount")
            .args(s3.snapshot_args("deny"))
            .arg(&m)
            .args(["--read-only", "--read-timeout", &deadline.to_string()]),
    );
    s3.mounts.push(m.clone());
    let cached = paths::DEEP_LEAF;
    assert_eq!(
        fs::read(m.join(cached)).expect("read"),
        fs::read(src.join(cached)).expect("src")
    );

    sh.faults().deny.store(true, Relaxed);
    let (got, took) = read_file(&m.join(paths::SPARSE));
    let errno = got.expect_err("a read from a store that denies everything");
    eprintln!("denied read: errno {errno:?} after {took:?}");
    // EIO (error.rs: a store failure other than a replaced object), not
    // retried, so well within the deadline.
    assert_eq!(errno, Some(libc::EIO), "after {took:?}");
    assert!(
        took < Duration::from_secs(deadline + 3),
        "the denied read took {took:?}"
    );
    // The mount is up: cached data reads, metadata answers, stats answer.
    assert_eq!(
        fs::read(m.join(cached)).expect("cached read while denied"),
        fs::read(src.join(cached)).expect("src")
    );
    assert!(fs::read_dir(m.join("names")).expect("readdir").count() > 0);
    let stats = s3.stats(&m);
    assert!(stats["errors"].as_u64().expect("errors") >= 1, "{stats}");
    // It was the 403 that failed it, not a cut connection.
    let log = fs::read_to_string(stats["mount"]["log"].as_str().expect("log")).expect("log");
    assert!(log.contains("AccessDenied (HTTP 403)"), "{log}");

    sh.faults().deny.store(false, Relaxed);
    assert_eq!(
        fs::read(m.join(paths::SPARSE)).expect("read once the store answers"),
        fs::read(src.join(paths::SPARSE)).expect("src")
    );
    s3.umount(&m);
}
