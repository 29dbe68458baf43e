//! Structured JSON logs (one object per line) for both services.

use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber. `RUST_LOG` overrides the default level (`info`).
/// librdkafka's own log lines arrive through the `log` facade and are bridged too.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,mongodb=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .try_init();
}
