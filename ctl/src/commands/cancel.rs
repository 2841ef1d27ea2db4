//! `parleyctl cancel JOB [--reason TEXT]`: cancels a job that has not ended (role analyst).

use std::io::Write;

use parley_proto::CancelJobRequest;

use super::Session;
use crate::EXIT_OK;
use crate::error::RpcError;
use crate::render::state_name;

/// Runs `cancel`; prints the job's new state.
pub async fn run(
    connection: &crate::ConnectionArgs,
    id: &str,
    reason: Option<String>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let job = session
        .client
        .cancel(CancelJobRequest {
            job_id: id.to_string(),
            reason: reason.unwrap_or_default(),
        })
        .await
        .map_err(|s| RpcError::new(format!("cancel job '{id}'"), session.url(), s))?
        .into_inner();
    writeln!(out, "job {}: {}", job.id, state_name(job.state()))?;
    Ok(EXIT_OK)
}
