//! List sweeps (`spec.list`): one sweep at a time per provider, every `initialInterval` of the
//! provider, lists its operations page by page and hands each running object's entry to it.
//!
//! A sweep lists only while some object of the provider is running (with a handle), and only
//! on the leader. A complete sweep records, for every running handle, what its entry says or
//! that it was absent (`Observations::swept`) and wakes the objects whose news they have not had:
//! they apply the entry as a poll's answer (no request), or read an absent operation once by
//! itself (it may have finished). A sweep that fails is tried again after a backoff (the
//! upstream's `Retry-After` first) and its pages are not used: it never marks anything absent.
//! A first page the upstream refuses (403, 404, 501, a filter it rejects) stops listing for the
//! provider for ten minutes: its operations are polled one by one, and its `Ready` condition
//! says why.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use futures::stream::FuturesUnordered;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::observations::{Observations, Seen, Swept};
use super::provider_registry::Resolved;
use super::requests::{self, Upstreaming};
use super::{Context, provider_lookup};
use crate::api::{ListSpec, LongRunningOperation, Phase, ProviderKind};
use crate::protocol::ListOutcome;
use crate::reconcile::policy::policy;
use crate::telemetry::metrics::provider_label;
use crate::upstream::rate_limit::Turn;

/// How long a refused list is not tried again.
const REFUSED_FOR: Duration = Duration::from_secs(600);
/// The most pages one sweep reads (beyond, it fails: a list that never ends is not used).
const MAX_PAGES: usize = 2_000;
/// How often the sweeper looks for a provider whose sweep is due.
const TICK: Duration = Duration::from_millis(250);

/// A provider to sweep.
struct Target {
    resolved: Resolved,
    list: ListSpec,
    key: String,
    interval: Duration,
    max_interval: Duration,
}

/// Runs the sweeps until the controller they wake is gone (on shutdown) or this is dropped (when
/// the Lease is lost).
pub async fn run(ctx: Arc<Context>, wake: UnboundedSender<ObjectRef<LongRunningOperation>>) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut sweeping: HashSet<String> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((key, next)) = running.next() => {
                sweeping.remove(&key);
                due.insert(key, next);
                continue;
            }
        }
        // The controller is gone (shut down): so are the sweeps.
        if wake.is_closed() {
            return;
        }
        if !ctx.leadership.is_valid() {
            continue;
        }
        let now = Instant::now();
        for target in targets(&ctx) {
            if sweeping.contains(&target.key) || due.get(&target.key).is_some_and(|at| now < *at) {
                continue;
            }
            sweeping.insert(target.key.clone());
            let (ctx, wake) = (Arc::clone(&ctx), wake.clone());
            running.push(async move {
                let key = target.key.clone();
                let next = sweep(&ctx, &target, &wake).await;
                (key, next)
            });
        }
    }
}

/// Every provider with `spec.list`, with its sweep interval.
fn targets(ctx: &Context) -> Vec<Target> {
    let defaults = &ctx.config.defaults;
    let target = |resolved: Resolved| {
        let list = resolved.spec.list.clone()?;
        let schedule = policy(None, resolved.spec.polling.as_ref(), defaults).schedule;
        Some(Target {
            key: provider_label(resolved.namespace.as_deref(), &resolved.name),
            list,
            interval: schedule.initial,
            max_interval: schedule.max,
            resolved,
        })
    };
    let namespaced = ctx
        .caches
        .providers
        .store()
        .state()
        .into_iter()
        .filter(|p| p.spec.provider.list.is_some())
        .filter_map(|p| target(provider_lookup::namespaced(&p)));
    let cluster = ctx
        .caches
        .cluster_providers
        .store()
        .state()
        .into_iter()
        .filter(|p| p.spec.provider.list.is_some())
        .filter_map(|p| target(provider_lookup::cluster(&p)));
    namespaced.chain(cluster).collect()
}

/// The running objects of `target` with a handle, by their list key (the cache's own objects,
/// not copies: a sweep of thousands holds a pointer to each).
fn in_flight(
    ctx: &Context,
    target: &Target,
    list_key: &dyn Fn(&LongRunningOperation) -> Option<String>,
) -> HashMap<String, Vec<Arc<LongRunningOperation>>> {
    let mut keys: HashMap<String, Vec<Arc<LongRunningOperation>>> = HashMap::new();
    let resolved = &target.resolved;
    for op in ctx.caches.operations.store().state() {
        let reference = &op.spec.provider_ref;
        let ours = reference.kind == resolved.kind
            && reference.name == resolved.name
            && (resolved.kind == ProviderKind::ClusterOperationProvider
                || op.namespace() == resolved.namespace);
        // Running, or adopted and not written yet (its adoption is written with its entry).
        let phase = op.status.as_ref().and_then(|s| s.phase);
        let running = matches!(phase, Some(Phase::Running | Phase::Cancelling))
            || (matches!(phase, None | Some(Phase::Pending)) && op.spec.operation.is_some());
        if !(ours && running) {
            continue;
        }
        if let Some(key) = list_key(&op) {
            keys.entry(key).or_default().push(op);
        }
    }
    keys
}

/// One sweep of `target`; returns when the next is due.
async fn sweep(
    ctx: &Context,
    target: &Target,
    wake: &UnboundedSender<ObjectRef<LongRunningOperation>>,
) -> Instant {
    let started = Instant::now();
    let observations = &ctx.observations;
    let next = started + target.interval;
    // A refused list is tried again only after a while.
    let refused_recently = observations.sweep(&target.key, |s| {
        s.refused_at
            .is_some_and(|at| started.saturating_duration_since(at) < REFUSED_FOR)
    });
    if refused_recently {
        return next;
    }
    let Ok(entry) = ctx.providers.get(&target.resolved).await else {
        // Not usable now: its operations say why; look again at the next interval.
        return next;
    };
    let dialect = &*entry.dialect;
    let keys = in_flight(ctx, target, &|op| match op
        .status
        .as_ref()
        .and_then(|s| s.operation.as_ref())
    {
        Some(handle) => dialect.list_key(handle),
        None => dialect.list_key(&adopted_handle(op.spec.operation.as_ref()?)),
    });
    if keys.is_empty() {
        return next;
    }
    observations.sweep(&target.key, |s| {
        s.first_started.get_or_insert(started);
    });
    let meter = ctx
        .metrics
        .upstream(target.resolved.spec.protocol.as_str(), target.key.clone());
    let to = Upstreaming {
        upstream: &entry.upstream,
        meter: &meter,
        base_url: &target.resolved.spec.base_url,
        dialect,
        on_unauthorized: &|| entry.refused(),
    };
    let mut listed = HashMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let failure = loop {
        if !ctx.leadership.is_valid() {
            break Some(("the Lease is not held".to_owned(), None, false));
        }
        if pages == MAX_PAGES {
            break Some((
                format!("the list did not end within {MAX_PAGES} pages"),
                None,
                false,
            ));
        }
        let Some(request) = dialect.list_request(&target.list, token.as_deref()) else {
            break Some(("this protocol does not list operations".into(), None, true));
        };
        wait_for_turn(ctx, target).await;
        let (outcome, hint) = requests::list_page(&to, &request).await;
        pages += 1;
        match outcome {
            ListOutcome::Page(page) => {
                listed.extend(
                    page.entries
                        .into_iter()
                        .filter(|(key, _)| keys.contains_key(key)),
                );
                match page.next_page_token {
                    Some(next) => token = Some(next),
                    None => break None,
                }
            }
            // Only the first page says whether the upstream lists this way; a later refusal
            // (an expired page token) fails this sweep alone.
            ListOutcome::Refused(why) => break Some((why, hint, pages == 1)),
            ListOutcome::Failed(why) => break Some((why, hint, false)),
        }
    };
    ctx.metrics.swept(
        &target.key,
        match &failure {
            None => "ok",
            Some((_, _, true)) => "refused",
            Some(_) => "failed",
        },
    );
    match failure {
        None => {
            let at = jiff::Timestamp::now();
            let news = observations.swept(&target.key, &keys, listed, at);
            observations.sweep(&target.key, |s| {
                s.completed_at = Some(Instant::now());
                s.failures = 0;
                s.refused = None;
                s.refused_at = None;
            });
            tracing::debug!(provider = %target.key, pages, running = keys.len(), news = news.len(), "swept");
            for key in news {
                for object in keys.get(&key).into_iter().flatten() {
                    let _ = wake.unbounded_send(ObjectRef::from_obj(object.as_ref()));
                }
            }
            next
        }
        Some((why, _, true)) => {
            tracing::warn!(provider = %target.key, error = %why, "the upstream refuses to list operations: each is polled by itself");
            observations.sweep(&target.key, |s| {
                s.refused = Some(why);
                s.refused_at = Some(Instant::now());
            });
            // Its operations poll by themselves from now on: wake them to.
            for object in keys.values().flatten() {
                let _ = wake.unbounded_send(ObjectRef::from_obj(object.as_ref()));
            }
            next
        }
        Some((why, hint, false)) => {
            let failures = observations.sweep(&target.key, |s| {
                s.failures = s.failures.saturating_add(1);
                s.failures
            });
            tracing::info!(provider = %target.key, error = %why, failures, "list sweep failed; trying again later");
            let backoff = target
                .interval
                .saturating_mul(1 << failures.min(6))
                .min(target.max_interval.max(target.interval));
            Instant::now() + hint.unwrap_or(backoff).max(target.interval)
        }
    }
}

/// Waits for the provider's rate limit, if it has one (a sweep holds no worker).
async fn wait_for_turn(ctx: &Context, target: &Target) {
    let Some(limit) = &target.resolved.spec.rate_limit else {
        return;
    };
    let now = Instant::now();
    if let Turn::At(at) = ctx.rate_limits.admit(&target.key, limit, None, now) {
        ctx.metrics
            .rate_limit_waited(&target.key, at.saturating_duration_since(now));
        tokio::time::sleep_until(at.into()).await;
    }
    let wait = ctx.rate_limits.gate(&target.key, limit, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// What an object of a listed provider does instead of polling by itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Cover {
    /// A sweep's entry it has not applied yet: applied as a poll's answer.
    News(Box<Seen>),
    /// The sweeps cover it: no request; the next sweep with news wakes it.
    Covered,
    /// Absent from a list since its last request: read it by itself now (it may have ended).
    ReadNow,
    /// Not covered (the list is refused or stale, or it stays absent): its own schedule polls it.
    OnItsOwn,
}

/// How the sweeps of `provider` cover the operation with list key `key`, whose last answer this
/// process applied came at `answered` (`None`: none yet, so any entry is news to it), started
/// or adopted at `since`.
pub fn cover(
    observations: &Observations,
    provider: &str,
    key: &str,
    interval: Duration,
    answered: Option<jiff::Timestamp>,
    since: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Cover {
    if !observations.covered(provider, interval, Instant::now()) {
        return Cover::OnItsOwn;
    }
    let newer = |at: jiff::Timestamp| answered.is_none_or(|answered| at > answered);
    match observations.swept_of(provider, key) {
        Some(Swept::Listed(seen)) if newer(seen.at) => Cover::News(seen),
        Some(Swept::Listed(_)) => Cover::Covered,
        Some(Swept::Absent(at)) if newer(at) => Cover::ReadNow,
        Some(Swept::Absent(_)) => Cover::OnItsOwn,
        // Not swept yet (just started): the next sweep will have it, unless that takes long.
        None if now.duration_since(since).unsigned_abs() > interval * 3 => Cover::OnItsOwn,
        None => Cover::Covered,
    }
}

/// The key under which polls of `handle` are shared between objects (its list key, else its
/// poll path).
pub fn shared_key(
    dialect: &dyn crate::protocol::Dialect,
    handle: &crate::api::OperationHandle,
) -> Option<String> {
    dialect
        .list_key(handle)
        .or_else(|| dialect.poll_request(handle).ok().map(|r| r.path))
}

/// The handle of an adopted operation, as `decide` records it on adoption.
fn adopted_handle(reference: &crate::api::OperationRef) -> crate::api::OperationHandle {
    crate::api::OperationHandle {
        name: reference.name.clone(),
        id: reference.id.clone(),
        url: reference.url.clone(),
        ..crate::api::OperationHandle::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Observation, UpstreamState};

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn what_a_sweep_means_for_an_operation_depends_on_what_it_already_applied() {
        let o = Observations::default();
        let in_flight: HashMap<String, ()> = [("a".to_owned(), ()), ("b".to_owned(), ())].into();
        let running = Observation {
            state: UpstreamState::Running,
            ..Observation::default()
        };
        o.swept(
            "p",
            &in_flight,
            HashMap::from([("a".to_owned(), running)]),
            t(10),
        );
        o.sweep("p", |s| s.completed_at = Some(Instant::now()));
        let interval = Duration::from_secs(5);
        let cover = |key: &str, answered: Option<i64>, since: i64| {
            cover(&o, "p", key, interval, answered.map(t), t(since), t(20))
        };
        // Listed: news unless this process applied an answer since the sweep; an operation it
        // never answered for (just adopted, or met after a restart) takes the entry whatever
        // its time.
        assert!(matches!(cover("a", None, 20), Cover::News(_)));
        assert!(matches!(cover("a", Some(5), 20), Cover::News(_)));
        assert_eq!(cover("a", Some(10), 20), Cover::Covered);
        // Absent: read once by itself, then on its own schedule.
        assert_eq!(cover("b", None, 20), Cover::ReadNow);
        assert_eq!(cover("b", Some(5), 20), Cover::ReadNow);
        assert_eq!(cover("b", Some(12), 20), Cover::OnItsOwn);
        // Not swept yet: the next sweep will have it, unless three intervals pass.
        assert_eq!(cover("c", None, 18), Cover::Covered);
        assert_eq!(cover("c", None, 0), Cover::OnItsOwn);
        // A list the upstream refuses covers nothing.
        o.sweep("p", |s| s.refused = Some("403".into()));
        assert_eq!(cover("a", None, 20), Cover::OnItsOwn);
    }
}
