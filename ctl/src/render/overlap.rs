//! Overlap results (`overlap`): the threshold and noise, then the total, the overlap per
//! segment of each side and the cross-tab, each with both sides' populations and match rates.

use std::fmt::Write as _;

use parley_proto::{OverlapCell, OverlapResult};
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::table::{group, indented, short};

/// A segment label as shown ("all" for the whole side).
fn label(l: &str) -> String {
    if l.is_empty() {
        "all".to_owned()
    } else {
        l.to_owned()
    }
}

fn rate(c: &OverlapCell, r: f64) -> String {
    if c.suppressed {
        "-".to_owned()
    } else {
        format!("{:.2}%", r * 100.0)
    }
}

fn row(c: &OverlapCell) -> Vec<String> {
    vec![
        label(&c.p1_segment),
        label(&c.p2_segment),
        if c.suppressed {
            "suppressed".to_owned()
        } else {
            short(c.matched.round())
        },
        short(c.p1_population.round()),
        short(c.p2_population.round()),
        rate(c, c.p1_match_rate),
        rate(c, c.p2_match_rate),
    ]
}

/// Appends an overlap result: noise, threshold, then one table of every cell.
pub fn write_summary(s: &mut String, r: &OverlapResult) {
    let _ = writeln!(
        s,
        "  segments:             sender (P1) {}, receiver (P2) {}; min_cell {}; charged epsilon \
         {} delta {} to each side",
        if r.p1_segment_column.is_empty() {
            "none".to_owned()
        } else {
            format!("'{}'", r.p1_segment_column)
        },
        if r.p2_segment_column.is_empty() {
            "none".to_owned()
        } else {
            format!("'{}'", r.p2_segment_column)
        },
        r.min_cell,
        r.epsilon,
        r.delta
    );
    let _ = writeln!(
        s,
        "  identifiers:          sender {}, receiver {} ({} receiver records or identifiers left \
         out by the per-person bound or for two segments); profile {}",
        group(r.p1_identifiers),
        group(r.p2_identifiers),
        group(r.p2_dropped),
        r.profile
    );
    for (name, n) in [
        ("matched counts:", &r.count_noise),
        ("cross-tab cells:", &r.cross_noise),
        ("sender populations:", &r.p1_population_noise),
        ("receiver populations:", &r.population_noise),
    ] {
        if let Some(n) = n {
            let _ = writeln!(s, "  {name:<22}{}", noise_text(n));
        }
    }
    let rows: Vec<Vec<String>> = r
        .total
        .iter()
        .chain(&r.by_p1)
        .chain(&r.by_p2)
        .chain(&r.cross)
        .map(row)
        .collect();
    indented(
        s,
        &[
            "SENDER SEGMENT",
            "RECEIVER SEGMENT",
            "MATCHED",
            "SENDER PEOPLE",
            "RECEIVER PEOPLE",
            "SENDER MATCH RATE",
            "RECEIVER MATCH RATE",
        ],
        &rows,
    );
    s.push_str(
        "  match rate: matched / that side's people in the cell, both noisy; cells with fewer \
         than min_cell matched are suppressed\n",
    );
}

fn cell_json(c: &OverlapCell) -> Value {
    json!({
        "p1_segment": c.p1_segment, "p2_segment": c.p2_segment, "matched": c.matched,
        "p1_population": c.p1_population, "p2_population": c.p2_population,
        "p1_match_rate": c.p1_match_rate, "p2_match_rate": c.p2_match_rate,
        "suppressed": c.suppressed,
    })
}

/// JSON of an overlap result.
pub fn json(r: &OverlapResult) -> Value {
    let cells = |v: &[OverlapCell]| v.iter().map(cell_json).collect::<Vec<_>>();
    json!({
        "p1_segment_column": r.p1_segment_column,
        "p2_segment_column": r.p2_segment_column,
        "min_cell": r.min_cell,
        "epsilon": r.epsilon,
        "delta": r.delta,
        "profile": r.profile,
        "p1_identifiers": r.p1_identifiers,
        "p2_identifiers": r.p2_identifiers,
        "p2_dropped": r.p2_dropped,
        "count_noise": r.count_noise.as_ref().map(noise_json),
        "cross_noise": r.cross_noise.as_ref().map(noise_json),
        "p1_population_noise": r.p1_population_noise.as_ref().map(noise_json),
        "population_noise": r.population_noise.as_ref().map(noise_json),
        "total": r.total.as_ref().map(cell_json),
        "by_p1": cells(&r.by_p1),
        "by_p2": cells(&r.by_p2),
        "cross": cells(&r.cross),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cells_rates_and_suppression_are_shown() {
        let r = OverlapResult {
            total: Some(OverlapCell {
                matched: 1200.4,
                p1_population: 5000.0,
                p2_population: 2400.0,
                p1_match_rate: 0.24,
                p2_match_rate: 0.5,
                ..Default::default()
            }),
            by_p1: vec![OverlapCell {
                p1_segment: "north".into(),
                p1_population: 300.0,
                suppressed: true,
                ..Default::default()
            }],
            p1_segment_column: "region".into(),
            min_cell: 100,
            epsilon: 1.0,
            ..Default::default()
        };
        let mut s = String::new();
        write_summary(&mut s, &r);
        assert!(
            s.contains("sender (P1) 'region', receiver (P2) none"),
            "{s}"
        );
        assert!(s.contains("24.00%") && s.contains("50.00%"), "{s}");
        assert!(s.contains("north") && s.contains("suppressed"), "{s}");
        let total = s.lines().find(|l| l.contains("1200")).unwrap();
        assert!(total.trim_start().starts_with("all"), "{total}");
        let j = json(&r);
        assert_eq!(j["by_p1"][0]["suppressed"], true);
        assert_eq!(j["total"]["p2_match_rate"], 0.5);
        assert_eq!(j["cross"], json!([]));
    }
}
