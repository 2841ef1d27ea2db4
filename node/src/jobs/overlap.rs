//! Segmented overlap (`overlap` jobs) at a node: P1 (segment labels; learns only the matched
//! count per P1 segment) or P2 (segment labels; returns the result). The protocol is
//! `parley_crypto::grouped` on `psi_sum`'s parties, with one group per P1 segment and one 0/1
//! column per P2 segment; `parley_jobs::kinds::overlap` derives the sensitivities.
//!
//! # Guarantees
//! * P1 keeps one identifier per person (`bound::labelled_identifiers`); P2 at most m records
//!   per person and identifier (`bound::records`). An identifier carrying two segments on
//!   one side is left out, counted: each identifier must sit in one cell.
//! * P1 charges its dataset and draws the noise (one vector over its segments for the matched
//!   counts and, with P2 segments, one over the cross-tab, each at the job's ε split evenly)
//!   only once everything from P2 arrived; the noise is inside the ciphertexts before they
//!   leave. Without P2 segments the one column is all zeros and carries no noise.
//! * P2 charges its dataset, then noises both sides' populations before the result leaves.
//! * Records whose segment label the job does not declare are refused at the offer, with
//!   counts only.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use parley_crypto::dp::Calibrated;
use parley_crypto::elgamal::MAX_DECRYPT_WIDTH;
use parley_crypto::grouped::{GroupP1, GroupP2};
use parley_crypto::normalize::IdHash;
use parley_jobs::kinds::overlap::{Overlap, Segments};
use parley_proto::{JobResult, NoiseInfo, OverlapCell, OverlapResult};

use super::bound;
use super::dp::{calibrated, dp_err, noise_info};
use super::envelope::EnvelopeWire;
use super::psi_sum::{GroupNoise, SumReceived, SumReceiverParty, SumSenderParty};
use super::two_party;
use super::wait::Waiter;
use super::{JobIo, JobRun, segment_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Runs an overlap job: P2 returns the result, P1 `None`.
pub(super) fn run(
    run: &JobRun,
    k: &Overlap,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = run.job_id.clone();
    let dp = k.release_dp();
    // The matched counts, the cross-tab and P2's populations move by at most m × c per
    // person; P1's populations by 1.
    let count_cal = calibrated(&job, &dp, k.count_sensitivity())?;
    let groups = k.groups();
    let width = k.width();
    let ids = run.dataset.identifiers(run.columns())?;
    let (peer, x25519) = run.peer()?;
    let mut wire = EnvelopeWire::new(&job, &run.me, &run.secrets, peer, x25519)?;
    if run.index == k.p1 {
        let cells = record_segments(&run.dataset, k.p1_segments.as_ref())
            .map_err(|e| NodeError::protocol(&job, &e))?;
        let (labelled, dropped) = bound::labelled_identifiers(run.dataset.persons(), &ids, &cells);
        drop(ids);
        if dropped > 0 {
            tracing::info!(job = %job, dropped, "identifiers beyond the per-person bound or in two segments left out");
        }
        let p1 = GroupP1::new(labelled, groups, width, run.max_set_size)?;
        let charger = run.charger(io, wait);
        let cross = k.p2_segments.is_some();
        let release = Box::new(move |_matched: &[u64]| -> Result<GroupNoise, NodeError> {
            charger.charge()?;
            let counts = count_cal
                .release(&vec![0i64; groups])
                .map_err(|e| dp_err("", e))?;
            let (sums, sum_info) = if cross {
                let noise = count_cal
                    .release(&vec![0i64; groups * width])
                    .map_err(|e| dp_err("", e))?;
                (noise, vec![noise_info(&count_cal, 1.0); width])
            } else {
                (vec![0i64; groups], vec![NoiseInfo::default()])
            };
            Ok(GroupNoise {
                sums,
                counts,
                sum_info,
                count_info: noise_info(&count_cal, 1.0),
            })
        });
        let mut party = SumSenderParty::new(p1, run.batch_points, release);
        two_party::drive(&mut party, &mut wire, io, wait)?;
        return Ok(None);
    }
    let items = p2_items(&run.dataset, k, ids).map_err(|e| NodeError::protocol(&job, &e))?;
    let n = items.ids.len() as u64;
    let ranges = decrypt_ranges(&job, k, &count_cal, n)?;
    // Every value is a 0/1 segment indicator.
    let p2 = GroupP2::new(items.ids, items.values, groups, width, run.max_set_size)?
        .with_column_bounds(vec![1; width])?;
    let mut party = SumReceiverParty::new(p2, groups, run.batch_points, ranges);
    two_party::drive(&mut party, &mut wire, io, wait)?;
    let got = party.finish().map_err(|e| e.for_job(&job))?;
    // P2's dataset pays for the release before it leaves.
    run.charge(io, wait)?;
    let p1_cal = calibrated(&job, &dp, 1)?;
    let noisy = |cal: &Calibrated, exact: &[u64]| -> Result<Vec<f64>, NodeError> {
        let exact: Vec<i64> = exact
            .iter()
            .map(|v| i64::try_from(*v).unwrap_or(i64::MAX))
            .collect();
        Ok(cal
            .release(&exact)
            .map_err(|e| dp_err(&job, e))?
            .into_iter()
            .map(|v| v as f64)
            .collect())
    };
    let populations = Populations {
        p1: noisy(&p1_cal, &got.p1_group_sizes)?,
        p2: noisy(&count_cal, &items.populations)?,
    };
    let mut result = release(k, &got, &populations);
    result.population_noise = Some(noise_info(&count_cal, 1.0));
    result.p1_population_noise = Some(noise_info(&p1_cal, 1.0));
    result.p2_dropped = items.dropped;
    result.p2_identifiers = n;
    result.p1_identifiers = got.p1_identifiers;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(job = %job, cells = result.cross.len(), "overlap released");
    Ok(Some(JobResult::from(result)))
}

/// Checks at the offer that this participant's segment column exists and holds only declared
/// labels, and that P2 can decrypt every total its dataset could give.
pub(super) fn check_columns(ds: &Dataset, k: &Overlap, index: usize) -> Result<(), String> {
    if index == k.p1 {
        return record_segments(ds, k.p1_segments.as_ref()).map(|_| ());
    }
    record_segments(ds, k.p2_segments.as_ref())?;
    let cal = calibrated("", &k.release_dp(), k.count_sensitivity()).map_err(|e| e.to_string())?;
    let n = u64::try_from(ds.identifier_count()).unwrap_or(u64::MAX);
    decrypt_ranges("", k, &cal, n)
        .map(|_| ())
        .map_err(|e| match e {
            NodeError::Protocol { detail, .. } => detail,
            other => other.to_string(),
        })
}

/// Each record's segment number (0 for every record without a breakdown), or why a record has
/// none: a label the job does not declare (counts only, never a label from the data).
fn record_segments(ds: &Dataset, segments: Option<&Segments>) -> Result<Vec<u32>, String> {
    let Some(s) = segments else {
        return Ok(vec![0; ds.len()]);
    };
    let column = segment_column(ds, &s.column)?;
    let code_of: Vec<Option<u32>> = column
        .categories()
        .iter()
        .map(|c| s.labels.iter().position(|l| l == c).map(|i| i as u32))
        .collect();
    let unknown_labels = code_of.iter().filter(|c| c.is_none()).count();
    let mut bad = 0u64;
    let mut out = Vec::with_capacity(ds.len());
    for code in column.codes() {
        match code_of[*code as usize] {
            Some(g) => out.push(g),
            None => bad += 1,
        }
    }
    if bad > 0 {
        return Err(format!(
            "dataset '{}': {bad} records have a segment in column '{}' that the job does not \
             declare ({unknown_labels} such labels); add them to the job's segments or fix the \
             data",
            ds.name(),
            s.column
        ));
    }
    Ok(out)
}

/// P2's identifiers with their indicator rows (`width` values each, row by row) and its
/// people per segment.
struct Items {
    ids: Vec<IdHash>,
    values: Vec<u64>,
    /// Distinct persons with a kept, identified record in each segment.
    populations: Vec<u64>,
    dropped: u64,
}

/// P2's people: at most m records per person and identifier; each identifier with the
/// indicator vector of its segment (all zeros without P2 segments); identifiers in two
/// segments left out.
fn p2_items(ds: &Dataset, k: &Overlap, ids: Vec<Vec<IdHash>>) -> Result<Items, String> {
    let segments = record_segments(ds, k.p2_segments.as_ref())?;
    let persons = ds.persons();
    let kept = bound::records(persons, &ids, k.max_records_per_identifier);
    let width = k.width();
    let mut segment_of: HashMap<IdHash, Option<u32>> = HashMap::new();
    let mut people: HashSet<(u32, u32)> = HashSet::new();
    for i in &kept.index {
        let s = segments[*i];
        if ids[*i].is_empty() {
            continue;
        }
        people.insert((persons[*i], s));
        for id in &ids[*i] {
            let e = segment_of.entry(*id).or_insert(Some(s));
            if *e != Some(s) {
                *e = None;
            }
        }
    }
    drop(ids);
    let mut populations = vec![0u64; width];
    for (_, s) in people {
        populations[s as usize] += 1;
    }
    let mut out = Items {
        ids: Vec::with_capacity(segment_of.len()),
        values: Vec::with_capacity(segment_of.len() * width),
        populations,
        dropped: kept.dropped,
    };
    for (id, s) in segment_of {
        let Some(s) = s else {
            out.dropped += 1;
            continue;
        };
        out.ids.push(id);
        for c in 0..width {
            out.values
                .push(u64::from(k.p2_segments.is_some() && c == s as usize));
        }
    }
    Ok(out)
}

/// The range each column's noisy totals over at most `n` identifiers lie in: `[-bound, n +
/// bound]`, `bound` exceeding the noise except with probability about 1e-9 (`[0, 0]` for the
/// zero column without P2 segments). Refused when wider than P2 can decrypt.
fn decrypt_ranges(
    job: &str,
    k: &Overlap,
    cal: &Calibrated,
    n: u64,
) -> Result<Vec<(i64, i64)>, NodeError> {
    if k.p2_segments.is_none() {
        return Ok(vec![(0, 0)]);
    }
    let noise = cal.accuracy(1e-9).map_err(|e| dp_err(job, e))?.ceil();
    let bound = (noise as i64).saturating_add(1);
    let max = i64::try_from(n).unwrap_or(i64::MAX).saturating_add(bound);
    let width = (i128::from(max) + i128::from(bound)).unsigned_abs();
    if width > MAX_DECRYPT_WIDTH {
        return Err(NodeError::protocol(
            job,
            &format!(
                "overlap: the noisy cross-tab counts over up to {n} identifiers span {width} \
                 units, more than the 2^42 P2 can decrypt; raise overlap.dp.epsilon or lower \
                 overlap.max_records_per_identifier"
            ),
        ));
    }
    Ok(vec![(bound.saturating_neg(), max); k.width()])
}

/// Both sides' noisy populations: P1's per P1 segment, P2's per P2 segment.
struct Populations {
    p1: Vec<f64>,
    p2: Vec<f64>,
}

/// The released cells: per P1 segment, per P2 segment, per pair, and the total.
fn release(k: &Overlap, got: &SumReceived, pops: &Populations) -> OverlapResult {
    let p1_labels = k.p1_labels();
    let p2_labels = k.p2_labels();
    let cell = |p1: &str, p2: &str, matched: f64, p1_pop: f64, p2_pop: f64| {
        let suppressed = matched < k.min_cell as f64;
        let rate = |pop: f64| {
            if suppressed || pop <= 0.0 {
                0.0
            } else {
                (matched / pop).clamp(0.0, 1.0)
            }
        };
        OverlapCell {
            p1_segment: p1.to_owned(),
            p2_segment: p2.to_owned(),
            matched: if suppressed { 0.0 } else { matched.max(0.0) },
            p1_population: p1_pop.max(0.0),
            p2_population: p2_pop.max(0.0),
            p1_match_rate: rate(p1_pop),
            p2_match_rate: rate(p2_pop),
            suppressed,
        }
    };
    let p1_total: f64 = pops.p1.iter().sum();
    let p2_total: f64 = pops.p2.iter().sum();
    let counts: Vec<f64> = got.noisy_counts.iter().map(|c| *c as f64).collect();
    let total = cell("", "", counts.iter().sum(), p1_total, p2_total);
    let by_p1 = if k.p1_segments.is_some() {
        p1_labels
            .iter()
            .enumerate()
            .map(|(g, l)| cell(l, "", counts[g], pops.p1[g], p2_total))
            .collect()
    } else {
        Vec::new()
    };
    let (mut by_p2, mut cross) = (Vec::new(), Vec::new());
    if k.p2_segments.is_some() {
        let at = |g: usize, s: usize| got.totals[g][s] as f64;
        by_p2 = p2_labels
            .iter()
            .enumerate()
            .map(|(s, l)| {
                let matched = (0..k.groups()).map(|g| at(g, s)).sum();
                cell("", l, matched, p1_total, pops.p2[s])
            })
            .collect();
        if k.p1_segments.is_some() {
            for (g, a) in p1_labels.iter().enumerate() {
                for (s, b) in p2_labels.iter().enumerate() {
                    cross.push(cell(a, b, at(g, s), pops.p1[g], pops.p2[s]));
                }
            }
        }
    }
    OverlapResult {
        total: Some(total),
        by_p1,
        by_p2,
        cross,
        count_noise: Some(got.count_info),
        cross_noise: k.p2_segments.is_some().then(|| got.sum_info[0]),
        population_noise: None,
        p1_population_noise: None,
        epsilon: k.dp.epsilon,
        delta: k.dp.delta,
        min_cell: k.min_cell,
        p2_dropped: 0,
        elapsed_ms: 0,
        profile: k.profile.name().to_owned(),
        p1_segment_column: column_name(&k.p1_segments),
        p2_segment_column: column_name(&k.p2_segments),
        p2_identifiers: 0,
        p1_identifiers: 0,
    }
}

fn column_name(s: &Option<Segments>) -> String {
    s.as_ref().map(|s| s.column.clone()).unwrap_or_default()
}
