//! Match-rate diagnostics: per identifier column, how many values were valid, how many
//! repeated a value already seen in the column, and how many normalisation changed, and why.
//!
//! A marketer whose match rate is low can read from these counts what to fix upstream (for
//! example "61% of phones are not in E.164", or "5% of emails carry stray whitespace") without
//! anyone seeing an identifier.
//!
//! Guarantees: [`classify`] looks at one raw value and its normalised form and returns a set
//! of [`Change`]s; nothing in this module stores, logs or prints a value, only counts and
//! percentages.
//!
//! What is classified: email, phone and advertising-ID (maid) columns. A sha256 column holds
//! values that were normalised before they were hashed, so only valid, invalid and duplicate
//! counts are reported for it.

use std::fmt;

use parley_crypto::normalize::{IdHash, IdKind, NormalizeError, Normalizer, normalize_maid};

/// One way normalisation changed a value. A value may change in several ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Email: the trimmed value has letters that are not lowercase.
    Case,
    /// Email: the value has leading or trailing whitespace, or inner whitespace that the
    /// profile removes (profiles that only trim keep it, and then it is no change).
    Whitespace,
    /// Email: with case and whitespace undone the value still differs from its normalised
    /// form, i.e. the profile removed dots or a `+suffix` from a Gmail address.
    GmailRules,
    /// Phone: the value is not written exactly as its normalised form (E.164, or E.164
    /// digits under the `meta` profile). Maid: not lowercase hyphenated `8-4-4-4-12`.
    Formatting,
}

impl Change {
    /// Every change, in the order reports list them.
    pub const ALL: [Change; 4] = [
        Change::Case,
        Change::Whitespace,
        Change::GmailRules,
        Change::Formatting,
    ];

    /// The label reports print.
    pub fn label(self) -> &'static str {
        match self {
            Change::Case => "case",
            Change::Whitespace => "whitespace",
            Change::GmailRules => "gmail dots or +suffix",
            Change::Formatting => "formatting",
        }
    }

    fn index(self) -> usize {
        match self {
            Change::Case => 0,
            Change::Whitespace => 1,
            Change::GmailRules => 2,
            Change::Formatting => 3,
        }
    }
}

/// A set of [`Change`]s; empty when normalisation left the value as it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes(u8);

impl Changes {
    /// No change.
    pub const NONE: Changes = Changes(0);

    /// The set holding `changes`.
    pub fn of(changes: &[Change]) -> Changes {
        let mut set = Changes::NONE;
        for c in changes {
            set.insert(*c);
        }
        set
    }

    /// Whether `change` is in the set.
    pub fn contains(self, change: Change) -> bool {
        self.0 & (1 << change.index()) != 0
    }

    /// True if normalisation left the value as it was.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, change: Change) {
        self.0 |= 1 << change.index();
    }
}

/// How normalisation changed `raw`, an identifier of `kind`, into `normalized`.
///
/// The result is empty exactly when `raw == normalized` (for sha256: always empty).
pub fn classify(kind: IdKind, raw: &str, normalized: &str) -> Changes {
    let mut out = Changes::NONE;
    match kind {
        IdKind::Email => {
            let lowered = raw.trim().to_lowercase();
            if lowered != raw.trim() {
                out.insert(Change::Case);
            }
            let spaces = |s: &str| s.chars().filter(|c| c.is_whitespace()).count();
            if raw.trim() != raw || spaces(raw) != spaces(normalized) {
                out.insert(Change::Whitespace);
            }
            // Whitespace is dropped from both sides: what whitespace did is counted above.
            if !visible(&lowered).eq(visible(normalized)) {
                out.insert(Change::GmailRules);
            }
        }
        IdKind::Phone | IdKind::Maid => {
            if raw != normalized {
                out.insert(Change::Formatting);
            }
        }
        IdKind::Sha256 => {}
    }
    out
}

/// The characters of `s` that are not whitespace.
fn visible(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| !c.is_whitespace())
}

/// The [`IdHash`] of a raw identifier (the same as [`Normalizer::identifier`]) and how
/// normalisation changed it.
///
/// # Errors
/// The [`NormalizeError`] of the kind's normalisation.
pub fn identifier(
    normalizer: &Normalizer,
    kind: IdKind,
    raw: &str,
) -> Result<(IdHash, Changes), NormalizeError> {
    let normalized = match kind {
        IdKind::Email => normalizer.normalize_email(raw)?,
        IdKind::Phone => normalizer.normalize_phone(raw)?,
        IdKind::Maid => normalize_maid(raw)?,
        IdKind::Sha256 => return Ok((normalizer.identifier(kind, raw)?, Changes::NONE)),
    };
    let hash = IdHash::of_normalized(&normalized);
    debug_assert_eq!(Ok(hash), normalizer.identifier(kind, raw));
    Ok((hash, classify(kind, raw, &normalized)))
}

/// Counts for one identifier column, over the values of the rows that were loaded. Invalid
/// values are counted in [`LoadReport::bad_identifiers`](crate::dataset::LoadReport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDiagnostics {
    /// Column name.
    pub column: String,
    /// What the column holds.
    pub kind: IdKind,
    /// Values that normalised (blank cells are not counted).
    pub valid: u64,
    /// Valid values whose hash already appeared in this column: `valid` minus the distinct
    /// hashes.
    pub duplicates: u64,
    /// Valid values that normalisation changed in any way, each counted once.
    pub changed: u64,
    /// Valid values changed in each way, indexed like [`Change::ALL`]; a value changed in
    /// two ways counts under both.
    by_change: [u64; 4],
}

impl ColumnDiagnostics {
    /// Empty counts for `column`.
    pub fn new(column: impl Into<String>, kind: IdKind) -> ColumnDiagnostics {
        ColumnDiagnostics {
            column: column.into(),
            kind,
            valid: 0,
            duplicates: 0,
            changed: 0,
            by_change: [0; 4],
        }
    }

    /// Counts one valid value, changed by normalisation in the ways `changes` says.
    pub fn record(&mut self, changes: Changes) {
        self.valid += 1;
        if !changes.is_empty() {
            self.changed += 1;
        }
        for c in Change::ALL {
            if changes.contains(c) {
                self.by_change[c.index()] += 1;
            }
        }
    }

    /// Valid values changed in the way `change` says.
    pub fn changed_by(&self, change: Change) -> u64 {
        self.by_change[change.index()]
    }

    /// The changes this column's kind is classified by.
    pub fn classified_changes(&self) -> &'static [Change] {
        match self.kind {
            IdKind::Email => &[Change::Case, Change::Whitespace, Change::GmailRules],
            IdKind::Phone | IdKind::Maid => &[Change::Formatting],
            IdKind::Sha256 => &[],
        }
    }
}

impl fmt::Display for ColumnDiagnostics {
    /// "38% changed (case 30%, whitespace 5%, gmail dots or +suffix 4%)", percentages of the
    /// valid values, ways that changed nothing left out; empty for a sha256 column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changes = self.classified_changes();
        if changes.is_empty() {
            return Ok(());
        }
        write!(f, "{} changed", Percent(self.changed, self.valid))?;
        let mut first = true;
        for c in changes {
            let n = self.changed_by(*c);
            if n == 0 {
                continue;
            }
            f.write_str(if first { " (" } else { ", " })?;
            first = false;
            write!(f, "{} {}", c.label(), Percent(n, self.valid))?;
        }
        if !first {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// `part` of `whole` as a whole percentage; "<1%" and ">99%" rather than rounding a few
/// values to 0% or 100%.
pub struct Percent(pub u64, pub u64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Percent(part, whole) = *self;
        if part == 0 || whole == 0 {
            return f.write_str("0%");
        }
        if part >= whole {
            return f.write_str("100%");
        }
        let pct = (u128::from(part) * 100 + u128::from(whole) / 2) / u128::from(whole);
        match pct {
            0 => f.write_str("<1%"),
            100.. => f.write_str(">99%"),
            p => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_crypto::normalize::Profile;

    use Change::{Case, Formatting, GmailRules, Whitespace};

    fn google() -> Normalizer {
        Normalizer::new(Profile::Google, "US").expect("normalizer")
    }

    #[test]
    fn messy_values_are_classified() {
        let table: &[(IdKind, &str, &[Change])] = &[
            (IdKind::Email, "alice@example.com", &[]),
            (IdKind::Email, "Alice@Example.com", &[Case]),
            (IdKind::Email, " alice@example.com", &[Whitespace]),
            (IdKind::Email, "alice@example.com\t", &[Whitespace]),
            (IdKind::Email, "ali ce@example.com", &[Whitespace]),
            (IdKind::Email, "john.doe@gmail.com", &[GmailRules]),
            (IdKind::Email, "johndoe+news@gmail.com", &[GmailRules]),
            (IdKind::Email, "johndoe@gmail.com", &[]),
            (
                IdKind::Email,
                " John.Doe+x@GMAIL.com ",
                &[Case, Whitespace, GmailRules],
            ),
            (IdKind::Email, "ÉLISE@example.fr", &[Case]),
            (IdKind::Phone, "+16502530000", &[]),
            (IdKind::Phone, "(650) 253-0000", &[Formatting]),
            (IdKind::Phone, "6502530000", &[Formatting]),
            (IdKind::Phone, " +16502530000", &[Formatting]),
            (IdKind::Phone, "0044 20 7946 0958", &[Formatting]),
            (IdKind::Maid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", &[]),
            (
                IdKind::Maid,
                "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
                &[Formatting],
            ),
            (
                IdKind::Maid,
                "6ba7b8109dad11d180b400c04fd430c8",
                &[Formatting],
            ),
            (IdKind::Sha256, &"A".repeat(64), &[]),
        ];
        let n = google();
        for (kind, raw, expected) in table {
            let (hash, changes) = identifier(&n, *kind, raw).expect("valid");
            assert_eq!(Ok(hash), n.identifier(*kind, raw), "{raw:?}");
            assert_eq!(changes, Changes::of(expected), "{kind:?} {raw:?}");
        }
    }

    #[test]
    fn a_value_is_changed_exactly_when_it_differs_from_its_normal_form() {
        for profile in [
            Profile::Google,
            Profile::Meta,
            Profile::Uid2,
            Profile::Basic,
        ] {
            let n = Normalizer::new(profile, "US").expect("normalizer");
            for raw in [
                "a@example.com",
                "A@example.com",
                " a@example.com",
                "a b@example.com",
                "a.b+c@gmail.com",
                "ab@googlemail.com",
                "a.b@googlemail.com",
            ] {
                let normalized = n.normalize_email(raw).expect("valid");
                let changes = classify(IdKind::Email, raw, &normalized);
                assert_eq!(changes.is_empty(), raw == normalized, "{profile:?} {raw:?}");
            }
            for raw in ["+16502530000", "16502530000", "650 253 0000"] {
                let normalized = n.normalize_phone(raw).expect("valid");
                let changes = classify(IdKind::Phone, raw, &normalized);
                assert_eq!(changes.is_empty(), raw == normalized, "{profile:?} {raw:?}");
            }
        }
        // Inner whitespace that a trim-only profile keeps is no change; dots that uid2
        // removes beside it are a Gmail rule, not whitespace.
        let uid2 = Normalizer::new(Profile::Uid2, "US").expect("normalizer");
        for (raw, expected) in [
            ("a b@example.com", Changes::NONE),
            (" a b@example.com", Changes::of(&[Whitespace])),
            ("a. b@gmail.com", Changes::of(&[GmailRules])),
        ] {
            let normalized = uid2.normalize_email(raw).expect("valid");
            assert_eq!(
                classify(IdKind::Email, raw, &normalized),
                expected,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn invalid_values_are_errors() {
        let n = google();
        assert_eq!(
            identifier(&n, IdKind::Email, "bob@@example").map(|_| ()),
            Err(NormalizeError::InvalidEmail)
        );
        assert_eq!(
            identifier(&n, IdKind::Phone, "12").map(|_| ()),
            Err(NormalizeError::InvalidPhone)
        );
    }

    #[test]
    fn counts_and_their_line() {
        let mut d = ColumnDiagnostics::new("email", IdKind::Email);
        for changes in [
            Changes::NONE,
            Changes::of(&[Case]),
            Changes::of(&[Case, Whitespace]),
            Changes::of(&[GmailRules]),
        ] {
            d.record(changes);
        }
        assert_eq!((d.valid, d.changed), (4, 3));
        assert_eq!(d.changed_by(Case), 2);
        assert_eq!(
            d.to_string(),
            "75% changed (case 50%, whitespace 25%, gmail dots or +suffix 25%)"
        );

        let mut p = ColumnDiagnostics::new("phone", IdKind::Phone);
        p.record(Changes::NONE);
        assert_eq!(p.to_string(), "0% changed");
        p.record(Changes::of(&[Formatting]));
        assert_eq!(p.to_string(), "50% changed (formatting 50%)");
        assert_eq!(ColumnDiagnostics::new("h", IdKind::Sha256).to_string(), "");
    }

    #[test]
    fn percentages_round_without_claiming_none_or_all() {
        let cases = [
            (0, 0, "0%"),
            (0, 7, "0%"),
            (1, 3, "33%"),
            (2, 3, "67%"),
            (1, 1000, "<1%"),
            (999, 1000, ">99%"),
            (5, 5, "100%"),
            (38, 100, "38%"),
        ];
        for (part, whole, text) in cases {
            assert_eq!(Percent(part, whole).to_string(), text, "{part}/{whole}");
        }
    }
}
