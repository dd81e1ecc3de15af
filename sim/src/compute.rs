//! Compute Engine under `/compute/v1` and Deployment Manager under `/deploymentmanager/v2`:
//! their `compute#operation` / `deploymentmanager#operation` resources as the discovery
//! documents describe them (`compute/v1/compute-api.json`,
//! `deploymentmanager/v2/deploymentmanager-api.json`, schema `Operation`; Deployment Manager's guide "Managing long-running operations").
//!
//! * Compute: `POST /compute/v1/projects/{p}/zones/{z}/{collection}` (or `regions/{r}`,
//!   `global`) inserts a resource; `DELETE …/{collection}/{name}` deletes one;
//!   `GET …/operations/{operation}` polls; `POST …/operations/{operation}/wait` long-polls: it
//!   holds the answer until the operation is done or `simulate.waitSeconds` (default 20;
//!   Compute's own deadline is 2 minutes) have passed. Inserts and deletes declare `requestId`
//!   (the idempotency key: a create resent with the same one answers the same operation).
//! * Deployment Manager: `POST /deploymentmanager/v2/projects/{p}/global/deployments`
//!   (`deployments.insert`, declaring `createPolicy` and `preview`), `DELETE …/deployments/{d}`
//!   (`deletePolicy`), `GET /deploymentmanager/v2/projects/{p}/global/operations/{op}`; no wait.
//!
//! * Lists (`zoneOperations.list`, `regionOperations.list`, `globalOperations.list`,
//!   `globalOperations.aggregatedList`; Deployment Manager's `operations.list`): `GET
//!   …/projects/{p}/zones/{z}/operations` (or `regions/{r}`, `global`; Compute also
//!   `projects/{p}/aggregated/operations`) answers the scope's operations in creation order,
//!   each as a GET renders it: an `OperationList` `{kind, id, items, nextPageToken, selfLink}`
//!   (`items` and `nextPageToken` left out when empty); aggregated, an
//!   `OperationAggregatedList` whose `items` map each scope of the project (`zones/{z}`,
//!   `regions/{r}`, `global`) to `{operations}`, or to a `NO_RESULTS_ON_PAGE` `warning` when
//!   none of its operations is on the page; Deployment Manager, `{operations, nextPageToken}`.
//!   Query parameters: `filter` — empty, or `status = X` / `status != X` with X one of
//!   `PENDING`, `RUNNING`, `DONE` (spaces optional, X may be quoted); any other filter is
//!   refused `400` "Invalid value for field 'filter': '…'. Invalid list filter expression."
//!   (reason `invalid`); `maxResults` — 0 or absent means 500, more than 500 or not a number
//!   is refused; `pageToken` — an opaque cursor (see [`crate::paging`]) good for the same
//!   scope and filter for 60 s of simulator time, else refused (`Invalid value for field
//!   'pageToken'`); `orderBy` — only empty (the simulator does not sort);
//!   `returnPartialSuccess` (and, aggregated, `includeAllScopes`, `serviceProjectNumber`) are
//!   accepted and change nothing. Each list request counts in `/sim/stats` as `lists` (refused
//!   ones too); it is not a GET of the operations it lists.
//!
//! Any other query parameter is refused as Google's front ends refuse it (400 "Cannot bind
//! query parameter"). Links (`selfLink`, `targetLink`, `zone`, `region`) name
//! `https://www.googleapis.com/compute/v1/…` and `…/deploymentmanager/v2/…` whatever host the
//! request reached, as the real APIs do: a client that followed them to that host would leave
//! the simulator.
//!
//! The operation is `PENDING` for the first tenth of its duration, then `RUNNING` with
//! `progress`, then `DONE`. A scripted failure is `DONE` with `error.errors[]` (each with
//! `errorDetails`: `errorInfo`, `quotaInfo` for `QUOTA_EXCEEDED`, `help`), and
//! `httpErrorStatusCode` / `httpErrorMessage`; `simulate.errorReason` sets the error code (e.g.
//! `RESOURCE_NOT_READY`, which on a `DONE` operation is its failure); `simulate.warnings` adds
//! `warnings[]`; `simulate.notReadySeconds` makes the running operation carry a
//! `RESOURCE_NOT_READY` error for that long. GETs and waits take the script's `faults`, starts
//! its `startFaults`. Same scripting (`simulate`) and counters as `/v1`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, answer_start};
use super::paging::{EXPIRED_TOKEN, Paging};
use super::render::{progress_percentage, rfc3339, status_name, unknown_query_parameter};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};
use super::surface::Surface;

/// How long a `wait` holds its answer unless the script says otherwise.
pub const DEFAULT_WAIT_MS: u64 = 20_000;
/// How often a held `wait` looks at its operation.
const WAIT_TICK: Duration = Duration::from_millis(50);

/// Which of the two APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Compute Engine.
    Compute,
    /// Deployment Manager.
    DeploymentManager,
}

impl Api {
    /// The route prefix and the links' root (what the real APIs write in their links).
    fn prefix(self) -> &'static str {
        match self {
            Api::Compute => "/compute/v1/",
            Api::DeploymentManager => "/deploymentmanager/v2/",
        }
    }

    fn link_root(self) -> &'static str {
        match self {
            Api::Compute => "https://www.googleapis.com/compute/v1",
            Api::DeploymentManager => "https://www.googleapis.com/deploymentmanager/v2",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Api::Compute => "compute#operation",
            Api::DeploymentManager => "deploymentmanager#operation",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Api::Compute => "compute",
            Api::DeploymentManager => "deploymentmanager",
        }
    }

    /// The query parameters its insert (`delete`: its delete) method declares.
    fn declared(self, delete: bool) -> &'static [&'static str] {
        match (self, delete) {
            (Api::Compute, _) => &["requestId"],
            (Api::DeploymentManager, false) => &["createPolicy", "preview"],
            (Api::DeploymentManager, true) => &["deletePolicy"],
        }
    }
}

/// The surface, for faults.
struct ComputeSurface;

impl Surface for ComputeSurface {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        Json(operation_json(op, now_ms)).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        error_response(status, message)
    }

    fn not_found(&self, id: &str) -> Response {
        not_found(id)
    }
}

/// Dispatches every `/compute/v1/...` request.
pub async fn dispatch_compute(
    state: State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    dispatch(Api::Compute, state, method, uri, body).await
}

/// Dispatches every `/deploymentmanager/v2/...` request.
pub async fn dispatch_deployment_manager(
    state: State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    dispatch(Api::DeploymentManager, state, method, uri, body).await
}

async fn dispatch(
    api: Api,
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix(api.prefix()).unwrap_or_default();
    let operation = rest
        .split_once("/operations/")
        .map(|(_, op)| op.trim_end_matches('/'));
    let query = uri.query().unwrap_or_default();
    match (method, operation) {
        (Method::GET, Some(op)) if !op.contains('/') => get(&state, api, op).await,
        (Method::GET, None) if list_scope(api, rest).is_some() => list(&state, api, rest, query),
        (Method::POST, Some(op)) if api == Api::Compute && op.ends_with("/wait") => {
            wait(&state, op.trim_end_matches("/wait")).await
        }
        (Method::POST, None) if !rest.is_empty() => {
            create(&state, api, rest, query, &body, false).await
        }
        (Method::DELETE, None) if !rest.is_empty() => {
            create(&state, api, rest, query, &body, true).await
        }
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            format!("no method {method} {}", uri.path()),
        ),
    }
}

/// Which operations a list request is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ListScope {
    /// One zone, one region or the project's global operations: `projects/p/zones/z`, ….
    Scope(String),
    /// Every scope of the project `projects/p` (Compute's `aggregatedList`).
    Aggregated(String),
}

/// The scope of a list path (`projects/p/zones/z/operations`, …), if it is one.
fn list_scope(api: Api, rest: &str) -> Option<ListScope> {
    let collection = rest.trim_end_matches('/').strip_suffix("/operations")?;
    let segments: Vec<&str> = collection.split('/').collect();
    match segments.as_slice() {
        ["projects", p, "zones" | "regions", s] if !p.is_empty() && !s.is_empty() => {
            (api == Api::Compute).then(|| ListScope::Scope(collection.to_owned()))
        }
        ["projects", p, "global"] if !p.is_empty() => Some(ListScope::Scope(collection.to_owned())),
        ["projects", p, "aggregated"] if !p.is_empty() && api == Api::Compute => {
            Some(ListScope::Aggregated(format!("projects/{p}")))
        }
        _ => None,
    }
}

/// The largest `maxResults` (and its default).
const MAX_RESULTS: usize = 500;
/// The status words a list filter may name.
const STATUSES: [&str; 3] = ["PENDING", "RUNNING", "DONE"];

/// A list filter the simulator understands: `status = X` (`true`) or `status != X` (`false`).
type StatusFilter = Option<(bool, &'static str)>;

/// Reads `filter`: empty, or `status = X` / `status != X`; `Err` for anything else.
fn parse_status_filter(filter: &str) -> Result<StatusFilter, ()> {
    let filter = filter.trim();
    if filter.is_empty() {
        return Ok(None);
    }
    let (field, equal, value) = if let Some((f, v)) = filter.split_once("!=") {
        (f, false, v)
    } else if let Some((f, v)) = filter.split_once('=') {
        (f, true, v)
    } else {
        return Err(());
    };
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    match (field.trim(), STATUSES.iter().find(|s| **s == value)) {
        ("status", Some(status)) => Ok(Some((equal, status))),
        _ => Err(()),
    }
}

/// A Compute `400 invalid` refusal of `field`'s value.
fn invalid_value(field: &str, value: &str, why: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        format!("Invalid value for field '{field}': '{value}'. {why}"),
    )
}

/// The status an operation shows at `now_ms`.
fn status_of(op: &OpRecord, now_ms: u64) -> &'static str {
    let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    if op.is_done(now_ms) {
        "DONE"
    } else if elapsed < op.script.duration_ms() / 10 {
        "PENDING"
    } else {
        "RUNNING"
    }
}

/// `GET …/operations` (a list; see the module documentation).
fn list(state: &SimState, api: Api, rest: &str, query: &str) -> Response {
    let listed_at = state.now_ms();
    state.store().count_list(listed_at);
    let Some(scope) = list_scope(api, rest) else {
        return not_found(rest);
    };
    let mut declared = vec![
        "filter",
        "maxResults",
        "orderBy",
        "pageToken",
        "returnPartialSuccess",
    ];
    if matches!(scope, ListScope::Aggregated(_)) {
        declared.extend(["includeAllScopes", "serviceProjectNumber"]);
    }
    if let Some(refusal) = unknown_query_parameter(query, &declared) {
        return refusal;
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let filter_text = value("filter");
    let Ok(filter) = parse_status_filter(filter_text) else {
        return invalid_value("filter", filter_text, "Invalid list filter expression.");
    };
    if !value("orderBy").is_empty() {
        return invalid_value(
            "orderBy",
            value("orderBy"),
            "The simulator does not sort lists.",
        );
    }
    let size = match value("maxResults") {
        "" => MAX_RESULTS,
        raw => match raw.parse::<u32>() {
            Ok(0) => MAX_RESULTS,
            Ok(n) if n as usize <= MAX_RESULTS => n as usize,
            Ok(_) => {
                return invalid_value(
                    "maxResults",
                    raw,
                    &format!("Must be less than or equal to {MAX_RESULTS}"),
                );
            }
            Err(_) => return invalid_value("maxResults", raw, "Must be a number."),
        },
    };
    // A token is good for the scope and filter it was issued for only (no `:` in list names).
    let collection = rest.trim_end_matches('/');
    let list_name = format!(
        "{}/{collection}?{}",
        api.tag(),
        filter.map_or(String::new(), |(equal, status)| format!(
            "status{}{status}",
            if equal { "=" } else { "!=" }
        ))
    );
    let now = state.now_ms();
    let token = value("pageToken");
    let paging = match Paging::resume(&list_name, size, Some(token), now) {
        Ok(paging) => paging,
        Err(message) => {
            let why = if message == EXPIRED_TOKEN {
                "The page token has expired."
            } else {
                "Invalid page token."
            };
            return invalid_value("pageToken", token, why);
        }
    };
    let store = state.store();
    let in_scope = |op: &OpRecord| {
        let Some(op_scope) = op.spec["compute"]["scope"].as_str() else {
            return false;
        };
        api_of(op) == api
            && match &scope {
                ListScope::Scope(s) => op_scope == s,
                ListScope::Aggregated(project) => op_scope
                    .strip_prefix(project.as_str())
                    .is_some_and(|r| r.starts_with('/')),
            }
    };
    let matching = store
        .ops()
        .iter()
        .enumerate()
        .skip(paging.start())
        .filter(|(_, op)| in_scope(op))
        .filter(|(_, op)| {
            filter.is_none_or(|(equal, status)| (status_of(op, now) == status) == equal)
        })
        .map(|(index, op)| (index, operation_json(op, now)));
    let (items, next) = paging.page(matching, now);
    let root = api.link_root();
    let mut body = Map::new();
    match &scope {
        ListScope::Scope(_) if api == Api::DeploymentManager => {
            if !items.is_empty() {
                body.insert("operations".into(), items.into());
            }
        }
        ListScope::Scope(_) => {
            body.insert("kind".into(), "compute#operationList".into());
            body.insert("id".into(), collection.into());
            if !items.is_empty() {
                body.insert("items".into(), items.into());
            }
            body.insert("selfLink".into(), format!("{root}/{collection}").into());
        }
        ListScope::Aggregated(project) => {
            // Every scope the project has operations in, with this page's or a warning.
            let mut scopes: Map<String, Value> = store
                .ops()
                .iter()
                .filter(|op| in_scope(op))
                .filter_map(|op| op.spec["compute"]["scope"].as_str())
                .map(|s| {
                    s.strip_prefix(project.as_str())
                        .unwrap_or(s)
                        .trim_start_matches('/')
                })
                .map(|key| (key.to_owned(), json!({"operations": []})))
                .collect();
            for item in items {
                let key = item["zone"]
                    .as_str()
                    .or(item["region"].as_str())
                    .and_then(|link| link.strip_prefix(&format!("{root}/{project}/")))
                    .unwrap_or("global")
                    .to_owned();
                if let Some(Value::Array(ops)) = scopes
                    .entry(key)
                    .or_insert_with(|| json!({"operations": []}))
                    .get_mut("operations")
                {
                    ops.push(item);
                }
            }
            for (key, scoped) in &mut scopes {
                if scoped["operations"].as_array().is_some_and(Vec::is_empty) {
                    *scoped = json!({"warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": format!("There are no results for scope '{key}' on this page."),
                        "data": [{"key": "scope", "value": key}]
                    }});
                }
            }
            body.insert("kind".into(), "compute#operationAggregatedList".into());
            body.insert("id".into(), collection.into());
            body.insert("items".into(), Value::Object(scopes));
            body.insert("selfLink".into(), format!("{root}/{collection}").into());
        }
    }
    if !next.is_empty() {
        body.insert("nextPageToken".into(), next.into());
    }
    Json(Value::Object(body)).into_response()
}

/// The key under which an operation's shown name is an alias of its internal one.
fn alias(api: Api, name: &str) -> String {
    format!("{}:{name}", api.tag())
}

fn internal_name(store: &mut Store, api: Api, name: &str) -> Option<String> {
    store.get_mut(&alias(api, name)).map(|op| op.name.clone())
}

async fn get(state: &SimState, api: Api, name: &str) -> Response {
    let internal = internal_name(&mut state.store(), api, name);
    match faults::serve(state, &internal.unwrap_or_default(), name, &ComputeSurface).await {
        Some(answer) => answer,
        None => not_found(name),
    }
}

/// `POST …/wait`: answers when the operation is done or its wait deadline has passed.
async fn wait(state: &SimState, name: &str) -> Response {
    let began = state.now_ms();
    let internal = internal_name(&mut state.store(), Api::Compute, name);
    let Some(internal) = internal else {
        return not_found(name);
    };
    loop {
        let now = state.now_ms();
        let answer_now = state.store().get_mut(&internal).map(|op| {
            let hold = op.spec["compute"]["waitMs"]
                .as_u64()
                .unwrap_or(DEFAULT_WAIT_MS);
            op.is_done(now) || now >= began.saturating_add(hold)
        });
        match answer_now {
            None => return not_found(name),
            // Answered like a GET (its faults included).
            Some(true) => return get(state, Api::Compute, name).await,
            Some(false) => tokio::time::sleep(WAIT_TICK).await,
        }
    }
}

async fn create(
    state: &SimState,
    api: Api,
    path: &str,
    query: &str,
    body: &[u8],
    delete: bool,
) -> Response {
    if let Some(refusal) = unknown_query_parameter(query, api.declared(delete)) {
        state.store().rejected_creates += 1;
        return refusal;
    }
    let (resource, script, extra) = match split_create_body(body, &["waitSeconds"]) {
        Ok(parsed) => parsed,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let wait_ms = match extra.get("waitSeconds") {
        None => DEFAULT_WAIT_MS,
        Some(v) => match v.as_f64().filter(|s| s.is_finite() && *s >= 0.0) {
            Some(seconds) => (seconds * 1000.0).round() as u64,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid simulate: waitSeconds must be a number >= 0",
                );
            }
        },
    };
    let request_id = request_id(query);
    let now = state.now_ms();
    let surface = ComputeSurface;
    let (name, fault) = {
        let mut store = state.store();
        if let Some(op) = request_id
            .as_deref()
            .and_then(|id| store.by_request_id_mut(id))
        {
            let answer = operation_json(op, now);
            store.duplicate_creates += 1;
            return Json(answer).into_response();
        }
        let fault = match admit_start(
            &mut store,
            &format!(
                "{}{path}?{query}\n{}",
                api.prefix(),
                String::from_utf8_lossy(body)
            ),
            &script,
            &surface,
            now,
        ) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(http, format!("insert rejected by script (HTTP {status})"));
        }
        store.creates += 1;
        let path = path.trim_end_matches('/');
        // insert: `{collection}/{name}`; delete: the resource itself.
        let resource_name = resource
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let target = move |n: u64| {
            if delete {
                path.to_owned()
            } else {
                format!(
                    "{path}/{}",
                    resource_name.unwrap_or_else(|| format!("res-{n}"))
                )
            }
        };
        let operation_type = if delete { "delete" } else { "insert" };
        let spec = json!({
            "compute": {
                "api": api.tag(),
                "scope": scope_of(path),
                "operationType": operation_type,
                "waitMs": wait_ms,
            },
            "resource": resource,
        });
        let op = store.insert(target, spec, script.clone(), request_id, now);
        let (internal, shown) = (op.name.clone(), operation_name(op));
        store.add_alias(alias(api, &shown), &internal);
        (internal, fault)
    };
    answer_start(state, &name, script.start_delay_ms, fault, &surface).await
}

/// `projects/p/zones/z` of `projects/p/zones/z/instances[/name]` (or `regions/r`, `global`;
/// else the path without its last segment).
fn scope_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let end = segments
        .iter()
        .position(|s| *s == "zones" || *s == "regions")
        .map(|i| i + 2)
        .or_else(|| segments.iter().position(|s| *s == "global").map(|i| i + 1))
        .unwrap_or(segments.len().saturating_sub(1))
        .min(segments.len());
    segments[..end].join("/")
}

/// The `requestId` query parameter, decoded.
fn request_id(query: &str) -> Option<String> {
    let url = url::Url::parse(&format!("http://sim.invalid/?{query}")).ok()?;
    url.query_pairs()
        .find(|(k, v)| k == "requestId" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// A decimal id (Compute ids are uint64 as strings) derived from the operation's uid.
fn numeric_id(uid: &str, salt: u64) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(15)
        .collect();
    let n = u64::from_str_radix(&hex, 16).unwrap_or(0);
    (n ^ salt).to_string()
}

fn api_of(op: &OpRecord) -> Api {
    match op.spec["compute"]["api"].as_str() {
        Some("deploymentmanager") => Api::DeploymentManager,
        _ => Api::Compute,
    }
}

/// The operation's name as the API shows it: `operation-{ms}-{hex}-{hex}-{hex}`, as in Deployment Manager's guide.
fn operation_name(op: &OpRecord) -> String {
    let parts: Vec<&str> = op.uid.split('-').collect();
    format!(
        "operation-{}-{}-{}-{}",
        op.created_at_ms,
        parts.first().copied().unwrap_or("0"),
        parts.get(1).copied().unwrap_or("0"),
        parts.last().copied().unwrap_or("0"),
    )
}

/// The compute or Deployment Manager operation as of `now_ms`.
fn operation_json(op: &OpRecord, now_ms: u64) -> Value {
    let api = api_of(op);
    let root = api.link_root();
    let compute = &op.spec["compute"];
    let scope = compute["scope"].as_str().unwrap_or("projects/sim/global");
    let name = operation_name(op);
    let done = op.is_done(now_ms);
    let duration = op.script.duration_ms();
    let elapsed = now_ms.min(op.done_at_ms()).saturating_sub(op.created_at_ms);
    let mut out = Map::new();
    out.insert("kind".into(), api.kind().into());
    out.insert("id".into(), numeric_id(&op.uid, 0x5bd1_e995).into());
    out.insert("name".into(), name.clone().into());
    if api == Api::Compute {
        if scope.contains("/zones/") {
            out.insert("zone".into(), format!("{root}/{scope}").into());
        } else if scope.contains("/regions/") {
            out.insert("region".into(), format!("{root}/{scope}").into());
        }
    }
    out.insert(
        "operationType".into(),
        compute["operationType"].as_str().unwrap_or("insert").into(),
    );
    out.insert(
        "targetLink".into(),
        format!("{root}/{}", op.resource).into(),
    );
    out.insert("targetId".into(), numeric_id(&op.uid, 0x2545_f491).into());
    out.insert("user".into(), "sim@lro.dev".into());
    out.insert("insertTime".into(), rfc3339(op.created_at_ms).into());
    out.insert("startTime".into(), rfc3339(op.created_at_ms).into());
    if let Some(id) = &op.request_id {
        out.insert("clientOperationId".into(), id.clone().into());
    }
    out.insert(
        "selfLink".into(),
        format!("{root}/{scope}/operations/{name}").into(),
    );
    out.insert("status".into(), status_of(op, now_ms).into());
    if done {
        out.insert("endTime".into(), rfc3339(op.done_at_ms()).into());
        out.insert("progress".into(), 100.into());
    } else if op.script.progress {
        let pct = progress_percentage(elapsed, duration, op.script.progress_step);
        out.insert("progress".into(), pct.into());
    }
    let not_ready_ms = (op.script.not_ready_seconds * 1000.0).round() as u64;
    if !done && elapsed < not_ready_ms {
        out.insert(
            "error".into(),
            json!({"errors": [{
                "code": "RESOURCE_NOT_READY",
                "location": op.resource,
                "message": format!("The resource '{}' is not ready", op.resource)
            }]}),
        );
    }
    if op.script.warnings {
        out.insert(
            "warnings".into(),
            json!([{
                "code": "DISK_SIZE_LARGER_THAN_IMAGE_SIZE",
                "message": "Disk size: '50 GB' is larger than image size: '10 GB'. You might need to resize the root repartition manually if the operating system does not support automatic resizing.",
                "data": [{"key": "disk_size", "value": "50"}, {"key": "image_size", "value": "10"}]
            }]),
        );
    }
    if done && op.outcome() != Outcome::Success {
        let (code, http, http_message, message) = match op.outcome() {
            Outcome::Cancelled => (
                "OPERATION_CANCELED".to_owned(),
                409,
                "CONFLICT",
                "operation cancelled".to_owned(),
            ),
            _ => {
                let (code, http, http_message) = failure_of(op.script.error_code);
                let code = op.script.error_reason.clone().unwrap_or(code.to_owned());
                (code, http, http_message, op.script.error_message.clone())
            }
        };
        let mut details = vec![json!({"errorInfo": {
            "reason": code,
            "domain": if api == Api::Compute { "compute.googleapis.com" } else { "deploymentmanager.googleapis.com" },
            "metadatas": {"resource": op.resource}
        }})];
        if code == "QUOTA_EXCEEDED" {
            details.push(json!({"quotaInfo": {
                "metricName": "compute.googleapis.com/cpus",
                "limitName": "CPUS-per-project-region",
                "dimensions": {"region": "us-central1"},
                "limit": 24
            }}));
        }
        details.push(json!({"help": {"links": [{
            "description": "Troubleshooting",
            "url": "https://cloud.google.com/compute/docs/troubleshooting"
        }]}}));
        out.insert(
            "error".into(),
            json!({"errors": [{"code": code, "location": op.resource, "message": message, "errorDetails": details}]}),
        );
        out.insert("httpErrorStatusCode".into(), http.into());
        out.insert("httpErrorMessage".into(), http_message.into());
    }
    Value::Object(out)
}

/// Compute's error code, HTTP status and status text for a scripted `google.rpc.Code`.
fn failure_of(rpc: i32) -> (&'static str, u16, &'static str) {
    match rpc {
        3 => ("INVALID_FIELD_VALUE", 400, "BAD REQUEST"),
        5 => ("RESOURCE_NOT_FOUND", 404, "NOT FOUND"),
        6 => ("RESOURCE_ALREADY_EXISTS", 409, "CONFLICT"),
        7 => ("PERMISSION_DENIED", 403, "FORBIDDEN"),
        8 => ("QUOTA_EXCEEDED", 403, "FORBIDDEN"),
        9 => ("CONDITION_NOT_MET", 412, "PRECONDITION FAILED"),
        10 => ("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", 409, "CONFLICT"),
        _ => ("INTERNAL_ERROR", 500, "INTERNAL SERVER ERROR"),
    }
}

/// Compute's error envelope: AIP-193 plus the legacy `errors[]` (`domain`, `reason`).
fn error_response(http: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let reason = match http.as_u16() {
        404 => "notFound",
        429 => "rateLimitExceeded",
        400 => "invalid",
        403 => "forbidden",
        409 => "alreadyExists",
        503 => "backendError",
        _ => "backendError",
    };
    let body = json!({"error": {
        "code": http.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": status_name(http),
    }});
    (http, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("The resource 'operations/{name}' was not found"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_zonal_regional_or_global() {
        assert_eq!(
            scope_of("projects/p/zones/us-central1-a/instances"),
            "projects/p/zones/us-central1-a"
        );
        assert_eq!(
            scope_of("projects/p/regions/us-central1/addresses/a1"),
            "projects/p/regions/us-central1"
        );
        assert_eq!(scope_of("projects/p/global/networks"), "projects/p/global");
        assert_eq!(scope_of("v1/things"), "v1");
        assert_eq!(scope_of("zones"), "zones");
    }

    #[test]
    fn operation_names_look_like_the_real_ones() {
        let mut store = Store::default();
        let op = store.insert(
            |_| "projects/p/global/deployments/d".into(),
            json!({}),
            crate::script::Script::default(),
            None,
            1_556_558_912_190,
        );
        let name = operation_name(op);
        assert!(name.starts_with("operation-1556558912190-"), "{name}");
        assert_eq!(name.split('-').count(), 5, "{name}");
    }

    #[test]
    fn request_id_is_decoded() {
        assert_eq!(request_id("a=1&requestId=x%2Fy"), Some("x/y".into()));
        assert_eq!(request_id("requestId="), None);
    }
}

/// The compute dialect against this surface, in process.
#[cfg(test)]
mod contract {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::super::{SimState, router};
    use lro_operator::api::{ListSpec, Protocol, ProviderSpec, StartRequest};
    use lro_operator::protocol::{
        Dialect, HttpAnswer, ListOutcome, PollOutcome, StartOutcome, Started, UpstreamState,
        dialect, dialect_for,
    };
    use lro_operator::upstream::Upstream;

    async fn serve() -> (String, SimState) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        (format!("http://{addr}"), state)
    }

    fn upstream() -> Upstream {
        Upstream::new(Duration::from_secs(10), 1 << 20).unwrap()
    }

    async fn start(base: &str, d: &dyn Dialect, body: serde_json::Value, id: &str) -> Started {
        let start: StartRequest = serde_json::from_value(
            json!({"path": "projects/demo/zones/us-central1-a/instances", "body": body}),
        )
        .unwrap();
        let request = d.start_request(&start, id);
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_start(&request, &answer) {
            StartOutcome::Started(started) => *started,
            other => panic!("{other:?}"),
        }
    }

    async fn poll(
        base: &str,
        d: &dyn Dialect,
        handle: &lro_operator::api::OperationHandle,
    ) -> (lro_operator::protocol::Observation, HttpAnswer) {
        let request = d.poll_request(handle).unwrap();
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_poll(handle, &answer) {
            PollOutcome::Observed(observation) => (observation, answer),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn insert_poll_and_long_poll() {
        let (root, state) = serve().await;
        let base = format!("{root}/compute/v1");
        let provider = |options: serde_json::Value| {
            let spec: ProviderSpec = serde_json::from_value(
                json!({"baseURL": base, "protocol": "compute", "compute": options}),
            )
            .unwrap();
            dialect_for(&spec).unwrap()
        };
        let plain = &*provider(json!({"requestIdParameter": "requestId"}));
        let long = provider(json!({"longPoll": true}));
        let body = json!({"name": "vm-1", "simulate": {"durationSeconds": 0.8}});
        let started = start(&base, plain, body.clone(), "req-1").await;
        assert_eq!(started.observation.state, UpstreamState::Pending);
        // The link names Google's host, as Compute's do, whatever host was called.
        let url = started.handle.url.clone().unwrap();
        assert!(
            url.starts_with(
                "https://www.googleapis.com/compute/v1/projects/demo/zones/us-central1-a/operations/operation-"
            ),
            "{url}"
        );
        // The same requestId: the same operation.
        let again = start(&base, plain, body, "req-1").await;
        assert_eq!(again.handle, started.handle);
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(
            (stats["creates"].clone(), stats["duplicateCreates"].clone()),
            (json!(1), json!(1))
        );
        let (observation, _) = poll(&base, plain, &started.handle).await;
        assert!(matches!(
            observation.state,
            UpstreamState::Pending | UpstreamState::Running
        ));
        // The long poll holds the answer until the operation is done.
        let began = Instant::now();
        let (observation, _) = poll(&base, &*long, &started.handle).await;
        assert_eq!(observation.state, UpstreamState::Succeeded);
        assert!(
            began.elapsed() >= Duration::from_millis(300),
            "{:?}",
            began.elapsed()
        );
        assert!(
            observation
                .resource_id
                .unwrap()
                .ends_with("/instances/vm-1")
        );
        // …or until its wait deadline, answering what is true then.
        let body = json!({"simulate": {"durationSeconds": 30, "waitSeconds": 0.3}});
        let slow = start(&base, plain, body, "req-2").await;
        let began = Instant::now();
        let (observation, _) = poll(&base, &*long, &slow.handle).await;
        assert!(matches!(
            observation.state,
            UpstreamState::Pending | UpstreamState::Running
        ));
        let held = began.elapsed();
        assert!(
            held >= Duration::from_millis(250) && held < Duration::from_secs(5),
            "{held:?}"
        );
    }

    #[tokio::test]
    async fn a_scripted_failure_reads_as_compute_reports_it() {
        let (root, _state) = serve().await;
        let base = format!("{root}/compute/v1");
        let d = dialect(Protocol::Compute);
        let body = json!({"simulate": {"durationSeconds": 0, "outcome": "error", "errorCode": 8,
                                       "errorMessage": "Quota 'CPUS' exceeded.", "warnings": true}});
        let started = start(&base, d, body, "req-3").await;
        assert_eq!(started.observation.state, UpstreamState::Failed);
        let (observation, _) = poll(&base, d, &started.handle).await;
        let error = observation.error.unwrap();
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        assert_eq!(error.provider_code.as_deref(), Some("QUOTA_EXCEEDED"));
        assert_eq!(error.http_status, Some(403));
        assert_eq!(error.message, "Quota 'CPUS' exceeded.");
        let kinds: Vec<&str> = error.details.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["Error", "ErrorInfo", "QuotaFailure", "Help", "Warning"]
        );
    }

    /// Inserts `name` in `scope` (`zones/z`, `regions/r`, `global`) of project `demo`.
    async fn insert(base: &str, scope: &str, name: &str, seconds: f64) -> Started {
        let d = dialect(Protocol::Compute);
        let start: StartRequest = serde_json::from_value(json!({
            "path": format!("projects/demo/{scope}/instances"),
            "body": {"name": name, "simulate": {"durationSeconds": seconds}}
        }))
        .unwrap();
        let request = d.start_request(&start, name);
        let answer = upstream().send(base, &request).await.unwrap();
        match d.read_start(&request, &answer) {
            StartOutcome::Started(started) => *started,
            other => panic!("{other:?}"),
        }
    }

    /// Every page of `list` as the dialect reads it: the keys, page by page.
    async fn sweep(base: &str, list: &ListSpec) -> Vec<Vec<String>> {
        let d = dialect(Protocol::Compute);
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = d.list_request(list, token.as_deref()).unwrap();
            let answer = upstream().send(base, &request).await.unwrap();
            let ListOutcome::Page(page) = d.read_list(&answer) else {
                panic!("{}", String::from_utf8_lossy(&answer.body));
            };
            pages.push(page.entries.into_iter().map(|(k, _)| k).collect());
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return pages,
            }
        }
    }

    fn list(path: &str, filter: &str, page_size: u16) -> ListSpec {
        ListSpec {
            path: Some(path.into()),
            query: [("filter".to_owned(), filter.to_owned())].into(),
            page_size: Some(page_size),
        }
    }

    #[tokio::test]
    async fn zonal_regional_global_and_aggregated_lists_page_and_filter_by_status() {
        let (root, state) = serve().await;
        let base = format!("{root}/compute/v1");
        let d = dialect(Protocol::Compute);
        let mut running = Vec::new();
        for (scope, name) in [
            ("zones/us-central1-a", "a-1"),
            ("zones/us-central1-a", "a-2"),
            ("zones/us-central1-a", "a-3"),
            ("zones/us-central1-b", "b-1"),
            ("regions/us-central1", "r-1"),
            ("global", "g-1"),
        ] {
            let started = insert(&base, scope, name, 3600.0).await;
            running.push(d.list_key(&started.handle).unwrap());
        }
        let done = insert(&base, "zones/us-central1-a", "a-done", 0.0).await;
        let done_key = d.list_key(&done.handle).unwrap();
        // A zone: its running operations, two a page; the done one filtered out.
        let pages = sweep(
            &base,
            &list(
                "projects/demo/zones/us-central1-a/operations",
                "status != DONE",
                2,
            ),
        )
        .await;
        assert_eq!(pages.len(), 2, "{pages:?}");
        assert_eq!(pages.concat(), running[..3]);
        // Only the done one.
        let pages = sweep(
            &base,
            &list(
                "projects/demo/zones/us-central1-a/operations",
                "status = DONE",
                2,
            ),
        )
        .await;
        assert_eq!(pages.concat(), std::slice::from_ref(&done_key));
        // A region, the project's global operations.
        for (path, want) in [
            ("projects/demo/regions/us-central1/operations", &running[4]),
            ("projects/demo/global/operations", &running[5]),
        ] {
            let pages = sweep(&base, &list(path, "", 100)).await;
            assert_eq!(pages.concat(), std::slice::from_ref(want), "{path}");
        }
        // Every scope at once, three a page.
        let pages = sweep(
            &base,
            &list("projects/demo/aggregated/operations", "status!=DONE", 3),
        )
        .await;
        let mut keys = pages.concat();
        keys.sort();
        let mut want = running.clone();
        want.sort();
        assert_eq!(keys, want);
        // Lists are counted, and are not GETs.
        let stats = state.store().stats_json(state.now_ms());
        assert_eq!(stats["lists"], 2 + 1 + 1 + 1 + 2);
        for op in stats["operations"].as_object().unwrap().values() {
            assert_eq!(op["gets"], 0, "{op}");
        }
    }

    #[tokio::test]
    async fn an_aggregated_page_groups_by_scope_and_warns_of_empty_ones() {
        let (root, _state) = serve().await;
        let base = format!("{root}/compute/v1");
        insert(&base, "zones/us-central1-a", "a-1", 3600.0).await;
        insert(&base, "regions/us-central1", "r-1", 3600.0).await;
        let page: serde_json::Value = reqwest::get(format!(
            "{base}/projects/demo/aggregated/operations?maxResults=1"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(page["kind"], "compute#operationAggregatedList");
        assert_eq!(page["id"], "projects/demo/aggregated/operations");
        assert_eq!(
            page["items"]["zones/us-central1-a"]["operations"][0]["name"]
                .as_str()
                .map(|n| n.starts_with("operation-")),
            Some(true)
        );
        assert_eq!(
            page["items"]["regions/us-central1"]["warning"]["code"],
            "NO_RESULTS_ON_PAGE"
        );
        assert!(page["nextPageToken"].is_string());
        let zonal: serde_json::Value = reqwest::get(format!(
            "{base}/projects/demo/zones/us-central1-b/operations"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(
            zonal,
            json!({"kind": "compute#operationList", "id": "projects/demo/zones/us-central1-b/operations",
                   "selfLink": "https://www.googleapis.com/compute/v1/projects/demo/zones/us-central1-b/operations"})
        );
    }

    #[tokio::test]
    async fn bad_filters_sizes_tokens_and_parameters_are_refused_as_compute_does() {
        let (root, state) = serve().await;
        let base = format!("{root}/compute/v1");
        insert(&base, "zones/us-central1-a", "a-1", 3600.0).await;
        let zone = "projects/demo/zones/us-central1-a/operations";
        let stale = super::super::paging::encode_token(
            &format!("compute/{zone}?"),
            0,
            state.now_ms() - super::super::paging::TOKEN_TTL_MS - 1,
        );
        for (query, message) in [
            (
                "filter=zone%20%3D%20a",
                "Invalid value for field 'filter': 'zone = a'. Invalid list filter expression.",
            ),
            (
                "filter=status%20%3D%20STOPPED",
                "Invalid value for field 'filter': 'status = STOPPED'. Invalid list filter expression.",
            ),
            (
                "maxResults=501",
                "Invalid value for field 'maxResults': '501'. Must be less than or equal to 500",
            ),
            (
                "pageToken=bogus",
                "Invalid value for field 'pageToken': 'bogus'. Invalid page token.",
            ),
            (&format!("pageToken={stale}"), "The page token has expired."),
            (
                "orderBy=creationTimestamp%20desc",
                "Invalid value for field 'orderBy'",
            ),
            ("pageSize=5", "Cannot bind query parameter"),
        ] {
            let raw = reqwest::get(format!("{base}/{zone}?{query}"))
                .await
                .unwrap();
            let answer = HttpAnswer {
                status: raw.status().as_u16(),
                headers: vec![],
                body: raw.bytes().await.unwrap().to_vec(),
            };
            let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(answer.status, 400, "{query}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(message),
                "{query}: {body}"
            );
            if query.starts_with("filter") {
                assert_eq!(body["error"]["errors"][0]["reason"], "invalid", "{body}");
            }
            // The dialect: a refusal (a first page's makes the provider poll one by one).
            assert!(
                matches!(
                    dialect(Protocol::Compute).read_list(&answer),
                    ListOutcome::Refused(_)
                ),
                "{query}"
            );
        }
        // A filter of the API's syntax with quotes and without spaces is understood.
        for filter in ["status=\"RUNNING\"", "status!=DONE", "  status = PENDING "] {
            let pages = sweep(&base, &list(zone, filter, 10)).await;
            assert!(pages.len() == 1, "{filter}");
        }
        // Deployment Manager lists its global operations as `operations`, and has no zones.
        let answer = reqwest::get(format!(
            "{root}/deploymentmanager/v2/projects/demo/global/operations"
        ))
        .await
        .unwrap();
        assert_eq!(answer.status(), 200);
        let answer = reqwest::get(format!("{root}/deploymentmanager/v2/{zone}"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
    }

    #[tokio::test]
    async fn an_unknown_operation_is_not_found() {
        let (root, _state) = serve().await;
        let base = format!("{root}/compute/v1");
        let d = dialect(Protocol::Compute);
        let handle = lro_operator::api::OperationHandle {
            url: Some(
                "https://www.googleapis.com/compute/v1/projects/p/global/operations/operation-nope"
                    .into(),
            ),
            ..Default::default()
        };
        let request = d.poll_request(&handle).unwrap();
        let answer = upstream().send(&base, &request).await.unwrap();
        assert!(matches!(
            d.read_poll(&handle, &answer),
            PollOutcome::Failed {
                not_found: true,
                ..
            }
        ));
    }
}
