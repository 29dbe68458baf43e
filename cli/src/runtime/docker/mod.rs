//! The Docker runtime: the stack as containers on one engine, driven through its API
//! (bollard). This is the only module that touches bollard; nothing of it leaks out.
//!
//! One stack is one *project*:
//!
//! ```text
//! network   <project>_net                 user-defined bridge; services reach each other
//!                                          by alias (kafka, postgres, mongo); the api is
//!                                          on the host's network
//! volumes   <project>_kafka, <project>_postgres, <project>_mongo
//! containers <project>-<service>-<n>       labels wiber.project, wiber.service, wiber.instance
//! ```
//!
//! A stack started with `docker/docker-compose.yml` is recognised too: its containers
//! carry `wiber.service`, and compose's own `com.docker.compose.project` and
//! `com.docker.compose.container-number` stand in for project and instance. So `stack
//! status`, `chaos` and `stack down` work on either.
//!
//! On the offline images mongo is FerretDB, storing into the postgres container
//! (`wiber-postgres`, which applies the project's setup before it takes connections);
//! on the official ones it is MongoDB, and there is no postgres container.
//!
//! Ports are published on 127.0.0.1 only. Kafka has two client listeners: `kafka:9092`
//! for containers, and an external one (container port 9094) advertised as
//! `127.0.0.1:<kafka_port>` for the host. The api is the exception: it runs on the
//! host's network and listens on `127.0.0.1:<api_port>` itself, so no request crosses
//! `docker-proxy` (see [`HOST_NETWORK`]); it reaches Kafka and the store through their
//! published ports.
//!
//! Layout: this file holds the handle (connecting, finding the project's containers) and
//! the per-instance [`Runtime`] operations; [`lifecycle`] `up`, `down` and adding a
//! consumer; [`spec`] what each container is made of (image, env, ports,
//! healthcheck); [`status`] how containers are read back (state, health, network,
//! endpoints); [`images`] which images a stack runs on and how they get onto the engine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

pub mod images;
mod lifecycle;
mod netns;
mod spec;
mod status;

use super::{InstanceId, InstanceInfo, InstanceState, Runtime, Service, Signal, StackSpec};
use images::Images;
use status::{on_host_network, state_of};

const LABEL_PROJECT: &str = "wiber.project";
const LABEL_SERVICE: &str = "wiber.service";
const LABEL_INSTANCE: &str = "wiber.instance";
/// On api and consumer containers: the `--service-env` they were created with (see
/// [`service_env_label`]), so a warm `up` with another one recreates them.
const LABEL_SERVICE_ENV: &str = "wiber.service-env";
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";

/// Ports inside the containers (fixed; the host side is configurable).
const KAFKA_EXTERNAL_PORT: u16 = ports::KAFKA_EXTERNAL;
const MONGO_PORT: u16 = ports::MONGO;
const POSTGRES_PORT: u16 = ports::POSTGRES;

/// The ports services listen on inside their containers, for what must know them outside
/// this runtime (the proxied network faults).
pub mod ports {
    /// Brokers' listener on the project's network (consumers, replication).
    pub const KAFKA_INTERNAL: u16 = 9092;
    /// Brokers' listener for the host (published; the api on the host's network).
    pub const KAFKA_EXTERNAL: u16 = 9094;
    pub const MONGO: u16 = 27017;
    pub const POSTGRES: u16 = 5432;
}
const API_PORT: u16 = 8000;
/// The api's network mode. The api runs in the host's network namespace, listening on
/// 127.0.0.1:<api port> itself, because every request of a load test crosses that hop:
/// a published port on an engine with the userland proxy (Docker's default) copies each
/// byte through `docker-proxy` (~9 % of a core at 5000 req/s on two cores, plus latency
/// under load). Host networking needs no engine setting, so it holds on any engine the
/// user already runs. The api reaches Kafka's external listener and the store through
/// their published ports (batched produce requests: a small fraction of the traffic).
/// Kafka, mongo and the consumers stay on the project's bridge network, so `chaos
/// disconnect` of them, aliases and side-by-side projects work as before.
const HOST_NETWORK: &str = "host";
/// Healthcheck interval of kafka, postgres, mongo and the api. Every probe is an exec in the
/// container (runc, shim, containerd, dockerd): at 2-3 s for three containers that cost
/// ~7 % of a core on an idle stack, CPU the stack lacks at 5000 req/s on two cores. 5 s
/// halves it, for at most a few seconds more in `up` and restarts.
const HEALTH_INTERVAL_S: i64 = 5;
/// Same id as the compose file, so a volume formatted by either can be reused.
const KAFKA_CLUSTER_ID: &str = "5L6g3nShT-eMCtK--X86sw";

/// How long an instance may take to become ready after `start`/`restart` (a cold JVM on
/// two busy cores is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A container without a healthcheck (consumers) counts as ready once it has stayed
/// running this long.
const NO_HEALTHCHECK_GRACE: Duration = Duration::from_secs(2);
/// Graceful stop budget (SIGTERM, then SIGKILL): Kafka's controlled shutdown and a
/// consumer's final flush+commit are the slow ones.
const STOP_TIMEOUT_SECS: i32 = 30;
/// An engine on this machine answers in milliseconds; a bounded wait keeps a hung socket
/// from hanging the CLI.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `up` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpReport {
    /// The images the stack runs on.
    pub images: Images,
    pub created: Vec<String>,
    pub started: Vec<String>,
    pub already_running: Vec<String>,
    /// Api and consumer containers replaced because `--service-env` changed.
    pub recreated: Vec<String>,
    /// Instances of the project that `up` did not ask for (e.g. a third consumer while
    /// `--consumers 2`): left as they are.
    pub extra: Vec<String>,
}

impl Default for UpReport {
    fn default() -> Self {
        UpReport {
            images: Images::offline(),
            created: Vec::new(),
            started: Vec::new(),
            already_running: Vec::new(),
            recreated: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// The value of [`LABEL_SERVICE_ENV`]: the pairs as `K=V` lines, in the order given (the
/// order decides which of two equal keys wins). Empty for none, which is also what a
/// container without the label (made by an older wiberctl or by compose) counts as.
fn service_env_label(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `up` builds from: the spec, with the images resolved.
#[derive(Debug, Clone)]
struct Config {
    spec: StackSpec,
    images: Images,
    /// Host port of each broker's external listener, kafka#1 first (kafka#1's is
    /// `spec.ports.kafka`; the others are picked at `up`, or kept from their containers).
    broker_ports: Vec<u16>,
}

impl Config {
    /// Where the host (and the api, on the host's network) reaches every broker.
    fn host_bootstrap(&self) -> String {
        self.broker_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Where containers on the project's network reach every broker.
    fn network_bootstrap(&self) -> String {
        (1..=self.spec.cluster.brokers)
            .map(|n| format!("{}:9092", broker_host(n, self.spec.cluster.brokers)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The name broker `n` has on the project's network: `kafka` on a one-broker stack (as
/// the compose file), `kafka-<n>` in a cluster.
fn broker_host(n: u32, brokers: u32) -> String {
    if brokers == 1 {
        "kafka".into()
    } else {
        format!("kafka-{n}")
    }
}

/// The network aliases of an instance: its service name (`kafka`, `mongo`: how the
/// others find it), and `kafka-<n>` for every broker, which a cluster's brokers
/// advertise and vote by.
fn aliases(id: &InstanceId) -> Vec<String> {
    match (id.service, id.index) {
        (Service::Kafka, 1) => vec!["kafka".into(), "kafka-1".into()],
        (Service::Kafka, n) => vec![format!("kafka-{n}")],
        (s, _) => vec![s.name().to_string()],
    }
}

/// Summary of `down`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DownReport {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// A project's stack on the local Docker engine.
pub struct DockerStack {
    docker: Docker,
    project: String,
}

/// A container of the project, as found by listing.
#[derive(Debug, Clone)]
struct Found {
    id: InstanceId,
    container_id: String,
    name: String,
}

impl DockerStack {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and negotiates the API
    /// version (the Debian engine here speaks 1.41, older than bollard's default).
    pub async fn connect(project: &str) -> Result<DockerStack> {
        super::validate_project(project)?;
        let docker = Docker::connect_with_local_defaults()
            .context("cannot set up a Docker client (check DOCKER_HOST)")?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| anyhow!("the Docker engine did not answer within {CONNECT_TIMEOUT:?}"))?
            .context(
                "cannot reach the Docker engine (is dockerd running? start it with \
                 docker/offline/ensure-engine.sh, or use --runtime local)",
            )?;
        Ok(DockerStack {
            docker,
            project: project.to_string(),
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    fn network_name(&self) -> String {
        format!("{}_net", self.project)
    }

    fn volume_name(&self, what: &str) -> String {
        format!("{}_{what}", self.project)
    }

    /// A broker's data volume: `<project>_kafka` for kafka#1 (as before clusters, and as
    /// the compose file), `<project>_kafka-<n>` for the others.
    fn broker_volume(&self, index: u32) -> String {
        if index == 1 {
            self.volume_name("kafka")
        } else {
            self.volume_name(&format!("kafka-{index}"))
        }
    }

    fn container_name(&self, id: &InstanceId) -> String {
        format!("{}-{}-{}", self.project, id.service.name(), id.index)
    }

    /// True when the engine holds at least one container of this project.
    pub async fn exists(&self) -> Result<bool> {
        Ok(!self.find_all().await?.is_empty())
    }

    /// The project's containers (ours and compose-started), sorted by instance id.
    async fn find_all(&self) -> Result<Vec<Found>> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![LABEL_SERVICE.to_string()]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .context("listing containers")?;
        let mut out = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            // Compose's project name wins: the compose file hard-codes wiber.project.
            let project = labels
                .get(COMPOSE_PROJECT)
                .or_else(|| labels.get(LABEL_PROJECT));
            if project.map(String::as_str) != Some(self.project.as_str()) {
                continue;
            }
            let Some(service) = labels
                .get(LABEL_SERVICE)
                .and_then(|s| s.parse::<Service>().ok())
            else {
                continue; // e.g. akhq: not part of what wiberctl manages
            };
            let index = labels
                .get(LABEL_INSTANCE)
                .or_else(|| labels.get(COMPOSE_NUMBER))
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(1);
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            out.push(Found {
                id: InstanceId::new(service, index),
                container_id: c.id.unwrap_or_default(),
                name,
            });
        }
        out.sort_by_key(|f| f.id);
        Ok(out)
    }

    async fn find(&self, id: &InstanceId) -> Result<Found> {
        let all = self.find_all().await?;
        if let Some(f) = all.iter().find(|f| f.id == *id) {
            return Ok(f.clone());
        }
        let have: Vec<String> = all.iter().map(|f| f.id.to_string()).collect();
        if have.is_empty() {
            bail!(
                "no containers of project {} on this engine: start the stack with `wiberctl stack up --project {}`",
                self.project,
                self.project
            )
        }
        bail!(
            "no container for {id} in project {} (it has: {}); `wiberctl stack status` lists them",
            self.project,
            have.join(", ")
        )
    }

    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
        self.docker
            .inspect_container(container, None)
            .await
            .with_context(|| format!("inspecting container {container}"))
    }

    // --- images -----------------------------------------------------------------------

    // --- up / down ----------------------------------------------------------------------

    async fn logs_of(&self, container: &str, tail: usize) -> Result<String> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        let mut out = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
            let item = item.with_context(|| format!("reading logs of {container}"))?;
            out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
        }
        Ok(out)
    }

    /// A network fault has no meaning for a container on the host's network (the api):
    /// say so instead of the engine's error.
    async fn refuse_host_network(&self, id: &InstanceId, f: &Found, what: &str) -> Result<()> {
        if on_host_network(&self.inspect(&f.container_id).await?) {
            bail!(
                "cannot {what} {id}: it runs on the host's network (no proxy on the request \
                 path), not on the project's; cut off kafka, mongo or a consumer instead, or \
                 stop {id}"
            );
        }
        Ok(())
    }

    /// The network a disconnected container should rejoin.
    async fn home_network(&self) -> Result<String> {
        self.project_networks().await.into_iter().next().ok_or_else(|| {
            anyhow!(
                "project {} has no network ({} or {}_default): recreate the stack with `wiberctl stack up`",
                self.project,
                self.network_name(),
                self.project
            )
        })
    }
}

impl Runtime for DockerStack {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        Ok(self.status().await?.into_iter().map(|s| s.info).collect())
    }

    async fn kill(&self, id: &InstanceId, sig: Signal) -> Result<()> {
        let f = self.find(id).await?;
        let opts = KillContainerOptionsBuilder::new()
            .signal(sig.name())
            .build();
        self.docker
            .kill_container(&f.container_id, Some(opts))
            .await
            .map_err(|e| {
                if status_of(&e) == Some(409) {
                    anyhow!(
                        "{id} ({}) is not running: start it first (`wiberctl chaos start {id}`)",
                        f.name
                    )
                } else {
                    anyhow!(e).context(format!("sending {} to {id}", sig.name()))
                }
            })?;
        if sig == Signal::Kill {
            // Immediate, but let a following list() say "exited" (bounded).
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let (state, _, _) = state_of(&self.inspect(&f.container_id).await?);
                if state != InstanceState::Running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        let opts = StopContainerOptionsBuilder::new()
            .t(STOP_TIMEOUT_SECS)
            .build();
        match self
            .docker
            .stop_container(&f.container_id, Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(304) => Ok(()), // already stopped
            Err(e) => Err(anyhow!(e).context(format!("stopping {id}"))),
        }
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        let (state, _, _) = state_of(&self.inspect(&f.container_id).await?);
        if state == InstanceState::Paused {
            bail!("{id} is paused: unpause it (`wiberctl chaos unpause {id}`)");
        }
        match self.docker.start_container(&f.container_id, None).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(304) => {} // already running
            Err(e) => return Err(anyhow!(e).context(format!("starting {id}"))),
        }
        self.wait_one(id).await
    }

    async fn restart(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        let opts = RestartContainerOptionsBuilder::new()
            .t(STOP_TIMEOUT_SECS)
            .build();
        self.docker
            .restart_container(&f.container_id, Some(opts))
            .await
            .with_context(|| format!("restarting {id}"))?;
        self.wait_one(id).await
    }

    async fn pause(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        self.docker
            .pause_container(&f.container_id)
            .await
            .map_err(|e| {
                if status_of(&e) == Some(409) {
                    anyhow!("cannot pause {id}: it is not running or already paused ({e})")
                } else {
                    anyhow!(e).context(format!("pausing {id}"))
                }
            })
    }

    async fn unpause(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        match self.docker.unpause_container(&f.container_id).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => {
                bail!("cannot unpause {id}: it is not paused ({e})")
            }
            Err(e) => Err(anyhow!(e).context(format!("unpausing {id}"))),
        }
    }

    async fn disconnect(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        self.refuse_host_network(id, &f, "disconnect").await?;
        let net = self.home_network().await?;
        let req = NetworkDisconnectRequest {
            container: f.container_id.clone(),
            force: Some(true),
        };
        match self.docker.disconnect_network(&net, req).await {
            Ok(()) => Ok(()),
            // Not connected: already the state asked for.
            Err(e) if format!("{e}").contains("is not connected") => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("disconnecting {id} from {net}"))),
        }
    }

    async fn reconnect(&self, id: &InstanceId) -> Result<()> {
        let f = self.find(id).await?;
        self.refuse_host_network(id, &f, "reconnect").await?;
        let net = self.home_network().await?;
        let req = NetworkConnectRequest {
            container: f.container_id.clone(),
            // The aliases are how the others find it (kafka:9092, mongo:27017).
            endpoint_config: Some(EndpointSettings {
                aliases: Some(aliases(id)),
                ..Default::default()
            }),
        };
        match self.docker.connect_network(&net, req).await {
            Ok(()) => Ok(()),
            Err(e) if format!("{e}").contains("already exists") => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("reconnecting {id} to {net}"))),
        }
    }

    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String> {
        let f = self.find(id).await?;
        self.logs_of(&f.container_id, tail).await
    }
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
