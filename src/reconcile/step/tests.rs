//! Table tests of [`step`]: the lifecycle around `decide` (deletion and the finalizer, outputs,
//! size caps, what answers teach the memory, rate limits, the Lease, when to come back).

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::api::{
    OperationHandle, OperationRef, OutputTarget, Outputs, Phase, ProviderKind, ProviderRef,
    StartRequest,
};
use crate::protocol::{Observation, Started, UpstreamState};
use crate::reconcile::Schedule;
use crate::reconcile::decide::NOT_FOUND_GRACE;

const UID: &str = "5c1d2e3f-0000-4000-8000-000000000001";

fn t(secs: f64) -> Timestamp {
    Timestamp::from_second(1_800_000_000)
        .unwrap()
        .checked_add(jiff::SignedDuration::from_secs_f64(secs))
        .unwrap()
}

fn caps() -> Caps {
    Caps {
        idempotent_start: true,
        can_cancel: true,
        ..Caps::default()
    }
}

/// A new operation that starts one upstream.
fn observed() -> Observed {
    Observed {
        spec: LongRunningOperationSpec {
            provider_ref: ProviderRef {
                kind: ProviderKind::OperationProvider,
                name: "cloud".into(),
            },
            start: Some(StartRequest {
                method: Default::default(),
                path: "projects/demo/clusters".into(),
                query: Default::default(),
                headers: Default::default(),
                body: None,
            }),
            operation: None,
            polling: None,
            cancel: false,
            on_delete: OnDelete::Orphan,
            depends_on: Vec::new(),
            outputs: None,
        },
        generation: Some(1),
        uid: UID.into(),
        deletion_requested: None,
        has_finalizer: false,
        status: LongRunningOperationStatus::default(),
        provider: Ok(caps()),
        policy: Policy {
            schedule: Schedule {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.0,
            },
            timeout: None,
            not_found_grace: NOT_FOUND_GRACE,
        },
        prerequisites: Prerequisites::default(),
        dependencies_uncached: false,
        memory: Memory::new(t(0.0)),
        max_status_result_bytes: 1024,
    }
}

/// `o` after `outcome`, as the controller loop keeps it.
fn after(mut o: Observed, outcome: &Outcome, now: f64) -> (Observed, Plan) {
    let plan = step(&o, outcome, t(now));
    o.status = plan.status.clone();
    o.memory = plan.memory.clone();
    if matches!(plan.effect, Effect::Finalizer(_)) {
        o.has_finalizer = !o.has_finalizer;
    }
    (o, plan)
}

/// An adopted operation, already running.
fn running() -> Observed {
    let mut o = observed();
    o.spec.start = None;
    o.spec.operation = Some(OperationRef {
        name: Some("operations/op-1".into()),
        id: None,
        url: None,
    });
    let (o, _) = after(o, &Outcome::Begin, 0.0);
    o
}

fn polled(state: UpstreamState, result: Option<serde_json::Value>) -> Outcome {
    Outcome::Upstream(
        Box::new(Event::Polled(Observation {
            state,
            upstream_state: Some("DONE".into()),
            result,
            ..Observation::default()
        })),
        Some(Fact::Answered {
            at: t(1.0),
            retry_after: None,
        }),
    )
}

#[test]
fn a_start_is_written_before_it_is_sent_a_poll_is_not() {
    let plan = step(&observed(), &Outcome::Begin, t(0.0));
    assert_eq!(plan.status.phase, Some(Phase::Starting));
    assert!(plan.write_first, "the start intent is persisted first");
    assert!(matches!(
        plan.effect,
        Effect::Send {
            request: Request::Start { .. },
            turn: None
        }
    ));
    let mut o = observed();
    o.spec.start = None;
    o.spec.operation = Some(OperationRef {
        name: Some("operations/op-1".into()),
        id: None,
        url: None,
    });
    let plan = step(&o, &Outcome::Begin, t(0.0));
    assert_eq!(plan.status.phase, Some(Phase::Running));
    assert!(!plan.write_first, "a poll is written with what it observes");
    assert!(matches!(
        plan.effect,
        Effect::Send {
            request: Request::Poll,
            ..
        }
    ));
}

#[test]
fn deletion_and_the_finalizer() {
    // Deleted with nothing to cancel: forget it, wait for nothing.
    let mut o = running();
    o.deletion_requested = Some(t(5.0));
    let plan = step(&o, &Outcome::Begin, t(5.0));
    assert_eq!(
        plan.effect,
        Effect::Done {
            requeue: None,
            keep: Keep::Forget
        }
    );
    assert!(settled(&o));
    // onDelete: Cancel adds the finalizer first, then goes on.
    let mut o = running();
    o.spec.on_delete = OnDelete::Cancel;
    let (o, plan) = after(o, &Outcome::Begin, 1.0);
    assert_eq!(plan.effect, Effect::Finalizer(Finalizer::Add));
    let (_, plan) = after(o.clone(), &Outcome::FinalizerChanged, 1.0);
    assert!(!matches!(plan.effect, Effect::Finalizer(_)), "{plan:?}");
    // Deleting: the cancel is sent.
    let mut deleting = o.clone();
    deleting.deletion_requested = Some(t(20.0));
    let (_, plan) = after(deleting.clone(), &Outcome::Begin, 20.0);
    assert!(matches!(
        plan.effect,
        Effect::Send {
            request: Request::Cancel,
            ..
        }
    ));
    // Ten minutes without confirmation: released, with a warning.
    let mut waited = deleting;
    waited.status.phase = Some(Phase::Cancelling);
    waited.memory.cancel_sent = true;
    // The poll after which the deadline is found passed.
    let still_running = Outcome::Upstream(
        Box::new(Event::Polled(Observation {
            state: UpstreamState::Running,
            upstream_state: Some("RUNNING".into()),
            ..Observation::default()
        })),
        Some(Fact::Answered {
            at: t(620.0),
            retry_after: None,
        }),
    );
    let plan = step(
        &waited,
        &still_running,
        t(20.0 + DELETE_LIMIT.as_secs_f64()),
    );
    assert_eq!(plan.effect, Effect::Finalizer(Finalizer::Remove));
    assert!(
        plan.notices
            .iter()
            .any(|n| n.warning && n.reason == "DeletedWithoutCancel")
    );
}

#[test]
fn outputs_are_written_before_succeeded_is() {
    let mut o = running();
    o.spec.outputs = Some(Outputs {
        config_map: Some(OutputTarget {
            name: "endpoint".into(),
            data: [("url".to_owned(), "result.url".to_owned())].into(),
        }),
        secret: None,
    });
    let done = polled(UpstreamState::Succeeded, Some(json!({"url": "https://db"})));
    let (o, plan) = after(o, &done, 2.0);
    assert_eq!(plan.status.phase, Some(Phase::Succeeded));
    assert!(!plan.write_first, "Succeeded waits for the outputs");
    let Effect::PublishOutputs(rendered) = &plan.effect else {
        panic!("{plan:?}");
    };
    let target = rendered.config_map.clone().unwrap().unwrap();
    assert_eq!(target.data["url"], "https://db");
    let written = Outcome::OutputsWritten {
        rendered: rendered.clone(),
        written: vec!["ConfigMap endpoint".into()],
        error: None,
    };
    let (o, plan) = after(o, &written, 2.0);
    assert!(matches!(
        plan.effect,
        Effect::Done {
            keep: Keep::Forget,
            ..
        }
    ));
    let c = super::super::conditions::find(&plan.status.conditions, outputs::OUTPUTS_PUBLISHED)
        .unwrap();
    assert_eq!(c.status, "True");
    assert!(settled(&o));
}

#[test]
fn an_output_conflict_is_reported_and_tried_again_later_not_in_a_loop() {
    let mut o = running();
    o.spec.outputs = Some(Outputs {
        config_map: Some(OutputTarget {
            name: "theirs".into(),
            data: [("url".to_owned(), "result.url".to_owned())].into(),
        }),
        secret: None,
    });
    let done = polled(UpstreamState::Succeeded, Some(json!({"url": "https://db"})));
    let (o, plan) = after(o, &done, 2.0);
    let Effect::PublishOutputs(rendered) = &plan.effect else {
        panic!("{plan:?}");
    };
    let conflict = Outcome::OutputsWritten {
        rendered: rendered.clone(),
        written: Vec::new(),
        error: Some(WriteFailure::conflict("ConfigMap theirs exists")),
    };
    let (o, plan) = after(o, &conflict, 2.0);
    assert_eq!(
        plan.effect,
        Effect::Done {
            requeue: Some(OUTPUTS_RETRY),
            keep: Keep::Remember { poll_due: None },
        }
    );
    assert!(plan.write_first, "Succeeded and the conflict are written");
    assert_eq!(plan.status.phase, Some(Phase::Succeeded));
    let c = super::super::conditions::find(&plan.status.conditions, outputs::OUTPUTS_PUBLISHED)
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "OutputConflict")
    );
    assert!(!settled(&o), "the outputs are still owed");
    // The next reconcile (the requeue) tries again.
    let (_, plan) = after(o, &Outcome::Begin, 32.0);
    assert!(matches!(plan.effect, Effect::PublishOutputs(_)), "{plan:?}");
}

#[test]
fn what_an_answer_teaches_is_learnt_with_retry_after_clamped() {
    let o = running();
    let outcome = Outcome::Upstream(
        Box::new(Event::PollFailed(crate::reconcile::PollFailure {
            message: "HTTP 429".into(),
            not_found: false,
        })),
        Some(Fact::Failed {
            at: t(1.0),
            error: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(86_400 * 365)),
            not_found: false,
        }),
    );
    let plan = step(&o, &outcome, t(1.0));
    assert_eq!(plan.memory.failures, 1);
    assert_eq!(
        plan.effect,
        Effect::Done {
            requeue: Some(crate::reconcile::MAX_RETRY_AFTER),
            keep: Keep::Remember {
                poll_due: Some(t(1.0 + 600.0))
            }
        }
    );
}

#[test]
fn rate_limits_and_the_lease_hold_requests_back_without_losing_them() {
    let o = running();
    let turn = Instant::now() + Duration::from_secs(3);
    let plan = step(
        &o,
        &Outcome::HeldBack {
            turn,
            wait: Duration::from_secs(3),
        },
        t(1.0),
    );
    assert_eq!(plan.memory.rate_turn, Some(turn));
    assert!(plan.memory.request_owed, "the poll stays due");
    assert!(
        matches!(plan.effect, Effect::Done { requeue: Some(d), .. } if d == Duration::from_secs(3))
    );
    // The turn is spent by the next request.
    let mut o = o;
    o.memory = plan.memory;
    let plan = step(&o, &Outcome::Begin, t(4.0));
    assert_eq!(
        plan.effect,
        Effect::Send {
            request: Request::Poll,
            turn: Some(turn)
        }
    );
    assert_eq!(plan.memory.rate_turn, None);
    let plan = step(&o, &Outcome::NotLeader, t(4.0));
    assert!(matches!(plan.effect, Effect::Done { requeue: Some(d), .. } if d == NOT_LEADER_RETRY));
    assert!(plan.memory.request_owed, "the request stays due");
    // The namespace's fair share: back within one to two seconds, the request still due.
    let plan = step(&o, &Outcome::Busy, t(4.0));
    assert!(plan.memory.request_owed);
    assert!(
        matches!(plan.effect, Effect::Done { requeue: Some(d), .. } if d >= BUSY_RETRY && d < BUSY_RETRY * 2),
        "{plan:?}"
    );
    assert!(
        !plan.write_first || plan.status == o.status,
        "nothing new to write"
    );
}

#[test]
fn the_status_is_capped_before_it_is_written() {
    let o = running();
    let big = json!({"blob": "x".repeat(5000)});
    let plan = step(&o, &polled(UpstreamState::Succeeded, Some(big)), t(1.0));
    assert_eq!(plan.status.phase, Some(Phase::Succeeded));
    assert_eq!(plan.status.result, None, "over max_status_result_bytes");
    let failed = Outcome::Upstream(
        Box::new(Event::Polled(Observation {
            state: UpstreamState::Failed,
            error: Some(crate::api::OperationError {
                code: "UNKNOWN".into(),
                message: "é".repeat(10_000),
                ..Default::default()
            }),
            ..Observation::default()
        })),
        None,
    );
    let plan = step(&running(), &failed, t(1.0));
    let message = plan.status.error.unwrap().message;
    assert!(message.len() <= crate::reconcile::MAX_STATUS_TEXT);
}

#[test]
fn waiting_on_another_shards_dependency_comes_back_on_its_own() {
    let mut o = observed();
    o.spec.depends_on = vec!["network".into()];
    o.prerequisites.dependencies = [("network".to_owned(), Some(Phase::Running))].into();
    o.dependencies_uncached = true;
    let plan = step(&o, &Outcome::Begin, t(0.0));
    assert_eq!(plan.status.phase, Some(Phase::Pending));
    assert!(
        matches!(plan.effect, Effect::Done { requeue: Some(d), .. } if d == DEPENDENCY_RECHECK)
    );
}

#[test]
fn a_started_operation_keeps_its_handle_and_polls_on_schedule() {
    let o = observed();
    let (o, _) = after(o, &Outcome::Begin, 0.0);
    let started = Outcome::Upstream(
        Box::new(Event::Started(Started {
            handle: OperationHandle {
                name: Some("operations/op-9".into()),
                ..Default::default()
            },
            observation: Observation::default(),
        })),
        Some(Fact::Answered {
            at: t(1.0),
            retry_after: None,
        }),
    );
    let plan = step(&o, &started, t(1.0));
    assert_eq!(plan.status.phase, Some(Phase::Running));
    assert_eq!(
        plan.status.operation.unwrap().name.as_deref(),
        Some("operations/op-9")
    );
    assert!(matches!(
        plan.effect,
        Effect::Done {
            requeue: Some(_),
            keep: Keep::Remember { .. }
        }
    ));
}

#[test]
fn each_answer_narrows_the_rate_its_progress_moves_at() {
    let poll = |progress| {
        Outcome::Upstream(
            Box::new(Event::Polled(Observation {
                state: UpstreamState::Running,
                progress,
                ..Observation::default()
            })),
            Some(Fact::Answered {
                at: t(1.0),
                retry_after: None,
            }),
        )
    };
    let o = running();
    assert_eq!(o.status.started_at.as_ref().map(|s| s.0), Some(t(0.0)));
    let rate = |plan: &Plan| {
        let r = plan.memory.progress_rate.expect("a rate");
        (r.percent, r.step, r.at_least, r.below, r.steady)
    };
    // 40 % after 10 s: at least 4 %/s; below 8 %/s (the step may be 40 %).
    let (o, plan) = after(o, &poll(Some(40)), 10.0);
    assert_eq!(rate(&plan), (40, 40, 4.0, 8.0, true));
    // None: nothing learnt. 60 % after 15 s: the step is 20 % or less; at least 4 %/s, below
    // 80 / 15.
    let (o, plan) = after(o, &poll(None), 12.0);
    assert_eq!(rate(&plan), (40, 40, 4.0, 8.0, true));
    let (o, plan) = after(o, &poll(Some(60)), 15.0);
    assert_eq!(rate(&plan), (60, 20, 4.0, 80.0 / 15.0, true));
    // Still 60 % after 20 s: below 80 / 20 = 4 %/s, which no rate of at least 4 fits (a stall).
    let (o, plan) = after(o, &poll(Some(60)), 20.0);
    assert!(!plan.memory.progress_rate.unwrap().steady);
    // Less: still a stall. Moving on again: learnt anew from there.
    let (o, plan) = after(o, &poll(Some(30)), 25.0);
    assert!(!plan.memory.progress_rate.unwrap().steady);
    let (_, plan) = after(o, &poll(Some(70)), 35.0);
    assert_eq!(rate(&plan), (70, 10, 2.0, 80.0 / 35.0, true));
}
