//! Finding the provider an operation names, and the operations a provider change concerns.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::provider_registry::Resolved;
use super::{Caches, short};
use crate::api::{ClusterOperationProvider, LongRunningOperation, OperationProvider, ProviderKind};

/// A provider whose change may concern some operations.
pub enum Target<'a> {
    /// A namespaced provider.
    Namespaced(&'a OperationProvider),
    /// A cluster provider.
    Cluster(&'a ClusterOperationProvider),
}

/// The operations (from the controller's cache) that use `target`.
pub fn users_of(
    store: &Store<LongRunningOperation>,
    target: Target<'_>,
) -> Vec<ObjectRef<LongRunningOperation>> {
    let (kind, name, namespace) = match target {
        Target::Namespaced(p) => (ProviderKind::OperationProvider, p.name_any(), p.namespace()),
        Target::Cluster(p) => (ProviderKind::ClusterOperationProvider, p.name_any(), None),
    };
    store
        .state_filter(|op| {
            op.spec.provider_ref.kind == kind
                && op.spec.provider_ref.name == name
                && (namespace.is_none() || op.namespace() == namespace)
                && !op
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
        })
        .iter()
        .map(|op| ObjectRef::from_obj(op.as_ref()))
        .collect()
}

/// Looks up the provider of `op` in the watch caches; `Err` holds a message for the user.
///
/// Only a `ClusterOperationProvider` whose `spec.allowedNamespaces` selects by label costs a
/// request (the namespace's labels).
pub async fn resolve(
    client: &Client,
    caches: &Caches,
    op: &LongRunningOperation,
) -> Result<Resolved, String> {
    let reference = &op.spec.provider_ref;
    let namespace = op.namespace().unwrap_or_default();
    match reference.kind {
        ProviderKind::OperationProvider => {
            let key = ObjectRef::new(&reference.name).within(&namespace);
            match caches.providers.get(&key).await {
                Some(p) => Ok(namespaced(&p)),
                None => Err(format!(
                    "OperationProvider {:?} not found in namespace {namespace:?} (an operation can only use a provider of its own namespace, or a ClusterOperationProvider)",
                    reference.name
                )),
            }
        }
        ProviderKind::ClusterOperationProvider => {
            let key = ObjectRef::new(&reference.name);
            let Some(provider) = caches.cluster_providers.get(&key).await else {
                return Err(format!(
                    "ClusterOperationProvider {:?} not found",
                    reference.name
                ));
            };
            // Closed by default: an admin names the namespaces (`{}` admits every one).
            let Some(selector) = &provider.spec.allowed_namespaces else {
                return Err(format!(
                    "ClusterOperationProvider {:?} admits no namespace yet (a cluster admin sets its spec.allowedNamespaces)",
                    reference.name
                ));
            };
            if !admits_every_namespace(selector) {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let labels = match namespaces.get_opt(&namespace).await {
                    Ok(Some(ns)) => ns.labels().clone(),
                    Ok(None) => Default::default(),
                    Err(e) => {
                        return Err(format!(
                            "cannot read namespace {namespace:?}: {}",
                            short(&e)
                        ));
                    }
                };
                if !selector_matches(selector, &labels) {
                    return Err(format!(
                        "ClusterOperationProvider {:?} does not admit namespace {namespace:?} (see its spec.allowedNamespaces)",
                        reference.name
                    ));
                }
            }
            Ok(cluster(&provider))
        }
    }
}

/// A namespaced provider, as the credentials cache keys it.
pub fn namespaced(p: &OperationProvider) -> Resolved {
    Resolved {
        kind: ProviderKind::OperationProvider,
        namespace: p.namespace(),
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        generation: p.metadata.generation.unwrap_or_default(),
        spec: p.spec.provider.clone(),
    }
}

/// A cluster provider, as the credentials cache keys it.
pub fn cluster(p: &ClusterOperationProvider) -> Resolved {
    Resolved {
        kind: ProviderKind::ClusterOperationProvider,
        namespace: None,
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        generation: p.metadata.generation.unwrap_or_default(),
        spec: p.spec.provider.clone(),
    }
}

/// Whether a selector is empty (`{}`), which admits every namespace without looking at it.
fn admits_every_namespace(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// Whether a label selector admits a set of labels.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let by_label = LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            match_expressions: None,
        };
        assert!(selector_matches(&by_label, &labels));
        assert!(!selector_matches(&by_label, &BTreeMap::new()));
        let not_in = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "NotIn".into(),
                values: Some(vec!["a".into()]),
            }]),
        };
        assert!(!selector_matches(&not_in, &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
        assert!(admits_every_namespace(&LabelSelector::default()));
        assert!(!admits_every_namespace(&by_label));
        assert!(!admits_every_namespace(&not_in));
    }
}
