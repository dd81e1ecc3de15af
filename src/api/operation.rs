//! `LongRunningOperation`: one upstream long-running operation, started or adopted.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::duration::DURATION_RULE;
use super::schema;

/// One upstream long-running operation: started by the operator (`spec.start`) or adopted
/// (`spec.operation`), polled until done, with phase, progress and result in `status`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lro.dev",
    version = "v1alpha1",
    kind = "LongRunningOperation",
    namespaced,
    status = "LongRunningOperationStatus",
    shortname = "lro",
    shortname = "lros",
    category = "lro-operator",
    doc = "A cloud long-running operation, started or adopted, polled until it is done.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress"),
    printcolumn(name = "Upstream", type_ = "string", json_path = ".status.upstreamState"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Operation",
        type_ = "string",
        // The first of the handle's name, id and url that is set (a JSONPath union).
        json_path = ".status.operation['name','id','url']",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    validation = kube::core::Rule::new(
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || (has(self.spec.start) == has(oldSelf.spec.start) && has(self.spec.operation) == has(oldSelf.spec.operation) && (!has(self.spec.start) || self.spec.start == oldSelf.spec.start) && (!has(self.spec.operation) || self.spec.operation == oldSelf.spec.operation))"
    ).message("spec.start and spec.operation cannot change once the operation has begun; create a new LongRunningOperation instead")
)]
#[x_kube(validation = kube::core::Rule::new("has(self.start) != has(self.operation)")
    .message("set exactly one of spec.start (to start a new upstream operation) or spec.operation (to adopt an existing one)"))]
#[serde(rename_all = "camelCase")]
pub struct LongRunningOperationSpec {
    /// The provider (upstream API) this operation runs on.
    pub provider_ref: ProviderRef,
    /// The request that starts the operation; the handle is taken from its response.
    /// Exactly one of `start` and `operation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartRequest>,
    /// An existing upstream operation to adopt. Exactly one of `start` and `operation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
    /// The poll schedule; unset fields default from the provider, then from the operator's flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollingSpec>,
    /// Set to true to cancel the upstream operation (without deleting this object).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// What deleting this object does to an upstream operation still in flight: `Orphan` (the
    /// default) leaves it running; `Cancel` cancels it and waits for the upstream to confirm
    /// before the object goes away (a finalizer), unless the protocol cannot cancel.
    #[serde(default, skip_serializing_if = "OnDelete::is_orphan")]
    pub on_delete: OnDelete,
    /// Names of other `LongRunningOperation`s in the same namespace that must be `Succeeded`
    /// before this one starts. If one fails, is cancelled or is blocked, this one is `Blocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Parts of the result to publish, once the operation has succeeded, into a ConfigMap and/or
    /// a Secret owned by this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
}

/// Where the parts of a succeeded operation's result are published.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// A ConfigMap (same namespace) written with these keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<OutputTarget>,
    /// A Secret (same namespace) written with these keys; its values never appear in the
    /// operation's status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<OutputTarget>,
}

/// One ConfigMap or Secret written from the result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputTarget {
    /// The object's name.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("outputs name must not be empty"))]
    pub name: String,
    /// Each key, with a CEL expression over `result` (the operation's result) and `status` giving
    /// its value; a string is written as is, anything else as JSON.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// The start request after templating: what was sent (or will be resent) upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderedStart {
    /// The rendered `start.path`.
    pub path: String,
    /// The rendered `start.query`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// The rendered `start.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub body: Option<serde_json::Value>,
}

/// What deleting a `LongRunningOperation` does to its upstream operation.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum OnDelete {
    /// Leave the upstream operation running.
    #[default]
    Orphan,
    /// Cancel the upstream operation, and keep the object until the upstream confirms.
    Cancel,
}

impl OnDelete {
    fn is_orphan(&self) -> bool {
        *self == OnDelete::Orphan
    }
}

/// Which provider an operation uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// `OperationProvider` (same namespace, the default) or `ClusterOperationProvider`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// The provider's name.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("providerRef.name must name an OperationProvider"))]
    pub name: String,
}

/// The kinds a `providerRef` may point at.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ProviderKind {
    /// A namespaced provider in the operation's own namespace.
    #[default]
    OperationProvider,
    /// A cluster-scoped provider.
    ClusterOperationProvider,
}

/// An HTTP method for the start request.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// HTTP POST (the default).
    #[default]
    Post,
    /// HTTP PUT.
    Put,
    /// HTTP PATCH.
    Patch,
    /// HTTP DELETE.
    Delete,
}

impl HttpMethod {
    /// The method as reqwest knows it.
    pub fn as_reqwest(self) -> reqwest::Method {
        match self {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        }
    }
}

/// The request that starts an upstream operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// HTTP method; POST by default.
    #[serde(default)]
    pub method: HttpMethod,
    /// Path relative to the provider's `baseURL`, e.g. `projects/demo/clusters`.
    #[x_kube(validation = kube::core::Rule::new("self != '' && !self.contains('://') && !self.startsWith('//')")
        .message("start.path must be a path relative to the provider's baseURL, e.g. projects/demo/clusters, not a full URL"))]
    pub path: String,
    /// Query parameters added to the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Extra request headers (at most 64). Not `Host`, `Authorization`, `Cookie`, hop-by-hop
    /// headers (`Connection`, `Transfer-Encoding`, …), `Proxy-*`, `Forwarded`, `Via` or
    /// `X-Forwarded-*`: the provider's `baseURL` chooses the host, its `spec.auth` the credentials.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = start_headers_rule())]
    pub headers: BTreeMap<String, String>,
    /// The JSON request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub body: Option<serde_json::Value>,
}

/// The admission rule of `spec.start.headers`: the names [`super::forbidden_header`] refuses.
fn start_headers_rule() -> kube::core::Rule {
    let names = super::FORBIDDEN_HEADERS
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let prefixes = super::FORBIDDEN_HEADER_PREFIXES
        .iter()
        .map(|p| format!("k.lowerAscii().startsWith('{p}')"))
        .collect::<Vec<_>>()
        .join(" || ");
    kube::core::Rule::new(format!(
        "self.all(k, !(k.lowerAscii() in [{names}]) && !({prefixes}))"
    ))
    .message(
        "start.headers may not set Host, Authorization, Cookie, hop-by-hop (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Content-Length, Expect), Proxy-*, Forwarded, Via or X-Forwarded-* headers: the provider's baseURL chooses the host and its spec.auth the credentials",
    )
}

/// An existing upstream operation to adopt: exactly one of its `name`, `id` or `url`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("[has(self.name), has(self.id), has(self.url)].filter(x, x).size() == 1")
    .message("set exactly one of operation.name (google), operation.id or operation.url"))]
#[serde(rename_all = "camelCase")]
pub struct OperationRef {
    /// The operation's name as the upstream returned it (Google: `operations/…` or
    /// `projects/…/operations/…`), resolved against the provider's `baseURL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub name: Option<String>,
    /// The operation's id (protocols that identify operations by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub id: Option<String>,
    /// The operation's full URL: under the provider's `baseURL` (Azure: anywhere on its origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
}

/// How often the operation is polled, and for how long.
///
/// After `t` seconds without news from the upstream the next poll waits
/// `min(maxInterval, initialInterval + (multiplier - 1) * t)`, plus or minus `jitter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("!has(self.initialInterval) || !has(self.maxInterval) || !self.initialInterval.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || !self.maxInterval.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') || duration(self.maxInterval) >= duration(self.initialInterval)")
    .message("polling.maxInterval must not be shorter than polling.initialInterval"))]
#[serde(rename_all = "camelCase")]
pub struct PollingSpec {
    /// The first wait between polls, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message("initialInterval must be a positive duration such as 500ms, 10s, 5m or 1h30m"))]
    pub initial_interval: Option<String>,
    /// The longest wait between polls, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message("maxInterval must be a positive duration such as 500ms, 10s, 5m or 1h30m"))]
    pub max_interval: Option<String>,
    /// How fast the wait grows while nothing changes (1 = fixed interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub multiplier: Option<f64>,
    /// Random spread of each wait, as a fraction (0.1 = ±10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub jitter: Option<f64>,
    /// Deadline for the whole operation, from its start; when it passes the operation is
    /// `Failed` with reason `Timeout`. Absent: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message("timeout must be a positive duration such as 500ms, 10s, 5m or 1h30m"))]
    pub timeout: Option<String>,
}

/// Where an operation is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting for its dependencies or its first poll.
    Pending,
    /// The start request's intent is recorded; the upstream handle is not yet known.
    Starting,
    /// The upstream operation is in flight.
    Running,
    /// The upstream operation finished successfully.
    Succeeded,
    /// The upstream operation failed, was rejected, or timed out.
    Failed,
    /// A cancel was sent; waiting for the upstream to confirm.
    Cancelling,
    /// The upstream operation was cancelled.
    Cancelled,
    /// A dependency failed; this operation will not start.
    Blocked,
}

impl Phase {
    /// Terminal phases never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Cancelled | Phase::Blocked
        )
    }

    /// The phase's name as written in status; also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Cancelling => "Cancelling",
            Phase::Cancelled => "Cancelled",
            Phase::Blocked => "Blocked",
        }
    }
}

/// The persisted handle of the upstream operation: what a restarted operator polls.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationHandle {
    /// The operation's name (Google: `operations/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The operation's id, for protocols that use ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The URL polled for the operation's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The idempotency key sent with the start request; a resend after a crash reuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How `url` is read, for protocols with several ways to poll (Azure: `AzureAsyncOperation`,
    /// `OperationLocation`, `Location` or `Body`, chosen from the start response). Absent: the
    /// protocol's default (Azure: told apart by each answer's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where the result is read once the operation has succeeded, when the operation's own
    /// answers do not carry it (Azure: the resource a PUT or PATCH created or changed).
    #[serde(default, rename = "resultURL", skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
}

/// Why an operation failed, normalised across protocols.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationError {
    /// The `google.rpc.Code` name, e.g. `FAILED_PRECONDITION`, `CANCELLED`, `UNKNOWN`.
    pub code: String,
    /// The upstream's own error code, verbatim (e.g. the numeric rpc code, a Compute error code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// The HTTP status that carried the error, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// The upstream's message, naming the innermost cause it reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The structured causes the upstream gave (Google `google.rpc.Status.details`, Compute
    /// `error.errors[]` and `errorDetails`, ARM `error.details[]`, Cloud Control's `ErrorCode`,
    /// warnings), outermost first; at most 16 entries, each text cut to 512 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub details: Vec<ErrorDetail>,
}

/// One structured cause of an upstream error.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// What kind of cause: a `google.rpc` detail type (`ErrorInfo`, `QuotaFailure`,
    /// `BadRequest`, `PreconditionFailure`, `ResourceInfo`, `Help`, `LocalizedMessage`,
    /// `RetryInfo`, `DebugInfo`), `Error` for an entry of an upstream error list, or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A machine-readable reason or code (ErrorInfo `reason`, an error entry's `code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason's namespace (ErrorInfo `domain`, e.g. `compute.googleapis.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Where: a request field, a quota or precondition subject, a resource name, an ARM `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The description, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Further facts as strings (ErrorInfo `metadata`, quota limits, a help link's `url`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The observed state of a `LongRunningOperation`: the contract other tools read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LongRunningOperationStatus {
    /// Pending, Starting, Running, Succeeded, Failed, Cancelling, Cancelled or Blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The upstream operation's handle, written before anything else once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationHandle>,
    /// Percent complete (0-100) as the upstream reports it; absent when it reports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    /// The upstream's own state word, verbatim (e.g. `RUNNING`, `DONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_state: Option<String>,
    /// The operation's result (Google: its `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub result: Option<serde_json::Value>,
    /// The id or name of the resource the operation created or changed, when the upstream says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Why the operation failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    /// A human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operation was started or adopted (microsecond precision: the timeout counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When the operation reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The last time the upstream said something new; the poll schedule is derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_at: Option<MicroTime>,
    /// The start request as rendered from `spec.start`'s `${…}` templates (path, query, body),
    /// evaluated once before the start; absent when `spec.start` holds no templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_start: Option<RenderedStart>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, following kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}
