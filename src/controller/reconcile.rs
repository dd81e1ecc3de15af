//! One reconcile: observe (I/O) → step (pure: every rule) → act (I/O), until the step says
//! it is over.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use tracing::{Instrument, field};

use super::act::Acting;
use super::observe::{Observation, observe};
use super::{Context, ReconcileError, Remembered};
use crate::api::{LongRunningOperation, LongRunningOperationStatus};
use crate::reconcile::step::{AGAIN, Effect, Keep, Observed, Outcome, step};

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
        Err(ReconcileError::Dependencies(_)) => "dependencies",
    };
    metrics.reconciled(outcome, began.elapsed());
    result
}

/// The upstream handle (name, id or url) for log lines.
pub(super) fn handle_of(status: Option<&LongRunningOperationStatus>) -> Option<String> {
    let h = status?.operation.as_ref()?;
    h.name.clone().or(h.id.clone()).or(h.url.clone())
}

/// The most steps of one reconcile (a finalizer, the start, an immediate poll, the outputs, …).
const MAX_STEPS: usize = 8;

/// Observe → step (pure) → act, until the step says the reconcile is over.
async fn reconcile_inner(
    op: Arc<LongRunningOperation>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let Observation {
        mut observed,
        provider,
        written,
        poll_due,
        news,
    } = observe(&ctx, &op).await?;
    let api: Api<LongRunningOperation> =
        Api::namespaced(ctx.client.clone(), &op.namespace().unwrap_or_default());
    let mut acting = Acting {
        ctx: &ctx,
        op: &op,
        api: &api,
        provider: provider.as_ref(),
        poll_due,
        written,
        notices: Vec::new(),
    };
    // A list sweep's news is applied as a poll's answer.
    let mut outcome = news.unwrap_or(Outcome::Begin);
    for _ in 0..MAX_STEPS {
        let plan = step(&observed, &outcome, jiff::Timestamp::now());
        let performed = acting.perform(&plan).await;
        observed.status = plan.status;
        observed.memory = plan.memory;
        let next = match performed {
            Ok(next) => next,
            Err(e) => {
                // Keep what was learnt: the retry must not poll or cancel again.
                keep_or_forget(
                    &ctx,
                    &op,
                    &observed,
                    &acting.written,
                    Keep::Remember { poll_due: None },
                );
                return Err(e);
            }
        };
        match (plan.effect, next) {
            (Effect::Done { requeue, keep }, _) => {
                keep_or_forget(&ctx, &op, &observed, &acting.written, keep);
                return Ok(requeue.map_or_else(Requeue::await_change, Requeue::requeue));
            }
            (_, Some(next)) => {
                if matches!(next, Outcome::FinalizerChanged) {
                    observed.has_finalizer = !observed.has_finalizer;
                }
                outcome = next;
            }
            // Only `Done` ends a reconcile without an outcome.
            (_, None) => break,
        }
    }
    acting.flush(&observed.status).await?;
    keep_or_forget(
        &ctx,
        &op,
        &observed,
        &acting.written,
        Keep::Remember { poll_due: None },
    );
    Ok(Requeue::requeue(AGAIN))
}

/// Remembers what this process learnt of the operation and the status it last wrote
/// (`written`: not a status it decided but did not write, as when that write failed or was
/// deferred, so that the next reconcile writes it), or forgets it. The written status is kept
/// only while the watch cache (`op`, as this reconcile found it) does not hold it yet: with
/// thousands of operations, a copy of every status would double their memory.
fn keep_or_forget(
    ctx: &Context,
    op: &LongRunningOperation,
    observed: &Observed,
    written: &LongRunningOperationStatus,
    keep: Keep,
) {
    let mut map = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
    match keep {
        Keep::Forget => {
            map.remove(&observed.uid);
        }
        Keep::Remember { poll_due } => {
            let status = (op.status.as_ref() != Some(written)).then(|| written.clone());
            map.insert(
                observed.uid.clone(),
                Remembered {
                    memory: observed.memory.clone(),
                    status,
                    poll_due,
                },
            );
        }
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
