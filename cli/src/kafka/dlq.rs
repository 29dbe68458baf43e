//! The dead-letter topic (`<topic>.dlq`): its records read and decoded, and records
//! produced raw, for `wiberctl dlq`, `verify` and tests.
//!
//! A dead-letter record is the original record, key and payload byte for byte, with
//! headers that say why it is there and where it came from
//! ([`wiber_model::contract::dlq`]). [`decode`] turns one into a [`DeadLetter`] (pure, so
//! it is tested without a broker); [`scan`] reads the topic from its first record to its
//! high watermark with an assign-only consumer (no group is joined and nothing is
//! committed, as [`super::tail`] does), handing each record over as it arrives, so a
//! reader keeps what it wants and not the topic; [`read_at`] reads one record.
//!
//! [`RawProducer`] (and [`produce_raw`] for one record) puts a record on any topic as
//! given, behind the API's back: `dlq replay` re-publishes a dead letter's key and
//! payload to the message topic with it, and a test can plant a poison record.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::mpsc;
use wiber_model::contract::dlq::{self, Class};
use wiber_model::Message;

/// The dead-letter topic of message topic `topic`, as the consumers name it when
/// `KAFKA_DLQ_TOPIC` is not set.
pub fn topic_of(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Where a record is in the dead-letter topic. Written `1042` (partition 0, the only one
/// the consumers create) or `2@1042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DlqPos {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for DlqPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.partition == 0 {
            write!(f, "{}", self.offset)
        } else {
            write!(f, "{}@{}", self.partition, self.offset)
        }
    }
}

impl FromStr for DlqPos {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "bad dead-letter position {s:?}: expected an offset (1042) or partition@offset (0@1042), as `wiberctl dlq list` shows them"
            )
        };
        let (p, o) = match s.trim().split_once('@') {
            Some((p, o)) => (p.parse().map_err(|_| bad())?, o),
            None => (0, s.trim()),
        };
        let offset: i64 = o.parse().map_err(|_| bad())?;
        if p < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(DlqPos {
            partition: p,
            offset,
        })
    }
}

/// One record of the dead-letter topic as fetched (no rdkafka types: what [`decode`] reads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DlqRecord {
    pub partition: i32,
    pub offset: i64,
    /// The DLQ record's own timestamp (when the consumer produced it), ms since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DlqRecord {
    /// The first header named `name`, as text.
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A dead letter: what its headers say and what its payload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub pos: DlqPos,
    /// `None`: the record has no class header, or one this wiberctl does not know
    /// (`headers` holds it as written).
    pub class: Option<Class>,
    /// The store's error, or why the record does not decode.
    pub reason: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    /// When the consumer dead-lettered it (its header, else the DLQ record's timestamp),
    /// ms since the epoch.
    pub dead_lettered_at_ms: Option<i64>,
    /// Set when the record is itself a replay (it should not be: a replay goes to the
    /// message topic, and only comes back here if it fails again).
    pub replayed_from: Option<String>,
    /// The payload's `messageId` (also when the rest of the payload is not a message).
    pub message_id: Option<String>,
    /// The payload as a message, or why it is not one.
    pub message: Result<Message, String>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// `3@1042` of the source topic, or `-`.
    pub fn source(&self) -> String {
        match (self.source_partition, self.source_offset) {
            (Some(p), Some(o)) => format!("{p}@{o}"),
            (Some(p), None) => format!("{p}@?"),
            _ => "-".into(),
        }
    }

    /// The key as text (conversation keys are text; other bytes are shown lossily).
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// `"from → to"` of the message, when the payload is one.
    pub fn from_to(&self) -> Option<String> {
        self.message
            .as_ref()
            .ok()
            .map(|m| format!("{} → {}", m.from_user, m.to_user))
    }
}

/// Reads a fetched record's headers and payload. Never fails: whatever is missing or
/// malformed stays `None` (or `Err` for the message), since a dead-letter topic is where
/// malformed records go.
pub fn decode(r: DlqRecord) -> DeadLetter {
    let num = |name: &str| r.header(name).and_then(|v| v.trim().parse::<i64>().ok());
    let message = match r.payload.as_deref() {
        None => Err("no payload".to_string()),
        Some(p) => serde_json::from_slice::<Message>(p)
            .map_err(|e| format!("the payload is not a wiber message: {e}")),
    };
    // An undecodable payload may still be JSON with a messageId (a field of the wrong
    // type elsewhere): its id still says which message it was.
    let message_id = match &message {
        Ok(m) => Some(m.message_id.clone()),
        Err(_) => r
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("messageId")?.as_str().map(str::to_string)),
    };
    DeadLetter {
        pos: DlqPos {
            partition: r.partition,
            offset: r.offset,
        },
        class: r.header(dlq::CLASS).and_then(|c| c.parse().ok()),
        reason: r.header(dlq::REASON),
        source_topic: r.header(dlq::SOURCE_TOPIC),
        source_partition: num(dlq::SOURCE_PARTITION).and_then(|p| i32::try_from(p).ok()),
        source_offset: num(dlq::SOURCE_OFFSET),
        dead_lettered_at_ms: num(dlq::DEAD_LETTERED_AT).or(r.timestamp_ms),
        replayed_from: r.header(dlq::REPLAYED_FROM),
        message_id,
        message,
        key: r.key,
        payload: r.payload,
        headers: r.headers,
    }
}

/// Why the dead-letter topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(
        "dead-letter topic {topic} does not exist on {bootstrap} (the consumers create it when \
         they start; check --topic / --dlq-topic, or `wiberctl stack status`)"
    )]
    NoTopic { topic: String, bootstrap: String },
    #[error(transparent)]
    Kafka(#[from] anyhow::Error),
}

pub use super::tail::PartitionRange;

/// What a [`scan`] read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    pub topic: String,
    pub partitions: Vec<PartitionRange>,
    /// Records handed over.
    pub records: u64,
}

/// Records handed from the reading thread to the caller at most at once.
const CHANNEL: usize = 256;

/// Reads every record of dead-letter topic `topic`, from the first one kept to the high
/// watermark as it was when the read started, and calls `f` with each (in offset order
/// per partition). `timeout` bounds each broker call and any wait without a record.
pub async fn scan(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut f: impl FnMut(DeadLetter),
) -> Result<ScanSummary, DlqError> {
    let (reader, ranges) = {
        let (b, t) = (bootstrap.to_string(), topic.to_string());
        tokio::task::spawn_blocking(move || Reader::connect(&b, &t, timeout))
            .await
            .context("dead-letter reader task failed")??
    };
    let (tx, mut rx) = mpsc::channel(CHANNEL);
    let starts: Vec<(i32, i64, i64)> = ranges
        .iter()
        .filter(|r| r.high > r.low)
        .map(|r| (r.partition, r.low, r.high))
        .collect();
    let task = tokio::task::spawn_blocking(move || reader.read_ranges(&starts, timeout, &tx));
    let mut records = 0;
    while let Some(r) = rx.recv().await {
        records += 1;
        f(decode(r));
    }
    task.await.context("dead-letter reader task failed")??;
    Ok(ScanSummary {
        topic: topic.to_string(),
        partitions: ranges,
        records,
    })
}

/// Every record of dead-letter topic `topic` ([`scan`], collected): for tests and small
/// topics (a reader of a topic of any size keeps what it needs in [`scan`]'s callback).
pub async fn read_all(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut out = Vec::new();
    scan(bootstrap, topic, timeout, |d| out.push(d)).await?;
    Ok(out)
}

/// The record at `pos`, or `None` when the topic does not hold it (below its first
/// record kept, at or past its end, or a partition it does not have).
pub async fn read_at(
    bootstrap: &str,
    topic: &str,
    pos: DlqPos,
    timeout: Duration,
) -> Result<Option<DeadLetter>, DlqError> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let (reader, ranges) = Reader::connect(&b, &t, timeout)?;
        let Some(r) = ranges
            .iter()
            .find(|r| r.partition == pos.partition)
            .filter(|r| (r.low..r.high).contains(&pos.offset))
        else {
            return Ok(None);
        };
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        // Up to the end, but only the first record is wanted: the thread stops when the
        // receiver is dropped.
        let starts = [(r.partition, pos.offset, pos.offset + 1)];
        reader.read_ranges(&starts, timeout, &tx)?;
        drop(tx);
        // A compacted or deleted offset gives the next record: not the one asked for.
        Ok(rx
            .blocking_recv()
            .filter(|r| r.offset == pos.offset)
            .map(decode))
    })
    .await
    .context("dead-letter reader task failed")?
}

/// An assign-only consumer of the dead-letter topic.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    bootstrap: String,
}

impl Reader {
    fn connect(
        bootstrap: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<(Reader, Vec<PartitionRange>), DlqError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "wiberctl-dlq")
            // librdkafka's assign wants a group id; this one is never joined nor
            // committed to, so it leaves no trace on the broker (see `tail`).
            .set(
                "group.id",
                format!("wiberctl-dlq-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("cannot create a kafka consumer for the dead-letter topic")?;
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| {
                format!(
                    "cannot reach kafka at {bootstrap} to read topic {topic} (is the stack up? \
                     `wiberctl stack status`; or set --bootstrap)"
                )
            })?;
        let Some(t) = md
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        else {
            return Err(DlqError::NoTopic {
                topic: topic.to_string(),
                bootstrap: bootstrap.to_string(),
            });
        };
        let ranges = super::tail::watermarks(
            &consumer,
            topic,
            t.partitions().iter().map(|p| p.id()),
            timeout,
        )?;
        Ok((
            Reader {
                consumer,
                topic: topic.to_string(),
                bootstrap: bootstrap.to_string(),
            },
            ranges,
        ))
    }

    /// Sends the records of `(partition, from, to)` (offsets `from..to`) down `tx` until
    /// every partition reached its `to`, or the receiver is gone. A wait of `timeout`
    /// without any record is an error (the broker went away, or the records were
    /// deleted under the read).
    fn read_ranges(
        &self,
        ranges: &[(i32, i64, i64)],
        timeout: Duration,
        tx: &mpsc::Sender<DlqRecord>,
    ) -> anyhow::Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, from, _) in ranges {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))
                .with_context(|| format!("bad start offset {from} for {}/{p}", self.topic))?;
        }
        self.consumer
            .assign(&tpl)
            .with_context(|| format!("cannot assign partitions of {}", self.topic))?;
        // Where each partition has to get to, and how far it got.
        let mut left: Vec<(i32, i64)> = ranges.iter().map(|&(p, _, to)| (p, to)).collect();
        let mut last = Instant::now();
        let mut error = None;
        while !left.is_empty() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => error = Some(e.to_string()),
                Some(Ok(m)) => {
                    last = Instant::now();
                    let (p, o) = (m.partition(), m.offset());
                    let Some(i) = left.iter().position(|(lp, _)| *lp == p) else {
                        continue;
                    };
                    if o >= left[i].1 {
                        left.swap_remove(i);
                        continue;
                    }
                    let record = DlqRecord {
                        partition: p,
                        offset: o,
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    if tx.blocking_send(record).is_err() {
                        return Ok(());
                    }
                    if o + 1 >= left[i].1 {
                        left.swap_remove(i);
                    }
                }
            }
            if tx.is_closed() {
                return Ok(());
            }
            if last.elapsed() > timeout {
                let at: Vec<String> = left
                    .iter()
                    .map(|(p, to)| format!("{p} (to {to})"))
                    .collect();
                anyhow::bail!(
                    "no record of {} from kafka at {} for {timeout:?} while partitions {} were \
                     still to read{}",
                    self.topic,
                    self.bootstrap,
                    at.join(", "),
                    error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

/// Where Kafka put a produced record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} p{}@{}", self.topic, self.partition, self.offset)
    }
}

/// How long a produced record may wait for its acknowledgement.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A producer of records exactly as given: acks=all and idempotent, as the API's, so an
/// acknowledged record is on every in-sync replica and a retry never writes it twice.
pub struct RawProducer {
    producer: FutureProducer,
    bootstrap: String,
}

impl RawProducer {
    pub fn new(bootstrap: &str) -> anyhow::Result<RawProducer> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "wiberctl-raw")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .with_context(|| format!("cannot create a kafka producer for {bootstrap}"))?;
        Ok(RawProducer {
            producer,
            bootstrap: bootstrap.to_string(),
        })
    }

    /// Produces one record to `topic` (partitioned by `key`, as the API's are) and waits
    /// for its acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> anyhow::Result<Delivered> {
        let mut h = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let delivery = self
            .producer
            .send(record, Timeout::After(PRODUCE_TIMEOUT))
            .await
            .map_err(|(e, _)| {
                anyhow::anyhow!(
                    "kafka at {} did not acknowledge a record for {topic}: {e} (is the broker up, \
                     and does the topic exist?)",
                    self.bootstrap
                )
            })?;
        Ok(Delivered {
            topic: topic.to_string(),
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }
}

/// Puts one record on `topic` as given, behind the API's back (acks=all, idempotent),
/// and waits for its acknowledgement: how a test plants a record the API would refuse.
pub async fn produce_raw(
    bootstrap: &str,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(&str, &[u8])],
) -> anyhow::Result<Delivered> {
    RawProducer::new(bootstrap)?
        .send(topic, key, Some(payload), headers)
        .await
}

/// Re-publishes dead letter `d` to `topic`: its original key and payload, unchanged (so
/// its original messageId makes the replay idempotent: the consumer de-duplicates by
/// `_id`), with [`dlq::REPLAYED_FROM`] naming where it came from.
pub async fn replay(p: &RawProducer, d: &DeadLetter, topic: &str) -> anyhow::Result<Delivered> {
    let from = d.pos.to_string();
    p.send(
        topic,
        d.key.as_deref(),
        d.payload.as_deref(),
        &[(dlq::REPLAYED_FROM, from.as_bytes())],
    )
    .await
    .with_context(|| format!("cannot replay dead letter {} to {topic}", d.pos))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn message(id: &str) -> Message {
        Message {
            message_id: id.into(),
            from_user: "alice".into(),
            to_user: "bob".into(),
            content: "a\u{0}b".into(),
            timestamp: 1_700_000_000_000,
            created_at: wiber_model::rfc3339_ms(1_700_000_000_000),
        }
    }

    /// A dead-letter record as the consumer writes it.
    pub(crate) fn record(offset: i64, class: &str, payload: &[u8]) -> DlqRecord {
        let h = |k: &str, v: &str| (k.to_string(), Some(v.as_bytes().to_vec()));
        DlqRecord {
            partition: 0,
            offset,
            timestamp_ms: Some(5),
            key: Some(b"alice\x1fbob".to_vec()),
            payload: Some(payload.to_vec()),
            headers: vec![
                h(dlq::CLASS, class),
                h(
                    dlq::REASON,
                    "unsupported Unicode escape sequence (SQLSTATE 22P05)",
                ),
                h(dlq::SOURCE_TOPIC, "wiber.messages"),
                h(dlq::SOURCE_PARTITION, "3"),
                h(dlq::SOURCE_OFFSET, "1042"),
                h(dlq::DEAD_LETTERED_AT, "1700000001000"),
            ],
        }
    }

    #[test]
    fn a_dead_letter_is_read_from_its_headers_and_payload() {
        let m = message("m-1");
        let d = decode(record(7, "refused", &serde_json::to_vec(&m).unwrap()));
        assert_eq!(
            d.pos,
            DlqPos {
                partition: 0,
                offset: 7
            }
        );
        assert_eq!(d.class, Some(Class::Refused));
        assert_eq!(d.source_topic.as_deref(), Some("wiber.messages"));
        assert_eq!(d.source(), "3@1042");
        assert_eq!(d.dead_lettered_at_ms, Some(1_700_000_001_000));
        assert_eq!(d.message_id.as_deref(), Some("m-1"));
        assert_eq!(d.message.as_ref().ok(), Some(&m));
        assert_eq!(d.from_to().as_deref(), Some("alice → bob"));
        assert!(d.reason.unwrap().contains("22P05"));
        assert_eq!(d.replayed_from, None);
    }

    #[test]
    fn a_malformed_dead_letter_still_reads() {
        // JSON with a messageId but not a message: the id still names it.
        let d = decode(record(
            1,
            "undecodable",
            br#"{"messageId":"m-2","content":7}"#,
        ));
        assert_eq!(d.class, Some(Class::Undecodable));
        assert_eq!(d.message_id.as_deref(), Some("m-2"));
        assert!(d.message.is_err());
        // Not JSON at all, no headers: nothing names it, nothing fails.
        let d = decode(DlqRecord {
            offset: 2,
            payload: Some(b"\xff\x00garbage".to_vec()),
            timestamp_ms: Some(9),
            ..DlqRecord::default()
        });
        assert_eq!((d.class, d.message_id.as_deref()), (None, None));
        assert_eq!(d.source(), "-");
        assert_eq!(d.dead_lettered_at_ms, Some(9), "the record's own timestamp");
        assert!(decode(DlqRecord::default()).message.is_err());
        // A class this wiberctl does not know is no class (the header stays visible).
        let d = decode(record(3, "mystery", b"{}"));
        assert_eq!(d.class, None);
        assert!(d.headers.iter().any(|(k, _)| k == dlq::CLASS));
    }

    #[test]
    fn positions_read_and_print_alike() {
        assert_eq!(
            "1042".parse(),
            Ok(DlqPos {
                partition: 0,
                offset: 1042
            })
        );
        assert_eq!(
            "2@5".parse(),
            Ok(DlqPos {
                partition: 2,
                offset: 5
            })
        );
        for bad in ["", "x", "-1", "1@", "@3", "1@-2"] {
            let e = bad.parse::<DlqPos>().unwrap_err();
            assert!(e.contains("dlq list"), "{bad:?}: {e}");
        }
        assert_eq!(
            DlqPos {
                partition: 0,
                offset: 4
            }
            .to_string(),
            "4"
        );
        assert_eq!(
            DlqPos {
                partition: 1,
                offset: 4
            }
            .to_string(),
            "1@4"
        );
        assert_eq!(topic_of("wiber.messages"), "wiber.messages.dlq");
    }
}
