//! Every dialect over the real payload shapes in `tests/fixtures/upstream/<protocol>/`: each file
//! is one answer, the public reference it follows, and what that answer means
//! (`tests/fixtures/upstream/README.md` describes the format). Failures are collected and reported
//! together, one line per file and field.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{
    CancelOutcome, Dialect, HttpAnswer, ListOutcome, ListPage, Observation, PollOutcome,
    StartOutcome, dialect_for, retry_after,
};
use crate::api::{ListSpec, OperationError, OperationHandle, ProviderSpec, StartRequest};

/// The protocol folders, by the protocol's name in a provider spec.
const PROTOCOLS: &[&str] = &[
    "google",
    "gke",
    "compute",
    "redpanda",
    "azure",
    "awsCloudControl",
    "http",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream")
}

/// One fixture file, parsed.
struct Case {
    file: String,
    fixture: Value,
}

fn cases(protocol: &str) -> Vec<Case> {
    let dir = root().join(protocol);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let fixture = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            Case {
                file: format!("{protocol}/{}", path.file_name().unwrap().to_string_lossy()),
                fixture,
            }
        })
        .collect()
}

fn answer_of(fixture: &Value) -> HttpAnswer {
    let answer = &fixture["answer"];
    let headers = answer["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = match (&answer["bodyText"], &answer["body"]) {
        (Value::String(text), _) => text.clone().into_bytes(),
        (_, Value::Null) => vec![],
        (_, body) => serde_json::to_vec(body).unwrap(),
    };
    HttpAnswer {
        status: answer["status"].as_u64().unwrap_or(200) as u16,
        headers,
        body,
    }
}

fn provider_of(protocol: &str, fixture: &Value) -> ProviderSpec {
    let mut spec = json!({"baseURL": "https://api.example.com/v1", "protocol": protocol});
    if let Some(options) = fixture["provider"].as_object() {
        for (k, v) in options {
            spec[k] = v.clone();
        }
    }
    serde_json::from_value(spec).expect("the fixture's provider options")
}

/// What the dialect made of the answer, as the `expect` keys name it.
#[derive(Default)]
struct Seen {
    outcome: &'static str,
    handle: Option<OperationHandle>,
    observation: Option<Observation>,
    message: Option<String>,
    not_found: Option<bool>,
    error: Option<OperationError>,
    page: Option<ListPage>,
}

fn read(dialect: &dyn Dialect, fixture: &Value, answer: &HttpAnswer) -> Seen {
    let handle: OperationHandle =
        serde_json::from_value(fixture["handle"].clone()).unwrap_or_default();
    match fixture["read"].as_str().unwrap_or_default() {
        "start" => {
            let start: StartRequest = serde_json::from_value(
                fixture
                    .get("start")
                    .cloned()
                    .unwrap_or_else(|| json!({"path": "x"})),
            )
            .expect("the fixture's start request");
            let request = dialect.start_request(&start, "request-id-1");
            match dialect.read_start(&request, answer) {
                StartOutcome::Started(started) => Seen {
                    outcome: "started",
                    error: started.observation.error.clone(),
                    message: started.observation.message.clone(),
                    handle: Some(started.handle),
                    observation: Some(started.observation),
                    ..Seen::default()
                },
                StartOutcome::Rejected(error) => Seen {
                    outcome: "rejected",
                    message: Some(error.message.clone()),
                    error: Some(error),
                    ..Seen::default()
                },
                StartOutcome::Deferred(why) => Seen {
                    outcome: "deferred",
                    message: Some(why),
                    error: Some(dialect.parse_error(answer)),
                    ..Seen::default()
                },
                StartOutcome::Lost(why) => Seen {
                    outcome: "lost",
                    message: Some(why),
                    error: Some(dialect.parse_error(answer)),
                    ..Seen::default()
                },
            }
        }
        "poll" => match dialect.read_poll(&handle, answer) {
            PollOutcome::Observed(observation) => Seen {
                outcome: "observed",
                handle: Some(handle),
                error: observation.error.clone(),
                message: observation.message.clone(),
                observation: Some(observation),
                ..Seen::default()
            },
            PollOutcome::Failed { message, not_found } => Seen {
                outcome: "failed",
                handle: Some(handle),
                message: Some(message),
                not_found: Some(not_found),
                error: Some(dialect.parse_error(answer)),
                ..Seen::default()
            },
        },
        "cancel" => {
            let (outcome, message) = match dialect.read_cancel(answer) {
                CancelOutcome::Accepted => ("accepted", None),
                CancelOutcome::Refused(m) => ("refused", Some(m)),
                CancelOutcome::Lost(m) => ("lost", Some(m)),
            };
            Seen {
                outcome,
                message,
                handle: Some(handle),
                error: (outcome != "accepted").then(|| dialect.parse_error(answer)),
                ..Seen::default()
            }
        }
        "list" => match dialect.read_list(answer) {
            ListOutcome::Page(page) => Seen {
                outcome: "page",
                page: Some(page),
                handle: Some(handle),
                ..Seen::default()
            },
            ListOutcome::Refused(m) => Seen {
                outcome: "refused",
                message: Some(m),
                error: Some(dialect.parse_error(answer)),
                handle: Some(handle),
                ..Seen::default()
            },
            ListOutcome::Failed(m) => Seen {
                outcome: "failed",
                message: Some(m),
                error: Some(dialect.parse_error(answer)),
                handle: Some(handle),
                ..Seen::default()
            },
        },
        other => panic!("`read` must be start, poll, cancel or list, not {other:?}"),
    }
}

/// Checks `seen` against `expect`, pushing one line per mismatch.
fn check(
    dialect: &dyn Dialect,
    expect: &Value,
    answer: &HttpAnswer,
    seen: &Seen,
    out: &mut Vec<String>,
) {
    let mut lines = Vec::new();
    let mut fail = |what: &str, want: &Value, got: Value| {
        lines.push(format!("{what}: expected {want}, got {got}"));
    };
    let Some(expect) = expect.as_object() else {
        return;
    };
    let observation = seen.observation.clone().unwrap_or_default();
    let mut errors = Vec::new();
    for (key, want) in expect {
        match key.as_str() {
            "outcome" => {
                if want != seen.outcome {
                    fail(key, want, json!(seen.outcome));
                }
            }
            "handle" => {
                let got = serde_json::to_value(seen.handle.clone().unwrap_or_default()).unwrap();
                for (k, v) in want.as_object().into_iter().flatten() {
                    if got.get(k).unwrap_or(&Value::Null) != v {
                        fail(&format!("handle.{k}"), v, got[k].clone());
                    }
                }
            }
            "pollPath" => {
                let handle = seen.handle.clone().unwrap_or_default();
                let got = dialect.poll_request(&handle).map(|r| r.path).ok();
                if want.as_str() != got.as_deref() {
                    fail(key, want, json!(got));
                }
            }
            "cancelPath" => {
                let handle = seen.handle.clone().unwrap_or_default();
                let got = dialect.cancel_request(&handle).map(|r| r.path);
                if want.as_str() != got.as_deref() {
                    fail(key, want, json!(got));
                }
            }
            "state" => {
                let got = seen.observation.as_ref().map(|o| format!("{:?}", o.state));
                if want.as_str() != got.as_deref() {
                    fail(key, want, json!(got));
                }
            }
            "upstreamState" => {
                if want.as_str() != observation.upstream_state.as_deref() {
                    fail(key, want, json!(observation.upstream_state));
                }
            }
            "progress" => {
                if want.as_i64() != observation.progress.map(i64::from) {
                    fail(key, want, json!(observation.progress));
                }
            }
            "resourceId" => {
                if want.as_str() != observation.resource_id.as_deref() {
                    fail(key, want, json!(observation.resource_id));
                }
            }
            "result" => {
                if Some(want) != observation.result.as_ref() {
                    fail(key, want, json!(observation.result));
                }
            }
            "messageContains" => {
                let got = seen.message.clone().unwrap_or_default();
                for part in strings(want) {
                    if !got.contains(&part) {
                        fail(key, &json!(part), json!(got));
                    }
                }
            }
            "notFound" => {
                if want.as_bool() != seen.not_found {
                    fail(key, want, json!(seen.not_found));
                }
            }
            "error" => check_error(want, seen.error.as_ref(), &mut errors),
            "details" => {
                let got = seen
                    .error
                    .as_ref()
                    .map(|e| serde_json::to_value(&e.details).unwrap())
                    .unwrap_or(json!([]));
                check_details(want, &got, &mut errors);
            }
            "retryAfterSeconds" => {
                let got = retry_after(answer, SystemTime::now()).map(|d| d.as_secs_f64());
                if want.as_f64() != got {
                    fail(key, want, json!(got));
                }
            }
            "entries" => {
                let page = seen.page.clone().unwrap_or_default();
                let got: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
                let want_keys: Vec<&str> = want
                    .as_object()
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                if got != want_keys {
                    fail("entries (keys, in order)", &json!(want_keys), json!(got));
                }
                for (key, fields) in want.as_object().into_iter().flatten() {
                    let Some((_, o)) = page.entries.iter().find(|(k, _)| k == key) else {
                        continue;
                    };
                    let state = format!("{:?}", o.state);
                    if let Some(w) = fields.get("state")
                        && w.as_str() != Some(state.as_str())
                    {
                        fail(&format!("entries.{key}.state"), w, json!(state));
                    }
                    if let Some(w) = fields.get("upstreamState")
                        && w.as_str() != o.upstream_state.as_deref()
                    {
                        fail(
                            &format!("entries.{key}.upstreamState"),
                            w,
                            json!(o.upstream_state),
                        );
                    }
                    if let Some(w) = fields.get("progress")
                        && w.as_i64() != o.progress.map(i64::from)
                    {
                        fail(&format!("entries.{key}.progress"), w, json!(o.progress));
                    }
                }
            }
            "nextPageToken" => {
                let got = seen.page.as_ref().and_then(|p| p.next_page_token.clone());
                if want.as_str() != got.as_deref() {
                    fail(key, want, json!(got));
                }
            }
            "listRequest" => {
                let list = fixture_list(expect);
                let request = dialect.list_request(&list, want["pageToken"].as_str());
                // `method`, `headers` (each given must be sent) and `body` are checked when given.
                let got = request.map(|r| {
                    let mut got = json!({"path": r.path, "query": r.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()});
                    if want.get("method").is_some() {
                        got["method"] = json!(r.method.as_str());
                    }
                    if let Some(headers) = want.get("headers").and_then(Value::as_object) {
                        got["headers"] = headers
                            .keys()
                            .map(|name| {
                                let value = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
                                (name.clone(), json!(value.map(|(_, v)| v)))
                            })
                            .collect::<serde_json::Map<_, _>>()
                            .into();
                    }
                    if want.get("body").is_some() {
                        got["body"] = r.body.unwrap_or(Value::Null);
                    }
                    got
                });
                let mut wanted = json!({"path": want["path"], "query": want["query"]});
                for key in ["method", "headers", "body"] {
                    if let Some(v) = want.get(key) {
                        wanted[key] = v.clone();
                    }
                }
                if got.as_ref() != Some(&wanted) {
                    fail(key, &wanted, json!(got));
                }
            }
            "listKey" => {
                let handle = seen.handle.clone().unwrap_or_default();
                let got = dialect.list_key(&handle);
                if want.as_str() != got.as_deref() {
                    fail(key, want, json!(got));
                }
            }
            other => errors.push(format!("unknown expect key {other:?}")),
        }
    }
    out.extend(lines);
    out.extend(errors);
}

/// The `spec.list` a `listRequest` expectation is about (`expect.listRequest.list`).
fn fixture_list(expect: &serde_json::Map<String, Value>) -> ListSpec {
    serde_json::from_value(expect["listRequest"]["list"].clone()).unwrap_or_default()
}

fn check_error(want: &Value, got: Option<&OperationError>, out: &mut Vec<String>) {
    if want.is_null() {
        if let Some(got) = got {
            out.push(format!("error: expected none, got {got:?}"));
        }
        return;
    }
    let Some(got) = got else {
        out.push(format!("error: expected {want}, got none"));
        return;
    };
    let value = serde_json::to_value(got).unwrap();
    for (k, v) in want.as_object().into_iter().flatten() {
        match k.as_str() {
            "messageContains" => {
                for part in strings(v) {
                    if !got.message.contains(&part) {
                        out.push(format!(
                            "error.message: expected to contain {part:?}, got {:?}",
                            got.message
                        ));
                    }
                }
            }
            _ => {
                if value.get(k).unwrap_or(&Value::Null) != v {
                    out.push(format!(
                        "error.{k}: expected {v}, got {}",
                        value.get(k).unwrap_or(&Value::Null)
                    ));
                }
            }
        }
    }
}

/// Each wanted detail must be found, in order, as a subset of a detail.
fn check_details(want: &Value, got: &Value, out: &mut Vec<String>) {
    let got = got.as_array().cloned().unwrap_or_default();
    let mut from = 0;
    for wanted in want.as_array().into_iter().flatten() {
        let found = got[from..].iter().position(|g| is_subset(wanted, g));
        match found {
            Some(i) => from += i + 1,
            None => out.push(format!(
                "details: expected (in order) {wanted}, not found in {}",
                Value::Array(got.clone())
            )),
        }
    }
}

fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        _ => want == got,
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn every_fixture_reads_as_its_reference_says() {
    let mut failures = Vec::new();
    let mut count = 0;
    for protocol in PROTOCOLS {
        for case in cases(protocol) {
            count += 1;
            let fixture = &case.fixture;
            let references = fixture["reference"]
                .as_array()
                .map(|r| r.len())
                .or_else(|| fixture["reference"].as_str().map(|_| 1))
                .unwrap_or(0);
            let mut out = Vec::new();
            if references == 0 {
                out.push("no `reference`".to_owned());
            }
            let provider = provider_of(protocol, fixture);
            let dialect = dialect_for(&provider).expect("the fixture's provider compiles");
            let answer = answer_of(fixture);
            let seen = read(&*dialect, fixture, &answer);
            check(&*dialect, &fixture["expect"], &answer, &seen, &mut out);
            failures.extend(out.into_iter().map(|line| format!("{}: {line}", case.file)));
        }
    }
    assert!(count > 0, "no fixtures under {}", root().display());
    assert!(
        failures.is_empty(),
        "{} of the fixtures' expectations fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_protocol_has_fixtures() {
    for protocol in PROTOCOLS {
        assert!(
            cases(protocol).len() >= 4,
            "tests/fixtures/upstream/{protocol}/ needs start, poll, failure and not-found shapes"
        );
    }
}
