//! PSI match and cardinality: two nodes, a receiver and a sender (ECDH-PSI in
//! `parley_crypto::psi`).
//!
//! * `match`: the receiver learns which of its records are in the intersection;
//! * `cardinality`: the receiver learns only how many are.
//!
//! The receiver computes the result and sends it to the coordinator; with `[psi.dp]` the
//! released count is noised (discrete Laplace or Gaussian) and both datasets pay its ε.
//!
//! # The privacy unit is the person
//! A DP count is calibrated to the most one person can move it. The receiver keeps at most
//! `max_records_per_identifier` (m) of its records per identifier and per person, and the
//! sender at most one identifier per declared identifier column (k) per person, so adding or
//! removing one person at the receiver moves the count by at most m, and at the sender (k
//! identifiers, each in at most m receiver records) by at most k·m: the count's sensitivity
//! ([`Psi::count_sensitivity`]). A DP job therefore names the sender's columns, so that both
//! sides derive the same k.
//!
//! Every PSI-family job (all modes) names the identifier normalisation profile both nodes must
//! have prepared their datasets with (`profile`, default `google`; [`Psi::profile`]); a node
//! under another profile refuses the offer, since the same person would hash differently.
//!
//! The job file's `[psi]` table is shared with intersection-sum (`mode = "sum"`, see
//! [`crate::kinds::psi_sum`]), so [`check_pair`] checks the parts both read: the table, the
//! mode, the two participants and their roles.

use parley_crypto::normalize::Profile;
use parley_proto::job_spec::Params;
use parley_proto::{JobKind, JobSpec, PsiMode as PbPsiMode, PsiParams, PsiRole};

use crate::job::{Cost, Role};
use crate::limits::MAX_RECORDS_PER_IDENTIFIER;
use crate::params::{Bounds, Dp, wrong_params};

/// What the receiver learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Which of its records are in the intersection.
    Match,
    /// How many of its records are in the intersection.
    Cardinality,
}

impl Mode {
    /// The kind's name in node policies: `psi_match` or `psi_cardinality`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Match => "psi_match",
            Mode::Cardinality => "psi_cardinality",
        }
    }

    /// The mode in `parley_crypto::psi` terms.
    pub fn crypto(self) -> parley_crypto::psi::Mode {
        match self {
            Mode::Match => parley_crypto::psi::Mode::Match,
            Mode::Cardinality => parley_crypto::psi::Mode::Cardinality,
        }
    }

    /// To the wire.
    pub fn proto(self) -> PbPsiMode {
        match self {
            Mode::Match => PbPsiMode::Match,
            Mode::Cardinality => PbPsiMode::Cardinality,
        }
    }
}

/// A PSI match or cardinality job.
#[derive(Debug, Clone, PartialEq)]
pub struct Psi {
    /// What the receiver learns.
    pub mode: Mode,
    /// Fewer intersecting records than this suppress the result (0 = off).
    pub min_intersection: u64,
    /// Noise on the released count (`None` = the exact count).
    pub dp: Option<Dp>,
    /// Index of the receiver among the participants.
    pub receiver: usize,
    /// Index of the sender among the participants.
    pub sender: usize,
    /// The contribution bound of a DP job (see the module docs).
    pub bound: Contribution,
    /// The identifier normalisation profile both nodes must use.
    pub profile: Profile,
}

/// How much one person can contribute to a DP PSI release (module docs of [`crate::kinds::psi`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// The receiver keeps at most this many of its records per identifier and per person.
    pub max_records_per_identifier: u32,
    /// The number of identifier columns the sender matches on (0 for an exact job, which
    /// may leave them to the sender's dataset).
    pub sender_columns: u32,
}

impl Contribution {
    /// The most one person moves a count of matched records: m · max(k, 1).
    pub fn count_sensitivity(&self) -> u64 {
        u64::from(self.max_records_per_identifier.max(1)) * u64::from(self.sender_columns.max(1))
    }

    /// The most one person moves a count of matched identifiers (sum mode, where P2 has
    /// one identifier per record): at most m of its own, or k of the sender's.
    pub fn identifier_sensitivity(&self) -> u64 {
        u64::from(
            self.max_records_per_identifier
                .max(self.sender_columns)
                .max(1),
        )
    }
}

/// What [`check_pair`] establishes about a PSI-family spec.
pub(crate) struct Pair<'a> {
    pub(crate) psi: &'a PsiParams,
    pub(crate) dp: Option<Dp>,
    pub(crate) count_dp: Option<Dp>,
    pub(crate) receiver: usize,
    pub(crate) sender: usize,
    pub(crate) bound: Contribution,
    pub(crate) profile: Profile,
}

impl Psi {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<Psi, String> {
        let pair = check_pair(spec)?;
        let mode = match pair.psi.mode() {
            PbPsiMode::Match => Mode::Match,
            PbPsiMode::Cardinality => Mode::Cardinality,
            // check_pair refuses an unset mode; sum mode is PsiSum.
            PbPsiMode::Sum | PbPsiMode::Unspecified => {
                return Err("psi.mode: set mode = \"match\" or \"cardinality\"".into());
            }
        };
        Ok(Psi {
            mode,
            min_intersection: pair.psi.min_intersection,
            dp: pair.dp,
            receiver: pair.receiver,
            sender: pair.sender,
            bound: pair.bound,
            profile: pair.profile,
        })
    }

    /// The most one person moves the released count (see the module docs).
    pub fn count_sensitivity(&self) -> u64 {
        self.bound.count_sensitivity()
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Psi as i32;
        spec.params = Some(
            PsiParams {
                mode: self.mode.proto() as i32,
                min_intersection: self.min_intersection,
                dp: self.dp.as_ref().map(Dp::proto),
                max_records_per_identifier: if self.dp.is_some() {
                    self.bound.max_records_per_identifier
                } else {
                    0
                },
                profile: profile_name(self.profile),
                ..Default::default()
            }
            .into(),
        );
        set_roles(spec, self.receiver, self.sender);
    }

    pub(crate) fn role(&self, index: usize) -> Role {
        if index == self.receiver {
            Role::PsiReceiver
        } else {
            Role::PsiSender
        }
    }

    /// Match and cardinality charge only when the count is noised.
    pub(crate) fn release_cost(&self) -> Option<Cost> {
        let dp = self.dp?;
        let what = match self.mode {
            Mode::Match => "psi_match_count",
            Mode::Cardinality => "psi_cardinality",
        };
        Some(Cost {
            epsilon: dp.epsilon,
            delta: dp.delta,
            mechanism: dp.mechanism.label(what),
        })
    }
}

/// The wire spelling of `profile`: empty for the default, so that specs written before
/// profiles existed keep their meaning and their hash.
pub(crate) fn profile_name(profile: Profile) -> String {
    if profile == Profile::default() {
        String::new()
    } else {
        profile.name().to_owned()
    }
}

/// The profile a spec names (empty = the default, `google`).
pub(crate) fn check_profile(name: &str) -> Result<Profile, String> {
    if name.is_empty() {
        return Ok(Profile::default());
    }
    Profile::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        format!(
            "psi.profile: unknown profile '{}'; use one of {}",
            name.escape_debug(),
            known.join(", ")
        )
    })
}

/// Writes the PSI roles of the two participants.
pub(crate) fn set_roles(spec: &mut JobSpec, receiver: usize, sender: usize) {
    for (i, role) in [(receiver, PsiRole::Receiver), (sender, PsiRole::Sender)] {
        if let Some(p) = spec.participants.get_mut(i) {
            p.psi_role = role as i32;
        }
    }
}

/// Checks the PSI-family parts of a spec (every mode).
pub(crate) fn check_pair(spec: &JobSpec) -> Result<Pair<'_>, String> {
    let psi = match &spec.params {
        Some(Params::Psi(p)) => p,
        other => {
            return Err(wrong_params(
                "psi",
                other.as_ref(),
                "psi: a psi job needs a [psi] table with mode = \"match\", \"cardinality\" or \
                 \"sum\"",
            ));
        }
    };
    let mode = match PbPsiMode::try_from(psi.mode) {
        Ok(m @ (PbPsiMode::Match | PbPsiMode::Cardinality | PbPsiMode::Sum)) => m,
        Ok(PbPsiMode::Unspecified) => {
            return Err(
                "psi.mode: not set; set mode = \"match\", \"cardinality\" or \"sum\"".into(),
            );
        }
        Err(_) => {
            return Err(format!(
                "psi.mode: unknown mode number {}; use \"match\", \"cardinality\" or \"sum\"",
                psi.mode
            ));
        }
    };
    let dp = psi
        .dp
        .as_ref()
        .map(|dp| Dp::from_proto(dp, "psi.dp"))
        .transpose()?;
    let count_dp = psi
        .count_dp
        .as_ref()
        .map(|dp| Dp::from_proto(dp, "psi.count_dp"))
        .transpose()?;
    if mode == PbPsiMode::Sum {
        if psi.dp.is_none() || psi.count_dp.is_none() {
            return Err(
                "psi: sum mode releases only noisy values; set [psi.dp] (noise on the \
                        sum) and [psi.count_dp] (noise on the count), each with an epsilon"
                    .into(),
            );
        }
        // The single-column form; `[[psi.columns]]` is checked by `PsiSum`.
        if psi.columns.is_empty() {
            Bounds::check(psi.lower, psi.upper, psi.decimals, "psi")?;
            if psi.lower < 0.0 {
                return Err("psi.lower: sum mode sums non-negative values; set lower >= 0".into());
            }
        }
    } else {
        if psi.count_dp.is_some() {
            return Err(
                "psi.count_dp: only sum mode takes count_dp; use [psi.dp] to noise the \
                        count of a match or cardinality job"
                    .into(),
            );
        }
        if psi.lower != 0.0 || psi.upper != 0.0 {
            return Err("psi.lower/upper: clamping bounds apply to sum mode only".into());
        }
        if !psi.columns.is_empty() {
            return Err(
                "psi.columns: value columns apply to sum mode only; remove [[psi.columns]] or \
                 set mode = \"sum\""
                    .into(),
            );
        }
    }
    let (receiver, sender) = two_parties(spec, "psi")?;
    for (i, p) in spec.participants.iter().enumerate() {
        let n = i + 1;
        let sum_receiver = mode == PbPsiMode::Sum && p.psi_role() == PsiRole::Receiver;
        if sum_receiver {
            if psi.columns.is_empty() && p.value_column.trim().is_empty() {
                return Err(format!(
                    "participant {n} (node '{}'): value_column: sum mode needs the receiver's \
                     value column (e.g. value_column = \"amount\"), or several in \
                     [[psi.columns]]",
                    p.node
                ));
            }
            if p.columns.len() != 1 {
                return Err(format!(
                    "participant {n} (node '{}'): columns: sum mode needs exactly one \
                     identifier column for the receiver, so that no value is counted twice \
                     (e.g. columns = [\"email\"])",
                    p.node
                ));
            }
        } else if !p.value_column.is_empty() {
            return Err(format!(
                "participant {n} (node '{}'): value_column: only the receiver of a sum-mode \
                 job names a value column",
                p.node
            ));
        }
    }
    let bound = check_bound(spec, psi, dp.is_some(), sender)?;
    let profile = check_profile(&psi.profile)?;
    Ok(Pair {
        profile,
        psi,
        dp,
        count_dp,
        receiver,
        sender,
        bound,
    })
}

/// Checks that a two-party spec (`kind` names it in messages) has two different nodes, one
/// with role `receiver` and one with role `sender`; returns (receiver, sender) indices.
pub(crate) fn two_parties(spec: &JobSpec, kind: &str) -> Result<(usize, usize), String> {
    if spec.participants.len() != 2 {
        return Err(format!(
            "participants: a {kind} job needs exactly 2 participants (one receiver, one sender), \
             found {}",
            spec.participants.len()
        ));
    }
    let (a, b) = (&spec.participants[0], &spec.participants[1]);
    if a.node == b.node {
        return Err(format!(
            "participants: both participants are node '{}'; a {kind} job runs between two \
             different nodes",
            a.node
        ));
    }
    for (i, p) in spec.participants.iter().enumerate() {
        match PsiRole::try_from(p.psi_role) {
            Ok(PsiRole::Receiver | PsiRole::Sender) => {}
            Ok(PsiRole::Unspecified) => {
                return Err(format!(
                    "participant {} (node '{}'): role is not set; set role = \"receiver\" or \
                     \"sender\"",
                    i + 1,
                    p.node
                ));
            }
            Err(_) => {
                return Err(format!(
                    "participant {} (node '{}'): unknown role number {}; use \"receiver\" or \
                     \"sender\"",
                    i + 1,
                    p.node,
                    p.psi_role
                ));
            }
        }
    }
    let receivers = spec
        .participants
        .iter()
        .filter(|p| p.psi_role() == PsiRole::Receiver)
        .count();
    if receivers != 1 {
        let role = if receivers == 0 { "sender" } else { "receiver" };
        return Err(format!(
            "participants: both participants have role = \"{role}\"; a {kind} job needs exactly \
             one \"receiver\" (who learns the result) and one \"sender\""
        ));
    }
    let receiver = spec
        .participants
        .iter()
        .position(|p| p.psi_role() == PsiRole::Receiver)
        .unwrap_or(0);
    Ok((receiver, 1 - receiver))
}

/// The contribution bound of a PSI-family job: `max_records_per_identifier` (DP jobs only,
/// default 1) and the number of the sender's identifier columns, which a DP job must list.
fn check_bound(
    spec: &JobSpec,
    psi: &PsiParams,
    dp: bool,
    sender: usize,
) -> Result<Contribution, String> {
    let m = psi.max_records_per_identifier;
    if !dp {
        if m != 0 {
            return Err(
                "psi.max_records_per_identifier: only a DP job (with [psi.dp]) bounds \
                        contributions; remove it or add [psi.dp]"
                    .into(),
            );
        }
        return Ok(Contribution {
            max_records_per_identifier: 0,
            sender_columns: 0,
        });
    }
    if m > MAX_RECORDS_PER_IDENTIFIER {
        return Err(format!(
            "psi.max_records_per_identifier: at most {MAX_RECORDS_PER_IDENTIFIER}, got {m}; \
             the noise grows with it"
        ));
    }
    let p = &spec.participants[sender];
    if p.columns.is_empty() {
        return Err(format!(
            "participant {} (node '{}'): columns: a DP job must list the sender's identifier \
             columns (e.g. columns = [\"email\", \"phone\"]): the noise is scaled by how many \
             there are, and both nodes must derive the same number",
            sender + 1,
            p.node
        ));
    }
    Ok(Contribution {
        max_records_per_identifier: m.max(1),
        sender_columns: u32::try_from(p.columns.len()).unwrap_or(u32::MAX),
    })
}
