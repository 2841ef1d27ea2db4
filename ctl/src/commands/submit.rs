//! `parleyctl submit JOB.toml [--wait]`: checks a job file, submits it and prints the job id;
//! with `--wait`, follows the job to its end like `watch`.

use std::io::Write;
use std::path::Path;

use parley_jobs::load_job_file;
use parley_proto::SubmitJobRequest;

use super::{Session, watch, write_outcome};
use crate::EXIT_OK;
use crate::error::RpcError;

/// Runs `submit`. The job file is checked before connecting, so its mistakes come first.
/// Returns [`EXIT_OK`] once submitted (with `wait`: the job's exit code).
pub async fn run(
    connection: &crate::ConnectionArgs,
    job_file: &Path,
    wait: bool,
    show_progress: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let spec = load_job_file(job_file)?;
    let mut session = Session::open(connection).await?;
    let job = session
        .client
        .submit(SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(|s| RpcError::new("submit the job", session.url(), s))?
        .into_inner();
    writeln!(out, "{}", job.id)?;
    if !wait {
        return Ok(EXIT_OK);
    }
    let job = watch::follow(&mut session, &job.id, show_progress, out).await?;
    write_outcome(&job, out)
}
