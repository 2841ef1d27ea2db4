//! Mutual TLS: our certificate material, the server configuration, the accept loop, and
//! client channels.
//!
//! Guarantees:
//! * The server speaks TLS 1.3 only, with the *ring* provider, and requires a client
//!   certificate that chains to the federation CA and allows client authentication.
//! * A failed or slow (> 10 s) handshake drops that connection only; the server keeps running.
//! * Idle connections cannot starve the server: a connection takes a handshake slot only once
//!   its first bytes (the ClientHello) arrive, silent connections are dropped after 3 s, and
//!   when too many are waiting the one waiting longest is dropped for the newcomer. One source
//!   address holds at most half of the handshake slots.
//! * Clients verify the server certificate against the federation CA and the expected server
//!   name, and present their own certificate.
//!
//! Not guaranteed here: *which* peer may call what. Handlers decide that with
//! [`crate::authorize`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ring::signature::KeyPair as _;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::pem::{self, Origin};
use crate::{NetError, PeerIdentity};

/// Longest time a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once (counted from the ClientHello's first bytes); a
/// connection that finds none free is dropped.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Most handshakes in progress from one IP address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = MAX_CONCURRENT_HANDSHAKES / 2;
/// Longest a new connection may stay silent before the first bytes of its ClientHello.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Most accepted connections waiting for their first bytes; when full, the one waiting
/// longest is dropped to make room, so a flood of idle sockets cannot shut newcomers out.
pub const MAX_WAITING_CONNECTIONS: usize = 4096;
/// Client connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive ping interval (and timeout) on client channels.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// A participant's TLS material: the federation CA certificate, its own certificate chain
/// and its own private key (PKCS#8, ECDSA P-256).
///
/// Invariants, checked on construction:
/// 1. exactly one CA certificate;
/// 2. at least one certificate in the chain, leaf first;
/// 3. the key is an ECDSA P-256 PKCS#8 key whose public key is the leaf's.
///
/// `Debug` prints the certificates' sizes and never the key.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_der_len", &self.ca.len())
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsMaterial {
    /// Loads PEM files: the CA certificate, our certificate (chain, leaf first) and our
    /// PKCS#8 private key. Errors name the file and what is wrong with it.
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Self, NetError> {
        let ca_bytes = pem::read_file(ca_cert, "CA certificate")?;
        let cert_bytes = pem::read_file(cert, "TLS certificate")?;
        let key_bytes = Zeroizing::new(pem::read_file(key, "TLS private key")?);
        Self::parse(
            (&ca_bytes, Origin::File(ca_cert)),
            (&cert_bytes, Origin::File(cert)),
            (&key_bytes, Origin::File(key)),
        )
    }

    /// Builds the material from PEM text (same checks as [`TlsMaterial::load`]).
    pub fn from_pem(ca_cert_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        Self::parse(
            (ca_cert_pem.as_bytes(), Origin::Text),
            (cert_pem.as_bytes(), Origin::Text),
            (key_pem.as_bytes(), Origin::Text),
        )
    }

    fn parse(
        ca: (&[u8], Origin<'_>),
        cert: (&[u8], Origin<'_>),
        key: (&[u8], Origin<'_>),
    ) -> Result<Self, NetError> {
        let mut cas = pem::certificates(ca.0, "CA certificate", ca.1)?;
        if cas.len() != 1 {
            return Err(NetError::BadCertificate {
                what: "CA certificate",
                reason: format!("expected exactly one certificate, found {}", cas.len()),
            });
        }
        let ca = cas.remove(0);
        let chain = pem::certificates(cert.0, "TLS certificate", cert.1)?;
        let key = pem::private_key(key.0, "TLS private key", key.1)?;
        let key_pkcs8 = Zeroizing::new(key.secret_pkcs8_der().to_vec());
        drop(key);

        let pair = ecdsa_key_pair(&key_pkcs8).map_err(|()| NetError::BadPrivateKey {
            what: "TLS private key",
            reason: "it is not an ECDSA P-256 PKCS#8 key as written by `ca issue`",
        })?;
        let leaf = chain.first().ok_or_else(|| NetError::BadCertificate {
            what: "TLS certificate",
            reason: "no certificate found".to_owned(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| NetError::BadCertificate {
                what: "TLS certificate",
                reason: e.to_string(),
            })?;
        if parsed.public_key().subject_public_key.data.as_ref() != pair.public_key().as_ref() {
            return Err(NetError::BadPrivateKey {
                what: "TLS private key",
                reason: "it does not belong to the TLS certificate; pass the .key file issued together with that certificate",
            });
        }
        Ok(TlsMaterial {
            ca,
            chain,
            key_pkcs8,
        })
    }

    /// The federation CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca
    }

    /// Our own (leaf) certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        // Invariant 2: the chain is never empty.
        self.chain.first().map_or(&[], |c| c.as_ref())
    }

    /// Our identity, read from our own certificate.
    pub fn identity(&self) -> Result<PeerIdentity, NetError> {
        crate::identity::identity_from_cert_der(self.cert_der(), "own TLS certificate")
    }

    /// Our certificate chain, leaf first (for building rustls configurations).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    /// A copy of our private key for rustls (handle with care: it is secret).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec()))
    }

    /// A root store holding only the federation CA.
    pub fn root_store(&self) -> Result<RootCertStore, NetError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|source| NetError::TlsConfig {
                what: "trust anchor",
                source,
            })?;
        Ok(roots)
    }

    pub(crate) fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }
}

/// Parses an ECDSA P-256 PKCS#8 key with *ring*.
pub(crate) fn ecdsa_key_pair(pkcs8: &[u8]) -> Result<ring::signature::EcdsaKeyPair, ()> {
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| ())
}

/// The server configuration: TLS 1.3 only, *ring* provider, client certificates required and
/// verified against the federation CA, ALPN `h2`.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(m.root_store()?), provider.clone())
            .build()
            .map_err(|source| NetError::ClientVerifier { source })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| NetError::TlsConfig {
            what: "server",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.cert_chain(), m.private_key())
        .map_err(|source| NetError::TlsConfig {
            what: "server",
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections on `listener` and completes TLS handshakes with `config`,
/// yielding established streams for
/// `tonic::transport::Server::serve_with_incoming_shutdown`.
///
/// * Every connection is accepted at once and waits in its own task for its first bytes, at
///   most [`CLIENT_HELLO_TIMEOUT`]; at most [`MAX_WAITING_CONNECTIONS`] wait, and a newcomer
///   beyond that evicts the one waiting longest.
/// * Then its handshake runs with a [`HANDSHAKE_TIMEOUT`]; at most
///   [`MAX_CONCURRENT_HANDSHAKES`] run at once, [`MAX_HANDSHAKES_PER_SOURCE`] from one IP
///   address; a connection that finds no slot is dropped (the client retries).
/// * Failed handshakes are logged with the peer address and dropped; they are never yielded
///   as errors, so one bad client cannot stop the server. Accept errors (e.g. out of file
///   descriptors) are logged and retried after a short pause.
/// * The stream ends when `shutdown` is cancelled.
///
/// The accept loop starts on first poll, on the polling task's Tokio runtime.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    futures::stream::once(async move {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            shutdown,
            tx,
        ));
        ReceiverStream::new(rx)
    })
    .flatten()
}

type Established = Result<TlsStream<TcpStream>, std::io::Error>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Established>,
) {
    let local = listener.local_addr().ok();
    tracing::debug!(?local, "accepting TLS connections");
    let admission = Arc::new(Admission::new());
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(?local, error = %e, "cannot accept TCP connection; retrying in 100 ms");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let waiting = admission.wait();
        let admission = Arc::clone(&admission);
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let Some(_slot) = admission.admit(waiting, &tcp, peer, &shutdown).await else {
                return;
            };
            if let Some(tls) = handshake(acceptor, tcp, peer, &shutdown).await {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    _ = tx.send(Ok(tls)) => {}
                }
            }
        });
    }
    tracing::debug!(?local, "stopped accepting TLS connections");
}

/// Which accepted connections may start a TLS handshake: the waiting room for their first
/// bytes and the handshake slots, globally and per source address.
struct Admission {
    /// Connections waiting for their first bytes, oldest first, each with the token that
    /// evicts it.
    waiting: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
    permits: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's place in the waiting room.
struct Waiting {
    id: u64,
    evicted: CancellationToken,
}

/// A handshake slot: a global permit and one of its source's, released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    source: IpAddr,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = lock(&self.per_source);
        if let Some(n) = m.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    fn new() -> Self {
        Admission {
            waiting: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Enters a new connection in the waiting room, evicting the one waiting longest when it
    /// is full.
    fn wait(&self) -> Waiting {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut waiting = lock(&self.waiting);
        while waiting.len() >= MAX_WAITING_CONNECTIONS {
            match waiting.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        waiting.insert(id, evicted.clone());
        Waiting { id, evicted }
    }

    /// Waits for the connection's first bytes, then takes a handshake slot. `None` (the
    /// connection is dropped) when it stays silent, is evicted, or finds no slot free.
    async fn admit(
        &self,
        w: Waiting,
        tcp: &TcpStream,
        peer: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Option<Slot> {
        let mut first = [0u8; 1];
        let spoke = tokio::select! {
            () = shutdown.cancelled() => None,
            () = w.evicted.cancelled() => {
                tracing::debug!(%peer, "too many connections waiting for a ClientHello; the oldest dropped");
                None
            }
            // `peek` waits for a byte (or the end of the stream) without consuming it; a bare
            // readiness check may report a fresh socket ready before anything arrived.
            r = tokio::time::timeout(CLIENT_HELLO_TIMEOUT, tcp.peek(&mut first)) => match r {
                Ok(Ok(0)) => {
                    tracing::debug!(%peer, "connection closed before its ClientHello");
                    None
                }
                Ok(Ok(_)) => Some(()),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed before its ClientHello; dropped");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout_s = CLIENT_HELLO_TIMEOUT.as_secs(), "no ClientHello; connection dropped");
                    None
                }
            },
        };
        lock(&self.waiting).remove(&w.id);
        spoke?;
        let source = peer.ip();
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_CONCURRENT_HANDSHAKES, "all TLS handshake slots busy; connection dropped (the client retries)");
            return None;
        };
        let mut per_source = lock(&self.per_source);
        let n = per_source.entry(source).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_SOURCE {
            tracing::warn!(%peer, max = MAX_HANDSHAKES_PER_SOURCE, "too many TLS handshakes from one address; connection dropped");
            return None;
        }
        *n += 1;
        drop(per_source);
        Some(Slot {
            _permit: permit,
            source,
            per_source: Arc::clone(&self.per_source),
        })
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
    };
    match outcome {
        Ok(Ok(tls)) => {
            tracing::debug!(%peer, elapsed_ms = started.elapsed().as_millis() as u64, "TLS handshake complete");
            Some(tls)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(%peer, error = %e, "peer closed the connection during the TLS handshake; dropped");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake failed; connection dropped (is the client using a federation-CA certificate and TLS 1.3?)");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, timeout_s = HANDSHAKE_TIMEOUT.as_secs(), "TLS handshake timed out; connection dropped");
            None
        }
    }
}

/// Opens a gRPC channel to `url` (`https://host:port`) over mutual TLS.
///
/// The server certificate must chain to our CA and name `server_name`; we present our own
/// certificate. Connect timeout 10 s, TCP_NODELAY, HTTP/2 keep-alive every 20 s (20 s
/// timeout), also while idle.
pub async fn connect(
    url: &str,
    server_name: &str,
    m: &TlsMaterial,
) -> Result<tonic::transport::Channel, NetError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| NetError::InvalidUrl {
        url: NetError::clip(url),
        reason: error_chain(&e),
    })?;
    if endpoint.uri().scheme_str() != Some("https") {
        return Err(NetError::InvalidUrl {
            url: NetError::clip(url),
            reason: "the scheme must be https (every Parley connection is mutual TLS)".to_owned(),
        });
    }
    let ca_pem = pem::encode(pem::CERTIFICATE, m.ca_der());
    let chain_pem: String = m
        .chain
        .iter()
        .map(|c| pem::encode(pem::CERTIFICATE, c))
        .collect();
    let key_pem = Zeroizing::new(pem::encode(pem::PRIVATE_KEY, m.key_pkcs8()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(chain_pem, key_pem.as_bytes()))
        .domain_name(server_name);
    let connect_error = |reason: String| NetError::Connect {
        url: NetError::clip(url),
        server_name: NetError::clip(server_name),
        reason,
    };
    endpoint
        .tls_config(tls)
        .map_err(|e| connect_error(error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| connect_error(error_chain(&e)))
}

/// `e: cause: cause…`, skipping repeated messages.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if parts.last() != Some(&msg) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}
