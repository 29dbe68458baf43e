//! The API's two seams: what it needs from Kafka ([`Publish`]) and from MongoDB
//! ([`ReadStore`]). The real adapters are [`kafka::Publisher`](crate::kafka::Publisher)
//! and [`store::Store`](crate::store::Store); tests serve the real router with fakes.
//!
//! Handlers hold them as `Arc<dyn ...>`, so the methods return boxed futures (a trait
//! with `async fn` cannot be a trait object) and take only our own types.

use std::time::Duration;

use futures::future::BoxFuture;
use wiber_model::Message;

use crate::store::StoreError;

/// Where Kafka stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    /// Which of the publisher's producers carried it (for the metrics).
    pub lane: Lane,
}

/// The publisher's two producers (see `kafka::Publisher`): `prompt` sends at once (light
/// load), `batching` lingers to batch (under load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Prompt,
    Batching,
}

impl Lane {
    pub fn name(self) -> &'static str {
        match self {
            Lane::Prompt => "prompt",
            Lane::Batching => "batching",
        }
    }
}

/// Why a publish failed. Every variant means "not acknowledged": the API answers 503.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka did not acknowledge the message within {0:?}: {1}")]
    Timeout(Duration, String),
    #[error("kafka rejected the message: {0}")]
    Rejected(String),
    #[error(
        "all kafka brokers are down; not waiting for a timeout (retry with the same messageId)"
    )]
    BrokersDown,
}

impl PublishError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::Timeout(..) => "timeout",
            PublishError::Rejected(_) => "rejected",
            PublishError::BrokersDown => "brokers_down",
        }
    }
}

/// Publishing accepted messages: the API answers 200 only once `publish` resolved `Ok`.
pub trait Publish: Send + Sync + 'static {
    /// Sends `payload` under `key` to `topic` and resolves when Kafka acknowledged it
    /// (acks=all), or fails within a bounded time. `correlation_id` travels with the
    /// record so the consumer's logs can be joined to the request's.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a [u8],
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, PublishError>>;

    /// Readiness: a broker answers and `topic` exists. The handler bounds the wait by
    /// `timeout` too, so an implementation that overruns is reported, not waited for.
    fn check<'a>(&'a self, topic: &'a str, timeout: Duration) -> BoxFuture<'a, Result<(), String>>;
}

/// Which messages a count covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountScope {
    All,
    User(String),
    Conversation(String, String),
}

/// The queries behind the GET routes, and readiness.
pub trait ReadStore: Send + Sync + 'static {
    /// Both directions of the conversation of `a` and `b`, oldest first, ordered by
    /// (timestamp, messageId): `limit` of them after skipping `skip`.
    fn conversation<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
        limit: i64,
        skip: u64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>>;

    /// The `limit` most recent messages `user` sent or received, newest first.
    fn user_recent<'a>(
        &'a self,
        user: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Message>, StoreError>>;

    /// How many messages `scope` covers.
    fn count<'a>(&'a self, scope: &'a CountScope) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Readiness: the store answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
