//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager).
//!
//! Every replica starts, but only the holder of the Lease runs the controller: it alone watches
//! operations, polls and starts them. The others wait for the Lease, with no watch on operations
//! and no upstream request.
//!
//! Timing, for a lease duration `D` (whole seconds, at least 3):
//! - the leader renews every `D/3`;
//! - it gives up if no renewal went through for `2D/3` (the *renew deadline*, as client-go's
//!   `RenewDeadline`), measured from the renew time recorded in the Lease, which a separate check
//!   reads every `retry` (`D/5`, between 0.5 s and 2 s). That catches a renewal that hangs or keeps
//!   failing (an unreachable apiserver), which kube-lease-manager alone would not report;
//! - a waiting replica takes the Lease once `D` has passed since the last renewal, or as soon as
//!   it sees it released (it reads the Lease every `retry`).
//!
//! So the old leader has stopped `D/3` before anyone else may start, which covers that much clock
//! skew between nodes and the time to stop. The reconciles also check [`Leadership`] before every
//! upstream request, so a leader frozen past its deadline sends nothing when it runs again, even
//! before its check has noticed that another replica took over.
//!
//! Losing the Lease is fail-stop: the controller future is dropped at once (in-flight reconciles
//! are aborted at their next await point, so no further upstream request is made) and [`run`]
//! returns [`LeaderError::Lost`], which makes the process exit non-zero; Kubernetes restarts the
//! container, which then waits for the Lease like any other replica. Nothing of the old term (poll
//! memory, queued reconciles, caches) survives, and a new leader resumes from each operation's
//! status, as after any restart. A graceful stop (SIGTERM) releases the Lease so that a waiting
//! replica takes over at once.

pub use crate::config::{DEFAULT_LEASE_NAME, LeaderArgs};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The shortest lease duration accepted, in seconds.
const MIN_DURATION_SECS: u64 = 3;
/// How long a graceful stop waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why leader election stopped the operator.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// `--lease-duration` is too short.
    #[error("--lease-duration must be at least {MIN_DURATION_SECS}s, not {0:?}")]
    Duration(Duration),
    /// The Lease could not be read or created.
    #[error("cannot use Lease {namespace}/{name}: {source}")]
    Lease {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server said.
        #[source]
        source: LeaseManagerError,
    },
    /// This replica was the leader and is no longer (fail-stop: the process should exit).
    #[error("lost the leadership (Lease {namespace}/{name}): {why}")]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What happened.
        why: String,
    },
}

/// Whether this replica may send upstream requests now; shared by [`run`] and the reconciles,
/// which check it before every upstream request.
///
/// Without leader election it always may. With it, only from taking the Lease until the renew
/// deadline of the last renewal seen. So a leader that was frozen past its deadline (and may
/// have been replaced meanwhile) sends nothing, even before its Lease check has caught up.
#[derive(Clone, Debug)]
pub struct Leadership {
    always: bool,
    until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// Not leading yet if `args` enable leader election; always valid otherwise.
    pub fn new(args: &LeaderArgs) -> Leadership {
        Leadership {
            always: !args.leader_elect,
            until: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether upstream requests are allowed now.
    pub fn is_valid(&self) -> bool {
        self.always || self.until().is_some_and(|until| Instant::now() < until)
    }

    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Valid until `until` (or later, if already).
    fn extend(&self, until: Instant) {
        let mut current = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Some(current.map_or(until, |c| c.max(until)));
    }

    fn revoke(&self) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The timing derived from the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    /// Lease validity without renewal, whole seconds.
    duration_secs: u64,
    /// kube-lease-manager renews this long before the lease would expire (whole seconds).
    grace_secs: u64,
    /// The leader gives up when its last renewal is older than this.
    renew_deadline: Duration,
    /// Pause between failed attempts, and between checks of the Lease.
    retry: Duration,
}

impl Timing {
    fn new(duration: Duration) -> Result<Timing, LeaderError> {
        let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        if secs < MIN_DURATION_SECS {
            return Err(LeaderError::Duration(duration));
        }
        let renew_every = (secs / 3).max(1);
        let d = Duration::from_secs(secs);
        Ok(Timing {
            duration_secs: secs,
            grace_secs: secs - renew_every,
            renew_deadline: d * 2 / 3,
            retry: (d / 5).clamp(Duration::from_millis(500), Duration::from_secs(2)),
        })
    }
}

/// This replica's name in the Lease: `POD_NAME`, else `<hostname>-<pid>`.
pub fn identity() -> String {
    identity_from(
        std::env::var("POD_NAME").ok(),
        hostname(),
        std::process::id(),
    )
}

fn identity_from(pod_name: Option<String>, hostname: Option<String>, pid: u32) -> String {
    match pod_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => name.trim().to_owned(),
        None => format!(
            "{}-{pid}",
            hostname.unwrap_or_else(|| "lro-operator".to_owned())
        ),
    }
}

fn hostname() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_proc = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env
        .or_else(from_proc)
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Runs `controller` — the future that watches, polls and starts — under leader election.
///
/// Without `--leader-elect` it simply runs it. Otherwise it calls `standing_by` (a waiting
/// replica is healthy and ready to take over: readiness must not depend on leadership), waits
/// for the Lease (returning `Ok` on SIGTERM/SIGINT meanwhile), then runs `controller` while
/// renewing the Lease and keeping `leadership` up to date. When `controller` ends (a graceful
/// stop) the Lease is released and `Ok` returned. When the Lease is lost, `leadership` is
/// revoked, `controller` is dropped at once and [`LeaderError::Lost`] returned.
pub async fn run<F>(
    client: Client,
    args: &LeaderArgs,
    leadership: &Leadership,
    controller: F,
    standing_by: impl FnOnce(),
) -> Result<(), LeaderError>
where
    F: Future<Output = ()>,
{
    if !args.leader_elect {
        info!("leader election disabled: running the controller");
        controller.await;
        return Ok(());
    }
    let timing = Timing::new(args.lease_duration)?;
    let identity = identity();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let candidate = Candidate {
        client,
        args,
        leases: &leases,
        identity: &identity,
        timing,
    };
    let manager = candidate.manager().await?;
    standing_by();
    info!(
        identity,
        lease = %format!("{}/{}", args.lease_namespace, args.lease_name),
        duration_secs = timing.duration_secs,
        "waiting to become the leader"
    );
    let manager = tokio::select! {
        manager = candidate.acquire(manager) => manager,
        () = shutdown_signal() => {
            info!("stopping before becoming the leader");
            return Ok(());
        }
    };
    leadership.extend(Instant::now() + timing.renew_deadline);
    info!(identity, "became the leader: starting the controller");
    let held = Held {
        manager: &manager,
        leases: &leases,
        name: &args.lease_name,
        identity: &identity,
        timing,
        leadership,
    };
    tokio::select! {
        // Dropping `controller` here aborts every in-flight reconcile.
        why = held.lost() => {
            error!(identity, why, "lost the leadership: stopping the controller");
            Err(LeaderError::Lost {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                why,
            })
        }
        () = controller => {
            match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
                Ok(Ok(())) => info!(identity, "released the Lease"),
                Ok(Err(e)) => warn!(identity, error = %e, "cannot release the Lease"),
                Err(_) => warn!(identity, "releasing the Lease timed out"),
            }
            Ok(())
        }
    }
}

/// A replica waiting for the Lease.
struct Candidate<'a> {
    client: Client,
    args: &'a LeaderArgs,
    leases: &'a Api<Lease>,
    identity: &'a str,
    timing: Timing,
}

impl Candidate<'_> {
    /// A lease manager for this replica (creates the Lease if it does not exist).
    async fn manager(&self) -> Result<LeaseManager, LeaderError> {
        LeaseManagerBuilder::new(self.client.clone(), &self.args.lease_name)
            .with_namespace(&self.args.lease_namespace)
            .with_identity(self.identity)
            .with_duration(self.timing.duration_secs)
            .with_grace(self.timing.grace_secs)
            .build()
            .await
            .map_err(|source| LeaderError::Lease {
                namespace: self.args.lease_namespace.clone(),
                name: self.args.lease_name.clone(),
                source,
            })
    }

    /// Waits until this replica holds the Lease; returns the manager that holds it.
    async fn acquire(&self, mut manager: LeaseManager) -> LeaseManager {
        loop {
            let freed = tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(true) => return manager,
                    Ok(false) => false,
                    Err(e) => {
                        warn!(error = %e, "cannot read or take the Lease; retrying");
                        tokio::time::sleep(self.timing.retry).await;
                        false
                    }
                },
                () = self.freed() => true,
            };
            // kube-lease-manager looks at a held Lease again only when it expires: to take a
            // released one at once (a graceful handover), start with a fresh manager.
            if freed {
                debug!("the Lease was released: trying to take it");
                match self.manager().await {
                    Ok(fresh) => manager = fresh,
                    Err(e) => warn!(error = %e, "cannot read or create the Lease; retrying"),
                }
            }
        }
    }

    /// Reads the Lease every `retry`; returns once it has no holder (or no longer exists).
    async fn freed(&self) {
        loop {
            tokio::time::sleep(self.timing.retry).await;
            let read = tokio::time::timeout(
                self.timing.retry,
                self.leases.get_opt(&self.args.lease_name),
            );
            match read.await {
                Ok(Ok(Some(lease))) if holder_of(&lease).is_some() => {}
                Ok(Ok(_)) => return,
                Ok(Err(e)) => debug!(error = %e, "cannot read the Lease"),
                Err(_) => debug!("reading the Lease timed out"),
            }
        }
    }
}

/// The Lease while this replica holds it.
struct Held<'a> {
    manager: &'a LeaseManager,
    leases: &'a Api<Lease>,
    name: &'a str,
    identity: &'a str,
    timing: Timing,
    leadership: &'a Leadership,
}

impl Held<'_> {
    /// Renews the Lease until it is lost; then revokes the leadership (before the controller is
    /// dropped, so that no reconcile still running sends a request) and returns why.
    async fn lost(&self) -> String {
        let why = tokio::select! {
            why = self.renew() => why,
            why = self.check() => why,
        };
        self.leadership.revoke();
        why
    }

    /// Keeps kube-lease-manager renewing; returns when it reports the Lease taken by another.
    async fn renew(&self) -> String {
        loop {
            match self.manager.changed().await {
                Ok(false) => return "another replica holds the Lease".to_owned(),
                Ok(true) => {}
                Err(e) => {
                    warn!(error = %e, "cannot renew the Lease; retrying");
                    tokio::time::sleep(self.timing.retry).await;
                }
            }
        }
    }

    /// Reads the Lease every `retry`; returns when another replica holds it, or when the last
    /// renewal it shows is older than the renew deadline (whatever the reason: failing or
    /// hanging requests, an unreachable API server).
    async fn check(&self) -> String {
        loop {
            tokio::time::sleep(self.timing.retry).await;
            match tokio::time::timeout(self.timing.retry, self.leases.get(self.name)).await {
                Ok(Ok(lease)) => {
                    let spec = lease.spec.unwrap_or_default();
                    match spec.holder_identity {
                        Some(holder) if holder == self.identity => {
                            if let Some(renewed) = spec.renew_time {
                                self.leadership.extend(self.deadline_after(renewed.0));
                            }
                        }
                        Some(holder) => return format!("{holder} holds the Lease"),
                        None => return "the Lease was released".to_owned(),
                    }
                }
                Ok(Err(e)) => debug!(error = %e, "cannot read the Lease"),
                Err(_) => debug!("reading the Lease timed out"),
            }
            if !self.leadership.is_valid() {
                return format!(
                    "the Lease was not renewed for {:?} (the renew deadline)",
                    self.timing.renew_deadline
                );
            }
        }
    }

    /// The renew deadline of a renewal at `renewed` (our own clock wrote it), as an `Instant`.
    fn deadline_after(&self, renewed: jiff::Timestamp) -> Instant {
        let renewed = SystemTime::from(renewed);
        let age = SystemTime::now()
            .duration_since(renewed)
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        match self.timing.renew_deadline.checked_sub(age) {
            Some(left) => now + left,
            None => now,
        }
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_lease_duration() {
        let t = Timing::new(Duration::from_secs(15)).unwrap();
        assert_eq!(t.duration_secs, 15);
        assert_eq!(t.grace_secs, 10, "renews every 5 s");
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry, Duration::from_secs(2));

        let t = Timing::new(Duration::from_secs(6)).unwrap();
        assert_eq!((t.duration_secs, t.grace_secs), (6, 4));
        assert_eq!(t.renew_deadline, Duration::from_secs(4));
        assert_eq!(t.retry, Duration::from_millis(1200));

        let t = Timing::new(Duration::from_millis(3500)).unwrap();
        assert_eq!((t.duration_secs, t.grace_secs), (4, 3), "rounded up");
        assert_eq!(t.retry, Duration::from_millis(800));

        let t = Timing::new(Duration::from_secs(3)).unwrap();
        assert_eq!((t.duration_secs, t.grace_secs), (3, 2));
        assert_eq!(t.retry, Duration::from_millis(600));
    }

    #[test]
    fn timing_invariants() {
        for secs in 3..=300 {
            let t = Timing::new(Duration::from_secs(secs)).unwrap();
            let renew_every = Duration::from_secs(t.duration_secs - t.grace_secs);
            assert!(0 < t.grace_secs && t.grace_secs < t.duration_secs, "{t:?}");
            assert!(
                renew_every < t.renew_deadline,
                "a renewal before the deadline: {t:?}"
            );
            assert!(
                t.renew_deadline < Duration::from_secs(t.duration_secs),
                "the leader stops before the Lease expires: {t:?}"
            );
            assert!(t.retry < t.renew_deadline, "{t:?}");
        }
    }

    #[test]
    fn leadership_is_valid_only_while_the_lease_is_fresh() {
        let args = |leader_elect| LeaderArgs {
            leader_elect,
            lease_name: "lro-operator".into(),
            lease_namespace: "default".into(),
            lease_duration: Duration::from_secs(15),
        };
        let single = Leadership::new(&args(false));
        assert!(single.is_valid(), "without leader election: always");

        let elected = Leadership::new(&args(true));
        assert!(!elected.is_valid(), "not before the Lease is taken");
        elected.extend(Instant::now() + Duration::from_secs(10));
        assert!(elected.is_valid());
        elected.extend(Instant::now());
        assert!(elected.is_valid(), "an older renewal does not shorten it");
        let shared = elected.clone();
        elected.revoke();
        assert!(!shared.is_valid(), "revoked for every holder of the handle");
        elected.extend(Instant::now());
        assert!(!elected.is_valid(), "a deadline that has passed");
    }

    #[test]
    fn too_short_a_lease_is_rejected() {
        assert!(matches!(
            Timing::new(Duration::from_secs(2)),
            Err(LeaderError::Duration(_))
        ));
        assert!(Timing::new(Duration::ZERO).is_err());
    }

    #[test]
    fn identity_is_the_pod_name_else_host_and_pid() {
        assert_eq!(
            identity_from(
                Some("lro-operator-7d9f-abcde".into()),
                Some("node".into()),
                7
            ),
            "lro-operator-7d9f-abcde"
        );
        assert_eq!(
            identity_from(Some(" ".into()), Some("laptop".into()), 42),
            "laptop-42"
        );
        assert_eq!(identity_from(None, None, 42), "lro-operator-42");
    }

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            leader: LeaderArgs,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.leader.leader_elect);
        assert_eq!(cli.leader.lease_name, "lro-operator");
        assert_eq!(cli.leader.lease_duration, Duration::from_secs(15));
        let cli = Cli::try_parse_from(["x", "--leader-elect=false"]).unwrap();
        assert!(!cli.leader.leader_elect);
        let cli = Cli::try_parse_from(["x", "--leader-elect"]).unwrap();
        assert!(cli.leader.leader_elect);
        let cli =
            Cli::try_parse_from(["x", "--lease-namespace", "ops", "--lease-duration=6s"]).unwrap();
        assert_eq!(cli.leader.lease_namespace, "ops");
        assert_eq!(cli.leader.lease_duration, Duration::from_secs(6));
    }
}
