//! Coordinator configuration (`coordinator.toml`).
//!
//! Every field is documented in `coordinator/examples/coordinator.toml`, which a test parses.
//! Relative paths are resolved against the directory of the configuration file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::CoordError;

/// The coordinator's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on, e.g. `0.0.0.0:7443`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// SQLite job store file (created if missing).
    pub database: PathBuf,
    /// TLS files: federation CA certificate and the coordinator's certificate and key.
    pub tls: TlsConfig,
    /// Limits and deadlines.
    #[serde(default)]
    pub limits: Limits,
}

/// TLS file paths.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Federation CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The coordinator's certificate (PEM), role `coordinator`.
    pub cert: PathBuf,
    /// The coordinator's private key (PEM).
    pub key: PathBuf,
}

/// Limits and deadlines enforced by the coordinator.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Seconds every participant has to accept or refuse an offered job.
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_secs: u64,
    /// Seconds a running job may take before it is failed.
    #[serde(default = "default_job_deadline")]
    pub job_deadline_secs: u64,
    /// Seconds a node has to send `hello` after connecting.
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout_secs: u64,
    /// Ended jobs (with their results) submitted longer ago than this many days are deleted
    /// from the job store (0 = keep them forever). Recorded ledger heads are never deleted.
    #[serde(default = "default_job_retention_days")]
    pub job_retention_days: u64,
    /// At most this many ended jobs are kept; the oldest go first (0 = no limit).
    #[serde(default = "default_max_stored_jobs")]
    pub max_stored_jobs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            offer_timeout_secs: default_offer_timeout(),
            job_deadline_secs: default_job_deadline(),
            hello_timeout_secs: default_hello_timeout(),
            job_retention_days: default_job_retention_days(),
            max_stored_jobs: default_max_stored_jobs(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:7443".to_string()
}
fn default_job_retention_days() -> u64 {
    365
}
fn default_max_stored_jobs() -> u64 {
    100_000
}
fn default_offer_timeout() -> u64 {
    60
}
fn default_job_deadline() -> u64 {
    3600
}
fn default_hello_timeout() -> u64 {
    10
}

impl CoordinatorConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, CoordError> {
        let text = std::fs::read_to_string(path).map_err(|e| CoordError::ConfigRead {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml_str(&text, base).map_err(|e| match e {
            CoordError::ConfigSyntax { message, .. } => CoordError::ConfigSyntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses a configuration, resolving relative paths against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, CoordError> {
        let mut cfg: CoordinatorConfig =
            toml::from_str(text).map_err(|e| CoordError::ConfigSyntax {
                path: base_dir.join("coordinator.toml"),
                message: e.to_string(),
            })?;
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        abs(&mut cfg.database);
        abs(&mut cfg.tls.ca_cert);
        abs(&mut cfg.tls.cert);
        abs(&mut cfg.tls.key);
        if cfg.limits.offer_timeout_secs == 0 || cfg.limits.job_deadline_secs == 0 {
            return Err(CoordError::ConfigInvalid {
                field: "limits",
                problem: "offer_timeout_secs and job_deadline_secs must be at least 1".into(),
            });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let cfg = CoordinatorConfig::from_toml_str(
            include_str!("../examples/coordinator.toml"),
            Path::new("/etc/parley"),
        )
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7443");
        assert_eq!(cfg.tls.ca_cert, Path::new("/etc/parley/certs/ca.pem"));
        assert_eq!(cfg.limits.offer_timeout_secs, 60);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = CoordinatorConfig::from_toml_str(
            "database = \"x\"\nlisten_addr = \"1\"\n[tls]\nca_cert=\"a\"\ncert=\"b\"\nkey=\"c\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }
}
