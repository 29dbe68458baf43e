//! wiberctl: operator CLI and load/fault-injection harness for the Wiber stack.
//!
//! Layout, bottom layer first. A module imports only modules of lower layers;
//! `cli/tests/layering.rs` fails CI on an upward import or a cycle between siblings.
//!
//! 1. Leaves and adapters:
//!    - [`units`]: durations as people write them; [`exit`]: the exit-code contract;
//!      [`heap`]: how the heap gives memory back over hours;
//!      [`output`]: tables and JSON; [`events`]: the event log of faults (JSON lines);
//!      [`runfile`]: a bench run's `run.json` and where its messages end up.
//!    - [`client`]: the HTTP adapter (reqwest) speaking the API contract; [`kafka`]: the
//!      rdkafka adapter (consumer-group lag; an assign-only reader
//!      of the topic for `tail`); [`provision`]: fetches Kafka (Maven Central)
//!      and FerretDB (Go module proxy) once.
//! 2. [`runtime`]: the one seam that owns the stack. [`runtime::Stack`] brings it up and
//!    down, reports status and health, scales it, says where it is, applies and undoes
//!    faults, on Docker ([`runtime::docker`], bollard) or as local processes
//!    ([`runtime::local`]). The fault model ([`runtime::fault`]) and the health judgement
//!    ([`runtime::health`]) live there too. [`report`]: report.json/md/html writers.
//! 3. [`verify`]: the delivery invariants, checked in MongoDB against the ledger.
//!    [`store`]: the store at scale (`store fill` fixtures, `store check` of the
//!    PostgreSQL setup, `store explain` of each read's plan).
//! 4. [`bench`]: the open-loop load generator and its ledger.
//! 5. [`scenario`]: scenario files (load + fault timeline + thresholds), the fault
//!    timeline (also what `chaos` runs) and the runner.
//! 6. Live views: [`top`] (the terminal dashboard) and [`tail`] (messages as Kafka
//!    acknowledges or the consumers store them).
//! 7. [`commands`]: one module per command group, flags shared in [`commands::args`].
//! 8. [`app`]: the command line (clap) and dispatch; `main.rs` only calls it.
//!
//! The names the stack's services share with wiberctl (services, env variables, topic,
//! group, database, collection, the stored document) come from `wiber_model`.

pub mod app;
pub mod bench;
pub mod client;
pub mod commands;
pub mod events;
pub mod exit;
pub mod heap;
pub mod kafka;
pub mod output;
pub mod pg;
pub mod provision;
pub mod report;
pub mod runfile;
pub mod runtime;
pub mod scenario;
pub mod store;
pub mod tail;
pub mod top;
pub mod units;
pub mod verify;
