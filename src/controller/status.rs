//! Writing an operation's status (server-side apply on the status subresource) and its Events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource};

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
    let reference = op.object_ref(&());
    for notice in notices {
        let event = KubeEvent {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.to_owned(),
            note: Some(crate::reconcile::truncate(&notice.message, 1000)),
            action: notice.action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = notice.reason, "cannot record event");
        }
    }
}
