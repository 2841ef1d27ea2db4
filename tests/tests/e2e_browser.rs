//! The HTML reports in a real headless Chromium: each kind's report renders (a non-blank
//! screenshot, the expected number of bars or heat-map cells in its SVG) and fetches nothing
//! from the network. The PSI report comes from a real job on an in-process federation; the
//! others from results of each kind's shape, so that every kind's page is loaded.

#![allow(clippy::unwrap_used)]

use parley_ctl::report::{chart::BAR_FILL, job_report};
use parley_ctl::{Cli, run};
use parley_proto::{
    CategoryStats, DpStatsResult, Job, JobResult, JobState, LiftEstimate, LiftFigures, LiftResult,
    Measure, MeasureKind, MeasureResult, NoiseInfo, OverlapCell, OverlapResult, RfmCell, RfmResult,
    SecureSumResult, StateChange,
};
use parley_tests::browser;
use parley_tests::r#gen::{FederationSpec, generate};
use parley_tests::harness::{Federation, NodeSetup, open_policy};

/// A label a node could send: it must come out as text, never as markup.
const EVIL: &str =
    "<img src=\"http://198.51.100.1/x.png\"><script>fetch('http://198.51.100.1/')</script>";

/// Loads `page`, asserts it rendered and fetched nothing; returns its bar count.
fn check_in_browser(name: &str, page: &str, work: &std::path::Path) -> usize {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.html");
    std::fs::write(&file, page).unwrap();
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{name}: unescaped markup"
    );
    let loaded = browser::load(&file, &dir, 1600);
    assert_eq!(loaded.size.0, 1000, "{name}");
    let inked = loaded.inked();
    assert!(
        inked > 0.01,
        "{name}: the screenshot is blank ({inked:.4} inked)"
    );
    // Nothing the page asked for is in the network log (`the_network_check_sees_a_fetching_page`
    // shows that a fetch would be).
    let fetched = loaded.page_fetches();
    assert!(fetched.is_empty(), "{name}: the page fetched {fetched:?}");
    assert!(
        !loaded.urls.iter().any(|u| u.contains("198.51.100.1")),
        "{name}: a label was fetched"
    );
    page.matches(&format!("fill=\"{BAR_FILL}\"")).count()
}

fn noise(accuracy95: f64) -> Option<NoiseInfo> {
    Some(NoiseInfo {
        epsilon: 1.0,
        scale: accuracy95 / 3.0,
        accuracy95,
        sensitivity: 1.0,
        ..Default::default()
    })
}

/// A succeeded job of `kind` with `result`.
fn job_of(kind: parley_proto::JobKind, result: JobResult) -> Job {
    let done = |state: JobState, at_ms| StateChange {
        state: state as i32,
        at_ms,
        note: String::new(),
    };
    Job {
        id: "job-00000000000000aa".into(),
        spec: Some(parley_proto::JobSpec {
            label: EVIL.into(),
            kind: kind as i32,
            ..Default::default()
        }),
        state: JobState::Succeeded as i32,
        submitted_by: "alice".into(),
        history: vec![
            done(JobState::Submitted, 1_700_000_000_000),
            done(JobState::Succeeded, 1_700_000_002_000),
        ],
        result: Some(result),
        ..Default::default()
    }
}

#[test]
fn the_network_check_sees_a_fetching_page() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("fetching.html");
    std::fs::write(
        &file,
        "<html><body><h1>fetching</h1><img src=\"http://198.51.100.1/x.png\"></body></html>",
    )
    .unwrap();
    let loaded = browser::load(&file, tmp.path(), 400);
    assert_eq!(loaded.page_fetches(), vec!["http://198.51.100.1/x.png"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kinds_report_renders_in_chromium_and_fetches_nothing() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A real PSI job, its report written by parleyctl.
    let g = generate(&dir.join("data"), &FederationSpec::demo(400)).unwrap();
    let fed = Federation::start(
        dir,
        vec![
            NodeSetup::new(
                "brand",
                g.dataset_toml("brand"),
                open_policy(&["publisher"], &["crm"]),
            ),
            NodeSetup::new(
                "publisher",
                g.dataset_toml("publisher"),
                open_policy(&["brand"], &["subscribers"]),
            ),
        ],
    )
    .await
    .unwrap();
    let config = dir.join("parleyctl.toml");
    std::fs::write(
        &config,
        format!(
            "coordinator = \"https://{}\"\nserver_name = \"coordinator\"\nca_cert = \"certs/ca.pem\"\ncert = \"certs/alice.pem\"\nkey = \"certs/alice.key\"\n",
            fed.addr
        ),
    )
    .unwrap();
    let job_file = dir.join("card.toml");
    std::fs::write(
        &job_file,
        "label = \"reach\"\nkind = \"psi\"\n[psi]\nmode = \"cardinality\"\n\
         [[participants]]\nnode = \"brand\"\ndataset = \"crm\"\nrole = \"receiver\"\n\
         [[participants]]\nnode = \"publisher\"\ndataset = \"subscribers\"\nrole = \"sender\"\n",
    )
    .unwrap();
    let ctl = |args: Vec<String>| {
        let mut argv = vec![
            "parleyctl".to_owned(),
            "--config".into(),
            config.display().to_string(),
        ];
        argv.extend(args);
        async move {
            let mut out = Vec::new();
            let code = run(Cli::from_args(argv).unwrap(), &mut out).await.unwrap();
            (code, String::from_utf8(out).unwrap())
        }
    };
    let (code, out) = ctl(vec![
        "submit".into(),
        job_file.display().to_string(),
        "--wait".into(),
        "--no-progress".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let id = out.lines().next().unwrap().trim().to_owned();
    let psi_page = dir.join("psi.html");
    let (code, out) = ctl(vec![
        "report".into(),
        id,
        "--out".into(),
        psi_page.display().to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    fed.shutdown().await.unwrap();
    let page = std::fs::read_to_string(&psi_page).unwrap();
    assert_eq!(check_in_browser("psi", &page, dir), 1, "one match-rate bar");

    // dp_stats: 3 categories, one suppressed: 2 bars per measure, 2 measures.
    let measure = |kind: MeasureKind, column: &str| MeasureResult {
        measure: Some(Measure {
            kind: kind as i32,
            column: column.into(),
            ..Default::default()
        }),
        noise: noise(4.0),
        count_noise: None,
    };
    let cat = |c: &str, suppressed| CategoryStats {
        category: c.into(),
        values: vec![120.0, 5400.0],
        suppressed,
    };
    let dp = job_of(
        parley_proto::JobKind::DpStats,
        JobResult::from(DpStatsResult {
            dataset: "orders".into(),
            measures: vec![
                measure(MeasureKind::Count, ""),
                measure(MeasureKind::Sum, "amount"),
            ],
            categories: vec![cat("north", false), cat(EVIL, false), cat("tiny", true)],
            epsilon: 1.0,
            ..Default::default()
        }),
    );
    assert_eq!(
        check_in_browser("dp_stats", &job_report(&dp, &[]).unwrap(), dir),
        4
    );

    // secure_sum: 2 columns × 3 categories.
    let ss = job_of(
        parley_proto::JobKind::SecureSum,
        JobResult::from(SecureSumResult {
            contributors: vec!["a".into(), "b".into(), "c".into()],
            dropped: vec!["d: link lost".into()],
            categories: ["x", "y", EVIL]
                .iter()
                .map(|c| CategoryStats {
                    category: (*c).into(),
                    values: vec![10.0, 20.0],
                    suppressed: false,
                })
                .collect(),
            columns: vec!["orders".into(), "revenue".into()],
            noise: noise(3.0),
            sum_noise: noise(30.0),
        }),
    );
    assert_eq!(
        check_in_browser("secure_sum", &job_report(&ss, &[]).unwrap(), dir),
        6
    );

    // rfm: 4 recency × 3 frequency × 2 monetary: two heat maps of 12 cells.
    let labels = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut cells = Vec::new();
    for m in 0..2 {
        for r in 0..4 {
            for f in 0..3 {
                cells.push(RfmCell {
                    recency: r,
                    frequency: f,
                    monetary: m,
                    count: f64::from(100 * (4 - r) + 30 * f + 7 * m),
                    ..Default::default()
                });
            }
        }
    }
    let rfm = job_of(
        parley_proto::JobKind::Rfm,
        JobResult::from(RfmResult {
            dataset: "tx".into(),
            recency_labels: labels(&["0-30", "31-90", "91-180", "181+"]),
            frequency_labels: labels(&["1", "2-4", EVIL]),
            monetary_labels: labels(&["0-100", "100+"]),
            cells,
            count_noise: noise(3.0),
            epsilon: 1.0,
            period_start: "2026-01-01".into(),
            period_end: "2026-07-01".into(),
            ..Default::default()
        }),
    );
    let page = job_report(&rfm, &[]).unwrap();
    check_in_browser("rfm", &page, dir);
    let heat_cells = page
        .split("<rect")
        .skip(1)
        .filter(|r| {
            !r.split('>')
                .next()
                .unwrap_or("")
                .contains("fill=\"#FFFFFF\"")
        })
        .count();
    assert_eq!(heat_cells, 24, "two heat maps of 4 × 3 cells");

    // lift: two cohorts: 4 arm bars and 2 lift bars.
    let est = |v: f64| {
        Some(LiftEstimate {
            value: v,
            std_error: 0.004,
            low: v - 0.008,
            high: v + 0.008,
        })
    };
    let figures = [EVIL, "returning"]
        .iter()
        .map(|c| LiftFigures {
            cohort: (*c).into(),
            test_rate: est(0.055),
            control_rate: est(0.05),
            relative_lift: est(0.1),
            ..Default::default()
        })
        .collect();
    let lift = job_of(
        parley_proto::JobKind::Lift,
        JobResult::from(LiftResult {
            figures,
            epsilon: 1.0,
            ..Default::default()
        }),
    );
    assert_eq!(
        check_in_browser("lift", &job_report(&lift, &[]).unwrap(), dir),
        6
    );

    // overlap: 2 P1 segments and 3 P2 segments.
    let cell = |p1: &str, p2: &str| OverlapCell {
        p1_segment: p1.into(),
        p2_segment: p2.into(),
        matched: 40.0,
        p1_population: 100.0,
        p2_population: 160.0,
        p1_match_rate: 0.4,
        p2_match_rate: 0.25,
        suppressed: false,
    };
    let overlap = job_of(
        parley_proto::JobKind::Overlap,
        JobResult::from(OverlapResult {
            by_p1: vec![cell("north", ""), cell(EVIL, "")],
            by_p2: vec![cell("", "gold"), cell("", "silver"), cell("", "bronze")],
            count_noise: noise(4.0),
            p1_segment_column: "region".into(),
            p2_segment_column: "tier".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        check_in_browser("overlap", &job_report(&overlap, &[]).unwrap(), dir),
        5
    );
}
