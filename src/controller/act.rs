//! Acting on a decision: the upstream requests, turned back into [`Event`]s for `decide`.

use std::time::SystemTime;

use crate::api::{LongRunningOperationStatus, ProviderSpec, StartRequest};
use crate::protocol::{self, Dialect, HttpAnswer};
use crate::reconcile::{Event, Memory, PollFailure};
use crate::upstream::{Upstream, UpstreamError};

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
    match sent {
        Ok(answer) if is_success(&answer) => match dialect.parse_start(&answer) {
            Ok(started) => {
                memory.record_success(now, None);
                Event::Started(started)
            }
            Err(e) => {
                memory.record_failure(now, e.to_string(), None, false);
                Event::StartLost(format!("unreadable start answer: {e}"))
            }
        },
        Ok(answer) if is_permanent_rejection(answer.status) => {
            memory.record_success(now, None);
            Event::StartRejected(dialect.parse_error(&answer))
        }
        Ok(answer) => {
            let error = dialect.parse_error(&answer);
            memory.record_failure(
                now,
                describe(&answer, &error.message),
                protocol::retry_after(&answer, SystemTime::now()),
                false,
            );
            Event::StartLost(format!("HTTP {}: {}", answer.status, error.message))
        }
        Err(e) => {
            memory.record_failure(now, e.to_string(), None, false);
            Event::StartLost(e.to_string())
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
        Err(e) => return failed(memory, jiff::Timestamp::now(), e.to_string(), None, false),
    };
    let sent = upstream.send(&provider.base_url, &request).await;
    let now = jiff::Timestamp::now();
    match sent {
        Ok(answer) if is_success(&answer) => match dialect.parse_poll(&answer) {
            Ok(observation) => {
                memory.record_success(now, protocol::retry_after(&answer, SystemTime::now()));
                Event::Polled(observation)
            }
            Err(e) => failed(memory, now, format!("unreadable answer: {e}"), None, false),
        },
        Ok(answer) => {
            let error = dialect.parse_error(&answer);
            let not_found = matches!(answer.status, 404 | 410);
            let retry_after = protocol::retry_after(&answer, SystemTime::now());
            failed(
                memory,
                now,
                describe(&answer, &error.message),
                retry_after,
                not_found,
            )
        }
        Err(e) => failed(memory, now, upstream_error(&e), None, false),
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
    match upstream.send(&provider.base_url, &request).await {
        Ok(answer) if is_success(&answer) => {
            memory.cancel_sent = true;
            Event::CancelSent
        }
        Ok(answer) if is_permanent_rejection(answer.status) || answer.status == 501 => {
            memory.cancel_refused = true;
            let error = dialect.parse_error(&answer);
            Event::CancelRefused(describe(&answer, &error.message))
        }
        Ok(answer) => {
            let error = dialect.parse_error(&answer);
            let message = describe(&answer, &error.message);
            let retry_after = protocol::retry_after(&answer, SystemTime::now());
            memory.record_failure(jiff::Timestamp::now(), message.clone(), retry_after, false);
            Event::CancelLost(message)
        }
        Err(e) => {
            let message = upstream_error(&e);
            memory.record_failure(jiff::Timestamp::now(), message.clone(), None, false);
            Event::CancelLost(message)
        }
    }
}

fn failed(
    memory: &mut Memory,
    now: jiff::Timestamp,
    message: String,
    retry_after: Option<std::time::Duration>,
    not_found: bool,
) -> Event {
    memory.record_failure(now, message.clone(), retry_after, not_found);
    Event::PollFailed(PollFailure { message, not_found })
}

fn is_success(answer: &HttpAnswer) -> bool {
    (200..300).contains(&answer.status)
}

/// A 4xx other than timeout/conflict-in-flight/throttling: resending will not help.
fn is_permanent_rejection(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

fn describe(answer: &HttpAnswer, message: &str) -> String {
    if message.is_empty() {
        format!("HTTP {}", answer.status)
    } else {
        format!("HTTP {}: {message}", answer.status)
    }
}

fn upstream_error(e: &UpstreamError) -> String {
    e.to_string()
}
