//! Redpanda Cloud control plane (`redpanda.api.controlplane.v1.Operation`).
//!
//! Mutations answer `{"operation": {…}}` (HTTP 202); `GET v1/operations/{id}` polls. States:
//! `STATE_COMPLETED` succeeds, `STATE_FAILED` fails (cancelled when `error.code` is
//! `CANCELLED`), anything else — `STATE_IN_PROGRESS`, `STATE_UNSPECIFIED`, a missing or unknown
//! state — keeps polling. The API has no progress, no cancel, and no idempotency key.

use serde_json::Value;

use super::error_details::rpc_details;
use super::{
    Dialect, HttpAnswer, ListOutcome, ListPage, Observation, ParseError, Recovery, RequestSpec,
    Started, UpstreamState, describe, is_refusal, is_success, list_body, list_page_request, listed,
    page_token_of, rpc_code_for_http, rpc_code_name,
};
use crate::api::{ListSpec, OperationError, OperationHandle, StartRequest};

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

    /// `GET {list.path}` (`OperationService_ListOperations`) with `page_size` (capped to 100
    /// by the API), `page_token` and the configured `filter.*` parameters.
    fn list_request(&self, list: &ListSpec, page_token: Option<&str>) -> Option<RequestSpec> {
        let path = list.path.clone().unwrap_or_else(|| "v1/operations".into());
        Some(list_page_request(
            path,
            list,
            ("page_size", "page_token"),
            page_token,
        ))
    }

    /// An operation is listed under its id.
    fn list_key(&self, handle: &OperationHandle) -> Option<String> {
        handle.id.clone()
    }

    /// `ListOperationsResponse {operations, next_page_token}` (empty on the last page).
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
                let id = op.get("id")?.as_str()?.to_owned();
                Some((id, observe(op)))
            })
            .collect();
        ListOutcome::Page(ListPage {
            entries,
            next_page_token: page_token_of(&body, "next_page_token"),
        })
    }

    fn no_idempotency_hint(&self) -> &'static str {
        "the Redpanda Cloud API has no idempotency key, and the operation could not be told apart upstream"
    }

    fn can_recover(&self) -> bool {
        true
    }

    fn recovery_request(
        &self,
        start: &StartRequest,
        _sent_at: jiff::Timestamp,
    ) -> Option<RequestSpec> {
        let target = Target::of(start)?;
        Some(match (&target.resource_id, &target.lookup) {
            (Some(id), _) => list_operations(target.kind, Some(id), None),
            (None, Some((collection, _, name))) => lookup(collection, name, None),
            (None, None) => list_operations(target.kind, None, None),
        })
    }

    fn read_recovery(
        &self,
        start: &StartRequest,
        sent_at: jiff::Timestamp,
        candidate: Option<&Started>,
        request: &RequestSpec,
        answer: &HttpAnswer,
    ) -> Recovery {
        let Some(target) = Target::of(start) else {
            return Recovery::NotFound("the start request names no operation type".into());
        };
        if !is_success(answer.status) {
            let error = self.parse_error(answer);
            let text = describe(answer.status, &error.message);
            return if is_refusal(answer.status) {
                Recovery::NotFound(format!("looking it up was refused: {text}"))
            } else {
                Recovery::Failed(format!("looking it up failed: {text}"))
            };
        }
        let Ok(body) = answer.json() else {
            return Recovery::Failed("the look-up's answer is not JSON".into());
        };
        let token = body
            .get("next_page_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        // The next page of the same list.
        let next_page = |token: &str| {
            let mut next = request.clone();
            next.query.retain(|(k, _)| k != "page_token");
            next.query.push(("page_token".into(), token.to_owned()));
            next
        };
        // The resource, by its name: then its operations.
        if let Some((collection, field, name)) = &target.lookup
            && request.path != "v1/operations"
        {
            let found = body
                .get(*field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|r| r.get("id").and_then(Value::as_str))
                .map(str::to_owned);
            return match (found, token) {
                (Some(id), _) => {
                    Recovery::Next(list_operations(target.kind, Some(&id), None), None)
                }
                (None, Some(token)) => Recovery::Next(next_page(&token), None),
                (None, None) => Recovery::NotFound(format!(
                    "no resource named {name:?} exists in {collection}, so the start was most likely not processed; delete and re-create this LongRunningOperation to send it again"
                )),
            };
        }
        // Operations of that type (and resource), started since the request was sent (a
        // minute of clock skew allowed).
        let since = sent_at - jiff::SignedDuration::from_secs(60);
        let filtered_resource = request
            .query
            .iter()
            .find(|(k, _)| k == "filter.resource_id")
            .map(|(_, v)| v.as_str());
        let mut found: Option<Box<Started>> = candidate.map(|c| Box::new(c.clone()));
        for op in body
            .get("operations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let type_matches = op
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == target.kind)
                && filtered_resource.is_none_or(|r| {
                    op.get("resource_id")
                        .and_then(Value::as_str)
                        .is_none_or(|id| id == r)
                });
            let recent = op
                .get("started_at")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_none_or(|t| t >= since);
            let Some(id) = op
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
            else {
                continue;
            };
            if !(type_matches && recent) {
                continue;
            }
            if let Some(first) = &found {
                return Recovery::NotFound(format!(
                    "several {} operations began since the start was sent ({} and {id}); the one this start began cannot be told",
                    target.kind,
                    first.handle.id.clone().unwrap_or_default()
                ));
            }
            found = Some(Box::new(Started {
                handle: OperationHandle {
                    id: Some(id.to_owned()),
                    ..OperationHandle::default()
                },
                observation: observe(op),
            }));
        }
        match (found, token) {
            (found, Some(token)) => Recovery::Next(next_page(&token), found),
            (Some(started), None) => Recovery::Found(started),
            (None, None) => Recovery::NotFound(format!(
                "no {} operation{} began since the start was sent",
                target.kind,
                target
                    .resource_id
                    .as_deref()
                    .map(|id| format!(" on {id}"))
                    .unwrap_or_default()
            )),
        }
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

/// What a start request acts on, to find its operation again (the OpenAPI document's paths
/// and `Operation.Type`s).
struct Target {
    /// The operation type, e.g. `TYPE_CREATE_CLUSTER`.
    kind: &'static str,
    /// The resource an update or delete acts on.
    resource_id: Option<String>,
    /// For a create: the collection to find the new resource in by name, the field of the
    /// list answer holding them, and the name.
    lookup: Option<(&'static str, &'static str, String)>,
}

impl Target {
    fn of(start: &StartRequest) -> Option<Target> {
        let path = start.path.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let body = start.body.as_ref();
        let name = |object: &str| {
            body.and_then(|b| b.get(object))
                .and_then(|o| o.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let create = |kind, collection, field, object: &str| Target {
            kind,
            resource_id: None,
            lookup: name(object).map(|n| (collection, field, n)),
        };
        let on = |kind, id: &str| Target {
            kind,
            resource_id: Some(id.to_owned()),
            lookup: None,
        };
        use crate::api::HttpMethod::{Delete, Patch, Post};
        Some(match (start.method, segments.as_slice()) {
            (Post, ["clusters"]) => {
                create("TYPE_CREATE_CLUSTER", "v1/clusters", "clusters", "cluster")
            }
            (Patch, ["clusters", id]) => on("TYPE_UPDATE_CLUSTER", id),
            (Delete, ["clusters", id]) => on("TYPE_DELETE_CLUSTER", id),
            (Post, ["networks"]) => {
                create("TYPE_CREATE_NETWORK", "v1/networks", "networks", "network")
            }
            (Patch, ["networks", id]) => on("TYPE_UPDATE_NETWORK", id),
            (Delete, ["networks", id]) => on("TYPE_DELETE_NETWORK", id),
            (Post, ["serverless", "clusters"]) => create(
                "TYPE_CREATE_SERVERLESS_CLUSTER",
                "v1/serverless/clusters",
                "serverless_clusters",
                "serverless_cluster",
            ),
            (Patch, ["serverless", "clusters", id]) => on("TYPE_UPDATE_SERVERLESS_CLUSTER", id),
            (Delete, ["serverless", "clusters", id]) => on("TYPE_DELETE_SERVERLESS_CLUSTER", id),
            (Post, ["network", _, "network-peerings"]) => Target {
                kind: "TYPE_CREATE_NETWORK_PEERING",
                resource_id: None,
                lookup: None,
            },
            (Delete, ["network", _, "network-peerings", id]) => {
                on("TYPE_DELETE_NETWORK_PEERING", id)
            }
            (Post, ["serverless", "private-links"]) => Target {
                kind: "TYPE_CREATE_SERVERLESS_PRIVATE_LINK",
                resource_id: None,
                lookup: None,
            },
            (Patch, ["serverless", "private-links", id]) => {
                on("TYPE_UPDATE_SERVERLESS_PRIVATE_LINK", id)
            }
            (Delete, ["serverless", "private-links", id]) => {
                on("TYPE_DELETE_SERVERLESS_PRIVATE_LINK", id)
            }
            (Post, ["shadow-links"]) => Target {
                kind: "TYPE_CREATE_SHADOW_LINK",
                resource_id: None,
                lookup: None,
            },
            (Patch, ["shadow-links", id]) => on("TYPE_UPDATE_SHADOW_LINK", id),
            (Delete, ["shadow-links", id]) => on("TYPE_DELETE_SHADOW_LINK", id),
            _ => return None,
        })
    }
}

/// `GET v1/operations` filtered by type (and resource), a page of up to 100.
fn list_operations(kind: &str, resource_id: Option<&str>, page_token: Option<&str>) -> RequestSpec {
    let mut request = RequestSpec::get("v1/operations".into());
    request.query.push(("filter.type_in".into(), kind.into()));
    if let Some(id) = resource_id {
        request.query.push(("filter.resource_id".into(), id.into()));
    }
    request.query.push(("page_size".into(), "100".into()));
    if let Some(token) = page_token {
        request.query.push(("page_token".into(), token.into()));
    }
    request
}

/// `GET {collection}?filter.name_contains={name}`: the resource a create may have made.
fn lookup(collection: &str, name: &str, page_token: Option<&str>) -> RequestSpec {
    let mut request = RequestSpec::get(collection.into());
    request
        .query
        .push(("filter.name_contains".into(), name.into()));
    request.query.push(("page_size".into(), "100".into()));
    if let Some(token) = page_token {
        request.query.push(("page_token".into(), token.into()));
    }
    request
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
        // The Create Cluster answer from Redpanda Cloud's "Long-running operations" page.
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

    fn start(method: &str, path: &str, body: Value) -> StartRequest {
        serde_json::from_value(json!({"method": method, "path": path, "body": body})).unwrap()
    }

    fn listed(ops: Value, token: Option<&str>) -> HttpAnswer {
        let mut body = json!({"operations": ops});
        if let Some(t) = token {
            body["next_page_token"] = json!(t);
        }
        answer(200, body)
    }

    #[test]
    fn a_lost_create_is_found_by_the_resource_name_then_its_operation() {
        let sent = "2026-12-04T12:00:00Z".parse::<jiff::Timestamp>().unwrap();
        let create = start(
            "POST",
            "v1/clusters",
            json!({"cluster": {"name": "prod-1"}}),
        );
        let first = Redpanda.recovery_request(&create, sent).unwrap();
        assert_eq!(first.path, "v1/clusters");
        assert!(
            first
                .query
                .contains(&("filter.name_contains".into(), "prod-1".into()))
        );
        // Two clusters contain the name; only one is it.
        let clusters = answer(
            200,
            json!({"clusters": [
            {"id": "c-other", "name": "prod-10"}, {"id": "c-1", "name": "prod-1"}]}),
        );
        let Recovery::Next(next, None) =
            Redpanda.read_recovery(&create, sent, None, &first, &clusters)
        else {
            panic!("expected the operations of c-1");
        };
        assert_eq!(next.path, "v1/operations");
        assert!(
            next.query
                .contains(&("filter.type_in".into(), "TYPE_CREATE_CLUSTER".into()))
        );
        assert!(
            next.query
                .contains(&("filter.resource_id".into(), "c-1".into()))
        );
        let ops = listed(
            json!([{"id": "op-1", "type": "TYPE_CREATE_CLUSTER", "state": "STATE_IN_PROGRESS",
                    "resource_id": "c-1", "started_at": "2026-12-04T12:00:01Z"}]),
            None,
        );
        let Recovery::Found(started) = Redpanda.read_recovery(&create, sent, None, &next, &ops)
        else {
            panic!("expected op-1");
        };
        assert_eq!(started.handle.id.as_deref(), Some("op-1"));
        assert_eq!(started.observation.state, UpstreamState::Running);
    }

    #[test]
    fn no_resource_none_or_several_operations_leave_the_outcome_unknown() {
        let sent = "2026-12-04T12:00:00Z".parse::<jiff::Timestamp>().unwrap();
        let create = start(
            "POST",
            "v1/clusters",
            json!({"cluster": {"name": "prod-1"}}),
        );
        let none = answer(200, json!({"clusters": []}));
        assert!(matches!(
            Redpanda.read_recovery(&create, sent, None, &Redpanda.recovery_request(&create, sent).unwrap(), &none),
            Recovery::NotFound(why) if why.contains("not processed")
        ));
        let delete = start("DELETE", "/v1/clusters/c-1", Value::Null);
        let request = Redpanda.recovery_request(&delete, sent).unwrap();
        assert!(
            request
                .query
                .contains(&("filter.type_in".into(), "TYPE_DELETE_CLUSTER".into()))
        );
        // An older delete of the same cluster is not this one.
        let old = listed(
            json!([{"id": "op-0", "type": "TYPE_DELETE_CLUSTER",
                                 "started_at": "2026-12-01T00:00:00Z"}]),
            None,
        );
        assert!(matches!(
            Redpanda.read_recovery(&delete, sent, None, &request, &old),
            Recovery::NotFound(_)
        ));
        // One on this page, another on the next: ambiguous.
        let page = listed(
            json!([{"id": "op-1", "type": "TYPE_DELETE_CLUSTER",
                                  "started_at": "2026-12-04T12:00:02Z"}]),
            Some("t2"),
        );
        let Recovery::Next(next, Some(found)) =
            Redpanda.read_recovery(&delete, sent, None, &request, &page)
        else {
            panic!("expected the next page");
        };
        assert!(next.query.contains(&("page_token".into(), "t2".into())));
        let page2 = listed(
            json!([{"id": "op-2", "type": "TYPE_DELETE_CLUSTER",
                                   "started_at": "2026-12-04T12:00:03Z"}]),
            None,
        );
        assert!(matches!(
            Redpanda.read_recovery(&delete, sent, Some(&found), &next, &page2),
            Recovery::NotFound(why) if why.contains("op-1") && why.contains("op-2")
        ));
        // A transient answer is looked at again; a refusal is final.
        assert!(matches!(
            Redpanda.read_recovery(&delete, sent, None, &request, &answer(503, json!({}))),
            Recovery::Failed(_)
        ));
        assert!(matches!(
            Redpanda.read_recovery(&delete, sent, None, &request, &answer(403, json!({}))),
            Recovery::NotFound(_)
        ));
        assert!(
            Redpanda
                .recovery_request(&start("POST", "v1/users", json!({})), sent)
                .is_none()
        );
    }
}
