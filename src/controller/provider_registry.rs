//! Every provider's runtime, held together: its compiled dialect, its HTTP client with the
//! credentials (read by `secret_reader`), and what they were built from.
//!
//! One entry per provider, cached by the provider's uid and generation; the Secrets it was
//! built from are re-read when they change (the provider controller watches them), and an entry
//! whose Secrets changed is rebuilt, so a rotated Secret is used by the next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube::Client;
use reqwest::Url;

use super::secret_reader::{Loaded, load};
use crate::api::{ProviderKind, ProviderSpec};
use crate::protocol::{DialectRef, dialect_for};
use crate::telemetry::metrics::{Metrics, provider_label};
use crate::upstream::{
    AddressPolicy, AuthError, BuildError, ClientSettings, Credential, ProviderAuth, Upstream,
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
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        NotReady {
            reason,
            message: message.into(),
        }
    }
}

/// A provider's client and what it was built from.
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
    /// The provider's dialect (its protocol, with the provider's protocol options compiled).
    pub dialect: DialectRef,
    /// The upstream answered 401 since it was built: read its Secrets again before the next use.
    stale: AtomicBool,
}

impl Entry {
    /// Marks the entry for a reload of its Secrets (its upstream refused the credentials).
    pub fn refused(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }
}

/// A provider's cache key: its namespace (`None` for a cluster provider) and name.
type ProviderKey = (Option<String>, String);

/// Builds and caches the clients of every provider.
pub struct Registry {
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

impl Registry {
    /// A cache; `settings.policy.allow_private` is the operator-wide opt-in.
    pub fn new(
        kube: Client,
        settings: ClientSettings,
        operator_namespace: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registry {
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
            // Its upstream refused its credentials: a rotated Secret is read again now.
            Some(entry) if entry.stale.load(Ordering::Relaxed) => {
                return self.refresh(provider).await;
            }
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
    /// (or if the provider did); then checks it as [`Registry::get`] does.
    pub async fn refresh(&self, provider: &Resolved) -> Result<Arc<Entry>, NotReady> {
        let guard = self.building.lock().await;
        let loaded = self.load(provider).await;
        let current = self.cached(provider);
        let entry = match (current, loaded) {
            (Some(entry), Ok(loaded)) if entry.versions == loaded.versions => {
                entry.stale.store(false, Ordering::Relaxed);
                entry
            }
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

    /// Reads the provider's Secrets and ConfigMaps (after checking what needs none).
    async fn load(&self, provider: &Resolved) -> Result<Loaded, NotReady> {
        base_url(&provider.spec)?;
        // Protocol options that do not compile (the `http` CEL expressions) make it unusable.
        dialect_for(&provider.spec).map_err(|why| NotReady::new("InvalidExpression", why))?;
        load(&self.kube, self.secrets_namespace(provider), &provider.spec).await
    }

    async fn build(&self, provider: &Resolved) -> Result<Arc<Entry>, NotReady> {
        let loaded = self.load(provider).await?;
        self.install(provider, loaded)
    }

    fn install(&self, provider: &Resolved, loaded: Loaded) -> Result<Arc<Entry>, NotReady> {
        let base_url = base_url(&provider.spec)?;
        let dialect =
            dialect_for(&provider.spec).map_err(|why| NotReady::new("InvalidExpression", why))?;
        let settings = ClientSettings {
            policy: AddressPolicy {
                // Only a cluster admin's decision opens private networks: the operator's flag,
                // or a ClusterOperationProvider's own field (a tenant's provider cannot).
                allow_private: self.allow_private
                    || (provider.kind == ProviderKind::ClusterOperationProvider
                        && provider.spec.allow_private_networks),
            },
            url_scope: dialect.url_scope(),
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
            dialect,
            stale: AtomicBool::new(false),
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
                UpstreamError::Credentials(e) => {
                    let reason = match e {
                        AuthError::Exchange(_) => "TokenExchangeFailed",
                        AuthError::TokenRequest(_)
                        | AuthError::ServiceAccountToken(_)
                        | AuthError::Request(_) => "TokenRequestFailed",
                    };
                    NotReady::new(
                        reason,
                        format!("spec.auth.{}: {e}", entry.method.unwrap_or("auth")),
                    )
                }
                other => NotReady::new("InvalidConfig", format!("{}: {other}", provider.label())),
            })
    }
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
