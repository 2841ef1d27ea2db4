//! Analyst job files (TOML) and job-spec validation.
//!
//! An analyst describes a job in a small TOML file and submits it with `parleyctl submit`.
//! [`parse_job_toml`] turns the text into a [`JobSpec`] and checks it with [`validate_spec`],
//! the same check the coordinator applies to every submitted spec (the coordinator must not
//! trust the CLI to have run it). Unknown fields are rejected, so a typo never silently changes
//! a job.
//!
//! ```toml
//! label = "brand x publisher overlap"
//! kind = "psi"                       # psi
//! [psi]
//! mode = "match"                     # match | cardinality
//! min_intersection = 100             # optional, default 0 (off)
//! [[participants]]
//! node = "brand"
//! dataset = "crm"
//! role = "receiver"                  # receiver | sender
//! columns = ["email", "phone"]       # optional: identifier columns; default all
//! [[participants]]
//! node = "publisher"
//! dataset = "subscribers"
//! role = "sender"
//! ```
//!
//! Validation covers the shape of a job only; whether a node *allows* it (partners, datasets,
//! columns, thresholds) is each node's local policy decision.

use std::collections::HashSet;
use std::path::Path;

use parley_proto::{JobKind, JobSpec, Participant, PsiMode, PsiParams, PsiRole};
use serde::Deserialize;

use crate::CoordError;

/// Longest accepted job label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Longest accepted node or dataset name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest accepted column name, in bytes.
pub const MAX_COLUMN_BYTES: usize = 128;
/// Most columns a participant may name.
pub const MAX_COLUMNS: usize = 64;

/// A job file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(default)]
    label: String,
    kind: KindToml,
    psi: Option<PsiToml>,
    #[serde(default)]
    participants: Vec<ParticipantToml>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindToml {
    Psi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PsiToml {
    mode: ModeToml,
    #[serde(default)]
    min_intersection: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeToml {
    Match,
    Cardinality,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantToml {
    node: String,
    dataset: String,
    role: Option<RoleToml>,
    #[serde(default)]
    columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RoleToml {
    Receiver,
    Sender,
}

/// Parses and validates a job file. `origin` names where the text came from (usually the
/// file name) and appears in error messages.
pub fn parse_job_toml(text: &str, origin: &str) -> Result<JobSpec, CoordError> {
    let file: JobFile = toml::from_str(text).map_err(|e| CoordError::JobFileSyntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let spec = JobSpec {
        label: file.label,
        kind: match file.kind {
            KindToml::Psi => JobKind::Psi,
        } as i32,
        participants: file
            .participants
            .into_iter()
            .map(|p| Participant {
                node: p.node,
                dataset: p.dataset,
                columns: p.columns,
                psi_role: match p.role {
                    None => PsiRole::Unspecified,
                    Some(RoleToml::Receiver) => PsiRole::Receiver,
                    Some(RoleToml::Sender) => PsiRole::Sender,
                } as i32,
            })
            .collect(),
        psi: file.psi.map(|psi| PsiParams {
            mode: match psi.mode {
                ModeToml::Match => PsiMode::Match,
                ModeToml::Cardinality => PsiMode::Cardinality,
            } as i32,
            min_intersection: psi.min_intersection,
        }),
    };
    validate_spec(&spec).map_err(|reason| CoordError::JobFileInvalid {
        origin: origin.to_string(),
        reason,
    })?;
    Ok(spec)
}

/// Reads, parses and validates the job file at `path`.
pub fn load_job_file(path: &Path) -> Result<JobSpec, CoordError> {
    let text = std::fs::read_to_string(path).map_err(|e| CoordError::JobFileRead {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_job_toml(&text, &path.display().to_string())
}

/// Checks that `spec` describes a job the coordinator can run. The error says what is wrong
/// in job-file terms (field names as in the TOML file) and how to fix it.
///
/// Rules: the label is at most [`MAX_LABEL_BYTES`] bytes without control characters; kind
/// `psi` needs `[psi]` with a mode and exactly two participants on distinct nodes, one
/// `receiver` and one `sender`; node and dataset names match `[a-z0-9_-]{1,64}`; column names
/// are non-empty, distinct, printable and at most [`MAX_COLUMN_BYTES`] bytes, at most
/// [`MAX_COLUMNS`] per participant.
pub fn validate_spec(spec: &JobSpec) -> Result<(), String> {
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
        validate_participant(i, p)?;
    }
    match JobKind::try_from(spec.kind) {
        Ok(JobKind::Psi) => validate_psi(spec),
        Ok(JobKind::Unspecified) => Err("kind: not set; set kind = \"psi\"".into()),
        Err(_) => Err(format!(
            "kind: unknown kind number {}; this coordinator runs kind = \"psi\"",
            spec.kind
        )),
    }
}

/// Checks names and columns of participant number `i` (0-based).
fn validate_participant(i: usize, p: &Participant) -> Result<(), String> {
    let n = i + 1;
    check_name(&p.node).map_err(|e| format!("participant {n}: node {e}"))?;
    check_name(&p.dataset)
        .map_err(|e| format!("participant {n} (node '{}'): dataset {e}", p.node))?;
    if p.columns.len() > MAX_COLUMNS {
        return Err(format!(
            "participant {n} (node '{}'): {} columns is too many; name at most {MAX_COLUMNS}",
            p.node,
            p.columns.len()
        ));
    }
    let mut seen = HashSet::new();
    for column in &p.columns {
        let bad = if column.trim().is_empty() {
            Some("an empty column name")
        } else if column.len() > MAX_COLUMN_BYTES {
            Some("a column name longer than 128 bytes")
        } else if column.chars().any(char::is_control) {
            Some("a column name with control characters")
        } else {
            None
        };
        if let Some(bad) = bad {
            return Err(format!(
                "participant {n} (node '{}'): columns: {bad}; name each identifier column as \
                 in the dataset's CSV header, or leave columns out to use all of them",
                p.node
            ));
        }
        if !seen.insert(column.as_str()) {
            return Err(format!(
                "participant {n} (node '{}'): columns: '{column}' is listed twice",
                p.node
            ));
        }
    }
    Ok(())
}

/// Checks a node or dataset name: `[a-z0-9_-]{1,64}`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty; set it to the name the node uses".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "name '{}…' is too long; names have at most {MAX_NAME_BYTES} characters",
            name.chars().take(16).collect::<String>()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "name '{}' has characters other than a-z, 0-9, '_' and '-'",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Checks the PSI-specific parts of a spec.
fn validate_psi(spec: &JobSpec) -> Result<(), String> {
    let Some(psi) = &spec.psi else {
        return Err(
            "psi: a psi job needs a [psi] table with mode = \"match\" or \
                    \"cardinality\""
                .into(),
        );
    };
    match PsiMode::try_from(psi.mode) {
        Ok(PsiMode::Match | PsiMode::Cardinality) => {}
        Ok(PsiMode::Unspecified) => {
            return Err("psi.mode: not set; set mode = \"match\" or \"cardinality\"".into());
        }
        Err(_) => {
            return Err(format!(
                "psi.mode: unknown mode number {}; use \"match\" or \"cardinality\"",
                psi.mode
            ));
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
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MATCH_EXAMPLE: &str = include_str!("../examples/job-match.toml");
    const CARDINALITY_EXAMPLE: &str = include_str!("../examples/job-cardinality.toml");

    const MINIMAL: &str = r#"
label = "t"
kind = "psi"
[psi]
mode = "match"
[[participants]]
node = "brand"
dataset = "crm"
role = "receiver"
[[participants]]
node = "publisher"
dataset = "subscribers"
role = "sender"
"#;

    /// Parses `text` and returns the validation reason (panics on success or syntax errors).
    fn invalid(text: &str) -> String {
        match parse_job_toml(text, "test.toml") {
            Err(CoordError::JobFileInvalid { origin, reason }) => {
                assert_eq!(origin, "test.toml");
                reason
            }
            other => panic!("expected JobFileInvalid, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> String {
        match parse_job_toml(text, "test.toml") {
            Err(e @ CoordError::JobFileSyntax { .. }) => e.to_string(),
            other => panic!("expected JobFileSyntax, got {other:?}"),
        }
    }

    #[test]
    fn match_example_parses() {
        let spec = parse_job_toml(MATCH_EXAMPLE, "job-match.toml").unwrap();
        assert_eq!(spec.kind(), JobKind::Psi);
        let psi = spec.psi.unwrap();
        assert_eq!(psi.mode(), PsiMode::Match);
        assert_eq!(psi.min_intersection, 100);
        assert_eq!(spec.participants.len(), 2);
        let r = &spec.participants[0];
        assert_eq!(
            (r.node.as_str(), r.dataset.as_str(), r.psi_role()),
            ("brand", "crm", PsiRole::Receiver)
        );
        assert_eq!(r.columns, ["email", "phone"]);
        let s = &spec.participants[1];
        assert_eq!(
            (s.node.as_str(), s.dataset.as_str(), s.psi_role()),
            ("publisher", "subscribers", PsiRole::Sender)
        );
        assert!(s.columns.is_empty());
        assert!(!spec.label.is_empty());
    }

    #[test]
    fn cardinality_example_parses() {
        let spec = parse_job_toml(CARDINALITY_EXAMPLE, "job-cardinality.toml").unwrap();
        let psi = spec.psi.unwrap();
        assert_eq!(psi.mode(), PsiMode::Cardinality);
        assert_eq!(spec.participants.len(), 2);
        let roles: Vec<_> = spec.participants.iter().map(|p| p.psi_role()).collect();
        assert!(roles.contains(&PsiRole::Receiver) && roles.contains(&PsiRole::Sender));
    }

    #[test]
    fn minimal_defaults() {
        let spec = parse_job_toml(MINIMAL, "m.toml").unwrap();
        assert_eq!(spec.psi.unwrap().min_intersection, 0);
        assert!(spec.participants.iter().all(|p| p.columns.is_empty()));
        // Label is optional.
        let spec = parse_job_toml(&MINIMAL.replace("label = \"t\"", ""), "m.toml").unwrap();
        assert_eq!(spec.label, "");
    }

    #[test]
    fn unknown_fields_and_values_are_syntax_errors() {
        let msg = syntax(&MINIMAL.replace("label", "lable"));
        assert!(msg.contains("lable") && msg.contains("test.toml"), "{msg}");
        let msg = syntax(&MINIMAL.replace("mode = \"match\"", "mode = \"match\"\nepsilon = 1"));
        assert!(msg.contains("epsilon"), "{msg}");
        let msg = syntax(&MINIMAL.replace("dataset = \"crm\"", "dataset = \"crm\"\ncolumn = []"));
        assert!(msg.contains("column"), "{msg}");
        syntax(&MINIMAL.replace("kind = \"psi\"", "kind = \"dp\""));
        syntax(&MINIMAL.replace("kind = \"psi\"", ""));
        syntax(&MINIMAL.replace("\"match\"", "\"sum\""));
        syntax(&MINIMAL.replace("\"sender\"", "\"observer\""));
        syntax(&MINIMAL.replace("node = \"brand\"", ""));
        syntax("this is not toml");
    }

    #[test]
    fn psi_table_and_mode_are_required() {
        let no_psi = MINIMAL.replace("[psi]\nmode = \"match\"\n", "");
        assert!(invalid(&no_psi).starts_with("psi:"));
        let mut spec = parse_job_toml(MINIMAL, "m").unwrap();
        spec.psi.as_mut().unwrap().mode = 0;
        assert!(
            validate_spec(&spec)
                .unwrap_err()
                .starts_with("psi.mode: not set")
        );
        spec.psi.as_mut().unwrap().mode = 99;
        assert!(validate_spec(&spec).unwrap_err().contains("unknown mode"));
    }

    #[test]
    fn kind_must_be_known() {
        let mut spec = parse_job_toml(MINIMAL, "m").unwrap();
        spec.kind = 0;
        assert!(
            validate_spec(&spec)
                .unwrap_err()
                .starts_with("kind: not set")
        );
        spec.kind = 42;
        assert!(validate_spec(&spec).unwrap_err().contains("unknown kind"));
    }

    #[test]
    fn exactly_two_participants() {
        let one = MINIMAL
            .split("[[participants]]")
            .take(2)
            .collect::<Vec<_>>();
        let one = one.join("[[participants]]");
        assert!(invalid(&one).contains("exactly 2 participants"));
        let three = format!("{MINIMAL}[[participants]]\nnode = \"c\"\ndataset = \"d\"\n");
        assert!(invalid(&three).contains("found 3"));
        let none = MINIMAL
            .split("[[participants]]")
            .next()
            .unwrap()
            .to_string();
        assert!(invalid(&none).contains("found 0"));
    }

    #[test]
    fn nodes_must_differ() {
        let same = MINIMAL.replace("node = \"publisher\"", "node = \"brand\"");
        assert!(invalid(&same).contains("both participants are node 'brand'"));
    }

    #[test]
    fn one_receiver_and_one_sender() {
        let two_senders = MINIMAL.replace("\"receiver\"", "\"sender\"");
        assert!(invalid(&two_senders).contains("role = \"sender\""));
        let two_receivers = MINIMAL.replace("\"sender\"", "\"receiver\"");
        assert!(invalid(&two_receivers).contains("role = \"receiver\""));
        let missing = MINIMAL.replace("role = \"sender\"\n", "");
        let reason = invalid(&missing);
        assert!(
            reason.contains("participant 2 (node 'publisher'): role is not set"),
            "{reason}"
        );
    }

    #[test]
    fn names_are_checked() {
        for (from, to, expect) in [
            (
                "node = \"brand\"",
                "node = \"\"",
                "participant 1: node name is empty",
            ),
            (
                "node = \"brand\"",
                "node = \"Brand\"",
                "characters other than",
            ),
            (
                "node = \"brand\"",
                "node = \"a b\"",
                "characters other than",
            ),
            (
                "dataset = \"crm\"",
                "dataset = \"\"",
                "dataset name is empty",
            ),
            (
                "dataset = \"crm\"",
                "dataset = \"crm.csv\"",
                "characters other than",
            ),
        ] {
            let reason = invalid(&MINIMAL.replace(from, to));
            assert!(reason.contains(expect), "{to}: {reason}");
        }
        let long = "a".repeat(65);
        let reason =
            invalid(&MINIMAL.replace("dataset = \"crm\"", &format!("dataset = \"{long}\"")));
        assert!(reason.contains("too long"), "{reason}");
        let ok = "a".repeat(64);
        parse_job_toml(
            &MINIMAL.replace("dataset = \"crm\"", &format!("dataset = \"{ok}\"")),
            "m",
        )
        .unwrap();
        parse_job_toml(&MINIMAL.replace("brand", "brand_2-x"), "m").unwrap();
    }

    #[test]
    fn columns_are_checked() {
        let with = |cols: &str| {
            MINIMAL.replace(
                "role = \"receiver\"",
                &format!("role = \"receiver\"\ncolumns = {cols}"),
            )
        };
        parse_job_toml(&with("[\"email\", \"Phone Number\"]"), "m").unwrap();
        assert!(invalid(&with("[\"email\", \"\"]")).contains("empty column name"));
        assert!(invalid(&with("[\" \"]")).contains("empty column name"));
        assert!(invalid(&with("[\"email\", \"email\"]")).contains("listed twice"));
        assert!(invalid(&with("[\"a\\tb\"]")).contains("control characters"));
    }

    #[test]
    fn label_is_bounded() {
        let long = MINIMAL.replace("label = \"t\"", &format!("label = \"{}\"", "x".repeat(300)));
        assert!(invalid(&long).starts_with("label:"));
        let multiline = MINIMAL.replace("label = \"t\"", "label = \"a\\nb\"");
        assert!(invalid(&multiline).contains("control characters"));
    }

    #[test]
    fn load_reports_missing_files() {
        let err = load_job_file(Path::new("/nonexistent/job.toml")).unwrap_err();
        assert!(matches!(err, CoordError::JobFileRead { .. }));
        assert!(err.to_string().contains("/nonexistent/job.toml"));
    }
}
