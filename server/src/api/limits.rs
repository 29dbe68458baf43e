//! Load shedding: the API answers at once when it cannot serve, rather than queueing
//! until clients time out.
//!
//! - A bound on requests in service ([`Limits::max_concurrent`]): one over it gets a fast
//!   503 `overloaded` with `Retry-After`, so goodput for the requests in service holds
//!   and a client knows to back off. Health and metrics are not counted (an orchestrator
//!   must still see the process alive and the operator its numbers).
//! - A request timeout ([`Limits::request_timeout`]): from the headers to the answer. A
//!   body trickled in slower gets 408 (it never reached Kafka); anything else over it
//!   gets 503 (for a POST: not known whether Kafka has it, so retry with the same id).
//! - A header-read timeout ([`Limits::header_timeout`]), applied by `api::serve` on each
//!   connection: a client that sends its headers a byte a second is disconnected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use wiber_model::contract::defaults;

use super::{ApiError, AppState};
use crate::config::ApiConfig;

/// How much the API takes on at once, and for how long.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Permits for requests in service.
    pub in_service: Arc<Semaphore>,
    pub max_concurrent: usize,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
}

impl Limits {
    pub fn new(
        max_concurrent: usize,
        request_timeout: Duration,
        header_timeout: Duration,
    ) -> Limits {
        let max_concurrent = max_concurrent.max(1);
        Limits {
            in_service: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            request_timeout,
            header_timeout,
        }
    }
}

impl Default for Limits {
    /// The service contract's defaults.
    fn default() -> Limits {
        Limits::new(
            defaults::API_MAX_CONCURRENT as usize,
            Duration::from_millis(defaults::API_REQUEST_TIMEOUT_MS),
            Duration::from_millis(defaults::API_HEADER_TIMEOUT_MS),
        )
    }
}

impl From<&ApiConfig> for Limits {
    fn from(cfg: &ApiConfig) -> Limits {
        Limits::new(
            usize::try_from(cfg.max_concurrent).unwrap_or(usize::MAX),
            Duration::from_millis(cfg.request_timeout_ms),
            Duration::from_millis(cfg.header_timeout_ms),
        )
    }
}

/// Whether a path is served outside the bound: probes and metrics.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// The middleware: a permit or a fast 503, then the request within its timeout.
pub async fn shed(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = st.limits.in_service.clone().try_acquire_owned() else {
        st.metrics.shed.inc();
        return ApiError::Overloaded {
            limit: st.limits.max_concurrent,
        }
        .into_response();
    };
    match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(st.limits.request_timeout).into_response(),
    }
}
