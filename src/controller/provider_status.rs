//! The provider controllers: `status.conditions` of `OperationProvider`s and
//! `ClusterOperationProvider`s, and credential rotation.
//!
//! A provider is reconciled when it changes, when a Secret or ConfigMap it refers to changes
//! (metadata-only watches), and every few minutes. Each reconcile re-reads its Secrets, rebuilds
//! its client if they changed (so the next request of every operation uses the new values), and
//! writes `Ready` — `True` once the credentials resolve (for token-based methods: a token was
//! obtained; a cached fresh token is reused, not requested again).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::provider_registry::Resolved;
use super::secret_reader::references;
use super::{Context, MANAGER, provider_lookup};
use crate::api::{ClusterOperationProvider, OperationProvider, OperationProviderStatus, condition};
use crate::reconcile::conditions;

/// How often a Ready provider is looked at again (its token is refreshed only when due).
const RECHECK: Duration = Duration::from_secs(300);
/// How soon a provider that is not ready is looked at again.
const RETRY: Duration = Duration::from_secs(30);

/// Why a provider status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the provider status: {0}")]
pub struct StatusError(#[source] kube::Error);

/// Runs both provider controllers until SIGTERM or SIGINT.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let scope = ctx.config.namespace.clone();
    let namespaced = |c: &kube::Client| -> (
        Api<OperationProvider>,
        Api<PartialObjectMeta<Secret>>,
        Api<PartialObjectMeta<ConfigMap>>,
    ) {
        match &scope {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (providers, secrets, config_maps) = namespaced(&client);
    let config = watcher::Config::default().any_semantic();
    let controller = Controller::new(providers, config.clone());
    let store = controller.store();
    let store2 = controller.store();
    let namespaced_run = controller
        .watches(secrets, config.clone(), move |s| {
            users(&store, s.namespace(), &s.name_any(), true)
        })
        .watches(config_maps, config.clone(), move |c| {
            users(&store2, c.namespace(), &c.name_any(), false)
        })
        .shutdown_on_signal()
        .run(reconcile_namespaced, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "provider reconcile failed");
            }
        });

    let cluster = Controller::new(
        Api::<ClusterOperationProvider>::all(client.clone()),
        config.clone(),
    );
    let cluster_store = cluster.store();
    let cluster_store2 = cluster.store();
    let cluster = match &ctx.config.operator_namespace {
        // Cluster providers read their Secrets from the operator's namespace: watch only there.
        Some(ns) => cluster
            .watches(
                Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
                config.clone(),
                move |s| cluster_users(&cluster_store, &s.name_any(), true),
            )
            .watches(
                Api::<PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), ns),
                config,
                move |c| cluster_users(&cluster_store2, &c.name_any(), false),
            ),
        None => cluster,
    };
    let cluster_run = cluster
        .shutdown_on_signal()
        .run(reconcile_cluster, cluster_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cluster provider reconcile failed");
            }
        });
    futures::future::join(namespaced_run, cluster_run).await;
}

/// The namespaced providers (of the Secret's namespace) that refer to a Secret or ConfigMap.
fn users(
    store: &Store<OperationProvider>,
    namespace: Option<String>,
    name: &str,
    secret: bool,
) -> Vec<ObjectRef<OperationProvider>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace && refers(&p.spec.provider, name, secret))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn cluster_users(
    store: &Store<ClusterOperationProvider>,
    name: &str,
    secret: bool,
) -> Vec<ObjectRef<ClusterOperationProvider>> {
    store
        .state()
        .iter()
        .filter(|p| refers(&p.spec.provider, name, secret))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn refers(spec: &crate::api::ProviderSpec, name: &str, secret: bool) -> bool {
    let (secrets, config_maps) = references(spec);
    if secret {
        secrets.contains(&name)
    } else {
        config_maps.contains(&name)
    }
}

async fn reconcile_namespaced(
    p: Arc<OperationProvider>,
    ctx: Arc<Context>,
) -> Result<Action, StatusError> {
    let resolved = provider_lookup::namespaced(&p);
    let api: Api<OperationProvider> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let status = evaluate(&ctx, &resolved, p.status.as_ref()).await;
    let requeue = requeue_after(&status);
    if Some(&status) != p.status.as_ref() {
        write(&api, &p.name_any(), "OperationProvider", &status).await?;
    }
    Ok(Action::requeue(requeue))
}

async fn reconcile_cluster(
    p: Arc<ClusterOperationProvider>,
    ctx: Arc<Context>,
) -> Result<Action, StatusError> {
    let resolved = provider_lookup::cluster(&p);
    let api: Api<ClusterOperationProvider> = Api::all(ctx.client.clone());
    let status = evaluate(&ctx, &resolved, p.status.as_ref()).await;
    let requeue = requeue_after(&status);
    if Some(&status) != p.status.as_ref() {
        write(&api, &p.name_any(), "ClusterOperationProvider", &status).await?;
    }
    Ok(Action::requeue(requeue))
}

/// The provider's status: `Ready` from its credentials.
async fn evaluate(
    ctx: &Context,
    provider: &Resolved,
    current: Option<&OperationProviderStatus>,
) -> OperationProviderStatus {
    let (ready, reason, message) = match ctx.providers.refresh(provider).await {
        Ok(entry) => {
            let message = match (entry.method, entry.upstream.authenticator()) {
                (Some(method), Some(a)) if a.credential().uses_tokens() => {
                    format!("credentials resolve: spec.auth.{method} obtained an access token")
                }
                (Some(method), _) => format!("credentials resolve (spec.auth.{method})"),
                (None, _) => "configured (no spec.auth: requests carry no credentials)".into(),
            };
            (true, "CredentialsResolved", message)
        }
        Err(not_ready) => {
            tracing::info!(
                provider = %provider.label(),
                reason = not_ready.reason,
                detail = %not_ready.message,
                "provider not ready"
            );
            (false, not_ready.reason, not_ready.message)
        }
    };
    let mut status = current.cloned().unwrap_or_default();
    let generation = Some(provider.generation);
    conditions::upsert(
        &mut status.conditions,
        condition::READY,
        ready,
        reason,
        &message,
        generation,
        jiff::Timestamp::now(),
    );
    status.observed_generation = generation;
    status
}

fn requeue_after(status: &OperationProviderStatus) -> Duration {
    let ready =
        conditions::find(&status.conditions, condition::READY).is_some_and(|c| c.status == "True");
    if ready { RECHECK } else { RETRY }
}

async fn write<K>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    status: &OperationProviderStatus,
) -> Result<(), StatusError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": kind,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(StatusError)
}

fn error_policy(_p: Arc<OperationProvider>, error: &StatusError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "provider reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn cluster_error_policy(
    _p: Arc<ClusterOperationProvider>,
    error: &StatusError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(%error, "cluster provider reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
