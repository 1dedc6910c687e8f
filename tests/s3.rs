//! Snapshots in S3: every command against a real in-process S3 server
//! (s3s-fs, SigV4 checked), through the same CLI. Create, list, inspect,
//! cat, verify, extract, a lazy mount and a writable mount's saves; a wrong
//! secret is refused as denied, quickly; an object replaced under an open
//! handle is a precondition failure, never bytes of two objects.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const AK: &str = "AKLAZYSNAPTEST";
const SK: &str = "lazysnap-test-secret-key";

/// An S3 server on loopback serving the directory `root` (each subdir a
/// bucket), running until the returned runtime is dropped.
fn s3_server(root: &Path) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        while let Ok((sock, _)) = listener.accept().await {
            // Without it, keep-alive requests stall ~40 ms each.
            let _ = sock.set_nodelay(true);
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(sock), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    (addr, rt)
}

/// The CLI, talking to the server at `addr` with `secret`.
fn s3_cmd(env: &Env, addr: SocketAddr, secret: &str) -> Command {
    let mut c = env.cmd();
    c.env("AWS_ENDPOINT_URL", format!("http://{addr}"))
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", env.p("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.p("no-aws-credentials"))
        .env("LAZYSNAP_S3_PATH_STYLE", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    c
}

struct S3Env {
    env: Env,
    addr: SocketAddr,
    root: PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl S3Env {
    fn new() -> S3Env {
        let env = Env::new();
        let root = env.p("s3");
        fs::create_dir_all(root.join("snaps")).expect("bucket");
        // No profile of this machine's leaks into the tests.
        fs::write(env.p("no-aws-config"), b"").expect("write");
        fs::write(env.p("no-aws-credentials"), b"").expect("write");
        let (addr, rt) = s3_server(&root);
        S3Env {
            env,
            addr,
            root,
            _rt: rt,
        }
    }
    fn cmd(&self) -> Command {
        s3_cmd(&self.env, self.addr, SK)
    }
    /// Where the server keeps object `name` of the store.
    fn object(&self, name: &str) -> PathBuf {
        self.root.join(format!("snaps/ws/{name}.tar.zst"))
    }
}

const STORE: &str = "s3://snaps/ws";

#[test]
fn every_command_works_against_s3() {
    let s3 = S3Env::new();
    let src = fidelity_src(s3.env.tmp.path(), "src", FidelityOpts::FAST);
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", STORE, "--name", "base"]),
    );
    assert!(s3.object("base").exists(), "no object in the bucket");
    // Stock tools restore the object the server holds.
    let stock = s3.env.p("stock");
    fs::create_dir(&stock).expect("mkdir");
    stock_extract_into(&s3.object("base"), &stock);
    assert_trees_equal(&src, &stock);

    let o = run_ok(s3.cmd().args(["list", "--store", STORE]));
    assert_eq!(listed_names(&o), ["base"]);
    run_ok(s3.cmd().args(["inspect", "base", "--store", STORE]));
    // A trace-level log holds no secret, signature or credential.
    let o = run_ok(
        s3.cmd()
            .args(["verify", "base", "--store", STORE])
            .env("RUST_LOG", "trace"),
    );
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
    let o = run_ok(
        s3.cmd()
            .args(["cat", "base", paths::ONE_BYTE, "--store", STORE, "--stats"]),
    );
    assert_eq!(o.stdout, fs::read(src.join(paths::ONE_BYTE)).expect("read"));
    let out = s3.env.p("out");
    run_ok(s3.cmd().args(["extract", "base"]).arg(&out).args(["--store", STORE]));
    assert_trees_equal(&src, &out);

    // A diff, and the chain read back.
    fs::write(src.join("added-in-s3"), b"new").expect("write");
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", STORE, "--name", "next", "--parent", "base"]),
    );
    let o = run_ok(s3.cmd().args(["diff", "next", "--store", STORE]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "A added-in-s3\n");
    let out2 = s3.env.p("out2");
    run_ok(s3.cmd().args(["extract", "next"]).arg(&out2).args(["--store", STORE]));
    assert_trees_equal(&src, &out2);

    // rm: refused while a diff needs it, then the diff, then with --force.
    let o = run_fail(s3.cmd().args(["rm", "base", "--store", STORE]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the diff next was made on it"),
        "{o:?}"
    );
    assert!(s3.object("base").exists());

    // A name is never overwritten.
    let o = run_fail(
        s3.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", STORE, "--name", "base"]),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));

    if !require_fuse() {
        return;
    }
    // A lazy mount of the chain, and a writable mount saved back to S3.
    let m = s3.env.p("ro");
    fs::create_dir(&m).expect("mkdir");
    run_ok(
        s3.cmd()
            .args(["mount", "next"])
            .arg(&m)
            .args(["--store", STORE, "--read-only"]),
    );
    let cmp = compare_trees(&src, &m);
    run_ok(s3.cmd().arg("umount").arg(&m));
    cmp.expect("mounted chain");
    let w = s3.env.p("rw");
    fs::create_dir(&w).expect("mkdir");
    run_ok(s3.cmd().args(["mount", "next"]).arg(&w).args(["--store", STORE]));
    fs::write(w.join("saved-to-s3"), b"x").expect("write");
    let saved = s3
        .cmd()
        .arg("save")
        .arg(&w)
        .args(["--name", "saved"])
        .output()
        .expect("save");
    let live = s3.env.p("live-copy");
    sh(&format!("cp -a '{}' '{}'", w.display(), live.display()));
    run_ok(s3.cmd().arg("umount").arg(&w));
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    let back = s3.env.p("back");
    run_ok(s3.cmd().args(["extract", "saved"]).arg(&back).args(["--store", STORE]));
    compare_trees_opts(&live, &back, CompareOpts::LIVE).expect("saved == live");
}

#[test]
fn a_wrong_secret_is_denied_and_a_replaced_object_is_never_mixed() {
    let s3 = S3Env::new();
    let t = s3.env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), vec![1u8; 3 << 20]).expect("write");
    run_ok(
        s3.cmd()
            .arg("create")
            .arg(&t)
            .args(["--store", STORE, "--name", "s", "--frame-size", "64KiB"]),
    );

    let t0 = std::time::Instant::now();
    let o = run_fail(s3_cmd(&s3.env, s3.addr, "not-the-secret").args(["inspect", "s", "--store", STORE]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 403") && err.lines().count() == 1, "{err}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
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
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://{}", s3.addr));
    std::env::set_var("AWS_ACCESS_KEY_ID", AK);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SK);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("LAZYSNAP_S3_PATH_STYLE", "1");
    let store = lazysnap::store::Store::open(STORE).expect("store");
    let snap = rt
        .block_on(lazysnap::snapshot::Snapshot::open(&store, "s"))
        .expect("open");
    fs::write(t.join("f"), vec![2u8; 3 << 20]).expect("write");
    fs::remove_file(s3.object("s")).expect("rm");
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
fn uploads_in_progress(s3: &S3Env) -> (usize, usize) {
    let server = fs::read_dir(&s3.root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
                .count()
        })
        .unwrap_or(0);
    let records = fs::read_dir(s3.root.join("snaps/ws/.lazysnap-uploads"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    (server, records)
}

#[test]
fn an_upload_killed_midway_is_aborted_by_the_next_save() {
    let s3 = S3Env::new();
    let t = s3.env.p("t");
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
    let t0 = std::time::Instant::now();
    while uploads_in_progress(&s3).1 == 0 && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY (test): killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let left = uploads_in_progress(&s3);
    assert!(left.0 > 0 && left.1 == 1, "no upload in progress to kill: {left:?}");
    assert!(!s3.object("killed").exists(), "a killed save published");

    // The next save to the store aborts it.
    let small = s3.env.p("small");
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
    let s3 = S3Env::new();
    let t = s3.env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), b"through the shaper").expect("write");
    run_ok(s3.cmd().arg("create").arg(&t).args(["--store", STORE, "--name", "s"]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let shape = lazysnap::shaper::LinkShape {
        rtt: std::time::Duration::from_millis(2),
        bandwidth: None,
    };
    let listen = "127.0.0.1:0".parse().expect("addr");
    let sh = rt
        .block_on(lazysnap::shaper::Shaper::start(listen, s3.addr, shape))
        .expect("shaper");
    let via = |mut c: Command| {
        c.env("AWS_ENDPOINT_URL", format!("http://{}", sh.addr()));
        c
    };
    sh.faults().fail_next.store(2, Relaxed);
    let o = run_ok(via(s3.cmd()).args(["cat", "s", "f", "--store", STORE]));
    assert_eq!(o.stdout, b"through the shaper");
    assert_eq!(sh.faults().fail_next.load(Relaxed), 0, "no 503 was served");

    sh.faults().stall.store(true, Relaxed);
    let t0 = std::time::Instant::now();
    let o = run_fail(via(s3.cmd()).args(["cat", "s", "f", "--store", STORE, "--read-timeout", "2"]));
    sh.faults().stall.store(false, Relaxed);
    assert!(t0.elapsed() < std::time::Duration::from_secs(15), "{:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("timed out"), "{err}");
}

/// `len` incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A shaping proxy in front of the test server, with `rtt`, on a runtime
/// of its own (kept alive with it).
fn shaper(s3: &S3Env, rtt: std::time::Duration) -> (lazysnap::shaper::Shaper, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let shape = lazysnap::shaper::LinkShape { rtt, bandwidth: None };
    let listen = "127.0.0.1:0".parse().expect("addr");
    let sh = rt
        .block_on(lazysnap::shaper::Shaper::start(listen, s3.addr, shape))
        .expect("shaper");
    (sh, rt)
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
    let s3 = S3Env::new();
    let t = s3.env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("big"), noise(12 * SMALL_PART - (1 << 20), 7)).expect("write");
    fs::write(t.join("small"), b"and a small one").expect("write");
    let rtt = std::time::Duration::from_millis(300);
    let (sh, _rt) = shaper(&s3, rtt);
    let create = |name: &str, in_flight: usize| {
        let mut c = s3.cmd();
        c.env("AWS_ENDPOINT_URL", format!("http://{}", sh.addr()))
            .env("LAZYSNAP_S3_PART_SIZE", SMALL_PART.to_string())
            .env("LAZYSNAP_S3_PARTS_IN_FLIGHT", in_flight.to_string())
            .env("RUST_LOG", "lazysnap::store::s3=debug")
            .arg("create")
            .arg(&t)
            .args(["--store", STORE, "--name", name]);
        let t0 = std::time::Instant::now();
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
    let out = s3.env.p("out");
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
    let s3 = S3Env::new();
    let t = s3.env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("big"), noise(10 * SMALL_PART, 11)).expect("write");
    // Latency, so the test sees the upload's id before part 6 is sent.
    let (sh, _rt) = shaper(&s3, std::time::Duration::from_millis(300));
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
    let records = s3.root.join("snaps/ws/.lazysnap-uploads");
    let t0 = std::time::Instant::now();
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
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "no upload started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let blocker = s3.root.join(format!(".upload_id-{id}.part-6"));
    fs::create_dir(&blocker).expect("mkdir");
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the create succeeded");
    assert!(err.contains("ws/failing.tar.zst (part 6)"), "{err}");
    fs::remove_dir(&blocker).expect("rmdir");
    assert!(!s3.object("failing").exists(), "a failed upload published");
    assert_eq!(uploads_in_progress(&s3), (0, 0), "the failed upload is still there");
}
