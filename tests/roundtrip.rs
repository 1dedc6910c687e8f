//! Fidelity: a tree with every awkward case survives create -> extract and
//! create -> stock `zstd -d | tar -x` exactly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn store_arg(dir: &Path) -> String {
    dir.join("store").display().to_string()
}

/// `lazysnap create SRC --store STORE --name NAME`, not yet run.
fn create_cmd(src: &Path, store: &str, name: &str) -> std::process::Command {
    let mut cmd = lazysnap();
    cmd.arg("create").arg(src).args(["--store", store, "--name", name]);
    cmd
}

/// Restore with stock tools: `zstd -d < snap | tar -x`.
fn stock_extract(snap: &Path, dest: &Path) {
    std::fs::create_dir(dest).expect("mkdir dest");
    let mut zstd = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(snap)
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd is installed (scripts/test.sh installs it)");
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-", "-C"])
        .arg(dest)
        .stdin(zstd.stdout.take().expect("zstd stdout"))
        .status()
        .expect("run tar");
    assert!(zstd.wait().expect("wait zstd").success(), "zstd -d failed");
    assert!(status.success(), "stock tar -x failed");
}

/// Extract (and stock `zstd -d | tar -x` of the stored object) equals the
/// source, owners included.
fn fidelity_tree_round_trips_through_extract_and_stock_tar(access: Access) {
    let env = Env::with_access(access);
    let src = fidelity_src(env.tmp.path(), "src", access.tree(FidelityOpts::FULL));
    env.create(&src, "fid/base");

    let out = env.p("out");
    let o = env.extract("fid/base", &out, &["--stats"]);
    let stats = String::from_utf8_lossy(&o.stderr);
    assert!(stats.contains("\"bytes_fetched\":"), "stats line missing: {stats}");
    assert_trees_equal(&src, &out);
    assert_trees_equal_with_owners(&src, &out);

    let stock = env.p("stock");
    stock_extract(&env.object_file("fid/base"), &stock);
    assert_trees_equal(&src, &stock);

    let v = run_ok(&mut env.store_cmd("verify", "fid/base"));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("ok:"));
}
access_tests!(fidelity_tree_round_trips_through_extract_and_stock_tar);

#[test]
fn small_frames_and_levels_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_fidelity_tree_opts(&src, FidelityOpts::FAST);
    let store = store_arg(tmp.path());
    for (i, (fs, level)) in [("4KiB", "1"), ("512", "-3"), ("3MiB", "19")].iter().enumerate() {
        let name = format!("s{i}");
        run_ok(lazysnap().arg("create").arg(&src).args([
            "--store",
            &store,
            "--name",
            &name,
            "--frame-size",
            fs,
            "--level",
            level,
        ]));
        let out = tmp.path().join(format!("out{i}"));
        run_ok(lazysnap().args(["extract", &name]).arg(&out).args(["--store", &store]));
        assert_trees_equal(&src, &out);
        let stock = tmp.path().join(format!("stock{i}"));
        stock_extract(&tmp.path().join(format!("store/{name}.tar.zst")), &stock);
        assert_trees_equal(&src, &stock);
    }
}

#[test]
fn cat_ls_inspect_fetch_little() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = fidelity_src(tmp.path(), "src", FidelityOpts::BIG);
    let store = store_arg(tmp.path());
    run_ok(&mut create_cmd(&src, &store, "c"));

    let o = run_ok(lazysnap().args(["cat", "c", paths::SPACES, "--store", &store, "--stats"]));
    assert_eq!(o.stdout, std::fs::read(src.join(paths::SPACES)).expect("read"));
    let line = String::from_utf8_lossy(&o.stderr);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON stats line");
    let fetched = v["bytes_fetched"].as_u64().expect("bytes_fetched");
    assert!(fetched < 2 << 20, "cat of a small file fetched {fetched} bytes");
    assert!(v["requests"].as_u64().expect("requests") <= 3);

    let o = run_ok(lazysnap().args(["cat", "c", paths::BIG, "--store", &store]));
    assert!(
        o.stdout == std::fs::read(src.join(paths::BIG)).expect("read"),
        "big file content differs"
    );

    let o = run_ok(lazysnap().args(["ls", "c", "names", "--store", &store, "--json"]));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        rows.as_array().map(|a| a.len()),
        Some(std::fs::read_dir(src.join("names")).expect("ls").count())
    );

    let o = run_ok(lazysnap().args(["inspect", "c", "--store", &store, "--json"]));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(s["format_version"], 1);
    assert!(s["frames"].as_u64().expect("frames") > 50);
    assert!(s["parent"].is_null());

    let o = run_fail(lazysnap().args(["cat", "c", "no/such/file", "--store", &store]));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/file"));
    let o = run_fail(lazysnap().args(["cat", "c", "names", "--store", &store]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file"));
}

#[test]
fn names_are_validated_and_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"x").expect("write");
    let store = store_arg(tmp.path());
    for bad in ["../escape", "/abs", "a//b", "a/./b", ".hidden", "bad\nname"] {
        let o = run_fail(&mut create_cmd(&src, &store, bad));
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("bad snapshot name"), "{err}");
    }
    run_ok(&mut create_cmd(&src, &store, "org/repo/main"));
    let before = std::fs::read(tmp.path().join("store/org/repo/main.tar.zst")).expect("read");
    std::fs::write(src.join("f"), b"changed").expect("write");
    let o = run_fail(&mut create_cmd(&src, &store, "org/repo/main"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read(tmp.path().join("store/org/repo/main.tar.zst")).expect("read"),
        before
    );
    let o = run_ok(lazysnap().args(["list", "--store", &store]));
    assert_eq!(listed_names(&o), ["org/repo/main"]);

    // Extract never replaces an existing destination, even an empty dir.
    let dest = tmp.path().join("exists");
    std::fs::create_dir(&dest).expect("mkdir");
    let o = run_fail(
        lazysnap()
            .args(["extract", "org/repo/main"])
            .arg(&dest)
            .args(["--store", &store]),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(std::fs::read_dir(&dest).expect("ls").count(), 0);
}

/// Extract (as root, the pod case) gives every file exactly its owner and
/// mode, whatever owner and mode a new file would get: files of root and of
/// other users and groups, modes the umask would cut, setuid; restored
/// under a umask of 027 into a parent directory that is setgid to another
/// group (so a new file there would get that group).
#[test]
fn extract_sets_owners_and_modes_whatever_a_new_file_would_get() {
    use std::os::unix::fs::{chown, PermissionsExt};
    use std::os::unix::process::CommandExt;
    assert!(
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0),
        "this test restores owners: run it as root (scripts/test.sh does)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    let files: [(&str, u32, u32, u32); 7] = [
        ("root", 0, 0, 0o644),
        ("other", 1234, 5678, 0o640),
        ("root-other-group", 0, 5678, 0o664),
        ("group-writable", 0, 0, 0o666),
        ("setuid", 1234, 0, 0o4755),
        ("private", 0, 0, 0o600),
        ("d/in-setgid-dir", 0, 0, 0o644),
    ];
    for (name, uid, gid, mode) in files {
        let p = src.join(name);
        std::fs::write(&p, name).expect("write");
        chown(&p, Some(uid), Some(gid)).expect("chown");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(src.join("d"), std::fs::Permissions::from_mode(0o2775)).expect("chmod d");
    let store = store_arg(tmp.path());
    run_ok(&mut create_cmd(&src, &store, "owners"));

    let parent = tmp.path().join("setgid-parent");
    std::fs::create_dir(&parent).expect("mkdir");
    chown(&parent, Some(0), Some(4321)).expect("chown parent");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o2775)).expect("chmod parent");
    let out = parent.join("out");
    let mut cmd = lazysnap();
    cmd.args(["extract", "owners"]).arg(&out).args(["--store", &store]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    run_ok(&mut cmd);
    assert_trees_equal_with_owners(&src, &out);
}
