//! `parley-bench secagg`: end-to-end secure aggregation (`secure_sum` jobs) through a real
//! in-process coordinator, compared with the mask expansion the protocol cannot avoid.
//!
//! For each number of participants `n` and vector length `m` (even; `m / 2` categories named
//! `c0`, `c1`, …, each contributing a count word and a clamped-sum word):
//!
//! 1. **End-to-end.** A coordinator-only federation (fresh CA) starts in a temporary
//!    directory; `n` test-driven participants `p-1` … `p-n` ([`Rogue`]: a CA-issued
//!    certificate, real keys, gRPC over mutual TLS on loopback) connect. One `secure_sum` job
//!    over all of them is submitted; every participant runs the real client rounds
//!    (`parley_crypto::secagg::Client`, [`SecAggPlan::Honest`]) in its own tokio task with a
//!    known seeded input, while the coordinator runs the server. The end-to-end time is the wall
//!    time from `Submit` to the terminal event on `Jobs.Watch`. The released counts and sums
//!    must equal the sum of the inputs exactly ([`check_release`]) or the run fails. All `n`
//!    clients live in this one process, so this time includes **every** client's work as well
//!    as the server's, on the same cores.
//! 2. **In-process protocol.** The same rounds with the crypto crate alone (one `Server`, `n`
//!    `Client`s, every message encoded and decoded, no network): where the time goes by
//!    round. It must give the same sum.
//! 3. **PRG work.** Back to back on the same rayon pool the crate uses ([`add_masks`]): per
//!    client, its input plus `n − 1` pairwise masks plus its self mask (`n²` expansions of `m`
//!    words in all), then at the server the `n` self masks removed from the sum (no dropouts):
//!    `n² + n` expansions, `8·m·(n² + n)` bytes of AES-128-CTR keystream. The pairwise seeds
//!    are symmetric with opposite signs, so the unmasked sum must again equal the inputs'.
//!    The summation of the masked vectors between the two is not timed.
//! 4. **One-core PRG throughput.** [`add_mask`] over an `m`-word vector on one thread, repeated
//!    for 256 MiB of keystream (or one second).
//!
//! A submit the coordinator rejects (for instance more categories than its limit) is reported
//! as such; the in-process protocol and PRG phases still run.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_crypto::keys::NodeSecrets;
use parley_crypto::secagg::prg::{Prg, Sign, add_mask, add_masks};
use parley_crypto::secagg::{
    AdvertiseKeys, Client, EncryptedShare, MaskedInput, Params, PeerKeys, Server, Signer,
    UnmaskShares,
};
use parley_jobs::Kind;
use parley_jobs::lifecycle::is_terminal;
use parley_proto::{GetJobRequest, Job, JobSpec, JobState, SubmitJobRequest};
use parley_tests::harness::{Federation, secure_sum_spec};
use parley_tests::rogue::{Rogue, SecAggPlan};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::psi::{cpu_secs, loadavg};

/// Per-round deadline of the bench jobs (seconds): nobody may be dropped for being slow.
pub const ROUND_TIMEOUT_SECS: u32 = 600;
/// The longest an end-to-end job may take.
const JOB_LIMIT: Duration = Duration::from_secs(1800);
/// The dataset name participants declare (test-driven participants hold no data).
const DATASET: &str = "metrics";
/// Largest count word of a generated input.
const MAX_COUNT: u64 = 1000;
/// Largest clamped-sum word of a generated input, in whole units (the words are cents).
const MAX_UNITS: u64 = 1000;
/// Keystream bytes of the one-core throughput measurement.
const ONE_CORE_BYTES: usize = 256 << 20;
/// Time limit of the one-core throughput measurement.
const ONE_CORE_LIMIT: Duration = Duration::from_secs(1);

/// Options of `parley-bench secagg`.
#[derive(Clone, Debug)]
pub struct SecAggBenchOptions {
    /// Participant counts, one run per (n, m).
    pub nodes: Vec<usize>,
    /// Vector lengths (even), one run per (n, m).
    pub lens: Vec<usize>,
    /// Seed of the participants' inputs.
    pub seed: u64,
}

/// Participant `i` (1-based).
pub fn participant_name(i: usize) -> String {
    format!("p-{i}")
}

/// The `m / 2` category names `c0`, `c1`, ….
pub fn category_names(m: usize) -> Vec<String> {
    (0..m / 2).map(|c| format!("c{c}")).collect()
}

/// The bench job: `secure_sum` over `p-1..p-n` with `m / 2` categories, count and clamped sum
/// (cents) per category, so the vector has `m` words.
pub fn bench_spec(n: usize, m: usize) -> JobSpec {
    let names: Vec<String> = (1..=n).map(participant_name).collect();
    let parts: Vec<(&str, &str)> = names.iter().map(|s| (s.as_str(), DATASET)).collect();
    let cats = category_names(m);
    let cats: Vec<&str> = cats.iter().map(String::as_str).collect();
    let mut spec = secure_sum_spec(&parts, &cats);
    spec.label = format!("parley-bench secagg n={n} m={m}");
    if let Some(p) = spec.secure_sum_mut() {
        p.round_timeout_secs = ROUND_TIMEOUT_SECS;
    }
    spec
}

/// `n` seeded input vectors of `m` words: even words are counts in `0..1000`, odd words are
/// sums in cents that are whole units (`100 × 0..1000`), so every released value is an
/// integer far below 2^53 and the comparison with the truth is exact.
pub fn bench_inputs(seed: u64, n: usize, m: usize) -> Vec<Vec<u64>> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((n as u64) << 40) ^ m as u64);
    (0..n)
        .map(|_| {
            (0..m)
                .map(|k| {
                    if k.is_multiple_of(2) {
                        rng.random_range(0..MAX_COUNT)
                    } else {
                        100 * rng.random_range(0..MAX_UNITS)
                    }
                })
                .collect()
        })
        .collect()
}

/// The word-wise sum (mod 2^64) of `inputs`.
pub fn plain_sum(inputs: &[Vec<u64>], m: usize) -> Vec<u64> {
    let mut sum = vec![0u64; m];
    for v in inputs {
        for (s, x) in sum.iter_mut().zip(v) {
            *s = s.wrapping_add(*x);
        }
    }
    sum
}

/// Checks the released result of a bench job: succeeded, all `n` participants contributed,
/// none dropped, and per category the count equals `expected[2c]` and the sum equals
/// `expected[2c + 1]` cents, exactly (the coordinator releases `cents × 10^-2` as f64; the
/// expected value is converted the same way and also recovered back to whole cents).
pub fn check_release(job: &Job, expected: &[u64], n: usize) -> anyhow::Result<()> {
    if job.state() != JobState::Succeeded {
        bail!(
            "job {} ended {:?}: {}",
            job.id,
            job.state(),
            if job.reason.is_empty() {
                "no reason given"
            } else {
                &job.reason
            }
        );
    }
    let r = job
        .result
        .as_ref()
        .and_then(|r| r.secure_sum())
        .context("the job succeeded without a secure_sum result")?;
    if r.contributors.len() != n || !r.dropped.is_empty() {
        bail!(
            "expected all {n} participants in the sum, got {} contributors and dropouts {:?}",
            r.contributors.len(),
            r.dropped
        );
    }
    if r.categories.len() * 2 != expected.len() {
        bail!(
            "released {} categories, expected {}",
            r.categories.len(),
            expected.len() / 2
        );
    }
    let unit = 10f64.powi(-2);
    for (c, cat) in r.categories.iter().enumerate() {
        if cat.category != format!("c{c}") {
            bail!("category {c} is named '{}', expected 'c{c}'", cat.category);
        }
        let (count, cents) = (expected[2 * c], expected[2 * c + 1]);
        let [got_count, got_sum] = cat.values[..] else {
            bail!(
                "category {}: {} values, expected count and sum",
                cat.category,
                cat.values.len()
            );
        };
        if got_count != count as f64 {
            bail!(
                "category {}: count {got_count}, expected {count}",
                cat.category
            );
        }
        let want = cents as i64 as f64 * unit;
        if got_sum != want || (got_sum * 100.0).round() as u64 != cents {
            bail!(
                "category {}: sum {got_sum}, expected {want} ({cents} cents)",
                cat.category
            );
        }
    }
    Ok(())
}

/// What happened to the end-to-end job.
#[derive(Clone, Debug)]
pub enum E2eOutcome {
    /// The job ran and released the exact sum.
    Done {
        /// Submit → terminal job event.
        wall: Duration,
        /// The secure-aggregation rounds over gRPC: the first participant's `Start` (every
        /// node accepted; round 0 begins) → terminal job event. `wall` minus this is the job
        /// admission: validating the spec, offering it (with its category names) to every
        /// node, their acceptance.
        rounds: Duration,
        /// Process CPU seconds (user + system) over the same span.
        cpu: Option<f64>,
    },
    /// The coordinator refused the job at submit; its message.
    Rejected(String),
}

/// Wall times of the in-process protocol run (crypto crate only, no network).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtocolTimes {
    /// `Client::new` (Shamir sharing of two secrets) + round 0 + server round 0.
    pub round0: Duration,
    /// Round 1: advertisement checks, share encryption, pairwise key agreement; server routing.
    pub round1: Duration,
    /// Round 2, clients: share opening and masking (the PRG work), signing, encoding.
    pub round2_clients: Duration,
    /// Round 2, server: decoding and signature checks of the masked inputs.
    pub round2_server: Duration,
    /// Round 3 (clients' unmasking shares, server collection).
    pub round3: Duration,
    /// Server `finish`: seed reconstruction, summation, self-mask removal.
    pub unmask: Duration,
    /// Process CPU seconds over the run.
    pub cpu: Option<f64>,
}

impl ProtocolTimes {
    /// All phases.
    pub fn total(&self) -> Duration {
        self.round0
            + self.round1
            + self.round2_clients
            + self.round2_server
            + self.round3
            + self.unmask
    }
}

/// The PRG work of one run with no dropouts.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrgTimes {
    /// The `n` clients' masking (`n²` expansions).
    pub clients: Duration,
    /// The server's self-mask removal (`n` expansions).
    pub server: Duration,
    /// Process CPU seconds over both timed parts.
    pub cpu: Option<f64>,
    /// Expansions of `m` words.
    pub expansions: u64,
    /// Keystream bytes.
    pub bytes: u64,
}

impl PrgTimes {
    /// Clients and server.
    pub fn total(&self) -> Duration {
        self.clients + self.server
    }

    /// Keystream throughput over the whole PRG work, GB/s (10^9 bytes).
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.total().as_secs_f64().max(1e-9) / 1e9
    }
}

/// Measurements of one (n, m).
#[derive(Clone, Debug)]
pub struct SecAggBenchRow {
    /// Participants.
    pub n: usize,
    /// Words per vector.
    pub m: usize,
    /// `Federation::start` (CA, certificates, coordinator).
    pub federation_start: Duration,
    /// Connecting the `n` participants one after the other (certificate issue + mTLS + hello).
    pub connect: Duration,
    /// The end-to-end job.
    pub e2e: E2eOutcome,
    /// The same protocol in-process.
    pub protocol: ProtocolTimes,
    /// The PRG work it requires.
    pub prg: PrgTimes,
    /// [`add_mask`] throughput on one thread, GB/s.
    pub one_core_gbps: f64,
    /// Load averages before the job.
    pub load_before: String,
    /// Load averages after the PRG work.
    pub load_after: String,
}

impl SecAggBenchRow {
    /// End-to-end time over PRG time (None when the job was rejected).
    pub fn e2e_ratio(&self) -> Option<f64> {
        match self.e2e {
            E2eOutcome::Done { wall, .. } => {
                Some(wall.as_secs_f64() / self.prg.total().as_secs_f64().max(1e-9))
            }
            E2eOutcome::Rejected(_) => None,
        }
    }

    /// Secure-aggregation rounds over gRPC over PRG time (None when the job was rejected).
    pub fn rounds_ratio(&self) -> Option<f64> {
        match self.e2e {
            E2eOutcome::Done { rounds, .. } => {
                Some(rounds.as_secs_f64() / self.prg.total().as_secs_f64().max(1e-9))
            }
            E2eOutcome::Rejected(_) => None,
        }
    }

    /// In-process protocol time over PRG time.
    pub fn protocol_ratio(&self) -> f64 {
        self.protocol.total().as_secs_f64() / self.prg.total().as_secs_f64().max(1e-9)
    }
}

/// One participant's run: accept the offer, wait for the start, run the honest client rounds.
/// Returns the link too, so that it stays open until the job has ended, and when the start
/// arrived.
async fn participate(mut rogue: Rogue, input: Vec<u64>) -> (Rogue, anyhow::Result<Instant>) {
    let r = async {
        let offer = rogue.accept_next_offer().await?;
        rogue.wait_start(&offer.job_id).await?;
        let started = Instant::now();
        rogue.run_secagg(&offer, &input, SecAggPlan::Honest).await?;
        anyhow::Ok(started)
    }
    .await;
    (rogue, r)
}

/// Connects the participants, submits the job, runs everyone and checks the release.
async fn drive(
    fed: &Federation,
    n: usize,
    m: usize,
    inputs: &[Vec<u64>],
    expected: &[u64],
) -> anyhow::Result<(Duration, E2eOutcome)> {
    let t = Instant::now();
    let mut rogues = Vec::with_capacity(n);
    for i in 1..=n {
        let name = participant_name(i);
        rogues.push(
            Rogue::connect(fed, &name)
                .await
                .with_context(|| format!("connecting participant {name}"))?,
        );
    }
    let connect = t.elapsed();
    let mut submit_client = fed.analyst().await?;
    let mut watch_client = fed.analyst().await?;
    let tasks: Vec<_> = rogues
        .into_iter()
        .zip(inputs.iter().cloned())
        .map(|(rogue, input)| tokio::spawn(participate(rogue, input)))
        .collect();
    let abort_all = || tasks.iter().for_each(tokio::task::JoinHandle::abort);

    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let job = match submit_client
        .submit(SubmitJobRequest {
            spec: Some(bench_spec(n, m)),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            abort_all();
            return Ok((connect, E2eOutcome::Rejected(s.message().to_string())));
        }
        Err(s) => {
            abort_all();
            return Err(s).context("submitting the secure_sum job");
        }
    };
    let job = if is_terminal(job.state()) {
        job
    } else {
        let mut stream = watch_client
            .watch(GetJobRequest {
                job_id: job.id.clone(),
            })
            .await?
            .into_inner();
        let until_terminal = async {
            while let Some(ev) = stream.message().await? {
                if let Some(j) = ev.job
                    && is_terminal(j.state())
                {
                    return Ok(j);
                }
            }
            bail!("watch stream of {} ended before the job did", job.id)
        };
        match tokio::time::timeout(JOB_LIMIT, until_terminal).await {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                abort_all();
                return Err(e);
            }
            Err(_) => {
                abort_all();
                bail!("job {} did not end within {JOB_LIMIT:?}", job.id);
            }
        }
    };
    let end = Instant::now();
    let wall = end - t0;
    let cpu = cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    if let Err(e) = check_release(&job, expected, n) {
        abort_all();
        return Err(e);
    }
    let mut links = Vec::with_capacity(n);
    let mut first_start = end;
    for task in tasks {
        let (rogue, r) = task.await.context("a participant task panicked")?;
        first_start = first_start.min(r.with_context(|| format!("participant {}", rogue.name))?);
        links.push(rogue);
    }
    drop(links);
    let rounds = end - first_start;
    Ok((connect, E2eOutcome::Done { wall, rounds, cpu }))
}

/// Ed25519 keys and signers of `n` participants (indices 1..=n).
fn participants(n: usize) -> anyhow::Result<(PeerKeys, Vec<Signer>)> {
    let mut keys = PeerKeys::new();
    let mut signers = Vec::with_capacity(n);
    for i in 1..=n {
        let secrets = Arc::new(NodeSecrets::generate()?);
        keys.insert(i as u32, secrets.ed25519_public());
        let signer: Signer = Arc::new(move |msg: &[u8]| secrets.sign_ed25519(msg));
        signers.push(signer);
    }
    Ok((keys, signers))
}

/// Runs the protocol for `inputs` with one server and `n` clients in this thread (each step
/// uses the crate's rayon pool), every message encoded and decoded; checks the sum.
pub fn protocol_in_process(
    job_id: &str,
    threshold: u32,
    inputs: &[Vec<u64>],
    expected: &[u64],
) -> anyhow::Result<ProtocolTimes> {
    let n = inputs.len();
    let m = expected.len();
    let params = Params {
        job_id: job_id.to_string(),
        n: n as u32,
        threshold,
        vector_len: m,
        max_vector_len: m,
    };
    let (keys, signers) = participants(n)?;
    let mut rng = rand::rng();
    let mut times = ProtocolTimes::default();
    let cpu0 = cpu_secs();

    let t = Instant::now();
    let mut server = Server::new(params.clone(), keys.clone())?;
    let mut clients = Vec::with_capacity(n);
    for (i, signer) in signers.into_iter().enumerate() {
        let c = Client::new(params.clone(), i as u32 + 1, signer, keys.clone(), &mut rng)?;
        let (c, advert) = c.round0();
        server.add_advertisement(AdvertiseKeys::from_bytes(&advert.to_bytes())?)?;
        clients.push(c);
    }
    let (mut server, adverts) = server.finish_round0()?;
    times.round0 = t.elapsed();

    let t = Instant::now();
    let advert_bytes: Vec<Vec<u8>> = adverts.iter().map(AdvertiseKeys::to_bytes).collect();
    let mut next = Vec::with_capacity(n);
    for (i, c) in clients.into_iter().enumerate() {
        let adverts = advert_bytes
            .iter()
            .map(|b| AdvertiseKeys::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()?;
        let (c, shares) = c.round1(&adverts)?;
        let shares = shares
            .iter()
            .map(|s| EncryptedShare::from_bytes(&s.to_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        server.add_shares(i as u32 + 1, shares)?;
        next.push(c);
    }
    let (mut server, mut routed) = server.finish_round1()?;
    times.round1 = t.elapsed();

    let mut waiting = Vec::with_capacity(n);
    for ((i, c), input) in next.into_iter().enumerate().zip(inputs) {
        let t = Instant::now();
        let mine = routed
            .remove(&(i as u32 + 1))
            .context("the server routed no shares to a client")?
            .iter()
            .map(|s| EncryptedShare::from_bytes(&s.to_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let (c, masked) = c.round2(&mine, input)?;
        let bytes = masked.to_bytes();
        drop(masked);
        times.round2_clients += t.elapsed();
        let t = Instant::now();
        server.add_masked_input(MaskedInput::from_bytes(&bytes, m)?)?;
        times.round2_server += t.elapsed();
        waiting.push(c);
    }
    let t = Instant::now();
    let (mut server, survivors) = server.finish_round2()?;
    times.round2_server += t.elapsed();

    let t = Instant::now();
    for c in waiting {
        let unmask = c.round3(&survivors)?;
        server.add_unmask(UnmaskShares::from_bytes(&unmask.to_bytes())?)?;
    }
    times.round3 = t.elapsed();

    let t = Instant::now();
    let sum = server.finish()?;
    times.unmask = t.elapsed();
    times.cpu = cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    if sum != expected {
        bail!("the in-process protocol run gave a wrong sum");
    }
    Ok(times)
}

/// A 32-byte PRG seed for `(kind, a, b)` under `base` (distinct inputs, distinct seeds).
fn bench_seed(base: u64, kind: u8, a: usize, b: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&base.to_le_bytes());
    s[8] = kind;
    s[9..17].copy_from_slice(&(a as u64).to_le_bytes());
    s[17..25].copy_from_slice(&(b as u64).to_le_bytes());
    s
}

/// The PRG work of a run without dropouts, on the crate's rayon pool: each client masks its
/// input with its self mask and `n − 1` pairwise masks (symmetric seeds, `+` towards higher
/// indices), then the server removes the `n` self masks from the (untimed) sum of the masked
/// vectors. Fails unless the result equals `expected`.
pub fn prg_work(seed: u64, inputs: &[Vec<u64>], expected: &[u64]) -> anyhow::Result<PrgTimes> {
    let n = inputs.len();
    let m = expected.len();
    let self_seed = |i: usize| bench_seed(seed, 0, i, i);
    let pair_seed = |i: usize, j: usize| bench_seed(seed, 1, i.min(j), i.max(j));
    let mut times = PrgTimes {
        expansions: (n * n + n) as u64,
        bytes: 8 * m as u64 * (n * n + n) as u64,
        ..PrgTimes::default()
    };
    let cpu0 = cpu_secs();
    let mut masked = Vec::with_capacity(n);
    let t = Instant::now();
    for (i, input) in inputs.iter().enumerate() {
        let mut masks = Vec::with_capacity(n);
        masks.push((Prg::new(&self_seed(i)), Sign::Plus));
        for j in (0..n).filter(|&j| j != i) {
            let sign = if j > i { Sign::Plus } else { Sign::Minus };
            masks.push((Prg::new(&pair_seed(i, j)), sign));
        }
        let mut v = input.clone();
        add_masks(&mut v, &masks);
        masked.push(black_box(v));
    }
    times.clients = t.elapsed();
    let cpu_mid = cpu_secs();
    let mut sum = plain_sum(&masked, m);
    drop(masked);
    let cpu_sum = cpu_secs();
    let t = Instant::now();
    let masks: Vec<(Prg, Sign)> = (0..n)
        .map(|i| (Prg::new(&self_seed(i)), Sign::Minus))
        .collect();
    add_masks(&mut sum, &masks);
    times.server = t.elapsed();
    let cpu1 = cpu_secs();
    times.cpu = match (cpu0, cpu_mid, cpu_sum, cpu1) {
        (Some(a), Some(b), Some(c), Some(d)) => Some((b - a) + (d - c)),
        _ => None,
    };
    if sum != expected {
        bail!("the masks of the PRG pass did not cancel");
    }
    Ok(times)
}

/// [`add_mask`] throughput on the calling thread over an `m`-word vector, GB/s: repeated
/// until 256 MiB of keystream or one second, whichever comes first.
pub fn one_core_gbps(m: usize) -> f64 {
    let m = m.max(1);
    let mut v = vec![0u64; m];
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut r = 0usize;
    while bytes < ONE_CORE_BYTES && (r == 0 || t.elapsed() < ONE_CORE_LIMIT) {
        add_mask(&mut v, &bench_seed(7, 2, r, 0), Sign::Plus);
        bytes += 8 * m;
        r += 1;
    }
    black_box(&v);
    bytes as f64 / t.elapsed().as_secs_f64().max(1e-9) / 1e9
}

/// Runs one (n, m) in `dir`: end-to-end, in-process protocol, PRG work.
pub async fn bench_one(
    dir: &Path,
    n: usize,
    m: usize,
    seed: u64,
) -> anyhow::Result<SecAggBenchRow> {
    if n < 3 {
        bail!("--nodes: a secure_sum job needs at least 3 participants, got {n}");
    }
    if m < 2 || !m.is_multiple_of(2) {
        bail!(
            "--len: the vector length must be even and at least 2 (count + sum per category), got {m}"
        );
    }
    println!(
        "── n = {n}, m = {m}: {} categories, {:.1} MB of keystream in all",
        m / 2,
        8.0 * m as f64 * (n * n + n) as f64 / 1e6
    );
    let inputs = Arc::new(bench_inputs(seed, n, m));
    let expected = Arc::new(plain_sum(&inputs, m));

    let load_before = loadavg();
    let t = Instant::now();
    let fed = Federation::start(dir, vec![]).await?;
    let federation_start = t.elapsed();
    let driven = drive(&fed, n, m, &inputs, &expected).await;
    let down = fed.shutdown().await;
    let (connect, e2e) = driven?;
    down.context("stopping the federation")?;
    match &e2e {
        E2eOutcome::Done { wall, rounds, cpu } => println!(
            "   e2e {:.2} s (CPU {}; secure-aggregation rounds {:.2} s), exact sum released; {n} participants connected in {:.2} s",
            wall.as_secs_f64(),
            cpu.map_or_else(|| "?".into(), |c| format!("{c:.1} s")),
            rounds.as_secs_f64(),
            connect.as_secs_f64()
        ),
        E2eOutcome::Rejected(why) => println!("   e2e: the coordinator rejected the job: {why}"),
    }

    let spec = bench_spec(n, m);
    let typed = parley_jobs::Job::try_from(&spec)?;
    let Kind::SecureSum(k) = &typed.kind else {
        bail!("the bench spec is not a secure_sum job");
    };
    if k.vector_len() != m {
        bail!("the bench spec does not give {m}-word vectors");
    }
    let threshold = k.threshold;
    let (i, e) = (Arc::clone(&inputs), Arc::clone(&expected));
    let protocol = tokio::task::spawn_blocking(move || {
        protocol_in_process("parley-bench-secagg", threshold, &i, &e)
    })
    .await
    .context("the in-process protocol run panicked")??;
    println!(
        "   in-process protocol {:.2} s (client rounds 2: {:.2} s, server unmask {:.2} s)",
        protocol.total().as_secs_f64(),
        protocol.round2_clients.as_secs_f64(),
        protocol.unmask.as_secs_f64()
    );
    let (i, e) = (Arc::clone(&inputs), Arc::clone(&expected));
    let (prg, one_core) =
        tokio::task::spawn_blocking(move || prg_work(seed, &i, &e).map(|p| (p, one_core_gbps(m))))
            .await
            .context("the PRG pass panicked")??;
    let load_after = loadavg();
    println!(
        "   PRG {:.2} s ({} expansions, {:.2} GB/s); add_mask on one core {:.2} GB/s",
        prg.total().as_secs_f64(),
        prg.expansions,
        prg.gbps(),
        one_core
    );
    Ok(SecAggBenchRow {
        n,
        m,
        federation_start,
        connect,
        e2e,
        protocol,
        prg,
        one_core_gbps: one_core,
        load_before,
        load_after,
    })
}

/// Runs every (n, m), each in its own temporary directory, and prints the summary table.
pub async fn run_secagg_bench(opts: &SecAggBenchOptions) -> anyhow::Result<Vec<SecAggBenchRow>> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "parley-bench secagg: nodes {:?}, lengths {:?}, seed {}; {cores} cores, rayon threads {}",
        opts.nodes,
        opts.lens,
        opts.seed,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    let mut rows = Vec::new();
    for &m in &opts.lens {
        for &n in &opts.nodes {
            let tmp = tempfile::Builder::new()
                .prefix("parley-bench-secagg-")
                .tempdir()?;
            let row = bench_one(tmp.path(), n, m, opts.seed).await;
            drop(tmp);
            rows.push(row?);
        }
    }
    print!("\n{}", secagg_table(&rows));
    Ok(rows)
}

fn secs_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| format!("{v:.1}"))
}

/// The summary table (Markdown).
pub fn secagg_table(rows: &[SecAggBenchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| n | m | e2e s | e2e CPU s | rounds s | in-process protocol s | protocol CPU s | r0 / r1 / r2 clients / r2 server / r3 / unmask s | PRG s (clients + server) | PRG CPU s | e2e / PRG | rounds / PRG | protocol / PRG | PRG GB/s (pool) | add_mask GB/s (1 core) | connect s | load before -> after |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let (e2e, e2e_cpu, rounds) = match &r.e2e {
            E2eOutcome::Done { wall, rounds, cpu } => (
                format!("{:.2}", wall.as_secs_f64()),
                secs_opt(*cpu),
                format!("{:.2}", rounds.as_secs_f64()),
            ),
            E2eOutcome::Rejected(_) => ("rejected".to_string(), "-".to_string(), "-".to_string()),
        };
        let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
        let p = &r.protocol;
        let phases = [
            p.round0,
            p.round1,
            p.round2_clients,
            p.round2_server,
            p.round3,
            p.unmask,
        ]
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" / ");
        let _ = writeln!(
            s,
            "| {} | {} | {e2e} | {e2e_cpu} | {rounds} | {:.2} | {} | {phases} | {:.2} ({:.2} + {:.2}) | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} -> {} |",
            r.n,
            r.m,
            p.total().as_secs_f64(),
            secs_opt(p.cpu),
            r.prg.total().as_secs_f64(),
            r.prg.clients.as_secs_f64(),
            r.prg.server.as_secs_f64(),
            secs_opt(r.prg.cpu),
            ratio(r.e2e_ratio()),
            ratio(r.rounds_ratio()),
            r.protocol_ratio(),
            r.prg.gbps(),
            r.one_core_gbps,
            r.connect.as_secs_f64(),
            r.load_before,
            r.load_after,
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parley_proto::{CategoryStats, JobResult, SecureSumResult};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_participants_release_the_exact_sum() {
        parley_net::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let row = bench_one(tmp.path(), 4, 8, 11).await.unwrap();
        assert!(matches!(row.e2e, E2eOutcome::Done { .. }), "{:?}", row.e2e);
        assert_eq!(row.prg.expansions, 20);
        assert_eq!(row.prg.bytes, 8 * 8 * 20);
        assert!(row.e2e_ratio().is_some());
        let E2eOutcome::Done { wall, rounds, .. } = row.e2e else {
            unreachable!()
        };
        assert!(rounds <= wall, "rounds {rounds:?} > e2e {wall:?}");
        assert!(secagg_table(&[row]).contains("| 4 | 8 |"));
    }

    fn released(expected: &[u64], n: usize) -> Job {
        let unit = 10f64.powi(-2);
        let mut job = Job {
            id: "j".into(),
            ..Default::default()
        };
        job.set_state(JobState::Succeeded);
        job.result = Some(JobResult::from(SecureSumResult {
            contributors: (1..=n).map(participant_name).collect(),
            categories: expected
                .chunks(2)
                .enumerate()
                .map(|(c, w)| CategoryStats {
                    category: format!("c{c}"),
                    values: vec![w[0] as f64, w[1] as i64 as f64 * unit],
                    suppressed: false,
                })
                .collect(),
            ..Default::default()
        }));
        job
    }

    #[test]
    fn check_release_is_exact() {
        let inputs = bench_inputs(3, 5, 6);
        assert_eq!(inputs, bench_inputs(3, 5, 6));
        let expected = plain_sum(&inputs, 6);
        assert!(expected.iter().skip(1).step_by(2).all(|c| c % 100 == 0));
        check_release(&released(&expected, 5), &expected, 5).unwrap();
        // One cent or one row off, a missing contributor, or a failed job: rejected.
        for k in 0..expected.len() {
            let mut off = expected.clone();
            off[k] += 1;
            assert!(
                check_release(&released(&off, 5), &expected, 5).is_err(),
                "word {k}"
            );
        }
        assert!(check_release(&released(&expected, 4), &expected, 5).is_err());
        let mut failed = released(&expected, 5);
        failed.set_state(JobState::Failed);
        assert!(check_release(&failed, &expected, 5).is_err());
    }

    #[test]
    fn prg_pass_and_protocol_give_the_sum() {
        let inputs = bench_inputs(5, 4, 10);
        let expected = plain_sum(&inputs, 10);
        let prg = prg_work(5, &inputs, &expected).unwrap();
        assert_eq!(prg.expansions, 20);
        protocol_in_process("unit", 3, &inputs, &expected).unwrap();
        let mut wrong = expected.clone();
        wrong[0] ^= 1;
        assert!(prg_work(5, &inputs, &wrong).is_err());
        assert!(protocol_in_process("unit", 3, &inputs, &wrong).is_err());
    }

    #[test]
    fn spec_has_the_requested_vector_length() {
        for (n, m) in [(3, 2), (10, 2000)] {
            let spec = bench_spec(n, m);
            let p = spec.secure_sum().unwrap();
            let Kind::SecureSum(k) = parley_jobs::Job::try_from(&spec).unwrap().kind else {
                panic!("not a secure_sum job");
            };
            assert_eq!(k.vector_len(), m);
            assert_eq!(spec.participants.len(), n);
            assert_eq!(p.round_timeout_secs, ROUND_TIMEOUT_SECS);
        }
    }
}
