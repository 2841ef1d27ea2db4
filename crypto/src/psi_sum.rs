//! Private intersection-sum with cardinality on ristretto255 (PSI `sum` mode).
//!
//! # What it computes
//!
//! **P1** holds identifiers `X` (e.g. a publisher's list of ad-exposed users); **P2** holds
//! identifiers `Y`, each with a non-negative integer value `v_y` (e.g. purchase amount in cents,
//! already clamped and aggregated per identifier). The protocol releases to P2 the sum
//! `Σ_{y ∈ X ∩ Y} v_y`, plus noise chosen by P1, and P1 learns `|X ∩ Y|`:
//!
//! 1. P1 picks a fresh [`PsiKey`] `a` and sends `H(x)^a` for its distinct identifiers, in a
//!    secret random order (stream [`Stream::SumIds`]).
//! 2. P2 picks a fresh [`PsiKey`] `b` and a fresh ElGamal key pair `(sk, pk)`
//!    ([`crate::elgamal`]). It raises every received point to `b` and, once all of them arrived,
//!    returns the `H(x)^ab` in a fresh secret random order ([`Stream::SumIdsReblinded`]). It also
//!    sends, in a secret random order, the pairs `(H(y)^b, Enc_pk(v_y))` for each of its
//!    identifiers ([`Stream::SumPairs`], 96-byte items; the stream's header carries `pk`).
//! 3. P1 raises each pair's point to `a`, keeps the pairs whose `H(y)^ba` is among the
//!    `H(x)^ab`, adds their ciphertexts homomorphically and counts them (`c = |X ∩ Y|`). It then
//!    adds its differential-privacy noise inside the ciphertext, re-randomises it
//!    ([`SumP1Outcome::noisy_response`]) and sends it back with a noisy count.
//! 4. P2 decrypts the noisy sum with a bounded discrete logarithm ([`SumP2::decrypt_sum`]).
//!
//! `H` is [`hash_to_group`](crate::h2g::hash_to_group) with the PSI tag, as in [`crate::psi`].
//!
//! # What each party learns
//!
//! | party | learns | does not learn |
//! |---|---|---|
//! | P1 | `\|X ∩ Y\|` exactly, and `\|Y\|` (P2's number of identifiers) | which of its identifiers are in the intersection; any value or any sum |
//! | P2 | `\|X\|` (P1's number of distinct identifiers), the noisy sum and the noisy count | which identifiers are in the intersection; the exact sum or count (beyond what the noise allows) |
//!
//! The noise on the sum is added by P1 inside the ciphertext, so P2 never sees an un-noised sum;
//! the noise on the count is P1's business (this module returns the exact count to P1). Neither
//! party learns which identifiers match: P2 returns the `H(x)^ab` shuffled, so P1 cannot link them
//! to its own identifiers; P2 sends its pairs shuffled and encrypted, and receives only one
//! re-randomised ciphertext.
//!
//! # Threat model and assumptions
//!
//! * Semi-honest parties: both follow the protocol but may try to learn more from what they see.
//!   Neither is protected against an actively malicious peer: a malicious P2 could, for example,
//!   encrypt distinct powers of two as values and learn from the sum which of its identifiers
//!   matched (up to the noise); a malicious P1 could return any ciphertext it likes. Noise bounds
//!   what a single release reveals; it does not make the protocol malicious-secure.
//! * Decisional Diffie–Hellman is hard in ristretto255 (for both the blinding and the ElGamal
//!   encryption); keys are fresh per job, drawn from the operating system's generator, never
//!   leave their owner and are zeroed on drop. Shuffles use a generator seeded from the
//!   operating system.
//! * Inputs from the peer are fully validated: every point is a canonical, non-identity
//!   ristretto255 encoding, every ciphertext component a canonical encoding, the public key a
//!   canonical non-identity point; batches arrive contiguously, in order, in whole items and
//!   within the declared counts, which are checked against a limit before anything is allocated.
//!   Violations are errors naming the stream, batch and item, never panics.
//! * The decrypted value must lie in a range P2 declares (e.g. `[−noise bound, |Y| × largest
//!   value + noise bound]`); outside it, decryption fails with [`CryptoError::SumOutOfRange`].
//!   Decryption time depends on the value and is observable only by P2.
//!
//! # References
//!
//! * M. Ion et al., "On Deploying Secure Computing: Private Intersection-Sum-with-Cardinality",
//!   IEEE EuroS&P 2020 (the same message flow, with Paillier encryption).
//! * C. Meadows, "A more efficient cryptographic matchmaking protocol", IEEE S&P 1986.

use std::fmt;

use curve25519_dalek::RistrettoPoint;
use curve25519_dalek::ristretto::CompressedRistretto;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::elgamal::{CIPHERTEXT_LEN, Ciphertext, DlogTable, PublicKey, SecretKey, encrypt_batch};
use crate::error::Stream;
use crate::normalize::IdHash;
use crate::psi::{Inbound, POINT_LEN, PsiKey, blind_ids, reblind};

/// Length in bytes of one item of the pairs stream: a point `H(y)^b` then a ciphertext.
pub const PAIR_LEN: usize = POINT_LEN + CIPHERTEXT_LEN;

/// Items per rayon task.
const PAR_CHUNK: usize = 256;

/// Converts a length to `u64` (lossless on every supported platform).
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A uniformly random permutation source seeded from the operating system's generator.
fn shuffle_rng() -> Result<StdRng, CryptoError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut())
        .map_err(|_| CryptoError::Randomness)?;
    Ok(StdRng::from_seed(*seed))
}

/// The `[offset, offset + len)` slice of an outgoing stream, or an error.
fn outgoing_slice<T>(items: &[T], offset: u64, len: usize) -> Result<&[T], CryptoError> {
    let count = len_u64(items.len());
    let range_err = || CryptoError::OutgoingRange { offset, len, count };
    let start = usize::try_from(offset).map_err(|_| range_err())?;
    let end = start.checked_add(len).ok_or_else(range_err)?;
    items.get(start..end).ok_or_else(range_err)
}

/// Re-blinds a batch of a stream with `key`, reporting bad points at their place in `stream`.
fn reblind_in(
    key: &PsiKey,
    points: &[u8],
    stream: Stream,
    offset: u64,
) -> Result<Vec<u8>, CryptoError> {
    reblind(key, points).map_err(|e| match e {
        CryptoError::NonCanonicalPoint { index, .. } => CryptoError::NonCanonicalPoint {
            stream,
            offset,
            index,
        },
        CryptoError::IdentityPoint { index, .. } => CryptoError::IdentityPoint {
            stream,
            offset,
            index,
        },
        CryptoError::BatchLength { len, .. } => CryptoError::BatchLength {
            stream,
            offset,
            len,
        },
        other => other,
    })
}

/// Decodes one 32-byte point of a stream, rejecting non-canonical encodings and the identity.
fn decode_point(
    bytes: &[u8],
    stream: Stream,
    offset: u64,
    index: usize,
) -> Result<RistrettoPoint, CryptoError> {
    let index = len_u64(index);
    let point = CompressedRistretto::from_slice(bytes)
        .ok()
        .and_then(|c| c.decompress())
        .ok_or(CryptoError::NonCanonicalPoint {
            stream,
            offset,
            index,
        })?;
    if bytes == [0u8; POINT_LEN] {
        return Err(CryptoError::IdentityPoint {
            stream,
            offset,
            index,
        });
    }
    Ok(point)
}

/// P1: holds identifiers only; learns the intersection size and returns the noisy encrypted sum.
///
/// Call order: [`SumP1::blind_batch`] for the outgoing stream, at any time;
/// [`SumP1::on_reblinded_header`] then [`SumP1::on_reblinded`] batches, and
/// [`SumP1::on_pairs_header`] then [`SumP1::on_pairs`] batches (the two inbound streams may
/// interleave); then [`SumP1::finish`] and [`SumP1Outcome::noisy_response`].
pub struct SumP1 {
    key: PsiKey,
    /// Distinct identifiers in a secret random order.
    ids: Vec<IdHash>,
    max_points: u64,
    reblinded: Inbound,
    /// `H(x)^ab` received so far; sorted once the stream is complete.
    reblinded_points: Vec<[u8; POINT_LEN]>,
    pairs: Inbound,
    public_key: Option<PublicKey>,
    /// Pairs `(H(y)^ab, ciphertext)` (96 bytes each) that arrived before the re-blinded stream
    /// was complete; matched and emptied when it completes.
    pending: Vec<u8>,
    /// Pairs matched so far, and the sum of their ciphertexts.
    matched: u64,
    sum: Ciphertext,
}

impl fmt::Debug for SumP1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SumP1")
            .field("outgoing_count", &self.ids.len())
            .field("reblinded", &self.reblinded)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl SumP1 {
    /// Prepares P1's side with a fresh key; removes duplicate identifiers and shuffles the rest.
    ///
    /// `max_points` caps P1's own stream and the number of pairs P2 may declare.
    ///
    /// # Errors
    /// [`CryptoError::LocalCountTooLarge`] if there are more distinct identifiers than
    /// `max_points`; [`CryptoError::Randomness`].
    pub fn new(mut ids: Vec<IdHash>, max_points: u64) -> Result<Self, CryptoError> {
        ids.sort_unstable();
        ids.dedup();
        let count = len_u64(ids.len());
        if count > max_points {
            return Err(CryptoError::LocalCountTooLarge {
                count,
                max: max_points,
            });
        }
        ids.shuffle(&mut shuffle_rng()?);
        Ok(SumP1 {
            key: PsiKey::random()?,
            ids,
            max_points,
            reblinded: Inbound::new(Stream::SumIdsReblinded, POINT_LEN),
            reblinded_points: Vec::new(),
            pairs: Inbound::new(Stream::SumPairs, PAIR_LEN),
            public_key: None,
            pending: Vec::new(),
            matched: 0,
            sum: Ciphertext::zero(),
        })
    }

    /// Number of points P1 sends: its distinct identifiers.
    pub fn outgoing_count(&self) -> u64 {
        len_u64(self.ids.len())
    }

    /// Blinded points `H(x)^a` number `offset .. offset + len` of the outgoing stream,
    /// concatenated.
    ///
    /// # Errors
    /// [`CryptoError::OutgoingRange`] if the range is not inside the outgoing stream.
    pub fn blind_batch(&self, offset: u64, len: usize) -> Result<Vec<u8>, CryptoError> {
        Ok(blind_ids(
            &self.key,
            outgoing_slice(&self.ids, offset, len)?,
        ))
    }

    /// Records the number of re-blinded points P2 declared.
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountMismatch`] unless it equals [`SumP1::outgoing_count`];
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_reblinded_header(&mut self, count: u64) -> Result<(), CryptoError> {
        let expected = self.outgoing_count();
        if self.reblinded.declared.is_none() && count != expected {
            return Err(CryptoError::DeclaredCountMismatch {
                stream: Stream::SumIdsReblinded,
                count,
                expected,
            });
        }
        self.reblinded.header(count)?;
        self.reblinded_points
            .reserve_exact(usize::try_from(count).unwrap_or(0));
        if count == 0 {
            self.on_reblinded_complete()?;
        }
        Ok(())
    }

    /// Accepts re-blinded points `H(x)^ab` number `offset ..` (concatenated 32-byte encodings).
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, bad lengths, and
    /// non-canonical or identity points.
    pub fn on_reblinded(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let stream = Stream::SumIdsReblinded;
        let n = self.reblinded.check(offset, points)?;
        let results: Vec<Result<(), CryptoError>> = points
            .par_chunks(PAR_CHUNK * POINT_LEN)
            .enumerate()
            .map(|(chunk, points)| {
                for (j, p) in points.chunks_exact(POINT_LEN).enumerate() {
                    decode_point(p, stream, offset, chunk * PAR_CHUNK + j)?;
                }
                Ok(())
            })
            .collect();
        results.into_iter().collect::<Result<(), _>>()?;
        self.reblinded_points.extend(
            points
                .chunks_exact(POINT_LEN)
                .map(|c| <[u8; POINT_LEN]>::try_from(c).unwrap_or([0; POINT_LEN])),
        );
        self.reblinded.advance(n);
        if self.reblinded.is_complete() {
            self.on_reblinded_complete()?;
        }
        Ok(())
    }

    /// Sorts the complete set of `H(x)^ab` and matches the pairs that were waiting for it.
    fn on_reblinded_complete(&mut self) -> Result<(), CryptoError> {
        self.reblinded_points.par_sort_unstable();
        let pending = std::mem::take(&mut self.pending);
        self.match_pairs(&pending)
    }

    /// Adds to the running sum and count the pairs (`H(y)^ab` then ciphertext, 96 bytes each)
    /// whose point is in the complete set of `H(x)^ab`.
    fn match_pairs(&mut self, pairs: &[u8]) -> Result<(), CryptoError> {
        let set = &self.reblinded_points;
        let (count, sum) = pairs
            .par_chunks_exact(PAIR_LEN)
            .filter(|pair| {
                <[u8; POINT_LEN]>::try_from(&pair[..POINT_LEN])
                    .is_ok_and(|p| set.binary_search(&p).is_ok())
            })
            .map(|pair| Ciphertext::from_bytes(&pair[POINT_LEN..]).map(|c| (1u64, c)))
            .try_reduce(
                || (0, Ciphertext::zero()),
                |(n1, c1), (n2, c2)| Ok((n1 + n2, c1 + c2)),
            )?;
        self.matched += count;
        self.sum = self.sum + sum;
        Ok(())
    }

    /// Records the number of pairs P2 declared and its ElGamal public key.
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountTooLarge`] above the job's limit;
    /// [`CryptoError::HeaderRepeated`] on a second call; [`CryptoError::PublicKeyLength`],
    /// [`CryptoError::NonCanonicalPublicKey`], [`CryptoError::IdentityPublicKey`] for a bad key.
    pub fn on_pairs_header(&mut self, count: u64, public_key: &[u8]) -> Result<(), CryptoError> {
        if self.pairs.declared.is_some() {
            return Err(CryptoError::HeaderRepeated {
                stream: Stream::SumPairs,
            });
        }
        if count > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream: Stream::SumPairs,
                count,
                max: self.max_points,
            });
        }
        let pk = PublicKey::from_bytes(public_key)?;
        self.pairs.header(count)?;
        self.public_key = Some(pk);
        Ok(())
    }

    /// Accepts pairs number `offset ..`: 96-byte items, each a point `H(y)^b` then the 64-byte
    /// ciphertext of its value.
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, batches that are not
    /// whole items ([`CryptoError::PairBatchLength`]), non-canonical or identity points, and
    /// ciphertexts with a non-canonical component ([`CryptoError::NonCanonicalPairCiphertext`]).
    pub fn on_pairs(&mut self, offset: u64, items: &[u8]) -> Result<(), CryptoError> {
        let stream = Stream::SumPairs;
        let n = self.pairs.check(offset, items)?;
        let points: Vec<u8> = items
            .chunks_exact(PAIR_LEN)
            .flat_map(|item| &item[..POINT_LEN])
            .copied()
            .collect();
        let doubled = reblind_in(&self.key, &points, stream, offset)?;
        drop(points);
        let results: Vec<Result<(), CryptoError>> = items
            .par_chunks(PAR_CHUNK * PAIR_LEN)
            .enumerate()
            .map(|(chunk, items)| {
                for (j, item) in items.chunks_exact(PAIR_LEN).enumerate() {
                    let index = len_u64(chunk * PAR_CHUNK + j);
                    Ciphertext::from_bytes(&item[POINT_LEN..]).map_err(|e| {
                        let component = match e {
                            CryptoError::NonCanonicalCiphertext { component } => component,
                            _ => 1,
                        };
                        CryptoError::NonCanonicalPairCiphertext {
                            stream,
                            offset,
                            index,
                            component,
                        }
                    })?;
                }
                Ok(())
            })
            .collect();
        results.into_iter().collect::<Result<(), _>>()?;
        let mut reblinded_pairs = Vec::with_capacity(items.len());
        for (point, item) in doubled
            .chunks_exact(POINT_LEN)
            .zip(items.chunks_exact(PAIR_LEN))
        {
            reblinded_pairs.extend_from_slice(point);
            reblinded_pairs.extend_from_slice(&item[POINT_LEN..]);
        }
        if self.reblinded.is_complete() {
            self.match_pairs(&reblinded_pairs)?;
        } else {
            self.pending.extend_from_slice(&reblinded_pairs);
        }
        self.pairs.advance(n);
        Ok(())
    }

    /// (received, declared) for the re-blinded stream.
    pub fn reblinded_progress(&self) -> (u64, Option<u64>) {
        self.reblinded.progress()
    }

    /// (received, declared) for the pairs stream.
    pub fn pairs_progress(&self) -> (u64, Option<u64>) {
        self.pairs.progress()
    }

    /// True once both inbound streams are complete.
    pub fn is_complete(&self) -> bool {
        self.reblinded.is_complete() && self.pairs.is_complete()
    }

    /// The intersection size and the encrypted sum, once both inbound streams are complete.
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`] or [`CryptoError::StreamIncomplete`] for either stream.
    pub fn finish(self) -> Result<SumP1Outcome, CryptoError> {
        self.reblinded.complete()?;
        self.pairs.complete()?;
        let public_key = self.public_key.ok_or(CryptoError::HeaderMissing {
            stream: Stream::SumPairs,
        })?;
        Ok(SumP1Outcome {
            intersection_count: self.matched,
            p2_identifiers: self.pairs.received,
            encrypted_sum: self.sum,
            public_key,
        })
    }
}

/// What P1 holds at the end: the exact intersection size and the encrypted, un-noised sum.
///
/// The sum must not leave P1 as is: send only [`SumP1Outcome::noisy_response`].
#[derive(Clone, Debug)]
pub struct SumP1Outcome {
    /// `|X ∩ Y|`: pairs whose identifier P1 also holds.
    pub intersection_count: u64,
    /// `|Y|`: pairs P2 sent.
    pub p2_identifiers: u64,
    /// Encryption under P2's key of the sum of the values of the intersecting pairs.
    pub encrypted_sum: Ciphertext,
    /// P2's ElGamal public key.
    pub public_key: PublicKey,
}

impl SumP1Outcome {
    /// The 64-byte answer for P2: the encrypted sum plus `sum_noise`, re-randomised so it
    /// reveals nothing about which ciphertexts were added.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn noisy_response(&self, sum_noise: i64) -> Result<[u8; CIPHERTEXT_LEN], CryptoError> {
        Ok(self
            .encrypted_sum
            .add_plain(sum_noise)
            .rerandomize(&self.public_key)?
            .to_bytes())
    }
}

/// P2: holds identifiers with values; decrypts the noisy sum.
///
/// Call order: [`SumP2::pairs_batch`] for the outgoing pairs, at any time;
/// [`SumP2::on_ids_header`] then [`SumP2::on_ids`] batches, then
/// [`SumP2::finish_ids_stream`] for the shuffled re-blinded points; finally
/// [`SumP2::decrypt_sum`] on P1's answer.
pub struct SumP2 {
    key: PsiKey,
    secret_key: SecretKey,
    public_key: PublicKey,
    /// Distinct identifiers and their values, in a secret random order.
    ids: Vec<IdHash>,
    values: Vec<u64>,
    max_points: u64,
    incoming: Inbound,
    /// `H(x)^ab` in arrival order, until the stream is finished.
    reblinded: Vec<u8>,
}

impl fmt::Debug for SumP2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SumP2")
            .field("pairs_count", &self.ids.len())
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl SumP2 {
    /// Prepares P2's side with a fresh PSI key and a fresh ElGamal key pair, and shuffles the
    /// pairs.
    ///
    /// `max_points` caps P2's own pairs stream and the number of points P1 may declare.
    ///
    /// # Errors
    /// [`CryptoError::DuplicateIdentifiers`] if an identifier appears more than once (aggregate
    /// first); [`CryptoError::LocalCountTooLarge`] above `max_points`;
    /// [`CryptoError::Randomness`].
    pub fn new(mut items: Vec<(IdHash, u64)>, max_points: u64) -> Result<Self, CryptoError> {
        let count = len_u64(items.len());
        if count > max_points {
            return Err(CryptoError::LocalCountTooLarge {
                count,
                max: max_points,
            });
        }
        items.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let repeated = items.windows(2).filter(|w| w[0].0 == w[1].0).count();
        if repeated > 0 {
            return Err(CryptoError::DuplicateIdentifiers {
                count: len_u64(repeated),
            });
        }
        items.shuffle(&mut shuffle_rng()?);
        let (ids, values) = items.into_iter().unzip();
        let secret_key = SecretKey::random()?;
        Ok(SumP2 {
            key: PsiKey::random()?,
            public_key: secret_key.public_key(),
            secret_key,
            ids,
            values,
            max_points,
            incoming: Inbound::new(Stream::SumIds, POINT_LEN),
            reblinded: Vec::new(),
        })
    }

    /// The 32-byte encoding of P2's fresh ElGamal public key, for the pairs stream's header.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key.to_bytes()
    }

    /// Number of pairs P2 sends: its identifiers.
    pub fn pairs_count(&self) -> u64 {
        len_u64(self.ids.len())
    }

    /// Pairs number `offset .. offset + len` of the outgoing stream: for each, `H(y)^b` then
    /// `Enc_pk(v_y)` with fresh randomness, 96 bytes, concatenated.
    ///
    /// # Errors
    /// [`CryptoError::OutgoingRange`] if the range is not inside the outgoing stream;
    /// [`CryptoError::Randomness`].
    pub fn pairs_batch(&self, offset: u64, len: usize) -> Result<Vec<u8>, CryptoError> {
        let ids = outgoing_slice(&self.ids, offset, len)?;
        let values = outgoing_slice(&self.values, offset, len)?;
        let points = blind_ids(&self.key, ids);
        let cts = encrypt_batch(&self.public_key, values)?;
        let mut out = Vec::with_capacity(len * PAIR_LEN);
        for (point, ct) in points.chunks_exact(POINT_LEN).zip(&cts) {
            out.extend_from_slice(point);
            out.extend_from_slice(ct);
        }
        Ok(out)
    }

    /// Records the number of blinded points P1 declared (`|X|`).
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountTooLarge`] above the job's limit;
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_ids_header(&mut self, count: u64) -> Result<(), CryptoError> {
        if self.incoming.declared.is_none() && count > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream: Stream::SumIds,
                count,
                max: self.max_points,
            });
        }
        self.incoming.header(count)?;
        // A declared count is only a claim: reserve at most 2^20 points (32 MiB) up front, as
        // the other receivers do, and grow as points actually arrive.
        self.reblinded.reserve_exact(
            usize::try_from(count.min(1 << 20))
                .unwrap_or(0)
                .saturating_mul(POINT_LEN),
        );
        Ok(())
    }

    /// Accepts P1's blinded points `H(x)^a` number `offset ..` and raises them to P2's key.
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, bad lengths, and
    /// non-canonical or identity points.
    pub fn on_ids(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let n = self.incoming.check(offset, points)?;
        let doubled = reblind_in(&self.key, points, Stream::SumIds, offset)?;
        self.reblinded.extend_from_slice(&doubled);
        self.incoming.advance(n);
        Ok(())
    }

    /// (received, declared) for P1's stream.
    pub fn ids_progress(&self) -> (u64, Option<u64>) {
        self.incoming.progress()
    }

    /// `|X|`: the number of points P1 declared (0 before its header).
    pub fn p1_identifiers(&self) -> u64 {
        self.incoming.declared.unwrap_or(0)
    }

    /// Ends P1's stream once every declared point arrived: all `H(x)^ab`, concatenated, in a
    /// fresh secret random order.
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`], [`CryptoError::StreamIncomplete`],
    /// [`CryptoError::AlreadyFinished`] on a second call; [`CryptoError::Randomness`].
    pub fn finish_ids_stream(&mut self) -> Result<Vec<u8>, CryptoError> {
        if self.incoming.finished {
            return Err(CryptoError::AlreadyFinished {
                stream: Stream::SumIds,
            });
        }
        self.incoming.complete()?;
        let held = std::mem::take(&mut self.reblinded);
        let mut points: Vec<&[u8]> = held.chunks_exact(POINT_LEN).collect();
        points.shuffle(&mut shuffle_rng()?);
        self.incoming.finished = true;
        Ok(points.concat())
    }

    /// Decrypts P1's answer, a 64-byte ciphertext whose value P2 declares to lie in
    /// `[min, max]`, with the process-wide [`DlogTable::global`] (built on first use; call from
    /// outside rayon's thread pool, see there).
    ///
    /// # Errors
    /// [`CryptoError::CiphertextLength`], [`CryptoError::NonCanonicalCiphertext`] for bad bytes;
    /// [`CryptoError::DecryptRangeEmpty`], [`CryptoError::DecryptRangeTooWide`] for a bad range;
    /// [`CryptoError::SumOutOfRange`] if the value is not in `[min, max]`.
    pub fn decrypt_sum(&self, ciphertext: &[u8], min: i64, max: i64) -> Result<i64, CryptoError> {
        self.decrypt_sum_with(ciphertext, min, max, DlogTable::global())
    }

    /// [`SumP2::decrypt_sum`] with a given discrete-log table.
    ///
    /// # Errors
    /// As for [`SumP2::decrypt_sum`].
    pub fn decrypt_sum_with(
        &self,
        ciphertext: &[u8],
        min: i64,
        max: i64,
        table: &DlogTable,
    ) -> Result<i64, CryptoError> {
        let ct = Ciphertext::from_bytes(ciphertext)?;
        self.secret_key.vartime_decrypt(&ct, min, max, table)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    fn id(i: u16) -> IdHash {
        IdHash::of_normalized(&format!("user{i}@example.com"))
    }

    /// Runs the whole protocol with batches of the given sizes (cycled); returns P1's outcome
    /// and P2's decryption of the answer with `sum_noise`.
    fn run(
        x: &[IdHash],
        y: &[(IdHash, u64)],
        batches: &[usize],
        sum_noise: i64,
        pairs_first: bool,
    ) -> (SumP1Outcome, i64, u64) {
        let mut p1 = SumP1::new(x.to_vec(), 1000).unwrap();
        let mut p2 = SumP2::new(y.to_vec(), 1000).unwrap();
        let mut sizes = batches.iter().copied().cycle();

        let send_pairs = |p1: &mut SumP1, p2: &SumP2, sizes: &mut dyn Iterator<Item = usize>| {
            p1.on_pairs_header(p2.pairs_count(), &p2.public_key())
                .unwrap();
            let mut off = 0;
            while off < p2.pairs_count() {
                let len = sizes.next().unwrap().min((p2.pairs_count() - off) as usize);
                p1.on_pairs(off, &p2.pairs_batch(off, len).unwrap())
                    .unwrap();
                off += len as u64;
            }
        };
        if pairs_first {
            send_pairs(&mut p1, &p2, &mut sizes);
        }
        // P1 → P2.
        p2.on_ids_header(p1.outgoing_count()).unwrap();
        let mut off = 0;
        while off < p1.outgoing_count() {
            let len = sizes
                .next()
                .unwrap()
                .min((p1.outgoing_count() - off) as usize);
            p2.on_ids(off, &p1.blind_batch(off, len).unwrap()).unwrap();
            off += len as u64;
        }
        // P2 → P1.
        let back = p2.finish_ids_stream().unwrap();
        p1.on_reblinded_header(len_u64(back.len() / 32)).unwrap();
        let mut off = 0;
        for chunk in back.chunks(32 * sizes.next().unwrap()) {
            p1.on_reblinded(off, chunk).unwrap();
            off += len_u64(chunk.len() / 32);
        }
        if !pairs_first {
            send_pairs(&mut p1, &p2, &mut sizes);
        }
        assert!(p1.is_complete());
        let outcome = p1.finish().unwrap();
        let answer = outcome.noisy_response(sum_noise).unwrap();
        let sum = p2.decrypt_sum(&answer, -(1 << 30), 1 << 40).unwrap();
        (outcome, sum, p2.p1_identifiers())
    }

    fn plain(x: &[IdHash], y: &[(IdHash, u64)]) -> (u64, i64) {
        let xs: std::collections::BTreeSet<_> = x.iter().collect();
        let hits: Vec<u64> = y
            .iter()
            .filter(|(i, _)| xs.contains(i))
            .map(|(_, v)| *v)
            .collect();
        (hits.len() as u64, hits.iter().sum::<u64>() as i64)
    }

    fn sets() -> impl Strategy<Value = (Vec<IdHash>, Vec<(IdHash, u64)>)> {
        let x = prop::collection::vec((0u16..40).prop_map(id), 0..30);
        let y = prop::collection::btree_map(0u16..40, 0u64..1_000_000, 0..30)
            .prop_map(|m: BTreeMap<u16, u64>| m.into_iter().map(|(k, v)| (id(k), v)).collect());
        (x, y)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn zero_noise_gives_exact_sum_and_count(
            (x, y) in sets(),
            batches in prop::collection::vec(1usize..7, 1..4),
            pairs_first in any::<bool>(),
        ) {
            let (outcome, sum, p1_ids) = run(&x, &y, &batches, 0, pairs_first);
            let (count, expected) = plain(&x, &y);
            prop_assert_eq!(outcome.intersection_count, count);
            prop_assert_eq!(sum, expected);
            prop_assert_eq!(outcome.p2_identifiers, y.len() as u64);
            let distinct: std::collections::BTreeSet<_> = x.iter().collect();
            prop_assert_eq!(p1_ids, distinct.len() as u64);
        }

        #[test]
        fn noise_is_added_to_the_sum(
            (x, y) in sets(),
            noise in -(1i64 << 29)..(1i64 << 29),
        ) {
            let (outcome, sum, _) = run(&x, &y, &[4], noise, false);
            let (count, expected) = plain(&x, &y);
            prop_assert_eq!(outcome.intersection_count, count);
            prop_assert_eq!(sum, expected + noise);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            offset in prop_oneof![Just(0u64), any::<u64>()],
            header in prop_oneof![Just(2u64), any::<u64>()],
        ) {
            let mut p1 = SumP1::new(vec![id(1), id(2)], 8).unwrap();
            let _ = p1.on_reblinded_header(header);
            let _ = p1.on_reblinded(offset, &bytes);
            let _ = p1.on_pairs_header(header, &bytes);
            let _ = p1.on_pairs(offset, &bytes);
            let _ = p1.finish();
            let mut p2 = SumP2::new(vec![(id(1), 5)], 8).unwrap();
            let _ = p2.on_ids_header(header);
            let _ = p2.on_ids(offset, &bytes);
            let _ = p2.finish_ids_stream();
            let _ = p2.decrypt_sum_with(&bytes, 0, 100, &DlogTable::new(4).unwrap());
        }
    }

    /// P1 with its re-blinded stream complete (one identifier) and a pairs header from `p2`.
    fn p1_ready(p2: &SumP2) -> SumP1 {
        let mut p1 = SumP1::new(vec![id(1)], 10).unwrap();
        p1.on_pairs_header(p2.pairs_count(), &p2.public_key())
            .unwrap();
        p1
    }

    #[test]
    fn a_large_declared_stream_reserves_a_bounded_amount() {
        let mut p2 = SumP2::new(vec![(id(1), 5)], 1 << 30).unwrap();
        p2.on_ids_header(1 << 28).unwrap();
        assert!(p2.reblinded.capacity() <= (1 << 20) * POINT_LEN);
    }

    #[test]
    fn bad_pair_point_is_rejected_precisely() {
        let p2 = SumP2::new((0..4).map(|i| (id(i), 10)).collect(), 10).unwrap();
        let mut p1 = p1_ready(&p2);
        let mut batch = p2.pairs_batch(1, 3).unwrap();
        batch[PAIR_LEN..PAIR_LEN + 32].copy_from_slice(&[0xff; 32]);
        p1.on_pairs(0, &p2.pairs_batch(0, 1).unwrap()).unwrap();
        let err = p1.on_pairs(1, &batch).unwrap_err();
        assert_eq!(
            err,
            CryptoError::NonCanonicalPoint {
                stream: Stream::SumPairs,
                offset: 1,
                index: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "intersection-sum: P2's identifier/ciphertext pairs: point 1 of batch at offset 1 is not a canonical ristretto255 encoding"
        );
        batch[PAIR_LEN..PAIR_LEN + 32].copy_from_slice(&[0; 32]);
        assert_eq!(
            p1.on_pairs(1, &batch).unwrap_err(),
            CryptoError::IdentityPoint {
                stream: Stream::SumPairs,
                offset: 1,
                index: 1
            }
        );
        // Rejected batches do not advance the stream.
        assert_eq!(p1.pairs_progress(), (1, Some(4)));
        p1.on_pairs(1, &p2.pairs_batch(1, 3).unwrap()).unwrap();
        assert_eq!(p1.pairs_progress(), (4, Some(4)));
    }

    #[test]
    fn bad_pair_ciphertext_is_rejected_precisely() {
        let p2 = SumP2::new((0..3).map(|i| (id(i), 10)).collect(), 10).unwrap();
        let mut p1 = p1_ready(&p2);
        let good = p2.pairs_batch(0, 3).unwrap();
        let mut bad = good.clone();
        bad[2 * PAIR_LEN + 32..2 * PAIR_LEN + 64].copy_from_slice(&[0xff; 32]);
        let err = p1.on_pairs(0, &bad).unwrap_err();
        assert_eq!(
            err,
            CryptoError::NonCanonicalPairCiphertext {
                stream: Stream::SumPairs,
                offset: 0,
                index: 2,
                component: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "intersection-sum: P2's identifier/ciphertext pairs: the ciphertext of item 2 of batch at offset 0 has a component c1 that is not a canonical ristretto255 encoding"
        );
        let mut bad = good.clone();
        bad[PAIR_LEN + 95] |= 0x80;
        assert_eq!(
            p1.on_pairs(0, &bad).unwrap_err(),
            CryptoError::NonCanonicalPairCiphertext {
                stream: Stream::SumPairs,
                offset: 0,
                index: 1,
                component: 2
            }
        );
        p1.on_pairs(0, &good).unwrap();
    }

    #[test]
    fn wrong_item_sizes_are_rejected() {
        let p2 = SumP2::new((0..3).map(|i| (id(i), 10)).collect(), 10).unwrap();
        let mut p1 = p1_ready(&p2);
        let pairs = p2.pairs_batch(0, 3).unwrap();
        assert_eq!(
            p1.on_pairs(0, &pairs[..2 * 96 + 32]).unwrap_err(),
            CryptoError::PairBatchLength {
                stream: Stream::SumPairs,
                offset: 0,
                len: 224
            }
        );
        assert_eq!(
            p1.on_pairs(0, &pairs[..64]).unwrap_err(),
            CryptoError::PairBatchLength {
                stream: Stream::SumPairs,
                offset: 0,
                len: 64
            }
        );
        p1.on_reblinded_header(1).unwrap();
        assert_eq!(
            p1.on_reblinded(0, &pairs[..33]).unwrap_err(),
            CryptoError::BatchLength {
                stream: Stream::SumIdsReblinded,
                offset: 0,
                len: 33
            }
        );
        let mut p2b = SumP2::new(vec![], 10).unwrap();
        p2b.on_ids_header(2).unwrap();
        assert_eq!(
            p2b.on_ids(0, &pairs[..40]).unwrap_err(),
            CryptoError::BatchLength {
                stream: Stream::SumIds,
                offset: 0,
                len: 40
            }
        );
        assert_eq!(
            p2.decrypt_sum(&pairs[32..95], 0, 10).unwrap_err(),
            CryptoError::CiphertextLength { len: 63 }
        );
        let mut ct = pairs[32..96].to_vec();
        ct[..32].copy_from_slice(&[0xff; 32]);
        assert_eq!(
            p2.decrypt_sum(&ct, 0, 10).unwrap_err(),
            CryptoError::NonCanonicalCiphertext { component: 1 }
        );
    }

    #[test]
    fn counts_above_the_limit_are_rejected_before_allocation() {
        let p2 = SumP2::new(vec![(id(1), 1)], 10).unwrap();
        let mut p1 = SumP1::new(vec![id(1)], 10).unwrap();
        assert_eq!(
            p1.on_pairs_header(u64::MAX, &p2.public_key()).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: Stream::SumPairs,
                count: u64::MAX,
                max: 10
            }
        );
        assert_eq!(
            p1.on_pairs_header(11, &p2.public_key()).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: Stream::SumPairs,
                count: 11,
                max: 10
            }
        );
        assert_eq!(
            p1.on_reblinded_header(u64::MAX).unwrap_err(),
            CryptoError::DeclaredCountMismatch {
                stream: Stream::SumIdsReblinded,
                count: u64::MAX,
                expected: 1
            }
        );
        let mut p2 = SumP2::new(vec![], 10).unwrap();
        assert_eq!(
            p2.on_ids_header(u64::MAX).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: Stream::SumIds,
                count: u64::MAX,
                max: 10
            }
        );
        // Local sets above the limit.
        assert_eq!(
            SumP1::new((0..11).map(id).collect(), 10).unwrap_err(),
            CryptoError::LocalCountTooLarge { count: 11, max: 10 }
        );
        assert_eq!(
            SumP2::new((0..11).map(|i| (id(i), 1)).collect(), 10).unwrap_err(),
            CryptoError::LocalCountTooLarge { count: 11, max: 10 }
        );
    }

    #[test]
    fn bad_public_key_is_rejected() {
        let mut p1 = SumP1::new(vec![id(1)], 10).unwrap();
        assert_eq!(
            p1.on_pairs_header(1, &[]).unwrap_err(),
            CryptoError::PublicKeyLength { len: 0 }
        );
        assert_eq!(
            p1.on_pairs_header(1, &[0; 32]).unwrap_err(),
            CryptoError::IdentityPublicKey
        );
        assert_eq!(
            p1.on_pairs_header(1, &[0xff; 32]).unwrap_err(),
            CryptoError::NonCanonicalPublicKey
        );
        // A rejected header leaves the stream undeclared.
        assert_eq!(p1.pairs_progress(), (0, None));
    }

    #[test]
    fn out_of_order_offsets_are_rejected() {
        let p2 = SumP2::new((0..6).map(|i| (id(i), 10)).collect(), 10).unwrap();
        let mut p1 = p1_ready(&p2);
        let st = Stream::SumPairs;
        assert_eq!(
            p1.on_pairs(1, &p2.pairs_batch(1, 2).unwrap()).unwrap_err(),
            CryptoError::BatchOffsetGap {
                stream: st,
                expected: 0,
                got: 1
            }
        );
        p1.on_pairs(0, &p2.pairs_batch(0, 2).unwrap()).unwrap();
        assert_eq!(
            p1.on_pairs(1, &p2.pairs_batch(1, 2).unwrap()).unwrap_err(),
            CryptoError::BatchOffsetOverlap {
                stream: st,
                expected: 2,
                got: 1
            }
        );
        let mut too_many = p2.pairs_batch(2, 4).unwrap();
        too_many.extend_from_slice(&p2.pairs_batch(0, 1).unwrap());
        assert_eq!(
            p1.on_pairs(2, &too_many).unwrap_err(),
            CryptoError::BatchBeyondDeclared {
                stream: st,
                offset: 2,
                points: 5,
                declared: 6
            }
        );

        // P2's inbound stream.
        let p1 = SumP1::new((0..4).map(id).collect(), 10).unwrap();
        let mut p2 = SumP2::new(vec![], 10).unwrap();
        let pts = p1.blind_batch(0, 4).unwrap();
        assert_eq!(
            p2.on_ids(0, &pts).unwrap_err(),
            CryptoError::HeaderMissing {
                stream: Stream::SumIds
            }
        );
        p2.on_ids_header(4).unwrap();
        assert_eq!(
            p2.on_ids_header(4).unwrap_err(),
            CryptoError::HeaderRepeated {
                stream: Stream::SumIds
            }
        );
        assert_eq!(
            p2.on_ids(2, &pts[64..]).unwrap_err(),
            CryptoError::BatchOffsetGap {
                stream: Stream::SumIds,
                expected: 0,
                got: 2
            }
        );
        p2.on_ids(0, &pts[..64]).unwrap();
        assert_eq!(
            p2.finish_ids_stream().unwrap_err(),
            CryptoError::StreamIncomplete {
                stream: Stream::SumIds,
                received: 2,
                declared: 4
            }
        );
        assert_eq!(
            p2.on_ids(0, &pts[..64]).unwrap_err(),
            CryptoError::BatchOffsetOverlap {
                stream: Stream::SumIds,
                expected: 2,
                got: 0
            }
        );
        p2.on_ids(2, &pts[64..]).unwrap();
        assert_eq!(p2.finish_ids_stream().unwrap().len(), 4 * 32);
        assert_eq!(
            p2.finish_ids_stream().unwrap_err(),
            CryptoError::AlreadyFinished {
                stream: Stream::SumIds
            }
        );
        assert_eq!(
            p2.on_ids(4, &[]).unwrap_err(),
            CryptoError::AlreadyFinished {
                stream: Stream::SumIds
            }
        );
    }

    #[test]
    fn bad_reblinded_point_is_rejected() {
        let mut p1 = SumP1::new((0..3).map(id).collect(), 10).unwrap();
        p1.on_reblinded_header(3).unwrap();
        let mut pts = SumP1::new((0..3).map(id).collect(), 10)
            .unwrap()
            .blind_batch(0, 3)
            .unwrap();
        pts[64..].copy_from_slice(&[0; 32]);
        assert_eq!(
            p1.on_reblinded(0, &pts).unwrap_err(),
            CryptoError::IdentityPoint {
                stream: Stream::SumIdsReblinded,
                offset: 0,
                index: 2
            }
        );
        assert_eq!(
            p1.on_reblinded_header(3).unwrap_err(),
            CryptoError::HeaderRepeated {
                stream: Stream::SumIdsReblinded
            }
        );
    }

    #[test]
    fn finish_requires_both_streams() {
        let p2 = SumP2::new(vec![(id(1), 3)], 10).unwrap();
        let p1 = SumP1::new(vec![id(1)], 10).unwrap();
        assert_eq!(
            p1.finish().unwrap_err(),
            CryptoError::HeaderMissing {
                stream: Stream::SumIdsReblinded
            }
        );
        let mut p1 = p1_ready(&p2);
        p1.on_reblinded_header(1).unwrap();
        assert!(!p1.is_complete());
        assert_eq!(
            p1.finish().unwrap_err(),
            CryptoError::StreamIncomplete {
                stream: Stream::SumIdsReblinded,
                received: 0,
                declared: 1
            }
        );
    }

    #[test]
    fn duplicates_rejected_for_p2_and_removed_for_p1() {
        let items = vec![(id(1), 1), (id(2), 2), (id(1), 3), (id(1), 4)];
        let err = SumP2::new(items, 10).unwrap_err();
        assert_eq!(err, CryptoError::DuplicateIdentifiers { count: 2 });
        assert!(
            err.to_string()
                .contains("aggregate the values per identifier")
        );
        let p1 = SumP1::new(vec![id(1), id(1), id(2)], 10).unwrap();
        assert_eq!(p1.outgoing_count(), 2);
    }

    #[test]
    fn empty_sets_give_zero() {
        let (o, sum, n) = run(&[], &[], &[3], 0, false);
        assert_eq!((o.intersection_count, sum, n), (0, 0, 0));
        let (o, sum, _) = run(&[id(1)], &[], &[3], -7, true);
        assert_eq!((o.intersection_count, sum), (0, -7));
        let (o, sum, _) = run(&[], &[(id(1), 9)], &[3], 0, false);
        assert_eq!((o.intersection_count, sum), (0, 0));
    }

    #[test]
    fn p2_reblinded_points_are_shuffled_and_responses_rerandomised() {
        let p1 = SumP1::new((0..64).map(id).collect(), 100).unwrap();
        let mut p2 = SumP2::new(vec![], 100).unwrap();
        let pts = p1.blind_batch(0, 64).unwrap();
        p2.on_ids_header(64).unwrap();
        p2.on_ids(0, &pts).unwrap();
        let in_order = reblind(&p2.key, &pts).unwrap();
        let out = p2.finish_ids_stream().unwrap();
        assert_ne!(out, in_order);
        let mut a: Vec<&[u8]> = out.chunks(32).collect();
        let mut b: Vec<&[u8]> = in_order.chunks(32).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);

        let (o, _, _) = run(&[id(1)], &[(id(1), 5)], &[1], 0, false);
        assert_ne!(o.noisy_response(0).unwrap(), o.noisy_response(0).unwrap());
    }

    #[test]
    fn debug_prints_no_secrets() {
        let p1 = SumP1::new(vec![id(1)], 10).unwrap();
        let p2 = SumP2::new(vec![(id(1), 1)], 10).unwrap();
        let s = format!("{p1:?} {p2:?}");
        assert!(!s.contains("PsiKey") && !s.contains("SecretKey"), "{s}");
    }
}
