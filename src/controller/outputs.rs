//! `spec.outputs`: a ConfigMap and/or Secret written from a succeeded operation's result, owned
//! by the operation. Secret values are never logged, nor copied into status or events.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;

use super::MANAGER;
use crate::api::{LongRunningOperation, LongRunningOperationStatus, OutputTarget, Phase};
use crate::cel::{Expression, Variables};
use crate::reconcile::conditions;

/// The condition saying whether `spec.outputs` was written for the current generation.
pub const OUTPUTS_PUBLISHED: &str = "OutputsPublished";
/// The variables of an output expression.
pub const VARIABLES: &[&str] = &["result", "status"];

/// The problems of `spec.outputs` expressions (for the admission webhook).
pub fn check(outputs: &crate::api::Outputs) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, target) in [
        ("spec.outputs.configMap", &outputs.config_map),
        ("spec.outputs.secret", &outputs.secret),
    ] {
        for (key, source) in target.iter().flat_map(|t| t.data.iter()) {
            if let Err(e) = Expression::compile(source, VARIABLES) {
                problems.push(format!("{field}.data.{key}: does not compile: {e}"));
            }
        }
    }
    problems
}

/// Whether the outputs of a succeeded operation still have to be written for this generation.
pub fn pending(op: &LongRunningOperation, status: &LongRunningOperationStatus) -> bool {
    op.spec.outputs.is_some()
        && status.phase == Some(Phase::Succeeded)
        && !conditions::find(&status.conditions, OUTPUTS_PUBLISHED)
            .is_some_and(|c| c.status == "True" && c.observed_generation == op.metadata.generation)
}

/// Evaluates each key over the result. A failure names the key (and, for a ConfigMap only,
/// the reason: a Secret expression's error might quote the value).
fn evaluate(
    what: &str,
    target: &OutputTarget,
    vars: &Variables,
    secret: bool,
) -> Result<BTreeMap<String, String>, String> {
    target
        .data
        .iter()
        .map(|(key, source)| {
            let value = Expression::compile(source, VARIABLES)
                .map_err(|e| format!("{what} key {key}: does not compile: {e}"))?
                .evaluate_json(vars)
                .map_err(|e| {
                    if secret {
                        format!("{what} key {key}: the expression failed")
                    } else {
                        format!("{what} key {key}: {e}")
                    }
                })?;
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((key.clone(), text))
        })
        .collect()
}

/// Writes the outputs (server-side apply, owned by `op`) and records the outcome as the
/// `OutputsPublished` condition of `status`. `result` is the full result when known (the status
/// may hold a capped one). An expression that fails is a `False` condition, not an error;
/// an API error is returned (the reconcile is retried).
pub async fn publish(
    client: &kube::Client,
    op: &LongRunningOperation,
    status: &mut LongRunningOperationStatus,
    result: Option<&Value>,
) -> Result<(), kube::Error> {
    let Some(outputs) = &op.spec.outputs else {
        return Ok(());
    };
    let namespace = op.namespace().unwrap_or_default();
    let mut vars = Variables::new();
    vars.bind_json(
        "result",
        result.or(status.result.as_ref()).unwrap_or(&Value::Null),
    );
    vars.bind_json(
        "status",
        &serde_json::to_value(&*status).unwrap_or(Value::Null),
    );
    let owner = op.controller_owner_ref(&()).into_iter().collect::<Vec<_>>();
    let params = PatchParams::apply(MANAGER).force();
    let mut outcome = Ok(Vec::new());
    if let Some(target) = &outputs.config_map {
        match evaluate("configMap", target, &vars, false) {
            Ok(data) => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(target.name.clone()),
                        namespace: Some(namespace.clone()),
                        owner_references: Some(owner.clone()),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
                api.patch(&target.name, &params, &Patch::Apply(&cm)).await?;
                if let Ok(written) = &mut outcome {
                    written.push(format!("ConfigMap {}", target.name));
                }
            }
            Err(e) => outcome = Err(e),
        }
    }
    if let Some(target) = &outputs.secret {
        match evaluate("secret", target, &vars, true) {
            Ok(data) => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(target.name.clone()),
                        namespace: Some(namespace.clone()),
                        owner_references: Some(owner.clone()),
                        ..ObjectMeta::default()
                    },
                    data: Some(
                        data.into_iter()
                            .map(|(k, v)| (k, ByteString(v.into_bytes())))
                            .collect(),
                    ),
                    ..Secret::default()
                };
                let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                api.patch(&target.name, &params, &Patch::Apply(&secret))
                    .await?;
                if let Ok(written) = &mut outcome {
                    written.push(format!("Secret {}", target.name));
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
    }
    let (value, reason, message) = match outcome {
        Ok(written) => (
            true,
            "Published",
            format!("wrote {}", written.join(" and ")),
        ),
        Err(why) => (false, "OutputError", format!("outputs not written: {why}")),
    };
    if !value {
        tracing::warn!(message, "outputs not written");
    }
    conditions::upsert(
        &mut status.conditions,
        OUTPUTS_PUBLISHED,
        value,
        reason,
        &message,
        op.metadata.generation,
        jiff::Timestamp::now(),
    );
    Ok(())
}
