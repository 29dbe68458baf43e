//! One module per command group. Each command returns the exit code it decided on;
//! errors that stop the tool itself bubble up as `anyhow` errors (exit 2).

pub mod args;
pub mod bench;
pub mod chaos;
pub mod completions;
pub mod demo;
pub mod dlq;
pub mod kafka;
pub mod messages;
pub mod scenario;
pub mod stack;
pub mod store;
pub mod tail;
pub mod top;
pub mod verify;
