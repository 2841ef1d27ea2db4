//! ECDH private set intersection (PSI) on ristretto255.
//!
//! # What it computes
//!
//! A **receiver** holds records `X`, each carrying one or more identifier hashes ([`IdHash`]); a
//! **sender** holds identifier hashes `Y`. Each party picks a fresh random key for the job (`a`
//! for the receiver, `b` for the sender) and the parties exchange:
//!
//! 1. receiver → sender: `H(x)^a` for its identifiers (in [`Mode::Cardinality`]: padded groups,
//!    one per record);
//! 2. sender → receiver: `H(y)^b` for its distinct identifiers, in a random order;
//! 3. sender → receiver: `(H(x)^a)^b`, in the same order ([`Mode::Match`]) or with the groups
//!    randomly permuted ([`Mode::Cardinality`]).
//!
//! The receiver raises the sender's points to `a` and compares `H(y)^ab` with `H(x)^ab`.
//! `H` is [`hash_to_group`] with the tag [`PSI_HASH_TAG`] and the group is ristretto255, a
//! prime-order group in which the decisional Diffie–Hellman problem is believed hard, so blinded
//! points reveal nothing about the identifiers behind them.
//!
//! # What each party learns
//!
//! | mode | receiver learns | sender learns |
//! |---|---|---|
//! | [`Mode::Match`] | which of its records intersect `Y`, and `\|Y\|` (distinct sender identifiers) | the receiver's number of distinct identifiers |
//! | [`Mode::Cardinality`] | how many of its records intersect `Y`, and `\|Y\|` | the receiver's padded point count, `records × group_size` |
//!
//! Known extra leakage in [`Mode::Cardinality`]: an identifier shared by several receiver records
//! is sent once per record, so the sender sees that those groups share a point, and the receiver,
//! seeing the same double-blinded point in several permuted groups, can partly undo the shuffle
//! for such records and learn whether that shared identifier matched. The receiver also sees how
//! many points of each (permuted) group matched. With one identifier per record and no repeats
//! across records, the receiver learns exactly the count.
//!
//! # Threat model and assumptions
//!
//! * Semi-honest parties: both follow the protocol but may try to learn more from what they see.
//!   A malicious sender can change the result (e.g. send points it did not derive from `Y`); this
//!   module does not prove correct behaviour.
//! * Inputs from the peer are still fully validated: every point must be a canonical,
//!   non-identity ristretto255 encoding, and batches must arrive contiguously, in order and within
//!   the declared, capped counts. Violations are errors, never panics.
//! * Keys are fresh per job, drawn from the operating system's generator, never reused and zeroed
//!   on drop. Scalar multiplication is constant time; the comparison of double-blinded points is
//!   not, which leaks nothing to a remote party beyond the result.
//! * Identifiers are hashes of normalised values (see [`crate::normalize`]); low-entropy inputs
//!   (e.g. phone numbers) can be brute-forced by whoever learns a party's key, which never leaves
//!   its owner.
//!
//! # References
//!
//! * C. Meadows, "A more efficient cryptographic matchmaking protocol", IEEE S&P 1986.
//! * B. Huberman, M. Franklin, T. Hogg, "Enhancing privacy and trust in electronic communities",
//!   ACM EC 1999.
//! * M. Ion et al., "On Deploying Secure Computing: Private Intersection-Sum-with-Cardinality",
//!   IEEE EuroS&P 2020.
//! * RFC 9380 (hashing to curves), RFC 9496 (ristretto255).

use std::fmt;

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;
use crate::error::Stream;
use crate::h2g::{PSI_HASH_TAG, hash_to_group};
use crate::normalize::IdHash;

/// Length in bytes of an encoded ristretto255 point.
pub const POINT_LEN: usize = 32;

/// The largest number of points per receiver record in [`Mode::Cardinality`].
pub const MAX_GROUP_SIZE: u32 = 16;

/// Points per rayon task: large enough to amortise scheduling, small enough to balance.
const PAR_CHUNK: usize = 256;

/// What the receiver learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The receiver learns which of its records intersect the sender's set.
    Match,
    /// The receiver learns only how many of its records intersect the sender's set.
    Cardinality,
}

/// A party's secret PSI key: a uniformly random non-zero scalar, fresh for each job.
///
/// `Debug` prints nothing of the key; the scalar is zeroed on drop.
pub struct PsiKey(Scalar);

impl PsiKey {
    /// A fresh key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn random() -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        let mut wide = Zeroizing::new([0u8; 64]);
        loop {
            rng.fill(wide.as_mut())
                .map_err(|_| CryptoError::Randomness)?;
            let s = Scalar::from_bytes_mod_order_wide(&wide);
            if s != Scalar::ZERO {
                return Ok(PsiKey(s));
            }
        }
    }
}

impl PsiKey {
    /// `key / 2 mod ℓ`, zeroed on drop like the key.
    fn half(&self) -> PsiKey {
        PsiKey(self.0 * Scalar::from(2u64).invert())
    }
}

impl fmt::Debug for PsiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PsiKey(..)")
    }
}

impl Drop for PsiKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for PsiKey {}

/// Blinds identifiers: the concatenation of `compress(key · H(id))` for each id, in order.
pub fn blind_ids(key: &PsiKey, ids: &[IdHash]) -> Vec<u8> {
    let half = key.half();
    let mut out = vec![0u8; ids.len() * POINT_LEN];
    out.par_chunks_mut(PAR_CHUNK * POINT_LEN)
        .zip(ids.par_chunks(PAR_CHUNK))
        .for_each(|(out, ids)| {
            let halves: Vec<RistrettoPoint> = ids
                .iter()
                .map(|id| half.0 * hash_to_group(PSI_HASH_TAG, &id.0))
                .collect();
            write_doubled(out, &halves);
        });
    out
}

/// Writes `compress(2·P)` for each point into consecutive 32-byte slots.
///
/// Encoding a doubled point needs no square root, and the batch shares one field inversion
/// ([`RistrettoPoint::double_and_compress_batch`]): with the key halved first, `2·((k/2)·P)`
/// is `k·P` and its encoding costs a few multiplications instead of an inverse square root.
fn write_doubled(out: &mut [u8], halves: &[RistrettoPoint]) {
    let encoded = RistrettoPoint::double_and_compress_batch(halves);
    for (slot, c) in out.chunks_exact_mut(POINT_LEN).zip(&encoded) {
        slot.copy_from_slice(c.as_bytes());
    }
}

/// Re-blinds points received from a peer: the concatenation of `compress(key · P)` for each
/// 32-byte point `P` of `points`, in order.
///
/// # Errors
/// [`CryptoError::BatchLength`] if `points` is not a multiple of 32 bytes;
/// [`CryptoError::NonCanonicalPoint`] or [`CryptoError::IdentityPoint`] for the first bad point.
pub fn reblind(key: &PsiKey, points: &[u8]) -> Result<Vec<u8>, CryptoError> {
    check_batch_length(Stream::Input, 0, points)?;
    mul_points(key, points, Stream::Input, 0)
}

/// Checks that a batch is a whole number of points.
fn check_batch_length(stream: Stream, offset: u64, points: &[u8]) -> Result<u64, CryptoError> {
    if !points.len().is_multiple_of(POINT_LEN) {
        return Err(CryptoError::BatchLength {
            stream,
            offset,
            len: points.len(),
        });
    }
    Ok(u64::try_from(points.len() / POINT_LEN).unwrap_or(u64::MAX))
}

/// Decodes one 32-byte point, rejecting non-canonical encodings and the identity.
fn decode_point(
    bytes: &[u8],
    stream: Stream,
    offset: u64,
    index: usize,
) -> Result<RistrettoPoint, CryptoError> {
    let index = u64::try_from(index).unwrap_or(u64::MAX);
    let Ok(compressed) = CompressedRistretto::from_slice(bytes) else {
        return Err(CryptoError::NonCanonicalPoint {
            stream,
            offset,
            index,
        });
    };
    // The identity has exactly one canonical encoding: all zeros.
    if compressed.as_bytes() == &[0u8; POINT_LEN] {
        return Err(CryptoError::IdentityPoint {
            stream,
            offset,
            index,
        });
    }
    compressed
        .decompress()
        .ok_or(CryptoError::NonCanonicalPoint {
            stream,
            offset,
            index,
        })
}

/// `compress(key · P)` for each 32-byte point `P` of `input`, computed in parallel into a new
/// buffer; reports the first bad point in stream order.
pub(crate) fn mul_points(
    key: &PsiKey,
    input: &[u8],
    stream: Stream,
    offset: u64,
) -> Result<Vec<u8>, CryptoError> {
    let half = key.half();
    let mut out = vec![0u8; input.len()];
    let results: Vec<Result<(), CryptoError>> = out
        .par_chunks_mut(PAR_CHUNK * POINT_LEN)
        .zip(input.par_chunks(PAR_CHUNK * POINT_LEN))
        .enumerate()
        .map(|(chunk, (out, input))| {
            let halves = input
                .chunks_exact(POINT_LEN)
                .enumerate()
                .map(|(j, bytes)| {
                    decode_point(bytes, stream, offset, chunk * PAR_CHUNK + j).map(|p| half.0 * p)
                })
                .collect::<Result<Vec<RistrettoPoint>, CryptoError>>()?;
            write_doubled(out, &halves);
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(out)
}

/// Checks every point of a batch is a canonical non-identity encoding, without changing it.
pub(crate) fn validate_points(
    input: &[u8],
    stream: Stream,
    offset: u64,
) -> Result<(), CryptoError> {
    let results: Vec<Result<(), CryptoError>> = input
        .par_chunks(PAR_CHUNK * POINT_LEN)
        .enumerate()
        .map(|(chunk, input)| {
            for (j, bytes) in input.chunks_exact(POINT_LEN).enumerate() {
                decode_point(bytes, stream, offset, chunk * PAR_CHUNK + j)?;
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect()
}

/// A uniformly random permutation source seeded from the operating system's generator.
pub(crate) fn secure_shuffle_rng() -> Result<StdRng, CryptoError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut())
        .map_err(|_| CryptoError::Randomness)?;
    Ok(StdRng::from_seed(*seed))
}

/// Converts a length to `u64` (lossless on every supported platform).
pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The `[offset, offset + len)` slice of a party's outgoing identifiers, or an error.
pub(crate) fn outgoing_slice<T>(ids: &[T], offset: u64, len: usize) -> Result<&[T], CryptoError> {
    let count = len_u64(ids.len());
    let range_err = || CryptoError::OutgoingRange { offset, len, count };
    let start = usize::try_from(offset).map_err(|_| range_err())?;
    let end = start.checked_add(len).ok_or_else(range_err)?;
    ids.get(start..end).ok_or_else(range_err)
}

/// Bookkeeping for one inbound stream of fixed-size items: declared count and contiguous
/// progress.
///
/// Invariants: (1) `received <= declared` once a header arrived; (2) `received` only grows, by
/// exactly the size of each accepted batch.
#[derive(Debug)]
pub(crate) struct Inbound {
    stream: Stream,
    item_len: usize,
    pub(crate) declared: Option<u64>,
    pub(crate) received: u64,
    pub(crate) finished: bool,
}

impl Inbound {
    pub(crate) fn new(stream: Stream, item_len: usize) -> Self {
        Inbound {
            stream,
            item_len,
            declared: None,
            received: 0,
            finished: false,
        }
    }

    /// Records the declared count; a second header is an error.
    pub(crate) fn header(&mut self, count: u64) -> Result<(), CryptoError> {
        if self.declared.is_some() {
            return Err(CryptoError::HeaderRepeated {
                stream: self.stream,
            });
        }
        self.declared = Some(count);
        Ok(())
    }

    /// Checks that a batch of `bytes` at `offset` may be accepted next; returns its item count.
    /// The caller validates the items, then calls [`Inbound::advance`].
    pub(crate) fn check(&self, offset: u64, bytes: &[u8]) -> Result<u64, CryptoError> {
        let stream = self.stream;
        if self.finished {
            return Err(CryptoError::AlreadyFinished { stream });
        }
        let declared = self.declared.ok_or(CryptoError::HeaderMissing { stream })?;
        if !bytes.len().is_multiple_of(self.item_len) {
            let len = bytes.len();
            let item_len = self.item_len;
            return Err(if item_len == POINT_LEN {
                CryptoError::BatchLength {
                    stream,
                    offset,
                    len,
                }
            } else {
                CryptoError::ItemBatchLength {
                    stream,
                    offset,
                    len,
                    item_len,
                }
            });
        }
        let items = u64::try_from(bytes.len() / self.item_len).unwrap_or(u64::MAX);
        if offset > self.received {
            return Err(CryptoError::BatchOffsetGap {
                stream,
                expected: self.received,
                got: offset,
            });
        }
        if offset < self.received {
            return Err(CryptoError::BatchOffsetOverlap {
                stream,
                expected: self.received,
                got: offset,
            });
        }
        match offset.checked_add(items) {
            Some(end) if end <= declared => Ok(items),
            _ => Err(CryptoError::BatchBeyondDeclared {
                stream,
                offset,
                points: items,
                declared,
            }),
        }
    }

    pub(crate) fn advance(&mut self, items: u64) {
        self.received += items;
    }

    /// True once the header arrived and every declared item arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.declared == Some(self.received)
    }

    /// Checks that every declared item arrived.
    pub(crate) fn complete(&self) -> Result<(), CryptoError> {
        let stream = self.stream;
        let declared = self.declared.ok_or(CryptoError::HeaderMissing { stream })?;
        if self.received != declared {
            return Err(CryptoError::StreamIncomplete {
                stream,
                received: self.received,
                declared,
            });
        }
        Ok(())
    }

    /// (received, declared) for progress reports.
    pub(crate) fn progress(&self) -> (u64, Option<u64>) {
        (self.received, self.declared)
    }
}

/// The receiver role: holds records `X` and learns the result.
///
/// Call order: [`Receiver::blind_batch`] for the outgoing stream, at any time;
/// [`Receiver::on_sender_header`] then [`Receiver::on_sender_blinded`] batches for the sender's
/// points; [`Receiver::on_double_header`] then [`Receiver::on_double_blinded`] batches for the
/// returned points; the two inbound streams may interleave. Then [`Receiver::finish`].
pub struct Receiver {
    mode: Mode,
    key: PsiKey,
    group_size: u32,
    /// Match: the distinct identifiers, sorted; outgoing point `p` is `outgoing[order[p]]`.
    /// Cardinality: the identifier behind each outgoing point (padding uses random values).
    outgoing: Vec<IdHash>,
    /// Match: the secret stream order (a random permutation); empty in cardinality mode.
    order: Vec<u32>,
    max_points: u64,
    receiver_records: u64,
    receiver_identifiers: u64,
    /// Match mode: `record_ids[record_start[k]..record_start[k + 1]]` are the indices (into the
    /// sorted `outgoing`) of the distinct identifiers of record `record_index[k]`.
    record_index: Vec<usize>,
    record_start: Vec<usize>,
    record_ids: Vec<usize>,
    sender: Inbound,
    /// `H(y)^ab` for every sender point received so far (sorted in `finish`).
    sender_points: Vec<[u8; POINT_LEN]>,
    double: Inbound,
    /// `H(x)^ab` as received, concatenated.
    double_points: Vec<u8>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("mode", &self.mode)
            .field("group_size", &self.group_size)
            .field("outgoing_count", &self.outgoing.len())
            .field("sender", &self.sender)
            .field("double", &self.double)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Prepares the receiver's side of a PSI job with a fresh key.
    ///
    /// `records[i]` holds the identifiers of receiver record `i`; it may be empty (the record
    /// cannot match and is not sent), and duplicates within a record are ignored.
    ///
    /// * [`Mode::Match`]: each distinct identifier is sent once (group size 1) and its result is
    ///   mapped back to every record that carries it.
    /// * [`Mode::Cardinality`]: one group per record with at least one identifier; the group size
    ///   is the largest number of distinct identifiers in a record, and shorter groups are padded
    ///   with random points that never match.
    ///
    /// `max_points` caps both the receiver's own outgoing stream and the count the sender may
    /// declare.
    ///
    /// # Errors
    /// [`CryptoError::RecordTooManyIdentifiers`] if a record has more than [`MAX_GROUP_SIZE`]
    /// distinct identifiers (cardinality mode); [`CryptoError::LocalCountTooLarge`] if the
    /// outgoing stream would exceed `max_points`; [`CryptoError::Randomness`].
    pub fn new(mode: Mode, records: &[Vec<IdHash>], max_points: u64) -> Result<Self, CryptoError> {
        let key = PsiKey::random()?;
        let mut rng = secure_shuffle_rng()?;

        // Distinct identifiers of each non-empty record, flattened:
        // `flat[flat_start[k]..flat_start[k + 1]]` belong to record `record_index[k]`.
        // Flat arrays instead of a `Vec` per record keep 10^6-record jobs small.
        let mut record_index: Vec<usize> = Vec::new();
        let mut flat: Vec<IdHash> = Vec::new();
        let mut flat_start: Vec<usize> = vec![0];
        let mut scratch: Vec<IdHash> = Vec::new();
        for (i, ids) in records.iter().enumerate() {
            scratch.clear();
            scratch.extend_from_slice(ids);
            scratch.sort_unstable();
            scratch.dedup();
            if !scratch.is_empty() {
                record_index.push(i);
                flat.extend_from_slice(&scratch);
                flat_start.push(flat.len());
            }
        }
        let record_count = record_index.len();
        let receiver_records = len_u64(record_count);

        let mut distinct: Vec<IdHash> = flat.clone();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.shrink_to_fit();
        let receiver_identifiers = len_u64(distinct.len());

        let mut order: Vec<u32> = Vec::new();
        let mut record_ids: Vec<usize> = Vec::new();
        let (group_size, outgoing) = match mode {
            Mode::Match => {
                if receiver_identifiers > max_points || distinct.len() > u32::MAX as usize {
                    return Err(CryptoError::LocalCountTooLarge {
                        count: receiver_identifiers,
                        max: max_points.min(u64::from(u32::MAX)),
                    });
                }
                // `distinct` stays sorted (for lookups); the stream order is a secret random
                // permutation of it: outgoing point `p` carries `distinct[order[p]]`.
                order = (0..distinct.len() as u32).collect();
                order.shuffle(&mut rng);
                // Records refer to identifiers by their index in the sorted `distinct`.
                record_ids.reserve_exact(flat.len());
                record_ids.extend(flat.iter().filter_map(|id| distinct.binary_search(id).ok()));
                drop(flat);
                (1, distinct)
            }
            Mode::Cardinality => {
                drop(distinct);
                let widths = flat_start.windows(2).map(|w| w[1] - w[0]);
                let widest = widths.clone().max().unwrap_or(1);
                if let Some((k, count)) = widths
                    .enumerate()
                    .find(|(_, n)| *n > MAX_GROUP_SIZE as usize)
                {
                    return Err(CryptoError::RecordTooManyIdentifiers {
                        record: record_index[k],
                        count,
                        max: MAX_GROUP_SIZE,
                    });
                }
                let group_size = u32::try_from(widest).unwrap_or(MAX_GROUP_SIZE);
                let total = receiver_records.saturating_mul(u64::from(group_size));
                if total > max_points {
                    return Err(CryptoError::LocalCountTooLarge {
                        count: total,
                        max: max_points,
                    });
                }
                let rng_os = SystemRandom::new();
                let mut outgoing = Vec::with_capacity(record_count * widest);
                for w in flat_start.windows(2) {
                    let ids = &flat[w[0]..w[1]];
                    outgoing.extend_from_slice(ids);
                    // Padding: random 32-byte values, hashed like identifiers. They match a real
                    // identifier only if SHA-256 outputs collide.
                    for _ in ids.len()..widest {
                        let mut pad = [0u8; 32];
                        rng_os.fill(&mut pad).map_err(|_| CryptoError::Randomness)?;
                        outgoing.push(IdHash(pad));
                    }
                    let start = outgoing.len() - widest;
                    outgoing[start..].shuffle(&mut rng);
                }
                (group_size, outgoing)
            }
        };
        let record_start = flat_start;

        Ok(Receiver {
            mode,
            key,
            group_size,
            outgoing,
            max_points,
            receiver_records,
            receiver_identifiers,
            order,
            record_index,
            record_start,
            record_ids,
            sender: Inbound::new(Stream::SenderBlinded, POINT_LEN),
            sender_points: Vec::new(),
            double: Inbound::new(Stream::DoubleBlinded, POINT_LEN),
            double_points: Vec::new(),
        })
    }

    /// The mode of this job.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Points per receiver record in the outgoing stream (always 1 in [`Mode::Match`]).
    pub fn group_size(&self) -> u32 {
        self.group_size
    }

    /// Number of points the receiver sends.
    pub fn outgoing_count(&self) -> u64 {
        len_u64(self.outgoing.len())
    }

    /// Blinded points `H(x)^a` number `offset .. offset + len` of the outgoing stream,
    /// concatenated.
    ///
    /// # Errors
    /// [`CryptoError::OutgoingRange`] if the range is not inside the outgoing stream.
    pub fn blind_batch(&self, offset: u64, len: usize) -> Result<Vec<u8>, CryptoError> {
        if self.order.is_empty() {
            return Ok(blind_ids(
                &self.key,
                outgoing_slice(&self.outgoing, offset, len)?,
            ));
        }
        let ids: Vec<IdHash> = outgoing_slice(&self.order, offset, len)?
            .iter()
            .map(|&k| self.outgoing[k as usize])
            .collect();
        Ok(blind_ids(&self.key, &ids))
    }

    /// Records the number of points `H(y)^b` the sender declared.
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountTooLarge`] above the job's limit;
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_sender_header(&mut self, count: u64) -> Result<(), CryptoError> {
        if self.sender.declared.is_none() && count > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream: Stream::SenderBlinded,
                count,
                max: self.max_points,
            });
        }
        self.sender.header(count)?;
        self.sender_points
            .reserve(usize::try_from(count.min(1 << 20)).unwrap_or(0));
        Ok(())
    }

    /// Accepts the sender's points `H(y)^b` number `offset ..` (concatenated 32-byte encodings),
    /// raises them to the receiver's key and stores them.
    ///
    /// # Errors
    /// Out of order, gaps, overlaps, overflow past the declared count, bad lengths, and
    /// non-canonical or identity points.
    pub fn on_sender_blinded(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let n = self.sender.check(offset, points)?;
        let doubled = mul_points(&self.key, points, Stream::SenderBlinded, offset)?;
        self.sender_points.extend(
            doubled
                .chunks_exact(POINT_LEN)
                .map(|c| <[u8; POINT_LEN]>::try_from(c).unwrap_or([0; POINT_LEN])),
        );
        self.sender.advance(n);
        Ok(())
    }

    /// Records the number of double-blinded points the sender declared.
    ///
    /// # Errors
    /// [`CryptoError::DeclaredCountMismatch`] unless it equals [`Receiver::outgoing_count`];
    /// [`CryptoError::HeaderRepeated`] on a second call.
    pub fn on_double_header(&mut self, count: u64) -> Result<(), CryptoError> {
        let expected = self.outgoing_count();
        if self.double.declared.is_none() && count != expected {
            return Err(CryptoError::DeclaredCountMismatch {
                stream: Stream::DoubleBlinded,
                count,
                expected,
            });
        }
        self.double.header(count)?;
        self.double_points.reserve(
            usize::try_from(count)
                .unwrap_or(0)
                .saturating_mul(POINT_LEN),
        );
        Ok(())
    }

    /// Accepts double-blinded points `H(x)^ab` number `offset ..`: in [`Mode::Match`] in the order
    /// the receiver sent them, in [`Mode::Cardinality`] with the groups permuted.
    ///
    /// # Errors
    /// As for [`Receiver::on_sender_blinded`].
    pub fn on_double_blinded(&mut self, offset: u64, points: &[u8]) -> Result<(), CryptoError> {
        let n = self.double.check(offset, points)?;
        validate_points(points, Stream::DoubleBlinded, offset)?;
        self.double_points.extend_from_slice(points);
        self.double.advance(n);
        Ok(())
    }

    /// Computes the result once both inbound streams are complete.
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`] or [`CryptoError::StreamIncomplete`] for either stream.
    pub fn finish(mut self) -> Result<ReceiverOutcome, CryptoError> {
        self.sender.complete()?;
        self.double.complete()?;
        self.sender_points.par_sort_unstable();
        let sender_points = &self.sender_points;
        // hit[p]: outgoing point p is in the intersection.
        let mut hit: Vec<bool> = self
            .double_points
            .par_chunks_exact(POINT_LEN)
            .map(|p| {
                <[u8; POINT_LEN]>::try_from(p)
                    .is_ok_and(|p| sender_points.binary_search(&p).is_ok())
            })
            .collect();
        if !self.order.is_empty() {
            // Back from stream order to sorted-identifier order.
            let mut by_id = vec![false; hit.len()];
            for (p, &k) in self.order.iter().enumerate() {
                by_id[k as usize] = hit[p];
            }
            hit = by_id;
        }
        let (intersection_records, matched_records) = match self.mode {
            Mode::Match => {
                let mut matched: Vec<usize> = self
                    .record_index
                    .iter()
                    .zip(self.record_start.windows(2))
                    .filter(|(_, w)| {
                        self.record_ids[w[0]..w[1]]
                            .iter()
                            .any(|&j| hit.get(j).copied().unwrap_or(false))
                    })
                    .map(|(&i, _)| i)
                    .collect();
                matched.sort_unstable();
                (len_u64(matched.len()), matched)
            }
            Mode::Cardinality => {
                let groups = hit
                    .chunks(self.group_size.max(1) as usize)
                    .filter(|g| g.iter().any(|&h| h))
                    .count();
                (len_u64(groups), Vec::new())
            }
        };
        Ok(ReceiverOutcome {
            mode: self.mode,
            receiver_records: self.receiver_records,
            receiver_identifiers: self.receiver_identifiers,
            sender_identifiers: self.sender.received,
            intersection_records,
            matched_records,
        })
    }
}

/// What the receiver learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverOutcome {
    /// The mode of the job.
    pub mode: Mode,
    /// Receiver records with at least one identifier.
    pub receiver_records: u64,
    /// Distinct receiver identifiers.
    pub receiver_identifiers: u64,
    /// Distinct sender identifiers (the sender's declared count).
    pub sender_identifiers: u64,
    /// Receiver records with at least one identifier in the intersection.
    pub intersection_records: u64,
    /// [`Mode::Match`]: indices into the receiver's `records` that intersect, sorted.
    /// Empty in [`Mode::Cardinality`].
    pub matched_records: Vec<usize>,
}

/// The sender role: holds identifiers `Y`.
///
/// Call order: [`Sender::blind_batch`] for the outgoing stream, at any time;
/// [`Sender::on_receiver_header`], then [`Sender::on_receiver_blinded`] batches, then
/// [`Sender::finish_receiver_stream`].
pub struct Sender {
    mode: Mode,
    key: PsiKey,
    /// Distinct identifiers in a random order.
    ids: Vec<IdHash>,
    max_points: u64,
    group_size: u32,
    receiver: Inbound,
    /// Cardinality mode: `H(x)^ab` received so far, in arrival order.
    held: Vec<u8>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("mode", &self.mode)
            .field("outgoing_count", &self.ids.len())
            .field("group_size", &self.group_size)
            .field("receiver", &self.receiver)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Prepares the sender's side of a PSI job with a fresh key; removes duplicate identifiers
    /// and shuffles the rest.
    ///
    /// `max_points` caps both the sender's own outgoing stream and the count the receiver may
    /// declare.
    ///
    /// # Errors
    /// [`CryptoError::LocalCountTooLarge`] if there are more distinct identifiers than
    /// `max_points`; [`CryptoError::Randomness`].
    pub fn new(mode: Mode, mut ids: Vec<IdHash>, max_points: u64) -> Result<Self, CryptoError> {
        ids.sort_unstable();
        ids.dedup();
        let count = len_u64(ids.len());
        if count > max_points {
            return Err(CryptoError::LocalCountTooLarge {
                count,
                max: max_points,
            });
        }
        ids.shuffle(&mut secure_shuffle_rng()?);
        Ok(Sender {
            mode,
            key: PsiKey::random()?,
            ids,
            max_points,
            group_size: 1,
            receiver: Inbound::new(Stream::ReceiverBlinded, POINT_LEN),
            held: Vec::new(),
        })
    }

    /// The mode of this job.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of points the sender sends first: its distinct identifiers.
    pub fn outgoing_count(&self) -> u64 {
        len_u64(self.ids.len())
    }

    /// Blinded points `H(y)^b` number `offset .. offset + len` of the outgoing stream,
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

    /// Records the receiver's declared point count and group size.
    ///
    /// # Errors
    /// [`CryptoError::GroupSizeOutOfRange`], [`CryptoError::GroupSizeInMatchMode`],
    /// [`CryptoError::CountNotWholeGroups`], [`CryptoError::DeclaredCountTooLarge`],
    /// [`CryptoError::HeaderRepeated`].
    pub fn on_receiver_header(&mut self, count: u64, group_size: u32) -> Result<(), CryptoError> {
        if self.receiver.declared.is_some() {
            return Err(CryptoError::HeaderRepeated {
                stream: Stream::ReceiverBlinded,
            });
        }
        if !(1..=MAX_GROUP_SIZE).contains(&group_size) {
            return Err(CryptoError::GroupSizeOutOfRange {
                group_size,
                max: MAX_GROUP_SIZE,
            });
        }
        if self.mode == Mode::Match && group_size != 1 {
            return Err(CryptoError::GroupSizeInMatchMode { group_size });
        }
        if !count.is_multiple_of(u64::from(group_size)) {
            return Err(CryptoError::CountNotWholeGroups { count, group_size });
        }
        if count > self.max_points {
            return Err(CryptoError::DeclaredCountTooLarge {
                stream: Stream::ReceiverBlinded,
                count,
                max: self.max_points,
            });
        }
        self.receiver.header(count)?;
        self.group_size = group_size;
        if self.mode == Mode::Cardinality {
            self.held
                .reserve(usize::try_from(count.min(1 << 20)).unwrap_or(0) * POINT_LEN);
        }
        Ok(())
    }

    /// Accepts the receiver's points `H(x)^a` number `offset ..` and raises them to the sender's
    /// key. [`Mode::Match`]: returns the re-blinded batch (same offset) at once.
    /// [`Mode::Cardinality`]: keeps it for [`Sender::finish_receiver_stream`] and returns `None`.
    ///
    /// # Errors
    /// Out of order, gaps, overlaps, overflow past the declared count, bad lengths, batches that
    /// split a group, and non-canonical or identity points.
    pub fn on_receiver_blinded(
        &mut self,
        offset: u64,
        points: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let n = self.receiver.check(offset, points)?;
        if !n.is_multiple_of(u64::from(self.group_size)) {
            return Err(CryptoError::BatchNotWholeGroups {
                stream: Stream::ReceiverBlinded,
                offset,
                points: n,
                group_size: self.group_size,
            });
        }
        let doubled = mul_points(&self.key, points, Stream::ReceiverBlinded, offset)?;
        self.receiver.advance(n);
        match self.mode {
            Mode::Match => Ok(Some(doubled)),
            Mode::Cardinality => {
                self.held.extend_from_slice(&doubled);
                Ok(None)
            }
        }
    }

    /// Ends the receiver's stream once every declared point arrived. [`Mode::Cardinality`]: all
    /// double-blinded points, with the groups (blocks of `group_size` points) in a random order.
    /// [`Mode::Match`]: an empty vector (everything was returned batch by batch).
    ///
    /// # Errors
    /// [`CryptoError::HeaderMissing`], [`CryptoError::StreamIncomplete`],
    /// [`CryptoError::AlreadyFinished`] on a second call; [`CryptoError::Randomness`].
    pub fn finish_receiver_stream(&mut self) -> Result<Vec<u8>, CryptoError> {
        if self.receiver.finished {
            return Err(CryptoError::AlreadyFinished {
                stream: Stream::ReceiverBlinded,
            });
        }
        self.receiver.complete()?;
        let out = match self.mode {
            Mode::Match => Vec::new(),
            Mode::Cardinality => {
                let group_bytes = self.group_size as usize * POINT_LEN;
                let held = std::mem::take(&mut self.held);
                let mut groups: Vec<&[u8]> = held.chunks_exact(group_bytes).collect();
                groups.shuffle(&mut secure_shuffle_rng()?);
                groups.concat()
            }
        };
        self.receiver.finished = true;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::collections::HashSet;

    fn id(n: u8) -> IdHash {
        IdHash::of_normalized(&format!("user{n}@example.com"))
    }

    /// Drives both roles to completion with the given batch sizes (in points; cycled).
    fn run(
        mode: Mode,
        records: &[Vec<IdHash>],
        sender_ids: &[IdHash],
        batches: &[usize],
    ) -> ReceiverOutcome {
        let mut r = Receiver::new(mode, records, 1 << 20).unwrap();
        let mut s = Sender::new(mode, sender_ids.to_vec(), 1 << 20).unwrap();
        let mut sizes = batches.iter().cycle();

        // Sender → receiver: H(y)^b.
        r.on_sender_header(s.outgoing_count()).unwrap();
        let mut off = 0;
        while off < s.outgoing_count() {
            let n = (*sizes.next().unwrap() as u64).min(s.outgoing_count() - off) as usize;
            r.on_sender_blinded(off, &s.blind_batch(off, n).unwrap())
                .unwrap();
            off += n as u64;
        }

        // Receiver → sender: H(x)^a, and back H(x)^ab.
        let gs = r.group_size();
        s.on_receiver_header(r.outgoing_count(), gs).unwrap();
        r.on_double_header(r.outgoing_count()).unwrap();
        let mut off = 0;
        while off < r.outgoing_count() {
            let mut n = (*sizes.next().unwrap() as u64).min(r.outgoing_count() - off);
            if mode == Mode::Cardinality {
                n = (n / u64::from(gs)).max(1) * u64::from(gs);
            }
            let batch = r.blind_batch(off, n as usize).unwrap();
            if let Some(back) = s.on_receiver_blinded(off, &batch).unwrap() {
                r.on_double_blinded(off, &back).unwrap();
            }
            off += n;
        }
        let rest = s.finish_receiver_stream().unwrap();
        if mode == Mode::Cardinality {
            let mut off = 0;
            for chunk in rest.chunks(POINT_LEN * gs as usize * 3) {
                r.on_double_blinded(off, chunk).unwrap();
                off += (chunk.len() / POINT_LEN) as u64;
            }
        } else {
            assert!(rest.is_empty());
        }
        r.finish().unwrap()
    }

    /// The plain intersection: indices of records with any identifier in `sender`.
    fn plain(records: &[Vec<IdHash>], sender: &[IdHash]) -> Vec<usize> {
        let y: HashSet<_> = sender.iter().collect();
        records
            .iter()
            .enumerate()
            .filter(|(_, ids)| ids.iter().any(|i| y.contains(i)))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn small_match_example() {
        let records = vec![
            vec![id(1)],
            vec![],
            vec![id(2), id(3), id(2)],
            vec![id(4)],
            vec![id(3)],
        ];
        let sender = vec![id(3), id(5), id(3), id(9)];
        // Each distinct identifier is sent once, with group size 1.
        let r = Receiver::new(Mode::Match, &records, 100).unwrap();
        assert_eq!((r.group_size(), r.outgoing_count()), (1, 4));
        assert_eq!(
            Sender::new(Mode::Match, sender.clone(), 100)
                .unwrap()
                .outgoing_count(),
            3
        );
        let out = run(Mode::Match, &records, &sender, &[2]);
        assert_eq!(out.matched_records, vec![2, 4]);
        assert_eq!(out.intersection_records, 2);
        assert_eq!(out.receiver_records, 4);
        assert_eq!(out.receiver_identifiers, 4);
        assert_eq!(out.sender_identifiers, 3);
        assert_eq!(out.mode, Mode::Match);
    }

    #[test]
    fn small_cardinality_example() {
        let records = vec![
            vec![id(1), id(2)],
            vec![id(3)],
            vec![id(4), id(5), id(6)],
            vec![id(7)],
        ];
        let sender = vec![id(2), id(6), id(5), id(8)];
        let r = Receiver::new(Mode::Cardinality, &records, 100).unwrap();
        assert_eq!(r.group_size(), 3);
        assert_eq!(r.outgoing_count(), 12);
        let out = run(Mode::Cardinality, &records, &sender, &[1, 2, 5]);
        assert_eq!(out.intersection_records, 2);
        assert!(out.matched_records.is_empty());
        assert_eq!(out.receiver_identifiers, 7);
        assert_eq!(out.sender_identifiers, 4);
    }

    #[test]
    fn empty_sides() {
        let out = run(Mode::Match, &[], &[id(1)], &[4]);
        assert_eq!(out.intersection_records, 0);
        let out = run(Mode::Cardinality, &[vec![id(1)]], &[], &[4]);
        assert_eq!(out.intersection_records, 0);
        assert_eq!(out.sender_identifiers, 0);
        let r = Receiver::new(Mode::Cardinality, &[vec![], vec![]], 10).unwrap();
        assert_eq!((r.group_size(), r.outgoing_count()), (1, 0));
    }

    #[test]
    fn too_many_ids_per_record() {
        let wide: Vec<IdHash> = (0..=16).map(id).collect();
        assert_eq!(
            Receiver::new(Mode::Cardinality, &[vec![id(100)], wide.clone()], 1000).unwrap_err(),
            CryptoError::RecordTooManyIdentifiers {
                record: 1,
                count: 17,
                max: 16
            }
        );
        // Match mode has no per-record limit.
        assert!(Receiver::new(Mode::Match, &[wide], 1000).is_ok());
    }

    #[test]
    fn local_limits() {
        let ids: Vec<IdHash> = (0..10).map(id).collect();
        assert!(matches!(
            Sender::new(Mode::Match, ids.clone(), 9),
            Err(CryptoError::LocalCountTooLarge { count: 10, max: 9 })
        ));
        assert!(matches!(
            Receiver::new(Mode::Match, std::slice::from_ref(&ids), 9),
            Err(CryptoError::LocalCountTooLarge { count: 10, max: 9 })
        ));
        // 2 records × group size 10 = 20 points.
        assert!(matches!(
            Receiver::new(Mode::Cardinality, &[ids.clone(), vec![id(50)]], 19),
            Err(CryptoError::LocalCountTooLarge { count: 20, max: 19 })
        ));
    }

    #[test]
    fn blind_matches_single_point_maths_and_reblind_commutes() {
        let a = PsiKey::random().unwrap();
        let b = PsiKey::random().unwrap();
        let ids = [id(1), id(2)];
        let xa = blind_ids(&a, &ids);
        assert_eq!(
            &xa[..32],
            (a.0 * hash_to_group(PSI_HASH_TAG, &ids[0].0))
                .compress()
                .as_bytes()
        );
        let xab = reblind(&b, &xa).unwrap();
        let xba = reblind(&a, &blind_ids(&b, &ids)).unwrap();
        assert_eq!(xab, xba);
        assert_eq!(reblind(&a, &[]).unwrap(), Vec::<u8>::new());
    }

    /// Bad encodings: all 0xff, a field element ≥ p, a negative field element, a valid point's
    /// encoding with the top bit set, and a non-square.
    fn non_canonical_encodings() -> Vec<[u8; 32]> {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f; // p = 2^255 - 19: not reduced
        let mut p_plus_2 = p;
        p_plus_2[0] = 0xef; // p + 2 ≡ 2: reduced would be canonical 2
        let one = {
            let mut b = [0u8; 32];
            b[0] = 1; // s = 1 is negative (odd)
            b
        };
        let high_bit = {
            let mut b = RISTRETTO_BASEPOINT_POINT.compress().to_bytes();
            b[31] |= 0x80;
            b
        };
        let two = {
            let mut b = [0u8; 32];
            b[0] = 2; // even s < p but not a valid ristretto encoding
            b
        };
        vec![[0xff; 32], p, p_plus_2, one, high_bit, two]
    }

    #[test]
    fn rejects_non_canonical_and_identity() {
        let key = PsiKey::random().unwrap();
        let good = blind_ids(&key, &[id(1), id(2)]);
        for bad in non_canonical_encodings() {
            let mut batch = good.clone();
            batch.extend_from_slice(&bad);
            assert_eq!(
                reblind(&key, &batch).unwrap_err(),
                CryptoError::NonCanonicalPoint {
                    stream: Stream::Input,
                    offset: 0,
                    index: 2
                },
                "{}",
                hex::encode(bad)
            );
        }
        let mut batch = good.clone();
        batch.splice(32..32, [0u8; 32]);
        assert_eq!(
            reblind(&key, &batch).unwrap_err(),
            CryptoError::IdentityPoint {
                stream: Stream::Input,
                offset: 0,
                index: 1
            }
        );
        assert_eq!(
            reblind(&key, &good[..33]).unwrap_err(),
            CryptoError::BatchLength {
                stream: Stream::Input,
                offset: 0,
                len: 33
            }
        );
    }

    #[test]
    fn first_bad_point_is_reported_across_chunks() {
        let key = PsiKey::random().unwrap();
        let ids: Vec<IdHash> = (0..=255u8).chain(0..=255).chain(0..=255).map(id).collect();
        let mut batch = blind_ids(&key, &ids);
        batch[700 * 32..701 * 32].copy_from_slice(&[0xff; 32]);
        batch[300 * 32..301 * 32].copy_from_slice(&[0xff; 32]);
        let mut s = Sender::new(Mode::Match, vec![], 1 << 20).unwrap();
        s.on_receiver_header(1000, 1).unwrap();
        let err = s.on_receiver_blinded(0, &batch).unwrap_err();
        assert_eq!(
            err,
            CryptoError::NonCanonicalPoint {
                stream: Stream::ReceiverBlinded,
                offset: 0,
                index: 300
            }
        );
        assert_eq!(
            err.to_string(),
            "receiver's blinded points: point 300 of batch at offset 0 is not a canonical ristretto255 encoding"
        );
    }

    #[test]
    fn receiver_stream_order_violations() {
        let records = vec![vec![id(1)], vec![id(2)], vec![id(3)]];
        let mut r = Receiver::new(Mode::Match, &records, 10).unwrap();
        let s = Sender::new(Mode::Match, (0..6).map(id).collect(), 10).unwrap();
        let pts = s.blind_batch(0, 6).unwrap();
        let st = Stream::SenderBlinded;

        assert_eq!(
            r.on_sender_blinded(0, &pts[..64]).unwrap_err(),
            CryptoError::HeaderMissing { stream: st }
        );
        assert_eq!(
            r.on_sender_header(11).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: st,
                count: 11,
                max: 10
            }
        );
        r.on_sender_header(6).unwrap();
        assert_eq!(
            r.on_sender_header(6).unwrap_err(),
            CryptoError::HeaderRepeated { stream: st }
        );
        assert_eq!(
            r.on_sender_blinded(1, &pts[32..64]).unwrap_err(),
            CryptoError::BatchOffsetGap {
                stream: st,
                expected: 0,
                got: 1
            }
        );
        r.on_sender_blinded(0, &pts[..64]).unwrap();
        assert_eq!(
            r.on_sender_blinded(1, &pts[32..96]).unwrap_err(),
            CryptoError::BatchOffsetOverlap {
                stream: st,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            r.on_sender_blinded(2, &pts[64..95]).unwrap_err(),
            CryptoError::BatchLength {
                stream: st,
                offset: 2,
                len: 31
            }
        );
        let mut too_many = pts[64..].to_vec();
        too_many.extend_from_slice(&pts[..32]);
        assert_eq!(
            r.on_sender_blinded(2, &too_many).unwrap_err(),
            CryptoError::BatchBeyondDeclared {
                stream: st,
                offset: 2,
                points: 5,
                declared: 6
            }
        );
        r.on_sender_blinded(2, &pts[64..128]).unwrap();

        // Double-blinded stream.
        let dt = Stream::DoubleBlinded;
        assert_eq!(
            r.on_double_blinded(0, &pts[..32]).unwrap_err(),
            CryptoError::HeaderMissing { stream: dt }
        );
        assert_eq!(
            r.on_double_header(4).unwrap_err(),
            CryptoError::DeclaredCountMismatch {
                stream: dt,
                count: 4,
                expected: 3
            }
        );
        r.on_double_header(3).unwrap();
        assert_eq!(
            r.on_double_header(3).unwrap_err(),
            CryptoError::HeaderRepeated { stream: dt }
        );
        r.on_double_blinded(0, &pts[..32]).unwrap();
        let mut bad = pts[32..64].to_vec();
        bad.extend_from_slice(&[0u8; 32]);
        assert_eq!(
            r.on_double_blinded(1, &bad).unwrap_err(),
            CryptoError::IdentityPoint {
                stream: dt,
                offset: 1,
                index: 1
            }
        );
        // A rejected batch does not advance the stream.
        r.on_double_blinded(1, &pts[32..64]).unwrap();
        // Sender stream still incomplete (4 of 6).
        assert_eq!(
            r.finish().unwrap_err(),
            CryptoError::StreamIncomplete {
                stream: st,
                received: 4,
                declared: 6
            }
        );
    }

    #[test]
    fn receiver_finish_requires_double_stream() {
        let mut r = Receiver::new(Mode::Match, &[vec![id(1)]], 10).unwrap();
        r.on_sender_header(0).unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            CryptoError::HeaderMissing {
                stream: Stream::DoubleBlinded
            }
        );
    }

    #[test]
    fn sender_header_checks() {
        let rt = Stream::ReceiverBlinded;
        let mut s = Sender::new(Mode::Match, vec![id(1)], 100).unwrap();
        assert_eq!(
            s.on_receiver_header(4, 2).unwrap_err(),
            CryptoError::GroupSizeInMatchMode { group_size: 2 }
        );
        let mut c = Sender::new(Mode::Cardinality, vec![id(1)], 100).unwrap();
        assert_eq!(
            c.on_receiver_header(4, 0).unwrap_err(),
            CryptoError::GroupSizeOutOfRange {
                group_size: 0,
                max: 16
            }
        );
        assert_eq!(
            c.on_receiver_header(34, 17).unwrap_err(),
            CryptoError::GroupSizeOutOfRange {
                group_size: 17,
                max: 16
            }
        );
        assert_eq!(
            c.on_receiver_header(10, 3).unwrap_err(),
            CryptoError::CountNotWholeGroups {
                count: 10,
                group_size: 3
            }
        );
        assert_eq!(
            c.on_receiver_header(102, 3).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: rt,
                count: 102,
                max: 100
            }
        );
        assert_eq!(
            s.on_receiver_header(u64::MAX, 1).unwrap_err(),
            CryptoError::DeclaredCountTooLarge {
                stream: rt,
                count: u64::MAX,
                max: 100
            }
        );
        assert_eq!(
            s.finish_receiver_stream().unwrap_err(),
            CryptoError::HeaderMissing { stream: rt }
        );
        s.on_receiver_header(1, 1).unwrap();
        assert_eq!(
            s.on_receiver_header(1, 1).unwrap_err(),
            CryptoError::HeaderRepeated { stream: rt }
        );
    }

    #[test]
    fn sender_batch_checks() {
        let rt = Stream::ReceiverBlinded;
        let records = vec![vec![id(1), id(2)], vec![id(3)], vec![id(4)]];
        let r = Receiver::new(Mode::Cardinality, &records, 100).unwrap();
        let pts = r.blind_batch(0, 6).unwrap();
        let mut s = Sender::new(Mode::Cardinality, vec![id(1)], 100).unwrap();
        s.on_receiver_header(6, 2).unwrap();
        assert_eq!(
            s.on_receiver_blinded(0, &pts[..96]).unwrap_err(),
            CryptoError::BatchNotWholeGroups {
                stream: rt,
                offset: 0,
                points: 3,
                group_size: 2
            }
        );
        assert_eq!(s.on_receiver_blinded(0, &pts[..64]).unwrap(), None);
        assert_eq!(
            s.finish_receiver_stream().unwrap_err(),
            CryptoError::StreamIncomplete {
                stream: rt,
                received: 2,
                declared: 6
            }
        );
        assert_eq!(
            s.on_receiver_blinded(4, &pts[128..]).unwrap_err(),
            CryptoError::BatchOffsetGap {
                stream: rt,
                expected: 2,
                got: 4
            }
        );
        assert_eq!(
            s.on_receiver_blinded(u64::MAX, &pts[..64]).unwrap_err(),
            CryptoError::BatchOffsetGap {
                stream: rt,
                expected: 2,
                got: u64::MAX
            }
        );
        assert_eq!(s.on_receiver_blinded(2, &pts[64..]).unwrap(), None);
        assert_eq!(
            s.on_receiver_blinded(6, &pts[..64]).unwrap_err(),
            CryptoError::BatchBeyondDeclared {
                stream: rt,
                offset: 6,
                points: 2,
                declared: 6
            }
        );
        let out = s.finish_receiver_stream().unwrap();
        assert_eq!(out.len(), 6 * 32);
        assert_eq!(
            s.finish_receiver_stream().unwrap_err(),
            CryptoError::AlreadyFinished { stream: rt }
        );
        assert_eq!(
            s.on_receiver_blinded(6, &[]).unwrap_err(),
            CryptoError::AlreadyFinished { stream: rt }
        );
    }

    #[test]
    fn cardinality_groups_are_permuted_as_blocks() {
        // 40 single-id records plus one wide record: the double-blinded groups must be exactly
        // the re-blinded input groups, in some order, and (overwhelmingly likely) not the same
        // order.
        let mut records: Vec<Vec<IdHash>> = (0..40).map(|i| vec![id(i)]).collect();
        records.push(vec![id(200), id(201)]);
        let r = Receiver::new(Mode::Cardinality, &records, 1000).unwrap();
        let n = r.outgoing_count();
        let pts = r.blind_batch(0, n as usize).unwrap();
        let mut s = Sender::new(Mode::Cardinality, vec![], 1000).unwrap();
        s.on_receiver_header(n, r.group_size()).unwrap();
        assert_eq!(s.on_receiver_blinded(0, &pts).unwrap(), None);
        let out = s.finish_receiver_stream().unwrap();

        let expected = reblind(&s.key, &pts).unwrap();
        let expected_groups: Vec<&[u8]> = expected.chunks(64).collect();
        let got_groups: Vec<&[u8]> = out.chunks(64).collect();
        assert_ne!(expected_groups, got_groups, "groups were not shuffled");
        let mut a = expected_groups.clone();
        let mut b = got_groups.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn outgoing_range_checked() {
        let s = Sender::new(Mode::Match, vec![id(1), id(2)], 10).unwrap();
        assert_eq!(s.blind_batch(1, 1).unwrap().len(), 32);
        assert_eq!(s.blind_batch(2, 0).unwrap().len(), 0);
        assert_eq!(
            s.blind_batch(1, 2).unwrap_err(),
            CryptoError::OutgoingRange {
                offset: 1,
                len: 2,
                count: 2
            }
        );
        assert!(s.blind_batch(u64::MAX, usize::MAX).is_err());
        let r = Receiver::new(Mode::Match, &[vec![id(1)]], 10).unwrap();
        assert!(r.blind_batch(0, 2).is_err());
    }

    #[test]
    fn debug_prints_no_secrets() {
        let k = PsiKey::random().unwrap();
        assert_eq!(format!("{k:?}"), "PsiKey(..)");
        let s = Sender::new(Mode::Match, vec![id(1)], 10).unwrap();
        assert!(!format!("{s:?}").contains("PsiKey"));
        let r = Receiver::new(Mode::Match, &[vec![id(1)]], 10).unwrap();
        assert!(!format!("{r:?}").contains("PsiKey"));
    }

    #[test]
    fn keys_are_fresh() {
        let a = PsiKey::random().unwrap();
        let b = PsiKey::random().unwrap();
        assert_ne!(a.0, b.0);
        assert_ne!(a.0, Scalar::ZERO);
    }

    /// Records with 1–3 ids drawn from a small universe (so duplicates and overlaps are common),
    /// some empty records, and a sender set from the same universe.
    fn records_strategy() -> impl Strategy<Value = (Vec<Vec<IdHash>>, Vec<IdHash>)> {
        let ids = || prop::collection::vec((0u8..24).prop_map(id), 1..=3);
        let records = prop::collection::vec(prop_oneof![9 => ids(), 1 => Just(Vec::new())], 0..14);
        let sender = prop::collection::vec((0u8..24).prop_map(id), 0..16);
        (records, sender)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn match_equals_plain_intersection(
            (records, sender) in records_strategy(),
            batches in prop::collection::vec(1usize..6, 1..4),
        ) {
            let out = run(Mode::Match, &records, &sender, &batches);
            let expected = plain(&records, &sender);
            prop_assert_eq!(out.intersection_records, expected.len() as u64);
            prop_assert_eq!(out.matched_records, expected);
            let distinct: BTreeSet<_> = records.iter().flatten().collect();
            prop_assert_eq!(out.receiver_identifiers, distinct.len() as u64);
            let distinct_y: BTreeSet<_> = sender.iter().collect();
            prop_assert_eq!(out.sender_identifiers, distinct_y.len() as u64);
            prop_assert_eq!(
                out.receiver_records,
                records.iter().filter(|r| !r.is_empty()).count() as u64
            );
        }

        #[test]
        fn cardinality_equals_plain_count(
            (records, sender) in records_strategy(),
            batches in prop::collection::vec(1usize..8, 1..4),
        ) {
            let out = run(Mode::Cardinality, &records, &sender, &batches);
            prop_assert_eq!(out.intersection_records, plain(&records, &sender).len() as u64);
            prop_assert!(out.matched_records.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            offset in prop_oneof![Just(0u64), any::<u64>()],
            header in prop_oneof![Just(6u64), any::<u64>()],
            group_size in 0u32..20,
        ) {
            let key = PsiKey::random().unwrap();
            let _ = reblind(&key, &bytes);

            let mut r = Receiver::new(Mode::Match, &[vec![id(1)], vec![id(2)]], 8).unwrap();
            let _ = r.on_sender_header(header);
            let _ = r.on_sender_blinded(offset, &bytes);
            let _ = r.on_double_header(header);
            let _ = r.on_double_blinded(offset, &bytes);
            let _ = r.finish();

            for mode in [Mode::Match, Mode::Cardinality] {
                let mut s = Sender::new(mode, vec![id(1)], 8).unwrap();
                let _ = s.on_receiver_header(header, group_size);
                let _ = s.on_receiver_blinded(offset, &bytes);
                let _ = s.finish_receiver_stream();
            }
        }

        #[test]
        fn random_32_byte_strings_decode_or_error(bytes in any::<[u8; 32]>()) {
            let key = PsiKey::random().unwrap();
            match reblind(&key, &bytes) {
                Ok(out) => {
                    let p = CompressedRistretto(bytes).decompress().unwrap();
                    prop_assert_eq!(out, (key.0 * p).compress().to_bytes().to_vec());
                }
                Err(e) => {
                    let expected_kind = matches!(
                        e,
                        CryptoError::NonCanonicalPoint { .. } | CryptoError::IdentityPoint { .. }
                    );
                    prop_assert!(expected_kind, "unexpected error {}", e);
                }
            }
        }
    }
}
