//! Lift results (`lift`): the window, threshold and noise, the arm × cohort cells, then the
//! derived figures per cohort with their 95 % intervals (sampling and DP noise).

use std::fmt::Write as _;

use parley_proto::{LiftEstimate, LiftFigures, LiftResult};
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text};
use super::table::{group, indented, short};

/// `value [low, high]`, scaled by `k` with `d` decimals and `unit` appended.
fn est(e: Option<&LiftEstimate>, k: f64, d: usize, unit: &str) -> String {
    e.map_or_else(
        || "-".to_owned(),
        |e| {
            format!(
                "{:.d$}{unit} [{:.d$}{unit}, {:.d$}{unit}]",
                e.value * k,
                e.low * k,
                e.high * k
            )
        },
    )
}

/// Appends a lift result: window, noise, cells, figures.
pub fn write_summary(s: &mut String, r: &LiftResult) {
    let _ = writeln!(
        s,
        "  conversion window:    {} to {} (exclusive); min_cell {}; charged epsilon {} delta {} \
         to each side",
        r.window_start, r.window_end, r.min_cell, r.epsilon, r.delta
    );
    let _ = writeln!(
        s,
        "  brand identifiers:    {} ({} records over the per-person bound left out); profile {}",
        group(r.receiver_identifiers),
        group(r.records_dropped),
        r.profile
    );
    if let Some(n) = &r.count_noise {
        let _ = writeln!(s, "  matched counts:       {}", noise_text(n));
    }
    for (name, n) in r.column_names.iter().zip(&r.column_noise) {
        let _ = writeln!(s, "  {:<22}{}", format!("{name}:"), noise_text(n));
    }
    let rows: Vec<Vec<String>> = r
        .cells
        .iter()
        .map(|c| {
            let mut row = vec![c.arm.clone(), c.cohort.clone(), group(c.population)];
            if c.suppressed {
                row.extend(std::iter::repeat_n("suppressed".to_owned(), 3));
            } else {
                row.extend([short(c.matched), short(c.conversions), short(c.value)]);
            }
            row
        })
        .collect();
    indented(
        s,
        &[
            "ARM",
            "COHORT",
            "POPULATION",
            "MATCHED",
            "CONVERSIONS",
            "VALUE",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = r.figures.iter().map(figure_row).collect();
    indented(
        s,
        &[
            "COHORT",
            "TEST RATE",
            "CONTROL RATE",
            "RELATIVE LIFT",
            "INCR. CONVERSIONS",
            "INCR. VALUE",
            "IROAS",
        ],
        &rows,
    );
    s.push_str("  intervals: 95 %, sampling and DP noise (delta method; see the lift docs)\n");
}

fn figure_row(f: &LiftFigures) -> Vec<String> {
    let cohort = if f.cohort.is_empty() {
        "all".to_owned()
    } else {
        f.cohort.clone()
    };
    if !f.withheld.is_empty() {
        return vec![cohort, format!("withheld: {}", f.withheld)];
    }
    vec![
        cohort,
        est(f.test_rate.as_ref(), 100.0, 2, "%"),
        est(f.control_rate.as_ref(), 100.0, 2, "%"),
        est(f.relative_lift.as_ref(), 100.0, 2, "%"),
        est(f.incremental_conversions.as_ref(), 1.0, 1, ""),
        est(f.incremental_value.as_ref(), 1.0, 2, ""),
        est(f.iroas.as_ref(), 1.0, 2, ""),
    ]
}

fn est_json(e: Option<&LiftEstimate>) -> Value {
    e.map_or(
        Value::Null,
        |e| json!({"value": e.value, "std_error": e.std_error, "low": e.low, "high": e.high}),
    )
}

/// JSON of a lift result.
pub fn json(r: &LiftResult) -> Value {
    json!({
        "window_start": r.window_start,
        "window_end": r.window_end,
        "min_cell": r.min_cell,
        "epsilon": r.epsilon,
        "delta": r.delta,
        "spend": r.spend,
        "receiver_identifiers": r.receiver_identifiers,
        "records_dropped": r.records_dropped,
        "profile": r.profile,
        "count_noise": r.count_noise.as_ref().map(noise_json),
        "column_noise": r.column_names.iter().zip(&r.column_noise)
            .map(|(n, x)| json!({"column": n, "noise": noise_json(x)})).collect::<Vec<_>>(),
        "cells": r.cells.iter().map(|c| json!({
            "arm": c.arm, "cohort": c.cohort, "population": c.population,
            "matched": c.matched, "conversions": c.conversions, "value": c.value,
            "value_squares": c.value_squares, "conversion_squares": c.conversion_squares,
            "suppressed": c.suppressed,
        })).collect::<Vec<_>>(),
        "figures": r.figures.iter().map(|f| json!({
            "cohort": f.cohort,
            "test_rate": est_json(f.test_rate.as_ref()),
            "control_rate": est_json(f.control_rate.as_ref()),
            "relative_lift": est_json(f.relative_lift.as_ref()),
            "incremental_conversions": est_json(f.incremental_conversions.as_ref()),
            "incremental_value": est_json(f.incremental_value.as_ref()),
            "iroas": est_json(f.iroas.as_ref()),
            "withheld": f.withheld,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_proto::LiftCell;

    use super::*;

    #[test]
    fn cells_figures_and_withheld_reasons_are_shown() {
        let e = |v: f64| LiftEstimate {
            value: v,
            std_error: 0.01,
            low: v - 0.02,
            high: v + 0.02,
        };
        let r = LiftResult {
            cells: vec![
                LiftCell {
                    arm: "test".into(),
                    cohort: "north".into(),
                    population: 1200,
                    matched: 800.4,
                    conversions: 66.0,
                    ..Default::default()
                },
                LiftCell {
                    arm: "control".into(),
                    cohort: "north".into(),
                    population: 50,
                    suppressed: true,
                    ..Default::default()
                },
            ],
            figures: vec![
                LiftFigures {
                    cohort: "north".into(),
                    withheld: "a cell of this cohort is below min_cell".into(),
                    ..Default::default()
                },
                LiftFigures {
                    test_rate: Some(e(0.055)),
                    relative_lift: Some(e(0.1)),
                    ..Default::default()
                },
            ],
            window_start: "2026-11-01".into(),
            window_end: "2026-11-29".into(),
            min_cell: 100,
            ..Default::default()
        };
        let mut s = String::new();
        write_summary(&mut s, &r);
        assert!(s.contains("2026-11-01 to 2026-11-29"), "{s}");
        assert!(s.contains("suppressed"), "{s}");
        assert!(
            s.contains("withheld: a cell of this cohort is below min_cell"),
            "{s}"
        );
        assert!(s.contains("5.50% [3.50%, 7.50%]"), "{s}");
        assert!(s.contains("10.00% [8.00%, 12.00%]"), "{s}");
        let j = json(&r);
        assert_eq!(j["cells"][1]["suppressed"], true);
        assert_eq!(j["figures"][1]["relative_lift"]["value"], 0.1);
        assert_eq!(j["figures"][1]["iroas"], Value::Null);
        assert_eq!(
            j["figures"][0]["withheld"],
            "a cell of this cohort is below min_cell"
        );
    }
}
