//! `spec.onDelete: Cancel`: a finalizer keeps a deleted object until its upstream operation is
//! cancelled (or has ended), so the cancel is not lost with the object. Deletion is never blocked
//! forever: a protocol without cancel, a refused cancel, or [`DELETE_LIMIT`] release it.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::{LongRunningOperation, LongRunningOperationStatus, OnDelete};
use crate::reconcile::{Caps, Memory};

/// The finalizer the operator puts on operations with `onDelete: Cancel`.
pub const FINALIZER: &str = "lro.dev/cancel-on-delete";
/// The longest a deletion waits for the upstream to confirm the cancel.
pub const DELETE_LIMIT: Duration = Duration::from_secs(600);

/// Whether `op` carries the finalizer.
pub fn present(op: &LongRunningOperation) -> bool {
    op.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether `op` is being deleted and must cancel its upstream operation first.
pub fn deleting(op: &LongRunningOperation) -> bool {
    op.metadata.deletion_timestamp.is_some() && present(op)
}

/// Whether the finalizer should be added now: `onDelete: Cancel`, not deleted, not ended.
pub fn wanted(op: &LongRunningOperation, status: &LongRunningOperationStatus) -> bool {
    op.spec.on_delete == OnDelete::Cancel
        && op.metadata.deletion_timestamp.is_none()
        && !status.phase.is_some_and(|p| p.is_terminal())
        && !present(op)
}

/// Whether a deleting operation may go: its operation ended, cannot or will not be cancelled,
/// or the deletion has waited [`DELETE_LIMIT`].
pub fn may_release(
    op: &LongRunningOperation,
    status: &LongRunningOperationStatus,
    caps: Caps,
    memory: &Memory,
    now: jiff::Timestamp,
) -> bool {
    let waited_too_long = op
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0).as_secs_f64() >= DELETE_LIMIT.as_secs_f64());
    status.phase.is_none_or(|p| p.is_terminal())
        || !caps.can_cancel
        || memory.cancel_refused
        || waited_too_long
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
