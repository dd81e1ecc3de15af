//! One reconcile, as a pure step: from what the controller observed of an operation, and what
//! just happened, the one thing to do next.
//!
//! The controller loops: [`step`] → perform the [`Effect`] → feed its [`Outcome`] back → …
//! until the effect is [`Effect::Done`]. Every rule of a reconcile is here or in
//! [`decide`](super::decide) (the phase machine it calls): deletion and the finalizer, when
//! outputs are written, the size caps of a status, what an answer teaches the poll memory
//! (`Retry-After` clamped), when a deletion stops waiting for a cancel, when to come back.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;

use super::decide::{
    Action, Caps, DEPENDENCY_RECHECK, Event, Input, Notice, Policy, Prerequisites, decide,
};
use super::limits::{bound_text, cap_result};
use super::memory::{Fact, Memory};
use super::outputs::{self, Rendered, WriteFailure};
use super::schedule::seed_of;
use crate::api::{LongRunningOperationSpec, LongRunningOperationStatus, OnDelete, Phase};

/// How long a deletion waits for the upstream to confirm a cancel before the object goes anyway.
pub const DELETE_LIMIT: Duration = Duration::from_secs(600);
/// How often an operation waiting only on changes is looked at anyway.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How soon a reconcile that ran out of rounds comes back.
pub const AGAIN: Duration = Duration::from_secs(1);
/// How soon a request held back by its namespace's fair share is tried again (plus up to 1 s).
pub const BUSY_RETRY: Duration = Duration::from_secs(1);
/// How soon outputs that could not be written are tried again.
pub const OUTPUTS_RETRY: Duration = Duration::from_secs(30);
/// How soon a replica that is not sure to hold the Lease looks again.
pub const NOT_LEADER_RETRY: Duration = Duration::from_secs(1);

/// Everything the controller observed of one operation, and what this process remembers.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The object's spec.
    pub spec: LongRunningOperationSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.uid`.
    pub uid: String,
    /// When deletion was requested (`metadata.deletionTimestamp`).
    pub deletion_requested: Option<Timestamp>,
    /// The object carries the `onDelete: Cancel` finalizer.
    pub has_finalizer: bool,
    /// The status as the operator last wrote it (ahead of the cache while it lags).
    pub status: LongRunningOperationStatus,
    /// What the provider's protocol can do, or why the provider cannot be used.
    pub provider: Result<Caps, String>,
    /// Schedule and deadline (also when the provider cannot be used).
    pub policy: Policy,
    /// Dependencies and templates (only looked at before the start).
    pub prerequisites: Prerequisites,
    /// A dependency was read from the apiserver (another shard's): its changes do not wake us.
    pub dependencies_uncached: bool,
    /// What this process remembers of the operation.
    pub memory: Memory,
    /// The largest `status.result` kept, in bytes of JSON.
    pub max_status_result_bytes: usize,
}

impl Observed {
    /// Deleted with `onDelete: Cancel`: the upstream operation is cancelled before the object goes.
    pub fn deleting(&self) -> bool {
        self.deletion_requested.is_some() && self.has_finalizer
    }
}

/// What happened since the last step.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A reconcile began (or an effect without news for `decide` was performed).
    Begin,
    /// An upstream request was answered (or failed): the event for `decide`, the memory's fact.
    Upstream(Box<Event>, Option<Fact>),
    /// The provider's rate limit holds the request back until its turn.
    HeldBack {
        /// The turn taken.
        turn: Instant,
        /// How long until it.
        wait: Duration,
    },
    /// This replica is not sure to hold the Lease: nothing was sent.
    NotLeader,
    /// The namespace's share of upstream requests in flight is in use: nothing was sent.
    Busy,
    /// The provider's list sweeps observe this operation: no request of its own (it is woken
    /// when a sweep has news for it; it looks again after the schedule's longest interval).
    Covered,
    /// The finalizer was added or removed.
    FinalizerChanged,
    /// The outputs were written (the objects named), or the write failed.
    OutputsWritten {
        /// What was rendered.
        rendered: Rendered,
        /// `ConfigMap x`, `Secret y`: what was written.
        written: Vec<String>,
        /// Why writing failed, if it did.
        error: Option<WriteFailure>,
    },
}

/// An upstream request to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// The start request, with its idempotency key.
    Start {
        /// The idempotency key.
        request_id: String,
    },
    /// A poll.
    Poll,
    /// The cancel request.
    Cancel,
    /// The look-up of the operation a lost start may have begun.
    Recover,
}

/// A change of the `onDelete: Cancel` finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finalizer {
    /// Add it (the object must not go before its operation is cancelled).
    Add,
    /// Remove it (the deletion may finish).
    Remove,
}

/// Whether this process keeps anything of the operation once the reconcile is over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keep {
    /// Forget it (a terminal or deleted operation).
    Forget,
    /// Remember its memory and status; `poll_due` is when its next poll is due (for the
    /// poll-lateness metric).
    Remember {
        /// When the next poll is due.
        poll_due: Option<Timestamp>,
    },
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Add or remove the finalizer, then step again.
    Finalizer(Finalizer),
    /// Write the outputs, then step again (the status saying `Succeeded` waits for them).
    PublishOutputs(Rendered),
    /// Send an upstream request, then step again with its outcome.
    Send {
        /// What to send.
        request: Request,
        /// The rate-limit turn held for it, if any.
        turn: Option<Instant>,
    },
    /// The reconcile is over: come back after `requeue` (`None`: only on a change).
    Done {
        /// When to come back.
        requeue: Option<Duration>,
        /// What to keep.
        keep: Keep,
    },
}

/// The step's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The operation's status from now on (sizes capped).
    pub status: LongRunningOperationStatus,
    /// Write the status (if it changed) before performing the effect. A `Done` writes it
    /// unless this is false (an adopted operation its provider's sweeps have not listed yet).
    pub write_first: bool,
    /// What this process remembers from now on.
    pub memory: Memory,
    /// Kubernetes Events to record (after the status is written).
    pub notices: Vec<Notice>,
    /// What to do.
    pub effect: Effect,
}

/// Whether nothing is left to do for the operation but wait for a change: deleted with
/// nothing to cancel, or finished with this generation observed and its outputs written. The
/// controller then does not even look at the provider.
pub fn settled(observed: &Observed) -> bool {
    if observed.deletion_requested.is_some() && !observed.has_finalizer {
        return true;
    }
    let status = &observed.status;
    status.phase.is_some_and(|p| p.is_terminal())
        && !observed.deleting()
        && status.observed_generation == observed.generation
        && !outputs::pending(&observed.spec, observed.generation, status)
}

/// Decides the next effect. Pure: the same input gives the same output.
pub fn step(observed: &Observed, outcome: &Outcome, now: Timestamp) -> Plan {
    let mut memory = observed.memory.clone();
    let mut status = observed.status.clone();
    let plan = |status, memory, effect| Plan {
        status,
        write_first: true,
        memory,
        notices: Vec::new(),
        effect,
    };
    let done = |keep| Effect::Done {
        requeue: None,
        keep,
    };
    let deleting = observed.deleting();

    // What the last effect taught.
    let event = match outcome {
        Outcome::Begin | Outcome::FinalizerChanged => Event::Reconcile,
        Outcome::Upstream(event, fact) => {
            if let Some(fact) = fact {
                memory.learn(fact);
            }
            // The progress an answer reported aims the schedule (see `Memory::saw_progress`).
            let progress = match &**event {
                Event::Polled(observation) => Some(observation.progress),
                Event::Started(started) | Event::Recovered(started) => {
                    Some(started.observation.progress)
                }
                _ => None,
            };
            if let Some(progress) = progress {
                memory.saw_progress(now, status.started_at.as_ref().map(|t| t.0), progress);
            }
            (**event).clone()
        }
        Outcome::OutputsWritten {
            rendered,
            written,
            error,
        } => {
            let published = outputs::record(
                &mut status,
                rendered,
                written,
                error.as_ref(),
                observed.generation,
                now,
            );
            if !published {
                // Tried again later (a conflict lasts until someone acts; an expression error
                // until the spec changes, which reconciles at once), never in a loop.
                return plan(
                    status,
                    memory,
                    Effect::Done {
                        requeue: Some(OUTPUTS_RETRY),
                        keep: Keep::Remember { poll_due: None },
                    },
                );
            }
            Event::Reconcile
        }
        Outcome::HeldBack { turn, wait } => {
            memory.rate_turn = Some(*turn);
            memory.request_owed = true;
            let requeue = Some((*wait).max(Duration::from_millis(1)));
            return plan(
                status,
                memory,
                Effect::Done {
                    requeue,
                    keep: Keep::Remember { poll_due: None },
                },
            );
        }
        Outcome::NotLeader => {
            memory.request_owed = true;
            return plan(
                status,
                memory,
                Effect::Done {
                    requeue: Some(NOT_LEADER_RETRY),
                    keep: Keep::Remember { poll_due: None },
                },
            );
        }
        Outcome::Covered => {
            // An adopted operation the sweeps have not listed yet has nothing from the upstream
            // to show: its adoption is written with its first entry (one write per
            // observation), not before it.
            let unobserved = observed.spec.start.is_none() && status.upstream_state.is_none();
            return Plan {
                write_first: !unobserved,
                ..plan(
                    status,
                    memory,
                    Effect::Done {
                        requeue: Some(observed.policy.schedule.max),
                        keep: Keep::Remember { poll_due: None },
                    },
                )
            };
        }
        Outcome::Busy => {
            memory.request_owed = true;
            // Spread over a second, so that a namespace's held-back operations do not all come
            // back at the same instant.
            let spread = seed_of(&observed.uid) % 1000;
            return plan(
                status,
                memory,
                Effect::Done {
                    requeue: Some(BUSY_RETRY + Duration::from_millis(spread)),
                    keep: Keep::Remember { poll_due: None },
                },
            );
        }
    };

    // Going away with nothing to cancel (onDelete: Orphan, or already released).
    if observed.deletion_requested.is_some() && !observed.has_finalizer {
        return plan(status, memory, done(Keep::Forget));
    }
    // Whoever waits on Ready finds the outputs: they are written before `Succeeded` is.
    if !deleting && outputs::pending(&observed.spec, observed.generation, &status) {
        let rendered = render_outputs(observed, &status, None);
        return Plan {
            write_first: false,
            ..plan(status, memory, Effect::PublishOutputs(rendered))
        };
    }
    let terminal = status.phase.is_some_and(|p| p.is_terminal());
    if terminal
        && matches!(outcome, Outcome::Begin | Outcome::FinalizerChanged)
        && (deleting || status.observed_generation == observed.generation)
    {
        let effect = if deleting {
            Effect::Finalizer(Finalizer::Remove)
        } else {
            done(Keep::Forget)
        };
        return plan(status, memory, effect);
    }
    if observed.spec.on_delete == OnDelete::Cancel
        && observed.deletion_requested.is_none()
        && !terminal
        && !observed.has_finalizer
    {
        return plan(status, memory, Effect::Finalizer(Finalizer::Add));
    }

    // The phase machine.
    let (caps, event) = match &observed.provider {
        Ok(caps) => (*caps, event),
        Err(why) => (Caps::default(), Event::ProviderUnavailable(why.clone())),
    };
    // The full result, before the status caps it: outputs are written from it.
    let observed_result: Option<Value> = match &event {
        Event::Polled(o) => o.result.clone(),
        Event::Started(s) | Event::Recovered(s) => s.observation.result.clone(),
        _ => None,
    };
    let decision = decide(&Input {
        spec: &observed.spec,
        status: &status,
        generation: observed.generation,
        uid: &observed.uid,
        policy: &observed.policy,
        caps,
        memory: &memory,
        event: &event,
        deleting,
        prerequisites: &observed.prerequisites,
        now,
    });
    let mut status = decision.status;
    // A result too large for the status stays upstream (a condition says so); free text is cut.
    cap_result(
        &mut status,
        observed.max_status_result_bytes,
        observed.generation,
        now,
    );
    bound_text(&mut status);
    let mut notices = decision.notices;

    if !deleting && outputs::pending(&observed.spec, observed.generation, &status) {
        let rendered = render_outputs(observed, &status, observed_result.as_ref());
        return Plan {
            write_first: false,
            notices,
            ..plan(status, memory, Effect::PublishOutputs(rendered))
        };
    }
    let request = match decision.action {
        Action::Wait(after) => {
            let effect = if deleting && may_release(observed, &status, caps, &memory, now) {
                if !status.phase.is_some_and(|p| p.is_terminal()) {
                    let why = memory.last_error.clone().unwrap_or_else(|| {
                        "the upstream did not confirm the cancel in time, or cannot cancel".into()
                    });
                    notices.push(Notice {
                        warning: true,
                        reason: "DeletedWithoutCancel",
                        action: "Delete",
                        message: format!(
                            "deleted while the upstream operation may still run: {why}"
                        ),
                    });
                }
                Effect::Finalizer(Finalizer::Remove)
            } else {
                let resync = if observed.dependencies_uncached {
                    DEPENDENCY_RECHECK
                } else {
                    RESYNC
                };
                let keep = if status.phase.is_some_and(|p| p.is_terminal()) {
                    Keep::Forget
                } else {
                    // When the next poll is due, for the poll-lateness metric.
                    let polling = matches!(status.phase, Some(Phase::Running | Phase::Cancelling));
                    let poll_due = after
                        .filter(|_| polling)
                        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                        .and_then(|d| now.checked_add(d).ok());
                    Keep::Remember { poll_due }
                };
                Effect::Done {
                    requeue: Some(after.unwrap_or(resync)),
                    keep,
                }
            };
            return Plan {
                status,
                write_first: true,
                memory,
                notices,
                effect,
            };
        }
        Action::Start { request_id } => Request::Start { request_id },
        Action::Poll => Request::Poll,
        Action::Cancel => Request::Cancel,
        Action::Recover => Request::Recover,
    };
    // A turn taken for a request that is no longer due is given up: the next takes its own.
    let turn = memory.rate_turn.take();
    let effect = Effect::Send { request, turn };
    // A poll needs nothing persisted first: its outcome is written with what it observed (one
    // write per observation). A start, a cancel or a look-up is: the intent goes first.
    let write_first = !matches!(
        effect,
        Effect::Send {
            request: Request::Poll,
            ..
        }
    );
    Plan {
        status,
        write_first,
        memory,
        notices,
        effect,
    }
}

fn render_outputs(
    observed: &Observed,
    status: &LongRunningOperationStatus,
    result: Option<&Value>,
) -> Rendered {
    observed
        .spec
        .outputs
        .as_ref()
        .map(|o| outputs::render(o, status, result))
        .unwrap_or_default()
}

/// Whether a deleting operation may go: its operation ended, cannot or will not be cancelled,
/// or the deletion has waited [`DELETE_LIMIT`].
fn may_release(
    observed: &Observed,
    status: &LongRunningOperationStatus,
    caps: Caps,
    memory: &Memory,
    now: Timestamp,
) -> bool {
    let waited_too_long = observed
        .deletion_requested
        .is_some_and(|t| now.duration_since(t).as_secs_f64() >= DELETE_LIMIT.as_secs_f64());
    status.phase.is_none_or(|p| p.is_terminal())
        || !caps.can_cancel
        || memory.cancel_refused
        || waited_too_long
}

#[cfg(test)]
mod tests;
