//! Starting safely and cancelling on delete, end to end (real apiserver, simulator, operator).

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::Phase;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(30);

fn lro(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// A started operation scripted by `simulate`, on the Google provider of the environment.
fn started(simulate: Value) -> Value {
    json!({
        "providerRef": {"name": PROVIDER},
        "start": {"path": "projects/demo/clusters", "body": {"simulate": simulate}},
    })
}

/// Waits until the simulator has received `n` create requests.
async fn wait_for_creates(env: &TestEnv, n: u64) {
    for _ in 0..100 {
        if env.sim_stats().await["creates"] == json!(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the simulator never saw {n} create(s): {}",
        env.sim_stats().await
    );
}

/// The operator dies after sending the start request and before recording its answer (the
/// simulator holds the answer for 4 s). The restarted operator resends the same request id, the
/// upstream recognises it, and no second resource is created.
#[tokio::test]
async fn a_crash_between_send_and_persist_creates_nothing_twice() {
    let mut env = TestEnv::new("crash-start").await;
    env.apply(&lro(
        "c",
        started(json!({"durationSeconds": 3, "startDelayMs": 4000})),
    ))
    .await
    .assert_ok();
    env.wait_phase("c", Phase::Starting, WAIT).await;
    wait_for_creates(&env, 1).await;
    env.kill_operator().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.start_operator().await;
    let op = env.wait_phase("c", Phase::Succeeded, WAIT).await;
    let stats = env.sim_stats().await;
    assert_eq!(stats["creates"], json!(1), "one upstream resource: {stats}");
    assert_eq!(
        stats["duplicateCreates"],
        json!(1),
        "the start was resent once, with the same id: {stats}"
    );
    let handle = status_of(&op).operation.clone().expect("handle");
    assert_eq!(handle.request_id.as_deref(), op.metadata.uid.as_deref());
    assert_eq!(handle.name.as_deref(), Some("operations/op-1"));
}

/// `onDelete: Cancel`: deleting the object cancels the upstream operation, and the object goes
/// away once the upstream confirms.
#[tokio::test]
async fn deleting_with_on_delete_cancel_cancels_upstream() {
    let env = TestEnv::new("on-delete").await;
    let mut spec = started(json!({"durationSeconds": 120}));
    spec["onDelete"] = json!("Cancel");
    env.apply(&lro("c", spec)).await.assert_ok();
    let op = env.wait_phase("c", Phase::Running, WAIT).await;
    assert!(
        op.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "lro.dev/cancel-on-delete"),
        "the finalizer guards the cancel: {:?}",
        op.metadata.finalizers
    );
    env.kubectl(&["delete", "lro", "c", "--wait=false"])
        .await
        .assert_ok();
    gone(&env, "c").await;
    let upstream = env.sim_operation("operations/op-1").await;
    assert!(upstream["cancels"].as_u64() >= Some(1), "{upstream}");
    assert_eq!(upstream["outcome"], json!("cancelled"), "{upstream}");
}

/// `onDelete: Orphan` (the default) leaves the upstream operation alone.
#[tokio::test]
async fn deleting_with_the_default_orphans_the_operation() {
    let env = TestEnv::new("orphan").await;
    env.apply(&lro("c", started(json!({"durationSeconds": 120}))))
        .await
        .assert_ok();
    let op = env.wait_phase("c", Phase::Running, WAIT).await;
    assert!(op.metadata.finalizers.is_none_or(|f| f.is_empty()));
    env.kubectl(&["delete", "lro", "c", "--wait=false"])
        .await
        .assert_ok();
    gone(&env, "c").await;
    let upstream = env.sim_operation("operations/op-1").await;
    assert_eq!(upstream["cancels"], json!(0), "{upstream}");
}

/// A protocol without cancel does not block deletion: the object goes, with a warning event.
#[tokio::test]
async fn deleting_without_a_cancel_in_the_protocol_is_not_blocked() {
    let env = TestEnv::new("no-cancel").await;
    let provider = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "OperationProvider",
        "metadata": {"name": "redpanda"},
        "spec": {"baseURL": format!("{}/redpanda", env.sim_url()), "protocol": "redpanda",
                 "polling": {"initialInterval": "500ms", "maxInterval": "2s"}},
    });
    env.apply(&provider.to_string()).await.assert_ok();
    let spec = json!({
        "providerRef": {"name": "redpanda"},
        "onDelete": "Cancel",
        "start": {"path": "v1/clusters", "body": {"cluster": {"name": "c"},
                  "simulate": {"durationSeconds": 120}}},
    });
    env.apply(&lro("c", spec)).await.assert_ok();
    env.wait_phase("c", Phase::Running, WAIT).await;
    env.kubectl(&["delete", "lro", "c", "--wait=false"])
        .await
        .assert_ok();
    gone(&env, "c").await;
    let events = env
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=DeletedWithoutCancel",
            "-o",
            "name",
        ])
        .await
        .assert_ok();
    assert!(
        !events.stdout.trim().is_empty(),
        "a DeletedWithoutCancel warning is recorded"
    );
}

async fn gone(env: &TestEnv, name: &str) {
    for _ in 0..150 {
        if env.lros.get_opt(name).await.ok().flatten().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let op = env.lros.get_opt(name).await.ok().flatten();
    panic!("{name} was not deleted within 15 s: {op:#?}");
}
