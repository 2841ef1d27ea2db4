//! The one error type of this crate.
//!
//! Variants are grouped by whose fault the failure is:
//!
//! 1. **Invalid data from a peer** — bytes that do not decode (bad lengths, non-canonical or
//!    identity points).
//! 2. **Peer misbehaved** — well-formed data that breaks the protocol (offset gaps or overlaps,
//!    counts above the limit or different from what was agreed, streams cut short, failed
//!    envelope authentication, a non-contributory key).
//! 3. **Local misuse or configuration** — a call out of order, a request outside the local
//!    stream, an unknown country code, bad persisted key bytes.
//! 4. **Environment** — the operating system's random number generator failed.
//!
//! No variant ever carries a secret, a key, a point, or a raw identifier: only positions,
//! counts and lengths.

use std::fmt;

/// Which stream of points an error refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stream {
    /// Points handed directly to [`crate::psi::reblind`].
    Input,
    /// The sender's blinded identifiers `H(y)^b`, as received by the receiver.
    SenderBlinded,
    /// The receiver's blinded identifiers `H(x)^a`, as received by the sender.
    ReceiverBlinded,
    /// The receiver's identifiers blinded by both keys, `H(x)^ab`, as received by the receiver.
    DoubleBlinded,
    /// Grouped aggregate: P1's blinded identifiers `H(x)^a`, group by group, as received by P2.
    GroupIds,
    /// Grouped aggregate: P1's identifiers blinded by both keys, as received by P1.
    GroupIdsReblinded,
    /// Grouped aggregate: P2's items `(H(y)^b, Enc(v[0]), …)`, as received by P1.
    GroupPairs,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Input => "input points",
            Stream::SenderBlinded => "sender's blinded points",
            Stream::ReceiverBlinded => "receiver's blinded points",
            Stream::DoubleBlinded => "double-blinded points",
            Stream::GroupIds => "grouped aggregate: P1's blinded identifiers",
            Stream::GroupIdsReblinded => "grouped aggregate: P1's re-blinded identifiers",
            Stream::GroupPairs => "grouped aggregate: P2's identifier/ciphertext items",
        })
    }
}

/// Everything that can go wrong in `parley-crypto`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    // ---- 1. Invalid data from a peer ------------------------------------------------------
    /// A batch of points is not a whole number of 32-byte encodings.
    #[error(
        "{stream}: batch at offset {offset} is {len} bytes, not a multiple of 32 (one ristretto255 point)"
    )]
    BatchLength {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in points) of the batch's first point within the stream.
        offset: u64,
        /// Length of the batch in bytes.
        len: usize,
    },
    /// A cardinality-mode batch does not hold whole groups of points.
    #[error(
        "{stream}: batch at offset {offset} holds {points} points, not a multiple of the group size {group_size}"
    )]
    BatchNotWholeGroups {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in points) of the batch's first point within the stream.
        offset: u64,
        /// Number of points in the batch.
        points: u64,
        /// The agreed group size.
        group_size: u32,
    },
    /// A 32-byte value is not the canonical encoding of a ristretto255 point.
    #[error(
        "{stream}: point {index} of batch at offset {offset} is not a canonical ristretto255 encoding"
    )]
    NonCanonicalPoint {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in points) of the batch's first point within the stream.
        offset: u64,
        /// Index of the bad point within the batch.
        index: u64,
    },
    /// A point is the group identity, which no honest party ever sends.
    #[error("{stream}: point {index} of batch at offset {offset} is the identity element")]
    IdentityPoint {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in points) of the batch's first point within the stream.
        offset: u64,
        /// Index of the bad point within the batch.
        index: u64,
    },

    /// A batch of grouped-aggregate items is not a whole number of items.
    #[error(
        "{stream}: batch at offset {offset} is {len} bytes, not a multiple of {item_len} (one ristretto255 point and one 64-byte ElGamal ciphertext per value column)"
    )]
    ItemBatchLength {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in items) of the batch's first item within the stream.
        offset: u64,
        /// Length of the batch in bytes.
        len: usize,
        /// Length of one item in bytes.
        item_len: usize,
    },
    /// The peer declared a number of groups other than the job's.
    #[error("peer declared sizes for {got} groups; the job has {expected}")]
    GroupCountMismatch {
        /// Groups declared.
        got: usize,
        /// Groups in the job.
        expected: usize,
    },
    /// An ElGamal ciphertext inside a grouped-aggregate item has a component that is not a
    /// canonical ristretto255 encoding.
    #[error(
        "{stream}: the ciphertext of item {index} of batch at offset {offset} has a component c{component} that is not a canonical ristretto255 encoding"
    )]
    NonCanonicalPairCiphertext {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in items) of the batch's first item within the stream.
        offset: u64,
        /// Index of the bad item within the batch.
        index: u64,
        /// Which component is bad: 1 (`c1 = r·G`) or 2 (`c2 = m·G + r·pk`).
        component: u8,
    },
    /// An ElGamal ciphertext has the wrong length.
    #[error("ElGamal ciphertext is {len} bytes, expected 64 (two ristretto255 points)")]
    CiphertextLength {
        /// Length received.
        len: usize,
    },
    /// A component of an ElGamal ciphertext is not a canonical ristretto255 encoding.
    #[error("ElGamal ciphertext component c{component} is not a canonical ristretto255 encoding")]
    NonCanonicalCiphertext {
        /// Which component is bad: 1 (`c1 = r·G`) or 2 (`c2 = m·G + r·pk`).
        component: u8,
    },
    /// An ElGamal public key has the wrong length.
    #[error("ElGamal public key is {len} bytes, expected 32 (one ristretto255 point)")]
    PublicKeyLength {
        /// Length received.
        len: usize,
    },
    /// An ElGamal public key is not a canonical ristretto255 encoding.
    #[error("ElGamal public key is not a canonical ristretto255 encoding")]
    NonCanonicalPublicKey,
    /// An ElGamal public key is the group identity (it would encrypt in the clear).
    #[error("ElGamal public key is the identity element, which would encrypt in the clear")]
    IdentityPublicKey,

    // ---- 2. Peer misbehaved ---------------------------------------------------------------
    /// A batch starts after the end of the previous one: points are missing.
    #[error(
        "{stream}: batch starts at offset {got} but only {expected} points have arrived; points {expected}..{got} are missing (batches must be contiguous and in order)"
    )]
    BatchOffsetGap {
        /// The stream the batch belongs to.
        stream: Stream,
        /// The offset the next batch must start at.
        expected: u64,
        /// The offset the batch claimed.
        got: u64,
    },
    /// A batch starts before the end of the previous one: points would be received twice.
    #[error(
        "{stream}: batch starts at offset {got}, overlapping points already received (next expected offset {expected})"
    )]
    BatchOffsetOverlap {
        /// The stream the batch belongs to.
        stream: Stream,
        /// The offset the next batch must start at.
        expected: u64,
        /// The offset the batch claimed.
        got: u64,
    },
    /// A batch runs past the number of points declared in the stream's header.
    #[error(
        "{stream}: batch at offset {offset} with {points} points runs past the declared count of {declared}"
    )]
    BatchBeyondDeclared {
        /// The stream the batch belongs to.
        stream: Stream,
        /// Index (in points) of the batch's first point within the stream.
        offset: u64,
        /// Number of points in the batch.
        points: u64,
        /// Number of points declared in the header.
        declared: u64,
    },
    /// A peer declared more points than this job allows.
    #[error("{stream}: peer declared {count} points, more than this job's limit of {max}")]
    DeclaredCountTooLarge {
        /// The stream whose header declared the count.
        stream: Stream,
        /// The declared count.
        count: u64,
        /// The job's limit.
        max: u64,
    },
    /// A peer declared a count different from the one the protocol fixes.
    #[error("{stream}: peer declared {count} points, expected exactly {expected}")]
    DeclaredCountMismatch {
        /// The stream whose header declared the count.
        stream: Stream,
        /// The declared count.
        count: u64,
        /// The count the protocol requires.
        expected: u64,
    },
    /// A group size outside `1..=MAX_GROUP_SIZE`.
    #[error("receiver declared group size {group_size}, allowed range is 1..={max}")]
    GroupSizeOutOfRange {
        /// The declared group size.
        group_size: u32,
        /// The largest allowed group size.
        max: u32,
    },
    /// Match mode with a group size other than 1.
    #[error("receiver declared group size {group_size} in match mode, which requires group size 1")]
    GroupSizeInMatchMode {
        /// The declared group size.
        group_size: u32,
    },
    /// A declared count that is not a whole number of groups.
    #[error("receiver declared {count} points, not a multiple of its group size {group_size}")]
    CountNotWholeGroups {
        /// The declared count.
        count: u64,
        /// The declared group size.
        group_size: u32,
    },
    /// A stream ended (or a result was requested) before all declared points arrived.
    #[error("{stream}: only {received} of {declared} declared points arrived")]
    StreamIncomplete {
        /// The incomplete stream.
        stream: Stream,
        /// Points received so far.
        received: u64,
        /// Points declared in the header.
        declared: u64,
    },
    /// An envelope failed to open: wrong key, wrong sequence number, wrong direction or
    /// tampered bytes. Deliberately carries no detail.
    #[error("sealed envelope failed authentication")]
    EnvelopeAuthentication,
    /// X25519 with the peer's public key gave the all-zero shared secret (a low-order key).
    #[error(
        "peer's X25519 public key is of low order (non-contributory shared secret); check the key registered for that peer"
    )]
    NonContributoryKey,

    /// A decrypted sum lies outside the range the decryption was asked to search.
    #[error(
        "decrypted sum is outside the declared range [{min}, {max}]: the sum exceeded the declared maximum (or fell below the minimum); check the clamping bounds and the noise bound used for decryption"
    )]
    SumOutOfRange {
        /// Smallest value searched.
        min: i64,
        /// Largest value searched.
        max: i64,
    },

    // ---- 3. Local misuse or configuration -------------------------------------------------
    /// The intersection-sum input holds identifiers more than once.
    #[error(
        "intersection-sum input has {count} repeated identifiers; aggregate the values per identifier before the job"
    )]
    DuplicateIdentifiers {
        /// Number of entries whose identifier appeared earlier in the input.
        count: u64,
    },
    /// A decryption range with `min > max`.
    #[error("decryption range [{min}, {max}] is empty; min must not exceed max")]
    DecryptRangeEmpty {
        /// Requested minimum.
        min: i64,
        /// Requested maximum.
        max: i64,
    },
    /// A decryption range wider than the discrete-log table can search in bounded time.
    #[error(
        "decryption range [{min}, {max}] is wider than the {max_width} values the discrete-log table searches; lower the declared clamping bounds or the noise bound"
    )]
    DecryptRangeTooWide {
        /// Requested minimum.
        min: i64,
        /// Requested maximum.
        max: i64,
        /// Widest range the table supports.
        max_width: u64,
    },
    /// A discrete-log table size outside the supported range.
    #[error(
        "discrete-log table of 2^{bits} baby steps requested; supported sizes are 2^1..=2^{max}"
    )]
    DlogTableSize {
        /// Requested log2 of the number of baby steps.
        bits: u32,
        /// Largest supported value.
        max: u32,
    },
    /// A batch arrived before the stream's header.
    #[error("{stream}: batch received before the stream's header")]
    HeaderMissing {
        /// The stream.
        stream: Stream,
    },
    /// A stream's header arrived twice.
    #[error("{stream}: header received twice")]
    HeaderRepeated {
        /// The stream.
        stream: Stream,
    },
    /// A call after the stream was already finished.
    #[error("{stream}: stream already finished")]
    AlreadyFinished {
        /// The stream.
        stream: Stream,
    },
    /// A request for outgoing points outside the local stream.
    #[error("requested outgoing points {offset}..{offset}+{len}, but the stream has only {count}")]
    OutgoingRange {
        /// First requested point.
        offset: u64,
        /// Number of requested points.
        len: usize,
        /// Number of points in the outgoing stream.
        count: u64,
    },
    /// A grouped aggregate with no groups or columns, or more than supported.
    #[error(
        "a grouped aggregate needs 1 to {max_groups} groups and 1 to {max_columns} value columns; this job has {groups} groups and {width} columns"
    )]
    GroupShape {
        /// Groups asked for.
        groups: usize,
        /// Value columns asked for.
        width: usize,
        /// Largest supported number of groups.
        max_groups: usize,
        /// Largest supported number of columns.
        max_columns: usize,
    },
    /// A group label outside the job's groups.
    #[error("group label {group} is outside the job's {groups} groups")]
    GroupOutOfRange {
        /// The label.
        group: u32,
        /// Groups in the job.
        groups: usize,
    },
    /// Identifiers labelled with more than one group.
    #[error(
        "{count} identifiers carry more than one group label; each person must be in one group (drop or reassign them before the job)"
    )]
    ConflictingGroups {
        /// Identifiers with a second label.
        count: u64,
    },
    /// Grouped-aggregate values that are not one per identifier and value column.
    #[error(
        "the grouped aggregate got {got} values; it needs {expected}, one per identifier and value column"
    )]
    ValueWidth {
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
    },
    /// A value above the bound its column declared for encryption.
    #[error(
        "value column {column} holds a value above its declared bound {bound}; clamp the values to the bound first"
    )]
    ValueAboveBound {
        /// The column (0-based).
        column: usize,
        /// Its declared bound.
        bound: u64,
    },
    /// A list (noise values or decryption ranges) of the wrong length for the job's shape.
    #[error("got {got} noise values or ranges; the job's shape needs {expected}")]
    NoiseCount {
        /// Entries given.
        got: usize,
        /// Entries needed.
        expected: usize,
    },
    /// The local set needs more points than the job allows.
    #[error("local set needs {count} points, more than this job's limit of {max}")]
    LocalCountTooLarge {
        /// Points the local set needs.
        count: u64,
        /// The job's limit.
        max: u64,
    },
    /// A record carries more distinct identifiers than a cardinality group can hold.
    #[error(
        "record {record} carries {count} distinct identifiers, more than the cardinality-mode maximum of {max}"
    )]
    RecordTooManyIdentifiers {
        /// Index of the record.
        record: usize,
        /// Its number of distinct identifiers.
        count: usize,
        /// The maximum group size.
        max: u32,
    },
    /// An unknown ISO 3166 alpha-2 country code.
    #[error(
        "unknown default country '{code}'; use an ISO 3166 alpha-2 code such as \"US\" or \"GB\""
    )]
    UnknownCountry {
        /// The code as configured.
        code: String,
    },
    /// `expand_message_xmd` was asked for an output length RFC 9380 does not allow.
    #[error("expand_message_xmd cannot produce {requested} bytes (at most 16320 with SHA-512)")]
    ExpandLength {
        /// The requested number of bytes.
        requested: usize,
    },
    /// Sealing failed (the plaintext is longer than AES-256-GCM allows).
    #[error("cannot seal a {len}-byte envelope")]
    EnvelopeSeal {
        /// Plaintext length.
        len: usize,
    },
    /// Persisted node secrets do not start with the expected version tag.
    #[error(
        "node secrets do not start with the 'PARLEYK1' version tag; is this a Parley key file?"
    )]
    NodeSecretsVersion,
    /// Persisted node secrets end early.
    #[error("node secrets are truncated: need {needed} bytes, have {have}")]
    NodeSecretsTruncated {
        /// Bytes needed to parse the next field.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// Persisted node secrets carry bytes after the last field.
    #[error("node secrets have {extra} trailing bytes after the last field")]
    NodeSecretsTrailing {
        /// Number of extra bytes.
        extra: usize,
    },
    /// The Ed25519 PKCS#8 document in persisted node secrets is rejected.
    #[error("node secrets hold an Ed25519 PKCS#8 document that does not parse")]
    NodeSecretsEd25519,

    // ---- 4. Environment -------------------------------------------------------------------
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Randomness,
    /// Key derivation or key generation failed inside the crypto library.
    #[error("key derivation failed")]
    KeyDerivation,
}
