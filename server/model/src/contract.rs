//! The service contract: what the stack's parts are called and how they are configured.
//!
//! One place for the names every other part relies on: the services a stack is made of
//! ([`Service`], [`InstanceId`]), the environment variables the server reads ([`env`]),
//! their defaults ([`defaults`]), the topic/group/database/collection a stack uses
//! ([`Names`]), and the bugs a test build can be told to have ([`SeededBug`]). The server's config, both runtimes of `wiberctl`, `bench` and `verify`
//! read them from here; a test holds `docker/docker-compose.yml` to them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Names of the environment variables the services read (as in the seed, plus ours).
pub mod env {
    pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
    pub const KAFKA_TOPIC: &str = "KAFKA_TOPIC";
    pub const KAFKA_DLQ_TOPIC: &str = "KAFKA_DLQ_TOPIC";
    pub const KAFKA_PARTITIONS: &str = "KAFKA_PARTITIONS";
    pub const KAFKA_REPLICATION_FACTOR: &str = "KAFKA_REPLICATION_FACTOR";
    /// The producer's `acks`: `all` (the delivery contract) or `1` (the unsafe profile a
    /// harness runs to show that its verdicts catch Kafka-level loss).
    pub const KAFKA_ACKS: &str = "KAFKA_ACKS";
    pub const KAFKA_CONSUMER_GROUP: &str = "KAFKA_CONSUMER_GROUP";
    pub const KAFKA_MESSAGE_TIMEOUT_MS: &str = "KAFKA_MESSAGE_TIMEOUT_MS";
    pub const KAFKA_LINGER_MS: &str = "KAFKA_LINGER_MS";
    pub const KAFKA_MAX_IN_FLIGHT: &str = "KAFKA_MAX_IN_FLIGHT";
    pub const KAFKA_PROMPT_MAX_RATE: &str = "KAFKA_PROMPT_MAX_RATE";
    pub const KAFKA_SESSION_TIMEOUT_MS: &str = "KAFKA_SESSION_TIMEOUT_MS";
    pub const MONGO_URI: &str = "MONGO_URI";
    pub const MONGO_DB: &str = "MONGO_DB";
    pub const MONGO_COLLECTION: &str = "MONGO_COLLECTION";
    pub const MONGO_WRITE_CONCERN: &str = "MONGO_WRITE_CONCERN";
    pub const MONGO_JOURNAL: &str = "MONGO_JOURNAL";
    /// The PostgreSQL under FerretDB (`postgres://...`), when the store is FerretDB on
    /// PostgreSQL: the API then reads its pages and counts there, in SQL, from indexes
    /// FerretDB cannot use (see `wiber_model::reads::sql`). Unset: every read goes
    /// through `MONGO_URI`.
    pub const STORE_SQL_URL: &str = "WIBER_STORE_SQL_URL";
    pub const CONSUMER_BATCH_SIZE: &str = "CONSUMER_BATCH_SIZE";
    pub const CONSUMER_BATCH_LINGER_MS: &str = "CONSUMER_BATCH_LINGER_MS";
    pub const CONSUMER_BUSY_LINGER_MS: &str = "CONSUMER_BUSY_LINGER_MS";
    pub const CONSUMER_BUSY_RATE: &str = "CONSUMER_BUSY_RATE";
    pub const CONSUMER_MAX_BACKOFF_MS: &str = "CONSUMER_MAX_BACKOFF_MS";
    /// How long (ms) a partition with records in hand may go without advancing before
    /// the consumer reports it stalled (log, metric, the group's offset metadata).
    pub const CONSUMER_STALL_AFTER_MS: &str = "CONSUMER_STALL_AFTER_MS";
    /// A record retried this long (ms) for an error of unknown class is reported loudly
    /// (it stays retried: nothing is dropped on a guess).
    pub const CONSUMER_RETRY_BOUND_MS: &str = "CONSUMER_RETRY_BOUND_MS";
    /// ... or this many attempts, whichever comes first.
    pub const CONSUMER_RETRY_BOUND_ATTEMPTS: &str = "CONSUMER_RETRY_BOUND_ATTEMPTS";
    /// Requests the API serves at once; more get a fast 503 with `Retry-After`.
    pub const API_MAX_CONCURRENT: &str = "API_MAX_CONCURRENT";
    /// Longest time (ms) a client may take to send a request's headers.
    pub const API_HEADER_TIMEOUT_MS: &str = "API_HEADER_TIMEOUT_MS";
    /// Longest time (ms) a request may take from its headers to its answer.
    pub const API_REQUEST_TIMEOUT_MS: &str = "API_REQUEST_TIMEOUT_MS";
    pub const API_HOST: &str = "API_HOST";
    pub const API_PORT: &str = "API_PORT";
    /// The instance's name in logs, e.g. `consumer#2` (set by the runtimes).
    pub const WIBER_INSTANCE: &str = "WIBER_INSTANCE";
    /// Log filter (tracing's `EnvFilter`).
    pub const RUST_LOG: &str = "RUST_LOG";
    /// The one [`SeededBug`](super::SeededBug) a test build of the services runs with.
    pub const WIBER_SEEDED_BUG: &str = "WIBER_SEEDED_BUG";
    /// How often the seeded bug strikes (every Nth message; default
    /// [`defaults::SEEDED_BUG_EVERY`](super::defaults::SEEDED_BUG_EVERY)).
    pub const WIBER_SEEDED_BUG_EVERY: &str = "WIBER_SEEDED_BUG_EVERY";

    /// The seeded-bug variables: read by the services, but deliberately not in [`ALL`].
    /// `ALL` is what a deployment may set (the compose check holds the compose file to
    /// it), and no deployment may set these: only a harness, on a test build.
    pub const SEEDED: [&str; 2] = [WIBER_SEEDED_BUG, WIBER_SEEDED_BUG_EVERY];

    /// Every variable a deployment may set on the services, for checks of deployment
    /// files (the services also read [`SEEDED`], which no deployment may set).
    pub const ALL: [&str; 33] = [
        KAFKA_BOOTSTRAP_SERVERS,
        STORE_SQL_URL,
        KAFKA_TOPIC,
        KAFKA_DLQ_TOPIC,
        KAFKA_PARTITIONS,
        KAFKA_REPLICATION_FACTOR,
        KAFKA_ACKS,
        KAFKA_CONSUMER_GROUP,
        KAFKA_MESSAGE_TIMEOUT_MS,
        KAFKA_LINGER_MS,
        KAFKA_MAX_IN_FLIGHT,
        KAFKA_PROMPT_MAX_RATE,
        KAFKA_SESSION_TIMEOUT_MS,
        MONGO_URI,
        MONGO_DB,
        MONGO_COLLECTION,
        MONGO_WRITE_CONCERN,
        MONGO_JOURNAL,
        CONSUMER_BATCH_SIZE,
        CONSUMER_BATCH_LINGER_MS,
        CONSUMER_BUSY_LINGER_MS,
        CONSUMER_BUSY_RATE,
        CONSUMER_MAX_BACKOFF_MS,
        CONSUMER_STALL_AFTER_MS,
        CONSUMER_RETRY_BOUND_MS,
        CONSUMER_RETRY_BOUND_ATTEMPTS,
        API_MAX_CONCURRENT,
        API_HEADER_TIMEOUT_MS,
        API_REQUEST_TIMEOUT_MS,
        API_HOST,
        API_PORT,
        WIBER_INSTANCE,
        RUST_LOG,
    ];
}

/// The producer's `acks` (`KAFKA_ACKS`). `All` is the delivery contract: a POST is acked
/// only once every in-sync replica has the record (with idempotence, so retries never
/// duplicate). `Leader` (`acks=1`, no idempotence) is the *unsafe profile*: the leader
/// alone vouches for a record, so a leader lost before its followers copied it loses
/// acknowledged messages. It exists so a harness can show its loss check catching that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Acks {
    #[default]
    All,
    Leader,
}

impl Acks {
    /// The value librdkafka (and `KAFKA_ACKS`) takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
        }
    }
}

impl FromStr for Acks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" | "-1" => Ok(Acks::All),
            "1" => Ok(Acks::Leader),
            other => Err(format!(
                "unknown acks {other:?}: expected all (the delivery contract) or 1 (unsafe: the leader alone)"
            )),
        }
    }
}

/// Headers of the API's `200` answer to `POST /messages` (in addition to the message's
/// JSON, which the contract fixes): where Kafka put the acknowledged record. A harness
/// keeps them with each ack, so a message later found lost can be looked up in the log.
pub mod headers {
    pub const PARTITION: &str = "wiber-partition";
    pub const OFFSET: &str = "wiber-offset";
}

/// The dead-letter topic's records: the original record (same key, same payload, byte for
/// byte) with headers that say why it is there and where it came from, so `wiberctl dlq`
/// can list, show and replay it, and `verify` can tell a dead-lettered message from a lost
/// one.
pub mod dlq {
    use std::fmt;
    use std::str::FromStr;

    use serde::{Deserialize, Serialize};

    /// Why the record is there ([`Class`]).
    pub const CLASS: &str = "wiber-dlq-class";
    /// The reason in words: the store's error, or why the record does not decode.
    pub const REASON: &str = "wiber-dlq-reason";
    pub const SOURCE_TOPIC: &str = "wiber-source-topic";
    pub const SOURCE_PARTITION: &str = "wiber-source-partition";
    pub const SOURCE_OFFSET: &str = "wiber-source-offset";
    /// When the consumer dead-lettered it (ms since the epoch).
    pub const DEAD_LETTERED_AT: &str = "wiber-dead-lettered-at";
    /// Set on a record `wiberctl dlq replay` re-published to the message topic: the DLQ
    /// offset it came from (so a replay can be traced, and is never replayed twice by
    /// mistake without being seen).
    pub const REPLAYED_FROM: &str = "wiber-replayed-from";

    /// Why a record was dead-lettered.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Class {
        /// The record is not a wiber message (no payload, not JSON, fails validation).
        Undecodable,
        /// The store refused the message for good (retrying cannot help), e.g. a string
        /// PostgreSQL's jsonb cannot hold.
        Refused,
        /// Its messageId is already stored with other content: an id reused by a client.
        /// The stored message stays; this one is kept here.
        Conflict,
    }

    impl Class {
        pub const ALL: [Class; 3] = [Class::Undecodable, Class::Refused, Class::Conflict];

        pub fn name(self) -> &'static str {
            match self {
                Class::Undecodable => "undecodable",
                Class::Refused => "refused",
                Class::Conflict => "conflict",
            }
        }
    }

    impl fmt::Display for Class {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.name())
        }
    }

    impl FromStr for Class {
        type Err = String;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            Class::ALL
                .into_iter()
                .find(|c| c.name() == s.trim())
                .ok_or_else(|| {
                    format!("unknown dead-letter class {s:?}: expected undecodable, refused or conflict")
                })
        }
    }
}

/// What a consumer says, in the metadata of the group's committed offset of a partition,
/// while that partition is stalled: it commits the offset it is stuck at (where it
/// would resume anyway) with this as JSON, so anyone who reads the group's offsets
/// (`stack status`, `top`, `verify`) sees the stall and its cause without a port of the
/// consumer's own. The next ordinary commit of the partition clears it (empty metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StallReport {
    /// The instance that holds the partition, e.g. `consumer#2`.
    pub instance: String,
    /// The offset it is stuck at (the first record not yet stored or dead-lettered).
    pub offset: i64,
    /// Since when the partition has not advanced (ms since the epoch).
    pub since_ms: i64,
    /// Write attempts so far.
    pub attempts: u64,
    /// The last error, as the store gave it.
    pub error: String,
}

impl StallReport {
    /// Kafka keeps offset metadata up to `offset.metadata.max.bytes` (4,096 by default):
    /// the error is cut to fit well inside it.
    pub const MAX_ERROR_BYTES: usize = 1024;

    /// The report as offset metadata.
    pub fn to_metadata(&self) -> String {
        let mut r = self.clone();
        if r.error.len() > Self::MAX_ERROR_BYTES {
            let mut end = Self::MAX_ERROR_BYTES;
            while !r.error.is_char_boundary(end) {
                end -= 1;
            }
            r.error.truncate(end);
        }
        serde_json::to_string(&r).unwrap_or_default()
    }

    /// The report in a committed offset's metadata, if it holds one.
    pub fn from_metadata(metadata: &str) -> Option<StallReport> {
        if metadata.is_empty() {
            return None;
        }
        serde_json::from_str(metadata).ok()
    }

    /// `stalled p3@1042 for 2m: <error>` as `stack status` and `top` print it.
    pub fn describe(&self, partition: i32, now_ms: i64) -> String {
        let secs = ((now_ms - self.since_ms).max(0) / 1000) as u64;
        let age = if secs >= 3600 {
            format!("{}h{}m", secs / 3600, secs % 3600 / 60)
        } else if secs >= 60 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        format!(
            "stalled p{partition}@{} for {age} ({} attempts, {}): {}",
            self.offset, self.attempts, self.instance, self.error
        )
    }
}

/// Defaults of the services' settings (what a service uses when its variable is unset).
pub mod defaults {
    pub const KAFKA_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
    pub const TOPIC: &str = "wiber.messages";
    pub const CONSUMER_GROUP: &str = "wiber-consumers";
    pub const PARTITIONS: i32 = 6;
    pub const REPLICATION_FACTOR: i32 = 1;
    pub const MESSAGE_TIMEOUT_MS: u64 = 5000;
    /// Measured on 2 cores with everything co-located: 2 ms capped the stack at ~1,350
    /// req/s (the broker burnt its CPU on tiny produce requests); 10 ms sustained 2,000
    /// req/s at the same concurrency, for a few ms more latency at low load.
    pub const LINGER_MS: u64 = 10;
    /// librdkafka's default with idempotence. Measured side by side on 2 cores (local
    /// runtime, release build, 20 s per point; ack p50 / p99 in ms):
    ///
    /// | linger.ms, in flight | 200 req/s  | 5000 req/s | 5000 req/s e2e p99 |
    /// |---|---|---|---|
    /// | 10, 5 (default) | 12.1 / 16.3 | 10.0 / 39.3 | 157 ms |
    /// | 0, 1            |  2.3 / 7.1  |  6.1 / 83.3 | 667 ms |
    /// | 0, 5            |  2.4 / 7.0  |  7.7 / 70.7 | 620 ms |
    /// | 5, 1            |  8.0 / 12.1 |  7.2 / 41.3 | 180 ms |
    ///
    /// No lingering answers 5x sooner at light load but loads the broker with small
    /// requests at 5000/s (ack p99 over 50 ms). Neither fixed value serves both, so the
    /// API has two producers and picks one by its publish rate ([`PROMPT_MAX_RATE`]):
    /// this linger applies to the batching one only.
    pub const MAX_IN_FLIGHT: u32 = 5;
    /// The prompt producer (no linger) serves while the API publishes fewer records per
    /// second than this; the batching one (`LINGER_MS`) above it. Below 1000/s a 10 ms
    /// linger gathers 10 records or fewer: little batching for 10 ms on every ack.
    /// Measured side by side (local runtime, release build, 20 s per point, a busy
    /// machine; ack p50 / p99 in ms): at 200 req/s 1.6 / 7.0 with two producers against
    /// 11.9 / 16.8 with the batching one alone; at 5000 req/s 9.8 / 41.7 against
    /// 10.4 / 55.7 (the rate keeps the batching producer in use there).
    pub const PROMPT_MAX_RATE: u64 = 1000;
    pub const SESSION_TIMEOUT_MS: u64 = 10_000;
    pub const MONGO_URI: &str = "mongodb://127.0.0.1:27017";
    pub const MONGO_DB: &str = "wiber";
    pub const MONGO_COLLECTION: &str = "messages";
    pub const MONGO_WRITE_CONCERN: &str = "majority";
    pub const MONGO_JOURNAL: bool = true;
    pub const BATCH_SIZE: usize = 500;
    pub const BATCH_LINGER_MS: u64 = 20;
    /// Why 100 ms from 1,000 records/s: see `Batching::busy_wait` in the server.
    pub const BUSY_LINGER_MS: u64 = 100;
    pub const BUSY_RATE: u64 = 1000;
    pub const MAX_BACKOFF_MS: u64 = 5000;
    pub const API_HOST: &str = "0.0.0.0";
    pub const API_PORT: u16 = 8000;
    /// A partition not advanced for 30 s while it has records in hand is stalled.
    pub const STALL_AFTER_MS: u64 = 30_000;
    /// A record retried for 5 minutes, or 100 attempts, for an error of unknown class is
    /// reported loudly (and retried on).
    pub const RETRY_BOUND_MS: u64 = 300_000;
    pub const RETRY_BOUND_ATTEMPTS: u64 = 100;
    /// Requests in service at once. Measured: 5,000 req/s at p99 ~50 ms holds ~250 in
    /// flight; 1,024 leaves room for bursts while bounding memory and file descriptors.
    pub const API_MAX_CONCURRENT: u64 = 1024;
    /// A client gets 10 s to send its request's headers (slowloris bound).
    pub const API_HEADER_TIMEOUT_MS: u64 = 10_000;
    /// A request gets 30 s from its headers to its answer (a POST's Kafka wait is bounded
    /// by KAFKA_MESSAGE_TIMEOUT_MS well inside it; a body trickled in slowly is not).
    pub const API_REQUEST_TIMEOUT_MS: u64 = 30_000;
    /// A seeded bug strikes every 10th message unless `WIBER_SEEDED_BUG_EVERY` says otherwise.
    pub const SEEDED_BUG_EVERY: u32 = 10;
}

/// The collection whose existence, when `collection` is created, asks FerretDB-on-
/// PostgreSQL to count `collection` (it stays empty): the counters (`total`, `u:<user>`,
/// `c:<conversation>`) are rows of the schema's `_wiber_counts` table, kept exactly by
/// triggers (see `server/sql/ferretdb-postgres.sql`), trusted only while its `$exact` row
/// is there ([`crate::reads::sql::counters`]).
pub fn counts_collection(collection: &str) -> String {
    format!("{collection}_counts")
}

/// The names a stack's data lives under: which topic the api publishes to, which group
/// consumes it, where the consumers store it. A runtime knows them for its stack, so
/// `bench`, `verify` and scenarios look where the services actually write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    pub topic: String,
    pub group: String,
    pub db: String,
    pub collection: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            topic: defaults::TOPIC.into(),
            group: defaults::CONSUMER_GROUP.into(),
            db: defaults::MONGO_DB.into(),
            collection: defaults::MONGO_COLLECTION.into(),
        }
    }
}

impl Names {
    /// The variables that carry these names to a service.
    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (env::KAFKA_TOPIC.into(), self.topic.clone()),
            (env::KAFKA_CONSUMER_GROUP.into(), self.group.clone()),
            (env::MONGO_DB.into(), self.db.clone()),
            (env::MONGO_COLLECTION.into(), self.collection.clone()),
        ]
    }

    /// Reads the names back from a service's environment (`KEY=value` strings, as a
    /// container reports them); unset ones keep their defaults, as the service would.
    pub fn from_env<'a>(vars: impl IntoIterator<Item = &'a str>) -> Names {
        let mut n = Names::default();
        for kv in vars {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                env::KAFKA_TOPIC => n.topic = v.to_string(),
                env::KAFKA_CONSUMER_GROUP => n.group = v.to_string(),
                env::MONGO_DB => n.db = v.to_string(),
                env::MONGO_COLLECTION => n.collection = v.to_string(),
                _ => {}
            }
        }
        n
    }
}

/// A bug a test build of the services (`--features seeded-bugs`) can be told to have with
/// `WIBER_SEEDED_BUG=<name>`, so the harness can prove `wiberctl verify` catches it.
/// Each one breaks one promise of the delivery contract; [`SeededBug::service`] says
/// which process must get the variable. "Every Nth" is `WIBER_SEEDED_BUG_EVERY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeededBug {
    /// API: every Nth POST answers 200 with the normal body but is never produced (lost).
    AckWithoutProduce,
    /// Consumer: commits a batch's offsets before writing it (lost on a failed write or crash).
    CommitBeforeWrite,
    /// Consumer: on a store error other than a duplicate key, logs, commits and drops
    /// the batch, as the original Python consumer did (lost).
    SkipOnStoreError,
    /// Consumer: stores every record under a fresh `_id`, so a redelivery or an API
    /// retry with the same messageId is stored twice (duplicated).
    NoDedup,
    /// API: every Nth message of a conversation gets a timestamp earlier than the one
    /// before it, and is answered with it (reordered).
    Reorder,
    /// Consumer: every Nth stored message has one character of its content changed (corrupted).
    Corrupt,
    /// API: every POST gets a fast 503 and nothing is produced (no goodput).
    RefuseAll,
    /// Consumer: a write the store refuses for good is retried forever, batch and all, as
    /// the consumer did before poison records were isolated (the poison record is never
    /// dead-lettered, and every partition of its batch stalls behind it).
    RetryForever,
}

impl SeededBug {
    /// Every seeded bug, in the order they are documented.
    pub const ALL: [SeededBug; 8] = [
        SeededBug::AckWithoutProduce,
        SeededBug::CommitBeforeWrite,
        SeededBug::SkipOnStoreError,
        SeededBug::NoDedup,
        SeededBug::Reorder,
        SeededBug::Corrupt,
        SeededBug::RefuseAll,
        SeededBug::RetryForever,
    ];

    /// The value of `WIBER_SEEDED_BUG` that selects this bug.
    pub fn name(self) -> &'static str {
        match self {
            SeededBug::AckWithoutProduce => "ack-without-produce",
            SeededBug::CommitBeforeWrite => "commit-before-write",
            SeededBug::SkipOnStoreError => "skip-on-store-error",
            SeededBug::NoDedup => "no-dedup",
            SeededBug::Reorder => "reorder",
            SeededBug::Corrupt => "corrupt",
            SeededBug::RefuseAll => "refuse-all",
            SeededBug::RetryForever => "retry-forever",
        }
    }

    /// The service whose instances must run with the variable for the bug to show.
    pub fn service(self) -> Service {
        match self {
            SeededBug::AckWithoutProduce | SeededBug::Reorder | SeededBug::RefuseAll => {
                Service::Api
            }
            SeededBug::CommitBeforeWrite
            | SeededBug::SkipOnStoreError
            | SeededBug::NoDedup
            | SeededBug::Corrupt
            | SeededBug::RetryForever => Service::Consumer,
        }
    }

    /// The names, comma separated, for error messages and help texts.
    pub fn names() -> String {
        SeededBug::ALL.map(SeededBug::name).join(", ")
    }
}

impl fmt::Display for SeededBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a `WIBER_SEEDED_BUG` value that names no seeded bug.
#[derive(Debug, thiserror::Error)]
#[error("unknown seeded bug {0:?}: expected one of {names}", names = SeededBug::names())]
pub struct UnknownSeededBug(pub String);

impl FromStr for SeededBug {
    type Err = UnknownSeededBug;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        SeededBug::ALL
            .into_iter()
            .find(|b| b.name() == wanted)
            .ok_or_else(|| UnknownSeededBug(s.to_string()))
    }
}

/// The kinds of process a Wiber stack is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The Kafka broker (single KRaft node, broker + controller).
    Kafka,
    /// The PostgreSQL cluster FerretDB keeps its data in (Debian's PostgreSQL 15). A
    /// stack on the official `mongo` image has none.
    Postgres,
    /// The MongoDB-wire store (MongoDB, or FerretDB on PostgreSQL).
    Mongo,
    /// The HTTP API (`wiber-server api`).
    Api,
    /// A consumer-group member (`wiber-server consumer`).
    Consumer,
}

impl Service {
    /// All services, in start order (dependencies first: FerretDB needs its PostgreSQL).
    pub const ALL: [Service; 5] = [
        Service::Kafka,
        Service::Postgres,
        Service::Mongo,
        Service::Consumer,
        Service::Api,
    ];

    /// The name used on the command line, in logs, container names and compose services.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Postgres => "postgres",
            Service::Mongo => "mongo",
            Service::Api => "api",
            Service::Consumer => "consumer",
        }
    }

    /// Whether this service runs our `wiber-server` binary (and so reads [`env`]).
    pub fn is_ours(self) -> bool {
        matches!(self, Service::Api | Service::Consumer)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown service or malformed instance id.
#[derive(Debug, thiserror::Error)]
pub enum ParseIdError {
    #[error("unknown service {0:?}: expected one of kafka, postgres, mongo, api, consumer")]
    UnknownService(String),
    #[error("bad instance index in {0:?}: expected service#N with N >= 1, e.g. consumer#2")]
    BadIndex(String),
}

impl FromStr for Service {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kafka" => Ok(Service::Kafka),
            "postgres" | "postgresql" | "pg" => Ok(Service::Postgres),
            // "ferretdb" is accepted because that is what runs locally.
            "mongo" | "mongodb" | "ferretdb" => Ok(Service::Mongo),
            "api" => Ok(Service::Api),
            "consumer" => Ok(Service::Consumer),
            _ => Err(ParseIdError::UnknownService(s.to_string())),
        }
    }
}

/// One instance of a service: `consumer#2` is the second consumer (indexes are 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub service: Service,
    pub index: u32,
}

impl InstanceId {
    pub fn new(service: Service, index: u32) -> Self {
        InstanceId { service, index }
    }

    /// The first (often only) instance of a service.
    pub fn first(service: Service) -> Self {
        InstanceId { service, index: 1 }
    }

    /// A file-name-friendly form, `consumer-2` (no `#`, which shells treat as a comment).
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.service.name(), self.index)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.service.name(), self.index)
    }
}

impl FromStr for InstanceId {
    type Err = ParseIdError;

    /// Parses `consumer`, `consumer#2` (and `consumer-2`, the [`InstanceId::file_stem`] form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, index) = match s.split_once('#').or_else(|| s.split_once('-')) {
            Some((name, index)) => {
                let index: u32 = index
                    .parse()
                    .map_err(|_| ParseIdError::BadIndex(s.to_string()))?;
                if index == 0 {
                    return Err(ParseIdError::BadIndex(s.to_string()));
                }
                (name, index)
            }
            None => (s, 1),
        };
        Ok(InstanceId {
            service: name.parse()?,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_parse_and_display() {
        let id: InstanceId = "consumer#2".parse().unwrap();
        assert_eq!(id, InstanceId::new(Service::Consumer, 2));
        assert_eq!(id.to_string(), "consumer#2");
        assert_eq!(id.file_stem(), "consumer-2");
        assert_eq!("consumer-2".parse::<InstanceId>().unwrap(), id);
        assert_eq!(
            "kafka".parse::<InstanceId>().unwrap(),
            InstanceId::first(Service::Kafka)
        );
        assert_eq!("ferretdb".parse::<Service>().unwrap(), Service::Mongo);
        assert_eq!(
            "postgres#1".parse::<InstanceId>().unwrap(),
            InstanceId::first(Service::Postgres)
        );
        assert_eq!(Service::Postgres.to_string(), "postgres");
        // FerretDB starts after the PostgreSQL it stores into.
        let rank = |s| Service::ALL.iter().position(|x| *x == s).unwrap();
        assert!(rank(Service::Postgres) < rank(Service::Mongo));
        assert!("consumer#0".parse::<InstanceId>().is_err());
        assert!("zookeeper".parse::<InstanceId>().is_err());
    }

    #[test]
    fn seeded_bugs_parse_display_and_serialize_by_name() {
        for b in SeededBug::ALL {
            assert_eq!(b.name().parse::<SeededBug>().unwrap(), b);
            assert_eq!(b.to_string(), b.name());
            assert_eq!(serde_json::to_value(b).unwrap(), b.name());
        }
        assert_eq!(
            " No_Dedup ".parse::<SeededBug>().unwrap(),
            SeededBug::NoDedup
        );
        let e = "dropall".parse::<SeededBug>().unwrap_err().to_string();
        assert!(
            e.contains("\"dropall\"") && e.contains("ack-without-produce, commit-before-write"),
            "{e}"
        );
        // A deployment may never set them: they are not in ALL.
        for v in env::SEEDED {
            assert!(!env::ALL.contains(&v), "{v} must not be in env::ALL");
        }
    }

    #[test]
    fn names_round_trip_through_the_environment() {
        let n = Names {
            topic: "t".into(),
            group: "g".into(),
            db: "d".into(),
            collection: "c".into(),
        };
        let env: Vec<String> = n.to_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(Names::from_env(env.iter().map(String::as_str)), n);
        assert_eq!(Names::from_env(["PATH=/bin"]), Names::default());
        for (k, _) in n.to_env() {
            assert!(env::ALL.contains(&k.as_str()), "{k} is not in env::ALL");
        }
    }
}
