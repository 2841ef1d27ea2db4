//! The coordinator crate's error type.
//!
//! One enum, [`CoordError`], with variants grouped by whose fault the error is:
//!
//! * **store** — the coordinator's job database (disk, permissions, a damaged or newer file);
//! * **config** — a configuration file or command-line option (missing, unreadable, invalid);
//! * **TLS** — certificates and keys, and reaching a peer over mutual TLS (from `parley-net`).
//!
//! The gRPC services refuse calls with a second, crate-internal enum, [`ServiceError`], grouped
//! the same way (the caller's request, the caller's identity, the state of the job, the
//! coordinator itself). `From<ServiceError> for tonic::Status` is the one place a refusal gets
//! its gRPC code; the status message is the error's `Display` text.
//!
//! Every message is complete on its own: it says what went wrong, where, and what to do, and it
//! embeds the underlying library error's text. Wrapped library errors are therefore *not*
//! returned again by [`std::error::Error::source`], so printing the whole chain (as `parleyctl`
//! does) never shows a cause twice. No message ever contains a secret.

use std::path::PathBuf;

/// Everything that can go wrong in the coordinator library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    // ───────────── store: the coordinator's job database ─────────────
    /// The directory that should hold the job store could not be created.
    #[error(
        "cannot create the job store directory '{}': {message}; check the path and that the \
         coordinator may write there",
        path.display()
    )]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error's text.
        message: String,
    },

    /// The job store could not be opened or initialised.
    #[error(
        "cannot open the job store '{path}': {message}; check that the file is a Parley job \
         store, that its directory is writable, and that no other program holds it locked"
    )]
    StoreOpen {
        /// The store file (or `:memory:`).
        path: String,
        /// The SQLite error's text.
        message: String,
    },

    /// The job store was written by a newer coordinator.
    #[error(
        "the job store '{path}' has schema version {found}, newer than the {supported} this \
         coordinator understands; run a newer parley-coordinator or point it at another store"
    )]
    StoreVersion {
        /// The store file.
        path: String,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build understands.
        supported: i64,
    },

    /// A query against the job store failed.
    #[error("job store: cannot {action}: {message}; check the disk and the store file")]
    Store {
        /// What the store was doing, e.g. "insert job 'job-…'".
        action: String,
        /// The SQLite error's text.
        message: String,
    },

    /// A stored job could not be decoded.
    #[error(
        "job store: job '{id}' is damaged and cannot be decoded: {message}; restore the store \
         from a backup"
    )]
    StoreCorrupt {
        /// The job id.
        id: String,
        /// The decoder's text.
        message: String,
    },

    /// A job with this id is already stored.
    #[error("job store: a job with id '{id}' already exists; job ids must be unique")]
    DuplicateJob {
        /// The job id.
        id: String,
    },

    /// No job with this id is stored.
    #[error("job store: there is no job '{id}'; list the stored jobs with `parleyctl jobs`")]
    UnknownJob {
        /// The job id.
        id: String,
    },

    // ───────────── config: configuration files and command-line options ─────────────
    /// A configuration file could not be read.
    #[error("cannot read the config file '{}': {message}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error's text.
        message: String,
    },

    /// A configuration file is not valid TOML or has unknown or mistyped fields.
    #[error("config file '{}' is not valid: {message}", path.display())]
    ConfigSyntax {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's text (with line and column).
        message: String,
    },

    /// A configuration value is missing or invalid.
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

    // ───────────── service ─────────────
    /// The gRPC server stopped with an error.
    #[error("coordinator server failed: {0}")]
    Serve(String),
}

/// Why the coordinator refuses a gRPC call (see the module docs). The status code of each
/// variant is chosen once, in `From<ServiceError> for tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    // ───────────── request: the caller sent something invalid (InvalidArgument) ─────────────
    /// A required message field is absent.
    #[error("{field} is missing")]
    Missing {
        /// The field, e.g. `SubmitJobRequest.spec`.
        field: &'static str,
    },

    /// The submitted job spec does not describe a valid job.
    #[error("invalid job: {error}")]
    InvalidJob {
        /// Why (names the job-file field).
        error: parley_jobs::JobError,
    },

    /// A node link did not start with `hello`.
    #[error("the first message on a node link must be hello")]
    NoHello,

    /// The hello's dataset announcements are malformed.
    #[error("hello: {problem}; fix the node's [[datasets]] in node.toml")]
    BadHello {
        /// What is wrong (names are sanitized).
        problem: String,
    },

    // ───────────── identity: the caller is not who it says (PermissionDenied) ─────────────
    /// The node's hello names another node than its certificate.
    #[error(
        "hello names node '{}' but the certificate is for '{cert}'; set name = \"{cert}\" in \
         node.toml",
        crate::service::sanitize(claimed, 64)
    )]
    NameMismatch {
        /// The name in the hello (peer-controlled; sanitized when shown).
        claimed: String,
        /// The name in the node's certificate.
        cert: String,
    },

    /// The node's key binding does not verify against the federation CA.
    #[error("node key binding rejected: {error}")]
    KeyBinding {
        /// Why.
        error: parley_net::NetError,
    },

    // ───────────── timing (DeadlineExceeded) ─────────────
    /// A node connected but sent no hello within `[limits] hello_timeout_secs`.
    #[error("no hello received in time")]
    HelloTimeout,

    // ───────────── job state: the call does not fit the job (NotFound, FailedPrecondition) ─────
    /// No live or stored job has this id.
    #[error(
        "no job '{}'; list jobs with `parleyctl jobs`",
        crate::service::sanitize(id, 64)
    )]
    NoJob {
        /// The requested id (caller-controlled; sanitized when shown).
        id: String,
    },

    /// The job to cancel has already ended.
    #[error("job '{id}' has already ended ({state:?}); nothing to cancel")]
    AlreadyEnded {
        /// The job id.
        id: String,
        /// Its final state.
        state: parley_proto::JobState,
    },

    // ───────────── coordinator: our own failure (Internal) ─────────────
    /// The job store failed.
    #[error("cannot {action}: {error}")]
    Store {
        /// What the service was doing, e.g. "read job store".
        action: &'static str,
        /// The store's error.
        error: CoordError,
    },

    /// The job's kind names a result receiver that does not fit how the coordinator takes part
    /// (a disagreement between `Job::result_to` and `Job::coordinator_part` in `parley-jobs`).
    #[error(
        "cannot run a {kind} job: its result_to does not fit how the coordinator takes part \
         (a bug in parley-jobs)"
    )]
    NoDriver {
        /// The kind's name.
        kind: &'static str,
    },
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        use tonic::Code;
        let code = match &e {
            ServiceError::Missing { .. }
            | ServiceError::InvalidJob { .. }
            | ServiceError::NoHello => Code::InvalidArgument,
            ServiceError::NameMismatch { .. } | ServiceError::KeyBinding { .. } => {
                Code::PermissionDenied
            }
            ServiceError::HelloTimeout => Code::DeadlineExceeded,
            ServiceError::BadHello { .. } => Code::InvalidArgument,
            ServiceError::NoJob { .. } => Code::NotFound,
            ServiceError::AlreadyEnded { .. } => Code::FailedPrecondition,
            ServiceError::Store { .. } | ServiceError::NoDriver { .. } => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn status(e: ServiceError) -> (Code, String) {
        let s = tonic::Status::from(e);
        (s.code(), s.message().to_string())
    }

    #[test]
    fn every_refusal_keeps_its_code_and_message() {
        let store = || CoordError::Store {
            action: "read".into(),
            message: "disk I/O error".into(),
        };
        let cases = [
            (
                ServiceError::Missing {
                    field: "SubmitJobRequest.spec",
                },
                Code::InvalidArgument,
                "SubmitJobRequest.spec is missing".to_string(),
            ),
            (
                ServiceError::Missing {
                    field: "hello.keys",
                },
                Code::InvalidArgument,
                "hello.keys is missing".to_string(),
            ),
            (
                ServiceError::InvalidJob {
                    error: parley_jobs::JobError::InvalidSpec {
                        reason: "epsilon must be positive".into(),
                    },
                },
                Code::InvalidArgument,
                "invalid job: epsilon must be positive".to_string(),
            ),
            (
                ServiceError::NoHello,
                Code::InvalidArgument,
                "the first message on a node link must be hello".to_string(),
            ),
            (
                ServiceError::BadHello {
                    problem: "dataset 'crm' is announced twice".into(),
                },
                Code::InvalidArgument,
                "hello: dataset 'crm' is announced twice; fix the node's [[datasets]] in \
                 node.toml"
                    .to_string(),
            ),
            (
                ServiceError::NameMismatch {
                    claimed: "x".repeat(70),
                    cert: "brand".into(),
                },
                Code::PermissionDenied,
                format!(
                    "hello names node '{}…' but the certificate is for 'brand'; set name = \
                     \"brand\" in node.toml",
                    "x".repeat(64)
                ),
            ),
            (
                ServiceError::KeyBinding {
                    error: parley_net::NetError::InvalidCommonName {
                        name: "n".into(),
                        reason: "too long",
                    },
                },
                Code::PermissionDenied,
                "node key binding rejected: invalid CA common name 'n': too long".to_string(),
            ),
            (
                ServiceError::HelloTimeout,
                Code::DeadlineExceeded,
                "no hello received in time".to_string(),
            ),
            (
                ServiceError::NoJob { id: "job-1".into() },
                Code::NotFound,
                "no job 'job-1'; list jobs with `parleyctl jobs`".to_string(),
            ),
            (
                ServiceError::AlreadyEnded {
                    id: "job-1".into(),
                    state: parley_proto::JobState::Succeeded,
                },
                Code::FailedPrecondition,
                "job 'job-1' has already ended (Succeeded); nothing to cancel".to_string(),
            ),
            (
                ServiceError::Store {
                    action: "read job store",
                    error: store(),
                },
                Code::Internal,
                format!("cannot read job store: {}", store()),
            ),
            (
                ServiceError::NoDriver { kind: "psi_sum" },
                Code::Internal,
                "cannot run a psi_sum job: its result_to does not fit how the coordinator takes \
                 part (a bug in parley-jobs)"
                    .to_string(),
            ),
        ];
        for (e, code, message) in cases {
            assert_eq!(status(e), (code, message));
        }
    }
}
