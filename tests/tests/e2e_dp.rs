//! End-to-end differential privacy through the in-process federation: dp_stats releases,
//! DP-noised PSI counts, intersection-sum, the budget ledger (charging, exhaustion,
//! concurrency) and the auditor's `parleyctl audit` against the coordinator's recorded heads.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_crypto::keys::NodeSecrets;
use parley_crypto::ledger::LedgerExport;
use parley_ctl::{Cli, run};
use parley_node::config::NodeConfig;
use parley_node::ledger::Ledger;
use parley_proto::{JobState, PsiMode};
use parley_tests::r#gen::{FederationSpec, Generated, generate};
use parley_tests::harness::{
    AUDITOR, Federation, NodeSetup, budget_toml, csv_dataset, dp_stats_spec, open_policy, psi_spec,
    sum_spec, with_dp,
};

/// brand (crm), publisher (subscribers), retailer (loyalty), each with the given budget.
async fn federation(dir: &Path, records: usize, budget: f64) -> (Federation, Generated) {
    parley_net::init_tracing("warn");
    let g = generate(&dir.join("data"), &FederationSpec::demo(records)).unwrap();
    let all = ["brand", "publisher", "retailer"];
    let setups = [
        ("brand", "crm"),
        ("publisher", "subscribers"),
        ("retailer", "loyalty"),
    ]
    .into_iter()
    .map(|(n, d)| {
        let others: Vec<&str> = all.iter().copied().filter(|p| *p != n).collect();
        NodeSetup::new(
            n,
            g.dataset_toml(n) + &budget_toml(budget),
            open_policy(&others, &[d]),
        )
    })
    .collect();
    (Federation::start(dir, setups).await.unwrap(), g)
}

/// A read-only handle on a node's ledger, and the node's Ed25519 public key.
fn ledger(fed: &Federation, node: &str) -> (Ledger, [u8; 32]) {
    let cfg = NodeConfig::load(&fed.node_config_path(node)).unwrap();
    let secrets =
        NodeSecrets::from_bytes(&std::fs::read(cfg.state_dir.join("node.secrets")).unwrap())
            .unwrap();
    let l = Ledger::open(&cfg.ledger_path(), node, None, cfg.budgets()).unwrap();
    (l, secrets.ed25519_public())
}

fn spent(fed: &Federation, node: &str) -> (f64, usize) {
    let (l, _) = ledger(fed, node);
    let s = l.status().unwrap().into_iter().next().unwrap();
    (s.spent_epsilon, s.rows as usize)
}

/// Asserts |got − truth| ≤ 4 × the declared 95% bound (false alarm rate ~1e-5 for Laplace).
fn near(got: f64, truth: f64, accuracy95: f64, what: &str) {
    assert!(accuracy95 > 0.0, "{what}: no accuracy bound reported");
    assert!(
        (got - truth).abs() <= 4.0 * accuracy95,
        "{what}: released {got}, truth {truth}, 95% bound {accuracy95}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_stats_releases_declared_categories_within_their_noise_and_charges_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 2000, 10.0).await;
    let truth = g.truth_segments("brand");

    // "west" is not declared: with other = drop it never appears.
    let job = fed
        .run_job(dp_stats_spec(
            "brand",
            "crm",
            &["north", "south", "east"],
            false,
            1.0,
            1.0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let r = job.result.unwrap().dp_stats().cloned().unwrap();
    let names: Vec<&str> = r.categories.iter().map(|c| c.category.as_str()).collect();
    assert_eq!(names, ["north", "south", "east"]);
    assert!((r.epsilon - 2.0).abs() < 1e-9);
    let count_noise = r.measures[0].noise.unwrap();
    let sum_noise = r.measures[1].noise.unwrap();
    assert!((count_noise.scale - 1.0).abs() < 1e-6, "{count_noise:?}");
    assert!(
        (sum_noise.scale - 1000.0).abs() < 1e-3,
        "sum of [0, 1000] at epsilon 1: scale 1000, got {sum_noise:?}"
    );
    for c in &r.categories {
        let t = truth[&c.category];
        near(
            c.values[0],
            t.rows as f64,
            count_noise.accuracy95,
            &c.category,
        );
        near(
            c.values[1],
            t.sum_cents as f64 / 100.0,
            sum_noise.accuracy95,
            &c.category,
        );
    }
    assert_eq!(spent(&fed, "brand"), (2.0, 1));

    // With other = bucket, "west" rows land in "other".
    let job = fed
        .run_job(dp_stats_spec("brand", "crm", &["north"], true, 2.0, 0.0))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let r = job.result.unwrap().dp_stats().cloned().unwrap();
    let names: Vec<&str> = r.categories.iter().map(|c| c.category.as_str()).collect();
    assert_eq!(names, ["north", "other"]);
    let others: u64 = truth
        .iter()
        .filter(|(k, _)| *k != "north")
        .map(|(_, t)| t.rows)
        .sum();
    let acc = r.measures[0].noise.as_ref().unwrap().accuracy95;
    near(r.categories[1].values[0], others as f64, acc, "other");
    assert_eq!(spent(&fed, "brand"), (4.0, 2));

    // A segment column the dataset lacks is refused at the offer, and charges nothing.
    let mut spec = dp_stats_spec("brand", "crm", &["north"], false, 1.0, 0.0);
    spec.dp_stats_mut().unwrap().segment_column = "tier".into();
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason.contains("segment column 'tier'"),
        "{}",
        job.reason
    );
    assert_eq!(spent(&fed, "brand"), (4.0, 2));
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_noise_has_the_declared_variance() {
    // Many releases of the same counts: the empirical variance of (released − truth) must
    // match the declared Laplace scale; a missing or mis-scaled noise fails this.
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 600, 1000.0).await;
    let truth = g.truth_segments("retailer");
    let cats = ["north", "south", "east", "west"];
    let mut errors = Vec::new();
    let mut scale = 0.0;
    for _ in 0..60 {
        let job = fed
            .run_job(dp_stats_spec("retailer", "loyalty", &cats, false, 0.5, 0.0))
            .await
            .unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
        let r = job.result.unwrap().dp_stats().cloned().unwrap();
        scale = r.measures[0].noise.as_ref().unwrap().scale;
        for c in &r.categories {
            errors.push(c.values[0] - truth[&c.category].rows as f64);
        }
    }
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let var = errors.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (n - 1.0);
    // Discrete Laplace with scale s: variance 2e^{-1/s}/(1-e^{-1/s})^2 (≈ 2s² = 8 at s = 2).
    let q = (-1.0 / scale).exp();
    let expected = 2.0 * q / ((1.0 - q) * (1.0 - q));
    assert!((scale - 2.0).abs() < 1e-6, "scale {scale}");
    // 240 draws, kurtosis 6: relative standard error of the variance ≈ sqrt(5/240) ≈ 0.14.
    assert!(
        (var / expected - 1.0).abs() < 0.5,
        "empirical variance {var}, declared {expected}"
    );
    assert!(mean.abs() < 5.0 * (expected / n).sqrt(), "mean {mean}");
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_budget_refuses_with_the_remaining_amount_and_leaves_the_ledger_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, _) = federation(tmp.path(), 500, 1.0).await;
    let job = fed
        .run_job(dp_stats_spec("brand", "crm", &["north"], false, 0.6, 0.0))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let (l, _) = ledger(&fed, "brand");
    let head = l.head("crm").unwrap().unwrap();
    let job = fed
        .run_job(dp_stats_spec("brand", "crm", &["north"], false, 0.6, 0.0))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason.contains("0.4"),
        "remaining amount: {}",
        job.reason
    );
    assert!(job.reason.contains("crm"), "{}", job.reason);
    assert_eq!(l.head("crm").unwrap().unwrap(), head);
    assert_eq!(spent(&fed, "brand"), (0.6, 1));
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_one_dataset_never_overspend() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, _) = federation(tmp.path(), 500, 1.0).await;
    // Twelve jobs of 0.25 at once: all pass the offer-time check, only four can be charged.
    let mut ids = Vec::new();
    for _ in 0..12 {
        let job = fed
            .submit(dp_stats_spec("brand", "crm", &["north"], false, 0.25, 0.0))
            .await
            .unwrap();
        ids.push(job.id);
    }
    let mut succeeded = 0;
    for id in &ids {
        let job = fed.wait(id, Duration::from_secs(120)).await.unwrap();
        match job.state() {
            JobState::Succeeded => succeeded += 1,
            JobState::Refused | JobState::Failed => {
                assert!(job.reason.contains("budget"), "{}", job.reason);
            }
            s => panic!("unexpected state {s:?}"),
        }
    }
    assert_eq!(succeeded, 4);
    let (eps, rows) = spent(&fed, "brand");
    assert_eq!(rows, 4);
    assert!(eps <= 1.0 + 1e-9, "spent {eps}");
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_psi_counts_charge_both_datasets_and_policies_can_require_dp() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, g) = federation(tmp.path(), 1500, 5.0).await;
    // The generator's duplicates are pairs of records of one person: a bound of 2 keeps all.
    let spec = with_dp(
        psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("retailer", "loyalty"),
            0,
        ),
        1.0,
        2,
        &["email", "phone"],
    );
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(psi.records_dropped, 0);
    let noise = psi.count_noise.unwrap();
    // One person moves the count by 2 records per identifier × 2 sender columns.
    assert_eq!(noise.sensitivity, 4.0);
    near(
        psi.intersection_records as f64,
        g.truth_cardinality("brand", "retailer") as f64,
        noise.accuracy95,
        "noisy cardinality",
    );
    assert_eq!(spent(&fed, "brand"), (1.0, 1));
    assert_eq!(spent(&fed, "retailer"), (1.0, 1));

    // The retailer now requires DP from the brand: an exact job is refused.
    fed.stop_node("retailer").await.unwrap();
    let policy = "[[rule]]\npartners = [\"brand\"]\nkinds = [\"psi_cardinality\"]\ndatasets = [\"loyalty\"]\nrequire_dp = true\nmax_epsilon = 2.0\n";
    std::fs::write(tmp.path().join("retailer/policy.toml"), policy).unwrap();
    fed.start_node_with_policy("retailer", policy).unwrap();
    fed.wait_connected(&["retailer".into()], Duration::from_secs(60))
        .await
        .unwrap();
    let exact = psi_spec(
        PsiMode::Cardinality,
        ("brand", "crm"),
        ("retailer", "loyalty"),
        0,
    );
    let job = fed.run_job(exact.clone()).await.unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason.contains("differentially private"),
        "{}",
        job.reason
    );
    let greedy = with_dp(exact, 3.0, 1, &["email"]);
    let job = fed.run_job(greedy).await.unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(job.reason.contains("epsilon"), "{}", job.reason);
    assert_eq!(spent(&fed, "retailer"), (1.0, 1));
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intersection_sum_is_the_clamped_truth_within_its_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 2000, 10.0).await;
    // P2 = brand (purchases, email column), P1 = publisher (exposure list).
    for (upper, eps) in [(1000.0, 2.0), (50.0, 2.0)] {
        let job = fed
            .run_job(sum_spec(
                ("brand", "crm"),
                "email",
                ("publisher", "subscribers"),
                &["email_sha256"],
                0.0,
                upper,
                eps,
            ))
            .await
            .unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
        let psi = job.result.unwrap().psi().cloned().unwrap();
        let sum = psi.sum.unwrap();
        let truth = g.truth_sum("brand", "publisher", 0, (upper * 100.0) as u64);
        assert!(truth.count > 100, "generator overlap");
        let sn = sum.sum_noise.unwrap();
        let cn = sum.count_noise.unwrap();
        near(
            sum.noisy_sum,
            truth.sum_cents as f64 / 100.0,
            sn.accuracy95,
            "noisy sum",
        );
        near(
            sum.noisy_count as f64,
            truth.count as f64,
            cn.accuracy95,
            "noisy count",
        );
        assert_eq!(sum.upper, upper);
        if upper < 100.0 {
            // Clamping applied: the unclamped total is far above what was released.
            let unclamped = g.truth_sum("brand", "publisher", 0, u64::MAX / 4);
            assert!(
                unclamped.sum_cents as f64 / 100.0 > sum.noisy_sum + 8.0 * sn.accuracy95,
                "values were not clamped"
            );
        }
    }
    // Both datasets paid for both releases (sum + count epsilon each time).
    assert_eq!(spent(&fed, "brand"), (8.0, 2));
    assert_eq!(spent(&fed, "publisher"), (8.0, 2));
    fed.shutdown().await.unwrap();
}

async fn audit(fed: &Federation, export: &Path, key: &str, extra: &[&str]) -> (i32, String) {
    let c = |f: &str| fed.certs.join(f).display().to_string();
    let mut argv: Vec<String> = vec![
        "parleyctl".into(),
        "--coordinator".into(),
        format!("https://{}", fed.addr),
        "--ca-cert".into(),
        c("ca.pem"),
        "--cert".into(),
        c(&format!("{AUDITOR}.pem")),
        "--key".into(),
        c(&format!("{AUDITOR}.key")),
        "audit".into(),
        export.display().to_string(),
        "--node-key".into(),
        key.to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cli = Cli::from_args(argv).unwrap();
    let mut out = Vec::new();
    let code = match run(cli, &mut out).await {
        Ok(c) => c,
        Err(e) => {
            out.extend_from_slice(format!("error: {e:#}").as_bytes());
            1
        }
    };
    (code, String::from_utf8(out).unwrap())
}

fn write_export(dir: &Path, name: &str, e: &LedgerExport) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, e.to_json_pretty()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_verify_exports_against_the_coordinators_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (fed, _) = federation(dir, 500, 10.0).await;
    for eps in [0.5, 0.25, 1.0] {
        let job = fed
            .run_job(dp_stats_spec("brand", "crm", &["north"], false, eps, 0.0))
            .await
            .unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    }
    let (l, key) = ledger(&fed, "brand");
    let export = l.export("crm", key).unwrap();
    assert_eq!(export.rows.len(), 3);
    let key_hex = hex::encode(key);
    // The head reaches the coordinator asynchronously after the last charge.
    let good = write_export(dir, "good.json", &export);
    let mut passed = (0, String::new());
    for _ in 0..50 {
        passed = audit(&fed, &good, &key_hex, &[]).await;
        if passed.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(passed.0, 0, "{}", passed.1);
    assert!(passed.1.contains("PASSED"), "{}", passed.1);
    assert!(
        passed.1.contains("recorded by the coordinator"),
        "{}",
        passed.1
    );

    // A truncated tail is a valid chain on its own; only the coordinator's head catches it.
    let mut truncated = export.clone();
    truncated.rows.pop();
    let p = write_export(dir, "truncated.json", &truncated);
    let (code, out) = audit(&fed, &p, &key_hex, &["--offline"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NOT checked"), "{out}");
    let (code, out) = audit(&fed, &p, &key_hex, &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAILED"), "{out}");

    // An altered row is caught and named.
    let mut altered = export.clone();
    altered.rows[1].epsilon = 0.01;
    let p = write_export(dir, "altered.json", &altered);
    let (code, out) = audit(&fed, &p, &key_hex, &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAILED") && out.contains('1'), "{out}");

    // A wrong key fails (the coordinator's head is not signed by it either).
    let other = hex::encode(NodeSecrets::generate().unwrap().ed25519_public());
    let (code, out) = audit(&fed, &good, &other, &["--offline"]).await;
    assert_eq!(code, 2, "{out}");

    // `nodes --keys` shows the CA-verified ledger key an auditor should use.
    let c = |f: &str| fed.certs.join(f).display().to_string();
    let cli = Cli::from_args([
        "parleyctl".to_string(),
        "--coordinator".into(),
        format!("https://{}", fed.addr),
        "--ca-cert".into(),
        c("ca.pem"),
        "--cert".into(),
        c(&format!("{AUDITOR}.pem")),
        "--key".into(),
        c(&format!("{AUDITOR}.key")),
        "nodes".into(),
        "--keys".into(),
    ])
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(run(cli, &mut out).await.unwrap(), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&key_hex), "{out}");
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_sum_ciphertext_fails_the_job_cleanly_and_charges_nothing() {
    use parley_proto::{PsiStream, psi_message};
    use parley_tests::rogue::Rogue;
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    parley_net::init_tracing("warn");
    let g = generate(&tmp.path().join("data"), &FederationSpec::demo(500)).unwrap();
    let fed = Federation::start(
        tmp.path(),
        vec![NodeSetup::new(
            "brand",
            g.dataset_toml("brand") + &budget_toml(10.0),
            open_policy(&["mallory"], &["crm"]),
        )],
    )
    .await
    .unwrap();
    let mut mallory = Rogue::connect(&fed, "mallory").await.unwrap();
    let job = fed
        .submit(sum_spec(
            ("brand", "crm"),
            "email",
            ("mallory", "any"),
            &["email"],
            0.0,
            100.0,
            1.0,
        ))
        .await
        .unwrap();
    let offer = mallory.accept_next_offer().await.unwrap();
    mallory.wait_start(&job.id).await.unwrap();
    let msg = |body| parley_proto::PsiMessage { body: Some(body) }.encode_to_vec();
    // P1 with no identifiers, then — once P2 has sent its streams — an answer whose ciphertext
    // is not a valid pair of points.
    let header = msg(psi_message::Body::Header(parley_proto::PsiHeader {
        stream: PsiStream::SumIds as i32,
        count: 0,
        group_size: 1,
        public_key: Vec::new(),
        group_sizes: Vec::new(),
    }));
    mallory
        .send_sealed(&offer, "brand", 0, &header)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let info = parley_proto::NoiseInfo {
        epsilon: 1.0,
        scale: 1.0,
        ..Default::default()
    };
    let answer = msg(psi_message::Body::SumOutcome(parley_proto::SumOutcome {
        ciphertext: vec![0xff; 64],
        noisy_count: vec![3],
        sum_noise: vec![info],
        count_noise: Some(info),
    }));
    mallory
        .send_sealed(&offer, "brand", 1, &answer)
        .await
        .unwrap();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed, "{}", done.reason);
    assert!(done.reason.contains("brand"), "{}", done.reason);
    assert!(
        done.reason.to_lowercase().contains("ciphertext"),
        "{}",
        done.reason
    );
    assert!(done.result.is_none());
    // P2 charges only what it releases: nothing was released.
    assert_eq!(spent(&fed, "brand"), (0.0, 0));
    fed.shutdown().await.unwrap();
}

/// A household email carried by 50 of the brand's records, a VIP customer with 50 purchase
/// rows: DP releases are calibrated to the job's contribution bound, the records beyond it
/// are left out and counted, and node policies can set a floor on the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_in_fifty_records_moves_a_release_by_the_bound_only() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // brand: 50 records share one email (a household), 100 have their own.
    let mut crm = String::from("customer_id,email\n");
    for i in 0..50 {
        crm.push_str(&format!("H{i},family@example.com\n"));
    }
    for i in 0..100 {
        crm.push_str(&format!("C{i},user{i}@example.com\n"));
    }
    // brand purchases: customer "vip" has 50 rows, 20 others one each.
    let mut purchases = String::from("order_id,customer,email,region,amount\n");
    for i in 0..50 {
        purchases.push_str(&format!("O{i},vip,vip@example.com,north,10\n"));
    }
    for i in 0..20 {
        purchases.push_str(&format!("P{i},c{i},c{i}@example.com,north,10\n"));
    }
    // publisher: the household email and 60 of the others.
    let mut list = String::from("id,email\n");
    list.push_str("S-family,family@example.com\n");
    for i in 0..60 {
        list.push_str(&format!("S{i},user{i}@example.com\n"));
    }
    let email = [("email", "email")];
    let brand = csv_dataset(&data, "crm", "customer_id", &crm, &email, "").unwrap()
        + &budget_toml(10.0)
        + "\n"
        + &csv_dataset(
            &data,
            "purchases",
            "order_id",
            &purchases,
            &[
                ("email", "email"),
                ("region", "segment"),
                ("amount", "value"),
            ],
            "person_column = \"customer\"\n",
        )
        .unwrap()
        + &budget_toml(10.0);
    let publisher_policy = open_policy(&["brand"], &["list"]) + "min_records_per_person = 2\n";
    let fed = Federation::start(
        tmp.path(),
        vec![
            NodeSetup::new(
                "brand",
                brand,
                open_policy(&["publisher"], &["crm", "purchases"]),
            ),
            NodeSetup::new(
                "publisher",
                csv_dataset(&data, "list", "id", &list, &email, "").unwrap() + &budget_toml(10.0),
                publisher_policy,
            ),
        ],
    )
    .await
    .unwrap();
    let cardinality = || {
        psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "list"),
            0,
        )
    };

    // Exact: all 50 household records match, and 60 others.
    let job = fed.run_job(cardinality()).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    assert_eq!(job.result.unwrap().psi().unwrap().intersection_records, 110);

    // The publisher's policy floor refuses a bound of 1, and names it.
    let job = fed
        .run_job(with_dp(cardinality(), 1.0, 1, &["email"]))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(
        job.reason.contains("contribution bound of at least 2"),
        "{}",
        job.reason
    );

    // A bound of 5: 45 household records are left out, and the noise is calibrated to 5.
    let job = fed
        .run_job(with_dp(cardinality(), 1.0, 5, &["email"]))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(psi.records_dropped, 45);
    let noise = psi.count_noise.unwrap();
    assert_eq!(noise.sensitivity, 5.0);
    assert!((noise.scale - 5.0).abs() < 1e-6, "{noise:?}");
    near(
        psi.intersection_records as f64,
        65.0,
        noise.accuracy95,
        "bounded cardinality",
    );
    // Both datasets paid the job's ε, which now holds per person.
    assert_eq!(spent(&fed, "publisher"), (1.0, 1));

    // dp_stats over a transaction table: the VIP's 50 rows count as at most 5.
    let mut stats = dp_stats_spec("brand", "purchases", &["north"], false, 1.0, 0.0);
    stats.dp_stats_mut().unwrap().max_rows_per_person = 5;
    let job = fed.run_job(stats).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let r = job.result.unwrap().dp_stats().cloned().unwrap();
    assert_eq!(r.rows_dropped, 45);
    let noise = r.measures[0].noise.unwrap();
    assert_eq!(noise.sensitivity, 5.0);
    near(
        r.categories[0].values[0],
        25.0,
        noise.accuracy95,
        "bounded count",
    );
    fed.shutdown().await.unwrap();
}

/// A sum job over several value columns, each with its own bounds: `columns` are (name,
/// lower, upper); `[psi.dp]` has ε `sum_epsilon` (split over the columns), `[psi.count_dp]` 1.
fn multi_sum_spec(
    columns: &[(&str, f64, f64)],
    decimals: u32,
    sum_epsilon: f64,
) -> parley_proto::JobSpec {
    let mut spec = sum_spec(
        ("brand", "purchases"),
        "email",
        ("publisher", "list"),
        &["email"],
        0.0,
        0.0,
        1.0,
    );
    spec.participants[0].value_column.clear();
    let psi = spec.psi_mut().unwrap();
    psi.dp = Some(parley_tests::harness::laplace(sum_epsilon));
    psi.decimals = decimals;
    psi.columns = columns
        .iter()
        .map(|(name, lower, upper)| parley_proto::SumColumn {
            name: (*name).to_owned(),
            lower: *lower,
            upper: *upper,
        })
        .collect();
    spec
}

/// Three value columns with different bounds over a purchase table with known totals: each
/// released sum is its clamped truth within its own noise, calibrated to its own bound at a
/// third of `[psi.dp]`; both sides pay the whole job once; a missing column and a range P2
/// cannot decrypt are refused at the offer, naming the column, before anyone pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_value_columns_are_each_their_clamped_truth_within_their_noise() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // (name, lower, upper) in cents; values are generated in cents too.
    const COLUMNS: [(&str, u64, u64); 3] = [
        ("amount", 0, 20_000),
        ("items", 100, 1_000),
        ("margin", 0, 250),
    ];
    // brand: 600 customers by email, every third with two purchase rows.
    let mut purchases = String::from("order_id,email,amount,items,margin\n");
    let mut rows: Vec<(u32, [u64; 3])> = Vec::new();
    for i in 0..600u32 {
        for r in 0..1 + u32::from(i % 3 == 0) {
            let v = [
                u64::from((i * 7919 + r * 104_729) % 100_000),
                100 * u64::from(1 + (i * 31 + r * 17) % 30),
                u64::from((i * 13 + r * 7) % 500),
            ];
            let cents = |c: u64| format!("{}.{:02}", c / 100, c % 100);
            purchases.push_str(&format!(
                "O{i}-{r},u{i}@example.com,{},{},{}\n",
                cents(v[0]),
                cents(v[1]),
                cents(v[2])
            ));
            rows.push((i, v));
        }
    }
    // publisher: three quarters of the brand's customers and 100 others.
    let in_list = |i: u32| i % 4 != 1;
    let mut list = String::from("id,email\n");
    for i in (0..600).filter(|i| in_list(*i)) {
        list.push_str(&format!("S{i},u{i}@example.com\n"));
    }
    for j in 0..100 {
        list.push_str(&format!("X{j},x{j}@example.com\n"));
    }
    // The truth: per customer and column, rows clamped, summed, clamped again; summed over the
    // intersection.
    let mut per_id = std::collections::BTreeMap::<u32, [u64; 3]>::new();
    for (i, v) in &rows {
        let t = per_id.entry(*i).or_default();
        for (c, (_, lo, hi)) in COLUMNS.iter().enumerate() {
            t[c] += v[c].clamp(*lo, *hi);
        }
    }
    let mut truth = [0u64; 3];
    let mut unclamped_amount = 0u64;
    for (i, t) in per_id.iter().filter(|(i, _)| in_list(**i)) {
        for (c, (_, lo, hi)) in COLUMNS.iter().enumerate() {
            truth[c] += t[c].clamp(*lo, *hi);
        }
        unclamped_amount += rows
            .iter()
            .filter(|(j, _)| j == i)
            .map(|(_, v)| v[0])
            .sum::<u64>();
    }
    let brand = csv_dataset(
        &data,
        "purchases",
        "order_id",
        &purchases,
        &[
            ("email", "email"),
            ("amount", "value"),
            ("items", "value"),
            ("margin", "value"),
        ],
        "",
    )
    .unwrap()
        + &budget_toml(10.0);
    let publisher = csv_dataset(&data, "list", "id", &list, &[("email", "email")], "").unwrap()
        + &budget_toml(10.0);
    let fed = Federation::start(
        tmp.path(),
        vec![
            NodeSetup::new("brand", brand, open_policy(&["publisher"], &["purchases"])),
            NodeSetup::new("publisher", publisher, open_policy(&["brand"], &["list"])),
        ],
    )
    .await
    .unwrap();
    let columns: Vec<(&str, f64, f64)> = COLUMNS
        .iter()
        .map(|(n, lo, hi)| (*n, *lo as f64 / 100.0, *hi as f64 / 100.0))
        .collect();

    let job = fed.run_job(multi_sum_spec(&columns, 2, 3.0)).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    let sum = psi.sum.unwrap();
    assert_eq!(sum.columns.len(), 3);
    for ((c, (name, lower, upper)), t) in sum.columns.iter().zip(&columns).zip(truth) {
        assert_eq!((c.name.as_str(), c.lower, c.upper), (*name, *lower, *upper));
        let noise = c.sum_noise.unwrap();
        // A third of [psi.dp], calibrated to this column's bound (one person, one row here).
        assert!((noise.epsilon - 1.0).abs() < 1e-12, "{name}: {noise:?}");
        assert!(
            (noise.sensitivity - upper).abs() < 1e-9,
            "{name}: {noise:?}"
        );
        near(c.noisy_sum, t as f64 / 100.0, noise.accuracy95, name);
    }
    // The first column stays in the single-column fields, for older readers.
    assert_eq!(sum.noisy_sum, sum.columns[0].noisy_sum);
    assert_eq!((sum.lower, sum.upper), (0.0, 200.0));
    let cn = sum.count_noise.unwrap();
    near(sum.noisy_count as f64, 450.0, cn.accuracy95, "noisy count");
    // Clamping applied: the unclamped amounts are far above what was released.
    let amount_noise = sum.columns[0].sum_noise.unwrap().accuracy95;
    assert!(
        unclamped_amount as f64 / 100.0 > sum.columns[0].noisy_sum + 8.0 * amount_noise,
        "amounts were not clamped"
    );
    // Both datasets paid [psi.dp] + [psi.count_dp] once, however many columns.
    assert_eq!(spent(&fed, "brand"), (4.0, 1));
    assert_eq!(spent(&fed, "publisher"), (4.0, 1));

    // A column the brand's dataset does not have is refused at the offer, by name.
    let missing = [columns[0], columns[1], ("refunds", 0.0, 10.0)];
    let job = fed.run_job(multi_sum_spec(&missing, 2, 3.0)).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(
        job.reason.contains("psi.columns[2].name")
            && job.reason.contains("no value column 'refunds'"),
        "{}",
        job.reason
    );
    // So is a column whose noisy sum P2 could not decrypt: 600 identifiers × 10^12 units.
    let wide = [columns[1], ("amount", 0.0, 1e6)];
    let job = fed.run_job(multi_sum_spec(&wide, 6, 3.0)).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(
        job.reason.contains("value column 'amount'")
            && job.reason.contains("P2 can decrypt")
            && job.reason.contains("psi.columns[1].upper"),
        "{}",
        job.reason
    );
    // Nobody paid for the refused jobs.
    assert_eq!(spent(&fed, "brand"), (4.0, 1));
    assert_eq!(spent(&fed, "publisher"), (4.0, 1));
    fed.shutdown().await.unwrap();
}
