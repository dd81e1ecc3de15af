//! One reconcile: observe → decide → act → write status if it changed → requeue.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info_span};

use super::Remembered;
use super::{Context, ReconcileError, act, provider, status};
use crate::api::{LongRunningOperation, LongRunningOperationStatus, PollingSpec};
use crate::protocol::dialect;
use crate::reconcile::{Action, Caps, Event, Input, Memory, Policy, decide};

/// The most decide → act rounds in one reconcile (start, then an immediate poll, …).
const MAX_ROUNDS: usize = 4;
/// A long safety requeue for objects that wait only on changes.
const RESYNC: Duration = Duration::from_secs(3600);

/// The reconcile entry point for kube-runtime.
pub async fn reconcile(
    op: Arc<LongRunningOperation>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let span = info_span!(
        "reconcile",
        namespace = op.namespace().unwrap_or_default(),
        name = op.name_any(),
        operation = op
            .status
            .as_ref()
            .and_then(|s| s.operation.as_ref())
            .and_then(|h| h.name.clone().or(h.id.clone()))
            .unwrap_or_default(),
    );
    reconcile_inner(op, ctx).instrument(span).await
}

async fn reconcile_inner(
    op: Arc<LongRunningOperation>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let namespace = op
        .namespace()
        .ok_or(ReconcileError::Malformed("a namespace"))?;
    let uid = op.uid().ok_or(ReconcileError::Malformed("a uid"))?;
    let name = op.name_any();
    let api: Api<LongRunningOperation> = Api::namespaced(ctx.client.clone(), &namespace);
    let (mut memory, written) = recall(&ctx, &uid);
    // The status subresource is the operator's alone: if the cache is behind our last write, trust the write.
    let mut current = match written {
        Some(w) if op.status.as_ref() != Some(&w) => w,
        _ => op.status.clone().unwrap_or_default(),
    };

    if current.phase.is_some_and(|p| p.is_terminal())
        && current.observed_generation == op.metadata.generation
    {
        forget(&ctx, &uid);
        return Ok(Requeue::await_change());
    }

    // Observe: the provider, and what this process remembers.
    let resolved = provider::resolve(&ctx.client, &op).await;
    let (provider_spec, mut event) = match resolved {
        Ok(spec) => (Some(spec), Event::Reconcile),
        Err(why) => (None, Event::ProviderUnavailable(why)),
    };
    let policy = match &provider_spec {
        Some(p) => provider::policy(
            op.spec.polling.as_ref().unwrap_or(&PollingSpec::default()),
            p.polling.as_ref().unwrap_or(&PollingSpec::default()),
            ctx.args.schedule(),
            ctx.args.not_found_grace,
        ),
        None => Policy::default(),
    };
    let dialect = provider_spec.as_ref().map(|p| dialect(p.protocol));
    let caps = dialect
        .map(|d| Caps {
            idempotent_start: d.idempotent_start(),
            can_cancel: d.can_cancel(),
        })
        .unwrap_or_default();

    for _ in 0..MAX_ROUNDS {
        let decision = decide(&Input {
            spec: &op.spec,
            status: &current,
            generation: op.metadata.generation,
            uid: &uid,
            policy: &policy,
            caps,
            memory: &memory,
            event: &event,
            now: jiff::Timestamp::now(),
        });
        // Write before acting: the start intent and the handle are persisted first.
        if decision.status != current {
            status::write(&api, &name, &decision.status)
                .await
                .map_err(ReconcileError::Status)?;
            current = decision.status;
        }
        status::publish(&ctx, &op, &decision.notices).await;
        let (Some(provider_spec), Some(dialect)) = (&provider_spec, dialect) else {
            return Ok(requeue(decision.action));
        };
        event = match decision.action {
            Action::Start { request_id } => {
                let Some(start) = &op.spec.start else {
                    return Ok(Requeue::await_change());
                };
                debug!(request_id, "sending the start request");
                act::start(
                    &ctx.upstream,
                    provider_spec,
                    dialect,
                    start,
                    &request_id,
                    &mut memory,
                )
                .await
            }
            Action::Poll => {
                act::poll(&ctx.upstream, provider_spec, dialect, &current, &mut memory).await
            }
            Action::Cancel => {
                act::cancel(&ctx.upstream, provider_spec, dialect, &current, &mut memory).await
            }
            Action::Wait(after) => {
                if current.phase.is_some_and(|p| p.is_terminal()) {
                    forget(&ctx, &uid);
                } else {
                    remember(&ctx, &uid, memory, current);
                }
                return Ok(requeue(Action::Wait(after)));
            }
        };
        debug!(?event, "upstream answered");
    }
    remember(&ctx, &uid, memory, current);
    Ok(Requeue::requeue(Duration::from_secs(1)))
}

/// What to do with a failed reconcile: retry soon, with the error logged.
pub fn error_policy(
    op: Arc<LongRunningOperation>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(namespace = op.namespace().unwrap_or_default(), name = op.name_any(), %error, "reconcile failed");
    Requeue::requeue(Duration::from_secs(5))
}

fn requeue(action: Action) -> Requeue {
    match action {
        Action::Wait(Some(after)) => Requeue::requeue(after),
        Action::Wait(None) => Requeue::requeue(RESYNC),
        // Not reached: every other action is taken before returning.
        _ => Requeue::requeue(Duration::from_secs(1)),
    }
}

fn recall(ctx: &Context, uid: &str) -> (Memory, Option<LongRunningOperationStatus>) {
    let map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(uid) {
        Some(r) => (r.memory.clone(), Some(r.status.clone())),
        None => (Memory::new(jiff::Timestamp::now()), None),
    }
}

fn remember(ctx: &Context, uid: &str, memory: Memory, status: LongRunningOperationStatus) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    map.insert(uid.to_owned(), Remembered { memory, status });
}

fn forget(ctx: &Context, uid: &str) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    map.remove(uid);
}
