//! JSON rendering of Google APIs: `google.longrunning.Operation` (AIP-151), Service
//! Management's rollout operations (Service Infrastructure's guide "Polling Long Running Operations"), `google.rpc.Status` with its details
//! (`google/rpc/error_details.proto`), the AIP-193 error envelope, and the front ends' refusal
//! of a query parameter the method does not declare.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::script::Outcome;
use super::state::OpRecord;
use super::surface::Surface;

/// The Google AIP-151 surface (`/v1`), for faults.
pub struct GoogleSurface;

impl Surface for GoogleSurface {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        Json(operation_json(op, now_ms)).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error_response(status, message)
    }

    fn not_found(&self, id: &str) -> Response {
        not_found(id)
    }
}

/// The query parameters every Google API method accepts (the discovery documents' common
/// `parameters`).
pub const SYSTEM_PARAMETERS: &[&str] = &[
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "upload_protocol",
    "uploadType",
];

/// The refusal of a query parameter that is neither a system parameter nor one of `declared`,
/// as Google's front ends answer it (`400 INVALID_ARGUMENT`, "Cannot bind query parameter",
/// with a `BadRequest` detail); `None` when every parameter is known.
pub fn unknown_query_parameter(query: &str, declared: &[&str]) -> Option<Response> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if SYSTEM_PARAMETERS.contains(&name) || declared.contains(&name) {
            continue;
        }
        let message = format!(
            "Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. Field '{name}' could not be found in request message."
        );
        let body = json!({"error": {
            "code": 400,
            "message": message,
            "status": "INVALID_ARGUMENT",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"description": message}]
            }]
        }});
        return Some((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    None
}

/// A failure as `google.rpc.Status`: `code`, `message` and details — an `ErrorInfo` (the
/// script's reason, or one derived from the code) in `domain`, a `QuotaFailure` for
/// `RESOURCE_EXHAUSTED`, and a `Help` link.
pub fn rpc_status(code: i32, message: &str, reason: Option<&str>, domain: &str) -> Value {
    let reason = reason.map(str::to_owned).unwrap_or_else(|| {
        match code {
            3 => "INVALID_ARGUMENT",
            5 => "RESOURCE_NOT_FOUND",
            6 => "RESOURCE_ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "QUOTA_EXCEEDED",
            9 => "FAILED_PRECONDITION",
            _ => "INTERNAL_ERROR",
        }
        .to_owned()
    });
    let mut details = vec![json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
        "metadata": {"service": domain}
    })];
    if code == 8 {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "subject": "project:demo",
                "description": "Quota exceeded for quota metric 'Simulated requests'",
                "apiService": domain,
                "quotaMetric": format!("{domain}/simulated_requests"),
                "quotaId": "SimulatedRequestsPerProject",
                "quotaValue": "10"
            }]
        }));
    }
    details.push(json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Troubleshooting", "url": "https://cloud.google.com/apis/design/errors"}]
    }));
    json!({"code": code, "message": message, "details": details})
}

/// `@type` of the operation metadata.
pub const METADATA_TYPE: &str =
    "type.googleapis.com/google.api.servicemanagement.v1.OperationMetadata";
/// `@type` of a successful operation's response.
pub const RESOURCE_TYPE: &str = "type.googleapis.com/lro.sim.v1.Resource";
/// Descriptions of the three `metadata.steps`, in order.
pub const STEP_NAMES: [&str; 3] = ["Validating", "Provisioning", "Finalizing"];

/// The Service Management rollout an operation is about (`services.rollouts.create`), if any.
pub fn rollout_of(op: &OpRecord) -> Option<(&str, &str)> {
    let rollout = op.spec.get("serviceManagementRollout")?;
    Some((
        rollout.get("serviceName")?.as_str()?,
        rollout.get("rolloutId")?.as_str()?,
    ))
}

/// The operation's name as the API shows it.
pub fn shown_name(op: &OpRecord) -> String {
    match rollout_of(op) {
        Some((service, rollout)) => format!("operations/rollouts.{service}:{rollout}"),
        None => op.name.clone(),
    }
}

/// The operation as of `now_ms` (`done` omitted while running).
pub fn operation_json(op: &OpRecord, now_ms: u64) -> Value {
    let done = op.is_done(now_ms);
    let mut out = Map::new();
    out.insert("name".into(), shown_name(op).into());
    out.insert("metadata".into(), metadata_json(op, now_ms, done));
    if let Some((service, rollout)) = rollout_of(op) {
        // That guide shows the Rollout as `response` already while the operation runs.
        let create_time = rfc3339(op.created_at_ms);
        out.insert(
            "response".into(),
            json!({
                "@type": "type.googleapis.com/google.api.servicemanagement.v1.Rollout",
                "rolloutId": rollout,
                "createTime": create_time,
                "serviceName": service,
                "status": if !done { "IN_PROGRESS" } else if op.outcome() == Outcome::Success { "SUCCESS" } else { "FAILED" },
                "serviceSelectionStrategy": op.spec.get("serviceSelectionStrategy").cloned().unwrap_or(Value::Null),
            }),
        );
        if done && op.outcome() != Outcome::Success {
            out.remove("response");
        }
    }
    if done {
        out.insert("done".into(), true.into());
        match op.outcome() {
            Outcome::Success if rollout_of(op).is_some() => {}
            Outcome::Success => {
                let response = json!({
                    "@type": RESOURCE_TYPE,
                    "name": op.resource,
                    "uid": op.uid,
                    "state": "ACTIVE",
                    "spec": op.spec,
                });
                out.insert("response".into(), response);
            }
            Outcome::Error => {
                let domain = if rollout_of(op).is_some() {
                    "servicemanagement.googleapis.com"
                } else {
                    "sim.googleapis.com"
                };
                let error = rpc_status(
                    op.script.error_code,
                    &op.script.error_message,
                    op.script.error_reason.as_deref(),
                    domain,
                );
                out.insert("error".into(), error);
            }
            Outcome::Cancelled => {
                out.insert(
                    "error".into(),
                    json!({"code": 1, "message": "operation cancelled"}),
                );
            }
        }
    }
    Value::Object(out)
}

/// RFC 3339 of unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(String::new, |t| t.to_string())
}

fn metadata_json(op: &OpRecord, now_ms: u64, done: bool) -> Value {
    let start_time = rfc3339(op.created_at_ms);
    let mut meta = Map::new();
    meta.insert("@type".into(), METADATA_TYPE.into());
    meta.insert("startTime".into(), start_time.into());
    meta.insert("resourceNames".into(), json!([op.resource]));
    let duration = op.script.duration_ms();
    // Progress freezes when the operation becomes done.
    let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    let outcome = done.then(|| op.outcome());
    if op.script.progress {
        let pct = if outcome == Some(Outcome::Success) {
            100
        } else {
            progress_percentage(elapsed, duration, op.script.progress_step)
        };
        meta.insert("progressPercentage".into(), pct.into());
    }
    if op.script.steps {
        meta.insert("steps".into(), steps_json(elapsed, duration, outcome));
    }
    Value::Object(meta)
}

/// `floor(elapsed/duration*100)`, capped at 100, rounded down to a multiple of `step`.
pub fn progress_percentage(elapsed_ms: u64, duration_ms: u64, step: u32) -> u64 {
    let pct = if duration_ms == 0 {
        100
    } else {
        let raw = u128::from(elapsed_ms) * 100 / u128::from(duration_ms);
        u64::try_from(raw.min(100)).unwrap_or(100)
    };
    let step = u64::from(step.max(1));
    pct / step * step
}

/// Three steps, each a third of the duration. Once done with an error or cancellation, the
/// step that was in progress becomes `FAILED` / `CANCELLED`.
fn steps_json(elapsed_ms: u64, duration_ms: u64, outcome: Option<Outcome>) -> Value {
    let n = STEP_NAMES.len() as u64;
    // Index of the step in progress (== n when all are done).
    let current = match outcome {
        Some(Outcome::Success) => n,
        None if elapsed_ms >= duration_ms => n,
        // A failed op never completes its last step.
        Some(_) if duration_ms == 0 => 0,
        _ => {
            let at = elapsed_ms.min(duration_ms - 1);
            u64::try_from(u128::from(at) * u128::from(n) / u128::from(duration_ms)).unwrap_or(0)
        }
    };
    let steps: Vec<Value> = STEP_NAMES
        .iter()
        .zip(0u64..)
        .map(|(description, i)| {
            let status = if i < current {
                "DONE"
            } else if i > current {
                "NOT_STARTED"
            } else {
                match outcome {
                    Some(Outcome::Error) => "FAILED",
                    Some(Outcome::Cancelled) => "CANCELLED",
                    _ => "IN_PROGRESS",
                }
            };
            json!({"description": description, "status": status})
        })
        .collect();
    Value::Array(steps)
}

/// The `google.rpc.Code` name conventionally paired with an HTTP status (AIP-193).
pub fn status_name(http: StatusCode) -> &'static str {
    match http.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if http.is_client_error() => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    }
}

/// An AIP-193 error response: `{"error":{"code":<http>,"message":..,"status":..}}`; a 429
/// carries the `ErrorInfo` Google sends with it (`RATE_LIMIT_EXCEEDED`).
pub fn error_response(http: StatusCode, message: impl Into<String>) -> Response {
    let mut error =
        json!({"code": http.as_u16(), "message": message.into(), "status": status_name(http)});
    if http == StatusCode::TOO_MANY_REQUESTS {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": "sim.googleapis.com", "quota_limit": "DefaultRequestsPerMinutePerProject"}
        }]);
    }
    (http, Json(json!({ "error": error }))).into_response()
}

/// The 404 envelope for an unknown operation name.
pub fn not_found(name: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, format!("operation {name} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_rounds_down_to_step() {
        assert_eq!(progress_percentage(0, 1000, 10), 0);
        assert_eq!(progress_percentage(199, 1000, 10), 10);
        assert_eq!(progress_percentage(999, 1000, 10), 90);
        assert_eq!(progress_percentage(999, 1000, 1), 99);
        assert_eq!(progress_percentage(2000, 1000, 25), 100);
        assert_eq!(progress_percentage(600, 1000, 0), 60);
        assert_eq!(progress_percentage(5, 0, 10), 100);
    }

    #[test]
    fn steps_advance_and_fail() {
        let statuses = |v: Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s["status"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            statuses(steps_json(0, 900, None)),
            ["IN_PROGRESS", "NOT_STARTED", "NOT_STARTED"]
        );
        assert_eq!(
            statuses(steps_json(300, 900, None)),
            ["DONE", "IN_PROGRESS", "NOT_STARTED"]
        );
        assert_eq!(
            statuses(steps_json(900, 900, Some(Outcome::Success))),
            ["DONE", "DONE", "DONE"]
        );
        assert_eq!(
            statuses(steps_json(900, 900, Some(Outcome::Error))),
            ["DONE", "DONE", "FAILED"]
        );
        assert_eq!(
            statuses(steps_json(100, 900, Some(Outcome::Cancelled))),
            ["CANCELLED", "NOT_STARTED", "NOT_STARTED"]
        );
        assert_eq!(
            statuses(steps_json(0, 0, Some(Outcome::Error))),
            ["FAILED", "NOT_STARTED", "NOT_STARTED"]
        );
    }
}
