//! wiberctl: operator CLI and load/fault-injection harness for the Wiber stack.
//!
//! Layout:
//! - [`app`]: the command line (clap) and dispatch; `main.rs` only calls it.
//! - [`commands`]: one module per command group (messages, stack, ...).
//! - [`client`]: the HTTP adapter (reqwest) speaking the API contract.
//! - [`kafka`]: the rdkafka adapter (consumer-group lag).
//! - [`runtime`]: the seam through which the stack is started, stopped, killed and
//!   paused; `runtime::local` runs it as local processes.
//! - [`provision`]: fetches Kafka (Maven Central) and FerretDB (Go module proxy) once.
//! - [`events`]: the event log of faults and actions (JSON lines) for reports.
//! - [`output`]: tables and JSON; [`exit`]: the exit-code contract.
//! - [`bench`]: open-loop load generator and ledger; [`verify`]: the delivery invariants
//!   checked in MongoDB; [`report`]: report.json/md/html writers.
//! - [`scenario`]: scenario files (load + fault timeline + thresholds) and their runner.

pub mod app;
pub mod bench;
pub mod client;
pub mod commands;
pub mod events;
pub mod exit;
pub mod kafka;
pub mod output;
pub mod provision;
pub mod report;
pub mod runfile;
pub mod runtime;
pub mod scenario;
pub mod units;
pub mod verify;
