//! Google Compute Engine / Deployment Manager operations (`compute#operation`,
//! `deploymentmanager#operation`).
//!
//! `status` PENDING / RUNNING / DONE (an unknown word keeps polling). A `DONE` operation is
//! terminal: it fails when it carries `error.errors[]` or a non-2xx `httpErrorStatusCode`, or
//! only one of `httpErrorStatusCode` / `httpErrorMessage` (then `UNKNOWN`); otherwise it
//! succeeds, with `targetLink` / `targetId` as its result. An error `RESOURCE_NOT_READY` on an
//! operation that is not `DONE` keeps polling (as terraform-provider-google does); on a `DONE`
//! one it is the failure. Every `error.errors[]` entry, with its `errorDetails`, and the
//! `warnings[]` of a failed operation are kept in `error.details`; the warnings of any other
//! operation become its note. `progress` is clamped to 0..=100 (the operator keeps the highest
//! value seen), 100 once succeeded.
//!
//! The start request carries the request id in the query parameter `compute.requestIdParameter`
//! (`requestId` for Compute Engine) when the provider sets one; Deployment Manager has none.
//! The handle is the operation's `selfLink` as written (`status.operation.url`) and its `name`;
//! links name `https://www.googleapis.com/…` whatever host was called, so a poll goes to the
//! provider's `baseURL` with the link's path after the API's version root
//! (see [`super::google_links`]). An adopted operation may be given by `url` (its selfLink) or
//! by `name`, a path relative to the provider's `baseURL` (e.g.
//! `projects/p/zones/z/operations/operation-1`).
//!
//! With the provider's `compute.longPoll`, a poll is `POST {selfLink}/wait`: the upstream holds
//! the answer until the operation is done or its own deadline passes (Compute: 2 minutes; it may
//! also answer at once), so completion is seen within one round trip with far fewer requests. A
//! wait's answer is read like a GET's: it is never taken as done without `status: DONE`.
//! Compute has no cancel (`DELETE …/operations/{op}` only deletes the record).
//!
//! With the provider's `spec.list`, the operations are listed (`zoneOperations.list`,
//! `regionOperations.list`, `globalOperations.list` or `globalOperations.aggregatedList`):
//! `GET {list.path}` with `maxResults` (the page size), `pageToken` and the configured `filter`
//! (Compute's syntax, e.g. `status != DONE`). The answer is an `OperationList` (`items`: the
//! operations), an `OperationAggregatedList` (`items`: a map from scope — `zones/…`,
//! `regions/…`, `global` — to `{operations, warning}`; a scope in `unreachables` lists
//! nothing, and its operations are then read by themselves) or Deployment Manager's
//! `OperationsListResponse` (`operations`). Each entry is read as a polled operation; its key
//! is its `selfLink`'s resource path, `projects/P/zones/Z/operations/NAME` (or `regions/R`,
//! `global`), which is what [`Dialect::list_key`] gives for a handle: unambiguous across
//! zones, where names alone need not be.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error_details::{self, bound, detail, google_throttled, text};
use super::google_links::resource_path;
use super::{
    Dialect, HttpAnswer, ListOutcome, ListPage, Observation, ParseError, RequestSpec, Started,
    UpstreamState, list_body, list_page_request, page_token_of,
};
use crate::api::{ErrorDetail, ListSpec, OperationError, OperationHandle, StartRequest};

/// The Compute dialect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compute {
    /// Poll with `POST {selfLink}/wait`.
    pub long_poll: bool,
    /// The query parameter that carries the request id on the start request.
    pub request_id_parameter: Option<String>,
}

/// The error code that means "try again", not "failed" (terraform-provider-google's rule).
const RESOURCE_NOT_READY: &str = "RESOURCE_NOT_READY";

impl Dialect for Compute {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        self.request_id_parameter.is_some()
    }

    fn can_cancel(&self) -> bool {
        false
    }

    fn long_polls(&self) -> bool {
        self.long_poll
    }

    fn start_request(&self, start: &StartRequest, request_id: &str) -> RequestSpec {
        match &self.request_id_parameter {
            Some(name) => RequestSpec::from_start_with_query_key(start, name, request_id),
            None => RequestSpec::from_start(start),
        }
    }

    fn no_idempotency_hint(&self) -> &'static str {
        "this provider sends no request id (spec.compute.requestIdParameter is unset; Compute Engine takes requestId, Deployment Manager none)"
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        let Some(target) = handle.url.as_ref().or(handle.name.as_ref()) else {
            return Err(ParseError::Shape(
                "a compute operation is polled by its selfLink; set spec.operation.url (or name, relative to baseURL)".into(),
            ));
        };
        let path = resource_path(target);
        if !self.long_poll {
            return Ok(RequestSpec::get(path));
        }
        Ok(RequestSpec {
            method: reqwest::Method::POST,
            path: format!("{}/wait", path.trim_end_matches('/')),
            query: vec![],
            headers: vec![],
            body: None,
        })
    }

    fn cancel_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let op = answer.json()?;
        let observation = observe(&op)?;
        let text = |field: &str| {
            op.get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let name = text("name");
        // selfLink, else the zonal/regional operations collection (both are absolute URLs).
        let url = text("selfLink").or_else(|| {
            let scope = text("zone").or_else(|| text("region"))?;
            Some(format!(
                "{}/operations/{}",
                scope.trim_end_matches('/'),
                name.as_deref()?
            ))
        });
        if name.is_none() && url.is_none() && observation.state != UpstreamState::Succeeded {
            return Err(ParseError::Shape(
                "the start response is not a compute operation: it has neither `selfLink` nor `name`"
                    .into(),
            ));
        }
        Ok(Started {
            handle: OperationHandle {
                name,
                url,
                ..OperationHandle::default()
            },
            observation,
        })
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        observe(&answer.json()?)
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        // {"error": {"code": <HTTP>, "message", "errors": [{"domain", "reason", "message"}],
        //  "status"?, "details"?}}
        let mut error = error_details::envelope_error(answer);
        let envelope = answer.json().ok();
        let entries: Vec<ErrorDetail> = envelope
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|e| e.get("errors"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| ErrorDetail {
                reason: text(e.get("reason")),
                domain: text(e.get("domain")),
                field: text(e.get("location")),
                message: text(e.get("message")),
                ..detail("Error")
            })
            .collect();
        if let Some(reason) = entries.first().and_then(|e| e.reason.clone()) {
            error.provider_code = Some(reason);
        }
        let mut details = entries;
        details.append(&mut error.details);
        bound(&mut details);
        error.details = details;
        error
    }

    fn is_throttled(&self, error: &OperationError) -> bool {
        google_throttled(error)
    }

    /// `GET {list.path}?maxResults=…&pageToken=…` with the configured `filter`; `None` without
    /// a `list.path` (the CRD requires one: Compute has no default collection).
    fn list_request(&self, list: &ListSpec, page_token: Option<&str>) -> Option<RequestSpec> {
        let path = list.path.clone()?;
        Some(list_page_request(
            path,
            list,
            ("maxResults", "pageToken"),
            page_token,
        ))
    }

    /// An operation is listed under its `selfLink`'s resource path (see [`operation_key`]).
    fn list_key(&self, handle: &OperationHandle) -> Option<String> {
        operation_key(handle.url.as_ref().or(handle.name.as_ref())?)
    }

    /// An `OperationList`, an `OperationAggregatedList` or a Deployment Manager
    /// `OperationsListResponse` (see the module documentation). An entry that is not an
    /// operation, or has no link to key it by, is left out (its operation is then read by
    /// itself).
    fn read_list(&self, answer: &HttpAnswer) -> ListOutcome {
        let body = match list_body(self, answer) {
            Ok(body) if body.is_object() => body,
            Ok(_) => return ListOutcome::Failed("the answer is not an OperationList".into()),
            Err(outcome) => return outcome,
        };
        let operations: Vec<&Value> = match body.get("items").or_else(|| body.get("operations")) {
            // Compute omits `items` when a page has none.
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) => items.iter().collect(),
            // Aggregated: {"zones/z": {"operations": [...]}, "regions/r": {"warning": {...}}}.
            Some(Value::Object(scopes)) => scopes
                .values()
                .filter_map(|scoped| scoped.get("operations").and_then(Value::as_array))
                .flatten()
                .collect(),
            Some(_) => {
                return ListOutcome::Failed(
                    "the answer is not an OperationList (`items` is neither a list nor a map of scopes)"
                        .into(),
                );
            }
        };
        let entries = operations
            .into_iter()
            .filter_map(|op| Some((entry_key(op)?, observe(op).ok()?)))
            .collect();
        ListOutcome::Page(ListPage {
            entries,
            next_page_token: page_token_of(&body, "nextPageToken"),
        })
    }
}

/// The list key of an operation link (its `selfLink`, or a path relative to `baseURL`): its
/// resource path, `projects/P/zones/Z/operations/NAME` (`regions/R`, `global`); `None` when it
/// names no operation in a collection (a bare name, which a list could not tell apart across
/// zones).
fn operation_key(link: &str) -> Option<String> {
    let path = resource_path(link);
    let path = path.trim_matches('/');
    let (collection, name) = path.rsplit_once("/operations/")?;
    (!collection.is_empty() && !name.is_empty() && !name.contains('/')).then(|| path.to_owned())
}

/// The list key of a listed operation: from its `selfLink`, else from its `zone` or `region`
/// link and its `name`.
fn entry_key(op: &Value) -> Option<String> {
    let text = |field: &str| {
        op.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(link) = text("selfLink") {
        return operation_key(link);
    }
    let scope = text("zone").or_else(|| text("region"))?;
    operation_key(&format!(
        "{}/operations/{}",
        scope.trim_end_matches('/'),
        text("name")?
    ))
}

/// Reads a compute operation into an observation.
fn observe(op: &Value) -> Result<Observation, ParseError> {
    let Some(obj) = op.as_object() else {
        return Err(ParseError::Shape(
            "a compute operation must be a JSON object".into(),
        ));
    };
    let Some(status) = obj.get("status").and_then(Value::as_str) else {
        return Err(ParseError::Shape(
            "a compute operation must have a string `status`".into(),
        ));
    };
    let errors: Vec<&Value> = obj
        .get("error")
        .and_then(|e| e.get("errors"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let code_of = |e: &Value| e.get("code").and_then(Value::as_str).map(str::to_owned);
    let messages = join(errors.iter().filter_map(|e| {
        e.get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
    }));
    let warnings: Vec<&Value> = obj
        .get("warnings")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let warning_note = Some(join(
        warnings
            .iter()
            .filter_map(|w| w.get("message").and_then(Value::as_str)),
    ))
    .filter(|w| !w.is_empty())
    .map(|w| format!("upstream warnings: {w}"));
    let progress = obj
        .get("progress")
        .and_then(Value::as_f64)
        .filter(|p| p.is_finite())
        .map(|p| p.clamp(0.0, 100.0).floor() as i32);
    let mut observation = Observation {
        state: UpstreamState::Running,
        upstream_state: Some(status.to_owned()),
        progress,
        message: warning_note,
        ..Observation::default()
    };
    match status {
        "PENDING" => {
            observation.state = UpstreamState::Pending;
            return Ok(observation);
        }
        "DONE" => {}
        // RUNNING, and any new word: a new enum value is more likely additive than terminal.
        _ => {
            if errors
                .iter()
                .any(|e| code_of(e).as_deref() == Some(RESOURCE_NOT_READY))
            {
                // Not terminal while the operation runs: keep polling (terraform-provider-google).
                observation.message = Some(format!(
                    "upstream reports {RESOURCE_NOT_READY} (not terminal, polling on): {messages}"
                ));
            }
            return Ok(observation);
        }
    }
    let http_status = obj.get("httpErrorStatusCode").and_then(Value::as_i64);
    let http_message = obj
        .get("httpErrorMessage")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let http_failed = http_status.is_some_and(|s| !(200..300).contains(&s));
    let http_half = http_status.is_none() && http_message.is_some();
    if errors.is_empty() && !http_failed && !http_half {
        observation.state = UpstreamState::Succeeded;
        observation.progress = Some(100);
        let mut result = Map::new();
        for field in ["targetLink", "targetId"] {
            if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
                result.insert(field.to_owned(), v.clone());
            }
        }
        observation.resource_id = ["targetLink", "targetId"]
            .iter()
            .find_map(|f| obj.get(*f).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        observation.result = (!result.is_empty()).then_some(Value::Object(result));
        return Ok(observation);
    }
    let provider_code = errors.first().and_then(|e| code_of(e));
    // Only one of httpErrorStatusCode / httpErrorMessage, and no error list: UNKNOWN.
    let only_one = errors.is_empty() && (http_message.is_none() || http_status.is_none());
    let code = if only_one {
        "UNKNOWN"
    } else {
        code_for(http_status, provider_code.as_deref())
    };
    let message = match (messages.is_empty(), http_message) {
        (false, _) => messages,
        (true, Some(m)) => m.to_owned(),
        (true, None) => format!(
            "the operation failed with HTTP {}",
            http_status.unwrap_or_default()
        ),
    };
    let mut details: Vec<ErrorDetail> = Vec::new();
    for e in &errors {
        details.push(ErrorDetail {
            reason: code_of(e),
            field: text(e.get("location")),
            message: text(e.get("message")),
            ..detail("Error")
        });
        for d in e
            .get("errorDetails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            details.extend(error_detail(d));
        }
    }
    for w in &warnings {
        details.push(ErrorDetail {
            reason: text(w.get("code")),
            message: text(w.get("message")),
            metadata: key_values(w.get("data")),
            ..detail("Warning")
        });
    }
    bound(&mut details);
    // The warnings are in the details: the note would repeat them.
    observation.message = None;
    observation.state = UpstreamState::Failed;
    observation.error = Some(OperationError {
        code: code.to_owned(),
        provider_code,
        http_status: http_status.and_then(|s| i32::try_from(s).ok()),
        message,
        details,
    });
    Ok(observation)
}

/// One `errorDetails[]` entry of a Compute error: `errorInfo`, `quotaInfo`, `help` or
/// `localizedMessage`.
fn error_detail(d: &Value) -> Vec<ErrorDetail> {
    let mut out = Vec::new();
    if let Some(info) = d.get("errorInfo") {
        out.push(ErrorDetail {
            reason: text(info.get("reason")),
            domain: text(info.get("domain")),
            metadata: info
                .get("metadatas")
                .or_else(|| info.get("metadata"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), text(Some(v)).unwrap_or_else(|| v.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            ..detail("ErrorInfo")
        });
    }
    if let Some(quota) = d.get("quotaInfo").and_then(Value::as_object) {
        let mut metadata = BTreeMap::new();
        for (k, v) in quota {
            if k == "dimensions" {
                for (dk, dv) in v.as_object().into_iter().flatten() {
                    metadata.insert(
                        format!("dimensions.{dk}"),
                        text(Some(dv)).unwrap_or_else(|| dv.to_string()),
                    );
                }
            } else if let Some(t) = text(Some(v)) {
                metadata.insert(k.clone(), t);
            }
        }
        out.push(ErrorDetail {
            field: text(quota.get("metricName")),
            reason: text(quota.get("limitName")),
            metadata,
            ..detail("QuotaFailure")
        });
    }
    for link in d
        .get("help")
        .and_then(|h| h.get("links"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(ErrorDetail {
            message: text(link.get("description")),
            metadata: text(link.get("url"))
                .map(|u| BTreeMap::from([("url".to_owned(), u)]))
                .unwrap_or_default(),
            ..detail("Help")
        });
    }
    if let Some(m) = d.get("localizedMessage") {
        out.push(ErrorDetail {
            message: text(m.get("message")),
            metadata: text(m.get("locale"))
                .map(|l| BTreeMap::from([("locale".to_owned(), l)]))
                .unwrap_or_default(),
            ..detail("LocalizedMessage")
        });
    }
    out
}

/// A warning's `data: [{key, value}]` as a map.
fn key_values(data: Option<&Value>) -> BTreeMap<String, String> {
    data.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            Some((
                text(kv.get("key"))?,
                text(kv.get("value")).unwrap_or_default(),
            ))
        })
        .collect()
}

/// The `google.rpc.Code` name of a failed operation, from its `httpErrorStatusCode` (and its
/// first error code, to tell a quota failure or an existing resource apart).
fn code_for(http_status: Option<i64>, provider_code: Option<&str>) -> &'static str {
    let provider = provider_code.unwrap_or_default();
    let quota = provider.contains("QUOTA_EXCEEDED");
    match http_status {
        Some(404) => "NOT_FOUND",
        Some(400) => "INVALID_ARGUMENT",
        Some(409) if provider.contains("ALREADY_EXISTS") => "ALREADY_EXISTS",
        Some(409) => "ABORTED",
        Some(403) | None if quota => "RESOURCE_EXHAUSTED",
        _ => "UNKNOWN",
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    parts.collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Compute = Compute {
        long_poll: false,
        request_id_parameter: None,
    };

    /// A zonal compute operation, as the Compute reference shows them.
    fn operation(status: &str) -> Value {
        json!({
            "kind": "compute#operation",
            "id": "7123423453456654321",
            "name": "operation-1555802826515-586fe92d0a605-6166491c-7051043e",
            "zone": "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a",
            "operationType": "insert",
            "targetLink": "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/instances/vm-1",
            "targetId": "5123321654456321123",
            "status": status,
            "user": "example@example.com",
            "progress": 0,
            "insertTime": "2019-04-29T11:08:32.190-07:00",
            "selfLink": "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/operations/operation-1555802826515-586fe92d0a605-6166491c-7051043e"
        })
    }

    fn answer(body: &Value) -> HttpAnswer {
        HttpAnswer {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    fn poll(op: Value) -> Observation {
        PLAIN.parse_operation(&answer(&op)).unwrap()
    }

    fn with(mut op: Value, fields: Value) -> Value {
        for (k, v) in fields.as_object().unwrap() {
            op[k] = v.clone();
        }
        op
    }

    #[test]
    fn deployment_manager_done_operation_from_the_seed_succeeds_with_its_target() {
        // Deployment Manager's guide "Managing long-running operations", its example verbatim.
        let obs = poll(json!({
            "kind": "deploymentmanager#operation",
            "id": "7123423453456654321",
            "name": "operation-11233234311678-587af2c0xyz9c-0987fa54-baccd59f",
            "operationType": "insert",
            "targetLink": "https://www.googleapis.com/deploymentmanager/v2/projects/example-project/global/deployments/wordpress-1",
            "targetId": "5123321654456321123",
            "status": "DONE",
            "user": "example@example.com",
            "progress": 100,
            "insertTime": "2019-04-29T11:08:32.190-07:00",
            "startTime": "2019-04-29T11:08:32.200-07:00",
            "endTime": "2019-04-29T11:09:38.176-07:00",
            "selfLink": "https://www.googleapis.com/deploymentmanager/v2/projects/example-project/global/operations/operation-11233234311678-587af2c0xyz9c-0987fa54-baccd59f"
        }));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.upstream_state.as_deref(), Some("DONE"));
        assert_eq!(obs.progress, Some(100));
        assert_eq!(
            obs.resource_id.as_deref(),
            Some(
                "https://www.googleapis.com/deploymentmanager/v2/projects/example-project/global/deployments/wordpress-1"
            )
        );
        assert_eq!(
            obs.result,
            Some(json!({
                "targetLink": "https://www.googleapis.com/deploymentmanager/v2/projects/example-project/global/deployments/wordpress-1",
                "targetId": "5123321654456321123"
            }))
        );
        assert_eq!(obs.error, None);
    }

    #[test]
    fn pending_and_running_are_not_terminal() {
        let obs = poll(operation("PENDING"));
        assert_eq!(obs.state, UpstreamState::Pending);
        assert_eq!(obs.upstream_state.as_deref(), Some("PENDING"));
        let obs = poll(with(operation("RUNNING"), json!({"progress": 40})));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.progress, Some(40));
    }

    #[test]
    fn an_unknown_status_keeps_polling_with_the_word_kept() {
        let obs = poll(operation("STOPPING"));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.upstream_state.as_deref(), Some("STOPPING"));
    }

    #[test]
    fn progress_is_clamped_absent_stays_absent_and_done_is_100() {
        assert_eq!(
            poll(with(operation("RUNNING"), json!({"progress": 250}))).progress,
            Some(100)
        );
        assert_eq!(
            poll(with(operation("RUNNING"), json!({"progress": -5}))).progress,
            Some(0)
        );
        let mut running = operation("RUNNING");
        running.as_object_mut().unwrap().remove("progress");
        assert_eq!(poll(running.clone()).progress, None);
        running["status"] = json!("DONE");
        assert_eq!(poll(running).progress, Some(100));
    }

    #[test]
    fn done_with_errors_fails_with_the_first_code_the_http_status_and_all_messages() {
        // A real Deployment Manager failure shape (§2.1).
        let obs = poll(with(
            operation("DONE"),
            json!({
                "progress": 100,
                "httpErrorStatusCode": 400,
                "httpErrorMessage": "BAD REQUEST",
                "error": {"errors": [
                    {"code": "INVALID_FIELD_VALUE", "location": "machineType", "message": "Invalid value for field 'resource.machineType'"},
                    {"code": "CONDITION_NOT_MET", "message": "second"}
                ]}
            }),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.provider_code.as_deref(), Some("INVALID_FIELD_VALUE"));
        assert_eq!(error.http_status, Some(400));
        assert_eq!(
            error.message,
            "Invalid value for field 'resource.machineType'; second"
        );
        assert_eq!(obs.progress, Some(100));
        assert_eq!(obs.result, None);
    }

    #[test]
    fn http_error_statuses_map_to_rpc_codes() {
        let fail = |status: i64, code: &str| {
            let obs = poll(with(
                operation("DONE"),
                json!({"httpErrorStatusCode": status, "httpErrorMessage": "X",
                       "error": {"errors": [{"code": code, "message": "m"}]}}),
            ));
            obs.error.unwrap().code
        };
        assert_eq!(fail(404, "RESOURCE_NOT_FOUND"), "NOT_FOUND");
        assert_eq!(fail(400, "INVALID_FIELD_VALUE"), "INVALID_ARGUMENT");
        assert_eq!(fail(409, "RESOURCE_ALREADY_EXISTS"), "ALREADY_EXISTS");
        assert_eq!(fail(409, "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"), "ABORTED");
        assert_eq!(fail(403, "QUOTA_EXCEEDED"), "RESOURCE_EXHAUSTED");
        assert_eq!(fail(403, "ZONE_RESOURCE_POOL_EXHAUSTED"), "UNKNOWN");
        assert_eq!(fail(500, "INTERNAL_ERROR"), "UNKNOWN");
    }

    #[test]
    fn done_without_error_but_a_non_2xx_http_status_fails() {
        let obs = poll(with(
            operation("DONE"),
            json!({"httpErrorStatusCode": 404, "httpErrorMessage": "NOT FOUND"}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "NOT_FOUND");
        assert_eq!(error.http_status, Some(404));
        assert_eq!(error.message, "NOT FOUND");
        assert_eq!(error.provider_code, None);
    }

    #[test]
    fn done_with_only_one_of_the_http_error_fields_fails_as_unknown() {
        let obs = poll(with(operation("DONE"), json!({"httpErrorStatusCode": 503})));
        assert_eq!(obs.state, UpstreamState::Failed);
        assert_eq!(obs.error.as_ref().unwrap().code, "UNKNOWN");
        assert_eq!(obs.error.unwrap().http_status, Some(503));
        let obs = poll(with(
            operation("DONE"),
            json!({"httpErrorMessage": "SERVICE UNAVAILABLE"}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "UNKNOWN");
        assert_eq!(error.message, "SERVICE UNAVAILABLE");
    }

    #[test]
    fn done_with_a_2xx_http_status_and_no_error_succeeds() {
        let obs = poll(with(operation("DONE"), json!({"httpErrorStatusCode": 200})));
        assert_eq!(obs.state, UpstreamState::Succeeded);
    }

    #[test]
    fn done_with_error_but_neither_http_field_fails_as_terraform_does() {
        let obs = poll(with(
            operation("DONE"),
            json!({"error": {"errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1."}]}}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        assert_eq!(error.http_status, None);
        let obs = poll(with(
            operation("DONE"),
            json!({"error": {"errors": [{"code": "UNSUPPORTED_OPERATION", "message": "no"}]}}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        assert_eq!(obs.error.unwrap().code, "UNKNOWN");
    }

    #[test]
    fn resource_not_ready_keeps_polling_while_running_and_fails_once_done() {
        let not_ready = json!({"error": {"errors": [{"code": "RESOURCE_NOT_READY",
            "message": "The resource 'projects/p/global/networks/n' is not ready"}]}});
        let obs = poll(with(operation("RUNNING"), not_ready.clone()));
        assert_eq!(obs.state, UpstreamState::Running);
        assert!(obs.error.is_none());
        assert!(
            obs.message.unwrap().contains("is not ready"),
            "the message says why"
        );
        // A DONE operation never changes again: it is terminal, and this is its failure.
        let obs = poll(with(operation("DONE"), not_ready));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.provider_code.as_deref(), Some("RESOURCE_NOT_READY"));
        assert!(error.message.contains("is not ready"));
    }

    #[test]
    fn warnings_become_the_note_of_a_success_and_details_of_a_failure() {
        let warnings = json!({"warnings": [{"code": "DISK_SIZE_LARGER_THAN_IMAGE_SIZE",
            "message": "Disk size: '50 GB' is larger than image size: '10 GB'.",
            "data": [{"key": "disk_size", "value": "50"}]}]});
        let obs = poll(with(operation("DONE"), warnings.clone()));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert!(obs.message.unwrap().contains("is larger than image size"));
        let failed = with(
            with(operation("DONE"), warnings),
            json!({"httpErrorStatusCode": 400, "httpErrorMessage": "BAD REQUEST",
                "error": {"errors": [{"code": "INVALID_FIELD_VALUE", "location": "disks[0]",
                    "message": "bad disk", "errorDetails": [
                        {"errorInfo": {"reason": "INVALID_DISK", "domain": "compute.googleapis.com", "metadatas": {"disk": "d"}}},
                        {"quotaInfo": {"metricName": "compute.googleapis.com/disks", "limitName": "DISKS-per-project", "limit": 10, "dimensions": {"region": "us"}}},
                        {"help": {"links": [{"description": "Disks", "url": "https://cloud.google.com/compute/docs/disks"}]}},
                        {"localizedMessage": {"locale": "en-US", "message": "bad disk!"}}]}]}}),
        );
        let error = poll(failed).error.unwrap();
        let kinds: Vec<&str> = error.details.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Error",
                "ErrorInfo",
                "QuotaFailure",
                "Help",
                "LocalizedMessage",
                "Warning"
            ]
        );
        assert_eq!(error.details[0].field.as_deref(), Some("disks[0]"));
        assert_eq!(error.details[1].metadata["disk"], "d");
        assert_eq!(error.details[2].metadata["limit"], "10");
        assert_eq!(error.details[2].metadata["dimensions.region"], "us");
        assert_eq!(error.details[5].metadata["disk_size"], "50");
    }

    #[test]
    fn malformed_operations_are_parse_errors() {
        for body in [
            &b"<html>"[..],
            b"[1]",
            br#"{"name":"x"}"#,
            br#"{"status":3}"#,
        ] {
            let answer = HttpAnswer {
                status: 200,
                headers: vec![],
                body: body.to_vec(),
            };
            assert!(PLAIN.parse_operation(&answer).is_err(), "{body:?}");
        }
    }

    #[test]
    fn start_sends_request_id_and_keeps_self_link_and_name() {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "projects/example-project/zones/us-central1-a/instances",
            "body": {"name": "vm-1", "machineType": "zones/us-central1-a/machineTypes/e2-small"}
        }))
        .unwrap();
        // Deployment Manager (the default) declares no request id: none is sent.
        assert!(!PLAIN.idempotent_start(&start));
        assert!(PLAIN.start_request(&start, "uid").query.is_empty());
        let engine = Compute {
            long_poll: false,
            request_id_parameter: Some("requestId".into()),
        };
        assert!(engine.idempotent_start(&start));
        let request = engine.start_request(&start, "0b4a5c1e-0000-4000-8000-000000000001");
        assert_eq!(request.method, reqwest::Method::POST);
        assert!(request.query.contains(&(
            "requestId".into(),
            "0b4a5c1e-0000-4000-8000-000000000001".into()
        )));
        let started = PLAIN.parse_started(&answer(&operation("PENDING"))).unwrap();
        assert_eq!(
            started.handle.url.as_deref(),
            operation("PENDING")["selfLink"].as_str()
        );
        assert_eq!(
            started.handle.name.as_deref(),
            Some("operation-1555802826515-586fe92d0a605-6166491c-7051043e")
        );
        assert_eq!(started.observation.state, UpstreamState::Pending);
        // Without selfLink, the zone's operations collection.
        let mut op = operation("RUNNING");
        op.as_object_mut().unwrap().remove("selfLink");
        let started = PLAIN.parse_started(&answer(&op)).unwrap();
        assert_eq!(
            started.handle.url.as_deref(),
            Some(
                "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/operations/operation-1555802826515-586fe92d0a605-6166491c-7051043e"
            )
        );
        assert!(
            PLAIN
                .parse_started(&answer(&json!({"status": "RUNNING"})))
                .is_err()
        );
    }

    #[test]
    fn a_user_request_id_is_not_overridden() {
        let start: StartRequest = serde_json::from_value(json!({
            "path": "projects/p/global/networks", "query": {"requestId": "mine"}
        }))
        .unwrap();
        let request = PLAIN.start_request(&start, "uid");
        assert_eq!(request.query, vec![("requestId".into(), "mine".into())]);
    }

    #[test]
    fn polls_get_the_self_link_or_long_poll_its_wait() {
        let handle = OperationHandle {
            name: Some("operation-1".into()),
            url: Some(
                "https://compute.example/compute/v1/projects/p/zones/z/operations/operation-1"
                    .into(),
            ),
            ..OperationHandle::default()
        };
        // The link's host is never called: its path after the version root, under baseURL.
        let get = PLAIN.poll_request(&handle).unwrap();
        assert_eq!(get.method, reqwest::Method::GET);
        assert_eq!(get.path, "projects/p/zones/z/operations/operation-1");
        let wait = Compute {
            long_poll: true,
            request_id_parameter: None,
        }
        .poll_request(&handle)
        .unwrap();
        assert_eq!(wait.method, reqwest::Method::POST);
        assert_eq!(wait.path, "projects/p/zones/z/operations/operation-1/wait");
        let by_name = OperationHandle {
            name: Some("projects/p/global/operations/operation-2".into()),
            ..OperationHandle::default()
        };
        assert_eq!(
            PLAIN.poll_request(&by_name).unwrap().path,
            "projects/p/global/operations/operation-2"
        );
        assert!(PLAIN.poll_request(&OperationHandle::default()).is_err());
    }

    #[test]
    fn a_wait_that_returns_before_done_is_still_running() {
        // `wait` is best effort: it may return at its deadline, or at once, with RUNNING.
        let wait = Compute {
            long_poll: true,
            request_id_parameter: None,
        };
        let obs = wait
            .parse_operation(&answer(&with(operation("RUNNING"), json!({"progress": 5}))))
            .unwrap();
        assert_eq!(obs.state, UpstreamState::Running);
    }

    #[test]
    fn there_is_no_cancel() {
        assert!(!PLAIN.can_cancel());
        assert_eq!(PLAIN.cancel_request(&OperationHandle::default()), None);
    }

    #[test]
    fn google_api_error_envelopes_keep_the_reason() {
        let answer = HttpAnswer {
            status: 404,
            headers: vec![],
            body: br#"{"error":{"code":404,"message":"The resource 'projects/p/zones/z/operations/x' was not found","errors":[{"message":"The resource 'projects/p/zones/z/operations/x' was not found","domain":"global","reason":"notFound"}]}}"#.to_vec(),
        };
        let error = PLAIN.parse_error(&answer);
        assert_eq!(error.code, "NOT_FOUND");
        assert_eq!(error.provider_code.as_deref(), Some("notFound"));
        assert_eq!(error.http_status, Some(404));
        assert!(error.message.contains("was not found"));
    }

    fn list_spec(path: &str, filter: Option<&str>, page_size: Option<u16>) -> ListSpec {
        ListSpec {
            path: Some(path.into()),
            query: filter
                .map(|f| [("filter".to_owned(), f.to_owned())].into())
                .unwrap_or_default(),
            page_size,
        }
    }

    #[test]
    fn lists_get_the_collection_with_max_results_and_the_page_token() {
        let list = list_spec(
            "projects/p/zones/us-central1-a/operations",
            Some("status != DONE"),
            Some(50),
        );
        let first = PLAIN.list_request(&list, None).unwrap();
        assert_eq!(first.method, reqwest::Method::GET);
        assert_eq!(first.path, "projects/p/zones/us-central1-a/operations");
        assert_eq!(
            first.query,
            [
                ("filter".to_owned(), "status != DONE".to_owned()),
                ("maxResults".to_owned(), "50".to_owned())
            ]
        );
        let next = PLAIN.list_request(&list, Some("tok")).unwrap();
        assert_eq!(
            next.query.last(),
            Some(&("pageToken".to_owned(), "tok".to_owned()))
        );
        // Compute has no default collection.
        assert_eq!(PLAIN.list_request(&ListSpec::default(), None), None);
    }

    #[test]
    fn list_keys_are_resource_paths_unambiguous_across_zones() {
        let by_link = OperationHandle {
            name: Some("operation-1".into()),
            url: Some(
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/operations/operation-1"
                    .into(),
            ),
            ..OperationHandle::default()
        };
        assert_eq!(
            PLAIN.list_key(&by_link).as_deref(),
            Some("projects/p/zones/us-central1-a/operations/operation-1")
        );
        let by_path = OperationHandle {
            name: Some("projects/p/zones/us-central1-a/operations/operation-1".into()),
            ..OperationHandle::default()
        };
        assert_eq!(PLAIN.list_key(&by_path), PLAIN.list_key(&by_link));
        // The same name in another zone is another operation.
        let other_zone = OperationHandle {
            name: Some("projects/p/zones/us-central1-b/operations/operation-1".into()),
            ..OperationHandle::default()
        };
        assert_ne!(PLAIN.list_key(&other_zone), PLAIN.list_key(&by_link));
        // A bare name cannot be told apart in a list: it is polled by itself.
        let bare = OperationHandle {
            name: Some("operation-1".into()),
            ..OperationHandle::default()
        };
        assert_eq!(PLAIN.list_key(&bare), None);
        assert_eq!(PLAIN.list_key(&OperationHandle::default()), None);
    }

    #[test]
    fn an_operation_list_page_reads_each_operation_under_its_key() {
        let mut no_link = operation("PENDING");
        no_link.as_object_mut().unwrap().remove("selfLink");
        no_link["name"] = json!("operation-2");
        let page = json!({
            "kind": "compute#operationList",
            "id": "projects/example-project/zones/us-central1-a/operations",
            "items": [with(operation("RUNNING"), json!({"progress": 40})), no_link, {"status": "RUNNING"}],
            "nextPageToken": "next",
            "selfLink": "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/operations"
        });
        let ListOutcome::Page(page) = PLAIN.read_list(&answer(&page)) else {
            panic!("a page");
        };
        let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "projects/example-project/zones/us-central1-a/operations/operation-1555802826515-586fe92d0a605-6166491c-7051043e",
                "projects/example-project/zones/us-central1-a/operations/operation-2"
            ]
        );
        assert_eq!(page.entries[0].1.progress, Some(40));
        assert_eq!(page.entries[1].1.state, UpstreamState::Pending);
        assert_eq!(page.next_page_token.as_deref(), Some("next"));
        // The last page of an empty list: no `items`, no token.
        let ListOutcome::Page(empty) =
            PLAIN.read_list(&answer(&json!({"kind": "compute#operationList"})))
        else {
            panic!("a page");
        };
        assert_eq!(empty, ListPage::default());
    }

    #[test]
    fn an_aggregated_list_reads_every_scope_and_skips_warnings() {
        let regional = json!({
            "kind": "compute#operation", "name": "operation-r", "status": "DONE",
            "region": "https://www.googleapis.com/compute/v1/projects/example-project/regions/us-central1",
            "selfLink": "https://www.googleapis.com/compute/v1/projects/example-project/regions/us-central1/operations/operation-r"
        });
        let page = json!({
            "kind": "compute#operationAggregatedList",
            "id": "projects/example-project/aggregated/operations",
            "items": {
                "zones/us-central1-a": {"operations": [operation("RUNNING")]},
                "regions/us-central1": {"operations": [regional]},
                "zones/europe-west1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE",
                    "message": "There are no results for scope 'zones/europe-west1-b' on this page.",
                    "data": [{"key": "scope", "value": "zones/europe-west1-b"}]}}
            },
            "unreachables": ["zones/asia-east1-c"]
        });
        let ListOutcome::Page(page) = PLAIN.read_list(&answer(&page)) else {
            panic!("a page");
        };
        let mut keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "projects/example-project/regions/us-central1/operations/operation-r",
                "projects/example-project/zones/us-central1-a/operations/operation-1555802826515-586fe92d0a605-6166491c-7051043e"
            ]
        );
        assert_eq!(page.next_page_token, None);
    }

    #[test]
    fn list_refusals_and_failures() {
        let refused = HttpAnswer {
            status: 400,
            headers: vec![],
            body: br#"{"error":{"code":400,"message":"Invalid value for field 'filter': 'zone = a'. Invalid list filter expression.","errors":[{"message":"Invalid value for field 'filter': 'zone = a'. Invalid list filter expression.","domain":"global","reason":"invalid"}]}}"#.to_vec(),
        };
        assert!(
            matches!(PLAIN.read_list(&refused), ListOutcome::Refused(m) if m.contains("Invalid list filter"))
        );
        // Throttling is no refusal, even as a 403.
        let throttled = HttpAnswer {
            status: 403,
            headers: vec![],
            body: br#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"message":"Rate Limit Exceeded","domain":"usageLimits","reason":"rateLimitExceeded"}]}}"#.to_vec(),
        };
        assert!(matches!(
            PLAIN.read_list(&throttled),
            ListOutcome::Failed(_)
        ));
        for body in [&b"<html>"[..], b"[]", br#"{"items": 3}"#] {
            let answer = HttpAnswer {
                status: 200,
                headers: vec![],
                body: body.to_vec(),
            };
            assert!(
                matches!(PLAIN.read_list(&answer), ListOutcome::Failed(_)),
                "{body:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let answer = HttpAnswer { status: 200, headers: vec![], body };
            let _ = PLAIN.read_list(&answer);
            let _ = PLAIN.parse_operation(&answer);
            let _ = PLAIN.parse_started(&answer);
            let _ = PLAIN.parse_error(&answer);
        }

        #[test]
        fn any_operation_shape_never_panics(
            status in proptest::option::of("[A-Z]{0,8}"),
            progress in proptest::option::of(proptest::num::f64::ANY),
            http in proptest::option::of(proptest::num::i64::ANY),
            codes in proptest::collection::vec("[A-Z_]{0,20}", 0..3),
        ) {
            let mut op = json!({"name": "operation-1"});
            if let Some(s) = status { op["status"] = json!(s); }
            if let Some(p) = progress { op["progress"] = json!(p); }
            if let Some(h) = http { op["httpErrorStatusCode"] = json!(h); }
            if !codes.is_empty() {
                op["error"] = json!({"errors": codes.iter().map(|c| json!({"code": c})).collect::<Vec<_>>()});
            }
            if let Ok(obs) = PLAIN.parse_operation(&answer(&op)) {
                proptest::prop_assert!(obs.progress.is_none_or(|p| (0..=100).contains(&p)));
                proptest::prop_assert_eq!(obs.error.is_some(), obs.state == UpstreamState::Failed);
            }
        }
    }
}
