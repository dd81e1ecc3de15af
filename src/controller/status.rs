//! Writing an operation's status (server-side apply on the status subresource) and its Events.

use kube::Api;
use kube::api::{Patch, PatchParams};

use super::{Context, MANAGER};
use crate::api::{LongRunningOperation, LongRunningOperationStatus};
use crate::reconcile::Notice;

/// Applies `status` as the operator's whole status of `op` (its sizes were capped by the step).
pub async fn write(
    api: &Api<LongRunningOperation>,
    name: &str,
    status: &LongRunningOperationStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// Records notices as Kubernetes Events on `op` (failures are logged, never fatal).
pub async fn publish(ctx: &Context, op: &LongRunningOperation, notices: &[Notice]) {
    for notice in notices {
        let note = crate::reconcile::truncate(&notice.message, 1000);
        if let Err(e) = ctx.recorder.publish(op, notice, note).await {
            tracing::warn!(error = %e, reason = notice.reason, "cannot record event");
        }
    }
}
