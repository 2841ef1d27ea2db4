//! DP statistics over one node's dataset: counts, clamped sums and means per declared segment
//! category, each noised by an OpenDP measurement at the node before it leaves.
//!
//! The categories are declared in the job, never read from the data. The job's ε is the sum
//! of its measures' (basic composition; a mean splits its own ε between a noisy sum and a
//! noisy count), its δ (Gaussian) is split evenly across them. The one participant computes
//! the release, charges its ledger, and sends the result to the coordinator.
//!
//! The privacy unit is the person (the dataset's person column): at most
//! `max_rows_per_person` (L) rows of each person are used, so one person moves a count vector
//! by at most L and a sum vector by at most L · max(|lower|, |upper|), in L1 and in L2; those
//! are the sensitivities ([`DpStats::count_sensitivity`], [`DpStats::sum_sensitivity_units`]).

use parley_proto::job_spec::Params;
use parley_proto::{
    DpStatsParams, JobKind, JobSpec, Measure as PbMeasure, MeasureKind as PbMeasureKind, PsiRole,
};

use crate::job::Cost;
use crate::limits::{
    MAX_CATEGORIES, MAX_COLUMN_BYTES, MAX_DECIMALS, MAX_MEASURES, MAX_ROWS_PER_PERSON,
};
use crate::params::{Bounds, Categories, Mechanism, check_column, check_delta, wrong_params};

/// A DP-statistics job.
#[derive(Debug, Clone, PartialEq)]
pub struct DpStats {
    /// Segment column the rows are grouped by.
    pub segment_column: String,
    /// The declared categories.
    pub categories: Categories,
    /// The measures, in job order; at least one.
    pub measures: Vec<Measure>,
    /// Mechanism of every measure.
    pub mechanism: Mechanism,
    /// Gaussian: the job's δ, split evenly across the measures (0 for Laplace).
    pub delta: f64,
    /// Categories whose noisy count is below this are suppressed (0 = off).
    pub min_count: u64,
    /// Decimal places kept for sums.
    pub decimals: u32,
    /// At most this many rows of each person are used (the contribution bound, >= 1).
    pub max_rows_per_person: u32,
}

/// One measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    /// What it computes.
    pub what: MeasureKind,
    /// Its share of the job's ε.
    pub epsilon: f64,
}

/// What a measure computes per category.
#[derive(Debug, Clone, PartialEq)]
pub enum MeasureKind {
    /// Number of rows.
    Count,
    /// Sum of a value column, each value clamped.
    Sum {
        /// The value column.
        column: String,
        /// Clamping bounds (decimals from the job).
        bounds: Bounds,
    },
    /// Mean of a value column (clamped), as noisy sum / noisy count.
    Mean {
        /// The value column.
        column: String,
        /// Clamping bounds (decimals from the job).
        bounds: Bounds,
    },
}

impl Measure {
    /// To the wire.
    pub fn proto(&self) -> PbMeasure {
        let (kind, column, lower, upper) = match &self.what {
            MeasureKind::Count => (PbMeasureKind::Count, String::new(), 0.0, 0.0),
            MeasureKind::Sum { column, bounds } => (
                PbMeasureKind::Sum,
                column.clone(),
                bounds.lower,
                bounds.upper,
            ),
            MeasureKind::Mean { column, bounds } => (
                PbMeasureKind::Mean,
                column.clone(),
                bounds.lower,
                bounds.upper,
            ),
        };
        PbMeasure {
            kind: kind as i32,
            column,
            lower,
            upper,
            epsilon: self.epsilon,
        }
    }
}

impl DpStats {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<DpStats, String> {
        let d = match &spec.params {
            Some(Params::DpStats(d)) => d,
            other => {
                return Err(wrong_params(
                    "dp_stats",
                    other.as_ref(),
                    "dp_stats: a dp_stats job needs a [dp_stats] table with segment_column, \
                     categories and at least one [[dp_stats.measures]]",
                ));
            }
        };
        if spec.participants.len() != 1 {
            return Err(format!(
                "participants: a dp_stats job runs on exactly one node's dataset, found {} \
                 participants; submit one job per dataset",
                spec.participants.len()
            ));
        }
        let p = &spec.participants[0];
        if p.psi_role() != PsiRole::Unspecified
            || !p.value_column.is_empty()
            || !p.columns.is_empty()
        {
            return Err(format!(
                "participant 1 (node '{}'): a dp_stats participant takes only node and \
                 dataset; name columns in [dp_stats]",
                p.node
            ));
        }
        check_column(&d.segment_column, "dp_stats.segment_column")?;
        let categories = Categories::check(&d.categories, d.other, "dp_stats", MAX_CATEGORIES)?;
        if d.measures.is_empty() || d.measures.len() > MAX_MEASURES {
            return Err(format!(
                "dp_stats.measures: declare between 1 and {MAX_MEASURES} \
                 [[dp_stats.measures]], got {}",
                d.measures.len()
            ));
        }
        let mechanism = check_delta(d.mechanism, d.delta, "dp_stats.delta")?;
        if d.decimals > MAX_DECIMALS {
            return Err(format!(
                "dp_stats.decimals: at most {MAX_DECIMALS} decimal places, got {}",
                d.decimals
            ));
        }
        let mut has_count = false;
        let mut measures = Vec::with_capacity(d.measures.len());
        for (i, m) in d.measures.iter().enumerate() {
            let field = format!("dp_stats.measures[{i}]");
            if !(m.epsilon.is_finite() && m.epsilon > 0.0) {
                return Err(format!(
                    "{field}.epsilon: must be a positive number (e.g. 0.25), got {}",
                    m.epsilon
                ));
            }
            let what = match PbMeasureKind::try_from(m.kind) {
                Ok(PbMeasureKind::Count) => {
                    has_count = true;
                    if !m.column.is_empty() || m.lower != 0.0 || m.upper != 0.0 {
                        return Err(format!(
                            "{field}: a count takes no column or bounds (it counts rows)"
                        ));
                    }
                    MeasureKind::Count
                }
                Ok(kind @ (PbMeasureKind::Sum | PbMeasureKind::Mean)) => {
                    if m.column.trim().is_empty() || m.column.len() > MAX_COLUMN_BYTES {
                        return Err(format!(
                            "{field}.column: a sum or mean needs its value column"
                        ));
                    }
                    let bounds = Bounds::check(m.lower, m.upper, d.decimals, &field)?;
                    let column = m.column.clone();
                    if kind == PbMeasureKind::Mean {
                        has_count = true;
                        MeasureKind::Mean { column, bounds }
                    } else {
                        MeasureKind::Sum { column, bounds }
                    }
                }
                Ok(PbMeasureKind::Unspecified) | Err(_) => {
                    return Err(format!(
                        "{field}.kind: set kind = \"count\", \"sum\" or \"mean\""
                    ));
                }
            };
            measures.push(Measure {
                what,
                epsilon: m.epsilon,
            });
        }
        if d.min_count > 0 && !has_count {
            return Err(
                "dp_stats.min_count: suppression uses the noisy count; add a count (or \
                 mean) measure or remove min_count"
                    .into(),
            );
        }
        if d.max_rows_per_person > MAX_ROWS_PER_PERSON {
            return Err(format!(
                "dp_stats.max_rows_per_person: at most {MAX_ROWS_PER_PERSON}, got {}; the \
                 noise grows with it",
                d.max_rows_per_person
            ));
        }
        Ok(DpStats {
            max_rows_per_person: d.max_rows_per_person.max(1),
            segment_column: d.segment_column.clone(),
            categories,
            measures,
            mechanism,
            delta: d.delta,
            min_count: d.min_count,
            decimals: d.decimals,
        })
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::DpStats as i32;
        spec.params = Some(self.proto().into());
    }

    /// The parameters in wire form.
    pub fn proto(&self) -> DpStatsParams {
        DpStatsParams {
            segment_column: self.segment_column.clone(),
            categories: self.categories.names.clone(),
            other: self.categories.other.proto() as i32,
            measures: self.measures.iter().map(Measure::proto).collect(),
            mechanism: self.mechanism.proto() as i32,
            delta: self.delta,
            min_count: self.min_count,
            decimals: self.decimals,
            max_rows_per_person: self.max_rows_per_person,
        }
    }

    /// The most one person moves a count vector (L1 and L2): its rows used.
    pub fn count_sensitivity(&self) -> u64 {
        u64::from(self.max_rows_per_person.max(1))
    }

    /// The most one person moves a sum vector with `bounds`, in units of 10^-decimals.
    pub fn sum_sensitivity_units(&self, bounds: &Bounds) -> u64 {
        self.count_sensitivity()
            .saturating_mul(bounds.sensitivity_units())
    }

    /// The segment column, then each measure's value column, each once.
    pub(crate) fn data_columns(&self) -> Vec<&str> {
        let mut out = vec![self.segment_column.as_str()];
        for m in &self.measures {
            if let MeasureKind::Sum { column, .. } | MeasureKind::Mean { column, .. } = &m.what
                && !out.contains(&column.as_str())
            {
                out.push(column);
            }
        }
        out
    }

    /// The job's ε: the sum of its measures' (basic composition); its δ.
    pub fn release_cost(&self) -> Cost {
        Cost {
            epsilon: self.measures.iter().map(|m| m.epsilon).sum(),
            delta: self.delta,
            mechanism: self.mechanism.label("dp_stats"),
        }
    }
}
