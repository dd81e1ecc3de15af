//! The Azure Resource Manager surface under `/azure`: resources at
//! `/azure/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}?api-version=…`.
//!
//! * `PUT` creates or replaces the resource: `201` with the resource (`provisioningState:
//!   Creating`) and an `Azure-AsyncOperation` status monitor. A `PUT` resent while its operation
//!   runs, or after it succeeded with the same body, starts nothing new (PUT semantics).
//! * `PATCH` updates it: `202` with `Location` and `Azure-AsyncOperation`.
//! * `DELETE` deletes it and `POST …/{name}/{action}` runs an action: `202` with `Location`.
//! * `GET` of the resource: its `provisioningState` (`404` once deleted or never created).
//! * Status monitors: `GET …/locations/{l}/operationStatuses/{id}` (ARM: `Accepted`,
//!   `InProgress`, `Succeeded`, `Failed`, `Canceled`, `percentComplete`, `error`) and
//!   `GET …/operations/{id}` (data plane `Operation-Location`: `NotStarted`, `Running`, …,
//!   `result`); `GET …/operationResults/{id}` is a `Location`: `202` while running, then the
//!   would-be synchronous answer (`200` with the resource or the action's result, `204` for a
//!   delete, or the ARM error with its HTTP status).
//!
//! Every mutation needs `api-version`. Answers while running carry `Retry-After: 1` (or
//! `retry-after-ms` when scripted). Besides the common `simulate` keys: `monitor`
//! (`AzureAsyncOperation`, `OperationLocation`, `Location` or `Body`: which headers the start
//! answer carries; default as above) and `retryAfterMs`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::render::progress_percentage;
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};

const ASYNC: &str = "AzureAsyncOperation";
const OPERATION_LOCATION: &str = "OperationLocation";
const LOCATION: &str = "Location";
const BODY: &str = "Body";

/// Dispatches every `/azure/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/azure/")
        .unwrap_or_default()
        .trim_end_matches('/');
    let origin = origin(&headers);
    let monitor = ["/operationStatuses/", "/operations/", "/operationResults/"]
        .iter()
        .find_map(|kind| rest.split_once(kind).map(|(_, id)| (*kind, id)));
    if let (true, Some((kind, id))) = (method == Method::GET, monitor) {
        return poll(&state, kind, id, &origin);
    }
    let Some(api_version) = api_version(uri.query()) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    match method {
        Method::GET => get_resource(&state, rest),
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
            if rest.contains("/providers/") =>
        {
            start(&state, method, rest, &api_version, &body, &origin).await
        }
        method => arm_error(
            StatusCode::NOT_FOUND,
            "NoRegisteredProviderFound",
            format!("no method {method} {}", uri.path()),
        ),
    }
}

fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn api_version(query: Option<&str>) -> Option<String> {
    let url = url::Url::parse(&format!("http://sim.invalid/?{}", query?)).ok()?;
    url.query_pairs()
        .find(|(k, v)| k == "api-version" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// An ARM `ErrorResponse`.
fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

/// Azure operations of the store, newest first.
fn azure_ops(store: &Store) -> impl Iterator<Item = &OpRecord> {
    store
        .ops()
        .iter()
        .rev()
        .filter(|op| op.spec.get("azure").is_some())
}

fn field<'a>(op: &'a OpRecord, name: &str) -> &'a str {
    op.spec["azure"][name].as_str().unwrap_or_default()
}

/// The newest operation on the resource at `path` (an action's operation is on its resource).
fn latest_on<'a>(store: &'a Store, path: &str) -> Option<&'a OpRecord> {
    azure_ops(store).find(|op| field(op, "resource") == path)
}

async fn start(
    state: &SimState,
    method: Method,
    rest: &str,
    api_version: &str,
    body: &[u8],
    origin: &str,
) -> Response {
    let (spec, script, extra) = match split_create_body(body, &["monitor", "retryAfterMs"]) {
        Ok(parsed) => parsed,
        Err(message) => {
            return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", message);
        }
    };
    // POST …/{resource}/{action}: the operation belongs to the resource.
    let (resource, action) = match method {
        Method::POST => match rest.rsplit_once('/') {
            Some((resource, action)) => (resource, Some(action)),
            None => (rest, None),
        },
        _ => (rest, None),
    };
    let default_monitor = match method {
        Method::PUT | Method::PATCH => ASYNC,
        _ => LOCATION,
    };
    let monitor = match extra.get("monitor").map(Value::as_str) {
        None => default_monitor,
        Some(Some(m @ (ASYNC | OPERATION_LOCATION | LOCATION | BODY))) => m,
        Some(_) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                "invalid simulate: monitor must be AzureAsyncOperation, OperationLocation, Location or Body",
            );
        }
    };
    let retry_after_ms = extra.get("retryAfterMs").and_then(Value::as_u64);
    let now = state.now_ms();
    let internal = {
        let mut store = state.store();
        if method == Method::PUT
            && let Some(previous) = latest_on(&store, resource)
            && field(previous, "method") == "PUT"
            && (!previous.is_done(now)
                || (previous.outcome() == Outcome::Success && previous.spec["body"] == spec))
        {
            // PUT semantics: the same PUT again starts nothing new.
            let name = previous.name.clone();
            store.duplicate_creates += 1;
            name
        } else {
            if let Some(status) = script.start_status {
                store.rejected_creates += 1;
                let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let (_, code) = failure_of_http(status);
                return arm_error(http, code, format!("rejected by script (HTTP {status})"));
            }
            store.creates += 1;
            let location = spec
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or("westus")
                .to_owned();
            let spec = json!({
                "azure": {
                    "method": method.as_str(),
                    "resource": resource,
                    "action": action,
                    "monitor": monitor,
                    "apiVersion": api_version,
                    "location": location,
                    "retryAfterMs": retry_after_ms,
                },
                "body": spec,
            });
            let resource = resource.to_owned();
            store
                .insert(move |_| resource, spec, script.clone(), None, now)
                .name
                .clone()
        }
    };
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let store = state.store();
    let Some(op) = store.ops().iter().find(|op| op.name == internal) else {
        return arm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "operation vanished (reset)",
        );
    };
    start_answer(op, now, origin)
}

/// The answer to the start request, per the operation's monitor.
fn start_answer(op: &OpRecord, now: u64, origin: &str) -> Response {
    let method = field(op, "method");
    let monitor = field(op, "monitor");
    let done = op.is_done(now);
    // A PUT whose same request already succeeded: the resource, 200, nothing to poll.
    if method == "PUT" && done && op.outcome() == Outcome::Success {
        return (StatusCode::OK, Json(resource_json(op, now))).into_response();
    }
    let mut headers = vec![];
    match monitor {
        ASYNC => {
            headers.push((
                "azure-asyncoperation",
                monitor_url(op, origin, "operationStatuses"),
            ));
            if method != "PUT" {
                headers.push(("location", monitor_url(op, origin, "operationResults")));
            }
        }
        OPERATION_LOCATION => {
            headers.push(("operation-location", monitor_url(op, origin, "operations")));
        }
        LOCATION => headers.push(("location", monitor_url(op, origin, "operationResults"))),
        _ => {}
    }
    let (status, body) = match (method, monitor) {
        ("PUT", _) => (StatusCode::CREATED, Some(resource_json(op, now))),
        ("PATCH", _) => (StatusCode::ACCEPTED, Some(resource_json(op, now))),
        (_, BODY) => (StatusCode::OK, None),
        _ => (StatusCode::ACCEPTED, None),
    };
    let mut response = match body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    };
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    retry_after(op, &mut response);
    response
}

/// `…/providers/{ns}/locations/{l}/{kind}/{id}?api-version=…` under the resource's subscription.
fn monitor_url(op: &OpRecord, origin: &str, kind: &str) -> String {
    let resource = field(op, "resource");
    let segments: Vec<&str> = resource.split('/').collect();
    let after = |key: &str| {
        segments
            .iter()
            .position(|s| s.eq_ignore_ascii_case(key))
            .and_then(|i| segments.get(i + 1))
            .copied()
    };
    let subscription = after("subscriptions").unwrap_or("sim");
    let namespace = after("providers").unwrap_or("Microsoft.Sim");
    format!(
        "{origin}/azure/subscriptions/{subscription}/providers/{namespace}/locations/{}/{kind}/{}?api-version={}",
        field(op, "location"),
        op.uid,
        field(op, "apiVersion"),
    )
}

fn retry_after(op: &OpRecord, response: &mut Response) {
    let (name, value) = match op.spec["azure"]["retryAfterMs"].as_u64() {
        Some(ms) => ("retry-after-ms", ms.to_string()),
        None => ("retry-after", "1".to_owned()),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The resource as ARM shows it, with `provisioningState` as of `now`.
fn resource_json(op: &OpRecord, now: u64) -> Value {
    let resource = field(op, "resource");
    let segments: Vec<&str> = resource.split('/').collect();
    let name = segments.last().copied().unwrap_or_default();
    let kind = segments
        .iter()
        .position(|s| *s == "providers")
        .map(|i| {
            let namespace = segments.get(i + 1).copied().unwrap_or_default();
            let types: Vec<&str> = segments.iter().skip(i + 2).step_by(2).copied().collect();
            format!("{namespace}/{}", types.join("/"))
        })
        .unwrap_or_default();
    let body = &op.spec["body"];
    let mut properties = body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    properties.insert(
        "provisioningState".into(),
        provisioning_state(op, now).into(),
    );
    let mut out = Map::new();
    out.insert("id".into(), format!("/{resource}").into());
    out.insert("name".into(), name.into());
    out.insert("type".into(), kind.into());
    out.insert("location".into(), field(op, "location").into());
    for key in ["tags", "sku", "kind"] {
        if let Some(value) = body.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    out.insert("properties".into(), Value::Object(properties));
    Value::Object(out)
}

fn provisioning_state(op: &OpRecord, now: u64) -> &'static str {
    if !op.is_done(now) {
        return match field(op, "method") {
            "PUT" => "Creating",
            "DELETE" => "Deleting",
            _ => "Updating",
        };
    }
    match op.outcome() {
        Outcome::Success => "Succeeded",
        Outcome::Error => "Failed",
        Outcome::Cancelled => "Canceled",
    }
}

fn get_resource(state: &SimState, path: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    // The newest PUT/PATCH/DELETE on it says what it is (actions do not change it).
    let found = azure_ops(&store)
        .find(|op| field(op, "resource") == path && field(op, "method") != "POST")
        .map(|op| op.name.clone());
    let Some(op) = found.and_then(|name| store.get_mut(&name)) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource '{path}' was not found."),
        );
    };
    let gone =
        field(op, "method") == "DELETE" && op.is_done(now) && op.outcome() == Outcome::Success;
    op.record_get(now);
    if gone {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource '{path}' was not found."),
        );
    }
    Json(resource_json(op, now)).into_response()
}

/// A status monitor or `Location` poll.
fn poll(state: &SimState, kind: &str, id: &str, origin: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    let found = azure_ops(&store)
        .find(|op| op.uid == id.trim_end_matches('/'))
        .map(|op| op.name.clone());
    let Some(op) = found.and_then(|name| store.get_mut(&name)) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("operation {id} not found"),
        );
    };
    op.record_get(now);
    let done = op.is_done(now);
    let mut response = match kind {
        "/operationResults/" => location_answer(op, now, origin),
        _ => {
            let data_plane = kind == "/operations/";
            Json(status_json(op, now, data_plane)).into_response()
        }
    };
    if !done {
        retry_after(op, &mut response);
    }
    response
}

/// The status monitor body.
fn status_json(op: &OpRecord, now: u64, data_plane: bool) -> Value {
    let duration = op.script.duration_ms();
    let elapsed = now.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    let status = if !op.is_done(now) {
        match (elapsed < duration / 10, data_plane) {
            (true, true) => "NotStarted",
            (true, false) => "Accepted",
            (false, true) => "Running",
            (false, false) => "InProgress",
        }
    } else {
        match op.outcome() {
            Outcome::Success => "Succeeded",
            Outcome::Error => "Failed",
            Outcome::Cancelled => "Canceled",
        }
    };
    let mut out = Map::new();
    out.insert("id".into(), op.uid.clone().into());
    out.insert("name".into(), op.uid.clone().into());
    out.insert("status".into(), status.into());
    out.insert("startTime".into(), rfc3339(op.created_at_ms).into());
    if op.is_done(now) {
        out.insert("endTime".into(), rfc3339(op.done_at_ms()).into());
    }
    if op.script.progress {
        let pct = if op.is_done(now) && op.outcome() == Outcome::Success {
            100
        } else {
            progress_percentage(elapsed, duration, op.script.progress_step)
        };
        out.insert("percentComplete".into(), pct.into());
    }
    match (op.is_done(now), op.outcome()) {
        (true, Outcome::Error) => {
            let (_, code) = failure_of_rpc(op.script.error_code);
            out.insert(
                "error".into(),
                json!({"code": code, "message": op.script.error_message}),
            );
        }
        (true, Outcome::Cancelled) => {
            out.insert(
                "error".into(),
                json!({"code": "OperationCanceled", "message": "operation cancelled"}),
            );
        }
        (true, Outcome::Success) if data_plane => {
            out.insert("result".into(), result_json(op, now));
        }
        _ => {}
    }
    Value::Object(out)
}

/// What the operation would have answered synchronously.
fn result_json(op: &OpRecord, now: u64) -> Value {
    match field(op, "method") {
        "POST" => json!({
            "action": op.spec["azure"]["action"],
            "resource": format!("/{}", field(op, "resource")),
            "input": op.spec["body"],
            "status": "done",
        }),
        _ => resource_json(op, now),
    }
}

/// A `Location` poll: `202` while running, then the would-be synchronous answer.
fn location_answer(op: &OpRecord, now: u64, origin: &str) -> Response {
    if !op.is_done(now) {
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(value) = HeaderValue::from_str(&monitor_url(op, origin, "operationResults")) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return response;
    }
    match op.outcome() {
        Outcome::Success if field(op, "method") == "DELETE" => {
            StatusCode::NO_CONTENT.into_response()
        }
        Outcome::Success => Json(result_json(op, now)).into_response(),
        Outcome::Error => {
            let (status, code) = failure_of_rpc(op.script.error_code);
            arm_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                op.script.error_message.clone(),
            )
        }
        Outcome::Cancelled => arm_error(
            StatusCode::CONFLICT,
            "OperationCanceled",
            "operation cancelled",
        ),
    }
}

/// The HTTP status and ARM error code of a scripted `google.rpc.Code`.
fn failure_of_rpc(rpc: i32) -> (u16, &'static str) {
    match rpc {
        3 => (400, "InvalidParameter"),
        5 => (404, "ResourceNotFound"),
        6 => (409, "ResourceExists"),
        7 => (403, "AuthorizationFailed"),
        8 => (409, "QuotaExceeded"),
        9 => (409, "OperationNotAllowed"),
        10 => (409, "Conflict"),
        _ => (500, "InternalServerError"),
    }
}

/// The HTTP status and ARM error code of a scripted start rejection.
fn failure_of_http(status: u16) -> (u16, &'static str) {
    match status {
        400 => (400, "InvalidParameter"),
        401 => (401, "AuthenticationFailed"),
        403 => (403, "AuthorizationFailed"),
        404 => (404, "ResourceGroupNotFound"),
        409 => (409, "Conflict"),
        429 => (429, "TooManyRequests"),
        s if s >= 500 => (s, "InternalServerError"),
        s => (s, "BadRequest"),
    }
}

fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(String::new, |t| t.to_string())
}

/// The azure dialect against this surface, in process.
#[cfg(test)]
mod contract {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::super::{SimState, router};
    use lro_operator::api::{OperationHandle, Protocol, StartRequest};
    use lro_operator::protocol::{
        Observation, PollOutcome, StartOutcome, Started, UpstreamState, dialect,
    };
    use lro_operator::upstream::Upstream;

    const RESOURCE: &str =
        "subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1";

    async fn serve() -> (String, SimState) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        (format!("http://{addr}/azure"), state)
    }

    fn upstream() -> Upstream {
        Upstream::new(Duration::from_secs(10), 1 << 20).unwrap()
    }

    async fn start(base: &str, method: &str, path: &str, body: Value) -> StartOutcome {
        let start: StartRequest = serde_json::from_value(json!({
            "method": method, "path": path, "query": {"api-version": "2023-05-01"}, "body": body
        }))
        .unwrap();
        let d = dialect(Protocol::Azure);
        let request = d.start_request(&start, "uid");
        let answer = upstream().send(base, &request).await.unwrap();
        d.read_start(&request, &answer)
    }

    fn started(outcome: StartOutcome) -> Started {
        match outcome {
            StartOutcome::Started(started) => *started,
            other => panic!("{other:?}"),
        }
    }

    /// Polls as the operator does (including the final GET) until a terminal state.
    async fn until_done(base: &str, handle: &OperationHandle) -> Observation {
        let d = dialect(Protocol::Azure);
        for _ in 0..100 {
            let request = d.poll_request(handle).unwrap();
            let answer = upstream().send(base, &request).await.unwrap();
            let mut outcome = d.read_poll(handle, &answer);
            if let PollOutcome::Observed(o) = &outcome
                && o.state == UpstreamState::Succeeded
                && let Some(request) = d.result_request(handle)
            {
                let answer = upstream().send(base, &request).await.unwrap();
                outcome = d.read_result(o.clone(), &answer);
            }
            match outcome {
                PollOutcome::Observed(o)
                    if !matches!(o.state, UpstreamState::Pending | UpstreamState::Running) =>
                {
                    return o;
                }
                PollOutcome::Observed(_) => {}
                other => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not done")
    }

    #[tokio::test]
    async fn put_polls_the_async_monitor_then_reads_the_resource() {
        let (base, state) = serve().await;
        let body = json!({"location": "westeurope", "properties": {"minimumTlsVersion": "TLS1_2"},
                          "simulate": {"durationSeconds": 0.5}});
        let first = started(start(&base, "PUT", RESOURCE, body.clone()).await);
        assert_eq!(first.handle.mode.as_deref(), Some("AzureAsyncOperation"));
        assert_eq!(
            first.observation.upstream_state.as_deref(),
            Some("Creating")
        );
        // PUT semantics: the same PUT while it runs starts nothing new.
        let again = started(start(&base, "PUT", RESOURCE, body).await);
        assert_eq!(again.handle, first.handle);
        let done = until_done(&base, &first.handle).await;
        assert_eq!(done.state, UpstreamState::Succeeded);
        let result = done.result.unwrap();
        assert_eq!(result["properties"]["provisioningState"], "Succeeded");
        assert_eq!(result["properties"]["minimumTlsVersion"], "TLS1_2");
        assert_eq!(result["type"], "Microsoft.Storage/storageAccounts");
        assert_eq!(done.resource_id, Some(format!("/{RESOURCE}")));
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(1), json!(1))
        );
    }

    #[tokio::test]
    async fn delete_polls_location_until_204_then_the_resource_is_gone() {
        let (base, _state) = serve().await;
        let put = json!({"simulate": {"durationSeconds": 0}});
        let created = started(start(&base, "PUT", RESOURCE, put).await);
        assert_eq!(
            until_done(&base, &created.handle).await.state,
            UpstreamState::Succeeded
        );
        let deleting = started(
            start(
                &base,
                "DELETE",
                RESOURCE,
                json!({"simulate": {"durationSeconds": 0.3}}),
            )
            .await,
        );
        assert_eq!(deleting.handle.mode.as_deref(), Some("Location"));
        assert_eq!(deleting.handle.result_url, None);
        assert_eq!(
            until_done(&base, &deleting.handle).await.state,
            UpstreamState::Succeeded
        );
        let gone = upstream()
            .send(
                &base,
                &lro_operator::protocol::RequestSpec::get(format!(
                    "{RESOURCE}?api-version=2023-05-01"
                )),
            )
            .await
            .unwrap();
        assert_eq!(gone.status, 404);
    }

    #[tokio::test]
    async fn a_post_action_on_the_data_plane_monitor_carries_its_result() {
        let (base, _state) = serve().await;
        let body = json!({"keyName": "key1", "simulate": {"durationSeconds": 0.2, "monitor": "OperationLocation"}});
        let s = started(start(&base, "POST", &format!("{RESOURCE}/regenerateKey"), body).await);
        assert_eq!(s.handle.mode.as_deref(), Some("OperationLocation"));
        let done = until_done(&base, &s.handle).await;
        assert_eq!(done.state, UpstreamState::Succeeded);
        assert_eq!(done.result.unwrap()["action"], "regenerateKey");
    }

    #[tokio::test]
    async fn failures_read_from_the_monitor_and_from_location() {
        let (base, _state) = serve().await;
        let fail = |monitor: &str| {
            json!({"simulate": {"durationSeconds": 0.1, "outcome": "error", "errorCode": 5,
                                "errorMessage": "The subnet was not found.", "monitor": monitor}})
        };
        for monitor in ["AzureAsyncOperation", "Location"] {
            let s = started(start(&base, "PATCH", RESOURCE, fail(monitor)).await);
            let done = until_done(&base, &s.handle).await;
            assert_eq!(done.state, UpstreamState::Failed, "{monitor}");
            let error = done.error.unwrap();
            assert_eq!(error.code, "NOT_FOUND", "{monitor}");
            assert_eq!(error.provider_code.as_deref(), Some("ResourceNotFound"));
            assert_eq!(error.message, "The subnet was not found.");
        }
    }

    #[tokio::test]
    async fn a_start_without_api_version_is_rejected() {
        let (base, _state) = serve().await;
        let d = dialect(Protocol::Azure);
        let start: StartRequest =
            serde_json::from_value(json!({"method": "PUT", "path": RESOURCE})).unwrap();
        let request = d.start_request(&start, "uid");
        let answer = upstream().send(&base, &request).await.unwrap();
        let StartOutcome::Rejected(error) = d.read_start(&request, &answer) else {
            panic!("not rejected")
        };
        assert_eq!(
            error.provider_code.as_deref(),
            Some("MissingApiVersionParameter")
        );
        assert_eq!(error.code, "INVALID_ARGUMENT");
    }
}
