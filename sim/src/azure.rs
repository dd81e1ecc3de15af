//! The Azure Resource Manager surface under `/azure`: resources at
//! `/azure/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}?api-version=…`,
//! answering as the ARM RPC says (`Azure/azure-resource-manager-rpc` `v1.0/async-api-reference.md`
//! and `v1.0/common-api-details.md`).
//!
//! * `PUT` creates or replaces the resource: `201` with the resource (`provisioningState:
//!   Creating`) and an `Azure-AsyncOperation` status monitor. A `PUT` resent while its operation
//!   runs, or after it succeeded with the same body, starts nothing new (PUT semantics).
//! * `PATCH` updates it: `202` with `Location` and `Azure-AsyncOperation`.
//! * `DELETE` deletes it and `POST …/{name}/{action}` runs an action: `202` with `Location`.
//! * `GET` of the resource: its `provisioningState` (`404 ResourceNotFound` once deleted or
//!   never created, with ARM's message).
//! * Status monitors: `GET …/locations/{l}/operationStatuses/{id}` (ARM: `id` — the monitor's
//!   own ARM id —, `name`, `status` `Accepted`, `InProgress`, `Succeeded`, `Failed`,
//!   `Canceled`, `startTime`, `endTime`, `percentComplete`, `error`) and
//!   `GET …/operations/{id}` (data plane `Operation-Location`: `NotStarted`, `Running`, …,
//!   `result`); `GET …/operationResults/{id}` is a `Location`: `202` while running, then the
//!   would-be synchronous answer (`200` with the resource or the action's result, `204` for a
//!   delete, or the ARM error with its HTTP status).
//!
//! A failed `PUT` fails as a template deployment does (Azure/azure-sdk-for-net issue #44008,
//! OfficeDev/microsoft-teams-apps-company-communicator issue #135): the monitor's `error` is
//! `DeploymentFailed` ("At least one resource deployment operation failed. …") whose one detail
//! has the failed resource operation's HTTP status as its code (`Conflict`, `BadRequest`, …)
//! and, as its `message`, the resource's status document as JSON text (`{"status": "Failed",
//! "error": {"code", "message"}}`, indented with CRLF as ARM writes it); the innermost `code`
//! is `simulate.errorReason` if set (`PrincipalNotFound`, `SkuNotAvailable`, …), else one
//! derived from `errorCode`, and its `message` is `errorMessage`. Other methods fail with the
//! plain `{code, message}`.
//!
//! Every mutation needs `api-version`. Errors are ARM `ErrorResponse`s (`{"error": {"code",
//! "message", "target", "details": []}}`); a 429 is `SubscriptionRequestsThrottled` and always
//! carries `Retry-After` in integer seconds ("Retry-After should be (integer), will not support
//! http-date"; `1` unless the fault scripts its own). Answers while running — the 201/202
//! start answers and the monitors — carry `Retry-After: 1` (integer seconds, as ARM sends it;
//! `simulate.retryAfterSeconds` sets it, `simulate.retryAfterMs` sends `retry-after-ms`
//! instead); terminal answers carry none. The status monitors, `Location` and resource GETs
//! are served with the script's GET faults (`simulate.faults`), and the start requests with
//! its `startFaults`, in this API's wire format (see [`crate::faults`]). Besides the common
//! `simulate` keys: `monitor` (`AzureAsyncOperation`, `OperationLocation`, `Location` or
//! `Body`: which headers the start answer carries; default as above), `retryAfterMs` and
//! `retryAfterSeconds`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, lose};
use super::render::{progress_percentage, rfc3339};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};
use super::surface::Surface;

const ASYNC: &str = "AzureAsyncOperation";
const OPERATION_LOCATION: &str = "OperationLocation";
const LOCATION: &str = "Location";
const BODY: &str = "Body";

/// What a GET of an Azure operation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `…/operationStatuses/{id}` (ARM `Azure-AsyncOperation`).
    Status,
    /// `…/operations/{id}` (data plane `Operation-Location`).
    DataPlane,
    /// `…/operationResults/{id}` (`Location`).
    Location,
    /// The resource itself.
    Resource,
}

/// Azure Resource Manager, for faults: one kind of GET (`read`) of an operation.
struct Arm<'a> {
    read: Read,
    /// `http://host` of the request, for the `Location` of a `202`.
    origin: &'a str,
    /// The resource's path (resource GETs).
    path: &'a str,
    /// The operation's id as the client named it (monitor GETs: `faults::serve` names the
    /// operation by its internal name).
    id: &'a str,
}

impl Surface for Arm<'_> {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        let mut response = match self.read {
            Read::Status => Json(status_json(op, now_ms, false)).into_response(),
            Read::DataPlane => Json(status_json(op, now_ms, true)).into_response(),
            Read::Location => location_answer(op, now_ms, self.origin),
            Read::Resource => return resource_answer(op, now_ms, self.path),
        };
        if !op.is_done(now_ms) {
            retry_after(op, &mut response);
        }
        response
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        let code = match (status, self.read) {
            (StatusCode::NOT_FOUND, Read::Resource) => "ResourceNotFound",
            (StatusCode::NOT_FOUND, _) => "NotFound",
            _ => failure_of_http(status.as_u16()).1,
        };
        arm_error(status, code, message)
    }

    fn not_found(&self, _id: &str) -> Response {
        match self.read {
            Read::Resource => resource_not_found(self.path),
            _ => arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The operation '{}' could not be found.", self.id),
            ),
        }
    }
}

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
    let monitor = [
        ("/operationStatuses/", Read::Status),
        ("/operations/", Read::DataPlane),
        ("/operationResults/", Read::Location),
    ]
    .iter()
    .find_map(|(kind, read)| rest.split_once(kind).map(|(_, id)| (*read, id)));
    if let (true, Some((read, id))) = (method == Method::GET, monitor) {
        return poll(&state, read, id, &origin).await;
    }
    let Some(api_version) = api_version(uri.query()) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    match method {
        Method::GET => get_resource(&state, rest).await,
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
            if rest.contains("/providers/") =>
        {
            start(&state, method, &uri, rest, &api_version, &body, &origin).await
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

/// An ARM `ErrorResponse` (`common-api-details.md` "Error Response Content"); a 429 carries
/// `Retry-After` in integer seconds.
fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    arm_error_object(
        status,
        json!({"code": code, "message": message.into(), "details": []}),
    )
}

/// An ARM `ErrorResponse` around `error`.
fn arm_error_object(status: StatusCode, error: Value) -> Response {
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A 429 carries one `Retry-After`: the fault's own when it scripts one (appended after the
/// default of [`arm_error`]), else the default.
fn one_retry_after(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let values: Vec<HeaderValue> = headers
        .get_all(header::RETRY_AFTER)
        .iter()
        .cloned()
        .collect();
    if values.len() > 1 {
        headers.remove(header::RETRY_AFTER);
        for value in values.into_iter().skip(1) {
            headers.append(header::RETRY_AFTER, value);
        }
    }
    response
}

/// `ResourceNotFound` as ARM words it (e.g. Azure/azqr issue #263).
fn resource_not_found(path: &str) -> Response {
    let segments: Vec<&str> = path.split('/').collect();
    let group = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("resourceGroups"))
        .and_then(|i| segments.get(i + 1))
        .copied()
        .unwrap_or_default();
    let resource = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("providers"))
        .map(|i| segments[i + 1..].join("/"))
        .unwrap_or_else(|| path.to_owned());
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{resource}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
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
    uri: &Uri,
    rest: &str,
    api_version: &str,
    body: &[u8],
    origin: &str,
) -> Response {
    let (spec, script, extra) =
        match split_create_body(body, &["monitor", "retryAfterMs", "retryAfterSeconds"]) {
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
    let retry_after_seconds = extra.get("retryAfterSeconds").and_then(Value::as_u64);
    let surface = Arm {
        read: Read::Status,
        origin,
        path: resource,
        id: "",
    };
    let now = state.now_ms();
    let (internal, fault) = {
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
            (name, None)
        } else {
            let key = format!(
                "{method} {}?{}\n{}",
                uri.path(),
                uri.query().unwrap_or_default(),
                String::from_utf8_lossy(body)
            );
            let fault = match admit_start(&mut store, &key, &script, &surface, now) {
                Ok(fault) => fault,
                Err(refusal) => return one_retry_after(*refusal),
            };
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
                    "retryAfterSeconds": retry_after_seconds,
                },
                "body": spec,
            });
            let resource = resource.to_owned();
            let name = store
                .insert(move |_| resource, spec, script.clone(), None, now)
                .name
                .clone();
            (name, fault)
        }
    };
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let normal = {
        let store = state.store();
        let Some(op) = store.ops().iter().find(|op| op.name == internal) else {
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "operation vanished (reset)",
            );
        };
        start_answer(op, now, origin)
    };
    match fault {
        Some(fault) => one_retry_after(lose(&fault, normal, &surface, now).await),
        None => normal,
    }
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

/// The path of the operation's monitor of `kind`:
/// `subscriptions/{s}/providers/{ns}/locations/{l}/{kind}/{id}`.
fn monitor_path(op: &OpRecord, kind: &str) -> String {
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
        "subscriptions/{subscription}/providers/{namespace}/locations/{}/{kind}/{}",
        field(op, "location"),
        op.uid,
    )
}

/// The absolute URL of the operation's monitor of `kind`, with its `api-version`.
fn monitor_url(op: &OpRecord, origin: &str, kind: &str) -> String {
    format!(
        "{origin}/azure/{}?api-version={}",
        monitor_path(op, kind),
        field(op, "apiVersion"),
    )
}

/// The wait hint of an answer while the operation runs: `Retry-After` in integer seconds
/// (ARM), or `retry-after-ms` when scripted.
fn retry_after(op: &OpRecord, response: &mut Response) {
    let azure = &op.spec["azure"];
    let (name, value) = match azure["retryAfterMs"].as_u64() {
        Some(ms) => ("retry-after-ms", ms.to_string()),
        None => (
            "retry-after",
            azure["retryAfterSeconds"].as_u64().unwrap_or(1).to_string(),
        ),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The resource type of a resource path (`Microsoft.Storage/storageAccounts`).
fn resource_type(resource: &str) -> String {
    let segments: Vec<&str> = resource.split('/').collect();
    segments
        .iter()
        .position(|s| *s == "providers")
        .map(|i| {
            let namespace = segments.get(i + 1).copied().unwrap_or_default();
            let types: Vec<&str> = segments.iter().skip(i + 2).step_by(2).copied().collect();
            format!("{namespace}/{}", types.join("/"))
        })
        .unwrap_or_default()
}

/// The resource as ARM shows it, with `provisioningState` as of `now` (a failed deployment also
/// shows its `error`, as `Deployments - Get` does).
fn resource_json(op: &OpRecord, now: u64) -> Value {
    let resource = field(op, "resource");
    let name = resource.rsplit('/').next().unwrap_or_default();
    let kind = resource_type(resource);
    let body = &op.spec["body"];
    let mut properties = body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let state = provisioning_state(op, now);
    properties.insert("provisioningState".into(), state.into());
    if state == "Failed" && kind.eq_ignore_ascii_case("Microsoft.Resources/deployments") {
        properties.insert("error".into(), failure_json(op));
    }
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

/// A GET of the resource: `200` with it, or `404` once deleted (or never created).
fn resource_answer(op: &OpRecord, now: u64, path: &str) -> Response {
    let gone =
        field(op, "method") == "DELETE" && op.is_done(now) && op.outcome() == Outcome::Success;
    if gone {
        return resource_not_found(path);
    }
    Json(resource_json(op, now)).into_response()
}

async fn get_resource(state: &SimState, path: &str) -> Response {
    // The newest PUT/PATCH/DELETE on it says what it is (actions do not change it).
    let found = azure_ops(&state.store())
        .find(|op| field(op, "resource") == path && field(op, "method") != "POST")
        .map(|op| op.name.clone());
    let surface = Arm {
        read: Read::Resource,
        origin: "",
        path,
        id: "",
    };
    let Some(name) = found else {
        return resource_not_found(path);
    };
    match faults::serve(state, &name, path, &surface).await {
        Some(answer) => one_retry_after(answer),
        None => resource_not_found(path),
    }
}

/// A status monitor or `Location` poll.
async fn poll(state: &SimState, read: Read, id: &str, origin: &str) -> Response {
    let id = id.trim_end_matches('/');
    let found = azure_ops(&state.store())
        .find(|op| op.uid == id)
        .map(|op| op.name.clone());
    let surface = Arm {
        read,
        origin,
        path: "",
        id,
    };
    let Some(name) = found else {
        return surface.not_found(id);
    };
    match faults::serve(state, &name, id, &surface).await {
        Some(answer) => one_retry_after(answer),
        None => surface.not_found(id),
    }
}

/// The status monitor body (`async-api-reference.md` "Azure-AsyncOperation Resource format";
/// the data plane's per the Azure REST API guidelines: `id`, `status`, `error`, `result`).
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
    if data_plane {
        out.insert("id".into(), op.uid.clone().into());
    } else {
        // "/subscriptions/id/locations/westus/operationsStatuses/sameguid"
        out.insert(
            "id".into(),
            format!("/{}", monitor_path(op, "operationStatuses")).into(),
        );
        out.insert("name".into(), op.uid.clone().into());
    }
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
        (true, Outcome::Error | Outcome::Cancelled) => {
            out.insert("error".into(), failure_json(op));
        }
        (true, Outcome::Success) if data_plane => {
            out.insert("result".into(), result_json(op, now));
        }
        _ => {}
    }
    Value::Object(out)
}

/// The `error` of a failed or canceled operation: for a `PUT`, the `DeploymentFailed` wrapper a
/// template deployment reports; otherwise the plain `{code, message}`.
fn failure_json(op: &OpRecord) -> Value {
    if op.outcome() == Outcome::Cancelled {
        return json!({"code": "OperationCanceled", "message": "operation cancelled"});
    }
    let (status, derived) = failure_of_rpc(op.script.error_code);
    let code = op.script.error_reason.as_deref().unwrap_or(derived);
    let message = &op.script.error_message;
    if field(op, "method") != "PUT" {
        return json!({"code": code, "message": message});
    }
    // The failed resource operation's status document, as ARM writes it into the message of
    // a deployment error's detail (JSON text, two-space indents, CRLF line ends).
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let inner = format!(
        "{{\r\n  \"status\": \"Failed\",\r\n  \"error\": {{\r\n    \"code\": {},\r\n    \"message\": {}\r\n  }}\r\n}}",
        quote(code),
        quote(message)
    );
    json!({
        "code": "DeploymentFailed",
        "target": format!("/{}", field(op, "resource")),
        "message": "At least one resource deployment operation failed. Please list deployment operations for details. Please see https://aka.ms/arm-deployment-operations for usage details.",
        "details": [{"code": http_code_name(status), "message": inner}],
    })
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
            let (status, _) = failure_of_rpc(op.script.error_code);
            arm_error_object(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                failure_json(op),
            )
        }
        Outcome::Cancelled => arm_error_object(StatusCode::CONFLICT, failure_json(op)),
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

/// The HTTP status and ARM error code of an error answer with `status` (a scripted start
/// rejection or a fault).
fn failure_of_http(status: u16) -> (u16, &'static str) {
    match status {
        400 => (400, "BadRequest"),
        401 => (401, "AuthenticationFailed"),
        403 => (403, "AuthorizationFailed"),
        404 => (404, "ResourceGroupNotFound"),
        409 => (409, "Conflict"),
        412 => (412, "PreconditionFailed"),
        // MicrosoftDocs azure-docs request-limits-and-throttling.md.
        429 => (429, "SubscriptionRequestsThrottled"),
        502 => (502, "BadGateway"),
        503 => (503, "ServiceUnavailable"),
        504 => (504, "GatewayTimeout"),
        s if s >= 500 => (s, "InternalServerError"),
        s => (s, "BadRequest"),
    }
}

/// The HTTP status as the `code` of a deployment operation's error (`Conflict`, `BadRequest`).
fn http_code_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalServerError",
    }
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

    fn url(base: &str, path: &str) -> String {
        format!("{base}/{path}?api-version=2023-05-01")
    }

    fn retry_afters(answer: &reqwest::Response) -> Vec<String> {
        answer
            .headers()
            .get_all("retry-after")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    const DEPLOYMENT: &str =
        "subscriptions/s1/resourceGroups/rg/providers/Microsoft.Resources/deployments/dep1";

    /// A failed PUT reads as a failed template deployment: `DeploymentFailed`, whose detail's
    /// message is the resource's status document as JSON text; the operator keeps the
    /// innermost cause.
    #[tokio::test]
    async fn a_failed_put_is_a_deployment_failure_with_the_cause_inside() {
        let (base, _state) = serve().await;
        let body = json!({"properties": {"mode": "Incremental"},
            "simulate": {"durationSeconds": 0.1, "outcome": "error", "errorCode": 9,
                         "errorReason": "RequestDisallowedByPolicy",
                         "errorMessage": "Resource 'sa1' was disallowed by policy."}});
        let s = started(start(&base, "PUT", DEPLOYMENT, body).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let monitor: Value = reqwest::get(s.handle.url.clone().unwrap())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(monitor["status"], "Failed");
        let error = &monitor["error"];
        assert_eq!(error["code"], "DeploymentFailed");
        assert_eq!(
            error["message"],
            "At least one resource deployment operation failed. Please list deployment operations for details. Please see https://aka.ms/arm-deployment-operations for usage details."
        );
        assert_eq!(error["target"], format!("/{DEPLOYMENT}"));
        assert_eq!(error["details"][0]["code"], "Conflict");
        let text = error["details"][0]["message"].as_str().unwrap();
        assert!(
            text.starts_with("{\r\n  \"status\": \"Failed\","),
            "{text:?}"
        );
        let inner: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            inner,
            json!({"status": "Failed", "error": {"code": "RequestDisallowedByPolicy",
                   "message": "Resource 'sa1' was disallowed by policy."}})
        );
        // The operator: the innermost cause.
        let done = until_done(&base, &s.handle).await;
        assert_eq!(done.state, UpstreamState::Failed);
        let error = done.error.unwrap();
        assert_eq!(error.message, "Resource 'sa1' was disallowed by policy.");
        assert_eq!(
            error.provider_code.as_deref(),
            Some("RequestDisallowedByPolicy")
        );
        // The deployment itself shows the failure too.
        let resource: Value = reqwest::get(url(&base, DEPLOYMENT))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(resource["properties"]["provisioningState"], "Failed");
        assert_eq!(resource["properties"]["error"]["code"], "DeploymentFailed");
    }

    /// The monitor's own ARM id; `Retry-After` in integer seconds while running, none once
    /// terminal; `retryAfterSeconds` sets it.
    #[tokio::test]
    async fn monitors_carry_their_id_and_integer_retry_after() {
        let (base, _state) = serve().await;
        let http = reqwest::Client::new();
        let body = json!({"simulate": {"durationSeconds": 0.3, "retryAfterSeconds": 10}});
        let answer = http
            .put(url(&base, RESOURCE))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        assert_eq!(retry_afters(&answer), ["10"]);
        let monitor = answer.headers()["azure-asyncoperation"]
            .to_str()
            .unwrap()
            .to_owned();
        let running = http.get(&monitor).send().await.unwrap();
        assert_eq!(retry_afters(&running), ["10"]);
        let status: Value = running.json().await.unwrap();
        let uid = status["name"].as_str().unwrap();
        assert_eq!(
            status["id"],
            format!(
                "/subscriptions/s1/providers/Microsoft.Storage/locations/westus/operationStatuses/{uid}"
            )
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        let done = http.get(&monitor).send().await.unwrap();
        assert!(retry_afters(&done).is_empty());
        assert_eq!(done.json::<Value>().await.unwrap()["status"], "Succeeded");
    }

    /// Start faults: a 429 is not processed (nothing is created) and carries one integer
    /// `Retry-After`; a reset loses the answer of a PUT that was processed, and resending the
    /// PUT finds it (PUT semantics).
    #[tokio::test]
    async fn start_faults_refuse_or_lose_the_answer() {
        let (base, state) = serve().await;
        let http = reqwest::Client::new();
        let throttled = json!({"simulate": {"durationSeconds": 30,
            "startFaults": [{"kind": "status", "status": 429},
                            {"kind": "status", "status": 429, "retryAfter": "7"}]}});
        let answer = http
            .put(url(&base, RESOURCE))
            .json(&throttled)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 429);
        assert_eq!(retry_afters(&answer), ["1"]);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "SubscriptionRequestsThrottled");
        assert_eq!(body["error"]["details"], json!([]));
        let answer = http
            .put(url(&base, RESOURCE))
            .json(&throttled)
            .send()
            .await
            .unwrap();
        assert_eq!(retry_afters(&answer), ["7"], "the fault's own Retry-After");
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["rejectedCreates"].clone()),
            (json!(0), json!(2))
        );
        let gone = http.get(url(&base, RESOURCE)).send().await.unwrap();
        assert_eq!(gone.status(), 404);
        assert_eq!(
            http.put(url(&base, RESOURCE))
                .json(&throttled)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );

        let other = RESOURCE.replace("sa1", "sa2");
        let lost = json!({"simulate": {"durationSeconds": 30, "startFaults": [{"kind": "reset"}]}});
        assert!(
            http.put(url(&base, &other))
                .json(&lost)
                .send()
                .await
                .is_err()
        );
        let again = http
            .put(url(&base, &other))
            .json(&lost)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 201);
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(2), json!(1))
        );
    }

    /// GET faults on the status monitor, `Location` and the resource, in ARM's envelope.
    #[tokio::test]
    async fn get_faults_are_answered_in_arm_envelopes() {
        let (base, _state) = serve().await;
        let http = reqwest::Client::new();
        let body = json!({"simulate": {"durationSeconds": 30, "faults": [
            {"kind": "status", "status": 500}, {"kind": "notFound"},
            {"kind": "status", "status": 429}, {"kind": "notJson"}]}});
        let answer = http
            .put(url(&base, RESOURCE))
            .json(&body)
            .send()
            .await
            .unwrap();
        let monitor = answer.headers()["azure-asyncoperation"]
            .to_str()
            .unwrap()
            .to_owned();
        let failed = http.get(&monitor).send().await.unwrap();
        assert_eq!(failed.status(), 500);
        assert_eq!(
            failed.json::<Value>().await.unwrap(),
            json!({"error": {"code": "InternalServerError", "message": "simulated fault: HTTP 500", "details": []}})
        );
        let missing = http.get(&monitor).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let uid = monitor
            .split("/operationStatuses/")
            .nth(1)
            .and_then(|rest| rest.split('?').next())
            .unwrap();
        assert_eq!(
            missing.json::<Value>().await.unwrap()["error"],
            json!({"code": "NotFound", "message": format!("The operation '{uid}' could not be found."),
                   "details": []})
        );
        // The resource GET shares the operation's plan: a 429 with ARM's Retry-After.
        let throttled = http.get(url(&base, RESOURCE)).send().await.unwrap();
        assert_eq!(throttled.status(), 429);
        assert_eq!(retry_afters(&throttled), ["1"]);
        let page = http.get(&monitor).send().await.unwrap();
        assert!(page.text().await.unwrap().starts_with("<html>"));
        let fine = http.get(&monitor).send().await.unwrap();
        assert_eq!(fine.json::<Value>().await.unwrap()["status"], "Accepted");
        // Unknown: the resource as ARM words it.
        let unknown = http
            .get(url(&base, &RESOURCE.replace("sa1", "nope")))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        assert_eq!(
            unknown.json::<Value>().await.unwrap()["error"]["message"],
            "The Resource 'Microsoft.Storage/storageAccounts/nope' under resource group 'rg' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        );
    }

    /// A DELETE's `Location` poll meets a 503 fault, then answers 204 as usual.
    #[tokio::test]
    async fn location_polls_meet_faults_too() {
        let (base, _state) = serve().await;
        let http = reqwest::Client::new();
        let body = json!({"simulate": {"durationSeconds": 0,
            "faults": [{"kind": "status", "status": 503, "retryAfter": "2"}]}});
        let answer = http
            .delete(url(&base, RESOURCE))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        let unavailable = http.get(&location).send().await.unwrap();
        assert_eq!(unavailable.status(), 503);
        assert_eq!(retry_afters(&unavailable), ["2"]);
        assert_eq!(
            unavailable.json::<Value>().await.unwrap()["error"]["code"],
            "ServiceUnavailable"
        );
        assert_eq!(http.get(&location).send().await.unwrap().status(), 204);
    }
}
