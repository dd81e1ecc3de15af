//! One reconcile: observe → decide → act → write status if it changed → requeue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, field};

use super::Remembered;
use super::{Context, ReconcileError, act, finalizer, outputs, provider, status, workflow};
use crate::api::{
    LongRunningOperation, LongRunningOperationStatus, Phase, PollingSpec, ProviderKind,
};
use crate::protocol::dialect_for;
use crate::reconcile::{Action, Caps, Event, Input, Memory, decide};
use crate::telemetry::metrics::provider_label;
use crate::upstream::rate_limit::Turn;

/// The most decide → act rounds in one reconcile (start, then an immediate poll, …).
const MAX_ROUNDS: usize = 4;
/// A long safety requeue for objects that wait only on changes.
const RESYNC: Duration = Duration::from_secs(3600);
/// How often an operation waiting on a dependency this replica does not watch (another shard)
/// looks at it again.
const DEPENDENCY_RECHECK: Duration = Duration::from_secs(30);

/// The reconcile entry point for kube-runtime.
pub async fn reconcile(
    op: Arc<LongRunningOperation>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    // ERROR level only so that the span (the object and its upstream handle on every line) is
    // enabled whatever the log filter; it does not log anything by itself.
    let span = tracing::error_span!(
        "reconcile",
        namespace = op.namespace().unwrap_or_default(),
        // Not `name`: JSON logs already use that key for the span's own name.
        lro = op.name_any(),
        operation = field::Empty,
    );
    if let Some(handle) = handle_of(op.status.as_ref()) {
        span.record("operation", handle);
    }
    let began = std::time::Instant::now();
    let metrics = Arc::clone(&ctx.metrics);
    let result = reconcile_inner(op, ctx).instrument(span).await;
    // The labels of `telemetry::metrics::RECONCILE_OUTCOMES`.
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ReconcileError::Status(_)) => "status_write",
        Err(ReconcileError::Malformed(_)) => "malformed",
        Err(ReconcileError::Finalizer(_)) => "finalizer",
    };
    metrics.reconciled(outcome, began.elapsed());
    result
}

/// The upstream handle (name, id or url) for log lines.
fn handle_of(status: Option<&LongRunningOperationStatus>) -> Option<String> {
    let h = status?.operation.as_ref()?;
    h.name.clone().or(h.id.clone()).or(h.url.clone())
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
    let (mut memory, written, mut poll_due) = recall(&ctx, &uid, op.status.as_ref());
    // The status subresource is the operator's alone: if the cache is behind our last write, trust the write.
    let mut current = written.unwrap_or_else(|| op.status.clone().unwrap_or_default());

    let deleting = finalizer::deleting(&op);
    if op.metadata.deletion_timestamp.is_some() && !deleting {
        // Going away with nothing to cancel (onDelete: Orphan, or already released).
        forget(&ctx, &uid);
        return Ok(Requeue::await_change());
    }
    if !deleting && outputs::pending(&op, &current) {
        publish_outputs(&ctx, &api, &op, &mut current, None).await?;
        remember_status(&ctx, &uid, &current);
    }
    if current.phase.is_some_and(|p| p.is_terminal())
        && (deleting || current.observed_generation == op.metadata.generation)
    {
        if deleting {
            finalizer::remove(&api, &op)
                .await
                .map_err(ReconcileError::Finalizer)?;
        }
        forget(&ctx, &uid);
        return Ok(Requeue::await_change());
    }
    if finalizer::wanted(&op, &current) {
        finalizer::add(&api, &op)
            .await
            .map_err(ReconcileError::Finalizer)?;
    }

    // Observe: the provider, and what this process remembers.
    let resolved = match provider::resolve(&ctx.client, &ctx.caches, &op).await {
        Ok(p) => match ctx.clients.get(&p).await {
            Ok(client) => Ok((p.spec, client)),
            Err(not_ready) => Err(format!(
                "{} is not ready ({}): {}",
                p.label(),
                not_ready.reason,
                not_ready.message
            )),
        },
        Err(why) => Err(why),
    };
    let (provider_spec, client, mut event) = match resolved {
        Ok((spec, client)) => (Some(spec), Some(client), Event::Reconcile),
        Err(why) => (None, None, Event::ProviderUnavailable(why)),
    };
    // The operation's own polling (its timeout above all) applies also while the provider
    // cannot be used; the provider's fills in what the operation leaves unset.
    let policy = provider::policy(
        op.spec.polling.as_ref().unwrap_or(&PollingSpec::default()),
        provider_spec
            .as_ref()
            .and_then(|p| p.polling.as_ref())
            .unwrap_or(&PollingSpec::default()),
        ctx.args.schedule(),
        ctx.args.default_timeout(),
        ctx.args.not_found_grace,
    );
    // The provider's dialect; protocol options that do not compile make the provider unusable.
    let (dialect, provider_spec, client) = match provider_spec.as_ref().map(dialect_for) {
        Some(Err(why)) => {
            event = Event::ProviderUnavailable(why);
            (None, None, None)
        }
        dialect => (dialect.and_then(Result::ok), provider_spec, client),
    };
    let scope = match op.spec.provider_ref.kind {
        ProviderKind::OperationProvider => Some(namespace.as_str()),
        ProviderKind::ClusterOperationProvider => None,
    };
    // Names the provider in metrics and keys its rate limit.
    let provider_key = provider_label(scope, &op.spec.provider_ref.name);
    let meter = provider_spec.as_ref().map(|p| {
        ctx.metrics
            .upstream(p.protocol.as_str(), provider_key.clone())
    });
    let caps = dialect
        .as_deref()
        .map(|d| Caps {
            idempotent_start: op
                .spec
                .start
                .as_ref()
                .is_some_and(|s| d.idempotent_start(s)),
            no_idempotency: d.no_idempotency_hint(),
            can_recover: d.can_recover(),
            can_cancel: d.can_cancel(),
            long_poll: d.long_polls(),
        })
        .unwrap_or_default();

    // Dependencies and templates matter only before the start.
    let (prerequisites, uncached) = if matches!(current.phase, None | Some(Phase::Pending)) {
        match workflow::observe(&api, ctx.caches.operations.store(), &op).await {
            Ok(observed) => observed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dependencies");
                return Ok(Requeue::requeue(Duration::from_secs(5)));
            }
        }
    } else {
        (crate::reconcile::Prerequisites::default(), false)
    };
    // A dependency outside this replica's cache (another shard) does not wake us: look again.
    let resync = if uncached { DEPENDENCY_RECHECK } else { RESYNC };

    // What the apiserver holds; `current` runs ahead of it while a poll is under way.
    let mut written = current.clone();
    for _ in 0..MAX_ROUNDS {
        let now = jiff::Timestamp::now();
        // The full result, before the status caps it: outputs are written from it.
        let observed_result = match &event {
            Event::Polled(o) => o.result.clone(),
            Event::Started(s) => s.observation.result.clone(),
            _ => None,
        };
        let mut decision = decide(&Input {
            spec: &op.spec,
            status: &current,
            generation: op.metadata.generation,
            uid: &uid,
            policy: &policy,
            caps,
            memory: &memory,
            event: &event,
            deleting,
            prerequisites: &prerequisites,
            now,
        });
        // Write before acting: the start intent and the handle are persisted first.
        // A result too large for the status stays upstream (a condition says so).
        crate::reconcile::cap_result(
            &mut decision.status,
            ctx.args.max_status_result_bytes,
            op.metadata.generation,
            now,
        );
        // Outputs are written before `Succeeded` is: whoever waits on Ready finds them.
        if !deleting && outputs::pending(&op, &decision.status) {
            outputs::publish(
                &ctx.client,
                &op,
                &mut decision.status,
                observed_result.as_ref(),
            )
            .await
            .map_err(ReconcileError::Status)?;
        }
        current = decision.status;
        // A poll needs nothing persisted first: its outcome is written with what it observed
        // (one write per observation, not one more before the first poll of an adopted
        // operation). Everything else is written now; every return below writes what is left.
        if !matches!(decision.action, Action::Poll) {
            flush(&ctx, &api, &name, &current, &mut written).await?;
        }
        status::publish(&ctx, &op, &decision.notices).await;
        let (Some(provider_spec), Some(dialect), Some(meter), Some(client)) =
            (&provider_spec, dialect.as_deref(), &meter, &client)
        else {
            flush(&ctx, &api, &name, &current, &mut written).await?;
            return Ok(requeue(decision.action, resync));
        };
        // Upstream requests only while this replica surely holds the Lease (see `leader`).
        if !matches!(decision.action, Action::Wait(_)) && !ctx.leadership.is_valid() {
            debug!("not sure to hold the Lease: no upstream request");
            flush(&ctx, &api, &name, &current, &mut written).await?;
            remember(&ctx, &uid, memory, current, poll_due);
            return Ok(Requeue::requeue(Duration::from_secs(1)));
        }
        // The provider's rate limit: a request over it waits for its turn, off the workers; a
        // turn taken for a request that is no longer due is given up.
        let held = memory.rate_turn.take();
        if let Some(limit) = &provider_spec.rate_limit
            && !matches!(decision.action, Action::Wait(_))
        {
            let now = Instant::now();
            if let Turn::At(turn) = ctx.rate_limits.admit(&provider_key, limit, held, now) {
                let wait = turn.saturating_duration_since(now);
                if held.is_none() {
                    ctx.metrics.rate_limit_waited(&provider_key, wait);
                }
                debug!(?wait, "waiting for the provider's rate limit");
                memory.rate_turn = Some(turn);
                memory.poll_owed |= matches!(decision.action, Action::Poll);
                flush(&ctx, &api, &name, &current, &mut written).await?;
                remember(&ctx, &uid, memory, current, poll_due);
                return Ok(Requeue::requeue(wait.max(Duration::from_millis(1))));
            }
            // Its turn has come; the gate spreads requests that came back late together.
            let wait = ctx.rate_limits.gate(&provider_key, limit, Instant::now());
            if !wait.is_zero() {
                ctx.metrics.rate_limit_waited(&provider_key, wait);
                tokio::time::sleep(wait).await;
            }
        }
        event = match decision.action {
            Action::Start { request_id } => {
                let Some(start) = &op.spec.start else {
                    return Ok(Requeue::await_change());
                };
                // A templated start sends what was rendered (and recorded) before it.
                let rendered = current
                    .rendered_start
                    .as_ref()
                    .map(|r| crate::reconcile::template::apply(start, r));
                let start = rendered.as_ref().unwrap_or(start);
                debug!(request_id, "sending the start request");
                act::start(
                    &client.upstream,
                    meter,
                    provider_spec,
                    dialect,
                    start,
                    &request_id,
                    &mut memory,
                )
                .await
            }
            Action::Recover => {
                let Some(start) = &op.spec.start else {
                    return Ok(Requeue::await_change());
                };
                let rendered = current
                    .rendered_start
                    .as_ref()
                    .map(|r| crate::reconcile::template::apply(start, r));
                let start = rendered.as_ref().unwrap_or(start);
                let sent_at = current.started_at.as_ref().map_or(now, |t| t.0);
                debug!("looking for the operation a lost start may have begun");
                act::recover(
                    &client.upstream,
                    meter,
                    provider_spec,
                    dialect,
                    start,
                    sent_at,
                    &mut memory,
                )
                .await
            }
            Action::Poll => {
                ctx.metrics.polled(poll_due.take(), now);
                act::poll(
                    &client.upstream,
                    meter,
                    provider_spec,
                    dialect,
                    &current,
                    &mut memory,
                )
                .await
            }
            Action::Cancel => {
                act::cancel(
                    &client.upstream,
                    meter,
                    provider_spec,
                    dialect,
                    &current,
                    &mut memory,
                )
                .await
            }
            Action::Wait(after) => {
                if deleting && finalizer::may_release(&op, &current, caps, &memory, now) {
                    if !current.phase.is_some_and(|p| p.is_terminal()) {
                        let why = memory.last_error.clone().unwrap_or_else(|| {
                            "the upstream did not confirm the cancel in time, or cannot cancel"
                                .into()
                        });
                        let notice = crate::reconcile::Notice {
                            warning: true,
                            reason: "DeletedWithoutCancel",
                            action: "Delete",
                            message: format!(
                                "deleted while the upstream operation may still run: {why}"
                            ),
                        };
                        status::publish(&ctx, &op, &[notice]).await;
                    }
                    if let Err(e) = finalizer::remove(&api, &op).await {
                        // Keep what was learnt: the retry must not poll or cancel again.
                        remember(&ctx, &uid, memory, current, None);
                        return Err(ReconcileError::Finalizer(e));
                    }
                    forget(&ctx, &uid);
                    return Ok(Requeue::await_change());
                }
                if !deleting && outputs::pending(&op, &current) {
                    publish_outputs(&ctx, &api, &op, &mut current, observed_result.as_ref())
                        .await?;
                }
                if current.phase.is_some_and(|p| p.is_terminal()) {
                    forget(&ctx, &uid);
                } else {
                    // When the next poll is due, for lro_poll_lateness_seconds.
                    let polling = matches!(current.phase, Some(Phase::Running | Phase::Cancelling));
                    poll_due = after
                        .filter(|_| polling)
                        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                        .and_then(|d| now.checked_add(d).ok());
                    remember(&ctx, &uid, memory, current, poll_due);
                }
                return Ok(requeue(Action::Wait(after), resync));
            }
        };
        debug!(?event, "upstream answered");
    }
    flush(&ctx, &api, &name, &current, &mut written).await?;
    remember(&ctx, &uid, memory, current, poll_due);
    Ok(Requeue::requeue(Duration::from_secs(1)))
}

/// Writes `current` if it is not what was last `written`.
async fn flush(
    ctx: &Context,
    api: &Api<LongRunningOperation>,
    name: &str,
    current: &LongRunningOperationStatus,
    written: &mut LongRunningOperationStatus,
) -> Result<(), ReconcileError> {
    if current == written {
        return Ok(());
    }
    status::write(api, name, current)
        .await
        .map_err(ReconcileError::Status)?;
    ctx.metrics.status_written();
    *written = current.clone();
    if let Some(handle) = handle_of(Some(current)) {
        tracing::Span::current().record("operation", handle);
    }
    Ok(())
}

/// Writes `spec.outputs` and the `OutputsPublished` condition.
async fn publish_outputs(
    ctx: &Context,
    api: &Api<LongRunningOperation>,
    op: &LongRunningOperation,
    current: &mut LongRunningOperationStatus,
    result: Option<&serde_json::Value>,
) -> Result<(), ReconcileError> {
    let mut next = current.clone();
    outputs::publish(&ctx.client, op, &mut next, result)
        .await
        .map_err(ReconcileError::Status)?;
    if next != *current {
        status::write(api, &op.name_any(), &next)
            .await
            .map_err(ReconcileError::Status)?;
        ctx.metrics.status_written();
        *current = next;
    }
    Ok(())
}

/// Keeps `status` as the last written one, with the memory as it was.
fn remember_status(ctx: &Context, uid: &str, status: &LongRunningOperationStatus) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = map.get_mut(uid) {
        r.status = Some(status.clone());
    }
}

/// What to do with a failed reconcile: retry soon, with the error logged.
pub fn error_policy(
    op: Arc<LongRunningOperation>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(namespace = op.namespace().unwrap_or_default(), lro = op.name_any(), %error, "reconcile failed");
    Requeue::requeue(Duration::from_secs(5))
}

fn requeue(action: Action, resync: Duration) -> Requeue {
    match action {
        Action::Wait(Some(after)) => Requeue::requeue(after),
        Action::Wait(None) => Requeue::requeue(resync),
        // Not reached: every other action is taken before returning.
        _ => Requeue::requeue(Duration::from_secs(1)),
    }
}

type Recalled = (
    Memory,
    Option<LongRunningOperationStatus>,
    Option<jiff::Timestamp>,
);

/// The memory of `uid`, the status last written while the cache (`cached`) has not caught up
/// with it, and when its next poll is due. A written status the cache holds is let go.
fn recall(ctx: &Context, uid: &str, cached: Option<&LongRunningOperationStatus>) -> Recalled {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(uid) {
        Some(r) => {
            if r.status.as_ref() == cached {
                r.status = None;
            }
            (r.memory.clone(), r.status.clone(), r.poll_due)
        }
        None => (Memory::new(jiff::Timestamp::now()), None, None),
    }
}

fn remember(
    ctx: &Context,
    uid: &str,
    memory: Memory,
    status: LongRunningOperationStatus,
    poll_due: Option<jiff::Timestamp>,
) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    let remembered = Remembered {
        memory,
        status: Some(status),
        poll_due,
    };
    map.insert(uid.to_owned(), remembered);
}

fn forget(ctx: &Context, uid: &str) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    map.remove(uid);
}
