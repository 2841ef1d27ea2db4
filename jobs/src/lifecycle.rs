//! The job lifecycle: which states a job may move between, and which end it.
//!
//! ```text
//! submitted ─▶ accepted ─▶ running ─▶ succeeded
//!     │           │           └─────▶ failed | cancelled
//!     └─▶ refused | failed | cancelled └─▶ failed | cancelled
//! ```
//!
//! Every state change is recorded in the job's history with its time; refused, failed and
//! cancelled also set the job's reason. A terminal state is never left.

use parley_proto::{Job, JobState, StateChange};

/// True for the states a job never leaves: refused, succeeded, failed, cancelled.
pub fn is_terminal(state: JobState) -> bool {
    match state {
        JobState::Refused | JobState::Succeeded | JobState::Failed | JobState::Cancelled => true,
        JobState::Unspecified | JobState::Submitted | JobState::Accepted | JobState::Running => {
            false
        }
    }
}

/// True when a job in state `from` may move to `to`.
pub fn may_move(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Unspecified, Submitted)
            | (Submitted, Accepted | Refused | Failed | Cancelled)
            | (Accepted, Running | Refused | Failed | Cancelled)
            | (Running, Succeeded | Failed | Cancelled)
    )
}

/// A state change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot move from {from:?} to {to:?}")]
pub struct IllegalTransition {
    /// The job's state.
    pub from: JobState,
    /// The state asked for.
    pub to: JobState,
}

/// Moves `job` to `state` at `now_ms`, recording `note` in its history (and as its reason for
/// refused, failed and cancelled). Refuses a change the lifecycle does not allow and leaves
/// the job unchanged then.
pub fn transition(
    job: &mut Job,
    state: JobState,
    note: &str,
    now_ms: i64,
) -> Result<(), IllegalTransition> {
    let from = job.state();
    if !may_move(from, state) {
        return Err(IllegalTransition { from, to: state });
    }
    job.set_state(state);
    job.history.push(StateChange {
        state: state as i32,
        at_ms: now_ms,
        note: note.to_string(),
    });
    if matches!(
        state,
        JobState::Refused | JobState::Failed | JobState::Cancelled
    ) {
        job.reason = note.to_string();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ALL: [JobState; 8] = [
        JobState::Unspecified,
        JobState::Submitted,
        JobState::Accepted,
        JobState::Refused,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    #[test]
    fn terminal_states_are_never_left() {
        for from in ALL.into_iter().filter(|s| is_terminal(*s)) {
            for to in ALL {
                assert!(!may_move(from, to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_every_unsuccessful_end() {
        let mut job = Job::default();
        for s in [
            JobState::Submitted,
            JobState::Accepted,
            JobState::Running,
            JobState::Succeeded,
        ] {
            transition(&mut job, s, "", 1).unwrap();
        }
        assert_eq!(job.history.len(), 4);
        assert!(job.reason.is_empty());
        for (path, end) in [
            (&[JobState::Submitted][..], JobState::Refused),
            (
                &[JobState::Submitted, JobState::Accepted][..],
                JobState::Failed,
            ),
            (
                &[JobState::Submitted, JobState::Accepted, JobState::Running][..],
                JobState::Cancelled,
            ),
        ] {
            let mut job = Job::default();
            for s in path {
                transition(&mut job, *s, "", 1).unwrap();
            }
            transition(&mut job, end, "why", 2).unwrap();
            assert_eq!((job.state(), job.reason.as_str()), (end, "why"));
        }
    }

    #[test]
    fn illegal_moves_are_refused_and_change_nothing() {
        let mut job = Job::default();
        transition(&mut job, JobState::Submitted, "", 1).unwrap();
        let before = job.clone();
        for to in [JobState::Running, JobState::Succeeded, JobState::Submitted] {
            assert_eq!(
                transition(&mut job, to, "x", 2),
                Err(IllegalTransition {
                    from: JobState::Submitted,
                    to
                })
            );
        }
        assert_eq!(job, before);
        transition(&mut job, JobState::Cancelled, "stop", 3).unwrap();
        assert!(transition(&mut job, JobState::Failed, "late", 4).is_err());
        assert_eq!(job.reason, "stop");
    }
}
