//! Test fixtures: a fresh federation CA and certificates issued from it.
#![allow(dead_code)]

use parley_net::{Role, TlsMaterial, ca};
use time::{Duration, OffsetDateTime};

/// A CA's PEM certificate and key.
pub struct TestCa {
    pub cert: String,
    pub key: String,
}

impl TestCa {
    pub fn new(cn: &str) -> Self {
        parley_net::install_crypto_provider();
        let (cert, key) = ca::init_ca(cn, 30).expect("CA init");
        TestCa { cert, key }
    }

    /// Issues a certificate valid from an hour ago for a day.
    pub fn issue(&self, role: Role, name: &str, sans: &[&str]) -> (String, String) {
        let now = OffsetDateTime::now_utc();
        self.issue_between(
            role,
            name,
            sans,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
    }

    pub fn issue_between(
        &self,
        role: Role,
        name: &str,
        sans: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        ca::issue(
            &self.cert, &self.key, role, name, &sans, not_before, not_after,
        )
        .expect("issue certificate")
    }

    /// Material for a certificate from this CA.
    pub fn material(&self, role: Role, name: &str, sans: &[&str]) -> TlsMaterial {
        let (cert, key) = self.issue(role, name, sans);
        TlsMaterial::from_pem(&self.cert, &cert, &key).expect("material")
    }

    /// The coordinator's server material, valid for `localhost` and `127.0.0.1`.
    pub fn coordinator(&self) -> TlsMaterial {
        self.material(Role::Coordinator, "coord", &["localhost", "127.0.0.1"])
    }
}
