//! Real loopback mutual-TLS handshakes against `server_config`, and a tonic server fed by
//! `tls_incoming`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::TestCa;
use parley_net::{
    Role, TlsMaterial, authorize, connect, peer_identity, server_config, tls_incoming,
};
use parley_proto::jobs_client::JobsClient;
use parley_proto::jobs_server::{Jobs, JobsServer};
use rustls::pki_types::ServerName;
use time::{Duration as TDuration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A raw TLS echo server: answers "ping" with "pong" on each accepted connection.
async fn ping_server(server: &TlsMaterial) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let config = server_config(server).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.flush().await;
                }
            });
        }
    });
    (addr, task)
}

fn client_config(
    trusted_ca: &TlsMaterial,
    client: Option<&TlsMaterial>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(trusted_ca.root_store().expect("roots"));
    let config = match client {
        Some(m) => builder
            .with_client_auth_cert(m.cert_chain(), m.private_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects, sends "ping" and expects "pong".
async fn exchange(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<(), BoxError> {
    let run = async {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        if &buf != b"pong" {
            return Err::<(), BoxError>("unexpected answer".into());
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| -> BoxError { "exchange timed out".into() })?
}

#[tokio::test]
async fn handshake_requires_a_valid_client_certificate_and_tls13() {
    let ca = TestCa::new("Parley test CA");
    let coord = ca.coordinator();
    let (addr, server) = ping_server(&coord).await;
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

    // Good certificate: works.
    let good = ca.material(Role::Node, "brand", &[]);
    exchange(addr, client_config(&coord, Some(&good), tls13))
        .await
        .expect("valid node certificate must be accepted");

    // No client certificate.
    let r = exchange(addr, client_config(&coord, None, tls13)).await;
    assert!(r.is_err(), "a client without certificate must be refused");

    // Certificate from another CA.
    let other = TestCa::new("Another CA").material(Role::Node, "brand", &[]);
    let r = exchange(addr, client_config(&coord, Some(&other), tls13)).await;
    assert!(r.is_err(), "a certificate from another CA must be refused");

    // Expired certificate.
    let now = OffsetDateTime::now_utc();
    let (cert, key) = ca.issue_between(
        Role::Node,
        "brand",
        &[],
        now - TDuration::days(10),
        now - TDuration::days(1),
    );
    let expired = TlsMaterial::from_pem(&ca.cert, &cert, &key).expect("material");
    let r = exchange(addr, client_config(&coord, Some(&expired), tls13)).await;
    assert!(r.is_err(), "an expired certificate must be refused");

    // TLS 1.2 only.
    let r = exchange(
        addr,
        client_config(&coord, Some(&good), &[&rustls::version::TLS12]),
    )
    .await;
    assert!(r.is_err(), "a TLS 1.2-only client must be refused");

    // And the server still serves good clients afterwards.
    exchange(addr, client_config(&coord, Some(&good), tls13))
        .await
        .expect("server still works");
    server.abort();
}

/// A Jobs service whose `list_nodes` echoes the caller's identity and whose `get` is for
/// auditors only.
struct EchoJobs;

fn unimplemented() -> tonic::Status {
    tonic::Status::unimplemented("test service")
}

#[tonic::async_trait]
impl Jobs for EchoJobs {
    async fn submit(
        &self,
        _: tonic::Request<parley_proto::SubmitJobRequest>,
    ) -> Result<tonic::Response<parley_proto::Job>, tonic::Status> {
        Err(unimplemented())
    }

    async fn get(
        &self,
        req: tonic::Request<parley_proto::GetJobRequest>,
    ) -> Result<tonic::Response<parley_proto::Job>, tonic::Status> {
        authorize(&req, &[Role::Auditor, Role::Coordinator], "Jobs.Get")?;
        Err(unimplemented())
    }

    type WatchStream = futures::stream::Empty<Result<parley_proto::JobEvent, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<parley_proto::GetJobRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(unimplemented())
    }

    async fn cancel(
        &self,
        _: tonic::Request<parley_proto::CancelJobRequest>,
    ) -> Result<tonic::Response<parley_proto::Job>, tonic::Status> {
        Err(unimplemented())
    }

    async fn list(
        &self,
        _: tonic::Request<parley_proto::ListJobsRequest>,
    ) -> Result<tonic::Response<parley_proto::ListJobsResponse>, tonic::Status> {
        Err(unimplemented())
    }

    async fn list_nodes(
        &self,
        req: tonic::Request<parley_proto::ListNodesRequest>,
    ) -> Result<tonic::Response<parley_proto::ListNodesResponse>, tonic::Status> {
        let id = peer_identity(&req)?;
        Ok(tonic::Response::new(parley_proto::ListNodesResponse {
            nodes: vec![parley_proto::NodeInfo {
                name: format!("{}/{}", id.role, id.name),
                ..Default::default()
            }],
        }))
    }

    async fn ledger_heads(
        &self,
        _req: tonic::Request<parley_proto::LedgerHeadsRequest>,
    ) -> Result<tonic::Response<parley_proto::LedgerHeadsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not part of this test"))
    }
}

#[tokio::test]
async fn tonic_server_sees_the_client_identity() {
    parley_net::init_tracing("warn");
    let ca = TestCa::new("Parley test CA");
    let coord = ca.coordinator();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let incoming = tls_incoming(
        listener,
        server_config(&coord).expect("server config"),
        shutdown.clone(),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JobsServer::new(EchoJobs))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
    );
    let url = format!("https://127.0.0.1:{}", addr.port());

    // A failed handshake first: it must not stop the server.
    let r = exchange(
        addr,
        client_config(&coord, None, &[&rustls::version::TLS13]),
    )
    .await;
    assert!(r.is_err());

    let analyst = ca.material(Role::Analyst, "ana", &[]);
    let channel = connect(&url, "localhost", &analyst).await.expect("connect");
    let mut client = JobsClient::new(channel);
    let nodes = client
        .list_nodes(parley_proto::ListNodesRequest {})
        .await
        .expect("list_nodes")
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "analyst/ana");

    // authorize: an analyst may not call an auditor-only method.
    let status = client
        .get(parley_proto::GetJobRequest {
            job_id: "x".to_owned(),
        })
        .await
        .expect_err("analyst must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "role 'analyst' (name 'ana') may not call Jobs.Get; allowed roles: auditor, coordinator"
    );

    // Another identity over the same server, via the IP SAN.
    let node = ca.material(Role::Node, "brand", &[]);
    let channel = connect(&url, "127.0.0.1", &node)
        .await
        .expect("connect by IP");
    let nodes = JobsClient::new(channel)
        .list_nodes(parley_proto::ListNodesRequest {})
        .await
        .expect("list_nodes")
        .into_inner()
        .nodes;
    assert_eq!(nodes[0].name, "node/brand");

    // Wrong server name: the client refuses the server certificate.
    let e = connect(&url, "elsewhere", &node)
        .await
        .expect_err("wrong name");
    let msg = e.to_string();
    assert!(msg.contains(&url), "{msg}");
    // Plain http is refused outright.
    let e = connect(
        &format!("http://127.0.0.1:{}", addr.port()),
        "localhost",
        &node,
    )
    .await
    .expect_err("http");
    assert!(e.to_string().contains("https"), "{e}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops on shutdown")
        .expect("join")
        .expect("serve");
}
