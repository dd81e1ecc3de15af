//! How a provider authenticates (`spec.auth`) and which TLS it trusts (`spec.tls`).
//!
//! Secret values are never written in these objects: every one is a `secretKeyRef` to a Secret
//! in the provider's namespace (a `ClusterOperationProvider`: the operator's namespace).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the provider's namespace (cluster providers: the operator's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("secretKeyRef.name must name a Secret"))]
    pub name: String,
    /// The key in the Secret's `data`.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("secretKeyRef.key must name a key of the Secret"))]
    pub key: String,
}

/// A key of a ConfigMap in the provider's namespace (cluster providers: the operator's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("configMapKeyRef.name must name a ConfigMap"))]
    pub name: String,
    /// The key in the ConfigMap's `data`.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("configMapKeyRef.key must name a key of the ConfigMap"))]
    pub key: String,
}

/// A secret value: where to read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    /// The Secret key holding the value.
    pub secret_key_ref: SecretKeyRef,
}

/// How requests to the provider are authenticated: exactly one method.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("[has(self.bearerToken), has(self.apiKey), has(self.basic), has(self.oauth2ClientCredentials), has(self.googleServiceAccount), has(self.awsSigV4), has(self.workloadIdentity)].filter(x, x).size() == 1")
    .message("set exactly one of spec.auth.bearerToken, apiKey, basic, oauth2ClientCredentials, googleServiceAccount, awsSigV4 or workloadIdentity"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// `Authorization: Bearer <token>` with a static token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretValue>,
    /// An API key in a header or a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// OAuth 2.0 client credentials (RFC 6749 §4.4), form-encoded as Auth0-style token
    /// endpoints (e.g. Redpanda Cloud) expect; the token is cached and refreshed before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<OAuth2ClientCredentials>,
    /// A Google service-account JSON key: a signed JWT (RS256) is exchanged for an access token
    /// at the key's `token_uri`; the token is cached and refreshed before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_service_account: Option<GoogleServiceAccount>,
    /// AWS Signature Version 4 with an access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "awsSigV4")]
    pub aws_sig_v4: Option<AwsSigV4>,
    /// Keyless: a token of a Kubernetes ServiceAccount (from the API server's TokenRequest),
    /// exchanged for cloud credentials (Google workload identity federation, AWS
    /// `AssumeRoleWithWebIdentity`, Azure workload identity); cached and refreshed before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentity>,
}

impl AuthSpec {
    /// The name of the configured method, as written in the spec (`None` when none is set).
    pub fn method(&self) -> Option<&'static str> {
        [
            (self.bearer_token.is_some(), "bearerToken"),
            (self.api_key.is_some(), "apiKey"),
            (self.basic.is_some(), "basic"),
            (
                self.oauth2_client_credentials.is_some(),
                "oauth2ClientCredentials",
            ),
            (
                self.google_service_account.is_some(),
                "googleServiceAccount",
            ),
            (self.aws_sig_v4.is_some(), "awsSigV4"),
            (self.workload_identity.is_some(), "workloadIdentity"),
        ]
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| name)
    }

    /// How many methods are set (exactly one is valid).
    pub fn methods_set(&self) -> usize {
        [
            self.bearer_token.is_some(),
            self.api_key.is_some(),
            self.basic.is_some(),
            self.oauth2_client_credentials.is_some(),
            self.google_service_account.is_some(),
            self.aws_sig_v4.is_some(),
            self.workload_identity.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// An API key, sent in a header or a query parameter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("has(self.header) != has(self.queryParameter)")
    .message("spec.auth.apiKey: set exactly one of header (e.g. X-API-Key) or queryParameter (e.g. key)"))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// The Secret key holding the API key.
    pub secret_key_ref: SecretKeyRef,
    /// The header that carries the key, e.g. `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9-]+$') && !(self.lowerAscii() in ['host', 'content-length', 'content-type', 'transfer-encoding', 'connection'])")
        .message("spec.auth.apiKey.header must be a header name such as X-API-Key"))]
    pub header: Option<String>,
    /// The query parameter that carries the key, e.g. `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.apiKey.queryParameter must not be empty"))]
    pub query_parameter: Option<String>,
}

/// HTTP basic authentication (`Authorization: Basic base64(username:password)`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Where the user name is.
    pub username: SecretValue,
    /// Where the password is.
    pub password: SecretValue,
}

/// OAuth 2.0 client credentials grant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredentials {
    /// The token endpoint, e.g. `https://auth.example.com/oauth/token`. Only the client
    /// credentials go there; the access token goes only to the provider's `baseURL` origin.
    #[serde(rename = "tokenURL")]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("spec.auth.oauth2ClientCredentials.tokenURL must be an absolute http:// or https:// URL"))]
    pub token_url: String,
    /// Where the client id is.
    #[serde(rename = "clientID")]
    pub client_id: SecretValue,
    /// Where the client secret is.
    pub client_secret: SecretValue,
    /// The `audience` parameter of the token request (Auth0-style endpoints, e.g. Redpanda
    /// Cloud's `cloudv2-production.redpanda.cloud`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Scopes requested (sent space-separated as `scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// A Google service account, by its JSON key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleServiceAccount {
    /// The Secret key holding the service-account JSON key file (`type`, `client_email`,
    /// `private_key`, `token_uri`).
    pub secret_key_ref: SecretKeyRef,
    /// OAuth scopes; default `https://www.googleapis.com/auth/cloud-platform`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// AWS Signature Version 4: every request is signed with the access key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSigV4 {
    /// Where the access key id is (`AKIA…`).
    #[serde(rename = "accessKeyID")]
    pub access_key_id: SecretValue,
    /// Where the secret access key is.
    pub secret_access_key: SecretValue,
    /// Where the session token is, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretValue>,
    /// The AWS region, e.g. `us-east-1`.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.awsSigV4.region must name a region, e.g. us-east-1"))]
    pub region: String,
    /// The signing name of the service, e.g. `cloudcontrolapi`.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.awsSigV4.service must name the service, e.g. cloudcontrolapi"))]
    pub service: String,
}

/// Keyless credentials: the operator requests a short-lived token of a Kubernetes ServiceAccount
/// (TokenRequest, with the audience the cloud requires) and exchanges it for the cloud's
/// credentials. Exactly one of `google`, `aws` or `azure`.
///
/// The ServiceAccount is one of the provider's namespace (a `ClusterOperationProvider`: of the
/// operator's namespace); a provider is admitted only if its author may create tokens for it
/// (the chart's admission policy), and the operator needs `create` on `serviceaccounts/token`
/// there (chart value `operator.workloadIdentity.enabled`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("[has(self.google), has(self.aws), has(self.azure)].filter(x, x).size() == 1")
    .message("spec.auth.workloadIdentity: set exactly one of google, aws or azure (the cloud whose credentials the ServiceAccount token is exchanged for)"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentity {
    /// The ServiceAccount whose token is exchanged, in the provider's namespace (a
    /// `ClusterOperationProvider`: in the operator's namespace). Only a name: a provider cannot
    /// use another namespace's ServiceAccount.
    #[x_kube(validation = kube::core::Rule::new("size(self) <= 253 && self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')")
        .message("spec.auth.workloadIdentity.serviceAccountName must be the name of a ServiceAccount of the provider's namespace (lower-case letters, digits, '-' and '.'), e.g. lro-deployer"))]
    pub service_account_name: String,
    /// Google Cloud workload identity federation: the token is exchanged at the Security Token
    /// Service for a federated access token, optionally then for a service account's
    /// (`generateAccessToken`); that token is the bearer of every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleWorkloadIdentity>,
    /// AWS IAM roles for service accounts: `AssumeRoleWithWebIdentity` gives temporary
    /// credentials that sign every request (SigV4, with `X-Amz-Security-Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsWebIdentity>,
    /// Azure workload identity: the token is the client assertion of a Microsoft Entra
    /// client-credentials grant; the access token is the bearer of every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureWorkloadIdentity>,
}

/// Google Cloud workload identity federation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleWorkloadIdentity {
    /// The workload identity pool provider's full resource name, the audience of the
    /// ServiceAccount token and of the exchange, e.g.
    /// `//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov`.
    #[x_kube(validation = kube::core::Rule::new("self != '' && size(self) <= 1024")
        .message("spec.auth.workloadIdentity.google.audience must name the workload identity pool provider, e.g. //iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov"))]
    pub audience: String,
    /// A Google service account to impersonate (`generateAccessToken`), e.g.
    /// `lro@my-project.iam.gserviceaccount.com`; the federated principal needs
    /// `roles/iam.workloadIdentityUser` on it. Absent: the federated token is used directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[^@/?#\\\\s]+@[^@/?#\\\\s]+$')")
        .message("spec.auth.workloadIdentity.google.serviceAccount must be a service account email, e.g. lro@my-project.iam.gserviceaccount.com"))]
    pub service_account: Option<String>,
    /// OAuth scopes; default `https://www.googleapis.com/auth/cloud-platform`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The Security Token Service's token endpoint; default `https://sts.googleapis.com/v1/token`.
    #[serde(default, rename = "tokenURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("spec.auth.workloadIdentity.google.tokenURL must be an absolute http:// or https:// URL, e.g. https://sts.googleapis.com/v1/token"))]
    pub token_url: Option<String>,
    /// The IAM Service Account Credentials API root (for `serviceAccount`); default
    /// `https://iamcredentials.googleapis.com/v1`.
    #[serde(
        default,
        rename = "iamCredentialsURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("spec.auth.workloadIdentity.google.iamCredentialsURL must be an absolute http:// or https:// URL, e.g. https://iamcredentials.googleapis.com/v1"))]
    pub iam_credentials_url: Option<String>,
}

/// AWS `AssumeRoleWithWebIdentity` (IAM roles for service accounts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsWebIdentity {
    /// The role to assume, e.g. `arn:aws:iam::123456789012:role/lro`; its trust policy must
    /// allow the cluster's OIDC provider and `system:serviceaccount:NAMESPACE:NAME`.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\\\\w+=,.@/-]{1,512}$')")
        .message("spec.auth.workloadIdentity.aws.roleArn must be an IAM role ARN, e.g. arn:aws:iam::123456789012:role/lro"))]
    pub role_arn: String,
    /// `RoleSessionName` (what CloudTrail shows); default `lro-operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[\\\\w+=,.@-]{2,64}$')")
        .message("spec.auth.workloadIdentity.aws.sessionName must be 2 to 64 letters, digits or +=,.@_- characters"))]
    pub session_name: Option<String>,
    /// How long the temporary credentials last, in seconds; default 3600. They are renewed
    /// before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 900 && self <= 43200")
        .message("spec.auth.workloadIdentity.aws.durationSeconds must be between 900 (15 minutes) and 43200 (12 hours); the role's maximum session duration also applies"))]
    pub duration_seconds: Option<i32>,
    /// The AWS region requests are signed for, e.g. `us-east-1` (as `awsSigV4.region`).
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.workloadIdentity.aws.region must name a region, e.g. us-east-1"))]
    pub region: String,
    /// The signing name of the service, e.g. `cloudcontrolapi` (as `awsSigV4.service`).
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.workloadIdentity.aws.service must name the service, e.g. cloudcontrolapi"))]
    pub service: String,
    /// The STS endpoint; default `https://sts.amazonaws.com/` (a regional one, e.g.
    /// `https://sts.us-east-1.amazonaws.com/`, works too).
    #[serde(default, rename = "stsURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("spec.auth.workloadIdentity.aws.stsURL must be an absolute http:// or https:// URL, e.g. https://sts.amazonaws.com/"))]
    pub sts_url: Option<String>,
}

/// Azure workload identity (a Microsoft Entra application with a federated credential).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureWorkloadIdentity {
    /// The Microsoft Entra tenant (directory) id, or its domain name.
    #[serde(rename = "tenantID")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$')")
        .message("spec.auth.workloadIdentity.azure.tenantID must be a tenant id (a GUID) or domain, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47"))]
    pub tenant_id: String,
    /// The application (client) id whose federated credential trusts the ServiceAccount.
    #[serde(rename = "clientID")]
    #[x_kube(validation = kube::core::Rule::new("self != '' && size(self) <= 256")
        .message("spec.auth.workloadIdentity.azure.clientID must be the application (client) id, e.g. 00000000-0000-0000-0000-000000000000"))]
    pub client_id: String,
    /// The scope of the access token; default `https://management.azure.com/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.auth.workloadIdentity.azure.scope must not be empty, e.g. https://management.azure.com/.default"))]
    pub scope: Option<String>,
    /// The Microsoft Entra authority; default `https://login.microsoftonline.com`. The token
    /// endpoint is `{authorityURL}/{tenantID}/oauth2/v2.0/token`.
    #[serde(
        default,
        rename = "authorityURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))")
        .message("spec.auth.workloadIdentity.azure.authorityURL must be an absolute http:// or https:// URL, e.g. https://login.microsoftonline.com"))]
    pub authority_url: Option<String>,
}

/// Which TLS the provider's endpoints are trusted with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// PEM CA certificates that the `baseURL` server's certificate must chain to; they replace
    /// the system roots for the `baseURL` origin (token endpoints trust both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundle>,
    /// A client certificate for mutual TLS with the `baseURL` origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
}

/// Where a PEM CA bundle is: exactly one of a Secret key or a ConfigMap key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("spec.tls.caBundle: set exactly one of secretKeyRef or configMapKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct CaBundle {
    /// The Secret key holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// The ConfigMap key holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
}

/// A client certificate and key in a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificate {
    /// The Secret's name.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("spec.tls.clientCertificate.secretName must name a kubernetes.io/tls Secret"))]
    pub secret_name: String,
}
