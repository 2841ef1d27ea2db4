//! The coordinator-rounds driver: runs one [`RoundParty`] of a protocol whose server is the
//! coordinator (secure aggregation), uploading this node's message for each round and waiting
//! for the coordinator's next round.
//!
//! # Guarantees
//! * Rounds are answered strictly in order; the party refuses any round other than the one it
//!   expects, and the run ends once it expects none.
//! * Every wait is bounded by the job's cancellation and deadline ([`Waiter`]).
//! * Logs and progress reports carry round numbers, message counts and byte sizes only.

use parley_proto::{NodeMessage, SecAggRound, SecAggUpload, node_message};

use super::wait::Waiter;
use super::{JobIo, report_progress};
use crate::NodeError;

/// A protocol party advanced by one coordinator round at a time.
pub(crate) trait RoundParty {
    /// The round the party waits for, or `None` once it has sent its last upload.
    fn expected_round(&self) -> Option<u32>;
    /// Answers the coordinator's round with this node's upload.
    fn on_round(&mut self, round: SecAggRound) -> Result<SecAggUpload, NodeError>;
}

/// Uploads `first`, then answers each round the coordinator sends until `party` expects no
/// more. `rounds` is the number of uploads in a whole run, for progress reports.
pub(crate) fn drive(
    party: &mut impl RoundParty,
    first: SecAggUpload,
    rounds: u32,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<(), NodeError> {
    upload(first, rounds, io, wait)?;
    while let Some(round) = party.expected_round() {
        let inbox = &mut io.secagg;
        let msg = wait.until(
            || format!("waiting for secure aggregation round {round}"),
            inbox.recv(),
        )?;
        let up = party.on_round(msg)?;
        upload(up, rounds, io, wait)?;
    }
    Ok(())
}

/// Sends one upload to the coordinator and reports the round as done.
fn upload(up: SecAggUpload, rounds: u32, io: &JobIo, wait: &Waiter) -> Result<(), NodeError> {
    let (job_id, round) = (up.job_id.clone(), up.round);
    let bytes: usize = up.messages.iter().map(Vec::len).sum();
    tracing::debug!(job = %job_id, round, messages = up.messages.len(), bytes, "secure aggregation upload");
    let msg = NodeMessage {
        body: Some(node_message::Body::Secagg(up)),
    };
    let outbox = io.outbox.clone();
    wait.until(
        || format!("sending secure aggregation round {round}"),
        async move { outbox.send(msg).await.ok() },
    )?;
    report_progress(
        &io.outbox,
        &job_id,
        &format!("secagg round {round}"),
        u64::from(round) + 1,
        u64::from(rounds),
    );
    Ok(())
}
