//! Differentially private audience statistics (`dp_stats` jobs) over one local dataset.
//!
//! # Guarantee
//! The released table is (ε, δ)-differentially private with respect to adding or removing one
//! row of the dataset, where ε and δ are the sums over the job's measures (basic composition).
//! Each measure is one OpenDP measurement over the vector of per-category aggregates; a row
//! falls in exactly one category (a declared one, `other`, or none when dropped), so adding or
//! removing it changes one entry of a count vector by 1 and one entry of a sum vector by at
//! most `max(|lower|, |upper|)` (in units of 10^-decimals): those are the sensitivities handed
//! to OpenDP. A mean spends half of its ε (and δ) on a noisy sum and half on a noisy count and
//! divides them (post-processing).
//!
//! # Assumptions
//! * One row per person. If a person can have several rows, the guarantee is per row, not per
//!   person; deduplicate upstream.
//! * The categories come from the job, never from the data: a category that is not declared
//!   never appears in the result (its rows are dropped or counted in `other`), and declared
//!   categories with no rows are released too (noise only), so the set of released names
//!   reveals nothing about the data.
//! * Suppression (`min_count`) uses the noisy count only, so it is post-processing too.
//!
//! The whole release is charged to the dataset's budget (through the `charge` callback, which
//! commits a ledger row) before any noisy value is computed or leaves this function.

use parley_crypto::dp::{Calibrated, Mechanism, calibrate};
use parley_proto::{
    CategoryStats, DpMechanism, DpStatsParams, DpStatsResult, MeasureKind, MeasureResult,
    NoiseInfo, OtherRows,
};

use crate::NodeError;
use crate::dataset::{Dataset, SegmentColumn};

/// Name of the bucket for rows outside the declared categories (the one copy is in
/// `parley_jobs::limits`).
pub use parley_jobs::limits::OTHER_CATEGORY as OTHER;

/// The OpenDP mechanism of a proto mechanism.
pub fn mechanism(m: DpMechanism) -> Mechanism {
    match m {
        DpMechanism::Laplace => Mechanism::Laplace,
        DpMechanism::Gaussian => Mechanism::Gaussian,
    }
}

/// Ledger name of a release's mechanism, e.g. `dp_stats/laplace`.
pub fn mechanism_label(what: &str, m: DpMechanism) -> String {
    let name = match m {
        DpMechanism::Laplace => "laplace",
        DpMechanism::Gaussian => "gaussian",
    };
    format!("{what}/{name}")
}

/// How a calibrated mechanism is described in results; `unit` converts from integer units
/// back to the released unit (10^-decimals for sums, 1 for counts).
pub fn noise_info(c: &Calibrated, unit: f64) -> NoiseInfo {
    NoiseInfo {
        mechanism: match c.mechanism {
            Mechanism::Laplace => DpMechanism::Laplace,
            Mechanism::Gaussian => DpMechanism::Gaussian,
        } as i32,
        epsilon: c.epsilon,
        delta: c.delta,
        scale: c.scale * unit,
        accuracy95: c.accuracy95() * unit,
    }
}

/// The output categories of a grouping: the declared ones in order, then [`OTHER`] when rows
/// outside them are bucketed.
pub fn output_categories(categories: &[String], bucket: bool) -> Vec<String> {
    let mut names = categories.to_vec();
    if bucket {
        names.push(OTHER.to_string());
    }
    names
}

/// Per row of `segments`, the index of its output category (see [`output_categories`]): the
/// position of its label among the declared `categories`, `categories.len()` (the [`OTHER`]
/// bucket) for any other label when `bucket`, or `None` when the row is dropped.
pub fn row_categories(
    segments: &SegmentColumn,
    categories: &[String],
    bucket: bool,
) -> Vec<Option<usize>> {
    // Data category code → output index (None = dropped).
    let map: Vec<Option<usize>> = segments
        .categories()
        .iter()
        .map(|c| {
            categories
                .iter()
                .position(|d| d == c)
                .or(bucket.then_some(categories.len()))
        })
        .collect();
    segments
        .codes()
        .iter()
        .map(|&c| map.get(c as usize).copied().flatten())
        .collect()
}

/// Converts a clamped value to integer units of 10^-decimals.
pub fn to_units(v: f64, lower: f64, upper: f64, decimals: u32) -> i64 {
    let scale = 10f64.powi(decimals as i32);
    // Bounds were checked at submission to stay within 2^40 units, so this cannot overflow.
    (v.clamp(lower, upper) * scale).round() as i64
}

/// Sensitivity of a clamped sum, in units: the largest change one row can make.
pub fn sum_sensitivity(lower: f64, upper: f64, decimals: u32) -> u64 {
    parley_crypto::dp::clamped_sum_sensitivity(lower, upper, decimals)
}

fn dp_err(job: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::protocol(job, &format!("DP release: {e}"))
}

/// One OpenDP release the job makes.
struct Release {
    calibrated: Calibrated,
    /// Per output category, the true aggregate (integer units).
    truth: Vec<i64>,
}

/// A measure, planned.
enum Planned {
    Count(Release),
    Sum(Release, f64),
    Mean {
        sum: Release,
        count: Release,
        unit: f64,
        lower: f64,
        upper: f64,
    },
}

/// Computes the job's statistics over `dataset`. `charge(epsilon, delta, mechanism)` must
/// durably charge the budget; it is called once, after every input check and before any noise
/// is drawn. Errors name the job, column or parameter at fault, never a data value.
pub fn compute(
    job: &str,
    dataset: &Dataset,
    p: &DpStatsParams,
    charge: impl FnOnce(f64, f64, &str) -> Result<(), NodeError>,
) -> Result<DpStatsResult, NodeError> {
    let segments = dataset.segments(&p.segment_column).ok_or_else(|| {
        NodeError::protocol(
            job,
            &format!(
                "dataset '{}' has no segment column '{}'",
                dataset.name(),
                p.segment_column
            ),
        )
    })?;
    let bucket = p.other() == OtherRows::Bucket;
    let names = output_categories(&p.categories, bucket);
    let rows = row_categories(segments, &p.categories, bucket);
    let k = names.len();
    let count_truth = || {
        let mut v = vec![0i64; k];
        for r in rows.iter().flatten() {
            v[*r] += 1;
        }
        v
    };
    let sum_truth = |column: &str, lower: f64, upper: f64| -> Result<Vec<i64>, NodeError> {
        let values = dataset.values(column).ok_or_else(|| {
            NodeError::protocol(
                job,
                &format!(
                    "dataset '{}' has no value column '{column}'",
                    dataset.name()
                ),
            )
        })?;
        let mut v = vec![0i64; k];
        for (r, x) in rows.iter().zip(values) {
            if let Some(r) = r {
                v[*r] = v[*r].saturating_add(to_units(*x, lower, upper, p.decimals));
            }
        }
        Ok(v)
    };

    let mech = mechanism(p.mechanism());
    let n_measures = p.measures.len().max(1) as f64;
    let delta_each = p.delta / n_measures;
    let unit = 10f64.powi(-(p.decimals as i32));
    let cal = |sens: u64, eps: f64, delta: f64| {
        calibrate(mech, sens, eps, delta).map_err(|e| dp_err(job, e))
    };
    let mut planned = Vec::with_capacity(p.measures.len());
    let (mut eps_total, mut delta_total) = (0.0, 0.0);
    for m in &p.measures {
        eps_total += m.epsilon;
        delta_total += delta_each;
        planned.push(match m.kind() {
            MeasureKind::Count => Planned::Count(Release {
                calibrated: cal(1, m.epsilon, delta_each)?,
                truth: count_truth(),
            }),
            MeasureKind::Sum => Planned::Sum(
                Release {
                    calibrated: cal(
                        sum_sensitivity(m.lower, m.upper, p.decimals),
                        m.epsilon,
                        delta_each,
                    )?,
                    truth: sum_truth(&m.column, m.lower, m.upper)?,
                },
                unit,
            ),
            MeasureKind::Mean => Planned::Mean {
                sum: Release {
                    calibrated: cal(
                        sum_sensitivity(m.lower, m.upper, p.decimals),
                        m.epsilon / 2.0,
                        delta_each / 2.0,
                    )?,
                    truth: sum_truth(&m.column, m.lower, m.upper)?,
                },
                count: Release {
                    calibrated: cal(1, m.epsilon / 2.0, delta_each / 2.0)?,
                    truth: count_truth(),
                },
                unit,
                lower: m.lower,
                upper: m.upper,
            },
            MeasureKind::Unspecified => {
                return Err(NodeError::protocol(job, "a measure has no kind"));
            }
        });
    }

    charge(
        eps_total,
        delta_total,
        &mechanism_label("dp_stats", p.mechanism()),
    )?;

    let noisy = |r: &Release| r.calibrated.release(&r.truth).map_err(|e| dp_err(job, e));
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(planned.len());
    let mut measures = Vec::with_capacity(planned.len());
    let mut noisy_counts: Option<Vec<i64>> = None;
    for (m, plan) in p.measures.iter().zip(&planned) {
        match plan {
            Planned::Count(r) => {
                let v = noisy(r)?;
                noisy_counts.get_or_insert_with(|| v.clone());
                columns.push(v.iter().map(|x| *x as f64).collect());
                measures.push(MeasureResult {
                    measure: Some(m.clone()),
                    noise: Some(noise_info(&r.calibrated, 1.0)),
                    count_noise: None,
                });
            }
            Planned::Sum(r, unit) => {
                let v = noisy(r)?;
                columns.push(v.iter().map(|x| *x as f64 * unit).collect());
                measures.push(MeasureResult {
                    measure: Some(m.clone()),
                    noise: Some(noise_info(&r.calibrated, *unit)),
                    count_noise: None,
                });
            }
            Planned::Mean {
                sum,
                count,
                unit,
                lower,
                upper,
            } => {
                let s = noisy(sum)?;
                let c = noisy(count)?;
                columns.push(
                    s.iter()
                        .zip(&c)
                        .map(|(s, c)| (*s as f64 * unit / (*c).max(1) as f64).clamp(*lower, *upper))
                        .collect(),
                );
                noisy_counts.get_or_insert_with(|| c.clone());
                measures.push(MeasureResult {
                    measure: Some(m.clone()),
                    noise: Some(noise_info(&sum.calibrated, *unit)),
                    count_noise: Some(noise_info(&count.calibrated, 1.0)),
                });
            }
        }
    }
    let categories = names
        .into_iter()
        .enumerate()
        .map(|(i, category)| {
            let suppressed = p.min_count > 0
                && noisy_counts
                    .as_ref()
                    .is_some_and(|c| c[i] < i64::try_from(p.min_count).unwrap_or(i64::MAX));
            CategoryStats {
                category,
                values: if suppressed {
                    Vec::new()
                } else {
                    columns.iter().map(|col| col[i]).collect()
                },
                suppressed,
            }
        })
        .collect();
    Ok(DpStatsResult {
        dataset: dataset.name().to_string(),
        measures,
        categories,
        epsilon: eps_total,
        delta: delta_total,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parley_proto::Measure;

    #[test]
    fn units_and_sensitivity() {
        assert_eq!(to_units(12.345, 0.0, 100.0, 2), 1235);
        assert_eq!(to_units(1e9, 0.0, 100.0, 2), 10_000);
        assert_eq!(to_units(-5.0, 0.0, 100.0, 2), 0);
        assert_eq!(sum_sensitivity(0.0, 500.0, 2), 50_000);
        assert_eq!(sum_sensitivity(-7.5, 2.0, 0), 8);
        assert_eq!(sum_sensitivity(0.0, 0.0, 0), 1);
    }

    #[test]
    fn labels() {
        assert_eq!(
            mechanism_label("dp_stats", DpMechanism::Gaussian),
            "dp_stats/gaussian"
        );
        let _ = Measure::default();
    }
}
