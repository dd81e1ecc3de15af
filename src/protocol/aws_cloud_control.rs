//! AWS Cloud Control API (JSON 1.0 protocol): every call is a `POST` to the endpoint root with
//! `X-Amz-Target: CloudApiService.<Action>` and `Content-Type: application/x-amz-json-1.0`.
//!
//! The start is `CreateResource` by default; a start header `X-Amz-Target` of
//! `CloudApiService.UpdateResource` / `DeleteResource` (or just `UpdateResource`…) picks another
//! action. The user's `start.body` holds the action's input (`TypeName`, `DesiredState`,
//! `Identifier`, `PatchDocument`, `RoleArn`…); `DesiredState` and `PatchDocument` may be written
//! as JSON objects, and are sent as the JSON strings the API wants. `ClientToken` is the request
//! id (the idempotency key) unless the body sets one. Polls are `GetResourceRequestStatus` and
//! the cancel is `CancelResourceRequest`, both by the `RequestToken` (the handle's `id`).
//!
//! `ProgressEvent.OperationStatus`: `PENDING` is pending; `IN_PROGRESS` and
//! `CANCEL_IN_PROGRESS` (and any new word) are running; `SUCCESS` succeeds with the parsed
//! `ResourceModel` as the result; `FAILED` fails with `ErrorCode` verbatim as the provider code
//! and `StatusMessage` as the message; `CANCEL_COMPLETE` is cancelled. `Identifier` is the
//! resource id. There is no progress. Throttling errors (`ThrottlingException`, …, answered with
//! HTTP 400) are transient, never a refusal; a throttled start was not processed and is resent.
//! Requests are SigV4-signed when the provider has `auth.awsSigV4`.

use serde_json::{Map, Value, json};

use super::error_details::{bound, detail};
use super::{
    Dialect, HttpAnswer, Observation, ParseError, RequestSpec, Started, UpstreamState,
    rpc_code_for_http,
};
use crate::api::{ErrorDetail, OperationError, OperationHandle, StartRequest};

/// The AWS Cloud Control dialect.
pub struct AwsCloudControl;

/// The JSON 1.0 content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The service's target prefix.
const SERVICE: &str = "CloudApiService";
/// The start action when the user names none.
const DEFAULT_ACTION: &str = "CreateResource";
/// Error codes that mean "slow down" (the SDK retryer's throttling list).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

impl Dialect for AwsCloudControl {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        true
    }

    fn can_cancel(&self) -> bool {
        true
    }

    fn start_request(&self, start: &StartRequest, request_id: &str) -> RequestSpec {
        let target = start
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_ACTION);
        let target = if target.contains('.') {
            target.to_owned()
        } else {
            format!("{SERVICE}.{target}")
        };
        let mut body = match &start.body {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        for field in ["DesiredState", "PatchDocument"] {
            if let Some(value) = body.get_mut(field)
                && !value.is_string()
                && !value.is_null()
            {
                *value = Value::String(value.to_string());
            }
        }
        body.entry("ClientToken")
            .or_insert_with(|| Value::String(request_id.to_owned()));
        let mut request = RequestSpec::from_start(start);
        request.headers.retain(|(k, _)| {
            !k.eq_ignore_ascii_case("x-amz-target") && !k.eq_ignore_ascii_case("content-type")
        });
        request.method = reqwest::Method::POST;
        request.headers.extend(headers(&target));
        request.body = Some(Value::Object(body));
        request
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        let token = token_of(handle).ok_or_else(|| {
            ParseError::Shape(
                "a Cloud Control request is polled by its RequestToken; set spec.operation.id"
                    .into(),
            )
        })?;
        Ok(call("GetResourceRequestStatus", token))
    }

    fn cancel_request(&self, handle: &OperationHandle) -> Option<RequestSpec> {
        Some(call("CancelResourceRequest", token_of(handle)?))
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let body = answer.json()?;
        let event = event_of(&body)?;
        let token = event
            .get("RequestToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ParseError::Shape("the ProgressEvent has no `RequestToken`".into()))?;
        Ok(Started {
            handle: OperationHandle {
                id: Some(token.to_owned()),
                ..OperationHandle::default()
            },
            observation: observe(event),
        })
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        let body = answer.json()?;
        Ok(observe(event_of(&body)?))
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        let body = answer.json().ok();
        let code = error_code(answer, body.as_ref());
        let message = body
            .as_ref()
            .and_then(|b| b.get("message").or_else(|| b.get("Message")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        OperationError {
            code: code
                .as_deref()
                .map(code_for)
                .filter(|c| *c != "UNKNOWN")
                .unwrap_or_else(|| rpc_code_for_http(answer.status))
                .to_owned(),
            details: vec![ErrorDetail {
                reason: code.clone(),
                message: Some(message.clone()),
                ..detail("Error")
            }],
            provider_code: code,
            http_status: Some(i32::from(answer.status)),
            message,
        }
    }

    fn is_transient(&self, error: &OperationError) -> bool {
        throttled(error)
    }

    fn is_throttled(&self, error: &OperationError) -> bool {
        throttled(error)
    }

    /// `ProgressEvent.RetryAfter` ("when to next request the status", epoch seconds) as well
    /// as the `Retry-After` headers.
    fn retry_hint(
        &self,
        answer: &HttpAnswer,
        now: std::time::SystemTime,
    ) -> Option<std::time::Duration> {
        if let Some(hint) = super::retry_after(answer, now) {
            return Some(hint);
        }
        let body = answer.json().ok()?;
        let at = event_of(&body).ok()?.get("RetryAfter")?;
        let secs = at.as_f64().or_else(|| {
            at.as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond() as f64 / 1000.0)
        })?;
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        (secs.is_finite() && secs > now).then(|| std::time::Duration::from_secs_f64(secs - now))
    }

    fn is_not_found(&self, status: u16, error: &OperationError) -> bool {
        matches!(status, 404 | 410)
            || error.provider_code.as_deref() == Some("RequestTokenNotFoundException")
    }

    fn error_text(&self, error: &OperationError) -> String {
        error_text(error)
    }
}

/// The JSON 1.0 headers for `target`.
fn headers(target: &str) -> [(String, String); 2] {
    [
        ("X-Amz-Target".into(), target.to_owned()),
        ("Content-Type".into(), CONTENT_TYPE.into()),
    ]
}

/// A call by request token to the endpoint root.
fn call(action: &str, token: &str) -> RequestSpec {
    RequestSpec {
        method: reqwest::Method::POST,
        path: String::new(),
        query: vec![],
        headers: headers(&format!("{SERVICE}.{action}")).to_vec(),
        body: Some(json!({ "RequestToken": token })),
    }
}

fn token_of(handle: &OperationHandle) -> Option<&str> {
    handle
        .id
        .as_deref()
        .or(handle.name.as_deref())
        .filter(|t| !t.is_empty())
}

fn event_of(body: &Value) -> Result<&Value, ParseError> {
    body.get("ProgressEvent")
        .filter(|e| e.is_object())
        .ok_or_else(|| ParseError::Shape("the answer has no `ProgressEvent` object".into()))
}

fn observe(event: &Value) -> Observation {
    let text = |field: &str| {
        event
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let status = text("OperationStatus");
    let mut observation = Observation {
        state: UpstreamState::Running,
        upstream_state: Some(status.clone().unwrap_or_else(|| "UNKNOWN".into())),
        resource_id: text("Identifier"),
        ..Observation::default()
    };
    match status.as_deref() {
        Some("PENDING") => observation.state = UpstreamState::Pending,
        Some("SUCCESS") => {
            observation.state = UpstreamState::Succeeded;
            // ResourceModel is a JSON document in a string.
            observation.result = text("ResourceModel")
                .map(|model| serde_json::from_str(&model).unwrap_or(Value::String(model)));
        }
        Some("FAILED") => {
            observation.state = UpstreamState::Failed;
            let provider_code = text("ErrorCode");
            let message =
                text("StatusMessage").unwrap_or_else(|| "the resource operation failed".into());
            let mut details = vec![ErrorDetail {
                reason: provider_code.clone(),
                message: Some(message.clone()),
                ..detail("Error")
            }];
            bound(&mut details);
            observation.error = Some(OperationError {
                code: provider_code
                    .as_deref()
                    .map_or("UNKNOWN", code_for)
                    .to_owned(),
                provider_code,
                http_status: None,
                message,
                details,
            });
        }
        Some("CANCEL_COMPLETE") => {
            observation.state = UpstreamState::Cancelled;
            observation.error = Some(OperationError {
                code: "CANCELLED".into(),
                provider_code: text("ErrorCode"),
                http_status: None,
                message: text("StatusMessage")
                    .unwrap_or_else(|| "the resource operation request was cancelled".into()),
                details: vec![],
            });
        }
        Some("CANCEL_IN_PROGRESS") => {
            observation.message =
                Some(text("StatusMessage").unwrap_or_else(|| "cancel in progress upstream".into()));
        }
        // IN_PROGRESS, or a new word: keep polling.
        _ => observation.message = text("StatusMessage"),
    }
    observation
}

/// The error code of a JSON 1.0 error answer: `__type` (after any `#`, before any `:`), else
/// `code`, else the `x-amzn-ErrorType` header.
fn error_code(answer: &HttpAnswer, body: Option<&Value>) -> Option<String> {
    let raw = body
        .and_then(|b| {
            ["__type", "code", "Code"]
                .iter()
                .find_map(|k| b.get(*k).and_then(Value::as_str))
        })
        .or_else(|| answer.header("x-amzn-errortype"))?;
    let code = raw.rsplit('#').next().unwrap_or(raw);
    let code = code.split(':').next().unwrap_or(code).trim();
    (!code.is_empty()).then(|| code.to_owned())
}

fn throttled(error: &OperationError) -> bool {
    error
        .provider_code
        .as_deref()
        .is_some_and(|c| THROTTLING.contains(&c))
}

fn error_text(error: &OperationError) -> String {
    match &error.provider_code {
        Some(code) => format!("{code}: {}", error.message),
        None => error.message.clone(),
    }
}

/// The `google.rpc.Code` name of a Cloud Control handler error code or API exception.
fn code_for(code: &str) -> &'static str {
    let bare = code.strip_suffix("Exception").unwrap_or(code);
    match bare {
        "NotUpdatable" => "FAILED_PRECONDITION",
        // "The specified resource doesn't support this resource operation" (HTTP 405).
        "UnsupportedAction" => "UNIMPLEMENTED",
        "InvalidRequest" | "Validation" => "INVALID_ARGUMENT",
        // "No valid response from the resource handler, due to a configuration error".
        "PrivateType" => "INTERNAL",
        "AccessDenied" | "UnauthorizedTaggingOperation" => "PERMISSION_DENIED",
        "InvalidCredentials" => "UNAUTHENTICATED",
        "AlreadyExists" | "ClientTokenConflict" => "ALREADY_EXISTS",
        "NotFound" | "ResourceNotFound" | "RequestTokenNotFound" | "TypeNotFound" => "NOT_FOUND",
        "ResourceConflict" | "ConcurrentOperation" | "ConcurrentModification" => "ABORTED",
        "Throttling" | "ServiceLimitExceeded" => "RESOURCE_EXHAUSTED",
        "ServiceTimeout" => "DEADLINE_EXCEEDED",
        "NetworkFailure" => "UNAVAILABLE",
        "ServiceInternalError" | "InternalFailure" | "HandlerInternalFailure" => "INTERNAL",
        // NotStabilized, GeneralServiceException, and anything new: the code says it verbatim.
        _ if THROTTLING.contains(&code) => "RESOURCE_EXHAUSTED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CancelOutcome, PollOutcome, StartOutcome};

    const TOKEN: &str = "758f4a4e-fef4-491a-9b07-00123456789";

    fn answer(status: u16, body: Value) -> HttpAnswer {
        HttpAnswer {
            status,
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    /// The ProgressEvent of the Cloud Control user guide's `create-resource` example.
    fn event(status: &str) -> Value {
        json!({"ProgressEvent": {
            "EventTime": 1.632675644638E9,
            "TypeName": "AWS::Logs::LogGroup",
            "OperationStatus": status,
            "Operation": "CREATE",
            "Identifier": "CloudControlExample",
            "RequestToken": TOKEN
        }})
    }

    fn with(mut body: Value, fields: Value) -> Value {
        for (k, v) in fields.as_object().unwrap() {
            body["ProgressEvent"][k] = v.clone();
        }
        body
    }

    fn poll(body: Value) -> Observation {
        AwsCloudControl.parse_operation(&answer(200, body)).unwrap()
    }

    fn handle() -> OperationHandle {
        OperationHandle {
            id: Some(TOKEN.into()),
            ..OperationHandle::default()
        }
    }

    fn header<'a>(request: &'a RequestSpec, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn create_resource_is_the_default_with_client_token_and_a_string_desired_state() {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/",
            "body": {"TypeName": "AWS::Logs::LogGroup",
                     "DesiredState": {"LogGroupName": "CloudControlExample", "RetentionInDays": 90}}
        }))
        .unwrap();
        assert!(AwsCloudControl.idempotent_start(&start));
        let request = AwsCloudControl.start_request(&start, "uid-1");
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(request.path, "/");
        assert_eq!(
            header(&request, "x-amz-target"),
            Some("CloudApiService.CreateResource")
        );
        assert_eq!(
            header(&request, "content-type"),
            Some("application/x-amz-json-1.0")
        );
        let body = request.body.unwrap();
        assert_eq!(body["ClientToken"], "uid-1");
        assert_eq!(body["TypeName"], "AWS::Logs::LogGroup");
        let state: Value = serde_json::from_str(body["DesiredState"].as_str().unwrap()).unwrap();
        assert_eq!(
            state,
            json!({"LogGroupName": "CloudControlExample", "RetentionInDays": 90})
        );
    }

    #[test]
    fn the_action_comes_from_the_target_header_and_a_user_token_is_kept() {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/",
            "headers": {"x-amz-target": "UpdateResource", "Content-Type": "application/json"},
            "body": {"TypeName": "AWS::Logs::LogGroup", "Identifier": "CloudControlExample",
                     "PatchDocument": [{"op": "replace", "path": "/RetentionInDays", "value": 180}],
                     "ClientToken": "mine"}
        }))
        .unwrap();
        let request = AwsCloudControl.start_request(&start, "uid-1");
        assert_eq!(
            header(&request, "x-amz-target"),
            Some("CloudApiService.UpdateResource")
        );
        assert_eq!(
            header(&request, "content-type"),
            Some("application/x-amz-json-1.0")
        );
        assert_eq!(request.headers.len(), 2, "{:?}", request.headers);
        let body = request.body.unwrap();
        assert_eq!(body["ClientToken"], "mine");
        assert!(
            body["PatchDocument"]
                .as_str()
                .unwrap()
                .contains("/RetentionInDays")
        );
        let start: StartRequest = serde_json::from_value(json!({
            "path": "/", "method": "PUT",
            "headers": {"X-Amz-Target": "CloudApiService.DeleteResource"},
            "body": {"TypeName": "AWS::Logs::LogGroup", "Identifier": "CloudControlExample"}
        }))
        .unwrap();
        let request = AwsCloudControl.start_request(&start, "uid-1");
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(
            header(&request, "x-amz-target"),
            Some("CloudApiService.DeleteResource")
        );
    }

    #[test]
    fn the_start_answer_gives_the_request_token() {
        let started = AwsCloudControl
            .parse_started(&answer(200, event("IN_PROGRESS")))
            .unwrap();
        assert_eq!(started.handle.id.as_deref(), Some(TOKEN));
        assert_eq!(started.observation.state, UpstreamState::Running);
        assert_eq!(
            started.observation.resource_id.as_deref(),
            Some("CloudControlExample")
        );
        let mut no_token = event("IN_PROGRESS");
        no_token["ProgressEvent"]
            .as_object_mut()
            .unwrap()
            .remove("RequestToken");
        assert!(
            AwsCloudControl
                .parse_started(&answer(200, no_token))
                .is_err()
        );
    }

    #[test]
    fn every_operation_status_maps() {
        assert_eq!(poll(event("PENDING")).state, UpstreamState::Pending);
        assert_eq!(poll(event("IN_PROGRESS")).state, UpstreamState::Running);
        let obs = poll(event("CANCEL_IN_PROGRESS"));
        assert_eq!(obs.state, UpstreamState::Running);
        assert!(obs.message.is_some());
        let obs = poll(event("CANCEL_COMPLETE"));
        assert_eq!(obs.state, UpstreamState::Cancelled);
        assert_eq!(obs.error.unwrap().code, "CANCELLED");
        let obs = poll(event("SOMETHING_NEW"));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.upstream_state.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(obs.progress, None, "Cloud Control reports no progress");
    }

    #[test]
    fn success_parses_the_resource_model() {
        let obs = poll(with(
            event("SUCCESS"),
            json!({"ResourceModel": "{\"RetentionInDays\":90,\"LogGroupName\":\"CloudControlExample\",\"Arn\":\"arn:aws:logs:us-west-2:123456789012:log-group:CloudControlExample:*\"}"}),
        ));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.upstream_state.as_deref(), Some("SUCCESS"));
        assert_eq!(obs.resource_id.as_deref(), Some("CloudControlExample"));
        let result = obs.result.unwrap();
        assert_eq!(result["RetentionInDays"], 90);
        assert_eq!(
            result["Arn"],
            "arn:aws:logs:us-west-2:123456789012:log-group:CloudControlExample:*"
        );
        // A model that is not JSON is kept as the string; a delete has none.
        let obs = poll(with(event("SUCCESS"), json!({"ResourceModel": "not json"})));
        assert_eq!(obs.result, Some(json!("not json")));
        assert_eq!(poll(event("SUCCESS")).result, None);
    }

    #[test]
    fn failure_keeps_the_error_code_verbatim() {
        let obs = poll(with(
            event("FAILED"),
            json!({"ErrorCode": "AlreadyExists",
                   "StatusMessage": "Resource of type 'AWS::Logs::LogGroup' with identifier 'CloudControlExample' already exists."}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "ALREADY_EXISTS");
        assert_eq!(error.provider_code.as_deref(), Some("AlreadyExists"));
        assert!(error.message.contains("already exists"));
        let code = |c: &str| {
            poll(with(event("FAILED"), json!({"ErrorCode": c})))
                .error
                .unwrap()
                .code
        };
        assert_eq!(code("NotFound"), "NOT_FOUND");
        assert_eq!(code("InvalidRequest"), "INVALID_ARGUMENT");
        assert_eq!(code("AccessDenied"), "PERMISSION_DENIED");
        assert_eq!(code("ServiceLimitExceeded"), "RESOURCE_EXHAUSTED");
        assert_eq!(code("Throttling"), "RESOURCE_EXHAUSTED");
        assert_eq!(code("NotStabilized"), "UNKNOWN");
        assert_eq!(code("GeneralServiceException"), "UNKNOWN");
        assert_eq!(code("InternalFailure"), "INTERNAL");
        // A terminal FAILED with a throttling code is still a failure: the request gave up.
        let obs = poll(with(event("FAILED"), json!({"ErrorCode": "Throttling"})));
        assert_eq!(obs.state, UpstreamState::Failed);
        let obs = poll(event("FAILED"));
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
    }

    #[test]
    fn polls_and_cancels_by_request_token() {
        let request = AwsCloudControl.poll_request(&handle()).unwrap();
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(
            header(&request, "x-amz-target"),
            Some("CloudApiService.GetResourceRequestStatus")
        );
        assert_eq!(request.body, Some(json!({"RequestToken": TOKEN})));
        let cancel = AwsCloudControl.cancel_request(&handle()).unwrap();
        assert_eq!(
            header(&cancel, "x-amz-target"),
            Some("CloudApiService.CancelResourceRequest")
        );
        assert!(AwsCloudControl.can_cancel());
        assert!(
            AwsCloudControl
                .poll_request(&OperationHandle::default())
                .is_err()
        );
        assert_eq!(
            AwsCloudControl.cancel_request(&OperationHandle::default()),
            None
        );
    }

    #[test]
    fn throttling_is_transient_everywhere() {
        let throttled = answer(
            400,
            json!({"__type": "com.amazonaws.cloudcontrol#ThrottlingException", "message": "Rate exceeded"}),
        );
        let error = AwsCloudControl.parse_error(&throttled);
        assert_eq!(error.provider_code.as_deref(), Some("ThrottlingException"));
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        let request = AwsCloudControl.poll_request(&handle()).unwrap();
        // Throttled: not processed, so resent even by a start that is not idempotent.
        assert!(matches!(
            AwsCloudControl.read_start(&request, &throttled),
            StartOutcome::Deferred(_)
        ));
        assert!(matches!(
            AwsCloudControl.read_poll(&handle(), &throttled),
            PollOutcome::Failed {
                not_found: false,
                ..
            }
        ));
        assert!(matches!(
            AwsCloudControl.read_cancel(&throttled),
            CancelOutcome::Lost(_)
        ));
        let header_only = HttpAnswer {
            status: 400,
            headers: vec![(
                "x-amzn-errortype".into(),
                "ThrottlingException:http://internal.amazon.com/coral/".into(),
            )],
            body: vec![],
        };
        assert!(matches!(
            AwsCloudControl.read_start(&request, &header_only),
            StartOutcome::Deferred(_)
        ));
    }

    #[test]
    fn other_client_errors_are_refusals() {
        let request = AwsCloudControl.poll_request(&handle()).unwrap();
        let exists = answer(
            400,
            json!({"__type": "AlreadyExistsException", "Message": "already exists"}),
        );
        let StartOutcome::Rejected(error) = AwsCloudControl.read_start(&request, &exists) else {
            panic!("not rejected")
        };
        assert_eq!(error.code, "ALREADY_EXISTS");
        assert_eq!(error.message, "already exists");
        let token_conflict = answer(
            400,
            json!({"__type": "ClientTokenConflictException", "message": "x"}),
        );
        assert!(matches!(
            AwsCloudControl.read_start(&request, &token_conflict),
            StartOutcome::Rejected(_)
        ));
        let internal = answer(
            500,
            json!({"__type": "ServiceInternalErrorException", "message": "x"}),
        );
        assert!(matches!(
            AwsCloudControl.read_start(&request, &internal),
            StartOutcome::Lost(_)
        ));
        let concurrent = answer(
            400,
            json!({"__type": "ConcurrentModificationException", "Message": "done"}),
        );
        assert!(matches!(
            AwsCloudControl.read_cancel(&concurrent),
            CancelOutcome::Refused(_)
        ));
    }

    #[test]
    fn an_unknown_request_token_is_not_found() {
        let gone = answer(
            400,
            json!({"__type": "RequestTokenNotFoundException", "Message": "Request with token x was not found"}),
        );
        assert!(matches!(
            AwsCloudControl.read_poll(&handle(), &gone),
            PollOutcome::Failed {
                not_found: true,
                ..
            }
        ));
    }

    #[test]
    fn an_answer_without_a_progress_event_is_unreadable() {
        assert!(
            AwsCloudControl
                .parse_operation(&answer(200, json!({})))
                .is_err()
        );
        assert!(matches!(
            AwsCloudControl.read_poll(&handle(), &answer(200, json!({"ProgressEvent": "x"}))),
            PollOutcome::Failed { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            status in 100u16..600,
            error_type in proptest::option::of("[ -~]{0,40}"),
        ) {
            let headers = error_type.map(|t| vec![("x-amzn-errortype".to_owned(), t)]).unwrap_or_default();
            let answer = HttpAnswer { status, headers, body };
            let _ = AwsCloudControl.parse_operation(&answer);
            let _ = AwsCloudControl.parse_started(&answer);
            let _ = AwsCloudControl.parse_error(&answer);
            let _ = AwsCloudControl.read_poll(&handle(), &answer);
            let _ = AwsCloudControl.read_cancel(&answer);
            let request = AwsCloudControl.poll_request(&handle()).unwrap();
            let _ = AwsCloudControl.read_start(&request, &answer);
        }

        #[test]
        fn any_progress_event_never_panics(
            status in proptest::option::of("[A-Z_]{0,20}"),
            model in proptest::option::of("[ -~]{0,40}"),
            code in proptest::option::of("[A-Za-z]{0,20}"),
        ) {
            let mut event = json!({"RequestToken": TOKEN});
            if let Some(s) = status { event["OperationStatus"] = json!(s); }
            if let Some(m) = model { event["ResourceModel"] = json!(m); }
            if let Some(c) = code { event["ErrorCode"] = json!(c); }
            let obs = poll(json!({"ProgressEvent": event}));
            proptest::prop_assert_eq!(
                obs.error.is_some(),
                matches!(obs.state, UpstreamState::Failed | UpstreamState::Cancelled)
            );
        }
    }
}
