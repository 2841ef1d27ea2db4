//! Federation CA: issuing, loading and reading identities back.

mod common;

use common::TestCa;
use parley_net::{NetError, PeerIdentity, Role, TlsMaterial, ca};
use time::{Duration, OffsetDateTime};

#[test]
fn issued_certificates_carry_role_and_name() {
    let ca = TestCa::new("Parley test CA");
    for role in Role::ALL {
        let (cert, key) = ca.issue(role, "brand-1", &["localhost"]);
        let m = TlsMaterial::from_pem(&ca.cert, &cert, &key).expect("material");
        assert_eq!(
            m.identity().expect("identity"),
            PeerIdentity {
                role,
                name: "brand-1".to_owned()
            }
        );
        assert!(!m.cert_der().is_empty());
        assert_ne!(m.cert_der(), m.ca_der());
    }
}

#[test]
fn debug_redacts_the_key() {
    let ca = TestCa::new("Parley test CA");
    let (cert, key) = ca.issue(Role::Node, "brand", &[]);
    let m = TlsMaterial::from_pem(&ca.cert, &cert, &key).expect("material");
    let dbg = format!("{m:?}");
    assert!(dbg.contains("redacted"), "{dbg}");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!dbg.contains(&body[..20]), "{dbg}");
}

#[test]
fn invalid_names_are_rejected_at_issue_time() {
    let ca = TestCa::new("Parley test CA");
    let now = OffsetDateTime::now_utc();
    for bad in ["", "Brand", "brand name", "brand.example", &"a".repeat(65)] {
        let r = ca::issue(
            &ca.cert,
            &ca.key,
            Role::Node,
            bad,
            &[],
            now,
            now + Duration::days(1),
        );
        assert!(
            matches!(r, Err(NetError::InvalidName { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let r = ca::issue(&ca.cert, &ca.key, Role::Node, "ok", &[], now, now);
    assert!(matches!(r, Err(NetError::InvalidValidity { .. })), "{r:?}");
}

#[test]
fn mismatched_ca_key_is_rejected() {
    let a = TestCa::new("CA a");
    let b = TestCa::new("CA b");
    let now = OffsetDateTime::now_utc();
    let r = ca::issue(
        &a.cert,
        &b.key,
        Role::Node,
        "brand",
        &[],
        now,
        now + Duration::days(1),
    );
    assert!(matches!(r, Err(NetError::CaKeyMismatch)), "{r:?}");
    // A leaf is not a CA.
    let (leaf, leaf_key) = a.issue(Role::Node, "brand", &[]);
    let r = ca::issue(
        &leaf,
        &leaf_key,
        Role::Node,
        "x",
        &[],
        now,
        now + Duration::days(1),
    );
    assert!(matches!(r, Err(NetError::NotACa { .. })), "{r:?}");
}

#[test]
fn material_rejects_a_key_of_another_certificate() {
    let ca = TestCa::new("Parley test CA");
    let (cert, _) = ca.issue(Role::Node, "brand", &[]);
    let (_, other_key) = ca.issue(Role::Node, "brand", &[]);
    let e = TlsMaterial::from_pem(&ca.cert, &cert, &other_key).expect_err("mismatched key");
    assert!(e.to_string().contains("does not belong"), "{e}");
    // Swapped arguments name the wrong kind.
    let e = TlsMaterial::from_pem(&ca.cert, &other_key, &cert).expect_err("swapped");
    assert!(e.to_string().contains("'PRIVATE KEY'"), "{e}");
}

#[test]
fn files_round_trip_and_are_never_overwritten() {
    let ca = TestCa::new("Parley test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_cert_path, _) =
        ca::write_pem_files(dir.path(), "ca", &ca.cert, &ca.key).expect("write CA");
    let (cert, key) = ca.issue(Role::Analyst, "ana", &[]);
    let (cert_path, key_path) =
        ca::write_pem_files(dir.path(), "ana", &cert, &key).expect("write leaf");
    assert_eq!(cert_path, dir.path().join("ana.pem"));
    assert_eq!(key_path, dir.path().join("ana.key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let m = TlsMaterial::load(&ca_cert_path, &cert_path, &key_path).expect("load");
    assert_eq!(m.identity().expect("identity").name, "ana");

    let e = ca::write_pem_files(dir.path(), "ana", &cert, &key).expect_err("exists");
    assert!(matches!(e, NetError::FileExists { .. }), "{e}");
    assert!(e.to_string().contains("ana.pem"), "{e}");

    let missing = dir.path().join("missing.key");
    let e = TlsMaterial::load(&ca_cert_path, &cert_path, &missing).expect_err("missing");
    let msg = e.to_string();
    assert!(msg.starts_with("cannot read TLS private key '"), "{msg}");
    assert!(msg.contains("missing.key"), "{msg}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "hello\n").expect("write");
    let e = TlsMaterial::load(&empty, &cert_path, &key_path).expect_err("no PEM");
    assert!(
        e.to_string()
            .contains("no PEM block found in CA certificate"),
        "{e}"
    );
}
