//! Kafka adapter for wiberctl (the only module here that touches rdkafka): how far
//! behind the consumer group is, per partition. `stack status`, `verify` and scenarios
//! use it to know when everything acknowledged has been consumed. [`tail`]: an assign-only
//! reader of the topic that never joins the group; [`age`]: lag as time, for `top`.

pub mod age;
pub mod cluster;
pub mod tail;

use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// One partition's position: `lag` = records at or above the group's committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset, if it has committed one.
    pub committed: Option<i64>,
    /// Low and high watermarks of the partition.
    pub low: i64,
    pub high: i64,
    pub lag: i64,
}

/// Total lag over all partitions.
pub fn total(lags: &[PartitionLag]) -> i64 {
    lags.iter().map(|l| l.lag).sum()
}

/// Reads the group's committed offsets and the topic's watermarks. Does not join the
/// group (no subscribe), so it never triggers a rebalance of the real consumers.
pub async fn group_lag(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLag>> {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || group_lag_blocking(&bootstrap, &group, &topic, timeout))
        .await
        .context("lag query task failed")?
}

fn group_lag_blocking(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLag>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a kafka client to read consumer lag")?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| {
            format!("cannot reach kafka at {bootstrap} to read topic {topic} (is the broker up?)")
        })?;
    let t = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .with_context(|| format!("topic {topic} does not exist yet (it is created when the api or a consumer starts)"))?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("cannot read committed offsets of group {group}"))?;
    let mut out = Vec::new();
    for el in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(topic, el.partition(), timeout)
            .with_context(|| format!("cannot read watermarks of {topic}/{}", el.partition()))?;
        let committed = match el.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let lag = (high - committed.unwrap_or(low).max(low)).max(0);
        out.push(PartitionLag {
            partition: el.partition(),
            committed,
            low,
            high,
            lag,
        });
    }
    out.sort_by_key(|l| l.partition);
    Ok(out)
}
