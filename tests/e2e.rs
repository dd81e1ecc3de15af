//! End-to-end tests: a real kube-apiserver + etcd, the real `lro-operator` and `lro-sim` binaries
//! as separate processes, real `kubectl`. See `testkit/` for the harness.
//!
//! Run with `cargo test --test e2e -- --test-threads=2`. Without `LRO_E2E_KUBECONFIG` the harness
//! runs `hack/control-plane up --dir $TMPDIR/lro-e2e` (reused by later runs; stop it with
//! `hack/control-plane down --dir …`); with it, that kubeconfig is used. `LRO_E2E_KEEP_LOGS=1`
//! keeps every test's operator and simulator logs (a failed test always keeps and prints them).

use lro_testkit as support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use lro_operator::api::{LongRunningOperation, LongRunningOperationStatus, Phase};
use lro_operator::reconcile::Schedule;
use serde_json::{Value, json};
use support::{PROVIDER, TestEnv, Write, phase_of, pretty, status_of, unix_ms};

/// Generous: the operations below take 2-8 s.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The parent every started operation is created under.
const CLUSTERS: &str = "projects/demo/clusters";

// ---------------------------------------------------------------------------------- manifests

fn lro(name: &str, spec: Value) -> String {
    manifest("LongRunningOperation", name, spec)
}

fn manifest(kind: &str, name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// Adopt the upstream operation `name`.
fn adopt(name: &str) -> Value {
    json!({"providerRef": {"name": PROVIDER}, "operation": {"name": name}})
}

/// Start an operation by POSTing `body` to `projects/demo/clusters`.
fn start(body: Value) -> Value {
    json!({"providerRef": {"name": PROVIDER}, "start": {"path": CLUSTERS, "body": body}})
}

/// Start an operation whose body only scripts the simulator.
fn start_simulated(simulate: Value) -> Value {
    start(json!({"simulate": simulate}))
}

/// `spec` with `spec.polling` set.
fn with_polling(mut spec: Value, polling: Value) -> Value {
    spec["polling"] = polling;
    spec
}

// ---------------------------------------------------------------------------------- assertions

#[track_caller]
fn condition<'a>(op: &'a LongRunningOperation, kind: &str) -> &'a Condition {
    let status = status_of(op);
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {}", pretty(status)))
}

/// Asserts `Ready`, `Reconciling` and `Stalled` have these statuses ("True"/"False").
#[track_caller]
fn assert_conditions(op: &LongRunningOperation, ready: &str, reconciling: &str, stalled: &str) {
    let actual = ["Ready", "Reconciling", "Stalled"].map(|k| condition(op, k).status.as_str());
    assert_eq!(
        actual,
        [ready, reconciling, stalled],
        "conditions Ready/Reconciling/Stalled of {}",
        pretty(status_of(op))
    );
}

/// Asserts a terminal failure-like phase with `error.code`, and the stall the user did (not) cause.
#[track_caller]
fn assert_ended(op: &LongRunningOperation, phase: Phase, code: &str, stalled: &str) {
    let status = status_of(op);
    assert_eq!(status.phase, Some(phase), "{}", pretty(status));
    let error = status.error.as_ref().expect("status.error is set");
    assert_eq!(error.code, code, "{}", pretty(status));
    assert!(
        status.completed_at.is_some(),
        "completedAt: {}",
        pretty(status)
    );
    assert_conditions(op, "False", "False", stalled);
}

/// Whether `op` is running with a known upstream handle.
fn running_with_handle(op: &LongRunningOperation) -> bool {
    phase_of(op) == Some(Phase::Running)
        && op
            .status
            .as_ref()
            .and_then(|s| s.operation.as_ref())
            .is_some_and(|h| h.name.is_some())
}

fn statuses(writes: &[Write]) -> Vec<LongRunningOperationStatus> {
    writes.iter().map(|w| w.status.clone()).collect()
}

/// The phases `writes` went through, without repeats.
fn phases(writes: &[Write]) -> Vec<Phase> {
    let mut phases: Vec<Phase> = writes.iter().filter_map(|w| w.status.phase).collect();
    phases.dedup();
    phases
}

fn handle_name(op: &LongRunningOperation) -> String {
    let handle = status_of(op).operation.as_ref().expect("status.operation");
    handle.name.clone().expect("status.operation.name")
}

// ---------------------------------------------------------------------------------- tests

#[tokio::test]
async fn adopted_operation_succeeds_with_result() {
    let env = TestEnv::new("adopt").await;
    let upstream = env
        .sim_adoptable(json!({"durationSeconds": 3, "progress": true}))
        .await;
    env.apply(&lro("adopt", adopt(&upstream))).await.assert_ok();

    let op = env.wait_phase("adopt", Phase::Succeeded, TIMEOUT).await;
    let status = status_of(&op);
    let response = env.sim_upstream(&upstream).await["response"].clone();
    let result = status.result.as_ref().expect("status.result");
    assert_eq!(result, &response, "result is the upstream's response");
    assert_eq!(result["state"], "ACTIVE");
    assert_eq!(status.resource_id.as_deref(), result["name"].as_str());
    assert!(
        status.resource_id.is_some(),
        "resourceId: {}",
        pretty(status)
    );
    assert_eq!(status.progress, Some(100));
    assert_eq!(status.upstream_state.as_deref(), Some("DONE"));
    assert_eq!(handle_name(&op), upstream);
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    assert_eq!(status.observed_generation, op.metadata.generation);
    assert_conditions(&op, "True", "False", "False");

    let written = statuses(&env.status_writes("adopt"));
    assert!(
        written.iter().any(
            |s| s.phase == Some(Phase::Running) && s.progress.is_some_and(|p| 0 < p && p < 100)
        ),
        "never seen Running with progress strictly between 0 and 100: {}",
        pretty(&written)
    );
}

#[tokio::test]
async fn started_operation_succeeds_once() {
    let env = TestEnv::new("start").await;
    let resource = json!({"displayName": "e2e-cluster", "nodeCount": 3, "labels": {"env": "test"}});
    let mut body = resource.clone();
    body["simulate"] = json!({"durationSeconds": 3});
    env.apply(&lro("create-cluster", start(body)))
        .await
        .assert_ok();

    let op = env
        .wait_phase("create-cluster", Phase::Succeeded, TIMEOUT)
        .await;
    let status = status_of(&op);
    let handle = status.operation.as_ref().expect("status.operation");
    assert!(
        handle
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("operations/")),
        "handle: {handle:?}"
    );
    assert_eq!(handle.request_id, op.metadata.uid, "requestId is the uid");
    let result = status.result.as_ref().expect("status.result");
    assert_eq!(
        result["spec"], resource,
        "the resource as created, without simulate"
    );
    assert_eq!(result["state"], "ACTIVE");
    assert_conditions(&op, "True", "False", "False");

    let writes = env.status_writes("create-cluster");
    let intent = &writes.first().expect("a status write").status;
    assert_eq!(
        intent.phase,
        Some(Phase::Starting),
        "the intent is written first"
    );
    let intent_handle = intent.operation.as_ref().expect("the intent has a handle");
    assert_eq!(intent_handle.request_id, op.metadata.uid);
    assert_eq!(intent_handle.name, None, "no name before the start request");
    let expected = [Phase::Starting, Phase::Running, Phase::Succeeded];
    assert_eq!(phases(&writes), expected);

    let stats = env.sim_stats().await;
    assert_eq!(stats["creates"], 1, "{stats:#}");
    assert_eq!(stats["duplicateCreates"], 0, "{stats:#}");
}

#[tokio::test]
async fn upstream_failure_fails() {
    let env = TestEnv::new("fail").await;
    let simulate = json!({
        "durationSeconds": 2, "outcome": "error", "errorCode": 9, "errorMessage": "quota exceeded",
    });
    env.apply(&lro("quota", start_simulated(simulate)))
        .await
        .assert_ok();

    let op = env.wait_phase("quota", Phase::Failed, TIMEOUT).await;
    assert_ended(&op, Phase::Failed, "FAILED_PRECONDITION", "True");
    let error = status_of(&op).error.as_ref().expect("status.error");
    assert!(error.message.contains("quota exceeded"), "{error:?}");
}

#[tokio::test]
async fn upstream_cancellation_is_a_stall() {
    let env = TestEnv::new("upstream-cancel").await;
    let simulate = json!({"durationSeconds": 2, "outcome": "cancelled"});
    env.apply(&lro("gone", start_simulated(simulate)))
        .await
        .assert_ok();

    let op = env.wait_phase("gone", Phase::Cancelled, TIMEOUT).await;
    // Nobody asked for the cancellation: it is a stall.
    assert_ended(&op, Phase::Cancelled, "CANCELLED", "True");
}

#[tokio::test]
async fn spec_cancel_cancels_upstream() {
    let env = TestEnv::new("cancel").await;
    env.apply(&lro(
        "long",
        start_simulated(json!({"durationSeconds": 60})),
    ))
    .await
    .assert_ok();
    let running = env
        .wait_for(
            "long",
            "running with a handle",
            TIMEOUT,
            running_with_handle,
        )
        .await;
    let upstream = handle_name(&running);

    env.kubectl(&[
        "patch",
        "lro",
        "long",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"cancel":true}}"#,
    ])
    .await
    .assert_ok();
    let op = env
        .wait_phase("long", Phase::Cancelled, Duration::from_secs(10))
        .await;
    // The user asked for it: not a stall.
    assert_ended(&op, Phase::Cancelled, "CANCELLED", "False");
    let sim = env.sim_operation(&upstream).await;
    assert!(sim["cancels"].as_u64() >= Some(1), "{sim:#}");
    assert_eq!(sim["outcome"], "cancelled", "{sim:#}");
    let expected = [
        Phase::Starting,
        Phase::Running,
        Phase::Cancelling,
        Phase::Cancelled,
    ];
    assert_eq!(phases(&env.status_writes("long")), expected);
}

#[tokio::test]
async fn timeout_fails_the_operation() {
    let env = TestEnv::new("timeout").await;
    let spec = with_polling(
        start_simulated(json!({"durationSeconds": 60})),
        json!({"timeout": "3s"}),
    );
    // The operation starts after this instant, so it cannot time out sooner than 3 s after it.
    let applied_at = unix_ms();
    env.apply(&lro("slow", spec)).await.assert_ok();

    let op = env.wait_phase("slow", Phase::Failed, TIMEOUT).await;
    let status = status_of(&op);
    assert_eq!(
        condition(&op, "Stalled").reason,
        "Timeout",
        "{}",
        pretty(status)
    );
    assert_conditions(&op, "False", "False", "True");
    let writes = env
        .status_writes_through("slow", |s| s.phase == Some(Phase::Failed))
        .await;
    let failed = writes
        .iter()
        .find(|w| w.status.phase == Some(Phase::Failed));
    let failed_at = failed.expect("the Failed status write").seen_at_ms;
    let created_at = env.sim_operation(&handle_name(&op)).await["createdAtMs"].clone();
    assert!(
        failed_at - applied_at >= 3000,
        "timed out {} ms after the object was applied (upstream created at {created_at}, \
         applied at {applied_at}, Failed seen at {failed_at}), sooner than polling.timeout 3s: {}",
        failed_at - applied_at,
        pretty(status)
    );
}

#[tokio::test]
async fn kubectl_wait_and_get() {
    let env = TestEnv::new("kubectl").await;
    env.apply(&lro(
        "waited",
        start_simulated(json!({"durationSeconds": 3})),
    ))
    .await
    .assert_ok();
    env.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "lro/waited",
        "--timeout=60s",
    ])
    .await
    .assert_ok();

    let table = env.kubectl(&["get", "lro"]).await.assert_ok().stdout;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PROGRESS", "UPSTREAM", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let expected = ["waited", "Succeeded", "100", "DONE"];
    assert_eq!(row.get(..4), Some(&expected[..]), "{table}");
}

#[tokio::test]
async fn invalid_objects_are_rejected() {
    let env = TestEnv::new("invalid").await;
    const EXACTLY_ONE: &str = "exactly one of spec.start";
    let op_name = json!({"name": "operations/op-1"});
    let both = {
        let mut spec = start(json!({}));
        spec["operation"] = op_name.clone();
        spec
    };
    let cases: Vec<(&str, &str, Value, &[&str])> = vec![
        ("LongRunningOperation", "both", both, &[EXACTLY_ONE]),
        (
            "LongRunningOperation",
            "neither",
            json!({"providerRef": {"name": PROVIDER}}),
            &[EXACTLY_ONE],
        ),
        (
            "LongRunningOperation",
            "negative-interval",
            with_polling(adopt("operations/op-1"), json!({"initialInterval": "-5s"})),
            &["initialInterval", "positive duration"],
        ),
        (
            "LongRunningOperation",
            "max-below-initial",
            with_polling(
                adopt("operations/op-1"),
                json!({"initialInterval": "10s", "maxInterval": "5s"}),
            ),
            &["maxInterval must not be shorter than polling.initialInterval"],
        ),
        (
            "LongRunningOperation",
            "slow-down",
            with_polling(adopt("operations/op-1"), json!({"multiplier": 0.5})),
            &["spec.polling.multiplier", "greater than or equal to 1"],
        ),
        (
            "LongRunningOperation",
            "full-url",
            json!({"providerRef": {"name": PROVIDER}, "start": {"path": "https://evil.example.com/x"}}),
            &["start.path must be a path relative to the provider's baseURL"],
        ),
        (
            "LongRunningOperation",
            "name-and-id",
            json!({"providerRef": {"name": PROVIDER}, "operation": {"name": "operations/op-1", "id": "1"}}),
            &["exactly one of operation.name"],
        ),
        (
            "OperationProvider",
            "pigeon",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "carrier-pigeon"}),
            &["Unsupported value", r#"supported values: "google""#],
        ),
        (
            "OperationProvider",
            "not-a-url",
            json!({"baseURL": "api example", "protocol": "google"}),
            &["baseURL must be an absolute http:// or https:// URL"],
        ),
        (
            "OperationProvider",
            "list-azure",
            json!({"baseURL": "https://management.azure.com", "protocol": "azure", "list": {}}),
            &["spec.list: only the google", "remove spec.list"],
        ),
        (
            "OperationProvider",
            "list-page-token",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "list": {"path": "operations", "query": {"pageToken": "x"}}}),
            &["list.query may not set the page size or token: use list.pageSize"],
        ),
        (
            "OperationProvider",
            "list-page-size",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "redpanda",
                   "list": {"pageSize": 500}}),
            &["spec.list.pageSize", "less than or equal to 100"],
        ),
        (
            "OperationProvider",
            "list-http",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "http",
                   "http": {"operationFrom": "body.url", "succeeded": "true", "failed": "false"},
                   "list": {}}),
            &[
                "spec.list: only the google",
                "azure has no list-operations API",
            ],
        ),
        (
            "OperationProvider",
            "list-compute-no-path",
            json!({"baseURL": "https://compute.googleapis.com/compute/v1", "protocol": "compute",
                   "list": {"query": {"filter": "status != DONE"}}}),
            &["spec.list.path is required with protocol compute"],
        ),
        (
            "OperationProvider",
            "list-compute-max-results",
            json!({"baseURL": "https://compute.googleapis.com/compute/v1", "protocol": "compute",
                   "list": {"path": "projects/p/aggregated/operations", "query": {"maxResults": "500"}}}),
            &["list.query may not set the page size or token: use list.pageSize"],
        ),
        (
            "OperationProvider",
            "list-aws-path",
            json!({"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com", "protocol": "awsCloudControl",
                   "list": {"path": "operations"}}),
            &["spec.list with protocol awsCloudControl: no list.path"],
        ),
        (
            "OperationProvider",
            "list-aws-status",
            json!({"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com", "protocol": "awsCloudControl",
                   "list": {"query": {"OperationStatuses": "PENDING,DONE"}}}),
            &["list.query may only hold OperationStatuses"],
        ),
        (
            "OperationProvider",
            "list-aws-key",
            json!({"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com", "protocol": "awsCloudControl",
                   "list": {"query": {"filter": "x"}}}),
            &["list.query may only hold OperationStatuses"],
        ),
        (
            "OperationProvider",
            "wi-two-clouds",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "auth": {"workloadIdentity": {"serviceAccountName": "lro",
                       "google": {"audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"},
                       "azure": {"tenantID": "t", "clientID": "c"}}}}),
            &["spec.auth.workloadIdentity: set exactly one of google, aws or azure"],
        ),
        (
            "OperationProvider",
            "wi-and-bearer",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "auth": {"bearerToken": {"secretKeyRef": {"name": "s", "key": "k"}},
                            "workloadIdentity": {"serviceAccountName": "lro",
                                "azure": {"tenantID": "t", "clientID": "c"}}}}),
            &[
                "set exactly one of spec.auth.bearerToken",
                "workloadIdentity",
            ],
        ),
        (
            "OperationProvider",
            "wi-other-namespace",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "auth": {"workloadIdentity": {"serviceAccountName": "kube-system/default",
                       "azure": {"tenantID": "t", "clientID": "c"}}}}),
            &[
                "serviceAccountName must be the name of a ServiceAccount of the provider's namespace",
            ],
        ),
        (
            "OperationProvider",
            "wi-role-arn",
            json!({"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com", "protocol": "awsCloudControl",
                   "auth": {"workloadIdentity": {"serviceAccountName": "lro", "aws": {
                       "roleArn": "arn:aws:iam::123456789012:user/lro", "region": "us-east-1",
                       "service": "cloudcontrolapi"}}}}),
            &["roleArn must be an IAM role ARN, e.g. arn:aws:iam::123456789012:role/lro"],
        ),
        (
            "OperationProvider",
            "wi-duration",
            json!({"baseURL": "https://cloudcontrolapi.us-east-1.amazonaws.com", "protocol": "awsCloudControl",
                   "auth": {"workloadIdentity": {"serviceAccountName": "lro", "aws": {
                       "roleArn": "arn:aws:iam::123456789012:role/lro", "durationSeconds": 60,
                       "region": "us-east-1", "service": "cloudcontrolapi"}}}}),
            &["durationSeconds must be between 900 (15 minutes) and 43200 (12 hours)"],
        ),
        (
            "OperationProvider",
            "wi-token-url",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "auth": {"workloadIdentity": {"serviceAccountName": "lro", "google": {
                       "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
                       "tokenURL": "sts.googleapis.com/v1/token"}}}}),
            &["google.tokenURL must be an absolute http:// or https:// URL"],
        ),
        (
            "OperationProvider",
            "wi-tenant",
            json!({"baseURL": "https://management.azure.com", "protocol": "azure",
                   "auth": {"workloadIdentity": {"serviceAccountName": "lro", "azure": {
                       "tenantID": "../common", "clientID": "c"}}}}),
            &["azure.tenantID must be a tenant id (a GUID) or domain"],
        ),
        (
            "OperationProvider",
            "list-full-url",
            json!({"baseURL": "https://api.example.com/v1", "protocol": "google",
                   "list": {"path": "https://evil.example.com/operations"}}),
            &["list.path must be a path relative to baseURL"],
        ),
    ];
    for (kind, name, spec, expected) in cases {
        let out = env.apply(&manifest(kind, name, spec)).await;
        assert!(!out.success, "{kind} {name} was accepted: {out}");
        for needle in expected {
            assert!(
                out.stderr.contains(needle),
                "{kind} {name}: no {needle:?} in {out}"
            );
        }
        let get = env.kubectl(&["get", kind, name]).await;
        assert!(
            !get.success && get.stderr.contains("NotFound"),
            "{kind} {name} exists: {get}"
        );
    }

    // The request cannot change once the operation has begun...
    let create = |nodes: u32| {
        let body = json!({"nodeCount": nodes, "simulate": {"durationSeconds": 2}});
        lro("immutable", start(body))
    };
    env.apply(&create(1)).await.assert_ok();
    env.wait_for("immutable", "begun", TIMEOUT, |op| {
        !matches!(phase_of(op), None | Some(Phase::Pending | Phase::Starting))
    })
    .await;
    let out = env.apply(&create(2)).await;
    assert!(!out.success, "changed start was accepted: {out}");
    assert!(
        out.stderr
            .contains("cannot change once the operation has begun"),
        "{out}"
    );
    let kept = env.get("immutable").await.spec.start.and_then(|s| s.body);
    assert_eq!(kept.map(|b| b["nodeCount"].clone()), Some(json!(1)));

    // ... but other changes after the end only move observedGeneration.
    let before = env.wait_phase("immutable", Phase::Succeeded, TIMEOUT).await;
    let mut changed: Value = serde_json::from_str(&create(1)).expect("manifest is JSON");
    changed["metadata"]["labels"] = json!({"team": "e2e"});
    changed["spec"]["polling"] = json!({"maxInterval": "5s"});
    env.apply(&changed.to_string()).await.assert_ok();
    let generation = before.metadata.generation.map(|g| g + 1);
    let after = env
        .wait_for("immutable", "observing the new generation", TIMEOUT, |op| {
            op.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;
    assert_eq!(after.metadata.generation, generation);
    assert_eq!(
        without_generation(status_of(&after)),
        without_generation(status_of(&before)),
        "only observedGeneration may change"
    );
}

/// `status` with every `observedGeneration` (its own and its conditions') cleared.
fn without_generation(status: &LongRunningOperationStatus) -> LongRunningOperationStatus {
    let mut status = status.clone();
    status.observed_generation = None;
    for c in &mut status.conditions {
        c.observed_generation = None;
    }
    status
}

#[tokio::test]
async fn operator_restart_resumes_polling_without_restarting() {
    let mut env = TestEnv::new("restart").await;
    env.apply(&lro(
        "survivor",
        start_simulated(json!({"durationSeconds": 8})),
    ))
    .await
    .assert_ok();
    let running = env
        .wait_for(
            "survivor",
            "running with a handle",
            TIMEOUT,
            running_with_handle,
        )
        .await;
    let upstream = handle_name(&running);

    env.kill_operator().await;
    let gets_before = env.sim_operation(&upstream).await["gets"].as_u64();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted_at = unix_ms();
    env.start_operator().await;

    let op = env.wait_phase("survivor", Phase::Succeeded, TIMEOUT).await;
    assert_eq!(
        handle_name(&op),
        upstream,
        "the handle survived the restart"
    );
    let stats = env.sim_stats().await;
    assert_eq!(stats["creates"], 1, "{stats:#}");
    assert_eq!(stats["duplicateCreates"], 0, "{stats:#}");
    let sim = &stats["operations"][upstream.as_str()];
    assert!(sim["gets"].as_u64() > gets_before, "{sim:#}");
    let expected = [Phase::Starting, Phase::Running, Phase::Succeeded];
    assert_eq!(phases(&env.status_writes("survivor")), expected);
    let polled_after_restart = get_times(sim).iter().any(|&t| t >= restarted_at);
    assert!(
        polled_after_restart,
        "no GET after the restart at {restarted_at}: {sim:#}"
    );
}

// ---------------------------------------------------------------------------------- economy

/// What one operation cost, against what the schedule allows.
struct Economy {
    gets: u64,
    expected_gets: u64,
    writes: usize,
    distinct_observations: usize,
}

impl Economy {
    fn check(&self, case: &str) {
        eprintln!(
            "economy {case}: GETs {} (expected {} ± 1), status writes {} (distinct observations {}, allowed {})",
            self.gets,
            self.expected_gets,
            self.writes,
            self.distinct_observations,
            self.distinct_observations + 2
        );
        assert!(
            self.gets.abs_diff(self.expected_gets) <= 1,
            "{case}: {} GETs, expected {} ± 1",
            self.gets,
            self.expected_gets
        );
        assert!(
            self.writes <= self.distinct_observations + 2,
            "{case}: {} status writes for {} distinct observations",
            self.writes,
            self.distinct_observations
        );
    }
}

/// Adopts a simulated operation scripted by `script`, polled with `polling` (which must match
/// `schedule`, jitter 0), runs it to success, measures it and checks the measure.
async fn measure(
    case: &str,
    script: Value,
    polling: Value,
    schedule: Schedule,
) -> (TestEnv, Economy) {
    let env = TestEnv::new(case).await;
    let upstream = env.sim_adoptable(script).await;
    env.apply(&lro(case, with_polling(adopt(&upstream), polling)))
        .await
        .assert_ok();
    env.wait_phase(case, Phase::Succeeded, TIMEOUT).await;

    let sim = env.sim_operation(&upstream).await;
    let done = sim["doneAtMs"].as_u64().expect("doneAtMs");
    let first_get = *get_times(&sim).first().expect("at least one GET");
    let window = done.saturating_sub(first_get) as f64 / 1000.0;
    let writes = statuses(&env.status_writes(case));
    let observations: BTreeSet<_> = writes
        .iter()
        .filter(|s| s.upstream_state.is_some())
        .map(|s| (s.upstream_state.clone(), s.progress))
        .collect();
    eprintln!(
        "economy {case}: GET times {:?}",
        relative(&get_times(&sim), first_get)
    );
    eprintln!("economy {case}: observations {observations:?}");
    let economy = Economy {
        gets: sim["gets"].as_u64().expect("gets"),
        // The schedule's points up to the done time, plus the first one at or after it.
        expected_gets: schedule.polls_within(window, 0) + 1,
        writes: writes.len(),
        distinct_observations: observations.len(),
    };
    economy.check(case);
    (env, economy)
}

#[tokio::test]
async fn economy_backoff_without_progress() {
    let schedule = Schedule {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let script = json!({"durationSeconds": 6, "progress": false});
    let polling =
        json!({"initialInterval": "1s", "maxInterval": "4s", "multiplier": 2, "jitter": 0});
    let (_env, economy) = measure("economy-backoff", script, polling, schedule).await;
    assert_eq!(economy.distinct_observations, 2, "RUNNING, then DONE");
}

#[tokio::test]
async fn economy_fixed_interval_with_progress() {
    let schedule = Schedule {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        multiplier: 1.0,
        jitter: 0.0,
    };
    let script = json!({"durationSeconds": 6, "progress": true, "progressStep": 25});
    let polling =
        json!({"initialInterval": "1s", "maxInterval": "1s", "multiplier": 1, "jitter": 0});
    measure("economy-progress", script, polling, schedule).await;
}

fn get_times(sim: &Value) -> Vec<u64> {
    let times = sim["getTimesMs"].as_array().expect("getTimesMs");
    times.iter().filter_map(Value::as_u64).collect()
}

fn relative(times: &[u64], origin: u64) -> Vec<i64> {
    times.iter().map(|&t| t as i64 - origin as i64).collect()
}
