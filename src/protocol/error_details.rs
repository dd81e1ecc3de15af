//! The structured causes of an upstream error (`status.error.details`), bounded in size, and
//! `google.rpc.Status` as Google APIs (AIP-193), GKE and Redpanda send it.
//!
//! `google.rpc.Status.details` holds `Any` values named by `@type`
//! (`type.googleapis.com/google.rpc.ErrorInfo`, …; see `google/rpc/error_details.proto`); each
//! becomes one [`ErrorDetail`] per violation, field violation or link.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{HttpAnswer, rpc_code_for_http, rpc_code_name};
use crate::api::{ErrorDetail, OperationError};

/// The most details kept on one error.
pub const MAX_DETAILS: usize = 16;
/// The longest text kept in one detail field, in bytes.
pub const MAX_DETAIL_TEXT: usize = 512;
/// The most metadata entries kept on one detail.
const MAX_METADATA: usize = 16;
/// How deep nested causes are followed (ARM `details[]` inside `details[]`).
pub const MAX_DEPTH: usize = 8;

/// A detail of `kind` with nothing else set.
pub fn detail(kind: &str) -> ErrorDetail {
    ErrorDetail {
        kind: kind.to_owned(),
        ..ErrorDetail::default()
    }
}

/// Cuts every list and text of `details` to the bounds.
pub fn bound(details: &mut Vec<ErrorDetail>) {
    details.truncate(MAX_DETAILS);
    for d in details.iter_mut() {
        d.kind = cut(&d.kind);
        for text in [&mut d.reason, &mut d.domain, &mut d.field, &mut d.message]
            .into_iter()
            .flatten()
        {
            *text = cut(text);
        }
        if d.metadata.len() > MAX_METADATA {
            d.metadata = std::mem::take(&mut d.metadata)
                .into_iter()
                .take(MAX_METADATA)
                .collect();
        }
        d.metadata = std::mem::take(&mut d.metadata)
            .into_iter()
            .map(|(k, v)| (cut(&k), cut(&v)))
            .collect();
    }
}

/// `text` cut to [`MAX_DETAIL_TEXT`] bytes at a character boundary.
pub fn cut(text: &str) -> String {
    if text.len() <= MAX_DETAIL_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A JSON scalar as text (`"a"` → `a`, `3` → `3`); `None` for null, objects and arrays.
pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string map from a JSON object of scalars (nested values as JSON text).
fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), text(Some(v)).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The detail type named by an `Any`'s `@type` (`type.googleapis.com/google.rpc.ErrorInfo` →
/// `ErrorInfo`).
fn type_name(any: &Value) -> Option<&str> {
    let url = any.get("@type")?.as_str()?;
    url.rsplit(['/', '.']).next().filter(|s| !s.is_empty())
}

/// Decodes `google.rpc.Status.details` into details, in order.
pub fn rpc_details(details: Option<&Value>) -> Vec<ErrorDetail> {
    let mut out = Vec::new();
    for any in details.and_then(Value::as_array).into_iter().flatten() {
        let Some(kind) = type_name(any) else {
            continue;
        };
        // proto3 JSON is camelCase, but some gateways (Redpanda's) keep the proto names.
        let field = |v: &Value, name: &str| text(v.get(name).or_else(|| v.get(snake(name))));
        match kind {
            "ErrorInfo" => out.push(ErrorDetail {
                reason: field(any, "reason"),
                domain: field(any, "domain"),
                // Compute spells it `metadatas`.
                metadata: string_map(any.get("metadata").or_else(|| any.get("metadatas"))),
                ..detail(kind)
            }),
            "QuotaFailure" => {
                for v in array(any, "violations") {
                    let mut metadata = BTreeMap::new();
                    for key in [
                        "apiService",
                        "quotaMetric",
                        "quotaId",
                        "quotaValue",
                        "futureQuotaValue",
                    ] {
                        if let Some(value) = field(v, key) {
                            metadata.insert(key.to_owned(), value);
                        }
                    }
                    for (k, value) in string_map(
                        v.get("quotaDimensions")
                            .or_else(|| v.get("quota_dimensions")),
                    ) {
                        metadata.insert(format!("quotaDimensions.{k}"), value);
                    }
                    out.push(ErrorDetail {
                        field: field(v, "subject"),
                        message: field(v, "description"),
                        metadata,
                        ..detail(kind)
                    });
                }
            }
            "BadRequest" => {
                for v in array(any, "fieldViolations") {
                    out.push(ErrorDetail {
                        reason: field(v, "reason"),
                        field: field(v, "field"),
                        message: field(v, "description"),
                        ..detail(kind)
                    });
                }
            }
            "PreconditionFailure" => {
                for v in array(any, "violations") {
                    out.push(ErrorDetail {
                        reason: field(v, "type"),
                        field: field(v, "subject"),
                        message: field(v, "description"),
                        ..detail(kind)
                    });
                }
            }
            "ResourceInfo" => out.push(ErrorDetail {
                reason: field(any, "resourceType"),
                field: field(any, "resourceName"),
                message: field(any, "description"),
                metadata: field(any, "owner")
                    .map(|o| BTreeMap::from([("owner".to_owned(), o)]))
                    .unwrap_or_default(),
                ..detail(kind)
            }),
            "Help" => {
                for link in array(any, "links") {
                    out.push(ErrorDetail {
                        message: field(link, "description"),
                        metadata: field(link, "url")
                            .map(|u| BTreeMap::from([("url".to_owned(), u)]))
                            .unwrap_or_default(),
                        ..detail(kind)
                    });
                }
            }
            "LocalizedMessage" => out.push(ErrorDetail {
                message: field(any, "message"),
                metadata: field(any, "locale")
                    .map(|l| BTreeMap::from([("locale".to_owned(), l)]))
                    .unwrap_or_default(),
                ..detail(kind)
            }),
            "RetryInfo" => out.push(ErrorDetail {
                message: field(any, "retryDelay"),
                ..detail(kind)
            }),
            "DebugInfo" => out.push(ErrorDetail {
                message: field(any, "detail"),
                ..detail(kind)
            }),
            "RequestInfo" => out.push(ErrorDetail {
                metadata: ["requestId", "servingData"]
                    .iter()
                    .filter_map(|k| Some(((*k).to_owned(), field(any, k)?)))
                    .collect(),
                ..detail(kind)
            }),
            other => {
                let mut metadata = string_map(Some(any));
                metadata.remove("@type");
                out.push(ErrorDetail {
                    metadata,
                    ..detail(other)
                });
            }
        }
        if out.len() >= MAX_DETAILS {
            break;
        }
    }
    bound(&mut out);
    out
}

/// The proto field name of a camelCase JSON name (`fieldViolations` → `field_violations`).
fn snake(name: &str) -> &'static str {
    match name {
        "fieldViolations" => "field_violations",
        "apiService" => "api_service",
        "quotaMetric" => "quota_metric",
        "quotaId" => "quota_id",
        "quotaValue" => "quota_value",
        "futureQuotaValue" => "future_quota_value",
        "quotaDimensions" => "quota_dimensions",
        "resourceType" => "resource_type",
        "resourceName" => "resource_name",
        "retryDelay" => "retry_delay",
        "requestId" => "request_id",
        "servingData" => "serving_data",
        "localizedMessage" => "localized_message",
        _ => "",
    }
}

fn array<'a>(value: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(name)
        .or_else(|| value.get(snake(name)))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Reasons Google APIs give for "slow down" (the legacy `errors[].reason` and `ErrorInfo`):
/// the request was not processed; it succeeds when resent later.
const GOOGLE_THROTTLED: &[&str] = &[
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
    "CONCURRENT_OPERATIONS_QUOTA_EXCEEDED",
];

/// Whether a Google error says "slow down" whatever its HTTP status: Compute answers rate
/// limits and its concurrent-operations quota with 403 (terraform-provider-google's
/// `is403QuotaExceededPerMinuteError` and `is403ConcurrentOperationsQuotaError`).
pub fn google_throttled(error: &OperationError) -> bool {
    error.details.iter().any(|d| {
        d.reason
            .as_deref()
            .is_some_and(|r| GOOGLE_THROTTLED.contains(&r))
    }) || (error.http_status == Some(403)
        && error.message.starts_with("Quota exceeded for quota metric")
        && error.message.contains("per minute"))
}

/// A `google.rpc.Status` as an operation's error: `code` its name (`UNKNOWN` for a missing
/// code or `OK`, which a failed operation cannot carry), `providerCode` the number.
pub fn status_error(status: &Value) -> OperationError {
    // A number, or (Redpanda) its name; a number written as a string is a number.
    let named = status
        .get("code")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let number = status
        .get("code")
        .and_then(Value::as_i64)
        .or_else(|| named.and_then(|s| s.trim().parse::<i64>().ok()));
    let named = named.filter(|s| s.parse::<i64>().is_err() && *s != "OK");
    let code = match (number, named) {
        (Some(0) | None, None) => "UNKNOWN".to_owned(),
        (Some(n), _) => rpc_code_name(n).to_owned(),
        (None, Some(name)) => name.to_owned(),
    };
    OperationError {
        code,
        provider_code: number.map(|n| n.to_string()).or(named.map(str::to_owned)),
        http_status: None,
        message: text(status.get("message")).unwrap_or_default(),
        details: rpc_details(status.get("details")),
    }
}

/// The AIP-193 error envelope of a non-2xx answer: `{"error": {"code": <HTTP status>,
/// "message", "status": "<rpc code name>", "details": [...]}}`; `code` falls back to the HTTP
/// status's rpc code when the envelope has no `status`.
pub fn envelope_error(answer: &HttpAnswer) -> OperationError {
    let envelope = answer.json().ok();
    let error = envelope.as_ref().and_then(|v| v.get("error"));
    let status_name = error
        .and_then(|e| text(e.get("status")))
        .filter(|s| !s.trim().is_empty());
    OperationError {
        code: status_name
            .clone()
            .unwrap_or_else(|| rpc_code_for_http(answer.status).to_owned()),
        provider_code: status_name,
        http_status: Some(i32::from(answer.status)),
        message: error
            .and_then(|e| text(e.get("message")))
            .unwrap_or_else(|| format!("HTTP {}", answer.status)),
        details: rpc_details(error.and_then(|e| e.get("details"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_rpc_detail_type_is_decoded_one_entry_per_violation() {
        let details = rpc_details(Some(&json!([
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
             "domain": "googleapis.com", "metadata": {"service": "container.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"subject": "project:p", "description": "CPUS quota", "quotaMetric": "compute.googleapis.com/cpus"},
                {"subject": "project:q", "description": "IPs"}]},
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
                {"field": "cluster.name", "description": "must be lower case"}]},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [
                {"description": "quotas", "url": "https://cloud.google.com/docs/quotas"}]},
            {"@type": "type.googleapis.com/google.rpc.Unheard", "x": 1},
            {"no": "type"}
        ])));
        let kinds: Vec<&str> = details.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ErrorInfo",
                "QuotaFailure",
                "QuotaFailure",
                "BadRequest",
                "Help",
                "Unheard"
            ]
        );
        assert_eq!(details[0].reason.as_deref(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(details[0].metadata["service"], "container.googleapis.com");
        assert_eq!(details[1].field.as_deref(), Some("project:p"));
        assert_eq!(
            details[1].metadata["quotaMetric"],
            "compute.googleapis.com/cpus"
        );
        assert_eq!(details[3].field.as_deref(), Some("cluster.name"));
        assert_eq!(
            details[4].metadata["url"],
            "https://cloud.google.com/docs/quotas"
        );
        assert_eq!(details[5].metadata["x"], "1");
    }

    #[test]
    fn details_are_bounded_in_number_and_size() {
        let many: Vec<Value> = (0..100)
            .map(|i| json!({"@type": "google.rpc.ErrorInfo", "reason": "x".repeat(10_000), "metadata": {"i": i}}))
            .collect();
        let details = rpc_details(Some(&Value::Array(many)));
        assert_eq!(details.len(), MAX_DETAILS);
        assert!(
            details
                .iter()
                .all(|d| d.reason.as_ref().unwrap().len() <= MAX_DETAIL_TEXT + 3)
        );
        assert_eq!(cut("é".repeat(400).as_str()).chars().last(), Some('…'));
    }

    #[test]
    fn a_status_names_its_code_and_keeps_the_number() {
        let e = status_error(&json!({"code": 8, "message": "quota", "details": []}));
        assert_eq!(e.code, "RESOURCE_EXHAUSTED");
        assert_eq!(e.provider_code.as_deref(), Some("8"));
        assert_eq!(status_error(&json!({"code": 0})).code, "UNKNOWN");
        assert_eq!(
            status_error(&json!({"code": "FAILED_PRECONDITION"})).code,
            "FAILED_PRECONDITION"
        );
    }
}
