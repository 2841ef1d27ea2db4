//! Limits every job is checked against, whoever wrote it.
//!
//! They bound what an analyst can make a node or the coordinator allocate or compute, and keep
//! every sum inside the range the protocols decode.

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
/// Largest contribution bound of a DP PSI job (`max_records_per_identifier`): the noise
/// grows with it, so beyond this a count is all noise.
pub const MAX_RECORDS_PER_IDENTIFIER: u32 = 1000;
/// Largest contribution bound of a dp_stats job (`max_rows_per_person`).
pub const MAX_ROWS_PER_PERSON: u32 = 10_000;
/// The ε of a secure_sum job that sets neither `[secure_sum.dp]` nor `exact = true`.
pub const DEFAULT_SECURE_SUM_EPSILON: f64 = 1.0;
/// The δ of a secure_sum job that sets neither `[secure_sum.dp]` nor `exact = true`.
pub const DEFAULT_SECURE_SUM_DELTA: f64 = 1e-6;
/// Most R × F × M cells an rfm job may declare.
pub const MAX_RFM_CELLS: usize = 1000;
/// Most cohorts a lift job may declare.
pub const MAX_LIFT_COHORTS: usize = 64;
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
