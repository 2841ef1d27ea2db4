//! The node's local policy (`policy.toml`): which jobs this node takes part in.
//!
//! Default deny: a job offer is accepted only if at least one `[[rule]]` allows all of it —
//! every partner, the job kind, the dataset, this node's role, every identifier column used,
//! the result threshold, and the submitting analyst. When no rule does, the refusal names
//! what the closest rule is missing; the coordinator shows that reason to the analyst, so it
//! names partners, datasets, columns and settings but never any data.
//!
//! See `node/examples/policy.toml` for a documented example.

use std::path::Path;

use parley_jobs::{Cost, Job, Kind};
use serde::Deserialize;

use crate::NodeError;

/// Matches any name in `partners`, `datasets`, `columns` and `analysts`.
pub const WILDCARD: &str = "*";

/// Job kinds a rule may name.
pub const KINDS: &[&str] = &[
    "psi_match",
    "psi_cardinality",
    "psi_sum",
    "dp_stats",
    "secure_sum",
    "rfm",
    "lift",
    "overlap",
];

/// Roles a rule may name. A `dp_stats` or `rfm` job gives its one node the role `receiver` (it
/// releases the result); a `secure_sum` job gives every participant the role `sender` (the
/// coordinator learns only the sum).
pub const ROLES: &[&str] = &["receiver", "sender"];

/// A loaded and checked local policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One `[[rule]]`: a set of jobs the node allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Node names of the other participants this rule allows (`"*"` = any). Every other
    /// participant of a job must be listed.
    pub partners: Vec<String>,
    /// Job kinds allowed: `psi_match`, `psi_cardinality`, `psi_sum`, `dp_stats`, `secure_sum`,
    /// `rfm`, `lift`, `overlap`.
    pub kinds: Vec<String>,
    /// This node's datasets the rule covers (`"*"` = any).
    pub datasets: Vec<String>,
    /// Roles this node may play: `receiver`, `sender`. Absent = both.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Identifier columns a job may use (`"*"` = any). Absent = any. A job that uses every
    /// identifier column (its column list is empty) needs all of them listed here.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Smallest `min_intersection` a job must set (for lift and overlap jobs: their
    /// `min_cell`, the threshold per cell). Absent = no requirement.
    #[serde(default)]
    pub min_intersection: Option<u64>,
    /// Analysts who may submit the job (`"*"` = any). Absent = any.
    #[serde(default)]
    pub analysts: Option<Vec<String>>,
    /// Largest epsilon one job may charge to the dataset. Absent = no per-job limit (the
    /// dataset's total budget still applies).
    #[serde(default)]
    pub max_epsilon: Option<f64>,
    /// When true, PSI match and cardinality jobs must release their count with DP
    /// (`[psi.dp]`); sum and dp_stats jobs always do. Absent = false.
    #[serde(default)]
    pub require_dp: Option<bool>,
    /// Smallest number of contributors a `secure_sum` job may release a sum of: the job's
    /// `min_contributors` (or, when 0, its Shamir threshold) must be at least this. Absent = no
    /// requirement. Other job kinds ignore it.
    #[serde(default)]
    pub min_contributors: Option<u32>,
    /// Floor on a DP job's contribution bound: the job's `max_records_per_identifier` (PSI)
    /// or `max_rows_per_person` (dp_stats, secure_sum) must be at least this, so that a dataset whose
    /// persons have several records is not cut down to one record each. The noise is always
    /// calibrated to the job's bound, whatever it is. Absent = no requirement.
    #[serde(default)]
    pub min_records_per_person: Option<u32>,
    /// When true, this node takes part in `secure_sum` jobs that release exact sums
    /// (`exact = true`). Absent = false: only distributed-DP sums, because an exact job
    /// {A,B,C,D} minus an exact job {A,B,C} reveals D's exact vector.
    #[serde(default)]
    pub allow_exact_sums: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// What this node is asked to do, derived from an offer.
struct Request<'a> {
    kind: &'static str,
    role: &'static str,
    partners: Vec<&'a str>,
    dataset: &'a str,
    columns: Vec<String>,
    min_intersection: u64,
    /// The fewest contributors the job releases a sum of (`secure_sum` jobs only).
    min_contributors: Option<u32>,
    /// The DP job's contribution bound (records per identifier or person), if it has one.
    contribution_bound: Option<u32>,
    /// A secure_sum job that releases exact sums.
    exact_sum: bool,
    analyst: &'a str,
    cost: Option<Cost>,
}

fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|x| x == WILDCARD || x == name)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Rule {
    /// What this rule does not allow of `req`; empty if it allows all of it.
    fn gaps(&self, req: &Request<'_>) -> Vec<String> {
        let mut gaps = Vec::new();
        let missing: Vec<&str> = req
            .partners
            .iter()
            .copied()
            .filter(|p| !allows(&self.partners, p))
            .collect();
        if !missing.is_empty() {
            gaps.push(format!("does not list partner {}", quoted(&missing)));
        }
        if !self.kinds.iter().any(|k| k == req.kind) {
            gaps.push(format!(
                "allows kinds {} only, job is {}",
                self.kinds.join(", "),
                req.kind
            ));
        }
        if !allows(&self.datasets, req.dataset) {
            gaps.push(format!("does not cover dataset '{}'", req.dataset));
        }
        if let Some(roles) = &self.roles
            && !roles.iter().any(|r| r == req.role)
        {
            gaps.push(format!(
                "allows role {} only, this node would be {}",
                roles.join(", "),
                req.role
            ));
        }
        if let Some(columns) = &self.columns {
            let missing: Vec<&str> = req
                .columns
                .iter()
                .map(String::as_str)
                .filter(|c| !allows(columns, c))
                .collect();
            if !missing.is_empty() {
                gaps.push(format!("does not allow column {}", quoted(&missing)));
            }
        }
        if let Some(min) = self.min_intersection
            && req.min_intersection < min
        {
            gaps.push(format!(
                "requires min_intersection ≥ {min}, job has {}",
                req.min_intersection
            ));
        }
        if let (Some(min), Some(job)) = (self.min_contributors, req.min_contributors)
            && job < min
        {
            gaps.push(format!(
                "requires min_contributors ≥ {min}, job releases sums of {job} contributors or more"
            ));
        }
        if let (Some(min), Some(job)) = (self.min_records_per_person, req.contribution_bound)
            && job < min
        {
            gaps.push(format!(
                "requires a contribution bound of at least {min} records per person, job uses \
                 {job} (raise max_records_per_identifier or max_rows_per_person)"
            ));
        }
        if req.exact_sum && self.allow_exact_sums != Some(true) {
            gaps.push(
                "does not allow exact sums (a second job without this node would reveal its \
                 exact values); use distributed DP ([secure_sum.dp]) or set \
                 allow_exact_sums = true in the rule"
                    .to_owned(),
            );
        }
        if let Some(analysts) = &self.analysts
            && !allows(analysts, req.analyst)
        {
            gaps.push(format!("does not allow analyst '{}'", req.analyst));
        }
        if self.require_dp == Some(true) && req.cost.is_none() {
            gaps.push(
                "requires a differentially private release (add [psi.dp] with an epsilon)"
                    .to_owned(),
            );
        }
        if let (Some(max), Some(cost)) = (self.max_epsilon, &req.cost)
            && cost.epsilon > max + 1e-12
        {
            gaps.push(format!(
                "allows epsilon ≤ {max} per job, job charges {}",
                cost.epsilon
            ));
        }
        gaps
    }

    fn validate(&self) -> Result<(), String> {
        let nonempty = |field: &str, list: &[String], hint: &str| {
            if list.is_empty() {
                Err(format!(
                    "{field} is empty, so the rule allows nothing; {hint}"
                ))
            } else if list.iter().any(String::is_empty) {
                Err(format!("{field} contains an empty name"))
            } else {
                Ok(())
            }
        };
        nonempty("partners", &self.partners, "list node names or \"*\"")?;
        nonempty(
            "kinds",
            &self.kinds,
            "list psi_match, psi_cardinality, psi_sum, dp_stats, secure_sum, rfm, lift and/or overlap",
        )?;
        nonempty("datasets", &self.datasets, "list dataset names or \"*\"")?;
        for k in &self.kinds {
            if !KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "unknown kind '{}'; use {}",
                    k.escape_debug(),
                    KINDS.join(" or ")
                ));
            }
        }
        if let Some(roles) = &self.roles {
            nonempty(
                "roles",
                roles,
                "list receiver and/or sender, or remove the field",
            )?;
            for r in roles {
                if !ROLES.contains(&r.as_str()) {
                    return Err(format!(
                        "unknown role '{}'; use {}",
                        r.escape_debug(),
                        ROLES.join(" or ")
                    ));
                }
            }
        }
        if let Some(columns) = &self.columns {
            nonempty("columns", columns, "list column names, or remove the field")?;
        }
        if let Some(analysts) = &self.analysts {
            nonempty(
                "analysts",
                analysts,
                "list analyst names, or remove the field",
            )?;
        }
        if let Some(max) = self.max_epsilon
            && !(max.is_finite() && max > 0.0)
        {
            return Err(format!("max_epsilon must be a positive number, got {max}"));
        }
        if self.min_records_per_person == Some(0) {
            return Err(
                "min_records_per_person = 0 requires nothing; use at least 1, or remove the field"
                    .to_owned(),
            );
        }
        if self.min_contributors == Some(0) {
            return Err(
                "min_contributors = 0 requires nothing; use at least 2, or remove the field"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

impl Policy {
    /// Reads, parses and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::PolicyRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a policy from a string (errors name it `(inline policy)`).
    pub fn from_toml_str(s: &str) -> Result<Policy, NodeError> {
        Self::parse(s, Path::new("(inline policy)"))
    }

    fn parse(s: &str, origin: &Path) -> Result<Policy, NodeError> {
        let file: PolicyFile = toml::from_str(s).map_err(|e| NodeError::PolicyParse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (i, rule) in file.rule.iter().enumerate() {
            rule.validate()
                .map_err(|problem| NodeError::PolicyInvalid {
                    path: origin.to_owned(),
                    rule: i + 1,
                    problem,
                })?;
        }
        Ok(Policy { rules: file.rule })
    }

    /// The rules, in file order (rule #1 first).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides whether node `me` takes part in `job`, submitted by `analyst`.
    ///
    /// `dataset_identifier_columns(name)` returns the identifier columns of this node's
    /// dataset `name`, or `None` if there is no such dataset.
    ///
    /// Returns `Err(reason)` with a refusal reason for the analyst, naming what is missing.
    pub fn check(
        &self,
        me: &str,
        job: &Job,
        analyst: &str,
        dataset_identifier_columns: &dyn Fn(&str) -> Option<Vec<String>>,
    ) -> Result<(), String> {
        let refuse = |why: String| Err(format!("node '{me}' refuses the job: {why}"));
        let Some((index, role)) = job.role_of(me) else {
            return refuse("it is not a participant of this job".to_owned());
        };
        let p = &job.participants[index];
        let kind = job.kind_name();
        let Some(identifier_columns) = dataset_identifier_columns(&p.dataset) else {
            return Err(format!("node '{me}' has no dataset '{}'", p.dataset));
        };
        let mut columns = if !job.reads_identifiers() {
            Vec::new()
        } else if p.columns.is_empty() {
            identifier_columns
        } else {
            if let Some(c) = p.columns.iter().find(|c| !identifier_columns.contains(c)) {
                return refuse(format!(
                    "dataset '{}' has no identifier column '{c}' (identifier columns: {})",
                    p.dataset,
                    identifier_columns.join(", ")
                ));
            }
            p.columns.clone()
        };
        for c in job.data_columns(index) {
            if !columns.iter().any(|have| have == c) {
                columns.push(c.to_owned());
            }
        }
        let (min_intersection, min_contributors, contribution_bound) = match &job.kind {
            Kind::Psi(k) => (
                k.min_intersection,
                None,
                k.dp.is_some().then_some(k.bound.max_records_per_identifier),
            ),
            Kind::PsiSum(k) => (
                k.min_intersection,
                None,
                Some(k.bound.max_records_per_identifier),
            ),
            // A policy's min_intersection is the floor of the job's per-cell threshold.
            Kind::Lift(k) => (k.min_cell, None, Some(k.bound.max_records_per_identifier)),
            Kind::Overlap(k) => (k.min_cell, None, Some(k.max_records_per_identifier)),
            Kind::DpStats(k) => (0, None, Some(k.max_rows_per_person)),
            // Each person counts once, whatever their rows: no bound to check.
            Kind::Rfm(_) => (0, None, None),
            Kind::SecureSum(k) => (
                0,
                Some(k.min_contributors),
                k.dp.is_some().then_some(k.max_rows_per_person),
            ),
        };
        let req = Request {
            kind,
            role: role.policy_name(),
            partners: job
                .participants
                .iter()
                .filter(|q| q.node != me)
                .map(|q| q.node.as_str())
                .collect(),
            dataset: &p.dataset,
            columns,
            min_intersection,
            min_contributors,
            contribution_bound,
            exact_sum: matches!(&job.kind, Kind::SecureSum(k) if k.dp.is_none()),
            analyst,
            cost: job.release_cost(),
        };

        let mut closest: Option<(usize, Vec<String>)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let gaps = rule.gaps(&req);
            if gaps.is_empty() {
                return Ok(());
            }
            if closest
                .as_ref()
                .is_none_or(|(_, best)| gaps.len() < best.len())
            {
                closest = Some((i, gaps));
            }
        }
        let partners = if req.partners.is_empty() {
            "no partner".to_owned()
        } else {
            format!("partner {}", quoted(&req.partners))
        };
        let detail = match closest {
            Some((i, gaps)) => format!("closest rule #{} {}", i + 1, gaps.join("; ")),
            None => "the policy has no rules; everything is denied by default".to_owned(),
        };
        Err(format!(
            "node '{me}' policy refuses: no rule lets {partners} run {kind} on dataset '{}' ({detail})",
            req.dataset
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::{JobKind, JobOffer, JobSpec, Participant, PsiMode, PsiParams, PsiRole};

    const EXAMPLE: &str = include_str!("../examples/policy.toml");

    const POLICY: &str = r#"
[[rule]]
partners = ["brand"]
kinds = ["psi_match", "psi_cardinality"]
datasets = ["subscribers"]
roles = ["sender"]
columns = ["email", "phone"]
min_intersection = 100
analysts = ["alice"]
"#;

    fn datasets(name: &str) -> Option<Vec<String>> {
        match name {
            "subscribers" => Some(vec!["email".to_owned(), "phone".to_owned()]),
            "crm" => Some(vec![
                "email".to_owned(),
                "phone".to_owned(),
                "maid".to_owned(),
            ]),
            _ => None,
        }
    }

    /// brand (receiver, crm) × publisher (sender, subscribers), match mode.
    fn offer(min_intersection: u64) -> JobOffer {
        let participant = |node: &str, dataset: &str, role: PsiRole| {
            let mut p = Participant {
                node: node.to_owned(),
                dataset: dataset.to_owned(),
                columns: vec!["email".to_owned()],
                ..Default::default()
            };
            p.set_psi_role(role);
            p
        };
        let mut psi = PsiParams {
            min_intersection,
            ..Default::default()
        };
        psi.set_mode(PsiMode::Match);
        let mut spec = JobSpec {
            label: "reach".to_owned(),
            participants: vec![
                participant("brand", "crm", PsiRole::Receiver),
                participant("publisher", "subscribers", PsiRole::Sender),
            ],
            params: Some(psi.into()),
            ..Default::default()
        };
        spec.set_kind(JobKind::Psi);
        JobOffer {
            job_id: "j1".to_owned(),
            spec: Some(spec),
            submitted_by: "alice".to_owned(),
            participants: vec![],
        }
    }

    /// What the node does with an offer: the spec must be a job this version knows
    /// (`Job::try_from`, refused otherwise), then the policy decides.
    fn check(policy: &str, me: &str, offer: &JobOffer) -> Result<(), String> {
        let refuse = |why: String| format!("node '{me}' refuses the job: {why}");
        let spec = offer
            .spec
            .as_ref()
            .ok_or_else(|| refuse("the offer has no job spec".into()))?;
        let job = Job::try_from(spec).map_err(|e| refuse(e.to_string()))?;
        Policy::from_toml_str(policy).expect("policy parses").check(
            me,
            &job,
            &offer.submitted_by,
            &datasets,
        )
    }

    fn release_cost(spec: &JobSpec) -> Option<Cost> {
        Job::try_from(spec).expect("a valid job").release_cost()
    }

    fn with_spec(mut offer: JobOffer, f: impl FnOnce(&mut JobSpec)) -> JobOffer {
        if let Some(spec) = offer.spec.as_mut() {
            f(spec);
        }
        offer
    }

    #[test]
    fn dp_requirements_and_epsilon_caps() {
        let policy = "[[rule]]\npartners = [\"*\"]\nkinds = [\"psi_match\", \"dp_stats\"]\ndatasets = [\"*\"]\nrequire_dp = true\nmax_epsilon = 1.0\n";
        let exact = offer(0);
        let e = check(policy, "publisher", &exact).unwrap_err();
        assert!(
            e.contains("requires a differentially private release"),
            "{e}"
        );
        let dp = |epsilon: f64| {
            with_spec(offer(0), |s| {
                s.psi_mut().unwrap().dp = Some(parley_proto::DpParams {
                    epsilon,
                    ..Default::default()
                });
            })
        };
        assert_eq!(check(policy, "publisher", &dp(0.5)), Ok(()));
        let e = check(policy, "publisher", &dp(1.5)).unwrap_err();
        assert!(e.contains("epsilon ≤ 1 per job, job charges 1.5"), "{e}");
        assert_eq!(
            release_cost(dp(0.5).spec.as_ref().unwrap())
                .unwrap()
                .epsilon,
            0.5
        );
        assert_eq!(release_cost(exact.spec.as_ref().unwrap()), None);

        // A dp_stats job: one participant, no partners, role receiver; its cost is the sum
        // of its measures.
        let mut spec = JobSpec {
            participants: vec![Participant {
                node: "publisher".into(),
                dataset: "subscribers".into(),
                ..Default::default()
            }],
            params: Some(parley_proto::job_spec::Params::DpStats(
                parley_proto::DpStatsParams {
                    segment_column: "region".into(),
                    categories: vec!["north".into()],
                    measures: vec![
                        parley_proto::Measure {
                            kind: parley_proto::MeasureKind::Count as i32,
                            epsilon: 0.25,
                            ..Default::default()
                        },
                        parley_proto::Measure {
                            kind: parley_proto::MeasureKind::Sum as i32,
                            column: "amount".into(),
                            upper: 10.0,
                            epsilon: 0.5,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        spec.set_kind(JobKind::DpStats);
        let o = JobOffer {
            job_id: "j2".into(),
            spec: Some(spec.clone()),
            submitted_by: "alice".into(),
            participants: vec![],
        };
        assert_eq!(check(policy, "publisher", &o), Ok(()));
        assert_eq!(release_cost(&spec).unwrap().epsilon, 0.75);
        let narrow = "[[rule]]\npartners = [\"*\"]\nkinds = [\"dp_stats\"]\ndatasets = [\"*\"]\ncolumns = [\"region\"]\n";
        let e = check(narrow, "publisher", &o).unwrap_err();
        assert!(e.contains("'amount'"), "{e}");
        let e = Policy::from_toml_str("[[rule]]\npartners = [\"*\"]\nkinds = [\"dp_stats\"]\ndatasets = [\"*\"]\nmax_epsilon = -1.0\n").unwrap_err();
        assert!(e.to_string().contains("max_epsilon"), "{e}");
    }

    /// brand, publisher (me, subscribers) and retailer pool per-region counts and sums.
    fn secure_sum_offer(threshold: u32, min_contributors: u32) -> JobOffer {
        let participant = |node: &str, dataset: &str| Participant {
            node: node.to_owned(),
            dataset: dataset.to_owned(),
            ..Default::default()
        };
        let mut spec = JobSpec {
            participants: vec![
                participant("brand", "crm"),
                participant("publisher", "subscribers"),
                participant("retailer", "sales"),
            ],
            params: Some(parley_proto::job_spec::Params::SecureSum(
                parley_proto::SecureSumParams {
                    segment_column: "region".into(),
                    categories: vec!["north".into(), "south".into()],
                    count: true,
                    value_column: "amount".into(),
                    upper: 100.0,
                    threshold,
                    min_contributors,
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        spec.set_kind(JobKind::SecureSum);
        JobOffer {
            job_id: "j3".into(),
            spec: Some(spec),
            submitted_by: "alice".into(),
            participants: vec![],
        }
    }

    #[test]
    fn secure_sum_rules() {
        let policy = "[[rule]]\npartners = [\"brand\", \"retailer\"]\nkinds = [\"secure_sum\"]\ndatasets = [\"subscribers\"]\nroles = [\"sender\"]\ncolumns = [\"region\", \"amount\"]\nmin_contributors = 3\n";
        // Default threshold for 3 participants: 2*3/3 + 1 = 3.
        assert_eq!(check(policy, "publisher", &secure_sum_offer(0, 0)), Ok(()));
        assert_eq!(check(policy, "publisher", &secure_sum_offer(2, 3)), Ok(()));
        let e = check(policy, "publisher", &secure_sum_offer(2, 0)).unwrap_err();
        assert!(
            e.contains(
                "run secure_sum on dataset 'subscribers' (closest rule #1 requires min_contributors ≥ 3, job releases sums of 2 contributors or more)"
            ),
            "{e}"
        );
        // Every participant is a sender; the columns read are the segment and value columns.
        let receivers = policy.replace("\"sender\"", "\"receiver\"");
        let e = check(&receivers, "publisher", &secure_sum_offer(0, 0)).unwrap_err();
        assert!(
            e.contains("allows role receiver only, this node would be sender"),
            "{e}"
        );
        let narrow = policy.replace(", \"amount\"", "");
        let e = check(&narrow, "publisher", &secure_sum_offer(0, 0)).unwrap_err();
        assert!(e.contains("does not allow column 'amount'"), "{e}");
        // Other kinds ignore min_contributors.
        let psi = "[[rule]]\npartners = [\"*\"]\nkinds = [\"psi_match\"]\ndatasets = [\"*\"]\nmin_contributors = 5\n";
        assert_eq!(check(psi, "publisher", &offer(0)), Ok(()));
        // Without [secure_sum.dp] the job gets the default distributed DP.
        let cost = release_cost(secure_sum_offer(0, 0).spec.as_ref().unwrap()).unwrap();
        assert_eq!((cost.epsilon, cost.delta), (1.0, 1e-6));
        let e = Policy::from_toml_str(&policy.replace("= 3", "= 0")).unwrap_err();
        assert!(
            e.to_string().contains("rule #1: min_contributors = 0"),
            "{e}"
        );
    }

    #[test]
    fn exact_sums_need_an_explicit_opt_in() {
        let policy = "[[rule]]\npartners = [\"*\"]\nkinds = [\"secure_sum\"]\ndatasets = [\"*\"]\n";
        let mut exact = secure_sum_offer(0, 0);
        if let Some(parley_proto::job_spec::Params::SecureSum(p)) =
            exact.spec.as_mut().and_then(|s| s.params.as_mut())
        {
            p.exact = true;
        }
        // The default (distributed DP) job is allowed, the exact one is not.
        assert_eq!(check(policy, "publisher", &secure_sum_offer(0, 0)), Ok(()));
        let e = check(policy, "publisher", &exact).unwrap_err();
        assert!(e.contains("does not allow exact sums"), "{e}");
        let opted_in = format!("{policy}allow_exact_sums = true\n");
        assert_eq!(check(&opted_in, "publisher", &exact), Ok(()));
    }

    #[test]
    fn contribution_bound_floors_are_enforced() {
        let policy = "[[rule]]\npartners = [\"*\"]\nkinds = [\"secure_sum\", \"psi_match\"]\ndatasets = [\"*\"]\nmin_records_per_person = 3\n";
        // An exact match job has no contribution bound to check.
        assert_eq!(check(policy, "publisher", &offer(0)), Ok(()));
        let mut dp = offer(0);
        if let Some(psi) = dp.spec.as_mut().and_then(|s| s.psi_mut()) {
            psi.dp = Some(parley_proto::DpParams {
                epsilon: 1.0,
                mechanism: parley_proto::DpMechanism::Laplace as i32,
                delta: 0.0,
            });
            psi.max_records_per_identifier = 2;
        }
        let e = check(policy, "publisher", &dp).unwrap_err();
        assert!(e.contains("contribution bound of at least 3"), "{e}");
        if let Some(psi) = dp.spec.as_mut().and_then(|s| s.psi_mut()) {
            psi.max_records_per_identifier = 3;
        }
        assert_eq!(check(policy, "publisher", &dp), Ok(()));
        let e = check(policy, "publisher", &secure_sum_offer(0, 0)).unwrap_err();
        assert!(e.contains("contribution bound of at least 3"), "{e}");
        assert!(Policy::from_toml_str(&policy.replace("= 3", "= 0")).is_err());
    }

    #[test]
    fn example_parses() {
        let policy = Policy::from_toml_str(EXAMPLE).expect("example policy parses");
        assert!(!policy.rules().is_empty());
    }

    #[test]
    fn allowed() {
        assert_eq!(check(POLICY, "publisher", &offer(100)), Ok(()));
        assert_eq!(check(POLICY, "publisher", &offer(5000)), Ok(()));
    }

    #[test]
    fn default_deny() {
        let err = check("", "publisher", &offer(100)).expect_err("must fail");
        assert_eq!(
            err,
            "node 'publisher' policy refuses: no rule lets partner 'brand' run psi_match on dataset 'subscribers' (the policy has no rules; everything is denied by default)"
        );
    }

    #[test]
    fn refuses_low_threshold() {
        let err = check(POLICY, "publisher", &offer(0)).expect_err("must fail");
        assert_eq!(
            err,
            "node 'publisher' policy refuses: no rule lets partner 'brand' run psi_match on dataset 'subscribers' (closest rule #1 requires min_intersection ≥ 100, job has 0)"
        );
    }

    #[test]
    fn refuses_unknown_partner() {
        let o = with_spec(offer(100), |s| s.participants[0].node = "rival".to_owned());
        let err = check(POLICY, "publisher", &o).expect_err("must fail");
        assert!(
            err.contains("partner 'rival'") && err.contains("does not list partner 'rival'"),
            "{err}"
        );
    }

    #[test]
    fn refuses_kind() {
        let policy = POLICY.replace("\"psi_match\", ", "");
        let err = check(&policy, "publisher", &offer(100)).expect_err("must fail");
        assert!(
            err.contains("allows kinds psi_cardinality only, job is psi_match"),
            "{err}"
        );
        let o = with_spec(offer(100), |s| {
            if let Some(psi) = s.psi_mut() {
                psi.set_mode(PsiMode::Cardinality);
            }
        });
        assert_eq!(check(&policy, "publisher", &o), Ok(()));
    }

    #[test]
    fn refuses_dataset() {
        let policy = POLICY.replace("[\"subscribers\"]", "[\"other\"]");
        let err = check(&policy, "publisher", &offer(100)).expect_err("must fail");
        assert!(
            err.contains("does not cover dataset 'subscribers'"),
            "{err}"
        );
        let o = with_spec(offer(100), |s| {
            s.participants[1].dataset = "nope".to_owned()
        });
        assert_eq!(
            check(POLICY, "publisher", &o).expect_err("must fail"),
            "node 'publisher' has no dataset 'nope'"
        );
    }

    #[test]
    fn refuses_role() {
        let err = check(
            POLICY.replace("\"brand\"", "\"publisher\"").as_str(),
            "brand",
            &offer(100),
        )
        .expect_err("must fail");
        assert!(
            err.contains("allows role sender only, this node would be receiver"),
            "{err}"
        );
    }

    #[test]
    fn refuses_columns() {
        let o = with_spec(offer(100), |s| {
            s.participants[1].columns = vec!["phone".to_owned()]
        });
        let policy = POLICY.replace("columns = [\"email\", \"phone\"]", "columns = [\"email\"]");
        let err = check(&policy, "publisher", &o).expect_err("must fail");
        assert!(err.contains("does not allow column 'phone'"), "{err}");
        // Empty column list = every identifier column; all must be allowed.
        let o = with_spec(offer(100), |s| s.participants[1].columns.clear());
        let err = check(&policy, "publisher", &o).expect_err("must fail");
        assert!(err.contains("does not allow column 'phone'"), "{err}");
        assert_eq!(check(POLICY, "publisher", &o), Ok(()));
        // A column the dataset does not have.
        let o = with_spec(offer(100), |s| {
            s.participants[1].columns = vec!["maid".to_owned()]
        });
        let err = check(POLICY, "publisher", &o).expect_err("must fail");
        assert!(
            err.contains("dataset 'subscribers' has no identifier column 'maid'"),
            "{err}"
        );
    }

    #[test]
    fn refuses_analyst() {
        let mut o = offer(100);
        o.submitted_by = "mallory".to_owned();
        let err = check(POLICY, "publisher", &o).expect_err("must fail");
        assert!(err.contains("does not allow analyst 'mallory'"), "{err}");
    }

    #[test]
    fn refuses_when_not_participant_or_malformed() {
        let err = check(POLICY, "retailer", &offer(100)).expect_err("must fail");
        assert!(err.contains("not a participant"), "{err}");
        let mut o = offer(100);
        o.spec = None;
        assert!(
            check(POLICY, "publisher", &o)
                .expect_err("must fail")
                .contains("no job spec")
        );
        let o = with_spec(offer(100), |s| s.set_kind(JobKind::Unspecified));
        assert!(
            check(POLICY, "publisher", &o)
                .expect_err("must fail")
                .contains("kind: not set")
        );
        let o = with_spec(offer(100), |s| {
            s.participants[1].set_psi_role(PsiRole::Unspecified)
        });
        assert!(
            check(POLICY, "publisher", &o)
                .expect_err("must fail")
                .contains("role is not set")
        );
        let o = with_spec(offer(100), |s| s.params = None);
        assert!(
            check(POLICY, "publisher", &o)
                .expect_err("must fail")
                .contains("needs a [psi] table with mode")
        );
    }

    #[test]
    fn wildcards_and_optional_fields() {
        let policy = r#"
[[rule]]
partners = ["*"]
kinds = ["psi_match"]
datasets = ["*"]
"#;
        assert_eq!(check(policy, "publisher", &offer(0)), Ok(()));
        assert_eq!(check(policy, "brand", &offer(0)), Ok(()));
        let mut o = offer(0);
        o.submitted_by = "anyone".to_owned();
        assert_eq!(check(policy, "publisher", &o), Ok(()));
    }

    #[test]
    fn any_rule_suffices_and_closest_is_reported() {
        let policy = r#"
[[rule]]
partners = ["retailer"]
kinds = ["psi_cardinality"]
datasets = ["crm"]

[[rule]]
partners = ["brand"]
kinds = ["psi_match"]
datasets = ["subscribers"]
min_intersection = 50
"#;
        assert_eq!(check(policy, "publisher", &offer(50)), Ok(()));
        let err = check(policy, "publisher", &offer(10)).expect_err("must fail");
        assert!(
            err.contains("closest rule #2 requires min_intersection ≥ 50, job has 10"),
            "{err}"
        );
    }

    #[test]
    fn invalid_rules_name_their_index() {
        let bad_kind = format!(
            "{POLICY}\n[[rule]]\npartners = [\"*\"]\nkinds = [\"psi_summ\"]\ndatasets = [\"*\"]\n"
        );
        let err = Policy::from_toml_str(&bad_kind).expect_err("must fail");
        assert!(
            matches!(err, NodeError::PolicyInvalid { rule: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("rule #2: unknown kind 'psi_summ'"),
            "{err}"
        );

        let bad_role = POLICY.replace("[\"sender\"]", "[\"sendr\"]");
        let err = Policy::from_toml_str(&bad_role).expect_err("must fail");
        assert!(
            err.to_string().contains("rule #1: unknown role 'sendr'"),
            "{err}"
        );

        let empty = POLICY.replace("partners = [\"brand\"]", "partners = []");
        let err = Policy::from_toml_str(&empty).expect_err("must fail");
        assert!(
            err.to_string().contains("rule #1: partners is empty"),
            "{err}"
        );

        let unknown_field = POLICY.replace("min_intersection", "min_intersect");
        assert!(matches!(
            Policy::from_toml_str(&unknown_field),
            Err(NodeError::PolicyParse { .. })
        ));
        let missing = POLICY.replace("kinds = [\"psi_match\", \"psi_cardinality\"]\n", "");
        assert!(matches!(
            Policy::from_toml_str(&missing),
            Err(NodeError::PolicyParse { .. })
        ));
    }

    #[test]
    fn load_reads_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, POLICY).expect("write");
        assert_eq!(Policy::load(&path).expect("loads").rules().len(), 1);
        let err = Policy::load(&dir.path().join("missing.toml")).expect_err("must fail");
        assert!(err.to_string().starts_with("cannot read policy '"), "{err}");
    }
}
