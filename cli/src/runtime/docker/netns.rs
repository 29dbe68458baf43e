//! What network faults need from the engine: the process whose network namespace is a
//! container's (faults are applied there with nsenter, from the host), and the address
//! each instance has on the project's network (so a fault can name its peers).

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};

use super::status::on_host_network;
use super::DockerStack;
use crate::runtime::InstanceId;

impl DockerStack {
    /// The container's name for an instance (what the network-fault ledger keeps: the
    /// name survives restarts, the pid does not).
    pub fn container_name_of(&self, id: &InstanceId) -> String {
        self.container_name(id)
    }

    /// The pid of a running container's init process: its network namespace is the
    /// container's. Refuses an instance on the host's network (a fault there would cut
    /// the host itself).
    pub async fn netns_pid(&self, id: &InstanceId) -> Result<u32> {
        let f = self.find(id).await?;
        let ins = self.inspect(&f.container_id).await?;
        if on_host_network(&ins) {
            bail!(
                "{id} runs on the host's network: a network fault there would cut the host; \
                 fault its peers instead (e.g. partition kafka from api)"
            );
        }
        pid_of(&ins).ok_or_else(|| {
            anyhow!("{id} is not running: start it first (`wiberctl chaos start {id}`)")
        })
    }

    /// The pid of the named container's init process, if it runs.
    pub async fn pid_of_container(&self, name: &str) -> Option<u32> {
        let ins = self.docker.inspect_container(name, None).await.ok()?;
        pid_of(&ins)
    }

    /// Where an instance's packets come from, as the other containers see them: its
    /// address on the project's network; for an instance on the host's network (the api),
    /// the network's gateway, which is where connections from the host to published ports
    /// arrive from (docker-proxy or the engine's NAT).
    pub async fn address_of(&self, id: &InstanceId) -> Result<IpAddr> {
        let f = self.find(id).await?;
        let ins = self.inspect(&f.container_id).await?;
        if on_host_network(&ins) {
            return self.gateway().await;
        }
        let nets = self.project_networks().await;
        let settings = ins
            .network_settings
            .as_ref()
            .and_then(|s| s.networks.as_ref());
        for net in &nets {
            if let Some(ip) = settings
                .and_then(|m| m.get(net))
                .and_then(|e| e.ip_address.as_deref())
                .filter(|ip| !ip.is_empty())
            {
                return ip.parse().map_err(|e| {
                    anyhow!("{id} has address {ip:?} on {net}, which does not parse: {e}")
                });
            }
        }
        bail!(
            "{id} has no address on the project's network (disconnected or stopped): reconnect or start it first"
        )
    }

    /// The gateway of the project's network: the host's side of the bridge.
    pub async fn gateway(&self) -> Result<IpAddr> {
        let net = self.home_network().await?;
        let info = self.docker.inspect_network(&net, None).await?;
        info.ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .find_map(|c| c.gateway.and_then(|g| g.parse().ok()))
            .ok_or_else(|| anyhow!("network {net} names no gateway: recreate the stack (`wiberctl stack down && wiberctl stack up`)"))
    }

    /// Every running container of the project that has a namespace of its own, with its
    /// pid (for healing faults whose record was lost).
    pub async fn namespaces(&self) -> Result<Vec<(InstanceId, u32)>> {
        let mut out = Vec::new();
        for f in self.find_all().await? {
            let Ok(ins) = self.inspect(&f.container_id).await else {
                continue;
            };
            if on_host_network(&ins) {
                continue;
            }
            if let Some(pid) = pid_of(&ins) {
                out.push((f.id, pid));
            }
        }
        Ok(out)
    }
}

fn pid_of(ins: &bollard::models::ContainerInspectResponse) -> Option<u32> {
    // A paused container still has its namespace (nsenter -n does not need its
    // processes to run), so paused counts.
    let st = ins.state.as_ref()?;
    if st.running != Some(true) {
        return None;
    }
    st.pid
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
}
