//! The AWS Cloud Control API surface under `/aws` (JSON 1.0: `POST /aws/` with
//! `X-Amz-Target: CloudApiService.<Action>` and `Content-Type: application/x-amz-json-1.0`;
//! requests are not signed).
//!
//! * `CreateResource` (`TypeName`, `DesiredState` as a JSON string, `ClientToken`),
//!   `UpdateResource` (`TypeName`, `Identifier`, `PatchDocument`) and `DeleteResource`
//!   (`TypeName`, `Identifier`) start a request and answer its `ProgressEvent`; a `ClientToken`
//!   seen before answers the same request (idempotency). The script is the body's `simulate`.
//! * `GetResourceRequestStatus` (`RequestToken`): `PENDING` for the first tenth of the duration,
//!   `IN_PROGRESS`, then `SUCCESS` (with the `ResourceModel`), `FAILED` (`ErrorCode`,
//!   `StatusMessage`) or `CANCEL_COMPLETE`.
//! * `CancelResourceRequest` (`RequestToken`): `CANCEL_IN_PROGRESS` for a second, then
//!   `CANCEL_COMPLETE` (unless the request finishes first); a finished request answers
//!   `ConcurrentModificationException`.
//!
//! Errors are JSON 1.0 errors (`{"__type": "…#NameException", "message"}`, HTTP 400 or 500).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// How long a cancelled request reads `CANCEL_IN_PROGRESS`.
const CANCEL_MS: u64 = 1000;

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
        Some("GetResourceRequestStatus") => status(&state, &body),
        Some("CancelResourceRequest") => cancel(&state, &body),
        _ => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("unknown operation {target:?}"),
        ),
    }
}

/// A JSON 1.0 error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"__type": format!("com.amazonaws.cloudcontrol#{code}"), "message": message.into()});
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = CONTENT_TYPE.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn answer(event: Value) -> Response {
    let mut response = Json(json!({ "ProgressEvent": event })).into_response();
    if let Ok(value) = CONTENT_TYPE.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
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
            "TypeName is required",
        );
    };
    let (operation, desired, identifier) = match action {
        "CreateResource" => {
            let Some(desired) = text(&input, "DesiredState") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "DesiredState is required",
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
                    "Identifier is required",
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
    let internal = {
        let mut store = state.store();
        if let Some(op) = client_token
            .as_deref()
            .and_then(|t| store.by_request_id_mut(t))
        {
            let name = op.name.clone();
            store.duplicate_creates += 1;
            name
        } else {
            if let Some(status) = script.start_status {
                store.rejected_creates += 1;
                let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let code = match status {
                    409 => "AlreadyExistsException",
                    429 => "ThrottlingException",
                    403 => "AccessDeniedException",
                    s if s >= 500 => "ServiceInternalErrorException",
                    _ => "InvalidRequestException",
                };
                // JSON 1.0 client errors are HTTP 400 (throttling included).
                let http = if http.is_client_error() {
                    StatusCode::BAD_REQUEST
                } else {
                    http
                };
                return error(http, code, format!("rejected by script (HTTP {status})"));
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
            op.name.clone()
        }
    };
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let store = state.store();
    match store.ops().iter().find(|op| op.name == internal) {
        Some(op) => answer(event_json(op, now)),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceInternalErrorException",
            "request vanished (reset)",
        ),
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

/// The Cloud Control request with `RequestToken` (the operation's uid).
fn find<'a>(store: &'a mut Store, body: &[u8]) -> Result<&'a mut OpRecord, NotFound> {
    let token = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| text(&b, "RequestToken").map(str::to_owned));
    let Some(token) = token else {
        return Err(("ValidationException", "RequestToken is required".into()));
    };
    let name = store
        .ops()
        .iter()
        .find(|op| op.uid == token && op.spec.get("aws").is_some())
        .map(|op| op.name.clone());
    name.and_then(|n| store.get_mut(&n)).ok_or_else(|| {
        (
            "RequestTokenNotFoundException",
            format!("Request with token {token} was not found"),
        )
    })
}

fn status(state: &SimState, body: &[u8]) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    match find(&mut store, body) {
        Ok(op) => {
            op.record_get(now);
            answer(event_json(op, now))
        }
        Err((code, message)) => error(StatusCode::BAD_REQUEST, code, message),
    }
}

fn cancel(state: &SimState, body: &[u8]) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    let op = match find(&mut store, body) {
        Ok(op) => op,
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

/// The request's `ProgressEvent` as of `now`.
fn event_json(op: &OpRecord, now: u64) -> Value {
    let aws = &op.spec["aws"];
    let mut out = Map::new();
    out.insert("TypeName".into(), aws["typeName"].clone());
    out.insert("Identifier".into(), aws["identifier"].clone());
    out.insert("RequestToken".into(), op.uid.clone().into());
    out.insert("Operation".into(), aws["operation"].clone());
    out.insert("EventTime".into(), json!(op.created_at_ms as f64 / 1000.0));
    let elapsed = now.saturating_sub(op.created_at_ms);
    let status = if !op.is_done(now) {
        if op.cancels > 0 {
            "CANCEL_IN_PROGRESS"
        } else if elapsed < op.script.duration_ms() / 10 {
            "PENDING"
        } else {
            "IN_PROGRESS"
        }
    } else {
        match op.outcome() {
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
                out.insert("ErrorCode".into(), error_code(op.script.error_code).into());
                out.insert(
                    "StatusMessage".into(),
                    op.script.error_message.clone().into(),
                );
                "FAILED"
            }
            Outcome::Cancelled => "CANCEL_COMPLETE",
        }
    };
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
    use lro_operator::api::{OperationHandle, Protocol, StartRequest};
    use lro_operator::protocol::{
        CancelOutcome, Observation, PollOutcome, StartOutcome, Started, UpstreamState, dialect,
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
}
