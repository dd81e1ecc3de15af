//! The Compute Engine surface under `/compute`: `POST /compute/v1/projects/{p}/zones/{z}/{collection}`
//! (or `regions/{r}`, `global`) inserts a resource and answers a `compute#operation`;
//! `DELETE /compute/v1/…/{collection}/{name}` deletes one; `GET …/operations/{operation}` polls;
//! `POST …/operations/{operation}/wait` long-polls: it holds the answer until the operation is
//! done or `simulate.waitSeconds` (default 20; Compute's own deadline is 2 minutes) have passed.
//!
//! The operation is `PENDING` for the first tenth of its duration, then `RUNNING` with
//! `progress`, then `DONE` (with `error.errors[]`, `httpErrorStatusCode` and `httpErrorMessage`
//! when scripted to fail). `selfLink`s point back at the simulator (the request's `Host`), so they
//! stay on the provider's origin. `requestId` is the idempotency key: a create resent with the
//! same one answers the same operation. Same scripting (`simulate`) and counters as `/v1`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::render::{error_response, progress_percentage};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};

/// How long a `wait` holds its answer unless the script says otherwise.
pub const DEFAULT_WAIT_MS: u64 = 20_000;
/// How often a held `wait` looks at its operation.
const WAIT_TICK: Duration = Duration::from_millis(50);

/// Dispatches every `/compute/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/compute/").unwrap_or_default();
    let origin = origin(&headers);
    let operation = rest
        .split_once("/operations/")
        .map(|(_, op)| op.trim_end_matches('/'));
    match (method, operation) {
        (Method::GET, Some(op)) if !op.contains('/') => get(&state, op, &origin),
        (Method::POST, Some(op)) if op.ends_with("/wait") => {
            wait(&state, op.trim_end_matches("/wait"), &origin).await
        }
        (Method::POST, None) if !rest.is_empty() => {
            create(&state, rest, uri.query(), &body, &origin, "insert").await
        }
        (Method::DELETE, None) if !rest.is_empty() => {
            create(&state, rest, uri.query(), &body, &origin, "delete").await
        }
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

/// `http://{Host}`: where the simulator was reached, for `selfLink`s.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The simulator's operation behind a compute operation name (`operation-{uid}`).
fn find<'a>(store: &'a mut Store, name: &str) -> Option<&'a mut OpRecord> {
    let uid = name.strip_prefix("operation-")?;
    let internal = store
        .ops()
        .iter()
        .find(|op| op.uid == uid && op.spec.get("compute").is_some())?
        .name
        .clone();
    store.get_mut(&internal)
}

fn get(state: &SimState, name: &str, origin: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    match find(&mut store, name) {
        Some(op) => {
            op.record_get(now);
            Json(operation_json(op, now, origin)).into_response()
        }
        None => not_found(name),
    }
}

/// `POST …/wait`: answers when the operation is done or its wait deadline has passed.
async fn wait(state: &SimState, name: &str, origin: &str) -> Response {
    let began = state.now_ms();
    loop {
        let now = state.now_ms();
        {
            let mut store = state.store();
            let Some(op) = find(&mut store, name) else {
                return not_found(name);
            };
            let hold = op.spec["compute"]["waitMs"]
                .as_u64()
                .unwrap_or(DEFAULT_WAIT_MS);
            if op.is_done(now) || now >= began.saturating_add(hold) {
                op.record_get(now);
                return Json(operation_json(op, now, origin)).into_response();
            }
        }
        tokio::time::sleep(WAIT_TICK).await;
    }
}

async fn create(
    state: &SimState,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    origin: &str,
    operation_type: &str,
) -> Response {
    let (resource, script, extra) = match split_create_body(body, &["waitSeconds"]) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let wait_ms = match extra.get("waitSeconds") {
        None => DEFAULT_WAIT_MS,
        Some(v) => match v.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
            Some(seconds) => (seconds * 1000.0).round() as u64,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid simulate: waitSeconds must be a number >= 0",
                );
            }
        },
    };
    let request_id = query.and_then(request_id);
    let now = state.now_ms();
    let name = {
        let mut store = state.store();
        if let Some(op) = request_id
            .as_deref()
            .and_then(|id| store.by_request_id_mut(id))
        {
            let answer = operation_json(op, now, origin);
            store.duplicate_creates += 1;
            return Json(answer).into_response();
        }
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(http, format!("insert rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let path = path.trim_end_matches('/');
        // insert: `{collection}/{name}`; delete: the resource itself.
        let name = resource
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let insert = operation_type == "insert";
        let target = move |n: u64| {
            if insert {
                format!("{path}/{}", name.unwrap_or_else(|| format!("res-{n}")))
            } else {
                path.to_owned()
            }
        };
        let spec = json!({
            "compute": {"scope": scope_of(path), "operationType": operation_type, "waitMs": wait_ms},
            "resource": resource,
        });
        let op = store.insert(target, spec, script.clone(), request_id, now);
        op.name.clone()
    };
    // The operation exists before the answer is sent (a client may die while waiting).
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    match state.store().get_mut(&name) {
        Some(op) => Json(operation_json(op, now, origin)).into_response(),
        None => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "operation vanished (reset)",
        ),
    }
}

/// `v1/projects/p/zones/z` of `v1/projects/p/zones/z/instances[/name]` (or `regions/r`,
/// `global`; else the path without its last segment).
fn scope_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let end = segments
        .iter()
        .position(|s| *s == "zones" || *s == "regions")
        .map(|i| i + 2)
        .or_else(|| segments.iter().position(|s| *s == "global").map(|i| i + 1))
        .unwrap_or(segments.len().saturating_sub(1))
        .min(segments.len());
    segments[..end].join("/")
}

/// The `requestId` query parameter, decoded.
fn request_id(query: &str) -> Option<String> {
    let url = url::Url::parse(&format!("http://sim.invalid/?{query}")).ok()?;
    url.query_pairs()
        .find(|(k, v)| k == "requestId" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// RFC 3339 of unix milliseconds.
fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(String::new, |t| t.to_string())
}

/// A decimal id (Compute ids are uint64 as strings) derived from the operation's uid.
fn numeric_id(uid: &str, salt: u64) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(15)
        .collect();
    let n = u64::from_str_radix(&hex, 16).unwrap_or(0);
    (n ^ salt).to_string()
}

/// The compute operation as of `now_ms`.
fn operation_json(op: &OpRecord, now_ms: u64, origin: &str) -> Value {
    let compute = &op.spec["compute"];
    let scope = compute["scope"]
        .as_str()
        .unwrap_or("v1/projects/sim/global");
    let name = format!("operation-{}", op.uid);
    let done = op.is_done(now_ms);
    let duration = op.script.duration_ms();
    let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    let mut out = Map::new();
    out.insert("kind".into(), "compute#operation".into());
    out.insert("id".into(), numeric_id(&op.uid, 0x5bd1_e995).into());
    out.insert("name".into(), name.clone().into());
    if scope.contains("/zones/") {
        out.insert("zone".into(), format!("{origin}/compute/{scope}").into());
    } else if scope.contains("/regions/") {
        out.insert("region".into(), format!("{origin}/compute/{scope}").into());
    }
    out.insert(
        "operationType".into(),
        compute["operationType"].as_str().unwrap_or("insert").into(),
    );
    out.insert(
        "targetLink".into(),
        format!("{origin}/compute/{}", op.resource).into(),
    );
    out.insert("targetId".into(), numeric_id(&op.uid, 0x2545_f491).into());
    out.insert("user".into(), "sim@lro.dev".into());
    out.insert("insertTime".into(), rfc3339(op.created_at_ms).into());
    out.insert("startTime".into(), rfc3339(op.created_at_ms).into());
    if let Some(id) = &op.request_id {
        out.insert("clientOperationId".into(), id.clone().into());
    }
    out.insert(
        "selfLink".into(),
        format!("{origin}/compute/{scope}/operations/{name}").into(),
    );
    let status = if done {
        "DONE"
    } else if elapsed < duration / 10 {
        "PENDING"
    } else {
        "RUNNING"
    };
    out.insert("status".into(), status.into());
    if done {
        out.insert("endTime".into(), rfc3339(op.done_at_ms()).into());
        out.insert("progress".into(), 100.into());
    } else if op.script.progress {
        let pct = progress_percentage(elapsed, duration, op.script.progress_step);
        out.insert("progress".into(), pct.into());
    }
    if done && op.outcome() != Outcome::Success {
        let (code, http, http_message, message) = match op.outcome() {
            Outcome::Cancelled => (
                "OPERATION_CANCELED",
                409,
                "CONFLICT",
                "operation cancelled".to_owned(),
            ),
            _ => {
                let (code, http, http_message) = failure_of(op.script.error_code);
                (code, http, http_message, op.script.error_message.clone())
            }
        };
        out.insert(
            "error".into(),
            json!({"errors": [{"code": code, "message": message}]}),
        );
        out.insert("httpErrorStatusCode".into(), http.into());
        out.insert("httpErrorMessage".into(), http_message.into());
    }
    Value::Object(out)
}

/// Compute's error code, HTTP status and status text for a scripted `google.rpc.Code`.
fn failure_of(rpc: i32) -> (&'static str, u16, &'static str) {
    match rpc {
        3 => ("INVALID_FIELD_VALUE", 400, "BAD REQUEST"),
        5 => ("RESOURCE_NOT_FOUND", 404, "NOT FOUND"),
        6 => ("RESOURCE_ALREADY_EXISTS", 409, "CONFLICT"),
        7 => ("PERMISSION_DENIED", 403, "FORBIDDEN"),
        8 => ("QUOTA_EXCEEDED", 403, "FORBIDDEN"),
        9 => ("CONDITION_NOT_MET", 412, "PRECONDITION FAILED"),
        10 => ("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", 409, "CONFLICT"),
        _ => ("INTERNAL_ERROR", 500, "INTERNAL SERVER ERROR"),
    }
}

fn not_found(name: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("The resource 'operations/{name}' was not found"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_zonal_regional_or_global() {
        assert_eq!(
            scope_of("v1/projects/p/zones/us-central1-a/instances"),
            "v1/projects/p/zones/us-central1-a"
        );
        assert_eq!(
            scope_of("v1/projects/p/regions/us-central1/addresses/a1"),
            "v1/projects/p/regions/us-central1"
        );
        assert_eq!(
            scope_of("v1/projects/p/global/networks"),
            "v1/projects/p/global"
        );
        assert_eq!(scope_of("v1/things"), "v1");
        assert_eq!(scope_of("zones"), "zones");
    }

    #[test]
    fn request_id_is_decoded() {
        assert_eq!(request_id("a=1&requestId=x%2Fy"), Some("x/y".into()));
        assert_eq!(request_id("requestId="), None);
    }
}

/// The compute dialect against this surface, in process.
#[cfg(test)]
mod contract {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::super::{SimState, router};
    use lro_operator::api::{Protocol, ProviderSpec, StartRequest};
    use lro_operator::protocol::{
        Dialect, HttpAnswer, PollOutcome, StartOutcome, Started, UpstreamState, dialect,
        dialect_for,
    };
    use lro_operator::upstream::Upstream;

    async fn serve() -> (String, SimState) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        (format!("http://{addr}"), state)
    }

    fn upstream() -> Upstream {
        Upstream::new(Duration::from_secs(10), 1 << 20).unwrap()
    }

    async fn start(base: &str, d: &dyn Dialect, body: serde_json::Value, id: &str) -> Started {
        let start: StartRequest = serde_json::from_value(
            json!({"path": "projects/demo/zones/us-central1-a/instances", "body": body}),
        )
        .unwrap();
        let request = d.start_request(&start, id);
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_start(&request, &answer) {
            StartOutcome::Started(started) => *started,
            other => panic!("{other:?}"),
        }
    }

    async fn poll(
        base: &str,
        d: &dyn Dialect,
        handle: &lro_operator::api::OperationHandle,
    ) -> (lro_operator::protocol::Observation, HttpAnswer) {
        let request = d.poll_request(handle).unwrap();
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_poll(handle, &answer) {
            PollOutcome::Observed(observation) => (observation, answer),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn insert_poll_and_long_poll() {
        let (root, state) = serve().await;
        let base = format!("{root}/compute/v1");
        let plain = dialect(Protocol::Compute);
        let spec: ProviderSpec = serde_json::from_value(
            json!({"baseURL": base, "protocol": "compute", "compute": {"longPoll": true}}),
        )
        .unwrap();
        let long = dialect_for(&spec).unwrap();
        let body = json!({"name": "vm-1", "simulate": {"durationSeconds": 0.8}});
        let started = start(&base, plain, body.clone(), "req-1").await;
        assert_eq!(started.observation.state, UpstreamState::Pending);
        let url = started.handle.url.clone().unwrap();
        assert!(
            url.starts_with(&format!(
                "{root}/compute/v1/projects/demo/zones/us-central1-a/operations/operation-"
            )),
            "{url}"
        );
        // The same requestId: the same operation.
        let again = start(&base, plain, body, "req-1").await;
        assert_eq!(again.handle, started.handle);
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(1), json!(1))
        );
        let (observation, _) = poll(&base, plain, &started.handle).await;
        assert!(matches!(
            observation.state,
            UpstreamState::Pending | UpstreamState::Running
        ));
        // The long poll holds the answer until the operation is done.
        let began = Instant::now();
        let (observation, _) = poll(&base, &*long, &started.handle).await;
        assert_eq!(observation.state, UpstreamState::Succeeded);
        assert!(
            began.elapsed() >= Duration::from_millis(300),
            "{:?}",
            began.elapsed()
        );
        assert!(
            observation
                .resource_id
                .unwrap()
                .ends_with("/instances/vm-1")
        );
        // …or until its wait deadline, answering what is true then.
        let body = json!({"simulate": {"durationSeconds": 30, "waitSeconds": 0.3}});
        let slow = start(&base, plain, body, "req-2").await;
        let began = Instant::now();
        let (observation, _) = poll(&base, &*long, &slow.handle).await;
        assert!(matches!(
            observation.state,
            UpstreamState::Pending | UpstreamState::Running
        ));
        let held = began.elapsed();
        assert!(
            held >= Duration::from_millis(250) && held < Duration::from_secs(5),
            "{held:?}"
        );
    }

    #[tokio::test]
    async fn a_scripted_failure_reads_as_compute_reports_it() {
        let (root, _state) = serve().await;
        let base = format!("{root}/compute/v1");
        let d = dialect(Protocol::Compute);
        let body = json!({"simulate": {"durationSeconds": 0, "outcome": "error", "errorCode": 8,
                                       "errorMessage": "Quota 'CPUS' exceeded."}});
        let started = start(&base, d, body, "req-3").await;
        assert_eq!(started.observation.state, UpstreamState::Failed);
        let (observation, _) = poll(&base, d, &started.handle).await;
        let error = observation.error.unwrap();
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        assert_eq!(error.provider_code.as_deref(), Some("QUOTA_EXCEEDED"));
        assert_eq!(error.http_status, Some(403));
        assert_eq!(error.message, "Quota 'CPUS' exceeded.");
    }

    #[tokio::test]
    async fn an_unknown_operation_is_not_found() {
        let (root, _state) = serve().await;
        let base = format!("{root}/compute/v1");
        let d = dialect(Protocol::Compute);
        let handle = lro_operator::api::OperationHandle {
            url: Some(format!(
                "{base}/projects/p/global/operations/operation-nope"
            )),
            ..Default::default()
        };
        let request = d.poll_request(&handle).unwrap();
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(
            d.read_poll(&handle, &answer),
            PollOutcome::Failed {
                not_found: true,
                ..
            }
        ));
    }
}
