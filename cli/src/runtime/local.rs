//! The local-process runtime: the whole stack as plain processes on 127.0.0.1.
//!
//! For machines without Docker, and for the integration tests. Components:
//! - `kafka#1..N`: [`LocalStackConfig::cluster`]'s brokers, each a combined KRaft node
//!   (broker + controller; node id N is `kafka#N`, and all of them vote, as on Docker),
//!   run from the jars [`crate::provision`] fetched
//!   (`java -cp 'libs/*' kafka.Kafka server.properties`);
//! - `postgres#1`: Debian's PostgreSQL (`/usr/lib/postgresql/<version>/bin`), as the
//!   `postgres` system user when wiberctl is root (see [`super::postgres`]); at every
//!   start the database `ferretdb` is created if missing and the project's setup
//!   (`server/sql/ferretdb-postgres.sql`) applied, before FerretDB can create anything;
//! - `mongo#1`: FerretDB on that PostgreSQL, speaking the MongoDB wire protocol;
//! - `consumer#N`, `api#N`: our `wiber-server consumer|api`, configured by environment.
//!
//! Everything of one stack lives in its directory ([`LocalStackConfig::dir`]):
//!
//! ```text
//! state.json                 config, resolved ports, pids (+ start times), restarts
//! logs/kafka-1.log ...       stdout+stderr of each instance, appended across restarts
//! kafka/server.properties    kafka#1: kafka/data/ (formatted once, so restarts keep the data)
//! kafka-2/server.properties  kafka#2, ... : the same, in kafka-N/ (kafka#1 keeps the
//!                            directory it had before clusters, so older stacks keep their data)
//! postgres/data/             the PostgreSQL cluster (initdb'd once; owned by its user)
//! postgres/run/              its unix socket (clients use TCP on 127.0.0.1)
//! mongo/                     FerretDB's state dir (its data is in PostgreSQL)
//! ```
//!
//! Ownership decides who cleans up:
//! - [`Ownership::Attached`] (tests): children die with the owning process, even on
//!   SIGKILL or abort (see `process.rs`), and dropping the [`LocalStack`] kills them.
//! - [`Ownership::Detached`] (`wiberctl stack up --runtime local`): processes outlive the
//!   CLI; a later invocation re-opens the stack with [`LocalStack::load`] and acts on the
//!   pids recorded in `state.json` (each checked against its recorded start time, so a
//!   reused pid is never signalled).
//!
//! Typical use in a test:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use wiberctl::{provision, runtime::local::{LocalStack, LocalStackConfig}};
//! let prov = provision::ensure(&provision::repo_root()?)?;
//! let mut cfg = LocalStackConfig::new("/tmp/my-stack");
//! cfg.consumers = 0; // Kafka + FerretDB only
//! cfg.apis = 0;
//! let stack = LocalStack::up(cfg, &prov).await?;
//! println!("{} {} {}", stack.bootstrap(), stack.postgres_url(), stack.mongo_uri());
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::postgres;
use super::process::{self, ProcState, SpawnSpec};
use super::usage::{self, Usage};
use super::{
    probe, rfc3339_opt, Health, InstanceId, InstanceInfo, InstanceState, InstanceStatus, Names,
    Runtime, Service, ServiceEnv, Signal,
};
use crate::provision::Provisioned;

/// How long each component may take to become ready. Generous because a cold JVM on two
/// busy cores (cargo building next to it) is slow; a healthy start is much faster
/// (Kafka ~7 s, PostgreSQL ~0.5 s, FerretDB ~0.2 s). PostgreSQL after a crash replays
/// its WAL first.
const KAFKA_READY_TIMEOUT: Duration = Duration::from_secs(120);
const POSTGRES_READY_TIMEOUT: Duration = Duration::from_secs(120);
const MONGO_READY_TIMEOUT: Duration = Duration::from_secs(30);
const API_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A consumer has no port to probe: it counts as started if it is still alive after this.
const CONSUMER_GRACE: Duration = Duration::from_millis(750);
/// Graceful stop: SIGTERM (PostgreSQL: SIGINT), then SIGKILL after this. Kafka's
/// controlled shutdown is the slowest (a few seconds); consumers flush and commit;
/// PostgreSQL writes a checkpoint.
const KAFKA_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the processes of a killed PostgreSQL may take to notice and exit.
const POSTGRES_ORPHANS_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Who cleans up the stack's processes; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Ownership {
    /// Processes die with the owning process and when the [`LocalStack`] is dropped.
    #[default]
    Attached,
    /// Processes outlive the owner; `state.json` lets later processes manage them.
    Detached,
}

/// Configuration of a local stack. Ports set to 0 are picked (free ports on 127.0.0.1)
/// by [`LocalStack::up`] and then recorded, so restarts reuse them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalStackConfig {
    /// The stack's own directory (created if missing): state, logs, data.
    pub dir: PathBuf,
    /// Client listener (PLAINTEXT) of `kafka#1`; further brokers get picked ports,
    /// recorded with their instances.
    pub kafka_port: u16,
    /// KRaft controller listener of `kafka#1` (likewise).
    pub kafka_controller_port: u16,
    /// FerretDB.
    pub mongo_port: u16,
    /// PostgreSQL (the store under FerretDB). Absent from the state of stacks made before
    /// it was (FerretDB on SQLite): 0 there, and such a stack has no `postgres#1`.
    #[serde(default)]
    pub postgres_port: u16,
    /// Port of `api#1`; further api instances get picked ports.
    pub api_port: u16,
    /// Number of `wiber-server consumer` instances started by `up` (0 = none).
    pub consumers: u32,
    /// Number of `wiber-server api` instances started by `up` (0 = none).
    pub apis: u32,
    /// `KAFKA_PARTITIONS` for the services, and the broker's default partition count.
    pub partitions: u32,
    /// Brokers and safety profile (one safe broker in states written before clusters).
    #[serde(default)]
    pub cluster: super::Cluster,
    /// Topic, group, database and collection the services use.
    pub names: Names,
    /// Kafka JVM heap (-Xmx), MiB.
    pub kafka_heap_mb: u32,
    /// Extra environment for api and consumer instances (e.g. `RUST_LOG`).
    pub extra_env: Vec<(String, String)>,
    pub ownership: Ownership,
}

impl LocalStackConfig {
    /// Defaults: picked ports, 1 api, 1 consumer, 3 partitions, topic `wiber.messages`,
    /// group `wiber-consumers`, database `wiber`, collection `messages`, attached.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalStackConfig {
            dir: dir.into(),
            kafka_port: 0,
            kafka_controller_port: 0,
            mongo_port: 0,
            postgres_port: 0,
            api_port: 0,
            consumers: 1,
            apis: 1,
            partitions: 3,
            cluster: super::Cluster::default(),
            names: Names::default(),
            kafka_heap_mb: 512,
            extra_env: Vec::new(),
            ownership: Ownership::Attached,
        }
    }
}

/// One instance as recorded in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceRecord {
    id: InstanceId,
    /// Listening port (kafka: the client listener, postgres, mongo, api); None for
    /// consumers.
    port: Option<u16>,
    /// A broker's KRaft controller listener. None for the other services, and for
    /// `kafka#1` in states written before clusters (its port is then the config's
    /// `kafka_controller_port`; see [`StackState::brokers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    controller_port: Option<u16>,
    pid: Option<u32>,
    /// Identifies the process behind `pid` (see `process.rs`).
    start_ticks: Option<u64>,
    #[serde(with = "rfc3339_opt")]
    started_at: Option<DateTime<Utc>>,
    /// Times started after the first start.
    restarts: u32,
    /// Times started at all.
    starts: u32,
}

/// Everything `state.json` holds: enough for another process to manage the stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StackState {
    config: LocalStackConfig,
    provisioned: Provisioned,
    /// KRaft cluster id every broker's data dir is formatted with.
    kafka_cluster_id: String,
    instances: Vec<InstanceRecord>,
}

impl StackState {
    fn record(&self, id: &InstanceId) -> Result<&InstanceRecord> {
        self.instances.iter().find(|r| r.id == *id).ok_or_else(|| {
            let have: Vec<String> = self.instances.iter().map(|r| r.id.to_string()).collect();
            anyhow!(
                "no instance {id} in the local stack at {} (it has: {})",
                self.config.dir.display(),
                have.join(", ")
            )
        })
    }

    fn record_mut(&mut self, id: &InstanceId) -> Result<&mut InstanceRecord> {
        self.record(id)?;
        Ok(self
            .instances
            .iter_mut()
            .find(|r| r.id == *id)
            .expect("checked above"))
    }

    /// The brokers and their listeners, by node id. `kafka#1`'s ports fall back to the
    /// config's, which is all a state written before clusters recorded of them.
    fn brokers(&self) -> Vec<Broker> {
        let c = &self.config;
        self.instances
            .iter()
            .filter(|r| r.id.service == Service::Kafka)
            .map(|r| Broker {
                node: r.id.index,
                port: r.port.unwrap_or(c.kafka_port),
                controller_port: r.controller_port.unwrap_or(c.kafka_controller_port),
            })
            .collect()
    }

    fn broker(&self, id: &InstanceId) -> Result<Broker> {
        self.record(id)?;
        Ok(self
            .brokers()
            .into_iter()
            .find(|b| b.node == id.index)
            .expect("checked above"))
    }

    /// Every broker's client address, comma separated (a bootstrap list).
    fn bootstrap(&self) -> String {
        self.brokers()
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `controller.quorum.voters`: every broker votes. Not [`super::Cluster::quorum_voters`],
    /// which puts every voter on one port (each its own host); here all share 127.0.0.1.
    fn quorum_voters(&self) -> String {
        self.brokers()
            .iter()
            .map(|b| format!("{}@127.0.0.1:{}", b.node, b.controller_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether a majority of the voters would run with `id` started: a broker answers
    /// clients only once the quorum has elected a controller.
    fn quorum_with(&self, id: &InstanceId) -> bool {
        let voters = self.brokers().len();
        let others_running = self
            .instances
            .iter()
            .filter(|r| r.id.service == Service::Kafka && r.id != *id)
            .filter(|r| match (r.pid, r.start_ticks) {
                (Some(pid), Some(t)) => process::state(pid, t) == ProcState::Running,
                _ => false,
            })
            .count();
        others_running + 1 > voters / 2
    }
}

/// A broker's node id and listeners (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Broker {
    node: u32,
    port: u16,
    controller_port: u16,
}

/// A running (or stopped) local stack. See the module docs.
///
/// Operations on *different* instances may run concurrently; do not run two operations
/// on the *same* instance at once.
pub struct LocalStack {
    dir: PathBuf,
    ownership: Ownership,
    state: Mutex<StackState>,
}

impl LocalStack {
    /// Starts a stack: Kafka, PostgreSQL, FerretDB, the consumers, the apis, each
    /// waited for. On failure everything already started is killed and the error says
    /// which component failed, with the last lines of its log.
    pub async fn up(cfg: LocalStackConfig, prov: &Provisioned) -> Result<LocalStack> {
        // What PostgreSQL needs from the machine, before anything is started for nothing.
        postgres::bin_dir()?;
        postgres::run_as()?;
        cfg.cluster.validate()?;
        let mut cfg = cfg;
        fs::create_dir_all(cfg.dir.join("logs"))
            .with_context(|| format!("creating the stack directory {}", cfg.dir.display()))?;
        cfg.dir = cfg
            .dir
            .canonicalize()
            .with_context(|| format!("resolving {}", cfg.dir.display()))?;
        for port in [
            &mut cfg.kafka_port,
            &mut cfg.kafka_controller_port,
            &mut cfg.postgres_port,
            &mut cfg.mongo_port,
            &mut cfg.api_port,
        ] {
            if *port == 0 {
                *port = pick_free_port()?;
            }
        }
        let mut instances = Vec::new();
        for n in 1..=cfg.cluster.brokers {
            let (port, controller_port) = if n == 1 {
                (cfg.kafka_port, cfg.kafka_controller_port)
            } else {
                (pick_free_port()?, pick_free_port()?)
            };
            let mut rec = InstanceRecord::new(InstanceId::new(Service::Kafka, n), Some(port));
            rec.controller_port = Some(controller_port);
            instances.push(rec);
        }
        instances.extend([
            InstanceRecord::new(
                InstanceId::first(Service::Postgres),
                Some(cfg.postgres_port),
            ),
            InstanceRecord::new(InstanceId::first(Service::Mongo), Some(cfg.mongo_port)),
        ]);
        for i in 1..=cfg.consumers {
            instances.push(InstanceRecord::new(
                InstanceId::new(Service::Consumer, i),
                None,
            ));
        }
        for i in 1..=cfg.apis {
            let port = if i == 1 {
                cfg.api_port
            } else {
                pick_free_port()?
            };
            instances.push(InstanceRecord::new(
                InstanceId::new(Service::Api, i),
                Some(port),
            ));
        }
        let stack = LocalStack {
            dir: cfg.dir.clone(),
            ownership: cfg.ownership,
            state: Mutex::new(StackState {
                config: cfg,
                provisioned: prov.clone(),
                kafka_cluster_id: kafka_cluster_id(),
                instances,
            }),
        };
        stack.save()?;
        if let Err(e) = stack.start_all().await {
            stack.kill_all_now();
            return Err(e.context(format!(
                "local stack at {} did not come up; everything started was killed",
                stack.dir.display()
            )));
        }
        Ok(stack)
    }

    /// Starts every instance in order, the brokers in one phase: all of them are
    /// launched before any is waited for, since a cluster's quorum forms (and a broker
    /// answers) only once most of them run.
    async fn start_all(&self) -> Result<()> {
        let (brokers, rest): (Vec<InstanceId>, Vec<InstanceId>) = self
            .lock()
            .instances
            .iter()
            .map(|r| r.id)
            .partition(|id| id.service == Service::Kafka);
        let mut launched = Vec::new();
        for id in &brokers {
            launched.push((*id, self.launch(id).await?));
        }
        for (id, proc) in launched {
            if let Some((pid, ticks)) = proc {
                self.await_ready(&id, pid, ticks).await?;
            }
        }
        for id in rest {
            self.start_instance(&id).await?;
        }
        Ok(())
    }

    /// Re-opens a stack started (usually detached) by another process, from its
    /// `state.json`. The returned handle never kills anything on drop.
    pub fn load(dir: &Path) -> Result<LocalStack> {
        let path = dir.join("state.json");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: no local stack there (start one with `wiberctl stack up --runtime local`)",
                path.display()
            )
        })?;
        let state: StackState = serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing {} (written by another wiberctl version?)",
                path.display()
            )
        })?;
        Ok(LocalStack {
            dir: state.config.dir.clone(),
            ownership: Ownership::Detached,
            state: Mutex::new(state),
        })
    }

    /// Stops everything gracefully, in reverse start order (apis, consumers, FerretDB,
    /// PostgreSQL, Kafka). Data and logs stay in the directory.
    pub async fn down(&self) -> Result<()> {
        let (brokers, mut rest): (Vec<InstanceId>, Vec<InstanceId>) = self
            .lock()
            .instances
            .iter()
            .map(|r| r.id)
            .partition(|id| id.service == Service::Kafka);
        rest.sort_by_key(|id| std::cmp::Reverse(start_rank(id.service)));
        let mut results = Vec::new();
        for id in rest {
            results.push(self.stop_instance(&id).await);
        }
        // The brokers together: one stopped after the others would have lost its quorum,
        // and its controlled shutdown would wait for a controller until it is killed.
        results.extend(
            futures::future::join_all(brokers.iter().map(|id| self.stop_instance(id))).await,
        );
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// Adds and starts one more consumer or api instance; returns its id.
    pub async fn add_instance(&self, service: Service) -> Result<InstanceId> {
        if !matches!(service, Service::Consumer | Service::Api) {
            bail!(
                "the local runtime does not add a {service} instance to a running stack: only \
                 consumer and api scale (the brokers are set when the stack is made, with \
                 `stack up --brokers N`)"
            );
        }
        let id = {
            let mut st = self.lock();
            let index = st
                .instances
                .iter()
                .filter(|r| r.id.service == service)
                .map(|r| r.id.index)
                .max()
                .unwrap_or(0)
                + 1;
            let id = InstanceId::new(service, index);
            let port = if service == Service::Api {
                Some(if index == 1 {
                    st.config.api_port
                } else {
                    pick_free_port()?
                })
            } else {
                None
            };
            st.instances.push(InstanceRecord::new(id, port));
            id
        };
        self.save()?;
        self.start_instance(&id).await?;
        Ok(id)
    }

    /// Every instance as `stack status` shows it: processes have no healthcheck and no
    /// network of their own to be cut off from.
    pub async fn status(&self) -> Result<Vec<InstanceStatus>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .map(|info| InstanceStatus {
                info,
                health: Health::None,
                connected: true,
            })
            .collect())
    }

    /// CPU and memory of every live instance's process, from `/proc` (see
    /// [`super::usage`]); instances without a live process are left out.
    pub fn usage(&self) -> Vec<Usage> {
        let procs: Vec<(InstanceId, u32, u64)> = self
            .lock()
            .instances
            .iter()
            .filter_map(|r| Some((r.id, r.pid?, r.start_ticks?)))
            .collect();
        procs
            .into_iter()
            // `state` checks the start time too: a reused pid is someone else's process.
            .filter(|(_, pid, ticks)| process::state(*pid, *ticks) != ProcState::Gone)
            .filter_map(|(id, pid, ticks)| {
                // PostgreSQL works in the postmaster's children (one per connection, plus
                // its writers): the instance is all of them.
                let children = (id.service == Service::Postgres).then(|| process::children_of(pid));
                usage::local_sample(id, pid, ticks, children.as_deref())
            })
            .collect()
    }

    /// Kafka bootstrap servers: every broker, `127.0.0.1:PORT,127.0.0.1:PORT,...`.
    pub fn bootstrap(&self) -> String {
        self.lock().bootstrap()
    }

    /// `postgres://wiber@127.0.0.1:PORT/ferretdb`: the database FerretDB stores into.
    pub fn postgres_url(&self) -> String {
        super::postgres_url(self.lock().config.postgres_port)
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true` (FerretDB is no replica set).
    pub fn mongo_uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            self.lock().config.mongo_port
        )
    }

    /// Base URL of `api#1`, `http://127.0.0.1:PORT` (defined even when no api runs, so a
    /// test can start one itself on that port).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.lock().config.api_port)
    }

    /// The stack's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The project: the name of the stack's directory (`.wiber/stacks/<project>`).
    pub fn project(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// The config with resolved ports.
    pub fn config(&self) -> LocalStackConfig {
        self.lock().config.clone()
    }

    /// Replaces the api and consumer instances' extra environment (`--service-env`) in
    /// the saved state. A running process keeps the one it started with: restart it.
    pub fn set_extra_env(&self, env: Vec<(String, String)>) -> Result<()> {
        self.lock().config.extra_env = env;
        self.save()
    }

    /// Path of an instance's log file.
    pub fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", id.file_stem()))
    }

    /// The environment an api or consumer instance gets (exposed so tests can run a
    /// service binary of their own against this stack).
    pub fn service_env(&self, id: &InstanceId) -> Vec<(String, String)> {
        service_env_from(&self.lock(), id)
    }

    fn lock(&self) -> MutexGuard<'_, StackState> {
        // A panic while holding the lock leaves consistent data (we never hold it across
        // partial updates), so recover from poisoning instead of cascading panics.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `state.json` atomically (temp file + rename).
    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&*self.lock())?;
        let tmp = self.dir.join("state.json.tmp");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, self.dir.join("state.json"))
            .with_context(|| format!("writing {}", self.dir.join("state.json").display()))
    }

    /// (pid, start_ticks, state) of the instance's current process, if any.
    fn proc_of(&self, id: &InstanceId) -> Result<Option<(u32, u64, ProcState)>> {
        let st = self.lock();
        let rec = st.record(id)?;
        Ok(match (rec.pid, rec.start_ticks) {
            (Some(pid), Some(ticks)) => Some((pid, ticks, process::state(pid, ticks))),
            _ => None,
        })
    }

    fn running_proc(&self, id: &InstanceId) -> Result<(u32, u64, ProcState)> {
        match self.proc_of(id)? {
            Some(p) if p.2 != ProcState::Gone => Ok(p),
            _ => bail!("{id} is not running (exited); start it first"),
        }
    }

    /// Starts one instance (no-op if running) and waits until it is ready.
    async fn start_instance(&self, id: &InstanceId) -> Result<()> {
        match self.launch(id).await? {
            Some((pid, ticks)) => self.await_ready(id, pid, ticks).await,
            None => Ok(()),
        }
    }

    /// Prepares and spawns one instance without waiting for it; returns its (pid,
    /// start_ticks), or None if it is running already.
    async fn launch(&self, id: &InstanceId) -> Result<Option<(u32, u64)>> {
        if let Some((_, _, s)) = self.proc_of(id)? {
            if s != ProcState::Gone {
                return Ok(None);
            }
        }
        let (spec, ports) = {
            let st = self.lock();
            let rec = st.record(id)?;
            let mut ports: Vec<u16> = rec.port.into_iter().collect();
            if id.service == Service::Kafka {
                ports.push(st.broker(id)?.controller_port);
            }
            (self.spawn_spec(&st, id)?, ports)
        };
        match id.service {
            Service::Kafka => self.prepare_kafka(id).await?,
            Service::Postgres => self.prepare_postgres().await?,
            Service::Mongo => fs::create_dir_all(self.dir.join("mongo"))?,
            Service::Api | Service::Consumer => {}
        }
        for port in ports {
            // A leftover process (e.g. of a stack whose owner was SIGKILLed a moment
            // ago) would make the readiness probe talk to the wrong server.
            if probe::tcp_accepts(&format!("127.0.0.1:{port}")).await {
                bail!(
                    "cannot start {id}: port {port} on 127.0.0.1 is already in use by another \
                     process (check with `ss -ltnp 'sport = :{port}'`)"
                );
            }
        }
        append_banner(&spec.log, &format!("starting {id}"));
        let spawned = process::spawn(spec).with_context(|| format!("starting {id}"))?;
        {
            let mut st = self.lock();
            let rec = st.record_mut(id)?;
            if rec.starts > 0 {
                rec.restarts += 1;
            }
            rec.starts += 1;
            rec.pid = Some(spawned.pid);
            rec.start_ticks = Some(spawned.start_ticks);
            rec.started_at = Some(Utc::now());
        }
        self.save()?;
        Ok(Some((spawned.pid, spawned.start_ticks)))
    }

    /// Waits until a launched instance is ready; kills it if it does not become so.
    async fn await_ready(&self, id: &InstanceId, pid: u32, ticks: u64) -> Result<()> {
        let started = Instant::now();
        let ready = async {
            self.wait_ready(id, pid, ticks).await?;
            if id.service == Service::Postgres {
                self.setup_postgres().await?;
            }
            anyhow::Ok(())
        };
        match ready.await {
            Ok(()) => {
                tracing::info!(instance = %id, pid, elapsed_ms = started.elapsed().as_millis() as u64, "local instance ready");
                Ok(())
            }
            Err(e) => {
                // Leave nothing half-started behind: the caller sees the error and the log.
                let _ = process::signal(pid, ticks, libc::SIGKILL);
                process::wait_gone(pid, ticks, Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    /// Polls the instance's readiness probe until it passes, the process dies, or the
    /// component's timeout passes.
    async fn wait_ready(&self, id: &InstanceId, pid: u32, ticks: u64) -> Result<()> {
        let (port, broker, quorum) = {
            let st = self.lock();
            let broker = (id.service == Service::Kafka)
                .then(|| st.broker(id))
                .transpose()?;
            (st.record(id)?.port, broker, st.quorum_with(id))
        };
        let (limit, what) = match id.service {
            Service::Kafka if quorum => (KAFKA_READY_TIMEOUT, "Kafka answering ApiVersions"),
            // A broker answers clients only once its quorum has a leader, which needs
            // most of the voters running: one started alone (`stack up` starting a stopped
            // cluster's brokers one by one, or `stack start kafka#1` with its peers
            // down) counts as started once its controller listener is up to vote.
            Service::Kafka => (
                KAFKA_READY_TIMEOUT,
                "the KRaft controller listener accepting connections (most of the brokers \
                 are down, so the quorum cannot elect a controller and the broker will answer \
                 clients once enough of them are started)",
            ),
            Service::Postgres => (POSTGRES_READY_TIMEOUT, "PostgreSQL answering SELECT 1"),
            Service::Mongo => (MONGO_READY_TIMEOUT, "FerretDB accepting connections"),
            Service::Api => (API_READY_TIMEOUT, "GET /health/readiness answering 200"),
            Service::Consumer => (CONSUMER_GRACE, "the consumer staying alive"),
        };
        let addr = match broker {
            Some(b) if !quorum => format!("127.0.0.1:{}", b.controller_port),
            _ => format!("127.0.0.1:{}", port.unwrap_or(0)),
        };
        if id.service == Service::Kafka && !quorum {
            tracing::info!(instance = %id, "most brokers are down: waiting for the controller listener only");
        }
        let deadline = Instant::now() + limit;
        let mut last_probe_error = String::new();
        loop {
            if process::state(pid, ticks) == ProcState::Gone {
                bail!(
                    "{id} (pid {pid}) exited during start-up.\nLast lines of {}:\n{}",
                    self.log_path(id).display(),
                    process::tail_file(&self.log_path(id), 30)
                );
            }
            let ready = match id.service {
                Service::Kafka if !quorum => probe::tcp_accepts(&addr).await,
                Service::Kafka => match probe::kafka_api_versions(&addr).await {
                    Ok(()) => true,
                    Err(e) => {
                        last_probe_error = format!("{e:#}");
                        false
                    }
                },
                Service::Postgres => {
                    let url = format!("postgres://{}@{addr}/postgres", super::POSTGRES_USER);
                    match crate::pg::ping(&url, Duration::from_secs(2)).await {
                        Ok(()) => true,
                        Err(e) => {
                            last_probe_error = format!("{e:#}");
                            false
                        }
                    }
                }
                Service::Mongo => probe::tcp_accepts(&addr).await,
                Service::Api => {
                    match probe::http_get(&addr, "/health/readiness", Duration::from_secs(2)).await
                    {
                        Ok((200, _)) => true,
                        Ok((status, body)) => {
                            last_probe_error = format!("HTTP {status}: {}", body.trim());
                            false
                        }
                        Err(e) => {
                            last_probe_error = format!("{e:#}");
                            false
                        }
                    }
                }
                // Alive at the end of the grace period = started.
                Service::Consumer => Instant::now() >= deadline,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{id} (pid {pid}) was not ready within {limit:?} (waiting for {what} on {addr}; \
                     last probe: {}); it was killed.\nLast lines of {}:\n{}",
                    if last_probe_error.is_empty() { "-" } else { &last_probe_error },
                    self.log_path(id).display(),
                    process::tail_file(&self.log_path(id), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Graceful stop: SIGCONT (a stopped process cannot handle SIGTERM), SIGTERM, bounded
    /// wait, then SIGKILL. No-op if not running.
    async fn stop_instance(&self, id: &InstanceId) -> Result<()> {
        let Some((pid, ticks, s)) = self.proc_of(id)? else {
            return Ok(());
        };
        if s == ProcState::Gone {
            return Ok(());
        }
        if id.service == Service::Postgres {
            // A paused cluster is frozen as a whole (see `pause`).
            signal_children(pid, libc::SIGCONT);
        }
        let _ = process::signal(pid, ticks, libc::SIGCONT);
        // PostgreSQL's SIGTERM is a *smart* shutdown, which waits for every client to
        // leave, and FerretDB keeps its pool open: SIGINT (fast) ends the sessions,
        // writes a checkpoint and exits.
        let term = if id.service == Service::Postgres {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        let _ = process::signal(pid, ticks, term);
        let limit = match id.service {
            Service::Kafka | Service::Postgres => KAFKA_STOP_TIMEOUT,
            _ => STOP_TIMEOUT,
        };
        if !process::wait_gone(pid, ticks, limit).await {
            tracing::warn!(instance = %id, pid, "did not stop within {limit:?} after SIGTERM; sending SIGKILL");
            let _ = process::signal(pid, ticks, libc::SIGKILL);
            if !process::wait_gone(pid, ticks, Duration::from_secs(10)).await {
                bail!("{id} (pid {pid}) survived SIGKILL for 10 s (stuck in the kernel?)");
            }
        }
        Ok(())
    }

    /// Makes the cluster's directories and, at the first start, the cluster (initdb);
    /// after a crash, waits until the old server's processes are gone.
    async fn prepare_postgres(&self) -> Result<()> {
        let pg_dir = self.dir.join("postgres");
        let bin = postgres::bin_dir()?;
        let user = postgres::run_as()?;
        postgres::prepare_dirs(&pg_dir, user)?;
        if !postgres::initialized(&pg_dir) {
            let log = self.log_path(&InstanceId::first(Service::Postgres));
            append_banner(&log, "initdb");
            let dir = pg_dir.clone();
            tokio::task::spawn_blocking(move || {
                postgres::initdb(&bin, &dir, user, super::POSTGRES_USER, &log)
            })
            .await??;
        }
        postgres::wait_cluster_gone(&pg_dir, POSTGRES_ORPHANS_TIMEOUT).await?;
        for note in postgres::clear_stale_locks(&pg_dir)? {
            append_banner(&self.log_path(&InstanceId::first(Service::Postgres)), &note);
        }
        Ok(())
    }

    /// Creates FerretDB's database when missing and applies the project's setup to it
    /// (idempotent), so that every collection FerretDB creates from now on is equipped
    /// with its GIN indexes and count triggers. Runs before FerretDB starts.
    async fn setup_postgres(&self) -> Result<()> {
        let port = self.lock().config.postgres_port;
        let server = format!(
            "postgres://{}@127.0.0.1:{port}/postgres",
            super::POSTGRES_USER
        );
        crate::pg::ensure_database(&server, crate::pg::FERRETDB_DATABASE).await?;
        crate::pg::apply_setup(&super::postgres_url(port)).await
    }

    /// A broker's directory: `kafka/` for `kafka#1` (where a single-broker stack made
    /// before clusters keeps its data), `kafka-N/` for the others.
    fn kafka_dir(&self, id: &InstanceId) -> PathBuf {
        match id.index {
            1 => self.dir.join("kafka"),
            n => self.dir.join(format!("kafka-{n}")),
        }
    }

    /// Writes the broker's `server.properties` (at every start, so the voters always
    /// match the stack) and formats its data dir if it is not formatted yet (formatting
    /// again would refuse, and a restart must keep the data). Every broker is formatted
    /// with the stack's one cluster id; the voters are static, so no `--standalone`.
    async fn prepare_kafka(&self, id: &InstanceId) -> Result<()> {
        let (properties, prov, cluster_id) = {
            let st = self.lock();
            let data = self.kafka_dir(id).join("data");
            (
                kafka_properties(&st.config, st.broker(id)?, &st.quorum_voters(), &data),
                st.provisioned.clone(),
                st.kafka_cluster_id.clone(),
            )
        };
        let kdir = self.kafka_dir(id);
        let data = kdir.join("data");
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let props = kdir.join("server.properties");
        fs::write(&props, properties).with_context(|| format!("writing {}", props.display()))?;
        if data.join("meta.properties").is_file() {
            return Ok(());
        }
        let log = self.log_path(id);
        append_banner(&log, "formatting the KRaft storage");
        let out = tokio::task::spawn_blocking(move || {
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            let mut child = std::process::Command::new(&prov.java)
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    prov.kafka_log4j2_config.display()
                ))
                .arg("-cp")
                .arg(prov.kafka_libs.join("*"))
                .arg("kafka.tools.StorageTool")
                // `--cluster-id=ID` in one argument: a base64url id may start with `-`, which
                // the tool would otherwise read as an option (a 1-in-32 failure).
                .args([
                    "format",
                    "--ignore-formatted",
                    &format!("--cluster-id={cluster_id}"),
                    "-c",
                ])
                .arg(&props)
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()?;
            // Bounded: formatting takes ~2 s.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(status) = child.try_wait()? {
                    return anyhow::Ok((status, log));
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("kafka-storage format did not finish within 120 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await??;
        if !out.0.success() {
            bail!(
                "formatting Kafka's storage in {} failed ({}); if the directory holds data of \
                 another cluster, remove it.\nLast lines of {}:\n{}",
                data.display(),
                out.0,
                out.1.display(),
                process::tail_file(&out.1, 20)
            );
        }
        Ok(())
    }

    /// How to run an instance. Deterministic from the state, so another process (after
    /// [`LocalStack::load`]) restarts it exactly the same way.
    fn spawn_spec(&self, st: &StackState, id: &InstanceId) -> Result<SpawnSpec> {
        let rec = st.record(id)?;
        let prov = &st.provisioned;
        let c = &st.config;
        let (program, args, env): (PathBuf, Vec<OsString>, Vec<(String, String)>) = match id.service
        {
            Service::Kafka => (
                prov.java.clone(),
                vec![
                    format!("-Xms{}m", c.kafka_heap_mb.min(256)).into(),
                    format!("-Xmx{}m", c.kafka_heap_mb).into(),
                    "-XX:+UseG1GC".into(),
                    "-XX:MaxGCPauseMillis=20".into(),
                    "-Djava.awt.headless=true".into(),
                    format!(
                        "-Dlog4j2.configurationFile={}",
                        prov.kafka_log4j2_config.display()
                    )
                    .into(),
                    format!(
                        "-Dkafka.logs.dir={}",
                        self.kafka_dir(id).join("logs").display()
                    )
                    .into(),
                    "-cp".into(),
                    prov.kafka_libs.join("*").into(),
                    "kafka.Kafka".into(),
                    self.kafka_dir(id).join("server.properties").into(),
                ],
                Vec::new(),
            ),
            Service::Postgres => (
                postgres::bin_dir()?.join("postgres"),
                postgres::server_args(
                    &self.dir.join("postgres"),
                    rec.port.unwrap_or(c.postgres_port),
                ),
                Vec::new(),
            ),
            Service::Mongo => {
                let mdir = self.dir.join("mongo");
                if st.record(&InstanceId::first(Service::Postgres)).is_err() {
                    bail!(
                        "the local stack at {} was made by an older wiberctl (FerretDB on \
                         SQLite, no postgres#1): recreate it with `wiberctl stack down --volumes \
                         --runtime local` and `wiberctl stack up --runtime local`",
                        self.dir.display()
                    );
                }
                (
                    prov.ferretdb_bin.clone(),
                    vec![
                        "--handler=postgresql".into(),
                        format!("--postgresql-url={}", super::postgres_url(c.postgres_port)).into(),
                        super::FERRETDB_INSERT_BATCH_FLAG.into(),
                        format!(
                            "--listen-addr=127.0.0.1:{}",
                            rec.port.unwrap_or(c.mongo_port)
                        )
                        .into(),
                        format!("--state-dir={}", mdir.display()).into(),
                        // Its debug/metrics HTTP listener defaults to a fixed port
                        // (8088), which would clash between stacks: off.
                        "--debug-addr=-".into(),
                        // No phoning home, ever.
                        "--telemetry=disable".into(),
                        "--log-format=json".into(),
                    ],
                    Vec::new(),
                )
            }
            Service::Api | Service::Consumer => {
                let bin = server_bin()?;
                let sub = if id.service == Service::Api {
                    "api"
                } else {
                    "consumer"
                };
                (bin, vec![sub.into()], service_env_from(st, id))
            }
        };
        let user = match id.service {
            Service::Postgres => postgres::run_as()?.map(|u| (u.uid, u.gid)),
            _ => None,
        };
        Ok(SpawnSpec {
            program,
            args,
            env,
            cwd: self.dir.clone(),
            log: self.log_path(id),
            die_with_owner: self.ownership == Ownership::Attached,
            user,
        })
    }

    /// SIGKILLs every live instance and reaps it (used by `Drop` and on failed `up`).
    fn kill_all_now(&self) {
        let procs: Vec<(u32, u64)> = self
            .lock()
            .instances
            .iter()
            .filter_map(|r| Some((r.pid?, r.start_ticks?)))
            .collect();
        for (pid, ticks) in &procs {
            let _ = process::signal(*pid, *ticks, libc::SIGKILL);
        }
        for (pid, ticks) in procs {
            process::wait_gone_blocking(pid, ticks, Duration::from_secs(5));
        }
    }
}

fn service_env_from(st: &StackState, id: &InstanceId) -> Vec<(String, String)> {
    let c = &st.config;
    let api_port = st
        .record(id)
        .ok()
        .and_then(|r| r.port)
        .unwrap_or(c.api_port);
    ServiceEnv {
        id: *id,
        kafka_bootstrap: &st.bootstrap(),
        mongo_uri: &format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            c.mongo_port
        ),
        store_sql_url: Some(&super::postgres_url(c.postgres_port)),
        names: &c.names,
        partitions: c.partitions,
        cluster: c.cluster,
        api_listen: ("127.0.0.1", api_port),
        extra: &c.extra_env,
    }
    .vars()
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if self.ownership == Ownership::Attached {
            self.kill_all_now();
        }
    }
}

impl InstanceRecord {
    fn new(id: InstanceId, port: Option<u16>) -> Self {
        InstanceRecord {
            id,
            port,
            controller_port: None,
            pid: None,
            start_ticks: None,
            started_at: None,
            restarts: 0,
            starts: 0,
        }
    }
}

impl Runtime for LocalStack {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        let st = self.lock();
        Ok(st
            .instances
            .iter()
            .map(|r| {
                let state = match (r.pid, r.start_ticks) {
                    (Some(pid), Some(t)) => process::state(pid, t),
                    _ => ProcState::Gone,
                };
                InstanceInfo {
                    id: r.id,
                    state: match state {
                        ProcState::Running => InstanceState::Running,
                        ProcState::Stopped => InstanceState::Paused,
                        ProcState::Gone => InstanceState::Exited,
                    },
                    pid_or_container: r.pid.map_or("-".to_string(), |p| p.to_string()),
                    started_at: r.started_at,
                    restarts: r.restarts,
                    address: match (r.id.service, r.port) {
                        (Service::Api, Some(p)) => format!("http://127.0.0.1:{p}"),
                        (Service::Mongo, Some(p)) => format!("mongodb://127.0.0.1:{p}"),
                        (Service::Postgres, Some(p)) => format!("postgres://127.0.0.1:{p}"),
                        (_, Some(p)) => format!("127.0.0.1:{p}"),
                        (_, None) => String::new(),
                    },
                }
            })
            .collect())
    }

    async fn kill(&self, id: &InstanceId, sig: Signal) -> Result<()> {
        let (pid, ticks, _) = self.running_proc(id)?;
        process::signal(pid, ticks, sig.as_libc())
            .with_context(|| format!("sending {} to {id}", sig.name()))?;
        if sig == Signal::Kill {
            // SIGKILL is immediate; wait (briefly) so a following list() says "exited".
            process::wait_gone(pid, ticks, Duration::from_secs(5)).await;
        }
        Ok(())
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.stop_instance(id).await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.start_instance(id).await
    }

    async fn restart(&self, id: &InstanceId) -> Result<()> {
        self.stop_instance(id).await?;
        self.start_instance(id).await
    }

    async fn pause(&self, id: &InstanceId) -> Result<()> {
        let (pid, ticks, _) = self.running_proc(id)?;
        // The parent first: a frozen postmaster forks no new children meanwhile.
        process::signal(pid, ticks, libc::SIGSTOP).with_context(|| format!("pausing {id}"))?;
        if id.service == Service::Postgres {
            // The postmaster alone would leave its backends serving FerretDB's open
            // connections: freeze the whole cluster, as pausing its container does.
            signal_children(pid, libc::SIGSTOP);
        }
        wait_for_state(pid, ticks, ProcState::Stopped).await;
        Ok(())
    }

    async fn unpause(&self, id: &InstanceId) -> Result<()> {
        let (pid, ticks, _) = self.running_proc(id)?;
        if id.service == Service::Postgres {
            signal_children(pid, libc::SIGCONT);
        }
        process::signal(pid, ticks, libc::SIGCONT).with_context(|| format!("unpausing {id}"))?;
        wait_for_state(pid, ticks, ProcState::Running).await;
        Ok(())
    }

    async fn disconnect(&self, id: &InstanceId) -> Result<()> {
        bail!("disconnecting {id} from the network is not supported by the local runtime; use the docker runtime")
    }

    async fn reconnect(&self, id: &InstanceId) -> Result<()> {
        bail!("reconnecting {id} to the network is not supported by the local runtime; use the docker runtime")
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String> {
        self.lock().record(id)?;
        Ok(process::tail_file(&self.log_path(id), tail))
    }
}

/// Sends `sig` to every child of `pid` (a PostgreSQL cluster's processes).
fn signal_children(pid: u32, sig: libc::c_int) {
    for child in process::children_of(pid) {
        process::signal_found(child, sig);
    }
}

/// SIGSTOP/SIGCONT are asynchronous; wait (bounded, 2 s) until /proc reflects them.
async fn wait_for_state(pid: u32, ticks: u64, want: ProcState) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while process::state(pid, ticks) != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start_rank(s: Service) -> usize {
    Service::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// One broker's KRaft configuration: a combined node (broker and controller in one
/// process) among `voters`, with the replication the cluster's shape decides.
fn kafka_properties(c: &LocalStackConfig, me: Broker, voters: &str, data: &Path) -> String {
    let mut text = format!(
        "# Generated by wiberctl (cli/src/runtime/local.rs) at every start of kafka#{node}.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions={partitions}
# Topics are created by the services with their configured partitions, never implicitly.
auto.create.topics.enable=false
# 10, not 50: one small consumer group.
offsets.topic.num.partitions=10
# Consumers join at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# Replication, in-sync minimum and election safety: the cluster's shape decides.
",
        node = me.node,
        cport = me.controller_port,
        port = me.port,
        data = data.display(),
        partitions = c.partitions,
    );
    for (prop, value) in c.cluster.broker_properties() {
        text.push_str(&format!("{prop}={value}\n"));
    }
    text
}

/// A KRaft cluster id: 16 random bytes, base64url without padding (what
/// `kafka-storage random-uuid` prints).
fn kafka_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A currently free TCP port on 127.0.0.1 (the OS picks; there is a small window in
/// which another process could take it, which start-up would then report).
///
/// Never the same port twice in one process: the OS may hand a just-released port out
/// again at once, and a caller picking several (api, store, brokers) before binding any
/// would get two services on one port (seen in CI: api and PostgreSQL both on 43917).
pub fn pick_free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding 127.0.0.1:0 to pick a free port")?;
        let port = l.local_addr()?.port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return Ok(port);
        }
    }
    bail!("the OS kept handing out ports this process had already picked: 64 tries")
}

/// Finds the `wiber-server` binary: `$WIBER_SERVER_BIN`, else next to the current
/// executable (`target/debug/`), or one level up when the current executable is a test
/// binary in `target/debug/deps/`.
pub fn server_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WIBER_SERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "WIBER_SERVER_BIN={} does not exist: build it with `cargo build -p wiber-server`",
                p.display()
            );
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("wiber-server")];
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(up) = dir.parent() {
            candidates.push(up.join("wiber-server"));
        }
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "wiber-server binary not found (looked at {}): build it with `cargo build -p wiber-server` \
             or set WIBER_SERVER_BIN",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

fn append_banner(log: &Path, what: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "=== wiberctl {}: {what} ===", Utc::now().to_rfc3339());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..300).map(|_| pick_free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    /// Compile-time check: the stack's futures are `Send`, so callers may `tokio::spawn`
    /// them (e.g. a chaos task running next to a load generator).
    #[allow(dead_code)]
    fn futures_are_send(stack: &LocalStack, id: &InstanceId, prov: &Provisioned) {
        fn is_send<T: Send>(_: &T) {}
        is_send(&stack.restart(id));
        is_send(&stack.kill(id, Signal::Kill));
        is_send(&stack.list());
        is_send(&stack.down());
        is_send(&stack.add_instance(Service::Consumer));
        is_send(&LocalStack::up(LocalStackConfig::new("x"), prov));
    }

    fn state(cfg: LocalStackConfig, instances: Vec<InstanceRecord>) -> StackState {
        StackState {
            config: cfg,
            provisioned: Provisioned {
                kafka_libs: "libs".into(),
                kafka_version: "4".into(),
                kafka_log4j2_config: "log4j2.yaml".into(),
                ferretdb_bin: "ferretdb".into(),
                ferretdb_version: "v1".into(),
                java: "java".into(),
                cache_dir: "cache".into(),
            },
            kafka_cluster_id: kafka_cluster_id(),
            instances,
        }
    }

    /// A state written before clusters: no `cluster` in the config, and kafka#1's
    /// controller port only in the config.
    #[test]
    fn a_single_broker_state_from_before_clusters_loads() {
        let mut cfg = LocalStackConfig::new("/tmp/old");
        (cfg.kafka_port, cfg.kafka_controller_port) = (9092, 9093);
        let mut old = serde_json::to_value(state(cfg, Vec::new())).unwrap();
        old["config"].as_object_mut().unwrap().remove("cluster");
        old["instances"] = serde_json::json!([{
            "id": {"service": "kafka", "index": 1}, "port": 9092, "pid": null,
            "start_ticks": null, "started_at": null, "restarts": 0, "starts": 0
        }]);
        let st: StackState = serde_json::from_value(old).unwrap();
        assert_eq!(st.config.cluster, super::super::Cluster::default());
        let broker = Broker {
            node: 1,
            port: 9092,
            controller_port: 9093,
        };
        assert_eq!(st.brokers(), vec![broker]);
        assert_eq!(st.bootstrap(), "127.0.0.1:9092");
        assert_eq!(st.quorum_voters(), "1@127.0.0.1:9093");
        let props = kafka_properties(&st.config, broker, &st.quorum_voters(), Path::new("d"));
        assert!(
            props.contains("\noffsets.topic.replication.factor=1\n"),
            "{props}"
        );
    }

    #[test]
    fn three_brokers_all_vote_and_replicate_three_times() {
        let mut cfg = LocalStackConfig::new("/tmp/c3");
        cfg.cluster.brokers = 3;
        let instances = (1..=3)
            .map(|n| {
                let mut r =
                    InstanceRecord::new(InstanceId::new(Service::Kafka, n), Some(9000 + n as u16));
                r.controller_port = Some(9100 + n as u16);
                r
            })
            .collect();
        let st = state(cfg, instances);
        assert_eq!(
            st.bootstrap(),
            "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
        );
        let voters = st.quorum_voters();
        assert_eq!(voters, "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103");
        let id = InstanceId::new(Service::Kafka, 2);
        let props = kafka_properties(&st.config, st.broker(&id).unwrap(), &voters, Path::new("d"));
        for line in [
            "node.id=2",
            "listeners=PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "unclean.leader.election.enable=false",
        ] {
            assert!(
                props.lines().any(|l| l == line),
                "{line} missing from:\n{props}"
            );
        }
        // No process runs: a broker started alone has no quorum, two of three have one.
        assert!(!st.quorum_with(&id));
    }

    #[test]
    fn cluster_id_is_22_base64url_chars() {
        let id = kafka_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
