//! Parameters shared by several kinds: participants, DP parameters, clamping bounds and
//! declared categories — their typed forms and the checks that produce them.
//!
//! Every check returns a reason that starts with the job-file field at fault
//! (`psi.dp.epsilon: ...`) and says how to fix it.

use std::collections::HashSet;

use parley_proto::job_spec::Params;
use parley_proto::{DpMechanism, DpParams, JobKind, OtherRows, Participant as PbParticipant};

use crate::limits::{
    MAX_BOUND_UNITS, MAX_COLUMN_BYTES, MAX_COLUMNS, MAX_DECIMALS, MAX_NAME_BYTES, OTHER_CATEGORY,
};

/// An OpenDP mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Discrete Laplace: pure ε-DP.
    Laplace,
    /// Discrete Gaussian: zCDP converted to (ε, δ).
    Gaussian,
}

impl Mechanism {
    /// From the wire; `field` names the setting in errors.
    pub(crate) fn from_proto(m: i32, field: &str) -> Result<Mechanism, String> {
        match DpMechanism::try_from(m) {
            Ok(DpMechanism::Laplace) => Ok(Mechanism::Laplace),
            Ok(DpMechanism::Gaussian) => Ok(Mechanism::Gaussian),
            Err(_) => Err(format!("{field}: unknown mechanism number {m}")),
        }
    }

    /// To the wire.
    pub fn proto(self) -> DpMechanism {
        match self {
            Mechanism::Laplace => DpMechanism::Laplace,
            Mechanism::Gaussian => DpMechanism::Gaussian,
        }
    }

    /// The name used in ledger labels and results: `laplace` or `gaussian`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Laplace => "laplace",
            Mechanism::Gaussian => "gaussian",
        }
    }

    /// A ledger mechanism label, e.g. `psi_sum/laplace`.
    pub fn label(self, what: &str) -> String {
        format!("{what}/{}", self.name())
    }

    /// The OpenDP sampler that implements it.
    pub fn opendp(self) -> parley_crypto::dp::Mechanism {
        match self {
            Mechanism::Laplace => parley_crypto::dp::Mechanism::Laplace,
            Mechanism::Gaussian => parley_crypto::dp::Mechanism::Gaussian,
        }
    }
}

/// DP parameters of one release, checked: ε > 0 and finite; δ = 0 for Laplace, 0 < δ < 1 for
/// Gaussian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dp {
    /// Privacy-loss budget of the release.
    pub epsilon: f64,
    /// Mechanism.
    pub mechanism: Mechanism,
    /// δ of the (ε, δ) guarantee (0 for Laplace).
    pub delta: f64,
}

impl Dp {
    /// Checks wire DP parameters; `field` names the table in job-file terms.
    pub(crate) fn from_proto(dp: &DpParams, field: &str) -> Result<Dp, String> {
        if !(dp.epsilon.is_finite() && dp.epsilon > 0.0) {
            return Err(format!(
                "{field}.epsilon: must be a positive number (e.g. 0.5), got {}",
                dp.epsilon
            ));
        }
        let mechanism = check_delta(dp.mechanism, dp.delta, &format!("{field}.delta"))?;
        Ok(Dp {
            epsilon: dp.epsilon,
            mechanism,
            delta: dp.delta,
        })
    }

    /// To the wire.
    pub fn proto(&self) -> DpParams {
        DpParams {
            epsilon: self.epsilon,
            mechanism: self.mechanism.proto() as i32,
            delta: self.delta,
        }
    }
}

/// Checks δ against the mechanism and returns the mechanism.
pub(crate) fn check_delta(mechanism: i32, delta: f64, field: &str) -> Result<Mechanism, String> {
    let m = Mechanism::from_proto(mechanism, field)?;
    match m {
        Mechanism::Laplace => {
            if delta != 0.0 {
                return Err(format!(
                    "{field}: the laplace mechanism is pure epsilon-DP and takes no delta; \
                     remove delta or use mechanism = \"gaussian\""
                ));
            }
        }
        Mechanism::Gaussian => {
            if !(delta > 0.0 && delta < 1.0) {
                return Err(format!(
                    "{field}: the gaussian mechanism needs 0 < delta < 1 (e.g. 1e-6), got {delta}"
                ));
            }
        }
    }
    Ok(m)
}

/// Clamping bounds of a value column, checked: finite, lower <= upper, |bound| × 10^decimals
/// below 2^40, at least one unit wide when lower = 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Lower clamping bound.
    pub lower: f64,
    /// Upper clamping bound.
    pub upper: f64,
    /// Decimal places kept: values are summed as integers of 10^-decimals.
    pub decimals: u32,
}

impl Bounds {
    /// Checks bounds and decimals; `field` names the table.
    pub(crate) fn check(
        lower: f64,
        upper: f64,
        decimals: u32,
        field: &str,
    ) -> Result<Bounds, String> {
        if decimals > MAX_DECIMALS {
            return Err(format!(
                "{field}.decimals: at most {MAX_DECIMALS} decimal places, got {decimals}"
            ));
        }
        if !(lower.is_finite() && upper.is_finite()) || lower > upper {
            return Err(format!(
                "{field}: clamping bounds need lower <= upper, both finite (got lower = {lower}, \
                 upper = {upper})"
            ));
        }
        let scale = 10f64.powi(decimals as i32);
        if lower.abs() * scale > MAX_BOUND_UNITS || upper.abs() * scale > MAX_BOUND_UNITS {
            return Err(format!(
                "{field}: |bound| x 10^decimals must stay below 2^40; lower the bounds or decimals"
            ));
        }
        if upper * scale < 1.0 && lower == 0.0 {
            return Err(format!(
                "{field}.upper: must be at least one unit of 10^-{decimals}, so that sums carry \
                 information"
            ));
        }
        Ok(Bounds {
            lower,
            upper,
            decimals,
        })
    }

    /// The L1 sensitivity of a clamped sum, in integer units of 10^-decimals: the most one
    /// contribution can move it.
    pub fn sensitivity_units(&self) -> u64 {
        parley_crypto::dp::clamped_sum_sensitivity(self.lower, self.upper, self.decimals)
    }

    /// `v` clamped to the bounds, in integer units of 10^-decimals (rounded to nearest). The
    /// check above keeps every result within ±2^40, so it cannot overflow.
    pub fn units(&self, v: f64) -> i64 {
        let scale = 10f64.powi(self.decimals as i32);
        (v.clamp(self.lower, self.upper) * scale).round() as i64
    }
}

/// What happens to rows outside the declared categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Other {
    /// Left out.
    Drop,
    /// Counted in a bucket named [`OTHER_CATEGORY`].
    Bucket,
}

impl Other {
    /// To the wire.
    pub fn proto(self) -> OtherRows {
        match self {
            Other::Drop => OtherRows::Drop,
            Other::Bucket => OtherRows::Bucket,
        }
    }
}

/// Declared categories of a segment column, checked: 1..=max distinct printable names, none
/// called [`OTHER_CATEGORY`] when rows outside them are bucketed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Categories {
    /// The categories, in declared order.
    pub names: Vec<String>,
    /// Rows outside them.
    pub other: Other,
}

impl Categories {
    /// Checks declared categories; `field` names the table.
    pub(crate) fn check(
        categories: &[String],
        other: i32,
        field: &str,
        max: usize,
    ) -> Result<Categories, String> {
        if categories.is_empty() || categories.len() > max {
            return Err(format!(
                "{field}.categories: declare between 1 and {max} categories, got {}",
                categories.len()
            ));
        }
        let mut seen = HashSet::new();
        for c in categories {
            if c.is_empty() || c.len() > MAX_COLUMN_BYTES || c.chars().any(char::is_control) {
                return Err(format!(
                    "{field}.categories: '{}' is not a valid category name (1 to \
                     {MAX_COLUMN_BYTES} printable bytes)",
                    c.escape_debug()
                ));
            }
            if !seen.insert(c.as_str()) {
                return Err(format!("{field}.categories: '{c}' is listed twice"));
            }
        }
        let other = match OtherRows::try_from(other) {
            Ok(OtherRows::Bucket) if seen.contains(OTHER_CATEGORY) => {
                return Err(format!(
                    "{field}.categories: '{OTHER_CATEGORY}' is the name of the bucket for rows \
                     outside the categories; rename the category or set other = \"drop\""
                ));
            }
            Ok(OtherRows::Bucket) => Other::Bucket,
            Ok(OtherRows::Drop) => Other::Drop,
            Err(_) => return Err(format!("{field}.other: unknown value number {other}")),
        };
        Ok(Categories {
            names: categories.to_vec(),
            other,
        })
    }

    /// True when rows outside the categories are counted as [`OTHER_CATEGORY`].
    pub fn bucket(&self) -> bool {
        self.other == Other::Bucket
    }

    /// The released categories: the declared ones in order, then [`OTHER_CATEGORY`] when
    /// bucketed.
    pub fn output(&self) -> Vec<String> {
        let mut out = self.names.clone();
        if self.bucket() {
            out.push(OTHER_CATEGORY.to_owned());
        }
        out
    }

    /// How many categories are released ([`Categories::output`]'s length).
    pub fn output_len(&self) -> usize {
        self.names.len() + usize::from(self.bucket())
    }
}

/// Checks a segment column name; `field` names the setting.
pub(crate) fn check_column(name: &str, field: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_COLUMN_BYTES {
        return Err(format!("{field}: name the segment column to group by"));
    }
    Ok(())
}

/// A segment label as declared in a job: trimmed, 1 to `MAX_NAME_BYTES` bytes.
pub(crate) fn check_label(label: &str, field: &str) -> Result<String, String> {
    let l = label.trim();
    if l.is_empty() || l.len() > crate::limits::MAX_NAME_BYTES {
        return Err(format!(
            "{field}: a label of 1 to {} bytes, as it appears in the segment column",
            crate::limits::MAX_NAME_BYTES
        ));
    }
    Ok(l.to_owned())
}

/// An optional segment breakdown: `column` (empty = none) with its 1 to `max` distinct labels,
/// declared up front so that the cells come from the job, never from the data. `column_field`
/// and `labels_field` name the settings in errors.
pub(crate) fn declared_labels(
    column: &str,
    labels: &[String],
    max: usize,
    column_field: &str,
    labels_field: &str,
) -> Result<Option<(String, Vec<String>)>, String> {
    if column.trim().is_empty() {
        if !labels.is_empty() {
            return Err(format!(
                "{labels_field}: labels need the column that holds them; set {column_field}"
            ));
        }
        return Ok(None);
    }
    check_column(column, column_field)?;
    if labels.is_empty() || labels.len() > max {
        return Err(format!(
            "{labels_field}: declare the 1 to {max} labels of column '{column}' (e.g. \
             [\"north\", \"south\"]); the cells come from the job, never from the data"
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(labels.len());
    for l in labels {
        let l = check_label(l, labels_field)?;
        if out.contains(&l) {
            return Err(format!("{labels_field}: '{l}' is declared twice"));
        }
        out.push(l);
    }
    Ok(Some((column.to_owned(), out)))
}

/// The kind whose parameters `p` are.
pub(crate) fn params_kind(p: &Params) -> JobKind {
    match p {
        Params::Psi(_) => JobKind::Psi,
        Params::DpStats(_) => JobKind::DpStats,
        Params::SecureSum(_) => JobKind::SecureSum,
        Params::Rfm(_) => JobKind::Rfm,
        Params::Lift(_) => JobKind::Lift,
        Params::Overlap(_) => JobKind::Overlap,
    }
}

/// A wire kind's name in job files: its `kind = "…"` value and its parameter table (`psi`,
/// `dp_stats`, `secure_sum`).
pub(crate) fn table_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Psi => "psi",
        JobKind::DpStats => "dp_stats",
        JobKind::SecureSum => "secure_sum",
        JobKind::Rfm => "rfm",
        JobKind::Lift => "lift",
        JobKind::Overlap => "overlap",
        JobKind::Unspecified => "unspecified",
    }
}

/// The error for a `kind` job whose spec carries no parameters (`missing`) or another kind's.
pub(crate) fn wrong_params(kind: &str, found: Option<&Params>, missing: &str) -> String {
    match found {
        Some(p) => {
            let t = table_name(params_kind(p));
            let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            format!(
                "{t}: {a} {kind} job takes no [{t}] table; remove it, or set kind = \"{t}\" to                  run a {t} job"
            )
        }
        None => missing.to_string(),
    }
}

/// Checks names and columns of participant number `i` (0-based).
pub(crate) fn check_participant(i: usize, p: &PbParticipant) -> Result<(), String> {
    let n = i + 1;
    check_name(&p.node).map_err(|e| format!("participant {n}: node {e}"))?;
    check_name(&p.dataset)
        .map_err(|e| format!("participant {n} (node '{}'): dataset {e}", p.node))?;
    if p.columns.len() > MAX_COLUMNS {
        return Err(format!(
            "participant {n} (node '{}'): {} columns is too many; name at most {MAX_COLUMNS}",
            p.node,
            p.columns.len()
        ));
    }
    let mut seen = HashSet::new();
    for column in &p.columns {
        let bad = if column.trim().is_empty() {
            Some("an empty column name")
        } else if column.len() > MAX_COLUMN_BYTES {
            Some("a column name longer than 128 bytes")
        } else if column.chars().any(char::is_control) {
            Some("a column name with control characters")
        } else {
            None
        };
        if let Some(bad) = bad {
            return Err(format!(
                "participant {n} (node '{}'): columns: {bad}; name each identifier column as \
                 in the dataset's CSV header, or leave columns out to use all of them",
                p.node
            ));
        }
        if !seen.insert(column.as_str()) {
            return Err(format!(
                "participant {n} (node '{}'): columns: '{column}' is listed twice",
                p.node
            ));
        }
    }
    Ok(())
}

/// Checks a node or dataset name: `[a-z0-9_-]{1,64}`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty; set it to the name the node uses".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "name '{}…' is too long; names have at most {MAX_NAME_BYTES} characters",
            name.chars().take(16).collect::<String>()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "name '{}' has characters other than a-z, 0-9, '_' and '-'",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_clamp_and_round_to_units() {
        let b = Bounds::check(0.0, 100.0, 2, "t").unwrap();
        assert_eq!(b.units(12.345), 1235);
        assert_eq!(b.units(1e9), 10_000);
        assert_eq!(b.units(-5.0), 0);
        assert_eq!(b.sensitivity_units(), 10_000);
        let b = Bounds::check(-7.5, 2.0, 0, "t").unwrap();
        assert_eq!(b.units(-7.5), -8);
        assert_eq!(b.units(1.4), 1);
        assert_eq!(b.sensitivity_units(), 8);
    }

    #[test]
    fn mechanisms_map_to_their_samplers_and_labels() {
        assert_eq!(
            Mechanism::Laplace.opendp(),
            parley_crypto::dp::Mechanism::Laplace
        );
        assert_eq!(
            Mechanism::Gaussian.opendp(),
            parley_crypto::dp::Mechanism::Gaussian
        );
        assert_eq!(Mechanism::Gaussian.label("dp_stats"), "dp_stats/gaussian");
    }
}
