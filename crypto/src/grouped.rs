//! Grouped private intersection-aggregate on ristretto255: per-group matched counts and sums of
//! several value columns over the intersection (the engine under conversion lift and segmented
//! sums).
//!
//! # What it computes
//!
//! **P1** holds identifiers `X`, each with a group label `g(x) ∈ [0, G)` (an A/B-test arm, a
//! cohort, an audience segment, or a combination of them numbered by the caller). **P2** holds
//! identifiers `Y`, each with a vector of `W` non-negative integer values `v_y` (conversions,
//! revenue in cents, revenue squared in a coarser unit, …, already clamped and aggregated per
//! identifier). The protocol releases to P2, for every group `g` and column `c`,
//! `Σ_{y ∈ X_g ∩ Y} v_y[c]` plus noise chosen by P1, and P1 learns `|X_g ∩ Y|` for every `g`:
//!
//! 1. P1 picks a fresh [`PsiKey`] `a` and sends `H(x)^a` for its distinct identifiers, group by
//!    group (all of group 0, then group 1, …), in a secret random order inside each group; the
//!    stream's header carries the size of every group ([`Stream::GroupIds`]).
//! 2. P2 picks a fresh [`PsiKey`] `b` and a fresh ElGamal key pair `(sk, pk)`. It raises every
//!    received point to `b` and, once all of them arrived, returns the `H(x)^ab` in the same group
//!    blocks, each block in a fresh secret random order ([`Stream::GroupIdsReblinded`]). It also
//!    sends, in a secret random order, the items `(H(y)^b, Enc_pk(v_y[0]), …, Enc_pk(v_y[W−1]))`
//!    ([`Stream::GroupPairs`], `32 + 64·W` bytes each; the header carries `pk`).
//! 3. P1 raises each item's point to `a`, looks up the group of `H(y)^ba` among the `H(x)^ab`,
//!    and adds the item's ciphertexts into that group's `W` accumulators: one ciphertext addition
//!    per value, no scalar multiplication per record. It then adds its differential-privacy noise
//!    inside every accumulator and re-randomises them ([`GroupP1Outcome::noisy_response`]).
//! 4. P2 decrypts the `G·W` noisy totals with a bounded discrete logarithm
//!    ([`GroupP2::decrypt_totals`]).
//!
//! `H` is [`hash_to_group`](crate::h2g::hash_to_group) with the PSI tag, as in [`crate::psi`].
//! With `G = 1` this is the intersection-sum of [`crate::psi_sum`] over several columns at once.
//!
//! # What each party learns
//!
//! | party | learns | does not learn |
//! |---|---|---|
//! | P1 | `\|X_g ∩ Y\|` exactly for every group, and `\|Y\|` | which of its identifiers matched; any value or any sum |
//! | P2 | `\|X_g\|` for every group (the header), and the `G·W` noisy totals | which identifiers matched or are in which group; any exact total (beyond what the noise allows) |
//!
//! The per-group intersection sizes are reach, not results, as long as `Y` is P2's whole customer
//! universe for the period (converters and non-converters alike): the caller must not restrict
//! `Y` to converters, or P1's exact counts become conversion counts. P2's values never leave it
//! unencrypted, and P1's noise is inside each ciphertext before P2 can decrypt it.
//!
//! # Threat model and assumptions
//!
//! As in [`crate::psi_sum`]: semi-honest parties; DDH in ristretto255; fresh keys per job that
//! never leave their owner and are zeroed on drop; shuffles seeded from the operating system.
//! Every input from the peer is validated (canonical non-identity points, canonical ciphertext
//! components, group sizes that add up and stay within the job's limit, contiguous whole-item
//! batches) and a violation is an error naming the stream, batch and item. P1 decodes, and so
//! checks, only the ciphertexts of items that match: the others are never used, and decoding
//! them would cost two square roots each. A malicious P2 could
//! encrypt distinct powers of two and learn which of its identifiers matched, up to the noise; a
//! malicious P1 could report any totals. Noise bounds what one release reveals; it does not make
//! the protocol malicious-secure.
//!
//! Each total must lie in a range P2 declares per column (`[−noise bound, |Y| × largest value +
//! noise bound]`); ranges wider than the discrete-log table are refused before decryption, and a
//! caller should refuse such a job before it starts.

use std::fmt;

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::CryptoError;
use crate::elgamal::{
    CIPHERTEXT_LEN, Ciphertext, DlogTable, PublicKey, SecretKey, check_bounds, encrypt_rows,
};
use crate::error::Stream;
use crate::normalize::IdHash;
use crate::psi::{
    Inbound, POINT_LEN, PsiKey, blind_ids, len_u64, mul_points, outgoing_slice, secure_shuffle_rng,
    validate_points,
};

/// Largest number of groups a job may have.
pub const MAX_GROUPS: usize = 4096;

/// Largest number of value columns a job may have.
pub const MAX_COLUMNS: usize = 16;

/// Length in bytes of one item of the pairs stream with `width` value columns.
pub fn item_len(width: usize) -> usize {
    POINT_LEN + width * CIPHERTEXT_LEN
}

/// Refuses zero or too many groups or value columns.
fn check_shape(groups: usize, width: usize) -> Result<(), CryptoError> {
    if groups == 0 || groups > MAX_GROUPS || width == 0 || width > MAX_COLUMNS {
        return Err(CryptoError::GroupShape {
            groups,
            width,
            max_groups: MAX_GROUPS,
            max_columns: MAX_COLUMNS,
        });
    }
    Ok(())
}

/// The width of the range `[min, max]` as [`GroupP2::decrypt_totals`] sizes its discrete-log
/// table: a caller that builds the table ahead (`DlogTable::for_width` of this) gets the same
/// cached one.
pub fn range_width(min: i64, max: i64) -> u128 {
    (i128::from(max) - i128::from(min)).max(1).unsigned_abs()
}

/// P1: holds identifiers with group labels; learns per-group intersection sizes and returns
/// the noisy encrypted totals.
///
/// Call order: [`GroupP1::group_sizes`] for the outgoing header and [`GroupP1::blind_batch`]
/// for its points, at any time; [`GroupP1::on_reblinded_header`] then
/// [`GroupP1::on_reblinded`] batches, and [`GroupP1::on_pairs_header`] then
/// [`GroupP1::on_pairs`] batches (the two inbound streams may interleave); then
/// [`GroupP1::finish`] and [`GroupP1Outcome::noisy_response`].
pub struct GroupP1 {
    key: PsiKey,
    groups: usize,
    width: usize,
    /// Distinct identifiers, group by group, shuffled inside each group.
    ids: Vec<IdHash>,
    sizes: Vec<u64>,
    /// End (exclusive) of each group's block in the outgoing stream.
    ends: Vec<u64>,
    max_points: u64,
    reblinded: Inbound,
    /// `(H(x)^ab, group)` received so far; sorted by point once the stream is complete.
    lookup: Vec<([u8; POINT_LEN], u32)>,
    pairs: Inbound,
    public_key: Option<PublicKey>,
    /// Re-blinded items that arrived before the re-blinded stream was complete.
    pending: Vec<u8>,
    matched: Vec<u64>,
    /// `groups × width` accumulators, group-major.
    sums: Vec<Ciphertext>,
}

impl fmt::Debug for GroupP1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupP1")
            .field("groups", &self.groups)
            .field("width", &self.width)
            .field("outgoing_count", &self.ids.len())
            .field("reblinded", &self.reblinded)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl GroupP1 {
    /// Prepares P1's side with a fresh key for `groups` groups and `width` value columns.
    ///
    /// Repeats of an identifier in one group are removed. An identifier labelled with two
    /// different groups is an error: the caller decides which group such a person belongs to
    /// (or drops them, counted) before the job.
    ///
    /// # Errors
    /// [`CryptoError::GroupShape`] for zero or too many groups or columns;
    /// [`CryptoError::GroupOutOfRange`] for a label `≥ groups`;
    /// [`CryptoError::ConflictingGroups`]; [`CryptoError::LocalCountTooLarge`] above
    /// `max_points`; [`CryptoError::Randomness`].
    pub fn new(
        mut labelled: Vec<(IdHash, u32)>,
        groups: usize,
        width: usize,
        max_points: u64,
    ) -> Result<Self, CryptoError> {
        check_shape(groups, width)?;
        if let Some(&(_, g)) = labelled.iter().find(|(_, g)| *g as usize >= groups) {
            return Err(CryptoError::GroupOutOfRange { group: g, groups });
        }
        labelled.par_sort_unstable();
        labelled.dedup();
        let conflicts = labelled.windows(2).filter(|w| w[0].0 == w[1].0).count();
        if conflicts > 0 {
            return Err(CryptoError::ConflictingGroups {
                count: len_u64(conflicts),
            });
        }
        let count = len_u64(labelled.len());
        if count > max_points {
            return Err(CryptoError::LocalCountTooLarge {
                count,
                max: max_points,
            });
        }
        let mut by_group: Vec<Vec<IdHash>> = vec![Vec::new(); groups];
        for (id, g) in labelled {
            by_group[g as usize].push(id);
        }
        let mut rng = secure_shuffle_rng()?;
        let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut sizes = Vec::with_capacity(groups);
        for mut block in by_group {
            block.shuffle(&mut rng);
            sizes.push(len_u64(block.len()));
            ids.extend(block);
        }
        let ends = sizes
            .iter()
            .scan(0u64, |end, size| {
                *end += size;
                Some(*end)
            })
            .collect();
        Ok(GroupP1 {
            key: PsiKey::random()?,
            groups,
            width,
            ids,
            sizes,
            ends,
            max_points,
            reblinded: Inbound::new(Stream::GroupIdsReblinded, POINT_LEN),
            lookup: Vec::new(),
            pairs: Inbound::new(Stream::GroupPairs, item_len(width)),
            public_key: None,
            pending: Vec::new(),
            matched: vec![0; groups],
            sums: vec![Ciphertext::zero(); groups * width],
        })
    }

    /// The number of distinct identifiers in each group, for the outgoing stream's header.
    pub fn group_sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// Number of points P1 sends: its distinct identifiers.
    pub fn outgoing_count(&self) -> u64 {
        len_u64(self.ids.len())
    }

    /// Blinded points `H(x)^a` number `offset .. offset + len` of the outgoing stream.
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
    /// [`CryptoError::DeclaredCountMismatch`] unless it equals [`GroupP1::outgoing_count`];
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_reblinded_header(&mut self, count: u64) -> Result<(), CryptoError> {
        let expected = self.outgoing_count();
        if self.reblinded.declared.is_none() && count != expected {
            return Err(CryptoError::DeclaredCountMismatch {
                stream: Stream::GroupIdsReblinded,
                count,
                expected,
            });
        }
        self.reblinded.header(count)?;
        self.lookup
            .reserve_exact(usize::try_from(count).unwrap_or(0));
        if count == 0 {
            self.on_reblinded_complete()?;
        }
        Ok(())
    }

    /// The group of the point number `index` of the outgoing (and so of the re-blinded) stream:
    /// the first group whose block ends after it (a binary search over the block ends).
    fn group_of(&self, index: u64) -> u32 {
        let g = self.ends.partition_point(|&end| end <= index);
        u32::try_from(g.min(self.groups - 1)).unwrap_or(u32::MAX)
    }

    /// Accepts re-blinded points `H(x)^ab` number `offset ..`, in P1's group order.
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, bad lengths, and
    /// non-canonical or identity points.
    pub fn on_reblinded(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let stream = Stream::GroupIdsReblinded;
        let n = self.reblinded.check(offset, points)?;
        validate_points(points, stream, offset)?;
        for (i, p) in points.chunks_exact(POINT_LEN).enumerate() {
            let point = <[u8; POINT_LEN]>::try_from(p).unwrap_or([0; POINT_LEN]);
            self.lookup
                .push((point, self.group_of(offset + len_u64(i))));
        }
        self.reblinded.advance(n);
        if self.reblinded.is_complete() {
            self.on_reblinded_complete()?;
        }
        Ok(())
    }

    fn on_reblinded_complete(&mut self) -> Result<(), CryptoError> {
        self.lookup.par_sort_unstable();
        // The items held so far are the stream's first ones: their batch offset is 0.
        let pending = std::mem::take(&mut self.pending);
        self.match_items(0, &pending)
    }

    /// Adds the re-blinded items (`H(y)^ab` then `W` ciphertexts) whose point P1 holds into the
    /// accumulators of its group. `offset` is the stream index of the first item. Only the
    /// ciphertexts of matched items are decoded, and so checked: the others are never used.
    ///
    /// # Errors
    /// [`CryptoError::NonCanonicalPairCiphertext`] for a matched item's bad ciphertext.
    fn match_items(&mut self, offset: u64, items: &[u8]) -> Result<(), CryptoError> {
        let (groups, width) = (self.groups, self.width);
        let lookup = &self.lookup;
        let empty = || (vec![0u64; groups], vec![Ciphertext::zero(); groups * width]);
        let (matched, sums) = items
            .par_chunks_exact(item_len(width))
            .enumerate()
            .try_fold(empty, |(mut matched, mut sums), (index, item)| {
                let point = <[u8; POINT_LEN]>::try_from(&item[..POINT_LEN]).ok();
                let hit = point.and_then(|p| {
                    lookup
                        .binary_search_by(|(q, _)| q.cmp(&p))
                        .ok()
                        .map(|i| lookup[i].1 as usize)
                });
                if let Some(g) = hit {
                    matched[g] += 1;
                    for (c, ct) in item[POINT_LEN..].chunks_exact(CIPHERTEXT_LEN).enumerate() {
                        let ct = Ciphertext::from_bytes(ct).map_err(|e| {
                            CryptoError::NonCanonicalPairCiphertext {
                                stream: Stream::GroupPairs,
                                offset,
                                index: len_u64(index),
                                component: match e {
                                    CryptoError::NonCanonicalCiphertext { component } => component,
                                    _ => 1,
                                },
                            }
                        })?;
                        sums[g * width + c] = sums[g * width + c] + ct;
                    }
                }
                Ok((matched, sums))
            })
            .try_reduce(empty, |(mut m1, mut s1), (m2, s2)| {
                m1.iter_mut().zip(m2).for_each(|(a, b)| *a += b);
                s1.iter_mut().zip(s2).for_each(|(a, b)| *a = *a + b);
                Ok((m1, s1))
            })?;
        self.matched
            .iter_mut()
            .zip(matched)
            .for_each(|(a, b)| *a += b);
        self.sums
            .iter_mut()
            .zip(sums)
            .for_each(|(a, b)| *a = *a + b);
        Ok(())
    }

    /// Records the number of items P2 declared and its ElGamal public key.
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountTooLarge`] above the job's limit;
    /// [`CryptoError::HeaderRepeated`] on a second call; a bad public key.
    pub fn on_pairs_header(&mut self, count: u64, public_key: &[u8]) -> Result<(), CryptoError> {
        let stream = Stream::GroupPairs;
        if self.pairs.declared.is_some() {
            return Err(CryptoError::HeaderRepeated { stream });
        }
        if count > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream,
                count,
                max: self.max_points,
            });
        }
        let pk = PublicKey::from_bytes(public_key)?;
        self.pairs.header(count)?;
        self.public_key = Some(pk);
        Ok(())
    }

    /// Accepts items number `offset ..`: each a point `H(y)^b` then `W` 64-byte ciphertexts.
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, batches that are not
    /// whole items ([`CryptoError::ItemBatchLength`]), non-canonical or identity points, and
    /// a matched item's ciphertext with a non-canonical component
    /// ([`CryptoError::NonCanonicalPairCiphertext`]; once the re-blinded stream is complete,
    /// else from [`GroupP1::on_reblinded`] when it completes).
    pub fn on_pairs(&mut self, offset: u64, items: &[u8]) -> Result<(), CryptoError> {
        let stream = Stream::GroupPairs;
        let len = item_len(self.width);
        let n = self.pairs.check(offset, items)?;
        let points: Vec<u8> = items
            .chunks_exact(len)
            .flat_map(|item| &item[..POINT_LEN])
            .copied()
            .collect();
        let doubled = mul_points(&self.key, &points, stream, offset)?;
        drop(points);
        let mut reblinded = Vec::with_capacity(items.len());
        for (point, item) in doubled.chunks_exact(POINT_LEN).zip(items.chunks_exact(len)) {
            reblinded.extend_from_slice(point);
            reblinded.extend_from_slice(&item[POINT_LEN..]);
        }
        if self.reblinded.is_complete() {
            self.match_items(offset, &reblinded)?;
        } else {
            self.pending.extend_from_slice(&reblinded);
        }
        self.pairs.advance(n);
        Ok(())
    }

    /// (received, declared) for the re-blinded stream.
    pub fn reblinded_progress(&self) -> (u64, Option<u64>) {
        self.reblinded.progress()
    }

    /// (received, declared) for the items stream.
    pub fn pairs_progress(&self) -> (u64, Option<u64>) {
        self.pairs.progress()
    }

    /// True once both inbound streams are complete.
    pub fn is_complete(&self) -> bool {
        self.reblinded.is_complete() && self.pairs.is_complete()
    }

    /// The per-group intersection sizes and encrypted totals, once both streams are complete.
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`] or [`CryptoError::StreamIncomplete`] for either stream.
    pub fn finish(self) -> Result<GroupP1Outcome, CryptoError> {
        self.reblinded.complete()?;
        self.pairs.complete()?;
        let public_key = self.public_key.ok_or(CryptoError::HeaderMissing {
            stream: Stream::GroupPairs,
        })?;
        Ok(GroupP1Outcome {
            matched: self.matched,
            p2_identifiers: self.pairs.received,
            width: self.width,
            sums: self.sums,
            public_key,
        })
    }
}

/// What P1 holds at the end: exact per-group intersection sizes and encrypted, un-noised totals.
///
/// The totals must not leave P1 as they are: send only [`GroupP1Outcome::noisy_response`].
#[derive(Clone, Debug)]
pub struct GroupP1Outcome {
    /// `|X_g ∩ Y|` for each group `g`.
    pub matched: Vec<u64>,
    /// `|Y|`: items P2 sent.
    pub p2_identifiers: u64,
    width: usize,
    sums: Vec<Ciphertext>,
    public_key: PublicKey,
}

impl GroupP1Outcome {
    /// The answer for P2: every total plus its noise (`noise[g·W + c]` for group `g`, column
    /// `c`), re-randomised, as `G·W` 64-byte ciphertexts, group-major.
    ///
    /// # Errors
    /// [`CryptoError::NoiseCount`] unless there is one noise value per total;
    /// [`CryptoError::Randomness`].
    pub fn noisy_response(&self, noise: &[i64]) -> Result<Vec<u8>, CryptoError> {
        if noise.len() != self.sums.len() {
            return Err(CryptoError::NoiseCount {
                got: noise.len(),
                expected: self.sums.len(),
            });
        }
        let cts: Vec<Result<[u8; CIPHERTEXT_LEN], CryptoError>> = self
            .sums
            .par_iter()
            .zip(noise)
            .map(|(ct, n)| Ok(ct.add_plain(*n).rerandomize(&self.public_key)?.to_bytes()))
            .collect();
        let mut out = Vec::with_capacity(self.sums.len() * CIPHERTEXT_LEN);
        for ct in cts {
            out.extend_from_slice(&ct?);
        }
        Ok(out)
    }

    /// Number of value columns.
    pub fn width(&self) -> usize {
        self.width
    }
}

/// P2: holds identifiers with value vectors; decrypts the noisy per-group totals.
///
/// Call order: [`GroupP2::pairs_batch`] for the outgoing items, at any time;
/// [`GroupP2::on_ids_header`] then [`GroupP2::on_ids`] batches, then
/// [`GroupP2::finish_ids_stream`]; finally [`GroupP2::decrypt_totals`] on P1's answer.
pub struct GroupP2 {
    key: PsiKey,
    secret_key: SecretKey,
    public_key: PublicKey,
    groups: usize,
    width: usize,
    /// Distinct identifiers in a secret random order, and their values (`width` per id).
    ids: Vec<IdHash>,
    values: Vec<u64>,
    /// The public bound of each column's values (`u64::MAX` unless declared).
    bounds: Vec<u64>,
    max_points: u64,
    incoming: Inbound,
    sizes: Vec<u64>,
    reblinded: Vec<u8>,
}

impl fmt::Debug for GroupP2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupP2")
            .field("groups", &self.groups)
            .field("width", &self.width)
            .field("pairs_count", &self.ids.len())
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl GroupP2 {
    /// Prepares P2's side for `groups` groups: fresh PSI and ElGamal keys, items shuffled.
    /// `values` holds `width` values per identifier, row by row (`values[i·W + c]` is column
    /// `c` of `ids[i]`).
    ///
    /// # Errors
    /// [`CryptoError::GroupShape`]; [`CryptoError::ValueWidth`] unless there are `W` values
    /// per identifier;
    /// [`CryptoError::DuplicateIdentifiers`] (aggregate per identifier first);
    /// [`CryptoError::LocalCountTooLarge`]; [`CryptoError::Randomness`].
    pub fn new(
        ids: Vec<IdHash>,
        values: Vec<u64>,
        groups: usize,
        width: usize,
        max_points: u64,
    ) -> Result<Self, CryptoError> {
        check_shape(groups, width)?;
        if values.len() != ids.len().saturating_mul(width) {
            return Err(CryptoError::ValueWidth {
                got: values.len(),
                expected: ids.len().saturating_mul(width),
            });
        }
        let count = len_u64(ids.len());
        if count > max_points {
            return Err(CryptoError::LocalCountTooLarge {
                count,
                max: max_points,
            });
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.par_sort_unstable_by_key(|&i| ids[i]);
        let repeated = order.windows(2).filter(|w| ids[w[0]] == ids[w[1]]).count();
        if repeated > 0 {
            return Err(CryptoError::DuplicateIdentifiers {
                count: len_u64(repeated),
            });
        }
        order.shuffle(&mut secure_shuffle_rng()?);
        let shuffled_ids: Vec<IdHash> = order.iter().map(|&i| ids[i]).collect();
        drop(ids);
        let mut shuffled_values = Vec::with_capacity(values.len());
        for &i in &order {
            shuffled_values.extend_from_slice(&values[i * width..(i + 1) * width]);
        }
        drop(values);
        let (ids, values) = (shuffled_ids, shuffled_values);
        let secret_key = SecretKey::random()?;
        Ok(GroupP2 {
            key: PsiKey::random()?,
            public_key: secret_key.public_key(),
            secret_key,
            groups,
            width,
            ids,
            values,
            bounds: vec![u64::MAX; width],
            max_points,
            incoming: Inbound::new(Stream::GroupIds, POINT_LEN),
            sizes: Vec::new(),
            reblinded: Vec::new(),
        })
    }

    /// Declares the job's public bound on each column's values (for example 1 for a 0/1
    /// segment indicator): encrypting a value then costs one table lookup per radix-16 digit
    /// of its column's bound instead of a base-point multiplication ([`encrypt_rows`]).
    /// Without it every column is bounded by `u64::MAX` (16 lookups).
    ///
    /// # Errors
    /// [`CryptoError::ValueWidth`] unless there is one bound per column;
    /// [`CryptoError::ValueAboveBound`] if a value exceeds its column's bound.
    pub fn with_column_bounds(mut self, bounds: Vec<u64>) -> Result<Self, CryptoError> {
        if bounds.len() != self.width {
            return Err(CryptoError::ValueWidth {
                got: bounds.len(),
                expected: self.width,
            });
        }
        check_bounds(&self.values, &bounds)?;
        self.bounds = bounds;
        Ok(self)
    }

    /// The 32-byte encoding of P2's fresh ElGamal public key, for the items stream's header.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key.to_bytes()
    }

    /// Number of items P2 sends: its identifiers.
    pub fn pairs_count(&self) -> u64 {
        len_u64(self.ids.len())
    }

    /// Items number `offset .. offset + len` of the outgoing stream: for each, `H(y)^b` then
    /// `Enc_pk(v_y[c])` for every column with fresh randomness, concatenated.
    ///
    /// # Errors
    /// [`CryptoError::OutgoingRange`]; [`CryptoError::Randomness`].
    pub fn pairs_batch(&self, offset: u64, len: usize) -> Result<Vec<u8>, CryptoError> {
        let ids = outgoing_slice(&self.ids, offset, len)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX) * self.width;
        let values = &self.values[start..start + len * self.width];
        let points = blind_ids(&self.key, ids);
        let cts = encrypt_rows(&self.public_key, values, &self.bounds)?;
        let mut out = Vec::with_capacity(len * item_len(self.width));
        for (point, row) in points
            .chunks_exact(POINT_LEN)
            .zip(cts.chunks_exact(self.width))
        {
            out.extend_from_slice(point);
            for ct in row {
                out.extend_from_slice(ct);
            }
        }
        Ok(out)
    }

    /// Records the group sizes P1 declared (`|X_g|` for each group).
    ///
    /// # Errors
    /// [`CryptoError::GroupCountMismatch`] unless there is one size per group;
    /// [`CryptoError::DeclaredCountTooLarge`] if they add up to more than the job's limit;
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_ids_header(&mut self, sizes: &[u64]) -> Result<(), CryptoError> {
        let stream = Stream::GroupIds;
        if self.incoming.declared.is_some() {
            return Err(CryptoError::HeaderRepeated { stream });
        }
        if sizes.len() != self.groups {
            return Err(CryptoError::GroupCountMismatch {
                got: sizes.len(),
                expected: self.groups,
            });
        }
        let total = sizes
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(*s))
            .unwrap_or(u64::MAX);
        if total > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream,
                count: total,
                max: self.max_points,
            });
        }
        self.incoming.header(total)?;
        self.sizes = sizes.to_vec();
        // A declared count is only a claim: reserve at most 2^20 points up front.
        self.reblinded.reserve_exact(
            usize::try_from(total.min(1 << 20))
                .unwrap_or(0)
                .saturating_mul(POINT_LEN),
        );
        Ok(())
    }

    /// Accepts P1's blinded points number `offset ..` and raises them to P2's key.
    ///
    /// # Errors
    /// Missing header, gaps, overlaps, overflow past the declared count, bad lengths, and
    /// non-canonical or identity points.
    pub fn on_ids(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let n = self.incoming.check(offset, points)?;
        let doubled = mul_points(&self.key, points, Stream::GroupIds, offset)?;
        self.reblinded.extend_from_slice(&doubled);
        self.incoming.advance(n);
        Ok(())
    }

    /// (received, declared) for P1's stream.
    pub fn ids_progress(&self) -> (u64, Option<u64>) {
        self.incoming.progress()
    }

    /// `|X_g|` for each group, as P1 declared them (empty before its header).
    pub fn p1_group_sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// Ends P1's stream once every declared point arrived: all `H(x)^ab` in P1's group blocks,
    /// each block in a fresh secret random order.
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`], [`CryptoError::StreamIncomplete`],
    /// [`CryptoError::AlreadyFinished`] on a second call; [`CryptoError::Randomness`].
    pub fn finish_ids_stream(&mut self) -> Result<Vec<u8>, CryptoError> {
        if self.incoming.finished {
            return Err(CryptoError::AlreadyFinished {
                stream: Stream::GroupIds,
            });
        }
        self.incoming.complete()?;
        let held = std::mem::take(&mut self.reblinded);
        let mut rng = secure_shuffle_rng()?;
        let mut out = Vec::with_capacity(held.len());
        let mut start = 0usize;
        for size in &self.sizes {
            let end = start + usize::try_from(*size).unwrap_or(0) * POINT_LEN;
            let mut block: Vec<&[u8]> = held[start..end].chunks_exact(POINT_LEN).collect();
            block.shuffle(&mut rng);
            block.into_iter().for_each(|p| out.extend_from_slice(p));
            start = end;
        }
        self.incoming.finished = true;
        Ok(out)
    }

    /// Decrypts P1's answer (`G·W` ciphertexts, group-major) into totals, column `c` of every
    /// group declared to lie in `ranges[c]`. Decryption tables come from
    /// [`DlogTable::for_width`] (call from outside rayon's thread pool).
    ///
    /// # Errors
    /// [`CryptoError::CiphertextLength`] unless the answer is `G·W` ciphertexts long;
    /// [`CryptoError::NoiseCount`] unless there is one range per column; bad ciphertexts;
    /// [`CryptoError::DecryptRangeEmpty`], [`CryptoError::DecryptRangeTooWide`];
    /// [`CryptoError::SumOutOfRange`] for a total outside its range.
    pub fn decrypt_totals(
        &self,
        answer: &[u8],
        ranges: &[(i64, i64)],
    ) -> Result<Vec<Vec<i64>>, CryptoError> {
        if ranges.len() != self.width {
            return Err(CryptoError::NoiseCount {
                got: ranges.len(),
                expected: self.width,
            });
        }
        if answer.len() != self.groups * self.width * CIPHERTEXT_LEN {
            return Err(CryptoError::CiphertextLength { len: answer.len() });
        }
        let tables: Vec<_> = ranges
            .iter()
            .map(|(min, max)| DlogTable::for_width(range_width(*min, *max)))
            .collect();
        answer
            .chunks_exact(self.width * CIPHERTEXT_LEN)
            .map(|group| {
                group
                    .chunks_exact(CIPHERTEXT_LEN)
                    .zip(ranges.iter().zip(&tables))
                    .map(|(ct, ((min, max), table))| {
                        let ct = Ciphertext::from_bytes(ct)?;
                        self.secret_key.vartime_decrypt(&ct, *min, *max, table)
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn id(i: u16) -> IdHash {
        IdHash::of_normalized(&format!("user{i}@example.com"))
    }

    const MAX: u64 = 1 << 20;

    /// P2's input in the row-major form [`GroupP2::new`] takes.
    fn split(y: Vec<(IdHash, Vec<u64>)>) -> (Vec<IdHash>, Vec<u64>) {
        let mut ids = Vec::new();
        let mut values = Vec::new();
        for (id, v) in y {
            ids.push(id);
            values.extend(v);
        }
        (ids, values)
    }

    fn p2_of(
        y: Vec<(IdHash, Vec<u64>)>,
        groups: usize,
        width: usize,
        max: u64,
    ) -> Result<GroupP2, CryptoError> {
        let (ids, values) = split(y);
        GroupP2::new(ids, values, groups, width, max)
    }

    /// Runs the whole protocol in memory with small batches; returns P1's counts, P2's totals.
    fn run(
        x: Vec<(IdHash, u32)>,
        y: Vec<(IdHash, Vec<u64>)>,
        groups: usize,
        width: usize,
        noise: &[i64],
    ) -> (Vec<u64>, Vec<Vec<i64>>) {
        let mut p1 = GroupP1::new(x, groups, width, MAX).unwrap();
        let (ids, values) = split(y);
        // Each column's bound is its largest value: columns below 16 take the lookup path.
        let bounds = (0..width)
            .map(|c| {
                values
                    .iter()
                    .skip(c)
                    .step_by(width)
                    .copied()
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut p2 = GroupP2::new(ids, values, groups, width, MAX)
            .unwrap()
            .with_column_bounds(bounds)
            .unwrap();
        p2.on_ids_header(p1.group_sizes()).unwrap();
        let n = p1.outgoing_count();
        let mut off = 0;
        while off < n {
            let len = (n - off).min(7) as usize;
            p2.on_ids(off, &p1.blind_batch(off, len).unwrap()).unwrap();
            off += len as u64;
        }
        let m = p2.pairs_count();
        p1.on_pairs_header(m, &p2.public_key()).unwrap();
        // Half the items before the re-blinded stream, to exercise the pending path.
        let half = m / 2;
        let mut off = 0;
        while off < half {
            let len = (half - off).min(5) as usize;
            p1.on_pairs(off, &p2.pairs_batch(off, len).unwrap())
                .unwrap();
            off += len as u64;
        }
        let back = p2.finish_ids_stream().unwrap();
        p1.on_reblinded_header(n).unwrap();
        for (i, chunk) in back.chunks(POINT_LEN * 3).enumerate() {
            p1.on_reblinded(i as u64 * 3, chunk).unwrap();
        }
        while off < m {
            let len = (m - off).min(5) as usize;
            p1.on_pairs(off, &p2.pairs_batch(off, len).unwrap())
                .unwrap();
            off += len as u64;
        }
        assert!(p1.is_complete());
        let outcome = p1.finish().unwrap();
        let answer = outcome.noisy_response(noise).unwrap();
        let ranges = vec![(-1000, 1_000_000); width];
        let totals = p2.decrypt_totals(&answer, &ranges).unwrap();
        (outcome.matched, totals)
    }

    fn plain(
        x: &[(IdHash, u32)],
        y: &[(IdHash, Vec<u64>)],
        groups: usize,
        width: usize,
    ) -> (Vec<u64>, Vec<Vec<i64>>) {
        let label: BTreeMap<_, _> = x.iter().copied().collect();
        let mut matched = vec![0; groups];
        let mut totals = vec![vec![0i64; width]; groups];
        for (id, v) in y {
            if let Some(g) = label.get(id) {
                matched[*g as usize] += 1;
                for (t, v) in totals[*g as usize].iter_mut().zip(v) {
                    *t += *v as i64;
                }
            }
        }
        (matched, totals)
    }

    /// P1: distinct ids (by construction) with labels in `[0, groups)`; P2: distinct ids with
    /// `width` values.
    type Labelled = Vec<(IdHash, u32)>;
    type Valued = Vec<(IdHash, Vec<u64>)>;

    fn inputs() -> impl Strategy<Value = (usize, usize, Labelled, Valued)> {
        (1usize..5, 1usize..4).prop_flat_map(|(groups, width)| {
            let x = proptest::collection::btree_map(0u16..200, 0..groups as u32, 0..60)
                .prop_map(|m| m.into_iter().map(|(i, g)| (id(i), g)).collect::<Vec<_>>());
            let y = proptest::collection::btree_map(
                0u16..200,
                proptest::collection::vec(0u64..1000, width),
                0..60,
            )
            // Column 0 is a small one (below 16), encrypted by table lookup; see `run`.
            .prop_map(|m| {
                m.into_iter()
                    .map(|(i, mut v)| {
                        v[0] %= 16;
                        (id(i), v)
                    })
                    .collect::<Vec<_>>()
            });
            (Just(groups), Just(width), x, y)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn zero_noise_gives_the_plain_grouped_totals((groups, width, x, y) in inputs()) {
            let expected = plain(&x, &y, groups, width);
            let got = run(x, y, groups, width, &vec![0; groups * width]);
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn noise_lands_on_its_own_total((groups, width, x, y) in inputs()) {
            let noise: Vec<i64> = (0..groups * width).map(|i| i as i64 * 7 - 5).collect();
            let (m, mut expected) = plain(&x, &y, groups, width);
            for (g, row) in expected.iter_mut().enumerate() {
                for (c, t) in row.iter_mut().enumerate() {
                    *t += noise[g * width + c];
                }
            }
            prop_assert_eq!(run(x, y, groups, width, &noise), (m, expected));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut p1 = GroupP1::new(vec![(id(1), 0)], 2, 2, MAX).unwrap();
            let _ = p1.on_reblinded_header(1);
            let _ = p1.on_reblinded(0, &bytes);
            let _ = p1.on_pairs_header(3, &bytes);
            let _ = p1.on_pairs(0, &bytes);
            let mut p2 = p2_of(vec![(id(1), vec![1, 2])], 2, 2, MAX).unwrap();
            let _ = p2.on_ids_header(&[1, 0]);
            let _ = p2.on_ids(0, &bytes);
            let _ = p2.decrypt_totals(&bytes, &[(0, 10), (0, 10)]);
        }
    }

    #[test]
    fn an_identifier_in_two_groups_is_refused_and_repeats_in_one_are_merged() {
        let err = GroupP1::new(vec![(id(1), 0), (id(1), 1), (id(2), 1)], 2, 1, MAX).unwrap_err();
        assert_eq!(err, CryptoError::ConflictingGroups { count: 1 });
        let p1 = GroupP1::new(vec![(id(1), 1), (id(1), 1), (id(2), 0)], 2, 1, MAX).unwrap();
        assert_eq!(p1.group_sizes(), &[1, 1]);
        let err = GroupP1::new(vec![(id(1), 2)], 2, 1, MAX).unwrap_err();
        assert_eq!(
            err,
            CryptoError::GroupOutOfRange {
                group: 2,
                groups: 2
            }
        );
    }

    #[test]
    fn shapes_and_widths_are_checked() {
        assert!(matches!(
            GroupP1::new(vec![], 0, 1, MAX),
            Err(CryptoError::GroupShape { .. })
        ));
        assert!(matches!(
            p2_of(vec![], 1, MAX_COLUMNS + 1, MAX),
            Err(CryptoError::GroupShape { .. })
        ));
        assert_eq!(
            p2_of(vec![(id(1), vec![1])], 1, 2, MAX).unwrap_err(),
            CryptoError::ValueWidth {
                got: 1,
                expected: 2
            }
        );
        assert_eq!(
            p2_of(vec![(id(1), vec![1]), (id(1), vec![2])], 1, 1, MAX).unwrap_err(),
            CryptoError::DuplicateIdentifiers { count: 1 }
        );
    }

    #[test]
    fn p2_checks_the_group_header() {
        let mut p2 = p2_of(vec![(id(1), vec![1])], 2, 1, 10).unwrap();
        assert_eq!(
            p2.on_ids_header(&[1]).unwrap_err(),
            CryptoError::GroupCountMismatch {
                got: 1,
                expected: 2
            }
        );
        assert!(matches!(
            p2.on_ids_header(&[6, 5]),
            Err(CryptoError::DeclaredCountTooLarge { count: 11, .. })
        ));
        assert!(matches!(
            p2.on_ids_header(&[u64::MAX, 5]),
            Err(CryptoError::DeclaredCountTooLarge { .. })
        ));
        p2.on_ids_header(&[1, 0]).unwrap();
        assert!(matches!(
            p2.on_ids_header(&[1, 0]),
            Err(CryptoError::HeaderRepeated { .. })
        ));
    }

    #[test]
    fn bad_items_are_rejected_precisely() {
        let p2 = p2_of(vec![(id(1), vec![1, 2]), (id(2), vec![3, 4])], 1, 2, MAX).unwrap();
        let good = p2.pairs_batch(0, 2).unwrap();
        let fresh = || {
            let mut p1 = GroupP1::new(vec![(id(1), 0)], 1, 2, MAX).unwrap();
            p1.on_pairs_header(2, &p2.public_key()).unwrap();
            p1
        };
        let len = item_len(2);
        assert_eq!(
            fresh().on_pairs(0, &good[..len + 1]).unwrap_err(),
            CryptoError::ItemBatchLength {
                stream: Stream::GroupPairs,
                offset: 0,
                len: len + 1,
                item_len: len,
            }
        );
        // A bad ciphertext is found when its item matches: at once after the re-blinded stream,
        // or when that stream completes for an item that came before it. One in an item that
        // does not match is never decoded.
        let finish_reblinded = |p1: &mut GroupP1| {
            let back = mul_points(&p2.key, &p1.blind_batch(0, 1)?, Stream::GroupIds, 0)?;
            p1.on_reblinded_header(1)?;
            p1.on_reblinded(0, &back)
        };
        let matched_item = usize::from(p2.ids[0] != id(1));
        let mut bad = good.clone();
        let at = matched_item * len + POINT_LEN + CIPHERTEXT_LEN;
        bad[at..at + 32].fill(0xff);
        let want = |offset, index| CryptoError::NonCanonicalPairCiphertext {
            stream: Stream::GroupPairs,
            offset,
            index,
            component: 1,
        };
        let mut p1 = fresh();
        finish_reblinded(&mut p1).unwrap();
        assert_eq!(
            p1.on_pairs(0, &bad).unwrap_err(),
            want(0, len_u64(matched_item))
        );
        let mut p1 = fresh();
        p1.on_pairs(0, &bad).unwrap();
        assert_eq!(
            finish_reblinded(&mut p1).unwrap_err(),
            want(0, len_u64(matched_item))
        );
        let mut unmatched = good.clone();
        let at = (1 - matched_item) * len + POINT_LEN + CIPHERTEXT_LEN;
        unmatched[at..at + 32].fill(0xff);
        let mut p1 = fresh();
        finish_reblinded(&mut p1).unwrap();
        p1.on_pairs(0, &unmatched).unwrap();
        assert_eq!(p1.finish().unwrap().matched, vec![1]);
        let mut bad = good.clone();
        bad[len..len + POINT_LEN].fill(0);
        assert_eq!(
            fresh().on_pairs(0, &bad).unwrap_err(),
            CryptoError::IdentityPoint {
                stream: Stream::GroupPairs,
                offset: 0,
                index: 1,
            }
        );
        assert!(matches!(
            fresh().on_pairs(1, &good[..len]),
            Err(CryptoError::BatchOffsetGap { .. })
        ));
    }

    #[test]
    fn the_answer_and_ranges_must_have_the_job_shape() {
        let p2 = p2_of(vec![(id(1), vec![1, 2])], 3, 2, MAX).unwrap();
        assert_eq!(
            p2.decrypt_totals(&[0u8; 64], &[(0, 1), (0, 1)])
                .unwrap_err(),
            CryptoError::CiphertextLength { len: 64 }
        );
        assert!(matches!(
            p2.decrypt_totals(&[0u8; 6 * 64], &[(0, 1)]),
            Err(CryptoError::NoiseCount { .. })
        ));
    }

    #[test]
    fn p2_shuffles_each_returned_block() {
        let x: Vec<_> = (0..80u16).map(|i| (id(i), u32::from(i >= 40))).collect();
        let p1 = GroupP1::new(x, 2, 1, MAX).unwrap();
        let mut p2 = p2_of(vec![(id(1), vec![1])], 2, 1, MAX).unwrap();
        p2.on_ids_header(p1.group_sizes()).unwrap();
        p2.on_ids(0, &p1.blind_batch(0, 80).unwrap()).unwrap();
        let arrival = p2.reblinded.clone();
        let back = p2.finish_ids_stream().unwrap();
        let block = 40 * POINT_LEN;
        for (a, b) in [
            (&arrival[..block], &back[..block]),
            (&arrival[block..], &back[block..]),
        ] {
            // Same points (a permutation inside the block), not in arrival order.
            assert_ne!(a, b);
            let mut a: Vec<_> = a.chunks_exact(POINT_LEN).collect();
            let mut b: Vec<_> = b.chunks_exact(POINT_LEN).collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn column_bounds_are_checked() {
        let p2 = || p2_of(vec![(id(1), vec![1, 20]), (id(2), vec![0, 7])], 1, 2, MAX).unwrap();
        assert!(p2().with_column_bounds(vec![1, 20]).is_ok());
        assert_eq!(
            p2().with_column_bounds(vec![1, 19]).unwrap_err(),
            CryptoError::ValueAboveBound {
                column: 1,
                bound: 19
            }
        );
        assert_eq!(
            p2().with_column_bounds(vec![1]).unwrap_err(),
            CryptoError::ValueWidth {
                got: 1,
                expected: 2
            }
        );
    }

    #[test]
    fn group_blocks_keep_their_boundaries() {
        // 40 ids in group 0 and 40 in group 1: P2's returned blocks keep the group boundary.
        let x: Vec<_> = (0..80u16).map(|i| (id(i), u32::from(i >= 40))).collect();
        let y: Vec<_> = (0..80u16).map(|i| (id(i), vec![u64::from(i)])).collect();
        let (matched, totals) = run(x, y, 2, 1, &[0, 0]);
        assert_eq!(matched, vec![40, 40]);
        assert_eq!(
            totals,
            vec![vec![(0..40).sum::<i64>()], vec![(40..80).sum::<i64>()]]
        );
    }

    #[test]
    fn debug_prints_no_secrets() {
        let p1 = GroupP1::new(vec![(id(1), 0)], 1, 1, MAX).unwrap();
        let p2 = p2_of(vec![(id(1), vec![5])], 1, 1, MAX).unwrap();
        let text = format!("{p1:?} {p2:?}");
        assert!(!text.contains("key"), "{text}");
    }

    #[test]
    fn p2_reserves_a_bounded_amount_for_a_huge_declared_count() {
        let max = 1 << 40;
        let mut p2 = p2_of(vec![(id(1), vec![5])], 2, 1, max).unwrap();
        p2.on_ids_header(&[1 << 39, 1 << 39]).unwrap();
        assert!(
            p2.reblinded.capacity() <= (1 << 20) * POINT_LEN,
            "{}",
            p2.reblinded.capacity()
        );
    }
}
