//! `OperationProvider` and `ClusterOperationProvider`: where an upstream API lives and how to talk to it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::operation::PollingSpec;
use super::schema;

/// The wire protocol an upstream speaks for its long-running operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Google AIP-151 `google.longrunning.Operation` (`name`, `done`, `error`, `response`, `metadata`).
    Google,
    /// Redpanda Cloud control plane (`{"operation": {id, state, error, resource_id, response}}`).
    Redpanda,
}

impl Protocol {
    /// The protocol's name as written in the spec; also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Google => "google",
            Protocol::Redpanda => "redpanda",
        }
    }
}

/// Where an upstream API lives, which protocol it speaks, and how operations using it are polled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
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
    /// Namespaces whose operations may use this provider, by label. Absent: every namespace.
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
