//! Reading a provider's credentials: the Secrets and ConfigMaps it refers to (from its own
//! namespace only; a cluster provider's from the operator's), turned into the credential and TLS
//! material its client is built with. A message names the field and the fix, never a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use reqwest::Url;
use reqwest::header::HeaderName;
use secrecy::{SecretBox, SecretString};

use std::sync::Arc;

use super::provider_registry::NotReady;
use super::service_account_tokens::KubeServiceAccount;
use super::short;
use crate::api::{AuthSpec, ProviderSpec, SecretKeyRef};
use crate::upstream::auth::{GoogleKey, KeyPlacement, OAuth2Client};
use crate::upstream::identity::{Cloud, WorkloadIdentity};
use crate::upstream::sigv4::AwsKeys;
use crate::upstream::{Credential, TlsMaterial};

/// Reads every Secret and ConfigMap `spec` refers to, from `namespace` (the provider's own;
/// a cluster provider's: the operator's, when known).
pub async fn load(
    kube: &Client,
    namespace: Option<String>,
    spec: &ProviderSpec,
) -> Result<Loaded, NotReady> {
    let mut reader = Reader {
        kube,
        namespace: None,
        secrets: BTreeMap::new(),
        config_maps: BTreeMap::new(),
    };
    let needs_secrets = spec.auth.is_some() || spec.tls.is_some();
    if needs_secrets {
        reader.namespace = Some(namespace.ok_or_else(|| {
            NotReady::new(
                "OperatorNamespaceUnknown",
                "a ClusterOperationProvider reads its Secrets (and uses its workload identity's ServiceAccount) from the operator's namespace, which is not known: set POD_NAMESPACE (the Helm chart does) or --operator-namespace",
            )
        })?);
    }
    let credential = match &spec.auth {
        Some(auth) => Some(credential(auth, &mut reader).await?),
        None => None,
    };
    let mut tls = TlsMaterial::default();
    if let Some(spec_tls) = &spec.tls {
        if let Some(ca) = &spec_tls.ca_bundle {
            let pem = match (&ca.secret_key_ref, &ca.config_map_key_ref) {
                (Some(r), None) => {
                    reader
                        .secret_bytes("spec.tls.caBundle.secretKeyRef", r)
                        .await?
                }
                (None, Some(r)) => {
                    reader
                        .config_map_value("spec.tls.caBundle.configMapKeyRef", &r.name, &r.key)
                        .await?
                }
                _ => {
                    return Err(NotReady::new(
                        "InvalidConfig",
                        "spec.tls.caBundle: set exactly one of secretKeyRef or configMapKeyRef",
                    ));
                }
            };
            tls.ca_pem = Some(pem);
        }
        if let Some(client) = &spec_tls.client_certificate {
            let field = "spec.tls.clientCertificate.secretName";
            let cert = SecretKeyRef {
                name: client.secret_name.clone(),
                key: "tls.crt".into(),
            };
            let key = SecretKeyRef {
                name: client.secret_name.clone(),
                key: "tls.key".into(),
            };
            let mut pem = reader.secret_bytes(field, &cert).await?;
            pem.push(b'\n');
            pem.extend(reader.secret_bytes(field, &key).await?);
            tls.identity_pem = Some(SecretBox::new(Box::new(pem)));
        }
    }
    let mut versions: Vec<(String, Option<String>)> = reader
        .secrets
        .into_iter()
        .map(|(name, s)| {
            (
                format!("Secret/{name}"),
                s.and_then(|s| s.metadata.resource_version),
            )
        })
        .chain(reader.config_maps.into_iter().map(|(name, c)| {
            (
                format!("ConfigMap/{name}"),
                c.and_then(|c| c.metadata.resource_version),
            )
        }))
        .collect();
    versions.sort();
    Ok(Loaded {
        credential,
        tls,
        versions,
    })
}

/// What a provider's Secrets and ConfigMaps hold, and their versions.
pub struct Loaded {
    /// The credential, if the provider has `spec.auth`.
    pub credential: Option<Credential>,
    /// The TLS material of `spec.tls`.
    pub tls: TlsMaterial,
    /// `resourceVersion` of each Secret and ConfigMap read (`None`: it did not exist).
    pub versions: Vec<(String, Option<String>)>,
}

/// Reads Secrets and ConfigMaps of one namespace, each once.
struct Reader<'a> {
    kube: &'a Client,
    namespace: Option<String>,
    secrets: BTreeMap<String, Option<Secret>>,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
}

impl Reader<'_> {
    fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    async fn secret(&mut self, field: &str, name: &str) -> Result<&Secret, NotReady> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.kube.clone(), self.namespace());
            let found = api.get_opt(name).await.map_err(|e| {
                NotReady::new(
                    "SecretNotReadable",
                    format!(
                        "{field}: cannot read Secret {name:?} in namespace {:?} ({}); the operator needs get on secrets there",
                        self.namespace(),
                        short(&e)
                    ),
                )
            })?;
            self.secrets.insert(name.to_owned(), found);
        }
        let namespace = self.namespace().to_owned();
        self.secrets
            .get(name)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                NotReady::new(
                    "SecretNotFound",
                    format!(
                        "{field}: Secret {name:?} not found in namespace {namespace:?}; create it there (a provider reads Secrets from its own namespace only, a ClusterOperationProvider from the operator's)"
                    ),
                )
            })
    }

    async fn secret_bytes(&mut self, field: &str, r: &SecretKeyRef) -> Result<Vec<u8>, NotReady> {
        let secret = self.secret(field, &r.name).await?;
        let data = secret.data.clone().unwrap_or_default();
        match data.get(&r.key) {
            Some(value) if !value.0.is_empty() => Ok(value.0.clone()),
            Some(_) => Err(NotReady::new(
                "SecretKeyMissing",
                format!(
                    "{field}: key {:?} of Secret {:?} is empty; put the value there",
                    r.key, r.name
                ),
            )),
            // The Secret's other key names are not listed: the reader of this message may not
            // be allowed to read the Secret.
            None => Err(NotReady::new(
                "SecretKeyMissing",
                format!(
                    "{field}: Secret {:?} has no key {:?}; set the key in the spec or add it to the Secret",
                    r.name, r.key,
                ),
            )),
        }
    }

    /// A single-line secret value (trailing line breaks removed).
    async fn secret_string(
        &mut self,
        field: &str,
        r: &SecretKeyRef,
    ) -> Result<SecretString, NotReady> {
        let bytes = self.secret_bytes(field, r).await?;
        let text = String::from_utf8(bytes).map_err(|_| {
            NotReady::new(
                "InvalidSecretValue",
                format!(
                    "{field}: key {:?} of Secret {:?} is not UTF-8 text",
                    r.key, r.name
                ),
            )
        })?;
        let trimmed = text.trim_end_matches(['\r', '\n']);
        if trimmed.contains(['\r', '\n']) {
            return Err(NotReady::new(
                "InvalidSecretValue",
                format!(
                    "{field}: key {:?} of Secret {:?} spans several lines; it must be a single value",
                    r.key, r.name
                ),
            ));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    async fn config_map_value(
        &mut self,
        field: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>, NotReady> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.kube.clone(), self.namespace());
            let found = api.get_opt(name).await.map_err(|e| {
                NotReady::new(
                    "ConfigMapNotReadable",
                    format!(
                        "{field}: cannot read ConfigMap {name:?} in namespace {:?} ({}); the operator needs get on configmaps there",
                        self.namespace(),
                        short(&e)
                    ),
                )
            })?;
            self.config_maps.insert(name.to_owned(), found);
        }
        let namespace = self.namespace().to_owned();
        let map = self
            .config_maps
            .get(name)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                NotReady::new(
                    "ConfigMapNotFound",
                    format!("{field}: ConfigMap {name:?} not found in namespace {namespace:?}; create it there"),
                )
            })?;
        map.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| map.binary_data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.clone()))
            .ok_or_else(|| {
                NotReady::new(
                    "ConfigMapKeyMissing",
                    format!("{field}: ConfigMap {name:?} has no key {key:?}; set the key in the spec or add it to the ConfigMap"),
                )
            })
    }
}

/// The credential of `auth`, with its secret values read.
async fn credential(auth: &AuthSpec, reader: &mut Reader<'_>) -> Result<Credential, NotReady> {
    if auth.methods_set() != 1 {
        return Err(NotReady::new(
            "InvalidConfig",
            "spec.auth: set exactly one of bearerToken, apiKey, basic, oauth2ClientCredentials, googleServiceAccount, awsSigV4 or workloadIdentity",
        ));
    }
    if let Some(b) = &auth.bearer_token {
        let token = reader
            .secret_string("spec.auth.bearerToken.secretKeyRef", &b.secret_key_ref)
            .await?;
        return Ok(Credential::Bearer(token));
    }
    if let Some(k) = &auth.api_key {
        let placement = match (&k.header, &k.query_parameter) {
            (Some(header), None) => KeyPlacement::Header(
                HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    NotReady::new(
                        "InvalidConfig",
                        format!("spec.auth.apiKey.header: {header:?} is not a header name; use e.g. X-API-Key"),
                    )
                })?,
            ),
            (None, Some(query)) if !query.is_empty() => KeyPlacement::Query(query.clone()),
            _ => {
                return Err(NotReady::new(
                    "InvalidConfig",
                    "spec.auth.apiKey: set exactly one of header (e.g. X-API-Key) or queryParameter (e.g. key)",
                ));
            }
        };
        let value = reader
            .secret_string("spec.auth.apiKey.secretKeyRef", &k.secret_key_ref)
            .await?;
        return Ok(Credential::ApiKey { value, placement });
    }
    if let Some(b) = &auth.basic {
        let username = reader
            .secret_string(
                "spec.auth.basic.username.secretKeyRef",
                &b.username.secret_key_ref,
            )
            .await?;
        let password = reader
            .secret_string(
                "spec.auth.basic.password.secretKeyRef",
                &b.password.secret_key_ref,
            )
            .await?;
        return Ok(Credential::Basic { username, password });
    }
    if let Some(o) = &auth.oauth2_client_credentials {
        let token_url = Url::parse(&o.token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                NotReady::new(
                    "InvalidConfig",
                    "spec.auth.oauth2ClientCredentials.tokenURL must be an absolute http:// or https:// URL",
                )
            })?;
        let client_id = reader
            .secret_string(
                "spec.auth.oauth2ClientCredentials.clientID.secretKeyRef",
                &o.client_id.secret_key_ref,
            )
            .await?;
        let client_secret = reader
            .secret_string(
                "spec.auth.oauth2ClientCredentials.clientSecret.secretKeyRef",
                &o.client_secret.secret_key_ref,
            )
            .await?;
        return Ok(Credential::OAuth2(OAuth2Client {
            token_url,
            client_id,
            client_secret,
            audience: o.audience.clone(),
            scopes: o.scopes.clone(),
        }));
    }
    if let Some(g) = &auth.google_service_account {
        let field = "spec.auth.googleServiceAccount.secretKeyRef";
        let json = reader.secret_bytes(field, &g.secret_key_ref).await?;
        let key = GoogleKey::parse(&json, g.scopes.clone()).map_err(|why| {
            NotReady::new(
                "InvalidServiceAccountKey",
                format!(
                    "{field}: key {:?} of Secret {:?} {why}; put the JSON key file of the service account there (gcloud iam service-accounts keys create)",
                    g.secret_key_ref.key, g.secret_key_ref.name
                ),
            )
        })?;
        return Ok(Credential::Google(key));
    }
    if let Some(a) = &auth.aws_sig_v4 {
        if a.region.is_empty() || a.service.is_empty() {
            return Err(NotReady::new(
                "InvalidConfig",
                "spec.auth.awsSigV4: region (e.g. us-east-1) and service (e.g. cloudcontrolapi) must be set",
            ));
        }
        let access_key_id = reader
            .secret_string(
                "spec.auth.awsSigV4.accessKeyID.secretKeyRef",
                &a.access_key_id.secret_key_ref,
            )
            .await?;
        let secret_access_key = reader
            .secret_string(
                "spec.auth.awsSigV4.secretAccessKey.secretKeyRef",
                &a.secret_access_key.secret_key_ref,
            )
            .await?;
        let session_token = match &a.session_token {
            Some(t) => Some(
                reader
                    .secret_string(
                        "spec.auth.awsSigV4.sessionToken.secretKeyRef",
                        &t.secret_key_ref,
                    )
                    .await?,
            ),
            None => None,
        };
        return Ok(Credential::AwsSigV4(AwsKeys {
            access_key_id,
            secret_access_key,
            session_token,
            region: a.region.clone(),
            service: a.service.clone(),
        }));
    }
    if let Some(w) = &auth.workload_identity {
        let cloud = Cloud::from_spec(w).map_err(|why| NotReady::new("InvalidConfig", why))?;
        let name = &w.service_account_name;
        if name.is_empty() || name.contains('/') {
            return Err(NotReady::new(
                "InvalidConfig",
                "spec.auth.workloadIdentity.serviceAccountName must name a ServiceAccount of the provider's namespace",
            ));
        }
        let source = KubeServiceAccount::new(reader.kube.clone(), reader.namespace(), name);
        return Ok(Credential::WorkloadIdentity(WorkloadIdentity::new(
            cloud,
            Arc::new(source),
        )));
    }
    Err(NotReady::new("InvalidConfig", "spec.auth: no method set"))
}

/// The names of the Secrets and ConfigMaps `spec` refers to (for the watches).
pub fn references(spec: &ProviderSpec) -> (Vec<&str>, Vec<&str>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    if let Some(auth) = &spec.auth {
        let refs = [
            auth.bearer_token.as_ref().map(|b| &b.secret_key_ref),
            auth.api_key.as_ref().map(|k| &k.secret_key_ref),
            auth.basic.as_ref().map(|b| &b.username.secret_key_ref),
            auth.basic.as_ref().map(|b| &b.password.secret_key_ref),
            auth.oauth2_client_credentials
                .as_ref()
                .map(|o| &o.client_id.secret_key_ref),
            auth.oauth2_client_credentials
                .as_ref()
                .map(|o| &o.client_secret.secret_key_ref),
            auth.google_service_account
                .as_ref()
                .map(|g| &g.secret_key_ref),
            auth.aws_sig_v4
                .as_ref()
                .map(|a| &a.access_key_id.secret_key_ref),
            auth.aws_sig_v4
                .as_ref()
                .map(|a| &a.secret_access_key.secret_key_ref),
            auth.aws_sig_v4
                .as_ref()
                .and_then(|a| a.session_token.as_ref())
                .map(|t| &t.secret_key_ref),
        ];
        secrets.extend(refs.into_iter().flatten().map(|r| r.name.as_str()));
    }
    if let Some(tls) = &spec.tls {
        if let Some(ca) = &tls.ca_bundle {
            secrets.extend(ca.secret_key_ref.as_ref().map(|r| r.name.as_str()));
            config_maps.extend(ca.config_map_key_ref.as_ref().map(|r| r.name.as_str()));
        }
        if let Some(client) = &tls.client_certificate {
            secrets.push(client.secret_name.as_str());
        }
    }
    (secrets, config_maps)
}
