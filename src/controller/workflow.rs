//! Workflows of operations: what `spec.dependsOn` observes (dependency phases, cycles), the
//! templated start rendered from the dependencies' statuses, and which operations a change wakes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::api::{LongRunningOperation, Phase};
use crate::reconcile::{Prerequisites, template};

/// The most operations followed when looking for a cycle.
const MAX_GRAPH: usize = 1000;

/// Observes the dependencies of `op` (from the controller's cache of operations; a dependency
/// it does not hold, say in another shard, is read from the apiserver) and renders its templated
/// start once they have all succeeded. Only called before the operation starts. The flag is
/// true when a dependency came from the apiserver: its changes will not wake `op`.
pub async fn observe(
    api: &Api<LongRunningOperation>,
    store: &Store<LongRunningOperation>,
    op: &LongRunningOperation,
) -> Result<(Prerequisites, bool), kube::Error> {
    let mut pre = Prerequisites::default();
    let templated = op.spec.start.as_ref().is_some_and(template::is_templated);
    if op.spec.depends_on.is_empty() && !templated {
        return Ok((pre, false));
    }
    let namespace = op.namespace();
    let mut all: Vec<Arc<LongRunningOperation>> = if op.spec.depends_on.is_empty() {
        Vec::new()
    } else {
        store.state_filter(|o| o.namespace() == namespace)
    };
    let mut uncached = false;
    for dep in &op.spec.depends_on {
        if !all.iter().any(|o| o.name_any() == *dep)
            && let Some(o) = api.get_opt(dep).await?
        {
            all.push(Arc::new(o));
            uncached = true;
        }
    }
    let by_name: BTreeMap<String, &LongRunningOperation> =
        all.iter().map(|o| (o.name_any(), o.as_ref())).collect();
    let name = op.name_any();
    pre.cycle = find_cycle(&name, |n| {
        if n == name {
            op.spec.depends_on.clone()
        } else {
            by_name
                .get(n)
                .map(|o| o.spec.depends_on.clone())
                .unwrap_or_default()
        }
    });
    let mut deps = BTreeMap::new();
    for dep in &op.spec.depends_on {
        if let Some(o) = by_name.get(dep) {
            let status = o.status.clone().unwrap_or_default();
            pre.dependencies.insert(dep.clone(), status.phase);
            deps.insert(
                dep.clone(),
                serde_json::to_value(&status).unwrap_or(Value::Null),
            );
        }
    }
    let ready = pre.cycle.is_none()
        && op
            .spec
            .depends_on
            .iter()
            .all(|d| pre.dependencies.get(d) == Some(&Some(Phase::Succeeded)));
    if let (true, true, Some(start)) = (templated, ready, &op.spec.start) {
        let vars = template::variables(&deps, &self_json(op));
        pre.rendered = Some(template::render(start, &vars));
    }
    Ok((pre, uncached))
}

/// `self` in templates: the metadata a user wrote, and the spec.
fn self_json(op: &LongRunningOperation) -> Value {
    json!({
        "metadata": {
            "name": op.name_any(),
            "namespace": op.namespace(),
            "labels": op.labels(),
            "annotations": op.annotations(),
        },
        "spec": serde_json::to_value(&op.spec).unwrap_or(Value::Null),
    })
}

/// A cycle through `start` in the graph `edges` (name → the names it depends on): the names along
/// it, from `start` back to `start`. Depth-first, over at most [`MAX_GRAPH`] names.
pub fn find_cycle(start: &str, edges: impl Fn(&str) -> Vec<String>) -> Option<Vec<String>> {
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    let mut stack = vec![edges(start).into_iter()];
    while let Some(next) = stack.last_mut() {
        match next.next() {
            Some(n) if n == start => {
                path.push(n);
                return Some(path);
            }
            Some(n) => {
                if seen.len() < MAX_GRAPH && seen.insert(n.clone()) {
                    stack.push(edges(&n).into_iter());
                    path.push(n);
                }
            }
            None => {
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

/// The operations in `op`'s namespace that depend on it (from the controller's cache), to be
/// reconciled when it changes: a dependency that succeeds, fails or appears wakes them at once.
pub fn dependents(
    store: &Store<LongRunningOperation>,
    op: &LongRunningOperation,
) -> Vec<LongRunningOperation> {
    let name = op.name_any();
    let namespace = op.namespace();
    // Called on every change of every operation: `state_filter` clones only the matches.
    store
        .state_filter(|o| {
            o.spec.depends_on.contains(&name)
                && o.namespace() == namespace
                && o.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_none_or(|p| p == Phase::Pending)
        })
        .into_iter()
        .map(|o| (*o).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> impl Fn(&str) -> Vec<String> {
        let map: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        move |n| map.get(n).cloned().unwrap_or_default()
    }

    #[test]
    fn cycles_are_found_from_every_member() {
        let g = graph(&[
            ("a", &["b"]),
            ("b", &["c", "x"]),
            ("c", &["a"]),
            ("d", &["a"]),
        ]);
        assert_eq!(
            find_cycle("a", &g),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(
            find_cycle("c", &g),
            Some(vec!["c".into(), "a".into(), "b".into(), "c".into()])
        );
        // Depends on a cycle, but is not in it.
        assert_eq!(find_cycle("d", &g), None);
        assert_eq!(
            find_cycle("a", graph(&[("a", &["a"])])),
            Some(vec!["a".into(), "a".into()])
        );
        // A diamond is not a cycle.
        let diamond = graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"])]);
        assert_eq!(find_cycle("a", diamond), None);
    }
}
