//! The operator's configuration: the flags of `lro-operator run` ([`RunArgs`]) and what they
//! mean, resolved once at start ([`Config`]): every default and clamp has its home here or in
//! the pure module that uses it (`reconcile::policy`, `reconcile::schedule`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::parse_duration;
use crate::reconcile::policy::Defaults;
use crate::reconcile::{DEFAULT_MAX_STATUS_RESULT, Schedule};
use crate::upstream::{AddressPolicy, ClientSettings, DEFAULT_MAX_BODY, UrlScope};

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
    /// Upstream requests one namespace may have in flight at once; a namespace over it waits
    /// (its reconcile frees the worker and comes back within two seconds), so that a slow
    /// upstream in one namespace does not hold every worker. 0: a quarter of `--concurrency`.
    #[arg(long, default_value_t = 0)]
    pub namespace_concurrency: u16,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Leader election (several replicas, one active).
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// Address of the HTTP server for `/metrics`, `/livez` and `/readyz` (port 0: any free port;
    /// the bound address is logged as `health server listening on ADDR`).
    #[arg(long, env = "LRO_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: std::net::SocketAddr,
    /// Allow every provider to reach loopback and private addresses (a cluster admin's decision:
    /// a namespaced provider cannot open them itself). Link-local and cloud-metadata addresses
    /// stay refused.
    #[arg(long, env = "LRO_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: bool,
    /// The operator's own namespace, where `ClusterOperationProvider`s' Secrets are read
    /// (default: `POD_NAMESPACE`, else the service account's namespace when in a pod).
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Largest `status.result` copied into an operation's status, in bytes (JSON); a larger
    /// result is left out, with a `ResultTruncated` condition.
    #[arg(long, default_value_t = DEFAULT_MAX_STATUS_RESULT)]
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

/// The Lease name when `--lease-name` is not given (with `--shard`, `lro-operator-<shard>`).
pub const DEFAULT_LEASE_NAME: &str = "lro-operator";

/// Leader election flags of `lro-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Run the controller only while holding the Lease, so that several replicas can run
    /// (`--leader-elect=false` for a single process).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a Lease stays valid without renewal: a failover takes at most this long
    /// (whole seconds, at least 3s).
    #[arg(long, default_value = "15s", value_parser = crate::api::parse_duration)]
    pub lease_duration: Duration,
}

/// The namespace of the pod's service account, when running in a pod.
pub fn service_account_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
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

/// The operator's configuration, built once from [`RunArgs`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// The label selector of the operations this replica handles (`None`: all).
    pub shard_selector: Option<String>,
    /// The operator's own namespace (cluster providers' Secrets), when known.
    pub operator_namespace: Option<String>,
    /// What operations and providers leave unset.
    pub defaults: Defaults,
    /// How upstream clients are built (timeout, body cap, the operator-wide address policy).
    pub client: ClientSettings,
    /// Leader election (the Lease name already made per-shard).
    pub leader: LeaderArgs,
    /// Operations reconciled at once.
    pub concurrency: u16,
    /// Upstream requests in flight per namespace (at least 1).
    pub namespace_concurrency: usize,
    /// The health, metrics and readiness server.
    pub health_addr: SocketAddr,
    /// The admission webhook's address and certificate folder, when it runs.
    pub webhook: Option<(SocketAddr, PathBuf)>,
    /// JSON logs.
    pub log_json: bool,
}

impl Config {
    /// Resolves the flags: the shard's selector and Lease name, the schedule's clamps, `0` as
    /// "no default timeout", the operator namespace from the service account when unset.
    pub fn from_args(args: RunArgs) -> Config {
        let shard_selector = match (&args.shard, args.exclude_shards.as_slice()) {
            (Some(shard), _) => Some(format!("{SHARD_LABEL}={shard}")),
            (None, []) => None,
            (None, excluded) => Some(format!("{SHARD_LABEL} notin ({})", excluded.join(","))),
        };
        let mut leader = args.leader;
        if let Some(shard) = &args.shard
            && leader.lease_name == DEFAULT_LEASE_NAME
        {
            leader.lease_name = format!("{}-{shard}", DEFAULT_LEASE_NAME);
        }
        Config {
            namespace: args.namespace,
            shard_selector,
            operator_namespace: args.operator_namespace.or_else(service_account_namespace),
            defaults: Defaults {
                schedule: Schedule::new(
                    args.initial_interval,
                    args.max_interval,
                    args.multiplier,
                    args.jitter,
                ),
                timeout: (!args.default_timeout.is_zero()).then_some(args.default_timeout),
                not_found_grace: args.not_found_grace,
                max_status_result_bytes: args.max_status_result_bytes,
            },
            client: ClientSettings {
                timeout: args.request_timeout,
                max_body: args.max_response_bytes,
                policy: AddressPolicy {
                    allow_private: args.allow_private_networks,
                },
                // Each provider's dialect chooses (see `Dialect::url_scope`).
                url_scope: UrlScope::BasePath,
            },
            leader,
            concurrency: args.concurrency,
            namespace_concurrency: match args.namespace_concurrency {
                0 => usize::from(args.concurrency / 4).max(1),
                n => usize::from(n),
            },
            health_addr: args.health_addr,
            webhook: args.webhook_addr.zip(args.webhook_cert_dir),
            log_json: args.log_json,
        }
    }
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

    fn parse(flags: &[&str]) -> Result<Config, clap::Error> {
        Run::try_parse_from(std::iter::once("run").chain(flags.iter().copied()))
            .map(|r| Config::from_args(r.args))
    }

    #[test]
    fn shard_flags_select_the_operations_by_label() {
        let all = parse(&[]).expect("no flags");
        assert_eq!(all.shard_selector, None);
        let a = parse(&["--shard", "a"]).expect("--shard a");
        assert_eq!(a.shard_selector.as_deref(), Some("lro.dev/shard=a"));
        assert_eq!(a.leader.lease_name, "lro-operator-a");
        let rest = parse(&["--exclude-shards", "a,b.2"]).expect("--exclude-shards");
        assert_eq!(
            rest.shard_selector.as_deref(),
            Some("lro.dev/shard notin (a,b.2)")
        );
        // Both at once, or a name that is not a label value, is refused with what to fix.
        assert!(parse(&["--shard", "a", "--exclude-shards", "b"]).is_err());
        let bad = parse(&["--shard=-a"]).expect_err("-a is refused");
        assert!(bad.to_string().contains("not a valid shard name"), "{bad}");
        assert!(parse(&["--exclude-shards", "a,b c"]).is_err());
    }

    #[test]
    fn defaults_are_resolved_once_with_their_clamps() {
        let config = parse(&[
            "--multiplier",
            "0.5",
            "--jitter",
            "0.9",
            "--default-timeout",
            "0",
        ])
        .expect("flags");
        assert_eq!(config.defaults.schedule.multiplier, 1.0);
        assert_eq!(config.defaults.schedule.jitter, 0.5);
        assert_eq!(config.defaults.timeout, None);
        let config = parse(&[]).expect("no flags");
        assert_eq!(
            config.defaults.timeout,
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(config.defaults.schedule, Schedule::default());
    }
}
