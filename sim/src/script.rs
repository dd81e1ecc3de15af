//! How a simulated operation behaves: the `simulate` object of a create request.

use serde::{Deserialize, Serialize};

use crate::fault_plan::{Fault, Faults};

/// How a simulated operation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `done` with a `response` carrying the resource.
    #[default]
    Success,
    /// `done` with `error` = the scripted code and message.
    Error,
    /// `done` with `error.code` 1 (CANCELLED).
    Cancelled,
}

impl Outcome {
    /// The lowercase wire name (`success`, `error`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The script of one operation; every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Script {
    /// Seconds from creation until the operation is done (0 = done at once).
    pub duration_seconds: f64,
    /// How the operation ends.
    pub outcome: Outcome,
    /// `google.rpc.Code` of the error when `outcome` is `error`.
    pub error_code: i32,
    /// Message of the error when `outcome` is `error`.
    pub error_message: String,
    /// Whether metadata carries `progressPercentage`.
    pub progress: bool,
    /// Granularity of `progressPercentage` (rounded down to a multiple of it).
    pub progress_step: u32,
    /// Whether metadata carries `steps`.
    pub steps: bool,
    /// If set, the create is rejected with this HTTP status and nothing is created.
    pub start_status: Option<u16>,
    /// Delay between creating the operation and answering the create request.
    pub start_delay_ms: u64,
    /// Faults applied to the operation's GETs, in order (see [`crate::faults`]).
    pub faults: Faults,
    /// Faults applied to the start requests with this same body, in order: the n-th attempt
    /// takes the fault that covers n. An error status is a start that was not processed
    /// (nothing is created: `[{"kind": "status", "status": 429, "retryAfter": "1"}]`); a
    /// `reset`, `notJson`, `hugeBody` or a `hang` past the client's timeout lose the answer of
    /// a start that was.
    pub start_faults: Vec<Fault>,
    /// The `google.rpc.ErrorInfo` reason of a failure (Google, GKE, Redpanda), e.g.
    /// `QUOTA_EXCEEDED`; its details also get a `Help` link, and a `QuotaFailure` for code 8.
    pub error_reason: Option<String>,
    /// Compute Engine: `warnings[]` on the operation (`DISK_SIZE_LARGER_THAN_IMAGE_SIZE`).
    pub warnings: bool,
    /// Compute Engine: for this many seconds after creation the running operation carries a
    /// `RESOURCE_NOT_READY` error (which is not terminal while it runs).
    pub not_ready_seconds: f64,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            duration_seconds: 10.0,
            outcome: Outcome::Success,
            error_code: 9,
            error_message: "simulated failure".to_owned(),
            progress: true,
            progress_step: 10,
            steps: false,
            start_status: None,
            start_delay_ms: 0,
            faults: Faults::default(),
            start_faults: Vec::new(),
            error_reason: None,
            warnings: false,
            not_ready_seconds: 0.0,
        }
    }
}

impl Script {
    /// Parses and validates a `simulate` object; `null` means all defaults.
    pub fn from_json(value: serde_json::Value) -> Result<Script, String> {
        if value.is_null() {
            return Ok(Script::default());
        }
        let script: Script =
            serde_json::from_value(value).map_err(|e| format!("invalid simulate: {e}"))?;
        if !script.duration_seconds.is_finite() || script.duration_seconds < 0.0 {
            return Err("invalid simulate: durationSeconds must be a number >= 0".to_owned());
        }
        if let Some(status) = script.start_status
            && !(400..=599).contains(&status)
        {
            return Err("invalid simulate: startStatus must be within 400..=599".to_owned());
        }
        for fault in &script.start_faults {
            fault
                .validate()
                .map_err(|e| format!("invalid simulate: startFaults: {e}"))?;
        }
        if !script.not_ready_seconds.is_finite() || script.not_ready_seconds < 0.0 {
            return Err("invalid simulate: notReadySeconds must be a number >= 0".to_owned());
        }
        Ok(script)
    }

    /// The scripted duration in whole milliseconds (saturating).
    pub fn duration_ms(&self) -> u64 {
        // `as` saturates for floats; the value was validated to be finite and >= 0.
        (self.duration_seconds * 1000.0).round() as u64
    }
}

/// Parses a request body that must be a JSON object; an empty body is `{}`.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request body must be a JSON object".to_owned()),
        Err(e) => Err(format!("invalid JSON body: {e}")),
    }
}

/// Splits a create body into the resource spec (the body without `simulate`), its script, and
/// the surface-specific keys `extra` of `simulate`, taken out before the script is parsed.
pub fn split_create_body(
    body: &[u8],
    extra: &[&str],
) -> Result<
    (
        serde_json::Value,
        Script,
        serde_json::Map<String, serde_json::Value>,
    ),
    String,
> {
    let mut spec = json_object(body)?;
    let mut simulate = spec.remove("simulate").unwrap_or(serde_json::Value::Null);
    let mut taken = serde_json::Map::new();
    if let Some(fields) = simulate.as_object_mut() {
        for key in extra {
            if let Some(value) = fields.remove(*key) {
                taken.insert((*key).to_owned(), value);
            }
        }
    }
    let script = Script::from_json(simulate)?;
    Ok((serde_json::Value::Object(spec), script, taken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_validation() {
        assert_eq!(Script::from_json(json!(null)), Ok(Script::default()));
        assert_eq!(Script::from_json(json!({})), Ok(Script::default()));
        let s = Script::from_json(json!({"durationSeconds": 0.3, "outcome": "error"}));
        assert_eq!(s.as_ref().map(|s| s.duration_ms()), Ok(300));
        assert_eq!(s.map(|s| s.outcome), Ok(Outcome::Error));
        assert!(Script::from_json(json!({"durationSeconds": -1})).is_err());
        assert!(Script::from_json(json!({"outcome": "maybe"})).is_err());
        assert!(Script::from_json(json!({"startStatus": 200})).is_err());
        assert!(Script::from_json(json!({"durationSecs": 1})).is_err());
    }
}
