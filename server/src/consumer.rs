//! The consumer service: reads the topic as part of the group and stores messages.
//!
//! The loop keeps the delivery contract:
//! 1. gather a batch (up to `batch_size` records, or what arrives within `batch_linger`,
//!    or within `busy_linger` when records come fast: [`Batching::busy_wait`]);
//! 2. records that cannot be decoded go to the dead-letter topic with the reason
//!    (awaiting Kafka's ack), so nothing is silently dropped;
//! 3. the rest are written with one unordered `insert_many`; duplicate keys are
//!    de-duplication hits; any other failure is retried with capped back-off, never skipped;
//! 4. only then are the batch's offsets committed: everything at or below a committed
//!    offset is durable, so a crash anywhere above means redelivery, never loss.
//!
//! On SIGTERM it stops fetching, finishes (or abandons, uncommitted) the batch in hand,
//! commits synchronously and leaves the group.
//!
//! The loop ([`consume`]) sees Kafka and MongoDB only through two seams of its own,
//! [`RecordSource`] (implemented by [`kafka::GroupRecords`]) and [`MessageStore`]
//! (implemented by [`Store`]), so the contract above is tested without either
//! (`tests/server/consumer.rs`, with a fake group whose commits are logged).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use wiber_model::{now_ms, validate, Message, NewMessage, StoredMessage};

use crate::config::{instance_name, ConsumerConfig};
use crate::kafka;
use crate::store::{InsertOutcome, Store};

/// A record of the message topic as the loop sees it, whichever client fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Where the group resumes reading a partition: one past the last record done with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// The consumer group's side of the loop: records in, offsets committed, undecodable
/// records out to the dead-letter topic.
pub trait RecordSource {
    type Error: fmt::Display;

    /// The next record assigned to this member. Errors are transient: the loop logs
    /// them and reads again.
    fn recv(&self) -> impl Future<Output = Result<Record, Self::Error>> + Send;

    /// One attempt to publish `record` to the dead-letter topic with `reason`, waiting
    /// for the broker's ack (the loop retries until it comes).
    fn dead_letter(
        &self,
        record: &Record,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Commits `positions` without waiting: a commit that is lost means redelivery,
    /// which the store de-duplicates, never loss.
    fn commit(&self, positions: &[Position]);

    /// Commits synchronously what [`RecordSource::commit`] was given, then leaves the group.
    fn close(&self);
}

/// Where messages are stored.
pub trait MessageStore {
    type Error: fmt::Display;

    /// Writes every document of `batch` or fails as a whole (retrying is safe). A
    /// document whose `_id` is already stored is a de-duplication hit, reported in
    /// [`InsertOutcome::duplicates`], not an error.
    fn insert_batch(
        &self,
        batch: &[StoredMessage],
    ) -> impl Future<Output = Result<InsertOutcome, Self::Error>> + Send;
}

/// How the loop batches records and backs off failed writes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Largest number of records written at once.
    pub max_records: usize,
    /// How long a batch waits for more records once it holds one.
    pub linger: Duration,
    /// How long it waits in all when records came at [`Batching::busy_rate`] or faster
    /// during `linger`: fewer, larger writes when busy, no added wait when not.
    pub busy_linger: Duration,
    /// Records per second (into this consumer) from which a batch waits `busy_linger`.
    pub busy_rate: u64,
    /// Cap of the back-off between retries of a failed write.
    pub max_backoff: Duration,
}

impl From<&ConsumerConfig> for Batching {
    fn from(cfg: &ConsumerConfig) -> Self {
        Batching {
            max_records: cfg.batch_size.max(1),
            linger: Duration::from_millis(cfg.batch_linger_ms),
            busy_linger: Duration::from_millis(cfg.busy_linger_ms),
            busy_rate: cfg.busy_rate,
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
        }
    }
}

impl Batching {
    /// The whole wait of a batch that holds `records` after `linger`, if it is to wait
    /// longer: when they came at `busy_rate` or faster. Why: on FerretDB-on-PostgreSQL a
    /// write costs about a millisecond of store CPU besides its rows (FerretDB's and the
    /// count trigger's per-statement work); at 5,000 msg/s, batches gathered over 100 ms
    /// instead of 20 took the store from 0.62 to 0.53 cores, for 70 ms more end-to-end
    /// latency, which a busy stream can afford and a quiet one never pays.
    pub fn busy_wait(&self, records: usize) -> Option<Duration> {
        let rate = records as f64 / self.linger.as_secs_f64().max(1e-3);
        (self.busy_linger > self.linger && self.busy_rate > 0 && rate >= self.busy_rate as f64)
            .then_some(self.busy_linger)
    }
}

/// Runs the consumer until `shutdown` resolves: connects to MongoDB and Kafka (waiting
/// for them), joins the group and runs [`consume`].
pub async fn run(cfg: ConsumerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // First, before any connection: a seeded bug that cannot be honoured is a start error.
    #[cfg(not(feature = "seeded-bugs"))]
    crate::config::refuse_seeded_bug()?;
    #[cfg(feature = "seeded-bugs")]
    let seeded = crate::seeded::Seeded::from_env(wiber_model::contract::Service::Consumer)?;
    let instance = instance_name("consumer");
    let store = Store::connect(&cfg.mongo).await?;
    // Indexes and topics are retried until they work: a consumer started before its
    // dependencies (compose, restarts) waits for them instead of crash-looping.
    let mut backoff = Duration::from_millis(200);
    loop {
        match store.ensure_indexes().await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "mongodb not ready yet; retrying"),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    if !kafka::ensure_topics_until(&cfg.kafka, &mut shutdown).await {
        return Ok(());
    }
    let records = kafka::GroupRecords::subscribe(&cfg, &instance)?;
    tracing::info!(%instance, group = %cfg.group, topic = %cfg.kafka.topic, "consumer started");
    #[cfg(feature = "seeded-bugs")]
    let store =
        crate::seeded::SeededStore::new(seeded.as_ref(), &store, &records, &cfg.kafka.topic);
    consume(&records, &store, Batching::from(&cfg), shutdown).await;
    tracing::info!(%instance, "consumer stopped");
    Ok(())
}

/// The consumer loop, until `shutdown` resolves: gather a batch, dead-letter what does
/// not decode, store the rest, and only then commit the batch's offsets. Then a final
/// commit and leave the group.
pub async fn consume<S: RecordSource, M: MessageStore>(
    source: &S,
    store: &M,
    batching: Batching,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            r = source.recv() => r,
        };
        let first = match first {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let started = tokio::time::Instant::now();
        let mut deadline = started + batching.linger;
        let mut extended = false;
        while batch.len() < batching.max_records {
            match tokio::time::timeout_at(deadline, source.recv()).await {
                Ok(Ok(r)) => batch.push(r),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Err(_) => match batching.busy_wait(batch.len()).filter(|_| !extended) {
                    Some(wait) => {
                        deadline = started + wait;
                        extended = true;
                    }
                    None => break,
                },
            }
        }
        match process(source, store, &batching, &batch, &mut shutdown).await {
            Processed::Done => source.commit(&positions(&batch)),
            // Shutdown arrived while a write was failing: leave without committing; the
            // batch is redelivered to whoever owns the partitions next.
            Processed::Abandoned => break,
        }
    }
    source.close();
}

enum Processed {
    Done,
    Abandoned,
}

/// Dead-letters the undecodable records of `batch` and stores the rest, retrying until
/// both are done (or shutdown comes first: `Abandoned`, nothing of the batch committed).
async fn process<S: RecordSource, M: MessageStore>(
    source: &S,
    store: &M,
    batching: &Batching,
    batch: &[Record],
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Processed {
    let mut good = Vec::with_capacity(batch.len());
    for rec in batch {
        match decode(rec) {
            // `storedAt` is set per attempt below.
            Ok(message) => good.push(StoredMessage::new(message, 0, rec.partition, rec.offset)),
            Err(reason) => {
                if !dead_letter(source, rec, &reason, shutdown).await {
                    return Processed::Abandoned;
                }
            }
        }
    }
    let mut backoff = Duration::from_millis(100);
    for attempt in 1u64.. {
        // `storedAt` is the time of the attempt that succeeds, so end-to-end latency
        // (send → storedAt) includes the time spent retrying.
        let stored_at = now_ms();
        for m in &mut good {
            m.stored_at = stored_at;
        }
        match store.insert_batch(&good).await {
            Ok(o) => {
                for m in &good {
                    tracing::debug!(message_id = %m.message_id, partition = m.partition, offset = m.offset, "stored");
                }
                for id in &o.duplicates {
                    tracing::debug!(message_id = %id, "already stored (redelivery): de-duplicated");
                }
                tracing::info!(
                    records = batch.len(),
                    inserted = o.inserted,
                    duplicates = o.duplicates.len(),
                    "batch stored"
                );
                return Processed::Done;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = good.len(), "store write failed; retrying the batch")
            }
        }
        tokio::select! {
            _ = &mut *shutdown => return Processed::Abandoned,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(batching.max_backoff);
    }
    unreachable!("the retry loop only returns")
}

/// Publishes an undecodable record to the dead-letter topic, retrying until Kafka
/// acknowledges it (false: shutdown came first and the record stays uncommitted).
async fn dead_letter<S: RecordSource>(
    source: &S,
    rec: &Record,
    reason: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match source.dead_letter(rec, reason).await {
            Ok(()) => {
                tracing::warn!(%reason, partition = rec.partition, offset = rec.offset, "record sent to the dead-letter topic");
                return true;
            }
            Err(e) => tracing::warn!(error = %e, "dead-letter publish failed; retrying"),
        }
        tokio::select! {
            _ = &mut *shutdown => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Decodes and re-validates a record: the topic may hold records from other producers.
fn decode(rec: &Record) -> Result<Message, String> {
    let payload = rec.payload.as_deref().ok_or("record has no payload")?;
    let m: Message =
        serde_json::from_slice(payload).map_err(|e| format!("not a wiber message: {e}"))?;
    validate(&NewMessage {
        from_user: m.from_user.clone(),
        to_user: m.to_user.clone(),
        content: m.content.clone(),
        message_id: Some(m.message_id.clone()),
    })
    .map_err(|e| format!("invalid message: {e}"))?;
    Ok(m)
}

/// Per partition, the offset after the highest record of `batch`: what to commit once
/// every record of the batch is stored or dead-lettered, so that everything below a
/// committed offset is durable.
fn positions(batch: &[Record]) -> Vec<Position> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for r in batch {
        let e = next.entry((r.topic.as_str(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic: topic.to_string(),
            partition,
            next_offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The loop itself is tested against a fake group (with a commit log) and a fake
    //! store in `tests/server/consumer.rs`, next to the API's tests, sharing their fakes
    //! with the seeded-bug tests.

    use super::*;

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            topic: "wiber.messages".into(),
            partition,
            offset,
            key: None,
            payload: None,
        }
    }

    fn at(partition: i32, next_offset: i64) -> Position {
        Position {
            topic: "wiber.messages".into(),
            partition,
            next_offset,
        }
    }

    #[test]
    fn positions_are_one_past_the_highest_offset_per_partition() {
        let batch = [record(2, 9), record(0, 4), record(2, 7), record(0, 5)];
        assert_eq!(positions(&batch), [at(0, 6), at(2, 10)]);
    }

    #[test]
    fn batches_wait_longer_only_when_records_come_fast() {
        let b = Batching {
            max_records: 500,
            linger: Duration::from_millis(20),
            busy_linger: Duration::from_millis(100),
            busy_rate: 1000,
            max_backoff: Duration::from_secs(5),
        };
        // 20 records in 20 ms is 1,000/s: busy.
        assert_eq!(b.busy_wait(20), Some(Duration::from_millis(100)));
        assert_eq!(b.busy_wait(19), None);
        assert_eq!(b.busy_wait(1), None);
        assert_eq!(Batching { busy_rate: 0, ..b }.busy_wait(500), None);
        let short = Batching {
            busy_linger: Duration::from_millis(20),
            ..b
        };
        assert_eq!(
            short.busy_wait(500),
            None,
            "no longer than the linger: nothing to extend"
        );
    }
}
