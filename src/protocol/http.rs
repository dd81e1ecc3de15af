//! Any other HTTP API (`protocol: http`): the provider's `spec.http` CEL expressions read the
//! answers — the AWS waiter "acceptor" idea in the Kubernetes expression language.
//!
//! Every expression sees `status` (int), `headers` (lower-case names; repeated headers joined
//! by `, `) and `body` (the parsed JSON, or the raw text when it is not JSON). The start
//! response gives the URL to poll (`operationFrom`). Each poll response is read `failed` first,
//! then `succeeded`; a 2xx answer where neither holds is still running (`progress`, `state`).
//! A non-2xx answer where neither holds is a failed poll, with the usual HTTP semantics (404
//! and 410: not found). An expression that fails to evaluate makes a failed poll whose message
//! names it; a missing field in `progress` or `state` only means "not reported". No cancel. The
//! start is idempotent only with `idempotencyKeyHeader`, which carries the request id.

use std::sync::Arc;

use serde_json::Value;

use super::{
    Dialect, HttpAnswer, Observation, ParseError, PollOutcome, RequestSpec, Started, UpstreamState,
    describe, is_success, rpc_code_for_http,
};
use crate::api::{HttpOptions, OperationError, OperationHandle, StartRequest};
use crate::cel::{CompileError, EvalError, Expression, FieldError, Variables, to_cel};

/// The variables every `spec.http` expression may use.
pub const VARIABLES: &[&str] = &["status", "headers", "body"];
/// How much of an expression a message quotes.
const QUOTED_CHARS: usize = 60;

/// The `http` dialect of one provider: its compiled expressions and its base URL.
#[derive(Debug)]
pub struct Http {
    base_url: String,
    operation_from: Expression,
    succeeded: Expression,
    failed: Expression,
    progress: Option<Expression>,
    result: Option<Expression>,
    message: Option<Expression>,
    state: Option<Expression>,
    idempotency_key_header: Option<String>,
}

/// Every expression of `options` that does not compile, named by its field
/// (`spec.http.succeeded`), in field order.
pub fn check_http(options: &HttpOptions) -> Vec<FieldError> {
    fields(options)
        .into_iter()
        .filter_map(|(field, source)| {
            let source = source?;
            Expression::compile(source, VARIABLES)
                .err()
                .map(|error| field_error(field, error))
        })
        .collect()
}

/// The dialect of a provider with `protocol: http`, compiled (the provider registry keeps it
/// with the provider's client, so it is compiled once per provider generation). `Err` says why
/// it cannot be used: `spec.http` is missing, or an expression does not compile.
pub fn configured(base_url: &str, options: Option<&HttpOptions>) -> Result<Arc<Http>, String> {
    let Some(options) = options else {
        return Err("spec.http is required with protocol http (the CEL expressions that read the upstream's answers)".into());
    };
    let http = Http::new(base_url, options).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        all.join("; ")
    })?;
    Ok(Arc::new(http))
}

impl Http {
    /// Compiles the expressions of `options`; every one that does not compile is reported.
    pub fn new(base_url: &str, options: &HttpOptions) -> Result<Http, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut compile = |field: &'static str, source: &str| {
            Expression::compile(source, VARIABLES)
                .map_err(|error| errors.push(field_error(field, error)))
                .ok()
        };
        let operation_from = compile("operationFrom", &options.operation_from);
        let succeeded = compile("succeeded", &options.succeeded);
        let failed = compile("failed", &options.failed);
        let mut optional = |field: &'static str, source: &Option<String>| {
            source.as_deref().map(|s| compile(field, s))
        };
        let progress = optional("progress", &options.progress);
        let result = optional("result", &options.result);
        let message = optional("message", &options.message);
        let state = optional("state", &options.state);
        match (operation_from, succeeded, failed) {
            (Some(operation_from), Some(succeeded), Some(failed))
                if errors.is_empty()
                    && [&progress, &result, &message, &state]
                        .iter()
                        .all(|o| !matches!(o, Some(None))) =>
            {
                Ok(Http {
                    base_url: base_url.to_owned(),
                    operation_from,
                    succeeded,
                    failed,
                    progress: progress.flatten(),
                    result: result.flatten(),
                    message: message.flatten(),
                    state: state.flatten(),
                    idempotency_key_header: options
                        .idempotency_key_header
                        .clone()
                        .filter(|h| !h.trim().is_empty()),
                })
            }
            _ => Err(errors),
        }
    }

    /// Reads a poll answer: terminal when `failed` or `succeeded` holds, running for a 2xx
    /// answer where neither does. `Ok(None)`: a non-2xx answer that no expression accepted (on
    /// such an answer, one that cannot be evaluated does not hold). `Err`: an expression could
    /// not read the answer; the message names it.
    fn judge(&self, answer: &HttpAnswer) -> Result<Option<Observation>, String> {
        let vars = variables(answer);
        let ok = is_success(answer.status);
        let holds = |expr: &Expression, field: &str| match expr.evaluate_bool(&vars) {
            Ok(b) => Ok(b),
            // Over its budget on any answer: said, not taken for "does not hold".
            Err(e @ EvalError::OverBudget(_)) => Err(failure(field, expr, &e)),
            Err(_) if !ok => Ok(false),
            Err(e) => Err(failure(field, expr, &e)),
        };
        if holds(&self.failed, "failed")? {
            let message = self
                .message
                .as_ref()
                .and_then(|m| m.evaluate_string(&vars).ok().flatten())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "the operation failed (spec.http.failed is true for an HTTP {} answer)",
                        answer.status
                    )
                });
            return Ok(Some(Observation {
                state: UpstreamState::Failed,
                upstream_state: self.state_of(&vars),
                error: Some(OperationError {
                    code: if ok {
                        "UNKNOWN".into()
                    } else {
                        rpc_code_for_http(answer.status).into()
                    },
                    provider_code: None,
                    http_status: (!ok).then_some(i32::from(answer.status)),
                    message,
                    details: vec![],
                }),
                ..Observation::default()
            }));
        }
        if holds(&self.succeeded, "succeeded")? {
            let result = match &self.result {
                Some(expr) => expr
                    .evaluate_json(&vars)
                    .map_err(|e| failure("result", expr, &e))?,
                None => body_of(answer),
            };
            return Ok(Some(Observation {
                state: UpstreamState::Succeeded,
                upstream_state: self.state_of(&vars),
                progress: self.progress.as_ref().map(|_| 100),
                result: (!result.is_null()).then_some(result),
                ..Observation::default()
            }));
        }
        if !ok {
            return Ok(None);
        }
        let progress = match &self.progress {
            Some(expr) => match expr.evaluate_number(&vars) {
                Ok(p) => p.map(|p| p.round().clamp(0.0, 100.0) as i32),
                Err(EvalError::Missing(_)) => None,
                Err(e) => return Err(failure("progress", expr, &e)),
            },
            None => None,
        };
        Ok(Some(Observation {
            state: UpstreamState::Running,
            upstream_state: self.state_of(&vars),
            progress,
            ..Observation::default()
        }))
    }

    /// An error answer's message: the `message` expression's, else one in a usual place.
    fn error_text(&self, answer: &HttpAnswer) -> Option<String> {
        let from_expression = self.message.as_ref().and_then(|m| {
            m.evaluate_string(&variables(answer))
                .ok()
                .flatten()
                .filter(|m| !m.is_empty())
        });
        from_expression.or_else(|| conventional_message(&body_of(answer)))
    }

    /// The `state` expression's value; absent, missing or not a string: none.
    fn state_of(&self, vars: &Variables) -> Option<String> {
        self.state
            .as_ref()
            .and_then(|s| s.evaluate_string(vars).ok().flatten())
    }

    /// Where `target` (what `operationFrom` gave) is: a URL as is, an absolute path on the base
    /// URL's origin, anything else relative to the base URL.
    fn locate(&self, target: &str) -> Result<String, String> {
        let target = target.trim();
        if target.is_empty() {
            return Err("is empty".into());
        }
        if target.contains("://") {
            // Its origin is checked when it is polled.
            return Ok(target.to_owned());
        }
        if target.starts_with("//") {
            return Err(format!(
                "{target:?} names another host; give a path or a URL on the baseURL's origin"
            ));
        }
        if target.starts_with('/') {
            let base = reqwest::Url::parse(&self.base_url)
                .map_err(|_| "the provider's baseURL is not a URL".to_owned())?;
            return base
                .join(target)
                .map(|u| u.to_string())
                .map_err(|e| format!("{target:?} is not a path: {e}"));
        }
        Ok(format!("{}/{target}", self.base_url.trim_end_matches('/')))
    }
}

impl Dialect for Http {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        self.idempotency_key_header.is_some()
    }

    fn can_cancel(&self) -> bool {
        false
    }

    fn start_request(&self, start: &StartRequest, request_id: &str) -> RequestSpec {
        let mut request = RequestSpec::from_start(start);
        if let Some(header) = &self.idempotency_key_header
            && !request
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(header))
        {
            request
                .headers
                .push((header.clone(), request_id.to_owned()));
        }
        request
    }

    fn poll_request(&self, handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        match &handle.url {
            Some(url) => Ok(RequestSpec::get(url.clone())),
            None => Err(ParseError::Shape(
                "an http operation is polled at its URL; set spec.operation.url".into(),
            )),
        }
    }

    fn cancel_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    fn parse_started(&self, answer: &HttpAnswer) -> Result<Started, ParseError> {
        let vars = variables(answer);
        let expr = &self.operation_from;
        let target = match expr.evaluate_string(&vars) {
            Ok(Some(target)) => target,
            Ok(None) => {
                return Err(ParseError::Shape(format!(
                    "spec.http.operationFrom ({}) is null",
                    quote(expr)
                )));
            }
            Err(e) => return Err(ParseError::Shape(failure("operationFrom", expr, &e))),
        };
        let url = self.locate(&target).map_err(|why| {
            ParseError::Shape(format!("spec.http.operationFrom ({}): {why}", quote(expr)))
        })?;
        Ok(Started {
            handle: OperationHandle {
                url: Some(url),
                ..OperationHandle::default()
            },
            observation: Observation {
                state: UpstreamState::Running,
                ..Observation::default()
            },
        })
    }

    fn parse_operation(&self, answer: &HttpAnswer) -> Result<Observation, ParseError> {
        match self.judge(answer) {
            Ok(Some(observation)) => Ok(observation),
            Ok(None) => Err(ParseError::Shape(describe(
                answer.status,
                &self.error_text(answer).unwrap_or_default(),
            ))),
            Err(why) => Err(ParseError::Shape(why)),
        }
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        let message = self
            .error_text(answer)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        OperationError {
            code: rpc_code_for_http(answer.status).into(),
            provider_code: None,
            http_status: Some(i32::from(answer.status)),
            message,
            details: vec![],
        }
    }

    fn read_poll(&self, _handle: &OperationHandle, answer: &HttpAnswer) -> PollOutcome {
        match self.judge(answer) {
            Ok(Some(observation)) => PollOutcome::Observed(observation),
            // A non-2xx answer no expression accepted: plain HTTP semantics.
            Ok(None) => PollOutcome::Failed {
                message: describe(answer.status, &self.error_text(answer).unwrap_or_default()),
                not_found: matches!(answer.status, 404 | 410),
            },
            // An answer an expression could not read: not a verdict, a failed poll.
            Err(message) => PollOutcome::Failed {
                message,
                not_found: false,
            },
        }
    }
}

/// The `http` protocol named without its `spec.http`: every request it would read fails with a
/// message saying so (a provider's dialect comes from [`configured`]).
pub struct Unconfigured;

const UNCONFIGURED: &str = "the http protocol needs the provider's spec.http expressions";

impl Dialect for Unconfigured {
    fn idempotent_start(&self, _start: &StartRequest) -> bool {
        false
    }

    fn can_cancel(&self) -> bool {
        false
    }

    fn start_request(&self, start: &StartRequest, _request_id: &str) -> RequestSpec {
        RequestSpec::from_start(start)
    }

    fn poll_request(&self, _handle: &OperationHandle) -> Result<RequestSpec, ParseError> {
        Err(ParseError::Shape(UNCONFIGURED.into()))
    }

    fn cancel_request(&self, _handle: &OperationHandle) -> Option<RequestSpec> {
        None
    }

    fn parse_started(&self, _answer: &HttpAnswer) -> Result<Started, ParseError> {
        Err(ParseError::Shape(UNCONFIGURED.into()))
    }

    fn parse_operation(&self, _answer: &HttpAnswer) -> Result<Observation, ParseError> {
        Err(ParseError::Shape(UNCONFIGURED.into()))
    }

    fn parse_error(&self, answer: &HttpAnswer) -> OperationError {
        OperationError {
            code: rpc_code_for_http(answer.status).into(),
            provider_code: None,
            http_status: Some(i32::from(answer.status)),
            message: conventional_message(&body_of(answer))
                .unwrap_or_else(|| format!("HTTP {}", answer.status)),
            details: vec![],
        }
    }
}

/// The expression fields of `options`, with their names, in order.
fn fields(options: &HttpOptions) -> [(&'static str, Option<&str>); 7] {
    [
        ("operationFrom", Some(options.operation_from.as_str())),
        ("succeeded", Some(options.succeeded.as_str())),
        ("failed", Some(options.failed.as_str())),
        ("progress", options.progress.as_deref()),
        ("result", options.result.as_deref()),
        ("message", options.message.as_deref()),
        ("state", options.state.as_deref()),
    ]
}

fn field_error(field: &str, error: CompileError) -> FieldError {
    FieldError {
        field: format!("spec.http.{field}"),
        error,
    }
}

/// The variables of an answer: `status`, `headers` and `body`.
fn variables(answer: &HttpAnswer) -> Variables {
    let mut headers = serde_json::Map::new();
    for (name, value) in &answer.headers {
        match headers.entry(name.to_ascii_lowercase()) {
            serde_json::map::Entry::Occupied(mut joined) => {
                if let Value::String(s) = joined.get_mut() {
                    s.push_str(", ");
                    s.push_str(value);
                }
            }
            serde_json::map::Entry::Vacant(slot) => {
                slot.insert(Value::String(value.clone()));
            }
        }
    }
    let mut vars = Variables::new();
    vars.bind("status", ::cel::Value::Int(i64::from(answer.status)))
        .bind("headers", to_cel(&Value::Object(headers)))
        .bind("body", to_cel(&body_of(answer)));
    vars
}

/// The body as JSON, or as a string when it is not JSON.
fn body_of(answer: &HttpAnswer) -> Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()))
}

/// `spec.http.FIELD (SOURCE): ERROR`.
fn failure(field: &str, expr: &Expression, error: &EvalError) -> String {
    format!("spec.http.{field} ({}): {error}", quote(expr))
}

/// The expression's source, cut to [`QUOTED_CHARS`].
fn quote(expr: &Expression) -> String {
    let source = expr.source();
    if source.chars().count() <= QUOTED_CHARS {
        return source.to_owned();
    }
    let cut: String = source.chars().take(QUOTED_CHARS).collect();
    format!("{cut}…")
}

/// An error message in one of the usual places: `error.message`, `message`, `error` (a
/// string), or RFC 9457 problem details (`detail`, `title`).
fn conventional_message(body: &Value) -> Option<String> {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    text(body.get("error").and_then(|e| e.get("message")))
        .or_else(|| text(body.get("message")))
        .or_else(|| text(body.get("error")))
        .or_else(|| text(body.get("detail")))
        .or_else(|| text(body.get("title")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = "https://api.example.com/generic";

    fn options() -> HttpOptions {
        HttpOptions {
            operation_from: "headers['location']".into(),
            succeeded: "body.status == 'done'".into(),
            failed: "body.status == 'error'".into(),
            progress: Some("body.percent".into()),
            result: Some("body.output".into()),
            message: Some("body.error.message".into()),
            state: Some("body.status".into()),
            idempotency_key_header: Some("Idempotency-Key".into()),
        }
    }

    fn http() -> Arc<Http> {
        configured(BASE, Some(&options())).unwrap()
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: Value) -> HttpAnswer {
        HttpAnswer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    fn handle() -> OperationHandle {
        OperationHandle {
            url: Some(format!("{BASE}/jobs/1")),
            ..Default::default()
        }
    }

    fn poll(dialect: &Http, status: u16, body: Value) -> PollOutcome {
        dialect.read_poll(&handle(), &answer(status, &[], body))
    }

    fn observed(outcome: PollOutcome) -> Observation {
        match outcome {
            PollOutcome::Observed(o) => o,
            other => panic!("not observed: {other:?}"),
        }
    }

    fn failed_poll(outcome: PollOutcome) -> (String, bool) {
        match outcome {
            PollOutcome::Failed { message, not_found } => (message, not_found),
            other => panic!("not a failed poll: {other:?}"),
        }
    }

    #[test]
    fn the_202_location_start_gives_the_url_to_poll() {
        // A generic 202 Accepted with a status monitor in `Location` (RFC 9110 §15.3.3).
        let started = http()
            .parse_started(&answer(
                202,
                &[
                    ("Location", "/generic/jobs/7"),
                    ("Content-Type", "application/json"),
                ],
                json!({"id": "7", "status": "queued"}),
            ))
            .unwrap();
        assert_eq!(
            started.handle.url.as_deref(),
            Some("https://api.example.com/generic/jobs/7")
        );
        assert_eq!(started.observation.state, UpstreamState::Running);
    }

    #[test]
    fn operation_from_may_read_the_body_and_give_any_kind_of_reference() {
        let from_body = |expr: &str, body: Value| {
            let options = HttpOptions {
                operation_from: expr.into(),
                ..options()
            };
            let dialect = Http::new(BASE, &options).unwrap();
            dialect
                .parse_started(&answer(201, &[], body))
                .map(|s| s.handle.url.unwrap_or_default())
        };
        let links = json!({"links": {"status": "https://api.example.com/generic/ops/9"}});
        assert_eq!(
            from_body("body.links.status", links).unwrap(),
            "https://api.example.com/generic/ops/9"
        );
        assert_eq!(
            from_body("'jobs/' + body.id", json!({"id": "a1"})).unwrap(),
            "https://api.example.com/generic/jobs/a1"
        );
        let e = from_body("body.links.status", json!({"links": {}})).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.http.operationFrom (body.links.status): no such key: status"),
            "{e}"
        );
        assert!(
            from_body("body.id", json!({"id": 5})).is_err(),
            "not a string"
        );
        assert!(from_body("body.id", json!({"id": null})).is_err());
        assert!(from_body("body.id", json!({"id": "  "})).is_err());
        assert!(from_body("body.id", json!({"id": "//evil.example/x"})).is_err());
        // Not JSON: the body is the raw text.
        let dialect = Http::new(
            BASE,
            &HttpOptions {
                operation_from: "body.trim()".into(),
                ..options()
            },
        )
        .unwrap();
        let raw = HttpAnswer {
            status: 202,
            headers: vec![],
            body: b"jobs/3\n".to_vec(),
        };
        assert_eq!(
            dialect.parse_started(&raw).unwrap().handle.url.as_deref(),
            Some("https://api.example.com/generic/jobs/3")
        );
    }

    #[test]
    fn running_answers_report_progress_and_state() {
        let obs = observed(poll(
            &http(),
            200,
            json!({"status": "running", "percent": 42.4}),
        ));
        assert_eq!(obs.state, UpstreamState::Running);
        assert_eq!(obs.progress, Some(42));
        assert_eq!(obs.upstream_state.as_deref(), Some("running"));
        // No percent yet: no progress, not an error.
        let obs = observed(poll(&http(), 200, json!({"status": "queued"})));
        assert_eq!((obs.progress, obs.state), (None, UpstreamState::Running));
        let obs = observed(poll(
            &http(),
            200,
            json!({"status": "running", "percent": 250}),
        ));
        assert_eq!(obs.progress, Some(100), "clamped");
        // A progress of the wrong type is a failed poll naming the expression.
        let (message, not_found) = failed_poll(poll(
            &http(),
            200,
            json!({"status": "running", "percent": "40%"}),
        ));
        assert!(
            message.starts_with("spec.http.progress (body.percent): "),
            "{message}"
        );
        assert!(!not_found);
    }

    #[test]
    fn done_succeeds_with_the_result_expression_or_the_body() {
        let body = json!({"status": "done", "percent": 100, "output": {"url": "s3://b/k"}});
        let obs = observed(poll(&http(), 200, body.clone()));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        assert_eq!(obs.result, Some(json!({"url": "s3://b/k"})));
        assert_eq!(obs.progress, Some(100));
        let without_result = Http::new(
            BASE,
            &HttpOptions {
                result: None,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(
            observed(poll(&without_result, 200, body.clone())).result,
            Some(body)
        );
        // A result that cannot be read keeps polling, with the expression named.
        let (message, _) = failed_poll(poll(&http(), 200, json!({"status": "done"})));
        assert!(
            message.contains("spec.http.result (body.output)"),
            "{message}"
        );
    }

    #[test]
    fn error_fails_with_the_message_expression() {
        let obs = observed(poll(
            &http(),
            200,
            json!({"status": "error", "error": {"message": "disk full"}}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
        let error = obs.error.unwrap();
        assert_eq!(
            (
                error.code.as_str(),
                error.message.as_str(),
                error.http_status
            ),
            ("UNKNOWN", "disk full", None)
        );
        // No message: a generic one.
        let obs = observed(poll(&http(), 200, json!({"status": "error"})));
        assert!(
            obs.error
                .unwrap()
                .message
                .contains("spec.http.failed is true")
        );
    }

    #[test]
    fn failed_wins_over_succeeded() {
        let dialect = Http::new(
            BASE,
            &HttpOptions {
                succeeded: "body.done".into(),
                failed: "has(body.error)".into(),
                ..options()
            },
        )
        .unwrap();
        let obs = observed(poll(
            &dialect,
            200,
            json!({"done": true, "error": {"message": "partial"}}),
        ));
        assert_eq!(obs.state, UpstreamState::Failed);
    }

    #[test]
    fn non_2xx_answers_are_failed_polls_unless_an_expression_accepts_them() {
        let (message, not_found) =
            failed_poll(poll(&http(), 503, json!({"message": "overloaded"})));
        assert_eq!(
            (message.as_str(), not_found),
            ("HTTP 503: overloaded", false)
        );
        let (_, not_found) = failed_poll(poll(&http(), 404, json!({})));
        assert!(not_found);
        // An HTML error page: `body.status` cannot be read, still plain HTTP semantics.
        let html = HttpAnswer {
            status: 502,
            headers: vec![],
            body: b"<html>bad gateway</html>".to_vec(),
        };
        let (message, _) = failed_poll(http().read_poll(&handle(), &html));
        assert_eq!(message, "HTTP 502");
        // A delete waiter: gone means done (the AWS `status` matcher). `failed` cannot read
        // this answer (no `status` in the body): on a non-2xx answer that means "does not hold".
        let deleted = Http::new(
            BASE,
            &HttpOptions {
                succeeded: "status == 404".into(),
                failed: "body.status == 'error'".into(),
                result: None,
                ..options()
            },
        )
        .unwrap();
        let obs = observed(poll(&deleted, 404, json!({"message": "no such job"})));
        assert_eq!(obs.state, UpstreamState::Succeeded);
        let gone = Http::new(
            BASE,
            &HttpOptions {
                failed: "status == 410".into(),
                ..options()
            },
        )
        .unwrap();
        let obs = observed(poll(&gone, 410, json!({"message": "expired"})));
        let error = obs.error.unwrap();
        assert_eq!(error.http_status, Some(410));
        assert_eq!(error.code, "UNKNOWN", "410 has no rpc code of its own");
    }

    #[test]
    fn unreadable_2xx_answers_name_the_expression() {
        let (message, not_found) = failed_poll(poll(&http(), 200, json!({"state": "x"})));
        assert!(
            message.starts_with("spec.http.failed (body.status == 'error'): no such key: status"),
            "{message}"
        );
        assert!(!not_found);
        let dialect = Http::new(
            BASE,
            &HttpOptions {
                succeeded: "body.status".into(),
                failed: "false".into(),
                ..options()
            },
        )
        .unwrap();
        let (message, _) = failed_poll(poll(&dialect, 200, json!({"status": "done"})));
        assert_eq!(
            message,
            "spec.http.succeeded (body.status): evaluates to a string, not a bool"
        );
    }

    #[test]
    fn headers_are_lower_case_and_joined() {
        let dialect = Http::new(
            BASE,
            &HttpOptions {
                succeeded: "headers['x-state'] == 'a, b'".into(),
                failed: "headers['content-type'] != 'application/json'".into(),
                result: None,
                ..options()
            },
        )
        .unwrap();
        let answer = answer(
            200,
            &[
                ("Content-Type", "application/json"),
                ("X-State", "a"),
                ("x-state", "b"),
            ],
            json!({}),
        );
        let obs = observed(dialect.read_poll(&handle(), &answer));
        assert_eq!(obs.state, UpstreamState::Succeeded);
    }

    #[test]
    fn the_idempotency_key_header_makes_the_start_idempotent() {
        let start: StartRequest =
            serde_json::from_value(json!({"path": "jobs", "body": {"x": 1}})).unwrap();
        let request = http().start_request(&start, "uid-1");
        assert!(
            request
                .headers
                .contains(&("Idempotency-Key".into(), "uid-1".into()))
        );
        assert!(http().idempotent_start(&start));
        // A key the user set is kept.
        let own: StartRequest =
            serde_json::from_value(json!({"path": "jobs", "headers": {"idempotency-key": "mine"}}))
                .unwrap();
        let request = http().start_request(&own, "uid-1");
        assert_eq!(
            request.headers,
            vec![("idempotency-key".into(), "mine".into())]
        );
        let plain = Http::new(
            BASE,
            &HttpOptions {
                idempotency_key_header: None,
                ..options()
            },
        )
        .unwrap();
        assert!(!plain.idempotent_start(&start));
        assert!(plain.start_request(&start, "uid-1").headers.is_empty());
        assert!(!http().can_cancel() && http().cancel_request(&handle()).is_none());
    }

    #[test]
    fn polls_the_url_and_only_the_url() {
        assert_eq!(
            http().poll_request(&handle()).unwrap().path,
            format!("{BASE}/jobs/1")
        );
        let by_id = OperationHandle {
            id: Some("1".into()),
            ..Default::default()
        };
        assert!(http().poll_request(&by_id).is_err());
    }

    #[test]
    fn start_rejections_read_the_message() {
        let e = http().parse_error(&answer(
            400,
            &[],
            json!({"error": {"message": "name taken"}}),
        ));
        assert_eq!(
            (e.code.as_str(), e.message.as_str(), e.http_status),
            ("INVALID_ARGUMENT", "name taken", Some(400))
        );
        let plain = Http::new(
            BASE,
            &HttpOptions {
                message: None,
                ..options()
            },
        )
        .unwrap();
        let e = plain.parse_error(&answer(
            422,
            &[],
            json!({"type": "about:blank", "title": "Unprocessable", "detail": "bad size"}),
        ));
        assert_eq!(e.message, "bad size");
    }

    #[test]
    fn every_compile_error_is_reported_by_field() {
        let bad = HttpOptions {
            operation_from: "headers['location'".into(),
            succeeded: "body.status ==".into(),
            failed: "bdy.failed".into(),
            progress: Some("body.percent".into()),
            ..options()
        };
        let errors = check_http(&bad);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.http.operationFrom",
                "spec.http.succeeded",
                "spec.http.failed"
            ]
        );
        assert!(
            errors[1]
                .to_string()
                .starts_with("spec.http.succeeded: Syntax error at 1:15: "),
            "{}",
            errors[1]
        );
        assert_eq!(Http::new(BASE, &bad).unwrap_err(), errors);
        let message = configured(BASE, Some(&bad)).unwrap_err();
        assert!(
            message.contains("spec.http.failed: undeclared reference to 'bdy'"),
            "{message}"
        );
        assert!(check_http(&options()).is_empty());
        assert!(
            configured(BASE, None)
                .unwrap_err()
                .contains("spec.http is required")
        );
    }

    #[test]
    fn the_unconfigured_dialect_fails_clearly() {
        assert!(Unconfigured.poll_request(&handle()).is_err());
        let e = Unconfigured
            .parse_operation(&answer(200, &[], json!({})))
            .unwrap_err();
        assert!(e.to_string().contains("spec.http"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn reading_never_panics(
            status in 100u16..600,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            location in ".{0,40}",
        ) {
            let dialect = http();
            let answer = HttpAnswer {
                status,
                headers: vec![("location".into(), location)],
                body,
            };
            let _ = dialect.parse_started(&answer);
            let _ = dialect.read_start(&RequestSpec::get("jobs".into()), &answer);
            let _ = dialect.read_poll(&handle(), &answer);
            let _ = dialect.parse_error(&answer);
        }

        #[test]
        fn reading_any_json_never_panics(
            status in 100u16..600,
            text in "[a-z0-9{}\\[\\]:,\" .-]{0,120}",
        ) {
            let answer = HttpAnswer { status, headers: vec![], body: text.into_bytes() };
            let _ = http().read_poll(&handle(), &answer);
        }
    }
}
