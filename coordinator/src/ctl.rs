//! `parleyctl`: the command-line client for analysts and auditors.
//!
//! It talks to the coordinator's `Jobs` service over mutual TLS with the user's CA-issued
//! certificate (role `analyst` to submit and cancel, `auditor` to read):
//!
//! | command | what it does |
//! |---|---|
//! | `submit JOB.toml [--wait]` | checks and submits a job file, prints the job id; `--wait` follows the job to its end |
//! | `watch JOB` | follows a job to its end (progress bar, state changes, result) |
//! | `jobs [--limit N]` | lists jobs, newest first |
//! | `status JOB` | state, participants, history with timestamps, reason |
//! | `result JOB [--json]` | the result, as a summary or JSON |
//! | `cancel JOB [--reason TEXT]` | cancels a job that has not ended |
//! | `nodes [--keys]` | connected nodes with their datasets (and CA-verified ledger keys) |
//! | `audit EXPORT --node-key KEY [--head SEQ:HASH \| --offline]` | verifies a node's exported budget ledger (see [`crate::audit`]) |
//!
//! Exit codes: [`EXIT_OK`] (0) success; [`EXIT_ERROR`] (1) usage, configuration or connection
//! error; [`EXIT_JOB_DID_NOT_SUCCEED`] (2) the job was refused, failed, was cancelled, or (for
//! `result`) has not finished yet.
//!
//! The binary only calls [`main_with_args`]; tests call [`run`] in-process and capture its
//! output.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use parley_proto::jobs_client::JobsClient;
use parley_proto::{
    CancelJobRequest, GetJobRequest, Job, JobKind, JobProgress, JobResult, JobSpec, JobState,
    ListJobsRequest, ListNodesRequest, NodeInfo, PsiMode, PsiResult, PsiRole, SubmitJobRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::CoordError;
use crate::jobfile::load_job_file;
use crate::store::is_terminal;

/// Exit code: the command succeeded (for job commands: the job succeeded).
pub const EXIT_OK: i32 = 0;
/// Exit code: usage, configuration or connection error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: the job was refused, failed or was cancelled (or has no result yet).
pub const EXIT_JOB_DID_NOT_SUCCEED: i32 = 2;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PARLEYCTL_CONFIG";
/// Coordinator address used when neither the config file nor `--coordinator` sets one.
pub const DEFAULT_COORDINATOR: &str = "https://127.0.0.1:7443";
/// TLS server name used when neither the config file nor `--server-name` sets one.
pub const DEFAULT_SERVER_NAME: &str = "coordinator";

/// Command line of `parleyctl`.
#[derive(Debug, Parser)]
#[command(
    name = "parleyctl",
    version,
    about = "Submit and follow Parley jobs, read results, list nodes.",
    after_help = "Exit codes: 0 ok; 1 usage, configuration or connection error; 2 the job did \
                  not succeed (refused, failed, cancelled, or no result yet)."
)]
pub struct Cli {
    /// How to reach the coordinator.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (the first item is the program name), as the binary does.
    pub fn from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        <Cli as Parser>::try_parse_from(args)
    }
}

/// Options saying how to reach the coordinator; each overrides the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConnectionArgs {
    /// Config file (see coordinator/examples/parleyctl.toml) [env: PARLEYCTL_CONFIG].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Coordinator URL, e.g. https://coordinator.example:7443 [default: https://127.0.0.1:7443].
    #[arg(long, global = true, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Name in the coordinator's certificate [default: coordinator].
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Federation CA certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Your certificate (PEM), role analyst or auditor.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Your certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Check and submit a job file; prints the job id.
    Submit {
        /// The job file (see coordinator/examples/job-match.toml).
        job: PathBuf,
        /// Follow the job until it ends; exit 0 if it succeeded, 2 if not.
        #[arg(long)]
        wait: bool,
        /// With --wait: no progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Follow a job until it ends; exit 0 if it succeeded, 2 if not.
    Watch {
        /// Job id.
        job: String,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// List jobs, newest first.
    Jobs {
        /// Show at most this many jobs.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show a job's state, participants and history.
    Status {
        /// Job id.
        job: String,
    },
    /// Show a job's result; exit 2 if the job did not succeed.
    Result {
        /// Job id.
        job: String,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job that has not ended.
    Cancel {
        /// Job id.
        job: String,
        /// Why (recorded in the job's history).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// List connected nodes and their datasets.
    Nodes {
        /// Also print each node's Ed25519 ledger key, checked against the federation CA.
        #[arg(long)]
        keys: bool,
    },
    /// Verify a node's exported budget ledger: hash chain, signatures, spending within the
    /// budget, and the last row against the head the coordinator recorded. Exit 0 if it
    /// passes, 2 if it fails.
    Audit {
        /// The export written by `parley-node ledger export`.
        export: PathBuf,
        /// The node's Ed25519 public key: 64 hex digits or a file holding them.
        #[arg(long, value_name = "KEY")]
        node_key: String,
        /// Expected head `SEQ:HASH` instead of asking the coordinator.
        #[arg(long, value_name = "SEQ:HASH", conflicts_with = "offline")]
        head: Option<String>,
        /// Do not compare with the coordinator's head (a truncated tail goes unnoticed).
        #[arg(long)]
        offline: bool,
    },
}

/// The config file as written. Every field is optional; flags override it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfigFile {
    /// Coordinator URL (`https://HOST:PORT`).
    pub coordinator: Option<String>,
    /// Name in the coordinator's certificate.
    pub server_name: Option<String>,
    /// Federation CA certificate (PEM); relative to the config file's directory.
    pub ca_cert: Option<PathBuf>,
    /// The user's certificate (PEM); relative to the config file's directory.
    pub cert: Option<PathBuf>,
    /// The user's private key (PEM); relative to the config file's directory.
    pub key: Option<PathBuf>,
}

impl CtlConfigFile {
    /// Reads and parses a config file, making relative paths relative to its directory.
    pub fn load(path: &Path) -> Result<CtlConfigFile, CoordError> {
        let text = std::fs::read_to_string(path).map_err(|e| CoordError::ConfigRead {
            path: path.to_path_buf(),
            message: format!("{e}; check --config or {CONFIG_ENV}"),
        })?;
        let mut file = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut file.ca_cert, &mut file.cert, &mut file.key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Parses config text; `path` is used in messages only (paths are left as written).
    pub fn parse(text: &str, path: &Path) -> Result<CtlConfigFile, CoordError> {
        toml::from_str(text).map_err(|e| CoordError::ConfigSyntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// Fully resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlConfig {
    /// Coordinator URL (`https://…`).
    pub coordinator: String,
    /// Name expected in the coordinator's certificate.
    pub server_name: String,
    /// Federation CA certificate file.
    pub ca_cert: PathBuf,
    /// The user's certificate file.
    pub cert: PathBuf,
    /// The user's private key file.
    pub key: PathBuf,
}

impl CtlConfig {
    /// Combines the config file (from `--config`, else `$PARLEYCTL_CONFIG`, else none) with
    /// the flags, flags winning, and checks the result.
    pub fn resolve(args: &ConnectionArgs) -> Result<CtlConfig, CoordError> {
        let env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::resolve_with(args, env.as_deref())
    }

    /// Like [`CtlConfig::resolve`], with the value of `$PARLEYCTL_CONFIG` passed in.
    pub fn resolve_with(
        args: &ConnectionArgs,
        env_config: Option<&Path>,
    ) -> Result<CtlConfig, CoordError> {
        let file = match args.config.as_deref().or(env_config) {
            Some(path) => CtlConfigFile::load(path)?,
            None => CtlConfigFile::default(),
        };
        let coordinator = args
            .coordinator
            .clone()
            .or(file.coordinator)
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
        if !coordinator.starts_with("https://") || coordinator.len() <= "https://".len() {
            return Err(CoordError::ConfigInvalid {
                field: "coordinator",
                problem: format!(
                    "'{coordinator}' is not an https:// URL; every connection uses mutual \
                     TLS, so write it as https://HOST:PORT (--coordinator or coordinator = in \
                     parleyctl.toml)"
                ),
            });
        }
        let server_name = args
            .server_name
            .clone()
            .or(file.server_name)
            .unwrap_or_else(|| DEFAULT_SERVER_NAME.to_string());
        if server_name.is_empty() {
            return Err(CoordError::ConfigInvalid {
                field: "server_name",
                problem: "is empty; set it to the name in the coordinator's certificate"
                    .to_string(),
            });
        }
        let required = |flag: Option<&PathBuf>,
                        from_file: Option<PathBuf>,
                        field: &'static str,
                        what: &str|
         -> Result<PathBuf, CoordError> {
            flag.cloned()
                .or(from_file)
                .ok_or_else(|| CoordError::ConfigInvalid {
                    field,
                    problem: format!(
                        "no {what} given; pass --{} or set {field} in parleyctl.toml \
                         (--config or {CONFIG_ENV})",
                        field.replace('_', "-")
                    ),
                })
        };
        Ok(CtlConfig {
            coordinator,
            server_name,
            ca_cert: required(
                args.ca_cert.as_ref(),
                file.ca_cert,
                "ca_cert",
                "federation CA certificate",
            )?,
            cert: required(args.cert.as_ref(), file.cert, "cert", "certificate")?,
            key: required(args.key.as_ref(), file.key, "key", "private key")?,
        })
    }
}

/// A failed call to the coordinator, with a message that says what to check.
#[derive(Debug)]
pub struct RpcError {
    /// What parleyctl was doing, e.g. "submit the job".
    action: String,
    /// The coordinator URL.
    url: String,
    /// The status returned by tonic.
    status: tonic::Status,
}

impl RpcError {
    /// Wraps a status returned while doing `action` against `url`.
    pub fn new(action: impl Into<String>, url: &str, status: tonic::Status) -> RpcError {
        RpcError {
            action: action.into(),
            url: url.to_string(),
            status,
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.status.code()
    }

    /// The status message and the text of every underlying cause, de-duplicated.
    fn detail(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.status.message().is_empty() {
            parts.push(self.status.message().to_string());
        }
        let mut cause = std::error::Error::source(&self.status);
        while let Some(e) = cause {
            let text = e.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            cause = e.source();
        }
        if parts.is_empty() {
            format!("{:?}", self.status.code())
        } else {
            parts.join(": ")
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (action, url, detail) = (&self.action, &self.url, self.detail());
        use tonic::Code;
        match self.status.code() {
            Code::Unavailable => write!(
                f,
                "cannot {action}: cannot reach the coordinator at {url}: {detail}; is it \
                 running? check --coordinator (and --server-name / --ca-cert if the TLS \
                 handshake failed)"
            ),
            Code::Unauthenticated => write!(
                f,
                "cannot {action}: the coordinator at {url} did not accept your certificate: \
                 {detail}; check --cert and --key, and that the certificate was issued by the \
                 federation CA"
            ),
            Code::PermissionDenied => write!(
                f,
                "cannot {action}: permission denied by the coordinator: {detail}"
            ),
            Code::NotFound => write!(
                f,
                "cannot {action}: {detail}; list jobs with `parleyctl jobs`"
            ),
            Code::InvalidArgument | Code::FailedPrecondition => {
                write!(f, "cannot {action}: the coordinator refused: {detail}")
            }
            Code::DeadlineExceeded => write!(
                f,
                "cannot {action}: the coordinator at {url} did not answer in time: {detail}"
            ),
            Code::Unknown | Code::Cancelled => {
                // TLS 1.3 reports a rejected client certificate only on the first call, with a
                // message that varies; say what to check.
                write!(
                    f,
                    "cannot {action}: the call to {url} failed: {detail}; if this persists, \
                     check that your certificate (--cert, --key) is issued by the federation CA"
                )
            }
            code => write!(
                f,
                "cannot {action}: the coordinator at {url} answered {code:?}: {detail}"
            ),
        }
    }
}

impl std::error::Error for RpcError {}

/// Connects to the coordinator's `Jobs` service with the configured certificate.
pub async fn connect(config: &CtlConfig) -> anyhow::Result<JobsClient<Channel>> {
    parley_net::install_crypto_provider();
    let tls = parley_net::TlsMaterial::load(&config.ca_cert, &config.cert, &config.key)
        .map_err(CoordError::from)
        .context(
            "cannot load your TLS certificates (--ca-cert, --cert, --key or the config file)",
        )?;
    let channel = parley_net::connect(&config.coordinator, &config.server_name, &tls)
        .await
        .map_err(CoordError::from)
        .with_context(|| {
            format!(
                "cannot reach the coordinator at {} (is it running? check --coordinator)",
                config.coordinator
            )
        })?;
    Ok(JobsClient::new(channel)
        .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
        .max_encoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES))
}

/// Parses `args` (including the program name), runs the command, prints errors to stderr and
/// returns the process exit code. This is the whole of the `parleyctl` binary.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::from_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and are not errors.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_ERROR as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR as u8);
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(run(cli, &mut stdout));
    let _ = stdout.flush();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_ERROR as u8)),
        Err(e) => {
            eprintln!("error: {}", parley_net::error_chain(e.as_ref()));
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

/// Runs one `parleyctl` command, writing its output to `out` (progress bars go to stderr,
/// and only when it is a terminal and progress is wanted). Returns the exit code ([`EXIT_OK`]
/// or [`EXIT_JOB_DID_NOT_SUCCEED`]); errors (exit code [`EXIT_ERROR`]) are returned as `Err`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<i32> {
    // Check the job file before connecting, so its mistakes come first.
    let spec = match &cli.command {
        Command::Submit { job, .. } => Some(load_job_file(job)?),
        Command::Audit {
            export,
            node_key,
            head,
            offline,
        } => {
            let source = match (head, offline) {
                (Some(h), _) => crate::audit::HeadSource::Given(h.clone()),
                (None, true) => crate::audit::HeadSource::Offline,
                (None, false) => crate::audit::HeadSource::Coordinator,
            };
            return crate::audit::run_audit(export, node_key, source, &cli.connection, out).await;
        }
        _ => None,
    };
    let config = CtlConfig::resolve(&cli.connection)?;
    let url = config.coordinator.as_str();
    let mut client = connect(&config).await?;
    let rpc = |action: &str| {
        let action = action.to_string();
        move |status: tonic::Status| RpcError::new(action, url, status)
    };

    match cli.command {
        Command::Submit {
            wait, no_progress, ..
        } => {
            let job = client
                .submit(SubmitJobRequest { spec })
                .await
                .map_err(rpc("submit the job"))?
                .into_inner();
            writeln!(out, "{}", job.id)?;
            if !wait {
                return Ok(EXIT_OK);
            }
            let job = watch(&mut client, url, &job.id, !no_progress, out).await?;
            write_outcome(&job, out)
        }
        Command::Watch { job, no_progress } => {
            let job = watch(&mut client, url, &job, !no_progress, out).await?;
            write_outcome(&job, out)
        }
        Command::Jobs { limit } => {
            let jobs = client
                .list(ListJobsRequest { limit })
                .await
                .map_err(rpc("list jobs"))?
                .into_inner()
                .jobs;
            write_jobs_table(&jobs, out)?;
            Ok(EXIT_OK)
        }
        Command::Status { job } => {
            let job = get_job(&mut client, url, &job).await?;
            write_status(&job, out)?;
            Ok(EXIT_OK)
        }
        Command::Result { job, json } => {
            let job = get_job(&mut client, url, &job).await?;
            if json {
                writeln!(out, "{:#}", result_json(&job))?;
                Ok(exit_code_for(&job))
            } else {
                write_outcome(&job, out)
            }
        }
        Command::Cancel { job, reason } => {
            let job = client
                .cancel(CancelJobRequest {
                    job_id: job.clone(),
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(rpc(&format!("cancel job '{job}'")))?
                .into_inner();
            writeln!(out, "job {}: {}", job.id, state_name(job.state()))?;
            Ok(EXIT_OK)
        }
        Command::Nodes { keys } => {
            let mut nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(rpc("list nodes"))?
                .into_inner()
                .nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            write_nodes_table(&nodes, out)?;
            if keys {
                let tls = parley_net::TlsMaterial::load(&config.ca_cert, &config.cert, &config.key)
                    .map_err(CoordError::from)?;
                writeln!(out)?;
                for n in &nodes {
                    let verified = n.keys.as_ref().map(|b| {
                        parley_net::binding::verify_key_binding(
                            tls.ca_der(),
                            b,
                            std::time::SystemTime::now(),
                        )
                    });
                    match verified {
                        Some(Ok(k)) => writeln!(
                            out,
                            "{}  ledger key {}  (binding verified against the federation CA)",
                            n.name,
                            hex::encode(k.ed25519_public)
                        )?,
                        Some(Err(e)) => writeln!(out, "{}  key binding REJECTED: {e}", n.name)?,
                        None => writeln!(out, "{}  no key binding", n.name)?,
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::Audit { .. } => Ok(EXIT_OK),
    }
}

/// Fetches one job.
async fn get_job(client: &mut JobsClient<Channel>, url: &str, id: &str) -> anyhow::Result<Job> {
    Ok(client
        .get(GetJobRequest {
            job_id: id.to_string(),
        })
        .await
        .map_err(|s| RpcError::new(format!("get job '{id}'"), url, s))?
        .into_inner())
}

/// Follows a job with `Jobs.Watch` until it ends, printing each state change to `out` and
/// showing progress reports on a progress bar (stderr). Returns the ended job.
async fn watch(
    client: &mut JobsClient<Channel>,
    url: &str,
    id: &str,
    show_progress: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Job> {
    let action = format!("watch job '{id}'");
    let mut stream = client
        .watch(GetJobRequest {
            job_id: id.to_string(),
        })
        .await
        .map_err(|s| RpcError::new(action.clone(), url, s))?
        .into_inner();
    let bar = if show_progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg:30} [{bar:30}] {human_pos}/{human_len}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut printed = 0usize;
    let mut last: Option<Job> = None;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => {
                bar.finish_and_clear();
                return Err(RpcError::new(action, url, status).into());
            }
        };
        if let Some(job) = event.job {
            let new = job.history.get(printed..).unwrap_or_default();
            bar.suspend(|| -> std::io::Result<()> {
                for change in new {
                    writeln!(out, "{}", history_line(change))?;
                }
                Ok(())
            })?;
            printed = job.history.len();
            let ended = is_terminal(job.state());
            last = Some(job);
            if ended {
                break;
            }
        }
        if let Some(progress) = event.progress {
            show(&bar, &progress);
        }
    }
    bar.finish_and_clear();
    if let Some(job) = last.filter(|j| is_terminal(j.state())) {
        return Ok(job);
    }
    // The stream ended before the job did; ask once more.
    let job = get_job(client, url, id).await?;
    if is_terminal(job.state()) {
        return Ok(job);
    }
    anyhow::bail!(
        "the coordinator ended the watch of job '{id}' while it was {}; follow it again with \
         `parleyctl watch {id}`",
        state_name(job.state())
    )
}

/// Updates the progress bar from one progress report.
fn show(bar: &ProgressBar, p: &JobProgress) {
    bar.set_length(p.total);
    bar.set_position(p.done.min(p.total));
    bar.set_message(format!("{}: {}", p.node, p.stage));
}

/// The exit code for a job: 0 if it succeeded, 2 otherwise.
pub fn exit_code_for(job: &Job) -> i32 {
    if job.state() == JobState::Succeeded {
        EXIT_OK
    } else {
        EXIT_JOB_DID_NOT_SUCCEED
    }
}

/// Prints a job's outcome (its result summary, or why it has none) and returns the exit code.
fn write_outcome(job: &Job, out: &mut (dyn Write + Send)) -> anyhow::Result<i32> {
    out.write_all(outcome_text(job).as_bytes())?;
    Ok(exit_code_for(job))
}

/// A human summary of a job's outcome: the result if it succeeded, else why not.
pub fn outcome_text(job: &Job) -> String {
    let mut s = String::new();
    let id = &job.id;
    let state = job.state();
    let reason = if job.reason.is_empty() {
        "(no reason given)"
    } else {
        &job.reason
    };
    let _ = match state {
        JobState::Succeeded => writeln!(s, "job {id} succeeded ({})", kind_text(job.spec.as_ref())),
        JobState::Refused | JobState::Failed | JobState::Cancelled => {
            writeln!(s, "job {id} {}: {reason}", state_name(state))
        }
        _ => writeln!(
            s,
            "job {id} has no result yet: it is {}; follow it with `parleyctl watch {id}`",
            state_name(state)
        ),
    };
    if state != JobState::Succeeded {
        return s;
    }
    let result = job.result.as_ref();
    match (
        result.and_then(|r| r.psi.as_ref()),
        result.and_then(|r| r.dp_stats.as_ref()),
    ) {
        (Some(psi), _) => write_psi_summary(&mut s, job.spec.as_ref(), psi),
        (None, Some(stats)) => crate::results::write_dp_stats(&mut s, stats),
        (None, None) if result.and_then(|r| r.secure_sum.as_ref()).is_some() => {
            if let Some(r) = result.and_then(|r| r.secure_sum.as_ref()) {
                crate::results::write_secure_sum(&mut s, r);
            }
        }
        (None, None) => {
            let _ = writeln!(s, "  (the job released no result)");
        }
    }
    s
}

/// Appends a PSI result summary.
fn write_psi_summary(s: &mut String, spec: Option<&JobSpec>, psi: &PsiResult) {
    let receiver = spec
        .and_then(|sp| {
            sp.participants
                .iter()
                .find(|p| p.psi_role() == PsiRole::Receiver)
        })
        .map(|p| p.node.as_str())
        .unwrap_or("the receiver");
    let min = spec
        .and_then(|sp| sp.psi.as_ref())
        .map_or(0, |p| p.min_intersection);
    let _ = writeln!(
        s,
        "  receiver records:     {} ({} distinct identifiers)",
        group(psi.receiver_records),
        group(psi.receiver_identifiers)
    );
    let _ = writeln!(
        s,
        "  sender identifiers:   {}",
        group(psi.sender_identifiers)
    );
    if let Some(sum) = &psi.sum {
        crate::results::write_sum_summary(s, sum);
    } else if psi.suppressed {
        let _ = writeln!(
            s,
            "  intersection:         suppressed (fewer than min_intersection = {} records)",
            group(min)
        );
    } else {
        let rate = if psi.receiver_records > 0 {
            format!(
                " ({:.1}% of the receiver's records)",
                psi.intersection_records as f64 * 100.0 / psi.receiver_records as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  intersection:         {} records{rate}",
            group(psi.intersection_records)
        );
        if let Some(n) = &psi.count_noise {
            let _ = writeln!(
                s,
                "                        noisy: {}",
                crate::results::noise_text(n)
            );
        }
    }
    if psi.mode() == PsiMode::Match && !psi.match_output.is_empty() {
        let _ = writeln!(
            s,
            "  matched records:      {} (on {receiver}'s machine)",
            psi.match_output
        );
    }
    let _ = writeln!(
        s,
        "  protocol time:        {:.2} s",
        psi.elapsed_ms as f64 / 1000.0
    );
}

/// The JSON printed by `result --json`: id, label, state, reason and the result (or null).
pub fn result_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "label": job.spec.as_ref().map(|s| s.label.as_str()).unwrap_or_default(),
        "kind": kind_text(job.spec.as_ref()),
        "state": state_name(job.state()),
        "reason": job.reason,
        "submitted_by": job.submitted_by,
        "history": job.history.iter().map(|c| json!({
            "state": state_name(c.state()),
            "at_ms": c.at_ms,
            "note": c.note,
        })).collect::<Vec<_>>(),
        "result": job.result.as_ref().map_or(Value::Null, result_value),
    })
}

/// JSON of a job result.
fn result_value(result: &JobResult) -> Value {
    json!({
        "psi": result.psi.as_ref().map_or(Value::Null, |p| json!({
            "mode": mode_name(p.mode()),
            "receiver_records": p.receiver_records,
            "receiver_identifiers": p.receiver_identifiers,
            "sender_identifiers": p.sender_identifiers,
            "intersection_records": p.intersection_records,
            "suppressed": p.suppressed,
            "match_output": p.match_output,
            "elapsed_ms": p.elapsed_ms,
            "dp": crate::results::psi_dp_json(p),
        })),
        "dp_stats": result.dp_stats.as_ref().map_or(Value::Null, crate::results::dp_stats_json),
        "secure_sum": result.secure_sum.as_ref().map_or(Value::Null, crate::results::secure_sum_json),
    })
}

/// Prints `status JOB`.
fn write_status(job: &Job, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let spec = job.spec.as_ref();
    writeln!(out, "job:           {}", job.id)?;
    if let Some(label) = spec.map(|s| s.label.as_str()).filter(|l| !l.is_empty()) {
        writeln!(out, "label:         {label}")?;
    }
    let min = spec
        .and_then(|s| s.psi.as_ref())
        .map_or(0, |p| p.min_intersection);
    let min = if min > 0 {
        format!(" (min_intersection {})", group(min))
    } else {
        String::new()
    };
    writeln!(out, "kind:          {}{min}", kind_text(spec))?;
    writeln!(out, "submitted by:  {}", job.submitted_by)?;
    writeln!(out, "state:         {}", state_name(job.state()))?;
    if !job.reason.is_empty() {
        writeln!(out, "reason:        {}", job.reason)?;
    }
    writeln!(out, "participants:")?;
    for p in spec.map(|s| s.participants.as_slice()).unwrap_or_default() {
        let columns = if p.columns.is_empty() {
            "all identifier columns".to_string()
        } else {
            p.columns.join(", ")
        };
        writeln!(
            out,
            "  {:<9} {}/{}  ({columns})",
            role_name(p.psi_role()),
            p.node,
            p.dataset
        )?;
    }
    writeln!(out, "history (UTC):")?;
    for change in &job.history {
        writeln!(out, "  {}", history_line(change))?;
    }
    Ok(())
}

/// One history line: time, state and note.
fn history_line(change: &parley_proto::StateChange) -> String {
    let mut line = format!(
        "{}  {}",
        format_ms(change.at_ms),
        state_name(change.state())
    );
    if !change.note.is_empty() {
        line.push_str(": ");
        line.push_str(&change.note);
    }
    line
}

/// Prints the `jobs` table.
fn write_jobs_table(jobs: &[Job], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if jobs.is_empty() {
        return writeln!(out, "no jobs");
    }
    let rows = jobs
        .iter()
        .map(|job| {
            let spec = job.spec.as_ref();
            vec![
                job.id.clone(),
                state_name(job.state()).to_string(),
                kind_text(spec),
                participants_text(spec),
                job.history
                    .first()
                    .map_or_else(|| "-".to_string(), |c| format_ms(c.at_ms)),
                spec.map(|s| s.label.clone()).unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    write_table(
        out,
        &[
            "ID",
            "STATE",
            "KIND",
            "PARTICIPANTS",
            "SUBMITTED (UTC)",
            "LABEL",
        ],
        &rows,
    )
}

/// Prints the `nodes` table: one row per dataset.
fn write_nodes_table(nodes: &[NodeInfo], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if nodes.is_empty() {
        return writeln!(out, "no nodes connected");
    }
    let mut rows = Vec::new();
    for node in nodes {
        let since = format_ms(node.connected_at_ms);
        if node.datasets.is_empty() {
            rows.push(vec![
                node.name.clone(),
                since,
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for (i, ds) in node.datasets.iter().enumerate() {
            let columns = ds
                .columns
                .iter()
                .map(|c| format!("{}:{}", c.name, c.kind))
                .collect::<Vec<_>>()
                .join(", ");
            let (name, since) = if i == 0 {
                (node.name.clone(), since.clone())
            } else {
                (String::new(), String::new())
            };
            rows.push(vec![
                name,
                since,
                ds.name.clone(),
                group(ds.row_count),
                columns,
            ]);
        }
    }
    write_table(
        out,
        &["NODE", "CONNECTED (UTC)", "DATASET", "ROWS", "COLUMNS"],
        &rows,
    )
}

/// Writes an aligned table (two spaces between columns; the last column is not padded).
fn write_table(
    out: &mut (dyn Write + Send),
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == headers.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&mut headers.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

/// "psi/match", "psi/cardinality", ...
fn kind_text(spec: Option<&JobSpec>) -> String {
    let Some(spec) = spec else {
        return "-".to_string();
    };
    match spec.kind() {
        JobKind::Psi => format!(
            "psi/{}",
            mode_name(spec.psi.as_ref().map_or(PsiMode::Unspecified, |p| p.mode()))
        ),
        JobKind::DpStats => "dp_stats".to_string(),
        JobKind::SecureSum => "secure_sum".to_string(),
        JobKind::Unspecified => "-".to_string(),
    }
}

/// "brand/crm (R), publisher/subscribers (S)".
fn participants_text(spec: Option<&JobSpec>) -> String {
    spec.map(|s| s.participants.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let role = match p.psi_role() {
                PsiRole::Receiver => " (R)",
                PsiRole::Sender => " (S)",
                PsiRole::Unspecified => "",
            };
            format!("{}/{}{role}", p.node, p.dataset)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lower-case name of a job state, as shown to users.
pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Submitted => "submitted",
        JobState::Accepted => "accepted",
        JobState::Refused => "refused",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Lower-case name of a PSI mode, as in job files.
fn mode_name(mode: PsiMode) -> &'static str {
    match mode {
        PsiMode::Unspecified => "unknown",
        PsiMode::Match => "match",
        PsiMode::Cardinality => "cardinality",
        PsiMode::Sum => "sum",
    }
}

/// Lower-case name of a PSI role, as in job files.
fn role_name(role: PsiRole) -> &'static str {
    match role {
        PsiRole::Unspecified => "(no role)",
        PsiRole::Receiver => "receiver",
        PsiRole::Sender => "sender",
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_ms(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{ms}ms"),
    }
}

/// Formats a count with thousands separators: 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parley_proto::{Participant, PsiParams, StateChange};

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("parleyctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        assert_eq!(
            parse(&["submit", "job.toml", "--wait"]).command,
            Command::Submit {
                job: "job.toml".into(),
                wait: true,
                no_progress: false
            }
        );
        assert_eq!(
            parse(&["submit", "job.toml"]).command,
            Command::Submit {
                job: "job.toml".into(),
                wait: false,
                no_progress: false
            }
        );
        assert_eq!(parse(&["jobs"]).command, Command::Jobs { limit: 20 });
        assert_eq!(
            parse(&["jobs", "--limit", "5"]).command,
            Command::Jobs { limit: 5 }
        );
        assert_eq!(
            parse(&["status", "job-1"]).command,
            Command::Status {
                job: "job-1".into()
            }
        );
        assert_eq!(
            parse(&["result", "job-1", "--json"]).command,
            Command::Result {
                job: "job-1".into(),
                json: true
            }
        );
        assert_eq!(
            parse(&["cancel", "job-1", "--reason", "wrong dataset"]).command,
            Command::Cancel {
                job: "job-1".into(),
                reason: Some("wrong dataset".into())
            }
        );
        assert_eq!(parse(&["nodes"]).command, Command::Nodes { keys: false });
        assert_eq!(
            parse(&["watch", "job-1", "--no-progress"]).command,
            Command::Watch {
                job: "job-1".into(),
                no_progress: true
            }
        );
    }

    #[test]
    fn connection_flags_are_global() {
        let before = parse(&[
            "--config",
            "c.toml",
            "--coordinator",
            "https://c:1",
            "nodes",
        ]);
        let after = parse(&[
            "nodes",
            "--config",
            "c.toml",
            "--coordinator",
            "https://c:1",
        ]);
        assert_eq!(before.connection, after.connection);
        let cli = parse(&[
            "status",
            "job-1",
            "--server-name",
            "coord",
            "--ca-cert",
            "ca.pem",
            "--cert",
            "me.pem",
            "--key",
            "me.key",
        ]);
        assert_eq!(
            cli.connection,
            ConnectionArgs {
                config: None,
                coordinator: None,
                server_name: Some("coord".into()),
                ca_cert: Some("ca.pem".into()),
                cert: Some("me.pem".into()),
                key: Some("me.key".into()),
            }
        );
    }

    #[test]
    fn bad_usage_is_rejected() {
        for args in [
            &[][..],
            &["submit"],
            &["frobnicate"],
            &["jobs", "--limit", "0"],
            &["jobs", "--limit", "x"],
            &["status"],
            &["nodes", "--bogus"],
        ] {
            let r = Cli::try_parse_from(std::iter::once("parleyctl").chain(args.iter().copied()));
            let e = r.err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert!(e.use_stderr(), "{args:?}");
        }
        assert_eq!(
            main_with_args(["parleyctl", "frobnicate"]),
            ExitCode::from(EXIT_ERROR as u8)
        );
        assert_eq!(
            main_with_args(["parleyctl", "--version"]),
            ExitCode::SUCCESS
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/parleyctl.toml");
        let file = CtlConfigFile::load(&path).unwrap();
        assert_eq!(file.coordinator.as_deref(), Some(DEFAULT_COORDINATOR));
        assert_eq!(file.server_name.as_deref(), Some(DEFAULT_SERVER_NAME));
        // Relative paths are relative to the config file's directory.
        assert_eq!(
            file.ca_cert,
            Some(path.parent().unwrap().join("pki/ca.pem"))
        );
        let args = ConnectionArgs {
            config: Some(path.clone()),
            ..ConnectionArgs::default()
        };
        let config = CtlConfig::resolve_with(&args, None).unwrap();
        assert_eq!(config.key, path.parent().unwrap().join("pki/alice.key"));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "parleyctl.toml",
            "coordinator = \"https://coord.example:7443\"\nca_cert = \"ca.pem\"\n\
             cert = \"/abs/me.pem\"\nkey = \"me.key\"\n",
        );
        let args = ConnectionArgs {
            config: Some(cfg.clone()),
            server_name: Some("coord".into()),
            key: Some("flag.key".into()),
            ..ConnectionArgs::default()
        };
        let config = CtlConfig::resolve_with(&args, None).unwrap();
        assert_eq!(
            config,
            CtlConfig {
                coordinator: "https://coord.example:7443".into(),
                server_name: "coord".into(),
                ca_cert: dir.path().join("ca.pem"),
                cert: "/abs/me.pem".into(),
                key: "flag.key".into(),
            }
        );
        let args = ConnectionArgs {
            coordinator: Some("https://other:1".into()),
            ..args
        };
        assert_eq!(
            CtlConfig::resolve_with(&args, None).unwrap().coordinator,
            "https://other:1"
        );
    }

    #[test]
    fn env_config_is_used_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let env_cfg = write(
            dir.path(),
            "env.toml",
            "ca_cert = \"e-ca.pem\"\ncert = \"e.pem\"\nkey = \"e.key\"\n",
        );
        let flag_cfg = write(
            dir.path(),
            "flag.toml",
            "ca_cert = \"f-ca.pem\"\ncert = \"f.pem\"\nkey = \"f.key\"\n",
        );
        let none = ConnectionArgs::default();
        let c = CtlConfig::resolve_with(&none, Some(&env_cfg)).unwrap();
        assert_eq!(c.cert, dir.path().join("e.pem"));
        assert_eq!(c.coordinator, DEFAULT_COORDINATOR);
        assert_eq!(c.server_name, DEFAULT_SERVER_NAME);
        let flag = ConnectionArgs {
            config: Some(flag_cfg),
            ..ConnectionArgs::default()
        };
        let c = CtlConfig::resolve_with(&flag, Some(&env_cfg)).unwrap();
        assert_eq!(c.cert, dir.path().join("f.pem"));
    }

    #[test]
    fn config_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing given at all: the CA certificate is missing.
        let err = CtlConfig::resolve_with(&ConnectionArgs::default(), None).unwrap_err();
        assert!(
            matches!(
                err,
                CoordError::ConfigInvalid {
                    field: "ca_cert",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--ca-cert"), "{err}");
        // Missing key only.
        let args = ConnectionArgs {
            ca_cert: Some("ca".into()),
            cert: Some("c".into()),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(err.to_string().contains("--key"), "{err}");
        // Not https.
        let args = ConnectionArgs {
            coordinator: Some("http://127.0.0.1:7443".into()),
            key: Some("k".into()),
            ..args
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(
            matches!(
                err,
                CoordError::ConfigInvalid {
                    field: "coordinator",
                    ..
                }
            ),
            "{err}"
        );
        // Unknown field.
        let bad = write(
            dir.path(),
            "bad.toml",
            "coordinator = \"https://x:1\"\ncacert = \"x\"\n",
        );
        let args = ConnectionArgs {
            config: Some(bad),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(matches!(err, CoordError::ConfigSyntax { .. }), "{err}");
        assert!(err.to_string().contains("cacert"), "{err}");
        // Missing file.
        let args = ConnectionArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ConnectionArgs::default()
        };
        let err = CtlConfig::resolve_with(&args, None).unwrap_err();
        assert!(matches!(err, CoordError::ConfigRead { .. }), "{err}");
    }

    #[tokio::test]
    async fn run_reports_job_file_errors_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let job = write(dir.path(), "job.toml", "kind = \"psi\"\n");
        let cli = parse(&["submit", job.to_str().unwrap()]);
        let mut out = Vec::new();
        let err = run(cli, &mut out).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("job.toml") && msg.contains("psi"), "{msg}");
        assert!(out.is_empty());
    }

    fn finished_job(state: JobState, reason: &str) -> Job {
        let mut job = Job {
            id: "job-0123456789abcdef".into(),
            spec: Some(JobSpec {
                label: "overlap".into(),
                kind: JobKind::Psi as i32,
                participants: vec![
                    Participant {
                        node: "brand".into(),
                        dataset: "crm".into(),
                        columns: vec!["email".into()],
                        psi_role: PsiRole::Receiver as i32,
                        ..Default::default()
                    },
                    Participant {
                        node: "publisher".into(),
                        dataset: "subs".into(),
                        columns: vec![],
                        psi_role: PsiRole::Sender as i32,
                        ..Default::default()
                    },
                ],
                psi: Some(PsiParams {
                    mode: PsiMode::Match as i32,
                    min_intersection: 100,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            submitted_by: "alice".into(),
            ..Job::default()
        };
        crate::store::transition(&mut job, JobState::Submitted, "", 1_700_000_000_000);
        crate::store::transition(&mut job, state, reason, 1_700_000_001_500);
        job
    }

    #[test]
    fn outcome_and_json_for_success() {
        let mut job = finished_job(JobState::Succeeded, "");
        job.result = Some(JobResult {
            psi: Some(PsiResult {
                mode: PsiMode::Match as i32,
                receiver_records: 5000,
                receiver_identifiers: 9800,
                sender_identifiers: 1_234_567,
                intersection_records: 1234,
                suppressed: false,
                match_output: "/data/out/matches.csv".into(),
                elapsed_ms: 1234,
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = outcome_text(&job);
        assert!(text.contains("succeeded (psi/match)"), "{text}");
        assert!(text.contains("1,234,567"), "{text}");
        assert!(text.contains("1,234 records (24.7%"), "{text}");
        assert!(
            text.contains("/data/out/matches.csv (on brand's machine)"),
            "{text}"
        );
        assert_eq!(exit_code_for(&job), EXIT_OK);
        let v = result_json(&job);
        assert_eq!(v["state"], "succeeded");
        assert_eq!(v["result"]["psi"]["intersection_records"], 1234);
        assert_eq!(v["result"]["psi"]["mode"], "match");
        assert_eq!(v["history"][1]["at_ms"], 1_700_000_001_500_i64);
    }

    #[test]
    fn outcome_for_failure_and_unfinished() {
        let job = finished_job(JobState::Refused, "publisher: dataset 'subs' is not shared");
        let text = outcome_text(&job);
        assert!(
            text.contains("refused: publisher: dataset 'subs' is not shared"),
            "{text}"
        );
        assert_eq!(exit_code_for(&job), EXIT_JOB_DID_NOT_SUCCEED);
        let v = result_json(&job);
        assert_eq!(v["state"], "refused");
        assert_eq!(v["result"], Value::Null);
        let running = finished_job(JobState::Running, "");
        assert!(outcome_text(&running).contains("no result yet"));
        assert_eq!(exit_code_for(&running), EXIT_JOB_DID_NOT_SUCCEED);
    }

    #[test]
    fn suppressed_result_says_so() {
        let mut job = finished_job(JobState::Succeeded, "");
        job.result = Some(JobResult {
            psi: Some(PsiResult {
                mode: PsiMode::Cardinality as i32,
                suppressed: true,
                ..PsiResult::default()
            }),
            ..Default::default()
        });
        let text = outcome_text(&job);
        assert!(
            text.contains("suppressed (fewer than min_intersection = 100"),
            "{text}"
        );
    }

    #[test]
    fn tables_and_status_render() {
        let job = finished_job(JobState::Failed, "sender dropped");
        let mut out = Vec::new();
        write_jobs_table(std::slice::from_ref(&job), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("ID  "));
        let row = lines.next().unwrap();
        for part in [
            "job-0123456789abcdef",
            "failed",
            "psi/match",
            "brand/crm (R), publisher/subs (S)",
            "2023-11-14 22:13:20",
            "overlap",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }

        let mut out = Vec::new();
        write_status(&job, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("reason:        sender dropped"), "{text}");
        assert!(
            text.contains("2023-11-14 22:13:21  failed: sender dropped"),
            "{text}"
        );
        assert!(text.contains("receiver  brand/crm  (email)"), "{text}");
        assert!(text.contains("(min_intersection 100)"), "{text}");

        let nodes = vec![NodeInfo {
            name: "brand".into(),
            datasets: vec![parley_proto::DatasetInfo {
                name: "crm".into(),
                columns: vec![parley_proto::ColumnInfo {
                    name: "email".into(),
                    kind: "email".into(),
                }],
                row_count: 12345,
            }],
            connected_at_ms: 0,
            ..Default::default()
        }];
        let mut out = Vec::new();
        write_nodes_table(&nodes, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1970-01-01 00:00:00"), "{text}");
        assert!(text.contains("12,345"), "{text}");
        assert!(text.contains("email:email"), "{text}");
    }

    #[test]
    fn rpc_errors_carry_hints() {
        let e = RpcError::new(
            "list jobs",
            "https://127.0.0.1:7443",
            tonic::Status::unavailable("tcp connect error"),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("cannot reach the coordinator at https://127.0.0.1:7443"),
            "{msg}"
        );
        assert!(msg.contains("--coordinator"), "{msg}");
        let e = RpcError::new(
            "submit the job",
            "https://x:1",
            tonic::Status::permission_denied("role auditor may not submit jobs"),
        );
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("role auditor may not submit jobs"));
    }

    #[test]
    fn helpers() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(format_ms(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(state_name(JobState::Cancelled), "cancelled");
        let _ = StateChange::default();
    }

    /// A stand-in `Jobs` service over real mutual TLS, so `run` is exercised end to end
    /// without the real coordinator: jobs run instantly through a scripted event sequence.
    mod over_mtls {
        use super::*;
        use crate::store::{JobStore, new_job_id, transition};
        use parley_net::Role;
        use parley_proto::jobs_server::{Jobs, JobsServer};
        use parley_proto::{JobEvent, ListJobsResponse, ListNodesResponse};
        use std::sync::Arc;
        use tokio_util::sync::CancellationToken;
        use tonic::{Request, Response, Status};

        struct FakeJobs {
            store: Arc<JobStore>,
        }

        fn succeed(job: &mut Job) {
            transition(job, JobState::Succeeded, "", 4);
            job.result = Some(JobResult {
                psi: Some(PsiResult {
                    mode: PsiMode::Match as i32,
                    receiver_records: 1000,
                    receiver_identifiers: 1500,
                    sender_identifiers: 4000,
                    intersection_records: 250,
                    suppressed: false,
                    match_output: "/out/m.csv".into(),
                    elapsed_ms: 12,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }

        #[tonic::async_trait]
        impl Jobs for FakeJobs {
            async fn submit(
                &self,
                request: Request<SubmitJobRequest>,
            ) -> Result<Response<Job>, Status> {
                let spec = request.into_inner().spec.unwrap_or_default();
                crate::jobfile::validate_spec(&spec).map_err(Status::invalid_argument)?;
                let refuse = spec.label.contains("refuse");
                let mut job = Job {
                    id: new_job_id(),
                    spec: Some(spec),
                    submitted_by: "alice".into(),
                    ..Job::default()
                };
                transition(&mut job, JobState::Submitted, "", 1);
                // What the stored job will end as (the watch replays the way there).
                let mut done = job.clone();
                if refuse {
                    transition(&mut done, JobState::Refused, "publisher: not a partner", 2);
                } else {
                    transition(&mut done, JobState::Accepted, "", 2);
                    transition(&mut done, JobState::Running, "", 3);
                    succeed(&mut done);
                }
                self.store
                    .insert(&done)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(Response::new(job))
            }

            async fn get(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
                let id = request.into_inner().job_id;
                match self.store.get(&id) {
                    Ok(Some(job)) => Ok(Response::new(job)),
                    Ok(None) => Err(Status::not_found(format!("no job '{id}'"))),
                    Err(e) => Err(Status::internal(e.to_string())),
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

            async fn cancel(
                &self,
                request: Request<CancelJobRequest>,
            ) -> Result<Response<Job>, Status> {
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
                let jobs = self
                    .store
                    .list(limit)
                    .map_err(|e| Status::internal(e.to_string()))?;
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
                store: Arc::new(JobStore::open_in_memory().unwrap()),
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
            let job_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/job-match.toml");
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
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/job-cardinality.toml"),
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
    }
}
