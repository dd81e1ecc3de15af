//! Table-driven tests of [`decide`] against the phase table of `docs/architecture.md`.
//!
//! Every case starts from a [`World`] (spec, status, memory, caps, policy, clock) built the way the
//! controller would reach it — by feeding earlier events through `decide` itself — then applies one
//! event and checks the phase, the action, the condition reason and anything specific to the row.
//! Every row is also checked against the invariants that hold for all decisions (see [`invariants`]).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::json;

use super::*;
use crate::api::{HttpMethod, OperationRef, ProviderKind, ProviderRef, StartRequest, condition};
use crate::reconcile::conditions as conds;

const UID: &str = "5c1d2e3f-0000-4000-8000-000000000001";
const OP: &str = "operations/op-1";
const GEN: Option<i64> = Some(1);

/// `T + secs`, with `T` a fixed instant.
fn t(secs: f64) -> Timestamp {
    Timestamp::from_second(1_800_000_000)
        .unwrap()
        .checked_add(jiff::SignedDuration::from_secs_f64(secs))
        .unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Without jitter its points are 0, 10, 30, 70, 130, 190, … (interval = min(60, 10 + t)).
fn schedule() -> Schedule {
    Schedule {
        initial: secs(10.0),
        max: secs(60.0),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

fn spec(start: bool) -> LongRunningOperationSpec {
    LongRunningOperationSpec {
        provider_ref: ProviderRef {
            kind: ProviderKind::OperationProvider,
            name: "cloud".into(),
        },
        start: start.then(|| StartRequest {
            method: HttpMethod::Post,
            path: "projects/demo/clusters".into(),
            query: Default::default(),
            headers: Default::default(),
            body: Some(json!({"name": "c1"})),
        }),
        operation: (!start).then(|| OperationRef {
            name: Some(OP.into()),
            id: None,
            url: None,
        }),
        polling: None,
        cancel: false,
        on_delete: Default::default(),
        depends_on: Vec::new(),
        outputs: None,
    }
}

fn obs(state: UpstreamState, progress: Option<i32>) -> Observation {
    let word = match state {
        UpstreamState::Pending => "PENDING",
        UpstreamState::Running => "RUNNING",
        _ => "DONE",
    };
    Observation {
        state,
        upstream_state: Some(word.into()),
        progress,
        ..Observation::default()
    }
}

fn upstream_error(code: &str, message: &str) -> OperationError {
    OperationError {
        code: code.into(),
        provider_code: Some("9".into()),
        http_status: None,
        message: message.into(),
        details: vec![],
    }
}

fn handle() -> OperationHandle {
    OperationHandle {
        name: Some(OP.into()),
        ..OperationHandle::default()
    }
}

fn started(observation: Observation) -> Event {
    Event::Started(Started {
        handle: handle(),
        observation,
    })
}

fn poll_failed(not_found: bool) -> Event {
    Event::PollFailed(PollFailure {
        message: "HTTP 503: unavailable".into(),
        not_found,
    })
}

/// One of every event.
fn every_event() -> Vec<Event> {
    vec![
        Event::Reconcile,
        Event::ProviderUnavailable("provider cloud not found".into()),
        started(obs(UpstreamState::Running, None)),
        Event::StartRejected(upstream_error("INVALID_ARGUMENT", "bad")),
        Event::StartLost("timeout".into()),
        Event::StartRefused("refusing to send to https://elsewhere/x".into()),
        Event::Polled(obs(UpstreamState::Running, Some(50))),
        Event::Polled(obs(UpstreamState::Succeeded, Some(100))),
        poll_failed(false),
        poll_failed(true),
        Event::CancelSent,
        Event::CancelRefused("no".into()),
        Event::CancelLost("timeout".into()),
        Event::StartDeferred("HTTP 429: slow down".into()),
        Event::Recovered(Started {
            handle: handle(),
            observation: obs(UpstreamState::Running, Some(10)),
        }),
        Event::NotRecovered("several operations".into()),
        Event::RecoveryFailed("HTTP 503".into()),
    ]
}

/// Everything `decide` looks at, owned, with builder methods.
#[derive(Clone, Debug)]
struct World {
    spec: LongRunningOperationSpec,
    status: LongRunningOperationStatus,
    generation: Option<i64>,
    policy: Policy,
    caps: Caps,
    memory: Memory,
    pre: Prerequisites,
    now: Timestamp,
}

impl World {
    /// A new object (no status) at `T`.
    fn new(start: bool) -> World {
        World {
            spec: spec(start),
            status: LongRunningOperationStatus::default(),
            generation: GEN,
            policy: Policy {
                schedule: schedule(),
                timeout: None,
                not_found_grace: NOT_FOUND_GRACE,
            },
            caps: Caps {
                idempotent_start: true,
                can_cancel: true,
                ..Caps::default()
            },
            memory: Memory::new(t(0.0)),
            pre: Prerequisites::default(),
            now: t(0.0),
        }
    }

    /// With `body` as `spec.start.body`.
    fn body(mut self, body: serde_json::Value) -> World {
        if let Some(start) = self.spec.start.as_mut() {
            start.body = Some(body);
        }
        self
    }

    /// Depends on `names`.
    fn depends_on(mut self, names: &[&str]) -> World {
        self.spec.depends_on = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The dependency `name` observed in `phase`.
    fn dep(mut self, name: &str, phase: Option<Phase>) -> World {
        self.pre.dependencies.insert(name.into(), phase);
        self
    }

    /// Starting since `T`: the intent (request id = uid) is recorded, the request is in flight.
    fn starting() -> World {
        World::new(true).then(&Event::Reconcile)
    }

    /// Running since `T`: adopted at `T`, polled at `T` (RUNNING, 10 %), nothing new since.
    fn running() -> World {
        World::new(false)
            .then(&Event::Reconcile)
            .polled(obs(UpstreamState::Running, Some(10)))
    }

    /// Like [`World::running`] but the upstream reports no progress.
    fn running_without_progress() -> World {
        World::new(false)
            .then(&Event::Reconcile)
            .polled(obs(UpstreamState::Running, None))
    }

    /// Cancelling since `T + 1`: the user set `spec.cancel` and the upstream accepted the cancel.
    fn cancelling() -> World {
        let w = World::running().cancel().at(1.0).then(&Event::Reconcile);
        assert_eq!(w.status.phase, Some(Phase::Cancelling));
        w.mem(|m| m.cancel_sent = true).then(&Event::CancelSent)
    }

    fn at(mut self, s: f64) -> World {
        self.now = t(s);
        self
    }

    fn cancel(mut self) -> World {
        self.spec.cancel = true;
        self
    }

    fn long_poll(mut self) -> World {
        self.caps.long_poll = true;
        self
    }

    fn caps(mut self, idempotent_start: bool, can_cancel: bool) -> World {
        self.caps = Caps {
            idempotent_start,
            can_cancel,
            ..Caps::default()
        };
        self
    }

    /// No idempotency key, but the protocol can look a lost start up.
    fn recoverable(mut self) -> World {
        self.caps = Caps {
            idempotent_start: false,
            no_idempotency: "no idempotency key (test)",
            can_recover: true,
            can_cancel: true,
            long_poll: false,
        };
        self
    }

    fn timeout(mut self, s: f64) -> World {
        self.policy.timeout = Some(secs(s));
        self
    }

    fn generation(mut self, g: i64) -> World {
        self.generation = Some(g);
        self
    }

    fn mem(mut self, f: impl FnOnce(&mut Memory)) -> World {
        f(&mut self.memory);
        self
    }

    /// A process restart: everything in memory is lost, status survives.
    fn restart(mut self) -> World {
        self.memory = Memory::new(self.now);
        self
    }

    fn decide(&self, event: &Event) -> Decision {
        decide(&Input {
            spec: &self.spec,
            status: &self.status,
            generation: self.generation,
            uid: UID,
            policy: &self.policy,
            caps: self.caps,
            memory: &self.memory,
            event,
            deleting: false,
            prerequisites: &self.pre,
            now: self.now,
        })
    }

    /// Applies an event and keeps the new status (what the controller writes).
    fn then(mut self, event: &Event) -> World {
        let d = self.decide(event);
        invariants("(setup)", &self, event, &d);
        self.status = d.status;
        self
    }

    /// A successful poll at `now`, recorded in memory as the controller does.
    fn polled(self, observation: Observation) -> World {
        let now = self.now;
        self.mem(|m| m.record_success(now, None))
            .then(&Event::Polled(observation))
    }
}

/// What the action must be.
#[derive(Debug)]
enum Want {
    /// Exactly this action.
    Is(Action),
    /// Wait for a positive, finite time (no hot loop, no lost object).
    WaitSome,
}

/// One row of a table.
struct Row {
    name: &'static str,
    given: World,
    event: Event,
    phase: Phase,
    action: Want,
    /// The reason on all three conditions.
    reason: &'static str,
    /// Anything specific to the row.
    check: fn(&World, &Decision),
}

fn nothing(_: &World, _: &Decision) {}

fn run(rows: Vec<Row>) {
    assert!(!rows.is_empty());
    for row in rows {
        let d = row.given.decide(&row.event);
        let name = row.name;
        assert_eq!(d.status.phase, Some(row.phase), "{name}: phase\n{d:#?}");
        match &row.action {
            Want::Is(a) => assert_eq!(&d.action, a, "{name}: action"),
            Want::WaitSome => assert!(
                matches!(d.action, Action::Wait(Some(w)) if w > Duration::ZERO),
                "{name}: want a positive wait, got {:?}",
                d.action
            ),
        }
        for kind in [condition::READY, condition::RECONCILING, condition::STALLED] {
            assert_eq!(
                cond(&d.status, kind).reason,
                row.reason,
                "{name}: {kind} reason"
            );
        }
        invariants(name, &row.given, &row.event, &d);
        (row.check)(&row.given, &d);
        // Pure: the same input gives the same output.
        assert_eq!(row.given.decide(&row.event), d, "{name}: not deterministic");
    }
}

fn cond<'a>(status: &'a LongRunningOperationStatus, kind: &str) -> &'a Condition {
    conds::find(&status.conditions, kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status:#?}"))
}

fn is_true(status: &LongRunningOperationStatus, kind: &str) -> bool {
    match cond(status, kind).status.as_str() {
        "True" => true,
        "False" => false,
        other => panic!("{kind} status {other:?}"),
    }
}

/// What holds for every decision.
fn invariants(name: &str, given: &World, event: &Event, d: &Decision) {
    let before = &given.status;
    let after = &d.status;
    let phase = after.phase.expect("decide always sets a phase");
    assert_eq!(
        after.observed_generation, given.generation,
        "{name}: observedGeneration"
    );
    // Conditions follow from the phase (`docs/architecture.md`, "Conditions").
    let stalled = match phase {
        Phase::Failed | Phase::Blocked => true,
        Phase::Cancelled => !given.spec.cancel,
        _ => false,
    };
    assert_eq!(
        is_true(after, condition::READY),
        phase == Phase::Succeeded,
        "{name}: Ready"
    );
    assert_eq!(
        is_true(after, condition::RECONCILING),
        !phase.is_terminal(),
        "{name}: Reconciling"
    );
    assert_eq!(
        is_true(after, condition::STALLED),
        stalled,
        "{name}: Stalled"
    );
    for c in &after.conditions {
        assert_eq!(
            c.observed_generation, given.generation,
            "{name}: {} observedGeneration",
            c.type_
        );
        // lastTransitionTime moves only when the status flips.
        if let Some(old) = conds::find(&before.conditions, &c.type_) {
            if old.status == c.status {
                assert_eq!(
                    old.last_transition_time, c.last_transition_time,
                    "{name}: {} lastTransitionTime",
                    c.type_
                );
            } else {
                assert_eq!(
                    c.last_transition_time.0, given.now,
                    "{name}: {} lastTransitionTime",
                    c.type_
                );
            }
        }
    }
    // Terminal phases never change, and wait only for a change; nothing else waits forever or spins.
    if let Some(p) = before.phase.filter(|p| p.is_terminal()) {
        assert_eq!(phase, p, "{name}: a terminal phase changed on {event:?}");
    }
    match d.action {
        Action::Wait(None) => assert!(phase.is_terminal(), "{name}: waits forever in {phase:?}"),
        Action::Wait(Some(w)) => {
            assert!(!phase.is_terminal(), "{name}: requeues a terminal phase");
            assert!(w > Duration::ZERO, "{name}: hot loop");
        }
        _ => assert!(!phase.is_terminal(), "{name}: acts in a terminal phase"),
    }
    // Progress never decreases; it is never invented.
    if let (Some(old), Some(new)) = (before.progress, after.progress) {
        assert!(new >= old, "{name}: progress went from {old} to {new}");
    }
    if after.progress.is_some() && before.progress.is_none() {
        let (Event::Polled(o)
        | Event::Started(Started { observation: o, .. })
        | Event::Recovered(Started { observation: o, .. })) = event
        else {
            panic!("{name}: progress invented on {event:?}");
        };
        assert!(o.progress.is_some(), "{name}: progress invented");
    }
    // The idempotency key never changes once recorded.
    if let Some(id) = before
        .operation
        .as_ref()
        .and_then(|h| h.request_id.as_ref())
    {
        let kept = after.operation.as_ref().and_then(|h| h.request_id.as_ref());
        assert_eq!(kept, Some(id), "{name}: request id lost");
    }
    // completedAt is set when (and only when) the phase becomes terminal.
    if phase.is_terminal() && !before.phase.is_some_and(|p| p.is_terminal()) {
        assert_eq!(
            after.completed_at.as_ref().map(|c| c.0),
            Some(given.now),
            "{name}: completedAt"
        );
    }
    if !phase.is_terminal() {
        assert_eq!(
            after.completed_at, None,
            "{name}: completedAt while in flight"
        );
    }
}

/// The returned status is the input status: nothing to write.
fn unchanged(w: &World, d: &Decision) {
    assert_eq!(d.status, w.status, "a write without a visible change");
}

#[test]
fn a_new_object_starts_or_adopts() {
    run(vec![
        Row {
            name: "new + start: intent recorded before sending",
            given: World::new(true).at(3.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: |_, d| {
                let op = d.status.operation.as_ref().unwrap();
                assert_eq!(op.request_id.as_deref(), Some(UID));
                assert_eq!((&op.name, &op.id, &op.url), (&None, &None, &None));
                assert_eq!(d.status.started_at.as_ref().unwrap().0, t(3.0));
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(3.0));
                assert_eq!(d.status.progress, None);
            },
        },
        Row {
            name: "new + operation: adopted, first poll due now",
            given: World::new(false).at(3.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "Polling",
            check: |_, d| {
                assert_eq!(d.status.operation, Some(handle()));
                assert_eq!(d.status.started_at.as_ref().unwrap().0, t(3.0));
                assert_eq!(d.notices[0].reason, "Adopted");
            },
        },
        Row {
            // A start without an idempotency key, written as intended but held back before it
            // was sent (rate limit, fair share, Lease): sent now, not given up as unknown.
            name: "Starting (no key), start held back: sent, not StartOutcomeUnknown",
            given: World::starting()
                .caps(false, true)
                .mem(|m| m.request_owed = true)
                .at(1.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: nothing,
        },
        Row {
            name: "Starting (no key), restarted before the answer: not resent",
            given: World::starting().caps(false, true).at(1.0),
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartOutcomeUnknown",
            check: nothing,
        },
        Row {
            // The first poll of an adopted operation was held back (the provider's rate limit):
            // it stays due until it is sent, not pushed to the schedule's next point.
            name: "adopted, first poll held back: still due",
            given: World::new(false)
                .then(&Event::Reconcile)
                .mem(|m| m.request_owed = true)
                .at(0.4),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "Polling",
            check: nothing,
        },
        Row {
            name: "new + start, provider unavailable: Pending, retried in 30 s",
            given: World::new(true),
            event: Event::ProviderUnavailable("OperationProvider cloud not found".into()),
            phase: Phase::Pending,
            action: Want::Is(Action::Wait(Some(PROVIDER_RETRY))),
            reason: "ProviderNotReady",
            check: |_, d| {
                assert_eq!(PROVIDER_RETRY, secs(30.0));
                assert_eq!(d.status.operation, None, "nothing started");
                assert!(
                    cond(&d.status, condition::READY)
                        .message
                        .contains("not found")
                );
            },
        },
        Row {
            name: "new + start whose body was nested too deep to read: Failed, nothing started",
            given: World::new(true).body(serde_json::json!({"a": {"b": crate::nesting::TOO_DEEP}})),
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "SpecTooDeep",
            check: |_, d| {
                assert_eq!(d.status.operation, None, "nothing started");
                let message = d.status.message.as_deref().unwrap_or_default();
                assert!(message.contains("spec.start.body"), "{message}");
            },
        },
        Row {
            name: "Pending, provider still unavailable: nothing to write",
            given: World::new(true)
                .then(&Event::ProviderUnavailable("gone".into()))
                .at(30.0),
            event: Event::ProviderUnavailable("gone".into()),
            phase: Phase::Pending,
            action: Want::Is(Action::Wait(Some(PROVIDER_RETRY))),
            reason: "ProviderNotReady",
            check: unchanged,
        },
        Row {
            name: "Pending, provider back: Starting",
            given: World::new(true)
                .then(&Event::ProviderUnavailable("gone".into()))
                .at(30.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: |_, d| assert_eq!(d.status.started_at.as_ref().unwrap().0, t(30.0)),
        },
        Row {
            name: "Pending (adopt), provider back: Running",
            given: World::new(false)
                .then(&Event::ProviderUnavailable("gone".into()))
                .at(30.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "Polling",
            check: |_, d| assert_eq!(d.status.operation, Some(handle())),
        },
        Row {
            name: "Running, provider unavailable: phase kept",
            given: World::running().at(5.0),
            event: Event::ProviderUnavailable("credentials missing".into()),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(PROVIDER_RETRY))),
            reason: "ProviderNotReady",
            check: |w, d| assert_eq!(d.status.operation, w.status.operation),
        },
    ]);
}

#[test]
fn starting() {
    run(vec![
        Row {
            name: "Starting + Started (running): Running with the handle and the same request id",
            given: World::starting()
                .at(2.0)
                .mem(|m| m.record_success(t(2.0), None)),
            event: started(obs(UpstreamState::Running, Some(5))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(10.0)))),
            reason: "Polling",
            check: |_, d| {
                let op = d.status.operation.as_ref().unwrap();
                assert_eq!(op.name.as_deref(), Some(OP));
                assert_eq!(op.request_id.as_deref(), Some(UID));
                assert_eq!(d.status.progress, Some(5));
                assert_eq!(d.status.upstream_state.as_deref(), Some("RUNNING"));
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(2.0));
                assert_eq!(d.status.started_at.as_ref().unwrap().0, t(0.0));
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.reason == "Started" && !n.warning)
                );
            },
        },
        Row {
            name: "Starting + Started (already succeeded): straight to Succeeded",
            given: World::starting().at(2.0),
            event: started(Observation {
                result: Some(json!({"id": "c1"})),
                ..obs(UpstreamState::Succeeded, None)
            }),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: |_, d| {
                let op = d.status.operation.as_ref().unwrap();
                assert_eq!(op.name.as_deref(), Some(OP));
                assert_eq!(op.request_id.as_deref(), Some(UID));
                assert_eq!(d.status.result, Some(json!({"id": "c1"})));
                assert_eq!(d.status.progress, None, "progress is never invented");
            },
        },
        Row {
            name: "Starting + Started (already failed): straight to Failed",
            given: World::starting().at(2.0),
            event: started(Observation {
                error: Some(upstream_error("RESOURCE_EXHAUSTED", "quota")),
                ..obs(UpstreamState::Failed, None)
            }),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "UpstreamFailed",
            check: |_, d| {
                assert_eq!(d.status.error.as_ref().unwrap().code, "RESOURCE_EXHAUSTED");
                assert_eq!(
                    d.status.operation.as_ref().unwrap().name.as_deref(),
                    Some(OP)
                );
            },
        },
        Row {
            name: "Starting + StartLost, idempotent: stays Starting and waits (no hot loop)",
            given: World::starting()
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false)),
            event: Event::StartLost("timeout".into()),
            phase: Phase::Starting,
            // The next point after the lost request (at 1 s) is 10 s.
            action: Want::Is(Action::Wait(Some(secs(9.0)))),
            reason: "StartRetrying",
            check: |w, d| {
                assert_eq!(d.status.operation, w.status.operation, "same request id");
                assert!(d.status.message.as_ref().unwrap().contains(UID));
            },
        },
        Row {
            name: "Starting + StartLost with Retry-After: waits for it",
            given: World::starting()
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "429".into(), Some(secs(120.0)), false)),
            event: Event::StartLost("HTTP 429".into()),
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(120.0)))),
            reason: "StartRetrying",
            check: nothing,
        },
        Row {
            name: "Starting after a lost start, not yet due: waits",
            given: World::starting()
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .at(1.0)
                .then(&Event::StartLost("timeout".into()))
                .at(5.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(5.0)))),
            reason: "StartRetrying",
            check: unchanged,
        },
        Row {
            name: "Starting after a lost start, due: resend the SAME request id",
            given: World::starting()
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .at(1.0)
                .then(&Event::StartLost("timeout".into()))
                .at(10.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "StartRetrying",
            check: nothing,
        },
        Row {
            name: "Starting + StartLost again: backs off further",
            given: World::starting()
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .at(1.0)
                .then(&Event::StartLost("timeout".into()))
                .at(10.0)
                .mem(|m| m.record_failure(t(10.0), "timeout".into(), None, false)),
            event: Event::StartLost("timeout".into()),
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "StartRetrying",
            check: nothing,
        },
        Row {
            name: "Starting + StartLost, no idempotency key: Failed StartOutcomeUnknown",
            given: World::starting()
                .caps(false, true)
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false)),
            event: Event::StartLost("connection reset".into()),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartOutcomeUnknown",
            check: |_, d| {
                let stalled = cond(&d.status, condition::STALLED);
                assert_eq!(stalled.status, "True");
                assert!(
                    stalled.message.contains("spec.operation"),
                    "{}",
                    stalled.message
                );
                assert!(stalled.message.contains("connection reset"));
                assert!(d.status.message.as_ref().unwrap().contains("adopt"));
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.warning && n.reason == "StartOutcomeUnknown")
                );
            },
        },
        Row {
            name: "Starting + StartDeferred, no idempotency key: not processed, waits for Retry-After",
            given: World::starting()
                .caps(false, true)
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "429".into(), Some(secs(30.0)), false)),
            event: Event::StartDeferred("HTTP 429: slow down".into()),
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(30.0)))),
            reason: "StartDeferred",
            check: |_, d| {
                assert!(d.status.message.as_ref().unwrap().contains("resent"));
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "a deferred start, no idempotency key, due: resent, Starting written first",
            given: World::starting()
                .caps(false, true)
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "429".into(), Some(secs(30.0)), false))
                .then(&Event::StartDeferred("HTTP 429".into()))
                .at(31.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: nothing,
        },
        Row {
            name: "a deferred start, no idempotency key, not yet due: waits",
            given: World::starting()
                .caps(false, true)
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "429".into(), Some(secs(30.0)), false))
                .then(&Event::StartDeferred("HTTP 429".into()))
                .at(11.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "StartDeferred",
            check: unchanged,
        },
        Row {
            name: "restart after a deferred start, no idempotency key: resent at once",
            given: World::starting()
                .caps(false, true)
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "429".into(), Some(secs(30.0)), false))
                .then(&Event::StartDeferred("HTTP 429".into()))
                .at(5.0)
                .restart(),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: nothing,
        },
        Row {
            name: "Starting + StartLost, no key but a look-up: looks for the operation",
            given: World::starting()
                .recoverable()
                .at(1.0)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false)),
            event: Event::StartLost("connection reset".into()),
            phase: Phase::Starting,
            action: Want::Is(Action::Recover),
            reason: "RecoveringStart",
            check: |_, d| {
                assert!(
                    d.status
                        .message
                        .as_ref()
                        .unwrap()
                        .contains("connection reset")
                );
            },
        },
        Row {
            name: "restart in Starting, no key but a look-up: looks for the operation",
            given: World::starting().recoverable().at(500.0).restart(),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Recover),
            reason: "RecoveringStart",
            check: nothing,
        },
        Row {
            name: "Starting + Recovered: Running with the operation found",
            given: World::starting()
                .recoverable()
                .at(1.0)
                .then(&Event::StartLost("reset".into()))
                .at(2.0)
                .mem(|m| m.record_success(t(2.0), None)),
            event: Event::Recovered(Started {
                handle: handle(),
                observation: obs(UpstreamState::Running, None),
            }),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let op = d.status.operation.as_ref().unwrap();
                assert_eq!(op.name.as_deref(), Some(OP));
                assert_eq!(op.request_id.as_deref(), Some(UID));
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.reason == "Started" && n.message.contains("found upstream"))
                );
            },
        },
        Row {
            name: "Starting + NotRecovered: Failed StartOutcomeUnknown, saying why",
            given: World::starting()
                .recoverable()
                .at(1.0)
                .then(&Event::StartLost("reset".into()))
                .at(2.0),
            event: Event::NotRecovered("several TYPE_CREATE_CLUSTER operations".into()),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartOutcomeUnknown",
            check: |_, d| {
                let message = d.status.message.as_ref().unwrap();
                assert!(message.contains("several TYPE_CREATE_CLUSTER operations"));
                assert!(message.contains("no idempotency key (test)"), "{message}");
            },
        },
        Row {
            name: "Starting + RecoveryFailed: looks again on the schedule",
            given: World::starting()
                .recoverable()
                .at(1.0)
                .then(&Event::StartLost("reset".into()))
                .at(2.0)
                .mem(|m| m.record_failure(t(2.0), "503".into(), None, false)),
            event: Event::RecoveryFailed("HTTP 503".into()),
            phase: Phase::Starting,
            action: Want::Is(Action::Wait(Some(secs(8.0)))),
            reason: "RecoveringStart",
            check: nothing,
        },
        Row {
            name: "restart in Starting, idempotent: resend the same id",
            given: World::starting().at(500.0).restart(),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: unchanged,
        },
        Row {
            name: "restart in Starting keeps an id recorded earlier, whatever the uid",
            given: {
                let mut w = World::starting().at(500.0).restart();
                w.status.operation.as_mut().unwrap().request_id = Some("earlier-id".into());
                w
            },
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: "earlier-id".into(),
            }),
            reason: "Starting",
            check: unchanged,
        },
        Row {
            name: "restart in Starting, no idempotency key: Failed StartOutcomeUnknown",
            given: World::starting().caps(false, true).at(500.0).restart(),
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartOutcomeUnknown",
            check: |_, d| {
                assert!(
                    cond(&d.status, condition::STALLED)
                        .message
                        .contains("spec.operation")
                );
                assert_eq!(
                    d.status.operation.as_ref().unwrap().request_id.as_deref(),
                    Some(UID),
                    "the id is kept, to look the operation up"
                );
            },
        },
        Row {
            name: "Starting + Started with a handle too long to keep: Failed, not cut",
            given: World::starting().at(1.0),
            event: Event::Started(Started {
                handle: OperationHandle {
                    url: Some(format!("https://h/{}", "x".repeat(5000))),
                    ..OperationHandle::default()
                },
                observation: obs(UpstreamState::Running, None),
            }),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "HandleTooLarge",
            check: |_, d| {
                let message = d.status.message.as_deref().unwrap_or_default();
                assert!(message.contains("url is 5010 bytes"), "{message}");
                assert!(
                    d.status.operation.as_ref().is_none_or(|h| h.url.is_none()),
                    "no cut handle kept"
                );
            },
        },
        Row {
            name: "Starting + StartRefused (never sent): Failed, naming spec.start",
            given: World::starting().at(1.0),
            event: Event::StartRefused(
                "refusing to send to https://api/v2/x: it is not under the provider's baseURL path"
                    .into(),
            ),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartRefused",
            check: |_, d| {
                let message = d.status.message.as_deref().unwrap_or_default();
                assert!(
                    message.contains("spec.start") && message.contains("baseURL path"),
                    "{message}"
                );
                assert!(d.status.error.is_none(), "nothing upstream answered");
            },
        },
        Row {
            name: "Starting + StartRejected: Failed, upstream error kept",
            given: World::starting().at(1.0),
            event: Event::StartRejected(OperationError {
                code: "INVALID_ARGUMENT".into(),
                provider_code: Some("3".into()),
                http_status: Some(400),
                message: "zone us-x1 does not exist".into(),
                details: vec![],
            }),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "StartRejected",
            check: |_, d| {
                let e = d.status.error.as_ref().unwrap();
                assert_eq!(
                    (e.code.as_str(), e.http_status),
                    ("INVALID_ARGUMENT", Some(400))
                );
                assert_eq!(e.message, "zone us-x1 does not exist");
                assert!(
                    d.status
                        .message
                        .as_ref()
                        .unwrap()
                        .contains("zone us-x1 does not exist")
                );
                assert!(
                    cond(&d.status, condition::STALLED)
                        .message
                        .contains("us-x1")
                );
            },
        },
        Row {
            name: "Starting past the timeout: Failed Timeout, not resent",
            given: World::starting()
                .timeout(60.0)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .at(1.0)
                .then(&Event::StartLost("timeout".into()))
                .at(60.0),
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "Timeout",
            check: nothing,
        },
    ]);
}

#[test]
fn running_observations() {
    run(vec![
        Row {
            // A long poll answered "not done" after the upstream held it: the next one follows
            // after the gap, not at the schedule's next point (20 s later here).
            name: "Running + long poll answered, nothing new: the next long poll in 1 s",
            given: World::running()
                .long_poll()
                .mem(|m| m.record_success(t(10.0), None))
                .at(10.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(10))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(1.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            // A long poll that failed falls back to the schedule's backoff: no loop.
            name: "Running + long poll failed: the schedule's backoff, not the gap",
            given: World::running()
                .long_poll()
                .mem(|m| m.record_failure(t(10.0), "boom".into(), None, false))
                .at(10.0),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let Action::Wait(Some(after)) = d.action else {
                    panic!("{:?}", d.action);
                };
                assert!(after > secs(1.0), "{after:?}");
            },
        },
        Row {
            name: "Running + Polled, nothing new: status unchanged, wait for the next point",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(10))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "Polling",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "Running + Polled, pending upstream: still Running, unchanged state word kept",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(Observation {
                upstream_state: None,
                ..obs(UpstreamState::Pending, None)
            }),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: unchanged,
        },
        Row {
            // Progress alone is no change of state: the backoff from T goes on (points 30, 70).
            name: "Running + Polled, new progress: written, lastChangeAt kept, the backoff goes on",
            given: World::running()
                .at(30.0)
                .mem(|m| m.record_success(t(30.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(40))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(40.0)))),
            reason: "Polling",
            check: |w, d| {
                assert_eq!(d.status.progress, Some(40));
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(0.0));
                let mut expected = w.status.clone();
                expected.progress = Some(40);
                assert_eq!(d.status, expected, "only the progress changes");
            },
        },
        Row {
            name: "Running + Polled, new state word: updated, lastChangeAt moves",
            given: World::running()
                .at(30.0)
                .mem(|m| m.record_success(t(30.0), None)),
            event: Event::Polled(Observation {
                upstream_state: Some("PROVISIONING".into()),
                ..obs(UpstreamState::Running, Some(10))
            }),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                assert_eq!(d.status.upstream_state.as_deref(), Some("PROVISIONING"));
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(30.0));
            },
        },
        Row {
            name: "Running + Polled, lower progress: progress never decreases, nothing written",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(3))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running + Polled, progress disappears: last value kept",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, None)),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running + Polled, progress out of range: clamped",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(250))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert_eq!(d.status.progress, Some(100)),
        },
        Row {
            name: "Running + Polled, no progress ever: stays absent",
            given: World::running_without_progress()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, None)),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |w, d| {
                assert_eq!(d.status.progress, None);
                unchanged(w, d);
            },
        },
        Row {
            name: "Running + Polled, a note from the upstream: shown, counts as news",
            given: World::running()
                .at(30.0)
                .mem(|m| m.record_success(t(30.0), None)),
            event: Event::Polled(Observation {
                message: Some("waiting for quota".into()),
                ..obs(UpstreamState::Running, Some(10))
            }),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                assert_eq!(d.status.message.as_deref(), Some("waiting for quota"));
                assert_eq!(
                    cond(&d.status, condition::RECONCILING).message,
                    "waiting for quota"
                );
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(30.0));
            },
        },
        Row {
            name: "Running + Polled succeeded: Succeeded, result, progress 100",
            given: World::running().at(70.0),
            event: Event::Polled(Observation {
                result: Some(json!({"endpoint": "10.0.0.1"})),
                resource_id: Some("clusters/c1".into()),
                ..obs(UpstreamState::Succeeded, None)
            }),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: |_, d| {
                assert_eq!(d.status.result, Some(json!({"endpoint": "10.0.0.1"})));
                assert_eq!(d.status.resource_id.as_deref(), Some("clusters/c1"));
                assert_eq!(d.status.progress, Some(100));
                assert_eq!(d.status.upstream_state.as_deref(), Some("DONE"));
                assert_eq!(d.status.error, None);
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(70.0));
                assert!(d.notices.iter().all(|n| !n.warning));
            },
        },
        Row {
            name: "Running (no progress) + Polled succeeded: progress stays absent",
            given: World::running_without_progress().at(70.0),
            event: Event::Polled(obs(UpstreamState::Succeeded, None)),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: |_, d| assert_eq!(d.status.progress, None),
        },
        Row {
            name: "Running + Polled failed: Failed UpstreamFailed, error kept",
            given: World::running().at(70.0),
            event: Event::Polled(Observation {
                error: Some(upstream_error("FAILED_PRECONDITION", "network in use")),
                ..obs(UpstreamState::Failed, Some(60))
            }),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "UpstreamFailed",
            check: |_, d| {
                let e = d.status.error.as_ref().unwrap();
                assert_eq!(e.code, "FAILED_PRECONDITION");
                assert_eq!(e.provider_code.as_deref(), Some("9"));
                assert_eq!(d.status.progress, Some(60), "last progress kept, not 100");
                assert_eq!(d.status.result, None);
                assert!(
                    cond(&d.status, condition::STALLED)
                        .message
                        .contains("network in use")
                );
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.warning && n.reason == "UpstreamFailed")
                );
            },
        },
        Row {
            name: "Running + Polled cancelled (not asked for): Cancelled, Stalled",
            given: World::running().at(70.0),
            event: Event::Polled(Observation {
                error: Some(upstream_error("CANCELLED", "cancelled by admin")),
                ..obs(UpstreamState::Cancelled, None)
            }),
            phase: Phase::Cancelled,
            action: Want::Is(Action::Wait(None)),
            reason: "Cancelled",
            check: |_, d| {
                assert!(is_true(&d.status, condition::STALLED));
                assert_eq!(d.status.error.as_ref().unwrap().code, "CANCELLED");
            },
        },
        Row {
            name: "Running + Polled cancelled with spec.cancel: Cancelled, not Stalled",
            given: World::running().cancel().at(70.0),
            event: Event::Polled(obs(UpstreamState::Cancelled, None)),
            phase: Phase::Cancelled,
            action: Want::Is(Action::Wait(None)),
            reason: "Cancelled",
            check: |_, d| assert!(!is_true(&d.status, condition::STALLED)),
        },
    ]);
}

#[test]
fn timeout() {
    run(vec![
        Row {
            name: "Running + Reconcile at the deadline: Failed Timeout",
            given: World::running().timeout(100.0).at(100.0),
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "Timeout",
            check: |_, d| {
                assert_eq!(d.status.error.as_ref().unwrap().code, "DEADLINE_EXCEEDED");
                assert!(d.status.message.as_ref().unwrap().contains("1m40s"));
                assert!(d.notices.iter().any(|n| n.warning && n.reason == "Timeout"));
            },
        },
        Row {
            name: "Running + Polled (running) past the deadline: Failed Timeout",
            given: World::running()
                .timeout(100.0)
                .at(130.0)
                .mem(|m| m.record_success(t(130.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(20))),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "Timeout",
            check: |_, d| assert_eq!(d.status.progress, Some(20)),
        },
        Row {
            name: "Running + Polled succeeded past the deadline: the answer wins",
            given: World::running().timeout(100.0).at(130.0),
            event: Event::Polled(obs(UpstreamState::Succeeded, Some(100))),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: nothing,
        },
        Row {
            name: "Running + PollFailed past the deadline: Failed Timeout",
            given: World::running()
                .timeout(100.0)
                .at(130.0)
                .mem(|m| m.record_failure(t(130.0), "503".into(), None, false)),
            event: poll_failed(false),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "Timeout",
            check: nothing,
        },
        Row {
            name: "Running + ProviderUnavailable past the deadline: Failed Timeout",
            given: World::running().timeout(100.0).at(100.0),
            event: Event::ProviderUnavailable("credentials missing".into()),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "Timeout",
            check: nothing,
        },
        Row {
            name: "Pending + ProviderUnavailable with a timeout: no deadline before the start",
            given: World::new(true).timeout(1.0).at(100.0),
            event: Event::ProviderUnavailable("credentials missing".into()),
            phase: Phase::Pending,
            action: Want::Is(Action::Wait(Some(PROVIDER_RETRY))),
            reason: "ProviderNotReady",
            check: nothing,
        },
        Row {
            name: "Running + Reconcile before the deadline: the wait ends at the deadline",
            // Last poll at 70 s: the next point (130 s) is after the deadline (100 s).
            given: World::running()
                .timeout(100.0)
                .mem(|m| m.record_success(t(70.0), None))
                .at(80.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running + Reconcile well before the deadline: the schedule decides",
            given: World::running()
                .timeout(1000.0)
                .mem(|m| m.record_success(t(10.0), None))
                .at(15.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(15.0)))),
            reason: "Polling",
            check: unchanged,
        },
    ]);
}

#[test]
fn cancel() {
    run(vec![
        Row {
            name: "Running + Reconcile with spec.cancel: Cancelling, send the cancel",
            given: World::running().cancel().at(5.0),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Cancel),
            reason: "Cancelling",
            check: |_, d| assert!(d.notices.iter().any(|n| n.reason == "Cancelling")),
        },
        Row {
            name: "Running + spec.cancel, no cancel in the protocol: Running, CancelUnsupported, waits",
            given: World::running()
                .cancel()
                .caps(true, false)
                .mem(|m| m.record_success(t(0.0), None))
                .at(5.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(5.0)))),
            reason: "CancelUnsupported",
            check: |_, d| {
                assert!(d.status.message.as_ref().unwrap().contains("cannot cancel"));
                assert_eq!(d.notices.len(), 1);
                assert!(d.notices[0].warning);
            },
        },
        Row {
            name: "CancelUnsupported, reconciled again: nothing written, no repeated event",
            given: World::running()
                .cancel()
                .caps(true, false)
                .mem(|m| m.record_success(t(0.0), None))
                .at(5.0)
                .then(&Event::Reconcile)
                .at(6.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(4.0)))),
            reason: "CancelUnsupported",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "CancelUnsupported, poll due: keeps polling",
            given: World::running()
                .cancel()
                .caps(true, false)
                .mem(|m| m.record_success(t(0.0), None))
                .at(5.0)
                .then(&Event::Reconcile)
                .at(10.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "CancelUnsupported",
            check: unchanged,
        },
        Row {
            name: "CancelUnsupported + Polled, nothing new: reason kept, nothing written",
            given: World::running()
                .cancel()
                .caps(true, false)
                .mem(|m| m.record_success(t(0.0), None))
                .at(5.0)
                .then(&Event::Reconcile)
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(10))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "CancelUnsupported",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "CancelUnsupported + Polled cancelled anyway: Cancelled, not Stalled",
            given: World::running()
                .cancel()
                .caps(true, false)
                .at(5.0)
                .then(&Event::Reconcile)
                .at(10.0),
            event: Event::Polled(obs(UpstreamState::Cancelled, None)),
            phase: Phase::Cancelled,
            action: Want::Is(Action::Wait(None)),
            reason: "Cancelled",
            check: nothing,
        },
        Row {
            name: "Cancelling + CancelSent: waits for the upstream to confirm",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.cancel_sent = true),
            event: Event::CancelSent,
            phase: Phase::Cancelling,
            action: Want::WaitSome,
            reason: "Cancelling",
            check: |_, d| {
                assert!(
                    d.status
                        .message
                        .as_ref()
                        .unwrap()
                        .contains("cancel requested")
                )
            },
        },
        Row {
            name: "Cancelling, reconciled before the next point: waits, nothing written",
            given: World::cancelling().at(5.0),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Wait(Some(secs(5.0)))),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "Cancelling, due: polls (the cancel is not resent)",
            given: World::cancelling().at(10.0),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Poll),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "Cancelling after a restart, due: the cancel is resent",
            given: World::cancelling()
                .at(10.0)
                .restart()
                .mem(|m| m.last_request_at = t(0.0)),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Cancel),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "Cancelling + Polled running: still Cancelling, nothing written",
            given: World::cancelling()
                .at(10.0)
                .mem(|m| m.record_success(t(10.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(10))),
            phase: Phase::Cancelling,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "Cancelling + Polled cancelled: Cancelled, not Stalled",
            given: World::cancelling().at(10.0),
            event: Event::Polled(obs(UpstreamState::Cancelled, None)),
            phase: Phase::Cancelled,
            action: Want::Is(Action::Wait(None)),
            reason: "Cancelled",
            check: |_, d| assert!(!is_true(&d.status, condition::STALLED)),
        },
        Row {
            name: "Cancelling + Polled succeeded: finished anyway, Succeeded",
            given: World::cancelling().at(10.0),
            event: Event::Polled(obs(UpstreamState::Succeeded, Some(100))),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: nothing,
        },
        Row {
            name: "Cancelling + Polled failed: finished anyway, Failed",
            given: World::cancelling().at(10.0),
            event: Event::Polled(obs(UpstreamState::Failed, None)),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "UpstreamFailed",
            check: nothing,
        },
        Row {
            name: "Cancelling + CancelRefused: back to Running, with why",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.cancel_refused = true),
            event: Event::CancelRefused("HTTP 400: operation cannot be cancelled".into()),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "CancelRefused",
            check: |_, d| {
                assert!(
                    d.status
                        .message
                        .as_ref()
                        .unwrap()
                        .contains("cannot be cancelled")
                );
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.warning && n.reason == "CancelRefused")
                );
            },
        },
        Row {
            name: "Running after a refused cancel: not asked again, keeps polling",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.cancel_refused = true)
                .then(&Event::CancelRefused("no".into()))
                .at(10.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "CancelRefused",
            check: unchanged,
        },
        Row {
            name: "after a lost cancel, not yet due: waits (no hot loop)",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .then(&Event::CancelLost("timeout".into()))
                .at(5.0),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Wait(Some(secs(5.0)))),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "after a lost cancel, due: the cancel is resent",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false))
                .then(&Event::CancelLost("timeout".into()))
                .at(10.0),
            event: Event::Reconcile,
            phase: Phase::Cancelling,
            action: Want::Is(Action::Cancel),
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "Cancelling + CancelLost: stays Cancelling, waits",
            given: World::running()
                .cancel()
                .at(1.0)
                .then(&Event::Reconcile)
                .mem(|m| m.record_failure(t(1.0), "timeout".into(), None, false)),
            event: Event::CancelLost("timeout".into()),
            phase: Phase::Cancelling,
            action: Want::Is(Action::Wait(Some(secs(9.0)))),
            reason: "Cancelling",
            check: nothing,
        },
    ]);
}

#[test]
fn poll_failures() {
    // A Running world whose last `n` polls (at 10, 30, 70, … s) failed.
    fn failing(n: u32, not_found: bool) -> World {
        let mut w = World::running();
        for k in 1..=n {
            let at = schedule().point(u64::from(k));
            w = w
                .at(at)
                .mem(|m| m.record_failure(t(at), "HTTP 503: unavailable".into(), None, not_found))
                .then(&poll_failed(not_found));
        }
        w
    }
    run(vec![
        Row {
            name: "Running + PollFailed: phase kept, nothing written, backs off",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_failure(t(10.0), "503".into(), None, false)),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(20.0)))),
            reason: "Polling",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "Cancelling + PollFailed: phase kept",
            given: World::cancelling()
                .at(10.0)
                .mem(|m| m.record_failure(t(10.0), "503".into(), None, false)),
            event: poll_failed(false),
            phase: Phase::Cancelling,
            action: Want::WaitSome,
            reason: "Cancelling",
            check: unchanged,
        },
        Row {
            name: "below the stuck threshold: Reconciling untouched",
            given: failing(STUCK_AFTER_FAILURES - 2, false)
                .at(schedule().point(u64::from(STUCK_AFTER_FAILURES - 1)))
                .mem(|m| {
                    let at = m.last_request_at + jiff::SignedDuration::from_secs(20);
                    m.record_failure(at, "503".into(), None, false)
                }),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |w, d| {
                assert!(d.status.conditions.iter().all(|c| c.reason == "Polling"));
                assert_eq!(d.status, w.status);
            },
        },
        Row {
            name: "after STUCK_AFTER_FAILURES failures: Reconciling says UpstreamUnavailable",
            given: failing(STUCK_AFTER_FAILURES - 1, false)
                .at(schedule().point(u64::from(STUCK_AFTER_FAILURES)))
                .mem(|m| {
                    let at = t(schedule().point(u64::from(STUCK_AFTER_FAILURES)));
                    m.record_failure(at, "HTTP 503: unavailable".into(), None, false)
                }),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "UpstreamUnavailable",
            check: |w, d| {
                assert_eq!(STUCK_AFTER_FAILURES, 3);
                let c = cond(&d.status, condition::RECONCILING);
                assert_eq!(c.status, "True");
                assert!(c.message.contains("HTTP 503"), "{}", c.message);
                // Only the conditions changed; the phase, the message and the schedule did not.
                let mut expected = w.status.clone();
                expected.conditions = d.status.conditions.clone();
                assert_eq!(d.status, expected);
                assert_eq!(
                    c.last_transition_time,
                    cond(&w.status, condition::RECONCILING).last_transition_time
                );
                assert!(
                    d.notices
                        .iter()
                        .any(|n| n.warning && n.reason == "UpstreamUnavailable")
                );
            },
        },
        Row {
            name: "still unavailable, same error: nothing written, no repeated event",
            given: failing(STUCK_AFTER_FAILURES, false)
                .at(schedule().point(u64::from(STUCK_AFTER_FAILURES + 1)))
                .mem(|m| {
                    let at = t(schedule().point(u64::from(STUCK_AFTER_FAILURES + 1)));
                    m.record_failure(at, "HTTP 503: unavailable".into(), None, false)
                }),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "UpstreamUnavailable",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "still unavailable, another error: only the condition message follows it",
            given: failing(STUCK_AFTER_FAILURES, false)
                .at(schedule().point(u64::from(STUCK_AFTER_FAILURES + 1)))
                .mem(|m| {
                    let at = t(schedule().point(u64::from(STUCK_AFTER_FAILURES + 1)));
                    m.record_failure(at, "HTTP 502: bad gateway".into(), None, false)
                }),
            event: Event::PollFailed(PollFailure {
                message: "HTTP 502: bad gateway".into(),
                not_found: false,
            }),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "UpstreamUnavailable",
            check: |w, d| {
                assert!(
                    cond(&d.status, condition::RECONCILING)
                        .message
                        .contains("HTTP 502")
                );
                let mut expected = w.status.clone();
                expected.conditions = d.status.conditions.clone();
                assert_eq!(d.status, expected);
                assert!(d.notices.is_empty(), "no repeated event");
            },
        },
        Row {
            name: "unavailable, then answered: back to Polling",
            given: failing(STUCK_AFTER_FAILURES, false)
                .mem(|m| m.record_success(t(200.0), None))
                .at(200.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(10))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let c = cond(&d.status, condition::RECONCILING);
                assert_eq!(c.last_transition_time.0, t(0.0), "Reconciling stayed True");
            },
        },
        Row {
            name: "not found within the grace: phase kept",
            given: failing(1, true)
                .mem(|m| {
                    m.record_failure(t(59.0), "HTTP 404".into(), None, true);
                })
                .at(59.0),
            event: poll_failed(true),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "not found for NOT_FOUND_GRACE: Failed OperationNotFound",
            given: failing(1, true)
                .mem(|m| {
                    m.record_failure(t(70.0), "HTTP 404".into(), None, true);
                })
                .at(70.0),
            event: poll_failed(true),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "OperationNotFound",
            check: |_, d| {
                assert_eq!(NOT_FOUND_GRACE, secs(60.0));
                let e = d.status.error.as_ref().unwrap();
                assert_eq!((e.code.as_str(), e.http_status), ("NOT_FOUND", Some(404)));
            },
        },
        Row {
            name: "a 503 between 404s restarts the grace",
            given: failing(1, true)
                .mem(|m| m.record_failure(t(30.0), "503".into(), None, false))
                .mem(|m| m.record_failure(t(70.0), "HTTP 404".into(), None, true))
                .at(70.0),
            event: poll_failed(true),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "UpstreamUnavailable",
            check: nothing,
        },
        Row {
            name: "Retry-After later than the schedule: waits for Retry-After",
            given: World::running()
                .at(10.0)
                .mem(|m| m.record_failure(t(10.0), "429".into(), Some(secs(200.0)), false)),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(200.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Retry-After earlier than the schedule: polls at Retry-After",
            given: World::running()
                .mem(|m| m.record_success(t(10.0), Some(secs(2.0))))
                .at(12.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Retry-After not yet passed: waits even though the schedule is due",
            given: World::running()
                .mem(|m| m.record_failure(t(10.0), "429".into(), Some(secs(100.0)), false))
                .at(50.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: unchanged,
        },
    ]);
}

#[test]
fn terminal_phases_never_change() {
    let succeeded = World::running()
        .at(70.0)
        .then(&Event::Polled(obs(UpstreamState::Succeeded, Some(100))));
    let failed = World::running().at(70.0).then(&Event::Polled(Observation {
        error: Some(upstream_error("INTERNAL", "boom")),
        ..obs(UpstreamState::Failed, None)
    }));
    let cancelled = World::cancelling()
        .at(70.0)
        .then(&Event::Polled(obs(UpstreamState::Cancelled, None)));
    let blocked = {
        let mut w = World::new(true).at(70.0);
        w.status.phase = Some(Phase::Blocked);
        w.status.observed_generation = GEN;
        conds::set_from_phase(
            &mut w.status,
            "DependencyFailed",
            "dep failed",
            GEN,
            false,
            t(0.0),
        );
        w
    };
    let timed_out = World::running()
        .timeout(100.0)
        .at(100.0)
        .then(&Event::Reconcile);
    let mut count = 0;
    for (name, w, phase) in [
        ("Succeeded", succeeded, Phase::Succeeded),
        ("Failed", failed, Phase::Failed),
        ("Cancelled", cancelled, Phase::Cancelled),
        ("Blocked", blocked, Phase::Blocked),
        ("Failed (timeout)", timed_out, Phase::Failed),
    ] {
        assert_eq!(w.status.phase, Some(phase), "{name}: setup");
        for w in [
            w.clone().at(10_000.0),
            w.clone().at(10_000.0).restart(),
            w.clone().at(10_000.0).cancel(),
            w.clone().at(10_000.0).caps(false, false),
        ] {
            for event in every_event() {
                count += 1;
                let d = w.decide(&event);
                invariants(name, &w, &event, &d);
                assert_eq!(d.status, w.status, "{name} + {event:?}: status changed");
                assert_eq!(d.action, Action::Wait(None), "{name} + {event:?}");
                assert!(d.notices.is_empty(), "{name} + {event:?}: {:?}", d.notices);
            }
            // A new generation moves only observedGeneration (status and conditions).
            let bumped = w.clone().generation(7);
            let d = bumped.decide(&Event::Reconcile);
            invariants(name, &bumped, &Event::Reconcile, &d);
            let mut expected = w.status.clone();
            expected.observed_generation = Some(7);
            for c in &mut expected.conditions {
                c.observed_generation = Some(7);
            }
            assert_eq!(d.status, expected, "{name}: new generation");
            assert_eq!(d.action, Action::Wait(None));
        }
    }
    assert_eq!(count, 5 * 4 * every_event().len());
}

#[test]
fn the_schedule_decides_when_to_poll() {
    // (x: last request at T + x, now: T + now, the action), with lastChangeAt = T and no jitter.
    // Points: 0, 10, 30, 70, 130, 190, 250, …
    let cases: &[(f64, f64, Action)] = &[
        (0.0, 0.0, Action::Wait(Some(secs(10.0)))),
        (0.0, 5.0, Action::Wait(Some(secs(5.0)))),
        (0.0, 9.5, Action::Wait(Some(secs(0.5)))),
        (0.0, 10.0, Action::Poll),
        (0.0, 25.0, Action::Poll),
        (10.0, 10.0, Action::Wait(Some(secs(20.0)))),
        (10.0, 29.0, Action::Wait(Some(secs(1.0)))),
        (10.0, 30.0, Action::Poll),
        (12.5, 29.0, Action::Wait(Some(secs(1.0)))),
        (12.5, 30.0, Action::Poll),
        (29.999, 30.0, Action::Poll),
        (30.0, 30.0, Action::Wait(Some(secs(40.0)))),
        (30.0, 69.5, Action::Wait(Some(secs(0.5)))),
        (30.0, 70.0, Action::Poll),
        (70.0, 100.0, Action::Wait(Some(secs(30.0)))),
        (70.0, 130.0, Action::Poll),
        (130.0, 190.0, Action::Poll),
        (1000.0, 1000.0, Action::Wait(Some(secs(30.0)))),
        (1000.0, 1029.0, Action::Wait(Some(secs(1.0)))),
        (1000.0, 1030.0, Action::Poll),
        // A request stamped before the change (clock skew) counts from the change.
        (-5.0, 3.0, Action::Wait(Some(secs(7.0)))),
    ];
    for (phase, base) in [
        (Phase::Running, World::running()),
        (Phase::Cancelling, World::cancelling()),
    ] {
        let change = base.status.last_change_at.as_ref().unwrap().0;
        for (x, now, want) in cases {
            let w = base.clone().mem(|m| {
                m.last_request_at = change + jiff::SignedDuration::from_secs_f64(*x);
            });
            let w = World {
                now: change + jiff::SignedDuration::from_secs_f64(*now),
                ..w
            };
            let d = w.decide(&Event::Reconcile);
            let name = format!("{phase:?}: last request at +{x}s, now +{now}s");
            assert_eq!(&d.action, want, "{name}");
            assert_eq!(
                d.status, w.status,
                "{name}: a reconcile that only waits or polls writes nothing"
            );
            invariants(&name, &w, &Event::Reconcile, &d);
        }
    }
}

#[test]
fn a_restart_resumes_the_schedule_without_a_stampede() {
    // Running since T, last poll unknown after a restart at T + 45: the next point is 70 s.
    let w = World::running().at(45.0).restart();
    let d = w.decide(&Event::Reconcile);
    assert_eq!(d.action, Action::Wait(Some(secs(25.0))));
    assert_eq!(d.status, w.status);
    // Jitter spreads the same point over objects but never spins.
    let mut jittered = w.clone();
    jittered.policy.schedule.jitter = 0.5;
    let d = jittered.decide(&Event::Reconcile);
    assert!(
        matches!(d.action, Action::Wait(Some(w)) if w > Duration::ZERO && w <= secs(25.0 + 20.0))
    );
}

#[test]
fn condition_transition_times_move_only_on_a_flip() {
    let running = World::running();
    for kind in [condition::READY, condition::RECONCILING, condition::STALLED] {
        assert_eq!(cond(&running.status, kind).last_transition_time.0, t(0.0));
    }
    // New progress at 30 s: every condition keeps its status, so its time.
    let progressed = running
        .clone()
        .at(30.0)
        .polled(obs(UpstreamState::Running, Some(50)));
    assert_eq!(progressed.status.progress, Some(50));
    for kind in [condition::READY, condition::RECONCILING, condition::STALLED] {
        assert_eq!(
            cond(&progressed.status, kind).last_transition_time.0,
            t(0.0),
            "{kind}"
        );
    }
    // A reason change (ProviderNotReady) is not a flip either.
    let provider_gone = progressed
        .clone()
        .at(40.0)
        .then(&Event::ProviderUnavailable("gone".into()));
    assert_eq!(
        cond(&provider_gone.status, condition::READY).reason,
        "ProviderNotReady"
    );
    for kind in [condition::READY, condition::RECONCILING, condition::STALLED] {
        assert_eq!(
            cond(&provider_gone.status, kind).last_transition_time.0,
            t(0.0),
            "{kind}"
        );
    }
    // Succeeded at 100 s: Ready and Reconciling flip, Stalled stays False.
    let done = progressed
        .clone()
        .at(100.0)
        .then(&Event::Polled(obs(UpstreamState::Succeeded, Some(100))));
    assert_eq!(
        cond(&done.status, condition::READY).last_transition_time.0,
        t(100.0)
    );
    assert_eq!(
        cond(&done.status, condition::RECONCILING)
            .last_transition_time
            .0,
        t(100.0)
    );
    assert_eq!(
        cond(&done.status, condition::STALLED)
            .last_transition_time
            .0,
        t(0.0)
    );
    // Failed at 100 s: Reconciling and Stalled flip, Ready stays False.
    let failed = progressed
        .at(100.0)
        .then(&Event::Polled(obs(UpstreamState::Failed, None)));
    assert_eq!(
        cond(&failed.status, condition::READY)
            .last_transition_time
            .0,
        t(0.0)
    );
    assert_eq!(
        cond(&failed.status, condition::RECONCILING)
            .last_transition_time
            .0,
        t(100.0)
    );
    assert_eq!(
        cond(&failed.status, condition::STALLED)
            .last_transition_time
            .0,
        t(100.0)
    );
}

#[test]
fn a_whole_life_writes_only_on_visible_changes() {
    // Start, lose the answer once, resend, run with a few polls, succeed: count the writes.
    let mut w = World::new(true);
    let mut writes = 0;
    let mut step = |w: &mut World, now: f64, event: Event, want: Action| {
        w.now = t(now);
        let d = w.decide(&event);
        invariants("life", w, &event, &d);
        assert_eq!(d.action, want, "at {now}s on {event:?}");
        if d.status != w.status {
            writes += 1;
        }
        w.status = d.status;
    };
    let start = Action::Start {
        request_id: UID.into(),
    };
    step(&mut w, 0.0, Event::Reconcile, start.clone());
    w.memory
        .record_failure(t(1.0), "timeout".into(), None, false);
    step(
        &mut w,
        1.0,
        Event::StartLost("timeout".into()),
        Action::Wait(Some(secs(9.0))),
    );
    step(&mut w, 10.0, Event::Reconcile, start);
    w.memory.record_success(t(10.0), None);
    step(
        &mut w,
        10.0,
        started(obs(UpstreamState::Running, Some(0))),
        Action::Wait(Some(secs(10.0))),
    );
    step(&mut w, 20.0, Event::Reconcile, Action::Poll);
    w.memory.record_success(t(20.0), None);
    step(
        &mut w,
        20.0,
        Event::Polled(obs(UpstreamState::Running, Some(0))),
        Action::Wait(Some(secs(20.0))),
    );
    step(&mut w, 40.0, Event::Reconcile, Action::Poll);
    w.memory.record_success(t(40.0), None);
    step(
        &mut w,
        40.0,
        Event::Polled(obs(UpstreamState::Running, Some(0))),
        Action::Wait(Some(secs(40.0))),
    );
    step(&mut w, 80.0, Event::Reconcile, Action::Poll);
    w.memory.record_success(t(80.0), None);
    // New progress is written but does not restart the backoff (points from 10 s: 80, 140). Its
    // estimated end (60 % in 80 s: 133 s) would aim a poll at 138 s, within one initial interval
    // of the point at 140 s: that point is the aimed poll.
    step(
        &mut w,
        80.0,
        Event::Polled(obs(UpstreamState::Running, Some(60))),
        Action::Wait(Some(secs(60.0))),
    );
    step(&mut w, 140.0, Event::Reconcile, Action::Poll);
    w.memory.record_success(t(140.0), None);
    step(
        &mut w,
        140.0,
        Event::Polled(obs(UpstreamState::Succeeded, Some(100))),
        Action::Wait(None),
    );
    step(&mut w, 5000.0, Event::Reconcile, Action::Wait(None));
    assert_eq!(w.status.phase, Some(Phase::Succeeded));
    assert_eq!(w.status.started_at.as_ref().unwrap().0, t(0.0));
    assert_eq!(w.status.completed_at.as_ref().unwrap().0, t(140.0));
    // Starting, StartRetrying (the resend itself writes nothing), Running, new progress, Succeeded:
    // the polls that saw nothing new wrote nothing.
    assert_eq!(writes, 5);
}

// ------------------------------------------------------------------ progress aims the schedule

/// How long the operation of the progress rows runs: 30 minutes.
const LENGTH: f64 = 1800.0;

/// A started operation that ends at `T + length` and reports its progress steadily, as the
/// percent reached (rounded down), answering a poll at `T + at`.
fn steady(length: f64, at: f64) -> Observation {
    if at >= length {
        return obs(UpstreamState::Succeeded, Some(100));
    }
    obs(
        UpstreamState::Running,
        Some((100.0 * at / length).floor() as i32),
    )
}

/// The 30-minute operation, with its progress stuck at `stuck` % from `T + since` on.
fn stalled(stuck: i32, since: f64, at: f64) -> Observation {
    if at >= since {
        return obs(UpstreamState::Running, Some(stuck));
    }
    steady(LENGTH, at)
}

impl World {
    /// Started at `T` (the intent, then its answer: RUNNING, 0 %).
    fn started_at_t() -> World {
        World::new(true)
            .then(&Event::Reconcile)
            .mem(|m| m.record_success(t(0.0), None))
            .then(&started(obs(UpstreamState::Running, Some(0))))
    }

    /// A successful poll at `now`, recorded in memory with its progress, as `step` does when it
    /// learns an answer (`Memory::saw_progress`).
    fn answered(self, observation: Observation) -> World {
        let (now, progress) = (self.now, observation.progress);
        self.mem(|m| m.saw_progress(now, Some(t(0.0)), progress))
            .polled(observation)
    }

    fn schedule(mut self, schedule: Schedule) -> World {
        self.policy.schedule = schedule;
        self
    }
}

/// Seconds since `T`.
fn since_t(at: Timestamp) -> f64 {
    at.duration_since(t(0.0)).as_secs_f64()
}

/// What a life cost.
#[derive(Debug)]
struct Life {
    /// When each poll was sent, in seconds since `T`.
    polls: Vec<f64>,
    /// Status writes (each with a visible change: checked).
    writes: usize,
    /// When the end was seen (`NaN`: not within the time given).
    done_at: f64,
    /// The earliest and the latest end the schedule allowed when it decided the last poll.
    estimate: Option<(f64, f64)>,
}

/// The earliest and the latest end `w`'s schedule allows, in seconds since `T`.
fn end_window(w: &World) -> Option<(f64, f64)> {
    Progress {
        zero_at: since_t(w.status.started_at.as_ref()?.0),
        rate: w.memory.progress_rate?,
    }
    .end_window()
}

/// Runs `w` as the controller does — a reconcile; a poll when one is due, learnt as `step`
/// learns it; back when told — against `upstream` (what a poll at `T + at` sees) until the
/// operation ends or `T + until`. `remember`: the memory records each answer's progress
/// ([`Memory::saw_progress`]); else the schedule has only the backoff. `restart`: the process
/// restarts at `T + restart` (its memory lost).
fn live(
    mut w: World,
    upstream: impl Fn(f64) -> Observation,
    remember: bool,
    restart: Option<f64>,
    until: f64,
) -> Life {
    let mut life = Life {
        polls: Vec::new(),
        writes: 0,
        done_at: f64::NAN,
        estimate: None,
    };
    let mut restart = restart;
    let apply = |w: &mut World, event: &Event, writes: &mut usize| {
        let d = w.decide(event);
        invariants("life", w, event, &d);
        if d.status != w.status {
            let seen = |s: &LongRunningOperationStatus| {
                (
                    s.phase,
                    s.upstream_state.clone(),
                    s.progress,
                    s.resource_id.clone(),
                    s.message.clone(),
                )
            };
            assert_ne!(
                seen(&d.status),
                seen(&w.status),
                "a write without a visible change"
            );
            *writes += 1;
        }
        w.status = d.status;
        d.action
    };
    while since_t(w.now) <= until {
        let now = since_t(w.now);
        let mut action = apply(&mut w, &Event::Reconcile, &mut life.writes);
        if action == Action::Poll {
            life.polls.push(now);
            assert!(life.polls.len() < 10_000, "no end");
            life.estimate = end_window(&w);
            let answer = upstream(now);
            w = w.mem(|m| {
                m.record_success(t(now), None);
                if remember {
                    m.saw_progress(t(now), Some(t(0.0)), answer.progress);
                }
            });
            action = apply(&mut w, &Event::Polled(answer), &mut life.writes);
            if w.status.phase == Some(Phase::Succeeded) {
                life.done_at = now;
                return life;
            }
        }
        let Action::Wait(Some(wait)) = action else {
            panic!("at {now}: {action:?}");
        };
        // The clock in whole seconds, as the status keeps `completedAt`.
        let next = (now + wait.as_secs_f64()).ceil();
        match restart {
            Some(at) if next > at => {
                w = w.at(at).restart();
                restart = None;
            }
            _ => w = w.at(next),
        }
    }
    life
}

/// The rule before progress aimed the schedule: anything new, progress included, restarted the
/// backoff at the poll that saw it. Its polls against `upstream`, and when it saw the end.
fn the_old_rule(schedule: &Schedule, upstream: impl Fn(f64) -> Observation) -> Life {
    let seed = seed_of(UID);
    // The last change, the last poll in seconds since it, the progress it saw.
    let (mut change, mut since, mut seen) = (0.0, 0.0, upstream(0.0).progress);
    let mut polls = Vec::new();
    loop {
        assert!(polls.len() < 10_000, "no end");
        since = schedule.next_after(since, seed);
        let at = change + since;
        polls.push(at);
        let o = upstream(at);
        if o.state == UpstreamState::Succeeded {
            return Life {
                polls,
                writes: 0,
                done_at: at,
                estimate: None,
            };
        }
        if o.progress.is_some() && o.progress != seen {
            (seen, change, since) = (o.progress, at, 0.0);
        }
    }
}

#[test]
fn a_steady_half_hour_costs_a_fraction_of_the_polls_and_its_end_is_seen_at_once() {
    // The rows' schedule (10 s … 60 s, ×2, no jitter) and the operator's defaults (5 s … 60 s,
    // ×1.5, jitter 0.1); the operation ends at 30 min give or take a minute, so that its end
    // falls anywhere between two of the backoff's points.
    for (name, schedule) in [("rows", schedule()), ("defaults", Schedule::default())] {
        let (initial, margin) = (schedule.initial.as_secs_f64(), schedule.margin());
        let (mut new_polls, mut old_polls, mut backoff_polls) = (0, 0, 0);
        let (mut worst_late, mut worst_old_late, mut worst_backoff_late) = (0.0f64, 0.0f64, 0.0f64);
        for length in (0..12).map(|i| LENGTH - 60.0 + 10.0 * f64::from(i)) {
            let upstream = |at: f64| steady(length, at);
            let w = World::started_at_t().schedule(schedule);
            let new = live(w.clone(), upstream, true, None, f64::INFINITY);
            let backoff = live(w, upstream, false, None, f64::INFINITY);
            let old = the_old_rule(&schedule, upstream);
            let case = format!("{name}, {length} s");
            // Far fewer polls: the progress no longer restarts the backoff.
            assert!(
                3 * new.polls.len() <= old.polls.len(),
                "{case}: {} polls, the old rule {}",
                new.polls.len(),
                old.polls.len()
            );
            assert!(
                new.polls.len() <= backoff.polls.len() + 6,
                "{case}: {} polls, the backoff alone {}",
                new.polls.len(),
                backoff.polls.len()
            );
            // One write per visible change (`live` checks each is one): the polls that saw new
            // progress, and the end.
            assert!(new.writes <= new.polls.len(), "{case}: {new:?}");
            // Never more often than the first interval.
            for pair in new.polls.windows(2) {
                assert!(pair[1] - pair[0] >= initial * 0.5, "{case}: {pair:?}");
            }
            // The end is within the window the answers allowed when the last poll was decided,
            // and seen within one first interval and the margin of its latest time.
            let (earliest, latest) = new.estimate.expect("an estimate");
            assert!(
                earliest <= length && length <= latest + 1.0,
                "{case}: the end between {earliest} and {latest}"
            );
            assert!(
                new.done_at <= latest + initial + margin + 1.0,
                "{case}: seen at {}, the latest end {latest}",
                new.done_at
            );
            new_polls += new.polls.len();
            old_polls += old.polls.len();
            backoff_polls += backoff.polls.len();
            worst_late = worst_late.max(new.done_at - length);
            worst_old_late = worst_old_late.max(old.done_at - length);
            worst_backoff_late = worst_backoff_late.max(backoff.done_at - length);
        }
        eprintln!(
            "{name}: polls per operation {:.1} (backoff alone {:.1}), the old rule {:.1}; end seen at most {worst_late:.1} s late (backoff alone {worst_backoff_late:.1} s), the old rule {worst_old_late:.1} s",
            new_polls as f64 / 12.0,
            backoff_polls as f64 / 12.0,
            old_polls as f64 / 12.0,
        );
    }
}

#[test]
fn progress_in_steps_of_ten_percent_is_seen_sooner_than_the_old_rule_with_half_its_polls() {
    // The benchmark's progress-reporting operations: 4 to 10 minutes, progress rounded down to
    // 10 % (as the simulator reports it), the operator's default schedule.
    let schedule = Schedule::default();
    let lengths: Vec<f64> = (0..25).map(|i| 240.0 + 15.0 * f64::from(i)).collect();
    let stepped = |length: f64, at: f64| {
        if at >= length {
            return obs(UpstreamState::Succeeded, Some(100));
        }
        obs(
            UpstreamState::Running,
            Some(10 * (10.0 * at / length).floor() as i32),
        )
    };
    let (mut new_polls, mut old_polls, mut backoff_polls) = (0, 0, 0);
    let (mut new_late, mut old_late, mut backoff_late) = (0.0, 0.0, 0.0);
    for &length in &lengths {
        let upstream = |at: f64| stepped(length, at);
        let w = World::started_at_t().schedule(schedule);
        let new = live(w.clone(), upstream, true, None, f64::INFINITY);
        let backoff = live(w, upstream, false, None, f64::INFINITY);
        let old = the_old_rule(&schedule, upstream);
        for pair in new.polls.windows(2) {
            assert!(pair[1] - pair[0] >= 4.0, "{length} s: {pair:?}");
        }
        new_polls += new.polls.len();
        old_polls += old.polls.len();
        backoff_polls += backoff.polls.len();
        new_late += new.done_at - length;
        old_late += old.done_at - length;
        backoff_late += backoff.done_at - length;
    }
    let n = lengths.len() as f64;
    let (new_polls, old_polls, backoff_polls) = (
        new_polls as f64 / n,
        old_polls as f64 / n,
        backoff_polls as f64 / n,
    );
    let (new_late, old_late, backoff_late) = (new_late / n, old_late / n, backoff_late / n);
    eprintln!(
        "steps of 10 %: polls per operation {new_polls:.1} (backoff alone {backoff_polls:.1}, the old rule {old_polls:.1}); end seen {new_late:.1} s late on average (backoff alone {backoff_late:.1} s, the old rule {old_late:.1} s)"
    );
    assert!(2.0 * new_polls <= old_polls, "{new_polls} vs {old_polls}");
    assert!(new_late < old_late, "{new_late} vs {old_late}");
}

#[test]
fn progress_that_stalls_gets_one_aimed_poll_then_the_backoff() {
    // The backoff's points from the last change (Started at T): 0, 10, 30, 70, 130, … 70 + 60k.
    let backoff = |at: f64| at == 10.0 || at == 30.0 || (at >= 70.0 && (at - 70.0) % 60.0 == 0.0);
    for (stuck, since) in [(60, 1080.0), (99, 1000.0), (97, 1750.0)] {
        let upstream = |at: f64| stalled(stuck, since, at);
        let life = live(World::started_at_t(), upstream, true, None, 3600.0);
        let aimed: Vec<f64> = life
            .polls
            .iter()
            .copied()
            .filter(|at| !backoff(*at))
            .collect();
        assert!(
            aimed.len() <= 1,
            "{stuck} % from {since} s: aimed at {aimed:?}"
        );
        // The one aimed poll is at the end estimated when the progress stopped, plus the margin.
        if let Some(at) = aimed.first() {
            let seen = life.polls.iter().copied().find(|p| *p >= since).unwrap();
            let end = seen * 100.0 / f64::from(stuck);
            assert!(
                *at >= end + 5.0 && *at <= end + 6.0,
                "{stuck} %: {at} vs {end}"
            );
        }
        assert!(life.done_at.is_nan(), "no end");
        // The rest is the backoff, every one of its points: a poll every 60 s.
        let after: Vec<_> = (life.polls.iter())
            .filter(|p| **p > since + 120.0 && backoff(**p))
            .collect();
        assert!(after.windows(2).all(|w| w[1] - w[0] == 60.0), "{after:?}");
    }
    // Progress that goes back (the status keeps the highest) or disappears is a stall too.
    let life = live(
        World::started_at_t(),
        |at| match at {
            _ if at < 1080.0 => steady(LENGTH, at),
            _ if at < 1300.0 => obs(UpstreamState::Running, Some(30)),
            _ => obs(UpstreamState::Running, None),
        },
        true,
        None,
        3600.0,
    );
    let aimed: Vec<f64> = life
        .polls
        .iter()
        .copied()
        .filter(|at| !backoff(*at))
        .collect();
    assert!(aimed.len() <= 1, "aimed at {aimed:?}");
}

#[test]
fn a_restart_mid_way_resumes_the_backoff_then_aims_again() {
    let upstream = |at: f64| steady(LENGTH, at);
    let whole = live(World::started_at_t(), upstream, true, None, f64::INFINITY);
    // The process restarts at 1735 s, between the points 1690 and 1750.
    let restarted = live(
        World::started_at_t(),
        upstream,
        true,
        Some(1735.0),
        f64::INFINITY,
    );
    // Nothing is polled at the restart: the backoff's next point (1750) comes first.
    let first = restarted.polls.iter().copied().find(|at| *at >= 1735.0);
    assert_eq!(first, Some(1750.0));
    // From the first answer on, the progress aims again (knowing less of its rate: a probe or
    // two more); the end is seen within one first interval of when the whole life saw it.
    assert!(
        restarted.polls.len() <= whole.polls.len() + 2,
        "{restarted:?} vs {whole:?}"
    );
    assert!(
        restarted.done_at <= whole.done_at + 10.0,
        "{restarted:?} vs {whole:?}"
    );
    for pair in restarted.polls.windows(2) {
        assert!(pair[1] - pair[0] >= 10.0, "{pair:?}");
    }
}

#[test]
fn progress_aims_the_schedule() {
    // Started at T, so the backoff's points are 0, 10, 30, 70, 130, … 1690, 1750, 1810.
    run(vec![
        Row {
            name: "Started + Polled, new progress far from the end: written, the backoff's next point",
            given: World::started_at_t()
                .at(1090.0)
                .mem(|m| m.record_success(t(1090.0), None))
                .mem(|m| m.saw_progress(t(1090.0), Some(t(0.0)), Some(60))),
            event: Event::Polled(obs(UpstreamState::Running, Some(60))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: |w, d| {
                assert_eq!(d.status.progress, Some(60));
                assert_eq!(d.status.last_change_at, w.status.last_change_at);
            },
        },
        Row {
            // 98 % at 1750 s (the first value: the step may be 98 %): the end lies between
            // 1750 s and 1785.7 s; a probe at the end the middle rate gives halves that.
            name: "Started + Polled, the end may come before the next point: a probe at the middle rate's end",
            given: World::started_at_t()
                .at(1750.0)
                .mem(|m| m.record_success(t(1750.0), None))
                .mem(|m| m.saw_progress(t(1750.0), Some(t(0.0)), Some(98))),
            event: Event::Polled(obs(UpstreamState::Running, Some(98))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let Action::Wait(Some(wait)) = d.action else {
                    panic!("{:?}", d.action)
                };
                let want = 2.0 * 100.0 * 1750.0 / (98.0 + 100.0) - 1750.0;
                assert!((wait.as_secs_f64() - want).abs() < 1e-3, "{wait:?}");
            },
        },
        Row {
            // 94 % at 1750 s: the probe at 1804.1 s, less than one interval before the point
            // at 1810.
            name: "Started + Polled, the probe within one interval of the next point: that point",
            given: World::started_at_t()
                .at(1750.0)
                .mem(|m| m.record_success(t(1750.0), None))
                .mem(|m| m.saw_progress(t(1750.0), Some(t(0.0)), Some(94))),
            event: Event::Polled(obs(UpstreamState::Running, Some(94))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: nothing,
        },
        Row {
            // 98 % at 1750 s, still 98 % at 1780 s: at least 98 / 1750 %/s, below 100 / 1780;
            // the end between 1780 s and 1785.7 s, within one first interval: a poll just
            // after the latest.
            name: "Running + Reconcile, the end known within one interval: a poll just after its latest time",
            given: World::started_at_t()
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(98)))
                .at(1780.0)
                .answered(obs(UpstreamState::Running, Some(98))),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let Action::Wait(Some(wait)) = d.action else {
                    panic!("{:?}", d.action)
                };
                // Not before one first interval after the last request.
                let want = (1750.0_f64 * 100.0 / 98.0 + 5.0).max(1790.0) - 1780.0;
                assert!((wait.as_secs_f64() - want).abs() < 1e-3, "{wait:?}");
            },
        },
        Row {
            // Still 98 % at 1791 s, after the latest end the first answer allowed: no steady rate
            // fits both.
            name: "Running + Reconcile after a poll past the latest end found none: the backoff",
            given: World::started_at_t()
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(98)))
                .at(1791.0)
                .answered(obs(UpstreamState::Running, Some(98))),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(19.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running + Polled, a new state word: the backoff restarts, progress or not",
            given: World::started_at_t()
                .at(1750.0)
                .mem(|m| m.record_success(t(1750.0), None))
                .mem(|m| m.saw_progress(t(1750.0), Some(t(0.0)), Some(98))),
            event: Event::Polled(Observation {
                upstream_state: Some("FINALIZING".into()),
                ..obs(UpstreamState::Running, Some(98))
            }),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(10.0)))),
            reason: "Polling",
            check: |_, d| {
                assert_eq!(d.status.last_change_at.as_ref().unwrap().0, t(1750.0));
            },
        },
        Row {
            name: "Running + Polled, 100 % but not done: no end in sight, the backoff",
            given: World::started_at_t()
                .at(1750.0)
                .mem(|m| m.record_success(t(1750.0), None))
                .mem(|m| m.saw_progress(t(1750.0), Some(t(0.0)), Some(100))),
            event: Event::Polled(obs(UpstreamState::Running, Some(100))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: nothing,
        },
        Row {
            // 50 % seen at 850 s: the end was due at 1700 s; a poll at 1750 s found none.
            name: "Running + Reconcile, the estimated end passed: the backoff",
            given: World::started_at_t()
                .at(850.0)
                .answered(obs(UpstreamState::Running, Some(50)))
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(50))),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running (adopted) + Polled near its end: its 0 % is unknown, the backoff",
            given: World::running()
                .at(1750.0)
                .mem(|m| m.record_success(t(1750.0), None))
                .mem(|m| m.saw_progress(t(1750.0), Some(t(0.0)), Some(98))),
            event: Event::Polled(obs(UpstreamState::Running, Some(98))),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(60.0)))),
            reason: "Polling",
            check: nothing,
        },
        Row {
            name: "Running + a failed poll near the end: the backoff, not the aim",
            given: World::started_at_t()
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(98)))
                .at(1760.0)
                .mem(|m| m.record_failure(t(1760.0), "HTTP 503".into(), None, false)),
            event: poll_failed(false),
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(50.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running, restarted near the estimated end: the backoff's next point, no stampede",
            given: World::started_at_t()
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(98)))
                .at(1760.0)
                .restart(),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Wait(Some(secs(50.0)))),
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "Running, restarted, the first answer: the progress aims again from it",
            given: World::started_at_t()
                .at(1750.0)
                .answered(obs(UpstreamState::Running, Some(98)))
                .at(1752.0)
                .restart()
                .mem(|m| m.saw_progress(t(1752.0), Some(t(0.0)), Some(98))),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                // Learnt anew from 98 % at 1752 s: the end between 1752 s and 1787.8 s.
                let Action::Wait(Some(wait)) = d.action else {
                    panic!("{:?}", d.action)
                };
                let want = 2.0 * 100.0 * 1752.0 / (98.0 + 100.0) - 1752.0;
                assert!((wait.as_secs_f64() - want).abs() < 1e-3, "{wait:?}");
            },
        },
    ]);
}

/// The `Progress` notices of a decision, as (action, message).
fn progress_notices(d: &Decision) -> Vec<(&'static str, String)> {
    d.notices
        .iter()
        .filter(|n| n.reason == "Progress")
        .inspect(|n| assert!(!n.warning, "Progress is a Normal event"))
        .map(|n| (n.action, n.message.clone()))
        .collect()
}

fn progress_actions(d: &Decision) -> Vec<&'static str> {
    progress_notices(d).into_iter().map(|(a, _)| a).collect()
}

/// Running at `p` percent (polled at `T + 10`).
fn running_at(p: i32) -> World {
    World::running()
        .at(10.0)
        .polled(obs(UpstreamState::Running, Some(p)))
}

#[test]
fn progress_milestones() {
    run(vec![
        Row {
            name: "Running 10% + Polled 30%: Progress event for 25%",
            given: World::running()
                .at(30.0)
                .mem(|m| m.record_success(t(30.0), None)),
            event: Event::Polled(obs(UpstreamState::Running, Some(30))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let notices = progress_notices(d);
                assert_eq!(notices.len(), 1, "{notices:?}");
                assert_eq!(notices[0].0, "Progress25");
                assert!(notices[0].1.contains("30%"), "{notices:?}");
                assert!(notices[0].1.contains(OP), "names the handle: {notices:?}");
                assert_eq!(d.notices.len(), 1, "nothing else: {:?}", d.notices);
            },
        },
        Row {
            name: "Running 10% + Polled 20%: no milestone crossed, no event",
            given: World::running().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(20))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert!(d.notices.is_empty(), "{:?}", d.notices),
        },
        Row {
            name: "Running 10% + Polled exactly 25%: the milestone counts when reached",
            given: World::running().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(25))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert_eq!(progress_actions(d), ["Progress25"]),
        },
        Row {
            name: "Running 10% + Polled 80%: one event, for the highest milestone crossed",
            given: World::running().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(80))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert_eq!(progress_actions(d), ["Progress75"]),
        },
        Row {
            name: "Running 50% + Polled 60%: 50% was already announced, no event",
            given: running_at(50).at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(60))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert!(progress_notices(d).is_empty()),
        },
        Row {
            name: "Running 50% + Polled 50% again: nothing new, no event",
            given: running_at(50).at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(50))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "Running 60% + Polled 40% (lower): progress kept, no event",
            given: running_at(60).at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(40))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |w, d| {
                unchanged(w, d);
                assert!(d.notices.is_empty());
            },
        },
        Row {
            name: "Running (no progress) + Polled 55%: first progress crosses 25 and 50, one event",
            given: World::running_without_progress().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(55))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert_eq!(progress_actions(d), ["Progress50"]),
        },
        Row {
            name: "Running (no progress) + Polled without progress: no event",
            given: World::running_without_progress().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, None)),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| assert!(d.notices.is_empty()),
        },
        Row {
            name: "Starting + Started at 30%: Started, then Progress for 25%",
            given: World::starting().at(2.0),
            event: started(obs(UpstreamState::Running, Some(30))),
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: |_, d| {
                let reasons: Vec<_> = d.notices.iter().map(|n| n.reason).collect();
                assert_eq!(reasons, ["Started", "Progress"]);
                assert_eq!(progress_actions(d), ["Progress25"]);
                assert_eq!(d.notices[0].action, "Reconcile");
            },
        },
        Row {
            name: "Running 60% + Polled succeeded: Succeeded only, no Progress for 75%",
            given: running_at(60).at(70.0),
            event: Event::Polled(obs(UpstreamState::Succeeded, Some(100))),
            phase: Phase::Succeeded,
            action: Want::Is(Action::Wait(None)),
            reason: "Succeeded",
            check: |_, d| {
                let reasons: Vec<_> = d.notices.iter().map(|n| n.reason).collect();
                assert_eq!(reasons, ["Succeeded"]);
            },
        },
        Row {
            name: "Running 10% + Polled failed at 90%: Failed only, no Progress",
            given: World::running().at(70.0),
            event: Event::Polled(Observation {
                error: Some(upstream_error("INTERNAL", "boom")),
                ..obs(UpstreamState::Failed, Some(90))
            }),
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "UpstreamFailed",
            check: |_, d| assert!(progress_notices(d).is_empty()),
        },
        Row {
            name: "Cancelling 10% + Polled 50%: milestones are announced while cancelling too",
            given: World::cancelling().at(30.0),
            event: Event::Polled(obs(UpstreamState::Running, Some(50))),
            phase: Phase::Cancelling,
            action: Want::WaitSome,
            reason: "Cancelling",
            check: |_, d| assert_eq!(progress_actions(d), ["Progress50"]),
        },
    ]);
}

#[test]
fn each_progress_milestone_is_announced_once_over_a_whole_life() {
    let mut w = World::running_without_progress();
    let mut actions = Vec::new();
    for (i, p) in [0, 5, 10, 24, 25, 26, 40, 50, 49, 51, 74, 76, 90, 99]
        .into_iter()
        .enumerate()
    {
        let now = 10.0 * (i as f64 + 1.0);
        w = w.at(now).mem(|m| m.record_success(t(now), None));
        let d = w.decide(&Event::Polled(obs(UpstreamState::Running, Some(p))));
        invariants(
            "whole life",
            &w,
            &Event::Polled(obs(UpstreamState::Running, Some(p))),
            &d,
        );
        actions.extend(progress_actions(&d));
        w.status = d.status;
    }
    assert_eq!(actions, ["Progress25", "Progress50", "Progress75"]);
    // A restart forgets the memory, not the status: nothing is announced again.
    let w = w.restart().at(500.0);
    let d = w.decide(&Event::Polled(obs(UpstreamState::Running, Some(99))));
    assert!(progress_notices(&d).is_empty());
}

#[test]
fn dependencies() {
    run(vec![
        Row {
            name: "deps not all Succeeded: Pending, waiting, nothing started",
            given: World::new(true)
                .depends_on(&["network", "dns"])
                .dep("network", Some(Phase::Running))
                .dep("dns", Some(Phase::Succeeded)),
            event: Event::Reconcile,
            phase: Phase::Pending,
            action: Want::Is(Action::Wait(Some(DEPENDENCY_RECHECK))),
            reason: "WaitingForDependencies",
            check: |_, d| {
                assert_eq!(d.status.operation, None, "nothing started");
                let m = d.status.message.as_deref().unwrap();
                assert!(m.contains("network (Running)"), "{m}");
                assert!(!m.contains("dns"), "{m}");
            },
        },
        Row {
            name: "a missing dependency: Pending with a message",
            given: World::new(true).depends_on(&["network"]),
            event: Event::Reconcile,
            phase: Phase::Pending,
            action: Want::Is(Action::Wait(Some(DEPENDENCY_RECHECK))),
            reason: "WaitingForDependencies",
            check: |_, d| {
                let m = d.status.message.as_deref().unwrap();
                assert!(m.contains("network (not found)"), "{m}");
            },
        },
        Row {
            name: "Pending, deps now Succeeded: Starting",
            given: World::new(true)
                .depends_on(&["network"])
                .dep("network", Some(Phase::Running))
                .then(&Event::Reconcile)
                .dep("network", Some(Phase::Succeeded))
                .at(5.0),
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: |_, d| {
                assert_eq!(d.status.started_at.as_ref().unwrap().0, t(5.0));
                assert_eq!(
                    d.status.rendered_start, None,
                    "no templates, nothing rendered"
                );
            },
        },
        Row {
            name: "Pending (adopt), deps Succeeded: Running",
            given: World::new(false)
                .depends_on(&["network"])
                .dep("network", Some(Phase::Succeeded)),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::Is(Action::Poll),
            reason: "Polling",
            check: nothing,
        },
        Row {
            name: "a dependency Failed: Blocked, naming it",
            given: World::new(true)
                .depends_on(&["network"])
                .dep("network", Some(Phase::Running))
                .then(&Event::Reconcile)
                .dep("network", Some(Phase::Failed)),
            event: Event::Reconcile,
            phase: Phase::Blocked,
            action: Want::Is(Action::Wait(None)),
            reason: "DependencyFailed",
            check: |_, d| {
                let m = &cond(&d.status, condition::STALLED).message;
                assert!(m.contains("network is Failed"), "{m}");
                assert_eq!(d.status.operation, None, "nothing started");
            },
        },
        Row {
            name: "a dependency Blocked or Cancelled: Blocked",
            given: World::new(true)
                .depends_on(&["a", "b"])
                .dep("a", Some(Phase::Cancelled))
                .dep("b", Some(Phase::Blocked)),
            event: Event::Reconcile,
            phase: Phase::Blocked,
            action: Want::Is(Action::Wait(None)),
            reason: "DependencyFailed",
            check: |_, d| {
                assert!(
                    d.status
                        .message
                        .as_deref()
                        .unwrap()
                        .contains("a is Cancelled")
                )
            },
        },
        Row {
            name: "a dependency Failed while the provider is unavailable: Blocked",
            given: World::new(true)
                .depends_on(&["network"])
                .dep("network", Some(Phase::Failed)),
            event: Event::ProviderUnavailable("gone".into()),
            phase: Phase::Blocked,
            action: Want::Is(Action::Wait(None)),
            reason: "DependencyFailed",
            check: nothing,
        },
        Row {
            name: "in a cycle: Blocked, DependencyCycle, nothing started",
            given: {
                let mut w = World::new(true)
                    .depends_on(&["b"])
                    .dep("b", Some(Phase::Pending));
                w.pre.cycle = Some(vec!["a".into(), "b".into(), "a".into()]);
                w
            },
            event: Event::Reconcile,
            phase: Phase::Blocked,
            action: Want::Is(Action::Wait(None)),
            reason: "DependencyCycle",
            check: |_, d| {
                let m = d.status.message.as_deref().unwrap();
                assert!(m.contains("a -> b -> a"), "{m}");
                assert_eq!(d.status.operation, None);
            },
        },
        Row {
            name: "a Running operation ignores its dependencies",
            given: World::running()
                .depends_on(&["network"])
                .dep("network", Some(Phase::Failed))
                .at(1.0),
            event: Event::Reconcile,
            phase: Phase::Running,
            action: Want::WaitSome,
            reason: "Polling",
            check: unchanged,
        },
        Row {
            name: "templates rendered: recorded in status, then Starting",
            given: {
                let mut w = World::new(true)
                    .depends_on(&["network"])
                    .dep("network", Some(Phase::Succeeded));
                w.pre.rendered = Some(Ok(crate::api::RenderedStart {
                    path: "clusters".into(),
                    query: Default::default(),
                    body: Some(json!({"network_id": "net-1"})),
                }));
                w
            },
            event: Event::Reconcile,
            phase: Phase::Starting,
            action: Want::Is(Action::Start {
                request_id: UID.into(),
            }),
            reason: "Starting",
            check: |_, d| {
                let r = d.status.rendered_start.as_ref().unwrap();
                assert_eq!(r.body, Some(json!({"network_id": "net-1"})));
            },
        },
        Row {
            name: "a template fails at run time: Failed, TemplateError, nothing started",
            given: {
                let mut w = World::new(true);
                w.pre.rendered =
                    Some(Err("start.body.id: ${deps.x.id} failed: no such key".into()));
                w
            },
            event: Event::Reconcile,
            phase: Phase::Failed,
            action: Want::Is(Action::Wait(None)),
            reason: "TemplateError",
            check: |_, d| {
                let m = &cond(&d.status, condition::STALLED).message;
                assert!(m.contains("${deps.x.id}"), "{m}");
                assert_eq!(d.status.operation, None, "nothing started");
            },
        },
    ]);
}

#[test]
fn a_success_keeps_the_upstreams_note() {
    // Compute's warnings on a DONE operation are its note: they are not dropped.
    let w = World::running().at(20.0);
    let d = w.decide(&Event::Polled(Observation {
        message: Some("upstream warnings: Disk size: '50 GB' is larger".into()),
        ..obs(UpstreamState::Succeeded, None)
    }));
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    let message = d.status.message.unwrap();
    assert!(message.contains("succeeded"), "{message}");
    assert!(message.contains("larger"), "{message}");
}
