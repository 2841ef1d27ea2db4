//! `parleyctl` against a real in-process federation: submit --wait, result --json, jobs,
//! status, nodes, and the exit codes of a refused job and a bad call.

#![allow(clippy::unwrap_used)]

use parley_ctl::{Cli, run};
use parley_tests::r#gen::{FederationSpec, generate};
use parley_tests::harness::{Federation, NodeSetup, open_policy};

async fn ctl(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["parleyctl", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parleyctl_submits_watches_and_reports() {
    parley_net::init_tracing("warn");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let g = generate(&dir.join("data"), &FederationSpec::demo(800)).unwrap();
    let fed = Federation::start(
        dir,
        vec![
            NodeSetup::new("brand", g.dataset_toml("brand"), open_policy(&["publisher"], &["crm"])),
            NodeSetup::new(
                "publisher",
                g.dataset_toml("publisher"),
                // The publisher only allows cardinality.
                "[[rule]]\npartners = [\"brand\"]\nkinds = [\"psi_cardinality\"]\ndatasets = [\"subscribers\"]\n".into(),
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
    let job_file = |name: &str, mode: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "label = \"overlap\"\nkind = \"psi\"\n[psi]\nmode = \"{mode}\"\n\
                 [[participants]]\nnode = \"brand\"\ndataset = \"crm\"\nrole = \"receiver\"\n\
                 [[participants]]\nnode = \"publisher\"\ndataset = \"subscribers\"\nrole = \"sender\"\n"
            ),
        )
        .unwrap();
        p
    };

    let (code, out) = ctl(
        &config,
        &[
            "submit",
            job_file("card.toml", "cardinality").to_str().unwrap(),
            "--wait",
            "--no-progress",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let job_id = out.lines().next().unwrap().trim().to_string();
    assert!(job_id.starts_with("job-"), "{out}");
    let truth = g.truth_cardinality("brand", "publisher");
    assert!(
        out.contains(&truth.to_string()),
        "result should show {truth}: {out}"
    );

    let (code, out) = ctl(&config, &["result", &job_id, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "succeeded", "{out}");
    assert_eq!(v["result"]["psi"]["intersection_records"], truth as u64);

    // The HTML report of the same job: one match-rate bar, the exact figure, the parties.
    let page_path = dir.join("reports").join("card.html");
    std::fs::create_dir_all(page_path.parent().unwrap()).unwrap();
    let (code, out) = ctl(
        &config,
        &["report", &job_id, "--out", page_path.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("card.html"), "{out}");
    let page = std::fs::read_to_string(&page_path).unwrap();
    let bar = format!("fill=\"{}\"", parley_ctl::report::chart::BAR_FILL);
    assert_eq!(page.matches(&bar).count(), 1, "one match-rate bar: {page}");
    for needle in [
        "brand",
        "publisher",
        "subscribers",
        "Who took part",
        &truth.to_string(),
    ] {
        assert!(page.contains(needle), "{needle} missing from the report");
    }
    // A report into a directory that does not exist is a clear error, and writes nothing.
    let missing = dir.join("no-such-dir").join("r.html");
    let (code, out) = ctl(
        &config,
        &["report", &job_id, "--out", missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot write") && out.contains("no-such-dir"),
        "{out}"
    );

    let (code, out) = ctl(&config, &["jobs"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&job_id), "{out}");
    let (code, out) = ctl(&config, &["status", &job_id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("succeeded"), "{out}");
    let (code, out) = ctl(&config, &["nodes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("brand") && out.contains("publisher"), "{out}");

    // The publisher's policy refuses match: exit code 2 with the node's reason.
    let (code, out) = ctl(
        &config,
        &[
            "submit",
            job_file("match.toml", "match").to_str().unwrap(),
            "--wait",
            "--no-progress",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("policy refuses"), "{out}");
    // Its report says why there is no result, and exits 2 like `result`.
    let refused = out.lines().next().unwrap().trim().to_string();
    let page_path = dir.join("reports").join("refused.html");
    let (code, out) = ctl(
        &config,
        &["report", &refused, "--out", page_path.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert!(
        page.contains("released no result") && page.contains("policy refuses"),
        "{page}"
    );

    // An unknown job is an error, not a crash.
    let (code, _out) = ctl(&config, &["status", "job-0000000000000000"]).await;
    assert_ne!(code, 0);
    fed.shutdown().await.unwrap();
}
