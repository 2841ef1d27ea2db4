//! In-process federation: a real coordinator and real nodes on loopback, talking gRPC over
//! mutual TLS 1.3 with certificates from a freshly generated federation CA.
//!
//! Nothing is mocked: the harness calls the same `run` functions the daemons' `main`s call,
//! with a listener bound to `127.0.0.1:0` (no port races), and reaches them through the same
//! `parley-net` client code `parleyctl` uses.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use parley_net::{Role, TlsMaterial};
use parley_node::config::NodeConfig;
use parley_proto::jobs_client::JobsClient;
use parley_proto::{GetJobRequest, Job, JobSpec, ListNodesRequest, SubmitJobRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Name of the analyst certificate the harness issues.
pub const ANALYST: &str = "alice";
/// Name of the auditor certificate the harness issues.
pub const AUDITOR: &str = "audrey";

/// What one node of the federation holds.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// Node name.
    pub name: String,
    /// `[[datasets]]` TOML blocks for its config.
    pub datasets_toml: String,
    /// Its policy file.
    pub policy_toml: String,
    /// Extra top-level TOML tables appended to the config (e.g. `[limits]`).
    pub extra_toml: String,
}

impl NodeSetup {
    /// A node with the given datasets and policy.
    pub fn new(name: &str, datasets_toml: String, policy_toml: String) -> Self {
        NodeSetup {
            name: name.to_string(),
            datasets_toml,
            policy_toml,
            extra_toml: String::new(),
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => bail!("task panicked: {e}"),
            Err(_) => bail!("task did not stop within 20 s"),
        }
    }
}

/// A running federation.
pub struct Federation {
    /// Working directory (certificates, configs, state).
    pub dir: PathBuf,
    /// Certificates directory (`ca.pem`, `ca.key`, `<name>.pem`, `<name>.key`).
    pub certs: PathBuf,
    /// Coordinator address.
    pub addr: SocketAddr,
    coordinator: Option<Running>,
    nodes: HashMap<String, Running>,
    setups: HashMap<String, NodeSetup>,
    /// Extra `key = value` lines for the coordinator's `[limits]` table.
    coordinator_limits: String,
    /// When set, [`Federation::run_job`] writes each finished job's HTML report
    /// (`parleyctl report`'s page) here and prints its path (the demo sets it).
    pub reports: Option<PathBuf>,
}

/// Issues a certificate into `certs` (valid from 5 minutes ago for `days`).
pub fn issue(certs: &Path, role: Role, name: &str, sans: &[String]) -> anyhow::Result<()> {
    let ca_cert = std::fs::read_to_string(certs.join("ca.pem"))?;
    let ca_key = std::fs::read_to_string(certs.join("ca.key"))?;
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = parley_net::ca::issue(
        &ca_cert,
        &ca_key,
        role,
        name,
        sans,
        now - Duration::from_secs(300),
        now + Duration::from_secs(86_400),
    )?;
    parley_net::ca::write_pem_files(certs, name, &cert, &key)?;
    Ok(())
}

impl Federation {
    /// Creates a CA and certificates under `dir`, starts the coordinator and every node, and
    /// waits until all nodes are connected.
    pub async fn start(dir: &Path, nodes: Vec<NodeSetup>) -> anyhow::Result<Federation> {
        Self::start_with_limits(dir, nodes, "").await
    }

    /// As [`Federation::start`], with `limits` (TOML `key = value` lines) added to the
    /// coordinator's `[limits]` table, e.g. a short keep-alive.
    pub async fn start_with_limits(
        dir: &Path,
        nodes: Vec<NodeSetup>,
        limits: &str,
    ) -> anyhow::Result<Federation> {
        parley_net::install_crypto_provider();
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        let (ca_cert, ca_key) = parley_net::ca::init_ca("Parley test CA", 30)?;
        parley_net::ca::write_pem_files(&certs, "ca", &ca_cert, &ca_key)?;
        issue(
            &certs,
            Role::Coordinator,
            "coordinator",
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )?;
        issue(&certs, Role::Analyst, ANALYST, &[])?;
        issue(&certs, Role::Auditor, AUDITOR, &[])?;
        for n in &nodes {
            issue(&certs, Role::Node, &n.name, &[])?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut fed = Federation {
            dir: dir.to_path_buf(),
            certs,
            addr,
            coordinator: None,
            nodes: HashMap::new(),
            setups: HashMap::new(),
            coordinator_limits: limits.to_string(),
            reports: None,
        };
        fed.coordinator = Some(fed.spawn_coordinator(listener)?);
        for n in nodes {
            fed.setups.insert(n.name.clone(), n.clone());
            fed.start_node(&n.name)?;
        }
        let names: Vec<String> = fed.setups.keys().cloned().collect();
        fed.wait_connected(&names, Duration::from_secs(120)).await?;
        Ok(fed)
    }

    fn coordinator_config(&self) -> anyhow::Result<parley_coordinator::CoordinatorConfig> {
        let text = format!(
            "listen = \"{}\"\ndatabase = \"coordinator/jobs.sqlite\"\n[tls]\nca_cert = \"certs/ca.pem\"\ncert = \"certs/coordinator.pem\"\nkey = \"certs/coordinator.key\"\n[limits]\noffer_timeout_secs = 30\njob_deadline_secs = 600\n{}\n",
            self.addr, self.coordinator_limits
        );
        Ok(parley_coordinator::CoordinatorConfig::from_toml_str(
            &text, &self.dir,
        )?)
    }

    fn spawn_coordinator(&self, listener: tokio::net::TcpListener) -> anyhow::Result<Running> {
        let cfg = self.coordinator_config()?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            parley_coordinator::run(cfg, listener, token)
                .await
                .context("coordinator")
        });
        Ok(Running { shutdown, task })
    }

    /// The node config file the harness writes for `name`.
    pub fn node_config_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("node.toml")
    }

    /// The epsilon node `name` has charged to its dataset `dataset` in the current period, read
    /// from its ledger file (read-only, as `parley-node budget` does).
    pub fn spent_epsilon(&self, name: &str, dataset: &str) -> anyhow::Result<f64> {
        let cfg = parley_node::config::NodeConfig::load(&self.node_config_path(name))?;
        let ledger =
            parley_node::ledger::Ledger::open(&cfg.ledger_path(), name, None, cfg.budgets())?;
        let status = ledger.status()?;
        let s = status
            .iter()
            .find(|s| s.dataset == dataset)
            .with_context(|| format!("node '{name}' has no budget for dataset '{dataset}'"))?;
        Ok(s.spent_epsilon)
    }

    /// Writes the node's config and policy and starts it.
    pub fn start_node(&mut self, name: &str) -> anyhow::Result<()> {
        let setup = self
            .setups
            .get(name)
            .with_context(|| format!("unknown node {name}"))?
            .clone();
        let ndir = self.dir.join(name);
        std::fs::create_dir_all(&ndir)?;
        std::fs::write(ndir.join("policy.toml"), &setup.policy_toml)?;
        let certs = self.certs.display();
        let text = format!(
            "name = \"{name}\"\nstate_dir = \"state\"\npolicy = \"policy.toml\"\n\
             [coordinator]\nurl = \"https://{}\"\nserver_name = \"coordinator\"\n\
             [tls]\nca_cert = \"{certs}/ca.pem\"\ncert = \"{certs}/{name}.pem\"\nkey = \"{certs}/{name}.key\"\n\
             [reconnect]\ninitial_ms = 50\nmax_ms = 500\n{}\n{}\n",
            self.addr, setup.extra_toml, setup.datasets_toml
        );
        let path = ndir.join("node.toml");
        std::fs::write(&path, text)?;
        let cfg = NodeConfig::load(&path)?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            parley_node::run(cfg, token).await.context("node")?;
            Ok(())
        });
        self.nodes
            .insert(name.to_string(), Running { shutdown, task });
        Ok(())
    }

    /// Replaces a (stopped) node's policy and starts it again.
    pub fn start_node_with_policy(&mut self, name: &str, policy_toml: &str) -> anyhow::Result<()> {
        self.setups
            .get_mut(name)
            .with_context(|| format!("unknown node {name}"))?
            .policy_toml = policy_toml.to_string();
        self.start_node(name)
    }

    /// Stops a node (as if its process ended: the link drops).
    pub async fn stop_node(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(r) = self.nodes.remove(name) {
            r.stop().await?;
        }
        Ok(())
    }

    /// Stops the coordinator and starts it again on the same address with the same store.
    pub async fn restart_coordinator(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.coordinator.take() {
            c.stop().await?;
        }
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.coordinator = Some(self.spawn_coordinator(l)?);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        bail!("cannot rebind {}: {:?}", self.addr, last)
    }

    /// TLS material for a certificate the harness issued.
    pub fn material(&self, name: &str) -> anyhow::Result<TlsMaterial> {
        Ok(TlsMaterial::load(
            &self.certs.join("ca.pem"),
            &self.certs.join(format!("{name}.pem")),
            &self.certs.join(format!("{name}.key")),
        )?)
    }

    /// A `Jobs` client authenticated with the named certificate.
    pub async fn jobs_client(&self, name: &str) -> anyhow::Result<JobsClient<Channel>> {
        let m = self.material(name)?;
        let ch = parley_net::connect(&format!("https://{}", self.addr), "coordinator", &m).await?;
        Ok(JobsClient::new(ch)
            .max_decoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES)
            .max_encoding_message_size(parley_proto::MAX_JOB_MESSAGE_BYTES))
    }

    /// A `Jobs` client as the analyst.
    pub async fn analyst(&self) -> anyhow::Result<JobsClient<Channel>> {
        self.jobs_client(ANALYST).await
    }

    /// Waits until every named node is connected.
    pub async fn wait_connected(
        &mut self,
        names: &[String],
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // A node that stopped (bad config, unreadable dataset...) will never connect.
            let dead: Vec<String> = self
                .nodes
                .iter()
                .filter(|(_, r)| r.task.is_finished())
                .map(|(n, _)| n.clone())
                .collect();
            if let Some(name) = dead.into_iter().next() {
                let r = self.nodes.remove(&name).context("node vanished")?;
                return match r.task.await {
                    Ok(Ok(())) => bail!("node '{name}' stopped before connecting"),
                    Ok(Err(e)) => Err(e.context(format!("node '{name}' failed to start"))),
                    Err(e) => bail!("node '{name}' panicked: {e}"),
                };
            }
            if let Ok(mut c) = self.analyst().await
                && let Ok(r) = c.list_nodes(ListNodesRequest {}).await
            {
                let have: BTreeSet<String> =
                    r.into_inner().nodes.into_iter().map(|n| n.name).collect();
                if names.iter().all(|n| have.contains(n)) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nodes {names:?} did not all connect within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits a job as the analyst and returns it as stored.
    pub async fn submit(&self, spec: JobSpec) -> anyhow::Result<Job> {
        let mut c = self.analyst().await?;
        Ok(c.submit(SubmitJobRequest { spec: Some(spec) })
            .await?
            .into_inner())
    }

    /// Waits (via `Jobs.Watch`) until the job ends, and returns it.
    pub async fn wait(&self, job_id: &str, limit: Duration) -> anyhow::Result<Job> {
        let mut c = self.analyst().await?;
        let mut stream = c
            .watch(GetJobRequest {
                job_id: job_id.to_string(),
            })
            .await?
            .into_inner();
        let fut = async {
            while let Some(ev) = stream.message().await? {
                if let Some(j) = ev.job
                    && parley_jobs::lifecycle::is_terminal(j.state())
                {
                    return Ok(j);
                }
            }
            bail!("watch stream of {job_id} ended before the job did")
        };
        tokio::time::timeout(limit, fut)
            .await
            .with_context(|| format!("job {job_id} did not end within {limit:?}"))?
    }

    /// Submits a job and waits for it to end.
    pub async fn run_job(&self, spec: JobSpec) -> anyhow::Result<Job> {
        let job = self.submit(spec).await?;
        let job = if parley_jobs::lifecycle::is_terminal(job.state()) {
            job
        } else {
            self.wait(&job.id, Duration::from_secs(600)).await?
        };
        if let Some(dir) = &self.reports {
            let path = write_report(dir, &job)?;
            println!("  report: {}", path.display());
        }
        Ok(job)
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for (_, n) in self.nodes.drain() {
            n.stop().await?;
        }
        if let Some(c) = self.coordinator.take() {
            c.stop().await?;
        }
        Ok(())
    }
}

/// Writes `job`'s HTML report into `dir` as `<label>.html` (the label's letters, digits and
/// dashes, numbered when that file exists; the job id without a label) and returns its path.
pub fn write_report(dir: &Path, job: &Job) -> anyhow::Result<PathBuf> {
    let label = job
        .spec
        .as_ref()
        .map(|s| s.label.as_str())
        .unwrap_or_default();
    let mut name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if name.trim_matches('-').is_empty() {
        name = job.id.clone();
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let name = name.trim_matches('-');
    let mut path = dir.join(format!("{name}.html"));
    let mut n = 1;
    while path.exists() && n < 1000 {
        n += 1;
        path = dir.join(format!("{name}-{n}.html"));
    }
    let page = parley_ctl::report::job_report(job, &[])?;
    std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Reads a match output CSV (header + one record key per line).
pub fn read_match_keys(path: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("open {path}"))?;
    let mut out = BTreeSet::new();
    for rec in r.records() {
        let rec = rec?;
        out.insert(rec.get(0).unwrap_or_default().to_string());
    }
    Ok(out)
}

/// Builds a two-party PSI job spec.
pub fn psi_spec(
    mode: parley_proto::PsiMode,
    receiver: (&str, &str),
    sender: (&str, &str),
    min_intersection: u64,
) -> JobSpec {
    use parley_proto::{JobKind, Participant, PsiParams, PsiRole};
    JobSpec {
        label: format!("{} x {}", receiver.0, sender.0),
        kind: JobKind::Psi as i32,
        participants: vec![
            Participant {
                node: receiver.0.to_string(),
                dataset: receiver.1.to_string(),
                psi_role: PsiRole::Receiver as i32,
                ..Default::default()
            },
            Participant {
                node: sender.0.to_string(),
                dataset: sender.1.to_string(),
                psi_role: PsiRole::Sender as i32,
                ..Default::default()
            },
        ],
        params: Some(parley_proto::job_spec::Params::Psi(PsiParams {
            mode: mode as i32,
            min_intersection,
            ..Default::default()
        })),
    }
}

/// Makes `spec` (a match or cardinality job) a DP job: Laplace noise of `epsilon` on the count,
/// contribution bound `max_records_per_identifier`, the sender matching on `sender_columns`.
pub fn with_dp(
    mut spec: JobSpec,
    epsilon: f64,
    max_records_per_identifier: u32,
    sender_columns: &[&str],
) -> JobSpec {
    use parley_proto::PsiRole;
    if let Some(psi) = spec.psi_mut() {
        psi.dp = Some(laplace(epsilon));
        psi.max_records_per_identifier = max_records_per_identifier;
    }
    for p in &mut spec.participants {
        if p.psi_role() == PsiRole::Sender {
            p.columns = sender_columns.iter().map(|c| c.to_string()).collect();
        }
    }
    spec
}

/// Laplace DP parameters with this epsilon.
pub fn laplace(epsilon: f64) -> parley_proto::DpParams {
    parley_proto::DpParams {
        epsilon,
        mechanism: parley_proto::DpMechanism::Laplace as i32,
        delta: 0.0,
    }
}

/// An intersection-sum job: `values` = (node, dataset) of P2 (email column, `amount` values,
/// receives the result), `ids` = (node, dataset) of P1 matching on `id_columns`, clamping to
/// [lower, upper] with cents, Laplace noise of `epsilon` on the sum and on the count.
pub fn sum_spec(
    values: (&str, &str),
    email_column: &str,
    ids: (&str, &str),
    id_columns: &[&str],
    lower: f64,
    upper: f64,
    epsilon: f64,
) -> JobSpec {
    use parley_proto::{JobKind, Participant, PsiMode, PsiParams, PsiRole};
    JobSpec {
        label: format!("revenue of {} users at {}", ids.0, values.0),
        kind: JobKind::Psi as i32,
        participants: vec![
            Participant {
                node: values.0.to_string(),
                dataset: values.1.to_string(),
                columns: vec![email_column.to_string()],
                psi_role: PsiRole::Receiver as i32,
                value_column: "amount".to_string(),
            },
            Participant {
                node: ids.0.to_string(),
                dataset: ids.1.to_string(),
                psi_role: PsiRole::Sender as i32,
                columns: id_columns.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            },
        ],
        params: Some(parley_proto::job_spec::Params::Psi(PsiParams {
            mode: PsiMode::Sum as i32,
            dp: Some(laplace(epsilon)),
            count_dp: Some(laplace(epsilon)),
            lower,
            upper,
            decimals: 2,
            ..Default::default()
        })),
    }
}

/// A dp_stats job over `node`'s `dataset`: Laplace count (epsilon `eps_count`) and clamped sum
/// of `amount` in [0, 1000] (epsilon `eps_sum`, skipped when 0) per `region` category.
pub fn dp_stats_spec(
    node: &str,
    dataset: &str,
    categories: &[&str],
    bucket_other: bool,
    eps_count: f64,
    eps_sum: f64,
) -> JobSpec {
    use parley_proto::{
        DpMechanism, DpStatsParams, JobKind, Measure, MeasureKind, OtherRows, Participant,
    };
    let mut measures = vec![Measure {
        kind: MeasureKind::Count as i32,
        epsilon: eps_count,
        ..Default::default()
    }];
    if eps_sum > 0.0 {
        measures.push(Measure {
            kind: MeasureKind::Sum as i32,
            column: "amount".to_string(),
            lower: 0.0,
            upper: 1000.0,
            epsilon: eps_sum,
        });
    }
    JobSpec {
        label: format!("segments of {node}"),
        kind: JobKind::DpStats as i32,
        participants: vec![Participant {
            node: node.to_string(),
            dataset: dataset.to_string(),
            ..Default::default()
        }],
        params: Some(parley_proto::job_spec::Params::DpStats(DpStatsParams {
            segment_column: "region".to_string(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            other: if bucket_other {
                OtherRows::Bucket
            } else {
                OtherRows::Drop
            } as i32,
            measures,
            mechanism: DpMechanism::Laplace as i32,
            delta: 0.0,
            min_count: 0,
            decimals: 2,
            max_rows_per_person: 0,
        })),
    }
}

/// A secure_sum job over `nodes` (node, dataset): per `region` category, the row count and
/// the sum of `amount` clamped to [0, 1000] (cents), with a 10 s round deadline, released
/// exactly (`exact = true`; set `dp` and clear `exact` for distributed DP).
pub fn secure_sum_spec(nodes: &[(&str, &str)], categories: &[&str]) -> JobSpec {
    use parley_proto::{JobKind, OtherRows, Participant, SecureSumParams};
    JobSpec {
        label: format!("secure sum over {} nodes", nodes.len()),
        kind: JobKind::SecureSum as i32,
        participants: nodes
            .iter()
            .map(|(n, d)| Participant {
                node: n.to_string(),
                dataset: d.to_string(),
                ..Default::default()
            })
            .collect(),
        params: Some(parley_proto::job_spec::Params::SecureSum(SecureSumParams {
            segment_column: "region".into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            other: OtherRows::Drop as i32,
            count: true,
            value_column: "amount".into(),
            lower: 0.0,
            upper: 1000.0,
            decimals: 2,
            round_timeout_secs: 10,
            exact: true,
            ..Default::default()
        })),
    }
}

/// Makes a secure_sum `spec` release with distributed DP (discrete Gaussian at `epsilon`,
/// `delta`) instead of exactly.
pub fn with_distributed_dp(mut spec: JobSpec, epsilon: f64, delta: f64) -> JobSpec {
    if let Some(p) = spec.secure_sum_mut() {
        p.exact = false;
        p.dp = Some(parley_proto::DpParams {
            epsilon,
            mechanism: parley_proto::DpMechanism::Gaussian as i32,
            delta,
        });
    }
    spec
}

/// A policy letting every node in `partners` run secure_sum on `dataset`, exact sums
/// included.
pub fn secure_sum_policy(partners: &[String], dataset: &str) -> String {
    let q = partners
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[rule]]\npartners = [{q}]\nkinds = [\"secure_sum\"]\ndatasets = [\"{dataset}\"]\n\
         allow_exact_sums = true\n"
    )
}

/// Writes `csv` to `dir/<name>.csv` and returns the `[[datasets]]` TOML block of a dataset of
/// that name with key column `key`, the `(name, kind)` columns and `extra` settings (lines
/// such as `person_column = "customer"\n`).
pub fn csv_dataset(
    dir: &Path,
    name: &str,
    key: &str,
    csv: &str,
    columns: &[(&str, &str)],
    extra: &str,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, csv)?;
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut out = format!(
        "[[datasets]]\nname = {}\npath = {}\nkey_column = {}\n{extra}",
        q(name),
        q(&path.display().to_string()),
        q(key)
    );
    for (c, kind) in columns {
        out.push_str(&format!(
            "\n[[datasets.columns]]\nname = {}\nkind = {}\n",
            q(c),
            q(kind)
        ));
    }
    Ok(out)
}

/// A `[datasets.budget]` table to append after a dataset's TOML block.
pub fn budget_toml(epsilon: f64) -> String {
    format!("\n[datasets.budget]\nepsilon = {epsilon:?}\n")
}

/// A `[datasets.budget]` table with a delta too (for Gaussian releases).
pub fn budget_toml_with_delta(epsilon: f64, delta: f64) -> String {
    format!("\n[datasets.budget]\nepsilon = {epsilon:?}\ndelta = {delta:?}\n")
}

/// A federation of two nodes, brand (`crm`) and publisher (`subscribers`), with `records`
/// generated records each and open policies towards each other.
pub async fn brand_and_publisher(dir: &Path, records: usize) -> anyhow::Result<Federation> {
    let g = crate::r#gen::generate(
        &dir.join("data"),
        &crate::r#gen::FederationSpec::demo(records),
    )?;
    let setups = [
        ("brand", "crm", "publisher"),
        ("publisher", "subscribers", "brand"),
    ]
    .into_iter()
    .map(|(n, d, other)| NodeSetup::new(n, g.dataset_toml(n), open_policy(&[other], &[d])))
    .collect();
    Federation::start(dir, setups).await
}

/// A policy letting `partners` run every job kind on `datasets` in either role (a dp_stats
/// job has no partner, so any rule covers it).
pub fn open_policy(partners: &[&str], datasets: &[&str]) -> String {
    let q = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[rule]]\npartners = [{}]\nkinds = [\"psi_match\", \"psi_cardinality\", \"psi_sum\", \"dp_stats\"]\ndatasets = [{}]\n",
        q(partners),
        q(datasets)
    )
}
