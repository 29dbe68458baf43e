//! A broker that comes back is done coming back when it is in sync again.
//!
//! On a cluster, a restarted (or started) broker answers its port seconds before it has
//! caught up on the partitions it replicates and rejoined their in-sync replicas. An
//! operator doing a rolling restart waits for that (under-replicated partitions back to 0)
//! before taking the next broker down: with `min.insync.replicas` = 2 of 3, a second
//! broker stopped while the first is still catching up leaves partitions with one
//! in-sync replica, and producing with `acks=all` stops. So `restart` of a broker on a
//! cluster returns only when the broker is back in the ISR of every partition of the
//! stack's topic it replicates, or fails naming the partitions that are not. `start`
//! (the undo of a `kill`) returns once the broker runs: the catch-up after a crash is
//! part of what a scenario measures after the fault, not of the fault. A soak's drawn
//! faults wait for it before they free their slot (`FaultSeam::settle`), so the next
//! broker fault never finds one still catching up. A single broker has no one to catch
//! up with: nothing to wait for.

use std::time::Duration;

use anyhow::{bail, Result};
use tokio::time::Instant;

use super::Stack;
use crate::kafka::cluster::{self, PartitionInfo};
use crate::runtime::{InstanceId, Service};

/// How long a broker may take to rejoin; it catches up on what was produced while it was
/// away, which on two loaded cores takes seconds, not minutes.
pub const REJOIN_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(500);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

impl Stack {
    /// Waits until broker `id` is in the ISR of every partition of the stack's topic it
    /// replicates (see the module doc). Returns at once for other services and for a
    /// single-broker stack.
    pub async fn wait_in_sync(&self, id: &InstanceId, timeout: Duration) -> Result<()> {
        if id.service != Service::Kafka {
            return Ok(());
        }
        let brokers = self
            .list()
            .await?
            .iter()
            .filter(|i| i.id.service == Service::Kafka)
            .count();
        if brokers < 2 {
            return Ok(());
        }
        let ep = self.endpoints().await?;
        let Some(bootstrap) = ep.kafka_bootstrap else {
            return Ok(());
        };
        let node = id.index as i32;
        let deadline = Instant::now() + timeout;
        loop {
            let last = match cluster::describe_topic(&bootstrap, &ep.names.topic, METADATA_TIMEOUT)
                .await
            {
                Ok(parts) => {
                    let behind = out_of_sync(&parts, node);
                    if behind.is_empty() {
                        return Ok(());
                    }
                    format!(
                        "not yet in the in-sync replicas of partition(s) {}",
                        behind
                            .iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{id} is running but did not rejoin topic {} within {timeout:?}: {last} \
                     (see `wiberctl stack status` and `wiberctl stack logs {id}`)",
                    ep.names.topic
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Stack {
    /// Partitions of the stack's topic with a replica out of sync (empty on a single
    /// broker): a cluster is not whole while any is, whatever its health checks say.
    pub async fn under_replicated(&self) -> Result<Vec<i32>> {
        let ep = self.endpoints().await?;
        let Some(bootstrap) = ep.kafka_bootstrap else {
            return Ok(Vec::new());
        };
        let parts = cluster::describe_topic(&bootstrap, &ep.names.topic, METADATA_TIMEOUT).await?;
        Ok(parts
            .iter()
            .filter(|p| p.isr.len() < p.replicas.len())
            .map(|p| p.partition)
            .collect())
    }
}

/// Partitions that `node` replicates but is not in sync for.
fn out_of_sync(parts: &[PartitionInfo], node: i32) -> Vec<i32> {
    parts
        .iter()
        .filter(|p| p.replicas.contains(&node) && !p.isr.contains(&node))
        .map(|p| p.partition)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            partition,
            leader: isr.first().copied(),
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn a_broker_is_behind_where_it_replicates_but_is_not_in_sync() {
        let parts = [
            p(0, &[1, 2, 3], &[1, 3]),
            p(1, &[2, 3, 1], &[2, 3, 1]),
            p(2, &[3, 1, 2], &[3, 1]),
            p(3, &[1, 3], &[1, 3]),
        ];
        assert_eq!(out_of_sync(&parts, 2), vec![0, 2]);
        assert!(out_of_sync(&parts, 1).is_empty());
        // Not a replica of partition 3: not waited for there.
        assert!(out_of_sync(&parts[3..], 2).is_empty());
    }
}
