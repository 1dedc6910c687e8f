//! Diff snapshots without a mount: `create --parent` writes only what changed
//! (with whiteouts for deletions) and fetches no parent data; mounting the
//! diff shows the merged chain, equal to the changed tree; stock tar plus OCI
//! whiteout rules give the same tree.

mod common;

use std::path::Path;

use common::*;

/// Apply every kind of change a workspace sees.
fn mutate(t: &Path, round: u32) {
    let p = |s: &str| t.join(s);
    std::fs::write(p(paths::ONE_BYTE), format!("changed in round {round}")).expect("modify");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p(paths::SPACES))
        .expect("open");
    std::io::Write::write_all(&mut f, b" appended").expect("append");
    let text = if p("text").is_dir() { "text" } else { "text-renamed" };
    std::fs::write(p(&format!("{text}/medium_1.txt")), b"").expect("truncate");
    let _ = std::fs::remove_file(p(paths::EMPTY));
    let _ = std::fs::remove_dir_all(p("deep/l1/l2"));
    if p("dir").is_dir() {
        std::fs::remove_dir_all(p("dir")).expect("rm dir");
        std::fs::write(p("dir"), b"a file where a dir was").expect("dir -> file");
    }
    if p("other/pair2.bin").is_file() {
        std::fs::remove_file(p("other/pair2.bin")).expect("rm");
        std::fs::create_dir(p("other/pair2.bin")).expect("file -> dir");
        std::fs::write(p("other/pair2.bin/inside"), b"x").expect("write");
    }
    if p("text").is_dir() {
        std::fs::rename(p("text"), p("text-renamed")).expect("rename dir");
    }
    sh(&format!("chmod 0711 '{}'", p(paths::EXEC).display()));
    set_mtime(&p(paths::UNICODE), 1_600_000_000 + i64::from(round), 123_456_789).expect("touch");
    let _ = std::fs::remove_file(p(paths::LINK_REL));
    std::os::unix::fs::symlink(format!("elsewhere-{round}"), p(paths::LINK_REL)).expect("symlink");
    set_xattr(&p(paths::XATTR_FILE), "user.round", round.to_string().as_bytes()).expect("xattr");
    std::fs::create_dir_all(p(&format!("new-dir-{round}/sub"))).expect("mkdir");
    std::fs::write(p(&format!("new-dir-{round}/sub/file")), vec![round as u8; 10_000]).expect("write");
}

/// Three diffs, each mounted and read back equal to the changed tree; the
/// chain extracted, squashed, and applied with stock tools; a parent that
/// changed under its child is an error.
fn diffs_mount_equal_to_the_changed_tree_and_apply_with_stock_tar(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(access);
    let root = env.tmp.path().to_path_buf();
    let src = fidelity_src(&root, "work", access.tree(FidelityOpts::BIG));
    env.create(&src, "ws/0");
    let base_tree = root.join("base-copy");
    sh(&format!("cp -a '{}' '{}'", src.display(), base_tree.display()));

    let mut parent = "ws/0".to_string();
    for round in 1..=3u32 {
        mutate(&src, round);
        let name = format!("ws/{round}");
        let mut extra = vec!["--parent", parent.as_str()];
        if round == 2 {
            extra.push("--checksum");
        }
        env.create_with(&src, &name, &extra);
        // Small: the 100 MB file and everything else unchanged is not in it.
        let size = std::fs::metadata(env.object_file(&name)).expect("stat").len();
        assert!(size < 200_000, "diff {name} is {size} bytes");
        run_ok(&mut env.store_cmd("verify", &name));

        let mnt = env.mount_ro(&name, &format!("mnt{round}"), &[]);
        let res = compare_trees(&src, &mnt);
        env.umount(&mnt);
        if let Err(d) = res {
            panic!("mounted {name} differs from the tree:\n{d}");
        }
        assert_eq!(
            env.cat(&name, paths::ONE_BYTE),
            format!("changed in round {round}").as_bytes()
        );
        if round == 1 {
            let o = run_ok(&mut env.store_cmd("diff", &name));
            let text = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<&str> = text.lines().collect();
            for want in [
                format!("M {}", paths::ONE_BYTE),
                format!("M {}", paths::SPACES),
                format!("D {}", paths::EMPTY),
                "D deep/l1/l2".to_string(),
                "M dir".to_string(),
                "A text-renamed".to_string(),
                "D text".to_string(),
                format!("M {}", paths::LINK_REL),
                format!("M {}", paths::XATTR_FILE),
                "A new-dir-1/sub/file".to_string(),
            ] {
                assert!(lines.contains(&want.as_str()), "diff lacks {want:?}: {text}");
            }
            // Unchanged things, and dirs carried only as parents, are not listed.
            assert!(!text.contains(paths::BIG) && !lines.contains(&"M deep"), "{text}");
        }
        parent = name;
    }
    let o = run_ok(env.store_cmd("log", "ws/3").arg("--json"));
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let names: Vec<&str> = log
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["ws/3", "ws/2", "ws/1", "ws/0"]);

    // Stock tools: base with tar, then each diff with OCI whiteout rules.
    let stock = root.join("stock");
    std::fs::create_dir(&stock).expect("mkdir");
    stock_extract_into(&env.object_file("ws/0"), &stock);
    for round in 1..=3 {
        stock_apply_layer(&env.object_file(&format!("ws/{round}")), &stock);
    }
    assert_trees_equal(&src, &stock);

    // Extract of a diff restores the whole chain's view.
    let x = root.join("x");
    env.extract("ws/3", &x, &[]);
    assert_trees_equal(&src, &x);
    // Squash gives one full snapshot of the same view.
    run_ok(env.store_cmd("squash", "ws/3").args(["--name", "ws/flat"]));
    run_ok(&mut env.store_cmd("verify", "ws/flat"));
    let o = run_ok(env.store_cmd("inspect", "ws/flat").arg("--json"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"parent\": null"));
    let flat = root.join("flat");
    env.extract("ws/flat", &flat, &[]);
    assert_trees_equal(&src, &flat);
    // A parent that changed under its child is an error (the object is
    // moved aside where the store keeps it: the store dir, or the S3
    // server's files).
    let one = env.object_file("ws/1");
    std::fs::rename(&one, one.with_extension("bak")).expect("mv");
    let o = run_fail(&mut env.read_cmd("ls", "ws/3"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("parent ws/1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    env.create(&base_tree, "ws/1");
    let o = run_fail(&mut env.read_cmd("ls", "ws/3"));
    let err = String::from_utf8_lossy(&o.stderr);
    // A spec names each object's ETag: the replaced one is refused before
    // its index is read.
    let want = match access {
        Access::Spec => "layer ws/1 (http://",
        _ => "index digest differs",
    };
    assert!(err.contains(want) && err.contains("ws/1"), "{err}");
    if access == Access::Spec {
        assert!(err.contains("was replaced") && !err.contains("X-Amz"), "{err}");
    }
}
access_tests!(diffs_mount_equal_to_the_changed_tree_and_apply_with_stock_tar);

/// A chain thirty diffs deep mounts equal to the tree, and so does its
/// squash, which mounts in at most two reads.
fn a_thirty_deep_chain_mounts_and_squashes_to_the_same_tree(access: Access) {
    if !require_fuse() {
        return;
    }
    let mut env = Env::with_access(access);
    let root = env.tmp.path().to_path_buf();
    let src = fidelity_src(&root, "work", access.tree(FidelityOpts::FAST));
    env.create(&src, "c/0");
    for i in 1..=30u32 {
        // Each step: one file changed, one added, one removed.
        std::fs::write(src.join(format!("step-{i}")), format!("step {i}")).expect("write");
        std::fs::write(src.join(paths::ONE_BYTE), format!("{i}")).expect("write");
        if i > 1 {
            std::fs::remove_file(src.join(format!("step-{}", i - 1))).expect("rm");
        }
        env.create_with(&src, &format!("c/{i}"), &["--parent", &format!("c/{}", i - 1)]);
    }
    let mnt = env.mount_ro("c/30", "mnt", &[]);
    let res = compare_trees(&src, &mnt);
    env.umount(&mnt);
    res.expect("30-deep chain view");

    run_ok(env.store_cmd("squash", "c/30").args(["--name", "c/flat"]));
    let mnt = env.mount_ro("c/flat", "mnt", &[]);
    let stats = env.stats(&mnt);
    let res = compare_trees(&src, &mnt);
    env.umount(&mnt);
    res.expect("squashed view");
    // Counted per read of the store layer (an S3 open of a small object is
    // one such read, of up to three requests).
    assert!(
        stats["requests"].as_u64().expect("requests") <= 2,
        "squash mounts in <= 2 reads: {stats}"
    );
}
access_tests!(a_thirty_deep_chain_mounts_and_squashes_to_the_same_tree);
