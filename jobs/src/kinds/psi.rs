//! PSI match and cardinality: two nodes, a receiver and a sender (ECDH-PSI in
//! `parley_crypto::psi`).
//!
//! * `match`: the receiver learns which of its records are in the intersection;
//! * `cardinality`: the receiver learns only how many are.
//!
//! The receiver computes the result and sends it to the coordinator; with `[psi.dp]` the
//! released count is noised (discrete Laplace or Gaussian) and both datasets pay its ε.
//!
//! The job file's `[psi]` table is shared with intersection-sum (`mode = "sum"`, see
//! [`crate::kinds::psi_sum`]), so [`check_pair`] checks the parts both read: the table, the
//! mode, the two participants and their roles.

use parley_proto::job_spec::Params;
use parley_proto::{JobKind, JobSpec, PsiMode as PbPsiMode, PsiParams, PsiRole};

use crate::job::{Cost, Role};
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
}

/// What [`check_pair`] establishes about a PSI-family spec.
pub(crate) struct Pair<'a> {
    pub(crate) psi: &'a PsiParams,
    pub(crate) dp: Option<Dp>,
    pub(crate) count_dp: Option<Dp>,
    pub(crate) receiver: usize,
    pub(crate) sender: usize,
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
        })
    }

    pub(crate) fn write_spec(&self, spec: &mut JobSpec) {
        spec.kind = JobKind::Psi as i32;
        spec.params = Some(
            PsiParams {
                mode: self.mode.proto() as i32,
                min_intersection: self.min_intersection,
                dp: self.dp.as_ref().map(Dp::proto),
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

/// Writes the PSI roles of the two participants.
pub(crate) fn set_roles(spec: &mut JobSpec, receiver: usize, sender: usize) {
    for (i, role) in [(receiver, PsiRole::Receiver), (sender, PsiRole::Sender)] {
        if let Some(p) = spec.participants.get_mut(i) {
            p.psi_role = role as i32;
        }
    }
}

/// Checks the PSI-family parts of a spec (every mode).
/// Checks the PSI-specific parts of a spec.
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
        Bounds::check(psi.lower, psi.upper, psi.decimals, "psi")?;
        if psi.lower < 0.0 {
            return Err("psi.lower: sum mode sums non-negative values; set lower >= 0".into());
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
    }
    if spec.participants.len() != 2 {
        return Err(format!(
            "participants: a psi job needs exactly 2 participants (one receiver, one sender), \
             found {}",
            spec.participants.len()
        ));
    }
    let (a, b) = (&spec.participants[0], &spec.participants[1]);
    if a.node == b.node {
        return Err(format!(
            "participants: both participants are node '{}'; a psi job runs between two \
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
            "participants: both participants have role = \"{role}\"; a psi job needs exactly \
             one \"receiver\" (who learns the result) and one \"sender\""
        ));
    }
    for (i, p) in spec.participants.iter().enumerate() {
        let n = i + 1;
        let sum_receiver = mode == PbPsiMode::Sum && p.psi_role() == PsiRole::Receiver;
        if sum_receiver {
            if p.value_column.trim().is_empty() {
                return Err(format!(
                    "participant {n} (node '{}'): value_column: sum mode needs the receiver's \
                     value column (e.g. value_column = \"amount\")",
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
    let receiver = spec
        .participants
        .iter()
        .position(|p| p.psi_role() == PsiRole::Receiver)
        .unwrap_or(0);
    Ok(Pair {
        psi,
        dp,
        count_dp,
        receiver,
        sender: 1 - receiver,
    })
}
