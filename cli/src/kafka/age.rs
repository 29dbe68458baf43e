//! How old the oldest record not yet stored is, per partition (lag as time). For `top`.
//!
//! A lag of 500 records is nothing at 1,000 msg/s and an outage at 1 msg/s; the age of
//! the oldest record the group has not committed says which. The consumers commit an
//! offset only after every record below it is durably written, so the record *at* the
//! group's committed offset is the oldest one not yet stored, and its timestamp (the
//! producer's create time) tells how long it has waited.
//!
//! The probe reads that one record per lagging partition with an *assigned* consumer:
//! explicit partitions and offsets, no `subscribe`, under a group id of its own that it
//! never commits to. So it never joins the consumers' group and never triggers a
//! rebalance of the real consumers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::PartitionLag;

/// The oldest record not yet stored on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldestRecord {
    pub partition: i32,
    /// Its offset (the group's committed offset, or the first record still in the log).
    pub offset: i64,
    /// Its Kafka timestamp, ms since the epoch.
    pub timestamp_ms: i64,
}

impl OldestRecord {
    /// How long it has waited at `now_ms` (never negative: clocks of producer and reader
    /// may differ slightly).
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.timestamp_ms).max(0)
    }
}

/// Where to read on each partition that has lag: the committed offset (the first record
/// of the log if the group never committed, as the consumers' `auto.offset.reset =
/// earliest` would). Partitions without lag have no waiting record.
pub fn positions(lags: &[PartitionLag]) -> Vec<(i32, i64)> {
    lags.iter()
        .filter(|l| l.lag > 0)
        .map(|l| (l.partition, l.committed.unwrap_or(l.low).max(l.low)))
        .collect()
}

/// A long-lived reader of single records (one client and its connections, reused on
/// every refresh).
#[derive(Clone)]
pub struct AgeProbe {
    consumer: Arc<BaseConsumer>,
    topic: String,
    bootstrap: String,
}

impl AgeProbe {
    pub fn new(bootstrap: &str, topic: &str) -> anyhow::Result<AgeProbe> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // Its own group, never committed to and never joined (assign, no subscribe).
            .set(
                "group.id",
                format!("wiberctl-age-probe-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // An offset that fell out of retention: read the first record still there.
            .set("auto.offset.reset", "earliest")
            // One record per partition is all we want; keep fetches small.
            .set("fetch.max.bytes", "1048576")
            .set("max.partition.fetch.bytes", "65536")
            .create()
            .with_context(|| format!("cannot create a kafka client for {bootstrap}"))?;
        Ok(AgeProbe {
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
            bootstrap: bootstrap.to_string(),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The record at each `(partition, offset)`, read within `timeout`. A partition whose
    /// record did not arrive in time is missing from the answer (the caller shows its age
    /// as unknown); an error means Kafka could not be asked at all.
    pub async fn oldest(
        &self,
        at: Vec<(i32, i64)>,
        timeout: Duration,
    ) -> anyhow::Result<Vec<OldestRecord>> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        let probe = self.clone();
        tokio::task::spawn_blocking(move || probe.oldest_blocking(&at, timeout))
            .await
            .context("record age task failed")?
    }

    fn oldest_blocking(
        &self,
        at: &[(i32, i64)],
        timeout: Duration,
    ) -> anyhow::Result<Vec<OldestRecord>> {
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in at {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .with_context(|| format!("bad position {}/{p}@{o}", self.topic))?;
        }
        self.consumer
            .assign(&tpl)
            .with_context(|| format!("cannot assign {} partitions", self.topic))?;
        let wanted: BTreeMap<i32, i64> = at.iter().copied().collect();
        let mut found: BTreeMap<i32, OldestRecord> = BTreeMap::new();
        let deadline = Instant::now() + timeout;
        while found.len() < wanted.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.consumer.poll(left.min(Duration::from_millis(200))) {
                None => continue,
                Some(Err(e)) => {
                    // Transport errors repeat until the broker is back; the deadline bounds
                    // the wait, and what was read so far is still worth showing.
                    tracing::debug!(error = %e, "age probe poll");
                    continue;
                }
                Some(Ok(m)) => {
                    let p = m.partition();
                    // The first record at or after the position (a gap: compaction or
                    // a transaction marker); a prefetched later one is ignored.
                    let Some(&from) = wanted.get(&p) else {
                        continue;
                    };
                    if m.offset() < from || found.contains_key(&p) {
                        continue;
                    }
                    if let Some(ts) = m.timestamp().to_millis() {
                        found.insert(
                            p,
                            OldestRecord {
                                partition: p,
                                offset: m.offset(),
                                timestamp_ms: ts,
                            },
                        );
                    }
                }
            }
        }
        // Stop fetching between refreshes.
        let _ = self.consumer.unassign();
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(partition: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
        PartitionLag {
            partition,
            committed,
            low,
            high,
            lag: (high - committed.unwrap_or(low).max(low)).max(0),
            stall: None,
        }
    }

    #[test]
    fn only_lagging_partitions_are_read_at_the_committed_offset() {
        let lags = [
            lag(0, Some(10), 0, 10), // caught up
            lag(1, Some(7), 0, 12),  // 5 waiting: read offset 7
            lag(2, None, 3, 9),      // never committed: the first record still there
            lag(3, Some(1), 4, 9),   // committed offset fell out of retention
        ];
        assert_eq!(positions(&lags), vec![(1, 7), (2, 3), (3, 4)]);
    }

    #[test]
    fn age_is_never_negative() {
        let r = OldestRecord {
            partition: 0,
            offset: 1,
            timestamp_ms: 10_000,
        };
        assert_eq!(r.age_ms(12_500), 2_500);
        assert_eq!(r.age_ms(9_000), 0);
    }
}
