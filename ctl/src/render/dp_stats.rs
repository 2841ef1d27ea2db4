//! DP-statistics results (`dp_stats`): per measure its noise, then a table of the noisy values
//! per declared category (or "suppressed" where the noisy count was below `min_count`).

use std::fmt::Write as _;

use parley_proto::{DpStatsResult, MeasureKind};
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text, write_charged};
use super::table::{group, short};

/// "count", "sum(COLUMN)", "mean(COLUMN)".
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
pub fn write_summary(s: &mut String, r: &DpStatsResult) {
    write_charged(s, &r.dataset, r.epsilon, r.delta);
    if r.rows_dropped > 0 {
        let _ = writeln!(
            s,
            "  contribution bound:   {} rows left out (beyond max_rows_per_person)",
            group(r.rows_dropped)
        );
    }
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
pub fn json(r: &DpStatsResult) -> Value {
    json!({
        "dataset": r.dataset,
        "epsilon": r.epsilon,
        "delta": r.delta,
        "rows_dropped": r.rows_dropped,
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

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::{CategoryStats, DpMechanism, Measure, MeasureResult, NoiseInfo};

    #[test]
    fn noise_and_tables_render() {
        let n = NoiseInfo {
            mechanism: DpMechanism::Laplace as i32,
            epsilon: 0.5,
            delta: 0.0,
            scale: 2.0,
            accuracy95: 6.4,
            sensitivity: 1.0,
        };
        assert_eq!(
            noise_text(&n),
            "±6.4 at 95% (laplace, epsilon 0.5, noise scale 2, one person moves it by ≤ 1)"
        );
        let r = DpStatsResult {
            dataset: "crm".into(),
            epsilon: 1.0,
            delta: 0.0,
            rows_dropped: 0,
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
        write_summary(&mut s, &r);
        assert!(s.contains("north") && s.contains(" 1234"), "{s}");
        assert!(s.contains("suppressed"), "{s}");
        assert_eq!(json(&r)["categories"][0]["values"][0], 1234.0);
    }
}
