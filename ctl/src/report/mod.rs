//! `parleyctl report`: a job's result as one self-contained HTML page with charts.
//!
//! # Guarantee
//! The page ([`html::page`]) has no script, no stylesheet link, no image source and a
//! `Content-Security-Policy` of `default-src 'none'`: it reads offline and fetches nothing.
//! Charts are inline SVG drawn by `plotters` ([`chart`]). Every string that came from a node,
//! a dataset or an analyst (labels, category and segment names, reasons, node and dataset
//! names) is escaped, in the page by [`html::escape`] and in the SVG by plotters' backend.
//!
//! A report shows only what `parleyctl result` shows: the released (noisy) values, never
//! anything a node kept. On every report: the job's parameters, who took part and in which
//! role, the epsilon charged to each dataset, the budget left where the coordinator knows it,
//! and a plain-language note on what the noise means.

pub mod chart;
pub(crate) mod html;
mod kinds;

use std::fmt::Write as _;

use parley_proto::{Job, JobState};

use crate::render::{format_ms, kind_text, outcome_text, short, state_name};
use chart::Bar;
use html::{escape, table};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters failed to draw a chart.
    #[error("drawing the chart '{chart}' failed: {detail}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// What plotters said.
        detail: String,
    },
}

/// One dataset's budget as the coordinator last heard it from the dataset's node.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLeft {
    /// Node name.
    pub node: String,
    /// Dataset name.
    pub dataset: String,
    /// Epsilon left in the current period.
    pub epsilon: f64,
    /// Epsilon of the whole period.
    pub epsilon_total: f64,
}

/// A chart and the sentence under it.
pub(crate) struct Figure {
    /// The SVG.
    pub(crate) svg: String,
    /// Plain text (escaped when written).
    pub(crate) caption: String,
}

impl Figure {
    /// A bar chart with its caption.
    pub(crate) fn bars(
        title: &str,
        y_desc: &str,
        bars: &[Bar],
        caption: impl Into<String>,
    ) -> Result<Figure, ReportError> {
        Ok(Figure {
            svg: chart::bars(title, y_desc, bars)?,
            caption: caption.into(),
        })
    }
}

/// The noise note every report ends its summary with.
const NOISE_NOTE: &str = "The numbers on this page are estimates. Before anything left the node \
that computed it, random noise was added so that no single person's data can be inferred from \
the result (differential privacy). The error bars and \"±\" figures show the 95% accuracy bound: \
the true value is within that distance of the shown one 95 times in 100. Small counts are \
therefore uncertain, can even be shown below zero, and should be read as \"about zero\". \
Exact (un-noised) results are marked as such.";

/// The whole HTML report of `job`. `budgets` are the datasets' budgets the caller may see
/// (empty when the coordinator knows none).
pub fn job_report(job: &Job, budgets: &[BudgetLeft]) -> Result<String, ReportError> {
    let spec = job.spec.clone().unwrap_or_default();
    let title = if spec.label.is_empty() {
        format!("Parley report: job {}", job.id)
    } else {
        format!("Parley report: {}", spec.label)
    };
    let mut body = String::new();

    // What the job was.
    let finished = job
        .history
        .iter()
        .rev()
        .find(|c| c.state() == job.state())
        .map_or_else(|| "-".to_owned(), |c| format_ms(c.at_ms));
    body.push_str(&table(
        &["job", "kind", "state", "submitted by", "ended (UTC)"],
        &[vec![
            job.id.clone(),
            kind_text(Some(&spec)),
            state_name(job.state()).to_owned(),
            job.submitted_by.clone(),
            finished,
        ]],
    ));
    if job.state() != JobState::Succeeded {
        let reason = if job.reason.is_empty() {
            "(no reason given)"
        } else {
            &job.reason
        };
        let _ = writeln!(
            body,
            "<p class=\"note\">This job released no result: {}</p>",
            escape(reason)
        );
    }

    // Who took part and what each dataset was charged.
    let typed = parley_jobs::Job::try_from(&spec).ok();
    let cost = typed.as_ref().and_then(|j| j.release_cost());
    let charged = match (&cost, job.state()) {
        (None, _) => "nothing (exact release)".to_owned(),
        (Some(c), JobState::Succeeded) => charge_text(c.epsilon, c.delta),
        (Some(c), _) => format!(
            "{} if it ran to its release",
            charge_text(c.epsilon, c.delta)
        ),
    };
    let rows: Vec<Vec<String>> = spec
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let role = typed.as_ref().map_or("-", |j| j.role(i).policy_name());
            let left = budgets
                .iter()
                .find(|b| b.node == p.node && b.dataset == p.dataset)
                .map_or_else(
                    || "not reported".to_owned(),
                    |b| format!("{} of {}", short(b.epsilon), short(b.epsilon_total)),
                );
            vec![
                p.node.clone(),
                p.dataset.clone(),
                role.to_owned(),
                charged.clone(),
                left,
            ]
        })
        .collect();
    body.push_str("<h2>Who took part</h2>\n");
    body.push_str(&table(
        &[
            "node",
            "dataset",
            "role",
            "privacy budget charged",
            "epsilon left",
        ],
        &rows,
    ));

    // The result.
    if job.state() == JobState::Succeeded {
        body.push_str("<h2>Result</h2>\n");
        let _ = writeln!(body, "<p class=\"note\">{}</p>", escape(NOISE_NOTE));
        if let Some(result) = &job.result {
            for f in kinds::figures(result, &spec)? {
                let _ = writeln!(
                    body,
                    "<figure>{}<figcaption>{}</figcaption></figure>",
                    f.svg,
                    escape(&f.caption)
                );
            }
        }
        let _ = writeln!(
            body,
            "<h2>All released figures</h2>\n<pre>{}</pre>",
            escape(&outcome_text(job))
        );
    }

    // The parameters, as the coordinator stored them.
    let _ = writeln!(
        body,
        "<h2>Parameters</h2>\n<pre>{}</pre>",
        escape(&format!("{:#?}", spec.params))
    );
    body.push_str("<h2>History</h2>\n");
    let history: Vec<Vec<String>> = job
        .history
        .iter()
        .map(|c| {
            vec![
                format_ms(c.at_ms),
                state_name(c.state()).to_owned(),
                c.note.clone(),
            ]
        })
        .collect();
    body.push_str(&table(&["at (UTC)", "state", "note"], &history));
    Ok(html::page(&title, &body))
}

/// "epsilon 0.5" or "epsilon 0.5, delta 1e-6".
fn charge_text(epsilon: f64, delta: f64) -> String {
    if delta > 0.0 {
        format!("epsilon {}, delta {delta}", short(epsilon))
    } else {
        format!("epsilon {}", short(epsilon))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_proto::{
        CategoryStats, DpStatsResult, JobResult, LiftEstimate, LiftFigures, LiftResult, Measure,
        MeasureKind, MeasureResult, NoiseInfo, OverlapCell, OverlapResult, PsiResult, RfmCell,
        RfmResult,
    };

    use super::*;
    use crate::testing::finished_job;

    const EVIL: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

    /// `page` has no markup that came from `EVIL`, and shows it escaped.
    fn assert_escaped(page: &str) {
        assert!(
            !page.contains("<script") && !page.contains("<img"),
            "{page}"
        );
        assert!(
            page.contains("&lt;script&gt;"),
            "the label must still be shown: {page}"
        );
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("http://www.w3.org/2000/svg").count(),
            "nothing may point at the network: {page}"
        );
    }

    fn bars(page: &str) -> usize {
        page.matches(&format!("fill=\"{}\"", chart::BAR_FILL))
            .count()
    }

    fn noise(accuracy95: f64) -> Option<NoiseInfo> {
        Some(NoiseInfo {
            epsilon: 0.5,
            scale: 2.0,
            accuracy95,
            sensitivity: 1.0,
            ..Default::default()
        })
    }

    fn succeeded(result: JobResult) -> Job {
        let mut job = finished_job(JobState::Succeeded, "");
        job.spec.as_mut().unwrap().label = EVIL.into();
        job.result = Some(result);
        job
    }

    #[test]
    fn psi_report_has_a_match_rate_bar_and_every_section() {
        let job = succeeded(JobResult::from(PsiResult {
            receiver_records: 1000,
            intersection_records: 250,
            count_noise: noise(6.0),
            ..Default::default()
        }));
        let budgets = [BudgetLeft {
            node: "brand".into(),
            dataset: "crm".into(),
            epsilon: 4.5,
            epsilon_total: 5.0,
        }];
        let page = job_report(&job, &budgets).unwrap();
        assert_escaped(&page);
        assert_eq!(bars(&page), 1);
        for needle in [
            "Who took part",
            "publisher",
            "subs",
            "4.5 of 5",
            "not reported",
            "Parameters",
            "min_intersection: 100",
            "25.0% of the receiver",
            "95% accuracy bound",
        ] {
            assert!(page.contains(needle), "{needle}: {page}");
        }
    }

    #[test]
    fn a_failed_job_says_why_escaped_and_draws_nothing() {
        let job = finished_job(JobState::Failed, EVIL);
        let page = job_report(&job, &[]).unwrap();
        assert!(page.contains("released no result"), "{page}");
        assert!(!page.contains("<svg"), "{page}");
        assert!(
            !page.contains("<script") && page.contains("&lt;script&gt;"),
            "{page}"
        );
    }

    #[test]
    fn dp_stats_draws_one_bar_per_released_category_and_escapes_them() {
        let cat = |c: &str, v: f64, suppressed| CategoryStats {
            category: c.into(),
            values: vec![v],
            suppressed,
        };
        let job = succeeded(JobResult::from(DpStatsResult {
            dataset: "orders".into(),
            measures: vec![MeasureResult {
                measure: Some(Measure {
                    kind: MeasureKind::Count as i32,
                    ..Default::default()
                }),
                noise: noise(3.0),
                count_noise: None,
            }],
            categories: vec![
                cat("north", 40.0, false),
                cat(EVIL, 12.0, false),
                cat("tiny", 0.0, true),
            ],
            epsilon: 1.0,
            ..Default::default()
        }));
        let page = job_report(&job, &[]).unwrap();
        assert_escaped(&page);
        assert_eq!(bars(&page), 2, "the suppressed category is not drawn");
        assert!(page.contains("1 categories suppressed"), "{page}");
    }

    #[test]
    fn rfm_draws_one_heat_map_per_spend_bucket() {
        let labels = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut cells = Vec::new();
        for m in 0..2 {
            for r in 0..3 {
                for f in 0..2 {
                    cells.push(RfmCell {
                        recency: r,
                        frequency: f,
                        monetary: m,
                        count: f64::from(r * 10 + f + m),
                        ..Default::default()
                    });
                }
            }
        }
        let job = succeeded(JobResult::from(RfmResult {
            dataset: "tx".into(),
            recency_labels: labels(&["0-30", "31-90", EVIL]),
            frequency_labels: labels(&["1", "2+"]),
            monetary_labels: labels(&["0-100", "100+"]),
            cells,
            count_noise: noise(2.0),
            epsilon: 1.0,
            ..Default::default()
        }));
        let page = job_report(&job, &[]).unwrap();
        assert_escaped(&page);
        assert_eq!(page.matches("<svg").count(), 2, "{page}");
        assert!(page.contains("spend 100+"), "{page}");
    }

    #[test]
    fn lift_draws_both_arms_and_the_lift_with_intervals() {
        let est = |value: f64| {
            Some(LiftEstimate {
                value,
                std_error: 0.01,
                low: value - 0.02,
                high: value + 0.02,
            })
        };
        let job = succeeded(JobResult::from(LiftResult {
            figures: vec![
                LiftFigures {
                    cohort: EVIL.into(),
                    test_rate: est(0.055),
                    control_rate: est(0.05),
                    relative_lift: est(0.1),
                    ..Default::default()
                },
                LiftFigures {
                    cohort: "small".into(),
                    withheld: "fewer than min_cell people".into(),
                    ..Default::default()
                },
            ],
            epsilon: 1.0,
            ..Default::default()
        }));
        let page = job_report(&job, &[]).unwrap();
        assert_escaped(&page);
        assert_eq!(
            bars(&page),
            3,
            "test, control and the lift of the one cohort shown"
        );
        assert!(page.contains("1 cohorts withheld"), "{page}");
    }

    #[test]
    fn overlap_draws_a_bar_per_segment_of_each_side() {
        let cell = |p1: &str, p2: &str| OverlapCell {
            p1_segment: p1.into(),
            p2_segment: p2.into(),
            matched: 50.0,
            p1_population: 100.0,
            p2_population: 200.0,
            p1_match_rate: 0.5,
            p2_match_rate: 0.25,
            suppressed: false,
        };
        let job = succeeded(JobResult::from(OverlapResult {
            by_p1: vec![cell("north", ""), cell(EVIL, "")],
            by_p2: vec![cell("", "gold"), cell("", "silver"), cell("", "bronze")],
            count_noise: noise(4.0),
            p1_segment_column: "region".into(),
            p2_segment_column: "tier".into(),
            ..Default::default()
        }));
        let page = job_report(&job, &[]).unwrap();
        assert_escaped(&page);
        assert_eq!(bars(&page), 5);
    }
}
