//! The seed APIs as the clouds answer them, end to end on the real apiserver: links on Google's
//! own hosts (Deployment Manager, Compute, GKE), methods that refuse a query parameter they do
//! not declare (Service Management, GKE, Deployment Manager), `RESOURCE_NOT_READY` on a `DONE`
//! operation, throttled and lost starts without an idempotency key, error details, timeouts
//! when the provider cannot be used, and the handle of every protocol in `kubectl get`.
//!
//! The simulator answers with the shapes of `tests/fixtures/upstream/` (the public references),
//! so each test here failed before the fix it covers.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::{TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(40);

/// The simulator's logged requests whose path starts with `prefix`.
async fn requests(env: &TestEnv, prefix: &str) -> Vec<Value> {
    env.sim_stats().await["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .cloned()
        .collect()
}

fn reason(op: &lro_operator::api::LongRunningOperation, kind: &str) -> String {
    status_of(op)
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn deployment_manager_links_on_googles_host_are_polled_at_the_base_url() {
    let env = TestEnv::new("dm-links").await;
    env.provider("dm", "compute", "/deploymentmanager/v2", json!({}))
        .await;
    env.operation(
        "deploy",
        "dm",
        json!({"start": {"path": "projects/demo/global/deployments",
                         "body": {"name": "wordpress-1", "simulate": {"durationSeconds": 2}}}}),
    )
    .await;
    let op = env.wait_phase("deploy", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    let handle = status.operation.clone().unwrap_or_default();
    // The handle and the resource keep the links as Deployment Manager wrote them…
    let url = handle.url.unwrap_or_default();
    assert!(
        url.starts_with(
            "https://www.googleapis.com/deploymentmanager/v2/projects/demo/global/operations/operation-"
        ),
        "{url}"
    );
    assert_eq!(
        status.resource_id.as_deref(),
        Some(
            "https://www.googleapis.com/deploymentmanager/v2/projects/demo/global/deployments/wordpress-1"
        )
    );
    // …and every poll went to the provider's baseURL with the link's path.
    let polls: Vec<Value> = requests(
        &env,
        "/deploymentmanager/v2/projects/demo/global/operations/",
    )
    .await
    .into_iter()
    .filter(|r| r["method"] == "GET")
    .collect();
    assert!(!polls.is_empty(), "no poll reached the simulator");
    assert!(polls.iter().all(|r| r["status"] == 200), "{polls:#?}");
    // deployments.insert declares no requestId: none was sent (it would be refused).
    let inserts = requests(
        &env,
        "/deploymentmanager/v2/projects/demo/global/deployments",
    )
    .await;
    assert_eq!(inserts.len(), 1, "{inserts:#?}");
    assert!(inserts[0]["query"].is_null(), "{inserts:#?}");
}

#[tokio::test]
async fn compute_engine_sends_its_request_id_and_follows_its_links_home() {
    let env = TestEnv::new("compute-links").await;
    env.provider(
        "gce",
        "compute",
        "/compute/v1",
        json!({"compute": {"requestIdParameter": "requestId"}}),
    )
    .await;
    env.operation("vm",
        "gce",
        json!({"start": {"path": "projects/demo/zones/us-central1-a/instances",
                         "body": {"name": "vm-1", "simulate": {"durationSeconds": 2, "warnings": true}}}}),
    )
    .await;
    let op = env.wait_phase("vm", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    assert!(
        status
            .operation
            .as_ref()
            .and_then(|h| h.url.as_deref())
            .is_some_and(|u| u.starts_with("https://www.googleapis.com/compute/v1/projects/demo/zones/us-central1-a/operations/"))
    );
    // The warnings of a finished operation are not dropped.
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("is larger than image size"), "{message}");
    let inserts = requests(
        &env,
        "/compute/v1/projects/demo/zones/us-central1-a/instances",
    )
    .await;
    let uid = op.metadata.uid.clone().unwrap_or_default();
    assert_eq!(
        inserts[0]["query"].as_str(),
        Some(format!("requestId={uid}").as_str())
    );
}

#[tokio::test]
async fn a_service_management_rollout_starts_without_a_request_id() {
    let env = TestEnv::new("rollout").await;
    // Service Management as a user sets it up: protocol google, no requestIdParameter.
    env.provider("servicemanagement", "google", "/v1", json!({}))
        .await;
    env.operation(
        "rollout",
        "servicemanagement",
        json!({"start": {"path": "services/demo.endpoints.example.com/rollouts",
                         "body": {"simulate": {"durationSeconds": 2, "steps": true}}}}),
    )
    .await;
    let op = env.wait_phase("rollout", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    let name = status
        .operation
        .as_ref()
        .and_then(|h| h.name.clone())
        .unwrap_or_default();
    assert!(
        name.starts_with("operations/rollouts.demo.endpoints.example.com:"),
        "{name}"
    );
    assert_eq!(
        status.result.as_ref().map(|r| r["serviceName"].clone()),
        Some(json!("demo.endpoints.example.com"))
    );
    let creates = requests(&env, "/v1/services/").await;
    assert_eq!(creates.len(), 1, "{creates:#?}");
    assert!(creates[0]["query"].is_null(), "no requestId: {creates:#?}");

    // A provider told to send one is refused by the method, with Google's own words.
    env.provider(
        "with-id",
        "google",
        "/v1",
        json!({"google": {"requestIdParameter": "requestId"}}),
    )
    .await;
    env.operation(
        "refused",
        "with-id",
        json!({"start": {"path": "services/demo.endpoints.example.com/rollouts", "body": {}}}),
    )
    .await;
    let op = env.wait_phase("refused", Phase::Failed, WAIT).await;
    assert_eq!(reason(&op, condition::STALLED), "StartRejected");
    let message = status_of(&op).message.clone().unwrap_or_default();
    assert!(message.contains("Cannot bind query parameter"), "{message}");
}

#[tokio::test]
async fn a_lost_google_start_without_a_request_id_says_what_was_lost() {
    let env = TestEnv::new("google-lost").await;
    env.provider("servicemanagement", "google", "/v1", json!({}))
        .await;
    env.operation("lost",
        "servicemanagement",
        json!({"start": {"path": "services/demo.endpoints.example.com/rollouts",
                         "body": {"simulate": {"durationSeconds": 60, "startFaults": [{"kind": "reset"}]}}}}),
    )
    .await;
    let op = env.wait_phase("lost", Phase::Failed, WAIT).await;
    assert_eq!(reason(&op, condition::STALLED), "StartOutcomeUnknown");
    let message = status_of(&op).message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.google.requestIdParameter"),
        "{message}"
    );
    assert!(message.contains("spec.operation"), "{message}");
    // Not resent: one create reached the upstream.
    assert_eq!(env.sim_stats().await["creates"], 1);
}

#[tokio::test]
async fn resource_not_ready_keeps_polling_while_running_and_fails_once_done() {
    let env = TestEnv::new("not-ready").await;
    env.provider("gce", "compute", "/compute/v1", json!({}))
        .await;
    env.operation("waits",
        "gce",
        json!({"start": {"path": "projects/demo/global/networks",
                         "body": {"name": "n1", "simulate": {"durationSeconds": 3, "notReadySeconds": 1.5}}}}),
    )
    .await;
    env.operation("done-not-ready",
        "gce",
        json!({"start": {"path": "projects/demo/global/networks",
                         "body": {"name": "n2", "simulate": {"durationSeconds": 1, "outcome": "error",
                                  "errorCode": 9, "errorReason": "RESOURCE_NOT_READY",
                                  "errorMessage": "The resource 'projects/demo/global/networks/n0' is not ready"}}}}),
    )
    .await;
    env.wait_phase("waits", Phase::Succeeded, WAIT).await;
    // A DONE operation never changes: its RESOURCE_NOT_READY is the failure, not a reason to poll on.
    let op = env.wait_phase("done-not-ready", Phase::Failed, WAIT).await;
    let error = status_of(&op).error.clone().unwrap_or_default();
    assert_eq!(error.provider_code.as_deref(), Some("RESOURCE_NOT_READY"));
    assert!(error.message.contains("is not ready"), "{error:?}");
}

#[tokio::test]
async fn gke_operations_are_read_as_gke_writes_them() {
    let env = TestEnv::new("gke").await;
    env.provider("gke", "gke", "/container/v1", json!({})).await;
    let create = |name: &str, seconds: f64| {
        json!({"start": {"path": "projects/demo/locations/us-central1-a/clusters",
                         "body": {"cluster": {"name": name}, "simulate": {"durationSeconds": seconds}}}})
    };
    env.operation("cluster", "gke", create("c1", 3.0)).await;
    let mut cancelled = create("c2", 120.0);
    cancelled["cancel"] = json!(false);
    env.operation("cancelled", "gke", cancelled.clone()).await;
    let op = env.wait_phase("cluster", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    assert_eq!(status.progress, Some(100));
    assert_eq!(status.upstream_state.as_deref(), Some("DONE"));
    assert_eq!(
        status.resource_id.as_deref(),
        Some("https://container.googleapis.com/v1/projects/demo/zones/us-central1-a/clusters/c1")
    );
    // Stage metrics give progress while it runs; a cancel goes through ABORTING to Cancelled.
    env.wait_for("cancelled", "reporting progress", WAIT, |op| {
        op.status.as_ref().is_some_and(|s| s.progress.is_some())
    })
    .await;
    cancelled["cancel"] = json!(true);
    env.operation("cancelled", "gke", cancelled).await;
    let op = env.wait_phase("cancelled", Phase::Cancelled, WAIT).await;
    assert_eq!(
        status_of(&op).error.as_ref().map(|e| e.code.as_str()),
        Some("CANCELLED")
    );
    let cancels = requests(
        &env,
        "/container/v1/projects/demo/zones/us-central1-a/operations/",
    )
    .await;
    assert!(
        cancels
            .iter()
            .any(|r| r["method"] == "POST" && r["path"].as_str().unwrap_or("").ends_with(":cancel")),
        "{cancels:#?}"
    );
}

#[tokio::test]
async fn a_throttled_start_without_an_idempotency_key_is_resent_after_retry_after() {
    let env = TestEnv::new("throttled").await;
    env.provider("rp", "redpanda", "/redpanda", json!({})).await;
    env.operation("network",
        "rp",
        json!({"start": {"path": "v1/networks",
                         "body": {"network": {"name": "n1"}, "simulate": {"durationSeconds": 1,
                                  "startFaults": [{"kind": "status", "status": 429, "retryAfter": "2"}]}}}}),
    )
    .await;
    let op = env.wait_phase("network", Phase::Succeeded, WAIT).await;
    assert!(
        status_of(&op)
            .operation
            .as_ref()
            .and_then(|h| h.id.clone())
            .is_some()
    );
    let stats = env.sim_stats().await;
    assert_eq!(stats["creates"], 1, "{stats:#}");
    assert_eq!(stats["rejectedCreates"], 1, "{stats:#}");
    let posts: Vec<u64> = requests(&env, "/redpanda/v1/networks")
        .await
        .iter()
        .filter(|r| r["method"] == "POST")
        .filter_map(|r| r["atMs"].as_u64())
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(
        posts[1] - posts[0] >= 2000,
        "resent {} ms later, before the Retry-After of 2 s",
        posts[1] - posts[0]
    );
}

#[tokio::test]
async fn a_lost_redpanda_start_is_found_upstream_instead_of_failing() {
    let env = TestEnv::new("rp-recover").await;
    env.provider("rp", "redpanda", "/redpanda", json!({})).await;
    env.operation(
        "cluster",
        "rp",
        json!({"start": {"path": "v1/clusters",
                         "body": {"cluster": {"name": "prod-1"}, "simulate": {"durationSeconds": 3,
                                  "startFaults": [{"kind": "reset"}]}}}}),
    )
    .await;
    let op = env.wait_phase("cluster", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    assert!(
        status
            .operation
            .as_ref()
            .and_then(|h| h.id.clone())
            .is_some()
    );
    // Created once, found by its name and then its operation; never resent.
    assert_eq!(env.sim_stats().await["creates"], 1);
    let lookups = requests(&env, "/redpanda/v1/clusters").await;
    assert!(
        lookups.iter().any(|r| r["method"] == "GET"
            && r["query"]
                .as_str()
                .unwrap_or("")
                .contains("filter.name_contains=prod-1")),
        "{lookups:#?}"
    );
    let events = env
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=cluster",
            "-o",
            "json",
        ])
        .await
        .assert_ok();
    assert!(
        events.stdout.contains("found upstream"),
        "{}",
        events.stdout
    );
}

#[tokio::test]
async fn error_causes_are_kept_with_their_details() {
    let env = TestEnv::new("details").await;
    env.operation("quota",
        support::PROVIDER,
        json!({"start": {"path": "projects/demo/clusters",
                         "body": {"simulate": {"durationSeconds": 1, "outcome": "error", "errorCode": 8,
                                  "errorReason": "QUOTA_EXCEEDED", "errorMessage": "Quota 'CPUS' exceeded."}}}}),
    )
    .await;
    let op = env.wait_phase("quota", Phase::Failed, WAIT).await;
    let error = status_of(&op).error.clone().unwrap_or_default();
    assert_eq!(error.code, "RESOURCE_EXHAUSTED");
    assert_eq!(error.message, "Quota 'CPUS' exceeded.");
    let info = error
        .details
        .iter()
        .find(|d| d.kind == "ErrorInfo")
        .unwrap_or_else(|| panic!("no ErrorInfo in {error:#?}"));
    assert_eq!(info.reason.as_deref(), Some("QUOTA_EXCEEDED"));
    assert!(error.details.iter().any(|d| d.kind == "QuotaFailure"));
    // `kubectl explain` documents the field.
    let explain = env
        .kubectl(&["explain", "lro.status.error.details"])
        .await
        .assert_ok();
    assert!(explain.stdout.contains("reason"), "{}", explain.stdout);
    assert!(
        !explain.stderr.contains("unrecognized format"),
        "{}",
        explain.stderr
    );
}

#[tokio::test]
async fn an_arm_deployment_failure_names_its_innermost_cause() {
    let env = TestEnv::new("arm-cause").await;
    env.provider("arm", "azure", "/azure", json!({})).await;
    env.operation("storage",
        "arm",
        json!({"start": {"method": "PUT",
            "path": "subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo/providers/Microsoft.Storage/storageAccounts/taken",
            "query": {"api-version": "2023-05-01"},
            "body": {"location": "westeurope", "simulate": {"durationSeconds": 1, "outcome": "error",
                     "errorReason": "StorageAccountAlreadyTaken",
                     "errorMessage": "The storage account named taken is already taken."}}}}),
    )
    .await;
    let op = env.wait_phase("storage", Phase::Failed, WAIT).await;
    let error = status_of(&op).error.clone().unwrap_or_default();
    // DeploymentFailed only wraps: the message and code are those of the cause inside it.
    assert_eq!(
        error.message,
        "The storage account named taken is already taken."
    );
    assert_eq!(
        error.provider_code.as_deref(),
        Some("StorageAccountAlreadyTaken")
    );
    let reasons: Vec<&str> = error
        .details
        .iter()
        .filter_map(|d| d.reason.as_deref())
        .collect();
    assert!(
        reasons.contains(&"StorageAccountAlreadyTaken"),
        "{error:#?}"
    );
    let message = status_of(&op).message.clone().unwrap_or_default();
    assert!(message.contains("already taken"), "{message}");
}

#[tokio::test]
async fn the_timeout_holds_while_the_provider_cannot_be_used_and_by_default() {
    let mut env = TestEnv::new("timeouts").await;
    // The provider goes away while the operation runs: it waits for it, but not past its own
    // deadline (the operation's spec.polling, not a default policy, still applies).
    env.provider("going", "google", "/v1", json!({})).await;
    let upstream = env.sim_adoptable(json!({"durationSeconds": 3600})).await;
    env.operation(
        "orphan",
        "going",
        json!({"operation": {"name": upstream}, "polling": {"timeout": "6s"}}),
    )
    .await;
    env.wait_phase("orphan", Phase::Running, WAIT).await;
    env.kubectl(&["delete", "operationprovider", "going"])
        .await
        .assert_ok();
    env.wait_for("orphan", "waiting for its provider", WAIT, |op| {
        reason(op, condition::RECONCILING) == "ProviderNotReady"
            || op.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed)
    })
    .await;
    let op = env.wait_phase("orphan", Phase::Failed, WAIT).await;
    assert_eq!(reason(&op, condition::STALLED), "Timeout");
    // Without any timeout set, the operator's default applies.
    env.restart_operator_with(&["--default-timeout", "3s"])
        .await;
    env.operation(
        "forever",
        support::PROVIDER,
        json!({"start": {"path": "projects/demo/clusters",
                         "body": {"simulate": {"durationSeconds": 3600}}}}),
    )
    .await;
    let op = env.wait_phase("forever", Phase::Failed, WAIT).await;
    assert_eq!(reason(&op, condition::STALLED), "Timeout");
}

#[tokio::test]
async fn kubectl_get_shows_the_handle_of_every_protocol() {
    let env = TestEnv::new("handles").await;
    env.provider("rp", "redpanda", "/redpanda", json!({})).await;
    env.provider("gce", "compute", "/compute/v1", json!({}))
        .await;
    let google = env.sim_adoptable(json!({"durationSeconds": 60})).await;
    env.operation(
        "by-name",
        support::PROVIDER,
        json!({"operation": {"name": google}}),
    )
    .await;
    env.operation(
        "by-id",
        "rp",
        json!({"start": {"path": "v1/networks", "body": {"network": {"name": "n"},
                         "simulate": {"durationSeconds": 60}}}}),
    )
    .await;
    env.operation("by-url",
        "gce",
        json!({"operation": {"url": "https://www.googleapis.com/compute/v1/projects/demo/global/operations/operation-unknown"}}),
    )
    .await;
    for name in ["by-name", "by-id", "by-url"] {
        env.wait_for(name, "with a handle", WAIT, |op| {
            op.status
                .as_ref()
                .and_then(|s| s.operation.as_ref())
                .is_some_and(|h| h.name.is_some() || h.id.is_some() || h.url.is_some())
        })
        .await;
    }
    let table = env
        .kubectl(&["get", "lro", "-o", "wide", "--no-headers"])
        .await
        .assert_ok()
        .stdout;
    for name in ["by-name", "by-id", "by-url"] {
        let op = env.get(name).await;
        let handle = status_of(&op).operation.clone().unwrap_or_default();
        let shown = handle.name.or(handle.id).or(handle.url).unwrap_or_default();
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(row.contains(&shown), "{name}: {shown} not in {row:?}");
    }
}
