//! Parley end-to-end benchmarks, driven by the `parley-bench` binary (see `BENCHMARKS.md`).
//!
//! Each benchmark runs a real federation in this process through the `parley-tests` harness,
//! checks the result against the known truth, and compares the end-to-end time with the raw
//! cryptographic work the protocol cannot avoid on the same inputs:
//!
//! * [`psi`]: `parley-bench psi` (PSI `match` / `cardinality`) and `parley-bench sum`
//!   (intersection-sum), plus the per-node memory probe (`probe-role`);
//! * [`lift`]: `parley-bench lift` (conversion lift, 2 arms × 3 columns), with each node in its
//!   own process (`node-process`) for per-node memory;
//! * [`secagg`]: `parley-bench secagg` (`secure_sum` jobs).
//!
//! This crate is not linked into the end-to-end tests.

pub mod lift;
pub mod psi;
pub mod secagg;
