//! The Redpanda Cloud control-plane surface under `/redpanda/v1`: `POST …/clusters` (and any
//! other collection) answers 202 `{"operation": {…}}`; `GET /redpanda/v1/operations/{id}` polls.
//! Same scripting (`simulate` body key) and counters as the Google surface.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::render::status_name;
use super::script::{Outcome, Script, json_object};
use super::state::{OpRecord, SimState};

const PREFIX: &str = "type.googleapis.com/redpanda.api.controlplane.v1.";

/// Dispatches every `/redpanda/v1/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/redpanda/v1/").unwrap_or_default();
    match (method, rest.strip_prefix("operations/")) {
        (Method::GET, Some(id)) => get(&state, id),
        (Method::POST, None) if !rest.is_empty() => create(&state, rest, &body).await,
        (method, _) => error(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

fn get(state: &SimState, id: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    match store.get_mut(&format!("operations/{id}")) {
        Some(op) => {
            op.record_get(now);
            Json(json!({ "operation": operation_json(op, now) })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("operation {id} not found")),
    }
}

async fn create(state: &SimState, collection: &str, body: &[u8]) -> Response {
    let parsed = json_object(body).and_then(|mut spec| {
        let script = Script::from_json(spec.remove("simulate").unwrap_or(Value::Null))?;
        Ok((Value::Object(spec), script))
    });
    let (spec, script) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let delay = script.start_delay_ms;
    let name = {
        let mut store = state.store();
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error(http, format!("create rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let collection = collection.trim_end_matches('/').to_owned();
        let now = state.now_ms();
        store
            .insert(|n| format!("{collection}/res-{n}"), spec, script, None, now)
            .name
            .clone()
    };
    // The operation exists before the answer is sent (a client may die while waiting).
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let now = state.now_ms();
    match state.store().get_mut(&name) {
        Some(op) => (
            StatusCode::ACCEPTED,
            Json(json!({ "operation": operation_json(op, now) })),
        )
            .into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "operation vanished (reset)",
        ),
    }
}

/// `clusters` → `cluster`, `networks` → `network`.
fn kind_of(op: &OpRecord) -> String {
    let collection = op.resource.rsplit('/').nth(1).unwrap_or("resources");
    collection
        .strip_suffix('s')
        .unwrap_or(collection)
        .to_owned()
}

fn resource_id(op: &OpRecord) -> String {
    op.resource
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The operation as of `now_ms`, in Redpanda's shape (`started_at`/`finished_at` stay null, as
/// in the API's own examples).
fn operation_json(op: &OpRecord, now_ms: u64) -> Value {
    let kind = kind_of(op);
    let id = resource_id(op);
    let camel = {
        let mut c = kind.chars();
        c.next()
            .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
    };
    let mut out = Map::new();
    out.insert(
        "id".into(),
        op.name.trim_start_matches("operations/").into(),
    );
    out.insert(
        "type".into(),
        format!("TYPE_CREATE_{}", kind.to_uppercase()).into(),
    );
    out.insert(
        "metadata".into(),
        json!({"@type": format!("{PREFIX}Create{camel}Metadata"), format!("{kind}_id"): id}),
    );
    out.insert("resource_id".into(), id.clone().into());
    out.insert("started_at".into(), Value::Null);
    out.insert("finished_at".into(), Value::Null);
    let state = if !op.is_done(now_ms) {
        "STATE_IN_PROGRESS"
    } else {
        match op.outcome() {
            Outcome::Success => {
                let mut resource = op.spec.get(&kind).cloned().unwrap_or_else(|| json!({}));
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("id".into(), id.clone().into());
                    obj.insert("state".into(), "STATE_READY".into());
                    if kind == "cluster" {
                        obj.insert(
                            "dataplane_api".into(),
                            json!({"url": format!("https://api-{id}.sim.redpanda.invalid")}),
                        );
                    }
                }
                out.insert(
                    "response".into(),
                    json!({"@type": format!("{PREFIX}Create{camel}Response"), kind.clone(): resource}),
                );
                "STATE_COMPLETED"
            }
            Outcome::Error => {
                let code = status_name_of_rpc(op.script.error_code);
                out.insert(
                    "error".into(),
                    json!({"code": code, "message": op.script.error_message}),
                );
                "STATE_FAILED"
            }
            Outcome::Cancelled => {
                out.insert(
                    "error".into(),
                    json!({"code": "CANCELLED", "message": "operation cancelled"}),
                );
                "STATE_FAILED"
            }
        }
    };
    out.insert("state".into(), state.into());
    Value::Object(out)
}

/// Redpanda serialises rpc codes by name (`rpc.Status.code` is an enum of the
/// `google.rpc.Code` names in the control-plane OpenAPI document).
fn status_name_of_rpc(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// An `rpc.Status` error answer.
fn error(http: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"code": status_name(http), "message": message.into(), "details": []});
    (http, Json(body)).into_response()
}
