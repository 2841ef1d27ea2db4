//! Coordinator configuration (`coordinator.toml`).
//!
//! Every field is documented in `coordinator/examples/coordinator.toml`, which a test parses.
//! Relative paths are resolved against the directory of the configuration file.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Seconds a connection may stay silent before the coordinator sends it an HTTP/2 ping
    /// (1 to [`MAX_KEEPALIVE_SECS`]).
    #[serde(default = "default_keepalive")]
    pub keepalive_interval_secs: u64,
    /// Seconds the coordinator waits for the answer to its ping before it closes the
    /// connection (1 to [`MAX_KEEPALIVE_SECS`]). A half-open node link (the peer gone without
    /// closing its socket) is thus ended, and the node's live jobs failed, within about
    /// `keepalive_interval_secs + keepalive_timeout_secs` of its last bytes.
    #[serde(default = "default_keepalive")]
    pub keepalive_timeout_secs: u64,
}

/// Largest accepted `keepalive_interval_secs` and `keepalive_timeout_secs`: beyond an hour a
/// dead link would hold its node's jobs for longer than keep-alive is worth.
pub const MAX_KEEPALIVE_SECS: u64 = 3600;

impl Limits {
    /// The server's HTTP/2 keep-alive ping interval.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.keepalive_interval_secs)
    }

    /// How long the server waits for a keep-alive ping's answer.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }

    /// Checks the values a file may have set wrongly; `Err` names the key and the fix.
    pub(crate) fn check(&self) -> Result<(), CoordError> {
        if self.offer_timeout_secs == 0 || self.job_deadline_secs == 0 {
            return Err(CoordError::ConfigInvalid {
                field: "limits",
                problem: "offer_timeout_secs and job_deadline_secs must be at least 1".into(),
            });
        }
        let keepalive = [
            (
                "limits.keepalive_interval_secs",
                self.keepalive_interval_secs,
            ),
            ("limits.keepalive_timeout_secs", self.keepalive_timeout_secs),
        ];
        for (field, secs) in keepalive {
            if !(1..=MAX_KEEPALIVE_SECS).contains(&secs) {
                return Err(CoordError::ConfigInvalid {
                    field,
                    problem: format!(
                        "{secs} s is out of range; set 1 to {MAX_KEEPALIVE_SECS} in [limits] \
                         (default {}; without keep-alive a half-open node link is never noticed)",
                        default_keepalive()
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            offer_timeout_secs: default_offer_timeout(),
            job_deadline_secs: default_job_deadline(),
            hello_timeout_secs: default_hello_timeout(),
            job_retention_days: default_job_retention_days(),
            max_stored_jobs: default_max_stored_jobs(),
            keepalive_interval_secs: default_keepalive(),
            keepalive_timeout_secs: default_keepalive(),
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
fn default_keepalive() -> u64 {
    parley_net::KEEP_ALIVE.as_secs()
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
        cfg.limits.check()?;
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
        assert_eq!(cfg.limits.keepalive_interval(), parley_net::KEEP_ALIVE);
        assert_eq!(cfg.limits.keepalive_timeout(), parley_net::KEEP_ALIVE);
    }

    const MINIMAL: &str = "database = \"x\"\n[tls]\nca_cert=\"a\"\ncert=\"b\"\nkey=\"c\"\n";

    #[test]
    fn keepalive_defaults_to_twenty_seconds_and_can_be_set() {
        let cfg = CoordinatorConfig::from_toml_str(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(cfg.limits.keepalive_interval(), Duration::from_secs(20));
        assert_eq!(cfg.limits.keepalive_timeout(), Duration::from_secs(20));
        let text =
            format!("{MINIMAL}[limits]\nkeepalive_interval_secs = 5\nkeepalive_timeout_secs = 2\n");
        let cfg = CoordinatorConfig::from_toml_str(&text, Path::new(".")).unwrap();
        assert_eq!(cfg.limits.keepalive_interval(), Duration::from_secs(5));
        assert_eq!(cfg.limits.keepalive_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn keepalive_out_of_range_is_refused() {
        for (key, secs) in [
            ("keepalive_interval_secs", 0),
            ("keepalive_timeout_secs", 0),
            ("keepalive_interval_secs", MAX_KEEPALIVE_SECS + 1),
            ("keepalive_timeout_secs", 86_400),
        ] {
            let text = format!("{MINIMAL}[limits]\n{key} = {secs}\n");
            let err = CoordinatorConfig::from_toml_str(&text, Path::new(".")).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("limits.{key}")) && msg.contains("set 1 to 3600"),
                "{msg}"
            );
        }
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
