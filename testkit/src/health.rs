//! The operator's health server (`--health-addr`): its address, read from the operator's log
//! line `health server listening on ADDR`, requests to it, and a graceful stop (SIGTERM).

// Only tests/observability.rs uses these; every test binary compiles the whole harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::time::Instant;

use super::{TestEnv, log_file, unix_ms};

/// What the operator logs once its health server is bound.
const LISTENING: &str = "health server listening on ";
/// The marker `start_operator` writes before each operator run.
const STARTED: &str = "===== e2e: operator started";

impl TestEnv {
    /// The health server address of the running operator (from the current run's log), waiting
    /// up to `timeout` for the line to appear.
    pub async fn health_addr(&self, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(self.operator_log()).unwrap_or_default();
            let current_run = log.rsplit(STARTED).next().unwrap_or_default();
            if let Some(addr) = current_run.lines().rev().find_map(listening_addr) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not log `{LISTENING}ADDR` within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET <path>` on the operator's health server: the status code and the body.
    pub async fn health_get(&self, path: &str) -> (u16, String) {
        let addr = self.health_addr(Duration::from_secs(30)).await;
        let url = format!("http://{addr}{path}");
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: unreadable body: {e}"));
        (status, body)
    }

    /// Sends SIGTERM to the operator and waits up to `timeout` for it to exit (killing it and
    /// panicking if it does not); returns its exit status and how long it took.
    pub async fn terminate_operator(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let mut child = self.operator.take().expect("the operator is not running");
        let pid = child.id().expect("the operator has already exited");
        let began = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("cannot wait for the operator: {e}"),
            Err(_) => {
                let _ = child.kill().await;
                panic!("the operator did not exit within {timeout:?} of SIGTERM");
            }
        };
        let took = began.elapsed();
        let mut log = log_file(&self.operator_log());
        let _ = std::io::Write::write_all(
            &mut log,
            format!(
                "===== e2e: operator stopped by SIGTERM at unix ms {} ({status})\n",
                unix_ms()
            )
            .as_bytes(),
        );
        (status, took)
    }
}

/// The address in a `health server listening on ADDR` log line (text or JSON, colours or not).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find(LISTENING)? + LISTENING.len();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}
