//! The upstream requests of a reconcile — start, poll, cancel, the look-up of a lost start —
//! each turned into the [`Event`] `decide` reads and the [`Fact`] the poll memory learns.

use std::time::{Duration, Instant, SystemTime};

use crate::api::{LongRunningOperationStatus, StartRequest};
use crate::protocol::{
    self, CancelOutcome, Dialect, HttpAnswer, ListOutcome, PollOutcome, Recovery, RequestSpec,
    StartOutcome, UpstreamState,
};
use crate::reconcile::{Event, Fact, PollFailure};
use crate::telemetry::metrics::{RequestKind, RequestOutcome, UpstreamMeter};
use crate::upstream::{Upstream, UpstreamError};

/// One provider's means of talking to its upstream, as a reconcile uses them.
pub struct Upstreaming<'a> {
    /// The HTTP client (credentials, TLS, address policy).
    pub upstream: &'a Upstream,
    /// Counts the requests.
    pub meter: &'a UpstreamMeter<'a>,
    /// The provider's base URL.
    pub base_url: &'a str,
    /// The provider's dialect.
    pub dialect: &'a dyn Dialect,
    /// Told when the upstream refuses the credentials (401): their Secrets are read again.
    pub on_unauthorized: &'a (dyn Fn() + Sync),
}

/// What one request came to: the event for `decide`, and what the poll memory learns.
pub type Answer = (Event, Option<Fact>);

fn failed_at(error: String, retry_after: Option<Duration>, not_found: bool) -> Fact {
    Fact::Failed {
        at: jiff::Timestamp::now(),
        error,
        retry_after,
        not_found,
    }
}

fn answered(retry_after: Option<Duration>) -> Fact {
    Fact::Answered {
        at: jiff::Timestamp::now(),
        retry_after,
    }
}

/// Sends the start request.
pub async fn start(to: &Upstreaming<'_>, start: &StartRequest, request_id: &str) -> Answer {
    let dialect = to.dialect;
    let request = dialect.start_request(start, request_id);
    let (answer, sent) = match send(to, RequestKind::Start, &request).await {
        Ok(answer) => answer,
        Err(e) => {
            let why = e.to_string();
            let event = match e {
                // Never sent, and never will be as it is.
                UpstreamError::Url { .. } => Event::StartRefused(why.clone()),
                // Never sent (the address or the credentials are not usable yet): resent.
                UpstreamError::Refused(_) | UpstreamError::Credentials(_) => {
                    Event::StartDeferred(why.clone())
                }
                UpstreamError::Transport { .. } | UpstreamError::TooLarge { .. } => {
                    Event::StartLost(why.clone())
                }
            };
            return (event, Some(failed_at(why, None, false)));
        }
    };
    let outcome = dialect.read_start(&request, &answer);
    sent.record(!matches!(outcome, StartOutcome::Lost(_)));
    let hint = hint(dialect, &answer);
    match outcome {
        StartOutcome::Started(started) => (Event::Started(*started), Some(answered(hint))),
        StartOutcome::Rejected(error) => (Event::StartRejected(error), Some(answered(None))),
        StartOutcome::Deferred(why) => (
            Event::StartDeferred(why.clone()),
            Some(failed_at(why, hint, false)),
        ),
        StartOutcome::Lost(why) => (
            Event::StartLost(why.clone()),
            Some(failed_at(why, hint, false)),
        ),
    }
}

/// The most requests one look-up for a lost start's operation sends (pages, then operations).
const MAX_RECOVERY_STEPS: usize = 5;

/// Looks upstream for the operation a start whose answer was lost may have begun.
pub async fn recover(
    to: &Upstreaming<'_>,
    start: &StartRequest,
    sent_at: jiff::Timestamp,
) -> Answer {
    let dialect = to.dialect;
    let Some(mut request) = dialect.recovery_request(start, sent_at) else {
        return (
            Event::NotRecovered("there is nothing to look it up by".into()),
            None,
        );
    };
    let mut candidate: Option<Box<protocol::Started>> = None;
    for _ in 0..MAX_RECOVERY_STEPS {
        let (answer, sent) = match send(to, RequestKind::Poll, &request).await {
            Ok(answered) => answered,
            Err(e) => {
                let why = e.to_string();
                return (
                    Event::RecoveryFailed(why.clone()),
                    Some(failed_at(why, None, false)),
                );
            }
        };
        let outcome =
            dialect.read_recovery(start, sent_at, candidate.as_deref(), &request, &answer);
        sent.record(!matches!(outcome, Recovery::Failed(_)));
        match outcome {
            Recovery::Found(started) => {
                return (Event::Recovered(*started), Some(answered(None)));
            }
            Recovery::NotFound(why) => return (Event::NotRecovered(why), Some(answered(None))),
            Recovery::Failed(why) => {
                let hint = hint(dialect, &answer);
                return (
                    Event::RecoveryFailed(why.clone()),
                    Some(failed_at(why, hint, false)),
                );
            }
            Recovery::Next(next, found) => {
                request = next;
                candidate = found;
            }
        }
    }
    (
        Event::NotRecovered(format!(
            "the look-up did not settle within {MAX_RECOVERY_STEPS} requests"
        )),
        Some(answered(None)),
    )
}

/// Polls the operation.
pub async fn poll(to: &Upstreaming<'_>, status: &LongRunningOperationStatus) -> Answer {
    let dialect = to.dialect;
    let handle = status.operation.clone().unwrap_or_default();
    let failure = |message: String, retry_after, not_found| {
        (
            Event::PollFailed(PollFailure {
                message: message.clone(),
                not_found,
            }),
            Some(failed_at(message, retry_after, not_found)),
        )
    };
    let request = match dialect.poll_request(&handle) {
        Ok(r) => r,
        Err(e) => return failure(e.to_string(), None, false),
    };
    let (answer, sent) = match send(to, RequestKind::Poll, &request).await {
        Ok(answer) => answer,
        Err(e) => return failure(e.to_string(), None, false),
    };
    let mut outcome = dialect.read_poll(&handle, &answer);
    sent.record(matches!(outcome, PollOutcome::Observed(_)));
    let mut answer = answer;
    // A succeeded operation whose result lives elsewhere: read it before reporting success.
    if let PollOutcome::Observed(observation) = &outcome
        && observation.state == UpstreamState::Succeeded
        && let Some(request) = dialect.result_request(&handle)
    {
        let observation = observation.clone();
        let (result, sent) = match send(to, RequestKind::Poll, &request).await {
            Ok(answered) => answered,
            Err(e) => return failure(e.to_string(), None, false),
        };
        outcome = dialect.read_result(observation, &result);
        sent.record(matches!(outcome, PollOutcome::Observed(_)));
        answer = result;
    }
    let hint = hint(dialect, &answer);
    match outcome {
        PollOutcome::Observed(observation) => (Event::Polled(observation), Some(answered(hint))),
        PollOutcome::Failed { message, not_found } => failure(message, hint, not_found),
    }
}

/// Sends one list page request; returns how it reads and the upstream's hint of when to ask
/// again.
pub async fn list_page(
    to: &Upstreaming<'_>,
    request: &RequestSpec,
) -> (ListOutcome, Option<Duration>) {
    match send(to, RequestKind::List, request).await {
        Ok((answer, sent)) => {
            let outcome = to.dialect.read_list(&answer);
            sent.record(matches!(outcome, ListOutcome::Page(_)));
            (outcome, hint(to.dialect, &answer))
        }
        Err(UpstreamError::Url { target, why }) => (
            ListOutcome::Refused(format!("refusing to send to {target}: {why}")),
            None,
        ),
        Err(e) => (ListOutcome::Failed(e.to_string()), None),
    }
}

/// Sends the cancel request.
pub async fn cancel(to: &Upstreaming<'_>, status: &LongRunningOperationStatus) -> Answer {
    let dialect = to.dialect;
    let handle = status.operation.clone().unwrap_or_default();
    let Some(request) = dialect.cancel_request(&handle) else {
        let why = if dialect.can_cancel() {
            "the operation's handle lacks what the cancel request needs (adopt it by name)"
        } else {
            "this protocol has no cancel request"
        };
        return (Event::CancelRefused(why.into()), Some(Fact::CancelRefused));
    };
    let (outcome, retry_after) = match send(to, RequestKind::Cancel, &request).await {
        Ok((answer, sent)) => {
            sent.record(true);
            (dialect.read_cancel(&answer), hint(dialect, &answer))
        }
        Err(e) => (CancelOutcome::Lost(e.to_string()), None),
    };
    match outcome {
        CancelOutcome::Accepted => (Event::CancelSent, Some(Fact::CancelAccepted)),
        CancelOutcome::Refused(why) => (Event::CancelRefused(why), Some(Fact::CancelRefused)),
        CancelOutcome::Lost(why) => (
            Event::CancelLost(why.clone()),
            Some(failed_at(why, retry_after, false)),
        ),
    }
}

/// A request that was answered, not yet counted: the count waits for the protocol to read it.
struct Sent<'a> {
    meter: &'a UpstreamMeter<'a>,
    kind: RequestKind,
    status: u16,
    elapsed: std::time::Duration,
}

impl Sent<'_> {
    /// Counts the request; `readable`: the protocol could read a 2xx answer.
    fn record(self, readable: bool) {
        let outcome = match RequestOutcome::of_status(self.status) {
            RequestOutcome::Ok if !readable => RequestOutcome::Unreadable,
            other => other,
        };
        self.meter.record(self.kind, outcome, self.elapsed);
    }
}

/// Sends `request`; a request that got no answer is counted here, an answered one by the caller
/// (through [`Sent::record`]) once the protocol has read it.
async fn send<'a>(
    to: &Upstreaming<'a>,
    kind: RequestKind,
    request: &RequestSpec,
) -> Result<(HttpAnswer, Sent<'a>), UpstreamError> {
    let began = Instant::now();
    let result = to.upstream.send(to.base_url, request).await;
    let elapsed = began.elapsed();
    let meter = to.meter;
    match result {
        Ok(answer) => {
            if answer.status == 401 {
                (to.on_unauthorized)();
            }
            let sent = Sent {
                meter,
                kind,
                status: answer.status,
                elapsed,
            };
            Ok((answer, sent))
        }
        Err(e) => {
            match &e {
                // Refused before sending: not a request.
                UpstreamError::Url { .. }
                | UpstreamError::Refused(_)
                | UpstreamError::Credentials(_) => {}
                UpstreamError::Transport { .. } => {
                    meter.record(kind, RequestOutcome::Transport, elapsed)
                }
                UpstreamError::TooLarge { .. } => {
                    meter.record(kind, RequestOutcome::Unreadable, elapsed)
                }
            }
            Err(e)
        }
    }
}

/// The answer's hint of when to ask again, as the dialect reads it (clamped where it is learnt).
fn hint(dialect: &dyn Dialect, answer: &HttpAnswer) -> Option<Duration> {
    dialect.retry_hint(answer, SystemTime::now())
}
