//! Logging, Prometheus metrics ([`metrics`]) and the health/metrics HTTP server ([`server`]).

pub mod metrics;
pub mod server;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), text or JSON lines.
///
/// Every line logged during a reconcile carries the `reconcile` span's fields (namespace, name,
/// upstream handle): in text as the `reconcile{…}` prefix, in JSON as the `span` object (and the
/// enclosing spans in `spans`), with the event's own fields flattened to the top level.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
