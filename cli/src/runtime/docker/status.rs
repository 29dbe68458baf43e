//! Reading the stack back from the engine: each container's state, health, network
//! attachment and restarts, and the endpoints and names the host uses.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use bollard::models::{ContainerInspectResponse, ContainerMemoryStats};
use bollard::query_parameters::{EventsOptionsBuilder, StatsOptionsBuilder};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{
    DockerStack, Found, API_PORT, HOST_NETWORK, KAFKA_EXTERNAL_PORT, MONGO_PORT, POSTGRES_PORT,
};
use crate::runtime::usage::Usage;
use crate::runtime::{
    Endpoints, Health, InstanceInfo, InstanceState, InstanceStatus, Names, Service,
};

impl DockerStack {
    /// Broker properties (`min.insync.replicas`, ...) as `kafka#1`'s container was
    /// created with them, one per name asked: how a running stack's shape is read back
    /// (`Stack::shape`). `None` for one the container does not set (a stack of the
    /// compose file).
    pub async fn broker_settings(&self, props: &[&str]) -> Result<Vec<Option<String>>> {
        let f = self
            .find(&crate::runtime::InstanceId::first(Service::Kafka))
            .await?;
        let env = self
            .inspect(&f.container_id)
            .await?
            .config
            .and_then(|c| c.env)
            .unwrap_or_default();
        Ok(props
            .iter()
            .map(|prop| {
                let var = format!("{}=", super::spec::property_var(prop));
                env.iter()
                    .find_map(|kv| kv.strip_prefix(&var).map(str::to_string))
            })
            .collect())
    }

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
            // A container on the host's network (the api) cannot be cut off: connected.
            let connected = on_host_network(&ins) || attached.iter().any(|n| networks.contains(n));
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
                    Service::Postgres => format!("postgres://127.0.0.1:{p}"),
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
        // The CPU counter restarts with the container's process: one incarnation per
        // start, not per container.
        let incarnation = format!(
            "{}@{}",
            short_id(&f.container_id),
            started_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
        let at = std::time::Instant::now();
        if let Some((cpu_ns, rss_bytes)) = cgroup_usage(&f.container_id) {
            return Some(Usage {
                id: f.id,
                incarnation,
                cpu_ns: Some(cpu_ns),
                rss_bytes,
                at,
            });
        }
        let opts = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .docker
            .stats(&f.container_id, Some(opts))
            .next()
            .await?
            .ok()?;
        Some(Usage {
            id: f.id,
            incarnation,
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

    /// Where the host reaches api#1, kafka#1, postgres#1 and mongo#1, and the names (topic, group,
    /// database, collection) the services were started with: read from consumer#1's
    /// environment (api#1's when there is no consumer), the service contract's defaults
    /// for what it does not set, exactly as the service itself resolves them.
    pub async fn endpoints(&self) -> Result<Endpoints> {
        let found = self.find_all().await?;
        let mut ep = Endpoints::default();
        let mut brokers: Vec<String> = Vec::new();
        for f in &found {
            if f.id.service == Service::Kafka {
                // Every broker of a cluster, so clients bootstrap from any that is up.
                let ins = self.inspect(&f.container_id).await?;
                if let Some(p) = published_port(&ins, Service::Kafka) {
                    brokers.push(format!("127.0.0.1:{p}"));
                }
                continue;
            }
            if f.id.index != 1 {
                continue;
            }
            let ins = self.inspect(&f.container_id).await?;
            let port = published_port(&ins, f.id.service);
            match f.id.service {
                Service::Api => ep.api_url = port.map(|p| format!("http://127.0.0.1:{p}")),
                Service::Kafka => {}
                Service::Postgres => ep.postgres_url = port.map(crate::runtime::postgres_url),
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
        ep.kafka_bootstrap = (!brokers.is_empty()).then(|| brokers.join(","));
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

/// CPU time (ns) and resident memory of a container read from its cgroup, when the
/// engine runs on this machine (the usual unix socket) with the default cgroup parent.
/// The same counters the engine's stats report, without the engine: a stats call per
/// container and second goes dockerd -> containerd -> shim, and sampling a five-container
/// stack that way cost dockerd and the shims several % of a core during a bench, which
/// the local runtime's `/proc` reads do not. `None` (the caller asks the engine) when no
/// such cgroup is visible: a remote engine, another cgroup layout.
fn cgroup_usage(container_id: &str) -> Option<(u64, Option<u64>)> {
    use std::fs::read_to_string;
    let root = std::path::Path::new("/sys/fs/cgroup");
    // cgroup v1 (cgroupfs or systemd driver): cpuacct.usage in ns, rss in memory.stat.
    for dir in [
        format!("docker/{container_id}"),
        format!("system.slice/docker-{container_id}.scope"),
    ] {
        if let Ok(cpu) = read_to_string(root.join("cpuacct").join(&dir).join("cpuacct.usage")) {
            let rss = read_to_string(root.join("memory").join(&dir).join("memory.stat"))
                .ok()
                .and_then(|s| stat_field(&s, "rss"));
            return Some((cpu.trim().parse().ok()?, rss));
        }
        // cgroup v2: usage_usec in cpu.stat, anon in memory.stat.
        if let Ok(cpu) = read_to_string(root.join(&dir).join("cpu.stat")) {
            let rss = read_to_string(root.join(&dir).join("memory.stat"))
                .ok()
                .and_then(|s| stat_field(&s, "anon"));
            return Some((stat_field(&cpu, "usage_usec")?.checked_mul(1000)?, rss));
        }
    }
    None
}

/// The value of `key` in a cgroup `key value` file.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
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

/// True when the container shares the host's network namespace.
pub(super) fn on_host_network(ins: &ContainerInspectResponse) -> bool {
    ins.host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some(HOST_NETWORK)
}

/// The host port of the service's client port: the published one, or on the host's
/// network the port it listens on (`API_PORT` of its environment).
pub(super) fn published_port(ins: &ContainerInspectResponse, service: Service) -> Option<u16> {
    if on_host_network(ins) {
        if service != Service::Api {
            return None;
        }
        let var = format!("{}=", wiber_model::contract::env::API_PORT);
        return ins
            .config
            .as_ref()?
            .env
            .as_ref()?
            .iter()
            .find_map(|kv| kv.strip_prefix(&var)?.parse().ok());
    }
    let inner = match service {
        Service::Kafka => KAFKA_EXTERNAL_PORT,
        Service::Mongo => MONGO_PORT,
        Service::Postgres => POSTGRES_PORT,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_field_reads_cgroup_key_value_files() {
        let v1 = "cache 4096\nrss 123456\nrss_huge 0\ntotal_rss 999\n";
        assert_eq!(stat_field(v1, "rss"), Some(123456));
        let v2 = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n";
        assert_eq!(stat_field(v2, "usage_usec"), Some(2500));
        assert_eq!(stat_field(v2, "anon"), None);
    }

    #[test]
    fn no_cgroup_means_ask_the_engine() {
        assert_eq!(cgroup_usage("not-a-container-id"), None);
    }
}
