//! Identifier normalisation and hashing.
//!
//! Turns raw emails and phone numbers into the SHA-256 hashes that ad platforms specify for
//! customer-list uploads, so that two parties who hash the same person the same way get the same
//! [`IdHash`]. Already-hashed identifiers (64 hex characters) are accepted as they are.
//!
//! * Email, [`Profile::Google`]: trim, lowercase, remove all whitespace; for `gmail.com` and
//!   `googlemail.com` also remove every `.` and any `+suffix` from the local part.
//! * Email, [`Profile::Basic`]: trim and lowercase only.
//! * Email validity (both profiles): exactly one `@`, non-empty local part and domain, and a
//!   domain containing a `.` that is neither its first nor its last character.
//! * Phone: parsed with a default country (numbers may also start with `+` or `00`) and written
//!   in E.164 (`+18005550100`). Numbers need at least 7 digits; they are *not* checked against
//!   the numbering plan, so fictional numbers such as 555 ones pass.
//!
//! Errors ([`NormalizeError`]) never contain the raw value.

use std::fmt;
use std::str::FromStr;

use ring::digest::{SHA256, digest};

use crate::CryptoError;

/// Which platform's email rules to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Google Ads Customer Match rules (Gmail dots and `+suffix` removed).
    #[default]
    Google,
    /// Trim and lowercase only.
    Basic,
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

/// Email domains whose local part ignores dots and `+suffix`.
const GMAIL_DOMAINS: [&str; 2] = ["gmail.com", "googlemail.com"];
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
        let lowered = raw.trim().to_lowercase();
        let cleaned = match self.profile {
            Profile::Google => lowered.chars().filter(|c| !c.is_whitespace()).collect(),
            Profile::Basic => lowered,
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
        if self.profile == Profile::Google && GMAIL_DOMAINS.contains(&domain) {
            let without_suffix = local.split('+').next().unwrap_or_default();
            let local: String = without_suffix.chars().filter(|&c| c != '.').collect();
            if local.is_empty() {
                return Err(NormalizeError::InvalidEmail);
            }
            return Ok(format!("{local}@{domain}"));
        }
        Ok(cleaned)
    }

    /// Normalises a phone number to E.164 (`+` and 7 to 15 digits).
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
        Ok(e164)
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
    fn profile_serde_names() {
        // The config files spell profiles in snake_case.
        let p: Profile = serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
            serde::de::value::Error,
        >::new("basic"))
        .unwrap();
        assert_eq!(p, Profile::Basic);
        assert_eq!(Profile::default(), Profile::Google);
    }

    proptest! {
        #[test]
        fn normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
            let n = google_us();
            if let Ok(e) = n.normalize_email(&raw) {
                prop_assert_eq!(n.normalize_email(&e).unwrap(), e);
            }
            if let Ok(p) = n.normalize_phone(&raw) {
                prop_assert_eq!(n.normalize_phone(&p).unwrap(), p);
            }
            let _ = n.identifier(IdKind::Sha256, &raw);
        }

        #[test]
        fn phone_like_strings_never_panic(raw in "[+0-9 ()\\-.x]{0,30}") {
            let _ = google_us().normalize_phone(&raw);
        }
    }
}
