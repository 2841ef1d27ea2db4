//! `parley-bench psi` / `sum`: end-to-end PSI through a real in-process federation, compared
//! with the raw elliptic-curve work the protocol cannot avoid, on the same inputs and cores.
//!
//! For each size `n`:
//!
//! 1. two CSV files with exactly `n` records each and **one** email per record (distinct within
//!    a file); `k = round(n × overlap)` emails are in both files, so the true intersection is
//!    known without running any normaliser;
//! 2. a federation (coordinator + node `a`, the receiver, + node `b`, the sender) starts in a
//!    temporary directory, loads the files, and runs one PSI job; the wall time from submit to
//!    the terminal job event is the *end-to-end* time, and the receiver's own `elapsed_ms` is
//!    reported too; the result must equal the truth exactly or the run fails;
//! 3. with the federation stopped, the same identifiers go through the crypto crate's own
//!    functions, back to back on the same rayon pool: receiver `blind_ids(X)`, sender
//!    `blind_ids(Y)`, sender `reblind(X^a)`, receiver `reblind(Y^b)` — the `4n` scalar
//!    multiplications (plus hash-to-group / (de)compression) every ECDH-PSI run needs. That is
//!    the *raw EC* time.
//!
//! `parley-bench sum` does the same for PSI `sum` mode (intersection-sum): P2 (node `a`, the
//! receiver) holds `n` emails with an `amount` value column, P1 (node `b`, the sender) `n`
//! emails; one sum job with clamping `[0, 500]`, cents and a large epsilon must release a sum
//! within 6 × its 95 % bound of the exact clamped sum; then the raw group operations the
//! protocol cannot avoid run back to back on the same inputs ([`raw_sum_ec`]): P1 blind, P2
//! reblind, P2 blind, P2 ElGamal-encrypt, P1 reblind, P1 decode + add of the `k` matching
//! ciphertexts, re-randomise + decrypt.
//!
//! Peak RSS is the process's `VmHWM` (reset per phase through `/proc/self/clear_refs` when the
//! kernel allows it). The federation runs in this process, so the end-to-end figure covers the
//! coordinator **and** both nodes: an upper bound on any single node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_crypto::dp;
use parley_crypto::elgamal::{self, CIPHERTEXT_LEN, Ciphertext, DlogTable};
use parley_crypto::normalize::{IdHash, IdKind, Normalizer, Profile};
use parley_crypto::psi::{POINT_LEN, PsiKey, blind_ids, reblind};
use parley_proto::{GetJobRequest, Job, JobSpec, JobState, PsiMode, SubmitJobRequest};
use parley_tests::harness::{
    Federation, NodeSetup, budget_toml, open_policy, psi_spec, read_match_keys, sum_spec,
};

/// Receiver node name.
pub const RECEIVER: &str = "a";
/// Sender node name.
pub const SENDER: &str = "b";
pub(crate) const DATASET: &str = "list";
const JOB_LIMIT: Duration = Duration::from_secs(1800);

/// Options of `parley-bench psi`.
#[derive(Clone, Debug)]
pub struct PsiBenchOptions {
    /// Records (= identifiers) per party, one run each.
    pub sizes: Vec<usize>,
    /// PSI mode.
    pub mode: PsiMode,
    /// Fraction of each party's identifiers the other party also holds (0..=1).
    pub overlap: f64,
    /// `[limits] batch_points` for both nodes (`None`: the node default).
    pub batch_points: Option<u32>,
    /// Also estimate each node's own peak memory by re-running its data loading and PSI state
    /// in a child process (`current_exe() probe-role ...`); needs the `parley-bench` binary.
    pub node_memory: bool,
}

/// Wall times of the four raw EC passes.
#[derive(Clone, Copy, Debug, Default)]
pub struct EcTimes {
    /// Receiver `blind_ids(X)`: hash + mul + compress, `n` ops.
    pub receiver_blind: Duration,
    /// Sender `blind_ids(Y)`.
    pub sender_blind: Duration,
    /// Sender `reblind(X^a)`: decompress + mul + compress.
    pub sender_reblind: Duration,
    /// Receiver `reblind(Y^b)`.
    pub receiver_reblind: Duration,
}

impl EcTimes {
    /// Sum of the four passes.
    pub fn total(&self) -> Duration {
        self.receiver_blind + self.sender_blind + self.sender_reblind + self.receiver_reblind
    }
}

/// One timeline entry seen on the job's watch stream.
#[derive(Clone, Debug)]
pub struct TimelineEntry {
    /// Seconds since submit.
    pub at: f64,
    /// What happened.
    pub what: String,
}

/// Measurements of one size.
#[derive(Clone, Debug)]
pub struct PsiBenchRow {
    /// Records per party.
    pub n: usize,
    /// True intersection (records).
    pub overlap: usize,
    /// Writing both CSV files.
    pub generate: Duration,
    /// `Federation::start`: certificates, both nodes loading (normalising, hashing) their data.
    pub federation_start: Duration,
    /// Submit → terminal job event.
    pub e2e: Duration,
    /// The receiver's reported protocol time.
    pub receiver_elapsed: Duration,
    /// Process CPU time (user + system) spent during the job, seconds.
    pub e2e_cpu: Option<f64>,
    /// Raw EC pass times.
    pub ec: EcTimes,
    /// Process CPU time during the raw EC passes, seconds.
    pub ec_cpu: Option<f64>,
    /// Peak RSS (KiB) from before `Federation::start` to the end of the job.
    pub e2e_peak_rss_kib: Option<u64>,
    /// RSS (KiB) just before submit (federation up, data loaded).
    pub rss_before_job_kib: Option<u64>,
    /// Peak RSS (KiB) during the raw EC passes (inputs and the four outputs held).
    pub ec_peak_rss_kib: Option<u64>,
    /// Whether the peak was reset before each phase (else it is the process-lifetime peak).
    pub peak_reset: bool,
    /// Load averages (1, 5, 15 min) before the job.
    pub load_before: String,
    /// Load averages after the raw EC passes.
    pub load_after: String,
    /// Job state changes and progress stage boundaries.
    pub timeline: Vec<TimelineEntry>,
    /// Per-role memory probes (receiver, sender), when requested.
    pub probes: Option<(ProbeReport, ProbeReport)>,
}

impl PsiBenchRow {
    /// End-to-end time over raw EC time.
    pub fn ratio(&self) -> f64 {
        self.e2e.as_secs_f64() / self.ec.total().as_secs_f64().max(1e-9)
    }
}

/// The curve25519-dalek backend variable-base scalar multiplication uses in this binary, as
/// dalek 5 picks it: AVX-512 IFMA if built in (cfg) and the CPU has it, else AVX2, else serial.
#[allow(unexpected_cfgs)]
pub fn dalek_backend() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let built_avx512 = cfg!(curve25519_dalek_backend = "avx512")
            || cfg!(all(
                target_feature = "avx512ifma",
                target_feature = "avx512vl"
            ));
        let cpu_ifma = std::arch::is_x86_feature_detected!("avx512ifma")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let cpu_avx2 = std::arch::is_x86_feature_detected!("avx2");
        let why = format!(
            "built with avx512 backend: {built_avx512}; CPU avx512ifma+vl: {cpu_ifma}, avx2: {cpu_avx2}"
        );
        if cfg!(any(
            curve25519_dalek_backend = "serial",
            curve25519_dalek_backend = "fiat"
        )) {
            return format!("serial/fiat (forced by cfg) ({why})");
        }
        if built_avx512 && cpu_ifma {
            format!("avx512ifma ({why})")
        } else if cpu_avx2 {
            format!("avx2 ({why})")
        } else {
            format!("serial ({why})")
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "serial (not x86_64)".to_string()
    }
}

// ───────────────────────────── data ─────────────────────────────

/// Canonical email of synthetic person `p` (already in normal form: lower case, not gmail).
pub fn bench_email(p: u64) -> String {
    // A cheap bijective scramble so the local parts do not sort like the person numbers.
    let x = p.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (p >> 7);
    format!("u{p}.{:06x}@example.org", x & 0xff_ffff)
}

/// Receiver record key of person `p`.
fn receiver_key(p: u64) -> String {
    format!("A{p:010}")
}

/// Persons of each side: receiver `0..n`, sender `n-k..2n-k` (`k` shared).
pub(crate) fn persons(n: usize, k: usize) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
    let (n, k) = (n as u64, k as u64);
    (0..n, n - k..2 * n - k)
}

fn write_csv(path: &Path, prefix: char, persons: std::ops::Range<u64>) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 16, f);
    w.write_all(b"customer_id,email\n")?;
    for p in persons {
        writeln!(w, "{prefix}{p:010},{}", bench_email(p))?;
    }
    w.flush()?;
    Ok(())
}

pub(crate) fn dataset_toml(csv: &Path) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        "[[datasets]]\nname = {}\npath = {}\nkey_column = \"customer_id\"\n\n[[datasets.columns]]\nname = \"email\"\nkind = \"email\"\n",
        q(DATASET),
        q(&csv.to_string_lossy())
    )
}

/// The identifier hashes a node derives from the emails of `persons` (same normaliser).
pub(crate) fn id_hashes(persons: std::ops::Range<u64>) -> anyhow::Result<Vec<IdHash>> {
    let norm = Normalizer::new(Profile::Google, "US")?;
    persons
        .map(|p| {
            norm.identifier(IdKind::Email, &bench_email(p))
                .map_err(|e| anyhow::anyhow!("bench email rejected: {}", e.reason()))
        })
        .collect()
}

// ───────────────────────────── /proc ─────────────────────────────

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak RSS (KiB).
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// Current RSS (KiB).
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS:")
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false if not permitted.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// User + system CPU seconds of this process (all threads).
pub fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3 overall, utime 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Parley targets.
    Some((utime + stime) as f64 / 100.0)
}

/// `uptime`-style load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}

pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// Samples RSS in a background thread; returns (peak KiB, seconds after start of the peak).
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, f64)>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut best = (0u64, 0.0f64);
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib()
                    && r > best.0
                {
                    best = (r, t0.elapsed().as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            best
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0.0))
    }
}

// ───────────────────────────── job ─────────────────────────────

/// Submits `spec` and follows its watch stream to the end, recording state changes and the
/// first / last progress report of each (node, stage).
pub(crate) async fn run_job_timed(
    fed: &Federation,
    spec: JobSpec,
) -> anyhow::Result<(Job, Duration, Vec<TimelineEntry>)> {
    let mut submit_client = fed.analyst().await?;
    let mut watch_client = fed.analyst().await?;
    let t0 = Instant::now();
    let job = submit_client
        .submit(SubmitJobRequest { spec: Some(spec) })
        .await?
        .into_inner();
    let mut timeline = vec![TimelineEntry {
        at: t0.elapsed().as_secs_f64(),
        what: format!("submit returned ({:?})", job.state()),
    }];
    if parley_jobs::lifecycle::is_terminal(job.state()) {
        return Ok((job, t0.elapsed(), timeline));
    }
    let mut stream = watch_client
        .watch(GetJobRequest {
            job_id: job.id.clone(),
        })
        .await?
        .into_inner();
    // (node, stage) -> (first at, last at, last done, total)
    let mut stages: BTreeMap<(String, String), (f64, f64, u64, u64)> = BTreeMap::new();
    let mut last_state = None;
    let fut = async {
        while let Some(ev) = stream.message().await? {
            let at = t0.elapsed().as_secs_f64();
            if let Some(p) = ev.progress {
                let e = stages
                    .entry((p.node.clone(), p.stage.clone()))
                    .or_insert((at, at, p.done, p.total));
                e.1 = at;
                e.2 = p.done;
                e.3 = p.total;
            }
            if let Some(j) = ev.job {
                if last_state != Some(j.state()) {
                    last_state = Some(j.state());
                    timeline.push(TimelineEntry {
                        at,
                        what: format!("state {:?}", j.state()),
                    });
                }
                if parley_jobs::lifecycle::is_terminal(j.state()) {
                    return Ok((j, t0.elapsed()));
                }
            }
        }
        bail!("watch stream of {} ended before the job did", job.id)
    };
    let (job, e2e) = tokio::time::timeout(JOB_LIMIT, fut)
        .await
        .with_context(|| format!("job did not end within {JOB_LIMIT:?}"))??;
    for ((node, stage), (first, last, done, total)) in stages {
        timeline.push(TimelineEntry {
            at: first,
            what: format!("{node}: first '{stage}' progress report"),
        });
        timeline.push(TimelineEntry {
            at: last,
            what: format!("{node}: last '{stage}' progress report ({done}/{total})"),
        });
    }
    timeline.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok((job, e2e, timeline))
}

/// Checks the released result against the known overlap; fails loudly otherwise.
fn check_result(
    job: &Job,
    mode: PsiMode,
    n: usize,
    k: usize,
    receiver_persons: std::ops::Range<u64>,
) -> anyhow::Result<Duration> {
    if job.state() != JobState::Succeeded {
        bail!("PSI job at n = {n} ended {:?}: {}", job.state(), job.reason);
    }
    let psi = job
        .result
        .as_ref()
        .and_then(|r| r.psi())
        .context("succeeded job without a PSI result")?;
    let (n64, k64) = (n as u64, k as u64);
    if psi.intersection_records != k64 {
        bail!(
            "WRONG RESULT at n = {n}: released intersection {} but the true overlap is {k}",
            psi.intersection_records
        );
    }
    if psi.receiver_records != n64 || psi.receiver_identifiers != n64 {
        bail!(
            "receiver reported {} records / {} identifiers, expected {n}",
            psi.receiver_records,
            psi.receiver_identifiers
        );
    }
    if psi.sender_identifiers != n64 {
        bail!(
            "sender identifiers {} but the sender holds {n}",
            psi.sender_identifiers
        );
    }
    if mode == PsiMode::Match {
        let got = read_match_keys(&psi.match_output)?;
        let shared = receiver_persons.end - k64..receiver_persons.end;
        let expected_ok = got.len() == k && shared.clone().all(|p| got.contains(&receiver_key(p)));
        if !expected_ok {
            bail!(
                "WRONG MATCH OUTPUT at n = {n}: {} keys in {}, expected exactly the {k} shared records",
                got.len(),
                psi.match_output
            );
        }
    }
    Ok(Duration::from_millis(psi.elapsed_ms))
}

// ───────────────────────────── raw EC ─────────────────────────────

/// The four EC passes on `x` (receiver) and `y` (sender), back to back on the global rayon
/// pool; returns the times and the intersection count they imply (as a check that the work
/// was real and right).
pub fn raw_ec(x: &[IdHash], y: &[IdHash]) -> anyhow::Result<(EcTimes, usize)> {
    let a = PsiKey::random()?;
    let b = PsiKey::random()?;
    let t = Instant::now();
    let xa = blind_ids(&a, x);
    let receiver_blind = t.elapsed();
    let t = Instant::now();
    let yb = blind_ids(&b, y);
    let sender_blind = t.elapsed();
    let t = Instant::now();
    let xab = reblind(&b, &xa)?;
    let sender_reblind = t.elapsed();
    let t = Instant::now();
    let yba = reblind(&a, &yb)?;
    let receiver_reblind = t.elapsed();
    let set: std::collections::HashSet<&[u8]> = yba.chunks_exact(POINT_LEN).collect();
    let hits = xab
        .chunks_exact(POINT_LEN)
        .filter(|p| set.contains(p))
        .count();
    Ok((
        EcTimes {
            receiver_blind,
            sender_blind,
            sender_reblind,
            receiver_reblind,
        },
        hits,
    ))
}

// ───────────────────────────── per-node memory probe ─────────────────────────────

/// Role played by [`probe_role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRole {
    /// Result receiver.
    Receiver,
    /// Sender.
    Sender,
}

impl ProbeRole {
    /// Command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeRole::Receiver => "receiver",
            ProbeRole::Sender => "sender",
        }
    }
}

/// RSS figures (KiB) of one probe process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// RSS at probe start (binary, runtime libraries; no data).
    pub baseline_kib: u64,
    /// RSS after `Dataset::load`.
    pub loaded_kib: u64,
    /// Peak RSS up to the end of role preparation (`identifiers`, `Receiver::new`/`Sender::new`).
    pub prepare_peak_kib: u64,
    /// Peak RSS over the whole probe, including the role's inbound state.
    pub peak_kib: u64,
}

impl ProbeReport {
    fn line(&self) -> String {
        format!(
            "PROBE baseline={} loaded={} prepare_peak={} peak={}",
            self.baseline_kib, self.loaded_kib, self.prepare_peak_kib, self.peak_kib
        )
    }

    fn parse(out: &str) -> Option<ProbeReport> {
        let line = out.lines().find(|l| l.starts_with("PROBE "))?;
        let get = |k: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
        };
        Some(ProbeReport {
            baseline_kib: get("baseline")?,
            loaded_kib: get("loaded")?,
            prepare_peak_kib: get("prepare_peak")?,
            peak_kib: get("peak")?,
        })
    }
}

/// Runs in a fresh process: loads `csv` exactly as a node does (`Dataset::load` with the
/// default normaliser), prepares the role exactly as `node/src/jobs/psi.rs` does, then builds the
/// role's inbound state with the **same container types and sizes** the crypto crate uses
/// (receiver: a sorted `Vec<[u8; 32]>` of the sender's `n` points + `n × 32` B of double-blinded
/// points + the `hit` vector; sender in cardinality mode: held points, the group shuffle copy
/// and the reply copies). Only the scalar multiplications are skipped: they do not allocate.
/// Prints one `PROBE ...` line and returns the figures.
pub fn probe_role(csv: &Path, role: ProbeRole, mode: PsiMode) -> anyhow::Result<ProbeReport> {
    use parley_crypto::psi::{Mode, Receiver, Sender};
    use parley_node::config::DatasetConfig;
    use parley_node::dataset::Dataset;

    let mut rep = ProbeReport {
        baseline_kib: rss_kib().unwrap_or(0),
        ..ProbeReport::default()
    };
    reset_peak_rss();
    let cfg: DatasetConfig = toml::from_str(
        dataset_toml(csv)
            .strip_prefix("[[datasets]]\n")
            .unwrap_or_default()
            .replace("[[datasets.columns]]", "[[columns]]")
            .as_str(),
    )?;
    let norm = Normalizer::new(Profile::Google, "US")?;
    let ds = Dataset::load(&cfg, &norm)?;
    rep.loaded_kib = rss_kib().unwrap_or(0);
    let n = ds.len();
    let mode = match mode {
        PsiMode::Match => Mode::Match,
        _ => Mode::Cardinality,
    };
    let ids = ds.identifiers(&[])?;
    match role {
        ProbeRole::Receiver => {
            let receiver = Receiver::new(mode, &ids, u64::MAX)?;
            drop(ids);
            rep.prepare_peak_kib = peak_rss_kib().unwrap_or(0);
            // Mirrors Receiver: on_sender_header reserves min(count, 2^20) points, then n are
            // pushed; finish sorts them and probes each double-blinded point.
            let mut sender_points: Vec<[u8; POINT_LEN]> = Vec::with_capacity(n.min(1 << 20));
            let mut double_points: Vec<u8> = Vec::with_capacity(n * POINT_LEN);
            for i in 0..n as u64 {
                let mut p = [0u8; POINT_LEN];
                p[..8].copy_from_slice(&i.to_le_bytes());
                p[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
                sender_points.push(p);
                p[16] = 1;
                double_points.extend_from_slice(&p);
            }
            sender_points.sort_unstable();
            let hit: Vec<bool> = double_points
                .chunks_exact(POINT_LEN)
                .map(|p| {
                    <[u8; POINT_LEN]>::try_from(p)
                        .is_ok_and(|p| sender_points.binary_search(&p).is_ok())
                })
                .collect();
            std::hint::black_box((&receiver, &sender_points, &double_points, &hit));
        }
        ProbeRole::Sender => {
            let flat: Vec<IdHash> = ids.into_iter().flatten().collect();
            let sender = Sender::new(mode, flat, u64::MAX)?;
            rep.prepare_peak_kib = peak_rss_kib().unwrap_or(0);
            if mode == Mode::Cardinality {
                // on_receiver_blinded keeps everything; finish_receiver_stream shuffles groups
                // into a new buffer; finish_incoming copies it into reply messages.
                let mut held: Vec<u8> = Vec::with_capacity(n.min(1 << 20) * POINT_LEN);
                held.resize(n * POINT_LEN, 7);
                let all = {
                    let groups: Vec<&[u8]> = held.chunks_exact(POINT_LEN).collect();
                    groups.concat()
                };
                drop(held);
                let replies: std::collections::VecDeque<Vec<u8>> =
                    all.chunks(16_384 * POINT_LEN).map(<[u8]>::to_vec).collect();
                std::hint::black_box((&all, &replies));
            }
            std::hint::black_box(&sender);
        }
    }
    rep.peak_kib = peak_rss_kib().unwrap_or(0);
    println!("{}", rep.line());
    Ok(rep)
}

/// Runs [`probe_role`] in a child process of this executable (`probe-role` subcommand).
pub fn probe_in_child(csv: &Path, role: ProbeRole, mode: PsiMode) -> anyhow::Result<ProbeReport> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .arg("probe-role")
        .arg("--csv")
        .arg(csv)
        .arg("--role")
        .arg(role.as_str())
        .arg("--mode")
        .arg(match mode {
            PsiMode::Match => "match",
            _ => "cardinality",
        })
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "memory probe ({}) failed: {}{}",
            role.as_str(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ProbeReport::parse(&stdout).context("memory probe printed no PROBE line")
}

// ───────────────────────────── driver ─────────────────────────────

/// Runs one size in `dir`; prints progress.
pub async fn bench_one(
    dir: &Path,
    n: usize,
    opts: &PsiBenchOptions,
) -> anyhow::Result<PsiBenchRow> {
    if n == 0 {
        bail!("sizes must be positive");
    }
    let k = ((n as f64) * opts.overlap).round() as usize;
    let (rp, sp) = persons(n, k);
    println!("── n = {n}: {k} shared records ({:?})", opts.mode);

    let t = Instant::now();
    let data: PathBuf = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let (r_csv, s_csv) = (data.join("a.csv"), data.join("b.csv"));
    {
        let (r_csv, s_csv, rp, sp) = (r_csv.clone(), s_csv.clone(), rp.clone(), sp.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            write_csv(&r_csv, 'A', rp)?;
            write_csv(&s_csv, 'B', sp)
        })
        .await
        .context("CSV writer panicked")??;
    }
    let generate = t.elapsed();

    let extra = opts
        .batch_points
        .map(|b| format!("[limits]\nbatch_points = {b}\n"))
        .unwrap_or_default();
    let mut setups = vec![
        NodeSetup::new(
            RECEIVER,
            dataset_toml(&r_csv),
            open_policy(&[SENDER], &[DATASET]),
        ),
        NodeSetup::new(
            SENDER,
            dataset_toml(&s_csv),
            open_policy(&[RECEIVER], &[DATASET]),
        ),
    ];
    for s in &mut setups {
        s.extra_toml = extra.clone();
    }

    let peak_reset = reset_peak_rss();
    let t = Instant::now();
    let fed = Federation::start(dir, setups).await?;
    let federation_start = t.elapsed();
    println!(
        "   federation up in {:.2} s (both nodes loaded, normalised and hashed {n} emails)",
        federation_start.as_secs_f64()
    );

    let rss_before_job_kib = rss_kib();
    let load_before = loadavg();
    let cpu0 = cpu_secs();
    let sampler = RssSampler::start();
    let spec = psi_spec(opts.mode, (RECEIVER, DATASET), (SENDER, DATASET), 0);
    let run = run_job_timed(&fed, spec).await;
    let (sampled_peak, sampled_at) = sampler.finish();
    let cpu1 = cpu_secs();
    let e2e_peak_rss_kib = peak_rss_kib();
    let (job, e2e, timeline) = match run {
        Ok(r) => r,
        Err(e) => {
            let _ = fed.shutdown().await;
            return Err(e);
        }
    };
    fed.shutdown().await?;
    let receiver_elapsed = check_result(&job, opts.mode, n, k, rp.clone())?;
    println!(
        "   e2e {:.2} s (receiver elapsed {:.2} s), result = {k} = truth ✓; sampled RSS peak {} MiB at +{:.1} s",
        e2e.as_secs_f64(),
        receiver_elapsed.as_secs_f64(),
        mib(Some(sampled_peak)),
        sampled_at
    );
    for e in &timeline {
        println!("     +{:>7.2} s  {}", e.at, e.what);
    }

    // Raw EC on the same identifiers, federation stopped, same rayon pool.
    let (x, y) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok((id_hashes(rp)?, id_hashes(sp)?))
    })
    .await
    .context("hashing panicked")??;
    reset_peak_rss();
    let cpu2 = cpu_secs();
    let (ec, hits) = tokio::task::spawn_blocking(move || raw_ec(&x, &y))
        .await
        .context("raw EC panicked")??;
    let cpu3 = cpu_secs();
    let ec_peak_rss_kib = peak_rss_kib();
    if hits != k {
        bail!("raw EC check: {hits} double-blinded matches, expected {k}");
    }
    let load_after = loadavg();
    let probes = if opts.node_memory {
        let mode = opts.mode;
        let (r_csv, s_csv) = (r_csv.clone(), s_csv.clone());
        let p = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                probe_in_child(&r_csv, ProbeRole::Receiver, mode)?,
                probe_in_child(&s_csv, ProbeRole::Sender, mode)?,
            ))
        })
        .await
        .context("memory probe panicked")??;
        println!(
            "   per-node memory probe (separate processes; peak RSS MiB): receiver {} (data loaded {}, after prepare {}), sender {} (data loaded {}, after prepare {}), empty process {}",
            mib(Some(p.0.peak_kib)),
            mib(Some(p.0.loaded_kib)),
            mib(Some(p.0.prepare_peak_kib)),
            mib(Some(p.1.peak_kib)),
            mib(Some(p.1.loaded_kib)),
            mib(Some(p.1.prepare_peak_kib)),
            mib(Some(p.0.baseline_kib)),
        );
        Some(p)
    } else {
        None
    };
    let row = PsiBenchRow {
        n,
        overlap: k,
        generate,
        federation_start,
        e2e,
        receiver_elapsed,
        e2e_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        ec,
        ec_cpu: cpu2.zip(cpu3).map(|(a, b)| b - a),
        e2e_peak_rss_kib,
        rss_before_job_kib,
        ec_peak_rss_kib,
        peak_reset,
        load_before,
        load_after,
        timeline,
        probes,
    };
    let per_op = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "   raw EC {:.2} s: receiver blind {:.2} s ({:.1} µs/op), sender blind {:.2} s ({:.1}), sender reblind {:.2} s ({:.1}), receiver reblind {:.2} s ({:.1}) [wall µs per op, all cores]",
        ec.total().as_secs_f64(),
        ec.receiver_blind.as_secs_f64(),
        per_op(ec.receiver_blind),
        ec.sender_blind.as_secs_f64(),
        per_op(ec.sender_blind),
        ec.sender_reblind.as_secs_f64(),
        per_op(ec.sender_reblind),
        ec.receiver_reblind.as_secs_f64(),
        per_op(ec.receiver_reblind),
    );
    println!(
        "   ratio e2e/raw {:.2}; CPU s during e2e {}, during raw EC {}; load avg {} -> {}",
        row.ratio(),
        fmt_opt(row.e2e_cpu),
        fmt_opt(row.ec_cpu),
        row.load_before,
        row.load_after
    );
    Ok(row)
}

pub(crate) fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| format!("{v:.1}"))
}

/// Runs every size (each in its own temporary directory, deleted afterwards) and returns the
/// rows; prints the summary table.
pub async fn run_psi_bench(opts: &PsiBenchOptions) -> anyhow::Result<Vec<PsiBenchRow>> {
    check_overlap_and_epsilon(opts.overlap, None)?;
    println!(
        "parley-bench psi: mode {:?}, overlap {}",
        opts.mode, opts.overlap
    );
    let rows = run_sizes(&opts.sizes, |dir, n| async move {
        bench_one(&dir, n, opts).await
    })
    .await?;
    print!("\n{}", table(&rows));
    Ok(rows)
}

/// Refuses an overlap outside 0..=1 and, when given, an epsilon that is not positive.
pub(crate) fn check_overlap_and_epsilon(overlap: f64, epsilon: Option<f64>) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&overlap) {
        bail!("--overlap must be within 0..=1");
    }
    if epsilon.is_some_and(|e| !(e.is_finite() && e > 0.0)) {
        bail!("--epsilon must be positive");
    }
    Ok(())
}

/// Prints the machine line (cores, rayon threads, dalek backend), then runs `one` once per
/// size, each in its own temporary directory (deleted afterwards); stops at the first error.
pub(crate) async fn run_sizes<R, F, Fut>(sizes: &[usize], mut one: F) -> anyhow::Result<Vec<R>>
where
    F: FnMut(PathBuf, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "cores: {cores}{}; curve25519-dalek backend: {}",
        std::env::var("RAYON_NUM_THREADS")
            .map(|v| format!(" (RAYON_NUM_THREADS={v})"))
            .unwrap_or_default(),
        dalek_backend()
    );
    let mut rows = Vec::new();
    for &n in sizes {
        let tmp = tempfile::Builder::new().prefix("parley-bench-").tempdir()?;
        let row = one(tmp.path().to_path_buf(), n).await;
        drop(tmp);
        rows.push(row?);
    }
    Ok(rows)
}

/// The summary table (Markdown).
pub fn table(rows: &[PsiBenchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| n | e2e s | receiver elapsed s | raw EC s | ratio e2e/raw | e2e CPU s | raw CPU s | peak RSS MiB (coord + 2 nodes) | RSS before job MiB | raw-EC peak RSS MiB | probe peak MiB receiver / sender | fed. start s | load avg before -> after |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {}{} | {} | {} | {} | {:.2} | {} -> {} |",
            r.n,
            r.e2e.as_secs_f64(),
            r.receiver_elapsed.as_secs_f64(),
            r.ec.total().as_secs_f64(),
            r.ratio(),
            fmt_opt(r.e2e_cpu),
            fmt_opt(r.ec_cpu),
            mib(r.e2e_peak_rss_kib),
            if r.peak_reset { "" } else { " (lifetime)" },
            mib(r.rss_before_job_kib),
            mib(r.ec_peak_rss_kib),
            r.probes.map_or_else(
                || "-".to_string(),
                |(a, b)| format!("{} / {}", mib(Some(a.peak_kib)), mib(Some(b.peak_kib)))
            ),
            r.federation_start.as_secs_f64(),
            r.load_before,
            r.load_after,
        );
    }
    s
}

// ───────────────────────────── PSI sum ─────────────────────────────

/// Lower clamping bound of the sum bench, in currency units.
pub const SUM_LOWER: f64 = 0.0;
/// Upper clamping bound of the sum bench, in currency units.
pub const SUM_UPPER: f64 = 500.0;
/// [`SUM_UPPER`] in cents (the job uses `decimals = 2`).
const SUM_UPPER_CENTS: u64 = 50_000;
/// Privacy budget of both datasets: large enough for any number of bench jobs.
pub(crate) const SUM_BUDGET: f64 = 1e9;
/// Released values must be within this many 95 % accuracy bounds of the truth.
pub(crate) const SUM_TOLERANCE: f64 = 6.0;

/// Options of `parley-bench sum`.
#[derive(Clone, Debug)]
pub struct SumBenchOptions {
    /// Records (= identifiers) per party, one run each.
    pub sizes: Vec<usize>,
    /// Fraction of each party's identifiers the other party also holds (0..=1).
    pub overlap: f64,
    /// Laplace epsilon of the sum and, separately, of the count (large: tiny noise).
    pub epsilon: f64,
    /// `[limits] batch_points` for both nodes (`None`: the node default).
    pub batch_points: Option<u32>,
    /// Also time building a fresh discrete-log table like the one P2 builds once per process
    /// (informational, not part of the raw total).
    pub table_build: bool,
}

/// Wall times of the raw group operations of one intersection-sum, in protocol order.
#[derive(Clone, Copy, Debug, Default)]
pub struct SumEcTimes {
    /// P1 `blind_ids(X)`: hash + mul + compress, `n` ops.
    pub p1_blind: Duration,
    /// P2 `reblind(X^a)`: decompress + mul + compress, `n` ops.
    pub p2_reblind: Duration,
    /// P2 `blind_ids(Y)`, `n` ops.
    pub p2_blind: Duration,
    /// P2 `encrypt_batch` of its `n` values (fixed-base multiplications).
    pub p2_encrypt: Duration,
    /// P1 `reblind(Y^b)`, `n` ops.
    pub p1_reblind: Duration,
    /// P1: decode the `k` matching ciphertexts and add them up.
    pub p1_sum: Duration,
    /// P1 noise + re-randomisation of the sum, then P2's decryption (table already built).
    pub rerandomize_decrypt: Duration,
}

impl SumEcTimes {
    /// Sum of all passes.
    pub fn total(&self) -> Duration {
        self.p1_blind
            + self.p2_reblind
            + self.p2_blind
            + self.p2_encrypt
            + self.p1_reblind
            + self.p1_sum
            + self.rerandomize_decrypt
    }
}

/// What [`raw_sum_ec`] measured and computed.
#[derive(Clone, Copy, Debug)]
pub struct SumRaw {
    /// Times of the unavoidable passes.
    pub times: SumEcTimes,
    /// Pairs whose double-blinded point matched (must be `k`).
    pub hits: usize,
    /// Decrypted sum including `noise` (cents).
    pub decrypted: i64,
    /// Noise P1 added inside the ciphertext (cents).
    pub noise: i64,
    /// Process CPU seconds (all threads) during the timed passes.
    pub cpu: Option<f64>,
    /// Not in the total: decoding every re-blinded point and every ciphertext once (`3n`
    /// decompressions), which the node does to validate what its peer sent.
    pub validation_decode: Duration,
}

/// Measurements of one size of `parley-bench sum`.
#[derive(Clone, Debug)]
pub struct SumBenchRow {
    /// Records per party.
    pub n: usize,
    /// True intersection (records = identifiers).
    pub overlap: usize,
    /// `Federation::start`.
    pub federation_start: Duration,
    /// Submit → terminal job event.
    pub e2e: Duration,
    /// P2's (the receiver's) reported protocol time.
    pub receiver_elapsed: Duration,
    /// Process CPU seconds during the job.
    pub e2e_cpu: Option<f64>,
    /// Exact clamped sum over the intersection, in currency units.
    pub truth: f64,
    /// Released noisy sum.
    pub noisy_sum: f64,
    /// Released 95 % accuracy bound of the sum.
    pub sum_accuracy95: f64,
    /// Released noisy count.
    pub noisy_count: i64,
    /// Raw passes.
    pub raw: SumRaw,
    /// Building a fresh `2^22`-step discrete-log table, if measured: wall time and process CPU
    /// seconds.
    pub table_build: Option<(Duration, Option<f64>)>,
    /// Peak RSS (KiB) from before `Federation::start` to the end of the job.
    pub e2e_peak_rss_kib: Option<u64>,
    /// Load averages before the job.
    pub load_before: String,
    /// Load averages after the raw passes.
    pub load_after: String,
    /// Job state changes and progress stage boundaries.
    pub timeline: Vec<TimelineEntry>,
}

impl SumBenchRow {
    /// End-to-end time over raw total.
    pub fn ratio(&self) -> f64 {
        self.e2e.as_secs_f64() / self.raw.times.total().as_secs_f64().max(1e-9)
    }

    /// Process CPU seconds during the job over those of the raw passes.
    pub fn cpu_ratio(&self) -> Option<f64> {
        self.e2e_cpu.zip(self.raw.cpu).map(|(e, r)| e / r.max(1e-9))
    }
}

/// Amount of person `p` in P2's file, in cents: deterministic, in [1.00, 550.00], so about one
/// value in eleven is above [`SUM_UPPER`] and gets clamped.
pub fn bench_amount_cents(p: u64) -> u64 {
    100 + (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 54_901
}

/// P2's value of person `p` after clamping to [`SUM_LOWER`, `SUM_UPPER`], in cents.
fn clamped_cents(p: u64) -> u64 {
    bench_amount_cents(p).min(SUM_UPPER_CENTS)
}

/// P2's file: `customer_id,email,amount`.
fn write_sum_csv(path: &Path, persons: std::ops::Range<u64>) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 16, f);
    w.write_all(b"customer_id,email,amount\n")?;
    for p in persons {
        let c = bench_amount_cents(p);
        writeln!(w, "A{p:010},{},{}.{:02}", bench_email(p), c / 100, c % 100)?;
    }
    w.flush()?;
    Ok(())
}

/// P2's dataset: the email column, the `amount` value column and a budget.
fn sum_values_toml(csv: &Path) -> String {
    dataset_toml(csv)
        + "\n[[datasets.columns]]\nname = \"amount\"\nkind = \"value\"\n"
        + &budget_toml(SUM_BUDGET)
}

/// Decodes 64-byte ciphertexts on all cores (scoped threads, one contiguous slice each; as
/// many as the rayon pool has threads).
pub(crate) fn decode_ciphertexts(cts: &[&[u8; CIPHERTEXT_LEN]]) -> anyhow::Result<Vec<Ciphertext>> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per = cts.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cts
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| Ciphertext::from_bytes(&c[..]))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(cts.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("a decoding thread panicked"))?;
            out.extend(part.context("decoding a ciphertext")?);
        }
        Ok(out)
    })
}

/// Decodes 32-byte points on all cores, two at a time through the ciphertext decoder (the
/// crypto crate exposes no bare point decoder; a ciphertext is two points); an odd last point
/// is paired with itself.
pub(crate) fn decode_points(points: &[u8]) -> anyhow::Result<()> {
    let pairs: Vec<[u8; CIPHERTEXT_LEN]> = points
        .chunks(CIPHERTEXT_LEN)
        .map(|c| {
            let mut buf = [0u8; CIPHERTEXT_LEN];
            buf[..c.len()].copy_from_slice(c);
            if c.len() == POINT_LEN {
                buf[POINT_LEN..].copy_from_slice(c);
            }
            buf
        })
        .collect();
    let refs: Vec<&[u8; CIPHERTEXT_LEN]> = pairs.iter().collect();
    decode_ciphertexts(&refs).map(|_| ())
}

/// Blinded and encrypted streams of an intersection-aggregate: `H(x)^ab` in `x`'s order,
/// `H(y)^ba` in `y`'s order, and the ciphertexts of `values` in order.
pub(crate) type Blinded = (Vec<u8>, Vec<u8>, Vec<[u8; CIPHERTEXT_LEN]>);

/// The five passes over whole streams that every intersection-aggregate run does (sum and
/// lift), with fresh PSI keys, back to back on the global rayon pool, each timed into `times`:
/// P1 blinds `x`, P2 re-blinds them, P2 blinds `y` and encrypts `values` (rows of
/// `bounds.len()` columns, each within its public bound, as the node encrypts them) under `pk`,
/// P1 re-blinds P2's points.
pub(crate) fn blind_and_encrypt(
    pk: &elgamal::PublicKey,
    x: &[IdHash],
    y: &[IdHash],
    values: &[u64],
    bounds: &[u64],
    times: &mut SumEcTimes,
) -> anyhow::Result<Blinded> {
    let a = PsiKey::random()?;
    let b = PsiKey::random()?;
    let t = Instant::now();
    let xa = blind_ids(&a, x);
    times.p1_blind = t.elapsed();
    let t = Instant::now();
    let xab = reblind(&b, &xa)?;
    times.p2_reblind = t.elapsed();
    drop(xa);
    let t = Instant::now();
    let yb = blind_ids(&b, y);
    times.p2_blind = t.elapsed();
    let t = Instant::now();
    let cts = elgamal::encrypt_rows(pk, values, bounds)?;
    times.p2_encrypt = t.elapsed();
    let t = Instant::now();
    let yba = reblind(&a, &yb)?;
    times.p1_reblind = t.elapsed();
    Ok((xab, yba, cts))
}

/// The raw group operations of one intersection-sum on `x` (P1's identifiers) and `y` with
/// `values` (P2's, clamped, in cents), back to back on the global rayon pool, in protocol
/// order; see [`SumEcTimes`]. The matching pairs are found untimed (sorted double-blinded set),
/// and the decrypted sum is returned as a check.
pub fn raw_sum_ec(
    x: &[IdHash],
    y: &[IdHash],
    values: &[u64],
    epsilon: f64,
) -> anyhow::Result<SumRaw> {
    if y.len() != values.len() {
        bail!("{} identifiers but {} values", y.len(), values.len());
    }
    let sk = elgamal::SecretKey::random()?;
    let pk = sk.public_key();
    let cal = dp::calibrate(dp::Mechanism::Laplace, SUM_UPPER_CENTS, epsilon, 0.0)?;
    let noise = cal.noise()?;
    // The node's decryption range: [-bound, |Y| * upper + bound].
    let bound = cal.accuracy(1e-9)?.ceil() as i64 + 1;
    let max = (y.len() as i64)
        .saturating_mul(SUM_UPPER_CENTS as i64)
        .saturating_add(bound);
    // The table exists already when a federation ran in this process; wait for it untimed.
    let table = DlogTable::global();

    let mut times = SumEcTimes::default();
    let cpu0 = cpu_secs();
    let (xab, yba, cts) = blind_and_encrypt(&pk, x, y, values, &[SUM_UPPER_CENTS], &mut times)?;
    let cpu1 = cpu_secs();

    let mut set: Vec<&[u8]> = xab.chunks_exact(POINT_LEN).collect();
    set.sort_unstable();
    let matched: Vec<&[u8; CIPHERTEXT_LEN]> = yba
        .chunks_exact(POINT_LEN)
        .zip(&cts)
        .filter(|(p, _)| set.binary_search(p).is_ok())
        .map(|(_, c)| c)
        .collect();
    drop(set);

    let cpu2 = cpu_secs();
    let t = Instant::now();
    let decoded = decode_ciphertexts(&matched)?;
    let sum = elgamal::sum(&decoded);
    times.p1_sum = t.elapsed();
    let t = Instant::now();
    let answer = sum.add_plain(noise).rerandomize(&pk)?;
    let decrypted = sk.vartime_decrypt(&answer, -bound, max, table)?;
    times.rerandomize_decrypt = t.elapsed();
    let cpu3 = cpu_secs();
    let cpu = match (cpu0, cpu1, cpu2, cpu3) {
        (Some(c0), Some(c1), Some(c2), Some(c3)) => Some((c1 - c0) + (c3 - c2)),
        _ => None,
    };

    // Informational: what the node additionally decodes to validate its peer's streams.
    let t = Instant::now();
    decode_points(&xab)?;
    let all: Vec<&[u8; CIPHERTEXT_LEN]> = cts.iter().collect();
    decode_ciphertexts(&all)?;
    let validation_decode = t.elapsed();
    Ok(SumRaw {
        times,
        hits: matched.len(),
        decrypted,
        noise,
        cpu,
        validation_decode,
    })
}

/// Checks a released sum job against the truth; returns (noisy sum, its accuracy95, noisy
/// count, receiver elapsed).
fn check_sum_result(
    job: &Job,
    n: usize,
    k: usize,
    truth: f64,
) -> anyhow::Result<(f64, f64, i64, Duration)> {
    if job.state() != JobState::Succeeded {
        bail!("sum job at n = {n} ended {:?}: {}", job.state(), job.reason);
    }
    let psi = job
        .result
        .as_ref()
        .and_then(|r| r.psi())
        .context("succeeded job without a PSI result")?;
    let sum = psi
        .sum
        .as_ref()
        .context("sum job released no sum (suppressed?)")?;
    let acc = |i: &Option<parley_proto::NoiseInfo>| i.as_ref().map_or(0.0, |i| i.accuracy95);
    let (sum_acc, count_acc) = (acc(&sum.sum_noise), acc(&sum.count_noise));
    if (sum.noisy_sum - truth).abs() > SUM_TOLERANCE * sum_acc + 1e-6 {
        bail!(
            "WRONG SUM at n = {n}: released {:.2}, true clamped sum {truth:.2}, 95% bound {sum_acc:.2} (allowed {SUM_TOLERANCE} x)",
            sum.noisy_sum
        );
    }
    if (sum.noisy_count as f64 - k as f64).abs() > SUM_TOLERANCE * count_acc + 1e-6 {
        bail!(
            "WRONG COUNT at n = {n}: released {}, true intersection {k}, 95% bound {count_acc:.3}",
            sum.noisy_count
        );
    }
    let n64 = n as u64;
    if psi.receiver_records != n64
        || psi.receiver_identifiers != n64
        || psi.sender_identifiers != n64
    {
        bail!(
            "receiver reported {} records / {} identifiers and {} sender identifiers, expected {n} each",
            psi.receiver_records,
            psi.receiver_identifiers,
            psi.sender_identifiers
        );
    }
    Ok((
        sum.noisy_sum,
        sum_acc,
        sum.noisy_count,
        Duration::from_millis(psi.elapsed_ms),
    ))
}

/// Runs one size of `parley-bench sum` in `dir`; prints progress.
pub async fn bench_sum_one(
    dir: &Path,
    n: usize,
    opts: &SumBenchOptions,
) -> anyhow::Result<SumBenchRow> {
    if n == 0 {
        bail!("sizes must be positive");
    }
    let k = ((n as f64) * opts.overlap).round() as usize;
    // P2 (values, receiver) holds persons 0..n, P1 (sender) n-k..2n-k.
    let (p2_persons, p1_persons) = persons(n, k);
    let shared = p1_persons.start..p2_persons.end;
    let truth_cents: u64 = shared.clone().map(clamped_cents).sum();
    let truth = truth_cents as f64 / 100.0;
    println!(
        "── n = {n}: {k} shared identifiers, true clamped sum {truth:.2} ({} of them clamped)",
        shared
            .clone()
            .filter(|&p| bench_amount_cents(p) > SUM_UPPER_CENTS)
            .count()
    );

    let data: PathBuf = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let (p2_csv, p1_csv) = (data.join("a.csv"), data.join("b.csv"));
    {
        let (p2_csv, p1_csv, p2p, p1p) = (
            p2_csv.clone(),
            p1_csv.clone(),
            p2_persons.clone(),
            p1_persons.clone(),
        );
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            write_sum_csv(&p2_csv, p2p)?;
            write_csv(&p1_csv, 'B', p1p)
        })
        .await
        .context("CSV writer panicked")??;
    }
    let extra = opts
        .batch_points
        .map(|b| format!("[limits]\nbatch_points = {b}\n"))
        .unwrap_or_default();
    let mut setups = vec![
        NodeSetup::new(
            RECEIVER,
            sum_values_toml(&p2_csv),
            open_policy(&[SENDER], &[DATASET]),
        ),
        NodeSetup::new(
            SENDER,
            dataset_toml(&p1_csv) + &budget_toml(SUM_BUDGET),
            open_policy(&[RECEIVER], &[DATASET]),
        ),
    ];
    for s in &mut setups {
        s.extra_toml = extra.clone();
    }

    reset_peak_rss();
    let t = Instant::now();
    let fed = Federation::start(dir, setups).await?;
    let federation_start = t.elapsed();
    println!(
        "   federation up in {:.2} s",
        federation_start.as_secs_f64()
    );
    let load_before = loadavg();
    let cpu0 = cpu_secs();
    let spec = sum_spec(
        (RECEIVER, DATASET),
        "email",
        (SENDER, DATASET),
        &["email"],
        SUM_LOWER,
        SUM_UPPER,
        opts.epsilon,
    );
    let run = run_job_timed(&fed, spec).await;
    let cpu1 = cpu_secs();
    let e2e_peak_rss_kib = peak_rss_kib();
    let (job, e2e, timeline) = match run {
        Ok(r) => r,
        Err(e) => {
            let _ = fed.shutdown().await;
            return Err(e);
        }
    };
    fed.shutdown().await?;
    let (noisy_sum, sum_accuracy95, noisy_count, receiver_elapsed) =
        check_sum_result(&job, n, k, truth)?;
    println!(
        "   e2e {:.2} s (receiver elapsed {:.2} s); released sum {noisy_sum:.2} vs truth {truth:.2} (diff {:+.2}, 95% bound {sum_accuracy95:.2}), count {noisy_count} vs {k} ✓",
        e2e.as_secs_f64(),
        receiver_elapsed.as_secs_f64(),
        noisy_sum - truth,
    );
    for e in &timeline {
        println!("     +{:>7.2} s  {}", e.at, e.what);
    }

    // Raw group operations on the same identifiers and values, federation stopped.
    let epsilon = opts.epsilon;
    let table_build = opts.table_build;
    let (raw, build) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let x = id_hashes(p1_persons)?;
        let y = id_hashes(p2_persons.clone())?;
        let values: Vec<u64> = p2_persons.map(clamped_cents).collect();
        let raw = raw_sum_ec(&x, &y, &values, epsilon)?;
        let build = if table_build {
            let c = cpu_secs();
            let t = Instant::now();
            let table = DlogTable::new(elgamal::DEFAULT_BABY_BITS)?;
            let d = t.elapsed();
            let c = cpu_secs().zip(c).map(|(b, a)| b - a);
            drop(table);
            Some((d, c))
        } else {
            None
        };
        Ok((raw, build))
    })
    .await
    .context("raw sum passes panicked")??;
    let load_after = loadavg();
    if raw.hits != k {
        bail!(
            "raw sum check: {} double-blinded matches, expected {k}",
            raw.hits
        );
    }
    if raw.decrypted != truth_cents as i64 + raw.noise {
        bail!(
            "raw sum check: decrypted {} but the truth plus noise is {}",
            raw.decrypted,
            truth_cents as i64 + raw.noise
        );
    }
    let row = SumBenchRow {
        n,
        overlap: k,
        federation_start,
        e2e,
        receiver_elapsed,
        e2e_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        truth,
        noisy_sum,
        sum_accuracy95,
        noisy_count,
        raw,
        table_build: build,
        e2e_peak_rss_kib,
        load_before,
        load_after,
        timeline,
    };
    let r = &raw.times;
    let per = |d: Duration, ops: usize| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
    println!(
        "   raw {:.2} s: P1 blind {:.2} s ({:.1} µs/op), P2 reblind {:.2} s ({:.1}), P2 blind {:.2} s ({:.1}), P2 encrypt {:.2} s ({:.1}), P1 reblind {:.2} s ({:.1}), P1 sum of {k} {:.3} s ({:.2}), rerandomise + decrypt {:.3} s [wall µs per op, all cores]",
        r.total().as_secs_f64(),
        r.p1_blind.as_secs_f64(),
        per(r.p1_blind, n),
        r.p2_reblind.as_secs_f64(),
        per(r.p2_reblind, n),
        r.p2_blind.as_secs_f64(),
        per(r.p2_blind, n),
        r.p2_encrypt.as_secs_f64(),
        per(r.p2_encrypt, n),
        r.p1_reblind.as_secs_f64(),
        per(r.p1_reblind, n),
        r.p1_sum.as_secs_f64(),
        per(r.p1_sum, k),
        r.rerandomize_decrypt.as_secs_f64(),
    );
    println!(
        "   not in raw: validation decodes (n points + n ciphertexts = 3n decompressions) {:.2} s; fresh 2^{} dlog table build {}",
        raw.validation_decode.as_secs_f64(),
        elgamal::DEFAULT_BABY_BITS,
        build.map_or_else(
            || "not measured".to_string(),
            |(d, c)| format!("{:.2} s ({} CPU s)", d.as_secs_f64(), fmt_opt(c))
        )
    );
    println!(
        "   ratio e2e/raw {:.2} (CPU-time ratio {}); CPU s during e2e {}, during the raw passes {}; load avg {} -> {}",
        row.ratio(),
        row.cpu_ratio()
            .map_or_else(|| "?".to_string(), |c| format!("{c:.2}")),
        fmt_opt(row.e2e_cpu),
        fmt_opt(row.raw.cpu),
        row.load_before,
        row.load_after
    );
    Ok(row)
}

/// Runs every size of `parley-bench sum` (each in its own temporary directory) and prints the
/// summary tables.
pub async fn run_sum_bench(opts: &SumBenchOptions) -> anyhow::Result<Vec<SumBenchRow>> {
    check_overlap_and_epsilon(opts.overlap, Some(opts.epsilon))?;
    println!(
        "parley-bench sum: overlap {}, clamp [{SUM_LOWER}, {SUM_UPPER}], decimals 2, epsilon {} (sum) + {} (count)",
        opts.overlap, opts.epsilon, opts.epsilon
    );
    let rows = run_sizes(&opts.sizes, |dir, n| async move {
        bench_sum_one(&dir, n, opts).await
    })
    .await?;
    print!("\n{}\n{}", sum_table(&rows), sum_components_table(&rows));
    Ok(rows)
}

/// The summary table of `parley-bench sum` (Markdown).
pub fn sum_table(rows: &[SumBenchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| n | k | e2e s | receiver elapsed s | raw total s | ratio e2e/raw | e2e CPU s | raw CPU s | CPU ratio | released − true sum | 95% bound | peak RSS MiB (coord + 2 nodes) | fed. start s | load avg before -> after |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:+.2} | {:.2} | {} | {:.2} | {} -> {} |",
            r.n,
            r.overlap,
            r.e2e.as_secs_f64(),
            r.receiver_elapsed.as_secs_f64(),
            r.raw.times.total().as_secs_f64(),
            r.ratio(),
            fmt_opt(r.e2e_cpu),
            fmt_opt(r.raw.cpu),
            r.cpu_ratio()
                .map_or_else(|| "?".to_string(), |c| format!("{c:.2}")),
            r.noisy_sum - r.truth,
            r.sum_accuracy95,
            mib(r.e2e_peak_rss_kib),
            r.federation_start.as_secs_f64(),
            r.load_before,
            r.load_after,
        );
    }
    s
}

/// Per-component raw times of `parley-bench sum` (Markdown, seconds wall).
pub fn sum_components_table(rows: &[SumBenchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| n | P1 blind X | P2 reblind X^a | P2 blind Y | P2 encrypt n | P1 reblind Y^b | P1 sum k | rerand. + decrypt | raw total | (validation decodes) | (dlog table build s / CPU s) |"
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let build = r.table_build.map_or_else(
            || "-".to_string(),
            |(d, c)| format!("{:.2} / {}", d.as_secs_f64(), fmt_opt(c)),
        );
        s += &components_row(r.n, &r.raw.times, r.raw.validation_decode, &build);
    }
    s
}

/// One Markdown row of a raw-components table (`sum`, `lift`): `n`, the passes of `t` in
/// protocol order, their total, the validation decodes and `extra`, in seconds wall.
pub(crate) fn components_row(
    n: usize,
    t: &SumEcTimes,
    validation: Duration,
    extra: &str,
) -> String {
    format!(
        "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.2} | {:.2} | {extra} |\n",
        t.p1_blind.as_secs_f64(),
        t.p2_reblind.as_secs_f64(),
        t.p2_blind.as_secs_f64(),
        t.p2_encrypt.as_secs_f64(),
        t.p1_reblind.as_secs_f64(),
        t.p1_sum.as_secs_f64(),
        t.rerandomize_decrypt.as_secs_f64(),
        t.total().as_secs_f64(),
        validation.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_distinct_and_normal() -> anyhow::Result<()> {
        let ids = id_hashes(0..2000)?;
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), 2000);
        let norm = Normalizer::new(Profile::Google, "US")?;
        let e = bench_email(42);
        assert_eq!(norm.normalize_email(&e).ok().as_deref(), Some(e.as_str()));
        let (r, s) = persons(10, 4);
        assert_eq!((r.end - r.start, s.end - s.start), (10, 10));
        assert_eq!(r.filter(|p| s.contains(p)).count(), 4);
        Ok(())
    }

    #[test]
    fn raw_ec_counts_the_overlap() -> anyhow::Result<()> {
        let x = id_hashes(0..300)?;
        let y = id_hashes(200..500)?;
        let (_, hits) = raw_ec(&x, &y)?;
        assert_eq!(hits, 100);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_end_to_end_run_matches_the_truth() -> anyhow::Result<()> {
        parley_net::install_crypto_provider();
        let tmp = tempfile::tempdir()?;
        for mode in [PsiMode::Match, PsiMode::Cardinality] {
            let opts = PsiBenchOptions {
                sizes: vec![600],
                mode,
                overlap: 0.25,
                batch_points: Some(128),
                node_memory: false,
            };
            let dir = tmp.path().join(format!("{mode:?}"));
            let row = bench_one(&dir, 600, &opts).await?;
            assert_eq!(row.overlap, 150);
            assert!(row.ec.total() > Duration::ZERO);
        }
        Ok(())
    }

    #[test]
    fn sum_data_and_raw_passes_agree_with_the_truth() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let csv = tmp.path().join("a.csv");
        write_sum_csv(&csv, 0..300)?;
        let text = std::fs::read_to_string(&csv)?;
        let mut clamped = 0;
        for (p, line) in text.lines().skip(1).enumerate() {
            let amount = line.rsplit(',').next().unwrap_or_default();
            let cents = bench_amount_cents(p as u64);
            assert!((100..=55_000).contains(&cents));
            assert_eq!(amount, format!("{}.{:02}", cents / 100, cents % 100));
            clamped += usize::from(cents > SUM_UPPER_CENTS);
        }
        assert!(clamped > 0, "no value above the clamping bound");
        let x = id_hashes(200..500)?;
        let y = id_hashes(0..300)?;
        let values: Vec<u64> = (0..300).map(clamped_cents).collect();
        let raw = raw_sum_ec(&x, &y, &values, 1000.0)?;
        assert_eq!(raw.hits, 100);
        let truth: u64 = (200..300).map(clamped_cents).sum();
        assert_eq!(raw.decrypted, truth as i64 + raw.noise);
        assert!(raw.times.total() > Duration::ZERO);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_sum_run_matches_the_truth_within_the_noise() -> anyhow::Result<()> {
        parley_net::install_crypto_provider();
        let tmp = tempfile::tempdir()?;
        let opts = SumBenchOptions {
            sizes: vec![2000],
            overlap: 0.5,
            epsilon: 1000.0,
            batch_points: Some(512),
            table_build: false,
        };
        // bench_sum_one fails unless the released sum and count are within 6 x their 95 %
        // bounds of the truth and the raw passes reproduce the truth exactly.
        let row = bench_sum_one(tmp.path(), 2000, &opts).await?;
        assert_eq!(row.overlap, 1000);
        assert_eq!(row.noisy_count, 1000);
        assert!((row.noisy_sum - row.truth).abs() <= 6.0 * row.sum_accuracy95);
        assert!(row.sum_accuracy95 > 0.0 && row.sum_accuracy95 < 5.0);
        assert!(row.raw.times.total() > Duration::ZERO && row.ratio() > 0.0);
        assert!(sum_table(std::slice::from_ref(&row)).contains("| 2000 | 1000 |"));
        assert!(sum_components_table(&[row]).starts_with("| n | P1 blind X"));
        Ok(())
    }

    #[test]
    fn memory_probe_runs_in_process() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let csv = tmp.path().join("a.csv");
        write_csv(&csv, 'A', 0..500)?;
        for role in [ProbeRole::Receiver, ProbeRole::Sender] {
            for mode in [PsiMode::Match, PsiMode::Cardinality] {
                let r = probe_role(&csv, role, mode)?;
                assert!(r.peak_kib > 0 && r.loaded_kib > 0);
                assert_eq!(ProbeReport::parse(&r.line()), Some(r));
            }
        }
        Ok(())
    }

    #[test]
    fn proc_readers_work() {
        assert!(rss_kib().is_some_and(|r| r > 0));
        assert!(cpu_secs().is_some());
        assert!(!loadavg().is_empty());
    }
}
