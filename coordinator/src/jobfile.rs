//! Analyst job files (TOML) and job-spec validation.
//!
//! An analyst describes a job in a small TOML file and submits it with `parleyctl submit`.
//! [`parse_job_toml`] turns the text into a [`JobSpec`] and checks it with [`validate_spec`],
//! the same check the coordinator applies to every submitted spec (the coordinator must not
//! trust the CLI to have run it). Unknown fields are rejected, so a typo never silently changes
//! a job.
//!
//! ```toml
//! label = "brand x publisher overlap"
//! kind = "psi"                       # psi
//! [psi]
//! mode = "match"                     # match | cardinality
//! min_intersection = 100             # optional, default 0 (off)
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
//! receiver = "retailer-1"            # optional: a participant that also receives the result
//! [[participants]]
//! node = "retailer-1"
//! dataset = "sales"
//! # ... one [[participants]] per node (at least 3)
//! ```
//!
//! Validation covers the shape of a job only; whether a node *allows* it (partners, datasets,
//! columns, thresholds) is each node's local policy decision.

use std::collections::HashSet;
use std::path::Path;

use parley_proto::{
    DpMechanism, DpParams, DpStatsParams, JobKind, JobSpec, Measure, MeasureKind, OtherRows,
    Participant, PsiMode, PsiParams, PsiRole, SecureSumParams,
};
use serde::Deserialize;

use crate::CoordError;

/// Longest accepted job label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Longest accepted node or dataset name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest accepted column name, in bytes.
pub const MAX_COLUMN_BYTES: usize = 128;
/// Most columns a participant may name.
pub const MAX_COLUMNS: usize = 64;
/// Most categories a DP-statistics job may declare.
pub const MAX_CATEGORIES: usize = 1000;
/// Most measures a DP-statistics job may declare.
pub const MAX_MEASURES: usize = 32;
/// Most decimal places kept for sums.
pub const MAX_DECIMALS: u32 = 6;
/// Largest clamping bound, in units of 10^-decimals, so that sums of up to 2^20 values stay
/// within the 2^60 range the protocols decode.
pub const MAX_BOUND_UNITS: f64 = (1u64 << 40) as f64;
/// Most participants of a secure_sum job.
pub const MAX_SECURE_SUM_NODES: usize = 200;
/// Longest secure_sum vector (one masked vector must fit one 1 MiB message).
pub const MAX_SECURE_SUM_VECTOR: usize = 120_000;
/// Longest secure_sum round deadline, seconds.
pub const MAX_ROUND_TIMEOUT_SECS: u32 = 3600;
/// Default secure_sum round deadline, seconds.
pub const DEFAULT_ROUND_TIMEOUT_SECS: u32 = 30;

/// Category name of the bucket for rows outside the declared categories.
pub const OTHER_CATEGORY: &str = "other";

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
    #[serde(default)]
    participants: Vec<ParticipantToml>,
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
    receiver: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindToml {
    Psi,
    DpStats,
    SecureSum,
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
    measures: Vec<MeasureToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OtherToml {
    #[default]
    Drop,
    Bucket,
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
pub fn parse_job_toml(text: &str, origin: &str) -> Result<JobSpec, CoordError> {
    let file: JobFile = toml::from_str(text).map_err(|e| CoordError::JobFileSyntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let spec = JobSpec {
        label: file.label,
        kind: match file.kind {
            KindToml::Psi => JobKind::Psi,
            KindToml::DpStats => JobKind::DpStats,
            KindToml::SecureSum => JobKind::SecureSum,
        } as i32,
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
        psi: file.psi.map(|psi| PsiParams {
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
        }),
        dp_stats: file.dp_stats.map(|d| DpStatsParams {
            segment_column: d.segment_column,
            categories: d.categories,
            other: match d.other {
                OtherToml::Drop => OtherRows::Drop,
                OtherToml::Bucket => OtherRows::Bucket,
            } as i32,
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
        }),
        secure_sum: file.secure_sum.map(|d| SecureSumParams {
            segment_column: d.segment_column,
            categories: d.categories,
            other: match d.other {
                OtherToml::Drop => OtherRows::Drop,
                OtherToml::Bucket => OtherRows::Bucket,
            } as i32,
            count: d.count,
            value_column: d.value_column,
            lower: d.lower,
            upper: d.upper,
            decimals: d.decimals,
            threshold: d.threshold,
            min_contributors: d.min_contributors,
            round_timeout_secs: d.round_timeout_secs,
            dp: d.dp.as_ref().map(DpToml::proto),
            receiver: d.receiver,
        }),
    };
    validate_spec(&spec).map_err(|reason| CoordError::JobFileInvalid {
        origin: origin.to_string(),
        reason,
    })?;
    Ok(spec)
}

/// Reads, parses and validates the job file at `path`.
pub fn load_job_file(path: &Path) -> Result<JobSpec, CoordError> {
    let text = std::fs::read_to_string(path).map_err(|e| CoordError::JobFileRead {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_job_toml(&text, &path.display().to_string())
}

/// Checks that `spec` describes a job the coordinator can run. The error says what is wrong
/// in job-file terms (field names as in the TOML file) and how to fix it.
///
/// Rules: the label is at most [`MAX_LABEL_BYTES`] bytes without control characters; kind
/// `psi` needs `[psi]` with a mode and exactly two participants on distinct nodes, one
/// `receiver` and one `sender`; node and dataset names match `[a-z0-9_-]{1,64}`; column names
/// are non-empty, distinct, printable and at most [`MAX_COLUMN_BYTES`] bytes, at most
/// [`MAX_COLUMNS`] per participant.
pub fn validate_spec(spec: &JobSpec) -> Result<(), String> {
    if spec.label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "label: {} bytes is too long; keep it under {MAX_LABEL_BYTES}",
            spec.label.len()
        ));
    }
    if spec.label.chars().any(char::is_control) {
        return Err("label: contains control characters; use one line of plain text".into());
    }
    for (i, p) in spec.participants.iter().enumerate() {
        validate_participant(i, p)?;
    }
    match JobKind::try_from(spec.kind) {
        Ok(JobKind::Psi) => validate_psi(spec),
        Ok(JobKind::DpStats) => validate_dp_stats(spec),
        Ok(JobKind::SecureSum) => validate_secure_sum(spec),
        Ok(JobKind::Unspecified) => Err("kind: not set; set kind = \"psi\" or \"dp_stats\"".into()),
        Err(_) => Err(format!(
            "kind: unknown kind number {}; this coordinator runs kind = \"psi\" or \"dp_stats\"",
            spec.kind
        )),
    }
}

/// Checks names and columns of participant number `i` (0-based).
fn validate_participant(i: usize, p: &Participant) -> Result<(), String> {
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
fn check_name(name: &str) -> Result<(), String> {
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

/// Checks the PSI-specific parts of a spec.
fn validate_psi(spec: &JobSpec) -> Result<(), String> {
    let Some(psi) = &spec.psi else {
        return Err(
            "psi: a psi job needs a [psi] table with mode = \"match\", \"cardinality\" or \
             \"sum\""
                .into(),
        );
    };
    if spec.dp_stats.is_some() {
        return Err("dp_stats: a psi job takes no [dp_stats] table".into());
    }
    let mode = match PsiMode::try_from(psi.mode) {
        Ok(m @ (PsiMode::Match | PsiMode::Cardinality | PsiMode::Sum)) => m,
        Ok(PsiMode::Unspecified) => {
            return Err(
                "psi.mode: not set; set mode = \"match\", \"cardinality\" or \"sum\"".into(),
            );
        }
        Err(_) => {
            return Err(format!(
                "psi.mode: unknown mode number {}; use \"match\", \"cardinality\" or \"sum\"",
                psi.mode
            ));
        }
    };
    if let Some(dp) = &psi.dp {
        validate_dp(dp, "psi.dp")?;
    }
    if let Some(dp) = &psi.count_dp {
        validate_dp(dp, "psi.count_dp")?;
    }
    if mode == PsiMode::Sum {
        if psi.dp.is_none() || psi.count_dp.is_none() {
            return Err(
                "psi: sum mode releases only noisy values; set [psi.dp] (noise on the \
                        sum) and [psi.count_dp] (noise on the count), each with an epsilon"
                    .into(),
            );
        }
        validate_bounds(psi.lower, psi.upper, psi.decimals, "psi")?;
        if psi.lower < 0.0 {
            return Err("psi.lower: sum mode sums non-negative values; set lower >= 0".into());
        }
    } else {
        if psi.count_dp.is_some() {
            return Err(
                "psi.count_dp: only sum mode takes count_dp; use [psi.dp] to noise the \
                        count of a match or cardinality job"
                    .into(),
            );
        }
        if psi.lower != 0.0 || psi.upper != 0.0 {
            return Err("psi.lower/upper: clamping bounds apply to sum mode only".into());
        }
    }
    if spec.participants.len() != 2 {
        return Err(format!(
            "participants: a psi job needs exactly 2 participants (one receiver, one sender), \
             found {}",
            spec.participants.len()
        ));
    }
    let (a, b) = (&spec.participants[0], &spec.participants[1]);
    if a.node == b.node {
        return Err(format!(
            "participants: both participants are node '{}'; a psi job runs between two \
             different nodes",
            a.node
        ));
    }
    for (i, p) in spec.participants.iter().enumerate() {
        match PsiRole::try_from(p.psi_role) {
            Ok(PsiRole::Receiver | PsiRole::Sender) => {}
            Ok(PsiRole::Unspecified) => {
                return Err(format!(
                    "participant {} (node '{}'): role is not set; set role = \"receiver\" or \
                     \"sender\"",
                    i + 1,
                    p.node
                ));
            }
            Err(_) => {
                return Err(format!(
                    "participant {} (node '{}'): unknown role number {}; use \"receiver\" or \
                     \"sender\"",
                    i + 1,
                    p.node,
                    p.psi_role
                ));
            }
        }
    }
    let receivers = spec
        .participants
        .iter()
        .filter(|p| p.psi_role() == PsiRole::Receiver)
        .count();
    if receivers != 1 {
        let role = if receivers == 0 { "sender" } else { "receiver" };
        return Err(format!(
            "participants: both participants have role = \"{role}\"; a psi job needs exactly \
             one \"receiver\" (who learns the result) and one \"sender\""
        ));
    }
    for (i, p) in spec.participants.iter().enumerate() {
        let n = i + 1;
        let sum_receiver = mode == PsiMode::Sum && p.psi_role() == PsiRole::Receiver;
        if sum_receiver {
            if p.value_column.trim().is_empty() {
                return Err(format!(
                    "participant {n} (node '{}'): value_column: sum mode needs the receiver's \
                     value column (e.g. value_column = \"amount\")",
                    p.node
                ));
            }
            if p.columns.len() != 1 {
                return Err(format!(
                    "participant {n} (node '{}'): columns: sum mode needs exactly one \
                     identifier column for the receiver, so that no value is counted twice \
                     (e.g. columns = [\"email\"])",
                    p.node
                ));
            }
        } else if !p.value_column.is_empty() {
            return Err(format!(
                "participant {n} (node '{}'): value_column: only the receiver of a sum-mode \
                 job names a value column",
                p.node
            ));
        }
    }
    Ok(())
}

/// Checks DP parameters; `field` names the table in job-file terms.
fn validate_dp(dp: &DpParams, field: &str) -> Result<(), String> {
    if !(dp.epsilon.is_finite() && dp.epsilon > 0.0) {
        return Err(format!(
            "{field}.epsilon: must be a positive number (e.g. 0.5), got {}",
            dp.epsilon
        ));
    }
    validate_delta(dp.mechanism, dp.delta, &format!("{field}.delta"))
}

/// Checks delta against the mechanism.
fn validate_delta(mechanism: i32, delta: f64, field: &str) -> Result<(), String> {
    match DpMechanism::try_from(mechanism) {
        Ok(DpMechanism::Laplace) => {
            if delta != 0.0 {
                return Err(format!(
                    "{field}: the laplace mechanism is pure epsilon-DP and takes no delta; \
                     remove delta or use mechanism = \"gaussian\""
                ));
            }
        }
        Ok(DpMechanism::Gaussian) => {
            if !(delta > 0.0 && delta < 1.0) {
                return Err(format!(
                    "{field}: the gaussian mechanism needs 0 < delta < 1 (e.g. 1e-6), got {delta}"
                ));
            }
        }
        Err(_) => return Err(format!("{field}: unknown mechanism number {mechanism}")),
    }
    Ok(())
}

/// Checks clamping bounds and decimals; `field` names the table.
fn validate_bounds(lower: f64, upper: f64, decimals: u32, field: &str) -> Result<(), String> {
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
    Ok(())
}

/// The Shamir threshold of a secure_sum job with `n` participants: the job's, or
/// floor(2n/3) + 1.
pub fn secure_sum_threshold(p: &SecureSumParams, n: usize) -> u32 {
    if p.threshold > 0 {
        p.threshold
    } else {
        parley_crypto::secagg::Params::default_threshold(n as u32)
    }
}

/// Words per node vector of a secure_sum job: per category (and "other" when bucketed), the
/// count (if set) then the clamped sum (if a value column is set).
pub fn secure_sum_vector_len(p: &SecureSumParams) -> usize {
    let cats = p.categories.len() + usize::from(p.other() == OtherRows::Bucket);
    cats * (usize::from(p.count) + usize::from(!p.value_column.is_empty()))
}

/// Checks categories: 1..=MAX_CATEGORIES distinct printable names, no clash with "other".
fn validate_categories(
    categories: &[String],
    other: i32,
    field: &str,
    max: usize,
) -> Result<(), String> {
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
                "{field}.categories: '{}' is not a valid category name (1 to {MAX_COLUMN_BYTES} \
                 printable bytes)",
                c.escape_debug()
            ));
        }
        if !seen.insert(c.as_str()) {
            return Err(format!("{field}.categories: '{c}' is listed twice"));
        }
    }
    match OtherRows::try_from(other) {
        Ok(OtherRows::Bucket) if seen.contains(OTHER_CATEGORY) => Err(format!(
            "{field}.categories: '{OTHER_CATEGORY}' is the name of the bucket for rows outside \
             the categories; rename the category or set other = \"drop\""
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{field}.other: unknown value number {other}")),
    }
}

/// Checks the secure-aggregation parts of a spec.
fn validate_secure_sum(spec: &JobSpec) -> Result<(), String> {
    let Some(p) = &spec.secure_sum else {
        return Err(
            "secure_sum: a secure_sum job needs a [secure_sum] table with \
                    segment_column, categories and count and/or value_column"
                .into(),
        );
    };
    if spec.psi.is_some() || spec.dp_stats.is_some() {
        return Err("secure_sum: a secure_sum job takes no [psi] or [dp_stats] table".into());
    }
    let n = spec.participants.len();
    if !(3..=MAX_SECURE_SUM_NODES).contains(&n) {
        return Err(format!(
            "participants: a secure_sum job needs between 3 and {MAX_SECURE_SUM_NODES} \
             participants, found {n}"
        ));
    }
    let mut nodes = HashSet::new();
    for (i, q) in spec.participants.iter().enumerate() {
        if !nodes.insert(q.node.as_str()) {
            return Err(format!(
                "participants: node '{}' is listed twice; each node contributes once",
                q.node
            ));
        }
        if q.psi_role() != PsiRole::Unspecified
            || !q.value_column.is_empty()
            || !q.columns.is_empty()
        {
            return Err(format!(
                "participant {} (node '{}'): a secure_sum participant takes only node and \
                 dataset; name columns in [secure_sum]",
                i + 1,
                q.node
            ));
        }
    }
    if p.segment_column.trim().is_empty() || p.segment_column.len() > MAX_COLUMN_BYTES {
        return Err("secure_sum.segment_column: name the segment column to group by".into());
    }
    // Secure sums are bounded by the vector length (checked below), not by the DP table size.
    validate_categories(&p.categories, p.other, "secure_sum", MAX_SECURE_SUM_VECTOR)?;
    if !p.count && p.value_column.is_empty() {
        return Err(
            "secure_sum: set count = true and/or value_column; otherwise there is \
                    nothing to add up"
                .into(),
        );
    }
    if !p.value_column.is_empty() {
        if p.value_column.len() > MAX_COLUMN_BYTES {
            return Err("secure_sum.value_column: name too long".into());
        }
        validate_bounds(p.lower, p.upper, p.decimals, "secure_sum")?;
    } else if p.lower != 0.0 || p.upper != 0.0 {
        return Err("secure_sum.lower/upper: clamping bounds need a value_column".into());
    }
    let len = secure_sum_vector_len(p);
    if len > MAX_SECURE_SUM_VECTOR {
        return Err(format!(
            "secure_sum: {len} values per node is more than {MAX_SECURE_SUM_VECTOR}; declare \
             fewer categories"
        ));
    }
    let t = secure_sum_threshold(p, n);
    if !(t as usize * 2 > n && t as usize <= n && t >= 2) {
        return Err(format!(
            "secure_sum.threshold: with {n} participants the threshold must be more than half \
             of them and at most all of them ({}..={n}), got {t}",
            n / 2 + 1
        ));
    }
    if p.min_contributors != 0 && !(p.min_contributors >= t && p.min_contributors as usize <= n) {
        return Err(format!(
            "secure_sum.min_contributors: must be between the threshold {t} and the number of \
             participants {n}, got {}",
            p.min_contributors
        ));
    }
    if p.round_timeout_secs > MAX_ROUND_TIMEOUT_SECS {
        return Err(format!(
            "secure_sum.round_timeout_secs: at most {MAX_ROUND_TIMEOUT_SECS}, got {}",
            p.round_timeout_secs
        ));
    }
    if !p.receiver.is_empty() && !nodes.contains(p.receiver.as_str()) {
        return Err(format!(
            "secure_sum.receiver: '{}' is not a participant; name one of the participating \
             nodes or leave receiver out",
            p.receiver
        ));
    }
    if let Some(dp) = &p.dp {
        validate_dp(dp, "secure_sum.dp")?;
        if dp.mechanism() != DpMechanism::Gaussian {
            return Err(
                "secure_sum.dp.mechanism: distributed DP uses the distributed discrete \
                        Gaussian; set mechanism = \"gaussian\" and a delta"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Checks the DP-statistics parts of a spec.
fn validate_dp_stats(spec: &JobSpec) -> Result<(), String> {
    let Some(d) = &spec.dp_stats else {
        return Err(
            "dp_stats: a dp_stats job needs a [dp_stats] table with segment_column, \
                    categories and at least one [[dp_stats.measures]]"
                .into(),
        );
    };
    if spec.psi.is_some() {
        return Err("psi: a dp_stats job takes no [psi] table".into());
    }
    if spec.participants.len() != 1 {
        return Err(format!(
            "participants: a dp_stats job runs on exactly one node's dataset, found {} \
             participants; submit one job per dataset",
            spec.participants.len()
        ));
    }
    let p = &spec.participants[0];
    if p.psi_role() != PsiRole::Unspecified || !p.value_column.is_empty() || !p.columns.is_empty() {
        return Err(format!(
            "participant 1 (node '{}'): a dp_stats participant takes only node and dataset; \
             name columns in [dp_stats]",
            p.node
        ));
    }
    if d.segment_column.trim().is_empty() || d.segment_column.len() > MAX_COLUMN_BYTES {
        return Err("dp_stats.segment_column: name the segment column to group by".into());
    }
    validate_categories(&d.categories, d.other, "dp_stats", MAX_CATEGORIES)?;
    if d.measures.is_empty() || d.measures.len() > MAX_MEASURES {
        return Err(format!(
            "dp_stats.measures: declare between 1 and {MAX_MEASURES} [[dp_stats.measures]], got {}",
            d.measures.len()
        ));
    }
    validate_delta(d.mechanism, d.delta, "dp_stats.delta")?;
    if d.decimals > MAX_DECIMALS {
        return Err(format!(
            "dp_stats.decimals: at most {MAX_DECIMALS} decimal places, got {}",
            d.decimals
        ));
    }
    let mut has_count = false;
    for (i, m) in d.measures.iter().enumerate() {
        let field = format!("dp_stats.measures[{i}]");
        if !(m.epsilon.is_finite() && m.epsilon > 0.0) {
            return Err(format!(
                "{field}.epsilon: must be a positive number (e.g. 0.25), got {}",
                m.epsilon
            ));
        }
        match MeasureKind::try_from(m.kind) {
            Ok(MeasureKind::Count) => {
                has_count = true;
                if !m.column.is_empty() || m.lower != 0.0 || m.upper != 0.0 {
                    return Err(format!(
                        "{field}: a count takes no column or bounds (it counts rows)"
                    ));
                }
            }
            Ok(kind @ (MeasureKind::Sum | MeasureKind::Mean)) => {
                has_count |= kind == MeasureKind::Mean;
                if m.column.trim().is_empty() || m.column.len() > MAX_COLUMN_BYTES {
                    return Err(format!(
                        "{field}.column: a sum or mean needs its value column"
                    ));
                }
                validate_bounds(m.lower, m.upper, d.decimals, &field)?;
            }
            _ => {
                return Err(format!(
                    "{field}.kind: set kind = \"count\", \"sum\" or \"mean\""
                ));
            }
        }
    }
    if d.min_count > 0 && !has_count {
        return Err(
            "dp_stats.min_count: suppression uses the noisy count; add a count (or \
                    mean) measure or remove min_count"
                .into(),
        );
    }
    Ok(())
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
            Err(CoordError::JobFileInvalid { origin, reason }) => {
                assert_eq!(origin, "test.toml");
                reason
            }
            other => panic!("expected JobFileInvalid, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse_job_toml(text, "test.toml") {
            Err(e @ CoordError::JobFileSyntax { .. }) => e.to_string(),
            other => panic!("expected JobFileSyntax, got {other:?}"),
        }
    }

    #[test]
    fn sum_and_dp_stats_examples_parse() {
        let spec =
            parse_job_toml(include_str!("../examples/job-sum.toml"), "job-sum.toml").unwrap();
        let psi = spec.psi.unwrap();
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
        let d = spec.dp_stats.unwrap();
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
        let p = spec.secure_sum.clone().unwrap();
        assert_eq!(secure_sum_threshold(&p, 5), 4);
        assert_eq!(secure_sum_vector_len(&p), 8);
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
        let e = invalid(&text.replace("receiver = \"retailer-1\"", "receiver = \"brand\""));
        assert!(e.contains("not a participant"), "{e}");
        assert_eq!(p.receiver, "retailer-1");
        let dup = text.replace("retailer-5", "retailer-4");
        assert!(invalid(&dup).contains("listed twice"));
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
        let psi = spec.psi.unwrap();
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
        let psi = spec.psi.unwrap();
        assert_eq!(psi.mode(), PsiMode::Cardinality);
        assert_eq!(spec.participants.len(), 2);
        let roles: Vec<_> = spec.participants.iter().map(|p| p.psi_role()).collect();
        assert!(roles.contains(&PsiRole::Receiver) && roles.contains(&PsiRole::Sender));
    }

    #[test]
    fn minimal_defaults() {
        let spec = parse_job_toml(MINIMAL, "m.toml").unwrap();
        assert_eq!(spec.psi.unwrap().min_intersection, 0);
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
        spec.psi.as_mut().unwrap().mode = 0;
        assert!(
            validate_spec(&spec)
                .unwrap_err()
                .starts_with("psi.mode: not set")
        );
        spec.psi.as_mut().unwrap().mode = 99;
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
        assert!(matches!(err, CoordError::JobFileRead { .. }));
        assert!(err.to_string().contains("/nonexistent/job.toml"));
    }
}
