//! The end-to-end harness shared by the operator's tests and the benchmark: a real control
//! plane, the real `lro-operator` binary, the upstream simulator (`lro-sim`), real `kubectl`.
//! Each [`TestEnv`] owns a namespace, a simulator, a provider and an operator.

mod bins;
mod cluster;
pub mod health;
pub mod helm;
pub mod leader;
pub mod metrics;
pub mod process;
mod status_log;

pub use bins::{operator_bin, sim_bin};

use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use lro_operator::api::{LongRunningOperation, LongRunningOperationStatus, Phase};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use cluster::Output;
use cluster::{Cluster, cluster};
pub use metrics::samples;
use status_log::StatusLog;
pub use status_log::Write;

/// The name of the `OperationProvider` every environment creates.
pub const PROVIDER: &str = "sim";
/// How often [`TestEnv::wait_for`] looks at the object.
const POLL: Duration = Duration::from_millis(150);
/// Lines of the operator's log printed when a test fails.
const LOG_TAIL: usize = 80;
/// Set to keep every environment's logs, not only those of failed tests.
const KEEP_LOGS: &str = "LRO_E2E_KEEP_LOGS";

/// One test's world: a fresh namespace with a simulator, a provider pointing at it, and an operator.
pub struct TestEnv {
    /// The namespace.
    pub ns: String,
    /// Operations in the namespace.
    pub lros: Api<LongRunningOperation>,
    cluster: &'static Cluster,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT`, the simulator's root.
    sim_url: String,
    status_log: StatusLog,
    _sim: Child,
    operator: Option<Child>,
    /// Extra flags of `lro-operator run` (see [`TestEnv::restart_operator_with`]).
    operator_args: Vec<String>,
    /// The operator's `RUST_LOG` (see [`TestEnv::set_operator_log_filter`]).
    operator_log_filter: String,
    /// Start the operator with `--allow-private-networks` (the simulator listens on loopback);
    /// see [`TestEnv::set_private_networks`].
    pub(crate) private_networks: bool,
    /// Logs of the simulator and the operator; kept when the test fails.
    logs: Option<tempfile::TempDir>,
}

impl TestEnv {
    /// A namespace `<name>-<suffix>`, a simulator, provider `sim`, and a running operator.
    pub async fn new(name: &str) -> TestEnv {
        TestEnv::on(cluster().await, name).await
    }

    /// Like [`TestEnv::new`], on `cluster` instead of the shared control plane.
    pub async fn on(cluster: &'static Cluster, name: &str) -> TestEnv {
        let client = cluster.client().await;
        let ns = format!("{name}-{}", suffix());
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))
            .unwrap_or_else(|e| panic!("namespace object: {e}"));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {ns}: {e}"));
        let lros = Api::namespaced(client, &ns);
        let status_log = StatusLog::start(lros.clone()).await;
        let logs = tempfile::Builder::new()
            .prefix(&format!("lro-e2e-{ns}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a log dir: {e}"));
        let (sim, sim_url) = start_sim(&log_file(&logs.path().join("sim.log"))).await;
        let mut env = TestEnv {
            ns,
            lros,
            cluster,
            http: reqwest::Client::new(),
            sim_url,
            status_log,
            _sim: sim,
            operator: None,
            operator_args: Vec::new(),
            operator_log_filter: "info,lro_operator=debug".into(),
            private_networks: true,
            logs: Some(logs),
        };
        let provider = json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "OperationProvider",
            "metadata": {"name": PROVIDER},
            "spec": {
                "baseURL": format!("{}/v1", env.sim_url),
                "protocol": "google",
                // The simulator's generic collections follow AIP-155: their create methods
                // declare `requestId`, so starts are idempotent.
                "google": {"requestIdParameter": "requestId"},
                "polling": {"initialInterval": "500ms", "maxInterval": "2s"},
            },
        });
        env.apply(&provider.to_string()).await.assert_ok();
        env.start_operator().await;
        env
    }

    // ------------------------------------------------------------------------------ operator

    /// `http://127.0.0.1:PORT`, the simulator's root (each protocol lives under its own prefix).
    pub fn sim_url(&self) -> &str {
        &self.sim_url
    }

    /// Starts `lro-operator run --namespace NS`, appending to the operator log.
    pub async fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "the operator is already running");
        let path = self.operator_log();
        let mut log = log_file(&path);
        let _ = writeln!(log, "===== e2e: operator started at unix ms {}", unix_ms());
        let stdout = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot reopen {}: {e}", path.display()));
        let child = Command::new(operator_bin())
            .args(["run", "--namespace", &self.ns, "--leader-elect=false"])
            // Any free loopback port (tests run side by side); see `health.rs`.
            .args(["--health-addr", "127.0.0.1:0"])
            // The simulator listens on loopback: a cluster admin's flag lets every provider
            // reach it (a namespaced provider cannot open private networks itself).
            .args(self.private_networks.then_some("--allow-private-networks"))
            .args(&self.operator_args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("RUST_LOG", &self.operator_log_filter)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} run: {e}", operator_bin().display()));
        self.operator = Some(child);
    }

    /// Kills the operator (SIGKILL: a crash, not a graceful stop) and waits for it to exit.
    pub async fn kill_operator(&mut self) {
        let mut child = self.operator.take().expect("the operator is not running");
        child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("cannot kill the operator: {e}"));
        let mut log = log_file(&self.operator_log());
        let _ = writeln!(log, "===== e2e: operator killed at unix ms {}", unix_ms());
    }

    /// Restarts the operator with extra flags (kept for later restarts), e.g.
    /// `["--request-timeout", "1s"]`.
    pub async fn restart_operator_with(&mut self, args: &[&str]) {
        if self.operator.is_some() {
            self.kill_operator().await;
        }
        self.operator_args = args.iter().map(|a| (*a).to_owned()).collect();
        self.start_operator().await;
    }

    /// Whether the operator's next start has `--allow-private-networks` (default: yes, the
    /// simulator listens on loopback).
    pub fn set_private_networks(&mut self, allow: bool) {
        self.private_networks = allow;
    }

    /// Sets the operator's `RUST_LOG` for its next start (e.g. `debug`).
    pub fn set_operator_log_filter(&mut self, filter: &str) {
        self.operator_log_filter = filter.to_owned();
    }

    /// The operator's log file (stdout and stderr of every start).
    pub fn operator_log_path(&self) -> PathBuf {
        self.operator_log()
    }

    /// The process id of the running operator.
    pub fn operator_pid(&self) -> Option<u32> {
        self.operator.as_ref().and_then(Child::id)
    }

    fn operator_log(&self) -> PathBuf {
        self.log_dir().join("operator.log")
    }

    fn log_dir(&self) -> PathBuf {
        self.logs
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------------------ kubectl

    /// `kubectl -n NS ARGS…`.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.cluster.kubectl(&self.namespaced(args), None).await
    }

    /// `kubectl -n NS apply -f -` with `manifest` (YAML or JSON) on stdin.
    pub async fn apply(&self, manifest: &str) -> Output {
        let args = self.namespaced(&["apply", "-f", "-"]);
        self.cluster.kubectl(&args, Some(manifest)).await
    }

    /// The cluster's admin kubeconfig (for cleanups that must run in `Drop`).
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.cluster.kubeconfig
    }

    fn namespaced<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        all
    }

    // ------------------------------------------------------------------------------ objects

    /// The operation `name` (panics if it does not exist).
    pub async fn get(&self, name: &str) -> LongRunningOperation {
        self.lros
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("cannot get lro/{name} in {}: {e}", self.ns))
    }

    /// Polls `name` until `predicate` holds; panics with the last status after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&LongRunningOperation) -> bool,
    ) -> LongRunningOperation {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.lros.get_opt(name).await {
                Ok(Some(op)) if predicate(&op) => return op,
                Ok(Some(op)) => pretty(&op.status),
                Ok(None) => "(not found)".into(),
                Err(e) => format!("(get failed: {e})"),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "lro/{name} in {}: not {what} within {timeout:?}; last status:\n{last}",
                    self.ns
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `name` is in `phase`.
    pub async fn wait_phase(
        &self,
        name: &str,
        phase: Phase,
        timeout: Duration,
    ) -> LongRunningOperation {
        let what = format!("in phase {}", phase.as_str());
        self.wait_for(name, &what, timeout, |op| phase_of(op) == Some(phase))
            .await
    }

    /// Applies an `OperationProvider` `name` speaking `protocol` at `prefix` under this
    /// environment's simulator (loopback allowed, polled from 500 ms up to 2 s), with `extra`
    /// merged into its spec.
    pub async fn provider(&self, name: &str, protocol: &str, prefix: &str, extra: Value) {
        let mut manifest = json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "OperationProvider",
            "metadata": {"name": name},
            "spec": {
                "baseURL": format!("{}{prefix}", self.sim_url),
                "protocol": protocol,
                "polling": {"initialInterval": "500ms", "maxInterval": "2s"},
            },
        });
        if let (Some(spec), Some(extra)) = (manifest["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.apply(&manifest.to_string()).await.assert_ok();
    }

    /// Applies a `LongRunningOperation` `name` on `provider`, with `spec` merged into its spec.
    pub async fn operation(&self, name: &str, provider: &str, spec: Value) {
        let mut manifest = json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "LongRunningOperation",
            "metadata": {"name": name},
            "spec": {"providerRef": {"name": provider}},
        });
        if let (Some(s), Some(extra)) = (manifest["spec"].as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        self.apply(&manifest.to_string()).await.assert_ok();
    }

    /// Every status the operator wrote to `name` since the environment was created, in order.
    pub fn status_writes(&self, name: &str) -> Vec<Write> {
        self.status_log.writes(name)
    }

    /// Every status written to `name` so far, once the watch has delivered one for which
    /// `written` holds (a GET can see a write before the watch does); panics after 10 s.
    pub async fn status_writes_through(
        &self,
        name: &str,
        written: impl Fn(&LongRunningOperationStatus) -> bool,
    ) -> Vec<Write> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let writes = self.status_log.writes(name);
            if writes.iter().any(|w| written(&w.status)) {
                return writes;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lro/{name} in {}: the watch delivered no such status write within 10 s",
                self.ns
            );
            tokio::time::sleep(POLL).await;
        }
    }

    // ------------------------------------------------------------------------------ simulator

    /// `GET /sim/stats`.
    pub async fn sim_stats(&self) -> Value {
        self.sim_call(self.http.get(format!("{}/sim/stats", self.sim_url)))
            .await
    }

    /// The stats of one simulated operation (`gets`, `cancels`, `getTimesMs`, …).
    pub async fn sim_operation(&self, name: &str) -> Value {
        let stats = self.sim_stats().await;
        let op = &stats["operations"][name];
        assert!(op.is_object(), "the simulator has no {name}: {stats:#}");
        op.clone()
    }

    /// The operation as the upstream serves it (`GET /v1/NAME`; counts as a GET).
    pub async fn sim_upstream(&self, name: &str) -> Value {
        self.sim_call(self.http.get(format!("{}/v1/{name}", self.sim_url)))
            .await
    }

    /// Creates an operation in the simulator (as if someone else had started it); returns its name.
    pub async fn sim_adoptable(&self, script: Value) -> String {
        let url = format!("{}/sim/operations", self.sim_url);
        let op = self.sim_call(self.http.post(url).json(&script)).await;
        op["name"]
            .as_str()
            .unwrap_or_else(|| panic!("no name in {op}"))
            .to_owned()
    }

    async fn sim_call(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("simulator call failed: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("simulator answer is not JSON: {e}"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed || std::env::var_os(KEEP_LOGS).is_some() {
            let dir = self.logs.take().map(tempfile::TempDir::keep);
            let dir = dir.unwrap_or_default();
            eprintln!(
                "===== namespace {}: logs kept in {} (operator.log, sim.log)",
                self.ns,
                dir.display()
            );
            if failed {
                let log = std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
                eprintln!("===== operator log tail:\n{tail}\n=====");
                // Leave the namespace for inspection.
                return;
            }
        }
        // Best effort, not awaited: a bare apiserver never finishes deleting a namespace.
        let _ = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .env("KUBECACHEDIR", &self.cluster.cache_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

/// Starts the simulator (`lro-sim`) on a free port; returns it and its root URL.
async fn start_sim(log: &File) -> (Child, String) {
    let stderr = log
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot reopen the sim log: {e}"));
    let mut child = Command::new(sim_bin())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", sim_bin().display()));
    let stdout = child.stdout.take().expect("sim stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the simulator did not announce its address within 30s")
        .unwrap_or_else(|e| panic!("cannot read the simulator's stdout: {e}"))
        .expect("the simulator exited before announcing its address");
    let url = first
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the simulator: {first:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// `path`, opened for appending (created if missing).
fn log_file(path: &std::path::Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// A short random lowercase suffix for namespace names.
fn suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut n = std::collections::hash_map::RandomState::new()
        .hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), unix_ms()));
    (0..6)
        .map(|_| {
            let digit = (n % 36) as u32;
            n /= 36;
            char::from_digit(digit, 36).unwrap_or('x')
        })
        .collect()
}

/// The wall clock in unix milliseconds (the simulator's clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The phase of `op`, if it has one.
pub fn phase_of(op: &LongRunningOperation) -> Option<Phase> {
    op.status.as_ref().and_then(|s| s.phase)
}

/// The status of `op`; panics if it has none.
#[track_caller]
pub fn status_of(op: &LongRunningOperation) -> &LongRunningOperationStatus {
    op.status.as_ref().unwrap_or_else(|| {
        panic!(
            "{} has no status",
            op.metadata.name.as_deref().unwrap_or("?")
        )
    })
}

/// A JSON rendering of anything, for messages.
pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(unprintable: {e})"))
}
