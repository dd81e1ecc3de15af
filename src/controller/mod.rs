//! kube-runtime wiring: the watch, the reconcile loop (observe → decide → act → write status),
//! provider resolution, status writes and Kubernetes Events.

mod act;
pub mod cache;
pub mod events;
mod fair_share;
mod finalizer;
pub mod leader;
mod observations;
mod observe;
pub mod outputs;
mod provider_lookup;
pub mod provider_registry;
mod provider_status;
mod reconcile;
mod requests;
mod secret_reader;
mod service_account_tokens;
mod status;
mod sweeps;
#[cfg(test)]
mod tests;
pub mod workflow;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use events::{Recorder, Reporter};
use futures::StreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::{ClusterOperationProvider, LongRunningOperation, OperationProvider};
pub use crate::config::{Config, RunArgs, SHARD_LABEL};
use crate::reconcile::Memory;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::{self, Health};

/// The field manager (and event reporter) name of the operator.
pub const MANAGER: &str = "lro-operator";

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The CRDs are not installed.
    #[error("the LongRunningOperation CRD is not installed (apply crds/): {0}")]
    CrdMissing(kube::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// Leader election failed, or this replica lost the leadership.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// The health/metrics server could not start.
    #[error(transparent)]
    Health(#[from] crate::telemetry::server::ServerError),
    /// The admission webhook server could not start.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

/// Why one reconcile failed (the object is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Writing the status failed.
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    /// Adding or removing the `onDelete: Cancel` finalizer failed.
    #[error("cannot update finalizers: {0}")]
    Finalizer(#[source] kube::Error),
    /// The object has no namespace or uid (should not happen for a stored object).
    #[error("object is missing {0}")]
    Malformed(&'static str),
    /// A dependency of `spec.dependsOn` could not be read.
    #[error("cannot read the dependencies: {0}")]
    Dependencies(#[source] kube::Error),
}

/// What this process remembers of one operation.
#[derive(Clone, Debug)]
pub struct Remembered {
    /// Poll history.
    pub memory: Memory,
    /// The status last written, until the watch cache holds it (the cache may lag behind).
    pub status: Option<crate::api::LongRunningOperationStatus>,
    /// When the next poll was scheduled (for `lro_poll_lateness_seconds`).
    pub poll_due: Option<jiff::Timestamp>,
}

/// The watch caches a reconcile reads.
pub struct Caches {
    /// `OperationProvider`s (of the watched namespace, or all).
    pub providers: cache::Cache<OperationProvider>,
    /// `ClusterOperationProvider`s.
    pub cluster_providers: cache::Cache<ClusterOperationProvider>,
    /// The operations this replica handles (the controller's own store).
    pub operations: cache::Cache<LongRunningOperation>,
}

/// Shared state of the reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Every provider's dialect, client and credentials.
    pub providers: provider_registry::Registry,
    /// Events for `kubectl describe`.
    pub recorder: Recorder,
    /// Per-operation poll memory and last written status, by uid.
    pub memory: Mutex<HashMap<String, Remembered>>,
    /// The operator's configuration.
    pub config: Config,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may send upstream requests (it holds the Lease).
    pub leadership: leader::Leadership,
    /// Providers and operations, from watches.
    pub caches: Caches,
    /// The providers' rate limits.
    pub rate_limits: crate::upstream::rate_limit::RateLimits,
    /// Each namespace's share of the upstream requests in flight.
    pub fair_share: fair_share::FairShare,
    /// What the upstream last said of each handle: list sweeps and shared polls.
    pub observations: observations::Observations,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let server = server::serve(
        config.health_addr,
        Arc::clone(&metrics),
        Arc::clone(&health),
    )
    .await?;
    // Every replica serves the webhook, leader or standby.
    let webhook = match &config.webhook {
        Some((addr, dir)) => Some(crate::webhook::serve(*addr, dir).await?),
        None => None,
    };
    // Every request to the apiserver is counted (`lro_apiserver_requests_total`).
    let client = kube::client::ClientBuilder::try_from(
        kube::Config::infer()
            .await
            .map_err(|e| RunError::Kube(kube::Error::InferConfig(e)))?,
    )?
    .with_layer(&crate::telemetry::apiserver::CountRequests::new(
        Arc::clone(&metrics),
    ))
    // One tenant's object nested too deep must not stop the watches (see `nesting`).
    .with_layer(&crate::nesting::PruneNesting)
    .build();
    let operations: Api<LongRunningOperation> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    operations
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    let providers_registry = provider_registry::Registry::new(
        client.clone(),
        config.client,
        config.operator_namespace.clone(),
        Arc::clone(&metrics),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let concurrency = config.concurrency;
    let providers: Api<OperationProvider> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let cluster_providers: Api<ClusterOperationProvider> = Api::all(client.clone());
    let ctx_shard_selector = config.shard_selector.clone();
    let ctx_namespace_concurrency = config.namespace_concurrency;
    let leadership = leader::Leadership::new(&config.leader);
    // The watches: the operations (the controller's trigger and store) and the providers (read
    // by every reconcile from their caches; a change wakes the operations that use them).
    let mut operations_watch = watcher::Config::default().any_semantic();
    if let Some(selector) = ctx_shard_selector.as_deref() {
        operations_watch = operations_watch.labels(selector);
    }
    let (operations_cache, operation_events) =
        cache::Cache::new(watcher(operations, operations_watch));
    let (providers_cache, provider_events) =
        cache::Cache::new(watcher(providers, watcher::Config::default()));
    let (cluster_providers_cache, cluster_provider_events) =
        cache::Cache::new(watcher(cluster_providers, watcher::Config::default()));
    let reader = operations_cache.store().clone();
    let ctx = Arc::new(Context {
        leadership: leadership.clone(),
        client,
        providers: providers_registry,
        recorder,
        memory: Mutex::new(HashMap::new()),
        config,
        metrics: Arc::clone(&metrics),
        caches: Caches {
            providers: providers_cache,
            cluster_providers: cluster_providers_cache,
            operations: operations_cache,
        },
        rate_limits: Default::default(),
        fair_share: fair_share::FairShare::new(ctx_namespace_concurrency),
        observations: Default::default(),
    });
    tracing::info!(namespace = ?ctx.config.namespace, shard = ?ctx_shard_selector, "lro-operator starting");
    // The operations watch, as `Controller::new` builds it, but observed: its first `InitDone`
    // (the initial list is in the cache) makes a running operator ready. (Waiting on the store's
    // `wait_until_ready()` instead would race the controller's own wait for the one waker slot.)
    let dependents_of = reader.clone();
    let synced = Arc::clone(&health);
    let trigger = operation_events
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) && !synced.is_synced() {
                synced.synced();
                tracing::info!("caches synced");
            }
        })
        .applied_objects()
        // An operation that changes wakes the operations waiting on it (the store already holds
        // the change: the reflector applies an event before passing it on).
        .flat_map(move |changed| {
            let mut woken = Vec::new();
            if let Ok(op) = &changed {
                woken = workflow::dependents(&dependents_of, op)
                    .into_iter()
                    .map(Ok)
                    .collect();
            }
            woken.insert(0, changed);
            futures::stream::iter(woken)
        });
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    let store2 = controller.store();
    metrics.watch_operations(controller.store());
    let lease_client = ctx.client.clone();
    let leader_args = ctx.config.leader.clone();
    let provider_ctx = Arc::clone(&ctx);
    let sweep_ctx = Arc::clone(&ctx);
    // List sweeps wake the objects they have news for.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let controller = controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .reconcile_on(woken)
        // A provider that appears or changes wakes the operations that use it.
        .watches_stream(provider_events.touched_objects(), move |p| {
            provider_lookup::users_of(&store, provider_lookup::Target::Namespaced(&p))
        })
        .watches_stream(cluster_provider_events.touched_objects(), move |p| {
            provider_lookup::users_of(&store2, provider_lookup::Target::Cluster(&p))
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        });
    // The provider controllers (status.conditions, credential rotation) and the list sweeps
    // run alongside.
    let controller = async move {
        futures::future::join3(
            controller,
            provider_status::run(provider_ctx),
            sweeps::run(sweep_ctx, wake),
        )
        .await;
    };
    let running = Arc::clone(&health);
    let controller = async move {
        running.running();
        controller.await;
    };
    // Only the leader runs the controller (watches, polls, starts); a standby is ready too.
    let standby = Arc::clone(&health);
    leader::run(
        lease_client,
        &leader_args,
        &leadership,
        controller,
        move || standby.standby(),
    )
    .await?;
    health.stopping();
    if let Some(webhook) = webhook {
        webhook.shutdown().await;
    }
    server.shutdown().await;
    tracing::info!("lro-operator stopped");
    Ok(())
}

/// A Kubernetes API error without its body.
pub(crate) fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string(),
    }
}
