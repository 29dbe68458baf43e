//! A stack's life cycle on the engine: `up` (network, volumes, containers, waiting for
//! health), `down`, and adding a consumer (`scale`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
};
use chrono::Utc;

use super::images;
use super::status::state_of;
use super::{
    service_env_label, status_of, Config, DockerStack, DownReport, Found, UpReport,
    COMPOSE_PROJECT, LABEL_INSTANCE, LABEL_PROJECT, LABEL_SERVICE, LABEL_SERVICE_ENV,
    NO_HEALTHCHECK_GRACE, READY_TIMEOUT, STOP_TIMEOUT_SECS,
};
use crate::runtime::{Health, InstanceId, InstanceState, Service, StackSpec, UpAction, UpEvent};

impl DockerStack {
    /// Creates what is missing (network, volumes, containers), starts what is stopped,
    /// and waits until every instance is healthy: kafka and postgres first, then mongo
    /// (FerretDB must not create a collection before postgres has the project's setup),
    /// then the consumers and the api. Running containers are left alone, so a second `up` is a
    /// quick no-op. On failure the error names the instance and carries its last 30 log
    /// lines.
    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &(dyn Fn(UpEvent) + Sync),
    ) -> Result<UpReport> {
        let images = images::resolve(self, spec.images, progress).await?;
        let mut spec = spec.clone();
        if images.postgres.is_some() && spec.ports.postgres == 0 {
            // Picked here, not by the engine: the api (on the host's network) reads from
            // postgres through this port, so it must be known before the api is created.
            // A postgres created earlier keeps the port it publishes.
            spec.ports.postgres = match self.host_port(&InstanceId::first(Service::Postgres)).await
            {
                Some(p) => p,
                None => crate::runtime::local::pick_free_port()?,
            };
        }
        // kafka#1 publishes the port asked for; the others one picked here (each
        // advertises its own, so it must be known before it is created), or the one an
        // existing container already publishes.
        let mut broker_ports = vec![spec.ports.kafka];
        for n in 2..=spec.cluster.brokers {
            broker_ports.push(
                match self.host_port(&InstanceId::new(Service::Kafka, n)).await {
                    Some(p) => p,
                    None => crate::runtime::local::pick_free_port()?,
                },
            );
        }
        let spec = &spec;
        let cfg = &Config {
            spec: spec.clone(),
            images: images.clone(),
            broker_ports,
        };
        for image in cfg.images.all() {
            if !self.image_present(image).await {
                bail!("image {image} is not on this engine: build it (docker/offline/build.sh) or pull it first");
            }
        }
        self.ensure_network().await?;
        let with_postgres = cfg.images.postgres.is_some();
        for v in ["postgres", "mongo"] {
            if v == "postgres" && !with_postgres {
                continue;
            }
            self.ensure_volume(&self.volume_name(v)).await?;
        }
        for n in 1..=spec.cluster.brokers {
            self.ensure_volume(&self.broker_volume(n)).await?;
        }
        let mut report = UpReport {
            images,
            ..UpReport::default()
        };
        let deadline = Instant::now() + spec.wait;
        // Every broker in one phase: a cluster's quorum forms only once most of them run.
        let mut backends: Vec<InstanceId> = (1..=spec.cluster.brokers)
            .map(|n| InstanceId::new(Service::Kafka, n))
            .collect();
        if with_postgres {
            backends.push(InstanceId::first(Service::Postgres));
        }
        let store = vec![InstanceId::first(Service::Mongo)];
        let mut apps: Vec<InstanceId> = (1..=spec.consumers)
            .map(|i| InstanceId::new(Service::Consumer, i))
            .collect();
        apps.push(InstanceId::first(Service::Api));
        let infra: Vec<InstanceId> = backends.iter().chain(&store).copied().collect();
        for phase in [backends, store, apps.clone()] {
            for id in &phase {
                let action = self.ensure_container(cfg, id).await?;
                match action {
                    UpAction::Created => report.created.push(id.to_string()),
                    UpAction::Started => report.started.push(id.to_string()),
                    UpAction::Recreated => report.recreated.push(id.to_string()),
                    _ => report.already_running.push(id.to_string()),
                }
                progress(UpEvent::Instance { id: *id, action });
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
        if !report.extra.is_empty() {
            progress(UpEvent::Note(format!(
                "note: instances not asked for are left running: {} (`wiberctl stack down` removes everything)",
                report.extra.join(", ")
            )));
        }
        Ok(report)
    }

    /// The host port an existing container of the instance publishes, if it names one.
    async fn host_port(&self, id: &InstanceId) -> Option<u16> {
        let name = self.container_name(id);
        let ins = self.docker.inspect_container(&name, None).await.ok()?;
        super::status::published_port(&ins, id.service).filter(|p| *p != 0)
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

    /// Makes sure the instance's container exists and runs: created, started or
    /// already running.
    async fn ensure_container(&self, cfg: &Config, id: &InstanceId) -> Result<UpAction> {
        let mut existing = None;
        if let Some(f) = self.find_all().await?.into_iter().find(|f| f.id == *id) {
            let ins = self.inspect(&f.container_id).await?;
            existing = Some((f, ins));
        }
        let mut recreate = false;
        if let Some((f, ins)) = &existing {
            let was = ins
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_SERVICE_ENV))
                .map_or("", String::as_str);
            if matches!(id.service, Service::Api | Service::Consumer)
                && was != service_env_label(&cfg.spec.extra_env)
            {
                // What `compose up` does with a changed service: the environment is
                // fixed at creation, so a new `--service-env` needs a new container.
                // Graceful first, so a consumer commits what it wrote.
                self.remove_container(f).await?;
                existing = None;
                recreate = true;
            }
        }
        let (container, action) = match existing {
            Some((f, ins)) => {
                let (state, _, _) = state_of(&ins);
                match state {
                    InstanceState::Running | InstanceState::Restarting => {
                        return Ok(UpAction::AlreadyRunning)
                    }
                    InstanceState::Paused => {
                        self.docker
                            .unpause_container(&f.container_id)
                            .await
                            .with_context(|| format!("unpausing {id}"))?;
                        return Ok(UpAction::Started);
                    }
                    _ => (f.container_id, UpAction::Started),
                }
            }
            None => {
                if id.service == Service::Api {
                    // On the host's network a taken port shows only as an api that exits
                    // at start; say it up front, as the engine does for published ports.
                    let port = cfg.spec.ports.api;
                    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                        bail!(
                            "cannot start {id}: 127.0.0.1:{port} is not free ({e}); pick another \
                             port with --api-port (the api listens on the host's network)"
                        );
                    }
                }
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
                let action = if recreate {
                    UpAction::Recreated
                } else {
                    UpAction::Created
                };
                (created.id, action)
            }
        };
        self.docker.start_container(&container, None).await.map_err(|e| {
            let hint = if format!("{e}").contains("port is already allocated") || format!("{e}").contains("address already in use") {
                " (a published port is taken: pick others with --api-port/--mongo-port/--kafka-port/--postgres-port)"
            } else {
                ""
            };
            anyhow!(e).context(format!("starting {id}{hint}"))
        })?;
        Ok(action)
    }

    /// Waits (until `deadline`) for every instance to be ready: healthy when it has a
    /// healthcheck, else running for [`NO_HEALTHCHECK_GRACE`]. Fails early when one
    /// exits or turns unhealthy.
    async fn wait_ready(
        &self,
        ids: &[InstanceId],
        deadline: Instant,
        progress: &(dyn Fn(UpEvent) + Sync),
    ) -> Result<()> {
        let mut pending: Vec<InstanceId> = ids.to_vec();
        let mut last: HashMap<InstanceId, (InstanceState, Health)> = HashMap::new();
        loop {
            let found = self.find_all().await?;
            let mut still = Vec::new();
            for id in &pending {
                let Some(f) = found.iter().find(|f| f.id == *id) else {
                    bail!("the container of {id} disappeared while waiting for it (removed by someone else?)");
                };
                let ins = self.inspect(&f.container_id).await?;
                let (state, health, started_at) = state_of(&ins);
                let ready = match (state, health) {
                    (InstanceState::Running, Health::Healthy) => true,
                    (InstanceState::Running, Health::None) => started_at.is_some_and(|t| {
                        (Utc::now() - t).to_std().unwrap_or_default() >= NO_HEALTHCHECK_GRACE
                    }),
                    (InstanceState::Exited | InstanceState::Dead, _) | (_, Health::Unhealthy) => {
                        return Err(self
                            .not_ready_error(id, &f.container_id, state, health, "failed")
                            .await);
                    }
                    _ => false,
                };
                if ready {
                    progress(UpEvent::Ready { id: *id });
                } else {
                    if last.get(id) != Some(&(state, health)) {
                        progress(UpEvent::Waiting {
                            id: *id,
                            state,
                            health,
                        });
                        last.insert(*id, (state, health));
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
                    .not_ready_error(id, container, *state, *health, "timed out")
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
        state: InstanceState,
        health: Health,
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

    /// Stops a container gracefully, so a consumer flushes and commits (removal then
    /// cannot lose acknowledged data someone would look for later), and removes it.
    async fn remove_container(&self, f: &Found) -> Result<()> {
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
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("removing container {}", f.name))),
        }
    }

    /// Stops and removes the project's containers (apps first, then kafka, postgres and mongo),
    /// then its network; with `volumes`, its volumes too (data is gone).
    pub async fn down(&self, volumes: bool) -> Result<DownReport> {
        let found = self.find_all().await?;
        let mut report = DownReport::default();
        let (apps, infra): (Vec<Found>, Vec<Found>) = found
            .into_iter()
            .partition(|f| matches!(f.id.service, Service::Api | Service::Consumer));
        for group in [apps, infra] {
            let removals = group
                .iter()
                .map(|f| async move { self.remove_container(f).await.map(|()| f.name.clone()) });
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

    /// Adds one consumer: a copy of the first consumer's container (same image, command,
    /// environment and network, so it joins the same group with the same settings) under
    /// the next free index, then waits until it is ready. Copying the running instance
    /// instead of rebuilding its spec keeps whatever the stack was started with, also on
    /// a stack started by the compose file.
    pub async fn add_instance(&self, service: Service) -> Result<InstanceId> {
        if service != Service::Consumer {
            bail!("only consumers scale on docker ({service} publishes a fixed port or is a single node)");
        }
        let all = self.find_all().await?;
        let Some(model) = all.iter().find(|f| f.id.service == service) else {
            bail!("project {} has no {service} to copy: bring the stack up with at least one (`wiberctl stack up --consumers 1`)", self.project);
        };
        let index = all
            .iter()
            .filter(|f| f.id.service == service)
            .map(|f| f.id.index)
            .max()
            .unwrap_or(0)
            + 1;
        let id = InstanceId::new(service, index);
        let ins = self.inspect(&model.container_id).await?;
        let config = ins.config.unwrap_or_default();
        let instance_var = format!("{}=", wiber_model::contract::env::WIBER_INSTANCE);
        let mut env: Vec<String> = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter(|kv| !kv.starts_with(&instance_var))
            .collect();
        env.push(format!("{instance_var}{id}"));
        let mut labels = HashMap::from([
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (LABEL_SERVICE.to_string(), service.name().to_string()),
            (LABEL_INSTANCE.to_string(), index.to_string()),
        ]);
        // The copy has the model's environment, so it says so too: a later `up` with
        // the same `--service-env` leaves it alone.
        if let Some(v) = config
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_ENV))
        {
            labels.insert(LABEL_SERVICE_ENV.to_string(), v.clone());
        }
        let net = self.home_network().await?;
        let body = ContainerCreateBody {
            image: config.image,
            cmd: config.cmd,
            env: Some(env),
            labels: Some(labels),
            healthcheck: config.healthcheck,
            stop_timeout: Some(i64::from(STOP_TIMEOUT_SECS)),
            host_config: Some(HostConfig {
                network_mode: Some(net.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net,
                    EndpointSettings {
                        aliases: Some(vec![service.name().to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let name = self.container_name(&id);
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .with_context(|| format!("creating container {name} for {id}"))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .with_context(|| format!("starting {id}"))?;
        self.wait_one(&id).await?;
        Ok(id)
    }

    /// Waits until one instance is ready again (after start/restart/unpause).
    pub(super) async fn wait_one(&self, id: &InstanceId) -> Result<()> {
        self.wait_ready(
            std::slice::from_ref(id),
            Instant::now() + READY_TIMEOUT,
            &|_| {},
        )
        .await
    }
}
