//! Exponential ElGamal costs: encryption (single and batched), homomorphic addition,
//! re-randomisation, building the discrete-log table, and decrypting sums of 2^20, 2^32 and
//! 2^40 with the process-wide table (searching `[-2^20, 2^40]`, as an intersection-sum does).
//!
//! Run: `cargo bench -p parley-crypto --bench elgamal`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parley_crypto::elgamal::{
    Ciphertext, DEFAULT_BABY_BITS, DlogTable, SecretKey, encrypt, encrypt_batch, sum,
};

const BATCH: usize = 1_000;

fn encrypt_bench(c: &mut Criterion) {
    let sk = SecretKey::random().unwrap();
    let pk = sk.public_key();
    let mut g = c.benchmark_group("elgamal/encrypt");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| black_box(encrypt(&pk, black_box(123_456)).unwrap().to_bytes()))
    });
    let values: Vec<u64> = (0..BATCH as u64).map(|i| i * 977).collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.bench_with_input(BenchmarkId::new("batch", BATCH), &values, |b, v| {
        b.iter(|| black_box(encrypt_batch(&pk, v).unwrap()))
    });
    g.finish();
}

fn homomorphic_bench(c: &mut Criterion) {
    let sk = SecretKey::random().unwrap();
    let pk = sk.public_key();
    let a = encrypt(&pk, 5).unwrap();
    let b2 = encrypt(&pk, 7).unwrap();
    let many: Vec<Ciphertext> = (0..BATCH as u64)
        .map(|m| encrypt(&pk, m).unwrap())
        .collect();
    let mut g = c.benchmark_group("elgamal");
    g.throughput(Throughput::Elements(1));
    g.bench_function("add", |b| {
        b.iter(|| black_box(black_box(a) + black_box(b2)))
    });
    g.bench_function("add_plain", |b| {
        b.iter(|| black_box(black_box(a).add_plain(black_box(-42))))
    });
    g.bench_function("rerandomize", |b| {
        b.iter(|| black_box(a.rerandomize(&pk).unwrap()))
    });
    g.bench_function("decode", |b| {
        let bytes = a.to_bytes();
        b.iter(|| black_box(Ciphertext::from_bytes(black_box(&bytes)).unwrap()))
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_with_input(BenchmarkId::new("sum", BATCH), &many, |b, m| {
        b.iter(|| black_box(sum(m)))
    });
    g.finish();
}

fn table_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("elgamal/dlog_table");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("build", DEFAULT_BABY_BITS), |b| {
        b.iter(|| black_box(DlogTable::new(DEFAULT_BABY_BITS).unwrap()))
    });
    g.finish();
}

fn decrypt_bench(c: &mut Criterion) {
    // Build the process-wide table outside the measurements, and report it separately.
    let started = Instant::now();
    let table = DlogTable::global();
    eprintln!(
        "elgamal/dlog_table: global table of 2^{} baby steps built in {:.2?}, {} MiB",
        DEFAULT_BABY_BITS,
        started.elapsed(),
        table.memory_bytes() >> 20
    );
    let sk = SecretKey::random().unwrap();
    let pk = sk.public_key();
    let mut g = c.benchmark_group("elgamal/decrypt");
    g.sample_size(10);
    for bits in [20u32, 32, 40] {
        let ct = encrypt(&pk, 1u64 << bits).unwrap();
        g.bench_with_input(BenchmarkId::new("sum_2^", bits), &ct, |b, ct| {
            b.iter(|| black_box(sk.vartime_decrypt(ct, -(1 << 20), 1 << 40, table).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    encrypt_bench,
    homomorphic_bench,
    table_bench,
    decrypt_bench
);
criterion_main!(benches);
