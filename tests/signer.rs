//! The signer service, as a pod sees it: `lazysnap signer` runs as a
//! subprocess in front of the in-process S3 server, and these tests drive
//! its HTTP API with a plain HTTP client and read through what it hands
//! out with no credential at all. Every signer runs at `RUST_LOG=trace`,
//! and its log never holds a token, the secret key or a URL's signature.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::s3::{shaper, SK};
use common::signer::{write_tokens, SignerProc};
use common::*;
use serde_json::{json, Value};

const READ: &str = "read-token-5b1f0c9e7a";
const WRITE: &str = "write-token-c3d2e8a6f4";

/// What a signer's log may never hold.
fn assert_clean_log(log: &str, tokens: &[&str]) {
    let mut secrets = vec![SK, "X-Amz-", "Signature=", "Credential=", "Bearer"];
    secrets.extend_from_slice(tokens);
    for s in secrets {
        assert!(!log.contains(s), "the signer's log shows {s:?}:\n{log}");
    }
}

/// A plain HTTP client of the signer's API.
struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api::with(format!("http://{addr}"), reqwest::Client::new())
    }

    fn with(base: String, http: reqwest::Client) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Api { rt, http, base }
    }

    /// `METHOD PATH` with `token` and a JSON body: (status, JSON answer).
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string().into_bytes()))
    }

    fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let text = resp.bytes().await.expect("body");
            let v = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&text)));
            (status, v)
        })
    }

    /// PUT `data` to a presigned part URL: (status, ETag).
    fn put(&self, url: &str, data: Vec<u8>) -> (u16, Option<String>) {
        self.rt.block_on(async {
            let resp = self.http.put(url).body(data).send().await.expect("put");
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (resp.status().as_u16(), etag)
        })
    }
}

/// A call and the error it must get: method, path, token, body, status,
/// code.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, u16, &'a str);

/// One request written by hand, its path exactly as given: (status, JSON).
fn raw_request(addr: SocketAddr, method: &str, path: &str, token: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: signer\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    sock.read_to_string(&mut answer).expect("answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {answer}")),
    )
}

/// The error code of a failed call (and a check that the body is the
/// documented error shape).
fn code(v: &Value) -> &str {
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error body with a message: {v}"
    );
    v["error"]["code"].as_str().expect("an error code")
}

/// Ask for `name`'s spec, then extract through it with no credential.
fn extract_via_signer(env: &Env, api: &Api, name: &str, dest: &str) -> PathBuf {
    let (st, spec) = api.call("POST", "/v1/spec", Some(READ), Some(json!({ "name": name })));
    assert_eq!(st, 200, "{spec}");
    let file = env.p(&format!("{dest}.spec.json"));
    fs::write(&file, spec.to_string()).expect("write spec");
    let out = env.p(dest);
    run_ok(env.no_credential().args(["extract", "--spec"]).arg(&file).arg(&out));
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Healthz; a spec of a snapshot in the prefix reads with no credential;
/// a fork whose parent lies outside the prefix works, until that parent is
/// replaced; the listing shows the prefix only; and every scope violation
/// is a 4xx JSON error while the store refuses everything (so none of
/// them asked it anything: a call that does is a 502).
#[test]
fn specs_listing_and_scope() {
    let env = Env::with_access(Access::S3);
    let src = fidelity_src(env.tmp.path(), "src", FidelityOpts::FAST);
    env.create(&src, "org/repo/main");
    let base = env.p("base");
    fs::create_dir(&base).expect("mkdir");
    fs::write(base.join("kept"), b"from the shared base").expect("write");
    fs::write(base.join("changed"), b"old").expect("write");
    env.create(&base, "shared/base");
    fs::write(base.join("changed"), b"new in the fork").expect("write");
    env.create_with(&base, "org/repo/fork", &["--parent", "shared/base"]);

    let (proxy, _proxy_rt) = shaper(env.s3().addr, Duration::ZERO);
    let tokens = env.p("tokens.json");
    write_tokens(
        &tokens,
        &[(READ, "org/repo/", "read"), (WRITE, "org/repo/", "read-write")],
    );
    let signer = SignerProc::start(&env, env.cmd_via(proxy.addr(), SK), &tokens, &[]);
    let api = Api::new(signer.addr);

    assert_eq!(
        api.call("GET", "/healthz", None, None),
        (200, json!({"status": "ok", "versions": ["v1"]}))
    );

    // A spec, asked for longer than the signer allows: clamped to 15 min.
    let (st, spec) = api.call(
        "POST",
        "/v1/spec",
        Some(READ),
        Some(json!({"name": "org/repo/main", "expires_secs": 7200})),
    );
    assert_eq!(st, 200, "{spec}");
    let url = spec["layers"][0]["url"].as_str().expect("url");
    assert!(url.contains("X-Amz-Expires=900"), "clamped to the signer's 15 min");
    assert_trees_equal(&src, &extract_via_signer(&env, &api, "org/repo/main", "main-out"));

    // A fork across keys: its parent is outside the prefix, named by the
    // fork's index (and its digest).
    let (_, spec) = api.call("POST", "/v1/spec", Some(READ), Some(json!({"name": "org/repo/fork"})));
    let names: Vec<&str> = spec["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["org/repo/fork", "shared/base"]);
    assert_trees_equal(&base, &extract_via_signer(&env, &api, "org/repo/fork", "fork-out"));

    // The listing: the prefix only, with sizes.
    let (st, list) = api.call("GET", "/v1/snapshots", Some(READ), None);
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["prefix"], "org/repo/");
    let listed: Vec<(String, u64)> = list["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                s["size"].as_u64().expect("size"),
            )
        })
        .collect();
    let size = |n: &str| fs::metadata(env.object_file(n)).expect("stat").len();
    assert_eq!(
        listed,
        [
            ("org/repo/fork".to_string(), size("org/repo/fork")),
            ("org/repo/main".to_string(), size("org/repo/main"))
        ]
    );

    // Scope violations, with the store refusing every request: each is a
    // 4xx with a JSON error, so none of them reached the store.
    proxy.faults().deny.store(true, std::sync::atomic::Ordering::Relaxed);
    // (Open connections are closed within ~20 ms.)
    std::thread::sleep(Duration::from_millis(200));
    let (st, v) = api.call("GET", "/v1/snapshots", Some(READ), None);
    assert_eq!(
        (st, code(&v)),
        (502, "store"),
        "a call that reaches the store fails now"
    );
    let long = format!("org/repo/{}", "x".repeat(600));
    let spec_of = |name: &str| Some(json!({ "name": name }));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("other/x"),
            403,
            "outside_prefix",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("shared/base"),
            403,
            "outside_prefix",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("org/repo-evil/x"),
            403,
            "outside_prefix",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("org/repo"),
            403,
            "outside_prefix",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("org/repo/../../shared/base"),
            400,
            "bad_name",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("/org/repo/main"),
            400,
            "bad_name",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("org/repo//main"),
            400,
            "bad_name",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            spec_of("org/repo/ma\u{1}in"),
            400,
            "bad_name",
        ),
        ("POST", "/v1/spec", Some(READ), spec_of(&long), 400, "bad_name"),
        ("POST", "/v1/spec", None, spec_of("org/repo/main"), 401, "unauthorized"),
        (
            "POST",
            "/v1/spec",
            Some("not-a-token"),
            spec_of("org/repo/main"),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/spec",
            Some(READ),
            Some(json!({"nam": "x"})),
            400,
            "bad_request",
        ),
        ("GET", "/v1/spec", Some(READ), None, 405, "method_not_allowed"),
        ("GET", "/v1/nothing", Some(READ), None, 404, "no_route"),
        ("GET", "/v1/snapshots", None, None, 401, "unauthorized"),
        (
            "POST",
            "/v1/uploads",
            Some(READ),
            spec_of("org/repo/new"),
            403,
            "forbidden",
        ),
        (
            "POST",
            "/v1/uploads",
            Some(WRITE),
            spec_of("other/new"),
            403,
            "outside_prefix",
        ),
        (
            "DELETE",
            "/v1/snapshots/org/repo/main",
            Some(READ),
            None,
            403,
            "forbidden",
        ),
        (
            "DELETE",
            "/v1/snapshots/shared/base",
            Some(WRITE),
            None,
            403,
            "outside_prefix",
        ),
        (
            "DELETE",
            "/v1/snapshots/org/repo/%00x",
            Some(WRITE),
            None,
            400,
            "bad_name",
        ),
        (
            "DELETE",
            "/v1/snapshots/org/repo/%zz",
            Some(WRITE),
            None,
            400,
            "bad_name",
        ),
    ];
    for (method, path, token, body, status, want) in cases {
        let (st, v) = api.call(method, path, token, body.clone());
        assert_eq!((st, code(&v)), (status, want), "{method} {path} {body:?}: {v}");
    }
    // Paths as sent, not as an HTTP client would normalise them.
    for path in [
        "/v1/snapshots/org/repo/../../shared/base",
        "/v1/snapshots/org/repo/%2E%2E/%2E%2E/shared/base",
        "/v1/snapshots//org/repo/x",
        "/v1/snapshots/org/repo/x/",
    ] {
        let (st, v) = raw_request(signer.addr, "DELETE", path, WRITE);
        assert_eq!((st, code(&v)), (400, "bad_name"), "{path}: {v}");
    }
    // A body over the limit: read (not reset mid-write), then 413; the
    // signer goes on answering.
    let (st, body) = api.rt.block_on(async {
        let resp = api
            .http
            .post(format!("{}/v1/spec", api.base))
            .bearer_auth(READ)
            .header("content-type", "application/json")
            .body(vec![b' '; 3 << 20])
            .send()
            .await
            .expect("an answer, not a broken pipe");
        (resp.status().as_u16(), resp.bytes().await.unwrap_or_default())
    });
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((st, code(&v)), (413, "too_large"));
    assert_eq!(api.call("GET", "/healthz", None, None).0, 200);
    let encoded = format!("/v1/snapshots/{}", percent_encode("org/repo/a\u{7}b"));
    let (st, v) = api.call("DELETE", &encoded, Some(WRITE), None);
    assert_eq!((st, code(&v)), (400, "bad_name"), "{v}");
    proxy.faults().deny.store(false, std::sync::atomic::Ordering::Relaxed);

    // The fork's parent replaced by another snapshot of the same name: its
    // digest is not the one the fork names, so no spec.
    run_ok(env.store_cmd("rm", "shared/base").arg("--force"));
    fs::write(base.join("kept"), b"someone else's base").expect("write");
    env.create(&base, "shared/base");
    let (st, v) = api.call("POST", "/v1/spec", Some(READ), spec_of("org/repo/fork"));
    assert_eq!((st, code(&v)), (422, "corrupt"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("index digest")),
        "{v}"
    );

    let log = signer.log();
    assert!(log.contains("POST /v1/spec prefix=org/repo/ 200"), "{log}");
    assert!(
        log.contains("POST /v1/spec prefix=org/repo/ 403 outside_prefix"),
        "{log}"
    );
    assert_clean_log(&log, &[READ, WRITE, "not-a-token"]);
}

/// The records of uploads in progress the store keeps.
fn upload_records(env: &Env) -> usize {
    fs::read_dir(env.s3().object_file("ws/.lazysnap-uploads"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Upload `data` as `name` through the signer, part by part (the last
/// part's URL asked for again through `/v1/uploads/parts`), then complete
/// declaring `size` and `digest`: the complete's answer.
fn upload(env: &Env, api: &Api, name: &str, data: &[u8], size: u64, digest: &str) -> (u16, Value) {
    let (st, up) = api.call(
        "POST",
        "/v1/uploads",
        Some(WRITE),
        Some(json!({"name": name, "size_hint": data.len()})),
    );
    assert_eq!(st, 200, "{up}");
    assert_eq!(upload_records(env), 1, "recorded before any part URL is used");
    let id = up["upload_id"].as_str().expect("id");
    let part_size = up["part_size"].as_u64().expect("part size") as usize;
    let urls = up["part_urls"].as_array().expect("part urls");
    let chunks: Vec<&[u8]> = data.chunks(part_size).collect();
    assert_eq!(urls.len(), chunks.len(), "as many URLs as the size hint needs");
    let mut parts = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let n = i as u32 + 1;
        let mut url = urls[i]["url"].as_str().expect("url").to_string();
        if i + 1 == chunks.len() {
            let (st, more) = api.call(
                "POST",
                "/v1/uploads/parts",
                Some(WRITE),
                Some(json!({"name": name, "upload_id": id, "first": n, "count": 1})),
            );
            assert_eq!(st, 200, "{more}");
            assert_eq!(more["part_urls"][0]["part"], n);
            url = more["part_urls"][0]["url"].as_str().expect("url").to_string();
        }
        let (st, etag) = api.put(&url, chunk.to_vec());
        assert_eq!(st, 200, "part {n}");
        parts.push(json!({"part": n, "etag": etag.expect("an ETag")}));
    }
    api.call(
        "POST",
        "/v1/uploads/complete",
        Some(WRITE),
        Some(json!({"name": name, "upload_id": id, "parts": parts, "size": size, "index_digest": digest})),
    )
}

/// A snapshot made by `create` into a local store goes up through the
/// signer's presigned multipart upload (5 MiB parts), and reads back
/// through a spec; a complete whose size or index digest is not the
/// object's leaves nothing; an id only works with its own name; abort
/// removes the upload and its record; deletes need the right to write.
#[test]
fn presigned_multipart_uploads() {
    let env = Env::with_access(Access::S3);
    let src = env.p("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("noise.bin"), noise(12 << 20, 7)).expect("write");
    fs::write(src.join("small.txt"), b"hello").expect("write");
    let local = env.p("local");
    run_ok(
        lazysnap()
            .arg("create")
            .arg(&src)
            .arg("--store")
            .arg(&local)
            .args(["--name", "org/repo/up"]),
    );
    let data = fs::read(local.join("org/repo/up.tar.zst")).expect("object");
    assert!(data.len() > 10 << 20, "three parts of 5 MiB");
    let out = run_ok(
        lazysnap()
            .args(["inspect", "org/repo/up", "--json", "--store"])
            .arg(&local),
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    let digest = info["index_digest"].as_str().expect("digest").to_string();

    let tokens = env.p("tokens.json");
    write_tokens(
        &tokens,
        &[(READ, "org/repo/", "read"), (WRITE, "org/repo/", "read-write")],
    );
    let signer = SignerProc::start(&env, env.cmd(), &tokens, &["--part-size", "5MiB"]);
    let api = Api::new(signer.addr);
    let len = data.len() as u64;

    // Declared wrong: refused, and nothing is left behind.
    let (st, v) = upload(&env, &api, "org/repo/up", &data, len + 1, &digest);
    assert_eq!((st, code(&v)), (422, "mismatch"), "{v}");
    let (st, v) = upload(&env, &api, "org/repo/up", &data, len, &"0".repeat(digest.len()));
    assert_eq!((st, code(&v)), (422, "mismatch"), "{v}");
    assert!(!env.object_file("org/repo/up").exists(), "a refused object is deleted");
    assert_eq!(upload_records(&env), 0);

    // Declared right: saved, byte for byte, and readable through a spec.
    let (st, v) = upload(&env, &api, "org/repo/up", &data, len, &digest);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"name": "org/repo/up", "size": len, "index_digest": digest}));
    assert_eq!(fs::read(env.object_file("org/repo/up")).expect("saved"), data);
    assert_eq!(upload_records(&env), 0, "a completed upload's record is gone");
    assert_trees_equal(&src, &extract_via_signer(&env, &api, "org/repo/up", "up-out"));

    // Never over an existing snapshot.
    let (st, v) = api.call("POST", "/v1/uploads", Some(WRITE), Some(json!({"name": "org/repo/up"})));
    assert_eq!((st, code(&v)), (409, "exists"), "{v}");

    // An upload id works only with the name it was made for; abort.
    let (st, up) = api.call(
        "POST",
        "/v1/uploads",
        Some(WRITE),
        Some(json!({"name": "org/repo/other"})),
    );
    assert_eq!(st, 200, "{up}");
    assert_eq!(
        up["part_urls"].as_array().map(Vec::len),
        Some(16),
        "no size hint: 16 URLs"
    );
    let id = up["upload_id"].as_str().expect("id");
    let (st, _) = api.put(up["part_urls"][0]["url"].as_str().expect("url"), vec![1; 1000]);
    assert_eq!(st, 200);
    assert!(env.s3().uploads_in_progress() >= 1, "the server holds the upload");
    let body = |name: &str| json!({"name": name, "upload_id": id, "first": 1, "count": 1});
    let (st, v) = api.call("POST", "/v1/uploads/parts", Some(WRITE), Some(body("org/repo/up")));
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    let (st, v) = api.call(
        "POST",
        "/v1/uploads/abort",
        Some(WRITE),
        Some(json!({"name": "org/repo/up", "upload_id": id})),
    );
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    let made_up = json!({"name": "org/repo/other", "upload_id": "made-up", "first": 1, "count": 1});
    let (st, v) = api.call("POST", "/v1/uploads/parts", Some(WRITE), Some(made_up));
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    let (st, v) = api.call(
        "POST",
        "/v1/uploads/abort",
        Some(WRITE),
        Some(json!({"name": "org/repo/other", "upload_id": id})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(env.s3().uploads_in_progress(), 0, "aborted on the server");
    assert_eq!(upload_records(&env), 0, "and its record is gone");
    let (st, v) = api.call("POST", "/v1/uploads/parts", Some(WRITE), Some(body("org/repo/other")));
    assert_eq!((st, code(&v)), (404, "not_found"), "an aborted upload is gone: {v}");

    // Delete: a read token may not; a diff's parent is kept; then gone.
    let (st, v) = api.call("DELETE", "/v1/snapshots/org/repo/up", Some(READ), None);
    assert_eq!((st, code(&v)), (403, "forbidden"), "{v}");
    env.create_with(&src, "elsewhere/child", &["--parent", "org/repo/up"]);
    let (st, v) = api.call("DELETE", "/v1/snapshots/org/repo/up", Some(WRITE), None);
    assert_eq!((st, code(&v)), (409, "refused"), "a diff elsewhere needs it: {v}");
    run_ok(&mut env.store_cmd("rm", "elsewhere/child"));
    let (st, v) = api.call("DELETE", "/v1/snapshots/org/repo/up", Some(WRITE), None);
    assert_eq!((st, v), (200, json!({"name": "org/repo/up"})));
    assert!(!env.object_file("org/repo/up").exists());

    let log = signer.log();
    assert!(
        log.contains("POST /v1/uploads/complete prefix=org/repo/ 422 mismatch"),
        "{log}"
    );
    assert_clean_log(&log, &[READ, WRITE]);
}

/// `kill -HUP` re-reads the token file: a token added works; a broken
/// file keeps the old table (and says so in the log).
#[test]
fn sighup_reloads_the_token_file() {
    let env = Env::with_access(Access::S3);
    let tokens = env.p("tokens.json");
    write_tokens(&tokens, &[(READ, "org/repo/", "read")]);
    let signer = SignerProc::start(&env, env.cmd(), &tokens, &[]);
    let api = Api::new(signer.addr);
    let status = |t: &str| api.call("GET", "/v1/snapshots", Some(t), None).0;
    assert_eq!((status(READ), status(WRITE)), (200, 401));

    write_tokens(
        &tokens,
        &[(READ, "org/repo/", "read"), (WRITE, "org/other/", "read-write")],
    );
    signer.signal(libc::SIGHUP);
    let t0 = Instant::now();
    while status(WRITE) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the new token never worked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, v) = api.call("GET", "/v1/snapshots", Some(WRITE), None);
    assert_eq!(v["prefix"], "org/other/");

    fs::write(&tokens, "{\"version\": 1, \"tokens\": [").expect("write");
    signer.signal(libc::SIGHUP);
    let t0 = Instant::now();
    while !signer.log().contains("not reloaded") {
        assert!(t0.elapsed() < Duration::from_secs(10), "no log line for the bad file");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((status(READ), status(WRITE)), (200, 200), "the old tokens stay");
    assert_clean_log(&signer.log(), &[READ, WRITE]);
}

/// With `--tls-cert` and `--tls-key` the signer speaks HTTPS only.
#[test]
fn tls() {
    let env = Env::with_access(Access::S3);
    let (cert, key) = (env.p("cert.pem"), env.p("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let tokens = env.p("tokens.json");
    write_tokens(&tokens, &[(READ, "org/repo/", "read")]);
    let tls_args = [
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ];
    let signer = SignerProc::start(&env, env.cmd(), &tokens, &tls_args);
    let root = reqwest::Certificate::from_pem(&fs::read(&cert).expect("cert")).expect("pem");
    let http = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    let api = Api::with(format!("https://{}", signer.addr), http);
    assert_eq!(api.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(api.call("GET", "/v1/snapshots", Some(READ), None).0, 200);
    let plain = Api::new(signer.addr);
    let refused = plain
        .rt
        .block_on(plain.http.get(format!("{}/healthz", plain.base)).send());
    assert!(refused.is_err(), "plain HTTP is not served");
    // A key that is not the certificate's: refused at start.
    let other = env.p("other.pem");
    run_ok(Command::new("openssl").args(["genrsa", "-out"]).arg(&other).arg("2048"));
    let out = run_fail(
        env.cmd()
            .args(["signer", "--listen", "127.0.0.1:0", "--store", &env.store(), "--tokens"])
            .arg(&tokens)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&other),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not go together"));
}
