//! MongoDB adapter: the only module that touches the `mongodb` crate. It keeps the
//! store's layout in one place: `_id` = `messageId` (uniqueness without a second unique
//! index, which is also what FerretDB enforces cheaply), a `conversation` field indexed
//! with `timestamp` for conversation reads, and provenance (`storedAt`, `partition`,
//! `offset`) on every document.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use wiber_model::{conversation_key, Message};

use crate::config::MongoConfig;

/// MongoDB's duplicate-key error code: for us, a de-duplication hit.
const DUPLICATE_KEY: i32 = 11000;

/// A store error. Callers retry these; nothing here is a reason to skip a message.
#[derive(Debug, thiserror::Error)]
#[error("mongodb: {0}")]
pub struct StoreError(String);

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// What an `insert_batch` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: usize,
    /// Documents whose `_id` was already stored: redeliveries, de-duplicated.
    pub duplicates: usize,
}

/// A message to store, with where it came from in Kafka.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub message: Message,
    pub partition: i32,
    pub offset: i64,
}

/// Which messages a count covers.
#[derive(Debug, Clone)]
pub enum CountScope {
    All,
    User(String),
    Conversation(String, String),
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    messages: Collection<Document>,
}

impl Store {
    /// Connects (lazily: the driver dials on first use) and applies the write concern.
    pub async fn connect(cfg: &MongoConfig) -> anyhow::Result<Store> {
        let mut opts = ClientOptions::parse(&cfg.mongo_uri)
            .await
            .map_err(|e| anyhow::anyhow!("invalid MONGO_URI {:?}: {e}", cfg.mongo_uri))?;
        opts.app_name = Some("wiber".into());
        opts.server_selection_timeout = Some(Duration::from_secs(5));
        opts.connect_timeout = Some(Duration::from_secs(3));
        let w = match cfg.write_concern.as_str() {
            "majority" => Acknowledgment::Majority,
            n => Acknowledgment::Nodes(n.parse().map_err(|_| {
                anyhow::anyhow!("MONGO_WRITE_CONCERN must be `majority` or a number, got {n:?}")
            })?),
        };
        let wc = WriteConcern::builder().w(w).journal(cfg.journal).build();
        let client = Client::with_options(opts)?;
        let messages = client.database(&cfg.mongo_db).collection_with_options(
            &cfg.mongo_collection,
            mongodb::options::CollectionOptions::builder()
                .write_concern(wc)
                .build(),
        );
        Ok(Store { client, messages })
    }

    /// Creates the read indexes that are missing (idempotent). Uniqueness comes from `_id`.
    ///
    /// Only missing indexes are created, one per command: FerretDB 1.24 (SQLite) panics
    /// on a `createIndexes` that names several indexes which already exist, and that
    /// happens on every restart otherwise. A single existing index is answered normally,
    /// so two instances racing on the same index are harmless.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let existing = self
            .messages
            .list_index_names()
            .await
            .or_else(|e| match *e.kind {
                // The collection does not exist yet: nothing is indexed.
                ErrorKind::Command(ref c) if c.code == 26 => Ok(Vec::new()),
                _ => Err(e),
            })?;
        let wanted = [
            (
                "conversation_time",
                doc! {"conversation": 1, "timestamp": 1},
            ),
            ("from_time", doc! {"fromUser": 1, "timestamp": -1}),
            ("to_time", doc! {"toUser": 1, "timestamp": -1}),
        ];
        for (name, keys) in wanted {
            if existing.iter().any(|n| n == name) {
                continue;
            }
            let model = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).build())
                .build();
            self.messages.create_index(model).await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }

    /// Writes a batch with one unordered `insert_many`. Duplicate-key errors are
    /// de-duplication hits; any other failure fails the whole call so the caller retries
    /// the batch (retrying is safe: what was written comes back as duplicates).
    pub async fn insert_batch(
        &self,
        batch: &[Incoming],
        stored_at: i64,
    ) -> Result<InsertOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let docs: Vec<Document> = batch.iter().map(|m| to_document(m, stored_at)).collect();
        match self.messages.insert_many(docs).ordered(false).await {
            Ok(r) => Ok(InsertOutcome {
                inserted: r.inserted_ids.len(),
                duplicates: 0,
            }),
            Err(e) => match *e.kind {
                ErrorKind::InsertMany(ref ime) if ime.write_concern_error.is_none() => {
                    let errors = ime.write_errors.as_deref().unwrap_or_default();
                    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                        return Err(StoreError(format!(
                            "insert_many failed for document {} (code {}): {}",
                            other.index, other.code, other.message
                        )));
                    }
                    Ok(InsertOutcome {
                        inserted: batch.len() - errors.len(),
                        duplicates: errors.len(),
                    })
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Both directions of a conversation, oldest first, ordered by (timestamp, messageId).
    pub async fn conversation(
        &self,
        a: &str,
        b: &str,
        limit: i64,
        skip: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let filter = doc! {"conversation": conversation_key(a, b)};
        let cursor = self
            .messages
            .find(filter)
            .sort(doc! {"timestamp": 1, "_id": 1})
            .skip(skip)
            .limit(limit)
            .await?;
        collect_messages(cursor).await
    }

    /// A user's recent messages, sent or received, newest first.
    pub async fn user_recent(&self, user: &str, limit: i64) -> Result<Vec<Message>, StoreError> {
        let filter = doc! {"$or": [{"fromUser": user}, {"toUser": user}]};
        let cursor = self
            .messages
            .find(filter)
            .sort(doc! {"timestamp": -1, "_id": -1})
            .limit(limit)
            .await?;
        collect_messages(cursor).await
    }

    pub async fn count(&self, scope: &CountScope) -> Result<u64, StoreError> {
        let filter = match scope {
            CountScope::All => doc! {},
            CountScope::User(u) => doc! {"$or": [{"fromUser": u}, {"toUser": u}]},
            CountScope::Conversation(a, b) => doc! {"conversation": conversation_key(a, b)},
        };
        Ok(self.messages.count_documents(filter).await?)
    }
}

fn to_document(m: &Incoming, stored_at: i64) -> Document {
    let msg = &m.message;
    doc! {
        "_id": &msg.message_id,
        "messageId": &msg.message_id,
        "conversation": msg.conversation(),
        "fromUser": &msg.from_user,
        "toUser": &msg.to_user,
        "content": &msg.content,
        "timestamp": msg.timestamp,
        "createdAt": &msg.created_at,
        "storedAt": stored_at,
        "partition": m.partition,
        "offset": m.offset,
    }
}

async fn collect_messages(cursor: mongodb::Cursor<Document>) -> Result<Vec<Message>, StoreError> {
    let docs: Vec<Document> = cursor.try_collect().await?;
    docs.iter().map(from_document).collect()
}

fn from_document(d: &Document) -> Result<Message, StoreError> {
    let s = |k: &str| -> Result<String, StoreError> {
        d.get_str(k).map(str::to_string).map_err(|_| {
            StoreError(format!(
                "stored document {:?} lacks string field {k}",
                d.get("_id")
            ))
        })
    };
    let timestamp = match d.get("timestamp") {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => *v as i64,
        Some(Bson::Double(v)) => *v as i64,
        _ => {
            return Err(StoreError(format!(
                "stored document {:?} lacks timestamp",
                d.get("_id")
            )))
        }
    };
    Ok(Message {
        message_id: s("messageId")?,
        from_user: s("fromUser")?,
        to_user: s("toUser")?,
        content: s("content")?,
        timestamp,
        created_at: s("createdAt")?,
    })
}
