//! End-to-end checks of the typed job model at the boundaries: the coordinator refuses a job
//! whose spec mixes kinds before storing it, and a node refuses, with a reason, an offer of a
//! kind its version does not know (as a newer coordinator could send it).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use parley_proto::node_link_server::{NodeLink, NodeLinkServer};
use parley_proto::{
    CoordinatorMessage, JobDecision, JobOffer, JobSpec, ListJobsRequest, NodeMessage, Participant,
    PsiMode, Welcome, coordinator_message, node_message,
};
use parley_tests::harness::{Federation, brand_and_publisher, psi_spec, secure_sum_spec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

async fn federation(dir: &Path) -> Federation {
    parley_net::init_tracing("warn");
    brand_and_publisher(dir, 200).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psi_job_carrying_secure_sum_parameters_is_rejected_at_submit() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path()).await;
    let mut spec = psi_spec(
        PsiMode::Match,
        ("brand", "crm"),
        ("publisher", "subscribers"),
        0,
    );
    // Before the typed model this was accepted, and `secure_sum.receiver` got the result. The
    // wire form now holds one kind's parameters, so the mismatch is kind = psi with the
    // secure_sum parameters.
    let mut ss = secure_sum_spec(
        &[("brand", "crm"), ("publisher", "subscribers"), ("x", "y")],
        &["north"],
    )
    .secure_sum()
    .cloned()
    .unwrap();
    ss.result_to = "publisher".into();
    spec.params = Some(ss.into());
    let err = fed.submit(spec).await.unwrap_err();
    let status = err.downcast_ref::<Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("secure_sum: a psi job takes no [secure_sum] table"),
        "{}",
        status.message()
    );
    // Nothing was stored.
    let jobs = fed
        .analyst()
        .await
        .unwrap()
        .list(ListJobsRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "{jobs:?}");
    fed.shutdown().await.unwrap();
}

/// A coordinator of a newer version: it greets the node, offers it `offer`, and reports the
/// node's decision.
struct NewerCoordinator {
    offer: JobOffer,
    decisions: mpsc::Sender<JobDecision>,
}

#[tonic::async_trait]
impl NodeLink for NewerCoordinator {
    type OpenStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn open(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let offer = self.offer.clone();
        let decisions = self.decisions.clone();
        tokio::spawn(async move {
            let send = |body| CoordinatorMessage { body: Some(body) };
            while let Ok(Some(m)) = incoming.message().await {
                match m.body {
                    Some(node_message::Body::Hello(_)) => {
                        let welcome = coordinator_message::Body::Welcome(Welcome {
                            software_version: "99.0.0".into(),
                        });
                        let _ = tx.send(Ok(send(welcome))).await;
                        let offer = coordinator_message::Body::Offer(offer.clone());
                        let _ = tx.send(Ok(send(offer))).await;
                    }
                    Some(node_message::Body::Decision(d)) => {
                        let _ = decisions.send(d).await;
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_of_an_unknown_kind_is_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = federation(tmp.path()).await;

    // Serve the newer coordinator over real mutual TLS with the federation's coordinator
    // certificate.
    let certs = fed.certs.clone();
    let tls = parley_net::TlsMaterial::load(
        &certs.join("ca.pem"),
        &certs.join("coordinator.pem"),
        &certs.join("coordinator.key"),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let incoming = parley_net::tls_incoming(
        listener,
        parley_net::server_config(&tls).unwrap(),
        stop.clone(),
    );
    let (decisions, mut decided) = mpsc::channel(4);
    let offer = JobOffer {
        job_id: "j-future-kind".into(),
        spec: Some(JobSpec {
            label: "a kind from the future".into(),
            kind: 99,
            participants: vec![
                Participant {
                    node: "brand".into(),
                    dataset: "crm".into(),
                    ..Default::default()
                },
                Participant {
                    node: "publisher".into(),
                    dataset: "subscribers".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        submitted_by: "alice".into(),
        participants: vec![],
    };
    let server = NodeLinkServer::new(NewerCoordinator { offer, decisions });
    let shutdown = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await
    });

    // Point the real brand node at it.
    fed.stop_node("brand").await.unwrap();
    let path = fed.node_config_path("brand");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&fed.addr.to_string(), &addr.to_string());
    std::fs::write(&path, text).unwrap();
    let cfg = parley_node::config::NodeConfig::load(&path).unwrap();
    let node_stop = CancellationToken::new();
    let node = tokio::spawn(parley_node::run(cfg, node_stop.clone()));

    let d = tokio::time::timeout(Duration::from_secs(60), decided.recv())
        .await
        .expect("the node answers the offer")
        .unwrap();
    assert_eq!(d.job_id, "j-future-kind");
    assert!(
        !d.accept,
        "an unknown kind must never run (as PSI or otherwise)"
    );
    assert!(d.reason.contains("node 'brand'"), "{}", d.reason);
    assert!(d.reason.contains("unknown kind number 99"), "{}", d.reason);
    assert!(d.reason.contains("same Parley version"), "{}", d.reason);

    node_stop.cancel();
    let _ = node.await;
    stop.cancel();
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_cannot_read_watch_list_or_cancel_another_analysts_job() {
    use parley_proto::{CancelJobRequest, GetJobRequest};
    use parley_tests::harness::{AUDITOR, issue};

    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path()).await;
    issue(&fed.certs, parley_net::Role::Analyst, "bob", &[]).unwrap();
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(
        job.state(),
        parley_proto::JobState::Succeeded,
        "{}",
        job.reason
    );
    let get = || GetJobRequest {
        job_id: job.id.clone(),
    };

    let mut bob = fed.jobs_client("bob").await.unwrap();
    let e = bob.get(get()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = bob.watch(get()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let listed = bob.list(ListJobsRequest { limit: 0 }).await.unwrap();
    assert!(listed.into_inner().jobs.is_empty());
    let cancel = CancelJobRequest {
        job_id: job.id.clone(),
        reason: "mine now".into(),
    };
    let e = bob.cancel(cancel).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // The submitting analyst and the auditor still see it, result included.
    let mut alice = fed.analyst().await.unwrap();
    let mine = alice.get(get()).await.unwrap().into_inner();
    assert!(mine.result.is_some());
    let listed = alice.list(ListJobsRequest { limit: 0 }).await.unwrap();
    assert_eq!(listed.into_inner().jobs.len(), 1);
    let mut audrey = fed.jobs_client(AUDITOR).await.unwrap();
    let seen = audrey.get(get()).await.unwrap().into_inner();
    assert_eq!(seen.id, job.id);
    let listed = audrey.list(ListJobsRequest { limit: 0 }).await.unwrap();
    assert_eq!(listed.into_inner().jobs.len(), 1);
    fed.shutdown().await.unwrap();
}
