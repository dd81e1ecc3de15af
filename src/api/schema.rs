//! Schema helpers for fields that schemars cannot describe the Kubernetes way.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Free-form JSON kept as is by the API server (`x-kubernetes-preserve-unknown-fields`).
pub fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of `metav1.Condition`, merged by `type` (a map-list, as Kubernetes' own kinds use).
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let item =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}
