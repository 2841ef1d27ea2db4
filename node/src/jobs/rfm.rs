//! RFM segments (`rfm` jobs) over one local transaction table.
//!
//! # Guarantee
//! The released table is (ε, δ)-differentially private with respect to adding or removing one
//! person (all rows with one value of the dataset's person column), ε and δ being the job's
//! (`parley_jobs::kinds::rfm`, whose module docs derive the sensitivities): the node
//! aggregates every person's rows in the period into one (recency, frequency, spend) triple,
//! so each person lands in exactly one cell (count sensitivity 1), and clamps each person's
//! spend to `[0, max_monetary]` before summing (sum sensitivity `max_monetary`).
//!
//! * Recency is the number of whole days between a person's last purchase in the period and
//!   the period's last day (a purchase on the last day is 0 days old).
//! * Rows dated outside `[period_start, period_end)` are not used; persons without a row in
//!   the period are in no cell.
//! * Every cell is released, empty ones too (as noise); suppression (`min_count`) uses the
//!   noisy count only.
//!
//! The whole release is charged to the dataset's budget (through `charge`) before any noise
//! is drawn.

use parley_crypto::dp::calibrate;
use parley_jobs::kinds::rfm::{DAY_MS, Rfm};
use parley_proto::{JobResult, RfmCell, RfmResult};

use super::dp::{dp_err, noise_info};
use super::wait::Waiter;
use super::{JobIo, JobRun, value_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Computes and releases the job's cells: charges the ledger, then returns the table for the
/// coordinator.
pub(super) fn run(
    run: &JobRun,
    k: &Rfm,
    io: &JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let result = compute(&run.job_id, &run.dataset, k, || run.charge(io, wait))?;
    tracing::info!(job = %run.job_id, cells = result.cells.len(), "rfm released");
    Ok(Some(JobResult::from(result)))
}

/// `ds`'s date column `column`, or why there is none.
fn date_column<'d>(ds: &'d Dataset, column: &str) -> Result<&'d [i64], String> {
    ds.dates(column).ok_or_else(|| {
        format!(
            "dataset '{}' has no date column '{column}' (declare it with kind = \"date\")",
            ds.name()
        )
    })
}

/// Checks at the offer that the date and amount columns exist with the right kinds.
pub(super) fn check_columns(ds: &Dataset, k: &Rfm) -> Result<(), String> {
    date_column(ds, &k.date_column)?;
    value_column(ds, &k.amount_column)?;
    Ok(())
}

/// One person's purchases in the period.
#[derive(Clone, Copy, Default)]
struct Person {
    last_ms: i64,
    purchases: u32,
    /// Raw spend in units of 10^-decimals (refunds included), clamped only when bucketed.
    spend: i64,
}

/// Computes the job's cells over `dataset`. `charge` must durably charge the job's release
/// cost; it is called once, after every input check and before any noise is drawn. Errors
/// name the job or column at fault, never a data value.
pub(crate) fn compute(
    job: &str,
    dataset: &Dataset,
    k: &Rfm,
    charge: impl FnOnce() -> Result<(), NodeError>,
) -> Result<RfmResult, NodeError> {
    let at_fault = |e: String| NodeError::protocol(job, &e);
    let dates = date_column(dataset, &k.date_column).map_err(at_fault)?;
    let amounts = value_column(dataset, &k.amount_column).map_err(at_fault)?;
    let persons = dataset.persons();
    let scale = 10f64.powi(k.spend.decimals as i32);
    let mut people = vec![Person::default(); persons.iter().max().map_or(0, |m| *m as usize + 1)];
    for ((&t, &v), &p) in dates.iter().zip(amounts).zip(persons) {
        if t < k.start_ms || t >= k.end_ms {
            continue;
        }
        let e = &mut people[p as usize];
        e.last_ms = if e.purchases == 0 {
            t
        } else {
            e.last_ms.max(t)
        };
        e.purchases = e.purchases.saturating_add(1);
        // Values are finite (checked at load); `as` saturates the huge ones.
        e.spend = e.spend.saturating_add((v * scale).round() as i64);
    }
    let max_units = k.spend.units(k.spend.upper);
    let cells = k.cells();
    let mut counts = vec![0i64; cells];
    let mut sums = vec![0i64; cells];
    for e in people.iter().filter(|e| e.purchases > 0) {
        let days = u32::try_from((k.end_ms - 1 - e.last_ms) / DAY_MS).unwrap_or(u32::MAX);
        let spend = e.spend.clamp(0, max_units);
        let cell = k.cell(days, e.purchases, spend as f64 / scale);
        counts[cell] += 1;
        sums[cell] += spend;
    }

    let mech = k.mechanism.opendp();
    let delta_each = k.delta / f64::from(k.releases());
    let count_cal = calibrate(mech, 1, k.epsilon, delta_each).map_err(|e| dp_err(job, e))?;
    let sum_cal = if k.with_means() {
        Some(
            calibrate(
                mech,
                k.spend.sensitivity_units(),
                k.mean_epsilon,
                delta_each,
            )
            .map_err(|e| dp_err(job, e))?,
        )
    } else {
        None
    };

    charge()?;

    let noisy_counts = count_cal.release(&counts).map_err(|e| dp_err(job, e))?;
    let noisy_sums = match &sum_cal {
        Some(c) => Some(c.release(&sums).map_err(|e| dp_err(job, e))?),
        None => None,
    };
    let min_count = i64::try_from(k.min_count).unwrap_or(i64::MAX);
    let cells = (0..cells)
        .map(|i| {
            let (r, f, m) = k.coordinates(i);
            let count = noisy_counts[i].max(0);
            let suppressed = k.min_count > 0 && noisy_counts[i] < min_count;
            let mean_spend = noisy_sums.as_ref().map_or(0.0, |s| {
                (s[i] as f64 / scale / count.max(1) as f64).clamp(0.0, k.spend.upper)
            });
            RfmCell {
                recency: r as u32,
                frequency: f as u32,
                monetary: m as u32,
                count: if suppressed { 0.0 } else { count as f64 },
                mean_spend: if suppressed { 0.0 } else { mean_spend },
                suppressed,
            }
        })
        .collect();
    let (recency_labels, frequency_labels, monetary_labels) = k.labels();
    Ok(RfmResult {
        dataset: dataset.name().to_string(),
        recency_labels,
        frequency_labels,
        monetary_labels,
        cells,
        count_noise: Some(noise_info(&count_cal, 1.0)),
        sum_noise: sum_cal.as_ref().map(|c| noise_info(c, 1.0 / scale)),
        epsilon: k.epsilon + k.mean_epsilon,
        delta: k.delta,
        period_start: k.period_start.clone(),
        period_end: k.period_end.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::{ColumnConfig, ColumnKind, DatasetConfig};

    /// A transaction table of customers `c0..` over `(customer, date, amount)` rows.
    fn dataset(rows: &[(&str, &str, f64)]) -> (tempfile::TempDir, Dataset) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("purchases.csv");
        let mut csv = String::from("order,customer,email,bought_at,amount\n");
        for (i, (c, d, a)) in rows.iter().enumerate() {
            csv.push_str(&format!("o{i},{c},{c}@example.com,{d},{a}\n"));
        }
        std::fs::write(&path, csv).expect("write");
        let cfg = DatasetConfig {
            name: "purchases".into(),
            path,
            key_column: "order".into(),
            person_column: Some("customer".into()),
            max_bad_row_fraction: 0.0,
            delimiter: None,
            budget: None,
            columns: [
                ("email", ColumnKind::Email),
                ("bought_at", ColumnKind::Date),
                ("amount", ColumnKind::Value),
            ]
            .into_iter()
            .map(|(name, kind)| ColumnConfig {
                name: name.into(),
                kind,
            })
            .collect(),
        };
        let n = parley_crypto::normalize::Normalizer::new(
            parley_crypto::normalize::Profile::Google,
            "US",
        )
        .expect("normalizer");
        let ds = Dataset::load(&cfg, &n).expect("loads");
        (dir, ds)
    }

    fn job(epsilon: f64, mean_epsilon: f64, min_count: u64) -> Rfm {
        let text = include_str!("../../../jobs/examples/job-rfm.toml")
            .replace(
                "mean_epsilon = 0.5",
                &format!("mean_epsilon = {mean_epsilon:?}"),
            )
            .replace("\nepsilon = 0.5", &format!("\nepsilon = {epsilon:?}"))
            .replace("min_count = 10", &format!("min_count = {min_count}"));
        match parley_jobs::parse_job(&text, "job-rfm.toml").unwrap().kind {
            parley_jobs::Kind::Rfm(k) => k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_person_lands_in_one_cell_whatever_their_rows() {
        // c0: 50 purchases of 100 (spend 5000, clamped at 5000), the last on the period's last
        // day; c1: one purchase of 20, 45 days before the end; c2: only outside the period.
        let mut rows: Vec<(&str, &str, f64)> = vec![("c0", "2026-11-30", 100.0); 50];
        rows.push(("c1", "2026-10-17", 20.0));
        rows.push(("c2", "2024-01-01", 999.0));
        let (_dir, ds) = dataset(&rows);
        // A huge epsilon: the noise is (almost surely) zero, so the cells are the truth.
        let k = job(1e9, 1e9, 0);
        let charged = Cell::new(0);
        let r = compute("job-1", &ds, &k, || {
            charged.set(charged.get() + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(charged.get(), 1);
        assert_eq!(r.cells.len(), 64);
        let at = |rr, ff, mm| {
            r.cells
                .iter()
                .find(|c| (c.recency, c.frequency, c.monetary) == (rr, ff, mm))
                .unwrap()
        };
        // c0: 0 days, 6+ purchases, >1000: one person, whatever its 50 rows.
        assert_eq!(at(0, 3, 3).count, 1.0);
        assert!((at(0, 3, 3).mean_spend - 5000.0).abs() < 1e-9);
        // c1: 44 days (31-90), 1 purchase, ≤50.
        assert_eq!(at(1, 0, 0).count, 1.0);
        assert!((at(1, 0, 0).mean_spend - 20.0).abs() < 1e-9);
        let total: f64 = r.cells.iter().map(|c| c.count).sum();
        assert_eq!(total, 2.0, "c2 has no purchase in the period");
        // The noise is calibrated to one person: sensitivity 1 and max_monetary.
        assert_eq!(r.count_noise.unwrap().sensitivity, 1.0);
        assert!((r.sum_noise.unwrap().sensitivity - 5000.0).abs() < 1e-9);
        assert_eq!(r.recency_labels[1], "31-90");
    }

    #[test]
    fn suppression_charging_and_missing_columns() {
        let (_dir, ds) = dataset(&[("c0", "2026-11-30", 10.0)]);
        let k = job(1.0, 0.0, u64::MAX);
        let r = compute("job-1", &ds, &k, || Ok(())).unwrap();
        assert!(r.cells.iter().all(|c| c.suppressed && c.count == 0.0));
        assert!(r.sum_noise.is_none());
        let err = compute("job-1", &ds, &k, || {
            Err(NodeError::protocol("job-1", "privacy budget exhausted"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("budget exhausted"), "{err}");
        let mut wrong = k.clone();
        wrong.date_column = "amount".into();
        let err = compute("job-1", &ds, &wrong, || panic!("charged")).unwrap_err();
        assert!(err.to_string().contains("no date column 'amount'"), "{err}");
        assert!(check_columns(&ds, &wrong).is_err());
        assert!(check_columns(&ds, &k).is_ok());
    }
}
