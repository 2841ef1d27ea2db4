//! Helpers shared by the unit tests.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use parley_jobs::lifecycle::transition;
use parley_proto::{Job, JobKind, JobSpec, JobState, Participant, PsiMode, PsiParams, PsiRole};

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A `psi/match` job brand/crm (R) × publisher/subs (S), submitted at 1_700_000_000_000 and
/// moved to `state` (through the states the lifecycle requires on the way) at
/// 1_700_000_001_500, with `reason` as the last change's note.
pub(crate) fn finished_job(state: JobState, reason: &str) -> Job {
    let mut job = Job {
        id: "job-0123456789abcdef".into(),
        spec: Some(JobSpec {
            label: "overlap".into(),
            kind: JobKind::Psi as i32,
            participants: vec![
                Participant {
                    node: "brand".into(),
                    dataset: "crm".into(),
                    columns: vec!["email".into()],
                    psi_role: PsiRole::Receiver as i32,
                    ..Default::default()
                },
                Participant {
                    node: "publisher".into(),
                    dataset: "subs".into(),
                    columns: vec![],
                    psi_role: PsiRole::Sender as i32,
                    ..Default::default()
                },
            ],
            params: Some(parley_proto::job_spec::Params::Psi(PsiParams {
                mode: PsiMode::Match as i32,
                min_intersection: 100,
                ..Default::default()
            })),
        }),
        submitted_by: "alice".into(),
        ..Job::default()
    };
    transition(&mut job, JobState::Submitted, "", 1_700_000_000_000).unwrap();
    let on_the_way: &[JobState] = match state {
        JobState::Running => &[JobState::Accepted],
        JobState::Succeeded => &[JobState::Accepted, JobState::Running],
        _ => &[],
    };
    for s in on_the_way {
        transition(&mut job, *s, "", 1_700_000_001_500).unwrap();
    }
    transition(&mut job, state, reason, 1_700_000_001_500).unwrap();
    job
}
