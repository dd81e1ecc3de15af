//! Helpers for the chart and tenancy tests (`tests/chart.rs`, `tests/tenancy.rs`): Helm 4 built
//! by `hack/build-tools`, kubectl and helm with a kubeconfig of their own (the admin's, or a
//! ServiceAccount token's), and the operator binary run as a given identity with the chart's
//! arguments.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::{Output, TestEnv};

/// How long one helm or kubectl call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);
/// The repository root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The chart, as a path.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/lro-operator");

static HELM: OnceCell<PathBuf> = OnceCell::const_new();

/// The Helm binary: `hack/build-tools helm` (a no-op when it is up to date), then its path.
pub async fn helm_bin() -> &'static Path {
    HELM.get_or_init(|| async {
        let script = format!("{ROOT}/hack/build-tools");
        let build = run(Command::new(&script).arg("helm"), None).await;
        assert!(build.success, "cannot build Helm: {build}");
        let path = run(Command::new(&script).args(["--print-path", "helm"]), None).await;
        let path = PathBuf::from(path.assert_ok().stdout.trim());
        assert!(path.is_file(), "no Helm at {}", path.display());
        path
    })
    .await
}

/// Runs `command` (feeding `stdin`), with a timeout; never panics on a non-zero exit.
pub async fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    let std = command.as_std();
    let mut line = std.get_program().to_string_lossy().into_owned();
    for arg in std.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("cannot write to `{line}`: {e}"));
    }
    let out = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within {CALL_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("`{line}` failed to run: {e}"));
    Output {
        command: line,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("exceeds the supported minor version skew"))
            .map(|l| format!("{l}\n"))
            .collect(),
        success: out.status.success(),
    }
}

/// One identity on the test cluster: a kubeconfig file of its own, and kubectl/helm/operator
/// commands that use it. Helm's and kubectl's caches live in the same temporary folder.
pub struct Identity {
    /// The kubeconfig file.
    pub kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Identity {
    /// The admin of the test cluster behind `env` (a self-contained copy of its kubeconfig).
    pub async fn admin(env: &TestEnv) -> Identity {
        let view = env
            .kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "json",
            ])
            .await
            .assert_ok();
        Identity::write(&view.stdout, "admin")
    }

    /// A bearer token for `serviceaccount` in `namespace`, from the TokenRequest API (what the
    /// kubelet mounts into the chart's pods), on the admin's cluster.
    pub async fn service_account(admin: &Identity, namespace: &str, name: &str) -> Identity {
        let token = admin
            .kubectl(
                &["create", "token", name, "-n", namespace, "--duration=1h"],
                None,
            )
            .await
            .assert_ok()
            .stdout
            .trim()
            .to_owned();
        assert!(
            !token.is_empty(),
            "TokenRequest for {namespace}/{name} gave no token"
        );
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&admin.kubeconfig).unwrap_or_default())
                .unwrap_or_else(|e| panic!("admin kubeconfig is not JSON: {e}"));
        let users = config["users"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("no users in the admin kubeconfig"));
        assert_eq!(users.len(), 1, "a minified kubeconfig has one user");
        users[0]["user"] = serde_json::json!({"token": token});
        users[0]["name"] = Value::from(format!("system:serviceaccount:{namespace}:{name}"));
        let user = users[0]["name"].clone();
        for context in config["contexts"].as_array_mut().into_iter().flatten() {
            context["context"]["user"] = user.clone();
            context["context"]["namespace"] = Value::from(namespace);
        }
        Identity::write(&config.to_string(), "serviceaccount")
    }

    /// The operator Deployment of the chart's release `release` in `namespace` (as JSON), and
    /// the identity its pods would run as: a token of the ServiceAccount it names.
    pub async fn release_operator(&self, release: &str, namespace: &str) -> (Value, Identity) {
        let selector = format!("app.kubernetes.io/instance={release}");
        let deployments = self
            .kubectl(
                &[
                    "get",
                    "deployment",
                    "-n",
                    namespace,
                    "-l",
                    &selector,
                    "-o",
                    "json",
                ],
                None,
            )
            .await
            .assert_ok();
        let deployments: Value = serde_json::from_str(&deployments.stdout)
            .unwrap_or_else(|e| panic!("deployment list is not JSON: {e}"));
        let deployment = deployments["items"][0].clone();
        let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or_else(|| panic!("no serviceAccountName: {deployment:#}"))
            .to_owned();
        let identity = Identity::service_account(self, namespace, &sa).await;
        (deployment, identity)
    }

    /// No cluster at all: for `helm lint` and `helm template`.
    pub fn offline() -> Identity {
        Identity::write("apiVersion: v1\nkind: Config\n", "offline")
    }

    fn write(kubeconfig: &str, what: &str) -> Identity {
        let dir = tempfile::Builder::new()
            .prefix(&format!("lro-chart-{what}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Identity {
            kubeconfig: path,
            dir,
        }
    }

    /// `kubectl ARGS…` as this identity.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"));
        run(&mut command, stdin).await
    }

    /// `helm ARGS…` as this identity (its config, cache and data in a private folder).
    pub async fn helm(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("helm");
        let mut command = Command::new(helm_bin().await);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        run(&mut command, None).await
    }

    /// `kubectl auth can-i VERB RESOURCE [flags]` as this identity: `true` for "yes".
    pub async fn can_i(&self, verb: &str, resource: &str, flags: &[&str]) -> bool {
        let mut args = vec!["auth", "can-i", verb, resource];
        args.extend_from_slice(flags);
        let out = self.kubectl(&args, None).await;
        match out.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => panic!("unexpected answer: {out}"),
        }
    }
}

/// The arguments the chart gives the operator container of `deployment` (a Deployment as JSON),
/// with `$(VAR)` references expanded from `env` as the kubelet would.
pub fn container_args(deployment: &Value, env: &[(&str, &str)]) -> Vec<String> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {deployment:#}"));
    assert_eq!(containers.len(), 1, "the chart runs one container");
    containers[0]["args"]
        .as_array()
        .unwrap_or_else(|| panic!("no args in {deployment:#}"))
        .iter()
        .map(|a| {
            let mut arg = a.as_str().unwrap_or_default().to_owned();
            for (name, value) in env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            arg
        })
        .collect()
}

/// A free loopback port (free now; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Checks a webhook's serving certificate with `openssl`: `secret_data` (a `kubernetes.io/tls`
/// Secret's `data`, base64) holds a `tls.crt` that `ca_bundle` (base64 PEM, as in a webhook's
/// `clientConfig.caBundle`) verifies for a TLS server named `hostname`, and the matching
/// `tls.key`. Returns the certificate's DNS subject alternative names, in order.
pub async fn verify_serving_cert(
    ca_bundle: &str,
    secret_data: &Value,
    hostname: &str,
) -> Vec<String> {
    use base64::Engine as _;
    let dir = tempfile::Builder::new()
        .prefix("lro-chart-tls-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let write = |name: &str, b64: &str| {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|e| panic!("{name} is not base64: {e}"));
        let pem = String::from_utf8(pem).unwrap_or_else(|e| panic!("{name} is not PEM: {e}"));
        assert!(pem.contains("-----BEGIN "), "{name} is not PEM: {pem}");
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        path.to_string_lossy().into_owned()
    };
    let field = |key: &str| {
        secret_data[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the Secret: {secret_data:#}"))
    };
    let ca = write("ca.pem", ca_bundle);
    let crt = write("tls.crt", field("tls.crt"));
    let key = write("tls.key", field("tls.key"));
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args);
        async move { run(&mut command, None).await.assert_ok().stdout }
    };
    let verified = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "sslserver",
        "-verify_hostname",
        hostname,
        &crt,
    ])
    .await;
    assert!(
        verified.trim_end().ends_with(": OK"),
        "openssl verify: {verified}"
    );
    let cert_key = openssl(&["x509", "-in", &crt, "-noout", "-pubkey"]).await;
    let key_key = openssl(&["pkey", "-in", &key, "-pubout"]).await;
    assert_eq!(cert_key, key_key, "tls.key is not the key of tls.crt");
    let sans = openssl(&["x509", "-in", &crt, "-noout", "-ext", "subjectAltName"]).await;
    sans.split([',', '\n'])
        .filter_map(|s| s.trim().strip_prefix("DNS:"))
        .map(str::to_owned)
        .collect()
}

/// The operator binary, run as some identity (a pod of the chart's Deployment would run it so);
/// its log is printed if the test fails.
pub struct Operator {
    child: tokio::process::Child,
    log: tempfile::NamedTempFile,
}

impl Operator {
    /// Runs `lro-operator ARGS…` as `identity`, with `env` (the downward API's variables).
    pub fn start(
        args: &[String],
        identity: &Identity,
        env: &[(&str, &str)],
        tag: &str,
    ) -> Operator {
        use std::io::Write as _;
        let log = tempfile::Builder::new()
            .prefix(&format!("lro-chart-operator-{tag}-"))
            .suffix(".log")
            .tempfile()
            .unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
        // Append mode: stdout and stderr share the file without overwriting each other.
        let reopen = || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(log.path())
                .unwrap_or_else(|e| panic!("cannot reopen the log: {e}"))
        };
        let (out, err) = (reopen(), reopen());
        writeln!(&out, "===== lro-operator {}", args.join(" ")).ok();
        let child = Command::new(crate::operator_bin())
            .args(args)
            .env("KUBECONFIG", &identity.kubeconfig)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,lro_operator=debug,kube_runtime=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start lro-operator: {e}"));
        Operator { child, log }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it still runs (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("===== operator (as the chart's ServiceAccount) log tail:\n{tail}\n=====");
        }
    }
}

/// The long flags `lro-operator run` knows.
pub async fn known_run_flags() -> std::collections::BTreeSet<String> {
    let out = run(
        Command::new(crate::operator_bin()).args(["run", "--help"]),
        None,
    )
    .await
    .assert_ok();
    out.stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

/// The chart's container arguments (`run …`, from [`container_args`]) as this binary can run
/// them here: the health server on a free loopback port instead of `0.0.0.0:8080`, and the
/// flags it does not know yet left out (and named on stderr).
pub async fn runnable_args(chart_args: &[String]) -> Vec<String> {
    let known = known_run_flags().await;
    let health = format!("--health-addr=127.0.0.1:{}", free_port());
    let mut args = vec!["run".to_owned()];
    let mut not_yet = Vec::new();
    for arg in chart_args.iter().skip(1) {
        let flag = arg.split('=').next().unwrap_or_default();
        if !known.contains(flag) {
            not_yet.push(arg.clone());
            continue;
        }
        args.push(match flag {
            "--health-addr" => health.clone(),
            // Leader election as the chart sets it: proves the lease Role.
            _ => arg.clone(),
        });
    }
    if !not_yet.is_empty() {
        eprintln!("chart arguments this lro-operator does not know yet (left out): {not_yet:?}");
    }
    args
}
