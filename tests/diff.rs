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

#[test]
fn diffs_mount_equal_to_the_changed_tree_and_apply_with_stock_tar() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let root = env.tmp.path();
    let store = env.store();
    let src = fidelity_src(root, "work", FidelityOpts::BIG);
    let cmd = || env.cmd();
    run_ok(
        cmd()
            .arg("create")
            .arg(&src)
            .args(["--store", &store, "--name", "ws/0"]),
    );
    let base_tree = root.join("base-copy");
    sh(&format!("cp -a '{}' '{}'", src.display(), base_tree.display()));

    let mut parent = "ws/0".to_string();
    for round in 1..=3u32 {
        mutate(&src, round);
        let name = format!("ws/{round}");
        let flag = if round == 2 { vec!["--checksum"] } else { vec![] };
        run_ok(
            cmd()
                .arg("create")
                .arg(&src)
                .args(["--store", &store, "--name", &name, "--parent", &parent])
                .args(&flag),
        );
        // Small: the 100 MB file and everything else unchanged is not in it.
        let size = std::fs::metadata(root.join(format!("store/{name}.tar.zst")))
            .expect("stat")
            .len();
        assert!(size < 200_000, "diff {name} is {size} bytes");
        run_ok(cmd().args(["verify", &name, "--store", &store]));

        let mnt = root.join(format!("mnt{round}"));
        std::fs::create_dir(&mnt).expect("mkdir");
        run_ok(
            cmd()
                .args(["mount", &name])
                .arg(&mnt)
                .args(["--store", &store, "--read-only"]),
        );
        let res = compare_trees(&src, &mnt);
        run_ok(cmd().arg("umount").arg(&mnt));
        if let Err(d) = res {
            panic!("mounted {name} differs from the tree:\n{d}");
        }
        let o = run_ok(cmd().args(["cat", &name, paths::ONE_BYTE, "--store", &store]));
        assert_eq!(o.stdout, format!("changed in round {round}").as_bytes());
        if round == 1 {
            let o = run_ok(cmd().args(["diff", &name, "--store", &store]));
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
    let o = run_ok(cmd().args(["log", "ws/3", "--store", &store, "--json"]));
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
    stock_extract_into(&root.join("store/ws/0.tar.zst"), &stock);
    for round in 1..=3 {
        stock_apply_layer(&root.join(format!("store/ws/{round}.tar.zst")), &stock);
    }
    assert_trees_equal(&src, &stock);

    // Extract of a diff restores the whole chain's view.
    let x = root.join("x");
    run_ok(cmd().args(["extract", "ws/3"]).arg(&x).args(["--store", &store]));
    assert_trees_equal(&src, &x);
    // Squash gives one full snapshot of the same view.
    run_ok(cmd().args(["squash", "ws/3", "--store", &store, "--name", "ws/flat"]));
    run_ok(cmd().args(["verify", "ws/flat", "--store", &store]));
    let o = run_ok(cmd().args(["inspect", "ws/flat", "--store", &store, "--json"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"parent\": null"));
    let flat = root.join("flat");
    run_ok(cmd().args(["extract", "ws/flat"]).arg(&flat).args(["--store", &store]));
    assert_trees_equal(&src, &flat);
    // A parent that changed under its child is an error.
    std::fs::rename(root.join("store/ws/1.tar.zst"), root.join("store/ws/1.bak")).expect("mv");
    let o = run_fail(cmd().args(["ls", "ws/3", "--store", &store]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("parent ws/1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    run_ok(
        cmd()
            .arg("create")
            .arg(&base_tree)
            .args(["--store", &store, "--name", "ws/1"]),
    );
    let o = run_fail(cmd().args(["ls", "ws/3", "--store", &store]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("index digest differs"));
}

#[test]
fn a_thirty_deep_chain_mounts_and_squashes_to_the_same_tree() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let root = env.tmp.path();
    let store = env.store();
    let cmd = || env.cmd();
    let src = fidelity_src(root, "work", FidelityOpts::FAST);
    run_ok(cmd().arg("create").arg(&src).args(["--store", &store, "--name", "c/0"]));
    for i in 1..=30u32 {
        // Each step: one file changed, one added, one removed.
        std::fs::write(src.join(format!("step-{i}")), format!("step {i}")).expect("write");
        std::fs::write(src.join(paths::ONE_BYTE), format!("{i}")).expect("write");
        if i > 1 {
            std::fs::remove_file(src.join(format!("step-{}", i - 1))).expect("rm");
        }
        run_ok(cmd().arg("create").arg(&src).args([
            "--store",
            &store,
            "--name",
            &format!("c/{i}"),
            "--parent",
            &format!("c/{}", i - 1),
        ]));
    }
    let mnt = root.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    run_ok(
        cmd()
            .args(["mount", "c/30"])
            .arg(&mnt)
            .args(["--store", &store, "--read-only"]),
    );
    let res = compare_trees(&src, &mnt);
    run_ok(cmd().arg("umount").arg(&mnt));
    res.expect("30-deep chain view");

    run_ok(cmd().args(["squash", "c/30", "--store", &store, "--name", "c/flat"]));
    run_ok(
        cmd()
            .args(["mount", "c/flat"])
            .arg(&mnt)
            .args(["--store", &store, "--read-only"]),
    );
    let o = run_ok(cmd().arg("stats").arg(&mnt).arg("--json"));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let res = compare_trees(&src, &mnt);
    run_ok(cmd().arg("umount").arg(&mnt));
    res.expect("squashed view");
    assert!(
        stats["requests"].as_u64().expect("requests") <= 2,
        "squash mounts in <= 2 reads: {stats}"
    );
}
