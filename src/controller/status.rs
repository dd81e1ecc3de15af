//! Writing an operation's status (server-side apply on the status subresource) and its Events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource};

use super::{Context, MANAGER};
use crate::api::{LongRunningOperation, LongRunningOperationStatus};
use crate::reconcile::Notice;

/// The longest free-text field (a message, the upstream's state word) written to a status. An
/// upstream may answer with a message of megabytes; repeated in `status.message`, `status.error`
/// and every condition, it would make the status larger than etcd accepts, and no status write
/// (not even the terminal one) would ever land.
pub const MAX_STATUS_TEXT: usize = 4096;

/// Applies `status` as the operator's whole status of `op`, its free text cut to
/// [`MAX_STATUS_TEXT`] bytes.
pub async fn write(
    api: &Api<LongRunningOperation>,
    name: &str,
    status: &LongRunningOperationStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "status": bounded(status),
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
            note: Some(truncate(&notice.message, 1000)),
            action: notice.action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = notice.reason, "cannot record event");
        }
    }
}

/// `status` with every free-text field cut to [`MAX_STATUS_TEXT`] bytes.
fn bounded(status: &LongRunningOperationStatus) -> LongRunningOperationStatus {
    let mut status = status.clone();
    let cut = |s: &mut String| {
        if s.len() > MAX_STATUS_TEXT {
            // Room for the ellipsis: cut text is within the limit, and cutting it again keeps it.
            *s = truncate(s, MAX_STATUS_TEXT - '…'.len_utf8());
        }
    };
    let error = status.error.as_mut();
    let texts = [status.message.as_mut(), status.upstream_state.as_mut()]
        .into_iter()
        .chain(error.map_or([None, None], |e| {
            [Some(&mut e.message), e.provider_code.as_mut()]
        }))
        .flatten()
        .chain(status.conditions.iter_mut().map(|c| &mut c.message));
    texts.for_each(cut);
    status
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OperationError;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn long_text_is_cut_short_text_kept() {
        let long = "é".repeat(MAX_STATUS_TEXT);
        let condition = Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "UpstreamFailed".into(),
            message: long.clone(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let status = LongRunningOperationStatus {
            message: Some(long.clone()),
            upstream_state: Some("RUNNING".into()),
            error: Some(OperationError {
                code: "UNKNOWN".into(),
                provider_code: Some(long.clone()),
                http_status: None,
                message: long.clone(),
                details: vec![],
            }),
            conditions: vec![condition],
            ..LongRunningOperationStatus::default()
        };
        let cut = bounded(&status);
        let texts = [
            cut.message.clone().unwrap_or_default(),
            cut.error.clone().map(|e| e.message).unwrap_or_default(),
            cut.error
                .clone()
                .and_then(|e| e.provider_code)
                .unwrap_or_default(),
            cut.conditions[0].message.clone(),
        ];
        for text in texts {
            assert!(text.len() <= MAX_STATUS_TEXT, "{}", text.len());
            assert!(text.ends_with('…') && text.starts_with("éé"));
        }
        assert_eq!(cut.upstream_state.as_deref(), Some("RUNNING"));
        assert_eq!(bounded(&cut), cut, "cutting twice changes nothing");
    }
}
