//! Key bindings: valid ones verify; every kind of tampering is caught with its own error.

mod common;

use std::time::{Duration, SystemTime};

use common::TestCa;
use parley_net::binding::{sign_key_binding, verify_key_binding};
use parley_net::{NetError, Role, TlsMaterial};

const X: [u8; 32] = [7; 32];
const ED: [u8; 32] = [9; 32];

fn node(ca: &TestCa, name: &str) -> TlsMaterial {
    ca.material(Role::Node, name, &[])
}

#[test]
fn valid_binding_verifies() {
    let ca = TestCa::new("Parley test CA");
    let m = node(&ca, "brand");
    let b = sign_key_binding(&m, "brand", X, ED).expect("sign");
    let keys = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect("verify");
    assert_eq!(keys.node_name, "brand");
    assert_eq!(keys.x25519_public, X);
    assert_eq!(keys.ed25519_public, ED);
}

#[test]
fn tampered_key_fails_the_signature() {
    let ca = TestCa::new("Parley test CA");
    let m = node(&ca, "brand");
    let mut b = sign_key_binding(&m, "brand", X, ED).expect("sign");
    b.x25519_public[5] ^= 1;
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("tampered");
    assert!(matches!(e, NetError::BindingSignature { .. }), "{e}");

    let mut b = sign_key_binding(&m, "brand", X, ED).expect("sign");
    b.ed25519_public[0] ^= 0x80;
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("tampered");
    assert!(matches!(e, NetError::BindingSignature { .. }), "{e}");
}

#[test]
fn wrong_name_is_caught() {
    let ca = TestCa::new("Parley test CA");
    let m = node(&ca, "brand");
    let mut b = sign_key_binding(&m, "brand", X, ED).expect("sign");
    b.node_name = "other".to_owned();
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("wrong name");
    assert!(
        matches!(e, NetError::BindingNameMismatch { ref claimed, ref certified } if claimed == "other" && certified == "brand"),
        "{e}"
    );
    // Signing refuses a name that is not ours.
    let e = sign_key_binding(&m, "other", X, ED).expect_err("not our name");
    assert!(matches!(e, NetError::BindingNameMismatch { .. }), "{e}");
}

#[test]
fn certificate_from_another_ca_is_untrusted() {
    let ca = TestCa::new("Parley test CA");
    let ours = node(&ca, "brand");
    let foreign = node(&TestCa::new("Another CA"), "brand");
    let b = sign_key_binding(&foreign, "brand", X, ED).expect("sign");
    let e = verify_key_binding(ours.ca_der(), &b, SystemTime::now()).expect_err("other CA");
    assert!(
        matches!(e, NetError::BindingCertificateUntrusted { .. }),
        "{e}"
    );
}

#[test]
fn expired_certificate_is_untrusted() {
    let ca = TestCa::new("Parley test CA");
    let m = node(&ca, "brand");
    let b = sign_key_binding(&m, "brand", X, ED).expect("sign");
    let later = SystemTime::now() + Duration::from_secs(3 * 24 * 3600);
    let e = verify_key_binding(m.ca_der(), &b, later).expect_err("expired");
    assert!(
        matches!(e, NetError::BindingCertificateUntrusted { .. }),
        "{e}"
    );
}

#[test]
fn non_node_certificate_is_refused() {
    let ca = TestCa::new("Parley test CA");
    let analyst = ca.material(Role::Analyst, "ana", &[]);
    // Our own signer refuses...
    let e = sign_key_binding(&analyst, "ana", X, ED).expect_err("analyst");
    assert!(matches!(e, NetError::BindingNotNode { .. }), "{e}");
    // ...and a hand-made binding with an analyst certificate is refused by the verifier.
    let node_m = node(&ca, "ana");
    let mut b = sign_key_binding(&node_m, "ana", X, ED).expect("sign");
    b.certificate_der = analyst.cert_der().to_vec();
    let e = verify_key_binding(analyst.ca_der(), &b, SystemTime::now()).expect_err("analyst");
    assert!(
        matches!(e, NetError::BindingNotNode { ref role, .. } if role == "analyst"),
        "{e}"
    );
}

#[test]
fn malformed_fields_are_refused() {
    let ca = TestCa::new("Parley test CA");
    let m = node(&ca, "brand");
    let good = sign_key_binding(&m, "brand", X, ED).expect("sign");

    let mut b = good.clone();
    b.x25519_public.pop();
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("short key");
    assert!(
        matches!(
            e,
            NetError::BindingKeyLength {
                field: "x25519_public",
                len: 31
            }
        ),
        "{e}"
    );

    let mut b = good.clone();
    b.ed25519_public.push(0);
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("long key");
    assert!(
        matches!(
            e,
            NetError::BindingKeyLength {
                field: "ed25519_public",
                len: 33
            }
        ),
        "{e}"
    );

    let mut b = good.clone();
    b.certificate_der = vec![0x30, 0x03, 0x01, 0x01, 0xff];
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("garbage cert");
    assert!(
        matches!(e, NetError::BindingCertificateMalformed { .. }),
        "{e}"
    );

    let mut b = good.clone();
    b.certificate_der = vec![0; 100_000];
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("huge cert");
    assert!(
        matches!(
            e,
            NetError::BindingTooLarge {
                field: "certificate_der",
                ..
            }
        ),
        "{e}"
    );

    let mut b = good;
    b.signature = vec![0; 70];
    let e = verify_key_binding(m.ca_der(), &b, SystemTime::now()).expect_err("bad signature");
    assert!(matches!(e, NetError::BindingSignature { .. }), "{e}");
}
