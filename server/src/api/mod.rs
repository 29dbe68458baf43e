//! The HTTP API service (axum).
//!
//! Layout: [`handlers`] (one function per route), [`error`] (status + JSON body for every
//! failure), [`metrics`] (Prometheus), [`docs`] (OpenAPI + vendored Swagger UI); what the
//! API needs from Kafka and the store are the seams [`Publish`] and [`ReadStore`]
//! ([`crate::seams`]), which `wiring::run_api` fills with the real adapters. [`limits`]:
//! load shedding (a bound on requests in service, answered 503 + `Retry-After` beyond it,
//! a request timeout, the header-read timeout of [`serve`]); [`readiness`]: the readiness
//! answer, cached for a second so probes never queue on Kafka.
//! This file wires them into a [`router`] and [`serve`]s it with graceful shutdown, from
//! its own accept loop; tests serve the same router with fakes behind the seams.

mod docs;
mod error;
mod handlers;
pub mod limits;
mod metrics;
pub mod readiness;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

pub use crate::seams::{CountScope, Delivered, Lane, Publish, PublishError, ReadStore};
pub use docs::OPENAPI_JSON;
pub use error::ApiError;
pub use limits::Limits;
pub use metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub publisher: Arc<dyn Publish>,
    pub store: Arc<dyn ReadStore>,
    pub topic: Arc<str>,
    pub metrics: Metrics,
    /// The bound on requests in service, and the request timeout.
    pub limits: Limits,
    /// The last readiness answer, shared by every probe for a second.
    pub readiness: Arc<readiness::Cache>,
    /// Test builds only: what picks accept timestamps instead of the clock (the seeded
    /// `reorder` bug).
    #[cfg(feature = "seeded-bugs")]
    pub(crate) accept_clock: Option<Arc<dyn AcceptClock>>,
}

/// Test builds only: picks the timestamp a message is accepted with (the hook of the
/// seeded `reorder` bug, so the handler never names the seeded module).
#[cfg(feature = "seeded-bugs")]
pub trait AcceptClock: Send + Sync {
    /// The timestamp to give `new`, accepted at `now`.
    fn timestamp(&self, new: &wiber_model::NewMessage, now: i64) -> i64;
}

impl AppState {
    /// Handlers publishing to `topic` through `publisher` and reading from `store`,
    /// with fresh metrics.
    pub fn new(
        publisher: Arc<dyn Publish>,
        store: Arc<dyn ReadStore>,
        topic: impl Into<Arc<str>>,
    ) -> AppState {
        AppState {
            publisher,
            store,
            topic: topic.into(),
            metrics: Metrics::new(),
            limits: Limits::default(),
            readiness: Arc::default(),
            #[cfg(feature = "seeded-bugs")]
            accept_clock: None,
        }
    }

    /// The same state with other limits.
    pub fn with_limits(self, limits: Limits) -> AppState {
        AppState { limits, ..self }
    }
}

/// Every route of the contract. `/messages/user/{username}` and `/messages/count` are
/// static segments, so they win over `/messages/{user1}/{user2}`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/messages", post(handlers::post_message))
        .route("/messages/count", get(handlers::count))
        .route("/messages/user/{username}", get(handlers::user_messages))
        .route("/messages/{user1}/{user2}", get(handlers::conversation))
        .route("/health/liveness", get(handlers::liveness))
        .route("/health/readiness", get(handlers::readiness))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(docs::ui))
        .route("/docs/", get(docs::ui))
        .route("/docs/swagger-ui-bundle.js", get(docs::bundle_js))
        .route("/docs/swagger-ui.css", get(docs::css))
        // Inside `observe`, so a shed request is counted and logged like any other.
        .layer(middleware::from_fn_with_state(state.clone(), limits::shed))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Per request: a correlation id (the client's `X-Request-Id` or a fresh one) on a log
/// span and the response, and the request counted and timed by route.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = resp.status();
    st.metrics
        .requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    st.metrics
        .request_seconds
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Serves the router on `listener` until `shutdown`; in-flight requests get a bounded
/// grace period so a stuck client cannot hold the process.
///
/// Our own accept loop rather than `axum::serve`, which sets no timer on hyper's
/// connections and so has no header-read timeout: a client that sends its headers a byte
/// a second would hold a connection (and a task) for as long as it likes. Here a client
/// gets [`Limits::header_timeout`] to send them, then the connection is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let header_timeout = state.limits.header_timeout;
    let app = router(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; backing off 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => Ok(()),
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("in-flight requests did not finish within 10s of shutdown; leaving");
            Ok(())
        }
    }
}
