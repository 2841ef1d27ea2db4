//! Who is on the other end: roles, names, and reading them out of certificates.
//!
//! A federation certificate binds exactly one identity: subject CN = name, subject OU = role
//! (lowercase). Names are 1–64 characters of `[a-z0-9_-]`; this is checked when a certificate
//! is issued and again whenever an identity is read back from a certificate.

use std::fmt;
use std::str::FromStr;

use crate::NetError;

/// The role a certificate grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The federation coordinator (also a TLS server).
    Coordinator,
    /// A data-holding node.
    Node,
    /// Submits and cancels jobs.
    Analyst,
    /// Read-only access for audits.
    Auditor,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Coordinator, Role::Node, Role::Analyst, Role::Auditor];

    /// The lowercase name used in certificates (subject OU) and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Node => "node",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| NetError::UnknownRole {
                value: NetError::clip(s),
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated participant: the role and name from its CA-issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's role (subject OU).
    pub role: Role,
    /// The certificate's name (subject CN), a valid name per [`validate_name`].
    pub name: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.role, self.name)
    }
}

/// Longest allowed participant name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a participant name: 1–64 characters of lowercase `a-z`, `0-9`, `_` and `-`.
pub fn validate_name(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 64 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        "it contains a character other than a-z, 0-9, '_' or '-'"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidName {
        name: NetError::clip(name),
        reason,
    })
}

/// Reads the Parley identity (CN = name, OU = role) from a DER certificate.
///
/// `what` names the certificate in error messages. The certificate is only parsed, not
/// verified: callers must have verified it (TLS handshake, or webpki) first.
pub(crate) fn identity_from_cert_der(
    der: &[u8],
    what: &'static str,
) -> Result<PeerIdentity, NetError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| NetError::BadCertificate {
            what,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(NetError::BadCertificate {
            what,
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let subject = cert.subject();
    let name = single_attr(subject.iter_common_name(), "common name (CN)", what)?;
    let role = single_attr(
        subject.iter_organizational_unit(),
        "organizational unit (OU)",
        what,
    )?;
    let role: Role = role
        .parse()
        .map_err(|e: NetError| NetError::CertificateIdentity {
            what,
            reason: format!("subject OU: {e}"),
        })?;
    validate_name(name).map_err(|e| NetError::CertificateIdentity {
        what,
        reason: format!("subject CN: {e}"),
    })?;
    Ok(PeerIdentity {
        role,
        name: name.to_owned(),
    })
}

fn single_attr<'a, 'b>(
    mut it: impl Iterator<Item = &'b x509_parser::x509::AttributeTypeAndValue<'a>>,
    attr: &'static str,
    what: &'static str,
) -> Result<&'a str, NetError>
where
    'a: 'b,
{
    let first = it.next().ok_or_else(|| NetError::CertificateIdentity {
        what,
        reason: format!("the subject has no {attr}"),
    })?;
    if it.next().is_some() {
        return Err(NetError::CertificateIdentity {
            what,
            reason: format!("the subject has more than one {attr}"),
        });
    }
    first.as_str().map_err(|_| NetError::CertificateIdentity {
        what,
        reason: format!("the subject {attr} is not a text string"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips_through_strings() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert!("Node".parse::<Role>().is_err());
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "brand-1", "x_y", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Brand", "a b", "a.b", "é", &"a".repeat(65), "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
