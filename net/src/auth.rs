//! Who is calling, and may they: the caller's identity from its verified client certificate.
//!
//! The certificate was verified against the federation CA during the TLS handshake (see
//! [`crate::server_config`]); here it is only read. Role and name come from the certificate,
//! never from a message field.

use tonic::{Request, Status};

use crate::identity::identity_from_cert_der;
use crate::{PeerIdentity, Role};

/// The caller's identity (role and name) from its client certificate.
///
/// Fails with `Unauthenticated` when the connection carries no client certificate (not served
/// through [`crate::tls_incoming`]) or the certificate holds no valid Parley identity.
pub fn peer_identity<T>(req: &Request<T>) -> Result<PeerIdentity, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate on this connection; connect over mutual TLS with a certificate issued by the federation CA",
        )
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated(
            "the client presented an empty certificate chain; connect with a certificate issued by the federation CA",
        )
    })?;
    identity_from_cert_der(leaf, "client certificate")
        .map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The caller's identity, if its role is one of `allowed`.
///
/// Fails with `Unauthenticated` as [`peer_identity`], or `PermissionDenied` naming the
/// caller, `what` it tried, and the roles allowed.
pub fn authorize<T>(
    req: &Request<T>,
    allowed: &[Role],
    what: &str,
) -> Result<PeerIdentity, Status> {
    let id = peer_identity(req)?;
    if allowed.contains(&id.role) {
        return Ok(id);
    }
    let roles: Vec<&str> = allowed.iter().map(Role::as_str).collect();
    let roles = if roles.is_empty() {
        "none".to_owned()
    } else {
        roles.join(", ")
    };
    tracing::warn!(role = %id.role, name = %id.name, what, "permission denied");
    Err(Status::permission_denied(format!(
        "role '{}' (name '{}') may not call {what}; allowed roles: {roles}",
        id.role, id.name
    )))
}
