//! The seams between the services' logic and the adapters behind it: what the API needs
//! from Kafka ([`Publish`]) and from the store ([`ReadStore`]), what the consumer loop
//! needs from the group ([`RecordSource`]) and from the store ([`MessageStore`]), and the
//! plain types they trade in (no rdkafka, mongodb or tokio-postgres type crosses a seam).
//!
//! Here, below both the services (`api`, `consumer`) and the adapters (`kafka`, `store`,
//! `sql_reads`), so that neither side imports the other: the adapters implement these
//! traits, the services use them, and `wiring` is the one place that puts an adapter
//! behind a service. Tests serve the real router and run the real loop with fakes.
//!
//! The API's seams are held as `Arc<dyn ...>`, so their methods return boxed futures (a
//! trait with `async fn` cannot be a trait object); the consumer's are generic.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use wiber_model::contract::{dlq, StallReport};
use wiber_model::{Message, StoredMessage};

// ---------------------------------------------------------------------------------------
// The API's seams
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// The store's errors and writes (both services see them)
// ---------------------------------------------------------------------------------------

/// A store error, with what retrying it can do ([`FailureClass`]).
#[derive(Debug, thiserror::Error)]
#[error("mongodb: {detail}")]
pub struct StoreError {
    detail: String,
    class: FailureClass,
}

impl StoreError {
    /// An error described by `detail` (for stand-ins of the store, e.g. in tests), of
    /// unknown class.
    pub fn new(detail: impl Into<String>) -> StoreError {
        StoreError::of(FailureClass::Unknown, detail)
    }

    pub fn of(class: FailureClass, detail: impl Into<String>) -> StoreError {
        StoreError {
            detail: detail.into(),
            class,
        }
    }
}

impl Classify for StoreError {
    fn class(&self) -> FailureClass {
        self.class
    }
}

/// What an `insert_batch` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: usize,
    /// `_id`s that were already stored: redeliveries, de-duplicated.
    pub duplicates: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The consumer's seams
// ---------------------------------------------------------------------------------------

/// A record of the message topic as the loop sees it, whichever client fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Where the group resumes reading a partition: one past the last record done with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// The consumer group's side of the loop: records in, offsets committed, records the
/// store cannot take out to the dead-letter topic.
pub trait RecordSource {
    type Error: fmt::Display;

    /// The next record assigned to this member. Errors are transient: the loop logs
    /// them and reads again.
    fn recv(&self) -> impl Future<Output = Result<Record, Self::Error>> + Send;

    /// One attempt to publish `record` to the dead-letter topic as `class` with `reason`,
    /// waiting for the broker's ack (the loop retries until it comes).
    fn dead_letter(
        &self,
        record: &Record,
        class: dlq::Class,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Commits `positions` without waiting: a commit that is lost means redelivery,
    /// which the store de-duplicates, never loss.
    fn commit(&self, positions: &[Position]);

    /// Says, in the group's committed offsets, that these partitions are stalled: each
    /// position is where its partition is stuck (where it would resume anyway), with the
    /// report as the offset's metadata. Best effort: the log says it too.
    fn report_stall(&self, stalls: &[(Position, StallReport)]);

    /// Commits synchronously what [`RecordSource::commit`] was given, then leaves the group.
    fn close(&self);
}

/// How a failed write is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The store is unreachable, down, read-only or slow: retry the same write later.
    Transient,
    /// The store refuses these documents (a value it cannot hold, a document it
    /// rejects): retrying cannot help. The batch is split to isolate the refused ones.
    Permanent,
    /// Not known to be either: retried as transient, so nothing is dropped on a guess,
    /// and reported loudly past [`crate::consumer::Recovery::retry_bound`].
    Unknown,
}

/// A store error that knows its [`FailureClass`].
pub trait Classify {
    fn class(&self) -> FailureClass;
}

/// Where messages are stored.
pub trait MessageStore {
    type Error: fmt::Display + Classify;

    /// Writes every document of `batch` or fails as a whole (retrying is safe). A
    /// document whose `_id` is already stored is a de-duplication hit, reported in
    /// [`InsertOutcome::duplicates`], not an error.
    fn insert_batch(
        &self,
        batch: &[StoredMessage],
    ) -> impl Future<Output = Result<InsertOutcome, Self::Error>> + Send;

    /// The stored documents among `ids` (those not stored are absent): what a duplicate
    /// key is compared with, to tell a redelivery from an id reused with other content.
    fn stored(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<StoredMessage>, Self::Error>> + Send;
}
