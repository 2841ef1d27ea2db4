//! A hand-driven node link for adversarial end-to-end tests.
//!
//! A `Rogue` holds a real CA-issued node certificate and real long-term keys, connects to the
//! real coordinator over mutual TLS and speaks the real protocol — but the test decides every
//! message, so it can send malformed points, stop mid-job, or misbehave in other ways against
//! honest nodes.

use std::time::Duration;

use anyhow::{Context, bail};
use parley_crypto::envelope::{EnvelopeKey, RunNonce, derive_envelope_key};
use parley_crypto::keys::NodeSecrets;
use parley_crypto::secagg::{AdvertiseKeys, Client, EncryptedShare, Params, PeerKeys, Signer};
use parley_jobs::{Job, Kind};
use parley_net::Role;
use parley_proto::node_link_client::NodeLinkClient;
use parley_proto::{
    CoordinatorMessage, Envelope, Hello, JobDecision, JobOffer, NodeMessage, SecAggRound,
    SecAggUpload, coordinator_message, node_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::harness::{Federation, issue};

/// A test-controlled node connection.
pub struct Rogue {
    /// Node name (certificate CN).
    pub name: String,
    /// Its long-term keys.
    pub secrets: NodeSecrets,
    /// The run nonce it seals its envelopes under (one per rogue: it runs one job).
    pub run_nonce: RunNonce,
    tx: Option<mpsc::Sender<NodeMessage>>,
    rx: Streaming<CoordinatorMessage>,
}

impl Rogue {
    /// Issues a node certificate for `name`, connects and registers (hello → welcome).
    pub async fn connect(fed: &Federation, name: &str) -> anyhow::Result<Rogue> {
        Self::connect_via(fed, name, fed.addr).await
    }

    /// As [`Rogue::connect`], but dials `addr` (a relay in front of the coordinator).
    pub async fn connect_via(
        fed: &Federation,
        name: &str,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<Rogue> {
        if !fed.certs.join(format!("{name}.pem")).exists() {
            issue(&fed.certs, Role::Node, name, &[])?;
        }
        let m = fed.material(name)?;
        let secrets = NodeSecrets::generate()?;
        let binding = parley_net::binding::sign_key_binding(
            &m,
            name,
            secrets.x25519_public(),
            secrets.ed25519_public(),
        )?;
        let ch = parley_net::connect(&format!("https://{addr}"), "coordinator", &m).await?;
        let mut client = NodeLinkClient::new(ch)
            .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
            .max_encoding_message_size(parley_proto::MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(16);
        tx.send(NodeMessage {
            body: Some(node_message::Body::Hello(Hello {
                keys: Some(binding),
                datasets: vec![],
                software_version: "rogue".into(),
            })),
        })
        .await?;
        let mut rx = client.open(ReceiverStream::new(rx)).await?.into_inner();
        match rx.message().await? {
            Some(CoordinatorMessage {
                body: Some(coordinator_message::Body::Welcome(_)),
            }) => {}
            other => bail!("expected welcome, got {other:?}"),
        }
        Ok(Rogue {
            name: name.to_string(),
            secrets,
            run_nonce: RunNonce::generate()?,
            tx: Some(tx),
            rx,
        })
    }

    /// The next message from the coordinator (fails after 60 s).
    pub async fn next(&mut self) -> anyhow::Result<coordinator_message::Body> {
        let m = tokio::time::timeout(Duration::from_secs(60), self.rx.message())
            .await
            .context("no message from the coordinator within 60 s")??
            .context("link closed")?;
        m.body.context("empty coordinator message")
    }

    /// Waits for an offer and accepts it.
    pub async fn accept_next_offer(&mut self) -> anyhow::Result<JobOffer> {
        loop {
            if let coordinator_message::Body::Offer(o) = self.next().await? {
                self.send(node_message::Body::Decision(JobDecision {
                    job_id: o.job_id.clone(),
                    accept: true,
                    reason: String::new(),
                }))
                .await?;
                return Ok(o);
            }
        }
    }

    /// Waits for the start of `job_id`.
    pub async fn wait_start(&mut self, job_id: &str) -> anyhow::Result<()> {
        loop {
            if let coordinator_message::Body::Start(s) = self.next().await?
                && s.job_id == job_id
            {
                return Ok(());
            }
        }
    }

    /// Sends one message on the link.
    pub async fn send(&self, body: node_message::Body) -> anyhow::Result<()> {
        self.tx
            .as_ref()
            .context("link already closed")?
            .send(NodeMessage { body: Some(body) })
            .await?;
        Ok(())
    }

    /// The envelope key for `from` → `to` in `job`, with the peer's bound X25519 key.
    pub fn key(
        &self,
        offer: &JobOffer,
        peer: &str,
        from: &str,
        to: &str,
    ) -> anyhow::Result<EnvelopeKey> {
        let b = offer
            .participants
            .iter()
            .find(|b| b.node_name == peer)
            .context("peer binding missing from offer")?;
        let pk: [u8; 32] = b.x25519_public.as_slice().try_into()?;
        Ok(derive_envelope_key(
            self.secrets.envelope(),
            &pk,
            &offer.job_id,
            from,
            to,
            &self.run_nonce,
        )?)
    }

    /// Seals `plain` as envelope `seq` to `to` and sends it.
    pub async fn send_sealed(
        &self,
        offer: &JobOffer,
        to: &str,
        seq: u64,
        plain: &[u8],
    ) -> anyhow::Result<()> {
        let key = self.key(offer, to, &self.name, to)?;
        let sealed = key.seal(seq, plain)?;
        self.send(node_message::Body::Envelope(Envelope {
            job_id: offer.job_id.clone(),
            from: self.name.clone(),
            to: to.to_string(),
            seq,
            sealed,
            run_nonce: self.run_nonce.0.to_vec(),
        }))
        .await
    }

    /// Drops the link (as a crashed process would).
    pub fn disconnect(&mut self) {
        self.tx = None;
    }

    /// The next secure-aggregation round message for `job_id`.
    pub async fn next_secagg(&mut self, job_id: &str) -> anyhow::Result<SecAggRound> {
        loop {
            match self.next().await? {
                coordinator_message::Body::Secagg(r) if r.job_id == job_id => return Ok(r),
                coordinator_message::Body::Abort(a) if a.job_id == job_id => {
                    bail!("job aborted: {}", a.reason)
                }
                _ => {}
            }
        }
    }

    async fn upload(&self, job_id: &str, round: u32, messages: Vec<Vec<u8>>) -> anyhow::Result<()> {
        self.send(node_message::Body::Secagg(SecAggUpload {
            job_id: job_id.to_string(),
            round,
            messages,
        }))
        .await
    }

    /// Takes part in the secure_sum job of `offer` (already accepted and started) with the real
    /// protocol and `input`, misbehaving as `plan` says. Returns its round-0 message (for
    /// replay tests).
    pub async fn run_secagg(
        &mut self,
        offer: &JobOffer,
        input: &[u64],
        plan: SecAggPlan,
    ) -> anyhow::Result<Vec<u8>> {
        let spec = offer.spec.as_ref().context("offer without spec")?;
        let job = Job::try_from(spec)?;
        let Kind::SecureSum(k) = &job.kind else {
            bail!("not a secure_sum job");
        };
        let n = spec.participants.len();
        let index = spec
            .participants
            .iter()
            .position(|q| q.node == self.name)
            .context("not a participant")? as u32
            + 1;
        let mut peer_keys = PeerKeys::new();
        for (i, q) in spec.participants.iter().enumerate() {
            let b = offer
                .participants
                .iter()
                .find(|b| b.node_name == q.node)
                .context("binding missing")?;
            peer_keys.insert(i as u32 + 1, b.ed25519_public.as_slice().try_into()?);
        }
        let mut vector_len = k.vector_len();
        if plan == SecAggPlan::WrongLength {
            vector_len -= 1;
        }
        let params = Params {
            job_id: offer.job_id.clone(),
            n: n as u32,
            threshold: k.threshold,
            vector_len,
            max_vector_len: vector_len,
        };
        let secrets = std::sync::Arc::new(NodeSecrets::from_bytes(&self.secrets.to_bytes())?);
        let signer: Signer = std::sync::Arc::new(move |m: &[u8]| secrets.sign_ed25519(m));
        let client = Client::new(params, index, signer, peer_keys, &mut rand::rng())?;
        let job = offer.job_id.clone();
        let (st, adv) = client.round0();
        let adv_bytes = adv.to_bytes();
        let round0 = match &plan {
            SecAggPlan::Replay(old) => old.clone(),
            _ => adv_bytes.clone(),
        };
        self.upload(&job, 0, vec![round0]).await?;
        if plan == SecAggPlan::DropAfter(0) {
            self.disconnect();
            return Ok(adv_bytes);
        }
        let r1 = self.next_secagg(&job).await?;
        let ads = r1
            .messages
            .iter()
            .map(|b| AdvertiseKeys::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()?;
        let (st, shares) = st.round1(&ads)?;
        self.upload(
            &job,
            1,
            shares.iter().map(EncryptedShare::to_bytes).collect(),
        )
        .await?;
        if plan == SecAggPlan::DropAfter(1) {
            self.disconnect();
            return Ok(adv_bytes);
        }
        let r2 = self.next_secagg(&job).await?;
        let mine = r2
            .messages
            .iter()
            .map(|b| EncryptedShare::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()?;
        let input = &input[..vector_len.min(input.len())];
        let (st, masked) = st.round2(&mine, input)?;
        let mut bytes = masked.to_bytes();
        if plan == SecAggPlan::AlterMaskedInput {
            let i = bytes.len() - 64 - 3; // inside the last vector word
            bytes[i] ^= 0x01;
        }
        self.upload(&job, 2, vec![bytes]).await?;
        if plan == SecAggPlan::DropAfter(2) {
            self.disconnect();
            return Ok(adv_bytes);
        }
        if matches!(plan, SecAggPlan::AlterMaskedInput | SecAggPlan::WrongLength) {
            return Ok(adv_bytes);
        }
        let r3 = self.next_secagg(&job).await?;
        let unmask = st.round3(&r3.survivors)?;
        self.upload(&job, 3, vec![unmask.to_bytes()]).await?;
        Ok(adv_bytes)
    }
}

/// How a test-driven secure-aggregation participant behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecAggPlan {
    /// Follows the protocol to the end.
    Honest,
    /// Sends its message of this round (0, 1 or 2), then its link drops.
    DropAfter(u32),
    /// Flips one bit of its (signed) masked input.
    AlterMaskedInput,
    /// Sends a correctly signed masked input one word short.
    WrongLength,
    /// Sends these bytes (e.g. an advertisement from an earlier job) as its round-0 message.
    Replay(Vec<u8>),
}
