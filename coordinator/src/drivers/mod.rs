//! How the coordinator takes part in a running job: one [`Driver`] per live job.
//!
//! The driver follows from the job's [`CoordinatorPart`] (a fact of the kind, computed in
//! `parley_jobs`) in [`Driver::of`], the one `match` on it here; every question the lifecycle
//! asks about a job's driver is an exhaustive `match` on [`Driver`], so a new kind of
//! participation is one variant plus the arms the compiler asks for.
//!
//! * [`Driver::Relay`] (psi, psi_sum): the coordinator forwards sealed envelopes between the
//!   two nodes (`crate::relay`); the result comes from one participant.
//! * [`Driver::Local`] (dp_stats): nothing to drive; the result comes from the one participant.
//! * [`Driver::SecAggServer`] (secure_sum): the coordinator is the server of the secure
//!   aggregation ([`secagg`]); it computes the result and may send a copy to a participant.

pub(crate) mod secagg;

use std::collections::HashMap;
use std::sync::Arc;

use parley_jobs::{CoordinatorPart, Job, ResultTo};

use crate::error::ServiceError;
use crate::service::{Inner, Outgoing, State};
use secagg::SecAggRun;

/// How the coordinator takes part in one job (see the module docs).
pub(crate) enum Driver {
    /// Relays sealed envelopes between the participants.
    Relay {
        /// The participant whose outcome carries the result.
        result_from: String,
    },
    /// Nothing to drive: the one participant computes alone.
    Local {
        /// The participant whose outcome carries the result.
        result_from: String,
    },
    /// Runs the secure-aggregation server and computes the result.
    SecAggServer(SecAggServer),
}

/// The coordinator's part in a secure_sum job.
pub(crate) struct SecAggServer {
    /// The participant that receives a copy of the computed result, if any.
    copy_to: Option<String>,
    /// The server rounds: `None` until every participant has accepted.
    run: Option<Box<SecAggRun>>,
}

impl Driver {
    /// The driver of `job`. Refuses a job whose result receiver does not fit how the
    /// coordinator takes part (a result from a participant when the coordinator computes it,
    /// or the other way round).
    pub(crate) fn of(job: &Job) -> Result<Driver, ServiceError> {
        let no_driver = || ServiceError::NoDriver {
            kind: job.kind_name(),
        };
        let node = |i: usize| job.participants.get(i).map(|p| p.node.clone());
        let result_from = || match job.result_to() {
            ResultTo::Participant(i) => node(i).ok_or_else(no_driver),
            ResultTo::Coordinator { .. } => Err(no_driver()),
        };
        Ok(match job.coordinator_part() {
            CoordinatorPart::Relay => Driver::Relay {
                result_from: result_from()?,
            },
            CoordinatorPart::Local => Driver::Local {
                result_from: result_from()?,
            },
            CoordinatorPart::SecAggServer => {
                let copy_to = match job.result_to() {
                    ResultTo::Coordinator { copy_to: None } => None,
                    ResultTo::Coordinator { copy_to: Some(i) } => {
                        Some(node(i).ok_or_else(no_driver)?)
                    }
                    ResultTo::Participant(_) => return Err(no_driver()),
                };
                Driver::SecAggServer(SecAggServer { copy_to, run: None })
            }
        })
    }

    /// The participant whose outcome carries the result (none when the coordinator computes
    /// it).
    pub(crate) fn result_from(&self) -> Option<&str> {
        match self {
            Driver::Relay { result_from } | Driver::Local { result_from } => Some(result_from),
            Driver::SecAggServer(_) => None,
        }
    }

    /// The participant that receives a copy of a result the coordinator computed.
    pub(crate) fn copy_to(&self) -> Option<&str> {
        match self {
            Driver::Relay { .. } | Driver::Local { .. } => None,
            Driver::SecAggServer(s) => s.copy_to.as_deref(),
        }
    }

    /// True when every participant must be told that the job ended, even when it succeeded
    /// (a secure aggregation: nodes that dropped out may still wait for a round).
    pub(crate) fn aborts_everyone_at_end(&self) -> bool {
        match self {
            Driver::Relay { .. } | Driver::Local { .. } => false,
            Driver::SecAggServer(_) => true,
        }
    }

    /// Sets up the coordinator's part once every participant accepted; `keys` are the
    /// participants' Ed25519 keys from their verified key bindings. An error fails the job.
    pub(crate) fn start(
        &mut self,
        job_id: &str,
        job: &Job,
        keys: &HashMap<String, [u8; 32]>,
    ) -> Result<(), String> {
        match self {
            Driver::Relay { .. } | Driver::Local { .. } => Ok(()),
            Driver::SecAggServer(s) => {
                let run = SecAggRun::new(job_id, job, keys)
                    .map_err(|reason| format!("cannot start the secure aggregation: {reason}"))?;
                s.run = Some(Box::new(run));
                Ok(())
            }
        }
    }

    /// Tells the driver that `node` left the job (`why`). True when the job goes on without
    /// it (a dropout of a running secure aggregation; call [`Inner::drive`] next); false when
    /// the job must fail.
    pub(crate) fn drop_out(&mut self, node: &str, why: &str) -> bool {
        match self {
            Driver::Relay { .. } | Driver::Local { .. } => false,
            Driver::SecAggServer(s) => match &mut s.run {
                Some(run) => {
                    run.drop_out(node, why);
                    true
                }
                None => false,
            },
        }
    }

    /// The running secure aggregation, if this is one.
    pub(crate) fn secagg(&mut self) -> Option<&mut SecAggRun> {
        match self {
            Driver::Relay { .. } | Driver::Local { .. } => None,
            Driver::SecAggServer(s) => s.run.as_deref_mut(),
        }
    }
}

impl Inner {
    /// Lets the driver of a live job act on what changed (a dropout, an upload, a deadline):
    /// the secure-aggregation server ends a round that is complete.
    pub(crate) fn drive(self: &Arc<Self>, st: &mut State, job_id: &str) -> Outgoing {
        match st.live.get(job_id).map(|l| &l.driver) {
            None | Some(Driver::Relay { .. } | Driver::Local { .. }) => Vec::new(),
            Some(Driver::SecAggServer(_)) => self.secagg_step(st, job_id),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn job(text: &str) -> Job {
        parley_jobs::parse_job(text, "example").unwrap()
    }

    #[test]
    fn each_kind_gets_its_driver() {
        let psi = Driver::of(&job(include_str!("../../../jobs/examples/job-match.toml"))).unwrap();
        assert!(matches!(&psi, Driver::Relay { result_from } if result_from == "brand"));
        let sum = Driver::of(&job(include_str!("../../../jobs/examples/job-sum.toml"))).unwrap();
        assert!(matches!(&sum, Driver::Relay { result_from } if result_from == "brand"));
        let stats = Driver::of(&job(include_str!(
            "../../../jobs/examples/job-dp-stats.toml"
        )))
        .unwrap();
        assert!(matches!(&stats, Driver::Local { result_from } if result_from == "brand"));
        for d in [&psi, &sum, &stats] {
            assert_eq!(d.copy_to(), None);
            assert!(!d.aborts_everyone_at_end());
        }
        let mut ss = Driver::of(&job(include_str!(
            "../../../jobs/examples/job-secure-sum.toml"
        )))
        .unwrap();
        assert!(matches!(ss, Driver::SecAggServer(_)));
        assert_eq!(ss.result_from(), None);
        assert_eq!(ss.copy_to(), Some("retailer-1"));
        assert!(ss.aborts_everyone_at_end());
        // Before it starts, a secure aggregation has no run to drop out of.
        assert!(!ss.drop_out("retailer-2", "disconnected"));
        assert!(ss.secagg().is_none());
    }
}
