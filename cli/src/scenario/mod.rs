//! Scenario files: load, a fault timeline, invariants and thresholds in one TOML file,
//! run against the stack by `wiberctl scenario run` (and by CI).
//!
//! Layout:
//! - [`format`]: the file format (serde, `deny_unknown_fields`) and its validation into
//!   [`format::Scenario`], with `file:line:column` errors that show the expected syntax.
//! - [`threshold`]: `metric = "OP EXPR"` parsing and evaluation (absolute, `* rate`,
//!   `* baseline`).
//! - [`random`]: `[random]`'s faults drawn from a weighted menu, reproducibly from a seed,
//!   as ordinary [`format::FaultSpec`]s.
//! - [`timeline`]: faults expanded into steps and run through a seam ([`timeline::FaultSeam`],
//!   implemented by the runtime's `Stack`), with rollbacks that run on every way out.
//! - [`recovery`]: per-fault figures from the ledger and the lag samples;
//!   [`recovery_stats`]: the same grouped by kind of fault, their spread, the worst fault.
//! - [`resource_trend`]: CPU and RSS per service over the whole run (leak detection).
//! - [`stall`]: `consumer.stalled_max`, the longest a partition had lag while its
//!   committed offset did not move (from the lag samples).
//! - [`phases`]: `before` / `during` / `after` windows and their figures (`during.ok_rate`).
//! - [`shape`]: a scenario runs only on the shape its `[stack]` states (brokers,
//!   replication, min ISR), checked against the stack as it is.
//! - [`run`]: one scenario end to end (stack, steady state, load + faults, verify,
//!   thresholds, run directory), through the runtime's [`crate::runtime::Stack`] only.
//! - [`outcome`]: what a run found ([`outcome::ScenarioRun`], `scenario.json`);
//!   [`metrics`]: the numbers thresholds are evaluated on, and `--baseline`.
//! - [`progress`]: the live line while a scenario runs (phase, next fault, lag).
//! - [`print`]: tables and `summary.md`; [`html`]: `report.html`; [`junit`]: JUnit XML.
//!
//! `wiberctl chaos` runs its fault as a one-fault [`timeline`], so chaos and scenario
//! files share one fault engine (and the fault model of [`crate::runtime::fault`]).

pub mod format;
pub mod html;
pub mod junit;
pub mod metrics;
pub mod outcome;
pub mod phases;
pub mod print;
pub mod progress;
pub mod random;
pub mod recovery;
pub mod recovery_stats;
pub mod resource_trend;
pub mod run;
pub mod shape;
pub mod stall;
pub mod threshold;
pub mod timeline;

pub use format::{load, parse, FormatError, Scenario};
