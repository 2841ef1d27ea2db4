//! One module per `parleyctl` command, each holding the command's whole life: the call to the
//! coordinator, the output and the exit code. [`crate::run`] dispatches to them with one
//! exhaustive `match` over [`crate::Command`], so a new command is one variant, one arm and one
//! module here.
//!
//! What the commands share is here: the connected `Session` and how a job's outcome becomes
//! output and an exit code.

pub mod audit;
pub mod cancel;
pub mod jobs;
pub mod nodes;
pub mod report;
pub mod result;
pub mod status;
pub mod submit;
pub mod watch;

use std::io::Write;

use parley_proto::jobs_client::JobsClient;
use parley_proto::{GetJobRequest, Job, JobState};
use tonic::transport::Channel;

use crate::config::{ConnectionArgs, CtlConfig, connect};
use crate::error::RpcError;
use crate::render::outcome_text;
use crate::{EXIT_JOB_DID_NOT_SUCCEED, EXIT_OK};

/// The coordinator's `Jobs` service, connected with the user's certificate.
pub(crate) struct Session {
    /// The connected client.
    pub(crate) client: JobsClient<Channel>,
    /// The settings it was connected with (`coordinator` is the URL named in errors).
    pub(crate) config: CtlConfig,
}

impl Session {
    /// Resolves the config file and flags, then connects.
    pub(crate) async fn open(connection: &ConnectionArgs) -> anyhow::Result<Session> {
        let config = CtlConfig::resolve(connection)?;
        let client = connect(&config).await?;
        Ok(Session { client, config })
    }

    /// The coordinator URL, for error messages.
    pub(crate) fn url(&self) -> &str {
        &self.config.coordinator
    }

    /// Fetches one job.
    pub(crate) async fn get_job(&mut self, id: &str) -> anyhow::Result<Job> {
        Ok(self
            .client
            .get(GetJobRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| RpcError::new(format!("get job '{id}'"), &self.config.coordinator, s))?
            .into_inner())
    }
}

/// The exit code for a job: 0 if it succeeded, 2 otherwise.
pub fn exit_code_for(job: &Job) -> i32 {
    if job.state() == JobState::Succeeded {
        EXIT_OK
    } else {
        EXIT_JOB_DID_NOT_SUCCEED
    }
}

/// Prints a job's outcome (its result summary, or why it has none) and returns the exit code.
pub(crate) fn write_outcome(job: &Job, out: &mut (dyn Write + Send)) -> anyhow::Result<i32> {
    out.write_all(outcome_text(job).as_bytes())?;
    Ok(exit_code_for(job))
}
