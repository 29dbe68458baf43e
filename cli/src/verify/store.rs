//! Reads a run's documents straight from MongoDB and waits for the consumer group to
//! drain. Verify trusts neither the API nor the consumers: it looks at the sink itself.

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use wiber_model::ledger;

use crate::kafka;

/// Default MongoDB URI: FerretDB or MongoDB published on localhost by `stack up`.
pub const DEFAULT_MONGO_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
/// Default Kafka bootstrap: `stack up`'s external listener.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9094";

/// Where the run's messages end up, and the consumer group that moves them there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTarget {
    pub mongo_uri: String,
    pub mongo_db: String,
    pub mongo_collection: String,
    pub kafka: String,
    pub group: String,
    pub topic: String,
}

/// The fields of a stored document that verify looks at. Everything is optional: an
/// altered or injected document may lack any of them, and that is a finding, not an
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// `_id` rendered as a string.
    pub id: String,
    pub message_id: Option<String>,
    pub from_user: Option<String>,
    pub to_user: Option<String>,
    pub content: Option<String>,
    pub timestamp: Option<i64>,
    pub stored_at: Option<i64>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// Whether the consumer group caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub drained: bool,
    /// Total lag at the last look.
    pub lag: i64,
}

/// Polls the consumer group's lag until it is 0 or `timeout` passed.
pub async fn drain(target: &StoreTarget, timeout: Duration) -> anyhow::Result<Drain> {
    let deadline = Instant::now() + timeout;
    loop {
        let lags = kafka::group_lag(&target.kafka, &target.group, &target.topic, Duration::from_secs(5))
            .await
            .with_context(|| {
                format!(
                    "cannot read the lag of consumer group {} on {} (set --kafka / KAFKA_BOOTSTRAP_SERVERS, --group, --topic)",
                    target.group, target.kafka
                )
            })?;
        let lag = kafka::total(&lags);
        if lag == 0 {
            return Ok(Drain { drained: true, lag });
        }
        if Instant::now() >= deadline {
            return Ok(Drain {
                drained: false,
                lag,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every document of run `run`: those whose sender is one of the run's users, and those
/// whose `_id` carries the run's prefix (an injected or re-keyed document may have only
/// one of the two).
///
/// `full: false` fetches only `messageId` and `storedAt` (for end-to-end latency), which
/// keeps a large run's read cheap.
pub async fn fetch_run(
    target: &StoreTarget,
    run: &str,
    full: bool,
) -> anyhow::Result<Vec<StoredDoc>> {
    let coll = collection(target).await?;
    let users = format!("^{}", regex_escape(&ledger::user_prefix(run)));
    let ids = format!("^{}-", regex_escape(run));
    let filter = doc! {"$or": [
        {"fromUser": {"$regex": users}},
        {"_id": {"$regex": ids}},
    ]};
    let cursor = coll
        .find(filter)
        .projection(if full {
            doc! {"createdAt": 0, "conversation": 0}
        } else {
            doc! {"messageId": 1, "storedAt": 1}
        })
        .batch_size(10_000)
        .await
        .with_context(|| read_error(target))?;
    let docs: Vec<Document> = cursor
        .try_collect()
        .await
        .with_context(|| read_error(target))?;
    Ok(docs.iter().map(to_stored).collect())
}

/// The run's messages collection (for verify, and for tests that tamper with it).
pub async fn collection(target: &StoreTarget) -> anyhow::Result<mongodb::Collection<Document>> {
    let mut opts = ClientOptions::parse(&target.mongo_uri)
        .await
        .with_context(|| {
            format!(
                "invalid MongoDB URI {:?} (--mongo-uri / MONGO_URI)",
                target.mongo_uri
            )
        })?;
    opts.app_name = Some("wiberctl-verify".into());
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.connect_timeout = Some(Duration::from_secs(3));
    let client = mongodb::Client::with_options(opts)?;
    Ok(client
        .database(&target.mongo_db)
        .collection(&target.mongo_collection))
}

fn read_error(target: &StoreTarget) -> String {
    format!(
        "cannot read {}.{} at {} (is MongoDB/FerretDB up? set --mongo-uri / MONGO_URI)",
        target.mongo_db, target.mongo_collection, target.mongo_uri
    )
}

fn to_stored(d: &Document) -> StoredDoc {
    let s = |k: &str| d.get_str(k).ok().map(str::to_string);
    let int = |k: &str| match d.get(k) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    };
    StoredDoc {
        id: match d.get("_id") {
            Some(Bson::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        message_id: s("messageId"),
        from_user: s("fromUser"),
        to_user: s("toUser"),
        content: s("content"),
        timestamp: int("timestamp"),
        stored_at: int("storedAt"),
        partition: int("partition").map(|p| p as i32),
        offset: int("offset"),
    }
}

/// Escapes regex metacharacters (run ids are hex, but a name could come from anywhere).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
