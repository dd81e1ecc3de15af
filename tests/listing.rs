//! List-based observation (`spec.list`) and shared polls, end to end: a provider's running
//! operations observed with one request per page instead of one per operation, completions seen
//! within a sweep, a refused list falling back to per-operation polls without losing any, and two
//! objects tracking one upstream operation sharing its polls.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::{TestEnv, status_of};

const WAIT: Duration = Duration::from_secs(60);

/// Applies operation `name` on `provider` starting a simulated resource that takes `seconds`.
async fn start(env: &TestEnv, name: &str, provider: &str, path: &str, body: Value) {
    env.operation(
        name,
        provider,
        json!({"start": {"path": path, "body": body}}),
    )
    .await;
}

/// The simulator's GETs of single operations, in total.
fn gets(stats: &Value) -> u64 {
    stats["operations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, op)| op["gets"].as_u64().unwrap_or(0))
        .sum()
}

/// How late each operation's completion was seen: its `completedAt` minus its `startedAt` and
/// the simulated duration (seconds; `completedAt` has a precision of one second).
async fn detection_delays(env: &TestEnv, ops: &[(String, f64)]) -> Vec<f64> {
    let mut delays = Vec::new();
    for (name, duration) in ops {
        let op = env.get(name).await;
        let status = status_of(&op);
        let started = status.started_at.as_ref().map(|t| t.0.as_millisecond());
        let completed = status.completed_at.as_ref().map(|t| t.0.as_millisecond());
        if let (Some(started), Some(completed)) = (started, completed) {
            delays.push((completed - started) as f64 / 1000.0 - duration);
        }
    }
    delays
}

#[tokio::test]
async fn a_listed_provider_observes_its_operations_with_one_request_per_sweep() {
    let env = TestEnv::new("list-redpanda").await;
    // Only the operations in progress are listed: one that leaves the list is read once.
    env.provider(
        "listed",
        "redpanda",
        "/redpanda",
        json!({"list": {"query": {"filter.state": "STATE_IN_PROGRESS"}},
               "polling": {"initialInterval": "1s", "maxInterval": "10s"}}),
    )
    .await;
    let ops: Vec<(String, f64)> = (0..12)
        .map(|i| (format!("cluster-{i}"), (3 + (i % 4) * 2) as f64))
        .collect();
    let names: Vec<String> = ops.iter().map(|(n, _)| n.clone()).collect();
    for (name, seconds) in &ops {
        start(
            &env,
            name,
            "listed",
            "v1/clusters",
            json!({"cluster": {"name": name, "region": "us-west1"},
                   "simulate": {"durationSeconds": seconds}}),
        )
        .await;
    }
    for name in &names {
        let op = env.wait_phase(name, Phase::Succeeded, WAIT).await;
        let status = status_of(&op);
        assert_eq!(status.upstream_state.as_deref(), Some("STATE_COMPLETED"));
        assert!(
            status.result.is_some(),
            "{name}: the final read brought the result"
        );
    }
    let stats = env.sim_stats().await;
    let (lists, gets) = (stats["lists"].as_u64().unwrap_or(0), gets(&stats));
    eprintln!("12 operations of 3-9 s: {lists} list pages, {gets} GETs");
    // One GET per operation (once it left the list), and about one page per second while any
    // runs; per-operation polling at 1 s would have sent over 60 GETs.
    assert!(gets <= 12 + 2, "{gets} GETs");
    assert!(lists <= 16, "{lists} list pages");
    assert!(lists >= 3, "it listed: {stats:#}");
    let delays = detection_delays(&env, &ops).await;
    assert_eq!(delays.len(), names.len(), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 3.0),
        "each completion within a sweep and a read (1 s + its duration, + 1 s of rounding): {delays:?}"
    );
}

#[tokio::test]
async fn compute_operations_of_every_scope_are_observed_through_the_aggregated_list() {
    let env = TestEnv::new("list-compute").await;
    // The project's aggregated list, running operations only: one that leaves it (DONE) is
    // read once by itself.
    env.provider(
        "listed",
        "compute",
        "/compute/v1",
        json!({"compute": {"requestIdParameter": "requestId"},
               "list": {"path": "projects/demo/aggregated/operations",
                        "query": {"filter": "status != DONE"}},
               "polling": {"initialInterval": "1s", "maxInterval": "10s"}}),
    )
    .await;
    let scopes = [
        "zones/us-central1-a",
        "zones/us-central1-b",
        "regions/us-central1",
        "global",
    ];
    let ops: Vec<(String, f64)> = (0..12)
        .map(|i| (format!("vm-{i}"), (3 + (i % 4) * 2) as f64))
        .collect();
    for (i, (name, seconds)) in ops.iter().enumerate() {
        start(
            &env,
            name,
            "listed",
            &format!("projects/demo/{}/instances", scopes[i % scopes.len()]),
            json!({"name": name, "simulate": {"durationSeconds": seconds}}),
        )
        .await;
    }
    for (name, _) in &ops {
        let op = env.wait_phase(name, Phase::Succeeded, WAIT).await;
        let status = status_of(&op);
        assert_eq!(status.upstream_state.as_deref(), Some("DONE"));
        assert!(
            status
                .resource_id
                .as_deref()
                .is_some_and(|r| r.ends_with(&format!("/instances/{name}"))),
            "{name}: {:?}",
            status.resource_id
        );
    }
    let stats = env.sim_stats().await;
    let (lists, gets) = (stats["lists"].as_u64().unwrap_or(0), gets(&stats));
    eprintln!("12 compute operations of 3-9 s in 4 scopes: {lists} list pages, {gets} GETs");
    // One GET per operation (once it left the list), and one page per second while any runs;
    // per-operation polling at 1 s would have sent over 60 GETs.
    assert!(gets <= 12 + 2, "{gets} GETs");
    assert!(lists <= 16, "{lists} list pages");
    assert!(lists >= 3, "it listed: {stats:#}");
    let delays = detection_delays(&env, &ops).await;
    assert_eq!(delays.len(), ops.len(), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 3.0),
        "each completion within a sweep and a read: {delays:?}"
    );
}

#[tokio::test]
async fn cloud_control_requests_are_observed_through_list_resource_requests() {
    let env = TestEnv::new("list-aws").await;
    env.provider(
        "listed",
        "awsCloudControl",
        "/aws",
        json!({"list": {"query": {"OperationStatuses": "PENDING,IN_PROGRESS"}},
               "polling": {"initialInterval": "1s", "maxInterval": "10s"}}),
    )
    .await;
    let ops: Vec<(String, f64)> = (0..12)
        .map(|i| (format!("log-group-{i}"), (3 + (i % 4) * 2) as f64))
        .collect();
    for (name, seconds) in &ops {
        start(
            &env,
            name,
            "listed",
            "/",
            json!({"TypeName": "AWS::Logs::LogGroup",
                   "DesiredState": {"LogGroupName": name, "RetentionInDays": 7},
                   "simulate": {"durationSeconds": seconds}}),
        )
        .await;
    }
    for (name, _) in &ops {
        let op = env.wait_phase(name, Phase::Succeeded, WAIT).await;
        let status = status_of(&op);
        assert_eq!(status.upstream_state.as_deref(), Some("SUCCESS"));
        let result = status.result.clone().unwrap_or_default();
        assert_eq!(
            result["LogGroupName"],
            json!(name),
            "{name}: the final read brought the ResourceModel"
        );
    }
    let stats = env.sim_stats().await;
    let (lists, gets) = (stats["lists"].as_u64().unwrap_or(0), gets(&stats));
    eprintln!(
        "12 Cloud Control requests of 3-9 s: {lists} list pages, {gets} GetResourceRequestStatus"
    );
    assert!(gets <= 12 + 2, "{gets} GetResourceRequestStatus");
    assert!(lists <= 16, "{lists} list pages");
    assert!(lists >= 3, "it listed: {stats:#}");
    let delays = detection_delays(&env, &ops).await;
    assert_eq!(delays.len(), ops.len(), "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 3.0),
        "each completion within a sweep and a read: {delays:?}"
    );
}

#[tokio::test]
async fn a_list_with_final_states_needs_no_read_per_operation() {
    let env = TestEnv::new("list-google").await;
    // No filter: done operations stay in the list, with their response.
    env.provider(
        "listed",
        "google",
        "/v1",
        json!({"list": {"pageSize": 5},
               "google": {"requestIdParameter": "requestId"},
               "polling": {"initialInterval": "1s", "maxInterval": "10s"}}),
    )
    .await;
    let names: Vec<String> = (0..8).map(|i| format!("op-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        start(
            &env,
            name,
            "listed",
            "projects/demo/clusters",
            json!({"displayName": name, "simulate": {"durationSeconds": 2 + i % 3}}),
        )
        .await;
    }
    for name in &names {
        let op = env.wait_phase(name, Phase::Succeeded, WAIT).await;
        assert!(
            status_of(&op).result.is_some(),
            "{name}: the list carried the response"
        );
    }
    let stats = env.sim_stats().await;
    assert_eq!(
        gets(&stats),
        0,
        "no operation was read by itself: {stats:#}"
    );
    // Two pages per sweep (8 operations, 5 a page): few sweeps for operations of 2-4 s.
    let lists = stats["lists"].as_u64().unwrap_or(0);
    assert!((2..=16).contains(&lists), "{lists} list pages");
}

#[tokio::test]
async fn a_refused_list_falls_back_to_polling_each_operation() {
    let env = TestEnv::new("list-refused").await;
    // A filter the API does not support: the first page is refused (400 INVALID_ARGUMENT).
    env.provider(
        "refused",
        "google",
        "/v1",
        json!({"list": {"query": {"filter": "status = RUNNING"}},
               "google": {"requestIdParameter": "requestId"},
               "polling": {"initialInterval": "1s", "maxInterval": "2s"}}),
    )
    .await;
    for i in 0..3 {
        start(
            &env,
            &format!("op-{i}"),
            "refused",
            "projects/demo/clusters",
            json!({"simulate": {"durationSeconds": 3}}),
        )
        .await;
    }
    for i in 0..3 {
        env.wait_phase(&format!("op-{i}"), Phase::Succeeded, WAIT)
            .await;
    }
    let stats = env.sim_stats().await;
    assert!(gets(&stats) >= 3, "each was polled by itself: {stats:#}");
    // The provider says so, and stays usable.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = env
            .kubectl(&["get", "operationprovider", "refused", "-o", "json"])
            .await
            .assert_ok();
        let provider: Value = serde_json::from_str(&out.stdout).expect("JSON");
        let ready = provider["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == condition::READY)
            .cloned()
            .unwrap_or_default();
        if ready["reason"] == "ListRefused" {
            assert_eq!(ready["status"], "True");
            let message = ready["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("Invalid filter") && message.contains("spec.list"),
                "{message}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider never said its list is refused: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn two_objects_tracking_one_operation_share_its_polls() {
    let env = TestEnv::new("coalesce").await;
    let script = json!({"durationSeconds": 8, "progress": false});
    let shared = env.sim_adoptable(script.clone()).await;
    let alone = env.sim_adoptable(script).await;
    for (name, handle) in [("first", &shared), ("second", &shared), ("solo", &alone)] {
        env.operation(
            name,
            support::PROVIDER,
            json!({"operation": {"name": handle}}),
        )
        .await;
    }
    for name in ["first", "second", "solo"] {
        env.wait_phase(name, Phase::Succeeded, WAIT).await;
    }
    let both = env.sim_operation(&shared).await["gets"]
        .as_u64()
        .unwrap_or(0);
    let one = env.sim_operation(&alone).await["gets"]
        .as_u64()
        .unwrap_or(0);
    eprintln!("one operation tracked by two objects: {both} GETs; by one: {one}");
    assert!(
        both <= one + 2,
        "two objects on one operation polled it {both} times, one object alone {one}"
    );
}
