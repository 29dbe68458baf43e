//! [`Stack`]: the one handle commands and scenarios hold. It finds a project's stack on
//! either runtime ([`Stack::open`]), brings one up ([`Stack::up`]) and dispatches every
//! operation to the runtime that runs it. This file is the only place outside the two
//! runtimes that knows there are two.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::docker::DockerStack;
use super::local::{LocalStack, LocalStackConfig, Ownership};
use super::usage::Usage;
use super::{
    validate_project, Action, Endpoints, InstanceId, InstanceInfo, InstanceState, InstanceStatus,
    Runtime, RuntimeKind, Service, Signal, StackSpec, UpAction, UpEvent,
};
use crate::provision;

mod network;
mod rejoin;
mod shape;

pub use rejoin::REJOIN_TIMEOUT;

/// Which stack: a project name, and the runtime if the caller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    pub project: String,
    /// `None`: find it (a Docker stack if the engine has one, else a local one).
    pub runtime: Option<RuntimeKind>,
}

/// No stack of the project exists (on the runtime asked for, or on any).
#[derive(Debug, thiserror::Error)]
#[error(
    "no stack found for project {project:?}: run `wiberctl stack up --project {project}`{detail}"
)]
pub struct NoStack {
    pub project: String,
    /// Why docker was not considered, when it was not.
    pub detail: String,
}

/// A project's stack, on whichever runtime runs it.
pub struct Stack {
    backend: Backend,
}

enum Backend {
    Docker(DockerStack),
    /// Boxed: a local stack carries its whole state (much larger than a docker client).
    Local(Box<LocalStack>),
}

/// `.wiber/stacks/<project>` under the repository root: a local stack's directory.
pub fn local_dir(project: &str) -> Result<PathBuf> {
    validate_project(project)?;
    Ok(provision::repo_root()?
        .join(".wiber")
        .join("stacks")
        .join(project))
}

impl Stack {
    /// Finds the project's stack: on the runtime asked for, else a docker stack if the
    /// engine answers and has one, else a local stack's state dir. [`NoStack`] when none.
    pub async fn open(loc: &Locator) -> Result<Stack> {
        let local = |dir: PathBuf| -> Result<Stack> {
            Ok(Stack {
                backend: Backend::Local(Box::new(LocalStack::load(&dir)?)),
            })
        };
        match loc.runtime {
            Some(RuntimeKind::Docker) => {
                let d = DockerStack::connect(&loc.project).await?;
                if !d.exists().await? {
                    return Err(NoStack {
                        project: loc.project.clone(),
                        detail: " (no containers on the docker engine)".into(),
                    }
                    .into());
                }
                Ok(Stack {
                    backend: Backend::Docker(d),
                })
            }
            Some(RuntimeKind::Local) => {
                let dir = local_dir(&loc.project)?;
                if !dir.join("state.json").is_file() {
                    let detail =
                        format!(" --runtime local (no {})", dir.join("state.json").display());
                    return Err(NoStack {
                        project: loc.project.clone(),
                        detail,
                    }
                    .into());
                }
                local(dir)
            }
            None => {
                let docker_err = match DockerStack::connect(&loc.project).await {
                    Ok(d) => match d.exists().await {
                        Ok(true) => {
                            return Ok(Stack {
                                backend: Backend::Docker(d),
                            })
                        }
                        Ok(false) => None,
                        Err(e) => Some(e),
                    },
                    Err(e) => Some(e),
                };
                let dir = local_dir(&loc.project)?;
                if dir.join("state.json").is_file() {
                    return local(dir);
                }
                let detail = docker_err
                    .map(|e| format!(" (docker: {e:#})"))
                    .unwrap_or_default();
                Err(NoStack {
                    project: loc.project.clone(),
                    detail,
                }
                .into())
            }
        }
    }

    /// Brings the stack up as `spec` says, or makes an existing one whole (starts what
    /// is stopped, adds missing consumers; running instances are left alone, so a second
    /// `up` is quick). Returns once every instance is ready, with a JSON summary of what
    /// was done. The runtime is `loc.runtime`, else Docker.
    pub async fn up(
        loc: &Locator,
        spec: &StackSpec,
        progress: &(dyn Fn(UpEvent) + Sync),
    ) -> Result<(Stack, serde_json::Value)> {
        validate_project(&loc.project)?;
        spec.cluster.validate()?;
        let kind = loc.runtime.unwrap_or(RuntimeKind::Docker);
        let (backend, detail) = match kind {
            RuntimeKind::Docker => {
                let d = DockerStack::connect(&loc.project).await?;
                let detail = serde_json::to_value(d.up(spec, progress).await?)?;
                (Backend::Docker(d), detail)
            }
            RuntimeKind::Local => {
                let (l, detail) = up_local(&loc.project, spec, progress).await?;
                (Backend::Local(Box::new(l)), detail)
            }
        };
        Ok((Stack { backend }, detail))
    }

    /// Stops and removes the stack (containers and network; processes). `volumes` also
    /// removes the data, so the next `up` starts empty.
    pub async fn down(&self, volumes: bool) -> Result<serde_json::Value> {
        match &self.backend {
            Backend::Docker(d) => {
                // Network faults first: a rule dies with its container, but its record
                // (and a proxy's process) would outlive the stack and mislead the next
                // stack of this project.
                let healed = self.heal_all().await?;
                let mut summary = serde_json::to_value(d.down(volumes).await?)?;
                self.forget_network_faults()?;
                summary["healed"] = serde_json::json!(healed);
                Ok(summary)
            }
            Backend::Local(l) => {
                l.down().await?;
                let dir = l.dir().to_path_buf();
                if volumes {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
                Ok(serde_json::json!({"dir": dir, "removed_data": volumes}))
            }
        }
    }

    pub fn kind(&self) -> RuntimeKind {
        match &self.backend {
            Backend::Docker(_) => RuntimeKind::Docker,
            Backend::Local(_) => RuntimeKind::Local,
        }
    }

    /// Every instance, sorted by id.
    pub async fn list(&self) -> Result<Vec<InstanceInfo>> {
        let mut all = self.runtime().list().await?;
        all.sort_by_key(|i| i.id);
        Ok(all)
    }

    /// Every instance with its health and network attachment, sorted by id.
    pub async fn status(&self) -> Result<Vec<InstanceStatus>> {
        let mut all = match &self.backend {
            Backend::Docker(d) => d.status().await?,
            Backend::Local(l) => l.status().await?,
        };
        all.sort_by_key(|s| s.info.id);
        Ok(all)
    }

    /// Where the host reaches the services, and the names the services use.
    pub async fn endpoints(&self) -> Result<Endpoints> {
        match &self.backend {
            Backend::Docker(d) => d.endpoints().await,
            Backend::Local(l) => Ok(Endpoints {
                api_url: Some(l.api_url()),
                kafka_bootstrap: Some(l.bootstrap()),
                mongo_uri: Some(l.mongo_uri()),
                // None for a stack made before the store ran on PostgreSQL.
                postgres_url: (l.config().postgres_port != 0).then(|| l.postgres_url()),
                names: l.config().names,
            }),
        }
    }

    /// Applies one fault action to one instance. The undo actions are idempotent: an
    /// instance already running (`start`), not paused (`unpause`) or connected
    /// (`reconnect`) is left as it is, so rollbacks never fail on a fault already undone.
    pub async fn apply(&self, action: Action, id: &InstanceId, sig: Signal) -> Result<()> {
        let r = self.runtime();
        match action {
            Action::Kill => r.kill(id, sig).await,
            Action::Stop => r.stop(id).await,
            Action::Start => r.start(id).await,
            // A restarted broker is back when it is in sync again (see `rejoin`).
            Action::Restart => {
                r.restart(id).await?;
                self.wait_in_sync(id, REJOIN_TIMEOUT).await
            }
            Action::Pause => r.pause(id).await,
            Action::Unpause => {
                let paused = self
                    .list()
                    .await?
                    .iter()
                    .any(|i| i.id == *id && i.state == InstanceState::Paused);
                if paused {
                    r.unpause(id).await?;
                }
                Ok(())
            }
            Action::Disconnect => r.disconnect(id).await,
            Action::Reconnect => {
                let connected = self
                    .status()
                    .await?
                    .iter()
                    .any(|s| s.info.id == *id && s.connected);
                if connected {
                    return Ok(());
                }
                r.reconnect(id).await
            }
            Action::Scale => {
                bail!("scale acts on a service, not on {id}: use `Stack::scale`")
            }
            Action::Heal => self.heal_instance(id).await.map(|_| ()),
            a => {
                bail!("{a} needs its parameters (peers, percent, kbit, ms): use `Stack::apply_net`")
            }
        }
    }

    /// The project the stack belongs to.
    pub fn project(&self) -> &str {
        match &self.backend {
            Backend::Docker(d) => d.project(),
            Backend::Local(l) => l.project(),
        }
    }

    /// Adds instances of `service` until it has `to`; returns the ones added. Consumers
    /// scale on both runtimes; the local runtime also adds apis (on picked ports).
    pub async fn scale(&self, service: Service, to: u32) -> Result<Vec<InstanceId>> {
        let have = self
            .list()
            .await?
            .iter()
            .filter(|i| i.id.service == service)
            .count() as u32;
        let mut added = Vec::new();
        for _ in have..to {
            added.push(match &self.backend {
                Backend::Docker(d) => d.add_instance(service).await?,
                Backend::Local(l) => l.add_instance(service).await?,
            });
        }
        Ok(added)
    }

    /// CPU and memory of every running instance, one cumulative sample each (see
    /// [`super::usage`]: CPU use is the difference of two samples, [`super::usage::cpu_percent`]).
    pub async fn usage(&self) -> Result<Vec<Usage>> {
        let mut all = match &self.backend {
            Backend::Docker(d) => d.usage().await?,
            Backend::Local(l) => l.usage(),
        };
        all.sort_by_key(|u| u.id);
        Ok(all)
    }

    /// The last `tail` lines of an instance's output.
    pub async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String> {
        self.runtime().logs(id, tail).await
    }

    fn runtime(&self) -> Dispatch<'_> {
        Dispatch(&self.backend)
    }
}

/// [`Runtime`] over either backend, so the per-instance calls above dispatch in one place.
struct Dispatch<'a>(&'a Backend);

macro_rules! dispatch {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self.0 {
            Backend::Docker(d) => d.$method($($arg),*).await,
            Backend::Local(l) => l.$method($($arg),*).await,
        }
    };
}

impl Runtime for Dispatch<'_> {
    async fn list(&self) -> Result<Vec<InstanceInfo>> {
        dispatch!(self, list())
    }
    async fn kill(&self, id: &InstanceId, sig: Signal) -> Result<()> {
        dispatch!(self, kill(id, sig))
    }
    async fn stop(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, stop(id))
    }
    async fn start(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, start(id))
    }
    async fn restart(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, restart(id))
    }
    async fn pause(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, pause(id))
    }
    async fn unpause(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, unpause(id))
    }
    async fn disconnect(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, disconnect(id))
    }
    async fn reconnect(&self, id: &InstanceId) -> Result<()> {
        dispatch!(self, reconnect(id))
    }
    async fn logs(&self, id: &InstanceId, tail: usize) -> Result<String> {
        dispatch!(self, logs(id, tail))
    }
}

/// `up` on the local runtime: provision Kafka and FerretDB (cached), then start a new
/// stack detached (it outlives this process), or make the existing one whole.
async fn up_local(
    project: &str,
    spec: &StackSpec,
    progress: &(dyn Fn(UpEvent) + Sync),
) -> Result<(LocalStack, serde_json::Value)> {
    let dir = local_dir(project)?;
    let root = provision::repo_root()?;
    progress(UpEvent::Note(
        "provisioning Kafka and FerretDB (minutes on the first run)".into(),
    ));
    let prov = tokio::task::spawn_blocking(move || provision::ensure(&root)).await??;
    let work = async {
        if dir.join("state.json").is_file() {
            // Re-open and start whatever is not running (start is a no-op otherwise).
            let stack = LocalStack::load(&dir)?;
            // A process reads its environment when it starts: with another
            // `--service-env`, the api and consumers start again (as `compose up`
            // recreates a service whose configuration changed).
            let env_changed = stack.config().extra_env != spec.extra_env;
            if env_changed {
                stack.set_extra_env(spec.extra_env.clone())?;
            }
            let have = stack.list().await?;
            for info in &have {
                let was_running = info.state == InstanceState::Running;
                let action =
                    if env_changed && matches!(info.id.service, Service::Api | Service::Consumer) {
                        stack.stop(&info.id).await?;
                        UpAction::Recreated
                    } else if was_running {
                        UpAction::AlreadyRunning
                    } else {
                        UpAction::Started
                    };
                stack.start(&info.id).await?;
                progress(UpEvent::Instance {
                    id: info.id,
                    action,
                });
            }
            let consumers = have
                .iter()
                .filter(|i| i.id.service == Service::Consumer)
                .count() as u32;
            for _ in consumers..spec.consumers {
                let id = stack.add_instance(Service::Consumer).await?;
                progress(UpEvent::Instance {
                    id,
                    action: UpAction::Added,
                });
            }
            anyhow::Ok((stack, serde_json::json!({"dir": dir, "reused": true})))
        } else {
            let mut cfg = LocalStackConfig::new(&dir);
            cfg.consumers = spec.consumers;
            cfg.apis = 1;
            cfg.api_port = spec.ports.api;
            cfg.mongo_port = spec.ports.mongo;
            cfg.kafka_port = spec.ports.kafka;
            cfg.postgres_port = spec.ports.postgres;
            cfg.partitions = spec.partitions;
            cfg.cluster = spec.cluster;
            cfg.extra_env = spec.extra_env.clone();
            cfg.ownership = Ownership::Detached;
            // Detached: the handle never kills the processes it started when dropped.
            let stack = LocalStack::up(cfg, &prov).await?;
            Ok((stack, serde_json::json!({"dir": dir, "reused": false})))
        }
    };
    tokio::time::timeout(spec.wait, work).await.map_err(|_| {
        anyhow::anyhow!(
            "the local stack did not come up within {:?} (raise --wait, or see `wiberctl stack logs`)",
            spec.wait
        )
    })?
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
}
