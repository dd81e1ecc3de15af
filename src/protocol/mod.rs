//! Upstream dialects. Each protocol turns an upstream's answers into the same [`Observation`],
//! and says how to build its start, poll and cancel requests. One protocol, one file; adding one
//! is that file plus one line in [`dialect`].

mod aws_cloud_control;
mod azure;
mod compute;
pub mod error_details;
#[cfg(test)]
mod fixtures;
mod gke;
mod google;
pub mod google_links;
mod http;
#[cfg(test)]
mod proptests;
mod redpanda;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::{ListSpec, OperationError, OperationHandle, Protocol, ProviderSpec, StartRequest};

/// The `compute` dialect with no options.
static COMPUTE: compute::Compute = compute::Compute {
    long_poll: false,
    request_id_parameter: None,
};
/// The `google` dialect with no options.
static GOOGLE: google::Google = google::Google {
    request_id_parameter: None,
};

/// Returns the dialect that speaks `protocol`, without any provider options.
pub fn dialect(protocol: Protocol) -> &'static dyn Dialect {
    match protocol {
        Protocol::Google => &GOOGLE,
        Protocol::Gke => &gke::Gke,
        Protocol::Redpanda => &redpanda::Redpanda,
        Protocol::Compute => &COMPUTE,
        Protocol::Azure => &azure::Azure,
        Protocol::AwsCloudControl => &aws_cloud_control::AwsCloudControl,
        // Without its provider's `spec.http`: see `dialect_for`.
        Protocol::Http => &http::Unconfigured,
    }
}

/// Returns the dialect for a provider: its protocol, with the provider's protocol options
/// (`google.requestIdParameter`, `compute.longPoll` and `requestIdParameter`, the `http`
/// expressions). `Err` says why the provider's options are unusable (an `http` expression that
/// does not compile).
pub fn dialect_for(provider: &ProviderSpec) -> Result<DialectRef, String> {
    Ok(match provider.protocol {
        Protocol::Google => match provider
            .google
            .as_ref()
            .and_then(|g| g.request_id_parameter.clone())
        {
            Some(name) => DialectRef::Configured(Arc::new(google::Google {
                request_id_parameter: Some(name),
            })),
            None => DialectRef::Builtin(&GOOGLE),
        },
        Protocol::Compute => match &provider.compute {
            Some(options) => DialectRef::Configured(Arc::new(compute::Compute {
                long_poll: options.long_poll,
                request_id_parameter: options.request_id_parameter.clone(),
            })),
            None => DialectRef::Builtin(&COMPUTE),
        },
        Protocol::Http => DialectRef::Configured(http::configured(
            &provider.base_url,
            provider.http.as_ref(),
        )?),
        protocol => DialectRef::Builtin(dialect(protocol)),
    })
}

pub use http::check_http;

/// A provider's dialect: a built-in one, or one compiled from the provider's options.
#[derive(Clone)]
pub enum DialectRef {
    /// A protocol with nothing to compile.
    Builtin(&'static dyn Dialect),
    /// A protocol configured by its provider (`http`).
    Configured(Arc<dyn Dialect>),
}

impl std::ops::Deref for DialectRef {
    type Target = dyn Dialect;

    fn deref(&self) -> &Self::Target {
        match self {
            DialectRef::Builtin(d) => *d,
            DialectRef::Configured(d) => d.as_ref(),
        }
    }
}

/// What the upstream says about an operation, normalised across protocols.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Where the upstream operation is.
    pub state: UpstreamState,
    /// The upstream's own state word, verbatim.
    pub upstream_state: Option<String>,
    /// Percent complete as reported; `None` when the upstream reports nothing.
    pub progress: Option<i32>,
    /// The operation's result, once succeeded.
    pub result: Option<Value>,
    /// The id or name of the resource the operation created or changed.
    pub resource_id: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<OperationError>,
    /// A non-terminal note worth showing (e.g. an error the upstream reports in its metadata).
    pub message: Option<String>,
}

/// The normalised state of an upstream operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamState {
    /// Accepted but not started.
    Pending,
    /// In progress.
    #[default]
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Finished because it was cancelled.
    Cancelled,
}

/// An HTTP request a dialect wants sent, relative to the provider's base URL.
///
/// Its `Debug` output (what a log line would show) names the headers but never their values,
/// which may come from Secrets.
#[derive(Clone, PartialEq)]
pub struct RequestSpec {
    /// The HTTP method.
    pub method: reqwest::Method,
    /// Path relative to the base URL (no leading slash needed), or an absolute URL on its origin.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

impl std::fmt::Debug for RequestSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("RequestSpec")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body", &self.body)
            .finish()
    }
}

impl RequestSpec {
    /// The user's start request as written in `spec.start`.
    pub fn from_start(start: &StartRequest) -> Self {
        RequestSpec {
            method: start.method.as_reqwest(),
            path: start.path.clone(),
            query: start
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            headers: start
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: start.body.clone(),
        }
    }

    /// The user's start request with the idempotency key as query parameter `name`, unless the
    /// user set that parameter themselves (Google's and Compute's `requestId`).
    pub fn from_start_with_query_key(start: &StartRequest, name: &str, request_id: &str) -> Self {
        let mut request = RequestSpec::from_start(start);
        if !start.query.contains_key(name) {
            request.query.push((name.into(), request_id.into()));
        }
        request
    }

    /// A bodiless GET of `path`.
    pub fn get(path: String) -> Self {
        RequestSpec {
            method: reqwest::Method::GET,
            path,
            query: vec![],
            headers: vec![],
            body: None,
        }
    }
}

/// An HTTP answer, as the upstream client read it (body already size-capped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpAnswer {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ParseError> {
        serde_json::from_slice(&self.body).map_err(|e| ParseError::NotJson(e.to_string()))
    }
}

/// What a successful start request returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The handle to poll.
    pub handle: OperationHandle,
    /// The operation's state as returned by the start response itself.
    pub observation: Observation,
}

/// An upstream answer the dialect could not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON.
    #[error("response body is not JSON: {0}")]
    NotJson(String),
    /// The JSON does not have the protocol's shape.
    #[error("unexpected response shape: {0}")]
    Shape(String),
}

/// How the answer to a start request reads.
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    /// The upstream accepted it and returned a handle.
    Started(Box<Started>),
    /// The upstream refused it; resending will not help.
    Rejected(OperationError),
    /// The upstream did not process it and asks to be asked again later (429, a 503 with
    /// `Retry-After`, a throttling error): resend after the wait, idempotency key or not.
    Deferred(String),
    /// The outcome is unknown (5xx, throttled, unreadable answer); resend with the same key.
    Lost(String),
}

/// What one answer of the look-up for a lost start's operation says.
#[derive(Clone, Debug, PartialEq)]
pub enum Recovery {
    /// Exactly one operation matches: the start began it.
    Found(Box<Started>),
    /// Ask this next (another page, or the operations of the resource found), with the match
    /// found so far (a later page with another one makes it ambiguous).
    Next(RequestSpec, Option<Box<Started>>),
    /// None matches, or several do: the outcome cannot be told (for people).
    NotFound(String),
    /// No usable answer this time (a transient error); look again later.
    Failed(String),
}

/// One page of a list of operations (`spec.list`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListPage {
    /// Each listed operation: its key (what [`Dialect::list_key`] gives for its handle) and
    /// what the entry says of it.
    pub entries: Vec<(String, Observation)>,
    /// The next page's token; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// How the answer to a list page reads.
#[derive(Clone, Debug, PartialEq)]
pub enum ListOutcome {
    /// A page.
    Page(ListPage),
    /// The upstream does not list this way (403, 404, 501, or a filter or parameter it
    /// refuses): observe each operation by itself instead.
    Refused(String),
    /// No usable answer this time (a 5xx, throttling, an unreadable body); try again later.
    Failed(String),
}

/// How the answer to a poll reads.
#[derive(Clone, Debug, PartialEq)]
pub enum PollOutcome {
    /// The upstream said where the operation is.
    Observed(Observation),
    /// No usable answer this time; the phase does not change.
    Failed {
        /// For people.
        message: String,
        /// The upstream says the operation does not exist (404/410).
        not_found: bool,
    },
}

/// How the answer to a cancel request reads.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// Accepted (the operation may still finish either way).
    Accepted,
    /// Refused, or not supported; do not ask again.
    Refused(String),
    /// Unknown; ask again later.
    Lost(String),
}

/// Where an absolute URL may point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UrlScope {
    /// Under the base URL's path, on its origin (every protocol but one).
    #[default]
    BasePath,
    /// Anywhere on the base URL's origin: Azure Resource Manager, whose status monitors live
    /// under `/subscriptions/{id}/providers/{rp}/locations/…` whatever the resource's path.
    Origin,
}

/// One upstream protocol. The `read_*` methods give the HTTP semantics most protocols share
/// (2xx: read the body; 4xx other than 408/425/429: refused; 404/410: not found; the rest:
/// transient); a protocol overrides them where its wire format says otherwise.
pub trait Dialect: Send + Sync {
    /// Whether this start can be resent safely with the same request id (an idempotency key,
    /// or a method that is idempotent by itself, such as Azure's PUT).
    fn idempotent_start(&self, start: &StartRequest) -> bool;
    /// Whether the protocol has a cancel request.
    fn can_cancel(&self) -> bool;
    /// Whether a poll is held by the upstream until the operation is done or the upstream's own
    /// deadline passes (a long poll): then the next poll follows the last one at once.
    fn long_polls(&self) -> bool {
        false
    }
    /// Where absolute URLs (links in answers, `spec.operation.url`) may point: under the
    /// provider's `baseURL` path by default.
    fn url_scope(&self) -> UrlScope {
        UrlScope::BasePath
    }
    /// Builds the start request; `request_id` is the idempotency key, stable across resends.
    fn start_request(&self, start: &StartRequest, request_id: &str) -> RequestSpec;
    /// Why a start of this dialect may not be resent when its answer is lost, for the
    /// `StartOutcomeUnknown` message (only read when [`Dialect::idempotent_start`] is false).
    fn no_idempotency_hint(&self) -> &'static str {
        "this protocol has no idempotency key"
    }
    /// Builds the poll request for a handle, or says why the handle cannot be polled.
    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError>;
    /// Builds the cancel request, or `None` when the protocol has none (or the handle lacks what it needs).
    fn cancel_request(&self, handle: &OperationHandle) -> Option<RequestSpec>;

    /// Reads a 2xx answer to the start request.
    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError>;
    /// Reads a 2xx answer to a poll.
    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError>;
    /// Reads an error answer (non-2xx) into a normalised error.
    fn parse_error(&self, answer: &HttpAnswer) -> OperationError;

    /// An error answer the upstream means as "try again", whatever its status (e.g. AWS
    /// throttling exceptions sent as 400). The default: none.
    fn is_transient(&self, _error: &OperationError) -> bool {
        false
    }

    /// When the upstream wants to be asked again, from this answer: the `Retry-After` family of
    /// headers ([`retry_after`]) by default; a dialect adds what its bodies say.
    fn retry_hint(&self, answer: &HttpAnswer, now: std::time::SystemTime) -> Option<Duration> {
        retry_after(answer, now)
    }

    /// An error answer that says "slow down" whatever its status (e.g. AWS throttling
    /// exceptions sent as 400): the request was not processed. The default: none (429 is
    /// read as throttling by every dialect).
    fn is_throttled(&self, _error: &OperationError) -> bool {
        false
    }

    /// An error answer that says the operation does not exist. The default: 404 and 410.
    fn is_not_found(&self, status: u16, _error: &OperationError) -> bool {
        matches!(status, 404 | 410)
    }

    /// How an error answer is shown to people. The default: the upstream's message.
    fn error_text(&self, error: &OperationError) -> String {
        error.message.clone()
    }

    /// Reads the answer to the start request.
    fn read_start(&self, _request: &RequestSpec, answer: &HttpAnswer) -> StartOutcome {
        if is_success(answer.status) {
            return match self.parse_started(answer) {
                Ok(started) => StartOutcome::Started(Box::new(started)),
                Err(e) => StartOutcome::Lost(format!("unreadable start answer: {e}")),
            };
        }
        let error = self.parse_error(answer);
        let text = describe(answer.status, &self.error_text(&error));
        let not_processed = answer.status == 429
            || (answer.status == 503
                && ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"]
                    .iter()
                    .any(|h| answer.header(h).is_some()))
            || self.is_throttled(&error);
        if not_processed {
            StartOutcome::Deferred(text)
        } else if is_refusal(answer.status) && !self.is_transient(&error) {
            StartOutcome::Rejected(error)
        } else {
            StartOutcome::Lost(text)
        }
    }

    /// Reads the answer to a poll.
    fn read_poll(&self, _handle: &OperationHandle, answer: &HttpAnswer) -> PollOutcome {
        if is_success(answer.status) {
            return match self.parse_operation(answer) {
                Ok(observation) => PollOutcome::Observed(observation),
                Err(e) => PollOutcome::Failed {
                    message: format!("unreadable answer: {e}"),
                    not_found: false,
                },
            };
        }
        let error = self.parse_error(answer);
        PollOutcome::Failed {
            message: describe(answer.status, &self.error_text(&error)),
            not_found: self.is_not_found(answer.status, &error) && !self.is_transient(&error),
        }
    }

    /// A follow-up request that reads the result of a succeeded operation when the operation
    /// itself does not carry it (Azure: GET the resource a PUT or PATCH created or changed);
    /// sent after a poll that observed success. `None` (the default): the observation is final.
    fn result_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    /// Completes a succeeded `observation` with the answer to [`Dialect::result_request`]: a
    /// 2xx JSON body becomes the result; a transient answer (408, 425, 429, 5xx) is a failed
    /// poll, so the operation is polled (and its result read) again; any other answer leaves
    /// the observation as it was.
    fn read_result(&self, mut observation: Observation, answer: &HttpAnswer) -> PollOutcome {
        if is_success(answer.status) {
            if let Ok(body) = answer.json() {
                observation.result = Some(body);
            }
            return PollOutcome::Observed(observation);
        }
        if is_refusal(answer.status) {
            return PollOutcome::Observed(observation);
        }
        PollOutcome::Failed {
            message: format!(
                "the operation succeeded but its result could not be read: {}",
                describe(answer.status, &self.parse_error(answer).message)
            ),
            not_found: false,
        }
    }

    /// Whether the operation a start began can be looked for upstream when the start's answer
    /// was lost and the start cannot be resent (no idempotency key). The default: no.
    fn can_recover(&self) -> bool {
        false
    }

    /// The first request of that look-up, for `start` sent at `sent_at` (`None`: nothing to look
    /// for, the start's outcome stays unknown).
    fn recovery_request(
        &self,
        _start: &StartRequest,
        _sent_at: jiff::Timestamp,
    ) -> Option<RequestSpec> {
        None
    }

    /// Reads the answer to `request`, one request of the look-up; `candidate` is the match the
    /// earlier pages found.
    fn read_recovery(
        &self,
        _start: &StartRequest,
        _sent_at: jiff::Timestamp,
        _candidate: Option<&Started>,
        _request: &RequestSpec,
        _answer: &HttpAnswer,
    ) -> Recovery {
        Recovery::NotFound("this protocol cannot look for a started operation".into())
    }

    /// The request for one page of the provider's operations (`spec.list`), `page_token` after
    /// the first; `None` when the protocol does not list operations.
    fn list_request(&self, _list: &ListSpec, _page_token: Option<&str>) -> Option<RequestSpec> {
        None
    }

    /// The key under which a list shows the operation of `handle` (the same as
    /// [`ListPage::entries`]' keys); `None` when it cannot be listed.
    fn list_key(&self, _handle: &OperationHandle) -> Option<String> {
        None
    }

    /// Reads the answer to a list request.
    fn read_list(&self, answer: &HttpAnswer) -> ListOutcome {
        if is_success(answer.status) {
            return ListOutcome::Refused("this protocol does not list operations".into());
        }
        self.list_failure(answer)
    }

    /// A list answer that is not a page: refused (it will not work as configured) or failed
    /// (try again later; throttling, such as Compute's `403 rateLimitExceeded` or AWS's `400
    /// ThrottlingException`, is never a refusal).
    fn list_failure(&self, answer: &HttpAnswer) -> ListOutcome {
        let error = self.parse_error(answer);
        let message = describe(answer.status, &self.error_text(&error));
        if (is_refusal(answer.status) || answer.status == 501)
            && !self.is_transient(&error)
            && !self.is_throttled(&error)
        {
            ListOutcome::Refused(message)
        } else {
            ListOutcome::Failed(message)
        }
    }

    /// Reads the answer to a cancel request.
    fn read_cancel(&self, answer: &HttpAnswer) -> CancelOutcome {
        if is_success(answer.status) {
            return CancelOutcome::Accepted;
        }
        let error = self.parse_error(answer);
        let message = describe(answer.status, &self.error_text(&error));
        if (is_refusal(answer.status) || answer.status == 501) && !self.is_transient(&error) {
            CancelOutcome::Refused(message)
        } else {
            CancelOutcome::Lost(message)
        }
    }
}

/// `GET path` with the list's query, its page size and, after the first page, the token;
/// `names`: the API's names for the page size and token parameters.
pub fn list_page_request(
    path: String,
    list: &ListSpec,
    names: (&str, &str),
    page_token: Option<&str>,
) -> RequestSpec {
    let mut request = RequestSpec::get(path);
    request.query.extend(list.query.clone());
    request
        .query
        .push((names.0.into(), list.page_size().to_string()));
    if let Some(token) = page_token {
        request.query.push((names.1.into(), token.into()));
    }
    request
}

/// The JSON body of a list answer, or the outcome when there is none to read: a refusal or a
/// failure as [`Dialect::list_failure`] tells, or an unreadable body.
pub fn list_body<D: Dialect + ?Sized>(
    dialect: &D,
    answer: &HttpAnswer,
) -> Result<Value, ListOutcome> {
    if !is_success(answer.status) {
        return Err(dialect.list_failure(answer));
    }
    answer
        .json()
        .map_err(|e| ListOutcome::Failed(e.to_string()))
}

/// The `field` array of a list answer (an absent one is an empty page, as proto3 JSON omits
/// empty repeated fields).
pub fn listed<'a>(body: &'a Value, field: &str) -> Option<&'a [Value]> {
    match body.get(field) {
        None | Some(Value::Null) if body.is_object() => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        _ => None,
    }
}

/// The next page's token of a list answer: `None` when absent or empty (the last page).
pub fn page_token_of(body: &Value, field: &str) -> Option<String> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// A 2xx status.
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// A 4xx that resending will not change (not a timeout, too-early or throttling answer).
pub fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// `HTTP <status>: <message>`.
pub fn describe(status: u16, message: &str) -> String {
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    }
}

/// The upstream's hint of when to ask again: `retry-after-ms`, `x-ms-retry-after-ms`, then
/// `Retry-After` as seconds or HTTP-date, relative to `now`; on a 429 without those, the
/// rate-limit window's reset (`RateLimit: limit=…, remaining=…, reset=N` as Redpanda sends
/// it, or `RateLimit-Reset: N`); `None` when absent or unreadable.
pub fn retry_after(answer: &HttpAnswer, now: std::time::SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = answer
            .header(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    if let Some(value) = answer.header("retry-after") {
        return parse_retry_after(value, now);
    }
    if answer.status != 429 {
        return None;
    }
    if let Some(secs) = answer
        .header("ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    answer
        .header("ratelimit")?
        .split([',', ';'])
        .find_map(|part| {
            let (key, value) = part.split_once('=')?;
            matches!(key.trim(), "reset" | "t")
                .then(|| value.trim().parse::<u64>().ok().map(Duration::from_secs))
                .flatten()
        })
}

/// Parses an RFC 9110 `Retry-After` value: delay-seconds or an HTTP-date (a past date is zero).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `google.rpc.Code` name of a numeric code (`UNKNOWN` for anything outside 0..=16).
pub fn rpc_code_name(code: i64) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The `google.rpc.Code` name that an HTTP status maps to (RFC/AIP-193 table).
pub fn rpc_code_for_http(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn answer_with(headers: &[(&str, &str)]) -> HttpAnswer {
        HttpAnswer {
            status: 429,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn request_debug_output_never_shows_header_values() {
        let request = RequestSpec {
            method: reqwest::Method::POST,
            path: "projects/p/clusters".into(),
            query: vec![("requestId".into(), "r-1".into())],
            headers: vec![("Authorization".into(), "Bearer s3cr3t-token".into())],
            body: Some(serde_json::json!({"name": "c1"})),
        };
        let shown = format!("{request:?} {request:#?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(shown.contains("Authorization: <redacted>"), "{shown}");
        assert!(shown.contains("projects/p/clusters") && shown.contains("r-1"));
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Duration>);
        let cases: &[Case] = &[
            (&[("Retry-After", "120")], Some(Duration::from_secs(120))),
            (&[("retry-after", " 7 ")], Some(Duration::from_secs(7))),
            (
                &[("Retry-After", "Sun, 06 Nov 1994 08:50:07 GMT")],
                Some(Duration::from_secs(30)),
            ),
            (
                &[("Retry-After", "Sunday, 06-Nov-94 08:50:07 GMT")],
                Some(Duration::from_secs(30)),
            ),
            (
                &[("Retry-After", "Sun Nov  6 08:50:07 1994")],
                Some(Duration::from_secs(30)),
            ),
            (
                &[("Retry-After", "Sun, 06 Nov 1994 08:00:00 GMT")],
                Some(Duration::ZERO),
            ),
            (
                &[("retry-after-ms", "1500"), ("Retry-After", "9")],
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("x-ms-retry-after-ms", "250")],
                Some(Duration::from_millis(250)),
            ),
            (&[("Retry-After", "soon")], None),
            (
                &[("RateLimit", "limit=100, remaining=0, reset=7")],
                Some(Duration::from_secs(7)),
            ),
            (&[("RateLimit-Reset", "3")], Some(Duration::from_secs(3))),
            (&[("Retry-After", "-5")], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            assert_eq!(
                retry_after(&answer_with(headers), now),
                *want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn rpc_codes_have_their_names() {
        assert_eq!(rpc_code_name(1), "CANCELLED");
        assert_eq!(rpc_code_name(9), "FAILED_PRECONDITION");
        assert_eq!(rpc_code_name(2), "UNKNOWN");
        assert_eq!(rpc_code_name(99), "UNKNOWN");
        assert_eq!(rpc_code_for_http(404), "NOT_FOUND");
        assert_eq!(rpc_code_for_http(502), "INTERNAL");
    }

    proptest::proptest! {
        #[test]
        fn retry_after_never_panics(value in ".*") {
            let _ = parse_retry_after(&value, SystemTime::now());
        }
    }
}
