//! Parley's gRPC API (package `parley.v1`): the generated tonic/prost types and services.
//!
//! Wire messages are plain generated structs; raw bytes from a peer are turned into
//! validated values (points, keys) only by the crates that own those types, and every
//! receiver bounds sizes before allocating.

#![allow(missing_docs)]

/// Generated code for `parley.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("parley.v1");
}

pub use v1::*;

/// Largest payload (bytes) a single chunked message may carry.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest encoded gRPC message either side accepts (a chunk plus framing and AEAD overhead).
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 64 * 1024;

/// Largest encoded message carrying a whole job (spec and result): the Jobs service, and job
/// offers and result deliveries from the coordinator to nodes. A secure sum of 10^5 values
/// releases a result of a few MiB; what nodes send the coordinator stays within
/// [`MAX_MESSAGE_BYTES`].
pub const MAX_JOB_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
