//! Conversion lift (`lift` jobs) at a node: P1, the publisher (arm and cohort labels), or P2,
//! the brand (conversions and values; returns the result). The protocol is
//! `parley_crypto::grouped` with one group per arm × cohort cell, on `psi_sum`'s parties; the
//! statistics are `parley_jobs::lift`; `parley_jobs::kinds::lift` derives the sensitivities.
//!
//! # Guarantees
//! * P1 keeps one identifier per person (the first in file order) and drops, counted, every
//!   identifier that carries two different cells: the engine needs each identifier in one
//!   group, and the person bound needs each person in one cell.
//! * P1 charges its dataset and draws the noise (one vector over the cells for the matched
//!   counts and one per column, each at the job's ε split evenly) only once everything from P2
//!   arrived; the noise is inside the ciphertexts before they leave.
//! * P2 sends its whole customer universe (converters or not), aggregated and clamped per
//!   identifier, and charges its dataset before the result leaves.
//! * Records whose arm or cohort label the job does not declare are refused at the offer, with
//!   counts only.

use std::collections::HashMap;
use std::time::Instant;

use parley_crypto::dp::Calibrated;
use parley_crypto::elgamal::MAX_DECRYPT_WIDTH;
use parley_crypto::grouped::{GroupP1, GroupP2};
use parley_crypto::normalize::IdHash;
use parley_jobs::kinds::lift::{ARMS, Arm, Column, Lift};
use parley_jobs::lift::{self as stats, Estimate, Outcome};
use parley_proto::{JobResult, LiftCell, LiftEstimate, LiftFigures, LiftResult, NoiseInfo};

use super::bound;
use super::dp::{calibrated, dp_err, noise_info};
use super::envelope::EnvelopeWire;
use super::psi_sum::{GroupNoise, SumReceived, SumReceiverParty, SumSenderParty};
use super::two_party;
use super::wait::Waiter;
use super::{JobIo, JobRun, segment_column, value_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Runs a lift job: P2 returns the result, P1 `None`.
pub(super) fn run(
    run: &JobRun,
    k: &Lift,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = run.job_id.clone();
    let columns = k.columns();
    let dp = k.release_dp();
    let count_cal = calibrated(&job, &dp, k.count_sensitivity())?;
    let column_cals = columns
        .iter()
        .map(|c| calibrated(&job, &dp, k.column_sensitivity(*c)))
        .collect::<Result<Vec<_>, _>>()?;
    let infos: Vec<NoiseInfo> = columns
        .iter()
        .zip(&column_cals)
        .map(|(c, cal)| noise_info(cal, k.column_unit(*c)))
        .collect();
    let count_info = noise_info(&count_cal, 1.0);
    let groups = k.groups();
    let width = columns.len();
    let ids = run.dataset.identifiers(run.columns())?;
    let (peer, x25519) = run.peer()?;
    let mut wire = EnvelopeWire::new(&job, &run.me, &run.secrets, peer, x25519)?;
    if run.index == k.p1 {
        let (labelled, dropped) =
            p1_cells(&run.dataset, k, ids).map_err(|e| NodeError::protocol(&job, &e))?;
        if dropped > 0 {
            tracing::info!(job = %job, dropped, "identifiers beyond the per-person bound or in two cells left out");
        }
        let p1 = GroupP1::new(labelled, groups, width, run.max_set_size)?;
        let charger = run.charger(io, wait);
        let release = Box::new(move |_matched: &[u64]| -> Result<GroupNoise, NodeError> {
            charger.charge()?;
            let zeros = vec![0i64; groups];
            let counts = count_cal.release(&zeros).map_err(|e| dp_err("", e))?;
            let mut sums = vec![0i64; groups * width];
            for (c, cal) in column_cals.iter().enumerate() {
                let noise = cal.release(&zeros).map_err(|e| dp_err("", e))?;
                for (g, n) in noise.into_iter().enumerate() {
                    sums[g * width + c] = n;
                }
            }
            Ok(GroupNoise {
                sums,
                counts,
                sum_info: infos,
                count_info,
            })
        });
        let mut party = SumSenderParty::new(p1, run.batch_points, release);
        two_party::drive(&mut party, &mut wire, io, wait)?;
        return Ok(None);
    }
    let items = p2_items(&run.dataset, k, ids).map_err(|e| NodeError::protocol(&job, &e))?;
    let n = items.ids.len() as u64;
    let ranges = decrypt_ranges(&job, k, &column_cals, n)?;
    // The job's public bounds: the fewer digits a bound has, the less work P2 encrypts with.
    let bounds = k.columns().iter().map(|c| k.column_bound(*c)).collect();
    let p2 = GroupP2::new(items.ids, items.values, groups, width, run.max_set_size)?
        .with_column_bounds(bounds)?;
    let mut party = SumReceiverParty::new(p2, groups, run.batch_points, ranges);
    two_party::drive(&mut party, &mut wire, io, wait)?;
    let got = party.finish().map_err(|e| e.for_job(&job))?;
    // P2's dataset pays for the release before it leaves.
    run.charge(io, wait)?;
    let mut result = release(k, &got, &column_cals);
    result.receiver_identifiers = n;
    result.records_dropped = items.dropped;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(job = %job, cells = result.cells.len(), "lift released");
    Ok(Some(JobResult::from(result)))
}

/// Checks at the offer that this participant's columns exist, that P1's every record has a
/// declared arm (and cohort), and that P2 can decrypt every total its dataset could give.
pub(super) fn check_columns(ds: &Dataset, k: &Lift, index: usize) -> Result<(), String> {
    if index == k.p1 {
        record_groups(ds, k).map(|_| ())
    } else {
        value_column(ds, &k.conversion_column)?;
        value_column(ds, &k.value_column)?;
        let dp = k.release_dp();
        let cals = k
            .columns()
            .iter()
            .map(|c| calibrated("", &dp, k.column_sensitivity(*c)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let n = u64::try_from(ds.identifier_count()).unwrap_or(u64::MAX);
        decrypt_ranges("", k, &cals, n)
            .map(|_| ())
            .map_err(|e| match e {
                NodeError::Protocol { detail, .. } => detail,
                other => other.to_string(),
            })
    }
}

/// Each record's cell (group number), or why a record has none: a label the job does not
/// declare (counts only, never a value).
fn record_groups(ds: &Dataset, k: &Lift) -> Result<Vec<u32>, String> {
    let arms = segment_column(ds, &k.arm_column)?;
    let arm_of: Vec<Option<Arm>> = arms
        .categories()
        .iter()
        .map(|c| {
            if *c == k.test_label {
                Some(Arm::Test)
            } else if *c == k.control_label {
                Some(Arm::Control)
            } else {
                None
            }
        })
        .collect();
    let unknown_labels = arm_of.iter().filter(|a| a.is_none()).count();
    let cohorts = match &k.cohort_column {
        Some(c) => Some(segment_column(ds, c)?),
        None => None,
    };
    let cohort_of: Vec<Option<usize>> = cohorts.map_or_else(Vec::new, |c| {
        c.categories()
            .iter()
            .map(|l| k.cohorts.iter().position(|d| d == l))
            .collect()
    });
    let mut bad_arm = 0u64;
    let mut bad_cohort = 0u64;
    let mut out = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let arm = arm_of[arms.codes()[i] as usize];
        let cohort = match cohorts {
            Some(c) => cohort_of[c.codes()[i] as usize],
            None => Some(0),
        };
        match (arm, cohort) {
            (Some(a), Some(c)) => out.push(k.group(a, c) as u32),
            (None, _) => bad_arm += 1,
            (_, None) => bad_cohort += 1,
        }
    }
    if bad_arm > 0 {
        return Err(format!(
            "dataset '{}': {bad_arm} records have an arm label in column '{}' that is neither \
             '{}' nor '{}' ({unknown_labels} such labels); fix the data or set the job's \
             test_label and control_label",
            ds.name(),
            k.arm_column,
            k.test_label,
            k.control_label
        ));
    }
    if bad_cohort > 0 {
        return Err(format!(
            "dataset '{}': {bad_cohort} records have a cohort in column '{}' that the job \
             does not declare; add it to the job's cohorts or fix the data",
            ds.name(),
            k.cohort_column.as_deref().unwrap_or_default()
        ));
    }
    Ok(out)
}

/// P1's labelled identifiers: per person the first identifier in file order, each with its
/// record's cell (see `bound::labelled_identifiers`). Also how many were left out.
fn p1_cells(
    ds: &Dataset,
    k: &Lift,
    ids: Vec<Vec<IdHash>>,
) -> Result<(Vec<(IdHash, u32)>, u64), String> {
    let groups = record_groups(ds, k)?;
    Ok(bound::labelled_identifiers(ds.persons(), &ids, &groups))
}

/// P2's identifiers with their per-person column values (row by row, in `Lift::columns`
/// order).
struct Items {
    ids: Vec<IdHash>,
    values: Vec<u64>,
    dropped: u64,
}

/// P2's whole customer universe: at most m records per person and identifier; per
/// identifier, its rows' conversions and values summed, then clamped.
fn p2_items(ds: &Dataset, k: &Lift, ids: Vec<Vec<IdHash>>) -> Result<Items, String> {
    let conversions = value_column(ds, &k.conversion_column)?;
    let values = value_column(ds, &k.value_column)?;
    let kept = bound::records(ds.persons(), &ids, k.bound.max_records_per_identifier);
    let mut per_id: HashMap<IdHash, (f64, f64)> = HashMap::new();
    for i in &kept.index {
        for id in &ids[*i] {
            let e = per_id.entry(*id).or_insert((0.0, 0.0));
            e.0 += conversions[*i];
            e.1 += values[*i];
        }
    }
    drop(ids);
    let columns = k.columns();
    let max_conv = f64::from(k.max_conversions);
    let mut out = Items {
        ids: Vec::with_capacity(per_id.len()),
        values: Vec::with_capacity(per_id.len() * columns.len()),
        dropped: kept.dropped,
    };
    for (id, (conv, value)) in per_id {
        let conv = conv.round().clamp(0.0, max_conv) as u64;
        let value = value.clamp(0.0, k.value.upper);
        out.ids.push(id);
        for c in &columns {
            out.values.push(match c {
                Column::Conversions => conv,
                Column::Value => k.value.units(value).max(0) as u64,
                Column::ValueSquares => k.square_units(value),
                Column::ConversionSquares => conv * conv,
            });
        }
    }
    Ok(out)
}

/// The range each column's noisy totals over at most `n` identifiers lie in: `[-bound,
/// n × column bound + bound]`, `bound` exceeding the noise except with probability about
/// 1e-9. Refused when wider than P2 can decrypt.
fn decrypt_ranges(
    job: &str,
    k: &Lift,
    cals: &[Calibrated],
    n: u64,
) -> Result<Vec<(i64, i64)>, NodeError> {
    k.columns()
        .iter()
        .zip(cals)
        .map(|(c, cal)| {
            let noise = cal.accuracy(1e-9).map_err(|e| dp_err(job, e))?.ceil();
            let bound = (noise as i64).saturating_add(1);
            let per = i64::try_from(k.column_bound(*c)).unwrap_or(i64::MAX);
            let max = i64::try_from(n)
                .unwrap_or(i64::MAX)
                .saturating_mul(per)
                .saturating_add(bound);
            let width = (i128::from(max) + i128::from(bound)).unsigned_abs();
            if width > MAX_DECRYPT_WIDTH {
                let fix = match c {
                    Column::ValueSquares => "raise lift.squares_unit",
                    Column::Value => "lower lift.max_value or lift.decimals",
                    Column::Conversions | Column::ConversionSquares => "lower lift.max_conversions",
                };
                return Err(NodeError::protocol(
                    job,
                    &format!(
                        "lift: the noisy {} totals over up to {n} identifiers span {width} \
                         units, more than the 2^42 P2 can decrypt; {fix}, or raise \
                         lift.dp.epsilon",
                        c.name()
                    ),
                ));
            }
            Ok((bound.saturating_neg(), max))
        })
        .collect()
}

/// The released cells and the figures derived from them.
fn release(k: &Lift, got: &SumReceived, cals: &[Calibrated]) -> LiftResult {
    let columns = k.columns();
    let at = |g: usize, c: Column| -> f64 {
        columns
            .iter()
            .position(|x| *x == c)
            .map_or(0.0, |i| got.totals[g][i] as f64 * k.column_unit(c))
    };
    let var = |c: Column| -> f64 {
        columns
            .iter()
            .position(|x| *x == c)
            .map_or(0.0, |i| cals[i].variance() * k.column_unit(c).powi(2))
    };
    let below = |population: u64, matched: f64| {
        k.min_cell > 0 && (population < k.min_cell || matched < k.min_cell as f64)
    };
    let cells: Vec<Totals> = (0..k.groups())
        .map(|g| {
            let conversions = at(g, Column::Conversions);
            Totals {
                population: got.p1_group_sizes.get(g).copied().unwrap_or(0),
                matched: got.noisy_counts[g] as f64,
                conversions,
                conversion_squares: if k.max_conversions > 1 {
                    at(g, Column::ConversionSquares)
                } else {
                    conversions
                },
                value: at(g, Column::Value),
                value_squares: at(g, Column::ValueSquares),
                cells: 1.0,
            }
        })
        .collect();
    let noise = (var(Column::Conversions), var(Column::Value));
    let spend = (k.spend > 0.0).then_some(k.spend);
    let c = k.cohort_count();
    let mut figures = Vec::new();
    for cohort in 0..c {
        let (t, ctl) = (
            &cells[k.group(Arm::Test, cohort)],
            &cells[k.group(Arm::Control, cohort)],
        );
        let name = k.cohorts.get(cohort).cloned().unwrap_or_default();
        figures.push(
            if below(t.population, t.matched) || below(ctl.population, ctl.matched) {
                withheld(name, "a cell of this cohort is below min_cell")
            } else {
                derive(name, t, ctl, noise, spend)
            },
        );
    }
    if c > 1 {
        let sum = |arm: Arm| {
            (0..c)
                .map(|i| cells[k.group(arm, i)])
                .fold(Totals::default(), Totals::add)
        };
        let (t, ctl) = (sum(Arm::Test), sum(Arm::Control));
        figures.push(
            if below(t.population, t.matched) || below(ctl.population, ctl.matched) {
                withheld(String::new(), "an arm is below min_cell")
            } else {
                derive(String::new(), &t, &ctl, noise, spend)
            },
        );
    }
    let released = cells
        .iter()
        .enumerate()
        .map(|(g, t)| {
            let (arm, cohort) = k.cell_labels(g);
            let suppressed = below(t.population, t.matched);
            let shown = |v: f64| if suppressed { 0.0 } else { v };
            LiftCell {
                arm: arm.to_owned(),
                cohort: cohort.to_owned(),
                population: t.population,
                matched: shown(t.matched),
                conversions: shown(t.conversions),
                value: shown(t.value),
                value_squares: shown(t.value_squares),
                conversion_squares: shown(t.conversion_squares),
                suppressed,
            }
        })
        .collect();
    debug_assert_eq!(ARMS.len() * c, cells.len());
    LiftResult {
        cells: released,
        figures,
        count_noise: Some(got.count_info),
        column_noise: got.sum_info.clone(),
        column_names: columns.iter().map(|c| c.name().to_owned()).collect(),
        epsilon: k.dp.epsilon,
        delta: k.dp.delta,
        window_start: k.window_start.clone(),
        window_end: k.window_end.clone(),
        spend: k.spend,
        min_cell: k.min_cell,
        receiver_identifiers: 0,
        records_dropped: 0,
        elapsed_ms: 0,
        profile: k.profile.name().to_owned(),
    }
}

/// One cell's (or several cells' summed) released totals, in released units.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    population: u64,
    matched: f64,
    conversions: f64,
    conversion_squares: f64,
    value: f64,
    value_squares: f64,
    /// How many cells were summed (each adds its noise variance).
    cells: f64,
}

impl Totals {
    fn add(self, o: Totals) -> Totals {
        Totals {
            population: self.population + o.population,
            matched: self.matched + o.matched,
            conversions: self.conversions + o.conversions,
            conversion_squares: self.conversion_squares + o.conversion_squares,
            value: self.value + o.value,
            value_squares: self.value_squares + o.value_squares,
            cells: self.cells + o.cells,
        }
    }

    /// The arm as `parley_jobs::lift` takes it; `noise` is one cell's noise variance of the
    /// conversions and of the value.
    fn arm(&self, noise: (f64, f64)) -> stats::Arm {
        stats::Arm {
            population: self.population as f64,
            population_noise_var: 0.0,
            conversions: Outcome {
                sum: self.conversions,
                squares: self.conversion_squares,
                sum_noise_var: noise.0 * self.cells,
            },
            value: Outcome {
                sum: self.value,
                squares: self.value_squares,
                sum_noise_var: noise.1 * self.cells,
            },
        }
    }
}

fn estimate(e: Estimate) -> LiftEstimate {
    LiftEstimate {
        value: e.value,
        std_error: e.std_error,
        low: e.low,
        high: e.high,
    }
}

fn withheld(cohort: String, why: &str) -> LiftFigures {
    LiftFigures {
        cohort,
        withheld: why.to_owned(),
        ..Default::default()
    }
}

fn derive(
    cohort: String,
    t: &Totals,
    c: &Totals,
    noise: (f64, f64),
    spend: Option<f64>,
) -> LiftFigures {
    match stats::lift(&t.arm(noise), &c.arm(noise), spend) {
        Ok(l) => LiftFigures {
            cohort,
            test_rate: Some(estimate(l.test_rate)),
            control_rate: Some(estimate(l.control_rate)),
            relative_lift: Some(estimate(l.relative_lift)),
            incremental_conversions: Some(estimate(l.incremental_conversions)),
            incremental_value: Some(estimate(l.incremental_value)),
            iroas: l.iroas.map(estimate),
            withheld: String::new(),
        },
        Err(e) => withheld(cohort, &e.to_string()),
    }
}
