//! Shamir t-of-n secret sharing over the ristretto255 scalar field.
//!
//! A secret `s` (a [`Scalar`] modulo the group order ℓ ≈ 2^252) is hidden as the constant term
//! of a polynomial `f(X) = s + a_1·X + … + a_{t−1}·X^{t−1}` whose other coefficients are drawn
//! uniformly at random; share `i` is `(x_i, f(x_i))` for a public, non-zero `x_i` (a participant
//! index). 32 arbitrary bytes are shared exactly as two independent 16-byte halves, each a
//! field element below 2^128 ([`split_bytes`], [`reconstruct_bytes`]).
//!
//! # Guarantees
//!
//! * **Correctness**: any `t` shares with distinct non-zero `x` reconstruct `s` (Lagrange
//!   interpolation at 0).
//! * **Perfect privacy**: for any `t − 1` distinct non-zero points and any candidate secret there
//!   is exactly one choice of `a_1..a_{t−1}` producing the observed shares, so `t − 1` shares are
//!   uniformly distributed whatever the secret — they carry no information about it.
//!
//! # Assumptions and what is not guaranteed
//!
//! * The random number generator handed to [`SharingPolynomial::random`] / [`split`] is a
//!   cryptographically secure generator; a weak generator voids the privacy guarantee.
//! * Shares are not verifiable: a wrong share yields a wrong secret without any error (no
//!   Feldman/Pedersen commitments). [`reconstruct_bytes`] only notices inconsistencies that push
//!   a half outside `[0, 2^128)`. Callers needing integrity must check the result (e.g. against a
//!   public key), as secure aggregation does.
//! * Arithmetic is constant-time in the secret values ([`Scalar`] operations); the `x`
//!   coordinates and the number of shares are public.
//!
//! Reference: A. Shamir, "How to share a secret", Communications of the ACM 22(11), 1979.

use std::collections::BTreeSet;
use std::fmt;

use curve25519_dalek::Scalar;
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

/// Length of the encoding of a [`ByteShare`]'s `y` values (two canonical scalars).
pub const BYTE_SHARE_LEN: usize = 64;

/// Everything that can go wrong when splitting or reconstructing. Never carries a share value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// The threshold is zero or larger than the number of shares.
    #[error("threshold {t} is outside 1..={n}; choose 1 <= t <= n")]
    ThresholdOutOfRange {
        /// The requested threshold.
        t: u32,
        /// The requested number of shares.
        n: u32,
    },
    /// A share was requested or supplied at `x = 0`, which would be the secret itself.
    #[error("share at x = 0 is not allowed (it is the secret); participant indices start at 1")]
    ZeroX,
    /// Two supplied shares have the same `x`.
    #[error("two shares have x = {x}; each share must come from a different participant")]
    DuplicateX {
        /// The repeated coordinate.
        x: u32,
    },
    /// Fewer shares than the threshold were supplied.
    #[error("{have} shares supplied, {need} needed to reconstruct")]
    TooFewShares {
        /// Shares supplied.
        have: usize,
        /// The threshold.
        need: u32,
    },
    /// A share value is not the canonical encoding of a scalar.
    #[error("share value is not a canonical scalar encoding")]
    NonCanonical,
    /// Shares handed to an [`Interpolator`] are not at its points, in its order.
    #[error("shares are not at the interpolator's points")]
    PointsMismatch,
    /// The reconstructed value is not two 16-byte halves: the shares are inconsistent.
    #[error("reconstructed value is not a 32-byte secret: the shares are inconsistent")]
    Inconsistent,
}

/// One share `(x, f(x))` of a secret scalar. `Debug` prints only `x`; zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The evaluation point: the index of the participant holding the share (never 0).
    pub x: u32,
    /// The share value `f(x)`.
    pub y: Scalar,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .finish_non_exhaustive()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.y.zeroize();
    }
}

/// One share of a 32-byte secret: the shares of its two 16-byte halves at the same `x`.
/// `Debug` prints only `x`; zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct ByteShare {
    /// The evaluation point (never 0).
    pub x: u32,
    /// Shares of the low half (bytes 0..16) and the high half (bytes 16..32).
    pub y: [Scalar; 2],
}

impl fmt::Debug for ByteShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteShare")
            .field("x", &self.x)
            .finish_non_exhaustive()
    }
}

impl Drop for ByteShare {
    fn drop(&mut self) {
        self.y.zeroize();
    }
}

impl ByteShare {
    /// The canonical encoding of the two share values: `y[0] || y[1]`, 32 bytes each.
    pub fn y_bytes(&self) -> Zeroizing<[u8; BYTE_SHARE_LEN]> {
        let mut out = Zeroizing::new([0u8; BYTE_SHARE_LEN]);
        out[..32].copy_from_slice(self.y[0].as_bytes());
        out[32..].copy_from_slice(self.y[1].as_bytes());
        out
    }

    /// The share at `x` whose values are encoded as in [`ByteShare::y_bytes`].
    ///
    /// # Errors
    /// [`ShamirError::NonCanonical`] if either half is not a canonical scalar encoding.
    pub fn from_y_bytes(x: u32, bytes: &[u8; BYTE_SHARE_LEN]) -> Result<Self, ShamirError> {
        let mut lo = Zeroizing::new([0u8; 32]);
        let mut hi = Zeroizing::new([0u8; 32]);
        lo.copy_from_slice(&bytes[..32]);
        hi.copy_from_slice(&bytes[32..]);
        let lo = Option::<Scalar>::from(Scalar::from_canonical_bytes(*lo));
        let hi = Option::<Scalar>::from(Scalar::from_canonical_bytes(*hi));
        match (lo, hi) {
            (Some(lo), Some(hi)) => Ok(ByteShare { x, y: [lo, hi] }),
            _ => Err(ShamirError::NonCanonical),
        }
    }
}

/// A random polynomial of degree `t − 1` hiding a secret in its constant term. Shares can be
/// taken at any non-zero `x`, so the polynomial can be fixed before the set of recipients is
/// known. `Debug` prints only the threshold; zeroed on drop.
#[derive(Clone)]
pub struct SharingPolynomial {
    /// Invariant: `coefficients.len() == t >= 1`; `coefficients[0]` is the secret.
    coefficients: Vec<Scalar>,
}

impl fmt::Debug for SharingPolynomial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharingPolynomial")
            .field("threshold", &self.coefficients.len())
            .finish_non_exhaustive()
    }
}

impl Drop for SharingPolynomial {
    fn drop(&mut self) {
        self.coefficients.zeroize();
    }
}

impl SharingPolynomial {
    /// A polynomial with constant term `secret` and `t − 1` uniformly random other coefficients.
    ///
    /// # Errors
    /// [`ShamirError::ThresholdOutOfRange`] if `t == 0`.
    pub fn random<R: CryptoRng + ?Sized>(
        secret: &Scalar,
        t: u32,
        rng: &mut R,
    ) -> Result<Self, ShamirError> {
        if t == 0 {
            return Err(ShamirError::ThresholdOutOfRange { t, n: 0 });
        }
        let mut coefficients = Vec::with_capacity(t as usize);
        coefficients.push(*secret);
        for _ in 1..t {
            coefficients.push(Scalar::random(rng));
        }
        Ok(SharingPolynomial { coefficients })
    }

    /// Test hook: the polynomial with exactly these coefficients (constant term first).
    #[cfg(test)]
    fn from_coefficients(coefficients: Vec<Scalar>) -> Self {
        SharingPolynomial { coefficients }
    }

    /// The number of shares needed to reconstruct.
    pub fn threshold(&self) -> u32 {
        // The length came from a u32 threshold.
        u32::try_from(self.coefficients.len()).unwrap_or(u32::MAX)
    }

    /// The share at `x`.
    ///
    /// # Errors
    /// [`ShamirError::ZeroX`] if `x == 0`.
    pub fn share(&self, x: u32) -> Result<Share, ShamirError> {
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        let xs = Scalar::from(x);
        let mut y = Scalar::ZERO;
        for c in self.coefficients.iter().rev() {
            y = y * xs + c;
        }
        Ok(Share { x, y })
    }
}

/// Splits `secret` into shares at `x = 1..=n`, any `t` of which reconstruct it.
///
/// # Errors
/// [`ShamirError::ThresholdOutOfRange`] unless `1 <= t <= n`.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    t: u32,
    n: u32,
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    if t == 0 || t > n {
        return Err(ShamirError::ThresholdOutOfRange { t, n });
    }
    let poly = SharingPolynomial::random(secret, t, rng)?;
    (1..=n).map(|x| poly.share(x)).collect()
}

/// Checks that the `x` coordinates are non-zero and distinct and that there are at least `t`.
fn check_points(xs: impl Iterator<Item = u32>, have: usize, t: u32) -> Result<(), ShamirError> {
    if t == 0 {
        return Err(ShamirError::ThresholdOutOfRange {
            t,
            n: u32::try_from(have).unwrap_or(u32::MAX),
        });
    }
    let mut seen = BTreeSet::new();
    for x in xs {
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if !seen.insert(x) {
            return Err(ShamirError::DuplicateX { x });
        }
    }
    if have < t as usize {
        return Err(ShamirError::TooFewShares { have, need: t });
    }
    Ok(())
}

/// Lagrange coefficients at 0 for the distinct non-zero points `xs`:
/// `λ_i = Π_{j≠i} x_j / (x_j − x_i)`.
fn lagrange_at_zero(xs: &[u32]) -> Vec<Scalar> {
    let xs: Vec<Scalar> = xs.iter().map(|&x| Scalar::from(x)).collect();
    let mut numerators = Vec::with_capacity(xs.len());
    let mut denominators = Vec::with_capacity(xs.len());
    for (i, xi) in xs.iter().enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                num *= xj;
                den *= xj - xi;
            }
        }
        numerators.push(num);
        denominators.push(den);
    }
    // Denominators are non-zero: the points are distinct and far below the group order.
    Scalar::invert_batch_alloc(&mut denominators);
    numerators
        .iter()
        .zip(&denominators)
        .map(|(n, d)| n * d)
        .collect()
}

/// Lagrange coefficients at 0 for a fixed set of `t` share holders, reusable across many
/// secrets shared with the same points (the quadratic set-up cost is paid once).
#[derive(Clone, Debug)]
pub struct Interpolator {
    /// Invariant: `xs` are distinct and non-zero, `lambdas[i]` belongs to `xs[i]`.
    xs: Vec<u32>,
    lambdas: Vec<Scalar>,
}

impl Interpolator {
    /// Coefficients for the first `t` of `xs`; all of `xs` must be distinct and non-zero.
    ///
    /// # Errors
    /// [`ShamirError::ZeroX`], [`ShamirError::DuplicateX`], [`ShamirError::TooFewShares`] if
    /// `xs.len() < t`, [`ShamirError::ThresholdOutOfRange`] if `t == 0`.
    pub fn new(xs: &[u32], t: u32) -> Result<Self, ShamirError> {
        check_points(xs.iter().copied(), xs.len(), t)?;
        let xs = xs[..t as usize].to_vec();
        let lambdas = lagrange_at_zero(&xs);
        Ok(Interpolator { xs, lambdas })
    }

    /// The points used, in order.
    pub fn xs(&self) -> &[u32] {
        &self.xs
    }

    fn check(&self, xs: impl ExactSizeIterator<Item = u32>) -> Result<(), ShamirError> {
        if xs.len() != self.xs.len() || !xs.zip(&self.xs).all(|(a, b)| a == *b) {
            return Err(ShamirError::PointsMismatch);
        }
        Ok(())
    }

    /// The secret from shares at exactly [`Interpolator::xs`], in that order.
    ///
    /// # Errors
    /// [`ShamirError::PointsMismatch`] if the shares are at other points.
    pub fn reconstruct(&self, shares: &[Share]) -> Result<Scalar, ShamirError> {
        self.check(shares.iter().map(|s| s.x))?;
        Ok(shares.iter().zip(&self.lambdas).map(|(s, l)| s.y * l).sum())
    }

    /// The 32-byte secret from byte shares at exactly [`Interpolator::xs`], in that order.
    ///
    /// # Errors
    /// [`ShamirError::PointsMismatch`] if the shares are at other points;
    /// [`ShamirError::Inconsistent`] if a half does not come out below 2^128 (which wrong or
    /// mixed-up shares cause with overwhelming probability).
    pub fn reconstruct_bytes(
        &self,
        shares: &[ByteShare],
    ) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
        self.check(shares.iter().map(|s| s.x))?;
        let mut out = Zeroizing::new([0u8; 32]);
        for half in 0..2 {
            let mut value: Scalar = shares
                .iter()
                .zip(&self.lambdas)
                .map(|(s, l)| s.y[half] * l)
                .sum();
            let bytes = Zeroizing::new(value.to_bytes());
            value.zeroize();
            // Bitwise OR over the high bytes: no early exit on secret data.
            let high = bytes[16..].iter().fold(0u8, |acc, b| acc | b);
            if high != 0 {
                return Err(ShamirError::Inconsistent);
            }
            out[16 * half..16 * half + 16].copy_from_slice(&bytes[..16]);
        }
        Ok(out)
    }
}

/// Reconstructs the secret from at least `t` shares (the first `t` are used).
///
/// # Errors
/// [`ShamirError::ZeroX`] or [`ShamirError::DuplicateX`] for a bad coordinate among all supplied
/// shares; [`ShamirError::TooFewShares`] for fewer than `t`; [`ShamirError::ThresholdOutOfRange`]
/// if `t == 0`.
pub fn reconstruct(shares: &[Share], t: u32) -> Result<Scalar, ShamirError> {
    let xs: Vec<u32> = shares.iter().map(|s| s.x).collect();
    Interpolator::new(&xs, t)?.reconstruct(&shares[..t as usize])
}

/// The low (bytes 0..16) and high (bytes 16..32) halves of `secret` as field elements.
fn halves(secret: &[u8; 32]) -> [Scalar; 2] {
    let mut lo = Zeroizing::new([0u8; 32]);
    let mut hi = Zeroizing::new([0u8; 32]);
    lo[..16].copy_from_slice(&secret[..16]);
    hi[..16].copy_from_slice(&secret[16..]);
    // Values below 2^128 are canonical.
    [
        Scalar::from_bytes_mod_order(*lo),
        Scalar::from_bytes_mod_order(*hi),
    ]
}

/// A pair of sharing polynomials hiding a 32-byte secret, one per 16-byte half.
/// `Debug` prints only the threshold; zeroed on drop.
#[derive(Clone)]
pub struct BytesSharing {
    halves: [SharingPolynomial; 2],
}

impl fmt::Debug for BytesSharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesSharing")
            .field("threshold", &self.halves[0].threshold())
            .finish_non_exhaustive()
    }
}

impl BytesSharing {
    /// Random polynomials of degree `t − 1` hiding the two halves of `secret`.
    ///
    /// # Errors
    /// [`ShamirError::ThresholdOutOfRange`] if `t == 0`.
    pub fn random<R: CryptoRng + ?Sized>(
        secret: &[u8; 32],
        t: u32,
        rng: &mut R,
    ) -> Result<Self, ShamirError> {
        let mut h = halves(secret);
        let lo = SharingPolynomial::random(&h[0], t, rng);
        let hi = SharingPolynomial::random(&h[1], t, rng);
        h.zeroize();
        Ok(BytesSharing { halves: [lo?, hi?] })
    }

    /// The number of shares needed to reconstruct.
    pub fn threshold(&self) -> u32 {
        self.halves[0].threshold()
    }

    /// The share at `x`.
    ///
    /// # Errors
    /// [`ShamirError::ZeroX`] if `x == 0`.
    pub fn share(&self, x: u32) -> Result<ByteShare, ShamirError> {
        let lo = self.halves[0].share(x)?;
        let hi = self.halves[1].share(x)?;
        Ok(ByteShare { x, y: [lo.y, hi.y] })
    }
}

/// Splits 32 arbitrary bytes into shares at `x = 1..=n`, any `t` of which reconstruct them.
///
/// # Errors
/// [`ShamirError::ThresholdOutOfRange`] unless `1 <= t <= n`.
pub fn split_bytes<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    t: u32,
    n: u32,
    rng: &mut R,
) -> Result<Vec<ByteShare>, ShamirError> {
    if t == 0 || t > n {
        return Err(ShamirError::ThresholdOutOfRange { t, n });
    }
    let sharing = BytesSharing::random(secret, t, rng)?;
    (1..=n).map(|x| sharing.share(x)).collect()
}

/// Reconstructs 32 bytes from at least `t` byte shares (the first `t` are used).
///
/// # Errors
/// As [`reconstruct`], plus [`ShamirError::Inconsistent`] if a half does not come out below
/// 2^128 (which wrong or mixed-up shares cause with overwhelming probability).
pub fn reconstruct_bytes(shares: &[ByteShare], t: u32) -> Result<Zeroizing<[u8; 32]>, ShamirError> {
    let xs: Vec<u32> = shares.iter().map(|s| s.x).collect();
    Interpolator::new(&xs, t)?.reconstruct_bytes(&shares[..t as usize])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn scalar(bytes: [u8; 32]) -> Scalar {
        Scalar::from_bytes_mod_order(bytes)
    }

    /// `(n, t, a shuffled list of 1..=n)`.
    fn n_t_order() -> impl Strategy<Value = (u32, u32, Vec<u32>)> {
        (1u32..=12).prop_flat_map(|n| {
            (
                Just(n),
                1..=n,
                Just((1..=n).collect::<Vec<u32>>()).prop_shuffle(),
            )
        })
    }

    /// Coefficients (constant term first) of the unique polynomial of degree < points.len()
    /// through `points`, by Lagrange interpolation in coefficient form.
    fn interpolate(points: &[(Scalar, Scalar)]) -> Vec<Scalar> {
        let k = points.len();
        let mut result = vec![Scalar::ZERO; k];
        for (i, (xi, yi)) in points.iter().enumerate() {
            // basis = Π_{j≠i} (X − x_j) / (x_i − x_j)
            let mut basis = vec![Scalar::ONE];
            let mut den = Scalar::ONE;
            for (j, (xj, _)) in points.iter().enumerate() {
                if i == j {
                    continue;
                }
                let mut next = vec![Scalar::ZERO; basis.len() + 1];
                for (d, c) in basis.iter().enumerate() {
                    next[d + 1] += c;
                    next[d] -= c * xj;
                }
                basis = next;
                den *= xi - xj;
            }
            let factor = yi * den.invert();
            for (d, c) in basis.iter().enumerate() {
                result[d] += c * factor;
            }
        }
        result
    }

    #[test]
    fn bad_parameters_and_points_rejected() {
        let mut rng = StdRng::seed_from_u64(1);
        let s = Scalar::from(7u64);
        assert_eq!(
            split(&s, 0, 3, &mut rng).unwrap_err(),
            ShamirError::ThresholdOutOfRange { t: 0, n: 3 }
        );
        assert_eq!(
            split(&s, 4, 3, &mut rng).unwrap_err(),
            ShamirError::ThresholdOutOfRange { t: 4, n: 3 }
        );
        let shares = split(&s, 2, 3, &mut rng).unwrap();
        assert_eq!(
            reconstruct(&shares[..1], 2).unwrap_err(),
            ShamirError::TooFewShares { have: 1, need: 2 }
        );
        let dup = vec![shares[0].clone(), shares[1].clone(), shares[0].clone()];
        assert_eq!(
            reconstruct(&dup, 2).unwrap_err(),
            ShamirError::DuplicateX { x: 1 }
        );
        let zero = vec![Share { x: 0, y: s }, shares[1].clone()];
        assert_eq!(reconstruct(&zero, 2).unwrap_err(), ShamirError::ZeroX);
        assert_eq!(
            SharingPolynomial::random(&s, 2, &mut rng)
                .unwrap()
                .share(0)
                .unwrap_err(),
            ShamirError::ZeroX
        );
        assert_eq!(reconstruct(&shares, 2).unwrap(), s);
    }

    #[test]
    fn debug_prints_no_values() {
        let mut rng = StdRng::seed_from_u64(2);
        let shares = split_bytes(&[0xAB; 32], 2, 2, &mut rng).unwrap();
        assert_eq!(format!("{:?}", shares[0]), "ByteShare { x: 1, .. }");
        let s = split(&Scalar::ONE, 2, 2, &mut rng).unwrap();
        assert_eq!(format!("{:?}", s[1]), "Share { x: 2, .. }");
        let p = BytesSharing::random(&[1; 32], 3, &mut rng).unwrap();
        assert_eq!(format!("{p:?}"), "BytesSharing { threshold: 3, .. }");
    }

    #[test]
    fn inconsistent_byte_shares_detected_and_non_canonical_rejected() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut a = split_bytes(&[9; 32], 2, 3, &mut rng).unwrap();
        let b = split_bytes(&[9; 32], 2, 3, &mut rng).unwrap();
        // Mixing shares of two different sharings gives garbage, not a 2×128-bit value.
        a[1] = b[1].clone();
        assert_eq!(
            reconstruct_bytes(&a, 2).unwrap_err(),
            ShamirError::Inconsistent
        );
        let bytes = [0xFF; BYTE_SHARE_LEN];
        assert_eq!(
            ByteShare::from_y_bytes(1, &bytes).unwrap_err(),
            ShamirError::NonCanonical
        );
        let ok = b[0].y_bytes();
        assert_eq!(ByteShare::from_y_bytes(1, &ok).unwrap(), b[0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any `k >= t` of the `n` shares, in any order, reconstruct the secret.
        #[test]
        fn any_t_of_n_reconstruct(secret: [u8; 32], (n, t, order) in n_t_order(), extra in 0u32..12, seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let s = scalar(secret);
            let shares = split(&s, t, n, &mut rng).unwrap();
            prop_assert_eq!(shares.len(), n as usize);
            let k = (t + extra).min(n) as usize;
            let subset: Vec<Share> = order[..k].iter().map(|&x| shares[x as usize - 1].clone()).collect();
            prop_assert_eq!(reconstruct(&subset, t).unwrap(), s);

            let byte_shares = split_bytes(&secret, t, n, &mut rng).unwrap();
            let subset: Vec<ByteShare> = order[..k].iter().map(|&x| byte_shares[x as usize - 1].clone()).collect();
            prop_assert_eq!(*reconstruct_bytes(&subset, t).unwrap(), secret);
        }

        /// Perfect privacy, constructively: fix the `t − 1` observed share values at any points
        /// and pick *any* candidate secret. Solving for the polynomial through (0, candidate)
        /// and the observed points gives coefficients that `SharingPolynomial` turns into
        /// exactly the observed shares. So every secret is explained by exactly one choice of
        /// the random coefficients (the system is square and invertible), i.e. the `t − 1`
        /// shares have the same (uniform) distribution whatever the secret. A scheme that
        /// leaked — e.g. one that shared at x = 0 or used a lower-degree polynomial — would
        /// fail this test.
        #[test]
        fn t_minus_1_shares_are_consistent_with_every_secret(
            secret_a: [u8; 32], secret_b: [u8; 32], (_n, t, order) in n_t_order(), seed: u64,
        ) {
            prop_assume!(t >= 2);
            let mut rng = StdRng::seed_from_u64(seed);
            let (a, b) = (scalar(secret_a), scalar(secret_b));
            let poly_a = SharingPolynomial::random(&a, t, &mut rng).unwrap();
            let seen: Vec<u32> = order[..t as usize - 1].to_vec();
            let observed: Vec<Share> = seen.iter().map(|&x| poly_a.share(x).unwrap()).collect();

            let mut points = vec![(Scalar::ZERO, b)];
            points.extend(observed.iter().map(|s| (Scalar::from(s.x), s.y)));
            let coefficients = interpolate(&points);
            prop_assert_eq!(coefficients.len(), t as usize);
            prop_assert_eq!(coefficients[0], b);
            let poly_b = SharingPolynomial::from_coefficients(coefficients);
            for s in &observed {
                prop_assert_eq!(&poly_b.share(s.x).unwrap(), s);
            }
            // Completing either polynomial with one more share gives its own secret back.
            let unseen = order[t as usize - 1];
            let mut with_a = observed.clone();
            with_a.push(poly_a.share(unseen).unwrap());
            let mut with_b = observed.clone();
            with_b.push(poly_b.share(unseen).unwrap());
            prop_assert_eq!(reconstruct(&with_a, t).unwrap(), a);
            prop_assert_eq!(reconstruct(&with_b, t).unwrap(), b);
        }

        /// `t − 1` real shares plus one forged share: a different forged value gives a different
        /// result, and every target secret is reachable by some forged value — the real shares
        /// pin nothing down.
        #[test]
        fn forged_share_moves_the_result_anywhere(
            secret: [u8; 32], target: [u8; 32], forged: [u8; 32], (n, t, order) in n_t_order(), seed: u64,
        ) {
            prop_assume!(t >= 2);
            let mut rng = StdRng::seed_from_u64(seed);
            let s = scalar(secret);
            let shares = split(&s, t, n, &mut rng).unwrap();
            let mut set: Vec<Share> = order[..t as usize].iter().map(|&x| shares[x as usize - 1].clone()).collect();
            let real = set[t as usize - 1].y;
            let forged = scalar(forged);
            prop_assume!(forged != real);
            set[t as usize - 1].y = forged;
            prop_assert_ne!(reconstruct(&set, t).unwrap(), s);

            // Solve λ_last·y = target − Σ λ_i·y_i for the forged y.
            let xs: Vec<u32> = set.iter().map(|s| s.x).collect();
            let lambdas = lagrange_at_zero(&xs);
            let partial: Scalar = set[..t as usize - 1].iter().zip(&lambdas).map(|(s, l)| s.y * l).sum();
            let target = scalar(target);
            set[t as usize - 1].y = (target - partial) * lambdas[t as usize - 1].invert();
            prop_assert_eq!(reconstruct(&set, t).unwrap(), target);
        }

        /// Leak detector: interpolating only `t − 1` shares (the best a coalition below the
        /// threshold can do) must not yield the secret. It would if the polynomial's degree were
        /// too low, e.g. if random coefficients came out zero.
        #[test]
        fn t_minus_1_shares_do_not_interpolate_to_the_secret(secret: [u8; 32], (n, t, order) in n_t_order(), seed: u64) {
            prop_assume!(t >= 2);
            let mut rng = StdRng::seed_from_u64(seed);
            let s = scalar(secret);
            let shares = split(&s, t, n, &mut rng).unwrap();
            let subset: Vec<Share> = order[..t as usize - 1].iter().map(|&x| shares[x as usize - 1].clone()).collect();
            prop_assert_ne!(reconstruct(&subset, t - 1).unwrap(), s);
        }
    }
}
