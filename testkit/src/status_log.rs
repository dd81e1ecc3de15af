//! Every status write the operator makes, seen through a watch on the namespace's operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use lro_operator::api::{LongRunningOperation, LongRunningOperationStatus};
use tokio::task::JoinHandle;

/// One status write.
#[derive(Clone, Debug)]
pub struct Write {
    /// When the watch delivered it, in unix ms (a little after the write).
    pub seen_at_ms: u64,
    /// The status written.
    pub status: LongRunningOperationStatus,
}

#[derive(Default)]
struct Seen {
    /// The last status seen, per object (from ADDED or MODIFIED).
    last: HashMap<String, Option<LongRunningOperationStatus>>,
    /// Per object, every status that a MODIFIED event changed, in order: one entry per write.
    writes: HashMap<String, Vec<Write>>,
    /// Why the watch ended early, if it did.
    broken: Option<String>,
}

/// Records status writes from the moment it is created until it is dropped.
pub struct StatusLog {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl StatusLog {
    /// Starts watching; returns once the watch is established.
    pub async fn start(api: Api<LongRunningOperation>) -> StatusLog {
        let list = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot list operations: {e}"));
        let version = list.metadata.resource_version.unwrap_or_default();
        let stream = api
            .watch(&WatchParams::default(), &version)
            .await
            .unwrap_or_else(|e| panic!("cannot watch operations: {e}"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut stream = stream.boxed();
            let end = loop {
                match stream.try_next().await {
                    Ok(Some(event)) => record(&sink, event),
                    Ok(None) => break "the watch ended".to_owned(),
                    Err(e) => break format!("the watch failed: {e}"),
                }
            };
            lock(&sink).broken = Some(end);
        });
        StatusLog { seen, task }
    }

    /// The status writes of `name`, in order.
    pub fn writes(&self, name: &str) -> Vec<Write> {
        let seen = lock(&self.seen);
        if let Some(why) = &seen.broken {
            panic!("the status log is incomplete: {why}");
        }
        seen.writes.get(name).cloned().unwrap_or_default()
    }
}

impl Drop for StatusLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record(seen: &Mutex<Seen>, event: WatchEvent<LongRunningOperation>) {
    let mut seen = lock(seen);
    match event {
        WatchEvent::Added(op) => {
            let name = op.metadata.name.clone().unwrap_or_default();
            seen.last.insert(name, op.status);
        }
        WatchEvent::Modified(op) => {
            let name = op.metadata.name.clone().unwrap_or_default();
            let previous = seen.last.insert(name.clone(), op.status.clone());
            if let Some(status) = op.status.filter(|s| previous.flatten().as_ref() != Some(s)) {
                let write = Write {
                    seen_at_ms: super::unix_ms(),
                    status,
                };
                seen.writes.entry(name).or_default().push(write);
            }
        }
        WatchEvent::Deleted(op) => {
            seen.last.remove(&op.metadata.name.unwrap_or_default());
        }
        WatchEvent::Bookmark(_) => {}
        WatchEvent::Error(status) => seen.broken = Some(format!("watch error: {status:?}")),
    }
}
