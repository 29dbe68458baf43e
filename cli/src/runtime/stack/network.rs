//! Network faults on a stack, and the guarantee that they are healed: every fault is
//! recorded in the project's ledger (`.wiber/stacks/<project>/netfaults.json`) before it
//! is applied, and [`Stack::heal_all`] removes every recorded one, also after the
//! wiberctl that applied it was SIGKILLed (`chaos heal`, `stack down`, and every scenario
//! run before its load). The mechanism (iptables, tc and a Toxiproxy inside a container's
//! namespace, through nsenter) is [`crate::runtime::netfault`]; this file decides whom a fault cuts
//! (peers named in the stack's terms, resolved to addresses when it fires) and where
//! its record lives.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::{local_dir, Backend, Stack};
use crate::kafka::cluster::{self, KafkaRole, Resolved};
use crate::runtime::fault::NetSpec;
use crate::runtime::netfault::{self, Ledger, LedgerEntry, NetFault, NetnsRef};
use crate::runtime::{Action, InstanceId, RuntimeKind, Service, Target};

/// The ports a service listens on inside its container: what the proxied faults (delay,
/// timeout, reset) stand in front of. A broker's client and inter-broker listeners, not
/// its controller's (a slow broker, not a slow quorum).
fn service_ports(id: &InstanceId) -> Result<Vec<u16>> {
    use crate::runtime::docker::ports;
    Ok(match id.service {
        Service::Kafka => vec![ports::KAFKA_INTERNAL, ports::KAFKA_EXTERNAL],
        Service::Mongo => vec![ports::MONGO],
        Service::Postgres => vec![ports::POSTGRES],
        Service::Api | Service::Consumer => bail!(
            "{id} serves no port inside the project's network: delay, timeout and reset stand in \
             front of a service's ports (kafka, mongo, postgres); to slow {id}'s own \
             connections, delay what it connects to"
        ),
    })
}

/// Bound on one metadata question to the cluster (roles are resolved while load runs).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Stack {
    /// Refuses network faults on a runtime that cannot apply them, naming the one that can.
    pub fn network_faults_supported(&self) -> Result<()> {
        match self.kind() {
            RuntimeKind::Docker => netfault::check_host(),
            RuntimeKind::Local => bail!(
                "network faults (loss, partition, bandwidth, delay, timeout, reset) need the docker runtime: there each \
                 instance has its own network namespace, while local processes share the host's \
                 (bring the stack up with --runtime docker)"
            ),
        }
    }

    /// The broker that holds `role` now, asked of the cluster itself.
    pub async fn resolve_kafka(&self, role: &KafkaRole) -> Result<Resolved> {
        let ep = self.endpoints().await?;
        let bootstrap = ep
            .kafka_bootstrap
            .context("the stack has no kafka instance with a published port")?;
        cluster::resolve(&bootstrap, role, RESOLVE_TIMEOUT)
            .await
            .with_context(|| format!("resolving {role}"))
    }

    /// The project's ledger of applied network faults.
    fn ledger(&self) -> Result<Ledger> {
        let dir = local_dir(self.project())?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} for the network-fault ledger", dir.display()))?;
        Ok(Ledger::at(dir.join("netfaults.json")))
    }

    /// Applies a network fault (`loss`, `partition`, `bandwidth`) to `id`: records it,
    /// then applies it. Returns what was done, for the event log (mechanism, peers'
    /// addresses, the fault's id).
    pub async fn apply_net(
        &self,
        action: Action,
        id: &InstanceId,
        net: &NetSpec,
        until: Option<DateTime<Utc>>,
    ) -> Result<String> {
        self.network_faults_supported()?;
        let Backend::Docker(d) = &self.backend else {
            unreachable!("network_faults_supported refuses other runtimes")
        };
        let peers = self.peer_addresses(id, &net.peers).await?;
        let fault = match action {
            Action::Loss => NetFault::Loss {
                percent: net.percent.context("loss needs percent")?,
                peers,
            },
            Action::Partition => NetFault::Partition {
                peers,
                direction: net.direction.unwrap_or_default(),
            },
            Action::Bandwidth => NetFault::Bandwidth {
                kbit: net.kbit.context("bandwidth needs kbit")?,
            },
            Action::Delay => NetFault::Delay {
                ms: net.ms.context("delay needs ms")?,
                jitter_ms: net.jitter_ms.unwrap_or(0),
                ports: service_ports(id)?,
            },
            Action::Timeout => NetFault::Timeout {
                ms: net.ms.context("timeout needs ms")?,
                ports: service_ports(id)?,
            },
            Action::Reset => NetFault::Reset {
                ports: service_ports(id)?,
            },
            other => bail!("{other} is not a network fault"),
        };
        fault.validate()?;
        let pid = d.netns_pid(id).await?;
        let entry = LedgerEntry {
            id: netfault::new_fault_id(),
            instance: id.to_string(),
            netns: NetnsRef::Container {
                name: d.container_name_of(id),
            },
            fault,
            applied_at: Utc::now(),
            until,
        };
        let ledger = self.ledger()?;
        // Recorded first: a crash between the two leaves a record whose heal is a no-op,
        // never a rule nobody knows of.
        ledger.record(&entry)?;
        let (fid, f) = (entry.id.clone(), entry.fault.clone());
        let applied = tokio::task::spawn_blocking(move || netfault::apply(pid, &fid, &f))
            .await
            .context("the network-fault task failed")?;
        if let Err(e) = applied {
            // apply cleaned up after itself; the record goes too.
            let _ = ledger.remove(&entry.id);
            return Err(e.context(format!("applying {} to {id}", entry.fault.describe())));
        }
        Ok(format!(
            "{} ({}, fault {})",
            entry.fault.describe(),
            entry.fault.mechanism(),
            entry.id
        ))
    }

    /// Builds the proxy the delay, timeout and reset faults put in front of a service, if it
    /// is not built yet (about a minute, once): done before any load starts, so the first
    /// such fault fires on time.
    pub async fn prepare_proxied_faults(&self) -> Result<()> {
        self.network_faults_supported()?;
        let root = crate::provision::repo_root()?;
        tokio::task::spawn_blocking(move || {
            crate::runtime::netfault::toxiproxy::ensure_binaries(&root)
        })
        .await
        .context("the toxiproxy build task failed")??;
        Ok(())
    }

    /// Where the peers' packets come from. No peers: everyone (empty list). The target
    /// itself is never its own peer (`partition kafka#1 from kafka`: the other brokers).
    async fn peer_addresses(&self, id: &InstanceId, peers: &[Target]) -> Result<Vec<IpAddr>> {
        let Backend::Docker(d) = &self.backend else {
            bail!("peers are addresses on a docker network")
        };
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        let have = self.list().await?;
        let mut ids: Vec<InstanceId> = Vec::new();
        for p in peers {
            match p {
                Target::Kafka(role) => ids.push(self.resolve_kafka(role).await?.instance()?),
                other => ids.extend(other.resolve(&have, false)?.into_iter().map(|i| i.id)),
            }
        }
        ids.retain(|p| p != id);
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            let named: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            bail!(
                "the peers {} name no instance but {id} itself: name others (or none, for everyone)",
                named.join(", ")
            );
        }
        let mut out = Vec::new();
        for p in &ids {
            let ip = d.address_of(p).await?;
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Heals the network faults recorded for one instance; returns what was healed.
    pub async fn heal_instance(&self, id: &InstanceId) -> Result<Vec<String>> {
        if self.kind() != RuntimeKind::Docker {
            return Ok(Vec::new());
        }
        let ledger = self.ledger()?;
        let mut healed = Vec::new();
        for e in ledger
            .entries()?
            .into_iter()
            .filter(|e| e.instance == id.to_string())
        {
            if let Some(pid) = self.pid_of(&e.netns).await {
                let (fid, f) = (e.id.clone(), e.fault.clone());
                tokio::task::spawn_blocking(move || netfault::heal(pid, &fid, &f))
                    .await
                    .context("the network-fault task failed")?
                    .with_context(|| format!("healing {}", e.describe()))?;
            }
            ledger.remove(&e.id)?;
            healed.push(e.describe());
        }
        Ok(healed)
    }

    /// Heals every network fault wiberctl applied to the stack: each one recorded, then
    /// any `WIBER-*` rule or tbf qdisc left in a container without a record (a ledger
    /// deleted by hand). Returns what was healed; fails only if something could not be.
    pub async fn heal_all(&self) -> Result<Vec<String>> {
        let Backend::Docker(d) = &self.backend else {
            return Ok(Vec::new());
        };
        if netfault::check_host().is_err() {
            // Nothing can have been applied from a host that cannot apply faults.
            return Ok(Vec::new());
        }
        let ledger = self.ledger()?;
        let mut pids: Vec<(NetnsRef, u32)> = Vec::new();
        for e in ledger.entries()? {
            if let Some(pid) = self.pid_of(&e.netns).await {
                pids.push((e.netns.clone(), pid));
            }
        }
        let (mut healed, errors) = tokio::task::spawn_blocking(move || {
            ledger.heal_all(&|n: &NetnsRef| pids.iter().find(|(r, _)| r == n).map(|(_, p)| *p))
        })
        .await
        .context("the network-fault task failed")?;
        for (id, pid) in d.namespaces().await? {
            let swept = tokio::task::spawn_blocking(move || netfault::heal_everything(pid))
                .await
                .context("the network-fault task failed")?
                .with_context(|| format!("sweeping {id}'s network namespace"))?;
            healed.extend(
                swept
                    .into_iter()
                    .map(|s| format!("{s} on {id} (unrecorded)")),
            );
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e.context("a network fault could not be healed"));
        }
        Ok(healed)
    }

    /// Removes the empty ledger of a docker stack that is going away (and its directory,
    /// when nothing else is in it), so taken-down projects leave nothing behind.
    pub fn forget_network_faults(&self) -> Result<()> {
        if self.kind() != RuntimeKind::Docker {
            return Ok(());
        }
        let ledger = self.ledger()?;
        if ledger.entries()?.is_empty() {
            let _ = std::fs::remove_file(ledger.path());
            let _ = std::fs::remove_file(ledger.path().with_extension("json.lock"));
            if let Some(dir) = ledger.path().parent() {
                let _ = std::fs::remove_dir(dir); // only when empty
            }
        }
        Ok(())
    }

    /// The network faults recorded as applied, for `stack status`.
    pub fn active_faults(&self) -> Result<Vec<LedgerEntry>> {
        if self.kind() != RuntimeKind::Docker {
            return Ok(Vec::new());
        }
        self.ledger()?.entries()
    }

    async fn pid_of(&self, n: &NetnsRef) -> Option<u32> {
        match (&self.backend, n) {
            (Backend::Docker(d), NetnsRef::Container { name }) => d.pid_of_container(name).await,
            (_, NetnsRef::Pid { pid }) => Some(*pid),
            _ => None,
        }
    }
}
