//! Operator replicas with leader election, their Lease, and a control plane of a test's own that
//! it may restart (used by `tests/leader.rs`).

// Each test binary uses a part of the harness.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::process::{Child, Command};

use super::cluster::{Cluster, control_plane_up, with_crds};
use super::{LOG_TAIL, TestEnv, log_file, operator_bin, unix_ms};

/// The name of the Lease the replicas of a [`TestEnv`] compete for (in its namespace).
pub const LEASE: &str = "lro-operator";
const CONTROL_PLANE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/control-plane");

/// One `lro-operator run` process with leader election on.
pub struct Replica {
    /// Its identity in the Lease (`POD_NAME`).
    pub identity: String,
    child: Option<Child>,
    log: PathBuf,
}

impl TestEnv {
    /// Starts `lro-operator run` with leader election on the Lease [`LEASE`] in the test
    /// namespace, `--lease-duration lease`, identity `identity`; logs to `operator-<identity>.log`.
    pub fn start_replica(&self, identity: &str, lease: Duration) -> Replica {
        let lease_duration = format!("{}ms", lease.as_millis());
        self.start_replica_with(
            identity,
            &["--lease-name", LEASE, "--lease-duration", &lease_duration],
        )
    }

    /// Starts `lro-operator run --namespace NS --lease-namespace NS ARGS…` with leader election
    /// on, identity `identity` (`POD_NAME`); logs to `operator-<identity>.log`.
    pub fn start_replica_with(&self, identity: &str, args: &[&str]) -> Replica {
        let log = self.log_dir().join(format!("operator-{identity}.log"));
        let mut out = log_file(&log);
        let _ = writeln!(out, "===== e2e: replica started at unix ms {}", unix_ms());
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot reopen {}: {e}", log.display()));
        let child = Command::new(operator_bin())
            .args([
                "run",
                "--namespace",
                &self.ns,
                "--lease-namespace",
                &self.ns,
            ])
            .args(args)
            .args(["--health-addr", "127.0.0.1:0"])
            // The simulator listens on loopback (see `TestEnv::set_private_networks`).
            .args(self.private_networks.then_some("--allow-private-networks"))
            .env("POD_NAME", identity)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("RUST_LOG", "info,lro_operator=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} run: {e}", operator_bin().display()));
        Replica {
            identity: identity.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The Lease `name` in the test namespace, if it exists.
    pub async fn lease_named(&self, name: &str) -> Option<Lease> {
        let leases: Api<Lease> = Api::namespaced(self.lros.clone().into_client(), &self.ns);
        leases
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("cannot read the Lease {name}: {e}"))
    }

    /// The Lease [`LEASE`], if it exists.
    pub async fn lease(&self) -> Option<Lease> {
        let leases: Api<Lease> = Api::namespaced(self.lros.clone().into_client(), &self.ns);
        leases
            .get_opt(LEASE)
            .await
            .unwrap_or_else(|e| panic!("cannot read lease/{LEASE}: {e}"))
    }

    /// Waits until one of `identities` holds the Lease; returns it.
    pub async fn wait_leader(&self, identities: &[&str], timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lease = self.lease().await;
            let holder = lease.as_ref().and_then(holder);
            if let Some(h) = holder.as_deref().filter(|h| identities.contains(h)) {
                return h.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "none of {identities:?} holds lease/{LEASE} within {timeout:?}: {lease:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The holder of `lease`, if any.
pub fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// How many times `lease` changed hands (0 if never held).
pub fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

impl Replica {
    /// SIGKILL (a crash: the Lease is not released); waits for the process to exit.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the replica is running");
        child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.identity));
        let _ = writeln!(
            log_file(&self.log),
            "===== e2e: replica killed at unix ms {}",
            unix_ms()
        );
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`…) with kill(1), and notes it in the log.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the replica runs");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {pid} failed");
        self.mark(&format!("SIG{signal} sent"));
    }

    /// Appends `===== e2e: WHAT at unix ms …` to the log.
    pub fn mark(&self, what: &str) {
        let _ = writeln!(
            log_file(&self.log),
            "===== e2e: {what} at unix ms {}",
            unix_ms()
        );
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?;
        Some(status.unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.identity)))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!("===== replica {} log tail:\n{tail}\n=====", self.identity);
        }
    }
}

/// A control plane of the test's own (`hack/control-plane up --dir …`), stopped when dropped.
pub struct ControlPlane {
    down: Down,
    /// The cluster, with the CRDs installed.
    pub cluster: &'static Cluster,
}

/// Runs `hack/control-plane down --dir DIR` when dropped (also when the setup panics).
struct Down {
    dir: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane in a fresh directory named after `name`.
    pub async fn up(name: &str) -> ControlPlane {
        let down = Down {
            dir: std::env::temp_dir().join(format!(
                "lro-e2e-{name}-{}-{}",
                std::process::id(),
                unix_ms()
            )),
        };
        let kubeconfig = control_plane_up(&down.dir).await;
        // Stopped below before anything else could use it; leaking keeps `TestEnv`'s `&'static`.
        let cluster = Box::leak(Box::new(with_crds(kubeconfig).await));
        ControlPlane { down, cluster }
    }

    /// `hack/control-plane restart-apiserver --dir DIR`; returns how long it took.
    ///
    /// kube-apiserver gets `stop_timeout` to drain after SIGTERM, then SIGKILL (with open watches
    /// it can take 10 s to exit; a shorter outage keeps the test short).
    pub async fn restart_apiserver(&self, stop_timeout: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let out = Command::new(CONTROL_PLANE)
            .arg("restart-apiserver")
            .arg("--dir")
            .arg(self.dir())
            .env("LRO_CP_STOP_TIMEOUT", stop_timeout.as_secs().to_string())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {CONTROL_PLANE}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        assert!(
            out.status.success(),
            "restart-apiserver failed ({})",
            out.status
        );
        started.elapsed()
    }

    /// The directory (kubeconfig, logs).
    pub fn dir(&self) -> &Path {
        &self.down.dir
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            eprintln!("===== apiserver log tail:\n{tail}\n=====");
        }
        let _ = std::process::Command::new(CONTROL_PLANE)
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
