//! The control plane shared by every test of a binary (real kube-apiserver + etcd), and `kubectl`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// How long one `kubectl` call may take before the test fails.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
/// The CRDs the operator needs.
const CRDS: [&str; 3] = [
    "crd/longrunningoperations.lro.dev",
    "crd/operationproviders.lro.dev",
    "crd/clusteroperationproviders.lro.dev",
];

/// A running control plane with the CRDs installed.
pub struct Cluster {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// kubectl's discovery cache, private to this test binary.
    pub cache_dir: PathBuf,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// The control plane: `LRO_E2E_KUBECONFIG` if set, else `hack/control-plane up` (once per binary).
pub async fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start).await
}

/// Installs rustls' ring provider for the kube and reqwest clients (idempotent).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn start() -> Cluster {
    install_crypto();
    let kubeconfig = match std::env::var_os("LRO_E2E_KUBECONFIG") {
        Some(path) => PathBuf::from(path),
        None => control_plane_up(&std::env::temp_dir().join("lro-e2e")).await,
    };
    with_crds(kubeconfig).await
}

/// The cluster of `kubeconfig`, with the CRDs installed.
pub async fn with_crds(kubeconfig: PathBuf) -> Cluster {
    assert!(
        kubeconfig.is_file(),
        "kubeconfig {} does not exist",
        kubeconfig.display()
    );
    // Next to the kubeconfig, so `hack/control-plane down` removes it.
    let cache_dir = kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("kubectl-cache-{}", std::process::id()));
    let cluster = Cluster {
        kubeconfig,
        cache_dir,
    };
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/lro.dev.yaml");
    cluster
        .kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", crds],
            None,
        )
        .await
        .assert_ok();
    let mut wait = vec!["wait", "--for", "condition=established", "--timeout=60s"];
    wait.extend(CRDS);
    cluster.kubectl(&wait, None).await.assert_ok();
    cluster
}

/// Runs `hack/control-plane up --dir DIR` and returns the kubeconfig from its last stdout line.
pub async fn control_plane_up(dir: &Path) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/control-plane");
    let out = Command::new(script)
        .arg("up")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{script} up --dir {}` failed ({}):\n{stderr}",
        dir.display(),
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let path = last
        .strip_prefix("export KUBECONFIG=")
        .unwrap_or_else(|| panic!("unexpected last line of `control-plane up`: {last:?}"));
    PathBuf::from(path.trim_matches('\''))
}

impl Cluster {
    /// Runs kubectl against this cluster with `args`, feeding `stdin` if given.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", &self.cache_dir)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let line = format!("kubectl {}", args.join(" "));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("cannot write to `{line}`: {e}"));
        }
        let out = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{line}` did not finish within {KUBECTL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("`{line}` failed to run: {e}"));
        Output {
            command: line,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: without_skew_warning(&String::from_utf8_lossy(&out.stderr)),
            success: out.status.success(),
        }
    }

    /// A kube client for this cluster (bound to the calling test's runtime). Like the
    /// operator's, it reads `lro.dev` objects nested too deep with the deep parts replaced
    /// (`lro_operator::nesting`), so that a test may create one.
    pub async fn client(&self) -> kube::Client {
        install_crypto();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::client::ClientBuilder::try_from(config)
            .unwrap_or_else(|e| panic!("cannot build a kube client: {e}"))
            .with_layer(&lro_operator::nesting::PruneNesting)
            .build()
    }
}

/// kubectl's stderr without the client/server version-skew warning.
fn without_skew_warning(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("exceeds the supported minor version skew"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// What a kubectl call printed, and whether it succeeded.
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error, without the version-skew warning.
    pub stderr: String,
    /// Exit status 0.
    pub success: bool,
}

impl Output {
    /// Panics unless the command succeeded; returns it for chaining.
    #[track_caller]
    pub fn assert_ok(self) -> Self {
        assert!(self.success, "command failed: {self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.success { "ok" } else { "failed" };
        write!(
            f,
            "`{}` ({status})\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        )
    }
}
