//! Differentially private audience statistics (`dp_stats` jobs) over one local dataset.
//!
//! # Guarantee
//! The released table is (ε, δ)-differentially private with respect to adding or removing one
//! **person** (all rows with one value of the dataset's person column), where ε and δ are the
//! sums over the job's measures (basic composition). At most `max_rows_per_person` (L) rows of
//! each person are used, the first in file order; the rest are left out and counted in the
//! result (`rows_dropped`). Each measure is one OpenDP measurement over the vector of
//! per-category aggregates; a row falls in exactly one category (a declared one, `other`, or
//! none when dropped), so adding or removing a person changes a count vector by at most L and
//! a sum vector by at most L · `max(|lower|, |upper|)` (in units of 10^-decimals), in L1 and
//! in L2: those are the sensitivities handed to OpenDP. A mean spends half of its ε (and δ)
//! on a noisy sum and half on a noisy count and divides them (post-processing).
//!
//! # Assumptions
//! * The person column names the person: two rows of one person under different values count
//!   as two persons.
//! * The categories come from the job, never from the data: a category that is not declared
//!   never appears in the result (its rows are dropped or counted in `other`), and declared
//!   categories with no rows are released too (noise only), so the set of released names
//!   reveals nothing about the data.
//! * Suppression (`min_count`) uses the noisy count only, so it is post-processing too.
//!
//! The whole release is charged to the dataset's budget (through the `charge` callback, which
//! commits a ledger row) before any noisy value is computed or leaves this function.

use parley_crypto::dp::{Calibrated, calibrate};
use parley_jobs::kinds::dp_stats::{DpStats, MeasureKind};
use parley_jobs::params::Bounds;
use parley_proto::{CategoryStats, DpStatsResult, JobResult, MeasureResult};

use super::dp::{bounded_row_categories, dp_err, noise_info};
use super::wait::Waiter;
use super::{JobIo, JobRun, segment_column, value_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Computes and releases the job's statistics: charges the ledger, then returns the table
/// for the coordinator.
pub(super) fn run(
    run: &JobRun,
    k: &DpStats,
    io: &JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let result = compute(&run.job_id, &run.dataset, k, || run.charge(io, wait))?;
    tracing::info!(job = %run.job_id, categories = result.categories.len(), "dp_stats released");
    Ok(Some(JobResult::from(result)))
}

/// Checks at the offer that the columns the job reads exist in `ds` with the right kind.
pub(super) fn check_columns(ds: &Dataset, k: &DpStats) -> Result<(), String> {
    segment_column(ds, &k.segment_column)?;
    for m in &k.measures {
        if let MeasureKind::Sum { column, .. } | MeasureKind::Mean { column, .. } = &m.what {
            value_column(ds, column)?;
        }
    }
    Ok(())
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

/// Computes the job's statistics over `dataset`. `charge` must durably charge the job's
/// release cost; it is called once, after every input check and before any noise is drawn.
/// Errors name the job, column or parameter at fault, never a data value.
pub(crate) fn compute(
    job: &str,
    dataset: &Dataset,
    k: &DpStats,
    charge: impl FnOnce() -> Result<(), NodeError>,
) -> Result<DpStatsResult, NodeError> {
    let at_fault = |e: String| NodeError::protocol(job, &e);
    let segments = segment_column(dataset, &k.segment_column).map_err(at_fault)?;
    let names = k.categories.output();
    let (rows, dropped) =
        bounded_row_categories(dataset, segments, &k.categories, k.max_rows_per_person);
    let n = names.len();
    let count_truth = || {
        let mut v = vec![0i64; n];
        for r in rows.iter().flatten() {
            v[*r] += 1;
        }
        v
    };
    let sum_truth = |column: &str, b: &Bounds| -> Result<Vec<i64>, NodeError> {
        let values = value_column(dataset, column).map_err(at_fault)?;
        let mut v = vec![0i64; n];
        for (r, x) in rows.iter().zip(values) {
            if let Some(r) = r {
                v[*r] = v[*r].saturating_add(b.units(*x));
            }
        }
        Ok(v)
    };

    let mech = k.mechanism.opendp();
    let delta_each = k.delta / k.measures.len().max(1) as f64;
    let unit = 10f64.powi(-(k.decimals as i32));
    let cal = |sens: u64, eps: f64, delta: f64| {
        calibrate(mech, sens, eps, delta).map_err(|e| dp_err(job, e))
    };
    let mut planned = Vec::with_capacity(k.measures.len());
    let (mut eps_total, mut delta_total) = (0.0, 0.0);
    for m in &k.measures {
        eps_total += m.epsilon;
        delta_total += delta_each;
        planned.push(match &m.what {
            MeasureKind::Count => Planned::Count(Release {
                calibrated: cal(k.count_sensitivity(), m.epsilon, delta_each)?,
                truth: count_truth(),
            }),
            MeasureKind::Sum { column, bounds } => Planned::Sum(
                Release {
                    calibrated: cal(k.sum_sensitivity_units(bounds), m.epsilon, delta_each)?,
                    truth: sum_truth(column, bounds)?,
                },
                unit,
            ),
            MeasureKind::Mean { column, bounds } => Planned::Mean {
                sum: Release {
                    calibrated: cal(
                        k.sum_sensitivity_units(bounds),
                        m.epsilon / 2.0,
                        delta_each / 2.0,
                    )?,
                    truth: sum_truth(column, bounds)?,
                },
                count: Release {
                    calibrated: cal(k.count_sensitivity(), m.epsilon / 2.0, delta_each / 2.0)?,
                    truth: count_truth(),
                },
                unit,
                lower: bounds.lower,
                upper: bounds.upper,
            },
        });
    }

    charge()?;

    let noisy = |r: &Release| r.calibrated.release(&r.truth).map_err(|e| dp_err(job, e));
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(planned.len());
    let mut measures = Vec::with_capacity(planned.len());
    let mut noisy_counts: Option<Vec<i64>> = None;
    for (m, plan) in k.measures.iter().zip(&planned) {
        let measure = Some(m.proto());
        match plan {
            Planned::Count(r) => {
                let v = noisy(r)?;
                noisy_counts.get_or_insert_with(|| v.clone());
                columns.push(v.iter().map(|x| *x as f64).collect());
                measures.push(MeasureResult {
                    measure,
                    noise: Some(noise_info(&r.calibrated, 1.0)),
                    count_noise: None,
                });
            }
            Planned::Sum(r, unit) => {
                let v = noisy(r)?;
                columns.push(v.iter().map(|x| *x as f64 * unit).collect());
                measures.push(MeasureResult {
                    measure,
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
                    measure,
                    noise: Some(noise_info(&sum.calibrated, *unit)),
                    count_noise: Some(noise_info(&count.calibrated, 1.0)),
                });
            }
        }
    }
    let min_count = i64::try_from(k.min_count).unwrap_or(i64::MAX);
    let categories = names
        .into_iter()
        .enumerate()
        .map(|(i, category)| {
            let suppressed =
                k.min_count > 0 && noisy_counts.as_ref().is_some_and(|c| c[i] < min_count);
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
        rows_dropped: dropped,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::Cell;

    use parley_jobs::kinds::dp_stats::Measure;
    use parley_jobs::params::{Categories, Mechanism, Other};

    use super::*;
    use crate::jobs::test_support::dataset;

    use crate::jobs::test_support::CRM_CSV as CSV;

    fn job(other: Other, measures: Vec<Measure>, min_count: u64) -> DpStats {
        DpStats {
            segment_column: "region".into(),
            categories: Categories {
                names: vec!["north".into(), "west".into()],
                other,
            },
            measures,
            mechanism: Mechanism::Laplace,
            delta: 0.0,
            min_count,
            decimals: 2,
            max_rows_per_person: 1,
        }
    }

    fn count(epsilon: f64) -> Measure {
        Measure {
            what: MeasureKind::Count,
            epsilon,
        }
    }

    fn sum(column: &str, epsilon: f64) -> Measure {
        Measure {
            what: MeasureKind::Sum {
                column: column.into(),
                bounds: Bounds {
                    lower: 0.0,
                    upper: 100.0,
                    decimals: 2,
                },
            },
            epsilon,
        }
    }

    #[test]
    fn charges_once_then_releases_every_declared_category() {
        let ds = dataset(CSV);
        let charged = Cell::new(0);
        let k = job(Other::Bucket, vec![count(1.0), sum("amount", 0.5)], 0);
        let r = compute("job-1", &ds, &k, || {
            charged.set(charged.get() + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(charged.get(), 1);
        // Declared order, then the bucket; "west" has no rows and is released too.
        let names: Vec<_> = r.categories.iter().map(|c| c.category.as_str()).collect();
        assert_eq!(names, ["north", "west", "other"]);
        assert!(r.categories.iter().all(|c| c.values.len() == 2));
        assert_eq!((r.epsilon, r.delta), (1.5, 0.0));
        assert_eq!(r.measures.len(), 2);
        assert_eq!(r.measures[1].measure, Some(sum("amount", 0.5).proto()));
        // The sum's noise is described in the released unit: sensitivity 100 (10^4 units).
        let noise = r.measures[1].noise.as_ref().unwrap();
        assert!((noise.scale - 100.0 / 0.5).abs() < 1e-6, "{noise:?}");
    }

    #[test]
    fn a_failed_charge_releases_nothing() {
        let ds = dataset(CSV);
        let k = job(Other::Drop, vec![count(1.0)], 0);
        let err = compute("job-1", &ds, &k, || {
            Err(NodeError::protocol("job-1", "privacy budget exhausted"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("budget exhausted"), "{err}");
    }

    #[test]
    fn a_missing_column_fails_before_the_charge() {
        let ds = dataset(CSV);
        let k = job(Other::Drop, vec![sum("revenue", 1.0)], 0);
        let err = compute("job-1", &ds, &k, || panic!("charged")).unwrap_err();
        assert!(
            err.to_string()
                .contains("dataset 'crm' has no value column 'revenue'"),
            "{err}"
        );
        assert!(check_columns(&ds, &k).is_err());
        assert!(check_columns(&ds, &job(Other::Drop, vec![sum("amount", 1.0)], 0)).is_ok());
    }

    #[test]
    fn suppression_uses_the_noisy_count() {
        let ds = dataset(CSV);
        // An enormous threshold suppresses every category, whatever the noise.
        let k = job(Other::Drop, vec![count(1.0)], u64::MAX);
        let r = compute("job-1", &ds, &k, || Ok(())).unwrap();
        assert!(
            r.categories
                .iter()
                .all(|c| c.suppressed && c.values.is_empty())
        );
        assert_eq!(r.categories.len(), 2);
    }

    /// A transaction table: customer 1 has 50 rows in the north, customers 2–9 one row each,
    /// spread over the four regions.
    fn transactions() -> String {
        let mut csv = String::from("id,email,region,amount\n");
        for _ in 0..50 {
            csv.push_str("1,a@example.com,north,10\n");
        }
        for (i, region) in [
            "north", "south", "east", "west", "south", "east", "west", "west",
        ]
        .iter()
        .enumerate()
        {
            csv.push_str(&format!("{},p{i}@example.com,{region},10\n", i + 2));
        }
        csv
    }

    fn four_regions(max_rows_per_person: u32, epsilon: f64) -> DpStats {
        DpStats {
            categories: Categories {
                names: vec!["north".into(), "south".into(), "east".into(), "west".into()],
                other: Other::Drop,
            },
            max_rows_per_person,
            ..job(Other::Drop, vec![count(epsilon), sum("amount", epsilon)], 0)
        }
    }

    #[test]
    fn one_person_in_fifty_rows_moves_the_release_by_the_bound_only() {
        let ds = dataset(&transactions());
        let r = compute("job-1", &ds, &four_regions(5, 1.0), || Ok(())).unwrap();
        // 45 of the 50 rows of customer 1 are left out, and counted.
        assert_eq!(r.rows_dropped, 45);
        // The noise follows the bound: one person moves a count by 5 and a sum by 5 × 100.
        let count = r.measures[0].noise.as_ref().unwrap();
        assert_eq!(count.sensitivity, 5.0);
        assert!((count.scale - 5.0).abs() < 1e-6, "{count:?}");
        let sum = r.measures[1].noise.as_ref().unwrap();
        assert!((sum.sensitivity - 500.0).abs() < 1e-9, "{sum:?}");
        assert!((sum.scale - 500.0).abs() < 1e-6, "{sum:?}");
        // The charged ε is the job's: the sensitivity took the person's rows into account.
        assert_eq!(r.epsilon, 2.0);
        // Without a bound (L = 1) the person's rows collapse to one.
        let one = compute("job-1", &ds, &four_regions(1, 1.0), || Ok(())).unwrap();
        assert_eq!(one.rows_dropped, 49);
        assert_eq!(one.measures[0].noise.as_ref().unwrap().sensitivity, 1.0);
    }

    /// The variance of the released counts around the bounded truth is that of the discrete
    /// Laplace at scale L/ε, not at 1/ε.
    #[test]
    fn the_noise_scale_follows_the_bound_empirically() {
        let ds = dataset(&transactions());
        let k = four_regions(5, 1.0);
        // Truth after the bound: north 5 + 1, south 2, east 2, west 3.
        let truth = [6.0, 2.0, 2.0, 3.0];
        let mut squares = 0.0;
        let mut n = 0.0;
        for _ in 0..1000 {
            let r = compute("job-1", &ds, &k, || Ok(())).unwrap();
            for (c, t) in r.categories.iter().zip(truth) {
                squares += (c.values[0] - t).powi(2);
                n += 1.0;
            }
        }
        let variance = squares / n;
        let laplace = |b: f64| {
            let t = (-1.0 / b).exp();
            2.0 * t / (1.0 - t).powi(2)
        };
        let expected = laplace(5.0);
        assert!(
            (variance / expected - 1.0).abs() < 0.2,
            "empirical variance {variance}, discrete Laplace at scale 5 has {expected}"
        );
        assert!(variance > 10.0 * laplace(1.0));
    }
}
