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
#[x_kube(validation = kube::core::Rule::new("[has(self.bearerToken), has(self.apiKey), has(self.basic), has(self.oauth2ClientCredentials), has(self.googleServiceAccount), has(self.awsSigV4)].filter(x, x).size() == 1")
    .message("set exactly one of spec.auth.bearerToken, apiKey, basic, oauth2ClientCredentials, googleServiceAccount or awsSigV4"))]
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
