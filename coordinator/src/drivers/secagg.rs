//! The coordinator as the server of secure aggregation (`secure_sum` jobs).
//!
//! Drives `parley_crypto::secagg`'s server rounds over the node links: collects each round's
//! messages, decides who dropped out (disconnected, failed, silent until the round deadline,
//! or sent a message the server rejects), broadcasts the next round to the survivors and
//! finally unmasks the sum. [`SecAggRun`] is the protocol state of one job (no I/O); the
//! `Inner` methods at the end move it along under the state lock and queue the round
//! messages. Decoding an upload runs on the blocking pool and the unmasking in
//! `spawn_blocking`, never on the async runtime. See the crypto module for the protocol and
//! its guarantees.
//!
//! # What the coordinator learns
//! Who took part in each round, message sizes, and the sum of the vectors of the nodes whose
//! masked inputs arrived (`U3`) — nothing about any single node's vector, as long as fewer than
//! `t` nodes collude with it. Fewer than `t` survivors at any round, or fewer than
//! `min_contributors` inputs, fail the job without computing any sum.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parley_crypto::secagg::{
    AdvertiseKeys, EncryptedShare, MaskedInput, PeerKeys, Server, ServerAwaitingInputs,
    ServerAwaitingShares, ServerAwaitingUnmask, UnmaskShares,
};
use parley_jobs::kinds::secure_sum::SecureSum;
use parley_jobs::{Job, Kind};
use parley_proto::{JobResult, JobState, SecAggRound, SecAggUpload, coordinator_message};

use crate::service::{Inner, Outgoing, State, coord_msg};

/// Where the server is in the protocol.
enum Stage {
    Round0(Server),
    Round1(ServerAwaitingShares),
    Round2(ServerAwaitingInputs),
    Round3(ServerAwaitingUnmask),
    /// The unmasking runs (or ran) elsewhere.
    Finishing,
}

/// What to do after a round ended.
pub(crate) enum Advance {
    /// Send these round messages (node name, message).
    Send(Vec<(String, SecAggRound)>),
    /// Every unmasking share is in: compute the sum (CPU-heavy, off the async runtime).
    Finish(Box<ServerAwaitingUnmask>),
}

/// One running secure aggregation.
pub(crate) struct SecAggRun {
    job: SecureSum,
    /// Node name of participant index i + 1.
    names: Vec<String>,
    stage: Stage,
    round: u32,
    /// Who must answer the current round.
    expected: BTreeSet<u32>,
    answered: BTreeSet<u32>,
    /// Participants that dropped out, with the round they missed and why.
    dropped: BTreeMap<u32, String>,
    min_contributors: u32,
    /// U3, once known.
    contributors: Vec<u32>,
    round_timeout: Duration,
}

impl SecAggRun {
    /// Sets up the server for `job`; `keys` are the participants' Ed25519 ledger/signing keys
    /// from their certificate-bound key bindings.
    pub(crate) fn new(
        job_id: &str,
        job: &Job,
        keys: &HashMap<String, [u8; 32]>,
    ) -> Result<SecAggRun, String> {
        let Kind::SecureSum(p) = &job.kind else {
            return Err(format!(
                "a {} job has no secure aggregation",
                job.kind_name()
            ));
        };
        let names: Vec<String> = job.participants.iter().map(|q| q.node.clone()).collect();
        let n = names.len();
        let mut peer_keys = PeerKeys::new();
        for (i, name) in names.iter().enumerate() {
            let key = keys
                .get(name)
                .ok_or_else(|| format!("no verified key binding for node '{name}'"))?;
            peer_keys.insert(i as u32 + 1, *key);
        }
        let params = p.secagg_params(job_id)?;
        let server = Server::new(params, peer_keys).map_err(|e| e.to_string())?;
        let min_contributors = p.min_contributors;
        let secs = p.round_timeout_secs;
        Ok(SecAggRun {
            job: p.clone(),
            expected: (1..=n as u32).collect(),
            names,
            stage: Stage::Round0(server),
            round: 0,
            answered: BTreeSet::new(),
            dropped: BTreeMap::new(),
            min_contributors,
            contributors: Vec::new(),
            round_timeout: Duration::from_secs(u64::from(secs)),
        })
    }

    /// The current round (0..=3; 4 once unmasking started).
    pub(crate) fn round(&self) -> u32 {
        self.round
    }

    /// The per-round deadline.
    pub(crate) fn round_timeout(&self) -> Duration {
        self.round_timeout
    }

    fn index_of(&self, node: &str) -> Option<u32> {
        self.names
            .iter()
            .position(|n| n == node)
            .map(|i| i as u32 + 1)
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize - 1).map_or("?", String::as_str)
    }

    /// Marks `node` as dropped out (disconnected, failed, or rejected) in the current round.
    pub(crate) fn drop_out(&mut self, node: &str, why: &str) {
        if let Some(i) = self.index_of(node)
            && !self.dropped.contains_key(&i)
        {
            tracing::info!(
                node,
                round = self.round,
                why,
                "secure aggregation: node dropped out"
            );
            self.dropped
                .insert(i, format!("{node} (round {}: {why})", self.round));
            self.expected.remove(&i);
        }
    }

    /// True when every node expected in this round answered or dropped out.
    pub(crate) fn round_complete(&self) -> bool {
        self.expected.iter().all(|i| self.answered.contains(i))
    }

    /// Treats every node that has not answered round `round` as dropped. Returns false if the
    /// run has already moved past that round.
    pub(crate) fn timeout(&mut self, round: u32) -> bool {
        if round != self.round || matches!(self.stage, Stage::Finishing) {
            return false;
        }
        let silent: Vec<u32> = self
            .expected
            .iter()
            .copied()
            .filter(|i| !self.answered.contains(i))
            .collect();
        for i in silent {
            let name = self.name(i).to_string();
            self.drop_out(&name, "no answer before the round deadline");
        }
        true
    }

    /// Takes a node's upload. A message the server rejects (wrong round, undecodable, bad
    /// signature, replayed from another job, wrong vector length...) drops that node out and
    /// returns the reason; the run goes on without it.
    pub(crate) fn on_upload(&mut self, node: &str, up: SecAggUpload) -> Result<(), String> {
        let Some(i) = self.index_of(node) else {
            return Err(format!("node '{node}' is not a participant"));
        };
        if !self.expected.contains(&i) || self.answered.contains(&i) {
            return Err(format!(
                "node '{node}' sent a round-{} message it was not asked for",
                up.round
            ));
        }
        if up.round != self.round {
            let why = format!(
                "sent a round-{} message during round {}",
                up.round, self.round
            );
            self.drop_out(node, &why);
            return Err(format!("node '{node}' {why}"));
        }
        let vector_len = self.job.vector_len();
        let result = (|| -> Result<(), String> {
            let one = |m: &[Vec<u8>]| -> Result<Vec<u8>, String> {
                match m {
                    [x] => Ok(x.clone()),
                    _ => Err(format!("expected one message, got {}", m.len())),
                }
            };
            match &mut self.stage {
                Stage::Round0(s) => {
                    let m = AdvertiseKeys::from_bytes(&one(&up.messages)?)
                        .map_err(|e| e.to_string())?;
                    check_sender(m.sender(), i)?;
                    s.add_advertisement(m).map_err(|e| e.to_string())
                }
                Stage::Round1(s) => {
                    let shares = up
                        .messages
                        .iter()
                        .map(|b| EncryptedShare::from_bytes(b).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    s.add_shares(i, shares).map_err(|e| e.to_string())
                }
                Stage::Round2(s) => {
                    let m = MaskedInput::from_bytes(&one(&up.messages)?, vector_len)
                        .map_err(|e| e.to_string())?;
                    check_sender(m.sender(), i)?;
                    s.add_masked_input(m).map_err(|e| e.to_string())
                }
                Stage::Round3(s) => {
                    let m =
                        UnmaskShares::from_bytes(&one(&up.messages)?).map_err(|e| e.to_string())?;
                    check_sender(m.sender(), i)?;
                    s.add_unmask(m).map_err(|e| e.to_string())
                }
                Stage::Finishing => Err("the aggregation is already being unmasked".into()),
            }
        })();
        match result {
            Ok(()) => {
                self.answered.insert(i);
                Ok(())
            }
            Err(why) => {
                let why = format!("its round-{} message was rejected: {why}", self.round);
                self.drop_out(node, &why);
                Err(format!("node '{node}': {why}"))
            }
        }
    }

    /// Ends the current round: the next round's messages, or the unmasking work. An error
    /// fails the job (too few survivors); no sum is computed then.
    pub(crate) fn advance(&mut self) -> Result<Advance, String> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finishing);
        let fail = |e: parley_crypto::secagg::SecAggError| {
            format!("secure aggregation stopped: {e}; no sum was computed")
        };
        let alive = |set: &[u32], dropped: &BTreeMap<u32, String>| -> Vec<u32> {
            set.iter()
                .copied()
                .filter(|i| !dropped.contains_key(i))
                .collect()
        };
        let out = match stage {
            Stage::Round0(s) => {
                let (next, ads) = s.finish_round0().map_err(fail)?;
                let u1: Vec<u32> = ads.iter().map(AdvertiseKeys::sender).collect();
                let bytes: Vec<Vec<u8>> = ads.iter().map(AdvertiseKeys::to_bytes).collect();
                self.stage = Stage::Round1(next);
                self.next_round(&alive(&u1, &self.dropped), |_| (bytes.clone(), Vec::new()))
            }
            Stage::Round1(s) => {
                let (next, mut routed) = s.finish_round1().map_err(fail)?;
                let u2: Vec<u32> = routed.keys().copied().collect();
                self.stage = Stage::Round2(next);
                self.next_round(&alive(&u2, &self.dropped), |v| {
                    let shares = routed.remove(&v).unwrap_or_default();
                    (
                        shares.iter().map(EncryptedShare::to_bytes).collect(),
                        Vec::new(),
                    )
                })
            }
            Stage::Round2(s) => {
                let (next, u3) = s.finish_round2().map_err(fail)?;
                if (u3.len() as u32) < self.min_contributors {
                    return Err(format!(
                        "only {} node(s) delivered their masked input; the job requires at least \
                         {} (min_contributors); no sum was computed",
                        u3.len(),
                        self.min_contributors
                    ));
                }
                self.contributors = u3.clone();
                self.stage = Stage::Round3(next);
                let survivors = u3.clone();
                self.next_round(&alive(&u3, &self.dropped), |_| {
                    (Vec::new(), survivors.clone())
                })
            }
            Stage::Round3(s) => {
                self.round = 4;
                return Ok(Advance::Finish(Box::new(s)));
            }
            Stage::Finishing => return Err("secure aggregation already finished".into()),
        };
        Ok(out)
    }

    /// Moves to the next round with `recipients`; `payload(v)` gives (messages, survivors).
    fn next_round(
        &mut self,
        recipients: &[u32],
        mut payload: impl FnMut(u32) -> (Vec<Vec<u8>>, Vec<u32>),
    ) -> Advance {
        self.round += 1;
        self.expected = recipients.iter().copied().collect();
        self.answered.clear();
        let msgs = recipients
            .iter()
            .map(|&v| {
                let (messages, survivors) = payload(v);
                (
                    self.name(v).to_string(),
                    SecAggRound {
                        job_id: String::new(),
                        round: self.round,
                        messages,
                        survivors,
                    },
                )
            })
            .collect();
        Advance::Send(msgs)
    }

    /// The released result for the unmasked `sum` (layout and noise from the job's one
    /// description in `parley_jobs`).
    pub(crate) fn result(&self, sum: &[u64]) -> Result<JobResult, String> {
        let contributors = self
            .contributors
            .iter()
            .map(|&i| self.name(i).to_string())
            .collect();
        let dropped = self.dropped.values().cloned().collect();
        Ok(JobResult::from(self.job.result(
            sum,
            contributors,
            dropped,
        )?))
    }
}

fn check_sender(claimed: u32, actual: u32) -> Result<(), String> {
    if claimed == actual {
        Ok(())
    } else {
        Err(format!(
            "the message says it is from participant {claimed}, but it came from participant {actual}"
        ))
    }
}

impl Inner {
    /// Takes a node's secure-aggregation upload (CPU-heavy: run it off the async runtime).
    pub(crate) fn on_secagg(self: &Arc<Self>, node: &str, up: SecAggUpload) -> Outgoing {
        let mut guard = self.lock();
        let st = &mut *guard;
        let job_id = up.job_id.clone();
        let Some(run) = st.live.get_mut(&job_id).and_then(|l| l.driver.secagg()) else {
            tracing::debug!(job = %job_id, node, "secure-aggregation message for a job that is not running");
            return Vec::new();
        };
        if let Err(reason) = run.on_upload(node, up) {
            tracing::warn!(job = %job_id, node, %reason, "secure-aggregation message rejected");
        }
        self.secagg_step(st, &job_id)
    }

    /// Advances a secure aggregation whose round is complete: broadcasts the next round,
    /// starts the unmasking, or fails the job.
    pub(crate) fn secagg_step(self: &Arc<Self>, st: &mut State, job_id: &str) -> Outgoing {
        let mut out = Vec::new();
        loop {
            let Some(run) = st.live.get_mut(job_id).and_then(|l| l.driver.secagg()) else {
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
                        match st.node_tx(&node) {
                            Some(tx) => {
                                out.push((tx, coord_msg(coordinator_message::Body::Secagg(m))))
                            }
                            None => gone.push(node),
                        }
                    }
                    if let Some(run) = st.live.get_mut(job_id).and_then(|l| l.driver.secagg()) {
                        for node in gone {
                            run.drop_out(&node, "disconnected");
                        }
                    }
                    self.spawn_round_timer(job_id, round, timeout);
                }
                Ok(Advance::Finish(server)) => {
                    self.spawn_unmask(job_id, server);
                    return out;
                }
            }
        }
    }

    /// Unmasks the sum on the blocking pool, then ends the job with its result.
    fn spawn_unmask(self: &Arc<Self>, job_id: &str, server: Box<ServerAwaitingUnmask>) {
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
                            .get_mut(&id)
                            .and_then(|l| l.driver.secagg())
                            .map(|run| run.result(&sum));
                        match result {
                            Some(Ok(r)) => (JobState::Succeeded, String::new(), Some(r)),
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
    }

    /// After `timeout`, treats the nodes silent in `round` as dropped and moves on.
    pub(crate) fn spawn_round_timer(self: &Arc<Self>, job_id: &str, round: u32, timeout: Duration) {
        let inner = Arc::clone(self);
        let id = job_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let out = {
                let mut guard = inner.lock();
                let st = &mut *guard;
                let expired = st
                    .live
                    .get_mut(&id)
                    .and_then(|l| l.driver.secagg())
                    .is_some_and(|run| run.timeout(round));
                if expired {
                    inner.secagg_step(st, &id)
                } else {
                    Vec::new()
                }
            };
            Self::send_all(out).await;
        });
    }
}
