//! `verify` accepts every valid snapshot: pax records whose values hold
//! newlines, directories repeated in an imported tar, and `.wh.` names in a
//! full snapshot (only diffs give them a meaning).

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

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

/// Run python3 with `script`; `OUT` in it names the tar to write.
fn python_tar(script: &str, out: &Path) {
    let prelude = "import tarfile, io, sys\nOUT = sys.argv[1]\n\
        def add(t, name, typ=tarfile.REGTYPE, data=b'', mode=0o644, mtime=1000, pax=None):\n\
        \x20   ti = tarfile.TarInfo(name); ti.type = typ; ti.mode = mode; ti.mtime = mtime\n\
        \x20   ti.size = len(data) if typ == tarfile.REGTYPE else 0\n\
        \x20   if pax: ti.pax_headers = pax\n\
        \x20   t.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)\n";
    let o = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .arg(out)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Import `tar`, verify it, extract it, and compare with GNU tar's extraction.
fn import_verify_compare(tmp: &Path, tar: &Path, name: &str) {
    let store = tmp.join("store").display().to_string();
    run_ok(
        lazysnap()
            .arg("import")
            .arg(tar)
            .args(["--store", &store, "--name", name]),
    );
    run_ok(lazysnap().args(["verify", name, "--store", &store]));
    let out = tmp.join(format!("out-{name}"));
    run_ok(lazysnap().args(["extract", name]).arg(&out).args(["--store", &store]));
    let want = tmp.join(format!("want-{name}"));
    std::fs::create_dir(&want).expect("mkdir");
    sh(&format!("tar -xpf '{}' -C '{}'", tar.display(), want.display()));
    assert_trees_equal(&want, &out);
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

#[test]
fn repeated_directory_in_an_imported_tar_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("rep.tar");
    python_tar(
        "with tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT) as t:\n\
         \x20   add(t, 'd', tarfile.DIRTYPE, mode=0o700, mtime=5)\n\
         \x20   add(t, 'd/f', data=b'x')\n\
         \x20   add(t, 'e', tarfile.DIRTYPE, mode=0o755, mtime=9)\n\
         \x20   add(t, 'd', tarfile.DIRTYPE, mode=0o755, mtime=7, pax={'SCHILY.xattr.user.k': 'v'})\n\
         \x20   add(t, 'd/g', data=b'y')\n\
         \x20   add(t, 'd', tarfile.DIRTYPE, mode=0o750, mtime=8)\n",
        &tar,
    );
    import_verify_compare(tmp.path(), &tar, "rep");
}

#[test]
fn whiteout_names_in_a_full_snapshot_are_ordinary_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("wh.tar");
    python_tar(
        "with tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT) as t:\n\
         \x20   add(t, 'd', tarfile.DIRTYPE, mode=0o755)\n\
         \x20   add(t, 'd/.wh..wh..opq', data=b'')\n\
         \x20   add(t, 'd/.wh.foo', data=b'z')\n\
         \x20   add(t, 'd/foo', data=b'kept')\n\
         \x20   add(t, '.wh..wh..opq', data=b'root marker')\n",
        &tar,
    );
    import_verify_compare(tmp.path(), &tar, "wh");
}
