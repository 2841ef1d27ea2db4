//! The job lifecycle: live jobs from submit to their final state.
//!
//! ```text
//! submit ─▶ submitted ──(every participant accepts)──▶ accepted ─▶ running
//!              │  (a participant is not connected, or is late to answer) ─▶ failed
//!              │  (a participant refuses) ─▶ refused
//! running ─▶ succeeded   (the result arrives from whom the job's driver names, or the
//!                          coordinator computed it)
//!         ─▶ failed      (a participant fails or disconnects, a protocol message is
//!                          rejected, or the run deadline passes)
//! any live state ─▶ cancelled (the analyst cancels)
//! ```
//!
//! # Guarantees
//! * A job is validated once, at submit (`parley_jobs::Job::try_from`); what the coordinator
//!   does for it afterwards follows from its [`Driver`](crate::drivers::Driver).
//! * Every state change goes through `parley_jobs::lifecycle` (so a final state is never left)
//!   and is persisted and published to the job's watchers. A job leaves the live set exactly
//!   once, in `end_job`, which also tells the participants that must know that it ended; a
//!   late message for an ended job is ignored.
//! * A secure aggregation goes on without a participant that fails or disconnects while it
//!   runs (a dropout); any other job fails.
//! * The in-memory state is authoritative for a live job: a store write that fails is logged
//!   and the next write of that job retries the whole row.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parley_jobs::lifecycle::is_terminal;
use parley_proto::{
    CancelJobRequest, Job, JobAbort, JobDecision, JobEvent, JobOffer, JobOutcome, JobProgress,
    JobResult, JobStart, JobState, ResultDelivery, SubmitJobRequest, coordinator_message,
    job_outcome,
};
use tokio::sync::broadcast;

use parley_net::{PeerIdentity, Role};

use crate::drivers::Driver;
use crate::error::ServiceError;
use crate::service::{Inner, NodeTx, Outgoing, State, coord_msg, sanitize};
use crate::store::{new_job_id, now_ms, transition};

/// A job that has not reached a final state.
pub(crate) struct LiveJob {
    pub(crate) job: Job,
    /// The typed job (parsed once at submit).
    pub(crate) typed: parley_jobs::Job,
    pub(crate) participants: Vec<String>,
    /// How the coordinator takes part (and who sends the result).
    pub(crate) driver: Driver,
    /// Participants that have not accepted yet (empty once running).
    pub(crate) undecided: HashSet<String>,
}

/// A live job's state and the stream of its later events (see [`Inner::subscribe`]).
pub(crate) type Subscription = (Job, Option<broadcast::Receiver<JobEvent>>);

/// Whether `caller` may see `job`: only the analyst who submitted it, and every auditor
/// (read-only). Nodes never call the Jobs API.
pub(crate) fn may_see(caller: &PeerIdentity, job: &Job) -> bool {
    match caller.role {
        Role::Auditor => true,
        Role::Analyst => job.submitted_by == caller.name,
        Role::Node | Role::Coordinator => false,
    }
}

impl Inner {
    /// Persists a job; store failures are logged (the in-memory state stays authoritative
    /// for the live job and the next write retries the whole row).
    fn persist(&self, job: &Job) {
        if let Err(e) = self.store.update(job) {
            tracing::error!(job = %job.id, error = %e, "cannot persist job state");
        }
    }

    /// Sends `job`'s new state to its watchers; drops them once the state is final.
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

    /// Ends a live job in `final_state`, telling every participant except `skip` to abort
    /// (when it failed, or when its driver needs everyone told), and delivering a result the
    /// coordinator computed to the participant its driver names.
    pub(crate) fn end_job(
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
        if final_state == JobState::Succeeded
            && let Some(tx) = live.driver.copy_to().and_then(|n| state.node_tx(n))
        {
            out.push((
                tx,
                coord_msg(coordinator_message::Body::Result(ResultDelivery {
                    job_id: job_id.to_string(),
                    result: live.job.result.clone(),
                })),
            ));
        }
        if final_state != JobState::Succeeded || live.driver.aborts_everyone_at_end() {
            for p in &live.participants {
                if Some(p.as_str()) == skip {
                    continue;
                }
                if let Some(tx) = state.node_tx(p) {
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

    /// Fails a live job (no-op for a job that is not live), telling every participant except
    /// `skip` to abort.
    pub(crate) fn fail_job(&self, job_id: &str, reason: &str, skip: Option<&str>) -> Outgoing {
        let mut st = self.lock();
        self.end_job(&mut st, job_id, JobState::Failed, reason, None, skip)
    }

    /// Submits a job: validates it, stores it and offers it to every participant. A job with
    /// a participant that is not connected is stored as failed. Arms the offer deadline.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        analyst: &str,
        req: SubmitJobRequest,
    ) -> Result<Job, ServiceError> {
        let spec = req.spec.ok_or(ServiceError::Missing {
            field: "SubmitJobRequest.spec",
        })?;
        let typed = parley_jobs::Job::try_from(&spec)
            .map_err(|error| ServiceError::InvalidJob { error })?;
        let driver = Driver::of(&typed)?;
        let participants: Vec<String> = spec.participants.iter().map(|p| p.node.clone()).collect();
        let mut job = Job {
            id: new_job_id(),
            spec: Some(spec.clone()),
            submitted_by: analyst.to_string(),
            ..Default::default()
        };
        transition(&mut job, JobState::Submitted, "", now_ms());
        self.store
            .insert(&job)
            .map_err(|error| ServiceError::Store {
                action: "store job",
                error,
            })?;
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
            let links: Vec<NodeTx> = participants.iter().filter_map(|p| st.node_tx(p)).collect();
            st.live.insert(
                job.id.clone(),
                LiveJob {
                    job: job.clone(),
                    typed,
                    participants: participants.clone(),
                    driver,
                    undecided: participants.into_iter().collect(),
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
        self.spawn_offer_deadline(&job.id);
        Ok(job)
    }

    /// After `[limits] offer_timeout_secs`, fails the job if a participant has not answered.
    fn spawn_offer_deadline(self: &Arc<Self>, job_id: &str) {
        let inner = Arc::clone(self);
        let id = job_id.to_string();
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
    }

    /// Takes a participant's answer to an offer. A refusal ends the job; the last acceptance
    /// starts the job's driver and the job (arming the run deadline).
    pub(crate) fn on_decision(self: &Arc<Self>, node: &str, d: JobDecision) -> Outgoing {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(live) = st.live.get_mut(&d.job_id) else {
            tracing::debug!(job = %d.job_id, node, "decision for a job that is not live");
            return Vec::new();
        };
        if !live.undecided.remove(node) {
            tracing::warn!(job = %d.job_id, node, "unexpected decision ignored");
            return Vec::new();
        }
        if !d.accept {
            let reason = sanitize(&d.reason, 1000);
            tracing::info!(job = %d.job_id, node, "job refused");
            return self.end_job(
                st,
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
        self.start(st, &d.job_id)
    }

    /// Starts a job every participant accepted: its driver, then the job itself.
    fn start(self: &Arc<Self>, st: &mut State, job_id: &str) -> Outgoing {
        let Some(live) = st.live.get(job_id) else {
            return Vec::new();
        };
        let keys = st.ed25519_keys(&live.participants);
        let Some(live) = st.live.get_mut(job_id) else {
            return Vec::new();
        };
        if let Err(reason) = live.driver.start(job_id, &live.typed, &keys) {
            return self.end_job(st, job_id, JobState::Failed, &reason, None, None);
        }
        let now = now_ms();
        transition(&mut live.job, JobState::Accepted, "", now);
        transition(&mut live.job, JobState::Running, "", now);
        let job = live.job.clone();
        let participants = live.participants.clone();
        if let Some(run) = live.driver.secagg() {
            self.spawn_round_timer(&job.id, run.round(), run.round_timeout());
        }
        self.persist(&job);
        Self::publish(st, &job);
        let out = participants
            .iter()
            .filter_map(|p| st.node_tx(p))
            .map(|tx| {
                let start = JobStart {
                    job_id: job.id.clone(),
                };
                (tx, coord_msg(coordinator_message::Body::Start(start)))
            })
            .collect();
        self.spawn_run_deadline(&job.id);
        out
    }

    /// After `[limits] job_deadline_secs`, fails the job if it is still live.
    fn spawn_run_deadline(self: &Arc<Self>, job_id: &str) {
        let inner = Arc::clone(self);
        let id = job_id.to_string();
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
    }

    /// Forwards a participant's progress report to the job's watchers.
    pub(crate) fn on_progress(&self, node: &str, mut p: JobProgress) {
        let st = self.lock();
        let Some(live) = st.live.get(&p.job_id) else {
            return;
        };
        if !live.participants.iter().any(|x| x == node) {
            return;
        }
        p.node = node.to_string();
        p.stage = sanitize(&p.stage, 64);
        if let Some(tx) = st.watchers.get(&p.job_id) {
            let _ = tx.send(JobEvent {
                job: None,
                progress: Some(p),
            });
        }
    }

    /// Takes a participant's outcome: the result (only from the participant the driver names,
    /// while running) ends the job; a failure ends it, or is a dropout for the driver.
    pub(crate) fn on_outcome(self: &Arc<Self>, node: &str, o: JobOutcome) -> Outgoing {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(live) = st.live.get_mut(&o.job_id) else {
            return Vec::new();
        };
        if !live.participants.iter().any(|x| x == node) {
            tracing::warn!(job = %o.job_id, node, "outcome from a non-participant ignored");
            return Vec::new();
        }
        match o.outcome {
            Some(job_outcome::Outcome::Result(r)) => {
                if live.driver.result_from() != Some(node) || live.job.state() != JobState::Running
                {
                    let note = format!("node '{node}' sent a result it is not entitled to send");
                    return self.end_job(st, &o.job_id, JobState::Failed, &note, None, None);
                }
                self.end_job(st, &o.job_id, JobState::Succeeded, "", Some(r), None)
            }
            Some(job_outcome::Outcome::Failure(reason)) => {
                let why = format!("it failed: {}", sanitize(&reason, 300));
                if live.driver.drop_out(node, &why) {
                    return self.drive(st, &o.job_id);
                }
                let note = format!("node '{node}' failed the job: {}", sanitize(&reason, 1000));
                self.end_job(st, &o.job_id, JobState::Failed, &note, None, Some(node))
            }
            None => Vec::new(),
        }
    }

    /// Ends `node`'s part in every live job it takes part in: a dropout where the driver goes
    /// on without it, otherwise the job fails with `note`.
    pub(crate) fn fail_jobs_of(self: &Arc<Self>, node: &str, note: &str) -> Outgoing {
        let mut guard = self.lock();
        let st = &mut *guard;
        let affected: Vec<String> = st
            .live
            .iter()
            .filter(|(_, l)| l.participants.iter().any(|p| p == node))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in affected {
            let dropped = st
                .live
                .get_mut(&id)
                .is_some_and(|l| l.driver.drop_out(node, "disconnected"));
            if dropped {
                out.extend(self.drive(st, &id));
            } else {
                out.extend(self.end_job(st, &id, JobState::Failed, note, None, Some(node)));
            }
        }
        out
    }

    /// A job by id: the live state, else the stored one.
    pub(crate) fn job_or_stored(&self, id: &str) -> Result<Job, ServiceError> {
        if let Some(l) = self.lock().live.get(id) {
            return Ok(l.job.clone());
        }
        self.store
            .get(id)
            .map_err(|error| ServiceError::Store {
                action: "read job store",
                error,
            })?
            .ok_or_else(|| ServiceError::NoJob { id: id.to_string() })
    }

    /// Cancels a live job for `analyst`; refuses a job that has already ended.
    pub(crate) async fn cancel(
        &self,
        analyst: &str,
        req: CancelJobRequest,
    ) -> Result<Job, ServiceError> {
        // Only the analyst who submitted a job may cancel it; to anyone else it does not exist.
        if self.job_or_stored(&req.job_id)?.submitted_by != analyst {
            return Err(ServiceError::NoJob { id: req.job_id });
        }
        let note = if req.reason.is_empty() {
            format!("cancelled by analyst '{analyst}'")
        } else {
            format!(
                "cancelled by analyst '{analyst}': {}",
                sanitize(&req.reason, 500)
            )
        };
        let out = {
            let mut st = self.lock();
            if !st.live.contains_key(&req.job_id) {
                drop(st);
                let job = self.job_or_stored(&req.job_id)?;
                return Err(ServiceError::AlreadyEnded {
                    state: job.state(),
                    id: job.id,
                });
            }
            self.end_job(&mut st, &req.job_id, JobState::Cancelled, &note, None, None)
        };
        Self::send_all(out).await;
        self.job_or_stored(&req.job_id)
    }

    /// The `limit` most recent jobs, live ones in their current state.
    pub(crate) fn list_jobs(
        &self,
        caller: &PeerIdentity,
        limit: usize,
    ) -> Result<Vec<Job>, ServiceError> {
        let mut jobs = self
            .store
            .list_where(limit, |j| may_see(caller, j))
            .map_err(|error| ServiceError::Store {
                action: "read job store",
                error,
            })?;
        let st = self.lock();
        for j in &mut jobs {
            if let Some(l) = st.live.get(&j.id) {
                *j = l.job.clone();
            }
        }
        Ok(jobs)
    }

    /// Job `id` as `caller` may see it: a job another analyst submitted is reported as not
    /// existing, so its id, state and result stay private.
    pub(crate) fn job_for(&self, caller: &PeerIdentity, id: &str) -> Result<Job, ServiceError> {
        let job = self.job_or_stored(id)?;
        if may_see(caller, &job) {
            Ok(job)
        } else {
            Err(ServiceError::NoJob { id: id.to_string() })
        }
    }

    /// A job's current state and, while it is live, a receiver of its later events
    /// (subscribed under the lock, so no state change is missed between read and subscribe).
    pub(crate) fn subscribe(&self, id: &str) -> Result<Subscription, ServiceError> {
        let live = {
            let mut st = self.lock();
            match st.live.get(id) {
                Some(l) => {
                    let job = l.job.clone();
                    let rx = st
                        .watchers
                        .entry(id.to_string())
                        .or_insert_with(|| broadcast::channel(256).0)
                        .subscribe();
                    Some((job, rx))
                }
                None => None,
            }
        };
        Ok(match live {
            Some((job, rx)) => (job, Some(rx)),
            // Not live: ended (or unknown). Read the store without holding the lock.
            None => (self.job_or_stored(id)?, None),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::service::Coordinator;
    use crate::store::JobStore;
    use parley_proto::{Hello, JobSpec, KeyBinding, coordinator_message::Body};

    const MATCH: &str = include_str!("../../jobs/examples/job-match.toml");
    const SECURE_SUM: &str = include_str!("../../jobs/examples/job-secure-sum.toml");

    fn coordinator() -> Arc<Inner> {
        let store = JobStore::open_in_memory().unwrap();
        Coordinator::new(store, Vec::new(), Limits::default()).inner
    }

    fn spec(text: &str) -> JobSpec {
        parley_jobs::parse_job_toml(text, "example").unwrap()
    }

    /// Registers `name` (with a key binding unless `keys` is false); returns its connection id.
    fn connect(inner: &Arc<Inner>, name: &str, keys: bool) -> u64 {
        let hello = Hello {
            keys: keys.then(|| KeyBinding {
                node_name: name.to_string(),
                ed25519_public: vec![7; 32],
                ..Default::default()
            }),
            ..Default::default()
        };
        let link = inner.connect(name, hello);
        std::mem::forget(link.rx); // keep the queue open
        link.conn_id
    }

    /// (recipient, message kind) of each queued message, sorted.
    fn sent(inner: &Inner, out: &Outgoing) -> Vec<(String, &'static str)> {
        let st = inner.lock();
        let mut v: Vec<_> = out
            .iter()
            .map(|(tx, m)| {
                let to = st
                    .nodes
                    .keys()
                    .find(|n| st.node_tx(n).is_some_and(|t| t.same_channel(tx)))
                    .cloned()
                    .unwrap_or_default();
                let kind = match &m.body {
                    Some(Body::Offer(_)) => "offer",
                    Some(Body::Start(_)) => "start",
                    Some(Body::Abort(_)) => "abort",
                    Some(Body::Result(_)) => "result",
                    Some(Body::Envelope(_)) => "envelope",
                    Some(Body::Secagg(_)) => "secagg",
                    _ => "other",
                };
                (to, kind)
            })
            .collect();
        v.sort();
        v
    }

    fn to(pairs: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
        pairs.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    fn decide(inner: &Arc<Inner>, node: &str, id: &str, accept: bool) -> Outgoing {
        let d = JobDecision {
            job_id: id.to_string(),
            accept,
            reason: "policy".into(),
        };
        inner.on_decision(node, d)
    }

    fn stored(inner: &Inner, id: &str) -> Job {
        inner.store.get(id).unwrap().unwrap()
    }

    /// A psi match job between brand (receiver) and publisher, running.
    async fn running_match() -> (Arc<Inner>, String, u64) {
        let inner = coordinator();
        connect(&inner, "brand", true);
        let publisher = connect(&inner, "publisher", true);
        let req = SubmitJobRequest {
            spec: Some(spec(MATCH)),
        };
        let job = inner.submit("ana", req).await.unwrap();
        assert_eq!(job.state(), JobState::Submitted);
        assert!(decide(&inner, "brand", &job.id, true).is_empty());
        let out = decide(&inner, "publisher", &job.id, true);
        assert_eq!(
            sent(&inner, &out),
            to(&[("brand", "start"), ("publisher", "start")])
        );
        assert_eq!(stored(&inner, &job.id).state(), JobState::Running);
        (inner, job.id, publisher)
    }

    fn outcome(id: &str, o: job_outcome::Outcome) -> JobOutcome {
        JobOutcome {
            job_id: id.to_string(),
            outcome: Some(o),
        }
    }

    fn caller(role: Role, name: &str) -> PeerIdentity {
        PeerIdentity {
            role,
            name: name.to_string(),
        }
    }

    #[tokio::test]
    async fn analysts_see_and_cancel_only_their_own_jobs() {
        let (inner, id, _) = running_match().await;
        let (ana, bob) = (caller(Role::Analyst, "ana"), caller(Role::Analyst, "bob"));
        let audrey = caller(Role::Auditor, "audrey");
        assert_eq!(inner.job_for(&ana, &id).unwrap().id, id);
        assert_eq!(inner.job_for(&audrey, &id).unwrap().id, id);
        // To another analyst the job does not exist: the same answer as for an unknown id.
        let hidden = tonic::Status::from(inner.job_for(&bob, &id).unwrap_err());
        let unknown = tonic::Status::from(inner.job_for(&bob, "job-none").unwrap_err());
        assert_eq!(hidden.code(), tonic::Code::NotFound);
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(!hidden.message().contains("ana"), "{}", hidden.message());
        assert_eq!(inner.list_jobs(&ana, 10).unwrap().len(), 1);
        assert_eq!(inner.list_jobs(&audrey, 10).unwrap().len(), 1);
        assert!(inner.list_jobs(&bob, 10).unwrap().is_empty());
        let req = CancelJobRequest {
            job_id: id.clone(),
            reason: String::new(),
        };
        let refused = tonic::Status::from(inner.cancel("bob", req).await.unwrap_err());
        assert_eq!(refused.code(), tonic::Code::NotFound);
        assert_eq!(stored(&inner, &id).state(), JobState::Running);
    }

    #[tokio::test]
    async fn a_stale_links_end_does_not_fail_the_jobs_of_the_new_link() {
        let (inner, _, old_link) = running_match().await;
        // The publisher reconnects; then a new job runs on its new link.
        connect(&inner, "publisher", true);
        let req = SubmitJobRequest {
            spec: Some(spec(MATCH)),
        };
        let job = inner.submit("ana", req).await.unwrap();
        decide(&inner, "brand", &job.id, true);
        decide(&inner, "publisher", &job.id, true);
        assert_eq!(stored(&inner, &job.id).state(), JobState::Running);
        // The old link's stream ends only now.
        assert!(inner.on_disconnect("publisher", old_link).is_empty());
        assert_eq!(stored(&inner, &job.id).state(), JobState::Running);
        assert!(inner.list_nodes().iter().any(|n| n.name == "publisher"));
    }

    #[tokio::test]
    async fn an_envelope_from_a_non_participant_is_dropped_and_the_job_runs_on() {
        let (inner, id, _) = running_match().await;
        connect(&inner, "stranger", true);
        for to in ["brand", "publisher"] {
            let env = parley_proto::Envelope {
                job_id: id.clone(),
                from: "publisher".into(),
                to: to.into(),
                seq: 0,
                sealed: vec![0; 64],
                run_nonce: vec![0; 16],
            };
            assert!(inner.on_envelope("stranger", env).await.is_empty());
        }
        assert_eq!(stored(&inner, &id).state(), JobState::Running);
        // A participant breaking the rules still fails the job.
        let bad = parley_proto::Envelope {
            job_id: id.clone(),
            from: "publisher".into(),
            to: "stranger".into(),
            seq: 0,
            sealed: vec![0; 64],
            run_nonce: vec![0; 16],
        };
        let out = inner.on_envelope("publisher", bad).await;
        assert!(!out.is_empty());
        assert_eq!(stored(&inner, &id).state(), JobState::Failed);
    }

    #[tokio::test]
    async fn the_receivers_result_succeeds_the_job() {
        let (inner, id, _) = running_match().await;
        let r = outcome(&id, job_outcome::Outcome::Result(JobResult::default()));
        assert!(inner.on_outcome("brand", r).is_empty());
        let job = stored(&inner, &id);
        assert_eq!(job.state(), JobState::Succeeded);
        assert!(job.result.is_some());
        // Final: a late outcome changes nothing, and cancelling is refused.
        let late = outcome(&id, job_outcome::Outcome::Failure("late".into()));
        assert!(inner.on_outcome("brand", late).is_empty());
        assert_eq!(stored(&inner, &id).state(), JobState::Succeeded);
        let cancel = CancelJobRequest {
            job_id: id.clone(),
            reason: String::new(),
        };
        let err = inner.cancel("ana", cancel).await.unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[tokio::test]
    async fn a_result_from_the_sender_fails_the_job() {
        let (inner, id, _) = running_match().await;
        let r = outcome(&id, job_outcome::Outcome::Result(JobResult::default()));
        let out = inner.on_outcome("publisher", r);
        assert_eq!(
            sent(&inner, &out),
            to(&[("brand", "abort"), ("publisher", "abort")])
        );
        let job = stored(&inner, &id);
        assert_eq!(job.state(), JobState::Failed);
        assert_eq!(
            job.reason,
            "node 'publisher' sent a result it is not entitled to send"
        );
        assert!(job.result.is_none());
    }

    #[tokio::test]
    async fn a_refusal_ends_the_job_and_aborts_the_others() {
        let inner = coordinator();
        connect(&inner, "brand", true);
        connect(&inner, "publisher", true);
        let req = SubmitJobRequest {
            spec: Some(spec(MATCH)),
        };
        let job = inner.submit("ana", req).await.unwrap();
        let out = decide(&inner, "publisher", &job.id, false);
        assert_eq!(sent(&inner, &out), to(&[("brand", "abort")]));
        let stored_job = stored(&inner, &job.id);
        assert_eq!(stored_job.state(), JobState::Refused);
        assert_eq!(
            stored_job.reason,
            "node 'publisher' refused the job: policy"
        );
        // A late acceptance neither restarts nor changes the job.
        assert!(decide(&inner, "brand", &job.id, true).is_empty());
        assert_eq!(stored(&inner, &job.id).state(), JobState::Refused);
    }

    #[tokio::test]
    async fn a_disconnect_fails_the_running_job() {
        let (inner, id, publisher) = running_match().await;
        let out = inner.on_disconnect("publisher", publisher);
        assert_eq!(sent(&inner, &out), to(&[("brand", "abort")]));
        let job = stored(&inner, &id);
        assert_eq!(job.state(), JobState::Failed);
        assert_eq!(
            job.reason,
            "node 'publisher' disconnected from the coordinator during the job"
        );
        assert!(inner.list_nodes().iter().all(|n| n.name != "publisher"));
    }

    #[tokio::test]
    async fn cancel_ends_a_live_job_once() {
        let (inner, id, _) = running_match().await;
        let req = CancelJobRequest {
            job_id: id.clone(),
            reason: "wrong dataset".into(),
        };
        let job = inner.cancel("ana", req.clone()).await.unwrap();
        assert_eq!(job.state(), JobState::Cancelled);
        assert_eq!(job.reason, "cancelled by analyst 'ana': wrong dataset");
        let again = tonic::Status::from(inner.cancel("ana", req).await.unwrap_err());
        assert_eq!(again.code(), tonic::Code::FailedPrecondition);
        let unknown = CancelJobRequest {
            job_id: "job-none".into(),
            reason: String::new(),
        };
        let err = tonic::Status::from(inner.cancel("ana", unknown).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn submit_checks_the_spec_and_the_participants() {
        let inner = coordinator();
        let missing = inner.submit("ana", SubmitJobRequest { spec: None }).await;
        assert!(matches!(missing, Err(ServiceError::Missing { .. })));
        let mut bad = spec(MATCH);
        bad.participants.truncate(1);
        let req = SubmitJobRequest { spec: Some(bad) };
        let invalid = inner.submit("ana", req).await;
        assert!(matches!(invalid, Err(ServiceError::InvalidJob { .. })));
        assert!(
            inner
                .list_jobs(&caller(Role::Auditor, "audrey"), 10)
                .unwrap()
                .is_empty()
        );

        connect(&inner, "brand", true);
        let req = SubmitJobRequest {
            spec: Some(spec(MATCH)),
        };
        let job = inner.submit("ana", req).await.unwrap();
        assert_eq!(job.state(), JobState::Failed);
        assert!(job.reason.starts_with("node 'publisher' is not connected"));
        assert_eq!(stored(&inner, &job.id).state(), JobState::Failed);
        assert!(inner.lock().live.is_empty());
    }

    #[tokio::test]
    async fn fail_job_publishes_the_final_state() {
        let (inner, id, _) = running_match().await;
        let (job, rx) = inner.subscribe(&id).unwrap();
        assert_eq!(job.state(), JobState::Running);
        let mut rx = rx.expect("a live job has an event stream");
        let out = inner.fail_job(&id, "boom", Some("brand"));
        assert_eq!(sent(&inner, &out), to(&[("publisher", "abort")]));
        let ev = rx.try_recv().unwrap();
        let job = ev.job.unwrap();
        assert_eq!(
            (job.state(), job.reason.as_str()),
            (JobState::Failed, "boom")
        );
        assert!(inner.lock().watchers.is_empty());
        let (job, rx) = inner.subscribe(&id).unwrap();
        assert_eq!(job.state(), JobState::Failed);
        assert!(rx.is_none());
    }

    #[tokio::test]
    async fn a_secure_sum_without_key_bindings_fails_at_start() {
        let inner = coordinator();
        let names: Vec<String> = (1..=5).map(|i| format!("retailer-{i}")).collect();
        for n in &names {
            connect(&inner, n, false);
        }
        let req = SubmitJobRequest {
            spec: Some(spec(SECURE_SUM)),
        };
        let job = inner.submit("ana", req).await.unwrap();
        let mut out = Vec::new();
        for n in &names {
            out = decide(&inner, n, &job.id, true);
        }
        let expect: Vec<_> = names.iter().map(|n| (n.clone(), "abort")).collect();
        assert_eq!(sent(&inner, &out), expect);
        let job = stored(&inner, &job.id);
        assert_eq!(job.state(), JobState::Failed);
        assert_eq!(
            job.reason,
            "cannot start the secure aggregation: no verified key binding for node 'retailer-1'"
        );
    }
}
