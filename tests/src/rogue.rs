//! A hand-driven node link for adversarial end-to-end tests.
//!
//! A `Rogue` holds a real CA-issued node certificate and real long-term keys, connects to the
//! real coordinator over mutual TLS and speaks the real protocol — but the test decides every
//! message, so it can send malformed points, stop mid-job, or misbehave in other ways against
//! honest nodes.

use std::time::Duration;

use anyhow::{Context, bail};
use parley_crypto::envelope::{EnvelopeKey, derive_envelope_key};
use parley_crypto::keys::NodeSecrets;
use parley_net::Role;
use parley_proto::node_link_client::NodeLinkClient;
use parley_proto::{
    CoordinatorMessage, Envelope, Hello, JobDecision, JobOffer, NodeMessage, coordinator_message,
    node_message,
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
    tx: Option<mpsc::Sender<NodeMessage>>,
    rx: Streaming<CoordinatorMessage>,
}

impl Rogue {
    /// Issues a node certificate for `name`, connects and registers (hello → welcome).
    pub async fn connect(fed: &Federation, name: &str) -> anyhow::Result<Rogue> {
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
        let ch = parley_net::connect(&format!("https://{}", fed.addr), "coordinator", &m).await?;
        let mut client = NodeLinkClient::new(ch)
            .max_decoding_message_size(parley_proto::MAX_MESSAGE_BYTES)
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
        }))
        .await
    }

    /// Drops the link (as a crashed process would).
    pub fn disconnect(&mut self) {
        self.tx = None;
    }
}
