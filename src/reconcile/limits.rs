//! Size limits on what is copied into an operation's status.

use jiff::Timestamp;

use super::conditions;
use crate::api::LongRunningOperationStatus;

/// Default cap on `status.result`, in bytes of JSON (`--max-status-result-bytes`).
pub const DEFAULT_MAX_STATUS_RESULT: usize = 32 * 1024;
/// The condition that says a result was left out of the status.
pub const RESULT_TRUNCATED: &str = "ResultTruncated";

/// Leaves a `status.result` larger than `max` bytes (as JSON) out of the status, with a
/// `ResultTruncated` condition saying where the full result is. Returns whether it did.
pub fn cap_result(
    status: &mut LongRunningOperationStatus,
    max: usize,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let Some(result) = &status.result else {
        return false;
    };
    let size = serde_json::to_vec(result).map(|v| v.len()).unwrap_or(0);
    if size <= max {
        return false;
    }
    status.result = None;
    let handle = status
        .operation
        .as_ref()
        .and_then(|h| h.name.clone().or(h.id.clone()).or(h.url.clone()))
        .unwrap_or_else(|| "the upstream operation".into());
    let message = format!(
        "the result is {size} bytes of JSON, more than the {max}-byte cap (--max-status-result-bytes), so it was not copied into status.result; the full result stays with the upstream: read it from {handle}"
    );
    conditions::upsert(
        &mut status.conditions,
        RESULT_TRUNCATED,
        true,
        "ResultTooLarge",
        &message,
        generation,
        now,
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OperationHandle;

    #[test]
    fn large_results_are_left_out_with_a_condition() {
        let mut status = LongRunningOperationStatus {
            result: Some(serde_json::json!({"blob": "x".repeat(100)})),
            operation: Some(OperationHandle {
                name: Some("operations/op-1".into()),
                ..OperationHandle::default()
            }),
            ..LongRunningOperationStatus::default()
        };
        let mut small = status.clone();
        assert!(!cap_result(&mut small, 1000, Some(1), Timestamp::now()));
        assert!(small.result.is_some() && small.conditions.is_empty());
        assert!(cap_result(&mut status, 50, Some(1), Timestamp::now()));
        assert_eq!(status.result, None);
        let c = conditions::find(&status.conditions, RESULT_TRUNCATED).expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ResultTooLarge")
        );
        assert!(c.message.contains("operations/op-1"), "{}", c.message);
        assert!(c.message.contains("50-byte cap"), "{}", c.message);
    }
}
