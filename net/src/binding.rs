//! Binding a node's long-term public keys to its CA-issued certificate.
//!
//! **What it proves.** A [`parley_proto::KeyBinding`] carries a node name, its X25519 and
//! Ed25519 public keys, its certificate and an ECDSA P-256 / SHA-256 signature, made with the
//! certificate's private key, over [`binding_message`]. [`verify_key_binding`] accepts it only if
//! the certificate chains to the federation CA, is valid at the given time for client
//! authentication, has role `node` and the claimed name, and the signature verifies. Peers and
//! auditors can thus check whose keys they hold against the CA alone, without trusting the
//! coordinator that relays the binding.
//!
//! **Not proved.** Freshness: a binding stays valid as long as its certificate does;
//! revocation is not checked.
//!
//! **Message.** `b"parley/v1/key-binding" || u32-be(len(name)) || name || x25519 || ed25519`,
//! length-prefixed so that no two (name, keys) tuples share a message.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::identity::{MAX_NAME_LEN, identity_from_cert_der};
use crate::tls::ecdsa_key_pair;
use crate::{NetError, Role, TlsMaterial, validate_name};

/// Domain-separation tag of the binding message.
pub const BINDING_DOMAIN: &[u8] = b"parley/v1/key-binding";
/// Largest certificate accepted in a binding.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Largest signature accepted in a binding (an ASN.1 ECDSA P-256 signature is at most 72).
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// Keys from a verified binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKeys {
    /// The node's name (equal to its certificate's CN).
    pub node_name: String,
    /// The node's X25519 public key.
    pub x25519_public: [u8; 32],
    /// The node's Ed25519 public key.
    pub ed25519_public: [u8; 32],
}

/// The signed message: domain tag, length-prefixed name, X25519 key, Ed25519 key.
pub fn binding_message(
    node_name: &str,
    x25519_public: &[u8; 32],
    ed25519_public: &[u8; 32],
) -> Vec<u8> {
    let name = node_name.as_bytes();
    let mut msg = Vec::with_capacity(BINDING_DOMAIN.len() + 4 + name.len() + 64);
    msg.extend_from_slice(BINDING_DOMAIN);
    // Names are at most 64 bytes once validated; saturate rather than truncate silently.
    msg.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    msg.extend_from_slice(name);
    msg.extend_from_slice(x25519_public);
    msg.extend_from_slice(ed25519_public);
    msg
}

/// Signs our keys with our TLS private key. Our certificate must be a node certificate for
/// `node_name`.
pub fn sign_key_binding(
    m: &TlsMaterial,
    node_name: &str,
    x25519_public: [u8; 32],
    ed25519_public: [u8; 32],
) -> Result<parley_proto::KeyBinding, NetError> {
    validate_name(node_name)?;
    let id = m.identity()?;
    if id.role != Role::Node {
        return Err(NetError::BindingNotNode {
            node: node_name.to_owned(),
            role: id.role.to_string(),
        });
    }
    if id.name != node_name {
        return Err(NetError::BindingNameMismatch {
            claimed: node_name.to_owned(),
            certified: id.name,
        });
    }
    let pair = ecdsa_key_pair(m.key_pkcs8()).map_err(|()| NetError::BindingSigning {
        reason: "the TLS private key is not an ECDSA P-256 PKCS#8 key",
    })?;
    let msg = binding_message(node_name, &x25519_public, &ed25519_public);
    let signature = pair
        .sign(&ring::rand::SystemRandom::new(), &msg)
        .map_err(|_| NetError::BindingSigning {
            reason: "ECDSA signing failed (no system randomness?)",
        })?;
    Ok(parley_proto::KeyBinding {
        node_name: node_name.to_owned(),
        x25519_public: x25519_public.to_vec(),
        ed25519_public: ed25519_public.to_vec(),
        certificate_der: m.cert_der().to_vec(),
        signature: signature.as_ref().to_vec(),
    })
}

/// Verifies a peer's key binding against the federation CA (`ca_der`) at time `now`.
pub fn verify_key_binding(
    ca_der: &[u8],
    b: &parley_proto::KeyBinding,
    now: SystemTime,
) -> Result<VerifiedKeys, NetError> {
    // Sizes first: everything here is peer-controlled.
    for (field, len, max) in [
        ("node_name", b.node_name.len(), MAX_NAME_LEN),
        (
            "certificate_der",
            b.certificate_der.len(),
            MAX_CERTIFICATE_BYTES,
        ),
        ("signature", b.signature.len(), MAX_SIGNATURE_BYTES),
    ] {
        if len > max {
            return Err(NetError::BindingTooLarge { field, len, max });
        }
    }
    validate_name(&b.node_name)?;
    let x25519_public = key32("x25519_public", &b.x25519_public)?;
    let ed25519_public = key32("ed25519_public", &b.ed25519_public)?;

    let ca = CertificateDer::from(ca_der);
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| NetError::BadCertificate {
        what: "federation CA certificate",
        reason: e.to_string(),
    })?;
    let cert_der = CertificateDer::from(b.certificate_der.as_slice());
    let cert = EndEntityCert::try_from(&cert_der).map_err(|source| {
        NetError::BindingCertificateMalformed {
            node: b.node_name.clone(),
            source,
        }
    })?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(since_epoch),
        KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|source| NetError::BindingCertificateUntrusted {
        node: b.node_name.clone(),
        source,
    })?;

    let id = identity_from_cert_der(&b.certificate_der, "key-binding certificate")?;
    if id.role != Role::Node {
        return Err(NetError::BindingNotNode {
            node: b.node_name.clone(),
            role: id.role.to_string(),
        });
    }
    if id.name != b.node_name {
        return Err(NetError::BindingNameMismatch {
            claimed: b.node_name.clone(),
            certified: id.name,
        });
    }
    let msg = binding_message(&b.node_name, &x25519_public, &ed25519_public);
    cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, &msg, &b.signature)
        .map_err(|_| NetError::BindingSignature {
            node: b.node_name.clone(),
        })?;
    Ok(VerifiedKeys {
        node_name: b.node_name.clone(),
        x25519_public,
        ed25519_public,
    })
}

fn key32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], NetError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| NetError::BindingKeyLength {
        field,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_is_fixed() {
        let m = binding_message("ab", &[1; 32], &[2; 32]);
        let mut want = b"parley/v1/key-binding".to_vec();
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[2; 32]);
        assert_eq!(m, want);
    }
}
