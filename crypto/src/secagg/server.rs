//! The server role (the coordinator): one state per round, each consumed by the next step.
//! `add_*` calls reject a bad message without ending the run; `finish_*` calls end a round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rayon::prelude::*;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::shamir::{ByteShare, Interpolator};

use super::prg::{PARALLEL_CHUNK_WORDS, Prg, Sign, add_masks};
use super::{
    AdvertiseKeys, EncryptedShare, MaskedInput, Params, PeerKeys, SecAggError, ShareKind,
    UnmaskEntry, UnmaskShares, check_setup, pairwise_seed,
};

/// What every server state carries.
#[derive(Clone)]
struct Core {
    params: Params,
    peers: PeerKeys,
}

impl Core {
    fn job(&self) -> &str {
        &self.params.job_id
    }

    fn t(&self) -> u32 {
        self.params.threshold
    }

    fn enough(&self, round: u8, have: usize) -> Result<(), SecAggError> {
        if have < self.t() as usize {
            return Err(SecAggError::TooFewSurvivors {
                round,
                have,
                need: self.t(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("job_id", &self.params.job_id)
            .field("n", &self.params.n)
            .field("threshold", &self.params.threshold)
            .finish_non_exhaustive()
    }
}

/// The server collecting round-0 advertisements.
#[derive(Clone, Debug)]
pub struct Server {
    core: Core,
    adverts: BTreeMap<u32, AdvertiseKeys>,
}

impl Server {
    /// The server of the run `params`, knowing every client's Ed25519 public key.
    ///
    /// # Errors
    /// Parameter errors ([`Params::validate`]), [`SecAggError::MissingPeerKey`].
    pub fn new(params: Params, peer_keys: PeerKeys) -> Result<Self, SecAggError> {
        let peers = check_setup(&params, peer_keys)?;
        Ok(Server {
            core: Core { params, peers },
            adverts: BTreeMap::new(),
        })
    }

    /// Accepts one client's advertisement.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`], [`SecAggError::BadSignature`],
    /// [`SecAggError::WrongJob`], [`SecAggError::Duplicate`].
    pub fn add_advertisement(&mut self, msg: AdvertiseKeys) -> Result<(), SecAggError> {
        msg.verify(&self.core.peers)?;
        let from = msg.sender();
        if msg.job_id() != self.core.job() {
            return Err(SecAggError::WrongJob { from, round: 0 });
        }
        if self.adverts.contains_key(&from) {
            return Err(SecAggError::Duplicate { from, round: 0 });
        }
        self.adverts.insert(from, msg);
        Ok(())
    }

    /// Ends round 0: the advertisements of `U1`, to broadcast to all of `U1`.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] if `|U1| < t`.
    pub fn finish_round0(self) -> Result<(ServerAwaitingShares, Vec<AdvertiseKeys>), SecAggError> {
        self.core.enough(0, self.adverts.len())?;
        let list = self.adverts.values().cloned().collect();
        let masking_publics = self
            .adverts
            .iter()
            .map(|(&v, a)| (v, *a.masking_public()))
            .collect();
        Ok((
            ServerAwaitingShares {
                core: self.core,
                masking_publics,
                batches: BTreeMap::new(),
            },
            list,
        ))
    }
}

/// The server collecting round-1 encrypted shares.
#[derive(Clone, Debug)]
pub struct ServerAwaitingShares {
    core: Core,
    /// `U1`'s masking public keys.
    masking_publics: BTreeMap<u32, [u8; 32]>,
    batches: BTreeMap<u32, Vec<EncryptedShare>>,
}

impl ServerAwaitingShares {
    /// Accepts client `from`'s batch of encrypted shares: exactly one for every member of `U1`.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`], [`SecAggError::NotInPreviousRound`],
    /// [`SecAggError::Duplicate`], [`SecAggError::SenderMismatch`], [`SecAggError::WrongJob`],
    /// [`SecAggError::WrongRecipients`].
    pub fn add_shares(
        &mut self,
        from: u32,
        shares: Vec<EncryptedShare>,
    ) -> Result<(), SecAggError> {
        if !self.masking_publics.contains_key(&from) {
            return Err(self.core.params.outsider(from, 1));
        }
        if self.batches.contains_key(&from) {
            return Err(SecAggError::Duplicate { from, round: 1 });
        }
        let mut recipients = BTreeSet::new();
        for s in &shares {
            if s.sender() != from {
                return Err(SecAggError::SenderMismatch {
                    from,
                    claimed: s.sender(),
                });
            }
            if s.job_id() != self.core.job() {
                return Err(SecAggError::WrongJob { from, round: 1 });
            }
            if !self.masking_publics.contains_key(&s.recipient())
                || !recipients.insert(s.recipient())
            {
                return Err(SecAggError::WrongRecipients { from });
            }
        }
        if recipients.len() != self.masking_publics.len() {
            return Err(SecAggError::WrongRecipients { from });
        }
        self.batches.insert(from, shares);
        Ok(())
    }

    /// Ends round 1: `U2` are the clients whose batches arrived. Returns, for each member of
    /// `U2`, the shares addressed to it by members of `U2` (shares for round-1 dropouts are
    /// discarded).
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] if `|U2| < t`.
    #[allow(clippy::type_complexity)]
    pub fn finish_round1(
        self,
    ) -> Result<(ServerAwaitingInputs, BTreeMap<u32, Vec<EncryptedShare>>), SecAggError> {
        self.core.enough(1, self.batches.len())?;
        let mut out: BTreeMap<u32, Vec<EncryptedShare>> = self
            .batches
            .keys()
            .map(|&v| (v, Vec::with_capacity(self.batches.len())))
            .collect();
        for batch in self.batches.into_values() {
            for s in batch {
                if let Some(list) = out.get_mut(&s.recipient()) {
                    list.push(s);
                }
            }
        }
        let masking_publics = self
            .masking_publics
            .into_iter()
            .filter(|(v, _)| out.contains_key(v))
            .collect();
        Ok((
            ServerAwaitingInputs {
                core: self.core,
                masking_publics,
                inputs: BTreeMap::new(),
            },
            out,
        ))
    }
}

/// The server collecting round-2 masked inputs.
#[derive(Clone, Debug)]
pub struct ServerAwaitingInputs {
    core: Core,
    /// `U2`'s masking public keys.
    masking_publics: BTreeMap<u32, [u8; 32]>,
    inputs: BTreeMap<u32, Vec<u64>>,
}

impl ServerAwaitingInputs {
    /// Accepts one client's masked input.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`], [`SecAggError::BadSignature`],
    /// [`SecAggError::WrongJob`], [`SecAggError::NotInPreviousRound`],
    /// [`SecAggError::Duplicate`], [`SecAggError::WrongVectorLength`].
    pub fn add_masked_input(&mut self, msg: MaskedInput) -> Result<(), SecAggError> {
        msg.verify(&self.core.peers)?;
        let from = msg.sender();
        if msg.job_id() != self.core.job() {
            return Err(SecAggError::WrongJob { from, round: 2 });
        }
        if !self.masking_publics.contains_key(&from) {
            return Err(self.core.params.outsider(from, 2));
        }
        if self.inputs.contains_key(&from) {
            return Err(SecAggError::Duplicate { from, round: 2 });
        }
        let expected = self.core.params.vector_len;
        if msg.vector().len() != expected {
            return Err(SecAggError::WrongVectorLength {
                from,
                expected,
                got: msg.vector().len(),
            });
        }
        self.inputs.insert(from, msg.into_vector());
        Ok(())
    }

    /// Ends round 2: `U3` (ascending), to send to every member of `U3`.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] if `|U3| < t`.
    pub fn finish_round2(self) -> Result<(ServerAwaitingUnmask, Vec<u32>), SecAggError> {
        self.core.enough(2, self.inputs.len())?;
        let u3 = self.inputs.keys().copied().collect();
        Ok((
            ServerAwaitingUnmask {
                core: self.core,
                masking_publics: self.masking_publics,
                inputs: self.inputs,
                responses: BTreeMap::new(),
            },
            u3,
        ))
    }
}

/// The server collecting round-3 unmasking shares.
#[derive(Clone, Debug)]
pub struct ServerAwaitingUnmask {
    core: Core,
    /// `U2`'s masking public keys.
    masking_publics: BTreeMap<u32, [u8; 32]>,
    /// `U3`'s masked inputs.
    inputs: BTreeMap<u32, Vec<u64>>,
    /// Invariant: each value has one entry per member of `U2`, in ascending owner order, of
    /// kind `SelfMaskSeed` exactly for members of `U3`.
    responses: BTreeMap<u32, Vec<UnmaskEntry>>,
}

impl ServerAwaitingUnmask {
    /// Accepts one client's unmasking shares.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`], [`SecAggError::BadSignature`],
    /// [`SecAggError::WrongJob`], [`SecAggError::NotInPreviousRound`],
    /// [`SecAggError::Duplicate`], [`SecAggError::UnmaskContents`].
    pub fn add_unmask(&mut self, msg: UnmaskShares) -> Result<(), SecAggError> {
        msg.verify(&self.core.peers)?;
        let from = msg.sender();
        if msg.job_id() != self.core.job() {
            return Err(SecAggError::WrongJob { from, round: 3 });
        }
        if !self.inputs.contains_key(&from) {
            return Err(self.core.params.outsider(from, 3));
        }
        if self.responses.contains_key(&from) {
            return Err(SecAggError::Duplicate { from, round: 3 });
        }
        let entries = msg.into_entries();
        let mut expected = self.masking_publics.keys();
        for e in &entries {
            let Some(&owner) = expected.next() else {
                return Err(SecAggError::UnmaskContents {
                    from,
                    owner: e.owner,
                });
            };
            let kind = if self.inputs.contains_key(&owner) {
                ShareKind::SelfMaskSeed
            } else {
                ShareKind::MaskingKey
            };
            if e.owner != owner || e.kind != kind || e.share.x != from {
                return Err(SecAggError::UnmaskContents { from, owner });
            }
        }
        if let Some(&owner) = expected.next() {
            return Err(SecAggError::UnmaskContents { from, owner });
        }
        self.responses.insert(from, entries);
        Ok(())
    }

    /// Ends the run: reconstructs the survivors' self-mask seeds and the dropouts' masking keys
    /// from the first `t` responses and returns `Σ_{u∈U3} x_u (mod 2^64)`.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] with fewer than `t` responses;
    /// [`SecAggError::ReconstructionFailed`] if a dropout's reconstructed masking key does not
    /// match its advertised public key (or shares are visibly inconsistent).
    pub fn finish(self) -> Result<Vec<u64>, SecAggError> {
        let core = &self.core;
        core.enough(3, self.responses.len())?;
        let t = core.t() as usize;
        let responders: Vec<(&u32, &Vec<UnmaskEntry>)> = self.responses.iter().take(t).collect();
        let xs: Vec<u32> = responders.iter().map(|(w, _)| **w).collect();
        let interpolator =
            Interpolator::new(&xs, core.t()).map_err(|_| SecAggError::TooFewSurvivors {
                round: 3,
                have: self.responses.len(),
                need: core.t(),
            })?;

        // Reconstruct every owner's secret (entries are aligned with `masking_publics`).
        let owners: Vec<(usize, u32)> = self.masking_publics.keys().copied().enumerate().collect();
        enum Recovered {
            /// A survivor's self-mask seed.
            SelfMask(Zeroizing<[u8; 32]>),
            /// A dropout's masking key.
            MaskingKey(u32, StaticSecret),
        }
        let reconstructed: Vec<Result<Recovered, SecAggError>> = owners
            .par_iter()
            .map(|&(i, owner)| {
                let shares: Vec<ByteShare> =
                    responders.iter().map(|(_, e)| e[i].share.clone()).collect();
                let secret = interpolator
                    .reconstruct_bytes(&shares)
                    .map_err(|_| SecAggError::ReconstructionFailed { owner })?;
                if self.inputs.contains_key(&owner) {
                    Ok(Recovered::SelfMask(secret))
                } else {
                    let key = StaticSecret::from(*secret);
                    let advertised = self
                        .masking_publics
                        .get(&owner)
                        .ok_or(SecAggError::ReconstructionFailed { owner })?;
                    if PublicKey::from(&key).as_bytes() != advertised {
                        return Err(SecAggError::ReconstructionFailed { owner });
                    }
                    Ok(Recovered::MaskingKey(owner, key))
                }
            })
            .collect();
        let mut masks = Vec::new();
        let mut dropped = Vec::new();
        for r in reconstructed {
            match r? {
                Recovered::SelfMask(seed) => masks.push((Prg::new(&seed), Sign::Minus)),
                Recovered::MaskingKey(owner, key) => dropped.push((owner, key)),
            }
        }

        // The pairwise terms survivors added for dropouts, recomputed from the dropouts' keys:
        // survivor u added +PRG(s_uv) if v > u and −PRG(s_uv) if v < u; remove them.
        let pairs: Vec<(&(u32, StaticSecret), u32)> = dropped
            .iter()
            .flat_map(|d| self.inputs.keys().map(move |&u| (d, u)))
            .collect();
        let pairwise: Vec<Result<(Prg, Sign), SecAggError>> = pairs
            .par_iter()
            .map(|&(dropout, u)| {
                let (v, s_v) = (dropout.0, &dropout.1);
                let u_public = self
                    .masking_publics
                    .get(&u)
                    .ok_or(SecAggError::ReconstructionFailed { owner: u })?;
                let seed = pairwise_seed(core.job(), s_v, v, u_public, u)?;
                let added = if v > u { Sign::Plus } else { Sign::Minus };
                Ok((Prg::new(&seed), added.negate()))
            })
            .collect();
        for r in pairwise {
            masks.push(r?);
        }

        let mut sum = vec![0u64; core.params.vector_len];
        sum.par_chunks_mut(PARALLEL_CHUNK_WORDS)
            .enumerate()
            .for_each(|(i, out)| {
                let start = i * PARALLEL_CHUNK_WORDS;
                for y in self.inputs.values() {
                    for (o, w) in out.iter_mut().zip(&y[start..]) {
                        *o = o.wrapping_add(*w);
                    }
                }
            });
        add_masks(&mut sum, &masks);
        Ok(sum)
    }
}
