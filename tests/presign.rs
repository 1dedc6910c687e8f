//! Reading with no credential: mount specs from `presign`, hand-written
//! specs naming any presigned GET URL, and stock `.tar`, `.tar.gz` and
//! `.tar.zst` archives behind a presigned URL (import and extract stream
//! them). Every command here runs at `RUST_LOG=trace`, and nothing it
//! prints or logs (a mount daemon's log included) holds a URL's query, a
//! signature, a credential or the secret key.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::s3::{shaper, BUCKET, SK};
use common::*;

/// What no output or log may hold: the secret key, and what a presigned
/// URL's query carries.
const SECRETS: [&str; 7] = [
    SK,
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "Signature=",
    "Credential=",
    "X-Amz-Date=",
];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows {s:?}:\n{text}");
    }
}

/// Runs `cmd` at trace level; its stdout and stderr hold no secret.
fn traced(cmd: &mut Command, ok: bool) -> Output {
    cmd.env("RUST_LOG", "trace");
    let o = if ok { run_ok(cmd) } else { run_fail(cmd) };
    assert_no_secret("stderr", &String::from_utf8_lossy(&o.stderr));
    assert_no_secret("stdout", &String::from_utf8_lossy(&o.stdout));
    o
}

fn spec_env() -> Env {
    Env::with_access(Access::Spec)
}

/// `presign` writes a private spec naming, per layer and top first, URL,
/// size, ETag, index digest and location, and expiry; every read command
/// works through it with no credential; a mount through it opens in one
/// exact read per layer, and its daemon's trace log is clean too.
#[test]
fn a_presigned_spec_reads_a_chain_with_no_credential() {
    let mut env = spec_env();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    env.create(&src, "p/base");
    fs::write(src.join("added"), b"in the diff").expect("write");
    env.create_with(&src, "p/top", &["--parent", "p/base"]);

    let spec = env.spec("p/top");
    let mode = fs::metadata(&spec).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the spec holds secrets");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&spec).expect("read")).expect("json");
    assert_eq!(json["kind"], "lazysnap-mount-spec");
    assert_eq!(json["version"], 1);
    let layers = json["layers"].as_array().expect("layers");
    let names: Vec<_> = layers.iter().map(|l| l["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["p/top", "p/base"]);
    for l in layers {
        let name = l["name"].as_str().expect("name");
        let size = fs::metadata(env.object_file(name)).expect("stat").len();
        assert_eq!(l["size"].as_u64(), Some(size), "{l}");
        assert!(l["etag"].as_str().is_some_and(|e| e.len() > 2), "{l}");
        assert!(
            l["index_digest"]
                .as_str()
                .is_some_and(|d| d.len() >= 32 && d.bytes().all(|b| b.is_ascii_hexdigit())),
            "{l}"
        );
        let (off, len) = (
            l["index_offset"].as_u64().expect("off"),
            l["index_len"].as_u64().expect("len"),
        );
        assert!(off + len < size, "{l}");
        assert!(l["expires"].as_str().is_some_and(|e| e.ends_with('Z')), "{l}");
        assert!(l["url"].as_str().is_some_and(|u| u.contains("X-Amz-Signature")), "{l}");
    }

    let o = traced(env.read_cmd("cat", "p/top").arg("added"), true);
    assert_eq!(o.stdout, b"in the diff");
    let o = traced(&mut env.read_cmd("ls", "p/top"), true);
    assert!(String::from_utf8_lossy(&o.stdout).contains("added"));
    for sub in ["inspect", "verify", "log"] {
        traced(&mut env.read_cmd(sub, "p/top"), true);
    }
    let out = env.p("out");
    traced(env.read_cmd("extract", "p/top").arg(&out), true);
    assert_trees_equal(&src, &out);

    if !require_fuse() {
        return;
    }
    let m = env.p("mnt");
    fs::create_dir(&m).expect("mkdir");
    traced(env.read_cmd("mount", "p/top").arg(&m).arg("--read-only"), true);
    env.mounts.push(m.clone());
    let stats = env.stats(&m);
    // One exact read per layer opens the chain.
    assert_eq!(stats["requests"].as_u64(), Some(2), "{stats}");
    assert_trees_equal(&src, &m);
    // (The log goes with a clean unmount: read it first.)
    let log = fs::read_to_string(stats["mount"]["log"].as_str().expect("log")).expect("daemon log");
    env.umount(&m);
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the daemon did not log below info: {log}"
    );
    assert_no_secret("the mount daemon's log", &log);
}

/// A spec written by hand, naming only a layer's name and a presigned GET
/// URL the AWS SDK made (not lazysnap): everything else is learned from
/// the object, and it reads like any other.
#[test]
fn a_hand_written_spec_takes_any_presigned_get_url() {
    let mut env = spec_env();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    env.create(&src, "hand");
    let url = env
        .s3()
        .presign_get(env.s3().addr, "ws/hand.tar.zst", Duration::from_secs(600));
    let spec = env.p("hand.json");
    let text = serde_json::json!({
        "kind": "lazysnap-mount-spec",
        "version": 1,
        "layers": [{ "name": "hand", "url": url }],
    });
    fs::write(&spec, text.to_string()).expect("write");
    let out = env.p("out");
    let read = |sub: &str| {
        let mut c = env.reader();
        c.arg(sub).arg("--spec").arg(&spec);
        c
    };
    traced(read("extract").arg(&out), true);
    assert_trees_equal(&src, &out);
    let o = traced(read("cat").arg(paths::DEEP_LEAF), true);
    assert_eq!(o.stdout, fs::read(src.join(paths::DEEP_LEAF)).expect("src"));
    if !require_fuse() {
        return;
    }
    let m = env.p("mnt");
    fs::create_dir(&m).expect("mkdir");
    traced(read("mount").arg(&m).arg("--read-only"), true);
    env.mounts.push(m.clone());
    let cmp = compare_trees(&src, &m);
    env.umount(&m);
    cmp.expect("a mount through a hand-written spec");
}

/// A URL past its expiry is one error line naming the layer and when it
/// expired (exit 1); an expiry longer than SigV4 allows is a usage error.
#[test]
fn an_expired_url_names_the_layer_and_when_it_expired() {
    let env = spec_env();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    env.create(&src, "short");
    let spec = env.p("short.json");
    traced(
        env.cmd()
            .args(["presign", "short", "--store", &env.store(), "--expires", "1s", "-o"])
            .arg(&spec),
        true,
    );
    std::thread::sleep(Duration::from_millis(2100));
    let o = traced(
        env.reader().args(["cat", "--spec"]).arg(&spec).arg(paths::ONE_BYTE),
        false,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().expect("an error line");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(last.starts_with("lazysnap: error: layer short ("), "{last}");
    assert!(last.contains("expired at 20"), "{last}");

    let o = run_fail(
        env.cmd()
            .args(["presign", "short", "--store", &env.store(), "--expires", "8d"]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// One HTTP server on loopback that answers every request `200 OK` with
/// the whole of `body`, as a server that ignores `Range` does; runs until
/// the test ends.
fn serve_whole(body: Vec<u8>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                head.push(b[0]);
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    addr
}

/// A server that answers a ranged GET with the whole object (200) is
/// refused, never read as if its bytes were the range.
#[test]
fn a_whole_object_answer_to_a_ranged_get_is_an_error() {
    let env = spec_env();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    env.create(&src, "whole");
    let addr = serve_whole(fs::read(env.object_file("whole")).expect("object"));
    let spec = env.p("whole.json");
    let text = serde_json::json!({
        "kind": "lazysnap-mount-spec",
        "version": 1,
        "layers": [{ "name": "whole", "url": format!("http://{addr}/whole.tar.zst?X-Amz-Signature=abc") }],
    });
    fs::write(&spec, text.to_string()).expect("write");
    let o = traced(env.reader().args(["ls", "--spec"]).arg(&spec), false);
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().expect("an error line");
    assert!(
        last.contains("layer whole") && last.contains("does not serve ranges"),
        "{last}"
    );
}

/// Archives made by stock tools, as the seed systems keep their caches
/// (`.tar`, `.tar.gz`, `.tar.zst`), behind presigned URLs: `extract URL`
/// and `import URL` stream them, with no local copy and no credential,
/// through a link that cuts one connection in the middle of each body.
#[test]
fn stock_archives_behind_presigned_urls_import_and_extract() {
    let env = spec_env();
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    let tar = tar_of(&src);
    let (sh, _rt) = shaper(env.s3().addr, Duration::from_millis(2));
    let archives = [
        ("cache.tar", tar.clone()),
        ("cache.tar.gz", pipe(Command::new("gzip").arg("-c"), &tar)),
        ("cache.tar.zst", pipe(Command::new("zstd").args(["-3", "-c"]), &tar)),
    ];
    for (key, bytes) in archives {
        let len = bytes.len();
        assert!(len > 1 << 20, "{key}: {len} bytes");
        let file = env.s3().root.join(BUCKET).join("legacy").join(key);
        fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
        fs::write(&file, bytes).expect("write");
        let url = env
            .s3()
            .presign_get(sh.addr(), &format!("legacy/{key}"), Duration::from_secs(600));

        let cuts = sh.faults().cuts.load(Relaxed);
        sh.faults().cut_once.store(len as u64 / 2, Relaxed);
        let out = env.p(&format!("x-{key}"));
        traced(env.reader().arg("extract").arg(&url).arg(&out), true);
        assert_eq!(sh.faults().cuts.load(Relaxed), cuts + 1, "{key}: no connection was cut");
        assert_trees_equal(&src, &out);

        let name = format!("imported/{}", key.replace('.', "-"));
        let store = env.p("local-store");
        let mut import = env.reader();
        import
            .arg("import")
            .arg(&url)
            .arg("--store")
            .arg(&store)
            .args(["--name", &name]);
        traced(&mut import, true);
        let out = env.p(&format!("i-{key}"));
        run_ok(env.reader().args(["extract", &name, "--store"]).arg(&store).arg(&out));
        assert_trees_equal(&src, &out);
    }
    // A URL that is not an archive: one line naming it, without its query.
    let url = env
        .s3()
        .presign_get(env.s3().addr, "ws/nothing-here.tar", Duration::from_secs(600));
    let out = env.p("x-missing");
    let o = traced(env.reader().arg("extract").arg(&url).arg(&out), false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().last().is_some_and(|l| l.contains("not found")), "{err}");
    assert!(!out.exists());
}

/// A trace log of S3 writes (a multipart upload, list, presign, rm) holds
/// no secret either.
#[test]
fn s3_writes_at_trace_level_hold_no_secret() {
    let env = spec_env();
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("noise"), noise(12 << 20, 3)).expect("write");
    let mut c = env.cmd();
    c.env("LAZYSNAP_S3_PART_SIZE", (5 << 20).to_string())
        .arg("create")
        .arg(&t)
        .args(["--store", &env.store(), "--name", "traced"]);
    traced(&mut c, true);
    traced(env.cmd().args(["list", "--store", &env.store()]), true);
    traced(
        env.cmd()
            .args(["presign", "traced", "--store", &env.store(), "-o"])
            .arg(env.p("traced.json")),
        true,
    );
    traced(env.cmd().args(["rm", "traced", "--store", &env.store()]), true);
    assert!(!Path::new(&env.object_file("traced")).exists());
}
