//! The consumer service: reads the topic as part of the group and stores messages.
//!
//! The loop keeps the delivery contract:
//! 1. gather a batch (up to `batch_size` records, or what arrives within `batch_linger`,
//!    or within `busy_linger` when records come fast: [`Batching::busy_wait`]);
//! 2. records that cannot be decoded go to the dead-letter topic with the reason
//!    (awaiting Kafka's ack), so nothing is silently dropped;
//! 3. the rest are written with one unordered `insert_many`; duplicate keys are
//!    de-duplication hits, unless the stored message has other content (an id reused:
//!    a conflict, dead-lettered); a failure the store calls permanent (it refuses these
//!    documents: retrying cannot help, [`FailureClass::Permanent`]) splits the batch in
//!    halves until the refused records are isolated, and those go to the dead-letter
//!    topic with the store's error while the rest is written; any other failure is
//!    retried with capped back-off, never skipped (an unknown class counts as transient:
//!    nothing is dropped on a guess);
//! 4. only then are the batch's offsets committed: everything at or below a committed
//!    offset is durable or dead-lettered, so a crash anywhere above means redelivery,
//!    never loss.
//!
//! A batch that has not advanced for [`Recovery::stall_after`] is *stalled*: the loop says
//! so in an error log naming the partitions, offsets, attempts and the error, and in the
//! group's committed offsets (the offset it is stuck at, with a
//! [`wiber_model::contract::StallReport`] as metadata), where `stack status`, `top` and
//! `verify` read it. A record retried past [`Recovery::retry_bound`] is reported again,
//! louder: it is still retried.
//!
//! On SIGTERM it stops fetching, finishes (or abandons, uncommitted) the batch in hand,
//! commits synchronously and leaves the group.
//!
//! The loop ([`consume`]) sees Kafka and MongoDB only through two seams,
//! [`RecordSource`] (implemented by `kafka::GroupRecords`) and [`MessageStore`]
//! (implemented by `store::Store`), defined in [`crate::seams`], so the contract above
//! is tested without either (`tests/server/consumer.rs`, with a fake group whose commits
//! are logged). `wiring::run_consumer` puts the real ones behind it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use wiber_model::contract::{dlq, StallReport};
use wiber_model::{now_ms, validate_shape, Message, NewMessage, StoredMessage};

use crate::config::{instance_name, ConsumerConfig};
pub use crate::seams::{
    Classify, FailureClass, InsertOutcome, MessageStore, Position, Record, RecordSource,
};

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

/// How the loop deals with writes that keep failing.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// This member's name in stall reports, e.g. `consumer#2`.
    pub instance: String,
    /// A batch that has not advanced for this long is reported stalled.
    pub stall_after: Duration,
    /// A write retried this long, or [`Recovery::retry_bound_attempts`] times, for an
    /// error that is not known to be transient is reported loudly (and retried on).
    pub retry_bound: Duration,
    pub retry_bound_attempts: u64,
    /// Split a batch the store refuses until the refused records are isolated and
    /// dead-letter them. Always on, except in the test build's seeded bug
    /// `retry-forever`, which shows the harness catching a consumer without it.
    pub isolate_refused: bool,
}

impl Recovery {
    /// The defaults of the service contract, for `instance`.
    pub fn new(instance: &str) -> Recovery {
        use wiber_model::contract::defaults;
        Recovery {
            instance: instance.to_string(),
            stall_after: Duration::from_millis(defaults::STALL_AFTER_MS),
            retry_bound: Duration::from_millis(defaults::RETRY_BOUND_MS),
            retry_bound_attempts: defaults::RETRY_BOUND_ATTEMPTS,
            isolate_refused: true,
        }
    }
}

impl From<&ConsumerConfig> for Recovery {
    fn from(cfg: &ConsumerConfig) -> Self {
        Recovery {
            instance: instance_name("consumer"),
            stall_after: Duration::from_millis(cfg.stall_after_ms),
            retry_bound: Duration::from_millis(cfg.retry_bound_ms),
            retry_bound_attempts: cfg.retry_bound_attempts.max(1),
            isolate_refused: true,
        }
    }
}

/// The consumer loop, until `shutdown` resolves: gather a batch, dead-letter what does
/// not decode, store the rest (isolating what the store refuses), and only then commit
/// the batch's offsets. Then a final commit and leave the group.
pub async fn consume<S: RecordSource, M: MessageStore>(
    source: &S,
    store: &M,
    batching: Batching,
    recovery: &Recovery,
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
        let mut batch_loop = BatchLoop {
            source,
            store,
            batching: &batching,
            recovery,
            batch: &batch,
            shutdown: &mut shutdown,
            stall: Stall::new(),
        };
        match batch_loop.process().await {
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

/// How one sub-batch's write ended.
enum Written {
    Stored(InsertOutcome),
    /// The store refused it for good, with its error.
    Refused(String),
    Abandoned,
}

/// How long the batch in hand has been failing, and what has been said about it.
struct Stall {
    /// When the first write of the batch failed (None: none has failed).
    since: Option<tokio::time::Instant>,
    since_ms: i64,
    attempts: u64,
    /// When the stall was last reported (log and offsets), to repeat it every
    /// `stall_after` rather than on every attempt.
    reported: Option<tokio::time::Instant>,
    bound_reported: bool,
}

impl Stall {
    fn new() -> Stall {
        Stall {
            since: None,
            since_ms: 0,
            attempts: 0,
            reported: None,
            bound_reported: false,
        }
    }
}

/// One batch on its way to the store: decoded, written, refused records isolated,
/// conflicts found, everything dead-lettered that must be.
struct BatchLoop<'a, S, M, F> {
    source: &'a S,
    store: &'a M,
    batching: &'a Batching,
    recovery: &'a Recovery,
    batch: &'a [Record],
    shutdown: &'a mut F,
    stall: Stall,
}

impl<S, M, F> BatchLoop<'_, S, M, F>
where
    S: RecordSource,
    M: MessageStore,
    F: Future<Output = ()> + Unpin,
{
    /// Dead-letters the undecodable records of the batch and stores the rest, retrying
    /// until all are done (or shutdown comes first: `Abandoned`, nothing committed).
    async fn process(&mut self) -> Processed {
        // (the record, its document)
        let mut good: Vec<(&Record, StoredMessage)> = Vec::with_capacity(self.batch.len());
        for rec in self.batch {
            match decode(rec) {
                // `storedAt` is set per attempt.
                Ok(message) => good.push((
                    rec,
                    StoredMessage::new(message, 0, rec.partition, rec.offset),
                )),
                Err(reason) => {
                    if !self
                        .dead_letter(rec, dlq::Class::Undecodable, &reason)
                        .await
                    {
                        return Processed::Abandoned;
                    }
                }
            }
        }
        // Sub-batches still to write, the next on top. A refused one is split in halves,
        // so k refused records among n cost about 2·k·log2(n) extra writes, and the rest
        // of the batch is written at full size.
        let mut pending = vec![good];
        while let Some(mut part) = pending.pop() {
            if part.is_empty() {
                continue;
            }
            match self.write(&mut part).await {
                Written::Stored(o) => {
                    if !o.duplicates.is_empty() && !self.check_conflicts(&part, &o).await {
                        return Processed::Abandoned;
                    }
                    for id in &o.duplicates {
                        tracing::debug!(message_id = %id, "already stored (redelivery): de-duplicated");
                    }
                    tracing::info!(
                        records = part.len(),
                        inserted = o.inserted,
                        duplicates = o.duplicates.len(),
                        "batch stored"
                    );
                }
                Written::Refused(error) if part.len() > 1 => {
                    tracing::warn!(%error, records = part.len(), "the store refused the batch; splitting it to isolate the refused records");
                    let second = part.split_off(part.len() / 2);
                    pending.push(second);
                    pending.push(part);
                }
                Written::Refused(error) => {
                    let (rec, m) = &part[0];
                    tracing::error!(message_id = %m.message_id, partition = rec.partition, offset = rec.offset, %error, "the store refused the message; dead-lettering it");
                    if !self.dead_letter(rec, dlq::Class::Refused, &error).await {
                        return Processed::Abandoned;
                    }
                }
                Written::Abandoned => return Processed::Abandoned,
            }
        }
        Processed::Done
    }

    /// Writes `part`, retrying failures that are not permanent with capped back-off.
    async fn write(&mut self, part: &mut [(&Record, StoredMessage)]) -> Written {
        let mut backoff = Duration::from_millis(100);
        loop {
            // `storedAt` is the time of the attempt that succeeds, so end-to-end latency
            // (send → storedAt) includes the time spent retrying.
            let stored_at = now_ms();
            for (_, m) in part.iter_mut() {
                m.stored_at = stored_at;
            }
            let docs: Vec<StoredMessage> = part.iter().map(|(_, m)| m.clone()).collect();
            let error = match self.store.insert_batch(&docs).await {
                Ok(o) => return Written::Stored(o),
                Err(e) => e,
            };
            let class = error.class();
            if class == FailureClass::Permanent && self.recovery.isolate_refused {
                return Written::Refused(error.to_string());
            }
            self.failed(part, &error.to_string(), class);
            tracing::warn!(error = %error, ?class, attempt = self.stall.attempts, records = part.len(), "store write failed; retrying");
            tokio::select! {
                _ = &mut *self.shutdown => return Written::Abandoned,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.batching.max_backoff);
        }
    }

    /// Counts a failed attempt at `part`, and reports a stall (and a record retried past
    /// its bound) when it is time to.
    fn failed(&mut self, part: &[(&Record, StoredMessage)], error: &str, class: FailureClass) {
        let now = tokio::time::Instant::now();
        let stall = &mut self.stall;
        stall.attempts += 1;
        let since = *stall.since.get_or_insert_with(|| {
            stall.since_ms = now_ms();
            now
        });
        let stuck_for = now - since;
        let due = match stall.reported {
            None => stuck_for >= self.recovery.stall_after,
            Some(last) => now - last >= self.recovery.stall_after,
        };
        if due {
            stall.reported = Some(now);
            let stalls = stuck_at(part)
                .into_iter()
                .map(|p| {
                    let offset = p.next_offset;
                    let report = StallReport {
                        instance: self.recovery.instance.clone(),
                        offset,
                        since_ms: stall.since_ms,
                        attempts: stall.attempts,
                        error: error.to_string(),
                    };
                    tracing::error!(
                        partition = p.partition,
                        offset,
                        attempts = stall.attempts,
                        stalled_for_s = stuck_for.as_secs(),
                        %error,
                        "partition stalled: its records cannot be stored"
                    );
                    (p, report)
                })
                .collect::<Vec<_>>();
            self.source.report_stall(&stalls);
        }
        let past_bound = stuck_for >= self.recovery.retry_bound
            || stall.attempts >= self.recovery.retry_bound_attempts;
        if past_bound && class != FailureClass::Transient && !stall.bound_reported {
            stall.bound_reported = true;
            let first = &part[0];
            tracing::error!(
                records = part.len(),
                message_id = %first.1.message_id,
                partition = first.0.partition,
                offset = first.0.offset,
                attempts = stall.attempts,
                retried_for_s = stuck_for.as_secs(),
                ?class,
                %error,
                "RETRY BOUND PASSED: a write failing with an error of unknown class is still \
                 being retried; nothing is dropped, but its partitions are stalled until the \
                 store takes it or an operator acts (see `wiberctl stack status`)"
            );
        }
    }

    /// Holds the de-duplication hits of a written sub-batch to what is stored: the same
    /// message (a redelivery, or a client's retry: same users and content) is a hit; other
    /// content under the same id is a conflict, dead-lettered. False: shutdown came first.
    async fn check_conflicts(
        &mut self,
        part: &[(&Record, StoredMessage)],
        outcome: &InsertOutcome,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        let stored = loop {
            match self.store.stored(&outcome.duplicates).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the stored copies of duplicates; retrying")
                }
            }
            tokio::select! {
                _ = &mut *self.shutdown => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.batching.max_backoff);
        };
        let stored: BTreeMap<&str, &StoredMessage> =
            stored.iter().map(|m| (m.id.as_str(), m)).collect();
        for id in &outcome.duplicates {
            let Some(kept) = stored.get(id.as_str()) else {
                continue;
            };
            // Every copy of this id in the part (a batch can hold a client's retry too).
            for (rec, m) in part.iter().filter(|(_, m)| &m.id == id) {
                if same_message(kept, m) {
                    continue;
                }
                let reason = format!(
                    "conflict: messageId {id:?} is already stored with other content (stored \
                     from {:?} to {:?}, {} characters, partition {} offset {}); this record \
                     (from {:?} to {:?}, {} characters) is kept here, not stored",
                    kept.from_user,
                    kept.to_user,
                    kept.content.chars().count(),
                    kept.partition,
                    kept.offset,
                    m.from_user,
                    m.to_user,
                    m.content.chars().count()
                );
                tracing::error!(message_id = %id, partition = rec.partition, offset = rec.offset, "messageId reused with other content: dead-lettering the record as a conflict");
                if !self.dead_letter(rec, dlq::Class::Conflict, &reason).await {
                    return false;
                }
            }
        }
        true
    }

    async fn dead_letter(&mut self, rec: &Record, class: dlq::Class, reason: &str) -> bool {
        dead_letter(self.source, rec, class, reason, self.shutdown).await
    }
}

/// Whether a stored message and a record's are the same message: users and content (the
/// timestamp differs between a client's retries, which the API accepts anew).
fn same_message(a: &StoredMessage, b: &StoredMessage) -> bool {
    a.from_user == b.from_user && a.to_user == b.to_user && a.content == b.content
}

/// Per partition, the lowest offset of `part`: where the partition is stuck.
fn stuck_at(part: &[(&Record, StoredMessage)]) -> Vec<Position> {
    let mut low: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (r, _) in part {
        let e = low
            .entry((r.topic.as_str(), r.partition))
            .or_insert(r.offset);
        *e = (*e).min(r.offset);
    }
    low.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic: topic.to_string(),
            partition,
            next_offset,
        })
        .collect()
}

/// Publishes a record to the dead-letter topic, retrying until Kafka acknowledges it
/// (false: shutdown came first and the record stays uncommitted).
async fn dead_letter<S: RecordSource>(
    source: &S,
    rec: &Record,
    class: dlq::Class,
    reason: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match source.dead_letter(rec, class, reason).await {
            Ok(()) => {
                tracing::warn!(%class, %reason, partition = rec.partition, offset = rec.offset, "record sent to the dead-letter topic");
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
/// Not the store's rule ([`wiber_model::store_cannot_hold`]): the store says itself what it
/// refuses, and a refused record is isolated and dead-lettered with its error.
fn decode(rec: &Record) -> Result<Message, String> {
    let payload = rec.payload.as_deref().ok_or("record has no payload")?;
    let m: Message =
        serde_json::from_slice(payload).map_err(|e| format!("not a wiber message: {e}"))?;
    validate_shape(&NewMessage {
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

    fn doc(rec: &Record, from: &str, content: &str) -> StoredMessage {
        let m = Message::accept(
            NewMessage {
                from_user: from.into(),
                to_user: "bob".into(),
                content: content.into(),
                message_id: Some(format!("m{}", rec.offset)),
            },
            format!("m{}", rec.offset),
            1,
        );
        StoredMessage::new(m, 0, rec.partition, rec.offset)
    }

    #[test]
    fn a_stuck_part_is_stuck_at_its_lowest_offset_per_partition() {
        let recs = [record(2, 9), record(0, 4), record(2, 7)];
        let part: Vec<(&Record, StoredMessage)> =
            recs.iter().map(|r| (r, doc(r, "alice", "x"))).collect();
        assert_eq!(stuck_at(&part), [at(0, 4), at(2, 7)]);
    }

    #[test]
    fn the_same_message_is_users_and_content_not_the_timestamp() {
        let r = record(0, 1);
        let a = doc(&r, "alice", "hello");
        let mut retry = a.clone();
        retry.timestamp += 500;
        assert!(
            same_message(&a, &retry),
            "a client's retry is the same message"
        );
        assert!(!same_message(&a, &doc(&r, "alice", "other")));
        assert!(!same_message(&a, &doc(&r, "carol", "hello")));
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
