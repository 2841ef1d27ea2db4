//! The Parley demo: a whole federation on loopback with generated data.
//!
//! Starts a coordinator and three nodes (brand, publisher, retailer) in this process over
//! mutual TLS with a fresh CA, generates messy customer lists with known overlaps, runs PSI
//! match and cardinality jobs between pairs and prints each result next to the ground truth.
//! Then the differentially private side: a conversion measurement (publisher exposure list ×
//! brand purchases → noisy revenue of exposed users, intersection-sum), a DP segment report of
//! the brand's customers, and every dataset's privacy budget left afterwards. Finally a
//! secure aggregation across eight retailers, two of which crash mid-protocol: the brand's
//! analyst still gets the exact per-region totals of the retailers whose inputs arrived. Last,
//! a campaign (`crate::campaign`): the conversion lift of a randomised test/control campaign
//! with its 95 % interval next to the truth, and the segmented audience overlap.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_proto::{JobState, PsiMode};

use crate::r#gen::{FederationSpec, Generated, generate};
use crate::harness::{
    Federation, NodeSetup, budget_toml, dp_stats_spec, open_policy, psi_spec, read_match_keys,
    sum_spec,
};

/// Privacy budget (total epsilon) of every demo dataset.
pub const DEMO_BUDGET: f64 = 10.0;

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Records per party.
    pub records: usize,
    /// Keep the working directory (certificates, configs, outputs) instead of deleting it.
    pub keep: bool,
    /// Where each job's HTML report is written (kept whether or not `keep` is set).
    pub reports: PathBuf,
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
    let mut fed = Federation::start(dir, setups).await?;
    fed.reports = Some(opts.reports.clone());
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
            .and_then(|r| r.psi().cloned())
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
    dp_scenarios(&fed, &g).await?;
    fed.shutdown().await?;
    secure_sum_scenario(&dir.join("secure-sum"), opts.records, &opts.reports).await?;
    crate::campaign::run(
        &dir.join("campaign"),
        crate::campaign::DEMO_SIZE,
        Some(&opts.reports),
    )
    .await?;
    println!(
        "\nHTML reports (charts, parameters, budgets charged) in {}",
        opts.reports.display()
    );
    println!("\ntotal demo time {:.1} s", t0.elapsed().as_secs_f64());
    if rows
        .iter()
        .any(|r| r.released != r.truth || r.exact_records == Some(false))
    {
        bail!("a released result differs from the ground truth");
    }
    println!(
        "every exact result equals the ground truth; every noisy one is within its noise bound"
    );
    Ok(rows)
}

fn node(g: &Generated, name: &str, partners: &[&str], dataset: &str) -> NodeSetup {
    NodeSetup::new(
        name,
        g.dataset_toml(name) + &budget_toml(DEMO_BUDGET),
        open_policy(partners, &[dataset]),
    )
}

/// Retailers of the secure-aggregation scenario.
const RETAILERS: usize = 8;

/// Eight retailers (six nodes plus two driven from here so they can crash at chosen points)
/// sum their per-region sales; retailer-7 crashes after sending its key shares (round 1),
/// retailer-8 after sending its masked input (round 2).
async fn secure_sum_scenario(dir: &Path, records: usize, reports: &Path) -> anyhow::Result<()> {
    use crate::rogue::{Rogue, SecAggPlan};
    println!("\nsecure aggregation: per-region sales across {RETAILERS} retailers");
    println!("  (Bonawitz et al.; the coordinator learns only the sum; retailer-7 crashes after");
    println!("   round 1, retailer-8 after round 2)");
    let names: Vec<String> = (1..=RETAILERS).map(|i| format!("retailer-{i}")).collect();
    let spec = crate::r#gen::FederationSpec {
        seed: 0x5345_4341,
        parties: names
            .iter()
            .map(|n| crate::r#gen::PartySpec {
                node: n.clone(),
                dataset: "sales".into(),
                records: (records / 20).max(500),
                style: crate::r#gen::IdStyle::EmailAndPhone,
            })
            .collect(),
        overlaps: vec![],
    };
    std::fs::create_dir_all(dir)?;
    let g = {
        let data = dir.join("data");
        tokio::task::spawn_blocking(move || generate(&data, &spec))
            .await
            .context("data generator panicked")??
    };
    let setups = names
        .iter()
        .take(RETAILERS - 2)
        .map(|n| {
            let others: Vec<String> = names.iter().filter(|o| *o != n).cloned().collect();
            NodeSetup::new(
                n,
                g.dataset_toml(n) + &crate::harness::budget_toml_with_delta(DEMO_BUDGET, 1e-3),
                crate::harness::secure_sum_policy(&others, "sales"),
            )
        })
        .collect();
    let mut fed = Federation::start(dir, setups).await?;
    fed.reports = Some(reports.to_path_buf());
    let cats = ["north", "south", "east", "west"];
    let vector = |node: &str| -> Vec<u64> {
        let t = g.truth_segments(node);
        cats.iter()
            .flat_map(|c| {
                let s = t.get(*c).copied().unwrap_or_default();
                [s.rows, s.sum_cents as u64]
            })
            .collect()
    };
    let mut crashers = Vec::new();
    for (name, plan) in [
        ("retailer-7", SecAggPlan::DropAfter(1)),
        ("retailer-8", SecAggPlan::DropAfter(2)),
    ] {
        crashers.push((Rogue::connect(&fed, name).await?, plan, vector(name)));
    }
    let parts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "sales")).collect();
    let t = Instant::now();
    let job = fed
        .submit(crate::harness::secure_sum_spec(&parts, &cats))
        .await?;
    let mut runs = Vec::new();
    for (mut rogue, plan, input) in crashers {
        let id = job.id.clone();
        runs.push(tokio::spawn(async move {
            let offer = rogue.accept_next_offer().await?;
            rogue.wait_start(&id).await?;
            rogue.run_secagg(&offer, &input, plan).await?;
            // Keep the connection object until the job ends, so the last message already
            // queued is delivered before the link closes.
            anyhow::Ok(rogue)
        }));
    }
    let mut keep = Vec::new();
    for r in runs {
        keep.push(r.await.context("crashing retailer task")??);
    }
    let job = fed.wait(&job.id, Duration::from_secs(120)).await?;
    drop(keep);
    if job.state() != JobState::Succeeded {
        bail!("secure aggregation ended {:?}: {}", job.state(), job.reason);
    }
    let r = job
        .result
        .and_then(|r| r.secure_sum().cloned())
        .context("succeeded secure_sum job without a result")?;
    println!("  contributors: {}", r.contributors.join(", "));
    for d in &r.dropped {
        println!("  dropped out:  {d}");
    }
    println!(
        "  (a retailer that crashed after sending its masked input is still in the sum: the\n   \
         survivors reveal its self-mask seed; one that crashed earlier is left out)"
    );
    let contributed: Vec<Vec<u64>> = r.contributors.iter().map(|n| vector(n)).collect();
    println!(
        "  {:<10} {:>10} {:>10} {:>16} {:>16}",
        "region", "rows", "truth", "sales", "truth"
    );
    for (category, got, truth) in region_rows(&r.categories, &contributed) {
        if got.0 != truth.0 || (got.1 - truth.1).abs() > 1e-6 {
            bail!("secure sum of {category} differs from the truth");
        }
    }
    println!(
        "  exact totals of the {} retailers whose inputs arrived ({:.2} s)",
        r.contributors.len(),
        t.elapsed().as_secs_f64()
    );

    // The same totals with distributed DP over the six node-run retailers: each adds its share
    // of discrete Gaussian noise before masking, so nobody ever sees the un-noised totals.
    let six: Vec<(&str, &str)> = parts.iter().take(RETAILERS - 2).copied().collect();
    let spec = crate::harness::with_distributed_dp(
        crate::harness::secure_sum_spec(&six, &cats),
        1.0,
        1e-6,
    );
    let job = fed.run_job(spec).await?;
    if job.state() != JobState::Succeeded {
        bail!(
            "DP secure aggregation ended {:?}: {}",
            job.state(),
            job.reason
        );
    }
    let r = job
        .result
        .and_then(|r| r.secure_sum().cloned())
        .context("succeeded secure_sum job without a result")?;
    let (cn, sn) = (r.noise.unwrap_or_default(), r.sum_noise.unwrap_or_default());
    println!(
        "\n  with distributed DP (epsilon 1, delta 1e-6, Gaussian shares; ±95%: rows {:.0}, sales {:.2})",
        cn.accuracy95, sn.accuracy95
    );
    let six_vectors: Vec<Vec<u64>> = names
        .iter()
        .take(RETAILERS - 2)
        .map(|n| vector(n))
        .collect();
    for (category, got, truth) in region_rows(&r.categories, &six_vectors) {
        check(&category, got.0, truth.0, cn.accuracy95)?;
        check(&category, got.1, truth.1, sn.accuracy95)?;
    }
    fed.shutdown().await?;
    Ok(())
}

/// A released region: name, (rows, sales) released, (rows, sales) true.
type RegionRow = (String, (f64, f64), (f64, f64));

/// Prints one line per released region — (rows, sales) released next to the truth summed from
/// `vectors` (per category: rows, then cents) — and returns them.
fn region_rows(categories: &[parley_proto::CategoryStats], vectors: &[Vec<u64>]) -> Vec<RegionRow> {
    categories
        .iter()
        .enumerate()
        .map(|(c, cat)| {
            let rows: u64 = vectors.iter().map(|v| v[2 * c]).sum();
            let cents: u64 = vectors.iter().map(|v| v[2 * c + 1]).sum();
            let got = (
                cat.values.first().copied().unwrap_or(0.0),
                cat.values.get(1).copied().unwrap_or(0.0),
            );
            let truth = (rows as f64, cents as f64 / 100.0);
            println!(
                "  {:<10} {:>10.0} {:>10} {:>16.2} {:>16.2}",
                cat.category, got.0, rows, got.1, truth.1
            );
            (cat.category.clone(), got, truth)
        })
        .collect()
}

/// Fails if a released value is further than 6 × its 95% bound from the truth: noise that
/// large has probability ~1e-8, so it means a broken release, not bad luck.
pub(crate) fn check(what: &str, released: f64, truth: f64, accuracy95: f64) -> anyhow::Result<()> {
    if (released - truth).abs() > 6.0 * accuracy95 {
        bail!(
            "{what}: released {released} is implausibly far from the truth {truth} (95% bound ±{accuracy95})"
        );
    }
    Ok(())
}

/// The DP scenarios: conversion measurement, segment report, budgets left.
async fn dp_scenarios(fed: &Federation, g: &Generated) -> anyhow::Result<()> {
    println!("\nconversion measurement: revenue of the publisher's exposed users at the brand");
    println!("  (intersection-sum: amounts clamped to [0, 500], Laplace noise, epsilon 1 + 1)");
    let t = Instant::now();
    let job = fed
        .run_job(sum_spec(
            ("brand", "crm"),
            "email",
            ("publisher", "subscribers"),
            &["email_sha256"],
            0.0,
            500.0,
            1.0,
        ))
        .await?;
    if job.state() != JobState::Succeeded {
        bail!("conversion job ended {:?}: {}", job.state(), job.reason);
    }
    let sum = job
        .result
        .and_then(|r| r.psi().cloned())
        .and_then(|p| p.sum)
        .context("succeeded sum job without a sum")?;
    let truth = g.truth_sum("brand", "publisher", 0, 50_000);
    let (sn, cn) = (
        sum.sum_noise.unwrap_or_default(),
        sum.count_noise.unwrap_or_default(),
    );
    println!(
        "  {:<28} {:>14} {:>14} {:>12}",
        "", "released", "truth", "±95%"
    );
    println!(
        "  {:<28} {:>14.2} {:>14.2} {:>12.2}",
        "revenue of exposed buyers",
        sum.noisy_sum,
        truth.sum_cents as f64 / 100.0,
        sn.accuracy95
    );
    println!(
        "  {:<28} {:>14} {:>14} {:>12.0}",
        "exposed buyers", sum.noisy_count, truth.count, cn.accuracy95
    );
    println!("  ({:.2} s)", t.elapsed().as_secs_f64());
    check(
        "revenue",
        sum.noisy_sum,
        truth.sum_cents as f64 / 100.0,
        sn.accuracy95,
    )?;
    check(
        "buyers",
        sum.noisy_count as f64,
        truth.count as f64,
        cn.accuracy95,
    )?;

    println!("\nDP segment report of the brand's customers (count and revenue per region)");
    println!("  (declared categories north, south, east, west; epsilon 0.5 + 0.5, Laplace)");
    let job = fed
        .run_job(dp_stats_spec(
            "brand",
            "crm",
            &["north", "south", "east", "west"],
            false,
            0.5,
            0.5,
        ))
        .await?;
    if job.state() != JobState::Succeeded {
        bail!("segment report ended {:?}: {}", job.state(), job.reason);
    }
    let r = job
        .result
        .and_then(|r| r.dp_stats().cloned())
        .context("succeeded dp_stats job without a result")?;
    let truth = g.truth_segments("brand");
    let acc = |i: usize| {
        r.measures
            .get(i)
            .and_then(|m| m.noise.as_ref())
            .map_or(0.0, |n| n.accuracy95)
    };
    println!(
        "  {:<10} {:>10} {:>10} {:>8} {:>14} {:>14} {:>10}",
        "region", "customers", "truth", "±95%", "revenue", "truth", "±95%"
    );
    for c in &r.categories {
        let t = truth.get(&c.category).copied().unwrap_or_default();
        let (count, revenue) = (
            c.values.first().copied().unwrap_or(0.0),
            c.values.get(1).copied().unwrap_or(0.0),
        );
        // Amounts are below the upper bound 1000, so clamping changes nothing here.
        let true_revenue = t.sum_cents as f64 / 100.0;
        println!(
            "  {:<10} {:>10.0} {:>10} {:>8.0} {:>14.2} {:>14.2} {:>10.0}",
            c.category,
            count,
            t.rows,
            acc(0),
            revenue,
            true_revenue,
            acc(1)
        );
        check(&c.category, count, t.rows as f64, acc(0))?;
    }

    println!("\nprivacy budget left (each dataset: epsilon {DEMO_BUDGET})");
    for (node, _) in [
        ("brand", "crm"),
        ("publisher", "subscribers"),
        ("retailer", "loyalty"),
    ] {
        let cfg = parley_node::config::NodeConfig::load(&fed.node_config_path(node))?;
        let ledger =
            parley_node::ledger::Ledger::open(&cfg.ledger_path(), node, None, cfg.budgets())?;
        for s in ledger.status()? {
            println!(
                "  {:<10} {:<12} spent {:>5} in {} releases, remaining {:>5}",
                node, s.dataset, s.spent_epsilon, s.rows, s.remaining_epsilon
            );
        }
    }
    Ok(())
}
