//! Size limits on what is copied into an operation's status.

use jiff::Timestamp;

use super::conditions;
use crate::api::{LongRunningOperationStatus, OperationHandle};

/// Default cap on `status.result`, in bytes of JSON (`--max-status-result-bytes`).
pub const DEFAULT_MAX_STATUS_RESULT: usize = 32 * 1024;
/// The condition that says a result was left out of the status.
pub const RESULT_TRUNCATED: &str = "ResultTruncated";

/// The longest free-text field (a message, the upstream's state word) written to a status. An
/// upstream may answer with a message of megabytes; repeated in `status.message`, `status.error`
/// and every condition, it would make the status larger than etcd accepts, and no status write
/// (not even the terminal one) would ever land.
pub const MAX_STATUS_TEXT: usize = 4096;

/// The longest operation handle field (`name`, `id`, `url`, `resultUrl`, …) kept in a status.
/// Real handles are far shorter (a Google operation name ~100 bytes, an ARM status monitor URL
/// ~400); a longer one is refused whole, since a cut handle would poll something else.
pub const MAX_HANDLE: usize = 2048;
/// The largest rendered start request (`status.renderedStart`, as JSON).
pub const MAX_RENDERED_START: usize = 64 * 1024;
/// The deepest `status.result` or rendered start body kept in a status: well within what the
/// operator reads back (`nesting::MAX_NESTING`, counted from the object's root).
pub const MAX_RESULT_DEPTH: usize = 32;

/// The field of `handle` longer than [`MAX_HANDLE`], with its length, if any.
pub fn oversized_handle(handle: &OperationHandle) -> Option<(&'static str, usize)> {
    [
        ("name", &handle.name),
        ("id", &handle.id),
        ("url", &handle.url),
        ("resultUrl", &handle.result_url),
        ("mode", &handle.mode),
        ("requestId", &handle.request_id),
    ]
    .into_iter()
    .find_map(|(field, value)| {
        value
            .as_ref()
            .filter(|v| v.len() > MAX_HANDLE)
            .map(|v| (field, v.len()))
    })
}

/// `status` with every free-text field cut to [`MAX_STATUS_TEXT`] bytes.
pub fn bound_text(status: &mut LongRunningOperationStatus) {
    let cut = |s: &mut String| {
        if s.len() > MAX_STATUS_TEXT {
            *s = bounded(s);
        }
    };
    let error = status.error.as_mut();
    let texts = [
        status.message.as_mut(),
        status.upstream_state.as_mut(),
        status.resource_id.as_mut(),
    ]
    .into_iter()
    .chain(error.map_or([None, None], |e| {
        [Some(&mut e.message), e.provider_code.as_mut()]
    }))
    .flatten()
    .chain(status.conditions.iter_mut().map(|c| &mut c.message));
    texts.for_each(cut);
}

/// `s` cut to [`MAX_STATUS_TEXT`] bytes (with room for the ellipsis: cut text is within the
/// limit, and cutting it again keeps it).
pub fn bounded(s: &str) -> String {
    truncate(s, MAX_STATUS_TEXT - '…'.len_utf8())
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
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
    let depth = crate::nesting::depth(result);
    if size <= max && depth <= MAX_RESULT_DEPTH {
        return false;
    }
    status.result = None;
    let handle = status
        .operation
        .as_ref()
        .and_then(|h| h.name.clone().or(h.id.clone()).or(h.url.clone()))
        .unwrap_or_else(|| "the upstream operation".into());
    let why = if size > max {
        format!("is {size} bytes of JSON, more than the {max}-byte cap (--max-status-result-bytes)")
    } else {
        format!("nests {depth} levels deep, more than {MAX_RESULT_DEPTH}")
    };
    let message = format!(
        "the result {why}, so it was not copied into status.result; the full result stays with the upstream: read it from {handle}"
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

    #[test]
    fn a_handle_field_over_the_cap_is_named() {
        let mut handle = OperationHandle {
            name: Some("operations/op-1".into()),
            ..OperationHandle::default()
        };
        assert_eq!(oversized_handle(&handle), None);
        handle.url = Some(format!("https://h/{}", "x".repeat(MAX_HANDLE)));
        assert_eq!(oversized_handle(&handle), Some(("url", MAX_HANDLE + 10)));
    }

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

    #[test]
    fn deeply_nested_results_are_left_out_with_a_condition() {
        let mut deep = serde_json::json!(1);
        for _ in 0..(MAX_RESULT_DEPTH + 1) {
            deep = serde_json::json!([deep]);
        }
        let mut status = LongRunningOperationStatus {
            result: Some(deep),
            ..LongRunningOperationStatus::default()
        };
        assert!(cap_result(&mut status, 1 << 20, Some(1), Timestamp::now()));
        assert_eq!(status.result, None);
        let c = conditions::find(&status.conditions, RESULT_TRUNCATED).expect("condition");
        assert!(c.message.contains("nests 33 levels deep"), "{}", c.message);
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
