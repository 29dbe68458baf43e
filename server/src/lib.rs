//! The Wiber stack's services.
//!
//! Layout, in layers (each module imports only from the layers below it; the server's
//! layering test, `tests/server/layering.rs`, holds it to that):
//! 1. [`config`] (flags/environment of both services, named and defaulted by
//!    `wiber_model::contract`), [`telemetry`], [`shutdown`] (JSON logs, the
//!    Ctrl-C/SIGTERM signal).
//! 2. [`seams`]: what the services need from Kafka and the store, as traits and plain
//!    types: `Publish` and `ReadStore` (the API's), `RecordSource` and `MessageStore` (the
//!    consumer's), with `Record`, `Position`, `StoreError`, `InsertOutcome`.
//! 3. The services, which see only the seams: [`api`] (axum: validates, publishes,
//!    serves reads; tests serve the real router with fakes) and [`consumer`] (the loop,
//!    `consume`, generic, tested with fakes). And the adapters, which implement them:
//!    [`kafka`] (the only module that uses rdkafka: topics, the API's `Publisher`, the
//!    group member `GroupRecords`), [`store`] (the only one that uses the mongodb crate:
//!    indexes, write concern, the read queries, batched writes), and above it
//!    [`sql_reads`] (tokio-postgres: the API's reads in SQL from the PostgreSQL under
//!    FerretDB, which cannot push a page's sort and limit down).
//! 4. `seeded` (only with the `seeded-bugs` feature, for debug test builds): the bugs
//!    `WIBER_SEEDED_BUG` can switch on, as wrappers around the seams.
//! 5. [`wiring`]: the one place that puts the adapters behind the services and runs them.
//! 6. [`cli`]: the command line both binaries run (`wiber-server`, and
//!    `wiber-server-seeded`, the test build with `seeded-bugs`).

pub mod api;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod kafka;
pub mod seams;
#[cfg(feature = "seeded-bugs")]
pub mod seeded;
pub mod shutdown;
pub mod sql_reads;
pub mod store;
pub mod telemetry;
pub mod wiring;

// The seeded bugs break the delivery contract on purpose: they exist for the kill matrix's
// debug test builds, never for a release build someone could ship.
#[cfg(all(feature = "seeded-bugs", not(debug_assertions)))]
compile_error!(
    "the `seeded-bugs` feature is for test builds only: build it without --release \
     (`cargo build -p wiber-server --features seeded-bugs --bin wiber-server-seeded`)"
);
