//! Parley protocol maths: identifier normalisation and hashing, hashing to ristretto255,
//! ECDH private set intersection, sealed node-to-node envelopes and node key material.
//!
//! Everything here is synchronous, deterministic apart from the operating system's randomness,
//! and free of I/O: daemons call it from blocking threads. Heavy loops (scalar multiplications)
//! run on rayon.
//!
//! Modules:
//! * [`normalize`]: raw emails and phones to the SHA-256 [`normalize::IdHash`] ad platforms use.
//! * [`h2g`]: RFC 9380 hashing to ristretto255 with a domain-separation tag.
//! * [`psi`]: the receiver and sender roles of ECDH-PSI, as checked state machines.
//! * [`envelope`]: per-job, per-direction AES-256-GCM keys from X25519.
//! * [`keys`]: a node's long-term X25519 and Ed25519 secrets and their persisted form.
//! * [`elgamal`]: additively homomorphic exponential ElGamal on ristretto255 with a bounded
//!   discrete-log (baby-step giant-step) decryption.
//! * [`grouped`]: the grouped intersection-aggregate: per-group matched counts and sums of
//!   several value columns (with one group and one column, the intersection-sum of PSI `sum`
//!   mode; the engine under conversion lift).
//! * [`dp`]: differentially private releases through OpenDP measurements (discrete Laplace and
//!   Gaussian), with calibration and accuracy bounds.
//! * [`ledger`]: the signed, hash-chained privacy-budget ledger rows, exports and the audit.
//! * [`shamir`], [`secagg`]: Shamir sharing over the ristretto255 scalar field and the rounds of
//!   Bonawitz et al.'s secure aggregation with dropouts.
//!
//! Errors: [`CryptoError`] for the PSI family, envelopes and keys, and one enum per
//! self-contained protocol module ([`dp::DpError`], [`ledger::LedgerError`],
//! [`normalize::NormalizeError`], [`shamir::ShamirError`], [`secagg::SecAggError`]); no error
//! ever carries a secret or a raw identifier.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dp;
pub mod elgamal;
pub mod envelope;
pub mod error;
pub mod grouped;
pub mod h2g;
pub mod keys;
pub mod ledger;
pub mod normalize;
pub mod psi;
pub mod secagg;
pub mod shamir;

pub use error::{CryptoError, Stream};
