//! The runtime seam: how `wiberctl` starts, stops and injects faults into the stack.
//!
//! Everything `wiberctl` does to the stack's processes goes through [`Runtime`], so that
//! scenarios, chaos commands and tests do not care whether the stack runs as Docker
//! containers (`docker.rs`, via bollard) or as plain local processes ([`local`], for
//! machines without Docker and for the integration tests).
//!
//! The trait uses `async fn` directly (no `dyn`): callers are generic over the runtime or
//! match on an enum of runtimes, which keeps the trait free of boxing.
//!
//! Instances are addressed as `service#index` (1-based), e.g. `consumer#2`; a bare
//! service name means index 1 (`kafka` == `kafka#1`).

use std::str::FromStr;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod docker;
pub mod local;
pub mod probe;
mod process;
pub mod target;

pub use wiber_model::contract::{InstanceId, ParseIdError, Service};

/// What a runtime knows about one instance, for `wiberctl stack status` and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: InstanceId,
    /// `running`, `paused` or `exited` (Docker's words, so both runtimes read alike).
    pub state: String,
    /// The OS pid (local runtime) or the container id/name (Docker runtime).
    pub pid_or_container: String,
    /// When the current (or last) incarnation was started.
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// How many times the instance was started again after its first start.
    pub restarts: u32,
    /// Where clients reach it, e.g. `127.0.0.1:9092` or `http://127.0.0.1:8080`; empty for
    /// instances that serve nothing (consumers).
    pub address: String,
}

/// Signals that chaos commands send. Docker maps them to the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// SIGKILL: dies at once, no flush, no commit (the crash fault).
    Kill,
    /// SIGTERM: graceful shutdown (flush, commit, leave the group).
    Term,
    /// SIGINT: like Ctrl-C.
    Int,
}

impl Signal {
    pub fn as_libc(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
        }
    }

    /// `SIGKILL`, `SIGTERM`, `SIGINT` (the names Docker's API takes).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }
}

impl FromStr for Signal {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let up = s.trim().to_ascii_uppercase();
        match up.trim_start_matches("SIG") {
            "KILL" | "9" => Ok(Signal::Kill),
            "TERM" | "15" => Ok(Signal::Term),
            "INT" | "2" => Ok(Signal::Int),
            _ => anyhow::bail!("unknown signal {s:?}: expected KILL, TERM or INT"),
        }
    }
}

/// The seam between `wiberctl` and whatever runs the stack.
///
/// Semantics every implementation keeps:
/// - `start` of a running instance is a no-op; `stop` of a stopped one too.
/// - `stop` is graceful (SIGTERM, then SIGKILL after a bounded wait); `kill` sends exactly
///   the given signal and returns without waiting.
/// - `restart` = `stop` + `start`, and counts in [`InstanceInfo::restarts`].
/// - `start`/`restart`/`unpause` return once the instance is ready to serve (bounded).
/// - `pause` freezes the processes (SIGSTOP / cgroup freezer): sockets stay open but
///   nothing answers, which is a different fault from a crash.
/// - `disconnect`/`reconnect` cut the instance off the stack's network (Docker only).
#[allow(async_fn_in_trait)] // Not used as `dyn`; callers are generic.
pub trait Runtime {
    async fn list(&self) -> Result<Vec<InstanceInfo>>;
    async fn kill(&self, id: &InstanceId, sig: Signal) -> Result<()>;
    async fn stop(&self, id: &InstanceId) -> Result<()>;
    async fn start(&self, id: &InstanceId) -> Result<()>;
    async fn restart(&self, id: &InstanceId) -> Result<()>;
    async fn pause(&self, id: &InstanceId) -> Result<()>;
    async fn unpause(&self, id: &InstanceId) -> Result<()>;
    async fn disconnect(&self, id: &InstanceId) -> Result<()>;
    async fn reconnect(&self, id: &InstanceId) -> Result<()>;
    /// The last `tail` lines of the instance's output (stdout and stderr).
    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String>;
}

/// serde for `Option<DateTime<Utc>>` as an RFC 3339 string (chrono is built without its
/// `serde` feature in this workspace).
pub(crate) mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_some(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        assert_eq!("sigkill".parse::<Signal>().unwrap(), Signal::Kill);
        assert_eq!("15".parse::<Signal>().unwrap(), Signal::Term);
        assert!("HUP".parse::<Signal>().is_err());
    }
}
