//! Maglev table build and lookup, side by side with the crates.io crates
//! `maglev-hash` 0.1 and `maglev` 0.2 in the same run.
//!
//! ```text
//! cargo bench --bench maglev
//! ```
//!
//! Groups:
//! * `build/N=100`, `build/N=1000`: one table of M = 65537 slots. The peers
//!   take their node list by value, so the clone is done outside the timing.
//! * `lookup`: per-flow lookups over 4096 precomputed 64-bit flow hashes
//!   (throughput in elements). `flowpin` gets the flow hash (that is its
//!   API: the BPF side and the caller hash the 5-tuple); the peers hash the
//!   key themselves (std's `DefaultHasher`, a seed word then the key, then
//!   `% len`). The like-for-like line is `flowpin-maglev DefaultHasher(seed,
//!   key) + lookup`: the same hasher fed the same words, then our lookup.
//!   `lookup(flow_hash)` alone is the cost when the hash is already known
//!   (the data path's case), and `ring[h % M]` the plain division baseline
//!   on the same ring.
//! * `build_many`: 64 tables (VIPs) of N = 100, one after another vs
//!   `Maglev::build_many` on all cores.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use flowpin::maglev::Maglev;
use maglev::ConsistentHasher;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::hint::black_box;
use std::time::Duration;

const M: u32 = 65537;

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:443", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn flow_hashes(n: usize) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

fn build(c: &mut Criterion) {
    for n in [100usize, 1000] {
        let k = keys(n);
        // Same table size for everyone.
        let peer_a = maglev_hash::MaglevTable::with_capacity(k.clone(), M as usize);
        let peer_b = maglev::Maglev::with_capacity(k.clone(), M as usize);
        assert_eq!(peer_b.capacity(), M as usize);
        drop((peer_a, peer_b));

        let mut g = c.benchmark_group(format!("build/N={n}"));
        // `maglev` 0.2 takes ~0.1-0.4 s per table: flat sampling keeps the run short.
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("flowpin-maglev", |b| {
            b.iter(|| Maglev::build(black_box(&k), M).expect("valid input"))
        });
        g.bench_function("maglev-hash 0.1", |b| {
            b.iter_batched(
                || k.clone(),
                |k| maglev_hash::MaglevTable::with_capacity(k, M as usize),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("maglev 0.2", |b| {
            b.iter_batched(
                || k.clone(),
                |k| maglev::Maglev::with_capacity(k, M as usize),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

fn lookup(c: &mut Criterion) {
    let k = keys(100);
    let hashes = flow_hashes(4096);
    let ours = Maglev::build(&k, M).expect("valid input");
    let peer_a = maglev_hash::MaglevTable::with_capacity(k.clone(), M as usize);
    let peer_b = maglev::Maglev::with_capacity(k.clone(), M as usize);
    let std_hash = BuildHasherDefault::<DefaultHasher>::default();

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(hashes.len() as u64));
    g.bench_function("flowpin-maglev lookup(flow_hash)", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc ^= ours.lookup(h);
            }
            acc
        })
    });
    g.bench_function("baseline ring[h % M] (division)", |b| {
        let ring = ours.ring();
        let m = black_box(u64::from(M));
        b.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc ^= ring[(h % m) as usize];
            }
            acc
        })
    });
    g.bench_function("flowpin-maglev DefaultHasher(seed, key) + lookup", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for h in black_box(&hashes) {
                // What the peers' get() hashes: a seed word, then the key.
                let mut st = std_hash.build_hasher();
                st.write_u64(2);
                h.hash(&mut st);
                acc ^= ours.lookup(st.finish());
            }
            acc
        })
    });
    g.bench_function("maglev-hash 0.1 get(key)", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for h in black_box(&hashes) {
                acc ^= peer_a.get(h).map_or(0, String::len);
            }
            acc
        })
    });
    g.bench_function("maglev 0.2 get(key)", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for h in black_box(&hashes) {
                acc ^= peer_b.get(h).map_or(0, String::len);
            }
            acc
        })
    });
    g.finish();
}

fn build_many(c: &mut Criterion) {
    let sets: Vec<Vec<String>> = (0..64)
        .map(|v| (0..100).map(|i| format!("vip{v}-backend-{i}")).collect())
        .collect();
    let jobs: Vec<(&[String], u32)> = sets.iter().map(|s| (s.as_slice(), M)).collect();
    let mut g = c.benchmark_group("build_many/64 tables N=100");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(jobs.len() as u64));
    g.bench_function("one after another", |b| {
        b.iter(|| {
            jobs.iter()
                .map(|(k, m)| Maglev::build(k, *m).expect("valid input"))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("Maglev::build_many (all cores)", |b| {
        b.iter(|| Maglev::build_many(black_box(&jobs)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = build, lookup, build_many
}
criterion_main!(benches);
