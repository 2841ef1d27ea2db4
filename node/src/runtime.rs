//! The node daemon: loads datasets and policy, keeps one link to the coordinator (dialling
//! out, reconnecting with back-off), answers job offers from its local policy, and runs
//! accepted jobs.
//!
//! # Trust
//! The node trusts its own configuration and the federation CA. It does not trust the
//! coordinator for peer identities: every participant's key binding in an offer is verified
//! against the CA before the node accepts, and envelope keys come only from verified bindings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parley_crypto::keys::NodeSecrets;
use parley_crypto::normalize::Normalizer;
use parley_jobs::Job;
use parley_jobs::kinds::secure_sum::{ResultFile, SecureSumReport};
use parley_net::TlsMaterial;
use parley_net::binding::verify_key_binding;
use parley_proto::node_link_client::NodeLinkClient;
use parley_proto::{
    CoordinatorMessage, Envelope, Hello, JobDecision, JobOffer, JobOutcome, KeyBinding,
    NodeMessage, SecAggRound, coordinator_message, job_outcome, node_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::NodeError;
use crate::config::NodeConfig;
use crate::dataset::Dataset;
use crate::jobs::{
    JobIo, JobRun, Links, check_columns, check_job_id, create_private_file, head_message,
    run_blocking,
};
use crate::ledger::Ledger;
use crate::policy::Policy;

/// Depth of the link's outbound queue (messages of at most ~1 MiB).
const OUTBOX_DEPTH: usize = 16;
/// Depth of each job's inbox.
const INBOX_DEPTH: usize = 16;
/// Depth of each job's secure-aggregation queue: a run has three coordinator rounds, so a
/// fuller queue means the coordinator sent more than the protocol allows.
const SECAGG_DEPTH: usize = 4;
/// Name of the file holding the node's long-term secrets inside `state_dir`.
pub const SECRETS_FILE: &str = "node.secrets";

/// A loaded node, ready to connect.
pub struct Node {
    config: NodeConfig,
    tls: TlsMaterial,
    secrets: Arc<NodeSecrets>,
    binding: KeyBinding,
    datasets: HashMap<String, Arc<Dataset>>,
    policy: Policy,
    ledger: Arc<Ledger>,
}

impl Node {
    /// Loads TLS material, long-term keys (created on first start), datasets and policy.
    pub fn load(config: NodeConfig) -> Result<Node, NodeError> {
        let tls = TlsMaterial::load(&config.tls.ca_cert, &config.tls.cert, &config.tls.key)?;
        let id = tls.identity()?;
        if id.role != parley_net::Role::Node || id.name != config.name {
            return Err(NodeError::Identity(format!(
                "node.toml says name = \"{}\" but the certificate '{}' is for {} '{}'; issue a node certificate for this name (parley-coordinator ca issue --role node --name {})",
                config.name,
                config.tls.cert.display(),
                id.role.as_str(),
                id.name,
                config.name
            )));
        }
        std::fs::create_dir_all(&config.state_dir).map_err(|e| NodeError::Output {
            path: config.state_dir.clone(),
            source: e,
        })?;
        let secrets = Arc::new(load_or_create_secrets(
            &config.state_dir.join(SECRETS_FILE),
        )?);
        let binding = parley_net::binding::sign_key_binding(
            &tls,
            &config.name,
            secrets.x25519_public(),
            secrets.ed25519_public(),
        )?;
        let normalizer = Normalizer::new(
            config.normalization.profile,
            &config.normalization.default_country,
        )?;
        let mut datasets = HashMap::new();
        for d in &config.datasets {
            let ds = Dataset::load(d, &normalizer)?;
            tracing::info!(dataset = %d.name, rows = ds.len(), report = %ds.report(), "dataset loaded");
            datasets.insert(d.name.clone(), Arc::new(ds));
        }
        let policy = Policy::load(&config.policy)?;
        let ledger = Arc::new(Ledger::open(
            &config.ledger_path(),
            &config.name,
            Some(Arc::clone(&secrets)),
            config.budgets(),
        )?);
        Ok(Node {
            config,
            tls,
            secrets,
            binding,
            datasets,
            policy,
            ledger,
        })
    }

    /// The node's privacy-budget ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The loaded datasets.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values().map(|d| d.as_ref())
    }
}

/// Reads the node's secrets, or creates them (mode 0600) on first start.
fn load_or_create_secrets(path: &Path) -> Result<NodeSecrets, NodeError> {
    match std::fs::read(path) {
        Ok(bytes) => NodeSecrets::from_bytes(&bytes).map_err(|e| {
            NodeError::Identity(format!(
                "node secrets file '{}' is corrupt ({e}); restore it from backup (deleting it creates new keys and breaks ledger continuity)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = NodeSecrets::generate()?;
            write_private(path, &s.to_bytes()).map_err(|e| NodeError::Output {
                path: path.to_path_buf(),
                source: e,
            })?;
            tracing::info!(path = %path.display(), "created node long-term keys");
            Ok(s)
        }
        Err(e) => Err(NodeError::Output {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Runs the node until `shutdown` is cancelled: connects, serves jobs, reconnects with
/// exponential back-off when the link drops.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> Result<(), NodeError> {
    let node = tokio::task::spawn_blocking(move || Node::load(config))
        .await
        .map_err(|_| NodeError::Identity("node start-up task panicked".into()))??;
    run_loaded(Arc::new(node), shutdown).await
}

/// Runs an already loaded node until `shutdown` is cancelled.
pub async fn run_loaded(node: Arc<Node>, shutdown: CancellationToken) -> Result<(), NodeError> {
    let initial = Duration::from_millis(node.config.reconnect.initial_ms.max(10));
    let max = Duration::from_millis(node.config.reconnect.max_ms.max(10));
    let mut backoff = initial;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match session(&node, &shutdown).await {
            Ok(true) => backoff = initial, // was connected: retry promptly
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(node = %node.config.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "coordinator link failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

enum Slot {
    Offered {
        offer: Box<JobOffer>,
        job: Arc<Job>,
        links: Links,
    },
    Running {
        inbox: mpsc::Sender<Envelope>,
        secagg: mpsc::Sender<SecAggRound>,
        cancel: CancellationToken,
    },
}

/// One connection. Returns Ok(true) if the link was established before it ended.
async fn session(node: &Arc<Node>, shutdown: &CancellationToken) -> Result<bool, NodeError> {
    let cfg = &node.config;
    let channel = parley_net::connect(
        &cfg.coordinator.url,
        &cfg.coordinator.server_name,
        &node.tls,
    )
    .await?;
    let mut client = NodeLinkClient::new(channel)
        .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
        .max_encoding_message_size(parley_proto::MAX_MESSAGE_BYTES);
    let (out_tx, out_rx) = mpsc::channel::<NodeMessage>(OUTBOX_DEPTH);
    let hello = NodeMessage {
        body: Some(node_message::Body::Hello(Hello {
            keys: Some(node.binding.clone()),
            datasets: node.datasets.values().map(|d| d.info()).collect(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
        })),
    };
    out_tx
        .send(hello)
        .await
        .map_err(|_| NodeError::Link("outbound queue closed".into()))?;
    let mut inbound = client
        .open(ReceiverStream::new(out_rx))
        .await
        .map_err(|s| NodeError::Link(link_status(&cfg.coordinator.url, &s)))?
        .into_inner();
    match inbound.message().await {
        Ok(Some(CoordinatorMessage {
            body: Some(coordinator_message::Body::Welcome(_)),
        })) => {}
        Ok(_) => {
            return Err(NodeError::Link(
                "coordinator did not answer hello with welcome".into(),
            ));
        }
        Err(s) => return Err(NodeError::Link(link_status(&cfg.coordinator.url, &s))),
    }
    tracing::info!(node = %cfg.name, url = %cfg.coordinator.url, "connected to coordinator");
    // Report every ledger head, so the coordinator's record is current after any downtime.
    for name in node.datasets.keys() {
        match node.ledger.head(name) {
            Ok(Some(row)) => {
                let _ = out_tx.send(head_message(&row)).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(dataset = %name, error = %e, "cannot read ledger head"),
        }
    }

    let link_cancel = shutdown.child_token();
    let mut jobs: HashMap<String, Slot> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                fail_running_jobs(&cfg.name, &jobs, &out_tx).await;
                stopping = true;
                break Ok(true);
            }
            Some(id) = done_rx.recv() => { jobs.remove(&id); }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(body) = m.body {
                        handle(node, body, &mut jobs, &out_tx, &done_tx, &link_cancel).await;
                    }
                }
                Ok(None) => break Ok(true),
                Err(s) => {
                    tracing::warn!(node = %cfg.name, status = %s.message(), "coordinator link lost");
                    break Ok(true);
                }
            }
        }
    };
    // Jobs cannot continue without the link; the coordinator fails them on its side.
    link_cancel.cancel();
    if stopping {
        // End our half of the link once the jobs have let go of it, so the coordinator reads
        // every message sent so far (the failures above) before it sees the end, and wait (at
        // most two seconds) for it to close its half in turn.
        drop(out_tx);
        let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
    result
}

/// On shutdown: tells the coordinator that each job this node is running fails because the
/// node is stopping, rather than leaving it to notice a dropped link.
async fn fail_running_jobs(
    name: &str,
    jobs: &HashMap<String, Slot>,
    out: &mpsc::Sender<NodeMessage>,
) {
    let running: Vec<&String> = jobs
        .iter()
        .filter(|(_, slot)| matches!(slot, Slot::Running { .. }))
        .map(|(id, _)| id)
        .collect();
    if running.is_empty() {
        return;
    }
    tracing::warn!(
        jobs = running.len(),
        "shutting down with jobs running; they fail"
    );
    for id in running {
        let reason =
            format!("node '{name}' is shutting down; submit the job again once it is back");
        send(
            out,
            node_message::Body::Outcome(JobOutcome {
                job_id: id.clone(),
                outcome: Some(job_outcome::Outcome::Failure(reason)),
            }),
        )
        .await;
    }
}

fn link_status(url: &str, s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => format!(
            "coordinator at {url} refused this node: {} (check the node certificate and name)",
            s.message()
        ),
        tonic::Code::Unavailable => format!(
            "cannot reach the coordinator at {url}: {} (is it running? check [coordinator] url; a certificate the coordinator does not trust also ends here)",
            s.message()
        ),
        _ => format!("coordinator at {url}: {}", s.message()),
    }
}

async fn send(out: &mpsc::Sender<NodeMessage>, body: node_message::Body) {
    let _ = out.send(NodeMessage { body: Some(body) }).await;
}

async fn handle(
    node: &Arc<Node>,
    body: coordinator_message::Body,
    jobs: &mut HashMap<String, Slot>,
    out: &mpsc::Sender<NodeMessage>,
    done: &mpsc::UnboundedSender<String>,
    link_cancel: &CancellationToken,
) {
    match body {
        coordinator_message::Body::Offer(offer) => {
            let job_id = offer.job_id.clone();
            // Off the async runtime: key-binding checks, the ledger's budget check and the
            // durable record of the accepted id (an fsync) all block.
            let n = Arc::clone(node);
            let considered = tokio::task::spawn_blocking(move || {
                consider(&n, &offer).map(|(job, links)| (offer, job, links))
            })
            .await
            .unwrap_or_else(|_| Err("internal error: considering the offer panicked".into()));
            let decision = match considered {
                Ok((offer, job, links)) => {
                    tracing::info!(job = %job_id, "job accepted");
                    jobs.insert(
                        job_id.clone(),
                        Slot::Offered {
                            offer: Box::new(offer),
                            job: Arc::new(job),
                            links,
                        },
                    );
                    JobDecision {
                        job_id,
                        accept: true,
                        reason: String::new(),
                    }
                }
                Err(reason) => {
                    tracing::info!(job = %job_id, %reason, "job refused");
                    JobDecision {
                        job_id,
                        accept: false,
                        reason,
                    }
                }
            };
            send(out, node_message::Body::Decision(decision)).await;
        }
        coordinator_message::Body::Start(start) => {
            let Some(Slot::Offered { offer, job, links }) = jobs.remove(&start.job_id) else {
                tracing::warn!(job = %start.job_id, "start for a job this node did not accept");
                return;
            };
            let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_DEPTH);
            let (secagg_tx, secagg_rx) = mpsc::channel(SECAGG_DEPTH);
            let cancel = link_cancel.child_token();
            jobs.insert(
                start.job_id.clone(),
                Slot::Running {
                    inbox: inbox_tx,
                    secagg: secagg_tx,
                    cancel: cancel.clone(),
                },
            );
            start_job(
                node,
                *offer,
                job,
                links,
                (inbox_rx, secagg_rx),
                cancel,
                out.clone(),
                done.clone(),
            );
        }
        coordinator_message::Body::Envelope(env) => match jobs.get(&env.job_id) {
            Some(Slot::Running { inbox, .. }) => {
                // Bounded: waiting here pushes back on the coordinator, keeping memory flat.
                let _ = inbox.send(env).await;
            }
            _ => {
                tracing::debug!(job = %env.job_id, "envelope for a job that is not running dropped")
            }
        },
        coordinator_message::Body::Secagg(r) => match jobs.get(&r.job_id) {
            Some(Slot::Running { secagg, .. }) => {
                // Never waits: the job thread may be busy masking. A full queue means the
                // coordinator sent more rounds than the protocol has; the job already fails on
                // the first extra one, so the rest can go.
                if let Err(mpsc::error::TrySendError::Full(r)) = secagg.try_send(r) {
                    tracing::warn!(job = %r.job_id, round = r.round, "secure aggregation round dropped: too many rounds queued");
                }
            }
            _ => {
                tracing::debug!(job = %r.job_id, round = r.round, "secure aggregation round for a job that is not running dropped")
            }
        },
        coordinator_message::Body::Abort(a) => match jobs.remove(&a.job_id) {
            Some(slot) => {
                if let Slot::Running { cancel, .. } = slot {
                    cancel.cancel();
                }
                tracing::info!(job = %a.job_id, reason = %a.reason, "job aborted by coordinator");
            }
            // A job that already ended here (e.g. a secure_sum after its last round).
            None => tracing::debug!(job = %a.job_id, "abort for a job that is not running"),
        },
        coordinator_message::Body::Result(d) => {
            let node = Arc::clone(node);
            let written = tokio::task::spawn_blocking(move || write_result(&node, &d)).await;
            match written {
                Ok(Ok(path)) => tracing::info!(path = %path.display(), "job result received"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write a delivered job result"),
                Err(_) => tracing::warn!("result writer panicked"),
            }
        }
        coordinator_message::Body::Welcome(_) => {}
    }
}

/// Writes a job result this node was named to receive to `<outputs>/<job>-result.json`
/// (atomically: a temporary file, then a rename).
fn write_result(
    node: &Node,
    d: &parley_proto::ResultDelivery,
) -> Result<std::path::PathBuf, NodeError> {
    check_job_id(&d.job_id)
        .map_err(|e| NodeError::protocol("", &format!("a delivered result: {e}")))?;
    let Some(r) = d.result.as_ref().and_then(|r| r.secure_sum()) else {
        return Err(NodeError::protocol(
            &d.job_id,
            "a delivered result is empty",
        ));
    };
    let value = ResultFile {
        job_id: d.job_id.clone(),
        kind: "secure_sum".to_owned(),
        report: SecureSumReport::from(r),
    };
    let dir = node.config.output_dir();
    let path = dir.join(format!("{}-result.json", d.job_id));
    let tmp = path.with_extension("json.tmp");
    let io = |e: std::io::Error| NodeError::Output {
        path: path.clone(),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::io::Write::write_all(
        &mut create_private_file(&tmp).map_err(io)?,
        &serde_json::to_vec_pretty(&value).unwrap_or_default(),
    )
    .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

/// Decides on an offer: checks that the job is one this node version knows and can run
/// (`Job::try_from`), verifies every participant's key binding against the CA, then asks the
/// local policy and the budget. Returns the typed job and whom it talks to (from the verified
/// keys), or the refusal reason (which the analyst sees).
fn consider(node: &Node, offer: &JobOffer) -> Result<(Job, Links), String> {
    let me = &node.config.name;
    check_job_id(&offer.job_id)?;
    let spec = offer.spec.as_ref().ok_or("the offer carries no job spec")?;
    let job = Job::try_from(spec).map_err(|e| {
        format!(
            "node '{me}' (Parley {}) cannot run this job: {e}",
            env!("CARGO_PKG_VERSION")
        )
    })?;
    let Some((index, _)) = job.role_of(me) else {
        return Err(format!("node '{me}' is not a participant"));
    };
    let mut peers = HashMap::new();
    for p in &job.participants {
        let b = offer
            .participants
            .iter()
            .find(|b| b.node_name == p.node)
            .ok_or_else(|| format!("the offer has no key binding for participant '{}'", p.node))?;
        let keys = verify_key_binding(node.tls.ca_der(), b, std::time::SystemTime::now())
            .map_err(|e| format!("key binding of participant '{}' rejected: {e}", p.node))?;
        peers.insert(p.node.clone(), keys);
    }
    if let Some(mine) = peers.get(me)
        && (mine.x25519_public != node.secrets.x25519_public()
            || mine.ed25519_public != node.secrets.ed25519_public())
    {
        return Err(format!(
            "the offer carries keys for '{me}' that are not this node's keys"
        ));
    }
    let links = Links::of(&offer.job_id, &job, index, &peers)
        .map_err(|e| format!("node '{me}' refuses: {e}"))?;
    let datasets = &node.datasets;
    let lookup = |name: &str| -> Option<Vec<String>> {
        datasets.get(name).map(|d| {
            d.identifier_columns()
                .into_iter()
                .map(str::to_string)
                .collect()
        })
    };
    node.policy.check(me, &job, &offer.submitted_by, &lookup)?;
    let prepared = node.config.normalization.profile;
    if let Some(wanted) = job.identifier_profile()
        && wanted != prepared
    {
        return Err(format!(
            "node '{me}' refuses: the job matches identifiers normalised under profile '{}', \
             but this node prepares its datasets under profile '{}' ([normalization] profile \
             in its node.toml), so one person's identifiers would hash differently on the two \
             sides and silently fail to match; the partners must agree on one profile \
             (set profile in the job's [psi] table, or change one node's profile)",
            wanted.name(),
            prepared.name()
        ));
    }
    if let Some(ds) = node.datasets.get(&job.participants[index].dataset) {
        check_columns(ds, &job, index).map_err(|e| format!("node '{me}': {e}"))?;
    }
    if let Some(cost) = job.release_cost() {
        node.ledger
            .check(&job.participants[index].dataset, cost.epsilon, cost.delta)
            .map_err(|e| format!("node '{me}' refuses: {e}"))?;
    }
    // Last: an id is used once, so a refused offer does not use it up.
    match node.ledger.accept_job(&offer.job_id) {
        Ok(true) => Ok((job, links)),
        Ok(false) => Err(format!(
            "node '{me}' has already accepted a job with id '{}'; a job id is used once",
            offer.job_id
        )),
        Err(e) => Err(format!("node '{me}' cannot record the job: {e}")),
    }
}

#[allow(clippy::too_many_arguments)] // one argument per part of the job's context and its link
fn start_job(
    node: &Arc<Node>,
    offer: JobOffer,
    job: Arc<Job>,
    links: Links,
    (inbox, secagg): (mpsc::Receiver<Envelope>, mpsc::Receiver<SecAggRound>),
    cancel: CancellationToken,
    out: mpsc::Sender<NodeMessage>,
    done: mpsc::UnboundedSender<String>,
) {
    let job_id = offer.job_id.clone();
    let prepared = prepare(node, &offer, job, links);
    let rt = tokio::runtime::Handle::current();
    let io = JobIo {
        inbox,
        secagg,
        outbox: out.clone(),
        cancel: cancel.clone(),
    };
    tokio::spawn(async move {
        let outcome = match prepared {
            Err(reason) => Some(job_outcome::Outcome::Failure(reason)),
            Ok(run) => {
                let span_job = job_id.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let _span = tracing::info_span!("job", job = %span_job).entered();
                    run_blocking(run, io, rt)
                })
                .await;
                match res {
                    Ok(Ok(Some(result))) => Some(job_outcome::Outcome::Result(result)),
                    Ok(Ok(None)) => None,
                    Ok(Err(NodeError::Cancelled)) => None,
                    Ok(Err(e)) => {
                        tracing::warn!(job = %job_id, error = %e, "job failed");
                        Some(job_outcome::Outcome::Failure(e.to_string()))
                    }
                    Err(_) => Some(job_outcome::Outcome::Failure(
                        "internal error: the job task panicked".into(),
                    )),
                }
            }
        };
        if let Some(o) = outcome
            && !cancel.is_cancelled()
        {
            send(
                &out,
                node_message::Body::Outcome(JobOutcome {
                    job_id: job_id.clone(),
                    outcome: Some(o),
                }),
            )
            .await;
        }
        let _ = done.send(job_id);
    });
}

/// Everything the job needs from this node, fixed at start.
fn prepare(node: &Node, offer: &JobOffer, job: Arc<Job>, links: Links) -> Result<JobRun, String> {
    let cfg = &node.config;
    let me = &cfg.name;
    let (index, _) = job
        .role_of(me)
        .ok_or_else(|| format!("node '{me}' is not a participant"))?;
    let mine = &job.participants[index];
    let dataset = node
        .datasets
        .get(&mine.dataset)
        .cloned()
        .ok_or_else(|| format!("node '{me}' has no dataset '{}'", mine.dataset))?;
    Ok(JobRun {
        job_id: offer.job_id.clone(),
        me: me.clone(),
        cost: job.release_cost(),
        job,
        index,
        links,
        secrets: Arc::clone(&node.secrets),
        dataset,
        max_set_size: cfg.limits.max_set_size,
        batch_points: cfg.limits.batch_points as usize,
        deadline: Duration::from_secs(cfg.limits.job_deadline_secs),
        output_dir: cfg.output_dir(),
        analyst: offer.submitted_by.clone(),
        ledger: Arc::clone(&node.ledger),
    })
}
