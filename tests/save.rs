//! Writable workspaces: overlay over the lazy mount, `save` packs the upper
//! dir as a diff; the saved snapshot mounts equal to the live view, applies
//! with stock tar + OCI rules, and saves are atomic and never overwrite.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Every change the issue lists, made through the live mount.
fn work(m: &Path) {
    let p = |s: &str| m.join(s);
    std::fs::write(p("created.txt"), b"brand new").expect("create");
    std::fs::write(p(paths::ONE_BYTE), b"modified").expect("modify");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p(paths::SPACES))
        .expect("open");
    std::io::Write::write_all(&mut f, b" +appended").expect("append");
    drop(f);
    std::fs::OpenOptions::new()
        .write(true)
        .open(p("text/medium_2.txt"))
        .expect("open")
        .set_len(1000)
        .expect("truncate");
    std::fs::remove_file(p(paths::EMPTY)).expect("delete file");
    std::fs::remove_dir_all(p("deep/l1/l2")).expect("delete non-empty dir");
    std::fs::remove_dir_all(p("dir")).expect("rm dir");
    std::fs::write(p("dir"), b"file replacing a dir").expect("dir -> file");
    // (Not a hardlinked file: overlayfs keeps reporting the lower inode's
    // link count for the surviving name, which no snapshot can reproduce.)
    std::fs::remove_file(p(paths::READONLY)).expect("rm file");
    std::fs::create_dir(p(paths::READONLY)).expect("file -> dir");
    std::fs::write(p(&format!("{}/inside", paths::READONLY)), b"in").expect("write");
    sh(&format!(
        "mv '{}' '{}'",
        p("empty_nested").display(),
        p("renamed_nested").display()
    ));
    std::fs::set_permissions(p(paths::EXEC), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    set_mtime(&p(paths::UNICODE), 1_650_000_000, 987_654_321).expect("touch");
    std::fs::remove_file(p(paths::LINK_REL)).expect("rm symlink");
    std::os::unix::fs::symlink("somewhere/else", p(paths::LINK_REL)).expect("symlink");
    std::fs::hard_link(p("created.txt"), p("created-link.txt")).expect("hardlink");
    set_xattr(&p(paths::XATTR_FILE), "user.saved", b"yes").expect("xattr");
    // A directory deleted and made again: opaque in the upper dir.
    std::fs::remove_dir_all(p("names")).expect("rm names");
    std::fs::create_dir(p("names")).expect("mkdir names");
    std::fs::write(p("names/only-this"), b"lower names are hidden").expect("write");
    // Rewritten with the same bytes and its mtime put back: overlay copies
    // it up, but nothing about it changed.
    let same = p(paths::ZERO_RUNS);
    let before = std::fs::symlink_metadata(&same).expect("stat");
    let bytes = std::fs::read(&same).expect("read");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&same)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .expect("rewrite");
    use std::os::unix::fs::MetadataExt;
    set_mtime(&same, before.mtime(), before.mtime_nsec() as u32).expect("restore mtime");
}

/// A save equals the live view and applies with stock tar; a later save
/// continues from the last one and holds only what changed since.
fn saved_snapshot_equals_the_live_view_and_applies_with_stock_tar(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut ws = Env::with_access(access);
    let src = fidelity_src(ws.tmp.path(), "src", access.tree(FidelityOpts::BIG));
    ws.create(&src, "w/base");
    let live = ws.mount("w/base", "live", &[]);
    work(&live);

    let t0 = Instant::now();
    ws.save(&live, "w/s1");
    let took = t0.elapsed();
    let size = std::fs::metadata(ws.object_file("w/s1")).expect("stat").len();
    assert!(size < 1 << 20, "diff is {size} bytes");
    eprintln!("save: {size} bytes in {took:?}");
    run_ok(&mut ws.store_cmd("verify", "w/s1"));
    let o = run_ok(&mut ws.store_cmd("diff", "w/s1"));
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(
        !listing.contains(paths::ZERO_RUNS),
        "an unchanged copy-up was saved: {listing}"
    );
    assert!(listing.contains(&format!("M {}", paths::ONE_BYTE)), "{listing}");

    let copy = ws.mount_ro("w/s1", "copy", &[]);
    assert_trees_equal(&live, &copy);
    ws.umount(&copy);

    // Stock tools: base, then the diff with OCI whiteout rules.
    let stock = ws.p("stock");
    std::fs::create_dir(&stock).expect("mkdir");
    stock_extract_into(&ws.object_file("w/base"), &stock);
    stock_apply_layer(&ws.object_file("w/s1"), &stock);
    assert_trees_equal(&live, &stock);

    // The mount keeps working; a later save is a diff of the last one,
    // holding only what changed since.
    std::fs::write(live.join("after-save.txt"), b"more").expect("write");
    ws.save(&live, "w/s2");
    let o = run_ok(ws.store_cmd("log", "w/s2").arg("--json"));
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        (log[1]["name"].as_str(), log[2]["name"].as_str()),
        (Some("w/s1"), Some("w/base"))
    );
    let o = run_ok(&mut ws.store_cmd("diff", "w/s2"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "A after-save.txt\n");
    let copy = ws.mount_ro("w/s2", "copy2", &[]);
    assert_trees_equal(&live, &copy);
    ws.umount(&copy);

    // A save never overwrites an existing name.
    let o = run_fail(ws.cmd().arg("save").arg(&live).args(["--name", "w/s1"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));

    // Remounting with the same upper dir resumes unsaved changes.
    std::fs::write(live.join("unsaved.txt"), b"keep me").expect("write");
    let o = run_ok(ws.cmd().arg("stats").arg(&live).arg("--json"));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let upper = PathBuf::from(stats["mount"]["upper"].as_str().expect("upper"));
    ws.umount(&live);
    let again = ws.mount("w/base", "live", &["--upper", &upper.display().to_string()]);
    assert_eq!(std::fs::read(again.join("unsaved.txt")).expect("read"), b"keep me");
    assert_eq!(std::fs::read(again.join(paths::ONE_BYTE)).expect("read"), b"modified");
}
access_tests!(writable: saved_snapshot_equals_the_live_view_and_applies_with_stock_tar);

#[test]
fn killed_or_racing_saves_publish_nothing_half_written() {
    if !require_fuse() {
        return;
    }
    let mut ws = Env::new();
    let src = fidelity_src(ws.tmp.path(), "src", FidelityOpts::FAST);
    run_ok(
        ws.cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", &ws.store(), "--name", "k/base"]),
    );
    let live = ws.mount("k/base", "live", &[]);
    // Enough new data that a save takes a while.
    sh(&format!("head -c 300M /dev/urandom > '{}/big.bin'", live.display()));
    let mut child = ws
        .cmd()
        .arg("save")
        .arg(&live)
        .args(["--name", "k/killed"])
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: killing our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let o = run_fail(ws.cmd().args(["inspect", "k/killed", "--store", &ws.store()]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    let listed = run_ok(ws.cmd().args(["list", "--store", &ws.store()]));
    assert_eq!(listed_names(&listed), ["k/base"]);
    // Base and upper are intact: the file is still there, and a save works.
    assert_eq!(std::fs::metadata(live.join("big.bin")).expect("stat").len(), 300 << 20);
    run_ok(ws.cmd().args(["verify", "k/base", "--store", &ws.store()]));

    // Two saves racing for one name: exactly one wins.
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            ws.cmd()
                .arg("save")
                .arg(&live)
                .args(["--name", "k/race2"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outs: Vec<_> = kids.drain(..).map(|k| k.wait_with_output().expect("wait")).collect();
    let wins = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "exactly one racing save wins");
    let loser = outs.iter().find(|o| !o.status.success()).expect("a loser");
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );
    run_ok(ws.cmd().args(["verify", "k/race2", "--store", &ws.store()]));
}
