//! `parleyctl watch JOB`: follows a job to its end — each state change as a history line,
//! progress reports on a progress bar (stderr), then the outcome.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};
use parley_jobs::lifecycle::is_terminal;
use parley_proto::{GetJobRequest, Job, JobProgress};

use super::{Session, write_outcome};
use crate::error::RpcError;
use crate::render::{history_line, state_name};

/// Runs `watch`: returns the job's exit code once it has ended.
pub async fn run(
    connection: &crate::ConnectionArgs,
    id: &str,
    show_progress: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let job = follow(&mut session, id, show_progress, out).await?;
    write_outcome(&job, out)
}

/// Follows a job with `Jobs.Watch` until it ends, printing each state change to `out` and
/// showing progress reports on a progress bar (stderr). Returns the ended job.
pub(crate) async fn follow(
    session: &mut Session,
    id: &str,
    show_progress: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Job> {
    let action = format!("watch job '{id}'");
    let mut stream = session
        .client
        .watch(GetJobRequest {
            job_id: id.to_string(),
        })
        .await
        .map_err(|s| RpcError::new(action.clone(), session.url(), s))?
        .into_inner();
    let bar = if show_progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg:30} [{bar:30}] {human_pos}/{human_len}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut printed = 0usize;
    let mut last: Option<Job> = None;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => {
                bar.finish_and_clear();
                return Err(RpcError::new(action, session.url(), status).into());
            }
        };
        if let Some(job) = event.job {
            let new = job.history.get(printed..).unwrap_or_default();
            bar.suspend(|| -> std::io::Result<()> {
                for change in new {
                    writeln!(out, "{}", history_line(change))?;
                }
                Ok(())
            })?;
            printed = job.history.len();
            let ended = is_terminal(job.state());
            last = Some(job);
            if ended {
                break;
            }
        }
        if let Some(progress) = event.progress {
            show(&bar, &progress);
        }
    }
    bar.finish_and_clear();
    if let Some(job) = last.filter(|j| is_terminal(j.state())) {
        return Ok(job);
    }
    // The stream ended before the job did; ask once more.
    let job = session.get_job(id).await?;
    if is_terminal(job.state()) {
        return Ok(job);
    }
    anyhow::bail!(
        "the coordinator ended the watch of job '{id}' while it was {}; follow it again with \
         `parleyctl watch {id}`",
        state_name(job.state())
    )
}

/// Updates the progress bar from one progress report.
fn show(bar: &ProgressBar, p: &JobProgress) {
    bar.set_length(p.total);
    bar.set_position(p.done.min(p.total));
    bar.set_message(format!("{}: {}", p.node, p.stage));
}
