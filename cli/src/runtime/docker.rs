//! The Docker runtime: the stack as containers on one engine, driven through its API
//! (bollard). This is the only module that touches bollard; nothing of it leaks out.
//!
//! One stack is one *project*:
//!
//! ```text
//! network   <project>_net                 user-defined bridge; services reach each other
//!                                          by alias (kafka, mongo)
//! volumes   <project>_kafka, <project>_mongo
//! containers <project>-<service>-<n>       labels wiber.project, wiber.service, wiber.instance
//! ```
//!
//! A stack started with `docker/docker-compose.yml` is recognised too: its containers
//! carry `wiber.service`, and compose's own `com.docker.compose.project` and
//! `com.docker.compose.container-number` stand in for project and instance. So `stack
//! status`, `chaos` and `stack down` work on either.
//!
//! Ports are published on 127.0.0.1 only. Kafka has two client listeners: `kafka:9092`
//! for containers, and an external one (container port 9094) advertised as
//! `127.0.0.1:<kafka_port>` for the host.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig, HostConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{InstanceId, InstanceInfo, Runtime, Service, Signal};

/// Default project name (also compose's, from `docker/.env`).
pub const DEFAULT_PROJECT: &str = "wiber";

const LABEL_PROJECT: &str = "wiber.project";
const LABEL_SERVICE: &str = "wiber.service";
const LABEL_INSTANCE: &str = "wiber.instance";
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";

/// Ports inside the containers (fixed; the host side is configurable).
const KAFKA_EXTERNAL_PORT: u16 = 9094;
const MONGO_PORT: u16 = 27017;
const API_PORT: u16 = 8000;
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

/// Which family of images a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFlavor {
    /// `apache/kafka`, `mongo:7` (single-node replica set), our server built from
    /// `docker/Dockerfile.server` on `debian:bookworm-slim`.
    Official,
    /// The `:offline` images of `docker/offline/build.sh` (FerretDB plays mongo).
    Offline,
}

/// The images of one stack. Official names follow the compose file and its variables
/// (`WIBER_KAFKA_IMAGE`, `WIBER_MONGO_IMAGE`, `WIBER_SERVER_IMAGE`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Images {
    pub flavor: ImageFlavor,
    pub kafka: String,
    pub mongo: String,
    pub server: String,
}

impl Images {
    pub fn offline() -> Images {
        Images {
            flavor: ImageFlavor::Offline,
            kafka: "wiber-kafka:offline".into(),
            mongo: "wiber-ferretdb:offline".into(),
            server: "wiber-server:offline".into(),
        }
    }

    pub fn official() -> Images {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        Images {
            flavor: ImageFlavor::Official,
            kafka: var("WIBER_KAFKA_IMAGE", "apache/kafka:4.4.0"),
            mongo: var("WIBER_MONGO_IMAGE", "mongo:7"),
            server: var("WIBER_SERVER_IMAGE", "wiber-server:local"),
        }
    }

    pub fn all(&self) -> [&str; 3] {
        [&self.kafka, &self.mongo, &self.server]
    }
}

/// What `up` builds. Host ports are published on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct DockerStackConfig {
    pub consumers: u32,
    pub api_port: u16,
    pub mongo_port: u16,
    pub kafka_port: u16,
    /// `KAFKA_PARTITIONS` for the services.
    pub partitions: u32,
    pub images: Images,
    /// Bound on the whole wait for health.
    pub ready_timeout: Duration,
    /// Extra environment for api and consumer containers (e.g. `RUST_LOG`).
    pub extra_env: Vec<(String, String)>,
}

/// Progress of `up`, for the caller's display.
#[derive(Debug, Clone)]
pub enum UpProgress {
    /// A container was created / started / found running.
    Container {
        id: InstanceId,
        action: &'static str,
    },
    /// Still waiting: instance, its state and health.
    Waiting {
        id: InstanceId,
        state: String,
        health: String,
    },
    Ready {
        id: InstanceId,
    },
}

/// What `up` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpReport {
    pub created: Vec<String>,
    pub started: Vec<String>,
    pub already_running: Vec<String>,
    /// Instances of the project that `up` did not ask for (e.g. a third consumer while
    /// `--consumers 2`): left as they are.
    pub extra: Vec<String>,
}

/// One container as `stack status` shows it.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub info: InstanceInfo,
    pub name: String,
    /// `healthy`, `unhealthy`, `starting`, or `none` (no healthcheck).
    pub health: String,
    /// Attached to the project's network (false after `chaos disconnect`).
    pub connected: bool,
    pub image: String,
}

/// Where the host reaches the stack's services (None: that service has no container or
/// publishes no port).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub api_url: Option<String>,
    pub kafka_bootstrap: Option<String>,
    pub mongo_uri: Option<String>,
    pub topic: String,
    pub group: String,
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
        validate_project(project)?;
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

    /// Every container of the project with state, health and network attachment.
    pub async fn status(&self) -> Result<Vec<ContainerStatus>> {
        let found = self.find_all().await?;
        let starts = self.start_counts(&found).await;
        let networks = self.project_networks().await;
        let mut out = Vec::new();
        for f in found {
            let ins = match self.inspect(&f.container_id).await {
                Ok(i) => i,
                // Removed between list and inspect (a concurrent `down`): skip it.
                Err(_) => continue,
            };
            let (state, health, started_at) = state_of(&ins);
            let attached: Vec<String> = ins
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .map(|n| n.keys().cloned().collect())
                .unwrap_or_default();
            let connected = attached.iter().any(|n| networks.contains(n));
            let engine_restarts = ins.restart_count.unwrap_or(0).max(0) as u32;
            let restarts = starts
                .get(&f.container_id)
                .map(|n| n.saturating_sub(1))
                .unwrap_or(0)
                .max(engine_restarts);
            let address = published_port(&ins, f.id.service)
                .map(|p| match f.id.service {
                    Service::Api => format!("http://127.0.0.1:{p}"),
                    Service::Mongo => format!("mongodb://127.0.0.1:{p}"),
                    _ => format!("127.0.0.1:{p}"),
                })
                .unwrap_or_default();
            out.push(ContainerStatus {
                info: InstanceInfo {
                    id: f.id,
                    state,
                    pid_or_container: short_id(&f.container_id),
                    started_at,
                    restarts,
                    address,
                },
                name: f.name,
                health,
                connected,
                image: ins.config.and_then(|c| c.image).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// How many times each container was started, from the engine's event buffer (it
    /// keeps the last 256 events, so very long chaos runs undercount; the engine's own
    /// RestartCount is reset by every manual start, hence this).
    async fn start_counts(&self, found: &[Found]) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        if found.is_empty() {
            return counts;
        }
        // Events before the oldest container's creation cannot concern this stack.
        let mut since = i64::MAX;
        for f in found {
            if let Ok(ins) = self.inspect(&f.container_id).await {
                if let Some(t) = ins.created.as_deref().and_then(parse_time) {
                    since = since.min(t.timestamp());
                }
            }
        }
        if since == i64::MAX {
            return counts;
        }
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("event".to_string(), vec!["start".to_string()]);
        let opts = EventsOptionsBuilder::new()
            .since(&(since - 1).to_string())
            .until(&(Utc::now().timestamp() + 1).to_string())
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(opts));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline, stream.next()).await {
            if let Some(id) = ev.actor.and_then(|a| a.id) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Names of the networks that count as "the stack's network": ours, or compose's
    /// default network of the same project.
    async fn project_networks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in [self.network_name(), format!("{}_default", self.project)] {
            if self.docker.inspect_network(&name, None).await.is_ok() {
                out.push(name);
            }
        }
        out
    }

    /// Where the host reaches api#1, kafka#1 and mongo#1, and the topic and group the
    /// consumers use (from consumer#1's environment, defaults otherwise).
    pub async fn endpoints(&self) -> Result<Endpoints> {
        let found = self.find_all().await?;
        let mut ep = Endpoints {
            topic: "wiber.messages".into(),
            group: "wiber-consumers".into(),
            ..Endpoints::default()
        };
        for f in &found {
            if f.id.index != 1 {
                continue;
            }
            let ins = self.inspect(&f.container_id).await?;
            let port = published_port(&ins, f.id.service);
            match f.id.service {
                Service::Api => ep.api_url = port.map(|p| format!("http://127.0.0.1:{p}")),
                Service::Kafka => ep.kafka_bootstrap = port.map(|p| format!("127.0.0.1:{p}")),
                Service::Mongo => {
                    ep.mongo_uri =
                        port.map(|p| format!("mongodb://127.0.0.1:{p}/?directConnection=true"))
                }
                Service::Consumer => {
                    let env = ins.config.and_then(|c| c.env).unwrap_or_default();
                    for kv in env {
                        if let Some(v) = kv.strip_prefix("KAFKA_TOPIC=") {
                            ep.topic = v.to_string();
                        } else if let Some(v) = kv.strip_prefix("KAFKA_CONSUMER_GROUP=") {
                            ep.group = v.to_string();
                        }
                    }
                }
            }
        }
        Ok(ep)
    }

    // --- images -----------------------------------------------------------------------

    pub async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Size of a local image in bytes.
    pub async fn image_size(&self, image: &str) -> Option<i64> {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.size)
    }

    /// Pulls `image` (`name:tag`), bounded by `timeout`.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<()> {
        let (name, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, "latest"),
        };
        let opts = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut stream = self.docker.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                item.with_context(|| format!("pulling {image}"))?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(timeout, pull)
            .await
            .map_err(|_| anyhow!("pulling {image} did not finish within {timeout:?}"))?
    }

    /// True when the image defines its own healthcheck (the offline images do).
    async fn image_has_healthcheck(&self, image: &str) -> bool {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"))
    }

    // --- up / down ----------------------------------------------------------------------

    /// Creates what is missing (network, volumes, containers), starts what is stopped,
    /// and waits until every instance is healthy: kafka and mongo first, then the
    /// consumers and the api. Running containers are left alone, so a second `up` is a
    /// quick no-op. On failure the error names the instance and carries its last 30 log
    /// lines.
    pub async fn up(
        &self,
        cfg: &DockerStackConfig,
        progress: &dyn Fn(UpProgress),
    ) -> Result<UpReport> {
        for image in cfg.images.all() {
            if !self.image_present(image).await {
                bail!("image {image} is not on this engine: build it (docker/offline/build.sh) or pull it first");
            }
        }
        self.ensure_network().await?;
        for v in ["kafka", "mongo"] {
            self.ensure_volume(&self.volume_name(v)).await?;
        }
        let mut report = UpReport::default();
        let deadline = Instant::now() + cfg.ready_timeout;
        let infra = [
            InstanceId::first(Service::Kafka),
            InstanceId::first(Service::Mongo),
        ];
        let mut apps: Vec<InstanceId> = (1..=cfg.consumers)
            .map(|i| InstanceId::new(Service::Consumer, i))
            .collect();
        apps.push(InstanceId::first(Service::Api));
        for phase in [infra.to_vec(), apps.clone()] {
            for id in &phase {
                let action = self.ensure_container(cfg, id).await?;
                match action {
                    "created" => report.created.push(id.to_string()),
                    "started" => report.started.push(id.to_string()),
                    _ => report.already_running.push(id.to_string()),
                }
                progress(UpProgress::Container { id: *id, action });
            }
            self.wait_ready(&phase, deadline, progress).await?;
        }
        let wanted: Vec<InstanceId> = infra.iter().chain(apps.iter()).copied().collect();
        report.extra = self
            .find_all()
            .await?
            .into_iter()
            .filter(|f| !wanted.contains(&f.id))
            .map(|f| f.id.to_string())
            .collect();
        Ok(report)
    }

    async fn ensure_network(&self) -> Result<()> {
        let name = self.network_name();
        if self.docker.inspect_network(&name, None).await.is_ok() {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                LABEL_PROJECT.to_string(),
                self.project.clone(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => Ok(()), // created concurrently
            Err(e) => Err(e).with_context(|| format!("creating network {name}")),
        }
    }

    async fn ensure_volume(&self, name: &str) -> Result<()> {
        if self.docker.inspect_volume(name).await.is_ok() {
            return Ok(());
        }
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(HashMap::from([(
                LABEL_PROJECT.to_string(),
                self.project.clone(),
            )])),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .with_context(|| format!("creating volume {name}"))?;
        Ok(())
    }

    /// Makes sure the instance's container exists and runs: "created", "started" or
    /// "running" (already was).
    async fn ensure_container(
        &self,
        cfg: &DockerStackConfig,
        id: &InstanceId,
    ) -> Result<&'static str> {
        let existing = self.find_all().await?.into_iter().find(|f| f.id == *id);
        let (container, action) = match existing {
            Some(f) => {
                let ins = self.inspect(&f.container_id).await?;
                let (state, _, _) = state_of(&ins);
                match state.as_str() {
                    "running" | "restarting" => return Ok("running"),
                    "paused" => {
                        self.docker
                            .unpause_container(&f.container_id)
                            .await
                            .with_context(|| format!("unpausing {id}"))?;
                        return Ok("started");
                    }
                    _ => (f.container_id, "started"),
                }
            }
            None => {
                let body = self.container_body(cfg, id).await;
                let name = self.container_name(id);
                let opts = CreateContainerOptionsBuilder::new().name(&name).build();
                let created = self.docker.create_container(Some(opts), body).await.map_err(|e| {
                    let hint = if status_of(&e) == Some(409) {
                        format!(" (a container named {name} exists without wiberctl's labels: remove it with `docker rm -f {name}`)")
                    } else {
                        String::new()
                    };
                    anyhow!(e).context(format!("creating container {name} for {id}{hint}"))
                })?;
                (created.id, "created")
            }
        };
        self.docker.start_container(&container, None).await.map_err(|e| {
            let hint = if format!("{e}").contains("port is already allocated") || format!("{e}").contains("address already in use") {
                " (a published port is taken: pick others with --api-port/--mongo-port/--kafka-port)"
            } else {
                ""
            };
            anyhow!(e).context(format!("starting {id}{hint}"))
        })?;
        Ok(action)
    }

    async fn container_body(
        &self,
        cfg: &DockerStackConfig,
        id: &InstanceId,
    ) -> ContainerCreateBody {
        let images = &cfg.images;
        let mut env: Vec<String> = Vec::new();
        let mut cmd: Option<Vec<String>> = None;
        let mut ports: Vec<(u16, u16)> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut healthcheck: Option<HealthConfig> = None;
        let image;
        match id.service {
            Service::Kafka => {
                image = images.kafka.clone();
                env.extend(kafka_env(cfg.kafka_port));
                ports.push((KAFKA_EXTERNAL_PORT, cfg.kafka_port));
                binds.push(format!("{}:/var/lib/kafka/data", self.volume_name("kafka")));
                if !self.image_has_healthcheck(&image).await {
                    // apache/kafka defines none: the tool compose uses too.
                    healthcheck = Some(health(
                        &["CMD-SHELL", "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092 >/dev/null 2>&1"],
                        5,
                        20,
                        60,
                        12,
                    ));
                }
            }
            Service::Mongo => {
                image = images.mongo.clone();
                ports.push((MONGO_PORT, cfg.mongo_port));
                match images.flavor {
                    ImageFlavor::Offline => {
                        cmd = Some(vec![
                            "--handler=sqlite".into(),
                            "--listen-addr=:27017".into(),
                        ]);
                        env.extend(
                            [
                                "FERRETDB_SQLITE_URL=file:/state/",
                                "FERRETDB_STATE_DIR=/state",
                                "FERRETDB_TELEMETRY=disable",
                            ]
                            .map(String::from),
                        );
                        binds.push(format!("{}:/state", self.volume_name("mongo")));
                    }
                    ImageFlavor::Official => {
                        // A one-member replica set, so `w: majority` means something; the
                        // healthcheck initiates it on first start (as in the compose file).
                        cmd = Some(vec![
                            "--replSet".into(),
                            "rs0".into(),
                            "--bind_ip_all".into(),
                        ]);
                        binds.push(format!("{}:/data/db", self.volume_name("mongo")));
                    }
                }
                if !self.image_has_healthcheck(&image).await {
                    healthcheck = Some(health(
                        &[
                            "CMD",
                            "mongosh",
                            "--quiet",
                            "--eval",
                            "try { rs.status() } catch (e) { rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'mongo:27017'}]}) }; \
                             quit(db.hello().isWritablePrimary ? 0 : 1)",
                        ],
                        2,
                        10,
                        30,
                        15,
                    ));
                }
            }
            Service::Api | Service::Consumer => {
                image = images.server.clone();
                cmd = Some(vec![id.service.name().to_string()]);
                env.extend([
                    "KAFKA_BOOTSTRAP_SERVERS=kafka:9092".to_string(),
                    "KAFKA_TOPIC=wiber.messages".to_string(),
                    "KAFKA_CONSUMER_GROUP=wiber-consumers".to_string(),
                    format!("KAFKA_PARTITIONS={}", cfg.partitions),
                    // No replicaSet=: works against mongo (rs0, discovered) and FerretDB.
                    "MONGO_URI=mongodb://mongo:27017/".to_string(),
                    "MONGO_DB=wiber".to_string(),
                    "MONGO_COLLECTION=messages".to_string(),
                    "API_HOST=0.0.0.0".to_string(),
                    format!("API_PORT={API_PORT}"),
                    format!("WIBER_INSTANCE={id}"),
                    format!(
                        "RUST_LOG={}",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())
                    ),
                ]);
                env.extend(cfg.extra_env.iter().map(|(k, v)| format!("{k}={v}")));
                if id.service == Service::Api {
                    ports.push((API_PORT, cfg.api_port));
                    // The server image has no curl: a raw HTTP/1.0 GET over bash's /dev/tcp.
                    healthcheck = Some(health(
                        &[
                            "CMD",
                            "bash",
                            "-c",
                            "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /health/readiness HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '",
                        ],
                        2,
                        5,
                        30,
                        10,
                    ));
                }
            }
        }
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = ports
            .iter()
            .map(|(inner, host)| {
                (
                    format!("{inner}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(host.to_string()),
                    }]),
                )
            })
            .collect();
        let labels = HashMap::from([
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (LABEL_SERVICE.to_string(), id.service.name().to_string()),
            (LABEL_INSTANCE.to_string(), id.index.to_string()),
        ]);
        let endpoint = EndpointSettings {
            aliases: Some(vec![id.service.name().to_string()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image),
            cmd,
            env: Some(env),
            labels: Some(labels),
            healthcheck,
            exposed_ports: Some(
                ports
                    .iter()
                    .map(|(inner, _)| format!("{inner}/tcp"))
                    .collect(),
            ),
            stop_timeout: Some(i64::from(STOP_TIMEOUT_SECS)),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                network_mode: Some(self.network_name()),
                // Note: the engine treats `docker kill` as a manual stop, so a killed
                // container is not restarted by this policy; chaos starts it explicitly.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network_name(), endpoint)])),
            }),
            ..Default::default()
        }
    }

    /// Waits (until `deadline`) for every instance to be ready: healthy when it has a
    /// healthcheck, else running for [`NO_HEALTHCHECK_GRACE`]. Fails early when one
    /// exits or turns unhealthy.
    async fn wait_ready(
        &self,
        ids: &[InstanceId],
        deadline: Instant,
        progress: &dyn Fn(UpProgress),
    ) -> Result<()> {
        let mut pending: Vec<InstanceId> = ids.to_vec();
        let mut last: HashMap<InstanceId, (String, String)> = HashMap::new();
        loop {
            let found = self.find_all().await?;
            let mut still = Vec::new();
            for id in &pending {
                let Some(f) = found.iter().find(|f| f.id == *id) else {
                    bail!("the container of {id} disappeared while waiting for it (removed by someone else?)");
                };
                let ins = self.inspect(&f.container_id).await?;
                let (state, health, started_at) = state_of(&ins);
                let ready = match (state.as_str(), health.as_str()) {
                    ("running", "healthy") => true,
                    ("running", "none") => started_at.is_some_and(|t| {
                        (Utc::now() - t).to_std().unwrap_or_default() >= NO_HEALTHCHECK_GRACE
                    }),
                    ("exited" | "dead", _) | (_, "unhealthy") => {
                        return Err(self
                            .not_ready_error(id, &f.container_id, &state, &health, "failed")
                            .await);
                    }
                    _ => false,
                };
                if ready {
                    progress(UpProgress::Ready { id: *id });
                } else {
                    if last.get(id) != Some(&(state.clone(), health.clone())) {
                        progress(UpProgress::Waiting {
                            id: *id,
                            state: state.clone(),
                            health: health.clone(),
                        });
                        last.insert(*id, (state.clone(), health.clone()));
                    }
                    still.push((*id, f.container_id.clone(), state, health));
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (id, container, state, health) = &still[0];
                return Err(self
                    .not_ready_error(id, container, state, health, "timed out")
                    .await);
            }
            pending = still.into_iter().map(|s| s.0).collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn not_ready_error(
        &self,
        id: &InstanceId,
        container: &str,
        state: &str,
        health: &str,
        why: &str,
    ) -> anyhow::Error {
        let logs = self
            .logs_of(container, 30)
            .await
            .unwrap_or_else(|e| format!("(logs unavailable: {e:#})"));
        anyhow!(
            "{id} did not become ready ({why}: state {state}, health {health}); last log lines of {}:\n{}\n\
             fix the cause above, then rerun `wiberctl stack up --project {}` (it keeps what already runs)",
            self.container_name(id),
            logs.trim_end(),
            self.project
        )
    }

    /// Stops and removes the project's containers (apps first, then kafka and mongo),
    /// then its network; with `volumes`, its volumes too (data is gone).
    pub async fn down(&self, volumes: bool) -> Result<DownReport> {
        let found = self.find_all().await?;
        let mut report = DownReport::default();
        let (apps, infra): (Vec<Found>, Vec<Found>) = found
            .into_iter()
            .partition(|f| matches!(f.id.service, Service::Api | Service::Consumer));
        for group in [apps, infra] {
            let removals = group.iter().map(|f| async move {
                // Graceful first, so consumers flush and commit; removal then cannot lose
                // acknowledged data that the test or user would look for later.
                let stop = StopContainerOptionsBuilder::new()
                    .t(STOP_TIMEOUT_SECS)
                    .build();
                let _ = self
                    .docker
                    .stop_container(&f.container_id, Some(stop))
                    .await;
                let rm = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                match self
                    .docker
                    .remove_container(&f.container_id, Some(rm))
                    .await
                {
                    Ok(()) => Ok(f.name.clone()),
                    Err(e) if status_of(&e) == Some(404) => Ok(f.name.clone()),
                    Err(e) => Err(anyhow!(e).context(format!("removing container {}", f.name))),
                }
            });
            for r in futures::future::join_all(removals).await {
                report.containers.push(r?);
            }
        }
        for net in [self.network_name(), format!("{}_default", self.project)] {
            if self.docker.inspect_network(&net, None).await.is_ok() {
                self.docker.remove_network(&net).await.with_context(|| {
                    format!("removing network {net} (is another container still attached?)")
                })?;
                report.networks.push(net);
            }
        }
        if volumes {
            for label in [LABEL_PROJECT, COMPOSE_PROJECT] {
                let mut filters = HashMap::new();
                filters.insert(
                    "label".to_string(),
                    vec![format!("{label}={}", self.project)],
                );
                let list = self
                    .docker
                    .list_volumes(Some(
                        ListVolumesOptionsBuilder::new().filters(&filters).build(),
                    ))
                    .await
                    .context("listing volumes")?;
                for v in list.volumes.unwrap_or_default() {
                    if report.volumes.contains(&v.name) {
                        continue;
                    }
                    self.docker
                        .remove_volume(
                            &v.name,
                            Some(RemoveVolumeOptionsBuilder::new().force(true).build()),
                        )
                        .await
                        .with_context(|| format!("removing volume {}", v.name))?;
                    report.volumes.push(v.name);
                }
            }
        }
        Ok(report)
    }

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

    /// Waits until one instance is ready again (after start/restart/unpause).
    async fn wait_one(&self, id: &InstanceId) -> Result<()> {
        self.wait_ready(
            std::slice::from_ref(id),
            Instant::now() + READY_TIMEOUT,
            &|_| {},
        )
        .await
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
                if state != "running" {
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
        if state == "paused" {
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
        let net = self.home_network().await?;
        let req = NetworkConnectRequest {
            container: f.container_id.clone(),
            // The alias is how the others find it (kafka:9092, mongo:27017).
            endpoint_config: Some(EndpointSettings {
                aliases: Some(vec![id.service.name().to_string()]),
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

/// The broker's settings (same as the compose file; the offline image reads the same
/// variables as `apache/kafka`).
fn kafka_env(host_port: u16) -> Vec<String> {
    [
        ("KAFKA_NODE_ID", "1".to_string()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:{KAFKA_EXTERNAL_PORT}"),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://kafka:9092,EXTERNAL://127.0.0.1:{host_port}"),
        ),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT".into(),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".into()),
        // localhost, not kafka: the controller must reach itself even while a fault
        // test has disconnected the container from the network.
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093".into()),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
        (
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1".into(),
        ),
        ("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1".into()),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
        // Topics are created by the services with their own settings.
        ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
        ("KAFKA_LOG_DIRS", "/var/lib/kafka/data".into()),
        ("CLUSTER_ID", KAFKA_CLUSTER_ID.into()),
        // The image default (1 GiB fixed) is more than one test broker needs.
        ("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m".into()),
    ]
    .into_iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

fn health(
    test: &[&str],
    interval_s: i64,
    timeout_s: i64,
    start_s: i64,
    retries: i64,
) -> HealthConfig {
    const NS: i64 = 1_000_000_000;
    HealthConfig {
        test: Some(test.iter().map(|s| s.to_string()).collect()),
        interval: Some(interval_s * NS),
        timeout: Some(timeout_s * NS),
        start_period: Some(start_s * NS),
        retries: Some(retries),
        ..Default::default()
    }
}

/// (state as Docker names it, health or "none", start time of the current incarnation).
fn state_of(ins: &ContainerInspectResponse) -> (String, String, Option<DateTime<Utc>>) {
    let Some(st) = ins.state.as_ref() else {
        return ("unknown".into(), "none".into(), None);
    };
    let state = st
        .status
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let health = st
        .health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into());
    let started = st.started_at.as_deref().and_then(parse_time);
    (state, health, started)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    // The engine's zero time (never started) is year 1.
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

/// The host port published for the service's client port.
fn published_port(ins: &ContainerInspectResponse, service: Service) -> Option<u16> {
    let inner = match service {
        Service::Kafka => KAFKA_EXTERNAL_PORT,
        Service::Mongo => MONGO_PORT,
        Service::Api => API_PORT,
        Service::Consumer => return None,
    };
    let bindings = ins.host_config.as_ref()?.port_bindings.as_ref()?;
    bindings
        .get(&format!("{inner}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Project names become parts of container, network and volume names.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_checked() {
        assert!(validate_project("wiber").is_ok());
        assert!(validate_project("t-1_a.b").is_ok());
        assert!(validate_project("").is_err());
        assert!(validate_project("-x").is_err());
        assert!(validate_project("a/b").is_err());
    }

    #[test]
    fn kafka_advertises_the_host_port() {
        let env = kafka_env(19094);
        assert!(env.contains(
            &"KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka:9092,EXTERNAL://127.0.0.1:19094"
                .to_string()
        ));
    }
}
