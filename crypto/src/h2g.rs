//! Hashing to the ristretto255 group.
//!
//! Implements the RFC 9380 suite `ristretto255_XMD:SHA-512_R255MAP_RO_` (RFC 9380 §5.3.1
//! `expand_message_xmd` with SHA-512, then the ristretto255 one-way map of RFC 9496 §4.3.4 on 64
//! uniform bytes). The result is indistinguishable from a random group element with unknown
//! discrete logarithm, which is what ECDH-PSI needs.
//!
//! Every use takes a domain-separation tag, so a hash made for one purpose can never be replayed
//! in another.
//!
//! References: RFC 9380 (Hashing to Elliptic Curves), RFC 9496 (ristretto255).

use curve25519_dalek::RistrettoPoint;
use ring::digest::{Context, SHA512};

use crate::CryptoError;

/// Domain-separation tag for hashing PSI identifiers to the group.
pub const PSI_HASH_TAG: &[u8] = b"parley/v1/psi/hash-to-group";

/// Output size of SHA-512 (`b_in_bytes`).
const B_IN_BYTES: usize = 64;
/// Input block size of SHA-512 (`s_in_bytes`).
const S_IN_BYTES: usize = 128;
/// Prefix for hashing domain-separation tags longer than 255 bytes (RFC 9380 §5.3.3).
const OVERSIZE_DST_PREFIX: &[u8] = b"H2C-OVERSIZE-DST-";

/// RFC 9380 §5.3.1 `expand_message_xmd` with SHA-512: `len_in_bytes` uniform bytes from `msg`
/// under domain-separation tag `dst`.
///
/// A `dst` longer than 255 bytes is first hashed as RFC 9380 §5.3.3 prescribes.
///
/// # Errors
/// [`CryptoError::ExpandLength`] if `len_in_bytes` exceeds `255 * 64` bytes.
pub fn expand_message_xmd_sha512(
    msg: &[u8],
    dst: &[u8],
    len_in_bytes: usize,
) -> Result<Vec<u8>, CryptoError> {
    let ell = len_in_bytes.div_ceil(B_IN_BYTES);
    if ell > 255 {
        return Err(CryptoError::ExpandLength {
            requested: len_in_bytes,
        });
    }
    let len_be = u16::try_from(len_in_bytes)
        .map_err(|_| CryptoError::ExpandLength {
            requested: len_in_bytes,
        })?
        .to_be_bytes();

    // DST_prime = DST || I2OSP(len(DST), 1), hashing oversize tags first.
    let hashed_dst;
    let dst = if dst.len() > 255 {
        let mut ctx = Context::new(&SHA512);
        ctx.update(OVERSIZE_DST_PREFIX);
        ctx.update(dst);
        hashed_dst = ctx.finish();
        hashed_dst.as_ref()
    } else {
        dst
    };
    // Cannot fail: dst is at most 255 bytes here.
    let dst_len = [u8::try_from(dst.len()).unwrap_or(u8::MAX)];

    // b_0 = H(Z_pad || msg || l_i_b_str || I2OSP(0, 1) || DST_prime)
    let mut ctx = Context::new(&SHA512);
    ctx.update(&[0u8; S_IN_BYTES]);
    ctx.update(msg);
    ctx.update(&len_be);
    ctx.update(&[0u8]);
    ctx.update(dst);
    ctx.update(&dst_len);
    let b0 = ctx.finish();

    let mut out = Vec::with_capacity(ell * B_IN_BYTES);
    let mut prev = [0u8; B_IN_BYTES];
    for i in 1..=ell {
        // b_1 = H(b_0 || I2OSP(1, 1) || DST_prime)
        // b_i = H(strxor(b_0, b_(i-1)) || I2OSP(i, 1) || DST_prime)
        let mut input = [0u8; B_IN_BYTES];
        for (x, (b0_byte, prev_byte)) in input.iter_mut().zip(b0.as_ref().iter().zip(prev)) {
            *x = b0_byte ^ prev_byte;
        }
        let mut ctx = Context::new(&SHA512);
        ctx.update(&input);
        ctx.update(&[u8::try_from(i).unwrap_or(u8::MAX)]);
        ctx.update(dst);
        ctx.update(&dst_len);
        prev.copy_from_slice(ctx.finish().as_ref());
        out.extend_from_slice(&prev);
    }
    out.truncate(len_in_bytes);
    Ok(out)
}

/// RFC 9380 `hash_to_ristretto255` (suite `ristretto255_XMD:SHA-512_R255MAP_RO_`): hashes `msg`
/// to a ristretto255 point under domain-separation tag `dst`.
pub fn hash_to_group(dst: &[u8], msg: &[u8]) -> RistrettoPoint {
    let mut uniform = [0u8; 64];
    // 64 is far below the 16320-byte limit, so expansion cannot fail.
    if let Ok(bytes) = expand_message_xmd_sha512(msg, dst, uniform.len()) {
        uniform.copy_from_slice(&bytes);
    }
    RistrettoPoint::from_uniform_bytes(&uniform)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use curve25519_dalek::Scalar;

    /// RFC 9380 Appendix K.3 domain-separation tag.
    const K3_DST: &[u8] = b"QUUX-V01-CS02-with-expander-SHA512-256";

    fn expand_hex(msg: &[u8], len: usize) -> String {
        hex::encode(expand_message_xmd_sha512(msg, K3_DST, len).unwrap())
    }

    #[test]
    fn rfc9380_k3_len_0x20() {
        assert_eq!(
            expand_hex(b"", 0x20),
            "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
        );
        assert_eq!(
            expand_hex(b"abc", 0x20),
            "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"
        );
        assert_eq!(
            expand_hex(b"abcdef0123456789", 0x20),
            "087e45a86e2939ee8b91100af1583c4938e0f5fc6c9db4b107b83346bc967f58"
        );
    }

    #[test]
    fn rfc9380_k3_len_0x80() {
        assert_eq!(
            expand_hex(b"", 0x80),
            "41b037d1734a5f8df225dd8c7de38f851efdb45c372887be655212d07251b921\
             b052b62eaed99b46f72f2ef4cc96bfaf254ebbbec091e1a3b9e4fb5e5b619d2e\
             0c5414800a1d882b62bb5cd1778f098b8eb6cb399d5d9d18f5d5842cf5d13d7e\
             b00a7cff859b605da678b318bd0e65ebff70bec88c753b159a805d2c89c55961"
        );
        assert_eq!(
            expand_hex(b"abc", 0x80),
            "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11\
             bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134\
             7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843\
             1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1"
        );
    }

    #[test]
    fn expand_rejects_too_long_outputs() {
        assert!(expand_message_xmd_sha512(b"", K3_DST, 255 * 64).is_ok());
        assert_eq!(
            expand_message_xmd_sha512(b"", K3_DST, 255 * 64 + 1),
            Err(CryptoError::ExpandLength {
                requested: 255 * 64 + 1
            })
        );
    }

    #[test]
    fn oversize_dst_is_hashed_first() {
        let long_dst = vec![b'x'; 300];
        let mut ctx = Context::new(&SHA512);
        ctx.update(OVERSIZE_DST_PREFIX);
        ctx.update(&long_dst);
        let short = ctx.finish();
        assert_eq!(
            expand_message_xmd_sha512(b"m", &long_dst, 32).unwrap(),
            expand_message_xmd_sha512(b"m", short.as_ref(), 32).unwrap()
        );
    }

    /// RFC 9497 Appendix A.1.1 (OPRF(ristretto255, SHA-512), mode 0):
    /// `BlindedElement = Blind * HashToGroup(Input)` with
    /// `DST = "HashToGroup-" || contextString`. This pins our hash_to_group to a published
    /// ristretto255 hash-to-group output.
    #[test]
    fn rfc9497_oprf_blinded_element() {
        let dst = b"HashToGroup-OPRFV1-\x00-ristretto255-SHA512";
        let mut blind = [0u8; 32];
        hex::decode_to_slice(
            "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
            &mut blind,
        )
        .unwrap();
        let blind = Scalar::from_canonical_bytes(blind).unwrap();

        let p = blind * hash_to_group(dst, &[0x00]);
        assert_eq!(
            hex::encode(p.compress().as_bytes()),
            "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c"
        );
        let p = blind * hash_to_group(dst, &[0x5a; 17]);
        assert_eq!(
            hex::encode(p.compress().as_bytes()),
            "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418"
        );
    }

    #[test]
    fn tags_separate_domains() {
        assert_ne!(
            hash_to_group(PSI_HASH_TAG, b"same"),
            hash_to_group(b"parley/v1/other", b"same")
        );
        assert_eq!(
            hash_to_group(PSI_HASH_TAG, b"same"),
            hash_to_group(PSI_HASH_TAG, b"same")
        );
    }
}
