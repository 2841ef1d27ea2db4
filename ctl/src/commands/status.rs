//! `parleyctl status JOB`: a job's state, participants, history with timestamps and reason.

use std::io::Write;

use parley_proto::{Job, PsiRole};

use super::Session;
use crate::EXIT_OK;
use crate::render::{group, history_line, kind_text, state_name};

/// Runs `status`.
pub async fn run(
    connection: &crate::ConnectionArgs,
    id: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let job = session.get_job(id).await?;
    write_status(&job, out)?;
    Ok(EXIT_OK)
}

/// Prints `status JOB`.
fn write_status(job: &Job, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let spec = job.spec.as_ref();
    writeln!(out, "job:           {}", job.id)?;
    if let Some(label) = spec.map(|s| s.label.as_str()).filter(|l| !l.is_empty()) {
        writeln!(out, "label:         {label}")?;
    }
    let min = spec.and_then(|s| s.psi()).map_or(0, |p| p.min_intersection);
    let min = if min > 0 {
        format!(" (min_intersection {})", group(min))
    } else {
        String::new()
    };
    writeln!(out, "kind:          {}{min}", kind_text(spec))?;
    writeln!(out, "submitted by:  {}", job.submitted_by)?;
    writeln!(out, "state:         {}", state_name(job.state()))?;
    if !job.reason.is_empty() {
        writeln!(out, "reason:        {}", job.reason)?;
    }
    writeln!(out, "participants:")?;
    for p in spec.map(|s| s.participants.as_slice()).unwrap_or_default() {
        let columns = if p.columns.is_empty() {
            "all identifier columns".to_string()
        } else {
            p.columns.join(", ")
        };
        writeln!(
            out,
            "  {:<9} {}/{}  ({columns})",
            role_name(p.psi_role()),
            p.node,
            p.dataset
        )?;
    }
    writeln!(out, "history (UTC):")?;
    for change in &job.history {
        writeln!(out, "  {}", history_line(change))?;
    }
    Ok(())
}

/// Lower-case name of a PSI role, as in job files.
fn role_name(role: PsiRole) -> &'static str {
    match role {
        PsiRole::Unspecified => "(no role)",
        PsiRole::Receiver => "receiver",
        PsiRole::Sender => "sender",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::finished_job;
    use parley_proto::JobState;

    #[test]
    fn status_renders() {
        let job = finished_job(JobState::Failed, "sender dropped");
        let mut out = Vec::new();
        write_status(&job, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("reason:        sender dropped"), "{text}");
        assert!(
            text.contains("2023-11-14 22:13:21  failed: sender dropped"),
            "{text}"
        );
        assert!(text.contains("receiver  brand/crm  (email)"), "{text}");
        assert!(text.contains("(min_intersection 100)"), "{text}");
    }
}
