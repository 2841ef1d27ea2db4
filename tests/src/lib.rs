//! Parley in-process federation harness, end-to-end tests and the `parley-demo` binary.

pub mod browser;
pub mod campaign;
pub mod demo;
pub mod r#gen;
pub mod harness;
pub mod relay;
pub mod rogue;
