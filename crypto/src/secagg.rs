//! Secure aggregation of u64 vectors (sum mod 2^64) with dropout tolerance: the synchronous
//! cryptographic core of Bonawitz et al.'s protocol, semi-honest variant, with the coordinator
//! as server. Networking, deadlines and retries belong to the caller.
//!
//! # What it computes and who learns what
//!
//! `n` clients, numbered `1..=n`, each hold a vector `x_u` of `vector_len` u64 words. The server
//! learns `Σ_{u∈U3} x_u mod 2^64`, where `U3` is the set of clients whose masked input arrived
//! in round 2, and nothing else about any individual `x_u` beyond what that sum reveals. It
//! also learns who took part in each round. Clients learn nothing about other inputs.
//!
//! # Threat model and assumptions
//!
//! * **Semi-honest** (honest-but-curious) server and clients: everybody follows the protocol
//!   but may try to learn from what it sees. The guarantee above holds against the server
//!   colluding with fewer than `t` clients, and against any set of fewer than `t` clients. An
//!   *active* server could lie about who dropped out (giving some clients' `b` and `s` shares to
//!   itself); that needs the paper's consistency-check round and signed survivor lists, not
//!   implemented here.
//! * `t` (the Shamir threshold) satisfies `n/2 < t <= n` and `t >= 2`; at most `n − t` clients
//!   may drop out over the whole run, else the run fails with
//!   [`SecAggError::TooFewSurvivors`] and no sum.
//! * Every party knows every client's Ed25519 public key (the caller's `PeerKeys`, bound to the
//!   federation's certificates), so the server cannot substitute advertised keys.
//! * X25519 is a secure key agreement (gap-Diffie–Hellman), HKDF-SHA256 a secure KDF, SHA-256
//!   collision resistant, AES-256-GCM a secure AEAD, AES-128-CTR a secure PRG (see [`prg`]),
//!   Ed25519 unforgeable, and every party's random number generator cryptographically secure.
//! * Inputs are private but the sum is released in the clear: add differential-privacy noise
//!   to inputs if the sum itself must not reveal individuals.
//!
//! # Protocol (Bonawitz et al., Fig. 4, semi-honest)
//!
//! 0. **AdvertiseKeys** — client `u` makes two fresh X25519 key pairs, `c_u` (to encrypt shares)
//!    and `s_u` (pairwise masks), and signs `(job, round 0, u, c_pk_u, s_pk_u)`. The server
//!    collects `U1` (≥ t) and broadcasts the advertisements.
//! 1. **ShareKeys** — client `u` checks every signature, draws a self-mask seed `b_u` and
//!    Shamir-shares `b_u` and `s_u` t-of-n (share for `v` taken at `x = v`), and for every
//!    `v ∈ U1` (itself included) seals `(u, v, share_v(b_u), share_v(s_u))` under a key derived
//!    from `X25519(c_u, c_pk_v)`. The server forwards each ciphertext to its recipient; `U2`
//!    (≥ t) are the clients whose ciphertexts arrived.
//! 2. **MaskedInput** — client `u` opens its ciphertexts from `U2` and sends, signed,
//!    `y_u = x_u + PRG(b_u) + Σ_{v∈U2, v>u} PRG(s_uv) − Σ_{v∈U2, v<u} PRG(s_uv)  (mod 2^64)`.
//!    `U3` (≥ t) are the clients whose masked inputs arrived.
//! 3. **Unmasking** — given `U3 ⊆ U2`, client `u` reveals, signed, its share of `b_v` for every
//!    `v ∈ U3` and of `s_v` for every `v ∈ U2 \ U3` — never both for one `v`. With ≥ t responses
//!    the server reconstructs them and computes
//!    `Σ_{u∈U3} y_u − Σ_{u∈U3} PRG(b_u) − Σ_{v∈U2\U3} Σ_{u∈U3} ±PRG(s_uv)`: the pairwise masks
//!    between survivors cancel, the others are removed, and the sum of the `x_u` remains.
//!
//! Roles are state machines: each round consumes the state and returns the next one, so steps
//! cannot run out of order. All randomness is drawn when a [`Client`] is created.
//!
//! # Key derivations
//!
//! `lp(job)` is the job id's byte length as u16 big-endian followed by its UTF-8 bytes; indices
//! are u32 big-endian; HKDF is HKDF-SHA256 (RFC 5869) with 32 bytes of output.
//!
//! ```text
//! channel key k_uv = HKDF(salt "parley/v1/secagg/share-key", X25519(c_u, c_pk_v), lp(job)||u||v)
//! share AAD        = "parley/v1/secagg/share" || lp(job) || 0x01 || u || v
//! share nonce      = 12 zero bytes (k_uv seals exactly one message: c keys are fresh per job)
//! share plaintext  = u || v || share of b_u (2×32) || share of s_u (2×32)         (136 bytes)
//! pairwise seed    = HKDF(salt "parley/v1/secagg/pairwise", X25519(s_u, s_pk_v),
//!                         lp(job) || min(u,v) || max(u,v))
//! signed bytes     = "parley/v1/secagg/signature" || message encoding without its signature,
//!                    except for MaskedInput: "parley/v1/secagg/signature" || header ||
//!                    count u32 BE || SHA-256(count × u64 LE)
//! ```
//! All-zero (non-contributory) X25519 results are rejected.
//!
//! # Messages
//!
//! Every message starts with the header `"PSAG" || version 0x02 || round u8 || sender u32 BE ||
//! lp(job)`; decoding rejects other versions, the wrong round, wrong lengths and trailing bytes.
//!
//! ```text
//! AdvertiseKeys  (round 0): header || c_pk (32) || s_pk (32) || Ed25519 signature (64)
//! EncryptedShare (round 1): header || recipient u32 BE || AES-256-GCM(plaintext) || tag (152)
//! MaskedInput    (round 2): header || count u32 BE || count × u64 LE || signature (64)
//! UnmaskShares   (round 3): header || count u32 BE || count × (owner u32 BE || kind u8
//!                           (0 = self-mask seed, 1 = masking key) || share (64)) || signature (64)
//! ```
//!
//! # Reference
//!
//! K. Bonawitz, V. Ivanov, B. Kreuter, A. Marcedone, H. B. McMahan, S. Patel, D. Ramage,
//! A. Segal, K. Seth: "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
//! ACM CCS 2017. <https://eprint.iacr.org/2017/281>

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use curve25519_dalek::montgomery::MontgomeryPoint;
use rayon::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::signature::{ED25519, UnparsedPublicKey};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

mod client;
mod messages;
pub mod prg;
mod server;
#[cfg(test)]
mod tests;

pub use client::{
    Client, ClientAwaitingAdvertisements, ClientAwaitingShares, ClientAwaitingSurvivors,
};
pub use messages::{
    AdvertiseKeys, EncryptedShare, MaskedInput, MessageKind, ShareKind, UnmaskEntry, UnmaskShares,
};
pub use server::{Server, ServerAwaitingInputs, ServerAwaitingShares, ServerAwaitingUnmask};

/// Longest job id, in bytes.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Most participants in one run.
pub const MAX_PARTICIPANTS: u32 = 10_000;
/// Longest vector (2^27 words = 1 GiB per vector).
pub const MAX_VECTOR_LEN: usize = 1 << 27;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a share plaintext: sender, recipient, two byte shares.
const SHARE_PLAINTEXT_LEN: usize = 4 + 4 + 2 * crate::shamir::BYTE_SHARE_LEN;
/// Length of a sealed share: plaintext and the 16-byte AES-GCM tag.
pub const SEALED_SHARE_LEN: usize = SHARE_PLAINTEXT_LEN + 16;

/// HKDF salt of the share-encryption keys.
const SHARE_KEY_SALT: &[u8] = b"parley/v1/secagg/share-key";
/// Prefix of the share AAD.
const SHARE_AAD_PREFIX: &[u8] = b"parley/v1/secagg/share";
/// HKDF salt of the pairwise mask seeds.
const PAIRWISE_SALT: &[u8] = b"parley/v1/secagg/pairwise";
/// Prefix of every signed byte string.
const SIGNATURE_DOMAIN: &[u8] = b"parley/v1/secagg/signature";

/// Signs bytes with the client's Ed25519 node key, returning the 64-byte signature.
pub type Signer = Arc<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;
/// Every participant's Ed25519 public key (32 bytes), by index `1..=n`.
pub type PeerKeys = BTreeMap<u32, [u8; 32]>;

/// The parameters of one run, identical at every party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The job id, bound into every message and key (1..=[`MAX_JOB_ID_LEN`] bytes). Must be
    /// unique per run.
    pub job_id: String,
    /// Number of participants, indexed `1..=n` (2..=[`MAX_PARTICIPANTS`]).
    pub n: u32,
    /// Shamir threshold `t`: `n/2 < t <= n`, `t >= 2`. Also the fewest clients that must survive
    /// every round.
    pub threshold: u32,
    /// Words in every input vector (`1..=max_vector_len`).
    pub vector_len: usize,
    /// The largest vector this deployment accepts (at most [`MAX_VECTOR_LEN`]); decoding caps
    /// declared lengths with it.
    pub max_vector_len: usize,
}

impl Params {
    /// `UnknownParticipant` for an index outside `1..=n`, else `NotInPreviousRound`.
    fn outsider(&self, from: u32, round: u8) -> SecAggError {
        if from == 0 || from > self.n {
            SecAggError::UnknownParticipant { from, round }
        } else {
            SecAggError::NotInPreviousRound { from, round }
        }
    }

    /// The default Shamir threshold for `n` participants: ⌊2n/3⌋ + 1 (more than half, and
    /// tolerating up to a third of them dropping out).
    pub fn default_threshold(n: u32) -> u32 {
        2 * n / 3 + 1
    }

    /// Checks the ranges documented on each field.
    ///
    /// # Errors
    /// [`SecAggError::JobIdLength`], [`SecAggError::ParticipantsOutOfRange`],
    /// [`SecAggError::ThresholdOutOfRange`] or [`SecAggError::VectorLenOutOfRange`].
    pub fn validate(&self) -> Result<(), SecAggError> {
        if self.job_id.is_empty() || self.job_id.len() > MAX_JOB_ID_LEN {
            return Err(SecAggError::JobIdLength {
                len: self.job_id.len(),
                max: MAX_JOB_ID_LEN,
            });
        }
        if self.n < 2 || self.n > MAX_PARTICIPANTS {
            return Err(SecAggError::ParticipantsOutOfRange {
                n: self.n,
                max: MAX_PARTICIPANTS,
            });
        }
        if self.threshold < 2 || self.threshold > self.n || self.threshold <= self.n / 2 {
            return Err(SecAggError::ThresholdOutOfRange {
                t: self.threshold,
                n: self.n,
            });
        }
        if self.max_vector_len > MAX_VECTOR_LEN
            || self.vector_len == 0
            || self.vector_len > self.max_vector_len
        {
            return Err(SecAggError::VectorLenOutOfRange {
                len: self.vector_len,
                max: self.max_vector_len.min(MAX_VECTOR_LEN),
            });
        }
        Ok(())
    }
}

/// Everything that can go wrong in secure aggregation. Variants name the sender's index and
/// the round; none carries a key, share, seed, mask or input value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    // ---- 1. Invalid data from a peer (decoding) ------------------------------------------
    /// Too short to hold a message header.
    #[error("{kind}: {len} bytes is too short for a message header")]
    Truncated {
        /// The message being decoded.
        kind: MessageKind,
        /// Its length.
        len: usize,
    },
    /// Does not start with the secure-aggregation magic bytes.
    #[error("{kind}: not a secure-aggregation message (bad magic bytes)")]
    BadMagic {
        /// The message being decoded.
        kind: MessageKind,
    },
    /// Another wire-format version.
    #[error(
        "{kind}: wire format version {version} is not supported (expected 2); run the same Parley version on every node"
    )]
    UnsupportedVersion {
        /// The message being decoded.
        kind: MessageKind,
        /// The version found.
        version: u8,
    },
    /// A message of another round where this one was expected.
    #[error("{kind} from participant {from}: carries round {got}, expected round {}", kind.round())]
    WrongRound {
        /// The message expected.
        kind: MessageKind,
        /// The sender.
        from: u32,
        /// The round found.
        got: u8,
    },
    /// The job id is empty, too long or not UTF-8.
    #[error("{kind} from participant {from}: job id is empty, longer than 128 bytes or not UTF-8")]
    JobIdEncoding {
        /// The message being decoded.
        kind: MessageKind,
        /// The sender.
        from: u32,
    },
    /// The message is not exactly as long as its contents require (truncated or trailing bytes).
    #[error("{kind} from participant {from}: {got} bytes, expected {expected}")]
    Length {
        /// The message being decoded.
        kind: MessageKind,
        /// The sender.
        from: u32,
        /// The length its header and counts require.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A declared element count above the limit.
    #[error("{kind} from participant {from}: declares {count} elements, limit is {max}")]
    CountTooLarge {
        /// The message being decoded.
        kind: MessageKind,
        /// The sender.
        from: u32,
        /// The declared count.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A share value is not a canonical scalar encoding.
    #[error("share from participant {from} is not a canonical scalar encoding")]
    NonCanonicalShare {
        /// The sender.
        from: u32,
    },
    /// An unmasking entry with an unknown kind tag.
    #[error("round-3 unmasking shares from participant {from}: unknown share kind {tag}")]
    UnknownShareKind {
        /// The sender.
        from: u32,
        /// The tag found.
        tag: u8,
    },

    // ---- 2. Peer misbehaved ----------------------------------------------------------------
    /// The sender index is not a participant of this run (outside `1..=n`).
    #[error("round {round}: message from unknown participant {from}")]
    UnknownParticipant {
        /// The claimed sender.
        from: u32,
        /// The round.
        round: u8,
    },
    /// The Ed25519 signature does not verify: altered bytes or a forged sender.
    #[error(
        "round {round}: signature of participant {from} does not verify (altered or forged message)"
    )]
    BadSignature {
        /// The claimed sender.
        from: u32,
        /// The round.
        round: u8,
    },
    /// The message belongs to another job (a replay).
    #[error("round {round}: message from participant {from} belongs to another job (replay?)")]
    WrongJob {
        /// The sender.
        from: u32,
        /// The round.
        round: u8,
    },
    /// A second message from the same sender in the same round.
    #[error("round {round}: duplicate message from participant {from}")]
    Duplicate {
        /// The sender.
        from: u32,
        /// The round.
        round: u8,
    },
    /// The sender did not survive the previous round, so may not speak in this one.
    #[error("round {round}: participant {from} did not survive the previous round")]
    NotInPreviousRound {
        /// The sender.
        from: u32,
        /// The round.
        round: u8,
    },
    /// A round-1 batch contains a share claiming another sender.
    #[error("round 1: batch from participant {from} contains a share claiming sender {claimed}")]
    SenderMismatch {
        /// The sender of the batch.
        from: u32,
        /// The sender named inside the share.
        claimed: u32,
    },
    /// A round-1 batch does not hold exactly one share for every round-0 survivor.
    #[error("round 1: participant {from} did not send exactly one share to every round-0 survivor")]
    WrongRecipients {
        /// The sender.
        from: u32,
    },
    /// A share addressed to another client was delivered here.
    #[error("round 1: share from participant {from} is addressed to participant {to}, not to us")]
    Misaddressed {
        /// The sender.
        from: u32,
        /// Its recipient.
        to: u32,
    },
    /// An encrypted share failed authentication (altered, replayed or misrouted).
    #[error(
        "round 1: encrypted share from participant {from} failed authentication (altered or replayed)"
    )]
    ShareAuthentication {
        /// The sender.
        from: u32,
    },
    /// An authenticated share names the wrong sender or recipient inside.
    #[error("round 1: share from participant {from} names a different sender or recipient inside")]
    ShareBinding {
        /// The sender.
        from: u32,
    },
    /// A peer's X25519 public key is of low order (all-zero shared secret).
    #[error("participant {from} advertised a low-order X25519 key (non-contributory)")]
    NonContributoryKey {
        /// The peer.
        from: u32,
    },
    /// The server relayed our own advertisement altered.
    #[error("round 0: the server relayed our own advertisement (participant {from}) altered")]
    AdvertisementMismatch {
        /// Our index.
        from: u32,
    },
    /// The server's list for a round lacks our own message: we were dropped.
    #[error("round {round}: our own message is missing from the server's list; we were dropped")]
    NotIncluded {
        /// The round.
        round: u8,
    },
    /// A masked input of the wrong length.
    #[error("round 2: masked input from participant {from} has {got} words, expected {expected}")]
    WrongVectorLength {
        /// The sender.
        from: u32,
        /// The run's vector length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The survivor list names a client outside round 2, or names one twice.
    #[error(
        "round 3: survivor list names participant {index}, not a round-2 client or listed twice"
    )]
    InvalidSurvivor {
        /// The offending entry.
        index: u32,
    },
    /// An unmasking message lacks, repeats, misorders or mislabels the entry for `owner`.
    #[error(
        "round 3: participant {from} sent a missing, extra or wrong-kind share for participant {owner}"
    )]
    UnmaskContents {
        /// The sender.
        from: u32,
        /// The owner whose entry is wrong (or the first unexpected one).
        owner: u32,
    },
    /// A secret of `owner` did not reconstruct consistently.
    #[error("round 3: the shares of participant {owner}'s secret are inconsistent")]
    ReconstructionFailed {
        /// The owner of the secret.
        owner: u32,
    },
    /// Too few clients survived a round: the run is over, with no sum.
    #[error(
        "round {round}: only {have} participants remain, {need} needed; the run fails with no result"
    )]
    TooFewSurvivors {
        /// The round whose messages were too few.
        round: u8,
        /// How many arrived.
        have: usize,
        /// The threshold.
        need: u32,
    },

    // ---- 3. Local misuse or configuration -----------------------------------------------
    /// The job id is empty or too long.
    #[error("job id is {len} bytes; use 1..={max} bytes")]
    JobIdLength {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too few or too many participants.
    #[error("{n} participants; use 2..={max}")]
    ParticipantsOutOfRange {
        /// The requested count.
        n: u32,
        /// The limit.
        max: u32,
    },
    /// A threshold outside `n/2 < t <= n`, `t >= 2`.
    #[error(
        "threshold {t} for {n} participants; choose n/2 < t <= n and t >= 2 (e.g. t = ceil(2n/3))"
    )]
    ThresholdOutOfRange {
        /// The requested threshold.
        t: u32,
        /// The number of participants.
        n: u32,
    },
    /// A vector length outside `1..=max_vector_len` (or a cap above [`MAX_VECTOR_LEN`]).
    #[error("vector length {len} is outside 1..={max}")]
    VectorLenOutOfRange {
        /// The requested length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// This party's index is outside `1..=n`.
    #[error("participant index {index} is outside 1..={n}")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// The number of participants.
        n: u32,
    },
    /// No Ed25519 public key was supplied for a participant.
    #[error("no Ed25519 public key for participant {index}; supply one for every index 1..=n")]
    MissingPeerKey {
        /// The participant.
        index: u32,
    },
    /// The local input has the wrong length.
    #[error("input has {got} words, the run expects {expected}")]
    InputLength {
        /// The run's vector length.
        expected: usize,
        /// The input's length.
        got: usize,
    },
    /// AES-GCM key setup or sealing failed (cannot happen with valid lengths).
    #[error("AES-GCM key setup or sealing failed")]
    Aead,
}

/// HKDF-SHA256 (RFC 5869) with 32 bytes of output: `PRK = HMAC(salt, ikm)`,
/// `OKM = HMAC(PRK, info || 0x01)`. Infallible for this output length.
pub(crate) fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()));
    for part in info {
        ctx.update(part);
    }
    ctx.update(&[1]);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// `lp(job)`: u16 big-endian length and the UTF-8 bytes (job ids are at most 128 bytes).
fn lp_job(job_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + job_id.len());
    out.extend_from_slice(
        &u16::try_from(job_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(job_id.as_bytes());
    out
}

/// Signs `SIGNATURE_DOMAIN || body`.
fn sign_body(signer: &dyn Fn(&[u8]) -> [u8; 64], body: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + body.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(body);
    signer(&msg)
}

/// Verifies `from`'s signature over `SIGNATURE_DOMAIN || body`.
fn verify_body(
    peers: &PeerKeys,
    from: u32,
    round: u8,
    body: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), SecAggError> {
    let key = peers
        .get(&from)
        .ok_or(SecAggError::UnknownParticipant { from, round })?;
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + body.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(body);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&msg, signature)
        .map_err(|_| SecAggError::BadSignature { from, round })
}

/// True if every `(from, body, signature)` verifies, as [`verify_body`] would, checked as
/// random linear combinations of the Ed25519 verification equations (ed25519-dalek's batch
/// verification, about three times cheaper per signature than one at a time). False if any
/// does not, or a key is unknown or malformed: callers then verify one by one, with `ring`,
/// for a precise error.
///
/// The batch equation is cofactorless like `ring`'s; it may accept, with small probability, a
/// signature whose signer deliberately mixed a small-order point into it, which only the
/// holder of the signing key can do, so unforgeability is unaffected.
fn batch_verifies(peers: &PeerKeys, items: &[(u32, Vec<u8>, [u8; SIGNATURE_LEN])]) -> bool {
    let threads = rayon::current_num_threads().max(1);
    let chunk = items.len().div_ceil(threads).max(16);
    items.par_chunks(chunk).all(|part| {
        let mut keys = Vec::with_capacity(part.len());
        let mut messages = Vec::with_capacity(part.len());
        let mut signatures = Vec::with_capacity(part.len());
        for (from, body, signature) in part {
            let Some(key) = peers.get(from) else {
                return false;
            };
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else {
                return false;
            };
            keys.push(key);
            messages.push([SIGNATURE_DOMAIN, body].concat());
            signatures.push(ed25519_dalek::Signature::from_bytes(signature));
        }
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok()
    })
}

/// Checks the parameters and that `peers` has a key for every index `1..=n` (extra entries are
/// ignored and dropped).
fn check_setup(params: &Params, peers: PeerKeys) -> Result<PeerKeys, SecAggError> {
    params.validate()?;
    let mut kept = PeerKeys::new();
    for index in 1..=params.n {
        let key = peers
            .get(&index)
            .ok_or(SecAggError::MissingPeerKey { index })?;
        kept.insert(index, *key);
    }
    Ok(kept)
}

/// `X25519(secret, peer_public)` (RFC 7748), rejecting an all-zero result (blamed on `peer`).
///
/// The result is exactly X25519's, computed the faster way where it can be: a peer key on the
/// curve is mapped to its Edwards point (the birational map of RFC 7748 §4.1; either sign,
/// since `±P` share their `u`-coordinate), multiplied by the clamped secret with the constant-
/// time variable-base multiplication of `curve25519-dalek`, which uses its AVX2 backend where
/// the CPU has it, and mapped back with `u = (1 + y) / (1 − y)`. That is about twice as fast
/// here as the Montgomery ladder, which only ever uses the serial field arithmetic (see
/// BENCHMARKS.md). A key on the quadratic twist has no Edwards point; it goes through the
/// ladder, as in X25519 proper. Peer keys are public, so the branch leaks nothing secret.
fn agree(
    secret: &StaticSecret,
    peer_public: &[u8; 32],
    peer: u32,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let scalar = Zeroizing::new(secret.to_bytes());
    let u = MontgomeryPoint(*peer_public);
    let mut shared = match u.to_edwards(0) {
        Some(point) => {
            let mut product = point.mul_clamped(*scalar);
            let shared = product.to_montgomery();
            product.zeroize();
            shared
        }
        None => u.mul_clamped(*scalar),
    };
    let out = Zeroizing::new(shared.to_bytes());
    shared.zeroize();
    if out.iter().all(|&b| b == 0) {
        return Err(SecAggError::NonContributoryKey { from: peer });
    }
    Ok(out)
}

/// The pairwise mask seed of participants `me` and `peer`, from my masking secret and the
/// peer's masking public key.
fn pairwise_seed(
    job_id: &str,
    my_secret: &StaticSecret,
    me: u32,
    peer_public: &[u8; 32],
    peer: u32,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = agree(my_secret, peer_public, peer)?;
    let (lo, hi) = (me.min(peer), me.max(peer));
    Ok(hkdf32(
        PAIRWISE_SALT,
        shared.as_ref(),
        &[&lp_job(job_id), &lo.to_be_bytes(), &hi.to_be_bytes()],
    ))
}

/// The AES-256-GCM key and AAD for the share sent by `from` to `to`.
struct ShareChannel {
    key: LessSafeKey,
    aad: Vec<u8>,
}

impl fmt::Debug for ShareChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareChannel(..)")
    }
}

impl ShareChannel {
    /// Both directions between `me` and `peer` from one X25519 agreement: (me → peer,
    /// peer → me). The keys differ (HKDF info names the direction).
    fn pair(
        job_id: &str,
        my_secret: &StaticSecret,
        peer_public: &[u8; 32],
        peer: u32,
        me: u32,
    ) -> Result<(Self, Self), SecAggError> {
        let shared = agree(my_secret, peer_public, peer)?;
        Ok((
            Self::from_shared(job_id, &shared, me, peer)?,
            Self::from_shared(job_id, &shared, peer, me)?,
        ))
    }

    fn from_shared(
        job_id: &str,
        shared: &Zeroizing<[u8; 32]>,
        from: u32,
        to: u32,
    ) -> Result<Self, SecAggError> {
        let job = lp_job(job_id);
        let okm = hkdf32(
            SHARE_KEY_SALT,
            shared.as_ref(),
            &[&job, &from.to_be_bytes(), &to.to_be_bytes()],
        );
        let key = UnboundKey::new(&AES_256_GCM, okm.as_ref()).map_err(|_| SecAggError::Aead)?;
        let mut aad = Vec::with_capacity(SHARE_AAD_PREFIX.len() + job.len() + 9);
        aad.extend_from_slice(SHARE_AAD_PREFIX);
        aad.extend_from_slice(&job);
        aad.push(MessageKind::EncryptedShare.round());
        aad.extend_from_slice(&from.to_be_bytes());
        aad.extend_from_slice(&to.to_be_bytes());
        Ok(ShareChannel {
            key: LessSafeKey::new(key),
            aad,
        })
    }

    fn seal(
        &self,
        plaintext: &[u8; SHARE_PLAINTEXT_LEN],
    ) -> Result<[u8; SEALED_SHARE_LEN], SecAggError> {
        let mut buf = Zeroizing::new(Vec::with_capacity(SEALED_SHARE_LEN));
        buf.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&self.aad[..]),
                &mut *buf,
            )
            .map_err(|_| SecAggError::Aead)?;
        let mut out = [0u8; SEALED_SHARE_LEN];
        if buf.len() != SEALED_SHARE_LEN {
            return Err(SecAggError::Aead);
        }
        out.copy_from_slice(&buf);
        Ok(out)
    }

    /// Opens a sealed share; `None` if authentication fails.
    fn open(
        &self,
        sealed: &[u8; SEALED_SHARE_LEN],
    ) -> Option<Zeroizing<[u8; SHARE_PLAINTEXT_LEN]>> {
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&self.aad[..]),
                &mut buf,
            )
            .ok()?;
        let mut out = Zeroizing::new([0u8; SHARE_PLAINTEXT_LEN]);
        if plain.len() != SHARE_PLAINTEXT_LEN {
            return None;
        }
        out.copy_from_slice(plain);
        Some(out)
    }
}
