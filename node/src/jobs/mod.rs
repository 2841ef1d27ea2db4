//! Running one job at a node. [`run_blocking`] chooses the kind's module with one exhaustive
//! `match` on the job's [`Kind`]; an offer whose kind this node version does not know never
//! gets here (it is refused when `parley_jobs::Job::try_from` fails at the offer).
//!
//! * `psi`, `psi_sum`, `lift`, `overlap`: the two PSI roles of `parley_crypto::psi` (match,
//!   cardinality) and `parley_crypto::grouped` (sum: one group and one value column; lift: one
//!   group per arm × cohort cell and several columns; overlap: one group per P1 segment and one
//!   indicator column per P2 segment; all on `psi_sum`'s parties), run by the two-party
//!   stream driver (`two_party`) over sealed envelopes (`envelope`) that the coordinator
//!   relays;
//! * `dp_stats`, `rfm`: local releases (`dp` holds what the DP kinds share);
//! * `secure_sum`: this node's client part of a secure aggregation, run by the
//!   coordinator-rounds driver (`rounds`).
//!
//! Every wait on the link goes through one helper (`wait`) that also honours the job's
//! cancellation and the node's job deadline.
//!
//! # Budget
//! Every DP release is charged to this node's dataset ledger before it leaves the node: the
//! party that releases a result (PSI receiver, sum-mode, lift and overlap P1 for its noisy ciphertexts and P2
//! for the decrypted result, the dp_stats node, each secure_sum node for its noise share) charges
//! just before it sends; the PSI sender of a DP job charges before it sends its first point.
//! The cost is the job's `release_cost`, fixed when the job starts. After each charge the new
//! ledger head is reported to the coordinator.
//!
//! # Guarantees
//! * The whole role runs on one blocking thread (`spawn_blocking`); scalar multiplications use
//!   rayon inside it, never the async runtime.
//! * Memory is bounded: the inbox and the link queue are bounded channels, every declared
//!   stream size is checked against `[limits] max_set_size` before anything is allocated for
//!   it, and queued replies never exceed the peer's declared stream (32 bytes per point).
//! * Only counts, sizes and stage names are logged or reported as progress.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parley_crypto::keys::NodeSecrets;
use parley_crypto::ledger::{Charge, LedgerRow};
use parley_crypto::secagg::{Params as SecAggParams, PeerKeys};
use parley_jobs::{Cost, Job, Kind};
use parley_net::binding::VerifiedKeys;
use parley_proto::{
    Envelope, JobProgress, JobResult, LedgerHead, NodeMessage, SecAggRound, node_message,
};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::NodeError;
use crate::dataset::{Dataset, SegmentColumn};
use crate::ledger::Ledger;

mod bound;
mod dp;
pub(crate) mod dp_stats;
mod envelope;
#[cfg(test)]
mod grouped_props;
mod lift;
mod overlap;
mod psi;
mod psi_sum;
mod rfm;
mod rounds;
pub mod secure_sum;
mod two_party;
mod wait;

use wait::Waiter;

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

/// Whom a job's protocol talks to, fixed at the offer from the participants' verified keys.
#[derive(Debug, Clone)]
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
    /// secure_sum: the coordinator's rounds.
    SecAgg {
        /// The run's protocol parameters (`SecureSum::secagg_params`).
        params: SecAggParams,
        /// Every participant's verified Ed25519 key by secure-aggregation index (1-based
        /// position in the job's participants).
        keys: PeerKeys,
    },
}

impl Links {
    /// Whom participant `index` (this node) of job `job_id` talks to, from every participant's
    /// verified keys. Errors are refusal reasons.
    pub fn of(
        job_id: &str,
        job: &Job,
        index: usize,
        verified: &std::collections::HashMap<String, VerifiedKeys>,
    ) -> Result<Links, String> {
        let keys_of = |name: &str| {
            verified
                .get(name)
                .ok_or_else(|| format!("no verified keys for '{name}'"))
        };
        match &job.kind {
            Kind::Psi(_) | Kind::PsiSum(_) | Kind::Lift(_) | Kind::Overlap(_) => {
                let other = job
                    .participants
                    .iter()
                    .enumerate()
                    .find(|(i, _)| *i != index)
                    .map(|(_, p)| p)
                    .ok_or("the job has no other participant")?;
                Ok(Links::Peer {
                    name: other.node.clone(),
                    x25519: keys_of(&other.node)?.x25519_public,
                })
            }
            Kind::DpStats(_) | Kind::Rfm(_) => Ok(Links::Local),
            Kind::SecureSum(k) => {
                let params = k.secagg_params(job_id)?;
                let mut keys = PeerKeys::new();
                for (i, p) in job.participants.iter().enumerate() {
                    let at =
                        u32::try_from(i + 1).map_err(|_| "too many participants".to_string())?;
                    keys.insert(at, keys_of(&p.node)?.ed25519_public);
                }
                Ok(Links::SecAgg { params, keys })
            }
        }
    }
}

impl JobRun {
    /// The identifier columns this node matches on (empty = all of its dataset's).
    pub(crate) fn columns(&self) -> &[String] {
        self.job
            .participants
            .get(self.index)
            .map_or(&[], |p| p.columns.as_slice())
    }

    /// The other participant's name and verified X25519 key (PSI family).
    fn peer(&self) -> Result<(&str, &[u8; 32]), NodeError> {
        match &self.links {
            Links::Peer { name, x25519 } => Ok((name, x25519)),
            Links::Local | Links::SecAgg { .. } => Err(NodeError::protocol(
                &self.job_id,
                "this job kind has no peer to exchange envelopes with",
            )),
        }
    }

    /// Charges the job's cost to this node's dataset (durably, before anything is released)
    /// and reports the new ledger head to the coordinator. No-op for exact jobs.
    pub(crate) fn charge(&self, io: &JobIo, wait: &Waiter) -> Result<(), NodeError> {
        self.charger(io, wait).charge()
    }

    /// A handle that charges this job's cost later (e.g. from inside a protocol party).
    pub(crate) fn charger(&self, io: &JobIo, wait: &Waiter) -> Charger {
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
            wait: wait.clone(),
        }
    }
}

/// Charges one job's privacy cost to the node's ledger and reports the new head.
pub(crate) struct Charger {
    ledger: Arc<Ledger>,
    dataset: String,
    charge: Option<Charge>,
    outbox: mpsc::Sender<NodeMessage>,
    wait: Waiter,
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
        // Wait for room: the head must reach the coordinator. A job cancelled meanwhile ends
        // anyway; the node reports every head again when its link comes back.
        match self
            .wait
            .until(|| "reporting the new ledger head".to_owned(), async move {
                outbox.send(msg).await.ok()
            }) {
            Ok(()) | Err(NodeError::Cancelled) => Ok(()),
            Err(e) => Err(e),
        }
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
            row_format: row.format,
        })),
    }
}

/// Reports a job's progress to the coordinator, best effort: a report is dropped rather than
/// delaying the protocol when the link's queue is full.
pub(crate) fn report_progress(
    outbox: &mpsc::Sender<NodeMessage>,
    job_id: &str,
    stage: &str,
    done: u64,
    total: u64,
) {
    let _ = outbox.try_send(NodeMessage {
        body: Some(node_message::Body::Progress(JobProgress {
            job_id: job_id.to_owned(),
            node: String::new(),
            stage: stage.to_owned(),
            done,
            total,
        })),
    });
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

/// Runs the job to completion on the current (blocking) thread, which must not be a runtime
/// worker; `rt` is the runtime the node link runs on. Returns the result to release when this
/// node holds it (PSI receiver, the dp_stats node), `None` otherwise.
pub fn run_blocking(
    run: JobRun,
    mut io: JobIo,
    rt: Handle,
) -> Result<Option<JobResult>, NodeError> {
    let wait = Waiter::new(&run.job_id, rt, io.cancel.clone(), run.deadline);
    let job = Arc::clone(&run.job);
    match &job.kind {
        Kind::Psi(k) => psi::run(&run, k, &mut io, &wait),
        Kind::PsiSum(k) => psi_sum::run(&run, k, &mut io, &wait),
        Kind::Lift(k) => lift::run(&run, k, &mut io, &wait),
        Kind::Overlap(k) => overlap::run(&run, k, &mut io, &wait),
        Kind::DpStats(k) => dp_stats::run(&run, k, &io, &wait),
        Kind::SecureSum(k) => secure_sum::run(&run, k, &mut io, &wait),
        Kind::Rfm(k) => rfm::run(&run, k, &io, &wait),
    }
}

/// Checks at the offer that the value and segment columns participant `index` reads exist
/// in `ds` with the right kind, so a mistake is refused then, not failed mid-job. Errors are
/// refusal reasons.
pub fn check_columns(ds: &Dataset, job: &Job, index: usize) -> Result<(), String> {
    match &job.kind {
        // Identifier columns are checked by the policy.
        Kind::Psi(_) => Ok(()),
        Kind::PsiSum(k) => psi_sum::check_columns(ds, k, index),
        Kind::Lift(k) => lift::check_columns(ds, k, index),
        Kind::Overlap(k) => overlap::check_columns(ds, k, index),
        Kind::DpStats(k) => dp_stats::check_columns(ds, k),
        Kind::SecureSum(k) => secure_sum::check_columns(ds, k),
        Kind::Rfm(k) => rfm::check_columns(ds, k),
    }
}

/// Longest job id a node accepts.
const MAX_JOB_ID_BYTES: usize = 64;

/// Checks a job id from the coordinator before it names anything (files, ledger rows): 1 to
/// 64 bytes of lowercase ASCII letters, digits and `-`. Errors are refusal reasons.
pub fn check_job_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > MAX_JOB_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "the job id '{}' is not valid (1 to {MAX_JOB_ID_BYTES} lowercase letters, digits \
             and '-')",
            id.escape_debug()
                .to_string()
                .chars()
                .take(80)
                .collect::<String>()
        ));
    }
    Ok(())
}

/// Creates (or truncates) `path` readable and writable by the node's user only (mode 0600 on
/// Unix): match and result files hold record keys and released results.
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// `ds`'s value column `column`, or why there is none.
pub(crate) fn value_column<'d>(ds: &'d Dataset, column: &str) -> Result<&'d [f64], String> {
    ds.values(column)
        .ok_or_else(|| format!("dataset '{}' has no value column '{column}'", ds.name()))
}

/// `ds`'s segment column `column`, or why there is none.
pub(crate) fn segment_column<'d>(
    ds: &'d Dataset,
    column: &str,
) -> Result<&'d SegmentColumn, String> {
    ds.segments(column)
        .ok_or_else(|| format!("dataset '{}' has no segment column '{column}'", ds.name()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_that_could_name_a_path_are_refused() {
        check_job_id("job-0a1b2c").unwrap();
        for bad in [
            "",
            "../etc/passwd",
            "Job-1",
            "job 1",
            "job/1",
            "job\n1",
            &"a".repeat(65),
        ] {
            let e = check_job_id(bad).unwrap_err();
            assert!(e.contains("not valid"), "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "old contents that are longer").unwrap();
        std::io::Write::write_all(&mut create_private_file(&path).unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let fresh = dir.path().join("y.csv");
        create_private_file(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// Test fixtures shared by the kinds' unit tests.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) mod test_support {
    use std::io::Write as _;

    use parley_crypto::normalize::{Normalizer, Profile};

    use crate::config::{ColumnConfig, ColumnKind, DatasetConfig};
    use crate::dataset::Dataset;

    /// Five records of a small CRM: a key, an email, a region segment and an amount (one
    /// negative, one above typical bounds).
    pub(crate) const CRM_CSV: &str = "id,email,region,amount\n\
        1,a@example.com,north,12.5\n\
        2,b@example.com,south,3\n\
        3,c@example.com,north,250\n\
        4,d@example.com,east,7.25\n\
        5,e@example.com,north,-4\n";

    /// Loads `csv` (columns id, email, region, amount) as a dataset.
    pub(crate) fn dataset(csv: &str) -> Dataset {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crm.csv");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(csv.as_bytes()))
            .expect("write csv");
        let cfg = DatasetConfig {
            name: "crm".to_owned(),
            path,
            key_column: "id".to_owned(),
            person_column: None,
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
}
