//! The Wiber stack's services.
//!
//! Layout:
//! - [`api`]: the HTTP API (axum): validates, publishes to Kafka, serves reads from MongoDB.
//! - [`consumer`]: the consumer-group member that stores messages in MongoDB.
//! - [`kafka`]: the rdkafka adapter (topics, producer, group consumer).
//! - [`store`]: the mongodb adapter (documents, indexes, queries).
//! - [`config`]: flags/environment of both services.
//! - [`telemetry`], [`shutdown`]: JSON logs and the Ctrl-C/SIGTERM signal.

pub mod api;
pub mod config;
pub mod consumer;
pub mod kafka;
pub mod shutdown;
pub mod store;
pub mod telemetry;
