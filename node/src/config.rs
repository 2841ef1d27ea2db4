//! The node config file (`node.toml`).
//!
//! One TOML file per node: who the node is, where the coordinator is, the node's TLS files,
//! identifier normalisation, limits, and the datasets it offers. Every table rejects unknown
//! fields, so a typo is an error rather than a silently ignored setting. Relative paths are
//! resolved against the directory holding the config file. See `node/examples/node.toml`
//! for a documented example.
//!
//! [`NodeConfig::load`] returns a config that has been checked: names are well formed and
//! unique, every dataset has an identifier column, limits are in range.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_crypto::ledger::{Budget, Period};
use parley_crypto::normalize::{IdKind, Normalizer, Profile};
use serde::Deserialize;

use crate::NodeError;

/// Largest `limits.batch_points`: a batch of 32-byte points must fit in one 1 MiB chunk.
pub const MAX_BATCH_POINTS: u32 = (parley_proto::MAX_CHUNK_BYTES / 32) as u32;

/// Most columns a dataset may declare.
pub const MAX_COLUMNS: usize = 256;

/// A node's configuration, as read from `node.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name. Must equal the common name of the node's TLS certificate; partners'
    /// policies refer to the node by this name.
    pub name: String,
    /// Directory for the node's keys and job outputs; created if missing.
    pub state_dir: PathBuf,
    /// The local policy file (see [`crate::policy`]).
    pub policy: PathBuf,
    /// How to reach the coordinator.
    pub coordinator: CoordinatorLink,
    /// The node's TLS files.
    pub tls: TlsConfig,
    /// Identifier normalisation settings.
    #[serde(default)]
    pub normalization: NormalizationConfig,
    /// Resource limits for jobs.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Back-off when the link to the coordinator drops.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// The datasets this node offers.
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
}

/// `[coordinator]`: how to reach the coordinator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorLink {
    /// Coordinator URL; must start with `https://`.
    pub url: String,
    /// Name the coordinator's certificate must carry (default `coordinator`).
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

/// `[tls]`: the node's TLS files (paths, not contents).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Federation CA certificate (PEM), used to verify the coordinator and peers' key bindings.
    pub ca_cert: PathBuf,
    /// The node's certificate (PEM), issued by the federation CA with role `node`.
    pub cert: PathBuf,
    /// The node's private key (PEM) matching `cert`.
    pub key: PathBuf,
}

/// `[normalization]`: how raw emails and phone numbers become identifiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizationConfig {
    /// Normalisation profile: `google` (default), `meta`, `uid2` or `basic`.
    #[serde(default)]
    pub profile: Profile,
    /// Country assumed for phone numbers without an international prefix (ISO 3166
    /// two-letter code, default `US`).
    #[serde(default = "default_country")]
    pub default_country: String,
}

impl Default for NormalizationConfig {
    fn default() -> Self {
        NormalizationConfig {
            profile: Profile::default(),
            default_country: default_country(),
        }
    }
}

/// `[limits]`: resource limits for jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most identifiers per side a job may declare (default 20 000 000).
    #[serde(default = "default_max_set_size")]
    pub max_set_size: u64,
    /// Points per protocol message, 1..=32768 (default 16384).
    #[serde(default = "default_batch_points")]
    pub batch_points: u32,
    /// Longest a job may run, seconds (default 3600).
    #[serde(default = "default_job_deadline_secs")]
    pub job_deadline_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_set_size: default_max_set_size(),
            batch_points: default_batch_points(),
            job_deadline_secs: default_job_deadline_secs(),
        }
    }
}

impl LimitsConfig {
    /// `job_deadline_secs` as a duration.
    pub fn job_deadline(&self) -> Duration {
        Duration::from_secs(self.job_deadline_secs)
    }
}

/// `[reconnect]`: exponential back-off when the coordinator link drops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay, milliseconds (default 200).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Largest delay, milliseconds (default 10000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

impl ReconnectConfig {
    /// `initial_ms` as a duration.
    pub fn initial(&self) -> Duration {
        Duration::from_millis(self.initial_ms)
    }

    /// `max_ms` as a duration.
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }
}

/// `[[datasets]]`: one CSV file the node offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Dataset name, unique within the node, `[a-z0-9_-]+`.
    pub name: String,
    /// The CSV file (with a header row).
    pub path: PathBuf,
    /// Column holding the record key written to match outputs; must be in the header.
    pub key_column: String,
    /// The privacy unit: the column naming the person each row belongs to (default: the key
    /// column). Every DP release bounds what one person contributes, so a transaction table
    /// names its customer column here.
    #[serde(default)]
    pub person_column: Option<String>,
    /// Largest fraction of bad rows (0..=1) before loading fails (default 0.01).
    #[serde(default = "default_max_bad_row_fraction")]
    pub max_bad_row_fraction: f64,
    /// Field delimiter, one ASCII character (default `,`).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Columns used by jobs; at least one must hold identifiers.
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// The dataset's privacy budget. Without one, no differentially private release of the
    /// dataset is possible.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
}

/// `[datasets.budget]`: the privacy budget of one dataset, charged by every DP release.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Total epsilon per period; finite and > 0.
    pub epsilon: f64,
    /// Total delta per period, 0 <= delta < 1 (default 0: only pure-DP releases).
    #[serde(default)]
    pub delta: f64,
    /// When the budget refreshes: `never` (default), `daily`, `weekly` (ISO weeks from Monday)
    /// or `monthly`; periods are cut in UTC.
    #[serde(default)]
    pub period: Period,
}

impl BudgetConfig {
    /// The budget as the ledger uses it.
    pub fn budget(&self) -> Budget {
        Budget {
            epsilon: self.epsilon,
            // Negative zero is zero.
            delta: if self.delta == 0.0 { 0.0 } else { self.delta },
            period: self.period,
        }
    }
}

impl DatasetConfig {
    /// The delimiter as a byte (`,` when not set). Checked at config load to be ASCII.
    pub fn delimiter_byte(&self) -> u8 {
        match self.delimiter {
            Some(c) if c.is_ascii() => c as u8,
            _ => b',',
        }
    }
}

/// `[[datasets.columns]]`: one column of a dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Column name as in the CSV header.
    pub name: String,
    /// What the column holds.
    pub kind: ColumnKind,
}

/// What a dataset column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Email addresses (normalised and hashed).
    Email,
    /// Phone numbers (normalised to E.164 and hashed).
    Phone,
    /// Identifiers already SHA-256 hashed (64 hex digits in any case, or base64).
    Sha256,
    /// Mobile advertising IDs (IDFA, GAID, OAID), normalised to lowercase UUID form and
    /// hashed; the all-zero opt-out ID is refused.
    Maid,
    /// A finite number, e.g. a purchase amount.
    Value,
    /// A category label, e.g. a region or audience segment.
    Segment,
    /// A date or date-time in ISO 8601 (`2026-11-30`, `2026-11-30T14:05:00Z`,
    /// `2026-11-30T14:05:00+01:00`, or without an offset, read as UTC), e.g. a purchase date.
    Date,
}

impl ColumnKind {
    /// The kind's name as written in configs and in `ColumnInfo.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::Email => "email",
            ColumnKind::Phone => "phone",
            ColumnKind::Sha256 => "sha256",
            ColumnKind::Maid => "maid",
            ColumnKind::Value => "value",
            ColumnKind::Segment => "segment",
            ColumnKind::Date => "date",
        }
    }

    /// The identifier kind, for columns that hold identifiers.
    pub fn id_kind(self) -> Option<IdKind> {
        match self {
            ColumnKind::Email => Some(IdKind::Email),
            ColumnKind::Phone => Some(IdKind::Phone),
            ColumnKind::Sha256 => Some(IdKind::Sha256),
            ColumnKind::Maid => Some(IdKind::Maid),
            ColumnKind::Value | ColumnKind::Segment | ColumnKind::Date => None,
        }
    }

    /// True for email, phone, sha256 and maid columns.
    pub fn is_identifier(self) -> bool {
        self.id_kind().is_some()
    }
}

impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_server_name() -> String {
    "coordinator".to_owned()
}
fn default_country() -> String {
    "US".to_owned()
}
fn default_max_set_size() -> u64 {
    20_000_000
}
fn default_batch_points() -> u32 {
    16_384
}
fn default_job_deadline_secs() -> u64 {
    3600
}
fn default_initial_ms() -> u64 {
    200
}
fn default_max_ms() -> u64 {
    10_000
}
fn default_max_bad_row_fraction() -> f64 {
    0.01
}

impl NodeConfig {
    /// Reads, parses and checks the config file at `path`. Relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Self::parse(&text, base_dir, path)
    }

    /// Parses and checks a config from a string; relative paths are resolved against
    /// `base_dir`. Errors name the origin as `<base_dir>/(inline config)`.
    pub fn from_toml_str(s: &str, base_dir: &Path) -> Result<NodeConfig, NodeError> {
        Self::parse(s, base_dir, &base_dir.join("(inline config)"))
    }

    fn parse(s: &str, base_dir: &Path, origin: &Path) -> Result<NodeConfig, NodeError> {
        let mut cfg: NodeConfig = toml::from_str(s).map_err(|e| NodeError::ConfigParse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.validate(origin)?;
        cfg.resolve_paths(base_dir);
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base_dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        resolve(&mut self.state_dir);
        resolve(&mut self.policy);
        resolve(&mut self.tls.ca_cert);
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        for d in &mut self.datasets {
            resolve(&mut d.path);
        }
    }

    fn validate(&self, origin: &Path) -> Result<(), NodeError> {
        let invalid = |field: &str, problem: String| NodeError::ConfigInvalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            problem,
        };

        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "name",
                format!(
                    "'{}' is not a valid node name; use 1 to 64 characters from [A-Za-z0-9._-], the common name of the node certificate",
                    self.name.escape_debug()
                ),
            ));
        }
        for (field, p) in [
            ("state_dir", &self.state_dir),
            ("policy", &self.policy),
            ("tls.ca_cert", &self.tls.ca_cert),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            if p.as_os_str().is_empty() {
                return Err(invalid(field, "is empty; set a file path".to_owned()));
            }
        }
        if !self.coordinator.url.starts_with("https://") || self.coordinator.url.len() <= 8 {
            return Err(invalid(
                "coordinator.url",
                format!(
                    "'{}' must be an https:// URL such as \"https://coordinator.example:7443\" (the link always uses mutual TLS)",
                    self.coordinator.url.escape_debug()
                ),
            ));
        }
        if self.coordinator.server_name.is_empty() {
            return Err(invalid(
                "coordinator.server_name",
                "is empty; set the name in the coordinator's certificate (default \"coordinator\")"
                    .to_owned(),
            ));
        }
        let country = &self.normalization.default_country;
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                "normalization.default_country",
                format!(
                    "'{}' is not an ISO 3166 two-letter country code; use e.g. \"US\" or \"GB\"",
                    country.escape_debug()
                ),
            ));
        }
        if let Err(e) = Normalizer::new(self.normalization.profile, country) {
            return Err(invalid("normalization.default_country", e.to_string()));
        }
        if self.limits.max_set_size == 0 {
            return Err(invalid(
                "limits.max_set_size",
                "must be at least 1 (default 20000000)".to_owned(),
            ));
        }
        if !(1..=MAX_BATCH_POINTS).contains(&self.limits.batch_points) {
            return Err(invalid(
                "limits.batch_points",
                format!(
                    "{} is out of range; use 1..={MAX_BATCH_POINTS} (a batch must fit in 1 MiB; default 16384)",
                    self.limits.batch_points
                ),
            ));
        }
        if self.limits.job_deadline_secs == 0 {
            return Err(invalid(
                "limits.job_deadline_secs",
                "must be at least 1 second (default 3600)".to_owned(),
            ));
        }
        if self.reconnect.initial_ms == 0 || self.reconnect.initial_ms > self.reconnect.max_ms {
            return Err(invalid(
                "reconnect",
                format!(
                    "initial_ms = {} and max_ms = {} must satisfy 1 <= initial_ms <= max_ms (defaults 200 and 10000)",
                    self.reconnect.initial_ms, self.reconnect.max_ms
                ),
            ));
        }

        let mut names = BTreeSet::new();
        for (i, d) in self.datasets.iter().enumerate() {
            let at = |f: &str| format!("datasets[{i}].{f}");
            if d.name.is_empty()
                || !d.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
                })
            {
                return Err(invalid(
                    &at("name"),
                    format!(
                        "'{}' is not a valid dataset name; use one or more of [a-z0-9_-]",
                        d.name.escape_debug()
                    ),
                ));
            }
            if !names.insert(d.name.as_str()) {
                return Err(invalid(
                    &at("name"),
                    format!(
                        "dataset '{}' is declared twice; dataset names must be unique",
                        d.name
                    ),
                ));
            }
            if d.path.as_os_str().is_empty() {
                return Err(invalid(
                    &at("path"),
                    "is empty; set the CSV file path".to_owned(),
                ));
            }
            if d.key_column.is_empty() {
                return Err(invalid(
                    &at("key_column"),
                    "is empty; name the CSV column holding the record key".to_owned(),
                ));
            }
            if d.person_column
                .as_deref()
                .is_some_and(|c| c.trim().is_empty())
            {
                return Err(invalid(
                    &at("person_column"),
                    "is empty; name the CSV column identifying the person (or remove it to \
                     use the key column)"
                        .to_owned(),
                ));
            }
            if !(0.0..=1.0).contains(&d.max_bad_row_fraction) {
                return Err(invalid(
                    &at("max_bad_row_fraction"),
                    format!(
                        "{} is out of range; use a fraction in [0, 1] (default 0.01)",
                        d.max_bad_row_fraction
                    ),
                ));
            }
            if let Some(c) = d.delimiter
                && (!c.is_ascii()
                    || c.is_ascii_control() && c != '\t'
                    || matches!(c, '"' | '\n' | '\r'))
            {
                return Err(invalid(
                    &at("delimiter"),
                    format!(
                        "'{}' cannot be a delimiter; use one printable ASCII character or \"\\t\", e.g. \",\" or \";\"",
                        c.escape_debug()
                    ),
                ));
            }
            if d.columns.len() > MAX_COLUMNS {
                return Err(invalid(
                    &at("columns"),
                    format!(
                        "{} columns declared; at most {MAX_COLUMNS} are supported",
                        d.columns.len()
                    ),
                ));
            }
            let mut columns = BTreeSet::new();
            for (j, c) in d.columns.iter().enumerate() {
                if c.name.is_empty() {
                    return Err(invalid(
                        &format!("datasets[{i}].columns[{j}].name"),
                        "is empty; use the column's name in the CSV header".to_owned(),
                    ));
                }
                if !columns.insert(c.name.as_str()) {
                    return Err(invalid(
                        &format!("datasets[{i}].columns[{j}].name"),
                        format!(
                            "column '{}' is declared twice in dataset '{}'; declare each column once",
                            c.name.escape_debug(),
                            d.name
                        ),
                    ));
                }
            }
            if let Some(b) = &d.budget {
                if !(b.epsilon.is_finite() && b.epsilon > 0.0) {
                    return Err(invalid(
                        &at("budget.epsilon"),
                        format!(
                            "{} is not allowed; use a finite number > 0, the total epsilon per period (e.g. 1.0)",
                            b.epsilon
                        ),
                    ));
                }
                if !(b.delta.is_finite() && (0.0..1.0).contains(&b.delta)) {
                    return Err(invalid(
                        &at("budget.delta"),
                        format!(
                            "{} is out of range; use 0 <= delta < 1, typically far below 1/rows (default 0)",
                            b.delta
                        ),
                    ));
                }
            }
            if !d.columns.iter().any(|c| c.kind.is_identifier()) {
                return Err(invalid(
                    &at("columns"),
                    format!(
                        "dataset '{}' has no identifier column; add a [[datasets.columns]] with kind = \"email\", \"phone\" or \"sha256\"",
                        d.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Directory where job outputs (match lists) are written: `state_dir/outputs`.
    pub fn output_dir(&self) -> PathBuf {
        self.state_dir.join("outputs")
    }

    /// Creates `state_dir` and [`output_dir`](Self::output_dir) if they are missing.
    pub fn create_state_dirs(&self) -> Result<(), NodeError> {
        let out = self.output_dir();
        std::fs::create_dir_all(&out).map_err(|source| NodeError::StateDir { path: out, source })
    }

    /// The dataset declared with `name`, if any.
    pub fn dataset(&self, name: &str) -> Option<&DatasetConfig> {
        self.datasets.iter().find(|d| d.name == name)
    }

    /// The privacy budget of every dataset that has a `[datasets.budget]`, by dataset name.
    pub fn budgets(&self) -> BTreeMap<String, Budget> {
        self.datasets
            .iter()
            .filter_map(|d| d.budget.map(|b| (d.name.clone(), b.budget())))
            .collect()
    }

    /// The privacy-budget ledger database: `state_dir/ledger.db`.
    pub fn ledger_path(&self) -> PathBuf {
        self.state_dir.join("ledger.db")
    }

    /// The identifier normaliser for the `[normalization]` settings.
    pub fn normalizer(&self) -> Result<Normalizer, NodeError> {
        Normalizer::new(
            self.normalization.profile,
            &self.normalization.default_country,
        )
        .map_err(|source| NodeError::Normalization { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/node.toml");

    const MINIMAL: &str = r#"
name = "brand"
state_dir = "state"
policy = "policy.toml"
[coordinator]
url = "https://127.0.0.1:7443"
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/brand.pem"
key = "certs/brand.key"
[[datasets]]
name = "crm"
path = "data/crm.csv"
key_column = "id"
[[datasets.columns]]
name = "email"
kind = "email"
"#;

    fn parse(s: &str) -> Result<NodeConfig, NodeError> {
        NodeConfig::from_toml_str(s, Path::new("/etc/parley"))
    }

    fn invalid_field(s: &str) -> String {
        match parse(s) {
            Err(NodeError::ConfigInvalid { field, .. }) => field,
            other => panic!("expected ConfigInvalid, got {other:?}"),
        }
    }

    #[test]
    fn example_parses() {
        let cfg = parse(EXAMPLE).expect("example config parses");
        assert_eq!(cfg.name, "brand");
        assert_eq!(cfg.state_dir, Path::new("/etc/parley/state"));
        assert_eq!(cfg.output_dir(), Path::new("/etc/parley/state/outputs"));
        assert_eq!(cfg.policy, Path::new("/etc/parley/policy.toml"));
        assert_eq!(cfg.tls.key, Path::new("/etc/parley/certs/brand.key"));
        assert_eq!(cfg.coordinator.server_name, "coordinator");
        assert_eq!(cfg.limits.batch_points, 16384);
        assert!(!cfg.datasets.is_empty());
        let crm = cfg.dataset("crm").expect("crm declared");
        assert_eq!(crm.path, Path::new("/etc/parley/data/crm.csv"));
        assert!(crm.columns.iter().any(|c| c.kind == ColumnKind::Email));
        assert_eq!(
            crm.budget.map(|b| b.budget()),
            Some(Budget {
                epsilon: 1.0,
                delta: 1e-6,
                period: Period::Monthly
            })
        );
    }

    #[test]
    fn defaults_apply() {
        let cfg = parse(MINIMAL).expect("minimal config parses");
        assert_eq!(cfg.coordinator.server_name, "coordinator");
        assert_eq!(cfg.normalization.profile, Profile::Google);
        assert_eq!(cfg.normalization.default_country, "US");
        assert_eq!(cfg.limits.max_set_size, 20_000_000);
        assert_eq!(cfg.limits.batch_points, 16_384);
        assert_eq!(cfg.limits.job_deadline(), Duration::from_secs(3600));
        assert_eq!(cfg.reconnect.initial(), Duration::from_millis(200));
        assert_eq!(cfg.reconnect.max(), Duration::from_millis(10_000));
        let d = &cfg.datasets[0];
        assert_eq!(d.max_bad_row_fraction, 0.01);
        assert_eq!(d.delimiter_byte(), b',');
    }

    #[test]
    fn absolute_paths_are_kept() {
        let s = MINIMAL.replace("\"state\"", "\"/var/lib/parley\"");
        let cfg = parse(&s).expect("parses");
        assert_eq!(cfg.state_dir, Path::new("/var/lib/parley"));
    }

    #[test]
    fn load_resolves_against_file_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, MINIMAL).expect("write");
        let cfg = NodeConfig::load(&path).expect("loads");
        assert_eq!(cfg.state_dir, dir.path().join("state"));
        assert_eq!(cfg.datasets[0].path, dir.path().join("data/crm.csv"));
        cfg.create_state_dirs().expect("create dirs");
        assert!(dir.path().join("state/outputs").is_dir());
    }

    #[test]
    fn missing_file_names_the_path() {
        let err =
            NodeConfig::load(Path::new("/nonexistent/parley/node.toml")).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot read node config '/nonexistent/parley/node.toml'"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let s = MINIMAL.replace("[tls]", "[tls]\nkey_pasword = \"x\"");
        match parse(&s) {
            Err(NodeError::ConfigParse { message, .. }) => {
                assert!(message.contains("key_pasword"), "{message}")
            }
            other => panic!("expected ConfigParse, got {other:?}"),
        }
        let s = MINIMAL.replace("kind = \"email\"", "kind = \"email\"\nhashed = true");
        assert!(matches!(parse(&s), Err(NodeError::ConfigParse { .. })));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let s = MINIMAL.replace("kind = \"email\"", "kind = \"mail\"");
        assert!(matches!(parse(&s), Err(NodeError::ConfigParse { .. })));
    }

    #[test]
    fn bad_dataset_names() {
        let s = MINIMAL.replace("name = \"crm\"", "name = \"CRM data\"");
        assert_eq!(invalid_field(&s), "datasets[0].name");
        let twice = format!(
            "{MINIMAL}\n[[datasets]]\nname = \"crm\"\npath = \"b.csv\"\nkey_column = \"id\"\n[[datasets.columns]]\nname = \"phone\"\nkind = \"phone\"\n"
        );
        let err = parse(&twice).expect_err("must fail");
        assert!(err.to_string().contains("declared twice"), "{err}");
        assert!(
            matches!(err, NodeError::ConfigInvalid { ref field, .. } if field == "datasets[1].name")
        );
    }

    #[test]
    fn dataset_needs_identifier_column() {
        let s = MINIMAL.replace("kind = \"email\"", "kind = \"value\"");
        assert_eq!(invalid_field(&s), "datasets[0].columns");
        let s = MINIMAL.replace(
            "[[datasets.columns]]\nname = \"email\"\nkind = \"email\"\n",
            "",
        );
        assert_eq!(invalid_field(&s), "datasets[0].columns");
    }

    #[test]
    fn duplicate_column_is_rejected() {
        let s = format!("{MINIMAL}[[datasets.columns]]\nname = \"email\"\nkind = \"sha256\"\n");
        assert_eq!(invalid_field(&s), "datasets[0].columns[1].name");
    }

    #[test]
    fn limits_are_checked() {
        for (extra, field) in [
            ("[limits]\nbatch_points = 0\n", "limits.batch_points"),
            ("[limits]\nbatch_points = 32769\n", "limits.batch_points"),
            ("[limits]\nmax_set_size = 0\n", "limits.max_set_size"),
            (
                "[limits]\njob_deadline_secs = 0\n",
                "limits.job_deadline_secs",
            ),
            ("[reconnect]\ninitial_ms = 500\nmax_ms = 100\n", "reconnect"),
            (
                "[normalization]\ndefault_country = \"usa\"\n",
                "normalization.default_country",
            ),
            (
                "[normalization]\ndefault_country = \"ZZ\"\n",
                "normalization.default_country",
            ),
        ] {
            let s = MINIMAL.replace("[[datasets]]", &format!("{extra}[[datasets]]"));
            assert_eq!(invalid_field(&s), field, "{extra}");
        }
        let s = MINIMAL.replace(
            "[[datasets]]",
            "[limits]\nbatch_points = 32768\n[[datasets]]",
        );
        assert_eq!(parse(&s).expect("max batch ok").limits.batch_points, 32768);
    }

    #[test]
    fn fraction_and_delimiter_are_checked() {
        let s = MINIMAL.replace(
            "key_column = \"id\"",
            "key_column = \"id\"\nmax_bad_row_fraction = 1.5",
        );
        assert_eq!(invalid_field(&s), "datasets[0].max_bad_row_fraction");
        let s = MINIMAL.replace(
            "key_column = \"id\"",
            "key_column = \"id\"\nmax_bad_row_fraction = -0.1",
        );
        assert_eq!(invalid_field(&s), "datasets[0].max_bad_row_fraction");
        let s = MINIMAL.replace(
            "key_column = \"id\"",
            "key_column = \"id\"\ndelimiter = \"é\"",
        );
        assert_eq!(invalid_field(&s), "datasets[0].delimiter");
        let s = MINIMAL.replace(
            "key_column = \"id\"",
            "key_column = \"id\"\ndelimiter = \";;\"",
        );
        assert!(matches!(parse(&s), Err(NodeError::ConfigParse { .. })));
        let s = MINIMAL.replace(
            "key_column = \"id\"",
            "key_column = \"id\"\ndelimiter = \"\\t\"",
        );
        assert_eq!(
            parse(&s).expect("tab ok").datasets[0].delimiter_byte(),
            b'\t'
        );
    }

    #[test]
    fn budgets_parse_and_are_checked() {
        let with = |table: &str| {
            MINIMAL.replace(
                "[[datasets.columns]]",
                &format!("[datasets.budget]\n{table}\n[[datasets.columns]]"),
            )
        };
        let cfg =
            parse(&with("epsilon = 2.0\ndelta = 1e-6\nperiod = \"monthly\"")).expect("parses");
        let budgets = cfg.budgets();
        assert_eq!(
            budgets.get("crm"),
            Some(&Budget {
                epsilon: 2.0,
                delta: 1e-6,
                period: Period::Monthly
            })
        );
        assert_eq!(cfg.ledger_path(), Path::new("/etc/parley/state/ledger.db"));
        let cfg = parse(&with("epsilon = 1")).expect("defaults");
        let b = cfg.budgets()["crm"];
        assert_eq!((b.delta, b.period), (0.0, Period::Never));
        assert!(parse(MINIMAL).expect("no budget").budgets().is_empty());
        for (table, field) in [
            ("epsilon = 0.0", "datasets[0].budget.epsilon"),
            ("epsilon = -1.0", "datasets[0].budget.epsilon"),
            ("epsilon = inf", "datasets[0].budget.epsilon"),
            ("epsilon = nan", "datasets[0].budget.epsilon"),
            ("epsilon = 1.0\ndelta = 1.0", "datasets[0].budget.delta"),
            ("epsilon = 1.0\ndelta = -1e-9", "datasets[0].budget.delta"),
        ] {
            assert_eq!(invalid_field(&with(table)), field, "{table}");
        }
        for table in [
            "delta = 0.1",
            "epsilon = 1.0\nperiod = \"yearly\"",
            "epsilon = 1.0\nepsilom = 2.0",
        ] {
            assert!(
                matches!(parse(&with(table)), Err(NodeError::ConfigParse { .. })),
                "{table}"
            );
        }
    }

    #[test]
    fn url_must_be_https() {
        let s = MINIMAL.replace("https://127.0.0.1:7443", "http://127.0.0.1:7443");
        assert_eq!(invalid_field(&s), "coordinator.url");
    }

    #[test]
    fn basic_profile_parses() {
        let s = MINIMAL.replace(
            "[[datasets]]",
            "[normalization]\nprofile = \"basic\"\n[[datasets]]",
        );
        let cfg = parse(&s).expect("parses");
        assert_eq!(cfg.normalization.profile, Profile::Basic);
        assert_eq!(
            cfg.normalizer().expect("normalizer").profile(),
            Profile::Basic
        );
    }
}
