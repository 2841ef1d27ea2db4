//! The coordinator service: its shared state, the one lock over it, and how messages leave.
//!
//! The service is split by responsibility; each part is an `impl Inner` block in its module:
//!
//! * `registry` — connected nodes (their link queue, hello, connection id) and disconnects;
//! * `lifecycle` — live jobs from submit to their final state, watchers, persistence;
//! * `relay` — routing sealed envelopes between the participants of a running job;
//! * `drivers` — how the coordinator takes part in a running job (relay only, nothing, or the
//!   secure-aggregation server), one `Driver` per live job;
//! * `heads` — nodes' signed ledger heads;
//! * `grpc` — the `NodeLink` and `Jobs` services: glue from gRPC calls to the parts above.
//!
//! # What the coordinator sees
//! Node names, dataset metadata (names, columns, row counts), job specs, decisions, progress
//! counts, envelope metadata (job, sender, recipient, sequence number, size) and the results
//! that the participant holding them releases. Envelope contents are AEAD-sealed between the
//! two nodes (see `parley_crypto::envelope`); the coordinator cannot read them. It forwards
//! each node's certificate-bound key binding so peers verify keys against the federation CA,
//! not against the coordinator's word.
//!
//! # Concurrency
//! One `std::sync::Mutex` guards the registry and live jobs ([`State`]); it is never held
//! across an `.await`. Handlers that change state collect the messages to nodes under the lock
//! as an [`Outgoing`] list and send them with [`Inner::send_all`] after it is released.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use parley_proto::{CoordinatorMessage, JobEvent, coordinator_message};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::config::Limits;
use crate::lifecycle::LiveJob;
use crate::registry::NodeConn;
use crate::store::JobStore;

/// A node link's outbound queue.
pub(crate) type NodeTx = mpsc::Sender<Result<CoordinatorMessage, Status>>;
/// Messages to nodes, collected under the state lock and sent after it is released.
pub(crate) type Outgoing = Vec<(NodeTx, CoordinatorMessage)>;

/// The coordinator's gRPC services (`NodeLink` and `Jobs`) over shared state.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

/// The state shared by every handler.
pub(crate) struct Inner {
    pub(crate) store: JobStore,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) limits: Limits,
    state: Mutex<State>,
    /// The id of the next node connection.
    pub(crate) next_conn: AtomicU64,
    /// Cancelled on shutdown: link handlers stop reading so connections can close.
    pub(crate) closing: tokio_util::sync::CancellationToken,
}

/// Everything behind the one lock.
#[derive(Default)]
pub(crate) struct State {
    /// Connected nodes by name.
    pub(crate) nodes: HashMap<String, NodeConn>,
    /// Jobs not yet in a final state, by id.
    pub(crate) live: HashMap<String, LiveJob>,
    /// Watch streams of live jobs, by id.
    pub(crate) watchers: HashMap<String, broadcast::Sender<JobEvent>>,
}

impl Coordinator {
    /// Creates the service over an opened job store; `ca_der` is the federation CA used to
    /// verify nodes' key bindings.
    pub fn new(store: JobStore, ca_der: Vec<u8>, limits: Limits) -> Self {
        Coordinator {
            inner: Arc::new(Inner {
                store,
                ca_der,
                limits,
                state: Mutex::new(State::default()),
                next_conn: AtomicU64::new(1),
                closing: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// Applies the store's retention limits (`[limits] job_retention_days`, `max_stored_jobs`)
    /// now: deletes ended jobs beyond them. Blocks on the store; returns how many were deleted.
    pub fn prune_jobs(&self) -> Result<u64, crate::CoordError> {
        let l = &self.inner.limits;
        let before = (l.job_retention_days > 0).then(|| {
            let days = i64::try_from(l.job_retention_days).unwrap_or(i64::MAX);
            crate::store::now_ms().saturating_sub(days.saturating_mul(86_400_000))
        });
        let keep = (l.max_stored_jobs > 0).then_some(l.max_stored_jobs);
        let deleted = self.inner.store.prune(before, keep)?;
        if deleted > 0 {
            tracing::info!(deleted, "ended jobs beyond the retention limits deleted");
        }
        Ok(deleted)
    }

    /// Ends every node link and watch stream (used on shutdown so that graceful shutdown
    /// does not wait for long-lived streams).
    pub fn close_all(&self) {
        self.inner.closing.cancel();
        let mut st = self.inner.lock();
        st.nodes.clear();
        st.watchers.clear();
    }
}

impl Inner {
    /// Takes the state lock. Never hold the guard across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends messages collected under the lock (call it after releasing the lock).
    pub(crate) async fn send_all(out: Outgoing) {
        for (tx, msg) in out {
            // A closed queue means the node just disconnected; its disconnect handler
            // fails whatever it was part of.
            let _ = tx.send(Ok(msg)).await;
        }
    }
}

/// A message to a node.
pub(crate) fn coord_msg(body: coordinator_message::Body) -> CoordinatorMessage {
    CoordinatorMessage { body: Some(body) }
}

/// Peer- or client-supplied text made safe to store and print: control characters (terminal
/// escapes, newlines, NUL) replaced by U+FFFD, then cut to at most `max` bytes (at a character
/// boundary), with `…` when cut.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let mut end = max;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn peer_text_loses_control_characters_and_is_cut() {
        assert_eq!(sanitize("ok", 10), "ok");
        assert_eq!(
            sanitize("a\x1b[2Jb\nc\0", 100),
            "a\u{fffd}[2Jb\u{fffd}c\u{fffd}"
        );
        assert_eq!(sanitize("ééé", 3), "é…");
    }
}
