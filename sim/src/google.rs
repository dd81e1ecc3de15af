//! The AIP-151 HTTP/JSON surface under `/v1`: create, get, list and cancel operations.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{self, admit_start, answer_start};
use super::render::{
    GoogleSurface, error_response, not_found, operation_json, rfc3339, shown_name,
    unknown_query_parameter,
};
use super::script::{Outcome, Script, json_object};
use super::state::SimState;

/// Dispatches every `/v1/...` request (a catch-all, because of the `:cancel` suffix).
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/v1/").unwrap_or_default();
    let query = uri.query().unwrap_or_default();
    match (method, rest) {
        (Method::GET, "operations") => list(&state),
        (Method::GET, _) if rest.starts_with("operations/") => {
            let name = state
                .store()
                .get_mut(rest)
                .map(|op| op.name.clone())
                .unwrap_or_default();
            match faults::serve(&state, &name, rest, &GoogleSurface).await {
                Some(answer) => answer,
                None => not_found(rest),
            }
        }
        (Method::POST, _) if rest.starts_with("operations/") && rest.ends_with(":cancel") => {
            cancel(&state, rest.trim_end_matches(":cancel"))
        }
        (Method::POST, _) if !rest.contains("operations") && !rest.ends_with(":cancel") => {
            create(&state, rest, query, &body).await
        }
        (Method::DELETE, _) if rest.starts_with("operations/") => error_response(
            StatusCode::NOT_IMPLEMENTED,
            "DeleteOperation is not implemented by the simulator",
        ),
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

fn list(state: &SimState) -> Response {
    let now = state.now_ms();
    let store = state.store();
    let ops: Vec<Value> = store
        .ops()
        .iter()
        .map(|op| operation_json(op, now))
        .collect();
    Json(json!({ "operations": ops })).into_response()
}

fn cancel(state: &SimState, name: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    match store.get_mut(name) {
        Some(op) => {
            op.cancels += 1;
            op.force(Outcome::Cancelled, now);
            Json(json!({})).into_response()
        }
        None => not_found(name),
    }
}

/// Service Management's `services.rollouts.create`: `POST services/{serviceName}/rollouts`
/// (discovery document `servicemanagement/v1`: no query parameter of its own).
fn rollout_service(parent: &str) -> Option<&str> {
    let service = parent
        .strip_prefix("services/")?
        .strip_suffix("/rollouts")?;
    (!service.is_empty() && !service.contains('/')).then_some(service)
}

/// "Creates a resource" under `parent`: scripts an operation from the body's `simulate` key.
/// A generic collection declares `requestId` (AIP-155), `validateOnly` and `{resource}Id`
/// (AIP-133); Service Management's rollouts declare nothing. Any other query parameter is
/// refused as Google's front ends refuse it.
async fn create(state: &SimState, parent: &str, query: &str, body: &[u8]) -> Response {
    let rollout = rollout_service(parent);
    let id_params: Vec<String> = query
        .split('&')
        .filter_map(|p| p.split_once('=').map_or(Some(p), |(k, _)| Some(k)))
        .filter(|k| k.ends_with("Id") && *k != "requestId")
        .map(str::to_owned)
        .collect();
    let mut declared: Vec<&str> = vec![];
    if rollout.is_none() {
        declared.extend(["requestId", "validateOnly"]);
        declared.extend(id_params.iter().map(String::as_str));
    }
    if let Some(refusal) = unknown_query_parameter(query, &declared) {
        state.store().rejected_creates += 1;
        return refusal;
    }
    let (mut spec, script) = match parse_create_body(body) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let request_id = request_id(query);
    let now = state.now_ms();
    let (name, fault) = {
        let mut store = state.store();
        if let Some(op) = request_id
            .as_deref()
            .and_then(|id| store.by_request_id_mut(id))
        {
            let body = operation_json(op, now);
            store.duplicate_creates += 1;
            return Json(body).into_response();
        }
        let fault = match admit_start(
            &mut store,
            &format!("{parent}?{query}\n{}", String::from_utf8_lossy(body)),
            &script,
            &GoogleSurface,
            now,
        ) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            drop(store);
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(http, format!("create rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let parent = parent.trim_end_matches('/').to_owned();
        let rollout_id = rollout.map(|_| {
            format!(
                "{}r{}",
                rfc3339(now).get(..10).unwrap_or("2026-01-01"),
                store.creates
            )
        });
        if let (Some(service), Some(id), Some(fields)) =
            (rollout, &rollout_id, spec.as_object_mut())
        {
            fields.insert(
                "serviceManagementRollout".into(),
                json!({"serviceName": service, "rolloutId": id}),
            );
        }
        let op = store.insert(
            |n| match (rollout, &rollout_id) {
                (Some(service), Some(id)) => format!("services/{service}/rollouts/{id}"),
                _ => format!("{parent}/res-{n}"),
            },
            spec,
            script.clone(),
            request_id,
            now,
        );
        let (internal, shown) = (op.name.clone(), shown_name(op));
        if shown != internal {
            store.add_alias(shown, &internal);
        }
        (internal, fault)
    };
    answer_start(state, &name, script.start_delay_ms, fault, &GoogleSurface).await
}

/// Splits a create body into the resource spec and its script (`simulate` removed).
fn parse_create_body(body: &[u8]) -> Result<(Value, Script), String> {
    let mut spec = json_object(body)?;
    let script = Script::from_json(spec.remove("simulate").unwrap_or(Value::Null))?;
    Ok((Value::Object(spec), script))
}

/// The `requestId` query parameter, percent-decoded.
fn request_id(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == "requestId" && !value.is_empty()).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Middleware: counts and logs every `/v1` request (status 499 if the client went away).
pub async fn log_requests(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let seq = state
        .store()
        .begin_request(method, path, query, state.now_ms());
    let mut guard = EndRequest {
        state,
        seq,
        status: 499,
    };
    let response = next.run(req).await;
    guard.status = response.status().as_u16();
    response
}

/// Records the final status of a logged request when dropped.
struct EndRequest {
    state: SimState,
    seq: u64,
    status: u16,
}

impl Drop for EndRequest {
    fn drop(&mut self) {
        self.state.store().end_request(self.seq, self.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_decoded() {
        assert_eq!(
            request_id("a=1&requestId=x%2Fy+z"),
            Some("x/y z".to_owned())
        );
        assert_eq!(request_id("requestId="), None);
        assert_eq!(request_id(""), None);
    }

    #[test]
    fn create_body_strips_simulate() {
        let parsed = parse_create_body(br#"{"a":1,"simulate":{"durationSeconds":0}}"#);
        assert_eq!(
            parsed.map(|(spec, s)| (spec, s.duration_ms())),
            Ok((json!({"a": 1}), 0))
        );
        assert!(parse_create_body(b"[1]").is_err());
        assert!(parse_create_body(b"{").is_err());
        assert_eq!(parse_create_body(b" ").map(|(spec, _)| spec), Ok(json!({})));
    }
}
