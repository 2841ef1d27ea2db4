//! The mask generator: a 32-byte seed expanded into a stream of u64 words with AES-128-CTR.
//!
//! ```text
//! key || iv = HKDF-SHA256(salt = "parley/v1/secagg/prg", ikm = seed,
//!                         info = "aes-128-ctr key and iv", L = 32)     (16 + 16 bytes)
//! keystream = AES-128-CTR(key, iv), 128-bit big-endian counter starting at iv
//! word i    = little-endian u64 of keystream bytes 8i .. 8i + 8
//! ```
//!
//! # Guarantee and assumptions
//!
//! For a uniformly random, secret seed, the words are indistinguishable from uniform as long as
//! AES-128 is a pseudorandom permutation and fewer than about 2^64 blocks are drawn from one
//! seed (the CTR/PRP switching bound); secure-aggregation vectors stay many orders of magnitude
//! below that. Seeds must be secret and never reused for two different purposes: each protocol
//! seed (a self-mask seed, a pairwise seed) is either fresh randomness or an HKDF output bound to
//! the job and the pair of participants.
//!
//! Masks are added in chunks of [`KEYSTREAM_CHUNK`] bytes of keystream, so memory stays flat
//! whatever the vector length; [`add_masks`] spreads vector chunks over rayon's threads, each
//! thread applying every seed to its chunk while the chunk is still in cache.

use std::fmt;

use aes::Aes128;
use ctr::cipher::{Block, KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::hkdf32;

/// AES-128 in counter mode with a 128-bit big-endian counter, driven block by block.
type Aes128CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;

/// HKDF salt of the key and IV derivation.
const PRG_SALT: &[u8] = b"parley/v1/secagg/prg";
/// HKDF info of the key and IV derivation.
const PRG_INFO: &[u8] = b"aes-128-ctr key and iv";

/// Bytes of keystream generated per step before being added into the vector (8 KiB: fits in
/// the L1 data cache together with the matching part of the vector).
pub const KEYSTREAM_CHUNK: usize = 8192;
/// AES blocks per keystream step.
const CHUNK_BLOCKS: usize = KEYSTREAM_CHUNK / 16;
/// Words of the vector handled by one rayon task in [`add_masks`] (64 KiB of vector).
pub const PARALLEL_CHUNK_WORDS: usize = 8192;

/// Whether a mask is added to or subtracted from a vector (mod 2^64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sign {
    /// `v[i] += mask[i]`.
    Plus,
    /// `v[i] -= mask[i]`.
    Minus,
}

impl Sign {
    /// The opposite sign.
    pub fn negate(self) -> Sign {
        match self {
            Sign::Plus => Sign::Minus,
            Sign::Minus => Sign::Plus,
        }
    }

    fn apply(self, v: &mut u64, w: u64) {
        *v = match self {
            Sign::Plus => v.wrapping_add(w),
            Sign::Minus => v.wrapping_sub(w),
        };
    }
}

/// Words `2i` and `2i + 1` of the stream, from keystream block `i`.
fn block_words(block: &Block<Aes128CtrCore>) -> (u64, u64) {
    let x = u128::from_le_bytes((*block).into());
    // Truncation keeps the low 64 bits: word 2i is bytes 0..8 little-endian.
    (x as u64, (x >> 64) as u64)
}

/// Adds `sign · keystream` into `chunk`, two words per block (`blocks` covers `chunk`).
fn add_blocks(chunk: &mut [u64], blocks: &[Block<Aes128CtrCore>], sign: Sign) {
    let (pairs, tail) = chunk.as_chunks_mut::<2>();
    match sign {
        Sign::Plus => {
            for (p, b) in pairs.iter_mut().zip(blocks) {
                let (lo, hi) = block_words(b);
                p[0] = p[0].wrapping_add(lo);
                p[1] = p[1].wrapping_add(hi);
            }
        }
        Sign::Minus => {
            for (p, b) in pairs.iter_mut().zip(blocks) {
                let (lo, hi) = block_words(b);
                p[0] = p[0].wrapping_sub(lo);
                p[1] = p[1].wrapping_sub(hi);
            }
        }
    }
    if let (Some(v), Some(b)) = (tail.first_mut(), blocks.get(pairs.len())) {
        sign.apply(v, block_words(b).0);
    }
}

/// The generator for one seed, positioned at some word of its stream. `Debug` prints nothing;
/// the AES key schedule is zeroed on drop.
#[derive(Clone)]
pub struct Prg {
    core: Aes128CtrCore,
    /// The next word to produce.
    word: u64,
}

impl fmt::Debug for Prg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prg(..)")
    }
}

impl Prg {
    /// The generator for `seed`, positioned at word 0.
    pub fn new(seed: &[u8; 32]) -> Self {
        let okm = hkdf32(PRG_SALT, seed, &[PRG_INFO]);
        let mut key = [0u8; 16];
        let mut iv = [0u8; 16];
        key.copy_from_slice(&okm[..16]);
        iv.copy_from_slice(&okm[16..]);
        let core = Aes128CtrCore::new(&key.into(), &iv.into());
        key.zeroize();
        iv.zeroize();
        Prg { core, word: 0 }
    }

    /// Moves to word `word` of the stream.
    pub fn seek_word(&mut self, word: u64) {
        self.word = word;
    }

    /// Adds (or subtracts) the next `vec.len()` words of the stream into `vec`, mod 2^64.
    pub fn add_to(&mut self, vec: &mut [u64], sign: Sign) {
        let mut blocks = [Block::<Aes128CtrCore>::default(); CHUNK_BLOCKS];
        let mut rest = vec;
        if self.word % 2 == 1
            && let Some((first, tail)) = std::mem::take(&mut rest).split_first_mut()
        {
            // Odd start: the second word of a block.
            self.core.set_block_pos(u128::from(self.word / 2));
            self.core.write_keystream_block(&mut blocks[0]);
            sign.apply(first, block_words(&blocks[0]).1);
            self.word += 1;
            rest = tail;
        }
        self.core.set_block_pos(u128::from(self.word / 2));
        for chunk in rest.chunks_mut(2 * CHUNK_BLOCKS) {
            let used = &mut blocks[..chunk.len().div_ceil(2)];
            self.core.write_keystream_blocks(used);
            add_blocks(chunk, used, sign);
        }
        self.word += rest.len() as u64;
        for b in &mut blocks {
            b.as_mut_slice().zeroize();
        }
    }
}

/// Adds `sign · PRG(seed)` into `vec`, mod 2^64, on the calling thread.
pub fn add_mask(vec: &mut [u64], seed: &[u8; 32], sign: Sign) {
    Prg::new(seed).add_to(vec, sign);
}

/// Adds every `sign · PRG` of `masks` into `vec`, mod 2^64, splitting the vector into chunks of
/// [`PARALLEL_CHUNK_WORDS`] words processed in parallel. The result equals applying
/// [`Prg::add_to`] for each generator in turn (wrapping addition is commutative).
pub fn add_masks(vec: &mut [u64], masks: &[(Prg, Sign)]) {
    if masks.is_empty() {
        return;
    }
    vec.par_chunks_mut(PARALLEL_CHUNK_WORDS)
        .enumerate()
        .for_each(|(i, chunk)| {
            let start = (i as u64) * PARALLEL_CHUNK_WORDS as u64;
            for (prg, sign) in masks {
                let mut prg = prg.clone();
                prg.seek_word(start);
                prg.add_to(chunk, *sign);
            }
        });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(seed: &[u8; 32], m: usize) -> Vec<u64> {
        let mut v = vec![0u64; m];
        add_mask(&mut v, seed, Sign::Plus);
        v
    }

    #[test]
    fn matches_the_documented_construction() {
        // Recompute words 0..5 with the ordinary AES-128-CTR stream cipher.
        use ctr::cipher::StreamCipher;
        let seed = [7u8; 32];
        let okm = hkdf32(PRG_SALT, &seed, &[PRG_INFO]);
        let mut key = [0u8; 16];
        let mut iv = [0u8; 16];
        key.copy_from_slice(&okm[..16]);
        iv.copy_from_slice(&okm[16..]);
        let mut raw = [0u8; 40];
        ctr::Ctr128BE::<Aes128>::new(&key.into(), &iv.into()).apply_keystream(&mut raw);
        let w = words(&seed, 5);
        for (i, word) in w.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[8 * i..8 * i + 8]);
            assert_eq!(*word, u64::from_le_bytes(b));
        }
        assert_ne!(words(&[8u8; 32], 5), w);
        assert_eq!(format!("{:?}", Prg::new(&seed)), "Prg(..)");
    }

    #[test]
    fn chunk_boundaries_and_seek_are_seamless() {
        let seed = [3u8; 32];
        let m = 3 * KEYSTREAM_CHUNK / 8 + 5;
        let whole = words(&seed, m);
        // Word-by-word odd-sized pieces give the same stream.
        let mut prg = Prg::new(&seed);
        let mut pieces = vec![0u64; m];
        for piece in pieces.chunks_mut(333) {
            prg.add_to(piece, Sign::Plus);
        }
        assert_eq!(pieces, whole);
        for start in [1000usize, 1001, 2 * CHUNK_BLOCKS - 1] {
            let mut tail = vec![0u64; 2 * CHUNK_BLOCKS + 3];
            let mut prg = Prg::new(&seed);
            prg.seek_word(start as u64);
            prg.add_to(&mut tail, Sign::Plus);
            assert_eq!(
                &tail[..],
                &whole[start..start + tail.len()],
                "start {start}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Adding then subtracting the same mask is the identity, and the parallel path equals
        /// the sequential one.
        #[test]
        fn plus_minus_cancel_and_parallel_matches(
            seeds in prop::collection::vec(any::<[u8; 32]>(), 1..5),
            signs in prop::collection::vec(any::<bool>(), 5),
            m in 0usize..(2 * PARALLEL_CHUNK_WORDS + 17),
            start in any::<u64>(),
        ) {
            let input: Vec<u64> = (0..m as u64).map(|i| i.wrapping_mul(start)).collect();
            let masks: Vec<(Prg, Sign)> = seeds.iter().zip(&signs)
                .map(|(s, &p)| (Prg::new(s), if p { Sign::Plus } else { Sign::Minus }))
                .collect();
            let mut parallel = input.clone();
            add_masks(&mut parallel, &masks);
            let mut sequential = input.clone();
            for (s, (_, sign)) in seeds.iter().zip(&masks) {
                add_mask(&mut sequential, s, *sign);
            }
            prop_assert_eq!(&parallel, &sequential);
            let negated: Vec<(Prg, Sign)> = masks.iter().map(|(p, s)| (p.clone(), s.negate())).collect();
            add_masks(&mut parallel, &negated);
            prop_assert_eq!(parallel, input);
        }
    }
}
