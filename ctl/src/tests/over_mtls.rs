//! A stand-in `Jobs` service over real mutual TLS, so `run` is exercised end to end
//! without the real coordinator: jobs run instantly through a scripted event sequence.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use parley_jobs::lifecycle::transition;
use parley_net::Role;
use parley_proto::jobs_server::{Jobs, JobsServer};
use parley_proto::{
    CancelJobRequest, GetJobRequest, Job, JobEvent, JobProgress, JobResult, JobState,
    ListJobsRequest, ListJobsResponse, ListNodesRequest, ListNodesResponse, NodeInfo, PsiMode,
    PsiResult, SubmitJobRequest,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::write;
use crate::{Cli, EXIT_JOB_DID_NOT_SUCCEED, EXIT_OK, run, state_name};

/// The fake's job store: every job as it will end, in submission order.
struct FakeJobs {
    jobs: Mutex<Vec<Job>>,
}

impl FakeJobs {
    fn jobs(&self) -> Result<std::sync::MutexGuard<'_, Vec<Job>>, Status> {
        self.jobs
            .lock()
            .map_err(|_| Status::internal("fake job store poisoned"))
    }
}

fn succeed(job: &mut Job) {
    transition(job, JobState::Succeeded, "", 4).unwrap();
    job.result = Some(JobResult::from(PsiResult {
        mode: PsiMode::Match as i32,
        receiver_records: 1000,
        receiver_identifiers: 1500,
        sender_identifiers: 4000,
        intersection_records: 250,
        suppressed: false,
        match_output: "/out/m.csv".into(),
        elapsed_ms: 12,
        ..Default::default()
    }));
}

#[tonic::async_trait]
impl Jobs for FakeJobs {
    async fn submit(&self, request: Request<SubmitJobRequest>) -> Result<Response<Job>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        parley_jobs::validate_spec(&spec).map_err(Status::invalid_argument)?;
        let refuse = spec.label.contains("refuse");
        let mut jobs = self.jobs()?;
        let mut job = Job {
            id: format!("job-{:016x}", jobs.len() + 1),
            spec: Some(spec),
            submitted_by: "alice".into(),
            ..Job::default()
        };
        transition(&mut job, JobState::Submitted, "", 1).unwrap();
        // What the stored job will end as (the watch replays the way there).
        let mut done = job.clone();
        if refuse {
            transition(&mut done, JobState::Refused, "publisher: not a partner", 2).unwrap();
        } else {
            transition(&mut done, JobState::Accepted, "", 2).unwrap();
            transition(&mut done, JobState::Running, "", 3).unwrap();
            succeed(&mut done);
        }
        jobs.push(done);
        Ok(Response::new(job))
    }

    async fn get(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let id = request.into_inner().job_id;
        match self.jobs()?.iter().find(|j| j.id == id) {
            Some(job) => Ok(Response::new(job.clone())),
            None => Err(Status::not_found(format!("no job '{id}'"))),
        }
    }

    type WatchStream = tokio_stream::Iter<std::vec::IntoIter<Result<JobEvent, Status>>>;

    async fn watch(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let done = self.get(request).await?.into_inner();
        let mut events = Vec::new();
        for n in 1..=done.history.len() {
            let mut job = done.clone();
            job.history.truncate(n);
            if let Some(last) = job.history.last() {
                job.state = last.state;
            }
            if n < done.history.len() {
                job.result = None;
            }
            let running = job.state() == JobState::Running;
            events.push(Ok(JobEvent {
                job: Some(job),
                progress: None,
            }));
            if running {
                for done in [0, 50, 100] {
                    events.push(Ok(JobEvent {
                        job: None,
                        progress: Some(JobProgress {
                            job_id: done.to_string(),
                            node: "brand".into(),
                            stage: "blind".into(),
                            done,
                            total: 100,
                        }),
                    }));
                }
            }
        }
        Ok(Response::new(tokio_stream::iter(events)))
    }

    async fn cancel(&self, request: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        let id = request.into_inner().job_id;
        if id == "job-forbidden" {
            return Err(Status::permission_denied(
                "role auditor may not cancel jobs; use an analyst certificate",
            ));
        }
        let job = self.get(Request::new(GetJobRequest { job_id: id })).await?;
        Err(Status::failed_precondition(format!(
            "job '{}' has already ended ({})",
            job.get_ref().id,
            state_name(job.get_ref().state())
        )))
    }

    async fn list(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        // Newest first.
        let jobs = self.jobs()?.iter().rev().take(limit).cloned().collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: vec![NodeInfo {
                name: "publisher".into(),
                datasets: vec![parley_proto::DatasetInfo {
                    name: "subscribers".into(),
                    columns: vec![],
                    row_count: 4000,
                }],
                connected_at_ms: 1_700_000_000_000,
                keys: None,
            }],
        }))
    }

    async fn ledger_heads(
        &self,
        _request: Request<parley_proto::LedgerHeadsRequest>,
    ) -> Result<Response<parley_proto::LedgerHeadsResponse>, Status> {
        Ok(Response::new(parley_proto::LedgerHeadsResponse {
            heads: vec![],
        }))
    }
}

/// A CA, a coordinator serving `FakeJobs` on 127.0.0.1:0, and a parleyctl.toml with an
/// analyst certificate. Returns the config path and the shutdown token.
async fn start(dir: &Path) -> (PathBuf, CancellationToken) {
    parley_net::install_crypto_provider();
    let (ca, ca_key) = parley_net::ca::init_ca("test federation", 1).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (from, to) = (
        now - time::Duration::hours(1),
        now + time::Duration::hours(1),
    );
    let (srv, srv_key) = parley_net::ca::issue(
        &ca,
        &ca_key,
        Role::Coordinator,
        "coordinator",
        &[],
        from,
        to,
    )
    .unwrap();
    let (me, me_key) =
        parley_net::ca::issue(&ca, &ca_key, Role::Analyst, "alice", &[], from, to).unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    write(&dir.join("pki"), "ca.pem", &ca);
    write(&dir.join("pki"), "alice.pem", &me);
    write(&dir.join("pki"), "alice.key", &me_key);

    let tls = parley_net::TlsMaterial::from_pem(&ca, &srv, &srv_key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let incoming = parley_net::tls_incoming(
        listener,
        parley_net::server_config(&tls).unwrap(),
        shutdown.clone(),
    );
    let service = FakeJobs {
        jobs: Mutex::new(Vec::new()),
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(JobsServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
    });
    let config = write(
        dir,
        "parleyctl.toml",
        &format!(
            "coordinator = \"https://{addr}\"\nserver_name = \"coordinator\"\n\
             ca_cert = \"pki/ca.pem\"\ncert = \"pki/alice.pem\"\nkey = \"pki/alice.key\"\n"
        ),
    );
    (config, shutdown)
}

/// Runs parleyctl in-process; returns (exit code or error text, stdout).
async fn ctl(config: &Path, args: &[&str]) -> (Result<i32, String>, String) {
    let mut full = vec!["parleyctl", "--config", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let cli = Cli::from_args(full).unwrap();
    let mut out = Vec::new();
    let result = run(cli, &mut out).await.map_err(|e| format!("{e:#}"));
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn submit_wait_jobs_status_result_cancel_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (config, shutdown) = start(dir.path()).await;
    let job_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/examples/job-match.toml");
    let job_file = job_file.to_str().unwrap();

    let (code, out) = ctl(&config, &["submit", job_file, "--wait", "--no-progress"]).await;
    assert_eq!(code, Ok(EXIT_OK), "{out}");
    let id = out.lines().next().unwrap().to_string();
    assert!(id.starts_with("job-"), "{out}");
    for expect in [
        "submitted",
        "accepted",
        "running",
        "succeeded (psi/match)",
        "250",
    ] {
        assert!(out.contains(expect), "{expect} in {out}");
    }

    let (code, out) = ctl(&config, &["jobs"]).await;
    assert_eq!(code, Ok(EXIT_OK));
    assert!(out.contains(&id) && out.contains("succeeded"), "{out}");

    let (code, out) = ctl(&config, &["status", &id]).await;
    assert_eq!(code, Ok(EXIT_OK));
    assert!(out.contains("state:         succeeded"), "{out}");

    let (code, out) = ctl(&config, &["result", &id, "--json"]).await;
    assert_eq!(code, Ok(EXIT_OK));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["psi"]["intersection_records"], 250);

    let (code, _) = ctl(&config, &["cancel", &id]).await;
    let err = code.unwrap_err();
    assert!(err.contains("already ended"), "{err}");
    let (code, _) = ctl(&config, &["cancel", "job-forbidden"]).await;
    let err = code.unwrap_err();
    assert!(
        err.contains("permission denied") && err.contains("analyst certificate"),
        "{err}"
    );
    let (code, _) = ctl(&config, &["status", "job-nope"]).await;
    assert!(code.unwrap_err().contains("no job 'job-nope'"));

    let (code, out) = ctl(&config, &["nodes"]).await;
    assert_eq!(code, Ok(EXIT_OK));
    assert!(out.contains("publisher") && out.contains("4,000"), "{out}");
    shutdown.cancel();
}

#[tokio::test]
async fn refused_job_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (config, shutdown) = start(dir.path()).await;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/examples/job-cardinality.toml"),
    )
    .unwrap()
    .replace("audience overlap", "please refuse");
    let job = write(dir.path(), "job.toml", &text);
    let (code, out) = ctl(&config, &["submit", job.to_str().unwrap(), "--wait"]).await;
    assert_eq!(code, Ok(EXIT_JOB_DID_NOT_SUCCEED), "{out}");
    assert!(out.contains("refused: publisher: not a partner"), "{out}");
    let id = out.lines().next().unwrap();
    let (code, out) = ctl(&config, &["result", id]).await;
    assert_eq!(code, Ok(EXIT_JOB_DID_NOT_SUCCEED));
    assert!(out.contains("not a partner"), "{out}");
    shutdown.cancel();
}

#[tokio::test]
async fn unreachable_coordinator_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (config, shutdown) = start(dir.path()).await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}");
    let (code, _) = ctl(&config, &["--coordinator", &url, "nodes"]).await;
    let err = code.unwrap_err();
    assert!(
        err.contains(&format!("cannot reach the coordinator at {url}")),
        "{err}"
    );
    // Wrong server name: the TLS handshake fails.
    let (code, _) = ctl(&config, &["--server-name", "elsewhere", "nodes"]).await;
    assert!(code.unwrap_err().contains("elsewhere"));
    // Missing key file.
    let (code, _) = ctl(&config, &["--key", "/nonexistent/k.pem", "nodes"]).await;
    let err = code.unwrap_err();
    assert!(err.contains("/nonexistent/k.pem"), "{err}");
    shutdown.cancel();
}
