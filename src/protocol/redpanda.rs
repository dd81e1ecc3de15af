//! Redpanda Cloud control plane (`redpanda.api.controlplane.v1.Operation`).
//!
//! Mutations answer `{"operation": {…}}` (HTTP 202); `GET v1/operations/{id}` polls. States:
//! `STATE_COMPLETED` succeeds, `STATE_FAILED` fails (cancelled when `error.code` is
//! `CANCELLED`), anything else — `STATE_IN_PROGRESS`, `STATE_UNSPECIFIED`, a missing or unknown
//! state — keeps polling. The API has no progress, no cancel, and no idempotency key.

use serde_json::Value;

use super::error_details::rpc_details;
use super::{
    Dialect, HttpAnswer, Observation, ParseError, RequestSpec, Started, UpstreamState,
    rpc_code_for_http, rpc_code_name,
};
use crate::api::{OperationError, OperationHandle, StartRequest};

/// The Redpanda dialect.
pub struct Redpanda;

impl Dialect for Redpanda {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        false
    }

    fn can_cancel(&self) -> bool {
        false
    }

    fn start_request(&self, start: &StartRequest, _request_id: &str) -> RequestSpec {
        RequestSpec::from_start(start)
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        let path = match (&handle.id, &handle.url) {
            (Some(id), _) => format!("v1/operations/{id}"),
            (None, Some(url)) => url.clone(),
            (None, None) => {
                return Err(ParseError::Shape(
                    "a redpanda operation is polled by its id; set spec.operation.id".into(),
                ));
            }
        };
        Ok(RequestSpec::get(path))
    }

    fn cancel_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let body = answer.json()?;
        let operation = operation_of(&body)?;
        let id = operation
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ParseError::Shape("the operation has no `id`".into()))?;
        Ok(Started {
            handle: OperationHandle {
                id: Some(id.to_owned()),
                ..OperationHandle::default()
            },
            observation: observe(operation),
        })
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        let body = answer.json()?;
        Ok(observe(operation_of(&body)?))
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        let body = answer.json().ok();
        // rpc.Status, at the top level or under `error`.
        let status = body
            .as_ref()
            .map(|b| b.get("error").filter(|e| e.is_object()).unwrap_or(b));
        let message = status
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        let provider_code = status.and_then(|s| s.get("code")).and_then(code_text);
        OperationError {
            code: status
                .and_then(|s| s.get("code"))
                .and_then(code_name)
                .unwrap_or_else(|| rpc_code_for_http(answer.status).to_owned()),
            provider_code,
            http_status: Some(i32::from(answer.status)),
            message,
            details: rpc_details(status.and_then(|s| s.get("details"))),
        }
    }
}

/// The `operation` object of a `{"operation": …}` answer. An answer without it is not a
/// success: it is an unreadable answer, and polling goes on.
fn operation_of(body: &Value) -> Result<&Value, ParseError> {
    body.get("operation")
        .filter(|op| op.is_object())
        .ok_or_else(|| ParseError::Shape("the answer has no `operation` object".into()))
}

fn observe(operation: &Value) -> Observation {
    let state = operation.get("state").and_then(Value::as_str);
    let resource_id = operation
        .get("resource_id")
        .and_then(Value::as_str)
        .or_else(|| {
            let metadata = operation.get("metadata")?;
            ["cluster_id", "network_id", "resource_id"]
                .iter()
                .find_map(|k| metadata.get(*k).and_then(Value::as_str))
        })
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let mut observation = Observation {
        state: UpstreamState::Running,
        upstream_state: Some(state.unwrap_or("STATE_UNSPECIFIED").to_owned()),
        resource_id,
        ..Observation::default()
    };
    match state {
        Some("STATE_COMPLETED") => {
            observation.state = UpstreamState::Succeeded;
            observation.result = operation.get("response").filter(|r| !r.is_null()).cloned();
        }
        Some("STATE_FAILED") => {
            let error = operation.get("error").filter(|e| e.is_object());
            let code = error
                .and_then(|e| e.get("code"))
                .and_then(code_name)
                .unwrap_or_else(|| "UNKNOWN".to_owned());
            observation.state = if code == "CANCELLED" {
                UpstreamState::Cancelled
            } else {
                UpstreamState::Failed
            };
            observation.error = Some(OperationError {
                code,
                provider_code: error.and_then(|e| e.get("code")).and_then(code_text),
                http_status: None,
                message: error
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the operation failed without an error message")
                    .to_owned(),
                details: rpc_details(error.and_then(|e| e.get("details"))),
            });
        }
        // STATE_IN_PROGRESS, STATE_UNSPECIFIED, missing or unknown: keep polling.
        _ => {}
    }
    observation
}

/// An rpc code given as its name (`"NOT_FOUND"`) or its number (`5` or `"5"`), as a name.
fn code_name(code: &Value) -> Option<String> {
    match code {
        Value::Number(n) => n.as_i64().map(|n| rpc_code_name(n).to_owned()),
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => Some(rpc_code_name(n).to_owned()),
            Err(_) if is_rpc_name(s) => Some(s.clone()),
            Err(_) => Some("UNKNOWN".to_owned()),
        },
        _ => None,
    }
}

fn code_text(code: &Value) -> Option<String> {
    match code {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn is_rpc_name(s: &str) -> bool {
    (0..=16).any(|n| rpc_code_name(n) == s) || s == "UNKNOWN"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: Value) -> HttpAnswer {
        HttpAnswer {
            status,
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    fn poll(body: Value) -> Result<Observation, ParseError> {
        Redpanda.parse_operation(&answer(200, body))
    }

    #[test]
    fn the_seed_example_is_running_with_its_resource_id() {
        // The Create Cluster answer from the Redpanda Cloud documentation (seed 000).
        let body = json!({"operation": {
            "id": "cqfc6vdmvio001r4vu4",
            "metadata": {
                "@type": "type.googleapis.com/redpanda.api.controlplane.v1.CreateClusterMetadata",
                "cluster_id": "cqg168balf4e4pm8ptu"
            },
            "state": "STATE_IN_PROGRESS",
            "started_at": "2024-07-23T20:31:29.948Z",
            "type": "TYPE_CREATE_CLUSTER",
            "resource_id": "cqg168balf4e4pm8ptu"
        }});
        let started = Redpanda.parse_started(&answer(202, body)).unwrap();
        assert_eq!(started.handle.id.as_deref(), Some("cqfc6vdmvio001r4vu4"));
        let obs = started.observation;
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.upstream_state.as_deref(), Some("STATE_IN_PROGRESS"));
        assert_eq!(obs.resource_id.as_deref(), Some("cqg168balf4e4pm8ptu"));
        assert_eq!(obs.progress, None, "the API has no progress");
    }

    #[test]
    fn completed_succeeds_with_the_response() {
        let response = json!({"@type": "x.CreateClusterResponse", "cluster": {"id": "c1"}});
        let obs = poll(json!({"operation": {"id": "o", "state": "STATE_COMPLETED",
            "finished_at": null, "response": response, "resource_id": "c1"}}))
        .unwrap();
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.result, Some(response));
        // Deletes complete without a response.
        let obs = poll(json!({"operation": {"id": "o", "state": "STATE_COMPLETED"}})).unwrap();
        assert_eq!((obs.state, obs.result), (UpstreamState::Succeeded, None));
    }

    #[test]
    fn failed_keeps_the_error_code_as_name_or_number() {
        let obs = poll(json!({"operation": {"state": "STATE_FAILED",
            "error": {"code": "FAILED_PRECONDITION", "message": "no quota"}}}))
        .unwrap();
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(
            (error.code.as_str(), error.message.as_str()),
            ("FAILED_PRECONDITION", "no quota")
        );
        let obs =
            poll(json!({"operation": {"state": "STATE_FAILED", "error": {"code": 9}}})).unwrap();
        assert_eq!(obs.error.unwrap().code, "FAILED_PRECONDITION");
        let obs = poll(json!({"operation": {"state": "STATE_FAILED"}})).unwrap();
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
    }

    #[test]
    fn failed_with_cancelled_is_cancelled() {
        let obs =
            poll(json!({"operation": {"state": "STATE_FAILED", "error": {"code": "CANCELLED"}}}))
                .unwrap();
        assert_eq!(obs.state, UpstreamState::Cancelled);
    }

    #[test]
    fn unspecified_missing_and_unknown_states_keep_polling() {
        for state in [
            json!("STATE_UNSPECIFIED"),
            json!("STATE_SOMETHING_NEW"),
            Value::Null,
        ] {
            let obs = poll(json!({"operation": {"id": "o", "state": state}})).unwrap();
            assert_eq!(obs.state, UpstreamState::Running, "{state}");
        }
    }

    #[test]
    fn an_answer_without_an_operation_is_unreadable_not_success() {
        assert!(poll(json!({})).is_err());
        assert!(poll(json!({"operation": null})).is_err());
        assert!(
            Redpanda
                .parse_started(&answer(
                    202,
                    json!({"operation": {"state": "STATE_IN_PROGRESS"}})
                ))
                .is_err()
        );
    }

    #[test]
    fn polls_by_id_and_has_no_cancel_or_idempotency() {
        let handle = OperationHandle {
            id: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(
            Redpanda.poll_request(&handle).unwrap().path,
            "v1/operations/abc"
        );
        assert!(Redpanda.cancel_request(&handle).is_none());
        let start: StartRequest = serde_json::from_value(json!({"path": "v1/clusters"})).unwrap();
        assert!(!Redpanda.idempotent_start(&start) && !Redpanda.can_cancel());
        assert!(Redpanda.poll_request(&OperationHandle::default()).is_err());
    }

    #[test]
    fn errors_read_rpc_status() {
        let e = Redpanda.parse_error(&answer(
            404,
            json!({"code": "NOT_FOUND", "message": "operation not found"}),
        ));
        assert_eq!((e.code.as_str(), e.http_status), ("NOT_FOUND", Some(404)));
        let e = Redpanda.parse_error(&answer(500, json!({"code": 13, "message": "boom"})));
        assert_eq!(e.code, "INTERNAL");
        let e = Redpanda.parse_error(&HttpAnswer {
            status: 503,
            headers: vec![],
            body: b"<html>".to_vec(),
        });
        assert_eq!(e.code, "UNAVAILABLE");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let answer = HttpAnswer { status: 200, headers: vec![], body };
            let _ = Redpanda.parse_operation(&answer);
            let _ = Redpanda.parse_started(&answer);
            let _ = Redpanda.parse_error(&answer);
        }
    }
}
