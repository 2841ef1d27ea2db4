//! The intersection-sum part of a PSI `sum` result: the noisy sum of each of the receiver's
//! value columns over the intersection and the noisy count, each with its noise, and the
//! clamping bounds. A one-column result reads as it always has; a job with several value
//! columns gets one line per column.

use std::fmt::Write as _;

use parley_proto::{ColumnSum, SumRelease};
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::table::short;

/// Appends the intersection-sum lines of a PSI result.
pub fn write_summary(s: &mut String, sum: &SumRelease) {
    let several = sum.columns.len() > 1;
    if several {
        for c in &sum.columns {
            let _ = writeln!(
                s,
                "  {:<22}{}  {}; clamped to [{}, {}]",
                format!("sum of {}:", c.name.escape_debug()),
                short(c.noisy_sum),
                c.sum_noise.as_ref().map(noise_text).unwrap_or_default(),
                short(c.lower),
                short(c.upper)
            );
        }
    } else {
        let _ = writeln!(
            s,
            "  noisy sum:            {}  {}",
            short(sum.noisy_sum),
            sum.sum_noise.as_ref().map(noise_text).unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "  noisy count:          {}  {}",
        sum.noisy_count,
        sum.count_noise.as_ref().map(noise_text).unwrap_or_default()
    );
    if !several {
        let _ = writeln!(
            s,
            "  values clamped to:    [{}, {}]",
            short(sum.lower),
            short(sum.upper)
        );
    }
}

/// JSON of an intersection-sum release; `columns` lists every value column (results from
/// nodes that predate it have none).
pub fn json(s: &SumRelease) -> Value {
    json!({
        "noisy_sum": s.noisy_sum,
        "noisy_count": s.noisy_count,
        "sum_noise": s.sum_noise.as_ref().map_or(Value::Null, noise_json),
        "count_noise": s.count_noise.as_ref().map_or(Value::Null, noise_json),
        "lower": s.lower,
        "upper": s.upper,
        "columns": s.columns.iter().map(column_json).collect::<Vec<_>>(),
    })
}

/// JSON of one value column's release.
fn column_json(c: &ColumnSum) -> Value {
    json!({
        "name": c.name,
        "noisy_sum": c.noisy_sum,
        "sum_noise": c.sum_noise.as_ref().map_or(Value::Null, noise_json),
        "lower": c.lower,
        "upper": c.upper,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_proto::{DpMechanism, NoiseInfo};

    use super::*;

    fn noise(epsilon: f64, accuracy95: f64) -> NoiseInfo {
        NoiseInfo {
            mechanism: DpMechanism::Laplace as i32,
            epsilon,
            scale: accuracy95 / 3.0,
            accuracy95,
            ..Default::default()
        }
    }

    fn column(name: &str, noisy_sum: f64, upper: f64) -> ColumnSum {
        ColumnSum {
            name: name.into(),
            noisy_sum,
            sum_noise: Some(noise(0.25, 30.0)),
            lower: 0.0,
            upper,
        }
    }

    fn release(columns: Vec<ColumnSum>) -> SumRelease {
        let first = columns[0].clone();
        SumRelease {
            noisy_sum: first.noisy_sum,
            noisy_count: 412,
            sum_noise: first.sum_noise,
            count_noise: Some(noise(0.5, 6.0)),
            lower: first.lower,
            upper: first.upper,
            columns,
        }
    }

    #[test]
    fn one_column_reads_as_before() {
        let mut s = String::new();
        write_summary(&mut s, &release(vec![column("amount", 1234.5, 500.0)]));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3, "{s}");
        assert!(
            lines[0].starts_with("  noisy sum:            1234.5  ±30 at 95%"),
            "{s}"
        );
        assert!(
            lines[1].starts_with("  noisy count:          412  ±6 at 95%"),
            "{s}"
        );
        assert_eq!(lines[2], "  values clamped to:    [0, 500]");
        // A result from a node that predates `columns` renders the same.
        let mut old = release(vec![column("amount", 1234.5, 500.0)]);
        old.columns.clear();
        let mut t = String::new();
        write_summary(&mut t, &old);
        assert_eq!(s, t);
    }

    #[test]
    fn several_columns_get_a_line_each_and_json_lists_them() {
        let r = release(vec![
            column("revenue", 1234.5, 500.0),
            column("items", 80.0, 10.0),
            column("margin", -3.25, 50.0),
        ]);
        let mut s = String::new();
        write_summary(&mut s, &r);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4, "{s}");
        assert!(
            lines[0]
                .starts_with("  sum of revenue:       1234.5  ±30 at 95% (laplace, epsilon 0.25"),
            "{s}"
        );
        assert!(lines[0].ends_with("; clamped to [0, 500]"), "{s}");
        assert!(
            lines[1].starts_with("  sum of items:         80  ±30"),
            "{s}"
        );
        assert!(
            lines[2].starts_with("  sum of margin:        -3.25  "),
            "{s}"
        );
        assert!(
            lines[3].starts_with("  noisy count:          412  ±6"),
            "{s}"
        );
        let j = json(&r);
        let cols = j["columns"].as_array().unwrap();
        assert_eq!(cols.len(), 3);
        assert_eq!(cols[1]["name"], "items");
        assert_eq!(cols[1]["noisy_sum"], 80.0);
        assert_eq!(cols[1]["upper"], 10.0);
        assert_eq!(cols[2]["sum_noise"]["epsilon"], 0.25);
        // The first column's figures stay where older readers look.
        assert_eq!(j["noisy_sum"], 1234.5);
        assert_eq!(j["upper"], 500.0);
    }

    #[test]
    fn column_names_are_escaped() {
        let mut s = String::new();
        write_summary(
            &mut s,
            &release(vec![column("a\nb", 1.0, 5.0), column("c", 2.0, 5.0)]),
        );
        assert!(s.contains("sum of a\\nb:"), "{s}");
        assert_eq!(s.lines().count(), 3, "{s}");
    }
}
