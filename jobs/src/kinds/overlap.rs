//! Segmented overlap and match rate between two nodes: P1 (job role `sender`) holds people
//! with an optional segment label, P2 (role `receiver`, gets the result) holds people with an
//! optional segment label. The protocol is the grouped intersection-aggregate of
//! `parley_crypto::grouped`: one group per P1 segment, and one 0/1 value column per P2 segment
//! (each P2 identifier encrypts the indicator vector of its segment), so that P1's per-group
//! ciphertext sums are the cross-tab of matched people by both segments.
//!
//! # What is released (to P2, then the analyst)
//! * Per P1 segment: the number of matched people, noised by P1 inside the protocol.
//! * With P2 segments, per pair (P1 segment, P2 segment): the number of matched people, noised
//!   by P1 inside the ciphertexts before P2 can decrypt them. Per P2 segment, the sum of its
//!   cross-tab column.
//! * Each side's population per segment, noised by P2 before the result leaves it (P2 learns
//!   P1's exact segment sizes from P1's stream header, as in every grouped job), and the match
//!   rates they give.
//!
//! P1 learns the exact matched count per P1 segment (an intersection size, as in PSI
//! cardinality), and the size of P2's set. Without P2 segments P2 encrypts a zero per
//! identifier: the column carries nothing and P1 adds no noise to it.
//!
//! # The privacy unit is the person
//! P1 matches on one identifier column and keeps one identifier per person. P2 may match on up
//! to [`MAX_OVERLAP_P2_COLUMNS`] identifier columns (a P1 person matches when its identifier is
//! any of a P2 record's identifiers) and keeps at most `max_records_per_identifier` (m)
//! records per person. Identifiers that carry two segments on one side are left out, counted.
//! One P2 person then holds at most m × c identifiers (c = P2's identifier columns), each in one
//! cell; one P1 person one identifier. So the L1 sensitivity of the matched-count vector, of
//! the cross-tab and of P2's population vector is m × c ([`Overlap::count_sensitivity`]), and
//! of P1's population vector 1. The job's ε (and δ) is split evenly over those releases
//! (basic composition, [`Overlap::release_dp`]), and both datasets pay the whole of it.

use parley_crypto::normalize::Profile;
use parley_proto::job_spec::Params;
use parley_proto::{JobKind, JobSpec, OverlapParams};

use crate::job::{Cost, Role};
use crate::kinds::psi::{check_profile, profile_name, set_roles, two_parties};
use crate::limits::{MAX_LIFT_COHORTS, MAX_RECORDS_PER_IDENTIFIER};
use crate::params::{Dp, declared_labels, wrong_params};

/// Most P1 segments an overlap job may declare.
pub const MAX_OVERLAP_P1_SEGMENTS: usize = MAX_LIFT_COHORTS;

/// Most P2 segments an overlap job may declare (each is one encrypted value column).
pub const MAX_OVERLAP_P2_SEGMENTS: usize = 16;

/// Most identifier columns P2 may match on.
pub const MAX_OVERLAP_P2_COLUMNS: usize = 4;

/// One side's segment breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// The segment column.
    pub column: String,
    /// The declared labels, in result order.
    pub labels: Vec<String>,
}

/// An overlap job.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// P1's breakdown, if any.
    pub p1_segments: Option<Segments>,
    /// P2's breakdown, if any.
    pub p2_segments: Option<Segments>,
    /// The whole job's privacy loss (split over the releases, see the module docs).
    pub dp: Dp,
    /// Records each side keeps per person and per identifier.
    pub max_records_per_identifier: u32,
    /// The number of identifier columns P2 matches on.
    pub p2_columns: u32,
    /// The identifier normalisation profile both nodes must use.
    pub profile: Profile,
    /// Cells with a noisy matched count below this are suppressed.
    pub min_cell: u64,
    /// Index of P1 among the participants.
    pub p1: usize,
    /// Index of P2 (gets the result) among the participants.
    pub p2: usize,
}

impl Overlap {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<Overlap, String> {
        let p = match &spec.params {
            Some(Params::Overlap(p)) => p,
            other => {
                return Err(wrong_params(
                    "overlap",
                    other.as_ref(),
                    "overlap: an overlap job needs an [overlap] table (the segment columns, if \
                     any, and [overlap.dp])",
                ));
            }
        };
        let (p2, p1) = two_parties(spec, "overlap")?;
        let p1_columns = spec.participants[p1].columns.len();
        if p1_columns != 1 {
            return Err(format!(
                "participant {} (node '{}'): columns: P1 of an overlap job (role \"sender\") \
                 matches on exactly one identifier column, so that each person counts once \
                 (e.g. columns = [\"email\"])",
                p1 + 1,
                spec.participants[p1].node
            ));
        }
        let p2_columns = spec.participants[p2].columns.len();
        if p2_columns == 0 || p2_columns > MAX_OVERLAP_P2_COLUMNS {
            return Err(format!(
                "participant {} (node '{}'): columns: P2 of an overlap job (role \"receiver\") \
                 lists the 1 to {MAX_OVERLAP_P2_COLUMNS} identifier columns it matches on \
                 (e.g. columns = [\"email\", \"phone\"]); the noise grows with their number",
                p2 + 1,
                spec.participants[p2].node
            ));
        }
        for (i, q) in spec.participants.iter().enumerate() {
            if !q.value_column.is_empty() {
                return Err(format!(
                    "participant {} (node '{}'): value_column: an overlap job sums no values",
                    i + 1,
                    q.node
                ));
            }
        }
        let p1_segments = declared_labels(
            &p.p1_segment_column,
            &p.p1_segments,
            MAX_OVERLAP_P1_SEGMENTS,
            "overlap.p1_segment_column",
            "overlap.p1_segments",
        )?
        .map(|(column, labels)| Segments { column, labels });
        let p2_segments = declared_labels(
            &p.p2_segment_column,
            &p.p2_segments,
            MAX_OVERLAP_P2_SEGMENTS,
            "overlap.p2_segment_column",
            "overlap.p2_segments",
        )?
        .map(|(column, labels)| Segments { column, labels });
        let dp = match &p.dp {
            Some(dp) => Dp::from_proto(dp, "overlap.dp")?,
            None => {
                return Err(
                    "overlap.dp: an overlap job releases only noisy counts; set [overlap.dp] \
                     with an epsilon"
                        .into(),
                );
            }
        };
        let m = p.max_records_per_identifier;
        if m > MAX_RECORDS_PER_IDENTIFIER {
            return Err(format!(
                "overlap.max_records_per_identifier: at most {MAX_RECORDS_PER_IDENTIFIER}, got \
                 {m}; the noise grows with it"
            ));
        }
        Ok(Overlap {
            p1_segments,
            p2_segments,
            dp,
            max_records_per_identifier: m.max(1),
            p2_columns: p2_columns as u32,
            profile: check_profile(&p.profile)?,
            min_cell: p.min_cell,
            p1,
            p2,
        })
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Overlap as i32;
        let column =
            |s: &Option<Segments>| s.as_ref().map(|s| s.column.clone()).unwrap_or_default();
        let labels =
            |s: &Option<Segments>| s.as_ref().map(|s| s.labels.clone()).unwrap_or_default();
        spec.params = Some(
            OverlapParams {
                p1_segment_column: column(&self.p1_segments),
                p1_segments: labels(&self.p1_segments),
                p2_segment_column: column(&self.p2_segments),
                p2_segments: labels(&self.p2_segments),
                dp: Some(self.dp.proto()),
                max_records_per_identifier: self.max_records_per_identifier,
                profile: profile_name(self.profile),
                min_cell: self.min_cell,
            }
            .into(),
        );
        set_roles(spec, self.p2, self.p1);
    }

    /// P1's labels ("" alone without P1 segments): one protocol group each.
    pub fn p1_labels(&self) -> Vec<&str> {
        labels_of(&self.p1_segments)
    }

    /// P2's labels ("" alone without P2 segments).
    pub fn p2_labels(&self) -> Vec<&str> {
        labels_of(&self.p2_segments)
    }

    /// The number of protocol groups (P1 segments, at least 1).
    pub fn groups(&self) -> usize {
        self.p1_segments.as_ref().map_or(1, |s| s.labels.len())
    }

    /// The number of encrypted value columns (P2 segments; 1, all zeros, without them).
    pub fn width(&self) -> usize {
        self.p2_segments.as_ref().map_or(1, |s| s.labels.len())
    }

    /// The most one person moves the matched-count vector, the cross-tab or P2's population
    /// vector (L1): m × P2's identifier columns (P1's people move them by at most 1).
    pub fn count_sensitivity(&self) -> u64 {
        u64::from(self.max_records_per_identifier) * u64::from(self.p2_columns.max(1))
    }

    /// The number of noisy releases the job's ε is split over: the matched counts, each side's
    /// populations, and the cross-tab when P2 has segments.
    pub fn releases(&self) -> usize {
        3 + usize::from(self.p2_segments.is_some())
    }

    /// The privacy loss of each release: the job's, split evenly.
    pub fn release_dp(&self) -> Dp {
        let n = self.releases() as f64;
        Dp {
            epsilon: self.dp.epsilon / n,
            mechanism: self.dp.mechanism,
            delta: self.dp.delta / n,
        }
    }

    pub(crate) fn role(&self, index: usize) -> Role {
        if index == self.p2 {
            Role::SumP2
        } else {
            Role::SumP1
        }
    }

    pub(crate) fn data_columns(&self, index: usize) -> Vec<&str> {
        let s = if index == self.p2 {
            &self.p2_segments
        } else {
            &self.p1_segments
        };
        s.iter().map(|s| s.column.as_str()).collect()
    }

    /// The whole job's ε and δ.
    pub(crate) fn release_cost(&self) -> Cost {
        Cost {
            epsilon: self.dp.epsilon,
            delta: self.dp.delta,
            mechanism: self.dp.mechanism.label("overlap"),
        }
    }
}

fn labels_of(s: &Option<Segments>) -> Vec<&str> {
    match s {
        Some(s) => s.labels.iter().map(String::as_str).collect(),
        None => vec![""],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_proto::{DpMechanism, DpParams, Participant, PsiRole};

    use super::*;

    fn spec(edit: impl FnOnce(&mut OverlapParams, &mut Vec<Participant>)) -> JobSpec {
        let mut p = OverlapParams {
            p1_segment_column: "region".into(),
            p1_segments: vec!["north".into(), "south".into(), "west".into()],
            p2_segment_column: "tier".into(),
            p2_segments: vec!["gold".into(), "silver".into()],
            dp: Some(DpParams {
                epsilon: 2.0,
                mechanism: DpMechanism::Laplace as i32,
                delta: 0.0,
            }),
            max_records_per_identifier: 2,
            profile: String::new(),
            min_cell: 50,
        };
        let mut parts = vec![
            Participant {
                node: "brand".into(),
                dataset: "customers".into(),
                columns: vec!["email".into(), "phone".into()],
                psi_role: PsiRole::Receiver as i32,
                value_column: String::new(),
            },
            Participant {
                node: "publisher".into(),
                dataset: "audience".into(),
                columns: vec!["email".into()],
                psi_role: PsiRole::Sender as i32,
                value_column: String::new(),
            },
        ];
        edit(&mut p, &mut parts);
        JobSpec {
            label: "o".into(),
            kind: JobKind::Overlap as i32,
            participants: parts,
            params: Some(p.into()),
        }
    }

    fn err(edit: impl FnOnce(&mut OverlapParams, &mut Vec<Participant>)) -> String {
        Overlap::from_spec(&spec(edit)).unwrap_err()
    }

    #[test]
    fn a_full_job_has_its_cells_and_sensitivities() {
        let k = Overlap::from_spec(&spec(|_, _| {})).unwrap();
        assert_eq!((k.p1, k.p2), (1, 0));
        assert_eq!(k.groups(), 3);
        assert_eq!(k.width(), 2);
        assert_eq!(k.p1_labels(), ["north", "south", "west"]);
        assert_eq!(k.p2_labels(), ["gold", "silver"]);
        // m = 2 records per person, 2 identifier columns on P2's side.
        assert_eq!(k.count_sensitivity(), 4);
        assert_eq!(k.releases(), 4);
        assert!((k.release_dp().epsilon - 0.5).abs() < 1e-12);
        assert_eq!(k.release_cost().epsilon, 2.0);
        assert_eq!(k.data_columns(0), ["tier"]);
        assert_eq!(k.data_columns(1), ["region"]);
        assert_eq!(k.role(0), Role::SumP2);
        assert_eq!(k.role(1), Role::SumP1);
    }

    #[test]
    fn without_segments_there_is_one_cell_and_a_zero_column() {
        let k = Overlap::from_spec(&spec(|p, _| {
            p.p1_segment_column.clear();
            p.p1_segments.clear();
            p.p2_segment_column.clear();
            p.p2_segments.clear();
        }))
        .unwrap();
        assert_eq!((k.groups(), k.width(), k.releases()), (1, 1, 3));
        assert_eq!(k.p1_labels(), [""]);
        assert!(k.data_columns(0).is_empty());
    }

    #[test]
    fn the_spec_round_trips() {
        let s = spec(|_, _| {});
        let k = Overlap::from_spec(&s).unwrap();
        let mut back = JobSpec {
            label: "o".into(),
            participants: s.participants.clone(),
            ..Default::default()
        };
        k.write_spec(&mut back);
        assert_eq!(Overlap::from_spec(&back).unwrap(), k);
    }

    #[test]
    fn bad_jobs_are_refused_with_the_field() {
        let e = err(|p, _| p.dp = None);
        assert!(e.starts_with("overlap.dp:"), "{e}");
        let e = err(|p, _| p.p1_segments.clear());
        assert!(e.starts_with("overlap.p1_segments:"), "{e}");
        let e = err(|p, _| p.p2_segments.push("gold".into()));
        assert!(e.contains("'gold' is declared twice"), "{e}");
        let e = err(|p, _| p.p2_segments = (0..17).map(|i| format!("s{i}")).collect());
        assert!(e.contains("1 to 16"), "{e}");
        let e = err(|p, _| {
            p.p2_segment_column.clear();
        });
        assert!(e.starts_with("overlap.p2_segments:"), "{e}");
        let e = err(|_, q| q[1].columns.push("phone".into()));
        assert!(e.contains("exactly one identifier column"), "{e}");
        let e = err(|_, q| q[0].columns.clear());
        assert!(e.contains("1 to 4 identifier columns"), "{e}");
        let e = err(|p, _| p.max_records_per_identifier = 1001);
        assert!(e.starts_with("overlap.max_records_per_identifier"), "{e}");
        let e = err(|_, q| q[0].value_column = "amount".into());
        assert!(e.contains("sums no values"), "{e}");
    }
}
