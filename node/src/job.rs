//! Running one job at a node: the receiver or sender role of `parley_crypto::psi` (match,
//! cardinality) or `parley_crypto::psi_sum` (sum), driven over sealed envelopes relayed by the
//! coordinator, a local `dp_stats` release, or this node's part of a `secure_sum`
//! (see [`crate::secure_sum`]). [`run_blocking`] chooses with one exhaustive `match` on the
//! job's [`Kind`]; an offer whose kind this node version does not know never gets here (it
//! is refused when `parley_jobs::Job::try_from` fails at the offer).
//!
//! # Budget
//! Every DP release is charged to this node's dataset ledger before it leaves the node: the
//! party that releases a result (PSI receiver, sum-mode P1 for its noisy ciphertext and P2 for
//! the decrypted result, the dp_stats node) charges just before it sends; the PSI sender of a
//! DP job charges before it sends its first point. After each charge the new ledger head is
//! reported to the coordinator.
//!
//! # Guarantees
//! * The whole role runs on one blocking thread (`spawn_blocking`); scalar multiplications use
//!   rayon inside it, never the async runtime.
//! * Memory is bounded: the inbox and the link queue are bounded channels, every declared
//!   stream size is checked against `[limits] max_set_size` before anything is allocated for
//!   it, and queued replies never exceed the peer's declared stream (32 bytes per point).
//! * No deadlock, even with several jobs sharing one link in opposite directions: a job
//!   thread never stops reading its inbox while it waits to send, so the node's link task
//!   never waits on a job for long and no cycle of full queues can form.
//! * Envelopes carry consecutive sequence numbers per direction; anything out of order, from
//!   the wrong peer, or failing authentication fails the job with a precise reason.
//! * Only counts, sizes and stage names are logged or reported as progress.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_crypto::envelope::{EnvelopeKey, derive_envelope_key};
use parley_crypto::keys::NodeSecrets;
use parley_crypto::ledger::{Charge, LedgerRow};
use parley_crypto::psi::{POINT_LEN, Receiver, ReceiverOutcome, Sender};
use parley_jobs::kinds::psi::{Mode, Psi};
use parley_jobs::kinds::psi_sum::PsiSum;
use parley_jobs::{Cost, Job, Kind};
use parley_proto::{
    Envelope, JobProgress, JobResult, LedgerHead, NodeMessage, PointBatch, PsiHeader, PsiMessage,
    PsiResult, PsiStream, SecAggRound, node_message, psi_message,
};
use prost::Message;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::NodeError;
use crate::dataset::Dataset;
use crate::ledger::Ledger;

/// Everything a job needs, fixed when it starts.
pub struct JobRun {
    /// Job id.
    pub job_id: String,
    /// This node's name.
    pub me: String,
    /// The job, as validated from the offer.
    pub job: Arc<Job>,
    /// This node's position among the job's participants.
    pub index: usize,
    /// Whom this node exchanges protocol messages with, as the kind says.
    pub links: Links,
    /// This node's long-term secrets.
    pub secrets: Arc<NodeSecrets>,
    /// The dataset this node contributes.
    pub dataset: Arc<Dataset>,
    /// Largest stream either side may declare.
    pub max_set_size: u64,
    /// Points per message.
    pub batch_points: usize,
    /// Wall-clock limit for the job.
    pub deadline: Duration,
    /// Where match outputs go.
    pub output_dir: PathBuf,
    /// Analyst who submitted the job (recorded in ledger rows).
    pub analyst: String,
    /// What a DP release of this job charges this node's dataset (None = exact job).
    pub cost: Option<Cost>,
    /// This node's budget ledger.
    pub ledger: Arc<Ledger>,
}

/// Whom a job's protocol talks to.
pub enum Links {
    /// PSI family: one other participant, through sealed envelopes.
    Peer {
        /// Its name.
        name: String,
        /// Its verified X25519 public key.
        x25519: [u8; 32],
    },
    /// dp_stats: nobody; the node computes alone.
    Local,
    /// secure_sum: the coordinator's rounds; every participant's verified Ed25519 key by
    /// secure-aggregation index (1-based position in the job's participants).
    SecAgg(parley_crypto::secagg::PeerKeys),
}

impl JobRun {
    /// The identifier columns this node matches on (empty = all of its dataset's).
    pub(crate) fn columns(&self) -> &[String] {
        self.job
            .participants
            .get(self.index)
            .map_or(&[], |p| p.columns.as_slice())
    }

    /// Charges the job's cost to this node's dataset (durably, before anything is released)
    /// and reports the new ledger head to the coordinator. No-op for exact jobs.
    pub(crate) fn charge(&self, io: &JobIo, rt: &Handle) -> Result<(), NodeError> {
        self.charger(io, rt).charge()
    }

    /// A handle that charges this job's cost later (e.g. from inside a protocol party).
    pub(crate) fn charger(&self, io: &JobIo, rt: &Handle) -> Charger {
        let partner = self
            .job
            .participants
            .iter()
            .filter(|p| p.node != self.me)
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Charger {
            ledger: Arc::clone(&self.ledger),
            dataset: self.dataset.name().to_string(),
            charge: self.cost.as_ref().map(|cost| Charge {
                job_id: self.job_id.clone(),
                partner,
                analyst: self.analyst.clone(),
                mechanism: cost.mechanism.clone(),
                epsilon: cost.epsilon,
                delta: cost.delta,
            }),
            outbox: io.outbox.clone(),
            cancel: io.cancel.clone(),
            rt: rt.clone(),
        }
    }
}

/// Charges one job's privacy cost to the node's ledger and reports the new head.
pub(crate) struct Charger {
    ledger: Arc<Ledger>,
    dataset: String,
    charge: Option<Charge>,
    outbox: mpsc::Sender<NodeMessage>,
    cancel: CancellationToken,
    rt: Handle,
}

impl Charger {
    /// Commits the ledger row (the release may then leave the node) and sends the new head to
    /// the coordinator. No-op for exact jobs.
    pub(crate) fn charge(&self) -> Result<(), NodeError> {
        let Some(charge) = &self.charge else {
            return Ok(());
        };
        let row = self.ledger.charge(&self.dataset, charge)?;
        tracing::info!(job = %charge.job_id, dataset = %self.dataset, epsilon = charge.epsilon, delta = charge.delta, seq = row.seq, "privacy budget charged");
        let msg = head_message(&row);
        let outbox = self.outbox.clone();
        let cancel = self.cancel.clone();
        // Wait for room (the head must reach the coordinator), unless the job is cancelled.
        self.rt.block_on(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = outbox.send(msg) => {}
            }
        });
        Ok(())
    }
}

/// The link message reporting a ledger row as the dataset's new head.
pub fn head_message(row: &LedgerRow) -> NodeMessage {
    NodeMessage {
        body: Some(node_message::Body::LedgerHead(LedgerHead {
            dataset: row.dataset.clone(),
            seq: row.seq,
            hash: row.hash.to_vec(),
            signature: row.signature.to_vec(),
            at_ms: row.at_ms,
        })),
    }
}

/// Channels between the job thread and the node link.
pub struct JobIo {
    /// Envelopes for this job, in arrival order.
    pub inbox: mpsc::Receiver<Envelope>,
    /// Secure-aggregation rounds for this job (`secure_sum` jobs), in arrival order.
    pub secagg: mpsc::Receiver<SecAggRound>,
    /// The node link's outbound queue.
    pub outbox: mpsc::Sender<NodeMessage>,
    /// Cancelled when the job is aborted or the link is lost.
    pub cancel: CancellationToken,
}

/// Runs the job to completion on the current (blocking) thread. Returns the result to release
/// when this node is the receiver, `None` for the sender.
pub fn run_blocking(run: JobRun, io: JobIo, rt: Handle) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = Arc::clone(&run.job);
    match &job.kind {
        Kind::SecureSum(k) => crate::secure_sum::run(run, k, io, rt),
        Kind::DpStats(k) => {
            let result =
                crate::stats::compute(&run.job_id, &run.dataset, &k.proto(), |_, _, _| {
                    run.charge(&io, &rt)
                })?;
            tracing::info!(job = %run.job_id, categories = result.categories.len(), "dp_stats released");
            Ok(Some(JobResult::from(result)))
        }
        Kind::PsiSum(k) => run_sum_job(run, k, io, rt, started),
        Kind::Psi(k) => run_psi_job(run, k, io, rt, started),
    }
}

/// Runs a PSI match or cardinality job as the receiver or the sender.
fn run_psi_job(
    run: JobRun,
    k: &Psi,
    mut io: JobIo,
    rt: Handle,
    started: Instant,
) -> Result<Option<JobResult>, NodeError> {
    let mode = k.mode.crypto();
    let ids = run.dataset.identifiers(run.columns())?;
    if run.index == k.receiver {
        let receiver = Receiver::new(mode, &ids, run.max_set_size)?;
        drop(ids);
        let mut party = ReceiverParty::new(receiver, run.batch_points);
        Wire::new(&run, &mut io, rt.clone())?.drive(&mut party)?;
        let outcome = party
            .receiver
            .take()
            .ok_or_else(|| NodeError::protocol(&run.job_id, "receiver state lost"))?
            .finish()?;
        let result = release(&run, k, &io, &rt, outcome, started)?;
        Ok(Some(result))
    } else {
        let flat: Vec<_> = ids.into_iter().flatten().collect();
        let sender = Sender::new(mode, flat, run.max_set_size)?;
        // The sender's dataset pays for a DP release before any of its points leave.
        run.charge(&io, &rt)?;
        let mut party = SenderParty::new(sender, run.batch_points);
        Wire::new(&run, &mut io, rt)?.drive(&mut party)?;
        Ok(None)
    }
}

/// Runs a sum-mode job: P2 (receiver role, values) or P1 (sender role, identifiers).
fn run_sum_job(
    run: JobRun,
    k: &PsiSum,
    mut io: JobIo,
    rt: Handle,
    started: Instant,
) -> Result<Option<JobResult>, NodeError> {
    use crate::job_sum::{SumNoise, SumReceiverParty, SumSenderParty};
    use crate::stats::{mechanism, noise_info, to_units};
    use parley_crypto::psi_sum::{SumP1, SumP2};

    let job = run.job_id.clone();
    let (sum_dp, count_dp, b) = (k.sum_dp, k.count_dp, k.bounds);
    let dp_err =
        |e: parley_crypto::dp::DpError| NodeError::protocol(&job, &format!("DP release: {e}"));
    let unit = 10f64.powi(-(b.decimals as i32));
    let sum_cal = parley_crypto::dp::calibrate(
        mechanism(sum_dp.mechanism.proto()),
        b.sensitivity_units(),
        sum_dp.epsilon,
        sum_dp.delta,
    )
    .map_err(dp_err)?;
    let count_cal = parley_crypto::dp::calibrate(
        mechanism(count_dp.mechanism.proto()),
        1,
        count_dp.epsilon,
        count_dp.delta,
    )
    .map_err(dp_err)?;
    let ids = run.dataset.identifiers(run.columns())?;
    if run.index == k.p1 {
        // P1: identifiers only. Charges and draws its noise once everything has arrived, before
        // the noisy ciphertext leaves.
        let flat: Vec<_> = ids.into_iter().flatten().collect();
        let p1 = SumP1::new(flat, run.max_set_size)?;
        let charger = run.charger(&io, &rt);
        let release = Box::new(move |_count: u64| -> Result<SumNoise, NodeError> {
            charger.charge()?;
            let noise = |c: &parley_crypto::dp::Calibrated| {
                c.noise()
                    .map_err(|e| NodeError::protocol("", &format!("DP release: {e}")))
            };
            Ok(SumNoise {
                sum_noise: noise(&sum_cal)?,
                count_noise: noise(&count_cal)?,
                sum_info: noise_info(&sum_cal, unit),
                count_info: noise_info(&count_cal, 1.0),
            })
        });
        let mut party = SumSenderParty::new(p1, run.batch_points, release);
        Wire::new(&run, &mut io, rt)?.drive(&mut party)?;
        return Ok(None);
    }
    // P2: per identifier, the sum of its rows' clamped values, clamped again to the bounds.
    let column = &k.value_column;
    let values = run.dataset.values(column).ok_or_else(|| {
        NodeError::protocol(
            &job,
            &format!(
                "dataset '{}' has no value column '{column}'",
                run.dataset.name()
            ),
        )
    })?;
    let lower_units = to_units(b.lower, b.lower, b.upper, b.decimals);
    let upper_units = to_units(b.upper, b.lower, b.upper, b.decimals);
    let mut per_id: std::collections::HashMap<parley_crypto::normalize::IdHash, i64> =
        std::collections::HashMap::new();
    for (record, v) in ids.iter().zip(values) {
        for id in record {
            let e = per_id.entry(*id).or_insert(0);
            *e = e.saturating_add(to_units(*v, b.lower, b.upper, b.decimals));
        }
    }
    let receiver_records = ids.iter().filter(|r| !r.is_empty()).count() as u64;
    drop(ids);
    let items: Vec<_> = per_id
        .into_iter()
        .map(|(id, total)| (id, total.clamp(lower_units, upper_units).max(0) as u64))
        .collect();
    let n = items.len() as u64;
    let p2 = SumP2::new(items, run.max_set_size)?;
    // The noisy sum lies in [-bound, n * upper + bound] except with probability ~1e-9.
    let bound = sum_cal.accuracy(1e-9).map_err(dp_err)?.ceil() as i64 + 1;
    let max = i64::try_from(n)
        .unwrap_or(i64::MAX)
        .saturating_mul(upper_units.max(0))
        .saturating_add(bound);
    let mut party = SumReceiverParty::new(p2, run.batch_points, (-bound, max));
    Wire::new(&run, &mut io, rt.clone())?.drive(&mut party)?;
    let got = party.finish(-bound, max).map_err(|e| e.for_job(&job))?;
    // P2's dataset pays for the released sum before it leaves.
    run.charge(&io, &rt)?;
    let noisy_count = got.noisy_count.max(0) as u64;
    let suppressed = k.min_intersection > 0 && noisy_count < k.min_intersection;
    tracing::info!(job = %job, suppressed, "psi sum finished");
    Ok(Some(JobResult::from(PsiResult {
        mode: parley_proto::PsiMode::Sum as i32,
        receiver_records,
        receiver_identifiers: n,
        sender_identifiers: got.p1_identifiers,
        intersection_records: if suppressed { 0 } else { noisy_count },
        suppressed,
        match_output: String::new(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        count_noise: None,
        sum: (!suppressed).then_some(parley_proto::SumRelease {
            noisy_sum: got.noisy_sum as f64 * unit,
            noisy_count: got.noisy_count,
            sum_noise: Some(got.sum_info),
            count_noise: Some(got.count_info),
            lower: b.lower,
            upper: b.upper,
        }),
    })))
}

/// Noises the intersection count when the job asks for DP (charging the budget first), applies
/// the threshold and writes the match file; returns what the analyst sees.
fn release(
    run: &JobRun,
    k: &Psi,
    io: &JobIo,
    rt: &Handle,
    mut o: ReceiverOutcome,
    started: Instant,
) -> Result<JobResult, NodeError> {
    let mut count_noise = None;
    if let Some(dp) = &k.dp {
        let c = parley_crypto::dp::calibrate(
            crate::stats::mechanism(dp.mechanism.proto()),
            1,
            dp.epsilon,
            dp.delta,
        )
        .map_err(|e| NodeError::protocol(&run.job_id, &format!("DP release: {e}")))?;
        run.charge(io, rt)?;
        let noisy = c
            .release(&[i64::try_from(o.intersection_records).unwrap_or(i64::MAX)])
            .map_err(|e| NodeError::protocol(&run.job_id, &format!("DP release: {e}")))?;
        // Post-processing: a negative noisy count is released as 0.
        o.intersection_records = noisy.first().copied().unwrap_or(0).max(0) as u64;
        count_noise = Some(crate::stats::noise_info(&c, 1.0));
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
            let mut w = csv::Writer::from_path(&tmp)?;
            w.write_record([run.dataset.key_column()])?;
            for &i in &o.matched_records {
                w.write_record([run.dataset.key(i)])?;
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
    }))
}

/// One side of a two-party message flow (PSI and intersection-sum).
pub(crate) trait Party {
    /// The next message ready to send (replies first), if any.
    fn next_outgoing(&mut self) -> Result<Option<PsiMessage>, NodeError>;
    /// Handles a message from the peer.
    fn on_incoming(&mut self, m: PsiMessage) -> Result<(), NodeError>;
    /// True once every stream the peer must send has fully arrived.
    fn incoming_done(&self) -> bool;
    /// (stage, done, total) for progress reports.
    fn progress(&self) -> (&'static str, u64, u64);
}

pub(crate) fn header(stream: PsiStream, count: u64, group_size: u32) -> PsiMessage {
    PsiMessage {
        body: Some(psi_message::Body::Header(PsiHeader {
            stream: stream as i32,
            count,
            group_size,
            public_key: Vec::new(),
        })),
    }
}

pub(crate) fn batch(stream: PsiStream, offset: u64, points: Vec<u8>) -> PsiMessage {
    PsiMessage {
        body: Some(psi_message::Body::Batch(PointBatch {
            stream: stream as i32,
            offset,
            points,
        })),
    }
}

/// Progress through one declared incoming stream.
#[derive(Default)]
pub(crate) struct Incoming {
    pub(crate) declared: Option<u64>,
    pub(crate) received: u64,
}

impl Incoming {
    pub(crate) fn declare(&mut self, count: u64) -> Result<(), &'static str> {
        if self.declared.is_some() {
            return Err("stream declared twice");
        }
        self.declared = Some(count);
        Ok(())
    }
    pub(crate) fn add(&mut self, points: &[u8]) -> Result<(), &'static str> {
        if self.declared.is_none() {
            return Err("points arrived before the stream header");
        }
        self.received += (points.len() / POINT_LEN) as u64;
        Ok(())
    }
    pub(crate) fn done(&self) -> bool {
        self.declared == Some(self.received)
    }
}

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
                    self.sender_blinded.declare(h.count).map_err(peer_err)?;
                    self.r()?.on_sender_header(h.count)?;
                }
                PsiStream::DoubleBlinded => {
                    self.double_blinded.declare(h.count).map_err(peer_err)?;
                    self.r()?.on_double_header(h.count)?;
                }
                other => {
                    return Err(peer_err_owned(format!(
                        "unexpected header for stream {other:?}"
                    )));
                }
            },
            Some(psi_message::Body::Batch(b)) => match b.stream() {
                PsiStream::SenderBlinded => {
                    self.sender_blinded.add(&b.points).map_err(peer_err)?;
                    self.r()?.on_sender_blinded(b.offset, &b.points)?;
                }
                PsiStream::DoubleBlinded => {
                    self.double_blinded.add(&b.points).map_err(peer_err)?;
                    self.r()?.on_double_blinded(b.offset, &b.points)?;
                }
                other => {
                    return Err(peer_err_owned(format!(
                        "unexpected batch for stream {other:?}"
                    )));
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
                self.receiver_blinded.declare(h.count).map_err(peer_err)?;
                self.sender.on_receiver_header(h.count, h.group_size)?;
                self.replies
                    .push_back(header(PsiStream::DoubleBlinded, h.count, h.group_size));
                if h.count == 0 {
                    self.finish_incoming()?;
                }
            }
            Some(psi_message::Body::Batch(b)) if b.stream() == PsiStream::ReceiverBlinded => {
                self.receiver_blinded.add(&b.points).map_err(peer_err)?;
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

pub(crate) fn peer_err(detail: &str) -> NodeError {
    NodeError::protocol("", &format!("peer protocol violation: {detail}"))
}

pub(crate) fn peer_err_owned(detail: String) -> NodeError {
    peer_err(&detail)
}

/// The sealed-envelope transport of one job.
pub(crate) struct Wire<'a> {
    job_id: String,
    me: String,
    peer: String,
    out_key: EnvelopeKey,
    in_key: EnvelopeKey,
    out_seq: u64,
    in_seq: u64,
    io: &'a mut JobIo,
    rt: Handle,
    deadline: tokio::time::Instant,
    deadline_secs: u64,
    last_progress: Instant,
}

enum Event<'p> {
    Send(mpsc::Permit<'p, NodeMessage>),
    Incoming(Option<Envelope>),
    Cancelled,
    Deadline,
}

impl<'a> Wire<'a> {
    pub(crate) fn new(run: &JobRun, io: &'a mut JobIo, rt: Handle) -> Result<Self, NodeError> {
        let Links::Peer { name, x25519 } = &run.links else {
            return Err(NodeError::protocol(
                &run.job_id,
                "this job kind has no peer to exchange envelopes with",
            ));
        };
        let out_key =
            derive_envelope_key(run.secrets.envelope(), x25519, &run.job_id, &run.me, name)?;
        let in_key =
            derive_envelope_key(run.secrets.envelope(), x25519, &run.job_id, name, &run.me)?;
        Ok(Wire {
            job_id: run.job_id.clone(),
            me: run.me.clone(),
            peer: name.clone(),
            out_key,
            in_key,
            out_seq: 0,
            in_seq: 0,
            io,
            rt,
            deadline: tokio::time::Instant::now() + run.deadline,
            deadline_secs: run.deadline.as_secs(),
            last_progress: Instant::now(),
        })
    }

    fn seal(&mut self, m: &PsiMessage) -> Result<NodeMessage, NodeError> {
        let sealed = self.out_key.seal(self.out_seq, &m.encode_to_vec())?;
        let env = Envelope {
            job_id: self.job_id.clone(),
            from: self.me.clone(),
            to: self.peer.clone(),
            seq: self.out_seq,
            sealed,
        };
        self.out_seq += 1;
        Ok(NodeMessage {
            body: Some(node_message::Body::Envelope(env)),
        })
    }

    fn open(&mut self, env: Envelope) -> Result<PsiMessage, NodeError> {
        let job = self.job_id.clone();
        if env.from != self.peer {
            return Err(NodeError::protocol(
                &job,
                &format!("envelope from unexpected node '{}'", env.from),
            ));
        }
        if env.seq != self.in_seq {
            return Err(NodeError::protocol(
                &job,
                &format!(
                    "envelope {} from '{}' arrived out of order (expected {})",
                    env.seq, self.peer, self.in_seq
                ),
            ));
        }
        if env.sealed.len() > parley_proto::MAX_CHUNK_BYTES + 1024 {
            return Err(NodeError::protocol(
                &job,
                &format!(
                    "envelope of {} bytes exceeds the 1 MiB chunk limit",
                    env.sealed.len()
                ),
            ));
        }
        let plain = self.in_key.open(env.seq, &env.sealed)?;
        self.in_seq += 1;
        PsiMessage::decode(plain.as_slice()).map_err(|e| {
            NodeError::protocol(
                &job,
                &format!("undecodable PSI message from '{}': {e}", self.peer),
            )
        })
    }

    fn report(&mut self, party: &dyn Party, force: bool) {
        if !force && self.last_progress.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last_progress = Instant::now();
        let (stage, done, total) = party.progress();
        // Best effort: progress is dropped rather than delaying the protocol.
        let _ = self.io.outbox.try_send(NodeMessage {
            body: Some(node_message::Body::Progress(JobProgress {
                job_id: self.job_id.clone(),
                node: String::new(),
                stage: stage.to_string(),
                done,
                total,
            })),
        });
    }

    /// Exchanges messages until the party has sent everything and received everything.
    pub(crate) fn drive(&mut self, party: &mut dyn Party) -> Result<(), NodeError> {
        let mut pending: Option<PsiMessage> = None;
        loop {
            if pending.is_none() {
                pending = party.next_outgoing().map_err(|e| e.for_job(&self.job_id))?;
            }
            if pending.is_none() && party.incoming_done() {
                self.report(party, true);
                return Ok(());
            }
            let want_read = !party.incoming_done();
            let want_send = pending.is_some();
            let outbox = self.io.outbox.clone();
            let cancel = self.io.cancel.clone();
            let deadline = self.deadline;
            let inbox = &mut self.io.inbox;
            let event = self.rt.block_on(async {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Event::Cancelled,
                    _ = tokio::time::sleep_until(deadline) => Event::Deadline,
                    p = outbox.reserve(), if want_send => match p {
                        Ok(p) => Event::Send(p),
                        Err(_) => Event::Cancelled,
                    },
                    m = inbox.recv(), if want_read => Event::Incoming(m),
                }
            });
            match event {
                Event::Cancelled => return Err(NodeError::Cancelled),
                Event::Deadline => {
                    return Err(NodeError::protocol(
                        &self.job_id,
                        &format!(
                            "no progress within the node's job deadline of {} s ([limits] job_deadline_secs)",
                            self.deadline_secs
                        ),
                    ));
                }
                Event::Send(permit) => {
                    let m = pending.take().ok_or(NodeError::Cancelled)?;
                    let msg = self.seal(&m)?;
                    permit.send(msg);
                }
                Event::Incoming(None) => return Err(NodeError::Cancelled),
                Event::Incoming(Some(env)) => {
                    let m = self.open(env)?;
                    party.on_incoming(m).map_err(|e| e.for_job(&self.job_id))?;
                }
            }
            self.report(party, false);
        }
    }
}
