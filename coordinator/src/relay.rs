//! The envelope relay: forwards sealed envelopes between the participants of a running job.
//!
//! The coordinator cannot read an envelope (it is AEAD-sealed between the two nodes, see
//! `parley_crypto::envelope`); it sees and checks only its metadata. An envelope is forwarded
//! only when its job is running, its sender is a participant, its recipient is another
//! participant that is connected, and it is at most [`MAX_SEALED_BYTES`]; the `from` field is
//! set by the coordinator from the sender's authenticated link, never taken from the node. An
//! envelope from a node that is not a participant, or a late one for an ended job, is dropped
//! (so no outsider can end a job by naming its id); any other bad envelope fails its job.

use std::sync::Arc;

use parley_proto::{CoordinatorMessage, Envelope, JobState, coordinator_message};

use crate::service::{Inner, NodeTx, Outgoing, coord_msg, sanitize};

/// Largest sealed envelope the coordinator relays.
pub(crate) const MAX_SEALED_BYTES: usize = parley_proto::MAX_CHUNK_BYTES + 1024;

impl Inner {
    /// Relays an envelope from `from`: sends it on (waiting for room in the recipient's
    /// queue), or fails the job if it is rejected or its recipient disconnected.
    pub(crate) async fn on_envelope(self: &Arc<Self>, from: &str, env: Envelope) -> Outgoing {
        let job_id = env.job_id.clone();
        match self.route(from, env) {
            Ok(Some((tx, m))) => {
                if tx.send(Ok(m)).await.is_err() {
                    self.fail_job(
                        &job_id,
                        "the recipient of a protocol message disconnected",
                        None,
                    )
                } else {
                    Vec::new()
                }
            }
            Ok(None) => Vec::new(),
            Err(reason) => {
                tracing::warn!(job = %job_id, node = from, %reason, "envelope rejected");
                self.fail_job(&job_id, &reason, None)
            }
        }
    }

    /// Checks and routes an envelope; returns the recipient queue, `None` to drop it, or a
    /// reason to fail the job.
    fn route(
        &self,
        from: &str,
        mut env: Envelope,
    ) -> Result<Option<(NodeTx, CoordinatorMessage)>, String> {
        let st = self.lock();
        let Some(live) = st.live.get(&env.job_id) else {
            return Ok(None); // late message for an ended job
        };
        if !live.participants.iter().any(|p| p == from) {
            // Dropped, never fatal: otherwise any node could end any job whose id it names.
            tracing::warn!(job = %env.job_id, node = from, "envelope from a node that is not a participant of the job dropped");
            return Ok(None);
        }
        if !live.undecided.is_empty() || live.job.state() != JobState::Running {
            return Err(format!(
                "node '{from}' sent a protocol message before the job started"
            ));
        }
        if env.to == from || !live.participants.contains(&env.to) {
            return Err(format!(
                "node '{from}' addressed an envelope to '{}', which is not another participant",
                sanitize(&env.to, 64)
            ));
        }
        if env.sealed.len() > MAX_SEALED_BYTES {
            return Err(format!(
                "node '{from}' sent an envelope of {} bytes; the limit is {MAX_SEALED_BYTES}",
                env.sealed.len()
            ));
        }
        let Some(tx) = st.node_tx(&env.to) else {
            return Err(format!("node '{}' is no longer connected", env.to));
        };
        env.from = from.to_string();
        Ok(Some((
            tx,
            coord_msg(coordinator_message::Body::Envelope(env)),
        )))
    }
}
