//! PSI results (`match`, `cardinality`; the intersection-sum part of `sum`, with one line per
//! value column, is in [`super::psi_sum`]): record and identifier counts, the intersection (or
//! that it was suppressed), its noise if DP was asked for, and where the matched records were
//! written.

use std::fmt::Write as _;

use parley_proto::{JobSpec, PsiMode, PsiResult, PsiRole};
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::psi_sum;
use super::table::group;

/// Lower-case name of a PSI mode, as in job files.
pub fn mode_name(mode: PsiMode) -> &'static str {
    match mode {
        PsiMode::Unspecified => "unknown",
        PsiMode::Match => "match",
        PsiMode::Cardinality => "cardinality",
        PsiMode::Sum => "sum",
    }
}

/// Appends a PSI result summary.
pub fn write_summary(s: &mut String, spec: Option<&JobSpec>, psi: &PsiResult) {
    let receiver = spec
        .and_then(|sp| {
            sp.participants
                .iter()
                .find(|p| p.psi_role() == PsiRole::Receiver)
        })
        .map(|p| p.node.as_str())
        .unwrap_or("the receiver");
    let min = spec
        .and_then(|sp| sp.psi())
        .map_or(0, |p| p.min_intersection);
    let _ = writeln!(
        s,
        "  receiver records:     {} ({} distinct identifiers)",
        group(psi.receiver_records),
        group(psi.receiver_identifiers)
    );
    let _ = writeln!(
        s,
        "  sender identifiers:   {}",
        group(psi.sender_identifiers)
    );
    if !psi.profile.is_empty() {
        let _ = writeln!(
            s,
            "  normalisation:        profile '{}' on both sides",
            psi.profile.escape_debug()
        );
    }
    if psi.records_dropped > 0 {
        let _ = writeln!(
            s,
            "  contribution bound:   {} receiver records left out (beyond \
             max_records_per_identifier per identifier or person)",
            group(psi.records_dropped)
        );
    }
    if let Some(sum) = &psi.sum {
        psi_sum::write_summary(s, sum);
    } else if psi.suppressed {
        let _ = writeln!(
            s,
            "  intersection:         suppressed (fewer than min_intersection = {} records)",
            group(min)
        );
    } else {
        let rate = if psi.receiver_records > 0 {
            format!(
                " ({:.1}% of the receiver's records)",
                psi.intersection_records as f64 * 100.0 / psi.receiver_records as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  intersection:         {} records{rate}",
            group(psi.intersection_records)
        );
        if let Some(n) = &psi.count_noise {
            let _ = writeln!(s, "                        noisy: {}", noise_text(n));
        }
    }
    if psi.mode() == PsiMode::Match && !psi.match_output.is_empty() {
        let _ = writeln!(
            s,
            "  matched records:      {} (on {receiver}'s machine)",
            psi.match_output
        );
    }
    let _ = writeln!(
        s,
        "  protocol time:        {:.2} s",
        psi.elapsed_ms as f64 / 1000.0
    );
}

/// JSON of a PSI result.
pub fn json(p: &PsiResult) -> Value {
    json!({
        "mode": mode_name(p.mode()),
        "receiver_records": p.receiver_records,
        "receiver_identifiers": p.receiver_identifiers,
        "sender_identifiers": p.sender_identifiers,
        "intersection_records": p.intersection_records,
        "suppressed": p.suppressed,
        "match_output": p.match_output,
        "elapsed_ms": p.elapsed_ms,
        "records_dropped": p.records_dropped,
        "profile": p.profile,
        "dp": json!({
            "count_noise": p.count_noise.as_ref().map_or(Value::Null, noise_json),
            "sum": p.sum.as_ref().map_or(Value::Null, psi_sum::json),
        }),
    })
}
