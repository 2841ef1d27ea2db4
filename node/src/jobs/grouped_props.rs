//! Properties of the grouped intersection-aggregate parties (`psi_sum::SumSenderParty`,
//! `psi_sum::SumReceiverParty`, under PSI sum, lift and overlap), run against each other in
//! process through the wire encoding:
//! * with the noise switched off (a release closure that returns zero noise, which exists only
//!   in these tests: every job module builds its closure from calibrated mechanisms), the
//!   decrypted per-group totals and counts equal the plain computation on random data, for
//!   several groups and value columns;
//! * P1's view (everything it receives, and the one thing it learns in the clear, the exact
//!   per-group intersection sizes) is the same whatever P2's values are, up to the bytes of
//!   fresh ElGamal ciphertexts under P2's key: nothing P1 receives lets it compute an
//!   un-noised per-arm conversion count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use parley_crypto::grouped::{GroupP1, GroupP2};
use parley_crypto::normalize::IdHash;
use parley_proto::{NoiseInfo, PsiMessage, psi_message};
use proptest::prelude::*;

use super::psi_sum::{GroupNoise, ReleaseFn, SumReceived, SumReceiverParty, SumSenderParty};
use super::two_party::pump;

fn id(i: u32) -> IdHash {
    IdHash::of_normalized(&format!("person{i}@example.com"))
}

/// A release closure that adds no noise and records the exact counts P1 learns.
fn zero_noise(groups: usize, width: usize, learned: Arc<Mutex<Vec<u64>>>) -> ReleaseFn {
    Box::new(move |matched: &[u64]| {
        learned.lock().unwrap().extend_from_slice(matched);
        Ok(GroupNoise {
            sums: vec![0; groups * width],
            counts: vec![0; groups],
            sum_info: vec![NoiseInfo::default(); width],
            count_info: NoiseInfo::default(),
        })
    })
}

/// One grouped run: P1's identifiers with groups, P2's identifiers with `width` values each.
/// Returns P2's decrypted outcome, the counts P1 learned and every message P1 received.
fn run(
    x: &[(u32, u32)],
    y: &[(u32, Vec<u64>)],
    groups: usize,
    width: usize,
    batch_points: usize,
) -> (SumReceived, Vec<u64>, Vec<PsiMessage>) {
    let learned = Arc::new(Mutex::new(Vec::new()));
    let p1 = GroupP1::new(
        x.iter().map(|(i, g)| (id(*i), *g)).collect(),
        groups,
        width,
        1 << 20,
    )
    .unwrap();
    let ids = y.iter().map(|(i, _)| id(*i)).collect();
    let values = y.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let p2 = GroupP2::new(ids, values, groups, width, 1 << 20).unwrap();
    let mut p1 = SumSenderParty::new(p1, batch_points, zero_noise(groups, width, learned.clone()));
    let mut p2 = SumReceiverParty::new(p2, groups, batch_points, vec![(-1, 1 << 24); width]);
    let mut seen = Vec::new();
    pump(&mut p2, &mut p1, |m: &PsiMessage| seen.push(m.clone())).unwrap();
    let got = p2.finish().unwrap();
    let learned = learned.lock().unwrap().clone();
    (got, learned, seen)
}

/// Random P1 identifiers (distinct, each in a group) and P2 identifiers (distinct, `width`
/// values each), drawn from one small universe so that they overlap.
/// Groups, columns, P1's (identifier, group) and P2's (identifier, values).
type Inputs = (usize, usize, Vec<(u32, u32)>, Vec<(u32, Vec<u64>)>);

fn inputs() -> impl Strategy<Value = Inputs> {
    (1usize..=4, 1usize..=3).prop_flat_map(|(groups, width)| {
        let x = prop::collection::btree_map(0u32..120, 0..groups as u32, 0..40);
        let y =
            prop::collection::btree_map(0u32..120, prop::collection::vec(0u64..1000, width), 0..40);
        (Just(groups), Just(width), x, y)
            .prop_map(|(g, w, x, y)| (g, w, x.into_iter().collect(), y.into_iter().collect()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn zero_noise_totals_equal_the_plain_grouped_computation(
        (groups, width, x, y) in inputs(),
        batch_points in prop::sample::select(vec![5usize, 64, 10_000]),
    ) {
        let values: HashMap<u32, &Vec<u64>> = y.iter().map(|(i, v)| (*i, v)).collect();
        let mut counts = vec![0u64; groups];
        let mut totals = vec![vec![0i64; width]; groups];
        for (i, g) in &x {
            if let Some(v) = values.get(i) {
                counts[*g as usize] += 1;
                for (c, v) in v.iter().enumerate() {
                    totals[*g as usize][c] += *v as i64;
                }
            }
        }
        let (got, learned, _) = run(&x, &y, groups, width, batch_points);
        prop_assert_eq!(&got.totals, &totals);
        let want: Vec<i64> = counts.iter().map(|c| *c as i64).collect();
        prop_assert_eq!(&got.noisy_counts, &want);
        prop_assert_eq!(&learned, &counts);
        let mut sizes = vec![0u64; groups];
        for (_, g) in &x {
            sizes[*g as usize] += 1;
        }
        prop_assert_eq!(&got.p1_group_sizes, &sizes);
        prop_assert_eq!(got.p1_identifiers, x.len() as u64);
    }
}

/// What P1 receives with the random bytes (points blinded under P2's fresh key, ciphertexts)
/// taken out: message kinds, streams, counts, group sizes, offsets and lengths.
fn shape(seen: &[PsiMessage], width: usize) -> Vec<String> {
    seen.iter()
        .map(|m| match &m.body {
            Some(psi_message::Body::Header(h)) => format!(
                "header {} {} {} {:?} key {}",
                h.stream,
                h.count,
                h.group_size,
                h.group_sizes,
                h.public_key.len()
            ),
            Some(psi_message::Body::Batch(b)) => {
                format!("batch {} {} {}", b.stream, b.offset, b.points.len())
            }
            Some(psi_message::Body::SumOutcome(_)) => "outcome".into(),
            None => format!("empty {width}"),
        })
        .collect()
}

#[test]
fn p1_sees_the_same_whatever_the_conversions_are() {
    // A lift-shaped job: 2 arms × 2 cohorts, conversions / value / value² per person. P2's
    // universe is the same customers in both runs; only who converted (and for how much)
    // differs, so the per-arm conversion counts differ.
    let x: Vec<(u32, u32)> = (0..80).map(|i| (i, i % 4)).collect();
    let universe = 40..120u32;
    let converting = |i: u32, k: u32| i.is_multiple_of(k);
    let values = |k: u32| -> Vec<(u32, Vec<u64>)> {
        universe
            .clone()
            .map(|i| {
                let c = u64::from(converting(i, k));
                (i, vec![c, c * 150, c * 150 * 150 / 100])
            })
            .collect()
    };
    let (a, learned_a, seen_a) = run(&x, &values(3), 4, 3, 16);
    let (b, learned_b, seen_b) = run(&x, &values(7), 4, 3, 16);
    // The conversions really differ, per arm and cohort.
    assert_ne!(a.totals, b.totals);
    // What P1 learns in the clear is the reach per cell, the same in both runs ...
    assert_eq!(learned_a, learned_b);
    assert_eq!(learned_a.iter().sum::<u64>(), 40);
    // ... and everything it receives has the same shape: P2's key, its blinded identifiers and
    // a fresh ciphertext per column (64 bytes each after each 32-byte point), never a result.
    assert_eq!(shape(&seen_a, 3), shape(&seen_b, 3));
    assert!(!shape(&seen_a, 3).iter().any(|s| s == "outcome"));
    // The ciphertexts are randomised: the same value (0, a non-converter) never encrypts to
    // the same bytes, so equal or unequal ciphertexts tell P1 nothing.
    let pairs: Vec<&[u8]> = seen_a
        .iter()
        .filter_map(|m| match &m.body {
            Some(psi_message::Body::Batch(b)) if b.points.len() % (32 + 3 * 64) == 0 => {
                Some(b.points.as_slice())
            }
            _ => None,
        })
        .collect();
    let mut cts = std::collections::HashSet::new();
    let mut n = 0;
    for batch in pairs {
        for item in batch.chunks(32 + 3 * 64) {
            for ct in item[32..].chunks(64) {
                n += 1;
                assert!(cts.insert(ct.to_vec()), "a ciphertext repeated");
            }
        }
    }
    assert!(n >= 3 * 80, "P1 received {n} ciphertexts");
}

#[test]
fn one_matched_person_gives_its_value() {
    let (got, learned, seen) = run(&[(1, 0)], &[(1, vec![5])], 1, 1, 8);
    assert_eq!((got.totals[0][0], learned[0]), (5, 1));
    assert!(seen.len() >= 3, "{}", seen.len());
}
