//! A running stack's shape read back from the stack itself: its broker instances, the
//! replication its topic really has (from the cluster's metadata) and the settings its
//! brokers run with. What a stack was once asked to be is not enough: an older wiberctl
//! grew stacks by adding brokers, and the topic kept replication factor 1 on `kafka#1`.

use std::time::Duration;

use anyhow::Result;

use super::{Backend, Stack};
use crate::kafka::cluster;
use crate::runtime::cluster::{Profile, RunningShape};
use crate::runtime::Service;

/// Bound on reading the topic's metadata: a stack that cannot answer within it has its
/// replication unknown (and fails its steady-state check later anyway).
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

impl Stack {
    /// The stack's Kafka as it is (see the module doc). Reading the topic needs a broker
    /// up: on a stopped stack the replication is unknown, and said to be.
    pub async fn shape(&self) -> Result<RunningShape> {
        let brokers = self
            .list()
            .await?
            .iter()
            .filter(|i| i.id.service == Service::Kafka)
            .count() as u32;
        let ep = self.endpoints().await?;
        let topic = ep.names.topic.clone();
        let (replication, replication_unknown) = match &ep.kafka_bootstrap {
            None => (None, Some("no broker publishes a port".to_string())),
            Some(bootstrap) => {
                match cluster::describe_topic(bootstrap, &topic, METADATA_TIMEOUT).await {
                    Ok(parts) => match parts.iter().map(|p| p.replicas.len() as u32).min() {
                        Some(rf) => (Some(rf), None),
                        None => (None, Some("the topic has no partitions yet".to_string())),
                    },
                    Err(e) => (None, Some(format!("{e:#}"))),
                }
            }
        };
        let (min_insync, unclean_election) = match &self.backend {
            Backend::Local(l) => {
                let c = l.config().cluster;
                (Some(c.min_insync()), Some(c.profile == Profile::Unsafe))
            }
            Backend::Docker(d) => {
                // Unknown rather than wrong when kafka#1 is gone or says nothing.
                let got = d
                    .broker_settings(&["min.insync.replicas", "unclean.leader.election.enable"])
                    .await
                    .unwrap_or_default();
                let setting = |i: usize| got.get(i).cloned().flatten();
                (
                    setting(0).and_then(|v| v.trim().parse().ok()),
                    setting(1).and_then(|v| v.trim().parse().ok()),
                )
            }
        };
        Ok(RunningShape {
            brokers,
            topic,
            replication,
            replication_unknown,
            min_insync,
            unclean_election,
        })
    }
}
