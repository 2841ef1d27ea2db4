//! The typed job: [`Job`] with one [`Kind`] variant per kind of computation.
//!
//! `Job::try_from(&JobSpec)` is the one place a wire job becomes a validated job: every field
//! is checked, every default is resolved, and what a kind does not use must be absent. After it
//! no code needs to look at a raw `JobSpec`. `JobSpec::from(&Job)` converts back, with the
//! defaults written out, so `Job → JobSpec → Job` is the identity.
//!
//! The facts about a kind — who plays which role, which columns each participant reads, what
//! a release costs, who receives the result, what part the coordinator plays — are methods
//! here that dispatch with one exhaustive `match` to the kind's module in [`crate::kinds`].

use parley_proto::{JobKind, JobSpec, Participant as PbParticipant, PsiMode as PbPsiMode};

use crate::JobError;
use crate::kinds::{
    dp_stats::DpStats, lift::Lift, overlap::Overlap, psi::Psi, psi_sum::PsiSum, rfm::Rfm,
    secure_sum::SecureSum,
};
use crate::limits::MAX_LABEL_BYTES;
use crate::params::check_participant;

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Free-text label for humans (at most [`MAX_LABEL_BYTES`] bytes, no control characters).
    pub label: String,
    /// The nodes taking part, in the order the analyst listed them.
    pub participants: Vec<Participant>,
    /// What the job computes, with its parameters.
    pub kind: Kind,
}

/// One node's part in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Node name (as in its certificate).
    pub node: String,
    /// Dataset name at that node.
    pub dataset: String,
    /// PSI family: identifier columns to use; empty = every identifier column of the dataset.
    /// Always empty for other kinds.
    pub columns: Vec<String>,
}

/// What a job computes. One variant per kind; each kind's parameters, defaults and facts live
/// in its module under [`crate::kinds`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// PSI match or cardinality between two nodes.
    Psi(Psi),
    /// PSI intersection-sum (conversion measurement) between two nodes.
    PsiSum(PsiSum),
    /// DP statistics over one node's dataset.
    DpStats(DpStats),
    /// Secure aggregation of per-category vectors across many nodes.
    SecureSum(SecureSum),
    /// RFM segments over one node's transaction table.
    Rfm(Rfm),
    /// Conversion lift of a test/control campaign between a publisher and a brand.
    Lift(Lift),
    /// Segmented overlap and match rate between two nodes.
    Overlap(Overlap),
}

/// The part a participant plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PSI match/cardinality: learns the result about its own records.
    PsiReceiver,
    /// PSI match/cardinality: contributes its set, learns the receiver's set size.
    PsiSender,
    /// Intersection-sum and lift P1: identifiers (lift: with arm labels); adds the noise,
    /// learns |X ∩ Y| (per cell).
    SumP1,
    /// Intersection-sum and lift P2: identifiers with values; decrypts the noisy totals.
    SumP2,
    /// DP statistics: the one node, reading its own data.
    StatsOwner,
    /// Secure aggregation: contributes one masked vector.
    Contributor,
}

impl Role {
    /// The role name node policies use: `receiver` (learns or releases the result) or
    /// `sender` (contributes).
    pub fn policy_name(self) -> &'static str {
        match self {
            Role::PsiReceiver | Role::SumP2 | Role::StatsOwner => "receiver",
            Role::PsiSender | Role::SumP1 | Role::Contributor => "sender",
        }
    }
}

/// Where a job's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultTo {
    /// The participant at this index computes the result and sends it to the coordinator,
    /// which shows it to the analyst.
    Participant(usize),
    /// The coordinator computes the result (it is the server of the protocol); it also
    /// delivers it to the participant at `copy_to`, if any.
    Coordinator {
        /// A participant that receives a copy of the result.
        copy_to: Option<usize>,
    },
}

/// What the coordinator does in a job besides storing it and offering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorPart {
    /// Relays sealed envelopes between the participants.
    Relay,
    /// Nothing: the one participant computes alone.
    Local,
    /// Runs the secure-aggregation server.
    SecAggServer,
}

/// The privacy cost a release charges to a participant's dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// ε charged.
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// Ledger mechanism label, e.g. `psi_sum/laplace`.
    pub mechanism: String,
}

impl Job {
    /// The kind's name as node policies and the CLI write it: `psi_match`,
    /// `psi_cardinality`, `psi_sum`, `dp_stats`, `secure_sum`, `rfm`, `lift` or `overlap`.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The index and role of `node`, if it takes part.
    pub fn role_of(&self, node: &str) -> Option<(usize, Role)> {
        let i = self.participants.iter().position(|p| p.node == node)?;
        Some((i, self.role(i)))
    }

    /// The role of participant `index` (which must be in range).
    pub fn role(&self, index: usize) -> Role {
        match &self.kind {
            Kind::Psi(k) => k.role(index),
            Kind::PsiSum(k) => k.role(index),
            Kind::Lift(k) => k.role(index),
            Kind::Overlap(k) => k.role(index),
            Kind::DpStats(_) | Kind::Rfm(_) => Role::StatsOwner,
            Kind::SecureSum(_) => Role::Contributor,
        }
    }

    /// What the job charges each participant's dataset: `None` for exact releases. Every
    /// participant of a kind pays the same cost (the release is about all of them).
    pub fn release_cost(&self) -> Option<Cost> {
        match &self.kind {
            Kind::Psi(k) => k.release_cost(),
            Kind::PsiSum(k) => Some(k.release_cost()),
            Kind::DpStats(k) => Some(k.release_cost()),
            Kind::Rfm(k) => Some(k.release_cost()),
            Kind::Lift(k) => Some(k.release_cost()),
            Kind::Overlap(k) => Some(k.release_cost()),
            Kind::SecureSum(k) => k.release_cost(),
        }
    }

    /// The identifier normalisation profile every participant must have prepared its dataset
    /// with, for kinds that match identifiers across nodes (`None` for the others).
    pub fn identifier_profile(&self) -> Option<parley_crypto::normalize::Profile> {
        match &self.kind {
            Kind::Psi(k) => Some(k.profile),
            Kind::PsiSum(k) => Some(k.profile),
            Kind::Lift(k) => Some(k.profile),
            Kind::Overlap(k) => Some(k.profile),
            Kind::DpStats(_) | Kind::Rfm(_) | Kind::SecureSum(_) => None,
        }
    }

    /// The non-identifier columns participant `index` reads from its dataset: value and
    /// segment columns. (Identifier columns are [`Participant::columns`].)
    pub fn data_columns(&self, index: usize) -> Vec<&str> {
        match &self.kind {
            Kind::Psi(_) => Vec::new(),
            Kind::PsiSum(k) => k.data_columns(index),
            Kind::Lift(k) => k.data_columns(index),
            Kind::Overlap(k) => k.data_columns(index),
            Kind::DpStats(k) => k.data_columns(),
            Kind::Rfm(k) => k.data_columns(),
            Kind::SecureSum(k) => k.data_columns(),
        }
    }

    /// True when participant `index` matches on identifier columns (the PSI family).
    pub fn reads_identifiers(&self) -> bool {
        match &self.kind {
            Kind::Psi(_) | Kind::PsiSum(_) | Kind::Lift(_) | Kind::Overlap(_) => true,
            Kind::DpStats(_) | Kind::SecureSum(_) | Kind::Rfm(_) => false,
        }
    }

    /// Where the result goes.
    pub fn result_to(&self) -> ResultTo {
        match &self.kind {
            Kind::Psi(k) => ResultTo::Participant(k.receiver),
            Kind::PsiSum(k) => ResultTo::Participant(k.p2),
            Kind::Lift(k) => ResultTo::Participant(k.p2),
            Kind::Overlap(k) => ResultTo::Participant(k.p2),
            Kind::DpStats(_) | Kind::Rfm(_) => ResultTo::Participant(0),
            Kind::SecureSum(k) => ResultTo::Coordinator {
                copy_to: k.result_to,
            },
        }
    }

    /// The participant that receives the result (computes it, or gets the coordinator's copy).
    pub fn result_node(&self) -> Option<&str> {
        let i = match self.result_to() {
            ResultTo::Participant(i) => Some(i),
            ResultTo::Coordinator { copy_to } => copy_to,
        }?;
        self.participants.get(i).map(|p| p.node.as_str())
    }

    /// What the coordinator does in this job.
    pub fn coordinator_part(&self) -> CoordinatorPart {
        match &self.kind {
            Kind::Psi(_) | Kind::PsiSum(_) | Kind::Lift(_) | Kind::Overlap(_) => {
                CoordinatorPart::Relay
            }
            Kind::DpStats(_) | Kind::Rfm(_) => CoordinatorPart::Local,
            Kind::SecureSum(_) => CoordinatorPart::SecAggServer,
        }
    }
}

impl Kind {
    /// See [`Job::kind_name`].
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Psi(k) => k.mode.name(),
            Kind::PsiSum(_) => "psi_sum",
            Kind::DpStats(_) => "dp_stats",
            Kind::SecureSum(_) => "secure_sum",
            Kind::Rfm(_) => "rfm",
            Kind::Lift(_) => "lift",
            Kind::Overlap(_) => "overlap",
        }
    }
}

impl TryFrom<&JobSpec> for Job {
    type Error = JobError;

    /// Checks `spec` completely and resolves its defaults. The error names the job-file field
    /// at fault and how to fix it.
    fn try_from(spec: &JobSpec) -> Result<Job, JobError> {
        parse(spec).map_err(|reason| JobError::InvalidSpec { reason })
    }
}

impl TryFrom<JobSpec> for Job {
    type Error = JobError;

    fn try_from(spec: JobSpec) -> Result<Job, JobError> {
        Job::try_from(&spec)
    }
}

fn parse(spec: &JobSpec) -> Result<Job, String> {
    if spec.label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "label: {} bytes is too long; keep it under {MAX_LABEL_BYTES}",
            spec.label.len()
        ));
    }
    if spec.label.chars().any(char::is_control) {
        return Err("label: contains control characters; use one line of plain text".into());
    }
    for (i, p) in spec.participants.iter().enumerate() {
        check_participant(i, p)?;
    }
    let kind = match JobKind::try_from(spec.kind) {
        Ok(JobKind::Psi) => match spec.psi().map(|p| p.mode()) {
            Some(PbPsiMode::Sum) => Kind::PsiSum(PsiSum::from_spec(spec)?),
            _ => Kind::Psi(Psi::from_spec(spec)?),
        },
        Ok(JobKind::DpStats) => Kind::DpStats(DpStats::from_spec(spec)?),
        Ok(JobKind::SecureSum) => Kind::SecureSum(SecureSum::from_spec(spec)?),
        Ok(JobKind::Rfm) => Kind::Rfm(Rfm::from_spec(spec)?),
        Ok(JobKind::Lift) => Kind::Lift(Lift::from_spec(spec)?),
        Ok(JobKind::Overlap) => Kind::Overlap(Overlap::from_spec(spec)?),
        Ok(JobKind::Unspecified) => {
            return Err(
                "kind: not set; set kind = \"psi\", \"dp_stats\", \"secure_sum\", \"rfm\", \"lift\" or \"overlap\"".into(),
            );
        }
        Err(_) => {
            return Err(format!(
                "kind: unknown kind number {}; this version of Parley ({}) runs kind = \"psi\", \
                 \"dp_stats\", \"secure_sum\", \"rfm\", \"lift\" or \"overlap\"; run the same Parley version on every node and \
                 the coordinator",
                spec.kind,
                env!("CARGO_PKG_VERSION")
            ));
        }
    };
    Ok(Job {
        label: spec.label.clone(),
        participants: spec
            .participants
            .iter()
            .map(|p| Participant {
                node: p.node.clone(),
                dataset: p.dataset.clone(),
                columns: p.columns.clone(),
            })
            .collect(),
        kind,
    })
}

impl From<&Job> for JobSpec {
    fn from(job: &Job) -> JobSpec {
        let mut spec = JobSpec {
            label: job.label.clone(),
            participants: job
                .participants
                .iter()
                .map(|p| PbParticipant {
                    node: p.node.clone(),
                    dataset: p.dataset.clone(),
                    columns: p.columns.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        match &job.kind {
            Kind::Psi(k) => k.write_spec(&mut spec),
            Kind::PsiSum(k) => k.write_spec(&mut spec),
            Kind::DpStats(k) => k.write_spec(&mut spec),
            Kind::SecureSum(k) => k.write_spec(&mut spec),
            Kind::Rfm(k) => k.write_spec(&mut spec),
            Kind::Lift(k) => k.write_spec(&mut spec),
            Kind::Overlap(k) => k.write_spec(&mut spec),
        }
        spec
    }
}

impl From<Job> for JobSpec {
    fn from(job: Job) -> JobSpec {
        JobSpec::from(&job)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jobfile::{parse_job, parse_job_toml};

    const EXAMPLES: [(&str, &str); 8] = [
        ("job-match.toml", include_str!("../examples/job-match.toml")),
        (
            "job-cardinality.toml",
            include_str!("../examples/job-cardinality.toml"),
        ),
        ("job-sum.toml", include_str!("../examples/job-sum.toml")),
        (
            "job-dp-stats.toml",
            include_str!("../examples/job-dp-stats.toml"),
        ),
        (
            "job-secure-sum.toml",
            include_str!("../examples/job-secure-sum.toml"),
        ),
        ("job-rfm.toml", include_str!("../examples/job-rfm.toml")),
        ("job-lift.toml", include_str!("../examples/job-lift.toml")),
        (
            "job-overlap.toml",
            include_str!("../examples/job-overlap.toml"),
        ),
    ];

    #[test]
    fn every_example_round_trips_through_the_wire_form() {
        let mut kinds = Vec::new();
        for (name, text) in EXAMPLES {
            let job = parse_job(text, name).unwrap();
            let spec = JobSpec::from(&job);
            let back = Job::try_from(&spec).unwrap();
            assert_eq!(back, job, "{name}");
            // The wire form of a job is canonical: converting again changes nothing.
            assert_eq!(JobSpec::from(&back), spec, "{name}");
            // The spec the job file gave and the canonical one describe the same job.
            let raw = parse_job_toml(text, name).unwrap();
            assert_eq!(Job::try_from(&raw).unwrap(), job, "{name}");
            kinds.push(job.kind_name());
        }
        assert_eq!(
            kinds,
            [
                "psi_match",
                "psi_cardinality",
                "psi_sum",
                "dp_stats",
                "secure_sum",
                "rfm",
                "lift",
                "overlap"
            ]
        );
    }

    fn job(name: &str) -> Job {
        let (_, text) = EXAMPLES.iter().find(|(n, _)| *n == name).unwrap();
        parse_job(text, name).unwrap()
    }

    fn reason(spec: &JobSpec) -> String {
        match Job::try_from(spec) {
            Err(JobError::InvalidSpec { reason }) => reason,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn tables_of_other_kinds_are_refused() {
        let ss = JobSpec::from(&job("job-secure-sum.toml")).params;
        for name in ["job-match.toml", "job-sum.toml"] {
            let mut spec = JobSpec::from(&job(name));
            spec.params = ss.clone();
            let r = reason(&spec);
            assert!(r.starts_with("secure_sum: a psi job takes no"), "{r}");
        }
        let mut spec = JobSpec::from(&job("job-dp-stats.toml"));
        spec.params = ss;
        let r = reason(&spec);
        assert!(r.starts_with("secure_sum: a dp_stats job takes no"), "{r}");
        let mut spec = JobSpec::from(&job("job-secure-sum.toml"));
        spec.params = JobSpec::from(&job("job-match.toml")).params;
        let r = reason(&spec);
        assert!(
            r.starts_with("psi: a secure_sum job takes no [psi] table"),
            "{r}"
        );
    }

    #[test]
    fn unknown_and_unset_kinds_are_refused_with_the_fix() {
        let mut spec = JobSpec::from(&job("job-match.toml"));
        spec.kind = 42;
        let r = reason(&spec);
        assert!(r.contains("unknown kind number 42"), "{r}");
        assert!(r.contains("same Parley version"), "{r}");
        spec.kind = 0;
        assert!(reason(&spec).starts_with("kind: not set"));
    }

    #[test]
    fn roles_results_and_coordinator_parts() {
        let m = job("job-match.toml");
        let receiver = m.participants[0].node.clone();
        assert_eq!(m.role_of(&receiver), Some((0, Role::PsiReceiver)));
        assert_eq!(m.role(1), Role::PsiSender);
        assert_eq!(m.result_to(), ResultTo::Participant(0));
        assert_eq!(m.coordinator_part(), CoordinatorPart::Relay);
        assert_eq!(m.role_of("nobody"), None);

        let s = job("job-sum.toml");
        assert_eq!(s.role(0), Role::SumP2);
        assert_eq!(s.role(0).policy_name(), "receiver");
        assert_eq!(s.role(1).policy_name(), "sender");
        assert_eq!(s.data_columns(0), ["amount"]);
        assert!(s.data_columns(1).is_empty());

        let d = job("job-dp-stats.toml");
        assert_eq!(d.role(0), Role::StatsOwner);
        assert_eq!(d.coordinator_part(), CoordinatorPart::Local);
        assert_eq!(d.data_columns(0), ["region", "amount"]);

        let ss = job("job-secure-sum.toml");
        assert_eq!(ss.role(3), Role::Contributor);
        assert_eq!(ss.coordinator_part(), CoordinatorPart::SecAggServer);
        assert_eq!(ss.result_to(), ResultTo::Coordinator { copy_to: Some(0) });
        assert_eq!(ss.result_node(), Some("retailer-1"));
        assert!(!ss.reads_identifiers());
    }

    #[test]
    fn release_costs_follow_the_parameters() {
        assert_eq!(job("job-match.toml").release_cost(), None);
        let sum = job("job-sum.toml").release_cost().unwrap();
        assert_eq!(
            (sum.epsilon, sum.delta, sum.mechanism.as_str()),
            (1.0, 0.0, "psi_sum/laplace")
        );
        let stats = job("job-dp-stats.toml");
        let Kind::DpStats(k) = &stats.kind else {
            panic!()
        };
        let total: f64 = k.measures.iter().map(|m| m.epsilon).sum();
        let cost = stats.release_cost().unwrap();
        assert_eq!(
            (cost.epsilon, cost.mechanism.as_str()),
            (total, "dp_stats/laplace")
        );
        let ss = job("job-secure-sum.toml").release_cost().unwrap();
        assert_eq!((ss.epsilon, ss.delta), (1.0, 1e-6));
        // Only an exact job (which node policies must allow) charges nothing.
        let mut spec = JobSpec::from(&job("job-secure-sum.toml"));
        let p = spec.secure_sum_mut().unwrap();
        p.dp = None;
        p.exact = true;
        assert_eq!(Job::try_from(&spec).unwrap().release_cost(), None);

        let mut spec = JobSpec::from(&job("job-cardinality.toml"));
        spec.psi_mut().unwrap().dp = Some(parley_proto::DpParams {
            epsilon: 0.25,
            mechanism: parley_proto::DpMechanism::Gaussian as i32,
            delta: 1e-6,
        });
        let cost = Job::try_from(&spec).unwrap().release_cost().unwrap();
        assert_eq!(
            (cost.epsilon, cost.delta, cost.mechanism.as_str()),
            (0.25, 1e-6, "psi_cardinality/gaussian")
        );
    }
}
