//! The gRPC services, `NodeLink` (nodes) and `Jobs` (analysts and auditors): thin glue.
//!
//! Each call is authorised by the role in the caller's certificate (`parley_net::authorize`),
//! handed to the part of the service that owns it, and its refusal turned into a
//! `tonic::Status` by the one mapping in [`crate::error`]. A node link is served by
//! `serve_link`, which reads the node's messages in order and dispatches each to its handler;
//! handlers that block (an upload to decode, a ledger head to store) run on the blocking pool.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use parley_jobs::lifecycle::is_terminal;
use parley_net::Role;
use parley_proto::{
    CancelJobRequest, CoordinatorMessage, GetJobRequest, Job, JobEvent, LedgerHeadsRequest,
    LedgerHeadsResponse, ListJobsRequest, ListJobsResponse, ListNodesRequest, ListNodesResponse,
    NodeMessage, SubmitJobRequest, node_message,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ServiceError;
use crate::service::{Coordinator, Inner};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl parley_proto::node_link_server::NodeLink for Coordinator {
    type OpenStream = BoxStream<CoordinatorMessage>;

    async fn open(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let who = parley_net::authorize(&request, &[Role::Node], "NodeLink/Open")?;
        let mut inbound = request.into_inner();
        let hello_wait = Duration::from_secs(self.inner.limits.hello_timeout_secs);
        let first = tokio::time::timeout(hello_wait, inbound.next())
            .await
            .map_err(|_| ServiceError::HelloTimeout)?;
        let hello = match first {
            Some(Ok(NodeMessage {
                body: Some(node_message::Body::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(ServiceError::NoHello.into()),
        };
        self.inner.check_hello(&who.name, &hello)?;
        let link = self.inner.connect(&who.name, hello);
        Inner::send_all(link.out).await;
        tokio::spawn(Arc::clone(&self.inner).serve_link(who.name, link.conn_id, inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(link.rx))))
    }
}

impl Inner {
    /// Handles one node link until it ends, then unregisters it.
    async fn serve_link(
        self: Arc<Self>,
        node: String,
        conn_id: u64,
        mut inbound: Streaming<NodeMessage>,
    ) {
        loop {
            let next = tokio::select! {
                _ = self.closing.cancelled() => break,
                m = inbound.next() => m,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::info!(node, status = %e.message(), "node link ended with an error");
                    break;
                }
                None => break,
            };
            let out = match msg.body {
                Some(node_message::Body::Decision(d)) => self.on_decision(&node, d),
                Some(node_message::Body::Envelope(env)) => self.on_envelope(&node, env).await,
                Some(node_message::Body::Progress(p)) => {
                    self.on_progress(&node, p);
                    Vec::new()
                }
                Some(node_message::Body::Outcome(o)) => self.on_outcome(&node, o),
                // Decoding and verifying a masked input (hundreds of KB) and storing a ledger
                // head (an fsync) block: both run on the blocking pool, in arrival order.
                Some(node_message::Body::Secagg(up)) => {
                    let (inner, from) = (Arc::clone(&self), node.clone());
                    tokio::task::spawn_blocking(move || inner.on_secagg(&from, up))
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(node, "secure-aggregation message handler panicked");
                            Vec::new()
                        })
                }
                Some(node_message::Body::LedgerHead(h)) => {
                    let (inner, from) = (Arc::clone(&self), node.clone());
                    if tokio::task::spawn_blocking(move || inner.on_ledger_head(&from, h))
                        .await
                        .is_err()
                    {
                        tracing::error!(node, "ledger-head handler panicked");
                    }
                    Vec::new()
                }
                Some(node_message::Body::Hello(_)) => {
                    tracing::warn!(node, "duplicate hello ignored");
                    Vec::new()
                }
                None => Vec::new(),
            };
            Self::send_all(out).await;
        }
        let out = self.on_disconnect(&node, conn_id);
        Self::send_all(out).await;
    }
}

#[tonic::async_trait]
impl parley_proto::jobs_server::Jobs for Coordinator {
    type WatchStream = BoxStream<JobEvent>;

    async fn submit(&self, request: Request<SubmitJobRequest>) -> Result<Response<Job>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst], "Jobs/Submit")?;
        let job = self.inner.submit(&who.name, request.into_inner()).await?;
        Ok(Response::new(job))
    }

    async fn get(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/Get")?;
        let job = self.inner.job_for(&who, &request.get_ref().job_id)?;
        Ok(Response::new(job))
    }

    async fn watch(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/Watch")?;
        let id = request.into_inner().job_id;
        self.inner.job_for(&who, &id)?;
        let (job, rx) = self.inner.subscribe(&id)?;
        let (tx, out) = mpsc::channel(64);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let terminal = is_terminal(job.state());
            if tx
                .send(Ok(JobEvent {
                    job: Some(job),
                    progress: None,
                }))
                .await
                .is_err()
                || terminal
            {
                return;
            }
            let Some(mut rx) = rx else { return };
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let end = ev.job.as_ref().is_some_and(|j| is_terminal(j.state()));
                        if tx.send(Ok(ev)).await.is_err() || end {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        // The job ended and its channel was dropped: send the final state.
                        if let Ok(job) = inner.job_or_stored(&id) {
                            let _ = tx
                                .send(Ok(JobEvent {
                                    job: Some(job),
                                    progress: None,
                                }))
                                .await;
                        }
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel(&self, request: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst], "Jobs/Cancel")?;
        let job = self.inner.cancel(&who.name, request.into_inner()).await?;
        Ok(Response::new(job))
    }

    async fn list(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let who = parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/List")?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let jobs = self.inner.list_jobs(&who, limit)?;
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        parley_net::authorize(&request, &[Role::Analyst, Role::Auditor], "Jobs/ListNodes")?;
        let nodes = self.inner.list_nodes();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn ledger_heads(
        &self,
        request: Request<LedgerHeadsRequest>,
    ) -> Result<Response<LedgerHeadsResponse>, Status> {
        parley_net::authorize(
            &request,
            &[Role::Analyst, Role::Auditor],
            "Jobs/LedgerHeads",
        )?;
        let req = request.into_inner();
        let heads = self.inner.ledger_heads(&req.node, &req.dataset)?;
        Ok(Response::new(LedgerHeadsResponse { heads }))
    }
}
