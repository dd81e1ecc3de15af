//! Logging, Prometheus metrics ([`metrics`]) and the health/metrics HTTP server ([`server`]).

pub mod apiserver;
pub mod metrics;
pub mod server;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), text or JSON lines.
///
/// Every line logged during a reconcile carries the `reconcile` span's fields (`namespace`, `lro`
/// = the object's name, `operation` = the upstream handle): in text as the `reconcile{…}` prefix, in JSON as the `span` object (and all
/// enclosing spans in `spans`), with the event's own fields at the top level.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(json_layer(std::io::stderr)).try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}

/// The JSON lines layer: event fields flattened, the current span and the span list included.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_reconcile_span_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            // As controller/reconcile.rs opens it: the handle is recorded once known.
            let span = tracing::error_span!(
                "reconcile",
                namespace = "team-a",
                lro = "create-cluster",
                operation = tracing::field::Empty,
            );
            let _entered = span.enter();
            tracing::info!(request_id = "r-1", "sending the start request");
            span.record("operation", "operations/op-1");
            tracing::warn!("upstream answered");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(line["span"]["name"], "reconcile", "{line}");
            assert_eq!(line["span"]["lro"], "create-cluster", "{line}");
            assert_eq!(line["span"]["namespace"], "team-a", "{line}");
            assert_eq!(line["spans"][0]["lro"], "create-cluster", "{line}");
        }
        assert_eq!(lines[0]["message"], "sending the start request");
        assert_eq!(lines[0]["request_id"], "r-1", "event fields flattened");
        assert_eq!(lines[1]["span"]["operation"], "operations/op-1");
        assert_eq!(lines[1]["level"], "WARN");
    }
}
