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

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod docker;
pub mod local;
pub mod probe;
mod process;
pub mod target;

/// The kinds of process a Wiber stack is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The Kafka broker (single KRaft node, broker + controller).
    Kafka,
    /// The MongoDB-wire store (MongoDB in Docker, FerretDB locally).
    Mongo,
    /// The HTTP API (`wiber-server api`).
    Api,
    /// A consumer-group member (`wiber-server consumer`).
    Consumer,
}

impl Service {
    /// All services, in start order (dependencies first).
    pub const ALL: [Service; 4] = [
        Service::Kafka,
        Service::Mongo,
        Service::Consumer,
        Service::Api,
    ];

    /// The name used on the command line, in logs and in container names.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Mongo => "mongo",
            Service::Api => "api",
            Service::Consumer => "consumer",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown service or malformed instance id.
#[derive(Debug, thiserror::Error)]
pub enum ParseIdError {
    #[error("unknown service {0:?}: expected one of kafka, mongo, api, consumer")]
    UnknownService(String),
    #[error("bad instance index in {0:?}: expected service#N with N >= 1, e.g. consumer#2")]
    BadIndex(String),
}

impl FromStr for Service {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kafka" => Ok(Service::Kafka),
            // "ferretdb" is accepted because that is what runs locally.
            "mongo" | "mongodb" | "ferretdb" => Ok(Service::Mongo),
            "api" => Ok(Service::Api),
            "consumer" => Ok(Service::Consumer),
            _ => Err(ParseIdError::UnknownService(s.to_string())),
        }
    }
}

/// One instance of a service: `consumer#2` is the second consumer (indexes are 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub service: Service,
    pub index: u32,
}

impl InstanceId {
    pub fn new(service: Service, index: u32) -> Self {
        InstanceId { service, index }
    }

    /// The first (often only) instance of a service.
    pub fn first(service: Service) -> Self {
        InstanceId { service, index: 1 }
    }

    /// A file-name-friendly form, `consumer-2` (no `#`, which shells treat as a comment).
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.service.name(), self.index)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.service.name(), self.index)
    }
}

impl FromStr for InstanceId {
    type Err = ParseIdError;

    /// Parses `consumer`, `consumer#2` (and `consumer-2`, the [`InstanceId::file_stem`] form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, index) = match s.split_once('#').or_else(|| s.split_once('-')) {
            Some((name, index)) => {
                let index: u32 = index
                    .parse()
                    .map_err(|_| ParseIdError::BadIndex(s.to_string()))?;
                if index == 0 {
                    return Err(ParseIdError::BadIndex(s.to_string()));
                }
                (name, index)
            }
            None => (s, 1),
        };
        Ok(InstanceId {
            service: name.parse()?,
            index,
        })
    }
}

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
    fn instance_ids_parse_and_display() {
        let id: InstanceId = "consumer#2".parse().unwrap();
        assert_eq!(id, InstanceId::new(Service::Consumer, 2));
        assert_eq!(id.to_string(), "consumer#2");
        assert_eq!(id.file_stem(), "consumer-2");
        assert_eq!("consumer-2".parse::<InstanceId>().unwrap(), id);
        assert_eq!(
            "kafka".parse::<InstanceId>().unwrap(),
            InstanceId::first(Service::Kafka)
        );
        assert_eq!("ferretdb".parse::<Service>().unwrap(), Service::Mongo);
        assert!("consumer#0".parse::<InstanceId>().is_err());
        assert!("zookeeper".parse::<InstanceId>().is_err());
        assert_eq!("sigkill".parse::<Signal>().unwrap(), Signal::Kill);
    }
}
