//! Parley node daemon library: configuration, datasets, local policy, the coordinator link
//! and job execution. `main.rs` is a thin clap wrapper around [`run`]; tests run real nodes
//! in-process by calling [`run`].

pub mod config;
pub mod dataset;
pub mod diagnostics;
pub mod error;
pub mod jobs;
pub mod ledger;
pub mod policy;
pub mod runtime;

pub use error::NodeError;
pub use runtime::{Node, run, run_loaded};
