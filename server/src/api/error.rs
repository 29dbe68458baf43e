//! One error type for every handler: it picks the HTTP status and renders a JSON body
//! `{"error": kind, "detail": text, "field": name?}` so clients never parse prose.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use wiber_model::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("unsupported content type {0:?}: send `Content-Type: application/json`")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(#[from] ValidationError),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("kafka unavailable: {0}")]
    KafkaUnavailable(String),
    #[error("mongodb unavailable: {0}")]
    StoreUnavailable(String),
    #[error("the API is serving its limit of {limit} requests at once; retry after 1 s")]
    Overloaded { limit: usize },
    #[error("the request body did not arrive within {0:?}; nothing was published")]
    BodyTimeout(std::time::Duration),
    #[error(
        "no answer within {0:?}; a POST may or may not be published: retry with the same messageId"
    )]
    Timeout(std::time::Duration),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::KafkaUnavailable(_)
            | ApiError::StoreUnavailable(_)
            | ApiError::Overloaded { .. }
            | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Errors answered before the request body was read (its size or type alone is
    /// wrong): the connection cannot be reused for the next request.
    fn rejects_before_reading_body(&self) -> bool {
        matches!(
            self,
            ApiError::TooLarge { .. }
                | ApiError::UnsupportedMediaType(_)
                | ApiError::Overloaded { .. }
                | ApiError::BodyTimeout(_)
                | ApiError::Timeout(_)
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::KafkaUnavailable(_) => "kafka_unavailable",
            ApiError::StoreUnavailable(_) => "mongodb_unavailable",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::Timeout(_) => "timeout",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.kind(), "detail": self.to_string()});
        if let ApiError::Validation(v) = &self {
            body["field"] = json!(v.field);
        }
        // A shed request is logged by its count (`wiber_http_shed_total`), not one line
        // each: an overload must not also flood the log.
        if self.status().is_server_error() && !matches!(self, ApiError::Overloaded { .. }) {
            tracing::warn!(error = %self, "request failed");
        }
        if let ApiError::Overloaded { .. } | ApiError::Timeout(_) = self {
            return (
                self.status(),
                [
                    (axum::http::header::RETRY_AFTER, "1"),
                    (axum::http::header::CONNECTION, "close"),
                ],
                Json(body),
            )
                .into_response();
        }
        if self.rejects_before_reading_body() {
            // The body was not read to its end, so the server drops the connection after
            // this answer. Saying so keeps clients from returning it to their pool and
            // sending the next request into a closed socket (a flake seen in CI after 413).
            return (
                self.status(),
                [(axum::http::header::CONNECTION, "close")],
                Json(body),
            )
                .into_response();
        }
        (self.status(), Json(body)).into_response()
    }
}

impl From<crate::seams::StoreError> for ApiError {
    fn from(e: crate::seams::StoreError) -> Self {
        ApiError::StoreUnavailable(e.to_string())
    }
}
