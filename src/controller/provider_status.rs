//! The provider controllers: `status.conditions` of `OperationProvider`s and
//! `ClusterOperationProvider`s, and credential rotation.
//!
//! A provider is reconciled when it changes, every [`REREAD`] while it refers to Secrets or
//! ConfigMaps (every few minutes otherwise), and its entry is reloaded at once after its upstream
//! answered 401. Each reconcile re-reads its Secrets, rebuilds its client if they changed (so the
//! next request of every operation uses the new values), and writes `Ready` — `True` once the
//! credentials resolve (for token-based methods: a token was obtained; a cached fresh token is
//! reused, not requested again).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::provider_registry::Resolved;
use super::secret_reader::references;
use super::{Context, MANAGER, provider_lookup};
use crate::api::{
    ClusterOperationProvider, OperationProvider, OperationProviderStatus, ProviderSpec, condition,
};
use crate::reconcile::conditions;
use crate::telemetry::metrics::provider_label;
use crate::upstream::Credential;

/// How often a Ready provider is looked at again (its token is refreshed only when due).
const RECHECK: Duration = Duration::from_secs(300);
/// How often a Ready provider that refers to Secrets or ConfigMaps re-reads them: a rotated
/// Secret is used within this long.
const REREAD: Duration = Duration::from_secs(20);
/// How soon a provider that is not ready is looked at again.
const RETRY: Duration = Duration::from_secs(30);

/// Why a provider status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the provider status: {0}")]
pub struct StatusError(#[source] kube::Error);

/// Runs both provider controllers until SIGTERM or SIGINT.
///
/// Secrets and ConfigMaps are not watched (that would need `list` and `watch` on every Secret of
/// the cluster): a provider that refers to any is re-read every [`REREAD`], and at once after
/// its upstream answered 401 (see `provider_registry`).
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let providers: Api<OperationProvider> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default().any_semantic();
    let namespaced_run = Controller::new(providers, config.clone())
        .shutdown_on_signal()
        .run(reconcile_namespaced, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "provider reconcile failed");
            }
        });
    let cluster_run = Controller::new(Api::<ClusterOperationProvider>::all(client.clone()), config)
        .shutdown_on_signal()
        .run(reconcile_cluster, cluster_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cluster provider reconcile failed");
            }
        });
    futures::future::join(namespaced_run, cluster_run).await;
}

async fn reconcile_namespaced(
    p: Arc<OperationProvider>,
    ctx: Arc<Context>,
) -> Result<Action, StatusError> {
    let resolved = provider_lookup::namespaced(&p);
    let api: Api<OperationProvider> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let status = evaluate(&ctx, &resolved, p.status.as_ref()).await;
    let requeue = requeue_after(&p.spec.provider, &status);
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
    let requeue = requeue_after(&p.spec.provider, &status);
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
                (Some(method), Some(a)) => match a.credential() {
                    Credential::WorkloadIdentity(w) => format!(
                        "credentials resolve: spec.auth.workloadIdentity exchanged a ServiceAccount token for {} credentials",
                        w.cloud().name()
                    ),
                    c if c.uses_tokens() => {
                        format!("credentials resolve: spec.auth.{method} obtained an access token")
                    }
                    _ => format!("credentials resolve (spec.auth.{method})"),
                },
                (Some(method), _) => format!("credentials resolve (spec.auth.{method})"),
                (None, _) => "configured (no spec.auth: requests carry no credentials)".into(),
            };
            let key = provider_label(provider.namespace.as_deref(), &provider.name);
            match ctx.observations.refused(&key) {
                // Usable, but not as configured: said, and its operations poll by themselves.
                Some(why) if provider.spec.list.is_some() => (
                    true,
                    "ListRefused",
                    format!(
                        "{message}; listing its operations (spec.list) was refused ({why}), so each operation is polled by itself; fix or remove spec.list"
                    ),
                ),
                _ => (true, "CredentialsResolved", message),
            }
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

fn requeue_after(spec: &ProviderSpec, status: &OperationProviderStatus) -> Duration {
    let ready =
        conditions::find(&status.conditions, condition::READY).is_some_and(|c| c.status == "True");
    let (secrets, config_maps) = references(spec);
    // A listing provider is looked at as often, so that a refused list is said soon.
    let nothing_to_reread = secrets.is_empty() && config_maps.is_empty() && spec.list.is_none();
    match (ready, nothing_to_reread) {
        (false, _) => RETRY,
        (true, false) => REREAD,
        (true, true) => RECHECK,
    }
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
