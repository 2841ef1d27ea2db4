//! PSI intersection-sum (conversion measurement): P1 holds identifiers, P2 identifiers with
//! one or several value columns (`parley_crypto::grouped` with one group and one value column
//! per summed column).
//!
//! P1 (job-file role `sender`) adds up P2's encrypted, clamped values over the intersection,
//! adds DP noise inside the ciphertext and returns it with a noisy count; P2 (role
//! `receiver`) decrypts the noisy sums and releases them. P2 never sees an un-noised sum; P1
//! never sees a value. Both datasets pay the sum's and the count's ε (the release is about
//! both). The shared `[psi]` checks are [`crate::kinds::psi::check_pair`].
//!
//! # Value columns
//! A job sums either one column (the receiver participant's `value_column`, clamped to
//! `psi.lower`/`psi.upper`) or up to [`MAX_SUM_COLUMNS`] columns listed in `[[psi.columns]]`,
//! each with its own clamping bounds; `psi.decimals` applies to all. Both forms of a
//! one-column job describe the same [`PsiSum`], and its canonical wire form (`JobSpec::from`)
//! is the first, which nodes and clients that predate `columns` read.
//!
//! # Privacy
//! P2 keeps at most m records per person, and per identifier sums each column's clamped values
//! and clamps the total again to that column's bounds; P1 keeps at most k identifiers per
//! person. One person then moves the matched count by at most max(m, k)
//! ([`PsiSum::count_sensitivity`]) and a column's sum by that many times the column's largest
//! |bound| ([`PsiSum::column_sensitivity_units`]). `[psi.dp]` is the privacy loss of all the
//! sums together: its ε and δ are split evenly over the W columns (basic composition,
//! [`PsiSum::column_dp`]), and each column's noise is calibrated to its own sensitivity at
//! ε/W. `[psi.count_dp]` noises the count. Both datasets pay `[psi.dp]` plus `[psi.count_dp]`
//! whatever W is (the job's release cost).

use std::collections::HashSet;

use parley_crypto::normalize::Profile;
use parley_proto::{JobKind, JobSpec, PsiMode as PbPsiMode, PsiParams, SumColumn as PbSumColumn};

use crate::job::{Cost, Role};
use crate::kinds::psi::{Contribution, check_pair, profile_name, set_roles};
use crate::limits::{MAX_COLUMN_BYTES, MAX_DECIMALS};
use crate::params::{Bounds, Dp};

/// Most value columns one sum-mode job may sum (each adds a ciphertext per identifier and
/// splits the sum's ε once more).
pub const MAX_SUM_COLUMNS: usize = 8;

/// One summed value column of P2.
#[derive(Debug, Clone, PartialEq)]
pub struct SumColumn {
    /// The column, as in P2's dataset.
    pub name: String,
    /// Its clamping bounds (lower >= 0); `decimals` is the job's.
    pub bounds: Bounds,
}

/// An intersection-sum job.
#[derive(Debug, Clone, PartialEq)]
pub struct PsiSum {
    /// Fewer intersecting identifiers than this suppress the result (0 = off).
    pub min_intersection: u64,
    /// Noise on the sums, all columns together (each column gets an even share,
    /// [`PsiSum::column_dp`]).
    pub sum_dp: Dp,
    /// Noise on the released count.
    pub count_dp: Dp,
    /// Index of P1 (identifiers only) among the participants.
    pub p1: usize,
    /// Index of P2 (identifiers and values) among the participants.
    pub p2: usize,
    /// P2's value columns, 1 to [`MAX_SUM_COLUMNS`] with distinct names, in the job's order,
    /// all with the same `decimals`; values are clamped to each column's bounds and summed in
    /// units of 10^-decimals.
    pub columns: Vec<SumColumn>,
    /// The contribution bound: P2 keeps at most `max_records_per_identifier` records per
    /// person; P1 matches on `sender_columns` columns.
    pub bound: Contribution,
    /// The identifier normalisation profile both nodes must use.
    pub profile: Profile,
}

impl PsiSum {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<PsiSum, String> {
        let pair = check_pair(spec)?;
        let (Some(sum_dp), Some(count_dp)) = (pair.dp, pair.count_dp) else {
            // check_pair requires both in sum mode.
            return Err("psi: sum mode needs [psi.dp] and [psi.count_dp]".into());
        };
        let psi = pair.psi;
        let value_column = &spec.participants[pair.receiver].value_column;
        let columns = if psi.columns.is_empty() {
            // check_pair has checked the single-column form.
            vec![SumColumn {
                name: value_column.clone(),
                bounds: Bounds::check(psi.lower, psi.upper, psi.decimals, "psi")?,
            }]
        } else {
            if !value_column.is_empty() {
                return Err(format!(
                    "participant {} (node '{}'): value_column: the job lists its value columns \
                     in [[psi.columns]]; remove value_column, or remove [[psi.columns]] to sum \
                     that one column",
                    pair.receiver + 1,
                    spec.participants[pair.receiver].node
                ));
            }
            check_columns(psi)?
        };
        Ok(PsiSum {
            min_intersection: psi.min_intersection,
            sum_dp,
            count_dp,
            p1: pair.sender,
            p2: pair.receiver,
            columns,
            bound: pair.bound,
            profile: pair.profile,
        })
    }

    /// The job-wide decimal places: values are summed as integers of 10^-decimals.
    pub fn decimals(&self) -> u32 {
        self.columns.first().map_or(0, |c| c.bounds.decimals)
    }

    /// How job-file messages name column `i`'s table: `psi` for a one-column job (whose bounds
    /// are `psi.lower`/`psi.upper`), `psi.columns[i]` otherwise.
    pub fn column_field(&self, i: usize) -> String {
        if self.columns.len() == 1 {
            "psi".into()
        } else {
            format!("psi.columns[{i}]")
        }
    }

    /// The most one person moves the released count of matched identifiers. P2 sums each
    /// identifier's values and clamps the total, and keeps at most m records per person, so a
    /// P2 person changes at most m identifiers; a P1 person (k columns) at most k.
    pub fn count_sensitivity(&self) -> u64 {
        self.bound.identifier_sensitivity()
    }

    /// The most one person moves column `i`'s released sum, in units of 10^-decimals (0 for
    /// a column the job does not have).
    pub fn column_sensitivity_units(&self, i: usize) -> u64 {
        self.columns.get(i).map_or(0, |c| {
            self.count_sensitivity()
                .saturating_mul(c.bounds.sensitivity_units())
        })
    }

    /// The most one person moves the released sums together (L1 over the columns), in units
    /// of 10^-decimals; for one column, that column's sensitivity.
    pub fn sum_sensitivity_units(&self) -> u64 {
        (0..self.columns.len())
            .map(|i| self.column_sensitivity_units(i))
            .fold(0, u64::saturating_add)
    }

    /// The privacy loss of each column's noisy sum: `[psi.dp]` split evenly over the columns
    /// (see the module docs).
    pub fn column_dp(&self) -> Dp {
        let n = self.columns.len().max(1) as f64;
        Dp {
            epsilon: self.sum_dp.epsilon / n,
            mechanism: self.sum_dp.mechanism,
            delta: self.sum_dp.delta / n,
        }
    }

    /// Writes the canonical wire form: one column as the participant's value_column with
    /// psi.lower/upper, several as `columns`.
    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Psi as i32;
        let mut params = PsiParams {
            mode: PbPsiMode::Sum as i32,
            min_intersection: self.min_intersection,
            dp: Some(self.sum_dp.proto()),
            count_dp: Some(self.count_dp.proto()),
            decimals: self.decimals(),
            max_records_per_identifier: self.bound.max_records_per_identifier,
            profile: profile_name(self.profile),
            ..Default::default()
        };
        let mut value_column = String::new();
        match self.columns.as_slice() {
            [one] => {
                params.lower = one.bounds.lower;
                params.upper = one.bounds.upper;
                value_column = one.name.clone();
            }
            several => {
                params.columns = several
                    .iter()
                    .map(|c| PbSumColumn {
                        name: c.name.clone(),
                        lower: c.bounds.lower,
                        upper: c.bounds.upper,
                    })
                    .collect();
            }
        }
        spec.params = Some(params.into());
        set_roles(spec, self.p2, self.p1);
        if let Some(p) = spec.participants.get_mut(self.p2) {
            p.value_column = value_column;
        }
    }

    pub(crate) fn role(&self, index: usize) -> Role {
        if index == self.p2 {
            Role::SumP2
        } else {
            Role::SumP1
        }
    }

    pub(crate) fn data_columns(&self, index: usize) -> Vec<&str> {
        if index == self.p2 {
            self.columns.iter().map(|c| c.name.as_str()).collect()
        } else {
            Vec::new()
        }
    }

    /// The sum's ε and δ plus the count's, under the sum's mechanism label.
    pub(crate) fn release_cost(&self) -> Cost {
        Cost {
            epsilon: self.sum_dp.epsilon + self.count_dp.epsilon,
            delta: self.sum_dp.delta + self.count_dp.delta,
            mechanism: self.sum_dp.mechanism.label("psi_sum"),
        }
    }
}

/// Checks the `[[psi.columns]]` of a sum-mode job: 1 to [`MAX_SUM_COLUMNS`] named, distinct
/// columns, each with valid non-negative bounds, and no single-column `psi.lower`/`upper`.
fn check_columns(psi: &PsiParams) -> Result<Vec<SumColumn>, String> {
    if psi.lower != 0.0 || psi.upper != 0.0 {
        return Err(
            "psi.lower/upper: a job with [[psi.columns]] gives each column its own lower and \
             upper; remove psi.lower and psi.upper"
                .into(),
        );
    }
    if psi.columns.len() > MAX_SUM_COLUMNS {
        return Err(format!(
            "psi.columns: at most {MAX_SUM_COLUMNS} value columns per job, got {}; split the \
             columns over several jobs",
            psi.columns.len()
        ));
    }
    if psi.decimals > MAX_DECIMALS {
        return Err(format!(
            "psi.decimals: at most {MAX_DECIMALS} decimal places, got {}",
            psi.decimals
        ));
    }
    let mut seen = HashSet::new();
    psi.columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("psi.columns[{i}]");
            let name = c.name.as_str();
            if name.trim().is_empty()
                || name.len() > MAX_COLUMN_BYTES
                || name.chars().any(char::is_control)
            {
                return Err(format!(
                    "{field}.name: name the receiver's value column as in its dataset (1 to \
                     {MAX_COLUMN_BYTES} bytes, no control characters)"
                ));
            }
            if !seen.insert(name) {
                return Err(format!(
                    "{field}.name: '{}' is listed twice; sum each column once",
                    name.escape_debug()
                ));
            }
            let bounds = Bounds::check(c.lower, c.upper, psi.decimals, &field)?;
            if c.lower < 0.0 {
                return Err(format!(
                    "{field}.lower: sum mode sums non-negative values; set lower >= 0"
                ));
            }
            Ok(SumColumn {
                name: name.to_owned(),
                bounds,
            })
        })
        .collect()
}
