//! `secure_sum` jobs: this node's part in a secure aggregation (`parley_crypto::secagg`, the
//! client role) of per-category counts and clamped sums across many nodes, with the
//! coordinator as the server.
//!
//! # What it computes and who learns what
//! Each participant turns its dataset into one vector of u64 words ([`local_vector`]): for each
//! output category (the declared ones in order, then `other` when rows outside them are
//! bucketed) the row count (if `count`), then the sum of the value column clamped to
//! `[lower, upper]` in integer units of 10^-decimals (if `value_column` is set; an i64 stored
//! as u64, two's complement). The coordinator learns only the sum (mod 2^64) of the vectors of
//! the nodes whose masked inputs arrived, and who took part in each round; no node learns
//! anything about another node's vector. The sum is exact: this node version does not add
//! distributed DP noise, and refuses jobs that ask for it.
//!
//! # Contract with the coordinator
//! * Participants are indexed `1..=n` in the order of `spec.participants`; `n` is their
//!   number; the Shamir threshold is [`threshold`]; the vector length is [`vector_len`]; the
//!   protocol's job id is the job id.
//! * On start the node uploads round 0 (its signed key advertisement), then answers each
//!   `SecAggRound` for this job: round 1 (every advertisement) with its encrypted shares,
//!   round 2 (the shares addressed to it) with its masked input, round 3 (the survivors
//!   `U3`) with its unmasking shares. Then the job ends at this node with no outcome: the
//!   coordinator releases the result. A round other than the one expected, or a message that
//!   does not decode, fails the job. Fields a round does not use are ignored.
//!
//! # Threat model and assumptions
//! Those of `parley_crypto::secagg`: a semi-honest coordinator that may collude with fewer
//! than `t` nodes, at most `n − t` dropouts. Peer keys come only from key bindings verified
//! against the federation CA when the offer was accepted, so the coordinator cannot
//! substitute a participant's signing key. Each node's policy bounds how few contributors a
//! released sum may cover (`min_contributors`).
//!
//! # Reference
//! K. Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
//! Learning", ACM CCS 2017. <https://eprint.iacr.org/2017/281>

use std::sync::Arc;
use std::time::Instant;

use parley_crypto::secagg::{
    AdvertiseKeys, Client, ClientAwaitingAdvertisements, ClientAwaitingShares,
    ClientAwaitingSurvivors, EncryptedShare, MAX_JOB_ID_LEN, Params, PeerKeys, SEALED_SHARE_LEN,
    SIGNATURE_LEN, Signer,
};
use parley_proto::{
    JobProgress, JobResult, NodeMessage, OtherRows, SecAggRound, SecAggUpload, SecureSumParams,
    node_message,
};
use rand::rngs::{StdRng, SysRng};
use rand::{CryptoRng, SeedableRng};
use tokio::runtime::Handle;

use crate::NodeError;
use crate::dataset::Dataset;
use crate::job::{JobIo, JobRun};
use crate::stats::{row_categories, to_units};

/// Refusal reason for a job that asks for distributed DP with another mechanism.
pub const DP_UNAVAILABLE: &str =
    "distributed DP for secure_sum supports mechanism = \"gaussian\" (with a delta) only";

/// The distributed-DP shares of a job: for the count words (sensitivity 1) and the sum words
/// (sensitivity = the clamping bound in units), in that order, whichever the job releases;
/// the (ε, δ) budget is split evenly between them in zCDP and provisioned for any number of
/// contributors from `min_contributors` to `n` (see `parley_crypto::dp::DistributedGaussian`).
pub fn dp_plan(
    p: &SecureSumParams,
    n: u32,
    epsilon: f64,
    delta: f64,
) -> Result<Vec<parley_crypto::dp::DistributedGaussian>, String> {
    if p.dp
        .is_some_and(|d| d.mechanism() != parley_proto::DpMechanism::Gaussian)
    {
        return Err(DP_UNAVAILABLE.to_owned());
    }
    let mut sens = Vec::new();
    if p.count {
        sens.push(1);
    }
    if !p.value_column.is_empty() {
        sens.push(crate::stats::sum_sensitivity(p.lower, p.upper, p.decimals));
    }
    parley_crypto::dp::distributed_plan(epsilon, delta, &sens, min_contributors(p, n), n)
        .map_err(|e| format!("secure_sum.dp: {e}"))
}

/// Adds this node's noise shares to its vector (count words and sum words per category).
pub fn add_noise(p: &SecureSumParams, n: u32, input: &mut [u64]) -> Result<(), NodeError> {
    let Some(dp) = &p.dp else { return Ok(()) };
    let plan = dp_plan(p, n, dp.epsilon, dp.delta).map_err(|e| NodeError::protocol("", &e))?;
    let words = words_per_category(p);
    let categories = input.len() / words.max(1);
    for (w, share) in plan.iter().enumerate() {
        let noise = share
            .share(categories)
            .map_err(|e| NodeError::protocol("", &format!("DP noise share: {e}")))?;
        for (c, z) in noise.into_iter().enumerate() {
            let slot = &mut input[c * words + w];
            *slot = slot.wrapping_add(z as u64);
        }
    }
    Ok(())
}

/// The job's Shamir threshold `t` for `n` participants: `params.threshold` if set, else
/// `⌊2n/3⌋ + 1`.
pub fn threshold(p: &SecureSumParams, n: u32) -> u32 {
    if p.threshold != 0 {
        p.threshold
    } else {
        parley_crypto::secagg::Params::default_threshold(n)
    }
}

/// The fewest contributors the job releases a sum of: `params.min_contributors` if set, else
/// the threshold.
pub fn min_contributors(p: &SecureSumParams, n: u32) -> u32 {
    if p.min_contributors != 0 {
        p.min_contributors
    } else {
        threshold(p, n)
    }
}

/// Words per category: the count (if asked), then the sum (if a value column is set).
fn words_per_category(p: &SecureSumParams) -> usize {
    usize::from(p.count) + usize::from(!p.value_column.is_empty())
}

/// Words in every participant's vector: (declared categories, plus one for `other` when rows
/// outside them are bucketed) × (count? + sum?).
pub fn vector_len(p: &SecureSumParams) -> usize {
    let categories = p.categories.len() + usize::from(p.other() == OtherRows::Bucket);
    categories * words_per_category(p)
}

/// This node's input vector (layout in the module docs). Errors name the dataset and column,
/// never a value.
pub fn local_vector(dataset: &Dataset, p: &SecureSumParams) -> Result<Vec<u64>, NodeError> {
    let segments = dataset.segments(&p.segment_column).ok_or_else(|| {
        NodeError::protocol(
            "",
            &format!(
                "dataset '{}' has no segment column '{}'",
                dataset.name(),
                p.segment_column
            ),
        )
    })?;
    let values = if p.value_column.is_empty() {
        None
    } else {
        Some(dataset.values(&p.value_column).ok_or_else(|| {
            NodeError::protocol(
                "",
                &format!(
                    "dataset '{}' has no value column '{}'",
                    dataset.name(),
                    p.value_column
                ),
            )
        })?)
    };
    let bucket = p.other() == OtherRows::Bucket;
    let rows = row_categories(segments, &p.categories, bucket);
    let k = p.categories.len() + usize::from(bucket);
    let mut counts = vec![0u64; k];
    let mut sums = vec![0i64; k];
    for (i, r) in rows.iter().enumerate() {
        let Some(r) = *r else { continue };
        counts[r] += 1;
        if let Some(v) = values.and_then(|v| v.get(i)) {
            sums[r] = sums[r].saturating_add(to_units(*v, p.lower, p.upper, p.decimals));
        }
    }
    let mut out = Vec::with_capacity(vector_len(p));
    for (count, sum) in counts.into_iter().zip(sums) {
        if p.count {
            out.push(count);
        }
        if values.is_some() {
            // Two's complement: the coordinator reads the summed word back as an i64.
            out.push(sum as u64);
        }
    }
    Ok(out)
}

/// Encoded length of a secure-aggregation message header for `job_id`.
fn header_len(job_id: &str) -> usize {
    // Magic, version, round, sender, job id length, job id.
    4 + 1 + 1 + 4 + 2 + job_id.len()
}

/// An upper bound on the largest link message of a run (either direction), in bytes.
fn largest_message(job_id: &str, n: usize, vector_len: usize) -> usize {
    // Per repeated element: tag and length varint. Plus the job id, round and framing.
    const PER_ITEM: usize = 6;
    const FRAMING: usize = 64 + MAX_JOB_ID_LEN;
    let h = header_len(job_id);
    let advert = h + 32 + 32 + SIGNATURE_LEN;
    let share = h + 4 + SEALED_SHARE_LEN;
    let masked = h + 4 + vector_len.saturating_mul(8) + SIGNATURE_LEN;
    let unmask = h + 4 + n.saturating_mul(4 + 1 + 64) + SIGNATURE_LEN;
    let per_n = |len: usize| n.saturating_mul(len + PER_ITEM);
    [
        per_n(advert),
        per_n(share),
        masked + PER_ITEM,
        unmask + PER_ITEM,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .saturating_add(FRAMING)
}

/// The secure-aggregation parameters of a job with `n` participants, checked: vector layout,
/// threshold, and that every message of the run fits in one link message. `Err` is a refusal
/// reason naming the setting at fault.
pub fn secagg_params(job_id: &str, p: &SecureSumParams, n: u32) -> Result<Params, String> {
    if let Some(dp) = &p.dp {
        dp_plan(p, n, dp.epsilon, dp.delta)?;
    }
    let len = vector_len(p);
    if len == 0 {
        return Err(
            "the secure_sum job releases nothing: set count = true and/or a value_column, with at least one category or other = bucket"
                .to_owned(),
        );
    }
    let params = Params {
        job_id: job_id.to_owned(),
        n,
        threshold: threshold(p, n),
        vector_len: len,
        max_vector_len: len,
    };
    params
        .validate()
        .map_err(|e| format!("invalid secure_sum parameters: {e}"))?;
    let largest = largest_message(job_id, n as usize, len);
    if largest > parley_proto::MAX_MESSAGE_BYTES {
        return Err(format!(
            "a secure_sum with {n} participants and {len} words per vector needs link messages of up to {largest} bytes, more than the {} allowed; use fewer categories or participants",
            parley_proto::MAX_MESSAGE_BYTES
        ));
    }
    Ok(params)
}

/// Where a [`SecureSumParty`] is in the protocol.
enum Stage {
    AwaitingAdvertisements(Box<ClientAwaitingAdvertisements>),
    AwaitingShares(ClientAwaitingShares),
    AwaitingSurvivors(ClientAwaitingSurvivors),
    Done,
}

/// One node's part in a secure aggregation, advanced by one coordinator round at a time. Holds
/// the node's input vector until round 2; `Debug` prints only the job and the stage.
pub struct SecureSumParty {
    job_id: String,
    n: usize,
    input: Vec<u64>,
    stage: Stage,
}

impl std::fmt::Debug for SecureSumParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureSumParty")
            .field("job_id", &self.job_id)
            .field("expected_round", &self.expected_round())
            .finish_non_exhaustive()
    }
}

impl SecureSumParty {
    /// Participant `index` (1-based) of the run `params`, signing with `signer` (the node's
    /// Ed25519 key), trusting `peer_keys` (verified Ed25519 keys by index) and contributing
    /// `input`. Returns the party and its round-0 upload.
    pub fn new<R: CryptoRng + ?Sized>(
        params: Params,
        index: u32,
        signer: Signer,
        peer_keys: PeerKeys,
        input: Vec<u64>,
        rng: &mut R,
    ) -> Result<(SecureSumParty, SecAggUpload), NodeError> {
        let job_id = params.job_id.clone();
        let n = params.n as usize;
        if input.len() != params.vector_len {
            return Err(NodeError::protocol(
                &job_id,
                &format!(
                    "the local vector has {} words, the job expects {}",
                    input.len(),
                    params.vector_len
                ),
            ));
        }
        let client = Client::new(params, index, signer, peer_keys, rng).map_err(|e| {
            NodeError::protocol(&job_id, &format!("secure aggregation set-up: {e}"))
        })?;
        let (next, advert) = client.round0();
        let upload = SecAggUpload {
            job_id: job_id.clone(),
            round: 0,
            messages: vec![advert.to_bytes()],
        };
        let party = SecureSumParty {
            job_id,
            n,
            input,
            stage: Stage::AwaitingAdvertisements(Box::new(next)),
        };
        Ok((party, upload))
    }

    /// The round the party waits for (1, 2 or 3), or `None` once it has sent round 3.
    pub fn expected_round(&self) -> Option<u32> {
        match self.stage {
            Stage::AwaitingAdvertisements(_) => Some(1),
            Stage::AwaitingShares(_) => Some(2),
            Stage::AwaitingSurvivors(_) => Some(3),
            Stage::Done => None,
        }
    }

    fn err(&self, detail: &str) -> NodeError {
        NodeError::protocol(&self.job_id, detail)
    }

    /// Checks a round's message count and decodes each message.
    fn decode<T, E: std::fmt::Display>(
        &self,
        round: u32,
        what: &str,
        messages: &[Vec<u8>],
        decode: impl Fn(&[u8]) -> Result<T, E>,
    ) -> Result<Vec<T>, NodeError> {
        if messages.len() > self.n {
            return Err(self.err(&format!(
                "secure aggregation round {round}: the coordinator sent {} {what}s for {} participants",
                messages.len(),
                self.n
            )));
        }
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                decode(m).map_err(|e| {
                    self.err(&format!(
                        "secure aggregation round {round}: {what} {} of {} from the coordinator does not decode: {e}",
                        i + 1,
                        messages.len()
                    ))
                })
            })
            .collect()
    }

    /// Runs the round the coordinator sent and returns this node's upload for it. Fails on a
    /// round other than [`expected_round`](Self::expected_round), on a message that does not
    /// decode, and on anything the protocol rejects; the party is then finished.
    pub fn on_round(&mut self, msg: SecAggRound) -> Result<SecAggUpload, NodeError> {
        let expected = self.expected_round();
        if expected != Some(msg.round) {
            let wanted = expected.map_or("no further round".to_owned(), |r| format!("round {r}"));
            self.stage = Stage::Done;
            return Err(self.err(&format!(
                "the coordinator sent secure aggregation round {} while this node expects {wanted}",
                msg.round
            )));
        }
        let round = msg.round;
        let failed = |job: &str, e: parley_crypto::secagg::SecAggError| {
            NodeError::protocol(
                job,
                &format!("secure aggregation, answering round {round}: {e}"),
            )
        };
        let messages = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::AwaitingAdvertisements(state) => {
                let adverts = self.decode(
                    round,
                    "advertisement",
                    &msg.messages,
                    AdvertiseKeys::from_bytes,
                )?;
                let (next, shares) = state
                    .round1(&adverts)
                    .map_err(|e| failed(&self.job_id, e))?;
                self.stage = Stage::AwaitingShares(next);
                shares.iter().map(EncryptedShare::to_bytes).collect()
            }
            Stage::AwaitingShares(state) => {
                let shares = self.decode(
                    round,
                    "encrypted share",
                    &msg.messages,
                    EncryptedShare::from_bytes,
                )?;
                let input = std::mem::take(&mut self.input);
                let (next, masked) = state
                    .round2(&shares, &input)
                    .map_err(|e| failed(&self.job_id, e))?;
                self.stage = Stage::AwaitingSurvivors(next);
                vec![masked.to_bytes()]
            }
            Stage::AwaitingSurvivors(state) => {
                if msg.survivors.len() > self.n {
                    return Err(self.err(&format!(
                        "secure aggregation round 3: the coordinator names {} survivors for {} participants",
                        msg.survivors.len(),
                        self.n
                    )));
                }
                let unmask = state
                    .round3(&msg.survivors)
                    .map_err(|e| failed(&self.job_id, e))?;
                vec![unmask.to_bytes()]
            }
            Stage::Done => return Err(self.err("secure aggregation already finished")),
        };
        Ok(SecAggUpload {
            job_id: self.job_id.clone(),
            round,
            messages,
        })
    }
}

/// What ended a wait on the link.
enum Wait<T> {
    Done(T),
    Cancelled,
    Deadline,
}

/// Runs this node's part of a `secure_sum` job on the current (blocking) thread: computes the
/// local vector, then answers the coordinator's rounds until round 3 is sent. Returns no
/// result (the coordinator releases it). Honours cancellation and the node's job deadline.
pub(crate) fn run(run: JobRun, mut io: JobIo, rt: Handle) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = run.job_id.clone();
    let p = run
        .spec
        .secure_sum
        .as_ref()
        .ok_or_else(|| NodeError::protocol(&job, "the job has no secure_sum parameters"))?;
    let n = u32::try_from(run.spec.participants.len())
        .map_err(|_| NodeError::protocol(&job, "too many participants"))?;
    let params = secagg_params(&job, p, n).map_err(|e| NodeError::protocol(&job, &e))?;
    let index = run
        .spec
        .participants
        .iter()
        .position(|q| q.node == run.me)
        .and_then(|i| u32::try_from(i + 1).ok())
        .ok_or_else(|| {
            NodeError::protocol(&job, &format!("node '{}' is not a participant", run.me))
        })?;
    let mut input = local_vector(&run.dataset, p).map_err(|e| e.for_job(&job))?;
    if p.dp.is_some() {
        // Each node pays for the release of the noisy total before anything leaves it.
        run.charge(&io, &rt)?;
        add_noise(p, n, &mut input).map_err(|e| e.for_job(&job))?;
    }
    let secrets = Arc::clone(&run.secrets);
    let signer: Signer = Arc::new(move |m: &[u8]| secrets.sign_ed25519(m));
    let mut rng = StdRng::try_from_rng(&mut SysRng).map_err(|_| {
        NodeError::protocol(
            &job,
            "the operating system's random number generator failed",
        )
    })?;
    tracing::info!(job = %job, n, threshold = params.threshold, words = params.vector_len, index, "secure aggregation starting");
    let (mut party, first) = SecureSumParty::new(
        params,
        index,
        signer,
        run.peer_keys.clone(),
        input,
        &mut rng,
    )?;
    drop(rng);

    let deadline = tokio::time::Instant::now() + run.deadline;
    let deadline_err = |waiting: &str| {
        NodeError::protocol(
            &job,
            &format!(
                "secure aggregation did not finish within the node's job deadline of {} s ([limits] job_deadline_secs); it was {waiting}",
                run.deadline.as_secs()
            ),
        )
    };
    let upload = |io: &JobIo, up: SecAggUpload| -> Result<(), NodeError> {
        let round = up.round;
        let bytes: usize = up.messages.iter().map(Vec::len).sum();
        tracing::debug!(job = %job, round, messages = up.messages.len(), bytes, "secure aggregation upload");
        let msg = NodeMessage {
            body: Some(node_message::Body::Secagg(up)),
        };
        let outbox = io.outbox.clone();
        let cancel = io.cancel.clone();
        let waited = rt.block_on(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Wait::Cancelled,
                _ = tokio::time::sleep_until(deadline) => Wait::Deadline,
                r = outbox.send(msg) => match r {
                    Ok(()) => Wait::Done(()),
                    Err(_) => Wait::Cancelled,
                },
            }
        });
        match waited {
            Wait::Done(()) => {}
            Wait::Cancelled => return Err(NodeError::Cancelled),
            Wait::Deadline => return Err(deadline_err(&format!("sending round {round}"))),
        }
        // Best effort: progress is dropped rather than delaying the protocol.
        let _ = io.outbox.try_send(NodeMessage {
            body: Some(node_message::Body::Progress(JobProgress {
                job_id: job.clone(),
                node: String::new(),
                stage: format!("secagg round {round}"),
                done: u64::from(round) + 1,
                total: 4,
            })),
        });
        Ok(())
    };

    upload(&io, first)?;
    while let Some(round) = party.expected_round() {
        let cancel = io.cancel.clone();
        let inbox = &mut io.secagg;
        let waited = rt.block_on(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Wait::Cancelled,
                _ = tokio::time::sleep_until(deadline) => Wait::Deadline,
                m = inbox.recv() => match m {
                    Some(m) => Wait::Done(m),
                    None => Wait::Cancelled,
                },
            }
        });
        let msg = match waited {
            Wait::Done(m) => m,
            Wait::Cancelled => return Err(NodeError::Cancelled),
            Wait::Deadline => return Err(deadline_err(&format!("waiting for round {round}"))),
        };
        let up = party.on_round(msg)?;
        upload(&io, up)?;
    }
    tracing::info!(job = %job, elapsed_ms = started.elapsed().as_millis() as u64, "secure aggregation finished at this node");
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{ColumnConfig, ColumnKind, DatasetConfig};
    use parley_crypto::keys::NodeSecrets;
    use parley_crypto::normalize::{Normalizer, Profile};
    use parley_crypto::secagg::{MaskedInput, Server, UnmaskShares};
    use std::io::Write as _;

    /// Loads `csv` (columns id, email, region, amount) as a dataset.
    fn dataset(csv: &str) -> Dataset {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crm.csv");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(csv.as_bytes()))
            .expect("write csv");
        let cfg = DatasetConfig {
            name: "crm".to_owned(),
            path,
            key_column: "id".to_owned(),
            max_bad_row_fraction: 0.0,
            delimiter: None,
            budget: None,
            columns: [
                ("email", ColumnKind::Email),
                ("region", ColumnKind::Segment),
                ("amount", ColumnKind::Value),
            ]
            .into_iter()
            .map(|(name, kind)| ColumnConfig {
                name: name.to_owned(),
                kind,
            })
            .collect(),
        };
        let normalizer = Normalizer::new(Profile::Google, "US").expect("normalizer");
        Dataset::load(&cfg, &normalizer).expect("dataset loads")
    }

    const CSV_A: &str = "id,email,region,amount\n\
        1,a@example.com,north,12.5\n\
        2,b@example.com,south,3\n\
        3,c@example.com,north,250\n\
        4,d@example.com,east,7.25\n\
        5,e@example.com,north,-4\n";

    fn params(bucket: bool, count: bool, value: bool) -> SecureSumParams {
        let mut p = SecureSumParams {
            segment_column: "region".into(),
            categories: vec!["north".into(), "south".into(), "west".into()],
            count,
            value_column: if value {
                "amount".into()
            } else {
                String::new()
            },
            lower: 0.0,
            upper: 100.0,
            decimals: 2,
            ..Default::default()
        };
        p.set_other(if bucket {
            OtherRows::Bucket
        } else {
            OtherRows::Drop
        });
        p
    }

    #[test]
    fn thresholds() {
        let mut p = params(false, true, false);
        assert_eq!(threshold(&p, 2), 2);
        assert_eq!(threshold(&p, 3), 3);
        assert_eq!(threshold(&p, 4), 3);
        assert_eq!(threshold(&p, 10), 7);
        assert_eq!(min_contributors(&p, 10), 7);
        p.threshold = 6;
        p.min_contributors = 8;
        assert_eq!(threshold(&p, 10), 6);
        assert_eq!(min_contributors(&p, 10), 8);
    }

    #[test]
    fn vector_layout() {
        let ds = dataset(CSV_A);
        // Counts and sums, with the other bucket: north, south, west, other.
        let p = params(true, true, true);
        assert_eq!(vector_len(&p), 8);
        let v = local_vector(&ds, &p).unwrap();
        // north: 12.5 + 100 (clamped) + 0 (clamped) = 112.50; east goes to other.
        assert_eq!(v, vec![3, 11_250, 1, 300, 0, 0, 1, 725]);
        // Counts only, other rows dropped.
        let p = params(false, true, false);
        assert_eq!(vector_len(&p), 3);
        assert_eq!(local_vector(&ds, &p).unwrap(), vec![3, 1, 0]);
        // Sums only; a negative clamp range is stored as two's complement.
        let mut p = params(false, false, true);
        p.lower = -10.0;
        p.decimals = 0;
        assert_eq!(vector_len(&p), 3);
        assert_eq!(
            local_vector(&ds, &p).unwrap(),
            vec![(13 + 100 - 4) as u64, 3, 0]
        );
        let mut p = params(false, false, true);
        p.lower = -10.0;
        p.upper = -1.0;
        p.decimals = 0;
        let v = local_vector(&ds, &p).unwrap();
        assert_eq!(v[0] as i64, -1 - 1 - 4);
        // Nothing asked.
        assert_eq!(vector_len(&params(true, false, false)), 0);
    }

    #[test]
    fn missing_columns_are_named() {
        let ds = dataset(CSV_A);
        let mut p = params(false, true, false);
        p.segment_column = "amount".into();
        let e = local_vector(&ds, &p).unwrap_err().to_string();
        assert!(e.contains("no segment column 'amount'"), "{e}");
        let mut p = params(false, true, true);
        p.value_column = "region".into();
        let e = local_vector(&ds, &p).unwrap_err().to_string();
        assert!(e.contains("no value column 'region'"), "{e}");
    }

    #[test]
    fn params_are_checked() {
        let p = params(true, true, true);
        let ok = secagg_params("job-1", &p, 4).unwrap();
        assert_eq!((ok.n, ok.threshold, ok.vector_len), (4, 3, 8));
        assert_eq!(ok.max_vector_len, 8);
        let mut dp = p.clone();
        dp.dp = Some(parley_proto::DpParams::default());
        assert_eq!(secagg_params("job-1", &dp, 4).unwrap_err(), DP_UNAVAILABLE);
        let e = secagg_params("job-1", &params(false, false, false), 4).unwrap_err();
        assert!(e.contains("releases nothing"), "{e}");
        let mut low = p.clone();
        low.threshold = 2;
        let e = secagg_params("job-1", &low, 4).unwrap_err();
        assert!(e.contains("threshold 2 for 4 participants"), "{e}");
        let e = secagg_params("job-1", &p, 1).unwrap_err();
        assert!(e.contains("participants"), "{e}");
        let mut wide = p.clone();
        wide.categories = (0..100_000).map(|i| format!("c{i}")).collect();
        let e = secagg_params("job-1", &wide, 4).unwrap_err();
        assert!(e.contains("link messages"), "{e}");
    }

    struct Node {
        secrets: Arc<NodeSecrets>,
    }

    impl Node {
        fn signer(&self) -> Signer {
            let s = Arc::clone(&self.secrets);
            Arc::new(move |m: &[u8]| s.sign_ed25519(m))
        }
    }

    fn round(job: &str, round: u32, messages: Vec<Vec<u8>>, survivors: Vec<u32>) -> SecAggRound {
        SecAggRound {
            job_id: job.to_owned(),
            round,
            messages,
            survivors,
        }
    }

    /// Four nodes' parties against the secure-aggregation server, over the proto messages
    /// the link carries: the server's sum is the sum of the local vectors.
    #[test]
    fn four_nodes_sum_their_vectors() {
        let csvs = [
            CSV_A,
            "id,email,region,amount\n1,a@example.com,south,1\n2,b@example.com,west,2.5\n",
            "id,email,region,amount\n1,a@example.com,elsewhere,99.99\n",
            "id,email,region,amount\n1,a@example.com,north,0.01\n2,b@example.com,north,1000\n",
        ];
        let job = "job-secagg";
        let p = params(true, true, true);
        let n = 4u32;
        let params = secagg_params(job, &p, n).unwrap();
        let nodes: Vec<Node> = (0..n)
            .map(|_| Node {
                secrets: Arc::new(NodeSecrets::generate().unwrap()),
            })
            .collect();
        let keys: PeerKeys = nodes
            .iter()
            .zip(1..)
            .map(|(node, i)| (i, node.secrets.ed25519_public()))
            .collect();
        let inputs: Vec<Vec<u64>> = csvs
            .iter()
            .map(|csv| local_vector(&dataset(csv), &p).unwrap())
            .collect();
        let mut expected = vec![0u64; vector_len(&p)];
        for v in &inputs {
            for (e, x) in expected.iter_mut().zip(v) {
                *e = e.wrapping_add(*x);
            }
        }

        let mut rng = StdRng::try_from_rng(&mut SysRng).unwrap();
        let mut server = Server::new(params.clone(), keys.clone()).unwrap();
        let mut parties = Vec::new();
        for ((node, input), i) in nodes.iter().zip(&inputs).zip(1..) {
            let (party, up) = SecureSumParty::new(
                params.clone(),
                i,
                node.signer(),
                keys.clone(),
                input.clone(),
                &mut rng,
            )
            .unwrap();
            assert_eq!((up.round, up.messages.len()), (0, 1));
            server
                .add_advertisement(AdvertiseKeys::from_bytes(&up.messages[0]).unwrap())
                .unwrap();
            parties.push(party);
        }
        let (mut server, adverts) = server.finish_round0().unwrap();
        let adverts: Vec<Vec<u8>> = adverts.iter().map(AdvertiseKeys::to_bytes).collect();
        for (party, i) in parties.iter_mut().zip(1..) {
            let up = party
                .on_round(round(job, 1, adverts.clone(), vec![]))
                .unwrap();
            assert_eq!((up.round, up.messages.len()), (1, 4));
            let shares = up
                .messages
                .iter()
                .map(|m| EncryptedShare::from_bytes(m).unwrap())
                .collect();
            server.add_shares(i, shares).unwrap();
        }
        let (mut server, forwarded) = server.finish_round1().unwrap();
        for (party, i) in parties.iter_mut().zip(1..) {
            let mine = forwarded[&i].iter().map(EncryptedShare::to_bytes).collect();
            let up = party.on_round(round(job, 2, mine, vec![])).unwrap();
            assert_eq!((up.round, up.messages.len()), (2, 1));
            server
                .add_masked_input(
                    MaskedInput::from_bytes(&up.messages[0], params.vector_len).unwrap(),
                )
                .unwrap();
        }
        let (mut server, survivors) = server.finish_round2().unwrap();
        for party in &mut parties {
            let up = party
                .on_round(round(job, 3, vec![], survivors.clone()))
                .unwrap();
            assert_eq!((up.round, up.messages.len()), (3, 1));
            server
                .add_unmask(UnmaskShares::from_bytes(&up.messages[0]).unwrap())
                .unwrap();
            assert_eq!(party.expected_round(), None);
        }
        assert_eq!(server.finish().unwrap(), expected);
        // north count 3+0+0+2, sum 112.50+0+0+(0.01+100).
        assert_eq!(expected[0], 5);
        assert_eq!(expected[1], 11_250 + 10_001);
    }

    fn party(job: &str) -> SecureSumParty {
        let p = params(false, true, false);
        let params = secagg_params(job, &p, 2).unwrap();
        let secrets: Vec<Arc<NodeSecrets>> = (0..2)
            .map(|_| Arc::new(NodeSecrets::generate().unwrap()))
            .collect();
        let keys: PeerKeys = secrets
            .iter()
            .zip(1..)
            .map(|(s, i)| (i, s.ed25519_public()))
            .collect();
        let node = Node {
            secrets: Arc::clone(&secrets[0]),
        };
        let mut rng = StdRng::try_from_rng(&mut SysRng).unwrap();
        SecureSumParty::new(params, 1, node.signer(), keys, vec![1, 2, 3], &mut rng)
            .unwrap()
            .0
    }

    #[test]
    fn wrong_round_and_bad_messages_fail_precisely() {
        let mut a = party("job-x");
        let e = a.on_round(round("job-x", 2, vec![], vec![])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job job-x: the coordinator sent secure aggregation round 2 while this node expects round 1"
        );
        assert_eq!(a.expected_round(), None);

        let mut b = party("job-x");
        let e = b
            .on_round(round("job-x", 1, vec![vec![1, 2, 3]], vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "job job-x: secure aggregation round 1: advertisement 1 of 1 from the coordinator does not decode:"
            ),
            "{e}"
        );
        let mut c = party("job-x");
        let e = c
            .on_round(round("job-x", 1, vec![vec![0; 8]; 3], vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sent 3 advertisements for 2 participants"),
            "{e}"
        );
        // Our own advertisement missing: we were dropped.
        let mut d = party("job-x");
        let e = d
            .on_round(round("job-x", 1, vec![], vec![]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "secure aggregation, answering round 1: round 0: our own message is missing"
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_input_length_is_refused() {
        let p = params(false, true, false);
        let params = secagg_params("j", &p, 2).unwrap();
        let s = Arc::new(NodeSecrets::generate().unwrap());
        let keys: PeerKeys = [(1, s.ed25519_public()), (2, s.ed25519_public())].into();
        let node = Node { secrets: s };
        let mut rng = StdRng::try_from_rng(&mut SysRng).unwrap();
        let e = SecureSumParty::new(params, 1, node.signer(), keys, vec![1], &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("local vector has 1 words, the job expects 3"),
            "{e}"
        );
    }
}
