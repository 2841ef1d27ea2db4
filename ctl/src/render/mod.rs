//! How `parleyctl` shows jobs and results, as text and as JSON.
//!
//! A result is rendered by the module of its kind — `psi` (match, cardinality), `psi_sum`
//! (the intersection-sum part of a PSI `sum`), `dp_stats`, `secure_sum`, `rfm`, `lift`, `overlap` — each holding
//! both
//! the text summary and the JSON of that kind. `ResultView` names the kind; it is built from
//! the wire's `JobResult` in one function (`ResultView::of`) and dispatched with one
//! exhaustive `match` (`render`), so a new kind is one variant, one arm and one module.
//! Tables, counts and times are formatted in `table`.
//!
//! Every noisy value is shown with its noise (`noise`): mechanism, epsilon (and delta)
//! charged, noise scale and the 95% accuracy bound, so that analysts read released values as
//! estimates.

mod dp_stats;
mod lift;
mod noise;
mod overlap;
mod psi;
mod psi_sum;
mod rfm;
mod secure_sum;
mod table;

use std::fmt::Write as _;

use parley_proto::job_result::Kind as ResultKind;
use parley_proto::{
    DpStatsResult, Job, JobKind, JobResult, JobSpec, JobState, LiftResult, OverlapResult, PsiMode,
    PsiResult, RfmResult, SecureSumResult, StateChange,
};
use serde_json::{Value, json};

pub use table::{format_ms, group, short, write_table};

/// The kind of result a job released, borrowed from its `JobResult`.
enum ResultView<'a> {
    /// A PSI result (match, cardinality or sum).
    Psi(&'a PsiResult),
    /// A DP-statistics table.
    DpStats(&'a DpStatsResult),
    /// A secure-aggregation sum.
    SecureSum(&'a SecureSumResult),
    /// An RFM table.
    Rfm(&'a RfmResult),
    /// A conversion-lift study.
    Lift(&'a LiftResult),
    /// A segmented overlap.
    Overlap(&'a OverlapResult),
    /// The job released nothing.
    None,
}

impl<'a> ResultView<'a> {
    /// The one place a wire `JobResult` (a `oneof` over the kinds) becomes a kind.
    fn of(result: &'a JobResult) -> ResultView<'a> {
        match &result.kind {
            Some(ResultKind::Psi(p)) => ResultView::Psi(p),
            Some(ResultKind::DpStats(d)) => ResultView::DpStats(d),
            Some(ResultKind::SecureSum(s)) => ResultView::SecureSum(s),
            Some(ResultKind::Rfm(r)) => ResultView::Rfm(r),
            Some(ResultKind::Lift(r)) => ResultView::Lift(r),
            Some(ResultKind::Overlap(r)) => ResultView::Overlap(r),
            None => ResultView::None,
        }
    }
}

/// A result as its kind's module renders it.
struct Rendered {
    /// The summary lines printed under "job … succeeded".
    text: String,
    /// The `result` object of `result --json`: one key per kind, null for all but this one.
    json: Value,
}

/// Renders a result with the module of its kind.
fn render(view: ResultView<'_>, spec: Option<&JobSpec>) -> Rendered {
    let mut text = String::new();
    let mut json = json!({
        "psi": Value::Null,
        "dp_stats": Value::Null,
        "secure_sum": Value::Null,
        "rfm": Value::Null,
        "lift": Value::Null,
        "overlap": Value::Null,
    });
    let (key, value) = match view {
        ResultView::Psi(r) => {
            psi::write_summary(&mut text, spec, r);
            ("psi", psi::json(r))
        }
        ResultView::DpStats(r) => {
            dp_stats::write_summary(&mut text, r);
            ("dp_stats", dp_stats::json(r))
        }
        ResultView::SecureSum(r) => {
            secure_sum::write_summary(&mut text, r);
            ("secure_sum", secure_sum::json(r))
        }
        ResultView::Rfm(r) => {
            rfm::write_summary(&mut text, r);
            ("rfm", rfm::json(r))
        }
        ResultView::Lift(r) => {
            lift::write_summary(&mut text, r);
            ("lift", lift::json(r))
        }
        ResultView::Overlap(r) => {
            overlap::write_summary(&mut text, r);
            ("overlap", overlap::json(r))
        }
        ResultView::None => {
            text.push_str("  (the job released no result)\n");
            ("psi", Value::Null)
        }
    };
    json[key] = value;
    Rendered { text, json }
}

/// A human summary of a job's outcome: the result if it succeeded, else why not.
pub fn outcome_text(job: &Job) -> String {
    let mut s = String::new();
    let id = &job.id;
    let state = job.state();
    let reason = if job.reason.is_empty() {
        "(no reason given)"
    } else {
        &job.reason
    };
    let _ = match state {
        JobState::Succeeded => writeln!(s, "job {id} succeeded ({})", kind_text(job.spec.as_ref())),
        JobState::Refused | JobState::Failed | JobState::Cancelled => {
            writeln!(s, "job {id} {}: {reason}", state_name(state))
        }
        _ => writeln!(
            s,
            "job {id} has no result yet: it is {}; follow it with `parleyctl watch {id}`",
            state_name(state)
        ),
    };
    if state != JobState::Succeeded {
        return s;
    }
    let view = job.result.as_ref().map_or(ResultView::None, ResultView::of);
    s.push_str(&render(view, job.spec.as_ref()).text);
    s
}

/// The JSON printed by `result --json`: id, label, state, reason and the result (or null).
pub fn result_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "label": job.spec.as_ref().map(|s| s.label.as_str()).unwrap_or_default(),
        "kind": kind_text(job.spec.as_ref()),
        "state": state_name(job.state()),
        "reason": job.reason,
        "submitted_by": job.submitted_by,
        "history": job.history.iter().map(|c| json!({
            "state": state_name(c.state()),
            "at_ms": c.at_ms,
            "note": c.note,
        })).collect::<Vec<_>>(),
        "result": job.result.as_ref().map_or(Value::Null, |r| {
            render(ResultView::of(r), job.spec.as_ref()).json
        }),
    })
}

/// One history line: time, state and note.
pub fn history_line(change: &StateChange) -> String {
    let mut line = format!(
        "{}  {}",
        format_ms(change.at_ms),
        state_name(change.state())
    );
    if !change.note.is_empty() {
        line.push_str(": ");
        line.push_str(&change.note);
    }
    line
}

/// "psi/match", "psi/cardinality", ...
pub fn kind_text(spec: Option<&JobSpec>) -> String {
    let Some(spec) = spec else {
        return "-".to_string();
    };
    match spec.kind() {
        JobKind::Psi => format!(
            "psi/{}",
            psi::mode_name(spec.psi().map_or(PsiMode::Unspecified, |p| p.mode()))
        ),
        JobKind::DpStats => "dp_stats".to_string(),
        JobKind::SecureSum => "secure_sum".to_string(),
        JobKind::Rfm => "rfm".to_string(),
        JobKind::Lift => "lift".to_string(),
        JobKind::Overlap => "overlap".to_string(),
        JobKind::Unspecified => "-".to_string(),
    }
}

/// Lower-case name of a job state, as shown to users.
pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Submitted => "submitted",
        JobState::Accepted => "accepted",
        JobState::Refused => "refused",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::finished_job;
    use crate::{EXIT_JOB_DID_NOT_SUCCEED, EXIT_OK, exit_code_for};

    #[test]
    fn outcome_and_json_for_success() {
        let mut job = finished_job(JobState::Succeeded, "");
        job.result = Some(JobResult::from(PsiResult {
            mode: PsiMode::Match as i32,
            receiver_records: 5000,
            receiver_identifiers: 9800,
            sender_identifiers: 1_234_567,
            intersection_records: 1234,
            suppressed: false,
            match_output: "/data/out/matches.csv".into(),
            elapsed_ms: 1234,
            ..Default::default()
        }));
        let text = outcome_text(&job);
        assert!(text.contains("succeeded (psi/match)"), "{text}");
        assert!(text.contains("1,234,567"), "{text}");
        assert!(text.contains("1,234 records (24.7%"), "{text}");
        assert!(
            text.contains("/data/out/matches.csv (on brand's machine)"),
            "{text}"
        );
        assert_eq!(exit_code_for(&job), EXIT_OK);
        let v = result_json(&job);
        assert_eq!(v["state"], "succeeded");
        assert_eq!(v["result"]["psi"]["intersection_records"], 1234);
        assert_eq!(v["result"]["psi"]["mode"], "match");
        assert_eq!(v["history"][1]["at_ms"], 1_700_000_001_500_i64);
    }

    #[test]
    fn outcome_for_failure_and_unfinished() {
        let job = finished_job(JobState::Refused, "publisher: dataset 'subs' is not shared");
        let text = outcome_text(&job);
        assert!(
            text.contains("refused: publisher: dataset 'subs' is not shared"),
            "{text}"
        );
        assert_eq!(exit_code_for(&job), EXIT_JOB_DID_NOT_SUCCEED);
        let v = result_json(&job);
        assert_eq!(v["state"], "refused");
        assert_eq!(v["result"], Value::Null);
        let running = finished_job(JobState::Running, "");
        assert!(outcome_text(&running).contains("no result yet"));
        assert_eq!(exit_code_for(&running), EXIT_JOB_DID_NOT_SUCCEED);
    }

    #[test]
    fn suppressed_result_says_so() {
        let mut job = finished_job(JobState::Succeeded, "");
        job.result = Some(JobResult::from(PsiResult {
            mode: PsiMode::Cardinality as i32,
            suppressed: true,
            ..PsiResult::default()
        }));
        let text = outcome_text(&job);
        assert!(
            text.contains("suppressed (fewer than min_intersection = 100"),
            "{text}"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(format_ms(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(state_name(JobState::Cancelled), "cancelled");
        let _ = StateChange::default();
    }
}
