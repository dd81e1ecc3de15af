//! `OperationProvider` and `ClusterOperationProvider`: where an upstream API lives and how to talk to it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::auth::{AuthSpec, TlsSpec};
use super::operation::PollingSpec;
use super::schema;

/// The wire protocol an upstream speaks for its long-running operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Google AIP-151 `google.longrunning.Operation` (`name`, `done`, `error`, `response`, `metadata`).
    Google,
    /// Google Kubernetes Engine (`container.googleapis.com`) operations: `status`
    /// PENDING/RUNNING/ABORTING/DONE, `error` (a `google.rpc.Status`), `progress.metrics`,
    /// polled at their `selfLink`'s path under `baseURL`, cancelled with `:cancel`.
    Gke,
    /// Redpanda Cloud control plane (`{"operation": {id, state, error, resource_id, response}}`).
    Redpanda,
    /// Compute Engine / Deployment Manager operations (`status` PENDING/RUNNING/DONE, `progress`,
    /// `error.errors[]`, `httpErrorStatusCode`), polled at their `selfLink` (or long-polled at
    /// `selfLink/wait` with `compute.longPoll`).
    Compute,
    /// Azure Resource Manager: `Azure-AsyncOperation` / `Operation-Location` / `Location`
    /// headers or the resource's `provisioningState`, `percentComplete`, `Retry-After`.
    Azure,
    /// AWS Cloud Control API (`CreateResource`, `GetResourceRequestStatus`,
    /// `CancelResourceRequest`; a `ProgressEvent` with `OperationStatus` and `RequestToken`).
    AwsCloudControl,
    /// Any other HTTP API: CEL expressions in `spec.http` find the operation in the start
    /// response and decide, from each poll response, whether it succeeded or failed.
    Http,
}

impl Protocol {
    /// The protocol's name as written in the spec; also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Google => "google",
            Protocol::Gke => "gke",
            Protocol::Redpanda => "redpanda",
            Protocol::Compute => "compute",
            Protocol::Azure => "azure",
            Protocol::AwsCloudControl => "awsCloudControl",
            Protocol::Http => "http",
        }
    }
}

/// Where an upstream API lives, which protocol it speaks, and how operations using it are polled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("self.protocol == 'http' ? has(self.http) : !has(self.http)")
    .message("spec.http is required when protocol is http (its CEL expressions read the upstream's answers), and only allowed then"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.google) || self.protocol == 'google'")
    .message("spec.google holds options of the google protocol; remove it or set protocol: google"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.list) || self.protocol in ['google', 'redpanda', 'compute', 'awsCloudControl']")
    .message("spec.list: only the google (AIP-151 ListOperations), redpanda (GET /v1/operations), compute (the zonal, regional, global or aggregated operations list) and awsCloudControl (ListResourceRequests) protocols are observed by listing; azure has no list-operations API, http none that can be expressed, and gke's is not used; remove spec.list"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.list) || self.protocol != 'compute' || (has(self.list.path) && self.list.path.endsWith('/operations'))")
    .message("spec.list.path is required with protocol compute: the operations collection, e.g. projects/my-project/zones/us-central1-a/operations, projects/my-project/regions/us-central1/operations, projects/my-project/global/operations or projects/my-project/aggregated/operations"))]
#[x_kube(validation = kube::core::Rule::new(AWS_LIST_RULE)
    .message("spec.list with protocol awsCloudControl: no list.path (ListResourceRequests is a POST to baseURL), and list.query may only hold OperationStatuses (comma-separated PENDING, IN_PROGRESS, SUCCESS, FAILED, CANCEL_IN_PROGRESS, CANCEL_COMPLETE) and Operations (comma-separated CREATE, UPDATE, DELETE), e.g. OperationStatuses: PENDING,IN_PROGRESS"))]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The API root every request goes to, e.g. `https://example.googleapis.com/v1`. Start paths
    /// and operation names are resolved against it; no request with this provider leaves its
    /// origin (scheme, host and port).
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("baseURL must be an absolute http:// or https:// URL, e.g. https://api.example.com/v1"))]
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// The wire protocol of the upstream's long-running operations.
    pub protocol: Protocol,
    /// Default poll schedule for the operations that use this provider; each field may be
    /// overridden by the operation's own `spec.polling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollingSpec>,
    /// Options of the `google` protocol; only allowed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleOptions>,
    /// Options of the `compute` protocol (ignored by the other protocols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeOptions>,
    /// Observe the running operations of this provider by listing them — one request per page
    /// of up to 100, every `polling.initialInterval` — instead of one request per operation.
    /// An operation missing from the list is read once by itself (it may have finished); a list
    /// the upstream refuses falls back to one request per operation (the `Ready` condition
    /// says so). `google` (AIP-151 `ListOperations`), `redpanda` (`GET /v1/operations`),
    /// `compute` (a zonal, regional, global or aggregated operations list) and
    /// `awsCloudControl` (`ListResourceRequests`) only: `azure` has no list-operations API,
    /// `http` none that can be expressed here, and `gke`'s (`operations.list`) is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ListSpec>,
    /// The `http` protocol's CEL expressions; required with `protocol: http`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOptions>,
    /// How requests are authenticated; absent: no credentials are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Which certificates the endpoints are trusted with, and an optional client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Allow `baseURL` and token endpoints on loopback and private addresses (127.0.0.0/8,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, ::1, fc00::/7), checked after
    /// DNS resolution. Only on a `ClusterOperationProvider` (a cluster admin's decision; an
    /// `OperationProvider` refuses it: the operator's `--allow-private-networks` opens them for
    /// every provider). Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10,
    /// fd00:ec2::254, 100.100.100.200, …) are refused whatever this says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_networks: bool,
    /// The most requests per second sent to this upstream (starts, polls and cancels of every
    /// operation using this provider together), as a token bucket. Absent: no limit. A request
    /// over the limit is not sent late in a loop: its operation waits, without holding a worker,
    /// until its turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// What `spec.list` may say with protocol `awsCloudControl`: no `path`, and a `query` of
/// `OperationStatuses` and `Operations`, each a comma-separated list of the API's enum values.
const AWS_LIST_RULE: &str = "!has(self.list) || self.protocol != 'awsCloudControl' || \
    (!has(self.list.path) && (!has(self.list.query) || \
    (self.list.query.all(k, k in ['OperationStatuses', 'Operations']) && \
    (!('OperationStatuses' in self.list.query) || self.list.query['OperationStatuses'].matches('^(PENDING|IN_PROGRESS|SUCCESS|FAILED|CANCEL_IN_PROGRESS|CANCEL_COMPLETE)(,(PENDING|IN_PROGRESS|SUCCESS|FAILED|CANCEL_IN_PROGRESS|CANCEL_COMPLETE))*$')) && \
    (!('Operations' in self.list.query) || self.list.query['Operations'].matches('^(CREATE|UPDATE|DELETE)(,(CREATE|UPDATE|DELETE))*$')))))";

/// How a provider's operations are listed (`spec.list`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListSpec {
    /// The operations collection, relative to `baseURL`. Default: `operations` (google, AIP-151
    /// `ListOperations`; services that rebind it name theirs, e.g.
    /// `projects/my-project/locations/us-central1/operations`), `v1/operations` (redpanda).
    /// Required with compute: `projects/P/zones/Z/operations`, `projects/P/regions/R/operations`,
    /// `projects/P/global/operations` or `projects/P/aggregated/operations` (every scope of
    /// the project). Refused with awsCloudControl (`ListResourceRequests` is a POST to
    /// `baseURL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('://') && !self.startsWith('/') && !self.contains('..')")
        .message("list.path must be a path relative to baseURL, e.g. operations"))]
    pub path: Option<String>,
    /// Query parameters sent with every page: the API's own filter, e.g. google
    /// `filter: "done = false"` (AIP-160; what a service accepts is its own), redpanda
    /// `filter.state: STATE_IN_PROGRESS` or `filter.type_in: TYPE_CREATE_CLUSTER`, compute
    /// `filter: "status != DONE"` (Compute's filter syntax). With awsCloudControl these are
    /// the `ResourceRequestStatusFilter` of the request body instead, each a comma-separated
    /// list: `OperationStatuses: PENDING,IN_PROGRESS` and `Operations: CREATE,UPDATE` (no other
    /// key). Leave finished operations in the list where that is cheap: their final state then
    /// comes with the page.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": 1024}))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, !(k in ['pageSize', 'pageToken', 'page_size', 'page_token', 'maxResults', 'MaxResults', 'NextToken']))")
        .message("list.query may not set the page size or token: use list.pageSize (the operator sends pageSize, page_size, maxResults or MaxResults, and the page token, itself)"))]
    pub query: std::collections::BTreeMap<String, String>,
    /// Operations per page, 1 to 100 (sent as `pageSize`, `page_size`, compute `maxResults`,
    /// awsCloudControl `MaxResults`). Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    // The API server knows int32 and int64, not schemars' uint16 (kubectl explain warns).
    #[schemars(extend("format" = "int32"))]
    pub page_size: Option<u16>,
}

impl ListSpec {
    /// The page size, defaulted.
    pub fn page_size(&self) -> u16 {
        self.page_size.unwrap_or(100).clamp(1, 100)
    }
}

/// A token bucket: `requestsPerSecond` on average, up to `burst` at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("self.requestsPerSecond > 0.0 && self.requestsPerSecond <= 100000.0")
    .message("rateLimit.requestsPerSecond must be more than 0 and at most 100000, e.g. 10 or 0.5"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Average requests per second (a fraction is allowed: 0.5 is one request every 2 s).
    pub requests_per_second: f64,
    /// Requests that may be sent at once after a quiet period; default: `requestsPerSecond`
    /// rounded up (at least 1).
    #[x_kube(validation = kube::core::Rule::new("self >= 1").message("rateLimit.burst must be at least 1"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The API server knows int32 and int64, not schemars' uint32 (kubectl explain warns).
    #[schemars(extend("format" = "int64"))]
    pub burst: Option<u32>,
}

impl RateLimitSpec {
    /// The burst, defaulted.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.requests_per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
            .max(1)
    }
}

/// The rule for a query parameter that carries the request id.
const QUERY_PARAMETER_RULE: &str = "self.matches('^[A-Za-z_][A-Za-z0-9_.]*$')";

/// Options of the `google` protocol.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleOptions {
    /// The query parameter that carries the operation's request id (its idempotency key, AIP-155)
    /// on the start request, e.g. `requestId`. Set it only for APIs whose create methods declare
    /// that parameter (AlloyDB, Network Connectivity, Datastream, …): Google's front ends refuse a query
    /// parameter the method does not declare with `400 Cannot bind query parameter`, and
    /// Service Management, GKE and Deployment Manager declare none. Absent (the default): no
    /// request id is sent, so a start whose answer is lost (a timeout, a 500, a restart between
    /// sending and recording) is not resent — it could create a second operation — and the
    /// operation fails with reason `StartOutcomeUnknown`, saying how to adopt the one that may
    /// exist. A 429 or 503 with `Retry-After` is resent either way: the upstream did not process it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(QUERY_PARAMETER_RULE)
        .message("requestIdParameter must be a query parameter name, e.g. requestId"))]
    pub request_id_parameter: Option<String>,
}

/// Options of the `compute` protocol.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeOptions {
    /// The query parameter that carries the operation's request id (its idempotency key) on the
    /// start request: `requestId` for Compute Engine, whose insert, delete and update methods
    /// declare it. Absent (the default, right for Deployment Manager, whose methods declare no
    /// such parameter and refuse one they do not know): no request id is sent, and a start whose
    /// answer is lost fails with reason `StartOutcomeUnknown` instead of being resent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(QUERY_PARAMETER_RULE)
        .message("requestIdParameter must be a query parameter name, e.g. requestId"))]
    pub request_id_parameter: Option<String>,
    /// Poll with `POST {selfLink}/wait` instead of `GET {selfLink}`: the upstream holds each
    /// answer until the operation is done or its own deadline passes (Compute Engine: 2
    /// minutes), and the next wait follows at once (at most one a second; after a failed one,
    /// the poll schedule's backoff), so completion is seen within one round trip while far
    /// fewer requests are sent. Each wait occupies one of the operator's `--concurrency` workers while it is held,
    /// and the operator's `--request-timeout` must be longer than the upstream's deadline (for
    /// Compute Engine, e.g. `--request-timeout=150s`): a wait cut short by the timeout counts as
    /// a failed poll. Deployment Manager has no `wait`; leave this off for it.
    #[serde(default)]
    pub long_poll: bool,
}

/// Options of the `http` protocol: CEL expressions (the Kubernetes expression language) over an
/// HTTP response, bound as `status` (the status code, an int), `headers` (a map from lower-case
/// header names to values; repeated headers joined by `, `) and `body` (the parsed JSON, or the
/// raw text when it is not JSON). An expression that does not compile is refused at apply time
/// when the operator's admission webhook is installed, and otherwise keeps the operations that
/// use this provider `Pending` with the compile error in their conditions. An expression that
/// fails while an answer is read (a missing field, a wrong type) makes that poll a failed poll,
/// named in the operation's conditions; polling goes on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpOptions {
    /// Over the start response: where the operation is polled, as a string: a URL on the
    /// `baseURL`'s origin, an absolute path (`/jobs/1`, on that origin, as in a `Location`
    /// header) or a path relative to `baseURL`. E.g. `headers['location']` or
    /// `body.links.status`. Becomes the operation's `status.operation.url`.
    #[schemars(length(min = 1, max = 4096))]
    pub operation_from: String,
    /// Over each poll response: true when the operation has succeeded, e.g.
    /// `status == 200 && body.status == 'done'`. Read after `failed`.
    #[schemars(length(min = 1, max = 4096))]
    pub succeeded: String,
    /// Over each poll response: true when the operation has failed, e.g.
    /// `body.status == 'error'`. Read first: when both are true, the operation failed.
    /// Responses other than 2xx are read too (e.g. `status == 410`); when neither expression is
    /// true for one, it is a failed poll (transient, or "not found" for 404 and 410).
    #[schemars(length(min = 1, max = 4096))]
    pub failed: String,
    /// Over each 2xx poll response: percent complete, a number (clamped to 0-100), e.g.
    /// `body.percent`. A missing field or `null` means no progress is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub progress: Option<String>,
    /// Over the poll response that succeeded: the operation's `status.result` (any JSON), e.g.
    /// `body.output`. Absent: the whole body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub result: Option<String>,
    /// Over the poll response that failed: the failure message, a string, e.g.
    /// `body.error.message`. Absent, or failing to evaluate: a generic message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub message: Option<String>,
    /// Over each 2xx poll response: the upstream's own state word for `status.upstreamState`,
    /// a string, e.g. `body.status`. A missing field or `null` leaves it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub state: Option<String>,
    /// A request header that carries the operation's request id as an idempotency key, e.g.
    /// `Idempotency-Key`. When set, a start whose answer was lost (a crash, a timeout) is
    /// resent with the same key; when absent, the start is not idempotent and a lost answer
    /// stops the operation with reason `StartOutcomeUnknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[!#$%&\\'*+.^_`|~0-9A-Za-z-]+$')")
        .message("idempotencyKeyHeader must be an HTTP header name, e.g. Idempotency-Key"))]
    pub idempotency_key_header: Option<String>,
}

/// A namespaced upstream API, usable by `LongRunningOperation`s of the same namespace.
// clippy mistakes two printcolumns with the same `type_` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lro.dev",
    version = "v1alpha1",
    kind = "OperationProvider",
    namespaced,
    status = "OperationProviderStatus",
    shortname = "lroprovider",
    category = "lro-operator",
    doc = "An upstream API that runs long-running operations: its base URL and protocol.",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseURL"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("!has(self.allowPrivateNetworks) || !self.allowPrivateNetworks")
    .message("allowPrivateNetworks is a cluster admin's decision: set it on a ClusterOperationProvider, or run the operator with --allow-private-networks"))]
pub struct OperationProviderSpec {
    /// The upstream API.
    #[serde(flatten)]
    pub provider: ProviderSpec,
}

/// A cluster-wide upstream API, usable by `LongRunningOperation`s of the namespaces it admits.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lro.dev",
    version = "v1alpha1",
    kind = "ClusterOperationProvider",
    status = "OperationProviderStatus",
    shortname = "clusterlroprovider",
    category = "lro-operator",
    doc = "A cluster-wide upstream API that runs long-running operations.",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseURL"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperationProviderSpec {
    /// The upstream API.
    #[serde(flatten)]
    pub provider: ProviderSpec,
    /// Namespaces whose operations may use this provider, by label (e.g. `matchLabels:
    /// {kubernetes.io/metadata.name: team-a}`). Absent: none (closed until an admin names them);
    /// `{}`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
}

/// What the operator found out about a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationProviderStatus {
    /// `Ready` when the configuration is valid and credentials resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
