//! Producing a record straight to a topic, behind the API's back, as another producer
//! of the topic could: how the harness puts a hostile record among the load
//! (`[load] poison`) to prove the consumer isolates it. acks=all and idempotence, as the
//! API's own producer, so "acknowledged" means the same.

use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Where Kafka put a produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub partition: i32,
    pub offset: i64,
}

/// A producer of raw records.
pub struct RawProducer {
    producer: FutureProducer,
    topic: String,
}

impl RawProducer {
    pub fn new(bootstrap: &str, topic: &str) -> anyhow::Result<RawProducer> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .set("client.id", "wiberctl-raw")
            .create()
            .with_context(|| format!("cannot create a kafka producer for {bootstrap}"))?;
        Ok(RawProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Sends `payload` under `key` with `headers`, and waits for the acknowledgement.
    pub async fn send(
        &self,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Placed> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(payload)
            .headers(h);
        let d = self
            .producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("kafka did not acknowledge the record: {e}"))
            .with_context(|| format!("cannot produce to topic {}", self.topic))?;
        Ok(Placed {
            partition: d.partition,
            offset: d.offset,
        })
    }
}
