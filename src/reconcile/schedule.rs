//! The poll schedule: a backoff derived from the time since the upstream's state last changed,
//! aimed by the progress it reports.
//!
//! With `t` seconds since the last change the next wait is
//! `min(maxInterval, initialInterval + (multiplier − 1)·t)`. Starting at `t₀ = 0` that gives the
//! points `tₖ₊₁ = tₖ + interval(tₖ)`: geometric until the cap, then evenly spaced. Each point
//! is moved by a jitter that depends only on (seed, k), so the schedule needs no stored state, a
//! restart resumes it exactly, and many operations do not poll in lockstep.
//!
//! Progress does not restart that backoff (an operation whose progress moves on every poll would
//! otherwise be polled at the first interval for its whole life); it aims it instead
//! ([`Schedule::next_after_aimed`]). Every answer bounds the rate the progress moves at, if it
//! moves steadily from 0 % at the start ([`ProgressRate`]); those bounds give the earliest and
//! the latest end. Near the end, a poll is aimed where its answer halves the rates still possible
//! (when the next step would be reached at the middle rate), and once the end is known within
//! one first interval, one poll just after its latest time. The backoff's points stay the upper
//! bound on every wait, and an aimed poll is at least `initialInterval` after the request before
//! it and before the point after it.

use std::time::Duration;

/// A resolved poll schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Growth of the wait per second without change, plus one (1 = fixed interval).
    pub multiplier: f64,
    /// Each point moves by up to ± this fraction of the interval before it (0..=0.5).
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            jitter: 0.1,
        }
    }
}

impl Schedule {
    /// A schedule with its values clamped: a multiplier below 1 is 1 (a fixed interval), a
    /// jitter outside 0..=0.5 is brought into it.
    pub fn new(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Schedule {
        Schedule {
            initial,
            max,
            multiplier: if multiplier.is_finite() {
                multiplier.max(1.0)
            } else {
                1.0
            },
            jitter: if jitter.is_finite() {
                jitter.clamp(0.0, 0.5)
            } else {
                0.0
            },
        }
    }

    fn initial_secs(&self) -> f64 {
        self.initial.as_secs_f64().max(0.001)
    }

    fn max_secs(&self) -> f64 {
        self.max.as_secs_f64().max(self.initial_secs())
    }

    fn growth(&self) -> f64 {
        (self.multiplier - 1.0).max(0.0)
    }

    /// Number of geometric points before the cap, and the time of the first capped point.
    fn cap(&self) -> (u64, f64) {
        let (a, m, g) = (self.initial_secs(), self.max_secs(), self.growth());
        if g < 1e-9 || a >= m {
            return (0, 0.0);
        }
        let threshold = (m - a) / g;
        let mult = self.multiplier;
        let k = ((threshold * g / a + 1.0).ln() / mult.ln()).ceil().max(0.0) as u64;
        (k, a * (mult.powi(k as i32) - 1.0) / g)
    }

    /// The un-jittered time of point `k`, in seconds since the last change.
    pub fn point(&self, k: u64) -> f64 {
        let (a, g) = (self.initial_secs(), self.growth());
        if g < 1e-9 {
            return k as f64 * a.min(self.max_secs());
        }
        let (cap_k, cap_t) = self.cap();
        if k <= cap_k {
            a * (self.multiplier.powi(k as i32) - 1.0) / g
        } else {
            cap_t + (k - cap_k) as f64 * self.max_secs()
        }
    }

    /// The wait before point `k + 1`, in seconds.
    pub fn interval(&self, k: u64) -> f64 {
        self.point(k + 1) - self.point(k)
    }

    /// The jittered time of point `k` (point 0, the change itself, is never moved).
    pub fn jittered_point(&self, k: u64, seed: u64) -> f64 {
        if k == 0 {
            return 0.0;
        }
        let spread = self.jitter.clamp(0.0, 0.5) * self.interval(k - 1);
        self.point(k) + spread * unit(seed, k)
    }

    /// The first un-jittered point index whose time is strictly after `after` seconds.
    fn first_point_after(&self, after: f64) -> u64 {
        if after < 0.0 {
            return 0;
        }
        let (a, g) = (self.initial_secs(), self.growth());
        let mut k = if g < 1e-9 {
            (after / a.min(self.max_secs())).floor() as u64
        } else {
            let (cap_k, cap_t) = self.cap();
            if after < cap_t {
                ((after * g / a + 1.0).ln() / self.multiplier.ln()).floor() as u64
            } else {
                cap_k + ((after - cap_t) / self.max_secs()).floor() as u64
            }
        };
        // Correct floating-point rounding either way.
        while k > 0 && self.point(k) > after {
            k -= 1;
        }
        while self.point(k) <= after {
            k += 1;
        }
        k
    }

    /// Seconds (since the last change) of the first scheduled poll strictly after `after`.
    pub fn next_after(&self, after: f64, seed: u64) -> f64 {
        let k = self.first_point_after(after);
        let lo = k.saturating_sub(1);
        (lo..=k + 1)
            .map(|i| self.jittered_point(i, seed))
            .filter(|t| *t > after)
            .fold(f64::INFINITY, f64::min)
    }

    /// How long after the latest end the progress allows the aimed poll is made: half the first
    /// wait.
    pub fn margin(&self) -> f64 {
        self.initial_secs() / 2.0
    }

    /// Seconds (since the last change) of the next poll after the last request at `after`: the
    /// backoff's next point ([`Schedule::next_after`]), or earlier, a poll aimed by `progress`
    /// ([`Progress::aim`]).
    ///
    /// An aimed poll is at least `initialInterval` after the last request and at least
    /// `initialInterval` before the backoff's next point (else that point, within
    /// `initialInterval` of the aim, serves as the aimed poll). No aim leaves the backoff as it
    /// is.
    pub fn next_after_aimed(&self, after: f64, seed: u64, progress: Option<Progress>) -> f64 {
        let backoff = self.next_after(after, seed);
        let Some(target) = progress.and_then(|p| p.aim(after, self)) else {
            return backoff;
        };
        let a = self.initial_secs();
        let aim = target.max(after + a);
        if aim + a <= backoff { aim } else { backoff }
    }

    /// How many polls the schedule makes in the first `elapsed` seconds, counting point 0.
    pub fn polls_within(&self, elapsed: f64, seed: u64) -> u64 {
        let mut count = 0;
        let mut t = -1.0;
        loop {
            t = self.next_after(t, seed);
            if t > elapsed {
                return count;
            }
            count += 1;
        }
    }
}

/// What the answers told of the rate an operation's progress moves at, if it moves steadily
/// from 0 % at its start (in percent per second). Every answer narrows it: one that shows `p` %
/// at `e` seconds says the rate is at least `p / e`; as upstreams report progress rounded down
/// to a step (10 %, 1 %), it also says the rate is below `(p + step) / e`. The step is not
/// told: the greatest common divisor of the values seen is that step or a multiple of it, so
/// the bound holds either way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressRate {
    /// The highest progress an answer reported, in percent.
    pub percent: i32,
    /// The greatest common divisor of the values reported.
    pub step: i32,
    /// The rate is at least this.
    pub at_least: f64,
    /// The rate is below this.
    pub below: f64,
    /// Whether the answers fit one rate. A stall, a jump or progress that goes back does not:
    /// nothing is aimed until the progress moves again, and the rate is learnt anew from there.
    pub steady: bool,
}

impl ProgressRate {
    /// What `known` becomes with an answer `elapsed` seconds after the start that reported
    /// `percent` (of a running operation: 100 % is not its end yet). 0 % says nothing.
    pub fn learn(known: Option<Self>, elapsed: f64, percent: i32) -> Option<Self> {
        let percent = percent.min(100);
        if !(elapsed > 0.0 && percent > 0) {
            return known;
        }
        let fresh = |step: i32| {
            let p = f64::from(percent);
            let next = f64::from(percent.saturating_add(step).min(100));
            ProgressRate {
                percent,
                step,
                at_least: p / elapsed,
                below: next / elapsed,
                steady: p < next,
            }
        };
        let Some(mut rate) = known else {
            return Some(fresh(percent));
        };
        if percent < rate.percent {
            rate.steady = false;
            return Some(rate);
        }
        rate.step = gcd(rate.step, percent);
        if !rate.steady {
            return Some(if percent > rate.percent {
                fresh(rate.step)
            } else {
                rate
            });
        }
        let now = fresh(rate.step);
        rate.percent = percent;
        rate.at_least = rate.at_least.max(now.at_least);
        rate.below = rate.below.min(now.below);
        rate.steady = rate.at_least < rate.below;
        Some(rate)
    }
}

fn gcd(a: i32, b: i32) -> i32 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    i32::try_from(a).unwrap_or(i32::MAX).max(1)
}

/// What the progress an operation reported says about its end, in seconds since the last change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// When the operation was at 0 %: its start (before the last change, so usually ≤ 0).
    pub zero_at: f64,
    /// The rate its answers allow.
    pub rate: ProgressRate,
}

impl Progress {
    /// The earliest and the latest end the rate allows: `None` when the answers fit no steady
    /// rate (or 100 % was reported without the end).
    pub fn end_window(&self) -> Option<(f64, f64)> {
        let r = &self.rate;
        if !(r.steady && r.percent < 100 && r.at_least > 0.0 && r.below > r.at_least) {
            return None;
        }
        Some((
            self.zero_at + 100.0 / r.below,
            self.zero_at + 100.0 / r.at_least,
        ))
        .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
    }

    /// When to poll next, after the last request at `after`, to see the end soon with few polls
    /// (the backoff still bounds every wait):
    /// - far from the end (its earliest time more than `maxInterval` away): not aimed;
    /// - the end known within `initialInterval`: `margin()` after the latest end;
    /// - else when the next step would be reached at the middle of the rates allowed: the
    ///   answer halves them, whatever it says;
    /// - once a poll came after the latest end without seeing it, the estimate is spent.
    pub fn aim(&self, after: f64, schedule: &Schedule) -> Option<f64> {
        let (earliest, latest) = self.end_window()?;
        if latest <= after || earliest > after + schedule.max_secs() {
            return None;
        }
        let close_after = latest + schedule.margin();
        if latest - earliest <= schedule.initial_secs() {
            return Some(close_after);
        }
        let r = &self.rate;
        let next = f64::from(r.percent.saturating_add(r.step).min(100));
        let probe = self.zero_at + 2.0 * next / (r.at_least + r.below);
        // A probe already made taught nothing more (no answer since): go for the end.
        Some(if probe > after { probe } else { close_after })
    }
}

/// A deterministic value in [-1, 1] for (seed, k) (splitmix64).
fn unit(seed: u64, k: u64) -> f64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// A stable seed from an object's uid.
pub fn seed_of(uid: &str) -> u64 {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    uid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(initial: f64, max: f64, multiplier: f64, jitter: f64) -> Schedule {
        Schedule {
            initial: Duration::from_secs_f64(initial),
            max: Duration::from_secs_f64(max),
            multiplier,
            jitter,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn points_follow_the_formula_until_the_cap_then_are_evenly_spaced() {
        // interval(t) = min(20, 1 + 1·t): 0, 1, 3, 7, 15, 31, 51, …
        let s = schedule(1.0, 20.0, 2.0, 0.0);
        let want = [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 51.0, 71.0];
        for (k, w) in want.iter().enumerate() {
            assert!(
                close(s.point(k as u64), *w),
                "point {k}: {} != {w}",
                s.point(k as u64)
            );
        }
        // Every step obeys the formula from the design.
        for k in 0..30 {
            let t = s.point(k);
            assert!(close(s.interval(k), (1.0 + t).min(20.0)), "k={k}");
        }
    }

    #[test]
    fn a_multiplier_of_one_is_a_fixed_interval() {
        let s = schedule(10.0, 60.0, 1.0, 0.0);
        assert!(close(s.point(3), 30.0));
        assert!(close(s.next_after(25.0, 0), 30.0));
    }

    #[test]
    fn initial_larger_than_max_uses_max() {
        let s = schedule(30.0, 10.0, 2.0, 0.0);
        assert!(close(s.point(2), 60.0));
    }

    #[test]
    fn next_after_is_strictly_after_and_is_a_schedule_point() {
        let s = schedule(2.0, 30.0, 1.5, 0.0);
        let points: Vec<f64> = (0..40).map(|k| s.point(k)).collect();
        for x in [0.0, 0.5, 2.0, 2.0001, 5.0, 100.0, 1000.0] {
            let next = s.next_after(x, 1);
            assert!(next > x);
            let expected = points.iter().copied().find(|p| *p > x).unwrap();
            assert!(close(next, expected), "after {x}: {next} vs {expected}");
        }
    }

    #[test]
    fn jitter_moves_points_within_bounds_deterministically_and_keeps_order() {
        let s = schedule(1.0, 10.0, 2.0, 0.5);
        for seed in [1u64, 42, seed_of("a-uid")] {
            let mut last = 0.0;
            for k in 1..50 {
                let p = s.jittered_point(k, seed);
                let spread = 0.5 * s.interval(k - 1);
                assert!((p - s.point(k)).abs() <= spread + 1e-9);
                assert!(p >= last, "order broken at {k}");
                assert_eq!(p, s.jittered_point(k, seed), "not deterministic");
                last = p;
            }
        }
        // Different objects get different offsets.
        assert_ne!(s.jittered_point(5, 1), s.jittered_point(5, 2));
    }

    #[test]
    fn counts_polls_in_a_window() {
        let s = schedule(1.0, 20.0, 2.0, 0.0);
        // Points 0, 1, 3, 7 fall within 7 s; 15 does not.
        assert_eq!(s.polls_within(7.0, 0), 4);
        assert_eq!(s.polls_within(14.9, 0), 4);
        assert_eq!(s.polls_within(15.0, 0), 5);
    }

    #[test]
    fn far_future_is_cheap_and_exact() {
        let s = schedule(5.0, 60.0, 1.5, 0.0);
        let after = 30.0 * 86_400.0;
        let next = s.next_after(after, 0);
        assert!(next > after && next - after <= 60.0 + 1e-6);
    }

    proptest::proptest! {
        #[test]
        fn next_after_always_moves_forward(
            initial in 0.01f64..100.0, max in 0.01f64..1000.0, mult in 1.0f64..10.0,
            jitter in 0.0f64..0.5, after in -10.0f64..1e6, seed in proptest::num::u64::ANY,
        ) {
            let s = schedule(initial, max, mult, jitter);
            let next = s.next_after(after, seed);
            proptest::prop_assert!(next > after);
            proptest::prop_assert!(next - after <= s.max_secs() * 2.0 + 1e-6 || after < 0.0);
        }
    }
}
