//! Google Kubernetes Engine under `/container/v1`: `Operation` resources as the discovery
//! document `container/v1/container-api.json` describes them (`status` PENDING / RUNNING /
//! ABORTING / DONE, `progress.metrics` per stage with int64 values as strings, `error` a
//! `google.rpc.Status`, the deprecated `statusMessage`, `selfLink` and `targetLink` on
//! `https://container.googleapis.com/v1/…`).
//!
//! * `POST /container/v1/projects/{p}/locations/{l}/clusters` (or `zones/{z}`) creates a
//!   cluster (`CREATE_CLUSTER`); `POST …/clusters/{c}/nodePools` a node pool
//!   (`CREATE_NODE_POOL`); `DELETE …/clusters/{c}` deletes one (`DELETE_CLUSTER`). The methods
//!   declare no query parameter: a `requestId` is refused ("Cannot bind query parameter").
//! * `GET …/operations/{op}` polls (with the script's `faults`);
//!   `POST …/operations/{op}:cancel` cancels: the operation is `ABORTING` for a second, then
//!   `DONE` with error code 1.
//!
//! The operation is `PENDING` for the first tenth of its duration, then `RUNNING` with the
//! stage metrics `CLUSTER_CONFIGURING`, `CLUSTER_DEPLOYING`, `CLUSTER_HEALTHCHECKING` (each
//! with its `_TOTAL`) advancing, then `DONE`. Starts take the script's `startFaults`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, answer_start};
use super::render::{error_response, rfc3339, rpc_status, unknown_query_parameter};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState};
use super::surface::Surface;

/// Where GKE's links point, whatever host was called.
const LINK_ROOT: &str = "https://container.googleapis.com/v1";
/// How long a cancelled operation stays `ABORTING`.
const ABORTING_MS: u64 = 1000;
/// The stages of a cluster creation and how many steps each has.
const STAGES: [(&str, u64); 3] = [
    ("CLUSTER_CONFIGURING", 4),
    ("CLUSTER_DEPLOYING", 6),
    ("CLUSTER_HEALTHCHECKING", 2),
];

struct GkeSurface;

impl Surface for GkeSurface {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        Json(operation_json(op, now_ms)).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error_response(status, message)
    }

    fn not_found(&self, id: &str) -> Response {
        not_found(id)
    }
}

/// Dispatches every `/container/v1/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/container/v1/")
        .unwrap_or_default();
    let query = uri.query().unwrap_or_default();
    let operation = rest
        .split_once("/operations/")
        .map(|(_, op)| op.trim_end_matches('/'));
    match (method, operation) {
        (Method::GET, Some(op)) if !op.contains('/') && !op.contains(':') => {
            let internal = internal_name(&state, op);
            match faults::serve(&state, &internal, op, &GkeSurface).await {
                Some(answer) => answer,
                None => not_found(op),
            }
        }
        (Method::POST, Some(op)) if op.ends_with(":cancel") => {
            cancel(&state, op.trim_end_matches(":cancel"))
        }
        (Method::POST, None) if rest.ends_with("/clusters") => {
            create(&state, rest, query, &body, "CREATE_CLUSTER").await
        }
        (Method::POST, None) if rest.ends_with("/nodePools") => {
            create(&state, rest, query, &body, "CREATE_NODE_POOL").await
        }
        (Method::DELETE, None) if rest.contains("/clusters/") => {
            create(&state, rest, query, &body, "DELETE_CLUSTER").await
        }
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

fn alias(name: &str) -> String {
    format!("gke:{name}")
}

fn internal_name(state: &SimState, name: &str) -> String {
    state
        .store()
        .get_mut(&alias(name))
        .map(|op| op.name.clone())
        .unwrap_or_default()
}

fn cancel(state: &SimState, name: &str) -> Response {
    let now = state.now_ms();
    let internal = internal_name(state, name);
    let mut store = state.store();
    match store.get_mut(&internal) {
        Some(op) => {
            op.cancels += 1;
            op.force(Outcome::Cancelled, now.saturating_add(ABORTING_MS));
            Json(json!({})).into_response()
        }
        None => not_found(name),
    }
}

/// `projects/{p}/{zones|locations}/{l}` of a request path, and the location.
fn scope_of(path: &str) -> (String, String) {
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments
        .iter()
        .position(|s| *s == "zones" || *s == "locations")
        .unwrap_or(segments.len());
    let location = segments.get(at + 1).copied().unwrap_or("us-central1-a");
    let project = segments.get(1).copied().unwrap_or("sim");
    (
        format!("projects/{project}/zones/{location}"),
        location.to_owned(),
    )
}

async fn create(
    state: &SimState,
    path: &str,
    query: &str,
    body: &[u8],
    operation_type: &str,
) -> Response {
    if let Some(refusal) = unknown_query_parameter(query, &[]) {
        state.store().rejected_creates += 1;
        return refusal;
    }
    let (request, script, _) = match split_create_body(body, &[]) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let now = state.now_ms();
    let (scope, location) = scope_of(path);
    let target = match operation_type {
        "CREATE_CLUSTER" => format!(
            "{scope}/clusters/{}",
            request["cluster"]["name"].as_str().unwrap_or("cluster-1")
        ),
        "CREATE_NODE_POOL" => {
            let cluster = path
                .split("/clusters/")
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("cluster-1");
            format!(
                "{scope}/clusters/{cluster}/nodePools/{}",
                request["nodePool"]["name"].as_str().unwrap_or("pool-1")
            )
        }
        _ => {
            let cluster = path.rsplit('/').next().unwrap_or("cluster-1");
            format!("{scope}/clusters/{cluster}")
        }
    };
    let (name, fault) = {
        let mut store = state.store();
        let fault = match admit_start(
            &mut store,
            &format!(
                "/container/v1/{path}?{query}\n{}",
                String::from_utf8_lossy(body)
            ),
            &script,
            &GkeSurface,
            now,
        ) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(http, format!("request rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let spec = json!({
            "gke": {"scope": scope, "location": location, "operationType": operation_type},
            "request": request,
        });
        let op = store.insert(|_| target, spec, script.clone(), None, now);
        let (internal, shown) = (op.name.clone(), operation_name(op));
        store.add_alias(alias(&shown), &internal);
        (internal, fault)
    };
    answer_start(state, &name, script.start_delay_ms, fault, &GkeSurface).await
}

/// `operation-{ms}-{hex}`, as GKE names its operations.
fn operation_name(op: &OpRecord) -> String {
    let hex: String = op
        .uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("operation-{}-{hex}", op.created_at_ms)
}

/// The stage metrics after `elapsed` of `duration` (each stage a share of the time).
fn metrics(elapsed: u64, duration: u64, done: bool) -> Vec<Value> {
    let total: u64 = STAGES.iter().map(|(_, n)| n).sum();
    let reached = if done || duration == 0 {
        total
    } else {
        u64::try_from(u128::from(elapsed) * u128::from(total) / u128::from(duration))
            .unwrap_or(total)
            .min(total)
    };
    let mut left = reached;
    let mut out = Vec::new();
    for (stage, steps) in STAGES {
        let here = left.min(steps);
        left -= here;
        out.push(json!({"name": stage, "intValue": here.to_string()}));
        out.push(json!({"name": format!("{stage}_TOTAL"), "intValue": steps.to_string()}));
    }
    out
}

/// The GKE operation as of `now_ms`.
fn operation_json(op: &OpRecord, now_ms: u64) -> Value {
    let gke = &op.spec["gke"];
    let scope = gke["scope"]
        .as_str()
        .unwrap_or("projects/sim/zones/us-central1-a");
    let name = operation_name(op);
    let done = op.is_done(now_ms);
    let duration = op.script.duration_ms();
    let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    let aborting = !done && op.forced.is_some_and(|f| f.outcome == Outcome::Cancelled);
    let status = if done {
        "DONE"
    } else if aborting {
        "ABORTING"
    } else if elapsed < duration / 10 {
        "PENDING"
    } else {
        "RUNNING"
    };
    let mut out = Map::new();
    out.insert("name".into(), name.clone().into());
    out.insert("zone".into(), gke["location"].clone());
    out.insert("operationType".into(), gke["operationType"].clone());
    out.insert("status".into(), status.into());
    out.insert(
        "selfLink".into(),
        format!("{LINK_ROOT}/{scope}/operations/{name}").into(),
    );
    out.insert(
        "targetLink".into(),
        format!("{LINK_ROOT}/{}", op.resource).into(),
    );
    out.insert("startTime".into(), rfc3339(op.created_at_ms).into());
    if op.script.progress {
        out.insert(
            "progress".into(),
            json!({"metrics": metrics(elapsed, duration, done && op.outcome() == Outcome::Success)}),
        );
    }
    if done {
        out.insert("endTime".into(), rfc3339(op.done_at_ms()).into());
        match op.outcome() {
            Outcome::Success => {}
            Outcome::Cancelled => {
                out.insert(
                    "error".into(),
                    json!({"code": 1, "message": "Operation was cancelled."}),
                );
                out.insert("statusMessage".into(), "Operation was cancelled.".into());
            }
            Outcome::Error => {
                let message = op.script.error_message.clone();
                out.insert(
                    "error".into(),
                    rpc_status(
                        op.script.error_code,
                        &message,
                        op.script.error_reason.as_deref(),
                        "container.googleapis.com",
                    ),
                );
                out.insert("statusMessage".into(), message.into());
            }
        }
    }
    Value::Object(out)
}

fn not_found(name: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("Not found: operation \"{name}\"."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_metrics_advance_with_time() {
        let sum = |v: Vec<Value>, total: bool| -> u64 {
            v.iter()
                .filter(|m| m["name"].as_str().unwrap().ends_with("_TOTAL") == total)
                .map(|m| m["intValue"].as_str().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(sum(metrics(0, 1000, false), false), 0);
        assert_eq!(sum(metrics(500, 1000, false), false), 6);
        assert_eq!(sum(metrics(500, 1000, false), true), 12);
        assert_eq!(sum(metrics(0, 1000, true), false), 12);
    }

    #[test]
    fn scopes_take_zones_or_locations() {
        assert_eq!(
            scope_of("projects/p/locations/us-central1/clusters"),
            (
                "projects/p/zones/us-central1".to_owned(),
                "us-central1".to_owned()
            )
        );
        assert_eq!(
            scope_of("projects/p/zones/us-east1-b/clusters/c/nodePools").0,
            "projects/p/zones/us-east1-b"
        );
    }
}

/// The GKE dialect against this surface, in process.
#[cfg(test)]
mod contract {
    use std::time::Duration;

    use serde_json::json;

    use crate::{SimState, router};
    use lro_operator::api::{OperationHandle, Protocol, StartRequest};
    use lro_operator::protocol::{
        CancelOutcome, PollOutcome, StartOutcome, UpstreamState, dialect,
    };
    use lro_operator::upstream::Upstream;

    #[tokio::test]
    async fn create_poll_and_cancel_with_links_on_googles_host() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(SimState::default())).into_future());
        let base = format!("http://{addr}/container/v1");
        let upstream = Upstream::new(Duration::from_secs(10), 1 << 20).unwrap();
        let gke = dialect(Protocol::Gke);
        let start: StartRequest = serde_json::from_value(json!({
            "path": "projects/demo/locations/us-central1-a/clusters",
            "body": {"cluster": {"name": "demo"}, "simulate": {"durationSeconds": 60}}
        }))
        .unwrap();
        let request = gke.start_request(&start, "uid-1");
        assert!(request.query.is_empty(), "GKE declares no request id");
        let answer = upstream.send(&base, &request).await.unwrap();
        let StartOutcome::Started(started) = gke.read_start(&request, &answer) else {
            panic!("{answer:?}");
        };
        let handle: OperationHandle = started.handle;
        assert!(
            handle
                .url
                .as_deref()
                .unwrap()
                .starts_with("https://container.googleapis.com/v1/projects/demo/zones/us-central1-a/operations/operation-")
        );
        let poll = gke.poll_request(&handle).unwrap();
        let answer = upstream.send(&base, &poll).await.unwrap();
        let PollOutcome::Observed(observation) = gke.read_poll(&handle, &answer) else {
            panic!("{answer:?}");
        };
        assert!(matches!(
            observation.state,
            UpstreamState::Pending | UpstreamState::Running
        ));
        assert!(observation.progress.is_some());
        let cancel = gke.cancel_request(&handle).unwrap();
        let answer = upstream.send(&base, &cancel).await.unwrap();
        assert_eq!(gke.read_cancel(&answer), CancelOutcome::Accepted);
        let answer = upstream.send(&base, &poll).await.unwrap();
        let PollOutcome::Observed(observation) = gke.read_poll(&handle, &answer) else {
            panic!("{answer:?}");
        };
        assert_eq!(observation.upstream_state.as_deref(), Some("ABORTING"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let answer = upstream.send(&base, &poll).await.unwrap();
        let PollOutcome::Observed(observation) = gke.read_poll(&handle, &answer) else {
            panic!("{answer:?}");
        };
        assert_eq!(observation.state, UpstreamState::Cancelled);
        // A request id is refused as GKE's front end refuses a parameter it does not declare.
        let mut with_id = request.clone();
        with_id.query.push(("requestId".into(), "uid-1".into()));
        let answer = upstream.send(&base, &with_id).await.unwrap();
        assert_eq!(answer.status, 400);
        assert!(String::from_utf8_lossy(&answer.body).contains("Cannot bind query parameter"));
    }
}
