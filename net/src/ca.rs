//! The federation certificate authority: create it, issue role certificates, store them.
//!
//! * The CA is a self-signed ECDSA P-256 certificate (basicConstraints CA, path length 0: it
//!   signs leaves only).
//! * Every leaf carries exactly one identity: subject CN = name, subject OU = role. Names are
//!   checked with [`crate::validate_name`] before anything is signed.
//! * Leaves are ECDSA P-256, `digitalSignature`, EKU clientAuth (plus serverAuth for the
//!   coordinator, which is also the TLS server).
//!
//! Nothing here touches the network. Private keys are returned as PKCS#8 PEM and written with
//! mode 0600; they never appear in error messages.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::pem::{self, Origin};
use crate::{NetError, Role, validate_name};

/// Longest CA validity accepted by [`init_ca`] (100 years).
pub const MAX_CA_VALIDITY_DAYS: u32 = 36_500;

/// Generates a new federation CA: a self-signed ECDSA P-256 certificate valid from a few
/// minutes ago (clock skew) for `validity_days` days.
///
/// Returns `(certificate PEM, PKCS#8 private key PEM)`.
pub fn init_ca(common_name: &str, validity_days: u32) -> Result<(String, String), NetError> {
    if common_name.is_empty() || common_name.chars().count() > 64 {
        return Err(NetError::InvalidCommonName {
            name: NetError::clip(common_name),
            reason: "it must be 1-64 characters",
        });
    }
    if common_name.chars().any(char::is_control) {
        return Err(NetError::InvalidCommonName {
            name: NetError::clip(common_name),
            reason: "it must not contain control characters",
        });
    }
    if validity_days == 0 || validity_days > MAX_CA_VALIDITY_DAYS {
        return Err(NetError::InvalidValidity {
            reason: "the CA validity must be between 1 and 36500 days",
        });
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        NetError::CertificateGeneration {
            what: "generate the CA key pair",
            source,
        }
    })?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(validity_days));
    params.serial_number = Some(random_serial()?);
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(params, key).map_err(|source| {
        NetError::CertificateGeneration {
            what: "self-sign the CA certificate",
            source,
        }
    })?;
    Ok((ca.pem(), key_pem))
}

/// Issues a leaf certificate for `role`/`name`, signed by the CA.
///
/// * `sans`: extra DNS names and IP addresses (IP strings become IP SANs), e.g. the addresses
///   clients dial for the coordinator. `name` is always a DNS SAN too, so clients can verify the
///   coordinator by its name (`server_name`) whatever address they dial.
/// * `not_before < not_after` is required; a period in the past is allowed (tests use it to
///   make expired certificates).
///
/// Returns `(certificate PEM, PKCS#8 private key PEM)`.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    role: Role,
    name: &str,
    sans: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String), NetError> {
    validate_name(name)?;
    if not_before >= not_after {
        return Err(NetError::InvalidValidity {
            reason: "not_before must be earlier than not_after",
        });
    }

    let ca_der = ca_certificate_der(ca_cert_pem)?;
    // Only the PEM section kind and the rcgen parse are checked here; the content of a
    // private key never reaches an error message.
    let ca_key_der = pem::private_key(ca_key_pem.as_bytes(), "CA private key", Origin::Text)?;
    let ca_key = KeyPair::try_from(&ca_key_der).map_err(|_| NetError::BadPrivateKey {
        what: "CA private key",
        reason: "it is not a supported PKCS#8 key (ECDSA P-256/P-384, Ed25519 or RSA)",
    })?;
    check_ca(&ca_der, &ca_key)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|source| {
        NetError::CertificateGeneration {
            what: "read the CA certificate's subject and key identifier",
            source,
        }
    })?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = leaf_sans(name, sans)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role == Role::Coordinator {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        NetError::CertificateGeneration {
            what: "generate the certificate key pair",
            source,
        }
    })?;
    let cert =
        params
            .signed_by(&key, &issuer)
            .map_err(|source| NetError::CertificateGeneration {
                what: "sign the certificate with the CA key",
                source,
            })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `<dir>/<stem>.pem` (certificate) and `<dir>/<stem>.key` (private key, mode 0600).
///
/// Refuses to overwrite either file. `stem` follows the name rule of
/// [`crate::validate_name`]. Returns `(certificate path, key path)`.
pub fn write_pem_files(
    dir: &Path,
    stem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(PathBuf, PathBuf), NetError> {
    validate_name(stem)?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    for (what, path) in [("certificate", &cert_path), ("private key", &key_path)] {
        if path.symlink_metadata().is_ok() {
            return Err(NetError::FileExists {
                what,
                path: path.clone(),
            });
        }
    }
    write_new(&cert_path, "certificate", cert_pem, 0o644)?;
    if let Err(e) = write_new(&key_path, "private key", key_pem, 0o600) {
        // Do not leave a certificate without its key behind.
        let _ = std::fs::remove_file(&cert_path);
        return Err(e);
    }
    Ok((cert_path, key_path))
}

fn write_new(path: &Path, what: &'static str, contents: &str, mode: u32) -> Result<(), NetError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            NetError::FileExists {
                what,
                path: path.to_owned(),
            }
        } else {
            NetError::WriteFile {
                what,
                path: path.to_owned(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| NetError::WriteFile {
            what,
            path: path.to_owned(),
            source,
        })
}

/// The single certificate of a CA PEM.
fn ca_certificate_der(ca_cert_pem: &str) -> Result<CertificateDer<'static>, NetError> {
    let mut certs = pem::certificates(ca_cert_pem.as_bytes(), "CA certificate", Origin::Text)?;
    if certs.len() != 1 {
        return Err(NetError::BadCertificate {
            what: "CA certificate",
            reason: format!("expected exactly one certificate, found {}", certs.len()),
        });
    }
    Ok(certs.remove(0))
}

/// Checks that `ca_der` is a CA certificate whose public key is `ca_key`'s.
fn check_ca(ca_der: &[u8], ca_key: &KeyPair) -> Result<(), NetError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(ca_der).map_err(|e| NetError::BadCertificate {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    if !cert.is_ca() {
        return Err(NetError::NotACa {
            what: "the CA certificate",
        });
    }
    if cert.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(NetError::CaKeyMismatch);
    }
    Ok(())
}

fn leaf_sans(name: &str, sans: &[String]) -> Result<Vec<SanType>, NetError> {
    let mut list: Vec<&str> = Vec::with_capacity(sans.len() + 1);
    list.push(name);
    list.extend(sans.iter().map(String::as_str).filter(|s| *s != name));
    let mut out = Vec::with_capacity(list.len());
    for san in list {
        let parsed = if let Ok(ip) = san.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else {
            let valid_dns = !san.is_empty()
                && san.len() <= 253
                && san
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
            if !valid_dns {
                return Err(NetError::InvalidSan {
                    san: NetError::clip(san),
                    reason:
                        "not an IP address, and not a DNS name of letters, digits, '-', '_' and '.'"
                            .to_owned(),
                });
            }
            let ia5 =
                rcgen::string::Ia5String::try_from(san).map_err(|e| NetError::InvalidSan {
                    san: NetError::clip(san),
                    reason: e.to_string(),
                })?;
            SanType::DnsName(ia5)
        };
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, NetError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| NetError::CertificateGeneration {
            what: "draw a random serial number",
            source: rcgen::Error::RingUnspecified,
        })?;
    // Positive and of full length in DER.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
