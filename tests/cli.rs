//! The command line as a user meets it, scripted: outputs compared, exit
//! codes, `--json` parsed. One line per error, in the right category, long
//! names shortened; RFC 3339 times and octal modes; help with examples,
//! sizes and the environment; logs for every command; completions and a
//! man page; a closed stdout ends a command quietly.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
        && s[..4].chars().all(|c| c.is_ascii_digit())
}

/// Exactly one line on stderr, starting `lazysnap: error: `.
fn one_error_line(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("lazysnap: error: "), "{e:?}");
    e
}

/// A store with `base` (a full snapshot: a dir, files, a symlink) and
/// `next`, a diff of it.
fn store_with_chain(env: &Env) {
    let t = env.p("t");
    fs::create_dir_all(t.join("dir")).expect("mkdir");
    for i in 0..400 {
        fs::write(t.join(format!("dir/file{i:03}")), format!("{i}")).expect("write");
    }
    fs::write(t.join("readme"), b"hello").expect("write");
    std::os::unix::fs::symlink("readme", t.join("link")).expect("symlink");
    env.create(&t, "base");
    fs::write(t.join("added"), b"new").expect("write");
    fs::remove_file(t.join("readme")).expect("rm");
    run_ok(
        env.cmd()
            .arg("create")
            .arg(&t)
            .args(["--store", &env.store(), "--name", "next", "--parent", "base"]),
    );
}

#[test]
fn outputs_times_and_json() {
    let env = Env::new();
    store_with_chain(&env);
    let st = env.store();

    // inspect: a date in text and JSON.
    let o = run_ok(env.cmd().args(["inspect", "base", "--store", &st]));
    let created = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("created:").map(|v| v.trim().to_string()));
    assert!(created.as_deref().is_some_and(is_rfc3339), "{}", stdout(&o));
    let o = run_ok(env.cmd().args(["inspect", "base", "--store", &st, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["created"].as_str().is_some_and(is_rfc3339), "{v}");

    // ls: octal modes and RFC 3339 mtimes, in text and JSON.
    let o = run_ok(env.cmd().args(["ls", "base", "--store", &st, "--json"]));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let readme = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["path"] == "readme")
        .expect("readme");
    assert_eq!(readme["mode"], "0644");
    assert!(readme["mtime"].as_str().is_some_and(is_rfc3339), "{readme}");
    let o = run_ok(env.cmd().args(["ls", "base", "--store", &st]));
    let line = stdout(&o)
        .lines()
        .find(|l| l.ends_with(" readme") && !l.contains("->"))
        .expect("readme line")
        .to_string();
    assert!(
        line.starts_with("file     0644") && line.split_whitespace().any(is_rfc3339),
        "{line}"
    );

    // list: kind, size, date, parent; --json.
    let o = run_ok(env.cmd().args(["list", "--store", &st]));
    let text = stdout(&o);
    let next = text.lines().find(|l| l.starts_with("next ")).expect("next");
    assert!(next.contains(" diff ") && next.contains("parent base"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("base ") && l.contains(" full ")),
        "{text}"
    );
    let o = run_ok(env.cmd().args(["list", "--store", &st, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[1]["name"], "next");
    assert_eq!(
        (v[1]["kind"].as_str(), v[1]["parent"].as_str()),
        (Some("diff"), Some("base"))
    );
    assert!(v[1]["size"].as_u64().is_some_and(|s| s > 0) && v[1]["created"].as_str().is_some_and(is_rfc3339));

    // log: dates in text, one time form in JSON.
    let o = run_ok(env.cmd().args(["log", "next", "--store", &st]));
    assert!(
        stdout(&o).lines().all(|l| l.split_whitespace().any(is_rfc3339)),
        "{}",
        stdout(&o)
    );
    let o = run_ok(env.cmd().args(["log", "next", "--store", &st, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .all(|e| e["created"].as_str().is_some_and(is_rfc3339)));

    // diff of one diff, and of any two snapshots.
    let o = run_ok(env.cmd().args(["diff", "next", "--store", &st]));
    assert_eq!(stdout(&o), "A added\nD readme\n");
    let o = run_ok(env.cmd().args(["diff", "next", "base", "--store", &st]));
    assert_eq!(stdout(&o), "D added\nA readme\n");

    // rm refuses a snapshot a diff needs; --force breaks the chain.
    let o = run_fail(env.cmd().args(["rm", "base", "--store", &st]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        one_error_line(&o).contains("the diff next was made on it; --force"),
        "{}",
        stderr(&o)
    );
    let o = run_ok(env.cmd().args(["rm", "base", "--store", &st, "--force"]));
    assert_eq!(stdout(&o), "deleted base; these diffs no longer open: next\n");
    let o = run_fail(env.cmd().args(["rm", "base", "--store", &st]));
    assert!(
        one_error_line(&o).contains("snapshot base in file://"),
        "{}",
        stderr(&o)
    );

    // log with a parent gone: the chain up to the break, then where it broke.
    let o = run_fail(env.cmd().args(["log", "next", "--store", &st]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("next "), "{}", stdout(&o));
    let e = one_error_line(&o);
    assert!(
        e.contains("parent base of snapshot next") && e.contains("breaks"),
        "{e}"
    );
}

#[test]
fn errors_are_one_line_in_the_right_category() {
    let env = Env::new();
    store_with_chain(&env);
    let st = env.store();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["umount".into(), env.p("nowhere").display().to_string()],
            1,
            "lazysnap mount at",
        ),
        (
            vec!["cat".into(), "base".into(), "link".into(), "--store".into(), st.clone()],
            1,
            "a symlink pointing to readme",
        ),
        (
            vec!["cat".into(), "base".into(), "nope".into(), "--store".into(), st.clone()],
            1,
            "nope in snapshot base: not found",
        ),
        (
            vec!["inspect".into(), "x".repeat(100_000), "--store".into(), st.clone()],
            2,
            "bad snapshot name",
        ),
        (
            vec!["list".into(), "--store".into(), env.p("typo").display().to_string()],
            1,
            "typo: not found",
        ),
        (
            vec![
                "create".into(),
                env.p("t").display().to_string(),
                "--store".into(),
                st.clone(),
                "--name".into(),
                "base".into(),
            ],
            1,
            "snapshot base: already exists",
        ),
        (
            vec![
                "create".into(),
                env.p("t").display().to_string(),
                "--store".into(),
                st.clone(),
                "--name".into(),
                "y".into(),
                "--frame-size".into(),
                "1TiB".into(),
            ],
            2,
            "--frame-size",
        ),
    ];
    for (args, code, want) in cases {
        let o = run_fail(env.cmd().args(&args));
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        assert_eq!(o.status.code(), Some(code), "{shown:?}: {}", stderr(&o));
        let e = one_error_line(&o);
        assert!(e.contains(want), "{shown:?}: {e}");
        assert!(
            e.len() < 600,
            "{shown:?}: a long name echoed in full ({} bytes)",
            e.len()
        );
        assert!(
            !e.contains("not found: not found") && !e.contains("exists: already exists"),
            "{e}"
        );
    }
    // Not a tar archive: said so, not "corrupt snapshot".
    let junk = env.p("garbage.tar");
    fs::write(&junk, vec![0x5a; 3000]).expect("write");
    let o = run_fail(env.cmd().arg("import").arg(&junk).args(["--store", &st, "--name", "g"]));
    let e = one_error_line(&o);
    assert!(
        e.contains("not a readable tar archive") && !e.contains("corrupt snapshot"),
        "{e}"
    );
    // A closed stdout ends the command quietly (no panic, no message).
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' ls base dir --json --store '{st}' | head -c 1",
            lazysnap_path()
        ))
        .output()
        .expect("bash");
    assert_eq!(stdout(&o), "[");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

fn lazysnap_path() -> String {
    env!("CARGO_BIN_EXE_lazysnap").to_string()
}

#[test]
fn help_logs_completions_and_progress() {
    let env = Env::new();
    store_with_chain(&env);
    let st = env.store();
    let top = stdout(&run_ok(env.cmd().arg("--help")));
    for want in [
        "LAZYSNAP_STORE",
        "LAZYSNAP_STATE_DIR",
        "RUST_LOG",
        "LAZYSNAP_READ_TIMEOUT",
        "TiB",
        "Example:",
    ] {
        assert!(top.contains(want), "top-level help lacks {want}");
    }
    for cmd in [
        "create",
        "import",
        "inspect",
        "ls",
        "cat",
        "verify",
        "extract",
        "mount",
        "save",
        "umount",
        "mounts",
        "stats",
        "squash",
        "diff",
        "log",
        "list",
        "signer",
        "completions",
        "man",
    ] {
        let h = stdout(&run_ok(env.cmd().args([cmd, "--help"])));
        assert!(h.contains("Example:\n  lazysnap "), "{cmd} --help has no example");
    }
    let mount = stdout(&run_ok(env.cmd().args(["mount", "--help"])));
    assert!(mount.lines().next().is_some_and(|l| l.contains("writable")), "{mount}");
    let create = stdout(&run_ok(env.cmd().args(["create", "--help"])));
    assert!(
        create.contains("[default: 512KiB]") && create.contains("LAZYSNAP_STORE"),
        "{create}"
    );
    assert!(stdout(&run_ok(env.cmd().args(["squash", "--help"]))).contains("--name <NEW>"));

    // RUST_LOG works for every command.
    let out = env.p("out");
    let runs: Vec<Vec<String>> = vec![
        vec!["cat".into(), "base".into(), "dir/file001".into()],
        vec!["inspect".into(), "base".into()],
        vec!["verify".into(), "base".into()],
        vec!["extract".into(), "base".into(), out.display().to_string()],
        vec![
            "create".into(),
            env.p("t").display().to_string(),
            "--name".into(),
            "logged".into(),
        ],
    ];
    for args in runs {
        let o = run_ok(env.cmd().args(&args).args(["--store", &st]).env("RUST_LOG", "debug"));
        assert!(stderr(&o).contains("DEBUG"), "{args:?}: nothing logged");
        assert!(!stderr(&o).contains('\x1b'), "{args:?}: colours off a terminal");
    }

    // Completions and a man page from the clap definitions.
    let bash = stdout(&run_ok(env.cmd().args(["completions", "bash"])));
    assert!(bash.contains("_lazysnap") && bash.contains("mounts"));
    let man = stdout(&run_ok(env.cmd().arg("man")));
    assert!(man.contains(".TH lazysnap 1") && man.contains("LAZYSNAP_STATE_DIR"));

    // Progress on a terminal: a total and an ETA.
    let big = env.p("big");
    fs::create_dir(&big).expect("mkdir");
    let data: Vec<u8> = (0..24u64 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    fs::write(big.join("data"), data).expect("write");
    let o = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "'{}' create '{}' --store '{st}' --name tty --level 19",
            lazysnap_path(),
            big.display()
        ))
        .arg("/dev/null")
        .env("LAZYSNAP_STATE_DIR", env.p("state"))
        .output()
        .expect("script");
    assert!(o.status.success(), "{}", stderr(&o));
    let tty = stdout(&o);
    assert!(tty.contains("created tty"), "{tty}");
    assert!(
        tty.contains("eta") && tty.contains("24.00 MiB"),
        "no total or ETA: {tty:?}"
    );
}

#[test]
fn the_daemon_log_is_plain_text() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    store_with_chain(&env);
    let mut c = env.cmd();
    c.env("RUST_LOG", "debug");
    let m = env.p("m");
    fs::create_dir(&m).expect("mkdir");
    run_ok(
        c.args(["mount", "base"])
            .arg(&m)
            .args(["--store", &env.store(), "--read-only"]),
    );
    env.mounts.push(m.clone());
    // Reads, flushes (every close) and an ioctl (FS_IOC_GETFLAGS).
    for _ in 0..3 {
        let _ = fs::read(m.join("readme")).expect("read");
    }
    let _ = Command::new("lsattr").arg(m.join("readme")).output();
    let log = fs::read_dir(env.p("state/mounts"))
        .expect("state")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("daemon log");
    let text = fs::read_to_string(&log).expect("log");
    assert!(text.contains("DEBUG") || text.contains("INFO"), "{text}");
    assert!(!text.contains('\x1b'), "colours in the log file");
    assert!(!text.contains("Not Implemented"), "{text}");
    env.umount(&m);
}

/// A one-request HTTP exchange with `addr`: the status code and the body
/// bytes that arrived before the connection closed.
fn http_get(addr: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |p| p + 4);
    let status = String::from_utf8_lossy(&got[..head_end.min(got.len())])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, got[head_end..].to_vec())
}

/// `lazysnap-shaper` running `args` in front of an upstream that answers
/// every request with 100,000 bytes; its address.
fn shaper_cli(args: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = upstream.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut s in upstream.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(&[b'x'; 100_000]);
        }
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lazysnap-shaper"))
        .args(["--upstream", &up, "--rtt", "1ms"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the shaper");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    std::io::BufReader::new(out).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    (child, addr)
}

/// The shaper binary's faults: --cut-once cuts one body short and then
/// passes everything; --deny answers 403 AccessDenied until SIGUSR1 turns
/// it off.
#[test]
fn the_shaper_binary_cuts_once_and_denies_until_signalled() {
    let (mut cut, addr) = shaper_cli(&["--cut-once", "50000"]);
    let (status, body) = http_get(&addr);
    assert_eq!(status, 200);
    assert!(body.len() < 100_000, "not cut: {} bytes", body.len());
    assert_eq!(http_get(&addr), (200, vec![b'x'; 100_000]), "cut only once");
    let _ = cut.kill();
    let _ = cut.wait();

    let (mut deny, addr) = shaper_cli(&["--deny"]);
    let (status, body) = http_get(&addr);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(deny.id() as i32, libc::SIGUSR1) };
    let t0 = std::time::Instant::now();
    loop {
        let (status, body) = http_get(&addr);
        if status == 200 {
            assert_eq!(body.len(), 100_000);
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "still {status} after SIGUSR1"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = deny.kill();
    let _ = deny.wait();
}
