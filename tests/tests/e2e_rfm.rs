//! End-to-end RFM segments through the in-process federation: a transaction table with many
//! rows per customer, released per R × F × M cell with person-level DP, charged to the ledger;
//! refusals for a bad job, a missing column and a policy that does not allow the kind.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use parley_proto::JobState;
use parley_tests::harness::{Federation, NodeSetup, budget_toml, csv_dataset};

const JOB: &str = include_str!("../../jobs/examples/job-rfm.toml");

/// The example's buckets, written out independently of the production code: index of the
/// first edge `x` does not exceed, else the open last bucket.
fn bucket<T: PartialOrd>(x: T, edges: &[T]) -> u32 {
    edges.iter().position(|e| x <= *e).unwrap_or(edges.len()) as u32
}

/// 240 customers with 1 to 9 purchases each, the last one `3 i mod 400` days before the
/// period's last day (some before the period: those rows do not count), amounts 5 to 54;
/// returns the CSV and the true number of persons per cell.
fn transactions() -> (String, BTreeMap<(u32, u32, u32), u32>) {
    const DAY: i64 = 86_400;
    let last_day = 1_796_083_200 - DAY; // 2026-11-30, the period's last day
    let start = 1_764_547_200; // 2025-12-01
    let mut csv = String::from("order,customer,email,bought_at,amount\n");
    let mut truth = BTreeMap::new();
    let mut order = 0;
    for i in 0..240i64 {
        let purchases = 1 + i % 9;
        let days = (3 * i) % 400;
        let amount = 5 + i % 50;
        let (mut counted, mut spend) = (0, 0);
        for j in 0..purchases {
            // The last purchase is `days` back; earlier ones 7 days apart before it.
            let t = last_day - (days + 7 * j) * DAY;
            let date = time::OffsetDateTime::from_unix_timestamp(t).unwrap().date();
            csv.push_str(&format!("o{order},c{i},c{i}@example.com,{date},{amount}\n"));
            order += 1;
            if t >= start {
                counted += 1;
                spend += amount;
            }
        }
        if counted > 0 {
            let cell = (
                bucket(days as u32, &[30, 90, 180]),
                bucket(counted as u32, &[1, 2, 5]),
                bucket(spend.min(5000) as f64, &[50.0, 200.0, 1000.0]),
            );
            *truth.entry(cell).or_insert(0) += 1;
        }
    }
    (csv, truth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_cells_count_persons_not_rows_within_their_noise() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let (csv, truth) = transactions();
    let dataset = csv_dataset(
        &tmp.path().join("data"),
        "purchases",
        "order",
        &csv,
        &[
            ("email", "email"),
            ("bought_at", "date"),
            ("amount", "value"),
        ],
        "person_column = \"customer\"\n",
    )
    .unwrap()
        + &budget_toml(100.0);
    let policy = "[[rule]]\npartners = [\"*\"]\nkinds = [\"rfm\"]\ndatasets = [\"purchases\"]\n";
    let mut fed = Federation::start(
        tmp.path(),
        vec![NodeSetup::new("brand", dataset, policy.into())],
    )
    .await
    .unwrap();

    // A generous epsilon, so that every released count is within a few persons of the truth.
    let text = JOB
        .replace("mean_epsilon = 0.5", "mean_epsilon = 20.0")
        .replace("\nepsilon = 0.5", "\nepsilon = 20.0")
        .replace("min_count = 10", "min_count = 0");
    let spec = parley_jobs::parse_job_toml(&text, "job-rfm.toml").unwrap();
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let r = job.result.unwrap().rfm().cloned().unwrap();
    assert_eq!(r.cells.len(), 64);
    let noise = r.count_noise.unwrap();
    assert_eq!(noise.sensitivity, 1.0);
    let mut persons = 0.0;
    for c in &r.cells {
        let want = truth
            .get(&(c.recency, c.frequency, c.monetary))
            .copied()
            .unwrap_or(0) as f64;
        assert!(
            (c.count - want).abs() <= 4.0 * noise.accuracy95,
            "cell {:?}: released {}, truth {want} (±{})",
            (c.recency, c.frequency, c.monetary),
            c.count,
            noise.accuracy95
        );
        persons += c.count;
    }
    // Persons, not rows: about 240 persons (of 1,200 rows) across the cells.
    let people: u32 = truth.values().sum();
    assert!((persons - f64::from(people)).abs() <= 64.0 * 4.0 * noise.accuracy95);
    assert!(people < 240 && people > 150, "{people}");
    assert_eq!(fed.spent_epsilon("brand", "purchases").unwrap(), 40.0);

    // Bad edges are refused at submit; nothing is charged.
    let bad =
        parley_jobs::parse_job_toml(&JOB.replace("[30, 90, 180]", "[90, 30]"), "job-rfm.toml");
    assert!(bad.unwrap_err().to_string().contains("strictly increasing"));
    // A date column the dataset does not have is refused at the offer.
    let missing = parley_jobs::parse_job_toml(
        &JOB.replace("\"bought_at\"", "\"shipped_at\""),
        "job-rfm.toml",
    )
    .unwrap();
    let job = fed.run_job(missing).await.unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason.contains("no date column 'shipped_at'"),
        "{}",
        job.reason
    );
    // A policy without the kind refuses it.
    fed.stop_node("brand").await.unwrap();
    let dp_only = "[[rule]]\npartners = [\"*\"]\nkinds = [\"dp_stats\"]\ndatasets = [\"*\"]\n";
    fed.start_node_with_policy("brand", dp_only).unwrap();
    fed.wait_connected(&["brand".into()], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let spec = parley_jobs::parse_job_toml(JOB, "job-rfm.toml").unwrap();
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason
            .contains("allows kinds dp_stats only, job is rfm"),
        "{}",
        job.reason
    );
    assert_eq!(fed.spent_epsilon("brand", "purchases").unwrap(), 40.0);
    fed.shutdown().await.unwrap();
}
