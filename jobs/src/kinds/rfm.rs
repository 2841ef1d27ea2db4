//! RFM segments over one node's transaction table: each person's Recency (days since their
//! last purchase), Frequency (purchases) and Monetary value (spend) over a declared period,
//! bucketed with edges declared in the job, and a DP count of persons per R × F × M cell (and
//! optionally a DP mean spend per cell).
//!
//! # Privacy
//! The unit is the person (the dataset's person column). Every person with a purchase in the
//! period falls in exactly one cell, so adding or removing a person changes the count vector
//! by 1 (L1 and L2): the counts' sensitivity is 1 whatever the number of rows a person has.
//! Each person's spend is clamped to `[0, max_monetary]` before it is summed, so the spend-sum
//! vector's sensitivity is `max_monetary` (in units of 10^-decimals). The mean spend of a
//! cell is the noisy sum over the noisy count (post-processing). The job's ε is
//! `epsilon + mean_epsilon` (basic composition), its δ (Gaussian) split evenly. The edges and
//! the period come from the job, never from the data, and empty cells are released too (as
//! noise), so which cells appear reveals nothing.

use parley_proto::job_spec::Params;
use parley_proto::{JobKind, JobSpec, PsiRole, RfmParams};

use crate::job::Cost;
use crate::limits::{MAX_COLUMN_BYTES, MAX_DECIMALS, MAX_RFM_CELLS};
use crate::params::{Bounds, Mechanism, check_delta, wrong_params};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// An RFM job.
#[derive(Debug, Clone, PartialEq)]
pub struct Rfm {
    /// The date column (kind date).
    pub date_column: String,
    /// The amount column (kind value).
    pub amount_column: String,
    /// First day of the period, as written (ISO 8601 date).
    pub period_start: String,
    /// Day after the period, as written.
    pub period_end: String,
    /// The period's start, ms since the epoch (UTC midnight).
    pub start_ms: i64,
    /// The period's end (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Upper edges of the recency buckets, days.
    pub recency_days: Vec<u32>,
    /// Upper edges of the frequency buckets, purchases.
    pub frequency: Vec<u32>,
    /// Upper edges of the monetary buckets.
    pub monetary: Vec<f64>,
    /// Per-person spend clamp (and the spend sums' sensitivity); lower bound 0.
    pub spend: Bounds,
    /// ε of the counts.
    pub epsilon: f64,
    /// ε of the spend sums (0 = no means).
    pub mean_epsilon: f64,
    /// Mechanism of every release.
    pub mechanism: Mechanism,
    /// Gaussian: the job's δ, split evenly between the releases.
    pub delta: f64,
    /// Cells whose noisy count is below this are suppressed (0 = off).
    pub min_count: u64,
}

/// An ISO 8601 date (`YYYY-MM-DD`) as ms since the epoch at UTC midnight.
pub(crate) fn parse_day(text: &str, field: &str) -> Result<i64, String> {
    let d = time::Date::parse(
        text.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("{field}: '{text}' is not an ISO 8601 date; write e.g. \"2026-11-30\""))?;
    Ok(d.midnight().assume_utc().unix_timestamp() * 1000)
}

/// Checks that `edges` are strictly increasing and, for integers, start at `min` or above.
fn check_edges<T: PartialOrd + Copy + std::fmt::Display>(
    edges: &[T],
    min: T,
    field: &str,
    example: &str,
) -> Result<(), String> {
    if edges.is_empty() {
        return Err(format!(
            "{field}: declare at least one bucket edge (e.g. {field} = {example})"
        ));
    }
    if edges[0] < min {
        return Err(format!(
            "{field}: edges start at {min} or above, got {}",
            edges[0]
        ));
    }
    if let Some(w) = edges.windows(2).find(|w| w[1] <= w[0]) {
        return Err(format!(
            "{field}: edges must be strictly increasing (each bucket's upper edge), but {} is \
             followed by {}",
            w[0], w[1]
        ));
    }
    Ok(())
}

impl Rfm {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<Rfm, String> {
        let p = match &spec.params {
            Some(Params::Rfm(p)) => p,
            other => {
                return Err(wrong_params(
                    "rfm",
                    other.as_ref(),
                    "rfm: an rfm job needs an [rfm] table with date_column, amount_column, the \
                     period and the bucket edges",
                ));
            }
        };
        if spec.participants.len() != 1 {
            return Err(format!(
                "participants: an rfm job runs on exactly one node's dataset, found {} \
                 participants; submit one job per dataset",
                spec.participants.len()
            ));
        }
        let q = &spec.participants[0];
        if q.psi_role() != PsiRole::Unspecified
            || !q.value_column.is_empty()
            || !q.columns.is_empty()
        {
            return Err(format!(
                "participant 1 (node '{}'): an rfm participant takes only node and dataset; \
                 name columns in [rfm]",
                q.node
            ));
        }
        for (name, field) in [
            (&p.date_column, "rfm.date_column"),
            (&p.amount_column, "rfm.amount_column"),
        ] {
            if name.trim().is_empty() || name.len() > MAX_COLUMN_BYTES {
                return Err(format!("{field}: name the dataset's column"));
            }
        }
        let start_ms = parse_day(&p.period_start, "rfm.period_start")?;
        let end_ms = parse_day(&p.period_end, "rfm.period_end")?;
        if end_ms <= start_ms {
            return Err(format!(
                "rfm.period_end: the period must end after it starts ({} is not after {})",
                p.period_end, p.period_start
            ));
        }
        check_edges(&p.recency_days, 0, "rfm.recency_days", "[30, 90, 180]")?;
        check_edges(&p.frequency, 1, "rfm.frequency", "[1, 2, 5]")?;
        if p.monetary.iter().any(|m| !m.is_finite()) {
            return Err("rfm.monetary: edges must be finite numbers".into());
        }
        check_edges(&p.monetary, 0.0, "rfm.monetary", "[50.0, 200.0, 1000.0]")?;
        let cells = (p.recency_days.len() + 1) * (p.frequency.len() + 1) * (p.monetary.len() + 1);
        if cells > MAX_RFM_CELLS {
            return Err(format!(
                "rfm: {} × {} × {} = {cells} cells is more than {MAX_RFM_CELLS}; declare fewer \
                 edges",
                p.recency_days.len() + 1,
                p.frequency.len() + 1,
                p.monetary.len() + 1
            ));
        }
        if p.decimals > MAX_DECIMALS {
            return Err(format!(
                "rfm.decimals: at most {MAX_DECIMALS} decimal places, got {}",
                p.decimals
            ));
        }
        let last = p.monetary.last().copied().unwrap_or(0.0);
        if !(p.max_monetary.is_finite() && p.max_monetary >= last && p.max_monetary > 0.0) {
            return Err(format!(
                "rfm.max_monetary: each person's spend is clamped to it, so it must be at least \
                 the last monetary edge ({last}), got {}",
                p.max_monetary
            ));
        }
        let spend = Bounds::check(0.0, p.max_monetary, p.decimals, "rfm")?;
        if !(p.epsilon.is_finite() && p.epsilon > 0.0) {
            return Err(format!(
                "rfm.epsilon: must be a positive number (e.g. 0.5), got {}",
                p.epsilon
            ));
        }
        if !(p.mean_epsilon.is_finite() && p.mean_epsilon >= 0.0) {
            return Err(format!(
                "rfm.mean_epsilon: must be 0 (no means) or a positive number, got {}",
                p.mean_epsilon
            ));
        }
        let mechanism = check_delta(p.mechanism, p.delta, "rfm.delta")?;
        Ok(Rfm {
            date_column: p.date_column.clone(),
            amount_column: p.amount_column.clone(),
            period_start: p.period_start.clone(),
            period_end: p.period_end.clone(),
            start_ms,
            end_ms,
            recency_days: p.recency_days.clone(),
            frequency: p.frequency.clone(),
            monetary: p.monetary.clone(),
            spend,
            epsilon: p.epsilon,
            mean_epsilon: p.mean_epsilon,
            mechanism,
            delta: p.delta,
            min_count: p.min_count,
        })
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Rfm as i32;
        spec.params = Some(self.proto().into());
    }

    /// The parameters in wire form.
    pub fn proto(&self) -> RfmParams {
        RfmParams {
            date_column: self.date_column.clone(),
            amount_column: self.amount_column.clone(),
            period_start: self.period_start.clone(),
            period_end: self.period_end.clone(),
            recency_days: self.recency_days.clone(),
            frequency: self.frequency.clone(),
            monetary: self.monetary.clone(),
            max_monetary: self.spend.upper,
            epsilon: self.epsilon,
            mean_epsilon: self.mean_epsilon,
            mechanism: self.mechanism.proto() as i32,
            delta: self.delta,
            min_count: self.min_count,
            decimals: self.spend.decimals,
        }
    }

    /// The date column, then the amount column.
    pub(crate) fn data_columns(&self) -> Vec<&str> {
        vec![self.date_column.as_str(), self.amount_column.as_str()]
    }

    /// True when the job releases a mean spend per cell.
    pub fn with_means(&self) -> bool {
        self.mean_epsilon > 0.0
    }

    /// The number of releases the job's δ is split between.
    pub fn releases(&self) -> u32 {
        1 + u32::from(self.with_means())
    }

    /// The job's ε (counts plus spend sums) and δ.
    pub fn release_cost(&self) -> Cost {
        Cost {
            epsilon: self.epsilon + self.mean_epsilon,
            delta: self.delta,
            mechanism: self.mechanism.label("rfm"),
        }
    }

    /// Number of cells: (|R| + 1) × (|F| + 1) × (|M| + 1).
    pub fn cells(&self) -> usize {
        (self.recency_days.len() + 1) * (self.frequency.len() + 1) * (self.monetary.len() + 1)
    }

    /// The cell index (recency-major) of a person last seen `days` before the period's end,
    /// with `purchases` purchases and `spend` spent.
    pub fn cell(&self, days: u32, purchases: u32, spend: f64) -> usize {
        let r = self
            .recency_days
            .iter()
            .position(|e| days <= *e)
            .unwrap_or(self.recency_days.len());
        let f = self
            .frequency
            .iter()
            .position(|e| purchases <= *e)
            .unwrap_or(self.frequency.len());
        let m = self
            .monetary
            .iter()
            .position(|e| spend <= *e)
            .unwrap_or(self.monetary.len());
        (r * (self.frequency.len() + 1) + f) * (self.monetary.len() + 1) + m
    }

    /// The (recency, frequency, monetary) bucket indices of cell `i`.
    pub fn coordinates(&self, i: usize) -> (usize, usize, usize) {
        let (nf, nm) = (self.frequency.len() + 1, self.monetary.len() + 1);
        (i / (nf * nm), (i / nm) % nf, i % nm)
    }

    /// Bucket labels: recency (`0-30`, `31-90`, `181+`), frequency (`1`, `3-5`, `6+`),
    /// monetary (`≤50`, `50-200`, `>1000`).
    pub fn labels(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        fn ints(edges: &[u32], first: u32) -> Vec<String> {
            let mut out = Vec::with_capacity(edges.len() + 1);
            let mut lo = first;
            for e in edges {
                out.push(if lo == *e {
                    format!("{e}")
                } else {
                    format!("{lo}-{e}")
                });
                lo = e + 1;
            }
            out.push(format!("{lo}+"));
            out
        }
        let mut m = Vec::with_capacity(self.monetary.len() + 1);
        let mut lo: Option<f64> = None;
        for e in &self.monetary {
            m.push(match lo {
                None => format!("≤{e}"),
                Some(l) => format!("{l}-{e}"),
            });
            lo = Some(*e);
        }
        m.push(format!(">{}", lo.unwrap_or(0.0)));
        (ints(&self.recency_days, 0), ints(&self.frequency, 1), m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Kind;

    const EXAMPLE: &str = include_str!("../../examples/job-rfm.toml");

    fn rfm(edit: impl FnOnce(&mut String)) -> Result<Rfm, String> {
        let mut text = EXAMPLE.to_string();
        edit(&mut text);
        match crate::parse_job(&text, "job-rfm.toml") {
            Ok(job) => match job.kind {
                Kind::Rfm(k) => Ok(k),
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn cells_and_labels_follow_the_edges() {
        let k = rfm(|_| {}).unwrap();
        assert_eq!(k.cells(), 4 * 4 * 4);
        let (r, f, m) = k.labels();
        assert_eq!(r, ["0-30", "31-90", "91-180", "181+"]);
        assert_eq!(f, ["1", "2", "3-5", "6+"]);
        assert_eq!(m, ["≤50", "50-200", "200-1000", ">1000"]);
        // Last seen 0 days ago, 1 purchase, 50 spent: the first cell; edges are inclusive.
        assert_eq!(k.cell(0, 1, 50.0), 0);
        assert_eq!(k.coordinates(k.cell(31, 6, 50.01)), (1, 3, 1));
        assert_eq!(k.coordinates(k.cell(365, 4, 5000.0)), (3, 2, 3));
        for i in 0..k.cells() {
            let (r, f, m) = k.coordinates(i);
            assert_eq!((r * 4 + f) * 4 + m, i);
        }
        assert_eq!(k.release_cost().epsilon, 1.0);
        assert_eq!(k.end_ms - k.start_ms, 365 * DAY_MS);
    }

    #[test]
    fn bad_edges_and_periods_are_refused_at_submit() {
        let e = rfm(|t| *t = t.replace("[30, 90, 180]", "[90, 30, 180]")).unwrap_err();
        assert!(
            e.contains("strictly increasing") && e.contains("rfm.recency_days"),
            "{e}"
        );
        let e = rfm(|t| *t = t.replace("[1, 2, 5]", "[1, 1, 5]")).unwrap_err();
        assert!(e.contains("rfm.frequency"), "{e}");
        let e = rfm(|t| *t = t.replace("[1, 2, 5]", "[0, 2, 5]")).unwrap_err();
        assert!(e.contains("start at 1"), "{e}");
        let e = rfm(|t| *t = t.replace("[1, 2, 5]", "[]")).unwrap_err();
        assert!(e.contains("at least one bucket edge"), "{e}");
        let many: Vec<String> = (1..=70).map(|i| (i * 10).to_string()).collect();
        let e = rfm(|t| *t = t.replace("[30, 90, 180]", &format!("[{}]", many.join(", "))))
            .unwrap_err();
        assert!(e.contains("cells is more than 1000"), "{e}");
        let e = rfm(|t| *t = t.replace("\"2026-12-01\"", "\"2025-01-01\"")).unwrap_err();
        assert!(e.contains("must end after it starts"), "{e}");
        let e = rfm(|t| *t = t.replace("\"2026-12-01\"", "\"01/12/2026\"")).unwrap_err();
        assert!(e.contains("not an ISO 8601 date"), "{e}");
        let e =
            rfm(|t| *t = t.replace("max_monetary = 5000.0", "max_monetary = 500.0")).unwrap_err();
        assert!(e.contains("at least the last monetary edge"), "{e}");
    }

    #[test]
    fn the_wire_form_round_trips() {
        let k = rfm(|_| {}).unwrap();
        let job = crate::parse_job(EXAMPLE, "job-rfm.toml").unwrap();
        let back = crate::Job::try_from(&JobSpec::from(&job)).unwrap();
        assert_eq!(back.kind, Kind::Rfm(k));
    }
}
