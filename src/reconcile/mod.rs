//! The reconcile decision (pure), the poll schedule (pure), and the conditions they imply.
//!
//! The controller observes (I/O), asks [`decide`] what the new status is and which one action
//! to take, acts (I/O), feeds the outcome back in as an [`Event`], and writes the status only
//! when it changed.

pub mod conditions;
mod decide;
mod limits;
mod memory;
pub mod outputs;
pub mod policy;
pub mod schedule;
pub mod step;
pub mod template;

pub use decide::{
    Action, Caps, DEPENDENCY_RECHECK, Decision, Event, Input, NOT_FOUND_GRACE, Notice,
    PROGRESS_MILESTONES, PROVIDER_RETRY, Policy, PollFailure, Prerequisites, decide,
};
pub use limits::{
    DEFAULT_MAX_STATUS_RESULT, MAX_STATUS_TEXT, RESULT_TRUNCATED, bound_text, cap_result, truncate,
};
pub use memory::{Fact, MAX_RETRY_AFTER, MIN_RETRY_AFTER, Memory};
pub use schedule::Schedule;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

/// `now` as a `metav1.Time` (whole seconds, as the API server stores it).
pub fn time(now: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// `now` as a `metav1.MicroTime` (whole microseconds, as the API server stores it).
pub fn micro_time(now: jiff::Timestamp) -> MicroTime {
    MicroTime(jiff::Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
}
