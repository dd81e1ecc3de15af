//! Provider credentials, read from Secrets and ConfigMaps, and the per-provider HTTP clients.
//!
//! One client per provider, cached by the provider's uid and generation; the Secrets it was
//! built from are re-read when they change (the provider controller watches them), and a client
//! whose Secrets changed is rebuilt, so a rotated Secret is used by the next request. Secrets
//! are read from the provider's own namespace only (cluster providers: the operator's).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use reqwest::Url;
use reqwest::header::HeaderName;
use secrecy::{SecretBox, SecretString};

use crate::api::{AuthSpec, ProviderKind, ProviderSpec, SecretKeyRef};
use crate::telemetry::metrics::{Metrics, provider_label};
use crate::upstream::auth::{GoogleKey, KeyPlacement, OAuth2Client};
use crate::upstream::sigv4::AwsKeys;
use crate::upstream::{
    AddressPolicy, BuildError, ClientSettings, Credential, ProviderAuth, TlsMaterial, Upstream,
    UpstreamError,
};

/// A provider, as an operation (or the provider controller) found it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Its kind.
    pub kind: ProviderKind,
    /// Its namespace (`None` for a cluster provider).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// The spec.
    pub spec: ProviderSpec,
}

impl Resolved {
    /// `OperationProvider ns/name` or `ClusterOperationProvider name`, for messages.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("OperationProvider {ns}/{}", self.name),
            None => format!("ClusterOperationProvider {}", self.name),
        }
    }

    /// The cache key: a cluster provider has no namespace.
    fn key(&self) -> ProviderKey {
        (self.namespace.clone(), self.name.clone())
    }
}

/// Why a provider cannot be used: a condition reason and a message naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// CamelCase reason (`SecretNotFound`, `TokenRequestFailed`, …).
    pub reason: &'static str,
    /// For people; never holds a secret value.
    pub message: String,
}

impl NotReady {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        NotReady {
            reason,
            message: message.into(),
        }
    }
}

/// A provider's client and what it was built from.
#[derive(Debug)]
pub struct Entry {
    uid: String,
    generation: i64,
    /// `resourceVersion` of each Secret and ConfigMap read (`None`: it did not exist).
    versions: Vec<(String, Option<String>)>,
    /// The provider's base URL.
    pub base_url: Url,
    /// The client.
    pub upstream: Upstream,
    /// The auth method, if any.
    pub method: Option<&'static str>,
}

/// A provider's cache key: its namespace (`None` for a cluster provider) and name.
type ProviderKey = (Option<String>, String);

/// Builds and caches the clients of every provider.
pub struct Clients {
    kube: Client,
    settings: ClientSettings,
    /// `--allow-private-networks`.
    allow_private: bool,
    /// Where cluster providers' Secrets are read.
    operator_namespace: Option<String>,
    entries: Mutex<HashMap<ProviderKey, Arc<Entry>>>,
    building: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Clients {
    /// A cache; `settings.policy.allow_private` is the operator-wide opt-in.
    pub fn new(
        kube: Client,
        settings: ClientSettings,
        operator_namespace: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Clients {
            kube,
            allow_private: settings.policy.allow_private,
            settings,
            operator_namespace,
            entries: Mutex::new(HashMap::new()),
            building: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// Where a provider's Secrets are read.
    pub fn secrets_namespace(&self, provider: &Resolved) -> Option<String> {
        provider
            .namespace
            .clone()
            .or_else(|| self.operator_namespace.clone())
    }

    /// The client of `provider`, ready to send: cached unless the provider changed; its
    /// access token requested only when none is fresh.
    pub async fn get(&self, provider: &Resolved) -> Result<Arc<Entry>, NotReady> {
        let entry = match self.cached(provider) {
            Some(entry) => entry,
            None => {
                let _building = self.building.lock().await;
                match self.cached(provider) {
                    Some(entry) => entry,
                    None => self.build(provider).await?,
                }
            }
        };
        self.check(provider, &entry).await?;
        Ok(entry)
    }

    /// Re-reads the provider's Secrets and ConfigMaps and rebuilds its client if any changed
    /// (or if the provider did); then checks it as [`Clients::get`] does.
    pub async fn refresh(&self, provider: &Resolved) -> Result<Arc<Entry>, NotReady> {
        let guard = self.building.lock().await;
        let loaded = self.load(provider).await;
        let current = self.cached(provider);
        let entry = match (current, loaded) {
            (Some(entry), Ok(loaded)) if entry.versions == loaded.versions => entry,
            (_, Ok(loaded)) => self.install(provider, loaded)?,
            (_, Err(not_ready)) => {
                self.forget(provider);
                return Err(not_ready);
            }
        };
        drop(guard);
        self.check(provider, &entry).await?;
        Ok(entry)
    }

    fn cached(&self, provider: &Resolved) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&provider.key())
            .filter(|e| e.uid == provider.uid && e.generation == provider.generation)
            .cloned()
    }

    fn forget(&self, provider: &Resolved) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&provider.key());
    }

    async fn build(&self, provider: &Resolved) -> Result<Arc<Entry>, NotReady> {
        let loaded = self.load(provider).await?;
        self.install(provider, loaded)
    }

    fn install(&self, provider: &Resolved, loaded: Loaded) -> Result<Arc<Entry>, NotReady> {
        let base_url = base_url(&provider.spec)?;
        let settings = ClientSettings {
            policy: AddressPolicy {
                allow_private: self.allow_private || provider.spec.allow_private_networks,
            },
            ..self.settings
        };
        let method = loaded.credential.as_ref().map(Credential::method);
        let metrics = Arc::clone(&self.metrics);
        let label = provider_label(provider.namespace.as_deref(), &provider.name);
        let auth = loaded.credential.map(|credential| ProviderAuth {
            credential,
            on_token: Some(Arc::new(move || metrics.token_refreshed(&label))),
        });
        let upstream = Upstream::for_provider(&settings, &base_url, &loaded.tls, auth)
            .map_err(|e| match e {
                BuildError::CaBundle(why) => NotReady::new(
                    "InvalidCABundle",
                    format!("spec.tls.caBundle {why}; it must hold PEM certificates (-----BEGIN CERTIFICATE-----)"),
                ),
                BuildError::ClientCertificate(why) => NotReady::new(
                    "InvalidClientCertificate",
                    format!("spec.tls.clientCertificate: {why}; create the Secret with kubectl create secret tls NAME --cert=client.crt --key=client.key"),
                ),
                BuildError::Http(why) => NotReady::new("InvalidTLS", format!("spec.tls: {why}")),
            })?;
        let entry = Arc::new(Entry {
            uid: provider.uid.clone(),
            generation: provider.generation,
            versions: loaded.versions,
            base_url,
            upstream,
            method,
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(provider.key(), Arc::clone(&entry));
        Ok(entry)
    }

    /// The address policy and, for token-based methods, a fresh token.
    async fn check(&self, provider: &Resolved, entry: &Entry) -> Result<(), NotReady> {
        entry
            .upstream
            .ready(&entry.base_url)
            .await
            .map_err(|e| match e {
                UpstreamError::Refused(refused) => {
                    let field = if Some(refused.host.as_str()) == entry.base_url.host_str() {
                        "spec.baseURL"
                    } else {
                        "the token endpoint"
                    };
                    NotReady::new("AddressNotAllowed", format!("{field}: {refused}"))
                }
                UpstreamError::Credentials(e) => NotReady::new(
                    "TokenRequestFailed",
                    format!("spec.auth.{}: {e}", entry.method.unwrap_or("auth")),
                ),
                other => NotReady::new("InvalidConfig", format!("{}: {other}", provider.label())),
            })
    }

    /// Reads every Secret and ConfigMap the provider refers to.
    async fn load(&self, provider: &Resolved) -> Result<Loaded, NotReady> {
        let spec = &provider.spec;
        base_url(spec)?;
        // The `http` protocol's CEL expressions must compile.
        crate::protocol::dialect_for(spec)
            .map_err(|why| NotReady::new("InvalidExpression", why))?;
        let mut reader = Reader {
            kube: &self.kube,
            namespace: None,
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        };
        let needs_secrets = spec.auth.is_some() || spec.tls.is_some();
        if needs_secrets {
            reader.namespace = Some(self.secrets_namespace(provider).ok_or_else(|| {
                NotReady::new(
                    "OperatorNamespaceUnknown",
                    "a ClusterOperationProvider reads its Secrets from the operator's namespace, which is not known: set POD_NAMESPACE (the Helm chart does) or --operator-namespace",
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
}

struct Loaded {
    credential: Option<Credential>,
    tls: TlsMaterial,
    versions: Vec<(String, Option<String>)>,
}

fn base_url(spec: &ProviderSpec) -> Result<Url, NotReady> {
    Url::parse(&spec.base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            NotReady::new(
                "InvalidConfig",
                "spec.baseURL must be an absolute http:// or https:// URL, e.g. https://api.example.com/v1",
            )
        })
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
            None => {
                let keys: Vec<&str> = data.keys().map(String::as_str).collect();
                Err(NotReady::new(
                    "SecretKeyMissing",
                    format!(
                        "{field}: Secret {:?} has no key {:?} (its keys: {}); set the key in the spec or add it to the Secret",
                        r.name,
                        r.key,
                        if keys.is_empty() {
                            "none".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    ),
                ))
            }
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
            "spec.auth: set exactly one of bearerToken, apiKey, basic, oauth2ClientCredentials, googleServiceAccount or awsSigV4",
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
    Err(NotReady::new("InvalidConfig", "spec.auth: no method set"))
}

/// A Kubernetes API error without its body.
fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string(),
    }
}

/// The namespace of the pod's service account, when running in a pod.
pub fn service_account_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
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
