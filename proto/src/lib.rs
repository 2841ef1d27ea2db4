//! Parley's gRPC API (package `parley.v1`): the generated tonic/prost types and services.
//!
//! The protos are split by layer (`proto/parley/v1/`): `link.proto` (node ↔ coordinator
//! stream), `jobs.proto` (the analysts' and auditors' API), `spec.proto` and `result.proto`
//! (a job and what it released, each with a `oneof` over the kinds), `dp.proto` (DP
//! parameters and noise reports) and one file per job kind under `kinds/`. They form one
//! package, so this crate exposes one flat module.
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

use job_result::Kind as ResultKind;
use job_spec::Params;

/// For one kind: read and write access to its arm of the spec's `params` oneof, read access
/// to its arm of the result's `kind` oneof, and `From` conversions into both. A new kind is one
/// more invocation below.
macro_rules! kind_arms {
    ($variant:ident, $get:ident, $get_mut:ident, $params:ty, $result:ty, $what:literal) => {
        impl JobSpec {
            #[doc = concat!("The ", $what, " parameters, when the spec carries them.")]
            pub fn $get(&self) -> Option<&$params> {
                match &self.params {
                    Some(Params::$variant(p)) => Some(p),
                    _ => None,
                }
            }

            #[doc = concat!("Mutable ", $what, " parameters, when the spec carries them.")]
            pub fn $get_mut(&mut self) -> Option<&mut $params> {
                match &mut self.params {
                    Some(Params::$variant(p)) => Some(p),
                    _ => None,
                }
            }
        }

        impl JobResult {
            #[doc = concat!("The ", $what, " result, when this is one.")]
            pub fn $get(&self) -> Option<&$result> {
                match &self.kind {
                    Some(ResultKind::$variant(r)) => Some(r),
                    _ => None,
                }
            }
        }

        impl From<$params> for Params {
            fn from(p: $params) -> Self {
                Params::$variant(p)
            }
        }

        impl From<$result> for JobResult {
            fn from(r: $result) -> Self {
                JobResult {
                    kind: Some(ResultKind::$variant(r)),
                }
            }
        }
    };
}

kind_arms!(Psi, psi, psi_mut, PsiParams, PsiResult, "PSI");
kind_arms!(
    DpStats,
    dp_stats,
    dp_stats_mut,
    DpStatsParams,
    DpStatsResult,
    "DP-statistics"
);
kind_arms!(
    SecureSum,
    secure_sum,
    secure_sum_mut,
    SecureSumParams,
    SecureSumResult,
    "secure-aggregation"
);
kind_arms!(Rfm, rfm, rfm_mut, RfmParams, RfmResult, "RFM");
kind_arms!(Lift, lift, lift_mut, LiftParams, LiftResult, "lift");
kind_arms!(
    Overlap,
    overlap,
    overlap_mut,
    OverlapParams,
    OverlapResult,
    "overlap"
);

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The version-1 encoding of a spec with its optional PSI table and of a result: the
    /// `oneof` kept the tags, so the bytes are the same and old peers still decode them.
    #[test]
    fn oneofs_keep_the_version_1_bytes() {
        let spec = JobSpec {
            label: "l".into(),
            kind: JobKind::Psi as i32,
            participants: vec![],
            params: Some(Params::Psi(PsiParams {
                mode: PsiMode::Cardinality as i32,
                min_intersection: 7,
                ..Default::default()
            })),
        };
        // label (tag 1), kind (tag 2, varint 1), psi (tag 4, length 4: mode 2, min 7).
        let v1 = [
            0x0a, 0x01, b'l', 0x10, 0x01, 0x22, 0x04, 0x08, 0x02, 0x10, 0x07,
        ];
        assert_eq!(spec.encode_to_vec(), v1);
        assert_eq!(JobSpec::decode(&v1[..]).unwrap(), spec);

        let result = JobResult::from(SecureSumResult {
            contributors: vec!["a".into()],
            ..Default::default()
        });
        // secure_sum (tag 3, length 3: contributors (tag 1) "a").
        let v1 = [0x1a, 0x03, 0x0a, 0x01, b'a'];
        assert_eq!(result.encode_to_vec(), v1);
        assert_eq!(
            JobResult::decode(&v1[..]).unwrap().secure_sum(),
            result.secure_sum()
        );
    }

    #[test]
    fn accessors_see_only_their_kind() {
        let mut spec = JobSpec {
            params: Some(DpStatsParams::default().into()),
            ..Default::default()
        };
        assert!(spec.psi().is_none() && spec.secure_sum().is_none());
        spec.dp_stats_mut().unwrap().min_count = 3;
        assert_eq!(spec.dp_stats().unwrap().min_count, 3);
        let r = JobResult::from(PsiResult::default());
        assert!(r.psi().is_some() && r.dp_stats().is_none() && r.secure_sum().is_none());
    }
}
