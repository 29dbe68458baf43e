//! Reading the stack back from the engine: each container's state, health, network
//! attachment and restarts, and the endpoints and names the host uses.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use bollard::models::{ContainerInspectResponse, ContainerMemoryStats};
use bollard::query_parameters::{EventsOptionsBuilder, StatsOptionsBuilder};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{DockerStack, Found, API_PORT, KAFKA_EXTERNAL_PORT, MONGO_PORT};
use crate::runtime::usage::Usage;
use crate::runtime::{
    Endpoints, Health, InstanceInfo, InstanceState, InstanceStatus, Names, Service,
};

impl DockerStack {
    /// Every container of the project with state, health and network attachment.
    pub async fn status(&self) -> Result<Vec<InstanceStatus>> {
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
            out.push(InstanceStatus {
                info: InstanceInfo {
                    id: f.id,
                    state,
                    pid_or_container: short_id(&f.container_id),
                    started_at,
                    restarts,
                    address,
                },
                health,
                connected,
            });
        }
        Ok(out)
    }

    /// CPU and memory of each running (or paused) container, from the engine's one-shot
    /// stats: `stream: false` returns one sample, `one_shot: true` skips the engine's
    /// second sample a second later (we difference cumulative counters ourselves, see
    /// `runtime::usage`). Containers that vanish or fail to answer are left out.
    pub async fn usage(&self) -> Result<Vec<Usage>> {
        let found = self.find_all().await?;
        let samples = futures::future::join_all(found.iter().map(|f| self.usage_of(f))).await;
        Ok(samples.into_iter().flatten().collect())
    }

    async fn usage_of(&self, f: &Found) -> Option<Usage> {
        let ins = self.inspect(&f.container_id).await.ok()?;
        let (state, _, started_at) = state_of(&ins);
        if !state.is_alive() {
            return None;
        }
        let opts = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let at = std::time::Instant::now();
        let stats = self
            .docker
            .stats(&f.container_id, Some(opts))
            .next()
            .await?
            .ok()?;
        Some(Usage {
            id: f.id,
            // The CPU counter restarts with the container's process: one incarnation per
            // start, not per container.
            incarnation: format!(
                "{}@{}",
                short_id(&f.container_id),
                started_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
            cpu_ns: stats
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage),
            rss_bytes: stats.memory_stats.as_ref().and_then(memory_without_cache),
            at,
        })
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
    pub(super) async fn project_networks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in [self.network_name(), format!("{}_default", self.project)] {
            if self.docker.inspect_network(&name, None).await.is_ok() {
                out.push(name);
            }
        }
        out
    }

    /// Where the host reaches api#1, kafka#1 and mongo#1, and the names (topic, group,
    /// database, collection) the services were started with: read from consumer#1's
    /// environment (api#1's when there is no consumer), the service contract's defaults
    /// for what it does not set, exactly as the service itself resolves them.
    pub async fn endpoints(&self) -> Result<Endpoints> {
        let found = self.find_all().await?;
        let mut ep = Endpoints::default();
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
                Service::Consumer => {}
            }
            // Sorted by id, so api#1 comes before consumer#1, which then wins.
            if f.id.service.is_ours() {
                let env = ins.config.and_then(|c| c.env).unwrap_or_default();
                ep.names = Names::from_env(env.iter().map(String::as_str));
            }
        }
        Ok(ep)
    }
}

/// (state, health, start time of the current incarnation) of a container.
pub(super) fn state_of(
    ins: &ContainerInspectResponse,
) -> (InstanceState, Health, Option<DateTime<Utc>>) {
    let Some(st) = ins.state.as_ref() else {
        return (InstanceState::Unknown, Health::None, None);
    };
    let state = st
        .status
        .map(|s| InstanceState::from_docker(s.as_ref()))
        .unwrap_or(InstanceState::Unknown);
    let health = st
        .health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| Health::from_docker(s.as_ref()))
        .unwrap_or(Health::None);
    let started = st.started_at.as_deref().and_then(parse_time);
    (state, health, started)
}

/// A container's resident memory: anonymous memory of its cgroup (`anon` on cgroup v2,
/// `rss` on v1), else usage minus the inactive page cache as `docker stats` computes it.
fn memory_without_cache(m: &ContainerMemoryStats) -> Option<u64> {
    let get = |k: &str| m.stats.as_ref().and_then(|s| s.get(k)).copied();
    get("anon").or_else(|| get("rss")).or_else(|| {
        let cache = get("inactive_file")
            .or_else(|| get("total_inactive_file"))
            .unwrap_or(0);
        Some(m.usage?.saturating_sub(cache))
    })
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
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

pub(super) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}
