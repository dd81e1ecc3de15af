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
//!
//! With the provider's `spec.list`, requests are listed with `ListResourceRequests`: `MaxResults`
//! (the page size), `NextToken`, and a `ResourceRequestStatusFilter` made of `list.query`'s
//! `OperationStatuses` and `Operations`, each a comma-separated list of the API's enum values
//! (`OperationStatuses: PENDING,IN_PROGRESS`; the CRD refuses any other key, and a `list.path`).
//! Each `ResourceRequestStatusSummaries` entry is a `ProgressEvent`, read as a poll's and keyed
//! by its `RequestToken` (the handle's `id`). A `SUCCESS` entry of a create or update without
//! its `ResourceModel` (the reference does not promise one in a summary) is left out: its
//! request is then read once by itself with `GetResourceRequestStatus`, which brings the model
//! that becomes the result. Requests expire after 7 days, so a request older than that is
//! absent from the list and read by itself.

use serde_json::{Map, Value, json};

use super::error_details::{bound, detail};
use super::{
    Dialect, HttpAnswer, ListOutcome, ListPage, Observation, ParseError, RequestSpec, Started,
    UpstreamState, list_body, listed, page_token_of, rpc_code_for_http,
};
use crate::api::{ErrorDetail, ListSpec, OperationError, OperationHandle, StartRequest};

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

    /// `ListResourceRequests` (see the module documentation).
    fn list_request(&self, list: &ListSpec, page_token: Option<&str>) -> Option<RequestSpec> {
        let mut body = Map::new();
        body.insert("MaxResults".into(), list.page_size().into());
        if let Some(token) = page_token {
            body.insert("NextToken".into(), token.into());
        }
        let mut filter = Map::new();
        for member in LIST_FILTER {
            let Some(values) = list.query.get(*member) else {
                continue;
            };
            let values: Vec<Value> = values
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_owned()))
                .collect();
            if !values.is_empty() {
                filter.insert((*member).to_owned(), Value::Array(values));
            }
        }
        if !filter.is_empty() {
            body.insert("ResourceRequestStatusFilter".into(), Value::Object(filter));
        }
        Some(RequestSpec {
            method: reqwest::Method::POST,
            path: String::new(),
            query: vec![],
            headers: headers(&format!("{SERVICE}.ListResourceRequests")).to_vec(),
            body: Some(Value::Object(body)),
        })
    }

    /// A request is listed under its `RequestToken`.
    fn list_key(&self, handle: &OperationHandle) -> Option<String> {
        token_of(handle).map(str::to_owned)
    }

    /// `{"ResourceRequestStatusSummaries": [ProgressEvent…], "NextToken"}` (the token absent or
    /// null on the last page).
    fn read_list(&self, answer: &HttpAnswer) -> ListOutcome {
        let body = match list_body(self, answer) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let Some(summaries) = listed(&body, "ResourceRequestStatusSummaries") else {
            return ListOutcome::Failed(
                "the answer is not a ListResourceRequests output (no `ResourceRequestStatusSummaries` list)"
                    .into(),
            );
        };
        let entries = summaries
            .iter()
            .filter(|event| event.is_object() && !needs_its_model(event))
            .filter_map(|event| {
                let token = event.get("RequestToken")?.as_str()?;
                (!token.is_empty()).then(|| (token.to_owned(), observe(event)))
            })
            .collect();
        ListOutcome::Page(ListPage {
            entries,
            next_page_token: page_token_of(&body, "NextToken"),
        })
    }
}

/// The members of `ResourceRequestStatusFilter`, as `list.query` names them.
const LIST_FILTER: &[&str] = &["OperationStatuses", "Operations"];

/// A summary of a succeeded create or update without its `ResourceModel`: read by itself, so
/// that the model becomes the result.
fn needs_its_model(event: &Value) -> bool {
    let text = |field: &str| event.get(field).and_then(Value::as_str);
    text("OperationStatus") == Some("SUCCESS")
        && text("Operation") != Some("DELETE")
        && text("ResourceModel").is_none_or(str::is_empty)
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

    #[test]
    fn lists_post_list_resource_requests_with_the_status_filter() {
        let list = ListSpec {
            path: None,
            query: [
                (
                    "OperationStatuses".to_owned(),
                    "PENDING, IN_PROGRESS".to_owned(),
                ),
                ("Operations".to_owned(), "CREATE".to_owned()),
            ]
            .into(),
            page_size: Some(50),
        };
        let first = AwsCloudControl.list_request(&list, None).unwrap();
        assert_eq!(first.method, reqwest::Method::POST);
        assert_eq!(first.path, "");
        assert!(first.headers.contains(&(
            "X-Amz-Target".into(),
            "CloudApiService.ListResourceRequests".into()
        )));
        assert!(
            first
                .headers
                .contains(&("Content-Type".into(), CONTENT_TYPE.into()))
        );
        assert_eq!(
            first.body,
            Some(json!({"MaxResults": 50, "ResourceRequestStatusFilter": {
                "OperationStatuses": ["PENDING", "IN_PROGRESS"], "Operations": ["CREATE"]}}))
        );
        let next = AwsCloudControl
            .list_request(&ListSpec::default(), Some("tok+/="))
            .unwrap();
        assert_eq!(
            next.body,
            Some(json!({"MaxResults": 100, "NextToken": "tok+/="}))
        );
        assert_eq!(AwsCloudControl.list_key(&handle()).as_deref(), Some(TOKEN));
    }

    #[test]
    fn a_list_page_reads_each_summary_and_leaves_out_a_success_without_its_model() {
        let summary = |token: &str, status: &str, operation: &str| {
            json!({"TypeName": "AWS::Logs::LogGroup", "Identifier": "lg", "RequestToken": token,
                   "Operation": operation, "OperationStatus": status, "EventTime": 1.632675644638E9})
        };
        let mut with_model = summary("t-4", "SUCCESS", "UPDATE");
        with_model["ResourceModel"] = json!("{\"LogGroupName\":\"lg\"}");
        let page = json!({"ResourceRequestStatusSummaries": [
            summary("t-1", "IN_PROGRESS", "CREATE"),
            summary("t-2", "SUCCESS", "CREATE"),
            summary("t-3", "SUCCESS", "DELETE"),
            with_model,
            summary("t-5", "FAILED", "CREATE"),
            {"OperationStatus": "PENDING"}
        ], "NextToken": "next"});
        let ListOutcome::Page(page) = AwsCloudControl.read_list(&answer(200, page)) else {
            panic!("a page");
        };
        let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["t-1", "t-3", "t-4", "t-5"]);
        assert_eq!(
            page.entries[2].1.result,
            Some(json!({"LogGroupName": "lg"}))
        );
        assert_eq!(page.entries[3].1.state, UpstreamState::Failed);
        assert_eq!(page.next_page_token.as_deref(), Some("next"));
        let ListOutcome::Page(last) = AwsCloudControl.read_list(&answer(
            200,
            json!({"ResourceRequestStatusSummaries": [], "NextToken": null}),
        )) else {
            panic!("a page");
        };
        assert_eq!(last, ListPage::default());
    }

    #[test]
    fn list_refusals_and_failures() {
        let invalid = answer(
            400,
            json!({"__type": "com.amazon.coral.validate#ValidationException", "message": "The NextToken has expired"}),
        );
        assert!(
            matches!(AwsCloudControl.read_list(&invalid), ListOutcome::Refused(m) if m.contains("ValidationException"))
        );
        // Throttling is sent as a 400, and is no refusal.
        let throttled = answer(
            400,
            json!({"__type": "com.amazon.coral.availability#ThrottlingException", "message": "Rate exceeded"}),
        );
        assert!(matches!(
            AwsCloudControl.read_list(&throttled),
            ListOutcome::Failed(_)
        ));
        assert!(matches!(
            AwsCloudControl.read_list(&answer(200, json!({"ResourceRequestStatusSummaries": 1}))),
            ListOutcome::Failed(_)
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
