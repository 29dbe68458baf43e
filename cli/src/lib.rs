//! wiberctl: operator CLI and load/fault-injection harness for the Wiber stack.
//!
//! Layout:
//! - [`app`]: the command line (clap) and dispatch; `main.rs` only calls it.
//! - [`commands`]: one module per command group (messages, stack, ...).
//! - [`client`]: the HTTP adapter (reqwest) speaking the API contract.
//! - [`runtime`]: the seam through which the stack is started, stopped, killed and
//!   paused; `runtime::local` runs it as local processes.
//! - [`provision`]: fetches Kafka (Maven Central) and FerretDB (Go module proxy) once.
//! - [`output`]: tables and JSON; [`exit`]: the exit-code contract.

pub mod app;
pub mod client;
pub mod commands;
pub mod exit;
pub mod output;
pub mod provision;
pub mod runtime;
