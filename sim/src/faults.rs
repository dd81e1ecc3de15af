//! Scripted misbehaviour of the Google `/v1` GET-operation handler: an upstream that is slow,
//! throttling, broken or lying.
//!
//! A script's `faults` list (in the `simulate` object of a create request, or in the body of
//! `POST /sim/operations`) is applied to that operation's GETs **in order**: each GET takes the
//! first fault that has not been used up, and a fault is used up after `times` GETs (default 1).
//! Once the list is exhausted every GET is answered normally. Every GET is counted in
//! `/sim/stats` (`gets`, `getTimesMs`) whether it was faulty or not, and the stats of the
//! operation say which GETs were faulty (`faults.served`: the 1-based GET number and the kind)
//! and how many faulty answers are still to come (`faults.pending`).
//!
//! ```json
//! "faults": [
//!   {"kind": "ok", "times": 2},
//!   {"kind": "status", "status": 503, "times": 3},
//!   {"kind": "status", "status": 429, "retryAfter": "2"},
//!   {"kind": "status", "status": 503, "retryAfterDate": true, "retryAfterSeconds": 2},
//!   {"kind": "status", "status": 429, "retryAfterMs": 1500},
//!   {"kind": "reset"},
//!   {"kind": "hang", "ms": 3000},
//!   {"kind": "notJson"},
//!   {"kind": "hugeBody", "bytes": 52428800},
//!   {"kind": "notFound", "times": 5},
//!   {"kind": "undone"}
//! ]
//! ```
//!
//! | kind | answer |
//! |---|---|
//! | `ok` | the normal answer (to place later faults after a few good GETs) |
//! | `status` | `status` (400..=599) with the AIP-193 error envelope (its message: `message`, if given); optionally `Retry-After: <retryAfter>` verbatim, `Retry-After: <HTTP-date>` `retryAfterSeconds` from now (rounded up to the next whole second, so the wait is at least that long) when `retryAfterDate` is true, and `retry-after-ms: <retryAfterMs>` |
//! | `reset` | the connection is closed without an answer (the response body fails before anything is written, and hyper drops the connection; the request log says 200, the status the head would have had) |
//! | `hang` | the normal answer, after `ms` milliseconds (longer than the client's request timeout) |
//! | `notJson` | `200` with an HTML body |
//! | `hugeBody` | `200` with a JSON-looking body of `bytes` bytes, streamed in 64 KiB chunks from one static buffer (never held in memory); chunked, unless `announceLength` sends its `Content-Length` |
//! | `notFound` | `404` as for an unknown operation |
//! | `undone` | once a GET has been answered that the operation is done, the operation as it was just before it was done (`done` absent); until then the fault waits, unused, and GETs are answered normally |

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fault_plan::{Fault, start_fault};
use crate::script::Script;
use crate::state::{SimState, Store};
use crate::surface::Surface;

/// The size of one chunk of a `hugeBody`.
const CHUNK: usize = 64 * 1024;
/// The padding a `hugeBody` is made of (static: streaming it allocates nothing per chunk).
static PADDING: [u8; CHUNK] = [b'a'; CHUNK];
/// How a `hugeBody` begins and ends (a JSON object with one huge string, were it read whole).
const HUGE_HEAD: &[u8] = b"{\"padding\":\"";
const HUGE_TAIL: &[u8] = b"\"}";

/// A poll of the operation `name` (the simulator's internal name; `shown`: as the client named
/// it) on `surface`: its scripted fault, or the normal answer. `None`: no such operation (the
/// caller answers not found its way).
pub async fn serve(
    state: &SimState,
    name: &str,
    shown: &str,
    surface: &dyn Surface,
) -> Option<Response> {
    let now = state.now_ms();
    let fault = {
        let mut store = state.store();
        let op = store.get_mut(name)?;
        op.record_get(now);
        let (gets, done) = (op.gets, op.is_done(now));
        let Some(fault) = op.script.faults.next(gets, done) else {
            return Some(surface.operation(op, now));
        };
        if matches!(fault, Fault::Undone { .. }) {
            let before_done = op.done_at_ms().saturating_sub(1);
            return Some(surface.operation(op, before_done));
        }
        fault
    };
    Some(match fault {
        Fault::Hang { ms, .. } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let now = state.now_ms();
            let mut store = state.store();
            match store.get_mut(name) {
                Some(op) => surface.operation(op, now),
                None => surface.not_found(shown),
            }
        }
        Fault::NotFound { .. } => surface.not_found(shown),
        other => misanswer(&other, surface, now),
    })
}

/// The answer of a fault that does not need the operation: an error status (in the surface's
/// error envelope, with the scripted `Retry-After` hints), a reset, a page that is not JSON, a
/// huge body.
pub fn misanswer(fault: &Fault, surface: &dyn Surface, now_ms: u64) -> Response {
    match fault {
        Fault::Status {
            status,
            retry_after,
            retry_after_date,
            retry_after_seconds,
            retry_after_ms,
            message,
            ..
        } => {
            let http = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let message = message
                .clone()
                .unwrap_or_else(|| format!("simulated fault: HTTP {status}"));
            let mut response = surface.error(http, &message);
            let headers = response.headers_mut();
            // The fault's hint replaces any the surface put on its error answer.
            if let Some(value) = retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::RETRY_AFTER, value);
            }
            if *retry_after_date {
                let date = http_date_after(now_ms, *retry_after_seconds);
                if let Ok(value) = HeaderValue::from_str(&date) {
                    headers.append(header::RETRY_AFTER, value);
                }
            }
            if let Some(ms) = retry_after_ms {
                headers.append("retry-after-ms", HeaderValue::from(*ms));
            }
            response
        }
        Fault::Reset { .. } => reset(),
        Fault::NotJson { .. } => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1>simulated proxy page</body></html>",
        )
            .into_response(),
        Fault::HugeBody {
            bytes,
            announce_length,
            ..
        } => huge_body(*bytes, *announce_length),
        Fault::NotFound { .. } => surface.not_found("the requested operation"),
        // Answered by the callers, which have the operation.
        Fault::Ok { .. } | Fault::Undone { .. } | Fault::Hang { .. } => surface.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulator: this fault has no answer of its own here",
        ),
    }
}

/// Counts a start request with this `key` (its path, query and body) and applies the script's
/// start faults to it: `Err(answer)` when the fault refuses it (nothing is to be created), else
/// the fault, if any, that will lose the answer of the start once processed ([`lose`]).
pub fn admit_start(
    store: &mut Store,
    key: &str,
    script: &Script,
    surface: &dyn Surface,
    now_ms: u64,
) -> Result<Option<Fault>, Box<Response>> {
    let attempt = store.start_attempt(key);
    let fault = start_fault(&script.start_faults, attempt);
    if let Some(fault) = fault.as_ref().filter(|f| refuses(f)) {
        store.rejected_creates += 1;
        return Err(Box::new(misanswer(fault, surface, now_ms)));
    }
    Ok(fault)
}

/// The answer to a start that created the operation `name`, for APIs that answer a create with
/// the operation itself: after `delay_ms` (the operation exists before the answer is sent: a
/// client that dies meanwhile must find it again), the operation as `surface` shows it, or what
/// the start's `fault` makes of that answer.
pub async fn answer_start(
    state: &SimState,
    name: &str,
    delay_ms: u64,
    fault: Option<Fault>,
    surface: &dyn Surface,
) -> Response {
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let now = state.now_ms();
    let normal = match state.store().get_mut(name) {
        Some(op) => surface.operation(op, now),
        // Only reachable if `/sim/reset` ran during the start delay.
        None => surface.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "operation vanished (reset)",
        ),
    };
    match fault {
        Some(fault) => lose(&fault, normal, surface, now).await,
        None => normal,
    }
}

/// Whether a start fault means the request was not processed (nothing is created): an error
/// status. A reset, a hang, a page that is not JSON or a huge body lose the answer of a
/// start that *was* processed.
pub fn refuses(fault: &Fault) -> bool {
    matches!(fault, Fault::Status { .. } | Fault::NotFound { .. })
}

/// The answer to a processed start under `fault`: `normal` after a `hang`, or the fault's own
/// answer (which loses `normal`).
pub async fn lose(fault: &Fault, normal: Response, surface: &dyn Surface, now_ms: u64) -> Response {
    match fault {
        Fault::Hang { ms, .. } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            normal
        }
        other => misanswer(other, surface, now_ms),
    }
}

/// An IMF-fixdate at least `seconds` after `now_ms` (rounded up to a whole second).
fn http_date_after(now_ms: u64, seconds: u64) -> String {
    let at_ms = now_ms.saturating_add(seconds.saturating_mul(1000));
    let whole_secs = at_ms.div_ceil(1000);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole_secs))
}

/// A response whose body fails before its first byte: hyper then closes the connection
/// without writing the response head, so the client sees the connection end with no answer.
fn reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(failing))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `200` with a body of exactly `bytes` bytes (`{"padding":"aaa…"}` when long enough), produced
/// chunk by chunk from static memory.
fn huge_body(bytes: u64, announce_length: bool) -> Response {
    let framed = bytes >= (HUGE_HEAD.len() + HUGE_TAIL.len()) as u64;
    let padding = if framed {
        bytes - (HUGE_HEAD.len() + HUGE_TAIL.len()) as u64
    } else {
        bytes
    };
    let head = framed.then_some(Bytes::from_static(HUGE_HEAD));
    let tail = framed.then_some(Bytes::from_static(HUGE_TAIL));
    let middle = futures::stream::unfold(padding, |left| async move {
        if left == 0 {
            return None;
        }
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        Some((Bytes::from_static(&PADDING[..n]), left - n as u64))
    });
    use futures::StreamExt as _;
    let stream = futures::stream::iter(head)
        .chain(middle)
        .chain(futures::stream::iter(tail))
        .map(Ok::<Bytes, Infallible>);
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if announce_length {
        response = response.header(header::CONTENT_LENGTH, bytes);
    }
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use serde_json::{Value, json};

    use crate::fault_plan::Faults;
    use crate::script::Script;
    use crate::{SimState, router};
    use lro_operator::protocol::{HttpAnswer, RequestSpec};
    use lro_operator::upstream::{Upstream, UpstreamError};

    fn faults(value: Value) -> Result<Faults, String> {
        Script::from_json(json!({ "faults": value })).map(|s| s.faults)
    }

    #[test]
    fn faults_parse_and_validate() {
        let parsed = faults(json!([
            {"kind": "status", "status": 503, "times": 3},
            {"kind": "status", "status": 429, "retryAfter": "2"},
            {"kind": "status", "status": 503, "retryAfterDate": true, "retryAfterSeconds": 2},
            {"kind": "status", "status": 429, "retryAfterMs": 1500},
            {"kind": "reset"},
            {"kind": "hang", "ms": 3000},
            {"kind": "notJson"},
            {"kind": "hugeBody", "bytes": 52_428_800},
            {"kind": "notFound", "times": 4},
            {"kind": "undone"},
            {"kind": "ok", "times": 2},
        ]))
        .expect("a valid fault list");
        assert_eq!(parsed.plan.len(), 11);
        assert_eq!(parsed.pending(), 3 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 1);
        assert_eq!(
            parsed.plan.get(7),
            Some(&Fault::HugeBody {
                bytes: 52_428_800,
                announce_length: false,
                times: 1
            })
        );
        for bad in [
            json!([{"kind": "status", "status": 200}]),
            json!([{"kind": "status"}]),
            json!([{"kind": "reset", "times": 0}]),
            json!([{"kind": "hang", "ms": 10_000_000}]),
            json!([{"kind": "teleport"}]),
            json!([{"kind": "reset", "ms": 5}]),
            json!([{"kind": "status", "status": 503, "retryAfter": "a\nb"}]),
            json!({"kind": "reset"}),
        ] {
            assert!(faults(bad.clone()).is_err(), "{bad} was accepted");
        }
        assert_eq!(faults(json!([])), Ok(Faults::default()));
    }

    #[test]
    fn faults_are_used_in_order_and_undone_waits_for_done() {
        let mut f = faults(json!([
            {"kind": "notFound", "times": 2},
            {"kind": "ok"},
            {"kind": "reset"},
            {"kind": "undone"},
        ]))
        .expect("valid");
        let kinds: Vec<Option<&str>> = (1..=6)
            .map(|get| f.next(get, false).map(|x| x.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                Some("notFound"),
                Some("notFound"),
                None,
                Some("reset"),
                None,
                None
            ]
        );
        assert_eq!(f.pending(), 1);
        // The first GET that finds it done is answered normally; the next one is undone.
        assert_eq!(f.next(7, true), None);
        assert_eq!(f.next(8, true).map(|x| x.kind()), Some("undone"));
        assert_eq!(f.next(9, true), None);
        assert_eq!(
            f.stats_json(),
            json!({"served": [
                {"get": 1, "kind": "notFound"}, {"get": 2, "kind": "notFound"},
                {"get": 4, "kind": "reset"}, {"get": 8, "kind": "undone"},
            ], "pending": 0})
        );
    }

    fn unix_secs(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    #[test]
    fn http_dates_round_up() {
        let date = http_date_after(1_000_500, 2);
        let parsed = httpdate::parse_http_date(&date).expect("an HTTP-date");
        assert_eq!(unix_secs(parsed), 1003);
        let date = http_date_after(1_000_000, 2);
        let parsed = httpdate::parse_http_date(&date).expect("an HTTP-date");
        assert_eq!(unix_secs(parsed), 1002);
    }

    /// A simulator on a free port, an operation scripted with `faults`, and the operator's client.
    async fn sim_with(faults: Value, timeout_ms: u64) -> (String, String, SimState, Upstream) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        let base = format!("http://{addr}");
        let op: Value = reqwest::Client::new()
            .post(format!("{base}/sim/operations"))
            .json(&json!({"durationSeconds": 0.3, "faults": faults}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let name = op["name"].as_str().expect("name").to_owned();
        let upstream =
            Upstream::new(Duration::from_millis(timeout_ms), 1024 * 1024).expect("client");
        (format!("{base}/v1"), name, state, upstream)
    }

    async fn poll(
        upstream: &Upstream,
        base: &str,
        name: &str,
    ) -> Result<HttpAnswer, UpstreamError> {
        upstream
            .send(base, &RequestSpec::get(name.to_owned()))
            .await
    }

    fn op_stats(state: &SimState, name: &str) -> Value {
        state.store().stats_json(state.now_ms())["operations"][name].clone()
    }

    #[tokio::test]
    async fn the_operators_client_sees_each_fault() {
        let (base, name, state, upstream) = sim_with(
            json!([
                {"kind": "status", "status": 503, "times": 2},
                {"kind": "status", "status": 429, "retryAfter": "2", "retryAfterMs": 1500},
                {"kind": "status", "status": 503, "retryAfterDate": true, "retryAfterSeconds": 3},
                {"kind": "reset"},
                {"kind": "hang", "ms": 2000},
                {"kind": "notJson"},
                {"kind": "hugeBody", "bytes": 5_000_000},
                {"kind": "hugeBody", "bytes": 5_000_000, "announceLength": true},
                {"kind": "notFound"},
            ]),
            500,
        )
        .await;
        for _ in 0..2 {
            let answer = poll(&upstream, &base, &name).await.expect("an answer");
            assert_eq!(answer.status, 503);
            assert_eq!(answer.header("retry-after"), None);
            assert!(answer.json().is_ok(), "an error envelope");
        }
        let answer = poll(&upstream, &base, &name).await.expect("an answer");
        assert_eq!(answer.status, 429);
        assert_eq!(answer.header("retry-after"), Some("2"));
        assert_eq!(answer.header("retry-after-ms"), Some("1500"));

        let before = SystemTime::now();
        let answer = poll(&upstream, &base, &name).await.expect("an answer");
        assert_eq!(answer.status, 503);
        let date = answer.header("retry-after").expect("Retry-After");
        let when = httpdate::parse_http_date(date).expect("an HTTP-date");
        let wait = when.duration_since(before).expect("in the future");
        assert!(
            (Duration::from_secs(3)..Duration::from_secs(5)).contains(&wait),
            "{date}: {wait:?}"
        );

        match poll(&upstream, &base, &name).await {
            Err(UpstreamError::Transport { .. }) => {}
            other => panic!("reset: expected a transport error, got {other:?}"),
        }
        match poll(&upstream, &base, &name).await {
            Err(UpstreamError::Transport { kind, .. }) => assert_eq!(kind, "timed out"),
            other => panic!("hang: expected a timeout, got {other:?}"),
        }
        let answer = poll(&upstream, &base, &name).await.expect("an answer");
        assert_eq!(answer.status, 200);
        assert!(answer.json().is_err(), "not JSON");
        for _ in 0..2 {
            match poll(&upstream, &base, &name).await {
                Err(UpstreamError::TooLarge { limit, .. }) => assert_eq!(limit, 1024 * 1024),
                other => panic!("hugeBody: expected TooLarge, got {other:?}"),
            }
        }
        let answer = poll(&upstream, &base, &name).await.expect("an answer");
        assert_eq!(answer.status, 404);
        let answer = poll(&upstream, &base, &name).await.expect("an answer");
        assert_eq!(answer.status, 200);
        let op = answer.json().expect("the operation");
        assert_eq!(op["done"], true);

        let stats = op_stats(&state, &name);
        assert_eq!(stats["gets"], 11, "{stats:#}");
        assert_eq!(stats["getTimesMs"].as_array().map(Vec::len), Some(11));
        assert_eq!(stats["faults"]["pending"], 0, "{stats:#}");
        let served = stats["faults"]["served"].as_array().expect("served");
        assert_eq!(served.len(), 10, "{stats:#}");
        assert_eq!(served[4], json!({"get": 5, "kind": "reset"}));
    }

    #[tokio::test]
    async fn a_huge_body_streams_whole_to_a_reader_without_a_cap() {
        let (base, name, _state, _upstream) =
            sim_with(json!([{"kind": "hugeBody", "bytes": 3_000_000}]), 5000).await;
        let body = reqwest::get(format!("{base}/{name}"))
            .await
            .expect("answer")
            .bytes()
            .await
            .expect("body");
        assert_eq!(body.len(), 3_000_000);
        assert!(body.starts_with(HUGE_HEAD) && body.ends_with(HUGE_TAIL));
        let tiny = huge_body(3, false);
        let bytes = axum::body::to_bytes(tiny.into_body(), 100)
            .await
            .expect("body");
        assert_eq!(&bytes[..], b"aaa");
    }

    #[tokio::test]
    async fn undone_answers_once_as_not_done_after_done() {
        let (base, name, state, upstream) = sim_with(json!([{"kind": "undone"}]), 2000).await;
        let first = poll(&upstream, &base, &name).await.expect("answer");
        let first = first.json().expect("json");
        assert!(first.get("done").is_none(), "running at first: {first}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let done = poll(&upstream, &base, &name).await.expect("answer");
        assert_eq!(done.json().expect("json")["done"], true);
        let undone = poll(&upstream, &base, &name).await.expect("answer");
        let undone = undone.json().expect("json");
        assert!(undone.get("done").is_none(), "undone: {undone}");
        assert!(undone.get("response").is_none(), "undone: {undone}");
        let done = poll(&upstream, &base, &name).await.expect("answer");
        assert_eq!(done.json().expect("json")["done"], true);
        let stats = op_stats(&state, &name);
        assert_eq!(
            stats["faults"]["served"],
            json!([{"get": 3, "kind": "undone"}])
        );
    }
}
