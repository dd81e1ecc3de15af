//! The simulator's shared state: operations, their scripts, counters and the request log.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::script::{Outcome, Script};

/// How many `/v1` requests the request log keeps (oldest dropped first).
pub const MAX_REQUEST_LOG: usize = 10_000;
/// How many GET times are kept per operation (oldest dropped first).
pub const MAX_GET_TIMES: usize = 10_000;

/// Shared, cheaply clonable simulator state; `Default` starts empty.
#[derive(Clone, Default)]
pub struct SimState {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    clock: Clock,
    store: Mutex<Store>,
}

/// Unix milliseconds derived from one wall-clock reading plus the tokio monotonic clock, so
/// that all times are consistent with each other (and follow a paused tokio clock in tests).
struct Clock {
    base_unix_ms: u64,
    base: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            base_unix_ms,
            base: tokio::time::Instant::now(),
        }
    }
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState").finish_non_exhaustive()
    }
}

impl SimState {
    /// The current time in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed =
            u64::try_from(self.inner.clock.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.clock.base_unix_ms.saturating_add(elapsed)
    }

    /// Locks the store (a poisoned lock is recovered: the store stays usable).
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An outcome forced by cancel or the admin `finish` call, at a time the op was not yet done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Forced {
    pub outcome: Outcome,
    pub at_ms: u64,
}

/// One simulated operation.
#[derive(Debug)]
pub(super) struct OpRecord {
    pub name: String,
    pub resource: String,
    pub uid: String,
    pub spec: Value,
    pub script: Script,
    pub created_at_ms: u64,
    pub request_id: Option<String>,
    pub forced: Option<Forced>,
    pub gets: u64,
    pub cancels: u64,
    pub get_times_ms: VecDeque<u64>,
}

impl OpRecord {
    /// When the operation is (or will be) done, in unix ms.
    pub fn done_at_ms(&self) -> u64 {
        match self.forced {
            Some(f) => f.at_ms,
            None => self.created_at_ms.saturating_add(self.script.duration_ms()),
        }
    }

    /// Whether the operation is done at `now_ms`.
    pub fn is_done(&self, now_ms: u64) -> bool {
        now_ms >= self.done_at_ms()
    }

    /// The outcome the operation has (or will have) once done.
    pub fn outcome(&self) -> Outcome {
        self.forced.map_or(self.script.outcome, |f| f.outcome)
    }

    /// Forces `outcome` at `now_ms` unless already done; returns whether it changed anything.
    pub fn force(&mut self, outcome: Outcome, now_ms: u64) -> bool {
        if self.is_done(now_ms) {
            return false;
        }
        self.forced = Some(Forced {
            outcome,
            at_ms: now_ms,
        });
        true
    }

    /// Records one GET of this operation.
    pub fn record_get(&mut self, now_ms: u64) {
        self.gets += 1;
        if self.get_times_ms.len() >= MAX_GET_TIMES {
            self.get_times_ms.pop_front();
        }
        self.get_times_ms.push_back(now_ms);
    }
}

/// One logged `/v1` request; `status` is `None` while in flight.
#[derive(Debug)]
pub(super) struct RequestEntry {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub at_ms: u64,
    pub status: Option<u16>,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(super) struct Store {
    ops: Vec<OpRecord>,
    by_name: HashMap<String, usize>,
    by_request_id: HashMap<String, usize>,
    /// Start requests seen, by body.
    start_attempts: HashMap<String, u32>,
    pub creates: u64,
    pub duplicate_creates: u64,
    pub rejected_creates: u64,
    /// List-operations requests of every surface (Google's `ListOperations`, Redpanda's,
    /// Compute's, Cloud Control's `ListResourceRequests`), answered or refused.
    pub lists: u64,
    /// When each of them came (ms since the simulator started).
    list_times_ms: Vec<u64>,
    total_requests: u64,
    next_request_seq: u64,
    requests: VecDeque<RequestEntry>,
}

impl Store {
    /// Counts a list request that came at `now_ms`.
    pub fn count_list(&mut self, now_ms: u64) {
        self.lists += 1;
        self.list_times_ms.push(now_ms);
    }

    /// All operations in creation order.
    pub fn ops(&self) -> &[OpRecord] {
        &self.ops
    }

    /// The operation named `name` (e.g. `operations/op-1`).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut OpRecord> {
        let idx = *self.by_name.get(name)?;
        self.ops.get_mut(idx)
    }

    /// The operation created earlier with `request_id`.
    pub fn by_request_id_mut(&mut self, request_id: &str) -> Option<&mut OpRecord> {
        let idx = *self.by_request_id.get(request_id)?;
        self.ops.get_mut(idx)
    }

    /// Makes `alias` (the name an API shows, e.g. Service Management's
    /// `operations/rollouts.svc:r1`) another name of the operation named `name`.
    pub fn add_alias(&mut self, alias: String, name: &str) {
        if let Some(&idx) = self.by_name.get(name) {
            self.by_name.insert(alias, idx);
        }
    }

    /// Counts a start request with this `key` (its body, as sent): the 1-based attempt number,
    /// for the script's `startFaults`.
    pub fn start_attempt(&mut self, key: &str) -> u32 {
        let n = self.start_attempts.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Creates an operation. `resource` maps the new sequence number to the resource name.
    pub fn insert(
        &mut self,
        resource: impl FnOnce(u64) -> String,
        spec: Value,
        script: Script,
        request_id: Option<String>,
        now_ms: u64,
    ) -> &mut OpRecord {
        let seq = self.ops.len() as u64 + 1;
        let name = format!("operations/op-{seq}");
        let idx = self.ops.len();
        self.by_name.insert(name.clone(), idx);
        if let Some(id) = &request_id {
            self.by_request_id.insert(id.clone(), idx);
        }
        self.ops.push(OpRecord {
            name,
            resource: resource(seq),
            uid: uuid_like(seq),
            spec,
            script,
            created_at_ms: now_ms,
            request_id,
            forced: None,
            gets: 0,
            cancels: 0,
            get_times_ms: VecDeque::new(),
        });
        &mut self.ops[idx]
    }

    /// Logs the start of a `/v1` request and returns its log sequence number.
    pub fn begin_request(
        &mut self,
        method: String,
        path: String,
        query: Option<String>,
        now_ms: u64,
    ) -> u64 {
        self.total_requests += 1;
        self.next_request_seq += 1;
        if self.requests.len() >= MAX_REQUEST_LOG {
            self.requests.pop_front();
        }
        self.requests.push_back(RequestEntry {
            seq: self.next_request_seq,
            method,
            path,
            query,
            at_ms: now_ms,
            status: None,
        });
        self.next_request_seq
    }

    /// Records the response status of the logged request `seq` (if still in the log).
    pub fn end_request(&mut self, seq: u64, status: u16) {
        if let Some(entry) = self.requests.iter_mut().rev().find(|e| e.seq == seq) {
            entry.status = Some(status);
        }
    }

    /// The `GET /sim/stats` document as of `now_ms`.
    pub fn stats_json(&self, now_ms: u64) -> Value {
        let operations: Map<String, Value> = self
            .ops
            .iter()
            .map(|op| {
                let done_at = op.is_done(now_ms).then(|| op.done_at_ms());
                let stats = json!({
                    "gets": op.gets,
                    "cancels": op.cancels,
                    "createdAtMs": op.created_at_ms,
                    "doneAtMs": done_at,
                    "requestId": op.request_id,
                    "outcome": op.outcome().as_str(),
                    "getTimesMs": op.get_times_ms,
                    "faults": op.script.faults.stats_json(),
                });
                (op.name.clone(), stats)
            })
            .collect();
        let requests: Vec<Value> = self
            .requests
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "atMs": r.at_ms,
                    "status": r.status,
                })
            })
            .collect();
        json!({
            "creates": self.creates,
            "duplicateCreates": self.duplicate_creates,
            "rejectedCreates": self.rejected_creates,
            "lists": self.lists,
            "listTimesMs": self.list_times_ms,
            "totalRequests": self.total_requests,
            "operations": operations,
            "requests": requests,
        })
    }
}

/// A deterministic UUID-shaped string derived from `seq` (splitmix64).
fn uuid_like(seq: u64) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(seq);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_like_is_deterministic_and_shaped() {
        let u = uuid_like(1);
        assert_eq!(u, uuid_like(1));
        assert_ne!(u, uuid_like(2));
        let lens: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12]);
    }

    #[test]
    fn forced_outcome_only_before_done() {
        let mut store = Store::default();
        let script = Script {
            duration_seconds: 1.0,
            ..Script::default()
        };
        let op = store.insert(|n| format!("r/{n}"), json!({}), script, None, 1000);
        assert_eq!(op.done_at_ms(), 2000);
        assert!(!op.force(Outcome::Error, 2000));
        assert!(op.force(Outcome::Cancelled, 1500));
        assert_eq!((op.done_at_ms(), op.outcome()), (1500, Outcome::Cancelled));
        assert!(!op.force(Outcome::Error, 1600));
    }
}
