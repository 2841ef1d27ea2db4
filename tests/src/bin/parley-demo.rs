//! `parley-demo`: a whole Parley federation on loopback with generated data.

use std::process::ExitCode;

use clap::Parser;
use parley_tests::demo::{DemoOptions, run_demo};

#[derive(Parser)]
#[command(
    name = "parley-demo",
    about = "Run a Parley federation on loopback with generated data"
)]
struct Cli {
    /// Records per party in the first part (PSI, DP statistics, secure aggregation); the
    /// campaign's sizes are fixed. 20,000 keeps the whole demo well inside two minutes on 2
    /// cores.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Keep the working directory (certificates, configs, match outputs) for inspection.
    #[arg(long)]
    keep: bool,
    /// Where to write each job's HTML report, in a `run-<unix time>` directory per run (created if
    /// missing; kept after the demo).
    #[arg(long, value_name = "DIR", default_value = "parley-demo-reports")]
    reports: std::path::PathBuf,
}

fn main() -> ExitCode {
    parley_net::install_crypto_provider();
    parley_net::init_tracing("warn");
    let cli = Cli::parse();
    let opts = DemoOptions {
        records: cli.records,
        keep: cli.keep,
        // One directory per run, so that a run never mixes with an earlier one's pages.
        reports: cli.reports.join(format!(
            "run-{}",
            time::OffsetDateTime::now_utc().unix_timestamp()
        )),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parley-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let tmp = tempfile::Builder::new().prefix("parley-demo-").tempdir()?;
        let dir = if opts.keep {
            tmp.keep()
        } else {
            tmp.path().to_path_buf()
        };
        let r = run_demo(&dir, &opts).await;
        if opts.keep {
            println!("kept {}", dir.display());
        }
        r
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "parley-demo: error: {}",
                parley_net::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
