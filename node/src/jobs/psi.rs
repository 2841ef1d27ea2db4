//! PSI match and cardinality jobs at a node: the receiver or sender role of
//! `parley_crypto::psi` (whose module docs state what each party learns), run by the
//! two-party stream driver over sealed envelopes.
//!
//! # Budget
//! A DP job's receiver charges its ledger just before it noises and releases the count; the
//! sender charges before its first point leaves.
//!
//! # Contribution bounds
//! In a DP job the receiver keeps at most `max_records_per_identifier` of its records per
//! identifier and per person, and the sender at most one identifier per named column per
//! person (`bound`), so the count's sensitivity is `Psi::count_sensitivity`. The receiver's
//! left-out records are counted in the result; an exact job uses every record.

use std::collections::VecDeque;
use std::time::Instant;

use parley_crypto::psi::{POINT_LEN, Receiver, ReceiverOutcome, Sender};
use parley_jobs::kinds::psi::{Mode, Psi};
use parley_proto::{
    JobResult, PointBatch, PsiHeader, PsiMessage, PsiResult, PsiStream, psi_message,
};

use super::bound::{self, Kept};
use super::dp::{calibrated, dp_err, noise_info};
use super::envelope::EnvelopeWire;
use super::two_party::{self, Incoming, Party, peer_err};
use super::wait::Waiter;
use super::{JobIo, JobRun, create_private_file};
use crate::NodeError;

/// Runs a PSI match or cardinality job as the receiver or the sender. Returns the result at
/// the receiver, `None` at the sender.
pub(super) fn run(
    run: &JobRun,
    k: &Psi,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let mode = k.mode.crypto();
    let ids = run.dataset.identifiers(run.columns())?;
    let (peer, x25519) = run.peer()?;
    let mut wire = EnvelopeWire::new(&run.job_id, &run.me, &run.secrets, peer, x25519)?;
    if run.index == k.receiver {
        let kept = k.dp.is_some().then(|| {
            bound::records(
                run.dataset.persons(),
                &ids,
                k.bound.max_records_per_identifier,
            )
        });
        let ids = match &kept {
            Some(kept) => kept.select(ids),
            None => ids,
        };
        let receiver = Receiver::new(mode, &ids, run.max_set_size)?;
        drop(ids);
        let mut party = ReceiverParty::new(receiver, run.batch_points);
        two_party::drive(&mut party, &mut wire, io, wait)?;
        let outcome = party
            .receiver
            .take()
            .ok_or_else(|| NodeError::protocol(&run.job_id, "receiver state lost"))?
            .finish()?;
        let result = release(run, k, io, wait, outcome, kept, started)?;
        Ok(Some(result))
    } else {
        let flat: Vec<_> = if k.dp.is_some() {
            let (flat, dropped) =
                bound::sender_identifiers(run.dataset.persons(), ids, k.bound.sender_columns);
            if dropped > 0 {
                tracing::info!(job = %run.job_id, dropped, "identifiers beyond the per-person bound left out");
            }
            flat
        } else {
            ids.into_iter().flatten().collect()
        };
        let sender = Sender::new(mode, flat, run.max_set_size)?;
        // The sender's dataset pays for a DP release before any of its points leave.
        run.charge(io, wait)?;
        let mut party = SenderParty::new(sender, run.batch_points);
        two_party::drive(&mut party, &mut wire, io, wait)?;
        Ok(None)
    }
}

/// Noises the intersection count when the job asks for DP (charging the budget first), applies
/// the threshold and writes the match file; returns what the analyst sees. `kept` is the
/// contribution bound's choice of records (DP jobs), which the outcome's indices refer to.
fn release(
    run: &JobRun,
    k: &Psi,
    io: &JobIo,
    wait: &Waiter,
    mut o: ReceiverOutcome,
    kept: Option<Kept>,
    started: Instant,
) -> Result<JobResult, NodeError> {
    let mut count_noise = None;
    if let Some(dp) = &k.dp {
        let c = calibrated(&run.job_id, dp, k.count_sensitivity())?;
        run.charge(io, wait)?;
        let noisy = c
            .release(&[i64::try_from(o.intersection_records).unwrap_or(i64::MAX)])
            .map_err(|e| dp_err(&run.job_id, e))?;
        // Post-processing: a negative noisy count is released as 0.
        o.intersection_records = noisy.first().copied().unwrap_or(0).max(0) as u64;
        count_noise = Some(noise_info(&c, 1.0));
    }
    let suppressed = k.min_intersection > 0 && o.intersection_records < k.min_intersection;
    let mut match_output = String::new();
    if k.mode == Mode::Match && !suppressed {
        std::fs::create_dir_all(&run.output_dir).map_err(|e| NodeError::Output {
            path: run.output_dir.clone(),
            source: e,
        })?;
        let path = run.output_dir.join(format!("{}-matches.csv", run.job_id));
        let tmp = path.with_extension("csv.tmp");
        let write = || -> std::io::Result<()> {
            let mut w = csv::Writer::from_writer(create_private_file(&tmp)?);
            w.write_record([run.dataset.key_column()])?;
            for &i in &o.matched_records {
                let record = kept.as_ref().map_or(i, |kept| kept.index[i]);
                w.write_record([run.dataset.key(record)])?;
            }
            w.flush()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| NodeError::Output {
            path: path.clone(),
            source: e,
        })?;
        match_output = path.display().to_string();
    }
    tracing::info!(
        job = %run.job_id,
        intersection = if suppressed { 0 } else { o.intersection_records },
        suppressed,
        "psi finished"
    );
    Ok(JobResult::from(PsiResult {
        mode: k.mode.proto() as i32,
        receiver_records: o.receiver_records,
        receiver_identifiers: o.receiver_identifiers,
        sender_identifiers: o.sender_identifiers,
        intersection_records: if suppressed {
            0
        } else {
            o.intersection_records
        },
        suppressed,
        match_output,
        elapsed_ms: started.elapsed().as_millis() as u64,
        count_noise,
        sum: None,
        records_dropped: kept.map_or(0, |kept| kept.dropped),
        profile: k.profile.name().to_owned(),
    }))
}

/// A stream header message.
pub(super) fn header(stream: PsiStream, count: u64, group_size: u32) -> PsiMessage {
    PsiMessage {
        body: Some(psi_message::Body::Header(PsiHeader {
            stream: stream as i32,
            count,
            group_size,
            public_key: Vec::new(),
            group_sizes: Vec::new(),
        })),
    }
}

/// A batch of points of a stream.
pub(super) fn batch(stream: PsiStream, offset: u64, points: Vec<u8>) -> PsiMessage {
    PsiMessage {
        body: Some(psi_message::Body::Batch(PointBatch {
            stream: stream as i32,
            offset,
            points,
        })),
    }
}

/// The receiver role: blinds its set, matches the sender's blinded set against its own
/// double-blinded one.
struct ReceiverParty {
    receiver: Option<Receiver>,
    batch_points: usize,
    total: u64,
    sent: u64,
    header_sent: bool,
    sender_blinded: Incoming,
    double_blinded: Incoming,
}

impl ReceiverParty {
    fn new(receiver: Receiver, batch_points: usize) -> Self {
        let g = receiver.group_size().max(1) as usize;
        // Cardinality batches hold whole groups.
        let batch_points = (batch_points / g).max(1) * g;
        ReceiverParty {
            total: receiver.outgoing_count(),
            receiver: Some(receiver),
            batch_points,
            sent: 0,
            header_sent: false,
            sender_blinded: Incoming::default(),
            double_blinded: Incoming::default(),
        }
    }
    fn r(&mut self) -> Result<&mut Receiver, NodeError> {
        self.receiver
            .as_mut()
            .ok_or_else(|| NodeError::protocol("", "receiver already finished"))
    }
}

impl Party for ReceiverParty {
    type Message = PsiMessage;

    fn next_outgoing(&mut self) -> Result<Option<PsiMessage>, NodeError> {
        let total = self.total;
        if !self.header_sent {
            let g = self.r()?.group_size();
            self.header_sent = true;
            return Ok(Some(header(PsiStream::ReceiverBlinded, total, g)));
        }
        if self.sent >= total {
            return Ok(None);
        }
        let len = self.batch_points.min((total - self.sent) as usize);
        let sent = self.sent;
        let points = self.r()?.blind_batch(sent, len)?;
        let m = batch(PsiStream::ReceiverBlinded, self.sent, points);
        self.sent += len as u64;
        Ok(Some(m))
    }

    fn on_incoming(&mut self, m: PsiMessage) -> Result<(), NodeError> {
        match m.body {
            Some(psi_message::Body::Header(h)) => match h.stream() {
                PsiStream::SenderBlinded => {
                    self.sender_blinded.declare(h.count)?;
                    self.r()?.on_sender_header(h.count)?;
                }
                PsiStream::DoubleBlinded => {
                    self.double_blinded.declare(h.count)?;
                    self.r()?.on_double_header(h.count)?;
                }
                other => {
                    return Err(peer_err(format!("unexpected header for stream {other:?}")));
                }
            },
            Some(psi_message::Body::Batch(b)) => match b.stream() {
                PsiStream::SenderBlinded => {
                    self.sender_blinded.add(&b.points)?;
                    self.r()?.on_sender_blinded(b.offset, &b.points)?;
                }
                PsiStream::DoubleBlinded => {
                    self.double_blinded.add(&b.points)?;
                    self.r()?.on_double_blinded(b.offset, &b.points)?;
                }
                other => {
                    return Err(peer_err(format!("unexpected batch for stream {other:?}")));
                }
            },
            Some(_) => return Err(peer_err("unexpected PSI message for the receiver role")),
            None => return Err(peer_err("empty PSI message")),
        }
        Ok(())
    }

    fn incoming_done(&self) -> bool {
        self.sender_blinded.done() && self.double_blinded.done()
    }

    fn progress(&self) -> (&'static str, u64, u64) {
        if self.sent < self.total {
            ("blind", self.sent, self.total)
        } else {
            let declared = self.sender_blinded.declared.unwrap_or(0)
                + self.double_blinded.declared.unwrap_or(0);
            (
                "match",
                self.sender_blinded.received + self.double_blinded.received,
                declared,
            )
        }
    }
}

/// The sender role: blinds its set and re-blinds the receiver's.
struct SenderParty {
    sender: Sender,
    batch_points: usize,
    total: u64,
    sent: u64,
    header_sent: bool,
    replies: VecDeque<PsiMessage>,
    receiver_blinded: Incoming,
}

impl SenderParty {
    fn new(sender: Sender, batch_points: usize) -> Self {
        SenderParty {
            total: sender.outgoing_count(),
            sender,
            batch_points,
            sent: 0,
            header_sent: false,
            replies: VecDeque::new(),
            receiver_blinded: Incoming::default(),
        }
    }

    fn finish_incoming(&mut self) -> Result<(), NodeError> {
        let all = self.sender.finish_receiver_stream()?;
        let chunk = self.batch_points * POINT_LEN;
        for (i, c) in all.chunks(chunk.max(POINT_LEN)).enumerate() {
            let offset = (i * self.batch_points) as u64;
            self.replies
                .push_back(batch(PsiStream::DoubleBlinded, offset, c.to_vec()));
        }
        Ok(())
    }
}

impl Party for SenderParty {
    type Message = PsiMessage;

    fn next_outgoing(&mut self) -> Result<Option<PsiMessage>, NodeError> {
        if let Some(m) = self.replies.pop_front() {
            return Ok(Some(m));
        }
        if !self.header_sent {
            self.header_sent = true;
            return Ok(Some(header(PsiStream::SenderBlinded, self.total, 1)));
        }
        if self.sent >= self.total {
            return Ok(None);
        }
        let len = self.batch_points.min((self.total - self.sent) as usize);
        let points = self.sender.blind_batch(self.sent, len)?;
        let m = batch(PsiStream::SenderBlinded, self.sent, points);
        self.sent += len as u64;
        Ok(Some(m))
    }

    fn on_incoming(&mut self, m: PsiMessage) -> Result<(), NodeError> {
        match m.body {
            Some(psi_message::Body::Header(h)) if h.stream() == PsiStream::ReceiverBlinded => {
                self.receiver_blinded.declare(h.count)?;
                self.sender.on_receiver_header(h.count, h.group_size)?;
                self.replies
                    .push_back(header(PsiStream::DoubleBlinded, h.count, h.group_size));
                if h.count == 0 {
                    self.finish_incoming()?;
                }
            }
            Some(psi_message::Body::Batch(b)) if b.stream() == PsiStream::ReceiverBlinded => {
                self.receiver_blinded.add(&b.points)?;
                if let Some(out) = self.sender.on_receiver_blinded(b.offset, &b.points)? {
                    self.replies
                        .push_back(batch(PsiStream::DoubleBlinded, b.offset, out));
                }
                if self.receiver_blinded.done() {
                    self.finish_incoming()?;
                }
            }
            Some(_) => return Err(peer_err("unexpected PSI message for the sender role")),
            None => return Err(peer_err("empty PSI message")),
        }
        Ok(())
    }

    fn incoming_done(&self) -> bool {
        self.receiver_blinded.done()
    }

    fn progress(&self) -> (&'static str, u64, u64) {
        if self.sent < self.total {
            ("blind", self.sent, self.total)
        } else {
            (
                "reblind",
                self.receiver_blinded.received,
                self.receiver_blinded.declared.unwrap_or(0),
            )
        }
    }
}
