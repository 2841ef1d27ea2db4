//! `parleyctl jobs [--limit N]`: lists jobs, newest first, as a table.

use std::io::Write;

use parley_proto::{Job, JobSpec, ListJobsRequest, PsiRole};

use super::Session;
use crate::EXIT_OK;
use crate::error::RpcError;
use crate::render::{format_ms, kind_text, state_name, write_table};

/// Runs `jobs`.
pub async fn run(
    connection: &crate::ConnectionArgs,
    limit: u32,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let jobs = session
        .client
        .list(ListJobsRequest { limit })
        .await
        .map_err(|s| RpcError::new("list jobs", session.url(), s))?
        .into_inner()
        .jobs;
    write_jobs_table(&jobs, out)?;
    Ok(EXIT_OK)
}

/// Prints the `jobs` table.
fn write_jobs_table(jobs: &[Job], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if jobs.is_empty() {
        return writeln!(out, "no jobs");
    }
    let rows = jobs
        .iter()
        .map(|job| {
            let spec = job.spec.as_ref();
            vec![
                job.id.clone(),
                state_name(job.state()).to_string(),
                kind_text(spec),
                participants_text(spec),
                job.history
                    .first()
                    .map_or_else(|| "-".to_string(), |c| format_ms(c.at_ms)),
                spec.map(|s| s.label.clone()).unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    write_table(
        out,
        &[
            "ID",
            "STATE",
            "KIND",
            "PARTICIPANTS",
            "SUBMITTED (UTC)",
            "LABEL",
        ],
        &rows,
    )
}

/// "brand/crm (R), publisher/subscribers (S)".
fn participants_text(spec: Option<&JobSpec>) -> String {
    spec.map(|s| s.participants.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let role = match p.psi_role() {
                PsiRole::Receiver => " (R)",
                PsiRole::Sender => " (S)",
                PsiRole::Unspecified => "",
            };
            format!("{}/{}{role}", p.node, p.dataset)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::finished_job;
    use parley_proto::JobState;

    #[test]
    fn jobs_table_renders() {
        let job = finished_job(JobState::Failed, "sender dropped");
        let mut out = Vec::new();
        write_jobs_table(std::slice::from_ref(&job), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("ID  "));
        let row = lines.next().unwrap();
        for part in [
            "job-0123456789abcdef",
            "failed",
            "psi/match",
            "brand/crm (R), publisher/subs (S)",
            "2023-11-14 22:13:20",
            "overlap",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
    }
}
