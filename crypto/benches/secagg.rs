//! Secure-aggregation costs, compared in one run with the raw PRG they are built on:
//!
//! * `secagg/prg_raw/{m}`: `8m` bytes of AES-128-CTR keystream written into an 8 KiB buffer
//!   (one core): the generator alone, without derivation or vector.
//! * `secagg/add_mask/{m}`: one seed expanded and added into an `m`-word vector (one core).
//!   `add_mask / prg_raw` is the mask-expansion efficiency.
//! * `secagg/client_masks_1core/{n}x{m}` and `secagg/client_masks/{n}x{m}`: a client's round-2
//!   masking (self mask + `n − 1` pairwise masks, including per-seed key setup), on one rayon
//!   thread and on all cores. Throughput counts keystream bytes, `8·n·m`.
//! * `secagg/server_unmask/{n}x{m}`: the server's final step (reconstruct seeds and keys, sum,
//!   remove masks) with 10% of clients dropped after round 1. Throughput counts elements `m`.
//!
//! Run: `cargo bench -p parley-crypto --bench secagg`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ctr::cipher::{Block, KeyIvInit, StreamCipherCore};
use parley_crypto::secagg::prg::{KEYSTREAM_CHUNK, Prg, Sign, add_mask, add_masks};
use parley_crypto::secagg::{Client, Params, PeerKeys, Server, ServerAwaitingUnmask, Signer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The raw generator: AES-128-CTR (128-bit big-endian counter) writing keystream blocks.
type RawCtr = ctr::CtrCore<aes::Aes128, ctr::flavors::Ctr128BE>;

const LENGTHS: [usize; 2] = [10_000, 100_000];
const PARTIES: [u32; 3] = [10, 50, 100];

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g
}

fn prg_bench(c: &mut Criterion) {
    let mut g = configure(c, "secagg/prg_raw");
    for m in LENGTHS {
        g.throughput(Throughput::Bytes(8 * m as u64));
        g.bench_function(BenchmarkId::from_parameter(m), |b| {
            let mut blocks = [Block::<RawCtr>::default(); KEYSTREAM_CHUNK / 16];
            b.iter(|| {
                let mut ctr = RawCtr::new(&[7; 16].into(), &[9; 16].into());
                let mut left = m / 2;
                while left > 0 {
                    let n = left.min(blocks.len());
                    ctr.write_keystream_blocks(&mut blocks[..n]);
                    left -= n;
                }
                black_box(&blocks);
            })
        });
    }
    g.finish();

    let mut g = configure(c, "secagg/add_mask");
    for m in LENGTHS {
        g.throughput(Throughput::Bytes(8 * m as u64));
        g.bench_function(BenchmarkId::from_parameter(m), |b| {
            let mut v = vec![0u64; m];
            b.iter(|| add_mask(black_box(&mut v), &[7; 32], Sign::Plus))
        });
    }
    g.finish();
}

/// A client's round-2 masking: `n` seeds (self + pairwise), key setup included.
fn client_masks(v: &mut [u64], seeds: &[[u8; 32]]) {
    let masks: Vec<(Prg, Sign)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                Prg::new(s),
                if i.is_multiple_of(2) {
                    Sign::Plus
                } else {
                    Sign::Minus
                },
            )
        })
        .collect();
    add_masks(v, &masks);
}

fn client_bench(c: &mut Criterion) {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (name, single) in [
        ("secagg/client_masks_1core", true),
        ("secagg/client_masks", false),
    ] {
        let mut g = configure(c, name);
        for n in PARTIES {
            for m in LENGTHS {
                let seeds: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
                g.throughput(Throughput::Bytes(8 * m as u64 * u64::from(n)));
                g.bench_function(BenchmarkId::from_parameter(format!("{n}x{m}")), |b| {
                    let mut v = vec![0u64; m];
                    if single {
                        b.iter(|| one.install(|| client_masks(black_box(&mut v), &seeds)))
                    } else {
                        b.iter(|| client_masks(black_box(&mut v), &seeds))
                    }
                });
            }
        }
        g.finish();
    }
}

/// Runs rounds 0–3 for `n` clients (10% dropping after round 1) and returns the server ready
/// to finish, and the expected sum.
fn server_ready(n: u32, m: usize) -> (ServerAwaitingUnmask, Vec<u64>) {
    let mut rng = StdRng::seed_from_u64(u64::from(n) ^ m as u64);
    let mut keys = PeerKeys::new();
    let mut signers: BTreeMap<u32, Signer> = BTreeMap::new();
    for i in 1..=n {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let kp = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        keys.insert(i, kp.public_key().as_ref().try_into().unwrap());
        signers.insert(
            i,
            Arc::new(move |msg: &[u8]| {
                let mut out = [0u8; 64];
                out.copy_from_slice(kp.sign(msg).as_ref());
                out
            }),
        );
    }
    let params = Params {
        job_id: "bench".into(),
        n,
        threshold: (2 * n).div_ceil(3),
        vector_len: m,
        max_vector_len: m,
    };
    let dropped = |i: u32| i.is_multiple_of(10);

    let mut server = Server::new(params.clone(), keys.clone()).unwrap();
    let mut clients = Vec::new();
    for i in 1..=n {
        let c = Client::new(
            params.clone(),
            i,
            signers[&i].clone(),
            keys.clone(),
            &mut rng,
        )
        .unwrap();
        let (c, advert) = c.round0();
        server.add_advertisement(advert).unwrap();
        clients.push((i, c));
    }
    let (mut server, adverts) = server.finish_round0().unwrap();
    let mut next = Vec::new();
    for (i, c) in clients {
        let (c, shares) = c.round1(&adverts).unwrap();
        server.add_shares(i, shares).unwrap();
        next.push((i, c));
    }
    let (mut server, forwarded) = server.finish_round1().unwrap();
    let mut expected = vec![0u64; m];
    let mut waiting = Vec::new();
    for (i, c) in next {
        if dropped(i) {
            continue;
        }
        let input: Vec<u64> = (0..m).map(|_| rng.next_u64()).collect();
        for (e, x) in expected.iter_mut().zip(&input) {
            *e = e.wrapping_add(*x);
        }
        let (c, masked) = c.round2(&forwarded[&i], &input).unwrap();
        server.add_masked_input(masked).unwrap();
        waiting.push(c);
    }
    let (mut server, u3) = server.finish_round2().unwrap();
    for c in waiting {
        server.add_unmask(c.round3(&u3).unwrap()).unwrap();
    }
    (server, expected)
}

fn server_bench(c: &mut Criterion) {
    let mut g = configure(c, "secagg/server_unmask");
    g.measurement_time(Duration::from_secs(4));
    for n in PARTIES {
        for m in LENGTHS {
            let (server, expected) = server_ready(n, m);
            assert_eq!(server.clone().finish().unwrap(), expected);
            g.throughput(Throughput::Elements(m as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{n}x{m}")), |b| {
                b.iter_batched(
                    || server.clone(),
                    |s| black_box(s.finish().unwrap()),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, prg_bench, client_bench, server_bench);
criterion_main!(benches);
