//! kube-runtime wiring: the watch, the reconcile loop (observe → decide → act → write status),
//! provider resolution, status writes and Kubernetes Events.

mod act;
pub mod cache;
pub mod credentials;
mod finalizer;
pub mod leader;
pub mod outputs;
mod provider;
mod providers;
mod reconcile;
mod status;
pub mod workflow;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::{
    ClusterOperationProvider, LongRunningOperation, OperationProvider, parse_duration,
};
use crate::reconcile::{Memory, Schedule};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::{self, Health};
use crate::upstream::{AddressPolicy, ClientSettings, DEFAULT_MAX_BODY};

/// The field manager (and event reporter) name of the operator.
pub const MANAGER: &str = "lro-operator";

/// Flags of `lro-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "LRO_NAMESPACE")]
    pub namespace: Option<String>,
    /// Handle only the operations labelled `lro.dev/shard=<SHARD>`: several replicas, each with
    /// its own shard, split the operations with no overlap. Each shard elects its own leader
    /// (the default Lease name becomes `lro-operator-<SHARD>`).
    #[arg(long, env = "LRO_SHARD", value_parser = parse_shard, conflicts_with = "exclude_shards")]
    pub shard: Option<String>,
    /// Handle only the operations whose `lro.dev/shard` label is none of these (unlabelled ones
    /// included): the catch-all replica next to `--shard` ones. Comma-separated.
    #[arg(long, env = "LRO_EXCLUDE_SHARDS", value_delimiter = ',', value_parser = parse_shard)]
    pub exclude_shards: Vec<String>,
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
    /// Deadline of every operation whose own `spec.polling.timeout` and whose provider's
    /// `spec.polling.timeout` are unset: past it the operation fails with reason `Timeout`
    /// (the upstream operation is not cancelled). `0` turns it off (no deadline).
    #[arg(long, env = "LRO_DEFAULT_TIMEOUT", default_value = "24h", value_parser = parse_optional_duration)]
    pub default_timeout: Duration,
    /// How long an operation may answer "not found" (404/410) before it fails as expired.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub not_found_grace: Duration,
    /// Timeout of one upstream HTTP request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest upstream response body read, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    pub max_response_bytes: usize,
    /// Operations reconciled at once (each holds a worker while it talks to the apiserver and
    /// the upstream; with slow upstreams and thousands of operations, more may be needed).
    #[arg(long, default_value_t = 128)]
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
    /// Allow every provider to reach loopback and private addresses (as if each had
    /// `spec.allowPrivateNetworks: true`). Link-local and cloud-metadata addresses stay refused.
    #[arg(long, env = "LRO_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,
    /// The operator's own namespace, where `ClusterOperationProvider`s' Secrets are read
    /// (default: `POD_NAMESPACE`, else the service account's namespace when in a pod).
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Largest `status.result` copied into an operation's status, in bytes (JSON); a larger
    /// result is left out, with a `ResultTruncated` condition.
    #[arg(long, default_value_t = crate::reconcile::DEFAULT_MAX_STATUS_RESULT)]
    pub max_status_result_bytes: usize,
    /// Address of the validating admission webhook (HTTPS, `POST /validate`), which refuses
    /// providers whose CEL expressions do not compile. Unset: no webhook server runs.
    #[arg(long, env = "LRO_WEBHOOK_ADDR", requires = "webhook_cert_dir")]
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// Directory holding the webhook's serving certificate, `tls.crt` and `tls.key` (a mounted
    /// `kubernetes.io/tls` Secret); read again when the files change.
    #[arg(long, env = "LRO_WEBHOOK_CERT_DIR", requires = "webhook_addr")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
}

/// A duration as `parse_duration` reads it, or `0` for none.
fn parse_optional_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| e.to_string())
}

/// The label that assigns an operation to a shard (see `--shard`).
pub const SHARD_LABEL: &str = "lro.dev/shard";

/// A shard name: a valid label value.
fn parse_shard(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid shard name (a label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

impl RunArgs {
    /// The label selector of the operations this replica handles (`None`: all of them).
    pub fn shard_selector(&self) -> Option<String> {
        match (&self.shard, self.exclude_shards.as_slice()) {
            (Some(shard), _) => Some(format!("{SHARD_LABEL}={shard}")),
            (None, []) => None,
            (None, excluded) => Some(format!("{SHARD_LABEL} notin ({})", excluded.join(","))),
        }
    }

    /// The operator-wide default deadline of an operation (`None`: `--default-timeout 0`).
    pub fn default_timeout(&self) -> Option<Duration> {
        (!self.default_timeout.is_zero()).then_some(self.default_timeout)
    }

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
    /// The upstream HTTP clients, one per provider, with their credentials.
    pub clients: credentials::Clients,
    /// Events for `kubectl describe`.
    pub recorder: Recorder,
    /// Per-operation poll memory and last written status, by uid.
    pub memory: Mutex<HashMap<String, Remembered>>,
    /// The operator's flags.
    pub args: RunArgs,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may send upstream requests (it holds the Lease).
    pub leadership: leader::Leadership,
    /// Providers and operations, from watches.
    pub caches: Caches,
    /// The providers' rate limits.
    pub rate_limits: crate::upstream::rate_limit::RateLimits,
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(mut args: RunArgs) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let server = server::serve(args.health_addr, Arc::clone(&metrics), Arc::clone(&health)).await?;
    // Every replica serves the webhook, leader or standby.
    let webhook = match (args.webhook_addr, &args.webhook_cert_dir) {
        (Some(addr), Some(dir)) => Some(crate::webhook::serve(addr, dir).await?),
        _ => None,
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
    .build();
    let operations: Api<LongRunningOperation> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    operations
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    args.operator_namespace = args
        .operator_namespace
        .take()
        .or_else(credentials::service_account_namespace);
    let clients = credentials::Clients::new(
        client.clone(),
        ClientSettings {
            timeout: args.request_timeout,
            max_body: args.max_response_bytes,
            policy: AddressPolicy {
                allow_private: args.allow_private_networks,
            },
        },
        args.operator_namespace.clone(),
        Arc::clone(&metrics),
    );
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
    let ctx_shard_selector = args.shard_selector();
    if let Some(shard) = &args.shard
        && args.leader.lease_name == leader::DEFAULT_LEASE_NAME
    {
        args.leader.lease_name = format!("{}-{shard}", leader::DEFAULT_LEASE_NAME);
    }
    let leadership = leader::Leadership::new(&args.leader);
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
        clients,
        recorder,
        memory: Mutex::new(HashMap::new()),
        args,
        metrics: Arc::clone(&metrics),
        caches: Caches {
            providers: providers_cache,
            cluster_providers: cluster_providers_cache,
            operations: operations_cache,
        },
        rate_limits: Default::default(),
    });
    tracing::info!(namespace = ?ctx.args.namespace, shard = ?ctx_shard_selector, "lro-operator starting");
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
    let leader_args = ctx.args.leader.clone();
    let provider_ctx = Arc::clone(&ctx);
    let controller = controller
        .with_config(controller::Config::default().concurrency(concurrency))
        // A provider that appears or changes wakes the operations that use it.
        .watches_stream(provider_events.touched_objects(), move |p| {
            provider::users_of(&store, provider::Target::Namespaced(&p))
        })
        .watches_stream(cluster_provider_events.touched_objects(), move |p| {
            provider::users_of(&store2, provider::Target::Cluster(&p))
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        });
    // The provider controllers (status.conditions, credential rotation) run alongside.
    let controller = async move {
        futures::future::join(controller, providers::run(provider_ctx)).await;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(flags: &[&str]) -> Result<RunArgs, clap::Error> {
        Run::try_parse_from(std::iter::once("run").chain(flags.iter().copied())).map(|r| r.args)
    }

    #[test]
    fn shard_flags_select_the_operations_by_label() {
        let all = parse(&[]).expect("no flags");
        assert_eq!(all.shard_selector(), None);
        let a = parse(&["--shard", "a"]).expect("--shard a");
        assert_eq!(a.shard_selector().as_deref(), Some("lro.dev/shard=a"));
        let rest = parse(&["--exclude-shards", "a,b.2"]).expect("--exclude-shards");
        assert_eq!(
            rest.shard_selector().as_deref(),
            Some("lro.dev/shard notin (a,b.2)")
        );
        // Both at once, or a name that is not a label value, is refused with what to fix.
        assert!(parse(&["--shard", "a", "--exclude-shards", "b"]).is_err());
        let bad = parse(&["--shard=-a"]).expect_err("-a is refused");
        assert!(bad.to_string().contains("not a valid shard name"), "{bad}");
        assert!(parse(&["--exclude-shards", "a,b c"]).is_err());
    }
}
