//! The Wiber stack's services.
//!
//! Layout:
//! - [`api`]: the HTTP API (axum): validates, publishes to Kafka, serves reads from MongoDB.
//! - [`consumer`]: the consumer-group member that stores messages in MongoDB: the loop
//!   (`consume`, generic, tested with fakes) and its two seams, `RecordSource` (records
//!   in, offsets committed, dead letters out) and `MessageStore` (batched writes with
//!   de-duplication), with `Record` and `Position`, our rdkafka-free record and offset.
//! - [`kafka`]: the rdkafka adapter, the only module that uses rdkafka: topics, the API's
//!   `Publisher`, and `GroupRecords`, the group member behind `RecordSource`.
//! - [`store`]: the mongodb adapter, the only module that uses the mongodb crate: `Store`
//!   (indexes, write concern, the read queries, and `MessageStore`), writing and reading
//!   `wiber_model::StoredMessage` documents.
//! - [`config`]: flags/environment of both services, named and defaulted by
//!   `wiber_model::contract`.
//! - [`telemetry`], [`shutdown`]: JSON logs and the Ctrl-C/SIGTERM signal.

pub mod api;
pub mod config;
pub mod consumer;
pub mod kafka;
pub mod shutdown;
pub mod store;
pub mod telemetry;
