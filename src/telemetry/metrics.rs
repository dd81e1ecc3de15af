//! Prometheus metrics (`prometheus-client`), served at `/metrics` by [`super::server`].
//!
//! Labels are low-cardinality by design: protocol, provider (`<namespace>/<name>` or,
//! for a cluster provider, `<name>`), request kind, outcome and phase — never an operation's name
//! or namespace.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::api::{LongRunningOperation, Phase};

/// Every phase, in the order the `lro_operations` gauge lists them.
const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Starting,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Cancelling,
    Phase::Cancelled,
    Phase::Blocked,
];

/// The `outcome` labels of `lro_reconciles_total`: `ok` and each kind of reconcile error (see
/// `controller::reconcile`).
pub const RECONCILE_OUTCOMES: [&str; 4] = ["ok", "status_write", "finalizer", "malformed"];

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `lro_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    outcome: &'static str,
}

/// Labels of `lro_upstream_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    provider: String,
    kind: &'static str,
    outcome: &'static str,
}

/// Labels of `lro_upstream_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    protocol: &'static str,
    kind: &'static str,
}

/// Labels of the per-provider counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// Labels of `lro_list_sweeps_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabels {
    provider: String,
    outcome: &'static str,
}

/// Labels of `lro_apiserver_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    verb: &'static str,
    resource: String,
}

/// Labels of `lro_operations`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Which upstream request was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// The start request.
    Start,
    /// A poll.
    Poll,
    /// The cancel request.
    Cancel,
    /// One page of a list sweep (`spec.list`).
    List,
}

impl RequestKind {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Start => "start",
            RequestKind::Poll => "poll",
            RequestKind::Cancel => "cancel",
            RequestKind::List => "list",
        }
    }
}

/// How an upstream request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A 2xx answer the protocol could read.
    Ok,
    /// A 4xx answer other than 429.
    Http4xx,
    /// A 5xx answer.
    Http5xx,
    /// 429 Too Many Requests.
    Throttled,
    /// No answer: connection error, TLS error or timeout.
    Transport,
    /// An answer that could not be used: a 2xx the protocol could not read, a body over the
    /// size cap, or an unexpected status (1xx, 3xx — redirects are not followed).
    Unreadable,
}

impl RequestOutcome {
    /// The outcome implied by an HTTP status alone (a 2xx is `Ok`; see [`RequestOutcome::Unreadable`]).
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => RequestOutcome::Ok,
            429 => RequestOutcome::Throttled,
            400..=499 => RequestOutcome::Http4xx,
            500..=599 => RequestOutcome::Http5xx,
            _ => RequestOutcome::Unreadable,
        }
    }

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Http4xx => "http_4xx",
            RequestOutcome::Http5xx => "http_5xx",
            RequestOutcome::Throttled => "throttled",
            RequestOutcome::Transport => "transport",
            RequestOutcome::Unreadable => "unreadable",
        }
    }
}

/// The `provider` label: `<namespace>/<name>` for an `OperationProvider`, `<name>` for a
/// `ClusterOperationProvider` (`namespace` = `None`).
pub fn provider_label(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// How late a poll is: `now − due`, never negative; `None` when no poll was scheduled
/// (the first poll after a restart, or after a start).
pub fn poll_lateness(due: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Option<Duration> {
    let due = due?;
    let late = now.duration_since(due);
    Some(Duration::try_from(late).unwrap_or(Duration::ZERO))
}

/// The operator's metrics: one registry and its families, shared by every reconcile.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    upstream_requests: Family<RequestLabels, Counter>,
    upstream_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    poll_lateness: Histogram,
    token_refreshes: Family<ProviderLabels, Counter>,
    rate_limit_wait: Family<ProviderLabels, Counter<f64>>,
    fair_share_held_back: Counter,
    sweeps: Family<SweepLabels, Counter>,
    status_writes: Counter,
    apiserver_requests: Family<ApiLabels, Counter>,
    operations: Arc<OperationsByPhase>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered (all at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        // Series exist (at 0) from the start, so rates work from the first scrape.
        for outcome in RECONCILE_OUTCOMES {
            let _ = reconciles.get_or_create(&ReconcileLabels { outcome });
        }
        registry.register(
            "lro_reconciles",
            "Reconciles of LongRunningOperations, by outcome (ok, or the error kind)",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "lro_reconcile_duration",
            "Wall time of one reconcile, upstream requests and status writes included",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let upstream_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "lro_upstream_requests",
            "Requests sent to upstream APIs, by protocol, provider, kind (start, poll, cancel) and outcome (ok, http_4xx, http_5xx, throttled, transport, unreadable)",
            upstream_requests.clone(),
        );
        let upstream_duration: Family<DurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 13)));
        registry.register_with_unit(
            "lro_upstream_request_duration",
            "Time from sending an upstream request to having read its answer, by protocol and kind",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let poll_lateness = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]);
        registry.register_with_unit(
            "lro_poll_lateness",
            "How much later than scheduled a poll was sent (actual minus scheduled time); the first poll after a restart is not counted",
            Unit::Seconds,
            poll_lateness.clone(),
        );
        let token_refreshes = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "lro_token_refreshes",
            "Access tokens obtained or refreshed, by provider",
            token_refreshes.clone(),
        );
        let rate_limit_wait = Family::<ProviderLabels, Counter<f64>>::default();
        registry.register_with_unit(
            "lro_rate_limit_wait",
            "Time requests waited for their turn under a provider's spec.rateLimit, by provider",
            Unit::Seconds,
            rate_limit_wait.clone(),
        );
        let fair_share_held_back = Counter::default();
        registry.register(
            "lro_fair_share_held_back",
            "Upstream requests held back because their namespace had --namespace-concurrency requests in flight",
            fair_share_held_back.clone(),
        );
        let sweeps = Family::<SweepLabels, Counter>::default();
        registry.register(
            "lro_list_sweeps",
            "List sweeps of providers with spec.list, by provider and outcome (ok, failed, refused); their pages count as upstream requests of kind list",
            sweeps.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "lro_status_writes",
            "Status writes (server-side apply on the status subresource) of LongRunningOperations",
            status_writes.clone(),
        );
        let apiserver_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "lro_apiserver_requests",
            "Requests sent to the Kubernetes API server, by verb (get, list, watch, create, update, patch, delete) and resource (plural, or plural/subresource)",
            apiserver_requests.clone(),
        );
        let operations = Arc::new(OperationsByPhase::default());
        registry.register_collector(Box::new(Arc::clone(&operations)));
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            upstream_requests,
            upstream_duration,
            poll_lateness,
            token_refreshes,
            rate_limit_wait,
            fair_share_held_back,
            sweeps,
            status_writes,
            apiserver_requests,
            operations,
        }
    }

    /// Counts `lro_operations{phase}` from this cache at every scrape (only the first call counts).
    pub fn watch_operations(&self, store: Store<LongRunningOperation>) {
        let _ = self.operations.store.set(store);
    }

    /// Records one reconcile: `outcome` is `ok` or the error's kind.
    pub fn reconciled(&self, outcome: &'static str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { outcome })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Records a poll sent at `now` that was scheduled for `due` (see [`poll_lateness`]).
    pub fn polled(&self, due: Option<jiff::Timestamp>, now: jiff::Timestamp) {
        if let Some(late) = poll_lateness(due, now) {
            self.poll_lateness.observe(late.as_secs_f64());
        }
    }

    /// Records one status write.
    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Records one request to the Kubernetes API server.
    pub fn apiserver_request(&self, verb: &'static str, resource: String) {
        self.apiserver_requests
            .get_or_create(&ApiLabels { verb, resource })
            .inc();
    }

    /// Records an access token obtained for `provider` (see [`provider_label`]).
    pub fn token_refreshed(&self, provider: &str) {
        self.token_refreshes
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .inc();
    }

    /// Records time a request will wait for its turn under `provider`'s rate limit.
    pub fn rate_limit_waited(&self, provider: &str, waited: Duration) {
        self.rate_limit_wait
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .inc_by(waited.as_secs_f64());
    }

    /// Counts one list sweep of `provider` (its pages are counted as requests).
    pub fn swept(&self, provider: &str, outcome: &'static str) {
        self.sweeps
            .get_or_create(&SweepLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts a request held back by its namespace's fair share.
    pub fn held_back_by_fair_share(&self) {
        self.fair_share_held_back.inc();
    }

    /// A handle that records the upstream requests made for one provider (see [`provider_label`]).
    ///
    /// It also makes the provider's `lro_token_refreshes_total` and
    /// `lro_rate_limit_wait_seconds_total` series exist, at 0 until a token is fetched or a rate
    /// limit waits.
    pub fn upstream(&self, protocol: &'static str, provider: String) -> UpstreamMeter<'_> {
        let labels = ProviderLabels {
            provider: provider.clone(),
        };
        let _ = self.token_refreshes.get_or_create(&labels);
        let _ = self.rate_limit_wait.get_or_create(&labels);
        UpstreamMeter {
            metrics: self,
            protocol,
            provider,
        }
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records the upstream requests made with one provider.
#[derive(Debug)]
pub struct UpstreamMeter<'a> {
    metrics: &'a Metrics,
    protocol: &'static str,
    provider: String,
}

impl UpstreamMeter<'_> {
    /// Records one request that was sent (requests refused before sending are not counted).
    pub fn record(&self, kind: RequestKind, outcome: RequestOutcome, elapsed: Duration) {
        self.metrics
            .upstream_requests
            .get_or_create(&RequestLabels {
                protocol: self.protocol,
                provider: self.provider.clone(),
                kind: kind.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.metrics
            .upstream_duration
            .get_or_create(&DurationLabels {
                protocol: self.protocol,
                kind: kind.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// `lro_operations{phase}`, counted from the controller's cache at scrape time: always right,
/// restarts included, and no bookkeeping on transitions.
#[derive(Debug, Default)]
struct OperationsByPhase {
    store: OnceLock<Store<LongRunningOperation>>,
}

impl OperationsByPhase {
    /// The number of operations in each phase of [`PHASES`]; an object without a phase yet counts
    /// as `Pending`.
    fn counts(&self) -> [i64; PHASES.len()] {
        let mut counts = [0; PHASES.len()];
        let Some(store) = self.store.get() else {
            return counts;
        };
        for op in store.state() {
            let phase = op
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        counts
    }
}

impl Collector for OperationsByPhase {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.counts();
        let mut family = encoder.encode_descriptor(
            "lro_operations",
            "LongRunningOperations in the operator's cache, by phase (objects without a phase yet count as Pending)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (phase, count) in PHASES.iter().zip(counts) {
            let labels = PhaseLabels {
                phase: phase.as_str(),
            };
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: f64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000)
            .unwrap()
            .checked_add(jiff::SignedDuration::from_secs_f64(secs))
            .unwrap()
    }

    /// The value of the sample line that starts with `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
    }

    #[test]
    fn every_family_is_registered_and_the_output_is_openmetrics() {
        let metrics = Metrics::new();
        // Families print once they have a series; a provider's meter creates its per-provider ones.
        let _ = metrics.upstream("google", provider_label(Some("ns"), "p"));
        let text = metrics.encode().unwrap();
        for (name, kind) in [
            ("lro_reconciles", "counter"),
            ("lro_reconcile_duration_seconds", "histogram"),
            ("lro_operations", "gauge"),
            ("lro_poll_lateness_seconds", "histogram"),
            ("lro_token_refreshes", "counter"),
            ("lro_rate_limit_wait_seconds", "counter"),
            ("lro_fair_share_held_back", "counter"),
            ("lro_status_writes", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "no {kind} {name} in\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains(".."), "help ends with one period: {text}");
        assert_eq!(sample(&text, "lro_status_writes_total"), Some(0.0));
        for outcome in RECONCILE_OUTCOMES {
            let series = format!("lro_reconciles_total{{outcome=\"{outcome}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for family in [
            "lro_token_refreshes_total",
            "lro_rate_limit_wait_seconds_total",
        ] {
            let series = format!("{family}{{provider=\"ns/p\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        // Without a cache every phase reads 0, so the series exist from the first scrape.
        for phase in PHASES {
            let series = format!("lro_operations{{phase=\"{}\"}}", phase.as_str());
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn upstream_requests_are_counted_by_protocol_provider_kind_and_outcome() {
        let metrics = Metrics::new();
        let meter = metrics.upstream("google", provider_label(Some("team-a"), "cloud"));
        meter.record(
            RequestKind::Poll,
            RequestOutcome::Ok,
            Duration::from_millis(20),
        );
        meter.record(
            RequestKind::Poll,
            RequestOutcome::Ok,
            Duration::from_millis(30),
        );
        meter.record(
            RequestKind::Start,
            RequestOutcome::of_status(429),
            Duration::from_millis(5),
        );
        metrics
            .upstream("google", provider_label(None, "shared"))
            .record(
                RequestKind::Cancel,
                RequestOutcome::of_status(503),
                Duration::from_secs(1),
            );
        let text = metrics.encode().unwrap();
        let series = |labels: &str| format!("lro_upstream_requests_total{{{labels}}}");
        assert_eq!(
            sample(
                &text,
                &series(r#"protocol="google",provider="team-a/cloud",kind="poll",outcome="ok""#)
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &series(
                    r#"protocol="google",provider="team-a/cloud",kind="start",outcome="throttled""#
                )
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &series(r#"protocol="google",provider="shared",kind="cancel",outcome="http_5xx""#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"lro_upstream_request_duration_seconds_count{protocol="google",kind="poll"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"lro_upstream_request_duration_seconds_sum{protocol="google",kind="poll"}"#
            ),
            Some(0.05)
        );
    }

    #[test]
    fn outcomes_follow_the_status_code() {
        let cases = [
            (200, "ok"),
            (204, "ok"),
            (302, "unreadable"),
            (400, "http_4xx"),
            (404, "http_4xx"),
            (429, "throttled"),
            (500, "http_5xx"),
            (503, "http_5xx"),
        ];
        for (status, label) in cases {
            assert_eq!(
                RequestOutcome::of_status(status).as_str(),
                label,
                "{status}"
            );
        }
        assert_eq!(RequestKind::Poll.as_str(), "poll");
    }

    #[test]
    fn reconciles_status_writes_and_future_counters() {
        let metrics = Metrics::new();
        metrics.reconciled("ok", Duration::from_millis(12));
        metrics.reconciled("status_write", Duration::from_millis(40));
        metrics.status_written();
        metrics.token_refreshed("ns/p");
        metrics.rate_limit_waited("ns/p", Duration::from_millis(250));
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(&text, r#"lro_reconciles_total{outcome="ok"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"lro_reconciles_total{outcome="status_write"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "lro_reconcile_duration_seconds_count"),
            Some(2.0)
        );
        assert_eq!(sample(&text, "lro_status_writes_total"), Some(1.0));
        assert_eq!(
            sample(&text, r#"lro_token_refreshes_total{provider="ns/p"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"lro_rate_limit_wait_seconds_total{provider="ns/p"}"#
            ),
            Some(0.25)
        );
    }

    #[test]
    fn lateness_is_actual_minus_scheduled_and_never_negative() {
        assert_eq!(poll_lateness(None, t(5.0)), None);
        assert_eq!(
            poll_lateness(Some(t(10.0)), t(12.5)),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(poll_lateness(Some(t(10.0)), t(10.0)), Some(Duration::ZERO));
        assert_eq!(poll_lateness(Some(t(10.0)), t(9.0)), Some(Duration::ZERO));

        let metrics = Metrics::new();
        metrics.polled(Some(t(10.0)), t(10.3));
        metrics.polled(Some(t(10.0)), t(17.0));
        metrics.polled(None, t(20.0));
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, "lro_poll_lateness_seconds_count"), Some(2.0));
        assert_eq!(
            sample(&text, r#"lro_poll_lateness_seconds_bucket{le="0.5"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"lro_poll_lateness_seconds_bucket{le="10.0"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn provider_labels_name_the_namespace_only_for_namespaced_providers() {
        assert_eq!(provider_label(Some("team-a"), "cloud"), "team-a/cloud");
        assert_eq!(provider_label(None, "cloud"), "cloud");
    }
}
