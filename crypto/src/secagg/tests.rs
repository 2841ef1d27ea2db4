//! Secure aggregation: masks cancel, in-process end-to-end runs with dropouts, and every kind of
//! rejected message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::signature::{Ed25519KeyPair, KeyPair};
use x25519_dalek::{PublicKey, StaticSecret};

use super::prg::{Prg, Sign, add_mask};
use super::*;

// ---- Harness --------------------------------------------------------------------------------

/// Ed25519 node keys of a federation of `n`.
struct Federation {
    signers: Vec<Signer>,
    keys: PeerKeys,
}

impl Federation {
    fn new(n: u32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut signers = Vec::new();
        let mut keys = PeerKeys::new();
        for i in 1..=n {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            let kp = Ed25519KeyPair::from_seed_unchecked(&s).unwrap();
            keys.insert(i, kp.public_key().as_ref().try_into().unwrap());
            signers.push(Arc::new(move |m: &[u8]| {
                let mut out = [0u8; 64];
                out.copy_from_slice(kp.sign(m).as_ref());
                out
            }) as Signer);
        }
        Federation { signers, keys }
    }

    fn signer(&self, i: u32) -> &Signer {
        &self.signers[i as usize - 1]
    }
}

fn params(job: &str, n: u32, t: u32, len: usize) -> Params {
    Params {
        job_id: job.to_owned(),
        n,
        threshold: t,
        vector_len: len,
        max_vector_len: 1 << 20,
    }
}

/// `ceil(2n/3)`, at least `n/2 + 1`.
fn two_thirds(n: u32) -> u32 {
    (2 * n).div_ceil(3).max(n / 2 + 1)
}

fn random_inputs(n: u32, len: usize, seed: u64) -> Vec<Vec<u64>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.next_u64()).collect())
        .collect()
}

/// Who stops after which round (a client in none of the sets completes the run).
#[derive(Clone, Debug, Default)]
struct Drops {
    /// Never advertises.
    before0: BTreeSet<u32>,
    /// Advertises, sends no shares.
    after0: BTreeSet<u32>,
    /// Sends shares, no masked input.
    after1: BTreeSet<u32>,
    /// Sends its masked input, no unmasking shares.
    after2: BTreeSet<u32>,
}

impl Drops {
    /// The error the run must end with, if any.
    fn expected_failure(&self, n: u32, t: u32) -> Option<SecAggError> {
        let mut have = n as usize;
        for (round, gone) in [&self.before0, &self.after0, &self.after1, &self.after2]
            .into_iter()
            .enumerate()
        {
            have -= gone.len();
            if have < t as usize {
                return Some(SecAggError::TooFewSurvivors {
                    round: round as u8,
                    have,
                    need: t,
                });
            }
        }
        None
    }

    /// Clients whose inputs are in the sum.
    fn in_sum(&self, i: u32) -> bool {
        !(self.before0.contains(&i) || self.after0.contains(&i) || self.after1.contains(&i))
    }
}

struct Stage0 {
    server: ServerAwaitingShares,
    clients: BTreeMap<u32, ClientAwaitingAdvertisements>,
    adverts: Vec<AdvertiseKeys>,
}

struct Stage1 {
    server: ServerAwaitingInputs,
    clients: BTreeMap<u32, ClientAwaitingShares>,
    forwarded: BTreeMap<u32, Vec<EncryptedShare>>,
}

struct Stage2 {
    server: ServerAwaitingUnmask,
    clients: BTreeMap<u32, ClientAwaitingSurvivors>,
    u3: Vec<u32>,
}

fn stage0(p: &Params, fed: &Federation, drops: &Drops, seed: u64) -> Result<Stage0, SecAggError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::new(p.clone(), fed.keys.clone())?;
    let mut clients = BTreeMap::new();
    for i in 1..=p.n {
        if drops.before0.contains(&i) {
            continue;
        }
        let client = Client::new(
            p.clone(),
            i,
            fed.signer(i).clone(),
            fed.keys.clone(),
            &mut rng,
        )?;
        let (state, advert) = client.round0();
        server.add_advertisement(AdvertiseKeys::from_bytes(&advert.to_bytes())?)?;
        clients.insert(i, state);
    }
    let (server, adverts) = server.finish_round0()?;
    Ok(Stage0 {
        server,
        clients,
        adverts,
    })
}

fn stage1(s: Stage0, drops: &Drops) -> Result<Stage1, SecAggError> {
    let Stage0 {
        mut server,
        clients,
        adverts,
    } = s;
    let adverts: Vec<AdvertiseKeys> = adverts
        .iter()
        .map(|a| AdvertiseKeys::from_bytes(&a.to_bytes()))
        .collect::<Result<_, _>>()?;
    let mut next = BTreeMap::new();
    for (i, c) in clients {
        if drops.after0.contains(&i) {
            continue;
        }
        let (state, shares) = c.round1(&adverts)?;
        let shares = shares
            .iter()
            .map(|e| EncryptedShare::from_bytes(&e.to_bytes()))
            .collect::<Result<_, _>>()?;
        server.add_shares(i, shares)?;
        next.insert(i, state);
    }
    let (server, forwarded) = server.finish_round1()?;
    Ok(Stage1 {
        server,
        clients: next,
        forwarded,
    })
}

fn stage2(s: Stage1, drops: &Drops, inputs: &[Vec<u64>]) -> Result<Stage2, SecAggError> {
    let Stage1 {
        mut server,
        clients,
        forwarded,
    } = s;
    let mut next = BTreeMap::new();
    for (i, c) in clients {
        if drops.after1.contains(&i) {
            continue;
        }
        let (state, masked) = c.round2(&forwarded[&i], &inputs[i as usize - 1])?;
        assert_ne!(masked.vector(), &inputs[i as usize - 1][..]);
        server.add_masked_input(MaskedInput::from_bytes(&masked.to_bytes(), 1 << 20)?)?;
        next.insert(i, state);
    }
    let (server, u3) = server.finish_round2()?;
    Ok(Stage2 {
        server,
        clients: next,
        u3,
    })
}

fn stage3(s: Stage2, drops: &Drops) -> Result<Vec<u64>, SecAggError> {
    let Stage2 {
        mut server,
        clients,
        u3,
    } = s;
    for (i, c) in clients {
        if drops.after2.contains(&i) {
            continue;
        }
        let u2 = c.round2_clients();
        let msg = c.round3(&u3)?;
        // Exactly one share per round-2 client, never both secrets of one client.
        let owners: Vec<u32> = msg.entries().iter().map(|e| e.owner).collect();
        assert_eq!(owners, u2);
        for e in msg.entries() {
            let survivor = u3.contains(&e.owner);
            assert_eq!(e.kind == ShareKind::SelfMaskSeed, survivor);
        }
        server.add_unmask(UnmaskShares::from_bytes(&msg.to_bytes())?)?;
    }
    server.finish()
}

fn run(
    p: &Params,
    fed: &Federation,
    inputs: &[Vec<u64>],
    drops: &Drops,
    seed: u64,
) -> Result<Vec<u64>, SecAggError> {
    let s0 = stage0(p, fed, drops, seed)?;
    let s1 = stage1(s0, drops)?;
    let s2 = stage2(s1, drops, inputs)?;
    stage3(s2, drops)
}

fn plain_sum(inputs: &[Vec<u64>], drops: &Drops) -> Vec<u64> {
    let mut sum = vec![0u64; inputs[0].len()];
    for (i, x) in inputs.iter().enumerate() {
        if drops.in_sum(i as u32 + 1) {
            for (s, v) in sum.iter_mut().zip(x) {
                *s = s.wrapping_add(*v);
            }
        }
    }
    sum
}

/// Runs with `drops` and checks the outcome: the exact sum, or the predicted failure.
fn check_run(n: u32, t: u32, len: usize, drops: &Drops, seed: u64) {
    let p = params("job-e2e", n, t, len);
    let fed = Federation::new(n, seed);
    let inputs = random_inputs(n, len, seed);
    let result = run(&p, &fed, &inputs, drops, seed);
    match drops.expected_failure(n, t) {
        None => assert_eq!(result.unwrap(), plain_sum(&inputs, drops), "{drops:?}"),
        Some(e) => assert_eq!(result.unwrap_err(), e, "{drops:?}"),
    }
}

fn set(v: &[u32]) -> BTreeSet<u32> {
    v.iter().copied().collect()
}

// ---- Masks ----------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The pairwise masks of all clients sum to zero (mod 2^64), while each client's own
    /// combination of masks is not zero; seeds agree from both sides.
    #[test]
    fn pairwise_masks_cancel_exactly(n in 2u32..9, len in 1usize..300, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secrets: Vec<StaticSecret> = (0..n).map(|_| StaticSecret::random_from_rng(&mut rng)).collect();
        let publics: Vec<[u8; 32]> = secrets.iter().map(|s| PublicKey::from(s).to_bytes()).collect();
        let mut total = vec![0u64; len];
        for u in 1..=n {
            let mut mine = vec![0u64; len];
            for v in 1..=n {
                if u == v {
                    continue;
                }
                let seed_uv = pairwise_seed("job", &secrets[u as usize - 1], u, &publics[v as usize - 1], v).unwrap();
                let seed_vu = pairwise_seed("job", &secrets[v as usize - 1], v, &publics[u as usize - 1], u).unwrap();
                prop_assert_eq!(*seed_uv, *seed_vu);
                add_mask(&mut mine, &seed_uv, if v > u { Sign::Plus } else { Sign::Minus });
            }
            prop_assert!(mine.iter().any(|&w| w != 0));
            for (t, w) in total.iter_mut().zip(&mine) {
                *t = t.wrapping_add(*w);
            }
        }
        prop_assert!(total.iter().all(|&w| w == 0));
    }

    /// The Edwards-form key agreement gives X25519's exact result for honest keys and for any
    /// 32 bytes a peer may send (points of the twist, non-canonical `u`, the high bit set).
    #[test]
    fn agreement_equals_x25519(secret: [u8; 32], peer_secret: [u8; 32], raw: [u8; 32]) {
        let mine = StaticSecret::from(secret);
        let honest = PublicKey::from(&StaticSecret::from(peer_secret)).to_bytes();
        for peer_public in [honest, raw] {
            assert_agrees_like_x25519(&mine, peer_public);
        }
    }

    /// Random dropouts at random rounds: the exact sum of the contributing inputs, or
    /// `TooFewSurvivors` naming the first round that fell below the threshold.
    #[test]
    fn end_to_end_with_random_dropouts(n in 5u32..=9, fates in prop::collection::vec(0u8..12, 9), len in 1usize..64, seed: u64) {
        let t = two_thirds(n);
        let mut drops = Drops::default();
        for (i, fate) in (1..=n).zip(&fates) {
            match fate {
                0 => { drops.before0.insert(i); }
                1 => { drops.after0.insert(i); }
                2 => { drops.after1.insert(i); }
                3 => { drops.after2.insert(i); }
                _ => {}
            }
        }
        check_run(n, t, len, &drops, seed);
    }
}

/// `agree` gives X25519's shared secret, or rejects exactly the all-zero (non-contributory) one.
fn assert_agrees_like_x25519(mine: &StaticSecret, peer_public: [u8; 32]) {
    let expected = mine.diffie_hellman(&PublicKey::from(peer_public));
    match agree(mine, &peer_public, 7) {
        Ok(shared) => assert_eq!(*shared, expected.to_bytes()),
        Err(e) => {
            assert_eq!(e, SecAggError::NonContributoryKey { from: 7 });
            assert!(!expected.was_contributory());
        }
    }
}

/// RFC 7748 §5.2 test vector, and the edge cases of the Edwards route: low-order and
/// non-canonical `u` (at or above p = 2^255 − 19), `u = −1`, and a key on the twist.
#[test]
fn agreement_vectors_and_edge_cases() {
    let unhex = |h: &str| -> [u8; 32] {
        let v: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    };
    let scalar = unhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    let u = unhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    let out = unhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    assert_eq!(*agree(&StaticSecret::from(scalar), &u, 2).unwrap(), out);

    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut p_plus_1 = p;
    p_plus_1[0] = 0xee;
    let mut minus_one = p;
    minus_one[0] = 0xec;
    let mut high_bit = u;
    high_bit[31] |= 0x80;
    let mut two = [0u8; 32];
    two[0] = 2; // u = 2 is on the twist of Curve25519
    let mine = StaticSecret::from(scalar);
    for peer in [[0u8; 32], p, p_plus_1, minus_one, high_bit, two, [0xff; 32]] {
        assert_agrees_like_x25519(&mine, peer);
    }
    assert!(
        curve25519_dalek::MontgomeryPoint(two)
            .to_edwards(0)
            .is_none()
    );
}

#[test]
fn hkdf32_matches_ring_hkdf() {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = b"salt";
    let ikm = [7u8; 32];
    let info: [&[u8]; 2] = [b"in", b"fo"];
    let mut expected = [0u8; 32];
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt)
        .extract(&ikm)
        .expand(&info, Len32)
        .unwrap()
        .fill(&mut expected)
        .unwrap();
    assert_eq!(*hkdf32(salt, &ikm, &info), expected);
}

#[test]
fn prg_words_differ_per_seed() {
    let mut a = vec![0u64; 4];
    let mut b = vec![0u64; 4];
    Prg::new(&[1; 32]).add_to(&mut a, Sign::Plus);
    Prg::new(&[2; 32]).add_to(&mut b, Sign::Plus);
    assert_ne!(a, b);
}

// ---- End to end -----------------------------------------------------------------------------

#[test]
fn exact_sum_without_dropouts_n5_to_n12() {
    for n in 5..=12 {
        check_run(
            n,
            two_thirds(n),
            37 + n as usize,
            &Drops::default(),
            u64::from(n),
        );
    }
}

#[test]
fn exact_sum_across_parallel_chunks() {
    // Three rayon chunks and several keystream chunks, with wrap-around inputs.
    check_run(
        5,
        4,
        2 * prg::PARALLEL_CHUNK_WORDS + 123,
        &Drops::default(),
        99,
    );
}

#[test]
fn exact_sum_with_dropouts_after_round0() {
    let drops = Drops {
        after0: set(&[2, 7]),
        ..Drops::default()
    };
    check_run(9, 6, 50, &drops, 1);
    let drops = Drops {
        before0: set(&[4]),
        after0: set(&[1]),
        ..Drops::default()
    };
    check_run(6, 4, 50, &drops, 2);
}

#[test]
fn exact_sum_with_dropouts_after_round1() {
    let drops = Drops {
        after1: set(&[1, 5, 9]),
        ..Drops::default()
    };
    check_run(9, 6, 50, &drops, 3);
}

#[test]
fn exact_sum_with_dropouts_after_round2() {
    let drops = Drops {
        after2: set(&[3, 10]),
        ..Drops::default()
    };
    check_run(10, 7, 50, &drops, 4);
}

#[test]
fn exact_sum_with_mixed_dropouts() {
    let drops = Drops {
        before0: set(&[12]),
        after0: set(&[1]),
        after1: set(&[6]),
        after2: set(&[7]),
    };
    check_run(12, 8, 200, &drops, 5);
}

#[test]
fn too_many_dropouts_fail_with_no_sum_in_every_round() {
    let cases = [
        Drops {
            before0: set(&[1, 2]),
            ..Drops::default()
        },
        Drops {
            after0: set(&[3, 4]),
            ..Drops::default()
        },
        Drops {
            before0: set(&[5]),
            after1: set(&[1]),
            ..Drops::default()
        },
        Drops {
            after2: set(&[2, 5]),
            ..Drops::default()
        },
    ];
    for (round, drops) in cases.iter().enumerate() {
        let failure = drops.expected_failure(6, 5).unwrap();
        assert!(
            matches!(failure, SecAggError::TooFewSurvivors { round: r, need: 5, .. } if r as usize == round)
        );
        check_run(6, 5, 8, drops, 6);
    }
}

// ---- Rejected messages: round 0 -------------------------------------------------------------

#[test]
fn advertisements_replayed_altered_duplicated_or_unknown_are_rejected() {
    let fed = Federation::new(3, 10);
    let mut rng = StdRng::seed_from_u64(10);
    let p = params("job-A", 3, 2, 4);
    let other = params("job-B", 3, 2, 4);
    let (_, replayed) = Client::new(other, 2, fed.signer(2).clone(), fed.keys.clone(), &mut rng)
        .unwrap()
        .round0();
    let mut server = Server::new(p.clone(), fed.keys.clone()).unwrap();
    assert_eq!(
        server.add_advertisement(replayed.clone()).unwrap_err(),
        SecAggError::WrongJob { from: 2, round: 0 }
    );
    let (_, advert) = Client::new(
        p.clone(),
        2,
        fed.signer(2).clone(),
        fed.keys.clone(),
        &mut rng,
    )
    .unwrap()
    .round0();
    let bytes = advert.to_bytes();
    // Any altered byte is rejected; in the keys or signature, as a bad signature by client 2.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        let result = AdvertiseKeys::from_bytes(&b).and_then(|a| server.add_advertisement(a));
        assert!(result.is_err(), "byte {i}");
        if i >= bytes.len() - 128 {
            assert_eq!(
                result.unwrap_err(),
                SecAggError::BadSignature { from: 2, round: 0 }
            );
        }
    }
    server.add_advertisement(advert.clone()).unwrap();
    assert_eq!(
        server.add_advertisement(advert.clone()).unwrap_err(),
        SecAggError::Duplicate { from: 2, round: 0 }
    );
    // A sender index outside 1..=n.
    let mut b = bytes.clone();
    b[6..10].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(
        server
            .add_advertisement(AdvertiseKeys::from_bytes(&b).unwrap())
            .unwrap_err(),
        SecAggError::UnknownParticipant { from: 9, round: 0 }
    );
    // One advertisement is below t = 2.
    assert_eq!(
        server.finish_round0().unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 0,
            have: 1,
            need: 2
        }
    );
}

/// Batch verification accepts exactly the valid lists; one bad signature anywhere (forged,
/// bit-flipped, unknown sender) makes the one-by-one check name it.
#[test]
fn advertisement_batch_verification_matches_one_by_one() {
    let n = 40;
    let fed = Federation::new(n, 21);
    let ads: Vec<AdvertiseKeys> = (1..=n)
        .map(|i| AdvertiseKeys::signed("job-B", i, [i as u8; 32], [7; 32], &**fed.signer(i)))
        .collect();
    let items: Vec<_> = ads
        .iter()
        .map(|a| {
            let bytes = a.to_bytes();
            let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
            (a.sender(), body.to_vec(), signature.try_into().unwrap())
        })
        .collect();
    assert!(batch_verifies(&fed.keys, &items));
    assert!(
        AdvertiseKeys::verify_all(&ads, &fed.keys)
            .iter()
            .all(Result::is_ok)
    );
    for bad in [1u32, 17, 40] {
        let mut forged = ads.clone();
        forged[bad as usize - 1] =
            AdvertiseKeys::signed("job-B", bad, [1; 32], [7; 32], &**fed.signer(bad % n + 1));
        let mut flipped = ads.clone();
        let mut bytes = flipped[bad as usize - 1].to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        flipped[bad as usize - 1] = AdvertiseKeys::from_bytes(&bytes).unwrap();
        for list in [forged, flipped] {
            let results = AdvertiseKeys::verify_all(&list, &fed.keys);
            for (i, r) in (1..=n).zip(results) {
                if i == bad {
                    assert_eq!(
                        r,
                        Err(SecAggError::BadSignature {
                            from: bad,
                            round: 0
                        })
                    );
                } else {
                    assert_eq!(r, Ok(()));
                }
            }
        }
    }
    let mut keys = fed.keys.clone();
    keys.remove(&5);
    let results = AdvertiseKeys::verify_all(&ads, &keys);
    assert_eq!(
        results[4],
        Err(SecAggError::UnknownParticipant { from: 5, round: 0 })
    );
    assert!(!batch_verifies(&keys, &items));
}

#[test]
fn client_rejects_bad_advertisement_lists() {
    let fed = Federation::new(3, 11);
    let p = params("job-A", 3, 2, 4);
    let fresh = || {
        let mut s = stage0(&p, &fed, &Drops::default(), 11).unwrap();
        let c1 = s.clients.remove(&1).unwrap();
        (c1, s.adverts)
    };
    // Duplicate.
    let (c1, mut adverts) = fresh();
    adverts.push(adverts[1].clone());
    assert_eq!(
        c1.round1(&adverts).unwrap_err(),
        SecAggError::Duplicate { from: 2, round: 0 }
    );
    // Our own advertisement missing.
    let (c1, adverts) = fresh();
    assert_eq!(
        c1.round1(&adverts[1..]).unwrap_err(),
        SecAggError::NotIncluded { round: 0 }
    );
    // Our own advertisement replaced by a differently keyed one we also signed.
    let (c1, mut adverts) = fresh();
    adverts[0] = AdvertiseKeys::signed("job-A", 1, [9; 32], [9; 32], &**fed.signer(1));
    assert_eq!(
        c1.round1(&adverts).unwrap_err(),
        SecAggError::AdvertisementMismatch { from: 1 }
    );
    // Forged by the server (signed with another client's key).
    let (c1, mut adverts) = fresh();
    adverts[2] = AdvertiseKeys::signed("job-A", 3, [9; 32], [9; 32], &**fed.signer(2));
    assert_eq!(
        c1.round1(&adverts).unwrap_err(),
        SecAggError::BadSignature { from: 3, round: 0 }
    );
    // A properly signed low-order (all-zero) key.
    let (c1, mut adverts) = fresh();
    adverts[1] = AdvertiseKeys::signed(
        "job-A",
        2,
        [0; 32],
        *adverts[1].masking_public(),
        &**fed.signer(2),
    );
    assert_eq!(
        c1.round1(&adverts).unwrap_err(),
        SecAggError::NonContributoryKey { from: 2 }
    );
    // Below the threshold.
    let (c1, adverts) = fresh();
    assert_eq!(
        c1.round1(&adverts[..1]).unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 0,
            have: 1,
            need: 2
        }
    );
}

// ---- Rejected messages: round 1 -------------------------------------------------------------

#[test]
fn shares_replayed_from_another_job_are_rejected() {
    let fed = Federation::new(3, 12);
    let a = stage1(
        stage0(&params("job-A", 3, 2, 4), &fed, &Drops::default(), 12).unwrap(),
        &Drops::default(),
    )
    .unwrap();
    let b = stage1(
        stage0(&params("job-B", 3, 2, 4), &fed, &Drops::default(), 13).unwrap(),
        &Drops::default(),
    )
    .unwrap();
    let Stage1 {
        mut clients,
        forwarded,
        ..
    } = a;
    let from_b = b.forwarded[&2]
        .iter()
        .find(|e| e.sender() == 1)
        .unwrap()
        .clone();
    // As sent (job B in the header): rejected by job A's client.
    let mut received = forwarded[&2].clone();
    let pos = received.iter().position(|e| e.sender() == 1).unwrap();
    received[pos] = from_b.clone();
    assert_eq!(
        clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::WrongJob { from: 1, round: 1 }
    );
    // Relabelled to job A: the AEAD (key and AAD bind the job) rejects it.
    let mut bytes = from_b.to_bytes();
    let at = bytes.windows(5).position(|w| w == b"job-B").unwrap();
    bytes[at + 4] = b'A';
    received[pos] = EncryptedShare::from_bytes(&bytes).unwrap();
    let a2 = stage1(
        stage0(&params("job-A", 3, 2, 4), &fed, &Drops::default(), 12).unwrap(),
        &Drops::default(),
    )
    .unwrap();
    let mut clients = a2.clients;
    assert_eq!(
        clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::ShareAuthentication { from: 1 }
    );
}

#[test]
fn altered_share_bytes_are_rejected() {
    let fed = Federation::new(3, 14);
    let p = params("job-A", 3, 2, 4);
    let fresh = || {
        stage1(
            stage0(&p, &fed, &Drops::default(), 14).unwrap(),
            &Drops::default(),
        )
        .unwrap()
    };
    let s = fresh();
    let original = s.forwarded[&2].clone();
    let pos = original.iter().position(|e| e.sender() == 3).unwrap();
    let bytes = original[pos].to_bytes();
    let sealed_start = bytes.len() - SEALED_SHARE_LEN;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let Ok(altered) = EncryptedShare::from_bytes(&b) else {
            assert!(i < sealed_start, "byte {i}");
            continue;
        };
        let mut received = original.clone();
        received[pos] = altered;
        let mut s = fresh();
        let result = s.clients.remove(&2).unwrap().round2(&received, &[0; 4]);
        let err = result.unwrap_err();
        if i >= sealed_start {
            assert_eq!(
                err,
                SecAggError::ShareAuthentication { from: 3 },
                "byte {i}"
            );
        }
    }
    // Unaltered, it opens.
    let mut s = fresh();
    s.clients
        .remove(&2)
        .unwrap()
        .round2(&original, &[0; 4])
        .unwrap();
}

#[test]
fn client_rejects_misaddressed_duplicated_and_missing_shares() {
    let fed = Federation::new(3, 15);
    let p = params("job-A", 3, 2, 4);
    let fresh = || {
        stage1(
            stage0(&p, &fed, &Drops::default(), 15).unwrap(),
            &Drops::default(),
        )
        .unwrap()
    };

    let mut s = fresh();
    let mut received = s.forwarded[&2].clone();
    received.push(s.forwarded[&3][0].clone());
    let from = s.forwarded[&3][0].sender();
    assert_eq!(
        s.clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::Misaddressed { from, to: 3 }
    );

    let mut s = fresh();
    let mut received = s.forwarded[&2].clone();
    received.push(received[0].clone());
    let from = received[0].sender();
    assert_eq!(
        s.clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::Duplicate { from, round: 1 }
    );

    let mut s = fresh();
    let received: Vec<EncryptedShare> = s.forwarded[&2]
        .iter()
        .filter(|e| e.sender() != 2)
        .cloned()
        .collect();
    assert_eq!(
        s.clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::NotIncluded { round: 1 }
    );

    let mut s = fresh();
    let received: Vec<EncryptedShare> = s.forwarded[&2]
        .iter()
        .filter(|e| e.sender() == 2)
        .cloned()
        .collect();
    assert_eq!(
        s.clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 4])
            .unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 1,
            have: 1,
            need: 2
        }
    );

    let mut s = fresh();
    let received = s.forwarded[&2].clone();
    assert_eq!(
        s.clients
            .remove(&2)
            .unwrap()
            .round2(&received, &[0; 5])
            .unwrap_err(),
        SecAggError::InputLength {
            expected: 4,
            got: 5
        }
    );
}

#[test]
fn share_naming_the_wrong_recipient_inside_is_rejected() {
    // Participant 2 is played by the test, with channel keys it controls.
    let fed = Federation::new(3, 16);
    let p = params("job-A", 3, 2, 4);
    let drops = Drops {
        before0: set(&[2]),
        ..Drops::default()
    };
    let s0 = stage0(&p, &fed, &drops, 16);
    // With only 1 and 3 the server still reaches t = 2; add 2 by hand below instead.
    let mut s0 = s0.unwrap();
    let mut rng = StdRng::seed_from_u64(16);
    let c2 = StaticSecret::random_from_rng(&mut rng);
    let s2 = StaticSecret::random_from_rng(&mut rng);
    let advert2 = AdvertiseKeys::signed(
        "job-A",
        2,
        PublicKey::from(&c2).to_bytes(),
        PublicKey::from(&s2).to_bytes(),
        &**fed.signer(2),
    );
    let mut adverts = s0.adverts.clone();
    adverts.push(advert2);
    let (c1, shares1) = s0.clients.remove(&1).unwrap().round1(&adverts).unwrap();
    let (_, shares3) = s0.clients.remove(&3).unwrap().round1(&adverts).unwrap();
    let c1_public = *adverts[0].channel_public();
    let forged = |inner_from: u32, inner_to: u32, job: &str| {
        let (channel, _) = ShareChannel::pair(job, &c2, &c1_public, 1, 2).unwrap();
        let mut plain = [0u8; SHARE_PLAINTEXT_LEN];
        plain[..4].copy_from_slice(&inner_from.to_be_bytes());
        plain[4..8].copy_from_slice(&inner_to.to_be_bytes());
        EncryptedShare::new("job-A", 2, 1, channel.seal(&plain).unwrap())
    };
    let mut received: Vec<EncryptedShare> = shares1
        .into_iter()
        .chain(shares3)
        .filter(|e| e.recipient() == 1)
        .collect();
    received.push(forged(2, 3, "job-A"));
    assert_eq!(
        c1.round2(&received, &[0; 4]).unwrap_err(),
        SecAggError::ShareBinding { from: 2 }
    );
}

#[test]
fn server_rejects_bad_share_batches() {
    let fed = Federation::new(3, 17);
    let p = params("job-A", 3, 2, 4);
    let drops = Drops {
        before0: set(&[3]),
        ..Drops::default()
    };
    let s0 = stage0(&p, &fed, &drops, 17).unwrap();
    let Stage0 {
        mut server,
        mut clients,
        adverts,
    } = s0;
    let (_, shares1) = clients.remove(&1).unwrap().round1(&adverts).unwrap();
    let (_, shares2) = clients.remove(&2).unwrap().round1(&adverts).unwrap();
    assert_eq!(
        server.add_shares(3, shares1.clone()).unwrap_err(),
        SecAggError::NotInPreviousRound { from: 3, round: 1 }
    );
    assert_eq!(
        server.add_shares(7, shares1.clone()).unwrap_err(),
        SecAggError::UnknownParticipant { from: 7, round: 1 }
    );
    assert_eq!(
        server.add_shares(2, shares1.clone()).unwrap_err(),
        SecAggError::SenderMismatch {
            from: 2,
            claimed: 1
        }
    );
    assert_eq!(
        server.add_shares(1, shares1[..1].to_vec()).unwrap_err(),
        SecAggError::WrongRecipients { from: 1 }
    );
    let doubled = vec![shares1[0].clone(), shares1[0].clone()];
    assert_eq!(
        server.add_shares(1, doubled).unwrap_err(),
        SecAggError::WrongRecipients { from: 1 }
    );
    server.add_shares(1, shares1.clone()).unwrap();
    assert_eq!(
        server.add_shares(1, shares1).unwrap_err(),
        SecAggError::Duplicate { from: 1, round: 1 }
    );
    // Only client 1's batch: below t = 2.
    assert_eq!(
        server.finish_round1().unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 1,
            have: 1,
            need: 2
        }
    );
    drop(shares2);
}

// ---- Rejected messages: round 2 -------------------------------------------------------------

#[test]
fn masked_inputs_altered_replayed_duplicated_or_wrong_length_are_rejected() {
    let fed = Federation::new(3, 18);
    let p = params("job-A", 3, 2, 6);
    let s1 = stage1(
        stage0(&p, &fed, &Drops::default(), 18).unwrap(),
        &Drops::default(),
    )
    .unwrap();
    let Stage1 {
        mut server,
        mut clients,
        forwarded,
    } = s1;
    let (_, masked) = clients
        .remove(&1)
        .unwrap()
        .round2(&forwarded[&1], &[1, 2, 3, 4, 5, 6])
        .unwrap();
    let bytes = masked.to_bytes();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x80;
        let result =
            MaskedInput::from_bytes(&b, p.max_vector_len).and_then(|m| server.add_masked_input(m));
        assert!(result.is_err(), "byte {i}");
        if i >= bytes.len() - 64 - 48 {
            assert_eq!(
                result.unwrap_err(),
                SecAggError::BadSignature { from: 1, round: 2 },
                "byte {i}"
            );
        }
    }
    // Another job's input, properly signed.
    let replay = MaskedInput::signed("job-Z", 1, vec![0; 6], &**fed.signer(1));
    assert_eq!(
        server.add_masked_input(replay).unwrap_err(),
        SecAggError::WrongJob { from: 1, round: 2 }
    );
    // Wrong length, properly signed.
    let short = MaskedInput::signed("job-A", 2, vec![0; 5], &**fed.signer(2));
    assert_eq!(
        server.add_masked_input(short).unwrap_err(),
        SecAggError::WrongVectorLength {
            from: 2,
            expected: 6,
            got: 5
        }
    );
    server.add_masked_input(masked.clone()).unwrap();
    assert_eq!(
        server.add_masked_input(masked).unwrap_err(),
        SecAggError::Duplicate { from: 1, round: 2 }
    );
    // A declared length above the cap is refused before allocating.
    let long = MaskedInput::signed("job-A", 3, vec![0; 7], &**fed.signer(3)).to_bytes();
    assert_eq!(
        MaskedInput::from_bytes(&long, 6).unwrap_err(),
        SecAggError::CountTooLarge {
            kind: MessageKind::MaskedInput,
            from: 3,
            count: 7,
            max: 6
        }
    );
    assert_eq!(
        server.finish_round2().unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 2,
            have: 1,
            need: 2
        }
    );
}

#[test]
fn masked_input_from_a_round1_dropout_is_rejected() {
    let fed = Federation::new(4, 19);
    let p = params("job-A", 4, 3, 2);
    let drops = Drops {
        after0: set(&[4]),
        ..Drops::default()
    };
    let s1 = stage1(stage0(&p, &fed, &drops, 19).unwrap(), &drops).unwrap();
    let mut server = s1.server;
    let late = MaskedInput::signed("job-A", 4, vec![0; 2], &**fed.signer(4));
    assert_eq!(
        server.add_masked_input(late).unwrap_err(),
        SecAggError::NotInPreviousRound { from: 4, round: 2 }
    );
}

// ---- Rejected messages: round 3 -------------------------------------------------------------

fn through_round2(n: u32, t: u32, drops: &Drops, seed: u64) -> (Stage2, Federation, Params) {
    let fed = Federation::new(n, seed);
    let p = params("job-A", n, t, 5);
    let inputs = random_inputs(n, 5, seed);
    let s0 = stage0(&p, &fed, drops, seed).unwrap();
    let s1 = stage1(s0, drops).unwrap();
    (stage2(s1, drops, &inputs).unwrap(), fed, p)
}

#[test]
fn client_checks_the_survivor_list() {
    let drops = Drops {
        after0: set(&[5]),
        after1: set(&[4]),
        ..Drops::default()
    };
    let (mut s, _, _) = through_round2(5, 3, &drops, 20);
    assert_eq!(s.u3, vec![1, 2, 3]);
    let mut take = |i| s.clients.remove(&i).unwrap();
    assert_eq!(
        take(1).round3(&[1, 2, 5]).unwrap_err(),
        SecAggError::InvalidSurvivor { index: 5 }
    );
    assert_eq!(
        take(2).round3(&[1, 2, 2, 3]).unwrap_err(),
        SecAggError::InvalidSurvivor { index: 2 }
    );
    assert_eq!(
        take(3).round3(&[1, 2, 4]).unwrap_err(),
        SecAggError::NotIncluded { round: 2 }
    );
    let (mut s, _, _) = through_round2(5, 3, &drops, 20);
    assert_eq!(
        s.clients.remove(&1).unwrap().round3(&[1, 2]).unwrap_err(),
        SecAggError::TooFewSurvivors {
            round: 2,
            have: 2,
            need: 3
        }
    );
}

#[test]
fn unmask_messages_altered_duplicated_or_inconsistent_are_rejected() {
    let drops = Drops {
        after1: set(&[4]),
        ..Drops::default()
    };
    let (s, fed, _) = through_round2(5, 3, &drops, 21);
    let Stage2 {
        mut server,
        mut clients,
        u3,
    } = s;
    assert_eq!(u3, vec![1, 2, 3, 5]);
    let msg1 = clients.remove(&1).unwrap().round3(&u3).unwrap();
    let bytes = msg1.to_bytes();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        let result = UnmaskShares::from_bytes(&b).and_then(|m| server.add_unmask(m));
        assert!(result.is_err(), "byte {i}");
    }
    // Told a different survivor list than the server's: wrong kind for participant 5.
    let msg2 = clients.remove(&2).unwrap().round3(&[1, 2, 3]).unwrap();
    assert_eq!(
        server.add_unmask(msg2).unwrap_err(),
        SecAggError::UnmaskContents { from: 2, owner: 5 }
    );
    // Missing an entry, re-signed by its sender.
    let msg3 = clients.remove(&3).unwrap().round3(&u3).unwrap();
    let mut entries = msg3.entries().to_vec();
    entries.pop();
    let short = UnmaskShares::signed("job-A", 3, entries, &**fed.signer(3));
    assert_eq!(
        server.add_unmask(short).unwrap_err(),
        SecAggError::UnmaskContents { from: 3, owner: 5 }
    );
    // From a round-2 dropout.
    let late = UnmaskShares::signed("job-A", 4, vec![], &**fed.signer(4));
    assert_eq!(
        server.add_unmask(late).unwrap_err(),
        SecAggError::NotInPreviousRound { from: 4, round: 3 }
    );
    server.add_unmask(msg1.clone()).unwrap();
    assert_eq!(
        server.add_unmask(msg1).unwrap_err(),
        SecAggError::Duplicate { from: 1, round: 3 }
    );
    // A share of the dropout's masking key altered (and re-signed): reconstruction fails.
    let mut entries = msg3.entries().to_vec();
    let dropped = entries.iter().position(|e| e.owner == 4).unwrap();
    assert_eq!(entries[dropped].kind, ShareKind::MaskingKey);
    entries[dropped].share.y[0] += curve25519_dalek::Scalar::ONE;
    server
        .add_unmask(UnmaskShares::signed("job-A", 3, entries, &**fed.signer(3)))
        .unwrap();
    let msg5 = clients.remove(&5).unwrap().round3(&u3).unwrap();
    server.add_unmask(msg5).unwrap();
    assert_eq!(
        server.finish().unwrap_err(),
        SecAggError::ReconstructionFailed { owner: 4 }
    );
}

// ---- Codec and parameters -------------------------------------------------------------------

#[test]
fn decoding_rejects_truncation_trailing_bytes_wrong_round_magic_and_version() {
    let fed = Federation::new(3, 22);
    let s = stage1(
        stage0(&params("job-A", 3, 2, 4), &fed, &Drops::default(), 22).unwrap(),
        &Drops::default(),
    )
    .unwrap();
    let share = s.forwarded[&1][0].to_bytes();
    let kind = MessageKind::EncryptedShare;
    let mut long = share.clone();
    long.push(0);
    assert_eq!(
        EncryptedShare::from_bytes(&long).unwrap_err(),
        SecAggError::Length {
            kind,
            from: 1,
            expected: share.len(),
            got: share.len() + 1
        }
    );
    assert_eq!(
        EncryptedShare::from_bytes(&share[..share.len() - 1]).unwrap_err(),
        SecAggError::Length {
            kind,
            from: 1,
            expected: share.len(),
            got: share.len() - 1
        }
    );
    assert_eq!(
        EncryptedShare::from_bytes(&share[..5]).unwrap_err(),
        SecAggError::Truncated { kind, len: 5 }
    );
    assert_eq!(
        AdvertiseKeys::from_bytes(&share).unwrap_err(),
        SecAggError::WrongRound {
            kind: MessageKind::AdvertiseKeys,
            from: 1,
            got: 1
        }
    );
    let mut b = share.clone();
    b[0] = b'X';
    assert_eq!(
        EncryptedShare::from_bytes(&b).unwrap_err(),
        SecAggError::BadMagic { kind }
    );
    let mut b = share.clone();
    b[4] = 1; // the version before masked inputs were signed over a digest
    assert_eq!(
        EncryptedShare::from_bytes(&b).unwrap_err(),
        SecAggError::UnsupportedVersion { kind, version: 1 }
    );
    let mut b = share.clone();
    b[12] = 0xFF; // not UTF-8
    assert_eq!(
        EncryptedShare::from_bytes(&b).unwrap_err(),
        SecAggError::JobIdEncoding { kind, from: 1 }
    );
    // An unmasking entry with an unknown kind tag, or a non-canonical share.
    let entries = vec![UnmaskEntry {
        owner: 1,
        kind: ShareKind::MaskingKey,
        share: crate::shamir::ByteShare::from_y_bytes(2, &[0; 64]).unwrap(),
    }];
    let good = UnmaskShares::signed("job-A", 2, entries, &**fed.signer(2)).to_bytes();
    let tag_at = good.len() - 64 - 65;
    let mut b = good.clone();
    b[tag_at] = 7;
    assert_eq!(
        UnmaskShares::from_bytes(&b).unwrap_err(),
        SecAggError::UnknownShareKind { from: 2, tag: 7 }
    );
    let mut b = good.clone();
    b[tag_at + 1..tag_at + 33].fill(0xFF);
    assert_eq!(
        UnmaskShares::from_bytes(&b).unwrap_err(),
        SecAggError::NonCanonicalShare { from: 2 }
    );
    assert_eq!(UnmaskShares::from_bytes(&good).unwrap().to_bytes(), good);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Decoding arbitrary bytes never panics, and what decodes re-encodes to the same bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..400), round in 0u8..4) {
        if bytes.len() >= 12 {
            bytes[..5].copy_from_slice(b"PSAG\x01");
            bytes[5] = round;
            bytes[10] = 0;
            bytes[11] %= 8;
        }
        if let Ok(m) = AdvertiseKeys::from_bytes(&bytes) { prop_assert_eq!(m.to_bytes(), bytes.clone()); }
        if let Ok(m) = EncryptedShare::from_bytes(&bytes) { prop_assert_eq!(m.to_bytes(), bytes.clone()); }
        if let Ok(m) = MaskedInput::from_bytes(&bytes, 64) { prop_assert_eq!(m.to_bytes(), bytes.clone()); }
        if let Ok(m) = UnmaskShares::from_bytes(&bytes) { prop_assert_eq!(m.to_bytes(), bytes.clone()); }
    }
}

#[test]
fn parameters_are_checked() {
    let fed = Federation::new(4, 23);
    let ok = params("job", 4, 3, 10);
    ok.validate().unwrap();
    let bad = [
        (
            Params {
                job_id: String::new(),
                ..ok.clone()
            },
            SecAggError::JobIdLength { len: 0, max: 128 },
        ),
        (
            Params { n: 1, ..ok.clone() },
            SecAggError::ParticipantsOutOfRange { n: 1, max: 10_000 },
        ),
        (
            Params {
                threshold: 2,
                ..ok.clone()
            },
            SecAggError::ThresholdOutOfRange { t: 2, n: 4 },
        ),
        (
            Params {
                threshold: 5,
                ..ok.clone()
            },
            SecAggError::ThresholdOutOfRange { t: 5, n: 4 },
        ),
        (
            Params {
                vector_len: 0,
                ..ok.clone()
            },
            SecAggError::VectorLenOutOfRange {
                len: 0,
                max: 1 << 20,
            },
        ),
        (
            Params {
                vector_len: (1 << 20) + 1,
                ..ok.clone()
            },
            SecAggError::VectorLenOutOfRange {
                len: (1 << 20) + 1,
                max: 1 << 20,
            },
        ),
    ];
    for (p, e) in bad {
        assert_eq!(p.validate().unwrap_err(), e);
        assert_eq!(Server::new(p, fed.keys.clone()).unwrap_err(), e);
    }
    let mut rng = StdRng::seed_from_u64(23);
    assert_eq!(
        Client::new(
            ok.clone(),
            5,
            fed.signer(1).clone(),
            fed.keys.clone(),
            &mut rng
        )
        .unwrap_err(),
        SecAggError::IndexOutOfRange { index: 5, n: 4 }
    );
    let mut missing = fed.keys.clone();
    missing.remove(&3);
    assert_eq!(
        Server::new(ok.clone(), missing).unwrap_err(),
        SecAggError::MissingPeerKey { index: 3 }
    );
}

#[test]
fn debug_output_holds_no_secrets() {
    let fed = Federation::new(3, 24);
    let mut rng = StdRng::seed_from_u64(24);
    let c = Client::new(
        params("job-A", 3, 2, 4),
        1,
        fed.signer(1).clone(),
        fed.keys.clone(),
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        format!("{c:?}"),
        "Client { job_id: \"job-A\", index: 1, .. }"
    );
    let err = SecAggError::ShareAuthentication { from: 3 };
    assert_eq!(
        err.to_string(),
        "round 1: encrypted share from participant 3 failed authentication (altered or replayed)"
    );
}
