//! Acting on a decision: the upstream requests, turned back into [`Event`]s for `decide`.

use std::time::SystemTime;

use crate::api::{LongRunningOperationStatus, ProviderSpec, StartRequest};
use crate::protocol::{self, CancelOutcome, Dialect, HttpAnswer, PollOutcome, StartOutcome};
use crate::reconcile::{Event, Memory, PollFailure};
use crate::upstream::Upstream;

/// Sends the start request.
pub async fn start(
    upstream: &Upstream,
    provider: &ProviderSpec,
    dialect: &dyn Dialect,
    start: &StartRequest,
    request_id: &str,
    memory: &mut Memory,
) -> Event {
    let request = dialect.start_request(start, request_id);
    let sent = upstream.send(&provider.base_url, &request).await;
    let now = jiff::Timestamp::now();
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            memory.record_failure(now, e.to_string(), None, false);
            return Event::StartLost(e.to_string());
        }
    };
    match dialect.read_start(&request, &answer) {
        StartOutcome::Started(started) => {
            memory.record_success(now, None);
            Event::Started(*started)
        }
        StartOutcome::Rejected(error) => {
            memory.record_success(now, None);
            Event::StartRejected(error)
        }
        StartOutcome::Lost(why) => {
            memory.record_failure(now, why.clone(), hint(&answer), false);
            Event::StartLost(why)
        }
    }
}

/// Polls the operation.
pub async fn poll(
    upstream: &Upstream,
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
    let answer = match upstream.send(&provider.base_url, &request).await {
        Ok(answer) => answer,
        Err(e) => return failed(memory, e.to_string(), None, false),
    };
    match dialect.read_poll(&handle, &answer) {
        PollOutcome::Observed(observation) => {
            memory.record_success(jiff::Timestamp::now(), hint(&answer));
            Event::Polled(observation)
        }
        PollOutcome::Failed { message, not_found } => {
            failed(memory, message, hint(&answer), not_found)
        }
    }
}

/// Sends the cancel request.
pub async fn cancel(
    upstream: &Upstream,
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
    let (outcome, retry_after) = match upstream.send(&provider.base_url, &request).await {
        Ok(answer) => (dialect.read_cancel(&answer), hint(&answer)),
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

/// The answer's `Retry-After`, if any.
fn hint(answer: &HttpAnswer) -> Option<std::time::Duration> {
    protocol::retry_after(answer, SystemTime::now())
}
