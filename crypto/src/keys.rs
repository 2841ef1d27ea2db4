//! A node's long-term secrets and their persisted form.
//!
//! A node holds an X25519 secret (sealed envelopes, see [`crate::envelope`]) and an Ed25519
//! signing key (its ledger records and key bindings). The node stores them as bytes:
//!
//! ```text
//! "PARLEYK1" || x25519 secret (32 bytes) || u32 big-endian length || Ed25519 PKCS#8 v2 document
//! ```
//!
//! Parsing is strict: wrong version tag, short input, an unparseable PKCS#8 document and trailing
//! bytes are all errors. Protecting the bytes at rest (file permissions, encryption) is the
//! caller's job.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::envelope::EnvelopeSecret;

/// Version tag at the start of persisted node secrets.
const MAGIC: &[u8; 8] = b"PARLEYK1";
/// Largest Ed25519 PKCS#8 document accepted (ring's v2 documents are 83 bytes).
const MAX_PKCS8_LEN: usize = 1024;

/// A node's long-term secrets. `Debug` prints only the public keys.
pub struct NodeSecrets {
    envelope: EnvelopeSecret,
    ed25519: Ed25519KeyPair,
    /// The PKCS#8 document `ed25519` was parsed from, kept for [`NodeSecrets::to_bytes`].
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSecrets")
            .field("x25519_public", &hex::encode(self.x25519_public()))
            .field("ed25519_public", &hex::encode(self.ed25519_public()))
            .finish_non_exhaustive()
    }
}

impl NodeSecrets {
    /// Fresh secrets from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let envelope = EnvelopeSecret::generate()?;
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CryptoError::Randomness)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let ed25519 =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| CryptoError::NodeSecretsEd25519)?;
        Ok(NodeSecrets {
            envelope,
            ed25519,
            pkcs8,
        })
    }

    /// The persisted form (see the module docs). Contains the secrets: store it carefully.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 32 + 4 + self.pkcs8.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.envelope.to_bytes());
        // The document came from ring or passed the MAX_PKCS8_LEN check, so it fits in a u32.
        let len = u32::try_from(self.pkcs8.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.pkcs8);
        out
    }

    /// Parses the persisted form.
    ///
    /// # Errors
    /// [`CryptoError::NodeSecretsVersion`], [`CryptoError::NodeSecretsTruncated`],
    /// [`CryptoError::NodeSecretsEd25519`] or [`CryptoError::NodeSecretsTrailing`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let mut rest = b;
        let magic = take(&mut rest, MAGIC.len())?;
        if magic != MAGIC {
            return Err(CryptoError::NodeSecretsVersion);
        }
        let mut x25519 = Zeroizing::new([0u8; 32]);
        x25519.copy_from_slice(take(&mut rest, 32)?);
        let mut len = [0u8; 4];
        len.copy_from_slice(take(&mut rest, 4)?);
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_PKCS8_LEN {
            return Err(CryptoError::NodeSecretsEd25519);
        }
        let pkcs8 = Zeroizing::new(take(&mut rest, len)?.to_vec());
        if !rest.is_empty() {
            return Err(CryptoError::NodeSecretsTrailing { extra: rest.len() });
        }
        let ed25519 =
            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| CryptoError::NodeSecretsEd25519)?;
        Ok(NodeSecrets {
            envelope: EnvelopeSecret::from_bytes(*x25519),
            ed25519,
            pkcs8,
        })
    }

    /// The X25519 secret used for envelopes.
    pub fn envelope(&self) -> &EnvelopeSecret {
        &self.envelope
    }

    /// The X25519 public key peers use to seal envelopes to this node.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.envelope.public()
    }

    /// The Ed25519 public key that verifies this node's signatures.
    pub fn ed25519_public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ed25519.public_key().as_ref());
        out
    }

    /// An Ed25519 signature of `msg`.
    pub fn sign_ed25519(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.ed25519.sign(msg).as_ref());
        out
    }
}

/// Splits `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], CryptoError> {
    if rest.len() < n {
        return Err(CryptoError::NodeSecretsTruncated {
            needed: n,
            have: rest.len(),
        });
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn round_trip_keeps_keys() {
        let s = NodeSecrets::generate().unwrap();
        let bytes = s.to_bytes();
        assert_eq!(&bytes[..8], b"PARLEYK1");
        let t = NodeSecrets::from_bytes(&bytes).unwrap();
        assert_eq!(s.x25519_public(), t.x25519_public());
        assert_eq!(s.ed25519_public(), t.ed25519_public());
        assert_eq!(t.envelope().public(), s.x25519_public());
        assert_eq!(t.to_bytes(), bytes);
    }

    #[test]
    fn signatures_verify() {
        let s = NodeSecrets::generate().unwrap();
        let sig = s.sign_ed25519(b"ledger row");
        let pk = UnparsedPublicKey::new(&ED25519, s.ed25519_public());
        assert!(pk.verify(b"ledger row", &sig).is_ok());
        assert!(pk.verify(b"ledger rOw", &sig).is_err());
    }

    #[test]
    fn truncated_trailing_and_bad_version_rejected() {
        let bytes = NodeSecrets::generate().unwrap().to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    NodeSecrets::from_bytes(&bytes[..cut]),
                    Err(CryptoError::NodeSecretsTruncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            NodeSecrets::from_bytes(&long).unwrap_err(),
            CryptoError::NodeSecretsTrailing { extra: 1 }
        );
        let mut v2 = bytes.clone();
        v2[7] = b'2';
        assert_eq!(
            NodeSecrets::from_bytes(&v2).unwrap_err(),
            CryptoError::NodeSecretsVersion
        );
        let mut bad_doc = bytes.clone();
        let last = bad_doc.len() - 40;
        bad_doc[last] ^= 0xff;
        assert!(NodeSecrets::from_bytes(&bad_doc).is_err());
        let mut huge = bytes[..40].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            NodeSecrets::from_bytes(&huge).unwrap_err(),
            CryptoError::NodeSecretsEd25519
        );
    }

    #[test]
    fn debug_shows_only_public_keys() {
        let s = NodeSecrets::generate().unwrap();
        let d = format!("{s:?}");
        assert!(d.contains(&hex::encode(s.ed25519_public())));
        assert!(!d.contains(&hex::encode(s.envelope().to_bytes())));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = NodeSecrets::from_bytes(&bytes);
            let mut tagged = b"PARLEYK1".to_vec();
            tagged.extend_from_slice(&bytes);
            let _ = NodeSecrets::from_bytes(&tagged);
        }
    }
}
