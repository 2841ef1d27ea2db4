//! `parley-node`: the node daemon.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use parley_crypto::keys::NodeSecrets;
use parley_crypto::ledger::{self as crypto_ledger, audit, format_amount};
use parley_node::config::NodeConfig;
use parley_node::ledger::{BudgetStatus, Ledger};

/// Exit status of `ledger verify` when the ledger fails the audit.
const EXIT_AUDIT_FAILED: u8 = 2;

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
        /// Log format on stderr: text, or json (one object per line, for collectors).
        #[arg(long, default_value = "text")]
        log_format: parley_net::LogFormat,
    },
    /// Load the configuration, datasets and policy, print a report, and exit.
    Check {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
    /// Show each dataset's privacy budget: spent and remaining this period, and the ledger
    /// head. Safe to run while the node runs.
    Budget {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Export or verify the privacy-budget ledger. Safe to run while the node runs.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Write one dataset's ledger as JSON for auditors (`parleyctl audit`).
    Export {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
        /// The dataset whose ledger to export.
        #[arg(long)]
        dataset: String,
        /// The file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Audit one dataset's ledger with the node's own key: chain, signatures and budgets.
    /// Exit status 2 if it fails.
    Verify {
        /// Node configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
        /// The dataset whose ledger to verify.
        #[arg(long)]
        dataset: String,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "parley-node: error: {}",
                parley_net::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    parley_net::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_format } => {
            parley_net::init_tracing_as("info", log_format);
            let cfg = NodeConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    parley_net::stop_signal().await;
                    tracing::info!("stop signal received; shutting down");
                    stop.cancel();
                });
                parley_node::run(cfg, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
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
                for line in d.report().identifier_lines() {
                    println!("  {line}");
                }
            }
            println!("configuration, certificates, datasets and policy are valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Budget { config, json } => {
            let cfg = NodeConfig::load(&config)?;
            let statuses = open_ledger(&cfg, &config)?.status()?;
            if json {
                println!("{}", budget_json(&cfg, &statuses));
            } else {
                print!("{}", budget_text(&cfg, &statuses));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command:
                LedgerCommand::Export {
                    config,
                    dataset,
                    out,
                },
        } => {
            let cfg = NodeConfig::load(&config)?;
            let ledger = open_ledger(&cfg, &config)?;
            check_dataset(&cfg, &config, &ledger, &dataset)?;
            let key = node_public_key(&cfg)?;
            let export = ledger.export(&dataset, key)?;
            write_atomically(&out, export.to_json_pretty().as_bytes())
                .with_context(|| format!("cannot write the ledger export '{}'", out.display()))?;
            println!(
                "wrote {} ledger rows of dataset '{dataset}' to '{}'",
                export.rows.len(),
                out.display()
            );
            match export.head() {
                Some(head) => println!("head: {head}"),
                None => println!("head: none (nothing charged yet)"),
            }
            println!("node Ed25519 public key: {}", hex::encode(key));
            println!("{}", audit_advice(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: LedgerCommand::Verify { config, dataset },
        } => {
            let cfg = NodeConfig::load(&config)?;
            let ledger = open_ledger(&cfg, &config)?;
            check_dataset(&cfg, &config, &ledger, &dataset)?;
            let key = node_public_key(&cfg)?;
            let report = audit(&ledger.export(&dataset, key)?, &key, None);
            print!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_AUDIT_FAILED)
            })
        }
    }
}

/// Opens the node's ledger read-only (no keys: the CLI never charges).
fn open_ledger(cfg: &NodeConfig, config: &Path) -> anyhow::Result<Ledger> {
    if !cfg.state_dir.is_dir() {
        bail!(
            "state_dir '{}' does not exist, so this node has no ledger yet (nothing was charged); check state_dir in '{}'",
            cfg.state_dir.display(),
            config.display()
        );
    }
    Ok(Ledger::open(
        &cfg.ledger_path(),
        &cfg.name,
        None,
        cfg.budgets(),
    )?)
}

/// Fails unless `dataset` is configured or has rows in the ledger.
fn check_dataset(
    cfg: &NodeConfig,
    config: &Path,
    ledger: &Ledger,
    dataset: &str,
) -> anyhow::Result<()> {
    if cfg.dataset(dataset).is_some() || ledger.datasets()?.iter().any(|d| d == dataset) {
        return Ok(());
    }
    let names: Vec<&str> = cfg.datasets.iter().map(|d| d.name.as_str()).collect();
    bail!(
        "dataset '{}' is not declared in '{}' and has no ledger rows; configured datasets: {}",
        dataset.escape_debug(),
        config.display(),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

/// The node's Ed25519 public key, from `<state_dir>/node.secrets`.
fn node_public_key(cfg: &NodeConfig) -> anyhow::Result<[u8; 32]> {
    let path = cfg.state_dir.join(parley_node::runtime::SECRETS_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the node's keys '{}' (needed for the public key that signs the ledger); run this on the node's host with its node.toml",
            path.display()
        )
    })?;
    let secrets = NodeSecrets::from_bytes(&bytes).with_context(|| {
        format!(
            "the node's keys file '{}' is corrupt; restore it from backup",
            path.display()
        )
    })?;
    Ok(secrets.ed25519_public())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--out must name a file",
        ));
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The `budget` report as text: one block per dataset.
fn budget_text(cfg: &NodeConfig, statuses: &[BudgetStatus]) -> String {
    let mut out = String::new();
    for d in &cfg.datasets {
        let Some(s) = statuses.iter().find(|s| s.dataset == d.name) else {
            out.push_str(&format!(
                "dataset '{}': no [datasets.budget]; DP releases of it are refused\n\n",
                d.name
            ));
            continue;
        };
        let b = &s.budget;
        let period = match (s.period_start_ms, s.period_end_ms) {
            (Some(start), Some(end)) => format!(
                "{} (UTC), current period {} .. {}",
                b.period,
                crypto_ledger::format_utc_ms(start),
                crypto_ledger::format_utc_ms(end)
            ),
            _ => "never (one budget for all time)".to_owned(),
        };
        let head = s.head.map_or_else(
            || "none".to_owned(),
            |h| format!("seq {} hash {}…", h.seq, &hex::encode(h.hash)[..16]),
        );
        out.push_str(&format!(
            "dataset '{}'\n  budget:     epsilon {}  delta {}\n  refreshes:  {period}\n  spent:      epsilon {}  delta {}  ({} releases this period)\n  remaining:  epsilon {}  delta {}\n  ledger:     {} rows, head {head}\n\n",
            s.dataset,
            format_amount(b.epsilon),
            format_amount(b.delta),
            format_amount(s.spent_epsilon),
            format_amount(s.spent_delta),
            s.period_rows,
            format_amount(s.remaining_epsilon),
            format_amount(s.remaining_delta),
            s.rows,
        ));
    }
    out
}

/// The `budget` report as JSON.
fn budget_json(cfg: &NodeConfig, statuses: &[BudgetStatus]) -> String {
    let datasets: Vec<serde_json::Value> = statuses
        .iter()
        .map(|s| {
            serde_json::json!({
                "dataset": s.dataset,
                "budget": {
                    "epsilon": s.budget.epsilon,
                    "delta": s.budget.delta,
                    "period": s.budget.period.as_str(),
                },
                "period_start": s.period_start_ms.map(crypto_ledger::format_utc_ms),
                "period_end": s.period_end_ms.map(crypto_ledger::format_utc_ms),
                "spent": { "epsilon": s.spent_epsilon, "delta": s.spent_delta },
                "remaining": { "epsilon": s.remaining_epsilon, "delta": s.remaining_delta },
                "period_rows": s.period_rows,
                "rows": s.rows,
                "head": s.head.map(|h| serde_json::json!({
                    "seq": h.seq,
                    "hash": hex::encode(h.hash),
                })),
            })
        })
        .collect();
    let unbudgeted: Vec<&str> = cfg
        .datasets
        .iter()
        .filter(|d| d.budget.is_none())
        .map(|d| d.name.as_str())
        .collect();
    let doc = serde_json::json!({
        "node": cfg.name,
        "datasets": datasets,
        "datasets_without_budget": unbudgeted,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// What `ledger export` tells the operator to hand the auditor. The command it prints takes
/// neither the head nor the key from this export: a node operator holds the signing key and
/// could have rewritten the ledger, so the auditor checks against the head the coordinator
/// recorded and takes the key from the federation (`parleyctl nodes --keys`).
fn audit_advice(out: &std::path::Path) -> String {
    format!(
        "give the export to the auditor, who verifies it against the coordinator's record of \
         the head, with the node's key from the federation rather than from this output:\n  \
         parleyctl nodes --keys          # the node's Ed25519 key, checked against the CA\n  \
         parleyctl audit {} --node-key <KEY from parleyctl nodes --keys>",
        out.display()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_audit_advice_is_not_self_certifying() {
        let advice = super::audit_advice(std::path::Path::new("crm-ledger.json"));
        assert!(
            advice.contains("parleyctl audit crm-ledger.json --node-key <KEY"),
            "{advice}"
        );
        assert!(advice.contains("parleyctl nodes --keys"), "{advice}");
        assert!(
            !advice.contains("--head") && !advice.contains("--offline"),
            "{advice}"
        );
    }
}
