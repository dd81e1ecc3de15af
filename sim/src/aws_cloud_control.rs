//! The AWS Cloud Control API surface under `/aws` (JSON 1.0: `POST /aws/` with
//! `X-Amz-Target: CloudApiService.<Action>` and `Content-Type: application/x-amz-json-1.0`;
//! requests are not signed unless `/sim/auth` asks for SigV4). Shapes follow
//! `boto/botocore` `botocore/data/cloudcontrol/2021-09-30/service-2.json`.
//!
//! * `CreateResource` (`TypeName`, `DesiredState` as a JSON string, `ClientToken`),
//!   `UpdateResource` (`TypeName`, `Identifier`, `PatchDocument`) and `DeleteResource`
//!   (`TypeName`, `Identifier`) start a request and answer its `ProgressEvent`; a `ClientToken`
//!   seen before answers the same request (idempotency). The script is the body's `simulate`;
//!   its `startFaults` apply to the n-th identical start request.
//! * `GetResourceRequestStatus` (`RequestToken`): `PENDING` for the first tenth of the duration,
//!   `IN_PROGRESS`, then `SUCCESS` (with the `ResourceModel`), `FAILED` (`ErrorCode`, one of
//!   the `HandlerErrorCode` enum — `simulate.errorReason` if it is one, else derived from
//!   `errorCode` —, and `StatusMessage`, the scripted message) or `CANCEL_COMPLETE`; served
//!   with the script's GET faults (`simulate.faults`, see [`crate::faults`]). `EventTime` is
//!   when the request reached its current status (epoch seconds).
//! * `ListResourceRequests` (`MaxResults`, `NextToken`, `ResourceRequestStatusFilter`
//!   `{Operations, OperationStatuses}`): the requests of this surface in creation order, as
//!   `{"ResourceRequestStatusSummaries": [ProgressEvent…], "NextToken"}` (`NextToken` left out
//!   on the last page). A summary is the request's `ProgressEvent` without its `ResourceModel`
//!   (the reference does not promise one). Requests created more than 7 days (of simulator
//!   time) ago have expired and are not listed. `MaxResults` is 1-100 (default 20) and the
//!   filter's values must be the API's enum values, else `ValidationException`; a `NextToken`
//!   that does not match the API's pattern is a `ValidationException` too, and one that is not
//!   this list's (another filter), or was issued more than 60 s of simulator time ago, is an
//!   `InvalidRequestException` ("… page token …"). Counted in `/sim/stats` as `lists` (refused
//!   ones too); not a GET of the requests it lists.
//! * `CancelResourceRequest` (`RequestToken`): `CANCEL_IN_PROGRESS` for a second, then
//!   `CANCEL_COMPLETE` (unless the request finishes first); a finished request answers
//!   `ConcurrentModificationException`.
//!
//! Errors are JSON 1.0 errors: `{"__type": "<namespace>#<Name>", "Message"}` (the Smithy model's
//! error shapes have one member, `Message`; the Coral front end's own errors —
//! `ThrottlingException`, `ValidationException`, … — write `message`), with an
//! `x-amzn-ErrorType: <Name>:http://internal.amazon.com/coral/<namespace>/` header and an
//! `x-amzn-RequestId` on every answer. An error status — a fault's or `startStatus` — is
//! answered the way AWS answers it, which is not always that status: a 429 is the throttling
//! AWS JSON 1.0 services send, `400 ThrottlingException` "Rate exceeded" (botocore
//! `_retry.json`: `ThrottlingException` with `http_status_code` 400; pulumi-aws-native issue
//! #690); other client errors are 400 (`ValidationException` for 400,
//! `AccessDeniedException` for 403, `ResourceNotFoundException` for 404,
//! `AlreadyExistsException` for 409, `UnrecognizedClientException` 403 for 401,
//! `InvalidRequestException` otherwise); 500 is `InternalFailure`, 503 `ServiceUnavailable`
//! (AWS Cloud Control API Reference, Common Errors). An unknown `RequestToken` is `400
//! RequestTokenNotFoundException` (API reference of GetResourceRequestStatus).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, lose};
use super::paging::{EXPIRED_TOKEN, Paging};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};
use super::surface::Surface;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// How long a cancelled request reads `CANCEL_IN_PROGRESS`.
const CANCEL_MS: u64 = 1000;
/// `HandlerErrorCode` (service-2.json).
const HANDLER_ERROR_CODES: [&str; 16] = [
    "NotUpdatable",
    "InvalidRequest",
    "AccessDenied",
    "UnauthorizedTaggingOperation",
    "InvalidCredentials",
    "AlreadyExists",
    "NotFound",
    "ResourceConflict",
    "Throttling",
    "ServiceLimitExceeded",
    "NotStabilized",
    "GeneralServiceException",
    "ServiceInternalError",
    "ServiceTimeout",
    "NetworkFailure",
    "InternalFailure",
];

/// AWS Cloud Control, for faults.
struct CloudControl;

impl Surface for CloudControl {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        answer(event_json(op, now_ms))
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        let (http, code) = error_of_http(status.as_u16());
        error(http, code, message)
    }

    fn not_found(&self, _id: &str) -> Response {
        error(
            StatusCode::BAD_REQUEST,
            "RequestTokenNotFoundException",
            "A resource operation with the specified request token can't be found.",
        )
    }
}

/// Dispatches every `POST /aws` request by its `X-Amz-Target`.
pub async fn dispatch(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with(CONTENT_TYPE) {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            format!("Content-Type must be {CONTENT_TYPE}"),
        );
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match target.strip_prefix("CloudApiService.") {
        Some(action @ ("CreateResource" | "UpdateResource" | "DeleteResource")) => {
            start(&state, action, &body).await
        }
        Some("GetResourceRequestStatus") => status(&state, &body).await,
        Some("CancelResourceRequest") => cancel(&state, &body),
        Some("ListResourceRequests") => list(&state, &body),
        _ => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("unknown operation {target:?}"),
        ),
    }
}

/// The HTTP status and error code AWS answers for an error status (see the module doc).
fn error_of_http(status: u16) -> (StatusCode, &'static str) {
    let (http, code) = match status {
        400 => (400, "ValidationException"),
        401 => (403, "UnrecognizedClientException"),
        403 => (400, "AccessDeniedException"),
        404 => (400, "ResourceNotFoundException"),
        409 => (400, "AlreadyExistsException"),
        429 => (400, "ThrottlingException"),
        s if s < 500 => (400, "InvalidRequestException"),
        503 => (503, "ServiceUnavailable"),
        s => (s, "InternalFailure"),
    };
    (
        StatusCode::from_u16(http).unwrap_or(StatusCode::BAD_REQUEST),
        code,
    )
}

/// The Coral namespace of an error code, and the name of its message member.
fn namespace_of(code: &str) -> (&'static str, &'static str) {
    match code {
        "ThrottlingException" => ("com.amazon.coral.availability", "message"),
        "ValidationException" | "SerializationException" => {
            ("com.amazon.coral.validate", "message")
        }
        "UnknownOperationException"
        | "UnrecognizedClientException"
        | "AccessDeniedException"
        | "InternalFailure"
        | "ServiceUnavailable" => ("com.amazon.coral.service", "message"),
        _ => ("com.amazonaws.cloudcontrol", "Message"),
    }
}

/// A JSON 1.0 error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let (namespace, member) = namespace_of(code);
    let mut body = Map::new();
    body.insert("__type".into(), format!("{namespace}#{code}").into());
    body.insert(member.into(), message.into().into());
    let mut response = (status, Json(Value::Object(body))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{code}:http://internal.amazon.com/coral/{namespace}/"
    )) {
        headers.insert("x-amzn-errortype", value);
    }
    with_request_id(response)
}

fn answer(event: Value) -> Response {
    let mut response = Json(json!({ "ProgressEvent": event })).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    with_request_id(response)
}

/// Adds an `x-amzn-RequestId` (UUID-shaped, distinct per answer).
fn with_request_id(mut response: Response) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(n), mix(n ^ 0x5555));
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

fn text<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn start(state: &SimState, action: &str, body: &[u8]) -> Response {
    let (input, script, _) = match split_create_body(body, &[]) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, "ValidationException", message),
    };
    let Some(type_name) = text(&input, "TypeName").map(str::to_owned) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "1 validation error detected: Value null at 'typeName' failed to satisfy constraint: Member must not be null",
        );
    };
    let (operation, desired, identifier) = match action {
        "CreateResource" => {
            let Some(desired) = text(&input, "DesiredState") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "1 validation error detected: Value null at 'desiredState' failed to satisfy constraint: Member must not be null",
                );
            };
            let Ok(Value::Object(desired)) = serde_json::from_str::<Value>(desired) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestException",
                    "DesiredState must be a JSON object in a string",
                );
            };
            let identifier = primary_identifier(&desired);
            ("CREATE", Value::Object(desired), identifier)
        }
        _ => {
            let Some(identifier) = text(&input, "Identifier").map(str::to_owned) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "1 validation error detected: Value null at 'identifier' failed to satisfy constraint: Member must not be null",
                );
            };
            let operation = if action == "UpdateResource" {
                "UPDATE"
            } else {
                "DELETE"
            };
            (operation, json!({}), Some(identifier))
        }
    };
    let client_token = text(&input, "ClientToken").map(str::to_owned);
    let now = state.now_ms();
    let (internal, fault) = {
        let mut store = state.store();
        if let Some(op) = client_token
            .as_deref()
            .and_then(|t| store.by_request_id_mut(t))
        {
            let name = op.name.clone();
            store.duplicate_creates += 1;
            (name, None)
        } else {
            let key = format!("{action}\n{}", String::from_utf8_lossy(body));
            let fault = match admit_start(&mut store, &key, &script, &CloudControl, now) {
                Ok(fault) => fault,
                Err(refusal) => return *refusal,
            };
            if let Some(status) = script.start_status {
                store.rejected_creates += 1;
                let (http, code) = error_of_http(status);
                let message = if code == "ThrottlingException" {
                    "Rate exceeded".to_owned()
                } else {
                    format!("rejected by script (HTTP {status})")
                };
                return error(http, code, message);
            }
            store.creates += 1;
            let spec = json!({
                "aws": {"typeName": type_name, "operation": operation, "identifier": identifier},
                "desired": desired,
            });
            let resource = format!("{type_name}/{}", identifier.clone().unwrap_or_default());
            let op = store.insert(move |_| resource, spec, script.clone(), client_token, now);
            // Without a primary identifier in the desired state, the service makes one up.
            if op.spec["aws"]["identifier"].is_null() {
                op.spec["aws"]["identifier"] = format!("sim-{}", &op.uid[..8]).into();
            }
            (op.name.clone(), fault)
        }
    };
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let normal = {
        let store = state.store();
        match store.ops().iter().find(|op| op.name == internal) {
            Some(op) => answer(event_json(op, now)),
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalFailure",
                    "request vanished (reset)",
                );
            }
        }
    };
    match fault {
        Some(fault) => lose(&fault, normal, &CloudControl, now).await,
        None => normal,
    }
}

/// The desired state's primary identifier, as the usual `…Name` / `Id` properties guess it.
fn primary_identifier(desired: &Map<String, Value>) -> Option<String> {
    desired
        .iter()
        .find(|(k, v)| (k.ends_with("Name") || k.as_str() == "Id") && v.is_string())
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
}

/// Why a request token names no request: the JSON 1.0 error code and message.
type NotFound = (&'static str, String);

/// The Cloud Control request with `RequestToken` (the operation's uid): its internal name.
fn find(store: &Store, body: &[u8]) -> Result<String, NotFound> {
    let token = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| text(&b, "RequestToken").map(str::to_owned));
    let Some(token) = token else {
        return Err((
            "ValidationException",
            "1 validation error detected: Value null at 'requestToken' failed to satisfy constraint: Member must not be null".into(),
        ));
    };
    store
        .ops()
        .iter()
        .find(|op| op.uid == token && op.spec.get("aws").is_some())
        .map(|op| op.name.clone())
        .ok_or_else(|| {
            (
                "RequestTokenNotFoundException",
                "A resource operation with the specified request token can't be found.".into(),
            )
        })
}

async fn status(state: &SimState, body: &[u8]) -> Response {
    let found = find(&state.store(), body);
    match found {
        Ok(name) => match faults::serve(state, &name, &name, &CloudControl).await {
            Some(answer) => answer,
            None => CloudControl.not_found(&name),
        },
        Err((code, message)) => error(StatusCode::BAD_REQUEST, code, message),
    }
}

/// How long Cloud Control keeps a request ("Resource operation requests expire after 7 days").
const REQUEST_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// `ListResourceRequests`' default `MaxResults`.
const DEFAULT_MAX_RESULTS: usize = 20;
/// `ResourceRequestStatusFilter.OperationStatuses` values (`OperationStatus`).
const OPERATION_STATUSES: [&str; 6] = [
    "PENDING",
    "IN_PROGRESS",
    "SUCCESS",
    "FAILED",
    "CANCEL_IN_PROGRESS",
    "CANCEL_COMPLETE",
];
/// `ResourceRequestStatusFilter.Operations` values (`Operation`).
const OPERATIONS: [&str; 3] = ["CREATE", "DELETE", "UPDATE"];

/// A `1 validation error detected` refusal.
fn validation(value: &str, member: &str, constraint: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ),
    )
}

/// One member of `ResourceRequestStatusFilter`: its values, each one of `allowed`.
fn filter_values(
    filter: &Value,
    member: &str,
    path: &str,
    allowed: &[&str],
) -> Result<Vec<String>, Box<Response>> {
    let values = match filter.get(member) {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(values)) => values,
        Some(other) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                format!("{member} must be a list, not {other}"),
            )));
        }
    };
    let strings: Vec<String> = values
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    if strings.iter().any(|v| !allowed.contains(&v.as_str())) {
        return Err(Box::new(validation(
            &format!("[{}]", strings.join(", ")),
            path,
            &format!(
                "Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
                allowed.join(", ")
            ),
        )));
    }
    Ok(strings)
}

/// `ListResourceRequests` (see the module documentation).
fn list(state: &SimState, body: &[u8]) -> Response {
    let listed_at = state.now_ms();
    state.store().count_list(listed_at);
    let input = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(input @ Value::Object(_)) => input,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    "the body must be a JSON object",
                );
            }
        }
    };
    let size = match input.get("MaxResults") {
        None | Some(Value::Null) => DEFAULT_MAX_RESULTS,
        Some(n) => match n.as_i64() {
            Some(n @ 1..=100) => n as usize,
            Some(n) if n < 1 => {
                return validation(
                    &n.to_string(),
                    "maxResults",
                    "Member must have value greater than or equal to 1",
                );
            }
            Some(n) => {
                return validation(
                    &n.to_string(),
                    "maxResults",
                    "Member must have value less than or equal to 100",
                );
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    format!("MaxResults must be an integer, not {n}"),
                );
            }
        },
    };
    let filter = input
        .get("ResourceRequestStatusFilter")
        .cloned()
        .unwrap_or(Value::Null);
    let statuses = match filter_values(
        &filter,
        "OperationStatuses",
        "resourceRequestStatusFilter.operationStatuses",
        &OPERATION_STATUSES,
    ) {
        Ok(values) => values,
        Err(refusal) => return *refusal,
    };
    let operations = match filter_values(
        &filter,
        "Operations",
        "resourceRequestStatusFilter.operations",
        &OPERATIONS,
    ) {
        Ok(values) => values,
        Err(refusal) => return *refusal,
    };
    let token = text(&input, "NextToken");
    if let Some(token) = token {
        let shaped = token.len() <= 2048
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '/' | '='));
        if !shaped {
            return validation(
                token,
                "nextToken",
                "Member must satisfy regular expression pattern: [-A-Za-z0-9+/=]+",
            );
        }
    }
    // A token is good for the filter it was issued for only. Cloud Control's tokens match
    // `[-A-Za-z0-9+/=]+`: the shared URL-safe cursor with `_` written as `/`.
    let mut sorted = (statuses.clone(), operations.clone());
    sorted.0.sort();
    sorted.1.sort();
    let list_name = format!("aws/requests?{}&{}", sorted.0.join(","), sorted.1.join(","));
    let now = state.now_ms();
    let cursor = token.map(|t| t.replace('/', "_"));
    let paging = match Paging::resume(&list_name, size, cursor.as_deref(), now) {
        Ok(paging) => paging,
        Err(message) => {
            let why = if message == EXPIRED_TOKEN {
                "The page token has expired; start the list again without NextToken"
            } else {
                "The page token is not valid for this request"
            };
            return error(StatusCode::BAD_REQUEST, "InvalidRequestException", why);
        }
    };
    let store = state.store();
    let matching = store
        .ops()
        .iter()
        .enumerate()
        .skip(paging.start())
        .filter(|(_, op)| op.spec.get("aws").is_some())
        .filter(|(_, op)| now.saturating_sub(op.created_at_ms) <= REQUEST_TTL_MS)
        .map(|(index, op)| {
            let mut event = event_json(op, now);
            if let Some(event) = event.as_object_mut() {
                event.remove("ResourceModel");
            }
            (index, event)
        })
        .filter(|(_, event)| {
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
            (statuses.is_empty() || statuses.contains(&field("OperationStatus")))
                && (operations.is_empty() || operations.contains(&field("Operation")))
        });
    let (summaries, next) = paging.page(matching, now);
    let mut out = Map::new();
    out.insert("ResourceRequestStatusSummaries".into(), summaries.into());
    if !next.is_empty() {
        out.insert("NextToken".into(), next.replace('_', "/").into());
    }
    let mut response = Json(Value::Object(out)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    with_request_id(response)
}

fn cancel(state: &SimState, body: &[u8]) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    let op = match find(&store, body) {
        Ok(name) => match store.get_mut(&name) {
            Some(op) => op,
            None => return CloudControl.not_found(&name),
        },
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, message),
    };
    if op.is_done(now) {
        return error(
            StatusCode::BAD_REQUEST,
            "ConcurrentModificationException",
            "The resource request has already completed and cannot be cancelled",
        );
    }
    op.cancels += 1;
    // Best effort, as upstream: the request may still finish first.
    op.force(Outcome::Cancelled, now + CANCEL_MS);
    answer(event_json(op, now))
}

/// The request's `ProgressEvent` as of `now` (service-2.json `ProgressEvent`).
fn event_json(op: &OpRecord, now: u64) -> Value {
    let aws = &op.spec["aws"];
    let mut out = Map::new();
    out.insert("TypeName".into(), aws["typeName"].clone());
    out.insert("Identifier".into(), aws["identifier"].clone());
    out.insert("RequestToken".into(), op.uid.clone().into());
    out.insert("Operation".into(), aws["operation"].clone());
    let elapsed = now.saturating_sub(op.created_at_ms);
    let pending_until = op
        .created_at_ms
        .saturating_add(op.script.duration_ms() / 10);
    let (status, since) = if !op.is_done(now) {
        if op.cancels > 0 {
            ("CANCEL_IN_PROGRESS", op.created_at_ms)
        } else if elapsed < op.script.duration_ms() / 10 {
            ("PENDING", op.created_at_ms)
        } else {
            ("IN_PROGRESS", pending_until)
        }
    } else {
        let status = match op.outcome() {
            Outcome::Success => {
                if aws["operation"] != "DELETE" {
                    let mut model = op.spec["desired"].as_object().cloned().unwrap_or_default();
                    model.insert(
                        "Arn".into(),
                        format!(
                            "arn:aws:cloudcontrol:us-east-1:123456789012:{}/{}",
                            aws["typeName"]
                                .as_str()
                                .unwrap_or_default()
                                .replace("::", ":"),
                            aws["identifier"].as_str().unwrap_or_default()
                        )
                        .into(),
                    );
                    out.insert(
                        "ResourceModel".into(),
                        Value::Object(model).to_string().into(),
                    );
                }
                "SUCCESS"
            }
            Outcome::Error => {
                let code = op
                    .script
                    .error_reason
                    .as_deref()
                    .filter(|r| HANDLER_ERROR_CODES.contains(r))
                    .unwrap_or_else(|| error_code(op.script.error_code));
                out.insert("ErrorCode".into(), code.into());
                out.insert(
                    "StatusMessage".into(),
                    op.script.error_message.clone().into(),
                );
                "FAILED"
            }
            Outcome::Cancelled => "CANCEL_COMPLETE",
        };
        (status, op.done_at_ms())
    };
    out.insert("EventTime".into(), json!(since as f64 / 1000.0));
    out.insert("OperationStatus".into(), status.into());
    Value::Object(out)
}

/// The Cloud Control handler error code of a scripted `google.rpc.Code`.
fn error_code(rpc: i32) -> &'static str {
    match rpc {
        3 => "InvalidRequest",
        4 => "ServiceTimeout",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "AccessDenied",
        8 => "ServiceLimitExceeded",
        9 => "NotUpdatable",
        10 => "ResourceConflict",
        14 => "NetworkFailure",
        16 => "InvalidCredentials",
        13 => "InternalFailure",
        _ => "GeneralServiceException",
    }
}

/// The Cloud Control dialect against this surface, in process.
#[cfg(test)]
mod contract {
    use std::time::Duration;

    use serde_json::json;

    use super::super::{SimState, router};
    use lro_operator::api::{ListSpec, OperationHandle, Protocol, StartRequest};
    use lro_operator::protocol::{
        CancelOutcome, HttpAnswer, ListOutcome, Observation, PollOutcome, StartOutcome, Started,
        UpstreamState, dialect,
    };
    use lro_operator::upstream::Upstream;

    async fn serve() -> (String, SimState) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        (format!("http://{addr}/aws"), state)
    }

    fn upstream() -> Upstream {
        Upstream::new(Duration::from_secs(10), 1 << 20).unwrap()
    }

    async fn start(base: &str, seconds: f64, id: &str) -> Started {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/",
            "body": {"TypeName": "AWS::Logs::LogGroup",
                     "DesiredState": {"LogGroupName": "lg-1", "RetentionInDays": 7},
                     "simulate": {"durationSeconds": seconds}}
        }))
        .unwrap();
        let d = dialect(Protocol::AwsCloudControl);
        let request = d.start_request(&start, id);
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_start(&request, &answer) {
            StartOutcome::Started(started) => *started,
            other => panic!("{other:?}"),
        }
    }

    async fn poll(base: &str, handle: &OperationHandle) -> PollOutcome {
        let d = dialect(Protocol::AwsCloudControl);
        let request = d.poll_request(handle).unwrap();
        let answer = upstream().send(base, &request).await.unwrap();
        d.read_poll(handle, &answer)
    }

    async fn observe(base: &str, handle: &OperationHandle) -> Observation {
        match poll(base, handle).await {
            PollOutcome::Observed(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn create_is_idempotent_by_client_token_and_ends_with_the_model() {
        let (base, state) = serve().await;
        let first = start(&base, 0.3, "token-1").await;
        assert_eq!(first.observation.state, UpstreamState::Pending);
        assert_eq!(first.observation.resource_id.as_deref(), Some("lg-1"));
        let again = start(&base, 0.3, "token-1").await;
        assert_eq!(again.handle, first.handle);
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(1), json!(1))
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let done = observe(&base, &first.handle).await;
        assert_eq!(done.state, UpstreamState::Succeeded);
        let model = done.result.unwrap();
        assert_eq!(model["LogGroupName"], "lg-1");
        assert_eq!(model["RetentionInDays"], 7);
    }

    #[tokio::test]
    async fn cancel_goes_through_cancel_in_progress_to_cancel_complete() {
        let (base, _state) = serve().await;
        let d = dialect(Protocol::AwsCloudControl);
        let s = start(&base, 30.0, "token-2").await;
        let request = d.cancel_request(&s.handle).unwrap();
        let answer = upstream().send(&base, &request).await.unwrap();
        assert_eq!(d.read_cancel(&answer), CancelOutcome::Accepted);
        let cancelling = observe(&base, &s.handle).await;
        assert_eq!(cancelling.state, UpstreamState::Running);
        assert_eq!(
            cancelling.upstream_state.as_deref(),
            Some("CANCEL_IN_PROGRESS")
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let cancelled = observe(&base, &s.handle).await;
        assert_eq!(cancelled.state, UpstreamState::Cancelled);
        // A finished request cannot be cancelled again.
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(d.read_cancel(&answer), CancelOutcome::Refused(_)));
    }

    #[tokio::test]
    async fn an_unknown_token_is_not_found_and_json_1_0_is_required() {
        let (base, _state) = serve().await;
        let handle = OperationHandle {
            id: Some("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            poll(&base, &handle).await,
            PollOutcome::Failed {
                not_found: true,
                ..
            }
        ));
        let answer = reqwest::Client::new()
            .post(format!("{base}/"))
            .header("X-Amz-Target", "CloudApiService.GetResourceRequestStatus")
            .json(&json!({"RequestToken": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
    }

    /// A raw JSON 1.0 call.
    async fn call(base: &str, action: &str, body: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{base}/"))
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", format!("CloudApiService.{action}"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn create_body(simulate: serde_json::Value, token: &str) -> serde_json::Value {
        json!({"TypeName": "AWS::Logs::LogGroup", "ClientToken": token,
               "DesiredState": "{\"LogGroupName\":\"lg-1\"}", "simulate": simulate})
    }

    /// Throttling is answered as AWS JSON 1.0 services answer it: 400 ThrottlingException.
    /// Not processed: nothing is created, and the operator resends after the wait.
    #[tokio::test]
    async fn a_throttled_start_is_a_400_throttling_exception_and_creates_nothing() {
        let (base, state) = serve().await;
        let simulate = json!({"durationSeconds": 30,
            "startFaults": [{"kind": "status", "status": 429, "message": "Rate exceeded"}]});
        let answer = call(
            &base,
            "CreateResource",
            create_body(simulate.clone(), "t-1"),
        )
        .await;
        assert_eq!(answer.status(), 400);
        assert_eq!(
            answer.headers()["x-amzn-errortype"],
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"
        );
        assert!(answer.headers().contains_key("x-amzn-requestid"));
        assert_eq!(
            answer.headers()["content-type"],
            "application/x-amz-json-1.0"
        );
        assert_eq!(
            answer.json::<serde_json::Value>().await.unwrap(),
            json!({"__type": "com.amazon.coral.availability#ThrottlingException", "message": "Rate exceeded"})
        );
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["rejectedCreates"].clone()),
            (json!(0), json!(1))
        );
        // The operator's reading: deferred; the resend is processed.
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/",
            "body": {"TypeName": "AWS::Logs::LogGroup", "DesiredState": {"LogGroupName": "lg-2"},
                     "simulate": {"startFaults": [{"kind": "status", "status": 429}]}},
        }))
        .unwrap();
        let d = dialect(Protocol::AwsCloudControl);
        let request = d.start_request(&start, "t-2");
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(
            d.read_start(&request, &answer),
            StartOutcome::Deferred(_)
        ));
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(
            d.read_start(&request, &answer),
            StartOutcome::Started(_)
        ));
    }

    /// A reset loses the answer of a start that was processed: the same ClientToken finds it.
    #[tokio::test]
    async fn a_lost_start_answer_is_found_again_by_its_client_token() {
        let (base, state) = serve().await;
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/",
            "body": {"TypeName": "AWS::Logs::LogGroup", "DesiredState": {"LogGroupName": "lg-1"},
                     "simulate": {"durationSeconds": 30, "startFaults": [{"kind": "reset"}]}},
        }))
        .unwrap();
        let d = dialect(Protocol::AwsCloudControl);
        let request = d.start_request(&start, "t-1");
        assert!(upstream().send(&base, &request).await.is_err());
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(
            d.read_start(&request, &answer),
            StartOutcome::Started(_)
        ));
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(1), json!(1))
        );
    }

    /// A FAILED ProgressEvent: a `HandlerErrorCode` and the scripted `StatusMessage`.
    #[tokio::test]
    async fn a_failure_has_a_handler_error_code_and_status_message() {
        let (base, _state) = serve().await;
        for (simulate, code, canonical) in [
            (
                json!({"durationSeconds": 0, "outcome": "error", "errorCode": 6,
                    "errorMessage": "Resource of type 'AWS::Logs::LogGroup' with identifier 'lg-1' already exists."}),
                "AlreadyExists",
                "ALREADY_EXISTS",
            ),
            (
                json!({"durationSeconds": 0, "outcome": "error", "errorReason": "NotStabilized",
                    "errorMessage": "Resource of type 'AWS::Logs::LogGroup' with identifier 'lg-1' did not stabilize."}),
                "NotStabilized",
                "",
            ),
        ] {
            let token = format!("t-{code}");
            let created: serde_json::Value = call(
                &base,
                "CreateResource",
                create_body(simulate.clone(), &token),
            )
            .await
            .json()
            .await
            .unwrap();
            let event = &created["ProgressEvent"];
            assert_eq!(event["OperationStatus"], "FAILED");
            assert_eq!(event["ErrorCode"], code);
            assert_eq!(event["StatusMessage"], simulate["errorMessage"]);
            assert!(event["EventTime"].is_f64());
            let handle = OperationHandle {
                id: event["RequestToken"].as_str().map(str::to_owned),
                ..Default::default()
            };
            let observed = observe(&base, &handle).await;
            assert_eq!(observed.state, UpstreamState::Failed);
            let error = observed.error.unwrap();
            assert_eq!(error.provider_code.as_deref(), Some(code));
            assert_eq!(
                Some(error.message.as_str()),
                simulate["errorMessage"].as_str()
            );
            if !canonical.is_empty() {
                assert_eq!(error.code, canonical);
            }
        }
    }

    /// GET faults on GetResourceRequestStatus, in JSON 1.0 errors: throttling is not "not found",
    /// a missing request is.
    #[tokio::test]
    async fn status_faults_are_json_1_0_errors() {
        let (base, _state) = serve().await;
        let simulate = json!({"durationSeconds": 30, "faults": [
            {"kind": "status", "status": 429}, {"kind": "status", "status": 503},
            {"kind": "notFound"}, {"kind": "status", "status": 500}]});
        let created: serde_json::Value =
            call(&base, "CreateResource", create_body(simulate, "t-1"))
                .await
                .json()
                .await
                .unwrap();
        let token = created["ProgressEvent"]["RequestToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let handle = OperationHandle {
            id: Some(token.clone()),
            ..Default::default()
        };
        let throttled = call(
            &base,
            "GetResourceRequestStatus",
            json!({"RequestToken": token}),
        )
        .await;
        assert_eq!(throttled.status(), 400);
        assert_eq!(
            throttled.json::<serde_json::Value>().await.unwrap()["__type"],
            "com.amazon.coral.availability#ThrottlingException"
        );
        let unavailable = call(
            &base,
            "GetResourceRequestStatus",
            json!({"RequestToken": token}),
        )
        .await;
        assert_eq!(unavailable.status(), 503);
        assert_eq!(
            unavailable.json::<serde_json::Value>().await.unwrap()["__type"],
            "com.amazon.coral.service#ServiceUnavailable"
        );
        assert!(matches!(
            poll(&base, &handle).await,
            PollOutcome::Failed {
                not_found: true,
                ..
            }
        ));
        let internal = call(
            &base,
            "GetResourceRequestStatus",
            json!({"RequestToken": token}),
        )
        .await;
        assert_eq!(internal.status(), 500);
        assert_eq!(
            internal.json::<serde_json::Value>().await.unwrap()["__type"],
            "com.amazon.coral.service#InternalFailure"
        );
        assert_eq!(observe(&base, &handle).await.state, UpstreamState::Pending);
        let unknown = call(
            &base,
            "GetResourceRequestStatus",
            json!({"RequestToken": "nope"}),
        )
        .await;
        assert_eq!(unknown.status(), 400);
        assert_eq!(
            unknown.json::<serde_json::Value>().await.unwrap(),
            json!({"__type": "com.amazonaws.cloudcontrol#RequestTokenNotFoundException",
                   "Message": "A resource operation with the specified request token can't be found."})
        );
    }

    /// Every page of `list` as the dialect reads it: the keys, page by page.
    async fn sweep(base: &str, list: &ListSpec) -> Vec<Vec<String>> {
        let d = dialect(Protocol::AwsCloudControl);
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = d.list_request(list, token.as_deref()).unwrap();
            let answer = upstream().send(base, &request).await.unwrap();
            let ListOutcome::Page(page) = d.read_list(&answer) else {
                panic!("{}", String::from_utf8_lossy(&answer.body));
            };
            pages.push(page.entries.into_iter().map(|(k, _)| k).collect());
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return pages,
            }
        }
    }

    fn list(statuses: Option<&str>, page_size: u16) -> ListSpec {
        ListSpec {
            path: None,
            query: statuses
                .map(|s| [("OperationStatuses".to_owned(), s.to_owned())].into())
                .unwrap_or_default(),
            page_size: Some(page_size),
        }
    }

    #[tokio::test]
    async fn list_resource_requests_pages_and_filters_by_status() {
        let (base, state) = serve().await;
        let mut running = Vec::new();
        for i in 0..5 {
            let started = start(&base, 3600.0, &format!("run-{i}")).await;
            running.push(started.handle.id.unwrap());
        }
        let done = start(&base, 0.0, "done").await.handle.id.unwrap();
        // The running ones, two a page: three pages.
        let pages = sweep(&base, &list(Some("PENDING,IN_PROGRESS"), 2)).await;
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert_eq!(pages.concat(), running);
        // The finished create: listed without its ResourceModel, so the dialect leaves it out
        // (it is read by itself, for the model).
        let pages = sweep(&base, &list(Some("SUCCESS"), 100)).await;
        assert_eq!(pages.concat(), Vec::<String>::new());
        let raw: serde_json::Value = call(
            &base,
            "ListResourceRequests",
            json!({"ResourceRequestStatusFilter": {"OperationStatuses": ["SUCCESS"]}}),
        )
        .await
        .json()
        .await
        .unwrap();
        let summaries = raw["ResourceRequestStatusSummaries"].as_array().unwrap();
        assert_eq!(summaries.len(), 1, "{raw}");
        assert_eq!(summaries[0]["RequestToken"], done.as_str());
        assert_eq!(summaries[0]["OperationStatus"], "SUCCESS");
        assert!(summaries[0].get("ResourceModel").is_none(), "{raw}");
        assert!(raw.get("NextToken").is_none(), "{raw}");
        // No filter and no MaxResults: all of them, 20 a page.
        let raw: serde_json::Value = call(&base, "ListResourceRequests", json!({}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            raw["ResourceRequestStatusSummaries"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
        // Operations filters too.
        let raw: serde_json::Value = call(
            &base,
            "ListResourceRequests",
            json!({"ResourceRequestStatusFilter": {"Operations": ["DELETE"]}}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(raw["ResourceRequestStatusSummaries"], json!([]));
        // Requests expire after 7 days: an older one is not listed.
        {
            let now = state.now_ms();
            let mut store = state.store();
            let old = store.insert(
                |_| "AWS::Logs::LogGroup/old".into(),
                json!({"aws": {"typeName": "AWS::Logs::LogGroup", "operation": "CREATE", "identifier": "old"}}),
                crate::script::Script::default(),
                None,
                now - super::REQUEST_TTL_MS - 1000,
            );
            assert!(!old.uid.is_empty());
        }
        let raw: serde_json::Value = call(&base, "ListResourceRequests", json!({}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            raw["ResourceRequestStatusSummaries"]
                .as_array()
                .unwrap()
                .len(),
            6,
            "{raw}"
        );
        // (The finished create is left out by the dialect, as above.)
        let pages = sweep(&base, &list(None, 100)).await;
        assert_eq!(pages.concat(), running);
        // Counted as lists, not GETs.
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(stats["lists"], 3 + 1 + 1 + 1 + 1 + 1 + 1);
        for op in stats["operations"].as_object().unwrap().values() {
            assert_eq!(op["gets"], 0, "{op}");
        }
    }

    #[tokio::test]
    async fn bad_list_requests_are_json_1_0_errors() {
        let (base, state) = serve().await;
        start(&base, 3600.0, "run").await;
        let stale = super::super::paging::encode_token(
            "aws/requests?&",
            0,
            state.now_ms() - super::super::paging::TOKEN_TTL_MS - 1,
        )
        .replace('_', "/");
        let other_filter =
            super::super::paging::encode_token("aws/requests?FAILED&", 0, state.now_ms())
                .replace('_', "/");
        for (body, code, message) in [
            (
                json!({"MaxResults": 101}),
                "ValidationException",
                "Member must have value less than or equal to 100",
            ),
            (
                json!({"MaxResults": 0}),
                "ValidationException",
                "greater than or equal to 1",
            ),
            (
                json!({"ResourceRequestStatusFilter": {"OperationStatuses": ["DONE"]}}),
                "ValidationException",
                "enum value set",
            ),
            (
                json!({"NextToken": "a_b"}),
                "ValidationException",
                "regular expression pattern",
            ),
            (
                json!({"NextToken": stale}),
                "InvalidRequestException",
                "expired",
            ),
            (
                json!({"NextToken": other_filter}),
                "InvalidRequestException",
                "not valid",
            ),
        ] {
            let raw = call(&base, "ListResourceRequests", body.clone()).await;
            let answer = HttpAnswer {
                status: raw.status().as_u16(),
                headers: vec![],
                body: raw.bytes().await.unwrap().to_vec(),
            };
            let error: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(answer.status, 400, "{body}: {error}");
            assert!(
                error["__type"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("#{code}")),
                "{body}: {error}"
            );
            let text = error["message"]
                .as_str()
                .or(error["Message"].as_str())
                .unwrap();
            assert!(text.contains(message), "{body}: {error}");
            assert!(
                matches!(
                    dialect(Protocol::AwsCloudControl).read_list(&answer),
                    ListOutcome::Refused(_)
                ),
                "{body}"
            );
        }
    }
}
