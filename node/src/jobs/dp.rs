//! What the kinds that release with DP share at the node: calibrating an OpenDP mechanism
//! from a job's typed parameters, describing its noise in results, and assigning rows to the
//! job's declared categories.
//!
//! The privacy parameters and every sensitivity come from the typed job (`parley_jobs`),
//! never from the data; the data decides only which category a row falls in.

use parley_crypto::dp::{Calibrated, Mechanism, calibrate};
use parley_jobs::params::{Categories, Dp};
use parley_proto::{DpMechanism, NoiseInfo};

use super::bound;
use crate::NodeError;
use crate::dataset::{Dataset, SegmentColumn};

/// The error of a failed DP calibration or release in job `job`.
pub(crate) fn dp_err(job: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::protocol(job, &format!("DP release: {e}"))
}

/// The mechanism of `dp`, calibrated for `sensitivity` (integer units) at `dp`'s ε and δ.
pub(crate) fn calibrated(job: &str, dp: &Dp, sensitivity: u64) -> Result<Calibrated, NodeError> {
    calibrate(dp.mechanism.opendp(), sensitivity, dp.epsilon, dp.delta).map_err(|e| dp_err(job, e))
}

/// How a calibrated mechanism is described in results; `unit` converts from integer units
/// back to the released unit (10^-decimals for sums, 1 for counts).
pub(crate) fn noise_info(c: &Calibrated, unit: f64) -> NoiseInfo {
    NoiseInfo {
        mechanism: match c.mechanism {
            Mechanism::Laplace => DpMechanism::Laplace,
            Mechanism::Gaussian => DpMechanism::Gaussian,
        } as i32,
        epsilon: c.epsilon,
        delta: c.delta,
        scale: c.scale * unit,
        accuracy95: c.accuracy95() * unit,
        sensitivity: c.sensitivity as f64 * unit,
    }
}

/// [`row_categories`] over the rows the person bound keeps (at most `max_rows_per_person` per
/// person of `dataset`, `bound::records`); left-out rows get `None`. Also how many were left
/// out.
pub(crate) fn bounded_row_categories(
    dataset: &Dataset,
    segments: &SegmentColumn,
    categories: &Categories,
    max_rows_per_person: u32,
) -> (Vec<Option<usize>>, u64) {
    let kept = bound::records(dataset.persons(), &[], max_rows_per_person);
    let mut rows = row_categories(segments, categories);
    let mut keep = vec![false; rows.len()];
    for i in &kept.index {
        keep[*i] = true;
    }
    for (r, k) in rows.iter_mut().zip(keep) {
        if !k {
            *r = None;
        }
    }
    (rows, kept.dropped)
}

/// Per row of `segments`, the index of its output category (`Categories::output`): the
/// position of its label among the declared categories, the `other` bucket's index for any
/// other label when rows are bucketed, or `None` when the row is dropped.
fn row_categories(segments: &SegmentColumn, categories: &Categories) -> Vec<Option<usize>> {
    let declared = &categories.names;
    let bucket = categories.bucket().then_some(declared.len());
    // Data category code → output index (None = dropped).
    let map: Vec<Option<usize>> = segments
        .categories()
        .iter()
        .map(|c| declared.iter().position(|d| d == c).or(bucket))
        .collect();
    segments
        .codes()
        .iter()
        .map(|&c| map.get(c as usize).copied().flatten())
        .collect()
}
