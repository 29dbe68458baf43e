//! Kafka adapter: the only module that touches rdkafka. It creates the topics, publishes
//! messages with the delivery contract (acks=all, idempotent, bounded timeout, key = the
//! conversation) and runs the consumer's side of the group. Domain code sees
//! [`Publisher`] through the [`Publish`] seam and [`GroupRecords`] through the
//! [`RecordSource`] seam ([`crate::seams`]), never rdkafka types.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use futures::future::BoxFuture;

use crate::config::{ConsumerConfig, KafkaConfig};
use crate::seams::{Delivered, Lane, Position, Publish, PublishError, Record, RecordSource};
use wiber_model::contract::{dlq, StallReport};

/// librdkafka's callbacks for our clients. It notices when every broker connection is
/// down, so the API can answer 503 at once instead of holding each POST for the whole
/// message timeout during an outage; and it reports that state at most every 30 s instead
/// of on every reconnect attempt (several lines a second otherwise).
#[derive(Clone, Default)]
pub struct KafkaContext {
    brokers_down: Arc<AtomicBool>,
    last_down_log_ms: Arc<AtomicI64>,
}

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_down.store(true, Ordering::SeqCst);
            let now = wiber_model::now_ms();
            let last = self.last_down_log_ms.load(Ordering::Relaxed);
            if now - last >= 30_000 {
                self.last_down_log_ms.store(now, Ordering::Relaxed);
                tracing::error!(%reason, "all kafka brokers are down");
            }
        } else {
            tracing::error!(error = %error, %reason, "kafka client error");
        }
    }
}

impl ConsumerContext for KafkaContext {}

type WiberProducer = FutureProducer<KafkaContext>;

type GroupConsumer = StreamConsumer<KafkaContext>;

/// One librdkafka producer and the config it was made from. An idempotent producer that
/// hits a fatal error (librdkafka then refuses every later record) is replaced by a fresh
/// one, so a long broker outage does not leave the API failing forever after Kafka returns.
struct LaneProducer {
    inner: RwLock<WiberProducer>,
    config: ClientConfig,
}

impl LaneProducer {
    fn new(config: ClientConfig, context: &KafkaContext) -> anyhow::Result<LaneProducer> {
        Ok(LaneProducer {
            inner: RwLock::new(create_producer(&config, context)?),
            config,
        })
    }

    fn producer(&self) -> WiberProducer {
        self.inner.read().expect("producer lock").clone()
    }

    fn replace_if_fatal(&self, failed: &WiberProducer, context: &KafkaContext) {
        if let Some((code, reason)) = failed.client().fatal_error() {
            tracing::error!(?code, %reason, "kafka producer hit a fatal error; replacing it");
            match create_producer(&self.config, context) {
                Ok(p) => *self.inner.write().expect("producer lock") = p,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not recreate the kafka producer")
                }
            }
        }
    }
}

/// How the API's publisher batches: the producer settings that trade latency for
/// throughput, and when each lane serves.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// `linger.ms` of the batching lane.
    pub linger_ms: u64,
    /// Produce requests in flight per broker connection, both lanes.
    pub max_in_flight: u32,
    /// The prompt lane (no linger) serves while the API publishes fewer records per
    /// second than this; 0 turns it off (every record lingers).
    pub prompt_max_rate: u64,
    /// `acks`: `all` with idempotence (the contract), or `1` without (the unsafe profile;
    /// librdkafka refuses idempotence with anything but `all`).
    pub acks: wiber_model::contract::Acks,
}

/// Publishes records with acks=all and idempotence, through one of two producers
/// ("lanes") chosen per record by the API's publish rate ([`RateGauge`]):
///
/// - **prompt** (`linger.ms` = 0): while the API publishes fewer records per second than
///   `prompt_max_rate` (light load), a record goes out at once instead of waiting
///   `linger.ms` for company that is not coming; that wait was most of the ack latency
///   at 200 req/s.
/// - **batching** (`linger.ms` = the configured value): under load, records wait a few
///   ms and go out together, which is what keeps 5,000 req/s cheap for the broker.
///
/// Why two producers and not one with a small linger: librdkafka's linger cannot change
/// at run time, and any fixed value either taxes light load or heavy load (measured in
/// `contract::defaults::PROMPT_MAX_RATE`). The switch is by rate, not by publishes in
/// flight: under load, acknowledgements come back a batch at a time, so the count in
/// flight drops to near zero many times a second and would send bursts of single-record
/// requests down the prompt lane exactly when batching matters.
///
/// Ordering is kept where the contract promises it: within a conversation whose sends are sequential, each message is acknowledged, so
/// already in the partition's log, before the next is produced, whichever lane either
/// took. Concurrent sends to one conversation were never ordered (their order is the
/// log's, as before). Idempotence is per producer: each lane deduplicates its own
/// retries, and the store deduplicates by messageId across both.
#[derive(Clone)]
pub struct Publisher {
    prompt: Arc<LaneProducer>,
    batching: Arc<LaneProducer>,
    rate: Arc<RateGauge>,
    prompt_max_rate: u64,
    context: KafkaContext,
    timeout: Duration,
}

/// Publishes per second, over the last 100–200 ms: a count per 100 ms window, the
/// current and the previous one (atomics only: it is on every request's path; a race at
/// a window's turn costs a miscount of one, which a heuristic can afford).
#[derive(Debug, Default)]
pub struct RateGauge {
    window: AtomicI64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl RateGauge {
    const WINDOW_MS: i64 = 100;

    /// Counts one publish at `now_ms` and returns the rate (per second) it is part of:
    /// the busier of this window and the previous one, so a lull of one window does not
    /// switch lanes back and forth under steady load.
    pub fn tick(&self, now_ms: i64) -> u64 {
        let w = now_ms / Self::WINDOW_MS;
        let seen = self.window.load(Ordering::Relaxed);
        if w != seen
            && self
                .window
                .compare_exchange(seen, w, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // The window that just closed is the previous one only if it was the last.
            let closed = self.current.swap(0, Ordering::Relaxed);
            self.previous
                .store(if w == seen + 1 { closed } else { 0 }, Ordering::Relaxed);
        }
        let current = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        current.max(self.previous.load(Ordering::Relaxed)) * (1000 / Self::WINDOW_MS) as u64
    }
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        message_timeout: Duration,
        batching: Batching,
    ) -> anyhow::Result<Self> {
        if batching.acks != wiber_model::contract::Acks::All {
            tracing::warn!(
                acks = batching.acks.as_str(),
                "UNSAFE producer profile: the partition leader alone acknowledges a record; \
                 acknowledged messages are lost if it fails before its followers copy them"
            );
        }
        let lane_config = |linger_ms: u64, lane: &str| {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", &kafka.bootstrap_servers)
                .set("acks", batching.acks.as_str())
                .set(
                    "enable.idempotence",
                    (batching.acks == wiber_model::contract::Acks::All).to_string(),
                )
                .set(
                    "message.timeout.ms",
                    message_timeout.as_millis().to_string(),
                )
                .set("linger.ms", linger_ms.to_string())
                .set(
                    "max.in.flight.requests.per.connection",
                    batching.max_in_flight.to_string(),
                )
                .set("compression.type", "lz4")
                // Small produce requests pipelined on one connection must not wait for
                // the broker's delayed ACK (Nagle): that is tens of ms at light load.
                .set("socket.nagle.disable", "true")
                // The broker thread checks message timeouts between reconnect attempts; with
                // the default 10 s reconnect back-off a POST during an outage waited ~10 s
                // instead of message.timeout.ms. 1 s keeps the bound honest and recovery quick.
                .set("reconnect.backoff.max.ms", "1000")
                .set("client.id", format!("wiber-api-{lane}"));
            config
        };
        let context = KafkaContext::default();
        let publisher = Publisher {
            prompt: Arc::new(LaneProducer::new(lane_config(0, "prompt"), &context)?),
            batching: Arc::new(LaneProducer::new(
                lane_config(batching.linger_ms, "batching"),
                &context,
            )?),
            rate: Arc::default(),
            prompt_max_rate: batching.prompt_max_rate,
            context,
            timeout: message_timeout,
        };
        publisher.spawn_recovery_probe();
        Ok(publisher)
    }

    /// While the brokers are marked down, asks for cluster metadata every 500 ms and
    /// clears the mark as soon as a broker answers. Must be called inside a tokio runtime.
    fn spawn_recovery_probe(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !this.context.brokers_down.load(Ordering::SeqCst) {
                    continue;
                }
                let producer = this.batching.producer();
                let up = tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(None, Timeout::After(Duration::from_secs(1)))
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                if up && this.context.brokers_down.swap(false, Ordering::SeqCst) {
                    tracing::info!("a kafka broker answers again; accepting messages");
                }
            }
        });
    }

    /// Sends `payload` under `key` and waits for the broker's acknowledgement
    /// (all in-sync replicas), at most the configured message timeout.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        correlation_id: &str,
    ) -> Result<Delivered, PublishError> {
        if self.context.brokers_down.load(Ordering::SeqCst) {
            return Err(PublishError::BrokersDown);
        }
        let rate = self.rate.tick(wiber_model::now_ms());
        let (lane, lane_name) = if rate < self.prompt_max_rate {
            (&self.prompt, Lane::Prompt)
        } else {
            (&self.batching, Lane::Batching)
        };
        let producer = lane.producer();
        let headers = OwnedHeaders::new().insert(Header {
            key: "wiber-correlation-id",
            value: Some(correlation_id),
        });
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        // The queue timeout bounds the wait for room in librdkafka's local queue; the
        // message timeout (set in the config) bounds the wait for the broker's ack. The
        // outer timeout is a backstop so the HTTP answer is bounded whatever librdkafka
        // does; a record it abandons may still be delivered later (an `unknown` outcome
        // for the client, never a 200 without an ack).
        let hard_bound = self.timeout + Duration::from_secs(1);
        match tokio::time::timeout(
            hard_bound,
            producer.send(record, Timeout::After(self.timeout)),
        )
        .await
        {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
                lane: lane_name,
            }),
            Ok(Err((err, _msg))) => {
                lane.replace_if_fatal(&producer, &self.context);
                Err(classify(err, self.timeout))
            }
            Err(_) => Err(PublishError::Timeout(
                self.timeout,
                "no delivery report within the bound".into(),
            )),
        }
    }

    /// Asks the cluster for the topic's metadata: proves a broker answers and the topic
    /// exists. Blocking inside librdkafka, so run on the blocking pool.
    pub async fn check(&self, topic: &str, timeout: Duration) -> Result<(), String> {
        let producer = self.batching.producer();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .map_err(|e| e.to_string())?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    // A partition without a leader cannot acknowledge a produce: the API
                    // is not ready, whatever else answers.
                    let leaderless: Vec<i32> = t
                        .partitions()
                        .iter()
                        .filter(|p| p.leader() < 0 || p.error().is_some())
                        .map(|p| p.id())
                        .collect();
                    if leaderless.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "topic {topic}: partitions {leaderless:?} have no leader (their replicas' brokers are down)"
                        ))
                    }
                }
                Some(t) => Err(format!("topic {topic} not available: {:?}", t.error())),
                None => Err(format!("topic {topic} not found")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits (at most `timeout`) until every queued record is acknowledged or failed.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.prompt.producer().flush(Timeout::After(timeout));
        let _ = self.batching.producer().flush(Timeout::After(timeout));
    }
}

impl Publish for Publisher {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a str,
        payload: &'a [u8],
        correlation_id: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, PublishError>> {
        Box::pin(Publisher::publish(
            self,
            topic,
            key,
            payload,
            correlation_id,
        ))
    }

    fn check<'a>(&'a self, topic: &'a str, timeout: Duration) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(Publisher::check(self, topic, timeout))
    }
}

fn create_producer(config: &ClientConfig, context: &KafkaContext) -> anyhow::Result<WiberProducer> {
    config
        .create_with_context(context.clone())
        .map_err(|e| anyhow::anyhow!("cannot create the kafka producer: {e}"))
}

fn classify(err: KafkaError, timeout: Duration) -> PublishError {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) | Some(RDKafkaErrorCode::QueueFull) => {
            PublishError::Timeout(timeout, err.to_string())
        }
        _ => PublishError::Rejected(err.to_string()),
    }
}

/// Creates the message topic and its dead-letter topic with the configured partitions
/// and replication. Topics that already exist are left as they are.
pub async fn ensure_topics(kafka: &KafkaConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create the kafka admin client: {e}"))?;
    let dlq = kafka.dlq_topic();
    let topics = [
        NewTopic::new(
            &kafka.topic,
            kafka.partitions,
            TopicReplication::Fixed(kafka.replication_factor),
        ),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(kafka.replication_factor)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &opts).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach kafka at {} to create topics: {e}",
            kafka.bootstrap_servers
        )
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!(
                "cannot create kafka topic {name}: {code} (check the broker's replication settings)"
            ),
        }
    }
    Ok(())
}

/// Retries [`ensure_topics`] with capped back-off until it works or `stop` resolves.
pub async fn ensure_topics_until(
    kafka: &KafkaConfig,
    stop: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(200);
    loop {
        match ensure_topics(kafka).await {
            Ok(()) => {
                tracing::info!(topic = %kafka.topic, "kafka topics ready");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "kafka topics not ready yet; retrying")
            }
        }
        tokio::select! {
            _ = &mut stop => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The consumer service's view of Kafka: a member of the group, subscribed to the
/// message topic, with a producer for the dead-letter topic. Offsets are committed only
/// when the consumer loop says so ([`RecordSource::commit`]).
pub struct GroupRecords {
    consumer: GroupConsumer,
    dlq: WiberProducer,
    dlq_topic: String,
}

impl GroupRecords {
    /// Joins group `cfg.group` as `instance` and subscribes to the message topic.
    pub fn subscribe(cfg: &ConsumerConfig, instance: &str) -> anyhow::Result<GroupRecords> {
        let consumer = group_consumer(cfg, instance)?;
        consumer.subscribe(&[&cfg.kafka.topic]).map_err(|e| {
            anyhow::anyhow!(
                "cannot subscribe to kafka topic {} at {}: {e}",
                cfg.kafka.topic,
                cfg.kafka.bootstrap_servers
            )
        })?;
        Ok(GroupRecords {
            consumer,
            dlq: dlq_producer(&cfg.kafka)?,
            dlq_topic: cfg.kafka.dlq_topic(),
        })
    }
}

impl RecordSource for GroupRecords {
    type Error = KafkaError;

    async fn recv(&self) -> Result<Record, KafkaError> {
        // Copied out of librdkafka's buffer (as `detach` would), so the loop can hold a
        // batch of records across awaits.
        self.consumer.recv().await.map(|m| to_record(&m))
    }

    async fn dead_letter(
        &self,
        record: &Record,
        class: dlq::Class,
        reason: &str,
    ) -> Result<(), KafkaError> {
        let (partition, offset) = (record.partition.to_string(), record.offset.to_string());
        let at = wiber_model::now_ms().to_string();
        // Why it is there and where it came from, so it can be found, judged by verify
        // and replayed (`wiberctl dlq`). Headers are bytes: a reason holding U+0000 (the
        // store's echo of a refused value) travels as it is.
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: dlq::CLASS,
                value: Some(class.name()),
            })
            .insert(Header {
                key: dlq::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: dlq::SOURCE_TOPIC,
                value: Some(&record.topic),
            })
            .insert(Header {
                key: dlq::SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: dlq::SOURCE_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: dlq::DEAD_LETTERED_AT,
                value: Some(&at),
            });
        let mut out = FutureRecord::to(&self.dlq_topic).headers(headers);
        if let Some(k) = &record.key {
            out = out.key(k);
        }
        if let Some(p) = &record.payload {
            out = out.payload(p);
        }
        self.dlq
            .send(out, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Commits each stalled partition's stuck offset with the report as its metadata
    /// (asynchronously: best effort, the log says it too). The offset is where the
    /// partition resumes anyway: everything below it is durable.
    fn report_stall(&self, stalls: &[(Position, StallReport)]) {
        let mut tpl = TopicPartitionList::new();
        for (p, report) in stalls {
            let added = tpl
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
                .map(|()| tpl.find_partition(&p.topic, p.partition));
            match added {
                Ok(Some(mut elem)) => elem.set_metadata(report.to_metadata()),
                Ok(None) | Err(_) => {
                    tracing::error!(topic = %p.topic, partition = p.partition, "cannot build the stall report's commit");
                    return;
                }
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "stall report not committed (the log has it)");
        }
    }

    /// Stores the positions as the group's offsets and commits them asynchronously. A
    /// commit that is lost (or refused for partitions revoked meanwhile) only means
    /// redelivery, which the store de-duplicates.
    fn commit(&self, positions: &[Position]) {
        let mut tpl = TopicPartitionList::new();
        for p in positions {
            if let Err(e) =
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
            {
                tracing::error!(error = %e, topic = %p.topic, partition = p.partition, "cannot build the commit list");
                return;
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::info!(error = %e, "offsets not stored (partitions reassigned?); they will be redelivered");
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the batch will be redelivered");
        }
    }

    /// A final synchronous commit of the stored offsets the async commits may not have
    /// delivered yet, so the next owner of these partitions starts where we stopped.
    fn close(&self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::info!(error = %e, "final commit had nothing to commit or failed; records will be redelivered");
        }
        self.consumer.unsubscribe();
    }
}

fn to_record(m: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
    }
}

/// Builds the group consumer: manual commits only, offsets stored only by us, start
/// from the earliest record when the group has no committed offset.
fn group_consumer(cfg: &ConsumerConfig, instance: &str) -> anyhow::Result<GroupConsumer> {
    let consumer: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set("group.id", &cfg.group)
        .set("client.id", instance)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout_ms / 5).max(100).to_string(),
        )
        .set("enable.partition.eof", "false")
        .create_with_context(KafkaContext::default())
        .map_err(|e| anyhow::anyhow!("cannot create the kafka consumer: {e}"))?;
    Ok(consumer)
}

/// A producer for the dead-letter topic (same delivery guarantees as the main one).
fn dlq_producer(kafka: &KafkaConfig) -> anyhow::Result<WiberProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set("client.id", "wiber-consumer-dlq")
        .create_with_context(KafkaContext::default())
        .map_err(|e| anyhow::anyhow!("cannot create the kafka dead-letter producer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::RateGauge;

    #[test]
    fn the_rate_is_the_busier_of_this_window_and_the_last() {
        let g = RateGauge::default();
        // 3 publishes in one 100 ms window: 30/s.
        assert_eq!(g.tick(1_000), 10);
        g.tick(1_050);
        assert_eq!(g.tick(1_099), 30);
        // Next window: its first publish still reads the previous window's 30/s.
        assert_eq!(g.tick(1_100), 30);
        // After a quiet window, the old count no longer counts.
        assert_eq!(g.tick(1_350), 10);
        // Steady 5000/s: 500 per window.
        let g = RateGauge::default();
        let mut last = 0;
        for i in 0..1_000 {
            last = g.tick(10_000 + i / 5);
        }
        assert_eq!(last, 5_000);
    }
}
