//! The sealed-envelope wire between this node and one peer of a job, generic over the
//! protobuf payload it carries (today `PsiMessage` for the PSI family).
//!
//! # Guarantees
//! * Each direction has its own key, derived from the two nodes' X25519 keys (verified against
//!   the federation CA at the offer), the job id, the direction and a run nonce the sender
//!   draws fresh for every run and sends with each envelope (`parley_crypto::envelope`); the
//!   coordinator that relays the envelopes cannot read or alter them, and no run reuses
//!   another's key. The receiver takes the peer's run nonce from its first envelope and
//!   refuses any later envelope that carries another.
//! * Envelopes carry consecutive sequence numbers per direction, bound into the AEAD: one
//!   from another node, out of order, larger than one chunk, or failing authentication is
//!   refused with a precise reason before anything is decoded.
//! * Errors name the job, the peer and the sequence numbers, never a payload byte.

use std::marker::PhantomData;
use std::sync::Arc;

use parley_crypto::envelope::{EnvelopeKey, RunNonce, derive_envelope_key};
use parley_crypto::keys::NodeSecrets;
use parley_proto::{Envelope, NodeMessage, node_message};
use prost::Message;

use crate::NodeError;

/// Largest sealed payload accepted: one chunk plus the AEAD's overhead, with room to spare.
const MAX_SEALED_BYTES: usize = parley_proto::MAX_CHUNK_BYTES + 1024;

/// Seals outgoing and opens incoming payloads of type `M` for one job and one peer.
pub(crate) struct EnvelopeWire<M> {
    job_id: String,
    me: String,
    peer: String,
    out_key: EnvelopeKey,
    out_nonce: RunNonce,
    /// The peer's run nonce and the key derived from it, once its first envelope arrived.
    in_key: Option<(RunNonce, EnvelopeKey)>,
    peer_x25519: [u8; 32],
    secrets: Arc<NodeSecrets>,
    out_seq: u64,
    in_seq: u64,
    payload: PhantomData<fn(M) -> M>,
}

impl<M: Message + Default> EnvelopeWire<M> {
    /// The wire of job `job_id` between `me` (holding `secrets`) and `peer` (whose verified
    /// X25519 public key is `peer_x25519`).
    pub(crate) fn new(
        job_id: &str,
        me: &str,
        secrets: &Arc<NodeSecrets>,
        peer: &str,
        peer_x25519: &[u8; 32],
    ) -> Result<Self, NodeError> {
        let out_nonce = RunNonce::generate()?;
        let out_key = derive_envelope_key(
            secrets.envelope(),
            peer_x25519,
            job_id,
            me,
            peer,
            &out_nonce,
        )?;
        Ok(EnvelopeWire {
            job_id: job_id.to_owned(),
            me: me.to_owned(),
            peer: peer.to_owned(),
            out_key,
            out_nonce,
            in_key: None,
            peer_x25519: *peer_x25519,
            secrets: Arc::clone(secrets),
            out_seq: 0,
            in_seq: 0,
            payload: PhantomData,
        })
    }

    /// The job id.
    pub(crate) fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The peer's node name.
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// Seals `m` as the next envelope to the peer, ready for the link.
    pub(crate) fn seal(&mut self, m: &M) -> Result<NodeMessage, NodeError> {
        let sealed = self.out_key.seal(self.out_seq, &m.encode_to_vec())?;
        let env = Envelope {
            job_id: self.job_id.clone(),
            from: self.me.clone(),
            to: self.peer.clone(),
            seq: self.out_seq,
            sealed,
            run_nonce: self.out_nonce.0.to_vec(),
        };
        self.out_seq += 1;
        Ok(NodeMessage {
            body: Some(node_message::Body::Envelope(env)),
        })
    }

    /// Opens the next envelope from the peer.
    pub(crate) fn open(&mut self, env: Envelope) -> Result<M, NodeError> {
        let job = self.job_id.as_str();
        if env.from != self.peer {
            return Err(NodeError::protocol(
                job,
                &format!("envelope from unexpected node '{}'", env.from),
            ));
        }
        if env.seq != self.in_seq {
            return Err(NodeError::protocol(
                job,
                &format!(
                    "envelope {} from '{}' arrived out of order (expected {})",
                    env.seq, self.peer, self.in_seq
                ),
            ));
        }
        if env.sealed.len() > MAX_SEALED_BYTES {
            return Err(NodeError::protocol(
                job,
                &format!(
                    "envelope of {} bytes exceeds the 1 MiB chunk limit",
                    env.sealed.len()
                ),
            ));
        }
        let Some(nonce) = RunNonce::from_slice(&env.run_nonce) else {
            return Err(NodeError::protocol(
                job,
                &format!(
                    "envelope {} from '{}' carries no valid run nonce ({} bytes, expected 16); \
                     the peer may run an older Parley version",
                    env.seq,
                    self.peer,
                    env.run_nonce.len()
                ),
            ));
        };
        let key = match &self.in_key {
            Some((first, key)) if *first == nonce => key,
            Some(_) => {
                return Err(NodeError::protocol(
                    job,
                    &format!(
                        "envelope {} from '{}' belongs to another run (its run nonce changed)",
                        env.seq, self.peer
                    ),
                ));
            }
            None => {
                let key = derive_envelope_key(
                    self.secrets.envelope(),
                    &self.peer_x25519,
                    job,
                    &self.peer,
                    &self.me,
                    &nonce,
                )?;
                &self.in_key.insert((nonce, key)).1
            }
        };
        let plain = key.open(env.seq, &env.sealed)?;
        self.in_seq += 1;
        M::decode(plain.as_slice()).map_err(|e| {
            NodeError::protocol(
                job,
                &format!("undecodable message from '{}': {e}", self.peer),
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use parley_proto::{PsiHeader, PsiMessage, PsiStream, psi_message};

    /// Wires a→b and b→a for job-1.
    fn pair() -> (EnvelopeWire<PsiMessage>, EnvelopeWire<PsiMessage>) {
        let a = Arc::new(NodeSecrets::generate().expect("keys"));
        let b = Arc::new(NodeSecrets::generate().expect("keys"));
        (
            EnvelopeWire::new("job-1", "a", &a, "b", &b.x25519_public()).unwrap(),
            EnvelopeWire::new("job-1", "b", &b, "a", &a.x25519_public()).unwrap(),
        )
    }

    fn msg(count: u64) -> PsiMessage {
        PsiMessage {
            body: Some(psi_message::Body::Header(PsiHeader {
                stream: PsiStream::SenderBlinded as i32,
                count,
                group_size: 1,
                public_key: Vec::new(),
                group_sizes: Vec::new(),
            })),
        }
    }

    fn envelope(m: NodeMessage) -> Envelope {
        match m.body {
            Some(node_message::Body::Envelope(e)) => e,
            other => panic!("not an envelope: {other:?}"),
        }
    }

    #[test]
    fn sealed_messages_open_in_order_at_the_peer() {
        let (mut a, mut b) = pair();
        for count in [3, 0, 99] {
            let env = envelope(a.seal(&msg(count)).unwrap());
            assert_eq!((env.from.as_str(), env.to.as_str()), ("a", "b"));
            assert_eq!(b.open(env).unwrap(), msg(count));
        }
        // The other direction has its own sequence.
        let env = envelope(b.seal(&msg(5)).unwrap());
        assert_eq!(env.seq, 0);
        assert_eq!(a.open(env).unwrap(), msg(5));
    }

    #[test]
    fn replayed_reordered_or_foreign_envelopes_are_refused() {
        let (mut a, mut b) = pair();
        let first = envelope(a.seal(&msg(1)).unwrap());
        let second = envelope(a.seal(&msg(2)).unwrap());
        let err = b.open(second.clone()).unwrap_err().to_string();
        assert!(err.contains("out of order (expected 0)"), "{err}");
        b.open(first.clone()).unwrap();
        let err = b.open(first).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");

        let mut foreign = second.clone();
        foreign.from = "c".into();
        let err = b.open(foreign).unwrap_err().to_string();
        assert!(err.contains("unexpected node 'c'"), "{err}");

        let mut tampered = second.clone();
        tampered.sealed[0] ^= 1;
        assert!(b.open(tampered).is_err());

        let mut big = second.clone();
        big.sealed = vec![0; MAX_SEALED_BYTES + 1];
        let err = b.open(big).unwrap_err().to_string();
        assert!(err.contains("chunk limit"), "{err}");

        // An envelope of another run of the job (another run nonce) is refused, and so is one
        // without a nonce (an older peer).
        let mut rerun = second.clone();
        rerun.run_nonce = vec![9; 16];
        let err = b.open(rerun).unwrap_err().to_string();
        assert!(err.contains("another run"), "{err}");
        let mut bare = second;
        bare.run_nonce.clear();
        let err = b.open(bare).unwrap_err().to_string();
        assert!(err.contains("no valid run nonce"), "{err}");
    }

    #[test]
    fn every_run_seals_under_a_fresh_key() {
        // The same job offered twice to the same pair (say after a node lost its state) gives
        // different ciphertexts for the same message and sequence number.
        let (mut a, _) = pair();
        let (mut a_again, _) = pair();
        let one = envelope(a.seal(&msg(1)).unwrap());
        let two = envelope(a_again.seal(&msg(1)).unwrap());
        assert_eq!((one.seq, two.seq), (0, 0));
        assert_ne!(one.run_nonce, two.run_nonce);
        assert_ne!(one.sealed, two.sealed);
    }

    #[test]
    fn another_jobs_envelope_does_not_open() {
        let a = Arc::new(NodeSecrets::generate().expect("keys"));
        let b = Arc::new(NodeSecrets::generate().expect("keys"));
        let mut a1: EnvelopeWire<PsiMessage> =
            EnvelopeWire::new("job-1", "a", &a, "b", &b.x25519_public()).unwrap();
        let mut b2: EnvelopeWire<PsiMessage> =
            EnvelopeWire::new("job-2", "b", &b, "a", &a.x25519_public()).unwrap();
        assert!(b2.open(envelope(a1.seal(&msg(1)).unwrap())).is_err());
    }
}
