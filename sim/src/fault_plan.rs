//! The fault plan of a simulated operation: what its requests get instead of the normal answer.
//! Pure data (no I/O); [`crate::faults`] serves it. See that module for the kinds.

use axum::http::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};

/// The longest `hang` accepted.
const MAX_HANG_MS: u64 = 600_000;

fn one() -> u32 {
    1
}

/// One scripted fault (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Fault {
    /// Answer normally.
    Ok {
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Answer with an HTTP error status, optionally with `Retry-After` hints.
    Status {
        /// The HTTP status (400..=599).
        status: u16,
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
        /// A verbatim `Retry-After` value.
        #[serde(default)]
        retry_after: Option<String>,
        /// Send `Retry-After` as an HTTP-date `retry_after_seconds` from now.
        #[serde(default)]
        retry_after_date: bool,
        /// Seconds from now of the `Retry-After` HTTP-date.
        #[serde(default)]
        retry_after_seconds: u64,
        /// A `retry-after-ms` value.
        #[serde(default)]
        retry_after_ms: Option<u64>,
        /// The error envelope's message (default: `simulated fault: HTTP <status>`).
        #[serde(default)]
        message: Option<String>,
    },
    /// Close the connection without an answer.
    Reset {
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Answer normally after a delay.
    Hang {
        /// The delay in milliseconds.
        ms: u64,
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Answer `200` with a body that is not JSON.
    NotJson {
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Answer `200` with a streamed body of `bytes` bytes.
    HugeBody {
        /// The body's size.
        bytes: u64,
        /// Send `Content-Length` (otherwise the body is chunked and its size unknown up front).
        #[serde(default)]
        announce_length: bool,
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Answer `404` as for an unknown operation.
    NotFound {
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
    /// Once the operation is done, answer as if it were not.
    Undone {
        /// How many GETs.
        #[serde(default = "one")]
        times: u32,
    },
}

impl Fault {
    /// The wire name of the fault's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Ok { .. } => "ok",
            Fault::Status { .. } => "status",
            Fault::Reset { .. } => "reset",
            Fault::Hang { .. } => "hang",
            Fault::NotJson { .. } => "notJson",
            Fault::HugeBody { .. } => "hugeBody",
            Fault::NotFound { .. } => "notFound",
            Fault::Undone { .. } => "undone",
        }
    }

    /// How many GETs the fault applies to.
    pub fn times(&self) -> u32 {
        match self {
            Fault::Ok { times }
            | Fault::Status { times, .. }
            | Fault::Reset { times }
            | Fault::Hang { times, .. }
            | Fault::NotJson { times }
            | Fault::HugeBody { times, .. }
            | Fault::NotFound { times }
            | Fault::Undone { times } => *times,
        }
    }

    /// Checks the fault's own numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.times() == 0 {
            return Err(format!("fault {}: times must be at least 1", self.kind()));
        }
        match self {
            Fault::Status { status, .. } if !(400..=599).contains(status) => Err(format!(
                "fault status: status must be within 400..=599, got {status}"
            )),
            Fault::Status {
                retry_after: Some(value),
                ..
            } if HeaderValue::from_str(value).is_err() => Err(format!(
                "fault status: retryAfter {value:?} is not a valid header value"
            )),
            Fault::Hang { ms, .. } if *ms > MAX_HANG_MS => Err(format!(
                "fault hang: ms must be at most {MAX_HANG_MS}, got {ms}"
            )),
            _ => Ok(()),
        }
    }
}

/// A faulty answer that was served.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    /// The 1-based number of the GET of the operation.
    get: u64,
    /// The fault's kind.
    kind: &'static str,
}

/// An operation's fault list and how far its GETs have used it up.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "Vec<Fault>")]
pub struct Faults {
    pub(crate) plan: Vec<Fault>,
    /// Index of the fault the next GET takes.
    cursor: usize,
    /// How many GETs have taken the fault at `cursor`.
    used: u32,
    /// A GET was answered, normally, that the operation is done.
    told_done: bool,
    served: Vec<Served>,
}

impl TryFrom<Vec<Fault>> for Faults {
    type Error = String;

    fn try_from(plan: Vec<Fault>) -> Result<Self, String> {
        plan.iter().try_for_each(Fault::validate)?;
        Ok(Faults {
            plan,
            ..Faults::default()
        })
    }
}

impl Faults {
    /// The fault for GET number `get` (1-based) of an operation that is (not) `done`, if any,
    /// and uses it up. `None`: answer normally.
    pub fn next(&mut self, get: u64, done: bool) -> Option<Fault> {
        let normal = |faults: &mut Faults| {
            faults.told_done |= done;
            None
        };
        let Some(fault) = self.plan.get(self.cursor) else {
            return normal(self);
        };
        if matches!(fault, Fault::Undone { .. }) && !self.told_done {
            return normal(self);
        }
        let fault = fault.clone();
        self.used += 1;
        if self.used >= fault.times() {
            self.cursor += 1;
            self.used = 0;
        }
        if matches!(fault, Fault::Ok { .. }) {
            return normal(self);
        }
        self.served.push(Served {
            get,
            kind: fault.kind(),
        });
        Some(fault)
    }

    /// How many faulty answers (not counting `ok`) are still to come.
    pub fn pending(&self) -> u64 {
        let mut pending = 0u64;
        for (i, fault) in self.plan.iter().enumerate().skip(self.cursor) {
            if matches!(fault, Fault::Ok { .. }) {
                continue;
            }
            let used = if i == self.cursor { self.used } else { 0 };
            pending += u64::from(fault.times().saturating_sub(used));
        }
        pending
    }

    /// The `faults` object of the operation's stats.
    pub fn stats_json(&self) -> Value {
        let served: Vec<Value> = self
            .served
            .iter()
            .map(|s| json!({"get": s.get, "kind": s.kind}))
            .collect();
        json!({"served": served, "pending": self.pending()})
    }
}

/// The fault, if any, of the `attempt`-th (1-based) start request with the same body, from a
/// plan of start faults; `Ok` entries and a plan used up mean a normal answer.
pub fn start_fault(plan: &[Fault], attempt: u32) -> Option<Fault> {
    let mut seen = 0u32;
    for fault in plan {
        seen = seen.saturating_add(fault.times());
        if attempt <= seen {
            return (!matches!(fault, Fault::Ok { .. })).then(|| fault.clone());
        }
    }
    None
}
