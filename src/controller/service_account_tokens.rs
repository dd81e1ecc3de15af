//! ServiceAccount tokens for workload identity: the API server's TokenRequest
//! (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`), with the audience the cloud
//! requires and the shortest lifetime the API server grants. Messages say what failed and how to
//! fix it; the token itself only goes back to the caller.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};
use secrecy::SecretString;

use super::short;
use crate::upstream::identity::{
    SERVICE_ACCOUNT_TOKEN_SECONDS, ServiceAccountTokens, SubjectToken,
};

/// The ServiceAccount `name` of `namespace`, as a source of tokens.
pub struct KubeServiceAccount {
    client: Client,
    namespace: String,
    name: String,
}

impl KubeServiceAccount {
    /// Tokens of `namespace/name`, requested with `client` (the operator's identity).
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        KubeServiceAccount {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl ServiceAccountTokens for KubeServiceAccount {
    fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    fn request(&self, audience: &str) -> BoxFuture<'_, Result<SubjectToken, String>> {
        let audience = audience.to_owned();
        Box::pin(async move {
            let (ns, name) = (&self.namespace, &self.name);
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec![audience]),
                    expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                    bound_object_ref: None,
                }),
                ..TokenRequest::default()
            };
            let answer = api
                .create_token_request(name, &PostParams::default(), &request)
                .await
                .map_err(|e| match &e {
                    kube::Error::Api(status) if status.code == 403 => format!(
                        "the operator may not create a token for ServiceAccount {ns}/{name} ({}): grant its identity create on serviceaccounts/token in namespace {ns} (chart: operator.workloadIdentity.enabled=true, with {ns} in operator.workloadIdentity.namespaces when that list is set)",
                        short(&e)
                    ),
                    kube::Error::Api(status) if status.code == 404 => format!(
                        "ServiceAccount {ns}/{name} not found: create it (kubectl create serviceaccount {name} -n {ns}) or fix spec.auth.workloadIdentity.serviceAccountName"
                    ),
                    _ => format!(
                        "the TokenRequest for ServiceAccount {ns}/{name} failed: {}",
                        short(&e)
                    ),
                })?;
            let status = answer.status.unwrap_or_default();
            let token = status.token.filter(|t| !t.is_empty()).ok_or_else(|| {
                format!("the TokenRequest for ServiceAccount {ns}/{name} returned no token")
            })?;
            let fallback = Duration::from_secs(SERVICE_ACCOUNT_TOKEN_SECONDS.unsigned_abs());
            let valid_for = status
                .expiration_timestamp
                .and_then(|t| SystemTime::from(t.0).duration_since(SystemTime::now()).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(fallback);
            Ok(SubjectToken {
                value: SecretString::from(token),
                valid_for,
            })
        })
    }
}
