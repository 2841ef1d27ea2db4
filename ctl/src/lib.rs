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
//! | `audit EXPORT --node-key KEY [--head SEQ:HASH \| --offline]` | verifies a node's exported budget ledger (see [`commands::audit`]) |
//! | `report JOB [--out FILE]` | the job's result as a self-contained HTML page with charts (see [`report`]) |
//!
//! Exit codes: [`EXIT_OK`] (0) success; [`EXIT_ERROR`] (1) usage, configuration or connection
//! error; [`EXIT_JOB_DID_NOT_SUCCEED`] (2) the job was refused, failed, was cancelled, or (for
//! `result`) has not finished yet.
//!
//! The binary only calls [`main_with_args`]; tests call [`run`] in-process and capture its
//! output.
//!
//! Where to look: [`config`] resolves the config file and flags and connects; [`commands`]
//! holds one module per command (its whole life: the call, the output, the exit code);
//! [`render`] turns jobs and results into text and JSON, one module per job kind; [`error`]
//! says what went wrong and what to check next. This crate does not depend on the coordinator:
//! it speaks only the `Jobs` gRPC API of `parley-proto`.

pub mod commands;
pub mod config;
pub mod error;
pub mod render;
pub mod report;

#[cfg(test)]
mod testing;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use commands::exit_code_for;
pub use config::{
    CONFIG_ENV, ConnectionArgs, CtlConfig, CtlConfigFile, DEFAULT_COORDINATOR, DEFAULT_SERVER_NAME,
    connect,
};
pub use error::{CtlError, RpcError};
pub use render::{format_ms, outcome_text, result_json, state_name};

/// Exit code: the command succeeded (for job commands: the job succeeded).
pub const EXIT_OK: i32 = 0;
/// Exit code: usage, configuration or connection error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: the job was refused, failed or was cancelled (or has no result yet).
pub const EXIT_JOB_DID_NOT_SUCCEED: i32 = 2;

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

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Check and submit a job file; prints the job id.
    Submit {
        /// The job file (see jobs/examples/job-match.toml).
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
    /// Write a job's result as a self-contained HTML report with charts (readable offline);
    /// exit 2 if the job did not succeed.
    Report {
        /// Job id.
        job: String,
        /// Where to write the page.
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        out: PathBuf,
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
    let Cli {
        connection,
        command,
    } = cli;
    match command {
        Command::Submit {
            job,
            wait,
            no_progress,
        } => commands::submit::run(&connection, &job, wait, !no_progress, out).await,
        Command::Watch { job, no_progress } => {
            commands::watch::run(&connection, &job, !no_progress, out).await
        }
        Command::Jobs { limit } => commands::jobs::run(&connection, limit, out).await,
        Command::Status { job } => commands::status::run(&connection, &job, out).await,
        Command::Result { job, json } => commands::result::run(&connection, &job, json, out).await,
        Command::Cancel { job, reason } => {
            commands::cancel::run(&connection, &job, reason, out).await
        }
        Command::Report { job, out: path } => {
            commands::report::run(&connection, &job, &path, out).await
        }
        Command::Nodes { keys } => commands::nodes::run(&connection, keys, out).await,
        Command::Audit {
            export,
            node_key,
            head,
            offline,
        } => {
            let source = match (head, offline) {
                (Some(h), _) => commands::audit::HeadSource::Given(h),
                (None, true) => commands::audit::HeadSource::Offline,
                (None, false) => commands::audit::HeadSource::Coordinator,
            };
            commands::audit::run(&export, &node_key, source, &connection, out).await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::write;

    mod over_mtls;

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
}
