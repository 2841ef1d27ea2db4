//! PSI `sum` jobs (intersection-sum with cardinality) at a node: P1 (identifiers) or P2
//! (identifiers with values), run like the other PSI roles by the two-party stream driver over
//! sealed envelopes; the maths is `parley_crypto::grouped` with one group and one value column
//! per summed column (the intersection-sum of Ion et al.), whose module docs state what each
//! party learns.
//!
//! # Guarantees
//! * P1 ([`SumSenderParty`], the job's "sender") releases nothing until everything from P2 has
//!   arrived and the intersection is computed; it then calls the release closure exactly once,
//!   with the exact per-group intersection counts, and sends the noisy encrypted totals and
//!   noisy counts only if the closure succeeded (it charges the privacy budget and samples the
//!   noise). The exact counts never leave this module except into that closure.
//! * The parties are generic over the groups and value columns of `parley_crypto::grouped`:
//!   a PSI sum runs them with one group and one column per `[[psi.columns]]` entry, the `lift`
//!   kind with one group per arm × cohort cell and several columns.
//! * P2 ([`SumReceiverParty`], the job's "receiver") accepts P1's answer only after it has sent
//!   every stream P1 needs, and decrypts it within a range the caller declares per column.
//! * Every declared count is checked against the job's limit before anything is allocated;
//!   batches never exceed one 1 MiB chunk (32-byte points; 32 + 64 bytes per column for pairs).
//! * Only counts and stage names appear in progress reports and errors.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use parley_crypto::dp::Calibrated;
use parley_crypto::elgamal::{CIPHERTEXT_LEN, DlogTable, MAX_DECRYPT_WIDTH};
use parley_crypto::grouped::{GroupP1, GroupP2, range_width};
use parley_crypto::normalize::IdHash;
use parley_crypto::psi::POINT_LEN;
use parley_jobs::kinds::psi_sum::PsiSum;
use parley_proto::{
    ColumnSum, JobResult, NoiseInfo, PointBatch, PsiHeader, PsiMessage, PsiResult, PsiStream,
    SumOutcome, SumRelease, psi_message,
};

use super::bound;
use super::dp::{calibrated, dp_err, noise_info};
use super::envelope::EnvelopeWire;
use super::psi::{batch, header};
use super::two_party::{self, Party, peer_err};
use super::wait::Waiter;
use super::{JobIo, JobRun, value_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Runs a sum-mode job: P2 (receiver role, values; returns the result) or P1 (sender role,
/// identifiers; returns `None`).
pub(super) fn run(
    run: &JobRun,
    k: &PsiSum,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = run.job_id.clone();
    let unit = 10f64.powi(-(k.decimals() as i32));
    let width = k.columns.len();
    let sum_cals = column_calibrations(&job, k)?;
    let count_cal = calibrated(&job, &k.count_dp, k.count_sensitivity())?;
    let ids = run.dataset.identifiers(run.columns())?;
    let (peer, x25519) = run.peer()?;
    let mut wire = EnvelopeWire::new(&job, &run.me, &run.secrets, peer, x25519)?;
    if run.index == k.p1 {
        // P1: identifiers only. Charges and draws its noise once everything has arrived, before
        // the noisy ciphertext leaves.
        let (flat, dropped) =
            bound::sender_identifiers(run.dataset.persons(), ids, k.bound.sender_columns);
        if dropped > 0 {
            tracing::info!(job = %job, dropped, "identifiers beyond the per-person bound left out");
        }
        let p1 = GroupP1::new(
            flat.into_iter().map(|id| (id, 0)).collect(),
            1,
            width,
            run.max_set_size,
        )?;
        let charger = run.charger(io, wait);
        let release = Box::new(move |_matched: &[u64]| -> Result<GroupNoise, NodeError> {
            charger.charge()?;
            let noise = |c: &Calibrated| c.noise().map_err(|e| dp_err("", e));
            Ok(GroupNoise {
                sums: sum_cals.iter().map(noise).collect::<Result<_, _>>()?,
                counts: vec![noise(&count_cal)?],
                sum_info: sum_cals.iter().map(|c| noise_info(c, unit)).collect(),
                count_info: noise_info(&count_cal, 1.0),
            })
        });
        let mut party = SumSenderParty::new(p1, run.batch_points, release);
        two_party::drive(&mut party, &mut wire, io, wait)?;
        return Ok(None);
    }
    // P2: at most m records per person; per identifier and column, the sum of its rows' clamped
    // values, clamped again to the column's bounds.
    let values = k
        .columns
        .iter()
        .map(|c| value_column(&run.dataset, &c.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::protocol(&job, &e))?;
    let kept = bound::records(
        run.dataset.persons(),
        &[],
        k.bound.max_records_per_identifier,
    );
    // One row of `width` totals per distinct identifier, in first-seen order (P2 shuffles).
    let mut row_of: HashMap<IdHash, usize> = HashMap::new();
    let mut order: Vec<IdHash> = Vec::new();
    let mut totals: Vec<i64> = Vec::new();
    let mut receiver_records = 0u64;
    for &i in &kept.index {
        if !ids[i].is_empty() {
            receiver_records += 1;
        }
        for id in &ids[i] {
            let row = *row_of.entry(*id).or_insert_with(|| {
                order.push(*id);
                totals.resize(totals.len() + width, 0);
                order.len() - 1
            });
            for (c, (column, v)) in k.columns.iter().zip(&values).enumerate() {
                let t = &mut totals[row * width + c];
                *t = t.saturating_add(column.bounds.units(v[i]));
            }
        }
    }
    drop((ids, row_of));
    let clamped: Vec<u64> = totals
        .chunks(width)
        .flat_map(|row| {
            row.iter().zip(&k.columns).map(|(t, c)| {
                let b = c.bounds;
                (*t).clamp(b.units(b.lower), b.units(b.upper)).max(0) as u64
            })
        })
        .collect();
    drop(totals);
    let n = order.len() as u64;
    let ranges = decrypt_ranges(&job, k, &sum_cals, n)?;
    let bounds = k
        .columns
        .iter()
        .map(|c| c.bounds.units(c.bounds.upper).max(0) as u64)
        .collect();
    let p2 =
        GroupP2::new(order, clamped, 1, width, run.max_set_size)?.with_column_bounds(bounds)?;
    let mut party = SumReceiverParty::new(p2, 1, run.batch_points, ranges);
    two_party::drive(&mut party, &mut wire, io, wait)?;
    let got = party.finish().map_err(|e| e.for_job(&job))?;
    let raw_count = got.noisy_counts.first().copied().unwrap_or_default();
    let sums = got.totals.first().cloned().unwrap_or_default();
    if sums.len() != width || got.sum_info.len() != width {
        return Err(peer_err(
            "intersection-sum answer without one total and one noise per value column",
        )
        .for_job(&job));
    }
    // P2's dataset pays for the released sums before they leave.
    run.charge(io, wait)?;
    let noisy_count = raw_count.max(0) as u64;
    let suppressed = k.min_intersection > 0 && noisy_count < k.min_intersection;
    tracing::info!(job = %job, suppressed, columns = width, "psi sum finished");
    let columns: Vec<ColumnSum> = k
        .columns
        .iter()
        .zip(sums)
        .zip(got.sum_info)
        .map(|((c, total), info)| ColumnSum {
            name: c.name.clone(),
            noisy_sum: total as f64 * unit,
            sum_noise: Some(info),
            lower: c.bounds.lower,
            upper: c.bounds.upper,
        })
        .collect();
    let sum = (!suppressed)
        .then(|| columns.first().cloned().map(|first| (first, columns)))
        .flatten()
        .map(|(first, columns)| SumRelease {
            noisy_sum: first.noisy_sum,
            noisy_count: raw_count,
            sum_noise: first.sum_noise,
            count_noise: Some(got.count_info),
            lower: first.lower,
            upper: first.upper,
            columns,
        });
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
        sum,
        records_dropped: kept.dropped,
        profile: k.profile.name().to_owned(),
    })))
}

/// Checks at the offer that P2 (participant `index` when it is `k.p2`) has every value column
/// and can decrypt every sum its dataset could give, so that no job starts (and P1 charges)
/// that P2 would fail to decrypt.
pub(super) fn check_columns(ds: &Dataset, k: &PsiSum, index: usize) -> Result<(), String> {
    if index == k.p2 {
        for (i, c) in k.columns.iter().enumerate() {
            value_column(ds, &c.name).map_err(|e| {
                format!(
                    "{}: {e}; name a value column of the dataset",
                    column_setting(k, i)
                )
            })?;
        }
        let cals = column_calibrations("", k).map_err(|e| e.to_string())?;
        let n = u64::try_from(ds.identifier_count()).unwrap_or(u64::MAX);
        decrypt_ranges("", k, &cals, n).map_err(|e| match e {
            NodeError::Protocol { detail, .. } => detail,
            other => other.to_string(),
        })?;
    }
    Ok(())
}

/// Each column's noise: the column's share of `[psi.dp]` at its own sensitivity.
fn column_calibrations(job: &str, k: &PsiSum) -> Result<Vec<Calibrated>, NodeError> {
    let dp = k.column_dp();
    (0..k.columns.len())
        .map(|i| calibrated(job, &dp, k.column_sensitivity_units(i)))
        .collect()
}

/// The job-file setting that names value column `i`: the receiver's `value_column` of a
/// one-column job, `psi.columns[i].name` otherwise.
fn column_setting(k: &PsiSum, i: usize) -> String {
    if k.columns.len() == 1 {
        "value_column".into()
    } else {
        format!("{}.name", k.column_field(i))
    }
}

/// The range P2 decrypts each column's noisy sum of at most `n` identifiers in: `[-bound,
/// n × upper + bound]` in units, where `bound` exceeds that column's noise except with
/// probability about 1e-9. Refused, naming the column, when wider than P2 can decrypt
/// ([`MAX_DECRYPT_WIDTH`]).
fn decrypt_ranges(
    job: &str,
    k: &PsiSum,
    cals: &[Calibrated],
    n: u64,
) -> Result<Vec<(i64, i64)>, NodeError> {
    k.columns
        .iter()
        .zip(cals)
        .enumerate()
        .map(|(i, (c, cal))| {
            let b = c.bounds;
            let noise = cal.accuracy(1e-9).map_err(|e| dp_err(job, e))?.ceil();
            // `as` saturates a huge or infinite bound at i64::MAX; the width check then refuses
            // it.
            let bound = (noise as i64).saturating_add(1);
            let max = i64::try_from(n)
                .unwrap_or(i64::MAX)
                .saturating_mul(b.units(b.upper).max(0))
                .saturating_add(bound);
            let width = (i128::from(max) + i128::from(bound)).unsigned_abs();
            if width > MAX_DECRYPT_WIDTH {
                let field = k.column_field(i);
                let split = if k.columns.len() > 1 {
                    format!(" (split over {} columns)", k.columns.len())
                } else {
                    String::new()
                };
                return Err(NodeError::protocol(
                    job,
                    &format!(
                        "psi: value column '{}': a noisy sum over up to {n} identifiers of values \
                         clamped to at most {} spans {width} units of 10^-{}, more than the 2^42 \
                         P2 can decrypt; lower {field}.upper or psi.decimals, or raise \
                         psi.dp.epsilon{split}",
                        c.name.escape_debug(),
                        b.upper,
                        b.decimals
                    ),
                ));
            }
            Ok((bound.saturating_neg(), max))
        })
        .collect()
}

/// Largest number of points in one batch.
const MAX_POINTS_PER_BATCH: usize = parley_proto::MAX_CHUNK_BYTES / POINT_LEN;

/// The noise P1 adds to its release, as sampled (and charged) by the release closure.
pub(crate) struct GroupNoise {
    /// Noise inside each total, group-major (`sums[g·W + c]` for group `g`, column `c`).
    pub sums: Vec<i64>,
    /// Noise added to each group's intersection count.
    pub counts: Vec<i64>,
    /// Parameters of each column's noise, sent to P2.
    pub sum_info: Vec<NoiseInfo>,
    /// Parameters of the counts' noise, sent to P2.
    pub count_info: NoiseInfo,
}

/// Called once by P1 with the exact per-group intersection counts, after everything has
/// arrived and before anything is released; an error fails the job and nothing is sent.
pub(crate) type ReleaseFn = Box<dyn FnOnce(&[u64]) -> Result<GroupNoise, NodeError> + Send>;

/// Largest number of pairs of `width` columns in one batch: one envelope carries at most one
/// chunk.
fn max_pairs_per_batch(width: usize) -> usize {
    parley_proto::MAX_CHUNK_BYTES / parley_crypto::grouped::item_len(width)
}

/// P1 of a grouped intersection-aggregate (PSI sum, lift): sends its blinded identifiers group
/// by group, receives P2's two streams, returns the noisy encrypted totals and noisy counts.
pub(crate) struct SumSenderParty {
    /// `None` once the outcome has been computed.
    p1: Option<GroupP1>,
    batch_points: usize,
    total: u64,
    sent: u64,
    header_sent: bool,
    release: Option<ReleaseFn>,
    /// The answer, once computed and until handed out for sending.
    outcome: Option<PsiMessage>,
    outcome_sent: bool,
}

impl SumSenderParty {
    /// P1's party; `batch_points` is the configured number of points per message.
    pub(crate) fn new(p1: GroupP1, batch_points: usize, release: ReleaseFn) -> Self {
        SumSenderParty {
            total: p1.outgoing_count(),
            p1: Some(p1),
            batch_points: batch_points.clamp(1, MAX_POINTS_PER_BATCH),
            sent: 0,
            header_sent: false,
            release: Some(release),
            outcome: None,
            outcome_sent: false,
        }
    }

    fn p1(&mut self) -> Result<&mut GroupP1, NodeError> {
        self.p1.as_mut().ok_or_else(|| {
            peer_err("message from P2 after the intersection-sum was already computed")
        })
    }

    /// Once both of P2's streams are complete: computes the sum, calls the release closure and
    /// prepares the answer.
    fn finish_if_complete(&mut self) -> Result<(), NodeError> {
        if !self.p1.as_ref().is_some_and(GroupP1::is_complete) {
            return Ok(());
        }
        let Some(p1) = self.p1.take() else {
            return Ok(());
        };
        let outcome = p1.finish()?;
        let release = self
            .release
            .take()
            .ok_or_else(|| NodeError::protocol("", "intersection-sum released twice"))?;
        let noise = release(&outcome.matched)?;
        if noise.counts.len() != outcome.matched.len() || noise.sum_info.len() != outcome.width() {
            return Err(NodeError::protocol(
                "",
                "intersection-sum noise does not match the groups and columns",
            ));
        }
        let ciphertext = outcome.noisy_response(&noise.sums)?;
        let noisy_count = outcome
            .matched
            .iter()
            .zip(&noise.counts)
            .map(|(m, n)| i64::try_from(*m).ok().and_then(|c| c.checked_add(*n)))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| {
                NodeError::protocol("", "noisy intersection count overflows a 64-bit integer")
            })?;
        self.outcome = Some(PsiMessage {
            body: Some(psi_message::Body::SumOutcome(SumOutcome {
                ciphertext,
                noisy_count,
                sum_noise: noise.sum_info,
                count_noise: Some(noise.count_info),
            })),
        });
        Ok(())
    }
}

impl Party for SumSenderParty {
    type Message = PsiMessage;

    fn next_outgoing(&mut self) -> Result<Option<PsiMessage>, NodeError> {
        if !self.header_sent {
            self.header_sent = true;
            let mut m = header(PsiStream::SumIds, self.total, 1);
            let sizes = self.p1()?.group_sizes().to_vec();
            if let Some(psi_message::Body::Header(h)) = &mut m.body
                && sizes.len() > 1
            {
                h.group_sizes = sizes;
            }
            return Ok(Some(m));
        }
        if self.sent < self.total {
            let len = self.batch_points.min((self.total - self.sent) as usize);
            let sent = self.sent;
            let points = self.p1()?.blind_batch(sent, len)?;
            self.sent += len as u64;
            return Ok(Some(batch(PsiStream::SumIds, sent, points)));
        }
        if let Some(m) = self.outcome.take() {
            self.outcome_sent = true;
            return Ok(Some(m));
        }
        Ok(None)
    }

    fn on_incoming(&mut self, m: PsiMessage) -> Result<(), NodeError> {
        match m.body {
            Some(psi_message::Body::Header(PsiHeader {
                stream,
                count,
                public_key,
                ..
            })) => match PsiStream::try_from(stream) {
                Ok(PsiStream::SumIdsReblinded) => self.p1()?.on_reblinded_header(count)?,
                Ok(PsiStream::SumPairs) => self.p1()?.on_pairs_header(count, &public_key)?,
                _ => return Err(peer_err("unexpected stream header for intersection-sum P1")),
            },
            Some(psi_message::Body::Batch(PointBatch {
                stream,
                offset,
                points,
            })) => match PsiStream::try_from(stream) {
                Ok(PsiStream::SumIdsReblinded) => self.p1()?.on_reblinded(offset, &points)?,
                Ok(PsiStream::SumPairs) => self.p1()?.on_pairs(offset, &points)?,
                _ => return Err(peer_err("unexpected stream batch for intersection-sum P1")),
            },
            Some(_) => return Err(peer_err("unexpected message for intersection-sum P1")),
            None => return Err(peer_err("empty PSI message")),
        }
        self.finish_if_complete()
    }

    fn incoming_done(&self) -> bool {
        self.p1.is_none()
    }

    fn progress(&self) -> (&'static str, u64, u64) {
        if self.sent < self.total {
            return ("blind", self.sent, self.total);
        }
        let Some(p1) = &self.p1 else {
            return ("sum", u64::from(self.outcome_sent), 1);
        };
        match (p1.reblinded_progress(), p1.pairs_progress()) {
            ((done, declared), _) if declared != Some(done) => {
                ("reblind", done, declared.unwrap_or(self.total))
            }
            (_, (done, declared)) => ("pairs", done, declared.unwrap_or(0)),
        }
    }
}

/// What P2 learns at the end of a grouped intersection-aggregate.
#[derive(Debug)]
pub(crate) struct SumReceived {
    /// Per group, per column: the total over the intersection plus P1's noise.
    pub totals: Vec<Vec<i64>>,
    /// Per group: the intersection count plus P1's noise.
    pub noisy_counts: Vec<i64>,
    /// Parameters of each column's noise, as P1 reported them.
    pub sum_info: Vec<NoiseInfo>,
    /// Parameters of the counts' noise, as P1 reported them.
    pub count_info: NoiseInfo,
    /// `|X_g|`: P1's number of distinct identifiers in each group.
    pub p1_group_sizes: Vec<u64>,
    /// `|X|`: P1's number of distinct identifiers.
    pub p1_identifiers: u64,
}

/// Items P2 sends before P1's stream is complete: enough to keep both parties busy while P1
/// still blinds, few enough that P1, which holds every item until its lookup of re-blinded
/// points is complete, stays small (at most 65,536 × (32 + 64·W) bytes, 15 MiB at W = 3).
const EARLY_PAIRS: u64 = 1 << 16;

/// P2 of a grouped intersection-aggregate (PSI sum, lift): re-blinds P1's identifiers, sends
/// its encrypted items, receives and decrypts P1's answer.
pub(crate) struct SumReceiverParty {
    p2: GroupP2,
    point_batch: usize,
    pair_batch: usize,
    pairs_total: u64,
    pairs_sent: u64,
    pairs_header_sent: bool,
    /// Items sent before P1's stream is complete at most ([`EARLY_PAIRS`]).
    early_pairs: u64,
    /// Re-blinded points waiting to be sent (header first, batches once P1's stream is done).
    replies: VecDeque<PsiMessage>,
    /// P1's stream is complete and every re-blinded point is queued.
    ids_finished: bool,
    outcome: Option<SumOutcome>,
    /// The discrete-log tables for the declared ranges, being built in the background.
    tables: Option<std::thread::JoinHandle<Vec<std::sync::Arc<DlogTable>>>>,
    /// The declared range of each column's noisy totals.
    ranges: Vec<(i64, i64)>,
    groups: usize,
    columns: usize,
}

impl SumReceiverParty {
    /// P2's party for `groups` groups; `ranges` declares where each of P2's value columns'
    /// noisy totals lie; `batch_points` is the configured number of points per message (items
    /// are capped to what fits one chunk).
    ///
    /// Starts building the process-wide discrete-log tables in the background (once per
    /// process and size), so that they are usually ready by the time P1's answer arrives.
    pub(crate) fn new(
        p2: GroupP2,
        groups: usize,
        batch_points: usize,
        ranges: Vec<(i64, i64)>,
    ) -> Self {
        let widths: Vec<u128> = ranges.iter().map(|(a, b)| range_width(*a, *b)).collect();
        // A plain thread, not a rayon task: a rayon worker waiting inside the table's parallel
        // build could pick up another task that also waits for the table. If the thread cannot
        // start, the tables are built at decryption instead.
        let tables = std::thread::Builder::new()
            .name("dlog-table".into())
            .spawn(move || widths.into_iter().map(DlogTable::for_width).collect())
            .ok();
        let columns = ranges.len();
        SumReceiverParty {
            tables,
            ranges,
            groups,
            columns,
            pairs_total: p2.pairs_count(),
            p2,
            point_batch: batch_points.clamp(1, MAX_POINTS_PER_BATCH),
            pair_batch: batch_points.clamp(1, max_pairs_per_batch(columns)),
            pairs_sent: 0,
            pairs_header_sent: false,
            early_pairs: EARLY_PAIRS,
            replies: VecDeque::new(),
            ids_finished: false,
            outcome: None,
        }
    }

    /// The same party with another bound on the items sent early, for tests at small sizes.
    #[cfg(test)]
    fn with_early_pairs(mut self, n: u64) -> Self {
        self.early_pairs = n;
        self
    }

    /// Queues all re-blinded points, shuffled, once P1's stream is complete.
    fn finish_ids(&mut self) -> Result<(), NodeError> {
        let points = self.p2.finish_ids_stream()?;
        for (i, c) in points.chunks(self.point_batch * POINT_LEN).enumerate() {
            let offset = (i * self.point_batch) as u64;
            self.replies
                .push_back(batch(PsiStream::SumIdsReblinded, offset, c.to_vec()));
        }
        self.ids_finished = true;
        Ok(())
    }

    fn everything_sent(&self) -> bool {
        self.ids_finished
            && self.replies.is_empty()
            && self.pairs_header_sent
            && self.pairs_sent == self.pairs_total
    }

    /// Decrypts P1's answer within the ranges declared at [`SumReceiverParty::new`] (e.g.
    /// from minus the noise bound to the number of items times the clamping bound plus the
    /// noise bound).
    pub(crate) fn finish(self) -> Result<SumReceived, NodeError> {
        let o = self
            .outcome
            .ok_or_else(|| NodeError::protocol("", "intersection-sum answer from P1 missing"))?;
        // The tables are cached process-wide, so decryption reuses the ones built ahead (or
        // builds them now if the thread could not start).
        drop(self.tables.map(std::thread::JoinHandle::join));
        let totals = self.p2.decrypt_totals(&o.ciphertext, &self.ranges)?;
        Ok(SumReceived {
            totals,
            noisy_counts: o.noisy_count,
            sum_info: o.sum_noise,
            count_info: o.count_noise.unwrap_or_default(),
            p1_group_sizes: self.p2.p1_group_sizes().to_vec(),
            p1_identifiers: self.p2.p1_group_sizes().iter().sum(),
        })
    }
}

impl Party for SumReceiverParty {
    type Message = PsiMessage;

    fn next_outgoing(&mut self) -> Result<Option<PsiMessage>, NodeError> {
        if let Some(m) = self.replies.pop_front() {
            return Ok(Some(m));
        }
        if !self.pairs_header_sent {
            self.pairs_header_sent = true;
            return Ok(Some(PsiMessage {
                body: Some(psi_message::Body::Header(PsiHeader {
                    stream: PsiStream::SumPairs as i32,
                    count: self.pairs_total,
                    group_size: 1,
                    public_key: self.p2.public_key().to_vec(),
                    group_sizes: Vec::new(),
                })),
            }));
        }
        // Before P1's re-blinded points are all queued, send at most EARLY_PAIRS items: P1
        // must hold every item that arrives before its lookup is complete.
        let allowed = if self.ids_finished {
            self.pairs_total
        } else {
            self.pairs_total.min(self.early_pairs)
        };
        if self.pairs_sent < allowed {
            let len = self.pair_batch.min((allowed - self.pairs_sent) as usize);
            let offset = self.pairs_sent;
            let pairs = self.p2.pairs_batch(offset, len)?;
            self.pairs_sent += len as u64;
            return Ok(Some(batch(PsiStream::SumPairs, offset, pairs)));
        }
        Ok(None)
    }

    fn on_incoming(&mut self, m: PsiMessage) -> Result<(), NodeError> {
        if self.outcome.is_some() {
            return Err(peer_err(
                "message from P1 after its intersection-sum answer",
            ));
        }
        match m.body {
            Some(psi_message::Body::Header(h)) if h.stream() == PsiStream::SumIds => {
                let sizes = if h.group_sizes.is_empty() {
                    vec![h.count]
                } else {
                    h.group_sizes.clone()
                };
                if sizes.iter().try_fold(0u64, |a, s| a.checked_add(*s)) != Some(h.count) {
                    return Err(peer_err(
                        "intersection-sum group sizes do not add up to the declared count",
                    ));
                }
                self.p2.on_ids_header(&sizes)?;
                self.replies
                    .push_back(header(PsiStream::SumIdsReblinded, h.count, 1));
                if h.count == 0 {
                    self.finish_ids()?;
                }
            }
            Some(psi_message::Body::Batch(b)) if b.stream() == PsiStream::SumIds => {
                self.p2.on_ids(b.offset, &b.points)?;
                let (received, declared) = self.p2.ids_progress();
                if declared == Some(received) {
                    self.finish_ids()?;
                }
            }
            Some(psi_message::Body::SumOutcome(o)) => {
                if !self.everything_sent() {
                    return Err(peer_err(
                        "intersection-sum answer arrived before P2 had sent all its points and pairs",
                    ));
                }
                if o.ciphertext.len() != self.groups * self.columns * CIPHERTEXT_LEN {
                    return Err(parley_crypto::CryptoError::CiphertextLength {
                        len: o.ciphertext.len(),
                    }
                    .into());
                }
                if o.noisy_count.len() != self.groups {
                    return Err(peer_err(
                        "intersection-sum answer without one noisy count per group",
                    ));
                }
                if o.sum_noise.len() != self.columns || o.count_noise.is_none() {
                    return Err(peer_err(
                        "intersection-sum answer without its noise parameters",
                    ));
                }
                self.outcome = Some(o);
            }
            Some(_) => return Err(peer_err("unexpected message for intersection-sum P2")),
            None => return Err(peer_err("empty PSI message")),
        }
        Ok(())
    }

    fn incoming_done(&self) -> bool {
        self.outcome.is_some()
    }

    fn progress(&self) -> (&'static str, u64, u64) {
        let (received, declared) = self.p2.ids_progress();
        if !self.ids_finished {
            return ("reblind", received, declared.unwrap_or(0));
        }
        if self.pairs_sent < self.pairs_total {
            return ("pairs", self.pairs_sent, self.pairs_total);
        }
        ("sum", u64::from(self.outcome.is_some()), 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use parley_proto::DpMechanism;

    use super::*;
    use crate::jobs::two_party::pump;
    use parley_crypto::grouped::item_len;

    fn id(i: u32) -> IdHash {
        IdHash::of_normalized(&format!("user{i}@example.com"))
    }

    fn p1_of(x: Vec<IdHash>, max: u64) -> GroupP1 {
        GroupP1::new(x.into_iter().map(|id| (id, 0)).collect(), 1, 1, max).unwrap()
    }

    fn p2_of(y: Vec<(IdHash, u64)>, max: u64) -> GroupP2 {
        let (ids, values) = y.into_iter().unzip();
        GroupP2::new(ids, values, 1, 1, max).unwrap()
    }

    fn info(epsilon: f64) -> NoiseInfo {
        NoiseInfo {
            mechanism: DpMechanism::Laplace as i32,
            epsilon,
            delta: 0.0,
            scale: 1.0 / epsilon,
            accuracy95: 3.0 / epsilon,
            sensitivity: 1.0,
        }
    }

    /// A release closure with fixed noise that records the counts it was called with.
    fn release(sum_noise: i64, count_noise: i64, calls: Arc<Mutex<Vec<u64>>>) -> ReleaseFn {
        Box::new(move |matched: &[u64]| {
            calls.lock().unwrap().push(matched.iter().sum());
            Ok(GroupNoise {
                sums: vec![sum_noise],
                counts: vec![count_noise],
                sum_info: vec![info(1.0)],
                count_info: info(0.5),
            })
        })
    }

    fn sets() -> (Vec<IdHash>, Vec<(IdHash, u64)>, i64, i64) {
        let x: Vec<IdHash> = (0..300).map(id).chain((0..50).map(id)).collect();
        let y: Vec<(IdHash, u64)> = (200..700)
            .map(|i| (id(i), u64::from(i) * 1000 + 7))
            .collect();
        let count = 100;
        let sum = (200..300).map(|i| i64::from(i) * 1000 + 7).sum();
        (x, y, count, sum)
    }

    fn run(batch_points: usize, sum_noise: i64, count_noise: i64) -> (SumReceived, Vec<u64>) {
        let (x, y, _, _) = sets();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut p1 = SumSenderParty::new(
            p1_of(x, 10_000),
            batch_points,
            release(sum_noise, count_noise, calls.clone()),
        );
        let mut p2 = SumReceiverParty::new(
            p2_of(y, 10_000),
            1,
            batch_points,
            vec![(-(1 << 20), 1 << 40)],
        );
        pump(&mut p1, &mut p2, |_| {}).unwrap();
        assert_eq!(p1.progress(), ("sum", 1, 1));
        assert_eq!(p2.progress(), ("sum", 1, 1));
        let got = p2.finish().unwrap();
        let calls = calls.lock().unwrap().clone();
        (got, calls)
    }

    /// P1 holds every item that arrives before its lookup is complete, so P2 sends at most its
    /// early allowance before the last re-blinded batch, and some (the parties overlap).
    #[test]
    fn p2_sends_few_items_before_p1s_points_are_back() {
        let (x, y, count, sum) = sets();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut p1 = SumSenderParty::new(p1_of(x, 10_000), 7, release(0, 0, calls));
        let mut p2 = SumReceiverParty::new(p2_of(y, 10_000), 1, 7, vec![(-(1 << 20), 1 << 40)])
            .with_early_pairs(50);
        let (mut items_before, mut items_total, mut reblinded_left) = (0, 0, 300);
        pump(&mut p2, &mut p1, |m: &PsiMessage| {
            if let Some(psi_message::Body::Batch(b)) = &m.body {
                match b.stream() {
                    PsiStream::SumIdsReblinded => reblinded_left -= b.points.len() / POINT_LEN,
                    PsiStream::SumPairs => {
                        let n = b.points.len() / item_len(1);
                        items_total += n;
                        if reblinded_left > 0 {
                            items_before += n;
                        }
                    }
                    _ => {}
                }
            }
        })
        .unwrap();
        assert_eq!((reblinded_left, items_total), (0, 500));
        assert!(
            (1..=50).contains(&items_before),
            "{items_before} items arrived before P1's last re-blinded point"
        );
        let got = p2.finish().unwrap();
        assert_eq!((got.totals[0][0], got.noisy_counts[0]), (sum, count));
    }

    #[test]
    fn zero_noise_gives_the_exact_sum() {
        let (_, _, count, sum) = sets();
        for batch_points in [7, 64, 100_000] {
            let (got, calls) = run(batch_points, 0, 0);
            assert_eq!(got.totals[0][0], sum);
            assert_eq!(got.noisy_counts[0], count);
            assert_eq!(got.p1_identifiers, 300);
            assert_eq!(got.sum_info, vec![info(1.0)]);
            assert_eq!(got.count_info, info(0.5));
            assert_eq!(
                calls,
                vec![count as u64],
                "release called once with the count"
            );
        }
    }

    #[test]
    fn noise_is_added() {
        let (_, _, count, sum) = sets();
        let (got, _) = run(50, -12_345, 3);
        assert_eq!(got.totals[0][0], sum - 12_345);
        assert_eq!(got.noisy_counts[0], count + 3);
    }

    #[test]
    fn empty_sets() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut p1 = SumSenderParty::new(p1_of(vec![], 10), 8, release(5, 1, calls.clone()));
        let mut p2 = SumReceiverParty::new(p2_of(vec![], 10), 1, 8, vec![(-(1 << 20), 1 << 40)]);
        pump(&mut p1, &mut p2, |_| {}).unwrap();
        let got = p2.finish().unwrap();
        assert_eq!((got.totals[0][0], got.noisy_counts[0]), (5, 1));
        assert_eq!(*calls.lock().unwrap(), vec![0]);
    }

    #[test]
    fn failed_release_sends_nothing() {
        let (x, y, _, _) = sets();
        let mut p1 = SumSenderParty::new(
            p1_of(x, 10_000),
            64,
            Box::new(|_| Err(NodeError::protocol("", "privacy budget exhausted"))),
        );
        let mut p2 = SumReceiverParty::new(p2_of(y, 10_000), 1, 64, vec![(-(1 << 20), 1 << 40)]);
        let err = pump(&mut p1, &mut p2, |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("privacy budget exhausted"),
            "{err}"
        );
        // Nothing more leaves P1, and P2 never got an answer.
        assert!(p1.next_outgoing().unwrap().is_none());
        assert!(!p2.incoming_done());
        assert!(p2.finish().is_err());
    }

    #[test]
    fn early_or_malformed_answers_are_rejected() {
        let outcome = |ciphertext: Vec<u8>| PsiMessage {
            body: Some(psi_message::Body::SumOutcome(SumOutcome {
                ciphertext,
                noisy_count: vec![1],
                sum_noise: vec![info(1.0)],
                count_noise: Some(info(1.0)),
            })),
        };
        let mut p2 = SumReceiverParty::new(
            p2_of(vec![(id(1), 1)], 10),
            1,
            8,
            vec![(-(1 << 20), 1 << 40)],
        );
        let err = p2.on_incoming(outcome(vec![0; 64])).unwrap_err();
        assert!(err.to_string().contains("arrived before"), "{err}");

        // Complete P2's side, then send a short ciphertext.
        let mut p2 = SumReceiverParty::new(
            p2_of(vec![(id(1), 1)], 10),
            1,
            8,
            vec![(-(1 << 20), 1 << 40)],
        );
        p2.on_incoming(header(PsiStream::SumIds, 0, 1)).unwrap();
        while p2.next_outgoing().unwrap().is_some() {}
        let err = p2.on_incoming(outcome(vec![0; 63])).unwrap_err();
        assert!(err.to_string().contains("63 bytes"), "{err}");
        p2.on_incoming(outcome(vec![0; 64])).unwrap();
        assert!(p2.incoming_done());
        assert!(p2.on_incoming(outcome(vec![0; 64])).is_err());
    }

    #[test]
    fn unexpected_streams_are_rejected() {
        let mut p2 = SumReceiverParty::new(p2_of(vec![], 10), 1, 8, vec![(-(1 << 20), 1 << 40)]);
        assert!(
            p2.on_incoming(header(PsiStream::ReceiverBlinded, 1, 1))
                .is_err()
        );
        assert!(p2.on_incoming(PsiMessage { body: None }).is_err());
        let mut p1 = SumSenderParty::new(p1_of(vec![id(1)], 10), 8, release(0, 0, Arc::default()));
        assert!(p1.on_incoming(header(PsiStream::SumIds, 1, 1)).is_err());
        assert!(
            p1.on_incoming(batch(PsiStream::DoubleBlinded, 0, vec![]))
                .is_err()
        );
        // A pairs header without a valid public key.
        let err = p1
            .on_incoming(header(PsiStream::SumPairs, 1, 1))
            .unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
    }

    fn sum_job(upper: f64, decimals: u32, epsilon: f64) -> PsiSum {
        let dp = parley_jobs::params::Dp {
            epsilon,
            mechanism: parley_jobs::params::Mechanism::Laplace,
            delta: 0.0,
        };
        PsiSum {
            min_intersection: 0,
            sum_dp: dp,
            count_dp: dp,
            p1: 0,
            p2: 1,
            columns: vec![parley_jobs::kinds::psi_sum::SumColumn {
                name: "amount".into(),
                bounds: parley_jobs::params::Bounds {
                    lower: 0.0,
                    upper,
                    decimals,
                },
            }],
            bound: parley_jobs::kinds::psi::Contribution {
                max_records_per_identifier: 1,
                sender_columns: 1,
            },
            profile: Default::default(),
        }
    }

    fn range(k: &PsiSum, n: u64) -> Result<(i64, i64), NodeError> {
        let cal = calibrated("job-1", &k.sum_dp, k.columns[0].bounds.sensitivity_units()).unwrap();
        decrypt_ranges("job-1", k, &[cal], n).map(|r| r[0])
    }

    #[test]
    fn the_decryption_range_covers_the_sum_and_its_noise() {
        let k = sum_job(500.0, 2, 1.0);
        let (min, max) = range(&k, 1000).unwrap();
        // Laplace at sensitivity 50,000 units: the 1e-9 tail is about 50,000 × ln(1e9).
        assert!(min < -1_000_000 && min > -2_000_000, "{min}");
        assert_eq!(max, 1000 * 50_000 - min);
    }

    #[test]
    fn a_range_p2_cannot_decrypt_is_refused_before_anything_runs() {
        // 10^7 identifiers × 10^6 units is about 2^43 values.
        let err = range(&sum_job(10_000.0, 2, 1.0), 10_000_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 2^42 P2 can decrypt"), "{err}");
        assert!(err.contains("psi.upper"), "{err}");
        // A tiny epsilon makes the noise bound overflow-sized: refused, not wrapped around.
        let err = range(&sum_job(1.0, 0, 1e-300), 10).unwrap_err().to_string();
        assert!(
            err.contains("P2 can decrypt") || err.contains("DP release"),
            "{err}"
        );
    }

    #[test]
    fn batches_fit_one_chunk() {
        let p2 = SumReceiverParty::new(p2_of(vec![], 10), 1, 1 << 30, vec![(-(1 << 20), 1 << 40)]);
        assert_eq!(p2.pair_batch, parley_proto::MAX_CHUNK_BYTES / 96);
        let p2 = SumReceiverParty::new(p2_of(vec![], 10), 1, 1 << 30, vec![(0, 1); 3]);
        assert_eq!(p2.pair_batch, parley_proto::MAX_CHUNK_BYTES / (32 + 3 * 64));
        assert_eq!(p2.point_batch, parley_proto::MAX_CHUNK_BYTES / 32);
    }
}
