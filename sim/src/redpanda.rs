//! The Redpanda Cloud control-plane surface under `/redpanda/v1`, as the control-plane OpenAPI
//! document describes it (`redpanda-data/api-docs` `cloud-controlplane/cloud-controlplane.yaml`)
//! and the Redpanda Cloud "Long-running operations" page shows it.
//!
//! * `POST v1/clusters`, `v1/networks`, `v1/serverless/clusters` (bodies `{"cluster": {…}}`,
//!   `{"network": {…}}`, `{"serverless_cluster": {…}}`, as `CreateClusterRequest` & co.),
//!   `PATCH v1/{collection}/{id}` (the resource's fields, as `ClusterUpdate`) and
//!   `DELETE v1/{collection}/{id}` answer `202 {"operation": v1.Operation}`. A create whose
//!   `name` is taken by a resource that is not gone or failed is refused `409 ALREADY_EXISTS`
//!   ("Cluster with given name already exists", the OpenAPI example). A `PATCH` or `DELETE` of
//!   an id the simulator did not create starts an operation all the same (so that a delete can
//!   be scripted on its own). The body's `simulate` key scripts the operation.
//! * `GET v1/operations/{id}` (`OperationService_GetOperation`): `{"operation": …}`, with the
//!   script's GET faults (`simulate.faults`, see [`crate::faults`]) in this API's wire format.
//! * `GET v1/operations` (`OperationService_ListOperations`): `filter.type_in` (repeatable),
//!   `filter.state`, `filter.resource_id`, `page_size` (capped to 100), `page_token`;
//!   answers `ListOperationsResponse {operations, next_page_token}` in creation order.
//! * `GET v1/clusters`, `v1/networks`, `v1/serverless/clusters` (`filter.name_contains` and
//!   equality on any other `filter.<field>`, paged the same way) answer
//!   `{clusters|networks|serverless_clusters: […], next_page_token}`;
//!   `GET v1/{collection}/{id}` answers `{cluster|network|serverless_cluster: …}`, or `404
//!   NOT_FOUND` once deleted. Resources are those created through the simulator; their `state`
//!   follows their operations (`STATE_CREATING` — `STATE_PLACING` for a serverless cluster —,
//!   `STATE_READY`, `STATE_UPGRADING` while a cluster update runs, `STATE_DELETING`,
//!   `STATE_FAILED`; gone once a delete completed).
//!
//! `v1.Operation`: `id`, `metadata` (`@type` `…CreateClusterMetadata` with `cluster_id`,
//! `…DeleteClusterMetadata` with `required_action`, `…UpdateClusterMetadata` with
//! `update_type`, …), `state` (`STATE_IN_PROGRESS`, `STATE_COMPLETED`, `STATE_FAILED`),
//! `started_at`, `finished_at` (`null` until done: unset message fields are written as `null`,
//! as in the OpenAPI examples), `type` (`TYPE_CREATE_CLUSTER`, `TYPE_DELETE_NETWORK`, … from
//! the method and path), `resource_id`, and, once done, `response` (`…CreateClusterResponse
//! {cluster}`; none for deletes, as in the "DeleteCluster done" example) or `error`: an
//! `rpc.Status` whose `code` is the enum *name* (schema `rpc.Status`), with a
//! `google.rpc.ErrorInfo` detail in domain `redpanda.com/controlplane` whose reason is
//! `simulate.errorReason`, else one of the reasons the API documents (`error-and-status-codes.md`)
//! derived from the code (`INVALID_ARGUMENT` → `REASON_INVALID_INPUT`, `RESOURCE_EXHAUSTED` →
//! `REASON_CLOUD_PROVIDER_STOCKOUT`, `FAILED_PRECONDITION` → `REASON_NETWORK_NOT_READY`,
//! `UNAUTHENTICATED` → `REASON_NO_TOKEN`, anything else `REASON_UNSPECIFIED`). Operation and
//! resource ids are xid-shaped (20 characters of base32hex, as `cjb69h1c4vs42pca89s0`);
//! operations made by the admin API (`POST /sim/operations`) read as cluster creations and stay
//! reachable as `op-N`.
//!
//! Errors are `rpc.Status` `{code, message, details}`; a 429 carries an ErrorInfo
//! `REASON_RATE_LIMIT_EXCEEDED` and the `ratelimit: limit=…, remaining=0, reset=1` header the
//! Terraform provider reads (`redpanda/cloud/ratelimiter.go`). Page tokens are opaque and expire
//! after 60 s of simulator time (`400 INVALID_ARGUMENT`); the last page's `next_page_token` is
//! `""` (a proto3 string that is not set). Start faults (`simulate.startFaults`) apply to the
//! n-th identical start request; the API has no idempotency key, so a start whose answer was lost
//! can only be found again by listing.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::faults::{self, admit_start, lose};
use super::paging::Paging;
#[cfg(test)]
use super::paging::{decode_token, encode_token};
use super::render::{rfc3339, status_name};
use super::script::{Outcome, split_create_body};
use super::state::{OpRecord, SimState, Store};
use super::surface::Surface;

/// The `@type` prefix of every message of the API.
const PREFIX: &str = "type.googleapis.com/redpanda.api.controlplane.v1.";
/// The `ErrorInfo.domain` of the control plane (`error-and-status-codes.md`).
const DOMAIN: &str = "redpanda.com/controlplane";

/// `Operation.Type` (OpenAPI `Operation.Type`).
const TYPES: [&str; 19] = [
    "TYPE_CREATE_CLUSTER",
    "TYPE_UPDATE_CLUSTER",
    "TYPE_DELETE_CLUSTER",
    "TYPE_CREATE_NETWORK",
    "TYPE_DELETE_NETWORK",
    "TYPE_CREATE_SERVERLESS_CLUSTER",
    "TYPE_DELETE_SERVERLESS_CLUSTER",
    "TYPE_CREATE_CLUSTER_WITH_DEPENDENCIES",
    "TYPE_DELETE_CLUSTER_WITH_DEPENDENCIES",
    "TYPE_CREATE_SERVERLESS_PRIVATE_LINK",
    "TYPE_UPDATE_SERVERLESS_PRIVATE_LINK",
    "TYPE_DELETE_SERVERLESS_PRIVATE_LINK",
    "TYPE_CREATE_NETWORK_PEERING",
    "TYPE_DELETE_NETWORK_PEERING",
    "TYPE_UPDATE_NETWORK",
    "TYPE_UPDATE_SERVERLESS_CLUSTER",
    "TYPE_CREATE_SHADOW_LINK",
    "TYPE_UPDATE_SHADOW_LINK",
    "TYPE_DELETE_SHADOW_LINK",
];
/// `Operation.State` (`STATE_UNSPECIFIED` filters nothing).
const STATES: [&str; 3] = ["STATE_IN_PROGRESS", "STATE_COMPLETED", "STATE_FAILED"];

/// A family of resources whose mutations are long-running operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    /// The collection under `v1/`.
    collection: &'static str,
    /// The request/response key and `metadata` id prefix (`cluster` → `cluster_id`).
    key: &'static str,
    /// The list response's key.
    plural: &'static str,
    /// The `Operation.Type` suffix.
    suffix: &'static str,
    /// The message-name stem (`CreateClusterMetadata`).
    pascal: &'static str,
    /// How error messages name it.
    title: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind {
        collection: "clusters",
        key: "cluster",
        plural: "clusters",
        suffix: "CLUSTER",
        pascal: "Cluster",
        title: "Cluster",
    },
    Kind {
        collection: "networks",
        key: "network",
        plural: "networks",
        suffix: "NETWORK",
        pascal: "Network",
        title: "Network",
    },
    Kind {
        collection: "serverless/clusters",
        key: "serverless_cluster",
        plural: "serverless_clusters",
        suffix: "SERVERLESS_CLUSTER",
        pascal: "ServerlessCluster",
        title: "Serverless cluster",
    },
];

fn kind_named(key: &str) -> Kind {
    KINDS
        .iter()
        .copied()
        .find(|k| k.key == key)
        .unwrap_or(KINDS[0])
}

/// What an operation does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Create,
    Update,
    Delete,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Create => "CREATE",
            Verb::Update => "UPDATE",
            Verb::Delete => "DELETE",
        }
    }

    fn pascal(self) -> &'static str {
        match self {
            Verb::Create => "Create",
            Verb::Update => "Update",
            Verb::Delete => "Delete",
        }
    }

    fn of(word: &str) -> Verb {
        match word {
            "update" => Verb::Update,
            "delete" => Verb::Delete,
            _ => Verb::Create,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

/// The Redpanda view of a stored operation.
struct View<'a> {
    kind: Kind,
    verb: Verb,
    /// The operation's id.
    id: String,
    resource_id: String,
    /// The resource's fields as this operation leaves them (create and update).
    fields: Option<&'a Map<String, Value>>,
    /// When the resource was created (RFC 3339).
    created_at: String,
}

/// How an operation stored by this surface or by the admin API (`POST /sim/operations`, whose
/// operations read as cluster creations) looks to the API.
fn view(op: &OpRecord) -> View<'_> {
    let meta = op.spec.get("redpanda");
    let text = |field: &str| meta.and_then(|m| m.get(field)).and_then(Value::as_str);
    match meta {
        Some(_) => View {
            kind: kind_named(text("kind").unwrap_or_default()),
            verb: Verb::of(text("verb").unwrap_or_default()),
            id: text("id").unwrap_or_default().to_owned(),
            resource_id: text("resourceId").unwrap_or_default().to_owned(),
            fields: op.spec.get("resource").and_then(Value::as_object),
            created_at: text("createdAt").map_or_else(|| rfc3339(op.created_at_ms), str::to_owned),
        },
        None => View {
            kind: KINDS[0],
            verb: Verb::Create,
            id: op.name.trim_start_matches("operations/").to_owned(),
            resource_id: op
                .resource
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
            fields: None,
            created_at: rfc3339(op.created_at_ms),
        },
    }
}

fn is_redpanda(op: &OpRecord) -> bool {
    op.spec.get("redpanda").is_some()
}

/// The Redpanda control plane, for faults.
pub struct RedpandaSurface;

impl Surface for RedpandaSurface {
    fn operation(&self, op: &OpRecord, now_ms: u64) -> Response {
        Json(json!({ "operation": operation_json(op, now_ms) })).into_response()
    }

    fn error(&self, status: StatusCode, message: &str) -> Response {
        rpc_error(status, message)
    }

    fn not_found(&self, _id: &str) -> Response {
        rpc_error(StatusCode::NOT_FOUND, "Operation not found")
    }
}

/// Dispatches every `/redpanda/v1/...` request.
pub async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/redpanda/v1/")
        .unwrap_or_default()
        .trim_end_matches('/');
    let query = uri.query().unwrap_or_default();
    if rest == "operations" {
        return match method {
            Method::GET => list_operations(&state, query),
            _ => no_method(&method, &uri),
        };
    }
    if let Some(id) = rest.strip_prefix("operations/") {
        return match method {
            Method::GET => get_operation(&state, id).await,
            _ => no_method(&method, &uri),
        };
    }
    for kind in KINDS {
        if rest == kind.collection {
            return match method {
                Method::GET => list_resources(&state, kind, query),
                Method::POST => start(&state, kind, Verb::Create, None, &uri, &body).await,
                _ => no_method(&method, &uri),
            };
        }
        if let Some(id) = rest
            .strip_prefix(kind.collection)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            return match method {
                Method::GET => get_resource(&state, kind, id),
                Method::PATCH => start(&state, kind, Verb::Update, Some(id), &uri, &body).await,
                Method::DELETE => start(&state, kind, Verb::Delete, Some(id), &uri, &body).await,
                _ => no_method(&method, &uri),
            };
        }
    }
    no_method(&method, &uri)
}

fn no_method(method: &Method, uri: &Uri) -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        &format!("no method {method} {}", uri.path()),
    )
}

async fn get_operation(state: &SimState, id: &str) -> Response {
    let name = state
        .store()
        .get_mut(&format!("operations/{id}"))
        .map(|op| op.name.clone());
    let Some(name) = name else {
        return RedpandaSurface.not_found(id);
    };
    match faults::serve(state, &name, id, &RedpandaSurface).await {
        Some(answer) => answer,
        None => RedpandaSurface.not_found(id),
    }
}

/// Starts an operation: `verb` on a resource of `kind` (`id` for updates and deletes).
async fn start(
    state: &SimState,
    kind: Kind,
    verb: Verb,
    id: Option<&str>,
    uri: &Uri,
    body: &[u8],
) -> Response {
    let (spec, script, _) = match split_create_body(body, &[]) {
        Ok(parsed) => parsed,
        Err(message) => return rpc_error(StatusCode::BAD_REQUEST, &message),
    };
    let now = state.now_ms();
    let (name, fault) = {
        let mut store = state.store();
        let key = format!(
            "{} {}?{}\n{}",
            verb.key(),
            uri.path(),
            uri.query().unwrap_or_default(),
            String::from_utf8_lossy(body)
        );
        let fault = match admit_start(&mut store, &key, &script, &RedpandaSurface, now) {
            Ok(fault) => fault,
            Err(refusal) => return *refusal,
        };
        if let Some(status) = script.start_status {
            store.rejected_creates += 1;
            let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return rpc_error(http, &format!("request rejected by script (HTTP {status})"));
        }
        let previous = id.and_then(|id| {
            resources(&store, kind, now)
                .into_iter()
                .find(|r| r.id == id && !r.gone)
        });
        let fields = match verb {
            Verb::Create => spec
                .get(kind.key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            Verb::Update => {
                let patch = spec
                    .get(kind.key)
                    .and_then(Value::as_object)
                    .or_else(|| spec.as_object())
                    .cloned()
                    .unwrap_or_default();
                let mut fields = previous
                    .as_ref()
                    .map(|r| r.fields.clone())
                    .unwrap_or_default();
                fields.extend(patch);
                fields
            }
            Verb::Delete => previous
                .as_ref()
                .map(|r| r.fields.clone())
                .unwrap_or_default(),
        };
        if verb == Verb::Create
            && let Some(wanted) = fields.get("name").and_then(Value::as_str)
            && !wanted.is_empty()
            && resources(&store, kind, now)
                .iter()
                .any(|r| !r.gone && r.state != "STATE_FAILED" && r.name() == Some(wanted))
        {
            store.rejected_creates += 1;
            return rpc_error(
                StatusCode::CONFLICT,
                &format!("{} with given name already exists", kind.title),
            );
        }
        store.creates += 1;
        let seq = store.ops().len() as u64 + 1;
        let op_id = xid_like(now, seq * 2);
        let resource_id = match id {
            Some(id) => id.to_owned(),
            None => xid_like(now, seq * 2 + 1),
        };
        let created_at = previous
            .as_ref()
            .map_or_else(|| rfc3339(now), |r| r.created_at.clone());
        let stored = json!({
            "redpanda": {
                "kind": kind.key,
                "verb": verb.key(),
                "id": op_id,
                "resourceId": resource_id,
                "createdAt": created_at,
            },
            "resource": fields,
            "body": spec,
        });
        let resource = format!("{}/{resource_id}", kind.collection);
        let op = store.insert(move |_| resource, stored, script.clone(), None, now);
        let internal = op.name.clone();
        store.add_alias(format!("operations/{op_id}"), &internal);
        (internal, fault)
    };
    // The operation exists before the answer is sent (a client may die while waiting).
    if script.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
    }
    let now = state.now_ms();
    let normal = match state.store().get_mut(&name) {
        Some(op) => (
            StatusCode::ACCEPTED,
            Json(json!({ "operation": operation_json(op, now) })),
        )
            .into_response(),
        None => {
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "operation vanished (reset)",
            );
        }
    };
    match fault {
        Some(fault) => lose(&fault, normal, &RedpandaSurface, now).await,
        None => normal,
    }
}

/// `STATE_IN_PROGRESS`, `STATE_COMPLETED` or `STATE_FAILED` at `now_ms`.
fn op_state(op: &OpRecord, now_ms: u64) -> &'static str {
    if !op.is_done(now_ms) {
        "STATE_IN_PROGRESS"
    } else if op.outcome() == Outcome::Success {
        "STATE_COMPLETED"
    } else {
        "STATE_FAILED"
    }
}

fn op_type(v: &View<'_>) -> String {
    format!("TYPE_{}_{}", v.verb.word(), v.kind.suffix)
}

/// The operation as of `now_ms` (OpenAPI schema `v1.Operation`).
fn operation_json(op: &OpRecord, now_ms: u64) -> Value {
    let v = view(op);
    let done = op.is_done(now_ms);
    let mut metadata = Map::new();
    metadata.insert(
        "@type".into(),
        format!("{PREFIX}{}{}Metadata", v.verb.pascal(), v.kind.pascal).into(),
    );
    match (v.verb, v.kind.key) {
        (Verb::Create, key) => {
            metadata.insert(format!("{key}_id"), v.resource_id.clone().into());
        }
        (Verb::Delete, "cluster") => {
            metadata.insert("required_action".into(), "".into());
        }
        (Verb::Update, "cluster") => {
            metadata.insert("update_type".into(), json!([]));
        }
        _ => {}
    }
    let mut out = Map::new();
    out.insert("id".into(), v.id.clone().into());
    out.insert("metadata".into(), Value::Object(metadata));
    out.insert("state".into(), op_state(op, now_ms).into());
    out.insert("started_at".into(), rfc3339(op.created_at_ms).into());
    out.insert(
        "finished_at".into(),
        if done {
            rfc3339(op.done_at_ms()).into()
        } else {
            Value::Null
        },
    );
    out.insert("type".into(), op_type(&v).into());
    out.insert("resource_id".into(), v.resource_id.clone().into());
    if done {
        match op.outcome() {
            Outcome::Success if v.verb == Verb::Delete => {}
            Outcome::Success => {
                let resource = resource_json(
                    v.kind,
                    &v.resource_id,
                    v.fields,
                    "STATE_READY",
                    &v.created_at,
                    &rfc3339(op.done_at_ms()),
                    true,
                );
                out.insert(
                    "response".into(),
                    json!({
                        "@type": format!("{PREFIX}{}{}Response", v.verb.pascal(), v.kind.pascal),
                        v.kind.key: resource,
                    }),
                );
            }
            Outcome::Error => {
                out.insert(
                    "error".into(),
                    failure(
                        op.script.error_code,
                        &op.script.error_message,
                        op.script.error_reason.as_deref(),
                    ),
                );
            }
            Outcome::Cancelled => {
                out.insert("error".into(), failure(1, "operation cancelled", None));
            }
        }
    }
    Value::Object(out)
}

/// A resource as the API shows it (schemas `Cluster`, `Network`, `ServerlessCluster`): the
/// fields it was created (and updated) with, its `id`, `state` and timestamps. A cluster's
/// `dataplane_api.url` is set when `with_dataplane_url` (not in lists: "This endpoint does not
/// return `dataplane_api.url`").
fn resource_json(
    kind: Kind,
    id: &str,
    fields: Option<&Map<String, Value>>,
    state: &str,
    created_at: &str,
    updated_at: &str,
    with_dataplane_url: bool,
) -> Value {
    let mut out = fields.cloned().unwrap_or_default();
    out.entry("name").or_insert_with(|| "".into());
    out.insert("id".into(), id.into());
    out.insert("state".into(), state.into());
    out.insert("created_at".into(), created_at.into());
    out.insert("updated_at".into(), updated_at.into());
    if kind.key == "cluster" {
        let ready = matches!(state, "STATE_READY" | "STATE_UPGRADING");
        let url = (with_dataplane_url && ready)
            .then(|| json!({"url": format!("https://api-{id}.sim.redpanda.invalid")}));
        out.insert("dataplane_api".into(), url.unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// A failed operation's `rpc.Status`: the code's name, the message, and an ErrorInfo.
fn failure(code: i32, message: &str, reason: Option<&str>) -> Value {
    let reason = reason.unwrap_or(match code {
        3 => "REASON_INVALID_INPUT",
        8 => "REASON_CLOUD_PROVIDER_STOCKOUT",
        9 => "REASON_NETWORK_NOT_READY",
        16 => "REASON_NO_TOKEN",
        _ => "REASON_UNSPECIFIED",
    });
    json!({
        "code": code_name(code),
        "message": message,
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": DOMAIN,
            "metadata": {},
        }],
    })
}

/// Redpanda serialises rpc codes by name (`rpc.Status.code` is an enum of the
/// `google.rpc.Code` names in the control-plane OpenAPI document).
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// An `rpc.Status` error answer; a 429 has the rate limiter's ErrorInfo and `ratelimit` header.
fn rpc_error(http: StatusCode, message: &str) -> Response {
    let details = if http == StatusCode::TOO_MANY_REQUESTS {
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "REASON_RATE_LIMIT_EXCEEDED",
            "domain": DOMAIN,
            "metadata": {},
        }])
    } else {
        json!([])
    };
    let body = json!({"code": status_name(http), "message": message, "details": details});
    let mut response = (http, Json(body)).into_response();
    if http == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            "ratelimit",
            HeaderValue::from_static("limit=100,remaining=0,reset=1"),
        );
    }
    response
}

/// `400 INVALID_ARGUMENT`.
fn invalid(message: String) -> Response {
    rpc_error(StatusCode::BAD_REQUEST, &message)
}

// ------------------------------------------------------------------------------ resources

/// One resource, from the operations on it.
struct Resource {
    id: String,
    /// The index of its creating operation in the store (its place in lists).
    index: usize,
    fields: Map<String, Value>,
    state: &'static str,
    gone: bool,
    created_at: String,
    updated_at: String,
}

impl Resource {
    fn name(&self) -> Option<&str> {
        self.fields.get("name").and_then(Value::as_str)
    }
}

/// The resources of `kind` created through this surface, in creation order, as of `now_ms`.
fn resources(store: &Store, kind: Kind, now_ms: u64) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (index, op) in store.ops().iter().enumerate() {
        if !is_redpanda(op) {
            continue;
        }
        let v = view(op);
        if v.kind != kind {
            continue;
        }
        let done = op.is_done(now_ms);
        let success = done && op.outcome() == Outcome::Success;
        let at = rfc3339(if done {
            op.done_at_ms()
        } else {
            op.created_at_ms
        });
        if v.verb == Verb::Create && !by_id.contains_key(&v.resource_id) {
            by_id.insert(v.resource_id.clone(), out.len());
            out.push(Resource {
                id: v.resource_id.clone(),
                index,
                fields: v.fields.cloned().unwrap_or_default(),
                state: match (done, success, kind.key) {
                    (false, _, "serverless_cluster") => "STATE_PLACING",
                    (false, _, _) => "STATE_CREATING",
                    (true, true, _) => "STATE_READY",
                    (true, false, _) => "STATE_FAILED",
                },
                gone: false,
                created_at: v.created_at.clone(),
                updated_at: at,
            });
            continue;
        }
        let Some(resource) = by_id.get(&v.resource_id).and_then(|&i| out.get_mut(i)) else {
            continue;
        };
        resource.updated_at = at;
        match (v.verb, done, success) {
            (Verb::Update, false, _) if kind.key == "cluster" => resource.state = "STATE_UPGRADING",
            (Verb::Update, true, true) => {
                resource.fields = v.fields.cloned().unwrap_or_default();
                resource.state = "STATE_READY";
            }
            (Verb::Update, _, _) => resource.state = "STATE_READY",
            (Verb::Delete, false, _) => resource.state = "STATE_DELETING",
            (Verb::Delete, true, true) => resource.gone = true,
            (Verb::Delete, true, false) => resource.state = "STATE_READY",
            (Verb::Create, _, _) => {}
        }
    }
    out
}

fn get_resource(state: &SimState, kind: Kind, id: &str) -> Response {
    let now = state.now_ms();
    let store = state.store();
    match resources(&store, kind, now)
        .into_iter()
        .find(|r| r.id == id && !r.gone)
    {
        Some(r) => Json(json!({
            kind.key: resource_json(kind, &r.id, Some(&r.fields), r.state, &r.created_at, &r.updated_at, true),
        }))
        .into_response(),
        None => rpc_error(
            StatusCode::NOT_FOUND,
            &format!("{} not found", kind.title),
        ),
    }
}

fn list_resources(state: &SimState, kind: Kind, query: &str) -> Response {
    let now = state.now_ms();
    let params = params(query);
    let paging = match Paging::read(&params, kind.plural, now) {
        Ok(paging) => paging,
        Err(message) => return invalid(message),
    };
    let store = state.store();
    let matching = resources(&store, kind, now)
        .into_iter()
        .filter(|r| !r.gone)
        .filter(|r| {
            params
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .all(|(key, value)| match key.strip_prefix("filter.") {
                    Some("name_contains") => r.name().is_some_and(|n| n.contains(value.as_str())),
                    Some(field) => r.fields.get(field).and_then(Value::as_str) == Some(value),
                    None => true,
                })
        })
        .map(|r| {
            let item = resource_json(
                kind,
                &r.id,
                Some(&r.fields),
                r.state,
                &r.created_at,
                &r.updated_at,
                false,
            );
            (r.index, item)
        });
    let (items, next) = paging.page(matching, now);
    Json(json!({kind.plural: items, "next_page_token": next})).into_response()
}

// ------------------------------------------------------------------------------ listing

fn params(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET v1/operations` (`OperationService_ListOperations`).
fn list_operations(state: &SimState, query: &str) -> Response {
    // Counted in `/sim/stats` (`lists`), refused ones too, as Google's are.
    let listed_at = state.now_ms();
    state.store().count_list(listed_at);
    let now = state.now_ms();
    let params = params(query);
    let mut types = Vec::new();
    let mut wanted_state = None;
    let mut resource_id = None;
    for (key, value) in &params {
        match key.as_str() {
            "filter.type_in" | "filter.type_in[]" => {
                for value in value.split(',').filter(|v| !v.is_empty()) {
                    if !TYPES.contains(&value) {
                        return invalid(format!(
                            "type mismatch, parameter: filter.type_in, error: {value:?} is not valid"
                        ));
                    }
                    types.push(value.to_owned());
                }
            }
            "filter.state" => match value.as_str() {
                "" | "STATE_UNSPECIFIED" => wanted_state = None,
                s if STATES.contains(&s) => wanted_state = Some(s.to_owned()),
                s => {
                    return invalid(format!(
                        "type mismatch, parameter: filter.state, error: {s:?} is not valid"
                    ));
                }
            },
            "filter.resource_id" if !value.is_empty() => resource_id = Some(value.clone()),
            _ => {}
        }
    }
    let paging = match Paging::read(&params, "operations", now) {
        Ok(paging) => paging,
        Err(message) => return invalid(message),
    };
    let store = state.store();
    let matching = store
        .ops()
        .iter()
        .enumerate()
        .filter(|(_, op)| is_redpanda(op))
        .filter(|(_, op)| {
            let v = view(op);
            (types.is_empty() || types.contains(&op_type(&v)))
                && wanted_state
                    .as_deref()
                    .is_none_or(|s| s == op_state(op, now))
                && resource_id.as_deref().is_none_or(|r| r == v.resource_id)
        })
        .map(|(index, op)| (index, operation_json(op, now)));
    let (operations, next) = paging.page(matching, now);
    Json(json!({"operations": operations, "next_page_token": next})).into_response()
}

/// An xid-shaped id (12 bytes — seconds, machine, process, counter — in 20 characters of
/// lowercase base32hex, as the control plane's ids, e.g. `cjb69h1c4vs42pca89s0`).
fn xid_like(now_ms: u64, counter: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let secs = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    bytes[4..7].copy_from_slice(b"sim");
    bytes[7..9].copy_from_slice(&[0x4c, 0x52]);
    let counter = u32::try_from(counter & 0x00ff_ffff)
        .unwrap_or(0)
        .to_be_bytes();
    bytes[9..].copy_from_slice(&counter[1..]);
    let mut out = String::with_capacity(20);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_xid_shaped_and_distinct() {
        let a = xid_like(1_721_766_689_948, 2);
        let b = xid_like(1_721_766_689_948, 3);
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c))
        );
        // The seed's ids of July 2024 begin with `cq`: so do these.
        assert!(a.starts_with("cq"), "{a}");
    }

    #[test]
    fn page_tokens_round_trip() {
        let token = encode_token("operations", 7, 1234);
        assert_eq!(
            decode_token(&token),
            Some(("operations".to_owned(), 7, 1234))
        );
        assert_eq!(decode_token("not a token"), None);
    }

    #[test]
    fn failures_name_the_code_and_carry_an_error_info() {
        let error = failure(8, "no capacity", None);
        assert_eq!(error["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(
            error["details"][0]["reason"],
            "REASON_CLOUD_PROVIDER_STOCKOUT"
        );
        assert_eq!(error["details"][0]["domain"], DOMAIN);
        let error = failure(9, "m", Some("REASON_ZONE_NOT_SUPPORTED_BY_NETWORK"));
        assert_eq!(error["code"], "FAILED_PRECONDITION");
        assert_eq!(
            error["details"][0]["reason"],
            "REASON_ZONE_NOT_SUPPORTED_BY_NETWORK"
        );
        assert_eq!(code_name(99), "UNKNOWN");
    }
}

/// The wire format, and the operator's redpanda dialect against it, in process.
#[cfg(test)]
mod wire {
    use std::time::Duration;

    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::super::{SimState, router};
    use super::encode_token;
    use lro_operator::api::{Protocol, StartRequest};
    use lro_operator::protocol::{PollOutcome, Recovery, StartOutcome, UpstreamState, dialect};
    use lro_operator::upstream::Upstream;

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
                base: format!("http://{addr}/redpanda"),
                state,
                http: reqwest::Client::new(),
            }
        }

        async fn call(&self, method: &str, path: &str, body: Option<Value>) -> reqwest::Response {
            let method: reqwest::Method = method.parse().unwrap();
            let mut request = self.http.request(method, format!("{}/{path}", self.base));
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send().await.unwrap()
        }

        async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            let answer = self.call(method, path, body).await;
            let status = answer.status();
            (status, answer.json().await.unwrap())
        }

        async fn get(&self, path: &str) -> (StatusCode, Value) {
            self.json("GET", path, None).await
        }

        fn stats(&self) -> Value {
            self.state.store().stats_json(self.state.now_ms())
        }
    }

    fn ids(list: &Value, key: &str) -> Vec<String> {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_cluster_create_answers_every_operation_field() {
        let sim = Sim::start().await;
        let body = json!({"cluster": {"name": "c1", "region": "us-west1"},
                          "simulate": {"durationSeconds": 0.3}});
        let (status, created) = sim.json("POST", "v1/clusters", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let op = &created["operation"];
        let id = op["id"].as_str().unwrap();
        let cluster = op["resource_id"].as_str().unwrap();
        assert_eq!((id.len(), cluster.len()), (20, 20));
        assert_ne!(id, cluster);
        assert_eq!(
            op["metadata"],
            json!({"@type": "type.googleapis.com/redpanda.api.controlplane.v1.CreateClusterMetadata",
                   "cluster_id": cluster})
        );
        assert_eq!(op["state"], "STATE_IN_PROGRESS");
        assert_eq!(op["type"], "TYPE_CREATE_CLUSTER");
        assert!(
            op["started_at"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(op["finished_at"], Value::Null);
        assert!(
            op.get("error").is_none() && op.get("response").is_none(),
            "{op}"
        );

        let (status, polled) = sim.get(&format!("v1/operations/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(polled["operation"]["id"], id);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, done) = sim.get(&format!("v1/operations/{id}")).await;
        let op = &done["operation"];
        assert_eq!(op["state"], "STATE_COMPLETED");
        assert!(
            op["finished_at"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        let response = &op["response"];
        assert_eq!(
            response["@type"],
            "type.googleapis.com/redpanda.api.controlplane.v1.CreateClusterResponse"
        );
        assert_eq!(response["cluster"]["id"], cluster);
        assert_eq!(response["cluster"]["name"], "c1");
        assert_eq!(response["cluster"]["region"], "us-west1");
        assert_eq!(response["cluster"]["state"], "STATE_READY");
        assert!(response["cluster"]["dataplane_api"]["url"].is_string());
        // The cluster is there, by id and by name (the list has no dataplane URL).
        let (_, got) = sim.get(&format!("v1/clusters/{cluster}")).await;
        assert_eq!(got["cluster"]["state"], "STATE_READY");
        let (_, listed) = sim.get("v1/clusters?filter.name_contains=c").await;
        assert_eq!(ids(&listed, "clusters"), [cluster]);
        assert_eq!(listed["clusters"][0]["dataplane_api"], Value::Null);
        assert_eq!(listed["next_page_token"], "");
        // Operations made by the admin API are polled as `op-N` (the benchmark adopts them).
        assert_eq!(sim.get("v1/operations/op-1").await.1["operation"]["id"], id);
    }

    #[tokio::test]
    async fn a_failure_is_an_rpc_status_with_an_error_info() {
        let sim = Sim::start().await;
        let body = json!({"network": {"name": "n1"}, "simulate": {"durationSeconds": 0,
            "outcome": "error", "errorCode": 8, "errorMessage": "no capacity in us-west1",
            "errorReason": "REASON_CLOUD_PROVIDER_STOCKOUT"}});
        let (_, created) = sim.json("POST", "v1/networks", Some(body)).await;
        let op = &created["operation"];
        assert_eq!(op["type"], "TYPE_CREATE_NETWORK");
        assert_eq!(op["state"], "STATE_FAILED");
        assert!(op.get("response").is_none());
        assert_eq!(
            op["error"],
            json!({"code": "RESOURCE_EXHAUSTED", "message": "no capacity in us-west1", "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "REASON_CLOUD_PROVIDER_STOCKOUT",
                "domain": "redpanda.com/controlplane",
                "metadata": {},
            }]})
        );
        // The operator's reading of it.
        let d = dialect(Protocol::Redpanda);
        let handle = lro_operator::api::OperationHandle {
            id: op["id"].as_str().map(str::to_owned),
            ..Default::default()
        };
        let request = d.poll_request(&handle).unwrap();
        let answer = upstream().send(&sim.base, &request).await.unwrap();
        let PollOutcome::Observed(observed) = d.read_poll(&handle, &answer) else {
            panic!("not observed")
        };
        assert_eq!(observed.state, UpstreamState::Failed);
        let error = observed.error.unwrap();
        assert_eq!(error.code, "RESOURCE_EXHAUSTED");
        assert_eq!(error.message, "no capacity in us-west1");
        assert_eq!(
            error.details[0].reason.as_deref(),
            Some("REASON_CLOUD_PROVIDER_STOCKOUT")
        );
        // A failed network is listed as such.
        let (_, listed) = sim.get("v1/networks").await;
        assert_eq!(listed["networks"][0]["state"], "STATE_FAILED");
    }

    #[tokio::test]
    async fn updates_and_deletes_have_their_types_and_metadata() {
        let sim = Sim::start().await;
        let body = json!({"cluster": {"name": "c1"}, "simulate": {"durationSeconds": 0}});
        let (_, created) = sim.json("POST", "v1/clusters", Some(body)).await;
        let cluster = created["operation"]["resource_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let patch = json!({"name": "c1-renamed", "simulate": {"durationSeconds": 30}});
        let (status, updating) = sim
            .json("PATCH", &format!("v1/clusters/{cluster}"), Some(patch))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let op = &updating["operation"];
        assert_eq!(op["type"], "TYPE_UPDATE_CLUSTER");
        assert_eq!(op["resource_id"], cluster.as_str());
        assert_eq!(
            op["metadata"],
            json!({"@type": "type.googleapis.com/redpanda.api.controlplane.v1.UpdateClusterMetadata",
                   "update_type": []})
        );
        let (_, got) = sim.get(&format!("v1/clusters/{cluster}")).await;
        assert_eq!(got["cluster"]["state"], "STATE_UPGRADING");
        let (status, deleting) = sim
            .json(
                "DELETE",
                &format!("v1/clusters/{cluster}"),
                Some(json!({"simulate": {"durationSeconds": 0}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let op = &deleting["operation"];
        assert_eq!(op["type"], "TYPE_DELETE_CLUSTER");
        assert_eq!(
            op["metadata"],
            json!({"@type": "type.googleapis.com/redpanda.api.controlplane.v1.DeleteClusterMetadata",
                   "required_action": ""})
        );
        // Done, without a response ("DeleteCluster done"); the cluster is gone.
        assert_eq!(op["state"], "STATE_COMPLETED");
        assert!(op.get("response").is_none(), "{op}");
        let (status, gone) = sim.get(&format!("v1/clusters/{cluster}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            gone,
            json!({"code": "NOT_FOUND", "message": "Cluster not found", "details": []})
        );
        let (_, listed) = sim.get("v1/clusters").await;
        assert_eq!(listed["clusters"], json!([]));
        // Serverless clusters have their own collection, key and types.
        let body =
            json!({"serverless_cluster": {"name": "s1"}, "simulate": {"durationSeconds": 0}});
        let (_, created) = sim.json("POST", "v1/serverless/clusters", Some(body)).await;
        assert_eq!(
            created["operation"]["type"],
            "TYPE_CREATE_SERVERLESS_CLUSTER"
        );
        assert!(created["operation"]["metadata"]["serverless_cluster_id"].is_string());
        let (_, listed) = sim
            .get("v1/serverless/clusters?filter.name_contains=s")
            .await;
        assert_eq!(listed["serverless_clusters"][0]["name"], "s1");
    }

    #[tokio::test]
    async fn a_name_in_use_is_already_exists() {
        let sim = Sim::start().await;
        let body = json!({"cluster": {"name": "prod"}, "simulate": {"durationSeconds": 30}});
        let (status, _) = sim.json("POST", "v1/clusters", Some(body.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, refused) = sim.json("POST", "v1/clusters", Some(body)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            refused,
            json!({"code": "ALREADY_EXISTS", "message": "Cluster with given name already exists", "details": []})
        );
        let stats = sim.stats();
        assert_eq!(
            (stats["creates"].clone(), stats["rejectedCreates"].clone()),
            (json!(1), json!(1))
        );
    }

    #[tokio::test]
    async fn start_faults_refuse_or_lose_the_answer() {
        let sim = Sim::start().await;
        // 429: not processed, nothing is created; the same request again is.
        let body = json!({"cluster": {"name": "c1"}, "simulate": {"durationSeconds": 30,
            "startFaults": [{"kind": "status", "status": 429}]}});
        let answer = sim.call("POST", "v1/clusters", Some(body.clone())).await;
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            answer.headers()["ratelimit"],
            "limit=100,remaining=0,reset=1"
        );
        let refused: Value = answer.json().await.unwrap();
        assert_eq!(refused["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(
            refused["details"][0]["reason"],
            "REASON_RATE_LIMIT_EXCEEDED"
        );
        assert_eq!(sim.get("v1/operations").await.1["operations"], json!([]));
        assert_eq!(sim.stats()["creates"], 0);
        let (status, _) = sim.json("POST", "v1/clusters", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED);

        // reset: processed, the answer is lost; the operator finds it again by name.
        let start: StartRequest = serde_json::from_value(json!({
            "path": "v1/clusters",
            "body": {"cluster": {"name": "c2"}, "simulate": {"durationSeconds": 30,
                     "startFaults": [{"kind": "reset"}]}},
        }))
        .unwrap();
        let d = dialect(Protocol::Redpanda);
        let sent_at = jiff::Timestamp::now();
        let request = d.start_request(&start, "uid");
        assert!(
            upstream().send(&sim.base, &request).await.is_err(),
            "the answer is lost"
        );
        assert_eq!(sim.stats()["creates"], 2);
        let mut next = d.recovery_request(&start, sent_at);
        let mut candidate = None;
        let found = loop {
            let request = next.take().expect("a look-up request");
            let answer = upstream().send(&sim.base, &request).await.unwrap();
            match d.read_recovery(&start, sent_at, candidate.as_deref(), &request, &answer) {
                Recovery::Found(started) => break started,
                Recovery::Next(request, found) => {
                    next = Some(request);
                    candidate = found;
                }
                other => panic!("{other:?}"),
            }
        };
        let listed = sim
            .get("v1/operations?filter.type_in=TYPE_CREATE_CLUSTER")
            .await
            .1;
        assert_eq!(
            found.handle.id.as_deref(),
            listed["operations"][1]["id"].as_str()
        );
        assert_eq!(sim.stats()["creates"], 2, "nothing was sent twice");
    }

    #[tokio::test]
    async fn get_faults_are_answered_in_the_apis_envelope() {
        let sim = Sim::start().await;
        let body = json!({"cluster": {"name": "c1"}, "simulate": {"durationSeconds": 30,
            "faults": [{"kind": "status", "status": 503}, {"kind": "notFound"},
                       {"kind": "notJson"}, {"kind": "status", "status": 429}]}});
        let (_, created) = sim.json("POST", "v1/clusters", Some(body)).await;
        let path = format!(
            "v1/operations/{}",
            created["operation"]["id"].as_str().unwrap()
        );
        let (status, unavailable) = sim.get(&path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unavailable,
            json!({"code": "UNAVAILABLE", "message": "simulated fault: HTTP 503", "details": []})
        );
        let (status, missing) = sim.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            missing,
            json!({"code": "NOT_FOUND", "message": "Operation not found", "details": []})
        );
        let page = sim.call("GET", &path, None).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.unwrap().starts_with("<html>"));
        let throttled = sim.call("GET", &path, None).await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(throttled.headers().contains_key("ratelimit"));
        let (status, op) = sim.get(&path).await;
        assert_eq!(
            (status, op["operation"]["state"].clone()),
            (StatusCode::OK, json!("STATE_IN_PROGRESS"))
        );
        let (status, unknown) = sim.get("v1/operations/nope").await;
        assert_eq!(
            (status, unknown["code"].clone()),
            (StatusCode::NOT_FOUND, json!("NOT_FOUND"))
        );
    }

    #[tokio::test]
    async fn operations_are_listed_by_type_state_and_resource() {
        let sim = Sim::start().await;
        let cluster =
            |name: &str, simulate: Value| json!({"cluster": {"name": name}, "simulate": simulate});
        let (_, running) = sim
            .json(
                "POST",
                "v1/clusters",
                Some(cluster("c1", json!({"durationSeconds": 30}))),
            )
            .await;
        let (_, network) = sim
            .json(
                "POST",
                "v1/networks",
                Some(json!({"network": {"name": "n1"}, "simulate": {"durationSeconds": 0}})),
            )
            .await;
        let (_, failed) = sim
            .json(
                "POST",
                "v1/clusters",
                Some(cluster(
                    "c2",
                    json!({"durationSeconds": 0, "outcome": "error"}),
                )),
            )
            .await;
        let id = |v: &Value| v["operation"]["id"].as_str().unwrap().to_owned();
        let (status, all) = sim.get("v1/operations").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            ids(&all, "operations"),
            [id(&running), id(&network), id(&failed)],
            "creation order"
        );
        assert_eq!(all["next_page_token"], "");
        let clusters = sim
            .get("v1/operations?filter.type_in=TYPE_CREATE_CLUSTER")
            .await
            .1;
        assert_eq!(ids(&clusters, "operations"), [id(&running), id(&failed)]);
        let both = sim
            .get("v1/operations?filter.type_in=TYPE_CREATE_CLUSTER&filter.type_in=TYPE_CREATE_NETWORK")
            .await
            .1;
        assert_eq!(both["operations"].as_array().map(Vec::len), Some(3));
        let by_state = sim.get("v1/operations?filter.state=STATE_FAILED").await.1;
        assert_eq!(ids(&by_state, "operations"), [id(&failed)]);
        let by_state = sim
            .get("v1/operations?filter.state=STATE_IN_PROGRESS")
            .await
            .1;
        assert_eq!(ids(&by_state, "operations"), [id(&running)]);
        let resource = network["operation"]["resource_id"].as_str().unwrap();
        let by_resource = sim
            .get(&format!("v1/operations?filter.resource_id={resource}"))
            .await
            .1;
        assert_eq!(ids(&by_resource, "operations"), [id(&network)]);
        let (status, refused) = sim.get("v1/operations?filter.type_in=TYPE_BAKE_CAKE").await;
        assert_eq!(
            (status, refused["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("INVALID_ARGUMENT"))
        );
        let (status, _) = sim.get("v1/operations?filter.state=STATE_DONE").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn pages_follow_the_token_until_it_is_empty_and_old_tokens_expire() {
        let sim = Sim::start().await;
        for i in 0..5 {
            let body =
                json!({"cluster": {"name": format!("c{i}")}, "simulate": {"durationSeconds": 30}});
            sim.json("POST", "v1/clusters", Some(body)).await;
        }
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let (status, page) = sim
                .get(&format!("v1/operations?page_size=2&page_token={token}"))
                .await;
            assert_eq!(status, StatusCode::OK);
            pages += 1;
            seen.extend(ids(&page, "operations"));
            token = page["next_page_token"].as_str().unwrap().to_owned();
            if token.is_empty() {
                break;
            }
        }
        assert_eq!((pages, seen.len()), (3, 5));
        let all = ids(&sim.get("v1/operations").await.1, "operations");
        assert_eq!(seen, all);
        // The same for the resources, by name.
        let page = sim
            .get("v1/clusters?filter.name_contains=c&page_size=4")
            .await
            .1;
        assert_eq!(page["clusters"].as_array().map(Vec::len), Some(4));
        let token = page["next_page_token"].as_str().unwrap();
        let rest = sim
            .get(&format!(
                "v1/clusters?filter.name_contains=c&page_size=4&page_token={token}"
            ))
            .await
            .1;
        assert_eq!(rest["clusters"][0]["name"], "c4");
        assert_eq!(rest["next_page_token"], "");
        // A token of another list, a made-up one, and one older than a minute are refused.
        let (status, _) = sim.get(&format!("v1/operations?page_token={token}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = sim.get("v1/operations?page_token=abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let old = encode_token("operations", 0, sim.state.now_ms() - 61_000);
        let (status, expired) = sim.get(&format!("v1/operations?page_token={old}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(expired["code"], "INVALID_ARGUMENT");
        assert!(
            expired["message"].as_str().unwrap().contains("expired"),
            "{expired}"
        );
        let fresh = encode_token("operations", 0, sim.state.now_ms() - 59_000);
        assert_eq!(
            sim.get(&format!("v1/operations?page_token={fresh}"))
                .await
                .0,
            StatusCode::OK
        );
    }

    #[test]
    fn the_page_size_is_capped_to_100() {
        let params = vec![("page_size".to_owned(), "1000".to_owned())];
        assert_eq!(
            super::Paging::read(&params, "operations", 0).map(|p| p.size),
            Ok(100)
        );
        let params = vec![("page_size".to_owned(), "7".to_owned())];
        assert_eq!(
            super::Paging::read(&params, "operations", 0).map(|p| p.size),
            Ok(7)
        );
        let params = vec![("page_size".to_owned(), "x".to_owned())];
        assert!(super::Paging::read(&params, "operations", 0).is_err());
    }

    fn upstream() -> Upstream {
        Upstream::new(Duration::from_secs(10), 1 << 20).unwrap()
    }

    /// The operator starts a cluster and reads its 202.
    #[tokio::test]
    async fn the_dialect_reads_the_start_answer() {
        let sim = Sim::start().await;
        let start: StartRequest = serde_json::from_value(json!({
            "path": "v1/clusters",
            "body": {"cluster": {"name": "c1"}, "simulate": {"durationSeconds": 30}},
        }))
        .unwrap();
        let d = dialect(Protocol::Redpanda);
        let request = d.start_request(&start, "uid");
        let answer = upstream().send(&sim.base, &request).await.unwrap();
        let StartOutcome::Started(started) = d.read_start(&request, &answer) else {
            panic!("not started")
        };
        assert_eq!(started.observation.state, UpstreamState::Running);
        assert!(started.handle.id.is_some());
        assert_eq!(
            started.observation.resource_id.as_ref().map(String::len),
            Some(20)
        );
    }
}
