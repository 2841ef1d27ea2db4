//! End-to-end secure aggregation through the in-process federation: real nodes compute their
//! per-region vectors, the coordinator runs the server rounds, and test-driven participants
//! (running the real protocol code) drop out after each round or misbehave.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use parley_proto::{JobOffer, JobState};
use parley_tests::r#gen::{FederationSpec, Generated, IdStyle, PartySpec, generate};
use parley_tests::harness::{
    Federation, NodeSetup, secure_sum_policy, secure_sum_spec, with_distributed_dp,
};
use parley_tests::rogue::{Rogue, SecAggPlan};

const CATS: [&str; 4] = ["north", "south", "east", "west"];

/// `honest` real retailer nodes plus room for test-driven ones named in `rogues`.
async fn federation(dir: &Path, honest: usize, rogues: &[&str]) -> (Federation, Generated) {
    parley_net::init_tracing("warn");
    let parties: Vec<PartySpec> = (1..=honest)
        .map(|i| PartySpec {
            node: format!("retailer-{i}"),
            dataset: "sales".into(),
            records: 300 + 50 * i,
            style: IdStyle::EmailAndPhone,
        })
        .collect();
    let g = generate(
        &dir.join("data"),
        &FederationSpec {
            seed: 7,
            parties,
            overlaps: vec![],
        },
    )
    .unwrap();
    let mut all: Vec<String> = (1..=honest).map(|i| format!("retailer-{i}")).collect();
    all.extend(rogues.iter().map(|r| r.to_string()));
    let setups = (1..=honest)
        .map(|i| {
            let name = format!("retailer-{i}");
            let others: Vec<String> = all.iter().filter(|n| **n != name).cloned().collect();
            NodeSetup::new(
                &name,
                g.dataset_toml(&name),
                secure_sum_policy(&others, "sales"),
            )
        })
        .collect();
    (Federation::start(dir, setups).await.unwrap(), g)
}

/// Per category (count, sum in cents) over the given generated nodes.
fn truth(g: &Generated, nodes: &[String]) -> BTreeMap<String, (i128, i128)> {
    let mut t = BTreeMap::new();
    for n in nodes {
        for (cat, s) in g.truth_segments(n) {
            let e = t.entry(cat).or_insert((0, 0));
            e.0 += s.rows as i128;
            e.1 += s.sum_cents;
        }
    }
    t
}

/// The vector a test-driven participant contributes: per category, count then cents.
fn rogue_input() -> Vec<u64> {
    (0..CATS.len())
        .flat_map(|c| [10 + c as u64, 100_000 * (c as u64 + 1)])
        .collect()
}

fn assert_sum(job: &parley_proto::Job, expected: &BTreeMap<String, (i128, i128)>, extra: bool) {
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let r = job.result.clone().unwrap().secure_sum().cloned().unwrap();
    let rogue = rogue_input();
    for (c, cat) in r.categories.iter().enumerate() {
        assert_eq!(cat.category, CATS[c]);
        let (mut count, mut cents) = expected.get(&cat.category).copied().unwrap_or((0, 0));
        if extra {
            count += rogue[2 * c] as i128;
            cents += rogue[2 * c + 1] as i128;
        }
        assert_eq!(cat.values[0], count as f64, "count of {}", cat.category);
        assert!(
            (cat.values[1] - cents as f64 / 100.0).abs() < 1e-6,
            "sum of {}: {} vs {}",
            cat.category,
            cat.values[1],
            cents as f64 / 100.0
        );
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("retailer-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_sum_without_dropouts() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 5, &[]).await;
    let nodes = names(5);
    let parts: Vec<(&str, &str)> = nodes.iter().map(|n| (n.as_str(), "sales")).collect();
    let mut spec = secure_sum_spec(&parts, &CATS);
    spec.secure_sum_mut().unwrap().result_to = "retailer-2".into();
    let job = fed.run_job(spec).await.unwrap();
    assert_sum(&job, &truth(&g, &nodes), false);
    let r = job.result.clone().unwrap().secure_sum().cloned().unwrap();
    assert_eq!(r.contributors.len(), 5);
    assert!(r.dropped.is_empty());
    // The designated receiver node gets the same result in its outputs directory.
    let file = tmp
        .path()
        .join("retailer-2/state/outputs")
        .join(format!("{}-result.json", job.id));
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(&file) {
            text = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["categories"][0]["values"][0], r.categories[0].values[0]);
    assert_eq!(v["contributors"].as_array().unwrap().len(), 5);
    assert!(
        !tmp.path()
            .join("retailer-1/state/outputs")
            .join(format!("{}-result.json", job.id))
            .exists()
    );
    fed.shutdown().await.unwrap();
}

/// Exact sums can be differenced across jobs, so a node takes part only if its policy opts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_sum_is_refused_by_a_node_whose_policy_does_not_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, _g) = federation(tmp.path(), 3, &[]).await;
    let nodes = names(3);
    fed.stop_node("retailer-3").await.unwrap();
    let opted_in = secure_sum_policy(&names(2), "sales");
    let plain = opted_in.replace("allow_exact_sums = true\n", "");
    assert_ne!(plain, opted_in);
    fed.start_node_with_policy("retailer-3", &plain).unwrap();
    fed.wait_connected(&nodes, Duration::from_secs(60))
        .await
        .unwrap();
    let parts: Vec<(&str, &str)> = nodes.iter().map(|n| (n.as_str(), "sales")).collect();
    let job = fed.run_job(secure_sum_spec(&parts, &CATS)).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(
        job.reason.contains("retailer-3") && job.reason.contains("allow_exact_sums"),
        "{}",
        job.reason
    );
    assert!(job.result.is_none());
    fed.shutdown().await.unwrap();
}

/// Submits a job over 4 real nodes + the rogue, runs the rogue with `plan`, returns the job.
async fn with_rogue(fed: &Federation, plan: SecAggPlan) -> (parley_proto::Job, Vec<u8>) {
    let mut rogue = Rogue::connect(fed, "mallory").await.unwrap();
    let nodes = names(4);
    let mut parts: Vec<(&str, &str)> = nodes.iter().map(|n| (n.as_str(), "sales")).collect();
    parts.push(("mallory", "sales"));
    let job = fed.submit(secure_sum_spec(&parts, &CATS)).await.unwrap();
    let offer: JobOffer = rogue.accept_next_offer().await.unwrap();
    rogue.wait_start(&job.id).await.unwrap();
    // A rejected or dropped participant is never sent the next round; its run ends when the
    // coordinator aborts it at the end of the job.
    let adv = rogue
        .run_secagg(&offer, &rogue_input(), plan)
        .await
        .unwrap_or_default();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    (done, adv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_after_each_round_still_give_the_exact_sum() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 4, &["mallory"]).await;
    let expected = truth(&g, &names(4));
    // n = 5, t = 4: one dropout at any round is survivable.
    for round in 0..=2 {
        let (job, _) = with_rogue(&fed, SecAggPlan::DropAfter(round)).await;
        // A node that dropped after sending its masked input (round 2) is in the sum: the
        // others reveal its self-mask seed.
        assert_sum(&job, &expected, round == 2);
        let r = job.result.unwrap().secure_sum().cloned().unwrap();
        if round < 2 {
            assert_eq!(r.contributors.len(), 4, "round {round}");
            assert!(r.dropped.iter().any(|d| d.contains("mallory")), "{r:?}");
        } else {
            assert_eq!(r.contributors.len(), 5);
        }
    }
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_dropouts_fail_cleanly_without_a_sum() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, _) = federation(tmp.path(), 3, &["mallory"]).await;
    // n = 4, t = 3: with mallory silent and one real node gone, only 2 remain.
    let mut rogue = Rogue::connect(&fed, "mallory").await.unwrap();
    fed.stop_node("retailer-3").await.unwrap();
    let nodes = names(3);
    let mut parts: Vec<(&str, &str)> = nodes.iter().map(|n| (n.as_str(), "sales")).collect();
    parts.push(("mallory", "sales"));
    let mut spec = secure_sum_spec(&parts, &CATS);
    spec.secure_sum_mut().unwrap().round_timeout_secs = 2;
    // retailer-3 is down: the job cannot even start.
    let job = fed.run_job(spec.clone()).await.unwrap();
    assert_eq!(job.state(), JobState::Failed);
    assert!(job.reason.contains("retailer-3"), "{}", job.reason);
    fed.start_node("retailer-3").unwrap();
    fed.wait_connected(&["retailer-3".into()], Duration::from_secs(60))
        .await
        .unwrap();
    // Now everyone accepts, mallory never sends anything and retailer-3 is stopped mid-job.
    let job = fed.submit(spec).await.unwrap();
    rogue.accept_next_offer().await.unwrap();
    rogue.wait_start(&job.id).await.unwrap();
    fed.stop_node("retailer-3").await.unwrap();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed, "{}", done.reason);
    assert!(done.reason.contains("no sum"), "{}", done.reason);
    assert!(done.result.is_none());
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_replayed_and_wrong_length_messages_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 4, &["mallory"]).await;
    let expected = truth(&g, &names(4));
    let (job, old_adv) = with_rogue(&fed, SecAggPlan::Honest).await;
    assert_sum(&job, &expected, true);
    for plan in [
        SecAggPlan::AlterMaskedInput,
        SecAggPlan::WrongLength,
        SecAggPlan::Replay(old_adv.clone()),
    ] {
        let (job, _) = with_rogue(&fed, plan.clone()).await;
        // The rejected participant is excluded; the others' sum is exact.
        assert_sum(&job, &expected, false);
        let r = job.result.unwrap().secure_sum().cloned().unwrap();
        let why = r
            .dropped
            .iter()
            .find(|d| d.contains("mallory"))
            .unwrap_or_else(|| panic!("{plan:?}: mallory not rejected: {r:?}"));
        assert!(why.contains("rejected"), "{plan:?}: {why}");
    }
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_dp_noise_has_the_declared_total_variance_and_is_charged_at_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    parley_net::init_tracing("warn");
    let g = generate(
        &dir.join("data"),
        &FederationSpec {
            seed: 11,
            parties: (1..=3)
                .map(|i| PartySpec {
                    node: format!("retailer-{i}"),
                    dataset: "sales".into(),
                    records: 300,
                    style: IdStyle::EmailAndPhone,
                })
                .collect(),
            overlaps: vec![],
        },
    )
    .unwrap();
    let nodes = names(3);
    let setups = nodes
        .iter()
        .map(|n| {
            let others: Vec<String> = nodes.iter().filter(|o| *o != n).cloned().collect();
            NodeSetup::new(
                n,
                g.dataset_toml(n) + &parley_tests::harness::budget_toml_with_delta(1000.0, 0.001),
                secure_sum_policy(&others, "sales"),
            )
        })
        .collect();
    let fed = Federation::start(dir, setups).await.unwrap();
    let expected = truth(&g, &nodes);
    let parts: Vec<(&str, &str)> = nodes.iter().map(|n| (n.as_str(), "sales")).collect();
    let spec = with_distributed_dp(secure_sum_spec(&parts, &CATS), 1.0, 1e-6);
    let mut errors = Vec::new();
    let mut sum_errors = Vec::new();
    let (mut scale, mut sum_scale) = (0.0, 0.0);
    for _ in 0..25 {
        let job = fed.run_job(spec.clone()).await.unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
        let r = job.result.unwrap().secure_sum().cloned().unwrap();
        let noise = r.noise.unwrap();
        scale = noise.scale;
        sum_scale = r.sum_noise.unwrap().scale;
        for cat in &r.categories {
            let (count, cents) = expected[&cat.category];
            errors.push(cat.values[0] - count as f64);
            sum_errors.push(cat.values[1] - cents as f64 / 100.0);
        }
    }
    for (what, errors, scale) in [("count", &errors, scale), ("sum", &sum_errors, sum_scale)] {
        let n = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / n;
        let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let declared = scale * scale;
        assert!(declared > 1.0, "{what}: noise scale {scale}");
        // 100 draws: relative standard error of a Gaussian variance ≈ sqrt(2/100) = 0.14.
        assert!(
            (var / declared - 1.0).abs() < 0.5,
            "{what}: empirical variance {var}, declared {declared}"
        );
        assert!(
            mean.abs() < 5.0 * (declared / n).sqrt(),
            "{what}: mean {mean}"
        );
    }
    // Every node charged its own ledger for every release.
    for node in &nodes {
        let cfg = parley_node::config::NodeConfig::load(&fed.node_config_path(node)).unwrap();
        let l = parley_node::ledger::Ledger::open(&cfg.ledger_path(), node, None, cfg.budgets())
            .unwrap();
        let s = l.status().unwrap().into_iter().next().unwrap();
        assert_eq!(s.rows, 25, "{node}");
        assert!((s.spent_epsilon - 25.0).abs() < 1e-9, "{node}");
    }
    fed.shutdown().await.unwrap();
}
