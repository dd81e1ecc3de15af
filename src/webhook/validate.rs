//! What the admission webhook checks, as pure functions: an `AdmissionReview` in, one out.
//!
//! The CRDs' OpenAPI schemas and CEL rules check shapes; this checks what only the operator can:
//! that every CEL expression a spec holds compiles. A check is a function from an object to the
//! problems it has, each `field: what is wrong`; [`problems`] says which checks a kind gets (the
//! templating of `LongRunningOperation` strings adds its own there).
//!
//! These functions block: compiling an expression is CPU work on a thread of its own
//! ([`crate::cel::Expression::compile`]), and an object may hold many. The server calls them on
//! the blocking pool, a bounded number at once (see the [module](super) documentation).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::api::HttpOptions;
use crate::protocol::check_http;

/// The kinds the webhook checks.
pub const KINDS: &[&str] = &[
    "OperationProvider",
    "ClusterOperationProvider",
    "LongRunningOperation",
];

/// Answers an `AdmissionReview`: allowed, or denied with every problem found (`; `-separated).
pub fn review(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response.into_review();
    }
    let Some(object) = &request.object else {
        return response.into_review();
    };
    let found = problems(&request.kind.kind, &object.data);
    if found.is_empty() {
        return response.into_review();
    }
    tracing::info!(
        kind = request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = request.name,
        problems = found.len(),
        "admission denied"
    );
    response.deny(found.join("; ")).into_review()
}

/// The problems of an object of `kind` (its fields other than `metadata`, as in
/// [`DynamicObject::data`]); empty when it may be admitted.
pub fn problems(kind: &str, object: &Value) -> Vec<String> {
    match kind {
        "OperationProvider" | "ClusterOperationProvider" => provider_problems(object),
        "LongRunningOperation" => operation_problems(object),
        _ => Vec::new(),
    }
}

/// An operation's `${…}` templates in `spec.start` and its `spec.outputs` expressions must compile.
fn operation_problems(object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if object
        .pointer("/spec/start/body")
        .is_some_and(crate::nesting::too_deep)
    {
        found.push(format!(
            "spec.start.body is nested deeper than the operator reads (at most {} levels from the object's root): flatten it",
            crate::nesting::MAX_NESTING
        ));
        return found;
    }
    if let Some(start) = object.pointer("/spec/start").filter(|s| !s.is_null()) {
        match serde_json::from_value::<crate::api::StartRequest>(start.clone()) {
            Ok(start) => found.extend(crate::reconcile::template::check(&start)),
            Err(e) => found.push(format!("spec.start: {e}")),
        }
    }
    if let Some(outputs) = object.pointer("/spec/outputs").filter(|o| !o.is_null()) {
        match serde_json::from_value::<crate::api::Outputs>(outputs.clone()) {
            Ok(outputs) => found.extend(crate::reconcile::outputs::check(&outputs)),
            Err(e) => found.push(format!("spec.outputs: {e}")),
        }
    }
    found
}

/// A provider's `spec.http` expressions must compile.
fn provider_problems(object: &Value) -> Vec<String> {
    let Some(http) = object.pointer("/spec/http").filter(|h| !h.is_null()) else {
        return Vec::new();
    };
    match serde_json::from_value::<HttpOptions>(http.clone()) {
        Ok(options) => check_http(&options)
            .iter()
            .map(ToString::to_string)
            .collect(),
        Err(e) => vec![format!("spec.http: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(http: Value) -> Value {
        json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "OperationProvider",
            "spec": {"baseURL": "https://api.example.com", "protocol": "http", "http": http},
        })
    }

    fn valid_http() -> Value {
        json!({
            "operationFrom": "headers['location']",
            "succeeded": "body.status == 'done'",
            "failed": "body.status == 'error'",
            "progress": "body.percent",
        })
    }

    fn admission(kind: &str, operation: &str, object: Value) -> AdmissionReview<DynamicObject> {
        let mut object = object;
        if let Some(o) = object.as_object_mut() {
            o.insert("metadata".into(), json!({"name": "p", "namespace": "ns"}));
        }
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "lro.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "lro.dev", "version": "v1alpha1",
                             "resource": "operationproviders"},
                "requestKind": {"group": "lro.dev", "version": "v1alpha1", "kind": kind},
                "requestResource": {"group": "lro.dev", "version": "v1alpha1",
                                    "resource": "operationproviders"},
                "name": "p",
                "namespace": "ns",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
                "dryRun": false,
                "options": null,
            },
        }))
        .unwrap()
    }

    fn answer(review: AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(super::review(review)).unwrap()
    }

    #[test]
    fn a_provider_whose_expressions_compile_is_allowed() {
        let out = answer(admission(
            "OperationProvider",
            "CREATE",
            provider(valid_http()),
        ));
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(out["response"]["allowed"], true);
    }

    #[test]
    fn a_syntax_error_is_denied_naming_the_field() {
        let mut http = valid_http();
        http["succeeded"] = json!("body.status ==");
        let out = answer(admission(
            "ClusterOperationProvider",
            "UPDATE",
            provider(http),
        ));
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.http.succeeded: Syntax error at 1:15: "),
            "{message}"
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let mut http = valid_http();
        http["operationFrom"] = json!("headers[");
        http["progress"] = json!("bdy.percent");
        let found = problems("OperationProvider", &provider(http));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("spec.http.operationFrom: "),
            "{found:?}"
        );
        assert!(
            found[0].starts_with("spec.http.operationFrom: Syntax error"),
            "{found:?}"
        );
        assert!(found[1].starts_with("spec.http.progress: undeclared reference to 'bdy'"));
    }

    #[test]
    fn other_objects_and_operations_are_allowed() {
        let google = json!({"spec": {"baseURL": "https://x", "protocol": "google"}});
        assert!(problems("OperationProvider", &google).is_empty());
        assert!(problems("LongRunningOperation", &json!({"spec": {}})).is_empty());
        let mut http = valid_http();
        http["failed"] = json!("((");
        let out = answer(admission(
            "OperationProvider",
            "DELETE",
            provider(http.clone()),
        ));
        assert_eq!(out["response"]["allowed"], true, "deletes are not checked");
        let found = problems("OperationProvider", &provider(json!({"succeeded": 1})));
        assert!(found[0].starts_with("spec.http: "), "{found:?}");
    }

    #[test]
    fn a_review_without_a_request_is_invalid() {
        let empty: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"
        }))
        .unwrap();
        let out = answer(empty);
        assert_eq!(out["response"]["allowed"], false);
    }

    proptest::proptest! {
        #[test]
        fn checking_never_panics(
            from in ".{0,60}", succeeded in ".{0,60}", failed in ".{0,60}",
        ) {
            let http = json!({"operationFrom": from, "succeeded": succeeded, "failed": failed});
            let _ = problems("OperationProvider", &provider(http));
        }
    }

    #[test]
    fn operations_with_templates_or_outputs_that_do_not_compile_are_denied() {
        let lro = |start: Value, outputs: Value| {
            json!({
                "apiVersion": "lro.dev/v1alpha1",
                "kind": "LongRunningOperation",
                "spec": {"providerRef": {"name": "p"}, "start": start, "outputs": outputs},
            })
        };
        let good = lro(
            json!({"path": "clusters/${self.metadata.name}", "body": {"net": "${deps.network.resourceId}"}}),
            json!({"configMap": {"name": "c", "data": {"url": "result.cluster.dataplane_api.url"}}}),
        );
        assert!(problems("LongRunningOperation", &good).is_empty());
        let bad = lro(
            json!({"path": "clusters", "query": {"q": "${deps.(}"}, "body": {"net": "${nope.id}", "x": "${unterminated"}}),
            json!({"secret": {"name": "s", "data": {"token": "result.("}}}),
        );
        let found = problems("LongRunningOperation", &bad);
        assert_eq!(found.len(), 4, "{found:?}");
        for field in [
            "start.query.q",
            "start.body.net",
            "start.body.x",
            "spec.outputs.secret.data.token",
        ] {
            assert!(
                found.iter().any(|p| p.contains(field)),
                "{field}: {found:?}"
            );
        }
        let denied = answer(admission("LongRunningOperation", "CREATE", bad));
        assert_eq!(denied["response"]["allowed"], json!(false), "{denied}");
    }
}
