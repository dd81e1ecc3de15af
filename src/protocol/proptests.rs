//! Property tests: no protocol parser panics, whatever the upstream sends — arbitrary bytes,
//! and JSON that has the right keys with the wrong values (wrong types for `done`, `error`,
//! `code`, nested nulls, huge numbers). Also the `Retry-After` parser and URL resolution.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

use super::google::Google;
use super::redpanda::Redpanda;
use super::{
    CancelOutcome, Dialect, HttpAnswer, PollOutcome, RequestSpec, StartOutcome, UpstreamState,
    parse_retry_after, retry_after,
};
use crate::api::{HttpMethod, OperationHandle, StartRequest};

/// Keys the parsers look for, so that generated objects often hit the interesting paths.
const KEYS: &[&str] = &[
    "name",
    "done",
    "error",
    "errors",
    "code",
    "message",
    "status",
    "details",
    "response",
    "metadata",
    "@type",
    "progressPercentage",
    "progressPercent",
    "progress_percent",
    "percentComplete",
    "percentDone",
    "progress",
    "operation",
    "state",
    "id",
    "type",
    "resource_id",
    "cluster_id",
    "network_id",
    "selfLink",
    "started_at",
    "finished_at",
];

/// Strings the parsers compare against, and numbers written as strings.
const WORDS: &[&str] = &[
    "",
    "true",
    "false",
    "null",
    "0",
    "1",
    "-1",
    "16",
    "99999999999999999999999",
    "1e400",
    "NaN",
    "inf",
    "-0",
    "50.5",
    " 42 ",
    "DONE",
    "RUNNING",
    "STATE_COMPLETED",
    "STATE_FAILED",
    "STATE_IN_PROGRESS",
    "STATE_UNSPECIFIED",
    "CANCELLED",
    "NOT_FOUND",
    "UNKNOWN",
    "OK",
    "operations/op-1",
    "../../x",
    "https://elsewhere.example/x",
];

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        (-3i64..20).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(-0.0)),
        Just(json!(99.999_999)),
        Just(json!(100.000_001)),
    ]
    .boxed()
}

fn string() -> BoxedStrategy<String> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(str::to_owned),
        ".{0,24}",
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
    .boxed()
}

fn object(entries: BTreeMap<String, Value>) -> Value {
    Value::Object(entries.into_iter().collect::<Map<String, Value>>())
}

/// Any JSON value, nested up to 5 levels, whose objects mostly use the parsers' keys.
fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(key(), inner, 0..8).prop_map(object),
            ]
        })
        .boxed()
}

/// An object with some of `keys`, each holding `value` (or left out).
fn shaped(keys: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    vec(proptest::option::of(value), keys.len())
        .prop_map(move |values| {
            let map: Map<String, Value> = keys
                .iter()
                .zip(values)
                .filter_map(|(k, v)| Some(((*k).to_owned(), v?)))
                .collect();
            Value::Object(map)
        })
        .boxed()
}

/// A `google.rpc.Status`-like object with wrong values.
fn rpc_status() -> BoxedStrategy<Value> {
    prop_oneof![
        json_value(),
        shaped(&["code", "message", "status", "details"], json_value()),
        shaped(&["code", "message"], prop_oneof![number(), leaf()].boxed()),
    ]
    .boxed()
}

/// A `google.longrunning.Operation` with wrong types where the parser looks.
fn google_operation() -> BoxedStrategy<Value> {
    let done = prop_oneof![any::<bool>().prop_map(Value::Bool), json_value()];
    let metadata = prop_oneof![
        json_value(),
        shaped(
            &[
                "progressPercentage",
                "progressPercent",
                "progress_percent",
                "percentComplete",
                "percentDone",
                "progress",
                "error",
                "errors",
            ],
            prop_oneof![
                number(),
                leaf(),
                rpc_status(),
                vec(rpc_status(), 0..3).prop_map(Value::Array)
            ]
            .boxed(),
        ),
    ];
    (
        proptest::option::of(done),
        proptest::option::of(rpc_status()),
        proptest::option::of(json_value()),
        proptest::option::of(metadata),
        proptest::option::of(prop_oneof![string().prop_map(Value::String), leaf()]),
    )
        .prop_map(|(done, error, response, metadata, name)| {
            let mut op = Map::new();
            for (k, v) in [
                ("done", done),
                ("error", error),
                ("response", response),
                ("metadata", metadata),
                ("name", name),
            ] {
                if let Some(v) = v {
                    op.insert(k.to_owned(), v);
                }
            }
            Value::Object(op)
        })
        .boxed()
}

/// A Redpanda `{"operation": …}` answer with wrong types where the parser looks.
fn redpanda_answer() -> BoxedStrategy<Value> {
    let value = prop_oneof![
        3 => leaf(),
        1 => rpc_status(),
        1 => shaped(&["cluster_id", "network_id", "resource_id"], leaf()),
    ]
    .boxed();
    let operation = prop_oneof![
        json_value(),
        shaped(
            &[
                "id",
                "state",
                "error",
                "response",
                "resource_id",
                "metadata",
                "type"
            ],
            value,
        ),
    ]
    .boxed();
    prop_oneof![
        operation.clone().prop_map(|op| json!({ "operation": op })),
        shaped(&["operation", "error", "code", "message"], operation),
    ]
    .boxed()
}

fn status_code() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(202),
        Just(404),
        Just(410),
        Just(429),
        Just(501),
        Just(503),
        any::<u16>(),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("retry-after".to_owned()),
        Just("Retry-After".to_owned()),
        Just("retry-after-ms".to_owned()),
        Just("x-ms-retry-after-ms".to_owned()),
        "[a-z-]{1,12}",
    ];
    vec((name, retry_after_value()), 0..4)
}

fn retry_after_value() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{0,30}",
        "-[0-9]{1,5}",
        "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "[A-Za-z]{6,9}, [0-9]{2}-[A-Za-z]{3}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "[A-Za-z]{3} [A-Za-z]{3} [ 0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}",
        ".{0,40}",
    ]
    .boxed()
}

fn handle() -> impl Strategy<Value = OperationHandle> {
    let part = proptest::option::of(string());
    (part.clone(), part.clone(), part.clone(), part).prop_map(|(name, id, url, request_id)| {
        OperationHandle {
            name,
            id,
            url,
            request_id,
            ..OperationHandle::default()
        }
    })
}

fn dialects() -> [&'static dyn Dialect; 3] {
    [
        super::dialect(crate::api::Protocol::Google),
        super::dialect(crate::api::Protocol::Gke),
        &Redpanda,
    ]
}

/// Every reading entry point of `dialect` on `answer`, with light sanity checks on the results.
fn read_everything(dialect: &dyn Dialect, answer: &HttpAnswer) -> Result<(), TestCaseError> {
    let _ = dialect.parse_started(answer);
    if let Ok(observation) = dialect.parse_operation(answer) {
        check_observation(&observation)?;
    }
    let error = dialect.parse_error(answer);
    prop_assert!(!error.code.is_empty(), "an error always has a code");
    let request = RequestSpec::get("operations/x".into());
    match dialect.read_start(&request, answer) {
        StartOutcome::Started(started) => check_observation(&started.observation)?,
        StartOutcome::Rejected(_) | StartOutcome::Lost(_) => {
            prop_assert!(
                answer.status != 429,
                "a 429 is never a refusal nor a lost start: it was not processed"
            );
        }
        StartOutcome::Deferred(_) => {}
    }
    let handle = OperationHandle {
        name: Some("operations/x".into()),
        id: Some("x".into()),
        ..OperationHandle::default()
    };
    match dialect.read_poll(&handle, answer) {
        PollOutcome::Observed(observation) => {
            prop_assert!(
                super::is_success(answer.status),
                "only a 2xx answer is an observation"
            );
            check_observation(&observation)?;
        }
        PollOutcome::Failed { not_found, .. } => {
            prop_assert_eq!(not_found, matches!(answer.status, 404 | 410));
        }
    }
    match dialect.read_cancel(answer) {
        CancelOutcome::Accepted | CancelOutcome::Refused(_) | CancelOutcome::Lost(_) => {}
    }
    Ok(())
}

fn check_observation(observation: &super::Observation) -> Result<(), TestCaseError> {
    if let Some(p) = observation.progress {
        prop_assert!((0..=100).contains(&p), "progress {} out of 0..=100", p);
    }
    if matches!(
        observation.state,
        UpstreamState::Failed | UpstreamState::Cancelled
    ) {
        prop_assert!(observation.error.is_some(), "a failure without an error");
    }
    Ok(())
}

fn answer(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> HttpAnswer {
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn json_answer(status: u16, body: &Value) -> HttpAnswer {
    answer(status, vec![], serde_json::to_vec(body).unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(status in status_code(), body in vec(any::<u8>(), 0..512)) {
        for dialect in dialects() {
            read_everything(dialect, &answer(status, vec![], body.clone()))?;
        }
    }

    #[test]
    fn truncated_json_never_panics(value in json_value(), cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        let cut = cut.index(bytes.len() + 1);
        for dialect in dialects() {
            read_everything(dialect, &answer(200, vec![], bytes[..cut].to_vec()))?;
        }
    }

    #[test]
    fn any_json_never_panics(status in status_code(), value in json_value()) {
        for dialect in dialects() {
            read_everything(dialect, &json_answer(status, &value))?;
        }
    }

    #[test]
    fn wrong_google_operations_never_panic(status in status_code(), op in google_operation()) {
        read_everything(&Google::default(), &json_answer(status, &op))?;
        // The same object as an AIP-193 error envelope.
        read_everything(&Google::default(), &json_answer(status, &json!({"error": op})))?;
        if let Ok(observation) = Google::default().parse_operation(&json_answer(200, &op)) {
            let done = op.get("done") == Some(&Value::Bool(true));
            prop_assert_eq!(
                done,
                observation.state != UpstreamState::Running,
                "only done: true ends a google operation: {}", op
            );
        }
    }

    #[test]
    fn wrong_redpanda_answers_never_panic(status in status_code(), body in redpanda_answer()) {
        read_everything(&Redpanda, &json_answer(status, &body))?;
        if let Ok(observation) = Redpanda.parse_operation(&json_answer(200, &body)) {
            prop_assert_eq!(observation.progress, None, "redpanda has no progress");
        }
    }

    #[test]
    fn requests_from_any_handle_never_panic(
        handle in handle(),
        path in string(),
        query in btree_map(string(), string(), 0..3),
        request_id in string(),
    ) {
        for dialect in dialects() {
            let _ = dialect.poll_request(&handle);
            let _ = dialect.cancel_request(&handle);
            let start = StartRequest {
                method: HttpMethod::default(),
                path: path.clone(),
                query: query.clone(),
                headers: BTreeMap::new(),
                body: None,
            };
            let request = dialect.start_request(&start, &request_id);
            prop_assert_eq!(&request.path, &path);
        }
    }

    #[test]
    fn retry_after_never_panics(
        headers in headers(),
        value in retry_after_value(),
        now_secs in prop_oneof![Just(0u64), any::<u32>().prop_map(u64::from), 0u64..(1 << 40)],
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let _ = parse_retry_after(&value, now);
        let _ = parse_retry_after(&value, SystemTime::now());
        let _ = retry_after(&answer(429, headers, vec![]), now);
    }

    #[test]
    fn retry_after_seconds_are_read_exactly(secs in any::<u64>(), pad in " {0,3}") {
        let value = format!("{pad}{secs}{pad}");
        prop_assert_eq!(
            parse_retry_after(&value, SystemTime::now()),
            Some(Duration::from_secs(secs))
        );
    }
}
