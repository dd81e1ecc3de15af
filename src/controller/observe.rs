//! Observing an operation: everything `reconcile::step` needs, read from the watch caches and
//! this process's memory (no apiserver request, except a dependency in another shard and a
//! `ClusterOperationProvider`'s `allowedNamespaces` check), plus the provider's runtime the act
//! step talks to the upstream with.

use std::sync::Arc;

use kube::ResourceExt;

use super::provider_registry::Entry;
use super::sweeps::{self, Cover};
use super::{Context, ReconcileError, Remembered, finalizer, provider_lookup, workflow};
use crate::api::{
    LongRunningOperation, LongRunningOperationStatus, Phase, ProviderKind, ProviderSpec,
};
use crate::reconcile::policy::policy;
use crate::reconcile::step::{Observed, Outcome, settled};
use crate::reconcile::{Caps, Event, Fact, Memory, Prerequisites};
use crate::telemetry::metrics::provider_label;

/// A provider ready to be talked to.
pub struct ProviderRuntime {
    /// Its spec (base URL, rate limit).
    pub spec: ProviderSpec,
    /// Its client and dialect.
    pub entry: Arc<Entry>,
    /// `<namespace>/<name>` (or `<name>` for a cluster provider): metrics label, rate-limit key.
    pub key: String,
}

/// What a reconcile starts from.
pub struct Observation {
    /// The pure part, for `step`.
    pub observed: Observed,
    /// The provider, when it can be used.
    pub provider: Option<ProviderRuntime>,
    /// The status the apiserver holds, as far as this process knows.
    pub written: LongRunningOperationStatus,
    /// When the operation's next poll was due (for the poll-lateness metric).
    pub poll_due: Option<jiff::Timestamp>,
    /// What a list sweep said of the operation since its last request: the reconcile starts
    /// from it, as from a poll's answer.
    pub news: Option<Outcome>,
}

/// Observes `op`.
pub async fn observe(
    ctx: &Context,
    op: &LongRunningOperation,
) -> Result<Observation, ReconcileError> {
    let namespace = op
        .namespace()
        .ok_or(ReconcileError::Malformed("a namespace"))?;
    let uid = op.uid().ok_or(ReconcileError::Malformed("a uid"))?;
    let (memory, remembered, poll_due) = recall(ctx, &uid, op.status.as_ref());
    // The status subresource is the operator's alone: if the cache is behind our last write,
    // trust the write.
    let status = remembered.unwrap_or_else(|| op.status.clone().unwrap_or_default());
    let mut observed = Observed {
        spec: op.spec.clone(),
        generation: op.metadata.generation,
        uid,
        deletion_requested: op.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        has_finalizer: finalizer::present(op),
        status: status.clone(),
        provider: Err(String::new()),
        policy: policy(op.spec.polling.as_ref(), None, &ctx.config.defaults),
        prerequisites: Prerequisites::default(),
        dependencies_uncached: false,
        memory,
        max_status_result_bytes: ctx.config.defaults.max_status_result_bytes,
    };
    let mut observation = Observation {
        provider: None,
        written: status,
        poll_due,
        observed,
        news: None,
    };
    // A settled operation needs nothing more (its provider may be gone, its token expired).
    if settled(&observation.observed) {
        return Ok(observation);
    }
    observed = observation.observed;

    // The provider: found, usable, its dialect's capabilities; or why not.
    let provider = match provider_lookup::resolve(&ctx.client, &ctx.caches, op).await {
        Ok(resolved) => {
            observed.policy = policy(
                op.spec.polling.as_ref(),
                resolved.spec.polling.as_ref(),
                &ctx.config.defaults,
            );
            match ctx.providers.get(&resolved).await {
                Ok(entry) => Ok((resolved.spec, entry)),
                // A cluster provider's reasons name the operator namespace's Secrets and the
                // admin's endpoints: its tenants learn only that it is not usable.
                Err(_) if resolved.kind == ProviderKind::ClusterOperationProvider => Err(format!(
                    "{} is not usable now (a cluster admin sees why in its Ready condition)",
                    resolved.label()
                )),
                Err(not_ready) => Err(format!(
                    "{} is not ready ({}): {}",
                    resolved.label(),
                    not_ready.reason,
                    not_ready.message
                )),
            }
        }
        Err(why) => Err(why),
    };
    match provider {
        Ok((spec, entry)) => {
            let dialect = &*entry.dialect;
            observed.provider = Ok(Caps {
                idempotent_start: op
                    .spec
                    .start
                    .as_ref()
                    .is_some_and(|s| dialect.idempotent_start(s)),
                no_idempotency: dialect.no_idempotency_hint(),
                can_recover: dialect.can_recover(),
                can_cancel: dialect.can_cancel(),
                long_poll: dialect.long_polls(),
            });
            let scope = match op.spec.provider_ref.kind {
                ProviderKind::OperationProvider => Some(namespace.as_str()),
                ProviderKind::ClusterOperationProvider => None,
            };
            observation.provider = Some(ProviderRuntime {
                spec,
                entry,
                key: provider_label(scope, &op.spec.provider_ref.name),
            });
        }
        Err(why) => observed.provider = Err(why),
    }

    // A listed provider: what its sweeps said since this operation's last request.
    if let Some(runtime) = &observation.provider {
        match listed(ctx, runtime, &observed.status, &observed.memory) {
            Some(Cover::News(seen)) => {
                observation.news = Some(Outcome::Upstream(
                    Box::new(Event::Polled(seen.observation.clone())),
                    Some(Fact::Answered {
                        at: seen.at,
                        retry_after: None,
                    }),
                ));
            }
            Some(Cover::ReadNow) => observed.memory.request_owed = true,
            _ => {}
        }
    }

    // Dependencies and templates matter only before the start.
    if matches!(observed.status.phase, None | Some(Phase::Pending)) {
        let api = kube::Api::namespaced(ctx.client.clone(), &namespace);
        let (prerequisites, uncached) = workflow::observe(&api, ctx.caches.operations.store(), op)
            .await
            .map_err(ReconcileError::Dependencies)?;
        observed.prerequisites = prerequisites;
        observed.dependencies_uncached = uncached;
    }
    observation.observed = observed;
    Ok(observation)
}

/// How the list sweeps of `runtime`'s provider cover the operation with `status` and this
/// process's `memory` of it, when the provider lists (`spec.list`) and the operation runs with a
/// handle it lists.
pub fn listed(
    ctx: &Context,
    runtime: &ProviderRuntime,
    status: &LongRunningOperationStatus,
    memory: &crate::reconcile::Memory,
) -> Option<Cover> {
    runtime.spec.list.as_ref()?;
    if !matches!(status.phase, Some(Phase::Running | Phase::Cancelling)) {
        return None;
    }
    let key = runtime.entry.dialect.list_key(status.operation.as_ref()?)?;
    let now = jiff::Timestamp::now();
    let interval = policy(None, runtime.spec.polling.as_ref(), &ctx.config.defaults)
        .schedule
        .initial;
    // An adopted operation not yet written has no `startedAt`: since this process met it.
    let since = status
        .started_at
        .as_ref()
        .map_or(memory.last_request_at, |t| t.0);
    Some(sweeps::cover(
        &ctx.observations,
        &runtime.key,
        &key,
        interval,
        memory.answered_at,
        since,
        now,
    ))
}

/// The memory of `uid`, the status last written while the cache (`cached`) has not caught up
/// with it, and when its next poll is due. A written status the cache holds is let go.
fn recall(
    ctx: &Context,
    uid: &str,
    cached: Option<&LongRunningOperationStatus>,
) -> (
    Memory,
    Option<LongRunningOperationStatus>,
    Option<jiff::Timestamp>,
) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(uid) {
        Some(Remembered {
            memory,
            status,
            poll_due,
        }) => {
            if status.as_ref() == cached {
                *status = None;
            }
            (memory.clone(), status.clone(), *poll_due)
        }
        None => (Memory::new(jiff::Timestamp::now()), None, None),
    }
}
