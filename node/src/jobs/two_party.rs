//! The two-party stream driver: runs one [`Party`] of a protocol against one peer over an
//! [`EnvelopeWire`], with the accounting of each declared incoming stream ([`Incoming`]).
//! The PSI family (match, cardinality, sum) are such parties.
//!
//! # Guarantees
//! * No deadlock, even with several jobs sharing one link in opposite directions: the driver
//!   never stops reading its inbox while it waits to send, so the node's link task never
//!   waits on a job for long and no cycle of full queues can form.
//! * Memory is bounded: the driver holds at most one outgoing message; the inbox and the link
//!   queue are bounded channels; parties check every declared stream size against the job's
//!   limit before allocating for it ([`Incoming`] counts what arrives against the declared size).
//! * The run ends when the party has nothing more to send and every stream it expects has
//!   fully arrived, or with the first error, the job's cancellation or its deadline.
//! * Progress reports carry only stage names and counts.

use std::time::{Duration, Instant};

use parley_crypto::psi::POINT_LEN;
use parley_proto::{Envelope, NodeMessage};
use tokio::sync::mpsc;

use super::envelope::EnvelopeWire;
use super::wait::Waiter;
use super::{JobIo, report_progress};
use crate::NodeError;

/// One side of a two-party message flow.
pub(crate) trait Party {
    /// The protobuf payload the two sides exchange.
    type Message: prost::Message + Default;
    /// The next message ready to send (replies first), if any.
    fn next_outgoing(&mut self) -> Result<Option<Self::Message>, NodeError>;
    /// Handles a message from the peer.
    fn on_incoming(&mut self, m: Self::Message) -> Result<(), NodeError>;
    /// True once every stream the peer must send has fully arrived.
    fn incoming_done(&self) -> bool;
    /// (stage, done, total) for progress reports.
    fn progress(&self) -> (&'static str, u64, u64);
}

/// A protocol violation by the peer.
pub(crate) fn peer_err(detail: impl std::fmt::Display) -> NodeError {
    NodeError::protocol("", &format!("peer protocol violation: {detail}"))
}

/// Progress through one declared incoming stream of points.
#[derive(Default)]
pub(crate) struct Incoming {
    pub(crate) declared: Option<u64>,
    pub(crate) received: u64,
}

impl Incoming {
    /// Records the stream's header.
    pub(crate) fn declare(&mut self, count: u64) -> Result<(), NodeError> {
        if self.declared.is_some() {
            return Err(peer_err("stream declared twice"));
        }
        self.declared = Some(count);
        Ok(())
    }

    /// Counts a batch of points.
    pub(crate) fn add(&mut self, points: &[u8]) -> Result<(), NodeError> {
        if self.declared.is_none() {
            return Err(peer_err("points arrived before the stream header"));
        }
        self.received += (points.len() / POINT_LEN) as u64;
        Ok(())
    }

    /// True once every declared point has arrived.
    pub(crate) fn done(&self) -> bool {
        self.declared == Some(self.received)
    }
}

/// What the driver waits for next.
enum Step<'p> {
    Send(mpsc::Permit<'p, NodeMessage>),
    Incoming(Envelope),
}

/// Smallest interval between two progress reports of one job.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Exchanges messages through `wire` until `party` has sent everything and received
/// everything.
pub(crate) fn drive<P: Party>(
    party: &mut P,
    wire: &mut EnvelopeWire<P::Message>,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<(), NodeError> {
    let job_id = wire.job_id().to_owned();
    let report = |party: &P| {
        let (stage, done, total) = party.progress();
        report_progress(&io.outbox, &job_id, stage, done, total);
    };
    let mut last_report = Instant::now();
    let mut pending: Option<P::Message> = None;
    loop {
        if pending.is_none() {
            pending = party.next_outgoing().map_err(|e| e.for_job(&job_id))?;
        }
        if pending.is_none() && party.incoming_done() {
            report(party);
            return Ok(());
        }
        let want_read = !party.incoming_done();
        let want_send = pending.is_some();
        let outbox = io.outbox.clone();
        let inbox = &mut io.inbox;
        let step = wait.until(
            || format!("exchanging messages with '{}'", wire.peer()),
            async {
                tokio::select! {
                    biased;
                    p = outbox.reserve(), if want_send => p.ok().map(Step::Send),
                    m = inbox.recv(), if want_read => m.map(Step::Incoming),
                    // Not reached: the loop returns before both are off.
                    else => None,
                }
            },
        )?;
        match step {
            Step::Send(permit) => {
                let m = pending.take().ok_or(NodeError::Cancelled)?;
                permit.send(wire.seal(&m)?);
            }
            Step::Incoming(env) => {
                let m = wire.open(env)?;
                party.on_incoming(m).map_err(|e| e.for_job(&job_id))?;
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            report(party);
        }
    }
}

/// Passes messages between two in-process parties (through their wire encoding) until both are
/// done, the way [`drive`] would; returns the first error. `seen_by_b` gets every message `b`
/// receives, in order.
#[cfg(test)]
pub(crate) fn pump<M: prost::Message + Default>(
    a: &mut dyn Party<Message = M>,
    b: &mut dyn Party<Message = M>,
    mut seen_by_b: impl FnMut(&M),
) -> Result<(), NodeError> {
    let wire = |m: M| -> M {
        assert!(m.encoded_len() <= parley_proto::MAX_CHUNK_BYTES + 64);
        M::decode(m.encode_to_vec().as_slice()).expect("a message decodes")
    };
    for _ in 0..1_000_000 {
        let mut moved = false;
        if let Some(m) = a.next_outgoing()? {
            let m = wire(m);
            seen_by_b(&m);
            b.on_incoming(m)?;
            moved = true;
        }
        if let Some(m) = b.next_outgoing()? {
            a.on_incoming(wire(m))?;
            moved = true;
        }
        if !moved {
            assert!(a.incoming_done() && b.incoming_done(), "parties stalled");
            return Ok(());
        }
    }
    panic!("the parties never finished");
}
