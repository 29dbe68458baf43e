//! Route handlers. Each one checks its input completely before touching Kafka or
//! MongoDB: bad input gets a JSON error naming the field and never reaches Kafka.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use wiber_model::{
    new_message_id, now_ms, validate, validate_message_id, validate_user, Message, NewMessage,
    ValidationError, MAX_BODY_BYTES, MAX_SKIP,
};

use super::{ApiError, AppState, CountScope};

/// `POST /messages`: validate, publish with acks=all, answer only after Kafka's ack.
pub async fn post_message(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(HeaderMap, Json<Message>), ApiError> {
    check_json_content_type(&headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY_BYTES {
            return Err(ApiError::TooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
    }
    // The body within the request timeout, less a margin for the publish: a body
    // trickled in slowly is refused (408) before anything reaches Kafka, never cut off
    // mid-publish by the outer timeout (which would leave the client not knowing).
    let body_bound = st
        .limits
        .request_timeout
        .saturating_sub(st.limits.request_timeout / 4);
    let bytes = tokio::time::timeout(body_bound, to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| ApiError::BodyTimeout(body_bound))?
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_BODY_BYTES,
        })?;
    let mut new = parse_new_message(&bytes)?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .map_err(|_| ValidationError::new("Idempotency-Key", "must be visible ASCII"))?
            .to_string();
        validate_message_id("Idempotency-Key", &key)?;
        match &new.message_id {
            Some(id) if *id != key => {
                return Err(ValidationError::new(
                    "Idempotency-Key",
                    "differs from the body's messageId; send one or make them equal",
                )
                .into())
            }
            _ => new.message_id = Some(key),
        }
    }
    validate(&new)?;

    let timestamp = now_ms();
    // A test build's `reorder` bug may move it back; without the feature there is no hook.
    #[cfg(feature = "seeded-bugs")]
    let timestamp = match &st.accept_clock {
        Some(clock) => clock.timestamp(&new, timestamp),
        None => timestamp,
    };
    let id = new
        .message_id
        .clone()
        .unwrap_or_else(|| new_message_id(timestamp));
    let message = Message::accept(new, id, timestamp);
    let payload = serde_json::to_vec(&message).expect("a message serialises");
    let started = Instant::now();
    let result = st
        .publisher
        .publish(
            &st.topic,
            &message.conversation(),
            &payload,
            &message.message_id,
        )
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(d) => {
            st.metrics
                .produce_seconds
                .with_label_values(&["ok"])
                .observe(elapsed);
            st.metrics
                .produce_lane
                .with_label_values(&[d.lane.name()])
                .inc();
            tracing::debug!(message_id = %message.message_id, partition = d.partition, offset = d.offset, "message acknowledged by kafka");
            // Where the record is: a harness keeps it with the ack, so a message later
            // found missing from the store can be looked up in the log.
            let mut position = HeaderMap::new();
            position.insert(
                wiber_model::contract::headers::PARTITION,
                d.partition.into(),
            );
            position.insert(wiber_model::contract::headers::OFFSET, d.offset.into());
            Ok((position, Json(message)))
        }
        Err(e) => {
            st.metrics
                .produce_seconds
                .with_label_values(&["error"])
                .observe(elapsed);
            st.metrics
                .produce_errors
                .with_label_values(&[e.kind()])
                .inc();
            tracing::warn!(message_id = %message.message_id, error = %e, "message not acknowledged");
            Err(ApiError::KafkaUnavailable(e.to_string()))
        }
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct.to_string()))
    }
}

/// Parses the body field by field, so a wrong type is a 422 naming that field and only
/// text that is not JSON at all is a 400. Unknown fields are ignored, as the seed did.
fn parse_new_message(bytes: &[u8]) -> Result<NewMessage, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ValidationError::new("body", "must be a JSON object").into());
    };
    let required = |obj: &Map<String, Value>, field: &'static str| -> Result<String, ApiError> {
        match obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(ValidationError::new(field, "is required").into()),
            Some(_) => Err(ValidationError::new(field, "must be a string").into()),
        }
    };
    let message_id = match obj.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ValidationError::new("messageId", "must be a string").into()),
    };
    Ok(NewMessage {
        from_user: required(&obj, "fromUser")?,
        to_user: required(&obj, "toUser")?,
        content: required(&obj, "content")?,
        message_id,
    })
}

/// Reads an integer query parameter within `[min, max]`, naming it when it is not.
fn int_param(
    q: &HashMap<String, String>,
    names: &[&'static str],
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    for &name in names {
        if let Some(raw) = q.get(name) {
            let v: i64 = raw.parse().map_err(|_| {
                ValidationError::new(name, format!("must be an integer, got {raw:?}"))
            })?;
            if v < min || v > max {
                return Err(ValidationError::new(
                    name,
                    format!("must be between {min} and {max}, got {v}"),
                )
                .into());
            }
            return Ok(v);
        }
    }
    Ok(default)
}

/// `GET /messages/{user1}/{user2}?limit=50&skip=0` (`offset` is an alias of `skip`).
pub async fn conversation(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let Path((user1, user2)) = path.map_err(path_error)?;
    validate_user("user1", &user1)?;
    validate_user("user2", &user2)?;
    let limit = int_param(&q, &["limit"], 50, 1, 500)?;
    // Bounded: a deep OFFSET scans every row before it and holds a read connection
    // while it does.
    let skip = int_param(&q, &["skip", "offset"], 0, 0, MAX_SKIP as i64)?;
    Ok(Json(
        st.store
            .conversation(&user1, &user2, limit, skip as u64)
            .await?,
    ))
}

/// `GET /messages/user/{username}?limit=100`: newest first.
pub async fn user_messages(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let Path(user) = path.map_err(path_error)?;
    validate_user("username", &user)?;
    let limit = int_param(&q, &["limit"], 100, 1, 500)?;
    Ok(Json(st.store.user_recent(&user, limit).await?))
}

/// A path segment that is not a user name (its percent-encoding is not UTF-8): the same
/// JSON 422 naming the field as any other invalid user name, not axum's plain text.
fn path_error(r: PathRejection) -> ApiError {
    let key = match &r {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => Some(key.as_str()),
            _ => None,
        },
        _ => None,
    };
    // `ValidationError` names fields with static strings: the routes' parameter names.
    let field = match key {
        Some("user1") => "user1",
        Some("user2") => "user2",
        Some("username") => "username",
        _ => "path",
    };
    ApiError::Validation(ValidationError::new(
        field,
        format!("not a valid user name: {}", r.body_text()),
    ))
}

/// `GET /messages/count[?user1=&user2=]`: total, per user, or per conversation.
pub async fn count(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let user1 = q.get("user1").filter(|s| !s.is_empty()).cloned();
    let user2 = q.get("user2").filter(|s| !s.is_empty()).cloned();
    if let Some(u) = &user1 {
        validate_user("user1", u)?;
    }
    if let Some(u) = &user2 {
        validate_user("user2", u)?;
    }
    let scope = match (&user1, &user2) {
        (Some(a), Some(b)) => CountScope::Conversation(a.clone(), b.clone()),
        (Some(u), None) | (None, Some(u)) => CountScope::User(u.clone()),
        (None, None) => CountScope::All,
    };
    let n = st.store.count(&scope).await?;
    Ok(Json(json!({"count": n, "user1": user1, "user2": user2})))
}

pub async fn liveness() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// `GET /health/readiness`: Kafka (the topic's metadata: it exists and every partition
/// has a leader, so a produce can be acknowledged) and MongoDB (ping), checked
/// concurrently, each bounded, and the failing part named. Answered from the last check
/// while it is under a second old ([`super::readiness::Cache`]).
pub async fn readiness(State(st): State<AppState>) -> Response {
    let verdict = st
        .readiness
        .get(async {
            let bound = Duration::from_secs(2);
            // Kafka's check is given the bound and also held to it here: a check that
            // overran would otherwise hold the probe (and the orchestrator polling it).
            let kafka = within(bound, st.publisher.check(&st.topic, bound));
            let mongo = within(bound, async {
                st.store.ping().await.map_err(|e| e.to_string())
            });
            let (kafka, mongodb) = tokio::join!(kafka, mongo);
            super::readiness::Verdict { kafka, mongodb }
        })
        .await;
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => "connected".to_string(),
        Err(e) => format!("disconnected: {e}"),
    };
    let ready = verdict.ready();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "kafka": describe(&verdict.kafka),
        "mongodb": describe(&verdict.mongodb),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `check`'s answer, or an error naming the bound if it has none within it.
async fn within(
    bound: Duration,
    check: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(bound, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {bound:?}")))
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
