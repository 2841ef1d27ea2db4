//! The intersection-sum part of a PSI `sum` result: the noisy sum and noisy count of the
//! receiver's values over the intersection, each with its noise, and the clamping bounds.

use std::fmt::Write as _;

use parley_proto::SumRelease;
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::table::short;

/// Appends the intersection-sum lines of a PSI result.
pub fn write_summary(s: &mut String, sum: &SumRelease) {
    let _ = writeln!(
        s,
        "  noisy sum:            {}  {}",
        short(sum.noisy_sum),
        sum.sum_noise.as_ref().map(noise_text).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  noisy count:          {}  {}",
        sum.noisy_count,
        sum.count_noise.as_ref().map(noise_text).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  values clamped to:    [{}, {}]",
        short(sum.lower),
        short(sum.upper)
    );
}

/// JSON of an intersection-sum release.
pub fn json(s: &SumRelease) -> Value {
    json!({
        "noisy_sum": s.noisy_sum,
        "noisy_count": s.noisy_count,
        "sum_noise": s.sum_noise.as_ref().map_or(Value::Null, noise_json),
        "count_noise": s.count_noise.as_ref().map_or(Value::Null, noise_json),
        "lower": s.lower,
        "upper": s.upper,
    })
}
