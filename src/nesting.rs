//! Objects nested too deep for the operator to read.
//!
//! The API server stores JSON up to 10,000 levels deep; `serde_json` (and so kube's watches)
//! refuses more than 128, and a watch that cannot read one object cannot list any: one tenant's
//! `spec.start.body` nested 200 levels deep (its `managedFields` mirror it) would stop the
//! operator for every namespace. So every answer of the API server about `lro.dev` objects goes
//! through [`PruneNesting`]: whatever lies deeper than [`MAX_NESTING`] is replaced by the string
//! [`TOO_DEEP`], in a single streaming pass that never recurses. An operation whose spec holds it
//! fails with a message saying so ([`too_deep`]); nothing else notices.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tower::{Layer, Service};

/// The deepest nesting (arrays and objects, counted from the answer's root) read as it is.
pub const MAX_NESTING: usize = 64;

/// What replaces a value nested deeper than [`MAX_NESTING`] (a control character starts it: no
/// real document holds it).
pub const TOO_DEEP: &str = "\u{1}lro-operator: nested too deep";

/// The JSON text of [`TOO_DEEP`].
const TOO_DEEP_JSON: &[u8] = b"\"\\u0001lro-operator: nested too deep\"";

/// Whether `value` holds a part that was nested too deep to be read.
pub fn too_deep(value: &Value) -> bool {
    // Iterative: the value may be up to MAX_NESTING deep.
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::String(s) if s == TOO_DEEP => return true,
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    false
}

/// How deep `value` nests (a scalar: 0, `[]`: 1, `[[1]]`: 2).
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((v, at)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(at + 1);
        pending.extend(children.map(|c| (c, at + 1)));
    }
    deepest
}

/// A streaming rewriter of JSON text (one document, or a stream of them such as a watch's):
/// copies it, except that every array or object opened deeper than [`MAX_NESTING`] is replaced,
/// whole, by [`TOO_DEEP`]. Input that is not JSON comes out as garbled as it went in.
#[derive(Debug, Default)]
pub struct Pruner {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Inside a replaced value: how many of its brackets are open.
    skipping: usize,
}

impl Pruner {
    /// Rewrites the next chunk of text into `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        for &b in input {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                if self.skipping == 0 {
                    out.push(b);
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' if self.skipping > 0 => self.skipping += 1,
                b'{' | b'[' if self.depth >= MAX_NESTING => {
                    self.skipping = 1;
                    out.extend_from_slice(TOO_DEEP_JSON);
                    continue;
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.skipping > 0 => {
                    self.skipping -= 1;
                    continue;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            if self.skipping == 0 {
                out.push(b);
            }
        }
    }
}

/// A kube client layer passing the answers about `lro.dev` objects through a [`Pruner`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneNesting;

impl<S> Layer<S> for PruneNesting {
    type Service = Pruned<S>;

    fn layer(&self, inner: S) -> Pruned<S> {
        Pruned { inner }
    }
}

/// A kube client service whose `lro.dev` answers are pruned.
#[derive(Clone, Debug)]
pub struct Pruned<S> {
    inner: S,
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for Pruned<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Unpin,
{
    type Response = Response<PrunedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let ours = request.uri().path().starts_with("/apis/lro.dev/");
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| PrunedBody {
                inner,
                pruner: ours.then(Pruner::default),
            }))
        })
    }
}

/// A response body rewritten by a [`Pruner`] (or passed through, without one).
#[derive(Debug)]
pub struct PrunedBody<B> {
    inner: B,
    pruner: Option<Pruner>,
}

impl<B> Body for PrunedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let Some(pruner) = &mut this.pruner else {
            return Poll::Ready(Some(Ok(frame)));
        };
        Poll::Ready(Some(Ok(frame.map_data(|data| {
            let mut out = Vec::with_capacity(data.len());
            pruner.feed(&data, &mut out);
            Bytes::from(out)
        }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.pruner {
            // Pruning changes the length.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    }

    fn prune_in_chunks(text: &str, chunk: usize) -> String {
        let mut pruner = Pruner::default();
        let mut out = Vec::new();
        for part in text.as_bytes().chunks(chunk) {
            pruner.feed(part, &mut out);
        }
        String::from_utf8(out).expect("utf-8 in, utf-8 out")
    }

    #[test]
    fn shallow_json_passes_unchanged_whatever_the_chunks() {
        let text =
            json!({"s": "a \"quoted\" {[brace]} \\", "n": [1, [2, [3]]], "e": {}}).to_string();
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(prune_in_chunks(&text, chunk), text);
        }
        let stream = format!("{}\n{}\n", text, nested(10));
        assert_eq!(prune_in_chunks(&stream, 5), stream);
    }

    #[test]
    fn deeper_values_become_the_marker_and_the_rest_stays_readable() {
        let deep = format!(
            "{{\"before\":1,\"deep\":{},\"after\":\"x]}}\"}}",
            nested(10_000)
        );
        for chunk in [1, 64, 100_000] {
            let pruned = prune_in_chunks(&deep, chunk);
            let value: Value = serde_json::from_str(&pruned).expect("readable by serde_json");
            assert_eq!(value["before"], 1);
            assert_eq!(value["after"], "x]}");
            assert!(too_deep(&value));
            assert_eq!(depth(&value), MAX_NESTING);
        }
        // Exactly at the limit: unchanged.
        let at_limit = nested(MAX_NESTING);
        assert_eq!(prune_in_chunks(&at_limit, 3), at_limit);
        assert!(!too_deep(&serde_json::from_str(&at_limit).unwrap()));
        // A watch stream: each event starts again at depth 0.
        let stream = format!("{}\n{}\n", nested(100), nested(3));
        let pruned = prune_in_chunks(&stream, 4);
        let events: Vec<Value> = pruned
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(too_deep(&events[0]) && !too_deep(&events[1]));
        assert_eq!(
            events[1],
            serde_json::from_str::<Value>(&nested(3)).unwrap()
        );
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        assert!(!too_deep(&json!({"a": "lro-operator: nested too deep"})));
        assert!(too_deep(&json!({"a": [TOO_DEEP]})));
    }
}
