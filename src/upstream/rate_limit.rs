//! Per-provider rate limits: a token bucket per provider, shared by every operation using it.
//!
//! A request takes a *turn*: the bucket hands out consecutive send times no closer together than
//! the rate allows (after the burst). An operation whose turn is later does not wait in a worker:
//! it is requeued for its turn, which it keeps (a later reconcile does not take a new one).

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
    /// A full bucket for `limit`, at `now`.
    pub fn new(limit: &RateLimitSpec, now: Instant) -> Self {
        let burst = f64::from(limit.burst());
        Bucket {
            rate: limit.requests_per_second.max(1e-6),
            burst,
            tokens: burst,
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
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
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
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(limit, now));
        if !bucket.is_for(limit) {
            // The provider's limit changed: start over with the new one.
            *bucket = Bucket::new(limit, now);
        }
        match bucket.take(now) {
            Duration::ZERO => Turn::Now,
            wait => Turn::At(now + wait),
        }
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
        let mut b = Bucket::new(&limit(2.0, Some(3)), t0);
        let waits: Vec<f64> = (0..6).map(|_| b.take(t0).as_secs_f64()).collect();
        assert_eq!(&waits[..3], &[0.0, 0.0, 0.0]);
        for (got, want) in waits[3..].iter().zip([0.5, 1.0, 1.5]) {
            assert!((got - want).abs() < 1e-9, "{waits:?}");
        }
    }

    #[test]
    fn tokens_come_back_with_time_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(&limit(1.0, Some(2)), t0);
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
        let limits = RateLimits::default();
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
        let limits = RateLimits::default();
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
        let limits = RateLimits::default();
        assert_eq!(limits.admit("p", &limit(1.0, Some(1)), None, t0), Turn::Now);
        assert!(matches!(
            limits.admit("p", &limit(1.0, Some(1)), None, t0),
            Turn::At(_)
        ));
        assert_eq!(limits.admit("p", &limit(10.0, None), None, t0), Turn::Now);
    }

    #[test]
    fn the_burst_defaults_to_the_rate_rounded_up() {
        assert_eq!(limit(0.5, None).burst(), 1);
        assert_eq!(limit(2.5, None).burst(), 3);
        assert_eq!(limit(2.5, Some(7)).burst(), 7);
    }
}
