//! The client role: one state per round, each consumed by the next step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand_core::CryptoRng;
use rayon::prelude::*;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::shamir::{BYTE_SHARE_LEN, ByteShare, BytesSharing};

use super::prg::{Prg, Sign, add_masks};
use super::{
    AdvertiseKeys, EncryptedShare, MaskedInput, Params, PeerKeys, SHARE_PLAINTEXT_LEN, SecAggError,
    ShareChannel, ShareKind, Signer, UnmaskEntry, UnmaskShares, check_setup, pairwise_seed,
};

/// What every client state carries.
struct Core {
    params: Params,
    index: u32,
    signer: Signer,
    peers: PeerKeys,
}

impl Core {
    fn job(&self) -> &str {
        &self.params.job_id
    }

    fn t(&self) -> u32 {
        self.params.threshold
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("job_id", &self.params.job_id)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A client before round 0, holding all the randomness of its run: two X25519 key pairs, the
/// self-mask seed, and the Shamir polynomials sharing the seed and the masking key. `Debug`
/// prints only the job and index; secrets are zeroed on drop.
pub struct Client {
    core: Core,
    channel: StaticSecret,
    masking: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
    seed_sharing: BytesSharing,
    key_sharing: BytesSharing,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl Client {
    /// Client `index` of the run `params`, signing with `signer` (its Ed25519 node key) and
    /// checking peers against `peer_keys` (an Ed25519 public key for every index `1..=n`).
    ///
    /// # Errors
    /// Parameter errors ([`Params::validate`]), [`SecAggError::IndexOutOfRange`],
    /// [`SecAggError::MissingPeerKey`].
    pub fn new<R: CryptoRng + ?Sized>(
        params: Params,
        index: u32,
        signer: Signer,
        peer_keys: PeerKeys,
        rng: &mut R,
    ) -> Result<Self, SecAggError> {
        let peers = check_setup(&params, peer_keys)?;
        if index == 0 || index > params.n {
            return Err(SecAggError::IndexOutOfRange { index, n: params.n });
        }
        let channel = StaticSecret::random_from_rng(rng);
        let masking = StaticSecret::random_from_rng(rng);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut self_seed[..]);
        let (t, n) = (params.threshold, params.n);
        let bad_t = |_| SecAggError::ThresholdOutOfRange { t, n };
        let seed_sharing = BytesSharing::random(&self_seed, t, rng).map_err(bad_t)?;
        let masking_bytes = Zeroizing::new(masking.to_bytes());
        let key_sharing = BytesSharing::random(&masking_bytes, t, rng).map_err(bad_t)?;
        Ok(Client {
            core: Core {
                params,
                index,
                signer,
                peers,
            },
            channel,
            masking,
            self_seed,
            seed_sharing,
            key_sharing,
        })
    }

    /// Round 0: the signed advertisement of this client's two public keys, for the server.
    pub fn round0(self) -> (ClientAwaitingAdvertisements, AdvertiseKeys) {
        let own = AdvertiseKeys::signed(
            self.core.job(),
            self.core.index,
            PublicKey::from(&self.channel).to_bytes(),
            PublicKey::from(&self.masking).to_bytes(),
            &*self.core.signer,
        );
        let next = ClientAwaitingAdvertisements {
            client: self,
            own: own.clone(),
        };
        (next, own)
    }
}

/// A client that advertised its keys and waits for the server's list of advertisements.
pub struct ClientAwaitingAdvertisements {
    client: Client,
    own: AdvertiseKeys,
}

impl fmt::Debug for ClientAwaitingAdvertisements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.core.fmt(f)
    }
}

impl ClientAwaitingAdvertisements {
    /// Round 1: checks every advertisement (`U1`), and returns one encrypted share message per
    /// member of `U1` (this client included), for the server to forward.
    ///
    /// # Errors
    /// For an advertisement: [`SecAggError::UnknownParticipant`], [`SecAggError::BadSignature`],
    /// [`SecAggError::WrongJob`], [`SecAggError::Duplicate`],
    /// [`SecAggError::NonContributoryKey`]; [`SecAggError::NotIncluded`] or
    /// [`SecAggError::AdvertisementMismatch`] if our own is missing or altered;
    /// [`SecAggError::TooFewSurvivors`] if `|U1| < t`.
    pub fn round1(
        self,
        advertisements: &[AdvertiseKeys],
    ) -> Result<(ClientAwaitingShares, Vec<EncryptedShare>), SecAggError> {
        let c = &self.client;
        let core = &c.core;
        let me = core.index;
        let signatures = AdvertiseKeys::verify_all(advertisements, &core.peers);
        let mut u1: BTreeMap<u32, &AdvertiseKeys> = BTreeMap::new();
        for (a, signature) in advertisements.iter().zip(signatures) {
            signature?;
            let from = a.sender();
            if a.job_id() != core.job() {
                return Err(SecAggError::WrongJob { from, round: 0 });
            }
            if u1.insert(from, a).is_some() {
                return Err(SecAggError::Duplicate { from, round: 0 });
            }
        }
        match u1.get(&me) {
            None => return Err(SecAggError::NotIncluded { round: 0 }),
            Some(own) if **own != self.own => {
                return Err(SecAggError::AdvertisementMismatch { from: me });
            }
            Some(_) => {}
        }
        if u1.len() < core.t() as usize {
            return Err(SecAggError::TooFewSurvivors {
                round: 0,
                have: u1.len(),
                need: core.t(),
            });
        }

        type PerPeer = (EncryptedShare, Option<Zeroizing<[u8; 32]>>, ShareChannel);
        let per_peer: Vec<Result<PerPeer, SecAggError>> = u1
            .par_iter()
            .map(|(&v, a)| {
                // One X25519 agreement gives the channel to v and, for round 2, the one from v.
                let (channel, inbound) =
                    ShareChannel::pair(core.job(), &c.channel, a.channel_public(), v, me)?;
                let unknown = |_| SecAggError::UnknownParticipant { from: v, round: 0 };
                let b = c.seed_sharing.share(v).map_err(unknown)?;
                let s = c.key_sharing.share(v).map_err(unknown)?;
                let mut plain = Zeroizing::new([0u8; SHARE_PLAINTEXT_LEN]);
                plain[..4].copy_from_slice(&me.to_be_bytes());
                plain[4..8].copy_from_slice(&v.to_be_bytes());
                plain[8..8 + BYTE_SHARE_LEN].copy_from_slice(b.y_bytes().as_ref());
                plain[8 + BYTE_SHARE_LEN..].copy_from_slice(s.y_bytes().as_ref());
                let sealed = channel.seal(&plain)?;
                let seed = if v == me {
                    None
                } else {
                    Some(pairwise_seed(
                        core.job(),
                        &c.masking,
                        me,
                        a.masking_public(),
                        v,
                    )?)
                };
                Ok((
                    EncryptedShare::new(core.job(), me, v, sealed),
                    seed,
                    inbound,
                ))
            })
            .collect();

        let mut shares = Vec::with_capacity(u1.len());
        let mut pairwise = BTreeMap::new();
        let mut inbound = BTreeMap::new();
        for (&v, result) in u1.keys().zip(per_peer) {
            let (share, seed, channel) = result?;
            shares.push(share);
            inbound.insert(v, channel);
            if let Some(seed) = seed {
                pairwise.insert(v, seed);
            }
        }
        let Client {
            core, self_seed, ..
        } = self.client;
        let next = ClientAwaitingShares {
            core,
            self_seed,
            inbound,
            pairwise,
        };
        Ok((next, shares))
    }
}

/// A client that sent its shares and waits for the shares addressed to it.
pub struct ClientAwaitingShares {
    core: Core,
    self_seed: Zeroizing<[u8; 32]>,
    /// For each member of `U1`, the channel its share to us is sealed under.
    inbound: BTreeMap<u32, ShareChannel>,
    /// Pairwise mask seeds with every other member of `U1`.
    pairwise: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for ClientAwaitingShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl ClientAwaitingShares {
    /// Round 2: opens and keeps the shares addressed to this client (their senders are `U2`)
    /// and returns the signed masked input
    /// `input + PRG(b_u) + Σ_{v∈U2, v>u} PRG(s_uv) − Σ_{v∈U2, v<u} PRG(s_uv)` (mod 2^64).
    ///
    /// # Errors
    /// [`SecAggError::InputLength`]; for a share: [`SecAggError::WrongJob`],
    /// [`SecAggError::Misaddressed`], [`SecAggError::NotInPreviousRound`],
    /// [`SecAggError::UnknownParticipant`], [`SecAggError::Duplicate`],
    /// [`SecAggError::ShareAuthentication`], [`SecAggError::ShareBinding`],
    /// [`SecAggError::NonCanonicalShare`]; [`SecAggError::NotIncluded`] if our own share is
    /// missing; [`SecAggError::TooFewSurvivors`] if `|U2| < t`.
    pub fn round2(
        self,
        received: &[EncryptedShare],
        input: &[u64],
    ) -> Result<(ClientAwaitingSurvivors, MaskedInput), SecAggError> {
        let core = &self.core;
        let me = core.index;
        if input.len() != core.params.vector_len {
            return Err(SecAggError::InputLength {
                expected: core.params.vector_len,
                got: input.len(),
            });
        }
        let mut u2 = BTreeSet::new();
        for e in received {
            let from = e.sender();
            if e.job_id() != core.job() {
                return Err(SecAggError::WrongJob { from, round: 1 });
            }
            if e.recipient() != me {
                return Err(SecAggError::Misaddressed {
                    from,
                    to: e.recipient(),
                });
            }
            if !self.inbound.contains_key(&from) {
                return Err(core.params.outsider(from, 1));
            }
            if !u2.insert(from) {
                return Err(SecAggError::Duplicate { from, round: 1 });
            }
        }

        let opened: Vec<Result<(ByteShare, ByteShare), SecAggError>> =
            received.par_iter().map(|e| self.open(e)).collect();
        let mut shares = BTreeMap::new();
        for (e, result) in received.iter().zip(opened) {
            shares.insert(e.sender(), result?);
        }
        if !u2.contains(&me) {
            return Err(SecAggError::NotIncluded { round: 1 });
        }
        if u2.len() < core.t() as usize {
            return Err(SecAggError::TooFewSurvivors {
                round: 1,
                have: u2.len(),
                need: core.t(),
            });
        }

        let mut masks = Vec::with_capacity(u2.len());
        masks.push((Prg::new(&self.self_seed), Sign::Plus));
        for (&v, seed) in &self.pairwise {
            if u2.contains(&v) {
                let sign = if v > me { Sign::Plus } else { Sign::Minus };
                masks.push((Prg::new(seed), sign));
            }
        }
        let mut vector = input.to_vec();
        add_masks(&mut vector, &masks);
        let msg = MaskedInput::signed(core.job(), me, vector, &*core.signer);
        let next = ClientAwaitingSurvivors {
            core: self.core,
            shares,
        };
        Ok((next, msg))
    }

    /// Opens one share addressed to us (header already checked): the sender's shares of its
    /// self-mask seed and of its masking key, both at `x = our index`.
    fn open(&self, e: &EncryptedShare) -> Result<(ByteShare, ByteShare), SecAggError> {
        let me = self.core.index;
        let from = e.sender();
        let channel = self
            .inbound
            .get(&from)
            .ok_or(SecAggError::NotInPreviousRound { from, round: 1 })?;
        let plain = channel
            .open(e.sealed())
            .ok_or(SecAggError::ShareAuthentication { from })?;
        if plain[..4] != from.to_be_bytes() || plain[4..8] != me.to_be_bytes() {
            return Err(SecAggError::ShareBinding { from });
        }
        let mut b = Zeroizing::new([0u8; BYTE_SHARE_LEN]);
        let mut s = Zeroizing::new([0u8; BYTE_SHARE_LEN]);
        b.copy_from_slice(&plain[8..8 + BYTE_SHARE_LEN]);
        s.copy_from_slice(&plain[8 + BYTE_SHARE_LEN..]);
        let bad = |_| SecAggError::NonCanonicalShare { from };
        Ok((
            ByteShare::from_y_bytes(me, &b).map_err(bad)?,
            ByteShare::from_y_bytes(me, &s).map_err(bad)?,
        ))
    }
}

/// A client that sent its masked input and waits for the list of survivors `U3`.
pub struct ClientAwaitingSurvivors {
    core: Core,
    /// For each member of `U2`: its shares of (self-mask seed, masking key) held by us.
    shares: BTreeMap<u32, (ByteShare, ByteShare)>,
}

impl fmt::Debug for ClientAwaitingSurvivors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl ClientAwaitingSurvivors {
    /// The clients whose shares this client received in round 2 (`U2`), ascending.
    pub fn round2_clients(&self) -> Vec<u32> {
        self.shares.keys().copied().collect()
    }

    /// Round 3: given `U3` (the clients whose masked inputs reached the server), reveals our
    /// share of `b_v` for each `v ∈ U3` and of `s_v` for each `v ∈ U2 \ U3`, signed. Entries
    /// are in ascending order of `v`, exactly one per member of `U2`.
    ///
    /// # Errors
    /// [`SecAggError::InvalidSurvivor`] for an index outside `U2` or listed twice;
    /// [`SecAggError::NotIncluded`] if we are not in `U3`; [`SecAggError::TooFewSurvivors`] if
    /// `|U3| < t`.
    pub fn round3(self, survivors: &[u32]) -> Result<UnmaskShares, SecAggError> {
        let core = &self.core;
        let mut u3 = BTreeSet::new();
        for &v in survivors {
            if !self.shares.contains_key(&v) || !u3.insert(v) {
                return Err(SecAggError::InvalidSurvivor { index: v });
            }
        }
        if !u3.contains(&core.index) {
            return Err(SecAggError::NotIncluded { round: 2 });
        }
        if u3.len() < core.t() as usize {
            return Err(SecAggError::TooFewSurvivors {
                round: 2,
                have: u3.len(),
                need: core.t(),
            });
        }
        let entries = self
            .shares
            .iter()
            .map(|(&owner, (b, s))| {
                if u3.contains(&owner) {
                    UnmaskEntry {
                        owner,
                        kind: ShareKind::SelfMaskSeed,
                        share: b.clone(),
                    }
                } else {
                    UnmaskEntry {
                        owner,
                        kind: ShareKind::MaskingKey,
                        share: s.clone(),
                    }
                }
            })
            .collect();
        Ok(UnmaskShares::signed(
            core.job(),
            core.index,
            entries,
            &*core.signer,
        ))
    }
}
