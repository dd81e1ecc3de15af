//! The test-only admin API under `/sim`: adopt-able operations, stats, forced outcomes, reset.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::render::{error_response, not_found, operation_json};
use super::script::{Outcome, Script, json_object};
use super::state::{SimState, Store};

/// `POST /sim/operations`: a script plus optional `resource` and `surface`; creates an operation
/// as if someone else had started it. Not counted as a create. `surface: "redpanda"` makes it a
/// Redpanda cluster creation (listed by `GET /redpanda/v1/operations`, not by Google's
/// `ListOperations`); without it the operation is Google's.
pub async fn create_operation(State(state): State<SimState>, body: Bytes) -> Response {
    let mut fields = match json_object(&body) {
        Ok(fields) => fields,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let resource = match fields.remove("resource") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r),
        Some(_) => return error_response(StatusCode::BAD_REQUEST, "resource must be a string"),
    };
    let redpanda = match fields.remove("surface") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "redpanda" => true,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "surface must be \"redpanda\" or absent",
            );
        }
    };
    let script = match Script::from_json(Value::Object(fields)) {
        Ok(script) => script,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let now = state.now_ms();
    let mut store = state.store();
    let name_of = |n: u64| resource.unwrap_or_else(|| format!("projects/sim/resources/res-{n}"));
    let op = store.insert(name_of, json!({}), script, None, now);
    if redpanda {
        let id = op.name.trim_start_matches("operations/").to_owned();
        let resource_id = op
            .resource
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        op.spec = json!({"redpanda": {"kind": "cluster", "verb": "create", "id": id,
                                      "resourceId": resource_id}});
    }
    Json(operation_json(op, now)).into_response()
}

/// Body of `POST /sim/operations/{id}/finish`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Finish {
    outcome: Outcome,
    error_code: Option<i32>,
    error_message: Option<String>,
}

/// `POST /sim/operations/{id}/finish`: forces the outcome now (no-op if already done);
/// returns the Operation. `errorCode` / `errorMessage` optionally override the script's.
pub async fn finish(
    State(state): State<SimState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let finish: Finish = match serde_json::from_slice(&body) {
        Ok(finish) => finish,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let name = if id.starts_with("operations/") {
        id
    } else {
        format!("operations/{id}")
    };
    let now = state.now_ms();
    let mut store = state.store();
    let Some(op) = store.get_mut(&name) else {
        return not_found(&name);
    };
    if op.force(finish.outcome, now) {
        if let Some(code) = finish.error_code {
            op.script.error_code = code;
        }
        if let Some(message) = finish.error_message {
            op.script.error_message = message;
        }
    }
    Json(operation_json(op, now)).into_response()
}

/// `GET /sim/stats`.
pub async fn stats(State(state): State<SimState>) -> Response {
    let now = state.now_ms();
    Json(state.store().stats_json(now)).into_response()
}

/// `POST /sim/reset`: forgets all operations, counters and the request log.
pub async fn reset(State(state): State<SimState>) -> Response {
    *state.store() = Store::default();
    Json(json!({})).into_response()
}
