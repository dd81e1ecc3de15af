//! Google AIP-151 `google.longrunning.Operation`.
//!
//! `done` absent means false; done with `response` succeeds, with `error.code == 1` is
//! cancelled, with any other error fails (its `google.rpc.Status.details` kept in
//! `error.details`); done with neither fails as `UNKNOWN`. Progress comes from known metadata
//! fields; errors inside metadata are not terminal. The start request carries the request id in
//! the query parameter `google.requestIdParameter` when the provider sets one (AIP-155's
//! `requestId`, for APIs that declare it); by default it sends none, because Google's front ends
//! refuse a query parameter the method does not declare (`400 Cannot bind query parameter`), and
//! Service Management, GKE and Deployment Manager declare none.

use serde_json::Value;

use super::error_details::{envelope_error, google_throttled, status_error};
use super::{
    Dialect, HttpAnswer, ListOutcome, ListPage, Observation, ParseError, RequestSpec, Started,
    UpstreamState, list_body, list_page_request, listed, page_token_of,
};
use crate::api::{ListSpec, OperationError, OperationHandle, StartRequest};

/// The Google dialect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Google {
    /// The query parameter that carries the request id on the start request.
    pub request_id_parameter: Option<String>,
}

/// Metadata fields that services use for percent complete, in order of preference.
const PROGRESS_FIELDS: &[&str] = &[
    "progressPercentage",
    "progressPercent",
    "progress_percent",
    "percentComplete",
    "percentDone",
    "progress",
];

impl Dialect for Google {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        self.request_id_parameter.is_some()
    }

    fn start_request(&self, start: &StartRequest, request_id: &str) -> RequestSpec {
        match &self.request_id_parameter {
            Some(name) => RequestSpec::from_start_with_query_key(start, name, request_id),
            None => RequestSpec::from_start(start),
        }
    }

    fn no_idempotency_hint(&self) -> &'static str {
        "this provider sends no request id (spec.google.requestIdParameter is unset: set it to requestId for APIs that declare it)"
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let op = answer.json()?;
        let observation = observe(&op)?;
        let name = op.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() && observation.state != UpstreamState::Succeeded {
            return Err(ParseError::Shape(
                "the start response is not an Operation: it has no `name`".into(),
            ));
        }
        Ok(Started {
            handle: OperationHandle {
                name: (!name.is_empty()).then(|| name.to_owned()),
                ..OperationHandle::default()
            },
            observation,
        })
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        let path = match (&handle.name, &handle.url) {
            (Some(name), _) => name.clone(),
            (None, Some(url)) => url.clone(),
            (None, None) => {
                return Err(ParseError::Shape(
                    "a google operation is polled by its name; set spec.operation.name".into(),
                ));
            }
        };
        Ok(RequestSpec::get(path))
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        observe(&answer.json()?)
    }

    fn can_cancel(&self) -> bool {
        true
    }

    fn cancel_request(&self, handle: &OperationHandle) -> Option<RequestSpec> {
        let name = handle.name.as_ref()?;
        Some(RequestSpec {
            method: reqwest::Method::POST,
            path: format!("{name}:cancel"),
            query: vec![],
            headers: vec![],
            body: Some(Value::Object(Default::default())),
        })
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        // AIP-193 envelope: {"error": {"code": <HTTP status>, "message", "status": <rpc name>,
        // "details": [...]}}.
        envelope_error(answer)
    }

    fn is_throttled(&self, error: &OperationError) -> bool {
        google_throttled(error)
    }

    /// AIP-151 `ListOperations`: `GET {list.path}?pageSize=…&pageToken=…` with the configured
    /// filter (`filter` is the service's own syntax, AIP-160).
    fn list_request(&self, list: &ListSpec, page_token: Option<&str>) -> Option<RequestSpec> {
        let path = list.path.clone().unwrap_or_else(|| "operations".into());
        Some(list_page_request(
            path,
            list,
            ("pageSize", "pageToken"),
            page_token,
        ))
    }

    /// An operation is listed under its name.
    fn list_key(&self, handle: &OperationHandle) -> Option<String> {
        handle.name.clone()
    }

    /// `{"operations": [Operation…], "nextPageToken": "…"}` (the token omitted or empty on the
    /// last page). An entry that is not an Operation is left out (its operation is then read
    /// by itself).
    fn read_list(&self, answer: &HttpAnswer) -> ListOutcome {
        let body = match list_body(self, answer) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let Some(operations) = listed(&body, "operations") else {
            return ListOutcome::Failed(
                "the answer is not a ListOperationsResponse (no `operations` list)".into(),
            );
        };
        let entries = operations
            .iter()
            .filter_map(|op| {
                let name = op.get("name")?.as_str()?.to_owned();
                Some((name, observe(op).ok()?))
            })
            .collect();
        ListOutcome::Page(ListPage {
            entries,
            next_page_token: page_token_of(&body, "nextPageToken"),
        })
    }
}

/// Reads an Operation object into an observation.
fn observe(op: &Value) -> Result<Observation, ParseError> {
    let Some(obj) = op.as_object() else {
        return Err(ParseError::Shape(
            "an Operation must be a JSON object".into(),
        ));
    };
    let done = match obj.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ParseError::Shape(format!(
                "`done` must be a boolean, got {other}"
            )));
        }
    };
    let metadata = obj.get("metadata");
    let progress = metadata.and_then(progress_of);
    let metadata_note = metadata.and_then(metadata_error);
    if !done {
        return Ok(Observation {
            state: UpstreamState::Running,
            upstream_state: Some("RUNNING".into()),
            progress,
            message: metadata_note,
            ..Observation::default()
        });
    }
    let mut observation = Observation {
        upstream_state: Some("DONE".into()),
        progress,
        ..Observation::default()
    };
    match (
        obj.get("error").filter(|e| !e.is_null()),
        obj.get("response").filter(|r| !r.is_null()),
    ) {
        (Some(error), _) => {
            // An error object carrying OK (or no code) is malformed: it is reported as UNKNOWN.
            let error = status_error(error);
            observation.state = if error.code == "CANCELLED" {
                UpstreamState::Cancelled
            } else {
                UpstreamState::Failed
            };
            observation.error = Some(error);
        }
        (None, Some(response)) => {
            observation.state = UpstreamState::Succeeded;
            observation.resource_id = response
                .get("name")
                .or_else(|| response.get("id"))
                .or_else(|| response.get("selfLink"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            observation.result = Some(response.clone());
        }
        (None, None) => {
            observation.state = UpstreamState::Failed;
            observation.error = Some(OperationError {
                code: "UNKNOWN".into(),
                message: "operation done with neither response nor error".into(),
                ..OperationError::default()
            });
        }
    }
    Ok(observation)
}

/// Percent complete from the first known metadata field, clamped to 0..=100.
fn progress_of(metadata: &Value) -> Option<i32> {
    PROGRESS_FIELDS.iter().find_map(|field| {
        let value = metadata.get(*field)?;
        let number = value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse::<f64>().ok()))?;
        number
            .is_finite()
            .then(|| number.clamp(0.0, 100.0).floor() as i32)
    })
}

/// A non-terminal error reported in metadata (AIP-151 allows `google.rpc.Status` values there).
fn metadata_error(metadata: &Value) -> Option<String> {
    let error = metadata.get("error").or_else(|| {
        metadata
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
    })?;
    let message = error.get("message").and_then(Value::as_str)?;
    Some(format!("upstream reports (not terminal): {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOGLE: Google = Google {
        request_id_parameter: None,
    };

    fn poll(op: Value) -> Observation {
        let answer = HttpAnswer {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(&op).unwrap(),
        };
        GOOGLE.parse_operation(&answer).unwrap()
    }

    #[test]
    fn done_absent_is_running_with_progress_from_service_management_metadata() {
        // Service Infrastructure's guide "Polling Long Running Operations", its example.
        let obs = poll(json!({
            "name": "operations/services.rollouts.create-1",
            "metadata": {
                "@type": "type.googleapis.com/google.api.servicemanagement.v1.OperationMetadata",
                "resourceNames": ["services/x/rollouts/1"],
                "progressPercentage": 40,
                "startTime": "2026-01-01T00:00:00Z"
            }
        }));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.progress, Some(40));
        assert_eq!(obs.upstream_state.as_deref(), Some("RUNNING"));
    }

    #[test]
    fn progress_is_absent_when_metadata_has_none() {
        let obs =
            poll(json!({"name": "operations/a", "metadata": {"@type": "x", "startTime": "t"}}));
        assert_eq!(obs.progress, None);
        let obs = poll(json!({"name": "operations/a"}));
        assert_eq!(obs.progress, None);
    }

    #[test]
    fn progress_from_other_spellings_is_clamped() {
        assert_eq!(
            poll(json!({"metadata": {"progress_percent": 12.7}})).progress,
            Some(12)
        );
        assert_eq!(
            poll(json!({"metadata": {"percentComplete": "250"}})).progress,
            Some(100)
        );
        assert_eq!(
            poll(json!({"metadata": {"progressPercent": -3}})).progress,
            Some(0)
        );
    }

    #[test]
    fn done_with_response_succeeds_with_the_response_as_result() {
        let response =
            json!({"@type": "type.googleapis.com/x.Cluster", "name": "projects/p/clusters/c1"});
        let obs = poll(json!({"name": "operations/a", "done": true, "response": response}));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.result, Some(response));
        assert_eq!(obs.resource_id.as_deref(), Some("projects/p/clusters/c1"));
    }

    #[test]
    fn done_with_error_code_1_is_cancelled_others_fail_with_the_code_name() {
        let obs = poll(json!({"done": true, "error": {"code": 1, "message": "stop"}}));
        assert_eq!(obs.state, UpstreamState::Cancelled);
        assert_eq!(obs.error.unwrap().code, "CANCELLED");
        let obs = poll(json!({"done": true, "error": {"code": 9, "message": "quota"}}));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "FAILED_PRECONDITION");
        assert_eq!(error.provider_code.as_deref(), Some("9"));
        assert_eq!(error.message, "quota");
    }

    #[test]
    fn done_with_neither_fails_as_unknown() {
        let obs = poll(json!({"name": "operations/a", "done": true}));
        assert_eq!(obs.state, UpstreamState::Failed);
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
    }

    #[test]
    fn an_error_object_with_code_ok_is_a_failure_not_a_success() {
        let obs = poll(json!({"done": true, "error": {"code": 0, "message": "?"}}));
        assert_eq!(obs.state, UpstreamState::Failed);
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
    }

    #[test]
    fn errors_in_metadata_are_not_terminal() {
        let obs = poll(json!({"metadata": {"error": {"code": 14, "message": "retrying a zone"}}}));
        assert_eq!(obs.state, UpstreamState::Running);
        assert!(obs.message.unwrap().contains("retrying a zone"));
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        let answer = HttpAnswer {
            status: 200,
            headers: vec![],
            body: b"<html>".to_vec(),
        };
        assert!(matches!(
            GOOGLE.parse_operation(&answer),
            Err(ParseError::NotJson(_))
        ));
        let answer = HttpAnswer {
            status: 200,
            headers: vec![],
            body: b"[1]".to_vec(),
        };
        assert!(matches!(
            GOOGLE.parse_operation(&answer),
            Err(ParseError::Shape(_))
        ));
        let answer = HttpAnswer {
            status: 200,
            headers: vec![],
            body: br#"{"done":"yes"}"#.to_vec(),
        };
        assert!(matches!(
            GOOGLE.parse_operation(&answer),
            Err(ParseError::Shape(_))
        ));
    }

    #[test]
    fn start_sends_the_request_id_and_reads_the_handle() {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "projects/p/clusters", "body": {"size": 3}
        }))
        .unwrap();
        // By default no request id: Service Management, GKE and Deployment Manager refuse one.
        let request = GOOGLE.start_request(&start, "uid-1");
        assert!(request.query.is_empty());
        assert!(!GOOGLE.idempotent_start(&start));
        let with_id = Google {
            request_id_parameter: Some("requestId".into()),
        };
        let request = with_id.start_request(&start, "uid-1");
        assert!(with_id.idempotent_start(&start));
        assert_eq!(request.method, reqwest::Method::POST);
        assert!(
            request
                .query
                .contains(&("requestId".into(), "uid-1".into()))
        );
        assert_eq!(request.body, Some(json!({"size": 3})));
        let answer = HttpAnswer {
            status: 200,
            headers: vec![],
            body: br#"{"name":"operations/op-7","metadata":{"progressPercentage":0}}"#.to_vec(),
        };
        let started = GOOGLE.parse_started(&answer).unwrap();
        assert_eq!(started.handle.name.as_deref(), Some("operations/op-7"));
        assert_eq!(started.observation.progress, Some(0));
        let nameless = HttpAnswer {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        };
        assert!(GOOGLE.parse_started(&nameless).is_err());
    }

    #[test]
    fn cancel_posts_to_name_colon_cancel() {
        let handle = OperationHandle {
            name: Some("operations/op-1".into()),
            ..Default::default()
        };
        let request = GOOGLE.cancel_request(&handle).unwrap();
        assert_eq!(request.path, "operations/op-1:cancel");
        assert_eq!(request.method, reqwest::Method::POST);
    }

    #[test]
    fn aip_193_error_envelopes_keep_the_http_status_apart_from_the_rpc_code() {
        let answer = HttpAnswer {
            status: 400,
            headers: vec![],
            body: br#"{"error":{"code":400,"message":"size must be positive","status":"INVALID_ARGUMENT"}}"#.to_vec(),
        };
        let error = GOOGLE.parse_error(&answer);
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.http_status, Some(400));
        assert_eq!(error.message, "size must be positive");
        let bare = HttpAnswer {
            status: 403,
            headers: vec![],
            body: b"nope".to_vec(),
        };
        assert_eq!(GOOGLE.parse_error(&bare).code, "PERMISSION_DENIED");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let answer = HttpAnswer { status: 200, headers: vec![], body };
            let _ = GOOGLE.parse_operation(&answer);
            let _ = GOOGLE.parse_started(&answer);
            let _ = GOOGLE.parse_error(&answer);
        }
    }
}
