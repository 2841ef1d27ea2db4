//! The coordinator service: node registry, job lifecycle and envelope relay.
//!
//! # What the coordinator sees
//! Node names, dataset metadata (names, columns, row counts), job specs, decisions, progress
//! counts, envelope metadata (job, sender, recipient, sequence number, size) and the results
//! that the participant holding them releases. Envelope contents are AEAD-sealed between the
//! two nodes (see `parley_crypto::envelope`); the coordinator cannot read them. It forwards
//! each node's certificate-bound key binding so peers verify keys against the federation CA,
//! not against the coordinator's word.
//!
//! # Concurrency
//! One `std::sync::Mutex` guards the registry and live jobs; it is never held across an
//! `.await`. Messages to nodes are collected under the lock and sent after it is released.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use parley_net::Role;
use parley_proto::{
    CancelJobRequest, CoordinatorMessage, Envelope, GetJobRequest, Hello, Job, JobAbort,
    JobDecision, JobEvent, JobOffer, JobOutcome, JobProgress, JobResult, JobStart, JobState,
    LedgerHead, LedgerHeadsRequest, LedgerHeadsResponse, ListJobsRequest, ListJobsResponse,
    ListNodesRequest, ListNodesResponse, NodeInfo, NodeMessage, RecordedHead, ResultDelivery,
    SecAggUpload, SubmitJobRequest, Welcome, coordinator_message, job_outcome, node_message,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::secure_sum::{Advance, SecAggRun};
use crate::store::{HeadUpdate, JobStore, new_job_id, now_ms, transition};
use parley_jobs::lifecycle::is_terminal;

/// Outbound queue depth per node link (messages of at most ~1 MiB each).
const NODE_QUEUE: usize = 16;
/// Largest sealed envelope the coordinator relays.
const MAX_SEALED_BYTES: usize = parley_proto::MAX_CHUNK_BYTES + 1024;

type NodeTx = mpsc::Sender<Result<CoordinatorMessage, Status>>;
type Outgoing = Vec<(NodeTx, CoordinatorMessage)>;

/// The coordinator's gRPC services (`NodeLink` and `Jobs`) over shared state.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    store: JobStore,
    ca_der: Vec<u8>,
    limits: Limits,
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// Cancelled on shutdown: link handlers stop reading so connections can close.
    closing: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeConn>,
    live: HashMap<String, LiveJob>,
    watchers: HashMap<String, broadcast::Sender<JobEvent>>,
}

struct NodeConn {
    conn_id: u64,
    tx: NodeTx,
    hello: Hello,
    connected_at_ms: i64,
}

struct LiveJob {
    job: Job,
    /// The typed job (parsed once at submit).
    typed: parley_jobs::Job,
    participants: Vec<String>,
    /// The participant whose outcome carries the result (none when the coordinator computes
    /// it: secure_sum).
    result_from: Option<String>,
    /// Participants that have not accepted yet (empty once running).
    undecided: HashSet<String>,
    /// The server side of a running secure_sum job.
    secagg: Option<SecAggRun>,
}

impl Coordinator {
    /// Creates the service over an opened job store; `ca_der` is the federation CA used to
    /// verify nodes' key bindings.
    pub fn new(store: JobStore, ca_der: Vec<u8>, limits: Limits) -> Self {
        Coordinator {
            inner: Arc::new(Inner {
                store,
                ca_der,
                limits,
                state: Mutex::new(State::default()),
                next_conn: AtomicU64::new(1),
                closing: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }
}

impl Coordinator {
    /// Ends every node link and watch stream (used on shutdown so that graceful shutdown
    /// does not wait for long-lived streams).
    pub fn close_all(&self) {
        self.inner.closing.cancel();
        let mut st = self.inner.lock();
        st.nodes.clear();
        st.watchers.clear();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists a job; store failures are logged (the in-memory state stays authoritative
    /// for the live job and the next write retries the whole row).
    fn persist(&self, job: &Job) {
        if let Err(e) = self.store.update(job) {
            tracing::error!(job = %job.id, error = %e, "cannot persist job state");
        }
    }

    fn publish(state: &mut State, job: &Job) {
        if let Some(tx) = state.watchers.get(&job.id) {
            let _ = tx.send(JobEvent {
                job: Some(job.clone()),
                progress: None,
            });
        }
        if is_terminal(job.state()) {
            state.watchers.remove(&job.id);
        }
    }

    fn node_tx(state: &State, node: &str) -> Option<NodeTx> {
        state.nodes.get(node).map(|c| c.tx.clone())
    }

    /// Ends a live job in `final_state`, telling every participant except `skip` to abort.
    fn end_job(
        &self,
        state: &mut State,
        job_id: &str,
        final_state: JobState,
        note: &str,
        result: Option<JobResult>,
        skip: Option<&str>,
    ) -> Outgoing {
        let Some(mut live) = state.live.remove(job_id) else {
            return Vec::new();
        };
        if let Some(r) = result {
            live.job.result = Some(r);
        }
        transition(&mut live.job, final_state, note, now_ms());
        self.persist(&live.job);
        Self::publish(state, &live.job);
        tracing::info!(job = %job_id, state = ?final_state, reason = note, "job ended");
        let mut out = Vec::new();
        // A result the coordinator computed goes to the participant the kind names, if any.
        let copy_to = match live.typed.result_to() {
            parley_jobs::ResultTo::Coordinator { copy_to } => copy_to,
            parley_jobs::ResultTo::Participant(_) => None,
        };
        if final_state == JobState::Succeeded
            && let Some(node) = copy_to.and_then(|i| live.participants.get(i))
            && let Some(tx) = Self::node_tx(state, node)
        {
            out.push((
                tx,
                coord_msg(coordinator_message::Body::Result(ResultDelivery {
                    job_id: job_id.to_string(),
                    result: live.job.result.clone(),
                })),
            ));
        }
        // Secure aggregation: nodes that dropped out may still wait for a round; tell everyone
        // the job is over, whatever its outcome.
        if final_state != JobState::Succeeded || live.secagg.is_some() {
            for p in &live.participants {
                if Some(p.as_str()) == skip {
                    continue;
                }
                if let Some(tx) = Self::node_tx(state, p) {
                    out.push((
                        tx,
                        coord_msg(coordinator_message::Body::Abort(JobAbort {
                            job_id: job_id.to_string(),
                            reason: note.to_string(),
                        })),
                    ));
                }
            }
        }
        out
    }

    async fn send_all(out: Outgoing) {
        for (tx, msg) in out {
            // A closed queue means the node just disconnected; its disconnect handler
            // fails whatever it was part of.
            let _ = tx.send(Ok(msg)).await;
        }
    }

    fn fail_job(&self, job_id: &str, reason: &str, skip: Option<&str>) -> Outgoing {
        let mut st = self.lock();
        self.end_job(&mut st, job_id, JobState::Failed, reason, None, skip)
    }

    /// Submits a validated job: stores it and offers it to every participant.
    async fn submit(self: &Arc<Self>, analyst: &str, req: SubmitJobRequest) -> Result<Job, Status> {
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("SubmitJobRequest.spec is missing"))?;
        let typed = parley_jobs::Job::try_from(&spec)
            .map_err(|e| Status::invalid_argument(format!("invalid job: {e}")))?;
        let participants: Vec<String> = spec.participants.iter().map(|p| p.node.clone()).collect();
        let result_from = match typed.result_to() {
            parley_jobs::ResultTo::Participant(i) => participants.get(i).cloned(),
            parley_jobs::ResultTo::Coordinator { .. } => None,
        };
        let mut job = Job {
            id: new_job_id(),
            spec: Some(spec.clone()),
            submitted_by: analyst.to_string(),
            ..Default::default()
        };
        transition(&mut job, JobState::Submitted, "", now_ms());
        self.store
            .insert(&job)
            .map_err(|e| Status::internal(format!("cannot store job: {e}")))?;
        tracing::info!(job = %job.id, analyst, "job submitted");

        let (offer, links) = {
            let mut st = self.lock();
            let missing: Vec<&String> = participants
                .iter()
                .filter(|p| !st.nodes.contains_key(*p))
                .collect();
            if !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|m| format!("'{m}'")).collect();
                let note = format!(
                    "node {} is not connected to the coordinator; start it (parley-node run) and submit again",
                    names.join(", ")
                );
                transition(&mut job, JobState::Failed, &note, now_ms());
                self.persist(&job);
                return Ok(job);
            }
            let bindings = participants
                .iter()
                .filter_map(|p| st.nodes.get(p).and_then(|c| c.hello.keys.clone()))
                .collect::<Vec<_>>();
            let offer = JobOffer {
                job_id: job.id.clone(),
                spec: Some(spec),
                submitted_by: analyst.to_string(),
                participants: bindings,
            };
            let links: Vec<NodeTx> = participants
                .iter()
                .filter_map(|p| Self::node_tx(&st, p))
                .collect();
            st.live.insert(
                job.id.clone(),
                LiveJob {
                    job: job.clone(),
                    typed,
                    participants: participants.clone(),
                    result_from,
                    undecided: participants.into_iter().collect(),
                    secagg: None,
                },
            );
            (offer, links)
        };
        // One offer per participant, copied outside the state lock: with thousands of category
        // names a copy takes milliseconds.
        let out: Outgoing = links
            .into_iter()
            .map(|tx| {
                let msg = coord_msg(coordinator_message::Body::Offer(offer.clone()));
                (tx, msg)
            })
            .collect();
        Self::send_all(out).await;

        // Offer deadline.
        let inner = Arc::clone(self);
        let id = job.id.clone();
        let secs = self.limits.offer_timeout_secs;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let out = {
                let mut st = inner.lock();
                let late = st
                    .live
                    .get(&id)
                    .filter(|l| !l.undecided.is_empty())
                    .map(|l| l.undecided.iter().cloned().collect::<Vec<_>>());
                match late {
                    Some(late) => inner.end_job(
                        &mut st,
                        &id,
                        JobState::Failed,
                        &format!(
                            "node(s) {} did not answer the job offer within {secs} s",
                            late.join(", ")
                        ),
                        None,
                        None,
                    ),
                    None => Vec::new(),
                }
            };
            Self::send_all(out).await;
        });
        Ok(job)
    }

    fn on_decision(self: &Arc<Self>, node: &str, d: JobDecision) -> Outgoing {
        let mut st = self.lock();
        let Some(live) = st.live.get_mut(&d.job_id) else {
            tracing::debug!(job = %d.job_id, node, "decision for a job that is not live");
            return Vec::new();
        };
        if !live.undecided.remove(node) {
            tracing::warn!(job = %d.job_id, node, "unexpected decision ignored");
            return Vec::new();
        }
        if !d.accept {
            let reason = truncate(&d.reason, 1000);
            tracing::info!(job = %d.job_id, node, "job refused");
            return self.end_job(
                &mut st,
                &d.job_id,
                JobState::Refused,
                &format!("node '{node}' refused the job: {reason}"),
                None,
                Some(node),
            );
        }
        if !live.undecided.is_empty() {
            return Vec::new();
        }
        let secure_sum = live
            .job
            .spec
            .as_ref()
            .is_some_and(|s| s.kind() == parley_proto::JobKind::SecureSum);
        if secure_sum {
            let participants = live.participants.clone();
            let keys: HashMap<String, [u8; 32]> = participants
                .iter()
                .filter_map(|p| {
                    let k = st.nodes.get(p)?.hello.keys.as_ref()?;
                    Some((
                        p.clone(),
                        <[u8; 32]>::try_from(k.ed25519_public.as_slice()).ok()?,
                    ))
                })
                .collect();
            let Some(live) = st.live.get_mut(&d.job_id) else {
                return Vec::new();
            };
            match SecAggRun::new(&d.job_id, &live.typed, &keys) {
                Ok(run) => live.secagg = Some(run),
                Err(reason) => {
                    return self.end_job(
                        &mut st,
                        &d.job_id,
                        JobState::Failed,
                        &format!("cannot start the secure aggregation: {reason}"),
                        None,
                        None,
                    );
                }
            }
        }
        let Some(live) = st.live.get_mut(&d.job_id) else {
            return Vec::new();
        };
        let now = now_ms();
        transition(&mut live.job, JobState::Accepted, "", now);
        transition(&mut live.job, JobState::Running, "", now);
        let job = live.job.clone();
        let participants = live.participants.clone();
        if let Some(run) = &live.secagg {
            self.spawn_round_timer(&job.id, run.round(), run.round_timeout());
        }
        self.persist(&job);
        Self::publish(&mut st, &job);
        let mut out = Vec::new();
        for p in &participants {
            if let Some(tx) = Self::node_tx(&st, p) {
                out.push((
                    tx,
                    coord_msg(coordinator_message::Body::Start(JobStart {
                        job_id: job.id.clone(),
                    })),
                ));
            }
        }
        drop(st);
        // Run deadline.
        let inner = Arc::clone(self);
        let id = job.id.clone();
        let secs = self.limits.job_deadline_secs;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let out = inner.fail_job(
                &id,
                &format!(
                    "job exceeded its deadline of {secs} s (coordinator [limits] job_deadline_secs)"
                ),
                None,
            );
            Self::send_all(out).await;
        });
        out
    }

    /// Checks and routes an envelope; returns the recipient queue or a reason to fail the job.
    fn route(
        &self,
        from: &str,
        mut env: Envelope,
    ) -> Result<Option<(NodeTx, CoordinatorMessage)>, String> {
        let st = self.lock();
        let Some(live) = st.live.get(&env.job_id) else {
            return Ok(None); // late message for an ended job
        };
        if !live.undecided.is_empty() || live.job.state() != JobState::Running {
            return Err(format!(
                "node '{from}' sent a protocol message before the job started"
            ));
        }
        if !live.participants.iter().any(|p| p == from) {
            return Err(format!("node '{from}' is not a participant of this job"));
        }
        if env.to == from || !live.participants.contains(&env.to) {
            return Err(format!(
                "node '{from}' addressed an envelope to '{}', which is not another participant",
                truncate(&env.to, 64)
            ));
        }
        if env.sealed.len() > MAX_SEALED_BYTES {
            return Err(format!(
                "node '{from}' sent an envelope of {} bytes; the limit is {MAX_SEALED_BYTES}",
                env.sealed.len()
            ));
        }
        let Some(tx) = Self::node_tx(&st, &env.to) else {
            return Err(format!("node '{}' is no longer connected", env.to));
        };
        env.from = from.to_string();
        Ok(Some((
            tx,
            coord_msg(coordinator_message::Body::Envelope(env)),
        )))
    }

    fn on_progress(&self, node: &str, mut p: JobProgress) {
        let st = self.lock();
        let Some(live) = st.live.get(&p.job_id) else {
            return;
        };
        if !live.participants.iter().any(|x| x == node) {
            return;
        }
        p.node = node.to_string();
        p.stage = truncate(&p.stage, 64);
        if let Some(tx) = st.watchers.get(&p.job_id) {
            let _ = tx.send(JobEvent {
                job: None,
                progress: Some(p),
            });
        }
    }

    fn on_outcome(self: &Arc<Self>, node: &str, o: JobOutcome) -> Outgoing {
        let mut st = self.lock();
        let Some(live) = st.live.get(&o.job_id) else {
            return Vec::new();
        };
        if !live.participants.iter().any(|x| x == node) {
            tracing::warn!(job = %o.job_id, node, "outcome from a non-participant ignored");
            return Vec::new();
        }
        match o.outcome {
            Some(job_outcome::Outcome::Result(r)) => {
                if live.result_from.as_deref() != Some(node)
                    || live.job.state() != JobState::Running
                {
                    let note = format!("node '{node}' sent a result it is not entitled to send");
                    return self.end_job(&mut st, &o.job_id, JobState::Failed, &note, None, None);
                }
                self.end_job(&mut st, &o.job_id, JobState::Succeeded, "", Some(r), None)
            }
            Some(job_outcome::Outcome::Failure(reason)) if live.secagg.is_some() => {
                // A node that fails a secure aggregation is a dropout; the others go on.
                let why = format!("it failed: {}", truncate(&reason, 300));
                if let Some(run) = st.live.get_mut(&o.job_id).and_then(|l| l.secagg.as_mut()) {
                    run.drop_out(node, &why);
                }
                self.secagg_step(&mut st, &o.job_id)
            }
            Some(job_outcome::Outcome::Failure(reason)) => {
                let note = format!("node '{node}' failed the job: {}", truncate(&reason, 1000));
                self.end_job(
                    &mut st,
                    &o.job_id,
                    JobState::Failed,
                    &note,
                    None,
                    Some(node),
                )
            }
            None => Vec::new(),
        }
    }

    fn on_disconnect(self: &Arc<Self>, node: &str, conn_id: u64) -> Outgoing {
        {
            let mut st = self.lock();
            if st.nodes.get(node).map(|c| c.conn_id) == Some(conn_id) {
                st.nodes.remove(node);
                tracing::info!(node, "node disconnected");
            }
        }
        self.fail_jobs_of(
            node,
            &format!("node '{node}' disconnected from the coordinator during the job"),
        )
    }

    /// Fails every live job `node` takes part in — except running secure aggregations, which
    /// go on without it (a dropout).
    fn fail_jobs_of(self: &Arc<Self>, node: &str, note: &str) -> Outgoing {
        let mut st = self.lock();
        let affected: Vec<String> = st
            .live
            .iter()
            .filter(|(_, l)| l.participants.iter().any(|p| p == node))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in affected {
            if let Some(run) = st.live.get_mut(&id).and_then(|l| l.secagg.as_mut()) {
                run.drop_out(node, "disconnected");
                out.extend(self.secagg_step(&mut st, &id));
                continue;
            }
            out.extend(self.end_job(&mut st, &id, JobState::Failed, note, None, Some(node)));
        }
        out
    }

    /// Takes a node's secure-aggregation upload.
    fn on_secagg(self: &Arc<Self>, node: &str, up: SecAggUpload) -> Outgoing {
        let mut st = self.lock();
        let job_id = up.job_id.clone();
        let Some(run) = st.live.get_mut(&job_id).and_then(|l| l.secagg.as_mut()) else {
            tracing::debug!(job = %job_id, node, "secure-aggregation message for a job that is not running");
            return Vec::new();
        };
        if let Err(reason) = run.on_upload(node, up) {
            tracing::warn!(job = %job_id, node, %reason, "secure-aggregation message rejected");
        }
        self.secagg_step(&mut st, &job_id)
    }

    /// Advances a secure aggregation whose round is complete: broadcasts the next round,
    /// starts the unmasking, or fails the job.
    fn secagg_step(self: &Arc<Self>, st: &mut State, job_id: &str) -> Outgoing {
        let mut out = Vec::new();
        loop {
            let Some(run) = st.live.get_mut(job_id).and_then(|l| l.secagg.as_mut()) else {
                return out;
            };
            if !run.round_complete() {
                return out;
            }
            match run.advance() {
                Err(reason) => {
                    out.extend(self.end_job(st, job_id, JobState::Failed, &reason, None, None));
                    return out;
                }
                Ok(Advance::Send(msgs)) => {
                    let (round, timeout) = (run.round(), run.round_timeout());
                    let mut gone = Vec::new();
                    for (node, mut m) in msgs {
                        m.job_id = job_id.to_string();
                        match Self::node_tx(st, &node) {
                            Some(tx) => {
                                out.push((tx, coord_msg(coordinator_message::Body::Secagg(m))))
                            }
                            None => gone.push(node),
                        }
                    }
                    if let Some(run) = st.live.get_mut(job_id).and_then(|l| l.secagg.as_mut()) {
                        for node in gone {
                            run.drop_out(&node, "disconnected");
                        }
                    }
                    self.spawn_round_timer(job_id, round, timeout);
                }
                Ok(Advance::Finish(server)) => {
                    let inner = Arc::clone(self);
                    let id = job_id.to_string();
                    tokio::spawn(async move {
                        let sum = tokio::task::spawn_blocking(move || server.finish()).await;
                        let out = {
                            let mut st = inner.lock();
                            let (state, note, result) = match sum {
                                Ok(Ok(sum)) => {
                                    let result = st
                                        .live
                                        .get(&id)
                                        .and_then(|l| l.secagg.as_ref())
                                        .map(|run| run.result(&sum));
                                    match result {
                                        Some(Ok(r)) => {
                                            (JobState::Succeeded, String::new(), Some(r))
                                        }
                                        Some(Err(e)) => (
                                            JobState::Failed,
                                            format!("cannot decode the secure sum: {e}"),
                                            None,
                                        ),
                                        None => (JobState::Succeeded, String::new(), None),
                                    }
                                }
                                Ok(Err(e)) => (
                                    JobState::Failed,
                                    format!("secure aggregation stopped: {e}; no sum was computed"),
                                    None,
                                ),
                                Err(_) => (
                                    JobState::Failed,
                                    "internal error: the unmasking task panicked".to_string(),
                                    None,
                                ),
                            };
                            inner.end_job(&mut st, &id, state, &note, result, None)
                        };
                        Self::send_all(out).await;
                    });
                    return out;
                }
            }
        }
    }

    /// After `timeout`, treats the nodes silent in `round` as dropped and moves on.
    fn spawn_round_timer(self: &Arc<Self>, job_id: &str, round: u32, timeout: Duration) {
        let inner = Arc::clone(self);
        let id = job_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let out = {
                let mut st = inner.lock();
                let expired = st
                    .live
                    .get_mut(&id)
                    .and_then(|l| l.secagg.as_mut())
                    .is_some_and(|run| run.timeout(round));
                if expired {
                    inner.secagg_step(&mut st, &id)
                } else {
                    Vec::new()
                }
            };
            Self::send_all(out).await;
        });
    }

    /// Handles one node link until it ends.
    async fn serve_link(
        self: Arc<Self>,
        node: String,
        conn_id: u64,
        mut inbound: Streaming<NodeMessage>,
    ) {
        loop {
            let next = tokio::select! {
                _ = self.closing.cancelled() => break,
                m = inbound.next() => m,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::info!(node, status = %e.message(), "node link ended with an error");
                    break;
                }
                None => break,
            };
            let out = match msg.body {
                Some(node_message::Body::Decision(d)) => self.on_decision(&node, d),
                Some(node_message::Body::Envelope(env)) => {
                    let job_id = env.job_id.clone();
                    match self.route(&node, env) {
                        Ok(Some((tx, m))) => {
                            if tx.send(Ok(m)).await.is_err() {
                                self.fail_job(
                                    &job_id,
                                    "the recipient of a protocol message disconnected",
                                    None,
                                )
                            } else {
                                Vec::new()
                            }
                        }
                        Ok(None) => Vec::new(),
                        Err(reason) => {
                            tracing::warn!(job = %job_id, node, %reason, "envelope rejected");
                            self.fail_job(&job_id, &reason, None)
                        }
                    }
                }
                Some(node_message::Body::Progress(p)) => {
                    self.on_progress(&node, p);
                    Vec::new()
                }
                Some(node_message::Body::Outcome(o)) => self.on_outcome(&node, o),
                // Decoding and verifying a masked input (hundreds of KB) and storing a ledger
                // head (an fsync) block: both run on the blocking pool, in arrival order.
                Some(node_message::Body::Secagg(up)) => {
                    let (inner, from) = (Arc::clone(&self), node.clone());
                    tokio::task::spawn_blocking(move || inner.on_secagg(&from, up))
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(node, "secure-aggregation message handler panicked");
                            Vec::new()
                        })
                }
                Some(node_message::Body::LedgerHead(h)) => {
                    let (inner, from) = (Arc::clone(&self), node.clone());
                    if tokio::task::spawn_blocking(move || inner.on_ledger_head(&from, h))
                        .await
                        .is_err()
                    {
                        tracing::error!(node, "ledger-head handler panicked");
                    }
                    Vec::new()
                }
                Some(node_message::Body::Hello(_)) => {
                    tracing::warn!(node, "duplicate hello ignored");
                    Vec::new()
                }
                None => Vec::new(),
            };
            Self::send_all(out).await;
        }
        let out = self.on_disconnect(&node, conn_id);
        Self::send_all(out).await;
    }

    /// Records a node's ledger head after checking the node's signature over the row hash
    /// (with the Ed25519 key of its certificate-bound key binding).
    fn on_ledger_head(&self, node: &str, head: LedgerHead) {
        let key = {
            let st = self.lock();
            st.nodes
                .get(node)
                .and_then(|c| c.hello.keys.as_ref())
                .map(|k| k.ed25519_public.clone())
        };
        let Some(key) = key else { return };
        let valid = head.hash.len() == 32
            && ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
                .verify(&head.hash, &head.signature)
                .is_ok();
        if !valid {
            tracing::warn!(node, dataset = %head.dataset, "ledger head with an invalid signature ignored");
            return;
        }
        match self.store.record_head(node, &head, now_ms()) {
            Ok(HeadUpdate::Rejected) => tracing::warn!(
                node,
                dataset = %head.dataset,
                seq = head.seq,
                "node reported a ledger head older than the recorded one; kept the recorded head (its ledger lost or rewrote rows)"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(node, error = %e, "cannot record ledger head"),
        }
    }

    fn job_or_stored(&self, id: &str) -> Result<Job, Status> {
        if let Some(l) = self.lock().live.get(id) {
            return Ok(l.job.clone());
        }
        self.store
            .get(id)
            .map_err(|e| Status::internal(format!("cannot read job store: {e}")))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no job '{}'; list jobs with `parleyctl jobs`",
                    truncate(id, 64)
                ))
            })
    }
}

fn coord_msg(body: coordinator_message::Body) -> CoordinatorMessage {
    CoordinatorMessage { body: Some(body) }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl parley_proto::node_link_server::NodeLink for Coordinator {
    type OpenStream = BoxStream<CoordinatorMessage>;

    async fn open(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let who = parley_net::authorize(&request, &[Role::Node], "NodeLink/Open")?;
        let mut inbound = request.into_inner();
        let hello_wait = Duration::from_secs(self.inner.limits.hello_timeout_secs);
        let first = tokio::time::timeout(hello_wait, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello received in time"))?;
        let hello = match first {
            Some(Ok(NodeMessage {
                body: Some(node_message::Body::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a node link must be hello",
                ));
            }
        };
        let keys = hello
            .keys
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("hello.keys is missing"))?;
        if keys.node_name != who.name {
            return Err(Status::permission_denied(format!(
                "hello names node '{}' but the certificate is for '{}'; set name = \"{}\" in node.toml",
                truncate(&keys.node_name, 64),
                who.name,
                who.name
            )));
        }
        parley_net::binding::verify_key_binding(
            &self.inner.ca_der,
            keys,
            std::time::SystemTime::now(),
        )
        .map_err(|e| Status::permission_denied(format!("node key binding rejected: {e}")))?;

        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let conn_id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let _ = tx
            .send(Ok(coord_msg(coordinator_message::Body::Welcome(Welcome {
                software_version: env!("CARGO_PKG_VERSION").to_string(),
            }))))
            .await;
        let replaced = {
            let mut st = self.inner.lock();
            st.nodes.insert(
                who.name.clone(),
                NodeConn {
                    conn_id,
                    tx,
                    hello,
                    connected_at_ms: now_ms(),
                },
            )
        };
        tracing::info!(node = %who.name, conn_id, "node connected");
        if replaced.is_some() {
            // A reconnect before the old link was noticed as dead: its jobs cannot continue.
            let out = self.inner.fail_jobs_of(
                &who.name,
                &format!(
                    "node '{}' reconnected during the job (its previous link was lost)",
                    who.name
                ),
            );
            Inner::send_all(out).await;
        }
        tokio::spawn(Arc::clone(&self.inner).serve_link(who.name, conn_id, inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl parley_proto::jobs_server::Jobs for Coordinator {
    type WatchStream = BoxStream<JobEvent>;

    async fn submit(&self, request: Request<SubmitJobRequest>) -> Result<Response<Job>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst], "Jobs/Submit")?;
        let job = self.inner.submit(&who.name, request.into_inner()).await?;
        Ok(Response::new(job))
    }

    async fn get(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/Get")?;
        let job = self.inner.job_or_stored(&request.get_ref().job_id)?;
        Ok(Response::new(job))
    }

    async fn watch(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/Watch")?;
        let id = request.into_inner().job_id;
        // Subscribe under the lock so no state change is missed between read and subscribe.
        let live = {
            let mut st = self.inner.lock();
            match st.live.get(&id) {
                Some(l) => {
                    let job = l.job.clone();
                    let rx = st
                        .watchers
                        .entry(id.clone())
                        .or_insert_with(|| broadcast::channel(256).0)
                        .subscribe();
                    Some((job, rx))
                }
                None => None,
            }
        };
        let (job, rx) = match live {
            Some((job, rx)) => (job, Some(rx)),
            // Not live: ended (or unknown). Read the store without holding the lock.
            None => (self.inner.job_or_stored(&id)?, None),
        };
        let (tx, out) = mpsc::channel(64);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let terminal = is_terminal(job.state());
            if tx
                .send(Ok(JobEvent {
                    job: Some(job),
                    progress: None,
                }))
                .await
                .is_err()
                || terminal
            {
                return;
            }
            let Some(mut rx) = rx else { return };
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let end = ev.job.as_ref().is_some_and(|j| is_terminal(j.state()));
                        if tx.send(Ok(ev)).await.is_err() || end {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        // The job ended and its channel was dropped: send the final state.
                        if let Ok(job) = inner.job_or_stored(&id) {
                            let _ = tx
                                .send(Ok(JobEvent {
                                    job: Some(job),
                                    progress: None,
                                }))
                                .await;
                        }
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel(&self, request: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst], "Jobs/Cancel")?;
        let req = request.into_inner();
        let note = if req.reason.is_empty() {
            format!("cancelled by analyst '{}'", who.name)
        } else {
            format!(
                "cancelled by analyst '{}': {}",
                who.name,
                truncate(&req.reason, 500)
            )
        };
        let out = {
            let mut st = self.inner.lock();
            if !st.live.contains_key(&req.job_id) {
                drop(st);
                let job = self.inner.job_or_stored(&req.job_id)?;
                return Err(Status::failed_precondition(format!(
                    "job '{}' has already ended ({:?}); nothing to cancel",
                    job.id,
                    job.state()
                )));
            }
            self.inner
                .end_job(&mut st, &req.job_id, JobState::Cancelled, &note, None, None)
        };
        Inner::send_all(out).await;
        let job = self.inner.job_or_stored(&req.job_id)?;
        Ok(Response::new(job))
    }

    async fn list(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/List")?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let mut jobs = self
            .inner
            .store
            .list(limit)
            .map_err(|e| Status::internal(format!("cannot read job store: {e}")))?;
        let st = self.inner.lock();
        for j in &mut jobs {
            if let Some(l) = st.live.get(&j.id) {
                *j = l.job.clone();
            }
        }
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/ListNodes")?;
        let st = self.inner.lock();
        let mut nodes: Vec<NodeInfo> = st
            .nodes
            .iter()
            .map(|(name, c)| NodeInfo {
                name: name.clone(),
                datasets: c.hello.datasets.clone(),
                connected_at_ms: c.connected_at_ms,
                keys: c.hello.keys.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn ledger_heads(
        &self,
        request: Request<LedgerHeadsRequest>,
    ) -> Result<Response<LedgerHeadsResponse>, Status> {
        parley_net::authorize(
            &request,
            &[Role::Analyst, Role::Auditor],
            "Jobs/LedgerHeads",
        )?;
        let req = request.into_inner();
        let heads = self
            .inner
            .store
            .heads(&req.node, &req.dataset)
            .map_err(|e| Status::internal(format!("cannot read ledger heads: {e}")))?
            .into_iter()
            .map(|h| RecordedHead {
                node: h.node,
                head: Some(h.head),
                recorded_at_ms: h.recorded_at_ms,
            })
            .collect();
        Ok(Response::new(LedgerHeadsResponse { heads }))
    }
}
