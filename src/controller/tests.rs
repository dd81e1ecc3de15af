//! The controller's wiring, without a process or a cluster: whole reconciles against a mocked
//! API server (kube's `tower-test` mock service, as kube-rs's own controller-rs does) and the
//! simulator in process as the upstream. Each test checks the requests the reconcile sent to the
//! API server, in order: status writes, finalizer patches, outputs, Events.

use std::sync::{Arc, Mutex};

use super::events::{Recorder, Reporter};
use clap::Parser;
use futures::StreamExt;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::upstream::rate_limit::RateLimits;

/// One request the API server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    fn is(&self, method: &str, suffix: &str) -> bool {
        self.method == method && self.path.ends_with(suffix)
    }
}

/// A mocked API server answering every request with `object` (for the operation's own paths),
/// 404 to any other read (nothing else exists), or an echo of the request body; it records what
/// it was asked.
fn api_server(object: Value) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    api_server_failing(object, 0)
}

/// [`api_server`], answering the first `status_failures` status writes with a 500.
fn api_server_failing(
    object: Value,
    mut status_failures: usize,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let mut code = 200;
            let answer = if path.ends_with("/status") && status_failures > 0 {
                status_failures -= 1;
                code = 500;
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "InternalError", "code": 500, "message": "etcd hiccup"})
            } else if path.contains("/longrunningoperations/") {
                object.clone()
            } else if parts.method == http::Method::GET {
                code = 404;
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "not found"})
            } else {
                let mut echo = body.clone();
                if echo["metadata"]["name"].is_null() {
                    echo["metadata"]["name"] = json!("generated");
                }
                echo
            };
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path,
                body,
            });
            respond.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "default"), seen)
}

/// The simulator in process; its root URL.
async fn simulator() -> (String, lro_sim::SimState) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = lro_sim::SimState::default();
    tokio::spawn(axum::serve(listener, lro_sim::router(state.clone())).into_future());
    (format!("http://{addr}"), state)
}

/// A cache already synced with `objects`.
fn cache<K>(objects: Vec<K>) -> cache::Cache<K>
where
    K: kube::Resource<DynamicType = ()>
        + kube::runtime::reflector::Lookup<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + serde::de::DeserializeOwned
        + 'static,
{
    let mut events = vec![Ok(watcher::Event::Init)];
    events.extend(
        objects
            .into_iter()
            .map(|o| Ok(watcher::Event::InitApply(o))),
    );
    events.push(Ok(watcher::Event::InitDone));
    let (cache, stream) = cache::Cache::new(futures::stream::iter(events));
    tokio::spawn(stream.for_each(|_| async {}));
    cache
}

fn config() -> Config {
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }
    let args = Run::try_parse_from(["run", "--leader-elect=false", "--allow-private-networks"])
        .unwrap()
        .args;
    Config::from_args(args)
}

/// A context whose API server is `client` and whose only provider, `sim`, speaks `google`
/// to `base_url`.
fn context(
    client: kube::Client,
    base_url: &str,
    operations: Vec<LongRunningOperation>,
) -> Arc<Context> {
    let provider: OperationProvider = serde_json::from_value(json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "OperationProvider",
        "metadata": {"name": "sim", "namespace": "ns", "uid": "p-1", "generation": 1},
        "spec": {"baseURL": base_url, "protocol": "google",
                 "google": {"requestIdParameter": "requestId"},
                 "polling": {"initialInterval": "1s"}},
    }))
    .unwrap();
    let config = config();
    let metrics = Arc::new(Metrics::new());
    Arc::new(Context {
        providers: provider_registry::Registry::new(
            client.clone(),
            config.client,
            None,
            Arc::clone(&metrics),
        ),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: None,
            },
        ),
        memory: Mutex::new(HashMap::new()),
        leadership: leader::Leadership::new(&config.leader),
        config,
        metrics,
        caches: Caches {
            providers: cache(vec![provider]),
            cluster_providers: cache(vec![]),
            operations: cache(operations),
        },
        rate_limits: RateLimits::default(),
        fair_share: fair_share::FairShare::new(4),
        observations: Default::default(),
        client,
    })
}

fn operation(spec: Value, status: Value, meta: Value) -> LongRunningOperation {
    let mut metadata = json!({"name": "op", "namespace": "ns", "uid": "u-1", "generation": 1});
    for (k, v) in meta.as_object().into_iter().flatten() {
        metadata[k] = v.clone();
    }
    let mut spec_full = json!({"providerRef": {"name": "sim"}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        spec_full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "lro.dev/v1alpha1", "kind": "LongRunningOperation",
        "metadata": metadata, "spec": spec_full, "status": status,
    }))
    .unwrap()
}

async fn run(op: LongRunningOperation, base_url: &str) -> Vec<Seen> {
    let (client, seen) = api_server(serde_json::to_value(&op).unwrap());
    let ctx = context(client, base_url, vec![op.clone()]);
    reconcile::reconcile(Arc::new(op), ctx)
        .await
        .expect("the reconcile succeeds");
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_start_writes_its_intent_before_sending_and_the_handle_after() {
    let (sim, _state) = simulator().await;
    let op = operation(
        json!({"start": {"path": "projects/demo/clusters", "body": {"simulate": {"durationSeconds": 60}}}}),
        json!({}),
        json!({}),
    );
    let seen = run(op, &format!("{sim}/v1")).await;
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.is("PATCH", "/status")).collect();
    assert_eq!(writes.len(), 2, "{seen:#?}");
    assert_eq!(writes[0].body["status"]["phase"], "Starting");
    assert_eq!(writes[0].body["status"]["operation"]["requestId"], "u-1");
    assert_eq!(writes[1].body["status"]["phase"], "Running");
    assert_eq!(
        writes[1].body["status"]["operation"]["name"],
        "operations/op-1"
    );
    // Server-side apply, by the operator's field manager.
    assert_eq!(writes[0].body["kind"], "LongRunningOperation");
    // The Started event, after the write that holds the handle.
    let started = seen
        .iter()
        .position(|s| s.is("POST", "/events") && s.body["reason"] == "Started")
        .expect("a Started event");
    let handle_written = seen
        .iter()
        .position(|s| s.is("PATCH", "/status") && s.body["status"]["phase"] == "Running")
        .unwrap();
    assert!(handle_written < started, "{seen:#?}");
}

#[tokio::test]
async fn outputs_are_written_before_the_status_that_says_succeeded() {
    let (sim, _state) = simulator().await;
    // An operation someone started, done at once.
    let created: Value = reqwest::Client::new()
        .post(format!("{sim}/sim/operations"))
        .json(&json!({"durationSeconds": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    // Adopted now: polled at once, found done.
    let op = operation(
        json!({"operation": {"name": name},
               "outputs": {"configMap": {"name": "endpoint", "data": {"resource": "result.name"}}}}),
        json!({}),
        json!({}),
    );
    let seen = run(op, &format!("{sim}/v1")).await;
    // Looked for (metadata only), then created: it did not exist.
    let looked = seen
        .iter()
        .position(|s| s.is("GET", "/configmaps/endpoint"))
        .unwrap_or_else(|| panic!("no ConfigMap read: {seen:#?}"));
    let configmap = seen
        .iter()
        .position(|s| s.is("POST", "/configmaps"))
        .unwrap_or_else(|| panic!("no ConfigMap created: {seen:#?}"));
    assert!(looked < configmap, "{seen:#?}");
    let cm = &seen[configmap].body;
    assert_eq!(cm["metadata"]["name"], "endpoint");
    assert_eq!(cm["data"]["resource"], "projects/sim/resources/res-1");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["controller"], true);
    let succeeded = seen
        .iter()
        .position(|s| s.is("PATCH", "/status") && s.body["status"]["phase"] == "Succeeded")
        .unwrap_or_else(|| panic!("no Succeeded write: {seen:#?}"));
    assert!(configmap < succeeded, "{seen:#?}");
    let conditions = seen[succeeded].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "OutputsPublished" && c["status"] == "True"),
        "{conditions:#?}"
    );
}

#[tokio::test]
async fn on_delete_cancel_puts_the_finalizer_first_and_a_finished_deletion_removes_it() {
    let (sim, _state) = simulator().await;
    let created: Value = reqwest::Client::new()
        .post(format!("{sim}/sim/operations"))
        .json(&json!({"durationSeconds": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    let op = operation(
        json!({"operation": {"name": name}, "onDelete": "Cancel"}),
        json!({}),
        json!({}),
    );
    let seen = run(op, &format!("{sim}/v1")).await;
    assert!(
        seen[0].method == "PATCH" && seen[0].path.ends_with("/longrunningoperations/op"),
        "{seen:#?}"
    );
    assert_eq!(seen[0].body[0]["path"], "/metadata/finalizers");
    assert_eq!(
        seen[0].body[0]["value"],
        json!(["lro.dev/cancel-on-delete"])
    );

    // Finished and deleted: only the finalizer goes, nothing else is written.
    let op = operation(
        json!({"operation": {"name": name}, "onDelete": "Cancel"}),
        json!({"phase": "Succeeded", "observedGeneration": 1}),
        json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["lro.dev/cancel-on-delete"]}),
    );
    let seen = run(op, &format!("{sim}/v1")).await;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].body[0]["op"], "test");
    assert_eq!(seen[0].body[1]["value"], json!([]));
}

#[tokio::test]
async fn a_settled_operation_costs_no_request() {
    let op = operation(
        json!({"operation": {"name": "operations/gone"}}),
        json!({"phase": "Succeeded", "observedGeneration": 1}),
        json!({}),
    );
    // No provider needed either: the base URL is never used.
    let seen = run(op, "http://127.0.0.1:9/v1").await;
    assert!(seen.is_empty(), "{seen:#?}");
}

#[tokio::test]
async fn a_status_write_that_failed_is_written_by_the_next_reconcile() {
    let (sim, _state) = simulator().await;
    let created: Value = reqwest::Client::new()
        .post(format!("{sim}/sim/operations"))
        .json(&json!({"durationSeconds": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    let op = operation(json!({"operation": {"name": name}}), json!({}), json!({}));
    let (client, seen) = api_server_failing(serde_json::to_value(&op).unwrap(), 1);
    let ctx = context(client, &format!("{sim}/v1"), vec![op.clone()]);
    let op = Arc::new(op);
    let first = reconcile::reconcile(Arc::clone(&op), Arc::clone(&ctx)).await;
    assert!(first.is_err(), "the status write failed: {first:?}");
    // The cache still holds no status: the retry must write the one that failed, although this
    // process already knows the operation succeeded.
    reconcile::reconcile(op, ctx)
        .await
        .expect("the retry succeeds");
    let seen = seen.lock().unwrap().clone();
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/status"))
        .collect();
    assert_eq!(writes.len(), 2, "{seen:#?}");
    assert_eq!(writes[1].body["status"]["phase"], "Succeeded", "{seen:#?}");
}
