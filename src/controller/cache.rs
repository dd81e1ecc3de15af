//! Watch caches of what a reconcile reads besides its own object (the providers, the other
//! operations), so that a reconcile reads them from memory instead of asking the apiserver.
//!
//! Each cache is filled by a reflector whose stream also triggers the controller (see
//! `controller::run`); a reconcile waits until the cache has seen its first full list, so that
//! "not in the cache" means "does not exist", never "not listed yet".

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

/// The annotation `kubectl apply` keeps a copy of the applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A reflector store and whether its first list is complete.
#[derive(Clone)]
pub struct Cache<K>
where
    K: Lookup<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    synced: watch::Receiver<bool>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    /// A cache filled by `events` (a watcher's stream); returns the cache and the stream to
    /// drive, which passes every event on after the store has applied it.
    pub fn new<S>(
        events: S,
    ) -> (
        Self,
        impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    )
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        let (store, writer) = reflector::store();
        let (tx, synced) = watch::channel(false);
        // What the operator never reads is not kept: with thousands of objects, managedFields
        // and kubectl's last-applied copy of the spec are most of each object's memory.
        let events = events.modify(|object: &mut K| {
            object.managed_fields_mut().clear();
            object.annotations_mut().remove(LAST_APPLIED);
        });
        let stream = reflector::reflector(writer, events).inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                tx.send_replace(true);
            }
        });
        (Cache { store, synced }, stream)
    }

    /// The store, once its first list is complete.
    pub async fn synced(&self) -> &Store<K> {
        let mut synced = self.synced.clone();
        // Err: the stream is gone (shutting down); the store is as good as it gets.
        let _ = synced.wait_for(|s| *s).await;
        &self.store
    }

    /// The object named by `reference`, once the first list is complete.
    pub async fn get(&self, reference: &ObjectRef<K>) -> Option<std::sync::Arc<K>> {
        self.synced().await.get(reference)
    }

    /// The store as it is now (possibly before the first list).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}
