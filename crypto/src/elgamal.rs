//! Additively homomorphic ("exponential") ElGamal on ristretto255.
//!
//! # What it provides
//!
//! With `G` the ristretto255 base point, a secret key `sk` (a random non-zero scalar) and its
//! public key `pk = sk·G`, an integer `m` is encrypted with fresh randomness `r` as
//!
//! ```text
//! Enc_pk(m; r) = (c1, c2) = (r·G, m·G + r·pk)
//! ```
//!
//! so that adding ciphertexts component-wise adds the plaintexts (modulo the group order `ℓ`,
//! about 2^252), a plaintext can be added without the secret key ([`Ciphertext::add_plain`]),
//! and adding an encryption of zero ([`Ciphertext::rerandomize`]) gives a fresh-looking
//! ciphertext of the same value. Decryption recovers `m·G = c2 − sk·c1` and then needs a
//! discrete logarithm, which is only feasible for plaintexts known to lie in a bounded range:
//! [`DlogTable`] searches a range `[min, max]` with baby-step giant-step.
//!
//! # Guarantees
//!
//! * **Semantic security (IND-CPA)** under the decisional Diffie–Hellman assumption in
//!   ristretto255, provided every encryption uses fresh uniform randomness (drawn here from the
//!   operating system) and the secret key never leaves its owner.
//! * After [`Ciphertext::rerandomize`], a ciphertext is distributed exactly like a fresh
//!   encryption of the same plaintext, whatever computation produced it: the holder of the secret
//!   key learns the plaintext and nothing about which ciphertexts were added.
//! * Encodings are canonical: [`PublicKey::from_bytes`] and [`Ciphertext::from_bytes`] reject
//!   anything that is not the canonical encoding of a ristretto255 point, and public keys that
//!   are the identity (which would encrypt in the clear).
//!
//! # Not guaranteed
//!
//! * Ciphertexts are malleable by design (that is the homomorphism): there is no integrity and
//!   no security against chosen-ciphertext attacks. Use only where the protocol's threat model
//!   is semi-honest, as in [`crate::psi_sum`].
//! * Decryption ([`SecretKey::vartime_decrypt`]) takes time that depends on the plaintext; it
//!   must run where only the key owner can observe its timing. Encryption, key generation and the
//!   homomorphic operations use constant-time scalar multiplication.
//! * Plaintexts live modulo `ℓ`: a sum that wraps around is only detected as "out of range".
//!
//! # Decryption by bounded discrete logarithm
//!
//! A [`DlogTable`] with `N = 2^baby_bits` baby steps stores, for `j ∈ [0, N)`, a 54-bit
//! fingerprint of `compress(2·j·G)` in an open-addressing hash table of `2N` slots (8 bytes
//! each). To find `t ∈ [0, W)` with `T = t·G`, the giant steps compute
//! `compress(2·(T − i·N·G))` for `i = 0, 1, …, ⌈W/N⌉ − 1`, many at once with
//! `RistrettoPoint::double_and_compress_batch` (one field inversion per batch instead of one per
//! point) and in parallel with rayon. Ristretto compression is injective and doubling is
//! injective in a group of odd prime order, so equal compressions of the doubled points mean equal
//! points; every fingerprint hit is confirmed by recomputing `j·G` before it is accepted.
//!
//! The process-wide table ([`DlogTable::global`]: `2^22` baby steps, 64 MiB, built once per
//! process on first use, in a few seconds on two cores) decrypts any value of a range up to
//! `2^42` wide — e.g. `[−2^40, 2^40]` — with at most `2^20` giant steps; a value in
//! `[−2^20, 2^40]` takes at most `2^18` giant steps, a fraction of a second on two cores. Table
//! size trades build time and memory against decryption time: each extra baby-step bit doubles
//! the first and halves the second. See `benches/elgamal.rs` for measured times.
//!
//! # References
//!
//! * T. ElGamal, "A public key cryptosystem and a signature scheme based on discrete
//!   logarithms", IEEE Trans. Inf. Theory 31(4), 1985.
//! * R. Cramer, R. Gennaro, B. Schoenmakers, "A secure and optimally efficient multi-authority
//!   election scheme", EUROCRYPT 1997 (exponential ElGamal).
//! * D. Shanks, "Class number, a theory of factorization, and genera", 1971 (baby-step
//!   giant-step).
//! * RFC 9496 (ristretto255).

use std::fmt;
use std::iter::Sum;
use std::ops::Add;
use std::sync::{Arc, OnceLock};

use curve25519_dalek::constants::{RISTRETTO_BASEPOINT_POINT, RISTRETTO_BASEPOINT_TABLE};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoBasepointTable};
use curve25519_dalek::traits::Identity;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rayon::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;

/// Length in bytes of an encoded public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length in bytes of an encoded ciphertext: `c1` then `c2`, 32 bytes each.
pub const CIPHERTEXT_LEN: usize = 64;

/// log2 of the number of baby steps of the process-wide table, [`DlogTable::global`].
pub const DEFAULT_BABY_BITS: u32 = 22;

/// The largest supported log2 of the number of baby steps (a 4 GiB table).
pub const MAX_BABY_BITS: u32 = 28;

/// The largest number of giant steps a decryption may take; with [`DEFAULT_BABY_BITS`] this
/// allows ranges up to `2^42` values wide.
pub const MAX_GIANT_STEPS: u64 = 1 << 20;

/// The widest range the tables of [`DlogTable::for_width`] decrypt: `2^DEFAULT_BABY_BITS` baby
/// steps times [`MAX_GIANT_STEPS`], `2^42` values. A protocol must refuse a wider range before
/// anyone computes (or pays for) a ciphertext in it.
pub const MAX_DECRYPT_WIDTH: u128 = (1u128 << DEFAULT_BABY_BITS) * MAX_GIANT_STEPS as u128;

/// Ciphertexts per rayon task when encrypting.
const PAR_CHUNK: usize = 256;

/// Giant steps per rayon task (and per batched compression) when decrypting.
const GIANT_CHUNK: u64 = 1024;

/// Baby steps per rayon task (and per batched compression) when building a table.
const BABY_CHUNK: u64 = 4096;

/// An empty hash-table slot (no baby step has index `u32::MAX`).
const EMPTY: u64 = u64::MAX;

/// `n` uniformly random scalars from the operating system's generator.
fn random_scalars(n: usize) -> Result<Vec<Scalar>, CryptoError> {
    let mut wide = Zeroizing::new(vec![0u8; n * 64]);
    SystemRandom::new()
        .fill(wide.as_mut_slice())
        .map_err(|_| CryptoError::Randomness)?;
    Ok(wide
        .chunks_exact(64)
        .map(|w| {
            let mut b = Zeroizing::new([0u8; 64]);
            b.copy_from_slice(w);
            Scalar::from_bytes_mod_order_wide(&b)
        })
        .collect())
}

/// One uniformly random scalar from the operating system's generator.
fn random_scalar() -> Result<Scalar, CryptoError> {
    let mut wide = Zeroizing::new([0u8; 64]);
    SystemRandom::new()
        .fill(wide.as_mut())
        .map_err(|_| CryptoError::Randomness)?;
    Ok(Scalar::from_bytes_mod_order_wide(&wide))
}

/// The scalar `v mod ℓ` of a signed integer.
fn scalar_from_i64(v: i64) -> Scalar {
    let magnitude = Scalar::from(v.unsigned_abs());
    if v < 0 { -magnitude } else { magnitude }
}

/// `m·G` for a signed `m`, in constant time for a given sign.
fn mul_base_i64(m: i64) -> RistrettoPoint {
    &scalar_from_i64(m) * RISTRETTO_BASEPOINT_TABLE
}

/// Decodes a canonical 32-byte ristretto255 encoding (the identity is allowed).
fn decode(bytes: &[u8]) -> Option<RistrettoPoint> {
    CompressedRistretto::from_slice(bytes).ok()?.decompress()
}

/// An ElGamal secret key: a uniformly random non-zero scalar, fresh for each job.
///
/// `Debug` prints nothing of the key; the scalar is zeroed on drop.
pub struct SecretKey(Scalar);

impl SecretKey {
    /// A fresh key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn random() -> Result<Self, CryptoError> {
        loop {
            let s = random_scalar()?;
            if s != Scalar::ZERO {
                return Ok(SecretKey(s));
            }
        }
    }

    /// The matching public key `sk·G`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_point(&self.0 * RISTRETTO_BASEPOINT_TABLE)
    }

    /// Decrypts a ciphertext whose plaintext is known to lie in `[min, max]`, searching that
    /// range with `table`. Takes time that depends on the plaintext.
    ///
    /// # Errors
    /// [`CryptoError::DecryptRangeEmpty`] if `min > max`; [`CryptoError::DecryptRangeTooWide`]
    /// if the range needs more than [`MAX_GIANT_STEPS`] giant steps of `table`;
    /// [`CryptoError::SumOutOfRange`] if the plaintext is not in `[min, max]`.
    pub fn vartime_decrypt(
        &self,
        ct: &Ciphertext,
        min: i64,
        max: i64,
        table: &DlogTable,
    ) -> Result<i64, CryptoError> {
        let m_g = ct.c2 - self.0 * ct.c1;
        table.vartime_dlog(&m_g, min, max)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

/// An ElGamal public key: a non-identity ristretto255 point, with a precomputed table of its
/// multiples for fast encryption.
#[derive(Clone)]
pub struct PublicKey {
    bytes: [u8; PUBLIC_KEY_LEN],
    /// Multiples of `point` for fixed-base scalar multiplication (about 30 KiB).
    table: Arc<RistrettoBasepointTable>,
}

impl PublicKey {
    fn from_point(point: RistrettoPoint) -> Self {
        PublicKey {
            bytes: point.compress().to_bytes(),
            table: Arc::new(RistrettoBasepointTable::create(&point)),
        }
    }

    /// Decodes a public key from its 32-byte encoding.
    ///
    /// # Errors
    /// [`CryptoError::PublicKeyLength`] unless `bytes` is 32 bytes long;
    /// [`CryptoError::NonCanonicalPublicKey`]; [`CryptoError::IdentityPublicKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(CryptoError::PublicKeyLength { len: bytes.len() });
        }
        let point = decode(bytes).ok_or(CryptoError::NonCanonicalPublicKey)?;
        if point == RistrettoPoint::identity() {
            return Err(CryptoError::IdentityPublicKey);
        }
        Ok(PublicKey::from_point(point))
    }

    /// The canonical 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.bytes
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(..)")
    }
}

/// An ElGamal ciphertext `(c1, c2) = (r·G, m·G + r·pk)`.
///
/// `Debug` prints nothing of its points.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ciphertext {
    c1: RistrettoPoint,
    c2: RistrettoPoint,
}

impl Ciphertext {
    /// The trivial encryption of 0 (both components the identity), the neutral element of
    /// addition. It hides nothing: [`Ciphertext::rerandomize`] anything built from it before it
    /// leaves its owner.
    pub fn zero() -> Self {
        Ciphertext {
            c1: RistrettoPoint::identity(),
            c2: RistrettoPoint::identity(),
        }
    }

    /// Decodes a ciphertext from its 64-byte encoding (`c1` then `c2`).
    ///
    /// # Errors
    /// [`CryptoError::CiphertextLength`] unless `bytes` is 64 bytes long;
    /// [`CryptoError::NonCanonicalCiphertext`] naming the first bad component.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != CIPHERTEXT_LEN {
            return Err(CryptoError::CiphertextLength { len: bytes.len() });
        }
        let (c1, c2) = bytes.split_at(32);
        let c1 = decode(c1).ok_or(CryptoError::NonCanonicalCiphertext { component: 1 })?;
        let c2 = decode(c2).ok_or(CryptoError::NonCanonicalCiphertext { component: 2 })?;
        Ok(Ciphertext { c1, c2 })
    }

    /// The canonical 64-byte encoding.
    pub fn to_bytes(&self) -> [u8; CIPHERTEXT_LEN] {
        let mut out = [0u8; CIPHERTEXT_LEN];
        out[..32].copy_from_slice(self.c1.compress().as_bytes());
        out[32..].copy_from_slice(self.c2.compress().as_bytes());
        out
    }

    /// An encryption of this plaintext plus `m` (which may be negative), with the same
    /// randomness.
    pub fn add_plain(&self, m: i64) -> Ciphertext {
        Ciphertext {
            c1: self.c1,
            c2: self.c2 + mul_base_i64(m),
        }
    }

    /// A fresh encryption of the same plaintext under `pk`: this ciphertext plus an encryption
    /// of 0 with new randomness.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn rerandomize(&self, pk: &PublicKey) -> Result<Ciphertext, CryptoError> {
        let r = Zeroizing::new(random_scalar()?);
        Ok(Ciphertext {
            c1: self.c1 + &*r * RISTRETTO_BASEPOINT_TABLE,
            c2: self.c2 + &*r * &*pk.table,
        })
    }
}

impl Add for Ciphertext {
    type Output = Ciphertext;

    /// An encryption of the sum of both plaintexts.
    fn add(self, other: Ciphertext) -> Ciphertext {
        Ciphertext {
            c1: self.c1 + other.c1,
            c2: self.c2 + other.c2,
        }
    }
}

impl<'a> Add<&'a Ciphertext> for &Ciphertext {
    type Output = Ciphertext;

    /// An encryption of the sum of both plaintexts.
    fn add(self, other: &'a Ciphertext) -> Ciphertext {
        *self + *other
    }
}

impl Sum for Ciphertext {
    fn sum<I: Iterator<Item = Ciphertext>>(iter: I) -> Ciphertext {
        iter.fold(Ciphertext::zero(), Add::add)
    }
}

impl<'a> Sum<&'a Ciphertext> for Ciphertext {
    fn sum<I: Iterator<Item = &'a Ciphertext>>(iter: I) -> Ciphertext {
        iter.fold(Ciphertext::zero(), |acc, c| acc + *c)
    }
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ciphertext(..)")
    }
}

/// An encryption of the sum of all plaintexts (of 0 for none), added up in parallel.
pub fn sum(cts: &[Ciphertext]) -> Ciphertext {
    cts.par_iter()
        .copied()
        .reduce(Ciphertext::zero, |a, b| a + b)
}

/// Encrypts `m` under `pk` with fresh randomness.
///
/// # Errors
/// [`CryptoError::Randomness`] if the generator fails.
pub fn encrypt(pk: &PublicKey, m: u64) -> Result<Ciphertext, CryptoError> {
    let r = Zeroizing::new(random_scalar()?);
    Ok(Ciphertext {
        c1: &*r * RISTRETTO_BASEPOINT_TABLE,
        c2: &Scalar::from(m) * RISTRETTO_BASEPOINT_TABLE + &*r * &*pk.table,
    })
}

/// Encrypts each value under `pk` with fresh randomness, in parallel; returns the 64-byte
/// encodings, in order, ready to send.
///
/// # Errors
/// [`CryptoError::Randomness`] if the generator fails.
pub fn encrypt_batch(
    pk: &PublicKey,
    values: &[u64],
) -> Result<Vec<[u8; CIPHERTEXT_LEN]>, CryptoError> {
    encrypt_rows(pk, values, &[u64::MAX])
}

/// Number of radix-16 digits of a `u64`.
const MESSAGE_DIGITS: usize = 16;

/// How many radix-16 digits encode a value of a column bounded by `bound`: one for a bound
/// below 16, sixteen for `u64::MAX`. It depends on the public bound only.
pub fn message_digits(bound: u64) -> usize {
    (64 - bound.leading_zeros() as usize).div_ceil(4).max(1)
}

/// `(d·16^i / 2)·G` for digit position `i < 16` and digit `d < 16`: `16 · i + d`.
fn message_halves() -> &'static [RistrettoPoint] {
    static HALVES: OnceLock<Vec<RistrettoPoint>> = OnceLock::new();
    HALVES.get_or_init(|| {
        let half = &Scalar::from(2u64).invert() * RISTRETTO_BASEPOINT_TABLE;
        let mut out = Vec::with_capacity(16 * MESSAGE_DIGITS);
        let mut step = half; // 16^i · (G/2)
        for _ in 0..MESSAGE_DIGITS {
            let mut acc = RistrettoPoint::identity();
            for _ in 0..16 {
                out.push(acc);
                acc += step;
            }
            step = acc; // 16 · step
        }
        out
    })
}

/// `(m/2)·G` from the low `digits` radix-16 digits of `m` (all of `m` when `m < 16^digits`):
/// one constant-time lookup per digit, each touching all 16 entries of its position, and one
/// addition. The work depends on `digits` only, never on `m`.
fn message_half(m: u64, digits: usize) -> RistrettoPoint {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    let table = message_halves();
    let mut out = RistrettoPoint::identity();
    for i in 0..digits.min(MESSAGE_DIGITS) {
        let d = (m >> (4 * i)) & 0xf;
        let mut pick = RistrettoPoint::identity();
        for (j, p) in (0u64..).zip(&table[16 * i..16 * i + 16]) {
            pick.conditional_assign(p, d.ct_eq(&j));
        }
        out += pick;
    }
    out
}

/// Checks that every value of `values` (row-major, one column per entry of `bounds`) is at
/// most its column's bound.
///
/// # Errors
/// [`CryptoError::ValueAboveBound`] naming the first column found with a value above its bound.
pub fn check_bounds(values: &[u64], bounds: &[u64]) -> Result<(), CryptoError> {
    let width = bounds.len().max(1);
    match values.iter().enumerate().find_map(|(i, v)| {
        bounds
            .get(i % width)
            .filter(|b| v > *b)
            .map(|b| (i % width, *b))
    }) {
        Some((column, bound)) => Err(CryptoError::ValueAboveBound { column, bound }),
        None => Ok(()),
    }
}

/// Encrypts rows of values under `pk` with fresh randomness, in parallel: `values` is
/// row-major with one column per entry of `bounds`, and every value of column `c` must be at
/// most `bounds[c]`. The bounds are public (the job's), so which way a column is encrypted
/// says nothing about its values: `m·G` costs one constant-time table lookup per radix-16 digit
/// of the column's bound ([`message_digits`]), the same for every value of the column, a
/// fraction of a base-point multiplication. Returns the 64-byte encodings, in order.
///
/// # Errors
/// [`CryptoError::ValueAboveBound`] for a value above its column's bound (nothing is
/// returned); [`CryptoError::Randomness`] if the generator fails.
pub fn encrypt_rows(
    pk: &PublicKey,
    values: &[u64],
    bounds: &[u64],
) -> Result<Vec<[u8; CIPHERTEXT_LEN]>, CryptoError> {
    check_bounds(values, bounds)?;
    let width = bounds.len().max(1);
    // Each ciphertext is computed as halves, (r'·G, m'·G + r'·pk) with m' = m/2 mod ℓ, and
    // `double_and_compress_batch` encodes the doubled points with one inversion per chunk:
    // (2r'·G, m·G + 2r'·pk) is an encryption of m with randomness r = 2r', uniform because r'
    // is. Chunks hold whole rows, so a value's column is its index modulo the width.
    let digits: Vec<usize> = (0..width)
        .map(|c| message_digits(bounds.get(c).copied().unwrap_or(u64::MAX)))
        .collect();
    let chunk = PAR_CHUNK.div_ceil(width) * width;
    let mut out = vec![[0u8; CIPHERTEXT_LEN]; values.len()];
    let results: Vec<Result<(), CryptoError>> = out
        .par_chunks_mut(chunk)
        .zip(values.par_chunks(chunk))
        .map(|(out, values)| {
            let rs = Zeroizing::new(random_scalars(values.len())?);
            let mut halves = Vec::with_capacity(2 * values.len());
            for (i, (m, r)) in values.iter().zip(rs.iter()).enumerate() {
                let m_half = message_half(*m, digits[i % width]);
                halves.push(r * RISTRETTO_BASEPOINT_TABLE);
                halves.push(m_half + r * &*pk.table);
            }
            let enc = RistrettoPoint::double_and_compress_batch(&halves);
            for (slot, pair) in out.iter_mut().zip(enc.chunks_exact(2)) {
                slot[..32].copy_from_slice(pair[0].as_bytes());
                slot[32..].copy_from_slice(pair[1].as_bytes());
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(out)
}

/// Baby-step giant-step tables for discrete logarithms to the base point `G`, used to decrypt.
///
/// Invariants: (1) `slots.len() == 2 · 2^baby_bits` and `mask == slots.len() − 1`; (2) every
/// baby step `j ∈ [0, 2^baby_bits)` occupies exactly one slot, holding
/// `fingerprint(compress(2·j·G)) << 32 | j`, reachable by linear probing from
/// `index(compress(2·j·G))` without crossing an empty slot; (3) `giant == 2^baby_bits · G`.
pub struct DlogTable {
    baby_bits: u32,
    slots: Vec<u64>,
    mask: u64,
    giant: RistrettoPoint,
}

impl fmt::Debug for DlogTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlogTable")
            .field("baby_bits", &self.baby_bits)
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// Hash-table slot index and fingerprint of an encoded point. Byte 0 is skipped: its low bit is
/// always 0 in canonical encodings.
fn slot_key(c: &CompressedRistretto) -> (u64, u32) {
    let b = c.as_bytes();
    let index = u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]);
    let fingerprint = u32::from_le_bytes([b[9], b[10], b[11], b[12]]);
    (index, fingerprint)
}

impl DlogTable {
    /// A table of `2^baby_bits` baby steps (`2^(baby_bits + 4)` bytes), built in parallel.
    ///
    /// # Errors
    /// [`CryptoError::DlogTableSize`] unless `1 <= baby_bits <= MAX_BABY_BITS`.
    pub fn new(baby_bits: u32) -> Result<Self, CryptoError> {
        if !(1..=MAX_BABY_BITS).contains(&baby_bits) {
            return Err(CryptoError::DlogTableSize {
                bits: baby_bits,
                max: MAX_BABY_BITS,
            });
        }
        Ok(Self::build(baby_bits))
    }

    /// The process-wide table of `2^DEFAULT_BABY_BITS` baby steps, built on first use (callers
    /// meanwhile wait for it).
    ///
    /// Call it from outside rayon's thread pool: a rayon worker that waits inside the table's
    /// parallel build may pick up another task, and if that task also asks for the table the
    /// worker deadlocks.
    pub fn global() -> &'static DlogTable {
        static GLOBAL: OnceLock<DlogTable> = OnceLock::new();
        GLOBAL.get_or_init(|| Self::build(DEFAULT_BABY_BITS))
    }

    /// A process-wide table sized for decrypting values in a range `width` wide: about
    /// `sqrt(width)` baby steps (so building it and the giant steps cost about the same), and
    /// enough for `width` within [`MAX_GIANT_STEPS`], but never more than `2^DEFAULT_BABY_BITS`
    /// (64 MiB): a range wider than [`MAX_DECRYPT_WIDTH`] gets that largest table, which cannot
    /// decrypt all of it. Tables are built once per size and kept, so the cache never holds
    /// more than 128 MiB. Same caveat as [`DlogTable::global`] about rayon.
    pub fn for_width(width: u128) -> std::sync::Arc<DlogTable> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        static TABLES: OnceLock<Mutex<HashMap<u32, Arc<DlogTable>>>> = OnceLock::new();
        let log2 = 128 - width.max(1).leading_zeros();
        let giant_bits = MAX_GIANT_STEPS.trailing_zeros();
        let bits = log2
            .div_ceil(2)
            .max(log2.saturating_sub(giant_bits))
            .clamp(8, DEFAULT_BABY_BITS);
        let tables = TABLES.get_or_init(|| Mutex::new(HashMap::new()));
        let cached = tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&bits)
            .cloned();
        if let Some(t) = cached {
            return t;
        }
        // Built outside the lock; two racing builders of one size waste work, not correctness.
        let table = Arc::new(Self::build(bits));
        tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(bits)
            .or_insert(table)
            .clone()
    }

    fn build(baby_bits: u32) -> Self {
        let n: u64 = 1 << baby_bits;
        let chunk = BABY_CHUNK.min(n);
        let keys: Vec<Vec<(u64, u32)>> = (0..n / chunk)
            .into_par_iter()
            .map(|c| {
                let mut p = RistrettoPoint::mul_base(&Scalar::from(c * chunk));
                let mut points = Vec::with_capacity(chunk as usize);
                for _ in 0..chunk {
                    points.push(p);
                    p += RISTRETTO_BASEPOINT_POINT;
                }
                RistrettoPoint::double_and_compress_batch(&points)
                    .iter()
                    .map(slot_key)
                    .collect()
            })
            .collect();
        let mut slots = vec![EMPTY; 2 * n as usize];
        let mask = 2 * n - 1;
        for (j, (index, fingerprint)) in keys.into_iter().flatten().enumerate() {
            let mut s = index & mask;
            while slots[s as usize] != EMPTY {
                s = (s + 1) & mask;
            }
            slots[s as usize] = (u64::from(fingerprint) << 32) | j as u64;
        }
        DlogTable {
            baby_bits,
            slots,
            mask,
            giant: RistrettoPoint::mul_base(&Scalar::from(n)),
        }
    }

    /// Number of baby steps, `2^baby_bits`.
    pub fn baby_steps(&self) -> u64 {
        1 << self.baby_bits
    }

    /// The widest range (number of values) a decryption may search.
    pub fn max_width(&self) -> u64 {
        self.baby_steps().saturating_mul(MAX_GIANT_STEPS)
    }

    /// Heap memory held by the table, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u64>()
    }

    /// The baby steps `j` whose doubled point has the same fingerprint as `c`.
    fn candidates(&self, c: &CompressedRistretto) -> impl Iterator<Item = u64> + '_ {
        let (index, fingerprint) = slot_key(c);
        let mut s = index & self.mask;
        std::iter::from_fn(move || {
            loop {
                let v = self.slots[s as usize];
                if v == EMPTY {
                    return None;
                }
                s = (s + 1) & self.mask;
                if (v >> 32) as u32 == fingerprint {
                    return Some(v & 0xffff_ffff);
                }
            }
        })
    }

    /// The `t ∈ [min, max]` with `point = t·G`. Takes time that depends on `t`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptRangeEmpty`] if `min > max`; [`CryptoError::DecryptRangeTooWide`]
    /// if the range needs more than [`MAX_GIANT_STEPS`] giant steps;
    /// [`CryptoError::SumOutOfRange`] if no such `t` exists.
    pub fn vartime_dlog(
        &self,
        point: &RistrettoPoint,
        min: i64,
        max: i64,
    ) -> Result<i64, CryptoError> {
        if min > max {
            return Err(CryptoError::DecryptRangeEmpty { min, max });
        }
        let n = self.baby_steps();
        // Number of values in [min, max]: at most 2^64.
        let width = (i128::from(max) - i128::from(min) + 1) as u128;
        let steps = width.div_ceil(u128::from(n));
        if steps > u128::from(MAX_GIANT_STEPS) {
            return Err(CryptoError::DecryptRangeTooWide {
                min,
                max,
                max_width: self.max_width(),
            });
        }
        let steps = steps as u64;
        // Search t' = t − min ∈ [0, width) with target = t'·G.
        let target = point - mul_base_i64(min);
        let n_scalar = Scalar::from(n);
        let found = (0..steps.div_ceil(GIANT_CHUNK))
            .into_par_iter()
            .find_map_any(|c| {
                let first = c * GIANT_CHUNK;
                let len = GIANT_CHUNK.min(steps - first);
                let mut p = target - RistrettoPoint::mul_base(&(Scalar::from(first) * n_scalar));
                let mut points = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    points.push(p);
                    p -= self.giant;
                }
                let encoded = RistrettoPoint::double_and_compress_batch(&points);
                for (i, (c, p)) in encoded.iter().zip(&points).enumerate() {
                    for j in self.candidates(c) {
                        if RistrettoPoint::mul_base(&Scalar::from(j)) == *p {
                            return Some((first + i as u64) * n + j);
                        }
                    }
                }
                None
            });
        match found {
            Some(t) if u128::from(t) < width => i64::try_from(i128::from(min) + i128::from(t))
                .map_err(|_| CryptoError::SumOutOfRange { min, max }),
            _ => Err(CryptoError::SumOutOfRange { min, max }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_table() -> &'static DlogTable {
        static T: OnceLock<DlogTable> = OnceLock::new();
        T.get_or_init(|| DlogTable::new(12).unwrap())
    }

    fn keys() -> (SecretKey, PublicKey) {
        let sk = SecretKey::random().unwrap();
        let pk = sk.public_key();
        (sk, pk)
    }

    #[test]
    fn encrypt_decrypt_roundtrip() {
        let (sk, pk) = keys();
        for m in [0u64, 1, 2, 4095, 4096, 4097, 1 << 20, (1 << 24) + 12345] {
            let ct = encrypt(&pk, m).unwrap();
            let got = sk.vartime_decrypt(&ct, 0, 1 << 25, small_table()).unwrap();
            assert_eq!(got, m as i64);
        }
    }

    #[test]
    fn bounded_columns_decrypt_to_their_values() {
        assert_eq!(
            [0, 1, 15, 16, 255, 256, u64::MAX].map(message_digits),
            [1, 1, 1, 2, 2, 3, 16]
        );
        let two = Scalar::from(2u64);
        for m in [0, 1, 15, 16, 0xabcd, 1 << 40, u64::MAX - 1, u64::MAX] {
            let want = &Scalar::from(m) * RISTRETTO_BASEPOINT_TABLE;
            assert_eq!(two * message_half(m, 16), want, "{m}");
            assert_eq!(two * message_half(m, message_digits(m)), want, "{m}");
        }
        let (sk, pk) = keys();
        let bounds = [1, 15, 99_999, u64::MAX];
        // 700 rows: several chunks, and a chunk size that is not a multiple of the width.
        let values: Vec<u64> = (0..700u64)
            .flat_map(|i| [i % 2, i % 16, i * 7919 % 100_000, i * 104_729 % 100_000])
            .collect();
        let enc = encrypt_rows(&pk, &values, &bounds).unwrap();
        assert_eq!(enc.len(), values.len());
        for (m, bytes) in values.iter().zip(&enc) {
            let ct = Ciphertext::from_bytes(bytes).unwrap();
            let got = sk.vartime_decrypt(&ct, 0, 100_000, small_table()).unwrap();
            assert_eq!(got, *m as i64);
        }
        assert_eq!(
            encrypt_rows(&pk, &[0, 3, 9, 2, 2, 9], &[1, 15, 9]).unwrap_err(),
            CryptoError::ValueAboveBound {
                column: 0,
                bound: 1
            }
        );
    }

    #[test]
    fn batch_matches_single_decryption() {
        let (sk, pk) = keys();
        let values: Vec<u64> = (0..600).map(|i| i * 7919 % 100_000).collect();
        let enc = encrypt_batch(&pk, &values).unwrap();
        assert_eq!(enc.len(), values.len());
        for (m, bytes) in values.iter().zip(&enc) {
            let ct = Ciphertext::from_bytes(bytes).unwrap();
            assert_eq!(ct.to_bytes(), *bytes);
            let got = sk.vartime_decrypt(&ct, 0, 100_000, small_table()).unwrap();
            assert_eq!(got, *m as i64);
        }
        // Fresh randomness: equal plaintexts give different ciphertexts.
        let same = encrypt_batch(&pk, &[5, 5]).unwrap();
        assert_ne!(same[0], same[1]);
        assert!(encrypt_batch(&pk, &[]).unwrap().is_empty());
    }

    #[test]
    fn homomorphic_operations() {
        let (sk, pk) = keys();
        let cts: Vec<Ciphertext> = (1..=100u64).map(|m| encrypt(&pk, m).unwrap()).collect();
        let total = sum(&cts);
        let t = small_table();
        assert_eq!(sk.vartime_decrypt(&total, 0, 10_000, t).unwrap(), 5050);
        let seq: Ciphertext = cts.iter().sum();
        assert_eq!(seq, total);
        assert_eq!(sk.vartime_decrypt(&(cts[0] + cts[1]), 0, 10, t).unwrap(), 3);
        let noisy = total.add_plain(-6000);
        assert_eq!(
            sk.vartime_decrypt(&noisy, -10_000, 10_000, t).unwrap(),
            -950
        );
        let fresh = noisy.rerandomize(&pk).unwrap();
        assert_ne!(fresh.to_bytes(), noisy.to_bytes());
        assert_eq!(
            sk.vartime_decrypt(&fresh, -10_000, 10_000, t).unwrap(),
            -950
        );
        let z = Ciphertext::zero().rerandomize(&pk).unwrap();
        assert_eq!(sk.vartime_decrypt(&z, -5, 5, t).unwrap(), 0);
        assert_eq!(sum(&[]), Ciphertext::zero());
    }

    #[test]
    fn range_edges_and_errors() {
        let (sk, pk) = keys();
        let t = small_table();
        let ct = encrypt(&pk, 1000).unwrap();
        assert_eq!(sk.vartime_decrypt(&ct, 1000, 1000, t).unwrap(), 1000);
        assert_eq!(sk.vartime_decrypt(&ct, -3, 1000, t).unwrap(), 1000);
        assert_eq!(
            sk.vartime_decrypt(&ct, 0, 999, t).unwrap_err(),
            CryptoError::SumOutOfRange { min: 0, max: 999 }
        );
        assert_eq!(
            sk.vartime_decrypt(&ct, 1001, 5000, t).unwrap_err(),
            CryptoError::SumOutOfRange {
                min: 1001,
                max: 5000
            }
        );
        assert_eq!(
            sk.vartime_decrypt(&ct, 5, 4, t).unwrap_err(),
            CryptoError::DecryptRangeEmpty { min: 5, max: 4 }
        );
        assert_eq!(
            sk.vartime_decrypt(&ct, i64::MIN, i64::MAX, t).unwrap_err(),
            CryptoError::DecryptRangeTooWide {
                min: i64::MIN,
                max: i64::MAX,
                max_width: 1 << 32
            }
        );
        let e = sk.vartime_decrypt(&ct, 0, 999, t).unwrap_err().to_string();
        assert!(e.contains("exceeded the declared maximum"), "{e}");
        assert!(!e.contains("1000"), "{e}");
        // Extreme plaintexts near i64 bounds.
        let neg = Ciphertext::zero()
            .add_plain(i64::MIN + 5)
            .rerandomize(&pk)
            .unwrap();
        assert_eq!(
            sk.vartime_decrypt(&neg, i64::MIN, i64::MIN + 10, t)
                .unwrap(),
            i64::MIN + 5
        );
        let pos = Ciphertext::zero()
            .add_plain(i64::MAX)
            .rerandomize(&pk)
            .unwrap();
        assert_eq!(
            sk.vartime_decrypt(&pos, i64::MAX - 10, i64::MAX, t)
                .unwrap(),
            i64::MAX
        );
    }

    #[test]
    fn wrong_key_does_not_decrypt() {
        let (_, pk) = keys();
        let (other, _) = keys();
        let ct = encrypt(&pk, 7).unwrap();
        assert_eq!(
            other
                .vartime_decrypt(&ct, 0, 1 << 20, small_table())
                .unwrap_err(),
            CryptoError::SumOutOfRange {
                min: 0,
                max: 1 << 20
            }
        );
    }

    #[test]
    fn global_table_decrypts_large_values() {
        let (sk, pk) = keys();
        let t = DlogTable::global();
        assert_eq!(t.baby_steps(), 1 << DEFAULT_BABY_BITS);
        assert_eq!(t.memory_bytes(), 64 << 20);
        for m in [0u64, (1 << 40) - 1, 1 << 40, 123_456_789_012] {
            let ct = encrypt(&pk, m).unwrap();
            assert_eq!(
                sk.vartime_decrypt(&ct, -(1 << 20), 1 << 40, t).unwrap(),
                m as i64
            );
        }
    }

    #[test]
    fn table_size_checked() {
        assert_eq!(
            DlogTable::new(0).unwrap_err(),
            CryptoError::DlogTableSize { bits: 0, max: 28 }
        );
        assert!(DlogTable::new(29).is_err());
        let t = DlogTable::new(1).unwrap();
        let (sk, pk) = keys();
        let ct = encrypt(&pk, 9).unwrap();
        assert_eq!(sk.vartime_decrypt(&ct, 0, 100, &t).unwrap(), 9);
    }

    #[test]
    fn decoding_rejects_bad_encodings() {
        let (_, pk) = keys();
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        assert_eq!(
            PublicKey::from_bytes(&[1u8; 31]).unwrap_err(),
            CryptoError::PublicKeyLength { len: 31 }
        );
        assert_eq!(
            PublicKey::from_bytes(&[]).unwrap_err(),
            CryptoError::PublicKeyLength { len: 0 }
        );
        assert_eq!(
            PublicKey::from_bytes(&[0xff; 32]).unwrap_err(),
            CryptoError::NonCanonicalPublicKey
        );
        assert_eq!(
            PublicKey::from_bytes(&[0; 32]).unwrap_err(),
            CryptoError::IdentityPublicKey
        );

        let ct = encrypt(&pk, 3).unwrap().to_bytes();
        assert_eq!(
            Ciphertext::from_bytes(&ct[..63]).unwrap_err(),
            CryptoError::CiphertextLength { len: 63 }
        );
        let mut bad = ct;
        bad[..32].copy_from_slice(&[0xff; 32]);
        assert_eq!(
            Ciphertext::from_bytes(&bad).unwrap_err(),
            CryptoError::NonCanonicalCiphertext { component: 1 }
        );
        let mut bad = ct;
        bad[63] = 0x80; // top bit set: never canonical
        assert_eq!(
            Ciphertext::from_bytes(&bad).unwrap_err(),
            CryptoError::NonCanonicalCiphertext { component: 2 }
        );
        assert_eq!(
            CryptoError::NonCanonicalCiphertext { component: 2 }.to_string(),
            "ElGamal ciphertext component c2 is not a canonical ristretto255 encoding"
        );
    }

    #[test]
    fn debug_prints_nothing_secret() {
        let (sk, pk) = keys();
        assert_eq!(format!("{sk:?}"), "SecretKey(..)");
        assert_eq!(format!("{pk:?}"), "PublicKey(..)");
        assert_eq!(format!("{:?}", encrypt(&pk, 1).unwrap()), "Ciphertext(..)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn sums_decrypt_exactly(values in prop::collection::vec(0u64..1 << 30, 0..20),
                                noise in -(1i64 << 20)..(1i64 << 20)) {
            let (sk, pk) = keys();
            let enc = encrypt_batch(&pk, &values).unwrap();
            let cts: Vec<Ciphertext> =
                enc.iter().map(|b| Ciphertext::from_bytes(b).unwrap()).collect();
            let total = sum(&cts).add_plain(noise).rerandomize(&pk).unwrap();
            let expected = values.iter().sum::<u64>() as i64 + noise;
            prop_assert_eq!(
                sk.vartime_decrypt(&total, -(1 << 20), 1 << 35, DlogTable::global()).unwrap(),
                expected
            );
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = Ciphertext::from_bytes(&bytes);
            let _ = PublicKey::from_bytes(&bytes);
        }
    }

    #[test]
    fn tables_are_sized_to_the_range() {
        let small = DlogTable::for_width(1 << 20);
        assert!(small.baby_steps() <= 1 << 11, "{}", small.baby_steps());
        assert!(std::sync::Arc::ptr_eq(
            &small,
            &DlogTable::for_width(1 << 20)
        ));
        let sk = SecretKey::random().unwrap();
        let ct = encrypt(&sk.public_key(), 999_999).unwrap();
        assert_eq!(
            sk.vartime_decrypt(&ct, -5, 1 << 20, &small).unwrap(),
            999_999
        );
        // The widest decryptable range fits the giant-step limit; wider ones get the same,
        // largest table rather than an unbounded one.
        let widest = DlogTable::for_width(MAX_DECRYPT_WIDTH);
        assert_eq!(u128::from(widest.max_width()), MAX_DECRYPT_WIDTH);
        let wider = DlogTable::for_width(MAX_DECRYPT_WIDTH << 6);
        assert!(std::sync::Arc::ptr_eq(&widest, &wider));
        assert!(wider.memory_bytes() <= 64 << 20);
    }
}
