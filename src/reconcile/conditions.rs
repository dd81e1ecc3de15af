//! kstatus conditions (`Ready`, `Reconciling`, `Stalled`) derived from the phase.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{LongRunningOperationStatus, Phase, condition};

/// Sets `Ready`, `Reconciling` and `Stalled` from `status.phase`, with `reason` and `message`.
///
/// `lastTransitionTime` moves only when a condition's status flips. `user_cancelled` says the
/// user asked for the cancellation, so `Cancelled` is not a stall.
pub fn set_from_phase(
    status: &mut LongRunningOperationStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    user_cancelled: bool,
    now: jiff::Timestamp,
) {
    let phase = status.phase.unwrap_or(Phase::Pending);
    let ready = phase == Phase::Succeeded;
    let reconciling = !phase.is_terminal();
    let stalled = match phase {
        Phase::Failed | Phase::Blocked => true,
        Phase::Cancelled => !user_cancelled,
        _ => false,
    };
    for (kind, value) in [
        (condition::READY, ready),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
    ] {
        upsert(
            &mut status.conditions,
            kind,
            value,
            reason,
            message,
            generation,
            now,
        );
    }
}

/// Updates only the `observedGeneration` of every condition (a spec change seen after the end).
pub fn observe_generation(status: &mut LongRunningOperationStatus, generation: Option<i64>) {
    for c in &mut status.conditions {
        c.observed_generation = generation;
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// Sets the condition `kind` (added if missing); `lastTransitionTime` moves only when its status flips.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if value { "True" } else { "False" }.to_owned();
    let fresh = Condition {
        type_: kind.to_owned(),
        status: status.clone(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            let last_transition_time = if existing.status == status {
                existing.last_transition_time.clone()
            } else {
                fresh.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time,
                ..fresh
            };
        }
        None => conditions.push(fresh),
    }
}
