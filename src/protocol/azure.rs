//! Azure Resource Manager (ARM) long-running operations, and the Azure data-plane variant.
//!
//! The start request is the user's PUT, PATCH, POST or DELETE. Its answer (200, 201, 202 or
//! 204) chooses how the operation is polled, exactly as azcore does: `Azure-AsyncOperation` >
//! `Operation-Location` > `Location` headers > the resource's own `provisioningState` (PUT and
//! PATCH) > synchronous completion. The choice (`mode`) and the URLs are persisted in the handle:
//! `url` is what is polled, `resultURL` the resource read once the operation has succeeded (PUT
//! and PATCH with a status monitor; POST with both a monitor and a `Location`).
//!
//! * Status monitors (`Azure-AsyncOperation`, `Operation-Location`): `status` compared without
//!   case: `Succeeded`, `Failed`, `Canceled` (or `Cancelled`) are terminal; `NotStarted` and
//!   `Accepted` are pending; any other word is running. A body without `status`, and any 4xx or
//!   5xx, is a failed read of the status, not of the operation (the poll is retried).
//!   `percentComplete` is the progress, rounded and clamped.
//! * `Location`: 202 is running; 200, 201 and 204 have succeeded (the body, if any, is the
//!   result); 429 and the gateway answers 408, 425, 502, 503, 504 are retried; any other 4xx or
//!   5xx is the operation's failure.
//! * `Body`: the resource itself; 204, or a body without `provisioningState`, has succeeded.
//!
//! `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms` are honoured by the operator for
//! every protocol. There is no idempotency key: PUT and DELETE are idempotent by themselves
//! (RFC 9110), so only they are resent after a lost answer; PATCH and POST are not. ARM has no
//! generic cancel. An operation adopted by `spec.operation.url` has no mode: each answer is read
//! by its shape (a `status` field: a status monitor; a `provisioningState`: the resource; else
//! the `Location` rules).

use serde_json::Value;

use super::error_details::{MAX_DEPTH, bound, detail};
use super::{
    Dialect, HttpAnswer, Observation, ParseError, PollOutcome, RequestSpec, StartOutcome, Started,
    UpstreamState, describe, is_refusal, is_success, rpc_code_for_http,
};
use crate::api::{ErrorDetail, HttpMethod, OperationError, OperationHandle, StartRequest};

/// The Azure dialect.
pub struct Azure;

/// `mode`: poll the `Azure-AsyncOperation` status monitor.
pub const MODE_ASYNC: &str = "AzureAsyncOperation";
/// `mode`: poll the `Operation-Location` status monitor (Azure data plane).
pub const MODE_OPERATION_LOCATION: &str = "OperationLocation";
/// `mode`: poll the `Location` URL; its HTTP status is the outcome.
pub const MODE_LOCATION: &str = "Location";
/// `mode`: poll the resource itself for its `provisioningState`.
pub const MODE_BODY: &str = "Body";

/// How the start request was made, as far as reading its answer needs.
struct Origin<'a> {
    method: &'a reqwest::Method,
    /// The resource URL (the start's path and query), relative to the base URL.
    resource: String,
}

impl Dialect for Azure {
    /// ARM's status monitors are on the same origin but not under the resource's path
    /// (`/subscriptions/{id}/providers/{rp}/locations/{l}/operationStatuses/…`), whatever path
    /// `baseURL` has: anywhere on its origin.
    fn url_scope(&self) -> super::UrlScope {
        super::UrlScope::Origin
    }

    fn idempotent_start(&self, start: &StartRequest) -> bool {
        matches!(start.method, HttpMethod::Put | HttpMethod::Delete)
    }

    fn can_cancel(&self) -> bool {
        false
    }

    fn start_request(&self, start: &StartRequest, _request_id: &str) -> RequestSpec {
        RequestSpec::from_start(start)
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        match &handle.url {
            Some(url) => Ok(RequestSpec::get(url.clone())),
            None => Err(ParseError::Shape(
                "an azure operation is polled at its status URL; set spec.operation.url".into(),
            )),
        }
    }

    fn cancel_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    fn result_request(&self, handle: &OperationHandle) -> Option<RequestSpec> {
        handle.result_url.clone().map(RequestSpec::get)
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        started(None, answer)
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        by_shape(answer)
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        let body = answer.json().ok();
        // ARM `ErrorResponse` ({"error": {code, message, target, details}}), or the bare error.
        let error = body
            .as_ref()
            .map(|b| b.get("error").filter(|e| e.is_object()).unwrap_or(b));
        let mut error = match error {
            Some(e) => arm_error(e),
            None => arm_error(&Value::Null),
        };
        if error.message.is_empty() {
            error.message = format!("HTTP {}", answer.status);
        }
        if error.code == "UNKNOWN" {
            error.code = rpc_code_for_http(answer.status).to_owned();
        }
        error.http_status = Some(i32::from(answer.status));
        error
    }

    fn read_start(&self, request: &RequestSpec, answer: &HttpAnswer) -> StartOutcome {
        if !is_success(answer.status) {
            let error = self.parse_error(answer);
            let text = describe(answer.status, &error.message);
            let retry_after = ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"]
                .iter()
                .any(|h| answer.header(h).is_some());
            // ARM RPC (Addendum, "Retry"): any answer with a Retry-After is retried after it —
            // 429, a 503, and a 409 such as `AnotherOperationInProgress`.
            return if answer.status == 429 || retry_after {
                StartOutcome::Deferred(text)
            } else if is_refusal(answer.status) {
                StartOutcome::Rejected(error)
            } else {
                StartOutcome::Lost(text)
            };
        }
        let origin = Origin {
            method: &request.method,
            resource: with_query(&request.path, &request.query),
        };
        match started(Some(&origin), answer) {
            Ok(started) => StartOutcome::Started(Box::new(started)),
            Err(e) => StartOutcome::Lost(format!("unreadable start answer: {e}")),
        }
    }

    fn read_poll(&self, handle: &OperationHandle, answer: &HttpAnswer) -> PollOutcome {
        let mode = handle.mode.as_deref();
        if mode == Some(MODE_LOCATION) {
            return self.read_location(answer);
        }
        if !is_success(answer.status) {
            return self.unreadable(answer);
        }
        let parsed = match mode {
            Some(MODE_ASYNC) => answer.json().and_then(|b| monitor(&b, false)),
            Some(MODE_OPERATION_LOCATION) => answer.json().and_then(|b| monitor(&b, true)),
            Some(MODE_BODY) => resource(answer),
            _ => by_shape(answer),
        };
        match parsed {
            Ok(observation) => PollOutcome::Observed(observation),
            Err(e) => PollOutcome::Failed {
                message: format!("unreadable answer: {e}"),
                not_found: false,
            },
        }
    }

    fn read_result(&self, mut observation: Observation, answer: &HttpAnswer) -> PollOutcome {
        if is_success(answer.status) {
            if let Ok(body) = answer.json() {
                observation.resource_id = id_of(&body).or(observation.resource_id);
                observation.result = Some(body);
            }
            return PollOutcome::Observed(observation);
        }
        if is_refusal(answer.status) {
            return PollOutcome::Observed(observation);
        }
        PollOutcome::Failed {
            message: format!(
                "the operation succeeded but the resource could not be read: {}",
                describe(answer.status, &self.parse_error(answer).message)
            ),
            not_found: false,
        }
    }
}

impl Azure {
    /// A poll answer that says nothing about the operation (a failed read of its status).
    fn unreadable(&self, answer: &HttpAnswer) -> PollOutcome {
        PollOutcome::Failed {
            message: describe(answer.status, &self.parse_error(answer).message),
            not_found: matches!(answer.status, 404 | 410),
        }
    }

    /// A `Location` poll: the HTTP status is the outcome.
    fn read_location(&self, answer: &HttpAnswer) -> PollOutcome {
        match answer.status {
            202 => PollOutcome::Observed(Observation {
                state: UpstreamState::Running,
                ..Observation::default()
            }),
            200 | 201 | 204 => match resource(answer) {
                Ok(observation) => PollOutcome::Observed(observation),
                Err(e) => PollOutcome::Failed {
                    message: format!("unreadable answer: {e}"),
                    not_found: false,
                },
            },
            // Throttled, or an answer from a gateway rather than the resource provider.
            408 | 425 | 429 | 502 | 503 | 504 => self.unreadable(answer),
            400..=599 => PollOutcome::Observed(Observation {
                state: UpstreamState::Failed,
                upstream_state: Some(format!("HTTP {}", answer.status)),
                error: Some(self.parse_error(answer)),
                ..Observation::default()
            }),
            _ => self.unreadable(answer),
        }
    }
}

/// Reads a 2xx start answer; `origin` is how the request was made (absent: not known).
fn started(origin: Option<&Origin>, answer: &HttpAnswer) -> Result<Started, ParseError> {
    let header = |name: &str| {
        answer
            .header(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let location = header("location");
    let method = origin.map(|o| o.method);
    let put_or_patch =
        method.is_some_and(|m| *m == reqwest::Method::PUT || *m == reqwest::Method::PATCH);
    let (mode, url) = if let Some(url) = header("azure-asyncoperation") {
        (Some(MODE_ASYNC), Some(url))
    } else if let Some(url) = header("operation-location") {
        (Some(MODE_OPERATION_LOCATION), Some(url))
    } else if let Some(url) = location.clone() {
        (Some(MODE_LOCATION), Some(url))
    } else if put_or_patch {
        (Some(MODE_BODY), origin.map(|o| o.resource.clone()))
    } else {
        (None, None)
    };
    // The final GET: the resource of a PUT/PATCH, or a POST's Location, after a status monitor.
    let result_url = match (mode, method) {
        (Some(MODE_ASYNC | MODE_OPERATION_LOCATION), Some(m))
            if *m == reqwest::Method::PUT || *m == reqwest::Method::PATCH =>
        {
            origin.map(|o| o.resource.clone())
        }
        (Some(MODE_ASYNC | MODE_OPERATION_LOCATION), Some(m)) if *m == reqwest::Method::POST => {
            location
        }
        _ => None,
    };
    let body = body_of(answer)?;
    let provisioning = body.as_ref().and_then(provisioning_state);
    let observation = match (mode, provisioning) {
        // The resource says where it is, whatever else the answer holds.
        (_, Some(word)) => from_word(&word, body.clone(), None),
        (Some(MODE_BODY), None) if answer.status == 201 => Observation {
            state: UpstreamState::Running,
            ..Observation::default()
        },
        (Some(MODE_BODY) | None, None) if answer.status != 202 => succeeded(body.clone()),
        (None, None) => {
            return Err(ParseError::Shape(
                "HTTP 202 without Azure-AsyncOperation, Operation-Location or Location: the operation cannot be polled".into(),
            ));
        }
        (Some(_), None) => Observation {
            state: UpstreamState::Running,
            ..Observation::default()
        },
    };
    let mut observation = observation;
    if observation.state == UpstreamState::Succeeded {
        observation.resource_id = body.as_ref().and_then(id_of);
    }
    Ok(Started {
        handle: OperationHandle {
            url,
            mode: mode.map(str::to_owned),
            result_url,
            ..OperationHandle::default()
        },
        observation,
    })
}

/// A status monitor body (`Azure-AsyncOperation`: result in `properties`; data plane
/// `Operation-Location`: result in `result`).
fn monitor(body: &Value, data_plane: bool) -> Result<Observation, ParseError> {
    let Some(status) = body.get("status").and_then(Value::as_str) else {
        return Err(ParseError::Shape(
            "the status monitor's answer has no `status`".into(),
        ));
    };
    let result_field = if data_plane { "result" } else { "properties" };
    let result = body.get(result_field).filter(|r| !r.is_null()).cloned();
    let mut observation = from_word(status, result, body.get("error"));
    observation.progress = body
        .get("percentComplete")
        .and_then(Value::as_f64)
        .filter(|p| p.is_finite())
        .map(|p| p.clamp(0.0, 100.0).round() as i32);
    Ok(observation)
}

/// The resource itself (a `Location` or `Body` poll, or a synchronous answer): its
/// `provisioningState` if it has one, else succeeded.
fn resource(answer: &HttpAnswer) -> Result<Observation, ParseError> {
    let body = body_of(answer)?;
    let mut observation = match body.as_ref().and_then(provisioning_state) {
        Some(word) => from_word(&word, body.clone(), None),
        None => succeeded(body.clone()),
    };
    if observation.state == UpstreamState::Succeeded {
        observation.resource_id = body.as_ref().and_then(id_of);
    }
    Ok(observation)
}

/// An answer of unknown kind (an adopted URL), read by its shape.
fn by_shape(answer: &HttpAnswer) -> Result<Observation, ParseError> {
    if answer.status == 202 {
        return Ok(Observation {
            state: UpstreamState::Running,
            ..Observation::default()
        });
    }
    match body_of(answer)? {
        Some(body) if body.get("status").is_some_and(Value::is_string) => {
            monitor(&body, body.get("result").is_some())
        }
        _ => resource(answer),
    }
}

/// The JSON body, `None` when there is none; anything else than JSON is unreadable.
fn body_of(answer: &HttpAnswer) -> Result<Option<Value>, ParseError> {
    if answer.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    answer.json().map(Some)
}

fn provisioning_state(body: &Value) -> Option<String> {
    body.get("properties")?
        .get("provisioningState")?
        .as_str()
        .map(str::to_owned)
}

fn id_of(body: &Value) -> Option<String> {
    body.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

fn succeeded(result: Option<Value>) -> Observation {
    Observation {
        state: UpstreamState::Succeeded,
        result,
        ..Observation::default()
    }
}

/// An observation from a status word (`status` or `provisioningState`), compared without case.
fn from_word(word: &str, result: Option<Value>, error: Option<&Value>) -> Observation {
    let state = state_of(word);
    let mut observation = Observation {
        state,
        upstream_state: Some(word.to_owned()),
        ..Observation::default()
    };
    let error = error.filter(|e| e.is_object());
    match state {
        UpstreamState::Succeeded => observation.result = result,
        UpstreamState::Failed => {
            let mut e = arm_error(error.unwrap_or(&Value::Null));
            if e.message.is_empty() {
                e.message = format!("the operation ended in state {word}");
            }
            observation.error = Some(e);
        }
        UpstreamState::Cancelled => {
            let mut e = arm_error(error.unwrap_or(&Value::Null));
            e.code = "CANCELLED".into();
            if e.message.is_empty() {
                e.message = "the operation was canceled".into();
            }
            observation.error = Some(e);
        }
        UpstreamState::Pending | UpstreamState::Running => {}
    }
    observation
}

/// An ARM error (`{code, message, target, details[]}`) as an operation error: every nested
/// `details[]` entry, depth first, becomes an `Error` detail (ARM also nests a whole error
/// document as JSON text inside a `message`: it is read as one more level); `message` and
/// `providerCode` are those of the innermost cause — the first entry at the deepest level — so
/// that a `DeploymentFailed`, which only wraps, shows what failed.
fn arm_error(error: &Value) -> OperationError {
    let mut details = Vec::new();
    let mut innermost: (usize, Option<String>, Option<String>) = (0, None, None);
    walk(error, 0, &mut details, &mut innermost);
    bound(&mut details);
    let root_code = text_of(error, "code");
    let provider_code = innermost.1.clone().or(root_code.clone());
    let code = [innermost.1.as_deref(), root_code.as_deref()]
        .into_iter()
        .flatten()
        .map(code_for)
        .find(|c| *c != "UNKNOWN")
        .unwrap_or("UNKNOWN");
    OperationError {
        code: code.to_owned(),
        provider_code,
        http_status: None,
        message: innermost
            .2
            .or_else(|| text_of(error, "message"))
            .unwrap_or_default(),
        details,
    }
}

/// Visits `error`'s causes depth first, keeping the first cause found at the deepest level.
fn walk(
    error: &Value,
    depth: usize,
    details: &mut Vec<ErrorDetail>,
    innermost: &mut (usize, Option<String>, Option<String>),
) {
    if depth > MAX_DEPTH {
        return;
    }
    let message = text_of(error, "message");
    let code = text_of(error, "code");
    if depth > innermost.0 || innermost.2.is_none() {
        *innermost = (depth, code.clone(), message.clone());
    }
    if depth > 0 {
        details.push(ErrorDetail {
            reason: code,
            field: text_of(error, "target"),
            message: message.clone(),
            ..detail("Error")
        });
    }
    let children: Vec<&Value> = error
        .get("details")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter(|d| d.is_object()).collect())
        .unwrap_or_default();
    for child in &children {
        walk(child, depth + 1, details, innermost);
    }
    // `"message": "{\"status\":\"Failed\",\"error\":{…}}"`: one more level, inside the text.
    if children.is_empty()
        && let Some(inner) = message
            .as_deref()
            .filter(|m| m.trim_start().starts_with('{'))
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|v| v.get("error").filter(|e| e.is_object()).cloned())
    {
        walk(&inner, depth + 1, details, innermost);
    }
}

fn text_of(value: &Value, field: &str) -> Option<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The normalised state of an ARM status word.
fn state_of(word: &str) -> UpstreamState {
    let is = |w: &str| word.trim().eq_ignore_ascii_case(w);
    if is("Succeeded") {
        UpstreamState::Succeeded
    } else if is("Failed") {
        UpstreamState::Failed
    } else if is("Canceled") || is("Cancelled") {
        UpstreamState::Cancelled
    } else if is("NotStarted") || is("Accepted") {
        UpstreamState::Pending
    } else {
        // Running, InProgress, Updating, Deleting, Creating, any RP-defined word.
        UpstreamState::Running
    }
}

/// The `google.rpc.Code` name of an ARM error code, `UNKNOWN` unless it maps obviously.
fn code_for(code: &str) -> &'static str {
    let c = code.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| c.contains(w));
    if c.ends_with("notfound") {
        "NOT_FOUND"
    } else if c.ends_with("alreadyexists") || c == "resourceexists" {
        "ALREADY_EXISTS"
    } else if any(&["quota", "limitexceeded", "throttl", "toomanyrequests"]) {
        "RESOURCE_EXHAUSTED"
    } else if any(&["authorizationfailed", "forbidden"]) {
        "PERMISSION_DENIED"
    } else if any(&["authenticationfailed", "authenticationtoken"]) {
        "UNAUTHENTICATED"
    } else if c.starts_with("invalid") || any(&["badrequest", "badargument"]) {
        "INVALID_ARGUMENT"
    } else if c == "conflict" || any(&["anotheroperation", "conflictingoperation"]) {
        "ABORTED"
    } else if any(&["canceled", "cancelled"]) {
        "CANCELLED"
    } else if any(&["timeout", "timedout"]) {
        "DEADLINE_EXCEEDED"
    } else if any(&["internalservererror", "internalerror"]) {
        "INTERNAL"
    } else {
        "UNKNOWN"
    }
}

/// `path` with `query` appended (URL-encoded), relative to the base URL like `path`.
fn with_query(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let mut url = reqwest::Url::parse("http://query.invalid/").ok();
    if let Some(url) = url.as_mut() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let encoded = url
        .as_ref()
        .and_then(|u| u.query())
        .unwrap_or_default()
        .to_owned();
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RESOURCE: &str =
        "subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1";
    const ASYNC_URL: &str = "https://management.azure.com/subscriptions/sub-1/providers/Microsoft.Storage/locations/westus/operationStatuses/5c2c5ad0-7c3b-4a5f-9f0b-2c1e4e2a6d11?api-version=2023-01-01";
    const LOCATION_URL: &str = "https://management.azure.com/subscriptions/sub-1/providers/Microsoft.Storage/locations/westus/operationResults/5c2c5ad0-7c3b-4a5f-9f0b-2c1e4e2a6d11?api-version=2023-01-01";

    fn answer(status: u16, headers: &[(&str, &str)], body: Option<Value>) -> HttpAnswer {
        HttpAnswer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body
                .map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        }
    }

    fn request(method: reqwest::Method) -> RequestSpec {
        RequestSpec {
            method,
            path: RESOURCE.into(),
            query: vec![("api-version".into(), "2023-01-01".into())],
            headers: vec![],
            body: Some(json!({"location": "westus"})),
        }
    }

    fn start(method: reqwest::Method, answer: &HttpAnswer) -> Started {
        match Azure.read_start(&request(method), answer) {
            StartOutcome::Started(started) => *started,
            other => panic!("not started: {other:?}"),
        }
    }

    fn handle(mode: &str) -> OperationHandle {
        OperationHandle {
            url: Some(ASYNC_URL.into()),
            mode: Some(mode.into()),
            ..OperationHandle::default()
        }
    }

    fn observed(outcome: PollOutcome) -> Observation {
        match outcome {
            PollOutcome::Observed(observation) => observation,
            other => panic!("not observed: {other:?}"),
        }
    }

    fn resource_body(state: &str) -> Value {
        json!({
            "id": format!("/{RESOURCE}"),
            "name": "sa1",
            "type": "Microsoft.Storage/storageAccounts",
            "location": "westus",
            "properties": {"provisioningState": state}
        })
    }

    #[test]
    fn azure_async_operation_wins_over_operation_location_and_location() {
        let answer = answer(
            201,
            &[
                ("Location", LOCATION_URL),
                ("Operation-Location", "https://management.azure.com/other"),
                ("Azure-AsyncOperation", ASYNC_URL),
                ("Retry-After", "10"),
            ],
            Some(resource_body("Creating")),
        );
        let started = start(reqwest::Method::PUT, &answer);
        assert_eq!(started.handle.mode.as_deref(), Some(MODE_ASYNC));
        assert_eq!(started.handle.url.as_deref(), Some(ASYNC_URL));
        assert_eq!(
            started.handle.result_url.as_deref(),
            Some(format!("{RESOURCE}?api-version=2023-01-01").as_str()),
            "PUT: the final GET reads the resource"
        );
        assert_eq!(started.observation.state, UpstreamState::Running);
        assert_eq!(
            started.observation.upstream_state.as_deref(),
            Some("Creating")
        );
    }

    #[test]
    fn operation_location_wins_over_location() {
        let answer = answer(
            202,
            &[
                ("Location", LOCATION_URL),
                (
                    "Operation-Location",
                    "https://example.cognitiveservices.azure.com/operations/abc",
                ),
            ],
            None,
        );
        let started = start(reqwest::Method::POST, &answer);
        assert_eq!(
            started.handle.mode.as_deref(),
            Some(MODE_OPERATION_LOCATION)
        );
        assert_eq!(
            started.handle.result_url.as_deref(),
            Some(LOCATION_URL),
            "POST: the final GET follows Location"
        );
        assert_eq!(started.observation.state, UpstreamState::Running);
    }

    #[test]
    fn location_alone_for_delete_has_no_final_get() {
        let answer = answer(
            202,
            &[("Location", LOCATION_URL), ("Retry-After", "15")],
            None,
        );
        let started = start(reqwest::Method::DELETE, &answer);
        assert_eq!(started.handle.mode.as_deref(), Some(MODE_LOCATION));
        assert_eq!(started.handle.url.as_deref(), Some(LOCATION_URL));
        assert_eq!(started.handle.result_url, None);
    }

    #[test]
    fn put_without_headers_polls_the_resource_body() {
        let started = start(
            reqwest::Method::PUT,
            &answer(201, &[], Some(resource_body("Creating"))),
        );
        assert_eq!(started.handle.mode.as_deref(), Some(MODE_BODY));
        assert_eq!(
            started.handle.url.as_deref(),
            Some(format!("{RESOURCE}?api-version=2023-01-01").as_str())
        );
        assert_eq!(started.observation.state, UpstreamState::Running);
        // 201 without provisioningState: in progress; 200 without: done.
        let started = start(
            reqwest::Method::PUT,
            &answer(201, &[], Some(json!({"id": "/x"}))),
        );
        assert_eq!(started.observation.state, UpstreamState::Running);
        let started = start(
            reqwest::Method::PUT,
            &answer(200, &[], Some(json!({"id": "/x", "properties": {}}))),
        );
        assert_eq!(started.observation.state, UpstreamState::Succeeded);
        assert_eq!(started.observation.resource_id.as_deref(), Some("/x"));
    }

    #[test]
    fn a_synchronous_answer_has_succeeded_already() {
        let started = start(
            reqwest::Method::PUT,
            &answer(200, &[], Some(resource_body("Succeeded"))),
        );
        assert_eq!(started.observation.state, UpstreamState::Succeeded);
        assert_eq!(started.observation.result, Some(resource_body("Succeeded")));
        let started = start(reqwest::Method::DELETE, &answer(204, &[], None));
        assert_eq!(started.observation.state, UpstreamState::Succeeded);
        assert_eq!(started.handle.url, None);
    }

    #[test]
    fn a_202_without_a_polling_url_is_a_lost_start() {
        let outcome = Azure.read_start(&request(reqwest::Method::POST), &answer(202, &[], None));
        assert!(matches!(outcome, StartOutcome::Lost(_)), "{outcome:?}");
    }

    #[test]
    fn start_refusals_keep_the_arm_error() {
        let outcome = Azure.read_start(
            &request(reqwest::Method::PUT),
            &answer(
                409,
                &[],
                Some(json!({"error": {"code": "AnotherOperationInProgress", "message": "Another operation on this or dependent resource is in progress."}})),
            ),
        );
        let StartOutcome::Rejected(error) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(error.code, "ABORTED");
        assert_eq!(
            error.provider_code.as_deref(),
            Some("AnotherOperationInProgress")
        );
        assert_eq!(error.http_status, Some(409));
        let outcome = Azure.read_start(&request(reqwest::Method::PUT), &answer(503, &[], None));
        assert!(matches!(outcome, StartOutcome::Lost(_)));
    }

    #[test]
    fn terminal_states_are_case_insensitive_and_cancelled_is_accepted() {
        let poll = |status: &str| {
            observed(Azure.read_poll(
                &handle(MODE_ASYNC),
                &answer(200, &[], Some(json!({"status": status}))),
            ))
            .state
        };
        assert_eq!(poll("Succeeded"), UpstreamState::Succeeded);
        assert_eq!(poll("succeeded"), UpstreamState::Succeeded);
        assert_eq!(poll("FAILED"), UpstreamState::Failed);
        assert_eq!(poll("Canceled"), UpstreamState::Cancelled);
        assert_eq!(poll("Cancelled"), UpstreamState::Cancelled);
        assert_eq!(poll("NotStarted"), UpstreamState::Pending);
        assert_eq!(poll("Accepted"), UpstreamState::Pending);
        for word in [
            "Running",
            "InProgress",
            "Updating",
            "Deleting",
            "Creating",
            "PreparingVMDisk",
        ] {
            assert_eq!(poll(word), UpstreamState::Running, "{word}");
        }
    }

    #[test]
    fn the_async_status_monitor_body_of_the_arm_rpc() {
        let running = json!({
            "id": "/subscriptions/id/locations/westus/operationsStatuses/sameguid",
            "name": "sameguid",
            "status": "InProgress",
            "startTime": "2026-01-01T00:00:00Z",
            "percentComplete": 42.6
        });
        let obs = observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(running))));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.progress, Some(43));
        assert_eq!(obs.upstream_state.as_deref(), Some("InProgress"));
        let failed = json!({
            "id": "/subscriptions/id/locations/westus/operationsStatuses/sameguid",
            "name": "sameguid",
            "status": "Failed",
            "startTime": "2026-01-01T00:00:00Z",
            "endTime": "2026-01-01T00:01:00Z",
            "percentComplete": 100,
            "error": {"code": "BadArgument", "message": "The sku name is not supported."}
        });
        let obs = observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(failed))));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.provider_code.as_deref(), Some("BadArgument"));
        assert_eq!(error.message, "The sku name is not supported.");
        let succeeded = json!({"status": "Succeeded", "properties": {"output": 7}});
        let obs =
            observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(succeeded))));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.result, Some(json!({"output": 7})));
        let canceled = json!({"status": "Canceled", "error": {"code": "OperationCanceled", "message": "canceled by the user"}});
        let obs = observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(canceled))));
        assert_eq!(obs.state, UpstreamState::Cancelled);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "CANCELLED");
        assert_eq!(error.provider_code.as_deref(), Some("OperationCanceled"));
    }

    #[test]
    fn an_unrecognised_failure_code_is_unknown() {
        let body = json!({"status": "Failed", "error": {"code": "VMExtensionProvisioningError", "message": "x"}});
        let obs = observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(body))));
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
        let body = json!({"status": "Failed"});
        let obs = observed(Azure.read_poll(&handle(MODE_ASYNC), &answer(200, &[], Some(body))));
        let error = obs.error.unwrap();
        assert_eq!(error.code, "UNKNOWN");
        assert!(error.message.contains("Failed"));
    }

    #[test]
    fn the_data_plane_status_monitor_carries_its_result() {
        let body = json!({"id": "abc", "status": "Succeeded", "result": {"modelId": "m1"}});
        let obs = observed(Azure.read_poll(
            &handle(MODE_OPERATION_LOCATION),
            &answer(200, &[], Some(body)),
        ));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.result, Some(json!({"modelId": "m1"})));
        let body = json!({"id": "abc", "status": "NotStarted"});
        let obs = observed(Azure.read_poll(
            &handle(MODE_OPERATION_LOCATION),
            &answer(200, &[], Some(body)),
        ));
        assert_eq!(obs.state, UpstreamState::Pending);
    }

    #[test]
    fn percent_complete_is_rounded_and_clamped() {
        let progress = |p: Value| {
            observed(Azure.read_poll(
                &handle(MODE_ASYNC),
                &answer(
                    200,
                    &[],
                    Some(json!({"status": "Running", "percentComplete": p})),
                ),
            ))
            .progress
        };
        assert_eq!(progress(json!(12.4)), Some(12));
        assert_eq!(progress(json!(99.5)), Some(100));
        assert_eq!(progress(json!(250)), Some(100));
        assert_eq!(progress(json!(-1)), Some(0));
        assert_eq!(progress(json!("half")), None);
    }

    #[test]
    fn a_status_monitor_without_status_or_with_an_error_status_is_a_failed_read() {
        for mode in [MODE_ASYNC, MODE_OPERATION_LOCATION] {
            let outcome = Azure.read_poll(
                &handle(mode),
                &answer(200, &[], Some(json!({"id": "x", "percentComplete": 10}))),
            );
            assert!(
                matches!(
                    outcome,
                    PollOutcome::Failed {
                        not_found: false,
                        ..
                    }
                ),
                "{outcome:?}"
            );
            for status in [400, 500, 503] {
                let outcome = Azure.read_poll(
                    &handle(mode),
                    &answer(
                        status,
                        &[],
                        Some(json!({"error": {"code": "InternalServerError", "message": "x"}})),
                    ),
                );
                assert!(
                    matches!(outcome, PollOutcome::Failed { .. }),
                    "{status}: {outcome:?}"
                );
            }
            let outcome = Azure.read_poll(&handle(mode), &answer(404, &[], None));
            assert!(matches!(
                outcome,
                PollOutcome::Failed {
                    not_found: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn location_polling_reads_the_http_status() {
        let location = handle(MODE_LOCATION);
        let obs =
            observed(Azure.read_poll(&location, &answer(202, &[("Location", LOCATION_URL)], None)));
        assert_eq!(obs.state, UpstreamState::Running);
        for status in [200, 201, 204] {
            let obs = observed(Azure.read_poll(&location, &answer(status, &[], None)));
            assert_eq!(obs.state, UpstreamState::Succeeded, "{status}");
        }
        // The would-be synchronous answer is the result.
        let obs =
            observed(Azure.read_poll(&location, &answer(200, &[], Some(json!({"keys": [1]})))));
        assert_eq!(obs.result, Some(json!({"keys": [1]})));
        // A body with a provisioningState says more than the status.
        let obs =
            observed(Azure.read_poll(&location, &answer(200, &[], Some(resource_body("Failed")))));
        assert_eq!(obs.state, UpstreamState::Failed);
        // Throttling and gateway answers are retried; the phase does not change.
        for status in [429, 503, 502, 504, 408] {
            let outcome =
                Azure.read_poll(&location, &answer(status, &[("Retry-After", "5")], None));
            assert!(
                matches!(outcome, PollOutcome::Failed { .. }),
                "{status}: {outcome:?}"
            );
        }
        // Any other 4xx/5xx is the operation's failure.
        for status in [400, 404, 409, 500] {
            let obs = observed(Azure.read_poll(
                &location,
                &answer(
                    status,
                    &[],
                    Some(json!({"error": {"code": "ResourceNotFound", "message": "gone"}})),
                ),
            ));
            assert_eq!(obs.state, UpstreamState::Failed, "{status}");
            let error = obs.error.unwrap();
            assert_eq!(error.http_status, Some(i32::from(status)));
            assert_eq!(error.code, "NOT_FOUND");
            assert_eq!(error.message, "gone");
        }
        let obs = observed(Azure.read_poll(&location, &answer(500, &[], None)));
        assert_eq!(obs.error.unwrap().code, "INTERNAL");
    }

    #[test]
    fn body_polling_assumes_success_without_a_provisioning_state() {
        let body = handle(MODE_BODY);
        let obs =
            observed(Azure.read_poll(&body, &answer(200, &[], Some(resource_body("Updating")))));
        assert_eq!(obs.state, UpstreamState::Running);
        let obs =
            observed(Azure.read_poll(&body, &answer(200, &[], Some(resource_body("Succeeded")))));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(
            obs.resource_id.as_deref(),
            Some(format!("/{RESOURCE}").as_str())
        );
        assert_eq!(obs.result, Some(resource_body("Succeeded")));
        let obs = observed(Azure.read_poll(&body, &answer(200, &[], Some(json!({"id": "/r"})))));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        let obs = observed(Azure.read_poll(&body, &answer(204, &[], None)));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        let obs =
            observed(Azure.read_poll(&body, &answer(200, &[], Some(resource_body("canceled")))));
        assert_eq!(obs.state, UpstreamState::Cancelled);
    }

    #[test]
    fn an_adopted_url_is_read_by_its_shape() {
        let adopted = OperationHandle {
            url: Some(ASYNC_URL.into()),
            ..OperationHandle::default()
        };
        let obs = observed(Azure.read_poll(
            &adopted,
            &answer(200, &[], Some(json!({"status": "Failed"}))),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let obs = observed(Azure.read_poll(&adopted, &answer(202, &[], None)));
        assert_eq!(obs.state, UpstreamState::Running);
        let obs =
            observed(Azure.read_poll(&adopted, &answer(200, &[], Some(resource_body("Deleting")))));
        assert_eq!(obs.state, UpstreamState::Running);
        let obs = observed(Azure.read_poll(&adopted, &answer(204, &[], None)));
        assert_eq!(obs.state, UpstreamState::Succeeded);
    }

    #[test]
    fn the_final_get_reads_the_resource_after_success() {
        let mut h = handle(MODE_ASYNC);
        assert_eq!(Azure.result_request(&h), None);
        h.result_url = Some(format!("{RESOURCE}?api-version=2023-01-01"));
        let request = Azure.result_request(&h).unwrap();
        assert_eq!(request.method, reqwest::Method::GET);
        assert_eq!(request.path, format!("{RESOURCE}?api-version=2023-01-01"));
        let succeeded = Observation {
            state: UpstreamState::Succeeded,
            ..Observation::default()
        };
        let obs = observed(Azure.read_result(
            succeeded.clone(),
            &answer(200, &[], Some(resource_body("Succeeded"))),
        ));
        assert_eq!(obs.result, Some(resource_body("Succeeded")));
        assert_eq!(
            obs.resource_id.as_deref(),
            Some(format!("/{RESOURCE}").as_str())
        );
        // A transient failure polls again; a refusal keeps the success without a result.
        assert!(matches!(
            Azure.read_result(succeeded.clone(), &answer(503, &[], None)),
            PollOutcome::Failed { .. }
        ));
        let obs = observed(Azure.read_result(succeeded, &answer(403, &[], None)));
        assert_eq!((obs.state, obs.result), (UpstreamState::Succeeded, None));
    }

    #[test]
    fn only_put_and_delete_are_resent() {
        let start = |method: &str| -> StartRequest {
            serde_json::from_value(json!({"method": method, "path": RESOURCE})).unwrap()
        };
        assert!(Azure.idempotent_start(&start("PUT")));
        assert!(Azure.idempotent_start(&start("DELETE")));
        assert!(!Azure.idempotent_start(&start("PATCH")));
        assert!(!Azure.idempotent_start(&start("POST")));
        assert!(!Azure.can_cancel());
        assert_eq!(Azure.cancel_request(&handle(MODE_ASYNC)), None);
    }

    #[test]
    fn the_resource_url_keeps_the_query() {
        assert_eq!(with_query("a/b", &[]), "a/b");
        assert_eq!(
            with_query(
                "a/b",
                &[
                    ("api-version".into(), "2023-01-01".into()),
                    ("x".into(), "a b&c".into())
                ]
            ),
            "a/b?api-version=2023-01-01&x=a+b%26c"
        );
        assert_eq!(
            with_query("a/b?api-version=1", &[("x".into(), "1".into())]),
            "a/b?api-version=1&x=1"
        );
    }

    #[test]
    fn arm_error_codes_map_when_obvious() {
        assert_eq!(code_for("ResourceNotFound"), "NOT_FOUND");
        assert_eq!(code_for("ResourceGroupNotFound"), "NOT_FOUND");
        assert_eq!(code_for("QuotaExceeded"), "RESOURCE_EXHAUSTED");
        assert_eq!(code_for("AuthorizationFailed"), "PERMISSION_DENIED");
        assert_eq!(code_for("InvalidParameter"), "INVALID_ARGUMENT");
        assert_eq!(code_for("Conflict"), "ABORTED");
        assert_eq!(code_for("OperationCanceled"), "CANCELLED");
        assert_eq!(code_for("InternalServerError"), "INTERNAL");
        assert_eq!(code_for("SkuNotAvailable"), "UNKNOWN");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            status in 100u16..600,
            header in proptest::option::of("[ -~]{0,40}"),
        ) {
            let mut headers = vec![];
            if let Some(h) = header {
                headers.push(("azure-asyncoperation".to_owned(), h.clone()));
                headers.push(("location".to_owned(), h));
            }
            let answer = HttpAnswer { status, headers, body };
            let _ = Azure.parse_operation(&answer);
            let _ = Azure.parse_started(&answer);
            let _ = Azure.parse_error(&answer);
            for method in [reqwest::Method::PUT, reqwest::Method::POST] {
                let _ = Azure.read_start(&request(method), &answer);
            }
            for mode in [None, Some(MODE_ASYNC), Some(MODE_OPERATION_LOCATION), Some(MODE_LOCATION), Some(MODE_BODY), Some("?")] {
                let h = OperationHandle { url: Some("u".into()), mode: mode.map(str::to_owned), ..OperationHandle::default() };
                let _ = Azure.read_poll(&h, &answer);
            }
            let _ = Azure.read_result(Observation::default(), &answer);
        }
    }
}
