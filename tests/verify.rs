//! `verify` accepts every valid snapshot: pax records whose values hold
//! newlines.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

/// A tree whose pax records need newlines: an xattr value, a long name and a
/// long symlink target, each holding 0x0A.
fn newline_tree(root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir");
    let f = root.join("x");
    std::fs::write(&f, b"hi").expect("write");
    set_xattr(&f, "user.nl", b"a\nb").expect("xattr");
    set_xattr(&f, "user.bin", &[0, b'\n', 255, b'=', b'\n']).expect("xattr");
    let long = format!("{}\nz", "L".repeat(120));
    let dir = root.join(&long);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{}\nfile", "f".repeat(100))), b"long").expect("write");
    symlink(format!("{}\nq", "t".repeat(110)), root.join("s")).expect("symlink");
    std::fs::write(root.join("a\nb"), b"nl").expect("write");
}

#[test]
fn created_snapshot_with_newlines_in_pax_records_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    newline_tree(&src);
    let store = tmp.path().join("store").display().to_string();
    run_ok(
        lazysnap()
            .arg("create")
            .arg(&src)
            .args(["--store", &store, "--name", "nl"]),
    );
    run_ok(lazysnap().args(["verify", "nl", "--store", &store]));
    let out = tmp.path().join("out");
    run_ok(lazysnap().args(["extract", "nl"]).arg(&out).args(["--store", &store]));
    assert_trees_equal(&src, &out);
    let stock = tmp.path().join("stock");
    std::fs::create_dir(&stock).expect("mkdir");
    stock_extract_into(&tmp.path().join("store/nl.tar.zst"), &stock);
    assert_trees_equal(&src, &stock);
}
