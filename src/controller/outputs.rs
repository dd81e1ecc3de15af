//! `spec.outputs`, the I/O part: the ConfigMap and Secret rendered by
//! `reconcile::outputs::render`, written by server-side apply with the operation as controller
//! owner. Secret values are never logged, nor copied into status or events.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use super::MANAGER;
use crate::api::LongRunningOperation;
use crate::reconcile::outputs::Rendered;

/// Writes every target of `rendered` that rendered; returns what was written (`ConfigMap x`,
/// `Secret y`), or the API's error.
pub async fn write(
    client: &kube::Client,
    op: &LongRunningOperation,
    rendered: &Rendered,
) -> Result<Vec<String>, kube::Error> {
    let namespace = op.namespace().unwrap_or_default();
    let owner = op.controller_owner_ref(&()).into_iter().collect::<Vec<_>>();
    let params = PatchParams::apply(MANAGER).force();
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.clone()),
        owner_references: Some(owner.clone()),
        ..ObjectMeta::default()
    };
    let mut written = Vec::new();
    if let Some(Ok(target)) = &rendered.config_map {
        let cm = ConfigMap {
            metadata: meta(&target.name),
            data: Some(target.data.clone()),
            ..ConfigMap::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        api.patch(&target.name, &params, &Patch::Apply(&cm)).await?;
        written.push(format!("ConfigMap {}", target.name));
    }
    if let Some(Ok(target)) = &rendered.secret {
        let secret = Secret {
            metadata: meta(&target.name),
            data: Some(
                target
                    .data
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        api.patch(&target.name, &params, &Patch::Apply(&secret))
            .await?;
        written.push(format!("Secret {}", target.name));
    }
    Ok(written)
}
