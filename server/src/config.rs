//! Configuration of both services, from flags or the environment (names as in the seed:
//! `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC`, `KAFKA_CONSUMER_GROUP`, `MONGO_URI`,
//! `MONGO_DB`, `MONGO_COLLECTION`, plus the `WIBER_*`/`API_*` knobs added here).
//!
//! The variable names and defaults are not spelled here: they come from the service
//! contract ([`wiber_model::contract`]), which `wiberctl`'s runtimes and the compose file
//! are held to as well, so the services and their deployments cannot drift apart.

use std::time::Duration;

use clap::Args;
use wiber_model::contract::{defaults, env};

/// Where Kafka is and how the topics look. Both services create the topics at start
/// (never relying on broker auto-create), so both need the partition settings.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, default_value = defaults::KAFKA_BOOTSTRAP_SERVERS)]
    pub bootstrap_servers: String,
    /// Topic messages are published to.
    #[arg(long, env = env::KAFKA_TOPIC, default_value = defaults::TOPIC)]
    pub topic: String,
    /// Dead-letter topic for records the consumer cannot decode (default: TOPIC.dlq).
    #[arg(long, env = env::KAFKA_DLQ_TOPIC)]
    pub dlq_topic: Option<String>,
    /// Partitions of the topics when the services create them.
    #[arg(long, env = env::KAFKA_PARTITIONS, default_value_t = defaults::PARTITIONS)]
    pub partitions: i32,
    /// Replication factor of the topics when the services create them.
    #[arg(long, env = env::KAFKA_REPLICATION_FACTOR, default_value_t = defaults::REPLICATION_FACTOR)]
    pub replication_factor: i32,
}

impl KafkaConfig {
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

/// Where MongoDB is and how writes are acknowledged.
#[derive(Debug, Clone, Args)]
pub struct MongoConfig {
    /// MongoDB connection string.
    #[arg(long, env = env::MONGO_URI, default_value = defaults::MONGO_URI)]
    pub mongo_uri: String,
    /// Database holding the messages.
    #[arg(long, env = env::MONGO_DB, default_value = defaults::MONGO_DB)]
    pub mongo_db: String,
    /// Collection holding the messages.
    #[arg(long, env = env::MONGO_COLLECTION, default_value = defaults::MONGO_COLLECTION)]
    pub mongo_collection: String,
    /// Write concern `w` for stored messages: `majority` or a number of nodes.
    #[arg(long, env = env::MONGO_WRITE_CONCERN, default_value = defaults::MONGO_WRITE_CONCERN)]
    pub write_concern: String,
    /// Whether writes wait for the journal.
    #[arg(long, env = env::MONGO_JOURNAL, default_value_t = defaults::MONGO_JOURNAL, action = clap::ArgAction::Set)]
    pub journal: bool,
}

/// The HTTP API service.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// The PostgreSQL under FerretDB (postgres://user@host:port/database): pages and
    /// counts are read there in SQL, from indexes FerretDB cannot use. Unset or empty:
    /// every read goes through MONGO_URI.
    #[arg(long, env = env::STORE_SQL_URL, value_name = "URL")]
    pub store_sql_url: Option<String>,
    /// Address to listen on.
    #[arg(long, env = env::API_HOST, default_value = defaults::API_HOST)]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = env::API_PORT, default_value_t = defaults::API_PORT)]
    pub port: u16,
    /// Upper bound, in ms, on how long a POST waits for Kafka's acknowledgement before it
    /// answers 503 (librdkafka's `message.timeout.ms`).
    #[arg(long, env = env::KAFKA_MESSAGE_TIMEOUT_MS, default_value_t = defaults::MESSAGE_TIMEOUT_MS)]
    pub message_timeout_ms: u64,
    /// How long the producer waits to fill a batch (`linger.ms`): throughput vs latency.
    // Why the default is 10 ms (measured): see `contract::defaults::LINGER_MS`.
    #[arg(long, env = env::KAFKA_LINGER_MS, default_value_t = defaults::LINGER_MS)]
    pub linger_ms: u64,
    /// Produce requests in flight per broker connection (1..5 with idempotence): while
    /// they are out, new messages wait and go out together in the next request.
    // Why the default (measured): see `contract::defaults::MAX_IN_FLIGHT`.
    #[arg(long, env = env::KAFKA_MAX_IN_FLIGHT, default_value_t = defaults::MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..=5))]
    pub max_in_flight: u32,
    /// Publishes go out at once (no linger) while the API publishes fewer than this many
    /// records per second, and linger to batch above it; 0: always linger.
    // Why the default (measured): see `contract::defaults::PROMPT_MAX_RATE`.
    #[arg(long, env = env::KAFKA_PROMPT_MAX_RATE, default_value_t = defaults::PROMPT_MAX_RATE)]
    pub prompt_max_rate: u64,
    /// The producer's acks: `all` (the delivery contract: every in-sync replica has the
    /// record before the POST is acked) or `1` (unsafe, for fault demonstrations only:
    /// the leader alone, without idempotence).
    #[arg(long, env = env::KAFKA_ACKS, default_value = "all")]
    pub acks: wiber_model::contract::Acks,
    /// Requests served at once; more get a fast 503 with `Retry-After` (load shedding:
    /// an overloaded API answers at once instead of queueing until clients time out).
    /// Health and metrics are not counted.
    #[arg(long, env = env::API_MAX_CONCURRENT, default_value_t = defaults::API_MAX_CONCURRENT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent: u64,
    /// Longest time, in ms, a client may take to send its request's headers; a slower
    /// one is disconnected (slowloris).
    #[arg(long, env = env::API_HEADER_TIMEOUT_MS, default_value_t = defaults::API_HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Longest time, in ms, from a request's headers to its answer: a body trickled in
    /// slower gets 408, anything else over it 503.
    #[arg(long, env = env::API_REQUEST_TIMEOUT_MS, default_value_t = defaults::API_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
}

impl ApiConfig {
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }
}

/// The consumer service.
#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// Consumer group shared by all consumer instances.
    #[arg(long, env = env::KAFKA_CONSUMER_GROUP, default_value = defaults::CONSUMER_GROUP)]
    pub group: String,
    /// Largest number of records written in one `insert_many`.
    #[arg(long, env = env::CONSUMER_BATCH_SIZE, default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: usize,
    /// How long, in ms, a batch waits for more records once it holds one.
    #[arg(long, env = env::CONSUMER_BATCH_LINGER_MS, default_value_t = defaults::BATCH_LINGER_MS)]
    pub batch_linger_ms: u64,
    /// How long, in ms, a batch waits in all when records came faster than
    /// CONSUMER_BUSY_RATE during the first linger: fewer, larger writes when busy.
    #[arg(long, env = env::CONSUMER_BUSY_LINGER_MS, default_value_t = defaults::BUSY_LINGER_MS)]
    pub busy_linger_ms: u64,
    /// Records per second into this consumer from which batches wait CONSUMER_BUSY_LINGER_MS
    /// (0: never).
    #[arg(long, env = env::CONSUMER_BUSY_RATE, default_value_t = defaults::BUSY_RATE)]
    pub busy_rate: u64,
    /// Kafka session timeout (ms): how long a silent consumer keeps its partitions.
    #[arg(long, env = env::KAFKA_SESSION_TIMEOUT_MS, default_value_t = defaults::SESSION_TIMEOUT_MS)]
    pub session_timeout_ms: u64,
    /// Longest back-off, in ms, between retries of a failed store write.
    #[arg(long, env = env::CONSUMER_MAX_BACKOFF_MS, default_value_t = defaults::MAX_BACKOFF_MS)]
    pub max_backoff_ms: u64,
    /// A partition whose records have failed to be stored for this long (ms) is reported
    /// stalled: an error log naming it, and a stall report in the group's offsets.
    #[arg(long, env = env::CONSUMER_STALL_AFTER_MS, default_value_t = defaults::STALL_AFTER_MS)]
    pub stall_after_ms: u64,
    /// A write failing this long (ms) with an error not known to be transient is reported
    /// loudly (it is still retried: nothing is dropped on a guess).
    #[arg(long, env = env::CONSUMER_RETRY_BOUND_MS, default_value_t = defaults::RETRY_BOUND_MS)]
    pub retry_bound_ms: u64,
    /// ... or after this many attempts, whichever comes first.
    #[arg(long, env = env::CONSUMER_RETRY_BOUND_ATTEMPTS, default_value_t = defaults::RETRY_BOUND_ATTEMPTS)]
    pub retry_bound_attempts: u64,
}

/// A name for this process in logs, e.g. `consumer#2` (set by the runtimes).
pub fn instance_name(default: &str) -> String {
    std::env::var(env::WIBER_INSTANCE).unwrap_or_else(|_| default.to_string())
}

/// Without the `seeded-bugs` feature: a start error if `WIBER_SEEDED_BUG` is set, so a
/// harness can never believe a bug is active in a build that cannot have it.
#[cfg(not(feature = "seeded-bugs"))]
pub fn refuse_seeded_bug() -> anyhow::Result<()> {
    refuse_seeded_bug_value(std::env::var(env::WIBER_SEEDED_BUG).ok().as_deref())
}

#[cfg(not(feature = "seeded-bugs"))]
fn refuse_seeded_bug_value(value: Option<&str>) -> anyhow::Result<()> {
    match value.map(str::trim) {
        None | Some("") => Ok(()),
        Some(v) => anyhow::bail!(
            "{var}={v} needs a build with --features seeded-bugs (this wiber-server has no \
             seeded bugs): build one with `cargo build -p wiber-server --features seeded-bugs \
             --target-dir target/seeded`, or unset {var}",
            var = env::WIBER_SEEDED_BUG
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::{Args, Command};

    use super::*;

    /// Each flag's variable and default, read from clap's definition (not from the
    /// process environment, which a test cannot control safely).
    fn env_defaults<A: Args>() -> BTreeMap<String, Option<String>> {
        A::augment_args(Command::new("test"))
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_string();
                let default = a
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned());
                Some((env, default))
            })
            .collect()
    }

    fn table(rows: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[cfg(not(feature = "seeded-bugs"))]
    #[test]
    fn a_seeded_bug_without_the_feature_is_a_start_error() {
        assert!(refuse_seeded_bug_value(None).is_ok());
        assert!(refuse_seeded_bug_value(Some(" ")).is_ok());
        let e = refuse_seeded_bug_value(Some("corrupt"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("WIBER_SEEDED_BUG=corrupt needs a build with --features seeded-bugs"),
            "{e}"
        );
    }

    /// The README's table of variables and defaults, spelled out: the contract constants
    /// may be renamed or moved, but what a deployment sets and gets must not change.
    #[test]
    fn variables_and_defaults_are_the_documented_ones() {
        let shared = [
            ("KAFKA_BOOTSTRAP_SERVERS", Some("127.0.0.1:9092")),
            ("KAFKA_TOPIC", Some("wiber.messages")),
            ("KAFKA_DLQ_TOPIC", None),
            ("KAFKA_PARTITIONS", Some("6")),
            ("KAFKA_REPLICATION_FACTOR", Some("1")),
            ("MONGO_URI", Some("mongodb://127.0.0.1:27017")),
            ("MONGO_DB", Some("wiber")),
            ("MONGO_COLLECTION", Some("messages")),
            ("MONGO_WRITE_CONCERN", Some("majority")),
            ("MONGO_JOURNAL", Some("true")),
        ];
        let mut api = table(&shared);
        api.extend(table(&[
            ("API_HOST", Some("0.0.0.0")),
            ("API_PORT", Some("8000")),
            ("KAFKA_MESSAGE_TIMEOUT_MS", Some("5000")),
            ("KAFKA_LINGER_MS", Some("10")),
            ("KAFKA_MAX_IN_FLIGHT", Some("5")),
            ("KAFKA_PROMPT_MAX_RATE", Some("1000")),
            ("KAFKA_ACKS", Some("all")),
            ("WIBER_STORE_SQL_URL", None),
            ("API_MAX_CONCURRENT", Some("1024")),
            ("API_HEADER_TIMEOUT_MS", Some("10000")),
            ("API_REQUEST_TIMEOUT_MS", Some("30000")),
        ]));
        assert_eq!(env_defaults::<ApiConfig>(), api);
        let mut consumer = table(&shared);
        consumer.extend(table(&[
            ("KAFKA_CONSUMER_GROUP", Some("wiber-consumers")),
            ("CONSUMER_BATCH_SIZE", Some("500")),
            ("CONSUMER_BATCH_LINGER_MS", Some("20")),
            ("CONSUMER_BUSY_LINGER_MS", Some("100")),
            ("CONSUMER_BUSY_RATE", Some("1000")),
            ("KAFKA_SESSION_TIMEOUT_MS", Some("10000")),
            ("CONSUMER_MAX_BACKOFF_MS", Some("5000")),
            ("CONSUMER_STALL_AFTER_MS", Some("30000")),
            ("CONSUMER_RETRY_BOUND_MS", Some("300000")),
            ("CONSUMER_RETRY_BOUND_ATTEMPTS", Some("100")),
        ]));
        assert_eq!(env_defaults::<ConsumerConfig>(), consumer);
        for var in api.keys().chain(consumer.keys()) {
            assert!(
                env::ALL.contains(&var.as_str()),
                "{var} is read by the services but missing from contract::env::ALL"
            );
        }
    }
}
