//! Kafka adapter for wiberctl (the only module here that touches rdkafka): how far
//! behind the consumer group is, per partition. `stack status`, `verify` and scenarios
//! use it to know when everything acknowledged has been consumed. [`tail`]: an assign-only
//! reader of the topic that never joins the group; [`age`]: lag as time, for `top`;
//! [`dlq`]: the dead-letter topic read, shown and replayed, and raw records produced.

pub mod age;
pub mod cluster;
pub mod dlq;
pub mod tail;

use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use wiber_model::contract::StallReport;

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
    /// What the consumer holding the partition said in the committed offset's metadata
    /// while it could not advance (cleared by its next ordinary commit). Only meaningful
    /// with lag: see [`PartitionLag::stall_line`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallReport>,
}

impl PartitionLag {
    /// `stalled p3@1042 for 2m (...): <error>` when the partition is stalled at `now_ms`:
    /// a stall report *and* records waiting. A report on a partition without lag is
    /// stale (its consumer got past the record, or the records were deleted, and no
    /// ordinary commit cleared it yet): nothing waits behind it.
    pub fn stall_line(&self, now_ms: i64) -> Option<String> {
        let s = self.stall.as_ref().filter(|_| self.lag > 0)?;
        Some(s.describe(self.partition, now_ms))
    }
}

/// Total lag over all partitions.
pub fn total(lags: &[PartitionLag]) -> i64 {
    lags.iter().map(|l| l.lag).sum()
}

/// The stall line of every stalled partition ([`PartitionLag::stall_line`]), by partition.
pub fn stall_lines(lags: &[PartitionLag], now_ms: i64) -> Vec<String> {
    lags.iter().filter_map(|l| l.stall_line(now_ms)).collect()
}

/// Reads the group's committed offsets and the topic's watermarks. Does not join the
/// group (no subscribe), so it never triggers a rebalance of the real consumers. A client
/// for one read: what reads again and again keeps a [`LagReader`].
pub async fn group_lag(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLag>> {
    LagReader::new(bootstrap, group, topic).read(timeout).await
}

/// A client kept for reading one group's lag again and again (a scenario reads it every
/// second for an hour, its verify-as-it-goes every few seconds): a client made per read
/// costs a bootstrap round to every broker and a handful of librdkafka threads each time,
/// and a process that makes and drops threads every second fragments its heap (the
/// generator's memory grew through an hour's soak).
///
/// A read that fails drops the client, so the next one starts afresh: a client that saw
/// its broker killed recovers by itself, but starting afresh bounds how long a wrong
/// state could last; so does making it afresh every [`REFRESH_AFTER`] reads. Each read
/// serves the events the client queued. Cheap to clone: clones share the client.
#[derive(Clone)]
pub struct LagReader {
    bootstrap: String,
    group: String,
    topic: String,
    /// The client and the reads it served.
    client: std::sync::Arc<std::sync::Mutex<Option<(BaseConsumer, u32)>>>,
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader")
            .field("bootstrap", &self.bootstrap)
            .field("group", &self.group)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LagReader {
    pub fn new(bootstrap: &str, group: &str, topic: &str) -> LagReader {
        LagReader {
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            topic: topic.to_string(),
            client: Default::default(),
        }
    }

    /// The group's lag now, per partition, sorted by partition.
    pub async fn read(&self, timeout: Duration) -> anyhow::Result<Vec<PartitionLag>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.read_blocking(timeout))
            .await
            .context("lag query task failed")?
    }

    fn read_blocking(&self, timeout: Duration) -> anyhow::Result<Vec<PartitionLag>> {
        // One read at a time per client (a slow read and the next one never overlap).
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let (consumer, reads) = match slot.take() {
            Some((c, reads)) if reads < REFRESH_AFTER => (c, reads),
            _ => (
                ClientConfig::new()
                    .set("bootstrap.servers", &self.bootstrap)
                    .set("group.id", &self.group)
                    .set("enable.auto.commit", "false")
                    .create()
                    .context("cannot create a kafka client to read consumer lag")?,
                0,
            ),
        };
        let lags = group_lag_with(
            &consumer,
            &self.bootstrap,
            &self.group,
            &self.topic,
            timeout,
        );
        // With a group.id, librdkafka queues its events (a broker down, a connection
        // refused: many under a soak's faults) for the consumer's poll, which nothing
        // else calls here: served now, or the queue grows for as long as the client lives.
        for _ in 0..MAX_EVENTS_SERVED {
            if consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        let lags = lags?;
        *slot = Some((consumer, reads + 1));
        Ok(lags)
    }
}

/// Reads a [`LagReader`]'s client serves before it is made afresh (ten minutes at a
/// read a second): whatever librdkafka keeps per client stays bounded.
const REFRESH_AFTER: u32 = 600;
/// Queued client events served per read at most (a bound on the loop, far above what a
/// second of faults queues).
const MAX_EVENTS_SERVED: usize = 10_000;

fn group_lag_with(
    consumer: &BaseConsumer,
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLag>> {
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
            // A consumer stuck on the partition commits the offset it is stuck at with
            // a report as metadata (the contract's `StallReport`); other metadata (none,
            // or another tool's) is no report.
            stall: StallReport::from_metadata(el.metadata()),
        });
    }
    out.sort_by_key(|l| l.partition);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn stalled(partition: i32, committed: i64, high: i64) -> PartitionLag {
        PartitionLag {
            partition,
            committed: Some(committed),
            low: 0,
            high,
            lag: high - committed,
            stall: Some(StallReport {
                instance: "consumer#1".into(),
                offset: committed,
                since_ms: 1_000,
                attempts: 7,
                error: "unsupported Unicode escape sequence".into(),
            }),
        }
    }

    #[test]
    fn a_stall_report_counts_only_while_records_wait() {
        let l = stalled(3, 1042, 1050);
        assert_eq!(
            l.stall_line(121_000).as_deref(),
            Some("stalled p3@1042 for 2m (7 attempts, consumer#1): unsupported Unicode escape sequence")
        );
        // The partition drained since: the report is stale.
        let drained = PartitionLag {
            lag: 0,
            ..stalled(3, 1050, 1050)
        };
        assert_eq!(drained.stall_line(121_000), None);
        let plain = PartitionLag {
            stall: None,
            ..l.clone()
        };
        assert_eq!(plain.stall_line(121_000), None);
        assert_eq!(stall_lines(&[plain, drained, l], 61_000).len(), 1);
    }

    #[test]
    fn lag_written_before_stall_reports_still_reads() {
        let old = r#"{"partition":1,"committed":5,"low":0,"high":9,"lag":4}"#;
        let l: PartitionLag = serde_json::from_str(old).unwrap();
        assert_eq!(l.stall, None);
        // And a report goes through JSON whole (top's and stack status's --json).
        let s = stalled(0, 1, 2);
        let back: PartitionLag = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
