//! The custom resources of group `lro.dev`, version `v1alpha1`.
//!
//! Types only: no client, no runtime. Every field's doc comment becomes `kubectl explain`.

mod auth;
mod duration;
mod headers;
mod operation;
mod provider;
mod schema;

pub use auth::{
    ApiKeyAuth, AuthSpec, AwsSigV4, AwsWebIdentity, AzureWorkloadIdentity, BasicAuth, CaBundle,
    ClientCertificate, ConfigMapKeyRef, GoogleServiceAccount, GoogleWorkloadIdentity,
    OAuth2ClientCredentials, SecretKeyRef, SecretValue, TlsSpec, WorkloadIdentity,
};
pub use duration::{DurationError, format_duration, parse_duration};
pub use headers::{FORBIDDEN_HEADER_PREFIXES, FORBIDDEN_HEADERS, forbidden_header};
pub use operation::{
    ErrorDetail, HttpMethod, LongRunningOperation, LongRunningOperationSpec,
    LongRunningOperationStatus, OnDelete, OperationError, OperationHandle, OperationRef,
    OutputTarget, Outputs, Phase, PollingSpec, ProviderKind, ProviderRef, RenderedStart,
    StartRequest,
};
pub use provider::{
    ClusterOperationProvider, ClusterOperationProviderSpec, ComputeOptions, GoogleOptions,
    HttpOptions, ListSpec, OperationProvider, OperationProviderStatus, Protocol, ProviderSpec,
    RateLimitSpec,
};

/// The API group of every kind in this crate.
pub const GROUP: &str = "lro.dev";

/// Condition types, following kstatus.
pub mod condition {
    /// True only when the operation succeeded.
    pub const READY: &str = "Ready";
    /// True while the operation is in flight.
    pub const RECONCILING: &str = "Reconciling";
    /// True on a terminal failure, a timeout, a blocked dependency or an invalid spec.
    pub const STALLED: &str = "Stalled";
}

/// Every CRD of this crate, in the order they are written to `crds/`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        unobserved_until_reconciled(LongRunningOperation::crd()),
        OperationProvider::crd(),
        ClusterOperationProvider::crd(),
    ]
}

/// Defaults `status.observedGeneration` to -1, so a new operation reads as not yet observed.
///
/// Without it, an object the operator has not written yet has neither conditions nor
/// `observedGeneration`, and kstatus (Helm 4 `--wait`, Flux) calls it `Current` at once.
fn unobserved_until_reconciled(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|props| props.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": -1})));
        }
    }
    crd
}

/// Every CRD as one multi-document YAML stream, exactly as committed in `crds/`.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
