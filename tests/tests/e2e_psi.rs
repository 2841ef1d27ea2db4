//! End-to-end PSI through the in-process federation: real coordinator, real nodes, real gRPC
//! over mutual TLS, generated messy data with known ground truth.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use parley_proto::{JobState, PsiMode, PsiStream};
use parley_tests::r#gen::{FederationSpec, Generated, generate};
use parley_tests::harness::{
    Federation, NodeSetup, csv_dataset, open_policy, psi_spec, read_match_keys,
};
use parley_tests::relay::Relay;
use parley_tests::rogue::Rogue;
use prost::Message;

async fn federation(
    dir: &Path,
    records: usize,
    extra_partner: Option<&str>,
) -> (Federation, Generated) {
    federation_with_limits(dir, records, extra_partner, "").await
}

/// As `federation`, with `limits` added to the coordinator's `[limits]`.
async fn federation_with_limits(
    dir: &Path,
    records: usize,
    extra_partner: Option<&str>,
    limits: &str,
) -> (Federation, Generated) {
    parley_net::init_tracing("warn");
    let spec = FederationSpec::demo(records);
    let g = generate(&dir.join("data"), &spec).unwrap();
    let mut partners = vec!["brand", "publisher", "retailer"];
    if let Some(p) = extra_partner {
        partners.push(p);
    }
    let setups = [
        ("brand", "crm"),
        ("publisher", "subscribers"),
        ("retailer", "loyalty"),
    ]
    .into_iter()
    .map(|(n, d)| {
        let others: Vec<&str> = partners.iter().copied().filter(|p| *p != n).collect();
        NodeSetup::new(n, g.dataset_toml(n), open_policy(&others, &[d]))
    })
    .collect();
    let fed = Federation::start_with_limits(dir, setups, limits)
        .await
        .unwrap();
    (fed, g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_and_cardinality_equal_the_truth_on_messy_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 3000, None).await;

    // match: brand learns which of its records the publisher (hashed emails + phones) has.
    let job = fed
        .run_job(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    let truth = g.truth_match("brand", "publisher", None);
    assert!(truth.len() > 500, "generator should give a real overlap");
    let got = read_match_keys(&psi.match_output).unwrap();
    assert_eq!(got, truth);
    assert_eq!(psi.intersection_records, truth.len() as u64);
    assert!(!psi.suppressed);

    // cardinality: brand learns only the count of its records the retailer has.
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("retailer", "loyalty"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(
        psi.intersection_records,
        g.truth_cardinality("brand", "retailer") as u64
    );
    assert!(
        psi.match_output.is_empty(),
        "cardinality writes no record list"
    );

    // restricting both sides to the phone column matches on phones only.
    let mut spec = psi_spec(PsiMode::Match, ("retailer", "loyalty"), ("brand", "crm"), 0);
    for p in &mut spec.participants {
        p.columns = vec!["phone".into()];
    }
    let job = fed.run_job(spec).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(
        read_match_keys(&psi.match_output).unwrap(),
        g.truth_match("retailer", "brand", Some(&["phone"]))
    );
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_intersections_are_suppressed() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 1000, None).await;
    let truth = g.truth_cardinality("publisher", "retailer") as u64;
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("publisher", "subscribers"),
            ("retailer", "loyalty"),
            truth + 1,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert!(psi.suppressed);
    assert_eq!(psi.intersection_records, 0);

    let job = fed
        .run_job(psi_spec(
            PsiMode::Match,
            ("publisher", "subscribers"),
            ("retailer", "loyalty"),
            truth + 1,
        ))
        .await
        .unwrap();
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert!(
        psi.suppressed && psi.match_output.is_empty(),
        "no match file when suppressed"
    );

    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("publisher", "subscribers"),
            ("retailer", "loyalty"),
            truth,
        ))
        .await
        .unwrap();
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert!(!psi.suppressed);
    assert_eq!(psi.intersection_records, truth);
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusal_reaches_the_analyst() {
    let tmp = tempfile::tempdir().unwrap();
    parley_net::init_tracing("warn");
    let g = generate(&tmp.path().join("data"), &FederationSpec::demo(300)).unwrap();
    // The publisher only allows cardinality with the brand.
    let setups = vec![
        NodeSetup::new("brand", g.dataset_toml("brand"), open_policy(&["publisher"], &["crm"])),
        NodeSetup::new(
            "publisher",
            g.dataset_toml("publisher"),
            "[[rule]]\npartners = [\"brand\"]\nkinds = [\"psi_cardinality\"]\ndatasets = [\"subscribers\"]\n".into(),
        ),
    ];
    let fed = Federation::start(tmp.path(), setups).await.unwrap();
    let job = fed
        .run_job(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(job.reason.contains("publisher"), "{}", job.reason);
    assert!(job.reason.contains("psi_match"), "{}", job.reason);

    // An unknown dataset is refused with the dataset named.
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "nope"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Refused);
    assert!(job.reason.contains("nope"), "{}", job.reason);

    // What the policy allows still runs.
    let job = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    fed.shutdown().await.unwrap();
}

/// Submits a PSI job with brand's `crm` as receiver and the rogue `mallory` as sender, has
/// mallory accept it, and returns once the job has started.
async fn started_with_mallory(
    fed: &Federation,
    mallory: &mut Rogue,
    mode: PsiMode,
) -> (parley_proto::Job, parley_proto::JobOffer) {
    let job = fed
        .submit(psi_spec(mode, ("brand", "crm"), ("mallory", "any"), 0))
        .await
        .unwrap();
    let offer = mallory.accept_next_offer().await.unwrap();
    mallory.wait_start(&job.id).await.unwrap();
    (job, offer)
}

fn psi_message(body: parley_proto::psi_message::Body) -> Vec<u8> {
    parley_proto::PsiMessage { body: Some(body) }.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_point_from_a_peer_fails_the_job_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 500, Some("mallory")).await;
    let mut mallory = Rogue::connect(&fed, "mallory").await.unwrap();
    let (job, offer) = started_with_mallory(&fed, &mut mallory, PsiMode::Match).await;
    assert_eq!(offer.job_id, job.id);
    let header = psi_message(parley_proto::psi_message::Body::Header(
        parley_proto::PsiHeader {
            stream: PsiStream::SenderBlinded as i32,
            count: 2,
            group_size: 1,
            public_key: Vec::new(),
            group_sizes: Vec::new(),
        },
    ));
    mallory
        .send_sealed(&offer, "brand", 0, &header)
        .await
        .unwrap();
    let mut points = vec![0xffu8; 32]; // not a canonical ristretto255 encoding
    points.extend_from_slice(&[0u8; 32]);
    let batch = psi_message(parley_proto::psi_message::Body::Batch(
        parley_proto::PointBatch {
            stream: PsiStream::SenderBlinded as i32,
            offset: 0,
            points,
        },
    ));
    mallory
        .send_sealed(&offer, "brand", 1, &batch)
        .await
        .unwrap();

    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed);
    assert!(done.reason.contains("brand"), "{}", done.reason);
    assert!(
        done.reason.to_lowercase().contains("point"),
        "{}",
        done.reason
    );

    // Nothing crashed: the next job between honest nodes succeeds.
    let next = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(next.state(), JobState::Succeeded, "{}", next.reason);
    assert_eq!(
        next.result
            .unwrap()
            .psi()
            .cloned()
            .unwrap()
            .intersection_records,
        g.truth_cardinality("brand", "publisher") as u64
    );
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_replayed_envelope_fails_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, _g) = federation(tmp.path(), 300, Some("mallory")).await;
    let mut mallory = Rogue::connect(&fed, "mallory").await.unwrap();
    let (job, offer) = started_with_mallory(&fed, &mut mallory, PsiMode::Cardinality).await;
    let header = psi_message(parley_proto::psi_message::Body::Header(
        parley_proto::PsiHeader {
            stream: PsiStream::SenderBlinded as i32,
            count: 0,
            group_size: 1,
            public_key: Vec::new(),
            group_sizes: Vec::new(),
        },
    ));
    mallory
        .send_sealed(&offer, "brand", 0, &header)
        .await
        .unwrap();
    // Replay of sequence number 0.
    mallory
        .send_sealed(&offer, "brand", 0, &header)
        .await
        .unwrap();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed);
    assert!(done.reason.contains("out of order"), "{}", done.reason);
    fed.shutdown().await.unwrap();
}

/// A node whose host vanishes mid-job (no FIN, no RST: a half-open link) is noticed by the
/// coordinator's HTTP/2 keep-alive; the job fails naming the node instead of holding the others
/// until the job deadline (600 s here, beyond the wait below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_node_link_is_closed_by_keepalive_and_fails_its_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, _g) = federation_with_limits(
        tmp.path(),
        300,
        Some("mallory"),
        "keepalive_interval_secs = 1\nkeepalive_timeout_secs = 1",
    )
    .await;
    let relay = Relay::start(fed.addr).await.unwrap();
    let mut mallory = Rogue::connect_via(&fed, "mallory", relay.addr())
        .await
        .unwrap();
    let (job, _offer) = started_with_mallory(&fed, &mut mallory, PsiMode::Match).await;
    relay.freeze();

    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed);
    assert!(
        done.reason.contains("mallory") && done.reason.contains("disconnected"),
        "{}",
        done.reason
    );
    // The coordinator no longer lists mallory, though mallory's socket is still open.
    let mut analyst = fed.analyst().await.unwrap();
    let nodes = analyst
        .list_nodes(parley_proto::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.iter().all(|n| n.name != "mallory"), "{nodes:?}");
    drop(mallory);
    drop(relay);
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_disconnects_mid_job_fails_it_and_the_next_job_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (fed, g) = federation(tmp.path(), 500, Some("mallory")).await;
    let mut mallory = Rogue::connect(&fed, "mallory").await.unwrap();
    let job = fed
        .submit(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("mallory", "any"),
            0,
        ))
        .await
        .unwrap();
    let offer = mallory.accept_next_offer().await.unwrap();
    mallory.wait_start(&job.id).await.unwrap();
    let header = psi_message(parley_proto::psi_message::Body::Header(
        parley_proto::PsiHeader {
            stream: PsiStream::SenderBlinded as i32,
            count: 1000,
            group_size: 1,
            public_key: Vec::new(),
            group_sizes: Vec::new(),
        },
    ));
    mallory
        .send_sealed(&offer, "brand", 0, &header)
        .await
        .unwrap();
    mallory.disconnect();
    drop(mallory);

    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed);
    assert!(
        done.reason.contains("mallory") && done.reason.contains("disconnected"),
        "{}",
        done.reason
    );

    let next = fed
        .run_job(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(next.state(), JobState::Succeeded, "{}", next.reason);
    let psi = next.result.unwrap().psi().cloned().unwrap();
    assert_eq!(
        read_match_keys(&psi.match_output).unwrap(),
        g.truth_match("brand", "publisher", None)
    );
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_stopped_mid_job_fails_it_and_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, g) = federation(tmp.path(), 20_000, None).await;
    let job = fed
        .submit(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    // Stop the publisher as soon as the job runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = fed.analyst().await.unwrap();
        let j = c
            .get(parley_proto::GetJobRequest {
                job_id: job.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if j.state() == JobState::Running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never started: {:?}",
            j.state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fed.stop_node("publisher").await.unwrap();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    // Either the job beat the stop (tiny window) or it failed naming the publisher.
    if done.state() != JobState::Succeeded {
        assert_eq!(done.state(), JobState::Failed);
        assert!(done.reason.contains("publisher"), "{}", done.reason);
    }
    fed.start_node("publisher").unwrap();
    fed.wait_connected(&["publisher".to_string()], Duration::from_secs(60))
        .await
        .unwrap();
    let next = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(next.state(), JobState::Succeeded, "{}", next.reason);
    assert_eq!(
        next.result
            .unwrap()
            .psi()
            .cloned()
            .unwrap()
            .intersection_records,
        g.truth_cardinality("brand", "publisher") as u64
    );
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_restarted_still_lists_earlier_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, _g) = federation(tmp.path(), 300, None).await;
    let first = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("retailer", "loyalty"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(first.state(), JobState::Succeeded, "{}", first.reason);
    fed.restart_coordinator().await.unwrap();
    let names: Vec<String> = ["brand", "publisher", "retailer"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    fed.wait_connected(&names, Duration::from_secs(60))
        .await
        .unwrap();
    let mut c = fed.analyst().await.unwrap();
    let listed = c
        .list(parley_proto::ListJobsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let again = listed
        .iter()
        .find(|j| j.id == first.id)
        .expect("job survives restart");
    assert_eq!(again.state(), JobState::Succeeded);
    assert_eq!(again.result, first.result);
    // And the federation keeps working.
    let second = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("retailer", "loyalty"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(second.state(), JobState::Succeeded, "{}", second.reason);
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_in_opposite_directions_with_small_batches_all_succeed() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let g = generate(&tmp.path().join("data"), &FederationSpec::demo(4000)).unwrap();
    // Tiny batches: hundreds of envelopes per job, so queues fill and must not deadlock.
    let setups = [("brand", "crm"), ("publisher", "subscribers")]
        .into_iter()
        .map(|(n, d)| {
            let other = if n == "brand" { "publisher" } else { "brand" };
            let mut s = NodeSetup::new(n, g.dataset_toml(n), open_policy(&[other], &[d]));
            s.extra_toml = "[limits]\nbatch_points = 64\n".into();
            s
        })
        .collect();
    let fed = Federation::start(tmp.path(), setups).await.unwrap();
    let specs = [
        psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ),
        psi_spec(
            PsiMode::Match,
            ("publisher", "subscribers"),
            ("brand", "crm"),
            0,
        ),
        psi_spec(
            PsiMode::Cardinality,
            ("brand", "crm"),
            ("publisher", "subscribers"),
            0,
        ),
        psi_spec(
            PsiMode::Cardinality,
            ("publisher", "subscribers"),
            ("brand", "crm"),
            0,
        ),
    ];
    let mut ids = Vec::new();
    for s in specs {
        ids.push(fed.submit(s).await.unwrap().id);
    }
    let expect = [
        g.truth_cardinality("brand", "publisher"),
        g.truth_cardinality("publisher", "brand"),
        g.truth_cardinality("brand", "publisher"),
        g.truth_cardinality("publisher", "brand"),
    ];
    for (id, want) in ids.iter().zip(expect) {
        let job = fed.wait(id, Duration::from_secs(300)).await.unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
        assert_eq!(
            job.result
                .unwrap()
                .psi()
                .cloned()
                .unwrap()
                .intersection_records,
            want as u64
        );
    }
    fed.shutdown().await.unwrap();
}

/// Advertising IDs written differently on each side, and SHA-256 digests sent in base64 or
/// upper-case hex, match their plain counterparts; an opted-out (all-zero) ID never matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertising_ids_and_prehashed_identifiers_match_their_plain_forms() {
    use base64::Engine as _;
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let maid = |i: u32| format!("{i:08x}-2f65-4e4a-9d1b-1c6d3b8f0a7e");
    let digest = |email: &str| ring::digest::digest(&ring::digest::SHA256, email.as_bytes());
    // brand: plain emails and lowercase hyphenated MAIDs; record 0 carries the opt-out ID.
    let mut brand =
        String::from("id,email,maid\n0,zero@example.com,00000000-0000-0000-0000-000000000000\n");
    for i in 1..=20 {
        brand.push_str(&format!("B{i},user{i}@example.com,{}\n", maid(i)));
    }
    // publisher: the same people, half by an upper-case un-hyphenated MAID, half by the
    // SHA-256 of the email in base64 or upper-case hex; plus the opt-out ID and strangers.
    // (A column is written in one encoding: base64 and hex digests are in separate columns.)
    let mut publisher =
        String::from("id,maid,email_sha256,email_b64\nP0,00000000000000000000000000000000,,\n");
    for i in 1..=20 {
        let d = digest(&format!("user{i}@example.com"));
        if i % 2 == 0 {
            publisher.push_str(&format!(
                "P{i},{},,\n",
                maid(i).replace('-', "").to_uppercase()
            ));
        } else if i % 4 == 1 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(d.as_ref());
            publisher.push_str(&format!("P{i},,,{b64}\n"));
        } else {
            publisher.push_str(&format!("P{i},,{},\n", hex::encode_upper(d.as_ref())));
        }
    }
    publisher.push_str(&format!("S1,{},,\n", maid(99)));
    let fed = Federation::start(
        tmp.path(),
        vec![
            NodeSetup::new(
                "brand",
                csv_dataset(
                    &data,
                    "crm",
                    "id",
                    &brand,
                    &[("email", "email"), ("maid", "maid")],
                    "",
                )
                .unwrap(),
                open_policy(&["publisher"], &["crm"]),
            ),
            NodeSetup::new(
                "publisher",
                csv_dataset(
                    &data,
                    "subs",
                    "id",
                    &publisher,
                    &[
                        ("maid", "maid"),
                        ("email_sha256", "sha256"),
                        ("email_b64", "sha256"),
                    ],
                    "max_bad_row_fraction = 0.5\n",
                )
                .unwrap(),
                open_policy(&["brand"], &["subs"]),
            ),
        ],
    )
    .await
    .unwrap();
    let job = fed
        .run_job(psi_spec(
            PsiMode::Match,
            ("brand", "crm"),
            ("publisher", "subs"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(psi.intersection_records, 20);
    let keys = read_match_keys(&psi.match_output).unwrap();
    let want: std::collections::BTreeSet<String> = (1..=20).map(|i| format!("B{i}")).collect();
    assert_eq!(keys, want);
    fed.shutdown().await.unwrap();
}

/// Two nodes under Meta's rules match the way Meta's rules say (Gmail dots kept, phones as
/// digits); a job whose profile differs from a node's is refused, naming both profiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_profile_nodes_match_under_meta_rules_and_a_profile_mismatch_is_refused() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // B1/P1: one Gmail address in two spellings of case and dots kept; B2/P2: case and
    // surrounding spaces; B3: the dotless form of B1, a different address under Meta (the
    // same one under Google); B4/P4: one phone written two ways.
    let brand = "id,email,phone\nB1,Jane.Doe@Gmail.com,\nB2, bob@example.com ,\n\
                 B3,janedoe@gmail.com,\nB4,,(650) 555-1213\n";
    let publisher = "id,email,phone\nP1,jane.doe@gmail.com,\nP2,BOB@EXAMPLE.COM,\n\
                     P4,,+1-650-555-1213\nP5,stranger@example.com,\n";
    let columns = [("email", "email"), ("phone", "phone")];
    let meta = "[normalization]\nprofile = \"meta\"\n";
    let node = |name: &str, dataset: &str, csv: &str, partner: &str| {
        let mut setup = NodeSetup::new(
            name,
            csv_dataset(&data, dataset, "id", csv, &columns, "").unwrap(),
            open_policy(&[partner], &[dataset]),
        );
        setup.extra_toml = meta.to_owned();
        setup
    };
    let fed = Federation::start(
        tmp.path(),
        vec![
            node("brand", "crm", brand, "publisher"),
            node("publisher", "subs", publisher, "brand"),
        ],
    )
    .await
    .unwrap();
    let spec = |profile: &str| {
        let mut spec = psi_spec(PsiMode::Match, ("brand", "crm"), ("publisher", "subs"), 0);
        if let Some(parley_proto::job_spec::Params::Psi(p)) = spec.params.as_mut() {
            p.profile = profile.to_owned();
        }
        spec
    };
    let job = fed.run_job(spec("meta")).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.reason);
    let psi = job.result.unwrap().psi().cloned().unwrap();
    assert_eq!(psi.profile, "meta");
    let keys = read_match_keys(&psi.match_output).unwrap();
    let want: std::collections::BTreeSet<String> =
        ["B1", "B2", "B4"].iter().map(|s| s.to_string()).collect();
    assert_eq!(keys, want);

    // No profile in the job means google: both nodes are under meta, so it is refused.
    let job = fed.run_job(spec("")).await.unwrap();
    assert_eq!(job.state(), JobState::Refused, "{}", job.reason);
    assert!(
        job.reason.contains("profile 'google'") && job.reason.contains("profile 'meta'"),
        "{}",
        job.reason
    );
    // An unknown profile is refused at submission, listing the known ones.
    let err = fed.submit(spec("facebook")).await.unwrap_err().to_string();
    assert!(err.contains("unknown profile 'facebook'"), "{err}");
    assert!(err.contains("google, meta, uid2, basic"), "{err}");
    fed.shutdown().await.unwrap();
}

/// A node stopped (Ctrl-C or SIGTERM) while a job runs fails that job with a reason saying
/// so, not with a bare lost link; the federation runs the next job without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_fails_its_running_job_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fed, _g) = federation(tmp.path(), 300, Some("mallory")).await;
    let mut mallory = Rogue::connect(&fed, "mallory").await.unwrap();
    let (job, offer) = started_with_mallory(&fed, &mut mallory, PsiMode::Cardinality).await;
    assert_eq!(offer.job_id, job.id);
    // mallory never sends its points, so brand's job is still running when brand stops.
    fed.stop_node("brand").await.unwrap();
    let done = fed.wait(&job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state(), JobState::Failed);
    assert!(
        done.reason.contains("node 'brand' is shutting down"),
        "{}",
        done.reason
    );
    let next = fed
        .run_job(psi_spec(
            PsiMode::Cardinality,
            ("publisher", "subscribers"),
            ("retailer", "loyalty"),
            0,
        ))
        .await
        .unwrap();
    assert_eq!(next.state(), JobState::Succeeded, "{}", next.reason);
    fed.shutdown().await.unwrap();
}
