//! kube-runtime wiring: the watch, the reconcile loop (observe → decide → act → write status),
//! provider resolution, status writes and Kubernetes Events.

mod act;
mod finalizer;
pub mod leader;
mod provider;
mod reconcile;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::api::{
    ClusterOperationProvider, LongRunningOperation, OperationProvider, parse_duration,
};
use crate::reconcile::{Memory, Schedule};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::{self, Health};
use crate::upstream::{DEFAULT_MAX_BODY, Upstream};

/// The field manager (and event reporter) name of the operator.
pub const MANAGER: &str = "lro-operator";

/// Flags of `lro-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "LRO_NAMESPACE")]
    pub namespace: Option<String>,
    /// Default first wait between polls.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub initial_interval: Duration,
    /// Default longest wait between polls.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_interval: Duration,
    /// Default growth of the wait (1 = fixed interval).
    #[arg(long, default_value_t = 1.5)]
    pub multiplier: f64,
    /// Default jitter, as a fraction of the interval (0..=0.5).
    #[arg(long, default_value_t = 0.1)]
    pub jitter: f64,
    /// How long an operation may answer "not found" (404/410) before it fails as expired.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub not_found_grace: Duration,
    /// Timeout of one upstream HTTP request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest upstream response body read, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    pub max_response_bytes: usize,
    /// Operations reconciled at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u16,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Leader election (several replicas, one active).
    #[command(flatten)]
    pub leader: leader::LeaderArgs,
    /// Address of the HTTP server for `/metrics`, `/livez` and `/readyz` (port 0: any free port;
    /// the bound address is logged as `health server listening on ADDR`).
    #[arg(long, env = "LRO_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: std::net::SocketAddr,
}

impl RunArgs {
    /// The operator-wide default schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            initial: self.initial_interval,
            max: self.max_interval,
            multiplier: self.multiplier.max(1.0),
            jitter: self.jitter.clamp(0.0, 0.5),
        }
    }
}

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
}

/// What this process remembers of one operation.
#[derive(Clone, Debug)]
pub struct Remembered {
    /// Poll history.
    pub memory: Memory,
    /// The status last written (the watch cache may lag behind it).
    pub status: crate::api::LongRunningOperationStatus,
    /// When the next poll was scheduled (for `lro_poll_lateness_seconds`).
    pub poll_due: Option<jiff::Timestamp>,
}

/// Shared state of the reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The upstream HTTP client.
    pub upstream: Upstream,
    /// Events for `kubectl describe`.
    pub recorder: Recorder,
    /// Per-operation poll memory and last written status, by uid.
    pub memory: Mutex<HashMap<String, Remembered>>,
    /// The operator's flags.
    pub args: RunArgs,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let server = server::serve(args.health_addr, Arc::clone(&metrics), Arc::clone(&health)).await?;
    let client = Client::try_default().await?;
    let operations: Api<LongRunningOperation> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    operations
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    let upstream = Upstream::new(args.request_timeout, args.max_response_bytes)?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let concurrency = args.concurrency;
    let providers: Api<OperationProvider> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let cluster_providers: Api<ClusterOperationProvider> = Api::all(client.clone());
    let ctx = Arc::new(Context {
        client,
        upstream,
        recorder,
        memory: Mutex::new(HashMap::new()),
        args,
        metrics: Arc::clone(&metrics),
    });
    tracing::info!(namespace = ?ctx.args.namespace, "lro-operator starting");
    let controller = Controller::new(operations, watcher::Config::default().any_semantic());
    let store = controller.store();
    let store2 = controller.store();
    metrics.watch_operations(controller.store());
    // Ready once the operations cache has synced (the controller holds reconciles until then).
    let synced = controller.store();
    let ready = Arc::clone(&health);
    tokio::spawn(async move {
        if synced.wait_until_ready().await.is_ok() {
            ready.set_ready(true);
            tracing::info!("caches synced: ready");
        }
    });
    let lease_client = ctx.client.clone();
    let leader_args = ctx.args.leader.clone();
    let controller = controller
        .with_config(controller::Config::default().concurrency(concurrency))
        // A provider that appears or changes wakes the operations that use it.
        .watches(providers, watcher::Config::default(), move |p| {
            provider::users_of(&store, provider::Target::Namespaced(&p))
        })
        .watches(cluster_providers, watcher::Config::default(), move |p| {
            provider::users_of(&store2, provider::Target::Cluster(&p))
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        });
    // Only the leader runs the controller (watches, polls, starts).
    leader::run(lease_client, &leader_args, controller).await?;
    health.set_ready(false);
    server.shutdown().await;
    tracing::info!("lro-operator stopped");
    Ok(())
}
