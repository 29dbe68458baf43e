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

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use wiber_model::{now_ms, validate, Message, NewMessage};

use crate::config::{instance_name, ConsumerConfig};
use crate::kafka;
use crate::store::{Incoming, Store};

/// Runs the consumer until `shutdown` resolves.
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
    let consumer = kafka::group_consumer(&cfg, &instance)?;
    consumer
        .subscribe(&[&cfg.kafka.topic])
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {}: {e}", cfg.kafka.topic))?;
    let dlq = kafka::dlq_producer(&cfg.kafka)?;
    tracing::info!(%instance, group = %cfg.group, topic = %cfg.kafka.topic, "consumer started");

    let worker = Worker {
        cfg: &cfg,
        store: &store,
        dlq: &dlq,
        dlq_topic: cfg.kafka.dlq_topic(),
    };
    let linger = Duration::from_millis(cfg.batch_linger_ms);
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let first = match first {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < cfg.batch_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Err(_) => break,
            }
        }
        match worker.process(&batch, &mut shutdown).await {
            Processed::Done => commit(&consumer, &batch, CommitMode::Async),
            // Shutdown arrived while a write was failing: leave without committing; the
            // batch is redelivered to whoever owns the partitions next.
            Processed::Abandoned => break,
        }
    }
    // Final synchronous commit of the stored offsets the async commits may not have
    // delivered yet, so the next owner of these partitions starts where we stopped.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::info!(error = %e, "final commit had nothing to commit or failed; records will be redelivered");
    }
    consumer.unsubscribe();
    tracing::info!(%instance, "consumer stopped");
    Ok(())
}

enum Processed {
    Done,
    Abandoned,
}

struct Worker<'a> {
    cfg: &'a ConsumerConfig,
    store: &'a Store,
    dlq: &'a kafka::DlqProducer,
    dlq_topic: String,
}

impl Worker<'_> {
    async fn process(
        &self,
        batch: &[OwnedMessage],
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Processed {
        let mut good = Vec::with_capacity(batch.len());
        for rec in batch {
            match decode(rec) {
                Ok(message) => good.push(Incoming {
                    message,
                    partition: rec.partition(),
                    offset: rec.offset(),
                }),
                Err(reason) => {
                    if !self.dead_letter(rec, &reason, shutdown).await {
                        return Processed::Abandoned;
                    }
                }
            }
        }
        let mut backoff = Duration::from_millis(100);
        let max_backoff = Duration::from_millis(self.cfg.max_backoff_ms);
        for attempt in 1u64.. {
            match self.store.insert_batch(&good, now_ms()).await {
                Ok(o) => {
                    for m in &good {
                        tracing::debug!(message_id = %m.message.message_id, partition = m.partition, offset = m.offset, "stored");
                    }
                    tracing::info!(
                        records = batch.len(),
                        inserted = o.inserted,
                        duplicates = o.duplicates,
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
            backoff = (backoff * 2).min(max_backoff);
        }
        unreachable!("the retry loop only returns")
    }

    /// Publishes an undecodable record to the dead-letter topic, retrying until Kafka
    /// acknowledges it (false: shutdown came first and the record stays uncommitted).
    async fn dead_letter(
        &self,
        rec: &OwnedMessage,
        reason: &str,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let (partition, offset) = (rec.partition().to_string(), rec.offset().to_string());
        let mut backoff = Duration::from_millis(200);
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "wiber-dlq-reason",
                    value: Some(reason),
                })
                .insert(Header {
                    key: "wiber-source-topic",
                    value: Some(rec.topic()),
                })
                .insert(Header {
                    key: "wiber-source-partition",
                    value: Some(&partition),
                })
                .insert(Header {
                    key: "wiber-source-offset",
                    value: Some(&offset),
                });
            let mut out = FutureRecord::to(&self.dlq_topic).headers(headers);
            if let Some(k) = rec.key() {
                out = out.key(k);
            }
            if let Some(p) = rec.payload() {
                out = out.payload(p);
            }
            match self
                .dlq
                .send(out, Timeout::After(Duration::from_secs(30)))
                .await
            {
                Ok(_) => {
                    tracing::warn!(%reason, partition = rec.partition(), offset = rec.offset(), "record sent to the dead-letter topic");
                    return true;
                }
                Err((e, _)) => tracing::warn!(error = %e, "dead-letter publish failed; retrying"),
            }
            tokio::select! {
                _ = &mut *shutdown => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Decodes and re-validates a record: the topic may hold records from other producers.
fn decode(rec: &OwnedMessage) -> Result<Message, String> {
    let payload = rec.payload().ok_or("record has no payload")?;
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

/// Stores, per partition, the offset after the highest record of the batch and commits
/// the stored offsets. The batch was fully written before this is called, so every record
/// below a committed offset is durable. Partitions revoked meanwhile are refused by the
/// store call: their new owner re-reads and de-duplicates.
fn commit(consumer: &kafka::GroupConsumer, batch: &[OwnedMessage], mode: CommitMode) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::error!(error = %e, topic, partition, "cannot build the commit list");
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::info!(error = %e, "offsets not stored (partitions reassigned?); they will be redelivered");
    }
    if let Err(e) = consumer.commit_consumer_state(mode) {
        // Not fatal: an uncommitted, stored batch is redelivered and de-duplicated.
        tracing::warn!(error = %e, "offset commit failed; the batch will be redelivered");
    }
}
