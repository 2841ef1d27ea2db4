//! The Parley demo: a whole federation on loopback with generated data.
//!
//! Starts a coordinator and three nodes (brand, publisher, retailer) in this process over
//! mutual TLS with a fresh CA, generates messy customer lists with known overlaps, runs PSI
//! match and cardinality jobs between pairs and prints each result next to the ground truth.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_proto::{JobState, PsiMode};

use crate::r#gen::{FederationSpec, Generated, generate};
use crate::harness::{Federation, NodeSetup, open_policy, psi_spec, read_match_keys};

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Records per party.
    pub records: usize,
    /// Keep the working directory (certificates, configs, outputs) instead of deleting it.
    pub keep: bool,
}

/// One demo job and how it compared with the truth.
#[derive(Clone, Debug)]
pub struct DemoRow {
    /// What ran.
    pub label: String,
    /// Count the protocol released.
    pub released: u64,
    /// Ground truth.
    pub truth: u64,
    /// For match jobs: the released record set equals the true set.
    pub exact_records: Option<bool>,
    /// End-to-end job time.
    pub elapsed: Duration,
}

/// Runs the demo in `dir`, printing progress to stdout; returns the rows it printed.
pub async fn run_demo(dir: &Path, opts: &DemoOptions) -> anyhow::Result<Vec<DemoRow>> {
    let t0 = Instant::now();
    println!("Parley demo: a coordinator and three nodes on loopback, mutual TLS 1.3, fresh CA");
    println!("working directory: {}", dir.display());
    let spec = FederationSpec::demo(opts.records);
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let g = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || generate(&data_dir, &spec))
            .await
            .context("data generator panicked")??
    };
    for p in &g.parties {
        println!(
            "  generated {:>9} records for {:<10} ({})",
            p.records,
            p.node,
            p.csv_path.display()
        );
    }
    let setups = vec![
        node(&g, "brand", &["publisher", "retailer"], "crm"),
        node(&g, "publisher", &["brand", "retailer"], "subscribers"),
        node(&g, "retailer", &["brand", "publisher"], "loyalty"),
    ];
    let t_start = Instant::now();
    let fed = Federation::start(dir, setups).await?;
    println!(
        "federation up in {:.1} s (datasets normalised and hashed at each node)\n",
        t_start.elapsed().as_secs_f64()
    );

    let jobs = [
        (
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
        ),
        (
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("retailer", "loyalty"),
        ),
        (
            PsiMode::Cardinality,
            ("publisher", "subscribers"),
            ("retailer", "loyalty"),
        ),
        (PsiMode::Match, ("retailer", "loyalty"), ("brand", "crm")),
    ];
    let mut rows = Vec::new();
    println!(
        "{:<44} {:>10} {:>10} {:>8} {:>9}",
        "job", "released", "truth", "records", "time"
    );
    for (mode, r, s) in jobs {
        let label = format!(
            "{} {} <- {}",
            match mode {
                PsiMode::Match => "match      ",
                _ => "cardinality",
            },
            r.0,
            s.0
        );
        let t = Instant::now();
        let job = fed.run_job(psi_spec(mode, r, s, 0)).await?;
        let elapsed = t.elapsed();
        if job.state() != JobState::Succeeded {
            bail!("job {label} ended {:?}: {}", job.state(), job.reason);
        }
        let psi = job
            .result
            .and_then(|r| r.psi)
            .context("succeeded job without a PSI result")?;
        let truth = g.truth_match(r.0, s.0, None);
        let exact = if mode == PsiMode::Match {
            Some(read_match_keys(&psi.match_output)? == truth)
        } else {
            None
        };
        let row = DemoRow {
            label,
            released: psi.intersection_records,
            truth: truth.len() as u64,
            exact_records: exact,
            elapsed,
        };
        println!(
            "{:<44} {:>10} {:>10} {:>8} {:>8.2}s",
            row.label,
            row.released,
            row.truth,
            match row.exact_records {
                Some(true) => "exact",
                Some(false) => "DIFFER",
                None => "-",
            },
            row.elapsed.as_secs_f64()
        );
        rows.push(row);
    }
    fed.shutdown().await?;
    println!("\ntotal demo time {:.1} s", t0.elapsed().as_secs_f64());
    if rows
        .iter()
        .any(|r| r.released != r.truth || r.exact_records == Some(false))
    {
        bail!("a released result differs from the ground truth");
    }
    println!("every released result equals the ground truth");
    Ok(rows)
}

fn node(g: &Generated, name: &str, partners: &[&str], dataset: &str) -> NodeSetup {
    NodeSetup::new(
        name,
        g.dataset_toml(name),
        open_policy(partners, &[dataset]),
    )
}
