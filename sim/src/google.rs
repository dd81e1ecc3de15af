//! The AIP-151 HTTP/JSON surface under `/v1`: create, get, list and cancel operations
//! (`google.longrunning.Operations`, rendered by [`operation_json`]).
//!
//! * `POST /v1/{parent}` creates a resource: an operation scripted by the body's `simulate`
//!   key, answered with the `Operation` (`requestId` deduplicates; see [`create`]). `POST
//!   /v1/services/{service}/rollouts` is Service Management's `services.rollouts.create`.
//! * `GET /v1/operations/{name}` (`GetOperation`) answers the operation, with the script's GET
//!   faults (`simulate.faults`, see [`crate::faults`]); each one counts in `/sim/stats`
//!   (`gets`, `getTimesMs`).
//! * `GET /v1/operations` (`ListOperations`, AIP-158 paging, AIP-160 filtering) answers
//!   `{"operations": [...], "nextPageToken": "..."}` (proto3 JSON: camelCase, and
//!   `nextPageToken` omitted on the last page, as an empty string field is; `operations` is
//!   `[]` when nothing matches). Operations are those of this surface (created here or by
//!   `POST /sim/operations`; not those of the other clouds' surfaces), in creation order, each
//!   as `GetOperation` renders it. Query parameters (the fields of `ListOperationsRequest` not
//!   bound in the path, by JSON or proto name, plus the system parameters):
//!   - `pageSize` / `page_size`: absent, empty or 0 → 50; above 100 → 100 (AIP-158 lets a
//!     service coerce); negative, or not an `int32` → `400 INVALID_ARGUMENT`.
//!   - `pageToken` / `page_token`: the previous page's `nextPageToken`; the first page without
//!     it. Tokens are opaque cursors in creation order (see [`crate::paging`]): an operation
//!     that is created or finishes between two pages is neither listed twice nor makes another
//!     one skipped. A token that does not decode, or was issued for another `filter` (AIP-158:
//!     the other parameters must not change between pages), is refused `400 INVALID_ARGUMENT`
//!     "invalid page token"; one issued more than 60 s of simulator time ago "invalid page
//!     token: the page token has expired".
//!   - `filter`: empty, `done = true` or `done = false` (spaces around `=` optional); any other
//!     filter is refused `400 INVALID_ARGUMENT` naming it.
//!
//!   Any other parameter is refused as Google's front ends refuse it. A list request is
//!   counted in `/sim/stats` as `lists` (refused ones too); it is not a GET of the operations
//!   it lists (their `gets` do not move) and does not use up their GET faults.
//! * `POST /v1/operations/{name}:cancel` (`CancelOperation`) answers `{}` and makes a running
//!   operation done with `error.code` 1 (CANCELLED).
//! * `DELETE /v1/operations/{name}` (`DeleteOperation`) answers `501 UNIMPLEMENTED`.
//!
//! Errors are the AIP-193 envelope `{"error": {"code", "message", "status", "details"}}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{self, admit_start, answer_start};
use super::paging::Paging;
use super::render::{
    GoogleSurface, error_response, not_found, operation_json, rfc3339, shown_name,
    unknown_query_parameter,
};
use super::script::{Outcome, Script, json_object};
use super::state::{OpRecord, SimState};

/// Dispatches every `/v1/...` request (a catch-all, because of the `:cancel` suffix).
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/v1/").unwrap_or_default();
    let query = uri.query().unwrap_or_default();
    match (method, rest) {
        (Method::GET, "operations") => list(&state, query),
        (Method::GET, _) if rest.starts_with("operations/") => {
            let name = state
                .store()
                .get_mut(rest)
                .map(|op| op.name.clone())
                .unwrap_or_default();
            match faults::serve(&state, &name, rest, &GoogleSurface).await {
                Some(answer) => answer,
                None => not_found(rest),
            }
        }
        (Method::POST, _) if rest.starts_with("operations/") && rest.ends_with(":cancel") => {
            cancel(&state, rest.trim_end_matches(":cancel"))
        }
        (Method::POST, _) if !rest.contains("operations") && !rest.ends_with(":cancel") => {
            create(&state, rest, query, &body).await
        }
        (Method::DELETE, _) if rest.starts_with("operations/") => error_response(
            StatusCode::NOT_IMPLEMENTED,
            "DeleteOperation is not implemented by the simulator",
        ),
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

/// `ListOperations`' page size when the request sets none (AIP-158: the service chooses).
const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page; larger requested sizes are coerced to it (AIP-158).
const MAX_PAGE_SIZE: usize = 100;
/// The query parameters of `ListOperations`: the fields of `ListOperationsRequest` not bound in
/// the path (`filter`, `page_size`, `page_token`), by JSON name and by proto name.
const LIST_PARAMETERS: [&str; 5] = ["filter", "pageSize", "page_size", "pageToken", "page_token"];
/// The tags other surfaces put at the top of the `spec` of the operations they create; the
/// operations without any are this surface's (its creates and `POST /sim/operations`).
const OTHER_SURFACES: [&str; 6] = ["aws", "azure", "compute", "generic", "gke", "redpanda"];

/// Whether `op` belongs to this surface (and so to `ListOperations`).
fn is_google(op: &OpRecord) -> bool {
    !OTHER_SURFACES.iter().any(|tag| op.spec.get(tag).is_some())
}

/// `GET /v1/operations` (`ListOperations`): see the module documentation.
fn list(state: &SimState, query: &str) -> Response {
    let listed_at = state.now_ms();
    state.store().count_list(listed_at);
    if let Some(refusal) = unknown_query_parameter(query, &LIST_PARAMETERS) {
        return refusal;
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |names: &[&str]| {
        params
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    };
    let done = match parse_filter(value(&["filter"]).unwrap_or_default()) {
        Ok(done) => done,
        Err(message) => return invalid_argument("filter", message),
    };
    let size = match page_size(value(&["pageSize", "page_size"]).unwrap_or_default()) {
        Ok(size) => size,
        Err(message) => return invalid_argument("page_size", message),
    };
    // A token is good for the filter it was issued for only.
    let list = match done {
        None => "v1/operations",
        Some(true) => "v1/operations?done=true",
        Some(false) => "v1/operations?done=false",
    };
    let now = state.now_ms();
    let token = value(&["pageToken", "page_token"]);
    let paging = match Paging::resume(list, size, token, now) {
        Ok(paging) => paging,
        Err(message) => return invalid_argument("page_token", message),
    };
    let store = state.store();
    let matching = store
        .ops()
        .iter()
        .enumerate()
        .skip(paging.start())
        .filter(|(_, op)| is_google(op) && done.is_none_or(|done| op.is_done(now) == done))
        .map(|(index, op)| (index, operation_json(op, now)));
    let (operations, next) = paging.page(matching, now);
    let mut body = json!({ "operations": operations });
    if !next.is_empty() {
        body["nextPageToken"] = next.into();
    }
    Json(body).into_response()
}

/// The AIP-160 filters the simulator understands: `None` for none, `Some(done)` for `done =
/// true|false` (spaces around `=` optional).
fn parse_filter(filter: &str) -> Result<Option<bool>, String> {
    if filter.trim().is_empty() {
        return Ok(None);
    }
    let wanted = filter
        .split_once('=')
        .filter(|(field, _)| field.trim() == "done")
        .and_then(|(_, value)| match value.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
    wanted.map(Some).ok_or_else(|| {
        format!(
            "Invalid filter {filter:?}: the supported filters are \"done = true\" and \"done = false\""
        )
    })
}

/// `page_size`: 0 (or absent) means [`DEFAULT_PAGE_SIZE`], larger than [`MAX_PAGE_SIZE`] means
/// that; a negative or non-`int32` value is refused.
fn page_size(raw: &str) -> Result<usize, String> {
    if raw.is_empty() {
        return Ok(DEFAULT_PAGE_SIZE);
    }
    let Ok(n) = raw.parse::<i32>() else {
        return Err(format!(
            "Invalid value at 'page_size' (TYPE_INT32), {raw:?}"
        ));
    };
    match usize::try_from(n) {
        Err(_) => Err(format!("page_size must not be negative (got {n})")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// `400 INVALID_ARGUMENT` about the request field `field`, with the `BadRequest` detail Google
/// adds to it.
fn invalid_argument(field: &str, message: String) -> Response {
    let body = json!({"error": {
        "code": 400,
        "message": message,
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": message}]
        }]
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn cancel(state: &SimState, name: &str) -> Response {
    let now = state.now_ms();
    let mut store = state.store();
    match store.get_mut(name) {
        Some(op) => {
            op.cancels += 1;
            op.force(Outcome::Cancelled, now);
            Json(json!({})).into_response()
        }
        None => not_found(name),
    }
}

/// Service Management's `services.rollouts.create`: `POST services/{serviceName}/rollouts`
/// (discovery document `servicemanagement/v1`: no query parameter of its own).
fn rollout_service(parent: &str) -> Option<&str> {
    let service = parent
        .strip_prefix("services/")?
        .strip_suffix("/rollouts")?;
    (!service.is_empty() && !service.contains('/')).then_some(service)
}

/// "Creates a resource" under `parent`: scripts an operation from the body's `simulate` key.
/// A generic collection declares `requestId` (AIP-155), `validateOnly` and `{resource}Id`
/// (AIP-133); Service Management's rollouts declare nothing. Any other query parameter is
/// refused as Google's front ends refuse it.
async fn create(state: &SimState, parent: &str, query: &str, body: &[u8]) -> Response {
    let rollout = rollout_service(parent);
    let id_params: Vec<String> = query
        .split('&')
        .filter_map(|p| p.split_once('=').map_or(Some(p), |(k, _)| Some(k)))
        .filter(|k| k.ends_with("Id") && *k != "requestId")
        .map(str::to_owned)
        .collect();
    let mut declared: Vec<&str> = vec![];
    if rollout.is_none() {
        declared.extend(["requestId", "validateOnly"]);
        declared.extend(id_params.iter().map(String::as_str));
    }
    if let Some(refusal) = unknown_query_parameter(query, &declared) {
        state.store().rejected_creates += 1;
        return refusal;
    }
    let (mut spec, script) = match parse_create_body(body) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let request_id = request_id(query);
    let now = state.now_ms();
    let (name, fault) = {
        let mut store = state.store();
        if let Some(op) = request_id
            .as_deref()
            .and_then(|id| store.by_request_id_mut(id))
        {
            let body = operation_json(op, now);
            store.duplicate_creates += 1;
            return Json(body).into_response();
        }
        let fault = match admit_start(
            &mut store,
            &format!("{parent}?{query}\n{}", String::from_utf8_lossy(body)),
            &script,
            &GoogleSurface,
            now,
        ) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            drop(store);
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(http, format!("create rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let parent = parent.trim_end_matches('/').to_owned();
        let rollout_id = rollout.map(|_| {
            format!(
                "{}r{}",
                rfc3339(now).get(..10).unwrap_or("2026-01-01"),
                store.creates
            )
        });
        if let (Some(service), Some(id), Some(fields)) =
            (rollout, &rollout_id, spec.as_object_mut())
        {
            fields.insert(
                "serviceManagementRollout".into(),
                json!({"serviceName": service, "rolloutId": id}),
            );
        }
        let op = store.insert(
            |n| match (rollout, &rollout_id) {
                (Some(service), Some(id)) => format!("services/{service}/rollouts/{id}"),
                _ => format!("{parent}/res-{n}"),
            },
            spec,
            script.clone(),
            request_id,
            now,
        );
        let (internal, shown) = (op.name.clone(), shown_name(op));
        if shown != internal {
            store.add_alias(shown, &internal);
        }
        (internal, fault)
    };
    answer_start(state, &name, script.start_delay_ms, fault, &GoogleSurface).await
}

/// Splits a create body into the resource spec and its script (`simulate` removed).
fn parse_create_body(body: &[u8]) -> Result<(Value, Script), String> {
    let mut spec = json_object(body)?;
    let script = Script::from_json(spec.remove("simulate").unwrap_or(Value::Null))?;
    Ok((Value::Object(spec), script))
}

/// The `requestId` query parameter, percent-decoded.
fn request_id(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == "requestId" && !value.is_empty()).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Middleware: counts and logs every `/v1` request (status 499 if the client went away).
pub async fn log_requests(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let seq = state
        .store()
        .begin_request(method, path, query, state.now_ms());
    let mut guard = EndRequest {
        state,
        seq,
        status: 499,
    };
    let response = next.run(req).await;
    guard.status = response.status().as_u16();
    response
}

/// Records the final status of a logged request when dropped.
struct EndRequest {
    state: SimState,
    seq: u64,
    status: u16,
}

impl Drop for EndRequest {
    fn drop(&mut self) {
        self.state.store().end_request(self.seq, self.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_decoded() {
        assert_eq!(
            request_id("a=1&requestId=x%2Fy+z"),
            Some("x/y z".to_owned())
        );
        assert_eq!(request_id("requestId="), None);
        assert_eq!(request_id(""), None);
    }

    #[test]
    fn create_body_strips_simulate() {
        let parsed = parse_create_body(br#"{"a":1,"simulate":{"durationSeconds":0}}"#);
        assert_eq!(
            parsed.map(|(spec, s)| (spec, s.duration_ms())),
            Ok((json!({"a": 1}), 0))
        );
        assert!(parse_create_body(b"[1]").is_err());
        assert!(parse_create_body(b"{").is_err());
        assert_eq!(parse_create_body(b" ").map(|(spec, _)| spec), Ok(json!({})));
    }

    #[test]
    fn filters_and_page_sizes_are_read() {
        assert_eq!(parse_filter(""), Ok(None));
        assert_eq!(parse_filter("  "), Ok(None));
        assert_eq!(parse_filter("done = true"), Ok(Some(true)));
        assert_eq!(parse_filter("done=false"), Ok(Some(false)));
        assert_eq!(parse_filter(" done =false "), Ok(Some(false)));
        for bad in [
            "done",
            "done = maybe",
            "done == true",
            "name = x",
            "NOT done",
        ] {
            let refusal = parse_filter(bad).unwrap_err();
            assert!(refusal.contains(&format!("{bad:?}")), "{refusal}");
        }
        assert_eq!(page_size(""), Ok(50));
        assert_eq!(page_size("0"), Ok(50));
        assert_eq!(page_size("7"), Ok(7));
        assert_eq!(page_size("100"), Ok(100));
        assert_eq!(page_size("500"), Ok(100));
        assert!(page_size("-1").is_err());
        assert!(page_size("x").is_err());
        assert!(page_size("4294967296").is_err());
    }
}

/// `ListOperations` on the wire, in process.
#[cfg(test)]
mod list_wire {
    use std::collections::HashSet;

    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::super::paging::encode_token;
    use super::super::{SimState, router};

    struct Sim {
        base: String,
        state: SimState,
        http: reqwest::Client,
    }

    impl Sim {
        async fn start() -> Sim {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let state = SimState::default();
            tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
            Sim {
                base: format!("http://{addr}"),
                state,
                http: reqwest::Client::new(),
            }
        }

        async fn get(&self, path: &str) -> (StatusCode, Value) {
            let answer = self
                .http
                .get(format!("{}/{path}", self.base))
                .send()
                .await
                .unwrap();
            let status = answer.status();
            (status, answer.json().await.unwrap())
        }

        async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
            let answer = self
                .http
                .post(format!("{}/{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            (status, answer.json().await.unwrap())
        }

        /// `n` operations made by `POST /sim/operations`, running for an hour.
        async fn running(&self, n: usize) {
            for _ in 0..n {
                let (status, _) = self
                    .post("sim/operations", json!({"durationSeconds": 3600}))
                    .await;
                assert_eq!(status, StatusCode::OK);
            }
        }

        fn stats(&self) -> Value {
            self.state.store().stats_json(self.state.now_ms())
        }
    }

    fn names(page: &Value) -> Vec<String> {
        page["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every page of `v1/operations?{query}`, following `nextPageToken` until it is absent.
    async fn all_pages(sim: &Sim, query: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                None => format!("v1/operations?{query}"),
                Some(t) => format!("v1/operations?{query}&pageToken={t}"),
            };
            let (status, page) = sim.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            pages.push(names(&page));
            assert!(page.get("next_page_token").is_none(), "{page}");
            match page.get("nextPageToken") {
                None => return pages,
                Some(next) => {
                    let next = next.as_str().unwrap();
                    assert!(!next.is_empty(), "an empty token is omitted: {page}");
                    token = Some(next.to_owned());
                }
            }
        }
    }

    fn refusal(answer: &(StatusCode, Value)) -> (StatusCode, &str, &str) {
        let error = &answer.1["error"];
        (
            answer.0,
            error["status"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn pages_follow_the_token_until_it_is_absent_and_list_everything_once() {
        let sim = Sim::start().await;
        for i in 0..4 {
            let body = json!({"n": i, "simulate": {"durationSeconds": 3600}});
            sim.post("v1/projects/p/things", body).await;
        }
        // Another surface's operation is not listed; the admin API's are.
        sim.post(
            "redpanda/v1/networks",
            json!({"network": {"name": "n"}, "simulate": {"durationSeconds": 3600}}),
        )
        .await;
        sim.running(2).await;
        sim.post(
            "v1/projects/p/things",
            json!({"simulate": {"durationSeconds": 0}}),
        )
        .await;
        let expected: Vec<String> = [1, 2, 3, 4, 6, 7, 8]
            .iter()
            .map(|n| format!("operations/op-{n}"))
            .collect();

        let pages = all_pages(&sim, "pageSize=3").await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(pages.concat(), expected);
        // A full last page has no token either.
        let pages = all_pages(&sim, "pageSize=7").await;
        assert_eq!(pages, std::slice::from_ref(&expected));
        // Without paging parameters, each operation as GetOperation renders it.
        let (status, all) = sim.get("v1/operations").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&all), expected);
        assert!(all.get("nextPageToken").is_none(), "{all}");
        let (_, one) = sim.get("v1/operations/op-8").await;
        assert_eq!(all["operations"][6], one);
        assert_eq!(one["done"], true);
        // The proto field names and the system parameters are accepted too.
        let (status, page) = sim
            .get("v1/operations?page_size=2&prettyPrint=false&alt=json")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&page).len(), 2);
        let token = page["nextPageToken"].as_str().unwrap();
        let (_, rest) = sim
            .get(&format!("v1/operations?page_size=5&page_token={token}"))
            .await;
        assert_eq!([names(&page), names(&rest)].concat(), expected);
    }

    #[tokio::test]
    async fn running_operations_that_finish_between_pages_are_neither_repeated_nor_make_others_skipped()
     {
        let sim = Sim::start().await;
        sim.running(6).await;
        sim.post("sim/operations", json!({"durationSeconds": 0}))
            .await;
        let (_, first) = sim
            .get("v1/operations?filter=done%20%3D%20false&pageSize=2")
            .await;
        assert_eq!(names(&first), ["operations/op-1", "operations/op-2"]);
        let token = first["nextPageToken"].as_str().unwrap();
        // Between the pages: op-1 (listed) and op-3 (the next one) finish, op-8 is created.
        for id in ["op-1", "op-3"] {
            let (status, _) = sim
                .post(
                    &format!("sim/operations/{id}/finish"),
                    json!({"outcome": "success"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
        sim.running(1).await;
        let mut seen = names(&first);
        let mut token = token.to_owned();
        loop {
            let (status, page) = sim
                .get(&format!(
                    "v1/operations?filter=done+%3D+false&pageSize=2&pageToken={token}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(names(&page));
            match page["nextPageToken"].as_str() {
                Some(next) => token = next.to_owned(),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["op-1", "op-2", "op-4", "op-5", "op-6", "op-8"].map(|id| format!("operations/{id}"))
        );
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
        // Without spaces, and the other way round.
        let (_, running) = sim.get("v1/operations?filter=done%3Dfalse").await;
        assert_eq!(names(&running), seen[1..]);
        assert!(
            running["operations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o.get("done").is_none())
        );
        let (_, done) = sim.get("v1/operations?filter=done%20%3D%20true").await;
        assert_eq!(
            names(&done),
            ["op-1", "op-3", "op-7"].map(|id| format!("operations/{id}"))
        );
        let (_, everything) = sim.get("v1/operations?filter=").await;
        assert_eq!(names(&everything).len(), 8);
        // A token is good for its own filter only (AIP-158).
        let (_, page) = sim
            .get("v1/operations?filter=done%3Dfalse&pageSize=1")
            .await;
        let token = page["nextPageToken"].as_str().unwrap();
        let answer = sim.get(&format!("v1/operations?pageToken={token}")).await;
        assert_eq!(
            refusal(&answer),
            (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "invalid page token"
            )
        );
        // Any other filter is refused, by name.
        let answer = sim.get("v1/operations?filter=name%3D%22x%22").await;
        let (status, code, message) = refusal(&answer);
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
        );
        assert!(message.contains(r#""name=\"x\"""#), "{message}");
    }

    #[tokio::test]
    async fn page_sizes_default_to_50_and_are_coerced_to_100() {
        let sim = Sim::start().await;
        sim.running(120).await;
        for (query, size) in [
            ("", 50),
            ("pageSize=0", 50),
            ("pageSize=500", 100),
            ("pageSize=100", 100),
            ("pageSize=7", 7),
        ] {
            let (status, page) = sim.get(&format!("v1/operations?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            assert_eq!(names(&page).len(), size, "{query}");
            assert!(page["nextPageToken"].is_string(), "{query}: {page}");
        }
        let pages = all_pages(&sim, "pageSize=500").await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100, 20]);
        for query in [
            "pageSize=-1",
            "page_size=-5",
            "pageSize=x",
            "pageSize=2147483648",
        ] {
            let answer = sim.get(&format!("v1/operations?{query}")).await;
            let (status, code, _) = refusal(&answer);
            assert_eq!(
                (status, code),
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
                "{query}"
            );
            assert_eq!(
                answer.1["error"]["details"][0]["fieldViolations"][0]["field"],
                "page_size"
            );
        }
    }

    #[tokio::test]
    async fn bad_and_expired_tokens_and_unknown_parameters_are_refused() {
        let sim = Sim::start().await;
        sim.running(3).await;
        let answer = sim.get("v1/operations?pageToken=bogus").await;
        assert_eq!(
            refusal(&answer),
            (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "invalid page token"
            )
        );
        // Redpanda's operations list has tokens of its own.
        let other = encode_token("operations", 1, sim.state.now_ms());
        let answer = sim.get(&format!("v1/operations?pageToken={other}")).await;
        assert_eq!(refusal(&answer).2, "invalid page token");

        let old = encode_token("v1/operations", 1, sim.state.now_ms() - 61_000);
        let answer = sim.get(&format!("v1/operations?pageToken={old}")).await;
        let (status, code, message) = refusal(&answer);
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
        );
        assert!(message.contains("the page token has expired"), "{message}");
        let fresh = encode_token("v1/operations", 1, sim.state.now_ms() - 59_000);
        let (status, page) = sim.get(&format!("v1/operations?pageToken={fresh}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&page), ["operations/op-2", "operations/op-3"]);

        for query in ["orderBy=name", "name=operations", "pageSize=1&readMask=x"] {
            let answer = sim.get(&format!("v1/operations?{query}")).await;
            let (status, code, message) = refusal(&answer);
            assert_eq!(
                (status, code),
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
                "{query}"
            );
            assert!(message.contains("Cannot bind query parameter"), "{message}");
        }
    }

    #[tokio::test]
    async fn lists_are_counted_and_are_not_gets() {
        let sim = Sim::start().await;
        let faulty =
            json!({"durationSeconds": 3600, "faults": [{"kind": "status", "status": 503}]});
        sim.post("sim/operations", faulty).await;
        sim.running(2).await;
        assert_eq!(sim.stats()["lists"], 0);
        all_pages(&sim, "pageSize=1").await;
        sim.get("v1/operations?filter=done%3Dfalse").await;
        sim.get("v1/operations?pageSize=-1").await;
        let stats = sim.stats();
        assert_eq!(stats["lists"], 5);
        for op in stats["operations"].as_object().unwrap().values() {
            assert_eq!(op["gets"], 0, "{op}");
            assert_eq!(op["faults"]["served"], json!([]), "{op}");
        }
        assert_eq!(
            stats["operations"]["operations/op-1"]["faults"]["pending"],
            1
        );
        // The scripted fault is still there for the first GET.
        let (status, _) = sim.get("v1/operations/op-1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _) = sim.get("v1/operations/op-1").await;
        assert_eq!(status, StatusCode::OK);
        let stats = sim.stats();
        assert_eq!(stats["operations"]["operations/op-1"]["gets"], 2);
        assert_eq!(stats["lists"], 5);
    }
}
