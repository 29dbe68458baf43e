//! Reads a run's documents straight from MongoDB and waits for the consumer group to
//! drain. Verify trusts neither the API nor the consumers: it looks at the sink itself.

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::ClientOptions;
use tokio::time::Instant;
use wiber_model::{ledger, StoredMessage};

use crate::kafka;

/// Default MongoDB URI: FerretDB or MongoDB published on localhost by `stack up`.
pub const DEFAULT_MONGO_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
/// Default Kafka bootstrap: `stack up`'s external listener.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9094";

use crate::runfile::StoreTarget;

/// A stored document as verify reads it: decoded with [`StoredMessage`], the type the
/// consumer writes. An altered or injected document may not decode (a field missing or
/// of the wrong type): that is a finding, not an error, so what can still be read
/// (`id`, `message_id`, `stored_at`) is kept and `stored` says why it does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    /// `_id` rendered as a string.
    pub id: String,
    /// `messageId`, when it is a string (kept to attribute a document that does not decode).
    pub message_id: Option<String>,
    /// `storedAt`, when it is a number: with `message_id`, all a partial read fetches.
    pub stored_at: Option<i64>,
    /// The whole document, or why it is not a stored message (or that it was read partially).
    pub stored: Result<StoredMessage, String>,
}

impl StoredDoc {
    /// The decoded document, if it decodes.
    pub fn message(&self) -> Option<&StoredMessage> {
        self.stored.as_ref().ok()
    }

    pub fn content(&self) -> Option<&str> {
        self.message().map(|m| m.content.as_str())
    }

    pub fn timestamp(&self) -> Option<i64> {
        self.message().map(|m| m.timestamp)
    }

    pub fn partition(&self) -> Option<i32> {
        self.message().map(|m| m.partition)
    }

    pub fn offset(&self) -> Option<i64> {
        self.message().map(|m| m.offset)
    }
}

/// What [`StoredDoc::stored`] holds after a partial read (`fetch_run(.., false)`).
const PARTIAL_READ: &str = "only messageId and storedAt were read";

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
        {(StoredMessage::FROM_USER): {"$regex": users}},
        {(StoredMessage::ID): {"$regex": ids}},
    ]};
    let mut find = coll.find(filter).batch_size(10_000);
    if !full {
        find =
            find.projection(doc! {(StoredMessage::MESSAGE_ID): 1, (StoredMessage::STORED_AT): 1});
    }
    let cursor = find.await.with_context(|| read_error(target))?;
    let docs: Vec<Document> = cursor
        .try_collect()
        .await
        .with_context(|| read_error(target))?;
    Ok(docs.into_iter().map(|d| to_stored(d, full)).collect())
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

/// The documents whose `_id` is one of `ids` (those not stored are absent from the map),
/// for `tail --stored`.
///
/// One `{_id: <id>}` lookup per id, `concurrency` at a time, rather than one
/// `{_id: {$in: [...]}}`: both are index lookups on MongoDB, but FerretDB (SQLite) pushes
/// only a plain equality down to SQL; an `$in` makes it decode every document of the
/// collection, so the cost of each poll would grow with what the store holds.
pub async fn find_by_ids(
    coll: &mongodb::Collection<Document>,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<std::collections::HashMap<String, StoredDoc>> {
    use futures::StreamExt;
    let lookups = futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let d = coll.find_one(doc! {(StoredMessage::ID): &id}).await;
            (id, d)
        })
        .buffer_unordered(concurrency.max(1));
    let results: Vec<_> = lookups.collect().await;
    let mut found = std::collections::HashMap::new();
    for (id, d) in results {
        let d = d.with_context(|| {
            format!(
                "cannot read {}.{} (is MongoDB/FerretDB up? set --mongo-uri / MONGO_URI)",
                coll.namespace().db,
                coll.name()
            )
        })?;
        if let Some(d) = d {
            found.insert(id, to_stored(d, true));
        }
    }
    Ok(found)
}

fn read_error(target: &StoreTarget) -> String {
    format!(
        "cannot read {}.{} at {} (is MongoDB/FerretDB up? set --mongo-uri / MONGO_URI)",
        target.mongo_db, target.mongo_collection, target.mongo_uri
    )
}

/// Reads one document leniently: `full` decodes it whole, otherwise only `messageId`
/// and `storedAt` were fetched.
fn to_stored(d: Document, full: bool) -> StoredDoc {
    let id = match d.get(StoredMessage::ID) {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let message_id = d
        .get_str(StoredMessage::MESSAGE_ID)
        .ok()
        .map(str::to_string);
    let stored_at = match d.get(StoredMessage::STORED_AT) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    };
    let stored = if full {
        bson::from_document::<StoredMessage>(d)
            .map_err(|e| format!("not a stored message as the consumer writes it: {e}"))
    } else {
        Err(PARTIAL_READ.to_string())
    };
    StoredDoc {
        id,
        message_id,
        stored_at,
        stored,
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

#[cfg(test)]
mod tests {
    use wiber_model::Message;

    use super::*;

    fn written() -> (StoredMessage, Document) {
        let m = Message {
            message_id: "r1-c0-s1".into(),
            from_user: "alice".into(),
            to_user: "bob".into(),
            content: "r1:0:1|x".into(),
            timestamp: 1_758_865_780_040,
            created_at: wiber_model::rfc3339_ms(1_758_865_780_040),
        };
        let stored = StoredMessage::new(m, 1_758_865_781_000, 2, 40);
        let d = bson::to_document(&stored).unwrap();
        (stored, d)
    }

    #[test]
    fn a_document_as_the_consumer_writes_it_decodes_whole() {
        let (stored, d) = written();
        let doc = to_stored(d, true);
        assert_eq!(doc.id, "r1-c0-s1");
        assert_eq!(doc.message_id.as_deref(), Some("r1-c0-s1"));
        assert_eq!(doc.stored_at, Some(1_758_865_781_000));
        assert_eq!(doc.stored, Ok(stored));
        assert_eq!((doc.partition(), doc.offset()), (Some(2), Some(40)));
    }

    #[test]
    fn a_document_that_does_not_decode_keeps_what_can_be_read() {
        let (_, mut d) = written();
        d.remove(StoredMessage::CREATED_AT);
        d.insert(StoredMessage::PARTITION, "two");
        let doc = to_stored(d, true);
        assert_eq!(doc.id, "r1-c0-s1");
        assert_eq!(doc.message_id.as_deref(), Some("r1-c0-s1"));
        assert_eq!(doc.stored_at, Some(1_758_865_781_000));
        let why = doc.stored.unwrap_err();
        assert!(why.starts_with("not a stored message"), "{why}");

        // Not even an `_id` of the right type: still read, rendered as a string.
        let doc = to_stored(doc! {"_id": 7, "content": "injected"}, true);
        assert_eq!(doc.id, "7");
        assert_eq!(doc.message_id, None);
        assert!(doc.stored.is_err());
    }

    #[test]
    fn a_partial_read_keeps_the_id_and_stored_at() {
        let doc = to_stored(doc! {"_id": "m", "messageId": "m", "storedAt": 5i32}, false);
        assert_eq!(
            (doc.message_id.as_deref(), doc.stored_at),
            (Some("m"), Some(5))
        );
        assert_eq!(doc.stored, Err(PARTIAL_READ.to_string()));
    }
}
