//! Conversion lift from the noisy per-arm totals of a randomised test/control campaign: the
//! derived figures and their 95 % confidence intervals (the statistics under the `lift` kind
//! of the lift issue; the protocol that releases the totals is separate).
//!
//! # Inputs
//! Per arm ([`Arm`]): the population `N` (people randomised into the arm), and for each
//! per-person outcome (conversions, value) its total `S = Σ y_i` and total of squares
//! `Q = Σ y_i²` over the arm, each as released (DP-noised), with the variance of the noise that
//! was added to `N` and to `S`. People outside the intersection count as zero outcomes: they
//! are in the arm but never observed converting.
//!
//! # Formulas (delta method, normal approximation)
//! For one outcome of one arm, the per-person mean is `m = S / N`, the per-person variance
//! `s² = max(Q / N − m², 0)`, and
//!
//! ```text
//! Var(m) = s² / N                 (sampling: N independent people)
//!        + Var_dp(S) / N²         (the noise on the total)
//!        + m² Var_dp(N) / N²      (the noise on the population)
//! ```
//!
//! With `t` the test arm and `c` the control arm:
//! * conversion rate `r_a = m_a` of the conversions outcome;
//! * relative lift `L = r_t / r_c − 1`, `Var(L) = Var(r_t) / r_c² + r_t² Var(r_c) / r_c⁴`;
//! * incremental conversions `Δ = N_t (r_t − r_c)` (the control rate scaled to the test arm's
//!   size, so unequal arms are compared fairly), `Var(Δ) = N_t² (Var(r_t) + Var(r_c)) +
//!   (r_t − r_c)² Var_dp(N_t)`;
//! * incremental value: the same with the value outcome;
//! * iROAS = incremental value / spend, its variance divided by spend².
//!
//! Each interval is `estimate ± 1.959964 × sqrt(Var)`. The noise on `Q` only enters the
//! plug-in estimate of `s²` (a second-order effect) and is not propagated. Assumptions: the
//! arms were randomised independently of the outcomes; each person is in one arm; arms are
//! large enough for the normal approximation (thousands of people).

use thiserror::Error;

/// The two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// One outcome's released totals over an arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Σ y over the arm (noisy).
    pub sum: f64,
    /// Σ y² over the arm (noisy); for a 0/1 outcome, pass the sum.
    pub squares: f64,
    /// Variance of the DP noise added to `sum`.
    pub sum_noise_var: f64,
}

/// One arm's released totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    /// People in the arm (noisy).
    pub population: f64,
    /// Variance of the DP noise added to `population` (0 when it is exact).
    pub population_noise_var: f64,
    /// Conversions per person.
    pub conversions: Outcome,
    /// Value per person (e.g. revenue).
    pub value: Outcome,
}

/// An estimate with its standard error and 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate.
    pub value: f64,
    /// Its standard error (sampling and DP noise).
    pub std_error: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end of the 95 % interval.
    pub high: f64,
}

impl Estimate {
    fn new(value: f64, variance: f64) -> Estimate {
        let std_error = variance.max(0.0).sqrt();
        Estimate {
            value,
            std_error,
            low: value - Z95 * std_error,
            high: value + Z95 * std_error,
        }
    }

    /// True when the interval contains `x`.
    pub fn covers(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// The derived figures of a lift study.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lift {
    /// Conversions per person in the test arm.
    pub test_rate: Estimate,
    /// Conversions per person in the control arm.
    pub control_rate: Estimate,
    /// `test_rate / control_rate − 1`.
    pub relative_lift: Estimate,
    /// Conversions the campaign added in the test arm.
    pub incremental_conversions: Estimate,
    /// Value the campaign added in the test arm.
    pub incremental_value: Estimate,
    /// Incremental value per unit of spend, when the spend is given.
    pub iroas: Option<Estimate>,
}

/// Why the figures cannot be derived.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LiftError {
    /// An arm's (noisy) population is not positive.
    #[error(
        "the {arm} arm's released population is {population}, not positive; the arm is too \
         small for its noise (use larger arms or a larger epsilon)"
    )]
    EmptyArm {
        /// `test` or `control`.
        arm: &'static str,
        /// The released population.
        population: f64,
    },
    /// The control arm's conversion rate is not positive, so a relative lift is undefined.
    #[error(
        "the control arm's released conversion rate is {rate}, not positive; relative lift is \
         undefined (incremental conversions are still reported by a study with conversions)"
    )]
    NoControlConversions {
        /// The released control rate.
        rate: f64,
    },
    /// The spend is not a positive finite number.
    #[error("spend must be a positive amount, got {0}")]
    BadSpend(f64),
}

/// An outcome's per-person mean and the variance of that mean (module docs).
fn mean(arm: &Arm, o: &Outcome) -> (f64, f64) {
    let n = arm.population;
    let m = o.sum / n;
    let s2 = (o.squares / n - m * m).max(0.0);
    let var = s2 / n + o.sum_noise_var / (n * n) + m * m * arm.population_noise_var / (n * n);
    (m, var)
}

/// The lift figures of `test` against `control` (formulas in the module docs); `spend` adds
/// the iROAS.
pub fn lift(test: &Arm, control: &Arm, spend: Option<f64>) -> Result<Lift, LiftError> {
    for (arm, a) in [("test", test), ("control", control)] {
        if !(a.population.is_finite() && a.population > 0.0) {
            return Err(LiftError::EmptyArm {
                arm,
                population: a.population,
            });
        }
    }
    let (rt, vrt) = mean(test, &test.conversions);
    let (rc, vrc) = mean(control, &control.conversions);
    if rc <= 0.0 {
        return Err(LiftError::NoControlConversions { rate: rc });
    }
    let relative = Estimate::new(rt / rc - 1.0, vrt / (rc * rc) + rt * rt * vrc / rc.powi(4));
    let nt = test.population;
    let incremental = |dt: f64, vt: f64, dc: f64, vc: f64| {
        Estimate::new(
            nt * (dt - dc),
            nt * nt * (vt + vc) + (dt - dc).powi(2) * test.population_noise_var,
        )
    };
    let (mt, vmt) = mean(test, &test.value);
    let (mc, vmc) = mean(control, &control.value);
    let incremental_value = incremental(mt, vmt, mc, vmc);
    let iroas = match spend {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Some(Estimate::new(
            incremental_value.value / s,
            incremental_value.std_error.powi(2) / (s * s),
        )),
        Some(s) => return Err(LiftError::BadSpend(s)),
    };
    Ok(Lift {
        test_rate: Estimate::new(rt, vrt),
        control_rate: Estimate::new(rc, vrc),
        relative_lift: relative,
        incremental_conversions: incremental(rt, vrt, rc, vrc),
        incremental_value,
        iroas,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_crypto::dp::{Mechanism, calibrate};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn exact(population: f64, conversions: f64, value: f64, squares: f64) -> Arm {
        Arm {
            population,
            population_noise_var: 0.0,
            conversions: Outcome {
                sum: conversions,
                squares: conversions,
                sum_noise_var: 0.0,
            },
            value: Outcome {
                sum: value,
                squares,
                sum_noise_var: 0.0,
            },
        }
    }

    #[test]
    fn known_answer() {
        // 10 000 people per arm, 550 vs 500 converters, values 10 per converter.
        let t = exact(10_000.0, 550.0, 5_500.0, 55_000.0);
        let c = exact(10_000.0, 500.0, 5_000.0, 50_000.0);
        let l = lift(&t, &c, Some(250.0)).unwrap();
        assert!((l.test_rate.value - 0.055).abs() < 1e-12);
        assert!((l.relative_lift.value - 0.1).abs() < 1e-12);
        assert!((l.incremental_conversions.value - 50.0).abs() < 1e-9);
        assert!((l.incremental_value.value - 500.0).abs() < 1e-9);
        assert!((l.iroas.unwrap().value - 2.0).abs() < 1e-12);
        // Binomial standard errors: sqrt(p (1 - p) / n).
        let se = (0.055f64 * 0.945 / 10_000.0).sqrt();
        assert!((l.test_rate.std_error - se).abs() < 1e-12);
        assert!(l.relative_lift.covers(0.1) && l.relative_lift.low < 0.0);
    }

    #[test]
    fn noise_widens_the_intervals() {
        let t = exact(10_000.0, 550.0, 5_500.0, 55_000.0);
        let c = exact(10_000.0, 500.0, 5_000.0, 50_000.0);
        let quiet = lift(&t, &c, None).unwrap();
        let mut tn = t;
        tn.conversions.sum_noise_var = 400.0;
        tn.population_noise_var = 400.0;
        let noisy = lift(&tn, &c, None).unwrap();
        assert!(noisy.relative_lift.std_error > quiet.relative_lift.std_error);
        assert!(noisy.incremental_conversions.std_error > quiet.incremental_conversions.std_error);
        assert_eq!(noisy.relative_lift.value, quiet.relative_lift.value);
    }

    #[test]
    fn degenerate_inputs_are_refused_by_name() {
        let c = exact(10_000.0, 500.0, 5_000.0, 50_000.0);
        let empty = exact(-3.0, 0.0, 0.0, 0.0);
        let e = lift(&empty, &c, None).unwrap_err();
        assert!(e.to_string().contains("test arm"), "{e}");
        let none = exact(10_000.0, 0.0, 0.0, 0.0);
        let e = lift(&c, &none, None).unwrap_err();
        assert!(matches!(e, LiftError::NoControlConversions { .. }), "{e}");
        assert!(matches!(
            lift(&c, &c, Some(0.0)),
            Err(LiftError::BadSpend(_))
        ));
    }

    /// One simulated study: `n` people per arm converting with the true rates, values uniform
    /// in 10..=100 per converter, every released total noised by OpenDP's discrete Laplace at
    /// ε = 0.02 per total (sensitivity 1 for counts, 100 for values), so that the DP noise is
    /// as large as the sampling noise.
    fn study(rng: &mut StdRng, n: usize, rates: (f64, f64)) -> (Arm, Arm) {
        const EPSILON: f64 = 0.02;
        let count = calibrate(Mechanism::Laplace, 1, EPSILON, 0.0).unwrap();
        let value = calibrate(Mechanism::Laplace, 100, EPSILON, 0.0).unwrap();
        let squares = calibrate(Mechanism::Laplace, 10_000, EPSILON, 0.0).unwrap();
        let noisy = |c: &parley_crypto::dp::Calibrated, x: i64| c.release(&[x]).unwrap()[0] as f64;
        let mut arm = |rate: f64| {
            let (mut conv, mut sum, mut sq) = (0i64, 0i64, 0i64);
            for _ in 0..n {
                if rng.random_bool(rate) {
                    let v: i64 = rng.random_range(10..=100);
                    conv += 1;
                    sum += v;
                    sq += v * v;
                }
            }
            Arm {
                population: noisy(&count, n as i64),
                population_noise_var: count.variance(),
                conversions: Outcome {
                    sum: noisy(&count, conv),
                    squares: noisy(&count, conv),
                    sum_noise_var: count.variance(),
                },
                value: Outcome {
                    sum: noisy(&value, sum),
                    squares: noisy(&squares, sq),
                    sum_noise_var: value.variance(),
                },
            }
        };
        let t = arm(rates.0);
        let c = arm(rates.1);
        (t, c)
    }

    /// Over 1000 studies with the DP noise included, the 95 % intervals cover the true figures
    /// between 90 % and 98.5 % of the time. The sampling is seeded but OpenDP's noise is not,
    /// so the bounds sit four binomial standard deviations from the expected coverage (about
    /// 94 %: Laplace noise has heavier tails than the normal approximation assumes).
    #[test]
    fn intervals_cover_the_truth_about_95_percent_of_the_time() {
        const STUDIES: u64 = 1000;
        let (n, rates) = (20_000, (0.055, 0.05));
        let true_lift = rates.0 / rates.1 - 1.0;
        let true_incremental = n as f64 * (rates.0 - rates.1);
        // Mean value per converter is 55: incremental value per person is 55 × the rate gap.
        let true_value = n as f64 * 55.0 * (rates.0 - rates.1);
        let (mut lift_hits, mut inc_hits, mut value_hits) = (0, 0, 0);
        // The same studies with the DP noise left out of the intervals (sampling only).
        let mut naive_hits = 0;
        for seed in 0..STUDIES {
            let mut rng = StdRng::seed_from_u64(seed);
            let (t, c) = study(&mut rng, n, rates);
            let l = lift(&t, &c, None).unwrap();
            lift_hits += usize::from(l.relative_lift.covers(true_lift));
            inc_hits += usize::from(l.incremental_conversions.covers(true_incremental));
            value_hits += usize::from(l.incremental_value.covers(true_value));
            let quiet = |mut a: Arm| {
                a.population_noise_var = 0.0;
                a.conversions.sum_noise_var = 0.0;
                a.value.sum_noise_var = 0.0;
                a
            };
            let naive = lift(&quiet(t), &quiet(c), None).unwrap();
            naive_hits += usize::from(naive.incremental_conversions.covers(true_incremental));
        }
        eprintln!(
            "coverage: lift {lift_hits}, incremental {inc_hits}, value {value_hits}, naive {naive_hits}"
        );
        // Leaving the DP noise out would make the intervals too narrow.
        assert!(
            naive_hits < 850,
            "sampling-only intervals cover {naive_hits} of {STUDIES}"
        );
        for (what, hits) in [
            ("relative lift", lift_hits),
            ("incremental conversions", inc_hits),
            ("incremental value", value_hits),
        ] {
            assert!(
                (900..=985).contains(&hits),
                "{what}: {hits} of {STUDIES} intervals cover the truth"
            );
        }
    }
}
