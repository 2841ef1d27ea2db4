//! The demo's campaign scenario (`parley_tests::campaign`) end to end at a small size: the lift
//! and overlap jobs run over real gRPC + mutual TLS on generated data with known design rates,
//! and every released figure must be close to the truth (the scenario fails otherwise).

#![allow(clippy::unwrap_used)]

use parley_tests::campaign::{CONTROL_RATE, Size, TEST_RATE, generate, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_scenario_measures_the_lift_and_the_overlap() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let size = Size {
        audience: 8000,
        customers: 6000,
    };
    let reports = tmp.path().join("reports");
    let (lift, overlap) = run(tmp.path(), size, Some(&reports)).await.unwrap();
    // Two cohorts and the whole: the overall interval is about the design lift's size, and
    // contains the truth of the sample (run checks the estimate against it).
    assert_eq!(lift.figures.len(), 3);
    let overall = lift.figures.last().unwrap().relative_lift.unwrap();
    assert!(overall.low < overall.value && overall.value < overall.high);
    assert_eq!(lift.cells.iter().map(|c| c.population).sum::<u64>(), 8000);
    // Regions × tiers, every cell released (about 800 matched each, min_cell 100).
    assert_eq!(overlap.cross.len(), 6);
    assert!(overlap.cross.iter().all(|c| !c.suppressed));
    let total = overlap.total.unwrap();
    assert!((total.p2_match_rate - 0.8).abs() < 0.05, "{total:?}");

    // One report per job, each with its bars: 3 cohorts × 2 arms + 3 lifts; 2 regions + 3 tiers.
    let bar = format!("fill=\"{}\"", parley_ctl::report::chart::BAR_FILL);
    let mut pages: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    pages.sort_by_key(|p| p.matches(&bar).count());
    assert_eq!(pages.len(), 2);
    assert_eq!(
        pages[0].matches(&bar).count(),
        5,
        "overlap: 2 regions + 3 tiers"
    );
    assert_eq!(
        pages[1].matches(&bar).count(),
        9,
        "lift: 3 × (test, control) + 3 lifts"
    );
}

#[test]
fn the_generator_hits_its_sizes_and_rates() {
    let size = Size {
        audience: 40_000,
        customers: 30_000,
    };
    let (publisher, brand, truth) = generate(7, size);
    assert_eq!(publisher.lines().count(), 40_001);
    assert_eq!(brand.lines().count(), 30_001);
    let rate = |arm: usize| {
        let (c, n) = truth.cells[arm]
            .iter()
            .fold((0, 0), |(c, n), x| (c + x.conversions, n + x.population));
        c as f64 / n as f64
    };
    // 20,000 people per arm: the sample rates are within 0.4 points of the design.
    assert!((rate(0) - TEST_RATE).abs() < 0.004, "{}", rate(0));
    assert!((rate(1) - CONTROL_RATE).abs() < 0.004, "{}", rate(1));
    let matched: u64 = truth.overlap.iter().flatten().sum();
    assert!((23_000..=25_000).contains(&matched), "{matched}");
}
