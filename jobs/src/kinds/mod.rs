//! One module per job kind: each holds the only copy of that kind's facts — its parameters
//! with their defaults resolved, the checks that produce them, each participant's role, the
//! columns it reads, its release cost, and (for secure_sum) the vector layout, DP plan and
//! secure-aggregation parameters; rfm's buckets and cells; lift's arm × cohort cells and columns;
//! overlap's segment groups and indicator columns.

pub mod dp_stats;
pub mod lift;
pub mod overlap;
pub mod psi;
pub mod psi_sum;
pub mod rfm;
pub mod secure_sum;
