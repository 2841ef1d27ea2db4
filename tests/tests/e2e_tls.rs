//! Every connection is mutual TLS 1.3 against the federation CA, and every RPC checks the
//! caller's role: each bad-certificate case is refused.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use parley_net::{Role, TlsMaterial};
use parley_proto::jobs_client::JobsClient;
use parley_proto::node_link_client::NodeLinkClient;
use parley_proto::{ListNodesRequest, NodeMessage, PsiMode, SubmitJobRequest};
use parley_tests::harness::{Federation, psi_spec};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

async fn empty_federation(dir: &std::path::Path) -> Federation {
    parley_net::init_tracing("warn");
    Federation::start(dir, vec![]).await.unwrap()
}

/// Calls ListNodes with `m`; Ok(()) only if the call succeeded.
async fn list_nodes_with(fed: &Federation, m: &TlsMaterial) -> Result<(), String> {
    let ch = parley_net::connect(&format!("https://{}", fed.addr), "coordinator", m)
        .await
        .map_err(|e| e.to_string())?;
    JobsClient::new(ch)
        .list_nodes(ListNodesRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn pem(fed: &Federation, name: &str) -> String {
    std::fs::read_to_string(fed.certs.join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analyst_certificate_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    let m = fed.material("alice").unwrap();
    list_nodes_with(&fed, &m).await.unwrap();
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(&fed, "ca.pem")))
        .domain_name("coordinator");
    let result = async {
        let ch = Endpoint::from_shared(format!("https://{}", fed.addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        JobsClient::new(ch).list_nodes(ListNodesRequest {}).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(
        result.is_err(),
        "a client without a certificate must be refused"
    );
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    let (other_ca, other_key) = parley_net::ca::init_ca("Some other CA", 30).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = parley_net::ca::issue(
        &other_ca,
        &other_key,
        Role::Analyst,
        "alice",
        &[],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
    .unwrap();
    // Trusts the real CA for the server, but presents a certificate the federation never issued.
    let m = TlsMaterial::from_pem(&pem(&fed, "ca.pem"), &cert, &key).unwrap();
    assert!(list_nodes_with(&fed, &m).await.is_err());
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = parley_net::ca::issue(
        &pem(&fed, "ca.pem"),
        &pem(&fed, "ca.key"),
        Role::Analyst,
        "old-alice",
        &[],
        now - Duration::from_secs(2 * 86_400),
        now - Duration::from_secs(86_400),
    )
    .unwrap();
    let m = TlsMaterial::from_pem(&pem(&fed, "ca.pem"), &cert, &key).unwrap();
    assert!(list_nodes_with(&fed, &m).await.is_err());
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_role_is_refused_with_permission_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    parley_tests::harness::issue(&fed.certs, Role::Node, "brand", &[]).unwrap();
    let spec = psi_spec(PsiMode::Match, ("brand", "crm"), ("publisher", "subs"), 0);

    // A node may not submit jobs.
    let mut as_node = fed.jobs_client("brand").await.unwrap();
    let err = as_node
        .submit(SubmitJobRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    assert!(err.message().contains("node"), "{}", err.message());

    // An auditor may read but not submit.
    let mut as_auditor = fed.jobs_client("audrey").await.unwrap();
    as_auditor.list_nodes(ListNodesRequest {}).await.unwrap();
    let err = as_auditor
        .submit(SubmitJobRequest { spec: Some(spec) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // An analyst may not open a node link.
    let m = fed.material("alice").unwrap();
    let ch = parley_net::connect(&format!("https://{}", fed.addr), "coordinator", &m)
        .await
        .unwrap();
    let err = NodeLinkClient::new(ch)
        .open(tokio_stream::iter(Vec::<NodeMessage>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    fed.shutdown().await.unwrap();
}

/// Holds `n` TCP connections to `addr` open without ever speaking TLS, opening a new one
/// whenever the server drops one, until `stop`. Returns the counters of sockets open right
/// now and of connections made in all.
fn idle_flood(
    addr: std::net::SocketAddr,
    n: usize,
    stop: tokio_util::sync::CancellationToken,
) -> [std::sync::Arc<std::sync::atomic::AtomicUsize>; 2] {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt as _;
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..n {
        let (open, made, stop) = (open.clone(), made.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                open.fetch_add(1, Ordering::Relaxed);
                made.fetch_add(1, Ordering::Relaxed);
                let mut byte = [0u8; 1];
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = s.read(&mut byte) => {}
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    [open, made]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_do_not_keep_nodes_or_analysts_out() {
    use parley_tests::harness::brand_and_publisher;
    use std::sync::atomic::Ordering;

    let tmp = tempfile::tempdir().unwrap();
    parley_net::init_tracing("error");
    let mut fed = brand_and_publisher(tmp.path(), 300).await.unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let [open, made] = idle_flood(fed.addr, 1000, stop.clone());
    let filled = tokio::time::Instant::now() + Duration::from_secs(30);
    while open.load(Ordering::Relaxed) < 1000 {
        assert!(
            tokio::time::Instant::now() < filled,
            "the flood never reached 1000 sockets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the server drop the first silent sockets and the flood renew them.
    while made.load(Ordering::Relaxed) <= 1000 {
        assert!(
            tokio::time::Instant::now() < filled,
            "the server never dropped an idle socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Under the flood, a node reconnects and an analyst's job runs end to end.
    fed.stop_node("brand").await.unwrap();
    fed.start_node("brand").unwrap();
    fed.wait_connected(
        &["brand".into(), "publisher".into()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), parley_proto::JobState::Succeeded, "{job:?}");
    // The flood was still there: the server kept dropping and the flood kept renewing.
    assert!(open.load(Ordering::Relaxed) > 500);
    stop.cancel();
    fed.shutdown().await.unwrap();
}

/// The coordinator serves the standard grpc.health.v1 service to any federation certificate
/// (for probes), over the same mutual TLS, and answers NOT_FOUND for services it does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_serves_grpc_health_over_mutual_tls() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let tmp = tempfile::tempdir().unwrap();
    let fed = empty_federation(tmp.path()).await;
    let m = fed.material(parley_tests::harness::ANALYST).unwrap();
    let ch = parley_net::connect(&format!("https://{}", fed.addr), "coordinator", &m)
        .await
        .unwrap();
    let mut health = HealthClient::new(ch);
    for service in ["", "parley.v1.Jobs", "parley.v1.NodeLink"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service '{service}'");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "parley.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Without a client certificate there is no health answer either: the handshake fails.
    let ca = std::fs::read(fed.certs.join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("coordinator");
    let anonymous = Endpoint::from_shared(format!("https://{}", fed.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(ch) = anonymous {
        let refused = HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await;
        assert!(refused.is_err(), "an anonymous client got a health answer");
    }
    fed.shutdown().await.unwrap();
}
