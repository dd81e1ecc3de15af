//! End-to-end observability: `/metrics`, `/livez`, `/readyz`, Kubernetes Events and a graceful
//! stop on SIGTERM, with the real operator binary against a real kube-apiserver and the simulator.
//!
//! Run with `cargo test --test observability`; set `LRO_E2E_KUBECONFIG` to reuse a control plane
//! started by `hack/control-plane up`.

use lro_testkit as support;

use std::collections::BTreeSet;
use std::time::Duration;

use lro_operator::api::Phase;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, samples};
use tokio::time::Instant;

/// Generous: the operation below takes 6 s.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the operator may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(10);

fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).iter().sum()
}

/// Polls `/metrics` until `check` holds; panics with the last scrape after `timeout`.
async fn metrics_until(env: &TestEnv, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, text) = env.health_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics:\n{text}");
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics: not {what} within {TIMEOUT:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The reasons of the Events about `lro/<name>` (`kubectl get events`).
async fn event_reasons(env: &TestEnv, name: &str) -> BTreeSet<String> {
    let selector = format!("involvedObject.name={name}");
    let out = env
        .kubectl(&["get", "events", "--field-selector", &selector, "-o", "json"])
        .await
        .assert_ok();
    let list: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("kubectl get events: not JSON ({e}):\n{}", out.stdout));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn metrics_probes_events_and_a_graceful_stop() {
    let mut env = TestEnv::new("obs").await;

    // Probes: alive at once, ready once the caches synced.
    assert_eq!(env.health_get("/livez").await.0, 200);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = env.health_get("/readyz").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "/readyz before the caches synced: {body}");
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One started operation with progress, long enough for several polls.
    let name = "observed";
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": PROVIDER},
            "start": {
                "path": "projects/demo/clusters",
                "body": {"simulate": {"durationSeconds": 6, "progress": true, "progressStep": 5}},
            },
        },
    });
    env.apply(&manifest.to_string()).await.assert_ok();
    env.wait_phase(name, Phase::Succeeded, TIMEOUT).await;

    // Metrics: upstream requests by protocol/provider/kind/outcome, operations by phase (from the
    // cache, which may trail the status write by a moment), and no object names anywhere.
    let text = metrics_until(&env, "showing the operation Succeeded", |t| {
        sum(t, "lro_operations", &[r#"phase="Succeeded""#]) >= 1.0
    })
    .await;
    let provider = format!(r#"provider="{}/{PROVIDER}""#, env.ns);
    let google = r#"protocol="google""#;
    let polls = sum(
        &text,
        "lro_upstream_requests_total",
        &[google, &provider, r#"kind="poll""#],
    );
    assert!(polls > 0.0, "no google poll counted:\n{text}");
    let ok_starts = sum(
        &text,
        "lro_upstream_requests_total",
        &[google, &provider, r#"kind="start""#, r#"outcome="ok""#],
    );
    assert_eq!(ok_starts, 1.0, "one start, answered:\n{text}");
    assert!(
        sum(
            &text,
            "lro_upstream_request_duration_seconds_count",
            &[google, r#"kind="poll""#]
        ) >= polls
    );
    assert!(sum(&text, "lro_reconciles_total", &[r#"outcome="ok""#]) > 0.0);
    assert!(sum(&text, "lro_reconcile_duration_seconds_count", &[]) > 0.0);
    assert!(
        sum(&text, "lro_status_writes_total", &[]) >= 3.0,
        "Starting, Running, Succeeded at least:\n{text}"
    );
    assert!(
        sum(&text, "lro_poll_lateness_seconds_count", &[]) > 0.0,
        "scheduled polls are measured:\n{text}"
    );
    for family in ["lro_token_refreshes", "lro_rate_limit_wait_seconds"] {
        assert!(
            text.contains(&format!("# TYPE {family} counter")),
            "{family}"
        );
    }
    assert!(
        !text.contains(name),
        "an operation's name is never a label:\n{text}"
    );

    // Events, through `kubectl get events` and `kubectl describe`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let reasons = loop {
        let reasons = event_reasons(&env, name).await;
        if ["Started", "Progress", "Succeeded"]
            .iter()
            .all(|r| reasons.contains(*r))
            || Instant::now() >= deadline
        {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for reason in ["Started", "Progress", "Succeeded"] {
        assert!(reasons.contains(reason), "no {reason} event: {reasons:?}");
    }
    let described = env
        .kubectl(&["describe", "lro", name])
        .await
        .assert_ok()
        .stdout;
    for reason in ["Started", "Succeeded"] {
        assert!(
            described.contains(reason),
            "kubectl describe lacks {reason}:\n{described}"
        );
    }

    // SIGTERM: the controller drains, the server stops, exit 0 within seconds.
    let (status, took) = env.terminate_operator(STOP_WITHIN).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    eprintln!("operator stopped {took:?} after SIGTERM");
}
