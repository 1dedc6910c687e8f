//! Corrupted and truncated snapshots: one clear error line, exit 1, nothing
//! written. Every region is attacked: data frames, the index, the footer.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: String,
    snap: PathBuf,
    good: Vec<u8>,
    inspect: serde_json::Value,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let src = root.join("src");
    std::fs::create_dir(&src).expect("mkdir");
    make_fidelity_tree_opts(&src, FidelityOpts::FAST);
    let store = root.join("store").display().to_string();
    run_ok(
        lazysnap()
            .arg("create")
            .arg(&src)
            .args(["--store", &store, "--name", "c", "--frame-size", "64KiB"]),
    );
    let snap = root.join("store/c.tar.zst");
    let good = std::fs::read(&snap).expect("read");
    let o = run_ok(lazysnap().args(["inspect", "c", "--store", &store, "--json"]));
    let inspect = serde_json::from_slice(&o.stdout).expect("json");
    Fixture {
        _tmp: tmp,
        root,
        store,
        snap,
        good,
        inspect,
    }
}

fn one_error_line(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(1), "exit code");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "exactly one error line: {err:?}");
    assert!(err.starts_with("lazysnap: error:"), "{err}");
    err
}

fn extract_fails(f: &Fixture, dest: &Path) -> String {
    let o = run_fail(lazysnap().args(["extract", "c"]).arg(dest).args(["--store", &f.store]));
    assert!(!dest.exists(), "DEST must stay untouched");
    let leftovers: Vec<_> = std::fs::read_dir(&f.root)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("lazysnap-"))
        .collect();
    assert!(leftovers.is_empty(), "temp dir left behind: {leftovers:?}");
    one_error_line(&o)
}

#[test]
fn flipped_bytes_in_every_region_are_caught() {
    let f = fixture();
    let size = f.good.len();
    let data = f.inspect["data_size"].as_u64().expect("data_size") as usize;
    let positions = [
        ("first frame", 10),
        ("middle frame", data / 2),
        ("last frame", data - 3),
        ("index header", data + 2),
        ("index body", data + (size - 64 - data) / 2),
        ("index end", size - 65),
        ("footer magic", size - 64),
        ("footer version", size - 48),
        ("footer offset", size - 40),
        ("footer digest", size - 1),
    ];
    for (region, pos) in positions {
        let mut bad = f.good.clone();
        bad[pos] ^= 0x20;
        std::fs::write(&f.snap, &bad).expect("write");
        let o = run_fail(lazysnap().args(["verify", "c", "--store", &f.store]));
        let err = one_error_line(&o);
        assert!(
            err.contains("corrupt") || err.contains("unsupported"),
            "{region}: {err}"
        );
        if region.contains("frame") {
            assert!(err.contains("frame "), "{region}: error names the frame: {err}");
        }
        extract_fails(&f, &f.root.join("dest"));
    }
    std::fs::write(&f.snap, &f.good).expect("restore");
    run_ok(lazysnap().args(["verify", "c", "--store", &f.store]));
}

#[test]
fn a_corrupt_frame_only_breaks_reads_that_touch_it() {
    let f = fixture();
    // Flip a byte in the last data frame; a small early file stays readable.
    let data = f.inspect["data_size"].as_u64().expect("data_size") as usize;
    let mut bad = f.good.clone();
    bad[data - 3] ^= 0xff;
    std::fs::write(&f.snap, &bad).expect("write");
    let o = run_ok(lazysnap().args(["cat", "c", paths::EMPTY, "--store", &f.store]));
    assert!(o.stdout.is_empty());
    let o = run_ok(lazysnap().args(["ls", "c", "/", "--store", &f.store]));
    assert!(!o.stdout.is_empty());
}

#[test]
fn truncations_are_caught() {
    let f = fixture();
    let size = f.good.len();
    for cut in [0, 1, 63, 64, 65, size / 2, size - 65, size - 64, size - 1] {
        std::fs::write(&f.snap, &f.good[..cut]).expect("write");
        let o = run_fail(lazysnap().args(["inspect", "c", "--store", &f.store]));
        let err = one_error_line(&o);
        assert!(err.contains("snapshot c"), "cut {cut}: {err}");
        extract_fails(&f, &f.root.join("dest"));
    }
}

#[test]
fn missing_snapshot_is_one_clear_line() {
    let f = fixture();
    let o = run_fail(lazysnap().args(["inspect", "nope", "--store", &f.store]));
    let err = one_error_line(&o);
    assert!(err.contains("snapshot nope") && err.contains("not found"), "{err}");
}
