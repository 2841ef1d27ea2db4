//! PSI intersection-sum (conversion measurement): P1 holds identifiers, P2 identifiers with a
//! value column (`parley_crypto::grouped` with one group and one value column).
//!
//! P1 (job-file role `sender`) adds up P2's encrypted, clamped values over the intersection,
//! adds DP noise inside the ciphertext and returns it with a noisy count; P2 (role
//! `receiver`) decrypts the noisy sum and releases it. P2 never sees the un-noised sum; P1
//! never sees a value. Both datasets pay the sum's and the count's ε (the release is about
//! both). The shared `[psi]` checks are [`crate::kinds::psi::check_pair`].

use parley_crypto::normalize::Profile;
use parley_proto::{JobKind, JobSpec, PsiMode as PbPsiMode, PsiParams};

use crate::job::{Cost, Role};
use crate::kinds::psi::{Contribution, check_pair, profile_name, set_roles};
use crate::params::{Bounds, Dp};

/// An intersection-sum job.
#[derive(Debug, Clone, PartialEq)]
pub struct PsiSum {
    /// Fewer intersecting identifiers than this suppress the result (0 = off).
    pub min_intersection: u64,
    /// Noise on the sum.
    pub sum_dp: Dp,
    /// Noise on the released count.
    pub count_dp: Dp,
    /// P2's values are clamped to these bounds (lower >= 0) and summed in units of
    /// 10^-decimals.
    pub bounds: Bounds,
    /// Index of P1 (identifiers only) among the participants.
    pub p1: usize,
    /// Index of P2 (identifiers and values) among the participants.
    pub p2: usize,
    /// P2's value column.
    pub value_column: String,
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
        Ok(PsiSum {
            min_intersection: psi.min_intersection,
            sum_dp,
            count_dp,
            bounds: Bounds::check(psi.lower, psi.upper, psi.decimals, "psi")?,
            p1: pair.sender,
            p2: pair.receiver,
            value_column: spec.participants[pair.receiver].value_column.clone(),
            bound: pair.bound,
            profile: pair.profile,
        })
    }

    /// The most one person moves the released count of matched identifiers. P2 sums each
    /// identifier's values and clamps the total, and keeps at most m records per person, so a
    /// P2 person changes at most m identifiers; a P1 person (k columns) at most k.
    pub fn count_sensitivity(&self) -> u64 {
        self.bound.identifier_sensitivity()
    }

    /// The most one person moves the released sum, in units of 10^-decimals.
    pub fn sum_sensitivity_units(&self) -> u64 {
        self.count_sensitivity()
            .saturating_mul(self.bounds.sensitivity_units())
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Psi as i32;
        spec.params = Some(
            PsiParams {
                mode: PbPsiMode::Sum as i32,
                min_intersection: self.min_intersection,
                dp: Some(self.sum_dp.proto()),
                count_dp: Some(self.count_dp.proto()),
                lower: self.bounds.lower,
                upper: self.bounds.upper,
                decimals: self.bounds.decimals,
                max_records_per_identifier: self.bound.max_records_per_identifier,
                profile: profile_name(self.profile),
            }
            .into(),
        );
        set_roles(spec, self.p2, self.p1);
        if let Some(p) = spec.participants.get_mut(self.p2) {
            p.value_column = self.value_column.clone();
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
            vec![self.value_column.as_str()]
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
