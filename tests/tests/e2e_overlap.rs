//! End-to-end segmented overlap through the in-process federation over gRPC and mutual TLS:
//! a publisher with regions and a brand with loyalty tiers and two email columns per
//! customer. The released cells against the truth, the per-person bound, suppression, the
//! refusals (an undeclared label, a policy floor) and both ledgers' charges.

#![allow(clippy::unwrap_used)]

use parley_proto::{JobSpec, JobState, OverlapCell, OverlapResult};
use parley_tests::harness::{Federation, NodeSetup, budget_toml, csv_dataset};

const JOB: &str = include_str!("../../jobs/examples/job-overlap.toml");
const REGIONS: [&str; 2] = ["north", "south"];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// The truth: matched people per region × tier, and each side's people per segment.
struct Truth {
    cross: [[u64; 3]; 2],
    regions: [u64; 2],
    tiers: [u64; 3],
}

/// Publisher: people 0..4000 with `u{i}@example.com`, region i % 2. Brand: customers
/// 2000..7000, tier i % 3; one customer in four gives the shop a different primary email and
/// the publisher's one as a second email (so it matches through the second column), and
/// customers 2000..2100 have a second record with the same primary email (left out by the
/// bound of one record per identifier).
fn data() -> (String, String, Truth) {
    let mut publisher = String::from("id,email,region\n");
    let mut brand = String::from("id,email,email2,tier\n");
    let mut t = Truth {
        cross: [[0; 3]; 2],
        regions: [0; 2],
        tiers: [0; 3],
    };
    for i in 0..7000u64 {
        let (r, tier) = ((i % 2) as usize, (i % 3) as usize);
        if i < 4000 {
            publisher.push_str(&format!("p{i},u{i}@example.com,{}\n", REGIONS[r]));
            t.regions[r] += 1;
        }
        if i >= 2000 {
            let (email, email2) = if i % 4 == 0 {
                (format!("b{i}@shop.example"), format!("u{i}@example.com"))
            } else {
                (format!("u{i}@example.com"), format!("w{i}@other.example"))
            };
            brand.push_str(&format!("b{i},{email},{email2},{}\n", TIERS[tier]));
            if i < 2100 {
                brand.push_str(&format!("c{i},{email},,{}\n", TIERS[tier]));
            }
            t.tiers[tier] += 1;
            if i < 4000 {
                t.cross[r][tier] += 1;
            }
        }
    }
    (publisher, brand, t)
}

fn policy(partner: &str, dataset: &str, floor: u64) -> String {
    format!(
        "[[rule]]\npartners = [\"{partner}\"]\nkinds = [\"overlap\"]\ndatasets = [\"{dataset}\"]\n\
         min_intersection = {floor}\n"
    )
}

async fn federation(dir: &std::path::Path) -> Federation {
    let (publisher, brand, _) = data();
    let data_dir = dir.join("data");
    let audience = csv_dataset(
        &data_dir,
        "audience",
        "id",
        &publisher,
        &[("email", "email"), ("region", "segment")],
        "",
    )
    .unwrap()
        + &budget_toml(100.0);
    let customers = csv_dataset(
        &data_dir,
        "customers",
        "id",
        &brand,
        &[("email", "email"), ("email2", "email"), ("tier", "segment")],
        "",
    )
    .unwrap()
        + &budget_toml(100.0);
    Federation::start(
        dir,
        vec![
            NodeSetup::new("publisher", audience, policy("brand", "audience", 0)),
            NodeSetup::new("brand", customers, policy("publisher", "customers", 0)),
        ],
    )
    .await
    .unwrap()
}

/// The example job with `edits` applied to its text, on the brand's two email columns.
fn job(edits: &[(&str, &str)]) -> JobSpec {
    let mut text = JOB.replace("[\"email\", \"phone\"]", "[\"email\", \"email2\"]");
    for (from, to) in edits {
        assert!(text.contains(from), "the example has no '{from}'");
        text = text.replace(from, to);
    }
    parley_jobs::parse_job_toml(&text, "job-overlap.toml").unwrap()
}

async fn refused(fed: &Federation, spec: JobSpec, why: &str) {
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(job.reason.contains(why), "want '{why}': {}", job.reason);
}

async fn overlap(fed: &Federation, spec: JobSpec) -> OverlapResult {
    let done = fed.run_job(spec).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{}", done.reason);
    done.result.unwrap().overlap().cloned().unwrap()
}

/// Within four 95 % bounds (plus one for rounding) of the truth.
fn close(got: f64, want: u64, acc: f64) -> bool {
    (got - want as f64).abs() <= 4.0 * acc + 1.0
}

fn labels(c: &OverlapCell) -> (&str, &str) {
    (c.p1_segment.as_str(), c.p2_segment.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_cells_match_the_truth_within_their_noise() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path()).await;
    let (_, _, truth) = data();

    // A generous epsilon (10 per release), so every count is close to the truth.
    let r = overlap(
        &fed,
        job(&[
            ("epsilon = 1.0", "epsilon = 40.0"),
            ("min_cell = 100", "min_cell = 0"),
        ]),
    )
    .await;
    assert_eq!(
        (r.p1_segment_column.as_str(), r.p2_segment_column.as_str()),
        ("region", "tier")
    );
    // 5000 customers with two emails each; the 100 second records are left out.
    assert_eq!(r.p2_identifiers, 10_000);
    assert_eq!(r.p1_identifiers, 4000);
    assert_eq!(r.p2_dropped, 100);
    let count = r.count_noise.unwrap();
    let cross_noise = r.cross_noise.unwrap();
    // One customer holds two identifiers: each count moves by up to 2.
    assert_eq!(count.sensitivity, 2.0);
    let (acc, cross_acc) = (count.accuracy95, cross_noise.accuracy95);
    let (pop, p1_pop) = (r.population_noise.unwrap(), r.p1_population_noise.unwrap());
    // P1's people hold one identifier each; P2's up to two.
    assert_eq!((p1_pop.sensitivity, pop.sensitivity), (1.0, 2.0));
    assert!(p1_pop.scale < pop.scale, "{p1_pop:?} {pop:?}");
    let (pop_acc, p1_pop_acc) = (pop.accuracy95, p1_pop.accuracy95);

    let matched: u64 = truth.cross.iter().flatten().sum();
    let total = r.total.unwrap();
    assert_eq!(labels(&total), ("", ""));
    assert!(close(total.matched, matched, 2.0 * acc), "{total:?}");
    assert!(
        close(total.p1_population, 4000, 2.0 * p1_pop_acc),
        "{total:?}"
    );
    assert!(close(total.p2_population, 5000, 3.0 * pop_acc), "{total:?}");
    assert!((total.p1_match_rate - 0.5).abs() < 0.01, "{total:?}");
    assert!((total.p2_match_rate - 0.4).abs() < 0.01, "{total:?}");

    assert_eq!(r.by_p1.len(), 2);
    for (r_i, c) in r.by_p1.iter().enumerate() {
        assert_eq!(labels(c), (REGIONS[r_i], ""));
        let want: u64 = truth.cross[r_i].iter().sum();
        assert!(close(c.matched, want, acc), "{c:?} {want}");
        assert!(
            close(c.p1_population, truth.regions[r_i], p1_pop_acc),
            "{c:?}"
        );
        assert!(!c.suppressed);
    }
    assert_eq!(r.by_p2.len(), 3);
    for (t, c) in r.by_p2.iter().enumerate() {
        assert_eq!(labels(c), ("", TIERS[t]));
        let want = truth.cross[0][t] + truth.cross[1][t];
        assert!(close(c.matched, want, 2.0 * cross_acc), "{c:?} {want}");
        assert!(close(c.p2_population, truth.tiers[t], pop_acc), "{c:?}");
        let rate = want as f64 / truth.tiers[t] as f64;
        assert!((c.p2_match_rate - rate).abs() < 0.02, "{c:?} {rate}");
    }
    assert_eq!(r.cross.len(), 6);
    for (i, c) in r.cross.iter().enumerate() {
        let (g, t) = (i / 3, i % 3);
        assert_eq!(labels(c), (REGIONS[g], TIERS[t]));
        assert!(close(c.matched, truth.cross[g][t], cross_acc), "{c:?}");
    }
    // Both datasets paid the job's epsilon.
    assert_eq!(fed.spent_epsilon("publisher", "audience").unwrap(), 40.0);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 40.0);

    // Cross-tab cells hold about 333 matched people, tiers about 667, regions 1000: a
    // threshold of 800 suppresses the cells and the tiers, not the regions or the total.
    let r = overlap(
        &fed,
        job(&[
            ("epsilon = 1.0", "epsilon = 4.0"),
            ("min_cell = 100", "min_cell = 800"),
        ]),
    )
    .await;
    assert!(
        r.cross
            .iter()
            .chain(&r.by_p2)
            .all(|c| c.suppressed && c.matched == 0.0 && c.p1_match_rate == 0.0)
    );
    assert!(r.by_p1.iter().all(|c| !c.suppressed && c.matched > 800.0));
    assert!(!r.total.unwrap().suppressed);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 44.0);

    // No breakdown: the total alone, from a column of zeros that carries no noise.
    let r = overlap(
        &fed,
        job(&[
            ("p1_segment_column = \"region\"", ""),
            ("p1_segments = [\"north\", \"south\"]", ""),
            ("p2_segment_column = \"tier\"", ""),
            ("p2_segments = [\"gold\", \"silver\", \"bronze\"]", ""),
            ("epsilon = 1.0", "epsilon = 30.0"),
        ]),
    )
    .await;
    assert!(r.by_p1.is_empty() && r.by_p2.is_empty() && r.cross.is_empty());
    assert!(r.cross_noise.is_none());
    let total = r.total.unwrap();
    assert!(
        close(total.matched, matched, r.count_noise.unwrap().accuracy95),
        "{total:?}"
    );
    assert_eq!(fed.spent_epsilon("publisher", "audience").unwrap(), 74.0);

    // Refusals at the offer, with nothing charged.
    refused(
        &fed,
        job(&[(
            "p1_segments = [\"north\", \"south\"]",
            "p1_segments = [\"north\"]",
        )]),
        "segment in column 'region' that the job does not declare",
    )
    .await;
    refused(
        &fed,
        job(&[(
            "p2_segment_column = \"tier\"",
            "p2_segment_column = \"level\"",
        )]),
        "no segment column 'level'",
    )
    .await;
    assert_eq!(fed.spent_epsilon("publisher", "audience").unwrap(), 74.0);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 74.0);
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_floor_on_cells_refuses_a_smaller_threshold() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = federation(tmp.path()).await;
    fed.stop_node("brand").await.unwrap();
    fed.start_node_with_policy("brand", &policy("publisher", "customers", 250))
        .unwrap();
    fed.wait_connected(&["brand".into()], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    refused(
        &fed,
        job(&[]),
        "requires min_intersection ≥ 250, job has 100",
    )
    .await;
    // The strictest threshold is met: the job runs.
    let r = overlap(&fed, job(&[("min_cell = 100", "min_cell = 250")])).await;
    assert_eq!(r.min_cell, 250);
    fed.shutdown().await.unwrap();
}
