//! `parleyctl result JOB [--json]`: a job's result, as a summary or JSON; exit 2 if the job
//! did not succeed (refused, failed, cancelled, or not finished yet).

use std::io::Write;

use super::{Session, exit_code_for, write_outcome};
use crate::render::result_json;

/// Runs `result`.
pub async fn run(
    connection: &crate::ConnectionArgs,
    id: &str,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut session = Session::open(connection).await?;
    let job = session.get_job(id).await?;
    if json {
        writeln!(out, "{:#}", result_json(&job))?;
        Ok(exit_code_for(&job))
    } else {
        write_outcome(&job, out)
    }
}
