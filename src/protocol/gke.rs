//! Google Kubernetes Engine operations (`container.googleapis.com/v1`, schema `Operation`).
//!
//! `status` PENDING is pending; RUNNING, ABORTING (a cancel under way), STATUS_UNSPECIFIED and
//! any new word keep polling; DONE is terminal. A DONE operation with an `error`
//! (`google.rpc.Status`, code not 0) failed — code 1 is cancelled — with its details kept; one
//! with no error but a `statusMessage` (the deprecated way of reporting an error) failed as
//! `UNKNOWN`; otherwise it succeeded, with `targetLink` as the resource and
//! `{targetLink, operationType}` as the result. `detail` is the note while it runs.
//!
//! Progress comes from `progress.metrics` (int64 values are JSON strings): the pairs `NAME` /
//! `NAME_TOTAL` that GKE reports per stage (`CLUSTER_DEPLOYING` / `CLUSTER_DEPLOYING_TOTAL`, …)
//! summed, else `nodes done` / `nodes total`, else `progress` / `progress scale`, as the schema's
//! own examples say; absent when there are none.
//!
//! The start answer's `name` is short (`operation-…`); the operation is polled at its
//! `selfLink`'s path under the provider's `baseURL` (`projects/{p}/zones|locations/{l}/operations/{op}`,
//! see [`super::google_links`]) and cancelled with `POST {that path}:cancel`. GKE's create
//! methods declare no request id, so a start whose answer is lost is not resent.

use serde_json::{Map, Value};

use super::error_details::{envelope_error, google_throttled, status_error, text};
use super::google_links::resource_path;
use super::{Dialect, HttpAnswer, Observation, ParseError, RequestSpec, Started, UpstreamState};
use crate::api::{OperationError, OperationHandle, StartRequest};

/// The GKE dialect.
pub struct Gke;

impl Dialect for Gke {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        false
    }

    fn no_idempotency_hint(&self) -> &'static str {
        "GKE's create and update methods take no request id"
    }

    fn can_cancel(&self) -> bool {
        true
    }

    fn start_request(&self, start: &StartRequest, _request_id: &str) -> RequestSpec {
        RequestSpec::from_start(start)
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        Ok(RequestSpec::get(path_of(handle).ok_or_else(|| {
            ParseError::Shape(
                "a GKE operation is polled by its selfLink; set spec.operation.url, or name as projects/P/locations/L/operations/OP".into(),
            )
        })?))
    }

    fn cancel_request(&self, handle: &OperationHandle) -> Option<RequestSpec> {
        Some(RequestSpec {
            method: reqwest::Method::POST,
            path: format!("{}:cancel", path_of(handle)?),
            query: vec![],
            headers: vec![],
            body: Some(Value::Object(Map::new())),
        })
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let op = answer.json()?;
        let observation = observe(&op)?;
        let name = text(op.get("name"));
        let url = text(op.get("selfLink"));
        if url.is_none() && observation.state != UpstreamState::Succeeded {
            return Err(ParseError::Shape(
                "the start response is not a GKE operation: it has no `selfLink`".into(),
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
        envelope_error(answer)
    }

    /// A mutation refused because another operation holds the cluster (`400
    /// FAILED_PRECONDITION`, "Cluster is running incompatible operation …") was not processed:
    /// it is resent once that operation is over, as GKE's runbooks say; and Google's throttling.
    fn is_throttled(&self, error: &OperationError) -> bool {
        google_throttled(error) || error.message.contains("is running incompatible operation")
    }
}

/// The path to poll: the selfLink's resource path, else a `name` that is already a path.
fn path_of(handle: &OperationHandle) -> Option<String> {
    if let Some(url) = &handle.url {
        return Some(resource_path(url));
    }
    handle
        .name
        .as_ref()
        .filter(|n| n.contains('/'))
        .map(|n| resource_path(n))
}

fn observe(op: &Value) -> Result<Observation, ParseError> {
    let Some(obj) = op.as_object() else {
        return Err(ParseError::Shape(
            "a GKE operation must be a JSON object".into(),
        ));
    };
    let Some(status) = obj.get("status").and_then(Value::as_str) else {
        return Err(ParseError::Shape(
            "a GKE operation must have a string `status`".into(),
        ));
    };
    let mut observation = Observation {
        state: UpstreamState::Running,
        upstream_state: Some(status.to_owned()),
        progress: obj.get("progress").and_then(progress_of),
        message: text(obj.get("detail")),
        ..Observation::default()
    };
    match status {
        "PENDING" => {
            observation.state = UpstreamState::Pending;
            return Ok(observation);
        }
        "DONE" => {}
        _ => return Ok(observation),
    }
    observation.message = None;
    let error = obj
        .get("error")
        .filter(|e| e.get("code").and_then(Value::as_i64).unwrap_or(0) != 0);
    let status_message = text(obj.get("statusMessage"));
    if let Some(error) = error {
        let error = status_error(error);
        observation.state = if error.code == "CANCELLED" {
            UpstreamState::Cancelled
        } else {
            UpstreamState::Failed
        };
        observation.error = Some(error);
        return Ok(observation);
    }
    if let Some(message) = status_message {
        observation.state = UpstreamState::Failed;
        observation.error = Some(OperationError {
            code: "UNKNOWN".into(),
            message,
            ..OperationError::default()
        });
        return Ok(observation);
    }
    observation.state = UpstreamState::Succeeded;
    observation.progress = Some(100);
    observation.resource_id = text(obj.get("targetLink"));
    let mut result = Map::new();
    for field in ["targetLink", "operationType"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            result.insert(field.to_owned(), v.clone());
        }
    }
    observation.result = (!result.is_empty()).then_some(Value::Object(result));
    Ok(observation)
}

/// A metric's value: `intValue` (an int64, as a JSON string or number) or `doubleValue`.
fn value_of(metric: &Value) -> Option<f64> {
    ["intValue", "doubleValue"].iter().find_map(|k| {
        let v = metric.get(*k)?;
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
    })
}

/// Percent complete from an `OperationProgress`, clamped to 0..=100.
fn progress_of(progress: &Value) -> Option<i32> {
    let metrics: Vec<(&str, f64)> = progress
        .get("metrics")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|m| Some((m.get("name")?.as_str()?, value_of(m)?)))
        .collect();
    let find = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let (mut done, mut total) = (0.0, 0.0);
    for (name, value) in &metrics {
        if let Some(stage_total) = find(&format!("{name}_TOTAL")) {
            done += value.min(stage_total);
            total += stage_total;
        }
    }
    let fraction = if total > 0.0 {
        Some(done / total)
    } else if let (Some(d), Some(t)) = (find("nodes done"), find("nodes total")) {
        (t > 0.0).then(|| d / t)
    } else if let Some(p) = find("progress") {
        let scale = find("progress scale").unwrap_or(1.0);
        (scale > 0.0).then(|| p / scale)
    } else {
        None
    }?;
    fraction
        .is_finite()
        .then(|| (fraction * 100.0).clamp(0.0, 100.0).floor() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(body: &Value) -> HttpAnswer {
        HttpAnswer {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    fn operation(status: &str) -> Value {
        json!({
            "name": "operation-1700000000000-abcd1234",
            "zone": "us-central1-a",
            "operationType": "CREATE_CLUSTER",
            "status": status,
            "selfLink": "https://container.googleapis.com/v1/projects/123456/zones/us-central1-a/operations/operation-1700000000000-abcd1234",
            "targetLink": "https://container.googleapis.com/v1/projects/123456/zones/us-central1-a/clusters/demo",
            "startTime": "2026-01-01T00:00:00.000000Z"
        })
    }

    #[test]
    fn stage_metrics_give_the_progress() {
        let mut op = operation("RUNNING");
        op["progress"] = json!({"metrics": [
            {"name": "CLUSTER_CONFIGURING", "intValue": "8"},
            {"name": "CLUSTER_CONFIGURING_TOTAL", "intValue": "8"},
            {"name": "CLUSTER_DEPLOYING", "intValue": "2"},
            {"name": "CLUSTER_DEPLOYING_TOTAL", "intValue": "12"}
        ]});
        let obs = Gke.parse_operation(&answer(&op)).unwrap();
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.progress, Some(50));
        op["progress"] = json!({"metrics": [
            {"name": "progress", "doubleValue": 0.56}, {"name": "progress scale", "doubleValue": 1.0}]});
        assert_eq!(
            Gke.parse_operation(&answer(&op)).unwrap().progress,
            Some(56)
        );
    }

    #[test]
    fn done_with_an_error_fails_and_aborting_keeps_polling() {
        let obs = Gke
            .parse_operation(&answer(&operation("ABORTING")))
            .unwrap();
        assert_eq!(obs.state, UpstreamState::Running);
        let mut op = operation("DONE");
        op["error"] = json!({"code": 8, "message": "Insufficient regional quota", "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXCEEDED"}]});
        let obs = Gke.parse_operation(&answer(&op)).unwrap();
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        assert_eq!(error.details[0].reason.as_deref(), Some("QUOTA_EXCEEDED"));
        op["error"] = json!({"code": 1, "message": "cancelled"});
        assert_eq!(
            Gke.parse_operation(&answer(&op)).unwrap().state,
            UpstreamState::Cancelled
        );
    }

    #[test]
    fn polls_and_cancels_go_to_the_self_links_path_under_base_url() {
        let started = Gke.parse_started(&answer(&operation("RUNNING"))).unwrap();
        let poll = Gke.poll_request(&started.handle).unwrap();
        assert_eq!(
            poll.path,
            "projects/123456/zones/us-central1-a/operations/operation-1700000000000-abcd1234"
        );
        let cancel = Gke.cancel_request(&started.handle).unwrap();
        assert_eq!(cancel.path, format!("{}:cancel", poll.path));
        let done = Gke.parse_operation(&answer(&operation("DONE"))).unwrap();
        assert_eq!(done.state, UpstreamState::Succeeded);
        assert_eq!(
            done.resource_id.as_deref(),
            Some(
                "https://container.googleapis.com/v1/projects/123456/zones/us-central1-a/clusters/demo"
            )
        );
    }
}
