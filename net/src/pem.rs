//! PEM reading (via `rustls-pki-types`) with errors that name the input, and PEM writing.
//!
//! Error messages never include file content: a corrupt private-key file is described by its
//! path and the kind of defect only.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::NetError;

/// PEM label of a certificate.
pub(crate) const CERTIFICATE: &str = "CERTIFICATE";
/// PEM label of a PKCS#8 private key.
pub(crate) const PRIVATE_KEY: &str = "PRIVATE KEY";

/// Largest PEM file we read (certificates and keys are a few KiB).
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Where PEM text came from, for error messages.
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A file.
    File(&'a Path),
    /// Text passed in directly.
    Text,
}

impl Origin<'_> {
    fn describe(self) -> String {
        match self {
            Origin::File(p) => format!("'{}'", p.display()),
            Origin::Text => "(PEM text)".to_owned(),
        }
    }
}

/// Reads a PEM file, refusing absurdly large ones.
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, NetError> {
    let io_err = |source| NetError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_PEM_FILE_BYTES {
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is {len} bytes, more than the {MAX_PEM_FILE_BYTES} allowed for PEM"),
        )));
    }
    std::fs::read(path).map_err(io_err)
}

fn label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => CERTIFICATE,
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => PRIVATE_KEY,
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "other",
    }
}

fn malformed(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no matching '-----END' line",
        pem::Error::IllegalSectionStart { .. } => "a '-----BEGIN' line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 body is corrupt",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "the text cannot be decoded",
    }
}

/// All recognised PEM sections of `bytes`.
fn sections(
    bytes: &[u8],
    what: &'static str,
    origin: Origin<'_>,
) -> Result<Vec<(SectionKind, Vec<u8>)>, NetError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::MalformedPem {
            what,
            location: origin.describe(),
            reason: malformed(&e),
        })
}

/// Every certificate in `bytes`, in order (leaf first for a chain).
pub(crate) fn certificates(
    bytes: &[u8],
    what: &'static str,
    origin: Origin<'_>,
) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let all = sections(bytes, what, origin)?;
    let first_kind = all.first().map(|(k, _)| *k);
    let certs: Vec<_> = all
        .into_iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(match first_kind {
            None => NetError::NoPem {
                what,
                location: origin.describe(),
                expected: CERTIFICATE,
            },
            Some(k) => NetError::WrongPemKind {
                what,
                location: origin.describe(),
                found: label(k),
                expected: CERTIFICATE,
                hint: if matches!(
                    k,
                    SectionKind::PrivateKey
                        | SectionKind::EcPrivateKey
                        | SectionKind::RsaPrivateKey
                ) {
                    "; this looks like a private key: pass the certificate (.pem) file here"
                } else {
                    ""
                },
            },
        });
    }
    Ok(certs)
}

/// The first PKCS#8 private key in `bytes`.
pub(crate) fn private_key(
    bytes: &[u8],
    what: &'static str,
    origin: Origin<'_>,
) -> Result<PrivatePkcs8KeyDer<'static>, NetError> {
    let all = sections(bytes, what, origin)?;
    let first_kind = all.first().map(|(k, _)| *k);
    if let Some((_, der)) = all.into_iter().find(|(k, _)| *k == SectionKind::PrivateKey) {
        return Ok(PrivatePkcs8KeyDer::from(der));
    }
    Err(match first_kind {
        None => NetError::NoPem {
            what,
            location: origin.describe(),
            expected: PRIVATE_KEY,
        },
        Some(k) => NetError::WrongPemKind {
            what,
            location: origin.describe(),
            found: label(k),
            expected: PRIVATE_KEY,
            hint: match k {
                SectionKind::Certificate => {
                    "; this looks like a certificate: pass the private key (.key) file here"
                }
                SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => {
                    "; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
                }
                _ => "",
            },
        },
    })
}

/// Encodes DER as a PEM section with 64-character base64 lines.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_through_the_parser() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 200] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let text = encode(CERTIFICATE, &der);
            if len == 0 {
                continue;
            }
            let back = certificates(text.as_bytes(), "test", Origin::Text).expect("parses");
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].as_ref(), der.as_slice());
        }
        assert_eq!(
            encode("X", b"Man"),
            "-----BEGIN X-----\nTWFu\n-----END X-----\n"
        );
        assert_eq!(
            encode("X", b"Ma"),
            "-----BEGIN X-----\nTWE=\n-----END X-----\n"
        );
        assert_eq!(
            encode("X", b"M"),
            "-----BEGIN X-----\nTQ==\n-----END X-----\n"
        );
    }

    #[test]
    fn wrong_kinds_are_named() {
        let key = encode(PRIVATE_KEY, b"not really a key");
        let e =
            certificates(key.as_bytes(), "CA certificate", Origin::Text).expect_err("must fail");
        assert!(e.to_string().contains("'PRIVATE KEY'"), "{e}");
        let cert = encode(CERTIFICATE, b"not really a cert");
        let e =
            private_key(cert.as_bytes(), "TLS private key", Origin::Text).expect_err("must fail");
        assert!(e.to_string().contains("pass the private key"), "{e}");
        let e = private_key(b"hello", "TLS private key", Origin::Text).expect_err("must fail");
        assert!(matches!(e, NetError::NoPem { .. }), "{e}");
    }
}
