//! Records of the topic as Kafka acknowledges them (partition, offset, key). For `tail`.
//!
//! The consumer is assign-based: it never subscribes and never commits, so following
//! the topic can never rebalance (pause) the real consumer group, and a tail leaves no
//! trace in the broker. librdkafka's `assign` wants a `group.id` all the same; it gets
//! one of its own, which no member ever joins (a group exists on the broker only once
//! someone joins it or commits to it). Where to start is the caller's decision
//! ([`TailConsumer::assign`]); this module only reports each partition's watermarks.

use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

/// One record as fetched: payload bytes, not yet decoded (decoding is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The record's timestamp (the producer's create time), ms since the epoch.
    pub timestamp_ms: Option<i64>,
    pub payload: Option<Vec<u8>>,
}

/// A partition of a topic and its low/high watermarks when a read started (the tail's,
/// the dead-letter topic's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionRange {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// The watermarks of `partitions` of `topic`, sorted by partition.
pub(crate) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionRange>> {
    let mut ranges = Vec::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("cannot read the watermarks of {topic}/{partition}"))?;
        ranges.push(PartitionRange {
            partition,
            low,
            high,
        });
    }
    ranges.sort_by_key(|r| r.partition);
    Ok(ranges)
}

/// An assign-based consumer of one topic.
pub struct TailConsumer {
    consumer: BaseConsumer,
    topic: String,
    bootstrap: String,
}

impl TailConsumer {
    /// Connects and reads the topic's partitions and their watermarks.
    pub fn connect(
        bootstrap: &str,
        topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<(TailConsumer, Vec<PartitionRange>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "wiberctl-tail")
            .set(
                "group.id",
                format!(
                    "wiberctl-tail-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An assigned offset that no longer exists (retention deleted it) means
            // "from the oldest record kept", never silently skipping to the end.
            .set("auto.offset.reset", "earliest")
            .create()
            .context("cannot create a kafka consumer for tail")?;
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| {
                format!(
                    "cannot reach kafka at {bootstrap} to read topic {topic} (is the stack up? \
                     `wiberctl stack status`; or set --bootstrap)"
                )
            })?;
        let t = md
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .with_context(|| {
                format!(
                    "topic {topic} does not exist on {bootstrap} (it is created when the api or a \
                     consumer starts; check --topic)"
                )
            })?;
        let ranges = watermarks(
            &consumer,
            topic,
            t.partitions().iter().map(|p| p.id()),
            timeout,
        )?;
        Ok((
            TailConsumer {
                consumer,
                topic: topic.to_string(),
                bootstrap: bootstrap.to_string(),
            },
            ranges,
        ))
    }

    /// Assigns `(partition, first offset to read)` pairs (replacing any assignment).
    pub fn assign(&self, starts: &[(i32, i64)]) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in starts {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .with_context(|| format!("bad start offset {o} for {}/{p}", self.topic))?;
        }
        self.consumer
            .assign(&tpl)
            .with_context(|| format!("cannot assign partitions of {}", self.topic))
    }

    /// The next record, or `None` when none arrived within `timeout`. A fetch error (the
    /// broker went away, ...) is returned as text: the caller reports it and goes on,
    /// since librdkafka reconnects by itself.
    pub fn poll(&self, timeout: Duration) -> Option<Result<TopicRecord, String>> {
        let m = self.consumer.poll(timeout)?;
        Some(match m {
            Ok(m) => Ok(TopicRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                timestamp_ms: m.timestamp().to_millis(),
                payload: m.payload().map(<[u8]>::to_vec),
            }),
            Err(e) => Err(format!("kafka at {}: {e}", self.bootstrap)),
        })
    }

    /// Moves the consumer to a thread of its own that polls it and sends each record
    /// (or fetch error) down a bounded channel. The thread ends when the receiver is
    /// dropped (checked at least every 100 ms). A full channel blocks the thread, which
    /// is harmless: an assigned consumer has no group session to keep alive.
    pub fn spawn(
        self,
        capacity: usize,
    ) -> (
        mpsc::Receiver<Result<TopicRecord, String>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = tokio::task::spawn_blocking(move || {
            while !tx.is_closed() {
                if let Some(r) = self.poll(Duration::from_millis(100)) {
                    if tx.blocking_send(r).is_err() {
                        break;
                    }
                }
            }
        });
        (rx, handle)
    }
}
