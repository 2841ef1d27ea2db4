//! The charts of each kind's report: one function per kind, dispatched by one exhaustive
//! `match` in [`figures`], so a new kind is one arm and one function here.

use parley_proto::job_result::Kind as ResultKind;
use parley_proto::{
    DpStatsResult, JobResult, JobSpec, LiftEstimate, LiftResult, MeasureKind, NoiseInfo,
    OverlapResult, PsiResult, RfmResult, SecureSumResult,
};

use super::chart::{self, Bar};
use super::{Figure, ReportError};
use crate::render::short;

/// The charts of `result`.
pub(super) fn figures(result: &JobResult, spec: &JobSpec) -> Result<Vec<Figure>, ReportError> {
    match &result.kind {
        Some(ResultKind::Psi(r)) => psi(r, spec),
        Some(ResultKind::DpStats(r)) => dp_stats(r),
        Some(ResultKind::SecureSum(r)) => secure_sum(r),
        Some(ResultKind::Rfm(r)) => rfm(r),
        Some(ResultKind::Lift(r)) => lift(r),
        Some(ResultKind::Overlap(r)) => overlap(r),
        None => Ok(Vec::new()),
    }
}

/// The 95% half-width of a noisy value (0 for an exact one).
fn err95(noise: Option<&NoiseInfo>) -> f64 {
    noise.map_or(0.0, |n| n.accuracy95)
}

/// "(exact)" or "±12 at 95%".
fn noise_phrase(noise: Option<&NoiseInfo>) -> String {
    match noise {
        Some(n) => format!("each within ±{} at 95%", short(n.accuracy95)),
        None => "exact, no noise added".to_owned(),
    }
}

/// PSI: the receiver's match rate (match, cardinality), or the sums (sum).
fn psi(r: &PsiResult, spec: &JobSpec) -> Result<Vec<Figure>, ReportError> {
    let receiver = r.receiver_records.max(1) as f64;
    if let Some(sum) = &r.sum {
        let count_err = err95(sum.count_noise.as_ref());
        let mut out = vec![Figure::bars(
            "Matched records",
            "records",
            &[Bar {
                label: "intersection".into(),
                value: sum.noisy_count as f64,
                err95: count_err,
            }],
            format!(
                "Records in the intersection: {}.",
                noise_phrase(sum.count_noise.as_ref())
            ),
        )?];
        let columns: Vec<Bar> = sum
            .columns
            .iter()
            .map(|c| Bar {
                label: c.name.clone(),
                value: c.noisy_sum,
                err95: err95(c.sum_noise.as_ref()),
            })
            .collect();
        let columns = if columns.is_empty() {
            vec![Bar {
                label: "sum".into(),
                value: sum.noisy_sum,
                err95: err95(sum.sum_noise.as_ref()),
            }]
        } else {
            columns
        };
        out.push(Figure::bars(
            "Sums over the intersection",
            "sum",
            &columns,
            "Each value column summed over the matched records, clamped to its declared bounds.",
        )?);
        return Ok(out);
    }
    if r.suppressed {
        let min = spec.psi().map_or(0, |p| p.min_intersection);
        return Ok(vec![Figure::bars(
            "Match rate",
            "% of the receiver's records",
            &[],
            format!(
                "The intersection was suppressed: fewer than min_intersection = {min} records."
            ),
        )?]);
    }
    let rate = r.intersection_records as f64 * 100.0 / receiver;
    let err = err95(r.count_noise.as_ref()) * 100.0 / receiver;
    Ok(vec![Figure::bars(
        "Match rate",
        "% of the receiver's records",
        &[Bar {
            label: "matched".into(),
            value: rate,
            err95: err,
        }],
        format!(
            "{:.1}% of the receiver's {} records are in the intersection ({}).",
            rate,
            r.receiver_records,
            noise_phrase(r.count_noise.as_ref())
        ),
    )?])
}

/// dp_stats: one bar chart per measure, one bar per released category.
fn dp_stats(r: &DpStatsResult) -> Result<Vec<Figure>, ReportError> {
    let mut out = Vec::new();
    for (i, m) in r.measures.iter().enumerate() {
        let Some(measure) = &m.measure else { continue };
        let name = match measure.kind() {
            MeasureKind::Count => "count".to_owned(),
            MeasureKind::Sum => format!("sum of {}", measure.column),
            MeasureKind::Mean => format!("mean of {}", measure.column),
            MeasureKind::Unspecified => "?".to_owned(),
        };
        let bars: Vec<Bar> = r
            .categories
            .iter()
            .filter(|c| !c.suppressed)
            .map(|c| Bar {
                label: c.category.clone(),
                value: c.values.get(i).copied().unwrap_or(0.0),
                err95: err95(m.noise.as_ref()),
            })
            .collect();
        let suppressed = r.categories.iter().filter(|c| c.suppressed).count();
        let mut caption = format!(
            "{name} per category of {}: {}.",
            r.dataset,
            noise_phrase(m.noise.as_ref())
        );
        if suppressed > 0 {
            caption.push_str(&format!(
                " {suppressed} categories suppressed (noisy count below min_count) and not drawn."
            ));
        }
        out.push(Figure::bars(&name, &name, &bars, caption)?);
    }
    Ok(out)
}

/// secure_sum: one bar chart per column, one bar per category.
fn secure_sum(r: &SecureSumResult) -> Result<Vec<Figure>, ReportError> {
    let noise = r.sum_noise.as_ref().or(r.noise.as_ref());
    let mut who = format!("Summed over {} contributors", r.contributors.len());
    if r.dropped.is_empty() {
        who.push_str(", none dropped out");
    } else {
        who.push_str(&format!(
            ", {} dropped out and are not in the sum",
            r.dropped.len()
        ));
    }
    let mut out = Vec::new();
    for (i, column) in r.columns.iter().enumerate() {
        let bars: Vec<Bar> = r
            .categories
            .iter()
            .map(|c| Bar {
                label: c.category.clone(),
                value: c.values.get(i).copied().unwrap_or(0.0),
                err95: err95(noise),
            })
            .collect();
        out.push(Figure::bars(
            column,
            column,
            &bars,
            format!("{who}; {}.", noise_phrase(noise)),
        )?);
    }
    Ok(out)
}

/// rfm: one heat map of recency × frequency per monetary bucket (small multiples).
fn rfm(r: &RfmResult) -> Result<Vec<Figure>, ReportError> {
    let (nr, nf) = (r.recency_labels.len(), r.frequency_labels.len());
    let mut out = Vec::new();
    for (m, m_label) in r.monetary_labels.iter().enumerate() {
        let mut values = vec![0.0; nr * nf];
        for c in r.cells.iter().filter(|c| c.monetary as usize == m) {
            let (ri, fi) = (c.recency as usize, c.frequency as usize);
            if ri < nr && fi < nf && !c.suppressed {
                values[ri * nf + fi] = c.count;
            }
        }
        out.push(Figure {
            svg: chart::heat(
                &format!("spend {m_label}"),
                ("recency (days)", &r.recency_labels),
                ("purchases", &r.frequency_labels),
                &values,
            )?,
            caption: format!(
                "Persons per recency × frequency cell with spend {m_label} in {} ({} to {}); {}.",
                r.dataset,
                r.period_start,
                r.period_end,
                noise_phrase(r.count_noise.as_ref())
            ),
        });
    }
    Ok(out)
}

/// A bar for a lift estimate with its 95% interval.
fn estimate_bar(label: String, e: Option<&LiftEstimate>, scale: f64) -> Bar {
    let e = e.cloned().unwrap_or_default();
    Bar {
        label,
        value: e.value * scale,
        err95: ((e.high - e.low) / 2.0 * scale).abs(),
    }
}

/// lift: conversion rate per arm with its interval, then the relative lift per cohort.
fn lift(r: &LiftResult) -> Result<Vec<Figure>, ReportError> {
    let mut rates = Vec::new();
    let mut lifts = Vec::new();
    for f in r.figures.iter().filter(|f| f.withheld.is_empty()) {
        let cohort = if f.cohort.is_empty() {
            String::new()
        } else {
            format!("{} ", f.cohort)
        };
        rates.push(estimate_bar(
            format!("{cohort}test"),
            f.test_rate.as_ref(),
            100.0,
        ));
        rates.push(estimate_bar(
            format!("{cohort}control"),
            f.control_rate.as_ref(),
            100.0,
        ));
        let label = if f.cohort.is_empty() {
            "all".to_owned()
        } else {
            f.cohort.clone()
        };
        lifts.push(estimate_bar(label, f.relative_lift.as_ref(), 100.0));
    }
    let withheld = r.figures.iter().filter(|f| !f.withheld.is_empty()).count();
    let note = if withheld > 0 {
        format!(" {withheld} cohorts withheld (see the figures below).")
    } else {
        String::new()
    };
    Ok(vec![
        Figure::bars(
            "Conversion rate per arm",
            "% of matched people converting",
            &rates,
            format!(
                "Conversion rate of the matched people in each arm, with its 95% interval (sampling and noise).{note}"
            ),
        )?,
        Figure::bars(
            "Relative lift",
            "% lift (test over control)",
            &lifts,
            "The lift of test over control, with its 95% interval: an interval that includes 0 means no detectable effect.",
        )?,
    ])
}

/// overlap: match rate of each P1 segment and of each P2 segment.
fn overlap(r: &OverlapResult) -> Result<Vec<Figure>, ReportError> {
    let rate_bars = |cells: &[parley_proto::OverlapCell], p1: bool| -> Vec<Bar> {
        cells
            .iter()
            .filter(|c| !c.suppressed)
            .map(|c| {
                let (label, rate, population) = if p1 {
                    (c.p1_segment.clone(), c.p1_match_rate, c.p1_population)
                } else {
                    (c.p2_segment.clone(), c.p2_match_rate, c.p2_population)
                };
                let err = if population > 0.0 {
                    err95(r.count_noise.as_ref()) * 100.0 / population
                } else {
                    0.0
                };
                Bar {
                    label,
                    value: rate * 100.0,
                    err95: err,
                }
            })
            .collect()
    };
    Ok(vec![
        Figure::bars(
            &format!("Match rate by {}", r.p1_segment_column),
            "% of the segment matched",
            &rate_bars(&r.by_p1, true),
            format!(
                "Share of each {} segment found on the other side; error bars from the matched count's noise only. Cells below min_cell = {} are suppressed and not drawn.",
                r.p1_segment_column, r.min_cell
            ),
        )?,
        Figure::bars(
            &format!("Match rate by {}", r.p2_segment_column),
            "% of the segment matched",
            &rate_bars(&r.by_p2, false),
            format!(
                "Share of each {} segment found on the other side.",
                r.p2_segment_column
            ),
        )?,
    ])
}
