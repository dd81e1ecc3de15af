//! One end-to-end test per upstream protocol (beyond `google`, covered in `e2e.rs`), against the
//! real apiserver, the simulator and the operator, plus the protocol-specific safety rules.

mod support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::{TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(30);

/// Applies an `OperationProvider` named `name` for `protocol`, at `prefix` under the simulator.
async fn provider(env: &TestEnv, name: &str, protocol: &str, prefix: &str) {
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "OperationProvider",
        "metadata": {"name": name},
        "spec": {
            "baseURL": format!("{}{prefix}", env.sim_url()),
            "protocol": protocol,
            "polling": {"initialInterval": "500ms", "maxInterval": "2s"},
        },
    });
    env.apply(&manifest.to_string()).await.assert_ok();
}

async fn operation(env: &TestEnv, name: &str, provider: &str, start: Value) {
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": {"providerRef": {"name": provider}, "start": start},
    });
    env.apply(&manifest.to_string()).await.assert_ok();
}

#[tokio::test]
async fn redpanda_cluster_is_created_and_its_result_recorded() {
    let env = TestEnv::new("redpanda").await;
    provider(&env, "redpanda", "redpanda", "/redpanda").await;
    operation(
        &env,
        "cluster",
        "redpanda",
        json!({
            "path": "v1/clusters",
            "body": {"cluster": {"name": "c1", "region": "us-west1"},
                     "simulate": {"durationSeconds": 2}},
        }),
    )
    .await;
    let op = env.wait_phase("cluster", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    let resource_id = status.resource_id.clone().expect("resource_id recorded");
    let result = status.result.clone().expect("the response is the result");
    assert_eq!(result["cluster"]["id"], json!(resource_id));
    assert_eq!(result["cluster"]["name"], json!("c1"));
    assert_eq!(status.upstream_state.as_deref(), Some("STATE_COMPLETED"));
    assert!(
        status
            .operation
            .as_ref()
            .and_then(|h| h.id.clone())
            .is_some()
    );
    assert_eq!(
        status.progress, None,
        "Redpanda reports no progress; none is invented"
    );
    assert_eq!(env.sim_stats().await["creates"], json!(1));
}

#[tokio::test]
async fn redpanda_failure_keeps_the_upstream_code_and_message() {
    let env = TestEnv::new("redpanda-fail").await;
    provider(&env, "redpanda", "redpanda", "/redpanda").await;
    operation(
        &env,
        "network",
        "redpanda",
        json!({
            "path": "v1/networks",
            "body": {"network": {"name": "n1"}, "simulate": {"durationSeconds": 1,
                     "outcome": "error", "errorCode": 8, "errorMessage": "no more networks"}},
        }),
    )
    .await;
    let op = env.wait_phase("network", Phase::Failed, WAIT).await;
    let error = status_of(&op).error.clone().expect("error recorded");
    assert_eq!(error.code, "RESOURCE_EXHAUSTED");
    assert_eq!(error.message, "no more networks");
}

/// Redpanda has no idempotency key: a crash between sending the start and recording its answer
/// must not send it again. The operation stops in `Failed`/`StartOutcomeUnknown` with a message
/// telling how to adopt the operation by hand.
#[tokio::test]
async fn a_lost_start_without_idempotency_key_is_not_resent() {
    let mut env = TestEnv::new("redpanda-lost").await;
    provider(&env, "redpanda", "redpanda", "/redpanda").await;
    operation(
        &env,
        "cluster",
        "redpanda",
        json!({
            "path": "v1/clusters",
            "body": {"cluster": {"name": "c1"}, "simulate": {"durationSeconds": 30, "startDelayMs": 4000}},
        }),
    )
    .await;
    env.wait_phase("cluster", Phase::Starting, WAIT).await;
    // The simulator holds the answer for 4 s: the request is in flight now.
    for _ in 0..50 {
        if env.sim_stats().await["creates"] == json!(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.kill_operator().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.start_operator().await;
    let op = env.wait_phase("cluster", Phase::Failed, WAIT).await;
    let stalled = op
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::STALLED))
        .expect("Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "StartOutcomeUnknown")
    );
    assert!(
        stalled.message.contains("spec.operation"),
        "says how to adopt: {}",
        stalled.message
    );
    let stats = env.sim_stats().await;
    assert_eq!(
        stats["creates"],
        json!(1),
        "the start was sent once: {stats}"
    );
}
