//! RFM results (`rfm`): the period and the noise, then one row per non-empty-looking cell
//! (every cell is released; the table lists them all, recency-major) with its noisy count and
//! mean spend, or "suppressed".

use std::fmt::Write as _;

use parley_proto::RfmResult;
use serde_json::{Value, json};

use super::noise::{noise_json, noise_text, write_charged};
use super::table::{short, write_table};

/// The (recency, frequency, monetary) labels of a cell.
fn labels<'r>(r: &'r RfmResult, c: &parley_proto::RfmCell) -> [&'r str; 3] {
    let get = |v: &'r [String], i: u32| v.get(i as usize).map_or("?", String::as_str);
    [
        get(&r.recency_labels, c.recency),
        get(&r.frequency_labels, c.frequency),
        get(&r.monetary_labels, c.monetary),
    ]
}

/// Appends an RFM result: period, noise, then the cells as a table.
pub fn write_summary(s: &mut String, r: &RfmResult) {
    write_charged(s, &r.dataset, r.epsilon, r.delta);
    let _ = writeln!(
        s,
        "  period:               {} to {} (exclusive); recency in days before its last day",
        r.period_start, r.period_end
    );
    if let Some(n) = &r.count_noise {
        let _ = writeln!(s, "  persons per cell:     {}", noise_text(n));
    }
    if let Some(n) = &r.sum_noise {
        let _ = writeln!(s, "  spend sums:           {}", noise_text(n));
    }
    let means = r.sum_noise.is_some();
    let mut headers = vec!["RECENCY", "FREQUENCY", "MONETARY", "PERSONS"];
    if means {
        headers.push("MEAN SPEND");
    }
    let rows: Vec<Vec<String>> = r
        .cells
        .iter()
        .map(|c| {
            let mut row: Vec<String> = labels(r, c).iter().map(|l| l.to_string()).collect();
            if c.suppressed {
                row.push("suppressed".into());
                if means {
                    row.push("suppressed".into());
                }
            } else {
                row.push(short(c.count));
                if means {
                    row.push(short(c.mean_spend));
                }
            }
            row
        })
        .collect();
    let mut out = Vec::new();
    if write_table(&mut out, &headers, &rows).is_ok() {
        for line in String::from_utf8_lossy(&out).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
}

/// JSON of an RFM result.
pub fn json(r: &RfmResult) -> Value {
    json!({
        "dataset": r.dataset,
        "period_start": r.period_start,
        "period_end": r.period_end,
        "epsilon": r.epsilon,
        "delta": r.delta,
        "recency_labels": r.recency_labels,
        "frequency_labels": r.frequency_labels,
        "monetary_labels": r.monetary_labels,
        "count_noise": r.count_noise.as_ref().map_or(Value::Null, noise_json),
        "sum_noise": r.sum_noise.as_ref().map_or(Value::Null, noise_json),
        "cells": r.cells.iter().map(|c| {
            let [rl, fl, ml] = labels(r, c);
            json!({
                "recency": rl,
                "frequency": fl,
                "monetary": ml,
                "persons": c.count,
                "mean_spend": c.mean_spend,
                "suppressed": c.suppressed,
            })
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::RfmCell;

    #[test]
    fn cells_render_with_their_labels() {
        let r = RfmResult {
            dataset: "purchases".into(),
            recency_labels: vec!["0-30".into(), "31+".into()],
            frequency_labels: vec!["1".into(), "2+".into()],
            monetary_labels: vec!["≤50".into(), ">50".into()],
            cells: vec![
                RfmCell {
                    recency: 1,
                    frequency: 0,
                    monetary: 1,
                    count: 12.0,
                    mean_spend: 0.0,
                    suppressed: false,
                },
                RfmCell {
                    suppressed: true,
                    ..RfmCell::default()
                },
            ],
            epsilon: 0.5,
            period_start: "2025-12-01".into(),
            period_end: "2026-12-01".into(),
            ..RfmResult::default()
        };
        let mut s = String::new();
        write_summary(&mut s, &r);
        assert!(
            s.contains("31+") && s.contains(">50") && s.contains("12"),
            "{s}"
        );
        assert!(s.contains("suppressed") && !s.contains("MEAN SPEND"), "{s}");
        let j = json(&r);
        assert_eq!(j["cells"][0]["recency"], "31+");
        assert_eq!(j["cells"][1]["suppressed"], true);
    }
}
