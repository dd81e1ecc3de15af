//! A generic job API under `/generic`, for the `http` protocol: no standard, just the usual
//! "202 Accepted + Location" shape (RFC 9110 §15.3.3).
//!
//! - `POST /generic/{collection}` starts a job: `202`, `Location: /generic/{collection}/{id}`,
//!   body `{"id": …, "status": "queued"}`. The body's `simulate` key scripts it (as everywhere
//!   in the simulator); the rest is the job's input. An `Idempotency-Key` header makes the start
//!   idempotent: the same key answers the same job again (counted in `duplicateCreates`).
//! - `GET /generic/{collection}/{id}` polls: `{"id", "status": "queued" | "running" | "done" |
//!   "error" | "cancelled", "percent", "output", "error": {"message"}}`. A job is `queued` for
//!   the first tenth of its duration, then `running` with `percent` (when the script has
//!   progress), then `done` with `output`, or `error` with `error.message` (or `cancelled`, when
//!   the admin API forces it).
//! - Errors are `{"error": {"message"}}` with the HTTP status; an unknown job is `404`.
//! - The job GETs are served with the script's GET faults (`simulate.faults`) and the starts
//!   with its `startFaults` (the n-th identical start), in this API's wire format (see
//!   [`crate::faults`]): a start that is refused (an error status) creates nothing; a start
//!   whose answer is lost (reset, not JSON, …) has created its job, which the same
//!   `Idempotency-Key` finds again.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, lose};
use super::render::progress_percentage;
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};
use super::surface::Surface;

/// The idempotency key header.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The generic job API, for faults: GETs of the job `id` (which its 404 names).
struct Jobs<'a> {
    id: &'a str,
}

impl Surface for Jobs<'_> {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        Json(job_json(op, now_ms)).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error(status, message)
    }

    /// (`faults::serve` names the operation by its internal name: the job's own id is used.)
    fn not_found(&self, _id: &str) -> Response {
        error(StatusCode::NOT_FOUND, format!("job {} not found", self.id))
    }
}

/// Dispatches every `/generic/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/generic/")
        .unwrap_or_default()
        .trim_end_matches('/');
    match (method, rest.rsplit_once('/')) {
        (Method::GET, Some((collection, id))) if !collection.is_empty() => {
            get(&state, collection, id).await
        }
        (Method::POST, _) if !rest.is_empty() => {
            create(&state, rest, uri.query(), &headers, &body).await
        }
        (method, _) => error(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

/// The internal name of the job `id` of `collection`.
fn find(store: &Store, collection: &str, id: &str) -> Option<String> {
    let resource = format!("{collection}/{id}");
    store
        .ops()
        .iter()
        .find(|op| op.resource == resource && op.spec.get("generic").is_some())
        .map(|op| op.name.clone())
}

async fn get(state: &SimState, collection: &str, id: &str) -> Response {
    let surface = Jobs { id };
    let Some(name) = find(&state.store(), collection, id) else {
        return surface.not_found(id);
    };
    match faults::serve(state, &name, id, &surface).await {
        Some(answer) => answer,
        None => surface.not_found(id),
    }
}

async fn create(
    state: &SimState,
    collection: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (input, script, _) = match split_create_body(body, &[]) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let now = state.now_ms();
    let (name, fault) = {
        let mut store = state.store();
        if let Some(op) = key.as_deref().and_then(|k| store.by_request_id_mut(k)) {
            let answer = accepted(op, now);
            store.duplicate_creates += 1;
            return answer;
        }
        let fault = match admit_start(
            &mut store,
            &format!(
                "{collection}?{}\n{}",
                query.unwrap_or_default(),
                String::from_utf8_lossy(body)
            ),
            &script,
            &Jobs { id: "" },
            now,
        ) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error(http, format!("job rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let spec = json!({"generic": {"collection": collection}, "input": input});
        let op = store.insert(
            |n| format!("{collection}/job-{n}"),
            spec,
            script.clone(),
            key,
            now,
        );
        (op.name.clone(), fault)
    };
    // The job exists before the answer is sent (a client may die while waiting).
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let normal = match state.store().get_mut(&name) {
        Some(op) => accepted(op, now),
        None => return error(StatusCode::INTERNAL_SERVER_ERROR, "job vanished (reset)"),
    };
    match fault {
        Some(fault) => lose(&fault, normal, &Jobs { id: "" }, now).await,
        None => normal,
    }
}

/// `202 Accepted` with the job's `Location` and its short form.
fn accepted(op: &OpRecord, now_ms: u64) -> Response {
    let location = format!("/generic/{}", op.resource);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({"id": job_id(op), "status": status_of(op, now_ms)})),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn job_id(op: &OpRecord) -> &str {
    op.resource.rsplit('/').next().unwrap_or_default()
}

fn status_of(op: &OpRecord, now_ms: u64) -> &'static str {
    if op.is_done(now_ms) {
        return match op.outcome() {
            Outcome::Success => "done",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        };
    }
    let elapsed = now_ms.saturating_sub(op.created_at_ms);
    if elapsed.saturating_mul(10) < op.script.duration_ms() {
        "queued"
    } else {
        "running"
    }
}

/// The job as of `now_ms`.
fn job_json(op: &OpRecord, now_ms: u64) -> Value {
    let id = job_id(op).to_owned();
    let status = status_of(op, now_ms);
    let mut out = Map::new();
    out.insert("id".into(), id.clone().into());
    out.insert("status".into(), status.into());
    if op.script.progress && status != "queued" {
        let percent = if status == "done" {
            100
        } else {
            let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
            progress_percentage(elapsed, op.script.duration_ms(), op.script.progress_step)
        };
        out.insert("percent".into(), percent.into());
    }
    match status {
        "done" => {
            out.insert(
                "output".into(),
                json!({
                    "url": format!("https://sim.invalid/outputs/{id}"),
                    "input": op.spec.get("input").cloned().unwrap_or(Value::Null),
                }),
            );
        }
        "error" => {
            out.insert(
                "error".into(),
                json!({"code": op.script.error_code, "message": op.script.error_message}),
            );
        }
        "cancelled" => {
            out.insert("error".into(), json!({"message": "job cancelled"}));
        }
        _ => {}
    }
    Value::Object(out)
}

fn error(http: StatusCode, message: impl Into<String>) -> Response {
    (http, Json(json!({"error": {"message": message.into()}}))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use serde_json::{Value, json};

    use super::dispatch;
    use crate::SimState;

    async fn call(
        state: &SimState,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("idempotency-key", key.parse().unwrap());
        }
        let method: Method = method.parse().unwrap();
        let uri: Uri = path.parse().unwrap();
        let body = Bytes::from(body.to_string());
        let response = dispatch(State(state.clone()), method, uri, headers, body).await;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, location, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_job_is_queued_then_running_then_done() {
        let state = SimState::default();
        let app = &state;
        let (status, location, body) = call(
            app,
            "POST",
            "/generic/jobs",
            None,
            json!({"name": "report", "simulate": {"durationSeconds": 2}}),
        )
        .await;
        assert_eq!(status, 202);
        let location = location.unwrap();
        assert_eq!(location, "/generic/jobs/job-1");
        assert_eq!(body, json!({"id": "job-1", "status": "queued"}));
        let (_, _, body) = call(app, "GET", &location, None, Value::Null).await;
        assert_eq!(body, json!({"id": "job-1", "status": "queued"}));
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let (_, _, body) = call(app, "GET", &location, None, Value::Null).await;
        assert_eq!(body["status"], "running", "{body}");
        let percent = body["percent"].as_u64().unwrap();
        assert!((40..=90).contains(&percent), "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (_, _, body) = call(app, "GET", &location, None, Value::Null).await;
        assert_eq!(body["status"], "done");
        assert_eq!(body["percent"], 100);
        assert_eq!(body["output"]["input"], json!({"name": "report"}));
        let (status, _, body) = call(app, "GET", "/generic/jobs/job-9", None, Value::Null).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["message"], "job job-9 not found");
    }

    #[tokio::test]
    async fn errors_and_rejections_are_scripted() {
        let state = SimState::default();
        let app = &state;
        let script = json!({"simulate": {"durationSeconds": 0, "outcome": "error",
            "errorMessage": "disk full"}});
        let (_, location, _) = call(app, "POST", "/generic/exports", None, script).await;
        let (_, _, body) = call(app, "GET", &location.unwrap(), None, Value::Null).await;
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"]["message"], "disk full");
        let reject = json!({"simulate": {"startStatus": 409}});
        let (status, location, _) = call(app, "POST", "/generic/exports", None, reject).await;
        assert_eq!((status, location), (409, None));
    }

    #[tokio::test]
    async fn the_same_idempotency_key_answers_the_same_job() {
        let state = SimState::default();
        let app = &state;
        let (_, first, _) = call(app, "POST", "/generic/jobs", Some("k-1"), json!({})).await;
        let (status, again, _) = call(app, "POST", "/generic/jobs", Some("k-1"), json!({})).await;
        let (_, other, _) = call(app, "POST", "/generic/jobs", Some("k-2"), json!({})).await;
        assert_eq!(status, 202);
        assert_eq!(first, again);
        assert_ne!(first, other);
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(2), json!(1))
        );
    }

    /// The raw answer: status, `Retry-After`, and the body (`Err` when the connection was reset).
    async fn raw(
        state: &SimState,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Result<Bytes, String>) {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("idempotency-key", key.parse().unwrap());
        }
        let uri: Uri = path.parse().unwrap();
        let body = Bytes::from(body.to_string());
        let response = dispatch(
            State(state.clone()),
            method.parse().unwrap(),
            uri,
            headers,
            body,
        )
        .await;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string());
        (status, retry_after, bytes)
    }

    #[tokio::test]
    async fn job_gets_meet_their_faults_in_the_apis_envelope() {
        let state = SimState::default();
        let script = json!({"simulate": {"durationSeconds": 30, "faults": [
            {"kind": "status", "status": 429, "retryAfter": "3", "message": "rate limit exceeded"},
            {"kind": "notFound"}, {"kind": "reset"}]}});
        let (_, location, _) = call(&state, "POST", "/generic/jobs", None, script).await;
        let location = location.unwrap();
        let (status, retry_after, body) = raw(&state, "GET", &location, None, Value::Null).await;
        assert_eq!((status, retry_after.as_deref()), (429, Some("3")));
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body, json!({"error": {"message": "rate limit exceeded"}}));
        let (status, _, body) = raw(&state, "GET", &location, None, Value::Null).await;
        assert_eq!(status, 404);
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body, json!({"error": {"message": "job job-1 not found"}}));
        let (_, _, body) = raw(&state, "GET", &location, None, Value::Null).await;
        assert!(body.is_err(), "the connection is reset");
        let (status, _, body) = call(&state, "GET", &location, None, Value::Null).await;
        assert_eq!((status, body["status"].clone()), (200, json!("queued")));
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(stats["operations"]["operations/op-1"]["gets"], 4);
    }

    #[tokio::test]
    async fn start_faults_refuse_or_lose_the_answer() {
        let state = SimState::default();
        // A 503 is not processed: nothing is created, the same start again is.
        let refused = json!({"simulate": {"startFaults": [{"kind": "status", "status": 503}]}});
        let (status, _, _) = raw(&state, "POST", "/generic/jobs", None, refused.clone()).await;
        assert_eq!(status, 503);
        assert_eq!(state.store().stats_json(state.now_ms())["creates"], 0);
        let (status, location, _) = call(&state, "POST", "/generic/jobs", None, refused).await;
        assert_eq!(
            (status, location.as_deref()),
            (202, Some("/generic/jobs/job-1"))
        );
        // A reset loses the answer of a job that was created: its key finds it again.
        let lost = json!({"simulate": {"startFaults": [{"kind": "reset"}]}});
        let (_, _, body) = raw(&state, "POST", "/generic/jobs", Some("k-1"), lost.clone()).await;
        assert!(body.is_err());
        let (status, location, _) = call(&state, "POST", "/generic/jobs", Some("k-1"), lost).await;
        assert_eq!(
            (status, location.as_deref()),
            (202, Some("/generic/jobs/job-2"))
        );
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (
                stats["creates"].clone(),
                stats["duplicateCreates"].clone(),
                stats["rejectedCreates"].clone()
            ),
            (json!(2), json!(1), json!(1))
        );
    }
}
