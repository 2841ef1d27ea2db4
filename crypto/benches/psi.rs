//! PSI primitive costs: hash-to-group, blinding (hash + mul + compress) and re-blinding
//! (decompress + mul + compress), per element.
//!
//! Run: `cargo bench -p parley-crypto --bench psi`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parley_crypto::h2g::{PSI_HASH_TAG, hash_to_group};
use parley_crypto::normalize::IdHash;
use parley_crypto::psi::{PsiKey, blind_ids, reblind};

const SIZES: [usize; 2] = [1_000, 10_000];

fn ids(n: usize) -> Vec<IdHash> {
    (0..n)
        .map(|i| IdHash::of_normalized(&format!("user{i}@example.com")))
        .collect()
}

fn hash_to_group_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("psi/hash_to_group");
    g.sample_size(10);
    for n in SIZES {
        let ids = ids(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &ids, |b, ids| {
            b.iter(|| {
                for id in ids {
                    black_box(hash_to_group(PSI_HASH_TAG, &id.0));
                }
            })
        });
    }
    g.finish();
}

fn blind_bench(c: &mut Criterion) {
    let key = PsiKey::random().unwrap();
    let mut g = c.benchmark_group("psi/blind");
    g.sample_size(10);
    for n in SIZES {
        let ids = ids(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &ids, |b, ids| {
            b.iter(|| black_box(blind_ids(&key, ids)))
        });
    }
    g.finish();
}

fn reblind_bench(c: &mut Criterion) {
    let key = PsiKey::random().unwrap();
    let mut g = c.benchmark_group("psi/reblind");
    g.sample_size(10);
    for n in SIZES {
        let points = blind_ids(&PsiKey::random().unwrap(), &ids(n));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &points, |b, points| {
            b.iter(|| black_box(reblind(&key, points).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, hash_to_group_bench, blind_bench, reblind_bench);
criterion_main!(benches);
