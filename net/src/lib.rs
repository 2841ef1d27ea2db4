//! Parley transport helpers shared by the node and the coordinator.
//!
//! * [`ca`] — the federation CA: create it, issue role certificates (CN = name, OU = role).
//! * [`TlsMaterial`], [`server_config`], [`tls_incoming`], [`connect`] — mutual TLS 1.3 with
//!   the *ring* provider for tonic servers and clients.
//! * [`peer_identity`], [`authorize`] — the caller's role and name from its verified client
//!   certificate, and role checks for handlers.
//! * [`binding`] — node public keys signed with the node's certificate key, verifiable against
//!   the CA alone.
//! * [`init_tracing`], [`install_crypto_provider`] — process setup.
//!
//! Trust boundary: everything a peer sends (certificates, key bindings) is size-capped and
//! verified before use; the only trusted input is the federation CA certificate and our own
//! key material. No function here logs or returns secret material.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth;
pub mod binding;
pub mod ca;
mod error;
mod identity;
mod pem;
mod tls;

pub use auth::{authorize, peer_identity};
pub use error::NetError;
pub use identity::{MAX_NAME_LEN, PeerIdentity, Role, validate_name};
pub use tls::{
    CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, KEEP_ALIVE, MAX_CONCURRENT_HANDSHAKES, TlsMaterial,
    connect, server_config, tls_incoming,
};

/// Installs rustls's *ring* provider as the process default. Idempotent: a provider already
/// installed (by an earlier call or anyone else) is left in place.
///
/// Call it first thing in every binary and test harness: if some dependency enables rustls's
/// `aws_lc_rs` feature too, rustls cannot pick a default on its own and panics.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` or, when unset or
/// invalid, by `default_filter` (e.g. `"info,parley=debug"`). Idempotent: later calls (for
/// instance from many tests) do nothing.
pub fn init_tracing(default_filter: &str) {
    init_tracing_as(default_filter, LogFormat::Text);
}

/// How the daemons write their logs to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`), for collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format '{}'; use text or json",
                other.escape_debug()
            )),
        }
    }
}

/// [`init_tracing`] in the given format.
pub fn init_tracing_as(default_filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Completes on the first Ctrl-C (SIGINT) or, on Unix, SIGTERM (what service managers and
/// Kubernetes send to stop a process), so the daemons shut down the same way for both.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Whether logs carry colour codes: only on a terminal, so that logs redirected to a file or a
/// collector stay plain text, and never when `NO_COLOR` is set.
fn log_colours(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

/// Renders an error and its causes as one line, `outer: cause: root`, skipping a cause whose
/// text the previous message already contains (many of our messages embed their cause).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut prev = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if prev.is_empty() || !prev.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        prev = text;
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod chain_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read 'x': {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn embedded_causes_are_not_repeated() {
        let e = Outer {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(super::error_chain(&e), "cannot read 'x': gone");
    }
}

#[cfg(test)]
mod tests {
    use super::{LogFormat, log_colours};

    #[test]
    fn log_formats_parse_by_name() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "JSON".parse::<LogFormat>().unwrap_err();
        assert_eq!(err, "unknown log format 'JSON'; use text or json");
    }

    #[test]
    fn logs_are_plain_text_unless_on_a_terminal() {
        assert!(log_colours(true, false));
        assert!(
            !log_colours(false, false),
            "a log file gets no colour codes"
        );
        assert!(!log_colours(true, true), "NO_COLOR is honoured");
    }
}
