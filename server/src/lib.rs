//! The Wiber stack's services.
//!
//! Layout:
//! - [`api`]: the HTTP API (axum): validates, publishes to Kafka, serves reads from
//!   MongoDB; it sees them through two seams, `Publish` and `ReadStore`, so tests serve
//!   the real router with fakes.
//! - [`consumer`]: the consumer-group member that stores messages in MongoDB: the loop
//!   (`consume`, generic, tested with fakes) and its two seams, `RecordSource` (records
//!   in, offsets committed, dead letters out) and `MessageStore` (batched writes with
//!   de-duplication), with `Record` and `Position`, our rdkafka-free record and offset.
//! - [`kafka`]: the rdkafka adapter, the only module that uses rdkafka: topics, the API's
//!   `Publisher` (behind `Publish`), and `GroupRecords`, the group member behind
//!   `RecordSource`.
//! - [`store`]: the mongodb adapter, the only module that uses the mongodb crate: `Store`
//!   (indexes, write concern, the read queries behind `ReadStore`, and `MessageStore`),
//!   writing and reading `wiber_model::StoredMessage` documents.
//! - [`sql_reads`]: the tokio-postgres adapter: `SqlReads`, the API's reads served in
//!   SQL from the PostgreSQL under FerretDB (when the store is FerretDB on PostgreSQL:
//!   FerretDB cannot push a page's sort and limit down).
//! - [`config`]: flags/environment of both services, named and defaulted by
//!   `wiber_model::contract`.
//! - [`cli`]: the command line both binaries run (`wiber-server`, and
//!   `wiber-server-seeded`, the test build with `seeded-bugs`).
//! - [`telemetry`], [`shutdown`]: JSON logs and the Ctrl-C/SIGTERM signal.
//! - `seeded` (only with the `seeded-bugs` feature, for test builds): the bugs
//!   `WIBER_SEEDED_BUG` can switch on, as wrappers around the seams above.

pub mod api;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod kafka;
#[cfg(feature = "seeded-bugs")]
pub mod seeded;
pub mod shutdown;
pub mod sql_reads;
pub mod store;
pub mod telemetry;
