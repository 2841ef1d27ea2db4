//! `parley-coordinator`: the federation CA tool and the coordinator daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use parley_coordinator::CoordinatorConfig;
use parley_net::Role;

#[derive(Parser)]
#[command(
    name = "parley-coordinator",
    version,
    about = "Parley coordinator and federation CA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the federation certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run the coordinator.
    Run {
        /// Coordinator configuration file.
        #[arg(long, default_value = "coordinator.toml")]
        config: PathBuf,
        /// Listen address (overrides `listen` in the config).
        #[arg(long)]
        listen: Option<String>,
        /// Log format on stderr: text, or json (one object per line, for collectors).
        #[arg(long, default_value = "text")]
        log_format: parley_net::LogFormat,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new federation CA (writes ca.pem and ca.key into --dir).
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// CA common name.
        #[arg(long, default_value = "Parley federation CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate for a coordinator, node, analyst or auditor (writes NAME.pem, NAME.key).
    Issue {
        /// Directory holding ca.pem and ca.key; the new files go there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Role bound into the certificate.
        #[arg(long, value_parser = ["coordinator", "node", "analyst", "auditor"])]
        role: String,
        /// Name bound into the certificate ([a-z0-9_-], at most 64 characters).
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses (coordinator certificates: how nodes reach it).
        #[arg(long)]
        san: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "parley-coordinator: error: {}",
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
        Command::Ca { command } => ca(command),
        Command::Run {
            config,
            listen,
            log_format,
        } => {
            parley_net::init_tracing_as("info", log_format);
            let mut cfg = CoordinatorConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&cfg.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen on '{}' (set listen in {} or --listen)",
                            cfg.listen,
                            config.display()
                        )
                    })?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    parley_net::stop_signal().await;
                    tracing::info!("stop signal received; shutting down");
                    stop.cancel();
                });
                parley_coordinator::run(cfg, listener, shutdown).await?;
                Ok(())
            })
        }
    }
}

fn ca(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir, name, days } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create directory '{}'", dir.display()))?;
            let (cert, key) = parley_net::ca::init_ca(&name, days)?;
            let (c, k) = parley_net::ca::write_pem_files(&dir, "ca", &cert, &key)?;
            println!(
                "wrote {} and {} (keep the key offline)",
                c.display(),
                k.display()
            );
            Ok(())
        }
        CaCommand::Issue {
            dir,
            role,
            name,
            san,
            days,
        } => {
            let role: Role = role.parse()?;
            let ca_cert = read(&dir.join("ca.pem"))?;
            let ca_key = read(&dir.join("ca.key"))?;
            let now = time::OffsetDateTime::now_utc();
            let (cert, key) = parley_net::ca::issue(
                &ca_cert,
                &ca_key,
                role,
                &name,
                &san,
                now - time::Duration::minutes(5),
                now + time::Duration::days(i64::from(days)),
            )?;
            let (c, k) = parley_net::ca::write_pem_files(&dir, &name, &cert, &key)?;
            println!(
                "wrote {} and {} for {} '{}'",
                c.display(),
                k.display(),
                role.as_str(),
                name
            );
            Ok(())
        }
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read '{}'; run `parley-coordinator ca init --dir {}` first",
            path.display(),
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    })
}
