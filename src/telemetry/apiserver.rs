//! Counts the requests the operator sends to the Kubernetes API server
//! (`lro_apiserver_requests_total{verb, resource}`), as a layer of the kube client.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::metrics::Metrics;

/// The layer that counts every request going through it in `metrics`.
#[derive(Clone)]
pub struct CountRequests {
    metrics: Arc<Metrics>,
}

impl CountRequests {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CountRequests { metrics }
    }
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// A kube client service whose requests are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        self.metrics.apiserver_request(verb, resource);
        self.inner.call(request)
    }
}

/// The Kubernetes verb and the resource (`plural` or `plural/subresource`) of a request.
///
/// The resource comes from the path, so its values are bounded by the kinds the operator reads
/// and writes; anything not shaped like a resource path is `other`.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/group/version/...
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (verb_of(method, false, false), "other".into()),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let (resource, named) = match rest {
        [plural] => ((*plural).to_owned(), false),
        [plural, _name] => ((*plural).to_owned(), true),
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
        _ => ("other".to_owned(), false),
    };
    (verb_of(method, named, watch), resource)
}

fn verb_of(method: &http::Method, named: bool, watch: bool) -> &'static str {
    match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, uri: &str) -> (&'static str, String) {
        classify(&method.parse().unwrap(), &uri.parse().unwrap())
    }

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        assert_eq!(
            of(
                "PATCH",
                "/apis/lro.dev/v1alpha1/namespaces/a/longrunningoperations/x/status?fieldManager=m"
            ),
            ("patch", "longrunningoperations/status".into())
        );
        assert_eq!(
            of(
                "GET",
                "/apis/lro.dev/v1alpha1/longrunningoperations?watch=true&resourceVersion=1"
            ),
            ("watch", "longrunningoperations".into())
        );
        assert_eq!(
            of(
                "GET",
                "/apis/lro.dev/v1alpha1/namespaces/a/operationproviders"
            ),
            ("list", "operationproviders".into())
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces/a"),
            ("get", "namespaces".into())
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces"),
            ("list", "namespaces".into())
        );
        assert_eq!(
            of("POST", "/apis/events.k8s.io/v1/namespaces/a/events"),
            ("create", "events".into())
        );
        assert_eq!(
            of("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"),
            ("update", "leases".into())
        );
        assert_eq!(of("GET", "/version"), ("list", "other".into()));
    }
}
