//! Acting on a decision: the upstream requests, turned back into [`Event`]s for `decide`.

use std::time::{Instant, SystemTime};

use crate::api::{LongRunningOperationStatus, ProviderSpec, StartRequest};
use crate::protocol::{
    self, CancelOutcome, Dialect, HttpAnswer, PollOutcome, Recovery, RequestSpec, StartOutcome,
    UpstreamState,
};
use crate::reconcile::{Event, Memory, PollFailure};
use crate::telemetry::metrics::{RequestKind, RequestOutcome, UpstreamMeter};
use crate::upstream::{Upstream, UpstreamError};

/// Sends the start request.
pub async fn start(
    upstream: &Upstream,
    meter: &UpstreamMeter<'_>,
    provider: &ProviderSpec,
    dialect: &dyn Dialect,
    start: &StartRequest,
    request_id: &str,
    memory: &mut Memory,
) -> Event {
    let request = dialect.start_request(start, request_id);
    let sent = send(upstream, meter, RequestKind::Start, provider, &request).await;
    let now = jiff::Timestamp::now();
    let (answer, sent) = match sent {
        Ok(answer) => answer,
        Err(e) => {
            memory.record_failure(now, e.to_string(), None, false);
            return Event::StartLost(e.to_string());
        }
    };
    let outcome = dialect.read_start(&request, &answer);
    sent.record(!matches!(outcome, StartOutcome::Lost(_)));
    match outcome {
        StartOutcome::Started(started) => {
            memory.record_success(now, None);
            Event::Started(*started)
        }
        StartOutcome::Rejected(error) => {
            memory.record_success(now, None);
            Event::StartRejected(error)
        }
        StartOutcome::Deferred(why) => {
            memory.record_failure(now, why.clone(), hint(dialect, &answer), false);
            Event::StartDeferred(why)
        }
        StartOutcome::Lost(why) => {
            memory.record_failure(now, why.clone(), hint(dialect, &answer), false);
            Event::StartLost(why)
        }
    }
}

/// The most requests one look-up for a lost start's operation sends (pages, then operations).
const MAX_RECOVERY_STEPS: usize = 5;

/// Looks upstream for the operation a start whose answer was lost may have begun.
pub async fn recover(
    upstream: &Upstream,
    meter: &UpstreamMeter<'_>,
    provider: &ProviderSpec,
    dialect: &dyn Dialect,
    start: &StartRequest,
    sent_at: jiff::Timestamp,
    memory: &mut Memory,
) -> Event {
    let Some(mut request) = dialect.recovery_request(start, sent_at) else {
        return Event::NotRecovered("there is nothing to look it up by".into());
    };
    let mut candidate: Option<Box<protocol::Started>> = None;
    for _ in 0..MAX_RECOVERY_STEPS {
        let (answer, sent) =
            match send(upstream, meter, RequestKind::Poll, provider, &request).await {
                Ok(answered) => answered,
                Err(e) => {
                    memory.record_failure(jiff::Timestamp::now(), e.to_string(), None, false);
                    return Event::RecoveryFailed(e.to_string());
                }
            };
        let outcome = dialect.read_recovery(start, sent_at, candidate.as_deref(), &answer);
        sent.record(!matches!(outcome, Recovery::Failed(_)));
        match outcome {
            Recovery::Found(started) => {
                memory.record_success(jiff::Timestamp::now(), None);
                return Event::Recovered(*started);
            }
            Recovery::NotFound(why) => {
                memory.record_success(jiff::Timestamp::now(), None);
                return Event::NotRecovered(why);
            }
            Recovery::Failed(why) => {
                memory.record_failure(
                    jiff::Timestamp::now(),
                    why.clone(),
                    hint(dialect, &answer),
                    false,
                );
                return Event::RecoveryFailed(why);
            }
            Recovery::Next(next, found) => {
                request = next;
                candidate = found;
            }
        }
    }
    Event::NotRecovered(format!(
        "the look-up did not settle within {MAX_RECOVERY_STEPS} requests"
    ))
}

/// Polls the operation.
pub async fn poll(
    upstream: &Upstream,
    meter: &UpstreamMeter<'_>,
    provider: &ProviderSpec,
    dialect: &dyn Dialect,
    status: &LongRunningOperationStatus,
    memory: &mut Memory,
) -> Event {
    let handle = status.operation.clone().unwrap_or_default();
    let request = match dialect.poll_request(&handle) {
        Ok(r) => r,
        Err(e) => return failed(memory, e.to_string(), None, false),
    };
    let (answer, sent) = match send(upstream, meter, RequestKind::Poll, provider, &request).await {
        Ok(answer) => answer,
        Err(e) => return failed(memory, e.to_string(), None, false),
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
        let (result, sent) =
            match send(upstream, meter, RequestKind::Poll, provider, &request).await {
                Ok(answered) => answered,
                Err(e) => return failed(memory, e.to_string(), None, false),
            };
        outcome = dialect.read_result(observation, &result);
        sent.record(matches!(outcome, PollOutcome::Observed(_)));
        answer = result;
    }
    match outcome {
        PollOutcome::Observed(observation) => {
            memory.record_success(jiff::Timestamp::now(), hint(dialect, &answer));
            Event::Polled(observation)
        }
        PollOutcome::Failed { message, not_found } => {
            failed(memory, message, hint(dialect, &answer), not_found)
        }
    }
}

/// Sends the cancel request.
pub async fn cancel(
    upstream: &Upstream,
    meter: &UpstreamMeter<'_>,
    provider: &ProviderSpec,
    dialect: &dyn Dialect,
    status: &LongRunningOperationStatus,
    memory: &mut Memory,
) -> Event {
    let handle = status.operation.clone().unwrap_or_default();
    let Some(request) = dialect.cancel_request(&handle) else {
        memory.cancel_refused = true;
        return Event::CancelRefused("this protocol has no cancel request".into());
    };
    let (outcome, retry_after) =
        match send(upstream, meter, RequestKind::Cancel, provider, &request).await {
            Ok((answer, sent)) => {
                sent.record(true);
                (dialect.read_cancel(&answer), hint(dialect, &answer))
            }
            Err(e) => (CancelOutcome::Lost(e.to_string()), None),
        };
    match outcome {
        CancelOutcome::Accepted => {
            memory.cancel_sent = true;
            Event::CancelSent
        }
        CancelOutcome::Refused(why) => {
            memory.cancel_refused = true;
            Event::CancelRefused(why)
        }
        CancelOutcome::Lost(why) => {
            memory.record_failure(jiff::Timestamp::now(), why.clone(), retry_after, false);
            Event::CancelLost(why)
        }
    }
}

fn failed(
    memory: &mut Memory,
    message: String,
    retry_after: Option<std::time::Duration>,
    not_found: bool,
) -> Event {
    memory.record_failure(
        jiff::Timestamp::now(),
        message.clone(),
        retry_after,
        not_found,
    );
    Event::PollFailed(PollFailure { message, not_found })
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
    upstream: &Upstream,
    meter: &'a UpstreamMeter<'a>,
    kind: RequestKind,
    provider: &ProviderSpec,
    request: &RequestSpec,
) -> Result<(HttpAnswer, Sent<'a>), UpstreamError> {
    let began = Instant::now();
    let result = upstream.send(&provider.base_url, request).await;
    let elapsed = began.elapsed();
    match result {
        Ok(answer) => {
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

/// The shortest `Retry-After` taken: a hint of "now" (`0`, a past date) must not become a hot loop.
const MIN_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest `Retry-After` taken (ARM's own upper bound): a year-long hint must not stop polling.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The answer's `Retry-After` (as the dialect reads it), if any, clamped to
/// [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`].
fn hint(dialect: &dyn Dialect, answer: &HttpAnswer) -> Option<std::time::Duration> {
    dialect
        .retry_hint(answer, SystemTime::now())
        .map(|d| d.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}
