//! The node's error type.
//!
//! One enum, [`NodeError`], with variants grouped by whose fault the error is:
//!
//! * **Config** — the operator's node config file cannot be read, parsed or is inconsistent.
//! * **Dataset** — a dataset's CSV file cannot be read, does not match its declaration, or
//!   has too many bad rows; or a job names a column the dataset does not have.
//! * **Policy** — the operator's local policy file cannot be read, parsed or is inconsistent.
//! * **Privacy budget** — a release does not fit a dataset's budget, the dataset has none, or
//!   the ledger database cannot be used or fails verification.
//!
//! Further groups (coordinator link, job execution) are added as the node grows; the enum
//! is `#[non_exhaustive]` so that adding them is not a breaking change.
//!
//! Privacy: no message ever contains a raw identifier, key or value from a dataset — only
//! file paths, line numbers, column names, counts and reasons.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Everything that can go wrong in the node library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    // ───────────────────────────── Config ─────────────────────────────
    /// The node config file cannot be read.
    #[error("cannot read node config '{}': {source}; check the path given to --config", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The node config file is not valid TOML or does not have the expected shape
    /// (unknown field, wrong type, missing required field).
    #[error("invalid node config '{}': {message}", path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parser's description, with line and column.
        message: String,
    },

    /// A field of the node config has a value that is not allowed.
    #[error("invalid node config '{}': {field}: {problem}", path.display())]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// The offending field, e.g. `datasets[1].name` or `limits.batch_points`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// A directory the node needs (state directory, outputs) cannot be created.
    #[error("cannot create directory '{}': {source}; check state_dir in the node config and its permissions", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The `[normalization]` settings are rejected by the identifier normaliser.
    #[error("invalid [normalization] in node config: {source}")]
    Normalization {
        /// The normaliser's error.
        source: parley_crypto::CryptoError,
    },

    // ───────────────────────────── Dataset ────────────────────────────
    /// A dataset's CSV file cannot be opened or read.
    #[error("dataset '{dataset}' ({}): cannot read the CSV file: {source}; check [[datasets]] path in the node config", path.display())]
    DatasetRead {
        /// Dataset name.
        dataset: String,
        /// The CSV file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A dataset's CSV header is missing or unusable.
    #[error("dataset '{dataset}' ({}): {problem}", path.display())]
    DatasetHeader {
        /// Dataset name.
        dataset: String,
        /// The CSV file.
        path: PathBuf,
        /// What is wrong with the header and how to fix it.
        problem: String,
    },

    /// A column declared in the node config is not in the CSV header.
    #[error(
        "dataset '{dataset}' ({}): column '{column}' declared in the node config is not in the CSV header (header has: {header}); fix {setting}",
        path.display()
    )]
    MissingColumn {
        /// Dataset name.
        dataset: String,
        /// The CSV file.
        path: PathBuf,
        /// The declared column name.
        column: String,
        /// The header's column names, comma-separated (names that look like data are redacted).
        header: String,
        /// The config setting to fix, e.g. `[[datasets.columns]] name`.
        setting: &'static str,
    },

    /// More rows of a dataset were bad than its `max_bad_row_fraction` allows.
    #[error(
        "dataset '{dataset}' ({}): {bad_rows} of {rows_read} rows are bad ({:.2}%), more than max_bad_row_fraction = {max_fraction} allows ({}); fix the file or raise [[datasets]] max_bad_row_fraction in the node config",
        path.display(),
        percent(*bad_rows, *rows_read),
        describe_bad_rows(by_reason, example_lines)
    )]
    TooManyBadRows {
        /// Dataset name.
        dataset: String,
        /// The CSV file.
        path: PathBuf,
        /// Data rows read (header excluded).
        rows_read: u64,
        /// Rows rejected.
        bad_rows: u64,
        /// The configured limit.
        max_fraction: f64,
        /// Rejected rows per reason.
        by_reason: BTreeMap<String, u64>,
        /// Line numbers (1-based, header is line 1) of the first rejected rows.
        example_lines: Vec<u64>,
    },

    /// A sha256 column holds digests in both encodings.
    #[error(
        "dataset '{dataset}' ({}): column '{column}' mixes SHA-256 encodings: {hex} values in hex and {base64} in base64; a column is written one way (re-export it in one encoding)",
        path.display()
    )]
    MixedEncoding {
        /// Dataset name.
        dataset: String,
        /// The CSV file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Values written in hex.
        hex: u64,
        /// Values written in base64.
        base64: u64,
    },

    /// A job or caller named a column the dataset does not have.
    #[error("dataset '{dataset}' has no column '{column}' (identifier columns: {}); use one of those", identifier_columns.join(", "))]
    UnknownColumn {
        /// Dataset name.
        dataset: String,
        /// The requested column.
        column: String,
        /// The dataset's identifier columns.
        identifier_columns: Vec<String>,
    },

    /// A job or caller asked for identifiers from a column that does not hold identifiers.
    #[error("dataset '{dataset}': column '{column}' is a {kind} column, not an identifier column (identifier columns: {}); use one of those", identifier_columns.join(", "))]
    NotIdentifierColumn {
        /// Dataset name.
        dataset: String,
        /// The requested column.
        column: String,
        /// Its kind (`key`, `value`, `segment`).
        kind: &'static str,
        /// The dataset's identifier columns.
        identifier_columns: Vec<String>,
    },

    // ───────────────────────────── Policy ─────────────────────────────
    /// The local policy file cannot be read.
    #[error("cannot read policy '{}': {source}; check policy in the node config", path.display())]
    PolicyRead {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The local policy file is not valid TOML or does not have the expected shape.
    #[error("invalid policy '{}': {message}", path.display())]
    PolicyParse {
        /// The policy file.
        path: PathBuf,
        /// The parser's description, with line and column.
        message: String,
    },

    /// A rule of the local policy has a value that is not allowed.
    #[error("invalid policy '{}': rule #{rule}: {problem}", path.display())]
    PolicyInvalid {
        /// The policy file.
        path: PathBuf,
        /// 1-based index of the offending `[[rule]]`.
        rule: usize,
        /// What is wrong and how to fix it.
        problem: String,
    },

    // ───────────────────────── Privacy budget ─────────────────────────
    /// A differentially private release does not fit the remaining budget of its dataset.
    /// The ledger is unchanged.
    #[error(
        "privacy budget of dataset '{dataset}' exhausted: {}",
        describe_exhaustion(*requested_epsilon, *requested_delta, *remaining_epsilon, *remaining_delta, period_end.as_deref())
    )]
    BudgetExhausted {
        /// Dataset name.
        dataset: String,
        /// Epsilon the release needs.
        requested_epsilon: f64,
        /// Delta the release needs.
        requested_delta: f64,
        /// Epsilon left this period.
        remaining_epsilon: f64,
        /// Delta left this period.
        remaining_delta: f64,
        /// When the budget refreshes (RFC 3339, UTC); `None` if it never does.
        period_end: Option<String>,
    },

    /// A differentially private release was asked of a dataset that has no budget.
    #[error(
        "dataset '{dataset}' has no [datasets.budget] in the node config; DP releases need one (add epsilon, and optionally delta and period, to that dataset's budget table)"
    )]
    NoBudget {
        /// Dataset name.
        dataset: String,
    },

    /// A release's epsilon or delta is not a valid cost.
    #[error(
        "cannot charge the privacy budget of dataset '{dataset}': {problem}; check the job's DP parameters"
    )]
    InvalidCharge {
        /// Dataset name.
        dataset: String,
        /// What is wrong.
        problem: &'static str,
    },

    /// The ledger database cannot be opened, read or written.
    #[error(
        "privacy-budget ledger '{}': cannot {action}: {source}; check state_dir in the node config, its permissions and free disk space",
        path.display()
    )]
    LedgerStore {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. `open the database`.
        action: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },

    /// The ledger database holds rows that fail verification.
    #[error(
        "privacy-budget ledger '{}' is damaged or was tampered with (dataset '{dataset}'): {problem}; do not delete it: run `parley-node ledger verify --dataset {dataset}` to find the first bad row, and restore the file from a backup",
        path.display()
    )]
    LedgerCorrupt {
        /// The database file.
        path: PathBuf,
        /// The affected dataset.
        dataset: String,
        /// What failed.
        problem: String,
    },

    /// A charge was attempted on a ledger opened without the node's signing key.
    #[error(
        "privacy-budget ledger '{}' was opened without the node's keys and cannot record charges; charges are made by the running node",
        path.display()
    )]
    LedgerReadOnly {
        /// The database file.
        path: PathBuf,
    },

    // ───────────── identity, link and jobs ─────────────
    /// The node's certificate, name or long-term keys do not fit together.
    #[error("{0}")]
    Identity(String),

    /// TLS material could not be loaded or the coordinator could not be reached.
    #[error(transparent)]
    Net(#[from] parley_net::NetError),

    /// The link to the coordinator failed or was refused.
    #[error("{0}")]
    Link(String),

    /// Protocol maths rejected input (malformed point, out-of-order batch, bad envelope...).
    #[error(transparent)]
    Crypto(#[from] parley_crypto::CryptoError),

    /// A job broke the protocol or could not proceed.
    #[error("job {job}: {detail}")]
    Protocol {
        /// Job id (empty if not yet known).
        job: String,
        /// What happened.
        detail: String,
    },

    /// A file the node writes (keys, match outputs) could not be written.
    #[error("cannot write '{}': {source}; check state_dir in the node config and its permissions", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The job was aborted (by the coordinator, or because the link was lost).
    #[error("job cancelled")]
    Cancelled,
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// "missing key: 4, no valid identifier: 6; first at lines 3, 7, 9".
fn describe_bad_rows(by_reason: &BTreeMap<String, u64>, lines: &[u64]) -> String {
    let mut out = String::new();
    for (i, (reason, n)) in by_reason.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{reason}: {n}");
    }
    if !lines.is_empty() {
        out.push_str("; first at lines ");
        let shown: Vec<String> = lines.iter().take(10).map(u64::to_string).collect();
        out.push_str(&shown.join(", "));
    }
    out
}

/// "this release needs epsilon 0.5 but only 0.2 remains this period (until …); ask …".
fn describe_exhaustion(
    eps: f64,
    delta: f64,
    left_eps: f64,
    left_delta: f64,
    period_end: Option<&str>,
) -> String {
    use parley_crypto::ledger::format_amount as amount;
    let (eps_short, delta_short) = (eps > left_eps, delta > left_delta);
    let (eps, delta, left_eps, left_delta) = (
        amount(eps),
        amount(delta),
        amount(left_eps),
        amount(left_delta),
    );
    let mut out = String::from("this release needs ");
    if eps_short || !delta_short {
        let _ = write!(out, "epsilon {eps} but only {left_eps} remains");
        if delta_short {
            let _ = write!(out, ", and delta {delta} but only {left_delta} remains");
        }
    } else {
        let _ = write!(out, "delta {delta} but only {left_delta} remains");
    }
    match period_end {
        Some(end) => {
            let _ = write!(
                out,
                " this period (until {end}); ask the node operator or wait for the refresh"
            );
        }
        None => out.push_str(
            " (this budget never refreshes); ask the node operator to raise the dataset's [datasets.budget]",
        ),
    }
    out
}

impl NodeError {
    /// A protocol failure of `job`.
    pub fn protocol(job: &str, detail: &str) -> NodeError {
        NodeError::Protocol {
            job: job.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Attaches the job id to a protocol error raised without one.
    pub fn for_job(self, job: &str) -> NodeError {
        match self {
            NodeError::Protocol { job: j, detail } if j.is_empty() => NodeError::Protocol {
                job: job.to_string(),
                detail,
            },
            other => other,
        }
    }
}
