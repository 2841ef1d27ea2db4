//! Conversion lift of a randomised test/control campaign between two nodes: P1, the publisher
//! (job role `sender`), holds each exposed or held-out person's arm (and optionally cohort); P2,
//! the brand (role `receiver`), holds its whole customer table for the conversion window with
//! each customer's conversions and value. The protocol is the grouped intersection-aggregate of
//! `parley_crypto::grouped`, one group per arm × cohort cell; the statistics are
//! [`crate::lift`].
//!
//! # What is released
//! For every cell `g`: its population `|X_g|` (P1's people in it, exact: P2 learns the group
//! sizes from P1's stream header, as in every PSI), and, noised by P1 inside the ciphertexts
//! before P2 can decrypt them, the number of matched people and the sums over them of the
//! per-person conversions, value, value² (and conversions² when conversions are counted, not
//! converters). P1 learns the exact matched count per cell, which is reach, not results,
//! because P2 sends its whole customer universe for the window, converters or not.
//!
//! # The privacy unit is the person
//! P2 keeps at most `max_records_per_identifier` (m) records per person and per identifier,
//! sums each identifier's rows and clamps the per-person totals (conversions to
//! `[0, max_conversions]`, value to `[0, max_value]`); P1 keeps one identifier per person (each
//! side matches on one identifier column, so that a population counts people). One person then
//! changes at most m matched identifiers, each in one cell, so the L1 (and L2) sensitivity of
//! the matched-count vector over the cells is m ([`Lift::count_sensitivity`]), and of a column's
//! sum vector m × that column's per-person bound ([`Lift::column_sensitivity`]). The job's ε
//! (and δ) is split evenly over the count vector and each column (basic composition), and both
//! datasets pay the whole of it.

use parley_crypto::normalize::Profile;
use parley_proto::job_spec::Params;
use parley_proto::{JobKind, JobSpec, LiftParams};

use crate::job::{Cost, Role};
use crate::kinds::psi::{Contribution, check_profile, profile_name, set_roles, two_parties};
use crate::kinds::rfm::parse_day;
use crate::limits::{MAX_BOUND_UNITS, MAX_LIFT_COHORTS, MAX_RECORDS_PER_IDENTIFIER};
use crate::params::{Bounds, Dp, check_column, check_label, declared_labels, wrong_params};

/// The arms, in group order: test first.
pub const ARMS: [Arm; 2] = [Arm::Test, Arm::Control];

/// An arm of the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// Exposed to the campaign.
    Test,
    /// Held out.
    Control,
}

/// One summed column of P2's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Conversions per person (converters when `max_conversions` is 1).
    Conversions,
    /// Value per person, in units of 10^-decimals.
    Value,
    /// Value² per person, in `squares_unit`s.
    ValueSquares,
    /// Conversions² per person (only when `max_conversions` > 1).
    ConversionSquares,
}

impl Column {
    /// The column's name in results.
    pub fn name(self) -> &'static str {
        match self {
            Column::Conversions => "conversions",
            Column::Value => "value",
            Column::ValueSquares => "value_squares",
            Column::ConversionSquares => "conversion_squares",
        }
    }
}

/// A lift job.
#[derive(Debug, Clone, PartialEq)]
pub struct Lift {
    /// P1's segment column with each person's arm.
    pub arm_column: String,
    /// The label of the test arm.
    pub test_label: String,
    /// The label of the control arm.
    pub control_label: String,
    /// P1's segment column with each person's cohort, if the job has cohorts.
    pub cohort_column: Option<String>,
    /// The declared cohorts (empty without a cohort column).
    pub cohorts: Vec<String>,
    /// P2's conversions column.
    pub conversion_column: String,
    /// Per-person conversions are clamped to `[0, max_conversions]`.
    pub max_conversions: u32,
    /// P2's value column.
    pub value_column: String,
    /// Per-person value clamp `[0, max_value]` and its decimals.
    pub value: Bounds,
    /// The unit (value unit squared) value² is summed in.
    pub squares_unit: f64,
    /// The whole job's privacy loss (split over the releases, see the module docs).
    pub dp: Dp,
    /// P2's per-person record bound; P1 matches on one column.
    pub bound: Contribution,
    /// The identifier normalisation profile both nodes must use.
    pub profile: Profile,
    /// Cells with a population or noisy matched count below this are suppressed.
    pub min_cell: u64,
    /// The conversion window, as declared (ISO 8601 dates).
    pub window_start: String,
    /// End of the conversion window (exclusive).
    pub window_end: String,
    /// Campaign spend for iROAS (0 = none).
    pub spend: f64,
    /// Index of P1 (the publisher, arms) among the participants.
    pub p1: usize,
    /// Index of P2 (the brand, conversions and values) among the participants.
    pub p2: usize,
}

impl Lift {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<Lift, String> {
        let p = match &spec.params {
            Some(Params::Lift(p)) => p,
            other => {
                return Err(wrong_params(
                    "lift",
                    other.as_ref(),
                    "lift: a lift job needs a [lift] table (arm_column, conversion_column, \
                     value_column, max_value, the window and [lift.dp])",
                ));
            }
        };
        let (p2, p1) = two_parties(spec, "lift")?;
        for (i, q) in spec.participants.iter().enumerate() {
            if q.columns.len() != 1 {
                return Err(format!(
                    "participant {} (node '{}'): columns: a lift job matches on exactly one \
                     identifier column per side, so that each person counts once (e.g. \
                     columns = [\"email\"])",
                    i + 1,
                    q.node
                ));
            }
            if !q.value_column.is_empty() {
                return Err(format!(
                    "participant {} (node '{}'): value_column: a lift job names its columns \
                     in [lift] (conversion_column, value_column)",
                    i + 1,
                    q.node
                ));
            }
        }
        check_column(&p.arm_column, "lift.arm_column")?;
        let test_label = check_label(&p.test_label, "lift.test_label")?;
        let control_label = check_label(&p.control_label, "lift.control_label")?;
        if test_label == control_label {
            return Err(format!(
                "lift: test_label and control_label are both '{test_label}'; the arms need \
                 different labels"
            ));
        }
        if p.cohort_column == p.arm_column {
            return Err("lift.cohort_column: must differ from arm_column".into());
        }
        let (cohort_column, cohorts) = match declared_labels(
            &p.cohort_column,
            &p.cohorts,
            MAX_LIFT_COHORTS,
            "lift.cohort_column",
            "lift.cohorts",
        )? {
            Some((c, labels)) => (Some(c), labels),
            None => (None, Vec::new()),
        };
        check_column(&p.conversion_column, "lift.conversion_column")?;
        check_column(&p.value_column, "lift.value_column")?;
        if p.conversion_column == p.value_column {
            return Err(
                "lift: conversion_column and value_column are the same column; name P2's \
                 conversions and its value separately"
                    .into(),
            );
        }
        if p.max_conversions == 0 || p.max_conversions > 1000 {
            return Err(format!(
                "lift.max_conversions: 1 (count converters) to 1000, got {}",
                p.max_conversions
            ));
        }
        if !(p.max_value.is_finite() && p.max_value > 0.0) {
            return Err(format!(
                "lift.max_value: the per-person value clamp must be a positive number, got {}",
                p.max_value
            ));
        }
        let value = Bounds::check(0.0, p.max_value, p.decimals, "lift")?;
        if !(p.squares_unit.is_finite() && p.squares_unit > 0.0) {
            return Err(format!(
                "lift.squares_unit: a positive number (value unit squared), got {}",
                p.squares_unit
            ));
        }
        let squares = (p.max_value * p.max_value / p.squares_unit).ceil();
        if squares > MAX_BOUND_UNITS {
            return Err(format!(
                "lift.squares_unit: max_value² / squares_unit is {squares}, above 2^40; raise \
                 squares_unit"
            ));
        }
        let dp = match &p.dp {
            Some(dp) => Dp::from_proto(dp, "lift.dp")?,
            None => {
                return Err(
                    "lift.dp: a lift job releases only noisy totals; set [lift.dp] with an \
                     epsilon"
                        .into(),
                );
            }
        };
        let m = p.max_records_per_identifier;
        if m > MAX_RECORDS_PER_IDENTIFIER {
            return Err(format!(
                "lift.max_records_per_identifier: at most {MAX_RECORDS_PER_IDENTIFIER}, got \
                 {m}; the noise grows with it"
            ));
        }
        let start = parse_day(&p.window_start, "lift.window_start")?;
        let end = parse_day(&p.window_end, "lift.window_end")?;
        if start >= end {
            return Err(format!(
                "lift.window_end: '{}' is not after window_start '{}'",
                p.window_end, p.window_start
            ));
        }
        if !(p.spend.is_finite() && p.spend >= 0.0) {
            return Err(format!(
                "lift.spend: a non-negative amount (0 = no iROAS), got {}",
                p.spend
            ));
        }
        Ok(Lift {
            arm_column: p.arm_column.clone(),
            test_label,
            control_label,
            cohort_column,
            cohorts,
            conversion_column: p.conversion_column.clone(),
            max_conversions: p.max_conversions,
            value_column: p.value_column.clone(),
            value,
            squares_unit: p.squares_unit,
            dp,
            bound: Contribution {
                max_records_per_identifier: m.max(1),
                sender_columns: 1,
            },
            profile: check_profile(&p.profile)?,
            min_cell: p.min_cell,
            window_start: p.window_start.clone(),
            window_end: p.window_end.clone(),
            spend: p.spend,
            p1,
            p2,
        })
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Lift as i32;
        spec.params = Some(
            LiftParams {
                arm_column: self.arm_column.clone(),
                test_label: self.test_label.clone(),
                control_label: self.control_label.clone(),
                cohort_column: self.cohort_column.clone().unwrap_or_default(),
                cohorts: self.cohorts.clone(),
                conversion_column: self.conversion_column.clone(),
                max_conversions: self.max_conversions,
                value_column: self.value_column.clone(),
                max_value: self.value.upper,
                decimals: self.value.decimals,
                squares_unit: self.squares_unit,
                dp: Some(self.dp.proto()),
                max_records_per_identifier: self.bound.max_records_per_identifier,
                profile: profile_name(self.profile),
                min_cell: self.min_cell,
                window_start: self.window_start.clone(),
                window_end: self.window_end.clone(),
                spend: self.spend,
            }
            .into(),
        );
        set_roles(spec, self.p2, self.p1);
    }

    /// The number of cohorts (1 without cohorts: the whole arm).
    pub fn cohort_count(&self) -> usize {
        self.cohorts.len().max(1)
    }

    /// The number of arm × cohort cells (protocol groups).
    pub fn groups(&self) -> usize {
        ARMS.len() * self.cohort_count()
    }

    /// The group number of an arm and cohort index: test cells first, cohorts in declared
    /// order.
    pub fn group(&self, arm: Arm, cohort: usize) -> usize {
        let a = usize::from(arm == Arm::Control);
        a * self.cohort_count() + cohort
    }

    /// The arm label and cohort label (empty without cohorts) of group `g`.
    pub fn cell_labels(&self, g: usize) -> (&str, &str) {
        let c = self.cohort_count();
        let arm = if g < c {
            &self.test_label
        } else {
            &self.control_label
        };
        let cohort = self.cohorts.get(g % c).map_or("", String::as_str);
        (arm, cohort)
    }

    /// P2's summed columns, in protocol order.
    pub fn columns(&self) -> Vec<Column> {
        let mut c = vec![Column::Conversions, Column::Value, Column::ValueSquares];
        if self.max_conversions > 1 {
            c.push(Column::ConversionSquares);
        }
        c
    }

    /// The most one identifier adds to a column, in the column's integer unit.
    pub fn column_bound(&self, c: Column) -> u64 {
        let conv = u64::from(self.max_conversions);
        match c {
            Column::Conversions => conv,
            Column::Value => self.value.sensitivity_units(),
            Column::ValueSquares => self.square_units(self.value.upper),
            Column::ConversionSquares => conv * conv,
        }
    }

    /// A per-person value (clamped to `[0, max_value]`) squared, in whole `squares_unit`s
    /// (rounded to nearest).
    pub fn square_units(&self, value: f64) -> u64 {
        let v = value.clamp(0.0, self.value.upper);
        (v * v / self.squares_unit).round() as u64
    }

    /// The size of one column unit in the released unit (value for `Value`, value² for
    /// `ValueSquares`, 1 for the conversion columns).
    pub fn column_unit(&self, c: Column) -> f64 {
        match c {
            Column::Conversions | Column::ConversionSquares => 1.0,
            Column::Value => 10f64.powi(-(self.value.decimals as i32)),
            Column::ValueSquares => self.squares_unit,
        }
    }

    /// The most one person moves the matched-count vector (L1 over the cells).
    pub fn count_sensitivity(&self) -> u64 {
        self.bound.identifier_sensitivity()
    }

    /// The most one person moves a column's sum vector (L1 over the cells), in its unit.
    pub fn column_sensitivity(&self, c: Column) -> u64 {
        self.count_sensitivity()
            .saturating_mul(self.column_bound(c))
    }

    /// The privacy loss of each of the `1 + columns` releases: the job's, split evenly.
    pub fn release_dp(&self) -> Dp {
        let n = (1 + self.columns().len()) as f64;
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
        if index == self.p2 {
            vec![self.conversion_column.as_str(), self.value_column.as_str()]
        } else {
            let mut c = vec![self.arm_column.as_str()];
            c.extend(self.cohort_column.as_deref());
            c
        }
    }

    /// The whole job's ε and δ.
    pub(crate) fn release_cost(&self) -> Cost {
        Cost {
            epsilon: self.dp.epsilon,
            delta: self.dp.delta,
            mechanism: self.dp.mechanism.label("lift"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use parley_proto::{DpMechanism, DpParams, Participant, PsiRole};

    use super::*;

    fn spec(edit: impl FnOnce(&mut LiftParams, &mut Vec<Participant>)) -> JobSpec {
        let mut p = LiftParams {
            arm_column: "arm".into(),
            test_label: "test".into(),
            control_label: "control".into(),
            cohort_column: "region".into(),
            cohorts: vec!["north".into(), "south".into()],
            conversion_column: "conversions".into(),
            max_conversions: 1,
            value_column: "revenue".into(),
            max_value: 500.0,
            decimals: 2,
            squares_unit: 100.0,
            dp: Some(DpParams {
                epsilon: 1.0,
                mechanism: DpMechanism::Laplace as i32,
                delta: 0.0,
            }),
            max_records_per_identifier: 2,
            profile: String::new(),
            min_cell: 100,
            window_start: "2026-11-01".into(),
            window_end: "2026-11-29".into(),
            spend: 25_000.0,
        };
        let party = |node: &str, role: PsiRole| Participant {
            node: node.into(),
            dataset: "d".into(),
            columns: vec!["email".into()],
            psi_role: role as i32,
            value_column: String::new(),
        };
        let mut parts = vec![
            party("publisher", PsiRole::Sender),
            party("brand", PsiRole::Receiver),
        ];
        edit(&mut p, &mut parts);
        JobSpec {
            label: "lift".into(),
            kind: JobKind::Lift as i32,
            participants: parts,
            params: Some(p.into()),
        }
    }

    fn err(edit: impl FnOnce(&mut LiftParams, &mut Vec<Participant>)) -> String {
        Lift::from_spec(&spec(edit)).unwrap_err()
    }

    #[test]
    fn a_valid_job_has_its_cells_columns_and_sensitivities() {
        let k = Lift::from_spec(&spec(|_, _| {})).unwrap();
        assert_eq!((k.p1, k.p2), (0, 1));
        assert_eq!(k.groups(), 4);
        assert_eq!(k.group(Arm::Test, 1), 1);
        assert_eq!(k.group(Arm::Control, 0), 2);
        assert_eq!(k.cell_labels(3), ("control", "south"));
        assert_eq!(k.cell_labels(0), ("test", "north"));
        assert_eq!(
            k.columns(),
            vec![Column::Conversions, Column::Value, Column::ValueSquares]
        );
        // Two records per person: each person moves at most 2 identifiers.
        assert_eq!(k.count_sensitivity(), 2);
        assert_eq!(k.column_sensitivity(Column::Conversions), 2);
        assert_eq!(k.column_sensitivity(Column::Value), 2 * 50_000);
        assert_eq!(k.column_sensitivity(Column::ValueSquares), 2 * 2500);
        assert_eq!(k.square_units(123.0), 151);
        assert_eq!(k.square_units(10_000.0), 2500);
        assert!((k.release_dp().epsilon - 0.25).abs() < 1e-12);
        assert_eq!(k.release_cost().epsilon, 1.0);
        assert_eq!(k.data_columns(0), vec!["arm", "region"]);
        assert_eq!(k.data_columns(1), vec!["conversions", "revenue"]);
        // Counting conversions adds their squares.
        let k = Lift::from_spec(&spec(|p, _| p.max_conversions = 5)).unwrap();
        assert_eq!(k.columns().len(), 4);
        assert_eq!(k.column_bound(Column::ConversionSquares), 25);
        assert!((k.release_dp().epsilon - 0.2).abs() < 1e-12);
        // Without cohorts: one cell per arm.
        let k = Lift::from_spec(&spec(|p, _| {
            p.cohort_column.clear();
            p.cohorts.clear();
        }))
        .unwrap();
        assert_eq!(k.groups(), 2);
        assert_eq!(k.cell_labels(1), ("control", ""));
    }

    #[test]
    fn the_spec_round_trips() {
        let s = spec(|_, _| {});
        let k = Lift::from_spec(&s).unwrap();
        let mut out = JobSpec {
            participants: s.participants.clone(),
            ..Default::default()
        };
        k.write_spec(&mut out);
        assert_eq!(Lift::from_spec(&out).unwrap(), k);
        assert_eq!(out.params, s.params);
    }

    #[test]
    fn bad_jobs_are_refused_with_the_field_named() {
        let cases: Vec<(String, &str)> = vec![
            (err(|p, _| p.dp = None), "lift.dp"),
            (
                err(|p, _| p.test_label = "control".into()),
                "different labels",
            ),
            (err(|p, _| p.cohorts.clear()), "lift.cohorts"),
            (
                err(|p, _| p.cohorts = vec!["a".into(), "a".into()]),
                "declared twice",
            ),
            (
                err(|p, _| {
                    p.cohort_column.clear();
                }),
                "set lift.cohort_column",
            ),
            (err(|p, _| p.max_conversions = 0), "lift.max_conversions"),
            (err(|p, _| p.max_value = -1.0), "lift.max_value"),
            (err(|p, _| p.squares_unit = 0.0), "lift.squares_unit"),
            (err(|p, _| p.squares_unit = 1e-12), "raise squares_unit"),
            (err(|p, _| p.window_end = "2026-10-01".into()), "not after"),
            (err(|p, _| p.window_start = "yesterday".into()), "ISO 8601"),
            (err(|p, _| p.spend = f64::NAN), "lift.spend"),
            (
                err(|p, _| p.value_column = "conversions".into()),
                "same column",
            ),
            (
                err(|_, q| q[0].columns.push("phone".into())),
                "exactly one identifier column",
            ),
            (
                err(|_, q| q[1].psi_role = PsiRole::Sender as i32),
                "a lift job needs exactly",
            ),
            (
                err(|p, _| p.max_records_per_identifier = 5000),
                "max_records_per_identifier",
            ),
        ];
        for (e, want) in cases {
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut s = spec(|_, _| {});
        s.params = None;
        assert!(Lift::from_spec(&s).unwrap_err().contains("[lift] table"));
    }
}
