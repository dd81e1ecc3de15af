//! `spec.outputs`, the I/O part: the ConfigMap and Secret rendered by
//! `reconcile::outputs::render`, each created with the operation as controller owner, or updated
//! only when the operation already controls it. An object of the same name that the operation
//! does not control is left untouched (a conflict). Secret values are never logged, nor copied
//! into status or events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MANAGER, short};
use crate::api::LongRunningOperation;
use crate::reconcile::outputs::{Rendered, WriteFailure};

/// Writes every target of `rendered` that rendered; returns what was written (`ConfigMap x`,
/// `Secret y`) and the first failure (a conflict, or the API's error), if any.
pub async fn write(
    client: &kube::Client,
    op: &LongRunningOperation,
    rendered: &Rendered,
) -> (Vec<String>, Option<WriteFailure>) {
    let namespace = op.namespace().unwrap_or_default();
    let Some(owner) = op.controller_owner_ref(&()) else {
        return (
            Vec::new(),
            Some(WriteFailure::error("the operation has no uid yet")),
        );
    };
    let mut written = Vec::new();
    if let Some(Ok(target)) = &rendered.config_map {
        let cm = ConfigMap {
            data: Some(target.data.clone()),
            ..ConfigMap::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        match put(&api, "ConfigMap", &target.name, &owner, cm).await {
            Ok(()) => written.push(format!("ConfigMap {}", target.name)),
            Err(failure) => return (written, Some(failure)),
        }
    }
    if let Some(Ok(target)) = &rendered.secret {
        let data: BTreeMap<String, ByteString> = target
            .data
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
            .collect();
        let secret = Secret {
            data: Some(data),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        match put(&api, "Secret", &target.name, &owner, secret).await {
            Ok(()) => written.push(format!("Secret {}", target.name)),
            Err(failure) => return (written, Some(failure)),
        }
    }
    (written, None)
}

/// Creates `object` as `name`, owned by `owner`; or, when the operation already controls the
/// existing object, applies it there (conditional on the version just read). Anything else is
/// a conflict and nothing is written.
async fn put<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    owner: &OwnerReference,
    mut object: K,
) -> Result<(), WriteFailure>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    // Metadata only: the existing object's values (a Secret's) are not read.
    let existing = api
        .get_metadata_opt(name)
        .await
        .map_err(|e| WriteFailure::error(format!("cannot read {kind} {name}: {}", short(&e))))?;
    let meta = object.meta_mut();
    meta.name = Some(name.to_owned());
    meta.owner_references = Some(vec![owner.clone()]);
    match existing {
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            // Created by someone else since it was read: theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => Err(conflict(kind, name)),
            Err(e) => Err(WriteFailure::error(format!(
                "cannot create {kind} {name}: {}",
                short(&e)
            ))),
        },
        Some(current) if controlled_by(&current.metadata, owner) => {
            // Only the version read (still controlled by this operation) is updated.
            object.meta_mut().resource_version = current.metadata.resource_version.clone();
            let params = PatchParams::apply(MANAGER).force();
            match api.patch(name, &params, &Patch::Apply(&object)).await {
                Ok(_) => Ok(()),
                Err(e) => Err(WriteFailure::error(format!(
                    "cannot update {kind} {name}: {}",
                    short(&e)
                ))),
            }
        }
        Some(_) => Err(conflict(kind, name)),
    }
}

/// Whether `meta`'s controller owner is the operation `owner` names (by uid).
fn controlled_by(meta: &ObjectMeta, owner: &OwnerReference) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner.uid)
}

fn conflict(kind: &str, name: &str) -> WriteFailure {
    WriteFailure::conflict(format!(
        "{kind} {name} exists and this operation does not control it; it was left untouched: \
         choose another name in spec.outputs, or delete that {kind} if it is not needed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "lro.dev/v1alpha1".into(),
            kind: "LongRunningOperation".into(),
            name: "op".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn only_the_controller_uid_counts() {
        let ours = owner("u1", true);
        let meta = |refs: Vec<OwnerReference>| ObjectMeta {
            owner_references: Some(refs),
            ..ObjectMeta::default()
        };
        assert!(controlled_by(&meta(vec![owner("u1", true)]), &ours));
        assert!(!controlled_by(&meta(vec![owner("u1", false)]), &ours));
        assert!(!controlled_by(&meta(vec![owner("u2", true)]), &ours));
        assert!(!controlled_by(&ObjectMeta::default(), &ours));
    }
}
