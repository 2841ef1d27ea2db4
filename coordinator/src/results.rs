//! How `parleyctl` shows the DP parts of results: noisy PSI counts, intersection-sums and
//! DP-statistics tables, as text and as JSON.
//!
//! Every noisy value is shown with its noise: mechanism, epsilon (and delta) charged, noise
//! scale and the 95% accuracy bound, so that analysts read released values as estimates.

use std::fmt::Write as _;

use parley_proto::{
    DpMechanism, DpStatsResult, MeasureKind, NoiseInfo, PsiResult, SecureSumResult, SumRelease,
};
use serde_json::{Value, json};

/// Lower-case name of a mechanism, as in job files.
pub fn mechanism_name(m: DpMechanism) -> &'static str {
    match m {
        DpMechanism::Laplace => "laplace",
        DpMechanism::Gaussian => "gaussian",
    }
}

/// "±12.3 at 95% (laplace, epsilon 0.5, scale 2)".
pub fn noise_text(n: &NoiseInfo) -> String {
    let delta = if n.delta > 0.0 {
        format!(", delta {}", n.delta)
    } else {
        String::new()
    };
    format!(
        "±{} at 95% ({}, epsilon {}{delta}, noise scale {})",
        short(n.accuracy95),
        mechanism_name(n.mechanism()),
        n.epsilon,
        short(n.scale)
    )
}

/// JSON of a noise description.
pub fn noise_json(n: &NoiseInfo) -> Value {
    json!({
        "mechanism": mechanism_name(n.mechanism()),
        "epsilon": n.epsilon,
        "delta": n.delta,
        "scale": n.scale,
        "accuracy95": n.accuracy95,
    })
}

/// A number with at most 4 significant decimals and no trailing zeros.
fn short(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Appends the intersection-sum lines of a PSI result.
pub fn write_sum_summary(s: &mut String, sum: &SumRelease) {
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

/// The DP-specific JSON fields of a PSI result.
pub fn psi_dp_json(p: &PsiResult) -> Value {
    json!({
        "count_noise": p.count_noise.as_ref().map_or(Value::Null, noise_json),
        "sum": p.sum.as_ref().map_or(Value::Null, |s| json!({
            "noisy_sum": s.noisy_sum,
            "noisy_count": s.noisy_count,
            "sum_noise": s.sum_noise.as_ref().map_or(Value::Null, noise_json),
            "count_noise": s.count_noise.as_ref().map_or(Value::Null, noise_json),
            "lower": s.lower,
            "upper": s.upper,
        })),
    })
}

fn measure_name(kind: MeasureKind, column: &str) -> String {
    match kind {
        MeasureKind::Count => "count".to_string(),
        MeasureKind::Sum => format!("sum({column})"),
        MeasureKind::Mean => format!("mean({column})"),
        MeasureKind::Unspecified => "?".to_string(),
    }
}

/// Appends a DP-statistics result: one line per measure with its noise, then a table of
/// categories.
pub fn write_dp_stats(s: &mut String, r: &DpStatsResult) {
    let delta = if r.delta > 0.0 {
        format!(", delta {}", r.delta)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  dataset:              {} (epsilon {} charged{delta})",
        r.dataset, r.epsilon
    );
    let mut headers = vec!["CATEGORY".to_string()];
    for m in &r.measures {
        let Some(measure) = &m.measure else { continue };
        let name = measure_name(measure.kind(), &measure.column);
        let noise = m.noise.as_ref().map(noise_text).unwrap_or_default();
        let _ = writeln!(s, "  {name:<21} {noise}");
        if let Some(c) = &m.count_noise {
            let _ = writeln!(s, "  {:<21} count: {}", "", noise_text(c));
        }
        headers.push(name.to_uppercase());
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in &r.categories {
        let mut row = vec![c.category.clone()];
        if c.suppressed {
            row.extend(headers.iter().skip(1).map(|_| "suppressed".to_string()));
        } else {
            row.extend(c.values.iter().map(|v| short(*v)));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut out = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i == 0 {
                let _ = write!(out, "{cell:<w$}  ");
            } else {
                let _ = write!(out, "{cell:>w$}  ");
            }
        }
        out.trim_end().to_string()
    };
    let _ = writeln!(s, "{}", line(&headers));
    for r in &rows {
        let _ = writeln!(s, "{}", line(r));
    }
}

/// JSON of a DP-statistics result.
pub fn dp_stats_json(r: &DpStatsResult) -> Value {
    json!({
        "dataset": r.dataset,
        "epsilon": r.epsilon,
        "delta": r.delta,
        "measures": r.measures.iter().map(|m| {
            let measure = m.measure.clone().unwrap_or_default();
            json!({
                "measure": measure_name(measure.kind(), &measure.column),
                "column": measure.column,
                "lower": measure.lower,
                "upper": measure.upper,
                "epsilon": measure.epsilon,
                "noise": m.noise.as_ref().map_or(Value::Null, noise_json),
                "count_noise": m.count_noise.as_ref().map_or(Value::Null, noise_json),
            })
        }).collect::<Vec<_>>(),
        "categories": r.categories.iter().map(|c| json!({
            "category": c.category,
            "values": c.values,
            "suppressed": c.suppressed,
        })).collect::<Vec<_>>(),
    })
}

/// Appends a secure-aggregation result: contributors, dropouts, then the table of sums.
pub fn write_secure_sum(s: &mut String, r: &SecureSumResult) {
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
pub fn secure_sum_json(r: &SecureSumResult) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::{CategoryStats, Measure, MeasureResult};

    #[test]
    fn noise_and_tables_render() {
        let n = NoiseInfo {
            mechanism: DpMechanism::Laplace as i32,
            epsilon: 0.5,
            delta: 0.0,
            scale: 2.0,
            accuracy95: 6.4,
        };
        assert_eq!(
            noise_text(&n),
            "±6.4 at 95% (laplace, epsilon 0.5, noise scale 2)"
        );
        let r = DpStatsResult {
            dataset: "crm".into(),
            epsilon: 1.0,
            delta: 0.0,
            measures: vec![MeasureResult {
                measure: Some(Measure {
                    kind: MeasureKind::Count as i32,
                    epsilon: 1.0,
                    ..Default::default()
                }),
                noise: Some(n),
                count_noise: None,
            }],
            categories: vec![
                CategoryStats {
                    category: "north".into(),
                    values: vec![1234.0],
                    suppressed: false,
                },
                CategoryStats {
                    category: "other".into(),
                    values: vec![],
                    suppressed: true,
                },
            ],
        };
        let mut s = String::new();
        write_dp_stats(&mut s, &r);
        assert!(s.contains("north") && s.contains(" 1234"), "{s}");
        assert!(s.contains("suppressed"), "{s}");
        assert_eq!(dp_stats_json(&r)["categories"][0]["values"][0], 1234.0);
    }
}
