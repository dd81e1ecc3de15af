//! What the operator remembers about an operation between reconciles, in process only.
//!
//! Losing it (a restart) is safe: a fresh [`Memory`] resumes the poll schedule at its next point.

use std::time::Duration;

use jiff::Timestamp;

use super::schedule::ProgressRate;

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
    /// A request was decided but held back before it was sent (the provider's rate limit, the
    /// namespace's fair share, the Lease): it stays due until sent. A held-back start is sent
    /// again, not taken for one whose answer was lost.
    pub request_owed: bool,
    /// The turn this operation holds under its provider's rate limit: its next request goes
    /// then (see `upstream::rate_limit`).
    pub rate_turn: Option<std::time::Instant>,
    /// What this process's answers told of the rate the progress moves at (from 0 % at
    /// `startedAt`): it aims the poll schedule at the end it allows. Lost on a restart: the
    /// schedule keeps to its backoff until the next answer.
    pub progress_rate: Option<ProgressRate>,
    /// When this process last applied an answer (a poll's, a list entry's); `None` until the
    /// first, so that a sweep's entry found before this process met the operation (or before a
    /// restart) is still news to it.
    pub answered_at: Option<Timestamp>,
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
            request_owed: false,
            rate_turn: None,
            progress_rate: None,
            answered_at: None,
        }
    }

    /// Records the progress an answer at `at` reported of an operation started at `started`
    /// (see [`ProgressRate::learn`]); none, or no start known, changes nothing.
    pub fn saw_progress(
        &mut self,
        at: Timestamp,
        started: Option<Timestamp>,
        progress: Option<i32>,
    ) {
        let (Some(p), Some(started)) = (progress, started) else {
            return;
        };
        let elapsed = at.duration_since(started).as_secs_f64();
        self.progress_rate = ProgressRate::learn(self.progress_rate, elapsed, p.clamp(0, 100));
    }

    /// Records a request that got a readable answer.
    pub fn record_success(&mut self, now: Timestamp, retry_after: Option<Duration>) {
        self.request_owed = false;
        self.last_request_at = now;
        self.answered_at = Some(now);
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
        self.request_owed = false;
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

/// The shortest `Retry-After` taken: a hint of "now" (`0`, a past date) must not become a hot loop.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest `Retry-After` taken (ARM's own upper bound): a year-long hint must not stop polling.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What an upstream request taught: the memory's part of its outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// The answer was read (a start, poll or look-up answered).
    Answered {
        /// When.
        at: Timestamp,
        /// The upstream's hint of when to ask again, as it gave it.
        retry_after: Option<Duration>,
    },
    /// No usable answer.
    Failed {
        /// When.
        at: Timestamp,
        /// What went wrong, for people.
        error: String,
        /// The upstream's hint of when to ask again, as it gave it.
        retry_after: Option<Duration>,
        /// The upstream said the operation does not exist.
        not_found: bool,
    },
    /// The upstream accepted the cancel.
    CancelAccepted,
    /// The upstream refused the cancel, or the protocol has none: do not ask again.
    CancelRefused,
}

impl Memory {
    /// Learns `fact`; a `Retry-After` is clamped to [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`].
    pub fn learn(&mut self, fact: &Fact) {
        let clamp = |d: &Option<Duration>| d.map(|d| d.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER));
        match fact {
            Fact::Answered { at, retry_after } => self.record_success(*at, clamp(retry_after)),
            Fact::Failed {
                at,
                error,
                retry_after,
                not_found,
            } => self.record_failure(*at, error.clone(), clamp(retry_after), *not_found),
            Fact::CancelAccepted => self.cancel_sent = true,
            Fact::CancelRefused => self.cancel_refused = true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_clamped_where_it_is_learnt() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let mut m = Memory::new(t);
        m.learn(&Fact::Answered {
            at: t,
            retry_after: Some(Duration::ZERO),
        });
        assert_eq!(m.not_before, Some(add(t, MIN_RETRY_AFTER)));
        m.learn(&Fact::Failed {
            at: t,
            error: "429".into(),
            retry_after: Some(Duration::from_secs(365 * 86_400)),
            not_found: false,
        });
        assert_eq!(m.not_before, Some(add(t, MAX_RETRY_AFTER)));
        assert_eq!(m.failures, 1);
        m.learn(&Fact::CancelRefused);
        assert!(m.cancel_refused);
    }
}
