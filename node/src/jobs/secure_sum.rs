//! `secure_sum` jobs: this node's part in a secure aggregation (`parley_crypto::secagg`, the
//! client role) of per-category counts and clamped sums across many nodes, with the
//! coordinator as the server.
//!
//! # What it computes and who learns what
//! Each participant turns its dataset into one vector of u64 words ([`local_vector`], in the
//! layout `parley_jobs::kinds::secure_sum` defines for node and coordinator alike). The
//! coordinator learns only the sum (mod 2^64) of the vectors of the nodes whose masked inputs
//! arrived, and who took part in each round; no node learns anything about another node's
//! vector. With `[secure_sum.dp]` this node charges its ledger, then adds its share of the
//! job's distributed discrete Gaussian ([`add_noise`]) before masking, so the released sum is
//! noisy; without it the sum is exact.
//!
//! # Contract with the coordinator
//! * Participants are indexed `1..=n` in the order of `spec.participants`; `n` is their
//!   number; the threshold, the vector length and the other protocol parameters are
//!   `SecureSum::secagg_params`; the protocol's job id is the job id.
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
    ClientAwaitingSurvivors, EncryptedShare, Params, PeerKeys, Signer,
};
use parley_jobs::kinds::secure_sum::SecureSum;
use parley_proto::{JobResult, SecAggRound, SecAggUpload};
use rand::rngs::{StdRng, SysRng};
use rand::{CryptoRng, SeedableRng};

use super::dp::bounded_row_categories;
use super::rounds::{self, RoundParty};
use super::wait::Waiter;
use super::{JobIo, JobRun, Links, segment_column, value_column};
use crate::NodeError;
use crate::dataset::Dataset;

/// Adds this node's noise shares (the job's one DP plan, `SecureSum::dp_plan`) to its vector:
/// count words and sum words per category.
pub fn add_noise(k: &SecureSum, input: &mut [u64]) -> Result<(), NodeError> {
    let plan = k.dp_plan().map_err(|e| NodeError::protocol("", &e))?;
    let words = k.words_per_category();
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

/// This node's input vector (the layout of `parley_jobs::kinds::secure_sum`). Errors name the
/// dataset and column, never a value.
pub fn local_vector(dataset: &Dataset, k: &SecureSum) -> Result<Vec<u64>, NodeError> {
    let at_fault = |e: String| NodeError::protocol("", &e);
    let segments = segment_column(dataset, &k.segment_column).map_err(at_fault)?;
    let values = match &k.value {
        None => None,
        Some(v) => Some((
            value_column(dataset, &v.column).map_err(at_fault)?,
            v.bounds,
        )),
    };
    // At most max_rows_per_person rows of each person count (the dp plan's sensitivity).
    let (rows, _) = bounded_row_categories(dataset, segments, &k.categories, k.max_rows_per_person);
    let cats = k.categories.output_len();
    let mut counts = vec![0u64; cats];
    let mut sums = vec![0i64; cats];
    for (i, r) in rows.iter().enumerate() {
        let Some(r) = *r else { continue };
        counts[r] += 1;
        if let Some((v, b)) = values.and_then(|(v, b)| Some((v.get(i)?, b))) {
            sums[r] = sums[r].saturating_add(b.units(*v));
        }
    }
    let mut out = Vec::with_capacity(k.vector_len());
    for (count, sum) in counts.into_iter().zip(sums) {
        if k.count {
            out.push(count);
        }
        if values.is_some() {
            // Two's complement: the coordinator reads the summed word back as an i64.
            out.push(sum as u64);
        }
    }
    Ok(out)
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

impl RoundParty for SecureSumParty {
    fn expected_round(&self) -> Option<u32> {
        SecureSumParty::expected_round(self)
    }
    fn on_round(&mut self, round: SecAggRound) -> Result<SecAggUpload, NodeError> {
        SecureSumParty::on_round(self, round)
    }
}

/// Checks at the offer that the columns the job reads exist in `ds` with the right kind.
pub(super) fn check_columns(ds: &Dataset, k: &SecureSum) -> Result<(), String> {
    segment_column(ds, &k.segment_column)?;
    k.value
        .as_ref()
        .map_or(Ok(()), |v| value_column(ds, &v.column).map(|_| ()))
}

/// Runs this node's part of a `secure_sum` job on the current (blocking) thread: computes the
/// local vector (charging the ledger and adding its noise share first when the job asks for
/// distributed DP), then answers the coordinator's rounds until round 3 is sent. Returns no
/// result (the coordinator releases it).
pub(super) fn run(
    run: &JobRun,
    k: &SecureSum,
    io: &mut JobIo,
    wait: &Waiter,
) -> Result<Option<JobResult>, NodeError> {
    let started = Instant::now();
    let job = run.job_id.clone();
    let Links::SecAgg { params, keys } = &run.links else {
        return Err(NodeError::protocol(
            &job,
            "secure_sum runs without the participants' verified keys",
        ));
    };
    let index = u32::try_from(run.index + 1)
        .map_err(|_| NodeError::protocol(&job, "too many participants"))?;
    let mut input = local_vector(&run.dataset, k).map_err(|e| e.for_job(&job))?;
    if k.dp.is_some() {
        // Each node pays for the release of the noisy total before anything leaves it.
        run.charge(io, wait)?;
        add_noise(k, &mut input).map_err(|e| e.for_job(&job))?;
    }
    let secrets = Arc::clone(&run.secrets);
    let signer: Signer = Arc::new(move |m: &[u8]| secrets.sign_ed25519(m));
    let mut rng = StdRng::try_from_rng(&mut SysRng).map_err(|_| {
        NodeError::protocol(
            &job,
            "the operating system's random number generator failed",
        )
    })?;
    tracing::info!(job = %job, n = k.n, threshold = params.threshold, words = params.vector_len, index, "secure aggregation starting");
    let (mut party, first) =
        SecureSumParty::new(params.clone(), index, signer, keys.clone(), input, &mut rng)?;
    drop(rng);
    rounds::drive(&mut party, first, 4, io, wait)?;
    tracing::info!(job = %job, elapsed_ms = started.elapsed().as_millis() as u64, "secure aggregation finished at this node");
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::jobs::test_support::dataset;
    use parley_crypto::keys::NodeSecrets;
    use parley_crypto::secagg::{MaskedInput, Server, UnmaskShares};
    use parley_proto::{OtherRows, SecureSumParams};

    use crate::jobs::test_support::CRM_CSV as CSV_A;

    /// The typed job for `p` with `n` participants. Two-node runs (below what a job may ask)
    /// exercise the party alone: the parameters are checked with three participants, then
    /// set for two.
    fn typed(p: &SecureSumParams, n: u32) -> Result<SecureSum, String> {
        let spec = parley_proto::JobSpec {
            kind: parley_proto::JobKind::SecureSum as i32,
            participants: (1..=n.max(3))
                .map(|i| parley_proto::Participant {
                    node: format!("n{i}"),
                    dataset: "crm".into(),
                    ..Default::default()
                })
                .collect(),
            params: Some(p.clone().into()),
            ..Default::default()
        };
        let job = parley_jobs::Job::try_from(&spec).map_err(|e| e.to_string())?;
        let parley_jobs::Kind::SecureSum(mut k) = job.kind else {
            unreachable!("a secure_sum spec")
        };
        if n < 3 {
            k.n = n;
            k.threshold = Params::default_threshold(n);
            k.min_contributors = k.threshold;
        }
        Ok(k)
    }

    fn t(p: &SecureSumParams) -> SecureSum {
        typed(p, 4).unwrap()
    }

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
            // Bounds go with a value column only.
            upper: if value { 100.0 } else { 0.0 },
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
        assert_eq!(typed(&p, 2).unwrap().threshold, 2);
        assert_eq!(typed(&p, 3).unwrap().threshold, 3);
        assert_eq!(typed(&p, 4).unwrap().threshold, 3);
        assert_eq!(typed(&p, 10).unwrap().threshold, 7);
        assert_eq!(typed(&p, 10).unwrap().min_contributors, 7);
        p.threshold = 6;
        p.min_contributors = 8;
        assert_eq!(typed(&p, 10).unwrap().threshold, 6);
        assert_eq!(typed(&p, 10).unwrap().min_contributors, 8);
    }

    #[test]
    fn vector_layout() {
        let ds = dataset(CSV_A);
        // Counts and sums, with the other bucket: north, south, west, other.
        let p = params(true, true, true);
        assert_eq!(t(&p).vector_len(), 8);
        let v = local_vector(&ds, &t(&p)).unwrap();
        // north: 12.5 + 100 (clamped) + 0 (clamped) = 112.50; east goes to other.
        assert_eq!(v, vec![3, 11_250, 1, 300, 0, 0, 1, 725]);
        // Counts only, other rows dropped.
        let p = params(false, true, false);
        assert_eq!(t(&p).vector_len(), 3);
        assert_eq!(local_vector(&ds, &t(&p)).unwrap(), vec![3, 1, 0]);
        // Sums only; a negative clamp range is stored as two's complement.
        let mut p = params(false, false, true);
        p.lower = -10.0;
        p.decimals = 0;
        assert_eq!(t(&p).vector_len(), 3);
        assert_eq!(
            local_vector(&ds, &t(&p)).unwrap(),
            vec![(13 + 100 - 4) as u64, 3, 0]
        );
        let mut p = params(false, false, true);
        p.lower = -10.0;
        p.upper = -1.0;
        p.decimals = 0;
        let v = local_vector(&ds, &t(&p)).unwrap();
        assert_eq!(v[0] as i64, -1 - 1 - 4);
        // Nothing asked: not a job.
        let e = typed(&params(true, false, false), 4).unwrap_err();
        assert!(e.contains("nothing to add up"), "{e}");
    }

    #[test]
    fn missing_columns_are_named() {
        let ds = dataset(CSV_A);
        let mut p = params(false, true, false);
        p.segment_column = "amount".into();
        let e = local_vector(&ds, &t(&p)).unwrap_err().to_string();
        assert!(e.contains("no segment column 'amount'"), "{e}");
        let mut p = params(false, true, true);
        p.value_column = "region".into();
        let e = local_vector(&ds, &t(&p)).unwrap_err().to_string();
        assert!(e.contains("no value column 'region'"), "{e}");
    }

    #[test]
    fn params_are_checked() {
        let p = params(true, true, true);
        let ok = t(&p).secagg_params("job-1").unwrap();
        assert_eq!((ok.n, ok.threshold, ok.vector_len), (4, 3, 8));
        assert_eq!(ok.max_vector_len, 8);
        let mut dp = p.clone();
        dp.dp = Some(parley_proto::DpParams::default());
        let e = typed(&dp, 4).unwrap_err();
        assert!(e.contains("secure_sum.dp.epsilon"), "{e}");
        let e = typed(&params(false, false, false), 4).unwrap_err();
        assert!(e.contains("nothing to add up"), "{e}");
        let mut low = t(&p);
        low.threshold = 2;
        let e = low.secagg_params("job-1").unwrap_err();
        assert!(e.contains("threshold 2 for 4 participants"), "{e}");
        let mut one = t(&p);
        one.n = 1;
        let e = one.secagg_params("job-1").unwrap_err();
        assert!(e.contains("participants"), "{e}");
        let mut wide = t(&p);
        wide.categories.names = (0..100_000).map(|i| format!("c{i}")).collect();
        let e = wide.secagg_params("job-1").unwrap_err();
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
        let params = t(&p).secagg_params(job).unwrap();
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
            .map(|csv| local_vector(&dataset(csv), &t(&p)).unwrap())
            .collect();
        let mut expected = vec![0u64; t(&p).vector_len()];
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
        let params = typed(&p, 2).unwrap().secagg_params(job).unwrap();
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
        let params = typed(&p, 2).unwrap().secagg_params("j").unwrap();
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
