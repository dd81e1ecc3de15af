//! What the operator remembers about an operation between reconciles, in process only.
//!
//! Losing it (a restart) is safe: a fresh [`Memory`] resumes the poll schedule at its next point.

use std::time::Duration;

use jiff::Timestamp;

/// Poll and cancel history of one operation since this process first saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// When the last request to the upstream (start, poll) was made; a fresh memory starts at
    /// the moment the process first saw the object.
    pub last_request_at: Timestamp,
    /// Not before this time: the upstream's `Retry-After`.
    pub not_before: Option<Timestamp>,
    /// Failed polls in a row.
    pub failures: u32,
    /// When the current run of failed polls began.
    pub failing_since: Option<Timestamp>,
    /// The last failed poll's error, for the `UpstreamUnavailable` condition.
    pub last_error: Option<String>,
    /// When the current run of "not found" answers began.
    pub not_found_since: Option<Timestamp>,
    /// The cancel request was accepted by the upstream.
    pub cancel_sent: bool,
    /// The upstream refused to cancel; do not ask again.
    pub cancel_refused: bool,
    /// A poll was decided but held back (the provider's rate limit): it stays due until sent.
    pub poll_owed: bool,
    /// The turn this operation holds under its provider's rate limit: its next request goes
    /// then (see `upstream::rate_limit`).
    pub rate_turn: Option<std::time::Instant>,
}

impl Memory {
    /// A memory for an object first seen at `now`.
    pub fn new(now: Timestamp) -> Self {
        Memory {
            last_request_at: now,
            not_before: None,
            failures: 0,
            failing_since: None,
            last_error: None,
            not_found_since: None,
            cancel_sent: false,
            cancel_refused: false,
            poll_owed: false,
            rate_turn: None,
        }
    }

    /// Records a request that got a readable answer.
    pub fn record_success(&mut self, now: Timestamp, retry_after: Option<Duration>) {
        self.poll_owed = false;
        self.last_request_at = now;
        self.not_before = retry_after.map(|d| add(now, d));
        self.failures = 0;
        self.failing_since = None;
        self.last_error = None;
        self.not_found_since = None;
    }

    /// Records a request that failed (`not_found`: the upstream said 404).
    pub fn record_failure(
        &mut self,
        now: Timestamp,
        error: String,
        retry_after: Option<Duration>,
        not_found: bool,
    ) {
        self.poll_owed = false;
        self.last_request_at = now;
        self.not_before = retry_after.map(|d| add(now, d));
        self.failures = self.failures.saturating_add(1);
        self.failing_since.get_or_insert(now);
        self.last_error = Some(error);
        if not_found {
            self.not_found_since.get_or_insert(now);
        } else {
            self.not_found_since = None;
        }
    }
}

/// `t + d`, saturating at the far future.
pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}
