//! `parley-node`: the node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use parley_node::config::NodeConfig;

#[derive(Parser)]
#[command(
    name = "parley-node",
    version,
    about = "Parley node: runs jobs beside your data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the coordinator and serve jobs until interrupted.
    Run {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
    /// Load the configuration, datasets and policy, print a report, and exit.
    Check {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "parley-node: error: {}",
                parley_net::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    parley_net::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            parley_net::init_tracing("info");
            let cfg = NodeConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                parley_node::run(cfg, shutdown).await
            })?;
            Ok(())
        }
        Command::Check { config } => {
            let cfg = NodeConfig::load(&config)?;
            let node = parley_node::Node::load(cfg)?;
            for d in node.datasets() {
                println!(
                    "dataset '{}': {} records\n{}",
                    d.name(),
                    d.len(),
                    d.report()
                );
            }
            println!("configuration, certificates, datasets and policy are valid");
            Ok(())
        }
    }
}
