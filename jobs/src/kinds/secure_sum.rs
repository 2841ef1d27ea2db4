//! Secure aggregation (`parley_crypto::secagg`, Bonawitz et al.) of per-category vectors
//! across many nodes, with the coordinator as the server.
//!
//! # The vector layout (the one copy node and coordinator share)
//! Each participant turns its dataset into one vector of u64 words: for each output category
//! (the declared ones in order, then `other` when bucketed) the row count (if `count`), then
//! the sum of the value column clamped to the bounds in integer units of 10^-decimals (if a
//! value column is set; an i64 stored as u64, two's complement). See [`SecureSum::vector_len`]
//! and [`SecureSum::result`], which decodes the summed vector.
//!
//! # Who learns what
//! The coordinator learns only the sum (mod 2^64) of the vectors of the nodes whose masked
//! inputs arrived, and who took part in each round; no node learns anything about another
//! node's vector. Every node adds its share of a distributed discrete Gaussian
//! ([`SecureSum::dp_plan`]) before masking and charges its ledger, so nobody sees an
//! un-noised total: at the job's `[secure_sum.dp]`, or by default at
//! [`DEFAULT_SECURE_SUM_EPSILON`] and [`DEFAULT_SECURE_SUM_DELTA`]. Only a job that says
//! `exact = true` releases exact sums, and every node's policy must allow that
//! (`allow_exact_sums`): an exact job {A,B,C,D} minus an exact job {A,B,C} reveals D's exact
//! vector, and D's `min_contributors` cannot stop it because D is not in the second job. At
//! most `max_rows_per_person` rows of each person count at each node. The result goes to the
//! analysts through the coordinator, and to `result_to` (job-file field `result_to`, formerly
//! `receiver`) if set.

use parley_crypto::dp::DistributedGaussian;
use parley_crypto::secagg::{MAX_JOB_ID_LEN, Params, SEALED_SHARE_LEN, SIGNATURE_LEN};
use parley_proto::job_spec::Params as SpecParams;
use parley_proto::{
    CategoryStats, DpMechanism, JobKind, JobSpec, NoiseInfo, PsiRole, SecureSumParams,
    SecureSumResult,
};
use serde::{Deserialize, Serialize};

use crate::job::Cost;
use crate::limits::{
    DEFAULT_ROUND_TIMEOUT_SECS, DEFAULT_SECURE_SUM_DELTA, DEFAULT_SECURE_SUM_EPSILON,
    MAX_COLUMN_BYTES, MAX_ROUND_TIMEOUT_SECS, MAX_ROWS_PER_PERSON, MAX_SECURE_SUM_NODES,
    MAX_SECURE_SUM_VECTOR,
};
use crate::params::{Bounds, Categories, Dp, Mechanism, check_column, wrong_params};

/// A secure-aggregation job, with its defaults resolved for its number of participants.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureSum {
    /// Segment column the rows are grouped by (the same name at every node).
    pub segment_column: String,
    /// The declared categories.
    pub categories: Categories,
    /// Include the row count per category.
    pub count: bool,
    /// Include the clamped sum of this value column per category.
    pub value: Option<ValueColumn>,
    /// Shamir threshold t (n/2 < t <= n; default ⌊2n/3⌋ + 1).
    pub threshold: u32,
    /// Fewest contributors a released sum may cover (t <= m <= n; default t).
    pub min_contributors: u32,
    /// Deadline of each round, seconds (default [`DEFAULT_ROUND_TIMEOUT_SECS`]).
    pub round_timeout_secs: u32,
    /// Distributed DP (mechanism Gaussian); `None` only for a job that asked for exact sums
    /// (`exact = true`), which every node's policy must allow.
    pub dp: Option<Dp>,
    /// At most this many rows of each person are used at every node (>= 1).
    pub max_rows_per_person: u32,
    /// Index of a participant that receives a copy of the result.
    pub result_to: Option<usize>,
    /// Number of participants.
    pub n: u32,
}

/// A summed value column.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueColumn {
    /// Column name.
    pub column: String,
    /// Clamping bounds and decimals.
    pub bounds: Bounds,
}

impl SecureSum {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<SecureSum, String> {
        let p = match &spec.params {
            Some(SpecParams::SecureSum(p)) => p,
            other => {
                return Err(wrong_params(
                    "secure_sum",
                    other.as_ref(),
                    "secure_sum: a secure_sum job needs a [secure_sum] table with \
                     segment_column, categories and count and/or value_column",
                ));
            }
        };
        let n = spec.participants.len();
        if !(3..=MAX_SECURE_SUM_NODES).contains(&n) {
            return Err(format!(
                "participants: a secure_sum job needs between 3 and {MAX_SECURE_SUM_NODES} \
                 participants, found {n}"
            ));
        }
        let mut nodes = std::collections::HashSet::new();
        for (i, q) in spec.participants.iter().enumerate() {
            if !nodes.insert(q.node.as_str()) {
                return Err(format!(
                    "participants: node '{}' is listed twice; each node contributes once",
                    q.node
                ));
            }
            if q.psi_role() != PsiRole::Unspecified
                || !q.value_column.is_empty()
                || !q.columns.is_empty()
            {
                return Err(format!(
                    "participant {} (node '{}'): a secure_sum participant takes only node and \
                     dataset; name columns in [secure_sum]",
                    i + 1,
                    q.node
                ));
            }
        }
        check_column(&p.segment_column, "secure_sum.segment_column")?;
        // Secure sums are bounded by the vector length (checked below), not by the DP table
        // size.
        let categories =
            Categories::check(&p.categories, p.other, "secure_sum", MAX_SECURE_SUM_VECTOR)?;
        if !p.count && p.value_column.is_empty() {
            return Err(
                "secure_sum: set count = true and/or value_column; otherwise there is \
                 nothing to add up"
                    .into(),
            );
        }
        let value = if !p.value_column.is_empty() {
            if p.value_column.len() > MAX_COLUMN_BYTES {
                return Err("secure_sum.value_column: name too long".into());
            }
            Some(ValueColumn {
                column: p.value_column.clone(),
                bounds: Bounds::check(p.lower, p.upper, p.decimals, "secure_sum")?,
            })
        } else if p.lower != 0.0 || p.upper != 0.0 {
            return Err("secure_sum.lower/upper: clamping bounds need a value_column".into());
        } else {
            None
        };
        let len = categories.output_len() * (usize::from(p.count) + usize::from(value.is_some()));
        if len > MAX_SECURE_SUM_VECTOR {
            return Err(format!(
                "secure_sum: {len} values per node is more than {MAX_SECURE_SUM_VECTOR}; \
                 declare fewer categories"
            ));
        }
        let t = if p.threshold > 0 {
            p.threshold
        } else {
            Params::default_threshold(n as u32)
        };
        if !(t as usize * 2 > n && t as usize <= n && t >= 2) {
            return Err(format!(
                "secure_sum.threshold: with {n} participants the threshold must be more than \
                 half of them and at most all of them ({}..={n}), got {t}",
                n / 2 + 1
            ));
        }
        if p.min_contributors != 0 && !(p.min_contributors >= t && p.min_contributors as usize <= n)
        {
            return Err(format!(
                "secure_sum.min_contributors: must be between the threshold {t} and the number \
                 of participants {n}, got {}",
                p.min_contributors
            ));
        }
        if p.round_timeout_secs > MAX_ROUND_TIMEOUT_SECS {
            return Err(format!(
                "secure_sum.round_timeout_secs: at most {MAX_ROUND_TIMEOUT_SECS}, got {}",
                p.round_timeout_secs
            ));
        }
        let result_to = if p.result_to.is_empty() {
            None
        } else {
            Some(
                spec.participants
                    .iter()
                    .position(|q| q.node == p.result_to)
                    .ok_or_else(|| {
                        format!(
                            "secure_sum.result_to: '{}' is not a participant; name one of the \
                             participating nodes or leave result_to out",
                            p.result_to
                        )
                    })?,
            )
        };
        if p.max_rows_per_person > MAX_ROWS_PER_PERSON {
            return Err(format!(
                "secure_sum.max_rows_per_person: at most {MAX_ROWS_PER_PERSON}, got {}; the \
                 noise grows with it",
                p.max_rows_per_person
            ));
        }
        let dp = match &p.dp {
            Some(_) if p.exact => {
                return Err(
                    "secure_sum.exact: an exact job has no noise; remove exact = true \
                            or [secure_sum.dp]"
                        .into(),
                );
            }
            None if p.exact => None,
            // Distributed DP is the default: an exact sum can be differenced.
            None => Some(Dp {
                epsilon: DEFAULT_SECURE_SUM_EPSILON,
                delta: DEFAULT_SECURE_SUM_DELTA,
                mechanism: Mechanism::Gaussian,
            }),
            Some(dp) => {
                let dp = Dp::from_proto(dp, "secure_sum.dp")?;
                if dp.mechanism != Mechanism::Gaussian {
                    return Err(
                        "secure_sum.dp.mechanism: distributed DP uses the distributed discrete \
                         Gaussian; set mechanism = \"gaussian\" and a delta"
                            .into(),
                    );
                }
                Some(dp)
            }
        };
        let job = SecureSum {
            segment_column: p.segment_column.clone(),
            categories,
            count: p.count,
            value,
            threshold: t,
            min_contributors: if p.min_contributors == 0 {
                t
            } else {
                p.min_contributors
            },
            round_timeout_secs: if p.round_timeout_secs == 0 {
                DEFAULT_ROUND_TIMEOUT_SECS
            } else {
                p.round_timeout_secs
            },
            dp,
            max_rows_per_person: p.max_rows_per_person.max(1),
            result_to,
            n: n as u32,
        };
        if job.dp.is_some() {
            job.dp_plan()?;
        }
        Ok(job)
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::SecureSum as i32;
        let (value_column, lower, upper, decimals) = match &self.value {
            Some(v) => (
                v.column.clone(),
                v.bounds.lower,
                v.bounds.upper,
                v.bounds.decimals,
            ),
            None => (String::new(), 0.0, 0.0, 0),
        };
        let result_to = self
            .result_to
            .and_then(|i| spec.participants.get(i))
            .map(|p| p.node.clone())
            .unwrap_or_default();
        spec.params = Some(SpecParams::SecureSum(SecureSumParams {
            segment_column: self.segment_column.clone(),
            categories: self.categories.names.clone(),
            other: self.categories.other.proto() as i32,
            count: self.count,
            value_column,
            lower,
            upper,
            decimals,
            threshold: self.threshold,
            min_contributors: self.min_contributors,
            round_timeout_secs: self.round_timeout_secs,
            dp: self.dp.as_ref().map(Dp::proto),
            result_to,
            exact: self.dp.is_none(),
            max_rows_per_person: self.max_rows_per_person,
        }));
    }

    /// The segment column, then the value column if any.
    pub(crate) fn data_columns(&self) -> Vec<&str> {
        let mut out = vec![self.segment_column.as_str()];
        out.extend(self.value.as_ref().map(|v| v.column.as_str()));
        out
    }

    /// Distributed DP charges its (ε, δ) to every contributor; exact sums charge nothing.
    pub(crate) fn release_cost(&self) -> Option<Cost> {
        let dp = self.dp?;
        Some(Cost {
            epsilon: dp.epsilon,
            delta: dp.delta,
            mechanism: "secure_sum/distributed_gaussian".to_owned(),
        })
    }

    /// Words per category: the count (if asked), then the sum (if a value column is set).
    pub fn words_per_category(&self) -> usize {
        usize::from(self.count) + usize::from(self.value.is_some())
    }

    /// Words in every participant's vector: output categories × words per category.
    pub fn vector_len(&self) -> usize {
        self.categories.output_len() * self.words_per_category()
    }

    /// The names of the values per category, e.g. `["count", "sum(amount)"]`.
    pub fn value_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.count {
            out.push("count".to_owned());
        }
        if let Some(v) = &self.value {
            out.push(format!("sum({})", v.column));
        }
        out
    }

    /// The distributed-DP shares: for the count words (sensitivity L = `max_rows_per_person`)
    /// and the sum words (sensitivity L × the clamping bound in units), in that order, whichever the job releases;
    /// the (ε, δ) budget is split evenly between them in zCDP and provisioned for any number
    /// of contributors from `min_contributors` to `n`. Empty for an exact job.
    pub fn dp_plan(&self) -> Result<Vec<DistributedGaussian>, String> {
        let Some(dp) = self.dp else {
            return Ok(Vec::new());
        };
        let rows = u64::from(self.max_rows_per_person.max(1));
        let mut sens = Vec::new();
        if self.count {
            sens.push(rows);
        }
        if let Some(v) = &self.value {
            sens.push(rows.saturating_mul(v.bounds.sensitivity_units()));
        }
        parley_crypto::dp::distributed_plan(
            dp.epsilon,
            dp.delta,
            &sens,
            self.min_contributors,
            self.n,
        )
        .map_err(|e| format!("secure_sum.dp: {e}"))
    }

    /// The secure-aggregation parameters of the run for `job_id`, checked: vector layout,
    /// threshold, and that every message of the run fits in one link message. `Err` is a
    /// reason naming the setting at fault.
    pub fn secagg_params(&self, job_id: &str) -> Result<Params, String> {
        let len = self.vector_len();
        let params = Params {
            job_id: job_id.to_owned(),
            n: self.n,
            threshold: self.threshold,
            vector_len: len,
            max_vector_len: len,
        };
        params
            .validate()
            .map_err(|e| format!("invalid secure_sum parameters: {e}"))?;
        let largest = largest_message(job_id, self.n as usize, len);
        if largest > parley_proto::MAX_MESSAGE_BYTES {
            return Err(format!(
                "a secure_sum with {} participants and {len} words per vector needs link \
                 messages of up to {largest} bytes, more than the {} allowed; use fewer \
                 categories or participants",
                self.n,
                parley_proto::MAX_MESSAGE_BYTES
            ));
        }
        Ok(params)
    }

    /// The released result for the unmasked `sum` of the `contributors`' vectors (names, in
    /// index order); `dropped` says who dropped out and when.
    pub fn result(
        &self,
        sum: &[u64],
        contributors: Vec<String>,
        dropped: Vec<String>,
    ) -> Result<SecureSumResult, String> {
        if sum.len() != self.vector_len() {
            return Err(format!(
                "the unmasked sum has {} words, the job's layout {}",
                sum.len(),
                self.vector_len()
            ));
        }
        let per = self.words_per_category();
        let unit = self
            .value
            .as_ref()
            .map_or(1.0, |v| 10f64.powi(-(v.bounds.decimals as i32)));
        let categories = self
            .categories
            .output()
            .into_iter()
            .enumerate()
            .map(|(c, category)| {
                let values = (0..per)
                    .map(|k| {
                        // Two's complement: sums may be negative.
                        let word = sum[c * per + k] as i64;
                        if self.count && k == 0 {
                            word as f64
                        } else {
                            word as f64 * unit
                        }
                    })
                    .collect();
                CategoryStats {
                    category,
                    values,
                    suppressed: false,
                }
            })
            .collect();
        let k = contributors.len() as u32;
        let (noise, sum_noise) = match self.dp {
            None => (None, None),
            Some(dp) => {
                let plan = self.dp_plan()?;
                let info = |g: &DistributedGaussian, unit: f64| NoiseInfo {
                    mechanism: DpMechanism::Gaussian as i32,
                    // The whole release (counts and sums together) costs the job's (ε, δ).
                    epsilon: dp.epsilon,
                    delta: dp.delta,
                    scale: g.total_scale(k) * unit,
                    accuracy95: g.accuracy95(k) * unit,
                    sensitivity: g.sensitivity as f64 * unit,
                };
                let mut it = plan.iter();
                let count = if self.count {
                    it.next().map(|g| info(g, 1.0))
                } else {
                    None
                };
                let sum = self
                    .value
                    .as_ref()
                    .and_then(|_| it.next().map(|g| info(g, unit)));
                (count, sum)
            }
        };
        Ok(SecureSumResult {
            contributors,
            dropped,
            categories,
            columns: self.value_names(),
            noise,
            sum_noise,
        })
    }
}

/// Encoded length of a secure-aggregation message header for `job_id`.
fn header_len(job_id: &str) -> usize {
    // Magic, version, round, sender, job id length, job id.
    4 + 1 + 1 + 4 + 2 + job_id.len()
}

/// An upper bound on the largest link message of a run (either direction), in bytes.
fn largest_message(job_id: &str, n: usize, vector_len: usize) -> usize {
    // Per repeated element: tag and length varint. Plus the job id, round and framing.
    const PER_ITEM: usize = 6;
    const FRAMING: usize = 64 + MAX_JOB_ID_LEN;
    let h = header_len(job_id);
    let advert = h + 32 + 32 + SIGNATURE_LEN;
    let share = h + 4 + SEALED_SHARE_LEN;
    let masked = h + 4 + vector_len.saturating_mul(8) + SIGNATURE_LEN;
    let unmask = h + 4 + n.saturating_mul(4 + 1 + 64) + SIGNATURE_LEN;
    let per_n = |len: usize| n.saturating_mul(len + PER_ITEM);
    [
        per_n(advert),
        per_n(share),
        masked + PER_ITEM,
        unmask + PER_ITEM,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .saturating_add(FRAMING)
}

/// The one JSON schema of a secure_sum result: written by the node that receives the result
/// (`<outputs>/<job>-result.json`, with [`ResultFile`]) and by `parleyctl result --json`, and
/// read back by [`SecureSumReport::into_result`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSumReport {
    /// Nodes whose inputs are in the sum.
    pub contributors: Vec<String>,
    /// Nodes that dropped out (and the round they missed).
    pub dropped: Vec<String>,
    /// Names of the values per category.
    pub columns: Vec<String>,
    /// Distributed DP: the noise of the released counts (`null` = exact).
    pub count_noise: Option<NoiseReport>,
    /// Distributed DP: the noise of the released sums (`null` = exact).
    pub sum_noise: Option<NoiseReport>,
    /// One entry per category.
    pub categories: Vec<CategoryReport>,
}

/// How a released value was noised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseReport {
    /// `laplace` or `gaussian`.
    pub mechanism: String,
    /// ε charged.
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// Noise scale in the released unit.
    pub scale: f64,
    /// 95% accuracy bound in the released unit.
    pub accuracy95: f64,
    /// The most one person changes a released value (the calibrated sensitivity), in the
    /// released unit (absent in files written before it was recorded).
    #[serde(default)]
    pub sensitivity: f64,
}

/// One category's released values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryReport {
    /// Category name.
    pub category: String,
    /// One value per column.
    pub values: Vec<f64>,
}

/// A secure_sum result file as a receiving node writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultFile {
    /// Job id.
    pub job_id: String,
    /// Always `secure_sum`.
    pub kind: String,
    /// The result.
    #[serde(flatten)]
    pub report: SecureSumReport,
}

impl NoiseReport {
    fn from_info(n: &NoiseInfo) -> NoiseReport {
        NoiseReport {
            mechanism: match n.mechanism() {
                DpMechanism::Laplace => Mechanism::Laplace,
                DpMechanism::Gaussian => Mechanism::Gaussian,
            }
            .name()
            .to_owned(),
            epsilon: n.epsilon,
            delta: n.delta,
            scale: n.scale,
            accuracy95: n.accuracy95,
            sensitivity: n.sensitivity,
        }
    }

    fn into_info(self) -> Result<NoiseInfo, String> {
        let mechanism = match self.mechanism.as_str() {
            "laplace" => DpMechanism::Laplace,
            "gaussian" => DpMechanism::Gaussian,
            other => return Err(format!("unknown mechanism '{other}'")),
        };
        Ok(NoiseInfo {
            mechanism: mechanism as i32,
            epsilon: self.epsilon,
            delta: self.delta,
            scale: self.scale,
            accuracy95: self.accuracy95,
            sensitivity: self.sensitivity,
        })
    }
}

impl From<&SecureSumResult> for SecureSumReport {
    fn from(r: &SecureSumResult) -> SecureSumReport {
        SecureSumReport {
            contributors: r.contributors.clone(),
            dropped: r.dropped.clone(),
            columns: r.columns.clone(),
            count_noise: r.noise.as_ref().map(NoiseReport::from_info),
            sum_noise: r.sum_noise.as_ref().map(NoiseReport::from_info),
            categories: r
                .categories
                .iter()
                .map(|c| CategoryReport {
                    category: c.category.clone(),
                    values: c.values.clone(),
                })
                .collect(),
        }
    }
}

impl SecureSumReport {
    /// Back to the wire form.
    pub fn into_result(self) -> Result<SecureSumResult, String> {
        Ok(SecureSumResult {
            contributors: self.contributors,
            dropped: self.dropped,
            columns: self.columns,
            noise: self.count_noise.map(NoiseReport::into_info).transpose()?,
            sum_noise: self.sum_noise.map(NoiseReport::into_info).transpose()?,
            categories: self
                .categories
                .into_iter()
                .map(|c| CategoryStats {
                    category: c.category,
                    values: c.values,
                    suppressed: false,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Job, Kind};

    fn example(edit: impl Fn(&mut SecureSumParams)) -> SecureSum {
        let mut spec = JobSpec::from(
            &crate::parse_job(
                include_str!("../../examples/job-secure-sum.toml"),
                "job-secure-sum.toml",
            )
            .unwrap(),
        );
        edit(spec.secure_sum_mut().unwrap());
        match Job::try_from(&spec).unwrap().kind {
            Kind::SecureSum(k) => k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn distributed_dp_is_the_default_and_exact_sums_are_asked_for() {
        // No [secure_sum.dp], no exact: the default distributed DP.
        let k = example(|p| p.dp = None);
        let dp = k.dp.unwrap();
        assert_eq!(
            (dp.epsilon, dp.delta, dp.mechanism),
            (
                DEFAULT_SECURE_SUM_EPSILON,
                DEFAULT_SECURE_SUM_DELTA,
                Mechanism::Gaussian
            )
        );
        // The default is written to the wire, so every node plans the same noise.
        let mut spec = JobSpec::default();
        k.write_spec(&mut spec);
        assert!(spec.secure_sum().unwrap().dp.is_some() && !spec.secure_sum().unwrap().exact);
        let exact = example(|p| {
            p.dp = None;
            p.exact = true;
        });
        assert!(exact.dp.is_none() && exact.release_cost().is_none());
        let mut spec = JobSpec::from(
            &crate::jobfile::parse_job(
                include_str!("../../examples/job-secure-sum.toml"),
                "job-secure-sum.toml",
            )
            .unwrap(),
        );
        spec.secure_sum_mut().unwrap().exact = true;
        let e = Job::try_from(&spec).unwrap_err().to_string();
        assert!(e.contains("secure_sum.exact"), "{e}");
    }

    #[test]
    fn the_person_bound_scales_the_distributed_noise() {
        let one = example(|_| {});
        let five = example(|p| p.max_rows_per_person = 5);
        let (a, b) = (one.dp_plan().unwrap(), five.dp_plan().unwrap());
        assert_eq!(a[0].sensitivity * 5, b[0].sensitivity);
        assert_eq!(a[1].sensitivity * 5, b[1].sensitivity);
        assert!(b[0].node_scale > 4.0 * a[0].node_scale);
    }

    #[test]
    fn defaults_resolve_for_the_number_of_participants() {
        let k = example(|p| {
            p.threshold = 0;
            p.min_contributors = 0;
            p.round_timeout_secs = 0;
        });
        // Five participants: ⌊10/3⌋ + 1 = 4.
        assert_eq!((k.threshold, k.min_contributors), (4, 4));
        assert_eq!(k.round_timeout_secs, DEFAULT_ROUND_TIMEOUT_SECS);
        let k = example(|p| p.min_contributors = 5);
        assert_eq!((k.threshold, k.min_contributors), (4, 5));
    }

    #[test]
    fn layout_and_decoding_agree() {
        let k = example(|p| {
            p.other = parley_proto::OtherRows::Bucket as i32;
            p.dp = None;
            p.exact = true;
        });
        // Four regions + other, count and sum each.
        assert_eq!((k.vector_len(), k.words_per_category()), (10, 2));
        assert_eq!(k.value_names(), ["count", "sum(amount)"]);
        let mut sum: Vec<u64> = (0..10).map(|i| i * 100).collect();
        sum[3] = (-250i64) as u64;
        let r = k
            .result(&sum, vec!["a".into(), "b".into()], vec![])
            .unwrap();
        assert_eq!(r.categories.len(), 5);
        assert_eq!(r.categories[4].category, "other");
        assert_eq!(r.categories[1].values, [200.0, -2.5]);
        assert_eq!(r.categories[4].values, [800.0, 9.0]);
        assert!(r.noise.is_none() && r.sum_noise.is_none());
        assert!(k.result(&sum[..9], vec![], vec![]).is_err());

        let counts = example(|p| {
            p.value_column.clear();
            p.lower = 0.0;
            p.upper = 0.0;
        });
        assert_eq!((counts.vector_len(), counts.value_names().len()), (4, 1));
    }

    #[test]
    fn distributed_dp_is_planned_once_and_reported() {
        let k = example(|p| {
            p.dp = Some(parley_proto::DpParams {
                epsilon: 1.0,
                mechanism: DpMechanism::Gaussian as i32,
                delta: 1e-6,
            });
        });
        let plan = k.dp_plan().unwrap();
        assert_eq!(plan.len(), 2);
        let r = k
            .result(&[0; 8], (0..4).map(|i| format!("n{i}")).collect(), vec![])
            .unwrap();
        let (count, sum) = (r.noise.unwrap(), r.sum_noise.unwrap());
        assert_eq!((count.epsilon, count.delta), (1.0, 1e-6));
        assert!((count.scale - plan[0].total_scale(4)).abs() < 1e-9);
        // Sums are reported in the value column's unit (cents → currency).
        assert!((sum.scale - plan[1].total_scale(4) / 100.0).abs() < 1e-9);
        let cost = k.release_cost().unwrap();
        assert_eq!(cost.mechanism, "secure_sum/distributed_gaussian");

        let laplace = parley_proto::DpParams {
            epsilon: 1.0,
            mechanism: DpMechanism::Laplace as i32,
            delta: 0.0,
        };
        let mut spec = JobSpec::from(&Job {
            label: String::new(),
            participants: (0..5)
                .map(|i| crate::Participant {
                    node: format!("retailer-{}", i + 1),
                    dataset: "sales".into(),
                    columns: vec![],
                })
                .collect(),
            kind: Kind::SecureSum(k),
        });
        spec.secure_sum_mut().unwrap().dp = Some(laplace);
        let e = Job::try_from(&spec).unwrap_err().to_string();
        assert!(e.starts_with("secure_sum.dp.mechanism"), "{e}");
    }

    #[test]
    fn the_result_json_has_one_schema_both_ways() {
        let k = example(|p| {
            p.dp = Some(parley_proto::DpParams {
                epsilon: 0.5,
                mechanism: DpMechanism::Gaussian as i32,
                delta: 1e-7,
            });
        });
        let r = k
            .result(
                &[1, 2, 3, 4, 5, 6, 7, 8],
                vec![
                    "retailer-1".into(),
                    "retailer-2".into(),
                    "retailer-3".into(),
                ],
                vec!["retailer-4 (round 2)".into()],
            )
            .unwrap();
        let file = ResultFile {
            job_id: "j-1".into(),
            kind: "secure_sum".into(),
            report: SecureSumReport::from(&r),
        };
        let text = serde_json::to_string_pretty(&file).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "count_noise",
            "sum_noise",
            "contributors",
            "columns",
            "categories",
        ] {
            assert!(value.get(key).is_some(), "{key} missing: {text}");
        }
        assert_eq!(value["count_noise"]["mechanism"], "gaussian");
        let back: ResultFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.report.into_result().unwrap(), r);
        // A file with a field of another schema (the old `noise` key) is refused, not
        // silently read as exact.
        let old = text.replace("\"count_noise\"", "\"noise\"");
        assert!(serde_json::from_str::<ResultFile>(&old).is_err());
    }
}
