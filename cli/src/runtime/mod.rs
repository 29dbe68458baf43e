//! The runtime seam: the one place that owns the stack. Commands and the scenario runner
//! talk to a [`Stack`] only: `up(spec)`, `down`, `list`/`status`, [`health`], `scale`,
//! `endpoints`, `apply(fault)` (an undo is `apply(fault.undo())`), `logs`. Which runtime runs it (Docker
//! containers or local processes) is decided here and nowhere else.
//!
//! Layout:
//! - [`stack`]: [`Stack`], the facade over both runtimes, and how a stack is found
//!   ([`Locator`]) and brought up ([`StackSpec`]).
//! - [`fault`]: the fault model (action, target, signal, undo, shortcuts).
//! - [`health`]: the one judgement of "is the stack whole" (`stack status`, a scenario's
//!   steady state).
//! - [`docker`]: containers on a Docker engine (bollard lives only there).
//! - [`local`]: plain processes on 127.0.0.1 (Kafka jars, PostgreSQL, FerretDB, our
//!   binary); `postgres`: its PostgreSQL (binaries, user, initdb, processes).
//! - [`usage`]: CPU and memory of each instance (for `top`).
//! - [`probe`]: readiness probes without client libraries; `process`: spawning and
//!   signalling local processes.
//!
//! Both runtimes implement [`Runtime`], the per-instance operations; [`Stack`] adds what
//! is the same for both (idempotent undos, health, endpoints as [`Names`] + addresses).
//!
//! Instances are addressed as `service#index` (1-based), e.g. `consumer#2`; a bare
//! service name means index 1 (`kafka` == `kafka#1`).

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod cluster;
pub mod docker;
pub mod fault;
pub mod health;
pub mod local;
pub mod netfault;
mod postgres;
pub mod probe;
mod process;
pub mod stack;
pub mod usage;

pub use cluster::{Cluster, Profile, RunningShape};
pub use fault::{Action, Signal, Target};
pub use stack::{Locator, NoStack, Stack};
pub use wiber_model::contract::{InstanceId, Names, ParseIdError, Service};

/// Default project name (also compose's, from `docker/.env`).
pub const DEFAULT_PROJECT: &str = "wiber";

/// The superuser of a stack's PostgreSQL (both runtimes; trust authentication, the
/// server is reachable from 127.0.0.1 and the project's network only).
pub const POSTGRES_USER: &str = "wiber";

/// Where the host reaches the database FerretDB stores into, on `port` of 127.0.0.1.
pub fn postgres_url(port: u16) -> String {
    format!(
        "postgres://{POSTGRES_USER}@127.0.0.1:{port}/{}",
        crate::pg::FERRETDB_DATABASE
    )
}

/// Project names become parts of container, network, volume and directory names.
pub fn validate_project(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.len() <= 40
        && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !ok {
        bail!("invalid project name {p:?}: use 1-40 letters, digits, '_', '-' or '.', starting with a letter or digit");
    }
    Ok(())
}

/// Which runtime runs a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Containers on the local Docker engine (bollard).
    Docker,
    /// Plain processes on 127.0.0.1 (no Docker needed); state in .wiber/stacks/<project>.
    Local,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Local => "local",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which images a Docker stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImageChoice {
    /// apache/kafka, mongo:7 and our server image built from docker/Dockerfile.server.
    Official,
    /// The :offline images of docker/offline/build.sh (built when missing).
    Offline,
    /// Official when they are present or can be pulled (bounded attempt), else offline.
    Auto,
}

/// Host ports the stack publishes on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub api: u16,
    pub mongo: u16,
    pub kafka: u16,
    pub postgres: u16,
}

/// FerretDB's largest INSERT, in documents (its default is 100): the consumer writes
/// batches of up to 500 (`CONSUMER_BATCH_SIZE`), and on PostgreSQL each INSERT statement
/// also runs the count trigger once, so one statement per batch instead of five cut
/// both costs (measured: 8.7k against 5.6k docs/s with the triggers, same store). A batch
/// holding a duplicate is retried one document at a time either way.
pub const FERRETDB_INSERT_BATCH_FLAG: &str = "--test-batch-size=500";

impl Default for Ports {
    fn default() -> Self {
        Ports {
            api: 8000,
            mongo: 27017,
            kafka: 9094,
            // A free port chosen at `up` (and kept with the stack): nothing outside the
            // stack needs a fixed one, 5432 is Debian's own cluster once its service
            // runs, and any fixed default would make two stacks on one host collide.
            postgres: 0,
        }
    }
}

/// What `up` builds: the same on both runtimes.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Consumer instances (0..=32).
    pub consumers: u32,
    /// Partitions of the topic (`KAFKA_PARTITIONS` of the services).
    pub partitions: u32,
    /// Brokers and safety profile of the Kafka cluster.
    pub cluster: Cluster,
    pub ports: Ports,
    /// Images (Docker runtime only).
    pub images: ImageChoice,
    /// Bound on the whole wait for health.
    pub wait: Duration,
    /// Extra environment for api and consumer instances (e.g. `RUST_LOG`).
    pub extra_env: Vec<(String, String)>,
}

impl Default for StackSpec {
    fn default() -> Self {
        StackSpec {
            consumers: 2,
            partitions: wiber_model::contract::defaults::PARTITIONS as u32,
            cluster: Cluster::default(),
            ports: Ports::default(),
            images: ImageChoice::Auto,
            wait: Duration::from_secs(240),
            extra_env: Vec::new(),
        }
    }
}

/// An instance's life-cycle state, in Docker's words so both runtimes read alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Running,
    /// Frozen (cgroup freezer / SIGSTOP): sockets open, nothing answers.
    Paused,
    Restarting,
    Created,
    Exited,
    Dead,
    /// Removing, or a state this version does not know.
    Unknown,
}

impl InstanceState {
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
            InstanceState::Restarting => "restarting",
            InstanceState::Created => "created",
            InstanceState::Exited => "exited",
            InstanceState::Dead => "dead",
            InstanceState::Unknown => "unknown",
        }
    }

    /// From Docker's status word.
    pub fn from_docker(s: &str) -> InstanceState {
        match s {
            "running" => InstanceState::Running,
            "paused" => InstanceState::Paused,
            "restarting" => InstanceState::Restarting,
            "created" => InstanceState::Created,
            "exited" => InstanceState::Exited,
            "dead" => InstanceState::Dead,
            _ => InstanceState::Unknown,
        }
    }

    /// A process exists (running or frozen): it has an uptime.
    pub fn is_alive(self) -> bool {
        matches!(self, InstanceState::Running | InstanceState::Paused)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a healthcheck says (Docker's healthchecks; local instances have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Starting,
    /// No healthcheck: the state alone tells.
    None,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Starting => "starting",
            Health::None => "none",
        }
    }

    pub fn from_docker(s: &str) -> Health {
        match s {
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            "starting" => Health::Starting,
            _ => Health::None,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a runtime knows about one instance, for `wiberctl stack status` and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: InstanceId,
    pub state: InstanceState,
    /// The OS pid (local runtime) or the container id (Docker runtime).
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

#[cfg(test)]
impl InstanceInfo {
    /// An instance that has only an id and a state (for tests of what reads them).
    pub(crate) fn bare(id: InstanceId, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            id,
            state,
            pid_or_container: "c".into(),
            started_at: None,
            restarts: 0,
            address: String::new(),
        }
    }
}

/// An instance with what `stack status` and the health judgement need beyond
/// [`InstanceInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub info: InstanceInfo,
    pub health: Health,
    /// Attached to the stack's network (false after `disconnect`; always true locally).
    pub connected: bool,
}

/// Where the host reaches the stack's services, and the names its data lives under.
/// `None`: that service has no instance, or publishes no port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    pub api_url: Option<String>,
    pub kafka_bootstrap: Option<String>,
    pub mongo_uri: Option<String>,
    /// The PostgreSQL under FerretDB (`postgres://...`), when the stack has one.
    pub postgres_url: Option<String>,
    /// Topic, group, database and collection, as the stack's services were configured.
    pub names: Names,
}

impl Endpoints {
    /// The API's base URL, or an error naming what is missing.
    pub fn api(&self) -> Result<&str> {
        self.api_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the stack has no api instance with a published port"))
    }

    /// Where `bench` and `verify` find the run's messages (topic, group, store).
    pub fn store_target(&self) -> Result<crate::runfile::StoreTarget> {
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| {
                anyhow::anyhow!("the stack has no {what} instance with a published port")
            })
        };
        Ok(crate::runfile::StoreTarget {
            mongo_uri: need(&self.mongo_uri, "mongo")?,
            mongo_db: self.names.db.clone(),
            mongo_collection: self.names.collection.clone(),
            postgres_url: self.postgres_url.clone(),
            kafka: need(&self.kafka_bootstrap, "kafka")?,
            group: self.names.group.clone(),
            topic: self.names.topic.clone(),
        })
    }
}

/// Progress of `up`, for the caller's display.
#[derive(Debug, Clone)]
pub enum UpEvent {
    /// Something worth a line of its own (images chosen, provisioning, ...).
    Note(String),
    /// An instance was created, started, found running or added.
    Instance {
        id: InstanceId,
        action: UpAction,
    },
    /// Still waiting for an instance: its state and health.
    Waiting {
        id: InstanceId,
        state: InstanceState,
        health: Health,
    },
    Ready {
        id: InstanceId,
    },
}

/// What `up` did to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpAction {
    Created,
    Started,
    AlreadyRunning,
    Added,
    /// Replaced (docker) or restarted (local) with a changed `--service-env`.
    Recreated,
}

impl UpAction {
    pub fn name(self) -> &'static str {
        match self {
            UpAction::Created => "created",
            UpAction::Started => "started",
            UpAction::AlreadyRunning => "running",
            UpAction::Added => "added",
            UpAction::Recreated => "recreated (service env changed)",
        }
    }
}

/// Where one of our services (api or consumer) finds the rest of the stack.
#[derive(Debug, Clone)]
pub struct ServiceEnv<'a> {
    pub id: InstanceId,
    pub kafka_bootstrap: &'a str,
    pub mongo_uri: &'a str,
    /// The PostgreSQL under FerretDB, as the api reaches it: the api reads pages there
    /// (`WIBER_STORE_SQL_URL`). `None` when the store is MongoDB.
    pub store_sql_url: Option<&'a str>,
    pub names: &'a Names,
    pub partitions: u32,
    /// Replication of the topics the services create, and the producer's acks.
    pub cluster: Cluster,
    /// Where an api listens (host, port); ignored for consumers.
    pub api_listen: (&'a str, u16),
    /// Added last, so it can override anything above (e.g. `RUST_LOG`).
    pub extra: &'a [(String, String)],
}

impl ServiceEnv<'_> {
    /// The environment of the service, named by the service contract: the one place
    /// both runtimes build it (the server's config reads the same names).
    pub fn vars(&self) -> Vec<(String, String)> {
        use wiber_model::contract::env;
        let mut out = vec![
            (
                env::KAFKA_BOOTSTRAP_SERVERS.into(),
                self.kafka_bootstrap.into(),
            ),
            (env::KAFKA_PARTITIONS.into(), self.partitions.to_string()),
            (
                env::KAFKA_REPLICATION_FACTOR.into(),
                self.cluster.replication().to_string(),
            ),
            (env::MONGO_URI.into(), self.mongo_uri.into()),
        ];
        out.extend(self.names.to_env());
        if self.id.service == Service::Api {
            out.push((env::API_HOST.into(), self.api_listen.0.into()));
            out.push((env::API_PORT.into(), self.api_listen.1.to_string()));
            out.push((env::KAFKA_ACKS.into(), self.cluster.acks().as_str().into()));
            if let Some(url) = self.store_sql_url {
                out.push((env::STORE_SQL_URL.into(), url.into()));
            }
        }
        out.push((env::WIBER_INSTANCE.into(), self.id.to_string()));
        out.extend(self.extra.iter().cloned());
        out
    }
}

/// The per-instance operations both runtimes implement; [`Stack`] is what callers use.
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
#[allow(async_fn_in_trait)] // Not used as `dyn`; `Stack` dispatches over an enum.
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
    fn states_read_as_docker_names_them() {
        for s in [
            "running",
            "paused",
            "restarting",
            "created",
            "exited",
            "dead",
        ] {
            assert_eq!(InstanceState::from_docker(s).name(), s);
        }
        assert_eq!(
            InstanceState::from_docker("removing"),
            InstanceState::Unknown
        );
        assert_eq!(
            serde_json::to_string(&InstanceState::Paused).unwrap(),
            "\"paused\""
        );
        assert_eq!(Health::from_docker("starting"), Health::Starting);
        assert_eq!(Health::from_docker(""), Health::None);
    }
}
