//! Parley coordinator: federation registry, job store, envelope relay (the
//! `parley-coordinator` daemon). The `parleyctl` CLI for analysts and auditors is the
//! `parley-ctl` crate (`ctl/`), which talks to it only over the `Jobs` gRPC API.
//!
//! `main.rs` is a thin clap wrapper around [`run`]; tests run the real coordinator in-process
//! by calling [`run`] with a listener bound to `127.0.0.1:0`.

pub mod config;
mod drivers;
pub mod error;
mod grpc;
mod heads;
mod lifecycle;
mod registry;
mod relay;
pub mod service;
pub mod store;

pub use config::CoordinatorConfig;
pub use error::CoordError;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the coordinator on `listener` (mutual TLS 1.3) until `shutdown` is cancelled.
///
/// On start, jobs left unfinished by a previous run are marked failed, and ended jobs beyond
/// the retention limits are deleted (then every hour). Beside the Parley services it serves
/// the standard `grpc.health.v1.Health` service (same mutual TLS).
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CoordError> {
    parley_net::install_crypto_provider();
    // `from_toml_str` checks these too; a config built in code is checked here.
    config.limits.check()?;
    let tls =
        parley_net::TlsMaterial::load(&config.tls.ca_cert, &config.tls.cert, &config.tls.key)?;
    let store = store::JobStore::open(&config.database)?;
    let failed = store.fail_unfinished(
        "the coordinator restarted while the job was in progress; submit it again",
        store::now_ms(),
    )?;
    if !failed.is_empty() {
        tracing::warn!(
            count = failed.len(),
            "jobs interrupted by a restart marked failed"
        );
    }
    let server_tls = parley_net::server_config(&tls)?;
    let keepalive_interval = config.limits.keepalive_interval();
    let keepalive_timeout = config.limits.keepalive_timeout();
    let svc = service::Coordinator::new(store, tls.ca_der().to_vec(), config.limits.clone());
    svc.prune_jobs()?;
    // Retention is applied again every hour, off the async runtime.
    let pruner = svc.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        every.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {
                    let p = pruner.clone();
                    match tokio::task::spawn_blocking(move || p.prune_jobs()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "cannot apply job retention"),
                        Err(e) => tracing::error!(error = %e, "job retention task failed"),
                    }
                }
            }
        }
    });
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "coordinator listening");
    let incoming = parley_net::tls_incoming(listener, server_tls, shutdown.clone());
    // The standard grpc.health.v1 service, for probes and load balancers: the server ("")
    // and both Parley services are SERVING from here on, and NOT_SERVING once shutdown
    // begins, before the links close.
    let (health, health_service) = tonic_health::server::health_reporter();
    let services = [
        "",
        parley_proto::node_link_server::SERVICE_NAME,
        parley_proto::jobs_server::SERVICE_NAME,
    ];
    for name in services {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let closer = svc.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        for name in services {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        closer.close_all();
    });
    // Server-side HTTP/2 keep-alive (`[limits] keepalive_*_secs`): a half-open node link
    // (peer gone without a FIN) is detected and closed within interval + timeout instead of
    // lingering with its node's jobs.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive_interval))
        .http2_keepalive_timeout(Some(keepalive_timeout))
        .add_service(
            parley_proto::node_link_server::NodeLinkServer::new(svc.clone())
                .max_decoding_message_size(parley_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES),
        )
        .add_service(health_service)
        .add_service(
            parley_proto::jobs_server::JobsServer::new(svc)
                .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
                .max_encoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
        .map_err(|e| CoordError::Serve(e.to_string()))?;
    Ok(())
}
