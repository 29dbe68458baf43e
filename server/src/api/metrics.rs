//! Prometheus metrics of the API: requests by route and status, their latency, and
//! Kafka produce latency and errors. Rendered as text at `GET /metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub produce_seconds: HistogramVec,
    pub produce_errors: IntCounterVec,
    pub produce_lane: IntCounterVec,
    /// Requests answered 503 `overloaded` at once (over the bound on requests in service).
    pub shed: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wiber_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "wiber_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let produce_seconds = HistogramVec::new(
            HistogramOpts::new(
                "wiber_kafka_produce_duration_seconds",
                "Time from produce to Kafka's acknowledgement (acks=all)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let produce_errors = IntCounterVec::new(
            Opts::new(
                "wiber_kafka_produce_errors_total",
                "Produce failures by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let produce_lane = IntCounterVec::new(
            Opts::new(
                "wiber_kafka_produce_lane_total",
                "Acknowledged records by the producer that carried them (prompt: no linger, light load; batching: under load)",
            ),
            &["lane"],
        )
        .expect("valid metric");
        let shed = IntCounter::new(
            "wiber_http_shed_total",
            "Requests answered 503 overloaded at once: over API_MAX_CONCURRENT in service",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(produce_seconds.clone()),
            Box::new(produce_errors.clone()),
            Box::new(produce_lane.clone()),
            Box::new(shed.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            produce_seconds,
            produce_errors,
            produce_lane,
            shed,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
