//! The crate's single error type, [`NetError`], grouped by whose fault the failure is.
//!
//! Messages say what failed, where, and what to do about it. They never contain secret
//! material: private keys are only ever described by their file path, never by content.

use std::path::PathBuf;

/// Everything that can go wrong in `parley-net`.
///
/// Variants are grouped by fault:
/// * **local files** — the operator's files are missing, unreadable or hold the wrong thing;
/// * **invalid arguments** — the caller passed a value we refuse (bad name, validity, URL);
/// * **local material** — certificates or keys that parse badly or do not fit together;
/// * **connection** — the remote end could not be reached or refused us;
/// * **key binding** — a peer's [`parley_proto::KeyBinding`] failed verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    // ───────────── local files ─────────────
    /// A file could not be read.
    #[error("cannot read {what} '{}': {source}", path.display())]
    ReadFile {
        /// What the file should contain, e.g. "TLS private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {what} '{}': {source}", path.display())]
    WriteFile {
        /// What the file should contain.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// Refused to overwrite an existing file.
    #[error(
        "refusing to overwrite existing {what} '{}'; move it away or choose another directory or name",
        path.display()
    )]
    FileExists {
        /// What the file would have contained.
        what: &'static str,
        /// The existing file.
        path: PathBuf,
    },
    /// The input holds no PEM section at all.
    #[error(
        "no PEM block found in {what} {location}; expected a '-----BEGIN {expected}-----' section"
    )]
    NoPem {
        /// What the input should contain.
        what: &'static str,
        /// Where the input came from (a quoted path, or "(PEM text)").
        location: String,
        /// The PEM label we expected.
        expected: &'static str,
    },
    /// The input holds PEM, but of another kind than expected.
    #[error("{what} {location} holds a '{found}' PEM block, expected '{expected}'{hint}")]
    WrongPemKind {
        /// What the input should contain.
        what: &'static str,
        /// Where the input came from.
        location: String,
        /// The PEM label found.
        found: &'static str,
        /// The PEM label expected.
        expected: &'static str,
        /// A hint on how to fix it (may be empty).
        hint: &'static str,
    },
    /// The PEM text is syntactically broken.
    #[error("{what} {location} is not valid PEM: {reason}")]
    MalformedPem {
        /// What the input should contain.
        what: &'static str,
        /// Where the input came from.
        location: String,
        /// What is wrong (never includes file content).
        reason: &'static str,
    },

    // ───────────── invalid arguments ─────────────
    /// A participant name does not follow the naming rule.
    #[error(
        "invalid name '{name}': {reason}; names are 1-64 characters of lowercase a-z, 0-9, '_' and '-'"
    )]
    InvalidName {
        /// The rejected name (truncated when very long).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A CA common name is empty, too long or contains control characters.
    #[error("invalid CA common name '{name}': {reason}")]
    InvalidCommonName {
        /// The rejected name (truncated when very long).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A role string is not one of the known roles.
    #[error("unknown role '{value}'; expected one of: coordinator, node, analyst, auditor")]
    UnknownRole {
        /// The rejected value (truncated when very long).
        value: String,
    },
    /// A validity period makes no sense.
    #[error("invalid certificate validity: {reason}")]
    InvalidValidity {
        /// What is wrong.
        reason: &'static str,
    },
    /// A subject alternative name could not be used.
    #[error("invalid subject alternative name '{san}': {reason}; use a DNS name or an IP address")]
    InvalidSan {
        /// The rejected SAN.
        san: String,
        /// Why.
        reason: String,
    },
    /// A URL could not be used for a connection.
    #[error("invalid URL '{url}': {reason}; use the form https://host:port")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// Why.
        reason: String,
    },

    // ───────────── local material ─────────────
    /// rcgen failed to generate a key or certificate.
    #[error("cannot {what}: {source}")]
    CertificateGeneration {
        /// The step that failed, e.g. "generate the CA key pair".
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error(
        "the CA private key does not belong to the CA certificate; use the key file written together with that certificate by `ca init`"
    )]
    CaKeyMismatch,
    /// The CA certificate is not a CA certificate.
    #[error(
        "{what} is not a CA certificate (no basicConstraints CA=true); pass the federation CA certificate"
    )]
    NotACa {
        /// Which input.
        what: &'static str,
    },
    /// A certificate could not be parsed.
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    BadCertificate {
        /// Which certificate.
        what: &'static str,
        /// The parser's explanation.
        reason: String,
    },
    /// A certificate does not carry a Parley identity (CN = name, OU = role).
    #[error(
        "{what} carries no valid Parley identity: {reason}; issue it with `parley-coordinator ca issue --role ROLE --name NAME`"
    )]
    CertificateIdentity {
        /// Which certificate.
        what: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// A private key could not be used.
    #[error("{what} cannot be used: {reason}")]
    BadPrivateKey {
        /// Which key (never its content).
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// rustls refused the configuration built from our material.
    #[error(
        "cannot build the TLS {what} configuration: {source}; check that certificate and key belong together and were issued by the federation CA"
    )]
    TlsConfig {
        /// "server" or "client".
        what: &'static str,
        /// rustls's error.
        source: rustls::Error,
    },
    /// rustls refused to build the client-certificate verifier from the CA certificate.
    #[error("cannot build the client certificate verifier from the CA certificate: {source}")]
    ClientVerifier {
        /// rustls's error.
        source: rustls::server::VerifierBuilderError,
    },

    // ───────────── connection ─────────────
    /// A gRPC channel could not be established.
    #[error(
        "cannot connect to '{url}' (TLS server name '{server_name}'): {reason}; check the address and port, that the server is running, that the server certificate names '{server_name}', and that both certificates come from the same federation CA"
    )]
    Connect {
        /// The URL dialled.
        url: String,
        /// The TLS server name expected in the server certificate.
        server_name: String,
        /// The chain of transport errors.
        reason: String,
    },

    // ───────────── key binding (peer's fault) ─────────────
    /// A key-binding field is larger than we accept.
    #[error("key binding field '{field}' is {len} bytes, more than the {max} allowed")]
    BindingTooLarge {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A public key in a key binding does not have 32 bytes.
    #[error("key binding field '{field}' must be 32 bytes, got {len}")]
    BindingKeyLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The certificate inside a key binding does not parse.
    #[error("the certificate in the key binding for '{node}' is malformed: {source}")]
    BindingCertificateMalformed {
        /// The claimed node name.
        node: String,
        /// webpki's error.
        source: webpki::Error,
    },
    /// The certificate inside a key binding is not valid for this federation now.
    #[error(
        "the certificate in the key binding for '{node}' is not valid for this federation: {source} (it must be issued by the federation CA, unexpired, for client authentication)"
    )]
    BindingCertificateUntrusted {
        /// The claimed node name.
        node: String,
        /// webpki's error.
        source: webpki::Error,
    },
    /// The certificate inside a key binding is not a node certificate.
    #[error(
        "the key binding for '{node}' is signed by a '{role}' certificate; only node certificates may bind keys"
    )]
    BindingNotNode {
        /// The claimed node name.
        node: String,
        /// The role found in the certificate.
        role: String,
    },
    /// The name in a key binding differs from the certificate's name.
    #[error("the key binding claims node '{claimed}' but its certificate is for '{certified}'")]
    BindingNameMismatch {
        /// The name claimed in the binding.
        claimed: String,
        /// The name in the certificate.
        certified: String,
    },
    /// The key-binding signature does not verify.
    #[error(
        "the key binding signature for '{node}' does not verify against its certificate; the keys may have been altered in transit"
    )]
    BindingSignature {
        /// The claimed node name.
        node: String,
    },
    /// Our own key binding could not be signed.
    #[error("cannot sign the key binding: {reason}")]
    BindingSigning {
        /// What is wrong.
        reason: &'static str,
    },
}

impl NetError {
    /// Truncates peer- or user-supplied text so that messages stay readable.
    pub(crate) fn clip(s: &str) -> String {
        const MAX: usize = 80;
        if s.chars().count() <= MAX {
            s.to_owned()
        } else {
            let mut out: String = s.chars().take(MAX).collect();
            out.push('…');
            out
        }
    }
}

/// The one mapping from [`NetError`] to gRPC status codes.
impl From<NetError> for tonic::Status {
    fn from(e: NetError) -> Self {
        use NetError::*;
        let msg = e.to_string();
        match e {
            BindingTooLarge { .. }
            | BindingKeyLength { .. }
            | BindingCertificateMalformed { .. }
            | BindingNameMismatch { .. }
            | InvalidName { .. }
            | InvalidCommonName { .. }
            | UnknownRole { .. }
            | InvalidValidity { .. }
            | InvalidSan { .. }
            | InvalidUrl { .. } => tonic::Status::invalid_argument(msg),
            BindingCertificateUntrusted { .. }
            | BindingNotNode { .. }
            | BindingSignature { .. } => tonic::Status::permission_denied(msg),
            Connect { .. } => tonic::Status::unavailable(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}
