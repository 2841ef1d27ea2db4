//! End-to-end conversion lift through the in-process federation over gRPC and mutual TLS: a
//! publisher with test/control arms in two regions and a brand with its whole customer
//! universe; the released cells against the truth, the derived figures, suppression, the
//! refusals (unknown arm label, missing value column, an undecryptable range, a policy floor)
//! and both ledgers' charges.

#![allow(clippy::unwrap_used)]

use parley_proto::{JobSpec, JobState, LiftResult};
use parley_tests::harness::{Federation, NodeSetup, budget_toml, csv_dataset};

const JOB: &str = include_str!("../../jobs/examples/job-lift.toml");

/// The truth of one arm × region cell.
#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    population: u64,
    matched: u64,
    conversions: u64,
    value: f64,
}

/// Whether person `i` converts: a fixed pseudo-random draw below `rate` percent.
fn converts(i: u64, rate: u64) -> bool {
    (i.wrapping_mul(2_654_435_761) >> 7) % 100 < rate
}

/// Publisher: people 0..4000, even = test, odd = control, region by (i / 2) % 2. Brand:
/// customers 1000..6000 (converters and non-converters), test people convert at 20 %,
/// control and brand-only customers at 10 %. Returns both CSVs and the truth per cell
/// (test north, test south, control north, control south).
fn data() -> (String, String, [Cell; 4]) {
    let mut publisher = String::from("id,email,arm,region\n");
    let mut brand = String::from("id,email,conversions,revenue\n");
    let mut truth = [Cell::default(); 4];
    for i in 0..6000u64 {
        let test = i % 2 == 0;
        let north = (i / 2) % 2 == 0;
        let exposed = i < 4000;
        let g = usize::from(!test) * 2 + usize::from(!north);
        if exposed {
            let arm = if test { "test" } else { "control" };
            let region = if north { "north" } else { "south" };
            publisher.push_str(&format!("p{i},u{i}@example.com,{arm},{region}\n"));
            truth[g].population += 1;
        }
        if i >= 1000 {
            let rate = if exposed && test { 20 } else { 10 };
            let (conv, revenue) = if converts(i, rate) {
                (1, 10 + i % 90)
            } else {
                (0, 0)
            };
            brand.push_str(&format!("b{i},u{i}@example.com,{conv},{revenue}\n"));
            if exposed {
                truth[g].matched += 1;
                truth[g].conversions += conv;
                truth[g].value += revenue as f64;
            }
        }
    }
    (publisher, brand, truth)
}

fn policy(partner: &str, dataset: &str, floor: u64) -> String {
    format!(
        "[[rule]]\npartners = [\"{partner}\"]\nkinds = [\"lift\"]\ndatasets = [\"{dataset}\"]\n\
         min_intersection = {floor}\n"
    )
}

async fn federation(dir: &std::path::Path) -> Federation {
    let (publisher, brand, _) = data();
    let data_dir = dir.join("data");
    let exposure = csv_dataset(
        &data_dir,
        "exposure",
        "id",
        &publisher,
        &[
            ("email", "email"),
            ("arm", "segment"),
            ("region", "segment"),
        ],
        "",
    )
    .unwrap()
        + &budget_toml(100.0);
    let customers = csv_dataset(
        &data_dir,
        "customers",
        "id",
        &brand,
        &[
            ("email", "email"),
            ("conversions", "value"),
            ("revenue", "value"),
        ],
        "",
    )
    .unwrap()
        + &budget_toml(100.0);
    Federation::start(
        dir,
        vec![
            NodeSetup::new("publisher", exposure, policy("brand", "exposure", 0)),
            NodeSetup::new("brand", customers, policy("publisher", "customers", 0)),
        ],
    )
    .await
    .unwrap()
}

/// The example job with `edits` applied to its text.
fn job(edits: &[(&str, &str)]) -> JobSpec {
    let mut text = JOB.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "the example has no '{from}'");
        text = text.replace(from, to);
    }
    parley_jobs::parse_job_toml(&text, "job-lift.toml").unwrap()
}

async fn refused(fed: &Federation, spec: JobSpec, why: &str) {
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(job.reason.contains(why), "want '{why}': {}", job.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lift_cells_and_figures_match_the_truth_within_their_noise() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path()).await;
    let (_, _, truth) = data();

    // A generous epsilon (10 per release), so every total is close to the truth.
    let spec = job(&[
        ("epsilon = 1.0", "epsilon = 40.0"),
        ("min_cell = 100", "min_cell = 0"),
    ]);
    let done = fed.run_job(spec).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{}", done.reason);
    let r: LiftResult = done.result.unwrap().lift().cloned().unwrap();
    assert_eq!(r.cells.len(), 4);
    assert_eq!(r.receiver_identifiers, 5000);
    assert_eq!(r.window_start, "2026-11-01");
    assert_eq!(r.column_names, ["conversions", "value", "value_squares"]);
    let count_acc = r.count_noise.unwrap().accuracy95;
    let conv_acc = r.column_noise[0].accuracy95;
    let value_acc = r.column_noise[1].accuracy95;
    // At 10 per release a count's noise is mostly 0; a value's is not.
    assert!(value_acc > conv_acc);
    let labels = [
        ("test", "north"),
        ("test", "south"),
        ("control", "north"),
        ("control", "south"),
    ];
    for ((cell, want), (arm, region)) in r.cells.iter().zip(&truth).zip(labels) {
        assert_eq!((cell.arm.as_str(), cell.cohort.as_str()), (arm, region));
        assert!(!cell.suppressed);
        // The population is P1's exact cell size; the rest is noisy.
        assert_eq!(cell.population, want.population, "{arm} {region}");
        let close = |got: f64, want: f64, acc: f64| (got - want).abs() <= 4.0 * acc + 1.0;
        assert!(
            close(cell.matched, want.matched as f64, count_acc),
            "{cell:?} {want:?}"
        );
        assert!(
            close(cell.conversions, want.conversions as f64, conv_acc),
            "{cell:?} {want:?}"
        );
        assert!(
            close(cell.value, want.value, value_acc),
            "{cell:?} {want:?}"
        );
        assert!(cell.value_squares > cell.value, "{cell:?}");
    }
    // Per region and overall; each within a narrow band of the lift the truth gives.
    assert_eq!(r.figures.len(), 3);
    let rate = |cells: &[usize]| {
        let (c, n) = cells.iter().fold((0, 0), |(c, n), g| {
            (c + truth[*g].conversions, n + truth[*g].population)
        });
        c as f64 / n as f64
    };
    let overall = r.figures.last().unwrap();
    assert_eq!(overall.cohort, "");
    assert!(overall.withheld.is_empty(), "{}", overall.withheld);
    let true_lift = rate(&[0, 1]) / rate(&[2, 3]) - 1.0;
    let lift = overall.relative_lift.unwrap();
    assert!(
        (lift.value - true_lift).abs() < 0.05,
        "{lift:?} vs {true_lift}"
    );
    assert!(lift.low < lift.value && lift.value < lift.high);
    // A real effect: test people convert at twice the control rate among the matched.
    assert!(lift.low > 0.3, "{lift:?}");
    assert!(overall.iroas.is_some());
    let inc = overall.incremental_conversions.unwrap();
    let true_inc = truth[0].population as f64 + truth[1].population as f64;
    let true_inc = true_inc * (rate(&[0, 1]) - rate(&[2, 3]));
    assert!((inc.value - true_inc).abs() < 40.0, "{inc:?} vs {true_inc}");
    assert_eq!(r.figures[0].cohort, "north");

    // Both datasets paid the job's epsilon.
    assert_eq!(fed.spent_epsilon("publisher", "exposure").unwrap(), 40.0);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 40.0);

    // A threshold above every cell's matched count (about 750) suppresses every cell and
    // withholds every figure.
    let spec = job(&[("min_cell = 100", "min_cell = 900")]);
    let done = fed.run_job(spec).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{}", done.reason);
    let r = done.result.unwrap().lift().cloned().unwrap();
    assert!(
        r.cells
            .iter()
            .all(|c| c.suppressed && c.matched == 0.0 && c.value == 0.0)
    );
    assert!(
        r.figures[..2]
            .iter()
            .all(|f| f.relative_lift.is_none() && !f.withheld.is_empty())
    );
    // The whole arms (about 1500 matched each) pass.
    assert!(r.figures[2].relative_lift.is_some(), "{:?}", r.figures[2]);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 41.0);

    // Refusals at the offer, with nothing charged.
    refused(
        &fed,
        job(&[(
            "arm_column = \"arm\"",
            "control_label = \"holdout\"\narm_column = \"arm\"",
        )]),
        "neither 'test' nor 'holdout'",
    )
    .await;
    refused(
        &fed,
        job(&[("value_column = \"revenue\"", "value_column = \"sales\"")]),
        "no value column 'sales'",
    )
    .await;
    refused(
        &fed,
        job(&[("squares_unit = 100.0", "squares_unit = 0.000001")]),
        "raise lift.squares_unit",
    )
    .await;
    assert_eq!(fed.spent_epsilon("publisher", "exposure").unwrap(), 41.0);
    assert_eq!(fed.spent_epsilon("brand", "customers").unwrap(), 41.0);
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_floor_on_cells_refuses_a_smaller_threshold() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = federation(tmp.path()).await;
    fed.stop_node("publisher").await.unwrap();
    fed.start_node_with_policy("publisher", &policy("brand", "exposure", 500))
        .unwrap();
    fed.wait_connected(&["publisher".into()], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    refused(
        &fed,
        job(&[]),
        "requires min_intersection ≥ 500, job has 100",
    )
    .await;
    fed.shutdown().await.unwrap();
}
