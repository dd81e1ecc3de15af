//! The poll schedule and deadlines of one operation: its own `spec.polling`, then its
//! provider's, then the operator's defaults. Also when the provider cannot be used: the
//! operation's own settings (its `timeout` above all) still hold.

use std::time::Duration;

use super::Policy;
use super::schedule::Schedule;
use crate::api::{PollingSpec, parse_duration};

/// What operations and providers leave unset (the operator's flags, resolved once).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    /// The poll schedule.
    pub schedule: Schedule,
    /// The deadline of an operation that sets none (`None`: no deadline).
    pub timeout: Option<Duration>,
    /// How long "not found" answers are taken for propagation delay.
    pub not_found_grace: Duration,
    /// The largest `status.result` copied into a status, in bytes of JSON.
    pub max_status_result_bytes: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            schedule: Schedule::default(),
            timeout: None,
            not_found_grace: super::decide::NOT_FOUND_GRACE,
            max_status_result_bytes: super::DEFAULT_MAX_STATUS_RESULT,
        }
    }
}

/// The policy of an operation with polling `own`, whose provider (when it can be read) has
/// polling `provider`.
pub fn policy(
    own: Option<&PollingSpec>,
    provider: Option<&PollingSpec>,
    defaults: &Defaults,
) -> Policy {
    let none = PollingSpec::default();
    let (own, provider) = (own.unwrap_or(&none), provider.unwrap_or(&none));
    let duration = |own: &Option<String>, theirs: &Option<String>| {
        own.as_deref()
            .or(theirs.as_deref())
            .and_then(|s| parse_duration(s).ok())
    };
    let d = defaults.schedule;
    Policy {
        schedule: Schedule::new(
            duration(&own.initial_interval, &provider.initial_interval).unwrap_or(d.initial),
            duration(&own.max_interval, &provider.max_interval).unwrap_or(d.max),
            own.multiplier
                .or(provider.multiplier)
                .unwrap_or(d.multiplier),
            own.jitter.or(provider.jitter).unwrap_or(d.jitter),
        ),
        timeout: duration(&own.timeout, &provider.timeout).or(defaults.timeout),
        not_found_grace: defaults.not_found_grace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polling(initial: Option<&str>, timeout: Option<&str>) -> PollingSpec {
        PollingSpec {
            initial_interval: initial.map(str::to_owned),
            timeout: timeout.map(str::to_owned),
            ..PollingSpec::default()
        }
    }

    #[test]
    fn the_operation_overrides_the_provider_which_overrides_the_defaults() {
        let defaults = Defaults {
            timeout: Some(Duration::from_secs(86_400)),
            ..Defaults::default()
        };
        let p = policy(
            Some(&polling(Some("2s"), None)),
            Some(&polling(Some("9s"), Some("1h"))),
            &defaults,
        );
        assert_eq!(p.schedule.initial, Duration::from_secs(2));
        assert_eq!(p.schedule.max, Duration::from_secs(60));
        assert_eq!(p.timeout, Some(Duration::from_secs(3600)));
        // Without a provider (it cannot be read), the operation's own settings still hold.
        let p = policy(Some(&polling(None, Some("30s"))), None, &defaults);
        assert_eq!(p.timeout, Some(Duration::from_secs(30)));
        let p = policy(None, None, &defaults);
        assert_eq!(p.timeout, Some(Duration::from_secs(86_400)));
        assert_eq!(p.schedule, Schedule::default());
    }

    #[test]
    fn out_of_range_values_are_clamped_in_one_place() {
        let wild = PollingSpec {
            multiplier: Some(0.2),
            jitter: Some(3.0),
            ..PollingSpec::default()
        };
        let p = policy(Some(&wild), None, &Defaults::default());
        assert_eq!(p.schedule.multiplier, 1.0);
        assert_eq!(p.schedule.jitter, 0.5);
    }

    #[test]
    fn policy_prefers_the_operation_then_the_provider_then_the_flags() {
        let op = PollingSpec {
            initial_interval: Some("2s".into()),
            ..Default::default()
        };
        let provider = PollingSpec {
            initial_interval: Some("9s".into()),
            max_interval: Some("30s".into()),
            timeout: Some("10m".into()),
            ..Default::default()
        };
        let p = policy(Some(&op), Some(&provider), &Defaults::default());
        assert_eq!(p.schedule.initial.as_secs(), 2);
        assert_eq!(p.schedule.max.as_secs(), 30);
        assert_eq!(p.schedule.multiplier, Schedule::default().multiplier);
        assert_eq!(p.timeout.map(|d| d.as_secs()), Some(600));
    }
}
