//! What can go wrong in `parleyctl`, each message saying what to check next.
//!
//! * [`CtlError`] — before any call: the config file and flags (**config**), and the user's
//!   certificates or the mutual-TLS connection (**TLS**, from `parley-net`);
//! * [`RpcError`] — a call the coordinator answered with an error, or that never reached it,
//!   explained by gRPC status code (unreachable, certificate not accepted, permission denied,
//!   unknown job, refused).
//!
//! Every message is complete on its own and embeds the underlying library error's text, so
//! printing the whole chain never shows a cause twice. No message ever contains a secret.

use std::path::PathBuf;

/// A configuration or TLS problem found before talking to the coordinator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    // ───────────── config: the config file and command-line options ─────────────
    /// The config file could not be read.
    #[error("cannot read the config file '{}': {message}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error's text.
        message: String,
    },

    /// The config file is not valid TOML or has unknown or mistyped fields.
    #[error("config file '{}' is not valid: {message}", path.display())]
    ConfigSyntax {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's text (with line and column).
        message: String,
    },

    /// A setting is missing or invalid.
    #[error("invalid configuration: {field}: {problem}")]
    ConfigInvalid {
        /// The setting, e.g. `ca_cert`.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },

    // ───────────── TLS: certificates, keys, connections ─────────────
    /// Loading certificates and keys or setting up a mutual-TLS connection failed.
    #[error(transparent)]
    Tls(#[from] parley_net::NetError),
}

/// A failed call to the coordinator, with a message that says what to check.
#[derive(Debug)]
pub struct RpcError {
    /// What parleyctl was doing, e.g. "submit the job".
    action: String,
    /// The coordinator URL.
    url: String,
    /// The status returned by tonic.
    status: tonic::Status,
}

impl RpcError {
    /// Wraps a status returned while doing `action` against `url`.
    pub fn new(action: impl Into<String>, url: &str, status: tonic::Status) -> RpcError {
        RpcError {
            action: action.into(),
            url: url.to_string(),
            status,
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.status.code()
    }

    /// The status message and the text of every underlying cause, de-duplicated.
    fn detail(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.status.message().is_empty() {
            parts.push(self.status.message().to_string());
        }
        let mut cause = std::error::Error::source(&self.status);
        while let Some(e) = cause {
            let text = e.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            cause = e.source();
        }
        if parts.is_empty() {
            format!("{:?}", self.status.code())
        } else {
            parts.join(": ")
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (action, url, detail) = (&self.action, &self.url, self.detail());
        use tonic::Code;
        match self.status.code() {
            Code::Unavailable => write!(
                f,
                "cannot {action}: cannot reach the coordinator at {url}: {detail}; is it \
                 running? check --coordinator (and --server-name / --ca-cert if the TLS \
                 handshake failed)"
            ),
            Code::Unauthenticated => write!(
                f,
                "cannot {action}: the coordinator at {url} did not accept your certificate: \
                 {detail}; check --cert and --key, and that the certificate was issued by the \
                 federation CA"
            ),
            Code::PermissionDenied => write!(
                f,
                "cannot {action}: permission denied by the coordinator: {detail}"
            ),
            Code::NotFound => write!(
                f,
                "cannot {action}: {detail}; list jobs with `parleyctl jobs`"
            ),
            Code::InvalidArgument | Code::FailedPrecondition => {
                write!(f, "cannot {action}: the coordinator refused: {detail}")
            }
            Code::DeadlineExceeded => write!(
                f,
                "cannot {action}: the coordinator at {url} did not answer in time: {detail}"
            ),
            Code::Unknown | Code::Cancelled => {
                // TLS 1.3 reports a rejected client certificate only on the first call, with a
                // message that varies; say what to check.
                write!(
                    f,
                    "cannot {action}: the call to {url} failed: {detail}; if this persists, \
                     check that your certificate (--cert, --key) is issued by the federation CA"
                )
            }
            code => write!(
                f,
                "cannot {action}: the coordinator at {url} answered {code:?}: {detail}"
            ),
        }
    }
}

impl std::error::Error for RpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_carry_hints() {
        let e = RpcError::new(
            "list jobs",
            "https://127.0.0.1:7443",
            tonic::Status::unavailable("tcp connect error"),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("cannot reach the coordinator at https://127.0.0.1:7443"),
            "{msg}"
        );
        assert!(msg.contains("--coordinator"), "{msg}");
        let e = RpcError::new(
            "submit the job",
            "https://x:1",
            tonic::Status::permission_denied("role auditor may not submit jobs"),
        );
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("role auditor may not submit jobs"));
    }
}
