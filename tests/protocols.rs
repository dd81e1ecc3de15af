//! One end-to-end test per upstream protocol (beyond `google`, covered in `e2e.rs`), against the
//! real apiserver, the simulator and the operator, plus the protocol-specific safety rules.

use lro_testkit as support;

use std::time::Duration;

use lro_operator::api::{Phase, condition};
use serde_json::{Value, json};
use support::{TestEnv, status_of};

/// Applies a `LongRunningOperation` `name` on `provider` that starts with `start`.
async fn start_operation(env: &TestEnv, name: &str, provider: &str, start: Value) {
    env.operation(name, provider, json!({"start": start})).await;
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn redpanda_cluster_is_created_and_its_result_recorded() {
    let env = TestEnv::new("redpanda").await;
    env.provider("redpanda", "redpanda", "/redpanda", json!({}))
        .await;
    start_operation(
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
    env.provider("redpanda", "redpanda", "/redpanda", json!({}))
        .await;
    start_operation(
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
async fn a_lost_start_without_idempotency_key_is_found_not_resent() {
    let mut env = TestEnv::new("redpanda-lost").await;
    env.provider("redpanda", "redpanda", "/redpanda", json!({}))
        .await;
    // Three creates whose answers the operator never reads: one named (found by its name), two
    // unnamed of the same type at the same time (which of the two is whose cannot be told).
    for (name, cluster) in [
        ("named", json!({"name": "c1"})),
        ("twin-a", json!({})),
        ("twin-b", json!({})),
    ] {
        start_operation(&env, name,
            "redpanda",
            json!({
                "path": "v1/clusters",
                "body": {"cluster": cluster, "simulate": {"durationSeconds": 30, "startDelayMs": 4000}},
            }),
        )
        .await;
    }
    for name in ["named", "twin-a", "twin-b"] {
        env.wait_phase(name, Phase::Starting, WAIT).await;
    }
    // The simulator holds the answers for 4 s: the requests are in flight now.
    for _ in 0..50 {
        if env.sim_stats().await["creates"] == json!(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.kill_operator().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.start_operator().await;
    // Found upstream, by its name: adopted, not resent.
    let op = env.wait_phase("named", Phase::Running, WAIT).await;
    assert!(
        status_of(&op)
            .operation
            .as_ref()
            .and_then(|h| h.id.clone())
            .is_some()
    );
    // Ambiguous: given up with the reason, never resent.
    for name in ["twin-a", "twin-b"] {
        let op = env.wait_phase(name, Phase::Failed, WAIT).await;
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
        assert!(
            stalled.message.contains("cannot be told"),
            "says why: {}",
            stalled.message
        );
    }
    let stats = env.sim_stats().await;
    assert_eq!(
        stats["creates"],
        json!(3),
        "each start was sent once: {stats}"
    );
}

/// The simulator's logged requests (method, path, unix ms) whose path starts with `prefix`.
fn requests_under(stats: &Value, prefix: &str) -> Vec<(String, String, i64)> {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["method"].as_str()?.to_owned(),
                r["path"].as_str()?.to_owned(),
                r["atMs"].as_i64()?,
            ))
        })
        .filter(|(_, path, _)| path.starts_with(prefix))
        .collect()
}

/// The path of an absolute URL.
fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url} is not a URL: {e}"))
        .path()
        .to_owned()
}

/// Compute: the same 8 s operation, polled with GETs on one provider and long-polled with
/// `POST …/wait` on another. The long poll sends far fewer requests and still sees the
/// completion within one round trip.
#[tokio::test]
async fn compute_long_poll_sees_completion_at_once_with_far_fewer_requests() {
    let env = TestEnv::new("compute").await;
    env.provider(
        "compute",
        "compute",
        "/compute/v1",
        json!({"compute": {"requestIdParameter": "requestId"}}),
    )
    .await;
    env.provider(
        "compute-wait",
        "compute",
        "/compute/v1",
        json!({"compute": {"longPoll": true, "requestIdParameter": "requestId"}}),
    )
    .await;
    for (name, provider) in [("plain", "compute"), ("waited", "compute-wait")] {
        start_operation(
            &env,
            name,
            provider,
            json!({
                "path": "projects/demo/zones/us-central1-a/instances",
                "body": {"name": format!("vm-{name}"), "simulate": {"durationSeconds": 8}},
            }),
        )
        .await;
    }
    let plain = env.wait_phase("plain", Phase::Succeeded, WAIT).await;
    let waited = env.wait_phase("waited", Phase::Succeeded, WAIT).await;
    let stats = env.sim_stats().await;
    let count = |op: &lro_operator::api::LongRunningOperation, method: &str, suffix: &str| {
        let status = status_of(op);
        let url = status.operation.as_ref().and_then(|h| h.url.clone());
        let path = path_of(&url.expect("the selfLink is the handle"));
        requests_under(&stats, &path)
            .iter()
            .filter(|(m, p, _)| m == method && *p == format!("{path}{suffix}"))
            .count()
    };
    let (plain_gets, plain_waits) = (count(&plain, "GET", ""), count(&plain, "POST", "/wait"));
    let (waited_gets, waits) = (count(&waited, "GET", ""), count(&waited, "POST", "/wait"));
    assert_eq!((plain_waits, waited_gets), (0, 0), "{stats:#}");
    assert!(
        (1..=2).contains(&waits),
        "one long poll covers the operation (the simulator holds up to 20 s): {waits} waits"
    );
    assert!(
        plain_gets >= waits + 3,
        "plain polling sends many more requests: {plain_gets} GETs vs {waits} waits"
    );
    // Completion is seen as soon as the upstream is done, not at the next scheduled poll.
    let uid = waited.metadata.uid.clone().expect("uid");
    let upstream = stats["operations"]
        .as_object()
        .and_then(|ops| ops.values().find(|op| op["requestId"] == json!(uid)))
        .unwrap_or_else(|| panic!("no upstream operation with requestId {uid}: {stats:#}"));
    let done_at = upstream["doneAtMs"].as_i64().expect("done");
    let status = status_of(&waited);
    let seen_at = status
        .last_change_at
        .as_ref()
        .expect("lastChangeAt")
        .0
        .as_millisecond();
    assert!(
        (0..=1000).contains(&(seen_at - done_at)),
        "completion seen {} ms after the upstream finished",
        seen_at - done_at
    );
    assert_eq!(status.upstream_state.as_deref(), Some("DONE"));
    assert_eq!(status.progress, Some(100));
    assert!(
        status
            .resource_id
            .as_deref()
            .is_some_and(|r| r.ends_with("/instances/vm-waited")),
        "targetLink is the resource: {:?}",
        status.resource_id
    );
    assert_eq!(stats["creates"], json!(2));
}

/// Azure: a PUT answered 201 with an `Azure-AsyncOperation` monitor, polled at the pace of
/// `retry-after-ms`, then the final GET of the resource, whose body is the result.
#[tokio::test]
async fn azure_put_polls_the_async_monitor_then_reads_the_resource() {
    let env = TestEnv::new("azure").await;
    env.provider("azure", "azure", "/azure", json!({})).await;
    let resource =
        "subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1";
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": "account"},
        "spec": {"providerRef": {"name": "azure"}, "start": {
            "method": "PUT",
            "path": resource,
            "query": {"api-version": "2023-05-01"},
            "body": {"location": "westeurope", "sku": {"name": "Standard_LRS"},
                     "properties": {"minimumTlsVersion": "TLS1_2"},
                     "simulate": {"durationSeconds": 4, "retryAfterMs": 1500}},
        }},
    });
    env.apply(&manifest.to_string()).await.assert_ok();
    let op = env.wait_phase("account", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    let handle = status.operation.clone().expect("handle");
    assert_eq!(handle.mode.as_deref(), Some("AzureAsyncOperation"));
    assert_eq!(
        handle.result_url.as_deref(),
        Some(format!("{resource}?api-version=2023-05-01").as_str())
    );
    let monitor = path_of(handle.url.as_deref().expect("the monitor URL"));
    assert!(monitor.contains("/operationStatuses/"), "{monitor}");
    // The final GET's answer is the result.
    let result = status.result.clone().expect("the resource is the result");
    assert_eq!(result["properties"]["provisioningState"], "Succeeded");
    assert_eq!(result["properties"]["minimumTlsVersion"], "TLS1_2");
    assert_eq!(
        status.resource_id.as_deref(),
        Some(format!("/{resource}").as_str())
    );
    assert_eq!(status.upstream_state.as_deref(), Some("Succeeded"));
    assert_eq!(status.progress, Some(100));
    let stats = env.sim_stats().await;
    let requests = requests_under(&stats, "/azure/");
    let resource_gets = requests
        .iter()
        .filter(|(m, p, _)| m == "GET" && *p == format!("/azure/{resource}"))
        .count();
    let puts = requests.iter().filter(|(m, _, _)| m == "PUT").count();
    assert_eq!((puts, resource_gets), (1, 1), "{requests:?}");
    // retry-after-ms: 1500 paces the polls (the 500 ms → 2 s schedule would poll sooner).
    let polls: Vec<i64> = requests
        .iter()
        .filter(|(m, p, _)| m == "GET" && *p == monitor)
        .map(|(_, _, at)| *at)
        .collect();
    let gaps: Vec<i64> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        !gaps.is_empty() && gaps.iter().all(|gap| *gap >= 1400),
        "monitor polls {gaps:?} ms apart: {requests:?}"
    );
    assert_eq!(stats["creates"], json!(1));
}

/// AWS Cloud Control: CreateResource with the uid as ClientToken, polled with
/// GetResourceRequestStatus; the parsed ResourceModel is the result.
#[tokio::test]
async fn aws_cloud_control_creates_a_resource_and_records_its_model() {
    let env = TestEnv::new("aws").await;
    env.provider("aws", "awsCloudControl", "/aws", json!({}))
        .await;
    start_operation(
        &env,
        "log-group",
        "aws",
        json!({
            "path": "/",
            "body": {"TypeName": "AWS::Logs::LogGroup",
                     "DesiredState": {"LogGroupName": "e2e-log-group", "RetentionInDays": 90},
                     "simulate": {"durationSeconds": 2}},
        }),
    )
    .await;
    let op = env.wait_phase("log-group", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    assert_eq!(status.upstream_state.as_deref(), Some("SUCCESS"));
    assert_eq!(status.resource_id.as_deref(), Some("e2e-log-group"));
    let result = status
        .result
        .clone()
        .expect("the ResourceModel is the result");
    assert_eq!(result["LogGroupName"], "e2e-log-group");
    assert_eq!(result["RetentionInDays"], 90);
    assert!(
        result["Arn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:"))
    );
    assert_eq!(status.progress, None, "Cloud Control reports no progress");
    let handle = status.operation.clone().expect("handle");
    let uid = op.metadata.uid.clone().expect("uid");
    let stats = env.sim_stats().await;
    let upstream = stats["operations"]
        .as_object()
        .and_then(|ops| ops.values().find(|o| o["requestId"] == json!(uid)))
        .unwrap_or_else(|| panic!("no request with ClientToken {uid}: {stats:#}"));
    assert!(upstream["gets"].as_u64().unwrap_or(0) >= 1);
    assert!(handle.id.is_some(), "the RequestToken is the handle");
    assert_eq!(stats["creates"], json!(1));
    assert_eq!(stats["duplicateCreates"], json!(0));
}

// ------------------------------------------------------------------------------ http

/// The `http` protocol's expressions for the simulator's generic job API (`/generic`).
fn generic_http(succeeded: &str) -> Value {
    json!({
        "operationFrom": "headers['location']",
        "succeeded": succeeded,
        "failed": "body.status == 'error'",
        "progress": "body.percent",
        "result": "body.output",
        "message": "body.error.message",
        "state": "body.status",
        "idempotencyKeyHeader": "Idempotency-Key",
    })
}

/// Generic HTTP: a 202 + `Location` job, read through the provider's CEL expressions: the
/// handle from `operationFrom`, progress, state and result from theirs, the failure message from
/// `message`; the request id travels in the `Idempotency-Key` header. A provider whose
/// expression does not compile (no webhook here) leaves its operations `Pending`, saying why.
#[tokio::test]
async fn http_jobs_are_read_through_the_providers_cel_expressions() {
    let env = TestEnv::new("http").await;
    let generic = json!({"http": generic_http("body.status == 'done'")});
    env.provider("generic", "http", "/generic", generic).await;
    let broken = json!({"http": generic_http("body.status ==")});
    env.provider("broken", "http", "/generic", broken).await;
    start_operation(
        &env,
        "report",
        "generic",
        json!({"path": "jobs", "body": {"name": "q3", "simulate": {"durationSeconds": 4}}}),
    )
    .await;
    start_operation(
        &env,
        "export",
        "generic",
        json!({"path": "exports", "body": {"simulate": {"durationSeconds": 1,
            "outcome": "error", "errorMessage": "disk full"}}}),
    )
    .await;
    start_operation(&env, "never", "broken", json!({"path": "jobs"})).await;

    let op = env.wait_phase("report", Phase::Succeeded, WAIT).await;
    let status = status_of(&op);
    let result = status.result.clone().expect("body.output is the result");
    assert_eq!(result["input"], json!({"name": "q3"}));
    assert!(
        result["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/outputs/job-1"))
    );
    assert_eq!(status.upstream_state.as_deref(), Some("done"));
    assert_eq!(status.progress, Some(100));
    let handle = status.operation.clone().expect("handle");
    assert_eq!(
        handle.url.as_deref(),
        Some(format!("{}/generic/jobs/job-1", env.sim_url()).as_str()),
        "operationFrom resolved the Location path on the baseURL's origin"
    );
    let running: Vec<i32> = env
        .status_writes("report")
        .iter()
        .filter(|w| w.status.phase == Some(Phase::Running))
        .filter_map(|w| w.status.progress)
        .filter(|p| (1..100).contains(p))
        .collect();
    assert!(!running.is_empty(), "progress was reported on the way");
    let uid = op.metadata.uid.clone().expect("uid");
    let stats = env.sim_stats().await;
    assert!(
        stats["operations"]
            .as_object()
            .is_some_and(|ops| ops.values().any(|o| o["requestId"] == json!(uid))),
        "the request id is the Idempotency-Key: {stats:#}"
    );
    assert_eq!(stats["duplicateCreates"], json!(0));

    let op = env.wait_phase("export", Phase::Failed, WAIT).await;
    let error = status_of(&op).error.clone().expect("error recorded");
    assert_eq!(error.message, "disk full");
    assert_eq!(status_of(&op).upstream_state.as_deref(), Some("error"));

    let op = env
        .wait_for("never", "held back by its provider", WAIT, |op| {
            op.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == condition::RECONCILING
                        && c.reason == "ProviderNotReady"
                        && c.message
                            .contains("spec.http.succeeded: Syntax error at 1:15")
                })
            })
        })
        .await;
    assert_eq!(status_of(&op).phase, Some(Phase::Pending));
    assert_eq!(
        env.sim_stats().await["creates"],
        json!(2),
        "nothing started for it"
    );
    // The provider itself says so.
    let ready = "jsonpath={.status.conditions[?(@.type=='Ready')].reason}";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = env
            .kubectl(&["get", "operationprovider", "broken", "-o", ready])
            .await;
        if out.stdout.trim() == "InvalidExpression" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider is not Ready=False/InvalidExpression: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes cluster-scoped objects when dropped, even when the test fails.
struct ClusterCleanup {
    kubeconfig: std::path::PathBuf,
    objects: Vec<(&'static str, String)>,
}

impl Drop for ClusterCleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.objects {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", kind, name, "--ignore-not-found", "--wait=false"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A CA, and a serving certificate for 127.0.0.1 that it signed, in `dir` (`tls.crt`,
/// `tls.key`); returns the CA's PEM.
fn webhook_certificates(dir: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "lro-operator e2e webhook CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("serving key");
    let serving = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("serving params")
        .signed_by(&key, &ca)
        .expect("serving certificate");
    std::fs::write(dir.join("tls.crt"), serving.pem()).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write tls.key");
    ca.pem()
}

/// The operator's admission webhook on the real apiserver: a provider whose CEL expression does
/// not compile is refused by `kubectl apply`, naming the field; a valid one is admitted.
#[tokio::test]
async fn the_webhook_refuses_http_expressions_that_do_not_compile() {
    use base64::Engine as _;
    let mut env = TestEnv::new("http-webhook").await;
    let certs = tempfile::tempdir().expect("cert dir");
    let ca = webhook_certificates(certs.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = certs.path().to_string_lossy().into_owned();
    env.restart_operator_with(&["--webhook-addr", &addr, "--webhook-cert-dir", &dir])
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Scoped to objects carrying this test's label: other tests share the apiserver.
    let mut labels = serde_json::Map::new();
    labels.insert("lro.dev/e2e-webhook".into(), json!(env.ns));
    let labels = Value::Object(labels);
    let config = format!("lro-e2e-{}", env.ns);
    let cluster_bad = format!("{}-bad", env.ns);
    let _cleanup = ClusterCleanup {
        kubeconfig: env.kubeconfig().to_owned(),
        objects: vec![
            ("validatingwebhookconfiguration", config.clone()),
            ("clusteroperationprovider", cluster_bad.clone()),
        ],
    };
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": [{
            "name": "providers.lro.dev",
            "clientConfig": {
                "url": format!("https://{addr}/validate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca),
            },
            "rules": [{
                "apiGroups": ["lro.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["operationproviders", "clusteroperationproviders"],
                "scope": "*",
            }],
            "objectSelector": {"matchLabels": labels},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    });
    env.apply(&webhook.to_string()).await.assert_ok();

    let provider = |kind: &str, name: &str, succeeded: &str| {
        json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "baseURL": format!("{}/generic", env.sim_url()),
                "protocol": "http",
                "http": generic_http(succeeded),
            },
        })
        .to_string()
    };
    // The apiserver picks the configuration up within moments: try until it refuses.
    let mut attempt = 0;
    let refused = loop {
        attempt += 1;
        let name = format!("bad-{attempt}");
        let out = env
            .apply(&provider("OperationProvider", &name, "body.status =="))
            .await;
        if !out.success {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline + WAIT,
            "the webhook never refused the provider: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        refused.stderr.contains("denied the request")
            && refused
                .stderr
                .contains("spec.http.succeeded: Syntax error at 1:15"),
        "{refused}"
    );
    let out = env
        .apply(&provider(
            "ClusterOperationProvider",
            &cluster_bad,
            "bdy.done",
        ))
        .await;
    assert!(
        !out.success
            && out
                .stderr
                .contains("spec.http.succeeded: undeclared reference to 'bdy'"),
        "{out}"
    );
    // A valid one is admitted (with `failurePolicy: Fail`, only an answering webhook admits it).
    env.apply(&provider(
        "OperationProvider",
        "good",
        "body.status == 'done'",
    ))
    .await
    .assert_ok();
    // And an update that breaks it is refused.
    let out = env
        .apply(&provider(
            "OperationProvider",
            "good",
            "body.status == 'done",
        ))
        .await;
    assert!(
        !out.success && out.stderr.contains("spec.http.succeeded: "),
        "{out}"
    );
}
