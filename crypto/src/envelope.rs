//! Sealed node-to-node envelopes.
//!
//! Node-to-node protocol messages travel through the coordinator, which must see only sizes and
//! metadata. Each pair of nodes derives, per job, per run and per direction, an AES-256-GCM key
//! from the X25519 agreement of their registered long-term keys and a fresh nonce the sender
//! draws for the run:
//!
//! ```text
//! shared = X25519(mine, peer_public)            (all-zero result rejected)
//! info   = lp(job_id) || lp(from) || lp(to) || run_nonce (16 random bytes of `from`)
//! key    = HKDF-SHA256(salt = "parley/v2/envelope-key", ikm = shared, info)
//! nonce  = 0x00000000 || seq (u64 big-endian)
//! aad    = "parley/v2/envelope" || info || seq (u64 big-endian)
//! ```
//!
//! where `lp(s)` is the length of `s` as a big-endian u64 followed by its bytes. Both nodes can
//! derive both directions' keys: node A draws `n` ([`RunNonce::generate`]), seals with
//! `derive_envelope_key(a, B_pub, job, "A", "B", n)` and sends `n` with its envelopes; node B
//! opens with `derive_envelope_key(b, A_pub, job, "A", "B", n)`.
//!
//! # Guarantees and assumptions
//!
//! * Confidentiality and integrity against the coordinator and anyone but the two nodes, given
//!   that each node verified the other's public key (bound to its certificate).
//! * An envelope opens only under the same job, direction and sequence number it was sealed
//!   with; replays under another sequence number fail. Detecting a replayed or dropped `seq`
//!   is the caller's job (track the next expected number).
//! * **The sender must never seal two messages with the same `seq` under one key**: nonce reuse
//!   breaks AES-GCM. The run nonce makes every run's key fresh, so even a job id that a node
//!   is offered twice (say after its state was lost) never reuses a key: the sender draws a
//!   new run nonce each time.
//! * The run nonce is sent in clear: it is not secret, only fresh. A coordinator that alters it
//!   makes the envelopes fail to open (which it could do anyway).
//! * No forward secrecy: the key derives from long-term keys.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;

/// HKDF salt for envelope keys.
const KEY_SALT: &[u8] = b"parley/v2/envelope-key";
/// Prefix of every envelope's associated data.
const AAD_PREFIX: &[u8] = b"parley/v2/envelope";
/// Length of a run nonce.
pub const RUN_NONCE_LEN: usize = 16;

/// The fresh value a sender mixes into its direction's key for one run of a job.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunNonce(pub [u8; RUN_NONCE_LEN]);

impl RunNonce {
    /// A fresh nonce from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; RUN_NONCE_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CryptoError::Randomness)?;
        Ok(RunNonce(bytes))
    }

    /// The nonce from its wire bytes, `None` unless exactly [`RUN_NONCE_LEN`] long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(RunNonce)
    }
}
/// Length of the AES-GCM tag appended to each sealed envelope.
pub const TAG_LEN: usize = 16;

/// A node's long-term X25519 secret for envelopes. `Debug` prints nothing; zeroed on drop.
pub struct EnvelopeSecret(StaticSecret);

impl EnvelopeSecret {
    /// A fresh secret from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Randomness`] if the generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| CryptoError::Randomness)?;
        Ok(Self::from_bytes(*bytes))
    }

    /// The secret from its 32-byte encoding (any 32 bytes are a valid, clamped-on-use secret).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EnvelopeSecret(StaticSecret::from(bytes))
    }

    /// The 32-byte encoding of the secret, for persisting it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching X25519 public key.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }
}

impl fmt::Debug for EnvelopeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvelopeSecret(..)")
    }
}

/// An AES-256-GCM key for one direction (`from` → `to`) of one job. `Debug` prints nothing.
pub struct EnvelopeKey {
    key: LessSafeKey,
    /// `AAD_PREFIX || lp(job_id) || lp(from) || lp(to) || run_nonce`; the sequence number is
    /// appended per envelope.
    aad_prefix: Vec<u8>,
}

impl fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvelopeKey(..)")
    }
}

/// Appends the big-endian u64 length of `s` and then `s`.
fn push_lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Derives the envelope key for messages of job `job_id` sent by node `from` to node `to` in
/// the run for which `from` drew `run_nonce`.
///
/// # Errors
/// [`CryptoError::NonContributoryKey`] if `peer_public` is a low-order point (the shared secret
/// is all zeros); [`CryptoError::KeyDerivation`] if HKDF fails.
pub fn derive_envelope_key(
    mine: &EnvelopeSecret,
    peer_public: &[u8; 32],
    job_id: &str,
    from: &str,
    to: &str,
    run_nonce: &RunNonce,
) -> Result<EnvelopeKey, CryptoError> {
    let shared = mine.0.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(CryptoError::NonContributoryKey);
    }
    let mut info = Vec::new();
    push_lp(&mut info, job_id);
    push_lp(&mut info, from);
    push_lp(&mut info, to);
    info.extend_from_slice(&run_nonce.0);
    let prk = Salt::new(HKDF_SHA256, KEY_SALT).extract(shared.as_bytes());
    let info_parts = [info.as_slice()];
    let okm = prk
        .expand(&info_parts, &AES_256_GCM)
        .map_err(|_| CryptoError::KeyDerivation)?;
    let key = LessSafeKey::new(UnboundKey::from(okm));
    let mut aad_prefix = AAD_PREFIX.to_vec();
    aad_prefix.extend_from_slice(&info);
    Ok(EnvelopeKey { key, aad_prefix })
}

impl EnvelopeKey {
    fn nonce_and_aad(&self, seq: u64) -> (Nonce, Vec<u8>) {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let mut aad = Vec::with_capacity(self.aad_prefix.len() + 8);
        aad.extend_from_slice(&self.aad_prefix);
        aad.extend_from_slice(&seq.to_be_bytes());
        (Nonce::assume_unique_for_key(nonce), aad)
    }

    /// Seals `plaintext` as envelope number `seq`: ciphertext followed by a 16-byte tag.
    /// Never seal two envelopes with the same `seq` under one key.
    ///
    /// # Errors
    /// [`CryptoError::EnvelopeSeal`] if the plaintext is too long for AES-GCM.
    pub fn seal(&self, seq: u64, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (nonce, aad) = self.nonce_and_aad(seq);
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(&aad[..]), &mut buf)
            .map_err(|_| CryptoError::EnvelopeSeal {
                len: plaintext.len(),
            })?;
        Ok(buf)
    }

    /// Opens envelope number `seq`.
    ///
    /// # Errors
    /// [`CryptoError::EnvelopeAuthentication`] for a wrong key, job, direction or `seq`, or any
    /// altered byte.
    pub fn open(&self, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (nonce, aad) = self.nonce_and_aad(seq);
        let mut buf = sealed.to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(&aad[..]), &mut buf)
            .map_err(|_| CryptoError::EnvelopeAuthentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const N: RunNonce = RunNonce([7; RUN_NONCE_LEN]);

    struct Pair {
        a: EnvelopeSecret,
        b: EnvelopeSecret,
    }

    fn pair() -> Pair {
        Pair {
            a: EnvelopeSecret::generate().unwrap(),
            b: EnvelopeSecret::generate().unwrap(),
        }
    }

    #[test]
    fn round_trip_both_sides_derive_the_same_key() {
        let p = pair();
        let a_to_b = derive_envelope_key(&p.a, &p.b.public(), "job-1", "A", "B", &N).unwrap();
        let b_view = derive_envelope_key(&p.b, &p.a.public(), "job-1", "A", "B", &N).unwrap();
        let sealed = a_to_b.seal(7, b"points").unwrap();
        assert_eq!(sealed.len(), 6 + TAG_LEN);
        assert_ne!(&sealed[..6], b"points");
        assert_eq!(b_view.open(7, &sealed).unwrap(), b"points");
        assert_eq!(b_view.open(0, &b_view.seal(0, b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn wrong_seq_job_direction_key_or_tamper_fail() {
        let p = pair();
        let seal = derive_envelope_key(&p.a, &p.b.public(), "job-1", "A", "B", &N).unwrap();
        let sealed = seal.seal(1, b"hello").unwrap();
        let auth = Err(CryptoError::EnvelopeAuthentication);

        let open = derive_envelope_key(&p.b, &p.a.public(), "job-1", "A", "B", &N).unwrap();
        assert_eq!(open.open(2, &sealed), auth);

        let other_job = derive_envelope_key(&p.b, &p.a.public(), "job-2", "A", "B", &N).unwrap();
        assert_eq!(other_job.open(1, &sealed), auth);

        let swapped = derive_envelope_key(&p.b, &p.a.public(), "job-1", "B", "A", &N).unwrap();
        assert_eq!(swapped.open(1, &sealed), auth);

        // Length prefixes keep ("job-1A", "") apart from ("job-1", "A").
        let shifted = derive_envelope_key(&p.b, &p.a.public(), "job-1A", "", "B", &N).unwrap();
        assert_eq!(shifted.open(1, &sealed), auth);

        // Another run of the same job (a fresh run nonce) has another key: a sender that is
        // offered a job id twice never reuses a (key, nonce) pair.
        let other_run = RunNonce::generate().unwrap();
        assert_ne!(other_run, N);
        let rerun =
            derive_envelope_key(&p.b, &p.a.public(), "job-1", "A", "B", &other_run).unwrap();
        assert_eq!(rerun.open(1, &sealed), auth);
        let resealed = derive_envelope_key(&p.a, &p.b.public(), "job-1", "A", "B", &other_run)
            .unwrap()
            .seal(1, b"hello")
            .unwrap();
        assert_ne!(resealed, sealed);
        assert_eq!(RunNonce::from_slice(&[1; 15]), None);
        assert_eq!(RunNonce::from_slice(&N.0), Some(N));

        let stranger = EnvelopeSecret::generate().unwrap();
        let wrong_key =
            derive_envelope_key(&stranger, &p.a.public(), "job-1", "A", "B", &N).unwrap();
        assert_eq!(wrong_key.open(1, &sealed), auth);

        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(open.open(1, &t), auth, "byte {i}");
        }
        assert_eq!(open.open(1, &sealed[..sealed.len() - 1]), auth);
        assert_eq!(open.open(1, &[]), auth);
        assert_eq!(open.open(1, &sealed).unwrap(), b"hello");
    }

    #[test]
    fn low_order_public_keys_rejected() {
        let p = pair();
        // The all-zero u-coordinate and u = 1 are of low order.
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [[0u8; 32], one] {
            assert_eq!(
                derive_envelope_key(&p.a, &bad, "job", "A", "B", &N).unwrap_err(),
                CryptoError::NonContributoryKey
            );
        }
    }

    #[test]
    fn secret_bytes_round_trip_and_debug_redacts() {
        let s = EnvelopeSecret::generate().unwrap();
        let t = EnvelopeSecret::from_bytes(s.to_bytes());
        assert_eq!(s.public(), t.public());
        assert_eq!(format!("{s:?}"), "EnvelopeSecret(..)");
        let k = derive_envelope_key(&s, &pair().b.public(), "j", "A", "B", &N).unwrap();
        assert_eq!(format!("{k:?}"), "EnvelopeKey(..)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn open_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), seq: u64) {
            let p = pair();
            let k = derive_envelope_key(&p.a, &p.b.public(), "job", "A", "B", &N).unwrap();
            prop_assert_eq!(k.open(seq, &bytes), Err(CryptoError::EnvelopeAuthentication));
        }
    }
}
