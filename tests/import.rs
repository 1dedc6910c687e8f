//! `import`: plain / gzip / zstd (single and multi-frame) tars become indexed
//! snapshots equal to the source; unsafe archives are refused.

mod common;

use std::process::Command;

use common::*;

/// A raw ustar header + data, built by hand so tests can say anything.
fn raw_entry(out: &mut Vec<u8>, name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.resize(t.len() + 1024, 0);
    t
}

#[test]
fn every_input_format_imports_to_an_equal_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_fidelity_tree_opts(&src, FidelityOpts::FAST);
    let store = tmp.path().join("store").display().to_string();
    let tar = tar_of(&src);
    let half = tar.len() / 2;
    let mut multi = pipe(Command::new("zstd").args(["-3", "-c"]), &tar[..half]);
    multi.extend(pipe(Command::new("zstd").args(["-3", "-c"]), &tar[half..]));
    let inputs = [
        ("plain", tar.clone()),
        ("gz", pipe(Command::new("gzip").arg("-c"), &tar)),
        ("zst", pipe(Command::new("zstd").args(["-3", "-c"]), &tar)),
        ("multi", multi),
    ];
    for (kind, bytes) in inputs {
        let file = tmp.path().join(format!("in.{kind}"));
        std::fs::write(&file, bytes).expect("write");
        run_ok(
            lazysnap()
                .arg("import")
                .arg(&file)
                .args(["--store", &store, "--name", kind]),
        );
        run_ok(lazysnap().args(["verify", kind, "--store", &store]));
        let out = tmp.path().join(format!("out-{kind}"));
        run_ok(lazysnap().args(["extract", kind]).arg(&out).args(["--store", &store]));
        assert_trees_equal(&src, &out);
    }
    // A lazysnap snapshot is itself a multi-frame tar.zst: importing it works.
    let own = tmp.path().join("store/zst.tar.zst");
    run_ok(
        lazysnap()
            .arg("import")
            .arg(&own)
            .args(["--store", &store, "--name", "again"]),
    );
    let out = tmp.path().join("out-again");
    run_ok(
        lazysnap()
            .args(["extract", "again"])
            .arg(&out)
            .args(["--store", &store]),
    );
    assert_trees_equal(&src, &out);
}

#[test]
fn unsafe_archives_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store").display().to_string();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut t = Vec::new();
    raw_entry(&mut t, b"../evil", b'0', b"", b"x");
    cases.push(("dotdot", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"a/../../evil", b'0', b"", b"x");
    cases.push(("nested dotdot", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"/etc/evil", b'0', b"", b"x");
    cases.push(("absolute", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"link", b'2', b"/tmp", b"");
    raw_entry(&mut t, b"link/evil", b'0', b"", b"x");
    cases.push(("through symlink", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"link", b'2', b"..", b"");
    raw_entry(&mut t, b"link/", b'5', b"", b"");
    cases.push(("dir over symlink", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"h", b'1', b"../outside", b"");
    cases.push(("hardlink out", finish(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, b"f", b'0', b"", b"one");
    raw_entry(&mut t, b"f", b'0', b"", b"two");
    cases.push(("duplicate", finish(t)));
    cases.push(("garbage", b"this is not a tar archive at all".repeat(40)));
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let file = tmp.path().join(format!("bad{i}.tar"));
        std::fs::write(&file, bytes).expect("write");
        let name = format!("bad{i}");
        let o = run_fail(
            lazysnap()
                .arg("import")
                .arg(&file)
                .args(["--store", &store, "--name", &name]),
        );
        assert_eq!(o.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        let o = run_fail(lazysnap().args(["inspect", &name, "--store", &store]));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not found"),
            "{what}: nothing published"
        );
    }
    // Nothing half-written is left in the store.
    let o = run_ok(lazysnap().args(["list", "--store", &store]));
    assert!(o.stdout.is_empty());
    let hidden = std::fs::read_dir(tmp.path().join("store"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(hidden, 0, "temp files left in the store");
}

#[test]
fn implicit_parent_directories_are_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store").display().to_string();
    let mut t = Vec::new();
    raw_entry(&mut t, b"a/b/c.txt", b'0', b"", b"hello");
    raw_entry(&mut t, b"./a/d.txt", b'0', b"", b"bye");
    let file = tmp.path().join("implicit.tar");
    std::fs::write(&file, finish(t)).expect("write");
    run_ok(
        lazysnap()
            .arg("import")
            .arg(&file)
            .args(["--store", &store, "--name", "imp"]),
    );
    run_ok(lazysnap().args(["verify", "imp", "--store", &store]));
    let o = run_ok(lazysnap().args(["cat", "imp", "a/b/c.txt", "--store", &store]));
    assert_eq!(o.stdout, b"hello");
    let out = tmp.path().join("out");
    run_ok(lazysnap().args(["extract", "imp"]).arg(&out).args(["--store", &store]));
    assert_eq!(std::fs::read(out.join("a/d.txt")).expect("read"), b"bye");
}

#[test]
fn pax_records_with_newlines_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let f = src.join("x");
    std::fs::write(&f, b"hi").expect("write");
    set_xattr(&f, "user.nl", b"a\nb").expect("xattr");
    set_xattr(&f, "user.bin", &[0, b'\n', 255, b'=', b'\n']).expect("xattr");
    let long = src.join(format!("{}\nz", "L".repeat(120)));
    std::fs::write(&long, b"long").expect("write");
    std::fs::hard_link(&long, src.join("hard")).expect("link");
    std::os::unix::fs::symlink(format!("{}\nq", "t".repeat(110)), src.join("s")).expect("symlink");
    std::fs::write(src.join("a\nb"), b"nl").expect("write");
    let store = tmp.path().join("store").display().to_string();
    let file = tmp.path().join("nl.tar");
    std::fs::write(&file, tar_of(&src)).expect("write");
    run_ok(
        lazysnap()
            .arg("import")
            .arg(&file)
            .args(["--store", &store, "--name", "nl"]),
    );
    run_ok(lazysnap().args(["verify", "nl", "--store", &store]));
    let out = tmp.path().join("out");
    run_ok(lazysnap().args(["extract", "nl"]).arg(&out).args(["--store", &store]));
    assert_trees_equal(&src, &out);
}

#[test]
fn sparse_files_are_refused_naming_the_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let f = std::fs::File::create(src.join("holes.bin")).expect("create");
    f.set_len(8 << 20).expect("truncate");
    drop(f);
    std::fs::write(src.join("plain"), b"plain").expect("write");
    let store = tmp.path().join("store").display().to_string();
    // GNU tar writes typeflag 'S' in gnu format, GNU.sparse.* pax records in pax format.
    for format in ["gnu", "pax"] {
        let file = tmp.path().join(format!("sparse-{format}.tar"));
        let o = Command::new("tar")
            .arg(format!("--format={format}"))
            .args(["--sparse", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&file)
            .arg(".")
            .output()
            .expect("tar");
        assert!(o.status.success());
        let o = run_fail(
            lazysnap()
                .arg("import")
                .arg(&file)
                .args(["--store", &store, "--name", format]),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{format}: {err}");
        assert!(
            err.contains("holes.bin") && err.contains("sparse") && err.contains("refused"),
            "{format}: {err}"
        );
    }
}
