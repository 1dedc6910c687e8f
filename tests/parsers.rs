//! Hostile bytes into the parsers: arbitrary and mutated input to the
//! footer, index and frame decoders (and whole snapshot objects whose
//! digests are valid) never panic, and their peak allocation stays within a
//! stated multiple of the input's size, measured with a counting allocator.
//!
//! Stated bounds (docs/FORMAT.md, "Limits"):
//! - footer: no more than 4 KiB, whatever the 64 bytes say;
//! - index: at most 48 bytes per input byte plus 1 MiB (entries are at
//!   least 11 bytes each and ~150 bytes in memory; front-coded paths may
//!   expand to 16 bytes per index byte at most);
//! - a frame: at most 64 bytes per compressed byte plus 1 MiB before any
//!   output is produced, whatever its declared length;
//! - a whole object (footer, index frame, decompression, decode): at most
//!   48 bytes per decompressed index byte plus 4 MiB, where a valid footer
//!   may declare at most 64 decompressed bytes per compressed one;
//! - tar headers (`format::tarread`, all entries of an archive): at most
//!   4 bytes per input byte plus 256 KiB (extension headers are read in
//!   chunks as their bytes arrive; a pax header is at most 1 MiB, so a
//!   declared size never allocates more than is there).
//!
//! One test function in this binary: the allocator's counters are global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lazysnap::format::footer::{skippable_header, Footer, FOOTER_LEN, INDEX_MAGIC, SKIPPABLE_HEADER};
use lazysnap::format::{self, Entry, Frame, Index, Kind, Parent};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the
// counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = CURRENT.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated by `f` at its peak, above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn entry(path: &str, kind: Kind) -> Entry {
    let mut e = Entry::new(path.as_bytes().to_vec(), kind);
    e.mode = 0o644;
    e
}

/// A valid index with every entry kind, deep paths and xattrs.
fn sample_index() -> Index {
    let mut entries = vec![entry("", Kind::Dir)];
    let mut dir = String::new();
    for i in 0..20 {
        dir = if dir.is_empty() {
            format!("d{i}")
        } else {
            format!("{dir}/d{i}")
        };
        entries.push(entry(&dir, Kind::Dir));
    }
    let mut f = entry(&format!("{dir}/f"), Kind::File);
    f.size = 100;
    f.offset = 512;
    f.digest = [7; 16];
    f.xattrs = vec![(b"user.k".to_vec(), b"v\nw".to_vec())];
    let mut h = f.clone();
    h.path = format!("{dir}/h").into_bytes();
    h.kind = Kind::Hardlink;
    h.link = f.path.clone();
    h.xattrs.clear();
    let mut s = entry(&format!("{dir}/s"), Kind::Symlink);
    s.link = b"../../x".to_vec();
    let mut wh = entry(&format!("{dir}/w"), Kind::Whiteout);
    wh.mode = 0;
    entries.extend([f, h, s, wh]);
    entries.sort_by(|a, b| format::path::cmp(&a.path, &b.path));
    Index {
        created_ns: 1,
        tool: "t".into(),
        frame_size: 1024,
        level: 3,
        tar_size: 1024,
        entries,
        frames: vec![Frame {
            c_off: 0,
            c_len: 10,
            u_off: 0,
            u_len: 1024,
            digest: [1; 16],
        }],
        parent: Some(Parent {
            name: "p".into(),
            index_digest: [2; 16],
        }),
        prefetch: vec![b"d0".to_vec()],
    }
}

/// Byte-level mutations of `base`: flips, overwrites, insertions, cuts.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len().max(1);
    proptest::collection::vec((0..n, any::<u8>(), 0u8..4), 1..12).prop_map(move |edits| {
        let mut b = base.clone();
        for (at, byte, how) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match how {
                0 if !b.is_empty() => b[at] ^= byte | 1,
                1 if !b.is_empty() => b[at] = byte,
                2 => b.insert(at, byte),
                _ => b.truncate(at),
            }
        }
        b
    })
}

/// A whole snapshot object around `raw` (an encoded index, maybe hostile),
/// with a valid index digest and footer: only the decoder can refuse it.
fn object_with_index(raw: &[u8], data: &[u8], declared_raw: u64) -> Vec<u8> {
    let packed = zstd::bulk::compress(raw, 3).expect("compress");
    let mut obj = data.to_vec();
    let footer = Footer {
        version: format::FORMAT_VERSION,
        index_offset: obj.len() as u64,
        index_len: (SKIPPABLE_HEADER + packed.len()) as u64,
        index_raw_len: declared_raw,
        index_digest: format::digest(&packed),
    };
    obj.extend_from_slice(&skippable_header(INDEX_MAGIC, packed.len()).expect("header"));
    obj.extend_from_slice(&packed);
    obj.extend_from_slice(&footer.encode());
    obj
}

fn open_object(dir: &std::path::Path, obj: &[u8]) -> (Result<(), String>, usize) {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).expect("mkdir");
    std::fs::write(store_dir.join("x.tar.zst"), obj).expect("write");
    let store = lazysnap::store::Store::open(&store_dir.display().to_string()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (res, peak) = peak_of(|| rt.block_on(lazysnap::snapshot::Snapshot::open(&store, "x")).map(|_| ()));
    (res.map_err(|e| e.to_string()), peak)
}

#[test]
fn hostile_bytes_never_panic_and_allocate_within_bounds() {
    let cfg = Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    };

    // Footer: any 64 bytes, any claimed object size.
    let mut runner = TestRunner::new(cfg.clone());
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), FOOTER_LEN), any::<u64>()),
            |(b, size)| {
                let (_, peak) = peak_of(|| Footer::decode(&b, size, "t").is_ok());
                prop_assert!(peak <= 4096, "footer decode allocated {peak} bytes");
                Ok(())
            },
        )
        .expect("footer");

    // Index: arbitrary bytes, and mutations of a valid index.
    let valid = sample_index().encode();
    assert!(Index::decode(&valid, "t").is_ok());
    let index_bound = |len: usize| 48 * len + (1 << 20);
    for strategy in [
        proptest::collection::vec(any::<u8>(), 0..4096).boxed(),
        mutated(valid.clone()).boxed(),
    ] {
        let mut runner = TestRunner::new(cfg.clone());
        runner
            .run(&strategy, |b| {
                let (_, peak) = peak_of(|| Index::decode(&b, "t").is_ok());
                prop_assert!(
                    peak <= index_bound(b.len()),
                    "index of {} bytes allocated {peak}",
                    b.len()
                );
                Ok(())
            })
            .expect("index");
    }

    // A crafted front-coded index: every entry reuses a 4000-byte prefix
    // for two bytes of input. Refused by the path budget, cheaply.
    let mut hostile = sample_index();
    let deep = "x".repeat(250);
    let mut p = String::new();
    for _ in 0..16 {
        p = if p.is_empty() {
            deep.clone()
        } else {
            format!("{p}/{deep}")
        };
        hostile.entries.push(entry(&p, Kind::Dir));
    }
    for i in 0..20_000 {
        hostile.entries.push(entry(&format!("{p}/{i:05}"), Kind::Fifo));
    }
    hostile.entries.sort_by(|a, b| format::path::cmp(&a.path, &b.path));
    let raw = hostile.encode();
    let (res, peak) = peak_of(|| Index::decode(&raw, "t").map(|_| ()));
    let err = res.expect_err("path budget");
    assert!(err.to_string().contains("paths add up"), "{err}");
    assert!(peak <= index_bound(raw.len()), "{peak} for {} bytes", raw.len());
    eprintln!(
        "front-coded bomb: {} index bytes would expand to {} MiB of paths; refused after {peak} bytes",
        raw.len(),
        (20_000 * 4010) >> 20
    );

    // A frame declaring 64 MiB (the most allowed) around 100 bytes.
    let small = zstd::bulk::compress(&[1u8; 1000], 3).expect("compress");
    let frame = Frame {
        c_off: 0,
        c_len: small.len() as u64,
        u_off: 0,
        u_len: 64 << 20,
        digest: format::digest(&small),
    };
    let (res, peak) = peak_of(|| lazysnap::fetch::decode_frame(0, &frame, &small, "t").map(|_| ()));
    assert!(res.is_err());
    assert!(peak <= 64 * small.len() + (1 << 20), "frame decode allocated {peak}");

    // Tar headers: arbitrary bytes, and mutations of an archive with pax
    // records (newlines in values), long names, links and xattrs.
    let tar_bound = |len: usize| 4 * len + (256 << 10);
    let mut archive = Vec::new();
    for (i, name) in ["a/b", "long/\nname/with/newline/".repeat(10).as_str(), "c"]
        .iter()
        .enumerate()
    {
        let mut e = entry(name, if i == 1 { Kind::Dir } else { Kind::File });
        e.xattrs = vec![(b"user.x".to_vec(), b"line1\nline2".to_vec())];
        e.mtime = -3;
        e.mtime_nsec = 5;
        format::tarhdr::write_header(&e, &mut archive);
    }
    archive.resize(archive.len() + 1024, 0);
    let read_all = |b: &[u8]| {
        let mut r = format::tarread::TarReader::new(b, "t");
        let mut n = 0;
        while let Ok(Some(_)) = r.next_entry() {
            n += 1;
        }
        n
    };
    assert_eq!(read_all(&archive), 3, "the unmutated archive reads");
    for strategy in [
        proptest::collection::vec(any::<u8>(), 0..8192).boxed(),
        mutated(archive.clone()).boxed(),
    ] {
        let mut runner = TestRunner::new(cfg.clone());
        runner
            .run(&strategy, |b| {
                let (_, peak) = peak_of(|| read_all(&b));
                prop_assert!(peak <= tar_bound(b.len()), "tar of {} bytes allocated {peak}", b.len());
                Ok(())
            })
            .expect("tar");
    }
    // A pax header declaring 2 GiB in a 1 KiB archive.
    let mut lying = Vec::new();
    format::tarhdr::write_header(&entry("x", Kind::File), &mut lying);
    let mut pax = lying[..512].to_vec();
    pax[156] = b'x';
    pax[124..136].copy_from_slice(b"17777777777\0");
    pax[148..156].copy_from_slice(b"        ");
    let sum: u32 = pax.iter().map(|b| u32::from(*b)).sum();
    pax[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    pax.resize(1024, 0);
    let (n, peak) = peak_of(|| read_all(&pax));
    assert_eq!(n, 0);
    assert!(peak <= tar_bound(pax.len()), "lying pax header: {peak}");

    // Whole objects with valid digests: mutated raw indexes, and footers
    // declaring huge decompressed sizes.
    let tmp = tempfile::tempdir().expect("tmp");
    let data = vec![0u8; 10];
    let (ok, _) = open_object(tmp.path(), &object_with_index(&valid, &data, valid.len() as u64));
    assert_eq!(ok, Ok(()), "the unmutated object opens");
    for declared in [valid.len() as u64 + 1, 1 << 20, 1 << 30, u64::MAX] {
        let obj = object_with_index(&valid, &data, declared);
        let (res, peak) = open_object(tmp.path(), &obj);
        assert!(res.is_err(), "declared {declared}");
        assert!(peak <= 48 * valid.len() + (4 << 20), "declared {declared}: {peak}");
    }
    let mut runner = TestRunner::new(Config { cases: 150, ..cfg });
    runner
        .run(&mutated(valid.clone()), |raw| {
            let obj = object_with_index(&raw, &data, raw.len() as u64);
            let (_, peak) = open_object(tmp.path(), &obj);
            prop_assert!(peak <= 48 * raw.len() + (4 << 20), "object open allocated {peak}");
            Ok(())
        })
        .expect("objects");
}
