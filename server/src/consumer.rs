//! The consumer service: reads the topic as part of the group and stores messages.
//!
//! The loop keeps the delivery contract:
//! 1. gather a batch (up to `batch_size` records, or what arrives within `batch_linger`);
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
//! (implemented by [`Store`]), so the contract above is tested here without either.

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
    /// Cap of the back-off between retries of a failed write.
    pub max_backoff: Duration,
}

impl From<&ConsumerConfig> for Batching {
    fn from(cfg: &ConsumerConfig) -> Self {
        Batching {
            max_records: cfg.batch_size.max(1),
            linger: Duration::from_millis(cfg.batch_linger_ms),
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
        }
    }
}

/// Runs the consumer until `shutdown` resolves: connects to MongoDB and Kafka (waiting
/// for them), joins the group and runs [`consume`].
pub async fn run(cfg: ConsumerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
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
        let deadline = tokio::time::Instant::now() + batching.linger;
        while batch.len() < batching.max_records {
            match tokio::time::timeout_at(deadline, source.recv()).await {
                Ok(Ok(r)) => batch.push(r),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Err(_) => break,
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
    //! The loop against a fake group and a fake store (our own seams; the real adapters
    //! are exercised against real Kafka and FerretDB by the CLI's stack tests). Time is
    //! paused, so back-offs take no wall time and their lengths can be asserted.

    use std::collections::{BTreeSet, VecDeque};
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;
    use wiber_model::Message;

    use super::*;

    const TOPIC: &str = "wiber.messages";

    /// What the fakes saw, in order, with the (paused) time since the test began.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        WriteFailed {
            at_ms: u64,
        },
        Stored {
            at_ms: u64,
            inserted: Vec<String>,
            duplicates: Vec<String>,
        },
        DeadLettered {
            offset: i64,
            reason: String,
        },
        DeadLetterFailed {
            offset: i64,
        },
        Committed(Vec<Position>),
        Closed,
    }

    #[derive(Clone)]
    struct Log {
        start: Instant,
        events: Arc<Mutex<Vec<Event>>>,
    }

    impl Log {
        fn new() -> Log {
            Log {
                start: Instant::now(),
                events: Arc::default(),
            }
        }
        fn push(&self, e: Event) {
            self.events.lock().unwrap().push(e);
        }
        fn now_ms(&self) -> u64 {
            self.start.elapsed().as_millis() as u64
        }
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().clone()
        }
    }

    /// A group member holding `records`; when they are gone, `recv` waits forever (as a
    /// caught-up consumer does). The first `dlq_failures` dead-letter attempts fail.
    struct FakeSource {
        records: Mutex<VecDeque<Record>>,
        dlq_failures: Mutex<usize>,
        log: Log,
    }

    impl FakeSource {
        fn new(log: &Log, records: Vec<Record>) -> FakeSource {
            FakeSource {
                records: Mutex::new(records.into()),
                dlq_failures: Mutex::new(0),
                log: log.clone(),
            }
        }
    }

    impl RecordSource for FakeSource {
        type Error = String;

        fn recv(&self) -> impl Future<Output = Result<Record, String>> + Send {
            let next = self.records.lock().unwrap().pop_front();
            async move {
                match next {
                    Some(r) => Ok(r),
                    None => std::future::pending().await,
                }
            }
        }

        async fn dead_letter(&self, record: &Record, reason: &str) -> Result<(), String> {
            let mut failures = self.dlq_failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                self.log.push(Event::DeadLetterFailed {
                    offset: record.offset,
                });
                return Err("broker unavailable".into());
            }
            self.log.push(Event::DeadLettered {
                offset: record.offset,
                reason: reason.to_string(),
            });
            Ok(())
        }

        fn commit(&self, positions: &[Position]) {
            self.log.push(Event::Committed(positions.to_vec()));
        }

        fn close(&self) {
            self.log.push(Event::Closed);
        }
    }

    /// A collection with a unique `_id`; the first `failures` writes fail
    /// (`usize::MAX`: all of them).
    struct FakeStore {
        ids: Mutex<BTreeSet<String>>,
        failures: Mutex<usize>,
        log: Log,
    }

    impl FakeStore {
        fn new(log: &Log, failures: usize) -> FakeStore {
            FakeStore {
                ids: Mutex::default(),
                failures: Mutex::new(failures),
                log: log.clone(),
            }
        }
    }

    impl MessageStore for FakeStore {
        type Error = String;

        async fn insert_batch(&self, batch: &[StoredMessage]) -> Result<InsertOutcome, String> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                self.log.push(Event::WriteFailed {
                    at_ms: self.log.now_ms(),
                });
                return Err("not primary".into());
            }
            let mut ids = self.ids.lock().unwrap();
            let (mut inserted, mut duplicates) = (Vec::new(), Vec::new());
            for m in batch {
                if ids.insert(m.id.clone()) {
                    inserted.push(m.id.clone());
                } else {
                    duplicates.push(m.id.clone());
                }
            }
            self.log.push(Event::Stored {
                at_ms: self.log.now_ms(),
                inserted: inserted.clone(),
                duplicates: duplicates.clone(),
            });
            Ok(InsertOutcome {
                inserted: inserted.len(),
                duplicates,
            })
        }
    }

    fn record(partition: i32, offset: i64, payload: Option<Vec<u8>>) -> Record {
        Record {
            topic: TOPIC.into(),
            partition,
            offset,
            key: Some(b"alice\x1fbob".to_vec()),
            payload,
        }
    }

    /// A well-formed record whose message id is `id`.
    fn message(partition: i32, offset: i64, id: &str) -> Record {
        let m = Message {
            message_id: id.into(),
            from_user: "alice".into(),
            to_user: "bob".into(),
            content: format!("message {id}"),
            timestamp: 1_758_865_780_040,
            created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
        };
        record(partition, offset, Some(serde_json::to_vec(&m).unwrap()))
    }

    fn at(partition: i32, next_offset: i64) -> Position {
        Position {
            topic: TOPIC.into(),
            partition,
            next_offset,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const BATCHING: Batching = Batching {
        max_records: 500,
        linger: Duration::from_millis(20),
        max_backoff: Duration::from_millis(250),
    };

    /// Runs the loop until the (paused) clock reaches `stop_after`.
    async fn run_until(source: &FakeSource, store: &FakeStore, stop_after: Duration) {
        consume(source, store, BATCHING, tokio::time::sleep(stop_after)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_are_committed_only_after_the_batch_is_written() {
        let log = Log::new();
        let source = FakeSource::new(
            &log,
            vec![
                message(0, 0, "a"),
                message(1, 5, "b"),
                message(0, 1, "c"),
                message(0, 2, "d"),
            ],
        );
        // The store refuses four writes: the batch is retried with doubling back-off
        // capped at 250 ms (100, 200, 250, 250), and nothing is committed meanwhile.
        let store = FakeStore::new(&log, 4);
        run_until(&source, &store, Duration::from_secs(10)).await;
        assert_eq!(
            log.events(),
            [
                Event::WriteFailed { at_ms: 20 },
                Event::WriteFailed { at_ms: 120 },
                Event::WriteFailed { at_ms: 320 },
                Event::WriteFailed { at_ms: 570 },
                Event::Stored {
                    at_ms: 820,
                    inserted: ids(&["a", "b", "c", "d"]),
                    duplicates: vec![],
                },
                Event::Committed(vec![at(0, 3), at(1, 6)]),
                Event::Closed,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn redeliveries_are_de_duplication_hits_not_failures() {
        let log = Log::new();
        let source = FakeSource::new(
            &log,
            vec![message(0, 7, "a"), message(0, 8, "b"), message(0, 9, "c")],
        );
        // `a` and `b` were stored before a crash that lost the commit.
        let store = FakeStore::new(&log, 0);
        store.ids.lock().unwrap().extend(ids(&["a", "b"]));
        run_until(&source, &store, Duration::from_secs(10)).await;
        assert_eq!(
            log.events(),
            [
                Event::Stored {
                    at_ms: 20,
                    inserted: ids(&["c"]),
                    duplicates: ids(&["a", "b"]),
                },
                Event::Committed(vec![at(0, 10)]),
                Event::Closed,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn undecodable_records_go_to_the_dead_letter_topic_then_are_committed() {
        let log = Log::new();
        let mut invalid = serde_json::to_value(Message {
            message_id: "x".into(),
            from_user: String::new(),
            to_user: "bob".into(),
            content: "hi".into(),
            timestamp: 1,
            created_at: wiber_model::rfc3339_ms(1),
        })
        .unwrap();
        invalid["fromUser"] = "".into();
        let source = FakeSource::new(
            &log,
            vec![
                message(0, 0, "a"),
                record(0, 1, Some(b"not json".to_vec())),
                record(0, 2, Some(serde_json::to_vec(&invalid).unwrap())),
                message(0, 3, "b"),
                // The last record of the batch: its offset must be committed too.
                record(0, 4, None),
            ],
        );
        // The broker refuses the first dead-letter publish: it is retried, not dropped.
        *source.dlq_failures.lock().unwrap() = 1;
        let store = FakeStore::new(&log, 0);
        run_until(&source, &store, Duration::from_secs(10)).await;
        let events = log.events();
        let reasons: Vec<(i64, &str)> = events
            .iter()
            .filter_map(|e| match e {
                Event::DeadLettered { offset, reason } => Some((*offset, reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [1, 2, 4],
            "{events:#?}"
        );
        assert!(
            reasons[0].1.starts_with("not a wiber message"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].1.starts_with("invalid message: fromUser"),
            "{reasons:?}"
        );
        assert_eq!(reasons[2].1, "record has no payload");
        assert_eq!(events[0], Event::DeadLetterFailed { offset: 1 });
        // Dead-lettered and stored first, committed after, up to the last record.
        assert_eq!(
            events[4..],
            [
                Event::Stored {
                    at_ms: 220,
                    inserted: ids(&["a", "b"]),
                    duplicates: vec![],
                },
                Event::Committed(vec![at(0, 5)]),
                Event::Closed,
            ],
            "{events:#?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_finishes_the_batch_in_hand_then_commits_and_leaves() {
        let log = Log::new();
        let source = FakeSource::new(&log, vec![message(0, 0, "a"), message(0, 1, "b")]);
        let store = FakeStore::new(&log, 0);
        // Shutdown comes at 5 ms, while the batch is still gathering (linger 20 ms).
        run_until(&source, &store, Duration::from_millis(5)).await;
        assert_eq!(
            log.events(),
            [
                Event::Stored {
                    at_ms: 20,
                    inserted: ids(&["a", "b"]),
                    duplicates: vec![],
                },
                Event::Committed(vec![at(0, 2)]),
                Event::Closed,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_writes_fail_leaves_the_batch_uncommitted() {
        let log = Log::new();
        let source = FakeSource::new(&log, vec![message(0, 0, "a")]);
        let store = FakeStore::new(&log, usize::MAX);
        run_until(&source, &store, Duration::from_millis(1000)).await;
        let events = log.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Committed(_))),
            "{events:#?}"
        );
        assert_eq!(events.last(), Some(&Event::Closed));
        // Still retrying when shutdown came (at 20, 120, 320, 570, 820 ms).
        assert_eq!(events.len(), 6, "{events:#?}");
    }

    #[test]
    fn positions_are_one_past_the_highest_offset_per_partition() {
        let batch = [
            record(2, 9, None),
            record(0, 4, None),
            record(2, 7, None),
            record(0, 5, None),
        ];
        assert_eq!(positions(&batch), [at(0, 6), at(2, 10)]);
    }
}
