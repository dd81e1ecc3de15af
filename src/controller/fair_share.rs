//! Each namespace's share of the upstream requests in flight.
//!
//! A reconcile holds one of the controller's workers while its upstream request is in flight
//! (up to `--request-timeout`). Without a cap, one namespace whose upstream hangs, with enough
//! operations, would hold every worker, and every other namespace's polls would wait. So a
//! namespace has at most `--namespace-concurrency` requests in flight; a reconcile over that
//! sends nothing, frees its worker at once and comes back shortly (`Outcome::Busy`).

use std::collections::HashMap;
use std::sync::Mutex;

/// The requests in flight, by namespace, and the cap of each.
#[derive(Debug)]
pub struct FairShare {
    per_namespace: usize,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// One request's place in its namespace's share; given back when dropped.
#[derive(Debug)]
pub struct Seat<'a> {
    share: &'a FairShare,
    namespace: String,
}

impl FairShare {
    /// At most `per_namespace` requests in flight per namespace (at least 1).
    pub fn new(per_namespace: usize) -> Self {
        FairShare {
            per_namespace: per_namespace.max(1),
            in_flight: Mutex::default(),
        }
    }

    /// A seat for one request of `namespace`, or `None` when its share is in use.
    pub fn take(&self, namespace: &str) -> Option<Seat<'_>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let used = in_flight.entry(namespace.to_owned()).or_default();
        if *used >= self.per_namespace {
            return None;
        }
        *used += 1;
        Some(Seat {
            share: self,
            namespace: namespace.to_owned(),
        })
    }

    /// Requests of `namespace` in flight now.
    pub fn in_flight(&self, namespace: &str) -> usize {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.get(namespace).copied().unwrap_or(0)
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .share
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(used) = in_flight.get_mut(&self.namespace) {
            *used = used.saturating_sub(1);
            // Namespaces come and go: no entry outlives its last request.
            if *used == 0 {
                in_flight.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_over_its_share_waits_and_others_do_not() {
        let share = FairShare::new(2);
        let a1 = share.take("a").expect("first");
        let a2 = share.take("a").expect("second");
        assert!(share.take("a").is_none(), "a's share is in use");
        let b = share.take("b").expect("b is not held back by a");
        assert_eq!((share.in_flight("a"), share.in_flight("b")), (2, 1));
        drop(a1);
        let a3 = share.take("a").expect("a seat was given back");
        drop((a2, a3, b));
        assert_eq!(share.in_flight("a"), 0);
        assert!(share.in_flight.lock().unwrap().is_empty(), "no entry left");
        assert!(FairShare::new(0).take("c").is_some(), "at least one");
    }
}
