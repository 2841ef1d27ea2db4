//! What a Parley job *is*: the typed job model shared by the node, the coordinator, the CLI
//! and the tests.
//!
//! * [`Job`] / [`Kind`] — a validated job with one variant per kind, built from the wire by
//!   `Job::try_from(&JobSpec)` (the one place a wire job is checked and its defaults
//!   resolved) and converted back by `JobSpec::from(&Job)`;
//! * [`kinds`] — one module per kind, each the only copy of that kind's facts (parameters and
//!   defaults, roles, columns read, release cost, secure_sum's layout and DP plan);
//! * [`params`] — typed parameters several kinds share (DP, clamping bounds, categories);
//! * [`jobfile`] — the analyst's job file (TOML);
//! * [`lifecycle`] — the job states, which moves between them are allowed, which end a job;
//! * [`limits`] — the bounds every job is checked against;
//! * [`lift`] — conversion lift and its confidence intervals from noisy per-arm totals.
//!
//! Synchronous, no I/O beyond reading a job file, no networking: every layer can use it.

pub mod error;
pub mod job;
pub mod jobfile;
pub mod kinds;
pub mod lifecycle;
pub mod lift;
pub mod limits;
pub mod params;

pub use error::JobError;
pub use job::{CoordinatorPart, Cost, Job, Kind, Participant, ResultTo, Role};
pub use jobfile::{load_job_file, parse_job, parse_job_toml, validate_spec};
