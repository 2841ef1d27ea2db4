//! Secure-aggregation results (`secure_sum`): who contributed and who dropped out, the noise
//! added (distributed DP), then the table of sums per category.

use std::fmt::Write as _;

use parley_proto::SecureSumResult;
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::table::short;

/// Appends a secure-aggregation result: contributors, dropouts, then the table of sums.
pub fn write_summary(s: &mut String, r: &SecureSumResult) {
    let _ = writeln!(
        s,
        "  contributors ({}):    {}",
        r.contributors.len(),
        r.contributors.join(", ")
    );
    if !r.dropped.is_empty() {
        let _ = writeln!(s, "  dropped out:          {}", r.dropped.join("; "));
    }
    if let Some(n) = &r.noise {
        let _ = writeln!(s, "  count noise:          {}", noise_text(n));
    }
    if let Some(n) = &r.sum_noise {
        let _ = writeln!(s, "  sum noise:            {}", noise_text(n));
    }
    let mut header = format!("  {:<16}", "CATEGORY");
    for c in &r.columns {
        let _ = write!(header, " {:>16}", c.to_uppercase());
    }
    let _ = writeln!(s, "{}", header.trim_end());
    for c in &r.categories {
        let mut line = format!("  {:<16}", c.category);
        for v in &c.values {
            let _ = write!(line, " {:>16}", short(*v));
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// JSON of a secure-aggregation result.
pub fn json(r: &SecureSumResult) -> Value {
    json!({
        "contributors": r.contributors,
        "dropped": r.dropped,
        "columns": r.columns,
        "noise": r.noise.as_ref().map_or(Value::Null, noise_json),
        "sum_noise": r.sum_noise.as_ref().map_or(Value::Null, noise_json),
        "categories": r.categories.iter().map(|c| json!({
            "category": c.category,
            "values": c.values,
        })).collect::<Vec<_>>(),
    })
}
