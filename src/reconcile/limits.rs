//! Size limits on what is copied into an operation's status.

use jiff::Timestamp;

use super::conditions;
use crate::api::LongRunningOperationStatus;

/// Default cap on `status.result`, in bytes of JSON (`--max-status-result-bytes`).
pub const DEFAULT_MAX_STATUS_RESULT: usize = 32 * 1024;
/// The condition that says a result was left out of the status.
pub const RESULT_TRUNCATED: &str = "ResultTruncated";

/// The longest free-text field (a message, the upstream's state word) written to a status. An
/// upstream may answer with a message of megabytes; repeated in `status.message`, `status.error`
/// and every condition, it would make the status larger than etcd accepts, and no status write
/// (not even the terminal one) would ever land.
pub const MAX_STATUS_TEXT: usize = 4096;

/// `status` with every free-text field cut to [`MAX_STATUS_TEXT`] bytes.
pub fn bound_text(status: &mut LongRunningOperationStatus) {
    let cut = |s: &mut String| {
        if s.len() > MAX_STATUS_TEXT {
            // Room for the ellipsis: cut text is within the limit, and cutting it again keeps it.
            *s = truncate(s, MAX_STATUS_TEXT - '…'.len_utf8());
        }
    };
    let error = status.error.as_mut();
    let texts = [status.message.as_mut(), status.upstream_state.as_mut()]
        .into_iter()
        .chain(error.map_or([None, None], |e| {
            [Some(&mut e.message), e.provider_code.as_mut()]
        }))
        .flatten()
        .chain(status.conditions.iter_mut().map(|c| &mut c.message));
    texts.for_each(cut);
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

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

#[cfg(test)]
mod text_tests {
    use super::*;
    use crate::api::OperationError;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn long_text_is_cut_short_text_kept() {
        let long = "é".repeat(MAX_STATUS_TEXT);
        let condition = Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "UpstreamFailed".into(),
            message: long.clone(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let status = LongRunningOperationStatus {
            message: Some(long.clone()),
            upstream_state: Some("RUNNING".into()),
            error: Some(OperationError {
                code: "UNKNOWN".into(),
                provider_code: Some(long.clone()),
                http_status: None,
                message: long.clone(),
                details: vec![],
            }),
            conditions: vec![condition],
            ..LongRunningOperationStatus::default()
        };
        let mut cut = status.clone();
        bound_text(&mut cut);
        let texts = [
            cut.message.clone().unwrap_or_default(),
            cut.error.clone().map(|e| e.message).unwrap_or_default(),
            cut.error
                .clone()
                .and_then(|e| e.provider_code)
                .unwrap_or_default(),
            cut.conditions[0].message.clone(),
        ];
        for text in texts {
            assert!(text.len() <= MAX_STATUS_TEXT, "{}", text.len());
            assert!(text.ends_with('…') && text.starts_with("éé"));
        }
        assert_eq!(cut.upstream_state.as_deref(), Some("RUNNING"));
        let mut twice = cut.clone();
        bound_text(&mut twice);
        assert_eq!(twice, cut, "cutting twice changes nothing");
    }
}
