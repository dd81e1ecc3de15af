//! What the upstream last said of each operation handle, shared by every object that tracks it:
//! the pages of a provider's list sweeps (`sweeps`), and every poll's answer (so that two
//! objects tracking one upstream operation share one poll).
//!
//! Keyed by provider (its metrics label, `<namespace>/<name>` or `<name>`) and the handle's list
//! key (`Dialect::list_key`: a Google operation name, a Redpanda id), or its poll path for
//! protocols that do not list.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::protocol::Observation;

/// What the upstream said of one handle, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The observation.
    pub observation: Observation,
    /// When the upstream answered.
    pub at: Timestamp,
}

/// What a provider's sweeps found of one handle.
#[derive(Clone, Debug, PartialEq)]
pub enum Swept {
    /// In the list, with this observation.
    Listed(Box<Seen>),
    /// Not in the list of the sweep that ended at this time: it must be read by itself.
    Absent(Timestamp),
}

/// The sweeps of one provider.
#[derive(Clone, Debug, Default)]
pub struct SweepState {
    /// When the first sweep of this process began (a provider warms up until one completes).
    pub first_started: Option<Instant>,
    /// When the last complete sweep ended.
    pub completed_at: Option<Instant>,
    /// Why the upstream refuses the list, when it does (its operations are polled one by one).
    pub refused: Option<String>,
    /// When that refusal was learnt (listing is tried again after a while).
    pub refused_at: Option<Instant>,
    /// Sweeps that failed in a row.
    pub failures: u32,
}

/// Everything shared.
#[derive(Debug, Default)]
pub struct Observations {
    seen: Mutex<HashMap<(String, String), Seen>>,
    /// By provider, then by key: one provider's thousands of entries share its name.
    swept: Mutex<HashMap<String, HashMap<String, Swept>>>,
    sweeps: Mutex<HashMap<String, SweepState>>,
}

/// How long a poll's answer stands for every object tracking the same handle.
pub const SHARED_FOR: Duration = Duration::from_secs(1);

impl Observations {
    /// Records a poll's answer for `key` of `provider`.
    pub fn polled(&self, provider: &str, key: &str, seen: Seen) {
        let mut map = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: answers older than a minute are of no use to anyone.
        if map.len() > 4096 {
            let horizon = seen.at - jiff::SignedDuration::from_secs(60);
            map.retain(|_, s| s.at > horizon);
        }
        map.insert((provider.to_owned(), key.to_owned()), seen);
    }

    /// A poll's answer for `key` of `provider` given less than `within` before `now`.
    pub fn recent_poll(
        &self,
        provider: &str,
        key: &str,
        now: Timestamp,
        within: Duration,
    ) -> Option<Seen> {
        let map = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = map.get(&(provider.to_owned(), key.to_owned()))?;
        let age = now.duration_since(seen.at);
        (age >= jiff::SignedDuration::ZERO && age.unsigned_abs() < within).then(|| seen.clone())
    }

    /// Records what a complete sweep of `provider` found: `listed` for the handles in the list,
    /// and every other key of `in_flight` as absent. Returns the keys whose news their objects
    /// have not had yet (changed, first seen, or newly absent).
    pub fn swept<V>(
        &self,
        provider: &str,
        in_flight: &HashMap<String, V>,
        mut listed: HashMap<String, Observation>,
        at: Timestamp,
    ) -> Vec<String> {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if !swept.contains_key(provider) {
            swept.insert(provider.to_owned(), HashMap::new());
        }
        let Some(swept) = swept.get_mut(provider) else {
            return Vec::new();
        };
        // Handles no longer in flight are forgotten.
        swept.retain(|k, _| in_flight.contains_key(k));
        let mut news = Vec::new();
        for key in in_flight.keys() {
            // Moved, not copied: a sweep of thousands holds each entry once.
            let found = match listed.remove(key) {
                Some(observation) => Swept::Listed(Box::new(Seen { observation, at })),
                None => Swept::Absent(at),
            };
            let changed = match (swept.get(key), &found) {
                (Some(Swept::Listed(old)), Swept::Listed(new)) => {
                    old.observation != new.observation
                }
                (Some(Swept::Absent(_)), Swept::Absent(_)) => false,
                _ => true,
            };
            // An unchanged entry keeps its time: its object learnt it then.
            if changed {
                news.push(key.clone());
                swept.insert(key.clone(), found);
            }
        }
        news
    }

    /// What the sweeps of `provider` last found of `key`.
    pub fn swept_of(&self, provider: &str, key: &str) -> Option<Swept> {
        let swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.get(provider)?.get(key).cloned()
    }

    /// The sweep state of `provider`, changed by `change`.
    pub fn sweep<T>(&self, provider: &str, change: impl FnOnce(&mut SweepState) -> T) -> T {
        let mut sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        change(sweeps.entry(provider.to_owned()).or_default())
    }

    /// Whether sweeps cover `provider`'s operations now: the list is not refused, and a sweep
    /// completed within three intervals (or the first one is under way for less than that).
    pub fn covered(&self, provider: &str, interval: Duration, now: Instant) -> bool {
        let sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = sweeps.get(provider) else {
            // No sweep yet: the sweeper starts within a second; wait for it.
            return true;
        };
        if state.refused.is_some() {
            return false;
        }
        let fresh = |at: Instant| now.saturating_duration_since(at) <= interval * 3;
        match state.completed_at {
            Some(at) => fresh(at),
            None => state.first_started.is_none_or(fresh),
        }
    }

    /// Why `provider`'s list is refused, if it is.
    pub fn refused(&self, provider: &str) -> Option<String> {
        let sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        sweeps.get(provider).and_then(|s| s.refused.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UpstreamState;

    fn obs(progress: i32) -> Observation {
        Observation {
            state: UpstreamState::Running,
            progress: Some(progress),
            ..Observation::default()
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn a_sweep_reports_only_what_changed_and_what_went_missing() {
        let o = Observations::default();
        let keys = |keys: &[&str]| -> HashMap<String, ()> {
            keys.iter().map(|k| ((*k).to_owned(), ())).collect()
        };
        let in_flight = keys(&["a", "b", "c"]);
        let listed = |items: &[(&str, i32)]| {
            items
                .iter()
                .map(|(k, p)| ((*k).to_owned(), obs(*p)))
                .collect::<HashMap<_, _>>()
        };
        let mut news = o.swept("p", &in_flight, listed(&[("a", 10), ("b", 10)]), t(0));
        news.sort();
        assert_eq!(news, ["a", "b", "c"], "everything is news at first");
        assert_eq!(o.swept_of("p", "c"), Some(Swept::Absent(t(0))));
        let news = o.swept("p", &in_flight, listed(&[("a", 10), ("b", 20)]), t(5));
        assert_eq!(news, ["b"], "a unchanged, c still absent");
        // An unchanged entry keeps the time it was first seen.
        assert!(matches!(o.swept_of("p", "a"), Some(Swept::Listed(s)) if s.at == t(0)));
        assert!(matches!(o.swept_of("p", "b"), Some(Swept::Listed(s)) if s.at == t(5)));
        // A handle no longer in flight is forgotten; another provider's are untouched.
        o.swept("q", &in_flight, listed(&[("a", 1)]), t(5));
        let fewer = keys(&["a"]);
        o.swept("p", &fewer, listed(&[("a", 10)]), t(10));
        assert_eq!(o.swept_of("p", "b"), None);
        assert!(o.swept_of("q", "b").is_some());
    }

    #[test]
    fn coverage_follows_the_sweeps_and_a_refusal_ends_it() {
        let o = Observations::default();
        let now = Instant::now();
        let interval = Duration::from_secs(5);
        assert!(o.covered("p", interval, now), "waits for the first sweep");
        o.sweep("p", |s| s.first_started = Some(now));
        assert!(o.covered("p", interval, now + Duration::from_secs(10)));
        assert!(
            !o.covered("p", interval, now + Duration::from_secs(16)),
            "stuck"
        );
        o.sweep("p", |s| {
            s.completed_at = Some(now + Duration::from_secs(16))
        });
        assert!(o.covered("p", interval, now + Duration::from_secs(20)));
        o.sweep("p", |s| s.refused = Some("HTTP 403".into()));
        assert!(!o.covered("p", interval, now + Duration::from_secs(20)));
        assert_eq!(o.refused("p").as_deref(), Some("HTTP 403"));
    }

    #[test]
    fn a_poll_answer_stands_for_a_second() {
        let o = Observations::default();
        let seen = Seen {
            observation: obs(50),
            at: t(0),
        };
        o.polled("p", "operations/1", seen.clone());
        assert_eq!(
            o.recent_poll("p", "operations/1", t(0), SHARED_FOR),
            Some(seen)
        );
        assert_eq!(o.recent_poll("p", "operations/1", t(2), SHARED_FOR), None);
        assert_eq!(o.recent_poll("p", "operations/2", t(0), SHARED_FOR), None);
    }
}
