//! The coordinator crate's error type.
//!
//! One enum, [`CoordError`], with variants grouped by whose fault the error is:
//!
//! * **store** — the coordinator's job database (disk, permissions, a damaged or newer file);
//! * **config** — a configuration file or command-line option (missing, unreadable, invalid);
//! * **TLS** — certificates and keys, and reaching a peer over mutual TLS (from `parley-net`).
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
