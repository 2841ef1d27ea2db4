//! Analyst job files (TOML).
//!
//! An analyst describes a job in a small TOML file and submits it with `parleyctl submit`.
//! [`parse_job_toml`] turns the text into a [`JobSpec`] and checks it with [`validate_spec`]
//! ([`Job::try_from`]), the same check the coordinator applies to every submitted spec (the
//! coordinator must not trust the CLI to have run it); [`parse_job`] returns the typed
//! [`Job`]. Unknown fields are rejected, so a typo never silently changes
//! a job.
//!
//! ```toml
//! label = "brand x publisher overlap"
//! kind = "psi"                       # psi | dp_stats | secure_sum | rfm | lift | overlap
//! [psi]
//! mode = "match"                     # match | cardinality
//! min_intersection = 100             # optional, default 0 (off)
//! profile = "google"                 # optional: the identifier normalisation profile both
//!                                    # nodes must use (google | meta | uid2 | basic);
//!                                    # default google
//! [[participants]]
//! node = "brand"
//! dataset = "crm"
//! role = "receiver"                  # receiver | sender
//! columns = ["email", "phone"]       # optional: identifier columns; default all
//! [[participants]]
//! node = "publisher"
//! dataset = "subscribers"
//! role = "sender"
//! ```
//!
//! Intersection-sum (conversion measurement) and DP options:
//!
//! ```toml
//! kind = "psi"
//! [psi]
//! mode = "sum"                       # the receiver's values over the intersection
//! lower = 0.0                        # clamping bounds of the receiver's values
//! upper = 500.0
//! decimals = 2                       # summed in cents; default 2
//! max_records_per_identifier = 1     # DP jobs: the contribution bound (default 1): the
//!                                    # receiver keeps at most this many records per
//!                                    # identifier and per person; noise scales with it
//! [psi.dp]                           # noise on the sum (required in sum mode; optional in
//! epsilon = 0.5                      # match/cardinality, where it noises the count)
//! mechanism = "laplace"              # laplace (default) | gaussian (then set delta)
//! [psi.count_dp]                     # sum mode: noise on the released count (required)
//! epsilon = 0.5
//! [[participants]]
//! node = "brand"
//! dataset = "purchases"
//! role = "receiver"                  # P2: holds the values, learns the noisy sum
//! columns = ["email"]                # exactly one identifier column in sum mode
//! value_column = "amount"
//! [[participants]]
//! node = "publisher"
//! dataset = "exposures"
//! role = "sender"                    # P1: identifiers only, learns the intersection size
//! columns = ["email", "phone"]       # DP jobs name the sender's columns: noise scales
//!                                    # with their number
//! ```
//!
//! DP statistics over one node's dataset:
//!
//! ```toml
//! kind = "dp_stats"
//! [dp_stats]
//! segment_column = "region"
//! categories = ["north", "south"]    # declared here, never read from the data
//! other = "bucket"                   # bucket (count as "other") | drop (default)
//! mechanism = "laplace"              # laplace (default) | gaussian (then set delta)
//! min_count = 50                     # suppress categories with a smaller noisy count
//! max_rows_per_person = 1            # the contribution bound (default 1): rows used per
//!                                    # person (the dataset's person column); noise scales
//! [[dp_stats.measures]]
//! kind = "count"
//! epsilon = 0.5
//! [[dp_stats.measures]]
//! kind = "sum"                       # count | sum | mean
//! column = "amount"
//! lower = 0.0
//! upper = 500.0
//! epsilon = 0.5
//! [[participants]]
//! node = "brand"
//! dataset = "crm"
//! ```
//!
//! Secure aggregation across many nodes (the coordinator learns only the sum):
//!
//! ```toml
//! kind = "secure_sum"
//! [secure_sum]
//! segment_column = "region"
//! categories = ["north", "south", "east", "west"]
//! count = true                       # rows per category
//! value_column = "amount"            # and the clamped sum of this column per category
//! lower = 0.0
//! upper = 1000.0
//! threshold = 6                      # Shamir t (default floor(2n/3) + 1)
//! min_contributors = 6               # fewer surviving inputs fail the job (default t)
//! round_timeout_secs = 30            # nodes silent for a round count as dropped
//! result_to = "retailer-1"           # optional: a participant that gets a copy of the result
//!                                    # (version-1 files call it `receiver`; still accepted)
//! [[participants]]
//! node = "retailer-1"
//! dataset = "sales"
//! # ... one [[participants]] per node (at least 3)
//! ```
//!
//! Conversion lift of a randomised test/control campaign (the brand learns noisy totals per
//! arm × cohort cell and the lift derived from them):
//!
//! ```toml
//! kind = "lift"
//! [lift]
//! arm_column = "arm"                 # the publisher's column naming each person's arm
//! test_label = "test"                # optional: its labels (default test / control)
//! control_label = "control"
//! cohort_column = "region"           # optional: the publisher's cohort column
//! cohorts = ["north", "south"]       # declared here (with cohort_column), never read from
//!                                    # the data
//! conversion_column = "conversions"  # the brand's conversions per person in the window
//! max_conversions = 1                # optional, default 1 (count converters)
//! value_column = "revenue"           # the brand's value per person in the window
//! max_value = 500.0                  # each person's value is clamped to [0, max_value]
//! decimals = 2                       # optional, default 2
//! squares_unit = 100.0               # optional, default 1: value² is summed in this unit
//! max_records_per_identifier = 1     # optional, default 1: the brand's records per person
//! profile = "google"                 # optional: identifier normalisation profile
//! min_cell = 100                     # optional, default 0: suppress smaller cells
//! window_start = "2026-11-01"        # the conversion window the brand applied (ISO dates)
//! window_end = "2026-11-29"
//! spend = 25000.0                    # optional: campaign spend, for iROAS (default 0 = none)
//! [lift.dp]                          # the whole job's privacy loss (required), split over
//! epsilon = 1.0                      # the matched counts and each summed column
//! mechanism = "laplace"              # laplace (default) | gaussian (then set delta)
//! [[participants]]
//! node = "brand"
//! dataset = "customers"
//! role = "receiver"                  # P2: conversions and values; learns the result
//! columns = ["email"]                # exactly one identifier column per side
//! [[participants]]
//! node = "publisher"
//! dataset = "exposure"
//! role = "sender"                    # P1: arm (and cohort) labels
//! columns = ["email"]
//! ```
//!
//! Segmented overlap and match rate (the brand learns noisy matched counts per segment of
//! either side, or per pair of them, and each side's noisy population per segment):
//!
//! ```toml
//! kind = "overlap"
//! [overlap]
//! p1_segment_column = "region"       # optional: the sender's (P1's) segment column
//! p1_segments = ["north", "south"]   # declared with it (at most 64), never read from the data
//! p2_segment_column = "tier"         # optional: the receiver's (P2's) segment column
//! p2_segments = ["gold", "silver"]   # declared with it (at most 16)
//! max_records_per_identifier = 1     # optional, default 1: records kept per person per side
//! profile = "google"                 # optional: identifier normalisation profile
//! min_cell = 100                     # optional, default 0: suppress smaller cells
//! [overlap.dp]                       # the whole job's privacy loss (required), split over
//! epsilon = 1.0                      # matched counts, cross-tab and each side's populations
//! [[participants]]
//! node = "brand"
//! dataset = "customers"
//! role = "receiver"                  # P2: gets the result; 1 to 4 identifier columns
//! columns = ["email", "phone"]
//! [[participants]]
//! node = "publisher"
//! dataset = "audience"
//! role = "sender"                    # P1: exactly one identifier column
//! columns = ["email"]
//! ```
//!
//! Validation covers the shape of a job only; whether a node *allows* it (partners, datasets,
//! columns, thresholds) is each node's local policy decision.

use std::path::Path;

use parley_proto::job_spec::Params;
use parley_proto::{
    DpMechanism, DpParams, DpStatsParams, JobKind, JobSpec, LiftParams, Measure, MeasureKind,
    OtherRows, OverlapParams, Participant, PsiMode, PsiParams, PsiRole, RfmParams, SecureSumParams,
};
use serde::Deserialize;

use crate::params::{params_kind, table_name, wrong_params};
use crate::{Job, JobError};

/// A job file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(default)]
    label: String,
    kind: KindToml,
    psi: Option<PsiToml>,
    dp_stats: Option<DpStatsToml>,
    secure_sum: Option<SecureSumToml>,
    rfm: Option<RfmToml>,
    lift: Option<LiftToml>,
    overlap: Option<OverlapToml>,
    #[serde(default)]
    participants: Vec<ParticipantToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RfmToml {
    date_column: String,
    amount_column: String,
    period_start: String,
    period_end: String,
    recency_days: Vec<u32>,
    frequency: Vec<u32>,
    monetary: Vec<f64>,
    max_monetary: f64,
    epsilon: f64,
    #[serde(default)]
    mean_epsilon: f64,
    #[serde(default)]
    mechanism: MechanismToml,
    #[serde(default)]
    delta: f64,
    #[serde(default)]
    min_count: u64,
    #[serde(default = "default_decimals")]
    decimals: u32,
}

/// A `[lift]` table; the defaults are the job-file defaults documented on `LiftParams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftToml {
    arm_column: String,
    #[serde(default = "default_test_label")]
    test_label: String,
    #[serde(default = "default_control_label")]
    control_label: String,
    #[serde(default)]
    cohort_column: String,
    #[serde(default)]
    cohorts: Vec<String>,
    conversion_column: String,
    #[serde(default = "default_one")]
    max_conversions: u32,
    value_column: String,
    max_value: f64,
    #[serde(default = "default_decimals")]
    decimals: u32,
    #[serde(default = "default_squares_unit")]
    squares_unit: f64,
    #[serde(default = "default_one")]
    max_records_per_identifier: u32,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    min_cell: u64,
    window_start: String,
    window_end: String,
    #[serde(default)]
    spend: f64,
    dp: DpToml,
}

/// An `[overlap]` table; the defaults are the job-file defaults documented on `OverlapParams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlapToml {
    #[serde(default)]
    p1_segment_column: String,
    #[serde(default)]
    p1_segments: Vec<String>,
    #[serde(default)]
    p2_segment_column: String,
    #[serde(default)]
    p2_segments: Vec<String>,
    #[serde(default = "default_one")]
    max_records_per_identifier: u32,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    min_cell: u64,
    dp: DpToml,
}

fn default_test_label() -> String {
    "test".into()
}

fn default_control_label() -> String {
    "control".into()
}

fn default_one() -> u32 {
    1
}

fn default_squares_unit() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecureSumToml {
    segment_column: String,
    categories: Vec<String>,
    #[serde(default)]
    other: OtherToml,
    #[serde(default)]
    count: bool,
    #[serde(default)]
    value_column: String,
    #[serde(default)]
    lower: f64,
    #[serde(default)]
    upper: f64,
    #[serde(default = "default_decimals")]
    decimals: u32,
    #[serde(default)]
    threshold: u32,
    #[serde(default)]
    min_contributors: u32,
    #[serde(default)]
    round_timeout_secs: u32,
    dp: Option<DpToml>,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    max_rows_per_person: u32,
    /// The participant that gets a copy of the result (`receiver`, its version-1 name, is
    /// accepted too).
    #[serde(default, alias = "receiver")]
    result_to: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindToml {
    Psi,
    DpStats,
    SecureSum,
    Rfm,
    Lift,
    Overlap,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PsiToml {
    mode: ModeToml,
    #[serde(default)]
    min_intersection: u64,
    dp: Option<DpToml>,
    count_dp: Option<DpToml>,
    #[serde(default)]
    lower: f64,
    #[serde(default)]
    upper: f64,
    #[serde(default = "default_decimals")]
    decimals: u32,
    #[serde(default)]
    max_records_per_identifier: u32,
    #[serde(default)]
    profile: String,
    /// Sum mode: `[[psi.columns]]`, several value columns with their own bounds.
    #[serde(default)]
    columns: Vec<SumColumnToml>,
}

/// One `[[psi.columns]]` table: a value column of the receiver and its clamping bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SumColumnToml {
    name: String,
    #[serde(default)]
    lower: f64,
    upper: f64,
}

fn default_decimals() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeToml {
    Match,
    Cardinality,
    Sum,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DpToml {
    epsilon: f64,
    #[serde(default)]
    mechanism: MechanismToml,
    #[serde(default)]
    delta: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MechanismToml {
    #[default]
    Laplace,
    Gaussian,
}

impl MechanismToml {
    fn proto(&self) -> DpMechanism {
        match self {
            MechanismToml::Laplace => DpMechanism::Laplace,
            MechanismToml::Gaussian => DpMechanism::Gaussian,
        }
    }
}

impl DpToml {
    fn proto(&self) -> DpParams {
        DpParams {
            epsilon: self.epsilon,
            mechanism: self.mechanism.proto() as i32,
            delta: self.delta,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DpStatsToml {
    segment_column: String,
    categories: Vec<String>,
    #[serde(default)]
    other: OtherToml,
    #[serde(default)]
    mechanism: MechanismToml,
    #[serde(default)]
    delta: f64,
    #[serde(default)]
    min_count: u64,
    #[serde(default = "default_decimals")]
    decimals: u32,
    #[serde(default)]
    max_rows_per_person: u32,
    #[serde(default)]
    measures: Vec<MeasureToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OtherToml {
    #[default]
    Drop,
    Bucket,
}

impl OtherToml {
    fn proto(&self) -> OtherRows {
        match self {
            OtherToml::Drop => OtherRows::Drop,
            OtherToml::Bucket => OtherRows::Bucket,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasureToml {
    kind: MeasureKindToml,
    #[serde(default)]
    column: String,
    #[serde(default)]
    lower: f64,
    #[serde(default)]
    upper: f64,
    epsilon: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MeasureKindToml {
    Count,
    Sum,
    Mean,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantToml {
    node: String,
    dataset: String,
    role: Option<RoleToml>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    value_column: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RoleToml {
    Receiver,
    Sender,
}

/// Parses and validates a job file. `origin` names where the text came from (usually the
/// file name) and appears in error messages.
pub fn parse_job_toml(text: &str, origin: &str) -> Result<JobSpec, JobError> {
    let file: JobFile = toml::from_str(text).map_err(|e| JobError::FileSyntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let kind = match file.kind {
        KindToml::Psi => JobKind::Psi,
        KindToml::DpStats => JobKind::DpStats,
        KindToml::SecureSum => JobKind::SecureSum,
        KindToml::Rfm => JobKind::Rfm,
        KindToml::Lift => JobKind::Lift,
        KindToml::Overlap => JobKind::Overlap,
    };
    let invalid = |reason| JobError::FileInvalid {
        origin: origin.to_string(),
        reason,
    };
    let psi = file.psi.map(|psi| PsiParams {
        mode: match psi.mode {
            ModeToml::Match => PsiMode::Match,
            ModeToml::Cardinality => PsiMode::Cardinality,
            ModeToml::Sum => PsiMode::Sum,
        } as i32,
        min_intersection: psi.min_intersection,
        dp: psi.dp.as_ref().map(DpToml::proto),
        count_dp: psi.count_dp.as_ref().map(DpToml::proto),
        lower: psi.lower,
        upper: psi.upper,
        decimals: psi.decimals,
        max_records_per_identifier: psi.max_records_per_identifier,
        profile: psi.profile,
        columns: psi
            .columns
            .into_iter()
            .map(|c| parley_proto::SumColumn {
                name: c.name,
                lower: c.lower,
                upper: c.upper,
            })
            .collect(),
    });
    let dp_stats = file.dp_stats.map(|d| DpStatsParams {
        segment_column: d.segment_column,
        categories: d.categories,
        other: d.other.proto() as i32,
        measures: d
            .measures
            .into_iter()
            .map(|m| Measure {
                kind: match m.kind {
                    MeasureKindToml::Count => MeasureKind::Count,
                    MeasureKindToml::Sum => MeasureKind::Sum,
                    MeasureKindToml::Mean => MeasureKind::Mean,
                } as i32,
                column: m.column,
                lower: m.lower,
                upper: m.upper,
                epsilon: m.epsilon,
            })
            .collect(),
        mechanism: d.mechanism.proto() as i32,
        delta: d.delta,
        min_count: d.min_count,
        decimals: d.decimals,
        max_rows_per_person: d.max_rows_per_person,
    });
    let secure_sum = file.secure_sum.map(|d| SecureSumParams {
        segment_column: d.segment_column,
        categories: d.categories,
        other: d.other.proto() as i32,
        count: d.count,
        value_column: d.value_column,
        lower: d.lower,
        upper: d.upper,
        decimals: d.decimals,
        threshold: d.threshold,
        min_contributors: d.min_contributors,
        round_timeout_secs: d.round_timeout_secs,
        dp: d.dp.as_ref().map(DpToml::proto),
        result_to: d.result_to,
        exact: d.exact,
        max_rows_per_person: d.max_rows_per_person,
    });
    let rfm = file.rfm.map(|r| RfmParams {
        date_column: r.date_column,
        amount_column: r.amount_column,
        period_start: r.period_start,
        period_end: r.period_end,
        recency_days: r.recency_days,
        frequency: r.frequency,
        monetary: r.monetary,
        max_monetary: r.max_monetary,
        epsilon: r.epsilon,
        mean_epsilon: r.mean_epsilon,
        mechanism: r.mechanism.proto() as i32,
        delta: r.delta,
        min_count: r.min_count,
        decimals: r.decimals,
    });
    let lift = file.lift.map(|l| LiftParams {
        arm_column: l.arm_column,
        test_label: l.test_label,
        control_label: l.control_label,
        cohort_column: l.cohort_column,
        cohorts: l.cohorts,
        conversion_column: l.conversion_column,
        max_conversions: l.max_conversions,
        value_column: l.value_column,
        max_value: l.max_value,
        decimals: l.decimals,
        squares_unit: l.squares_unit,
        dp: Some(l.dp.proto()),
        max_records_per_identifier: l.max_records_per_identifier,
        profile: l.profile,
        min_cell: l.min_cell,
        window_start: l.window_start,
        window_end: l.window_end,
        spend: l.spend,
    });
    let overlap = file.overlap.map(|o| OverlapParams {
        p1_segment_column: o.p1_segment_column,
        p1_segments: o.p1_segments,
        p2_segment_column: o.p2_segment_column,
        p2_segments: o.p2_segments,
        dp: Some(o.dp.proto()),
        max_records_per_identifier: o.max_records_per_identifier,
        profile: o.profile,
        min_cell: o.min_cell,
    });
    let tables = [
        psi.map(Params::Psi),
        dp_stats.map(Params::DpStats),
        secure_sum.map(Params::SecureSum),
        rfm.map(Params::Rfm),
        lift.map(Params::Lift),
        overlap.map(Params::Overlap),
    ];
    let params = kind_params(kind, tables).map_err(invalid)?;
    let spec = JobSpec {
        label: file.label,
        kind: kind as i32,
        participants: file
            .participants
            .into_iter()
            .map(|p| Participant {
                node: p.node,
                dataset: p.dataset,
                columns: p.columns,
                psi_role: match p.role {
                    None => PsiRole::Unspecified,
                    Some(RoleToml::Receiver) => PsiRole::Receiver,
                    Some(RoleToml::Sender) => PsiRole::Sender,
                } as i32,
                value_column: p.value_column,
            })
            .collect(),
        params,
    };
    validate_spec(&spec).map_err(invalid)?;
    Ok(spec)
}

/// The one parameter table of a `kind` job: a file may carry only its own kind's table (the
/// wire form holds exactly one, so another kind's table would otherwise be silently dropped).
fn kind_params<const N: usize>(
    kind: JobKind,
    tables: [Option<Params>; N],
) -> Result<Option<Params>, String> {
    let mut own = None;
    for p in tables.into_iter().flatten() {
        if params_kind(&p) == kind {
            own = Some(p);
        } else {
            return Err(wrong_params(table_name(kind), Some(&p), ""));
        }
    }
    Ok(own)
}

/// Parses a job file into a typed [`Job`]; see [`parse_job_toml`].
pub fn parse_job(text: &str, origin: &str) -> Result<Job, JobError> {
    let spec = parse_job_toml(text, origin)?;
    Job::try_from(&spec).map_err(|e| JobError::FileInvalid {
        origin: origin.to_string(),
        reason: e.to_string(),
    })
}

/// Checks that `spec` describes a job Parley can run: [`Job::try_from`] without keeping the
/// job. The error says what is wrong in job-file terms (field names as in the TOML file) and
/// how to fix it.
pub fn validate_spec(spec: &JobSpec) -> Result<(), String> {
    Job::try_from(spec).map(|_| ()).map_err(|e| e.to_string())
}

/// Reads, parses and validates the job file at `path`.
pub fn load_job_file(path: &Path) -> Result<JobSpec, JobError> {
    let text = std::fs::read_to_string(path).map_err(|e| JobError::FileRead {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_job_toml(&text, &path.display().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MATCH_EXAMPLE: &str = include_str!("../examples/job-match.toml");
    const CARDINALITY_EXAMPLE: &str = include_str!("../examples/job-cardinality.toml");

    const MINIMAL: &str = r#"
label = "t"
kind = "psi"
[psi]
mode = "match"
[[participants]]
node = "brand"
dataset = "crm"
role = "receiver"
[[participants]]
node = "publisher"
dataset = "subscribers"
role = "sender"
"#;

    /// Parses `text` and returns the validation reason (panics on success or syntax errors).
    fn invalid(text: &str) -> String {
        match parse_job_toml(text, "test.toml") {
            Err(JobError::FileInvalid { origin, reason }) => {
                assert_eq!(origin, "test.toml");
                reason
            }
            other => panic!("expected JobFileInvalid, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse_job_toml(text, "test.toml") {
            Err(e @ JobError::FileSyntax { .. }) => e.to_string(),
            other => panic!("expected JobFileSyntax, got {other:?}"),
        }
    }

    #[test]
    fn sum_and_dp_stats_examples_parse() {
        let spec =
            parse_job_toml(include_str!("../examples/job-sum.toml"), "job-sum.toml").unwrap();
        let psi = spec.psi().cloned().unwrap();
        assert_eq!(psi.mode(), PsiMode::Sum);
        assert_eq!(psi.dp.unwrap().epsilon, 0.5);
        assert_eq!(psi.upper, 500.0);
        assert_eq!(spec.participants[0].value_column, "amount");
        let spec = parse_job_toml(
            include_str!("../examples/job-dp-stats.toml"),
            "job-dp-stats.toml",
        )
        .unwrap();
        assert_eq!(spec.kind(), JobKind::DpStats);
        let d = spec.dp_stats().cloned().unwrap();
        assert_eq!(d.categories.len(), 4);
        assert_eq!(d.other(), OtherRows::Bucket);
        assert_eq!(d.measures.len(), 3);
        assert_eq!(d.measures[2].kind(), MeasureKind::Mean);
    }

    #[test]
    fn secure_sum_example_parses_and_mistakes_are_explained() {
        let text = include_str!("../examples/job-secure-sum.toml");
        let spec = parse_job_toml(text, "job-secure-sum.toml").unwrap();
        assert_eq!(spec.kind(), JobKind::SecureSum);
        let p = spec.secure_sum().cloned().unwrap();
        let crate::Kind::SecureSum(k) = parse_job(text, "job-secure-sum.toml").unwrap().kind else {
            panic!("not a secure_sum job");
        };
        assert_eq!((k.threshold, k.min_contributors, k.n), (4, 4, 5));
        assert_eq!(k.vector_len(), 8);
        let e = invalid(&text.replace("threshold = 4", "threshold = 2"));
        assert!(e.contains("more than half"), "{e}");
        let e = invalid(&text.replace("min_contributors = 4", "min_contributors = 9"));
        assert!(e.contains("min_contributors"), "{e}");
        let e = invalid(
            &text
                .replace("count = true", "count = false")
                .replace("value_column = \"amount\"", "value_column = \"\"")
                .replace("lower = 0.0", "")
                .replace("upper = 1000.0", ""),
        );
        assert!(e.contains("nothing to add up"), "{e}");
        let two = text
            .split("[[participants]]")
            .take(3)
            .collect::<Vec<_>>()
            .join("[[participants]]");
        let e = invalid(&two);
        assert!(e.contains("between 3"), "{e}");
        let e = invalid(&text.replace("result_to = \"retailer-1\"", "result_to = \"brand\""));
        assert!(
            e.contains("secure_sum.result_to: 'brand' is not a participant"),
            "{e}"
        );
        assert_eq!(p.result_to, "retailer-1");
        // Version-1 job files name the field `receiver`; they keep working.
        let v1 = text.replace("result_to = \"retailer-1\"", "receiver = \"retailer-1\"");
        assert_eq!(parse_job_toml(&v1, "v1.toml").unwrap(), spec);
        // A file may carry only its own kind's table.
        let e = invalid(&format!("{text}\n[psi]\nmode = \"match\"\n"));
        assert!(
            e.starts_with("psi: a secure_sum job takes no [psi] table"),
            "{e}"
        );
        let dup = text.replace("retailer-5", "retailer-4");
        assert!(invalid(&dup).contains("listed twice"));
    }

    const LIFT_EXAMPLE: &str = include_str!("../examples/job-lift.toml");

    const LIFT_MINIMAL: &str = r#"
kind = "lift"
[lift]
arm_column = "arm"
conversion_column = "conversions"
value_column = "revenue"
max_value = 500.0
window_start = "2026-11-01"
window_end = "2026-11-29"
[lift.dp]
epsilon = 1.0
[[participants]]
node = "publisher"
dataset = "exposure"
role = "sender"
columns = ["email"]
[[participants]]
node = "brand"
dataset = "customers"
role = "receiver"
columns = ["email"]
"#;

    #[test]
    fn lift_example_parses() {
        let spec = parse_job_toml(LIFT_EXAMPLE, "job-lift.toml").unwrap();
        assert_eq!(spec.kind(), JobKind::Lift);
        let l = spec.lift().cloned().unwrap();
        assert_eq!(l.arm_column, "arm");
        assert_eq!(
            (l.test_label.as_str(), l.control_label.as_str()),
            ("test", "control")
        );
        assert_eq!(l.cohort_column, "region");
        assert_eq!(l.cohorts, ["north", "south"]);
        assert_eq!(l.conversion_column, "conversions");
        assert_eq!(l.max_conversions, 1);
        assert_eq!(l.value_column, "revenue");
        assert_eq!(l.max_value, 500.0);
        assert_eq!(l.decimals, 2);
        assert_eq!(l.squares_unit, 100.0);
        assert_eq!(l.max_records_per_identifier, 1);
        assert_eq!(l.profile, "");
        assert_eq!(l.min_cell, 100);
        assert_eq!(
            (l.window_start.as_str(), l.window_end.as_str()),
            ("2026-11-01", "2026-11-29")
        );
        assert_eq!(l.spend, 25_000.0);
        let dp = l.dp.unwrap();
        assert_eq!(dp.epsilon, 1.0);
        assert_eq!(dp.mechanism(), DpMechanism::Laplace);
        assert_eq!(dp.delta, 0.0);
        let parts: Vec<_> = spec
            .participants
            .iter()
            .map(|p| {
                (
                    p.node.as_str(),
                    p.dataset.as_str(),
                    p.psi_role(),
                    p.columns.clone(),
                )
            })
            .collect();
        assert_eq!(
            parts,
            [
                (
                    "publisher",
                    "exposure",
                    PsiRole::Sender,
                    vec!["email".to_string()]
                ),
                (
                    "brand",
                    "customers",
                    PsiRole::Receiver,
                    vec!["email".to_string()]
                ),
            ]
        );
        // The typed job agrees: the publisher is P1, the brand P2, four arm × region cells.
        let crate::Kind::Lift(k) = parse_job(LIFT_EXAMPLE, "job-lift.toml").unwrap().kind else {
            panic!("not a lift job");
        };
        assert_eq!((k.p1, k.p2), (0, 1));
        assert_eq!(k.groups(), 4);
    }

    #[test]
    fn lift_minimal_file_gets_the_defaults() {
        let spec = parse_job_toml(LIFT_MINIMAL, "m.toml").unwrap();
        let l = spec.lift().cloned().unwrap();
        assert_eq!(l.test_label, "test");
        assert_eq!(l.control_label, "control");
        assert_eq!(l.cohort_column, "");
        assert!(l.cohorts.is_empty());
        assert_eq!(l.max_conversions, 1);
        assert_eq!(l.decimals, 2);
        assert_eq!(l.squares_unit, 1.0);
        assert_eq!(l.max_records_per_identifier, 1);
        assert_eq!(l.profile, "");
        assert_eq!(l.min_cell, 0);
        assert_eq!(l.spend, 0.0);
        assert_eq!(l.dp.unwrap().mechanism(), DpMechanism::Laplace);
        assert_eq!(spec.label, "");
        // The required fields are required.
        for field in [
            "arm_column = \"arm\"\n",
            "conversion_column = \"conversions\"\n",
            "value_column = \"revenue\"\n",
            "max_value = 500.0\n",
            "window_start = \"2026-11-01\"\n",
            "window_end = \"2026-11-29\"\n",
        ] {
            let name = field.split(' ').next().unwrap();
            let msg = syntax(&LIFT_MINIMAL.replace(field, ""));
            assert!(msg.contains(&format!("missing field `{name}`")), "{msg}");
        }
        let msg = syntax(&LIFT_MINIMAL.replace("[lift.dp]\nepsilon = 1.0\n", ""));
        assert!(msg.contains("missing field `dp`"), "{msg}");
        let (_, parties) = LIFT_MINIMAL.split_once("[[participants]]").unwrap();
        let e = invalid(&format!("kind = \"lift\"\n[[participants]]{parties}"));
        assert!(e.contains("needs a [lift] table"), "{e}");
    }

    #[test]
    fn lift_unknown_fields_are_refused_by_name() {
        let msg = syntax(
            &LIFT_MINIMAL.replace("max_value = 500.0", "max_value = 500.0\nmax_spend = 1.0"),
        );
        assert!(
            msg.contains("unknown field `max_spend`") && msg.contains("test.toml"),
            "{msg}"
        );
        let msg =
            syntax(&LIFT_MINIMAL.replace("epsilon = 1.0", "epsilon = 1.0\nepsilon_count = 1.0"));
        assert!(msg.contains("unknown field `epsilon_count`"), "{msg}");
        // Lift names its P2 columns in [lift], not on the participant; no new participant
        // fields are accepted either.
        let msg = syntax(&LIFT_MINIMAL.replace(
            "dataset = \"exposure\"",
            "dataset = \"exposure\"\narm = \"x\"",
        ));
        assert!(msg.contains("unknown field `arm`"), "{msg}");
    }

    #[test]
    fn lift_file_takes_only_its_own_table() {
        let e = invalid(&format!("{LIFT_EXAMPLE}\n[psi]\nmode = \"match\"\n"));
        assert!(e.starts_with("psi: a lift job takes no [psi] table"), "{e}");
        let lift_table = LIFT_MINIMAL
            .split("[[participants]]")
            .next()
            .unwrap()
            .replace("kind = \"lift\"\n", "");
        let e = invalid(&format!("{MINIMAL}{lift_table}"));
        assert!(
            e.starts_with("lift: a psi job takes no [lift] table"),
            "{e}"
        );
    }

    const OVERLAP_EXAMPLE: &str = include_str!("../examples/job-overlap.toml");

    #[test]
    fn overlap_example_parses_and_a_minimal_file_gets_the_defaults() {
        let spec = parse_job_toml(OVERLAP_EXAMPLE, "job-overlap.toml").unwrap();
        assert_eq!(spec.kind(), JobKind::Overlap);
        let o = spec.overlap().cloned().unwrap();
        assert_eq!(o.p1_segment_column, "region");
        assert_eq!(o.p1_segments, ["north", "south"]);
        assert_eq!(o.p2_segment_column, "tier");
        assert_eq!(o.p2_segments, ["gold", "silver", "bronze"]);
        assert_eq!((o.max_records_per_identifier, o.min_cell), (1, 100));
        assert_eq!(o.dp.unwrap().epsilon, 1.0);
        let crate::Kind::Overlap(k) = parse_job(OVERLAP_EXAMPLE, "x").unwrap().kind else {
            panic!("not an overlap job");
        };
        // The brand (listed first, role receiver) is P2; two regions by three tiers.
        assert_eq!((k.p1, k.p2, k.groups(), k.width()), (1, 0, 2, 3));
        assert_eq!(k.count_sensitivity(), 2);

        let minimal = r#"
kind = "overlap"
[overlap.dp]
epsilon = 0.5
[[participants]]
node = "a"
dataset = "d"
role = "receiver"
columns = ["email"]
[[participants]]
node = "b"
dataset = "d"
role = "sender"
columns = ["email"]
"#;
        let o = parse_job_toml(minimal, "m.toml")
            .unwrap()
            .overlap()
            .cloned()
            .unwrap();
        assert_eq!(o.p1_segment_column, "");
        assert!(o.p2_segments.is_empty());
        assert_eq!((o.max_records_per_identifier, o.min_cell), (1, 0));
        assert_eq!(o.profile, "");
        let msg = syntax(&minimal.replace("[overlap.dp]\nepsilon = 0.5\n", "[overlap]\n"));
        assert!(msg.contains("missing field `dp`"), "{msg}");
        let msg = syntax(&minimal.replace("epsilon = 0.5", "epsilon = 0.5\nlabels = 1"));
        assert!(msg.contains("unknown field `labels`"), "{msg}");
        let e = invalid(&format!("{minimal}\n[psi]\nmode = \"match\"\n"));
        assert!(
            e.starts_with("psi: an overlap job takes no [psi] table"),
            "{e}"
        );
        let e = invalid(&minimal.replace("[overlap.dp]\nepsilon = 0.5\n", ""));
        assert!(e.contains("needs an [overlap] table"), "{e}");
    }

    #[test]
    fn the_profile_defaults_to_google_survives_the_wire_and_unknown_ones_are_refused() {
        use crate::Kind;
        use parley_crypto::normalize::Profile;
        let card = include_str!("../examples/job-cardinality.toml");
        let job = parse_job(card, "test.toml").unwrap();
        assert_eq!(job.identifier_profile(), Some(Profile::Google));
        // The default stays empty on the wire, so older specs keep their meaning.
        assert_eq!(parley_proto::JobSpec::from(&job).psi().unwrap().profile, "");
        let meta = card.replace(
            "min_intersection = 50\n",
            "min_intersection = 50\nprofile = \"meta\"\n",
        );
        let job = parse_job(&meta, "test.toml").unwrap();
        assert_eq!(job.identifier_profile(), Some(Profile::Meta));
        let spec = parley_proto::JobSpec::from(&job);
        assert_eq!(spec.psi().unwrap().profile, "meta");
        let again = Job::try_from(&spec).unwrap();
        let Kind::Psi(k) = &again.kind else {
            panic!("not psi")
        };
        assert_eq!(k.profile, Profile::Meta);
        let e = invalid(&meta.replace("\"meta\"", "\"Meta\""));
        assert!(
            e.contains("unknown profile 'Meta'; use one of google, meta, uid2, basic"),
            "{e}"
        );
        // Kinds that match no identifiers across nodes have no profile.
        let stats = parse_job(include_str!("../examples/job-dp-stats.toml"), "t.toml").unwrap();
        assert_eq!(stats.identifier_profile(), None);
    }

    #[test]
    fn contribution_bounds_are_checked_and_scale_the_sensitivity() {
        use crate::Kind;
        let card = include_str!("../examples/job-cardinality.toml");
        let dp = card.replace(
            "min_intersection = 50\n",
            "min_intersection = 50\nmax_records_per_identifier = 5\n[psi.dp]\nepsilon = 0.5\n",
        );
        let job = parse_job(&dp, "test.toml").unwrap();
        let Kind::Psi(k) = &job.kind else {
            panic!("not psi")
        };
        // 5 records per identifier at the receiver × 1 sender column.
        assert_eq!(k.count_sensitivity(), 5);
        let two = dp.replace("columns = [\"email\"]", "columns = [\"email\", \"phone\"]");
        let Kind::Psi(k) = parse_job(&two, "test.toml").unwrap().kind else {
            panic!("not psi")
        };
        assert_eq!(k.count_sensitivity(), 10);
        // The bound survives the wire form.
        let spec = parley_proto::JobSpec::from(&parse_job(&two, "test.toml").unwrap());
        assert_eq!(spec.psi().unwrap().max_records_per_identifier, 5);

        let e = invalid(&dp.replace("columns = [\"email\"]", ""));
        assert!(
            e.contains("must list the sender's identifier columns"),
            "{e}"
        );
        let e = invalid(&dp.replace(
            "max_records_per_identifier = 5",
            "max_records_per_identifier = 5000",
        ));
        assert!(e.contains("at most 1000"), "{e}");
        let e = invalid(&card.replace(
            "min_intersection = 50\n",
            "max_records_per_identifier = 2\n",
        ));
        assert!(e.contains("only a DP job"), "{e}");

        let sum = include_str!("../examples/job-sum.toml");
        let Kind::PsiSum(k) = parse_job(sum, "test.toml").unwrap().kind else {
            panic!("not sum")
        };
        assert_eq!(k.count_sensitivity(), 1);
        assert_eq!(k.sum_sensitivity_units(), 50_000);
        let three = sum
            .replace(
                "max_records_per_identifier = 1 ",
                "max_records_per_identifier = 3 ",
            )
            .replace(
                "columns = [\"email\"]  # DP jobs",
                "columns = [\"email\", \"phone\"]  # DP jobs",
            );
        let Kind::PsiSum(k) = parse_job(&three, "test.toml").unwrap().kind else {
            panic!("not sum")
        };
        assert_eq!(k.count_sensitivity(), 3);

        let stats = include_str!("../examples/job-dp-stats.toml");
        let Kind::DpStats(k) = parse_job(stats, "test.toml").unwrap().kind else {
            panic!("not dp_stats")
        };
        assert_eq!(k.count_sensitivity(), 1);
        let many = stats.replace("max_rows_per_person = 1 ", "max_rows_per_person = 20 ");
        let Kind::DpStats(k) = parse_job(&many, "test.toml").unwrap().kind else {
            panic!("not dp_stats")
        };
        assert_eq!(k.count_sensitivity(), 20);
        let e = invalid(&stats.replace("max_rows_per_person = 1 ", "max_rows_per_person = 20000 "));
        assert!(e.contains("max_rows_per_person"), "{e}");
    }

    #[test]
    fn dp_and_sum_mistakes_are_explained() {
        let sum = include_str!("../examples/job-sum.toml");
        let e = invalid(&sum.replace(
            "[psi.count_dp]       # noise on the number of exposed buyers\nepsilon = 0.5\n",
            "",
        ));
        assert!(e.contains("count_dp"), "{e}");
        let e = invalid(&sum.replace("epsilon = 0.5\nmechanism = \"laplace\"", "epsilon = -1.0"));
        assert!(e.contains("psi.dp.epsilon"), "{e}");
        let e = invalid(&sum.replace("value_column = \"amount\"", ""));
        assert!(e.contains("value_column"), "{e}");
        let e = invalid(&sum.replace("columns = [\"email\"]", "columns = [\"email\", \"phone\"]"));
        assert!(e.contains("exactly one"), "{e}");
        let e = invalid(&sum.replace("lower = 0.0", "lower = 600.0"));
        assert!(e.contains("lower <= upper"), "{e}");
        let e = invalid(&sum.replace("mechanism = \"laplace\"", "mechanism = \"gaussian\""));
        assert!(e.contains("delta"), "{e}");
        let stats = include_str!("../examples/job-dp-stats.toml");
        let e = invalid(&stats.replace(
            "categories = [\"north\", \"south\", \"east\", \"west\"]",
            "categories = [\"north\", \"north\"]",
        ));
        assert!(e.contains("twice"), "{e}");
        let e = invalid(&stats.replace(
            "categories = [\"north\", \"south\", \"east\", \"west\"]",
            "categories = [\"other\"]",
        ));
        assert!(e.contains("bucket"), "{e}");
        let e = invalid(&stats.replace(
            "kind = \"count\"\nepsilon = 0.5",
            "kind = \"count\"\nepsilon = 0.0",
        ));
        assert!(e.contains("measures[0].epsilon"), "{e}");
        let e =
            invalid(&(stats.to_string() + "[[participants]]\nnode = \"other\"\ndataset = \"x\"\n"));
        assert!(e.contains("exactly one node"), "{e}");
        let e = invalid(&stats.replace("segment_column = \"region\"", "segment_column = \"\""));
        assert!(e.contains("segment_column"), "{e}");
    }

    #[test]
    fn match_example_parses() {
        let spec = parse_job_toml(MATCH_EXAMPLE, "job-match.toml").unwrap();
        assert_eq!(spec.kind(), JobKind::Psi);
        let psi = spec.psi().cloned().unwrap();
        assert_eq!(psi.mode(), PsiMode::Match);
        assert_eq!(psi.min_intersection, 100);
        assert_eq!(spec.participants.len(), 2);
        let r = &spec.participants[0];
        assert_eq!(
            (r.node.as_str(), r.dataset.as_str(), r.psi_role()),
            ("brand", "crm", PsiRole::Receiver)
        );
        assert_eq!(r.columns, ["email", "phone"]);
        let s = &spec.participants[1];
        assert_eq!(
            (s.node.as_str(), s.dataset.as_str(), s.psi_role()),
            ("publisher", "subscribers", PsiRole::Sender)
        );
        assert!(s.columns.is_empty());
        assert!(!spec.label.is_empty());
    }

    #[test]
    fn cardinality_example_parses() {
        let spec = parse_job_toml(CARDINALITY_EXAMPLE, "job-cardinality.toml").unwrap();
        let psi = spec.psi().cloned().unwrap();
        assert_eq!(psi.mode(), PsiMode::Cardinality);
        assert_eq!(spec.participants.len(), 2);
        let roles: Vec<_> = spec.participants.iter().map(|p| p.psi_role()).collect();
        assert!(roles.contains(&PsiRole::Receiver) && roles.contains(&PsiRole::Sender));
    }

    #[test]
    fn minimal_defaults() {
        let spec = parse_job_toml(MINIMAL, "m.toml").unwrap();
        assert_eq!(spec.psi().cloned().unwrap().min_intersection, 0);
        assert!(spec.participants.iter().all(|p| p.columns.is_empty()));
        // Label is optional.
        let spec = parse_job_toml(&MINIMAL.replace("label = \"t\"", ""), "m.toml").unwrap();
        assert_eq!(spec.label, "");
    }

    #[test]
    fn unknown_fields_and_values_are_syntax_errors() {
        let msg = syntax(&MINIMAL.replace("label", "lable"));
        assert!(msg.contains("lable") && msg.contains("test.toml"), "{msg}");
        let msg = syntax(&MINIMAL.replace("mode = \"match\"", "mode = \"match\"\nepsilon = 1"));
        assert!(msg.contains("epsilon"), "{msg}");
        let msg = syntax(&MINIMAL.replace("dataset = \"crm\"", "dataset = \"crm\"\ncolumn = []"));
        assert!(msg.contains("column"), "{msg}");
        syntax(&MINIMAL.replace("kind = \"psi\"", "kind = \"dp\""));
        syntax(&MINIMAL.replace("kind = \"psi\"", ""));
        syntax(&MINIMAL.replace("\"match\"", "\"product\""));
        syntax(&MINIMAL.replace("\"sender\"", "\"observer\""));
        syntax(&MINIMAL.replace("node = \"brand\"", ""));
        syntax("this is not toml");
    }

    #[test]
    fn psi_table_and_mode_are_required() {
        let no_psi = MINIMAL.replace("[psi]\nmode = \"match\"\n", "");
        assert!(invalid(&no_psi).starts_with("psi:"));
        let mut spec = parse_job_toml(MINIMAL, "m").unwrap();
        spec.psi_mut().unwrap().mode = 0;
        assert!(
            validate_spec(&spec)
                .unwrap_err()
                .starts_with("psi.mode: not set")
        );
        spec.psi_mut().unwrap().mode = 99;
        assert!(validate_spec(&spec).unwrap_err().contains("unknown mode"));
    }

    #[test]
    fn kind_must_be_known() {
        let mut spec = parse_job_toml(MINIMAL, "m").unwrap();
        spec.kind = 0;
        assert!(
            validate_spec(&spec)
                .unwrap_err()
                .starts_with("kind: not set")
        );
        spec.kind = 42;
        assert!(validate_spec(&spec).unwrap_err().contains("unknown kind"));
    }

    #[test]
    fn exactly_two_participants() {
        let one = MINIMAL
            .split("[[participants]]")
            .take(2)
            .collect::<Vec<_>>();
        let one = one.join("[[participants]]");
        assert!(invalid(&one).contains("exactly 2 participants"));
        let three = format!("{MINIMAL}[[participants]]\nnode = \"c\"\ndataset = \"d\"\n");
        assert!(invalid(&three).contains("found 3"));
        let none = MINIMAL
            .split("[[participants]]")
            .next()
            .unwrap()
            .to_string();
        assert!(invalid(&none).contains("found 0"));
    }

    #[test]
    fn nodes_must_differ() {
        let same = MINIMAL.replace("node = \"publisher\"", "node = \"brand\"");
        assert!(invalid(&same).contains("both participants are node 'brand'"));
    }

    #[test]
    fn one_receiver_and_one_sender() {
        let two_senders = MINIMAL.replace("\"receiver\"", "\"sender\"");
        assert!(invalid(&two_senders).contains("role = \"sender\""));
        let two_receivers = MINIMAL.replace("\"sender\"", "\"receiver\"");
        assert!(invalid(&two_receivers).contains("role = \"receiver\""));
        let missing = MINIMAL.replace("role = \"sender\"\n", "");
        let reason = invalid(&missing);
        assert!(
            reason.contains("participant 2 (node 'publisher'): role is not set"),
            "{reason}"
        );
    }

    #[test]
    fn names_are_checked() {
        for (from, to, expect) in [
            (
                "node = \"brand\"",
                "node = \"\"",
                "participant 1: node name is empty",
            ),
            (
                "node = \"brand\"",
                "node = \"Brand\"",
                "characters other than",
            ),
            (
                "node = \"brand\"",
                "node = \"a b\"",
                "characters other than",
            ),
            (
                "dataset = \"crm\"",
                "dataset = \"\"",
                "dataset name is empty",
            ),
            (
                "dataset = \"crm\"",
                "dataset = \"crm.csv\"",
                "characters other than",
            ),
        ] {
            let reason = invalid(&MINIMAL.replace(from, to));
            assert!(reason.contains(expect), "{to}: {reason}");
        }
        let long = "a".repeat(65);
        let reason =
            invalid(&MINIMAL.replace("dataset = \"crm\"", &format!("dataset = \"{long}\"")));
        assert!(reason.contains("too long"), "{reason}");
        let ok = "a".repeat(64);
        parse_job_toml(
            &MINIMAL.replace("dataset = \"crm\"", &format!("dataset = \"{ok}\"")),
            "m",
        )
        .unwrap();
        parse_job_toml(&MINIMAL.replace("brand", "brand_2-x"), "m").unwrap();
    }

    #[test]
    fn columns_are_checked() {
        let with = |cols: &str| {
            MINIMAL.replace(
                "role = \"receiver\"",
                &format!("role = \"receiver\"\ncolumns = {cols}"),
            )
        };
        parse_job_toml(&with("[\"email\", \"Phone Number\"]"), "m").unwrap();
        assert!(invalid(&with("[\"email\", \"\"]")).contains("empty column name"));
        assert!(invalid(&with("[\" \"]")).contains("empty column name"));
        assert!(invalid(&with("[\"email\", \"email\"]")).contains("listed twice"));
        assert!(invalid(&with("[\"a\\tb\"]")).contains("control characters"));
    }

    #[test]
    fn label_is_bounded() {
        let long = MINIMAL.replace("label = \"t\"", &format!("label = \"{}\"", "x".repeat(300)));
        assert!(invalid(&long).starts_with("label:"));
        let multiline = MINIMAL.replace("label = \"t\"", "label = \"a\\nb\"");
        assert!(invalid(&multiline).contains("control characters"));
    }

    #[test]
    fn load_reports_missing_files() {
        let err = load_job_file(Path::new("/nonexistent/job.toml")).unwrap_err();
        assert!(matches!(err, JobError::FileRead { .. }));
        assert!(err.to_string().contains("/nonexistent/job.toml"));
    }

    /// The sum example with its one value column replaced by `[[psi.columns]]` tables.
    fn multi_sum(columns: &str) -> String {
        include_str!("../examples/job-sum.toml")
            .replace("lower = 0.0 ", "")
            .replace("upper = 500.0\n", "")
            .replace("value_column = \"amount\"\n", "")
            .replace(
                "[[participants]]\nnode = \"brand\"",
                &format!("{columns}\n[[participants]]\nnode = \"brand\""),
            )
    }

    const THREE_COLUMNS: &str = "[[psi.columns]]\nname = \"amount\"\nupper = 500.0\n\
        [[psi.columns]]\nname = \"items\"\nlower = 1.0\nupper = 20.0\n\
        [[psi.columns]]\nname = \"margin\"\nupper = 0.5\n";

    #[test]
    fn several_value_columns_parse_split_the_epsilon_and_round_trip() {
        use crate::Kind;
        let text = multi_sum(THREE_COLUMNS);
        let spec = parse_job_toml(&text, "test.toml").unwrap();
        assert_eq!(spec.psi().unwrap().columns.len(), 3);
        assert_eq!(spec.participants[0].value_column, "");
        let job = parse_job(&text, "test.toml").unwrap();
        let Kind::PsiSum(k) = &job.kind else {
            panic!("not sum")
        };
        let names: Vec<&str> = k.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["amount", "items", "margin"]);
        assert_eq!(job.data_columns(k.p2), names);
        assert!(job.data_columns(k.p1).is_empty());
        assert_eq!(k.decimals(), 2);
        assert_eq!(
            (k.columns[1].bounds.lower, k.columns[1].bounds.upper),
            (1.0, 20.0)
        );
        // Each column's noise is calibrated to its own bound, at a third of [psi.dp].
        assert_eq!(
            (0..3)
                .map(|i| k.column_sensitivity_units(i))
                .collect::<Vec<_>>(),
            [50_000, 2_000, 50]
        );
        assert_eq!(k.sum_sensitivity_units(), 52_050);
        assert!((k.column_dp().epsilon - 0.5 / 3.0).abs() < 1e-12);
        // The job pays [psi.dp] plus [psi.count_dp], however many columns.
        assert_eq!(job.release_cost().unwrap().epsilon, 1.0);
        // The wire form lists the columns and round-trips.
        let wire = parley_proto::JobSpec::from(&job);
        let psi = wire.psi().unwrap();
        assert_eq!(psi.columns.len(), 3);
        assert_eq!((psi.lower, psi.upper, psi.decimals), (0.0, 0.0, 2));
        assert_eq!(wire.participants[0].value_column, "");
        assert_eq!(Job::try_from(&wire).unwrap(), job);
        assert_eq!(
            parley_proto::JobSpec::from(&Job::try_from(&wire).unwrap()),
            wire
        );
    }

    #[test]
    fn one_listed_column_is_the_single_column_job() {
        let sum = include_str!("../examples/job-sum.toml");
        let listed = parse_job(
            &multi_sum("[[psi.columns]]\nname = \"amount\"\nupper = 500.0\n"),
            "test.toml",
        )
        .unwrap();
        assert_eq!(listed, parse_job(sum, "job-sum.toml").unwrap());
        // Its canonical wire form is the single-column one, which older nodes read.
        let wire = parley_proto::JobSpec::from(&listed);
        assert!(wire.psi().unwrap().columns.is_empty());
        assert_eq!(wire.psi().unwrap().upper, 500.0);
        assert_eq!(wire.participants[0].value_column, "amount");
    }

    #[test]
    fn value_column_mistakes_name_the_column_and_the_fix() {
        let col = |name: &str, lower: f64, upper: f64| {
            format!("[[psi.columns]]\nname = \"{name}\"\nlower = {lower:?}\nupper = {upper:?}\n")
        };
        let nine: String = (0..9).map(|i| col(&format!("v{i}"), 0.0, 1.0)).collect();
        let e = invalid(&multi_sum(&nine));
        assert!(e.starts_with("psi.columns: at most 8 value columns"), "{e}");
        let eight: String = (0..8).map(|i| col(&format!("v{i}"), 0.0, 1.0)).collect();
        parse_job(&multi_sum(&eight), "test.toml").unwrap();

        let e = invalid(&multi_sum(&(col("a", 0.0, 1.0) + &col("a", 0.0, 2.0))));
        assert!(
            e.starts_with("psi.columns[1].name: 'a' is listed twice"),
            "{e}"
        );
        let e = invalid(&multi_sum(&(col("a", 0.0, 1.0) + &col(" ", 0.0, 2.0))));
        assert!(e.starts_with("psi.columns[1].name:"), "{e}");
        let three = col("a", 0.0, 1.0) + &col("b", 0.0, 2.0);
        let e = invalid(&multi_sum(&(three.clone() + &col("c", 5.0, 2.0))));
        assert!(
            e.starts_with("psi.columns[2]: clamping bounds need lower <= upper"),
            "{e}"
        );
        let e = invalid(&multi_sum(&(three.clone() + &col("c", 0.0, 0.001))));
        assert!(
            e.starts_with("psi.columns[2].upper: must be at least one unit"),
            "{e}"
        );
        let e = invalid(&multi_sum(&(three.clone() + &col("c", -1.0, 2.0))));
        assert!(
            e.starts_with("psi.columns[2].lower: sum mode sums non-negative"),
            "{e}"
        );
        let e = invalid(&multi_sum(&(three.clone() + &col("c", 0.0, 1e12))));
        assert!(e.starts_with("psi.columns[2]: |bound|"), "{e}");
        let e = invalid(&multi_sum(&three).replace("decimals = 2 ", "decimals = 9 "));
        assert!(e.starts_with("psi.decimals: at most 6"), "{e}");

        // Either the receiver's value_column with psi.lower/upper, or [[psi.columns]].
        let both = multi_sum(&three).replace(
            "columns = [\"email\"]  # exactly",
            "value_column = \"amount\"\ncolumns = [\"email\"]  # exactly",
        );
        let e = invalid(&both);
        assert!(
            e.contains("value_column: the job lists its value columns in [[psi.columns]]"),
            "{e}"
        );
        let bounds = multi_sum(&three).replace("mode = \"sum\"", "mode = \"sum\"\nupper = 5.0");
        let e = invalid(&bounds);
        assert!(
            e.starts_with("psi.lower/upper: a job with [[psi.columns]]"),
            "{e}"
        );
        let e = invalid(&MINIMAL.replace(
            "mode = \"match\"",
            "mode = \"match\"\n[[psi.columns]]\nname = \"a\"\nupper = 1.0",
        ));
        assert!(
            e.starts_with("psi.columns: value columns apply to sum mode only"),
            "{e}"
        );
        // Neither: the receiver has nothing to sum.
        let e = invalid(
            &include_str!("../examples/job-sum.toml").replace("value_column = \"amount\"\n", ""),
        );
        assert!(
            e.contains("value_column") && e.contains("[[psi.columns]]"),
            "{e}"
        );
        // A column table takes only name, lower and upper.
        let msg = syntax(&multi_sum(&col("a", 0.0, 1.0).replace("upper", "uper")));
        assert!(msg.contains("uper"), "{msg}");
    }
}
