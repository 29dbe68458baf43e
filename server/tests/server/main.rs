//! The server tested on its own, as mini-redis tests its server: the real router and
//! the real consumer loop, in-process, with fakes behind their seams (real Kafka and
//! FerretDB are the CLI's stack tests' job). One test binary, one module per concern:
//!
//! - `api`: the HTTP contract, served on `127.0.0.1:0` with a fake publisher and store.
//! - `consumer`: the consumer loop's delivery contract, with a fake group and store.
//! - `hostile`: hostile input and clients: what the store cannot hold, deep pages, load
//!   shedding, slow headers and bodies.
//! - `layering`: the server's module layers (no import cycles).
//! - `start`: the binary's start-up checks (a seeded bug it cannot honour).
//! - `seeded`: each seeded bug, against the same fakes (`--features seeded-bugs`).
//! - `support`: the fakes and helpers.

mod api;
mod consumer;
mod hostile;
mod layering;
#[cfg(feature = "seeded-bugs")]
mod seeded;
mod start;
mod support;
