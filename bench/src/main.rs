//! `parley-bench`: end-to-end benchmarks of a Parley federation running in this process.
//!
//! `parley-bench psi --sizes 10000,100000,1000000 [--mode match|cardinality] [--overlap 0.5]`
//! runs one PSI job per size between two nodes (each with exactly `n` emails), checks the
//! result against the known overlap, then times the raw elliptic-curve work on the same inputs
//! and prints end-to-end / raw ratios and peak RSS.
//!
//! `parley-bench sum --sizes 100000,1000000 [--overlap 0.5] [--epsilon 1000]` runs one
//! intersection-sum job per size (P2 = node `a` with an `amount` column, P1 = node `b`),
//! checks the noisy sum against the known clamped truth, then times the raw group operations
//! (blinding, ElGamal encryption, homomorphic sum, decryption) on the same inputs. See
//! `BENCHMARKS.md`.
//!
//! `parley-bench lift --sizes 100000,1000000 [--overlap 0.5] [--epsilon 1000] [--in-process]`
//! runs one conversion-lift job per size (P1 = node `b`, the publisher, with a test/control
//! `arm` column; P2 = node `a`, the brand, with `conversions` and `revenue`; 2 arms × 3 summed
//! columns), each node in its own child process by default (the hidden `node-process`
//! subcommand), checks every released cell against the known truth, then times the raw group
//! operations (blinding, re-blinding, ElGamal encryption of 3 values per person, per-arm sums,
//! decryption) on the same inputs and prints end-to-end / raw ratios, CPU and each process's
//! peak RSS.
//!
//! `parley-bench secagg --nodes 10,50,100 --len 10000,100000 [--seed 1]` runs one secure_sum
//! job per (n, m) over `n` test-driven participants with `m`-word vectors, checks the exact
//! sum, then times the same protocol in-process and the PRG mask expansion it requires.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use parley_bench::lift::{LiftBenchOptions, run_lift_bench, serve_node};
use parley_bench::psi::{
    ProbeRole, PsiBenchOptions, SumBenchOptions, probe_role, run_psi_bench, run_sum_bench,
};
use parley_bench::secagg::{SecAggBenchOptions, run_secagg_bench};
use parley_proto::PsiMode;

#[derive(Parser)]
#[command(
    name = "parley-bench",
    about = "End-to-end benchmarks of an in-process Parley federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Two-party PSI: end-to-end time vs. the raw EC work on the same inputs.
    Psi {
        /// Records (= identifiers) per party, comma-separated; one run each.
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<usize>,
        /// PSI mode.
        #[arg(long, value_enum, default_value_t = Mode::Match)]
        mode: Mode,
        /// Fraction of each party's identifiers the other also holds (0..=1).
        #[arg(long, default_value_t = 0.5)]
        overlap: f64,
        /// `[limits] batch_points` for both nodes (default: the node default).
        #[arg(long)]
        batch_points: Option<u32>,
        /// Skip the per-node memory probes (child processes).
        #[arg(long)]
        no_node_memory: bool,
    },
    /// Intersection-sum (PSI `sum` mode): end-to-end time vs. the raw group operations.
    Sum {
        /// Records (= identifiers) per party, comma-separated; one run each.
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<usize>,
        /// Fraction of each party's identifiers the other also holds (0..=1).
        #[arg(long, default_value_t = 0.5)]
        overlap: f64,
        /// Laplace epsilon of the sum and, separately, of the count (large: tiny noise).
        #[arg(long, default_value_t = 1000.0)]
        epsilon: f64,
        /// `[limits] batch_points` for both nodes (default: the node default).
        #[arg(long)]
        batch_points: Option<u32>,
        /// Skip timing a fresh discrete-log table build (informational, ~64 MiB).
        #[arg(long)]
        no_table_build: bool,
    },
    /// Conversion lift (2 arms, 3 columns): end-to-end time vs. the raw group operations.
    Lift {
        /// People per side, comma-separated; one run each.
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<usize>,
        /// Fraction of each side's people the other side also holds (0..=1).
        #[arg(long, default_value_t = 0.5)]
        overlap: f64,
        /// The whole job's Laplace epsilon, split over the counts and 3 columns (large: tiny
        /// noise).
        #[arg(long, default_value_t = 1000.0)]
        epsilon: f64,
        /// `[limits] batch_points` for both nodes (default: the node default).
        #[arg(long)]
        batch_points: Option<u32>,
        /// Run both nodes in this process (one RSS figure) instead of one process each.
        #[arg(long)]
        in_process: bool,
    },
    /// Secure aggregation: end-to-end time vs. the PRG mask expansion it requires.
    Secagg {
        /// Participants, comma-separated; one run per (nodes, len).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<usize>,
        /// Vector lengths (even: a count and a sum per category), comma-separated.
        #[arg(long = "len", value_delimiter = ',', required = true)]
        lens: Vec<usize>,
        /// Seed of the participants' input vectors.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Internal: one node's PSI memory, measured in its own process (used by `psi`).
    #[command(hide = true)]
    ProbeRole {
        #[arg(long)]
        csv: std::path::PathBuf,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long, value_enum)]
        mode: Mode,
    },
    /// Internal: one node of `lift`, run in its own process until stdin closes.
    #[command(hide = true)]
    NodeProcess {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Receiver,
    Sender,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Match,
    Cardinality,
}

/// The benchmark to run.
enum Bench {
    Psi(PsiBenchOptions),
    Sum(SumBenchOptions),
    Lift(LiftBenchOptions),
    /// A `lift` node in this process (`node-process`).
    Node(std::path::PathBuf),
    SecAgg(SecAggBenchOptions),
}

fn main() -> ExitCode {
    parley_net::install_crypto_provider();
    parley_net::init_tracing("warn");
    let cli = Cli::parse();
    let psi_mode = |m: Mode| match m {
        Mode::Match => PsiMode::Match,
        Mode::Cardinality => PsiMode::Cardinality,
    };
    let bench = match cli.command {
        Command::Psi {
            sizes,
            mode,
            overlap,
            batch_points,
            no_node_memory,
        } => Bench::Psi(PsiBenchOptions {
            sizes,
            mode: psi_mode(mode),
            overlap,
            batch_points,
            node_memory: !no_node_memory,
        }),
        Command::Sum {
            sizes,
            overlap,
            epsilon,
            batch_points,
            no_table_build,
        } => Bench::Sum(SumBenchOptions {
            sizes,
            overlap,
            epsilon,
            batch_points,
            table_build: !no_table_build,
        }),
        Command::Lift {
            sizes,
            overlap,
            epsilon,
            batch_points,
            in_process,
        } => Bench::Lift(LiftBenchOptions {
            sizes,
            overlap,
            epsilon,
            batch_points,
            in_process,
        }),
        Command::NodeProcess { config } => Bench::Node(config),
        Command::Secagg { nodes, lens, seed } => {
            Bench::SecAgg(SecAggBenchOptions { nodes, lens, seed })
        }
        Command::ProbeRole { csv, role, mode } => {
            let role = match role {
                Role::Receiver => ProbeRole::Receiver,
                Role::Sender => ProbeRole::Sender,
            };
            return match probe_role(&csv, role, psi_mode(mode)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "parley-bench probe-role: error: {}",
                        parley_net::error_chain(e.as_ref())
                    );
                    ExitCode::FAILURE
                }
            };
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parley-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = match &bench {
        Bench::Psi(opts) => rt.block_on(run_psi_bench(opts)).map(|_| ()),
        Bench::Sum(opts) => rt.block_on(run_sum_bench(opts)).map(|_| ()),
        Bench::Lift(opts) => rt.block_on(run_lift_bench(opts)).map(|_| ()),
        Bench::Node(config) => rt.block_on(serve_node(config)),
        Bench::SecAgg(opts) => rt.block_on(run_secagg_bench(opts)).map(|_| ()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "parley-bench: error: {}",
                parley_net::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
