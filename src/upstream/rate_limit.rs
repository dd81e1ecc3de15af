//! Per-provider rate limits: token buckets per provider, shared by every operation using it.
//!
//! Two buckets with the provider's rate and burst work together:
//! - the *turns* schedule requests: a request takes a turn, a send time no closer to the others
//!   than the rate allows (after the burst). An operation whose turn is later does not wait in a
//!   worker: it is requeued for its turn, which it keeps until it comes.
//! - the *gate* enforces the limit at the moment of sending: a request that comes back later
//!   than its turn (busy workers, a late timer) could otherwise bunch up with the next ones. The
//!   gate's waits are short (only that bunching), so they are taken in the worker.
//!
//! Both buckets start as if empty when the process started, so that a restart never sends a
//! second burst on top of the one the previous process may just have sent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::RateLimitSpec;

/// One provider's token bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    /// Tokens at `at`; negative when turns were handed out ahead of time.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket for `limit` at `now`, as if it had been empty at `empty_at` (and filled since).
    pub fn new(limit: &RateLimitSpec, empty_at: Instant, now: Instant) -> Self {
        let burst = f64::from(limit.burst());
        let rate = limit.requests_per_second.max(1e-6);
        let filled = now.saturating_duration_since(empty_at).as_secs_f64() * rate;
        Bucket {
            rate,
            burst,
            tokens: filled.min(burst),
            at: now,
        }
    }

    /// Whether this bucket was made for `limit`.
    fn is_for(&self, limit: &RateLimitSpec) -> bool {
        self.rate == limit.requests_per_second.max(1e-6) && self.burst == f64::from(limit.burst())
    }

    /// Takes a turn at `now`: how long until it may be sent (zero: now).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Whether a request may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Send it now.
    Now,
    /// Send it at this time (its turn, already taken).
    At(Instant),
}

/// The buckets of every provider with a `rateLimit`, by provider key.
#[derive(Debug)]
pub struct RateLimits {
    turns: Mutex<HashMap<String, Bucket>>,
    gate: Mutex<HashMap<String, Bucket>>,
    /// When the buckets were (notionally) empty: the process start.
    empty_at: Instant,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new(Instant::now())
    }
}

impl RateLimits {
    /// Buckets that were empty at `empty_at`.
    pub fn new(empty_at: Instant) -> Self {
        RateLimits {
            turns: Mutex::default(),
            gate: Mutex::default(),
            empty_at,
        }
    }

    /// Admits one request to the provider `key` limited by `limit`, at `now`. `held` is the turn
    /// this operation already took, if any: once it has come the request goes (and the turn is
    /// used up); before, the same turn is returned.
    pub fn admit(
        &self,
        key: &str,
        limit: &RateLimitSpec,
        held: Option<Instant>,
        now: Instant,
    ) -> Turn {
        match held {
            Some(at) if at <= now => return Turn::Now,
            Some(at) => return Turn::At(at),
            None => {}
        }
        match self.take(&self.turns, key, limit, now) {
            Duration::ZERO => Turn::Now,
            wait => Turn::At(now + wait),
        }
    }

    /// Passes one request through the gate of `key` at `now`: how long to wait before sending
    /// it (its slot is taken; zero: send now).
    pub fn gate(&self, key: &str, limit: &RateLimitSpec, now: Instant) -> Duration {
        self.take(&self.gate, key, limit, now)
    }

    fn take(
        &self,
        buckets: &Mutex<HashMap<String, Bucket>>,
        key: &str,
        limit: &RateLimitSpec,
        now: Instant,
    ) -> Duration {
        let mut buckets = buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(limit, self.empty_at, now));
        if !bucket.is_for(limit) {
            // The provider's limit changed: start over with the new one.
            *bucket = Bucket::new(limit, self.empty_at, now);
        }
        bucket.take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: f64, burst: Option<u32>) -> RateLimitSpec {
        RateLimitSpec {
            requests_per_second: rps,
            burst,
        }
    }

    #[test]
    fn the_burst_goes_at_once_then_turns_are_spaced_by_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&limit(2.0, Some(3)), t0 - Duration::from_secs(60), t0);
        let waits: Vec<f64> = (0..6).map(|_| b.take(t0).as_secs_f64()).collect();
        assert_eq!(&waits[..3], &[0.0, 0.0, 0.0]);
        for (got, want) in waits[3..].iter().zip([0.5, 1.0, 1.5]) {
            assert!((got - want).abs() < 1e-9, "{waits:?}");
        }
    }

    #[test]
    fn tokens_come_back_with_time_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&limit(1.0, Some(2)), t0 - Duration::from_secs(60), t0);
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::ZERO);
        // 10 s later the bucket holds 2 tokens, not 10.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert!((b.take(t1).as_secs_f64() - 1.0).abs() < 1e-9);
    }

    /// Whatever the arrival pattern, requests sent at their turns never exceed
    /// `burst + rate × window` in any window.
    #[test]
    fn sends_at_the_turns_never_exceed_the_limit() {
        let t0 = Instant::now();
        let spec = limit(5.0, Some(2));
        let limits = RateLimits::new(t0 - Duration::from_secs(60));
        let mut sends = Vec::new();
        // 200 requests arriving in clumps over 10 s.
        for i in 0..200u64 {
            let arrival = t0 + Duration::from_millis((i / 20) * 1000);
            match limits.admit("p", &spec, None, arrival) {
                Turn::Now => sends.push(arrival),
                Turn::At(at) => {
                    // The request comes back at its turn and goes.
                    assert_eq!(limits.admit("p", &spec, Some(at), at), Turn::Now);
                    sends.push(at);
                }
            }
        }
        sends.sort();
        for (i, start) in sends.iter().enumerate() {
            for window in [0.2, 1.0, 5.0] {
                let end = *start + Duration::from_secs_f64(window);
                let n = sends[i..].iter().take_while(|s| **s < end).count() as f64;
                assert!(n <= 2.0 + 5.0 * window + 1e-9, "{n} sends in {window} s");
            }
        }
        // And the bucket hands out no more idle time than needed: the last of 200 goes at
        // (200 - burst) / rate.
        let last = sends.last().unwrap().duration_since(t0).as_secs_f64();
        assert!((last - 198.0 / 5.0).abs() < 1e-6, "{last}");
    }

    #[test]
    fn a_held_turn_is_kept_until_it_comes() {
        let t0 = Instant::now();
        let spec = limit(1.0, Some(1));
        let limits = RateLimits::new(t0 - Duration::from_secs(60));
        assert_eq!(limits.admit("p", &spec, None, t0), Turn::Now);
        let Turn::At(turn) = limits.admit("p", &spec, None, t0) else {
            panic!("the second request must wait");
        };
        // Woken early (a watch event): the same turn, no new one taken.
        let early = t0 + Duration::from_millis(200);
        assert_eq!(limits.admit("p", &spec, Some(turn), early), Turn::At(turn));
        assert_eq!(limits.admit("p", &spec, Some(turn), turn), Turn::Now);
        // Another provider has its own bucket.
        assert_eq!(limits.admit("q", &spec, None, t0), Turn::Now);
    }

    #[test]
    fn a_changed_limit_starts_a_new_bucket() {
        let t0 = Instant::now();
        let limits = RateLimits::new(t0 - Duration::from_secs(60));
        assert_eq!(limits.admit("p", &limit(1.0, Some(1)), None, t0), Turn::Now);
        assert!(matches!(
            limits.admit("p", &limit(1.0, Some(1)), None, t0),
            Turn::At(_)
        ));
        assert_eq!(limits.admit("p", &limit(10.0, None), None, t0), Turn::Now);
    }

    /// A new process does not start with a full burst: the previous one may just have sent one.
    #[test]
    fn a_fresh_process_starts_with_an_empty_bucket() {
        let t0 = Instant::now();
        let spec = limit(4.0, Some(8));
        let limits = RateLimits::new(t0);
        assert!((limits.gate("p", &spec, t0).as_secs_f64() - 0.25).abs() < 1e-9);
        // Two seconds in, the bucket has filled up to the burst.
        let later = RateLimits::new(t0);
        let t2 = t0 + Duration::from_secs(2);
        let waits: Vec<Duration> = (0..9).map(|_| later.gate("p", &spec, t2)).collect();
        assert!(waits[..8].iter().all(|w| w.is_zero()), "{waits:?}");
        assert!(!waits[8].is_zero());
    }

    /// Requests that come back late from their turns, all at once, are spread again by the gate.
    #[test]
    fn the_gate_spreads_requests_that_come_late_from_their_turns() {
        let t0 = Instant::now();
        let spec = limit(10.0, Some(1));
        let limits = RateLimits::new(t0 - Duration::from_secs(60));
        let turns: Vec<Turn> = (0..10)
            .map(|_| limits.admit("p", &spec, None, t0))
            .collect();
        // Every worker was busy: all ten come back at t0 + 1 s, their turns long past.
        let late = t0 + Duration::from_secs(1);
        let mut sends = Vec::new();
        for turn in turns {
            let held = match turn {
                Turn::Now => None,
                Turn::At(at) => Some(at),
            };
            if held.is_some() {
                assert_eq!(limits.admit("p", &spec, held, late), Turn::Now);
            }
            sends.push(late + limits.gate("p", &spec, late));
        }
        for pair in sends.windows(2) {
            let gap = pair[1].duration_since(pair[0]).as_secs_f64();
            assert!(gap >= 0.1 - 1e-9, "{gap}");
        }
    }

    #[test]
    fn the_burst_defaults_to_the_rate_rounded_up() {
        assert_eq!(limit(0.5, None).burst(), 1);
        assert_eq!(limit(2.5, None).burst(), 3);
        assert_eq!(limit(2.5, Some(7)).burst(), 7);
    }
}
