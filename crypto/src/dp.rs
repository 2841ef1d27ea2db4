//! Differentially private releases of integer vectors (counts, clamped sums, histograms) through
//! OpenDP measurements.
//!
//! # What is guaranteed
//!
//! [`calibrate`] picks a noise scale and returns a [`Calibrated`] whose `epsilon` and `delta` are
//! what OpenDP's privacy map reports for that scale at input distance `sensitivity`:
//!
//! * [`Mechanism::Laplace`]: the discrete Laplace mechanism \[GRS12, CKS20 §5.2\], pure
//!   `epsilon`-differential privacy (OpenDP's `MaxDivergence`), `delta == 0`.
//! * [`Mechanism::Gaussian`]: the discrete Gaussian mechanism \[CKS20\], `rho`-zero-concentrated DP
//!   \[BS16\], converted by OpenDP to `(epsilon, delta)`-DP for the fixed `delta` (the conversion of
//!   \[CKS20\], as implemented by OpenDP's `cdp_delta`).
//!
//! One call of [`Calibrated::release`] on a vector is one invocation of the mechanism and costs
//! `(epsilon, delta)` once for the whole vector. Separate releases compose (basic composition:
//! the epsilons and deltas add); charging them to a budget is the ledger's job, not this module's.
//!
//! # Assumptions
//!
//! * Neighbouring datasets differ by adding or removing one record.
//! * Each record contributes to **one** entry of the released vector, and changes it by at most
//!   `sensitivity` (after clamping, for sums). Then the L1 and L2 distances between neighbouring
//!   vectors are both at most `sensitivity`, which is the `d_in` handed to OpenDP (`L1Distance<i64>`
//!   for Laplace, `L2Distance<i64>` for Gaussian). If a record can touch several entries, the
//!   caller must pass its L1 (Laplace) or L2 (Gaussian) bound instead, rounded up.
//! * The same noisy value is released once; re-running a release on the same data is a second
//!   release and must be charged again.
//! * [`Calibrated::noise`] returns one sample for use inside a ciphertext (the node adds it to an
//!   encrypted sum, the result is decrypted). The decrypted value is distributed exactly as
//!   `release(&[sum])`, so the same guarantee holds, provided the sample itself is never revealed
//!   and is used for one sum only.
//!
//! # How
//!
//! * Noise comes only from OpenDP 0.16 measurements over `VectorDomain<AtomDomain<i64>>`:
//!   `make_laplace` (`L1Distance<i64>`, `MaxDivergence`) and `make_gaussian`
//!   (`L2Distance<i64>`, `ZeroConcentratedDivergence`) followed by `make_zCDP_to_approxDP` and
//!   `make_fix_delta`. Nothing here samples noise itself.
//! * The scale is found with `opendp::utilities::search::binary_search` over OpenDP's own privacy
//!   map (for Gaussian, the privacy profile `delta(epsilon)` of `make_zCDP_to_approxDP`); the
//!   claimed `(epsilon, delta)` is then read from the map at that scale (`make_fix_delta` for
//!   Gaussian). [`Calibrated::release`] rebuilds the measurement and checks the claim against the
//!   map again before sampling, so a hand-edited [`Calibrated`] the map does not support is
//!   refused.
//! * Randomness: OpenDP is built with the `use-openssl` feature, so every random bit comes from
//!   OpenSSL's `RAND_priv_bytes`, the path OpenDP vets.
//! * The noise is integer-valued and sampled exactly (rational arithmetic, no floating point in
//!   the sampler), so the floating-point attacks on textbook Laplace noise \[Mir12\] do not apply.
//!   Outputs are saturated to the `i64` range (post-processing).
//! * Accuracy half-widths come from OpenDP's `discrete_laplacian_scale_to_accuracy` and
//!   `discrete_gaussian_scale_to_accuracy`.
//! * Means are post-processing of a separately released noisy sum and noisy count; they cost no
//!   extra privacy. [`mean_accuracy95`] bounds their error by interval arithmetic.
//!
//! # References
//!
//! * \[GRS12\] A. Ghosh, T. Roughgarden, M. Sundararajan. Universally Utility-Maximizing Privacy
//!   Mechanisms. SIAM J. Comput. 41(6), 2012.
//! * \[CKS20\] C. Canonne, G. Kamath, T. Steinke. The Discrete Gaussian for Differential Privacy.
//!   NeurIPS 2020, <https://arxiv.org/abs/2004.00010>.
//! * \[BS16\] M. Bun, T. Steinke. Concentrated Differential Privacy: Simplifications, Extensions,
//!   and Lower Bounds. TCC 2016, <https://arxiv.org/abs/1605.02065>.
//! * \[Mir12\] I. Mironov. On Significance of the Least Significant Bits for Differential Privacy.
//!   CCS 2012.
//! * OpenDP's proofs of `make_laplace` and `make_gaussian`:
//!   <https://docs.opendp.org/en/stable/api/user-guide/measurements/additive-noise-mechanisms.html>.

use opendp::accuracy::{discrete_gaussian_scale_to_accuracy, discrete_laplacian_scale_to_accuracy};
use opendp::combinators::{make_fix_delta, make_zCDP_to_approxDP};
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::error::{Error as OpenDpError, ErrorVariant};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, SmoothedMaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{L1Distance, L2Distance};
use opendp::utilities::search::binary_search;

/// Per-component significance for [`mean_accuracy95`]: with the sum's and the count's half-widths
/// both taken from [`Calibrated::accuracy`] at this `alpha`, the mean's interval holds with
/// probability at least `(1 - 0.0253)^2 > 0.95` (the two noises are independent).
pub const MEAN_COMPONENT_ALPHA: f64 = 0.0253;

/// How many doublings of the initial guess [`calibrate`] tries before giving up.
const MAX_DOUBLINGS: u32 = 128;

/// Errors from calibrating or running a DP release. Messages name parameters, never data values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpError {
    // ---- the caller passed invalid parameters ----
    /// Epsilon was zero, negative, infinite or NaN.
    #[error("epsilon must be finite and greater than zero; pass e.g. 1.0")]
    InvalidEpsilon,
    /// Delta was not exactly zero for the discrete Laplace mechanism.
    #[error(
        "delta must be 0 for the discrete Laplace mechanism (pure epsilon-DP); use \
         Mechanism::Gaussian for (epsilon, delta)-DP"
    )]
    LaplaceNeedsZeroDelta,
    /// Delta was not strictly between 0 and 1 for the discrete Gaussian mechanism.
    #[error(
        "delta must lie strictly between 0 and 1 for the discrete Gaussian mechanism; pass e.g. 1e-6"
    )]
    InvalidGaussianDelta,
    /// Sensitivity was zero.
    #[error("sensitivity must be at least 1 (the most one record changes one entry)")]
    ZeroSensitivity,
    /// Sensitivity does not fit OpenDP's `i64` distances.
    #[error(
        "sensitivity exceeds i64::MAX, the largest distance OpenDP's i64 metrics accept; clamp harder"
    )]
    SensitivityTooLarge,
    /// A significance level was not strictly between 0 and 1.
    #[error("alpha must lie strictly between 0 and 1; pass e.g. 0.05 for 95% confidence")]
    InvalidAlpha,

    // ---- the privacy claim is not supported by OpenDP's privacy map ----
    /// No noise scale reached the requested privacy loss.
    #[error(
        "no noise scale meets the requested (epsilon, delta) under OpenDP's privacy map; raise \
         epsilon or delta, or lower the sensitivity"
    )]
    CalibrationFailed,
    /// A [`Calibrated`] claims less privacy loss than OpenDP's map gives for its scale.
    #[error(
        "the claimed (epsilon, delta) is below what OpenDP's privacy map gives for this scale and \
         sensitivity; build the parameters with dp::calibrate"
    )]
    ClaimNotBacked,

    // ---- OpenDP itself failed ----
    /// OpenDP returned an error; only its kind is kept (its message may quote arguments).
    #[error("OpenDP failed while {stage}: {variant}")]
    OpenDp {
        /// What this module was doing.
        stage: &'static str,
        /// OpenDP's error kind.
        variant: ErrorVariant,
    },
    /// OpenDP returned a vector of a different length than it was given.
    #[error("OpenDP returned a release of the wrong length")]
    OutputLength,
}

/// Wraps an OpenDP error, keeping its kind and dropping its message.
fn opendp_err(stage: &'static str) -> impl FnOnce(OpenDpError) -> DpError {
    move |e| DpError::OpenDp {
        stage,
        variant: e.variant,
    }
}

/// The noise distribution of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Discrete Laplace noise: pure `epsilon`-DP (`delta == 0`), sensitivity in L1.
    Laplace,
    /// Discrete Gaussian noise: zero-concentrated DP converted to `(epsilon, delta)`-DP at a fixed
    /// `0 < delta < 1`, sensitivity in L2.
    Gaussian,
}

/// A noise scale together with the privacy loss OpenDP's map reports for it.
///
/// Build it with [`calibrate`]. The fields are public for logging and for the ledger;
/// [`Calibrated::release`] re-checks them against OpenDP's map, so editing them cannot make a
/// release claim less privacy loss than it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    /// Noise distribution.
    pub mechanism: Mechanism,
    /// Epsilon from OpenDP's privacy map at `d_in = sensitivity`; at most the requested epsilon.
    pub epsilon: f64,
    /// Delta: 0 for Laplace, the fixed delta for Gaussian.
    pub delta: f64,
    /// OpenDP noise scale (`exp(-|x|/scale)` for Laplace, `exp(-x^2/(2 scale^2))` for Gaussian).
    pub scale: f64,
    /// The most one record changes one entry of a released vector.
    pub sensitivity: u64,
}

type IntVectorDomain = VectorDomain<AtomDomain<i64>>;
type LaplaceMeasurement = Measurement<IntVectorDomain, L1Distance<i64>, MaxDivergence, Vec<i64>>;
type GaussianMeasurement =
    Measurement<IntVectorDomain, L2Distance<i64>, SmoothedMaxDivergence, Vec<i64>>;

/// The OpenDP discrete Laplace measurement on `i64` vectors.
fn laplace_measurement(scale: f64) -> Result<LaplaceMeasurement, OpenDpError> {
    make_laplace::<_, _, MaxDivergence>(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )
}

/// The OpenDP discrete Gaussian measurement on `i64` vectors; its privacy map gives the privacy
/// profile `delta(epsilon)` of the zero-concentrated guarantee.
fn gaussian_measurement(scale: f64) -> Result<GaussianMeasurement, OpenDpError> {
    let zcdp = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        scale,
        None,
    )?;
    make_zCDP_to_approxDP(zcdp)
}

/// Whether OpenDP's privacy map at `d_in` supports the claim `(epsilon, delta)` for `scale`.
///
/// Gaussian: the privacy profile at `epsilon` is at most `delta` (one evaluation of the profile,
/// much cheaper than solving for epsilon as `make_fix_delta` does).
fn supports(
    mechanism: Mechanism,
    scale: f64,
    d_in: i64,
    epsilon: f64,
    delta: f64,
) -> Result<bool, OpenDpError> {
    Ok(match mechanism {
        Mechanism::Laplace => laplace_measurement(scale)?.map(&d_in)? <= epsilon && delta >= 0.0,
        Mechanism::Gaussian => {
            epsilon >= 0.0 && gaussian_measurement(scale)?.map(&d_in)?.delta(epsilon)? <= delta
        }
    })
}

/// `(epsilon, delta)` from OpenDP's privacy map at `d_in`: for Gaussian, the smallest epsilon at
/// the fixed `delta` (`make_fix_delta`).
fn privacy_loss(
    mechanism: Mechanism,
    scale: f64,
    d_in: i64,
    delta: f64,
) -> Result<(f64, f64), OpenDpError> {
    match mechanism {
        Mechanism::Laplace => Ok((laplace_measurement(scale)?.map(&d_in)?, 0.0)),
        Mechanism::Gaussian => make_fix_delta(&gaussian_measurement(scale)?, delta)?.map(&d_in),
    }
}

/// Checks the parameters of [`calibrate`] and returns the sensitivity as OpenDP's `d_in`.
fn validate(
    mechanism: Mechanism,
    sensitivity: u64,
    epsilon: f64,
    delta: f64,
) -> Result<i64, DpError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(DpError::InvalidEpsilon);
    }
    match mechanism {
        Mechanism::Laplace if delta != 0.0 => return Err(DpError::LaplaceNeedsZeroDelta),
        Mechanism::Gaussian if !(delta > 0.0 && delta < 1.0) => {
            return Err(DpError::InvalidGaussianDelta);
        }
        _ => {}
    }
    if sensitivity == 0 {
        return Err(DpError::ZeroSensitivity);
    }
    i64::try_from(sensitivity).map_err(|_| DpError::SensitivityTooLarge)
}

/// Finds the smallest noise scale whose OpenDP privacy map, at input distance `sensitivity`, gives
/// at most `epsilon` (and, for [`Mechanism::Gaussian`], at most `delta`).
///
/// `sensitivity` is the most one record (added or removed) changes the one vector entry it
/// contributes to; it is used as the L1 distance for Laplace and the L2 distance for Gaussian.
/// Requires `epsilon` finite and positive, `sensitivity >= 1`, `delta == 0` for Laplace and
/// `0 < delta < 1` for Gaussian.
///
/// The returned `epsilon` and `delta` are the values OpenDP's map reports at the chosen scale.
pub fn calibrate(
    mechanism: Mechanism,
    sensitivity: u64,
    epsilon: f64,
    delta: f64,
) -> Result<Calibrated, DpError> {
    let d_in = validate(mechanism, sensitivity, epsilon, delta)?;
    // An OpenDP error counts as "not private enough": it can only push the scale up.
    let private_enough =
        |scale: &f64| supports(mechanism, *scale, d_in, epsilon, delta).is_ok_and(|ok| ok);

    // Upper bound: double sensitivity / epsilon (exact for continuous Laplace) until it passes.
    let mut upper = sensitivity as f64 / epsilon;
    let mut doublings = 0;
    while !private_enough(&upper) {
        doublings += 1;
        upper *= 2.0;
        if doublings > MAX_DOUBLINGS || !upper.is_finite() {
            return Err(DpError::CalibrationFailed);
        }
    }
    // Scale 0 (no noise) never passes, so the boundary lies in (0, upper].
    let scale =
        binary_search(private_enough, (0.0, upper)).map_err(|_| DpError::CalibrationFailed)?;

    // The claim is whatever OpenDP's map says at the chosen scale, checked without the search.
    let (epsilon_map, delta_map) = privacy_loss(mechanism, scale, d_in, delta)
        .map_err(opendp_err("checking the privacy map"))?;
    if !(epsilon_map <= epsilon && delta_map <= delta) {
        return Err(DpError::CalibrationFailed);
    }
    Ok(Calibrated {
        mechanism,
        epsilon: epsilon_map,
        delta: delta_map,
        scale,
        sensitivity,
    })
}

impl Calibrated {
    /// Releases `values` with independent noise on each entry, by invoking the OpenDP measurement.
    ///
    /// The whole vector is one release costing `(epsilon, delta)`, under the assumptions in the
    /// module docs. Fails with [`DpError::ClaimNotBacked`] if OpenDP's map at `scale` gives more
    /// than the claimed `epsilon` or `delta`. Outputs saturate at the `i64` bounds.
    pub fn release(&self, values: &[i64]) -> Result<Vec<i64>, DpError> {
        let d_in = i64::try_from(self.sensitivity).map_err(|_| DpError::SensitivityTooLarge)?;
        if self.sensitivity == 0 {
            return Err(DpError::ZeroSensitivity);
        }
        let input = values.to_vec();
        let out = match self.mechanism {
            Mechanism::Laplace => {
                let m =
                    laplace_measurement(self.scale).map_err(opendp_err("building make_laplace"))?;
                let e = m
                    .map(&d_in)
                    .map_err(opendp_err("evaluating the privacy map"))?;
                if !(e <= self.epsilon && self.delta >= 0.0) {
                    return Err(DpError::ClaimNotBacked);
                }
                m.invoke(&input)
                    .map_err(opendp_err("sampling discrete Laplace noise"))?
            }
            Mechanism::Gaussian => {
                let m = gaussian_measurement(self.scale)
                    .map_err(opendp_err("building make_gaussian"))?;
                // The claim holds iff OpenDP's privacy profile at the claimed epsilon is at most
                // the claimed delta.
                let backed = self.epsilon >= 0.0
                    && m.map(&d_in)
                        .and_then(|profile| profile.delta(self.epsilon))
                        .map_err(opendp_err("evaluating the privacy map"))?
                        <= self.delta;
                if !backed {
                    return Err(DpError::ClaimNotBacked);
                }
                m.invoke(&input)
                    .map_err(opendp_err("sampling discrete Gaussian noise"))?
            }
        };
        if out.len() != values.len() {
            return Err(DpError::OutputLength);
        }
        Ok(out)
    }

    /// One noise sample: the release of `[0]`. Same guarantee as a release, if used for one value
    /// and never revealed on its own.
    pub fn noise(&self) -> Result<i64, DpError> {
        self.release(&[0])?
            .first()
            .copied()
            .ok_or(DpError::OutputLength)
    }

    /// The smallest integer half-width `a` with `P(|noise| <= a) >= 1 - alpha`, per entry, derived
    /// from OpenDP's accuracy helpers (which bound `P(|noise| >= accuracy) <= alpha`).
    pub fn accuracy(&self, alpha: f64) -> Result<f64, DpError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(DpError::InvalidAlpha);
        }
        let bound = match self.mechanism {
            Mechanism::Laplace => discrete_laplacian_scale_to_accuracy(self.scale, alpha),
            Mechanism::Gaussian => discrete_gaussian_scale_to_accuracy(self.scale, alpha),
        }
        .map_err(opendp_err("computing accuracy"))?;
        // Integer noise: |noise| < bound is |noise| <= ceil(bound) - 1.
        Ok((bound.ceil() - 1.0).max(0.0))
    }

    /// The half-width `a` with `P(|noise| <= a) >= 0.95` per entry ([`Calibrated::accuracy`] at
    /// `alpha = 0.05`); infinity if the parameters are invalid.
    pub fn accuracy95(&self) -> f64 {
        self.accuracy(0.05).unwrap_or(f64::INFINITY)
    }

    /// The exact variance of one entry's noise.
    ///
    /// Discrete Laplace with scale `s`: `2 e^{-1/s} / (1 - e^{-1/s})^2`. Discrete Gaussian: the
    /// second moment of the pmf `∝ exp(-x^2 / (2 s^2))`, summed numerically to convergence; for
    /// `s > 1000` it is `s^2` (the gap is of order `exp(-2 pi^2 s^2)` \[CKS20\], zero in `f64`).
    /// NaN for a negative or non-finite scale.
    pub fn variance(&self) -> f64 {
        let s = self.scale;
        if !(s.is_finite() && s >= 0.0) {
            return f64::NAN;
        }
        if s == 0.0 {
            return 0.0;
        }
        match self.mechanism {
            Mechanism::Laplace => {
                let t = (-1.0 / s).exp();
                let one_minus_t = -(-1.0 / s).exp_m1();
                2.0 * t / (one_minus_t * one_minus_t)
            }
            Mechanism::Gaussian if s > 1000.0 => s * s,
            Mechanism::Gaussian => discrete_gaussian_second_moment(s),
        }
    }
}

/// `E[X^2]` for the discrete Gaussian `P(x) ∝ exp(-x^2 / (2 s^2))`, `0 < s <= 1000`.
fn discrete_gaussian_second_moment(s: f64) -> f64 {
    let two_s2 = 2.0 * s * s;
    let mut mass = 1.0; // x = 0
    let mut moment = 0.0;
    let mut x = 1.0_f64;
    loop {
        let w = (-(x * x) / two_s2).exp();
        let term = 2.0 * x * x * w;
        if w == 0.0 || term <= moment * f64::EPSILON * 1e-3 {
            break;
        }
        mass += 2.0 * w;
        moment += term;
        x += 1.0;
    }
    moment / mass
}

/// A half-width for the mean `sum / count` estimated from a noisy sum and a noisy count.
///
/// If the true sum lies in `sum ± sum_acc` and the true count in `count ± count_acc` with
/// `count - count_acc > 0`, then the true mean lies in `sum / count ± result`: the result is the
/// largest distance from `sum / count` to a corner of the box `[sum ± sum_acc] / [count ±
/// count_acc]` (interval division; exact up to floating-point rounding). Returns `None` if
/// `count - count_acc <= 0` (the count interval reaches zero, so the mean is unbounded) or an
/// input is not finite or an accuracy is negative.
///
/// Coverage: with independent noises whose half-widths hold with probabilities `p_sum` and
/// `p_count`, the bound holds with probability at least `p_sum * p_count`. Two
/// [`Calibrated::accuracy95`] inputs give at least `0.9025`; for 95% pass
/// [`Calibrated::accuracy`] at [`MEAN_COMPONENT_ALPHA`] for both. The mean is post-processing of
/// the two releases and costs no privacy beyond them.
pub fn mean_accuracy95(sum: f64, sum_acc: f64, count: f64, count_acc: f64) -> Option<f64> {
    let finite = [sum, sum_acc, count, count_acc]
        .iter()
        .all(|v| v.is_finite());
    if !finite || sum_acc < 0.0 || count_acc < 0.0 {
        return None;
    }
    let (count_lo, count_hi) = (count - count_acc, count + count_acc);
    if count_lo <= 0.0 {
        return None;
    }
    let estimate = sum / count;
    let corners = [
        (sum - sum_acc) / count_lo,
        (sum - sum_acc) / count_hi,
        (sum + sum_acc) / count_lo,
        (sum + sum_acc) / count_hi,
    ];
    let half = corners
        .iter()
        .map(|c| (c - estimate).abs())
        .fold(0.0_f64, f64::max);
    Some(half)
}

// ───────────────────────── distributed discrete Gaussian ─────────────────────────

/// Noise shares for a sum computed by secure aggregation: each of up to `max_parties` nodes adds
/// independent discrete Gaussian noise of scale `node_scale` (sampled by OpenDP's
/// `make_gaussian`) to its own vector before masking, so that the sum over any `k >= min_parties`
/// contributors carries noise of variance ≈ `k · node_scale²` and nobody ever sees an un-noised
/// total.
///
/// # Accounting
/// A sum of `k` independent discrete Gaussians `N_Z(0, σ²)` is not itself a discrete Gaussian,
/// but Kairouz, Liu and Steinke ("The Distributed Discrete Gaussian Mechanism for Federated
/// Learning with Secure Aggregation", ICML 2021, Theorem 1) show that releasing
/// `x + Σ noise` satisfies ½ε̃²-zCDP for L2 sensitivity `Δ` with
/// `ε̃ = sqrt(Δ² / (k σ²) + ½ τ_k)`, `τ_k = 10 Σ_{j=1}^{k−1} exp(−2π² σ² j / (j + 1))`.
/// [`distributed_gaussian`] picks `σ = node_scale` so that this ρ = ½ε̃² is at most the target
/// for every `k` between `min_parties` and `max_parties` (the first term shrinks with `k`, the
/// slack `τ_k` grows with it, so both ends are checked). Noise of contributors beyond
/// `min_parties` only adds privacy. Dropouts are provisioned for: a node whose masked input does
/// not arrive contributes neither data nor noise, and the job fails below `min_parties`.
/// ρ-zCDP converts to (ε, δ)-DP by `ε = ρ + 2 sqrt(ρ ln(1/δ))` (Bun and Steinke, TCC 2016,
/// Proposition 1.3); [`rho_for`] inverts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistributedGaussian {
    /// Scale σ of each node's discrete Gaussian share.
    pub node_scale: f64,
    /// L2 sensitivity of the summed vector (per record).
    pub sensitivity: u64,
    /// Target zCDP parameter of the released sum.
    pub rho: f64,
    /// Fewest contributors whose noise is in the sum.
    pub min_parties: u32,
    /// Most contributors.
    pub max_parties: u32,
}

/// Sensitivity, in integer units of 10^-`decimals`, of a sum whose values are clamped to
/// `[lower, upper]`: the most one record can change it.
pub fn clamped_sum_sensitivity(lower: f64, upper: f64, decimals: u32) -> u64 {
    let scale = 10f64.powi(decimals as i32);
    (lower.abs().max(upper.abs()) * scale).ceil().max(1.0) as u64
}

/// The largest ρ such that ρ-zCDP implies (ε, δ)-DP by Bun and Steinke's conversion.
pub fn rho_for(epsilon: f64, delta: f64) -> Result<f64, DpError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(DpError::InvalidEpsilon);
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(DpError::InvalidGaussianDelta);
    }
    let l = (1.0 / delta).ln();
    let r = ((l + epsilon).sqrt() - l.sqrt()).powi(2);
    Ok(r)
}

/// The zCDP ρ that a sum of `k` shares of scale `sigma` gives for L2 sensitivity `delta_2`
/// (Kairouz, Liu and Steinke 2021, Theorem 1; see [`DistributedGaussian`]).
pub fn distributed_rho(delta_2: f64, sigma: f64, k: u32) -> f64 {
    let s2 = sigma * sigma;
    let tau: f64 = (1..k)
        .map(|j| {
            let j = f64::from(j);
            10.0 * (-2.0 * std::f64::consts::PI.powi(2) * s2 * j / (j + 1.0)).exp()
        })
        .sum();
    0.5 * (delta_2 * delta_2 / (f64::from(k) * s2) + 0.5 * tau)
}

/// The largest [`distributed_rho`] over every contributor count `k` in `min..=max`, in one
/// pass. Checking only the two ends would assume the bound is monotone or convex in `k`, which
/// nothing guarantees.
fn worst_distributed_rho(delta_2: f64, sigma: f64, min: u32, max: u32) -> f64 {
    let s2 = sigma * sigma;
    let mut tau = 0.0;
    let mut worst = f64::NEG_INFINITY;
    for k in 1..=max {
        if k >= min {
            worst = worst.max(0.5 * (delta_2 * delta_2 / (f64::from(k) * s2) + 0.5 * tau));
        }
        let j = f64::from(k);
        tau += 10.0 * (-2.0 * std::f64::consts::PI.powi(2) * s2 * j / (j + 1.0)).exp();
    }
    worst
}

/// Calibrates per-node shares so that the sum over any `min_parties..=max_parties` contributors
/// is `rho`-zCDP for L2 `sensitivity`.
pub fn distributed_gaussian(
    sensitivity: u64,
    rho: f64,
    min_parties: u32,
    max_parties: u32,
) -> Result<DistributedGaussian, DpError> {
    if sensitivity == 0 {
        return Err(DpError::ZeroSensitivity);
    }
    if !(rho.is_finite() && rho > 0.0) || min_parties == 0 || max_parties < min_parties {
        return Err(DpError::CalibrationFailed);
    }
    let d = sensitivity as f64;
    let worst = |sigma: f64| worst_distributed_rho(d, sigma, min_parties, max_parties);
    // Start from the slack-free answer and grow until the bound holds for every count.
    let mut sigma = (d * d / (2.0 * rho * f64::from(min_parties)))
        .sqrt()
        .max(1.0);
    let mut steps = 0;
    while worst(sigma) > rho {
        sigma *= 1.01;
        steps += 1;
        if steps > 10_000 || !sigma.is_finite() {
            return Err(DpError::CalibrationFailed);
        }
    }
    Ok(DistributedGaussian {
        node_scale: sigma,
        sensitivity,
        rho,
        min_parties,
        max_parties,
    })
}

/// Splits an (ε, δ) target evenly (in zCDP) across sub-vectors with the given L2
/// sensitivities and calibrates each one's shares (see [`distributed_gaussian`]).
pub fn distributed_plan(
    epsilon: f64,
    delta: f64,
    sensitivities: &[u64],
    min_parties: u32,
    max_parties: u32,
) -> Result<Vec<DistributedGaussian>, DpError> {
    if sensitivities.is_empty() {
        return Err(DpError::CalibrationFailed);
    }
    let rho = rho_for(epsilon, delta)? / sensitivities.len() as f64;
    sensitivities
        .iter()
        .map(|&s| distributed_gaussian(s, rho, min_parties, max_parties))
        .collect()
}

impl DistributedGaussian {
    /// This node's noise share: `len` independent discrete Gaussian samples of scale
    /// `node_scale`, drawn by OpenDP's `make_gaussian` (invoked on a zero vector).
    pub fn share(&self, len: usize) -> Result<Vec<i64>, DpError> {
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L2Distance::<i64>::default(),
            self.node_scale,
            None,
        )
        .map_err(opendp_err("building make_gaussian"))?;
        let out = m
            .invoke(&vec![0i64; len])
            .map_err(opendp_err("sampling discrete Gaussian noise"))?;
        if out.len() != len {
            return Err(DpError::OutputLength);
        }
        Ok(out)
    }

    /// Scale (standard deviation) of the total noise when `k` nodes contribute.
    pub fn total_scale(&self, k: u32) -> f64 {
        self.node_scale * f64::from(k).sqrt()
    }

    /// 95% accuracy half-width of the total noise with `k` contributors (normal approximation
    /// of a sum of discrete Gaussians, 1.96 standard deviations).
    pub fn accuracy95(&self, k: u32) -> f64 {
        1.96 * self.total_scale(k)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Draws per statistical check; at ~7 µs per discrete Laplace sample this is ~0.15 s.
    const N: usize = 20_000;
    /// A fixed true count to release.
    const TRUTH: i64 = 1_000;

    /// Unnormalised pmf weight of noise value `x` at `scale`.
    fn weight(mechanism: Mechanism, scale: f64, x: f64) -> f64 {
        match mechanism {
            Mechanism::Laplace => (-x.abs() / scale).exp(),
            Mechanism::Gaussian => (-(x * x) / (2.0 * scale * scale)).exp(),
        }
    }

    /// The exact pmf on the support that carries all but ~1e-26 of the mass.
    fn pmf(mechanism: Mechanism, scale: f64) -> Vec<(f64, f64)> {
        let reach = match mechanism {
            Mechanism::Laplace => (60.0 * scale).ceil() + 1.0,
            Mechanism::Gaussian => (12.0 * scale).ceil() + 1.0,
        } as i64;
        let raw: Vec<(f64, f64)> = (-reach..=reach)
            .map(|x| (x as f64, weight(mechanism, scale, x as f64)))
            .collect();
        let total: f64 = raw.iter().map(|(_, w)| w).sum();
        raw.into_iter().map(|(x, w)| (x, w / total)).collect()
    }

    fn moment(pmf: &[(f64, f64)], k: i32) -> f64 {
        pmf.iter().map(|(x, p)| x.powi(k) * p).sum()
    }

    fn coverage(pmf: &[(f64, f64)], a: f64) -> f64 {
        pmf.iter()
            .filter(|(x, _)| x.abs() <= a)
            .map(|(_, p)| p)
            .sum()
    }

    /// Relative tolerance for a sample variance of `N` draws: six standard errors, using the
    /// exact kurtosis (`Var(s^2) ≈ (m4 - var^2) / n`).
    fn variance_tolerance(c: &Calibrated) -> f64 {
        let p = pmf(c.mechanism, c.scale);
        let var = moment(&p, 2);
        let kurtosis = moment(&p, 4) / (var * var);
        6.0 * ((kurtosis - 1.0) / N as f64).sqrt()
    }

    fn variance_consistent(empirical: f64, claimed: f64, rel_tol: f64) -> bool {
        (empirical - claimed).abs() <= rel_tol * claimed
    }

    /// Empirical noise of `N` releases of `TRUTH`.
    fn draw(c: &Calibrated) -> Vec<f64> {
        let out = c.release(&vec![TRUTH; N]).unwrap();
        assert_eq!(out.len(), N);
        out.iter().map(|&v| (v - TRUTH) as f64).collect()
    }

    fn mean_and_variance(noise: &[f64]) -> (f64, f64) {
        let n = noise.len() as f64;
        let mean = noise.iter().sum::<f64>() / n;
        let var = noise.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    /// The full statistical check of one configuration.
    fn check_statistics(mechanism: Mechanism, sensitivity: u64, epsilon: f64, delta: f64) {
        let c = calibrate(mechanism, sensitivity, epsilon, delta).unwrap();
        let noise = draw(&c);
        let (mean, var) = mean_and_variance(&noise);
        let claimed = c.variance();

        // Unbiased: mean within 5 standard errors of 0.
        let se = (claimed / N as f64).sqrt();
        assert!(
            mean.abs() <= 5.0 * se,
            "{mechanism:?} mean {mean} vs se {se}"
        );

        // Variance matches, and the same tolerance rejects missing or mis-scaled noise.
        let tol = variance_tolerance(&c);
        assert!(tol < 0.2, "tolerance too loose to be a test: {tol}");
        assert!(
            variance_consistent(var, claimed, tol),
            "{mechanism:?} eps {epsilon} sens {sensitivity}: var {var} vs {claimed} (tol {tol})"
        );
        assert!(!variance_consistent(var, 2.0 * claimed, tol));
        assert!(!variance_consistent(var, 0.5 * claimed, tol));
        assert!(!variance_consistent(0.0, claimed, tol));

        // accuracy95: exact coverage >= 95%, tight (one less is < 95%), and matched empirically.
        let a = c.accuracy95();
        let p = pmf(mechanism, c.scale);
        let exact = coverage(&p, a);
        assert!(exact >= 0.95, "exact coverage {exact}");
        assert!(coverage(&p, a - 1.0) < 0.95, "accuracy95 {a} not tight");
        let hits = noise.iter().filter(|x| x.abs() <= a).count() as f64 / N as f64;
        let se_p = (exact * (1.0 - exact) / N as f64).sqrt();
        assert!(
            (hits - exact).abs() <= 5.0 * se_p,
            "coverage {hits} vs {exact}"
        );
        assert!((0.93..=0.98).contains(&hits), "coverage {hits}");
    }

    #[test]
    fn laplace_statistics_eps_half_sens_1() {
        check_statistics(Mechanism::Laplace, 1, 0.5, 0.0);
    }

    #[test]
    fn laplace_statistics_eps_1_sens_1() {
        check_statistics(Mechanism::Laplace, 1, 1.0, 0.0);
    }

    #[test]
    fn laplace_statistics_eps_half_sens_5() {
        check_statistics(Mechanism::Laplace, 5, 0.5, 0.0);
    }

    #[test]
    fn laplace_statistics_eps_1_sens_5() {
        check_statistics(Mechanism::Laplace, 5, 1.0, 0.0);
    }

    #[test]
    fn gaussian_statistics_eps_1_delta_1e6() {
        check_statistics(Mechanism::Gaussian, 1, 1.0, 1e-6);
    }

    #[test]
    fn wrongly_scaled_noise_is_rejected() {
        // Draws at half the epsilon (about 4x the variance) fail the check against the true claim.
        let right = calibrate(Mechanism::Laplace, 1, 1.0, 0.0).unwrap();
        let wrong = calibrate(Mechanism::Laplace, 1, 0.5, 0.0).unwrap();
        let (_, var) = mean_and_variance(&draw(&wrong));
        assert!(!variance_consistent(
            var,
            right.variance(),
            variance_tolerance(&right)
        ));
        // Noise-free output is rejected too.
        let (_, var0) = mean_and_variance(&vec![0.0; N]);
        assert!(!variance_consistent(
            var0,
            right.variance(),
            variance_tolerance(&right)
        ));
    }

    #[test]
    fn laplace_scale_is_sensitivity_over_epsilon() {
        for (sens, eps) in [
            (1, 0.5),
            (1, 1.0),
            (5, 0.5),
            (5, 1.0),
            (1000, 0.1),
            (3, 2.0),
        ] {
            let c = calibrate(Mechanism::Laplace, sens, eps, 0.0).unwrap();
            let expected = sens as f64 / eps;
            assert!(
                ((c.scale - expected) / expected).abs() < 1e-12,
                "{} vs {expected}",
                c.scale
            );
            assert!(c.epsilon <= eps && c.epsilon > 0.999_999 * eps);
            assert_eq!(c.delta, 0.0);
            assert_eq!(c.sensitivity, sens);
        }
    }

    #[test]
    fn opendp_map_at_calibrated_scale_is_within_budget() {
        // Laplace: rebuild the measurement independently of the module's helpers.
        for (sens, eps) in [(1_u64, 0.5), (5, 1.0), (7, 0.3)] {
            let c = calibrate(Mechanism::Laplace, sens, eps, 0.0).unwrap();
            let m = make_laplace::<_, _, MaxDivergence>(
                VectorDomain::new(AtomDomain::<i64>::default()),
                L1Distance::<i64>::default(),
                c.scale,
                None,
            )
            .unwrap();
            let e = m.map(&(sens as i64)).unwrap();
            assert!(e <= eps && e == c.epsilon);
            // Minimal: a slightly smaller scale exceeds epsilon.
            let tighter = laplace_measurement(c.scale * (1.0 - 1e-9)).unwrap();
            assert!(tighter.map(&(sens as i64)).unwrap() > eps);
        }
        // Gaussian.
        for (sens, eps, delta) in [(1_u64, 1.0, 1e-6), (5, 0.5, 1e-9)] {
            let c = calibrate(Mechanism::Gaussian, sens, eps, delta).unwrap();
            let zcdp = make_gaussian::<_, _, ZeroConcentratedDivergence>(
                VectorDomain::new(AtomDomain::<i64>::default()),
                L2Distance::<i64>::default(),
                c.scale,
                None,
            )
            .unwrap();
            let m = make_fix_delta(&make_zCDP_to_approxDP(zcdp).unwrap(), delta).unwrap();
            let (e, d) = m.map(&(sens as i64)).unwrap();
            assert!(e <= eps && d <= delta);
            assert_eq!((e, d), (c.epsilon, c.delta));
            let tighter = gaussian_measurement(c.scale * (1.0 - 1e-6)).unwrap();
            let profile = tighter.map(&(sens as i64)).unwrap();
            assert!(profile.delta(eps).unwrap() > delta);
            let fixed = make_fix_delta(&tighter, delta).unwrap();
            assert!(fixed.map(&(sens as i64)).unwrap().0 > eps);
        }
    }

    #[test]
    fn calibrate_rejects_bad_inputs() {
        use Mechanism::{Gaussian, Laplace};
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY, -0.0] {
            assert!(matches!(
                calibrate(Laplace, 1, eps, 0.0),
                Err(DpError::InvalidEpsilon)
            ));
            assert!(matches!(
                calibrate(Gaussian, 1, eps, 1e-6),
                Err(DpError::InvalidEpsilon)
            ));
        }
        for delta in [1e-6, -1e-6, f64::NAN, 1.0] {
            assert!(matches!(
                calibrate(Laplace, 1, 1.0, delta),
                Err(DpError::LaplaceNeedsZeroDelta)
            ));
        }
        for delta in [0.0, -0.0, 1.0, 1.5, -1e-6, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                calibrate(Gaussian, 1, 1.0, delta),
                Err(DpError::InvalidGaussianDelta)
            ));
        }
        assert!(matches!(
            calibrate(Laplace, 0, 1.0, 0.0),
            Err(DpError::ZeroSensitivity)
        ));
        assert!(matches!(
            calibrate(Gaussian, 0, 1.0, 1e-6),
            Err(DpError::ZeroSensitivity)
        ));
        assert!(matches!(
            calibrate(Laplace, u64::MAX, 1.0, 0.0),
            Err(DpError::SensitivityTooLarge)
        ));
    }

    #[test]
    fn release_preserves_length_and_noise_works() {
        for c in [
            calibrate(Mechanism::Laplace, 1, 1.0, 0.0).unwrap(),
            calibrate(Mechanism::Gaussian, 1, 1.0, 1e-6).unwrap(),
        ] {
            for len in [0, 1, 7, 100] {
                assert_eq!(c.release(&vec![5; len]).unwrap().len(), len);
            }
            c.noise().unwrap();
            // Saturates rather than wrapping at the i64 bounds.
            let out = c.release(&[i64::MAX; 50]).unwrap();
            assert!(out.iter().all(|&v| v > i64::MAX - 1_000));
        }
    }

    #[test]
    fn release_refuses_claims_opendp_does_not_back() {
        let mut c = calibrate(Mechanism::Laplace, 2, 1.0, 0.0).unwrap();
        c.scale /= 2.0;
        assert!(matches!(c.release(&[1]), Err(DpError::ClaimNotBacked)));
        let mut g = calibrate(Mechanism::Gaussian, 2, 1.0, 1e-6).unwrap();
        g.epsilon /= 2.0;
        assert!(matches!(g.noise(), Err(DpError::ClaimNotBacked)));
        let mut z = calibrate(Mechanism::Laplace, 2, 1.0, 0.0).unwrap();
        z.sensitivity = 0;
        assert!(matches!(z.release(&[1]), Err(DpError::ZeroSensitivity)));
    }

    #[test]
    fn variance_matches_pmf() {
        for (mechanism, scale) in [
            (Mechanism::Laplace, 0.7),
            (Mechanism::Laplace, 5.0),
            (Mechanism::Gaussian, 0.4),
            (Mechanism::Gaussian, 4.5),
        ] {
            let c = Calibrated {
                mechanism,
                epsilon: 1.0,
                delta: 0.0,
                scale,
                sensitivity: 1,
            };
            let exact = moment(&pmf(mechanism, scale), 2);
            assert!(((c.variance() - exact) / exact).abs() < 1e-9);
        }
        // The discrete Gaussian's variance is below scale^2, and equal to it for large scales.
        let g = |scale| Calibrated {
            mechanism: Mechanism::Gaussian,
            epsilon: 1.0,
            delta: 1e-6,
            scale,
            sensitivity: 1,
        };
        assert!(g(0.4).variance() < 0.16);
        assert!((g(5.0).variance() - 25.0).abs() < 1e-9);
        assert_eq!(g(2000.0).variance(), 4e6);
    }

    #[test]
    fn accuracy_rejects_bad_alpha() {
        let c = calibrate(Mechanism::Laplace, 1, 1.0, 0.0).unwrap();
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(c.accuracy(alpha), Err(DpError::InvalidAlpha)));
        }
        assert!(c.accuracy(MEAN_COMPONENT_ALPHA).unwrap() >= c.accuracy95());
        assert!((1.0 - MEAN_COMPONENT_ALPHA).powi(2) > 0.95);
    }

    #[test]
    fn mean_accuracy_known_values() {
        // sum 1000 ± 10, count 100 ± 5: corners 990/105 .. 1010/95, estimate 10.
        let half = mean_accuracy95(1000.0, 10.0, 100.0, 5.0).unwrap();
        assert!((half - (1010.0 / 95.0 - 10.0)).abs() < 1e-12);
        // Negative sums use the other corners.
        let half = mean_accuracy95(-1000.0, 10.0, 100.0, 5.0).unwrap();
        assert!((half - (-10.0 - (-1010.0 / 95.0))).abs() < 1e-12);
        assert_eq!(mean_accuracy95(10.0, 0.0, 4.0, 0.0), Some(0.0));
        assert_eq!(mean_accuracy95(10.0, 1.0, 5.0, 5.0), None);
        assert_eq!(mean_accuracy95(10.0, 1.0, 5.0, 6.0), None);
        assert_eq!(mean_accuracy95(10.0, -1.0, 5.0, 1.0), None);
        assert_eq!(mean_accuracy95(f64::NAN, 1.0, 5.0, 1.0), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn mean_interval_contains_every_consistent_mean(
            true_sum in -1e6_f64..1e6,
            true_count in 1.0_f64..1e4,
            sum_acc in 0.0_f64..1e4,
            count_acc in 0.0_f64..1e3,
            u in -1.0_f64..=1.0,
            v in -1.0_f64..=1.0,
        ) {
            let (sum, count) = (true_sum + u * sum_acc, true_count + v * count_acc);
            if let Some(half) = mean_accuracy95(sum, sum_acc, count, count_acc) {
                let err = (true_sum / true_count - sum / count).abs();
                proptest::prop_assert!(err <= half * (1.0 + 1e-12) + 1e-12);
            } else {
                proptest::prop_assert!(count - count_acc <= 0.0);
            }
        }
    }
    #[test]
    fn the_worst_case_is_taken_over_every_contributor_count() {
        for (d, sigma, min, max) in [(5.0, 3.0, 4, 8), (1.0, 0.4, 1, 50), (2.0, 0.7, 3, 200)] {
            let direct = (min..=max)
                .map(|k| distributed_rho(d, sigma, k))
                .fold(f64::NEG_INFINITY, f64::max);
            let once = worst_distributed_rho(d, sigma, min, max);
            assert!(
                (once - direct).abs() <= 1e-12 * direct.abs(),
                "{once} vs {direct}"
            );
        }
        // Every count in the range meets the target, small scales (where the tail term
        // matters) included.
        for (s, rho, min, max) in [(1, 2.0, 1, 200), (1, 0.05, 2, 30), (3, 0.5, 5, 120)] {
            let g = distributed_gaussian(s, rho, min, max).unwrap();
            for k in min..=max {
                assert!(
                    distributed_rho(s as f64, g.node_scale, k) <= rho * (1.0 + 1e-12),
                    "s {s} rho {rho} k {k}"
                );
            }
        }
    }

    #[test]
    fn distributed_gaussian_meets_its_target_at_every_survivor_count() {
        let rho = rho_for(1.0, 1e-6).unwrap();
        // Bun–Steinke: rho + 2 sqrt(rho ln(1/delta)) = epsilon.
        let back = rho + 2.0 * (rho * (1e6f64).ln()).sqrt();
        assert!((back - 1.0).abs() < 1e-9, "{back}");
        let d = distributed_gaussian(5, rho, 4, 8).unwrap();
        for k in 4..=8 {
            assert!(
                distributed_rho(5.0, d.node_scale, k) <= rho * (1.0 + 1e-12),
                "k {k}"
            );
        }
        // Fewer survivors than provisioned would not be private enough.
        assert!(distributed_rho(5.0, d.node_scale, 2) > rho);
        let shares = d.share(20_000).unwrap();
        let n = shares.len() as f64;
        let mean = shares.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = shares
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let expected = d.node_scale * d.node_scale;
        assert!((var / expected - 1.0).abs() < 0.06, "{var} vs {expected}");
        assert!(distributed_gaussian(0, rho, 4, 8).is_err());
        assert!(distributed_gaussian(1, rho, 5, 4).is_err());
    }
}
