//! How `parleyctl` reaches the coordinator: the config file (`parleyctl.toml`, every field
//! documented in `ctl/examples/parleyctl.toml`, which a test parses), the flags that override
//! it, and the mutual-TLS connection to the `Jobs` service.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use parley_proto::jobs_client::JobsClient;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::error::CtlError;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PARLEYCTL_CONFIG";
/// Coordinator address used when neither the config file nor `--coordinator` sets one.
pub const DEFAULT_COORDINATOR: &str = "https://127.0.0.1:7443";
/// TLS server name used when neither the config file nor `--server-name` sets one.
pub const DEFAULT_SERVER_NAME: &str = "coordinator";

/// Options saying how to reach the coordinator; each overrides the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConnectionArgs {
    /// Config file (see ctl/examples/parleyctl.toml) [env: PARLEYCTL_CONFIG].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Coordinator URL, e.g. https://coordinator.example:7443 [default: https://127.0.0.1:7443].
    #[arg(long, global = true, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Name in the coordinator's certificate [default: coordinator].
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Federation CA certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Your certificate (PEM), role analyst or auditor.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Your certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// The config file as written. Every field is optional; flags override it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfigFile {
    /// Coordinator URL (`https://HOST:PORT`).
    pub coordinator: Option<String>,
    /// Name in the coordinator's certificate.
    pub server_name: Option<String>,
    /// Federation CA certificate (PEM); relative to the config file's directory.
    pub ca_cert: Option<PathBuf>,
    /// The user's certificate (PEM); relative to the config file's directory.
    pub cert: Option<PathBuf>,
    /// The user's private key (PEM); relative to the config file's directory.
    pub key: Option<PathBuf>,
}

impl CtlConfigFile {
    /// Reads and parses a config file, making relative paths relative to its directory.
    ///
    /// # Errors
    /// [`CtlError::ConfigRead`] if the file cannot be read, [`CtlError::ConfigSyntax`] if it
    /// is not a valid `parleyctl.toml`.
    pub fn load(path: &Path) -> Result<CtlConfigFile, CtlError> {
        let text = std::fs::read_to_string(path).map_err(|e| CtlError::ConfigRead {
            path: path.to_path_buf(),
            message: format!("{e}; check --config or {CONFIG_ENV}"),
        })?;
        let mut file = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut file.ca_cert, &mut file.cert, &mut file.key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Parses config text; `path` is used in messages only (paths are left as written).
    ///
    /// # Errors
    /// [`CtlError::ConfigSyntax`] if the text is not TOML or has unknown or mistyped fields.
    pub fn parse(text: &str, path: &Path) -> Result<CtlConfigFile, CtlError> {
        toml::from_str(text).map_err(|e| CtlError::ConfigSyntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// Fully resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlConfig {
    /// Coordinator URL (`https://…`).
    pub coordinator: String,
    /// Name expected in the coordinator's certificate.
    pub server_name: String,
    /// Federation CA certificate file.
    pub ca_cert: PathBuf,
    /// The user's certificate file.
    pub cert: PathBuf,
    /// The user's private key file.
    pub key: PathBuf,
}

impl CtlConfig {
    /// Combines the config file (from `--config`, else `$PARLEYCTL_CONFIG`, else none) with
    /// the flags, flags winning, and checks the result.
    ///
    /// # Errors
    /// As [`CtlConfig::resolve_with`].
    pub fn resolve(args: &ConnectionArgs) -> Result<CtlConfig, CtlError> {
        let env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::resolve_with(args, env.as_deref())
    }

    /// Like [`CtlConfig::resolve`], with the value of `$PARLEYCTL_CONFIG` passed in.
    ///
    /// # Errors
    /// [`CtlError::ConfigRead`] or [`CtlError::ConfigSyntax`] for the config file;
    /// [`CtlError::ConfigInvalid`] for a coordinator URL that is not `https://`, an empty
    /// server name, or a missing CA certificate, certificate or key.
    pub fn resolve_with(
        args: &ConnectionArgs,
        env_config: Option<&Path>,
    ) -> Result<CtlConfig, CtlError> {
        let file = match args.config.as_deref().or(env_config) {
            Some(path) => CtlConfigFile::load(path)?,
            None => CtlConfigFile::default(),
        };
        let coordinator = args
            .coordinator
            .clone()
            .or(file.coordinator)
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
        if !coordinator.starts_with("https://") || coordinator.len() <= "https://".len() {
            return Err(CtlError::ConfigInvalid {
                field: "coordinator",
                problem: format!(
                    "'{coordinator}' is not an https:// URL; every connection uses mutual \
                     TLS, so write it as https://HOST:PORT (--coordinator or coordinator = in \
                     parleyctl.toml)"
                ),
            });
        }
        let server_name = args
            .server_name
            .clone()
            .or(file.server_name)
            .unwrap_or_else(|| DEFAULT_SERVER_NAME.to_string());
        if server_name.is_empty() {
            return Err(CtlError::ConfigInvalid {
                field: "server_name",
                problem: "is empty; set it to the name in the coordinator's certificate"
                    .to_string(),
            });
        }
        let required = |flag: Option<&PathBuf>,
                        from_file: Option<PathBuf>,
                        field: &'static str,
                        what: &str|
         -> Result<PathBuf, CtlError> {
            flag.cloned()
                .or(from_file)
                .ok_or_else(|| CtlError::ConfigInvalid {
                    field,
                    problem: format!(
                        "no {what} given; pass --{} or set {field} in parleyctl.toml \
                         (--config or {CONFIG_ENV})",
                        field.replace('_', "-")
                    ),
                })
        };
        Ok(CtlConfig {
            coordinator,
            server_name,
            ca_cert: required(
                args.ca_cert.as_ref(),
                file.ca_cert,
                "ca_cert",
                "federation CA certificate",
            )?,
            cert: required(args.cert.as_ref(), file.cert, "cert", "certificate")?,
            key: required(args.key.as_ref(), file.key, "key", "private key")?,
        })
    }
}

/// Connects to the coordinator's `Jobs` service with the configured certificate.
///
/// # Errors
/// The certificates cannot be loaded, or the coordinator cannot be reached over mutual TLS;
/// each message names the flags to check.
pub async fn connect(config: &CtlConfig) -> anyhow::Result<JobsClient<Channel>> {
    parley_net::install_crypto_provider();
    let tls = parley_net::TlsMaterial::load(&config.ca_cert, &config.cert, &config.key)
        .map_err(CtlError::from)
        .context(
            "cannot load your TLS certificates (--ca-cert, --cert, --key or the config file)",
        )?;
    let channel = parley_net::connect(&config.coordinator, &config.server_name, &tls)
        .await
        .map_err(CtlError::from)
        .with_context(|| {
            format!(
                "cannot reach the coordinator at {} (is it running? check --coordinator)",
                config.coordinator
            )
        })?;
    Ok(JobsClient::new(channel)
        .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
        .max_encoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::write;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/parleyctl.toml");
        let file = CtlConfigFile::load(&path).unwrap();
        assert_eq!(file.coordinator.as_deref(), Some(DEFAULT_COORDINATOR));
        assert_eq!(file.server_name.as_deref(), Some(DEFAULT_SERVER_NAME));
        // Relative paths are relative to the config file's directory.
        assert_eq!(
            file.ca_cert,
            Some(path.parent().unwrap().join("pki/ca.pem"))
        );
        let args = ConnectionArgs {
            config: Some(path.clone()),
            ..ConnectionArgs::default()
        };
        let config = CtlConfig::resolve_with(&args, None).unwrap();
        assert_eq!(config.key, path.parent().unwrap().join("pki/alice.key"));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "parleyctl.toml",
            "coordinator = \"https://coord.example:7443\"\nca_cert = \"ca.pem\"\n\
             cert = \"/abs/me.pem\"\nkey = \"me.key\"\n",
        );
        let args = ConnectionArgs {
            config: Some(cfg.clone()),
            server_name: Some("coord".into()),
            key: Some("flag.key".into()),
            ..ConnectionArgs::default()
        };
        let config = CtlConfig::resolve_with(&args, None).unwrap();
        assert_eq!(
            config,
            CtlConfig {
                coordinator: "https://coord.example:7443".into(),
                server_name: "coord".into(),
                ca_cert: dir.path().join("ca.pem"),
                cert: "/abs/me.pem".into(),
                key: "flag.key".into(),
            }
        );
        let args = ConnectionArgs {
            coordinator: Some("https://other:1".into()),
            ..args
        };
        assert_eq!(
            CtlConfig::resolve_with(&args, None).unwrap().coordinator,
            "https://other:1"
        );
    }

    #[test]
    fn env_config_is_used_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let env_cfg = write(
            dir.path(),
            "env.toml",
            "ca_cert = \"e-ca.pem\"\ncert = \"e.pem\"\nkey = \"e.key\"\n",
        );
        let flag_cfg = write(
            dir.path(),
            "flag.toml",
            "ca_cert = \"f-ca.pem\"\ncert = \"f.pem\"\nkey = \"f.key\"\n",
        );
        let none = ConnectionArgs::default();
        let c = CtlConfig::resolve_with(&none, Some(&env_cfg)).unwrap();
        assert_eq!(c.cert, dir.path().join("e.pem"));
        assert_eq!(c.coordinator, DEFAULT_COORDINATOR);
        assert_eq!(c.server_name, DEFAULT_SERVER_NAME);
        let flag = ConnectionArgs {
            config: Some(flag_cfg),
            ..ConnectionArgs::default()
        };
        let c = CtlConfig::resolve_with(&flag, Some(&env_cfg)).unwrap();
        assert_eq!(c.cert, dir.path().join("f.pem"));
    }

    #[test]
    fn config_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing given at all: the CA certificate is missing.
        let err = CtlConfig::resolve_with(&ConnectionArgs::default(), None).unwrap_err();
        assert!(
            matches!(
                err,
                CtlError::ConfigInvalid {
                    field: "ca_cert",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--ca-cert"), "{err}");
        // Missing key only.
        let args = ConnectionArgs {
            ca_cert: Some("ca".into()),
            cert: Some("c".into()),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(err.to_string().contains("--key"), "{err}");
        // Not https.
        let args = ConnectionArgs {
            coordinator: Some("http://127.0.0.1:7443".into()),
            key: Some("k".into()),
            ..args
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(
            matches!(
                err,
                CtlError::ConfigInvalid {
                    field: "coordinator",
                    ..
                }
            ),
            "{err}"
        );
        // Unknown field.
        let bad = write(
            dir.path(),
            "bad.toml",
            "coordinator = \"https://x:1\"\ncacert = \"x\"\n",
        );
        let args = ConnectionArgs {
            config: Some(bad),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(matches!(err, CtlError::ConfigSyntax { .. }), "{err}");
        assert!(err.to_string().contains("cacert"), "{err}");
        // Missing file.
        let args = ConnectionArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(matches!(err, CtlError::ConfigRead { .. }), "{err}");
    }
}
