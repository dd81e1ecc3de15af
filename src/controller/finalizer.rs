//! `spec.onDelete: Cancel`: a finalizer keeps a deleted object until its upstream operation is
//! cancelled (or has ended), so the cancel is not lost with the object. When it is added and
//! removed is decided by `reconcile::step`; this module patches it.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::LongRunningOperation;

/// The finalizer the operator puts on operations with `onDelete: Cancel`.
pub const FINALIZER: &str = "lro.dev/cancel-on-delete";

/// Whether `op` carries the finalizer.
pub fn present(op: &LongRunningOperation) -> bool {
    op.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer.
pub async fn add(
    api: &Api<LongRunningOperation>,
    op: &LongRunningOperation,
) -> Result<(), kube::Error> {
    let mut finalizers = op.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set(api, op, finalizers).await
}

/// Removes the finalizer, letting the deletion finish.
pub async fn remove(
    api: &Api<LongRunningOperation>,
    op: &LongRunningOperation,
) -> Result<(), kube::Error> {
    let finalizers = op
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set(api, op, finalizers).await
}

/// Replaces the finalizer list, on the condition that nobody changed it meanwhile (a JSON patch
/// `test`: status writes, which change the resourceVersion, do not conflict with it).
async fn set(
    api: &Api<LongRunningOperation>,
    op: &LongRunningOperation,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let patch = match &op.metadata.finalizers {
        None => serde_json::json!([
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]),
        Some(current) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": finalizers},
        ]),
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &op.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}
