//! `decide`: the pure heart of a reconcile, the phase machine of `docs/architecture.md`.

use std::time::Duration;

use jiff::Timestamp;

use super::conditions;
use super::limits;
use super::memory::{Memory, add};
use super::schedule::{Progress, Schedule, seed_of};
use super::{micro_time, time};
use crate::api::{
    LongRunningOperationSpec, LongRunningOperationStatus, OperationError, OperationHandle, Phase,
    RenderedStart, format_duration,
};
use crate::protocol::{Observation, Started, UpstreamState};

/// Failed polls in a row after which `Reconciling` says `UpstreamUnavailable`.
pub const STUCK_AFTER_FAILURES: u32 = 3;
/// How long an operation may answer "not found" before it is given up as expired or unknown
/// (the default of `--not-found-grace`).
pub const NOT_FOUND_GRACE: Duration = Duration::from_secs(60);
/// How soon to look again when the provider cannot be used.
pub const PROVIDER_RETRY: Duration = Duration::from_secs(30);
/// Shown while `spec.cancel` asks for what the protocol cannot do.
const CANCEL_UNSUPPORTED: &str =
    "cannot cancel: this protocol has no cancel request; the operation keeps running";

/// The poll schedule and deadlines that apply to one operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// The poll schedule.
    pub schedule: Schedule,
    /// Deadline for the whole operation, from its start.
    pub timeout: Option<Duration>,
    /// How long "not found" answers are taken for propagation delay before the operation fails.
    pub not_found_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            schedule: Schedule::default(),
            timeout: None,
            not_found_grace: NOT_FOUND_GRACE,
        }
    }
}

/// How soon a `Pending` operation waiting on its dependencies looks again, should no watch
/// event wake it first.
pub const DEPENDENCY_RECHECK: Duration = Duration::from_secs(60);

/// What the controller observed before the start: the dependencies, and the rendered templates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prerequisites {
    /// The phase of each dependency that exists (`None`: it has no phase yet); a name of
    /// `spec.dependsOn` missing here does not exist.
    pub dependencies: std::collections::BTreeMap<String, Option<Phase>>,
    /// A dependency cycle this operation is in, as the names along it (starting and ending here).
    pub cycle: Option<Vec<String>>,
    /// `spec.start` rendered (only when it holds templates and every dependency succeeded):
    /// the request, or why an expression failed.
    pub rendered: Option<Result<RenderedStart, String>>,
}

/// `Reconciling` reason while a throttled start waits to be resent.
const START_DEFERRED: &str = "StartDeferred";
/// `Reconciling` reason while the operation a lost start may have begun is looked for.
const RECOVERING_START: &str = "RecoveringStart";

/// What the protocol can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Caps {
    /// A start can be resent with the same idempotency key.
    pub idempotent_start: bool,
    /// Why a start cannot be resent (for `StartOutcomeUnknown`), when it cannot.
    pub no_idempotency: &'static str,
    /// The operation a start began can be looked for upstream when the start's answer is lost.
    pub can_recover: bool,
    /// The protocol has a cancel request.
    pub can_cancel: bool,
    /// Polls are long polls (held by the upstream): the next one follows at once, at most one
    /// per [`LONG_POLL_GAP`], instead of waiting for the schedule.
    pub long_poll: bool,
}

/// The least time between the answer of a long poll and the next one: an upstream that answers
/// at once instead of holding the poll is not polled in a loop.
pub const LONG_POLL_GAP: Duration = Duration::from_secs(1);

/// A failed poll.
#[derive(Clone, Debug, PartialEq)]
pub struct PollFailure {
    /// What went wrong, for people (never holds a secret).
    pub message: String,
    /// The upstream said the operation does not exist (404/410).
    pub not_found: bool,
}

/// What just happened, as input to [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A reconcile: nothing new from the upstream.
    Reconcile,
    /// The provider cannot be used (missing, invalid, not allowed); the reason is for people.
    ProviderUnavailable(String),
    /// The start request was answered with a handle.
    Started(Started),
    /// The start request was refused (4xx): it will not succeed if resent.
    StartRejected(OperationError),
    /// The start request's outcome is unknown (timeout, connection error, 5xx, unreadable answer).
    StartLost(String),
    /// The start request was not sent and never will be as it is (its URL leaves the provider's
    /// `baseURL`, or it sets a header no request may set): the spec must change.
    StartRefused(String),
    /// The upstream did not process the start request (429, 503 with `Retry-After`): resend it.
    StartDeferred(String),
    /// The operation a start with a lost answer began was found upstream.
    Recovered(Started),
    /// The operation a start with a lost answer may have begun cannot be told (none, or several).
    NotRecovered(String),
    /// Looking for that operation failed this time (a transient answer); look again later.
    RecoveryFailed(String),
    /// A poll was answered.
    Polled(Observation),
    /// A poll failed.
    PollFailed(PollFailure),
    /// The upstream accepted the cancel request.
    CancelSent,
    /// The upstream refused to cancel, or the protocol has no cancel.
    CancelRefused(String),
    /// The cancel request's outcome is unknown; it will be resent.
    CancelLost(String),
}

/// Everything [`decide`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The object's spec.
    pub spec: &'a LongRunningOperationSpec,
    /// The object's status as last written.
    pub status: &'a LongRunningOperationStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.uid`: the idempotency key and the jitter seed.
    pub uid: &'a str,
    /// Schedule and deadline.
    pub policy: &'a Policy,
    /// What the protocol can do.
    pub caps: Caps,
    /// What this process remembers.
    pub memory: &'a Memory,
    /// What just happened.
    pub event: &'a Event,
    /// The object is being deleted and `spec.onDelete` is `Cancel`: cancel as if `spec.cancel`.
    pub deleting: bool,
    /// Dependencies and templates, as observed by the controller.
    pub prerequisites: &'a Prerequisites,
    /// The current time.
    pub now: Timestamp,
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send the start request with this idempotency key (its intent is already in `status`).
    Start {
        /// The idempotency key.
        request_id: String,
    },
    /// Poll the upstream operation now.
    Poll,
    /// Send the cancel request now.
    Cancel,
    /// Look upstream for the operation a start whose answer was lost may have begun.
    Recover,
    /// Nothing to do; come back after this long (`None`: only on a change).
    Wait(Option<Duration>),
}

/// Something a user should see in `kubectl describe` (a Kubernetes Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// A warning rather than a normal event.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The event's `action` (`Reconcile`, or `Progress25`… for milestones). The event recorder
    /// merges events with the same reason and action within minutes (keeping the first note), so
    /// notices that must each be seen get their own action.
    pub action: &'static str,
    /// For people.
    pub message: String,
}

/// Progress milestones (percent) that get a `Progress` event, once each, with its action.
pub const PROGRESS_MILESTONES: [(i32, &str); 3] =
    [(25, "Progress25"), (50, "Progress50"), (75, "Progress75")];

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The new status; write it if it differs from the input's.
    pub status: LongRunningOperationStatus,
    /// What to do next.
    pub action: Action,
    /// Events to record.
    pub notices: Vec<Notice>,
}

/// Decides the new status and the next action. Pure: the same input gives the same output.
pub fn decide(input: &Input) -> Decision {
    let mut d = Decider {
        input,
        status: input.status.clone(),
        notices: Vec::new(),
    };
    d.status.observed_generation = input.generation;
    let action = d.step();
    Decision {
        status: d.status,
        action,
        notices: d.notices,
    }
}

struct Decider<'a> {
    input: &'a Input<'a>,
    status: LongRunningOperationStatus,
    notices: Vec<Notice>,
}

impl Decider<'_> {
    fn step(&mut self) -> Action {
        let phase = self.status.phase;
        if let Some(p) = phase.filter(|p| p.is_terminal()) {
            // Terminal phases never change; a spec change only moves observedGeneration.
            let _ = p;
            conditions::observe_generation(&mut self.status, self.input.generation);
            return Action::Wait(None);
        }
        if matches!(phase, None | Some(Phase::Pending))
            && let Some(action) = self.gate()
        {
            return action;
        }
        match (phase, self.input.event) {
            (_, Event::ProviderUnavailable(why)) => {
                // The deadline holds even while the provider cannot be used.
                if let Some(action) = self.timed_out() {
                    return action;
                }
                if phase.is_none() {
                    self.status.phase = Some(Phase::Pending);
                }
                self.conditions("ProviderNotReady", why);
                Action::Wait(Some(PROVIDER_RETRY))
            }
            (None | Some(Phase::Pending), _) => self.begin(),
            (Some(Phase::Starting), event) => self.starting(event),
            (Some(Phase::Running | Phase::Cancelling), event) => self.in_flight(event),
            (Some(_), _) => Action::Wait(None),
        }
    }

    /// Before anything starts: a cycle or a failed dependency blocks, an unfinished or missing
    /// one keeps the operation `Pending`. `None`: every dependency succeeded.
    fn gate(&mut self) -> Option<Action> {
        let pre = self.input.prerequisites;
        if let Some(cycle) = &pre.cycle {
            let message = format!(
                "dependency cycle: {}; nothing in it starts",
                cycle.join(" -> ")
            );
            return Some(self.finish(Phase::Blocked, "DependencyCycle", message));
        }
        let mut waiting = Vec::new();
        for name in &self.input.spec.depends_on {
            match pre.dependencies.get(name) {
                None => waiting.push(format!("{name} (not found)")),
                Some(Some(Phase::Succeeded)) => {}
                Some(Some(p @ (Phase::Failed | Phase::Cancelled | Phase::Blocked))) => {
                    let message = format!(
                        "dependency {name} is {}; this operation will not start",
                        p.as_str()
                    );
                    return Some(self.finish(Phase::Blocked, "DependencyFailed", message));
                }
                Some(p) => {
                    waiting.push(format!("{name} ({})", p.unwrap_or(Phase::Pending).as_str()))
                }
            }
        }
        if waiting.is_empty() {
            return None;
        }
        let message = format!("waiting for dependencies: {}", waiting.join(", "));
        self.status.phase = Some(Phase::Pending);
        self.status.message = Some(message.clone());
        self.conditions("WaitingForDependencies", &message);
        Some(Action::Wait(Some(DEPENDENCY_RECHECK)))
    }

    /// A new object: record the start intent, or adopt the given operation.
    fn begin(&mut self) -> Action {
        let body = self.input.spec.start.as_ref().and_then(|s| s.body.as_ref());
        if body.is_some_and(crate::nesting::too_deep) {
            let message = format!(
                "spec.start.body is nested deeper than the operator reads (at most {} levels from the object's root); nothing started: flatten it",
                crate::nesting::MAX_NESTING
            );
            return self.finish(Phase::Failed, "SpecTooDeep", message);
        }
        if self.input.spec.start.is_some() {
            match &self.input.prerequisites.rendered {
                Some(Err(why)) => {
                    let message = format!("template error, nothing started: {why}");
                    return self.finish(Phase::Failed, "TemplateError", message);
                }
                Some(Ok(rendered)) => self.status.rendered_start = Some(rendered.clone()),
                None => {}
            }
        }
        let now = self.input.now;
        self.status.started_at = Some(micro_time(now));
        self.status.last_change_at = Some(micro_time(now));
        if self.input.spec.start.is_some() {
            let request_id = self.input.uid.to_owned();
            self.status.phase = Some(Phase::Starting);
            self.status.operation = Some(OperationHandle {
                request_id: Some(request_id.clone()),
                ..OperationHandle::default()
            });
            self.status.message = Some("sending the start request".into());
            self.conditions("Starting", "sending the start request");
            return Action::Start { request_id };
        }
        let adopted = self.input.spec.operation.clone().unwrap_or_default();
        self.status.phase = Some(Phase::Running);
        self.status.operation = Some(OperationHandle {
            name: adopted.name,
            id: adopted.id,
            url: adopted.url,
            ..OperationHandle::default()
        });
        let message = format!("adopted {}", self.handle_label());
        self.status.message = Some(message.clone());
        self.conditions("Polling", &message);
        self.notice(false, "Adopted", message);
        Action::Poll
    }

    fn starting(&mut self, event: &Event) -> Action {
        let request_id = self
            .status
            .operation
            .as_ref()
            .and_then(|h| h.request_id.clone())
            .unwrap_or_else(|| self.input.uid.to_owned());
        let caps = self.input.caps;
        match event {
            Event::Started(started) => self.started(started, request_id, None),
            Event::Recovered(started) => self.started(
                started,
                request_id,
                Some("found upstream after the start request's answer was lost"),
            ),
            Event::StartRejected(error) => {
                let message = format!(
                    "the upstream rejected the start request: {}",
                    error_text(error)
                );
                self.status.error = Some(error.clone());
                self.finish(Phase::Failed, "StartRejected", message)
            }
            Event::StartRefused(why) => {
                let message = format!("the start request was not sent: {why}; fix spec.start");
                self.finish(Phase::Failed, "StartRefused", message)
            }
            Event::StartDeferred(why) => {
                if let Some(action) = self.timed_out() {
                    return action;
                }
                // Throttled: the upstream did not process it, so it is resent even without an
                // idempotency key, after the upstream's Retry-After (else the schedule).
                let message = format!(
                    "the upstream did not process the start request ({why}); it will be resent"
                );
                self.status.message = Some(message.clone());
                self.conditions(START_DEFERRED, &message);
                self.wait_for_next_poll()
            }
            Event::StartLost(why) if !caps.idempotent_start => self.recover_or_give_up(why),
            Event::StartLost(why) => {
                if let Some(action) = self.timed_out() {
                    return action;
                }
                let message = format!(
                    "start request failed ({why}); it will be resent with the same request id {request_id}"
                );
                self.status.message = Some(message.clone());
                self.conditions("StartRetrying", &message);
                self.wait_for_next_poll()
            }
            Event::NotRecovered(why) => self.start_outcome_unknown(why),
            Event::RecoveryFailed(why) => {
                if let Some(action) = self.timed_out() {
                    return action;
                }
                let message = format!(
                    "looking for the operation the lost start request may have begun: {why}; looking again"
                );
                self.status.message = Some(message.clone());
                self.conditions(RECOVERING_START, &message);
                self.wait_for_next_poll()
            }
            _ => {
                if let Some(action) = self.timed_out() {
                    return action;
                }
                let reason =
                    conditions::find(&self.status.conditions, crate::api::condition::RECONCILING)
                        .map(|c| c.reason.clone())
                        .unwrap_or_default();
                let first = self.input.memory.failures == 0;
                // Decided, written as intended, but held back before it was sent (the rate
                // limit, the namespace's fair share, the Lease): nothing is lost, send it now.
                if self.input.memory.request_owed && !matches!(reason.as_str(), RECOVERING_START) {
                    return Action::Start { request_id };
                }
                if caps.idempotent_start {
                    return if first || self.due() {
                        Action::Start { request_id }
                    } else {
                        self.wait_for_next_poll()
                    };
                }
                match reason.as_str() {
                    // Not processed upstream: resend when due (at once after a restart).
                    START_DEFERRED if first || self.due() => {
                        let message = "resending the start request".to_owned();
                        self.status.message = Some(message.clone());
                        // Written before the resend: a crash during it leaves an unknown outcome.
                        self.conditions("Starting", &message);
                        Action::Start { request_id }
                    }
                    RECOVERING_START if first || self.due() => Action::Recover,
                    START_DEFERRED | RECOVERING_START => self.wait_for_next_poll(),
                    // The intent is recorded but no answer was: it may or may not have been created.
                    _ => self
                        .recover_or_give_up("the operator stopped before the answer was recorded"),
                }
            }
        }
    }

    /// The start request was answered with a handle (or the handle was found after a lost answer).
    fn started(&mut self, started: &Started, request_id: String, how: Option<&str>) -> Action {
        // A handle too long to keep cannot be polled; it is not cut (that would poll another).
        if let Some((field, len)) = limits::oversized_handle(&started.handle) {
            let message = format!(
                "the upstream answered with an operation handle whose {field} is {len} bytes, more than the {} the operator keeps; the operation may be running upstream, find it there",
                limits::MAX_HANDLE
            );
            return self.finish(Phase::Failed, "HandleTooLarge", message);
        }
        let mut handle = started.handle.clone();
        handle.request_id = Some(request_id);
        self.status.operation = Some(handle);
        self.status.phase = Some(Phase::Running);
        self.status.last_change_at = Some(micro_time(self.input.now));
        let message = match how {
            Some(how) => format!("started {} ({how})", self.handle_label()),
            None => format!("started {}", self.handle_label()),
        };
        self.notice(false, "Started", message.clone());
        self.status.message = Some(message);
        self.observe(&started.observation)
    }

    /// A start without an idempotency key whose outcome is unknown: look for what it started
    /// where the protocol can, else give up with `StartOutcomeUnknown`.
    fn recover_or_give_up(&mut self, why: &str) -> Action {
        if !self.input.caps.can_recover {
            return self.start_outcome_unknown(why);
        }
        let message = format!(
            "the start request's outcome is unknown ({why}); looking upstream for the operation it may have begun"
        );
        self.status.message = Some(message.clone());
        self.conditions(RECOVERING_START, &message);
        Action::Recover
    }

    fn start_outcome_unknown(&mut self, why: &str) -> Action {
        let message = format!(
            "the start request may or may not have created the operation ({why}); {}, so resending it could start a second one; find the operation upstream and adopt it by creating a LongRunningOperation with spec.operation set to its name, id or url",
            self.input.caps.no_idempotency
        );
        self.finish(Phase::Failed, "StartOutcomeUnknown", message)
    }

    fn in_flight(&mut self, event: &Event) -> Action {
        match event {
            Event::Polled(observation) => self.observe(observation),
            Event::PollFailed(failure) => self.poll_failed(failure),
            Event::CancelSent => {
                let message = "cancel requested; waiting for the upstream to confirm".to_owned();
                self.status.message = Some(message.clone());
                self.conditions("Cancelling", &message);
                self.wait_for_next_poll()
            }
            Event::CancelRefused(why) => {
                self.status.phase = Some(Phase::Running);
                let message = format!("cannot cancel: {why}; the operation keeps running");
                self.status.message = Some(message.clone());
                self.conditions("CancelRefused", &message);
                self.notice(true, "CancelRefused", message);
                self.wait_for_next_poll()
            }
            Event::CancelLost(why) => {
                let message = format!("cancel request failed ({why}); it will be resent");
                self.status.message = Some(message.clone());
                self.conditions("Cancelling", &message);
                self.wait_for_next_poll()
            }
            _ => self.tick(),
        }
    }

    /// A reconcile of an operation in flight: time out, cancel, poll, or wait.
    fn tick(&mut self) -> Action {
        if let Some(action) = self.timed_out() {
            return action;
        }
        let memory = self.input.memory;
        if self.cancel_wanted() && !memory.cancel_refused {
            if !self.input.caps.can_cancel {
                self.status.phase = Some(Phase::Running);
                let message = CANCEL_UNSUPPORTED.to_owned();
                if self.status.message.as_deref() != Some(message.as_str()) {
                    self.notice(true, "CancelUnsupported", message.clone());
                }
                self.status.message = Some(message.clone());
                self.conditions("CancelUnsupported", &message);
            } else if self.status.phase == Some(Phase::Running) {
                self.status.phase = Some(Phase::Cancelling);
                let message = "sending the cancel request".to_owned();
                self.status.message = Some(message.clone());
                self.conditions("Cancelling", &message);
                let why = if self.input.spec.cancel {
                    "cancel requested by spec.cancel"
                } else {
                    "cancel requested by deletion (spec.onDelete: Cancel)"
                };
                self.notice(false, "Cancelling", why.into());
                return Action::Cancel;
            } else if !memory.cancel_sent && self.due() {
                return Action::Cancel;
            }
        }
        if self.due() {
            Action::Poll
        } else {
            self.wait_for_next_poll()
        }
    }

    fn poll_failed(&mut self, failure: &PollFailure) -> Action {
        let memory = self.input.memory;
        if failure.not_found
            && memory.not_found_since.is_some_and(|since| {
                self.input.now.duration_since(since).as_secs_f64()
                    >= self.input.policy.not_found_grace.as_secs_f64()
            })
        {
            self.status.error = Some(OperationError {
                code: "NOT_FOUND".into(),
                provider_code: None,
                http_status: Some(404),
                message: failure.message.clone(),
                details: vec![],
            });
            let message = format!(
                "the upstream has not known the operation for {}: it expired or never existed ({})",
                format_duration(self.input.policy.not_found_grace),
                failure.message
            );
            return self.finish(Phase::Failed, "OperationNotFound", message);
        }
        if let Some(action) = self.timed_out() {
            return action;
        }
        if memory.failures >= STUCK_AFTER_FAILURES {
            let since = memory.failing_since.unwrap_or(self.input.now);
            // No failure count in the message: it would change, and be written, on every failed poll.
            let message = format!(
                "the upstream has not answered usefully since {}; last error: {}",
                time(since).0,
                failure.message
            );
            let was_unavailable =
                conditions::find(&self.status.conditions, crate::api::condition::RECONCILING)
                    .is_some_and(|c| c.reason == "UpstreamUnavailable");
            if !was_unavailable {
                self.notice(true, "UpstreamUnavailable", message.clone());
            }
            // The condition carries the details; status.message stays as it was.
            self.conditions("UpstreamUnavailable", &message);
        }
        self.wait_for_next_poll()
    }

    /// Applies an observation: updates what a reader can see, and finishes on a terminal state.
    fn observe(&mut self, observation: &Observation) -> Action {
        let before = self.visible();
        // Cut as the status keeps them, so that the same long answer is not news at every poll.
        if let Some(state) = &observation.upstream_state {
            self.status.upstream_state = Some(limits::bounded(state));
        }
        if let Some(p) = observation.progress {
            let p = p.clamp(0, 100);
            self.status.progress = Some(self.status.progress.map_or(p, |old| old.max(p)));
        }
        if let Some(id) = &observation.resource_id {
            self.status.resource_id = Some(limits::bounded(id));
        }
        let phase_reason = match observation.state {
            UpstreamState::Pending | UpstreamState::Running => None,
            UpstreamState::Succeeded => Some((Phase::Succeeded, "Succeeded")),
            UpstreamState::Failed => Some((Phase::Failed, "UpstreamFailed")),
            UpstreamState::Cancelled => Some((Phase::Cancelled, "Cancelled")),
        };
        match phase_reason {
            Some((phase, reason)) => {
                self.status.result = observation.result.clone();
                self.status.error = observation.error.clone();
                if phase == Phase::Succeeded && self.status.progress.is_some() {
                    self.status.progress = Some(100);
                }
                self.status.last_change_at = Some(micro_time(self.input.now));
                let message = match (&observation.error, phase) {
                    (Some(e), _) => error_text(e),
                    // A note of a finished operation (Compute `warnings`) is kept.
                    (None, Phase::Succeeded) => match &observation.message {
                        Some(note) => format!("the upstream operation succeeded; {note}"),
                        None => "the upstream operation succeeded".into(),
                    },
                    (None, _) => format!("the upstream operation ended: {}", phase.as_str()),
                };
                self.finish(phase, reason, message)
            }
            None => {
                let cancelling = self.status.phase == Some(Phase::Cancelling);
                // While spec.cancel asks for a cancel the protocol lacks, keep saying so: switching
                // back to "Polling" here would flip the message (and a warning) on every poll.
                let unsupported = !cancelling
                    && self.cancel_wanted()
                    && !self.input.caps.can_cancel
                    && !self.input.memory.cancel_refused;
                let message = match &observation.message {
                    _ if unsupported => CANCEL_UNSUPPORTED.to_owned(),
                    Some(note) => note.clone(),
                    None if cancelling => {
                        "cancel requested; waiting for the upstream to confirm".into()
                    }
                    None => format!("polling {}", self.handle_label()),
                };
                self.status.message = Some(message.clone());
                self.progress_milestone(before.1);
                // Only a change of the upstream's state counts as news (lastChangeAt restarts the
                // backoff): its state word, its resource, a note it gave. A message the operator
                // wrote itself does not, nor progress alone: some upstreams move it on every poll,
                // which would keep the schedule at its first interval for the operation's whole
                // life. New progress is still written; it aims the schedule (`next_poll_at`).
                let after = self.visible();
                let news = (&after.0, &after.2) != (&before.0, &before.2)
                    || (observation.message.is_some()
                        && after.3 == observation.message
                        && after.3 != before.3);
                if news {
                    self.status.last_change_at = Some(micro_time(self.input.now));
                }
                let reason = if cancelling {
                    "Cancelling"
                } else if unsupported {
                    "CancelUnsupported"
                } else {
                    "Polling"
                };
                self.conditions(reason, &message);
                if let Some(action) = self.timed_out() {
                    return action;
                }
                self.wait_for_next_poll()
            }
        }
    }

    /// Moves to a terminal phase.
    fn finish(&mut self, phase: Phase, reason: &'static str, message: String) -> Action {
        self.status.phase = Some(phase);
        self.status.completed_at = Some(time(self.input.now));
        self.status.message = Some(message.clone());
        self.conditions(reason, &message);
        // A cancel the user asked for is no warning.
        let expected =
            phase == Phase::Succeeded || (phase == Phase::Cancelled && self.cancel_wanted());
        self.notice(!expected, reason, message);
        Action::Wait(None)
    }

    /// Fails the operation if its deadline has passed.
    fn timed_out(&mut self) -> Option<Action> {
        let deadline = self.deadline()?;
        if self.input.now < deadline {
            return None;
        }
        let timeout = self.input.policy.timeout.unwrap_or_default();
        self.status.error = Some(OperationError {
            code: "DEADLINE_EXCEEDED".into(),
            provider_code: None,
            http_status: None,
            message: format!(
                "not done within the timeout of {}",
                format_duration(timeout)
            ),
            details: vec![],
        });
        let message = format!(
            "the operation did not finish within its timeout of {} (spec.polling.timeout, else its provider's, else the operator's --default-timeout); the upstream operation was not cancelled",
            format_duration(timeout)
        );
        Some(self.finish(Phase::Failed, "Timeout", message))
    }

    fn deadline(&self) -> Option<Timestamp> {
        let timeout = self.input.policy.timeout?;
        let started = self.status.started_at.as_ref()?.0;
        Some(add(started, timeout))
    }

    /// When the next poll is due: `Retry-After` first, else the schedule's next poll after the
    /// last request — the backoff's next point counted from `lastChangeAt`, or earlier, a poll
    /// aimed by the progress ([`Schedule::next_after_aimed`]). The backoff derives from the
    /// status, so a restart (which forgets the last request) resumes it at its next point,
    /// without a stampede; the aim needs the progress rate the answers told, which a restart
    /// forgets too: it comes back with the first answer.
    fn next_poll_at(&self) -> Timestamp {
        let memory = self.input.memory;
        if let Some(not_before) = memory.not_before {
            return not_before;
        }
        // A poll that was due and held back (the provider's rate limit) is still due: the
        // schedule must not move on without it (an adopted operation's first poll, say).
        if memory.request_owed {
            return self.input.now;
        }
        // Long polls pace themselves: the upstream held the last one until its own deadline.
        if self.input.caps.long_poll && memory.failures == 0 {
            return add(memory.last_request_at, LONG_POLL_GAP);
        }
        let since = self
            .status
            .last_change_at
            .as_ref()
            .map(|t| t.0)
            .or_else(|| self.status.started_at.as_ref().map(|t| t.0))
            .unwrap_or(self.input.now);
        // Point 0 is the change itself, seen by the last request: the next poll is never before point 1.
        let after = memory
            .last_request_at
            .duration_since(since)
            .as_secs_f64()
            .max(0.0);
        let next = self.input.policy.schedule.next_after_aimed(
            after,
            seed_of(self.input.uid),
            self.progress_since(since),
        );
        add(since, Duration::from_secs_f64(next.max(0.0)))
    }

    /// The progress that may aim the schedule, with times in seconds since `since` (the last
    /// change): that of a `Running` operation the operator started (its 0 % is known: at
    /// `startedAt`; an adopted one's progress at adoption is not kept), answering its polls (a
    /// failing upstream gets the backoff), whose progress rate this process learnt from the
    /// answers that showed its highest progress (after a restart: from the first answer on;
    /// until then, the backoff).
    fn progress_since(&self, since: Timestamp) -> Option<Progress> {
        if self.status.phase != Some(Phase::Running)
            || self.input.spec.start.is_none()
            || self.input.memory.failures > 0
        {
            return None;
        }
        let percent = self.status.progress?;
        let started = self.status.started_at.as_ref()?.0;
        let rate = self
            .input
            .memory
            .progress_rate
            .filter(|r| r.percent == percent)?;
        Some(Progress {
            zero_at: started.duration_since(since).as_secs_f64(),
            rate,
        })
    }

    fn due(&self) -> bool {
        self.next_poll_at() <= self.input.now
    }

    fn wait_for_next_poll(&self) -> Action {
        let mut at = self.next_poll_at();
        if let Some(deadline) = self.deadline() {
            at = at.min(deadline);
        }
        let wait = at.duration_since(self.input.now).as_secs_f64().max(0.0);
        // Never spin: a poll that is due now is taken on the next reconcile, a few ms later.
        Action::Wait(Some(
            Duration::from_secs_f64(wait).max(Duration::from_millis(50)),
        ))
    }

    fn conditions(&mut self, reason: &str, message: &str) {
        let user_cancelled = self.cancel_wanted();
        conditions::set_from_phase(
            &mut self.status,
            reason,
            message,
            self.input.generation,
            user_cancelled,
            self.input.now,
        );
    }

    /// The user asked for a cancel: `spec.cancel`, or deletion with `onDelete: Cancel`.
    fn cancel_wanted(&self) -> bool {
        self.input.spec.cancel || self.input.deleting
    }

    fn notice(&mut self, warning: bool, reason: &'static str, message: String) {
        self.notices.push(Notice {
            warning,
            reason,
            action: "Reconcile",
            message,
        });
    }

    /// A `Progress` event when the progress crossed a milestone since `before`: one event, for
    /// the highest milestone crossed (progress never decreases, so each is announced once).
    fn progress_milestone(&mut self, before: Option<i32>) {
        let (old, Some(new)) = (before.unwrap_or(0), self.status.progress) else {
            return;
        };
        let crossed = PROGRESS_MILESTONES
            .iter()
            .rev()
            .find(|(m, _)| old < *m && *m <= new);
        if let Some((milestone, action)) = crossed {
            self.notices.push(Notice {
                warning: false,
                reason: "Progress",
                action,
                message: format!(
                    "{}% done ({milestone}% reached) on {}",
                    new,
                    self.handle_label()
                ),
            });
        }
    }

    /// The fields an observation can change (state word, progress, resource, message), to tell
    /// what the upstream said that is new.
    fn visible(&self) -> (Option<String>, Option<i32>, Option<String>, Option<String>) {
        (
            self.status.upstream_state.clone(),
            self.status.progress,
            self.status.resource_id.clone(),
            self.status.message.clone(),
        )
    }

    fn handle_label(&self) -> String {
        let handle = self.status.operation.clone().unwrap_or_default();
        handle
            .name
            .or(handle.id)
            .or(handle.url)
            .unwrap_or_else(|| "the operation".into())
    }
}

fn error_text(error: &OperationError) -> String {
    if error.message.is_empty() {
        error.code.clone()
    } else {
        format!("{}: {}", error.code, error.message)
    }
}

#[cfg(test)]
mod tests;
