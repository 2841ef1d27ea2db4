//! The four protocol messages and their canonical byte encodings (see the module docs of
//! [`crate::secagg`] for the layouts).

use std::fmt;

use rayon::prelude::*;

use crate::shamir::{BYTE_SHARE_LEN, ByteShare};

use super::{
    MAX_JOB_ID_LEN, MAX_PARTICIPANTS, PeerKeys, SEALED_SHARE_LEN, SIGNATURE_LEN, SecAggError,
    batch_verifies, sign_body, verify_body,
};

/// Magic bytes at the start of every message.
const MAGIC: &[u8; 4] = b"PSAG";
/// Wire format version: 2 since masked inputs are signed over a SHA-256 digest of the vector
/// (version 1 signed the whole vector); nodes of different versions cannot run together.
const VERSION: u8 = 2;
/// `MAGIC || version || round || sender || job id length`.
const HEADER_FIXED: usize = 4 + 1 + 1 + 4 + 2;
/// Bytes per entry of an [`UnmaskShares`] message: owner, kind, share.
const UNMASK_ENTRY_LEN: usize = 4 + 1 + BYTE_SHARE_LEN;

/// Which message a decoding error or a check refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// Round 0: [`AdvertiseKeys`].
    AdvertiseKeys,
    /// Round 1: [`EncryptedShare`].
    EncryptedShare,
    /// Round 2: [`MaskedInput`].
    MaskedInput,
    /// Round 3: [`UnmaskShares`].
    UnmaskShares,
}

impl MessageKind {
    /// The protocol round this message belongs to (0..=3).
    pub fn round(self) -> u8 {
        match self {
            MessageKind::AdvertiseKeys => 0,
            MessageKind::EncryptedShare => 1,
            MessageKind::MaskedInput => 2,
            MessageKind::UnmaskShares => 3,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::AdvertiseKeys => "round-0 key advertisement",
            MessageKind::EncryptedShare => "round-1 encrypted share",
            MessageKind::MaskedInput => "round-2 masked input",
            MessageKind::UnmaskShares => "round-3 unmasking shares",
        })
    }
}

/// Starts an encoding: the header for `kind` from `from` in job `job_id`.
fn header(kind: MessageKind, from: u32, job_id: &str, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_FIXED + job_id.len() + body_len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind.round());
    out.extend_from_slice(&from.to_be_bytes());
    // Job ids are at most MAX_JOB_ID_LEN bytes (checked by `Params` and by decoding).
    let len = u16::try_from(job_id.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(job_id.as_bytes());
    out
}

/// A cursor over a message being decoded; its errors name the message kind and the sender.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    kind: MessageKind,
    from: u32,
}

impl<'a> Reader<'a> {
    /// Parses the header; returns the reader positioned after it, and the job id.
    fn start(kind: MessageKind, bytes: &'a [u8]) -> Result<(Self, String), SecAggError> {
        if bytes.len() < HEADER_FIXED {
            return Err(SecAggError::Truncated {
                kind,
                len: bytes.len(),
            });
        }
        if &bytes[..4] != MAGIC {
            return Err(SecAggError::BadMagic { kind });
        }
        if bytes[4] != VERSION {
            return Err(SecAggError::UnsupportedVersion {
                kind,
                version: bytes[4],
            });
        }
        let from = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        if bytes[5] != kind.round() {
            return Err(SecAggError::WrongRound {
                kind,
                from,
                got: bytes[5],
            });
        }
        let job_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
        if job_len == 0 || job_len > MAX_JOB_ID_LEN {
            return Err(SecAggError::JobIdEncoding { kind, from });
        }
        let mut reader = Reader {
            bytes,
            pos: HEADER_FIXED,
            kind,
            from,
        };
        let job = reader.take(job_len)?;
        let job_id = std::str::from_utf8(job)
            .map_err(|_| SecAggError::JobIdEncoding { kind, from })?
            .to_owned();
        Ok((reader, job_id))
    }

    fn length_error(&self, expected: usize) -> SecAggError {
        SecAggError::Length {
            kind: self.kind,
            from: self.from,
            expected,
            got: self.bytes.len(),
        }
    }

    /// Fails unless the whole message is exactly `remaining` more bytes.
    fn expect_remaining(&self, remaining: usize) -> Result<(), SecAggError> {
        let expected = self.pos.saturating_add(remaining);
        if self.bytes.len() != expected {
            return Err(self.length_error(expected));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SecAggError> {
        let end = self.pos.saturating_add(n);
        if end > self.bytes.len() {
            return Err(self.length_error(end));
        }
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SecAggError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SecAggError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A declared element count, capped at `max`.
    fn count(&mut self, max: usize) -> Result<usize, SecAggError> {
        let count = self.u32()?;
        let as_usize = usize::try_from(count).unwrap_or(usize::MAX);
        if as_usize > max {
            return Err(SecAggError::CountTooLarge {
                kind: self.kind,
                from: self.from,
                count: u64::from(count),
                max: u64::try_from(max).unwrap_or(u64::MAX),
            });
        }
        Ok(as_usize)
    }
}

// ---- Round 0 --------------------------------------------------------------------------------

/// Round 0, client → server → all clients: a client's two X25519 public keys, signed with its
/// Ed25519 node key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertiseKeys {
    job_id: String,
    from: u32,
    channel_public: [u8; 32],
    masking_public: [u8; 32],
    signature: [u8; SIGNATURE_LEN],
}

impl AdvertiseKeys {
    /// Builds and signs the advertisement.
    pub(super) fn signed(
        job_id: &str,
        from: u32,
        channel_public: [u8; 32],
        masking_public: [u8; 32],
        signer: &dyn Fn(&[u8]) -> [u8; 64],
    ) -> Self {
        let mut msg = AdvertiseKeys {
            job_id: job_id.to_owned(),
            from,
            channel_public,
            masking_public,
            signature: [0; SIGNATURE_LEN],
        };
        msg.signature = sign_body(signer, &msg.body());
        msg
    }

    fn body(&self) -> Vec<u8> {
        let mut out = header(
            MessageKind::AdvertiseKeys,
            self.from,
            &self.job_id,
            64 + SIGNATURE_LEN,
        );
        out.extend_from_slice(&self.channel_public);
        out.extend_from_slice(&self.masking_public);
        out
    }

    /// The canonical encoding: header || channel public key || masking public key || signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a canonical encoding (the signature is checked by the roles, not here).
    ///
    /// # Errors
    /// A decoding error naming the sender where the header was readable.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let (mut r, job_id) = Reader::start(MessageKind::AdvertiseKeys, bytes)?;
        r.expect_remaining(64 + SIGNATURE_LEN)?;
        Ok(AdvertiseKeys {
            job_id,
            from: r.from,
            channel_public: r.array()?,
            masking_public: r.array()?,
            signature: r.array()?,
        })
    }

    /// The sender's participant index (as claimed; authenticated by the signature).
    pub fn sender(&self) -> u32 {
        self.from
    }

    /// The job this message belongs to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The X25519 public key the sender's shares are encrypted with.
    pub fn channel_public(&self) -> &[u8; 32] {
        &self.channel_public
    }

    /// The X25519 public key the sender's pairwise masks derive from.
    pub fn masking_public(&self) -> &[u8; 32] {
        &self.masking_public
    }

    /// Checks the signature against the sender's Ed25519 key.
    pub(super) fn verify(&self, peers: &PeerKeys) -> Result<(), SecAggError> {
        verify_body(peers, self.from, 0, &self.body(), &self.signature)
    }

    /// Checks every signature: `Ok` or the error [`verify`](Self::verify) gives, per
    /// advertisement, in order. One batch check first; one by one only if it fails.
    pub(super) fn verify_all(
        ads: &[AdvertiseKeys],
        peers: &PeerKeys,
    ) -> Vec<Result<(), SecAggError>> {
        let items: Vec<_> = ads
            .iter()
            .map(|a| (a.from, a.body(), a.signature))
            .collect();
        if batch_verifies(peers, &items) {
            return vec![Ok(()); ads.len()];
        }
        ads.par_iter().map(|a| a.verify(peers)).collect()
    }
}

// ---- Round 1 --------------------------------------------------------------------------------

/// Round 1, client `from` → server → client `to`: `from`'s shares of its self-mask seed and its
/// masking key for `to`, sealed with AES-256-GCM under a key only `from` and `to` can derive.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    job_id: String,
    from: u32,
    to: u32,
    sealed: [u8; SEALED_SHARE_LEN],
}

impl fmt::Debug for EncryptedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedShare")
            .field("job_id", &self.job_id)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl EncryptedShare {
    pub(super) fn new(job_id: &str, from: u32, to: u32, sealed: [u8; SEALED_SHARE_LEN]) -> Self {
        EncryptedShare {
            job_id: job_id.to_owned(),
            from,
            to,
            sealed,
        }
    }

    /// The canonical encoding: header || recipient (u32 BE) || sealed share (152 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(
            MessageKind::EncryptedShare,
            self.from,
            &self.job_id,
            4 + SEALED_SHARE_LEN,
        );
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Decodes a canonical encoding (authenticity is checked by the recipient).
    ///
    /// # Errors
    /// A decoding error naming the sender where the header was readable.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let (mut r, job_id) = Reader::start(MessageKind::EncryptedShare, bytes)?;
        r.expect_remaining(4 + SEALED_SHARE_LEN)?;
        Ok(EncryptedShare {
            job_id,
            from: r.from,
            to: r.u32()?,
            sealed: r.array()?,
        })
    }

    /// The sender's participant index.
    pub fn sender(&self) -> u32 {
        self.from
    }

    /// The recipient's participant index: the server forwards the message to it.
    pub fn recipient(&self) -> u32 {
        self.to
    }

    /// The job this message belongs to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    pub(super) fn sealed(&self) -> &[u8; SEALED_SHARE_LEN] {
        &self.sealed
    }
}

// ---- Round 2 --------------------------------------------------------------------------------

/// Round 2, client → server: the client's input plus its masks, mod 2^64, signed.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedInput {
    job_id: String,
    from: u32,
    vector: Vec<u64>,
    signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for MaskedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskedInput")
            .field("job_id", &self.job_id)
            .field("from", &self.from)
            .field("len", &self.vector.len())
            .finish_non_exhaustive()
    }
}

impl MaskedInput {
    pub(super) fn signed(
        job_id: &str,
        from: u32,
        vector: Vec<u64>,
        signer: &dyn Fn(&[u8]) -> [u8; 64],
    ) -> Self {
        let mut msg = MaskedInput {
            job_id: job_id.to_owned(),
            from,
            vector,
            signature: [0; SIGNATURE_LEN],
        };
        msg.signature = sign_body(signer, &msg.signed_part());
        msg
    }

    /// What the signature covers: header || count (u32 BE) || SHA-256 of the count × u64 LE
    /// words. Hashing the vector once with SHA-256 (hardware-accelerated where the CPU has
    /// SHA extensions) instead of letting Ed25519 run SHA-512 over it twice at the signer and
    /// once at the verifier makes signing a 10^5-word vector about 8× cheaper; it relies on
    /// SHA-256's collision resistance, as Ed25519 relies on SHA-512's.
    fn signed_part(&self) -> Vec<u8> {
        let mut out = header(MessageKind::MaskedInput, self.from, &self.job_id, 4 + 32);
        let count = u32::try_from(self.vector.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&vector_digest(&self.vector));
        out
    }

    fn body(&self) -> Vec<u8> {
        let mut out = header(
            MessageKind::MaskedInput,
            self.from,
            &self.job_id,
            4 + 8 * self.vector.len() + SIGNATURE_LEN,
        );
        // Vector lengths are capped by `Params` (at most MAX_VECTOR_LEN < 2^32).
        let count = u32::try_from(self.vector.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for w in &self.vector {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The canonical encoding: header || count (u32 BE) || count × u64 LE || signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a canonical encoding with at most `max_len` words.
    ///
    /// # Errors
    /// A decoding error naming the sender where the header was readable;
    /// [`SecAggError::CountTooLarge`] above `max_len`.
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> Result<Self, SecAggError> {
        let (mut r, job_id) = Reader::start(MessageKind::MaskedInput, bytes)?;
        let count = r.count(max_len)?;
        r.expect_remaining(count.saturating_mul(8).saturating_add(SIGNATURE_LEN))?;
        let (words, _) = r.take(8 * count)?.as_chunks::<8>();
        let vector = words.iter().map(|w| u64::from_le_bytes(*w)).collect();
        Ok(MaskedInput {
            job_id,
            from: r.from,
            vector,
            signature: r.array()?,
        })
    }

    /// The sender's participant index.
    pub fn sender(&self) -> u32 {
        self.from
    }

    /// The job this message belongs to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The masked vector.
    pub fn vector(&self) -> &[u64] {
        &self.vector
    }

    pub(super) fn into_vector(self) -> Vec<u64> {
        self.vector
    }

    pub(super) fn verify(&self, peers: &PeerKeys) -> Result<(), SecAggError> {
        verify_body(peers, self.from, 2, &self.signed_part(), &self.signature)
    }
}

/// SHA-256 of `words` as little-endian bytes, converted 8 KiB at a time.
fn vector_digest(words: &[u64]) -> [u8; 32] {
    const WORDS: usize = 1024;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = [0u8; 8 * WORDS];
    for chunk in words.chunks(WORDS) {
        for (bytes, w) in buf.chunks_exact_mut(8).zip(chunk) {
            bytes.copy_from_slice(&w.to_le_bytes());
        }
        ctx.update(&buf[..8 * chunk.len()]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

// ---- Round 3 --------------------------------------------------------------------------------

/// Which secret of its owner an unmasking share reconstructs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShareKind {
    /// The self-mask seed `b_v` of a surviving client (wire tag 0).
    SelfMaskSeed,
    /// The masking secret key `s_v` of a client that dropped out (wire tag 1).
    MaskingKey,
}

impl ShareKind {
    fn tag(self) -> u8 {
        match self {
            ShareKind::SelfMaskSeed => 0,
            ShareKind::MaskingKey => 1,
        }
    }
}

/// One share revealed in round 3: the sender's share of one secret of `owner`.
/// `Debug` prints no share value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskEntry {
    /// Whose secret this is a share of.
    pub owner: u32,
    /// Which of the owner's secrets.
    pub kind: ShareKind,
    /// The share; its `x` is the sender's index.
    pub share: ByteShare,
}

/// Round 3, client → server: for each client of round 2, the sender's share of its self-mask
/// seed (if it survived round 2) or of its masking key (if it dropped), signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskShares {
    job_id: String,
    from: u32,
    entries: Vec<UnmaskEntry>,
    signature: [u8; SIGNATURE_LEN],
}

impl UnmaskShares {
    pub(super) fn signed(
        job_id: &str,
        from: u32,
        entries: Vec<UnmaskEntry>,
        signer: &dyn Fn(&[u8]) -> [u8; 64],
    ) -> Self {
        let mut msg = UnmaskShares {
            job_id: job_id.to_owned(),
            from,
            entries,
            signature: [0; SIGNATURE_LEN],
        };
        msg.signature = sign_body(signer, &msg.body());
        msg
    }

    fn body(&self) -> Vec<u8> {
        let mut out = header(
            MessageKind::UnmaskShares,
            self.from,
            &self.job_id,
            4 + UNMASK_ENTRY_LEN * self.entries.len() + SIGNATURE_LEN,
        );
        // At most MAX_PARTICIPANTS entries.
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.owner.to_be_bytes());
            out.push(e.kind.tag());
            out.extend_from_slice(e.share.y_bytes().as_ref());
        }
        out
    }

    /// The canonical encoding: header || count (u32 BE) || count × (owner u32 BE || kind u8 ||
    /// share 64 bytes) || signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a canonical encoding (at most [`MAX_PARTICIPANTS`] entries).
    ///
    /// # Errors
    /// A decoding error naming the sender where the header was readable;
    /// [`SecAggError::NonCanonicalShare`] or [`SecAggError::UnknownShareKind`] for a bad entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let (mut r, job_id) = Reader::start(MessageKind::UnmaskShares, bytes)?;
        let count = r.count(MAX_PARTICIPANTS as usize)?;
        r.expect_remaining(
            count
                .saturating_mul(UNMASK_ENTRY_LEN)
                .saturating_add(SIGNATURE_LEN),
        )?;
        let from = r.from;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let owner = r.u32()?;
            let kind = match r.array::<1>()?[0] {
                0 => ShareKind::SelfMaskSeed,
                1 => ShareKind::MaskingKey,
                tag => return Err(SecAggError::UnknownShareKind { from, tag }),
            };
            let y = zeroize::Zeroizing::new(r.array::<BYTE_SHARE_LEN>()?);
            let share = ByteShare::from_y_bytes(from, &y)
                .map_err(|_| SecAggError::NonCanonicalShare { from })?;
            entries.push(UnmaskEntry { owner, kind, share });
        }
        Ok(UnmaskShares {
            job_id,
            from,
            entries,
            signature: r.array()?,
        })
    }

    /// The sender's participant index.
    pub fn sender(&self) -> u32 {
        self.from
    }

    /// The job this message belongs to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The revealed shares, in the order sent.
    pub fn entries(&self) -> &[UnmaskEntry] {
        &self.entries
    }

    pub(super) fn into_entries(self) -> Vec<UnmaskEntry> {
        self.entries
    }

    pub(super) fn verify(&self, peers: &PeerKeys) -> Result<(), SecAggError> {
        verify_body(peers, self.from, 3, &self.body(), &self.signature)
    }
}
