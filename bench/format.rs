//! Format benchmarks: index encode / decode / lookup at 100k entries, and
//! frame decode (digest check + zstd) throughput.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lazysnap::fetch::{decode_checked, decode_frame};
use lazysnap::format::{self, path, Entry, Frame, Index, Kind};

/// A synthetic 100k-entry index shaped like a node_modules tree.
fn big_index() -> Index {
    let mut entries = vec![{
        let mut r = Entry::new(Vec::new(), Kind::Dir);
        r.mode = 0o755;
        r
    }];
    let mut offset = 512u64;
    for p in 0..1000 {
        let pkg = format!("node_modules/pkg-{p:04}");
        for d in [&pkg[..12], &pkg[..], &format!("{pkg}/lib")] {
            let mut e = Entry::new(d.as_bytes().to_vec(), Kind::Dir);
            e.mode = 0o755;
            entries.push(e);
        }
        for f in 0..97 {
            let mut e = Entry::new(format!("{pkg}/lib/module-{f:03}.js").into_bytes(), Kind::File);
            e.mode = 0o644;
            e.mtime = 1_700_000_000 + f;
            e.size = 1000 + (f as u64 * 37) % 9000;
            e.offset = offset;
            e.digest = format::digest(&offset.to_le_bytes());
            offset += format::pad_block(e.size) + 512;
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| path::cmp(&a.path, &b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    let frame = 1u64 << 20;
    let n = offset.div_ceil(frame);
    let frames = (0..n)
        .map(|i| Frame {
            c_off: i * frame / 4,
            c_len: frame / 4,
            u_off: i * frame,
            u_len: if i + 1 == n { offset - i * frame } else { frame },
            digest: [i as u8; 16],
        })
        .collect();
    Index {
        created_ns: 0,
        tool: "bench".into(),
        frame_size: frame,
        level: 5,
        tar_size: offset,
        entries,
        frames,
        parent: None,
        prefetch: Vec::new(),
    }
}

fn index_benches(c: &mut Criterion) {
    let idx = big_index();
    let raw = idx.encode();
    let packed = zstd::bulk::compress(&raw, 9).expect("compress");
    eprintln!(
        "index: {} entries, {} raw bytes, {} compressed ({:.1} bytes/entry)",
        idx.entries.len(),
        raw.len(),
        packed.len(),
        packed.len() as f64 / idx.entries.len() as f64
    );
    let mut g = c.benchmark_group("index_100k");
    g.throughput(Throughput::Elements(idx.entries.len() as u64));
    g.bench_function("encode", |b| b.iter(|| black_box(idx.encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(Index::decode(&raw, "bench").expect("decode")))
    });
    g.bench_function("decompress+decode", |b| {
        b.iter(|| {
            let raw = zstd::bulk::decompress(&packed, raw.len()).expect("decompress");
            black_box(Index::decode(&raw, "bench").expect("decode"))
        })
    });
    g.finish();
    let probes: Vec<Vec<u8>> = idx.entries.iter().step_by(97).map(|e| e.path.clone()).collect();
    let mut g = c.benchmark_group("index_100k_lookup");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("find", |b| {
        b.iter(|| {
            for p in &probes {
                black_box(idx.find(p));
            }
        })
    });
    g.finish();
}

fn frame_benches(c: &mut Criterion) {
    // One default-sized frame of source-code-like text at the default level.
    let size = format::DEFAULT_FRAME_SIZE;
    let mut text = Vec::with_capacity(size);
    let mut i = 0u64;
    while text.len() < size {
        text.extend_from_slice(
            format!("export function f{i}(x) {{ return x * {} + {}; }}\n", i % 97, i % 13).as_bytes(),
        );
        i += 1;
    }
    text.truncate(size);
    let comp = zstd::bulk::compress(&text, format::DEFAULT_LEVEL).expect("compress");
    let f = Frame {
        c_off: 0,
        c_len: comp.len() as u64,
        u_off: 0,
        u_len: text.len() as u64,
        digest: format::digest(&comp),
    };
    // As in the mount daemon: large buffers come straight from mmap, so a
    // fresh buffer is a fresh set of page faults.
    lazysnap::sys::return_large_allocations();
    let mut g = c.benchmark_group("frame_decode_default");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("digest+zstd, fresh buffer", |b| {
        b.iter(|| black_box(decode_frame(0, &f, &comp, "bench").expect("decode")))
    });
    let mut spare = Vec::new();
    g.bench_function("zstd, reused buffer", |b| {
        b.iter(|| {
            spare = decode_checked(0, &f, &comp, "bench", std::mem::take(&mut spare), |_| {}).expect("decode");
        })
    });
    g.finish();
}

criterion_group!(benches, index_benches, frame_benches);
criterion_main!(benches);
