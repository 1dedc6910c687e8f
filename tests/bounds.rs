//! Declared sizes are hostile: a crafted snapshot whose frame claims a huge
//! length, and paths beyond the format's limits, get one clear error and a
//! clean exit, never an abort, a hang or gigabytes of memory.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use lazysnap::format::footer::{skippable_header, Footer, INDEX_MAGIC, SKIPPABLE_HEADER};
use lazysnap::format::{self, Index};

/// Rewrite the snapshot object at `obj`: its index passes through `edit`,
/// and the object is rebuilt with valid digests around the same data frames.
fn rewrite_index(obj: &Path, edit: impl FnOnce(&mut Index)) {
    let bytes = fs::read(obj).expect("read");
    let size = bytes.len() as u64;
    let footer = Footer::decode(&bytes[bytes.len() - 64..], size, "t").expect("footer");
    let frame = &bytes[footer.index_offset as usize..(footer.index_offset + footer.index_len) as usize];
    let payload = footer.index_payload(frame, "t").expect("payload");
    let raw = zstd::bulk::decompress(payload, footer.index_raw_len as usize).expect("index");
    let mut index = Index::decode(&raw, "t").expect("decode");
    edit(&mut index);
    let raw = index.encode();
    let packed = zstd::bulk::compress(&raw, 9).expect("compress");
    let mut out = bytes[..footer.index_offset as usize].to_vec();
    let f = Footer {
        index_len: (SKIPPABLE_HEADER + packed.len()) as u64,
        index_raw_len: raw.len() as u64,
        index_digest: format::digest(&packed),
        ..footer
    };
    out.extend_from_slice(&skippable_header(INDEX_MAGIC, packed.len()).expect("header"));
    out.extend_from_slice(&packed);
    out.extend_from_slice(&f.encode());
    fs::write(obj, out).expect("write");
}

/// Run to completion within `secs`; the exit code and stderr.
fn run_within(cmd: &mut std::process::Command, secs: u64) -> (Option<i32>, String) {
    let t0 = Instant::now();
    let o = cmd.output().expect("run");
    assert!(t0.elapsed() < Duration::from_secs(secs), "took {:?}", t0.elapsed());
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A store holding snapshot `s` of one small file, and its object's path.
fn one_file_snapshot() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("f"), b"hello").expect("write");
    env.create(&t, "s");
    let obj = env.p("store/s.tar.zst");
    (env, obj)
}

#[test]
fn a_frame_claiming_a_terabyte_is_a_clean_error() {
    let (env, obj) = one_file_snapshot();
    // Digests valid, the frame's length a lie: 1 TiB.
    rewrite_index(&obj, |idx| {
        idx.frames[0].u_len = 1 << 40;
        idx.tar_size = idx.frames.iter().map(|f| f.u_len).sum();
    });
    assert!(fs::metadata(&obj).expect("stat").len() < 4096);
    for args in [
        vec!["cat", "s", "f"],
        vec!["verify", "s"],
        vec!["inspect", "s"],
        vec!["ls", "s"],
    ] {
        let (code, err) = run_within(env.cmd().args(&args).args(["--store", &env.store()]), 20);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("frame larger than 64 MiB") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let (code, err) = run_within(
        env.cmd()
            .args(["extract", "s"])
            .arg(env.p("out"))
            .args(["--store", &env.store()]),
        20,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(!env.p("out").exists());
}

#[test]
fn a_frame_claiming_more_than_it_holds_reads_as_corrupt() {
    let (env, obj) = one_file_snapshot();
    // 64 MiB is allowed, but the frame holds a few KiB: the reader must not
    // believe it (no 64 MiB buffer up front) and must say it is corrupt.
    rewrite_index(&obj, |idx| {
        let last = idx.frames.len() - 1;
        idx.frames[last].u_len = 64 << 20;
        idx.tar_size = idx.frames.iter().map(|f| f.u_len).sum();
    });
    let (code, err) = run_within(env.cmd().args(["verify", "s", "--store", &env.store()]), 20);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn paths_beyond_the_limits_are_refused_with_a_short_message() {
    let env = Env::new();
    // A 30,000-component pax path in a small tar: refused, quickly.
    let tar = env.p("deep.tar");
    let long: String = (0..30_000).map(|i| format!("d{}/", i % 10)).collect::<String>() + "f";
    sh(&format!(
        "python3 -c 'import tarfile,io,sys; t=tarfile.open(sys.argv[1],\"w\",format=tarfile.PAX_FORMAT); \
         i=tarfile.TarInfo(sys.argv[2]); i.size=1; t.addfile(i, io.BytesIO(b\"x\")); t.close()' '{}' '{long}'",
        tar.display()
    ));
    assert!(fs::metadata(&tar).expect("stat").len() < 400_000);
    let (code, err) = run_within(
        env.cmd()
            .arg("import")
            .arg(&tar)
            .args(["--store", &env.store(), "--name", "deep"]),
        20,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("longer than 4096 bytes"), "{err}");
    assert!(err.len() < 400 && err.lines().count() == 1, "{err}");
    assert!(!env.p("store/deep.tar.zst").exists());

    // A directory tree deeper than 4096 bytes: create refuses it by name.
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    let comp = "c".repeat(250);
    sh(&format!(
        "cd '{}' && for i in $(seq 20); do mkdir {comp} && cd {comp}; done && echo x > f",
        t.display()
    ));
    let (code, err) = run_within(
        env.cmd()
            .arg("create")
            .arg(&t)
            .args(["--store", &env.store(), "--name", "t"]),
        20,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("longer than 4096 bytes") && err.len() < 400, "{err}");
    assert!(!env.p("store/t.tar.zst").exists());
}
