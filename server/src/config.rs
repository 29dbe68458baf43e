//! Configuration of both services, from flags or the environment (names as in the seed:
//! `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC`, `KAFKA_CONSUMER_GROUP`, `MONGO_URI`,
//! `MONGO_DB`, `MONGO_COLLECTION`, plus the `WIBER_*`/`API_*` knobs added here).

use std::time::Duration;

use clap::Args;

/// Where Kafka is and how the topics look. Both services create the topics at start
/// (never relying on broker auto-create), so both need the partition settings.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma separated.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Topic messages are published to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "wiber.messages")]
    pub topic: String,
    /// Dead-letter topic for records the consumer cannot decode (default: TOPIC.dlq).
    #[arg(long, env = "KAFKA_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Partitions of the topics when the services create them.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topics when the services create them.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
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
    #[arg(long, env = "MONGO_URI", default_value = "mongodb://127.0.0.1:27017")]
    pub mongo_uri: String,
    /// Database holding the messages.
    #[arg(long, env = "MONGO_DB", default_value = "wiber")]
    pub mongo_db: String,
    /// Collection holding the messages.
    #[arg(long, env = "MONGO_COLLECTION", default_value = "messages")]
    pub mongo_collection: String,
    /// Write concern `w` for stored messages: `majority` or a number of nodes.
    #[arg(long, env = "MONGO_WRITE_CONCERN", default_value = "majority")]
    pub write_concern: String,
    /// Whether writes wait for the journal.
    #[arg(long, env = "MONGO_JOURNAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub journal: bool,
}

/// The HTTP API service.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Upper bound, in ms, on how long a POST waits for Kafka's acknowledgement before it
    /// answers 503 (librdkafka's `message.timeout.ms`).
    #[arg(long, env = "KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 5000)]
    pub message_timeout_ms: u64,
    /// How long the producer waits to fill a batch (`linger.ms`): throughput vs latency.
    /// Measured on 2 cores with everything co-located: 2 ms capped the stack at ~1,350
    /// req/s (the broker burnt its CPU on tiny produce requests); 10 ms sustained 2,000
    /// req/s at the same concurrency, for a few ms more latency at low load.
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 10)]
    pub linger_ms: u64,
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
    #[arg(long, env = "KAFKA_CONSUMER_GROUP", default_value = "wiber-consumers")]
    pub group: String,
    /// Largest number of records written in one `insert_many`.
    #[arg(long, env = "CONSUMER_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// How long, in ms, a batch waits for more records once it holds one.
    #[arg(long, env = "CONSUMER_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Kafka session timeout (ms): how long a silent consumer keeps its partitions.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10000)]
    pub session_timeout_ms: u64,
    /// Longest back-off, in ms, between retries of a failed store write.
    #[arg(long, env = "CONSUMER_MAX_BACKOFF_MS", default_value_t = 5000)]
    pub max_backoff_ms: u64,
}

/// A name for this process in logs, e.g. `consumer#2` (set by the runtimes).
pub fn instance_name(default: &str) -> String {
    std::env::var("WIBER_INSTANCE").unwrap_or_else(|_| default.to_string())
}
