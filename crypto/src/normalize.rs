//! Identifier normalisation and hashing.
//!
//! Turns raw emails and phone numbers into the SHA-256 hashes that ad platforms specify for
//! customer-list uploads, so that two parties who hash the same person the same way get the same
//! [`IdHash`]. Already-hashed identifiers (64 hex characters, or the 32 bytes in base64) are
//! accepted as they are.
//!
//! # Profiles
//!
//! A [`Profile`] is a fixed, versioned rule set that decides the normalised *string*; the hash
//! is always SHA-256 of that string's UTF-8 bytes. Parties match only if they use the same
//! profile: the same phone is `+18005550100` under `google` but `18005550100` under `meta`, so
//! its hashes differ. A rule change would change hashes, so it would be a new rule set (a new
//! variant, "meta v2"), never an edit of an existing one.
//!
//! * **google v1** ([`Profile::Google`], the default; Google Ads Customer Match). Email: trim,
//!   lowercase, remove all whitespace; for `gmail.com` and `googlemail.com` also remove every
//!   `.` and any `+suffix` from the local part. Phone: E.164 with `+`.
//! * **meta v1** ([`Profile::Meta`]; Meta Conversions API "Customer Information Parameters",
//!   <https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters>).
//!   Email (`em`): trim, lowercase; dots and `+suffix` are kept, on Gmail too. Phone (`ph`):
//!   digits only, country code included, no `+`, no leading zeros, i.e. E.164 without its `+`
//!   (`(650)555-1212` in the US → `16505551212`).
//! * **uid2 v1** ([`Profile::Uid2`]; UID2 "Normalization and Encoding",
//!   <https://unifiedid.com/docs/getting-started/gs-normalization-encoding>). Email: trim,
//!   lowercase; for `gmail.com` only (not `googlemail.com`) remove every `.` and any `+suffix`
//!   from the local part. Phone: E.164 with `+`. UID2 sends the SHA-256 base64-encoded
//!   (`email_hash`, `phone_hash`); that is an encoding of the same 32 bytes, so such values
//!   are read as [`IdKind::Sha256`] and match the plain values they were hashed from.
//! * **basic v1** ([`Profile::Basic`]). Email: trim, lowercase. Phone: E.164 with `+`.
//!
//! Common to every profile:
//!
//! * Email validity: exactly one `@`, non-empty local part (also after Gmail rules) and
//!   domain, and a domain containing a `.` that is neither its first nor its last character.
//! * Phone: parsed with a default country (numbers may also start with `+` or `00`), so a
//!   national trunk `0` is dropped and the country code added (`020 7946 0000` in GB →
//!   `+442079460000`). Numbers need at least 7 and at most 15 digits; they are *not* checked
//!   against the numbering plan, so fictional numbers such as 555 ones pass.
//!
//! Errors ([`NormalizeError`]) never contain the raw value.

use std::fmt;
use std::str::FromStr;

use ring::digest::{SHA256, digest};

use crate::CryptoError;

/// Which platform's rules to follow; configs spell them `google`, `meta`, `uid2`, `basic`.
/// Each is one versioned rule set, described in the [module docs](crate::normalize#profiles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// google v1: Google Ads Customer Match (Gmail and Googlemail dots and `+suffix` removed,
    /// all whitespace removed, phones in E.164).
    #[default]
    Google,
    /// meta v1: Meta Conversions API / customer lists (trim and lowercase, phones as E.164
    /// digits without `+`).
    Meta,
    /// uid2 v1: Unified ID 2.0 (trim and lowercase, Gmail dots and `+suffix` removed, phones
    /// in E.164).
    Uid2,
    /// basic v1: trim and lowercase emails only; phones in E.164.
    Basic,
}

/// What a profile does with surrounding and inner whitespace in an email.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EmailSpaces {
    /// Remove leading and trailing whitespace only.
    Trim,
    /// Remove every whitespace character.
    RemoveAll,
}

/// How a profile writes a phone number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhoneFormat {
    /// E.164: `+` then country code and number (`+18005550100`).
    E164,
    /// E.164 without its `+` (`18005550100`).
    E164Digits,
}

/// One profile's rule set: every way profiles differ, in one place.
#[derive(Clone, Copy, Debug)]
struct Rules {
    email_spaces: EmailSpaces,
    /// Domains (lowercase) whose local part loses every `.` and any `+suffix`.
    dotless_domains: &'static [&'static str],
    phone: PhoneFormat,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: [Profile; 4] = [
        Profile::Google,
        Profile::Meta,
        Profile::Uid2,
        Profile::Basic,
    ];

    /// The name configs and job files spell it with (`google`, `meta`, `uid2`, `basic`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Google => "google",
            Profile::Meta => "meta",
            Profile::Uid2 => "uid2",
            Profile::Basic => "basic",
        }
    }

    /// The profile named `name` (as [`Profile::name`] spells it), if there is one.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The rule set of this profile.
    fn rules(self) -> Rules {
        match self {
            Profile::Google => Rules {
                email_spaces: EmailSpaces::RemoveAll,
                dotless_domains: &GMAIL_DOMAINS,
                phone: PhoneFormat::E164,
            },
            Profile::Meta => Rules {
                email_spaces: EmailSpaces::Trim,
                dotless_domains: &[],
                phone: PhoneFormat::E164Digits,
            },
            Profile::Uid2 => Rules {
                email_spaces: EmailSpaces::Trim,
                dotless_domains: &UID2_DOTLESS_DOMAINS,
                phone: PhoneFormat::E164,
            },
            Profile::Basic => Rules {
                email_spaces: EmailSpaces::Trim,
                dotless_domains: &[],
                phone: PhoneFormat::E164,
            },
        }
    }
}

/// The kind of a raw identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// An identifier already normalised and hashed with SHA-256: 64 hex characters (any
    /// case) or the 32 bytes in base64 (standard or URL-safe alphabet, padded or not).
    Sha256,
    /// A mobile advertising ID (IDFA, GAID, OAID): a UUID, with or without hyphens, any case;
    /// normalised to lowercase `8-4-4-4-12` form. The all-zero ID (a user who opted out of
    /// tracking) is refused.
    Maid,
}

/// SHA-256 of a normalised identifier. `Debug` does not print the hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash(pub [u8; 32]);

impl IdHash {
    /// SHA-256 of an already normalised identifier string.
    pub fn of_normalized(normalized: &str) -> Self {
        let d = digest(&SHA256, normalized.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        IdHash(out)
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdHash(..)")
    }
}

/// Why a raw identifier was rejected. Never carries the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NormalizeError {
    /// The value is empty or only whitespace.
    #[error("identifier is empty")]
    Empty,
    /// The value is not a valid email address.
    #[error(
        "invalid email address (need exactly one '@', a non-empty local part and a domain with an inner '.')"
    )]
    InvalidEmail,
    /// The value is not a parseable phone number with at least 7 digits.
    #[error(
        "invalid phone number (need at least 7 digits, parseable with the default country, or starting with '+' or '00')"
    )]
    InvalidPhone,
    /// The value is neither 64 hexadecimal characters nor 32 bytes in base64.
    #[error(
        "invalid SHA-256 (need 64 hexadecimal characters, or the 32 bytes in base64: 43 or 44 characters)"
    )]
    InvalidSha256,
    /// The value is not a UUID (32 hex digits, optionally hyphenated 8-4-4-4-12).
    #[error("invalid advertising ID (need a UUID: 32 hex digits, optionally as 8-4-4-4-12)")]
    InvalidMaid,
    /// The advertising ID is all zeros: the user opted out of tracking.
    #[error("opted-out advertising ID (all zeros)")]
    OptedOutMaid,
}

impl NormalizeError {
    /// A short, stable label for counting rejections in logs and reports.
    pub fn reason(&self) -> &'static str {
        match self {
            NormalizeError::Empty => "empty",
            NormalizeError::InvalidEmail => "invalid email",
            NormalizeError::InvalidPhone => "invalid phone",
            NormalizeError::InvalidSha256 => "invalid sha256",
            NormalizeError::InvalidMaid => "invalid advertising id",
            NormalizeError::OptedOutMaid => "opted-out advertising id",
        }
    }
}

/// Email domains whose local part ignores dots and `+suffix` under [`Profile::Google`].
const GMAIL_DOMAINS: [&str; 2] = ["gmail.com", "googlemail.com"];
/// The same under [`Profile::Uid2`], whose rules name `gmail.com` only.
const UID2_DOTLESS_DOMAINS: [&str; 1] = ["gmail.com"];
/// Fewest digits a phone number may have.
const MIN_PHONE_DIGITS: usize = 7;
/// Most digits an E.164 number may have.
const MAX_E164_DIGITS: usize = 15;

/// Normalises and hashes raw identifiers under one [`Profile`] and default phone country.
#[derive(Clone, Debug)]
pub struct Normalizer {
    profile: Profile,
    country: phonenumber::country::Id,
}

impl Normalizer {
    /// A normaliser for `profile`, parsing national phone numbers as numbers of
    /// `default_country` (ISO 3166 alpha-2, e.g. `"US"`, `"GB"`; case-insensitive).
    ///
    /// # Errors
    /// [`CryptoError::UnknownCountry`] for a code the phone-number metadata does not know.
    pub fn new(profile: Profile, default_country: &str) -> Result<Self, CryptoError> {
        let code = default_country.trim().to_ascii_uppercase();
        let unknown = || CryptoError::UnknownCountry {
            code: default_country.to_owned(),
        };
        if code.len() != 2 {
            return Err(unknown());
        }
        let country = phonenumber::country::Id::from_str(&code).map_err(|_| unknown())?;
        Ok(Normalizer { profile, country })
    }

    /// The profile in use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Normalises an email address according to the profile.
    ///
    /// # Errors
    /// [`NormalizeError::Empty`] or [`NormalizeError::InvalidEmail`].
    pub fn normalize_email(&self, raw: &str) -> Result<String, NormalizeError> {
        let rules = self.profile.rules();
        let lowered = raw.trim().to_lowercase();
        let cleaned = match rules.email_spaces {
            EmailSpaces::RemoveAll => lowered.chars().filter(|c| !c.is_whitespace()).collect(),
            EmailSpaces::Trim => lowered,
        };
        if cleaned.is_empty() {
            return Err(NormalizeError::Empty);
        }
        let mut parts = cleaned.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NormalizeError::InvalidEmail);
        };
        let domain_ok = domain.len() >= 3
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if local.is_empty() || !domain_ok {
            return Err(NormalizeError::InvalidEmail);
        }
        if rules.dotless_domains.contains(&domain) {
            let without_suffix = local.split('+').next().unwrap_or_default();
            let local: String = without_suffix.chars().filter(|&c| c != '.').collect();
            if local.is_empty() {
                return Err(NormalizeError::InvalidEmail);
            }
            return Ok(format!("{local}@{domain}"));
        }
        Ok(cleaned)
    }

    /// Normalises a phone number to E.164 (`+` and 7 to 15 digits), or under
    /// [`Profile::Meta`] to those digits without the `+`.
    ///
    /// # Errors
    /// [`NormalizeError::Empty`] or [`NormalizeError::InvalidPhone`].
    pub fn normalize_phone(&self, raw: &str) -> Result<String, NormalizeError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(NormalizeError::Empty);
        }
        if trimmed.chars().filter(char::is_ascii_digit).count() < MIN_PHONE_DIGITS {
            return Err(NormalizeError::InvalidPhone);
        }
        // "00" is the international call prefix in most of the world, but not in every default
        // country (e.g. "011" in the US), so spell it as "+" before parsing.
        let owned;
        let input = match trimmed.strip_prefix("00") {
            Some(rest) => {
                owned = format!("+{rest}");
                owned.as_str()
            }
            None => trimmed,
        };
        let number = phonenumber::parse(Some(self.country), input)
            .map_err(|_| NormalizeError::InvalidPhone)?;
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let digits = e164.strip_prefix('+').ok_or(NormalizeError::InvalidPhone)?;
        if !(MIN_PHONE_DIGITS..=MAX_E164_DIGITS).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NormalizeError::InvalidPhone);
        }
        match self.profile.rules().phone {
            PhoneFormat::E164 => Ok(e164),
            PhoneFormat::E164Digits => Ok(digits.to_owned()),
        }
    }

    /// The [`IdHash`] of a raw identifier: SHA-256 of its normalised form, or for
    /// [`IdKind::Sha256`] the 64 hex characters (any case, surrounding whitespace ignored)
    /// decoded.
    ///
    /// # Errors
    /// The [`NormalizeError`] of the kind's normalisation.
    pub fn identifier(&self, kind: IdKind, raw: &str) -> Result<IdHash, NormalizeError> {
        match kind {
            IdKind::Email => Ok(IdHash::of_normalized(&self.normalize_email(raw)?)),
            IdKind::Phone => Ok(IdHash::of_normalized(&self.normalize_phone(raw)?)),
            IdKind::Sha256 => parse_sha256(raw),
            IdKind::Maid => Ok(IdHash::of_normalized(&normalize_maid(raw)?)),
        }
    }
}

/// How a pre-hashed SHA-256 identifier is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sha256Encoding {
    /// 64 hexadecimal characters, any case.
    Hex,
    /// The 32 bytes in base64 (43 or 44 characters).
    Base64,
}

impl Sha256Encoding {
    /// The encoding a (trimmed) value is written in, judged by its length alone; `None` for a
    /// length neither encoding has.
    pub fn of(raw: &str) -> Option<Sha256Encoding> {
        match raw.trim().len() {
            64 => Some(Sha256Encoding::Hex),
            43 | 44 => Some(Sha256Encoding::Base64),
            _ => None,
        }
    }
}

/// Decodes a SHA-256 digest (trimmed): 64 hex characters in any case, or its 32 bytes in
/// base64 (standard or URL-safe alphabet, with or without padding). The two forms cannot be
/// confused: base64 of 32 bytes is 43 or 44 characters long.
fn parse_sha256(raw: &str) -> Result<IdHash, NormalizeError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let mut out = [0u8; 32];
    match trimmed.len() {
        64 => {
            hex::decode_to_slice(trimmed, &mut out).map_err(|_| NormalizeError::InvalidSha256)?;
        }
        43 | 44 => {
            let engines = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
            let bytes = engines
                .iter()
                .find_map(|e| e.decode(trimmed).ok())
                .ok_or(NormalizeError::InvalidSha256)?;
            out = bytes
                .try_into()
                .map_err(|_| NormalizeError::InvalidSha256)?;
        }
        _ => return Err(NormalizeError::InvalidSha256),
    }
    Ok(IdHash(out))
}

/// A mobile advertising ID in canonical form: lowercase `8-4-4-4-12`.
pub fn normalize_maid(raw: &str) -> Result<String, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let hyphenated = trimmed.len() == 36
        && trimmed
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    let digits: String = if hyphenated {
        trimmed.chars().filter(|c| *c != '-').collect()
    } else {
        trimmed.to_owned()
    };
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NormalizeError::InvalidMaid);
    }
    if digits.bytes().all(|b| b == b'0') {
        return Err(NormalizeError::OptedOutMaid);
    }
    let d = digits.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &d[..8],
        &d[8..12],
        &d[12..16],
        &d[16..20],
        &d[20..]
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn google_us() -> Normalizer {
        Normalizer::new(Profile::Google, "US").unwrap()
    }

    /// `printf %s janesaoirse@gmail.com | sha256sum`
    const JANE_SHA256: &str = "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f";

    #[test]
    fn gmail_dots_removed_and_hash_matches_sha256sum() {
        let n = google_us();
        assert_eq!(
            n.normalize_email("Jane.Saoirse@gmail.com").unwrap(),
            "janesaoirse@gmail.com"
        );
        let h = n
            .identifier(IdKind::Email, "Jane.Saoirse@gmail.com")
            .unwrap();
        assert_eq!(hex::encode(h.0), JANE_SHA256);
        assert_eq!(h, IdHash::of_normalized("janesaoirse@gmail.com"));
    }

    #[test]
    fn googlemail_plus_suffix_and_whitespace() {
        let n = google_us();
        assert_eq!(
            n.normalize_email("  J.ane+news@GoogleMail.com ").unwrap(),
            "jane@googlemail.com"
        );
        assert_eq!(
            n.normalize_email("ja ne@gmail.com\t").unwrap(),
            "jane@gmail.com"
        );
    }

    #[test]
    fn other_domains_keep_dots_and_plus() {
        let n = google_us();
        assert_eq!(
            n.normalize_email("Bob.Smith+x@Example.com").unwrap(),
            "bob.smith+x@example.com"
        );
    }

    #[test]
    fn basic_profile_only_trims_and_lowercases() {
        let n = Normalizer::new(Profile::Basic, "US").unwrap();
        assert_eq!(
            n.normalize_email("  Jane.Saoirse+x@Gmail.com ").unwrap(),
            "jane.saoirse+x@gmail.com"
        );
    }

    #[test]
    fn bad_emails() {
        let n = google_us();
        assert_eq!(n.normalize_email("   "), Err(NormalizeError::Empty));
        for bad in [
            "no-at-sign.example.com",
            "two@@example.com",
            "a@b@example.com",
            "@example.com",
            "jane@",
            "jane@localhost",
            "jane@.com",
            "jane@example.",
            "+news@gmail.com",
            "...@gmail.com",
        ] {
            assert_eq!(
                n.normalize_email(bad),
                Err(NormalizeError::InvalidEmail),
                "{bad}"
            );
        }
    }

    #[test]
    fn phones_us() {
        let n = google_us();
        assert_eq!(
            n.normalize_phone("+1 (800) 555-0100").unwrap(),
            "+18005550100"
        );
        assert_eq!(n.normalize_phone("800-555-0100").unwrap(), "+18005550100");
        assert_eq!(
            n.normalize_phone("001 800 555 0100").unwrap(),
            "+18005550100"
        );
        assert_eq!(
            n.identifier(IdKind::Phone, "(800) 555 0100").unwrap(),
            IdHash::of_normalized("+18005550100")
        );
    }

    #[test]
    fn phones_gb_trunk_zero() {
        let n = Normalizer::new(Profile::Google, "GB").unwrap();
        assert_eq!(n.normalize_phone("020 7946 0000").unwrap(), "+442079460000");
        assert_eq!(
            n.normalize_phone("+44 (0)20 7946 0000").unwrap(),
            "+442079460000"
        );
        assert_eq!(
            n.normalize_phone("0044 20 7946 0000").unwrap(),
            "+442079460000"
        );
    }

    #[test]
    fn bad_phones() {
        let n = google_us();
        assert_eq!(n.normalize_phone(" "), Err(NormalizeError::Empty));
        for bad in ["555-01", "12345", "not a phone", "+", "jane@example.com"] {
            assert_eq!(
                n.normalize_phone(bad),
                Err(NormalizeError::InvalidPhone),
                "{bad}"
            );
        }
    }

    #[test]
    fn sha256_hex_any_case() {
        let n = google_us();
        let lower = n.identifier(IdKind::Sha256, JANE_SHA256).unwrap();
        let upper = n
            .identifier(
                IdKind::Sha256,
                &format!("  {}\n", JANE_SHA256.to_uppercase()),
            )
            .unwrap();
        assert_eq!(lower, upper);
        assert_eq!(
            lower,
            n.identifier(IdKind::Email, "janesaoirse@gmail.com")
                .unwrap()
        );
    }

    #[test]
    fn sha256_in_base64_equals_its_hex() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let n = google_us();
        let hex = n.identifier(IdKind::Sha256, JANE_SHA256).unwrap();
        let bytes = hex::decode(JANE_SHA256).unwrap();
        for b64 in [STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
            assert_eq!(
                n.identifier(IdKind::Sha256, &format!(" {b64} ")),
                Ok(hex),
                "{b64}"
            );
        }
        // A 44-character string that is not base64 of 32 bytes is refused.
        assert_eq!(
            n.identifier(IdKind::Sha256, &"*".repeat(44)),
            Err(NormalizeError::InvalidSha256)
        );
        let long = STANDARD.encode([0u8; 33]);
        assert_eq!(
            n.identifier(IdKind::Sha256, &long),
            Err(NormalizeError::InvalidSha256)
        );
    }

    #[test]
    fn advertising_ids_normalise_to_lowercase_uuids() {
        // One advertising ID written three ways.
        let canonical = "e2c1f9a0-2f65-4e4a-9d1b-1c6d3b8f0a7e";
        for raw in [
            "E2C1F9A0-2F65-4E4A-9D1B-1C6D3B8F0A7E",
            "e2c1f9a02f654e4a9d1b1c6d3b8f0a7e",
            "  e2c1f9a0-2f65-4e4a-9d1b-1c6d3b8f0a7e\t",
        ] {
            assert_eq!(normalize_maid(raw).as_deref(), Ok(canonical), "{raw}");
        }
        let n = google_us();
        assert_eq!(
            n.identifier(IdKind::Maid, "E2C1F9A02F654E4A9D1B1C6D3B8F0A7E"),
            Ok(IdHash::of_normalized(canonical))
        );
        assert_eq!(
            normalize_maid("00000000-0000-0000-0000-000000000000"),
            Err(NormalizeError::OptedOutMaid)
        );
        assert_eq!(
            NormalizeError::OptedOutMaid.reason(),
            "opted-out advertising id"
        );
        for bad in [
            "e2c1f9a0-2f65-4e4a-9d1b-1c6d3b8f0a7",
            "e2c1f9a0-2f654-e4a-9d1b-1c6d3b8f0a7e",
            "g2c1f9a02f654e4a9d1b1c6d3b8f0a7e",
            "{e2c1f9a0-2f65-4e4a-9d1b-1c6d3b8f0a7e}",
            "é2c1f9a02f654e4a9d1b1c6d3b8f0a7",
        ] {
            assert_eq!(
                normalize_maid(bad),
                Err(NormalizeError::InvalidMaid),
                "{bad}"
            );
        }
        assert_eq!(normalize_maid(" "), Err(NormalizeError::Empty));
    }

    proptest! {
        /// Any case and hyphenation of one advertising ID normalises to the same canonical
        /// form, and normalising that again changes nothing.
        #[test]
        fn maid_normalisation_is_idempotent(bytes in proptest::array::uniform16(any::<u8>()), upper: bool, hyphens: bool) {
            prop_assume!(bytes.iter().any(|b| *b != 0));
            let hex = hex::encode(bytes);
            let mut raw = if hyphens {
                format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
            } else {
                hex.clone()
            };
            if upper {
                raw = raw.to_uppercase();
            }
            let once = normalize_maid(&raw).unwrap();
            prop_assert_eq!(normalize_maid(&once).unwrap(), once.clone());
            prop_assert_eq!(once.replace('-', ""), hex);
        }
    }

    #[test]
    fn bad_sha256() {
        let n = google_us();
        assert_eq!(n.identifier(IdKind::Sha256, ""), Err(NormalizeError::Empty));
        for bad in [
            &JANE_SHA256[..63],
            &format!("{JANE_SHA256}0"),
            &format!("{}g", &JANE_SHA256[..63]),
            &"é".repeat(32),
        ] {
            assert_eq!(
                n.identifier(IdKind::Sha256, bad),
                Err(NormalizeError::InvalidSha256)
            );
        }
    }

    #[test]
    fn unknown_country_rejected() {
        assert!(Normalizer::new(Profile::Google, "gb").is_ok());
        for bad in ["XX", "USA", "", "U"] {
            assert!(matches!(
                Normalizer::new(Profile::Google, bad),
                Err(CryptoError::UnknownCountry { .. })
            ));
        }
    }

    #[test]
    fn errors_never_echo_the_value() {
        let n = google_us();
        let secret = "very.secret.person@nowhere";
        let e = n.normalize_email(secret).unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert!(!format!("{e:?}").contains("secret"));
        assert_eq!(e.reason(), "invalid email");
        assert_eq!(NormalizeError::Empty.reason(), "empty");
        assert_eq!(NormalizeError::InvalidPhone.reason(), "invalid phone");
        assert_eq!(NormalizeError::InvalidSha256.reason(), "invalid sha256");
    }

    #[test]
    fn id_hash_debug_is_redacted() {
        assert_eq!(format!("{:?}", IdHash([7; 32])), "IdHash(..)");
    }

    #[test]
    fn profile_names_match_their_serde_names() {
        for p in Profile::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(Profile::from_name(p.name()), Some(p));
        }
        assert_eq!(Profile::from_name("Meta"), None);
    }

    #[test]
    fn profile_serde_names() {
        // The config files spell profiles in snake_case.
        for (name, profile) in [
            ("google", Profile::Google),
            ("meta", Profile::Meta),
            ("uid2", Profile::Uid2),
            ("basic", Profile::Basic),
        ] {
            let p: Profile = serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(name))
            .unwrap();
            assert_eq!(p, profile, "{name}");
            assert_eq!(
                serde_json::to_string(&profile).unwrap(),
                format!("\"{name}\"")
            );
        }
        for bad in ["Meta", "UID2", "uid_2", "facebook"] {
            assert!(
                serde_json::from_str::<Profile>(&format!("\"{bad}\"")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(Profile::default(), Profile::Google);
    }

    /// Every profile, for tests that must hold under each.
    const ALL_PROFILES: [Profile; 4] = [
        Profile::Google,
        Profile::Meta,
        Profile::Uid2,
        Profile::Basic,
    ];

    /// Stops compiling when a profile is added, so that [`ALL_PROFILES`] is extended too.
    #[allow(dead_code)]
    fn all_profiles_is_complete(p: Profile) {
        match p {
            Profile::Google | Profile::Meta | Profile::Uid2 | Profile::Basic => {}
        }
    }

    fn b64(h: IdHash) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(h.as_bytes())
    }

    /// Meta Conversions API, "Customer Information Parameters", parameters `em` and `ph`:
    /// <https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters>
    #[test]
    fn meta_vectors_from_customer_information_parameters() {
        let n = Normalizer::new(Profile::Meta, "US").unwrap();
        // `em` example: input, normalized format, expected SHA256 output.
        assert_eq!(
            n.normalize_email("John_Smith@gmail.com").unwrap(),
            "john_smith@gmail.com"
        );
        assert_eq!(
            hex::encode(
                n.identifier(IdKind::Email, "John_Smith@gmail.com")
                    .unwrap()
                    .0
            ),
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        // `ph` example: "US phone number (650)555-1212", normalized format, expected SHA256.
        assert_eq!(n.normalize_phone("(650)555-1212").unwrap(), "16505551212");
        assert_eq!(
            hex::encode(n.identifier(IdKind::Phone, "(650)555-1212").unwrap().0),
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
        );
    }

    #[test]
    fn meta_keeps_gmail_dots_and_drops_the_plus_of_e164() {
        let n = Normalizer::new(Profile::Meta, "GB").unwrap();
        // Meta's `em` rule is trim and lowercase only: no Gmail rules, inner spaces kept.
        assert_eq!(
            n.normalize_email("  Jane.Saoirse+x@Gmail.com\t").unwrap(),
            "jane.saoirse+x@gmail.com"
        );
        // `ph`: symbols and the trunk zero go, the country code stays, no leading zeros.
        for raw in ["020 7946 0000", "+44 (0)20 7946 0000", "0044 20 7946 0000"] {
            assert_eq!(n.normalize_phone(raw).unwrap(), "442079460000", "{raw}");
        }
        // The same phone hashes differently under google: profiles must match across parties.
        let g = Normalizer::new(Profile::Google, "GB").unwrap();
        assert_ne!(
            n.identifier(IdKind::Phone, "020 7946 0000"),
            g.identifier(IdKind::Phone, "020 7946 0000")
        );
        assert_eq!(
            n.identifier(IdKind::Phone, "020 7946 0000").unwrap(),
            IdHash::of_normalized("442079460000")
        );
    }

    /// UID2 "Normalization and Encoding", section "Normalization Examples for Email":
    /// <https://unifiedid.com/docs/getting-started/gs-normalization-encoding>
    /// (original values, normalized value, SHA-256 in hex and in base64).
    const UID2_EMAIL_VECTORS: [(&[&str], &str, &str, &str); 6] = [
        (
            &["MyEmail@example.com", "MYEMAIL@example.com"],
            "myemail@example.com",
            "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
            "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
        ),
        (
            &["My.Email@example.com"],
            "my.email@example.com",
            "e22b53bc6f871274f3a62ab37a3caed7214fc14d676215a96a242fcfada1c81f",
            "4itTvG+HEnTzpiqzejyu1yFPwU1nYhWpaiQvz62hyB8=",
        ),
        (
            &["JANESAOIRSE@example.com", "JaneSaoirse@example.com"],
            "janesaoirse@example.com",
            "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
            "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
        ),
        (
            &["jane.saoirse@example.com", "Jane.Saoirse@example.com"],
            "jane.saoirse@example.com",
            "b196432c7b989a2ca91c83799957c515da53e6c13abf20b78fea94f117e90bf8",
            "sZZDLHuYmiypHIN5mVfFFdpT5sE6vyC3j+qU8RfpC/g=",
        ),
        (
            &["JaneSaoirse+Work@example.com"],
            "janesaoirse+work@example.com",
            "28aaee4815230cd3b4ebd88c515226550666e91ac019929e3adac3f66c288180",
            "KKruSBUjDNO069iMUVImVQZm6RrAGZKeOtrD9mwogYA=",
        ),
        (
            // The same page's introduction adds `JANESaoirse@gmail.com` with this result.
            &[
                "JANE.SAOIRSE@gmail.com",
                "Jane.Saoirse@gmail.com",
                "JaneSaoirse+Work@gmail.com",
                "JANESaoirse@gmail.com",
            ],
            "janesaoirse@gmail.com",
            "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
            "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        ),
    ];

    #[test]
    fn uid2_email_vectors_from_normalization_and_encoding() {
        let n = Normalizer::new(Profile::Uid2, "US").unwrap();
        for (raws, normalized, hex_hash, b64_hash) in UID2_EMAIL_VECTORS {
            for raw in raws {
                assert_eq!(n.normalize_email(raw).unwrap(), normalized, "{raw}");
                let h = n.identifier(IdKind::Email, raw).unwrap();
                assert_eq!(hex::encode(h.0), hex_hash, "{raw}");
                assert_eq!(b64(h), b64_hash, "{raw}");
                // A UID2 `email_hash` (base64) matches the plain email it was hashed from.
                assert_eq!(n.identifier(IdKind::Sha256, b64_hash), Ok(h), "{raw}");
            }
        }
        // Same page, section "Email Address Hash Encoding".
        let h = n.identifier(IdKind::Email, "user@example.com").unwrap();
        assert_eq!(
            hex::encode(h.0),
            "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
        );
        assert_eq!(b64(h), "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=");
        // Same page, introduction: hashing `JANESaoirse@gmail.com` without normalising gives
        // a different value, which must not be what the profile produces.
        let unnormalised = IdHash::of_normalized("JANESaoirse@gmail.com");
        assert_eq!(
            b64(unnormalised),
            "VpLXEp5N1bj/V1WzjgZsC+FfuYdntAOywSVIO00FD/E="
        );
        assert_ne!(
            n.identifier(IdKind::Email, "JANESaoirse@gmail.com"),
            Ok(unnormalised)
        );
    }

    #[test]
    fn uid2_gmail_rules_are_for_gmail_com_only() {
        let n = Normalizer::new(Profile::Uid2, "US").unwrap();
        // The UID2 page says "In `gmail.com` addresses only".
        assert_eq!(
            n.normalize_email("Jane.Doe+home@GoogleMail.com").unwrap(),
            "jane.doe+home@googlemail.com"
        );
        // Its two step examples.
        assert_eq!(
            n.normalize_email("jane.doe@gmail.com").unwrap(),
            "janedoe@gmail.com"
        );
        assert_eq!(
            n.normalize_email("janedoe+home@gmail.com").unwrap(),
            "janedoe@gmail.com"
        );
        // Trim only: inner whitespace is not removed (google removes it).
        assert_eq!(
            n.normalize_email(" ja ne@example.com ").unwrap(),
            "ja ne@example.com"
        );
        for bad in ["+home@gmail.com", "...@gmail.com"] {
            assert_eq!(
                n.normalize_email(bad),
                Err(NormalizeError::InvalidEmail),
                "{bad}"
            );
        }
    }

    /// UID2 "Normalization and Encoding", sections "Phone Number Normalization" and "Phone
    /// Number Hash Encoding":
    /// <https://unifiedid.com/docs/getting-started/gs-normalization-encoding>
    #[test]
    fn uid2_phone_vectors_from_normalization_and_encoding() {
        let us = Normalizer::new(Profile::Uid2, "US").unwrap();
        // "US: `1 (234) 567-8901` is normalized to `+12345678901`."
        assert_eq!(
            us.normalize_phone("1 (234) 567-8901").unwrap(),
            "+12345678901"
        );
        // Hash table: normalized phone, SHA-256 in hex, in base64.
        let h = us.identifier(IdKind::Phone, "+12345678901").unwrap();
        assert_eq!(
            hex::encode(h.0),
            "10e6f0b47054a83359477dcb35231db6de5c69fb1816e1a6b98e192de9e5b9ee"
        );
        assert_eq!(b64(h), "EObwtHBUqDNZR33LNSMdtt5cafsYFuGmuY4ZLenlue4=");
        assert_eq!(
            us.identifier(
                IdKind::Sha256,
                "EObwtHBUqDNZR33LNSMdtt5cafsYFuGmuY4ZLenlue4="
            ),
            Ok(h)
        );
        // "Sydney, Australia: `(02) 1234 5678` is normalized to drop the leading zero for the
        // city plus include the country code: `+61212345678`."
        let au = Normalizer::new(Profile::Uid2, "AU").unwrap();
        assert_eq!(
            au.normalize_phone("(02) 1234 5678").unwrap(),
            "+61212345678"
        );
        // "Singapore: `65 1243 5678` is normalized to `+6512345678`": the page transposes two
        // digits between input and output, so the output is checked as written and the input
        // as it would be without the typo.
        let sg = Normalizer::new(Profile::Uid2, "SG").unwrap();
        assert_eq!(sg.normalize_phone("+6512345678").unwrap(), "+6512345678");
        assert_eq!(sg.normalize_phone("65 1243 5678").unwrap(), "+6512435678");
    }

    proptest! {
        /// Under every profile, normalising a normalised email changes nothing; so does
        /// normalising a normalised phone, read back as E.164 (meta's output has no `+`, and
        /// bare digits may be a national number, so `+` is put back first).
        #[test]
        fn normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
            for profile in ALL_PROFILES {
                let n = Normalizer::new(profile, "US").unwrap();
                if let Ok(e) = n.normalize_email(&raw) {
                    prop_assert_eq!(n.normalize_email(&e).unwrap(), e);
                }
                if let Ok(p) = n.normalize_phone(&raw) {
                    let e164 = match profile.rules().phone {
                        PhoneFormat::E164 => p.clone(),
                        PhoneFormat::E164Digits => format!("+{p}"),
                    };
                    prop_assert_eq!(n.normalize_phone(&e164).unwrap(), p);
                }
                let _ = n.identifier(IdKind::Sha256, &raw);
            }
        }

        /// Messy spellings of one email (case, surrounding whitespace, and for Gmail the dots
        /// and `+suffix` a profile removes) give one hash under each profile.
        #[test]
        fn messy_variants_of_one_email_give_one_hash(
            local in "[a-z0-9_][a-z0-9_-]{0,11}",
            domain in prop::sample::select(vec!["gmail.com", "googlemail.com", "example.com"]),
            upper in proptest::collection::vec(any::<bool>(), 12),
            dots in proptest::collection::vec(any::<bool>(), 12),
            suffix in "[a-z0-9.]{0,6}",
            lead in "[ \t\n]{0,3}",
            trail in "[ \t\n]{0,3}",
        ) {
            for profile in ALL_PROFILES {
                let n = Normalizer::new(profile, "US").unwrap();
                let clean = format!("{local}@{domain}");
                let rules = profile.rules();
                let dotless = rules.dotless_domains.contains(&domain);
                // Case is always folded; dots and a `+suffix` only where the profile drops them.
                let mut messy_local = String::new();
                for (i, c) in local.chars().enumerate() {
                    if dotless && dots[i] {
                        messy_local.push('.');
                    }
                    messy_local.push(if upper[i] { c.to_ascii_uppercase() } else { c });
                }
                if dotless {
                    messy_local.push('+');
                    messy_local.push_str(&suffix);
                }
                let messy_domain = if upper[0] { domain.to_uppercase() } else { domain.to_owned() };
                let messy = format!("{lead}{messy_local}@{messy_domain}{trail}");
                let want = n.identifier(IdKind::Email, &clean).unwrap();
                prop_assert_eq!(n.identifier(IdKind::Email, &messy), Ok(want), "{:?} {}", profile, messy);
            }
        }

        #[test]
        fn phone_like_strings_never_panic(raw in "[+0-9 ()\\-.x]{0,30}") {
            let _ = google_us().normalize_phone(&raw);
        }

        /// Phone-like strings that normalise under a profile normalise again, read back as
        /// E.164, to the same string.
        #[test]
        fn phone_normalisation_is_idempotent(
            raw in "(\\+|00)?[0-9][0-9 ()\\-.]{6,20}",
            country in prop::sample::select(vec!["US", "GB", "AU", "SG", "DE"]),
        ) {
            for profile in ALL_PROFILES {
                let n = Normalizer::new(profile, country).unwrap();
                if let Ok(p) = n.normalize_phone(&raw) {
                    let e164 = match profile.rules().phone {
                        PhoneFormat::E164 => p.clone(),
                        PhoneFormat::E164Digits => format!("+{p}"),
                    };
                    prop_assert!(!p.starts_with('0') && !p.starts_with("+0"), "{}", p);
                    prop_assert_eq!(n.normalize_phone(&e164), Ok(p), "{:?} {}", profile, raw);
                }
            }
        }
    }
}
