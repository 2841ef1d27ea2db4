//! The jobs crate's error type.
//!
//! One enum, [`JobError`], grouped by whose fault the error is:
//!
//! * **job file** — an analyst's job file could not be read or is not TOML of the job-file shape;
//! * **spec** — a job (from a file or from the wire) does not describe a job Parley can run.
//!
//! Every message says what is wrong, where (the job-file field, e.g. `secure_sum.threshold`)
//! and what to do. A job never carries a secret, so no message can contain one.

use std::path::PathBuf;

/// Everything that can go wrong turning text or a wire message into a [`crate::Job`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    // ───────────── job file ─────────────
    /// A job file could not be read.
    #[error("cannot read the job file '{}': {message}", path.display())]
    FileRead {
        /// The job file.
        path: PathBuf,
        /// The I/O error's text.
        message: String,
    },

    /// A job file is not valid TOML or does not have the job-file shape.
    #[error(
        "job file '{origin}' is not a valid job file: {message}\nsee \
         jobs/examples/job-match.toml for the format"
    )]
    FileSyntax {
        /// Where the text came from (file name).
        origin: String,
        /// The TOML parser's text (with line and column).
        message: String,
    },

    /// A job file parsed but does not describe a job Parley can run.
    #[error("job file '{origin}' does not describe a valid job: {reason}")]
    FileInvalid {
        /// Where the text came from (file name).
        origin: String,
        /// What is wrong, starting with the job-file field, and how to fix it.
        reason: String,
    },

    // ───────────── spec ─────────────
    /// A job spec (from the wire) does not describe a job Parley can run.
    #[error("{reason}")]
    InvalidSpec {
        /// What is wrong, starting with the job-file field (e.g. `secure_sum.threshold: ...`),
        /// and how to fix it.
        reason: String,
    },
}
